//! `husk check`: what this host has and lacks for husk, with a fix for each gap. Exits 1 when
//! something needed to run a container is missing.

use std::path::Path;

use super::Ctx;
use crate::config::HuskConfig;

/// No flags.
#[derive(Debug, clap::Args)]
pub struct Args {}

struct Report {
    missing: usize,
}

impl Report {
    fn line(&mut self, ok: bool, what: &str, detail: &str) {
        if !ok {
            self.missing += 1;
        }
        println!("{} {what}: {detail}", if ok { "ok  " } else { "MISS" });
    }
}

/// The verb.
pub fn run(_: &Ctx, _: Args) -> anyhow::Result<i32> {
    let mut r = Report { missing: 0 };
    let host = husk_vmm::host::detect();
    r.line(host.can_boot_stock_kernel(), "KVM", &host.describe());
    match HuskConfig::load() {
        Ok(cfg) => {
            for (what, path, fix) in [
                (
                    "kernel",
                    &cfg.kernel,
                    "run kernel-config/build, or set kernel in /etc/husk/config.toml / HUSK_KERNEL",
                ),
                (
                    "initramfs",
                    &cfg.initrd,
                    "run guest-image/build, or set initrd in /etc/husk/config.toml / HUSK_INITRD",
                ),
            ] {
                match path {
                    Some(p) if p.is_file() => r.line(true, what, &p.display().to_string()),
                    Some(p) => r.line(
                        false,
                        what,
                        &format!("{} does not exist: {fix}", p.display()),
                    ),
                    None => r.line(false, what, &format!("none found: {fix}")),
                }
            }
            r.line(
                true,
                "guest size",
                &format!("{} vCPU, {} MiB", cfg.vcpus, cfg.memory_mib),
            );
            match crate::supervisor::virtiofsd::find(cfg.virtiofsd.as_deref()) {
                Ok(p) => r.line(
                    true,
                    "virtiofsd (the virtio-fs share)",
                    &p.display().to_string(),
                ),
                Err(e) => r.line(false, "virtiofsd (the virtio-fs share)", &e.to_string()),
            }
        }
        Err(e) => r.line(false, "configuration", &e.to_string()),
    }
    // Not needed yet (no networking), reported for what comes next.
    let tun = Path::new("/dev/net/tun").exists();
    println!(
        "{} TUN (container networking, not used yet): {}",
        if tun { "ok  " } else { "note" },
        if tun {
            "/dev/net/tun"
        } else {
            "missing: modprobe tun"
        }
    );
    println!("ok   cgroups: none needed on the host (the agent makes them inside the guest)");
    Ok(i32::from(r.missing > 0))
}
