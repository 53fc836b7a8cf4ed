//! Stream reset (RFC 6525) as data channels use it to close (RFC 8831 §6.7): each side resets
//! its outgoing stream — an Outgoing SSN Reset Request naming the streams and the last TSN
//! sent on them — and the other side, once every TSN up to that one has arrived, starts the
//! streams over at SSN 0 and answers. One request of ours is in flight at a time (sent again
//! on the RTO, or with a new sequence number after "in progress"); a request of the peer's
//! that comes before its data is deferred and performed when the data is in.

use std::collections::{BTreeSet, VecDeque};
use std::time::Instant;

use crate::chunk::{Params, ReconfigParam, Streams};
use crate::tsn::Tsn;

/// Results of a request (RFC 6525 §4.4).
mod result {
    pub const PERFORMED: u32 = 1;
    pub const DENIED: u32 = 2;
    pub const BAD_SEQUENCE: u32 = 5;
    pub const IN_PROGRESS: u32 = 6;
}

/// Streams named in one request at most (the request fits a packet of the smallest MTU).
pub const MAX_STREAMS_PER_REQUEST: usize = 256;

/// What stream resets did, for the association's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer reset these of its outgoing streams (a data channel closes): messages on them
    /// start over at SSN 0. None listed: all of them.
    IncomingReset(Vec<u16>),
    /// Our reset of these outgoing streams is over: `performed` — they start over at SSN 0 —,
    /// or refused by the peer (they go on where they were).
    OutgoingReset { streams: Vec<u16>, performed: bool },
}

/// Our request in flight.
#[derive(Debug)]
struct Request {
    seq: u32,
    last_tsn: Tsn,
    streams: Vec<u16>,
    /// When it goes (again); `None`: sent, waiting for the answer until the RTO passes.
    due: Option<Instant>,
    /// Until when the answer is awaited.
    timer: Option<Instant>,
}

#[derive(Debug)]
pub(super) struct Resets {
    /// Our next request's sequence number (the first is our initial TSN).
    next_seq: u32,
    /// The peer's last request handled, and what we answered.
    peer_seq: u32,
    peer_result: u32,
    /// Streams the peer reset whose data has not all arrived: performed once the cumulative
    /// TSN reaches the TSN.
    deferred: Option<(Tsn, BTreeSet<u16>)>,
    /// Streams of ours to reset, not yet in a request.
    wanted: BTreeSet<u16>,
    request: Option<Request>,
    /// Answers to send: (the request's sequence number, result).
    answers: Vec<(u32, u32)>,
    events: VecDeque<StreamEvent>,
}

