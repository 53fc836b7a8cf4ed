//! peer-bench: the native peer (str0m, through `peerweb-net`) against libdatachannel (npm
//! `node-datachannel`) and raw TCP as the physical limit, in one run on loopback.
//!
//! For each stack: setup time (offer created → channel open) and the rate of one reliable,
//! ordered channel carrying `--bytes` in `--msg`-byte messages with backpressure, plus the
//! CPU seconds both ends spent per GB. Prints a markdown table with ratios (medians of
//! `--rounds`). Run it through `bench/run-peer`, which builds and installs what it needs.
//! All traffic stays on 127.0.0.1.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use peerweb_bench::{cpu_secs, free_port, spawn_pinned, wait_listening};
use peerweb_net::{Node, Options};
use peerweb_peer::{Event, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
#[command(about = "Native peer vs libdatachannel vs raw TCP: setup time and channel throughput")]
struct Args {
    /// Bytes to send per throughput run.
    #[arg(long, default_value_t = 256 << 20)]
    bytes: usize,
    /// Message size.
    #[arg(long, default_value_t = 16 << 10)]
    msg: usize,
    /// Rounds; the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// SCTP send window of the native peer (str0m's max buffered amount), bytes.
    #[arg(long, default_value_t = Settings::default().send_window)]
    window: usize,
    /// Also measure the native peer at these windows (comma-separated), for tuning.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<usize>,
    /// The peerweb binary (for the signaling server).
    #[arg(long, default_value = "target/release/peerweb")]
    peerweb: String,
    /// Run the native peers on a one-thread tokio runtime (default: multi-threaded, as
    /// `peerweb join` does): less CPU per GB, but both peers then share one core.
    #[arg(long)]
    single_thread: bool,
    /// Directory with node-datachannel installed and peer.mjs.
    #[arg(long, default_value = "bench/datachannel")]
    datachannel: String,
}

#[derive(Debug, Clone, Copy, Default)]
struct Score {
    setup_ms: f64,
    mbps: f64,
    cpu_per_gb: f64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = if args.single_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-bench: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut server = spawn_pinned(
        "",
        &[
            args.peerweb.clone(),
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--no-turn".into(),
        ],
    )?;
    wait_listening(&format!("127.0.0.1:{port}"), &mut server).await?;
    let mb = args.bytes as f64 / 1e6;
    eprintln!(
        "peer-bench: {} rounds of {mb:.0} MB in {} B messages, window {} B",
        args.rounds, args.msg, args.window
    );
    let (mut tcp, mut ldc, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let t = raw_tcp(args.bytes, args.msg).await?;
        let l = datachannel(&args).await?;
        let o = native(&url, &args, args.window, &format!("r{round}")).await?;
        eprintln!(
            "  round {round}: tcp {:.0} MB/s | libdatachannel {:.0} MB/s, setup {:.1} ms | peerweb {:.0} MB/s, setup {:.1} ms",
            t.mbps, l.mbps, l.setup_ms, o.mbps, o.setup_ms
        );
        tcp.push(t);
        ldc.push(l);
        ours.push(o);
    }
    for w in &args.sweep {
        let o = native(&url, &args, *w, &format!("w{w}")).await?;
        eprintln!(
            "  window {w:>8} B: {:.0} MB/s, {:.2} CPU s/GB",
            o.mbps, o.cpu_per_gb
        );
    }
    drop(server);
    let med = |v: &[Score], f: fn(&Score) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    println!();
    println!(
        "| metric (median of {}) | raw TCP | libdatachannel | peerweb (str0m) | peerweb / libdatachannel |",
        args.rounds
    );
    println!("|---|---|---|---|---|");
    let row = |name: &str, f: fn(&Score) -> f64, tcp_too: bool, prec: usize| {
        let (t, l, o) = (med(&tcp, f), med(&ldc, f), med(&ours, f));
        let t = if tcp_too {
            format!("{t:.prec$}")
        } else {
            "—".into()
        };
        println!("| {name} | {t} | {l:.prec$} | {o:.prec$} | {:.2}x |", o / l);
    };
    row("setup, offer → channel open, ms", |s| s.setup_ms, false, 1);
    row(
        "throughput, one reliable channel, MB/s",
        |s| s.mbps,
        true,
        0,
    );
    row("CPU seconds per GB (both ends)", |s| s.cpu_per_gb, true, 2);
    Ok(())
}

/// One TCP connection on loopback: the ceiling for a reliable ordered byte stream.
async fn raw_tcp(bytes: usize, msg: usize) -> anyhow::Result<Score> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let cpu0 = cpu_secs(std::process::id())?;
    let t0 = Instant::now();
    let reader = tokio::spawn(async move {
        let (mut s, _) = l.accept().await?;
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        while got < bytes {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                bail!("tcp closed early");
            }
            got += n;
        }
        anyhow::Ok(())
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let payload = vec![7u8; msg];
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&payload).await?;
        sent += msg;
    }
    reader.await??;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(std::process::id())? - cpu0;
    Ok(Score {
        setup_ms: 0.0,
        mbps: bytes as f64 / 1e6 / secs,
        cpu_per_gb: cpu / (bytes as f64 / 1e9),
    })
}

