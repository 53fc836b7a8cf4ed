//! `peerweb camera` and `peerweb watch`: the faces of remote monitoring — arguments and
//! output. The drivers are in crates/apps, the rules in crates/camera.

use std::io::IsTerminal as _;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Args;
use peerweb_apps::camera::{CameraEvent, CameraOptions};
use peerweb_apps::source::Sources;
use peerweb_apps::watch::{Target, WatchEvent};
use peerweb_camera::wire::Status;
use serde_json::json;

use crate::peer::{NetArgs, path_json, path_text, say};

#[derive(Debug, Args)]
pub struct CameraArgs {
    /// What to stream: `rtsp://[user:pass@]host[:port]/path` (a camera; H.264 passed through,
    /// reconnected when it fails), `v4l2:/dev/videoN` (a device with an H.264 encoder of its
    /// own), an H.264 file (Annex B, `.h264`), looped, or `test` /
    /// `test:WIDTHxHEIGHT` (the built-in pattern, which shows a frame number and the time it
    /// was sent).
    #[arg(required_unless_present_any = ["list_viewers", "revoke", "whep"])]
    pub source: Option<PathBuf>,
    /// Address of `peerweb serve`.
    #[arg(long, env = "PEERWEB_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The camera's name, shown to viewers (kept in the camera's file).
    #[arg(long)]
    pub name: Option<String>,
    /// The camera's file: its id and paired viewers (default
    /// `$XDG_CONFIG_HOME/peerweb/camera.json`). One per camera.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Show a pairing code even when viewers are paired already (with none, it always does).
    /// A running camera opens pairing again on SIGUSR1 (`systemctl kill -s USR1 …`).
    #[arg(long)]
    pub pair: bool,
    /// Seconds pairing stays open.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub pair_for: u64,
    /// The camera's sub stream (`rtsp://…`, its lower resolution): a viewer whose bandwidth
    /// estimate cannot carry the main stream gets this one, switched at a keyframe.
    #[arg(long, value_name = "URL")]
    pub sub_url: Option<String>,
    /// Frames per second of a file source (the pattern's too).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub fps: u32,
    /// List the paired viewers and exit.
    #[arg(long)]
    pub list_viewers: bool,
    /// Unpair a viewer (by id or name) and exit; a running camera cuts it off within a second.
    #[arg(long, value_name = "ID")]
    pub revoke: Option<String>,
    /// Give a WHEP player (a home-automation system, any player that speaks WHEP) a viewer
    /// of its own: print its address and bearer token and exit. NAME is made a viewer if it
    /// is not one (`--revoke NAME` ends it); a running camera takes it within a second.
    #[arg(long, value_name = "NAME")]
    pub whep: Option<String>,
    /// One JSON object per line on stdout instead of text for people.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The code the camera shows (7-crimson-otter) or its link, to pair; or a paired
    /// camera's name or id.
    #[arg(required_unless_present = "list")]
    pub target: Option<String>,
    /// Address of `peerweb serve` (a link names its own; a paired camera is watched where it
    /// was paired).
    #[arg(long, env = "PEERWEB_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The viewer's file: the cameras paired and their keys (default
    /// `$XDG_CONFIG_HOME/peerweb/cameras.json`).
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// How the camera lists this viewer.
    #[arg(long, default_value = "peerweb watch")]
    pub name: String,
    /// Write the video to this file (H.264 Annex B, from the first keyframe).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Stop after this many frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// Only pair (with a code or link), do not watch.
    #[arg(long)]
    pub pair_only: bool,
    /// Seconds to wait for the camera to be there.
    #[arg(long, default_value_t = 15)]
    pub wait: u64,
    /// List the paired cameras and exit.
    #[arg(long)]
    pub list: bool,
    /// One JSON object per line on stdout instead of text for people.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

fn file_or_default(given: Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    given
        .or_else(|| peerweb_apps::files::config_file(name))
        .ok_or_else(|| anyhow!("no HOME or XDG_CONFIG_HOME: give the file with its flag"))
}

fn out(
    json_mode: bool,
    text: impl FnOnce() -> String,
    value: serde_json::Value,
) -> anyhow::Result<()> {
    if json_mode {
        say(&value.to_string())
    } else {
        say(&text())
    }
}

pub async fn camera(args: CameraArgs) -> anyhow::Result<()> {
    let state = file_or_default(args.state, "camera.json")?;
    let j = args.json;
    if let Some(who) = &args.revoke {
        let gone = peerweb_apps::camera::revoke(&state, who)?;
        anyhow::ensure!(gone, "no viewer {who:?} is paired with this camera");
        return out(
            j,
            || format!("Revoked {who}."),
            json!({"event": "revoked", "viewer": who}),
        );
    }
    if let Some(name) = &args.whep {
        let (camera, viewer, token) = peerweb_apps::camera::whep_viewer(&state, name)?;
        let url = format!("{}/whep/{camera}", args.server.trim_end_matches('/'));
        return out(
            j,
            || {
                format!(
                    "WHEP for viewer {viewer:?}:\n  POST {url}\n  Authorization: Bearer {token}\n\
                     (a secret: whoever holds it watches; `peerweb camera --revoke {viewer}` ends it)"
                )
            },
            json!({"event": "whep", "url": url, "token": token, "viewer": viewer}),
        );
    }
    if args.list_viewers {
        let f = peerweb_apps::camera::viewers(&state)?;
        if j {
            for v in &f.viewers {
                say(&json!({"viewer": v.id, "name": v.name, "paired": v.paired}).to_string())?;
            }
            return Ok(());
        }
        say(&format!(
            "Camera {} ({}): {} paired viewer(s)",
            f.name,
            f.id,
            f.viewers.len()
        ))?;
        for v in &f.viewers {
            say(&format!("  {}  {}", v.id, v.name))?;
        }
        return Ok(());
    }
    let source = args.source.as_deref().context("no source")?;
    let mut sources = Sources::load(Some(source), None, args.fps)?;
    if let Some(sub) = &args.sub_url {
        sources = sources.with_sub(sub)?;
    }
    let existing = peerweb_apps::camera::load_or_create(&state, args.name.as_deref())?;
    let pair = args.pair || existing.viewers.is_empty();
    let server = args.server.trim_end_matches('/').to_owned();
    let opts = CameraOptions {
        net: args.net.options(&server, "", None),
        file: state,
        name: args.name,
        pair,
        pair_for: Duration::from_secs(args.pair_for),
    };
    let terminal = std::io::stdout().is_terminal();
    peerweb_apps::camera::run(opts, sources, crate::shutdown_signal(), |ev| match ev {
        CameraEvent::Ready { id, name, viewers } => out(
            j,
            || format!("Camera {name:?} is on (id {id}), {viewers} paired viewer(s). Watch with:  peerweb watch {name}"),
            json!({"event": "ready", "camera": id, "name": name, "viewers": viewers}),
        ),
        CameraEvent::Code { code, link, secs } => out(
            j,
            || {
                let mut t = format!(
                    "To pair a viewer ({} min): run  peerweb watch {code}\nor open:  {link}",
                    secs.div_ceil(60)
                );
                if terminal
                    && let Ok(qr) = qrcode::QrCode::new(link.as_bytes())
                {
                    t.push('\n');
                    t.push_str(
                        &qr.render::<qrcode::render::unicode::Dense1x2>()
                            .quiet_zone(true)
                            .build(),
                    );
                }
                t
            },
            json!({"event": "code", "code": code.to_string(), "link": link, "secs": secs}),
        ),
        CameraEvent::PairingClosed { why } => out(
            j,
            || format!("Pairing closed: {why}."),
            json!({"event": "pairing-closed", "why": why}),
        ),
        CameraEvent::Paired { viewer, name } => out(
            j,
            || format!("Paired viewer {viewer} ({name})."),
            json!({"event": "paired", "viewer": viewer, "name": name}),
        ),
        CameraEvent::Watching {
            peer,
            viewer,
            name,
            sas,
        } => out(
            j,
            || format!("{name} ({viewer}) is watching; compare if you like: {sas}"),
            json!({"event": "watching", "peer": peer, "viewer": viewer, "name": name, "sas": sas}),
        ),
        CameraEvent::Stream {
            sub,
            profile,
            width,
            height,
        } => out(
            j,
            || {
                let which = if sub { "sub stream" } else { "main stream" };
                format!("Streaming H.264 {profile}, {width}x{height} (passed through; {which}).")
            },
            json!({"event": "stream", "sub": sub, "profile": profile, "width": width, "height": height}),
        ),
        CameraEvent::Layer {
            peer,
            sub,
            estimate_bps,
        } => out(
            j,
            || {
                let which = if sub { "the sub stream" } else { "the main stream" };
                let est = estimate_bps.map_or(String::new(), |b| {
                    format!(" (estimate {:.1} Mbit/s)", b as f64 / 1e6)
                });
                format!("Viewer {peer} gets {which}{est}.")
            },
            json!({"event": "layer", "peer": peer, "layer": if sub { "sub" } else { "main" }, "estimate_bps": estimate_bps}),
        ),
        CameraEvent::SourceFailed { why, retry_secs } => out(
            j,
            || format!("The source failed: {why}; trying again in {retry_secs} s."),
            json!({"event": "source-failed", "why": why, "retry_secs": retry_secs}),
        ),
        CameraEvent::Left { peer } => out(
            j,
            || format!("{peer} left."),
            json!({"event": "left", "peer": peer}),
        ),
        CameraEvent::Refused { peer, why } => out(
            j,
            || format!("Refused {peer}: {why}"),
            json!({"event": "refused", "peer": peer, "why": why}),
        ),
        _ => Ok(()),
    })
    .await
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let keys = file_or_default(args.keys, "cameras.json")?;
    let j = args.json;
    if args.list {
        let f = peerweb_apps::watch::load(&keys)?;
        for c in &f.cameras {
            out(
                j,
                || format!("{}  {}  {}", c.camera, c.name, c.server),
                json!({"camera": c.camera, "name": c.name, "server": c.server}),
            )?;
        }
        return Ok(());
    }
    let target = args.target.as_deref().context("no camera given")?;
    let wait = Duration::from_secs(args.wait);
    let rec = match Target::parse(target) {
        Target::Pair {
            server,
            nameplate,
            secret,
        } => {
            let server = server.unwrap_or_else(|| args.server.clone());
            let net = args.net.options(&server, "", None);
            let (rec, sas) =
                peerweb_apps::watch::pair(net, &keys, &args.name, nameplate, secret, wait).await?;
            out(
                j,
                || {
                    format!(
                        "Paired with camera {:?} ({}). Compare if you like: {sas}\nNext time:  peerweb watch {}",
                        rec.name, rec.camera, rec.name
                    )
                },
                json!({"event": "paired", "camera": rec.camera, "name": rec.name, "sas": sas}),
            )?;
            if args.pair_only {
                return Ok(());
            }
            rec
        }
        Target::Camera(who) => peerweb_apps::watch::load(&keys)?
            .find(&who)
            .cloned()
            .ok_or_else(|| peerweb_apps::watch::not_paired(&who, &keys))?,
    };
    let mut record = match &args.record {
        Some(p) => Some(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => None,
    };
    let net = args.net.options(&rec.server, "", None);
    let mut frames = 0u64;
    let mut keyframes = 0u64;
    let mut recording = false;
    let started = std::time::Instant::now();
    let mut last_report = started;
    let limit = args.frames;
    peerweb_apps::watch::watch(net, &rec, &args.name, wait, crate::shutdown_signal(), |ev| {
        match ev {
            WatchEvent::Watching { camera, name, sas } => out(
                j,
                || format!("Watching {name:?} ({camera}). Compare if you like: {sas}"),
                json!({"event": "watching", "camera": camera, "name": name, "sas": sas}),
            )?,
            WatchEvent::Status(Status {
                viewers,
                width,
                height,
                fps,
            }) => out(
                j,
                || {
                    let size = match (width, height) {
                        (Some(w), Some(h)) => format!("{w}x{h}, "),
                        _ => String::new(),
                    };
                    format!("{size}{} fps, {viewers} watching", fps.unwrap_or(0))
                },
                json!({"event": "status", "viewers": viewers, "width": width, "height": height, "fps": fps}),
            )?,
            WatchEvent::Path(p) => out(
                j,
                || format!("path {}", path_text(&p)),
                json!({"event": "path", "path": path_json(&p)}),
            )?,
            WatchEvent::Lost => out(
                j,
                || "The camera went away; waiting for it.".into(),
                json!({"event": "lost"}),
            )?,
            WatchEvent::Frame { data, keyframe, .. } => {
                frames += 1;
                keyframes += u64::from(keyframe);
                if let Some(f) = &mut record {
                    recording |= keyframe;
                    if recording {
                        std::io::Write::write_all(f, &data).context("cannot write the recording")?;
                    }
                }
                if frames == 1 || last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = std::time::Instant::now();
                    out(
                        j,
                        || format!("{frames} frames ({keyframes} keyframes)"),
                        json!({"event": "frames", "frames": frames, "keyframes": keyframes,
                               "ms": started.elapsed().as_millis() as u64}),
                    )?;
                }
                if limit.is_some_and(|n| frames >= n) {
                    out(
                        j,
                        || format!("{frames} frames received."),
                        json!({"event": "done", "frames": frames, "keyframes": keyframes}),
                    )?;
                    return Ok(ControlFlow::Break(()));
                }
            }
            _ => {}
        }
        Ok(ControlFlow::Continue(()))
    })
    .await
}
