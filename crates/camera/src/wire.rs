//! The camera protocol (v1): JSON text messages on the default data channel between a camera
//! and one viewer (docs/protocol.md, "Camera").
//!
//! The viewer speaks first: `visit` (who it is, if paired), then the transfer handshake's
//! `hello` and `confirm` ([`peerweb_transfer::trust`]), the camera as the sender. Once both
//! confirms verified the camera sends `welcome` (with the viewer's new key after a pairing)
//! and `status` whenever something a viewer shows changes; `refused` ends the visit.

use peerweb_transfer::Control;
use peerweb_transfer::wire::cut;
use serde::{Deserialize, Serialize};

/// Version of the camera protocol.
pub const VERSION: u32 = 1;
/// Longest message either side accepts.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest camera or viewer name kept (bytes, cut at a character boundary).
pub const MAX_NAME_BYTES: usize = 64;
/// Longest reason in `refused` kept.
pub const MAX_REASON_BYTES: usize = 256;

/// Camera-protocol messages that are not the transfer handshake's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Visit {
    /// Viewer → camera, first: the protocol version, the viewer's id if it was paired (then it
    /// proves its key), none to pair with a code or link; a name for the camera's list.
    Visit {
        v: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        viewer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Server → camera, as an app signal (not on a channel): a WHEP player's bearer token
    /// ([`crate::store::whep_token`]); its offer follows once the camera answers `welcome`.
    Whep { v: u32, token: String },
    /// Camera → viewer, once both confirms verified.
    Welcome {
        /// The camera's id: its room is `camera-<id>`.
        camera: String,
        name: String,
        /// The viewer's id on this camera.
        viewer: String,
        /// After a pairing only: the viewer's key (32 hex digits), to keep for later visits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Camera → viewer: what is streamed and how many watch.
    Status(Status),
    /// Camera → viewer: no stream, and why (for people).
    Refused { reason: String },
}

/// What a camera tells its viewers: how many watch, and the size and rate where known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub viewers: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
}

/// One message of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Camera(Visit),
    /// `hello` or `confirm` of the trust handshake.
    Trust(Control),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    #[error("camera message of {0} bytes is over the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("malformed camera message: {0}")]
    Malformed(String),
}

impl Msg {
    pub fn decode(text: &[u8]) -> Result<Msg, WireError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLarge(text.len()));
        }
        #[derive(Deserialize)]
        struct Tag<'a> {
            #[serde(borrow)]
            t: std::borrow::Cow<'a, str>,
        }
        let bad = |e: serde_json::Error| WireError::Malformed(cut(&e.to_string(), 200).to_owned());
        let tag: Tag<'_> = serde_json::from_slice(text).map_err(bad)?;
        match &*tag.t {
            "hello" | "confirm" => Control::decode(text)
                .map(Msg::Trust)
                .map_err(|e| WireError::Malformed(e.to_string())),
            _ => serde_json::from_slice(text).map(Msg::Camera).map_err(bad),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Camera(v) => serde_json::to_vec(v).unwrap_or_default(),
            Msg::Trust(c) => c.encode(),
        }
    }
}

/// A name from the other side, made short and printable.
pub fn clean_name(s: &str) -> String {
    let printable: String = s.chars().filter(|c| !c.is_control()).collect();
    cut(printable.trim(), MAX_NAME_BYTES).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_round_trip() {
        let msgs = [
            Msg::Camera(Visit::Visit {
                v: VERSION,
                viewer: Some("v1".into()),
                name: None,
            }),
            Msg::Camera(Visit::Refused {
                reason: "no".into(),
            }),
            Msg::Camera(Visit::Status(Status {
                viewers: 2,
                width: Some(640),
                height: None,
                fps: Some(30),
            })),
            Msg::Trust(Control::Confirm { mac: "ab".into() }),
        ];
        for m in msgs {
            assert_eq!(Msg::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn bad_messages_are_errors() {
        assert!(matches!(
            Msg::decode(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(WireError::TooLarge(_))
        ));
        for bad in [
            &b"{}"[..],
            b"[]",
            b"{\"t\":\"files\",\"files\":[]}",
            b"{\"t\":\"nope\"}",
            b"{\"t\":\"hello\"}",
            b"\xff",
        ] {
            assert!(
                matches!(Msg::decode(bad), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_are_cut_and_cleaned() {
        assert_eq!(clean_name(" a\u{7}b\n "), "ab");
        let long = "é".repeat(100);
        let n = clean_name(&long);
        assert!(n.len() <= MAX_NAME_BYTES && n.chars().all(|c| c == 'é'));
    }
}
