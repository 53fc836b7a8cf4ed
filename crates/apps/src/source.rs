//! Video and audio sources: read and checked before joining, then sent from a task — a
//! file's access units looped and paced, the built-in test pattern drawn frame by frame, or
//! an RTSP camera's frames as they come ([`crate::rtsp`]).

use std::path::Path;

use anyhow::Context;
use peerweb_camera::gop::Gop;
use peerweb_camera::h264::{Checker, StreamInfo, is_keyframe};
use tokio::sync::mpsc;

/// What a running source reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SourceEvent {
    /// The video of `layer` (0: main, 1: a camera's sub stream) is (now) this: profile and
    /// size, from its SPS.
    Video { layer: usize, info: StreamInfo },
    /// The source of `layer` failed and is tried again after `retry`.
    Failed {
        layer: usize,
        why: String,
        retry: std::time::Duration,
    },
    /// `peer` gets `layer` from now on (its bandwidth estimate, when known, made the choice).
    Layer {
        peer: String,
        layer: usize,
        estimate: Option<u64>,
    },
}

/// A started source: ask it for keyframes, start and stop viewers, hear what happens to it.
#[derive(Debug)]
pub struct Running {
    pub keyframes: Keyframes,
    pub events: mpsc::UnboundedReceiver<SourceEvent>,
    /// With gated media (a camera): which peers get the video, carried out by the task that
    /// writes it, in order with its frames — a viewer starts with the frames since the last
    /// keyframe ([`Gop`]), then the live stream.
    pub viewers: mpsc::UnboundedSender<Viewer>,
}

/// The next message of an optional receiver; never, once there is none or nobody can send
/// on it any more (a source with nothing to report, `join --video` with no viewers to gate).
pub(crate) async fn recv_or_pending<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> T {
    if let Some(r) = rx {
        if let Some(v) = r.recv().await {
            return v;
        }
        *rx = None;
    }
    std::future::pending().await
}

/// A change in who gets a gated source's video, or in what a viewer's path can carry.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// From now on, primed with the current group of pictures.
    Start(String),
    Stop(String),
    /// The peer's bandwidth estimate, bits per second: with a sub stream, it decides which
    /// of the two the peer gets.
    Estimate(String, u64),
}

/// The one writer of a source's video: each frame to the allowed peers on its layer, kept in
/// that layer's group of pictures; viewers started (primed with that group), stopped and
/// moved between the main and the sub stream (at a keyframe of the new one) in order with the
/// frames. `false` from a method: the node stopped.
struct VideoOut {
    media: peerweb_net::MediaHandle,
    gops: [Gop; 2],
    viewers: Option<mpsc::UnboundedReceiver<Viewer>>,
    /// A second (sub) stream runs: viewers are moved between the two by their estimates.
    layered: bool,
    choice: peerweb_camera::layers::Layers,
    events: mpsc::UnboundedSender<SourceEvent>,
    /// The codec the node was last told the audio is in.
    audio_codec: Option<peerweb_peer::AudioCodec>,
}

impl VideoOut {
    fn new(
        media: peerweb_net::MediaHandle,
        viewers: Option<mpsc::UnboundedReceiver<Viewer>>,
        layered: bool,
        events: mpsc::UnboundedSender<SourceEvent>,
    ) -> Self {
        VideoOut {
            media,
            gops: [Gop::default(), Gop::default()],
            viewers,
            layered,
            choice: peerweb_camera::layers::Layers::default(),
            events,
            audio_codec: None,
        }
    }

    async fn frame(&mut self, layer: usize, rtp: u64, data: std::sync::Arc<[u8]>) -> bool {
        let key = is_keyframe(&data);
        self.gops[layer].push(rtp, &data, key);
        // With two streams: each one's rate for the choice, and viewers waiting for this
        // layer's keyframe moved to it now, before the frame.
        if self.layered {
            let now = tokio::time::Instant::now().into_std();
            self.choice.sent(now, layer, data.len());
            let moved = if key {
                self.choice.switch_at_keyframe(now, layer)
            } else {
                Vec::new()
            };
            for (peer, estimate) in moved {
                if self.media.set_layer(&peer, layer).await.is_err() {
                    return false;
                }
                let _ = self.events.send(SourceEvent::Layer {
                    peer,
                    layer,
                    estimate,
                });
            }
        }
        self.media.write_layer(layer, rtp, data).await.is_ok()
    }

    /// The camera's audio (G.711 or Opus), to every allowed peer.
    async fn audio(
        &mut self,
        codec: peerweb_peer::AudioCodec,
        rtp: u64,
        data: std::sync::Arc<[u8]>,
    ) -> bool {
        if self.audio_codec != Some(codec) {
            self.audio_codec = Some(codec);
            if self.media.set_audio_codec(codec).await.is_err() {
                return false;
            }
        }
        self.media.write(false, rtp, data).await.is_ok()
    }

