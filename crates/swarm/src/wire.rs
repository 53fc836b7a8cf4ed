//! The swarm wire protocol (version 1): binary messages on a data channel between two
//! neighbours sharing one file (docs/protocol.md, "Swarm wire protocol"). Every message is one
//! data-channel message: a type byte, then fixed little-endian fields, then (for `Bitfield`
//! and `Data`) bytes to the end. Decoding borrows the message, checks every length and range
//! against the file's size, and never panics.

use crate::tree::{GROUP, group_len, groups};

/// The protocol's version, in `Hello`.
pub const VERSION: u8 = 1;
/// Groups one request, cancel, reject or fetching notice may name.
pub const MAX_RANGE: u32 = 64;
/// Bitfield bytes in one message (a bitfield is sent in pieces: 128 Ki groups, 2 GiB, each).
pub const MAX_BITFIELD_BYTES: usize = 16_384;
/// The largest message: a group and its header.
pub const MAX_MESSAGE: usize = 9 + GROUP as usize;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg<'a> {
    /// First message each way: the protocol version, the file (its root) and its size.
    Hello {
        version: u8,
        root: [u8; 32],
        size: u64,
    },
    /// The sender has every group.
    HaveAll,
    /// The groups the sender has, from group `first` (a multiple of 8), a bit each, most
    /// significant bit first.
    Bitfield {
        first: u64,
        bits: &'a [u8],
    },
    /// The sender now has `group`.
    Have {
        group: u64,
    },
    /// Please send groups `first..first + count`, each within `deadline_ms` of receipt
    /// (0: no deadline).
    Request {
        first: u64,
        count: u32,
        deadline_ms: u32,
    },
    /// One verified group's bytes.
    Data {
        group: u64,
        bytes: &'a [u8],
    },
    /// The requests for these groups are withdrawn.
    Cancel {
        first: u64,
        count: u32,
    },
    /// These requested groups will not come (the sender lacks them or is choking).
    Reject {
        first: u64,
        count: u32,
    },
    /// The sender serves nothing for `retry_ms` (its upload allowance is spent).
    Choke {
        retry_ms: u32,
    },
    Unchoke,
    /// The sender is fetching these groups from the origin (so the other need not).
    Fetching {
        first: u64,
        count: u32,
    },
}

/// Why a message was refused: the neighbour broke the protocol (the link is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("message type {ty} has {got} bytes, not {want}")]
    Length { ty: u8, want: usize, got: usize },
    #[error("message of {0} bytes, more than {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error(
        "groups {first}..+{count} are not a range of this file ({groups} groups, at most {MAX_RANGE} at once)"
    )]
    Range { first: u64, count: u32, groups: u64 },
    #[error("a bitfield from group {first} of {len} bytes does not fit a file of {groups} groups")]
    Bitfield { first: u64, len: usize, groups: u64 },
    #[error("group {group} has {got} bytes, not {want}")]
    DataLength { group: u64, want: u64, got: usize },
}

const HELLO: u8 = 1;
const HAVE_ALL: u8 = 2;
const BITFIELD: u8 = 3;
const HAVE: u8 = 4;
const REQUEST: u8 = 5;
const DATA: u8 = 6;
const CANCEL: u8 = 7;
const REJECT: u8 = 8;
const CHOKE: u8 = 9;
const UNCHOKE: u8 = 10;
const FETCHING: u8 = 11;

