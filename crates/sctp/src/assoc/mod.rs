//! An association's setup (RFC 9260 §5): INIT, INIT ACK with a State Cookie, COOKIE ECHO,
//! COOKIE ACK — from both sides at once, as WebRTC peers do (each sends INIT; an INIT met in
//! COOKIE-WAIT is answered with the same tag and TSN its own INIT carried, §5.2.1) — with the
//! verification tag checked on every packet (§8.5), INIT and COOKIE ECHO sent again on the T1
//! timer with back-off, and ABORT; shutdown from either side or both at once (§9.2).
//! Data transfer and SACKs come on top of this.
//! Sans-IO: packets in and out as bytes, time passed in.

use std::collections::VecDeque;
use std::time::Instant;

mod data;
mod reconfig;

pub use data::{SendError, Stats};
pub use reconfig::{MAX_STREAMS_PER_REQUEST, StreamEvent};

use crate::chunk::{Chunk, Init, Params, cause, kind, param, u32_at};
use crate::cookie::{self, Cookie, PeerInit, Secret};
use crate::outstanding::Reliability;
use crate::packet::{Header, Packet, Writer};
use crate::reassembly::Message;
use crate::timing::{Rto, RtoLimits};

/// Settings of an association.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The SCTP port on both sides (5000 in WebRTC unless the SDP says otherwise).
    pub port: u16,
    /// The receiver window advertised.
    pub a_rwnd: u32,
    /// Streams offered each way.
    pub streams: u16,
    /// How long a State Cookie this side makes stays good.
    pub cookie_lifetime_ms: u64,
    /// INIT or COOKIE ECHO sent at most this many times before the setup fails.
    pub max_init_attempts: u32,
    pub rto: RtoLimits,
    /// Packets this size at most (the path's MTU less IP, UDP and DTLS overhead).
    pub mtu: usize,
    /// Bytes of messages waiting to be sent at most (beyond: `QueueFull`).
    pub max_queued: usize,
    /// Messages taken with [`Association::poll_message`] keep their room in the receiver
    /// window until [`Association::release`] gives it back: the window then says what the
    /// application has not read yet, and a reader that falls behind slows the sender instead
    /// of piling messages up in memory. Off, a message's room is free once it is taken.
    pub hold_messages: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 5000,
            a_rwnd: 5 << 20,
            streams: 65535,
            cookie_lifetime_ms: 60_000,
            max_init_attempts: 8,
            rto: RtoLimits::default(),
            mtu: 1200,
            max_queued: 16 << 20,
            hold_messages: false,
        }
    }
}

/// Where the association is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    CookieWait,
    CookieEchoed,
    Established,
    /// The peer sent SHUTDOWN: what is in flight is finished, then SHUTDOWN ACK goes; no new
    /// messages are taken.
    ShuttingDown,
    /// We shut down ([`Association::shutdown`]): what is queued and in flight is finished,
    /// then SHUTDOWN goes; no new messages are taken. What the peer sends is still received.
    ShutdownPending,
    /// Our SHUTDOWN went (again on T2, and after every packet of the peer's DATA) until the
    /// peer's SHUTDOWN ACK.
    ShutdownSent,
    Closed(Closed),
}

/// Why it closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The setup went unanswered.
    SetupFailed,
    /// The peer sent ABORT.
    Aborted,
    /// Shut down gracefully, by either side (SHUTDOWN, SHUTDOWN ACK, SHUTDOWN COMPLETE), or
    /// given up when the peer stopped answering its T2 exchange.
    ShutDown,
    /// We aborted it: the peer broke the protocol (a DATA chunk without data).
    Violation,
}

/// What the peer's INIT or INIT ACK said.
fn peer_init(i: &Init<'_>) -> PeerInit {
    PeerInit {
        tag: i.tag,
        a_rwnd: i.a_rwnd,
        outbound_streams: i.outbound_streams,
        inbound_streams: i.inbound_streams,
        initial_tsn: i.initial_tsn,
        forward_tsn: i.params.get(param::FORWARD_TSN_SUPPORTED).is_some(),
        reconfig: i.params.supports(kind::RECONFIG),
    }
}

