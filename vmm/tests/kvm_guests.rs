//! KVM integration tests: tiny long-mode guests, hand-assembled here, run by the real VMM on
//! the real /dev/kvm. They run directly on any KVM host, PVM included (they need no stock
//! kernel), and skip only where /dev/kvm is absent.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use husk_vmm::builder::{run_vm, Payload, SerialOutput, VmConfig, VmReport};
use husk_vmm::exit::ExitReason;
use husk_vmm::memory::MemoryBacking;

const LOAD_ADDR: u64 = 0x10_0000;

fn kvm_available() -> bool {
    if std::path::Path::new("/dev/kvm").exists() {
        true
    } else {
        eprintln!("SKIP: /dev/kvm is absent on this host");
        false
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A minimal x86-64 assembler for the handful of instructions these guests use.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// mov dx, imm16
    fn mov_dx(&mut self, v: u16) -> &mut Self {
        self.bytes(&[0x66, 0xba]).bytes(&v.to_le_bytes())
    }
    /// mov al, imm8
    fn mov_al(&mut self, v: u8) -> &mut Self {
        self.bytes(&[0xb0, v])
    }
    /// out dx, al
    fn out_dx_al(&mut self) -> &mut Self {
        self.bytes(&[0xee])
    }
    /// in al, dx
    fn in_al_dx(&mut self) -> &mut Self {
        self.bytes(&[0xec])
    }
    /// mov rax, imm64
    fn mov_rax(&mut self, v: u64) -> &mut Self {
        self.bytes(&[0x48, 0xb8]).bytes(&v.to_le_bytes())
    }
    /// mov rbx, imm64
    fn mov_rbx(&mut self, v: u64) -> &mut Self {
        self.bytes(&[0x48, 0xbb]).bytes(&v.to_le_bytes())
    }
    /// Writes each byte of `s` to COM1.
    fn print(&mut self, s: &[u8]) -> &mut Self {
        self.mov_dx(0x3f8);
        for c in s {
            self.mov_al(*c).out_dx_al();
        }
        self
    }
    /// Pulses the i8042 CPU reset line.
    fn i8042_reset(&mut self) -> &mut Self {
        self.mov_al(0xfe).bytes(&[0xe6, 0x64])
    }
    /// cli; hlt; jmp back to hlt.
    fn halt_forever(&mut self) -> &mut Self {
        self.bytes(&[0xfa, 0xf4, 0xeb, 0xfd])
    }
}

fn run_flat(code: Vec<u8>, vcpus: u8, timeout: Duration) -> (VmReport, Vec<u8>) {
    run_flat_with(code, vcpus, timeout, None, None)
}

fn run_flat_with(
    code: Vec<u8>,
    vcpus: u8,
    timeout: Duration,
    confine: Option<husk_vmm::builder::Confine>,
    seccomp: Option<husk_vmm::seccomp::Filters>,
) -> (VmReport, Vec<u8>) {
    let out = Capture::default();
    let config = VmConfig {
        memory_mib: 64,
        vcpus,
        payload: Payload::Flat {
            code,
            load_addr: LOAD_ADDR,
            start_all_vcpus: vcpus > 1,
        },
        serial: SerialOutput::Writer(Box::new(out.clone())),
        serial_input: false,
        backing: MemoryBacking::Anonymous,
        sign_of_life_timeout: timeout,
        vmm_start: Instant::now(),
        stop: None,
        devices: Default::default(),
        confine,
        seccomp,
    };
    let report = run_vm(config).expect("VM runs");
    let bytes = out.0.lock().unwrap().clone();
    (report, bytes)
}

#[test]
fn serial_output_then_i8042_reset_ends_as_reboot() {
    if !kvm_available() {
        return;
    }
    let mut a = Asm::default();
    a.print(b"hello from a husk guest\n")
        .i8042_reset()
        .halt_forever();
    let (report, out) = run_flat(a.0, 1, Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&out), "hello from a husk guest\n");
    assert_eq!(report.reason, ExitReason::Reboot);
    assert_eq!(report.reason.exit_code(), 0);
    assert!(report.startup_ms.is_some());
}

#[test]
fn port_and_mmio_exits_reach_devices() {
    if !kvm_available() {
        return;
    }
    let mut a = Asm::default();
    // Port read: COM1's line status register says "transmitter empty" (0x60).
    a.mov_dx(0x3fd).in_al_dx().mov_dx(0x3f8).out_dx_al();
    // Port read from a port nobody serves reads as 0xff.
    a.mov_dx(0x2f8).in_al_dx().mov_dx(0x3f8).out_dx_al();
    // MMIO read from an unclaimed address in the hole reads as 0xff.
    a.mov_rbx(0xd010_0000).bytes(&[0x8a, 0x03]); // mov al, [rbx]
    a.out_dx_al();
    // MMIO write: boot-complete marker, then power off through the control page.
    a.mov_rax(0xd000_0000).bytes(&[0xc6, 0x00, 123]); // mov byte [rax], 123
    a.bytes(&[0xc6, 0x40, 0x08, 0x01]); // mov byte [rax+8], 1
    a.halt_forever();
    let (report, out) = run_flat(a.0, 1, Duration::from_secs(10));
    assert_eq!(out, vec![0x60, 0xff, 0xff]);
    assert_eq!(report.reason, ExitReason::Poweroff);
    assert!(
        report.entry_to_marker_ms.is_some(),
        "boot-complete marker recorded"
    );
}

