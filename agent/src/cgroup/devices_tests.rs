//! Tests for the device rules and the program: named cases with the answers written out, and
//! an interpreter over the emitted instructions checked against `allows` for every
//! (type, major, minor, access) of interest.

use super::*;
use oci_spec::runtime::LinuxDeviceCgroupBuilder;

/// Runs `prog` on a `bpf_cgroup_dev_ctx`, like the kernel would; only the opcodes `program`
/// emits. Panics on anything else, a jump out of the program or a register read before write.
fn run(prog: &[Insn], dev_type: u32, major: u32, minor: u32, access: u32) -> u64 {
    let ctx = [(access << 16) | dev_type, major, minor];
    let mut reg: [Option<u64>; 11] = [None; 11];
    reg[1] = Some(u64::MAX); // a pointer; only LDX from r1 is allowed
    let mut pc = 0usize;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 100_000, "program loops");
        let i = prog
            .get(pc)
            .unwrap_or_else(|| panic!("pc {pc} ran off the program"));
        let dst = usize::from(i.regs & 0xf);
        let src = usize::from(i.regs >> 4);
        let get = |r: usize| reg[r].unwrap_or_else(|| panic!("r{r} read before write at {pc}"));
        let mut next = pc + 1;
        let target = |off: i16| {
            assert!(off >= 0, "backward jump at {pc}");
            pc + 1 + off as usize
        };
        match i.code {
            op::LDX_W => {
                assert_eq!(src, 1, "loads only from the context");
                assert!(
                    i.off >= 0 && i.off % 4 == 0 && i.off < 12,
                    "ctx offset {}",
                    i.off
                );
                reg[dst] = Some(u64::from(ctx[i.off as usize / 4]));
            }
            op::AND32_K => reg[dst] = Some((get(dst) as u32 & i.imm as u32) as u64),
            op::RSH32_K => reg[dst] = Some(((get(dst) as u32) >> i.imm) as u64),
            op::MOV32_K => reg[dst] = Some(u64::from(i.imm as u32)),
            op::JNE32_K => {
                if get(dst) as u32 != i.imm as u32 {
                    next = target(i.off);
                }
            }
            op::JSET32_K => {
                if get(dst) as u32 & i.imm as u32 != 0 {
                    next = target(i.off);
                }
            }
            op::JA => next = target(i.off),
            op::EXIT => return get(0),
            c => panic!("opcode {c:#x} at {pc} is not in the interpreter"),
        }
        pc = next;
    }
}

/// Every instruction is reachable (the verifier refuses programs with dead code).
fn assert_all_reachable(prog: &[Insn]) {
    let mut seen = vec![false; prog.len()];
    let mut todo = vec![0usize];
    while let Some(pc) = todo.pop() {
        if pc >= prog.len() || seen[pc] {
            continue;
        }
        seen[pc] = true;
        let i = prog[pc];
        let jump = pc + 1 + i.off as usize;
        match i.code {
            op::EXIT => {}
            op::JA => todo.push(jump),
            op::JNE32_K | op::JSET32_K => {
                todo.push(pc + 1);
                todo.push(jump);
            }
            _ => todo.push(pc + 1),
        }
    }
    let dead: Vec<usize> = (0..prog.len()).filter(|&i| !seen[i]).collect();
    assert!(dead.is_empty(), "unreachable instructions {dead:?}");
}

fn spec_rule(
    allow: bool,
    typ: &str,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access(access);
    b = match typ {
        "a" => b.typ(LinuxDeviceType::A),
        "c" => b.typ(LinuxDeviceType::C),
        "b" => b.typ(LinuxDeviceType::B),
        "u" => b.typ(LinuxDeviceType::U),
        "p" => b.typ(LinuxDeviceType::P),
        _ => b,
    };
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().unwrap()
}

const R: u32 = ACC_READ;
const W: u32 = ACC_WRITE;
const M: u32 = ACC_MKNOD;

/// The devices the checks probe: the defaults, neighbours of rule values, and the ones a
/// container must never reach (mem 1:1, kmem 1:2, port 1:4, vda 254:0).
const DEVICES: &[(u32, u32, u32)] = &[
    (DEV_CHAR, 1, 1),
    (DEV_CHAR, 1, 2),
    (DEV_CHAR, 1, 3),
    (DEV_CHAR, 1, 4),
    (DEV_CHAR, 1, 5),
    (DEV_CHAR, 1, 7),
    (DEV_CHAR, 1, 8),
    (DEV_CHAR, 1, 9),
    (DEV_CHAR, 4, 0),
    (DEV_CHAR, 5, 0),
    (DEV_CHAR, 5, 1),
    (DEV_CHAR, 5, 2),
    (DEV_CHAR, 10, 200),
    (DEV_CHAR, 136, 0),
    (DEV_CHAR, 136, 7),
    (DEV_CHAR, 254, 0),
    (DEV_CHAR, 0xffff_ffff, 0xffff_ffff),
    (DEV_BLOCK, 1, 3),
    (DEV_BLOCK, 8, 0),
    (DEV_BLOCK, 254, 0),
    (DEV_BLOCK, 254, 1),
    (DEV_BLOCK, 0x7fff_ffff, 0),
];

