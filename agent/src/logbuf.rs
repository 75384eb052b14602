//! An in-memory copy of the agent's log (bounded), served to the host by the ReadLogs RPC so
//! guest logs reach the host without a console. Also a `tracing` writer.

use std::sync::{Arc, Mutex};

const CAPACITY: usize = 1 << 20;

#[derive(Default)]
struct Inner {
    /// Bytes kept (the tail of everything written).
    data: Vec<u8>,
    /// Offset of `data[0]` in the whole stream.
    start: u64,
}

/// Shared log buffer; cheap to clone.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Inner>>);

impl LogBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn append(&self, bytes: &[u8]) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.data.extend_from_slice(bytes);
        if g.data.len() > CAPACITY {
            let drop_n = g.data.len() - CAPACITY;
            g.data.drain(..drop_n);
            g.start += drop_n as u64;
        }
    }

    /// Up to `len` bytes from `offset` (clamped to what is kept) and the next offset.
    pub fn read(&self, offset: u64, len: usize) -> (Vec<u8>, u64) {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let from = offset.max(g.start);
        let idx = ((from - g.start) as usize).min(g.data.len());
        let end = (idx + len.clamp(1, 1 << 20)).min(g.data.len());
        (g.data[idx..end].to_vec(), g.start + end as u64)
    }
}

/// A writer that copies to stderr and into the buffer.
pub struct TeeWriter(LogBuffer);

impl std::io::Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = TeeWriter;

    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_from_offsets_and_drops_old_bytes() {
        let b = LogBuffer::new();
        b.append(b"hello ");
        b.append(b"world");
        assert_eq!(b.read(0, 5), (b"hello".to_vec(), 5));
        assert_eq!(b.read(5, 100), (b" world".to_vec(), 11));
        b.append(&vec![b'x'; CAPACITY]);
        let (data, next) = b.read(0, 4);
        assert_eq!(data, b"xxxx");
        assert_eq!(next, 11 + 4);
    }
}
