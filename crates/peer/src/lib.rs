//! The native peerweb peer as a sans-IO state machine.
//!
//! A [`Client`] is one member of one room: it speaks signaling protocol v1 (the frames go
//! in and out as text; the caller owns the WebSocket) and holds one str0m [`Rtc`] per remote
//! peer, with the same rules as the browser SDK so the others cannot tell it from a browser:
//! the joiner offers, perfect negotiation (polite = our id sorts after theirs), a default
//! reliable channel negotiated out of band as `peerweb` on SCTP stream 0, trickle ICE both
//! ways, an ICE restart after [`RESTART_AFTER`] disconnected, made again (or its offer re-sent)
//! after [`RESTART_RETRY`] and longer while the path stays down, and re-sent offers after the
//! signaling connection comes back.
//!
//! Candidates are the caller's: it binds sockets and reports host, server-reflexive and
//! relayed addresses with [`Client::add_local_candidate`]. Packets go out as
//! [`Output::Transmit`] from a `source` address (a local socket, or a TURN allocation's
//! relayed address) and come in through [`Client::handle_receive`]. Time is passed in.
//!
//! ```
//! use std::time::Instant;
//! use peerweb_peer::{Client, Output, Settings};
//!
//! let now = Instant::now();
//! let mut client = Client::new(now, "lobby", Settings::default());
//! client.signaling_connected(now);
//! // The first frame is the protocol's hello; the caller writes it to the WebSocket.
//! let Output::Frame(hello) = client.poll_output(now) else { panic!() };
//! assert_eq!(hello, r#"{"type":"hello","v":1,"acks":true}"#);
//! ```
//!
//! [`Rtc`]: str0m::Rtc

mod peer;
mod report;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use peerweb_proto::SwarmBytes;
use peerweb_proto::{ClientMsg, Report, ServerFrame, VERSION};
use serde_json::value::RawValue;
pub use str0m::net::{Protocol, Receive};
pub use str0m::{Candidate, CandidateKind};

pub use peer::{
    DATA_WINDOW_RATE, DEFAULT_LABEL, MAX_CHANNELS, MAX_QUEUED, MAX_REMOTE_CANDIDATES,
    RESTART_AFTER, RESTART_RETRY, RESTART_RETRY_MAX, SILENT_AFTER, STR0M_MAX_WINDOW, WINDOW_RATE,
    window_for,
};
use peer::{Packet, Peer, Up};

/// Remote peers one client keeps at most; more are ignored (and reported).
pub const MAX_PEERS: usize = 64;
/// Keepalive period on the signaling connection (the SDK's value).
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// Signals received are acknowledged together, this long after the first unacknowledged one.
const ACK_AFTER: Duration = Duration::from_millis(250);
/// A peer the server says left while our connection to it is up is kept this long (or until
/// its channel closes or its path goes down): messages it sent just before leaving — an abort,
/// the last step of a handshake — are on their way on the direct path, which can be slower
/// than the server's word.
const LEAVE_LINGER: Duration = Duration::from_secs(1);

/// Tunables of a client.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Metadata shown to the other members (a JSON object), if any.
    pub meta: Option<String>,
    /// Bytes SCTP may hold unacknowledged per peer, at least: the send window starts here and
    /// follows the path's base RTT (the smallest seen on the current pair; × [`DATA_WINDOW_RATE`]
    /// on our data path, × [`WINDOW_RATE`] on str0m's) up to `max_send_window`.
    pub send_window: usize,
    /// The most the send window grows to on a long path (equal to `send_window`: fixed). On
    /// str0m's path (calls) at most [`STR0M_MAX_WINDOW`]: larger windows cost CPU in its SCTP.
    pub max_send_window: usize,
    /// Use only relayed local candidates (like `iceTransportPolicy: 'relay'`).
    pub relay_only: bool,
    /// Report how each peer connection fares to the server's connectivity metrics (the
    /// protocol's optional `report`: no addresses, no room names).
    pub report: bool,
    /// In a call: the media this client sends (it then receives media too, H.264 and Opus).
    /// `None`: data channels only, and media offered by others is declined.
    pub media: Option<Media>,
    /// Media goes to a peer only after [`Client::allow_media`] (a camera streams to viewers it
    /// verified, not to whoever joins its room). `false`: to every connected peer.
    pub gate_media: bool,
    /// Connect only to peers whose metadata has this `role` (a viewer connects to the camera,
    /// not to the other viewers, who learn nothing of it). `None`: to every peer in the room.
    pub only_role: Option<String>,
    /// With media: estimate each peer's bandwidth (str0m's TWCC/GCC, starting from this many
    /// bits per second) and pace what is sent to it; estimates come as
    /// [`Event::Bandwidth`]. `None`: no estimate, frames leave as written.
    pub bwe: Option<u64>,
    /// Be a member of the swarm named by the client's room (a content id) instead of a room:
    /// its members are the neighbours the server introduces (`Joined`, `PeerJoined` and
    /// `PeerLeft` as in a room). `Some(true)`: joined as a seed (with all of the content).
    pub swarm: Option<bool>,
    /// What carries data channels on a connection without media (a connection with media is
    /// always str0m's).
    pub data_path: DataPath,
    /// On our data path, a message received keeps its room in SCTP's receive window until
    /// [`Client::release`] says it was read: the window then bounds what waits for the
    /// application, and a slow reader slows the sender. `false`: the room is free once the
    /// message is an [`Event::Message`] (whoever drives the client then bounds its queue).
    pub hold_messages: bool,
}

