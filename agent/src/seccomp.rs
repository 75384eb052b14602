//! OCI seccomp profiles (`linux.seccomp`) compiled to ONE classic-BPF program with the
//! semantics runc gets from libseccomp, and installed with seccomp(2) the way runc installs it.
//! Owns profile → program and the install call; when to install (before or after dropping
//! privileges, with or without no_new_privs) is the init stage's decision (`init.rs`).
//!
//! Why a generator here and not a library: seccompiler (pure Rust) has one match action and one
//! mismatch action per filter, so a profile had to become a stack of filters, and the kernel
//! takes the most severe result across filters: a LOG or TRACE rule lost to a non-allow
//! default, and its merge of rules made "unconditional + conditional" conditional-only. The
//! `libseccomp` crate would give exact parity, but it links the C library (libseccomp.a, found
//! through build-script environment variables) into a binary that must build statically for
//! the gnu target with +crt-static everywhere the agent is built; a generator for the subset
//! OCI profiles use is ~300 lines and keeps the agent pure Rust.
//!
//! Semantics, as runc + libseccomp (runc's `libcontainer/seccomp/seccomp_linux.go`):
//! - every syscall gets its own action in one filter; syscalls without a rule get
//!   `defaultAction` (`defaultErrnoRet`, else EPERM, for SCMP_ACT_ERRNO);
//! - a rule whose action equals the default action is dropped; unknown syscall names are
//!   skipped (libseccomp cannot resolve them either);
//! - an unconditional rule for a syscall wins over its conditional rules, in either order
//!   (libseccomp drops the argument chains); the first unconditional rule's action stays;
//! - the conditions of one rule all must hold; if one argument index appears more than once
//!   in a rule, each condition becomes its own rule (runc's fallback for libseccomp < 2.x);
//!   conditional rules of a syscall are tried in profile order;
//! - comparisons are on the full 64-bit argument (unsigned); SCMP_CMP_MASKED_EQ is
//!   `(arg & value) == valueTwo`; SCMP_ACT_ERRNO/TRACE without errnoRet carry EPERM;
//! - only x86_64 is native in the guest (its kernel has no IA32 or x32 ABI): another
//!   architecture or an x32 syscall number gets libseccomp's bad-arch action, kill-thread.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};

#[path = "seccomp_syscalls.rs"]
mod syscalls;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: {0}")]
    Unsupported(String),
    #[error("linux.seccomp: compiling the filter: {0}")]
    Compile(String),
    #[error("linux.seccomp: installing the filter: {0}")]
    Apply(String),
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel's BPF_MAXINSNS.
const MAX_INSNS: usize = 4096;

// Classic BPF opcodes (linux/bpf_common.h): class | size/op | mode/source.
/// BPF_LD | BPF_W | BPF_ABS
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K
const BPF_ALU_AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JA
const BPF_JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K
const BPF_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGT | BPF_K
const BPF_JGT_K: u16 = 0x25;
/// BPF_JMP | BPF_JGE | BPF_K
const BPF_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K
const BPF_RET_K: u16 = 0x06;

// Offsets into struct seccomp_data (little endian: low word first).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn arg_lo(index: u8) -> u32 {
    16 + 8 * index as u32
}
fn arg_hi(index: u8) -> u32 {
    arg_lo(index) + 4
}

/// A compiled profile, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    /// SECCOMP_FILTER_FLAG_* from `linux.seccomp.flags`.
    flags: libc::c_ulong,
}

impl Filter {
    /// The BPF instructions (for tests and diagnostics).
    pub fn program(&self) -> &[libc::sock_filter] {
        &self.program
    }

    /// Installs the filter on the calling thread with seccomp(2), never touching
    /// no_new_privs: without it the caller must hold CAP_SYS_ADMIN (runc installs early, before
    /// dropping capabilities, in that case); with it, any time before exec.
    pub fn install(&self) -> Result<(), SeccompError> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads the sock_fprog and the `len`
        // instructions it points to during the call; both outlive it and are not mutated.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let errno = nix::errno::Errno::last();
        let hint = if errno == nix::errno::Errno::EACCES {
            " (without process.noNewPrivileges this needs CAP_SYS_ADMIN)"
        } else {
            ""
        };
        Err(SeccompError::Apply(format!("{errno}{hint}")))
    }
}

/// The x86_64 number of a syscall name, if this kernel has it.
pub fn syscall_nr(name: &str) -> Option<u32> {
    syscalls::SYSCALLS
        .binary_search_by(|(n, _)| n.cmp(&name))
        .ok()
        .map(|i| syscalls::SYSCALLS[i].1)
}

