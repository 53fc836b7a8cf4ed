//! Which of a camera's two streams each viewer gets: the main stream while the viewer's
//! bandwidth estimate (its own congestion controller's, str0m's GCC) carries it with room to
//! spare, the camera's sub stream (lower resolution and rate) when it does not. A move happens
//! at the next keyframe of the stream moved to — the viewer's decoder needs one to go on — and
//! with hysteresis: down below 1.15× the main stream's measured rate, up only above 1.5× and
//! [`UP_HOLD`] after the last move — doubled (up to [`MAX_UP_HOLD`]) each time a move up did not
//! last [`FAILED_UP`], since a probe can overestimate a bursty slow link (a token bucket lets
//! a probe's burst through at line rate), and reset after [`FAILED_UP`] on the main stream.
//! Each viewer's estimator is asked to probe towards 1.6× the main rate, so that on the sub
//! stream it learns when the main stream fits again. (Probing higher — 4× was tried, to give
//! the pacer room for keyframes — inflated the estimate on a slow link enough to move a viewer
//! back up while the link was still slow.)
//!
//! Sans-IO: the writer tells what it sent and when; estimates come in with the time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Estimates in a viewer's first moments are the controller's starting guess: not used.
pub const SETTLE: Duration = Duration::from_secs(2);
/// After a move, the least time before moving down again.
pub const DOWN_HOLD: Duration = Duration::from_secs(1);
/// After a move, the least time before moving up again (at first).
pub const UP_HOLD: Duration = Duration::from_secs(10);
/// The most [`UP_HOLD`] grows to after failed moves up.
pub const MAX_UP_HOLD: Duration = Duration::from_secs(80);
/// A move up that is followed by a move down within this long failed.
pub const FAILED_UP: Duration = Duration::from_secs(30);
/// The window over which each stream's rate is measured.
pub const RATE_WINDOW: Duration = Duration::from_secs(2);
/// Percent of the main stream's rate an estimate must reach to keep it, and to get it back.
const DOWN_BELOW_PCT: u64 = 115;
const UP_ABOVE_PCT: u64 = 150;
/// Percent of the main stream's rate each viewer's estimator probes towards.
const PROBE_TO_PCT: u64 = 160;
/// Frames remembered per stream for its rate (a bound, whatever the frame rate).
const MAX_SAMPLES: usize = 1024;

#[derive(Debug, Default)]
struct Rate {
    samples: VecDeque<(Instant, usize)>,
    bytes: usize,
}

impl Rate {
    fn add(&mut self, now: Instant, bytes: usize) {
        self.samples.push_back((now, bytes));
        self.bytes += bytes;
        while let Some(&(t, b)) = self.samples.front() {
            if now.duration_since(t) < RATE_WINDOW && self.samples.len() <= MAX_SAMPLES {
                break;
            }
            self.samples.pop_front();
            self.bytes -= b;
        }
    }

    /// Bits per second over the window.
    fn bps(&self) -> u64 {
        (self.bytes as u64 * 8 * 1000) / RATE_WINDOW.as_millis() as u64
    }
}

#[derive(Debug)]
struct Choice {
    /// The stream it gets now, and the one it should get.
    on: usize,
    want: usize,
    started: Instant,
    /// The last move (or the start), and the last move up.
    moved: Instant,
    moved_up: Option<Instant>,
    /// The hold before the next move up: [`UP_HOLD`], doubled after each failed move up.
    up_hold: Duration,
    estimate: Option<u64>,
    /// What its estimator was last asked to probe towards.
    told: Option<u64>,
}

/// The choice for every viewer of one camera.
#[derive(Debug, Default)]
pub struct Layers {
    peers: HashMap<String, Choice>,
    rates: [Rate; 2],
}

impl Layers {
    /// A viewer starts on `layer`.
    pub fn start(&mut self, now: Instant, peer: &str, layer: usize) {
        self.peers.insert(
            peer.to_owned(),
            Choice {
                on: layer,
                want: layer,
                started: now,
                moved: now,
                moved_up: None,
                up_hold: UP_HOLD,
                estimate: None,
                told: None,
            },
        );
    }

