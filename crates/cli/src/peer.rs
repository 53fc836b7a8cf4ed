//! `peerweb join` and `peerweb ping`: the native peer on the command line.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use peerweb_net::{Node, Options};
use peerweb_peer::{DataPath, Event, Path, PeerState, Settings};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Address of `peerweb serve`, e.g. http://127.0.0.1:8080.
    pub url: String,
    /// Room to join.
    pub room: String,
    /// Name shown to the others (sent as `{"name": ...}` metadata).
    #[arg(long)]
    pub name: Option<String>,
    /// One JSON object per line on stdout instead of text for people.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `peerweb join`'s own options.
#[derive(Debug, Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Take part in the room's call (no media yet): announce it, and verify each member with
    /// three words you read aloud together (`/verify PEER yes|no` when they match or not).
    #[arg(long)]
    pub call: bool,
    /// Where `--call` keeps this device's identity and the keys of verified peers.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<std::path::PathBuf>,
    /// Send this raw H.264 file (Annex B, e.g. `ffmpeg … -bf 0 -f h264 x.h264`) as our camera,
    /// looped, in the call (implies --call); or `test[:WxH]`, the built-in test pattern
    /// (640x480 unless given) showing a frame number and the time it was sent as blocks.
    #[arg(long, value_name = "FILE.h264|test[:WxH]")]
    pub video: Option<std::path::PathBuf>,
    /// Send this Ogg Opus file as our microphone, looped, in the call (implies --call).
    #[arg(long, value_name = "FILE.ogg")]
    pub audio: Option<std::path::PathBuf>,
    /// Frames per second of --video (a raw H.264 file has no timestamps; the pattern: 1–60).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub fps: u32,
    /// Write what the others send into this folder: PEER-MID.h264 and PEER-MID.ogg
    /// (implies --call).
    #[arg(long, value_name = "DIR")]
    pub record: Option<std::path::PathBuf>,
}

/// The `--data-path` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPathArg {
    Own,
    Str0m,
}

/// How a native peer reaches others: shared by join, ping, send and receive.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// Connect only through the TURN relay (like `iceTransportPolicy: 'relay'`).
    #[arg(long)]
    pub relay_only: bool,
    /// Offer loopback addresses as candidates (for tests on one machine).
    #[arg(long)]
    pub allow_loopback: bool,
    /// Only this network interface gives host candidates (repeatable).
    #[arg(long = "interface")]
    pub interfaces: Vec<String>,
    /// Never use this network interface (repeatable).
    #[arg(long = "deny-interface")]
    pub deny_interfaces: Vec<String>,
    /// Do not ask the server's STUN for a server-reflexive address.
    #[arg(long)]
    pub no_stun: bool,
    /// Do not allocate a relay on the server's TURN.
    #[arg(long)]
    pub no_turn: bool,
    /// Bytes SCTP may keep unacknowledged per peer, fixed. By default the window follows
    /// the path's round-trip time, 128 KiB to 16 MiB (1 MiB on str0m's path; see
    /// docs/benchmarks.md).
    #[arg(long, value_parser = clap::value_parser!(u32).range(16_384..=16_777_216))]
    pub send_window: Option<u32>,
    /// Also trust this CA certificate (PEM) for the server's HTTPS and for TURN over TLS
    /// (a private or test CA).
    #[arg(long, alias = "turn-ca")]
    pub ca: Option<std::path::PathBuf>,
    /// Access token for a server that requires one (`peerweb token` mints them).
    #[arg(long, env = "PEERWEB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What carries data channels: `own` (peerweb's SCTP on str0m's ICE and DTLS, the
    /// default) or `str0m` (str0m's whole stack, as before; for comparison).
    #[arg(long, value_enum, default_value = "own")]
    pub data_path: DataPathArg,
    /// Do not tell the server how connections fare (by default each connection's outcome,
    /// time to connect and kind of path — no addresses, no room — feed its /metrics).
    #[arg(long)]
    pub no_report: bool,
}

impl NetArgs {
    pub fn options(&self, server: &str, room: &str, meta: Option<String>) -> Options {
        let mut o = Options::new(server, room);
        o.settings = Settings {
            meta,
            relay_only: self.relay_only,
            report: !self.no_report,
            data_path: match self.data_path {
                DataPathArg::Own => DataPath::Own,
                DataPathArg::Str0m => DataPath::Str0m,
            },
            ..Settings::default()
        };
        if let Some(w) = self.send_window {
            o.settings.fix_window(w as usize);
        }
        o.allow_loopback = self.allow_loopback;
        o.interfaces = self.interfaces.clone();
        o.deny_interfaces = self.deny_interfaces.clone();
        o.stun = !self.no_stun;
        o.turn = !self.no_turn || self.relay_only;
        o.ca = self.ca.clone();
        o.token = self.token.clone();
        o
    }
}

impl PeerArgs {
    fn options(&self) -> Options {
        let meta = self.name.as_ref().map(|n| json!({ "name": n }).to_string());
        self.net.options(&self.url, &self.room, meta)
    }
}

