//! The husk control page at [`crate::layout::CONTROL_PAGE_START`]: how a guest tells the VMM it
//! finished booting and asks to power off, without ACPI.
//!
//! | offset | width | meaning |
//! | --- | --- | --- |
//! | 0x0 | byte | write 123: boot complete (Firecracker's boot-timer value) |
//! | 0x8 | byte | write 1: power off, 2: reboot, 3: report a panic |
//!
//! Reads return zero. Busybox `devmem 0xd0000000 8 123` or the agent's `/dev/mem` write both work.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};
use crate::logging::ratelimited;

/// Offset of the boot-complete register.
pub const BOOT_COMPLETE_OFFSET: u64 = 0;
/// Value that marks boot complete.
pub const BOOT_COMPLETE_MAGIC: u8 = 123;
/// Offset of the power register.
pub const POWER_OFFSET: u64 = 8;
/// Power register: power off.
pub const POWER_OFF: u8 = 1;
/// Power register: reboot.
pub const POWER_REBOOT: u8 = 2;
/// Power register: the guest panicked.
pub const POWER_PANIC: u8 = 3;

/// Timestamps the VMM keeps about a boot, measured on the VMM's own clock.
#[derive(Debug)]
pub struct BootTimes {
    /// When the VMM started (process start or builder start).
    pub vmm_start: Instant,
    /// The boot vCPU's first `KVM_RUN`.
    pub kernel_entry: OnceLock<Instant>,
    /// The guest wrote the boot-complete marker.
    pub boot_complete: OnceLock<Instant>,
}

impl BootTimes {
    /// Starts the clock at `vmm_start`.
    pub fn new(vmm_start: Instant) -> Arc<Self> {
        Arc::new(Self {
            vmm_start,
            kernel_entry: OnceLock::new(),
            boot_complete: OnceLock::new(),
        })
    }

    /// VMM start → first KVM_RUN, in milliseconds.
    pub fn startup_ms(&self) -> Option<f64> {
        self.kernel_entry
            .get()
            .map(|k| k.duration_since(self.vmm_start).as_secs_f64() * 1e3)
    }

    /// First KVM_RUN → boot-complete marker, in milliseconds.
    pub fn entry_to_marker_ms(&self) -> Option<f64> {
        let entry = self.kernel_entry.get()?;
        self.boot_complete
            .get()
            .map(|b| b.duration_since(*entry).as_secs_f64() * 1e3)
    }
}

/// The control page device.
pub struct ControlPage {
    times: Arc<BootTimes>,
    exit: ExitSignal,
}

impl ControlPage {
    /// A control page recording into `times` and stopping through `exit`.
    pub fn new(times: Arc<BootTimes>, exit: ExitSignal) -> Self {
        Self { times, exit }
    }
}

impl BusDevice for ControlPage {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match (offset, value) {
            (BOOT_COMPLETE_OFFSET, BOOT_COMPLETE_MAGIC) => {
                if self.times.boot_complete.set(Instant::now()).is_ok() {
                    ratelimited!(
                        INFO,
                        "guest boot complete: {:.1} ms after kernel entry",
                        self.times.entry_to_marker_ms().unwrap_or(f64::NAN)
                    );
                }
            }
            (POWER_OFFSET, POWER_OFF) => self.exit.request(ExitReason::Poweroff),
            (POWER_OFFSET, POWER_REBOOT) => self.exit.request(ExitReason::Reboot),
            (POWER_OFFSET, POWER_PANIC) => self.exit.request(ExitReason::Panic),
            _ => ratelimited!(TRACE, offset, value, "ignored control page write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_power_requests() {
        let times = BootTimes::new(Instant::now());
        let exit = ExitSignal::new().unwrap();
        let mut page = ControlPage::new(times.clone(), exit.clone());
        page.write(BOOT_COMPLETE_OFFSET, &[1]);
        assert!(times.boot_complete.get().is_none());
        times.kernel_entry.set(Instant::now()).unwrap();
        page.write(BOOT_COMPLETE_OFFSET, &[BOOT_COMPLETE_MAGIC]);
        assert!(times.entry_to_marker_ms().unwrap() >= 0.0);
        page.write(POWER_OFFSET, &[9]);
        assert_eq!(exit.reason(), None);
        page.write(POWER_OFFSET, &[POWER_OFF]);
        assert_eq!(exit.reason(), Some(ExitReason::Poweroff));
    }
}