    async fn next_viewer(&mut self) -> Viewer {
        recv_or_pending(&mut self.viewers).await
    }

    async fn apply(&mut self, viewer: Viewer) -> bool {
        let media = &self.media;
        let now = tokio::time::Instant::now().into_std();
        match viewer {
            Viewer::Start(peer) => {
                // The main stream, unless only the sub stream has a picture now.
                let layer = usize::from(self.gops[0].is_empty() && !self.gops[1].is_empty());
                self.choice.start(now, &peer, layer);
                if media.set_layer(&peer, layer).await.is_err() {
                    return false;
                }
                for (rtp, data) in self.gops[layer].replay() {
                    if media.write_to(&peer, true, rtp, data).await.is_err() {
                        return false;
                    }
                }
                media.allow(&peer, true).await.is_ok()
            }
            Viewer::Stop(peer) => {
                self.choice.stop(&peer);
                media.allow(&peer, false).await.is_ok()
            }
            Viewer::Estimate(peer, bps) => {
                if !self.layered {
                    return true;
                }
                match self.choice.estimate(now, &peer, bps) {
                    Some(desired) => media.set_bitrate(&peer, 0, desired).await.is_ok(),
                    None => true,
                }
            }
        }
    }
}

/// Media files a native call member sends, read and checked before it joins.
pub struct Sources {
    pub video: Option<Video>,
    pub audio: Option<peerweb_call::media::Opus>,
    pub fps: u32,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("video", &self.video.is_some())
            .field("audio", &self.audio.is_some())
            .field("fps", &self.fps)
            .finish()
    }
}

/// What `--video` sends: a file's access units, looped, the built-in test pattern, or an
/// RTSP camera.
#[allow(missing_debug_implementations)]
pub enum Video {
    File(peerweb_call::media::H264, StreamInfo),
    Pattern(peerweb_camera::pattern::Pattern),
    /// A camera's main stream, and its sub stream (lower resolution and rate) if given:
    /// each viewer gets the one its bandwidth carries.
    Rtsp(
        Box<crate::rtsp::RtspSource>,
        Option<Box<crate::rtsp::RtspSource>>,
    ),
    /// A V4L2 device that encodes H.264 (`v4l2:/dev/videoN`).
    #[cfg(target_os = "linux")]
    V4l2(crate::v4l2::V4l2Source),
}

/// A live source's frames, its events, and whether it has a sub stream.
type Live = (
    mpsc::Receiver<crate::rtsp::Frame>,
    mpsc::UnboundedReceiver<SourceEvent>,
    bool,
);

impl Video {
    /// Starts a live source (an RTSP camera and its sub stream, or a device); gives back any
    /// other.
    fn start_live(self, fps: u32, keyframes: &Keyframes) -> Result<Live, Video> {
        let (frames, rx) = mpsc::channel::<crate::rtsp::Frame>(8);
        let (info_tx, info_rx) = mpsc::unbounded_channel();
        match self {
            Video::Rtsp(src, sub) => {
                let layered = sub.is_some();
                tokio::spawn(src.run(0, frames.clone(), info_tx.clone()));
                if let Some(sub) = sub {
                    tokio::spawn(sub.run(1, frames, info_tx));
                }
                Ok((rx, info_rx, layered))
            }
            #[cfg(target_os = "linux")]
            Video::V4l2(dev) => {
                tokio::spawn(dev.run(fps, frames, info_tx, keyframes.0.clone()));
                Ok((rx, info_rx, false))
            }
            other => {
                let _ = (fps, keyframes);
                Err(other)
            }
        }
    }
}

/// A file's access units checked for passthrough (profile, size, no B-frames).
fn check_file(h: &peerweb_call::media::H264) -> anyhow::Result<StreamInfo> {
    let mut c = Checker::new();
    for f in &h.frames {
        c.check(f)?;
    }
    c.info().context("no SPS in the file")
}

/// `test` or `test:WxH` (the built-in pattern, 640×480 by default), or `None` for a file.
fn pattern_spec(arg: &Path, fps: u32) -> Option<anyhow::Result<peerweb_camera::pattern::Pattern>> {
    let arg = arg.to_str()?;
    let size = match arg.strip_prefix("test") {
        Some("") => "640x480",
        Some(rest) => rest.strip_prefix(':')?,
        None => return None,
    };
    let parsed = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)));
    Some(match parsed {
        Some((w, h)) => peerweb_camera::pattern::Pattern::new(w, h, fps)
            .map_err(|e| anyhow::anyhow!("--video {arg}: {e}")),
        None => Err(anyhow::anyhow!(
            "--video {arg}: the test pattern's size is WIDTHxHEIGHT, e.g. test:1280x720"
        )),
    })
}

