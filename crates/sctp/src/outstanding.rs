//! The sender's chunks in flight, indexed by TSN: a queue whose front is the cumulative ack
//! point plus one, so a SACK that moves the ack point costs what it acknowledges, gap blocks
//! cost what they cover, and chunks to send again wait in their own queue (nothing scans the
//! window to find them). Partial reliability (RFC 3758): a chunk past its retransmission limit
//! or lifetime is abandoned with the rest of its message, and the FORWARD TSN point moves over
//! what is acknowledged or abandoned.
//!
//! Loss is found two ways: a chunk missed by three SACKs (RFC 9260 §7.2.4), and RACK's rule
//! (RFC 8985 §6): a chunk sent before one that arrived, and older than that one's round trip
//! plus a reordering window, is lost. The second finds a lost tail, and lost retransmissions,
//! that no SACK would report three times.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::tsn::Tsn;

/// Gap blocks a SACK may carry and still be taken as complete. A receiver whose gaps do not
/// fit its SACK reports the lowest (ours; dcSCTP reports 20 at most): what lies above the
/// highest it reports is unknown, and RACK does not judge it.
const COMPLETE_SACK_GAPS: usize = 16;

/// Misses (SACKs reporting TSNs above it while it is still missing) before a chunk is sent
/// again without waiting for the timer (RFC 9260 §7.2.4).
pub const FAST_RETRANSMIT_AFTER: u8 = 3;

/// How long a message may wait and how often it may be sent again before it is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reliability {
    /// Retransmissions allowed (`None`: unlimited).
    pub max_retransmits: Option<u32>,
    /// Given up after this instant (`None`: never).
    pub expires: Option<Instant>,
}

/// One DATA chunk as sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub stream: u16,
    pub ssn: u16,
    pub ppid: u32,
    pub unordered: bool,
    pub begin: bool,
    pub end: bool,
    pub payload: Vec<u8>,
    pub reliability: Reliability,
    /// Times sent again.
    pub retransmits: u32,
    /// When it was last sent (first or again; only a chunk never sent again times the path,
    /// Karn's rule).
    pub sent_at: Option<Instant>,
    state: State,
    misses: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    /// Reported in a gap block: the receiver has it.
    GapAcked,
    /// Waiting to be sent again (not counted in flight).
    Retransmit,
    /// Given up (partial reliability): never sent again.
    Abandoned,
}

impl Sent {
    pub fn new(stream: u16, ssn: u16, ppid: u32, unordered: bool, payload: Vec<u8>) -> Sent {
        Sent {
            stream,
            ssn,
            ppid,
            unordered,
            begin: true,
            end: true,
            payload,
            reliability: Reliability::default(),
            retransmits: 0,
            sent_at: None,
            state: State::InFlight,
            misses: 0,
        }
    }
}

/// What a SACK did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Acked {
    /// Payload bytes newly known to have arrived (cumulatively or in gap blocks).
    pub bytes: usize,
    /// The cumulative ack point moved.
    pub advanced: bool,
    /// Chunks newly found lost and marked to be sent again (three misses, or RACK).
    pub lost: usize,
    /// When RACK's reordering window ends for a chunk not yet found lost: look again then.
    pub recheck_at: Option<Instant>,
    /// When the newest chunk acknowledged cumulatively was sent, if it was sent once only
    /// (an RTT sample).
    pub rtt_from: Option<Instant>,
}

/// The chunks in flight.
#[derive(Debug)]
pub struct Outstanding {
    /// TSN of `q[0]`: the cumulative ack point plus one.
    first: Tsn,
    q: VecDeque<Sent>,
    /// TSNs to send again, in the order they were marked (stale ones are skipped).
    retransmit: VecDeque<Tsn>,
    /// Payload bytes in flight (sent, not acknowledged, not abandoned, not waiting to be
    /// sent again).
    in_flight: usize,
    rack: Rack,
}

/// RACK's state (RFC 8985 §6): the most recently sent chunk known to have arrived (its send
/// time and TSN), the round trip it took, and the shortest round trip seen.
#[derive(Debug, Default, Clone, Copy)]
struct Rack {
    sent: Option<(Instant, Tsn)>,
    rtt: Duration,
    min_rtt: Option<Duration>,
    /// The highest TSN the last SACK could speak for (`None`: all; it was complete).
    known: Option<Tsn>,
}

