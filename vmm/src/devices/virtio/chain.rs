//! One descriptor chain, validated: the device-readable buffers, then the device-writable ones,
//! every one inside guest memory, with a bounded count and total length.
//!
//! Owns: the checks every device needs before it touches a guest buffer. virtio-queue's chain
//! iterator already stops loops (a chain is at most a queue long) and nested indirect tables;
//! this adds direction order, address range, count and length limits.
//!
//! Must not touch: queue state (the caller pops chains and adds used entries).

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, Permissions, ReadVolatile, WriteVolatile,
};

/// Most descriptors one chain may have (Linux uses at most a queue's worth, 256 here).
pub const MAX_DESCRIPTORS: usize = 1024;

/// Why a chain was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// More than [`MAX_DESCRIPTORS`] buffers.
    #[error("descriptor chain has more than {MAX_DESCRIPTORS} buffers")]
    TooManyDescriptors,
    /// A device-readable buffer follows a device-writable one.
    #[error("descriptor chain has a readable buffer after a writable one")]
    ReadableAfterWritable,
    /// A buffer is not (entirely) guest RAM.
    #[error("descriptor buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutOfRange {
        /// Its address.
        addr: u64,
        /// Its length.
        len: u32,
    },
    /// The chain's total length exceeds 4 GiB.
    #[error("descriptor chain is longer than 4 GiB")]
    TooLong,
}

/// One guest buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes (never zero).
    pub len: u32,
}

/// A parsed chain. Reused between requests so parsing does not allocate once warm.
#[derive(Debug, Default)]
pub struct Chain {
    /// Head descriptor index, for the used ring.
    pub head: u16,
    readable: Vec<Segment>,
    writable: Vec<Segment>,
    readable_len: u64,
    writable_len: u64,
}

