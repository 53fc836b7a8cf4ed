//! One remote peer: a str0m [`Rtc`] plus perfect negotiation, the default channel, the
//! message queue before it opens, ICE restart, and the path read from stats. Here: the peer's
//! state, packets and timers, ICE restarts and str0m's events; `negotiation` (offers, answers,
//! candidates), `channels` (data channels and the send window), `media` (call media), `sdp`
//! (the SDP and JSON text it reads and writes).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use str0m::bwe::{Bitrate, BweKind};
use str0m::channel::{ChannelConfig, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, CandidateKind, Event as RtcEvent, IceConnectionState, Rtc};

use crate::{
    AudioCodec, ChannelOptions, DataPath, Error, Event, Media, Path, PeerState, Settings, Transmit,
};

mod channels;
pub(crate) mod engine;
mod media;
mod negotiation;
mod sdp;

pub use channels::{DATA_WINDOW_RATE, STR0M_MAX_WINDOW, WINDOW_RATE, window_for};
use engine::{Chan, Engine, Happened, Out, Pending};
use sdp::{candidate_json, fingerprint, is_mdns};

/// Label and SCTP stream id of the default channel, as the browser SDK opens it.
pub const DEFAULT_LABEL: &str = "peerweb";
const DEFAULT_STREAM_ID: u16 = 0;
/// A connection disconnected this long gets an ICE restart (the SDK's value).
pub const RESTART_AFTER: Duration = Duration::from_secs(3);
/// A restart that has not brought the connection back after this long is made again (its
/// offer re-sent if still unanswered), the wait doubling up to [`RESTART_RETRY_MAX`]; the
/// SDK's values.
pub const RESTART_RETRY: Duration = Duration::from_secs(10);
pub const RESTART_RETRY_MAX: Duration = Duration::from_secs(60);
/// ICE checks are resent at most this far apart, and the path in use is checked this often.
const STUN_MAX_RTO: Duration = Duration::from_secs(1);
/// A connected path that has brought nothing in for this long is down (`Disconnected`, and
/// restarted after [`RESTART_AFTER`]) — what Chromium does. str0m's own verdict takes at
/// least 15 s: it counts a pair alive while the remote's last check is younger than that.
pub const SILENT_AFTER: Duration = Duration::from_secs(5);
/// Remote candidates accepted per peer; more are ignored.
pub const MAX_REMOTE_CANDIDATES: usize = 64;
/// Channels per peer.
pub const MAX_CHANNELS: usize = 64;
/// How often str0m reports stats: the path, its RTT, and so the send window, follow them.
/// A transfer starts with the smallest window until the first report.
const STATS_EVERY: Duration = Duration::from_millis(250);
/// Room str0m's buffer keeps beyond the largest send window, so that any message up to
/// SCTP's usual limit (256 KiB, str0m's and Chromium's) fits whenever the window admits it.
const MESSAGE_ROOM: usize = 256 * 1024;
/// Messages queued per peer before its default channel opens.
pub const MAX_QUEUED: usize = 1024;

pub(crate) fn default_channel() -> ChannelConfig {
    ChannelConfig {
        label: DEFAULT_LABEL.into(),
        ordered: true,
        reliability: Reliability::Reliable,
        negotiated: Some(DEFAULT_STREAM_ID),
        protocol: String::new(),
    }
}

/// What a peer hands up to the client: signal payloads for the remote, packets, events.
#[derive(Debug)]
pub(crate) enum Up {
    Signal(String),
    Transmit(Transmit),
    Event(Event),
}

