//! A load-generating worker process: holds a share of the WebSocket clients, grouped in rooms
//! of 2–10, and on command relays signal messages between room-mates through the server.
//!
//! Whole rooms live in one worker, so every message is sent and received by the same process
//! and its latency is measured on one monotonic clock. Commands come on stdin, one per line;
//! answers go to stdout as one line each (`ready N`, `result {json}`).

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{Kind, WorkerArgs, WorkerResult};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Ws, Message>;

const PHASE_IDLE: u8 = 0;
const PHASE_MEASURE: u8 = 2;

/// What every reader task shares.
struct Shared {
    epoch: Instant,
    phase: AtomicU8,
    received: AtomicU64,
    alive: AtomicUsize,
    hist: Mutex<Histogram<u64>>,
    /// Send window of each active client; a receiver gives the permit back to the sender.
    windows: Vec<Semaphore>,
}

/// An active client: its write half, its index, and the ids of its room-mates.
struct Active {
    sink: Sink,
    index: usize,
    targets: Vec<String>,
}

/// A candidate (what most signaling traffic is) and, one message in ten, an offer.
const CANDIDATE: &str = r#""candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 10.0.1.2 rport 46154 generation 0 ufrag sXPa network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"sXPa"}"#;

fn offer_body() -> String {
    let mut sdp = String::from(
        "v=0\\r\\no=- 4611731400430051336 2 IN IP4 127.0.0.1\\r\\ns=-\\r\\nt=0 0\\r\\na=group:BUNDLE 0\\r\\na=extmap-allow-mixed\\r\\na=msid-semantic: WMS\\r\\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\\r\\nc=IN IP4 0.0.0.0\\r\\na=ice-ufrag:sXPa\\r\\na=ice-pwd:Hc7e7yJ2mY3xu7fTIy1yZ0bW\\r\\na=ice-options:trickle\\r\\na=fingerprint:sha-256 ",
    );
    for i in 0..32 {
        sdp.push_str(&format!(
            "{:02X}{}",
            (i * 37) % 256,
            if i < 31 { ":" } else { "" }
        ));
    }
    sdp.push_str("\\r\\na=setup:actpass\\r\\na=mid:0\\r\\na=sctp-port:5000\\r\\na=max-message-size:262144\\r\\n");
    while sdp.len() < 1400 {
        sdp.push_str("a=candidate:1 1 udp 2113937151 192.0.2.10 54400 typ host generation 0 network-cost 999\\r\\n");
    }
    format!(r#""description":{{"type":"offer","sdp":"{sdp}"}}"#)
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let total = args.idle + args.active;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        phase: AtomicU8::new(PHASE_IDLE),
        received: AtomicU64::new(0),
        alive: AtomicUsize::new(0),
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        windows: (0..args.active).map(|_| Semaphore::new(0)).collect(),
    });

    // Rooms of 2..=10 members, cycling; the last room takes what is left (at least 2).
    let mut rooms: Vec<usize> = Vec::new();
    let mut placed = 0;
    while placed < total {
        let size = 2 + (rooms.len() % 9);
        let size = size.min(total - placed);
        if size < 2 {
            if let Some(last) = rooms.last_mut() {
                *last += size;
            }
            break;
        }
        rooms.push(size);
        placed += size;
    }
    // Members are numbered globally in this worker; the last `active` are the active ones.
    let first_active = total - args.active;
    let mut starts = Vec::with_capacity(rooms.len());
    let mut at = 0;
    for &size in &rooms {
        starts.push(at);
        at += size;
    }
    let setups = futures_util::stream::iter(rooms.iter().copied().zip(starts).enumerate())
        .map(|(r, (size, start))| {
            let shared = shared.clone();
            let args = &args;
            async move { setup_room(args, &shared, r, start, size, first_active).await }
        })
        .buffer_unordered(32);
    let results: Vec<anyhow::Result<Vec<Active>>> = setups.collect().await;
    let mut active = Vec::new();
    let mut failed = 0usize;
    for r in results {
        match r {
            Ok(a) => active.extend(a),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("worker {}: room setup failed: {e:#}", args.worker);
                }
            }
        }
    }
    active.sort_by_key(|a| a.index);
    println!("ready {}", shared.alive.load(Ordering::Relaxed));

    let offer = Arc::new(offer_body());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [kind @ ("saturate" | "rate"), arg, warmup, measure] => {
                let pace = if *kind == "saturate" {
                    Pace::Window(arg.parse()?)
                } else {
                    Pace::Rate(arg.parse()?)
                };
                let (res, back) = phase(
                    &shared,
                    args.kind,
                    active,
                    &offer,
                    pace,
                    ms(warmup)?,
                    ms(measure)?,
                )
                .await?;
                active = back;
                println!("result {}", serde_json::to_string(&res)?);
            }
            ["alive"] => println!("alive {}", shared.alive.load(Ordering::Relaxed)),
            ["quit"] | [] => break,
            other => bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}

