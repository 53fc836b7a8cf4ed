//! Data transfer on an established association: messages cut into DATA chunks and bundled into
//! packets within the congestion and receiver windows, SACKs (after every second packet with
//! data, at once on a gap or duplicate, else within 200 ms) and what they acknowledge, the T3
//! timer, fast retransmission and recovery (losses found by three misses or by RACK's send
//! times), tail loss probes, FORWARD TSN for what partial reliability gave up, and messages
//! put back together on the way in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::reconfig::{Resets, StreamEvent};
use crate::chunk::{Chunk, Data, ForwardTsn, Params, Sack};
use crate::outstanding::{Outstanding, Reliability, Sent};
use crate::reassembly::{Message, Reassembly};
use crate::received::{Arrival, Received};
use crate::timing::{Congestion, Rto};
use crate::tsn::Tsn;

/// A SACK waits at most this long for a second packet with data.
const SACK_DELAY: Duration = Duration::from_millis(200);
/// DATA chunk header bytes and the packet's common header.
const OVERHEAD: usize = 16 + 12;

/// Why a message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the association is not established")]
    NotEstablished,
    #[error("an empty message (send one byte with the empty-message PPID)")]
    Empty,
    #[error("the send queue is full")]
    QueueFull,
}

/// What an association's data transfer has done (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// DATA chunks sent, first times and again.
    pub chunks_sent: u64,
    pub chunks_retransmitted: u64,
    /// Fast recoveries entered.
    pub fast_recoveries: u64,
    /// T3 expiries.
    pub timeouts: u64,
    /// Tail loss probes sent (a packet after two round trips without a SACK).
    pub tail_probes: u64,
    /// DATA chunks received and dropped for want of room in our receiver window.
    pub window_drops: u64,
}

/// Packets that may leave back to back when pacing allows (one GSO batch's worth).
const PACE_BURST: usize = 16;

/// The shortest wait pacing asks for.
const PACE_TICK: Duration = Duration::from_micros(250);

/// A SACK chunk's header and fixed fields.
const SACK_FIXED: usize = 16;
/// Duplicate TSNs reported per SACK at most.
const MAX_DUPS: usize = 16;

/// A message waiting to be cut into chunks.
#[derive(Debug)]
struct Pending {
    stream: u16,
    ssn: u16,
    ppid: u32,
    unordered: bool,
    reliability: Reliability,
    data: Vec<u8>,
    offset: usize,
}

/// The data-transfer state of an established association.
#[derive(Debug)]
pub(super) struct Flow {
    mtu: usize,
    a_rwnd: usize,
    max_queued: usize,
    peer_rwnd: usize,
    peer_forward_tsn: bool,
    tx: Outstanding,
    rx: Received,
    pub(super) reasm: Reassembly,
    cc: Congestion,
    queue: VecDeque<Pending>,
    queued: usize,
    ssn: HashMap<u16, u16>,
    t3: Option<Instant>,
    /// The tail loss probe's timer (RFC 8985 §7.2), and a probe to send at the next flush.
    pto: Option<Instant>,
    probe_due: bool,
    /// When RACK looks again at chunks inside their reordering window.
    recheck_at: Option<Instant>,
    /// In fast recovery until the ack point reaches this TSN.
    recovery: Option<Tsn>,
    /// Packets with data since the last SACK, whether the next SACK must go at once, and the
    /// latest it goes otherwise.
    unacked_packets: u32,
    sack_now: bool,
    sack_at: Option<Instant>,
    /// Fast retransmission began: its first packet goes at the next flush whatever the
    /// window.
    fast_pending: bool,
    pub(super) stats: Stats,
    /// Pacing: bytes of new data that may leave now, when they were last topped up, and
    /// when the next chunk may go if they ran out.
    pace_tokens: f64,
    pace_last: Option<Instant>,
    pace_next: Option<Instant>,
    /// The last FORWARD TSN point sent.
    forwarded: Option<Tsn>,
    /// Stream resets both ways.
    pub(super) resets: Resets,
    /// Bytes of messages taken and not yet released (with `hold_messages`), and the window
    /// the last SACK advertised.
    hold_messages: bool,
    held: usize,
    advertised: usize,
    /// The peer's last SACK advertised no room (less than a packet): what we send is a
    /// window probe, which it drops while its application does not read.
    peer_window_closed: bool,
}

