//! What kind of KVM this host has, and whether a stock Linux guest can boot on it.
//!
//! Owns: host detection (pure parsing plus a few file reads). The VMM asks before booting a
//! kernel, so an unsuitable host ends in a clear message instead of a hang.

use std::fs::OpenOptions;
use std::path::Path;

/// The host's virtualization, as far as booting a stock guest kernel is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKvm {
    /// Hardware virtualization (Intel VT-x or AMD SVM) behind /dev/kvm.
    Hardware {
        /// `vmx` or `svm`.
        flag: &'static str,
    },
    /// /dev/kvm is PVM (`/sys/module/kvm_pvm`): only kernels built for PVM's private interface
    /// boot; a stock kernel runs in emulation and dies.
    Pvm,
    /// /dev/kvm works but the CPU flags say nothing (nested setups that hide them).
    Unknown,
    /// /dev/kvm is missing.
    Missing,
    /// /dev/kvm exists but cannot be opened read-write.
    NoAccess(String),
}

impl HostKvm {
    /// Whether a stock guest kernel is expected to boot.
    pub fn can_boot_stock_kernel(&self) -> bool {
        matches!(self, HostKvm::Hardware { .. } | HostKvm::Unknown)
    }

    /// One line for a person: what the host has and, if it cannot boot a guest, what to do.
    pub fn describe(&self) -> String {
        match self {
            HostKvm::Hardware { flag } => format!("hardware KVM ({flag})"),
            HostKvm::Unknown => "KVM without vmx/svm CPU flags (nested?); trying anyway".into(),
            HostKvm::Pvm => "/dev/kvm here is PVM (kvm_pvm module), which cannot boot a stock \
                Linux guest kernel: it runs in the host's emulator and dies at its first int3. \
                Use a host with VT-x/AMD-V, or the KVM test host (tests/kvm-host/run)."
                .into(),
            HostKvm::Missing => "/dev/kvm does not exist: load kvm_intel or kvm_amd (modprobe) \
                on a host with VT-x/AMD-V, or enable nested virtualization"
                .into(),
            HostKvm::NoAccess(e) => {
                format!(
                    "/dev/kvm cannot be opened read-write ({e}): run as root or join the kvm group"
                )
            }
        }
    }
}

/// Decides from the pieces; separated from [`detect`] for tests.
pub fn classify(
    kvm_open: Result<(), String>,
    kvm_exists: bool,
    pvm_module: bool,
    cpuinfo: &str,
) -> HostKvm {
    if !kvm_exists {
        return HostKvm::Missing;
    }
    if let Err(e) = kvm_open {
        return HostKvm::NoAccess(e);
    }
    if pvm_module {
        return HostKvm::Pvm;
    }
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    if has("vmx") {
        HostKvm::Hardware { flag: "vmx" }
    } else if has("svm") {
        HostKvm::Hardware { flag: "svm" }
    } else {
        HostKvm::Unknown
    }
}

/// Looks at /dev/kvm, /sys/module/kvm_pvm and /proc/cpuinfo.
pub fn detect() -> HostKvm {
    let dev = Path::new("/dev/kvm");
    let open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    classify(
        open,
        dev.exists(),
        Path::new("/sys/module/kvm_pvm").exists(),
        &cpuinfo,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hosts() {
        let vmx = "processor : 0\nflags\t\t: fpu vme vmx sse\n";
        let svm = "flags : fpu svm\n";
        let none = "flags : fpu sse\n";
        assert_eq!(
            classify(Ok(()), true, false, vmx),
            HostKvm::Hardware { flag: "vmx" }
        );
        assert_eq!(
            classify(Ok(()), true, false, svm),
            HostKvm::Hardware { flag: "svm" }
        );
        assert_eq!(classify(Ok(()), true, true, vmx), HostKvm::Pvm);
        assert_eq!(classify(Ok(()), true, false, none), HostKvm::Unknown);
        assert_eq!(
            classify(Err("x".into()), false, false, vmx),
            HostKvm::Missing
        );
        assert_eq!(
            classify(Err("Permission denied".into()), true, false, vmx),
            HostKvm::NoAccess("Permission denied".into())
        );
    }

    #[test]
    fn only_pvm_and_missing_cannot_boot() {
        assert!(HostKvm::Hardware { flag: "svm" }.can_boot_stock_kernel());
        assert!(!HostKvm::Pvm.can_boot_stock_kernel());
        assert!(!HostKvm::Missing.can_boot_stock_kernel());
        assert!(HostKvm::Pvm.describe().contains("PVM"));
    }
}
