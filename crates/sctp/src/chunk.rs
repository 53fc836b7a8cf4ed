//! SCTP chunks (RFC 9260 §3.3) as the WebRTC data-channel profile uses them, with FORWARD-TSN
//! (RFC 3758) and RE-CONFIG (RFC 6525): parsed in place from a packet's bytes (no copy, no
//! allocation; every length checked, nothing panics on any input) and encoded into a buffer.

use crate::Error;

/// Chunk types.
pub mod kind {
    pub const DATA: u8 = 0;
    pub const INIT: u8 = 1;
    pub const INIT_ACK: u8 = 2;
    pub const SACK: u8 = 3;
    pub const HEARTBEAT: u8 = 4;
    pub const HEARTBEAT_ACK: u8 = 5;
    pub const ABORT: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    pub const SHUTDOWN_ACK: u8 = 8;
    pub const ERROR: u8 = 9;
    pub const COOKIE_ECHO: u8 = 10;
    pub const COOKIE_ACK: u8 = 11;
    pub const SHUTDOWN_COMPLETE: u8 = 14;
    pub const RECONFIG: u8 = 130;
    pub const FORWARD_TSN: u8 = 192;
}

/// Parameter types (of INIT, INIT ACK, HEARTBEAT and RE-CONFIG).
pub mod param {
    pub const HEARTBEAT_INFO: u16 = 1;
    pub const STATE_COOKIE: u16 = 7;
    pub const OUTGOING_RESET: u16 = 13;
    pub const INCOMING_RESET: u16 = 14;
    pub const RECONFIG_RESPONSE: u16 = 16;
    pub const SUPPORTED_EXTENSIONS: u16 = 0x8008;
    pub const FORWARD_TSN_SUPPORTED: u16 = 0xc000;
}

/// Error cause codes (RFC 9260 §3.3.10), in ERROR and ABORT chunks.
pub mod cause {
    /// A DATA chunk with no user data; the cause carries its TSN.
    pub const NO_USER_DATA: u16 = 9;
}

/// DATA chunk flags.
const FLAG_END: u8 = 0x01;
const FLAG_BEGIN: u8 = 0x02;
const FLAG_UNORDERED: u8 = 0x04;
const FLAG_IMMEDIATE: u8 = 0x08;
/// ABORT and SHUTDOWN COMPLETE: the verification tag is the peer's own (reflected).
const FLAG_T: u8 = 0x01;

/// A chunk's header is four bytes: type, flags, length.
pub const CHUNK_HEADER: usize = 4;
/// A DATA chunk's header: the chunk header and TSN, stream, SSN, PPID.
pub const DATA_HEADER: usize = 16;

