//! containerd-shim-husk-v2: containerd's runtime v2 shim for husk (`io.containerd.husk.v2`);
//! the library's `shim` module is the whole of it (see docs/containerd.md).

fn main() {
    // What the shim and its husk verbs make is private whatever containerd's umask.
    husk::perms::restrict_umask();
    std::process::exit(husk::shim::main());
}
