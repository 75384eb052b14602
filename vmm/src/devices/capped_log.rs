//! A log file that never grows past a cap: the console log's writer.
//!
//! The guest decides how much it prints, and the console log lives on the host (on `/run`, a
//! tmpfs: host memory). [`CappedLog`] keeps the most recent output: when a write would take the
//! file past its cap, the newest half of the file moves to the front, behind a one-line marker,
//! and the file is truncated after it.
//!
//! Owns: that file's contents. It works on the open file only (`pread`, `pwrite`, `ftruncate`,
//! `fstat`, `fcntl`), never on a path: the VMM keeps writing the console from inside its jail,
//! where there is no filesystem to open anything in.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The default cap of a console log.
pub const DEFAULT_CAP_BYTES: u64 = 8 << 20;

/// What the front of a file that lost its oldest output says.
pub const TRUNCATED_MARKER: &[u8] = b"[husk: older console output dropped]\n";

/// Bytes moved per `pread`/`pwrite` pair when the file is compacted.
const CHUNK: usize = 64 << 10;

/// A `Write` into `file` that keeps at most `cap` bytes in it (see the module header).
#[derive(Debug)]
pub struct CappedLog {
    file: File,
    cap: u64,
    len: u64,
    /// Whether the kept half can be read back; a write-only file starts over instead.
    readable: bool,
}

impl CappedLog {
    /// Writes go to the end of `file`. Open it for reading and writing: the newest half is read
    /// back (`pread`) when the file is compacted; a write-only file keeps only the marker and
    /// what comes after. `O_APPEND` is cleared: Linux's `pwrite` ignores its offset under it.
    pub fn new(file: File, cap_bytes: u64) -> io::Result<Self> {
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL on an fd this function owns through `file`; no pointers.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_APPEND != 0 {
            // SAFETY: as above; F_SETFL takes an int of flags.
            if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_APPEND) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            cap: cap_bytes,
            len,
            readable: flags & libc::O_ACCMODE == libc::O_RDWR,
        })
    }

    /// The cap in bytes.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// How many bytes the file holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes room for `incoming` (at most `cap`) bytes: keeps the newest `min(len, cap / 2)`
    /// bytes that still leave room for them, behind [`TRUNCATED_MARKER`] when it fits too.
    fn compact(&mut self, incoming: u64) -> io::Result<()> {
        let m = TRUNCATED_MARKER.len() as u64;
        let marker = if self.cap >= 4 * m && incoming + m <= self.cap {
            TRUNCATED_MARKER
        } else {
            &[]
        };
        let room = self
            .cap
            .saturating_sub(incoming)
            .saturating_sub(marker.len() as u64);
        let keep = if self.readable {
            self.len.min(self.cap / 2).min(room)
        } else {
            0
        };
        let from = self.len - keep;
        let to = marker.len() as u64;
        // Forward copy: the destination starts before the source, so every chunk is read before
        // anything overwrites it.
        let mut buf = vec![0u8; CHUNK.min(keep as usize)];
        let mut done = 0;
        while done < keep {
            let n = ((keep - done) as usize).min(buf.len());
            self.file.read_exact_at(&mut buf[..n], from + done)?;
            self.file.write_all_at(&buf[..n], to + done)?;
            done += n as u64;
        }
        self.file.write_all_at(marker, 0)?;
        self.len = to + keep;
        self.file.set_len(self.len)
    }
}

impl Write for CappedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cap == 0 {
            return Ok(buf.len());
        }
        // Of a write larger than the cap, only its end can be kept.
        let tail = &buf[buf.len().saturating_sub(self.cap as usize)..];
        if self.len + tail.len() as u64 > self.cap {
            self.compact(tail.len() as u64)?;
        }
        self.file.write_all_at(tail, self.len)?;
        self.len += tail.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn temp_file() -> File {
        let path = std::env::temp_dir().join(format!(
            "husk-capped-log-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    fn contents(log: &CappedLog) -> Vec<u8> {
        let mut f = log.file.try_clone().unwrap();
        let mut v = Vec::new();
        std::io::Seek::rewind(&mut f).unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn three_caps_of_output_stay_under_the_cap_and_keep_the_newest() {
        const CAP: u64 = 64 << 10;
        let mut log = CappedLog::new(temp_file(), CAP).unwrap();
        // Numbered lines, written in pieces of awkward sizes, like a console.
        let all: Vec<u8> = (0..)
            .flat_map(|i: u64| format!("line {i:08}\n").into_bytes())
            .take(3 * CAP as usize)
            .collect();
        for piece in all.chunks(777) {
            assert_eq!(log.write(piece).unwrap(), piece.len());
            assert!(log.len() <= CAP, "{} > {CAP}", log.len());
        }
        let kept = contents(&log);
        assert_eq!(kept.len() as u64, log.len());
        assert!(kept.len() as u64 <= CAP);
        assert!(
            kept.len() as u64 >= CAP / 2,
            "keeps at least half: {}",
            kept.len()
        );
        assert!(kept.starts_with(TRUNCATED_MARKER));
        assert!(
            all.ends_with(&kept[TRUNCATED_MARKER.len()..]),
            "a contiguous tail"
        );
    }

    #[test]
    fn one_write_larger_than_the_cap_keeps_its_end() {
        let mut log = CappedLog::new(temp_file(), 1000).unwrap();
        log.write_all(b"old output\n").unwrap();
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        log.write_all(&big).unwrap();
        let kept = contents(&log);
        assert!(kept.len() <= 1000);
        assert!(big.ends_with(&kept), "only the newest bytes");
        log.write_all(b"x").unwrap();
        assert!(contents(&log).ends_with(b"x"));
        assert!(log.len() <= 1000);
    }

    #[test]
    fn append_mode_files_and_existing_contents_are_handled() {
        let f = temp_file();
        (&f).write_all(&[b'a'; 900]).unwrap();
        // SAFETY: F_SETFL with plain flags on an fd `f` owns.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_APPEND) };
        assert_eq!(r, 0);
        let mut log = CappedLog::new(f, 1000).unwrap();
        assert_eq!(log.len(), 900);
        log.write_all(&[b'b'; 300]).unwrap();
        let kept = contents(&log);
        assert!(kept.len() <= 1000);
        assert!(kept.ends_with(&[b'b'; 300]));
        assert!(kept.starts_with(TRUNCATED_MARKER));
    }

    #[test]
    fn a_write_only_file_stays_capped_and_starts_over() {
        let path = std::env::temp_dir().join(format!("husk-capped-log-wo-{}", std::process::id()));
        let mut log = CappedLog::new(File::create(&path).unwrap(), 1000).unwrap();
        for i in 0..300u32 {
            log.write_all(format!("{i:09}\n").as_bytes()).unwrap();
            assert!(log.len() <= 1000);
        }
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(kept.starts_with(TRUNCATED_MARKER));
        assert!(kept.ends_with(b"000000299\n"));
        assert!(kept.len() <= 1000);
    }

    #[test]
    fn a_zero_cap_keeps_nothing() {
        let mut log = CappedLog::new(temp_file(), 0).unwrap();
        log.write_all(b"anything").unwrap();
        assert!(contents(&log).is_empty());
    }
}
