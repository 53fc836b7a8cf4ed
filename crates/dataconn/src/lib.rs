//! A data-only WebRTC peer connection, without I/O: ICE from `is` and DTLS from `dimpl` (the
//! sans-IO crates str0m itself is built from), SCTP and DCEP from `peerweb-sctp`, and the SDP
//! of one `m=application … UDP/DTLS/SCTP webrtc-datachannel` section ([`sdp`]). It speaks to
//! any browser's data channels. Packets in and out as bytes with their addresses, time passed
//! in; the caller owns the sockets and the signaling.
//!
//! The flow: [`Connection::create_offer`] / [`Connection::accept_offer`] /
//! [`Connection::accept_answer`] exchange descriptions; candidates go both ways (in the
//! descriptions or trickled); ICE finds a path; DTLS runs on it, the DTLS client being the
//! side whose `a=setup` said `active` (our offers do: the offerer controls ICE and nominates
//! first); the remote's certificate must match the fingerprint its description carried
//! (anything else ends the connection: a man in the middle); then both sides start SCTP (each
//! sends INIT) and channels open, their first messages riding with the COOKIE ECHO.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use is::{Candidate, CandidateKind, IceConnectionState, IceCreds, Protocol};
use is::{IceAgent, IceAgentEvent};
use peerweb_sctp::assoc::{self, Association, State as SctpState};

mod channels;
pub mod sdp;

pub use channels::{ChannelConfig, ChannelError, ChannelId, MAX_CHANNELS};
pub use dimpl::DtlsCertificate;
pub use peerweb_sctp::dcep::Reliability;

/// Why a description or the connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("SDP: {0}")]
    Sdp(&'static str),
    #[error("the remote's certificate does not match the fingerprint in its description")]
    FingerprintMismatch,
    #[error("DTLS: {0}")]
    Dtls(String),
    #[error("the SCTP association {0}")]
    Sctp(&'static str),
    #[error("no offer of ours awaits an answer")]
    NoOffer,
    #[error("a certificate could not be made: {0}")]
    Certificate(String),
}

/// What happened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Ice(IceConnectionState),
    /// The path datagrams now take.
    Path {
        proto: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
    },
    /// DTLS and SCTP are up: channels open.
    Connected,
    ChannelOpen(ChannelId, String),
    ChannelData {
        id: ChannelId,
        binary: bool,
        data: Vec<u8>,
    },
    ChannelClose(ChannelId),
    /// The connection is over (the reason, if it failed).
    Closed(Option<Error>),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Settings of a connection.
#[derive(Debug, Clone)]
pub struct Config {
    pub sctp: assoc::Config,
    /// The largest message this side takes (`a=max-message-size`).
    pub max_message_size: usize,
    /// DTLS record size at most (an SCTP packet and the record's overhead fit).
    pub dtls_mtu: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sctp: assoc::Config::default(),
            max_message_size: 256 * 1024,
            dtls_mtu: 1280,
        }
    }
}

/// A certificate for DTLS: a fresh self-signed ECDSA P-256 one; what a connection proves it
/// holds is its SHA-256 fingerprint, carried in the description.
pub fn certificate() -> Result<dimpl::DtlsCertificate, Error> {
    dimpl::certificate::generate_self_signed_certificate()
        .map_err(|e| Error::Certificate(e.to_string()))
}

fn sha256(der: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    let f = dimpl::certificate::calculate_fingerprint(der);
    let n = f.len().min(32);
    out[..n].copy_from_slice(&f[..n]);
    out
}

/// Where the offer/answer exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Negotiation {
    Idle,
    /// Our offer is out.
    Offered,
    Done,
}