/// One chunk of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(Data<'a>),
    Init(Init<'a>),
    InitAck(Init<'a>),
    Sack(Sack<'a>),
    /// Its value: the Heartbeat Info parameter, echoed back as it is.
    Heartbeat(&'a [u8]),
    HeartbeatAck(&'a [u8]),
    Abort {
        reflected: bool,
        causes: Params<'a>,
    },
    Shutdown {
        cum_tsn: u32,
    },
    ShutdownAck,
    Error {
        causes: Params<'a>,
    },
    CookieEcho(&'a [u8]),
    CookieAck,
    ShutdownComplete {
        reflected: bool,
    },
    ForwardTsn(ForwardTsn<'a>),
    Reconfig(Params<'a>),
    /// A type this codec does not know; what to do with it is in its two high bits
    /// ([`Chunk::unknown_action`]).
    Unknown {
        kind: u8,
        flags: u8,
        value: &'a [u8],
    },
}

/// User data (RFC 9260 §3.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    pub tsn: u32,
    pub stream: u16,
    pub ssn: u16,
    pub ppid: u32,
    pub unordered: bool,
    pub begin: bool,
    pub end: bool,
    /// The sender asks for a SACK at once (RFC 7053).
    pub immediate: bool,
    pub payload: &'a [u8],
}

/// INIT and INIT ACK (RFC 9260 §3.3.2, §3.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init<'a> {
    pub tag: u32,
    pub a_rwnd: u32,
    pub outbound_streams: u16,
    pub inbound_streams: u16,
    pub initial_tsn: u32,
    pub params: Params<'a>,
}

/// A selective acknowledgement (RFC 9260 §3.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sack<'a> {
    pub cum_tsn: u32,
    pub a_rwnd: u32,
    gaps: &'a [u8],
    dups: &'a [u8],
}

/// FORWARD TSN (RFC 3758 §3.2): the receiver may move its cumulative TSN to `new_cum_tsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardTsn<'a> {
    pub new_cum_tsn: u32,
    streams: &'a [u8],
}

/// Type-length-value parameters (or error causes: the same layout), checked when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params<'a>(&'a [u8]);

/// One parameter or error cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

/// What to do with a chunk or parameter of an unknown type (its two high bits, RFC 9260 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// Stop processing the packet and discard it.
    Stop,
    /// The same, and report it in an ERROR.
    StopAndReport,
    /// Skip it and go on.
    Skip,
    /// Skip it, go on, and report it.
    SkipAndReport,
}

/// A RE-CONFIG parameter (RFC 6525 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconfigParam<'a> {
    /// The sender resets these outgoing streams (none listed: all) once every TSN up to
    /// `last_tsn` has arrived.
    OutgoingReset {
        request_seq: u32,
        response_seq: u32,
        last_tsn: u32,
        streams: Streams<'a>,
    },
    /// The sender asks the receiver to reset these of its outgoing streams.
    IncomingReset {
        request_seq: u32,
        streams: Streams<'a>,
    },
    Response {
        response_seq: u32,
        result: u32,
    },
    Other(Param<'a>),
}

/// Stream ids in a RE-CONFIG request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams<'a>(&'a [u8]);

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `n` rounded up to a multiple of four.
pub(crate) const fn padded(n: usize) -> usize {
    (n + 3) & !3
}

impl<'a> Chunk<'a> {
    /// Parses one chunk: `kind`, `flags` and its value (without header or padding).
    pub fn parse(kind: u8, flags: u8, v: &'a [u8]) -> Result<Chunk<'a>, Error> {
        let need = |n: usize, what: &'static str| {
            if v.len() < n {
                Err(Error::Malformed(what))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            kind::DATA => {
                need(DATA_HEADER - CHUNK_HEADER, "DATA shorter than its header")?;
                Chunk::Data(Data {
                    tsn: u32_at(v, 0),
                    stream: u16_at(v, 4),
                    ssn: u16_at(v, 6),
                    ppid: u32_at(v, 8),
                    unordered: flags & FLAG_UNORDERED != 0,
                    begin: flags & FLAG_BEGIN != 0,
                    end: flags & FLAG_END != 0,
                    immediate: flags & FLAG_IMMEDIATE != 0,
                    payload: &v[12..],
                })
            }
            kind::INIT | kind::INIT_ACK => {
                need(16, "INIT shorter than its fields")?;
                let init = Init {
                    tag: u32_at(v, 0),
                    a_rwnd: u32_at(v, 4),
                    outbound_streams: u16_at(v, 8),
                    inbound_streams: u16_at(v, 10),
                    initial_tsn: u32_at(v, 12),
                    params: Params::parse(&v[16..])?,
                };
                if kind == kind::INIT {
                    Chunk::Init(init)
                } else {
                    Chunk::InitAck(init)
                }
            }
            kind::SACK => {
                need(12, "SACK shorter than its fields")?;
                let (g, d) = (usize::from(u16_at(v, 8)), usize::from(u16_at(v, 10)));
                if v.len() != 12 + 4 * g + 4 * d {
                    return Err(Error::Malformed("SACK length does not match its counts"));
                }
                Chunk::Sack(Sack {
                    cum_tsn: u32_at(v, 0),
                    a_rwnd: u32_at(v, 4),
                    gaps: &v[12..12 + 4 * g],
                    dups: &v[12 + 4 * g..],
                })
            }
            kind::HEARTBEAT | kind::HEARTBEAT_ACK => {
                let info = Params::parse(v)?;
                if info.get(param::HEARTBEAT_INFO).is_none() {
                    return Err(Error::Malformed("HEARTBEAT without Heartbeat Info"));
                }
                if kind == kind::HEARTBEAT {
                    Chunk::Heartbeat(v)
                } else {
                    Chunk::HeartbeatAck(v)
                }
            }
            kind::ABORT => Chunk::Abort {
                reflected: flags & FLAG_T != 0,
                causes: Params::parse(v)?,
            },
            kind::SHUTDOWN => {
                need(4, "SHUTDOWN without its TSN")?;
                Chunk::Shutdown {
                    cum_tsn: u32_at(v, 0),
                }
            }
            kind::SHUTDOWN_ACK => Chunk::ShutdownAck,
            kind::ERROR => Chunk::Error {
                causes: Params::parse(v)?,
            },
            kind::COOKIE_ECHO => Chunk::CookieEcho(v),
            kind::COOKIE_ACK => Chunk::CookieAck,
            kind::SHUTDOWN_COMPLETE => Chunk::ShutdownComplete {
                reflected: flags & FLAG_T != 0,
            },
            kind::FORWARD_TSN => {
                need(4, "FORWARD TSN without its TSN")?;
                if !(v.len() - 4).is_multiple_of(4) {
                    return Err(Error::Malformed("FORWARD TSN streams not in fours"));
                }
                Chunk::ForwardTsn(ForwardTsn {
                    new_cum_tsn: u32_at(v, 0),
                    streams: &v[4..],
                })
            }
            kind::RECONFIG => {
                let params = Params::parse(v)?;
                for p in params.iter() {
                    ReconfigParam::parse(p)?;
                }
                Chunk::Reconfig(params)
            }
            kind => Chunk::Unknown {
                kind,
                flags,
                value: v,
            },
        })
    }

    /// The chunk's type.
    pub fn kind(&self) -> u8 {
        match self {
            Chunk::Data(_) => kind::DATA,
            Chunk::Init(_) => kind::INIT,
            Chunk::InitAck(_) => kind::INIT_ACK,
            Chunk::Sack(_) => kind::SACK,
            Chunk::Heartbeat(_) => kind::HEARTBEAT,
            Chunk::HeartbeatAck(_) => kind::HEARTBEAT_ACK,
            Chunk::Abort { .. } => kind::ABORT,
            Chunk::Shutdown { .. } => kind::SHUTDOWN,
            Chunk::ShutdownAck => kind::SHUTDOWN_ACK,
            Chunk::Error { .. } => kind::ERROR,
            Chunk::CookieEcho(_) => kind::COOKIE_ECHO,
            Chunk::CookieAck => kind::COOKIE_ACK,
            Chunk::ShutdownComplete { .. } => kind::SHUTDOWN_COMPLETE,
            Chunk::ForwardTsn(_) => kind::FORWARD_TSN,
            Chunk::Reconfig(_) => kind::RECONFIG,
            Chunk::Unknown { kind, .. } => *kind,
        }
    }

    /// For a chunk of an unknown type: what its type says to do with it.
    pub fn unknown_action(kind: u8) -> Unknown {
        match kind >> 6 {
            0 => Unknown::Stop,
            1 => Unknown::StopAndReport,
            2 => Unknown::Skip,
            _ => Unknown::SkipAndReport,
        }
    }

    fn flags(&self) -> u8 {
        match self {
            Chunk::Data(d) => {
                let flag = |on: bool, f: u8| if on { f } else { 0 };
                flag(d.end, FLAG_END)
                    | flag(d.begin, FLAG_BEGIN)
                    | flag(d.unordered, FLAG_UNORDERED)
                    | flag(d.immediate, FLAG_IMMEDIATE)
            }
            Chunk::Abort {
                reflected: true, ..
            }
            | Chunk::ShutdownComplete { reflected: true } => FLAG_T,
            Chunk::Unknown { flags, .. } => *flags,
            _ => 0,
        }
    }

    /// The length of the value (without header and padding).
    fn value_len(&self) -> usize {
        match self {
            Chunk::Data(d) => 12 + d.payload.len(),
            Chunk::Init(i) | Chunk::InitAck(i) => 16 + i.params.0.len(),
            Chunk::Sack(s) => 12 + s.gaps.len() + s.dups.len(),
            Chunk::Heartbeat(v) | Chunk::HeartbeatAck(v) | Chunk::CookieEcho(v) => v.len(),
            Chunk::Abort { causes, .. } | Chunk::Error { causes } => causes.0.len(),
            Chunk::Shutdown { .. } => 4,
            Chunk::ShutdownAck | Chunk::CookieAck | Chunk::ShutdownComplete { .. } => 0,
            Chunk::ForwardTsn(f) => 4 + f.streams.len(),
            Chunk::Reconfig(p) => p.0.len(),
            Chunk::Unknown { value, .. } => value.len(),
        }
    }

    /// The bytes this chunk takes in a packet, padding included.
    pub fn encoded_len(&self) -> usize {
        padded(CHUNK_HEADER + self.value_len())
    }

    /// Appends the chunk, padded to four bytes. A chunk longer than a chunk can be (65,535
    /// bytes with its header) is refused.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let len = CHUNK_HEADER + self.value_len();
        let len16 = u16::try_from(len).map_err(|_| Error::TooLarge)?;
        out.push(self.kind());
        out.push(self.flags());
        out.extend_from_slice(&len16.to_be_bytes());
        match self {
            Chunk::Data(d) => {
                out.extend_from_slice(&d.tsn.to_be_bytes());
                out.extend_from_slice(&d.stream.to_be_bytes());
                out.extend_from_slice(&d.ssn.to_be_bytes());
                out.extend_from_slice(&d.ppid.to_be_bytes());
                out.extend_from_slice(d.payload);
            }
            Chunk::Init(i) | Chunk::InitAck(i) => {
                out.extend_from_slice(&i.tag.to_be_bytes());
                out.extend_from_slice(&i.a_rwnd.to_be_bytes());
                out.extend_from_slice(&i.outbound_streams.to_be_bytes());
                out.extend_from_slice(&i.inbound_streams.to_be_bytes());
                out.extend_from_slice(&i.initial_tsn.to_be_bytes());
                out.extend_from_slice(i.params.0);
            }
            Chunk::Sack(s) => {
                out.extend_from_slice(&s.cum_tsn.to_be_bytes());
                out.extend_from_slice(&s.a_rwnd.to_be_bytes());
                out.extend_from_slice(&((s.gaps.len() / 4) as u16).to_be_bytes());
                out.extend_from_slice(&((s.dups.len() / 4) as u16).to_be_bytes());
                out.extend_from_slice(s.gaps);
                out.extend_from_slice(s.dups);
            }
            Chunk::Heartbeat(v) | Chunk::HeartbeatAck(v) | Chunk::CookieEcho(v) => {
                out.extend_from_slice(v);
            }
            Chunk::Abort { causes, .. } | Chunk::Error { causes } => {
                out.extend_from_slice(causes.0);
            }
            Chunk::Shutdown { cum_tsn } => out.extend_from_slice(&cum_tsn.to_be_bytes()),
            Chunk::ShutdownAck | Chunk::CookieAck | Chunk::ShutdownComplete { .. } => {}
            Chunk::ForwardTsn(f) => {
                out.extend_from_slice(&f.new_cum_tsn.to_be_bytes());
                out.extend_from_slice(f.streams);
            }
            Chunk::Reconfig(p) => out.extend_from_slice(p.0),
            Chunk::Unknown { value, .. } => out.extend_from_slice(value),
        }
        out.resize(out.len() + padded(len) - len, 0);
        Ok(())
    }
}

impl<'a> Sack<'a> {
    /// A SACK over `gaps` (start and end offsets from `cum_tsn + 1`, each pair four bytes
    /// big-endian, as [`Sack::encode_gaps`] writes them) and `dups` (TSNs, four bytes each).
    pub fn new(cum_tsn: u32, a_rwnd: u32, gaps: &'a [u8], dups: &'a [u8]) -> Result<Self, Error> {
        if !gaps.len().is_multiple_of(4) || !dups.len().is_multiple_of(4) {
            return Err(Error::Malformed("SACK blocks not in fours"));
        }
        if gaps.len() / 4 > usize::from(u16::MAX) || dups.len() / 4 > usize::from(u16::MAX) {
            return Err(Error::TooLarge);
        }
        Ok(Sack {
            cum_tsn,
            a_rwnd,
            gaps,
            dups,
        })
    }

    /// Appends gap blocks in the wire form [`Sack::new`] takes.
    pub fn encode_gaps(blocks: impl IntoIterator<Item = (u16, u16)>, out: &mut Vec<u8>) {
        for (start, end) in blocks {
            out.extend_from_slice(&start.to_be_bytes());
            out.extend_from_slice(&end.to_be_bytes());
        }
    }

    /// Gap ack blocks: offsets from `cum_tsn + 1`, start and end inclusive.
    pub fn gap_blocks(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.gaps
            .chunks_exact(4)
            .map(|b| (u16_at(b, 0), u16_at(b, 2)))
    }

    /// TSNs the receiver got more than once.
    pub fn duplicates(&self) -> impl Iterator<Item = u32> + 'a {
        self.dups.chunks_exact(4).map(|b| u32_at(b, 0))
    }
}

