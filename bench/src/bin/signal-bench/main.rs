//! `signal-bench`: the signaling server under load, peerweb and the PeerJS server side by side.
//!
//! Run it with `bench/run` (builds, installs the PeerJS server from its lockfile, pins the
//! server to one core and the load to the other). For each server in turn it:
//! 1. starts the server and records its resident memory (RSS);
//! 2. opens `--idle + --active` WebSocket clients in rooms of 2–10 members, spread over worker
//!    processes (whole rooms per worker, so latency is timed on one clock), and records RSS
//!    again: connections held and RSS per connection;
//! 3. saturation: every active client keeps `--window` signal messages in flight to its
//!    room-mates; relayed messages per second, latency percentiles, server CPU per message;
//! 4. fixed rate: the same offered load for both servers (half of the PeerJS server's saturated
//!    rate unless `--rate` says), for latency at equal load.
//!
//! Messages look like real signaling: ICE candidates, and one SDP offer in ten (~1.5 KB).

mod worker;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use peerweb_bench::{cpu_secs, free_port, open_file_limit, rss_kib, spawn_pinned, wait_listening};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

#[derive(Debug, Parser)]
#[command(
    name = "signal-bench",
    about = "peerweb signaling vs the PeerJS server, side by side"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Internal: one load-generating worker process.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// The peerweb binary to measure.
    #[arg(long, default_value = "target/release/peerweb")]
    peerweb_bin: PathBuf,
    /// Folder with the PeerJS server (`server.mjs` and its node_modules).
    #[arg(long, default_value = "bench/peerjs")]
    peerjs_dir: PathBuf,
    /// Idle clients (joined to rooms, sending nothing).
    #[arg(long, default_value_t = 18_000)]
    idle: usize,
    /// Active clients (relaying during the load phases).
    #[arg(long, default_value_t = 1_500)]
    active: usize,
    /// Clients per worker process (each process is bound by the open-file limit).
    #[arg(long, default_value_t = 4_000)]
    per_worker: usize,
    /// Messages each active client keeps in flight during saturation.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Offered load of the fixed-rate phase, messages/s (0: half the PeerJS saturated rate).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 1_000)]
    warmup_ms: u64,
    #[arg(long, default_value_t = 5_000)]
    measure_ms: u64,
    /// CPU the server is pinned to (`taskset`); empty to not pin.
    #[arg(long, default_value = "1")]
    server_cpu: String,
    /// Only this server (default: both).
    #[arg(long)]
    only: Option<Kind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
enum Kind {
    Peerweb,
    Peerjs,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Peerweb => "peerweb",
            Kind::Peerjs => "PeerJS server",
        }
    }
}

#[derive(Debug, Clone, Args)]
struct WorkerArgs {
    #[arg(long)]
    kind: Kind,
    #[arg(long)]
    addr: String,
    #[arg(long)]
    worker: usize,
    #[arg(long)]
    idle: usize,
    #[arg(long)]
    active: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkerResult {
    received: u64,
    sent: u64,
    secs: f64,
    /// hdrhistogram V2, base64: relay latency in microseconds.
    hist: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Worker(w)) => peerweb_bench::block_on_main("signal-bench", worker::run(w)),
        None => peerweb_bench::block_on_main("signal-bench", orchestrate(cli.run)),
    }
}

/// What one server scored.
#[derive(Debug, Default)]
struct Score {
    held: usize,
    wanted: usize,
    rss_base_kib: u64,
    rss_loaded_kib: u64,
    sat_rate: f64,
    sat_p50_us: u64,
    sat_p99_us: u64,
    sat_cpu_us_per_msg: f64,
    sat_cpu_util: f64,
    fixed_rate: f64,
    fixed_delivered: f64,
    fixed_p50_us: u64,
    fixed_p99_us: u64,
    fixed_max_us: u64,
}

async fn orchestrate(args: RunArgs) -> anyhow::Result<()> {
    let nofile = open_file_limit().unwrap_or(0);
    let total = args.idle + args.active;
    if nofile > 0 && total + 64 > nofile as usize {
        bail!(
            "{total} connections need more than this process's open-file limit ({nofile}); \
             lower --idle/--active or raise `ulimit -n`"
        );
    }
    eprintln!(
        "signal-bench: {total} clients ({} idle, {} active, rooms of 2-10), window {}, \
         warmup {} ms, measure {} ms; open-file limit {nofile}",
        args.idle, args.active, args.window, args.warmup_ms, args.measure_ms
    );
    let kinds: Vec<Kind> = match args.only {
        Some(k) => vec![k],
        None => vec![Kind::Peerjs, Kind::Peerweb],
    };
    let mut scores = Vec::new();
    let mut rate = args.rate;
    for kind in kinds {
        let s = measure(&args, kind, &mut rate)
            .await
            .with_context(|| format!("measuring {}", kind.name()))?;
        scores.push((kind, s));
    }
    print_table(&args, &scores);
    Ok(())
}