pub(crate) struct Peer {
    pub id: String,
    /// str0m's `Rtc`, or (no media) our data-only connection.
    rtc: Engine,
    /// Which engine a fresh connection gets, and whether its messages hold their room in
    /// the receive window until released.
    data_path: DataPath,
    hold_messages: bool,
    polite: bool,
    /// Our offer awaiting an answer, and its SDP (re-sent when the remote may not have it).
    pending: Option<(Pending, String)>,
    /// The default channel, once created; `pending_default` while only in an unanswered offer.
    default: Option<Chan>,
    pending_default: Option<Chan>,
    /// Channels by id: label, and whether open.
    channels: HashMap<Chan, (String, bool)>,
    /// Whether a description (ours answered, or theirs accepted) has set up the session: the
    /// default channel is offered or created only before that.
    negotiated: bool,
    /// Whether this `Rtc` saw a first negotiation that did not complete (our first offer
    /// rolled back or its answer refused, or a first remote offer refused). str0m keeps
    /// what such an attempt allocated — the default channel's stream 0 — so the next
    /// attempt starts from a fresh `Rtc` (see [`Peer::fresh_rtc`]).
    dirty: bool,
    /// Whether the remote closed the default channel (a browser never does): sends on it fail.
    default_gone: bool,
    /// Our local candidates, for a fresh `Rtc`.
    local: Vec<Candidate>,
    /// Channels opened before the first negotiation: created once the default channel is,
    /// so that it comes first (str0m gives stream ids in creation order, and a channel
    /// created before the default could take its stream 0 — the DTLS client's first even
    /// id — leaving the default waiting for it forever).
    early: Vec<ChannelConfig>,
    queued: VecDeque<(bool, Vec<u8>)>,
    remote_kinds: HashMap<SocketAddr, CandidateKind>,
    local_kinds: HashMap<SocketAddr, (CandidateKind, Protocol)>,
    remote_count: usize,
    /// The mid of the bundled m-line, once an offer or answer named it.
    mid: Option<String>,
    ice: IceConnectionState,
    /// While the path is down: when to restart ICE (again).
    restart_at: Option<Instant>,
    /// When the last packet from this peer came in, and whether it has been silent since
    /// for longer than [`SILENT_AFTER`].
    last_recv: Instant,
    silent: bool,
    /// How long the next restart gets before it is made again.
    restart_delay: Duration,
    restart_wanted: bool,
    /// ICE restarts made (or offers re-sent) because the path was down.
    pub(crate) restarts: u32,
    /// What is reported of this connection to the server's connectivity metrics.
    pub(crate) watch: crate::report::Watch,
    /// The ICE ufrag of the remote's last description.
    remote_ufrag: Option<String>,
    /// The last remote offer we answered, and our answer. An impolite remote re-sends its
    /// offer when it ignores ours, though we may have answered it already: the copy gets the
    /// same answer again, and no new negotiation that would roll back an offer of ours made
    /// meanwhile (whose answer would then be taken for the answer to the next one).
    answered: Option<(String, String)>,
    /// The DTLS fingerprint of the remote's accepted descriptions (str0m reports its own
    /// only once DTLS is up).
    remote_cert: Option<String>,
    pub path: Option<Path>,
    connected: bool,
    pub closed: bool,
    timeout: Instant,
    /// Bytes SCTP may hold unacknowledged, over all channels: sized to the path's base RTT
    /// within `window_range` (see [`window_for`]).
    window: usize,
    window_range: (usize, usize),
    /// The rate the window is sized for (see [`window_for`]).
    window_rate: f64,
    /// The smallest RTT seen on the current path: its length without the queues our own
    /// sending builds (the RTT under load would grow the window, which grows the queues...).
    base_rtt: Option<Duration>,
    /// A send was refused for the window (the largest refused message): [`Event::Writable`]
    /// follows once half the window, or room for that message, is free.
    blocked: Option<usize>,
    /// In a call: what we send. Our sending media lines (kind, mid) once negotiated, and
    /// whether an offer of ours adding them awaits its answer.
    media: Option<Media>,
    send_mids: Vec<(MediaKind, Mid)>,
    /// Lines added by our offer awaiting its answer (str0m announces only lines a remote
    /// offer adds).
    offered_mids: Vec<(MediaKind, Mid)>,
    /// Media lines reported as carrying nothing ([`Event::NoCodec`]), one per kind at most:
    /// that kind is not offered again (the remote would only refuse it again).
    no_codec: Vec<(MediaKind, Mid)>,
    media_offered: bool,
    /// Whether [`Peer::write_media`] sends (see [`Settings::gate_media`]).
    pub media_allowed: bool,
    /// The video layer this peer gets ([`crate::Client::set_layer`]).
    pub layer: usize,
    /// The remote's first offer had no data channel: a player, not a peerweb client (see
    /// `missing_media`).
    media_only: bool,
    bwe: Option<u64>,
    pub up: VecDeque<Up>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("ice", &self.ice)
            .finish_non_exhaustive()
    }
}

