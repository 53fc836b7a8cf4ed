//! The frames since the last keyframe, kept so that a viewer who arrives mid-stream gets a
//! picture at once instead of waiting for the camera's next keyframe (cameras send one every
//! 1–4 s, and an RTSP camera cannot be asked for one). The frames are replayed to that viewer
//! alone with their timestamps squeezed 1 ms apart, ending at the newest frame's: the decoder
//! runs through them at once and shows the newest, and the live stream follows seamlessly.

use std::sync::Arc;

/// Frames kept at most (a 10 s group of pictures at 60 fps).
pub const MAX_FRAMES: usize = 600;
/// Bytes kept at most; a longer group is not cached (viewers wait for the next keyframe).
pub const MAX_BYTES: usize = 16 << 20;
/// The spacing of replayed frames, in 90 kHz ticks (1 ms).
pub const REPLAY_STEP: u64 = 90;

/// The current group of pictures.
#[derive(Debug, Default)]
pub struct Gop {
    frames: Vec<(u64, Arc<[u8]>)>,
    bytes: usize,
    /// Over a limit since the last keyframe: nothing kept until the next.
    over: bool,
}

impl Gop {
    /// The next frame of the stream, at `rtp` (90 kHz).
    pub fn push(&mut self, rtp: u64, data: &Arc<[u8]>, keyframe: bool) {
        if keyframe {
            self.frames.clear();
            self.bytes = 0;
            self.over = false;
        } else if self.over || self.frames.is_empty() {
            return;
        }
        if self.frames.len() >= MAX_FRAMES || self.bytes + data.len() > MAX_BYTES {
            self.frames.clear();
            self.bytes = 0;
            self.over = true;
            return;
        }
        self.bytes += data.len();
        self.frames.push((rtp, data.clone()));
    }

    /// Frames held (0 before the first keyframe, or over a limit).
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The frames to replay to a new viewer, oldest (the keyframe) first, with squeezed
    /// timestamps ending at the newest frame's own.
    pub fn replay(&self) -> impl Iterator<Item = (u64, Arc<[u8]>)> + '_ {
        let n = self.frames.len() as u64;
        let last = self.frames.last().map_or(0, |f| f.0);
        self.frames.iter().enumerate().map(move |(i, (_, d))| {
            let back = (n - 1 - i as u64) * REPLAY_STEP;
            (last.saturating_sub(back), d.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: u8, len: usize) -> Arc<[u8]> {
        Arc::from(vec![n; len])
    }

    #[test]
    fn keeps_from_the_last_keyframe_and_replays_squeezed() {
        let mut g = Gop::default();
        g.push(0, &f(0, 10), false);
        assert!(g.is_empty(), "nothing before a keyframe");
        g.push(3000, &f(1, 10), true);
        g.push(6000, &f(2, 10), false);
        g.push(9000, &f(3, 10), false);
        let r: Vec<(u64, u8)> = g.replay().map(|(t, d)| (t, d[0])).collect();
        assert_eq!(r, [(9000 - 180, 1), (9000 - 90, 2), (9000, 3)]);
        g.push(12000, &f(4, 10), true);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_group_over_the_limits_is_not_kept() {
        let mut g = Gop::default();
        g.push(0, &f(1, MAX_BYTES - 5), true);
        g.push(1, &f(2, 10), false);
        assert!(g.is_empty());
        g.push(2, &f(3, 10), false);
        assert!(g.is_empty(), "stays empty until the next keyframe");
        g.push(3, &f(4, 10), true);
        assert_eq!(g.len(), 1);
        for i in 0..MAX_FRAMES as u64 {
            g.push(4 + i, &f(5, 1), false);
        }
        assert!(g.is_empty());
        // Timestamps near zero do not wrap.
        let mut g = Gop::default();
        g.push(10, &f(1, 1), true);
        g.push(20, &f(1, 1), false);
        assert_eq!(g.replay().map(|(t, _)| t).collect::<Vec<_>>(), [0, 20]);
    }
}
