//! What the receiver has of the sender's TSNs: the cumulative TSN and, above it, which TSNs
//! came — a bitmap indexed by distance, so each arrival costs O(1) and a SACK's gap blocks
//! cost what they report — and the duplicates to report. Bounded: TSNs further than
//! [`MAX_AHEAD`] above the cumulative TSN are refused (a sender cannot have that many in flight
//! within any window we advertise).

use std::collections::VecDeque;

use crate::tsn::Tsn;

/// How far above the cumulative TSN an arrival may be.
pub const MAX_AHEAD: u32 = u16::MAX as u32;
/// Duplicates kept for the next SACK.
pub const MAX_DUPLICATES: usize = 16;
/// Gap blocks one SACK reports at most (the rest wait for the next).
pub const MAX_GAP_BLOCKS: usize = 64;

/// What an arriving TSN was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    New,
    Duplicate,
    /// Too far ahead: dropped, as if lost.
    TooFar,
}

/// The receiver's record of TSNs.
#[derive(Debug, Clone)]
pub struct Received {
    cum: Tsn,
    /// Bit `i` of the map: TSN `cum + 1 + i` came. Word 0's bit 0 is `cum + 1`, which is never
    /// set (it would have moved `cum`).
    map: VecDeque<u64>,
    duplicates: Vec<Tsn>,
}

impl Received {
    /// Before anything came: the cumulative TSN is the one before the peer's initial TSN.
    pub fn new(initial_tsn: Tsn) -> Self {
        Received {
            cum: Tsn(initial_tsn.0.wrapping_sub(1)),
            map: VecDeque::new(),
            duplicates: Vec::new(),
        }
    }

    pub fn cum_tsn(&self) -> Tsn {
        self.cum
    }

    /// Whether nothing above the cumulative TSN is held (no gap to report).
    pub fn in_order(&self) -> bool {
        self.map.is_empty()
    }