impl Rack {
    /// Chunk `tsn`, last sent at `sent`, arrived (known at `now`).
    fn delivered(&mut self, now: Instant, tsn: Tsn, sent: Instant, retransmitted: bool) {
        let rtt = now.saturating_duration_since(sent);
        if retransmitted && self.min_rtt.is_some_and(|m| rtt < m) {
            // Faster than any round trip: the first transmission's arrival, not this one's.
            return;
        }
        if !retransmitted {
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        }
        if self
            .sent
            .is_none_or(|(t, n)| sent > t || (sent == t && tsn.gt(n)))
        {
            self.sent = Some((sent, tsn));
            self.rtt = rtt;
        }
    }

    /// Whether a chunk sent at `sent` with `tsn` went before the newest delivered one.
    fn before(&self, sent: Instant, tsn: Tsn) -> bool {
        self.sent
            .is_some_and(|(t, n)| sent < t || (sent == t && n.gt(tsn)))
    }

    /// When a chunk sent at `sent` (before the newest delivered) counts as lost.
    fn deadline(&self, sent: Instant) -> Instant {
        sent + self.rtt + self.min_rtt.unwrap_or_default() / 4
    }
}

impl Outstanding {
    /// Nothing sent yet; the first chunk will have TSN `initial`.
    pub fn new(initial: Tsn) -> Outstanding {
        Outstanding {
            first: initial,
            q: VecDeque::new(),
            retransmit: VecDeque::new(),
            in_flight: 0,
            rack: Rack::default(),
        }
    }

    /// The TSN the next new chunk gets.
    pub fn next_tsn(&self) -> Tsn {
        self.first.plus(self.q.len() as u32)
    }

