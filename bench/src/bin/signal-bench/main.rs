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
//! With `--tls` it measures peerweb three ways instead: plain WebSockets, its own TLS
//! (`--tls-cert`), and Debian's nginx terminating TLS in front of it (one worker process,
//! pinned with peerweb; its CPU and memory count with peerweb's), each also for TLS
//! handshakes per second and server CPU per handshake. The certificate is a throwaway CA's.
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
    /// Measure peerweb plain, over its own TLS, and behind nginx's TLS (instead of vs PeerJS).
    #[arg(long)]
    tls: bool,
    /// TLS handshakes made in the handshake phase (16 at a time).
    #[arg(long, default_value_t = 2_000)]
    handshakes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
enum Kind {
    Peerweb,
    Peerjs,
    PeerwebTls,
    NginxTls,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Peerweb => "peerweb",
            Kind::Peerjs => "PeerJS server",
            Kind::PeerwebTls => "peerweb, own TLS",
            Kind::NginxTls => "nginx TLS → peerweb",
        }
    }

    fn arg(self) -> &'static str {
        match self {
            Kind::Peerweb => "peerweb",
            Kind::Peerjs => "peerjs",
            Kind::PeerwebTls => "peerweb-tls",
            Kind::NginxTls => "nginx-tls",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Kind::PeerwebTls | Kind::NginxTls)
    }
}

/// A throwaway CA and a certificate it signs for `localhost`, in a temporary folder.
struct Certs {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn new() -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!("signal-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca_key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "signal-bench CA");
        let ca = p.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let leaf =
            CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &ca, &ca_key)?;
        let c = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&c.ca, ca.pem())?;
        std::fs::write(&c.cert, format!("{}{}", leaf.pem(), ca.pem()))?;
        std::fs::write(&c.key, key.serialize_pem())?;
        Ok(c)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client TLS configuration trusting only the CA in `ca` (PEM).
fn tls_client(ca: &std::path::Path) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    Ok(std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    ))
}

#[derive(Debug, Clone, Args)]
struct WorkerArgs {
    #[arg(long)]
    kind: Kind,
    /// The CA to trust: connect with `wss://` (the address is then `localhost:PORT`).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
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
    /// TLS handshakes per second and server CPU per handshake (NaN without TLS).
    handshakes_per_sec: f64,
    handshake_cpu_us: f64,
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
    let kinds: Vec<Kind> = match (args.only, args.tls) {
        (Some(k), _) => vec![k],
        (None, true) => vec![Kind::Peerweb, Kind::PeerwebTls, Kind::NginxTls],
        (None, false) => vec![Kind::Peerjs, Kind::Peerweb],
    };
    let certs = if kinds.iter().any(|k| k.tls()) {
        Some(Certs::new()?)
    } else {
        None
    };
    let mut scores = Vec::new();
    let mut rate = args.rate;
    for kind in kinds {
        let s = measure(&args, kind, &mut rate, certs.as_ref())
            .await
            .with_context(|| format!("measuring {}", kind.name()))?;
        scores.push((kind, s));
    }
    print_table(&args, &scores);
    Ok(())
}