pub struct Connection {
    cfg: Config,
    ice: IceAgent,
    cert: dimpl::DtlsCertificate,
    fingerprint: [u8; 32],
    /// The remote's description as last accepted.
    remote: Option<sdp::Description>,
    negotiation: Negotiation,
    /// Whether this side is the DTLS client, once the descriptions said.
    dtls_client: Option<bool>,
    dtls: Option<dimpl::Dtls>,
    /// The remote's certificate matched its fingerprint.
    verified: bool,
    /// SCTP, made when DTLS comes up (so: whether DTLS is up).
    sctp: Option<Association>,
    sctp_up: bool,
    channels: channels::Channels,
    /// Where datagrams go: the nominated pair.
    path: Option<(Protocol, SocketAddr, SocketAddr)>,
    /// Until a pair is nominated here, DTLS answers on the pair its records came in on (the
    /// controlled side, as DTLS server, hears the client before its nomination).
    dtls_reply: Option<(Protocol, SocketAddr, SocketAddr)>,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    buf: Vec<u8>,
    session_id: u64,
    version: u64,
    mid: String,
    closed: bool,
    random: [u8; 40],
    dtls_timeout: Option<Instant>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("ice", &self.ice.state())
            .field("dtls_up", &self.sctp.is_some())
            .field("sctp_up", &self.sctp_up)
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(a) = &self.sctp {
            let s = a.stats();
            tracing::debug!(
                chunks_sent = s.chunks_sent,
                chunks_retransmitted = s.chunks_retransmitted,
                fast_recoveries = s.fast_recoveries,
                timeouts = s.timeouts,
                window_drops = s.window_drops,
                "SCTP at the end"
            );
        }
    }
}

impl Connection {
    /// A connection with `cert`; `random` seeds the session id, SCTP's tags and TSN and its
    /// cookie secret (take it from the OS's generator).
    pub fn new(
        now: Instant,
        cfg: Config,
        cert: dimpl::DtlsCertificate,
        random: [u8; 48],
    ) -> Connection {
        let fingerprint = sha256(&cert.certificate);
        let mut ice = IceAgent::new(IceCreds::new());
        ice.set_max_stun_rto(Duration::from_secs(1));
        // The agent's clock starts (it has no timeout before its first).
        ice.handle_timeout(now);
        let mut sctp_random = [0; 40];
        sctp_random.copy_from_slice(&random[8..]);
        let mut session = [0; 8];
        session.copy_from_slice(&random[..8]);
        Connection {
            cfg,
            ice,
            cert,
            fingerprint,
            remote: None,
            negotiation: Negotiation::Idle,
            dtls_client: None,
            dtls: None,
            verified: false,
            sctp: None,
            sctp_up: false,
            channels: channels::Channels::default(),
            path: None,
            dtls_reply: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            buf: vec![0; 2048],
            // Below 2^62 as RFC 8866 asks.
            session_id: u64::from_be_bytes(session) >> 2,
            version: 1,
            mid: "0".to_owned(),
            closed: false,
            random: sctp_random,
            dtls_timeout: None,
        }
    }

    /// Our certificate's SHA-256 fingerprint.
    pub fn local_fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The remote's, from its description.
    pub fn remote_fingerprint(&self) -> Option<[u8; 32]> {
        self.remote.as_ref().map(|r| r.fingerprint)
    }

    pub fn ice_state(&self) -> IceConnectionState {
        self.ice.state()
    }