impl Peer {
    pub fn new(now: Instant, id: String, polite: bool, settings: &Settings) -> Self {
        let data_path = settings.data_path;
        let rtc = new_engine(
            now,
            settings.max_send_window.max(settings.send_window),
            settings.media,
            settings.bwe,
            data_path,
            settings.hold_messages,
        );
        // str0m's SCTP costs more per byte the larger its window: it gets a smaller one.
        let (max, rate) = match rtc {
            Engine::Rtc(_) => (settings.max_send_window.min(STR0M_MAX_WINDOW), WINDOW_RATE),
            Engine::Data(_) => (settings.max_send_window, DATA_WINDOW_RATE),
        };
        let window_range = (settings.send_window, max.max(settings.send_window));
        Peer {
            id,
            rtc,
            window_rate: rate,
            data_path,
            hold_messages: settings.hold_messages,
            polite,
            pending: None,
            default: None,
            pending_default: None,
            channels: HashMap::new(),
            negotiated: false,
            dirty: false,
            default_gone: false,
            local: Vec::new(),
            early: Vec::new(),
            queued: VecDeque::new(),
            remote_kinds: HashMap::new(),
            local_kinds: HashMap::new(),
            remote_count: 0,
            mid: None,
            ice: IceConnectionState::New,
            restart_at: None,
            restart_delay: RESTART_RETRY,
            last_recv: now,
            silent: false,
            restart_wanted: false,
            restarts: 0,
            watch: crate::report::Watch::new(now),
            remote_ufrag: None,
            remote_cert: None,
            answered: None,
            path: None,
            connected: false,
            closed: false,
            timeout: now,
            window: settings.send_window,
            window_range,
            base_rtt: None,
            blocked: None,
            media: settings.media,
            send_mids: Vec::new(),
            offered_mids: Vec::new(),
            no_codec: Vec::new(),
            media_offered: false,
            media_allowed: !settings.gate_media,
            layer: 0,
            media_only: false,
            bwe: settings.bwe,
            up: VecDeque::new(),
        }
    }

    pub fn timeout(&self) -> Instant {
        self.timeout
    }

    /// When [`Peer::handle_timeout`] has a restart to make or a silence to notice.
    pub fn next_check(&self) -> Option<Instant> {
        let silence = (!self.silent && self.state() == PeerState::Connected)
            .then(|| self.last_recv + SILENT_AFTER);
        [self.restart_at, silence].into_iter().flatten().min()
    }

    /// Whether the default data channel was open and has closed.
    pub fn channel_gone(&self) -> bool {
        self.default_gone
    }

    pub fn state(&self) -> PeerState {
        if self.closed {
            return PeerState::Closed;
        }
        if self.silent {
            return PeerState::Disconnected;
        }
        match self.ice {
            IceConnectionState::New => PeerState::New,
            IceConnectionState::Checking => {
                if self.connected {
                    PeerState::Connected
                } else {
                    PeerState::Connecting
                }
            }
            IceConnectionState::Connected | IceConnectionState::Completed => PeerState::Connected,
            IceConnectionState::Disconnected => PeerState::Disconnected,
        }
    }

    pub fn is_open(&self) -> bool {
        self.default
            .and_then(|id| self.channels.get(&id))
            .is_some_and(|(_, open)| *open)
    }

    pub fn local_fingerprint(&mut self) -> String {
        self.rtc.local_fingerprint()
    }

    pub fn remote_fingerprint(&mut self) -> Option<String> {
        self.rtc.remote_fingerprint()
    }