#[test]
fn two_vcpus_run_with_their_own_apic_ids() {
    if !kvm_available() {
        return;
    }
    let mut a = Asm::default();
    // eax = 1; cpuid; ebx >>= 24 (APIC id)
    a.bytes(&[0xb8, 1, 0, 0, 0, 0x0f, 0xa2, 0xc1, 0xeb, 24]);
    // test ebx, ebx; jz bsp
    a.bytes(&[0x85, 0xdb]);
    let jz_at = a.0.len();
    a.bytes(&[0x74, 0x00]);
    // AP: print '0' + id, then set the flag at 0x3000 and halt.
    a.mov_dx(0x3f8).bytes(&[0x88, 0xd8, 0x04, b'0']).out_dx_al(); // mov al, bl; add al, '0'
    a.bytes(&[0xc6, 0x04, 0x25, 0x00, 0x30, 0x00, 0x00, 0x01]); // mov byte [0x3000], 1
    a.halt_forever();
    let bsp = a.0.len();
    a.0[jz_at + 1] = (bsp - (jz_at + 2)) as u8;
    // BSP: wait for the flag, print '0', reset.
    let spin = a.0.len();
    a.bytes(&[0x80, 0x3c, 0x25, 0x00, 0x30, 0x00, 0x00, 0x01]); // cmp byte [0x3000], 1
    let back = spin as isize - (a.0.len() as isize + 2);
    a.bytes(&[0x75, back as i8 as u8]); // jne spin
    a.print(b"0").i8042_reset().halt_forever();
    let (report, out) = run_flat(a.0, 2, Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&out), "10");
    assert_eq!(report.reason, ExitReason::Reboot);
}

#[test]
fn undefined_instruction_with_empty_idt_is_a_triple_fault() {
    if !kvm_available() {
        return;
    }
    let mut a = Asm::default();
    a.print(b"x").bytes(&[0x0f, 0x0b]); // ud2
    let (report, out) = run_flat(a.0, 1, Duration::from_secs(10));
    assert_eq!(out, b"x");
    assert!(
        matches!(report.reason, ExitReason::TripleFault { vcpu: 0, .. }),
        "{:?}",
        report.reason
    );
    assert_eq!(report.reason.exit_code(), 4);
}

#[test]
fn silent_guest_ends_with_no_sign_of_life() {
    if !kvm_available() {
        return;
    }
    let (report, out) = run_flat(vec![0xeb, 0xfe], 1, Duration::from_millis(300)); // jmp $
    assert!(out.is_empty());
    assert_eq!(report.reason, ExitReason::NoSignOfLife { timeout_ms: 300 });
    assert!(report.run_time < Duration::from_secs(5));
}

/// The guest of `port_and_mmio_exits_reach_devices` on two vCPUs, run by the test binary
/// itself in a child process (a seccomp violation kills the whole process): jailed in an
/// empty directory (as root) and with the VMM's seccomp filters set to kill. It must run to
/// its power-off exactly as unconfined: the allow-lists cover a VM's whole life, from the
/// first KVM_RUN through device exits to stopping the vCPUs and the teardown.
#[test]
fn jailed_vmm_with_seccomp_kill_runs_a_guest_to_the_end() {
    if !kvm_available() {
        return;
    }
    if std::env::var_os("HUSK_TEST_CONFINED_CHILD").is_some() {
        let dir = std::env::var("HUSK_TEST_CONFINED_CHILD").unwrap();
        let mut a = Asm::default();
        a.print(b"confined\n");
        a.mov_rax(0xd000_0000).bytes(&[0xc6, 0x00, 123]); // boot-complete marker
        a.bytes(&[0xc6, 0x40, 0x08, 0x01]); // power off
        a.halt_forever();
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let confine: Option<husk_vmm::builder::Confine> = root.then(|| {
            Box::new(move || {
                husk_vmm::jail::enter(std::path::Path::new(&dir))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }) as husk_vmm::builder::Confine
        });
        let filters = husk_vmm::seccomp::Filters::new(husk_vmm::seccomp::Violation::Kill).unwrap();
        let (report, out) = run_flat_with(a.0, 1, Duration::from_secs(10), confine, Some(filters));
        assert_eq!(String::from_utf8_lossy(&out), "confined\n");
        assert_eq!(report.reason, ExitReason::Poweroff);
        if root {
            assert!(
                !std::path::Path::new("/proc/self").exists(),
                "still sees the host root"
            );
        }
        println!("CONFINED-CHILD-OK root={root}");
        return;
    }
    let dir = tempdir();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "jailed_vmm_with_seccomp_kill_runs_a_guest_to_the_end",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HUSK_TEST_CONFINED_CHILD", &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir(&dir);
    assert!(
        out.status.success() && stdout.contains("CONFINED-CHILD-OK"),
        "confined child failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempdir() -> String {
    let dir = std::env::temp_dir().join(format!("husk-jail-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.to_string_lossy().into_owned()
}