impl<'a> Msg<'a> {
    /// Reads one message of a link sharing a file of `size` bytes. `Hello` is read whatever
    /// its size field says (the caller compares it).
    pub fn decode(b: &'a [u8], size: u64) -> Result<Msg<'a>, WireError> {
        let (&ty, body) = b.split_first().ok_or(WireError::Empty)?;
        if b.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(b.len()));
        }
        let n = groups(size);
        let exact = |want: usize| {
            if body.len() == want {
                Ok(())
            } else {
                Err(WireError::Length {
                    ty,
                    want,
                    got: body.len(),
                })
            }
        };
        let u64_at = |i: usize| {
            let mut a = [0; 8];
            a.copy_from_slice(&body[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let u32_at = |i: usize| {
            let mut a = [0; 4];
            a.copy_from_slice(&body[i..i + 4]);
            u32::from_le_bytes(a)
        };
        let range = |first: u64, count: u32| {
            if count == 0 || count > MAX_RANGE || first >= n || u64::from(count) > n - first {
                Err(WireError::Range {
                    first,
                    count,
                    groups: n,
                })
            } else {
                Ok(())
            }
        };
        Ok(match ty {
            HELLO => {
                exact(41)?;
                let mut root = [0; 32];
                root.copy_from_slice(&body[1..33]);
                Msg::Hello {
                    version: body[0],
                    root,
                    size: u64_at(33),
                }
            }
            HAVE_ALL => {
                exact(0)?;
                Msg::HaveAll
            }
            BITFIELD => {
                if body.len() < 8 {
                    return Err(WireError::Length {
                        ty,
                        want: 8,
                        got: body.len(),
                    });
                }
                let first = u64_at(0);
                let bits = &body[8..];
                // Whole bytes from a multiple of 8, within the file; spare bits of the last
                // byte clear.
                let fits = first % 8 == 0
                    && !bits.is_empty()
                    && bits.len() <= MAX_BITFIELD_BYTES
                    && first < n
                    && (bits.len() as u64) <= (n - first).div_ceil(8)
                    && {
                        let end = first + bits.len() as u64 * 8;
                        let spare = end.saturating_sub(n);
                        spare == 0 || bits[bits.len() - 1] & ((1u16 << spare) - 1) as u8 == 0
                    };
                if !fits {
                    return Err(WireError::Bitfield {
                        first,
                        len: bits.len(),
                        groups: n,
                    });
                }
                Msg::Bitfield { first, bits }
            }
            HAVE => {
                exact(8)?;
                let group = u64_at(0);
                range(group, 1)?;
                Msg::Have { group }
            }
            REQUEST => {
                exact(16)?;
                let (first, count) = (u64_at(0), u32_at(8));
                range(first, count)?;
                Msg::Request {
                    first,
                    count,
                    deadline_ms: u32_at(12),
                }
            }
            DATA => {
                if body.len() < 8 {
                    return Err(WireError::Length {
                        ty,
                        want: 8,
                        got: body.len(),
                    });
                }
                let group = u64_at(0);
                range(group, 1)?;
                let bytes = &body[8..];
                let want = group_len(size, group);
                if bytes.len() as u64 != want {
                    return Err(WireError::DataLength {
                        group,
                        want,
                        got: bytes.len(),
                    });
                }
                Msg::Data { group, bytes }
            }
            CANCEL | REJECT | FETCHING => {
                exact(12)?;
                let (first, count) = (u64_at(0), u32_at(8));
                range(first, count)?;
                match ty {
                    CANCEL => Msg::Cancel { first, count },
                    REJECT => Msg::Reject { first, count },
                    _ => Msg::Fetching { first, count },
                }
            }
            CHOKE => {
                exact(4)?;
                Msg::Choke {
                    retry_ms: u32_at(0),
                }
            }
            UNCHOKE => {
                exact(0)?;
                Msg::Unchoke
            }
            other => return Err(WireError::Type(other)),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(match self {
            Msg::Data { bytes, .. } => 9 + bytes.len(),
            Msg::Bitfield { bits, .. } => 9 + bits.len(),
            _ => 42,
        });
        let range = |out: &mut Vec<u8>, ty: u8, first: u64, count: u32| {
            out.push(ty);
            out.extend_from_slice(&first.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        };
        match self {
            Msg::Hello {
                version,
                root,
                size,
            } => {
                out.push(HELLO);
                out.push(*version);
                out.extend_from_slice(root);
                out.extend_from_slice(&size.to_le_bytes());
            }
            Msg::HaveAll => out.push(HAVE_ALL),
            Msg::Bitfield { first, bits } => {
                out.push(BITFIELD);
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(bits);
            }
            Msg::Have { group } => {
                out.push(HAVE);
                out.extend_from_slice(&group.to_le_bytes());
            }
            Msg::Request {
                first,
                count,
                deadline_ms,
            } => {
                range(&mut out, REQUEST, *first, *count);
                out.extend_from_slice(&deadline_ms.to_le_bytes());
            }
            Msg::Data { group, bytes } => {
                out.push(DATA);
                out.extend_from_slice(&group.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Msg::Cancel { first, count } => range(&mut out, CANCEL, *first, *count),
            Msg::Reject { first, count } => range(&mut out, REJECT, *first, *count),
            Msg::Fetching { first, count } => range(&mut out, FETCHING, *first, *count),
            Msg::Choke { retry_ms } => {
                out.push(CHOKE);
                out.extend_from_slice(&retry_ms.to_le_bytes());
            }
            Msg::Unchoke => out.push(UNCHOKE),
        }
        out
    }
}

/// Which groups of a file a peer has: a bit per group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have {
    groups: u64,
    bits: Vec<u8>,
    count: u64,
}

impl Have {
    pub fn none(size: u64) -> Have {
        let n = groups(size);
        Have {
            groups: n,
            bits: vec![0; usize::try_from(n.div_ceil(8)).unwrap_or(0)],
            count: 0,
        }
    }

    pub fn all(size: u64) -> Have {
        let mut h = Have::none(size);
        for g in 0..h.groups {
            h.set(g);
        }
        h
    }

    pub fn groups(&self) -> u64 {
        self.groups
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_complete(&self) -> bool {
        self.count == self.groups
    }

    pub fn has(&self, g: u64) -> bool {
        g < self.groups && self.bits[(g / 8) as usize] & (0x80 >> (g % 8)) != 0
    }

    /// Marks group `g`; false if it was marked already (or is out of range).
    pub fn set(&mut self, g: u64) -> bool {
        if g >= self.groups || self.has(g) {
            return false;
        }
        self.bits[(g / 8) as usize] |= 0x80 >> (g % 8);
        self.count += 1;
        true
    }

    /// Merges a decoded bitfield piece (checked by [`Msg::decode`]).
    pub fn merge(&mut self, first: u64, bits: &[u8]) {
        for (i, b) in bits.iter().enumerate() {
            for j in 0..8 {
                if b & (0x80 >> j) != 0 {
                    self.set(first + i as u64 * 8 + j);
                }
            }
        }
    }

    /// The messages that tell a neighbour what this peer has: `HaveAll`, or the bitfield in
    /// pieces of at most [`MAX_BITFIELD_BYTES`] (none when it has nothing).
    pub fn announce(&self) -> Vec<Vec<u8>> {
        if self.is_complete() {
            return vec![Msg::HaveAll.encode()];
        }
        if self.count == 0 {
            return Vec::new();
        }
        self.bits
            .chunks(MAX_BITFIELD_BYTES)
            .enumerate()
            .filter(|(_, c)| c.iter().any(|b| *b != 0))
            .map(|(i, c)| {
                Msg::Bitfield {
                    first: (i * MAX_BITFIELD_BYTES * 8) as u64,
                    bits: c,
                }
                .encode()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_and_every_bad_length_or_range_is_refused() {
        let size = 10 * GROUP + 5; // 11 groups, the last of 5 bytes
        let data = vec![7u8; GROUP as usize];
        let bits = [0xff, 0xe0];
        let msgs = [
            Msg::Hello {
                version: 1,
                root: [3; 32],
                size,
            },
            Msg::HaveAll,
            Msg::Bitfield {
                first: 0,
                bits: &bits,
            },
            Msg::Have { group: 10 },
            Msg::Request {
                first: 3,
                count: 8,
                deadline_ms: 1500,
            },
            Msg::Data {
                group: 0,
                bytes: &data,
            },
            Msg::Data {
                group: 10,
                bytes: &[1, 2, 3, 4, 5],
            },
            Msg::Cancel { first: 3, count: 1 },
            Msg::Reject {
                first: 0,
                count: 11,
            },
            Msg::Choke { retry_ms: 500 },
            Msg::Unchoke,
            Msg::Fetching { first: 9, count: 2 },
        ];
        for m in &msgs {
            let b = m.encode();
            assert_eq!(&Msg::decode(&b, size).unwrap(), m);
            // Cut short or extended: refused (a shorter bitfield is a valid one).
            if b.len() > 1 && !matches!(m, Msg::Bitfield { .. }) {
                assert!(Msg::decode(&b[..b.len() - 1], size).is_err(), "{m:?} short");
            }
            let mut long = b.clone();
            long.push(0);
            assert!(Msg::decode(&long, size).is_err(), "{m:?} long");
        }
        let bad = [
            Msg::Have { group: 11 },
            Msg::Request {
                first: 10,
                count: 2,
                deadline_ms: 0,
            },
            Msg::Request {
                first: 0,
                count: 0,
                deadline_ms: 0,
            },
            Msg::Cancel {
                first: u64::MAX,
                count: 1,
            },
            Msg::Reject {
                first: 0,
                count: MAX_RANGE + 1,
            },
            Msg::Data {
                group: 10,
                bytes: &data[..6],
            },
            Msg::Bitfield {
                first: 0,
                bits: &[0xff, 0xf0],
            },
            Msg::Bitfield {
                first: 4,
                bits: &[0xff],
            },
            Msg::Bitfield {
                first: 16,
                bits: &[0x80],
            },
            Msg::Bitfield {
                first: 0,
                bits: &[0xff, 0xe0, 0],
            },
        ];
        for m in &bad {
            assert!(Msg::decode(&m.encode(), size).is_err(), "{m:?} accepted");
        }
        assert_eq!(Msg::decode(&[], size), Err(WireError::Empty));
        assert_eq!(Msg::decode(&[99], size), Err(WireError::Type(99)));
        assert!(matches!(
            Msg::decode(&vec![DATA; MAX_MESSAGE + 1], size),
            Err(WireError::TooLarge(_))
        ));
    }

    #[test]
    fn haves_announce_and_merge() {
        let size = 20 * GROUP;
        let mut h = Have::none(size);
        assert!(h.announce().is_empty());
        assert!(h.set(0) && h.set(19) && !h.set(19) && !h.set(20));
        let mut other = Have::none(size);
        for m in h.announce() {
            let Msg::Bitfield { first, bits } = Msg::decode(&m, size).unwrap() else {
                panic!()
            };
            other.merge(first, bits);
        }
        assert_eq!(other, h);
        assert_eq!(Have::all(size).announce(), vec![Msg::HaveAll.encode()]);
        // A file of more groups than one message holds: the bitfield in pieces.
        let big = (MAX_BITFIELD_BYTES as u64 * 8 + 9) * GROUP;
        let mut h = Have::none(big);
        h.set(3);
        h.set(h.groups() - 1);
        let pieces = h.announce();
        assert_eq!(pieces.len(), 2);
        let mut other = Have::none(big);
        for m in pieces {
            let Msg::Bitfield { first, bits } = Msg::decode(&m, big).unwrap() else {
                panic!()
            };
            other.merge(first, bits);
        }
        assert_eq!(other, h);
    }
}
