//! The retransmission timeout from RTT samples (RFC 9260 §6.3.1) and the congestion window
//! (§7.2: slow start, congestion avoidance, fast recovery, the timer's collapse), in bytes.
//! In fast recovery what may be sent follows what arrives (proportional rate reduction,
//! RFC 6937), so a window halved below what is in flight keeps the path in use, and the
//! SACKs of what goes show which retransmissions were lost again.

use std::time::Duration;

/// RTO bounds. The data-channel profile's peers are browsers on real networks: RFC 9260's
/// initial 1 s and minimum 1 s are kept for the start; the minimum is lower (dcSCTP, in
/// Chromium, uses 220 ms) so a loss on a short path is not a second of silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtoLimits {
    pub initial: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl Default for RtoLimits {
    fn default() -> Self {
        RtoLimits {
            initial: Duration::from_secs(1),
            min: Duration::from_millis(220),
            max: Duration::from_secs(60),
        }
    }
}

/// The smoothed RTT and the RTO derived from it.
#[derive(Debug, Clone, Copy)]
pub struct Rto {
    limits: RtoLimits,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
}

impl Rto {
    pub fn new(limits: RtoLimits) -> Rto {
        Rto {
            limits,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: limits.initial,
        }
    }

    /// An RTT measurement.
    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                // RTO.Beta = 1/4, RTO.Alpha = 1/8.
                let diff = srtt.abs_diff(rtt);
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(srtt * 7 / 8 + rtt / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        // A clock granularity of 1 ms at least in the variance term.
        let rto = srtt + (4 * self.rttvar).max(Duration::from_millis(1));
        self.rto = rto.clamp(self.limits.min, self.limits.max);
    }

    /// The timer expired: the RTO doubles (up to the maximum).
    pub fn back_off(&mut self) {
        self.rto = (self.rto * 2).min(self.limits.max);
    }

    pub fn rto(&self) -> Duration {
        self.rto
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
}

/// MTUs one SACK may grow the window by in slow start.
pub const SACK_BATCH: usize = 64;

/// The congestion window of one path, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Congestion {
    mtu: usize,
    cwnd: usize,
    ssthresh: usize,
    /// Bytes acknowledged toward the next increase in congestion avoidance.
    partial_acked: usize,
    /// In fast recovery (until the caller says the highest TSN outstanding when it began was
    /// acknowledged): no further reduction for losses of the same window.
    recovering: bool,
    prr: Prr,
}

/// Proportional rate reduction's counts (RFC 6937), for one recovery: the bytes in flight
/// when it began, delivered since, and sent since; and the bytes the last SACK delivered.
#[derive(Debug, Clone, Copy, Default)]
struct Prr {
    flight: usize,
    delivered: usize,
    out: usize,
    last: usize,
}

/// The initial congestion window, in MTUs.
pub const INITIAL_WINDOW_MTUS: usize = 10;

impl Congestion {
    /// Initial window: ten MTUs, as TCP's (RFC 6928) and dcSCTP's are — RFC 9260 §7.2.1's
    /// min(4·MTU, max(2·MTU, 4380)) costs a long path two more round trips of slow start, and
    /// new data is paced anyway; `ssthresh` the peer's receiver window.
    pub fn new(mtu: usize, peer_rwnd: usize) -> Congestion {
        Congestion {
            mtu,
            cwnd: INITIAL_WINDOW_MTUS * mtu,
            ssthresh: peer_rwnd.max(2 * mtu),
            partial_acked: 0,
            recovering: false,
            prr: Prr::default(),
        }
    }

    pub fn cwnd(&self) -> usize {
        self.cwnd
    }

    pub fn ssthresh(&self) -> usize {
        self.ssthresh
    }

    pub fn in_recovery(&self) -> bool {
        self.recovering
    }

    /// A SACK acknowledged `acked` new bytes with `in_flight` bytes outstanding before it;
    /// `advanced`: the cumulative ack point moved. Fast recovery ends when `recovered` (the
    /// point it began at was acknowledged).
    pub fn on_ack(&mut self, acked: usize, in_flight: usize, advanced: bool, recovered: bool) {
        if self.recovering && recovered {
            self.recovering = false;
        }
        if self.recovering {
            self.prr.delivered += acked;
            self.prr.last = acked;
        }
        if !advanced || self.recovering {
            return;
        }
        // Only a window that is being used grows; in slow start, as in Linux's TCP, half used
        // counts (new data is paced, so the window is seldom full when a SACK comes).
        let used = in_flight + acked >= self.cwnd;
        if self.cwnd <= self.ssthresh {
            if 2 * (in_flight + acked) >= self.cwnd {
                // RFC 9260 counts at most one MTU per SACK; ours acknowledge a whole batch of
                // datagrams at once (one SACK per batch read), so a SACK counts for up to
                // `SACK_BATCH` MTUs, like TCP's byte counting of stretch ACKs (RFC 3465).
                self.cwnd += acked.min(SACK_BATCH * self.mtu);
            }
        } else {
            self.partial_acked += acked;
            if self.partial_acked >= self.cwnd && used {
                self.partial_acked -= self.cwnd;
                self.cwnd += self.mtu;
            }
        }
    }

