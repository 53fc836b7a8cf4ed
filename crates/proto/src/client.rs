//! The client's side of the protocol: what a native peer sends ([`ClientMsg::encode`]) and
//! reads ([`ServerFrame::decode`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ClientMsg, SwarmMember};

/// The wire shape of a client frame, for encoding (payloads stay raw JSON, byte for byte).
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum ClientWire<'a> {
    Hello {
        v: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last: Option<u64>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        acks: bool,
    },
    Ack {
        n: u64,
    },
    Join {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<&'a RawValue>,
    },
    Leave {
        room: &'a str,
    },
    Signal {
        to: &'a str,
        data: &'a RawValue,
    },
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    },
    SwarmJoin {
        swarm: &'a str,
        seed: bool,
    },
    SwarmMore {
        swarm: &'a str,
    },
    SwarmSeed {
        swarm: &'a str,
    },
    SwarmLeave {
        swarm: &'a str,
    },
    SwarmBad {
        swarm: &'a str,
        id: &'a str,
    },
    SwarmBytes {
        swarm: &'a str,
        http: u64,
        p2p: u64,
        up: u64,
    },
}

impl ClientMsg<'_> {
    /// The JSON text of this message, as a client sends it.
    pub fn encode(&self) -> String {
        let wire = match self {
            ClientMsg::Report(r) => return r.encode(),
            ClientMsg::Hello {
                v,
                token,
                last,
                acks,
            } => ClientWire::Hello {
                v: *v,
                token: token.as_deref(),
                last: *last,
                acks: *acks,
            },
            ClientMsg::Ack { n } => ClientWire::Ack { n: *n },
            ClientMsg::Join { room, meta } => ClientWire::Join { room, meta: *meta },
            ClientMsg::Leave { room } => ClientWire::Leave { room },
            ClientMsg::Signal { to, data } => ClientWire::Signal { to, data },
            ClientMsg::Ping { data } => ClientWire::Ping { data: *data },
            ClientMsg::SwarmJoin { swarm, seed } => ClientWire::SwarmJoin { swarm, seed: *seed },
            ClientMsg::SwarmMore { swarm } => ClientWire::SwarmMore { swarm },
            ClientMsg::SwarmSeed { swarm } => ClientWire::SwarmSeed { swarm },
            ClientMsg::SwarmLeave { swarm } => ClientWire::SwarmLeave { swarm },
            ClientMsg::SwarmBad { swarm, id } => ClientWire::SwarmBad { swarm, id },
            ClientMsg::SwarmBytes { swarm, bytes } => ClientWire::SwarmBytes {
                swarm,
                http: bytes.http,
                p2p: bytes.p2p,
                up: bytes.up,
            },
        };
        // Cannot fail: strings, integers and already-valid raw JSON only.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

/// A room member as a client reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub id: String,
    #[serde(default)]
    pub meta: Option<Box<RawValue>>,
}

/// A message from the server, as a client reads it (owned; unknown types are kept as
/// [`ServerFrame::Unknown`] so newer servers do not break older clients).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerFrame {
    Welcome {
        v: u32,
        id: String,
        token: String,
        resumed: bool,
        rooms: Vec<String>,
    },
    Joined {
        room: String,
        peers: Vec<Member>,
    },
    Left {
        room: String,
    },
    PeerJoined {
        room: String,
        peer: Member,
    },
    PeerLeft {
        room: String,
        id: String,
    },
    Signal {
        from: String,
        data: Box<RawValue>,
        /// Its position among the signals to this session (servers since the cluster bus).
        n: Option<u64>,
    },
    Pong {
        data: Option<Box<RawValue>>,
    },
    Error {
        /// The stable code (see [`ErrorCode::as_str`]); kept as text so codes added later
        /// still reach the caller.
        code: String,
        message: String,
    },
    SwarmJoined {
        swarm: String,
        peers: Vec<SwarmMember>,
    },
    SwarmPeers {
        swarm: String,
        peers: Vec<SwarmMember>,
        retry_ms: Option<u64>,
    },
    SwarmPeer {
        swarm: String,
        peer: SwarmMember,
    },
    SwarmPeerLeft {
        swarm: String,
        id: String,
    },
    SwarmLeft {
        swarm: String,
    },
    /// A type this client does not know (from a newer server); ignore it.
    Unknown,
}