fn ms(s: &str) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(s.parse()?))
}

#[derive(Clone, Copy)]
enum Pace {
    /// Closed loop: each sender keeps this many messages in flight.
    Window(usize),
    /// Open loop: this many messages per second from the whole worker.
    Rate(f64),
}

/// Connects one room's members, joins them, and starts their readers.
async fn setup_room(
    args: &WorkerArgs,
    shared: &Arc<Shared>,
    room: usize,
    start: usize,
    size: usize,
    first_active: usize,
) -> anyhow::Result<Vec<Active>> {
    let mut members = Vec::with_capacity(size);
    for m in start..start + size {
        let (ws, id) = connect(args, room, m).await?;
        members.push((m, ws, id));
    }
    let ids: Vec<String> = members.iter().map(|(_, _, id)| id.clone()).collect();
    let mut active = Vec::new();
    for (m, ws, id) in members {
        let (sink, stream) = ws.split();
        shared.alive.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(read(stream, shared.clone()));
        if m >= first_active {
            active.push(Active {
                sink,
                index: m - first_active,
                targets: ids.iter().filter(|i| **i != id).cloned().collect(),
            });
        } else {
            // Idle clients keep their write half alive (dropping it would not close the
            // socket, but keeping it is what a real idle client does).
            tokio::spawn(async move {
                let _sink = sink;
                std::future::pending::<()>().await;
            });
        }
    }
    Ok(active)
}

async fn connect(args: &WorkerArgs, room: usize, m: usize) -> anyhow::Result<(Ws, String)> {
    let w = args.worker;
    match args.kind {
        Kind::Peerweb | Kind::PeerwebTls | Kind::NginxTls => {
            let (mut ws, _) = match &args.tls_ca {
                None => {
                    let url = format!("ws://{}/ws", args.addr);
                    tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await
                }
                Some(ca) => {
                    let url = format!("wss://{}/ws", args.addr);
                    let tls = tokio_tungstenite::Connector::Rustls(crate::tls_client(ca)?);
                    tokio_tungstenite::connect_async_tls_with_config(
                        url.as_str(),
                        None,
                        true,
                        Some(tls),
                    )
                    .await
                }
            }
            .context("connect")?;
            ws.send(Message::text(r#"{"type":"hello","v":1}"#)).await?;
            let welcome = next_text(&mut ws).await?;
            let id = field(&welcome, "\"id\":\"").context("welcome without id")?;
            ws.send(Message::text(format!(
                r#"{{"type":"join","room":"w{w}r{room}"}}"#
            )))
            .await?;
            loop {
                let t = next_text(&mut ws).await?;
                if t.starts_with(r#"{"type":"joined""#) {
                    break;
                }
                if t.starts_with(r#"{"type":"error""#) {
                    bail!("join refused: {t}");
                }
            }
            Ok((ws, id))
        }
        Kind::Peerjs => {
            let id = format!("w{w}c{m}");
            let url = format!(
                "ws://{}/peerjs?key=peerjs&id={id}&token=t{w}x{m}",
                args.addr
            );
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
                    .await
                    .context("connect")?;
            let open = next_text(&mut ws).await?;
            if !open.contains(r#""OPEN""#) {
                bail!("peerjs refused: {open}");
            }
            Ok((ws, id))
        }
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no answer in 30 s")?
            .context("closed")??;
        match msg {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Close(f) => bail!("closed by server: {f:?}"),
            _ => {}
        }
    }
}

/// The string value after `key` (which ends with the opening quote).
fn field(text: &str, key: &str) -> Option<String> {
    let at = text.find(key)? + key.len();
    let end = text[at..].find('"')?;
    Some(text[at..at + end].to_owned())
}

/// The unsigned number after `key`.
fn number(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}

async fn read(mut stream: SplitStream<Ws>, shared: Arc<Shared>) {
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let (Some(i), Some(t)) = (number(&text, "\"i\":"), number(&text, "\"t\":")) else {
            continue;
        };
        if let Some(w) = shared.windows.get(i as usize) {
            w.add_permits(1);
        }
        if shared.phase.load(Ordering::Relaxed) == PHASE_MEASURE {
            let now = shared.epoch.elapsed().as_micros() as u64;
            shared.received.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut h) = shared.hist.lock() {
                let _ = h.record(now.saturating_sub(t).max(1));
            }
        }
    }
    shared.alive.fetch_sub(1, Ordering::Relaxed);
}

