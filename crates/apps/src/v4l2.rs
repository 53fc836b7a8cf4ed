//! A V4L2 device that encodes H.264 itself — a UVC webcam with an H.264 mode, a board camera
//! behind its hardware encoder — as a video source: `v4l2:/dev/videoN`. Its access units are
//! passed through untouched (checked by [`peerweb_camera::h264`]), never transcoded; a device
//! that offers no H.264 is refused with what it offers. The device is read through the
//! `linuxvideo` crate (the V4L2 ioctls in Rust, no C library), on a blocking thread, with
//! memory-mapped buffers. A keyframe asked for by a viewer is asked of the encoder with its
//! "Force Key Frame" control where it has one (at most one per [`KEYFRAME_GAP`]); without it, the
//! camera's group-of-pictures cache serves new viewers. A device that fails (unplugged, or
//! silent for [`STALL`]) is opened again with backoff; the thread never blocks in the driver, so
//! it ends as soon as the camera stops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use linuxvideo::format::{PixFormat, PixelFormat};
use linuxvideo::{BufType, CapabilityFlags, Device, Fract};
use peerweb_camera::h264::Checker;
use tokio::sync::mpsc;

use crate::rtsp::Frame;
use crate::source::SourceEvent;

/// H.264 in V4L2's words.
const H264: PixelFormat = PixelFormat::from_fourcc(*b"H264");
/// Forced keyframes at most this often.
pub const KEYFRAME_GAP: Duration = Duration::from_millis(500);
/// Backoff between attempts to open the device.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// The largest access unit taken from the device.
const MAX_FRAME: usize = 4 << 20;
/// A device that delivers nothing for this long is opened again (as an RTSP camera is).
const STALL: Duration = crate::rtsp::STALL;
/// How often a waiting capture thread looks for a filled buffer (and for the camera having
/// stopped).
const WAIT_STEP: Duration = Duration::from_millis(5);

/// A V4L2 capture device, by path.
#[derive(Debug, Clone)]
pub struct V4l2Source {
    pub path: PathBuf,
}

impl V4l2Source {
    /// `v4l2:/dev/videoN`; `None` if it is not a `v4l2:` source.
    pub fn parse(arg: &str) -> Option<anyhow::Result<V4l2Source>> {
        let path = arg.strip_prefix("v4l2:")?;
        Some(if path.starts_with('/') && !path.contains('\0') {
            Ok(V4l2Source { path: path.into() })
        } else {
            Err(anyhow!(
                "{arg:?}: a V4L2 device is named by its path, e.g. v4l2:/dev/video0"
            ))
        })
    }

    /// Reads the device until the receiver of `frames` is gone, opening it again (with
    /// backoff) when it fails; reports its stream and failures on `events`.
    pub async fn run(
        self,
        fps: u32,
        frames: mpsc::Sender<Frame>,
        events: mpsc::UnboundedSender<SourceEvent>,
        keyframes: Arc<AtomicBool>,
    ) {
        let mut backoff = BACKOFF.0;
        loop {
            let (path, f, e, k) = (
                self.path.clone(),
                frames.clone(),
                events.clone(),
                keyframes.clone(),
            );
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || capture(&path, fps, &f, &e, &k)).await;
            let why = match result {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("the capture thread failed: {e}"),
            };
            if frames.is_closed() {
                return;
            }
            if started.elapsed() > BACKOFF.1 {
                backoff = BACKOFF.0;
            }
            tracing::warn!(path = %self.path.display(), "camera device: {why}; retrying in {backoff:?}");
            let _ = events.send(SourceEvent::Failed {
                layer: 0,
                why,
                retry: backoff,
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }
}

/// Opens the device for H.264 capture: its stream, and a second handle on its "Force Key
/// Frame" control if it has one.
fn open(
    path: &Path,
    fps: u32,
) -> anyhow::Result<(linuxvideo::stream::ReadStream, Option<Keyframer>)> {
    let dev = Device::open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc_enotty()) {
            anyhow!("{} is not a V4L2 video device", path.display())
        } else {
            anyhow!("cannot open {}: {e}", path.display())
        }
    })?;
    let caps = dev
        .capabilities()
        .with_context(|| format!("{}: cannot read its capabilities", path.display()))?;
    let flags = caps.device_capabilities();
    if !flags.contains(CapabilityFlags::VIDEO_CAPTURE | CapabilityFlags::STREAMING) {
        bail!(
            "{} ({}) is not a video capture device with streaming I/O",
            path.display(),
            caps.card()
        );
    }
    let mut offered = Vec::new();
    for f in dev.formats(BufType::VIDEO_CAPTURE) {
        let f = f.with_context(|| format!("{}: cannot list its formats", path.display()))?;
        offered.push(f.pixel_format());
    }
    if !offered.contains(&H264) {
        let names: Vec<String> = offered.iter().map(|p| fourcc(*p)).collect();
        bail!(
            "{} ({}) offers no H.264 (it offers: {}); peerweb passes H.264 through and never \
             transcodes — use a camera with an H.264 mode, or an RTSP server in front of it",
            path.display(),
            caps.card(),
            names.join(", ")
        );
    }
    // The size the device is set to now (its owner's choice), in H.264.
    let (w, h) = match dev.format(BufType::VIDEO_CAPTURE) {
        Ok(linuxvideo::format::Format::VideoCapture(f)) => (f.width(), f.height()),
        _ => (1280, 720),
    };
    let capture = dev
        .video_capture(PixFormat::new(w, h, H264))
        .with_context(|| format!("{}: cannot set H.264 capture", path.display()))?;
    if capture.format().pixel_format() != H264 {
        bail!("{}: the driver would not capture H.264", path.display());
    }
    // Best effort: some devices have one rate per size.
    let _ = capture.set_frame_interval(Fract::new(1, fps.max(1)));
    let stream = capture
        .into_stream()
        .with_context(|| format!("{}: cannot start streaming", path.display()))?;
    Ok((stream, Keyframer::find(path)))
}

