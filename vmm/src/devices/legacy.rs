//! The i8042 keyboard controller, kept only for its CPU-reset line: a guest `reboot` with
//! `reboot=k` writes 0xfe to port 0x64, which ends the VM.

use vm_superio::{I8042Device, Trigger};

use super::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// Requests [`ExitReason::Reboot`] when triggered.
pub struct ResetTrigger(pub ExitSignal);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request(ExitReason::Reboot);
        Ok(())
    }
}

/// Ports 0x60..=0x64.
pub struct I8042(I8042Device<ResetTrigger>);

impl I8042 {
    /// A controller whose reset ends the VM through `exit`.
    pub fn new(exit: ExitSignal) -> Self {
        Self(I8042Device::new(ResetTrigger(exit)))
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = self.0.read(offset as u8);
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [value] = data {
            let _ = self.0.write(offset as u8, *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_reboot() {
        let exit = ExitSignal::new().unwrap();
        let mut k = I8042::new(exit.clone());
        k.write(0, &[0xfe]);
        assert_eq!(exit.reason(), None, "0xfe on the data port is not a reset");
        let mut status = [0xaa];
        k.read(4, &mut status);
        assert_eq!(status, [0], "status reads as input buffer empty");
        k.write(4, &[0xfe]);
        assert_eq!(exit.reason(), Some(ExitReason::Reboot));
    }
}