#[derive(Debug, Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub peer: PeerArgs,
    /// Rounds of one report per second, then exit.
    #[arg(long, short, default_value_t = 5)]
    pub count: u32,
    /// Seconds to wait for a first peer to connect.
    #[arg(long, default_value_t = 15)]
    pub wait: u64,
}

/// Writes one line; a closed stdout ends the program quietly.
pub fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("stdout closed")
}

pub fn path_text(p: &Path) -> String {
    let rtt = p
        .rtt
        .map(|r| format!(", rtt {:.1} ms", r.as_secs_f64() * 1000.0))
        .unwrap_or_default();
    format!(
        "{}/{} ↔ {} ({}){rtt}",
        p.local,
        p.relay_protocol.unwrap_or(p.protocol),
        p.remote,
        if p.is_direct() { "direct" } else { "relayed" }
    )
}

pub fn path_json(p: &Path) -> serde_json::Value {
    json!({
        "local": p.local,
        "remote": p.remote,
        "protocol": p.protocol,
        "relay_protocol": p.relay_protocol,
        "direct": p.is_direct(),
        "local_addr": p.local_addr.to_string(),
        "remote_addr": p.remote_addr.to_string(),
        "rtt_ms": p.rtt.map(|r| r.as_secs_f64() * 1000.0),
    })
}

fn state_name(s: PeerState) -> &'static str {
    match s {
        PeerState::New => "new",
        PeerState::Connecting => "connecting",
        PeerState::Connected => "connected",
        PeerState::Disconnected => "disconnected",
        PeerState::Closed => "closed",
    }
}

/// Prints one event (as text for people, or as a JSON line); some events are JSON-only.
fn report(ev: &Event, as_json: bool) -> anyhow::Result<()> {
    let (text, value) = match ev {
        Event::Welcome { id, resumed } => (
            None,
            json!({"event": "welcome", "id": id, "resumed": resumed}),
        ),
        Event::Joined { peers } => (
            Some(format!("joined; {} other peer(s) here", peers.len())),
            json!({"event": "joined", "peers": peers}),
        ),
        Event::PeerJoined { peer, meta } => (
            Some(format!("+ {peer} joined")),
            json!({"event": "peer-joined", "peer": peer,
                   "meta": meta.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())}),
        ),
        Event::PeerLeft { peer } => (
            Some(format!("- {peer} left")),
            json!({"event": "peer-left", "peer": peer}),
        ),
        Event::Open { peer } => (
            Some(format!("* {peer} connected")),
            json!({"event": "open", "peer": peer}),
        ),
        Event::Path { peer, path } => (
            Some(format!("* {peer} path {}", path_text(path))),
            json!({"event": "path", "peer": peer, "path": path_json(path)}),
        ),
        Event::State { peer, state } => (
            matches!(state, PeerState::Disconnected)
                .then(|| format!("* {peer} {}", state_name(*state))),
            json!({"event": "state", "peer": peer, "state": state_name(*state)}),
        ),
        Event::Channel { peer, label } => (
            None,
            json!({"event": "channel", "peer": peer, "label": label}),
        ),
        Event::ChannelClosed { peer, label } => (
            None,
            json!({"event": "channel-closed", "peer": peer, "label": label}),
        ),
        Event::Message {
            peer,
            label,
            binary,
            data,
        } => {
            let shown = if *binary {
                format!("<{} bytes>", data.len())
            } else {
                String::from_utf8_lossy(data).into_owned()
            };
            let chan = if label == peerweb_peer::DEFAULT_LABEL {
                String::new()
            } else {
                format!(" [{label}]")
            };
            (
                Some(format!("{peer}{chan}: {shown}")),
                if *binary {
                    json!({"event": "message", "peer": peer, "label": label, "bytes": data.len()})
                } else {
                    json!({"event": "message", "peer": peer, "label": label, "data": shown})
                },
            )
        }
        Event::NoCodec { peer, mid, video } => {
            let kind = if *video { "video" } else { "audio" };
            (
                Some(format!(
                    "* {peer}: no {kind} with it (line {mid}): it takes none of our codecs \
                     (H.264 packetization mode 1, Opus), or is not in a call"
                )),
                json!({"event": "no-codec", "peer": peer, "mid": mid, "kind": kind}),
            )
        }
        Event::Error { code, message } => {
            eprintln!("peerweb: {code}: {message}");
            (
                None,
                json!({"event": "error", "code": code, "message": message}),
            )
        }
        _ => (None, serde_json::Value::Null),
    };
    if as_json {
        if !value.is_null() {
            say(&value.to_string())?;
        }
    } else if let Some(t) = text {
        say(&t)?;
    }
    Ok(())
}

async fn start(args: &PeerArgs) -> anyhow::Result<Node> {
    let node = Node::join(args.options())
        .await
        .with_context(|| format!("cannot join room {:?}", args.room))?;
    Ok(node)
}