async fn measure(
    args: &RunArgs,
    kind: Kind,
    rate: &mut f64,
    certs: Option<&Certs>,
) -> anyhow::Result<Score> {
    let port = free_port()?;
    let mut server = spawn_server(args, kind, port, certs).await?;
    // Clients name the certificate's host when they speak TLS.
    let (addr, ca) = match certs.filter(|_| kind.tls()) {
        Some(c) => (format!("localhost:{port}"), Some(c.ca.as_path())),
        None => (format!("127.0.0.1:{port}"), None),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut score = Score {
        wanted: args.idle + args.active,
        rss_base_kib: server.rss_kib()?,
        handshakes_per_sec: f64::NAN,
        handshake_cpu_us: f64::NAN,
        ..Score::default()
    };
    if let Some(ca) = ca {
        let client = tls_client(ca)?;
        let cpu0 = server.cpu_secs()?;
        let (n, secs) = handshakes(&client, port, args.handshakes).await?;
        score.handshakes_per_sec = n as f64 / secs;
        score.handshake_cpu_us = (server.cpu_secs()? - cpu0) * 1e6 / n.max(1) as f64;
        eprintln!(
            "{}: {n} TLS handshakes, {:.0}/s, server CPU {:.0} µs each",
            kind.name(),
            score.handshakes_per_sec,
            score.handshake_cpu_us
        );
    }

    // Workers: active clients spread evenly, idle ones fill up to `per_worker`.
    let total = args.idle + args.active;
    let n_workers = total.div_ceil(args.per_worker.max(10)).max(1);
    let mut workers = Vec::new();
    for w in 0..n_workers {
        let active = args.active / n_workers + usize::from(w < args.active % n_workers);
        let idle = args.idle / n_workers + usize::from(w < args.idle % n_workers);
        workers.push(spawn_worker(kind, &addr, ca, w, idle, active)?);
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
    score.rss_loaded_kib = server.rss_kib()?;

    // Saturation.
    let cpu0 = server.cpu_secs()?;
    let res = run_phase(
        &mut workers,
        &format!(
            "saturate {} {} {}",
            args.window, args.warmup_ms, args.measure_ms
        ),
    )
    .await?;
    let cpu = server.cpu_secs()? - cpu0;
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
    server.stop().await;
    Ok(score)
}

/// `n` TLS handshakes to 127.0.0.1:`port` (as `localhost`), 16 at a time: how many
/// succeeded, in how many seconds.
async fn handshakes(
    client: &std::sync::Arc<rustls::ClientConfig>,
    port: u16,
    n: usize,
) -> anyhow::Result<(usize, f64)> {
    let connector = tokio_rustls::TlsConnector::from(client.clone());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (connector, next) = (connector.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    continue;
                };
                let name =
                    rustls::pki_types::ServerName::try_from("localhost").expect("a valid name");
                if connector.connect(name, tcp).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await?;
    }
    if ok < n / 2 {
        bail!("only {ok} of {n} TLS handshakes succeeded");
    }
    Ok((ok, t0.elapsed().as_secs_f64()))
}

/// The processes serving one measurement (peerweb, and nginx in front of it): their CPU
/// and memory add up.
struct Served {
    children: Vec<Child>,
}

impl Served {
    /// Every pid, nginx's worker processes included (children of its master).
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.children.iter().filter_map(Child::id).collect();
        for p in pids.clone() {
            let children =
                std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        pids
    }

    fn cpu_secs(&self) -> anyhow::Result<f64> {
        self.pids().into_iter().map(cpu_secs).sum()
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        self.pids().into_iter().map(rss_kib).sum()
    }

    /// SIGTERM first, so that nginx's master takes its workers down with it (a SIGKILLed
    /// master leaves them running); SIGKILL after 5 s.
    async fn stop(&mut self) {
        for c in &mut self.children {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(5), c.wait())
                .await
                .is_err()
            {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
    }
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
    ca: Option<&std::path::Path>,
    w: usize,
    idle: usize,
    active: usize,
) -> anyhow::Result<Worker> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["worker", "--kind", kind.arg(), "--addr", addr]);
    if let Some(ca) = ca {
        cmd.arg("--tls-ca").arg(ca);
    }
    let mut child = cmd
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

/// Starts what `kind` measures on `port`, pinned, and waits until it listens.
async fn spawn_server(
    args: &RunArgs,
    kind: Kind,
    port: u16,
    certs: Option<&Certs>,
) -> anyhow::Result<Served> {
    let addr = format!("127.0.0.1:{port}");
    let mut children = Vec::new();
    match (kind, certs) {
        (Kind::NginxTls, Some(c)) => {
            // peerweb on another port, nginx in front of it on this one.
            let inner = free_port()?;
            let mut pw = spawn_one(args, Kind::Peerweb, inner, None)?;
            wait_listening(&format!("127.0.0.1:{inner}"), &mut pw).await?;
            children.push(pw);
            let conf = c.dir.join("nginx.conf");
            let d = c.dir.display();
            std::fs::write(
                &conf,
                format!(
                    "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
                     events {{ worker_connections 65536; }}
                     worker_rlimit_nofile 200000;
                     http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};
                       fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
                       map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
                       server {{ listen 127.0.0.1:{port} ssl; server_name localhost;
                         ssl_certificate {}; ssl_certificate_key {};
                         location / {{ proxy_pass http://127.0.0.1:{inner};
                           proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;
                           proxy_set_header Connection $connection_upgrade;
                           proxy_set_header Host $host; proxy_read_timeout 1h;
                           proxy_buffering off; }} }} }}",
                    c.cert.display(),
                    c.key.display()
                ),
            )?;
            let argv = [
                "nginx",
                "-c",
                &conf.display().to_string(),
                "-p",
                &d.to_string(),
            ]
            .map(String::from);
            children.push(spawn_pinned(&args.server_cpu, &argv).context("cannot start nginx")?);
        }
        _ => children.push(spawn_one(args, kind, port, certs)?),
    }
    let mut served = Served { children };
    if let Some(last) = served.children.last_mut() {
        wait_listening(&addr, last).await?;
    }
    Ok(served)
}

fn spawn_one(
    args: &RunArgs,
    kind: Kind,
    port: u16,
    certs: Option<&Certs>,
) -> anyhow::Result<Child> {
    let argv: Vec<String> = match kind {
        Kind::Peerweb | Kind::PeerwebTls | Kind::NginxTls => [
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
            "--tls-handshakes-per-ip",
            "1000000",
        ]
        .map(String::from)
        .into_iter()
        .chain(
            certs
                .filter(|_| kind == Kind::PeerwebTls)
                .into_iter()
                .flat_map(|c| {
                    [
                        "--tls-cert".to_owned(),
                        c.cert.display().to_string(),
                        "--tls-key".to_owned(),
                        c.key.display().to_string(),
                    ]
                }),
        )
        .collect(),
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
        (
            "TLS handshakes per second".into(),
            get(&|s| s.handshakes_per_sec),
            0,
        ),
        (
            "server CPU per TLS handshake, µs".into(),
            get(&|s| s.handshake_cpu_us),
            0,
        ),
    ];
    peerweb_bench::print_table(&names, &rows);
}
