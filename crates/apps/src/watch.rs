//! `peerweb watch`'s driver: pairing with a camera by its code or link (in the room the code
//! names, handshakes only), keeping the key it gives in the viewer's file, and watching it —
//! in the camera's room, connected to the camera alone, proving that key on every connection
//! and waiting for the camera again when it goes away.

use std::future::Future;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use peerweb_camera::store::{
    CameraRecord, PairingLink, ViewerFile, camera_room, hex, pairing_room, parse_key,
};
use peerweb_camera::watch::{Credential, Step, Watcher};
use peerweb_camera::wire::Status;
use peerweb_net::{Node, Options};
use peerweb_peer::{DEFAULT_LABEL, Event, Media};
use peerweb_transfer::code::Code;
use peerweb_transfer::{Secret, TrustError};
use tokio::time::Instant;

use crate::files;

/// Whom `peerweb watch` was given.
#[derive(Debug, Clone)]
pub enum Target {
    /// A pairing code (the server is the one given) or link (names its server).
    Pair {
        server: Option<String>,
        nameplate: u16,
        secret: Secret,
    },
    /// A paired camera, by id or name.
    Camera(String),
}

impl Target {
    pub fn parse(arg: &str) -> Target {
        if let Some(link) = PairingLink::parse(arg) {
            return Target::Pair {
                server: Some(link.server),
                nameplate: link.nameplate,
                secret: Secret::Link(link.secret),
            };
        }
        match Code::parse(arg) {
            Ok(code) => Target::Pair {
                server: None,
                nameplate: code.nameplate,
                secret: Secret::Code(code),
            },
            Err(_) => Target::Camera(arg.trim().to_owned()),
        }
    }
}

/// What happened, for the face.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WatchEvent {
    /// Verified by the camera and streaming; `sas` is what both sides can compare.
    Watching {
        camera: String,
        name: String,
        sas: String,
    },
    /// How many watch, and the stream's size and rate where known.
    Status(Status),
    /// The path to the camera (direct or relayed), when it changes.
    Path(peerweb_peer::Path),
    /// A video frame (H.264 Annex B access unit).
    Frame {
        data: Arc<[u8]>,
        keyframe: bool,
        rtp_time: u64,
    },
    /// The camera went away; waiting for it to come back.
    Lost,
}

/// The error when the camera refused us or could not prove itself: exit code 3 in the CLI.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Reads the viewer's file (empty if there is none).
pub fn load(path: &Path) -> anyhow::Result<ViewerFile> {
    Ok(files::load::<ViewerFile>(path)?.unwrap_or_default())
}

