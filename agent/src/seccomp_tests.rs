//! The compiled program, run by a small classic-BPF interpreter against the outcome runc +
//! libseccomp give the same profile; and one real install in a forked child.

use super::*;

const ERRNO: u32 = libc::SECCOMP_RET_ERRNO;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).unwrap()
}

/// Runs `prog` on a seccomp_data and returns the action, as the kernel would.
fn run_on(prog: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = Vec::new();
    data.extend_from_slice(&nr.to_le_bytes());
    data.extend_from_slice(&arch.to_le_bytes());
    data.extend_from_slice(&0u64.to_le_bytes());
    for a in args {
        data.extend_from_slice(&a.to_le_bytes());
    }
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = prog[pc];
        pc += 1;
        let cond = |taken: bool| if taken { i.jt } else { i.jf } as usize;
        match i.code {
            BPF_LD_W_ABS => {
                let o = i.k as usize;
                a = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
            }
            BPF_ALU_AND_K => a &= i.k,
            BPF_JMP_JA => pc += i.k as usize,
            BPF_JEQ_K => pc += cond(a == i.k),
            BPF_JGT_K => pc += cond(a > i.k),
            BPF_JGE_K => pc += cond(a >= i.k),
            BPF_RET_K => return i.k,
            other => panic!("opcode {other:#x} at {}", pc - 1),
        }
    }
}

fn run(f: &Filter, name: &str, args: [u64; 6]) -> u32 {
    let nr = syscall_nr(name).unwrap_or_else(|| panic!("{name} unknown"));
    run_on(f.program(), AUDIT_ARCH_X86_64, nr, args)
}

