//! STUN message codec (RFC 8489), with the TURN methods and attributes (RFC 8656).
//!
//! [`Message::parse`] checks framing once and borrows the datagram: attributes are read in
//! place, nothing is copied or allocated. [`Builder`] writes responses and indications and
//! appends MESSAGE-INTEGRITY and FINGERPRINT. ChannelData framing is in [`channel_data`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// The magic cookie of every RFC 5389+ message.
pub const MAGIC: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// STUN/TURN methods.
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types.
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;

    /// Comprehension-required attributes this server understands. Any other type below
    /// 0x8000 in a request is answered with 420 (Unknown Attribute). DONT-FRAGMENT is
    /// accepted and not acted on (the relay sockets do not set DF).
    pub const UNDERSTOOD: &[u16] = &[
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        MESSAGE_INTEGRITY_SHA256,
        PASSWORD_ALGORITHM,
        XOR_MAPPED_ADDRESS,
        PRIORITY,
        USE_CANDIDATE,
    ];
}

/// The class bits of a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

/// Why a datagram is not a STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("shorter than a STUN header")]
    Short,
    #[error("not a STUN message (first bits or magic cookie)")]
    NotStun,
    #[error("length field does not match the datagram")]
    BadLength,
    #[error("an attribute runs past the end of the message")]
    BadAttribute,
    #[error(
        "attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, \
         or after FINGERPRINT"
    )]
    BadOrder,
    #[error("FINGERPRINT does not match")]
    BadFingerprint,
}

/// A parsed STUN message borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    pub class: Class,
    pub method: u16,
    pub tid: [u8; 12],
    /// Offset of the MESSAGE-INTEGRITY attribute header, if any.
    integrity_at: Option<usize>,
    /// Offset and value length of MESSAGE-INTEGRITY-SHA256, if any.
    integrity256_at: Option<(usize, usize)>,
    /// End of the attributes that count (MESSAGE-INTEGRITY excluded; FINGERPRINT excluded).
    attrs_end: usize,
}

