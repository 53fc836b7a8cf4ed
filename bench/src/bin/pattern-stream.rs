//! The built-in test pattern as a live stream on stdout, for the camera benchmark's RTSP
//! server (tests/media/rtsp-server.py --h264-from): each access unit as a 4-byte big-endian
//! length and the Annex B bytes, paced at `--fps`, each drawn with the wall-clock time it
//! leaves, so a viewer reads glass-to-glass latency off the picture. Bounded by `--seconds`.
//!
//! Usage: pattern-stream [--size 640x480] [--fps 30] [--seconds 600]

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn main() -> anyhow::Result<()> {
    let size = arg("--size", "640x480");
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--size is WIDTHxHEIGHT"))?;
    let fps: u32 = arg("--fps", "30").parse()?;
    let seconds: u64 = arg("--seconds", "600").parse()?;
    let mut pattern = peerweb_camera::pattern::Pattern::new(w, h, fps)?;
    let every = Duration::from_micros(1_000_000 / u64::from(fps.max(1)));
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(seconds) {
        let next = start + every * n;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (au, _) = pattern.frame(n, ms);
        out.write_all(&(au.len() as u32).to_be_bytes())?;
        out.write_all(&au)?;
        out.flush()?;
        n = n.wrapping_add(1);
    }
    Ok(())
}
