//! `peerweb camera`'s driver: the camera's identity and viewers in a file, one native peer in
//! the camera's room (`camera-<id>`, where paired viewers come and media goes) and, while
//! pairing is open, one in the room its current code names (`camera-pair-<n>`, handshakes
//! only, no media). The gate ([`peerweb_camera::gate`]) decides who gets media; the source
//! ([`crate::source`]) is sent once to the camera's peer, which fans the same bytes out to
//! every allowed viewer.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use peerweb_camera::gate::{Gate, Out, SourceInfo};
use peerweb_camera::store::{CameraFile, PairingLink, camera_room, new_id, pairing_room};
use peerweb_net::{Node, Options};
use peerweb_peer::{Event, Media};
use peerweb_transfer::code::Code;
use tokio::time::Instant;

use crate::files;
use crate::source::{SourceEvent, Sources, Viewer, recv_or_pending};

/// How often the camera file is checked for changes (a `--revoke` from another process).
const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// Where each viewer's bandwidth estimate starts, bits per second: above a usual camera's
/// main stream, so that the first keyframes are not held back while it settles.
const INITIAL_ESTIMATE: u64 = 8_000_000;
/// Pairing rooms tried before giving up on finding a free one.
const NAMEPLATE_TRIES: u32 = 8;

/// What a camera does.
#[derive(Debug)]
pub struct CameraOptions {
    /// How to reach the server (room, metadata and media are set here).
    pub net: Options,
    /// The camera's file: its id, name and paired viewers.
    pub file: PathBuf,
    /// A name for people (kept in the file); `None` keeps the file's, or "camera".
    pub name: Option<String>,
    /// Open pairing at the start.
    pub pair: bool,
    /// How long pairing stays open each time it opens (at the start, or on SIGUSR1: a camera
    /// running as a service pairs another viewer without a restart).
    pub pair_for: Duration,
}

/// What happened, for the face.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CameraEvent {
    /// In its room, streaming to the viewers it paired.
    Ready {
        id: String,
        name: String,
        viewers: usize,
    },
    /// Pairing is open under this code and link for `secs` more seconds.
    Code {
        code: Code,
        link: String,
        secs: u64,
    },
    PairingClosed {
        why: &'static str,
    },
    Paired {
        viewer: String,
        name: String,
    },
    Watching {
        peer: String,
        viewer: String,
        name: String,
        sas: String,
    },
    /// A viewer's connection ended.
    Left {
        peer: String,
    },
    /// The source's video is (now) this H.264 profile and size (`sub`: the camera's sub
    /// stream).
    Stream {
        sub: bool,
        profile: &'static str,
        width: u32,
        height: u32,
    },
    /// A viewer moved between the main and the sub stream, by its bandwidth estimate.
    Layer {
        peer: String,
        sub: bool,
        estimate_bps: Option<u64>,
    },
    /// The source failed (camera unreachable, credentials refused, no H.264, stalled…) and
    /// is tried again in `retry_secs`.
    SourceFailed {
        why: String,
        retry_secs: u64,
    },
    Refused {
        peer: String,
        why: String,
    },
}

/// Reads the camera's file, or makes a new camera (a fresh id) in it.
pub fn load_or_create(path: &Path, name: Option<&str>) -> anyhow::Result<CameraFile> {
    let mut file = match files::load::<CameraFile>(path)? {
        Some(f) => {
            f.check()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            f
        }
        None => CameraFile {
            id: new_id(random()?),
            name: "camera".into(),
            viewers: Vec::new(),
        },
    };
    if let Some(n) = name {
        file.name = peerweb_camera::wire::clean_name(n);
    }
    files::save(path, &file)?;
    Ok(file)
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0; N];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no random numbers from the OS: {e}"))?;
    Ok(b)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Which of the camera's two peers a remote peer is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Camera,
    Pairing,
}

