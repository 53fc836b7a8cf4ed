//! Transfer protocol v1 on the default data channel: control messages are JSON text, file
//! data are binary chunk frames. See docs/protocol.md ("File transfer").

use serde::{Deserialize, Serialize};

/// Version of the transfer protocol.
pub const VERSION: u32 = 1;
/// File bytes per chunk frame (the frame stays under SCTP's common 64 KiB message limit).
pub const CHUNK: usize = 60 * 1024;
/// Bytes before the payload of a chunk frame: file index, chunk index, BLAKE3 of the payload.
pub const CHUNK_HEADER: usize = 4 + 8 + 32;
/// Largest control message accepted.
pub const MAX_CONTROL_BYTES: usize = 256 * 1024;
/// Files in one transfer.
pub const MAX_FILES: usize = 100_000;
/// File entries per `files` message.
pub const FILES_PER_MESSAGE: usize = 256;
/// Bytes of a path as sent.
pub const MAX_PATH_BYTES: usize = 4096;
/// Largest file (and transfer): 16 TiB.
pub const MAX_BYTES: u64 = 1 << 44;
/// Bytes of an abort reason.
pub const MAX_REASON_BYTES: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Send,
    Receive,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Send => "send",
            Role::Receive => "receive",
        }
    }
}

/// Which secret the receiver holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    Link,
    Code,
}

/// One file of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path with `/` separators, as the sender names it (the receiver sanitises it).
    pub path: String,
    pub size: u64,
    /// BLAKE3 of the whole file, lower-case hex.
    pub hash: String,
}

/// Control messages, in the order they are used. Unknown fields are ignored (later minor
/// additions); an unknown `t` is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Control {
    /// First message of each side (see [`crate::trust`]).
    Hello {
        v: u32,
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<AuthKind>,
        /// SPAKE2 message, base64url.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pake: Option<String>,
        /// Receiver: it will accept any offer whole, from the first chunk (it asks nobody and
        /// has nothing staged to resume), so the sender may stream right behind its offer
        /// instead of waiting a round trip for `accept`, which still follows.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ready: bool,
    },
    /// BLAKE3 MAC over both DTLS fingerprints, hex.
    Confirm { mac: String },
    /// Sender → receiver: a page of the file list (only after both confirms verified).
    Files { files: Vec<FileEntry> },
    /// Sender → receiver: the list is complete.
    Offer { files: u64, bytes: u64 },
    /// Receiver → sender: send these files from these chunks on; every file is listed once,
    /// `[index, first chunk wanted]` (a file already complete wants `chunks(size)`).
    Accept { from: Vec<(u32, u64)> },
    /// Receiver → sender: no thanks.
    Decline,
    /// Receiver → sender: every file arrived and verified.
    Done,
    /// Either side: the transfer ends; why, for people.
    Abort { reason: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    #[error("control message of {0} bytes is over the limit of {MAX_CONTROL_BYTES}")]
    TooLarge(usize),
    #[error("malformed control message: {0}")]
    Malformed(String),
    #[error("chunk frame of {0} bytes is shorter than its header")]
    ShortChunk(usize),
    #[error("chunk frame of {0} bytes is longer than a chunk")]
    LongChunk(usize),
}