async fn measure(args: &RunArgs, kind: Kind, rate: &mut f64) -> anyhow::Result<Score> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_server(args, kind, port)?;
    let pid = server.id().context("server has no pid")?;
    wait_listening(&addr, &mut server).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut score = Score {
        wanted: args.idle + args.active,
        rss_base_kib: rss_kib(pid)?,
        ..Score::default()
    };

    // Workers: active clients spread evenly, idle ones fill up to `per_worker`.
    let total = args.idle + args.active;
    let n_workers = total.div_ceil(args.per_worker.max(10)).max(1);
    let mut workers = Vec::new();
    for w in 0..n_workers {
        let active = args.active / n_workers + usize::from(w < args.active % n_workers);
        let idle = args.idle / n_workers + usize::from(w < args.idle % n_workers);
        workers.push(spawn_worker(kind, &addr, w, idle, active)?);
    }
    let t0 = Instant::now();
    for w in &mut workers {
        let line = w.line().await?;
        let n: usize = line
            .strip_prefix("ready ")
            .context("worker did not get ready")?
            .parse()?;
        score.held += n;
    }
    eprintln!(
        "{}: {} of {} clients connected and joined in {:.1} s",
        kind.name(),
        score.held,
        score.wanted,
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    score.rss_loaded_kib = rss_kib(pid)?;

    // Saturation.
    let cpu0 = cpu_secs(pid)?;
    let res = run_phase(
        &mut workers,
        &format!(
            "saturate {} {} {}",
            args.window, args.warmup_ms, args.measure_ms
        ),
    )
    .await?;
    let cpu = cpu_secs(pid)? - cpu0;
    score.sat_rate = res.received as f64 / res.secs;
    score.sat_p50_us = res.hist.value_at_quantile(0.50);
    score.sat_p99_us = res.hist.value_at_quantile(0.99);
    // The CPU window covers warmup, measure and the drain; count the messages of all three
    // at the measured rate.
    let phase_secs = (args.warmup_ms + args.measure_ms + 500) as f64 / 1000.0;
    score.sat_cpu_us_per_msg = cpu * 1e6 / (score.sat_rate * phase_secs).max(1.0);
    score.sat_cpu_util = cpu / phase_secs;
    eprintln!(
        "{}: saturated {:.0} msg/s, p50 {} us, p99 {} us, server CPU {:.0}%",
        kind.name(),
        score.sat_rate,
        score.sat_p50_us,
        score.sat_p99_us,
        score.sat_cpu_util * 100.0
    );

    // Fixed rate: the reference (first measured) sets it.
    if *rate <= 0.0 {
        *rate = (score.sat_rate / 2.0).max(100.0).round();
    }
    let per_worker = *rate / n_workers as f64;
    let res = run_phase(
        &mut workers,
        &format!("rate {per_worker} {} {}", args.warmup_ms, args.measure_ms),
    )
    .await?;
    score.fixed_rate = *rate;
    score.fixed_delivered = res.received as f64 / res.secs;
    score.fixed_p50_us = res.hist.value_at_quantile(0.50);
    score.fixed_p99_us = res.hist.value_at_quantile(0.99);
    score.fixed_max_us = res.hist.max();
    eprintln!(
        "{}: at {:.0} msg/s offered: delivered {:.0} msg/s, p50 {} us, p99 {} us",
        kind.name(),
        score.fixed_rate,
        score.fixed_delivered,
        score.fixed_p50_us,
        score.fixed_p99_us
    );

    for w in &mut workers {
        let _ = w.stdin.write_all(b"quit\n").await;
    }
    for w in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await;
        let _ = w.child.start_kill();
    }
    server.start_kill()?;
    let _ = server.wait().await;
    Ok(score)
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn line(&mut self) -> anyhow::Result<String> {
        self.lines
            .next_line()
            .await?
            .context("worker exited (see its error above)")
    }
}

struct PhaseResult {
    received: u64,
    secs: f64,
    hist: Histogram<u64>,
}

