//! COM1: vm-superio's 8250 UART on port 0x3f8, its interrupt on an irqfd (IRQ 4), its output to
//! stdout or a file, watched for the kernel's panic and power-down banners.
//!
//! The watcher exists because a guest without ACPI cannot power off: Linux turns `poweroff`
//! into a halt (`reboot: Power off not available: System halted instead`) and its CPUs then sleep forever with no VM exit, so the
//! banner is the only signal the VMM gets. Cooperative guests (husk's agent) use the control
//! page instead ([`super::control`]).
//!
//! Owns: the UART and the console watcher. Input bytes arrive from the event loop
//! ([`crate::event_loop`]) through [`Serial::enqueue_input`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial as Uart, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};
use crate::logging::ratelimited;

/// A `Trigger` that writes an eventfd (registered with KVM as an irqfd).
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// What the console showed about the guest's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConsoleVerdict {
    /// Nothing notable.
    None = 0,
    /// `Kernel panic - not syncing` was printed.
    Panic = 1,
    /// `reboot: Power down` or `reboot: System halted` was printed.
    PowerDown = 2,
}

const PANIC_BANNER: &[u8] = b"Kernel panic - not syncing";
const POWER_DOWN_BANNER: &[u8] = b"reboot: Power down";
/// Both `reboot: System halted` (halt) and, without ACPI, what `poweroff` prints instead:
/// `reboot: Power off not available: System halted instead`.
const HALT_BANNER: &[u8] = b"System halted";
const WINDOW: usize = 64;

/// Shared verdict, read by the VMM when the guest resets.
#[derive(Debug, Clone, Default)]
pub struct ConsoleState(Arc<AtomicU8>);

impl ConsoleState {
    /// What the console has shown so far.
    pub fn verdict(&self) -> ConsoleVerdict {
        match self.0.load(Ordering::Relaxed) {
            1 => ConsoleVerdict::Panic,
            2 => ConsoleVerdict::PowerDown,
            _ => ConsoleVerdict::None,
        }
    }

    fn set(&self, v: ConsoleVerdict) {
        // A panic outranks a power-down banner printed before it.
        if v == ConsoleVerdict::Panic || self.verdict() == ConsoleVerdict::None {
            self.0.store(v as u8, Ordering::Relaxed);
        }
    }
}

/// Passes console bytes through to `out` and looks for the kernel's end-of-life banners.
pub struct ConsoleWatcher {
    out: Box<dyn Write + Send>,
    window: Vec<u8>,
    state: ConsoleState,
    exit: Option<ExitSignal>,
}

impl ConsoleWatcher {
    /// Watches what is written to `out`. With `exit`, a halted guest ends the VM as powered off.
    pub fn new(out: Box<dyn Write + Send>, state: ConsoleState, exit: Option<ExitSignal>) -> Self {
        Self {
            out,
            window: Vec::with_capacity(WINDOW * 2),
            state,
            exit,
        }
    }

    fn scan(&mut self, buf: &[u8]) {
        self.window.extend_from_slice(buf);
        let contains = |w: &[u8], pat: &[u8]| w.windows(pat.len()).any(|x| x == pat);
        if contains(&self.window, PANIC_BANNER) {
            self.state.set(ConsoleVerdict::Panic);
        } else if contains(&self.window, POWER_DOWN_BANNER) {
            self.state.set(ConsoleVerdict::PowerDown);
        } else if contains(&self.window, HALT_BANNER) {
            self.state.set(ConsoleVerdict::PowerDown);
            if let Some(exit) = &self.exit {
                exit.request(ExitReason::Poweroff);
            }
        }
        if self.window.len() > WINDOW {
            let cut = self.window.len() - WINDOW;
            self.window.drain(..cut);
        }
    }
}

impl Write for ConsoleWatcher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.scan(buf);
        // The guest must never stall on a broken console: drop output the host cannot take.
        if self.out.write_all(buf).is_err() {
            ratelimited!(TRACE, "console output dropped");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.out.flush();
        Ok(())
    }
}

/// COM1 as a bus device.
pub struct Serial {
    uart: Uart<EventFdTrigger, NoEvents, ConsoleWatcher>,
}

impl Serial {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: EventFd, out: ConsoleWatcher) -> Self {
        Self {
            uart: Uart::new(EventFdTrigger(irq), out),
        }
    }

    /// Queues input bytes for the guest; returns how many fit in the FIFO.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity();
        let n = bytes.len().min(room);
        if n == 0 {
            return 0;
        }
        match self.uart.enqueue_raw_bytes(&bytes[..n]) {
            Ok(n) => n,
            Err(e) => {
                ratelimited!(DEBUG, "serial input dropped: {e:?}");
                0
            }
        }
    }

    /// Free space in the input FIFO.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 1 {
            data[0] = self.uart.read(offset as u8);
        } else {
            data.fill(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 1 {
            if let Err(e) = self.uart.write(offset as u8, data[0]) {
                ratelimited!(DEBUG, "serial write failed: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_written_to_thr_reach_output_and_raise_irq() {
        let sink = Sink::default();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let state = ConsoleState::default();
        let mut s = Serial::new(
            irq.try_clone().unwrap(),
            ConsoleWatcher::new(Box::new(sink.clone()), state.clone(), None),
        );
        // Enable the THR-empty interrupt (IER bit 1), then write two bytes.
        s.write(1, &[0x02]);
        s.write(0, b"h");
        s.write(0, b"i");
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");
        assert!(irq.read().unwrap() >= 1);
        assert_eq!(state.verdict(), ConsoleVerdict::None);
    }

    #[test]
    fn banners_are_found_across_writes() {
        let state = ConsoleState::default();
        let mut w = ConsoleWatcher::new(Box::new(io::sink()), state.clone(), None);
        w.write_all(b"[ 1.0] reboot: Pow").unwrap();
        w.write_all(b"er down\r\n").unwrap();
        assert_eq!(state.verdict(), ConsoleVerdict::PowerDown);
        for b in b"---[ end Kernel panic - not syncing: Attempted to kill init" {
            w.write_all(&[*b]).unwrap();
        }
        assert_eq!(state.verdict(), ConsoleVerdict::Panic);
        w.write_all(b"reboot: Power down").unwrap();
        assert_eq!(state.verdict(), ConsoleVerdict::Panic);
    }

    #[test]
    fn halt_banner_ends_the_vm_as_poweroff() {
        let exit = ExitSignal::new().unwrap();
        let state = ConsoleState::default();
        let mut w = ConsoleWatcher::new(Box::new(io::sink()), state.clone(), Some(exit.clone()));
        w.write_all(b"[   2.1] reboot: Power off not available: System halted instead\r\n")
            .unwrap();
        assert_eq!(exit.reason(), Some(ExitReason::Poweroff));
        assert_eq!(state.verdict(), ConsoleVerdict::PowerDown);
    }

    #[test]
    fn input_is_readable_from_rbr() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = Serial::new(
            irq,
            ConsoleWatcher::new(Box::new(io::sink()), ConsoleState::default(), None),
        );
        assert_eq!(s.enqueue_input(b"ok"), 2);
        let mut b = [0u8];
        s.read(0, &mut b);
        assert_eq!(b[0], b'o');
    }
}