/// Settings from the association.
#[derive(Debug, Clone, Copy)]
pub(super) struct FlowConfig {
    pub mtu: usize,
    pub a_rwnd: usize,
    pub max_queued: usize,
    pub local_initial_tsn: u32,
    pub peer_initial_tsn: u32,
    pub peer_rwnd: usize,
    pub peer_forward_tsn: bool,
    pub hold_messages: bool,
}

impl Flow {
    pub(super) fn new(c: FlowConfig) -> Flow {
        let rx = Received::new(Tsn(c.peer_initial_tsn));
        let reasm = Reassembly::new(rx.cum_tsn());
        Flow {
            mtu: c.mtu,
            a_rwnd: c.a_rwnd,
            max_queued: c.max_queued,
            peer_rwnd: c.peer_rwnd,
            peer_forward_tsn: c.peer_forward_tsn,
            tx: Outstanding::new(Tsn(c.local_initial_tsn)),
            rx,
            reasm,
            cc: Congestion::new(c.mtu, c.peer_rwnd),
            queue: VecDeque::new(),
            queued: 0,
            ssn: HashMap::new(),
            t3: None,
            pto: None,
            probe_due: false,
            recheck_at: None,
            recovery: None,
            unacked_packets: 0,
            sack_now: false,
            sack_at: None,
            fast_pending: false,
            stats: Stats::default(),
            pace_tokens: 0.0,
            pace_last: None,
            pace_next: None,
            forwarded: None,
            resets: Resets::new(c.local_initial_tsn, c.peer_initial_tsn),
            hold_messages: c.hold_messages,
            held: 0,
            advertised: c.a_rwnd,
            peer_window_closed: false,
        }
    }

    /// The receiver window left: what reassembly and the application's unread messages do
    /// not take.
    fn rwnd(&self) -> usize {
        self.a_rwnd
            .saturating_sub(self.reasm.buffered() + self.held)
    }

    /// Gives back the room of `bytes` of messages read; whether a SACK should tell the peer
    /// (the window opened by a quarter or more since the last one).
    pub(super) fn release(&mut self, bytes: usize) -> bool {
        self.held = self.held.saturating_sub(bytes);
        if self.rwnd() >= self.advertised + self.a_rwnd / 4 {
            self.sack_now = true;
        }
        self.sack_now
    }

    /// Bytes waiting to be sent and in flight.
    pub(super) fn buffered(&self) -> usize {
        self.queued + self.tx.in_flight()
    }

    pub(super) fn cwnd(&self) -> usize {
        self.cc.cwnd()
    }

    pub(super) fn send(
        &mut self,
        stream: u16,
        ppid: u32,
        unordered: bool,
        reliability: Reliability,
        data: &[u8],
    ) -> Result<(), SendError> {
        if data.is_empty() {
            return Err(SendError::Empty);
        }
        if self.queued + data.len() > self.max_queued {
            return Err(SendError::QueueFull);
        }
        let ssn = if unordered {
            0
        } else {
            let s = self.ssn.entry(stream).or_default();
            let this = *s;
            *s = s.wrapping_add(1);
            this
        };
        self.queued += data.len();
        self.queue.push_back(Pending {
            stream,
            ssn,
            ppid,
            unordered,
            reliability,
            data: data.to_vec(),
            offset: 0,
        });
        Ok(())
    }

