//! `turn-bench`: peerweb's STUN/TURN relay and coturn side by side, with a TURN load
//! generator (UDP, REST credentials, ChannelData).
//!
//! Run it with `bench/run-turn` (installs coturn with apt if needed, builds, pins each server
//! to CPU 1 and the generator to CPU 0). For each server in turn:
//! - (a) one allocation, ChannelData echo through the relay with a window of packets in
//!   flight: relayed packets/s, Mbps, round trip, server CPU per GB relayed;
//! - (b) `--allocations` allocations each sending `--rate` small packets per second, echoed
//!   by a peer: relayed packets/s and the round trip's percentiles, against the same load
//!   sent directly (no relay) to show what the relay adds;
//! - (c) allocation setup rate: `--setup` allocations (401, Allocate) from fresh sockets.
//!
//! All traffic stays on 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use peerweb_bench::{cpu_secs, free_port, rss_kib, spawn_pinned};
use peerweb_turn::stun::{Builder, Class, Message, attr, channel_data, method};
use peerweb_turn::{long_term_key, rest_password};
use tokio::net::UdpSocket;
use tokio::sync::{Mutex, Semaphore};

#[derive(Debug, Parser)]
#[command(
    name = "turn-bench",
    about = "peerweb's TURN relay vs coturn, side by side"
)]
struct Args {
    #[arg(long, default_value = "target/release/peerweb")]
    peerweb_bin: PathBuf,
    #[arg(long, default_value = "turnserver")]
    coturn_bin: PathBuf,
    /// CPU the server is pinned to (`taskset`); empty to not pin.
    #[arg(long, default_value = "1")]
    server_cpu: String,
    /// (a) payload bytes per packet.
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// (a) packets in flight.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// (b) allocations streaming at once.
    #[arg(long, default_value_t = 1000)]
    allocations: usize,
    /// (b) packets per second from each allocation.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// (b) payload bytes per packet.
    #[arg(long, default_value_t = 160)]
    small: usize,
    /// (c) allocations to set up.
    #[arg(long, default_value_t = 2000)]
    setup: usize,
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    #[arg(long, default_value_t = 5000)]
    measure_ms: u64,
    /// Only this server (default: both).
    #[arg(long)]
    only: Option<Kind>,
    /// Rounds, alternating the servers; each metric is the median over rounds (shared
    /// machines drift by tens of percent within a minute).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Coturn,
    Peerweb,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Coturn => "coturn",
            Kind::Peerweb => "peerweb",
        }
    }
}

const SECRET: &str = "bench-secret";
const REALM: &str = "peerweb";

fn main() -> std::process::ExitCode {
    peerweb_bench::block_on_main("turn-bench", run(Args::parse()))
}

