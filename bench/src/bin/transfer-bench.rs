//! transfer-bench: `peerweb send` → `peerweb receive` against magic-wormhole (with its
//! mailbox server and transit relay run locally) and a raw TCP copy as the physical limit, in
//! one run: the same file, each tool's receiver timed from its start to its exit (setup
//! included, as a user waits for it), the receiver's largest resident set and the CPU time
//! of each end per GB moved. `--baseline BIN` measures a second peerweb binary in the same
//! rounds (an A/B on this noisy machine: the ratio between two columns of one run holds
//! where absolute rates do not).
//!
//! Everything runs inside network namespaces this process creates and deletes: one with only
//! loopback, or with `--rtt-ms N` two joined by the emulated link of `peerweb_bench::netlab`
//! (sender and servers on one side, receiver on the other). Needs root. Run it through
//! `bench/run-transfer`, which builds and installs what it needs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use peerweb_bench::netlab::{self, ip};
use peerweb_bench::{cpu_secs, rss_kib};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(Debug, Parser)]
#[command(about = "peerweb send/receive vs magic-wormhole vs raw TCP: time to receive one file")]
struct Args {
    /// Size of the file sent.
    #[arg(long, default_value_t = 256 << 20)]
    bytes: u64,
    /// Rounds; the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Emulate a link with this round-trip time (ms) between two namespaces.
    #[arg(long)]
    rtt_ms: Option<u64>,
    /// The peerweb binary.
    #[arg(long, default_value = "target/release/peerweb")]
    peerweb: String,
    /// Another peerweb binary, measured in the same rounds as a fourth column.
    #[arg(long)]
    baseline: Option<String>,
    /// `--send-window` for peerweb (bytes); its default when absent.
    #[arg(long)]
    window: Option<u32>,
    /// A Python venv with magic-wormhole, magic-wormhole-mailbox-server and
    /// magic-wormhole-transit-relay (`bench/run-transfer` makes it).
    #[arg(long, default_value = "target/wormhole-venv")]
    wormhole: String,
    /// Internal: one side of the raw TCP copy.
    #[arg(long, hide = true, value_enum)]
    role: Option<Role>,
    #[arg(long, hide = true, default_value = "")]
    at: String,
    #[arg(long, hide = true, default_value = "")]
    file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    TcpSend,
    TcpRecv,
}

/// Where the sending side (and the servers) and the receiving side run.
struct Places {
    send_ns: String,
    recv_ns: String,
    send_ip: &'static str,
    loopback: bool,
}

/// A namespace with only loopback; deleted on drop.
struct LoopNs(String);

impl Drop for LoopNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.0]);
    }
}

fn in_ns(ns: &str, prog: &str, args: &[String]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, prog]).args(args);
    c.kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// The CPU seconds a process has used, sampled every 10 ms until it is gone; `last` is