    pub fn remove_local_candidate(&mut self, c: &Candidate) {
        self.rtc.invalidate_candidate(c);
        self.local.retain(|x| x != c);
    }

    pub fn add_local_candidate(&mut self, now: Instant, c: Candidate) {
        let addr = c.addr();
        let (kind, proto) = (c.kind(), c.proto());
        if let Some(added) = self.rtc.add_local_candidate(c.clone()) {
            self.local_kinds.insert(addr, (kind, proto));
            self.local.push(c);
            // Before our first offer or answer, candidates travel inside its SDP (str0m
            // writes them there); a browser rejects a candidate that comes before a description.
            if self.mid.is_some() {
                let json = candidate_json(&added, self.mid.as_deref());
                self.signal(json);
            }
        }
        self.drain(now);
    }

    /// Whether this peer's ICE agent claims the packet (its ufrag, or a known remote).
    pub fn accepts(&self, now: Instant, packet: &Packet<'_>) -> bool {
        self.rtc.accepts(now, packet)
    }

    pub fn handle_receive(&mut self, now: Instant, packet: &Packet<'_>) {
        if self.feed(now, packet) {
            self.drain(now);
        }
    }

    /// Takes a datagram; whether [`Peer::answer`] is owed (the data-only engine waits for
    /// the rest of a batch; str0m's must be drained after every input, and is).
    pub fn feed(&mut self, now: Instant, packet: &Packet<'_>) -> bool {
        if packet.receive().is_none() {
            return false;
        }
        self.last_recv = now;
        if self.silent {
            let before = self.state();
            self.silent = false;
            if matches!(
                self.ice,
                IceConnectionState::Connected | IceConnectionState::Completed
            ) {
                // Back before a restart was needed.
                self.restart_at = None;
                self.restart_delay = RESTART_RETRY;
            }
            self.state_changed(before);
        }
        if let Err(e) = self.rtc.receive(now, packet) {
            tracing::debug!(peer = %self.id, "input rejected: {e}");
        }
        if self.rtc.rtc().is_some() {
            self.drain(now);
            return false;
        }
        true
    }

    /// Answers what [`Peer::feed`] took.
    pub fn answer(&mut self, now: Instant) {
        self.drain(now);
    }

    pub fn handle_timeout(&mut self, now: Instant, signaling_up: bool) {
        if now >= self.timeout
            && let Err(e) = self.rtc.timeout(now)
        {
            tracing::debug!(peer = %self.id, "timeout: {e}");
        }
        self.drain(now);
        if !self.silent
            && self.state() == PeerState::Connected
            && now >= self.last_recv + SILENT_AFTER
        {
            self.silent = true;
            self.restart_at.get_or_insert(now + RESTART_AFTER);
            self.state_changed(PeerState::Connected);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            if signaling_up {
                self.restart_down(now);
            } else {
                // Nothing can carry an offer: `resync` restarts once signaling is back.
                self.restart_at = None;
            }
        }
    }

    /// Restarts ICE (new credentials, candidates kept) through a new offer.
    pub fn restart(&mut self, now: Instant) {
        self.restart_wanted = true;
        self.negotiate(now);
    }

    /// The path is down: restart ICE, or, if an offer of ours is still unanswered (it or its
    /// answer was lost with a signaling connection that died unnoticed), send it again; and
    /// do so again later, backing off, until the path is back.
    fn restart_down(&mut self, now: Instant) {
        self.restarts += 1;
        self.restart_at = Some(now + self.restart_delay);
        self.restart_delay = (self.restart_delay * 2).min(RESTART_RETRY_MAX);
        if !self.resend_offer() {
            self.restart(now);
        }
    }

    /// Signaling came back: an offer of ours may have been lost with the old connection.
    pub fn resync(&mut self, now: Instant) {
        if self.state() == PeerState::Disconnected || self.restart_at.is_some() {
            self.restart_down(now);
        } else {
            self.resend_offer();
        }
    }

    pub fn close(&mut self, now: Instant) {
        if !self.closed {
            self.closed = true;
            self.rtc.disconnect(now);
            self.drain(now);
        }
    }