#[derive(Debug, Default)]
struct Score {
    rss_kib: u64,
    a_pps: f64,
    a_mbps: f64,
    a_rtt_p50: u64,
    a_rtt_p99: u64,
    a_cpu_per_gb: f64,
    a_cpu_util: f64,
    a_lost: f64,
    b_pps: f64,
    b_p50: u64,
    b_p99: u64,
    b_added_p50: f64,
    b_added_p99: f64,
    b_cpu_util: f64,
    c_rate: f64,
    c_cpu_us: f64,
    c_failed: usize,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let echo = Echo::start().await?;
    eprintln!(
        "turn-bench: (a) 1 allocation, {} B packets, window {}; (b) {} allocations x {} pkt/s x {} B; \
         (c) {} allocations set up; warmup {} ms, measure {} ms",
        args.size,
        args.window,
        args.allocations,
        args.rate,
        args.small,
        args.setup,
        args.warmup_ms,
        args.measure_ms
    );
    // The same load of (b) straight to the echo peer: what the relay adds is measured
    // against this.
    let direct = stream_load(&args, &echo, None).await?;
    eprintln!(
        "direct (no relay): {:.0} pkt/s, round trip p50 {} us, p99 {} us",
        direct.pps,
        direct.hist.value_at_quantile(0.5),
        direct.hist.value_at_quantile(0.99)
    );
    let kinds = match args.only {
        Some(k) => vec![k],
        None => vec![Kind::Coturn, Kind::Peerweb],
    };
    let mut scores: Vec<(Kind, Vec<Score>)> = kinds.iter().map(|k| (*k, Vec::new())).collect();
    for round in 0..args.rounds.max(1) {
        eprintln!("round {}", round + 1);
        for (kind, list) in &mut scores {
            let s = measure(&args, *kind, &echo, &direct)
                .await
                .with_context(|| format!("measuring {}", kind.name()))?;
            list.push(s);
        }
    }
    let names: Vec<&str> = scores.iter().map(|(k, _)| k.name()).collect();
    let get = |f: &dyn Fn(&Score) -> f64| {
        scores
            .iter()
            .map(|(_, list)| median(list.iter().map(f).collect()))
            .collect::<Vec<_>>()
    };
    let rows = vec![
        (
            "(a) relayed packets/s, one allocation".into(),
            get(&|s| s.a_pps),
            0,
        ),
        ("(a) relayed Mbps".into(), get(&|s| s.a_mbps), 0),
        (
            "(a) round trip p50, µs".into(),
            get(&|s| s.a_rtt_p50 as f64),
            0,
        ),
        (
            "(a) round trip p99, µs".into(),
            get(&|s| s.a_rtt_p99 as f64),
            0,
        ),
        ("(a) lost, %".into(), get(&|s| s.a_lost * 100.0), 2),
        (
            "(a) server CPU s per GB relayed".into(),
            get(&|s| s.a_cpu_per_gb),
            2,
        ),
        (
            "(a) server CPU use, %".into(),
            get(&|s| s.a_cpu_util * 100.0),
            0,
        ),
        (
            format!("(b) relayed packets/s, {} allocations", args.allocations),
            get(&|s| s.b_pps),
            0,
        ),
        ("(b) round trip p50, µs".into(), get(&|s| s.b_p50 as f64), 0),
        ("(b) round trip p99, µs".into(), get(&|s| s.b_p99 as f64), 0),
        (
            "(b) added by the relay, p50, µs".into(),
            get(&|s| s.b_added_p50),
            0,
        ),
        (
            "(b) added by the relay, p99, µs".into(),
            get(&|s| s.b_added_p99),
            0,
        ),
        (
            "(b) server CPU use, %".into(),
            get(&|s| s.b_cpu_util * 100.0),
            0,
        ),
        (
            "(c) allocations set up per second".into(),
            get(&|s| s.c_rate),
            0,
        ),
        (
            "(c) server CPU per allocation, µs".into(),
            get(&|s| s.c_cpu_us),
            0,
        ),
        (
            "(c) failed allocations".into(),
            get(&|s| s.c_failed as f64),
            0,
        ),
        (
            "RSS after all phases, MiB".into(),
            get(&|s| s.rss_kib as f64 / 1024.0),
            1,
        ),
    ];
    println!("\nMedians over {} rounds.", args.rounds.max(1));
    peerweb_bench::print_table(&names, &rows);
    Ok(())
}