/// One association.
#[derive(Debug)]
pub struct Association {
    cfg: Config,
    state: State,
    local_tag: u32,
    local_initial_tsn: u32,
    secret: Secret,
    /// What the peer said, once it did (its INIT, INIT ACK or our cookie).
    peer: Option<PeerInit>,
    /// The cookie to echo (from the peer's INIT ACK), while COOKIE-ECHOED.
    echo: Option<Vec<u8>>,
    /// The first COOKIE ECHO is made at the next flush, with the DATA queued by then.
    echo_due: bool,
    rto: Rto,
    /// T1 (T2 when shutting down): when INIT, COOKIE ECHO, SHUTDOWN or SHUTDOWN ACK goes
    /// again, and how many times it went.
    t1: Option<(Instant, u32)>,
    out: VecDeque<Vec<u8>>,
    /// The association's clock starts here (cookies carry milliseconds since).
    start: Instant,
    /// Data transfer, once established.
    flow: Option<data::Flow>,
    /// Times the peer restarted the association (RFC 9260 §5.2.4): what was queued and in
    /// flight either way is gone, and the streams start over.
    restarts: u32,
    /// Messages were queued, or packets handled, and nothing is put into packets until the
    /// next [`Association::poll_transmit`] (at the latest such time): messages queued together
    /// share packets, and packets handled together get one SACK.
    unflushed: Option<Instant>,
}