/// The program for `rules` decides every probe exactly as `allows` does.
fn check_program_matches(rules: &[Rule]) {
    let prog = program(rules).unwrap();
    assert_all_reachable(&prog);
    for &(t, ma, mi) in DEVICES {
        for access in 0..=ACC_ALL {
            let want = allows(rules, t, ma, mi, access);
            let got = run(&prog, t, ma, mi, access);
            assert_eq!(
                got,
                u64::from(want),
                "type {t} {ma}:{mi} access {access:#b} with rules {rules:#?}"
            );
        }
    }
}

fn effective(list: &[LinuxDeviceCgroup]) -> Vec<Rule> {
    effective_rules(list).unwrap()
}

#[test]
fn runc_default_spec_denies_all_but_the_standard_nodes() {
    // `runc spec`: deny everything, then runc's appended allow list.
    let rules = effective(&[spec_rule(false, "a", None, None, "rwm")]);
    for (ma, mi) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (136, 4),
        (10, 200),
    ] {
        assert!(allows(&rules, DEV_CHAR, ma, mi, R | W), "{ma}:{mi}");
    }
    // /dev/mem, /dev/kmem, /dev/port and the raw disk: a node can be made, never opened.
    for (t, ma, mi) in [
        (DEV_CHAR, 1, 1),
        (DEV_CHAR, 1, 2),
        (DEV_CHAR, 1, 4),
        (DEV_BLOCK, 254, 0),
    ] {
        assert!(allows(&rules, t, ma, mi, M), "mknod {ma}:{mi}");
        assert!(!allows(&rules, t, ma, mi, R), "read {ma}:{mi}");
        assert!(!allows(&rules, t, ma, mi, W), "write {ma}:{mi}");
        assert!(!allows(&rules, t, ma, mi, R | W), "rw {ma}:{mi}");
    }
    check_program_matches(&rules);
}

#[test]
fn no_spec_rules_is_the_same_deny_by_default() {
    let rules = effective(&[]);
    assert!(!allows(&rules, DEV_CHAR, 1, 1, R));
    assert!(allows(&rules, DEV_CHAR, 1, 3, R | W));
    check_program_matches(&rules);
}

#[test]
fn explicit_allow_opens_the_node_it_names_only() {
    let rules = effective(&[
        spec_rule(false, "a", None, None, "rwm"),
        spec_rule(true, "b", Some(254), Some(1), "r"),
    ]);
    assert!(allows(&rules, DEV_BLOCK, 254, 1, R));
    assert!(
        !allows(&rules, DEV_BLOCK, 254, 1, W),
        "write was not granted"
    );
    assert!(!allows(&rules, DEV_BLOCK, 254, 1, R | W), "rw needs both");
    assert!(!allows(&rules, DEV_BLOCK, 254, 0, R), "other minor");
    assert!(!allows(&rules, DEV_CHAR, 254, 1, R), "other type");
    check_program_matches(&rules);
}

#[test]
fn last_match_wins_per_access_bit() {
    // allow rwm, then deny w: reads still work, writes and read-write opens do not.
    let rules = effective(&[
        spec_rule(false, "a", None, None, "rwm"),
        spec_rule(true, "c", Some(4), Some(0), "rwm"),
        spec_rule(false, "c", Some(4), Some(0), "w"),
    ]);
    assert!(allows(&rules, DEV_CHAR, 4, 0, R));
    assert!(!allows(&rules, DEV_CHAR, 4, 0, W));
    assert!(!allows(&rules, DEV_CHAR, 4, 0, R | W));
    assert!(allows(&rules, DEV_CHAR, 4, 0, M), "mknod from the defaults");
    check_program_matches(&rules);

    // Two partial allows add up (as runc's emulator merges them).
    let rules = effective(&[
        spec_rule(false, "a", None, None, "rwm"),
        spec_rule(true, "c", Some(4), Some(0), "r"),
        spec_rule(true, "c", Some(4), Some(0), "w"),
    ]);
    assert!(allows(&rules, DEV_CHAR, 4, 0, R | W));
    check_program_matches(&rules);

    // A deny after an allow wins; an allow after a deny wins.
    let rules = effective(&[
        spec_rule(true, "c", Some(4), None, "rw"),
        spec_rule(false, "c", Some(4), Some(1), "rw"),
    ]);
    assert!(allows(&rules, DEV_CHAR, 4, 0, R | W));
    assert!(!allows(&rules, DEV_CHAR, 4, 1, R));
    check_program_matches(&rules);
}