    pub fn stop(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// A frame of `bytes` of stream `layer` went out.
    pub fn sent(&mut self, now: Instant, layer: usize, bytes: usize) {
        if let Some(r) = self.rates.get_mut(layer) {
            r.add(now, bytes);
        }
    }

    /// A stream's rate over the last [`RATE_WINDOW`], bits per second.
    pub fn rate(&self, layer: usize) -> u64 {
        self.rates.get(layer).map_or(0, Rate::bps)
    }

    /// The stream `peer` gets now.
    pub fn layer(&self, peer: &str) -> Option<usize> {
        self.peers.get(peer).map(|c| c.on)
    }

    /// A new estimate for `peer` (bits per second). Returns the rate its estimator should now
    /// probe towards, when that changed.
    pub fn estimate(&mut self, now: Instant, peer: &str, bps: u64) -> Option<u64> {
        let main = self.rate(0);
        let c = self.peers.get_mut(peer)?;
        c.estimate = Some(bps);
        if now < c.started + SETTLE || main == 0 {
            return None;
        }
        if c.want == 0 && bps * 100 < main * DOWN_BELOW_PCT && now >= c.moved + DOWN_HOLD {
            c.want = 1;
        } else if c.want == 1 && bps * 100 > main * UP_ABOVE_PCT && now >= c.moved + c.up_hold {
            c.want = 0;
        }
        if c.on == 0 && c.moved_up.is_some_and(|t| now >= t + FAILED_UP) {
            // The last move up held: the next one need not wait longer than the first.
            c.moved_up = None;
            c.up_hold = UP_HOLD;
        }
        // Probe towards what would bring the main stream back (told again when the main
        // stream's rate moved by a fifth).
        let desired = main * PROBE_TO_PCT / 100;
        let stale = c.told.is_none_or(|t| t.abs_diff(desired) * 5 > t);
        if stale {
            c.told = Some(desired);
            return Some(desired);
        }
        None
    }

    /// A keyframe of `layer` is about to go out: the viewers that should move to it do now.
    /// Returns them with their last estimate.
    pub fn switch_at_keyframe(&mut self, now: Instant, layer: usize) -> Vec<(String, Option<u64>)> {
        let mut moved = Vec::new();
        for (peer, c) in &mut self.peers {
            if c.want == layer && c.on != layer {
                if layer == 1 && c.moved_up.is_some_and(|t| now < t + FAILED_UP) {
                    c.up_hold = (c.up_hold * 2).min(MAX_UP_HOLD);
                }
                if layer == 0 {
                    c.moved_up = Some(now);
                }
                c.on = layer;
                c.moved = now;
                moved.push((peer.clone(), c.estimate));
            }
        }
        moved.sort();
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two streams sent for `secs`: main at 2 Mbit/s, sub at 200 kbit/s, 25 frames a second.
    fn stream(l: &mut Layers, t: &mut Instant, secs: u64) {
        for _ in 0..secs * 25 {
            *t += Duration::from_millis(40);
            l.sent(*t, 0, 10_000);
            l.sent(*t, 1, 1_000);
        }
    }

    #[test]
    fn a_viewer_moves_down_at_a_sub_keyframe_and_back_up_with_hysteresis() {
        let mut l = Layers::default();
        let mut t = Instant::now();
        stream(&mut l, &mut t, 3);
        assert_eq!(l.rate(0) / 1000, 2000);
        assert_eq!(l.rate(1) / 1000, 200);
        l.start(t, "v", 0);
        // The controller's first guesses are not taken.
        assert_eq!(l.estimate(t, "v", 300_000), None);
        assert_eq!(l.layer("v"), Some(0));
        stream(&mut l, &mut t, 3);
        // Above 1.15× main: stays; the estimator is asked to probe to 3.2 Mbit/s.
        assert_eq!(l.estimate(t, "v", 2_400_000), Some(3_200_000));
        assert!(
            l.switch_at_keyframe(t, 1).is_empty(),
            "2.4 > 1.15 × 2: stays"
        );
        assert_eq!(l.estimate(t, "v", 1_500_000), None);
        assert!(
            l.switch_at_keyframe(t, 0).is_empty(),
            "a main keyframe moves nobody"
        );
        assert_eq!(l.switch_at_keyframe(t, 1), [("v".into(), Some(1_500_000))]);
        assert_eq!(l.layer("v"), Some(1));
        // Up needs 1.5× main, and UP_HOLD after the move.
        stream(&mut l, &mut t, 1);
        l.estimate(t, "v", 5_000_000);
        assert!(
            l.switch_at_keyframe(t, 0).is_empty(),
            "too soon after the move"
        );
        stream(&mut l, &mut t, 10);
        l.estimate(t, "v", 2_800_000);
        assert!(l.switch_at_keyframe(t, 0).is_empty(), "1.4× is not enough");
        l.estimate(t, "v", 3_100_000);
        assert_eq!(l.switch_at_keyframe(t, 0).len(), 1);
        assert_eq!(l.layer("v"), Some(0));
        // A probe's overestimate: down again at once, and the next move up waits twice as
        // long, then four times.
        stream(&mut l, &mut t, 2);
        l.estimate(t, "v", 500_000);
        assert_eq!(l.switch_at_keyframe(t, 1).len(), 1);
        stream(&mut l, &mut t, 15);
        l.estimate(t, "v", 3_100_000);
        assert!(l.switch_at_keyframe(t, 0).is_empty(), "15 s < 2 × UP_HOLD");
        stream(&mut l, &mut t, 6);
        l.estimate(t, "v", 3_100_000);
        assert_eq!(l.switch_at_keyframe(t, 0).len(), 1, "after 2 × UP_HOLD");
        stream(&mut l, &mut t, 2);
        l.estimate(t, "v", 500_000);
        assert_eq!(l.switch_at_keyframe(t, 1).len(), 1);
        stream(&mut l, &mut t, 30);
        l.estimate(t, "v", 3_100_000);
        assert!(l.switch_at_keyframe(t, 0).is_empty(), "30 s < 4 × UP_HOLD");
        stream(&mut l, &mut t, 11);
        l.estimate(t, "v", 3_100_000);
        assert_eq!(l.switch_at_keyframe(t, 0).len(), 1);
        // A move up that holds for FAILED_UP brings the hold back to UP_HOLD.
        stream(&mut l, &mut t, 31);
        l.estimate(t, "v", 3_100_000);
        stream(&mut l, &mut t, 2);
        l.estimate(t, "v", 500_000);
        assert_eq!(l.switch_at_keyframe(t, 1).len(), 1);
        stream(&mut l, &mut t, 11);
        l.estimate(t, "v", 3_100_000);
        assert_eq!(l.switch_at_keyframe(t, 0).len(), 1, "back to UP_HOLD");
        // A stopped viewer is forgotten.
        l.stop("v");
        assert_eq!(l.estimate(t, "v", 1), None);
        assert_eq!(l.layer("v"), None);
    }

    #[test]
    fn nothing_moves_without_a_main_stream_and_rates_are_bounded() {
        let mut l = Layers::default();
        let mut t = Instant::now();
        l.start(t, "v", 0);
        t += SETTLE * 2;
        assert_eq!(l.estimate(t, "v", 1), None, "no main rate measured yet");
        // A flood of tiny frames within the window keeps at most MAX_SAMPLES.
        for _ in 0..10 * MAX_SAMPLES {
            l.sent(t, 0, 1);
        }
        assert!(l.rates[0].samples.len() <= MAX_SAMPLES);
        assert_eq!(l.rates[0].bytes, l.rates[0].samples.len());
        l.sent(t, 7, 1);
    }
}
