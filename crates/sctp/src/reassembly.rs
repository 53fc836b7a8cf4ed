//! The receiver's side of streams: fragments (DATA chunks from the first, B, to the last, E,
//! of consecutive TSNs) put back together into messages, ordered messages handed over in SSN
//! order per stream, unordered ones as soon as they are whole; what FORWARD TSN skips dropped.
//! Bounded by bytes: the association advertises what is left as its receiver window and drops
//! chunks beyond it, so [`Reassembly::buffered`] never grows past the window.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::chunk::Data;
use crate::tsn::Tsn;

/// A message put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub stream: u16,
    pub ppid: u32,
    pub unordered: bool,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Fragment {
    begin: bool,
    end: bool,
    ssn: u16,
    ppid: u32,
    payload: Vec<u8>,
}

/// Per stream: the next SSN to hand over, and complete ordered messages waiting for it.
#[derive(Debug, Default)]
struct Stream {
    next_ssn: u16,
    ready: BTreeMap<u16, Message>,
}

/// Messages being put back together, by stream.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// Fragments by TSN, unwrapped to 64 bits (see `key`).
    fragments: BTreeMap<u64, (u16, bool, Fragment)>,
    streams: HashMap<u16, Stream>,
    out: VecDeque<Message>,
    buffered: usize,
    /// The unwrapped value of the last cumulative TSN seen, for `key`.
    base: u64,
    base_tsn: Tsn,
}

impl Reassembly {
    /// Before anything arrives; `cum` is the receiver's cumulative TSN.
    pub fn new(cum: Tsn) -> Reassembly {
        Reassembly {
            base: 1 << 32,
            base_tsn: cum,
            ..Reassembly::default()
        }
    }

    /// Bytes held (fragments and whole messages not yet taken).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// A TSN as a 64-bit number that keeps growing across the 32-bit wrap.
    fn key(&self, tsn: Tsn) -> u64 {
        match tsn.after(self.base_tsn) {
            Some(d) => self.base + u64::from(d),
            None => self
                .base
                .saturating_sub(u64::from(self.base_tsn.0.wrapping_sub(tsn.0))),
        }
    }

    /// The receiver's cumulative TSN moved to `cum` (keys stay comparable).
    pub fn set_cum(&mut self, cum: Tsn) {
        self.base = self.key(cum);
        self.base_tsn = cum;
    }

    /// A new DATA chunk (the caller checked it is not a duplicate).
    pub fn on_data(&mut self, tsn: Tsn, d: &Data<'_>) {
        let key = self.key(tsn);
        self.buffered += d.payload.len();
        let f = Fragment {
            begin: d.begin,
            end: d.end,
            ssn: d.ssn,
            ppid: d.ppid,
            payload: d.payload.to_vec(),
        };
        if d.begin && d.end {
            self.whole(d.stream, d.unordered, f.ssn, f.ppid, f.payload);
            return;
        }
        self.fragments.insert(key, (d.stream, d.unordered, f));
        // A message completes with its last missing fragment: its end, or one with the
        // fragment after it already here (a gap filled). Fragments arriving in order before
        // their end cannot complete anything, and looking back over the message for each
        // would cost its length squared.
        if d.end || self.fragments.contains_key(&(key + 1)) {
            self.try_assemble(key);
        }
    }

    /// Looks for a whole message through the fragment at `key`: back to its first fragment and
    /// on to its last over consecutive TSNs of the same stream.
    fn try_assemble(&mut self, key: u64) {
        let Some((stream, unordered)) = self.fragments.get(&key).map(|(s, u, _)| (*s, *u)) else {
            return;
        };
        let at = |k: u64| self.fragment(k, stream, unordered);
        let mut first = key;
        while !at(first).is_some_and(|f| f.begin) {
            if first == 0 || at(first - 1).is_none() {
                return;
            }
            first -= 1;
        }
        let mut last = key;
        while !at(last).is_some_and(|f| f.end) {
            if at(last + 1).is_none() {
                return;
            }
            last += 1;
        }
        let len = (first..=last)
            .filter_map(|k| self.fragments.get(&k))
            .map(|(_, _, f)| f.payload.len())
            .sum();
        let mut data = Vec::with_capacity(len);
        let (mut ssn, mut ppid) = (0, 0);
        for k in first..=last {
            if let Some((_, _, f)) = self.fragments.remove(&k) {
                if k == first {
                    (ssn, ppid) = (f.ssn, f.ppid);
                }
                data.extend_from_slice(&f.payload);
            }
        }
        // (Its bytes stay counted: held now as a message.)
        self.whole(stream, unordered, ssn, ppid, data);
    }