#[test]
fn wildcards_and_all_type() {
    // Allow every block device read-only (missing major/minor, -1), deny one major.
    let rules = effective(&[
        spec_rule(false, "a", None, None, "rwm"),
        spec_rule(true, "b", Some(-1), None, "r"),
        spec_rule(false, "b", Some(254), Some(-1), "rwm"),
    ]);
    assert!(allows(&rules, DEV_BLOCK, 8, 0, R));
    assert!(!allows(&rules, DEV_BLOCK, 8, 0, W));
    assert!(!allows(&rules, DEV_BLOCK, 254, 1, R));
    assert!(
        allows(&rules, DEV_BLOCK, 254, 1, M),
        "defaults still allow mknod"
    );
    check_program_matches(&rules);

    // "a" with no major/minor, allow: everything (the defaults add nothing).
    let rules = effective(&[spec_rule(true, "a", None, None, "rwm")]);
    for &(t, ma, mi) in DEVICES {
        assert!(allows(&rules, t, ma, mi, R | W | M));
    }
    check_program_matches(&rules);

    // "a" for one major number covers char and block.
    let rules = effective(&[spec_rule(true, "a", Some(7), None, "rw")]);
    assert!(allows(&rules, DEV_CHAR, 7, 3, R | W));
    assert!(allows(&rules, DEV_BLOCK, 7, 0, R));
    check_program_matches(&rules);

    // 'u' is a char device; 'p' rules are ignored.
    let rules = rules_from_spec(&[
        spec_rule(true, "u", Some(4), Some(1), "rwm"),
        spec_rule(true, "p", None, None, "rwm"),
    ])
    .unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].kind, Kind::Char);
}

#[test]
fn missing_fields_default_like_the_runtime_spec() {
    // No type = all, no access = rwm.
    let d: LinuxDeviceCgroup = serde_json::from_str(r#"{"allow": false}"#).unwrap();
    assert_eq!(
        rules_from_spec(&[d]).unwrap(),
        vec![Rule {
            allow: false,
            kind: Kind::All,
            major: None,
            minor: None,
            access: ACC_ALL
        }]
    );
}

#[test]
fn bad_rules_name_the_field() {
    let err = rules_from_spec(&[
        spec_rule(true, "c", Some(1), Some(3), "rwm"),
        spec_rule(true, "c", Some(1), Some(3), "rx"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("linux.resources.devices[1].access:"),
        "{err}"
    );
    let err = rules_from_spec(&[spec_rule(true, "c", Some(1 << 40), None, "r")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("linux.resources.devices[0].major:"),
        "{err}"
    );
}

#[test]
fn programs_for_many_rule_lists_match_the_semantics() {
    // A deterministic spread of small lists over the probe devices' numbers.
    let kinds = ["a", "c", "b"];
    let accesses = ["r", "w", "m", "rw", "rm", "wm", "rwm"];
    let numbers = [None, Some(1), Some(5), Some(254)];
    let mut seed: u32 = 0x2545_f491;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize % n
    };
    for _ in 0..300 {
        let len = next(6);
        let list: Vec<_> = (0..len)
            .map(|_| {
                spec_rule(
                    next(2) == 0,
                    kinds[next(3)],
                    numbers[next(4)],
                    numbers[next(4)].map(|m| if m == 254 { 0 } else { m }),
                    accesses[next(7)],
                )
            })
            .collect();
        check_program_matches(&rules_from_spec(&list).unwrap());
        check_program_matches(&effective(&list));
    }
}

#[test]
fn prologue_reads_the_context_fields() {
    let prog = program(&[]).unwrap();
    assert_eq!(
        prog[0],
        Insn {
            code: op::LDX_W,
            regs: 2 | (1 << 4),
            off: 0,
            imm: 0
        }
    );
    assert_eq!(
        prog[4],
        Insn {
            code: op::LDX_W,
            regs: 4 | (1 << 4),
            off: 4,
            imm: 0
        }
    );
    assert_eq!(
        prog[5],
        Insn {
            code: op::LDX_W,
            regs: 5 | (1 << 4),
            off: 8,
            imm: 0
        }
    );
    // No rules: everything denied, nothing requested allowed.
    assert_eq!(run(&prog, DEV_CHAR, 1, 3, R), 0);
    assert_eq!(run(&prog, DEV_CHAR, 1, 3, 0), 1);
    assert_eq!(std::mem::size_of::<Insn>(), 8);
}
