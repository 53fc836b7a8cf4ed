//! `peerweb join --call`: the native peer as a member of a call (no media yet): it speaks the
//! SDK's call channel, announces its state and verifies each peer with the words both people
//! read aloud (crates/call), keeping continuity keys in a file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use peerweb_call::{By, CALL_LABEL, Muted, Out, Session, Stage, State, hex, hex32};
use peerweb_net::Node;
use peerweb_peer::ChannelOptions;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::peer::say;

/// This device's identity and the continuity keys it kept, in one JSON file (mode 0600).
#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    identity: String,
    /// Peer identity → key (hex) and the name it had.
    keys: BTreeMap<String, Kept>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    key: String,
    name: Option<String>,
}

fn random() -> anyhow::Result<[u8; 32]> {
    let mut b = [0; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(b)
}

/// The default key file: `$XDG_CONFIG_HOME/peerweb/call-keys.json`, or under `~/.config`.
pub fn default_key_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("peerweb").join("call-keys.json"))
}

impl KeyFile {
    fn load(path: &Path) -> anyhow::Result<KeyFile> {
        let mut f = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str::<KeyFile>(&text)
                .with_context(|| format!("{} is not a peerweb key file", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if hex32(&f.identity).is_none() {
            f.identity = hex(&random()?);
            f.save(path)?;
        }
        Ok(f)
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write as _;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The call side of `peerweb join`.
pub struct Call {
    session: Session,
    keys: KeyFile,
    path: PathBuf,
    opened: HashSet<String>,
    json: bool,
}

impl Call {
    /// `video`: whether we send a camera (the call state says so).
    pub fn new(key_file: PathBuf, json: bool, video: bool) -> anyhow::Result<Call> {
        let keys = KeyFile::load(&key_file)?;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let state = State {
            tracks: BTreeMap::new(),
            muted: Muted::default(),
            video: if video { "on" } else { "off" }.into(),
            since,
        };
        Ok(Call {
            session: Session::new(keys.identity.clone(), state),
            keys,
            path: key_file,
            opened: HashSet::new(),
            json,
        })
    }

    /// The default channel to `peer` is open: open the call channel too.
    pub async fn peer_open(&mut self, node: &Node, peer: &str) -> anyhow::Result<()> {
        node.open_channel(peer, CALL_LABEL, ChannelOptions::default())
            .await?;
        Ok(())
    }

    /// A call channel to `peer` opened (ours or theirs: the first one starts the exchange).
    pub async fn channel_open(&mut self, node: &Node, peer: &str) -> anyhow::Result<()> {
        if !self.opened.insert(peer.to_owned()) {
            return Ok(());
        }
        let Some((local, Some(remote))) = node.fingerprints(peer).await? else {
            return Ok(());
        };
        let norm = |f: &str| peerweb_call::fingerprint_of(&format!("a=fingerprint:{f}"));
        let (Some(local), Some(remote)) = (norm(&local), norm(&remote)) else {
            return Ok(());
        };
        let outs = self.session.channel_open(peer, (local, remote), random()?);
        self.apply(node, outs).await
    }

    pub async fn message(&mut self, node: &Node, peer: &str, text: &str) -> anyhow::Result<()> {
        let keys = &self.keys.keys;
        let outs = self.session.message(peer, text, random()?, |id| {
            keys.get(id).and_then(|k| hex32(&k.key))
        });
        self.apply(node, outs).await
    }

    /// A media line to `peer` was negotiated: tell it which of ours carries what.
    pub async fn tracks(&mut self, node: &Node, peer: &str) -> anyhow::Result<()> {
        let tracks = node
            .sending(peer)
            .await?
            .into_iter()
            .map(|(mid, label)| (mid, label.to_owned()))
            .collect();
        let outs = self.session.set_tracks(peer, tracks);
        self.apply(node, outs).await
    }

    pub fn peer_left(&mut self, peer: &str) {
        self.opened.remove(peer);
        self.session.peer_left(peer);
    }

    /// `/verify PEER yes|no` typed by the user.
    pub async fn command(&mut self, node: &Node, line: &str) -> anyhow::Result<()> {
        let mut words = line.split_whitespace().skip(1);
        let (Some(peer), Some(answer)) = (words.next(), words.next()) else {
            say("usage: /verify PEER yes|no")?;
            return Ok(());
        };
        let matches = match answer {
            "yes" | "y" => true,
            "no" | "n" => false,
            _ => {
                say("usage: /verify PEER yes|no")?;
                return Ok(());
            }
        };
        let (outs, keep) = self.session.confirm(peer, matches);
        if let Some((identity, key)) = keep {
            self.keys.keys.insert(
                identity,
                Kept {
                    key: hex(&key),
                    name: None,
                },
            );
            self.keys.save(&self.path)?;
        }
        self.apply(node, outs).await
    }

    async fn apply(&mut self, node: &Node, outs: Vec<Out>) -> anyhow::Result<()> {
        for o in outs {
            match o {
                Out::Send { peer, text } => {
                    if let Err(e) = node
                        .send(&peer, Some(CALL_LABEL), false, text.into_bytes())
                        .await
                    {
                        eprintln!("peerweb: call message to {peer}: {e}");
                    }
                }
                Out::Verification {
                    peer,
                    stage,
                    sas,
                    error,
                } => self.report(&peer, stage, sas.as_deref(), error.as_deref())?,
                Out::RemoteState { peer, state } => {
                    if self.json {
                        say(&json!({"event": "call-state", "peer": peer,
                            "in_call": state.is_some(),
                            "muted": state.as_ref().map(|s| json!({"audio": s.muted.audio, "video": s.muted.video})),
                            "video": state.as_ref().map(|s| s.video.clone())})
                        .to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn report(
        &self,
        peer: &str,
        stage: Stage,
        sas: Option<&str>,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let by = match stage {
            Stage::Verified(By::Sas) => Some("sas"),
            Stage::Verified(By::Continuity) => Some("continuity"),
            _ => None,
        };
        if self.json {
            return say(
                &json!({"event": "verification", "peer": peer, "state": stage.name(),
                "sas": sas, "by": by, "error": error})
                .to_string(),
            );
        }
        let text = match stage {
            Stage::Compare => format!(
                "* {peer}: read these words aloud together: {}   (then /verify {peer} yes|no)",
                sas.unwrap_or("")
            ),
            Stage::Changed => format!(
                "! {peer}: WARNING: the key kept from your last call does not match. Someone may be \
                 in the middle. Compare the words: {}   (then /verify {peer} yes|no)",
                sas.unwrap_or("")
            ),
            Stage::Verified(By::Continuity) => format!("* {peer}: verified (known key)"),
            Stage::Verified(By::Sas) => format!("* {peer}: verified"),
            Stage::Mismatch => {
                format!("! {peer}: the words differed: someone may be in the middle of this call")
            }
            Stage::Failed => format!(
                "! {peer}: verification broke: {}",
                error.unwrap_or("a broken message")
            ),
            Stage::Waiting => return Ok(()),
        };
        say(&text)
    }
}

/// Media files a native call member sends, read and checked before it joins.
pub struct Sources {
    pub video: Option<Video>,
    pub audio: Option<peerweb_call::media::Opus>,
    pub fps: u32,
}

/// What `--video` sends: a file's access units, looped, or the built-in test pattern.
pub enum Video {
    File(peerweb_call::media::H264),
    Pattern(peerweb_camera::pattern::Pattern),
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
            .map(|p| match pattern_spec(p, fps) {
                Some(pattern) => pattern.map(Video::Pattern),
                None => peerweb_call::media::H264::parse(&read(p)?)
                    .map(Video::File)
                    .with_context(|| format!("--video {}", p.display())),
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

    /// Sends the files in a loop, paced: video at `fps`, audio by each packet's duration.
    /// The returned [`Keyframes`] asks the test pattern for a keyframe (a file has its own).
    pub fn spawn(self, media: peerweb_net::MediaHandle) -> Keyframes {
        let keyframes = Keyframes::default();
        let step = 90_000 / u64::from(self.fps.max(1));
        let every = std::time::Duration::from_micros(1_000_000 / u64::from(self.fps.max(1)));
        // Frame `n` of the video: a file's, looped, or the pattern's, drawn now.
        let next: Option<NextFrame> = match self.video {
            Some(Video::File(v)) => {
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
            None => None,
        };
        if let Some(mut next) = next {
            let media = media.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                let (mut n, mut rtp) = (0u32, 0u64);
                loop {
                    tick.tick().await;
                    if media.write(true, rtp, next(n)).await.is_err() {
                        return;
                    }
                    n = n.wrapping_add(1);
                    rtp += step;
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
        keyframes
    }
}

/// Gives frame `n` of a video source.
type NextFrame = Box<dyn FnMut(u32) -> std::sync::Arc<[u8]> + Send>;

/// Forced keyframes of the test pattern come at most this often.
const KEYFRAME_GAP: std::time::Duration = std::time::Duration::from_millis(500);

/// Asks the video source for a keyframe: a peer's decoder started or lost the picture.
#[derive(Clone, Default)]
pub struct Keyframes(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Keyframes {
    pub fn request(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Received media written to files: `<peer>-<mid>.h264` (from the first keyframe) and
/// `<peer>-<mid>.ogg`, in one folder.
pub struct Recorder {
    dir: PathBuf,
    files: BTreeMap<(String, String), Track>,
}

enum Track {
    /// Its file, created at the first keyframe.
    Video {
        path: PathBuf,
        file: Option<std::fs::File>,
    },
    Audio(peerweb_call::media::OpusWriter<std::io::BufWriter<std::fs::File>>),
    Broken,
}

/// Tracks recorded at most (a peer could add many).
const MAX_RECORDED: usize = 64;

impl Recorder {
    pub fn new(dir: PathBuf) -> anyhow::Result<Recorder> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Recorder {
            dir,
            files: BTreeMap::new(),
        })
    }

    pub fn write(&mut self, peer: &str, mid: &str, video: bool, data: &[u8], keyframe: bool) {
        let key = (peer.to_owned(), mid.to_owned());
        if !self.files.contains_key(&key) {
            if self.files.len() >= MAX_RECORDED {
                return;
            }
            // Peer ids and mids are tokens, but the names are made safe anyway.
            let safe = |s: &str| -> String {
                s.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .take(64)
                    .collect()
            };
            let name = format!(
                "{}-{}.{}",
                safe(peer),
                safe(mid),
                if video { "h264" } else { "ogg" }
            );
            let path = self.dir.join(name);
            let track = if video {
                Track::Video { path, file: None }
            } else {
                match std::fs::File::create(&path).and_then(|f| {
                    peerweb_call::media::OpusWriter::new(std::io::BufWriter::new(f), 1, 2)
                }) {
                    Ok(w) => Track::Audio(w),
                    Err(e) => {
                        eprintln!("peerweb: cannot record to {}: {e}", path.display());
                        Track::Broken
                    }
                }
            };
            self.files.insert(key.clone(), track);
        }
        let ok = match self.files.get_mut(&key) {
            Some(Track::Video { path, file }) => {
                if file.is_none() && keyframe {
                    *file = std::fs::File::create(path).ok();
                }
                file.as_mut()
                    .is_none_or(|f| std::io::Write::write_all(f, data).is_ok())
            }
            Some(Track::Audio(w)) => w.write(data).is_ok(),
            _ => true,
        };
        if !ok {
            eprintln!("peerweb: recording {peer} {mid} failed; it stops");
            self.files.insert(key, Track::Broken);
        }
    }

    /// Ends the Ogg streams (their last pages).
    pub fn finish(self) {
        for t in self.files.into_values() {
            if let Track::Audio(w) = t
                && let Ok(mut b) = w.finish()
            {
                let _ = std::io::Write::flush(&mut b);
            }
        }
    }
}