/// the latest sample (the final 10 ms may be missing: noise next to seconds).
struct CpuWatch(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl CpuWatch {
    fn of(child: &Child) -> Self {
        use std::sync::atomic::Ordering;
        let cell = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        if let Some(pid) = child.id() {
            let c = cell.clone();
            tokio::spawn(async move {
                // Bounded: a process this bench starts lives at most 15 minutes.
                for _ in 0..90_000 {
                    match cpu_secs(pid) {
                        Ok(s) => c.store(s.to_bits(), Ordering::Relaxed),
                        Err(_) => break,
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        Self(cell)
    }

    fn last(&self) -> f64 {
        f64::from_bits(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Waits for the receiver to exit while sampling its resident set and CPU time.
async fn time_child(mut child: Child, limit: Duration) -> anyhow::Result<Score> {
    let start = Instant::now();
    let pid = child.id().unwrap_or(0);
    let cpu = CpuWatch::of(&child);
    let mut max_rss = 0;
    // Drain both pipes (progress output must not block the child); keep stderr's tail.
    if let Some(out) = child.stdout.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(_)) = lines.next_line().await {}
        });
    }
    let err_tail = child.stderr.take().map(|e| {
        tokio::spawn(async move {
            let mut tail = String::new();
            let mut lines = BufReader::new(e).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tail.push_str(&l);
                tail.push('\n');
                if tail.len() > 4096 {
                    // At a character boundary: progress bars draw with multi-byte ones.
                    let mut cut = tail.len() - 4096;
                    while !tail.is_char_boundary(cut) {
                        cut += 1;
                    }
                    tail.drain(..cut);
                }
            }
            tail
        })
    });
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                let err = match err_tail {
                    Some(t) => t.await.unwrap_or_default(),
                    None => String::new(),
                };
                bail!("receiver failed ({st}): {}", err.trim());
            }
            return Ok(Score {
                secs: start.elapsed().as_secs_f64(),
                rss_kib: max_rss,
                cpu_recv: cpu.last(),
                cpu_send: 0.0,
            });
        }
        if start.elapsed() > limit {
            bail!("receiver took longer than {limit:?}");
        }
        max_rss = max_rss.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn first_line(child: &mut Child) -> anyhow::Result<String> {
    let out = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(out).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("timed out waiting for the sender")??
        .context("the sender printed nothing")?;
    // Keep draining so the sender never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(line)
}

/// Waits until a TCP port answers inside `ns`.
async fn wait_port(ns: &str, addr: &str, port: u16) -> anyhow::Result<()> {
    for _ in 0..200 {
        let ok = Command::new("ip")
            .args(["netns", "exec", ns, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{addr}/{port}"))
            .stderr(Stdio::null())
            .status()
            .await?
            .success();
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr}:{port} in {ns}")
}

#[derive(Debug, Default, Clone, Copy)]
struct Score {
    secs: f64,
    rss_kib: u64,
    /// CPU seconds of the receiving and the sending process.
    cpu_recv: f64,
    cpu_send: f64,
}

fn me() -> anyhow::Result<String> {
    Ok(std::env::current_exe()?.to_string_lossy().into_owned())
}

async fn tcp(args: &Args, p: &Places, file: &Path, out: &Path) -> anyhow::Result<Score> {
    let at = format!("{}:9000", p.send_ip);
    let arg = |role: &str, f: &Path| -> Vec<String> {
        vec![
            "--role".into(),
            role.into(),
            "--at".into(),
            at.clone(),
            "--file".into(),
            f.display().to_string(),
        ]
    };
    let mut src = in_ns(&p.send_ns, &me()?, &arg("tcp-send", file)).spawn()?;
    let src_cpu = CpuWatch::of(&src);
    first_line(&mut src).await?;
    let sink = in_ns(&p.recv_ns, &me()?, &arg("tcp-recv", out)).spawn()?;
    let mut score = time_child(sink, Duration::from_secs(600)).await?;
    let _ = src.wait().await;
    score.cpu_send = src_cpu.last();
    check_size(out, args.bytes)?;
    Ok(score)
}

async fn peerweb(
    args: &Args,
    bin: &str,
    p: &Places,
    file: &Path,
    out: &Path,
) -> anyhow::Result<Score> {
    let server = format!("http://{}:8080", p.send_ip);
    let serve = vec![
        "serve".into(),
        "--listen".into(),
        format!("{}:8080", p.send_ip),
        "--no-turn".into(),
    ];
    let mut srv = in_ns(&p.send_ns, bin, &serve).spawn()?;
    wait_port(&p.send_ns, p.send_ip, 8080).await?;
    let mut net = vec!["--no-stun".to_owned(), "--no-turn".to_owned()];
    if p.loopback {
        net.push("--allow-loopback".into());
    }
    if let Some(w) = args.window {
        net.extend(["--send-window".into(), w.to_string()]);
    }
    let mut send_args = vec![
        "send".into(),
        "--server".into(),
        server.clone(),
        "--json".into(),
    ];
    send_args.extend(net.iter().cloned());
    send_args.push(file.display().to_string());
    let mut sender = in_ns(&p.send_ns, bin, &send_args).spawn()?;
    let sender_cpu = CpuWatch::of(&sender);
    let line = first_line(&mut sender).await?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    let code = v["code"].as_str().context("no code")?.to_owned();
    let mut recv_args = vec![
        "receive".into(),
        code,
        "--server".into(),
        server,
        "--yes".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    recv_args.extend(net);
    let receiver = in_ns(&p.recv_ns, bin, &recv_args).spawn()?;
    let mut score = time_child(receiver, Duration::from_secs(900)).await?;
    let _ = sender.wait().await;
    score.cpu_send = sender_cpu.last();
    let _ = srv.kill().await;
    let name = file.file_name().context("file name")?;
    check_size(&out.join(name), args.bytes)?;
    Ok(score)
}

async fn wormhole(
    args: &Args,
    p: &Places,
    file: &Path,
    out: &Path,
    round: usize,
) -> anyhow::Result<Score> {
    let bin = |b: &str| format!("{}/bin/{b}", args.wormhole);
    let twist = |what: &str, port: u16| -> Vec<String> {
        vec![
            what.into(),
            format!("--port=tcp:{port}:interface={}", p.send_ip),
        ]
    };
    // The mailbox keeps its state next to the received files, not in the working directory.
    let db = out.with_extension("mailbox.sqlite");
    let mut mailbox_args = twist("wormhole-mailbox", 4000);
    mailbox_args.push(format!("--channel-db={}", db.display()));
    let mut mailbox = in_ns(&p.send_ns, &bin("twist"), &mailbox_args).spawn()?;
    let mut relay = in_ns(&p.send_ns, &bin("twist"), &twist("transitrelay", 4001)).spawn()?;
    wait_port(&p.send_ns, p.send_ip, 4000).await?;
    wait_port(&p.send_ns, p.send_ip, 4001).await?;
    let common = vec![
        "--relay-url".to_owned(),
        format!("ws://{}:4000/v1", p.send_ip),
        "--transit-helper".into(),
        format!("tcp:{}:4001", p.send_ip),
    ];
    let code = format!("{}-bench-code", round + 1);
    let mut s = common.clone();
    s.extend([
        "send".into(),
        "--code".into(),
        code.clone(),
        file.display().to_string(),
    ]);
    let mut sender = in_ns(&p.send_ns, &bin("wormhole"), &s).spawn()?;
    let sender_cpu = CpuWatch::of(&sender);
    // The sender claims the code within a second (local mailbox).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut r = common;
    let dest = out.join("wormhole.bin");
    r.extend([
        "receive".into(),
        "--accept-file".into(),
        "--output-file".into(),
        dest.display().to_string(),
        code,
    ]);
    let receiver = in_ns(&p.recv_ns, &bin("wormhole"), &r).spawn()?;
    let score = time_child(receiver, Duration::from_secs(900)).await;
    // Read before the kill: the sender's work is done once the receiver has everything.
    let send_cpu = sender_cpu.last();
    let _ = sender.kill().await;
    let _ = mailbox.kill().await;
    let _ = relay.kill().await;
    let mut score = score?;
    score.cpu_send = send_cpu;
    check_size(&dest, args.bytes)?;
    Ok(score)
}

fn check_size(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let got = std::fs::metadata(path)
        .with_context(|| format!("{} missing", path.display()))?
        .len();
    if got != bytes {
        bail!("{} has {got} bytes, not {bytes}", path.display());
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn role(role: Role, args: &Args) -> anyhow::Result<()> {
    match role {
        Role::TcpSend => {
            let l = tokio::net::TcpListener::bind(&args.at).await?;
            println!("ready");
            let (mut sock, _) = l.accept().await?;
            let mut f = tokio::fs::File::open(&args.file).await?;
            tokio::io::copy(&mut f, &mut sock).await?;
        }
        Role::TcpRecv => {
            let mut sock = tokio::net::TcpStream::connect(&args.at).await?;
            let mut f = tokio::fs::File::create(&args.file).await?;
            tokio::io::copy(&mut sock, &mut f).await?;
            use tokio::io::AsyncWriteExt;
            f.flush().await?;
        }
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    if let Some(r) = args.role {
        return role(r, &args).await;
    }
    let work = std::env::temp_dir().join(format!("peerweb-transfer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = measure(&args, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn measure(args: &Args, work: &Path) -> anyhow::Result<()> {
    let file = work.join("payload.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        let mut left = args.bytes;
        while left > 0 {
            for b in block.chunks_mut(8) {
                // xorshift: incompressible, quick to make.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
    }
    let (_lab, _lo, places) = match args.rtt_ms {
        Some(rtt) => {
            let lab = netlab::build(Duration::from_millis(rtt))?;
            let p = Places {
                send_ns: lab.a.clone(),
                recv_ns: lab.b.clone(),
                send_ip: netlab::A,
                loopback: false,
            };
            (Some(lab), None, p)
        }
        None => {
            let ns = format!("tbl{}", std::process::id() % 100_000);
            ip(&["netns", "add", &ns])?;
            let lo = LoopNs(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let p = Places {
                send_ns: ns.clone(),
                recv_ns: ns,
                send_ip: "127.0.0.1",
                loopback: true,
            };
            (None, Some(lo), p)
        }
    };
    let link = args
        .rtt_ms
        .map_or("loopback".to_owned(), |r| format!("{r} ms RTT link"));
    eprintln!(
        "transfer-bench: {link}, {} rounds of {:.0} MB",
        args.rounds,
        args.bytes as f64 / 1e6
    );
    let mut names = vec!["raw TCP", "magic-wormhole", "peerweb"];
    if args.baseline.is_some() {
        names.push("peerweb (baseline)");
    }
    let mut scores: Vec<Vec<Score>> = vec![Vec::new(); names.len()];
    for round in 0..args.rounds {
        for (i, name) in names.iter().enumerate() {
            let out: PathBuf = work.join(format!("out-{round}-{i}"));
            std::fs::create_dir_all(&out)?;
            let s = match (i, &args.baseline) {
                (0, _) => tcp(args, &places, &file, &out.join("tcp.bin")).await,
                (1, _) => wormhole(args, &places, &file, &out, round).await,
                (3, Some(b)) => peerweb(args, b, &places, &file, &out).await,
                _ => peerweb(args, &args.peerweb, &places, &file, &out).await,
            }
            .with_context(|| format!("{name}, round {}", round + 1))?;
            eprintln!(
                "  {name}: {:.2} s, {:.1} MB/s, receiver RSS {:.0} MiB, CPU {:.2} s receiving + {:.2} s sending",
                s.secs,
                args.bytes as f64 / 1e6 / s.secs,
                s.rss_kib as f64 / 1024.0,
                s.cpu_recv,
                s.cpu_send,
            );
            scores[i].push(s);
            let _ = std::fs::remove_dir_all(&out);
        }
    }
    let gb = args.bytes as f64 / 1e9;
    let col = |f: &dyn Fn(&Score) -> f64| -> Vec<f64> {
        scores
            .iter()
            .map(|s| median(s.iter().map(f).collect()))
            .collect()
    };
    let rows = [
        ("time to receive, s", col(&|x| x.secs), 2),
        ("rate, MB/s", col(&|x| args.bytes as f64 / 1e6 / x.secs), 1),
        (
            "receiver max RSS, MiB",
            col(&|x| x.rss_kib as f64 / 1024.0),
            0,
        ),
        ("receiver CPU, s/GB", col(&|x| x.cpu_recv / gb), 2),
        ("sender CPU, s/GB", col(&|x| x.cpu_send / gb), 2),
    ];
    println!();
    println!(
        "transfer of {:.0} MB, {link} (medians of {})",
        args.bytes as f64 / 1e6,
        args.rounds
    );
    println!();
    let base = args.baseline.is_some();
    print!(
        "| metric | {} | peerweb / magic-wormhole | peerweb / raw TCP |",
        names.join(" | ")
    );
    println!("{}", if base { " peerweb / baseline |" } else { "" });
    println!(
        "|---|{}---|---|{}",
        "---|".repeat(names.len()),
        if base { "---|" } else { "" }
    );
    for (label, v, d) in rows {
        print!("| {label} |");
        for x in &v {
            print!(" {x:.d$} |");
        }
        print!(" {:.2}x | {:.3}x |", v[2] / v[1], v[2] / v[0]);
        if base {
            print!(" {:.3}x |", v[2] / v[3]);
        }
        println!();
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("transfer-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("transfer-bench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