impl Control {
    pub fn decode(text: &[u8]) -> Result<Control, WireError> {
        if text.len() > MAX_CONTROL_BYTES {
            return Err(WireError::TooLarge(text.len()));
        }
        // serde's message may quote the input: cut at a character boundary.
        serde_json::from_slice(text)
            .map_err(|e| WireError::Malformed(cut(&e.to_string(), 200).to_owned()))
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `s` cut to at most `max` bytes at a character boundary (never inside a UTF-8 sequence:
/// `String::truncate` there panics, and the text may come from the other side).
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Chunks of a file of `size` bytes.
pub fn chunks(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64)
}

/// Payload bytes of chunk `index` of a file of `size` bytes.
pub fn chunk_len(size: u64, index: u64) -> usize {
    let start = index.saturating_mul(CHUNK as u64);
    // At most CHUNK, so the cast is lossless.
    size.saturating_sub(start).min(CHUNK as u64) as usize
}

/// A decoded chunk frame (borrowing the payload).
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub file: u32,
    pub index: u64,
    pub hash: [u8; 32],
    pub payload: &'a [u8],
}

impl<'a> Chunk<'a> {
    /// Frames `payload` (hashing it).
    pub fn encode(file: u32, index: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHUNK_HEADER + payload.len());
        out.extend_from_slice(&file.to_be_bytes());
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(blake3::hash(payload).as_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub fn decode(frame: &'a [u8]) -> Result<Chunk<'a>, WireError> {
        if frame.len() < CHUNK_HEADER {
            return Err(WireError::ShortChunk(frame.len()));
        }
        if frame.len() > CHUNK_HEADER + CHUNK {
            return Err(WireError::LongChunk(frame.len()));
        }
        let (file, rest) = frame.split_at(4);
        let (index, rest) = rest.split_at(8);
        let (hash, payload) = rest.split_at(32);
        let mut h = [0; 32];
        h.copy_from_slice(hash);
        Ok(Chunk {
            file: u32::from_be_bytes([file[0], file[1], file[2], file[3]]),
            index: u64::from_be_bytes(index.try_into().unwrap_or_default()),
            hash: h,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer: serde's error quotes the input, and cutting its message at byte 200
    /// inside a multi-byte character panicked.
    #[test]
    fn malformed_messages_with_multibyte_text_are_refused_not_panicked_on() {
        for pad in 0..8 {
            let text = format!("{{\"t\":\"{}{}\"}}", "x".repeat(150 + pad), "€".repeat(40));
            match Control::decode(text.as_bytes()) {
                Err(WireError::Malformed(m)) => assert!(m.len() <= 200, "{m}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(cut("a€b", 2), "a");
        assert_eq!(cut("a€b", 4), "a€");
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("€", 0), "");
    }

    #[test]
    fn control_messages_have_a_fixed_shape() {
        let m = Control::Hello {
            v: 1,
            role: Role::Receive,
            auth: Some(AuthKind::Code),
            pake: Some("QUJD".into()),
            ready: false,
        };
        let text = String::from_utf8(m.encode()).unwrap();
        assert_eq!(
            text,
            r#"{"t":"hello","v":1,"role":"receive","auth":"code","pake":"QUJD"}"#
        );
        assert_eq!(Control::decode(text.as_bytes()), Ok(m));
        let ready = br#"{"t":"hello","v":1,"role":"receive","auth":"link","ready":true}"#;
        let m = Control::decode(ready).unwrap();
        assert!(matches!(m, Control::Hello { ready: true, .. }));
        assert_eq!(m.encode(), ready);
        let a = Control::Accept {
            from: vec![(0, 3), (1, 0)],
        };
        assert_eq!(
            String::from_utf8(a.encode()).unwrap(),
            r#"{"t":"accept","from":[[0,3],[1,0]]}"#
        );
        assert_eq!(
            Control::decode(br#"{"t":"done","later":1}"#),
            Ok(Control::Done)
        );
    }

    #[test]
    fn bad_control_messages_say_why() {
        for bad in [
            &br#"{"t":"nope"}"#[..],
            br#"{"t":"offer","files":-1,"bytes":0}"#,
            b"\xff\xfe",
            b"",
        ] {
            assert!(
                matches!(Control::decode(bad), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
        let big = vec![b' '; MAX_CONTROL_BYTES + 1];
        assert_eq!(
            Control::decode(&big),
            Err(WireError::TooLarge(MAX_CONTROL_BYTES + 1))
        );
    }

    #[test]
    fn chunk_frames_round_trip_and_are_bounded() {
        let payload = vec![7u8; 1000];
        let f = Chunk::encode(3, 9, &payload);
        assert_eq!(&f[..12], &[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9]);
        let c = Chunk::decode(&f).unwrap();
        assert_eq!((c.file, c.index, c.payload), (3, 9, &payload[..]));
        assert_eq!(c.hash, *blake3::hash(&payload).as_bytes());
        assert_eq!(Chunk::decode(&f[..10]), Err(WireError::ShortChunk(10)));
        let long = vec![0; CHUNK_HEADER + CHUNK + 1];
        assert_eq!(Chunk::decode(&long), Err(WireError::LongChunk(long.len())));
        assert!(
            Chunk::decode(&f[..CHUNK_HEADER])
                .unwrap()
                .payload
                .is_empty()
        );
    }

    #[test]
    fn chunk_arithmetic() {
        assert_eq!(chunks(0), 0);
        assert_eq!(chunks(1), 1);
        assert_eq!(chunks(CHUNK as u64), 1);
        assert_eq!(chunks(CHUNK as u64 + 1), 2);
        assert_eq!(chunk_len(CHUNK as u64 + 1, 0), CHUNK);
        assert_eq!(chunk_len(CHUNK as u64 + 1, 1), 1);
        assert_eq!(chunk_len(10, 5), 0);
        assert_eq!(chunk_len(u64::MAX, u64::MAX), 0);
    }
}
