//! `linux.resources.devices` for cgroup v2: the rule list a container's device program
//! enforces (the spec's rules, then runc's default allow list), its meaning, and its
//! translation into a `BPF_PROG_TYPE_CGROUP_DEVICE` program. Pure: no syscalls (loading and
//! attaching are `super::bpf`'s), so everything here is unit-tested, the program with a small
//! interpreter over the instructions it emits.
//!
//! Meaning of a rule list (what the program computes): each access bit of a request (mknod,
//! read, write) is decided on its own by the **last** rule that names that bit and matches the
//! device's type, major and minor (`a` and a missing type match both char and block; a missing or
//! negative major/minor matches any); no such rule denies. A request is allowed when every bit
//! it asks for is. This is the OCI order ("the runtime MUST apply entries in the listed order")
//! with runc's appended default allow list winning over the spec, and it agrees with runc's
//! cgroup v1 emulator for the usual lists (deny all, then allows). Unlike that emulator a later
//! narrow deny does punch a hole in an earlier wildcard allow. Type `p` rules are ignored:
//! FIFOs never reach the device cgroup.
//!
//! The instructions are hand-encoded (about a dozen opcodes) rather than taken from a crate:
//! crates.io offers either full eBPF toolchains (aya: an ELF loader, BTF, maps, async; far too
//! much for a static PID 1) or bindings to the C libbpf; runc (cilium/ebpf's asm) and youki both
//! emit this same small program by hand.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("linux.resources.devices[{index}].{field}: {reason}")]
    Invalid {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("linux.resources.devices: {0} rules make a program longer than BPF jumps can span")]
    TooMany(usize),
}

/// Access bits, as the kernel encodes them in `bpf_cgroup_dev_ctx.access_type >> 16`.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// Device types, as the kernel encodes them in the low 16 bits of `access_type`.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;

/// Which devices a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    All,
    Char,
    Block,
}

/// One validated rule. `None` major/minor is a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub kind: Kind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// ACC_* bits.
    pub access: u32,
}

impl Rule {
    const fn allow_char(major: Option<u32>, minor: Option<u32>, access: u32) -> Rule {
        Rule {
            allow: true,
            kind: Kind::Char,
            major,
            minor,
            access,
        }
    }

    /// Whether the rule is about this device (access aside). `dev_type` is DEV_*.
    pub fn matches(&self, dev_type: u32, major: u32, minor: u32) -> bool {
        let kind_ok = match self.kind {
            Kind::All => true,
            Kind::Char => dev_type == DEV_CHAR,
            Kind::Block => dev_type == DEV_BLOCK,
        };
        kind_ok && self.major.is_none_or(|m| m == major) && self.minor.is_none_or(|m| m == minor)
    }
}

/// runc's default allow list (libcontainer/specconv `AllowedDevices`), which it appends after
/// the spec's rules: mknod of any node, the standard nodes, the console and ptys, and tun.
pub const DEFAULT_ALLOWED: &[Rule] = &[
    Rule {
        allow: true,
        kind: Kind::Char,
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    Rule {
        allow: true,
        kind: Kind::Block,
        major: None,
        minor: None,
        access: ACC_MKNOD,
    },
    Rule::allow_char(Some(1), Some(3), ACC_ALL), // /dev/null
    Rule::allow_char(Some(1), Some(8), ACC_ALL), // /dev/random
    Rule::allow_char(Some(1), Some(7), ACC_ALL), // /dev/full
    Rule::allow_char(Some(5), Some(0), ACC_ALL), // /dev/tty
    Rule::allow_char(Some(1), Some(5), ACC_ALL), // /dev/zero
    Rule::allow_char(Some(1), Some(9), ACC_ALL), // /dev/urandom
    Rule::allow_char(Some(5), Some(1), ACC_ALL), // /dev/console
    Rule::allow_char(Some(136), None, ACC_ALL),  // /dev/pts/*
    Rule::allow_char(Some(5), Some(2), ACC_ALL), // /dev/ptmx
    Rule::allow_char(Some(10), Some(200), ACC_ALL), // /dev/net/tun
];

fn number(index: usize, field: &'static str, v: Option<i64>) -> Result<Option<u32>, DeviceError> {
    match v {
        None => Ok(None),
        Some(v) if v < 0 => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| DeviceError::Invalid {
                index,
                field,
                reason: format!("{v} does not fit a device number"),
            }),
    }
}