    /// The cumulative ack point.
    pub fn cum_ack(&self) -> Tsn {
        Tsn(self.first.0.wrapping_sub(1))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Chunks held (in flight, acknowledged in gaps, waiting, abandoned) above the ack point.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn get(&self, tsn: Tsn) -> Option<&Sent> {
        self.index(tsn).map(|i| &self.q[i])
    }

    fn index(&self, tsn: Tsn) -> Option<usize> {
        let d = tsn.plus(1).after(self.first)? - 1;
        ((d as usize) < self.q.len()).then_some(d as usize)
    }

    /// A new chunk sent at `now`; returns its TSN.
    pub fn push(&mut self, mut chunk: Sent, now: Instant) -> Tsn {
        let tsn = self.next_tsn();
        chunk.state = State::InFlight;
        chunk.sent_at = Some(now);
        self.in_flight += chunk.payload.len();
        self.q.push_back(chunk);
        tsn
    }

    /// A SACK, at `now`: everything up to `cum` arrived, and the TSNs in `gaps` (offsets from
    /// `cum`). A SACK older than what is known (its `cum` behind the ack point) changes
    /// nothing.
    pub fn on_sack(
        &mut self,
        now: Instant,
        cum: Tsn,
        gaps: impl Iterator<Item = (u16, u16)>,
    ) -> Acked {
        let mut acked = Acked::default();
        if self.cum_ack().gt(cum) {
            return acked;
        }
        // The cumulative part: pop from the front.
        if let Some(n) = cum.after(self.cum_ack()) {
            let n = (n as usize).min(self.q.len());
            for (i, c) in self.q.drain(..n).enumerate() {
                if matches!(c.state, State::InFlight | State::Retransmit)
                    && let Some(sent) = c.sent_at
                {
                    let tsn = self.first.plus(i as u32);
                    self.rack.delivered(now, tsn, sent, c.retransmits > 0);
                }
                if c.state == State::InFlight {
                    self.in_flight -= c.payload.len();
                    // Karn: only a chunk sent once, acknowledged now, times the path.
                    if c.retransmits == 0 {
                        acked.rtt_from = c.sent_at.or(acked.rtt_from);
                    }
                }
                if !matches!(c.state, State::GapAcked | State::Abandoned) {
                    acked.bytes += c.payload.len();
                }
            }
            self.first = self.first.plus(n as u32);
            acked.advanced = n > 0;
        }
        // Gap blocks: mark what they cover; note the highest TSN they newly acknowledge.
        let mut highest: Option<usize> = None;
        let (mut blocks, mut top) = (0, 0);
        for (start, end) in gaps {
            if start == 0 || end < start {
                continue;
            }
            blocks += 1;
            top = top.max(end);
            // Offsets from `cum`, which is now our ack point: index = offset - 1.
            let (s, e) = (usize::from(start) - 1, usize::from(end) - 1);
            if s >= self.q.len() {
                continue;
            }
            let e = e.min(self.q.len() - 1);
            for (i, c) in self.q.range_mut(s..=e).enumerate() {
                match c.state {
                    State::InFlight => {
                        self.in_flight -= c.payload.len();
                        acked.bytes += c.payload.len();
                    }
                    State::Retransmit => acked.bytes += c.payload.len(),
                    State::GapAcked | State::Abandoned => continue,
                }
                if let Some(sent) = c.sent_at {
                    let tsn = self.first.plus((s + i) as u32);
                    self.rack.delivered(now, tsn, sent, c.retransmits > 0);
                }
                c.state = State::GapAcked;
                highest = Some(highest.map_or(s + i, |h: usize| h.max(s + i)));
            }
        }
        // Chunks still missing below the highest newly acknowledged one: missed once more
        // (RFC 9260 §7.2.4's HTNA rule). A chunk already sent again is not fast-retransmitted
        // again: if it is lost once more, T3 sends it (else every later SACK would).
        if let Some(h) = highest {
            for i in 0..h {
                let c = &mut self.q[i];
                if c.state != State::InFlight || c.retransmits > 0 {
                    continue;
                }
                c.misses = c.misses.saturating_add(1);
                if c.misses >= FAST_RETRANSMIT_AFTER {
                    self.mark_lost(i);
                    acked.lost += 1;
                }
            }
        }
        self.rack.known = (blocks >= COMPLETE_SACK_GAPS).then(|| cum.plus(u32::from(top)));
        let (lost, recheck_at) = self.detect_losses(now);
        acked.lost += lost;
        acked.recheck_at = recheck_at;
        acked
    }

    /// Chunk `i`, in flight, is lost: it waits to be sent again.
    fn mark_lost(&mut self, i: usize) {
        let c = &mut self.q[i];
        c.misses = 0;
        c.state = State::Retransmit;
        self.in_flight -= c.payload.len();
        self.retransmit.push_back(self.first.plus(i as u32));
    }

    /// RACK's rule at `now`: chunks in flight sent before the newest one delivered, and
    /// older than its round trip plus the reordering window (a quarter of the shortest round
    /// trip), are lost (up to the highest TSN the last SACK speaks for, if it was cut short). Returns how many it marked, and when the next one would be (if
    /// nothing arrives meanwhile). Costs the chunks sent before that one: it stops at the
    /// first chunk sent once after it (those behind it in TSN order were sent later still).
    pub fn detect_losses(&mut self, now: Instant) -> (usize, Option<Instant>) {
        let (mut lost, mut next) = (0, None::<Instant>);
        if self.rack.sent.is_none() {
            return (lost, next);
        }
        for i in 0..self.q.len() {
            let c = &self.q[i];
            let tsn = self.first.plus(i as u32);
            if self.rack.known.is_some_and(|k| tsn.gt(k)) {
                break;
            }
            let Some(sent) = c.sent_at else { continue };
            let before = self.rack.before(sent, tsn);
            if !before && c.retransmits == 0 {
                break;
            }
            if !before || c.state != State::InFlight {
                continue;
            }
            let due = self.rack.deadline(sent);
            if now >= due {
                self.mark_lost(i);
                lost += 1;
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        (lost, next)
    }

    /// A tail loss probe (RFC 8985 §7) with no new data to send: the chunk in flight with the
    /// highest TSN goes again, so that the peer's SACK for it shows what before it is
    /// missing. It stays in flight.
    pub fn probe(&mut self, now: Instant) -> Option<Tsn> {
        let i = self.q.iter().rposition(|c| c.state == State::InFlight)?;
        let c = &mut self.q[i];
        c.retransmits += 1;
        c.sent_at = Some(now);
        Some(self.first.plus(i as u32))
    }

    /// The retransmission timer expired: everything in flight is to be sent again.
    pub fn on_timeout(&mut self) {
        for (i, c) in self.q.iter_mut().enumerate() {
            if c.state == State::InFlight {
                c.state = State::Retransmit;
                self.in_flight -= c.payload.len();
                self.retransmit.push_back(self.first.plus(i as u32));
            }
        }
    }

    /// The next chunk to send again, marked in flight as sent at `now` (its message is given
    /// up instead, and the next one looked at, when it is past its limits).
    /// The size of the next chunk to send again, if any (without taking it).
    pub fn retransmit_len(&mut self) -> Option<usize> {
        while let Some(&tsn) = self.retransmit.front() {
            if let Some(i) = self.index(tsn)
                && self.q[i].state == State::Retransmit
            {
                return Some(self.q[i].payload.len());
            }
            self.retransmit.pop_front();
        }
        None
    }

    pub fn next_retransmit(&mut self, now: Instant) -> Option<(Tsn, &Sent)> {
        while let Some(tsn) = self.retransmit.pop_front() {
            let Some(i) = self.index(tsn) else { continue };
            if self.q[i].state != State::Retransmit {
                continue;
            }
            let r = self.q[i].reliability;
            let spent = r
                .max_retransmits
                .is_some_and(|m| self.q[i].retransmits >= m)
                || r.expires.is_some_and(|t| now >= t);
            if spent {
                self.abandon_message(i);
                continue;
            }
            let c = &mut self.q[i];
            c.retransmits += 1;
            c.sent_at = Some(now);
            c.state = State::InFlight;
            self.in_flight += c.payload.len();
            return Some((tsn, &self.q[i]));
        }
        None
    }

    /// Gives up the message chunk `i` belongs to: all its fragments still held.
    fn abandon_message(&mut self, i: usize) {
        let mut from = i;
        while from > 0 && !self.q[from].begin {
            from -= 1;
        }
        let mut to = i;
        while to + 1 < self.q.len() && !self.q[to].end {
            to += 1;
        }
        for c in self.q.range_mut(from..=to) {
            if c.state == State::InFlight {
                self.in_flight -= c.payload.len();
            }
            if c.state != State::GapAcked {
                c.state = State::Abandoned;
            }
        }
    }

    /// Gives up chunks whose lifetime ended by `now` that were never acknowledged (messages
    /// not yet sent are the sender's queue's business). Costs the chunks it looks at: it stops
    /// at the first chunk without a lifetime.
    pub fn expire(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.q.len() {
            let c = &self.q[i];
            match c.reliability.expires {
                Some(t) if now >= t => {
                    if matches!(c.state, State::InFlight | State::Retransmit) {
                        self.abandon_message(i);
                    }
                }
                Some(_) => {}
                None => break,
            }
            i += 1;
        }
    }

    /// The FORWARD TSN point: the highest TSN up to which everything is acknowledged or
    /// abandoned, if it is past the ack point, and the (stream, SSN) of ordered messages given
    /// up below it, one per stream (the last).
    pub fn forward_tsn(&self) -> Option<(Tsn, Vec<(u16, u16)>)> {
        let mut last = None;
        let mut streams: Vec<(u16, u16)> = Vec::new();
        for (i, c) in self.q.iter().enumerate() {
            match c.state {
                State::Abandoned => {
                    last = Some(i);
                    if !c.unordered {
                        match streams.iter_mut().find(|(s, _)| *s == c.stream) {
                            Some(e) => e.1 = c.ssn,
                            None => streams.push((c.stream, c.ssn)),
                        }
                    }
                }
                State::GapAcked if last.is_some() => last = Some(i),
                _ => break,
            }
        }
        last.map(|i| (self.first.plus(i as u32), streams))
    }

    /// The receiver moved its cumulative TSN to `cum` after a FORWARD TSN: like a SACK without
    /// gaps.
    pub fn forwarded(&mut self, now: Instant, cum: Tsn) -> Acked {
        self.on_sack(now, cum, std::iter::empty())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn chunk(n: usize) -> Sent {
        Sent::new(1, 0, 53, false, vec![0; n])
    }

    #[test]
    fn a_sack_acknowledges_cumulatively_and_in_gaps() {
        let now = Instant::now();
        let mut o = Outstanding::new(Tsn(u32::MAX - 1));
        for _ in 0..7 {
            o.push(chunk(100), now);
        }
        assert_eq!((o.in_flight(), o.next_tsn()), (700, Tsn(5)));
        // SACKs come a 40 ms round trip later: inside RACK's reordering window (10 ms more)
        // nothing is lost by time.
        let t = now + Duration::from_millis(40);
        // TSNs MAX-1, MAX arrived; then 1 and 2 (offsets 2 and 3 from MAX).
        let a = o.on_sack(t, Tsn(u32::MAX), [(2, 3)].into_iter());
        assert_eq!(a.bytes, 400);
        assert!(a.advanced);
        assert_eq!(a.rtt_from, Some(now));
        assert_eq!(a.recheck_at, Some(now + Duration::from_millis(50)));
        assert_eq!(o.in_flight(), 300);
        // An old SACK changes nothing.
        assert_eq!(o.on_sack(t, Tsn(u32::MAX - 1), std::iter::empty()).bytes, 0);
        // The same SACK again newly acknowledges nothing: no miss (the HTNA rule).
        let a = o.on_sack(t, Tsn(u32::MAX), [(2, 3)].into_iter());
        assert_eq!((a.bytes, a.lost), (0, 0));
        // TSN 0 is missing: that first SACK was its first miss, two more that newly
        // acknowledge TSNs above it mark it.
        for i in 0..2u16 {
            let a = o.on_sack(t, Tsn(u32::MAX), [(2, 4 + i)].into_iter());
            assert_eq!(a.lost, usize::from(i == 1), "SACK {i}");
        }
        assert_eq!(o.in_flight(), 0);
        let later = now + Duration::from_millis(50);
        let (tsn, c) = o.next_retransmit(later).unwrap();
        assert_eq!((tsn, c.retransmits, c.sent_at), (Tsn(0), 1, Some(later)));
        assert!(o.next_retransmit(later).is_none());
        assert_eq!(o.in_flight(), 100);
        // Everything arrives: only the chunk sent again is new (and gives no RTT sample).
        let a = o.on_sack(
            later + Duration::from_millis(40),
            Tsn(4),
            std::iter::empty(),
        );
        assert_eq!(a.bytes, 100);
        assert_eq!(a.rtt_from, None);
        assert!(o.is_empty());
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn rack_finds_a_lost_tail_after_a_probe_and_waits_out_reordering() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut o = Outstanding::new(Tsn(0));
        for _ in 0..10 {
            o.push(chunk(100), t0);
        }
        // 0..=4 arrive; 5..=9 were sent with 4, after it: nothing says they are lost.
        let a = o.on_sack(t0 + ms(40), Tsn(4), std::iter::empty());
        assert_eq!((a.lost, a.recheck_at), (0, None));
        // Silence; a tail loss probe sends 9 again, and it arrives: 5..=8, sent before it and
        // older than its round trip and the window, are lost.
        let t1 = t0 + ms(120);
        assert_eq!(o.probe(t1), Some(Tsn(9)));
        assert_eq!(o.in_flight(), 500, "the probe's chunk stays in flight once");
        let a = o.on_sack(t1 + ms(40), Tsn(4), [(5, 5)].into_iter());
        assert_eq!(a.lost, 4);
        assert_eq!(o.in_flight(), 0);
        for tsn in 5..9 {
            assert_eq!(o.next_retransmit(t1 + ms(40)).unwrap().0, Tsn(tsn));
        }
        // Reordering: 10 and 11 go, 12 a millisecond later and arrives first. They are
        // lost only once the reordering window (a quarter of the shortest round trip) ends.
        let t2 = t1 + ms(100);
        o.push(chunk(100), t2);
        o.push(chunk(100), t2);
        o.push(chunk(100), t2 + ms(1));
        let a = o.on_sack(t2 + ms(41), Tsn(9), [(3, 3)].into_iter());
        assert_eq!(a.lost, 0);
        assert_eq!(a.recheck_at, Some(t2 + ms(50)));
        assert_eq!(o.detect_losses(t2 + ms(49)), (0, Some(t2 + ms(50))));
        assert_eq!(o.detect_losses(t2 + ms(50)), (2, None));
    }

    #[test]
    fn rack_does_not_judge_above_what_a_cut_short_sack_reports() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut o = Outstanding::new(Tsn(0));
        for _ in 0..100 {
            o.push(chunk(100), t0);
        }
        // A SACK cut short: every other TSN up to 40, in 20 blocks. The holes are lost once
        // the reordering window ends, and go again.
        let every_other = |from: u16| (1..=20).map(move |i| (from + 2 * i, from + 2 * i));
        let a = o.on_sack(t0 + ms(40), Tsn(0), every_other(0));
        assert_eq!((a.lost, a.recheck_at), (0, Some(t0 + ms(50))));
        assert_eq!(
            o.detect_losses(t0 + ms(50)),
            (20, None),
            "the holes below 41"
        );
        while o.next_retransmit(t0 + ms(50)).is_some() {}
        // They arrive; the SACK, cut short again, reports every other TSN up to 80. Holes
        // below 80, sent before those retransmissions, are lost; 81..=99, sent before them
        // too, may have arrived: it does not say.
        let a = o.on_sack(t0 + ms(91), Tsn(40), every_other(0));
        assert_eq!(a.lost, 20);
        // A SACK that fits whole: 81..=99 are not there.
        let a = o.on_sack(t0 + ms(92), Tsn(40), [(2, 40)].into_iter());
        assert_eq!(a.lost, 19);
    }

    #[test]
    fn a_timeout_sends_everything_again_and_limits_give_messages_up() {
        let now = Instant::now();
        let mut o = Outstanding::new(Tsn(10));
        // A message of three fragments that may not be sent again, then a reliable one.
        for (i, (begin, end)) in [(true, false), (false, false), (false, true)]
            .into_iter()
            .enumerate()
        {
            let mut c = Sent::new(2, 7, 53, false, vec![i as u8; 10]);
            c.begin = begin;
            c.end = end;
            c.reliability.max_retransmits = Some(0);
            o.push(c, now);
        }
        o.push(chunk(10), now);
        // The middle fragment arrived.
        o.on_sack(now, Tsn(9), [(2, 2)].into_iter());
        o.on_timeout();
        assert_eq!(o.in_flight(), 0);
        // The limited message is given up; the reliable chunk goes again.
        let (tsn, _) = o.next_retransmit(now).unwrap();
        assert_eq!(tsn, Tsn(13));
        assert!(o.next_retransmit(now).is_none());
        assert_eq!(o.forward_tsn(), Some((Tsn(12), vec![(2, 7)])));
        // The receiver moves over them.
        let a = o.forwarded(now, Tsn(12));
        assert!(a.advanced);
        assert_eq!(o.forward_tsn(), None);
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn lifetimes_expire_from_the_front() {
        let now = Instant::now();
        let mut o = Outstanding::new(Tsn(0));
        let mut c = Sent::new(3, 0, 53, true, vec![1; 5]);
        c.reliability.expires = Some(now + Duration::from_millis(100));
        o.push(c.clone(), now);
        o.push(c, now);
        o.push(chunk(5), now);
        o.expire(now + Duration::from_millis(99));
        assert_eq!(o.in_flight(), 15);
        o.expire(now + Duration::from_millis(100));
        assert_eq!(o.in_flight(), 5);
        // Unordered messages need no stream entry.
        assert_eq!(o.forward_tsn(), Some((Tsn(1), vec![])));
    }

    /// A sender and a receiver (`Received`) over a link that loses chunks and SACKs at random:
    /// the bytes in flight always add up, and once the link stops losing, everything arrives
    /// and is acknowledged.
    #[test]
    fn random_losses_end_with_everything_acknowledged() {
        use crate::received::Received;
        let mut rand = crate::test_rng(0x9e37_79b9_7f4a_7c15);
        for run in 0..30u32 {
            let now = Instant::now();
            let start = Tsn(u32::MAX - 40 + run);
            let mut o = Outstanding::new(start);
            let mut r = Received::new(start);
            let total = 2000u32;
            let mut pushed = 0u32;
            for step in 0..20_000u32 {
                let lossy = step < 5_000;
                let drop = |x: u64| lossy && x.is_multiple_of(10);
                // New chunks while fewer than 64 are held.
                while o.len() < 64 && pushed < total {
                    let tsn = o.push(chunk(1 + (rand() % 1000) as usize), now);
                    pushed += 1;
                    if !drop(rand()) {
                        r.on_data(tsn);
                    }
                }
                // Chunks to send again go (and may be lost again).
                while let Some((tsn, _)) = o.next_retransmit(now) {
                    if !drop(rand()) {
                        r.on_data(tsn);
                    }
                }
                // A SACK (maybe lost).
                if !drop(rand()) {
                    let gaps = r.gap_blocks();
                    o.on_sack(now, r.cum_tsn(), gaps.into_iter());
                }
                let sum: usize =
                    o.q.iter()
                        .filter(|c| c.state == State::InFlight)
                        .map(|c| c.payload.len())
                        .sum();
                assert_eq!(o.in_flight(), sum, "run {run} step {step}");
                // Now and then the timer fires.
                if rand().is_multiple_of(20) {
                    o.on_timeout();
                }
                if pushed == total && o.is_empty() {
                    break;
                }
            }
            assert!(
                o.is_empty(),
                "run {run}: {} chunks never acknowledged",
                o.len()
            );
            assert_eq!(r.cum_tsn(), start.plus(total - 1), "run {run}");
            assert!(r.in_order());
        }
    }
}