async fn run_phase(workers: &mut [Worker], cmd: &str) -> anyhow::Result<PhaseResult> {
    for w in workers.iter_mut() {
        w.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        w.stdin.flush().await?;
    }
    let mut total = PhaseResult {
        received: 0,
        secs: 0.0,
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for w in workers.iter_mut() {
        let line = w.line().await?;
        let json = line
            .strip_prefix("result ")
            .context("worker gave no result")?;
        let r: WorkerResult = serde_json::from_str(json)?;
        let bytes = data_encoding::BASE64.decode(r.hist.as_bytes())?;
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice())?;
        total.hist.add(&h)?;
        total.received += r.received;
        total.secs = total.secs.max(r.secs);
    }
    Ok(total)
}

fn spawn_worker(
    kind: Kind,
    addr: &str,
    w: usize,
    idle: usize,
    active: usize,
) -> anyhow::Result<Worker> {
    let exe = std::env::current_exe()?;
    let kind_arg = match kind {
        Kind::Peerweb => "peerweb",
        Kind::Peerjs => "peerjs",
    };
    let mut child = Command::new(exe)
        .args(["worker", "--kind", kind_arg, "--addr", addr])
        .args(["--worker", &w.to_string()])
        .args(["--idle", &idle.to_string(), "--active", &active.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a worker")?;
    let stdin = child.stdin.take().context("worker stdin")?;
    let stdout = child.stdout.take().context("worker stdout")?;
    Ok(Worker {
        child,
        stdin,
        lines: BufReader::new(stdout).lines(),
    })
}

fn spawn_server(args: &RunArgs, kind: Kind, port: u16) -> anyhow::Result<Child> {
    let argv: Vec<String> = match kind {
        Kind::Peerweb => [
            args.peerweb_bin.display().to_string().as_str(),
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--no-turn",
            // The benchmark measures relay capacity, not the per-client limits: one address
            // opens every connection, and each client sends far above the default 50
            // messages/s.
            "--max-conns-per-ip",
            "0",
            "--max-conns",
            "1000000",
            "--max-msgs-per-sec",
            "1000000",
            "--msg-burst",
            "1000000",
        ]
        .map(String::from)
        .to_vec(),
        Kind::Peerjs => {
            let dir = &args.peerjs_dir;
            if !dir.join("node_modules/peer").is_dir() {
                bail!(
                    "{} has no node_modules/peer (run `npm ci` there, or use bench/run)",
                    dir.display()
                );
            }
            vec![
                "node".into(),
                dir.join("server.mjs").display().to_string(),
                port.to_string(),
            ]
        }
    };
    spawn_pinned(&args.server_cpu, &argv).with_context(|| format!("cannot start {}", kind.name()))
}

fn print_table(args: &RunArgs, scores: &[(Kind, Score)]) {
    let names: Vec<&str> = scores.iter().map(|(k, _)| k.name()).collect();
    let get = |f: &dyn Fn(&Score) -> f64| scores.iter().map(|(_, s)| f(s)).collect::<Vec<_>>();
    let offered = scores.first().map(|(_, s)| s.fixed_rate).unwrap_or(0.0);
    let rows = vec![
        (
            format!("connections held (of {})", args.idle + args.active),
            get(&|s| s.held as f64),
            0,
        ),
        (
            "RSS at start, MiB".into(),
            get(&|s| s.rss_base_kib as f64 / 1024.0),
            1,
        ),
        (
            "RSS with all connections, MiB".into(),
            get(&|s| s.rss_loaded_kib as f64 / 1024.0),
            1,
        ),
        (
            "RSS per connection, KiB".into(),
            get(&|s| s.rss_loaded_kib.saturating_sub(s.rss_base_kib) as f64 / s.held.max(1) as f64),
            1,
        ),
        (
            "saturated relay rate, msg/s".into(),
            get(&|s| s.sat_rate),
            0,
        ),
        (
            "saturated p50 latency, µs".into(),
            get(&|s| s.sat_p50_us as f64),
            0,
        ),
        (
            "saturated p99 latency, µs".into(),
            get(&|s| s.sat_p99_us as f64),
            0,
        ),
        (
            "server CPU per relayed message, µs".into(),
            get(&|s| s.sat_cpu_us_per_msg),
            1,
        ),
        (
            "server CPU use when saturated, %".into(),
            get(&|s| s.sat_cpu_util * 100.0),
            0,
        ),
        (
            format!("delivered at {offered:.0} msg/s offered, msg/s"),
            get(&|s| s.fixed_delivered),
            0,
        ),
        (
            "p50 latency at that load, µs".into(),
            get(&|s| s.fixed_p50_us as f64),
            0,
        ),
        (
            "p99 latency at that load, µs".into(),
            get(&|s| s.fixed_p99_us as f64),
            0,
        ),
        (
            "max latency at that load, µs".into(),
            get(&|s| s.fixed_max_us as f64),
            0,
        ),
    ];
    peerweb_bench::print_table(&names, &rows);
}