/// Validates the spec's rules (errors name `linux.resources.devices[i].<field>`). A missing
/// type means `a`, a missing or empty access `rwm`.
pub fn rules_from_spec(list: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>, DeviceError> {
    let mut out = Vec::with_capacity(list.len());
    for (index, d) in list.iter().enumerate() {
        let kind = match d.typ().unwrap_or_default() {
            LinuxDeviceType::A => Kind::All,
            LinuxDeviceType::C | LinuxDeviceType::U => Kind::Char,
            LinuxDeviceType::B => Kind::Block,
            LinuxDeviceType::P => continue,
        };
        let access = match d.access().as_deref() {
            None | Some("") => ACC_ALL,
            Some(s) => s.chars().try_fold(0, |acc, c| match c {
                'r' => Ok(acc | ACC_READ),
                'w' => Ok(acc | ACC_WRITE),
                'm' => Ok(acc | ACC_MKNOD),
                _ => Err(DeviceError::Invalid {
                    index,
                    field: "access",
                    reason: format!("{s:?}: {c:?} is not one of r, w, m"),
                }),
            })?,
        };
        out.push(Rule {
            allow: d.allow(),
            kind,
            major: number(index, "major", d.major())?,
            minor: number(index, "minor", d.minor())?,
            access,
        });
    }
    Ok(out)
}

/// The list a container's program enforces: the spec's rules, then the defaults (which win).
pub fn effective_rules(spec: &[LinuxDeviceCgroup]) -> Result<Vec<Rule>, DeviceError> {
    let mut rules = rules_from_spec(spec)?;
    rules.extend_from_slice(DEFAULT_ALLOWED);
    Ok(rules)
}

/// The reference meaning of a rule list (see the module doc): whether `access` (ACC_* bits)
/// to the device is allowed. The program computes exactly this.
pub fn allows(rules: &[Rule], dev_type: u32, major: u32, minor: u32, access: u32) -> bool {
    [ACC_MKNOD, ACC_READ, ACC_WRITE]
        .into_iter()
        .filter(|bit| access & bit != 0)
        .all(|bit| {
            rules
                .iter()
                .rev()
                .find(|r| r.access & bit != 0 && r.matches(dev_type, major, minor))
                .is_some_and(|r| r.allow)
        })
}

/// One eBPF instruction (`struct bpf_insn`): opcode, dst (low nibble) and src registers,
/// offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// The opcodes the program uses (linux/bpf.h, bpf_common.h).
pub mod op {
    /// r_dst = *(u32 *)(r_src + off)
    pub const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    /// w_dst &= imm
    pub const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    /// w_dst >>= imm
    pub const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
    /// w_dst = imm
    pub const MOV32_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
    /// if w_dst != imm goto +off
    pub const JNE32_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K
    /// if w_dst & imm goto +off
    pub const JSET32_K: u8 = 0x46; // BPF_JMP32 | BPF_JSET | BPF_K
    /// goto +off
    pub const JA: u8 = 0x05; // BPF_JMP | BPF_JA
    /// return r0
    pub const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
}

// Registers: r1 = ctx on entry; the prologue loads type into r2, access into r3, major into
// r4, minor into r5; r0 is the verdict.
const R0: u8 = 0;
const R1: u8 = 1;
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

/// A jump target before layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// The block deciding the next access bit (after the last: allow).
    Bit(usize),
    Deny,
}

/// An instruction, its offset maybe still a label.
struct Pending {
    insn: Insn,
    target: Option<Label>,
}

