//! The Data Channel Establishment Protocol (RFC 8832): DATA_CHANNEL_OPEN and
//! DATA_CHANNEL_ACK, sent on the channel's own stream with PPID 50, and the payload protocol
//! identifiers of data channels (RFC 8831 §8).

use crate::Error;

/// Payload protocol identifiers.
pub mod ppid {
    pub const DCEP: u32 = 50;
    pub const STRING: u32 = 51;
    pub const BINARY: u32 = 53;
    /// An empty message is sent as one byte with these (SCTP carries no empty user data).
    pub const STRING_EMPTY: u32 = 56;
    pub const BINARY_EMPTY: u32 = 57;
    /// Deprecated partial-message identifiers: refused.
    pub const STRING_PARTIAL: u32 = 54;
    pub const BINARY_PARTIAL: u32 = 52;
}

const OPEN: u8 = 0x03;
const ACK: u8 = 0x02;
/// Channel type bit: unordered.
const UNORDERED: u8 = 0x80;

/// Labels and protocols longer than this are refused (the browsers' limit is 65,535; ours is
/// what any real page uses, with room to spare).
pub const MAX_LABEL: usize = 1024;

/// How a channel delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Reliable,
    /// Sent again at most this many times.
    Retransmits(u32),
    /// Sent again for at most this many milliseconds.
    Lifetime(u32),
}

/// A DCEP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open {
        unordered: bool,
        reliability: Reliability,
        priority: u16,
        label: String,
        protocol: String,
    },
    Ack,
}

impl Message {
    pub fn parse(b: &[u8]) -> Result<Message, Error> {
        match b.first() {
            Some(&ACK) if b.len() == 1 => Ok(Message::Ack),
            Some(&ACK) => Err(Error::Malformed("DATA_CHANNEL_ACK with trailing bytes")),
            Some(&OPEN) => {
                if b.len() < 12 {
                    return Err(Error::Malformed(
                        "DATA_CHANNEL_OPEN shorter than its fields",
                    ));
                }
                let kind = b[1];
                let priority = u16::from_be_bytes([b[2], b[3]]);
                let value = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                let label_len = usize::from(u16::from_be_bytes([b[8], b[9]]));
                let protocol_len = usize::from(u16::from_be_bytes([b[10], b[11]]));
                if label_len > MAX_LABEL || protocol_len > MAX_LABEL {
                    return Err(Error::TooLarge);
                }
                if b.len() != 12 + label_len + protocol_len {
                    return Err(Error::Malformed("DATA_CHANNEL_OPEN lengths do not match"));
                }
                let reliability = match kind & !UNORDERED {
                    0x00 => Reliability::Reliable,
                    0x01 => Reliability::Retransmits(value),
                    0x02 => Reliability::Lifetime(value),
                    _ => return Err(Error::Malformed("unknown data channel type")),
                };
                let text = |v: &[u8]| {
                    std::str::from_utf8(v)
                        .map(str::to_owned)
                        .map_err(|_| Error::Malformed("label or protocol not UTF-8"))
                };
                Ok(Message::Open {
                    unordered: kind & UNORDERED != 0,
                    reliability,
                    priority,
                    label: text(&b[12..12 + label_len])?,
                    protocol: text(&b[12 + label_len..])?,
                })
            }
            _ => Err(Error::Malformed("not a DCEP message")),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        match self {
            Message::Ack => Ok(vec![ACK]),
            Message::Open {
                unordered,
                reliability,
                priority,
                label,
                protocol,
            } => {
                if label.len() > MAX_LABEL || protocol.len() > MAX_LABEL {
                    return Err(Error::TooLarge);
                }
                let (kind, value) = match reliability {
                    Reliability::Reliable => (0x00, 0),
                    Reliability::Retransmits(n) => (0x01, *n),
                    Reliability::Lifetime(ms) => (0x02, *ms),
                };
                let kind = if *unordered { kind | UNORDERED } else { kind };
                let mut b = Vec::with_capacity(12 + label.len() + protocol.len());
                b.push(OPEN);
                b.push(kind);
                b.extend_from_slice(&priority.to_be_bytes());
                b.extend_from_slice(&value.to_be_bytes());
                b.extend_from_slice(&(label.len() as u16).to_be_bytes());
                b.extend_from_slice(&(protocol.len() as u16).to_be_bytes());
                b.extend_from_slice(label.as_bytes());
                b.extend_from_slice(protocol.as_bytes());
                Ok(b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_and_ack_go_both_ways() {
        for (unordered, reliability) in [
            (false, Reliability::Reliable),
            (true, Reliability::Reliable),
            (false, Reliability::Retransmits(0)),
            (true, Reliability::Lifetime(1500)),
        ] {
            let m = Message::Open {
                unordered,
                reliability,
                priority: 256,
                label: "chat ✓".into(),
                protocol: "peerweb-call".into(),
            };
            assert_eq!(Message::parse(&m.encode().unwrap()).unwrap(), m);
        }
        assert_eq!(Message::parse(&[2]).unwrap(), Message::Ack);
        // As Chromium sends it: an unordered channel with no retransmissions, label "x".
        let chromium = [3, 0x81, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, b'x'];
        assert_eq!(
            Message::parse(&chromium).unwrap(),
            Message::Open {
                unordered: true,
                reliability: Reliability::Retransmits(0),
                priority: 0,
                label: "x".into(),
                protocol: String::new(),
            }
        );
    }

    #[test]
    fn bad_messages_are_refused() {
        for b in [
            &[][..],
            &[2, 0],
            &[9],
            &[3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
            &[3, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0xff],
            &[3, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0],
        ] {
            assert!(Message::parse(b).is_err(), "{b:?}");
        }
        let long = Message::Open {
            unordered: false,
            reliability: Reliability::Reliable,
            priority: 0,
            label: "x".repeat(MAX_LABEL + 1),
            protocol: String::new(),
        };
        assert_eq!(long.encode(), Err(Error::TooLarge));
    }
}
