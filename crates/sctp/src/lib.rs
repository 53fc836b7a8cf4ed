//! SCTP for WebRTC data channels (RFC 8831), written for peerweb, without I/O.
//!
//! So far the wire format: [`packet`] (the common header, the CRC32c checksum, chunk framing)
//! and [`chunk`] (every chunk the data-channel profile uses — DATA, INIT/INIT ACK, SACK with
//! gap blocks and duplicates, HEARTBEAT, ABORT, SHUTDOWN*, ERROR, COOKIE ECHO/ACK, FORWARD TSN,
//! RE-CONFIG and its stream reset parameters — and unknown ones with the action their type
//! asks for). Parsing borrows from the packet, never allocates, and gives an [`Error`] for any
//! bytes it cannot take, never a panic; it is fuzzed (`fuzz/fuzz_targets/sctp_packet.rs`) and
//! checked against a real SCTP stack (`tests/interop.rs`: every packet `sctp-proto` makes
//! parses here and encodes back to the same bytes). Then the receiver's record of TSNs
//! ([`received`]: the cumulative TSN, a bitmap above it for gap blocks in O(1) per arrival,
//! duplicates, FORWARD TSN; checked against a plain set over random arrivals) on serial-number
//! arithmetic ([`tsn`]); and the sender's chunks in flight ([`outstanding`]: indexed by TSN,
//! SACKs costing what they acknowledge, fast retransmission after three misses, the timer's
//! retransmission, partial reliability and the FORWARD TSN point; a lossy-link simulation
//! against `received` ends with everything acknowledged); the RTO and the congestion window
//! ([`timing`]); messages put back together from fragments, in SSN order per stream or as soon
//! as whole for unordered ones ([`reassembly`], checked over random arrival orders); and DCEP's
//! messages ([`dcep`], RFC 8832); the State Cookie ([`cookie`]: HMAC-sealed, its lifetime
//! checked, a forged or stale one refused); and the association's setup ([`assoc`]: INIT from
//! both sides at once, INIT ACK with a cookie and no state kept, COOKIE ECHO/ACK, verification
//! tags, T1 with back-off, ABORT — and data transfer over the parts above; it talks with
//! `sctp-proto` both ways).

pub mod assoc;
pub mod chunk;
pub mod cookie;
pub mod dcep;
pub mod outstanding;
pub mod packet;
pub mod reassembly;
pub mod received;
pub mod timing;
pub mod tsn;

pub use chunk::{Chunk, Data, ForwardTsn, Init, Param, Params, ReconfigParam, Sack, Streams};
pub use packet::{Header, Packet, Writer};

/// Why bytes are not an SCTP packet or chunk this codec can take, or a chunk cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("SCTP packet with a bad checksum")]
    BadChecksum,
    #[error("malformed SCTP: {0}")]
    Malformed(&'static str),
    #[error("an SCTP chunk or parameter cannot be that large")]
    TooLarge,
}

#[cfg(test)]
mod tests;

/// A small seeded generator (xorshift64) for the random tests.
#[cfg(test)]
pub(crate) fn test_rng(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