async fn measure(args: &Args, kind: Kind, echo: &Echo, direct: &Load) -> anyhow::Result<Score> {
    let port = free_port()?;
    let server: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let argv: Vec<String> = match kind {
        Kind::Coturn => [
            args.coturn_bin.display().to_string().as_str(),
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            &format!("--realm={REALM}"),
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            "--fingerprint",
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            // Relay ports above the kernel's ephemeral range (32768-60999), where the load
            // generator's own sockets live.
            "--min-port=61000",
            "--max-port=65535",
            "--simple-log",
            "--log-file=/dev/null",
            "--no-stdout-log",
        ]
        .map(String::from)
        .to_vec(),
        Kind::Peerweb => [
            args.peerweb_bin.display().to_string().as_str(),
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()?),
            "--turn-listen",
            &server.to_string(),
            "--turn-secret",
            SECRET,
            "--turn-realm",
            REALM,
            "--turn-allow-loopback-peers",
            "--relay-min-port",
            "61000",
            "--relay-max-port",
            "65535",
            // Measure the relay, not the per-user and per-address limits: every allocation
            // here comes from one address with one username, at full speed.
            "--turn-max-allocations",
            "100000",
            "--turn-max-allocations-per-user",
            "100000",
            "--turn-bandwidth-per-allocation",
            "0",
            "--turn-max-challenges-per-sec",
            "1000000",
        ]
        .map(String::from)
        .to_vec(),
    };
    let mut child = spawn_pinned(&args.server_cpu, &argv)?;
    let pid = child.id().context("no pid")?;
    wait_stun(server, &mut child).await?;
    let mut score = Score::default();

    // (a) one allocation, window of packets, echoed.
    let cpu0 = cpu_secs(pid)?;
    let a = throughput(args, server, echo).await?;
    let cpu = cpu_secs(pid)? - cpu0;
    let phase = (args.warmup_ms + args.measure_ms) as f64 / 1000.0;
    let relayed_bytes = 2.0 * a.pps / 2.0 * args.size as f64 * phase;
    score.a_pps = a.pps;
    score.a_mbps = a.pps * args.size as f64 * 8.0 / 1e6;
    score.a_rtt_p50 = a.hist.value_at_quantile(0.5);
    score.a_rtt_p99 = a.hist.value_at_quantile(0.99);
    score.a_cpu_per_gb = cpu / (relayed_bytes / 1e9).max(1e-9);
    score.a_cpu_util = cpu / phase;
    score.a_lost = a.lost;
    eprintln!(
        "{}: (a) {:.0} pkt/s relayed, {:.0} Mbps, rtt p50 {} us, CPU {:.0}%",
        kind.name(),
        score.a_pps,
        score.a_mbps,
        score.a_rtt_p50,
        score.a_cpu_util * 100.0
    );

    // (b) many allocations, small packets at a fixed rate.
    let cpu0 = cpu_secs(pid)?;
    let b = stream_load(args, echo, Some(server)).await?;
    let cpu = cpu_secs(pid)? - cpu0;
    score.b_pps = b.pps;
    score.b_p50 = b.hist.value_at_quantile(0.5);
    score.b_p99 = b.hist.value_at_quantile(0.99);
    score.b_added_p50 = score.b_p50 as f64 - direct.hist.value_at_quantile(0.5) as f64;
    score.b_added_p99 = score.b_p99 as f64 - direct.hist.value_at_quantile(0.99) as f64;
    score.b_cpu_util = cpu / phase;
    eprintln!(
        "{}: (b) {:.0} pkt/s relayed, rtt p50 {} us, p99 {} us",
        kind.name(),
        score.b_pps,
        score.b_p50,
        score.b_p99
    );

    // (c) allocation setup rate.
    let cpu0 = cpu_secs(pid)?;
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<Allocation>> =
        futures_util::stream::iter((0..args.setup).map(|_| Allocation::new(server)))
            .buffer_unordered(32)
            .collect()
            .await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid)? - cpu0;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    score.c_failed = args.setup - ok;
    score.c_rate = ok as f64 / secs;
    score.c_cpu_us = cpu * 1e6 / ok.max(1) as f64;
    eprintln!(
        "{}: (c) {:.0} allocations/s ({} failed)",
        kind.name(),
        score.c_rate,
        score.c_failed
    );
    score.rss_kib = rss_kib(pid)?;
    drop(results);
    child.start_kill()?;
    let _ = child.wait().await;
    Ok(score)
}

/// Waits until the server answers a STUN binding request.
async fn wait_stun(server: SocketAddr, child: &mut tokio::process::Child) -> anyhow::Result<()> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let req = Builder::new(Class::Request, method::BINDING, &[1; 12]).fingerprint();
    let mut buf = [0u8; 1500];
    for _ in 0..150 {
        if let Some(status) = child.try_wait()? {
            bail!("server exited: {status}");
        }
        sock.send_to(&req, server).await?;
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await
        {
            return Ok(());
        }
    }
    bail!("no STUN answer from {server} within 15 s")
}

/// A UDP peer that sends every datagram back where it came from.
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    async fn start() -> anyhow::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let _ = sock.try_send_to(&buf[..n], from);
            }
        });
        Ok(Self { addr, task })
    }
}

/// A TURN client with an allocation (UDP).
struct Allocation {
    sock: UdpSocket,
    server: SocketAddr,
    user: String,
    realm: String,
    nonce: String,
    key: [u8; 16],
    tid: u64,
}