/// `peerweb join`: stdin lines go to every connected peer; events come out on stdout.
pub async fn join(join: JoinArgs) -> anyhow::Result<()> {
    let args = join.peer;
    let media = join.video.is_some() || join.audio.is_some() || join.record.is_some();
    let sources = peerweb_apps::source::Sources::load(
        join.video.as_deref(),
        join.audio.as_deref(),
        join.fps,
    )?;
    let mut recorder = join
        .record
        .map(peerweb_apps::record::Recorder::new)
        .transpose()?;
    let mut call = if join.call || media {
        let file = join
            .keys
            .or_else(crate::call::default_key_file)
            .context("no key file for --call: give --keys FILE (no HOME to put it in)")?;
        Some(crate::call::Call::new(
            file,
            args.json,
            sources.video.is_some(),
        )?)
    } else {
        None
    };
    let mut opts = args.options();
    if media {
        opts.settings.media = Some(peerweb_peer::Media {
            audio: sources.audio.is_some(),
            video: sources.video.is_some(),
        });
    }
    let mut node = Node::join(opts)
        .await
        .with_context(|| format!("cannot join room {:?}", args.room))?;
    let keyframes = sources.spawn(node.media_handle()).keyframes;
    if !args.json {
        say(&format!(
            "peerweb join: in room {:?} as {}; type to chat, Ctrl-D to leave",
            args.room,
            node.id()
        ))?;
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let result = loop {
        tokio::select! {
            ev = node.next_event() => match ev {
                Some(Event::Media { peer, mid, video, data, keyframe, .. }) => {
                    if let Some(r) = recorder.as_mut() {
                        r.write(&peer, &mid, video, &data, keyframe);
                    }
                }
                Some(Event::KeyframeRequest { .. }) => keyframes.request(),
                Some(ev) => {
                    if let Some(call) = call.as_mut() {
                        match on_call_event(call, &node, &ev).await {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(e) => break Err(e),
                        }
                    }
                    if let Err(e) = report(&ev, args.json) {
                        break Err(e);
                    }
                }
                None => break Err(anyhow::anyhow!("the peer stopped")),
            },
            line = lines.next_line() => match line {
                Ok(Some(line)) if line.starts_with("/verify") => {
                    match call.as_mut() {
                        Some(call) => call.command(&node, &line).await?,
                        None => say("(not in a call: join with --call)")?,
                    }
                }
                Ok(Some(line)) => {
                    let open: Vec<String> = node.status().await?
                        .into_iter().filter(|p| p.open).map(|p| p.id).collect();
                    if open.is_empty() && !args.json {
                        say("(nobody connected yet; not sent)")?;
                    }
                    for peer in open {
                        if let Err(e) = node.send(&peer, None, false, line.clone().into_bytes()).await {
                            eprintln!("peerweb: cannot send to {peer}: {e}");
                        }
                    }
                }
                // End of input (Ctrl-D) leaves the room, as `nc -N` does.
                Ok(None) | Err(_) => break Ok(()),
            },
            _ = crate::shutdown_signal() => break Ok(()),
        }
    };
    node.leave().await;
    if let Some(r) = recorder {
        r.finish();
    }
    result
}

/// What a call makes of an event; `true` when the event was the call's own (not shown).
async fn on_call_event(
    call: &mut crate::call::Call,
    node: &Node,
    ev: &Event,
) -> anyhow::Result<bool> {
    match ev {
        Event::Open { peer } => call.peer_open(node, peer).await?,
        Event::Channel { peer, label } if label == peerweb_call::CALL_LABEL => {
            call.channel_open(node, peer).await?;
            return Ok(true);
        }
        Event::Message {
            peer, label, data, ..
        } if label == peerweb_call::CALL_LABEL => {
            call.message(node, peer, &String::from_utf8_lossy(data))
                .await?;
            return Ok(true);
        }
        Event::PeerLeft { peer } => call.peer_left(peer),
        Event::Track { peer, .. } => {
            call.tracks(node, peer).await?;
            return Ok(true);
        }
        _ => {}
    }
    Ok(false)
}

/// `peerweb ping`: the path and round-trip time to each peer, once a second.
pub async fn ping(args: PingArgs) -> anyhow::Result<bool> {
    let mut node = start(&args.peer).await?;
    let as_json = args.peer.json;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    // Wait for a first connected peer whose path has an RTT (events are drained meanwhile).
    loop {
        let st = node.status().await?;
        if st
            .iter()
            .any(|p| p.open && p.path.as_ref().is_some_and(|x| x.rtt.is_some()))
        {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            node.leave().await;
            if as_json {
                say(&json!({"event": "timeout", "waited_s": args.wait}).to_string())?;
            } else {
                eprintln!("peerweb ping: no peer connected within {} s", args.wait);
            }
            return Ok(false);
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), node.next_event()).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..args.count {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::shutdown_signal() => break,
        }
        while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, node.next_event()).await {}
        for p in node.status().await? {
            let Some(path) = p.path.as_ref().filter(|_| p.open) else {
                continue;
            };
            if as_json {
                say(&json!({"event": "ping", "peer": p.id, "path": path_json(path)}).to_string())?;
            } else {
                say(&format!("{}: {}", p.id, path_text(path)))?;
            }
        }
    }
    node.leave().await;
    Ok(true)
}
