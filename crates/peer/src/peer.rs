//! One remote peer: a str0m [`Rtc`] plus perfect negotiation, the default channel, the
//! message queue before it opens, ICE restart, and the path read from stats.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, CandidateKind, Event as RtcEvent, IceConnectionState, Input, Output, Rtc};

use crate::{ChannelOptions, Error, Event, Media, Path, PeerState, Settings, Transmit};

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
    rtc: Rtc,
    polite: bool,
    /// Our offer awaiting an answer, and its SDP (re-sent when the remote may not have it).
    pending: Option<(SdpPendingOffer, String)>,
    /// The default channel, once created; `pending_default` while only in an unanswered offer.
    default: Option<ChannelId>,
    pending_default: Option<ChannelId>,
    /// Channels by id: label, and whether open.
    channels: HashMap<ChannelId, (String, bool)>,
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
        let window_range = (
            settings.send_window,
            settings.max_send_window.max(settings.send_window),
        );
        Peer {
            id,
            rtc: new_rtc(now, window_range.1, settings.media.is_some()),
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
        self.rtc.direct_api().local_dtls_fingerprint().to_string()
    }

    pub fn remote_fingerprint(&mut self) -> Option<String> {
        self.rtc
            .direct_api()
            .remote_dtls_fingerprint()
            .map(|f| f.to_string())
    }

    pub fn remove_local_candidate(&mut self, c: &Candidate) {
        self.rtc.direct_api().invalidate_candidate(c);
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
                let json = candidate_json(added, self.mid.as_deref());
                self.signal(json);
            }
        }
        self.drain(now);
    }

    /// Starts negotiation from our side (we joined after the remote): offer the default channel.
    pub fn initiate(&mut self, now: Instant) {
        self.negotiate(now);
    }

    /// Makes an offer if there is something to negotiate and no offer is outstanding.
    fn negotiate(&mut self, now: Instant) {
        if self.pending.is_some() || self.closed {
            return;
        }
        if !self.negotiated && self.dirty {
            self.fresh_rtc(now);
        }
        let missing = if self.media_offered {
            Vec::new()
        } else {
            self.missing_media()
        };
        let mut api = self.rtc.sdp_api();
        if !self.negotiated {
            // The first offer: the default channel brings the m=application line.
            self.pending_default = Some(api.add_channel_with_config(default_channel()));
            self.dirty = true;
        }
        let mut offered = Vec::new();
        for (kind, label) in &missing {
            let mid = api.add_media(
                *kind,
                Direction::SendRecv,
                Some("peerweb".into()),
                Some((*label).into()),
                None,
            );
            offered.push((*kind, mid));
        }
        self.media_offered |= !missing.is_empty();
        self.offered_mids.extend(offered);
        if self.restart_wanted && self.negotiated {
            api.ice_restart(true);
        }
        if let Some((offer, pending)) = api.apply() {
            let sdp = offer.to_sdp_string();
            self.mid = self.mid.take().or_else(|| first_mid(&sdp));
            self.signal(description_json("offer", &sdp));
            self.pending = Some((pending, sdp));
        } else {
            self.pending_default = None;
        }
        self.drain(now);
    }

    /// A signal payload from the remote (`{description}` or `{candidate}`).
    pub fn handle_signal(&mut self, now: Instant, data: &str) -> Result<(), Error> {
        let v: Value =
            serde_json::from_str(data).map_err(|e| Error::BadSignal(format!("not JSON: {e}")))?;
        if let Some(d) = v.get("description") {
            let ty = d.get("type").and_then(Value::as_str).unwrap_or_default();
            let sdp = d.get("sdp").and_then(Value::as_str).unwrap_or_default();
            match ty {
                "offer" => self.on_offer(now, sdp)?,
                "answer" => self.on_answer(now, sdp)?,
                other => {
                    return Err(Error::BadSignal(format!(
                        "description type {other:?} is not offer or answer"
                    )));
                }
            }
        } else if let Some(c) = v.get("candidate") {
            // `null` (or an empty candidate) is end-of-candidates: nothing to do, since str0m
            // keeps checking whatever it has.
            let line = c
                .get("candidate")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !line.is_empty() {
                self.on_candidate(now, line)?;
            }
        }
        Ok(())
    }

    /// If `data` is a description (`"offer"` or `"answer"`, returned) under another DTLS
    /// certificate than the one this connection knows: the remote is a new session (it left
    /// and joined again unseen).
    pub fn new_session(&self, data: &str) -> Option<&'static str> {
        let known = self.remote_cert.as_ref()?;
        let v = serde_json::from_str::<Value>(data).ok()?;
        let d = &v["description"];
        let kind = match d["type"].as_str()? {
            "offer" => "offer",
            "answer" => "answer",
            _ => return None,
        };
        let cert = fingerprint(d["sdp"].as_str()?)?;
        (&cert != known).then_some(kind)
    }

    /// Candidates written inside a remote SDP: remembered for naming the path.
    fn note_sdp_candidates(&mut self, sdp: &str) {
        for line in sdp.lines() {
            if let Some(c) = line.trim_end().strip_prefix("a=")
                && c.starts_with("candidate:")
                && let Ok(c) = Candidate::from_sdp_string(c)
                && self.remote_kinds.len() < MAX_REMOTE_CANDIDATES
            {
                self.remote_kinds.insert(c.addr(), c.kind());
            }
        }
    }

    fn on_offer(&mut self, now: Instant, sdp: &str) -> Result<(), Error> {
        if let Some((_, answer)) = self.answered.as_ref().filter(|(o, _)| o == sdp) {
            let json = description_json("answer", answer);
            self.signal(json);
            return Ok(());
        }
        // We answer an `actpass` offer as the DTLS client (`active`), as browsers do: str0m
        // would take `passive`, but a browser that opens a channel before our answer arrives
        // gives it a DTLS server's stream id (odd) — the parity str0m then picks too, and the
        // two channels collide (RFC 8832 §6: the client takes even ids, the server odd).
        let offer = SdpOffer::from_sdp_string(&sdp.replace("a=setup:actpass", "a=setup:passive"))
            .map_err(|e| Error::BadSignal(e.to_string()))?;
        // Perfect negotiation: on a collision the impolite side ignores the remote offer and
        // re-sends its own (the polite side may never have seen it); the polite side drops its
        // own offer (str0m rolls it back inside accept_offer) and answers.
        if self.pending.is_some() && !self.polite {
            self.resend_offer();
            return Ok(());
        }
        self.pending = None;
        self.pending_default = None;
        // Media lines of a rolled-back offer of ours are offered again after this answer.
        self.media_offered = false;
        self.offered_mids.clear();
        if !self.negotiated && self.dirty {
            // Our first offer is rolled back (or an earlier first attempt failed): answer
            // from a fresh Rtc. The remote accepted nothing of the old one.
            self.fresh_rtc(now);
        }
        let ufrag = ice_ufrag(sdp);
        let restarts = self.remote_ufrag.is_some() && ufrag != self.remote_ufrag;
        self.remote_ufrag = ufrag;
        self.note_sdp_candidates(sdp);
        self.dirty |= !self.negotiated;
        let answer = self.rtc.sdp_api().accept_offer(offer);
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                self.drain(now);
                self.first_attempt_failed(now);
                return Err(Error::Negotiation(e.to_string()));
            }
        };
        self.remote_cert = fingerprint(sdp);
        let offer = sdp;
        let sdp = answer.to_sdp_string();
        self.mid = first_mid(&sdp).or(self.mid.take());
        self.signal(description_json("answer", &sdp));
        self.report_no_codec(offer, false);
        self.answered = Some((offer.to_owned(), sdp));
        self.drain(now);
        if !self.negotiated {
            let id = self.rtc.direct_api().create_data_channel(default_channel());
            self.session_ready(id);
            self.drain(now);
        }
        if restarts {
            // The remote restarted ICE, which restarts ours too: a restart of our own is
            // no longer needed, and this one gets its time before we try again.
            self.restart_wanted = false;
            if self.restart_at.is_some() {
                self.restart_at = Some(now + self.restart_delay);
            }
        }
        // An offer of ours that was rolled back carried something we still want, or the
        // remote's offer had no media line of a kind we send.
        if self.restart_wanted || !self.missing_media().is_empty() {
            self.negotiate(now);
        }
        Ok(())
    }

    fn on_answer(&mut self, now: Instant, sdp: &str) -> Result<(), Error> {
        let stale = match &self.pending {
            // An answer to an offer of another Rtc of ours (rolled back, or re-sent by a
            // connection since replaced) names m-lines ours does not have.
            Some((_, offer)) => !mids(sdp).all(|m| mids(offer).any(|o| o == m)),
            None => true,
        };
        if stale {
            // An answer to an offer already rolled back, answered or replaced: ignore it.
            return Ok(());
        }
        let Some((pending, _)) = self.pending.take() else {
            return Ok(());
        };
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| Error::BadSignal(e.to_string()))?;
        let res = self.rtc.sdp_api().accept_answer(pending, answer);
        self.media_offered = false;
        let offered = std::mem::take(&mut self.offered_mids);
        if res.is_ok() {
            for (kind, mid) in offered {
                let sends = self.rtc.media(mid).is_some_and(|m| {
                    !m.disabled()
                        && matches!(m.direction(), Direction::SendRecv | Direction::SendOnly)
                });
                if sends && !self.send_mids.iter().any(|(k, _)| *k == kind) {
                    self.send_mids.push((kind, mid));
                    self.event(Event::Track {
                        peer: self.id.clone(),
                        mid: mid.to_string(),
                        video: kind == MediaKind::Video,
                    });
                }
            }
        }
        self.drain(now);
        if let Err(e) = res {
            self.pending_default = None;
            // The remote restarted ICE for an offer of ours that we then rolled back (a
            // restart crossing an offer of theirs): its answers now carry credentials we never
            // took. Offering again with a restart of our own takes them.
            if self.negotiated && ice_ufrag(sdp) != self.remote_ufrag {
                self.restart_wanted = true;
                self.negotiate(now);
                return Ok(());
            }
            self.first_attempt_failed(now);
            return Err(Error::Negotiation(e.to_string()));
        }
        self.remote_ufrag = ice_ufrag(sdp);
        self.remote_cert = fingerprint(sdp);
        self.report_no_codec(sdp, true);
        if self.restart_wanted && self.restart_at.is_some() {
            // Our restart is negotiated: it gets its time before we try again.
            self.restart_at = Some(now + self.restart_delay);
        }
        self.note_sdp_candidates(sdp);
        self.restart_wanted = false;
        if let Some(id) = self.pending_default.take() {
            self.session_ready(id);
            self.drain(now);
        }
        Ok(())
    }

    /// In a call, media lines of a just-accepted offer or answer (`sdp`) that carry nothing
    /// either way are reported, once per kind ([`Event::NoCodec`]): one the remote offered in
    /// codecs we do not take, or (`answer`) one of ours it refused. A line the remote offers
    /// already stopped is its own choice, not reported.
    fn report_no_codec(&mut self, sdp: &str, answer: bool) {
        if self.media.is_none() {
            return;
        }
        for mid in mids(sdp) {
            let mid = Mid::from(mid);
            let Some(m) = self.rtc.media(mid) else {
                continue;
            };
            let dead = m.disabled() && (answer || !m.stopped());
            let kind = m.kind();
            if !dead || self.no_codec.iter().any(|(k, x)| *x == mid || *k == kind) {
                continue;
            }
            let video = kind == MediaKind::Video;
            self.no_codec.push((kind, mid));
            self.event(Event::NoCodec {
                peer: self.id.clone(),
                mid: mid.to_string(),
                video,
            });
        }
    }

    /// The first negotiation completed with the default channel `id`: the channels opened
    /// before it are created now, after the default.
    fn session_ready(&mut self, id: ChannelId) {
        self.negotiated = true;
        self.dirty = false;
        self.default = Some(id);
        self.channels.insert(id, (DEFAULT_LABEL.into(), false));
        for config in std::mem::take(&mut self.early) {
            let label = config.label.clone();
            let id = self.rtc.direct_api().create_data_channel(config);
            self.channels.insert(id, (label, false));
        }
    }

    /// A first offer or answer was refused: nothing connects until someone offers again, so
    /// we do, after [`RESTART_AFTER`] and then backing off like a restart (from a fresh Rtc).
    fn first_attempt_failed(&mut self, now: Instant) {
        if !self.negotiated {
            self.restart_at.get_or_insert(now + RESTART_AFTER);
        }
    }

    /// Replaces the `Rtc`, whose first negotiation did not complete, with a fresh one that
    /// has our candidates.
    fn fresh_rtc(&mut self, now: Instant) {
        self.rtc = new_rtc(now, self.window_range.1, self.media.is_some());
        self.send_mids.clear();
        self.offered_mids.clear();
        self.no_codec.clear();
        self.media_offered = false;
        for c in &self.local {
            self.rtc.add_local_candidate(c.clone());
        }
        self.channels.clear();
        self.default = None;
        self.pending = None;
        self.pending_default = None;
        self.mid = None;
        self.dirty = false;
        self.answered = None;
        self.timeout = now;
    }

    fn on_candidate(&mut self, now: Instant, line: &str) -> Result<(), Error> {
        let line = line.strip_prefix("a=").unwrap_or(line);
        if self.remote_count >= MAX_REMOTE_CANDIDATES {
            return Err(Error::BadSignal(format!(
                "more than {MAX_REMOTE_CANDIDATES} remote candidates"
            )));
        }
        match Candidate::from_sdp_string(line) {
            Ok(c) => {
                self.remote_count += 1;
                self.remote_kinds.insert(c.addr(), c.kind());
                self.rtc.add_remote_candidate(c);
                self.drain(now);
                Ok(())
            }
            // A browser that hides its host address sends `<uuid>.local`: skip it; its
            // checks reach us anyway and become peer-reflexive candidates.
            Err(_) if is_mdns(line) => Ok(()),
            Err(e) => Err(Error::BadSignal(format!("bad candidate: {e}"))),
        }
    }

    /// Whether this peer's ICE agent claims the packet (its ufrag, or a known remote).
    pub fn accepts(&self, now: Instant, packet: &Packet<'_>) -> bool {
        packet
            .receive()
            .is_some_and(|r| self.rtc.accepts(&Input::Receive(now, r)))
    }

    pub fn handle_receive(&mut self, now: Instant, packet: &Packet<'_>) {
        let Some(r) = packet.receive() else {
            return;
        };
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
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
            tracing::debug!(peer = %self.id, "input rejected: {e}");
        }
        self.drain(now);
    }

    pub fn handle_timeout(&mut self, now: Instant, signaling_up: bool) {
        if now >= self.timeout
            && let Err(e) = self.rtc.handle_input(Input::Timeout(now))
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

    /// Sends our unanswered offer again, if there is one (it, or its answer, may have been
    /// lost).
    fn resend_offer(&mut self) -> bool {
        let Some((_, sdp)) = &self.pending else {
            return false;
        };
        let json = description_json("offer", sdp);
        self.signal(json);
        true
    }

    /// Signaling came back: an offer of ours may have been lost with the old connection.
    pub fn resync(&mut self, now: Instant) {
        if self.state() == PeerState::Disconnected || self.restart_at.is_some() {
            self.restart_down(now);
        } else {
            self.resend_offer();
        }
    }

    pub fn open_channel(
        &mut self,
        now: Instant,
        label: &str,
        opts: ChannelOptions,
    ) -> Result<(), Error> {
        if label == DEFAULT_LABEL {
            return Err(Error::ReservedLabel);
        }
        if self.channels.values().any(|(l, _)| l == label)
            || self.early.iter().any(|c| c.label == label)
        {
            return Ok(());
        }
        if self.channels.len() + self.early.len() >= MAX_CHANNELS {
            return Err(Error::TooManyChannels);
        }
        let reliability = match (opts.max_retransmits, opts.max_packet_lifetime_ms) {
            (Some(n), _) => Reliability::MaxRetransmits { retransmits: n },
            (None, Some(ms)) => Reliability::MaxPacketLifetime { lifetime: ms },
            (None, None) => Reliability::Reliable,
        };
        let config = ChannelConfig {
            label: label.into(),
            ordered: opts.ordered,
            reliability,
            negotiated: None,
            protocol: String::new(),
        };
        if !self.negotiated {
            // No session yet: the joiner's offer (ours, or theirs on its way) brings one, and
            // the channel is created once it is up. A member does not offer first, as the
            // SDK does not: two first offers crossing make the polite side roll its back,
            // which Chromium cannot do for data channels ("Failed to start SCTP transport").
            self.early.push(config);
            return Ok(());
        }
        let id = self.rtc.direct_api().create_data_channel(config);
        self.channels.insert(id, (label.into(), false));
        self.drain(now);
        Ok(())
    }

    /// Sends on a channel (the default one when `label` is `None`). Returns `Ok(false)` when
    /// the send window is full: wait for [`Event::Writable`] and try again.
    pub fn send(
        &mut self,
        now: Instant,
        label: Option<&str>,
        binary: bool,
        data: &[u8],
    ) -> Result<bool, Error> {
        if self.closed {
            return Err(Error::PeerGone);
        }
        let id = match label {
            None | Some(DEFAULT_LABEL) => {
                if self.default_gone {
                    return Err(Error::ChannelClosed);
                }
                if !self.is_open() {
                    if self.queued.len() >= MAX_QUEUED {
                        return Err(Error::QueueFull);
                    }
                    self.queued.push_back((binary, data.to_vec()));
                    return Ok(true);
                }
                let id = self.default.ok_or(Error::ChannelClosed)?;
                // What was queued before the channel opened goes first.
                if !self.queued.is_empty() {
                    self.flush_queued(id);
                    if !self.queued.is_empty() {
                        self.block(data.len());
                        return Ok(false);
                    }
                }
                id
            }
            Some(l) => self
                .channels
                .iter()
                .find(|(_, (cl, open))| cl == l && *open)
                .map(|(id, _)| *id)
                .ok_or(Error::ChannelClosed)?,
        };
        if !self.room_for(data.len()) {
            return Ok(false);
        }
        let mut ch = self.rtc.channel(id).ok_or(Error::ChannelClosed)?;
        let ok = ch
            .write(binary, data)
            .map_err(|e| Error::Send(e.to_string()))?;
        if !ok {
            if self.buffered_total() == 0 {
                return Err(Error::Send(format!(
                    "a {}-byte message does not fit the send buffer",
                    data.len()
                )));
            }
            self.block(data.len());
        }
        self.drain(now);
        Ok(ok)
    }

    /// Whether `len` more bytes fit in the send window (a message always fits an empty one);
    /// marks the peer blocked when not.
    fn room_for(&mut self, len: usize) -> bool {
        let held = self.buffered_total();
        let fits = held == 0 || held + len <= self.window;
        if !fits {
            self.block(len);
        }
        fits
    }

    fn block(&mut self, len: usize) {
        self.blocked = Some(self.blocked.unwrap_or(0).max(len));
    }

    /// Bytes held by SCTP over all channels (queued and unacknowledged).
    fn buffered_total(&mut self) -> usize {
        let rtc = &mut self.rtc;
        self.channels
            .keys()
            .filter_map(|id| rtc.channel(*id).map(|mut c| c.buffered_amount()))
            .sum()
    }

    /// The current send window (bytes).
    pub fn window(&self) -> usize {
        self.window
    }

    /// Bytes buffered on a channel (the default one when `label` is `None`).
    pub fn buffered(&mut self, label: Option<&str>) -> usize {
        let label = label.unwrap_or(DEFAULT_LABEL);
        let Some(id) = self
            .channels
            .iter()
            .find(|(_, (l, _))| l == label)
            .map(|(id, _)| *id)
        else {
            return 0;
        };
        self.rtc
            .channel(id)
            .map(|mut c| c.buffered_amount())
            .unwrap_or(0)
    }

    pub fn close(&mut self, now: Instant) {
        if !self.closed {
            self.closed = true;
            self.rtc.disconnect();
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
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(peer = %self.id, "poll: {e}");
                    self.timeout = now + Duration::from_millis(100);
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    self.timeout = t;
                    break;
                }
                Output::Transmit(t) => self.up.push_back(Up::Transmit(Transmit {
                    proto: t.proto,
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                })),
                Output::Event(e) => self.on_rtc_event(now, e),
            }
        }
        if let Some(len) = self.blocked {
            let held = self.buffered_total();
            if held == 0 || held + len.max(self.window / 2) <= self.window {
                self.writable();
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

    /// Writes what was queued for the default channel `id` until the send window is full.
    fn flush_queued(&mut self, id: ChannelId) {
        while let Some((binary, data)) = self.queued.pop_front() {
            if !self.room_for(data.len()) {
                self.queued.push_front((binary, data));
                break;
            }
            let Some(mut ch) = self.rtc.channel(id) else {
                self.queued.push_front((binary, data));
                break;
            };
            match ch.write(binary, &data) {
                Ok(true) => {}
                Ok(false) if self.buffered_total() > 0 => {
                    self.block(data.len());
                    self.queued.push_front((binary, data));
                    break;
                }
                // Too large for the buffer, or refused by SCTP: it can never go; the rest can.
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        _ => "it does not fit the send buffer".into(),
                    };
                    self.event(Event::Error {
                        code: "send".into(),
                        message: format!("a queued {}-byte message was dropped: {why}", data.len()),
                    });
                }
            }
        }
    }

    /// The window has room again: the queue goes first, then every open channel is reported
    /// writable.
    fn writable(&mut self) {
        self.blocked = None;
        if let Some(id) = self.default.filter(|_| !self.queued.is_empty()) {
            self.flush_queued(id);
            if self.blocked.is_some() {
                return;
            }
        }
        let peer = self.id.clone();
        let open: Vec<String> = self
            .channels
            .values()
            .filter(|(_, open)| *open)
            .map(|(label, _)| label.clone())
            .collect();
        for label in open {
            self.event(Event::Writable {
                peer: peer.clone(),
                label,
            });
        }
    }

    /// Media kinds we send and have no negotiated line for, with their labels.
    fn missing_media(&self) -> Vec<(MediaKind, &'static str)> {
        let Some(m) = self.media else {
            return Vec::new();
        };
        [(MediaKind::Audio, m.audio), (MediaKind::Video, m.video)]
            .into_iter()
            .filter(|(k, want)| {
                *want
                    && !self.send_mids.iter().any(|(s, _)| s == k)
                    && !self.no_codec.iter().any(|(s, _)| s == k)
            })
            .map(|(k, _)| (k, media_label(k)))
            .collect()
    }

    /// Our sending lines: (mid, label).
    pub fn sending(&self) -> Vec<(String, &'static str)> {
        self.send_mids
            .iter()
            .map(|(k, mid)| (mid.to_string(), media_label(*k)))
            .collect()
    }

    /// One frame to this peer on our line of its kind, if negotiated and connected.
    pub fn write_media(
        &mut self,
        now: Instant,
        video: bool,
        rtp_time: u64,
        data: &std::sync::Arc<[u8]>,
    ) -> bool {
        let kind = if video {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let Some(&(_, mid)) = self.send_mids.iter().find(|(k, _)| *k == kind) else {
            return false;
        };
        if self.state() != PeerState::Connected {
            return false;
        }
        let Some(writer) = self.rtc.writer(mid) else {
            return false;
        };
        // H.264 in packetization mode 1 (what the reader gives: whole access units), or Opus.
        let pt = writer
            .payload_params()
            .filter(|p| {
                let spec = p.spec();
                match spec.codec {
                    Codec::H264 => video && spec.format.packetization_mode == Some(1),
                    Codec::Opus => !video,
                    _ => false,
                }
            })
            .map(|p| p.pt())
            .next();
        let Some(pt) = pt else {
            return false;
        };
        let rate = if video {
            Frequency::NINETY_KHZ
        } else {
            Frequency::FORTY_EIGHT_KHZ
        };
        let ok = writer
            .write(pt, now, MediaTime::new(rtp_time, rate), data.clone())
            .is_ok();
        self.drain(now);
        ok
    }

    fn label_of(&self, id: ChannelId) -> String {
        self.channels
            .get(&id)
            .map(|(l, _)| l.clone())
            .unwrap_or_default()
    }

    fn on_rtc_event(&mut self, now: Instant, e: RtcEvent) {
        let peer = self.id.clone();
        match e {
            RtcEvent::IceConnectionStateChange(s) => {
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
            RtcEvent::ChannelOpen(id, label) => {
                self.channels.insert(id, (label.clone(), true));
                if Some(id) == self.default {
                    self.event(Event::Open { peer: peer.clone() });
                    // Flush what was queued before the channel opened.
                    self.flush_queued(id);
                } else {
                    self.event(Event::Channel { peer, label });
                }
            }
            RtcEvent::ChannelData(d) => {
                let label = self.label_of(d.id);
                self.event(Event::Message {
                    peer,
                    label,
                    binary: d.binary,
                    data: d.data,
                });
            }
            RtcEvent::ChannelClose(id) => {
                if let Some((label, _)) = self.channels.remove(&id) {
                    if Some(id) == self.default {
                        self.default = None;
                        self.default_gone = true;
                    }
                    self.event(Event::ChannelClosed { peer, label });
                }
            }
            RtcEvent::MediaAdded(m) => {
                // A line in codecs we do not take carries nothing (reported as NoCodec).
                if self.rtc.media(m.mid).is_none_or(|x| x.disabled()) {
                    return;
                }
                let sends = matches!(m.direction, Direction::SendRecv | Direction::SendOnly);
                let wanted = self.media.is_some_and(|w| match m.kind {
                    MediaKind::Audio => w.audio,
                    MediaKind::Video => w.video,
                });
                if sends && wanted && !self.send_mids.iter().any(|(k, _)| *k == m.kind) {
                    self.send_mids.push((m.kind, m.mid));
                }
                self.event(Event::Track {
                    peer,
                    mid: m.mid.to_string(),
                    video: m.kind == MediaKind::Video,
                });
            }
            RtcEvent::MediaData(d) => {
                let video = self
                    .rtc
                    .media(d.mid)
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
            RtcEvent::PeerStats(s) => {
                let Some(pair) = s.selected_candidate_pair else {
                    return;
                };
                let (lkind, lproto) = self
                    .local_kinds
                    .get(&pair.local.addr)
                    .copied()
                    .unwrap_or((CandidateKind::PeerReflexive, pair.protocol));
                let rkind = self
                    .remote_kinds
                    .get(&pair.remote.addr)
                    .copied()
                    .unwrap_or(CandidateKind::PeerReflexive);
                let path = Path {
                    local: kind_name(lkind),
                    remote: kind_name(rkind),
                    protocol: proto_name(lproto),
                    relay_protocol: None,
                    local_addr: pair.local.addr,
                    remote_addr: pair.remote.addr,
                    rtt: pair.current_round_trip_time.or(s.rtt),
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
                    self.window = window_for(base, self.window_range);
                }
                self.path = Some(path.clone());
                if changed {
                    self.event(Event::Path { peer, path });
                }
            }
            _ => {}
        }
    }
}

/// The label a kind of our media carries in the call state.
fn media_label(kind: MediaKind) -> &'static str {
    if kind == MediaKind::Video {
        "camera"
    } else {
        "audio"
    }
}

/// A str0m `Rtc` for one peer: stats and a send buffer sized for the largest window; data
/// channels only, or (`media`, in a call) also Opus and H.264.
fn new_rtc(now: Instant, max_window: usize, media: bool) -> Rtc {
    let mut cfg = Rtc::builder()
        .set_stats_interval(Some(STATS_EVERY))
        .set_sctp_max_buffered_amount(max_window + MESSAGE_ROOM)
        // Data channels only unless in a call: no audio/video codecs to offer or accept.
        .clear_codecs();
    if media {
        cfg = cfg.enable_opus(true, false).enable_h264(true);
    }
    // The path in use is checked every second (str0m's default: every 3 s), so that
    // silence means it is gone (see SILENT_AFTER).
    cfg.set_max_stun_rto(STUN_MAX_RTO);
    cfg.build(now)
}

/// Rate the send window is sized for: window = RTT × this, within the configured range.
/// A reliable channel moves at most window ÷ RTT, but a larger window costs CPU per byte in
/// str0m's SCTP (its in-flight queue is scanned on every poll): with a large window it
/// carries 10–16 MB/s per connection on a 2-core machine (docs/benchmarks.md), so a window
/// beyond RTT × 20 MB/s would only add CPU.
pub const WINDOW_RATE: f64 = 20e6;

/// The send window for a path with this round-trip time.
pub fn window_for(rtt: Duration, (min, max): (usize, usize)) -> usize {
    ((rtt.as_secs_f64() * WINDOW_RATE) as usize).clamp(min, max)
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

fn is_mdns(line: &str) -> bool {
    line.split_whitespace()
        .nth(4)
        .is_some_and(|addr| addr.ends_with(".local"))
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

fn description_json(ty: &str, sdp: &str) -> String {
    serde_json::json!({ "description": { "type": ty, "sdp": sdp } }).to_string()
}

fn candidate_json(c: &Candidate, mid: Option<&str>) -> String {
    // The shape of RTCIceCandidateInit; everything is bundled on the first m-line, whose mid
    // is whatever the offer chose (browsers reject a candidate naming another mid).
    serde_json::json!({ "candidate": {
        "candidate": c.to_sdp_string().trim_start_matches("a="),
        "sdpMid": mid,
        "sdpMLineIndex": 0,
    } })
    .to_string()
}

/// The first `a=ice-ufrag:` of an SDP: a new one means the sender restarted ICE.
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

/// The mid of the first m-line of an SDP.
fn first_mid(sdp: &str) -> Option<String> {
    mids(sdp).next().map(str::to_owned)
}

/// The mids of an SDP's m-lines.
fn mids(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
}

/// The DTLS certificate fingerprint of an SDP (`sha-256 AB:…`, upper case).
fn fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
        .map(str::to_ascii_uppercase)
}
