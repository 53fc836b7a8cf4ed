//! SCTP packets (RFC 9260 §3.1): the common header, the CRC32c checksum, and the run of
//! chunks, each framed and padded to four bytes.

use crate::Error;
use crate::chunk::{CHUNK_HEADER, Chunk, padded};

/// The common header: ports, verification tag, checksum.
pub const HEADER: usize = 12;

/// A packet's common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src_port: u16,
    pub dst_port: u16,
    pub vtag: u32,
}

/// A packet whose framing and checksum were checked; its chunks are parsed as they are read.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub header: Header,
    chunks: &'a [u8],
}

/// Writes the checksum of the packet in `b` (at least a header long) into its header.
pub fn set_checksum(b: &mut [u8]) {
    if b.len() >= HEADER {
        let sum = checksum(b);
        b[8..12].copy_from_slice(&sum.to_le_bytes());
    }
}

/// The checksum of a packet as if its checksum field were zero.
fn checksum(b: &[u8]) -> u32 {
    // CRC32c with the CPU's instruction where it has one (SSE 4.2, ARMv8), tables elsewhere.
    let c = crc32c::crc32c(&b[..8]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &b[HEADER..])
}

impl<'a> Packet<'a> {
    /// Checks the header, the checksum and every chunk's framing (a chunk's length at least
    /// its header and within the packet, padding present except after the last).
    pub fn parse(b: &'a [u8]) -> Result<Packet<'a>, Error> {
        if b.len() < HEADER {
            return Err(Error::Malformed("shorter than the common header"));
        }
        // The CRC's bytes are stored least significant first (RFC 9260 Appendix A).
        let stored = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if stored != checksum(b) {
            return Err(Error::BadChecksum);
        }
        let chunks = &b[HEADER..];
        let mut at = 0;
        while at < chunks.len() {
            if chunks.len() - at < CHUNK_HEADER {
                return Err(Error::Malformed("chunk shorter than its header"));
            }
            let len = usize::from(u16::from_be_bytes([chunks[at + 2], chunks[at + 3]]));
            if len < CHUNK_HEADER || len > chunks.len() - at {
                return Err(Error::Malformed("chunk length out of bounds"));
            }
            at += padded(len).min(chunks.len() - at);
        }
        Ok(Packet {
            header: Header {
                src_port: u16::from_be_bytes([b[0], b[1]]),
                dst_port: u16::from_be_bytes([b[2], b[3]]),
                vtag: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            },
            chunks,
        })
    }

    /// The chunks in order, each parsed as it comes: a chunk whose contents are malformed
    /// gives an error in its place.
    pub fn chunks(&self) -> impl Iterator<Item = Result<Chunk<'a>, Error>> + 'a {
        let b = self.chunks;
        let mut at = 0;
        std::iter::from_fn(move || {
            if b.len().saturating_sub(at) < CHUNK_HEADER {
                return None;
            }
            let (kind, flags) = (b[at], b[at + 1]);
            let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
            // Framing was checked by `parse`.
            let value = b.get(at + CHUNK_HEADER..at + len)?;
            at += padded(len).min(b.len() - at);
            Some(Chunk::parse(kind, flags, value))
        })
    }
}

/// Writes packets: the header, then chunks, then the checksum.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A packet to `header`'s ports and tag, in `buf` (cleared; its capacity reused).
    pub fn new(header: Header, mut buf: Vec<u8>) -> Writer {
        buf.clear();
        buf.extend_from_slice(&header.src_port.to_be_bytes());
        buf.extend_from_slice(&header.dst_port.to_be_bytes());
        buf.extend_from_slice(&header.vtag.to_be_bytes());
        buf.extend_from_slice(&[0; 4]);
        Writer { buf }
    }

    /// Bytes so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no chunk was added yet.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER
    }

    pub fn push(&mut self, chunk: &Chunk<'_>) -> Result<(), Error> {
        chunk.encode(&mut self.buf)
    }

    /// The packet, its checksum filled in.
    pub fn finish(mut self) -> Vec<u8> {
        set_checksum(&mut self.buf);
        self.buf
    }
}