async fn phase(
    shared: &Arc<Shared>,
    kind: Kind,
    active: Vec<Active>,
    offer: &Arc<String>,
    pace: Pace,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<(WorkerResult, Vec<Active>)> {
    if let Ok(mut h) = shared.hist.lock() {
        h.reset();
    }
    shared.received.store(0, Ordering::Relaxed);
    let sent = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let n = active.len().max(1);
    let mut tasks = Vec::with_capacity(active.len());
    for (k, a) in active.into_iter().enumerate() {
        if let Pace::Window(w) = pace {
            shared.windows[a.index].add_permits(w);
        }
        let period = match pace {
            Pace::Rate(r) if r > 0.0 => Some(Duration::from_secs_f64(n as f64 / r)),
            _ => None,
        };
        // Spread the open-loop senders evenly over one period.
        let offset = period.map(|p| p.mul_f64(k as f64 / n as f64));
        tasks.push(tokio::spawn(send_loop(
            a,
            kind,
            shared.clone(),
            offer.clone(),
            sent.clone(),
            stop_rx.clone(),
            period.zip(offset),
        )));
    }
    tokio::time::sleep(warmup).await;
    let sent_before = sent.load(Ordering::Relaxed);
    shared.phase.store(PHASE_MEASURE, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    shared.phase.store(PHASE_IDLE, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let sent_in = sent.load(Ordering::Relaxed) - sent_before;
    let _ = stop_tx.send(true);
    let mut back = Vec::with_capacity(tasks.len());
    for t in tasks {
        back.push(t.await?);
    }
    // Let what is in flight arrive, then take the windows back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for w in &shared.windows {
        w.forget_permits(usize::MAX);
    }
    let mut bytes = Vec::new();
    if let Ok(h) = shared.hist.lock() {
        V2Serializer::new().serialize(&h, &mut bytes)?;
    }
    Ok((
        WorkerResult {
            received: shared.received.load(Ordering::Relaxed),
            sent: sent_in,
            secs: elapsed.as_secs_f64(),
            hist: data_encoding::BASE64.encode(&bytes),
        },
        back,
    ))
}

async fn send_loop(
    mut a: Active,
    kind: Kind,
    shared: Arc<Shared>,
    offer: Arc<String>,
    sent: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    schedule: Option<(Duration, Duration)>,
) -> Active {
    let mut ticker = schedule.map(|(period, offset)| {
        tokio::time::interval_at(tokio::time::Instant::now() + offset, period)
    });
    let mut seq = 0usize;
    loop {
        let go = async {
            match &mut ticker {
                Some(t) => {
                    t.tick().await;
                }
                None => {
                    if let Ok(p) = shared.windows[a.index].acquire().await {
                        p.forget();
                    }
                }
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            () = go => {}
        }
        if a.targets.is_empty() {
            continue;
        }
        let to = &a.targets[seq % a.targets.len()];
        let body: &str = if seq % 10 == 9 { &offer } else { CANDIDATE };
        seq += 1;
        let t = shared.epoch.elapsed().as_micros() as u64;
        let i = a.index;
        let frame = match kind {
            Kind::Peerweb | Kind::PeerwebTls | Kind::NginxTls => {
                format!(r#"{{"type":"signal","to":"{to}","data":{{"i":{i},"t":{t},{body}}}}}"#)
            }
            Kind::Peerjs => format!(
                r#"{{"type":"CANDIDATE","dst":"{to}","payload":{{"i":{i},"t":{t},{body}}}}}"#
            ),
        };
        if a.sink.send(Message::text(frame)).await.is_err() {
            break;
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    a
}
