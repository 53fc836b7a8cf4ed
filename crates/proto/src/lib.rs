//! Wire types of the peerweb signaling protocol, version 1.
//!
//! Signaling is JSON text frames over one WebSocket (`GET /ws`). Every frame is an object
//! with a `"type"` field. This crate decodes and validates what clients send
//! ([`ClientMsg::decode`]) and encodes what the server sends ([`ServerMsg::encode`]). It does
//! no IO and holds no state; `docs/protocol.md` is the normative description and the tests
//! below pin its examples byte for byte.
//!
//! ```
//! use peerweb_proto::{ClientMsg, ServerMsg, ErrorCode};
//!
//! let msg = ClientMsg::decode(r#"{"type":"join","room":"lobby","meta":{"name":"ada"}}"#).unwrap();
//! assert!(matches!(msg, ClientMsg::Join { ref room, .. } if room == "lobby"));
//!
//! let err = ClientMsg::decode("{not json").unwrap_err();
//! assert_eq!(err.code, ErrorCode::BadJson);
//!
//! let frame = ServerMsg::Left { room: "lobby" }.encode();
//! assert_eq!(frame, r#"{"type":"left","room":"lobby"}"#);
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod report;
mod swarm;
pub use report::{
    ClientKind, MAX_REPORT_BYTES, MAX_REPORT_MS, PathKind, RelayTransport, Report, ReportKind,
};
pub use swarm::{
    MAX_SWARM_REPORT_BYTES, SWARM_ID_LEN, SwarmBytes, SwarmMember, SwarmPeer, validate_swarm,
};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// Longest room name, in bytes of UTF-8.
pub const MAX_ROOM_NAME_BYTES: usize = 64;
/// Longest peer metadata, in bytes of its JSON text.
pub const MAX_META_BYTES: usize = 1024;
/// Longest resume token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 64;
/// Longest peer id accepted in a `to` field, in bytes.
pub const MAX_PEER_ID_BYTES: usize = 32;