impl Allocation {
    /// A fresh socket, the 401 round and an Allocate.
    async fn new(server: SocketAddr) -> anyhow::Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 3600;
        let user = format!("{expiry}:bench");
        let pass = rest_password(SECRET.as_bytes(), &user);
        let mut a = Self {
            sock,
            server,
            key: long_term_key(&user, REALM, &pass),
            user,
            realm: String::new(),
            nonce: String::new(),
            tid: 0,
        };
        let r = a
            .ask(method::ALLOCATE, false, |b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            })
            .await?;
        let m = Message::parse(&r)?;
        if error_code(&m) != Some(401) {
            bail!("expected 401, got {:?}", error_code(&m));
        }
        a.realm = m.text(attr::REALM).context("401 without realm")?.to_owned();
        a.nonce = m.text(attr::NONCE).context("401 without nonce")?.to_owned();
        let r = a
            .ask(method::ALLOCATE, true, |b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            })
            .await?;
        let m = Message::parse(&r)?;
        if m.class != Class::Success {
            bail!("allocate refused: {:?}", error_code(&m));
        }
        Ok(a)
    }

    /// A request with retransmissions; returns the response with the same transaction id.
    async fn ask(
        &mut self,
        m: u16,
        auth: bool,
        extra: impl Fn(&mut Builder),
    ) -> anyhow::Result<Vec<u8>> {
        self.tid += 1;
        let mut tid = [0u8; 12];
        tid[4..].copy_from_slice(&self.tid.to_be_bytes());
        let mut b = Builder::new(Class::Request, m, &tid);
        extra(&mut b);
        if auth {
            b.attr(attr::USERNAME, self.user.as_bytes())
                .attr(attr::REALM, self.realm.as_bytes())
                .attr(attr::NONCE, self.nonce.as_bytes())
                .integrity(&self.key);
        }
        let req = b.fingerprint();
        let mut buf = vec![0u8; 2048];
        for attempt in 0..5u32 {
            self.sock.send_to(&req, self.server).await?;
            let wait = Duration::from_millis(250 << attempt);
            let end = Instant::now() + wait;
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(end.into(), self.sock.recv_from(&mut buf)).await
            {
                if let Ok(m) = Message::parse(&buf[..n])
                    && m.tid == tid
                {
                    return Ok(buf[..n].to_vec());
                }
            }
        }
        bail!("no answer to method {m:#x}")
    }

    async fn bind_channel(&mut self, ch: u16, peer: SocketAddr) -> anyhow::Result<()> {
        let r = self
            .ask(method::CHANNEL_BIND, true, |b| {
                b.attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0])
                    .xor_address(attr::XOR_PEER_ADDRESS, peer);
            })
            .await?;
        if Message::parse(&r)?.class != Class::Success {
            bail!("channel bind refused");
        }
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn error_code(m: &Message<'_>) -> Option<u16> {
    let v = m.get(attr::ERROR_CODE)?;
    Some(u16::from(*v.get(2)?) * 100 + u16::from(*v.get(3)?))
}

struct Load {
    pps: f64,
    hist: Histogram<u64>,
    lost: f64,
}

fn stamp(buf: &mut [u8], epoch: Instant) {
    let t = epoch.elapsed().as_micros() as u64;
    buf[..8].copy_from_slice(&t.to_be_bytes());
}

fn rtt(payload: &[u8], epoch: Instant) -> Option<u64> {
    let t = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    Some(
        (epoch.elapsed().as_micros() as u64)
            .saturating_sub(t)
            .max(1),
    )
}