impl Chain {
    /// Parses `desc_chain` into `self`, replacing what was there. On an error, `self` still holds
    /// the valid buffers, so a device can report the failure in the chain's status byte.
    pub fn parse<M, T>(&mut self, mem: &M, desc_chain: DescriptorChain<T>) -> Result<(), ChainError>
    where
        M: GuestMemory + ?Sized,
        T: Deref,
        T::Target: GuestMemory,
    {
        self.head = desc_chain.head_index();
        self.readable.clear();
        self.writable.clear();
        self.readable_len = 0;
        self.writable_len = 0;
        // Keep going past a bad buffer (skipping it) so the caller still finds the status byte
        // at the end and can fail the request instead of dropping it; report the first error.
        let mut first_err = None;
        for (count, desc) in desc_chain.enumerate() {
            if count >= MAX_DESCRIPTORS {
                return Err(ChainError::TooManyDescriptors);
            }
            let len = desc.len();
            let writable = desc.is_write_only();
            if !writable && !self.writable.is_empty() {
                first_err.get_or_insert(ChainError::ReadableAfterWritable);
                continue;
            }
            if len == 0 {
                continue;
            }
            let perm = if writable {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if desc.addr().checked_add(u64::from(len)).is_none()
                || !mem.check_range(desc.addr(), len as usize, perm)
            {
                first_err.get_or_insert(ChainError::OutOfRange {
                    addr: desc.addr().raw_value(),
                    len,
                });
                continue;
            }
            let seg = Segment {
                addr: desc.addr(),
                len,
            };
            if writable {
                self.writable.push(seg);
                self.writable_len += u64::from(len);
            } else {
                self.readable.push(seg);
                self.readable_len += u64::from(len);
            }
            if self.readable_len + self.writable_len > u64::from(u32::MAX) {
                return Err(ChainError::TooLong);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// Calls `f(addr, len)` for the parts of `segs` covering `[offset, offset + len)` of their
    /// concatenation.
    fn visit<E>(
        segs: &[Segment],
        mut offset: u64,
        mut len: u64,
        mut f: impl FnMut(GuestAddress, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        for s in segs {
            if len == 0 {
                break;
            }
            let slen = u64::from(s.len);
            if offset >= slen {
                offset -= slen;
                continue;
            }
            let n = (slen - offset).min(len);
            f(s.addr.unchecked_add(offset), n as usize)?;
            len -= n;
            offset = 0;
        }
        Ok(())
    }

    /// Like [`Self::visit`], but `f(addr, len, done)` (`done`: bytes moved so far) returns how
    /// many bytes it moved, and the first short move ends the walk. Returns the bytes moved.
    fn visit_until_short<E>(
        segs: &[Segment],
        offset: u64,
        len: u64,
        mut f: impl FnMut(GuestAddress, usize, usize) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut total = 0usize;
        let mut short = false;
        Self::visit(segs, offset, len, |addr, n| {
            if short {
                return Ok(());
            }
            let moved = f(addr, n, total)?;
            total += moved;
            short = moved < n;
            Ok(())
        })?;
        Ok(total)
    }

    /// Copies readable bytes `[offset, offset + buf.len())` into `buf`; returns how many there
    /// were.
    pub fn read_at<M: GuestMemory + ?Sized>(&self, mem: &M, offset: u64, buf: &mut [u8]) -> usize {
        let avail = self
            .readable_len
            .saturating_sub(offset)
            .min(buf.len() as u64) as usize;
        let mut done = 0;
        let _ = Self::visit(&self.readable, offset, avail as u64, |addr, n| {
            mem.read_slice(&mut buf[done..done + n], addr)?;
            done += n;
            Ok::<(), vm_memory::GuestMemoryError>(())
        });
        done
    }

    /// Copies `buf` into writable bytes starting at `offset`; returns how many fit.
    pub fn write_at<M: GuestMemory + ?Sized>(&self, mem: &M, offset: u64, buf: &[u8]) -> usize {
        let avail = self
            .writable_len
            .saturating_sub(offset)
            .min(buf.len() as u64) as usize;
        let mut done = 0;
        let _ = Self::visit(&self.writable, offset, avail as u64, |addr, n| {
            mem.write_slice(&buf[done..done + n], addr)?;
            done += n;
            Ok::<(), vm_memory::GuestMemoryError>(())
        });
        done
    }

    /// Moves `len` readable bytes starting at `offset` into `dst` (a file, a socket).
    pub fn readable_to<M, W>(
        &self,
        mem: &M,
        offset: u64,
        len: u64,
        dst: &mut W,
    ) -> Result<(), vm_memory::GuestMemoryError>
    where
        M: GuestMemory + ?Sized,
        W: WriteVolatile,
    {
        Self::visit(&self.readable, offset, len, |addr, n| {
            mem.write_all_volatile_to(addr, dst, n)
        })
    }

    /// Like [`Self::readable_to`] but stops at the first short write (a non-blocking socket),
    /// returning how many bytes went out; `WouldBlock` counts as a short write of zero.
    pub fn readable_to_some<M, W>(
        &self,
        mem: &M,
        offset: u64,
        len: u64,
        dst: &mut W,
    ) -> Result<usize, vm_memory::GuestMemoryError>
    where
        M: GuestMemory + ?Sized,
        W: WriteVolatile,
    {
        Self::visit_until_short(&self.readable, offset, len, |addr, n, _| {
            // One write(2) per slice: GuestMemory::write_volatile_to retries to the end and
            // loses the count of what went out if the fd then says WouldBlock.
            let mut put = 0usize;
            for slice in mem.get_slices(addr, n, Permissions::Read)? {
                let slice = slice?;
                let wrote = match dst.write_volatile(&slice) {
                    Ok(w) => w,
                    Err(vm_memory::VolatileMemoryError::IOError(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock =>
                    {
                        0
                    }
                    Err(e) => return Err(e.into()),
                };
                put += wrote;
                if wrote < slice.len() {
                    break;
                }
            }
            Ok::<usize, vm_memory::GuestMemoryError>(put)
        })
    }

    /// Fills `len` writable bytes starting at `offset` from `src` (a file, a socket).
    pub fn writable_from<M, R>(
        &self,
        mem: &M,
        offset: u64,
        len: u64,
        src: &mut R,
    ) -> Result<(), vm_memory::GuestMemoryError>
    where
        M: GuestMemory + ?Sized,
        R: ReadVolatile,
    {
        Self::visit(&self.writable, offset, len, |addr, n| {
            mem.read_exact_volatile_from(addr, src, n)
        })
    }

    /// Like [`Self::writable_from`] but stops at the first short read (a non-blocking socket or
    /// TAP), returning how many bytes arrived: `Ok(0)` is end of file, and a `WouldBlock` before
    /// any byte arrived is returned as the error (see [`is_would_block`]).
    pub fn writable_from_some<M, R>(
        &self,
        mem: &M,
        offset: u64,
        len: u64,
        src: &mut R,
    ) -> Result<usize, vm_memory::GuestMemoryError>
    where
        M: GuestMemory + ?Sized,
        R: ReadVolatile,
    {
        Self::visit_until_short(&self.writable, offset, len, |addr, n, done| {
            match mem.read_volatile_from(addr, src, n) {
                Ok(got) => Ok(got),
                Err(e) if is_would_block(&e) && done > 0 => Ok(0),
                Err(e) => Err(e),
            }
        })
    }
}

/// Whether a guest-memory I/O error is a non-blocking fd saying "not now".
pub fn is_would_block(e: &vm_memory::GuestMemoryError) -> bool {
    matches!(
        e,
        vm_memory::GuestMemoryError::IOError(io) if io.kind() == std::io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{mem, Driver, DATA, MEM_SIZE, R, W};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::QueueT;

    fn parse(
        d: &mut Driver<'_>,
        m: &crate::devices::virtio::test_utils::Mem,
    ) -> Result<Chain, ChainError> {
        let mut q = d.queue();
        let dc = q.pop_descriptor_chain(m).expect("a chain");
        let mut c = Chain::default();
        c.parse(m, dc).map(|()| c)
    }

    #[test]
    fn good_chain_reads_and_writes_across_segments() {
        let m = mem();
        let mut d = Driver::new(&m, 16);
        m.write_slice(b"hello", GuestAddress(DATA)).unwrap();
        m.write_slice(b" world", GuestAddress(DATA + 0x100))
            .unwrap();
        d.add(&[
            (DATA, 5, R),
            (DATA + 0x100, 6, R),
            (DATA + 0x200, 3, W),
            (DATA + 0x300, 10, W),
        ]);
        let c = parse(&mut d, &m).unwrap();
        assert_eq!((c.readable_len(), c.writable_len()), (11, 13));
        let mut buf = [0u8; 20];
        assert_eq!(c.read_at(&m, 3, &mut buf), 8);
        assert_eq!(&buf[..8], b"lo world");
        assert_eq!(c.write_at(&m, 1, b"abcdefghijklmnop"), 12);
        let mut out = [0u8; 2];
        m.read_slice(&mut out, GuestAddress(DATA + 0x201)).unwrap();
        assert_eq!(&out, b"ab");
        m.read_slice(&mut out, GuestAddress(DATA + 0x300)).unwrap();
        assert_eq!(&out, b"cd");
    }

    #[test]
    fn out_of_range_buffers_are_rejected() {
        let m = mem();
        for (addr, len) in [
            (MEM_SIZE - 4, 8u32),
            (MEM_SIZE + 0x1000, 1),
            (u64::MAX - 2, 8),
        ] {
            let mut d = Driver::new(&m, 16);
            d.add(&[(DATA, 16, R), (addr, len, W)]);
            assert!(
                matches!(parse(&mut d, &m), Err(ChainError::OutOfRange { .. })),
                "{addr:#x}"
            );
        }
    }

    #[test]
    fn readable_after_writable_is_rejected() {
        let m = mem();
        let mut d = Driver::new(&m, 16);
        d.add(&[(DATA, 16, W), (DATA + 0x100, 16, R)]);
        assert_eq!(
            parse(&mut d, &m).unwrap_err(),
            ChainError::ReadableAfterWritable
        );
    }

    #[test]
    fn looping_chain_ends_at_queue_size() {
        let m = mem();
        let d = Driver::new(&m, 16);
        // 0 -> 1 -> 0 -> ...
        d.store(
            0,
            RawDescriptor::from(SplitDescriptor::new(DATA, 8, VRING_DESC_F_NEXT as u16, 1)),
        );
        d.store(
            1,
            RawDescriptor::from(SplitDescriptor::new(DATA, 8, VRING_DESC_F_NEXT as u16, 0)),
        );
        let mut d = d;
        d.publish(0);
        let c = parse(&mut d, &m).unwrap();
        assert_eq!(c.readable_len(), 16 * 8);
    }

    #[test]
    fn oversize_and_overlong_chains_are_bounded() {
        let m = mem();
        // 300 descriptors of 15 MiB: virtio-queue stops the chain before it passes 4 GiB.
        let mut d = Driver::new(&m, 512);
        let bufs: Vec<_> = (0..300).map(|_| (0u64, 0x00f0_0000u32, R)).collect();
        d.add(&bufs);
        let c = parse(&mut d, &m).unwrap();
        assert!(c.readable_len() <= u64::from(u32::MAX));
        // More descriptors than we accept.
        let mut d = Driver::new(&m, 2048);
        let bufs: Vec<_> = (0..1100).map(|_| (DATA, 1u32, R)).collect();
        d.add(&bufs);
        assert_eq!(
            parse(&mut d, &m).unwrap_err(),
            ChainError::TooManyDescriptors
        );
    }

    #[test]
    fn indirect_tables_work_and_nesting_is_cut() {
        let m = mem();
        let table = GuestAddress(0x8_0000);
        let mut d = Driver::new(&m, 16);
        for (i, (addr, flags)) in [(DATA, R), (DATA + 0x10, W)].iter().enumerate() {
            let f = if i == 0 {
                flags | VRING_DESC_F_NEXT as u16
            } else {
                *flags
            };
            m.write_obj(
                RawDescriptor::from(SplitDescriptor::new(*addr, 16, f, i as u16 + 1)),
                table.unchecked_add(i as u64 * 16),
            )
            .unwrap();
        }
        d.store(
            0,
            RawDescriptor::from(SplitDescriptor::new(
                table.0,
                32,
                VRING_DESC_F_INDIRECT as u16,
                0,
            )),
        );
        d.publish(0);
        let c = parse(&mut d, &m).unwrap();
        assert_eq!((c.readable_len(), c.writable_len()), (16, 16));
        // An indirect descriptor inside an indirect table ends the chain there.
        m.write_obj(
            RawDescriptor::from(SplitDescriptor::new(
                table.0,
                32,
                VRING_DESC_F_INDIRECT as u16,
                0,
            )),
            table,
        )
        .unwrap();
        let mut d = Driver::new(&m, 16);
        d.store(
            0,
            RawDescriptor::from(SplitDescriptor::new(
                table.0,
                32,
                VRING_DESC_F_INDIRECT as u16,
                0,
            )),
        );
        d.publish(0);
        let c = parse(&mut d, &m).unwrap();
        assert_eq!(c.readable_len() + c.writable_len(), 0);
    }
}