/// The SECCOMP_RET_* value of an OCI action, as runc maps it.
fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<u32, SeccompError> {
    let data = |e: Option<u32>| e.unwrap_or(libc::EPERM as u32) & libc::SECCOMP_RET_DATA;
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        LinuxSeccompAction::ScmpActErrno => libc::SECCOMP_RET_ERRNO | data(errno),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            libc::SECCOMP_RET_KILL_THREAD
        }
        LinuxSeccompAction::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        LinuxSeccompAction::ScmpActLog => libc::SECCOMP_RET_LOG,
        LinuxSeccompAction::ScmpActTrace => libc::SECCOMP_RET_TRACE | data(errno),
        other => return Err(SeccompError::Unsupported(format!("action {other:?}"))),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`
    MaskedEq {
        mask: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cond {
    index: u8,
    cmp: Cmp,
    value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    conds: Vec<Cond>,
    action: u32,
}

/// What one syscall does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Always(u32),
    /// Tried in order; none matching means the default action.
    Rules(Vec<Rule>),
}

fn conditions(sc: &LinuxSyscall) -> Result<Vec<Cond>, SeccompError> {
    let mut out = Vec::new();
    for a in sc.args().iter().flatten() {
        if a.index() >= 6 {
            return Err(SeccompError::Unsupported(format!(
                "syscalls {:?}: argument index {} (must be below 6)",
                sc.names(),
                a.index()
            )));
        }
        let (cmp, value) = match a.op() {
            LinuxSeccompOperator::ScmpCmpEq => (Cmp::Eq, a.value()),
            LinuxSeccompOperator::ScmpCmpNe => (Cmp::Ne, a.value()),
            LinuxSeccompOperator::ScmpCmpLt => (Cmp::Lt, a.value()),
            LinuxSeccompOperator::ScmpCmpLe => (Cmp::Le, a.value()),
            LinuxSeccompOperator::ScmpCmpGt => (Cmp::Gt, a.value()),
            LinuxSeccompOperator::ScmpCmpGe => (Cmp::Ge, a.value()),
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                Cmp::MaskedEq { mask: a.value() },
                a.value_two().unwrap_or(0),
            ),
        };
        out.push(Cond {
            index: a.index() as u8,
            cmp,
            value,
        });
    }
    Ok(out)
}

fn filter_flags(profile: &LinuxSeccomp) -> Result<libc::c_ulong, SeccompError> {
    let mut flags = 0;
    for f in profile.flags().iter().flatten() {
        flags |= match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // The stage is single-threaded; runc ignores it too.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 0,
            other => return Err(SeccompError::Unsupported(format!("flag {other:?}"))),
        };
    }
    Ok(flags)
}

/// Compiles a profile into one filter.
pub fn compile(profile: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported(
            "listenerPath (seccomp notify) is not supported".into(),
        ));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let flags = filter_flags(profile)?;
    let mut plans: BTreeMap<u32, Plan> = BTreeMap::new();
    for sc in profile.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        let conds = conditions(sc)?;
        if act == default {
            continue;
        }
        let repeated = (0..6u8).any(|i| conds.iter().filter(|c| c.index == i).count() > 1);
        let rules: Vec<Rule> = if repeated {
            conds
                .iter()
                .map(|c| Rule {
                    conds: vec![*c],
                    action: act,
                })
                .collect()
        } else {
            vec![Rule {
                conds: conds.clone(),
                action: act,
            }]
        };
        for name in sc.names() {
            let Some(nr) = syscall_nr(name) else {
                tracing::debug!(syscall = %name, "seccomp: unknown syscall skipped");
                continue;
            };
            let plan = plans.entry(nr).or_insert(Plan::Rules(Vec::new()));
            match plan {
                Plan::Always(_) => {}
                Plan::Rules(_) if conds.is_empty() => *plan = Plan::Always(act),
                Plan::Rules(existing) => existing.extend(rules.iter().cloned()),
            }
        }
    }
    let program = emit(default, &plans)?;
    Ok(Filter { program, flags })
}

/// Where a jump in a snippet goes.
#[derive(Debug, Clone, Copy)]
enum To {
    /// The next instruction.
    Next,
    /// The end of the snippet (the condition holds).
    Pass,
    /// The end of the rule (the condition fails).
    Fail,
}

#[derive(Clone, Copy)]
enum Op {
    Load(u32),
    And(u32),
    Jump(u16, u32, To, To),
}

/// The instructions testing one condition on a 64-bit argument.
fn snippet(c: &Cond) -> Vec<Op> {
    use To::{Fail, Next, Pass};
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let (ld_hi, ld_lo) = (Op::Load(arg_hi(c.index)), Op::Load(arg_lo(c.index)));
    // The high word decides unless equal; then the low word decides.
    let ordered = |lo_op: u16, lo_t: To, lo_f: To, hi_gt: To, hi_lt: To| {
        vec![
            ld_hi,
            Op::Jump(BPF_JGT_K, hi, hi_gt, Next),
            Op::Jump(BPF_JEQ_K, hi, Next, hi_lt),
            ld_lo,
            Op::Jump(lo_op, lo, lo_t, lo_f),
        ]
    };
    match c.cmp {
        Cmp::Eq => vec![
            ld_hi,
            Op::Jump(BPF_JEQ_K, hi, Next, Fail),
            ld_lo,
            Op::Jump(BPF_JEQ_K, lo, Pass, Fail),
        ],
        Cmp::Ne => vec![
            ld_hi,
            Op::Jump(BPF_JEQ_K, hi, Next, Pass),
            ld_lo,
            Op::Jump(BPF_JEQ_K, lo, Fail, Pass),
        ],
        Cmp::Gt => ordered(BPF_JGT_K, Pass, Fail, Pass, Fail),
        Cmp::Ge => ordered(BPF_JGE_K, Pass, Fail, Pass, Fail),
        Cmp::Lt => ordered(BPF_JGE_K, Fail, Pass, Fail, Pass),
        Cmp::Le => ordered(BPF_JGT_K, Fail, Pass, Fail, Pass),
        Cmp::MaskedEq { mask } => vec![
            ld_hi,
            Op::And((mask >> 32) as u32),
            Op::Jump(BPF_JEQ_K, hi, Next, Fail),
            ld_lo,
            Op::And(mask as u32),
            Op::Jump(BPF_JEQ_K, lo, Pass, Fail),
        ],
    }
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: usize, jf: usize) -> Result<libc::sock_filter, SeccompError> {
    let short = |o: usize| {
        u8::try_from(o).map_err(|_| SeccompError::Compile(format!("jump of {o} instructions")))
    };
    Ok(libc::sock_filter {
        code,
        jt: short(jt)?,
        jf: short(jf)?,
        k,
    })
}

/// One rule: its conditions in order, then its action. A failing condition jumps past the
/// action, to the next rule.
fn rule_block(rule: &Rule) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let snippets: Vec<Vec<Op>> = rule.conds.iter().map(snippet).collect();
    let mut out = Vec::new();
    // Instructions after each snippet up to and including the RET.
    let mut after: usize = snippets.iter().map(Vec::len).sum::<usize>() + 1;
    for s in &snippets {
        after -= s.len();
        for (i, op) in s.iter().enumerate() {
            let to_end = s.len() - i - 1;
            let off = |t: To| match t {
                To::Next => 0,
                To::Pass => to_end,
                To::Fail => to_end + after,
            };
            out.push(match *op {
                Op::Load(k) => stmt(BPF_LD_W_ABS, k),
                Op::And(k) => stmt(BPF_ALU_AND_K, k),
                Op::Jump(code, k, t, f) => jump(code, k, off(t), off(f))?,
            });
        }
    }
    out.push(stmt(BPF_RET_K, rule.action));
    Ok(out)
}

/// Lays out: architecture check, syscall number dispatch (two instructions per syscall: a
/// short compare, then the action or a long jump to the syscall's rules), the default action,
/// then the rule blocks.
fn emit(default: u32, plans: &BTreeMap<u32, Plan>) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let bad_arch = libc::SECCOMP_RET_KILL_THREAD;
    let mut out = vec![
        stmt(BPF_LD_W_ABS, OFF_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0)?,
        stmt(BPF_RET_K, bad_arch),
        stmt(BPF_LD_W_ABS, OFF_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1)?,
        stmt(BPF_RET_K, bad_arch),
    ];
    let mut blocks: Vec<(usize, Vec<libc::sock_filter>)> = Vec::new();
    for (nr, plan) in plans {
        out.push(jump(BPF_JEQ_K, *nr, 0, 1)?);
        match plan {
            Plan::Always(act) => out.push(stmt(BPF_RET_K, *act)),
            Plan::Rules(rules) => {
                let mut block = Vec::new();
                for r in rules {
                    block.extend(rule_block(r)?);
                }
                block.push(stmt(BPF_RET_K, default));
                blocks.push((out.len(), block));
                out.push(stmt(BPF_JMP_JA, 0)); // patched below
            }
        }
    }
    out.push(stmt(BPF_RET_K, default));
    for (ja, block) in blocks {
        out[ja].k = (out.len() - ja - 1) as u32;
        out.extend(block);
    }
    if out.len() > MAX_INSNS {
        return Err(SeccompError::Compile(format!(
            "{} BPF instructions (the kernel takes at most {MAX_INSNS})",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "seccomp_tests.rs"]
mod tests;