/// (a) One allocation, `window` ChannelData packets in flight, echoed by the peer.
async fn throughput(args: &Args, server: SocketAddr, echo: &Echo) -> anyhow::Result<Load> {
    let mut a = Allocation::new(server).await?;
    a.bind_channel(0x4000, echo.addr).await?;
    let sock = Arc::new(a.sock);
    let epoch = Instant::now();
    let window = Arc::new(Semaphore::new(args.window));
    let received = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let reader = {
        let (sock, window, received, counting, hist) = (
            sock.clone(),
            window.clone(),
            received.clone(),
            counting.clone(),
            hist.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = sock.recv(&mut buf).await {
                let Some((_, data)) = channel_data::parse(&buf[..n]) else {
                    continue;
                };
                window.add_permits(1);
                if counting.load(Ordering::Relaxed) == 1 {
                    received.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = rtt(data, epoch) {
                        let _ = hist.lock().await.record(r);
                    }
                }
            }
        })
    };
    sock.connect(server).await?;
    let mut payload = vec![0u8; args.size];
    let mut sent_measured = 0u64;
    let start = Instant::now();
    let warm_end = start + Duration::from_millis(args.warmup_ms);
    let end = warm_end + Duration::from_millis(args.measure_ms);
    let mut measured_from = None;
    while Instant::now() < end {
        // A packet lost on the way never gives its permit back: after 50 ms, send anyway.
        if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(50), window.acquire()).await {
            p.forget();
        }
        if measured_from.is_none() && Instant::now() >= warm_end {
            measured_from = Some(Instant::now());
            counting.store(1, Ordering::Relaxed);
        }
        stamp(&mut payload, epoch);
        let frame = channel_data::encode(0x4000, &payload, false);
        if sock.send(&frame).await.is_ok() && measured_from.is_some() {
            sent_measured += 1;
        }
    }
    counting.store(0, Ordering::Relaxed);
    let secs = measured_from.map_or(1.0, |t| t.elapsed().as_secs_f64());
    reader.abort();
    let got = received.load(Ordering::Relaxed);
    let hist = hist.lock().await.clone();
    Ok(Load {
        // Each round trip is two relayed packets (client to peer, peer to client).
        pps: 2.0 * got as f64 / secs,
        hist,
        lost: 1.0 - got as f64 / sent_measured.max(1) as f64,
    })
}

/// (b) `allocations` senders at `rate` packets/s each, echoed; through `server`'s relay, or
/// straight to the echo peer when `server` is `None`.
async fn stream_load(args: &Args, echo: &Echo, server: Option<SocketAddr>) -> anyhow::Result<Load> {
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    // Set up every sender first.
    let mut socks = Vec::with_capacity(args.allocations);
    match server {
        Some(server) => {
            let allocs: Vec<anyhow::Result<Allocation>> =
                futures_util::stream::iter((0..args.allocations).map(|_| async move {
                    let mut a = Allocation::new(server).await?;
                    a.bind_channel(0x4000, echo.addr).await?;
                    a.sock.connect(server).await?;
                    Ok(a)
                }))
                .buffer_unordered(32)
                .collect()
                .await;
            let mut failed = 0;
            for a in allocs {
                match a {
                    Ok(a) => socks.push(Arc::new(a.sock)),
                    Err(e) => {
                        if failed == 0 {
                            eprintln!("turn-bench: an allocation failed: {e:#}");
                        }
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                eprintln!(
                    "turn-bench: {failed} of {} allocations failed",
                    args.allocations
                );
            }
        }
        None => {
            for _ in 0..args.allocations {
                let s = UdpSocket::bind("127.0.0.1:0").await?;
                s.connect(echo.addr).await?;
                socks.push(Arc::new(s));
            }
        }
    }
    let relayed = server.is_some();
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let n = socks.len();
    let mut tasks = Vec::new();
    for (k, sock) in socks.iter().enumerate() {
        let (reader, received, counting, hist) = (
            sock.clone(),
            received.clone(),
            counting.clone(),
            hist.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sock = reader;
            let mut buf = vec![0u8; 2048];
            while let Ok(n) = sock.recv(&mut buf).await {
                let data = if relayed {
                    match channel_data::parse(&buf[..n]) {
                        Some((_, d)) => d,
                        None => continue,
                    }
                } else {
                    &buf[..n]
                };
                if counting.load(Ordering::Relaxed) == 1 {
                    received.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = rtt(data, epoch) {
                        let _ = hist.lock().await.record(r);
                    }
                }
            }
        }));
        let size = args.small;
        let offset = period.mul_f64(k as f64 / n as f64);
        let sock = sock.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            let mut payload = vec![0u8; size];
            loop {
                tick.tick().await;
                stamp(&mut payload, epoch);
                let _ = if relayed {
                    sock.send(&channel_data::encode(0x4000, &payload, false))
                        .await
                } else {
                    sock.send(&payload).await
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(args.warmup_ms)).await;
    counting.store(1, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_millis(args.measure_ms)).await;
    counting.store(0, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    for t in tasks {
        t.abort();
    }
    let got = received.load(Ordering::Relaxed);
    let hist = hist.lock().await.clone();
    let sent = args.rate * n as f64 * secs;
    Ok(Load {
        pps: if relayed { 2.0 } else { 1.0 } * got as f64 / secs,
        hist,
        lost: 1.0 - got as f64 / sent.max(1.0),
    })
}