impl<'a> Message<'a> {
    /// Parses and checks framing; verifies FINGERPRINT when present.
    pub fn parse(raw: &'a [u8]) -> Result<Self, ParseError> {
        if raw.len() < HEADER_LEN {
            return Err(ParseError::Short);
        }
        let ty = u16::from_be_bytes([raw[0], raw[1]]);
        if ty & 0xC000 != 0 || u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) != MAGIC {
            return Err(ParseError::NotStun);
        }
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        if len % 4 != 0 || HEADER_LEN + len != raw.len() {
            return Err(ParseError::BadLength);
        }
        let class = match ((ty >> 7) & 0b10) | ((ty >> 4) & 0b1) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let method = (ty & 0x000F) | ((ty >> 1) & 0x0070) | ((ty >> 2) & 0x0F80);
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&raw[8..20]);
        let mut integrity_at = None;
        let mut integrity256_at = None;
        let mut fingerprint_at = None;
        let mut attrs_end = raw.len();
        let mut at = HEADER_LEN;
        while at < raw.len() {
            if raw.len() - at < 4 {
                return Err(ParseError::BadAttribute);
            }
            let t = u16::from_be_bytes([raw[at], raw[at + 1]]);
            let l = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
            let next = at + 4 + l.div_ceil(4) * 4;
            if next > raw.len() {
                return Err(ParseError::BadAttribute);
            }
            if fingerprint_at.is_some() {
                return Err(ParseError::BadOrder);
            }
            match t {
                attr::FINGERPRINT => {
                    if l != 4 {
                        return Err(ParseError::BadAttribute);
                    }
                    if integrity_at.is_none() && integrity256_at.is_none() {
                        attrs_end = at;
                    }
                    fingerprint_at = Some(at);
                }
                _ if integrity256_at.is_some() => return Err(ParseError::BadOrder),
                attr::MESSAGE_INTEGRITY_SHA256 => {
                    // RFC 8489 §14.6: truncated to no fewer than 16 bytes, a multiple of 4.
                    if !(16..=32).contains(&l) || l % 4 != 0 {
                        return Err(ParseError::BadAttribute);
                    }
                    if integrity_at.is_none() {
                        attrs_end = at;
                    }
                    integrity256_at = Some((at, l));
                }
                _ if integrity_at.is_some() => return Err(ParseError::BadOrder),
                attr::MESSAGE_INTEGRITY => {
                    if l != 20 {
                        return Err(ParseError::BadAttribute);
                    }
                    integrity_at = Some(at);
                    attrs_end = at;
                }
                _ => {}
            }
            at = next;
        }
        if let Some(fp) = fingerprint_at {
            let want = u32::from_be_bytes([raw[fp + 4], raw[fp + 5], raw[fp + 6], raw[fp + 7]]);
            if fingerprint(raw, fp) != want {
                return Err(ParseError::BadFingerprint);
            }
        }
        Ok(Self {
            raw,
            class,
            method,
            tid,
            integrity_at,
            integrity256_at,
            attrs_end,
        })
    }

    /// Attributes before MESSAGE-INTEGRITY (those after it do not count), as (type, value).
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        let raw = self.raw;
        let end = self.attrs_end;
        let mut at = HEADER_LEN;
        std::iter::from_fn(move || {
            if at + 4 > end {
                return None;
            }
            let t = u16::from_be_bytes([raw[at], raw[at + 1]]);
            let l = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
            let v = &raw[at + 4..at + 4 + l];
            at += 4 + l.div_ceil(4) * 4;
            Some((t, v))
        })
    }

    /// The first attribute of this type.
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.attributes().find(|(t, _)| *t == ty).map(|(_, v)| v)
    }

    /// True when MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some() || self.integrity256_at.is_some()
    }

    /// True when MESSAGE-INTEGRITY-SHA256 is present (and so is what a server checks).
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity256_at.is_some()
    }

    /// The header with its length field set as if the message ended after an attribute of
    /// `attr_len` value bytes at `at`.
    fn header_until(&self, at: usize, attr_len: usize) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&self.raw[..HEADER_LEN]);
        let len = (at + 4 + attr_len - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        header
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) with `key`. False when absent.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let mut mac = hmac_sha1(key);
        mac.update(&self.header_until(at, 20));
        mac.update(&self.raw[HEADER_LEN..at]);
        mac.verify_slice(&self.raw[at + 4..at + 24]).is_ok()
    }

    /// Checks MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256, possibly truncated) with `key`.
    pub fn verify_integrity_sha256(&self, key: &[u8]) -> bool {
        let Some((at, len)) = self.integrity256_at else {
            return false;
        };
        let mut mac = hmac_sha256(key);
        mac.update(&self.header_until(at, len));
        mac.update(&self.raw[HEADER_LEN..at]);
        mac.verify_truncated_left(&self.raw[at + 4..at + 4 + len])
            .is_ok()
    }

    /// Comprehension-required attribute types this server does not understand.
    pub fn unknown_required(&self) -> Vec<u16> {
        self.attributes()
            .map(|(t, _)| t)
            .filter(|t| *t < 0x8000 && !attr::UNDERSTOOD.contains(t))
            .collect()
    }

    /// A UTF-8 text attribute (USERNAME, REALM, NONCE), at most 763 bytes as RFC 8489 allows.
    pub fn text(&self, ty: u16) -> Option<&'a str> {
        let v = self.get(ty)?;
        if v.len() > 763 {
            return None;
        }
        std::str::from_utf8(v).ok()
    }

    /// An XOR-…-ADDRESS attribute value, decoded.
    pub fn xor_address(&self, ty: u16) -> Option<SocketAddr> {
        decode_xor_address(self.get(ty)?, &self.tid)
    }

    /// Every XOR-PEER-ADDRESS (CreatePermission may carry several); `None` if one is malformed.
    pub fn xor_addresses(&self, ty: u16) -> Option<Vec<SocketAddr>> {
        self.attributes()
            .filter(|(t, _)| *t == ty)
            .map(|(_, v)| decode_xor_address(v, &self.tid))
            .collect()
    }

    /// A 32-bit attribute (LIFETIME).
    pub fn u32(&self, ty: u16) -> Option<u32> {
        let v = self.get(ty)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts every key length"),
    }
}

fn hmac_sha1(key: &[u8]) -> Hmac<Sha1> {
    // HMAC takes keys of any length; this cannot fail.
    match Hmac::<Sha1>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts every key length"),
    }
}