#[test]
fn the_name_table_is_sorted_and_matches_libc() {
    assert!(syscalls::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
    for (name, nr) in [
        ("read", libc::SYS_read),
        ("openat2", libc::SYS_openat2),
        ("clone3", libc::SYS_clone3),
        ("personality", libc::SYS_personality),
        ("exit_group", libc::SYS_exit_group),
    ] {
        assert_eq!(syscall_nr(name), Some(nr as u32), "{name}");
    }
    assert_eq!(syscall_nr("arm_fadvise64_64"), None);
}

/// (a) runc compiles one libseccomp filter in which each syscall has its own action: a LOG
/// or TRACE rule under an ERRNO default logs/traces that syscall (the kernel runs it) and
/// every other syscall gets the default. Stacked filters made the ERRNO default win.
#[test]
fn log_and_trace_rules_win_over_a_non_allow_default_in_one_filter() {
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_LOG"},
            {"names":["getppid"],"action":"SCMP_ACT_TRACE"},
            {"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
            {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
    ))
    .unwrap();
    assert_eq!(run(&f, "getpid", [0; 6]), libc::SECCOMP_RET_LOG);
    // runc: SCMP_ACT_TRACE without errnoRet carries EPERM as the tracer's data.
    assert_eq!(
        run(&f, "getppid", [0; 6]),
        libc::SECCOMP_RET_TRACE | libc::EPERM as u32
    );
    assert_eq!(run(&f, "read", [0; 6]), ALLOW);
    assert_eq!(run(&f, "ptrace", [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
    assert_eq!(run(&f, "mkdir", [0; 6]), ERRNO | 38, "defaultErrnoRet");
}

/// (b) libseccomp drops a syscall's argument chains once an unconditional rule exists for it
/// (in either order), so `personality` is allowed for every argument, not only for 8.
#[test]
fn an_unconditional_rule_wins_over_conditional_rules_for_the_same_syscall() {
    for order in [
        r#"[{"names":["personality"],"action":"SCMP_ACT_ALLOW"},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]"#,
        r#"[{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW"}]"#,
    ] {
        let f = compile(&profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":{order}}}"#
        )))
        .unwrap();
        assert_eq!(run(&f, "personality", [0; 6]), ALLOW, "{order}");
        assert_eq!(run(&f, "personality", [8, 0, 0, 0, 0, 0]), ALLOW, "{order}");
        assert_eq!(run(&f, "mkdir", [0; 6]), ERRNO | libc::EPERM as u32);
    }
}

/// Argument conditions as libseccomp evaluates them on x86_64: full 64-bit unsigned
/// compares, MASKED_EQ as `(arg & value) == valueTwo`, all conditions of a rule must hold,
/// conditional rules of one syscall with different actions each apply where they match.
#[test]
fn argument_conditions_compare_64_bit_values() {
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["clone"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
             "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
            {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","errnoRet":25,
             "args":[{"index":1,"value":21522,"op":"SCMP_CMP_EQ"},{"index":0,"value":2,"op":"SCMP_CMP_LE"}]},
            {"names":["ioctl"],"action":"SCMP_ACT_KILL_PROCESS",
             "args":[{"index":1,"value":4294967296,"op":"SCMP_CMP_GE"}]},
            {"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":9,"op":"SCMP_CMP_NE"}]},
            {"names":["dup"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":4294967300,"op":"SCMP_CMP_GT"}]},
            {"names":["dup2"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":4294967300,"op":"SCMP_CMP_LT"}]}]}"#,
    ))
    .unwrap();
    let eperm = ERRNO | 1;
    // Docker's clone rule: no namespace flags set -> the rule matches.
    assert_eq!(run(&f, "clone", [0x11, 0, 0, 0, 0, 0]), eperm);
    assert_eq!(run(&f, "clone", [0x1000_0000, 0, 0, 0, 0, 0]), ALLOW);
    // Both conditions of the first ioctl rule.
    assert_eq!(run(&f, "ioctl", [1, 21522, 0, 0, 0, 0]), ERRNO | 25);
    assert_eq!(run(&f, "ioctl", [3, 21522, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        run(&f, "ioctl", [1, 21522 | (1 << 32), 0, 0, 0, 0]),
        libc::SECCOMP_RET_KILL_PROCESS,
        "the high word counts: no EQ match, the GE rule matches"
    );
    assert_eq!(run(&f, "ioctl", [1, 0xffff_ffff, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(&f, "kill", [1, 9, 0, 0, 0, 0]), ALLOW);
    assert_eq!(run(&f, "kill", [1, 9 | (1 << 32), 0, 0, 0, 0]), eperm);
    let big = 4_294_967_300u64;
    for (v, gt) in [
        (big + 1, true),
        (big, false),
        (big - 1, false),
        (1 << 33, true),
        (5, false),
    ] {
        let dup = run(&f, "dup", [v, 0, 0, 0, 0, 0]);
        assert_eq!(dup == eperm, gt, "dup({v}) > {big}");
        let dup2 = run(&f, "dup2", [v, 0, 0, 0, 0, 0]);
        assert_eq!(dup2 == eperm, v < big, "dup2({v}) < {big}");
    }
}

/// runc: a rule with the default action is dropped; several conditions on one argument
/// index become one rule each (OR), its fallback for libseccomp's AND on distinct indexes.
#[test]
fn rules_like_the_default_are_dropped_and_repeated_indexes_mean_any() {
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["mkdir"],"action":"SCMP_ACT_ERRNO"},
            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[
                {"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#,
    ))
    .unwrap();
    assert_eq!(run(&f, "personality", [0; 6]), ALLOW);
    assert_eq!(run(&f, "personality", [8, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        run(&f, "personality", [9, 0, 0, 0, 0, 0]),
        ERRNO | libc::EPERM as u32
    );
    assert_eq!(run(&f, "mkdir", [0; 6]), ERRNO | libc::EPERM as u32);
}

#[test]
fn other_architectures_and_x32_numbers_are_killed() {
    let f = compile(&profile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#)).unwrap();
    assert_eq!(run(&f, "read", [0; 6]), ALLOW);
    let i386 = 0x4000_0003;
    assert_eq!(
        run_on(f.program(), i386, 0, [0; 6]),
        libc::SECCOMP_RET_KILL_THREAD
    );
    assert_eq!(
        run_on(f.program(), AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 1, [0; 6]),
        libc::SECCOMP_RET_KILL_THREAD
    );
}

/// (c) One program per profile, names looked up in a table: a Docker-sized profile (300+
/// names) compiles to one filter that fits the kernel's limit.
#[test]
fn a_large_profile_is_one_program_and_unknown_names_and_bad_fields_are_handled() {
    let names: Vec<&str> = syscalls::SYSCALLS.iter().map(|(n, _)| *n).collect();
    let mut json = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"},
                     {"names": ["no_such_call", "arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW"}]
    });
    let f = compile(&serde_json::from_value(json.clone()).unwrap()).unwrap();
    assert!(f.program().len() <= MAX_INSNS);
    assert_eq!(run(&f, "mseal", [0; 6]), ALLOW);

    json["defaultAction"] = "SCMP_ACT_NOTIFY".into();
    let err = compile(&serde_json::from_value(json.clone()).unwrap()).unwrap_err();
    assert!(err.to_string().starts_with("linux.seccomp: "), "{err}");
    json["defaultAction"] = "SCMP_ACT_ALLOW".into();
    json["syscalls"] = serde_json::json!([{"names": ["read"], "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]);
    let err = compile(&serde_json::from_value(json).unwrap()).unwrap_err();
    assert!(err.to_string().contains("argument index 6"), "{err}");
}

/// The program is accepted by the kernel and behaves as interpreted: installed in a forked
/// child (as root, no no_new_privs needed), getpid is LOGged and runs, getppid gets the ERRNO
/// default, and no_new_privs stays off (issue 12 item 1).
#[test]
fn installs_in_a_child_without_setting_no_new_privs() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED: installing without no_new_privs needs CAP_SYS_ADMIN (root)");
        return;
    }
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":77,"syscalls":[
            {"names":["getpid"],"action":"SCMP_ACT_LOG"},
            {"names":["exit_group","exit","prctl"],"action":"SCMP_ACT_ALLOW"}]}"#,
    ))
    .unwrap();
    // SAFETY: the child only makes raw system calls and _exits (fork from a threaded test).
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let code = (|| {
                if f.install().is_err() {
                    return 10;
                }
                // SAFETY: plain system calls with integer arguments.
                let (pid, ppid, nnp) = unsafe {
                    (
                        libc::syscall(libc::SYS_getpid),
                        libc::syscall(libc::SYS_getppid),
                        libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
                    )
                };
                if pid <= 0 {
                    return 11;
                }
                if ppid != -1 || nix::errno::errno() != 77 {
                    return 12;
                }
                if nnp != 0 {
                    return 13;
                }
                0
            })();
            // SAFETY: _exit ends the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "10 install failed, 11 LOG denied getpid, 12 default not ERRNO(77), 13 NNP set"
            );
        }
    }
}
