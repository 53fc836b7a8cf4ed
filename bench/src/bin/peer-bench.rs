//! peer-bench: the native peer (through `peerweb-net`, on its own data path and on str0m's) against libdatachannel (npm
//! `node-datachannel`) and raw TCP as the physical limit, in one run on loopback.
//!
//! For each stack: setup time (offer created → channel open) and the rate of one reliable,
//! ordered channel carrying `--bytes` in `--msg`-byte messages with backpressure, plus the
//! CPU seconds both ends spent per GB. Prints a markdown table with ratios (medians of
//! `--rounds`). Run it through `bench/run-peer`, which builds and installs what it needs.
//! Traffic stays on 127.0.0.1.
//!
//! With `--rtt-ms N` the same comparison runs over an emulated WAN link instead: two network
//! namespaces joined by TUN devices whose packets this process forwards N/2 ms after reading
//! them, each way (this kernel has no netem). Each peer is its own process in its own
//! namespace, and signaling crosses the same link. The namespaces are deleted afterwards.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use peerweb_bench::{cpu_secs, free_port, spawn_pinned, wait_listening};
use peerweb_net::{Node, Options};
use peerweb_peer::{DataPath, Event};
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
    /// Fixed SCTP send window of the native peer, bytes (default: peerweb's own, which
    /// follows the path's RTT).
    #[arg(long)]
    window: Option<usize>,
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
    /// Emulate a link with this round-trip time (ms) between two namespaces instead of
    /// loopback (needs root).
    #[arg(long)]
    rtt_ms: Option<u64>,
    /// Internal: run one side of a link measurement (inside a namespace).
    #[arg(long, hide = true, value_enum)]
    role: Option<Role>,
    /// Internal: address (tcp roles) or signaling URL (native roles).
    #[arg(long, hide = true, default_value = "")]
    at: String,
    /// Internal: the native roles run str0m's whole stack (the data path before peerweb's own).
    #[arg(long, hide = true)]
    str0m: bool,
    /// Internal: the room of the native roles.
    #[arg(long, hide = true, default_value = "bench")]
    room: String,
    /// Directory with node-datachannel installed and peer.mjs.
    #[arg(long, default_value = "bench/datachannel")]
    datachannel: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    TcpSink,
    TcpSource,
    NativeRecv,
    NativeSend,
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
    let fut = async {
        match (args.role, args.rtt_ms) {
            (Some(role), _) => link::role(role, &args).await,
            (None, Some(rtt)) => link::run(&args, rtt).await,
            (None, None) => run(args).await,
        }
    };
    match rt.block_on(fut) {
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
        "peer-bench: {} rounds of {mb:.0} MB in {} B messages, window {}",
        args.rounds,
        args.msg,
        args.window
            .map_or("sized to the RTT".into(), |w| format!("{w} B"))
    );
    let (mut tcp, mut ldc, mut ours, mut old) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let t = raw_tcp(args.bytes, args.msg).await?;
        let l = datachannel(&args).await?;
        let o = native(
            &url,
            &args,
            args.window,
            &format!("r{round}"),
            DataPath::Own,
        )
        .await?;
        let s = native(
            &url,
            &args,
            args.window,
            &format!("s{round}"),
            DataPath::Str0m,
        )
        .await?;
        eprintln!(
            "  round {round}: tcp {:.0} MB/s | libdatachannel {:.0} MB/s, setup {:.1} ms | peerweb {:.0} MB/s, setup {:.1} ms | str0m path {:.0} MB/s",
            t.mbps, l.mbps, l.setup_ms, o.mbps, o.setup_ms, s.mbps
        );
        tcp.push(t);
        ldc.push(l);
        ours.push(o);
        old.push(s);
    }
    for w in &args.sweep {
        let o = native(&url, &args, Some(*w), &format!("w{w}"), DataPath::Own).await?;
        eprintln!(
            "  window {w:>8} B: {:.0} MB/s, {:.2} CPU s/GB",
            o.mbps, o.cpu_per_gb
        );
    }
    drop(server);
    table(
        &format!("loopback, median of {}", args.rounds),
        &tcp,
        &ldc,
        &ours,
        &old,
    );
    Ok(())
}