/// HMAC-SHA1 of `data` under `key` (also the TURN REST password derivation).
pub fn hmac_sha1_of(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = hmac_sha1(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256_of(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac_sha256(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// CRC-32 of the message up to the FINGERPRINT attribute at `at`, with the length field set
/// as if FINGERPRINT ended the message, XOR 0x5354554e.
fn fingerprint(raw: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&raw[..2]);
    h.update(&((at + 8 - HEADER_LEN) as u16).to_be_bytes());
    h.update(&raw[4..at]);
    h.finalize() ^ FINGERPRINT_XOR
}

fn decode_xor_address(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
    let magic = MAGIC.to_be_bytes();
    match (v[1], v.len()) {
        (1, 8) => {
            let mut a = [0u8; 4];
            for i in 0..4 {
                a[i] = v[4 + i] ^ magic[i];
            }
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        (2, 20) => {
            let mut a = [0u8; 16];
            for i in 0..16 {
                let k = if i < 4 { magic[i] } else { tid[i - 4] };
                a[i] = v[4 + i] ^ k;
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// Writes a STUN message.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    pub fn new(class: Class, method: u16, tid: &[u8; 12]) -> Self {
        let c = match class {
            Class::Request => 0,
            Class::Indication => 0x0010,
            Class::Success => 0x0100,
            Class::Error => 0x0110,
        };
        let ty = (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | c;
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&ty.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.extend_from_slice(tid);
        Self { buf }
    }

    /// Appends an attribute, zero-padded to 4 bytes.
    pub fn attr(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&ty.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.buf.extend_from_slice(&[0u8; 3][..pad]);
        self.set_len();
        self
    }

    pub fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }

    pub fn xor_address(&mut self, ty: u16, addr: SocketAddr) -> &mut Self {
        let tid: [u8; 12] = self.buf[8..20].try_into().unwrap_or([0; 12]);
        let magic = MAGIC.to_be_bytes();
        let port = addr.port() ^ (MAGIC >> 16) as u16;
        let mut v = Vec::with_capacity(20);
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.extend_from_slice(&[0, 1]);
                v.extend_from_slice(&port.to_be_bytes());
                for (i, b) in ip.octets().iter().enumerate() {
                    v.push(b ^ magic[i]);
                }
            }
            IpAddr::V6(ip) => {
                v.extend_from_slice(&[0, 2]);
                v.extend_from_slice(&port.to_be_bytes());
                for (i, b) in ip.octets().iter().enumerate() {
                    let k = if i < 4 { magic[i] } else { tid[i - 4] };
                    v.push(b ^ k);
                }
            }
        }
        self.attr(ty, &v)
    }

    /// ERROR-CODE with its reason phrase.
    pub fn error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = Vec::with_capacity(4 + reason.len());
        v.extend_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    /// Appends MESSAGE-INTEGRITY computed with `key`.
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let len = (self.buf.len() + 24 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = hmac_sha1(key);
        mac.update(&self.buf);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY, &tag)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (32 bytes) computed with `key`.
    pub fn integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let len = (self.buf.len() + 36 - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = hmac_sha256(key);
        mac.update(&self.buf);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY_SHA256, &tag)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 when `sha256`, else MESSAGE-INTEGRITY.
    pub fn sign(&mut self, key: &[u8], sha256: bool) -> &mut Self {
        if sha256 {
            self.integrity_sha256(key)
        } else {
            self.integrity(key)
        }
    }

    /// Appends FINGERPRINT and returns the message.
    pub fn fingerprint(mut self) -> Vec<u8> {
        let at = self.buf.len();
        self.attr(attr::FINGERPRINT, &[0; 4]);
        let crc = fingerprint(&self.buf, at);
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }

    /// The message without FINGERPRINT.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn set_len(&mut self) {
        let len = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

/// ChannelData framing (RFC 8656 §12.4).
pub mod channel_data {
    /// Channel numbers a client may bind.
    pub const MIN: u16 = 0x4000;
    pub const MAX: u16 = 0x4FFF;

    /// True when the first byte marks a ChannelData message (channel 0x4000..=0x7FFF).
    pub fn is_channel_data(buf: &[u8]) -> bool {
        buf.first().is_some_and(|b| b & 0xC0 == 0x40)
    }

    /// (channel, application data), or `None` if the length field overruns the buffer.
    pub fn parse(buf: &[u8]) -> Option<(u16, &[u8])> {
        if buf.len() < 4 || !is_channel_data(buf) {
            return None;
        }
        let ch = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        buf.get(4..4 + len).map(|d| (ch, d))
    }

    /// A ChannelData message; over TCP/TLS it is padded to a multiple of 4 bytes.
    pub fn encode(ch: u16, data: &[u8], pad: bool) -> Vec<u8> {
        let padding = if pad { (4 - data.len() % 4) % 4 } else { 0 };
        let mut v = Vec::with_capacity(4 + data.len() + padding);
        v.extend_from_slice(&ch.to_be_bytes());
        v.extend_from_slice(&(data.len() as u16).to_be_bytes());
        v.extend_from_slice(data);
        v.extend_from_slice(&[0u8; 3][..padding]);
        v
    }
}

/// Length of the next STUN message or ChannelData frame at the start of a TCP stream
/// buffer (with ChannelData padding), or `None` if more bytes are needed to tell.
pub fn stream_frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if channel_data::is_channel_data(buf) {
        Some(4 + len.div_ceil(4) * 4)
    } else {
        Some(HEADER_LEN + len)
    }
}