/// Runs the camera until `stop` completes.
pub async fn run(
    opts: CameraOptions,
    sources: Sources,
    stop: impl Future<Output = ()>,
    mut on: impl FnMut(CameraEvent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut file = load_or_create(&opts.file, opts.name.as_deref())?;
    let mut stamp = modified(&opts.file);
    let mut gate = Gate::new(&file, random()?);
    let info = sources.info();
    // A camera's rate is its own (and its size comes with its first SPS).
    let live = sources.is_live();
    let mut source = SourceInfo {
        width: info.0,
        height: info.1,
        fps: (!live).then_some(sources.fps),
    };
    gate.set_source(source);
    let server = opts.net.server.trim_end_matches('/').to_owned();
    let mut net = opts.net.clone();
    net.room = camera_room(&file.id);
    net.settings.meta = Some(r#"{"role":"camera"}"#.into());
    net.settings.media = Some(Media {
        audio: sources.has_audio(),
        video: sources.video.is_some(),
    });
    net.settings.gate_media = true;
    // With a sub stream, each viewer's path is estimated (str0m's GCC) to pick its stream, and
    // paced. Without one there is nothing to choose, and pacing a stream whose rate we cannot
    // change only delays its keyframes (measured: docs/benchmarks.md), so frames leave as the
    // camera sends them.
    net.settings.bwe = sources.has_sub().then_some(INITIAL_ESTIMATE);
    net.settings.only_role = None;
    let mut main = Node::join(net.clone())
        .await
        .context("cannot reach the server")?;
    let running = sources.spawn(main.media_handle());
    let keyframes = running.keyframes;
    let mut source_events = Some(running.events);
    let viewers = running.viewers;
    on(CameraEvent::Ready {
        id: file.id.clone(),
        name: file.name.clone(),
        viewers: file.viewers.len(),
    })?;
    // The pairing room's peer: handshakes only.
    let mut pairing_net = net.clone();
    pairing_net.settings.media = None;
    let mut pairing: Option<Node> = None;
    let mut routes: HashMap<String, Via> = HashMap::new();
    if opts.pair {
        gate.open_pairing(Instant::now().into_std(), opts.pair_for);
    }
    #[cfg(unix)]
    let mut pair_signal =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok();
    #[cfg(not(unix))]
    let mut pair_signal: Option<()> = None;
    let mut reload = tokio::time::interval(RELOAD_EVERY);
    tokio::pin!(stop);
    let mut redraws = 0;
    loop {
        // What the gate decided.
        while let Some(out) = gate.poll() {
            match out {
                Out::Signal { peer, data } => {
                    // A WHEP bridge gone meanwhile: its departure comes as an event.
                    let _ = main
                        .signal_app(&peer, &String::from_utf8_lossy(&data))
                        .await;
                }
                Out::Send { peer, data } => {
                    let node = match routes.get(&peer) {
                        Some(Via::Pairing) => pairing.as_ref(),
                        Some(Via::Camera) => Some(&main),
                        None => None,
                    };
                    if let Some(node) = node {
                        // A peer gone meanwhile: its departure comes as an event.
                        let _ = node.send(&peer, None, false, data).await;
                    }
                }
                // Through the source's task, in order with its frames: a new viewer gets the
                // frames since the last keyframe first, so its picture comes at once.
                Out::Allow { peer } => {
                    if viewers.send(Viewer::Start(peer.clone())).is_err() {
                        main.allow_media(&peer, true).await?;
                    }
                }
                Out::Cut { peer } => {
                    if viewers.send(Viewer::Stop(peer.clone())).is_err() {
                        main.allow_media(&peer, false).await?;
                    }
                }
                Out::Paired(mut rec) => {
                    rec.paired = unix_now();
                    // Merged with the file as it is now (another process may have revoked).
                    if let Some(f) = files::load::<CameraFile>(&opts.file)?
                        && f.check().is_ok()
                    {
                        file = f;
                    }
                    on(CameraEvent::Paired {
                        viewer: rec.id.clone(),
                        name: rec.name.clone(),
                    })?;
                    file.viewers.retain(|v| v.id != rec.id);
                    file.viewers.push(rec);
                    files::save(&opts.file, &file)?;
                    stamp = modified(&opts.file);
                    gate.set_viewers(file.viewers.clone());
                }
                Out::Code {
                    code,
                    secret,
                    until,
                } => {
                    // The old room's peers go with it.
                    if let Some(old) = pairing.take() {
                        routes.retain(|p, via| {
                            if *via == Via::Pairing {
                                gate.peer_left(p);
                            }
                            *via != Via::Pairing
                        });
                        tokio::spawn(old.leave());
                    }
                    let mut n = pairing_net.clone();
                    n.room = pairing_room(code.nameplate);
                    let mut node = Node::join(n).await.context("cannot reach the server")?;
                    let mut taken = false;
                    while let Ok(Some(ev)) =
                        tokio::time::timeout(Duration::ZERO, node.next_event()).await
                    {
                        if let Event::Joined { peers } = ev {
                            taken = !peers.is_empty();
                        }
                    }
                    if taken && redraws < NAMEPLATE_TRIES {
                        // Someone is in that room already: another code.
                        redraws += 1;
                        tokio::spawn(node.leave());
                        gate.redraw_code();
                        continue;
                    }
                    redraws = 0;
                    pairing = Some(node);
                    let link = PairingLink {
                        server: server.clone(),
                        nameplate: code.nameplate,
                        secret,
                    };
                    on(CameraEvent::Code {
                        code,
                        link: link.to_string(),
                        secs: until
                            .saturating_duration_since(Instant::now().into_std())
                            .as_secs(),
                    })?;
                }
                Out::PairingClosed { why } => {
                    if let Some(old) = pairing.take() {
                        tokio::spawn(old.leave());
                    }
                    on(CameraEvent::PairingClosed { why })?;
                }
                Out::Watching {
                    peer,
                    viewer,
                    name,
                    sas,
                } => on(CameraEvent::Watching {
                    peer,
                    viewer,
                    name,
                    sas,
                })?,
                Out::Refused { peer, why } => on(CameraEvent::Refused { peer, why })?,
            }
        }
        let wake = gate
            .next_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let (ev, via) = tokio::select! {
            ev = main.next_event() => (ev, Via::Camera),
            ev = next(&mut pairing) => (ev, Via::Pairing),
            _ = tokio::time::sleep_until(wake) => {
                gate.handle_timeout(Instant::now().into_std());
                continue;
            }
            _ = reload.tick() => {
                let now = modified(&opts.file);
                if now != stamp {
                    stamp = now;
                    match files::load::<CameraFile>(&opts.file) {
                        Ok(Some(f)) if f.check().is_ok() => {
                            gate.set_viewers(f.viewers.clone());
                            file = f;
                        }
                        // Being rewritten, or broken: the viewers known stay.
                        _ => tracing::warn!("cannot read {}; keeping the viewers known", opts.file.display()),
                    }
                }
                continue;
            }
            ev = recv_or_pending(&mut source_events) => {
                match ev {
                    SourceEvent::Video { layer, info } => {
                        if layer == 0 {
                            source.width = Some(info.width);
                            source.height = Some(info.height);
                            gate.set_source(source);
                        }
                        on(CameraEvent::Stream {
                            sub: layer == 1,
                            profile: info.profile_name(),
                            width: info.width,
                            height: info.height,
                        })?;
                    }
                    SourceEvent::Failed { layer, why, retry } => {
                        let why = if layer == 1 { format!("sub stream: {why}") } else { why };
                        on(CameraEvent::SourceFailed { why, retry_secs: retry.as_secs() })?;
                    }
                    SourceEvent::Layer { peer, layer, estimate } => {
                        on(CameraEvent::Layer { peer, sub: layer == 1, estimate_bps: estimate })?;
                    }
                }
                continue;
            }
            _ = pair_asked(&mut pair_signal) => {
                // A fresh code and window, whether or not pairing was open.
                gate.open_pairing(Instant::now().into_std(), opts.pair_for);
                continue;
            }
            _ = &mut stop => break,
        };
        let Some(ev) = ev else {
            anyhow::bail!("the network driver stopped");
        };
        let node = match via {
            Via::Camera => &main,
            Via::Pairing => match &pairing {
                Some(n) => n,
                None => continue,
            },
        };
        match ev {
            Event::Open { peer } => {
                let fps = node.fingerprints(&peer).await?;
                if let Some((local, Some(remote))) = fps {
                    routes.insert(peer.clone(), via);
                    gate.peer_open(Instant::now().into_std(), &peer, &local, &remote);
                }
            }
            Event::Message {
                peer,
                label,
                binary: false,
                data,
            } if label == peerweb_peer::DEFAULT_LABEL && routes.get(&peer) == Some(&via) => {
                gate.message(&peer, &data);
            }
            Event::PeerLeft { peer } if routes.get(&peer) == Some(&via) => {
                routes.remove(&peer);
                gate.peer_left(&peer);
                on(CameraEvent::Left { peer })?;
            }
            // A WHEP player's bridge on the server (camera room only).
            Event::AppSignal { peer, data } if via == Via::Camera => {
                routes.insert(peer.clone(), via);
                gate.app_signal(Instant::now().into_std(), &peer, data.as_bytes());
            }
            Event::State {
                peer,
                state: peerweb_peer::PeerState::Connected,
            } if via == Via::Camera => gate.peer_connected(&peer),
            Event::Bandwidth { peer, bps } if via == Via::Camera => {
                let _ = viewers.send(Viewer::Estimate(peer, bps));
            }
            Event::KeyframeRequest { .. } => keyframes.request(),
            _ => {}
        }
    }
    if let Some(p) = pairing.take() {
        p.leave().await;
    }
    main.leave().await;
    Ok(())
}

/// SIGUSR1, where there is such a signal; never otherwise.
#[cfg(unix)]
async fn pair_asked(sig: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(s) = sig
        && s.recv().await.is_some()
    {
        return;
    }
    // No such signal here, or its stream ended: never again.
    *sig = None;
    std::future::pending().await
}

#[cfg(not(unix))]
async fn pair_asked(_: &mut Option<()>) {
    std::future::pending().await
}

/// The next event of an optional node (never, without one).
async fn next(node: &mut Option<Node>) -> Option<Event> {
    match node {
        Some(n) => n.next_event().await,
        None => std::future::pending().await,
    }
}

/// The viewers a camera file lists (for `--list-viewers`).
pub fn viewers(path: &Path) -> anyhow::Result<CameraFile> {
    let f = files::load::<CameraFile>(path)?
        .ok_or_else(|| anyhow::anyhow!("{} does not exist: no camera there yet", path.display()))?;
    f.check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(f)
}

/// The WHEP credentials of the viewer `name` (made, with a fresh key, if the camera has no
/// viewer of that name): the camera's id, the viewer's id, its bearer token.
pub fn whep_viewer(path: &Path, name: &str) -> anyhow::Result<(String, String, String)> {
    let mut f = load_or_create(path, None)?;
    let rec = f.add_viewer(name, random()?).ok_or_else(|| {
        anyhow::anyhow!(
            "this camera has {} viewers already; revoke one first",
            peerweb_camera::store::MAX_VIEWERS
        )
    })?;
    if let Some(v) = f
        .viewers
        .iter_mut()
        .find(|v| v.id == rec.id && v.paired == 0)
    {
        v.paired = unix_now();
    }
    files::save(path, &f)?;
    let token = peerweb_camera::store::whep_token(&rec)
        .ok_or_else(|| anyhow::anyhow!("viewer {:?} has a damaged key", rec.id))?;
    Ok((f.id, rec.name, token))
}

/// Removes a viewer (by id or name) from the camera file; a running camera cuts it off
/// within a second.
pub fn revoke(path: &Path, who: &str) -> anyhow::Result<bool> {
    let mut f = viewers(path)?;
    let gone = f.revoke(who);
    if gone {
        files::save(path, &f)?;
    }
    Ok(gone)
}
