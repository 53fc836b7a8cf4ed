//! `cluster-bench`: what several `peerweb serve` nodes on Redis cost, at a fixed offered load.
//!
//! On a two-core machine throughput cannot grow with nodes, so this measures the cost model
//! instead (run it with `bench/run-cluster`): `--pairs` pairs of clients, each sender
//! signalling its receiver at an equal share of `--rate` messages per second, with the
//! receiver on the next node (so across nodes whenever there are two or more). For one node
//! without Redis, one node with Redis, and two and three nodes it prints: CPU per relayed
//! message (nodes, Redis, total), Redis commands and PUBLISHes per message, latency p50/p99.
//! Then, with three nodes, it kills (SIGKILL) the node of some receivers mid-stream: they
//! reconnect to another node with their token and the last signal they got; it prints the
//! time from the kill to the first signal after the resume and the signals missing or
//! repeated (both must be 0). Everything runs on 127.0.0.1 and a Unix socket in a
//! temporary folder; every loop is bounded in time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use peerweb_bench::{block_on_main, cpu_secs, free_port, print_table, wait_listening};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug, Parser)]
#[command(
    name = "cluster-bench",
    about = "peerweb nodes on Redis: the cost model"
)]
struct Cli {
    /// The peerweb binary to measure.
    #[arg(long, default_value = "target/release/peerweb")]
    peerweb_bin: PathBuf,
    /// Client pairs (a sender and its receiver).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Signals per second offered, in all.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Measured seconds per configuration (after one of warm-up).
    #[arg(long, default_value_t = 5)]
    secs: u64,
}

fn main() -> std::process::ExitCode {
    block_on_main("cluster-bench", run(Cli::parse()))
}

struct Redis {
    dir: PathBuf,
    proc: Child,
}

impl Redis {
    async fn start() -> anyhow::Result<Redis> {
        let dir =
            std::env::temp_dir().join(format!("peerweb-cluster-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut proc = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--unixsocket")
            .arg(dir.join("r.sock"))
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("redis-server (Debian package redis-server)")?;
        let mut lines = BufReader::new(proc.stdout.take().context("stdout")?).lines();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(l) = lines.next_line().await? {
                if l.to_ascii_lowercase()
                    .contains("ready to accept connections")
                {
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                    return Ok(());
                }
            }
            bail!("redis-server ended")
        })
        .await
        .context("redis-server did not start")??;
        Ok(Redis { dir, proc })
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("r.sock").display())
    }

    /// `INFO` counters: commands processed, and PUBLISH calls (scripts' included).
    async fn counters(&self) -> anyhow::Result<(u64, u64)> {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.dir.join("r.sock"))
            .arg("INFO")
            .arg("all")
            .output()
            .await
            .context("redis-cli")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |line: &str, key: &str| -> Option<u64> {
            line.split(',')
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        };
        let mut commands = 0;
        let mut publish = 0;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("total_commands_processed:") {
                commands = v.trim().parse()?;
            }
            if let Some(rest) = line.strip_prefix("cmdstat_publish:") {
                publish = field(rest, "calls=").unwrap_or(0);
            }
        }
        Ok((commands, publish))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.proc.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_node(
    cli: &Cli,
    redis: Option<&Redis>,
    name: &str,
) -> anyhow::Result<(Child, String)> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut c = Command::new(&cli.peerweb_bin);
    c.args(["serve", "--listen", &addr, "--no-turn", "--node-name", name])
        .args([
            "--max-msgs-per-sec",
            "100000",
            "--msg-burst",
            "100000",
            "--max-conns-per-ip",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(r) = redis {
        c.args(["--redis", &r.url()]);
    }
    let mut child = c.spawn().context("peerweb serve")?;
    wait_listening(&addr, &mut child).await?;
    Ok((child, format!("ws://{addr}/ws")))
}

async fn hello(url: &str, token: Option<&str>, last: Option<u64>) -> anyhow::Result<(Ws, Value)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let mut m = json!({"type":"hello","v":1,"acks":true});
    if let Some(t) = token {
        m["token"] = json!(t);
    }
    if let Some(n) = last {
        m["last"] = json!(n);
    }
    ws.send(Message::text(m.to_string())).await?;
    let w = next(&mut ws).await?;
    if w["type"] != "welcome" {
        bail!("no welcome: {w}");
    }
    Ok((ws, w))
}

async fn next(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no frame in 10 s")?
            .context("closed")??;
        if let Message::Text(t) = msg {
            return Ok(serde_json::from_str(&t)?);
        }
    }
}

async fn join(ws: &mut Ws, room: &str) -> anyhow::Result<()> {
    ws.send(Message::text(
        json!({"type":"join","room":room}).to_string(),
    ))
    .await?;
    loop {
        let f = next(ws).await?;
        if f["type"] == "joined" {
            return Ok(());
        }
    }
}

/// What one receiver saw: sequence numbers in arrival order, latencies (µs), the last `n`.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    last_n: Option<u64>,
    /// When the first signal after a resume arrived.
    resumed_at: Option<Instant>,
}

