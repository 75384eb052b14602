//! The bpf(2) calls behind a container's device program: load a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program, attach it to a cgroup directory with
//! `BPF_F_ALLOW_MULTI` (so nothing below can replace it; programs below only add checks),
//! detach it, and list the device programs attached to a cgroup. Only these syscalls; what the
//! program says is `super::devices`'.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::devices::Insn;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("bpf(BPF_PROG_LOAD) of the device program: {source}{}", verifier(.log))]
    Load { source: std::io::Error, log: String },
    #[error("bpf({cmd}) on cgroup {path}: {source}", path = .path.display())]
    Cgroup {
        cmd: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn verifier(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("; verifier log:\n{log}")
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The license the kernel records for the program (runc's; no GPL-only helpers are used).
const LICENSE: &str = "Apache";
/// The name `bpftool prog` shows.
const NAME: &[u8] = b"husk_devices";

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type` (the kernel zero-fills
/// the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
}

/// bpf(cmd, attr, sizeof attr).
///
/// # Safety
/// Every pointer inside `attr` must be valid for what `cmd` does with it for the whole call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `union bpf_attr` prefix of the size
    // passed; the caller vouches for the pointers inside it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn load_once(prog: &[Insn], log: Option<&mut Vec<u8>>) -> std::io::Result<OwnedFd> {
    let license = CString::new(LICENSE).expect("no NUL");
    let mut name = [0u8; 16];
    name[..NAME.len()].copy_from_slice(NAME);
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    if let Some(buf) = log {
        attr.log_level = 1;
        attr.log_size = buf.len() as u32;
        attr.log_buf = buf.as_mut_ptr() as u64;
    }
    // SAFETY: `insns` points at `prog.len()` 8-byte `struct bpf_insn`s, `license` at a
    // NUL-terminated string and `log_buf` (if set) at `log_size` writable bytes, all alive
    // until the call returns.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr)? };
    // SAFETY: BPF_PROG_LOAD returned a new program fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads a device program. On failure loads it again with the verifier log on, so the error
/// says why.
pub fn load(prog: &[Insn]) -> Result<OwnedFd, BpfError> {
    load_once(prog, None).map_err(|source| {
        let mut buf = vec![0u8; 256 * 1024];
        let log = match load_once(prog, Some(&mut buf)) {
            // Loads with the log on: report the first failure alone.
            Ok(_) => String::new(),
            Err(_) => {
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                let text = String::from_utf8_lossy(&buf[..end]);
                // The tail says what was refused.
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            }
        };
        BpfError::Load { source, log }
    })
}

/// A cgroup directory opened for bpf(2).
pub struct CgroupDir {
    dir: File,
    path: PathBuf,
}

impl CgroupDir {
    pub fn open(path: &Path) -> Result<Self, BpfError> {
        let dir = File::open(path).map_err(|source| BpfError::Cgroup {
            cmd: "open",
            path: path.into(),
            source,
        })?;
        Ok(CgroupDir {
            dir,
            path: path.into(),
        })
    }

    fn err(&self, cmd: &'static str) -> impl FnOnce(std::io::Error) -> BpfError + '_ {
        move |source| BpfError::Cgroup {
            cmd,
            path: self.path.clone(),
            source,
        }
    }

    fn attach_cmd(
        &self,
        cmd: libc::c_long,
        prog: BorrowedFd<'_>,
        flags: u32,
    ) -> std::io::Result<()> {
        let mut attr = AttachAttr {
            target_fd: self.dir.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: flags,
            ..Default::default()
        };
        // SAFETY: the attr holds only fds, both open for the duration of the call.
        unsafe { bpf(cmd, &mut attr) }.map(drop)
    }

    /// Attaches `prog` as one of possibly several device programs (BPF_F_ALLOW_MULTI).
    pub fn attach(&self, prog: &OwnedFd) -> Result<(), BpfError> {
        self.attach_cmd(BPF_PROG_ATTACH, prog.as_fd(), BPF_F_ALLOW_MULTI)
            .map_err(self.err("BPF_PROG_ATTACH"))
    }

    /// Detaches `prog` (one attached with `attach`).
    pub fn detach(&self, prog: &OwnedFd) -> Result<(), BpfError> {
        self.attach_cmd(BPF_PROG_DETACH, prog.as_fd(), 0)
            .map_err(self.err("BPF_PROG_DETACH"))
    }

    /// The ids of the device programs attached to this cgroup itself.
    pub fn attached(&self) -> Result<Vec<u32>, BpfError> {
        let mut ids = vec![0u32; 64];
        let mut attr = QueryAttr {
            target_fd: self.dir.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        // SAFETY: `prog_ids` points at `prog_cnt` writable u32s alive for the call.
        unsafe { bpf(BPF_PROG_QUERY, &mut attr) }.map_err(self.err("BPF_PROG_QUERY"))?;
        ids.truncate((attr.prog_cnt as usize).min(ids.len()));
        Ok(ids)
    }
}