/// The encoder's "Force Key Frame" control, on a second handle to the device.
struct Keyframer {
    dev: Device,
    cid: linuxvideo::controls::Cid,
    last: Option<Instant>,
}

impl Keyframer {
    fn find(path: &Path) -> Option<Keyframer> {
        let dev = Device::open(path).ok()?;
        // V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME, by the name the kernel gives it.
        let cid = dev
            .controls()
            .take(4096)
            .map_while(Result::ok)
            .find(|c| c.name() == "Force Key Frame")?
            .id();
        Some(Keyframer {
            dev,
            cid,
            last: None,
        })
    }

    fn force(&mut self) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < KEYFRAME_GAP) {
            return;
        }
        self.last = Some(now);
        if let Err(e) = self.dev.write_control_raw(self.cid, 1) {
            tracing::debug!("force key frame: {e}");
        }
    }
}

/// One capture session, on a blocking thread: `Ok` only when the frames' receiver is gone.
fn capture(
    path: &Path,
    fps: u32,
    frames: &mpsc::Sender<Frame>,
    events: &mpsc::UnboundedSender<SourceEvent>,
    keyframes: &AtomicBool,
) -> anyhow::Result<()> {
    let (mut stream, mut keyframer) = open(path, fps)?;
    let mut checker = Checker::new();
    let mut announced = false;
    let mut time = crate::rtsp::Timeline::new(90_000);
    loop {
        if keyframes.swap(false, Ordering::Relaxed)
            && let Some(k) = &mut keyframer
        {
            k.force();
        }
        // Wait for a filled buffer without blocking in the driver: a device that goes silent
        // is noticed, and a camera that stops is not held up.
        let waiting = Instant::now();
        while stream
            .will_block()
            .with_context(|| format!("{}: waiting for a frame", path.display()))?
        {
            if frames.is_closed() {
                return Ok(());
            }
            if waiting.elapsed() > STALL {
                bail!("{} sent nothing for {} s", path.display(), STALL.as_secs());
            }
            std::thread::sleep(WAIT_STEP);
        }
        let data = stream
            .dequeue(|buf| {
                if buf.is_error() || buf.len() > MAX_FRAME {
                    return Ok(None);
                }
                Ok(Some(Arc::<[u8]>::from(&*buf)))
            })
            .with_context(|| format!("{}: reading a frame", path.display()))?;
        let Some(data) = data else { continue };
        if let Some(info) = checker.check(&data)? {
            let _ = events.send(SourceEvent::Video { layer: 0, info });
            announced = true;
        }
        if !announced {
            continue;
        }
        let frame = Frame::Video {
            layer: 0,
            rtp: time.now(),
            data,
        };
        if frames.blocking_send(frame).is_err() {
            return Ok(());
        }
    }
}

/// A pixel format's four characters, for people.
fn fourcc(p: PixelFormat) -> String {
    p.as_fourcc()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// `ENOTTY`: the ioctl's answer from a file that is not a V4L2 device.
const fn libc_enotty() -> i32 {
    25
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_paths() {
        assert_eq!(
            V4l2Source::parse("v4l2:/dev/video0").unwrap().unwrap().path,
            PathBuf::from("/dev/video0")
        );
        assert!(V4l2Source::parse("v4l2:video0").unwrap().is_err());
        assert!(V4l2Source::parse("v4l2:").unwrap().is_err());
        assert!(V4l2Source::parse("/dev/video0").is_none());
        assert_eq!(fourcc(H264), "H264");
    }

    #[test]
    fn what_is_not_a_camera_gets_a_clear_error() {
        let missing = open(Path::new("/dev/peerweb-no-such-video"), 30)
            .err()
            .unwrap();
        assert!(
            format!("{missing:#}").contains("cannot open"),
            "{missing:#}"
        );
        // A character device that takes no V4L2 ioctl.
        let null = open(Path::new("/dev/null"), 30).err().unwrap();
        assert!(
            format!("{null:#}").contains("not a V4L2 video device"),
            "{null:#}"
        );
        // A plain file.
        let dir = std::env::temp_dir().join(format!("peerweb-v4l2-{}", std::process::id()));
        std::fs::write(&dir, b"not a camera").unwrap();
        let file = open(&dir, 30).err().unwrap();
        let _ = std::fs::remove_file(&dir);
        assert!(
            format!("{file:#}").contains("not a V4L2 video device"),
            "{file:#}"
        );
    }
}