/// A message a client sends to the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientMsg<'a> {
    /// First frame of a connection: protocol version and, to keep an identity across
    /// reconnects, the resume token the server handed out earlier.
    ///
    /// `last` is the `n` of the last `signal` an earlier connection of this session got (the
    /// server sends what came after it); `acks`: this client acknowledges signals with `ack`
    /// (else the server counts a signal delivered once it is written to the connection).
    Hello {
        v: u32,
        token: Option<Cow<'a, str>>,
        last: Option<u64>,
        acks: bool,
    },
    /// Every `signal` up to `n` arrived: the server may forget them.
    Ack { n: u64 },
    /// Enter a room, optionally with metadata (a JSON object) shown to the other members.
    Join {
        room: Cow<'a, str>,
        meta: Option<&'a RawValue>,
    },
    /// Leave a room.
    Leave { room: Cow<'a, str> },
    /// Opaque payload (SDP, ICE candidates, ...) for one peer that shares a room with the sender.
    Signal {
        to: Cow<'a, str>,
        data: &'a RawValue,
    },
    /// Keepalive; the server answers `pong` echoing `data`.
    Ping { data: Option<&'a RawValue> },
    /// What the client saw of one peer connection, for the server's connectivity metrics
    /// (optional; no answer).
    Report(Report),
    /// Enter a swarm (`seed`: with all of its content); the server introduces a few
    /// neighbours.
    SwarmJoin { swarm: Cow<'a, str>, seed: bool },
    /// Ask for more neighbours in a swarm (rate-limited).
    SwarmMore { swarm: Cow<'a, str> },
    /// This peer now has all of a swarm's content.
    SwarmSeed { swarm: Cow<'a, str> },
    /// Leave a swarm.
    SwarmLeave { swarm: Cow<'a, str> },
    /// A neighbour sent bytes that failed verification (counted; the two are not introduced
    /// again).
    SwarmBad {
        swarm: Cow<'a, str>,
        id: Cow<'a, str>,
    },
    /// Bytes of a swarm's content this client got or gave since its last such report, for the
    /// server's metrics (optional; no answer).
    SwarmBytes {
        swarm: Cow<'a, str>,
        bytes: SwarmBytes,
    },
}

/// The flat shape every client frame is read into before it is validated.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    v: Option<u32>,
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    meta: Option<&'a RawValue>,
    #[serde(default, borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    swarm: Option<Cow<'a, str>>,
    #[serde(default)]
    seed: Option<bool>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    http: Option<u64>,
    #[serde(default)]
    p2p: Option<u64>,
    #[serde(default)]
    up: Option<u64>,
    #[serde(default)]
    last: Option<u64>,
    #[serde(default)]
    acks: Option<bool>,
    #[serde(default)]
    n: Option<u64>,
}

impl<'a> ClientMsg<'a> {
    /// Parses and validates one text frame. Unknown fields are ignored (forward
    /// compatibility); unknown types, missing or malformed fields are errors.
    pub fn decode(text: &'a str) -> Result<Self, DecodeError> {
        let env: Envelope<'a> = serde_json::from_str(text).map_err(|e| {
            let msg = if e.is_data() {
                format!("frame is not a valid message object: {e}")
            } else {
                format!("frame is not valid JSON: {e}")
            };
            let code = if e.is_data() {
                ErrorCode::BadMessage
            } else {
                ErrorCode::BadJson
            };
            DecodeError::new(code, msg)
        })?;
        match &*env.ty {
            "hello" => {
                let v = env.v.ok_or_else(|| DecodeError::missing("hello", "v"))?;
                if let Some(t) = &env.token
                    && (t.is_empty() || t.len() > MAX_TOKEN_BYTES)
                {
                    return Err(DecodeError::new(
                        ErrorCode::BadToken,
                        "token has an invalid length",
                    ));
                }
                Ok(ClientMsg::Hello {
                    v,
                    token: env.token,
                    last: env.last,
                    acks: env.acks.unwrap_or(false),
                })
            }
            "ack" => Ok(ClientMsg::Ack {
                n: env.n.ok_or_else(|| DecodeError::missing("ack", "n"))?,
            }),
            "join" => {
                let room = env
                    .room
                    .ok_or_else(|| DecodeError::missing("join", "room"))?;
                validate_room(&room)?;
                if let Some(meta) = env.meta {
                    if meta.get().len() > MAX_META_BYTES {
                        return Err(DecodeError::new(
                            ErrorCode::BadMessage,
                            format!("meta is larger than {MAX_META_BYTES} bytes"),
                        ));
                    }
                    if !is_object(meta) && meta.get() != "null" {
                        return Err(DecodeError::new(
                            ErrorCode::BadMessage,
                            "meta must be an object",
                        ));
                    }
                }
                let meta = env.meta.filter(|m| m.get() != "null");
                Ok(ClientMsg::Join { room, meta })
            }
            "leave" => {
                let room = env
                    .room
                    .ok_or_else(|| DecodeError::missing("leave", "room"))?;
                validate_room(&room)?;
                Ok(ClientMsg::Leave { room })
            }
            "signal" => {
                let to = env.to.ok_or_else(|| DecodeError::missing("signal", "to"))?;
                if to.is_empty() || to.len() > MAX_PEER_ID_BYTES {
                    return Err(DecodeError::new(
                        ErrorCode::UnknownPeer,
                        "no such peer in your rooms",
                    ));
                }
                let data = env
                    .data
                    .ok_or_else(|| DecodeError::missing("signal", "data"))?;
                if !is_object(data) {
                    return Err(DecodeError::new(
                        ErrorCode::BadMessage,
                        "signal data must be an object",
                    ));
                }
                Ok(ClientMsg::Signal { to, data })
            }
            "ping" => Ok(ClientMsg::Ping { data: env.data }),
            "report" => Report::decode(text).map(ClientMsg::Report),
            "swarm-join" | "swarm-more" | "swarm-seed" | "swarm-leave" | "swarm-bad"
            | "swarm-bytes" => {
                let ty = env.ty.clone();
                let swarm = env
                    .swarm
                    .ok_or_else(|| DecodeError::missing(&ty, "swarm"))?;
                validate_swarm(&swarm)?;
                Ok(match &*ty {
                    "swarm-join" => ClientMsg::SwarmJoin {
                        swarm,
                        seed: env.seed.unwrap_or(false),
                    },
                    "swarm-more" => ClientMsg::SwarmMore { swarm },
                    "swarm-seed" => ClientMsg::SwarmSeed { swarm },
                    "swarm-leave" => ClientMsg::SwarmLeave { swarm },
                    "swarm-bytes" => {
                        let field = |v: Option<u64>, name: &str| {
                            let n = v.ok_or_else(|| DecodeError::missing(&ty, name))?;
                            if n > MAX_SWARM_REPORT_BYTES {
                                return Err(DecodeError::new(
                                    ErrorCode::BadMessage,
                                    format!(
                                        "swarm-bytes {name} is more than {MAX_SWARM_REPORT_BYTES} bytes"
                                    ),
                                ));
                            }
                            Ok(n)
                        };
                        let bytes = SwarmBytes {
                            http: field(env.http, "http")?,
                            p2p: field(env.p2p, "p2p")?,
                            up: field(env.up, "up")?,
                        };
                        ClientMsg::SwarmBytes { swarm, bytes }
                    }
                    _ => {
                        let id = env.id.ok_or_else(|| DecodeError::missing(&ty, "id"))?;
                        if id.is_empty() || id.len() > MAX_PEER_ID_BYTES {
                            return Err(DecodeError::new(
                                ErrorCode::UnknownPeer,
                                "no such neighbour in that swarm",
                            ));
                        }
                        ClientMsg::SwarmBad { swarm, id }
                    }
                })
            }
            other => {
                let shown: String = other.chars().take(32).collect();
                Err(DecodeError::new(
                    ErrorCode::UnknownType,
                    format!("unknown message type {shown:?}"),
                ))
            }
        }
    }
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

/// Checks a room name: 1 to [`MAX_ROOM_NAME_BYTES`] bytes, no control characters, no
/// surrounding white space.
pub fn validate_room(room: &str) -> Result<(), DecodeError> {
    let bad = |why: &str| {
        Err(DecodeError::new(
            ErrorCode::InvalidRoom,
            format!("room name {why}"),
        ))
    };
    if room.is_empty() {
        return bad("is empty");
    }
    if room.len() > MAX_ROOM_NAME_BYTES {
        return bad(&format!("is longer than {MAX_ROOM_NAME_BYTES} bytes"));
    }
    if room.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    if room.trim() != room {
        return bad("starts or ends with white space");
    }
    Ok(())
}

/// A frame the client sent that cannot be acted on; it becomes an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// True for an error in a `report` frame's fields (its messages start `report:`).
    pub fn is_about_report(&self) -> bool {
        self.message.starts_with(report::ERROR_PREFIX)
    }

    fn missing(ty: &str, field: &str) -> Self {
        Self::new(
            ErrorCode::BadMessage,
            format!("{ty} needs a {field:?} field"),
        )
    }
}

/// Stable error codes of `error` frames. The string forms are part of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not JSON.
    BadJson,
    /// The frame is JSON but not a message of its type (missing or ill-typed field).
    BadMessage,
    /// The `type` is not one this server knows.
    UnknownType,
    /// Binary frames are not part of the protocol.
    BinaryUnsupported,
    /// `hello` asked for a version this server does not speak.
    UnsupportedVersion,
    /// A message other than `hello` came before `hello`.
    HelloRequired,
    /// A second `hello` on the same connection.
    AlreadyHello,
    /// The resume token is malformed.
    BadToken,
    /// The room name breaks the naming rules.
    InvalidRoom,
    /// The room holds its maximum number of peers.
    RoomFull,
    /// This connection is in its maximum number of rooms.
    TooManyRooms,
    /// The server holds its maximum number of rooms.
    ServerFull,
    /// `leave` for a room the connection is not in.
    NotInRoom,
    /// `signal` to a peer that shares no room with the sender (or does not exist).
    UnknownPeer,
    /// The connection sends faster than its message rate; the frame was dropped.
    RateLimited,
    /// The connection's access token does not allow this room.
    Forbidden,
    /// The server requires an access token and the connection's is missing, forged or
    /// expired (sent before the connection is closed with 4401).
    Unauthorized,
    /// A swarm id that is not a content id.
    InvalidSwarm,
    /// The swarm holds its maximum number of peers.
    SwarmFull,
    /// This connection is in its maximum number of swarms.
    TooManySwarms,
    /// A swarm message for a swarm the connection is not in.
    NotInSwarm,
    /// The servers' shared state (the cluster bus) is unreachable for now: try again.
    Unavailable,
    /// The peer has its maximum of signals it has not acknowledged: try again later.
    InboxFull,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::BadJson,
        ErrorCode::BadMessage,
        ErrorCode::UnknownType,
        ErrorCode::BinaryUnsupported,
        ErrorCode::UnsupportedVersion,
        ErrorCode::HelloRequired,
        ErrorCode::AlreadyHello,
        ErrorCode::BadToken,
        ErrorCode::InvalidRoom,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRooms,
        ErrorCode::ServerFull,
        ErrorCode::NotInRoom,
        ErrorCode::UnknownPeer,
        ErrorCode::RateLimited,
        ErrorCode::Forbidden,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidSwarm,
        ErrorCode::SwarmFull,
        ErrorCode::TooManySwarms,
        ErrorCode::NotInSwarm,
        ErrorCode::Unavailable,
        ErrorCode::InboxFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad-json",
            ErrorCode::BadMessage => "bad-message",
            ErrorCode::UnknownType => "unknown-type",
            ErrorCode::BinaryUnsupported => "binary-unsupported",
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::HelloRequired => "hello-required",
            ErrorCode::AlreadyHello => "already-hello",
            ErrorCode::BadToken => "bad-token",
            ErrorCode::InvalidRoom => "invalid-room",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::TooManyRooms => "too-many-rooms",
            ErrorCode::ServerFull => "server-full",
            ErrorCode::NotInRoom => "not-in-room",
            ErrorCode::UnknownPeer => "unknown-peer",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidSwarm => "invalid-swarm",
            ErrorCode::SwarmFull => "swarm-full",
            ErrorCode::TooManySwarms => "too-many-swarms",
            ErrorCode::NotInSwarm => "not-in-swarm",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::InboxFull => "inbox-full",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// WebSocket close codes the server uses. Part of the protocol.
pub mod close {
    /// Normal closure (the client said goodbye).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down; reconnect later.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame exceeded the frame size limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Too many protocol errors on this connection.
    pub const PROTOCOL_ERRORS: u16 = 4400;
    /// No frame (nor pong) within the idle timeout.
    pub const IDLE_TIMEOUT: u16 = 4408;
    /// Another connection resumed this session.
    pub const REPLACED: u16 = 4409;
    /// The connection kept sending far above its message rate.
    pub const RATE_LIMITED: u16 = 4429;
    /// The server requires an access token: missing, forged or expired (reconnect with a
    /// fresh one; the session is held for the resume grace).
    pub const UNAUTHORIZED: u16 = 4401;
    /// The connection did not read its frames fast enough; its send queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4430;
    /// The server (or this client address) holds its maximum number of connections.
    pub const SERVER_FULL: u16 = 4503;
    /// The servers' shared state is unreachable for now: reconnect (to any node) shortly.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// The limits a server enforces, announced in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_peers_per_room: usize,
    pub max_rooms_per_conn: usize,
    pub max_msgs_per_sec: u32,
    pub idle_timeout_ms: u64,
    pub resume_grace_ms: u64,
    /// Swarms a connection may be in (a server that lists it speaks swarms).
    pub max_swarms_per_conn: usize,
}

/// A room member as others see it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PeerInfo<'a> {
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a RawValue>,
}

/// A message the server sends to a client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ServerMsg<'a> {
    /// Answer to `hello`: this connection's peer id and the token that resumes it.
    Welcome {
        v: u32,
        id: &'a str,
        token: &'a str,
        /// True when the session (its rooms) was still held from an earlier connection.
        resumed: bool,
        /// Rooms the session is in (non-empty only when resumed).
        rooms: &'a [&'a str],
        limits: Limits,
    },
    /// Answer to `join`: the other members.
    Joined {
        room: &'a str,
        peers: &'a [PeerInfo<'a>],
    },
    /// Answer to `leave`.
    Left { room: &'a str },
    /// Someone entered one of your rooms.
    PeerJoined { room: &'a str, peer: PeerInfo<'a> },
    /// Someone left one of your rooms (or their connection is gone past the resume grace).
    PeerLeft { room: &'a str, id: &'a str },
    /// A `signal` from another peer; `n` grows with each signal to this session (across its
    /// connections), for `ack` and `hello`'s `last`.
    Signal {
        from: &'a str,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        n: Option<u64>,
    },
    /// Answer to `ping`.
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    },
    /// A frame could not be acted on. The connection stays open.
    Error { code: ErrorCode, message: &'a str },
    /// Answer to `swarm-join`: the neighbours introduced (a resumed session re-joining gets
    /// the ones it has).
    SwarmJoined {
        swarm: &'a str,
        peers: &'a [SwarmPeer<'a>],
    },
    /// Answer to `swarm-more`: new neighbours, or none and when to ask again.
    SwarmPeers {
        swarm: &'a str,
        peers: &'a [SwarmPeer<'a>],
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_ms: Option<u64>,
    },
    /// A peer was introduced to you: expect its offer.
    SwarmPeer { swarm: &'a str, peer: SwarmPeer<'a> },
    /// A neighbour left the swarm (or was reported bad by you).
    SwarmPeerLeft { swarm: &'a str, id: &'a str },
    /// Answer to `swarm-leave`.
    SwarmLeft { swarm: &'a str },
}