impl Resets {
    pub(super) fn new(local_initial_tsn: u32, peer_initial_tsn: u32) -> Resets {
        Resets {
            next_seq: local_initial_tsn,
            peer_seq: peer_initial_tsn.wrapping_sub(1),
            peer_result: result::PERFORMED,
            deferred: None,
            wanted: BTreeSet::new(),
            request: None,
            answers: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Our outgoing `streams` are to be reset (once what is queued on them has its TSN).
    pub(super) fn reset(&mut self, streams: impl IntoIterator<Item = u16>) {
        self.wanted.extend(streams);
    }

    pub(super) fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// Events waiting, for the flow to act on those pushed after the first `n`.
    pub(super) fn events_len(&self) -> usize {
        self.events.len()
    }

    pub(super) fn events_since(&self, n: usize) -> impl Iterator<Item = &StreamEvent> {
        self.events.iter().skip(n)
    }

    pub(super) fn next_timeout(&self) -> Option<Instant> {
        let r = self.request.as_ref()?;
        r.due.or(r.timer)
    }

    /// The peer's RE-CONFIG parameters; `cum` is the cumulative TSN received. What they do
    /// is pushed as events ([`Resets::events_since`]).
    pub(super) fn on_chunk(&mut self, params: Params<'_>, cum: Tsn, now: Instant, rto: u64) {
        // A chunk carries one or two parameters: more are ignored.
        for p in params.iter().take(2) {
            let Ok(p) = ReconfigParam::parse(p) else {
                continue;
            };
            match p {
                ReconfigParam::OutgoingReset {
                    request_seq,
                    last_tsn,
                    streams,
                    ..
                } => self.on_outgoing_request(request_seq, Tsn(last_tsn), streams, cum),
                ReconfigParam::IncomingReset { request_seq, .. } => {
                    // Data channels never ask the other side to reset: refused.
                    let r = if request_seq == self.peer_seq.wrapping_add(1) {
                        self.peer_seq = request_seq;
                        self.peer_result = result::DENIED;
                        result::DENIED
                    } else if request_seq == self.peer_seq {
                        self.peer_result
                    } else {
                        result::BAD_SEQUENCE
                    };
                    self.answer(request_seq, r);
                }
                ReconfigParam::Response {
                    response_seq,
                    result: r,
                } => self.on_response(response_seq, r, now, rto),
                ReconfigParam::Other(_) => {}
            }
        }
    }

    fn answer(&mut self, seq: u32, result: u32) {
        // A few answers at most wait for the next packet (the peer has one request open).
        if self.answers.len() < 8 {
            self.answers.push((seq, result));
        }
    }

    fn on_outgoing_request(&mut self, seq: u32, last_tsn: Tsn, streams: Streams<'_>, cum: Tsn) {
        if seq == self.peer_seq {
            // Sent again: the same answer (performed by now, if it was deferred).
            let r = if self.deferred.is_none() && self.peer_result == result::IN_PROGRESS {
                result::PERFORMED
            } else {
                self.peer_result
            };
            self.peer_result = r;
            self.answer(seq, r);
            return;
        }
        if seq != self.peer_seq.wrapping_add(1) {
            self.answer(seq, result::BAD_SEQUENCE);
            return;
        }
        self.peer_seq = seq;
        if cum.ge(last_tsn) {
            self.peer_result = result::PERFORMED;
            self.events
                .push_back(StreamEvent::IncomingReset(streams.iter().collect()));
        } else {
            // Its data is still on the way: reset once it is in (RFC 6525 §5.2.2).
            let (at, set) = self
                .deferred
                .get_or_insert_with(|| (last_tsn, BTreeSet::new()));
            if last_tsn.gt(*at) {
                *at = last_tsn;
            }
            set.extend(streams.iter());
            self.peer_result = result::IN_PROGRESS;
        }
        self.answer(seq, self.peer_result);
    }

    /// The cumulative TSN received moved: a deferred reset may be due.
    pub(super) fn on_cum(&mut self, cum: Tsn) {
        if let Some((at, _)) = &self.deferred
            && cum.ge(*at)
            && let Some((_, streams)) = self.deferred.take()
        {
            if self.peer_result == result::IN_PROGRESS {
                self.peer_result = result::PERFORMED;
            }
            self.events
                .push_back(StreamEvent::IncomingReset(streams.into_iter().collect()));
        }
    }

    fn on_response(&mut self, seq: u32, r: u32, now: Instant, rto: u64) {
        let Some(req) = self.request.as_mut() else {
            return;
        };
        if req.seq != seq {
            return;
        }
        match r {
            result::IN_PROGRESS => {
                // The peer waits for our data: ask again after an RTO, as a new request.
                req.seq = self.next_seq;
                self.next_seq = self.next_seq.wrapping_add(1);
                req.due = Some(now + std::time::Duration::from_millis(rto));
                req.timer = None;
            }
            _ => {
                let done = self.request.take().map(|r| r.streams).unwrap_or_default();
                let performed = r == result::PERFORMED || r == 0;
                self.events.push_back(StreamEvent::OutgoingReset {
                    streams: done,
                    performed,
                });
            }
        }
    }

    /// Time passed: an unanswered request goes again.
    pub(super) fn on_timeout(&mut self, now: Instant) {
        if let Some(r) = self.request.as_mut()
            && r.timer.is_some_and(|t| now >= t)
        {
            r.timer = None;
            r.due = Some(now);
        }
    }

    /// The RE-CONFIG chunk's parameters to send now, if any: answers, and our request —
    /// made from the wanted streams that have nothing queued (`queued` says whether a stream
    /// has) with `last_tsn` the last TSN given.
    pub(super) fn chunk(
        &mut self,
        now: Instant,
        rto: u64,
        last_tsn: Tsn,
        queued: impl Fn(u16) -> bool,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        // One answer and one request per chunk (RFC 6525 §3.1 allows two parameters).
        if let Some((seq, r)) = self.answers.pop() {
            let _ = ReconfigParam::Response {
                response_seq: seq,
                result: r,
            }
            .encode(out);
        }
        if self.request.is_none() && !self.wanted.is_empty() {
            let streams: Vec<u16> = self
                .wanted
                .iter()
                .copied()
                .filter(|s| !queued(*s))
                .take(MAX_STREAMS_PER_REQUEST)
                .collect();
            if !streams.is_empty() {
                for s in &streams {
                    self.wanted.remove(s);
                }
                self.request = Some(Request {
                    seq: self.next_seq,
                    last_tsn,
                    streams,
                    due: Some(now),
                    timer: None,
                });
                self.next_seq = self.next_seq.wrapping_add(1);
            }
        }
        if let Some(r) = self.request.as_mut()
            && r.due.is_some_and(|d| now >= d)
        {
            r.due = None;
            r.timer = Some(now + std::time::Duration::from_millis(rto));
            let wire: Vec<u8> = r.streams.iter().flat_map(|s| s.to_be_bytes()).collect();
            if let Ok(streams) = Streams::new(&wire) {
                let _ = ReconfigParam::OutgoingReset {
                    request_seq: r.seq,
                    response_seq: self.peer_seq,
                    last_tsn: r.last_tsn.0,
                    streams,
                }
                .encode(out);
            }
        }
        // Answers left over go in the next packets.
    }

    /// Whether a chunk is due now (answers waiting, or a request to send).
    pub(super) fn due(&self, now: Instant) -> bool {
        !self.answers.is_empty()
            || (self.request.is_none() && !self.wanted.is_empty())
            || self
                .request
                .as_ref()
                .is_some_and(|r| r.due.is_some_and(|d| now >= d))
    }
}