/// The flat shape every server frame is read into (serde's tagged enums cannot carry raw
/// JSON values).
#[derive(Deserialize)]
struct ServerEnvelope {
    #[serde(rename = "type")]
    ty: String,
    v: Option<u32>,
    id: Option<String>,
    token: Option<String>,
    #[serde(default)]
    resumed: bool,
    #[serde(default)]
    rooms: Vec<String>,
    room: Option<String>,
    /// Room members or swarm neighbours, read once the type is known.
    peers: Option<Box<RawValue>>,
    peer: Option<Box<RawValue>>,
    swarm: Option<String>,
    retry_ms: Option<u64>,
    from: Option<String>,
    data: Option<Box<RawValue>>,
    n: Option<u64>,
    code: Option<String>,
    message: Option<String>,
}

/// A server frame that is not a valid message of its type.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("server frame is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("server {ty:?} frame lacks its {field:?} field")]
    Missing { ty: String, field: &'static str },
}

impl ServerFrame {
    /// Parses one text frame from the server.
    pub fn decode(text: &str) -> Result<Self, FrameError> {
        let e: ServerEnvelope = serde_json::from_str(text)?;
        let ty = e.ty;
        let need = |field: &'static str| FrameError::Missing {
            ty: ty.clone(),
            field,
        };
        fn parse<T: serde::de::DeserializeOwned>(raw: &RawValue) -> Result<T, FrameError> {
            Ok(serde_json::from_str(raw.get())?)
        }
        Ok(match ty.as_str() {
            "welcome" => ServerFrame::Welcome {
                v: e.v.ok_or_else(|| need("v"))?,
                id: e.id.ok_or_else(|| need("id"))?,
                token: e.token.ok_or_else(|| need("token"))?,
                resumed: e.resumed,
                rooms: e.rooms,
            },
            "joined" => ServerFrame::Joined {
                room: e.room.ok_or_else(|| need("room"))?,
                peers: parse(&e.peers.ok_or_else(|| need("peers"))?)?,
            },
            "left" => ServerFrame::Left {
                room: e.room.ok_or_else(|| need("room"))?,
            },
            "peer-joined" => ServerFrame::PeerJoined {
                room: e.room.ok_or_else(|| need("room"))?,
                peer: parse(&e.peer.ok_or_else(|| need("peer"))?)?,
            },
            "peer-left" => ServerFrame::PeerLeft {
                room: e.room.ok_or_else(|| need("room"))?,
                id: e.id.ok_or_else(|| need("id"))?,
            },
            "signal" => ServerFrame::Signal {
                from: e.from.ok_or_else(|| need("from"))?,
                data: e.data.ok_or_else(|| need("data"))?,
                n: e.n,
            },
            "pong" => ServerFrame::Pong { data: e.data },
            "swarm-joined" => ServerFrame::SwarmJoined {
                swarm: e.swarm.ok_or_else(|| need("swarm"))?,
                peers: parse(&e.peers.ok_or_else(|| need("peers"))?)?,
            },
            "swarm-peers" => ServerFrame::SwarmPeers {
                swarm: e.swarm.ok_or_else(|| need("swarm"))?,
                peers: parse(&e.peers.ok_or_else(|| need("peers"))?)?,
                retry_ms: e.retry_ms,
            },
            "swarm-peer" => ServerFrame::SwarmPeer {
                swarm: e.swarm.ok_or_else(|| need("swarm"))?,
                peer: parse(&e.peer.ok_or_else(|| need("peer"))?)?,
            },
            "swarm-peer-left" => ServerFrame::SwarmPeerLeft {
                swarm: e.swarm.ok_or_else(|| need("swarm"))?,
                id: e.id.ok_or_else(|| need("id"))?,
            },
            "swarm-left" => ServerFrame::SwarmLeft {
                swarm: e.swarm.ok_or_else(|| need("swarm"))?,
            },
            "error" => ServerFrame::Error {
                code: e.code.ok_or_else(|| need("code"))?,
                message: e.message.unwrap_or_default(),
            },
            _ => ServerFrame::Unknown,
        })
    }
}