    fn signal(&mut self, json: String) {
        self.up.push_back(Up::Signal(json));
    }

    fn event(&mut self, e: Event) {
        self.up.push_back(Up::Event(e));
    }

    /// Reports the state if it is not `before` any more.
    fn state_changed(&mut self, before: PeerState) {
        let state = self.state();
        if state != before {
            let peer = self.id.clone();
            self.event(Event::State { peer, state });
        }
    }

    /// Drains str0m's output after a mutation (its single-mutation rule).
    fn drain(&mut self, now: Instant) {
        loop {
            let out = match self.rtc.poll(now) {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(peer = %self.id, "poll: {e}");
                    self.timeout = now + Duration::from_millis(100);
                    return;
                }
            };
            match out {
                Out::Timeout(t) => {
                    self.timeout = t;
                    break;
                }
                Out::Transmit(t) => self.up.push_back(Up::Transmit(t)),
                Out::Event(e) => self.on_event(now, e),
            }
        }
        if let Some(len) = self.blocked {
            let held = self.buffered_total();
            if held == 0 || held + len.max(self.window / 2) <= self.window {
                self.writable(now);
            }
        }
        if !self.rtc.is_alive() && !self.closed {
            self.closed = true;
            let id = self.id.clone();
            self.event(Event::State {
                peer: id,
                state: PeerState::Closed,
            });
        }
    }

    fn on_event(&mut self, now: Instant, e: Happened) {
        let peer = self.id.clone();
        match e {
            Happened::Ice(s) => {
                let before = self.state();
                self.ice = s;
                match s {
                    IceConnectionState::Disconnected => {
                        self.restart_at.get_or_insert(now + RESTART_AFTER);
                    }
                    IceConnectionState::Connected | IceConnectionState::Completed => {
                        self.restart_at = None;
                        self.restart_delay = RESTART_RETRY;
                        self.connected = true;
                    }
                    _ => {}
                }
                self.state_changed(before);
            }
            Happened::ChannelOpen(id, label) => {
                self.channels.insert(id, (label.clone(), true));
                if Some(id) == self.default {
                    self.event(Event::Open { peer: peer.clone() });
                    // Flush what was queued before the channel opened.
                    self.flush_queued(now, id);
                } else {
                    self.event(Event::Channel { peer, label });
                }
            }
            Happened::ChannelData { chan, binary, data } => {
                let label = self.label_of(chan);
                self.event(Event::Message {
                    peer,
                    label,
                    binary,
                    data,
                });
            }
            Happened::ChannelClose(id) => {
                if let Some((label, _)) = self.channels.remove(&id) {
                    if Some(id) == self.default {
                        self.default = None;
                        self.default_gone = true;
                    }
                    self.event(Event::ChannelClosed { peer, label });
                }
            }
            Happened::Stats {
                local,
                remote,
                protocol,
                rtt,
            } => self.on_stats(local, remote, protocol, rtt),
            Happened::Rtc(e) => self.on_media_event(*e),
        }
    }

    /// str0m's media events.
    fn on_media_event(&mut self, e: RtcEvent) {
        let peer = self.id.clone();
        match e {
            RtcEvent::MediaAdded(m) => {
                // A line in codecs we do not take carries nothing (reported as NoCodec).
                let Some(rtc) = self.rtc.rtc() else { return };
                if rtc.media(m.mid).is_none_or(|x| x.disabled()) {
                    return;
                }
                self.adopt_send_lines(vec![m.mid], false);
                self.event(Event::Track {
                    peer,
                    mid: m.mid.to_string(),
                    video: m.kind == MediaKind::Video,
                });
            }
            RtcEvent::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.event(Event::Bandwidth {
                    peer,
                    bps: estimate.as_u64(),
                });
            }
            RtcEvent::KeyframeRequest(_) => {
                self.event(Event::KeyframeRequest { peer });
            }
            RtcEvent::MediaData(d) => {
                let video = self
                    .rtc
                    .rtc()
                    .and_then(|r| r.media(d.mid))
                    .is_some_and(|m| m.kind() == MediaKind::Video);
                let keyframe = d.is_keyframe();
                self.event(Event::Media {
                    peer,
                    mid: d.mid.to_string(),
                    video,
                    data: d.data,
                    rtp_time: d.time.numer(),
                    keyframe,
                });
            }
            _ => {}
        }
    }

    /// The path in use and its RTT (str0m's stats, or the data-only engine's).
    fn on_stats(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        protocol: Protocol,
        rtt: Option<Duration>,
    ) {
        let peer = self.id.clone();
        let (lkind, lproto) = self
            .local_kinds
            .get(&local)
            .copied()
            .unwrap_or((CandidateKind::PeerReflexive, protocol));
        let rkind = self
            .remote_kinds
            .get(&remote)
            .copied()
            .unwrap_or(CandidateKind::PeerReflexive);
        let path = Path {
            local: kind_name(lkind),
            remote: kind_name(rkind),
            protocol: proto_name(lproto),
            relay_protocol: None,
            local_addr: local,
            remote_addr: remote,
            rtt,
        };
        let changed = self.path.as_ref().is_none_or(|p| {
            (p.local, p.remote, p.protocol, p.remote_addr)
                != (path.local, path.remote, path.protocol, path.remote_addr)
        });
        if changed {
            self.base_rtt = None;
        }
        if let Some(rtt) = path.rtt {
            let base = self.base_rtt.map_or(rtt, |b| b.min(rtt));
            self.base_rtt = Some(base);
            self.window = window_for(base, self.window_range, self.window_rate);
        }
        self.path = Some(path.clone());
        if changed {
            self.event(Event::Path { peer, path });
        }
    }
}