impl Association {
    /// Starts the setup at `now`: an INIT goes out. `random` gives the local verification
    /// tag (bytes 0..4, never zero), the initial TSN (4..8) and the cookie secret (8..40).
    pub fn connect(cfg: Config, now: Instant, random: [u8; 40]) -> Association {
        let mut secret = [0; 32];
        secret.copy_from_slice(&random[8..]);
        let mut a = Association {
            cfg,
            state: State::CookieWait,
            local_tag: u32_at(&random, 0).max(1),
            local_initial_tsn: u32_at(&random, 4),
            secret: Secret::new(secret),
            peer: None,
            echo: None,
            echo_due: false,
            rto: Rto::new(cfg.rto),
            t1: None,
            out: VecDeque::new(),
            start: now,
            flow: None,
            restarts: 0,
            unflushed: None,
        };
        a.send_init(now, 1);
        a
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_millis() as u64
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// What the peer said in its INIT or INIT ACK.
    pub fn peer(&self) -> Option<PeerInit> {
        self.peer
    }

    pub fn local_tag(&self) -> u32 {
        self.local_tag
    }

    /// How many times the peer restarted the association (RFC 9260 §5.2.4: its INIT and
    /// COOKIE ECHO while established, the cookie tied to this association's tags). Each
    /// restart dropped what was queued and in flight both ways and started the streams over.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if let Some(now) = self.unflushed.take() {
            self.flush(now);
        }
        self.out.pop_front()
    }

    /// When [`Association::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let flow = self.flowing().and_then(data::Flow::next_timeout);
        [self.t1.map(|(at, _)| at), flow]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether messages may be sent: once the peer's INIT ACK came (the first go with our
    /// COOKIE ECHO), or its COOKIE ECHO.
    pub fn can_send(&self) -> bool {
        matches!(self.state, State::CookieEchoed | State::Established)
    }

    /// The data transfer, once it runs on its own (established): while COOKIE-ECHOED the
    /// flow only takes messages, and what it sends rides with COOKIE ECHO.
    fn flowing(&self) -> Option<&data::Flow> {
        self.flow
            .as_ref()
            .filter(|_| self.shutting_or_established())
    }

    /// Established, or shutting down with data still moving.
    fn shutting_or_established(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::ShuttingDown | State::ShutdownPending | State::ShutdownSent
        )
    }

    /// SHUTDOWN-ACK-SENT: the peer shut down and our SHUTDOWN ACK went (T2 runs for it).
    fn shutdown_ack_sent(&self) -> bool {
        self.state == State::ShuttingDown && self.t1.is_some()
    }

    /// Shuts the association down gracefully (RFC 9260 §9.2): no new messages are taken,
    /// what is queued and in flight is finished, then SHUTDOWN, the peer's SHUTDOWN ACK, our
    /// SHUTDOWN COMPLETE — `State::Closed(Closed::ShutDown)`. Before the association is
    /// established nothing was delivered to finish: it closes at once.
    pub fn shutdown(&mut self, now: Instant) {
        match self.state {
            State::Established => {
                self.state = State::ShutdownPending;
                self.unflushed = Some(now);
            }
            State::CookieWait | State::CookieEchoed => {
                self.t1 = None;
                self.state = State::Closed(Closed::ShutDown);
            }
            _ => {}
        }
    }

    /// Queues a message on `stream` (ordered unless `unordered`; given up past `reliability`).
    /// It goes into packets at the next [`Association::poll_transmit`].
    pub fn send_message(
        &mut self,
        now: Instant,
        stream: u16,
        ppid: u32,
        unordered: bool,
        reliability: Reliability,
        data: &[u8],
    ) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::NotEstablished);
        }
        let flow = self.flow.as_mut().ok_or(SendError::NotEstablished)?;
        flow.send(stream, ppid, unordered, reliability, data)?;
        self.unflushed = Some(now);
        Ok(())
    }

    /// The next message received, whole and in order.
    pub fn poll_message(&mut self) -> Option<Message> {
        self.flow.as_mut()?.take_message()
    }

    /// With [`Config::hold_messages`]: `bytes` of the messages taken were read, and their
    /// room in the receiver window is free again (a SACK tells the peer at once when that
    /// opens the window by a quarter or more).
    pub fn release(&mut self, now: Instant, bytes: usize) {
        if let Some(flow) = self.flow.as_mut()
            && flow.release(bytes)
        {
            self.unflushed = Some(now);
        }
    }

    /// Resets our outgoing `streams` (a data channel closes, RFC 8831 §6.7): once what is
    /// queued on them has gone, a request goes to the peer; [`StreamEvent::OutgoingReset`]
    /// says when it is over. Nothing may be sent on them until then.
    pub fn reset_streams(&mut self, now: Instant, streams: &[u16]) {
        if let Some(flow) = self.flow.as_mut() {
            flow.reset_streams(streams);
            self.unflushed = Some(now);
        }
    }

    /// The next thing stream resets did.
    pub fn poll_stream_event(&mut self) -> Option<StreamEvent> {
        self.flow.as_mut()?.resets.poll_event()
    }

    /// Bytes of messages queued or in flight.
    pub fn buffered(&self) -> usize {
        self.flow.as_ref().map_or(0, data::Flow::buffered)
    }

    /// What the data transfer has done.
    pub fn stats(&self) -> Stats {
        self.flow.as_ref().map_or_else(Stats::default, |f| f.stats)
    }

    /// The congestion window (for tests and stats).
    pub fn cwnd(&self) -> usize {
        self.flow.as_ref().map_or(0, data::Flow::cwnd)
    }

    /// Packets for what is due on the data side.
    fn flush(&mut self, now: Instant) {
        if matches!(self.state, State::Closed(_)) {
            return;
        }
        if self.state == State::CookieEchoed {
            if std::mem::take(&mut self.echo_due) {
                self.send_cookie_echo(now, 1);
            }
            return;
        }
        let (Some(flow), Some(peer)) = (self.flow.as_mut(), self.peer) else {
            return;
        };
        let header = Header {
            src_port: self.cfg.port,
            dst_port: self.cfg.port,
            vtag: peer.tag,
        };
        let out = &mut self.out;
        flow.flush(now, &self.rto, |chunks| {
            let mut w = Writer::new(header, Vec::new());
            for c in chunks {
                if w.push(c).is_err() {
                    return;
                }
            }
            out.push_back(w.finish());
        });
        // Shutting down: once everything sent is acknowledged, SHUTDOWN ACK, or our SHUTDOWN
        // (RFC 9260 §9.2).
        if flow.buffered() == 0 {
            match self.state {
                State::ShuttingDown if self.t1.is_none() => self.send_shutdown_ack(now, 1),
                State::ShutdownPending => {
                    self.state = State::ShutdownSent;
                    self.send_shutdown(now, 1);
                }
                _ => {}
            }
        }
    }

    /// SHUTDOWN, acknowledging what we received as a SACK without gap blocks would.
    fn send_shutdown(&mut self, now: Instant, attempt: u32) {
        if let (Some(peer), Some(flow)) = (self.peer, self.flow.as_ref()) {
            let cum_tsn = flow.cum_tsn();
            self.send(peer.tag, &Chunk::Shutdown { cum_tsn });
            self.arm_t1(now, attempt);
        }
    }

    fn send_shutdown_ack(&mut self, now: Instant, attempt: u32) {
        if let Some(peer) = self.peer {
            self.send(peer.tag, &Chunk::ShutdownAck);
            self.arm_t1(now, attempt);
        }
    }

    fn header(&self, vtag: u32) -> Header {
        Header {
            src_port: self.cfg.port,
            dst_port: self.cfg.port,
            vtag,
        }
    }

    /// Our INIT or INIT ACK (with `cookie`), with our tag and initial TSN.
    fn init_chunk<'a>(&self, params: &'a mut Vec<u8>, cookie: Option<&[u8]>) -> Init<'a> {
        self.init_chunk_as(params, cookie, self.local_tag, self.local_initial_tsn)
    }

    fn init_chunk_as<'a>(
        &self,
        params: &'a mut Vec<u8>,
        cookie: Option<&[u8]>,
        tag: u32,
        initial_tsn: u32,
    ) -> Init<'a> {
        params.clear();
        // Parameters cannot be too large here: the values are ours and small.
        let _ = Params::push(param::FORWARD_TSN_SUPPORTED, &[], params);
        let _ = Params::push(
            param::SUPPORTED_EXTENSIONS,
            &[kind::FORWARD_TSN, kind::RECONFIG],
            params,
        );
        if let Some(c) = cookie {
            let _ = Params::push(param::STATE_COOKIE, c, params);
        }
        Init {
            tag,
            a_rwnd: self.cfg.a_rwnd,
            outbound_streams: self.cfg.streams,
            inbound_streams: self.cfg.streams,
            initial_tsn,
            params: Params::raw(params),
        }
    }

    fn send_init(&mut self, now: Instant, attempt: u32) {
        let mut params = Vec::new();
        let init = self.init_chunk(&mut params, None);
        self.send(0, &Chunk::Init(init));
        self.arm_t1(now, attempt);
    }

    /// COOKIE ECHO. The first carries as much queued DATA as fits its packet (RFC 9260 §5.1),
    /// and nothing else goes until the peer's COOKIE ACK or COOKIE ECHO; sent again on T1, it
    /// goes alone: that DATA is T3's once established.
    fn send_cookie_echo(&mut self, now: Instant, attempt: u32) {
        let (Some(cookie), Some(peer)) = (self.echo.clone(), self.peer) else {
            return;
        };
        let mut w = Writer::new(self.header(peer.tag), Vec::new());
        // Setup chunks are small: it fits.
        if w.push(&Chunk::CookieEcho(&cookie)).is_err() {
            return;
        }
        if attempt == 1
            && let Some(flow) = self.flow.as_mut()
        {
            let room = self.cfg.mtu.saturating_sub(w.len());
            flow.bundle(now, &self.rto, room, |chunks| {
                for c in chunks {
                    // Sized to fit above; a chunk that did not would stay in flight for T3.
                    let _ = w.push(c);
                }
            });
        }
        self.out.push_back(w.finish());
        self.arm_t1(now, attempt);
    }

    fn arm_t1(&mut self, now: Instant, attempt: u32) {
        self.t1 = Some((now + self.rto.rto(), attempt));
    }

    fn send(&mut self, vtag: u32, chunk: &Chunk<'_>) {
        let mut w = Writer::new(self.header(vtag), Vec::new());
        // Setup chunks are small: they always fit.
        if w.push(chunk).is_ok() {
            self.out.push_back(w.finish());
        }
    }

    /// Time passes: T1 sends INIT or COOKIE ECHO again, or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.flowing().is_some()
            && let Some(flow) = self.flow.as_mut()
        {
            flow.on_timeout(now, &mut self.rto);
            self.flush(now);
        }
        let Some((at, attempt)) = self.t1 else { return };
        if now < at {
            return;
        }
        if attempt >= self.cfg.max_init_attempts {
            self.t1 = None;
            self.state = State::Closed(match self.state {
                State::ShuttingDown | State::ShutdownSent => Closed::ShutDown,
                _ => Closed::SetupFailed,
            });
            return;
        }
        self.rto.back_off();
        match self.state {
            State::CookieWait => self.send_init(now, attempt + 1),
            State::CookieEchoed => self.send_cookie_echo(now, attempt + 1),
            State::ShuttingDown => self.send_shutdown_ack(now, attempt + 1),
            State::ShutdownSent => self.send_shutdown(now, attempt + 1),
            _ => self.t1 = None,
        }
    }

    /// A packet from the peer. Anything malformed, with a wrong verification tag, or not
    /// meant for this state is dropped (returns false).
    pub fn handle_packet(&mut self, now: Instant, bytes: &[u8]) -> bool {
        if matches!(self.state, State::Closed(_)) {
            return false;
        }
        let Ok(p) = Packet::parse(bytes) else {
            return false;
        };
        let chunks: Vec<Chunk<'_>> = p.chunks().map_while(Result::ok).collect();
        let Some(first) = chunks.first() else {
            return false;
        };
        // §8.5.1: INIT alone with tag 0; ABORT and SHUTDOWN COMPLETE may reflect the sender's
        // tag; a COOKIE ECHO carries its cookie's (checked with the cookie: ours, or a
        // restart's new one); the rest carry ours.
        let vtag_ok = match first {
            Chunk::Init(_) => p.header.vtag == 0 && chunks.len() == 1,
            Chunk::CookieEcho(_) => true,
            Chunk::Abort {
                reflected: true, ..
            }
            | Chunk::ShutdownComplete { reflected: true } => {
                self.peer.is_some_and(|peer| p.header.vtag == peer.tag)
            }
            _ => p.header.vtag == self.local_tag,
        };
        if !vtag_ok {
            return false;
        }
        let echo = matches!(first, Chunk::CookieEcho(_));
        let mut handled = false;
        let mut heartbeat = false;
        let mut had_data = false;
        for (i, c) in chunks.iter().enumerate() {
            // What follows a COOKIE ECHO counts only under the tag it set up (ours, or a
            // restart's new one).
            if echo && i > 0 && p.header.vtag != self.local_tag {
                break;
            }
            had_data |= matches!(c, Chunk::Data(_));
            if let Chunk::Heartbeat(_) = c {
                // One HEARTBEAT ACK per packet at most: a packet full of HEARTBEATs does not
                // make a burst of packets.
                if std::mem::replace(&mut heartbeat, true) {
                    continue;
                }
            }
            handled |= self.handle_chunk(now, p.header.vtag, c);
        }
        if echo && p.header.vtag != self.local_tag {
            // A COOKIE ECHO that set nothing up: nothing of its packet counted.
            return false;
        }
        if let Some(flow) = self.flow.as_mut() {
            flow.after_packet(now, had_data);
            // §9.2: in SHUTDOWN-SENT every packet with DATA is answered with SHUTDOWN (its
            // cumulative TSN acknowledges), T2 started again.
            if had_data && self.state == State::ShutdownSent {
                let attempt = self.t1.map_or(1, |(_, n)| n);
                self.send_shutdown(now, attempt);
            }
            // Packets (a SACK, data the window now admits) are made at the next
            // `poll_transmit`: packets handled together get one SACK.
            self.unflushed = Some(now);
        }
        handled
    }

    /// One chunk of a packet that carried `vtag` (a COOKIE ECHO's must be its cookie's).
    fn handle_chunk(&mut self, now: Instant, vtag: u32, c: &Chunk<'_>) -> bool {
        let now_ms = self.ms(now);
        match (c, self.state) {
            // Their INIT, in any state before ours is answered: an INIT ACK with our own tag
            // and TSN (as our INIT said), and a cookie with what theirs said. No state kept.
            (Chunk::Init(init), State::CookieWait | State::CookieEchoed) => {
                if init.tag == 0 {
                    return false;
                }
                let peer = peer_init(init);
                let cookie = Cookie {
                    created_ms: now_ms,
                    local_tag: self.local_tag,
                    local_initial_tsn: self.local_initial_tsn,
                    peer,
                    tie_tags: None,
                }
                .seal(&self.secret);
                let mut params = Vec::new();
                let ack = self.init_chunk(&mut params, Some(&cookie));
                self.send(peer.tag, &Chunk::InitAck(ack));
                true
            }
            // An INIT while established: the peer may have restarted (§5.2.2). The INIT ACK
            // offers fresh tags and a cookie tied to this association; still no state kept.
            // In SHUTDOWN-ACK-SENT it is dropped: T2 sends the SHUTDOWN ACK again (§9.2).
            (Chunk::Init(init), _)
                if self.shutting_or_established() && !self.shutdown_ack_sent() =>
            {
                let Some(current) = self.peer else {
                    return false;
                };
                if init.tag == 0 {
                    return false;
                }
                let peer = peer_init(init);
                let mut input = Vec::with_capacity(24);
                input.extend_from_slice(&now_ms.to_be_bytes());
                input.extend_from_slice(&self.local_tag.to_be_bytes());
                input.extend_from_slice(&peer.tag.to_be_bytes());
                input.extend_from_slice(&peer.initial_tsn.to_be_bytes());
                input.extend_from_slice(&self.restarts.to_be_bytes());
                let fresh = self.secret.derive(&input);
                let (tag, tsn) = (u32_at(&fresh, 0).max(1), u32_at(&fresh, 4));
                let cookie = Cookie {
                    created_ms: now_ms,
                    local_tag: tag,
                    local_initial_tsn: tsn,
                    peer,
                    tie_tags: Some((self.local_tag, current.tag)),
                }
                .seal(&self.secret);
                let mut params = Vec::new();
                let ack = self.init_chunk_as(&mut params, Some(&cookie), tag, tsn);
                self.send(peer.tag, &Chunk::InitAck(ack));
                true
            }
            (Chunk::InitAck(ack), State::CookieWait) => {
                let Some(c) = ack.params.get(param::STATE_COOKIE) else {
                    return false;
                };
                if ack.tag == 0 || c.is_empty() {
                    return false;
                }
                self.peer = Some(peer_init(ack));
                self.echo = Some(c.to_vec());
                self.state = State::CookieEchoed;
                // Messages may be queued from now on; the COOKIE ECHO waits for the next
                // flush to carry the first of them.
                self.start_flow();
                self.echo_due = true;
                self.unflushed = Some(now);
                self.arm_t1(now, 1);
                true
            }
            (Chunk::CookieEcho(bytes), _) => {
                let Ok(cookie) =
                    Cookie::open(bytes, &self.secret, now_ms, self.cfg.cookie_lifetime_ms)
                else {
                    return false;
                };
                if cookie.local_tag != vtag {
                    return false;
                }
                if cookie.local_tag != self.local_tag {
                    return self.restart(cookie);
                }
                if !matches!(
                    self.state,
                    State::CookieWait | State::CookieEchoed | State::Established
                ) {
                    return false;
                }
                self.peer = Some(cookie.peer);
                self.send(cookie.peer.tag, &Chunk::CookieAck);
                self.established();
                true
            }
            (Chunk::CookieAck, State::CookieEchoed) => {
                self.established();
                true
            }
            (Chunk::Data(d), _) if self.shutting_or_established() => {
                if d.payload.is_empty() {
                    // RFC 9260 §6.2: an ABORT with "No User Data" and its TSN.
                    self.abort(cause::NO_USER_DATA, &d.tsn.to_be_bytes());
                    return true;
                }
                if let Some(flow) = self.flow.as_mut() {
                    flow.on_data(d);
                }
                true
            }
            (Chunk::Sack(sack), _) if self.shutting_or_established() => {
                if let Some(flow) = self.flow.as_mut() {
                    flow.on_sack(now, sack, &mut self.rto);
                }
                true
            }
            (Chunk::ForwardTsn(f), _) if self.shutting_or_established() => {
                if let Some(flow) = self.flow.as_mut() {
                    flow.on_forward_tsn(f);
                }
                true
            }
            (Chunk::Reconfig(params), _) if self.shutting_or_established() => {
                if let Some(flow) = self.flow.as_mut() {
                    flow.on_reconfig(now, *params, &self.rto);
                }
                true
            }
            (Chunk::Heartbeat(info), _) if self.shutting_or_established() => {
                if let Some(peer) = self.peer {
                    self.send(peer.tag, &Chunk::HeartbeatAck(info));
                }
                true
            }
            (Chunk::Shutdown { cum_tsn }, _) if self.shutting_or_established() => {
                if let Some(flow) = self.flow.as_mut() {
                    flow.on_cum_ack(now, *cum_tsn, &mut self.rto);
                }
                if self.state == State::ShutdownSent {
                    // Both sides shut down at once: our SHUTDOWN is answered by the SHUTDOWN
                    // ACK that goes now (nothing of ours is left in flight).
                    self.t1 = None;
                }
                self.state = State::ShuttingDown;
                true
            }
            // The answer to our SHUTDOWN — or, both shutting down, to our SHUTDOWN ACK.
            (Chunk::ShutdownAck, _)
                if self.state == State::ShutdownSent || self.shutdown_ack_sent() =>
            {
                if let Some(peer) = self.peer {
                    self.send(peer.tag, &Chunk::ShutdownComplete { reflected: false });
                }
                self.t1 = None;
                self.state = State::Closed(Closed::ShutDown);
                true
            }
            (Chunk::ShutdownComplete { .. }, State::ShuttingDown) => {
                self.t1 = None;
                self.state = State::Closed(Closed::ShutDown);
                true
            }
            (Chunk::Abort { .. }, _) => {
                self.t1 = None;
                self.state = State::Closed(Closed::Aborted);
                true
            }
            _ => false,
        }
    }

    /// A COOKIE ECHO with new tags (§5.2.4 case A): a restart of this association if its
    /// cookie is tied to our current tags and the peer's tag is new — the peer lost its state.
    /// Everything starts over under the new tags: what was queued and in flight is dropped.
    /// In SHUTDOWN-ACK-SENT it is dropped (the shutdown finishes first).
    fn restart(&mut self, cookie: Cookie) -> bool {
        let Some(current) = self.peer else {
            return false;
        };
        let tied = cookie.tie_tags == Some((self.local_tag, current.tag));
        if !tied
            || cookie.peer.tag == current.tag
            || !self.shutting_or_established()
            || self.shutdown_ack_sent()
        {
            return false;
        }
        self.local_tag = cookie.local_tag;
        self.local_initial_tsn = cookie.local_initial_tsn;
        self.peer = Some(cookie.peer);
        self.flow = None;
        self.rto = Rto::new(self.cfg.rto);
        self.out.clear();
        self.unflushed = None;
        self.restarts += 1;
        self.send(cookie.peer.tag, &Chunk::CookieAck);
        self.established();
        true
    }

    /// Ends the association over the peer's breach of the protocol: ABORT with `code`.
    fn abort(&mut self, code: u16, info: &[u8]) {
        let mut causes = Vec::new();
        // One small cause: it fits.
        let _ = Params::push(code, info, &mut causes);
        if let Some(peer) = self.peer {
            self.send(
                peer.tag,
                &Chunk::Abort {
                    reflected: false,
                    causes: Params::raw(&causes),
                },
            );
        }
        self.t1 = None;
        self.state = State::Closed(Closed::Violation);
    }

    fn established(&mut self) {
        self.t1 = None;
        self.echo = None;
        self.echo_due = false;
        self.state = State::Established;
        self.start_flow();
    }

    /// The data transfer, once the peer's INIT or INIT ACK is known.
    fn start_flow(&mut self) {
        if let (None, Some(peer)) = (&self.flow, self.peer) {
            self.flow = Some(data::Flow::new(data::FlowConfig {
                mtu: self.cfg.mtu,
                a_rwnd: self.cfg.a_rwnd as usize,
                max_queued: self.cfg.max_queued,
                local_initial_tsn: self.local_initial_tsn,
                peer_initial_tsn: peer.initial_tsn,
                peer_rwnd: peer.a_rwnd as usize,
                peer_forward_tsn: peer.forward_tsn,
                hold_messages: self.cfg.hold_messages,
            }));
        }
    }
}

/// The length of the State Cookie this crate makes (for tests and limits).
pub const COOKIE_LEN: usize = cookie::LEN;

#[cfg(test)]
mod tests;