    pub fn is_connected(&self) -> bool {
        self.sctp_up && !self.closed
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The largest message the remote takes.
    pub fn remote_max_message(&self) -> usize {
        self.remote
            .as_ref()
            .map_or(sdp::DEFAULT_MAX_MESSAGE, |r| r.max_message_size)
    }

    fn describe(&mut self, setup: sdp::Setup, rejected: bool) -> String {
        let creds = self.ice.local_credentials().clone();
        let (others, data_index) = self
            .remote
            .as_ref()
            .map_or((Vec::new(), 0), |r| (r.others.clone(), r.data_index));
        let d = sdp::Description {
            ufrag: creds.ufrag,
            pwd: creds.pass,
            fingerprint: self.fingerprint,
            setup,
            mid: self.mid.clone(),
            sctp_port: self.cfg.sctp.port,
            max_message_size: self.cfg.max_message_size,
            ice_lite: false,
            candidates: self
                .ice
                .local_candidates()
                .map(|c| c.to_sdp_string().trim_start_matches("a=").to_owned())
                .collect(),
            rejected,
            others,
            data_index,
        };
        self.version += 1;
        sdp::write(&d, self.session_id, self.version)
    }

    /// Our offer (a new one each call; an ICE restart's after [`Connection::restart_ice`]).
    pub fn create_offer(&mut self) -> String {
        if self.remote.is_none() {
            self.ice.set_controlling(true);
        }
        self.negotiation = Negotiation::Offered;
        // The offerer controls ICE: it nominates the first pair that works, so as the DTLS
        // client its ClientHello follows at once, where the controlled side would wait half a
        // round trip more for the nomination (RFC 8842 lets an offer be `active`; browsers,
        // str0m and libdatachannel then answer `passive`). A later offer keeps the role.
        let setup = match self.dtls_client {
            None => sdp::Setup::Active,
            Some(true) => sdp::Setup::Active,
            Some(false) => sdp::Setup::Passive,
        };
        self.describe(setup, false)
    }

    /// New ICE credentials: the next offer restarts ICE (the path, DTLS and SCTP carry on).
    pub fn restart_ice(&mut self) {
        self.ice.ice_restart(IceCreds::new(), true);
    }

    /// The remote's offer: our answer.
    pub fn accept_offer(&mut self, now: Instant, offer: &str) -> Result<String, Error> {
        let d = sdp::parse(offer)?;
        if d.rejected {
            return Err(Error::Sdp("the offer's data section has port 0"));
        }
        if self.remote.is_none() {
            self.ice.set_controlling(d.ice_lite);
        }
        // We are the DTLS client unless the remote insists (or already is): browsers
        // offer `actpass` and answer `active` the same way, and Chromium gives channels
        // opened before the answer the server's stream ids.
        let client = match (self.dtls_client, d.setup) {
            (Some(c), _) => c,
            (None, sdp::Setup::Active) => false,
            (None, _) => true,
        };
        self.mid = d.mid.clone();
        self.take_remote(now, d, client)?;
        self.negotiation = Negotiation::Done;
        let setup = if client {
            sdp::Setup::Active
        } else {
            sdp::Setup::Passive
        };
        let answer = self.describe(setup, false);
        self.drive(now);
        Ok(answer)
    }

    /// The remote's answer to our offer.
    pub fn accept_answer(&mut self, now: Instant, answer: &str) -> Result<(), Error> {
        if self.negotiation != Negotiation::Offered {
            return Err(Error::NoOffer);
        }
        let d = sdp::parse(answer)?;
        if d.rejected {
            return Err(Error::Sdp("the answer refused the data section"));
        }
        let client = match (self.dtls_client, d.setup) {
            (Some(c), _) => c,
            (None, sdp::Setup::Active) => false,
            (None, sdp::Setup::Passive) => true,
            (None, sdp::Setup::ActPass) => return Err(Error::Sdp("a=setup:actpass in an answer")),
        };
        self.take_remote(now, d, client)?;
        self.negotiation = Negotiation::Done;
        self.drive(now);
        Ok(())
    }

    fn take_remote(
        &mut self,
        now: Instant,
        d: sdp::Description,
        client: bool,
    ) -> Result<(), Error> {
        if let Some(old) = &self.remote {
            if old.fingerprint != d.fingerprint {
                return Err(Error::Sdp("the remote's fingerprint changed"));
            }
            if old.ufrag != d.ufrag && self.negotiation != Negotiation::Offered {
                // The remote restarted ICE: so do we.
                self.ice.ice_restart(IceCreds::new(), true);
            }
        }
        self.ice.set_remote_credentials(IceCreds {
            ufrag: d.ufrag.clone(),
            pass: d.pwd.clone(),
        });
        for c in &d.candidates {
            self.add_remote_candidate_line(now, c);
        }
        self.dtls_client = Some(client);
        self.remote = Some(d);
        if self.dtls.is_none() {
            // ICE has checked the path, so no cookie exchange; a flight lost is sent again
            // from 250 ms on, backing off, until the handshake's 40 s are up.
            let config = dimpl::Config::builder()
                .use_server_cookie(false)
                .mtu(self.cfg.dtls_mtu)
                .max_queue_tx(256)
                .flight_start_rto(Duration::from_millis(250))
                .flight_retries(10)
                .build()
                .map_err(|e| Error::Dtls(e.to_string()))?;
            let mut dtls = dimpl::Dtls::new_12(Arc::new(config), self.cert.clone(), now);
            dtls.set_active(client);
            if !client {
                // A server is ready for the ClientHello whenever it comes (before its first
                // tick, dimpl would panic on one).
                dtls.handle_timeout(now)
                    .map_err(|e| Error::Dtls(e.to_string()))?;
            }
            self.dtls = Some(dtls);
            self.dtls_timeout = None;
        }
        // Checks start now, not at the agent's next tick.
        self.ice.handle_timeout(now);
        Ok(())
    }

    /// A remote candidate (`candidate:…`, with or without `a=`); a bad one is ignored.
    pub fn add_remote_candidate_line(&mut self, now: Instant, line: &str) {
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        match Candidate::from_sdp_string(line) {
            Ok(c) => self.add_remote_candidate(now, c),
            Err(e) => tracing::debug!("remote candidate ignored: {e}"),
        }
    }

    /// A remote candidate: checked at once.
    pub fn add_remote_candidate(&mut self, now: Instant, c: Candidate) {
        self.ice.add_remote_candidate(c);
        if self.remote.is_some() {
            self.ice.handle_timeout(now);
        }
    }

    /// A local candidate; the one to trickle if it was new (with its ufrag set).
    pub fn add_local_candidate(&mut self, c: Candidate) -> Option<Candidate> {
        self.ice.add_local_candidate(c).cloned()
    }

    /// A local candidate gone (a TURN allocation lost): its pairs are dropped.
    pub fn invalidate_candidate(&mut self, c: &Candidate) -> bool {
        self.ice.invalidate_candidate(c)
    }

    /// Whether a datagram from `source` is this connection's: STUN for its agent, or
    /// anything from an address its ICE knows (for a caller holding several connections on
    /// one socket).
    pub fn accepts(&self, source: SocketAddr, contents: &[u8]) -> bool {
        match contents.first() {
            Some(0..=3) => self.accepts_stun(contents),
            Some(_) => {
                self.path.is_some_and(|(_, _, remote)| remote == source)
                    || self.ice.has_viable_remote_candidate(source)
            }
            None => false,
        }
    }

    /// The round-trip time of the path in use, from ICE's checks.
    pub fn rtt(&self) -> Option<Duration> {
        self.ice.nominated_pair_rtt()
    }

    /// The remote's certificate fingerprint once DTLS has checked it against its description.
    pub fn verified_remote_fingerprint(&self) -> Option<[u8; 32]> {
        if self.verified {
            self.remote_fingerprint()
        } else {
            None
        }
    }

    /// Opens a channel (at once if SCTP is up, else when it comes up).
    pub fn open_channel(
        &mut self,
        now: Instant,
        cfg: ChannelConfig,
    ) -> Result<ChannelId, ChannelError> {
        let assoc = if self.sctp_up {
            self.sctp.as_mut()
        } else {
            None
        };
        self.channels.open(now, cfg, assoc, &mut self.events)
    }

    /// Closes a channel (RFC 8831 §6.7): [`Event::ChannelClose`] comes when both sides'
    /// streams are reset, and its stream id is free again.
    pub fn close_channel(&mut self, now: Instant, id: ChannelId) {
        let assoc = if self.sctp_up {
            self.sctp.as_mut()
        } else {
            None
        };
        self.channels.close(now, id, assoc, &mut self.events);
    }

    pub fn channel_label(&self, id: ChannelId) -> Option<&str> {
        self.channels.label(id)
    }

    pub fn is_channel_open(&self, id: ChannelId) -> bool {
        self.channels.is_open(id)
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Sends a message on an open channel; it leaves at the next [`Connection::poll_transmit`].
    pub fn send(
        &mut self,
        now: Instant,
        id: ChannelId,
        binary: bool,
        data: &[u8],
    ) -> Result<(), ChannelError> {
        let max = self.remote_max_message();
        let assoc = self.sctp.as_mut().ok_or(ChannelError::NotOpen)?;
        self.channels.send(now, id, binary, data, max, assoc)
    }

    /// With `sctp.hold_messages`: `bytes` of the messages delivered as `ChannelData` were
    /// read, and the receiver window may open by that much (the next `poll_transmit` tells
    /// the peer when it matters).
    pub fn release(&mut self, now: Instant, bytes: usize) {
        if let Some(a) = self.sctp.as_mut() {
            a.release(now, bytes);
        }
    }

    /// Bytes handed to SCTP and not yet acknowledged, over all channels.
    pub fn buffered(&self) -> usize {
        self.sctp.as_ref().map_or(0, Association::buffered)
    }

    /// A datagram that arrived on `destination` from `source`.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        if self.closed {
            return;
        }
        match contents.first() {
            Some(0..=3) => {
                let Ok(message) = is::stun::StunMessage::parse(contents) else {
                    return;
                };
                let packet = is::stun::StunPacket {
                    proto,
                    source,
                    destination,
                    message,
                };
                self.ice.handle_packet(now, packet);
                // The agent settles what a check changed (a nomination) on its clock.
                self.ice.handle_timeout(now);
            }
            Some(20..=63) => {
                if self.path.is_none() {
                    if self.dtls_client != Some(false) {
                        // A client's handshake starts on the nominated path: nothing
                        // before it is an answer.
                        return;
                    }
                    self.dtls_reply = Some((proto, destination, source));
                }
                if let Some(dtls) = self.dtls.as_mut()
                    && let Err(e) = dtls.handle_packet(contents)
                {
                    self.fail(Error::Dtls(e.to_string()));
                    return;
                }
            }
            _ => return,
        }
        self.drive(now);
    }