/// The stack under a connection without media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPath {
    /// Our SCTP and DCEP on str0m's own ICE (`is`) and DTLS (`dimpl`): its cost per byte does
    /// not grow with the window (`crates/dataconn`).
    #[default]
    Own,
    /// str0m's whole stack (its SCTP is `sctp-proto`): kept for comparison.
    Str0m,
}

/// What a client in a call sends to every peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media {
    /// Audio, labelled `audio`: Opus, or G.711 ([`Client::set_audio_codec`]).
    pub audio: bool,
    /// H.264 video, labelled `camera`.
    pub video: bool,
}

impl Settings {
    /// Fixes the send window at `bytes` (it no longer follows the RTT).
    pub fn fix_window(&mut self, bytes: usize) {
        self.send_window = bytes;
        self.max_send_window = bytes;
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            meta: None,
            send_window: 128 * 1024,
            max_send_window: 16 * 1024 * 1024,
            relay_only: false,
            report: true,
            media: None,
            gate_media: false,
            only_role: None,
            bwe: None,
            swarm: None,
            data_path: DataPath::default(),
            hold_messages: false,
        }
    }
}

/// Options of an extra channel, as in `RTCDataChannelInit`.
#[derive(Debug, Clone, Copy)]
pub struct ChannelOptions {
    pub ordered: bool,
    pub max_retransmits: Option<u16>,
    pub max_packet_lifetime_ms: Option<u16>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            ordered: true,
            max_retransmits: None,
            max_packet_lifetime_ms: None,
        }
    }
}

/// A peer connection's state, as `RTCPeerConnection.connectionState` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    New,
    Connecting,
    Connected,
    Disconnected,
    Closed,
}

/// The path in use to a peer: candidate types of the selected pair and its round-trip time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// `host`, `srflx`, `prflx` or `relay`.
    pub local: &'static str,
    pub remote: &'static str,
    /// Transport of the local candidate (`udp` for a relayed one: peers reach it over UDP).
    pub protocol: &'static str,
    /// For a relayed local candidate, how we reach the TURN server (`udp`, `tcp`, `tls`),
    /// filled in by the driver that owns the allocation.
    pub relay_protocol: Option<&'static str>,
    pub local_addr: SocketAddr,
    pub remote_addr: SocketAddr,
    pub rtt: Option<Duration>,
}

impl Path {
    /// True when neither end is a relay.
    pub fn is_direct(&self) -> bool {
        self.local != "relay" && self.remote != "relay"
    }
}

/// A packet to send (`source`: a local socket address, or the relayed address of a TURN
/// allocation); the same type for both engines.
pub use peerweb_dataconn::Transmit;

/// Readies the DTLS crypto: aws-lc seeds its random generator from CPU jitter on first use
/// (32 ms here, against 54 µs for each certificate after), which the first connection's offer
/// or answer would otherwise wait for. Call it early and off any path that waits (a blocking
/// task started before signaling connects).
pub fn warm_up() {
    let _ = peerweb_dataconn::certificate();
}

/// What happened, for the application.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The server accepted us: our peer id (stable across reconnects).
    Welcome {
        id: String,
        resumed: bool,
    },
    /// We are in the room; these peers were already there.
    Joined {
        peers: Vec<String>,
    },
    PeerJoined {
        peer: String,
        meta: Option<String>,
    },
    PeerLeft {
        peer: String,
    },
    /// The default channel to `peer` is open: messages flow.
    Open {
        peer: String,
    },
    /// The remote opened a channel.
    Channel {
        peer: String,
        label: String,
    },
    ChannelClosed {
        peer: String,
        label: String,
    },
    Message {
        peer: String,
        label: String,
        binary: bool,
        data: Vec<u8>,
    },
    /// After a send returned `false`: half the send window (or room for that message) is
    /// free again, sends can go on (reported for every open channel of the peer).
    Writable {
        peer: String,
        label: String,
    },
    State {
        peer: String,
        state: PeerState,
    },
    Path {
        peer: String,
        path: Path,
    },
    /// A media line to `peer` is negotiated (`mid` names it in the peer's call state).
    Track {
        peer: String,
        mid: String,
        video: bool,
    },
    /// A media line with `peer` carries nothing either way: the remote refused one we offered,
    /// or offered one in codecs we do not take (we take H.264 in packetization mode 1 and
    /// Opus). Reported once per kind, in a call only.
    NoCodec {
        peer: String,
        mid: String,
        video: bool,
    },
    /// The bandwidth towards `peer` as its congestion controller estimates it now (with
    /// [`Settings::bwe`]), in bits per second.
    Bandwidth {
        peer: String,
        bps: u64,
    },
    /// `peer` asks for a keyframe on our video (a PLI or FIR: its decoder starts or lost the
    /// picture).
    KeyframeRequest {
        peer: String,
    },
    /// A frame from `peer` (in a call): H.264 Annex B or an Opus packet, with its RTP time
    /// (90 kHz for video, 48 kHz for audio).
    Media {
        peer: String,
        mid: String,
        video: bool,
        data: std::sync::Arc<[u8]>,
        rtp_time: u64,
        keyframe: bool,
    },
    /// An application's own signal from `peer` (`{"app": …}` in `signal.data`, see
    /// [`Client::signal_app`]): `data` is the JSON value of `app`. Not part of any peer
    /// connection: the camera's WHEP bridge carries its viewer token this way.
    AppSignal {
        peer: String,
        data: String,
    },
    /// Something went wrong that the application may want to show; the client goes on.
    Error {
        code: String,
        message: String,
    },
}

