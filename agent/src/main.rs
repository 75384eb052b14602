//! husk-agent: the guest's PID 1 and ttrpc server (see issue "The guest").
//!
//! Not yet implemented: this placeholder only reports that.

fn main() {
    eprintln!("husk-agent: not implemented yet");
    std::process::exit(1);
}