    pub(super) fn take_message(&mut self) -> Option<Message> {
        let m = self.reasm.take_message()?;
        if self.hold_messages {
            self.held += m.data.len();
        }
        Some(m)
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        let pace = self.pace_next.filter(|_| !self.queue.is_empty());
        [
            self.t3,
            self.pto,
            self.recheck_at,
            self.sack_at,
            pace,
            self.resets.next_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Our outgoing `streams` are to be reset (after what is queued on them).
    pub(super) fn reset_streams(&mut self, streams: &[u16]) {
        self.resets.reset(streams.iter().copied());
    }

    /// A RE-CONFIG chunk from the peer.
    pub(super) fn on_reconfig(&mut self, now: Instant, params: Params<'_>, rto: &Rto) {
        let n = self.resets.events_len();
        let rto_ms = rto.rto().as_millis() as u64;
        self.resets.on_chunk(params, self.rx.cum_tsn(), now, rto_ms);
        self.apply_resets(n);
    }

    /// Acts on stream-reset events after the first `n`: streams reset on the way in start
    /// over at SSN 0 in reassembly, ours after a performed reset start over when sent.
    fn apply_resets(&mut self, n: usize) {
        for e in self.resets.events_since(n) {
            match e {
                StreamEvent::IncomingReset(streams) if streams.is_empty() => self.reasm.reset_all(),
                StreamEvent::IncomingReset(streams) => self.reasm.reset(streams.iter().copied()),
                StreamEvent::OutgoingReset {
                    streams,
                    performed: true,
                } => {
                    for s in streams {
                        self.ssn.remove(s);
                    }
                }
                StreamEvent::OutgoingReset { .. } => {}
            }
        }
    }

    /// A DATA chunk from the peer.
    pub(super) fn on_data(&mut self, d: &Data<'_>) {
        let tsn = Tsn(d.tsn);
        let in_order = tsn == self.rx.cum_tsn().next();
        // Beyond the window only the next in order is taken (it frees what waits behind
        // it), and not even that while the application's unread messages fill the window:
        // reading them opens it again.
        if (!in_order && d.payload.len() > self.rwnd())
            || (self.held > 0 && self.held + d.payload.len() > self.a_rwnd)
        {
            self.stats.window_drops += 1;
            self.sack_now = true;
            return;
        }
        match self.rx.on_data(tsn) {
            Arrival::New => {
                self.reasm.on_data(tsn, d);
                self.reasm.set_cum(self.rx.cum_tsn());
                if !self.rx.in_order() || d.immediate {
                    self.sack_now = true;
                }
            }
            Arrival::Duplicate | Arrival::TooFar => self.sack_now = true,
        }
    }

    /// After a packet whose chunks were handled: whether it carried data (a SACK is due).
    pub(super) fn after_packet(&mut self, now: Instant, had_data: bool) {
        let n = self.resets.events_len();
        self.resets.on_cum(self.rx.cum_tsn());
        self.apply_resets(n);
        if had_data {
            self.unacked_packets += 1;
            if self.unacked_packets >= 2 {
                self.sack_now = true;
            }
            self.sack_at.get_or_insert(now + SACK_DELAY);
        }
    }

    /// A SACK from the peer.
    pub(super) fn on_sack(&mut self, now: Instant, s: &Sack<'_>, rto: &mut Rto) {
        let before = self.tx.in_flight();
        let acked = self.tx.on_sack(now, Tsn(s.cum_tsn), s.gap_blocks());
        if let Some(sent) = acked.rtt_from {
            rto.sample(now.saturating_duration_since(sent));
        }
        let recovered = self.recovery.is_some_and(|p| self.tx.cum_ack().ge(p));
        if recovered {
            self.recovery = None;
        }
        self.cc
            .on_ack(acked.bytes, before, acked.advanced, recovered);
        self.recheck_at = acked.recheck_at;
        self.on_lost(acked.lost);
        self.peer_rwnd = (s.a_rwnd as usize).saturating_sub(self.tx.in_flight());
        let closed = (s.a_rwnd as usize) < self.mtu;
        if self.peer_window_closed && !closed && self.tx.in_flight() > 0 {
            // The window opened again and what was sent while it was closed is not
            // acknowledged: the peer dropped those probes. They go again now rather than
            // after a timer that backed off while the peer's reader was away.
            self.tx.on_timeout();
        }
        self.peer_window_closed = closed;
        if self.tx.in_flight() == 0 {
            self.t3 = None;
        } else if acked.advanced || self.t3.is_none() {
            self.t3 = Some(now + rto.rto());
        }
        if acked.bytes > 0 {
            self.arm_probe(now, rto);
        }
    }

    /// `lost` chunks were found lost: fast recovery begins (once per window), and the first
    /// of them goes at the next flush whatever the window.
    fn on_lost(&mut self, lost: usize) {
        if lost > 0 && self.recovery.is_none() {
            self.cc.on_fast_retransmit(self.tx.in_flight());
            self.recovery = Some(Tsn(self.tx.next_tsn().0.wrapping_sub(1)));
            self.fast_pending = true;
            self.stats.fast_recoveries += 1;
        }
    }

    /// Arms the tail loss probe after new data or a SACK that acknowledged some: two
    /// smoothed round trips (plus the peer's SACK delay when one packet is in flight, which
    /// its SACK may wait for), when that comes before T3. Not in recovery, whose
    /// retransmissions find losses themselves.
    fn arm_probe(&mut self, now: Instant, rto: &Rto) {
        self.pto = None;
        let Some(srtt) = rto.srtt() else { return };
        if self.tx.in_flight() == 0 || self.recovery.is_some() || self.peer_window_closed {
            return;
        }
        let mut wait = (2 * srtt).max(Duration::from_millis(10));
        if self.tx.in_flight() <= self.mtu {
            wait += SACK_DELAY;
        }
        let at = now + wait;
        if self.t3.is_none_or(|t| at < t) {
            self.pto = Some(at);
        }
    }

    /// The cumulative TSN of what we received (our SHUTDOWN carries it).
    pub(super) fn cum_tsn(&self) -> u32 {
        self.rx.cum_tsn().0
    }

    /// SHUTDOWN's cumulative TSN: it acknowledges as a SACK without gap blocks would, and
    /// leaves the peer's window as it was.
    pub(super) fn on_cum_ack(&mut self, now: Instant, cum: u32, rto: &mut Rto) {
        let rwnd = (self.peer_rwnd + self.tx.in_flight()).min(u32::MAX as usize) as u32;
        if let Ok(s) = Sack::new(cum, rwnd, &[], &[]) {
            self.on_sack(now, &s, rto);
        }
    }

    /// FORWARD TSN from the peer: what it gave up is skipped.
    pub(super) fn on_forward_tsn(&mut self, f: &ForwardTsn<'_>) {
        let cum = Tsn(f.new_cum_tsn);
        if self.rx.forward(cum) {
            self.reasm.forward(self.rx.cum_tsn(), f.streams());
        }
        self.sack_now = true;
    }

    /// Time passes: T3 (everything in flight goes again, the window collapses) and the
    /// delayed SACK.
    pub(super) fn on_timeout(&mut self, now: Instant, rto: &mut Rto) {
        if self.t3.is_some_and(|t| now >= t) {
            self.stats.timeouts += 1;
            self.tx.on_timeout();
            // A probe into a closed window was not lost to congestion: the window stays.
            if !self.peer_window_closed {
                self.cc.on_timeout();
                self.recovery = None;
            }
            rto.back_off();
            self.t3 = Some(now + rto.rto());
            self.pto = None;
        }
        if self.pto.is_some_and(|t| now >= t) {
            self.pto = None;
            self.probe_due = self.tx.in_flight() > 0;
        }
        if self.recheck_at.is_some_and(|t| now >= t) {
            let (lost, next) = self.tx.detect_losses(now);
            self.recheck_at = next;
            self.on_lost(lost);
        }
        if self.sack_at.is_some_and(|t| now >= t) {
            self.sack_now = true;
        }
        self.resets.on_timeout(now);
    }

    /// Fills packets (each `mtu` bytes at most) with what is due: a SACK, FORWARD TSN, chunks
    /// to send again, then new data within the windows. `packet` makes a packet of chunks.
    pub(super) fn flush(&mut self, now: Instant, rto: &Rto, packet: impl FnMut(&[Chunk<'_>])) {
        self.fill(now, rto, None, packet);
    }

    /// New data for the packet that carries our COOKIE ECHO (RFC 9260 §5.1 lets DATA ride
    /// with it, the peer taking the two in order): DATA chunks within `room` bytes and the
    /// windows, nothing else, in one call of `packet` at most.
    pub(super) fn bundle(
        &mut self,
        now: Instant,
        rto: &Rto,
        room: usize,
        packet: impl FnMut(&[Chunk<'_>]),
    ) {
        self.fill(now, rto, Some(room), packet);
    }

    /// [`Flow::flush`], or with `bundle`, only new data within that many bytes of chunks.
    fn fill(
        &mut self,
        now: Instant,
        rto: &Rto,
        bundle: Option<usize>,
        mut packet: impl FnMut(&[Chunk<'_>]),
    ) {
        // Control chunks first (bundled with data where they fit): the SACK, FORWARD TSN.
        let mut gaps = Vec::new();
        let mut dups = Vec::new();
        let mut wire = Vec::new();
        let mut sack = None;
        // Stream resets: answers to the peer's requests, our request.
        let mut reconfig = Vec::new();
        let rto_ms = rto.rto().as_millis() as u64;
        let last_tsn = Tsn(self.tx.next_tsn().0.wrapping_sub(1));
        while bundle.is_none() && self.resets.due(now) {
            let queue = &self.queue;
            let mut params = Vec::new();
            self.resets.chunk(
                now,
                rto_ms,
                last_tsn,
                |s| queue.iter().any(|p| p.stream == s),
                &mut params,
            );
            if params.is_empty() {
                break;
            }
            reconfig.push(params);
        }
        // Partial reliability: what was given up is skipped at the peer.
        self.tx.expire(now);
        let mut forward = None;
        if self.peer_forward_tsn
            && bundle.is_none()
            && let Some((point, streams)) = self.tx.forward_tsn()
            && self.forwarded.is_none_or(|f| point.gt(f))
        {
            for (stream, ssn) in streams {
                wire.extend_from_slice(&stream.to_be_bytes());
                wire.extend_from_slice(&ssn.to_be_bytes());
            }
            forward = Some(point);
        }
        // Chunks to send again, then new data within min(cwnd, the peer's window); one chunk
        // always may go when nothing is in flight.
        // (TSNs only: the chunks are read from `tx` once it stops changing, not copied.)
        let room = self.mtu.saturating_sub(OVERHEAD);
        let mut data: Vec<Tsn> = Vec::new();
        // Chunks to send again go within the congestion window (after T3 it is one MTU: the
        // rest follow as SACKs open it, RFC 9260 §6.3.3; in fast recovery, PRR's allowance),
        // but a fast retransmission sends one packet's worth at once whatever the window
        // (§7.2.4).
        let mut fast = if std::mem::take(&mut self.fast_pending) {
            room
        } else {
            0
        };
        while let Some(len) = self.tx.retransmit_len().filter(|_| bundle.is_none()) {
            let in_flight = self.tx.in_flight();
            let fits = in_flight == 0 || len <= self.cc.allowance(in_flight);
            if !fits {
                if fast < len {
                    break;
                }
                fast -= len;
            }
            let Some((tsn, _)) = self.tx.next_retransmit(now) else {
                break;
            };
            self.cc.on_sent(len);
            self.stats.chunks_retransmitted += 1;
            data.push(tsn);
        }
        // New data is paced: cwnd per smoothed RTT (twice that in slow start), so that a
        // window opening at once does not leave as one burst that overflows a router's queue.
        let rate = rto.srtt().filter(|r| !r.is_zero()).map(|srtt| {
            let gain = if self.cc.cwnd() < self.cc.ssthresh() {
                2.0
            } else {
                1.25
            };
            gain * self.cc.cwnd() as f64 / srtt.as_secs_f64()
        });
        if let Some(rate) = rate {
            // A burst of PACE_BURST packets, or 1 ms of sending, may go at once.
            let cap = (PACE_BURST * self.mtu) as f64 + rate / 1000.0;
            let since = self
                .pace_last
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            self.pace_tokens = (self.pace_tokens + rate * since.as_secs_f64()).min(cap);
        }
        self.pace_last = Some(now);
        self.pace_next = None;
        // Room left in the packet being bundled.
        let mut bundle_left = bundle;
        // Nothing was in flight: what goes now is a message on its own (a request, an
        // answer), and its last chunk asks for a SACK at once (RFC 7053's I bit) rather than
        // after the peer's SACK delay, which would outlast our RTO on a long path.
        let isolated = self.tx.in_flight() == 0;
        let mut immediate = None;
        // A tail loss probe is a packet of new data whatever the windows, or else the last
        // chunk in flight again.
        let probe = std::mem::take(&mut self.probe_due) && bundle.is_none();
        let mut probe_room = if probe { room } else { 0 };
        let mut sent_new = false;
        while let Some(p) = self.queue.front_mut() {
            let mut take = (p.data.len() - p.offset).min(room);
            if let Some(left) = bundle_left.as_mut() {
                // A DATA chunk's header and the payload's padding.
                let fits = left.saturating_sub(crate::chunk::DATA_HEADER) & !3;
                if fits == 0 {
                    break;
                }
                take = take.min(fits);
                *left -= crate::chunk::DATA_HEADER + take.next_multiple_of(4);
            }
            let in_flight = self.tx.in_flight();
            if probe_room >= take && self.peer_rwnd >= take {
                // The probe's packet: outside the windows and pacing.
                probe_room -= take;
            } else if in_flight > 0
                && (take > self.cc.allowance(in_flight)
                    || in_flight + take > self.peer_rwnd.max(self.mtu))
            {
                break;
            } else if let Some(rate) = rate
                && in_flight > 0
                && self.pace_tokens < take as f64
            {
                // (At least PACE_TICK: timers are not finer, and a wait of nothing would spin.)
                let wait = (take as f64 - self.pace_tokens) / rate;
                let wait = Duration::from_secs_f64(wait).max(PACE_TICK);
                self.pace_next = Some(now + wait);
                break;
            }
            self.pace_tokens -= take as f64;
            self.cc.on_sent(take);
            let mut c = Sent::new(
                p.stream,
                p.ssn,
                p.ppid,
                p.unordered,
                p.data[p.offset..p.offset + take].to_vec(),
            );
            c.begin = p.offset == 0;
            c.end = p.offset + take == p.data.len();
            c.reliability = p.reliability;
            p.offset += take;
            self.queued -= take;
            if c.end {
                self.queue.pop_front();
            }
            let tsn = self.tx.push(c, now);
            data.push(tsn);
            sent_new = true;
            self.stats.chunks_sent += 1;
            if isolated && self.queue.is_empty() {
                immediate = Some(tsn);
            }
        }
        if probe {
            self.stats.tail_probes += 1;
            if !sent_new && let Some(tsn) = self.tx.probe(now) {
                self.stats.chunks_retransmitted += 1;
                data.push(tsn);
            }
        }
        // A SACK due, or one waiting for its delay while data goes anyway: it rides along
        // (RFC 9260 §6.2), so a request's answer acknowledges the request.
        let piggyback = self.sack_at.is_some() && !data.is_empty();
        if (self.sack_now || piggyback) && bundle.is_none() {
            self.sack_now = false;
            self.sack_at = None;
            self.unacked_packets = 0;
            // The SACK fits one packet: the lowest gap blocks (those the sender acts on
            // first) and a few duplicates. A SACK that did not fit would not go at all, and
            // a burst lost in every other packet reports thousands of gaps.
            let room = self.mtu.saturating_sub(crate::packet::HEADER + SACK_FIXED);
            let max_dups = MAX_DUPS.min(room / 8);
            let max_gaps = (room - max_dups * 4) / 4;
            crate::chunk::Sack::encode_gaps(
                self.rx.gap_blocks().into_iter().take(max_gaps),
                &mut gaps,
            );
            for d in self.rx.take_duplicates().into_iter().take(max_dups) {
                dups.extend_from_slice(&d.0.to_be_bytes());
            }
            self.advertised = self.rwnd();
            let a_rwnd = self.advertised.min(u32::MAX as usize) as u32;
            sack = Sack::new(self.rx.cum_tsn().0, a_rwnd, &gaps, &dups).ok();
        }
        // Into packets of at most `mtu` bytes, in that order.
        let mut chunks: Vec<Chunk<'_>> = Vec::new();
        chunks.extend(sack.map(Chunk::Sack));
        if let Some(point) = forward
            && let Ok(f) = ForwardTsn::new(point.0, &wire)
        {
            chunks.push(Chunk::ForwardTsn(f));
            self.forwarded = Some(point);
        }
        chunks.extend(reconfig.iter().map(|p| Chunk::Reconfig(Params::raw(p))));
        let tx = &self.tx;
        chunks.extend(data.iter().filter_map(|tsn| {
            let mut d = data_chunk(*tsn, tx.get(*tsn)?);
            d.immediate = immediate == Some(*tsn);
            Some(Chunk::Data(d))
        }));
        let mut batch: Vec<Chunk<'_>> = Vec::new();
        let mut size = crate::packet::HEADER;
        for c in chunks {
            let len = c.encoded_len();
            if !batch.is_empty() && size + len > self.mtu {
                packet(&batch);
                batch.clear();
                size = crate::packet::HEADER;
            }
            size += len;
            batch.push(c);
        }
        if !batch.is_empty() {
            packet(&batch);
        }
        if self.tx.in_flight() > 0 && self.t3.is_none() {
            self.t3 = Some(now + rto.rto());
        }
        // New data moves the probe's timer on; after a probe, only a SACK arms it again.
        if sent_new && !probe {
            self.arm_probe(now, rto);
        }
    }
}

fn data_chunk(tsn: Tsn, c: &Sent) -> Data<'_> {
    Data {
        tsn: tsn.0,
        stream: c.stream,
        ssn: c.ssn,
        ppid: c.ppid,
        unordered: c.unordered,
        begin: c.begin,
        end: c.end,
        immediate: false,
        payload: &c.payload,
    }
}