/// What the driver does next.
#[derive(Debug)]
pub enum Output {
    /// A text frame for the signaling WebSocket.
    Frame(String),
    Transmit(Transmit),
    Event(Event),
    /// Nothing more until this time (or new input).
    Timeout(Instant),
}

/// Misuse of the API or bad input from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no peer {0:?} in the room")]
    UnknownPeer(String),
    #[error("the peer is gone")]
    PeerGone,
    #[error("the channel is not open")]
    ChannelClosed,
    #[error("too many messages queued before the channel opened")]
    QueueFull,
    #[error("{DEFAULT_LABEL:?} is the default channel's label")]
    ReservedLabel,
    #[error("too many channels to one peer (limit {MAX_CHANNELS})")]
    TooManyChannels,
    #[error("bad signal from peer: {0}")]
    BadSignal(String),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("send failed: {0}")]
    Send(String),
}

/// One member of one room: signaling-client state and the peer connections.
#[derive(Debug)]
pub struct Client {
    room: String,
    settings: Settings,
    id: Option<String>,
    token: Option<String>,
    signaling_up: bool,
    /// The join went with the hello of a new session (not again at its welcome).
    join_sent: bool,
    peers: BTreeMap<String, Peer>,
    /// Between [`Client::begin_batch`] and [`Client::end_batch`]: peers that took datagrams
    /// and have not answered yet.
    batch: Option<Vec<String>>,
    local: Vec<Candidate>,
    out: VecDeque<Output>,
    next_ping: Option<Instant>,
    /// The position (`n`) of the last signal received in this session, and of the last one
    /// acknowledged; a signal at or before `last_n` is one a resumed connection sent again.
    last_n: Option<u64>,
    acked_n: Option<u64>,
    ack_at: Option<Instant>,
    /// How each relayed local address reaches its TURN server (`udp`, `tcp`, `tls`).
    relay_transports: HashMap<SocketAddr, &'static str>,
    /// Reports made while signaling was down, sent after the next welcome (bounded).
    reports: VecDeque<Report>,
    /// With [`Settings::only_role`]: the peers in the room that have it (at most a room's
    /// members).
    eligible: HashSet<String>,
    /// Peers that left the room with their connection up, and until when they are kept
    /// ([`LEAVE_LINGER`]).
    leaving: HashMap<String, Instant>,
    /// Members whose connection closed (the remote closed it: DTLS's close_notify as it
    /// leaves) before the server said they left: that word still gives `PeerLeft`.
    closed_members: HashSet<String>,
    /// See [`Client::set_h264_profile`]: per layer.
    h264_profile: [Option<u16>; LAYERS],
    /// See [`Client::set_audio_codec`].
    audio_codec: AudioCodec,
}

/// The audio a client sends: Opus (48 kHz; a call's), or G.711 μ-law or A-law (8 kHz; an IP
/// camera's, passed through).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AudioCodec {
    #[default]
    Opus,
    Pcmu,
    Pcma,
}

/// What [`Client::swarm`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwarmCmd {
    Seed,
    More,
    Bad(String),
    /// Bytes moved since the last report, for the server's metrics.
    Bytes(SwarmBytes),
}

/// Video layers a client can send (a camera's main and sub streams).
pub const LAYERS: usize = 2;

/// The largest app signal ([`Client::signal_app`]): well inside a signaling frame.
pub const MAX_APP_SIGNAL: usize = 16 * 1024;

/// The `app` value of a signal, if it is an app signal (not a description or candidate).
fn app_signal(data: &str) -> Option<String> {
    let fields: BTreeMap<String, &RawValue> = serde_json::from_str(data).ok()?;
    fields.get("app").map(|v| v.get().to_owned())
}

/// Reports kept while signaling is down; older ones are dropped.
const MAX_PENDING_REPORTS: usize = 32;

impl Client {
    pub fn new(_now: Instant, room: &str, settings: Settings) -> Self {
        Client {
            room: room.to_owned(),
            settings,
            id: None,
            token: None,
            signaling_up: false,
            join_sent: false,
            peers: BTreeMap::new(),
            batch: None,
            local: Vec::new(),
            out: VecDeque::new(),
            next_ping: None,
            last_n: None,
            acked_n: None,
            ack_at: None,
            relay_transports: HashMap::new(),
            reports: VecDeque::new(),
            eligible: HashSet::new(),
            leaving: HashMap::new(),
            closed_members: Default::default(),
            h264_profile: [None; LAYERS],
            audio_codec: AudioCodec::Opus,
        }
    }

