//! The sandbox's microVM, run in-process by the vmm library on its own thread (vCPU threads
//! plus the device event loop), with the rootfs disk, hybrid vsock and the console in a file.
//!
//! Owns: the VmConfig husk boots and the thread that runs it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use husk_vmm::boot::LinuxBoot;
use husk_vmm::builder::{run_vm, Payload, SerialOutput, VmConfig, VmReport};
use husk_vmm::devices::virtio::attach::VirtioConfig;
use husk_vmm::devices::virtio::config::{DiskConfig, VsockConfig};
use husk_vmm::memory::MemoryBacking;

use crate::config::HuskConfig;

/// Kernel command line for sandboxes.
pub const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check quiet";

/// Serial of the rootfs disk (what the agent looks for).
pub const ROOTFS_SERIAL: &str = "husk-rootfs";

/// Guest context id.
const GUEST_CID: u32 = 3;

/// Errors starting the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Kernel or initramfs not configured or missing.
    #[error("{what}: {message}")]
    Missing {
        /// `kernel` or `initrd`.
        what: &'static str,
        /// How to fix it.
        message: String,
    },
    /// This host cannot boot a stock kernel.
    #[error("{0}")]
    Host(String),
    /// Spawning the thread.
    #[error("starting the VM thread: {0}")]
    Thread(std::io::Error),
}

/// A running VM.
pub struct Vm {
    stop: Arc<AtomicBool>,
    done: Mutex<mpsc::Receiver<Result<VmReport, String>>>,
    thread: Option<JoinHandle<()>>,
    ended: Mutex<Option<String>>,
}

fn require(what: &'static str, p: &Option<PathBuf>, env: &str) -> Result<PathBuf, VmError> {
    match p {
        Some(p) if p.is_file() => Ok(p.clone()),
        Some(p) => Err(VmError::Missing {
            what,
            message: format!("{} does not exist", p.display()),
        }),
        None => Err(VmError::Missing {
            what,
            message: format!("none found; set {what} in /etc/husk/config.toml or {env}"),
        }),
    }
}

impl Vm {
    /// Boots the guest: kernel + agent initramfs, `disk` as virtio-blk with the rootfs serial,
    /// vsock on `vsock_uds`, console into `console_log`.
    pub fn start(
        cfg: &HuskConfig,
        disk: Option<&Path>,
        vsock_uds: &Path,
        console_log: &Path,
    ) -> Result<Vm, VmError> {
        let kernel = require("kernel", &cfg.kernel, "HUSK_KERNEL")?;
        let initrd = require("initrd", &cfg.initrd, "HUSK_INITRD")?;
        let host = husk_vmm::host::detect();
        if !host.can_boot_stock_kernel() {
            return Err(VmError::Host(host.describe()));
        }
        let config = VmConfig {
            memory_mib: cfg.memory_mib,
            vcpus: cfg.vcpus,
            payload: Payload::Linux(LinuxBoot {
                kernel,
                initrd: Some(initrd),
                cmdline: CMDLINE.into(),
            }),
            serial: SerialOutput::File(console_log.to_path_buf()),
            serial_input: false,
            backing: MemoryBacking::Anonymous,
            sign_of_life_timeout: Duration::from_secs(cfg.boot_timeout_s),
            vmm_start: Instant::now(),
            stop: None,
            devices: VirtioConfig {
                disks: disk
                    .map(|p| DiskConfig {
                        path: p.to_path_buf(),
                        read_only: false,
                        serial: Some(ROOTFS_SERIAL.into()),
                    })
                    .into_iter()
                    .collect(),
                nets: Vec::new(),
                vsock: Some(VsockConfig {
                    cid: GUEST_CID,
                    uds: vsock_uds.to_path_buf(),
                }),
                rng: true,
            },
        };
        let stop = Arc::new(AtomicBool::new(false));
        let config = VmConfig {
            stop: Some(stop.clone()),
            ..config
        };
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("vmm".into())
            .spawn(move || {
                let r = run_vm(config).map_err(|e| e.to_string());
                let _ = tx.send(r);
            })
            .map_err(VmError::Thread)?;
        Ok(Vm {
            stop,
            done: Mutex::new(done),
            thread: Some(thread),
            ended: Mutex::new(None),
        })
    }

    /// Why the VM ended, if it has.
    pub fn ended(&self) -> Option<String> {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.is_none() {
            let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(r) = done.try_recv() {
                *ended = Some(match r {
                    Ok(report) => report.reason.to_string(),
                    Err(e) => e,
                });
            }
        }
        ended.clone()
    }

    /// Waits up to `grace` for the guest to end by itself, then stops it; joins the threads.
    pub fn shut_down(mut self, grace: Duration) -> Option<String> {
        let deadline = Instant::now() + grace;
        while self.ended().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.ended().is_none() {
            self.stop.store(true, Ordering::Relaxed);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.ended()
    }
}