/// The wall clock in milliseconds, as the test pattern shows it (and pages read it).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Sources {
    pub fn load(video: Option<&Path>, audio: Option<&Path>, fps: u32) -> anyhow::Result<Sources> {
        let read = |p: &Path| -> anyhow::Result<Vec<u8>> {
            let len = std::fs::metadata(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .len();
            anyhow::ensure!(
                len <= peerweb_call::media::MAX_FILE as u64,
                "{}: larger than {} MiB",
                p.display(),
                peerweb_call::media::MAX_FILE >> 20
            );
            std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let video = video
            .map(|p| {
                if let Some(rtsp) = p.to_str().and_then(crate::rtsp::RtspSource::parse) {
                    return rtsp.map(|r| Video::Rtsp(Box::new(r), None));
                }
                #[cfg(target_os = "linux")]
                if let Some(dev) = p.to_str().and_then(crate::v4l2::V4l2Source::parse) {
                    return dev.map(Video::V4l2);
                }
                match pattern_spec(p, fps) {
                    Some(pattern) => pattern.map(Video::Pattern),
                    None => peerweb_call::media::H264::parse(&read(p)?)
                        .map_err(anyhow::Error::from)
                        .and_then(|h| {
                            let info = check_file(&h)?;
                            Ok(Video::File(h, info))
                        })
                        .with_context(|| format!("--video {}", p.display())),
                }
            })
            .transpose()?;
        let audio = audio
            .map(|p| {
                peerweb_call::media::Opus::parse(&read(p)?)
                    .with_context(|| format!("--audio {}", p.display()))
            })
            .transpose()?;
        Ok(Sources { video, audio, fps })
    }

    /// Adds a camera's sub stream (`rtsp://…`, lower resolution and rate) to its main one.
    pub fn with_sub(mut self, url: &str) -> anyhow::Result<Sources> {
        let mut sub = crate::rtsp::RtspSource::parse(url)
            .ok_or_else(|| anyhow::anyhow!("--sub-url {url}: not an rtsp:// address"))?
            .with_context(|| format!("--sub-url {url}"))?;
        match &mut self.video {
            Some(Video::Rtsp(main, s)) => {
                sub.inherit_credentials(main);
                *s = Some(Box::new(sub));
            }
            _ => anyhow::bail!("--sub-url goes with an rtsp:// camera"),
        }
        Ok(self)
    }

    /// Whether audio may come: a file's, or an RTSP camera's (known only once it answers;
    /// its line stays silent if it has none).
    /// Whether the camera has a sub stream (`--sub-url`).
    pub fn has_sub(&self) -> bool {
        matches!(&self.video, Some(Video::Rtsp(_, Some(_))))
    }

    /// Whether the video comes as a camera sends it (its rate and size its own): an RTSP
    /// camera or a device.
    pub fn is_live(&self) -> bool {
        match &self.video {
            Some(Video::Rtsp(..)) => true,
            #[cfg(target_os = "linux")]
            Some(Video::V4l2(..)) => true,
            _ => false,
        }
    }

    pub fn has_audio(&self) -> bool {
        self.audio.is_some() || matches!(self.video, Some(Video::Rtsp(..)))
    }

    /// The video's size, where known before it runs (a camera's comes with its first SPS,
    /// as a [`SourceEvent::Video`]).
    pub fn info(&self) -> (Option<u32>, Option<u32>) {
        match &self.video {
            Some(Video::Pattern(p)) => {
                let (w, h) = p.size();
                (u32::try_from(w).ok(), u32::try_from(h).ok())
            }
            Some(Video::File(_, i)) => (Some(i.width), Some(i.height)),
            _ => (None, None),
        }
    }

    /// Starts sending: a file in a loop, paced (video at `fps`, audio by each packet's
    /// duration), the pattern drawn at `fps`, a camera's frames as they come. The returned
    /// [`Keyframes`] asks the test pattern for a keyframe (a file and a camera have their own).
    pub fn spawn(self, media: peerweb_net::MediaHandle) -> Running {
        let keyframes = Keyframes::default();
        let (tx, events) = mpsc::unbounded_channel();
        let (viewers, viewers_rx) = mpsc::unbounded_channel::<Viewer>();
        // The one task that writes the video takes it.
        let mut viewers_rx = Some(viewers_rx);
        let profile = match &self.video {
            Some(Video::File(_, i)) => Some(i.profile),
            Some(Video::Pattern(_)) => Some(0x42e0),
            _ => None,
        };
        if let Some(p) = profile {
            let media = media.clone();
            tokio::spawn(async move { media.set_h264_profile(0, Some(p)).await });
        }
        let step = 90_000 / u64::from(self.fps.max(1));
        let every = std::time::Duration::from_micros(1_000_000 / u64::from(self.fps.max(1)));
        // A live source (an RTSP camera, a device): its frames as they come, from one task.
        let fps = self.fps;
        let video = match self.video.map(|v| v.start_live(fps, &keyframes)) {
            Some(Ok((mut rx, mut info_rx, layered))) => {
                let mut out = VideoOut::new(media.clone(), viewers_rx.take(), layered, tx.clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let ok = tokio::select! {
                            ev = info_rx.recv() => {
                                let Some(ev) = ev else { return };
                                let ok = match &ev {
                                    SourceEvent::Video { layer, info } => out
                                        .media
                                        .set_h264_profile(*layer, Some(info.profile))
                                        .await
                                        .is_ok(),
                                    _ => true,
                                };
                                let _ = tx.send(ev);
                                ok
                            }
                            f = rx.recv() => match f {
                                None => return,
                                Some(crate::rtsp::Frame::Video { layer, rtp, data }) => {
                                    out.frame(layer, rtp, data).await
                                }
                                Some(crate::rtsp::Frame::Audio { codec, rtp, data }) => {
                                    out.audio(codec, rtp, data).await
                                }
                            },
                            v = out.next_viewer() => out.apply(v).await,
                        };
                        if !ok {
                            return;
                        }
                    }
                });
                None
            }
            Some(Err(v)) => Some(v),
            None => None,
        };
        // Frame `n` of the video: a file's, looped, or the pattern's, drawn now.
        let next: Option<NextFrame> = match video {
            Some(Video::File(v, _)) => {
                let frames: Vec<std::sync::Arc<[u8]>> =
                    v.frames.into_iter().map(std::sync::Arc::from).collect();
                Some(Box::new(move |n| frames[n as usize % frames.len()].clone()))
            }
            Some(Video::Pattern(mut pattern)) => {
                let wanted = keyframes.0.clone();
                let mut last_key: Option<std::time::Instant> = None;
                Some(Box::new(move |n| {
                    // Asked for (a viewer's decoder starts or lost the picture): at most one
                    // forced keyframe per KEYFRAME_GAP, however many ask.
                    let now = std::time::Instant::now();
                    if last_key.is_none_or(|t| now - t >= KEYFRAME_GAP)
                        && wanted.swap(false, std::sync::atomic::Ordering::Relaxed)
                    {
                        pattern.request_keyframe();
                        last_key = Some(now);
                    }
                    // Drawn with the time it leaves: a viewer reads its latency off it.
                    pattern.frame(n, wall_ms()).0.into()
                }))
            }
            // Started above.
            _ => None,
        };
        if let Some(mut next) = next {
            let mut out = VideoOut::new(media.clone(), viewers_rx.take(), false, tx.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                let (mut n, mut rtp) = (0u32, 0u64);
                loop {
                    let ok = tokio::select! {
                        _ = tick.tick() => {
                            let ok = out.frame(0, rtp, next(n)).await;
                            n = n.wrapping_add(1);
                            rtp += step;
                            ok
                        }
                        v = out.next_viewer() => out.apply(v).await,
                    };
                    if !ok {
                        return;
                    }
                }
            });
        }
        if let Some(a) = self.audio {
            let packets: Vec<(std::sync::Arc<[u8]>, u32)> = a
                .packets
                .into_iter()
                .map(|(p, n)| (std::sync::Arc::from(p), n))
                .collect();
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let mut rtp = 0u64;
                for (p, n) in packets.iter().cycle() {
                    // Paced against the start, so rounding does not drift.
                    tokio::time::sleep_until(
                        start + std::time::Duration::from_micros(rtp * 1000 / 48),
                    )
                    .await;
                    if media.write(false, rtp, p.clone()).await.is_err() {
                        return;
                    }
                    rtp += u64::from(*n);
                }
            });
        }
        drop(tx);
        Running {
            keyframes,
            events,
            viewers,
        }
    }
}

/// Gives frame `n` of a video source.
type NextFrame = Box<dyn FnMut(u32) -> std::sync::Arc<[u8]> + Send>;

/// Forced keyframes of the test pattern come at most this often.
const KEYFRAME_GAP: std::time::Duration = std::time::Duration::from_millis(500);

/// Asks the video source for a keyframe: a peer's decoder started or lost the picture.
#[derive(Debug, Clone, Default)]
pub struct Keyframes(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Keyframes {
    pub fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