fn raw(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Pending {
    Pending {
        insn: Insn {
            code,
            regs: dst | (src << 4),
            off,
            imm,
        },
        target: None,
    }
}

fn jump(code: u8, dst: u8, imm: i32, to: Label) -> Pending {
    Pending {
        target: Some(to),
        ..raw(code, dst, 0, 0, imm)
    }
}

/// Builds the device program for `rules` (see the module doc for what it decides).
///
/// Layout: a prologue unpacking the context; one block per access bit, in order mknod, read,
/// write: "bit not requested: next block", then the rules naming that bit from last to first,
/// each "device differs: next rule; else allow: next block / deny: DENY", then DENY for no
/// match; after the last block ALLOW (return 1), then DENY (return 0) if anything jumps
/// there. Jumps only go forward, and nothing is emitted after an unconditional jump that
/// could not be reached (the verifier refuses unreachable instructions).
pub fn program(rules: &[Rule]) -> Result<Vec<Insn>, DeviceError> {
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    let mut p: Vec<Pending> = vec![
        raw(op::LDX_W, R_TYPE, R1, 0, 0),
        raw(op::AND32_K, R_TYPE, 0, 0, 0xffff),
        raw(op::LDX_W, R_ACCESS, R1, 0, 0),
        raw(op::RSH32_K, R_ACCESS, 0, 0, 16),
        raw(op::LDX_W, R_MAJOR, R1, 4, 0),
        raw(op::LDX_W, R_MINOR, R1, 8, 0),
    ];
    let bits = [ACC_MKNOD, ACC_READ, ACC_WRITE];
    // Where each label lands: Bit(0..=3) then Deny.
    let mut bit_at = [0usize; 4];
    for (b, bit) in bits.into_iter().enumerate() {
        bit_at[b] = p.len();
        let next = Label::Bit(b + 1);
        // Bit requested: jump over the JA that skips this block.
        p.push(raw(op::JSET32_K, R_ACCESS, 0, 1, bit as i32));
        p.push(jump(op::JA, 0, 0, next));
        let mut open = true;
        for r in rules.iter().rev().filter(|r| r.access & bit != 0) {
            let mut conds: Vec<(u8, u32)> = Vec::new();
            match r.kind {
                Kind::All => {}
                Kind::Char => conds.push((R_TYPE, DEV_CHAR)),
                Kind::Block => conds.push((R_TYPE, DEV_BLOCK)),
            }
            if let Some(m) = r.major {
                conds.push((R_MAJOR, m));
            }
            if let Some(m) = r.minor {
                conds.push((R_MINOR, m));
            }
            let n = conds.len();
            for (i, (reg, v)) in conds.into_iter().enumerate() {
                // Mismatch: skip the rest of this rule's conditions and its verdict jump.
                let skip = (n - i) as i16;
                p.push(raw(op::JNE32_K, reg, 0, skip, v as i32));
            }
            p.push(jump(op::JA, 0, 0, if r.allow { next } else { Label::Deny }));
            if n == 0 {
                // Matches everything: earlier rules for this bit are unreachable.
                open = false;
                break;
            }
        }
        if open {
            p.push(jump(op::JA, 0, 0, Label::Deny));
        }
    }
    bit_at[3] = p.len();
    p.push(raw(op::MOV32_K, R0, 0, 0, 1));
    p.push(raw(op::EXIT, 0, 0, 0, 0));
    let deny_used = p.iter().any(|x| x.target == Some(Label::Deny));
    let deny_at = p.len();
    if deny_used {
        p.push(raw(op::MOV32_K, R0, 0, 0, 0));
        p.push(raw(op::EXIT, 0, 0, 0, 0));
    }
    if p.len() > i16::MAX as usize {
        return Err(DeviceError::TooMany(rules.len()));
    }
    Ok(p.iter()
        .enumerate()
        .map(|(at, x)| {
            let mut i = x.insn;
            match x.target {
                None => {}
                Some(Label::Bit(b)) => i.off = (bit_at[b] as isize - at as isize - 1) as i16,
                Some(Label::Deny) => i.off = (deny_at as isize - at as isize - 1) as i16,
            }
            i
        })
        .collect())
}

#[cfg(test)]
#[path = "devices_tests.rs"]
mod tests;