    /// Whether a STUN datagram is for this connection's ICE agent (its ufrag, or a reply to
    /// it): for a caller holding several connections on one socket.
    pub fn accepts_stun(&self, contents: &[u8]) -> bool {
        is::stun::StunMessage::parse(contents).is_ok_and(|m| self.ice.accepts_message(&m))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.ice.handle_timeout(now);
        if let Some(dtls) = self.dtls.as_mut()
            && self.path.or(self.dtls_reply).is_some()
            && self.dtls_timeout.is_none_or(|t| now >= t)
            && let Err(e) = dtls.handle_timeout(now)
        {
            self.fail(Error::Dtls(e.to_string()));
            return;
        }
        if let Some(a) = self.sctp.as_mut() {
            a.handle_timeout(now);
        }
        self.drive(now);
    }

    /// When [`Connection::handle_timeout`] is due.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let dtls = self.path.or(self.dtls_reply).and(self.dtls_timeout);
        let sctp = self.sctp.as_ref().and_then(Association::poll_timeout);
        [self.ice.poll_timeout(), dtls, sctp]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.out.is_empty() {
            self.flush_sctp(now);
        }
        if let Some(t) = self.ice.poll_transmit() {
            return Some(Transmit {
                proto: t.proto,
                source: t.source,
                destination: t.destination,
                contents: t.contents.into(),
            });
        }
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if let Some(Event::ChannelOpen(id, label)) = &e {
            tracing::debug!(?id, label, "channel open");
        }
        e
    }

    /// Closes: DTLS says close_notify (SCTP goes with it).
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        if let Some(dtls) = self.dtls.as_mut() {
            let _ = dtls.close();
        }
        self.pump_dtls(now);
        self.closed = true;
        self.events.push_back(Event::Closed(None));
    }

    fn fail(&mut self, e: Error) {
        if !self.closed {
            tracing::debug!("connection failed: {e}");
            self.closed = true;
            self.events.push_back(Event::Closed(Some(e)));
        }
    }

    /// Moves everything as far as it goes after an input.
    fn drive(&mut self, now: Instant) {
        while let Some(e) = self.ice.poll_event() {
            match e {
                IceAgentEvent::IceConnectionStateChange(s) => {
                    tracing::debug!(state = ?s, "ICE");
                    self.events.push_back(Event::Ice(s));
                }
                IceAgentEvent::NominatedSend {
                    proto,
                    source,
                    destination,
                } => {
                    tracing::debug!(?proto, %source, %destination, "ICE nominated");
                    self.path = Some((proto, source, destination));
                    self.events.push_back(Event::Path {
                        proto,
                        local: source,
                        remote: destination,
                    });
                    // DTLS starts (or goes on) on the path.
                    if let Some(dtls) = self.dtls.as_mut()
                        && self.sctp.is_none()
                        && let Err(e) = dtls.handle_timeout(now)
                    {
                        self.fail(Error::Dtls(e.to_string()));
                        return;
                    }
                }
                IceAgentEvent::IceRestart(_) | IceAgentEvent::DiscoveredRecv { .. } => {}
            }
        }
        self.pump_dtls(now);
        if self.closed {
            return;
        }
        self.run_sctp(now);
    }

    /// SCTP's state and the messages it has; its packets go into DTLS at the next
    /// [`Connection::poll_transmit`] (datagrams handled together get one SACK).
    fn run_sctp(&mut self, now: Instant) {
        let Some(a) = self.sctp.as_mut() else { return };
        match a.state() {
            // Up once messages can go: the first ride with our COOKIE ECHO.
            _ if a.can_send() && !self.sctp_up => {
                self.sctp_up = true;
                tracing::debug!(state = ?a.state(), "SCTP up");
                self.events.push_back(Event::Connected);
                let client = self.dtls_client.unwrap_or(true);
                self.channels.start(now, client, a, &mut self.events);
            }
            // The remote's SCTP lost its state and set the association up again (RFC 9260
            // §5.2.4) under the same DTLS session: its channels, and what was in flight, are
            // gone. The connection ends; the peer layer connects anew.
            _ if a.restarts() > 0 && !self.closed => {
                self.fail(Error::Sctp(
                    "was restarted by the remote: its channels are gone",
                ));
                return;
            }
            SctpState::Closed(why) if !self.closed => {
                self.fail(Error::Sctp(match why {
                    assoc::Closed::SetupFailed => "could not be set up",
                    assoc::Closed::Aborted => "was aborted by the remote",
                    assoc::Closed::ShutDown => "was shut down by the remote",
                    assoc::Closed::Violation => "was aborted: the remote broke the protocol",
                }));
                return;
            }
            _ => {}
        }
        while let Some(m) = a.poll_message() {
            // What the application does not get is read here (with `hold_messages`).
            let len = m.data.len();
            if !self.channels.on_message(now, m, a, &mut self.events) {
                a.release(now, len);
            }
        }
        while let Some(e) = a.poll_stream_event() {
            self.channels.on_stream_event(now, e, a, &mut self.events);
        }
    }

    /// SCTP's packets through DTLS.
    fn flush_sctp(&mut self, now: Instant) {
        while let Some(p) = self.sctp.as_mut().and_then(Association::poll_transmit) {
            if let Some(dtls) = self.dtls.as_mut()
                && let Err(e) = dtls.send_application_data(&p)
            {
                self.fail(Error::Dtls(e.to_string()));
                return;
            }
            self.pump_dtls(now);
        }
    }

    /// Drains DTLS's output: records onto the path, its events, application data into SCTP.
    fn pump_dtls(&mut self, now: Instant) {
        loop {
            let Some(dtls) = self.dtls.as_mut() else {
                return;
            };
            match dtls.poll_output(&mut self.buf) {
                dimpl::Output::Packet(p) => {
                    if let Some((proto, source, destination)) = self.path.or(self.dtls_reply) {
                        self.out.push_back(Transmit {
                            proto,
                            source,
                            destination,
                            contents: p.to_vec(),
                        });
                    }
                }
                dimpl::Output::BufferTooSmall { needed } => {
                    self.buf.resize(needed, 0);
                }
                dimpl::Output::Timeout(t) => {
                    self.dtls_timeout = Some(t);
                    return;
                }
                dimpl::Output::PeerCert(der) => {
                    let expected = self.remote.as_ref().map(|r| r.fingerprint);
                    if expected == Some(sha256(der)) {
                        self.verified = true;
                    } else {
                        self.fail(Error::FingerprintMismatch);
                        return;
                    }
                }
                dimpl::Output::Connected => {
                    if !self.verified {
                        self.fail(Error::FingerprintMismatch);
                        return;
                    }
                    tracing::debug!("DTLS connected");
                    // Both sides send INIT at once (RFC 8841 §10.2's simultaneous open).
                    self.sctp = Some(Association::connect(self.cfg.sctp, now, self.random));
                }
                dimpl::Output::ApplicationData(data) => {
                    if let Some(a) = self.sctp.as_mut() {
                        a.handle_packet(now, data);
                    }
                }
                dimpl::Output::KeyingMaterial(..) => {}
                dimpl::Output::CloseNotify => {
                    self.closed = true;
                    self.events.push_back(Event::Closed(None));
                    return;
                }
                _ => {}
            }
        }
    }
}