    /// Chunks were marked for fast retransmission with `in_flight` bytes outstanding (once
    /// per window: not again while recovering).
    pub fn on_fast_retransmit(&mut self, in_flight: usize) {
        if self.recovering {
            return;
        }
        self.ssthresh = (self.cwnd / 2).max(4 * self.mtu);
        self.cwnd = self.ssthresh;
        self.partial_acked = 0;
        self.recovering = true;
        self.prr = Prr {
            flight: in_flight.max(1),
            ..Prr::default()
        };
    }

    /// Bytes that may be sent now with `in_flight` outstanding: in recovery, PRR's share of
    /// what was delivered (down to ssthresh, then as slow start would, by what arrives); else
    /// what the window leaves.
    pub fn allowance(&self, in_flight: usize) -> usize {
        if !self.recovering {
            return self.cwnd.saturating_sub(in_flight);
        }
        let p = &self.prr;
        if in_flight > self.ssthresh {
            let share = (p.delivered as u128 * self.ssthresh as u128).div_ceil(p.flight as u128);
            (share as usize).saturating_sub(p.out)
        } else {
            let limit = p.delivered.saturating_sub(p.out).max(p.last) + self.mtu;
            (self.ssthresh - in_flight).min(limit)
        }
    }

    /// `bytes` were sent (counted against recovery's allowance).
    pub fn on_sent(&mut self, bytes: usize) {
        if self.recovering {
            self.prr.out += bytes;
        }
    }

    /// The retransmission timer expired: back to one MTU.
    pub fn on_timeout(&mut self) {
        self.ssthresh = (self.cwnd / 2).max(4 * self.mtu);
        self.cwnd = self.mtu;
        self.partial_acked = 0;
        self.recovering = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rto_follows_samples_within_its_bounds() {
        let mut r = Rto::new(RtoLimits::default());
        assert_eq!(r.rto(), Duration::from_secs(1));
        r.sample(Duration::from_millis(100));
        // SRTT 100, RTTVAR 50: RTO = 100 + 200.
        assert_eq!(r.rto(), Duration::from_millis(300));
        for _ in 0..50 {
            r.sample(Duration::from_millis(10));
        }
        assert_eq!(r.rto(), Duration::from_millis(220), "at its minimum");
        r.back_off();
        assert_eq!(r.rto(), Duration::from_millis(440));
        for _ in 0..20 {
            r.back_off();
        }
        assert_eq!(r.rto(), Duration::from_secs(60));
    }

    #[test]
    fn the_window_grows_halves_and_collapses() {
        let mtu = 1200;
        let mut c = Congestion::new(mtu, 1 << 20);
        let iw = INITIAL_WINDOW_MTUS * mtu;
        assert_eq!(c.cwnd(), iw);
        // Slow start: the bytes a SACK acknowledges, window used, up to SACK_BATCH MTUs.
        c.on_ack(2400, iw, true, false);
        assert_eq!(c.cwnd(), iw + 2400);
        c.on_ack(100 * mtu, 100 * mtu, true, false);
        assert_eq!(c.cwnd(), iw + 2400 + SACK_BATCH * mtu);
        // Not when the window was not (half) used.
        let used = c.cwnd();
        c.on_ack(2400, 100, true, false);
        assert_eq!(c.cwnd(), used);
        // In slow start a window half used counts (paced data seldom fills it).
        c.on_ack(2400, used / 2, true, false);
        assert_eq!(c.cwnd(), used + 2400);
        // A loss: halved (at least 4 MTU), and not again within the same recovery.
        for _ in 0..100 {
            c.on_ack(mtu, c.cwnd(), true, false);
        }
        let before = c.cwnd();
        c.on_fast_retransmit(before);
        assert_eq!(c.cwnd(), (before / 2).max(4 * mtu));
        c.on_fast_retransmit(before);
        assert_eq!(c.cwnd(), (before / 2).max(4 * mtu));
        assert!(c.in_recovery());
        c.on_ack(mtu, c.cwnd(), true, true);
        assert!(!c.in_recovery());
        // Congestion avoidance: one MTU per window acknowledged.
        let w = c.cwnd();
        let mut acked = 0;
        while acked < w {
            c.on_ack(mtu, c.cwnd(), true, false);
            acked += mtu;
        }
        assert_eq!(c.cwnd(), w + mtu);
        c.on_timeout();
        assert_eq!(c.cwnd(), mtu);
    }
}