struct Run {
    nodes: usize,
    cpu_nodes_us: f64,
    cpu_redis_us: f64,
    commands: f64,
    publishes: f64,
    p50_us: f64,
    p99_us: f64,
    delivered: u64,
}

/// One configuration: `nodes` nodes (on Redis if `redis`), the load for `secs`; with `kill`,
/// one node is killed mid-run and its receivers resume elsewhere (returns the failover).
async fn measure(
    cli: &Cli,
    nodes_n: usize,
    with_redis: bool,
    kill: bool,
) -> anyhow::Result<(Run, Option<(Duration, u64, u64)>)> {
    let redis = if with_redis {
        Some(Redis::start().await?)
    } else {
        None
    };
    let mut nodes = Vec::new();
    for i in 0..nodes_n {
        nodes.push(start_node(cli, redis.as_ref(), &format!("n{i}")).await?);
    }
    let urls: Vec<String> = nodes.iter().map(|(_, u)| u.clone()).collect();
    let start = Instant::now();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let per_pair = Duration::from_secs_f64(cli.pairs as f64 / f64::from(cli.rate));
    for k in 0..cli.pairs {
        let (a_url, b_url) = (&urls[k % nodes_n], &urls[(k + 1) % nodes_n]);
        let (mut a, _) = hello(a_url, None, None).await?;
        let (mut b, wb) = hello(b_url, None, None).await?;
        let room = format!("b{k}");
        join(&mut a, &room).await?;
        join(&mut b, &room).await?;
        let to = wb["id"].as_str().context("id")?.to_owned();
        let token = wb["token"].as_str().context("token")?.to_owned();
        let seen = Arc::new(Mutex::new(Seen::default()));
        receivers.push((k, (k + 1) % nodes_n, token, seen.clone()));
        let (hist, stop2, measuring2) = (hist.clone(), stop.clone(), measuring.clone());
        // The receiver: latencies while measuring, an ack every 20.
        tokio::spawn(receive(b, seen, hist, measuring2, stop2.clone(), start));
        let stop3 = stop.clone();
        senders.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_pair);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut s = 0u64;
            while !stop3.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = start.elapsed().as_micros() as u64;
                let m = json!({"type":"signal","to":to,"data":{"s":s,"t":t,"candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host","sdpMid":"0"}}});
                if a.send(Message::text(m.to_string())).await.is_err() {
                    break;
                }
                s += 1;
            }
            s
        }));
    }
    // Warm-up, then the measured window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pids: Vec<u32> = nodes.iter().filter_map(|(c, _)| c.id()).collect();
    let redis_pid = redis.as_ref().and_then(|r| r.proc.id());
    let cpu = |pids: &[u32]| {
        pids.iter()
            .map(|p| cpu_secs(*p).unwrap_or(0.0))
            .sum::<f64>()
    };
    let count = |rs: &[(usize, usize, String, Arc<Mutex<Seen>>)]| {
        let rs = rs.to_vec();
        async move {
            let mut n = 0;
            for (_, _, _, s) in &rs {
                n += s.lock().await.seqs.len() as u64;
            }
            n
        }
    };
    let c0 = cpu(&pids);
    let r0 = redis_pid.map(|p| cpu_secs(p).unwrap_or(0.0)).unwrap_or(0.0);
    let k0 = match &redis {
        Some(r) => r.counters().await?,
        None => (0, 0),
    };
    let d0 = count(&receivers).await;
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(cli.secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let d1 = count(&receivers).await;
    let c1 = cpu(&pids);
    let r1 = redis_pid.map(|p| cpu_secs(p).unwrap_or(0.0)).unwrap_or(0.0);
    let k1 = match &redis {
        Some(r) => r.counters().await?,
        None => (0, 0),
    };
    let delivered = d1 - d0;
    let per = |x: f64| x / delivered.max(1) as f64;
    let h = hist.lock().await;
    let run = Run {
        nodes: nodes_n,
        cpu_nodes_us: per((c1 - c0) * 1e6),
        cpu_redis_us: per((r1 - r0) * 1e6),
        commands: per((k1.0 - k0.0) as f64),
        publishes: per((k1.1 - k0.1) as f64),
        p50_us: h.value_at_quantile(0.5) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
        delivered,
    };
    drop(h);
    let mut failover = None;
    if kill {
        // The node of the receivers of pairs 0, 3, 6, … (node 1) dies; they resume on node 2.
        let victim = 1;
        let killed_at = Instant::now();
        nodes[victim].0.start_kill()?;
        let _ = nodes[victim].0.wait().await;
        let mut resumed = Vec::new();
        for (_, node, token, seen) in &receivers {
            if *node != victim {
                continue;
            }
            let last = seen.lock().await.last_n;
            let (b, _) = hello(&urls[2], Some(token), last).await?;
            {
                let mut s = seen.lock().await;
                s.resumed_at = None;
            }
            let (hist, m, st) = (hist.clone(), measuring.clone(), stop.clone());
            tokio::spawn(receive(b, seen.clone(), hist, m, st, start));
            resumed.push(seen.clone());
        }
        // Until every resumed receiver has had a signal again (10 s at most).
        let mut worst = Duration::ZERO;
        for s in &resumed {
            let end = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(at) = s.lock().await.resumed_at {
                    worst = worst.max(at - killed_at);
                    break;
                }
                if Instant::now() > end {
                    bail!("a receiver got nothing after resuming");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        failover = Some((worst, 0, 0));
    }
    stop.store(true, Ordering::Relaxed);
    let mut sent = HashMap::new();
    for (k, h) in senders.into_iter().enumerate() {
        sent.insert(k, h.await?);
    }
    // Let the last signals land, then count what is missing or repeated.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut missing, mut repeated) = (0, 0);
    for (k, _, _, seen) in &receivers {
        let s = seen.lock().await;
        let mut seqs = s.seqs.clone();
        let before = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        repeated += (before - seqs.len()) as u64;
        let want = sent[k];
        // The last few may still be on their way when the senders stop: only gaps count.
        let top = seqs.last().map_or(0, |x| x + 1);
        let gap = top.min(want).saturating_sub(seqs.len() as u64);
        missing += gap;
    }
    if let Some(f) = &mut failover {
        f.1 = missing;
        f.2 = repeated;
    } else if missing + repeated > 0 {
        bail!("{missing} signals missing, {repeated} repeated");
    }
    Ok((run, failover))
}

async fn receive(
    mut b: Ws,
    seen: Arc<Mutex<Seen>>,
    hist: Arc<Mutex<Histogram<u64>>>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    start: Instant,
) {
    let mut since_ack = 0;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(3), b.next()).await {
        let Message::Text(t) = msg else { continue };
        let Ok(f) = serde_json::from_str::<Value>(&t) else {
            continue;
        };
        if f["type"] != "signal" {
            continue;
        }
        let now = start.elapsed().as_micros() as u64;
        let (Some(s), Some(t), Some(n)) = (
            f["data"]["s"].as_u64(),
            f["data"]["t"].as_u64(),
            f["n"].as_u64(),
        ) else {
            continue;
        };
        if measuring.load(Ordering::Relaxed) {
            let _ = hist.lock().await.record(now.saturating_sub(t).max(1));
        }
        {
            let mut g = seen.lock().await;
            if g.last_n.is_some_and(|l| n <= l) {
                continue;
            }
            g.last_n = Some(n);
            g.seqs.push(s);
            g.resumed_at.get_or_insert_with(Instant::now);
        }
        since_ack += 1;
        if since_ack >= 20 {
            since_ack = 0;
            let _ = b
                .send(Message::text(json!({"type":"ack","n":n}).to_string()))
                .await;
        }
    }
    // (Read until 3 s of quiet: `stop` ends only the senders.)
    let _ = stop;
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    println!(
        "cluster-bench: {} pairs, {} signals/s offered, {} s measured per configuration",
        cli.pairs, cli.rate, cli.secs
    );
    let mut runs = Vec::new();
    let mut names = Vec::new();
    for (nodes, redis) in [(1, false), (1, true), (2, true), (3, true)] {
        let (r, _) = measure(&cli, nodes, redis, false).await?;
        let name = if redis {
            format!("{nodes} node{} + Redis", if nodes > 1 { "s" } else { "" })
        } else {
            "1 node, no Redis".to_owned()
        };
        println!("  {name}: {} signals delivered in the window", r.delivered);
        names.push(name);
        runs.push(r);
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let row = |label: &str, f: &dyn Fn(&Run) -> f64, d: usize| {
        (label.to_owned(), runs.iter().map(f).collect::<Vec<_>>(), d)
    };
    print_table(
        &names,
        &[
            row("CPU per signal, nodes (µs)", &|r| r.cpu_nodes_us, 1),
            row("CPU per signal, Redis (µs)", &|r| r.cpu_redis_us, 1),
            row(
                "CPU per signal, total (µs)",
                &|r| r.cpu_nodes_us + r.cpu_redis_us,
                1,
            ),
            row("Redis commands per signal", &|r| r.commands, 2),
            row("PUBLISH per signal", &|r| r.publishes, 2),
            row("latency p50 (µs)", &|r| r.p50_us, 0),
            row("latency p99 (µs)", &|r| r.p99_us, 0),
            row("nodes", &|r| r.nodes as f64, 0),
        ],
    );
    let (_, failover) = measure(&cli, 3, true, true).await?;
    if let Some((t, missing, repeated)) = failover {
        println!(
            "\nfailover (3 nodes, SIGKILL of one; its receivers resume on another): {:.0} ms from the kill to the first signal after the resume; {missing} signals missing, {repeated} repeated",
            t.as_secs_f64() * 1000.0
        );
        if missing + repeated > 0 {
            bail!("the failover lost or repeated signals");
        }
    }
    Ok(())
}