/// Prints the comparison table (medians).
fn table(title: &str, tcp: &[Score], ldc: &[Score], ours: &[Score], old: &[Score]) {
    let med = |v: &[Score], f: fn(&Score) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x.get(x.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!();
    println!(
        "| {title} | raw TCP | libdatachannel | peerweb (str0m's SCTP) | peerweb (own SCTP) | own / libdatachannel | own / str0m's |"
    );
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, f: fn(&Score) -> f64, tcp_too: bool, prec: usize| {
        let (t, l, o, s) = (med(tcp, f), med(ldc, f), med(ours, f), med(old, f));
        let t = if tcp_too {
            format!("{t:.prec$}")
        } else {
            "—".into()
        };
        println!(
            "| {name} | {t} | {l:.prec$} | {s:.prec$} | {o:.prec$} | {:.2}x | {:.2}x |",
            o / l,
            o / s
        );
    };
    row("setup, offer → channel open, ms", |s| s.setup_ms, false, 1);
    row(
        "throughput, one reliable channel, MB/s",
        |s| s.mbps,
        true,
        1,
    );
    row("CPU seconds per GB (both ends)", |s| s.cpu_per_gb, true, 2);
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
async fn native(
    url: &str,
    args: &Args,
    window: Option<usize>,
    room: &str,
    path: DataPath,
) -> anyhow::Result<Score> {
    let opts = |w: Option<usize>| {
        let mut o = Options::new(url, room);
        o.settings.data_path = path;
        if let Some(w) = w {
            o.settings.fix_window(w);
        }
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

/// The emulated WAN link and the per-namespace roles.
mod link {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use anyhow::{Context, bail};
    use peerweb_bench::cpu_secs;
    use peerweb_net::{Node, Options};
    use peerweb_peer::{DataPath, Event};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::process::{Child, Command};

    use super::{Args, Role, Score};

    use peerweb_bench::netlab::{A, B, build};

    fn in_ns(ns: &str, prog: &str, args: &[String]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, prog]).args(args);
        c.kill_on_drop(true)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        c
    }

    async fn json_line(child: &mut Child) -> anyhow::Result<serde_json::Value> {
        let out = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(out).lines();
        let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
            .await
            .context("timed out")??
            .context("no result line")?;
        Ok(serde_json::from_str(&line)?)
    }

    fn me() -> anyhow::Result<String> {
        Ok(std::env::current_exe()?.to_string_lossy().into_owned())
    }

    fn f(v: &serde_json::Value, k: &str) -> f64 {
        v[k].as_f64().unwrap_or(f64::NAN)
    }

    pub async fn run(args: &Args, rtt: u64) -> anyhow::Result<()> {
        let lab = build(Duration::from_millis(rtt))?;
        let bytes = args.bytes;
        eprintln!(
            "peer-bench: link with {rtt} ms RTT, {} rounds of {:.0} MB",
            args.rounds,
            bytes as f64 / 1e6
        );
        let common = |role: &str, at: String| -> Vec<String> {
            vec![
                "--role".into(),
                role.into(),
                "--at".into(),
                at,
                "--bytes".into(),
                bytes.to_string(),
                "--msg".into(),
                args.msg.to_string(),
            ]
            .into_iter()
            .chain(args.window.map(|w| format!("--window={w}")))
            .collect()
        };
        // The signaling server sits at B's end: its frames cross the link too.
        let serve = [
            "serve".to_owned(),
            "--listen".into(),
            format!("{B}:8080"),
            "--no-turn".into(),
        ];
        let mut server = in_ns(&lab.b, &args.peerweb, &serve).spawn()?;
        let _ = server.stdout.take();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let gb = bytes as f64 / 1e9;
        let (mut tcp, mut ldc, mut ours, mut old) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.rounds {
            // Raw TCP.
            let at = format!("{B}:5001");
            let mut sink = in_ns(&lab.b, &me()?, &common("tcp-sink", at.clone())).spawn()?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut src = in_ns(&lab.a, &me()?, &common("tcp-source", at)).spawn()?;
            let (r, s) = (json_line(&mut sink).await?, json_line(&mut src).await?);
            tcp.push(Score {
                setup_ms: 0.0,
                mbps: bytes as f64 / 1e6 / f(&r, "secs"),
                cpu_per_gb: (f(&r, "cpu_s") + f(&s, "cpu_s")) / gb,
            });
            // libdatachannel: offerer in A, answerer in B, signaling relayed through us.
            let dir = std::path::Path::new(&args.datachannel).canonicalize()?;
            let script = dir.join("peer.mjs").to_string_lossy().into_owned();
            let node = |role: &str, addr: &str| -> Vec<String> {
                vec![
                    script.clone(),
                    bytes.to_string(),
                    args.msg.to_string(),
                    role.into(),
                    addr.into(),
                ]
            };
            let mut off = in_ns(&lab.a, "node", &node("offer", A)).spawn()?;
            let mut ans = in_ns(&lab.b, "node", &node("answer", B)).spawn()?;
            let (ro, rs) = relay_signals(&mut off, &mut ans).await?;
            ldc.push(Score {
                setup_ms: f(&ro, "setup_ms"),
                mbps: bytes as f64 / 1e6 / f(&rs, "secs"),
                cpu_per_gb: (f(&ro, "cpu_s") + f(&rs, "cpu_s")) / gb,
            });
            // peerweb, each data path: the receiver in B joins first, the sender in A joins
            // second and offers.
            for (str0m, scores) in [(false, &mut ours), (true, &mut old)] {
                let url = format!("http://{B}:8080");
                let mut extra = vec!["--room".to_owned(), format!("r{round}{str0m}")];
                if str0m {
                    extra.push("--str0m".into());
                }
                let mut recv = in_ns(
                    &lab.b,
                    &me()?,
                    &[common("native-recv", url.clone()), extra.clone()].concat(),
                )
                .spawn()?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut send = in_ns(
                    &lab.a,
                    &me()?,
                    &[common("native-send", url), extra].concat(),
                )
                .spawn()?;
                let (r, s) = (json_line(&mut recv).await?, json_line(&mut send).await?);
                scores.push(Score {
                    setup_ms: f(&s, "setup_ms"),
                    mbps: bytes as f64 / 1e6 / f(&r, "secs"),
                    cpu_per_gb: (f(&r, "cpu_s") + f(&s, "cpu_s")) / gb,
                });
            }
            let (t, l, o, s) = (tcp[round], ldc[round], ours[round], old[round]);
            eprintln!(
                "  round {round}: tcp {:.1} MB/s | libdatachannel {:.1} MB/s, setup {:.0} ms | peerweb {:.1} MB/s, setup {:.0} ms | str0m path {:.1} MB/s",
                t.mbps, l.mbps, l.setup_ms, o.mbps, o.setup_ms, s.mbps
            );
        }
        drop(server);
        let title = format!("{rtt} ms RTT link, median of {}", args.rounds);
        super::table(&title, &tcp, &ldc, &ours, &old);
        drop(lab);
        Ok(())
    }

    /// Passes each side's signaling lines to the other until both print a result.
    async fn relay_signals(
        a: &mut Child,
        b: &mut Child,
    ) -> anyhow::Result<(serde_json::Value, serde_json::Value)> {
        let mut a_out = BufReader::new(a.stdout.take().context("stdout")?).lines();
        let mut b_out = BufReader::new(b.stdout.take().context("stdout")?).lines();
        let mut a_in = a.stdin.take().context("stdin")?;
        let mut b_in = b.stdin.take().context("stdin")?;
        let (mut ra, mut rb) = (None, None);
        let end = tokio::time::Instant::now() + Duration::from_secs(600);
        let result = |l: &str| -> Option<serde_json::Value> {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v.get("result").cloned()
        };
        while ra.is_none() || rb.is_none() {
            tokio::select! {
                l = a_out.next_line(), if ra.is_none() => {
                    let l = l?.context("offerer ended")?;
                    match result(&l) {
                        Some(r) => ra = Some(r),
                        None => b_in.write_all(format!("{l}\n").as_bytes()).await?,
                    }
                }
                l = b_out.next_line(), if rb.is_none() => {
                    let l = l?.context("answerer ended")?;
                    match result(&l) {
                        Some(r) => rb = Some(r),
                        None => a_in.write_all(format!("{l}\n").as_bytes()).await?,
                    }
                }
                () = tokio::time::sleep_until(end) => bail!("libdatachannel over the link timed out"),
            }
        }
        Ok((ra.unwrap_or_default(), rb.unwrap_or_default()))
    }

    /// One side of a measurement, inside a namespace; prints one JSON line.
    pub async fn role(role: Role, args: &Args) -> anyhow::Result<()> {
        let cpu0 = cpu_secs(std::process::id())?;
        let total = args.bytes;
        let mut out = match role {
            Role::TcpSink => {
                let l = tokio::net::TcpListener::bind(&args.at).await?;
                let (mut s, _) = l.accept().await?;
                let mut buf = vec![0u8; 64 << 10];
                let (mut got, mut t0) = (0, None);
                while got < total {
                    let n = s.read(&mut buf).await?;
                    if n == 0 {
                        bail!("tcp closed early");
                    }
                    t0.get_or_insert_with(Instant::now);
                    got += n;
                }
                let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
                serde_json::json!({ "secs": secs })
            }
            Role::TcpSource => {
                let mut s = tokio::net::TcpStream::connect(&args.at).await?;
                let payload = vec![7u8; args.msg];
                let mut sent = 0;
                while sent < total {
                    s.write_all(&payload).await?;
                    sent += args.msg;
                }
                s.shutdown().await?;
                serde_json::json!({})
            }
            Role::NativeRecv | Role::NativeSend => {
                let mut o = Options::new(&args.at, &args.room);
                if args.str0m {
                    o.settings.data_path = DataPath::Str0m;
                }
                if let Some(w) = args.window {
                    o.settings.fix_window(w);
                }
                o.stun = false;
                o.turn = false;
                let mut node = Node::join(o).await?;
                if role == Role::NativeRecv {
                    let (mut got, mut t0) = (0, None);
                    let mut tick = tokio::time::interval(Duration::from_secs(10));
                    tick.tick().await;
                    while got < total {
                        tokio::select! {
                            e = node.next_event() => match e {
                                Some(Event::Message { data, .. }) => {
                                    t0.get_or_insert_with(Instant::now);
                                    got += data.len();
                                }
                                Some(_) => {}
                                None => bail!("receiver stopped"),
                            },
                            // A transfer that stalls says where (and on which data path).
                            _ = tick.tick() => eprintln!(
                                "peer-bench: receiver{}: {got} of {total} bytes",
                                if args.str0m { " (str0m)" } else { "" }
                            ),
                        }
                    }
                    let secs = t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
                    node.leave().await;
                    serde_json::json!({ "secs": secs })
                } else {
                    let t0 = Instant::now();
                    let peer = loop {
                        match node.next_event().await {
                            Some(Event::Open { peer }) => break peer,
                            Some(_) => {}
                            None => bail!("sender stopped"),
                        }
                    };
                    let setup_ms = t0.elapsed().as_secs_f64() * 1000.0;
                    let payload = vec![7u8; args.msg];
                    let mut sent = 0;
                    while sent < total {
                        node.send(&peer, None, true, payload.clone()).await?;
                        sent += args.msg;
                    }
                    // Stay until the receiver has it all (it leaves then).
                    while let Some(e) = node.next_event().await {
                        if matches!(e, Event::PeerLeft { .. }) {
                            break;
                        }
                    }
                    node.leave().await;
                    serde_json::json!({ "setup_ms": setup_ms })
                }
            }
        };
        out["cpu_s"] = serde_json::json!(cpu_secs(std::process::id())? - cpu0);
        println!("{out}");
        Ok(())
    }
}
