//! An RTSP camera as a video source, through the `retina` crate: RTP over the RTSP TCP
//! connection (interleaved), basic or digest authentication, H.264 depacketized to Annex B
//! access units (SPS and PPS before every keyframe) and passed through untouched — checked
//! ([`peerweb_camera::h264`]), never transcoded; G.711 audio (μ-law or A-law, what IP
//! cameras send) or Opus, when the main stream has it, passed through too (Opus on a session
//! of its own). Any failure (unreachable, refused credentials, no H.264, a broken or stalled
//! stream) is reported and retried with backoff.
//! Frames are timed on one clock for every session and stream: each session's first frame
//! at the time it arrived, the rest by the camera's own timestamps from there — so the time
//! goes on across reconnections, and a viewer switched from the main stream to the sub
//! stream (the camera's two sessions, two RTP clocks) sees no jump.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::StreamExt as _;
use peerweb_camera::h264::Checker;
use retina::client::{
    Credentials, PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};
use tokio::sync::mpsc;
use url::Url;

use crate::source::SourceEvent;

/// A stream that sends nothing for this long is reconnected.
pub const STALL: Duration = Duration::from_secs(10);
/// How long a connection (DESCRIBE, SETUP, PLAY) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff between attempts: from the first to the most.
const BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// What a session sends on: video of one layer, or the main stream's audio (G.711, whose
/// RTP time is 8 kHz, or Opus at 48 kHz).
#[derive(Debug)]
pub enum Frame {
    Video {
        layer: usize,
        rtp: u64,
        data: Arc<[u8]>,
    },
    Audio {
        codec: peerweb_peer::AudioCodec,
        rtp: u64,
        data: Arc<[u8]>,
    },
}

/// Where a camera's stream is, with the credentials taken out of the URL (so that logs and
/// messages never show them).
#[derive(Clone)]
pub struct RtspSource {
    pub url: Url,
    creds: Option<Credentials>,
}

impl std::fmt::Debug for RtspSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspSource")
            .field("url", &self.url.as_str())
            .field("creds", &self.creds.is_some())
            .finish()
    }
}

impl RtspSource {
    /// `rtsp://[user:pass@]host[:port]/path`; `None` if it is not an `rtsp://` address.
    pub fn parse(arg: &str) -> Option<anyhow::Result<RtspSource>> {
        if !arg.starts_with("rtsp://") {
            return None;
        }
        Some((|| {
            let mut url = Url::parse(arg).context("not a valid rtsp:// address")?;
            anyhow::ensure!(url.host_str().is_some(), "an rtsp:// address needs a host");
            let creds = if url.username().is_empty() {
                None
            } else {
                let decode = |s: &str| {
                    crate::percent_decode(s)
                        .ok_or_else(|| anyhow!("bad percent-encoding in the credentials"))
                };
                Some(Credentials {
                    username: decode(url.username())?,
                    password: decode(url.password().unwrap_or(""))?,
                })
            };
            let _ = url.set_username("");
            let _ = url.set_password(None);
            Ok(RtspSource { url, creds })
        })())
    }

    /// Takes `other`'s credentials if this address gave none (a camera's sub stream is
    /// usually behind the same account as its main one).
    pub fn inherit_credentials(&mut self, other: &RtspSource) {
        if self.creds.is_none() {
            self.creds.clone_from(&other.creds);
        }
    }