/// The engine for one peer: str0m's `Rtc` in a call (or when asked for), else our data-only
/// connection.
fn new_engine(
    now: Instant,
    max_window: usize,
    media: Option<Media>,
    bwe: Option<u64>,
    data_path: DataPath,
    hold_messages: bool,
) -> Engine {
    if media.is_none() && data_path == DataPath::Own {
        return engine::data_engine(now, max_window, hold_messages);
    }
    Engine::Rtc(Box::new(new_rtc(now, max_window, media.is_some(), bwe)))
}

/// A str0m `Rtc` for one peer: stats and a send buffer sized for the largest window; data
/// channels only, or (`media`, in a call) also Opus and H.264.
fn new_rtc(now: Instant, max_window: usize, media: bool, bwe: Option<u64>) -> Rtc {
    let mut cfg = Rtc::builder()
        .set_stats_interval(Some(STATS_EVERY))
        .set_sctp_max_buffered_amount(max_window + MESSAGE_ROOM)
        // Data channels only unless in a call: no audio/video codecs to offer or accept.
        .clear_codecs();
    if media {
        // Opus first: what a call offers and prefers; G.711 for cameras' audio, passed through.
        cfg = cfg
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .enable_h264(true);
        if let Some(initial) = bwe {
            cfg = cfg.enable_bwe(Some(Bitrate::from(initial)));
        }
    }
    // The path in use is checked every second (str0m's default: every 3 s), so that
    // silence means it is gone (see SILENT_AFTER).
    cfg.set_max_stun_rto(STUN_MAX_RTO);
    cfg.build(now)
}

/// A packet that arrived, before str0m has classified it.
pub(crate) struct Packet<'a> {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: &'a [u8],
}

impl<'a> Packet<'a> {
    fn receive(&self) -> Option<Receive<'a>> {
        Some(Receive {
            proto: self.proto,
            source: self.source,
            destination: self.destination,
            contents: self.contents.try_into().ok()?,
        })
    }
}

pub(crate) fn kind_name(k: CandidateKind) -> &'static str {
    match k {
        CandidateKind::Host => "host",
        CandidateKind::ServerReflexive => "srflx",
        CandidateKind::PeerReflexive => "prflx",
        CandidateKind::Relayed => "relay",
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "udp",
        Protocol::Tcp => "tcp",
        Protocol::SslTcp => "ssltcp",
        Protocol::Tls => "tls",
    }
}