    /// Our peer id, once the server said welcome.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The ids of the peers we know, in order.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.peers.keys().map(String::as_str)
    }

    pub fn peer_state(&self, peer: &str) -> Option<PeerState> {
        self.peers.get(peer).map(Peer::state)
    }

    /// The path in use to `peer`, with how a relayed one reaches its TURN server.
    pub fn path(&self, peer: &str) -> Option<Path> {
        let mut path = self.peers.get(peer)?.path.clone()?;
        path.relay_protocol = relay_protocol(&self.relay_transports, &path);
        Some(path)
    }

    /// Says how the TURN allocation whose relayed address is `relayed` reaches its server
    /// (`udp`, `tcp` or `tls`): paths through it are reported with it.
    pub fn set_relay_transport(&mut self, relayed: SocketAddr, transport: &'static str) {
        if self.relay_transports.len() >= MAX_PEERS {
            // Allocations come and go with networks: keep those still offered.
            let local = &self.local;
            self.relay_transports
                .retain(|a, _| local.iter().any(|c| c.addr() == *a));
        }
        self.relay_transports.insert(relayed, transport);
    }

    /// The send window to `peer` now (bytes; it follows the path's RTT).
    pub fn send_window(&self, peer: &str) -> Option<usize> {
        self.peers.get(peer).map(Peer::window)
    }

    pub fn is_open(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(Peer::is_open)
    }

    /// DTLS fingerprints (ours, theirs) of the connection to `peer`, as in SDP.
    pub fn fingerprints(&mut self, peer: &str) -> Option<(String, Option<String>)> {
        let p = self.peers.get_mut(peer)?;
        Some((p.local_fingerprint(), p.remote_fingerprint()))
    }

    /// A new WebSocket to the server is open: say hello (resuming our id if we had one).
    pub fn signaling_connected(&mut self, now: Instant) {
        self.connected(now, false);
    }

    /// A new WebSocket is open whose server took [`Client::url_frames`] from its URL: they
    /// are not sent again.
    pub fn signaling_connected_with_url_frames(&mut self, now: Instant) {
        self.connected(now, true);
    }

    /// The frames a new connection starts with, as a JSON array for the WebSocket's URL
    /// (`?frames=`: the server handles them before the socket's first frame, a round trip
    /// sooner), when they may go there: a new session's hello and join. None when resuming
    /// (a resume token stays out of URLs).
    pub fn url_frames(&self) -> Option<String> {
        if self.token.is_some() {
            return None;
        }
        Some(format!("[{}]", self.first_frames().join(",")))
    }

    fn connected(&mut self, now: Instant, taken: bool) {
        self.signaling_up = true;
        // Frames not taken before were for the old connection: the hello goes first.
        self.out.retain(|o| !matches!(o, Output::Frame(_)));
        let fresh = self.token.is_none();
        if !(taken && fresh) {
            for f in self.first_frames() {
                self.out.push_back(Output::Frame(f));
            }
        }
        // A new session joins at once (the server handles it after the hello, in order): a
        // round trip less before the first offer. A resumed one joins at its welcome.
        self.join_sent = fresh;
        self.ack_at = None;
        self.next_ping = Some(now + PING_EVERY);
    }

    /// Hello, and for a new session the join right behind it.
    fn first_frames(&self) -> Vec<String> {
        let token = self.token.as_deref();
        let last = self.last_n.filter(|_| token.is_some());
        let hello = ClientMsg::Hello {
            v: VERSION,
            token: token.map(Into::into),
            last,
            acks: true,
        };
        let mut frames = vec![hello.encode()];
        if token.is_none() {
            frames.push(self.join_frame());
        }
        frames
    }

    fn send_join(&mut self) {
        let f = self.join_frame();
        self.out.push_back(Output::Frame(f));
    }

    fn join_frame(&self) -> String {
        let meta = self.settings.meta.clone();
        let meta: Option<Box<RawValue>> = meta.and_then(|m| RawValue::from_string(m).ok());
        let room = self.room.as_str();
        match self.settings.swarm {
            Some(seed) => ClientMsg::SwarmJoin {
                swarm: room.into(),
                seed,
            }
            .encode(),
            None => ClientMsg::Join {
                room: room.into(),
                meta: meta.as_deref(),
            }
            .encode(),
        }
    }

    /// The WebSocket closed. Peer connections stay up; call `signaling_connected` on the
    /// next one.
    pub fn signaling_lost(&mut self, _now: Instant) {
        self.signaling_up = false;
        self.next_ping = None;
    }

    /// One text frame from the server.
    pub fn handle_frame(&mut self, now: Instant, text: &str) {
        let frame = match ServerFrame::decode(text) {
            Ok(f) => f,
            Err(e) => {
                return self.error("bad-frame", e.to_string());
            }
        };
        match frame {
            ServerFrame::Welcome {
                id, token, resumed, ..
            } => {
                self.id = Some(id.clone());
                self.token = Some(token);
                if !resumed {
                    // A new session: its signals are numbered afresh.
                    self.last_n = None;
                    self.acked_n = None;
                }
                self.event(Event::Welcome { id, resumed });
                // Joined again when resumed, like the SDK: `joined` lists who arrived while we
                // were away (their offers were refused, and no `peer-joined` was kept for
                // us), and we offer to them as a joiner does. (A new session's join went with
                // its hello.)
                if !std::mem::take(&mut self.join_sent) {
                    self.send_join();
                }
                for r in std::mem::take(&mut self.reports) {
                    self.frame(ClientMsg::Report(r));
                }
                // Offers may have been lost with the old connection.
                let signaling_up = self.signaling_up;
                for p in self.peers.values_mut() {
                    if signaling_up {
                        p.resync(now);
                    }
                }
                self.collect(now);
            }
            ServerFrame::SwarmJoined { swarm, peers }
            | ServerFrame::SwarmPeers { swarm, peers, .. }
                if swarm == self.room && self.settings.swarm.is_some() =>
            {
                self.joined(now, peers.into_iter().map(|m| m.id).collect());
            }
            ServerFrame::SwarmPeer { swarm, peer }
                if swarm == self.room
                    && self.settings.swarm.is_some()
                    && self.ensure_peer(now, &peer.id).is_some() =>
            {
                self.event(Event::PeerJoined {
                    peer: peer.id,
                    meta: None,
                });
            }
            ServerFrame::SwarmPeerLeft { swarm, id }
                if swarm == self.room && self.settings.swarm.is_some() =>
            {
                self.peer_left(now, &id);
            }
            ServerFrame::Joined { room, peers } if room == self.room => {
                for p in &peers {
                    self.note_role(&p.id, p.meta.as_deref());
                }
                self.joined(now, peers.into_iter().map(|m| m.id).collect());
            }
            ServerFrame::PeerJoined { room, peer } if room == self.room => {
                self.note_role(&peer.id, peer.meta.as_deref());
                let meta = peer.meta.map(|m| m.get().to_owned());
                if self.ensure_peer(now, &peer.id).is_some() {
                    self.event(Event::PeerJoined {
                        peer: peer.id,
                        meta,
                    });
                }
            }
            ServerFrame::PeerLeft { room, id } if room == self.room => {
                self.eligible.remove(&id);
                self.peer_left(now, &id);
            }
            ServerFrame::Signal { from, data, n } => {
                if let Some(n) = n {
                    if self.last_n.is_some_and(|last| n <= last) {
                        return;
                    }
                    self.last_n = Some(n);
                    self.ack_at.get_or_insert(now + ACK_AFTER);
                }
                if let Some(app) = app_signal(data.get()) {
                    self.event(Event::AppSignal {
                        peer: from,
                        data: app,
                    });
                    return;
                }
                let new_session = self
                    .peers
                    .get(&from)
                    .and_then(|p| p.new_session(data.get()));
                if let Some(kind) = new_session {
                    // A description under another certificate: the remote's session ended
                    // while we were away (or ours did), so its connection to us is gone though
                    // no `peer-left` reached us — nor can `welcome` or `peer-joined` tell, as
                    // a server restart looks the same while connections live. An offer makes
                    // the new connection; an answer (to an offer of our old one, which it
                    // took for a first offer) is dropped, and we offer afresh.
                    // A connection that never connected is one attempt going on with a new
                    // session: it is reported once, from when it began.
                    let attempt = self
                        .peers
                        .get_mut(&from)
                        .filter(|p| p.watch.connecting())
                        .map(|p| std::mem::replace(&mut p.watch, report::Watch::new(now)));
                    self.drop_peer(now, &from);
                    self.event(Event::PeerJoined {
                        peer: from.clone(),
                        meta: None,
                    });
                    if let (Some(w), Some(p)) = (attempt, self.ensure_peer(now, &from)) {
                        p.watch = w;
                    }
                    if kind == "answer" {
                        if let Some(p) = self.ensure_peer(now, &from) {
                            p.initiate(now);
                        }
                        self.collect(now);
                        return;
                    }
                }
                let Some(p) = self.ensure_peer(now, &from) else {
                    return;
                };
                if let Err(e) = p.handle_signal(now, data.get()) {
                    self.error("signal-failed", format!("from {from}: {e}"));
                }
                self.collect(now);
            }
            ServerFrame::Error { code, message } => self.error(&code, message),
            _ => {}
        }
    }

    /// A datagram (or framed TCP packet) arrived at `destination` (a local socket, or the
    /// relayed address of a TURN allocation) from `source`. Returns false if no peer
    /// claimed it.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> bool {
        let packet = Packet {
            proto,
            source,
            destination,
            contents,
        };
        let Some(p) = self.peers.values_mut().find(|p| p.accepts(now, &packet)) else {
            return false;
        };
        if let Some(batch) = self.batch.as_mut() {
            if p.feed(now, &packet) && !batch.contains(&p.id) {
                batch.push(p.id.clone());
            }
            return true;
        }
        p.handle_receive(now, &packet);
        self.collect(now);
        true
    }

    /// Datagrams read together follow: each peer answers once, after [`Client::end_batch`]
    /// (one SACK for all its packets on the data-only path; str0m's peers answer each at once).
    pub fn begin_batch(&mut self) {
        self.batch.get_or_insert_with(Vec::new);
    }

    /// The batch is over: the peers that took datagrams answer.
    pub fn end_batch(&mut self, now: Instant) {
        let Some(ids) = self.batch.take() else { return };
        for id in ids {
            if let Some(p) = self.peers.get_mut(&id) {
                p.answer(now);
            }
        }
        self.collect(now);
    }

    /// Time passes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let up = self.signaling_up;
        let mut reports = Vec::new();
        for p in self.peers.values_mut() {
            p.handle_timeout(now, up);
            reports.extend(p.watch.on_timeout(now, p.restarts));
        }
        for r in reports {
            self.report(r);
        }
        if let Some(t) = self.next_ping
            && now >= t
        {
            self.frame(ClientMsg::Ping { data: None });
            self.next_ping = Some(now + PING_EVERY);
        }
        if self.ack_at.is_some_and(|t| now >= t) {
            self.ack_at = None;
            if let Some(n) = self.last_n
                && self.signaling_up
                && self.acked_n != Some(n)
            {
                self.frame(ClientMsg::Ack { n });
                self.acked_n = Some(n);
            }
        }
        self.collect(now);
    }

    /// A local candidate (host socket, server-reflexive address, TURN allocation) for every
    /// peer, present and future. With `relay_only`, other kinds are dropped.
    pub fn add_local_candidate(&mut self, now: Instant, c: Candidate) {
        if self.settings.relay_only && c.kind() != CandidateKind::Relayed {
            return;
        }
        for p in self.peers.values_mut() {
            p.add_local_candidate(now, c.clone());
        }
        self.local.push(c);
        self.collect(now);
    }

    /// A local candidate that is gone (a TURN allocation lost with a NAT mapping, a
    /// server-reflexive address that changed): no peer uses it any more, and later peers do
    /// not get it. The next ICE restart offers what is left.
    pub fn remove_local_candidate(&mut self, now: Instant, c: &Candidate) {
        for p in self.peers.values_mut() {
            p.remove_local_candidate(c);
        }
        self.local.retain(|x| x != c);
        self.relay_transports.remove(&c.addr());
        self.collect(now);
    }

    /// Sends `data` (a JSON value, at most [`MAX_APP_SIGNAL`] bytes) to `peer` through the
    /// signaling server as `{"app": data}`: it arrives as an [`Event::AppSignal`], and never
    /// touches a peer connection. Lost, like any signal, when the socket is down.
    pub fn signal_app(&mut self, peer: &str, data: &str) -> Result<(), Error> {
        if data.len() > MAX_APP_SIGNAL {
            return Err(Error::BadSignal(format!(
                "an app signal is at most {MAX_APP_SIGNAL} bytes"
            )));
        }
        let value: Box<RawValue> = serde_json::from_str(data)
            .map_err(|e| Error::BadSignal(format!("an app signal is JSON: {e}")))?;
        let wrapped = format!(r#"{{"app":{}}}"#, value.get());
        let data = RawValue::from_string(wrapped)
            .map_err(|e| Error::BadSignal(format!("an app signal is JSON: {e}")))?;
        self.frame(ClientMsg::Signal {
            to: peer.into(),
            data: &data,
        });
        Ok(())
    }

    /// Sends on the default channel (queued, bounded, until it opens) or on `label`.
    /// `Ok(false)`: the send window is full; retry after [`Event::Writable`].
    pub fn send(
        &mut self,
        now: Instant,
        peer: &str,
        label: Option<&str>,
        binary: bool,
        data: &[u8],
    ) -> Result<bool, Error> {
        let p = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| Error::UnknownPeer(peer.into()))?;
        let r = p.send(now, label, binary, data);
        self.collect(now);
        r
    }

    /// Writes one frame (`video`: H.264 Annex B access unit; else an Opus packet) to every
    /// connected peer, at `rtp_time` (90 kHz video, 48 kHz audio). The bytes are shared, not
    /// copied per peer. Returns how many peers it went to.
    pub fn write_media(
        &mut self,
        now: Instant,
        video: bool,
        rtp_time: u64,
        data: &std::sync::Arc<[u8]>,
    ) -> usize {
        let mut n = 0;
        for p in self.peers.values_mut() {
            let profile = self.h264_profile[p.layer];
            let codec = self.audio_codec;
            n += usize::from(p.write_media(now, video, rtp_time, data, profile, codec));
        }
        self.collect(now);
        n
    }

    /// Writes one H.264 access unit of video layer `layer` (a camera's main stream is 0, its
    /// sub stream 1) to the connected peers that take that layer ([`Client::set_layer`]).
    /// Returns how many peers it went to.
    pub fn write_layer(
        &mut self,
        now: Instant,
        layer: usize,
        rtp_time: u64,
        data: &std::sync::Arc<[u8]>,
    ) -> usize {
        let Some(&profile) = self.h264_profile.get(layer) else {
            return 0;
        };
        let mut n = 0;
        for p in self.peers.values_mut().filter(|p| p.layer == layer) {
            n += usize::from(p.write_media(now, true, rtp_time, data, profile, AudioCodec::Opus));
        }
        self.collect(now);
        n
    }

    /// Which video layer `peer` gets from now on (0 until told; see [`Client::write_layer`]).
    /// False for an unknown peer or layer. Switch at a keyframe of the new layer: the peer's
    /// decoder needs one to go on.
    pub fn set_layer(&mut self, peer: &str, layer: usize) -> bool {
        match self.peers.get_mut(peer) {
            Some(p) if layer < LAYERS => {
                p.layer = layer;
                true
            }
            _ => false,
        }
    }

    /// The profile of the H.264 of `layer` (the first two bytes of its `profile-level-id`,
    /// from its SPS: 0x42e0, 0x4200, 0x4d00 or 0x6400): each peer gets it on the payload type
    /// declared with that profile, where it took one. `None`: the first H.264 type.
    pub fn set_h264_profile(&mut self, layer: usize, profile: Option<u16>) {
        if let Some(p) = self.h264_profile.get_mut(layer) {
            *p = profile;
        }
    }

    /// The codec of the audio written from now on (Opus unless told; its RTP time is 48 kHz,
    /// G.711's 8 kHz). Each peer gets it on the payload type it negotiated for that codec.
    pub fn set_audio_codec(&mut self, codec: AudioCodec) {
        self.audio_codec = codec;
    }

    /// With [`Settings::bwe`]: the rate `peer`'s traffic is kept at, padded if need be
    /// (`min`), and the rate its estimator probes towards (`desired`), in bits per second —
    /// a camera sending the sub stream asks for the main stream's rate, to learn when it fits.
    pub fn set_bitrate(&mut self, peer: &str, min: u64, desired: u64) -> bool {
        match self.peers.get_mut(peer) {
            Some(p) => {
                p.set_bitrate(min, desired);
                true
            }
            None => false,
        }
    }

    /// With [`Settings::gate_media`]: whether media goes to `peer` from now on (a peer that
    /// leaves and comes back starts refused again). Returns false for an unknown peer.
    pub fn allow_media(&mut self, peer: &str, allow: bool) -> bool {
        match self.peers.get_mut(peer) {
            Some(p) => {
                p.media_allowed = allow;
                true
            }
            None => false,
        }
    }

    /// Writes one frame to `peer` alone (a viewer's decoder primed with the frames since the
    /// last keyframe, before the live stream reaches it). Whether it went out.
    pub fn write_media_to(
        &mut self,
        now: Instant,
        peer: &str,
        video: bool,
        rtp_time: u64,
        data: &std::sync::Arc<[u8]>,
    ) -> bool {
        let profiles = self.h264_profile;
        let codec = self.audio_codec;
        let ok = self.peers.get_mut(peer).is_some_and(|p| {
            let profile = profiles[p.layer];
            p.write_media_to(now, video, rtp_time, data, profile, codec)
        });
        self.collect(now);
        ok
    }

    /// Our sending media lines to `peer`: (mid, label), for the call state.
    pub fn sending(&self, peer: &str) -> Vec<(String, &'static str)> {
        self.peers
            .get(peer)
            .map(|p| p.sending())
            .unwrap_or_default()
    }

    /// With [`Settings::hold_messages`]: `bytes` of the messages from `peer` were read (the
    /// lengths of their [`Event::Message`] data); their room in the receive window is free.
    pub fn release(&mut self, now: Instant, peer: &str, bytes: usize) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.release(now, bytes);
            self.collect(now);
        }
    }

    /// Bytes buffered (unacknowledged) on a channel to `peer`.
    pub fn buffered(&mut self, peer: &str, label: Option<&str>) -> usize {
        self.peers
            .get_mut(peer)
            .map(|p| p.buffered(label))
            .unwrap_or(0)
    }

    /// Opens an extra channel to `peer` (the remote gets [`Event::Channel`]).
    pub fn open_channel(
        &mut self,
        now: Instant,
        peer: &str,
        label: &str,
        opts: ChannelOptions,
    ) -> Result<(), Error> {
        let p = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| Error::UnknownPeer(peer.into()))?;
        let r = p.open_channel(now, label, opts);
        self.collect(now);
        r
    }

    /// Restarts ICE to `peer` now (e.g. after the driver saw the network change).
    pub fn restart_ice(&mut self, now: Instant, peer: &str) -> Result<(), Error> {
        let p = self
            .peers
            .get_mut(peer)
            .ok_or_else(|| Error::UnknownPeer(peer.into()))?;
        p.restart(now);
        self.collect(now);
        Ok(())
    }

    /// Whether this client is a swarm member (its room names a swarm).
    pub fn in_swarm(&self) -> bool {
        self.settings.swarm.is_some()
    }

    /// In a swarm: tells the server we now have all of the content (we are introduced as a
    /// seed), asks it for more neighbours, reports a neighbour whose bytes failed
    /// verification and drops it (the server never introduces the two again), or reports the
    /// bytes moved.
    pub fn swarm(&mut self, now: Instant, cmd: SwarmCmd) {
        if self.settings.swarm.is_none() {
            return;
        }
        let swarm = self.room.clone();
        match cmd {
            SwarmCmd::Seed => {
                self.settings.swarm = Some(true);
                self.frame(ClientMsg::SwarmSeed {
                    swarm: swarm.into(),
                });
            }
            SwarmCmd::More => self.frame(ClientMsg::SwarmMore {
                swarm: swarm.into(),
            }),
            SwarmCmd::Bad(peer) => {
                self.frame(ClientMsg::SwarmBad {
                    swarm: swarm.into(),
                    id: peer.as_str().into(),
                });
                self.drop_peer(now, &peer);
            }
            SwarmCmd::Bytes(bytes) => self.frame(ClientMsg::SwarmBytes {
                swarm: swarm.into(),
                bytes,
            }),
        }
        self.collect(now);
    }

    /// Leaves the room (or swarm): a `leave` frame and every peer connection closed.
    pub fn leave(&mut self, now: Instant) {
        let room = self.room.clone();
        if self.settings.swarm.is_some() {
            self.frame(ClientMsg::SwarmLeave { swarm: room.into() });
        } else {
            self.frame(ClientMsg::Leave { room: room.into() });
        }
        for p in self.peers.values_mut() {
            p.close(now);
        }
        self.collect(now);
        self.peers.clear();
    }

    /// The next thing to do. Call until it returns [`Output::Timeout`].
    #[must_use]
    pub fn poll_output(&mut self, now: Instant) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.next_timeout(now))
    }

    /// When [`Client::handle_timeout`] is next due (what `poll_output` returns once drained).
    pub fn next_timeout(&self, now: Instant) -> Instant {
        let mut t = self.next_ping.unwrap_or(now + Duration::from_secs(3600));
        if let Some(a) = self.ack_at {
            t = t.min(a);
        }
        for at in self.leaving.values() {
            t = t.min(*at);
        }
        for p in self.peers.values() {
            t = t.min(p.timeout());
            for at in [p.next_check(), p.watch.next_timeout()]
                .into_iter()
                .flatten()
            {
                t = t.min(at);
            }
        }
        t
    }

    /// We are in (the room, or the swarm with these new neighbours): the joiner offers to
    /// each; connections still alive from before are kept.
    fn joined(&mut self, now: Instant, ids: Vec<String>) {
        self.event(Event::Joined { peers: ids.clone() });
        for id in ids {
            if let Some(p) = self.ensure_peer(now, &id) {
                p.initiate(now);
            }
        }
        self.collect(now);
    }

    /// The server says `id` left: its connection is closed, at once or, while it is up, after
    /// what is on its way on it has come in ([`LEAVE_LINGER`]).
    fn peer_left(&mut self, now: Instant, id: &str) {
        match self.peers.get(id) {
            Some(p) if p.state() == PeerState::Connected && !p.channel_gone() => {
                self.leaving
                    .entry(id.to_owned())
                    .or_insert(now + LEAVE_LINGER);
            }
            _ => self.drop_peer(now, id),
        }
    }

    /// Peers kept after they left whose time is up, whose channel closed or whose path went
    /// down: closed now.
    fn close_left(&mut self, now: Instant) {
        if self.leaving.is_empty() {
            return;
        }
        let peers = &self.peers;
        let done: Vec<String> = self
            .leaving
            .iter()
            .filter(|(id, at)| {
                now >= **at
                    || peers
                        .get(*id)
                        .is_none_or(|p| p.state() != PeerState::Connected || p.channel_gone())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            if self.peers.contains_key(&id) {
                self.drop_peer(now, &id);
            } else {
                // Its connection closed meanwhile: it still left.
                self.leaving.remove(&id);
                self.event(Event::PeerLeft { peer: id });
            }
        }
    }

    /// Closes the connection to `id`, if any, and reports that it left.
    fn drop_peer(&mut self, now: Instant, id: &str) {
        self.leaving.remove(id);
        let closed_before = self.closed_members.remove(id);
        if let Some(mut p) = self.peers.remove(id) {
            p.close(now);
        } else if !closed_before {
            return;
        }
        self.event(Event::PeerLeft {
            peer: id.to_owned(),
        });
    }

    /// With [`Settings::only_role`], whether a member's metadata gives it that role.
    fn note_role(&mut self, id: &str, meta: Option<&RawValue>) {
        let Some(role) = &self.settings.only_role else {
            return;
        };
        let has = meta
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m.get()).ok())
            .is_some_and(|m| m.get("role").and_then(|r| r.as_str()) == Some(role.as_str()));
        if has {
            self.eligible.insert(id.to_owned());
        } else {
            self.eligible.remove(id);
        }
    }

    fn ensure_peer(&mut self, now: Instant, id: &str) -> Option<&mut Peer> {
        let me = self.id.as_deref()?;
        if id == me {
            return None;
        }
        if self.settings.only_role.is_some() && !self.eligible.contains(id) {
            return None;
        }
        // Back before its connection was closed: it keeps it.
        self.leaving.remove(id);
        if !self.peers.contains_key(id) {
            if self.peers.len() >= MAX_PEERS {
                self.error(
                    "too-many-peers",
                    format!("ignoring {id}: already {MAX_PEERS} peers"),
                );
                return None;
            }
            // Perfect negotiation roles, as the SDK assigns them.
            let polite = me > id;
            let mut p = Peer::new(now, id.to_owned(), polite, &self.settings);
            for c in &self.local {
                p.add_local_candidate(now, c.clone());
            }
            self.closed_members.remove(id);
            self.peers.insert(id.to_owned(), p);
        }
        self.peers.get_mut(id)
    }

    /// Moves what the peers produced into the output queue.
    fn collect(&mut self, now: Instant) {
        let mut gone = Vec::new();
        let mut reports = Vec::new();
        for (id, p) in &mut self.peers {
            while let Some(u) = p.up.pop_front() {
                match u {
                    Up::Signal(json) => {
                        if let Ok(data) = RawValue::from_string(json) {
                            let frame = ClientMsg::Signal {
                                to: id.as_str().into(),
                                data: &data,
                            }
                            .encode();
                            self.out.push_back(Output::Frame(frame));
                        }
                    }
                    Up::Transmit(t) => self.out.push_back(Output::Transmit(t)),
                    Up::Event(mut e) => {
                        let report = match &mut e {
                            Event::State { state, .. } => p.watch.on_state(now, *state, p.restarts),
                            Event::Path { path, .. } => {
                                path.relay_protocol = relay_protocol(&self.relay_transports, path);
                                p.watch.on_path(path)
                            }
                            _ => None,
                        };
                        reports.extend(report);
                        self.out.push_back(Output::Event(e));
                    }
                }
            }
            if p.closed {
                reports.extend(p.watch.on_closed(now, p.restarts));
                gone.push(id.clone());
            }
        }
        for id in gone {
            self.peers.remove(&id);
            self.closed_members.insert(id);
        }
        for r in reports {
            self.report(r);
        }
        self.close_left(now);
    }

    /// Sends a connectivity report (or keeps it for the next connection to the server).
    fn report(&mut self, r: Report) {
        if !self.settings.report {
            return;
        }
        if self.signaling_up && self.id.is_some() {
            self.frame(ClientMsg::Report(r));
        } else {
            if self.reports.len() >= MAX_PENDING_REPORTS {
                self.reports.pop_front();
            }
            self.reports.push_back(r);
        }
    }

    fn frame(&mut self, msg: ClientMsg<'_>) {
        self.out.push_back(Output::Frame(msg.encode()));
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn error(&mut self, code: &str, message: String) {
        self.event(Event::Error {
            code: code.to_owned(),
            message,
        });
    }
}

/// How the relayed local end of `path` reaches its TURN server, if it is one of ours.
fn relay_protocol(
    transports: &HashMap<SocketAddr, &'static str>,
    path: &Path,
) -> Option<&'static str> {
    (path.local == "relay")
        .then(|| transports.get(&path.local_addr).copied())
        .flatten()
}

#[cfg(test)]
mod tests;