    fn bit(&self, off: u32) -> bool {
        let (w, b) = ((off / 64) as usize, off % 64);
        self.map.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    /// Notes an arriving TSN.
    pub fn on_data(&mut self, tsn: Tsn) -> Arrival {
        let Some(d) = tsn.after(self.cum) else {
            self.duplicate(tsn);
            return Arrival::Duplicate;
        };
        if d > MAX_AHEAD {
            return Arrival::TooFar;
        }
        let off = d - 1;
        if self.bit(off) {
            self.duplicate(tsn);
            return Arrival::Duplicate;
        }
        if off == 0 {
            self.advance(1);
        } else {
            let w = (off / 64) as usize;
            if self.map.len() <= w {
                self.map.resize(w + 1, 0);
            }
            self.map[w] |= 1 << (off % 64);
        }
        Arrival::New
    }

    fn duplicate(&mut self, tsn: Tsn) {
        if self.duplicates.len() < MAX_DUPLICATES {
            self.duplicates.push(tsn);
        }
    }

    /// The cumulative TSN moves up by `n` (TSN `cum + 1` arrived or was given up on), then
    /// over every TSN right after it already held.
    fn advance(&mut self, n: u32) {
        self.shift(n);
        // Now bit 0 is the new `cum + 1`: absorb the run of set bits from there.
        let run = self.map.front().map_or(0, |w| w.trailing_ones());
        if run > 0 {
            // A run can span words: count whole ones.
            let mut run = run;
            if run == 64 {
                run = 64 * self.map.iter().take_while(|w| **w == u64::MAX).count() as u32;
                run += self
                    .map
                    .get((run / 64) as usize)
                    .map_or(0, |w| w.trailing_ones());
            }
            self.shift(run);
        }
        if self.map.iter().all(|w| *w == 0) {
            self.map.clear();
        }
    }

    /// Moves the cumulative TSN up by `n`, dropping the map's first `n` bits.
    fn shift(&mut self, n: u32) {
        self.cum = self.cum.plus(n);
        let words = (n / 64) as usize;
        let bits = n % 64;
        if words >= self.map.len() {
            self.map.clear();
        } else {
            self.map.drain(..words);
        }
        if bits > 0 && !self.map.is_empty() {
            for i in 0..self.map.len() {
                let hi = self.map.get(i + 1).copied().unwrap_or(0);
                self.map[i] = (self.map[i] >> bits) | (hi << (64 - bits));
            }
        }
        while self.map.back() == Some(&0) {
            self.map.pop_back();
        }
    }

    /// FORWARD TSN: the sender gave up on everything up to `new_cum`; the cumulative TSN moves
    /// there (and over what follows it), unless it is there already or the jump is too far.
    pub fn forward(&mut self, new_cum: Tsn) -> bool {
        match new_cum.after(self.cum) {
            Some(d) if d <= MAX_AHEAD => {
                self.advance(d);
                true
            }
            _ => false,
        }
    }

    /// Gap ack blocks (start and end offsets from the cumulative TSN, inclusive), at most
    /// [`MAX_GAP_BLOCKS`].
    pub fn gap_blocks(&self) -> Vec<(u16, u16)> {
        let mut out = Vec::new();
        let mut start: Option<u32> = None;
        let total = self.map.len() as u32 * 64;
        let mut off = 0;
        while off < total && out.len() < MAX_GAP_BLOCKS {
            let w = self.map[(off / 64) as usize];
            // Skip whole empty or full words quickly.
            if off % 64 == 0 && w == 0 && start.is_none() {
                off += 64;
                continue;
            }
            let set = w & (1 << (off % 64)) != 0;
            match (set, start) {
                (true, None) => start = Some(off),
                (false, Some(s)) => {
                    out.push(((s + 1) as u16, off as u16));
                    start = None;
                }
                _ => {}
            }
            off += 1;
        }
        if let Some(s) = start
            && out.len() < MAX_GAP_BLOCKS
        {
            out.push(((s + 1) as u16, off as u16));
        }
        out
    }

    /// The duplicates since the last call.
    pub fn take_duplicates(&mut self) -> Vec<Tsn> {
        std::mem::take(&mut self.duplicates)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The same facts from a plain set of unwrapped TSNs, for comparison.
    struct Reference {
        cum: u64,
        held: BTreeSet<u64>,
    }

    impl Reference {
        fn absorb(&mut self) {
            while self.held.remove(&(self.cum + 1)) {
                self.cum += 1;
            }
        }

        fn gap_blocks(&self) -> Vec<(u16, u16)> {
            let mut out: Vec<(u16, u16)> = Vec::new();
            for &t in &self.held {
                let off = (t - self.cum) as u16;
                match out.last_mut() {
                    Some((_, end)) if *end + 1 == off => *end = off,
                    _ => out.push((off, off)),
                }
            }
            out.truncate(MAX_GAP_BLOCKS);
            out
        }
    }

    #[test]
    fn in_order_arrivals_move_the_cumulative_tsn() {
        let mut r = Received::new(Tsn(u32::MAX - 2));
        for t in [u32::MAX - 2, u32::MAX - 1, u32::MAX, 0, 1] {
            assert_eq!(r.on_data(Tsn(t)), Arrival::New);
        }
        assert_eq!(r.cum_tsn(), Tsn(1));
        assert!(r.in_order());
        assert_eq!(r.on_data(Tsn(0)), Arrival::Duplicate);
        assert_eq!(r.take_duplicates(), [Tsn(0)]);
        assert_eq!(r.on_data(Tsn(2 + MAX_AHEAD)), Arrival::TooFar);
    }

    #[test]
    fn gaps_are_reported_and_filled() {
        let mut r = Received::new(Tsn(100));
        for t in [100, 102, 103, 105, 170, 171] {
            r.on_data(Tsn(t));
        }
        assert_eq!(r.cum_tsn(), Tsn(100));
        assert_eq!(r.gap_blocks(), [(2, 3), (5, 5), (70, 71)]);
        r.on_data(Tsn(101));
        assert_eq!(r.cum_tsn(), Tsn(103));
        assert_eq!(r.gap_blocks(), [(2, 2), (67, 68)]);
        assert!(r.forward(Tsn(169)));
        assert_eq!(r.cum_tsn(), Tsn(171));
        assert!(r.in_order());
        assert!(!r.forward(Tsn(150)), "behind the cumulative TSN");
    }

    #[test]
    fn random_arrivals_agree_with_a_plain_set() {
        let mut next = crate::test_rng(0x2545_f491_4f6c_dd1d);
        for run in 0..50u64 {
            // Half the runs start just before the TSNs wrap.
            let start = if run % 2 == 0 {
                next() as u32
            } else {
                u32::MAX - 500
            };
            let mut r = Received::new(Tsn(start));
            let mut m = Reference {
                cum: u64::from(start) + (1 << 32) - 1,
                held: BTreeSet::new(),
            };
            for step in 0..3000 {
                let x = next();
                let k = 1 + (x >> 8) % 400;
                let t = m.cum + k;
                if x.is_multiple_of(50) {
                    // FORWARD TSN a little ahead (or to where it is).
                    let to = m.cum + (x >> 8) % 300;
                    let moved = r.forward(Tsn(to as u32));
                    assert_eq!(moved, to > m.cum, "run {run} step {step}");
                    if moved {
                        m.cum = to;
                        m.held.retain(|&h| h > to);
                        m.absorb();
                    }
                } else {
                    let want = if m.held.contains(&t) {
                        Arrival::Duplicate
                    } else {
                        Arrival::New
                    };
                    assert_eq!(r.on_data(Tsn(t as u32)), want, "run {run} step {step}");
                    m.held.insert(t);
                    m.absorb();
                }
                assert_eq!(r.cum_tsn(), Tsn(m.cum as u32), "run {run} step {step}");
                assert_eq!(r.gap_blocks(), m.gap_blocks(), "run {run} step {step}");
            }
        }
    }
}