impl ServerMsg<'_> {
    /// The JSON text of this message.
    pub fn encode(&self) -> String {
        // Serialising these types cannot fail: no maps with non-string keys, no floats.
        serde_json::to_string(self).unwrap_or_else(|_| String::from(r#"{"type":"error"}"#))
    }
}

mod client;
pub use client::{FrameError, Member, ServerFrame};

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn client_side_round_trips_with_the_server_side() {
        // What a native client encodes, the server decodes to the same message.
        let data = raw(r#"{"description":{"type":"offer","sdp":"v=0"}}"#);
        let text = ClientMsg::Signal {
            to: "p1".into(),
            data,
        }
        .encode();
        let ClientMsg::Signal { to, data: got } = ClientMsg::decode(&text).unwrap() else {
            panic!("not a signal: {text}");
        };
        assert_eq!((&*to, got.get()), ("p1", data.get()));
        assert_eq!(
            ClientMsg::Hello {
                v: 1,
                token: None,
                last: None,
                acks: false,
            }
            .encode(),
            r#"{"type":"hello","v":1}"#
        );
        // What the server encodes, a native client decodes.
        let peers = [PeerInfo {
            id: "b",
            meta: Some(raw(r#"{"n":1}"#)),
        }];
        let frame = ServerMsg::Joined {
            room: "r",
            peers: &peers,
        }
        .encode();
        let ServerFrame::Joined { room, peers } = ServerFrame::decode(&frame).unwrap() else {
            panic!("{frame}");
        };
        assert_eq!(room, "r");
        assert_eq!(peers[0].id, "b");
        assert_eq!(peers[0].meta.as_ref().unwrap().get(), r#"{"n":1}"#);
        let frame = ServerMsg::Error {
            code: ErrorCode::RoomFull,
            message: "full",
        }
        .encode();
        assert!(matches!(ServerFrame::decode(&frame).unwrap(),
            ServerFrame::Error { code, .. } if code == "room-full"));
        assert!(matches!(
            ServerFrame::decode(r#"{"type":"from-the-future","x":1}"#).unwrap(),
            ServerFrame::Unknown
        ));
        assert!(ServerFrame::decode("{nope").is_err());
        assert!(matches!(
            ServerFrame::decode(r#"{"type":"signal","from":"x"}"#),
            Err(FrameError::Missing { field: "data", .. })
        ));
    }

    #[test]
    fn decodes_every_client_type() {
        assert!(matches!(
            ClientMsg::decode(r#"{"type":"hello","v":1}"#).unwrap(),
            ClientMsg::Hello {
                v: 1,
                token: None,
                last: None,
                acks: false
            }
        ));
        assert!(matches!(
            ClientMsg::decode(r#"{"type":"hello","v":1,"token":"abc"}"#).unwrap(),
            ClientMsg::Hello { v: 1, token: Some(t), .. } if t == "abc"
        ));
        let ClientMsg::Join { room, meta } =
            ClientMsg::decode(r#"{"type":"join","room":"a b","meta":{"n":1}}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((&*room, meta.unwrap().get()), ("a b", r#"{"n":1}"#));
        assert!(matches!(
            ClientMsg::decode(r#"{"type":"leave","room":"x"}"#).unwrap(),
            ClientMsg::Leave { room } if room == "x"
        ));
        let ClientMsg::Signal { to, data } =
            ClientMsg::decode(r#"{"type":"signal","to":"p1","data":{"sdp":{"type":"offer"}}}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!((&*to, data.get()), ("p1", r#"{"sdp":{"type":"offer"}}"#));
        assert!(matches!(
            ClientMsg::decode(r#"{"type":"ping"}"#).unwrap(),
            ClientMsg::Ping { data: None }
        ));
    }

    #[test]
    fn swarm_messages_round_trip_and_bad_ids_are_refused() {
        let id = "ab".repeat(32);
        for text in [
            format!(r#"{{"type":"swarm-join","swarm":"{id}","seed":true}}"#),
            format!(r#"{{"type":"swarm-more","swarm":"{id}"}}"#),
            format!(r#"{{"type":"swarm-seed","swarm":"{id}"}}"#),
            format!(r#"{{"type":"swarm-leave","swarm":"{id}"}}"#),
            format!(r#"{{"type":"swarm-bad","swarm":"{id}","id":"p1"}}"#),
            format!(
                r#"{{"type":"swarm-bytes","swarm":"{id}","http":1,"p2p":0,"up":1099511627776}}"#
            ),
        ] {
            let msg = ClientMsg::decode(&text).unwrap();
            assert_eq!(
                msg.encode(),
                text,
                "a native client sends what the server reads"
            );
        }
        assert!(matches!(
            ClientMsg::decode(&format!(r#"{{"type":"swarm-join","swarm":"{id}"}}"#)).unwrap(),
            ClientMsg::SwarmJoin { seed: false, .. }
        ));
        for bad in [
            "",
            "AB",
            &"AB".repeat(32),
            &"ab".repeat(33),
            &"zz".repeat(32),
        ] {
            let e = ClientMsg::decode(&format!(r#"{{"type":"swarm-more","swarm":"{bad}"}}"#))
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidSwarm, "{bad:?}");
        }
        let e = ClientMsg::decode(r#"{"type":"swarm-join"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadMessage);
        let e =
            ClientMsg::decode(&format!(r#"{{"type":"swarm-bad","swarm":"{id}"}}"#)).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadMessage);
        // A report needs every source, each at most MAX_SWARM_REPORT_BYTES.
        for bad in [
            format!(r#"{{"type":"swarm-bytes","swarm":"{id}","http":1,"p2p":2}}"#),
            format!(
                r#"{{"type":"swarm-bytes","swarm":"{id}","http":1,"p2p":2,"up":1099511627777}}"#
            ),
            format!(r#"{{"type":"swarm-bytes","swarm":"{id}","http":-1,"p2p":2,"up":3}}"#),
        ] {
            let e = ClientMsg::decode(&bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadMessage, "{bad}");
        }
        // What the server sends, a native client reads.
        let peers = [
            SwarmPeer {
                id: "a",
                seed: true,
            },
            SwarmPeer {
                id: "b",
                seed: false,
            },
        ];
        let frame = ServerMsg::SwarmJoined {
            swarm: &id,
            peers: &peers,
        }
        .encode();
        assert_eq!(
            frame,
            format!(
                r#"{{"type":"swarm-joined","swarm":"{id}","peers":[{{"id":"a","seed":true}},{{"id":"b","seed":false}}]}}"#
            )
        );
        let ServerFrame::SwarmJoined { peers: got, .. } = ServerFrame::decode(&frame).unwrap()
        else {
            panic!("{frame}")
        };
        assert_eq!(
            got[0],
            SwarmMember {
                id: "a".into(),
                seed: true
            }
        );
        let frame = ServerMsg::SwarmPeers {
            swarm: &id,
            peers: &[],
            retry_ms: Some(1500),
        }
        .encode();
        assert!(matches!(
            ServerFrame::decode(&frame).unwrap(),
            ServerFrame::SwarmPeers { retry_ms: Some(1500), ref peers, .. } if peers.is_empty()
        ));
        let frame = ServerMsg::SwarmPeer {
            swarm: &id,
            peer: peers[1],
        }
        .encode();
        assert!(matches!(
            ServerFrame::decode(&frame).unwrap(),
            ServerFrame::SwarmPeer {
                peer: SwarmMember { seed: false, .. },
                ..
            }
        ));
        let frame = ServerMsg::SwarmPeerLeft {
            swarm: &id,
            id: "a",
        }
        .encode();
        assert!(matches!(
            ServerFrame::decode(&frame).unwrap(),
            ServerFrame::SwarmPeerLeft { id, .. } if id == "a"
        ));
        let frame = ServerMsg::SwarmLeft { swarm: &id }.encode();
        assert!(matches!(
            ServerFrame::decode(&frame).unwrap(),
            ServerFrame::SwarmLeft { .. }
        ));
    }

    #[test]
    fn escaped_strings_decode() {
        let msg = ClientMsg::decode(r#"{"type":"join","room":"caf\u00e9 \"1\""}"#).unwrap();
        assert!(matches!(msg, ClientMsg::Join { room, meta: None } if room == "café \"1\""));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let msg = ClientMsg::decode(r#"{"type":"leave","room":"x","future":[1,2]}"#).unwrap();
        assert!(matches!(msg, ClientMsg::Leave { room } if room == "x"));
    }

    #[test]
    fn rejections_carry_stable_codes() {
        let code = |s: &str| ClientMsg::decode(s).unwrap_err().code;
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code(""), ErrorCode::BadJson);
        assert_eq!(code("[1]"), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"room":"x"}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":"fly"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"hello"}"#), ErrorCode::BadMessage);
        assert_eq!(
            code(r#"{"type":"hello","v":1,"token":""}"#),
            ErrorCode::BadToken
        );
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadMessage);
        assert_eq!(code(r#"{"type":"join","room":""}"#), ErrorCode::InvalidRoom);
        assert_eq!(
            code(r#"{"type":"join","room":" x"}"#),
            ErrorCode::InvalidRoom
        );
        assert_eq!(
            code(r#"{"type":"join","room":"a\nb"}"#),
            ErrorCode::InvalidRoom
        );
        let long = format!(r#"{{"type":"join","room":"{}"}}"#, "r".repeat(65));
        assert_eq!(code(&long), ErrorCode::InvalidRoom);
        assert_eq!(
            code(r#"{"type":"join","room":"x","meta":3}"#),
            ErrorCode::BadMessage
        );
        let big = format!(
            r#"{{"type":"join","room":"x","meta":{{"a":"{}"}}}}"#,
            "m".repeat(1100)
        );
        assert_eq!(code(&big), ErrorCode::BadMessage);
        assert_eq!(
            code(r#"{"type":"signal","to":"p","data":"x"}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(r#"{"type":"signal","data":{}}"#),
            ErrorCode::BadMessage
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"","data":{}}"#),
            ErrorCode::UnknownPeer
        );
    }

    #[test]
    fn unknown_type_message_is_bounded() {
        let long = format!(r#"{{"type":"{}"}}"#, "z".repeat(5000));
        assert!(ClientMsg::decode(&long).unwrap_err().message.len() < 64);
    }

    #[test]
    fn server_frames_snapshot() {
        let limits = Limits {
            max_frame_bytes: 65536,
            max_peers_per_room: 64,
            max_rooms_per_conn: 8,
            max_msgs_per_sec: 50,
            idle_timeout_ms: 60000,
            resume_grace_ms: 20000,
            max_swarms_per_conn: 16,
        };
        assert_eq!(
            ServerMsg::Welcome {
                v: 1,
                id: "p1",
                token: "t",
                resumed: false,
                rooms: &[],
                limits
            }
            .encode(),
            r#"{"type":"welcome","v":1,"id":"p1","token":"t","resumed":false,"rooms":[],"limits":{"max_frame_bytes":65536,"max_peers_per_room":64,"max_rooms_per_conn":8,"max_msgs_per_sec":50,"idle_timeout_ms":60000,"resume_grace_ms":20000,"max_swarms_per_conn":16}}"#
        );
        let meta = raw(r#"{"name":"ada"}"#);
        let peers = [
            PeerInfo {
                id: "a",
                meta: Some(meta),
            },
            PeerInfo {
                id: "b",
                meta: None,
            },
        ];
        assert_eq!(
            ServerMsg::Joined {
                room: "r",
                peers: &peers
            }
            .encode(),
            r#"{"type":"joined","room":"r","peers":[{"id":"a","meta":{"name":"ada"}},{"id":"b"}]}"#
        );
        assert_eq!(
            ServerMsg::PeerJoined {
                room: "r",
                peer: peers[1]
            }
            .encode(),
            r#"{"type":"peer-joined","room":"r","peer":{"id":"b"}}"#
        );
        assert_eq!(
            ServerMsg::PeerLeft { room: "r", id: "b" }.encode(),
            r#"{"type":"peer-left","room":"r","id":"b"}"#
        );
        assert_eq!(
            ServerMsg::Signal {
                from: "a",
                data: raw(r#"{"candidate":null}"#),
                n: None,
            }
            .encode(),
            r#"{"type":"signal","from":"a","data":{"candidate":null}}"#
        );
        assert_eq!(
            ServerMsg::Signal {
                from: "a",
                data: raw(r#"{}"#),
                n: Some(7),
            }
            .encode(),
            r#"{"type":"signal","from":"a","data":{},"n":7}"#
        );
        assert_eq!(
            ServerMsg::Pong { data: None }.encode(),
            r#"{"type":"pong"}"#
        );
        assert_eq!(
            ServerMsg::Error {
                code: ErrorCode::RoomFull,
                message: "room is full"
            }
            .encode(),
            r#"{"type":"error","code":"room-full","message":"room is full"}"#
        );
    }

    #[test]
    fn signal_data_round_trips_unchanged() {
        // The server is blind: data leaves exactly as it came, whatever its content.
        for data in [
            r#"{}"#,
            r#"{"sdp":{"type":"answer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}}"#,
            r#"{"x":[1,2.5e10,-0,"\u0000\ud83d\ude00"],"y":{"z":null}}"#,
        ] {
            let frame = format!(r#"{{"type":"signal","to":"p","data":{data}}}"#);
            let ClientMsg::Signal { data: got, .. } = ClientMsg::decode(&frame).unwrap() else {
                panic!()
            };
            assert_eq!(got.get(), data);
            let out = ServerMsg::Signal {
                from: "q",
                data: got,
                n: None,
            }
            .encode();
            assert_eq!(
                out,
                format!(r#"{{"type":"signal","from":"q","data":{data}}}"#)
            );
        }
    }

    #[test]
    fn error_codes_are_unique_strings() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
        }
    }
}