    /// The fragment at `key` if it belongs to `stream`, ordered or not as asked.
    fn fragment(&self, key: u64, stream: u16, unordered: bool) -> Option<&Fragment> {
        self.fragments
            .get(&key)
            .filter(|(s, u, _)| *s == stream && *u == unordered)
            .map(|(_, _, f)| f)
    }

    fn whole(&mut self, stream: u16, unordered: bool, ssn: u16, ppid: u32, data: Vec<u8>) {
        let m = Message {
            stream,
            ppid,
            unordered,
            data,
        };
        if unordered {
            self.out.push_back(m);
            return;
        }
        let s = self.streams.entry(stream).or_default();
        s.ready.insert(ssn, m);
        // Hand over in SSN order (SSNs wrap: the map is searched by value, not by order).
        while let Some(m) = s.ready.remove(&s.next_ssn) {
            s.next_ssn = s.next_ssn.wrapping_add(1);
            self.out.push_back(m);
        }
    }

    /// The next whole message, in order.
    pub fn take_message(&mut self) -> Option<Message> {
        let m = self.out.pop_front()?;
        self.buffered -= m.data.len();
        Some(m)
    }

    /// FORWARD TSN to `cum`: fragments at or before it are dropped, and on each ordered stream
    /// listed the messages up to its SSN are given up (the next is handed over when it comes).
    pub fn forward(&mut self, cum: Tsn, streams: impl Iterator<Item = (u16, u16)>) {
        let limit = self.key(cum);
        let keep = self.fragments.split_off(&(limit + 1));
        for (_, (_, _, f)) in std::mem::replace(&mut self.fragments, keep) {
            self.buffered -= f.payload.len();
        }
        for (stream, ssn) in streams {
            let s = self.streams.entry(stream).or_default();
            let skip_to = ssn.wrapping_add(1);
            // Ready messages before `skip_to` are gone too.
            let stale: Vec<u16> = s
                .ready
                .keys()
                .copied()
                .filter(|k| skip_to.wrapping_sub(*k) as i16 > 0)
                .collect();
            for k in stale {
                if let Some(m) = s.ready.remove(&k) {
                    self.buffered -= m.data.len();
                }
            }
            if skip_to.wrapping_sub(s.next_ssn) as i16 > 0 {
                s.next_ssn = skip_to;
            }
            while let Some(m) = s.ready.remove(&s.next_ssn) {
                s.next_ssn = s.next_ssn.wrapping_add(1);
                self.out.push_back(m);
            }
        }
        self.set_cum(cum);
    }

    /// The peer reset all its outgoing streams.
    pub fn reset_all(&mut self) {
        let all: Vec<u16> = self.streams.keys().copied().collect();
        self.reset(all.into_iter());
    }

