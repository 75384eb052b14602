//! virtio-blk request processing: pure queue work over a raw image file, generic over guest
//! memory so it is unit-tested (and fuzzed) on virtio-queue's mock memory.
//!
//! Owns: parsing requests (header, data, status byte), bounds checks against the disk size, and
//! the file I/O. Every failure becomes a status byte for the guest (`VIRTIO_BLK_S_IOERR` or
//! `VIRTIO_BLK_S_UNSUPP`); nothing here panics on guest input.
//!
//! Must not touch: eventfds, interrupts, the transport.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use virtio_queue::Queue;
use vm_memory::GuestMemory;
use vmm_sys_util::write_zeroes::{PunchHole, WriteZeroesAt};

use crate::devices::virtio::chain::{Chain, ChainError};
use crate::devices::virtio::{complete_chains, QueueError};
use crate::logging::ratelimited;

/// Bytes per sector, as virtio-blk counts them.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the request header (type, reserved, sector).
pub const HEADER_LEN: u64 = 16;
/// Length of the disk id GET_ID returns.
pub const ID_LEN: usize = 20;
/// Length of one discard / write-zeroes segment.
pub const SEGMENT_LEN: u64 = 16;

/// Request types (virtio 1.2, 5.2.6).
pub mod request_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Device id string.
    pub const GET_ID: u32 = 8;
    /// Discard.
    pub const DISCARD: u32 = 11;
    /// Write zeroes.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// I/O error (also: malformed request, write to a read-only disk, out of range).
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// Why one request failed; the guest sees [`RequestError::status`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The chain itself is unusable.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The request's layout is wrong.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Sectors past the end of the disk.
    #[error("sectors {sector}+{bytes}B are past the end of the disk")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Length in bytes.
        bytes: u64,
    },
    /// A write to a read-only disk.
    #[error("write to a read-only disk")]
    ReadOnly,
    /// A request type we do not implement.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    /// The host file failed.
    #[error("disk I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Guest memory failed mid-transfer.
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

impl RequestError {
    /// The status byte for this failure.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => status::UNSUPP,
            _ => status::IOERR,
        }
    }
}

/// Counters a benchmark or a metrics endpoint can read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    /// Requests completed (any status).
    pub requests: u64,
    /// Requests completed with IOERR or UNSUPP.
    pub errors: u64,
    /// Chains dropped with no status byte to report into.
    pub dropped: u64,
    /// Bytes read from the disk.
    pub read_bytes: u64,
    /// Bytes written to the disk.
    pub write_bytes: u64,
}

/// Processes one virtio-blk queue against a raw image.
pub struct BlockHandler {
    disk: File,
    size: u64,
    read_only: bool,
    id: [u8; ID_LEN],
    chain: Chain,
    stats: BlockStats,
}

impl BlockHandler {
    /// A handler for `disk` of `size` bytes (rounded down to whole sectors for the guest).
    pub fn new(disk: File, size: u64, read_only: bool, id: [u8; ID_LEN]) -> Self {
        Self {
            disk,
            size,
            read_only,
            id,
            chain: Chain::default(),
            stats: BlockStats::default(),
        }
    }

    /// Capacity in sectors.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// Counters so far.
    pub fn stats(&self) -> BlockStats {
        self.stats
    }