    /// Pulls the stream until the receiver of `frames` is gone, reconnecting with backoff;
    /// reports each connection and failure on `events`. Frames and events carry `layer`
    /// (0: the camera's main stream, 1: its sub stream).
    pub async fn run(
        self,
        layer: usize,
        frames: mpsc::Sender<Frame>,
        events: mpsc::UnboundedSender<SourceEvent>,
    ) {
        let mut backoff = BACKOFF.0;
        // The video's time: the next session continues from the last frame sent.
        let mut time = Timeline::new(90_000);
        loop {
            let started = tokio::time::Instant::now();
            let why = match self.session(layer, &frames, &events, &mut time).await {
                Ok(()) => return,
                Err(e) => format!("{e:#}"),
            };
            if frames.is_closed() {
                return;
            }
            // A session that ran a while was a good one: back to a short wait.
            if started.elapsed() > BACKOFF.1 {
                backoff = BACKOFF.0;
            }
            tracing::warn!(url = %self.url, "camera stream: {why}; retrying in {backoff:?}");
            let _ = events.send(SourceEvent::Failed {
                layer,
                why,
                retry: backoff,
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// DESCRIBE, then SETUP of the streams `pick` chooses (over the RTSP connection), then
    /// PLAY, each step within [`CONNECT_TIMEOUT`]. `pick` returns the streams and what the
    /// caller keeps of its choice.
    async fn open<T>(
        &self,
        pick: impl FnOnce(&[retina::client::Stream]) -> anyhow::Result<(Vec<usize>, T)>,
    ) -> anyhow::Result<(retina::client::Session<retina::client::Playing>, T)> {
        let opts = SessionOptions::default()
            .creds(self.creds.clone())
            .user_agent(format!("peerweb/{}", env!("CARGO_PKG_VERSION")));
        let mut session = tokio::time::timeout(
            CONNECT_TIMEOUT,
            retina::client::Session::describe(self.url.clone(), opts),
        )
        .await
        .map_err(|_| anyhow!("no answer to DESCRIBE within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| anyhow!("{e}"))?;
        let (streams, kept) = pick(session.streams())?;
        for stream in streams {
            tokio::time::timeout(
                CONNECT_TIMEOUT,
                session.setup(
                    stream,
                    SetupOptions::default()
                        .transport(Transport::Tcp(TcpTransportOptions::default()))
                        .frame_format(FrameFormat::SIMPLE),
                ),
            )
            .await
            .map_err(|_| anyhow!("no answer to SETUP within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| anyhow!("{e}"))?;
        }
        let playing = tokio::time::timeout(CONNECT_TIMEOUT, session.play(PlayOptions::default()))
            .await
            .map_err(|_| anyhow!("no answer to PLAY within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| anyhow!("{e}"))?;
        Ok((playing, kept))
    }

    /// One RTSP session: `Ok` only when the frames' receiver is gone.
    async fn session(
        &self,
        layer: usize,
        frames: &mpsc::Sender<Frame>,
        events: &mpsc::UnboundedSender<SourceEvent>,
        time: &mut Timeline,
    ) -> anyhow::Result<()> {
        let (playing, (audio, opus)) = self
            .open(|streams| {
                let offered: Vec<String> = streams
                    .iter()
                    .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                    .collect();
                let Some(video) = streams
                    .iter()
                    .position(|s| s.media() == "video" && s.encoding_name() == "h264")
                else {
                    bail!(
                        "the camera offers no H.264 video (it offers: {}); set its video to H.264",
                        offered.join(", ")
                    );
                };
                if layer != 0 {
                    return Ok((vec![video], (None, false)));
                }
                // The main stream's audio, if it is G.711 (8 kHz mono): browsers play it as
                // it is.
                let audio = streams.iter().enumerate().find_map(|(i, s)| {
                    let codec = match (s.media(), s.encoding_name()) {
                        ("audio", "pcmu") => peerweb_peer::AudioCodec::Pcmu,
                        ("audio", "pcma") => peerweb_peer::AudioCodec::Pcma,
                        _ => return None,
                    };
                    let mono = s.channels().is_none_or(|c| c.get() == 1);
                    (s.clock_rate_hz() == 8000 && mono).then_some((i, codec))
                });
                // Or Opus, which the RTSP client cannot depacketize in this session: it comes
                // on a session of its own (see `opus`).
                let opus = audio.is_none() && streams.iter().any(is_opus);
                let setup = std::iter::once(video).chain(audio.map(|(i, _)| i));
                Ok((setup.collect(), (audio, opus)))
            })
            .await?;
        // The Opus session runs while this one does, from its first decodable picture.
        let mut sound: Option<AbortOnDrop> = None;
        let mut demuxed = playing.demuxed().map_err(|e| anyhow!("{e}"))?;
        let mut checker = Checker::new();
        // This session's timestamps start afresh; the time goes on.
        time.restart();
        let mut audio_time = Timeline::new(8_000);
        let mut announced = false;
        loop {
            let item = tokio::time::timeout(STALL, demuxed.next())
                .await
                .map_err(|_| anyhow!("the camera sent nothing for {} s", STALL.as_secs()))?;
            let frame = match item {
                None => bail!("the camera ended the stream"),
                Some(Err(e)) => bail!("{e}"),
                Some(Ok(CodecItem::VideoFrame(f))) => f,
                Some(Ok(CodecItem::AudioFrame(f))) => {
                    let Some((_, codec)) = audio.filter(|(i, _)| *i == f.stream_id()) else {
                        continue;
                    };
                    if !announced {
                        continue;
                    }
                    let frame = Frame::Audio {
                        codec,
                        rtp: audio_time.at(f.timestamp().elapsed()),
                        data: Arc::from(f.data()),
                    };
                    if frames.send(frame).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
                Some(Ok(_)) => continue,
            };
            let ts = frame.timestamp().elapsed();
            let data = frame.into_data();
            if let Some(info) = checker.check(&data)? {
                let _ = events.send(SourceEvent::Video { layer, info });
                announced = true;
                if opus && sound.is_none() {
                    let (src, frames) = (self.clone(), frames.clone());
                    sound = Some(AbortOnDrop(tokio::spawn(src.opus(frames))));
                }
            }
            if !announced {
                // Nothing decodable before the first SPS and keyframe.
                continue;
            }
            let frame = Frame::Video {
                layer,
                rtp: time.at(ts),
                data: Arc::from(data),
            };
            if frames.send(frame).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// An Opus stream on an RTSP session (RTP payload = one Opus packet, RFC 7587).
fn is_opus(s: &retina::client::Stream) -> bool {
    s.media() == "audio" && s.encoding_name() == "opus" && s.clock_rate_hz() == 48_000
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RtspSource {
    /// The main stream's Opus sound on a session of its own (the RTSP client depacketizes
    /// no Opus, and an Opus RTP payload is the Opus packet itself), reconnected with backoff
    /// until the video's session ends it. A failure here costs the sound, never the picture.
    async fn opus(self, frames: mpsc::Sender<Frame>) {
        let mut backoff = BACKOFF.0;
        let mut time = Timeline::new(48_000);
        loop {
            let why = match self.opus_session(&frames, &mut time).await {
                Ok(()) => return,
                Err(e) => format!("{e:#}"),
            };
            tracing::warn!(url = %self.url, "camera sound: {why}; retrying in {backoff:?}");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    async fn opus_session(
        &self,
        frames: &mpsc::Sender<Frame>,
        time: &mut Timeline,
    ) -> anyhow::Result<()> {
        let (mut playing, stream) = self
            .open(|streams| {
                let i = streams
                    .iter()
                    .position(is_opus)
                    .ok_or_else(|| anyhow!("the camera no longer offers Opus sound"))?;
                Ok((vec![i], i))
            })
            .await?;
        time.restart();
        loop {
            let item = tokio::time::timeout(STALL, playing.next())
                .await
                .map_err(|_| anyhow!("the camera sent no sound for {} s", STALL.as_secs()))?;
            let packet = match item {
                None => bail!("the camera ended the stream"),
                Some(Err(e)) => bail!("{e}"),
                Some(Ok(retina::client::PacketItem::Rtp(p))) => p,
                Some(Ok(_)) => continue,
            };
            // An empty payload is no Opus packet (RFC 7587 §4.2 asks for at least one byte).
            if packet.stream_id() != stream || packet.payload().is_empty() {
                continue;
            }
            let frame = Frame::Audio {
                codec: peerweb_peer::AudioCodec::Opus,
                rtp: time.at(packet.timestamp().elapsed()),
                data: Arc::from(packet.payload()),
            };
            if frames.send(frame).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// A stream's RTP times on the one clock of every camera stream (time since it was first
/// read, at the stream's rate): a session's first frame at the time it arrived, the rest by
/// the source's own timestamps from there, never going back.
#[derive(Debug)]
pub(crate) struct Timeline {
    rate: u64,
    /// This session's timestamps to the clock.
    offset: Option<i64>,
    last: Option<u64>,
}

impl Timeline {
    pub(crate) fn new(rate: u64) -> Timeline {
        Timeline {
            rate,
            offset: None,
            last: None,
        }
    }

    /// A new session of the same stream: its timestamps start afresh, the time goes on.
    fn restart(&mut self) {
        self.offset = None;
    }

    /// The time of a frame the source stamped `ts` (its ticks, at the stream's rate).
    pub(crate) fn at(&mut self, ts: i64) -> u64 {
        let clock = self.clock();
        let base = *self.offset.get_or_insert_with(|| clock as i64 - ts);
        self.next(u64::try_from(base + ts).unwrap_or(0))
    }

    /// The time of a frame that came unstamped: now.
    pub(crate) fn now(&mut self) -> u64 {
        let clock = self.clock();
        self.next(clock)
    }

    fn next(&mut self, t: u64) -> u64 {
        let t = t.max(self.last.map_or(0, |l| l + 1));
        self.last = Some(t);
        t
    }

    fn clock(&self) -> u64 {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let since = EPOCH.get_or_init(std::time::Instant::now).elapsed();
        (since.as_micros() * u128::from(self.rate) / 1_000_000) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_goes_on_across_sessions_and_never_back() {
        let mut t = Timeline::new(90_000);
        let a = t.at(1_000_000);
        let b = t.at(1_003_000);
        assert_eq!(b - a, 3000, "the source's own spacing");
        // A new session whose timestamps start low: after the last frame, not before.
        t.restart();
        let c = t.at(5);
        assert!(c > b);
        // A stamp that goes back.
        assert_eq!(t.at(4), c + 1);
        let mut u = Timeline::new(8_000);
        let (x, y) = (u.now(), u.now());
        assert!(y > x);
    }

    #[test]
    fn credentials_leave_the_address() {
        let s = RtspSource::parse("rtsp://ad%40min:p%3Ass@cam.local:8554/live")
            .unwrap()
            .unwrap();
        assert_eq!(s.url.as_str(), "rtsp://cam.local:8554/live");
        let c = s.creds.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("ad@min", "p:ss")
        );
        assert!(RtspSource::parse("http://x/").is_none());
        assert!(RtspSource::parse("rtsp://").unwrap().is_err());
        assert!(RtspSource::parse("rtsp://u:%zz@h/").unwrap().is_err());
        assert!(
            RtspSource::parse("rtsp://h/x")
                .unwrap()
                .unwrap()
                .creds
                .is_none()
        );
    }
}