/// libdatachannel in node: bench/datachannel/peer.mjs prints one JSON line.
async fn datachannel(args: &Args) -> anyhow::Result<Score> {
    let out = tokio::process::Command::new("node")
        .arg("peer.mjs")
        .arg(args.bytes.to_string())
        .arg(args.msg.to_string())
        .current_dir(&args.datachannel)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .context("libdatachannel run timed out")??;
    if !out.status.success() {
        bail!(
            "libdatachannel run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).context("libdatachannel output")?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Score {
        setup_ms: f("setup_ms"),
        mbps: f("bytes") / 1e6 / f("secs"),
        cpu_per_gb: f("cpu_s") / (f("bytes") / 1e9),
    })
}

/// Two native peers in this process through `peerweb serve` on loopback.
async fn native(url: &str, args: &Args, window: usize, room: &str) -> anyhow::Result<Score> {
    let opts = |w: usize| {
        let mut o = Options::new(url, room);
        o.settings.send_window = w;
        o.allow_loopback = true;
        o.interfaces = vec!["lo".into()];
        o.stun = false;
        o.turn = false;
        o
    };
    let mut a = Node::join(opts(window)).await?;
    // B joins second: its offer goes out as the join is confirmed, so setup is measured from
    // here to its channel being open.
    let mut b = Node::join(opts(window)).await?;
    let t0 = Instant::now();
    let a_id = a.id().to_owned();
    let b_id = b.id().to_owned();
    until_open(&mut b, &a_id).await?;
    let setup_ms = t0.elapsed().as_secs_f64() * 1000.0;
    until_open(&mut a, &b_id).await?;
    let total = args.bytes;
    let cpu0 = cpu_secs(std::process::id())?;
    let t0 = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut got = 0;
        while got < total {
            match b.next_event().await {
                Some(Event::Message { data, .. }) => got += data.len(),
                Some(_) => {}
                None => bail!("receiver stopped"),
            }
        }
        b.leave().await;
        anyhow::Ok(())
    });
    let payload = vec![7u8; args.msg];
    let mut sent = 0;
    while sent < total {
        a.send(&b_id, None, true, payload.clone()).await?;
        sent += args.msg;
    }
    tokio::time::timeout(Duration::from_secs(600), receiver)
        .await
        .context("transfer timed out")???;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(std::process::id())? - cpu0;
    a.leave().await;
    Ok(Score {
        setup_ms,
        mbps: total as f64 / 1e6 / secs,
        cpu_per_gb: cpu / (total as f64 / 1e9),
    })
}

/// Waits for the default channel to `peer` to open.
async fn until_open(n: &mut Node, peer: &str) -> anyhow::Result<()> {
    let fut = async {
        while let Some(e) = n.next_event().await {
            if matches!(&e, Event::Open { peer: p } if p == peer) {
                return Ok(());
            }
        }
        bail!("node stopped")
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .context("channel did not open")?
}