    /// The peer reset its outgoing `streams` (RE-CONFIG): they start again at SSN 0.
    pub fn reset(&mut self, streams: impl Iterator<Item = u16>) {
        for stream in streams {
            if let Some(s) = self.streams.remove(&stream) {
                for m in s.ready.into_values() {
                    self.buffered -= m.data.len();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(stream: u16, ssn: u16, unordered: bool, begin: bool, end: bool, p: &[u8]) -> Data<'_> {
        Data {
            tsn: 0,
            stream,
            ssn,
            ppid: 53,
            unordered,
            begin,
            end,
            immediate: false,
            payload: p,
        }
    }

    fn drain(r: &mut Reassembly) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| r.take_message())
            .map(|m| m.data)
            .collect()
    }

    #[test]
    fn fragments_in_any_order_make_messages_in_ssn_order() {
        let start = Tsn(u32::MAX - 1);
        let mut r = Reassembly::new(Tsn(start.0.wrapping_sub(1)));
        // SSN 0 in three fragments across the TSN wrap, SSN 1 whole; they arrive backwards.
        r.on_data(start.plus(3), &data(1, 1, false, true, true, b"second"));
        assert!(drain(&mut r).is_empty(), "waits for SSN 0");
        r.on_data(start.plus(2), &data(1, 0, false, false, true, b"c"));
        r.on_data(start, &data(1, 0, false, true, false, b"a"));
        assert!(drain(&mut r).is_empty());
        r.on_data(start.plus(1), &data(1, 0, false, false, false, b"b"));
        assert_eq!(drain(&mut r), [b"abc".to_vec(), b"second".to_vec()]);
        assert_eq!(r.buffered(), 0);
        // Unordered: as soon as whole, whatever came before.
        r.on_data(start.plus(5), &data(2, 0, true, false, true, b"y"));
        r.on_data(start.plus(4), &data(2, 0, true, true, false, b"x"));
        assert_eq!(drain(&mut r), [b"xy".to_vec()]);
    }

    #[test]
    fn forward_tsn_skips_what_was_given_up() {
        let mut r = Reassembly::new(Tsn(99));
        // SSN 0 lost entirely (TSNs 100, 101); its second half arrived. SSN 1 is whole.
        r.on_data(Tsn(101), &data(4, 0, false, false, true, b"half"));
        r.on_data(Tsn(102), &data(4, 1, false, true, true, b"next"));
        assert!(drain(&mut r).is_empty());
        assert_eq!(r.buffered(), 8);
        r.forward(Tsn(101), [(4, 0)].into_iter());
        assert_eq!(drain(&mut r), [b"next".to_vec()]);
        assert_eq!(r.buffered(), 0);
        // A stream reset starts it again at SSN 0.
        r.reset([4].into_iter());
        r.on_data(Tsn(103), &data(4, 0, false, true, true, b"again"));
        assert_eq!(drain(&mut r), [b"again".to_vec()]);
    }

    /// Messages on three streams, ordered and unordered, cut into fragments that arrive in a
    /// random order: each comes out whole, ordered ones in order per stream, and nothing is
    /// left buffered.
    #[test]
    fn random_arrival_orders_give_every_message_once() {
        let mut rand = crate::test_rng(0x1234_5678_9abc_def1);
        for run in 0..40 {
            let start = Tsn(u32::MAX - 100 + run);
            let mut r = Reassembly::new(Tsn(start.0.wrapping_sub(1)));
            // (TSN, the chunk with its payload owned.)
            let mut chunks: Vec<(Tsn, Message, u16, bool, bool)> = Vec::new();
            let mut sent: Vec<(u16, bool, Vec<u8>)> = Vec::new();
            let mut ssn = [0u16; 3];
            let mut tsn = start;
            for m in 0..60u32 {
                let stream = (rand() % 3) as u16;
                let unordered = rand().is_multiple_of(4);
                let len = 1 + (rand() % 40) as usize;
                let body: Vec<u8> = (0..len).map(|i| (m as usize + i) as u8).collect();
                let parts = 1 + (rand() % 4) as usize;
                let cut = len.div_ceil(parts);
                let pieces: Vec<&[u8]> = body.chunks(cut).collect();
                for (i, p) in pieces.iter().enumerate() {
                    let s = if unordered {
                        0
                    } else {
                        ssn[usize::from(stream)]
                    };
                    let m = Message {
                        stream,
                        ppid: 53,
                        unordered,
                        data: p.to_vec(),
                    };
                    chunks.push((tsn, m, s, i == 0, i + 1 == pieces.len()));
                    tsn = tsn.next();
                }
                if !unordered {
                    ssn[usize::from(stream)] += 1;
                }
                sent.push((stream, unordered, body));
            }
            // Shuffle (Fisher-Yates).
            for i in (1..chunks.len()).rev() {
                let j = (rand() % (i as u64 + 1)) as usize;
                chunks.swap(i, j);
            }
            let mut got = Vec::new();
            for (tsn, m, ssn, begin, end) in &chunks {
                r.on_data(
                    *tsn,
                    &data(m.stream, *ssn, m.unordered, *begin, *end, &m.data),
                );
                got.extend(std::iter::from_fn(|| r.take_message()));
            }
            assert_eq!(r.buffered(), 0, "run {run}");
            assert_eq!(got.len(), sent.len(), "run {run}");
            for stream in 0..3u16 {
                let want: Vec<&Vec<u8>> = sent
                    .iter()
                    .filter(|(s, u, _)| *s == stream && !*u)
                    .map(|(_, _, b)| b)
                    .collect();
                let have: Vec<&Vec<u8>> = got
                    .iter()
                    .filter(|m| m.stream == stream && !m.unordered)
                    .map(|m| &m.data)
                    .collect();
                assert_eq!(have, want, "run {run} stream {stream}: in order");
            }
            let mut want: Vec<&Vec<u8>> = sent
                .iter()
                .filter(|(_, u, _)| *u)
                .map(|(_, _, b)| b)
                .collect();
            let mut have: Vec<&Vec<u8>> = got
                .iter()
                .filter(|m| m.unordered)
                .map(|m| &m.data)
                .collect();
            want.sort();
            have.sort();
            assert_eq!(have, want, "run {run}: every unordered message");
        }
    }
}
