//! husk: the runc-compatible CLI (see issue "husk: the runc-compatible OCI CLI").
//!
//! Not yet implemented: this placeholder only reports that.

fn main() {
    eprintln!("husk: not implemented yet; use husk-vmm to boot a guest");
    std::process::exit(1);
}