fn viewer_net(mut net: Options, room: String, media: bool) -> Options {
    net.room = room;
    net.settings.meta = Some(r#"{"role":"viewer"}"#.into());
    net.settings.only_role = Some("camera".into());
    net.settings.gate_media = false;
    net.settings.media = media.then_some(Media {
        audio: false,
        video: false,
    });
    net
}

/// The camera's fingerprints and ours for `peer`, once its channel is open.
async fn fingerprints(node: &Node, peer: &str) -> anyhow::Result<(String, String)> {
    node.fingerprints(peer)
        .await?
        .and_then(|(l, r)| Some((l, r?)))
        .ok_or_else(|| anyhow!("no DTLS fingerprints for the camera's connection"))
}

/// Sends what a step asks for; the end of the visit if it was refused.
async fn send(node: &Node, peer: &str, step: &Step) -> anyhow::Result<()> {
    match step {
        Step::Send(msgs) => {
            for m in msgs {
                node.send(peer, None, false, m.clone())
                    .await
                    .context("cannot send to the camera")?;
            }
            Ok(())
        }
        Step::Refused(why) => Err(Refused(why.clone()).into()),
        _ => Ok(()),
    }
}

/// Pairs with the camera showing `nameplate`'s code or link, keeps the key in `keys` and
/// returns the camera's record. `wait`: how long the camera may take to be there.
pub async fn pair(
    net: Options,
    keys: &Path,
    me: &str,
    nameplate: u16,
    secret: Secret,
    wait: Duration,
) -> anyhow::Result<(CameraRecord, String)> {
    let server = net.server.trim_end_matches('/').to_owned();
    let mut node = Node::join(viewer_net(net, pairing_room(nameplate), false))
        .await
        .context("cannot reach the server")?;
    let deadline = Instant::now() + wait;
    let mut visit: Option<(String, Watcher)> = None;
    let result = loop {
        let ev = match tokio::time::timeout_at(deadline, node.next_event()).await {
            Err(_) => {
                break Err(anyhow!(
                    "no camera showed that code within {} s",
                    wait.as_secs()
                ));
            }
            Ok(None) => break Err(anyhow!("the network driver stopped")),
            Ok(Some(ev)) => ev,
        };
        let step = match ev {
            Event::Open { peer } if visit.is_none() => {
                let (local, remote) = fingerprints(&node, &peer).await?;
                let mut w = Watcher::new(Credential::Pair(secret.clone()), me);
                let step = w.open(&local, &remote);
                visit = Some((peer, w));
                step
            }
            Event::Message {
                peer,
                label,
                binary: false,
                data,
            } if label == DEFAULT_LABEL => match &mut visit {
                Some((p, w)) if *p == peer => w.message(&data),
                _ => continue,
            },
            Event::PeerLeft { peer } if visit.as_ref().is_some_and(|(p, _)| *p == peer) => {
                break Err(anyhow!("the camera left during pairing"));
            }
            _ => continue,
        };
        let Some((peer, _)) = &visit else { continue };
        if let Err(e) = send(&node, peer, &step).await {
            break Err(e);
        }
        if let Step::Welcome {
            camera,
            name,
            viewer,
            key: Some(key),
            sas,
        } = step
        {
            break Ok((
                CameraRecord {
                    camera,
                    name,
                    server: server.clone(),
                    viewer,
                    key: hex(&key),
                },
                sas,
            ));
        }
    };
    node.leave().await;
    let (rec, sas) = result?;
    let mut file = load(keys)?;
    file.keep(rec.clone());
    files::save(keys, &file)?;
    Ok((rec, sas))
}

/// Watches a paired camera until `stop` completes, `on` says to break, or the camera
/// refuses us. `wait`: how long the camera may take to be there at first (later it is
/// waited for as long as it takes).
pub async fn watch(
    net: Options,
    rec: &CameraRecord,
    me: &str,
    wait: Duration,
    stop: impl Future<Output = ()>,
    mut on: impl FnMut(WatchEvent) -> anyhow::Result<ControlFlow<()>>,
) -> anyhow::Result<()> {
    let key =
        parse_key(&rec.key).ok_or_else(|| anyhow!("the key kept for {} is damaged", rec.camera))?;
    let mut node = Node::join(viewer_net(net, camera_room(&rec.camera), true))
        .await
        .context("cannot reach the server")?;
    let mut deadline = Some(Instant::now() + wait);
    let mut visit: Option<(String, Watcher)> = None;
    tokio::pin!(stop);
    let result = loop {
        let far = Instant::now() + Duration::from_secs(3600);
        let ev = tokio::select! {
            ev = node.next_event() => ev,
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                break Err(anyhow!(
                    "camera {} is not online (waited {} s)",
                    rec.name,
                    wait.as_secs()
                ));
            }
            _ = &mut stop => break Ok(()),
        };
        let Some(ev) = ev else {
            break Err(anyhow!("the network driver stopped"));
        };
        let ours = |p: &str| visit.as_ref().is_some_and(|(v, _)| v == p);
        // What the event asks of us: a step of the camera protocol, or straight to `on`.
        let mut flow = Ok(ControlFlow::Continue(()));
        let step = match ev {
            Event::Open { peer } => {
                let (local, remote) = fingerprints(&node, &peer).await?;
                let mut w = Watcher::new(
                    Credential::Key {
                        viewer: rec.viewer.clone(),
                        key,
                    },
                    me,
                );
                let step = w.open(&local, &remote);
                visit = Some((peer, w));
                Some(step)
            }
            Event::Message {
                peer,
                label,
                binary: false,
                data,
            } if label == DEFAULT_LABEL && ours(&peer) => {
                visit.as_mut().map(|(_, w)| w.message(&data))
            }
            Event::Media {
                peer,
                video: true,
                data,
                rtp_time,
                keyframe,
                ..
            } if ours(&peer) && visit.as_ref().is_some_and(|(_, w)| w.welcomed()) => {
                flow = on(WatchEvent::Frame {
                    data,
                    keyframe,
                    rtp_time,
                });
                None
            }
            Event::Path { peer, path } if ours(&peer) => {
                flow = on(WatchEvent::Path(path));
                None
            }
            Event::PeerLeft { peer } if ours(&peer) => {
                visit = None;
                flow = on(WatchEvent::Lost);
                None
            }
            _ => None,
        };
        if let (Some(step), Some((peer, _))) = (step, &visit) {
            if let Err(e) = send(&node, peer, &step).await {
                break Err(e);
            }
            flow = match step {
                Step::Welcome { name, sas, .. } => {
                    deadline = None;
                    on(WatchEvent::Watching {
                        camera: rec.camera.clone(),
                        name,
                        sas,
                    })
                }
                Step::Status(s) => on(WatchEvent::Status(s)),
                _ => Ok(ControlFlow::Continue(())),
            };
        }
        match flow {
            Ok(ControlFlow::Continue(())) => {}
            Ok(ControlFlow::Break(())) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    node.leave().await;
    result
}

/// Whether an error is the camera refusing us or failing its proof.
pub fn refused(e: &anyhow::Error) -> bool {
    e.is::<Refused>() || e.is::<TrustError>()
}

/// The error for a camera the viewer's file does not have.
pub fn not_paired(who: &str, keys: &Path) -> anyhow::Error {
    anyhow!(
        "no paired camera {who:?} in {}: pair first with the code the camera shows (peerweb watch 7-crimson-otter)",
        keys.display()
    )
}