impl<'a> ForwardTsn<'a> {
    /// `streams`: (stream, SSN) pairs in wire form, four bytes each.
    pub fn new(new_cum_tsn: u32, streams: &'a [u8]) -> Result<Self, Error> {
        if !streams.len().is_multiple_of(4) {
            return Err(Error::Malformed("FORWARD TSN streams not in fours"));
        }
        Ok(ForwardTsn {
            new_cum_tsn,
            streams,
        })
    }

    /// Each ordered stream skipped and the last SSN skipped on it.
    pub fn streams(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.streams
            .chunks_exact(4)
            .map(|b| (u16_at(b, 0), u16_at(b, 2)))
    }
}

impl<'a> Params<'a> {
    /// Checks that `v` is a run of parameters, each at least four bytes, padded to four except
    /// perhaps the last.
    pub fn parse(v: &'a [u8]) -> Result<Params<'a>, Error> {
        let mut at = 0;
        while at < v.len() {
            if v.len() - at < 4 {
                return Err(Error::Malformed("parameter shorter than its header"));
            }
            let len = usize::from(u16_at(v, at + 2));
            if len < 4 || len > v.len() - at {
                return Err(Error::Malformed("parameter length out of bounds"));
            }
            at += padded(len).min(v.len() - at);
        }
        Ok(Params(v))
    }

    /// Parameters to encode, already in wire form (see [`Params::push`]).
    pub fn raw(v: &'a [u8]) -> Params<'a> {
        Params(v)
    }

    /// Appends one parameter in wire form, padded.
    pub fn push(kind: u16, value: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let len = u16::try_from(4 + value.len()).map_err(|_| Error::TooLarge)?;
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
        out.resize(out.len() + padded(value.len()) - value.len(), 0);
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        let v = self.0;
        let mut at = 0;
        std::iter::from_fn(move || {
            // Checked by `parse`; a run built with `raw` stops at the first bad header.
            if v.len().saturating_sub(at) < 4 {
                return None;
            }
            let len = usize::from(u16_at(v, at + 2));
            if len < 4 || len > v.len() - at {
                return None;
            }
            let p = Param {
                kind: u16_at(v, at),
                value: &v[at + 4..at + len],
            };
            at += padded(len).min(v.len() - at);
            Some(p)
        })
    }

    /// The first parameter of type `kind`.
    pub fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.iter().find(|p| p.kind == kind).map(|p| p.value)
    }

    /// Whether the sender lists chunk type `kind` among its supported extensions.
    pub fn supports(&self, kind: u8) -> bool {
        self.get(param::SUPPORTED_EXTENSIONS)
            .is_some_and(|l| l.contains(&kind))
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl<'a> ReconfigParam<'a> {
    pub fn parse(p: Param<'a>) -> Result<ReconfigParam<'a>, Error> {
        let v = p.value;
        let streams = |from: usize| {
            let s = &v[from..];
            if s.len().is_multiple_of(2) {
                Ok(Streams(s))
            } else {
                Err(Error::Malformed("RE-CONFIG stream list of odd length"))
            }
        };
        Ok(match p.kind {
            param::OUTGOING_RESET => {
                if v.len() < 12 {
                    return Err(Error::Malformed("outgoing reset request too short"));
                }
                ReconfigParam::OutgoingReset {
                    request_seq: u32_at(v, 0),
                    response_seq: u32_at(v, 4),
                    last_tsn: u32_at(v, 8),
                    streams: streams(12)?,
                }
            }
            param::INCOMING_RESET => {
                if v.len() < 4 {
                    return Err(Error::Malformed("incoming reset request too short"));
                }
                ReconfigParam::IncomingReset {
                    request_seq: u32_at(v, 0),
                    streams: streams(4)?,
                }
            }
            param::RECONFIG_RESPONSE => {
                // Optional next-TSN fields follow for some results; they are not needed here.
                if v.len() < 8 {
                    return Err(Error::Malformed("RE-CONFIG response too short"));
                }
                ReconfigParam::Response {
                    response_seq: u32_at(v, 0),
                    result: u32_at(v, 4),
                }
            }
            _ => ReconfigParam::Other(p),
        })
    }

    /// Appends the parameter in wire form.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let mut v = Vec::with_capacity(16);
        let kind = match self {
            ReconfigParam::OutgoingReset {
                request_seq,
                response_seq,
                last_tsn,
                streams,
            } => {
                v.extend_from_slice(&request_seq.to_be_bytes());
                v.extend_from_slice(&response_seq.to_be_bytes());
                v.extend_from_slice(&last_tsn.to_be_bytes());
                v.extend_from_slice(streams.0);
                param::OUTGOING_RESET
            }
            ReconfigParam::IncomingReset {
                request_seq,
                streams,
            } => {
                v.extend_from_slice(&request_seq.to_be_bytes());
                v.extend_from_slice(streams.0);
                param::INCOMING_RESET
            }
            ReconfigParam::Response {
                response_seq,
                result,
            } => {
                v.extend_from_slice(&response_seq.to_be_bytes());
                v.extend_from_slice(&result.to_be_bytes());
                param::RECONFIG_RESPONSE
            }
            ReconfigParam::Other(p) => {
                v.extend_from_slice(p.value);
                p.kind
            }
        };
        Params::push(kind, &v, out)
    }
}

impl<'a> Streams<'a> {
    /// Stream ids in wire form (two bytes each).
    pub fn new(v: &'a [u8]) -> Result<Self, Error> {
        if v.len().is_multiple_of(2) {
            Ok(Streams(v))
        } else {
            Err(Error::Malformed("stream list of odd length"))
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.0.chunks_exact(2).map(|b| u16_at(b, 0))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