    /// Completes every available request. Returns whether the driver must be interrupted.
    pub fn process_queue<M: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &M,
    ) -> Result<bool, QueueError> {
        complete_chains(
            queue,
            mem,
            self,
            |_| true,
            |h, m, desc_chain| Some(h.process_chain(m, desc_chain)),
        )
    }

    /// Executes one request and writes its status; returns the used length.
    fn process_chain<M: GuestMemory>(
        &mut self,
        mem: &M,
        desc_chain: virtio_queue::DescriptorChain<&M>,
    ) -> u32 {
        self.stats.requests += 1;
        let parsed = self.chain.parse(mem, desc_chain);
        let outcome = parsed
            .map_err(RequestError::from)
            .and_then(|()| self.execute(mem));
        let writable = self.chain.writable_len();
        let (status, data_len) = match outcome {
            Ok(n) => (status::OK, n),
            Err(e) => {
                self.stats.errors += 1;
                ratelimited!(WARN, "virtio-blk: request failed: {e}");
                (e.status(), 0)
            }
        };
        if writable == 0 || self.chain.write_at(mem, writable - 1, &[status]) != 1 {
            self.stats.dropped += 1;
            return 0;
        }
        // Data bytes plus the status byte; never more than the chain's writable length.
        (data_len + 1).min(writable) as u32
    }

    /// Runs the parsed request in `self.chain`; returns how many data bytes it wrote into the
    /// chain (not counting the status byte).
    fn execute<M: GuestMemory>(&mut self, mem: &M) -> Result<u64, RequestError> {
        let c = &self.chain;
        if c.writable_len() == 0 {
            return Err(RequestError::Malformed("no status byte"));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        if c.read_at(mem, 0, &mut header) != header.len() {
            return Err(RequestError::Malformed("short header"));
        }
        let req_type = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        match req_type {
            request_type::IN => {
                let len = c.writable_len() - 1;
                if c.readable_len() != HEADER_LEN || len == 0 {
                    return Err(RequestError::Malformed(
                        "read without exactly a header and data",
                    ));
                }
                let offset = self.check_range(sector, len)?;
                self.disk.seek(SeekFrom::Start(offset))?;
                self.chain.writable_from(mem, 0, len, &mut self.disk)?;
                self.stats.read_bytes += len;
                Ok(len)
            }
            request_type::OUT => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let len = c.readable_len() - HEADER_LEN;
                if c.writable_len() != 1 || len == 0 {
                    return Err(RequestError::Malformed(
                        "write without data and a status byte",
                    ));
                }
                let offset = self.check_range(sector, len)?;
                self.disk.seek(SeekFrom::Start(offset))?;
                self.chain
                    .readable_to(mem, HEADER_LEN, len, &mut self.disk)?;
                self.stats.write_bytes += len;
                Ok(0)
            }
            request_type::FLUSH => {
                if !self.read_only {
                    self.disk.sync_data()?;
                }
                Ok(0)
            }
            request_type::GET_ID => {
                let n = (c.writable_len() - 1).min(ID_LEN as u64) as usize;
                Ok(c.write_at(mem, 0, &self.id[..n]) as u64)
            }
            request_type::DISCARD | request_type::WRITE_ZEROES => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                if c.readable_len() != HEADER_LEN + SEGMENT_LEN {
                    return Err(RequestError::Malformed("expected exactly one segment"));
                }
                let mut seg = [0u8; SEGMENT_LEN as usize];
                c.read_at(mem, HEADER_LEN, &mut seg);
                let start = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
                let count = u32::from_le_bytes(seg[8..12].try_into().unwrap_or_default());
                let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
                let len = u64::from(count) * SECTOR_SIZE;
                let offset = self.check_range(start, len)?;
                if req_type == request_type::DISCARD {
                    if flags != 0 {
                        return Err(RequestError::Unsupported(req_type));
                    }
                    self.disk.punch_hole(offset, len)?;
                } else {
                    if flags & !1 != 0 {
                        return Err(RequestError::Unsupported(req_type));
                    }
                    let len = usize::try_from(len)
                        .map_err(|_| RequestError::Malformed("length does not fit"))?;
                    self.disk.write_all_zeroes_at(offset, len)?;
                }
                Ok(0)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }

    /// Checks `len` bytes from `sector` are whole sectors inside the disk; returns the byte
    /// offset.
    fn check_range(&self, sector: u64, len: u64) -> Result<u64, RequestError> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::Malformed("length is not a multiple of 512"));
        }
        let out = || RequestError::OutOfRange { sector, bytes: len };
        let offset = sector.checked_mul(SECTOR_SIZE).ok_or_else(out)?;
        let end = offset.checked_add(len).ok_or_else(out)?;
        if end > self.sectors() * SECTOR_SIZE {
            return Err(out());
        }
        Ok(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{mem, Driver, Mem, DATA, MEM_SIZE, R, W};
    use std::io::{Read, Write};
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::tempfile::TempFile;

    const HDR: u64 = DATA;
    const BUF: u64 = DATA + 0x1000;
    const ST: u64 = DATA + 0x100;

    fn disk(sectors: u64, read_only: bool) -> (TempFile, BlockHandler) {
        let tf = TempFile::new().unwrap();
        let mut f = tf.as_file().try_clone().unwrap();
        let data: Vec<u8> = (0..sectors * SECTOR_SIZE)
            .map(|i| (i / 512) as u8)
            .collect();
        f.write_all(&data).unwrap();
        let mut id = [0u8; ID_LEN];
        id[..6].copy_from_slice(b"disk-7");
        let h = BlockHandler::new(f, sectors * SECTOR_SIZE, read_only, id);
        (tf, h)
    }

    fn header(m: &Mem, t: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        m.write_slice(&h, GuestAddress(HDR)).unwrap();
        m.write_obj(0xffu8, GuestAddress(ST)).unwrap();
    }

    fn status_byte(m: &Mem) -> u8 {
        m.read_obj(GuestAddress(ST)).unwrap()
    }

    fn run(h: &mut BlockHandler, d: &mut Driver<'_>, m: &Mem) -> Vec<(u32, u32)> {
        h.process_queue(&mut d.queue, m).unwrap();
        d.used()
    }

    #[test]
    fn read_write_roundtrip() {
        let m = mem();
        let (tf, mut h) = disk(16, false);
        let mut d = Driver::new(&m, 16);
        // Write two sectors of 0xab at sector 3.
        header(&m, request_type::OUT, 3);
        m.write_slice(&[0xab; 1024], GuestAddress(BUF)).unwrap();
        d.add(&[(HDR, 16, R), (BUF, 1024, R), (ST, 1, W)]);
        assert_eq!(run(&mut h, &mut d, &m), vec![(0, 1)]);
        assert_eq!(status_byte(&m), status::OK);
        let mut contents = Vec::new();
        let mut f = File::open(tf.as_path()).unwrap();
        f.read_to_end(&mut contents).unwrap();
        assert_eq!(&contents[3 * 512..5 * 512], &[0xab; 1024][..]);
        assert_eq!(contents[2 * 512], 2);
        // Read sectors 2..6 back, split over two buffers.
        header(&m, request_type::IN, 2);
        d.add(&[
            (HDR, 16, R),
            (BUF, 512, W),
            (BUF + 0x1000, 1536, W),
            (ST, 1, W),
        ]);
        assert_eq!(run(&mut h, &mut d, &m), vec![(3, 2049)]);
        assert_eq!(status_byte(&m), status::OK);
        let mut out = vec![0u8; 512];
        m.read_slice(&mut out, GuestAddress(BUF)).unwrap();
        assert_eq!(out, vec![2u8; 512]);
        m.read_slice(&mut out, GuestAddress(BUF + 0x1000)).unwrap();
        assert_eq!(out, vec![0xab; 512]);
        m.read_slice(&mut out, GuestAddress(BUF + 0x1000 + 1024))
            .unwrap();
        assert_eq!(out, vec![5u8; 512]);
        assert_eq!(h.stats().read_bytes, 2048);
        assert_eq!(h.stats().write_bytes, 1024);
    }

    #[test]
    fn flush_get_id_and_unsupported() {
        let m = mem();
        let (_tf, mut h) = disk(4, false);
        let mut d = Driver::new(&m, 16);
        header(&m, request_type::FLUSH, 0);
        d.add(&[(HDR, 16, R), (ST, 1, W)]);
        assert_eq!(run(&mut h, &mut d, &m), vec![(0, 1)]);
        assert_eq!(status_byte(&m), status::OK);
        header(&m, request_type::GET_ID, 0);
        d.add(&[(HDR, 16, R), (BUF, 20, W), (ST, 1, W)]);
        assert_eq!(run(&mut h, &mut d, &m), vec![(2, 21)]);
        let mut id = [0u8; 20];
        m.read_slice(&mut id, GuestAddress(BUF)).unwrap();
        assert_eq!(&id[..7], b"disk-7\0");
        header(&m, 99, 0);
        d.add(&[(HDR, 16, R), (ST, 1, W)]);
        run(&mut h, &mut d, &m);
        assert_eq!(status_byte(&m), status::UNSUPP);
    }

    #[test]
    fn discard_and_write_zeroes() {
        let m = mem();
        let (tf, mut h) = disk(8, false);
        let mut d = Driver::new(&m, 16);
        for (t, sector) in [
            (request_type::WRITE_ZEROES, 1u64),
            (request_type::DISCARD, 4),
        ] {
            header(&m, t, 0);
            let mut seg = [0u8; 16];
            seg[0..8].copy_from_slice(&sector.to_le_bytes());
            seg[8..12].copy_from_slice(&2u32.to_le_bytes());
            m.write_slice(&seg, GuestAddress(BUF)).unwrap();
            d.add(&[(HDR, 16, R), (BUF, 16, R), (ST, 1, W)]);
            run(&mut h, &mut d, &m);
            assert_eq!(status_byte(&m), status::OK, "type {t}");
        }
        let mut contents = Vec::new();
        File::open(tf.as_path())
            .unwrap()
            .read_to_end(&mut contents)
            .unwrap();
        assert!(contents[512..1536].iter().all(|&b| b == 0));
        assert!(contents[2048..3072].iter().all(|&b| b == 0));
        assert_eq!(contents[0], 0);
        assert_eq!(contents[1536], 3);
        assert_eq!(contents[3072], 6);
        // A segment past the end is an I/O error.
        header(&m, request_type::DISCARD, 0);
        m.write_slice(&7u64.to_le_bytes(), GuestAddress(BUF))
            .unwrap();
        d.add(&[(HDR, 16, R), (BUF, 16, R), (ST, 1, W)]);
        run(&mut h, &mut d, &m);
        assert_eq!(status_byte(&m), status::IOERR);
    }

    #[test]
    fn bad_requests_get_ioerr() {
        let m = mem();
        let (_tf, mut h) = disk(4, false);
        let mut d = Driver::new(&m, 64);
        type Case = (u32, u64, Vec<(u64, u32, u16)>);
        let cases: Vec<Case> = vec![
            // Past the end of the disk.
            (
                request_type::IN,
                3,
                vec![(HDR, 16, R), (BUF, 1024, W), (ST, 1, W)],
            ),
            // Sector overflow.
            (
                request_type::OUT,
                u64::MAX / 2,
                vec![(HDR, 16, R), (BUF, 512, R), (ST, 1, W)],
            ),
            // Not a multiple of 512.
            (
                request_type::IN,
                0,
                vec![(HDR, 16, R), (BUF, 100, W), (ST, 1, W)],
            ),
            // Short header.
            (request_type::IN, 0, vec![(HDR, 8, R), (ST, 1, W)]),
            // Data buffer outside guest memory.
            (
                request_type::IN,
                0,
                vec![(HDR, 16, R), (MEM_SIZE - 256, 512, W), (ST, 1, W)],
            ),
            // Write whose data is device-writable (wrong direction).
            (
                request_type::OUT,
                0,
                vec![(HDR, 16, R), (BUF, 512, W), (ST, 1, W)],
            ),
            // Read whose data is device-readable (wrong direction).
            (
                request_type::IN,
                0,
                vec![(HDR, 16, R), (BUF, 512, R), (ST, 1, W)],
            ),
            // Header in a device-writable buffer.
            (
                request_type::IN,
                0,
                vec![(HDR, 16, W), (BUF, 512, W), (ST, 1, W)],
            ),
        ];
        for (i, (t, sector, bufs)) in cases.into_iter().enumerate() {
            header(&m, t, sector);
            d.add(&bufs);
            let used = run(&mut h, &mut d, &m);
            assert_eq!(used.len(), 1, "case {i}");
            assert_eq!(status_byte(&m), status::IOERR, "case {i}");
            assert_eq!(used[0].1, 1, "case {i}");
        }
    }

    #[test]
    fn read_only_disk_refuses_writes() {
        let m = mem();
        let (_tf, mut h) = disk(4, true);
        let mut d = Driver::new(&m, 16);
        header(&m, request_type::OUT, 0);
        d.add(&[(HDR, 16, R), (BUF, 512, R), (ST, 1, W)]);
        run(&mut h, &mut d, &m);
        assert_eq!(status_byte(&m), status::IOERR);
        header(&m, request_type::IN, 0);
        d.add(&[(HDR, 16, R), (BUF, 512, W), (ST, 1, W)]);
        run(&mut h, &mut d, &m);
        assert_eq!(status_byte(&m), status::OK);
    }

    #[test]
    fn host_io_errors_become_ioerr() {
        let m = mem();
        // The handler believes the disk has 8 sectors but the file is empty and read-only:
        // reads hit EOF, writes fail with EBADF.
        let tf = TempFile::new().unwrap();
        let f = File::open(tf.as_path()).unwrap();
        let mut h = BlockHandler::new(f, 8 * SECTOR_SIZE, false, [0; ID_LEN]);
        let mut d = Driver::new(&m, 16);
        header(&m, request_type::IN, 0);
        d.add(&[(HDR, 16, R), (BUF, 512, W), (ST, 1, W)]);
        run(&mut h, &mut d, &m);
        assert_eq!(status_byte(&m), status::IOERR);
        header(&m, request_type::OUT, 0);
        d.add(&[(HDR, 16, R), (BUF, 512, R), (ST, 1, W)]);
        run(&mut h, &mut d, &m);
        assert_eq!(status_byte(&m), status::IOERR);
        assert_eq!(h.stats().errors, 2);
    }

    #[test]
    fn chains_without_status_are_dropped_not_fatal() {
        let m = mem();
        let (_tf, mut h) = disk(4, false);
        let mut d = Driver::new(&m, 16);
        header(&m, request_type::IN, 0);
        d.add(&[(HDR, 16, R), (BUF, 512, R)]);
        // Readable after writable: the request fails, with the status in the writable part.
        d.add(&[(ST, 1, W), (HDR, 16, R)]);
        assert_eq!(run(&mut h, &mut d, &m), vec![(0, 0), (2, 1)]);
        assert_eq!(status_byte(&m), status::IOERR);
        assert_eq!(h.stats().dropped, 1);
    }

    #[test]
    fn garbage_avail_index_stops_the_queue() {
        let m = mem();
        let (_tf, mut h) = disk(4, false);
        let mut d = Driver::new(&m, 16);
        d.set_avail_idx(1000);
        let mut q = d.queue();
        assert!(h.process_queue(&mut q, &m).is_err());
    }

    #[test]
    fn out_of_range_head_index_is_an_error_not_a_panic() {
        let m = mem();
        let (_tf, mut h) = disk(4, false);
        let mut d = Driver::new(&m, 16);
        d.publish(200);
        let mut q = d.queue();
        assert!(h.process_queue(&mut q, &m).is_err());
    }
}
