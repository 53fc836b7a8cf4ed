//! Helpers shared by the side-by-side benchmarks: starting the servers under test pinned to
//! a CPU, and reading their memory and CPU use from `/proc`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Runs `fut` on a single-threaded runtime and turns its result into an exit code,
/// printing the error chain as `name: ...`.
pub fn block_on_main(
    name: &str,
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(fut) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Starts `argv` (output discarded), pinned to `cpu` with `taskset` unless `cpu` is empty;
/// killed on drop.
pub fn spawn_pinned(cpu: &str, argv: &[String]) -> anyhow::Result<Child> {
    let mut full: Vec<String> = Vec::new();
    if !cpu.is_empty() {
        full.extend(["taskset".into(), "-c".into(), cpu.to_owned()]);
    }
    full.extend(argv.iter().cloned());
    let (prog, rest) = full.split_first().context("empty command")?;
    Command::new(prog)
        .args(rest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {prog}"))
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: &str, server: &mut Child) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        if let Some(status) = server.try_wait()? {
            bail!("server exited: {status}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server did not listen on {addr} within 15 s")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// User + system CPU seconds of a process (clock ticks of 1/100 s on Linux).
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

/// The soft open-file limit of this process.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Prints a markdown table: one row per metric, one column per server, and the ratio of
/// the second to the first when there are two.
pub fn print_table(names: &[&str], rows: &[(String, Vec<f64>, usize)]) {
    // Every column after the first gets its ratio to the first.
    let others = names.len().saturating_sub(1);
    println!();
    print!("| metric |");
    for n in names {
        print!(" {n} |");
    }
    for n in names.iter().skip(1) {
        print!(" {n} / {} |", names[0]);
    }
    println!();
    println!("|---|{}", "---|".repeat(names.len() + others));
    for (label, vals, decimals) in rows {
        print!("| {label} |");
        for v in vals {
            if v.is_nan() {
                print!(" – |");
            } else {
                print!(" {v:.prec$} |", prec = *decimals);
            }
        }
        for v in vals.iter().skip(1) {
            let r = if vals[0] == 0.0 || vals[0].is_nan() {
                f64::NAN
            } else {
                v / vals[0]
            };
            if r.is_nan() {
                print!(" – |");
            } else {
                print!(" {r:.2}x |");
            }
        }
        println!();
    }
}

/// An emulated WAN link: two network namespaces joined by TUN devices whose packets this
/// process forwards `rtt/2` after reading them, each way (this kernel has no netem). Needs
/// root and a tokio runtime; the namespaces are deleted when the [`Lab`] drops.
pub mod netlab {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::{Context, bail};

    pub const A: &str = "10.77.0.1";
    pub const B: &str = "10.77.0.2";
    /// Packets queued on the link per direction before it drops (a router's queue).
    const QUEUE: usize = 20_000;

    pub fn ip(args: &[&str]) -> anyhow::Result<()> {
        let st = std::process::Command::new("ip").args(args).status()?;
        if !st.success() {
            bail!("ip {} failed", args.join(" "));
        }
        Ok(())
    }

    /// Two namespaces with a TUN device each; deleted on drop.
    #[derive(Debug)]
    pub struct Lab {
        pub a: String,
        pub b: String,
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            let _ = ip(&["netns", "delete", &self.a]);
            let _ = ip(&["netns", "delete", &self.b]);
        }
    }

    /// Builds the link and starts forwarding with `rtt/2` each way.
    pub fn build(rtt: Duration) -> anyhow::Result<Lab> {
        let id = std::process::id() % 100_000;
        let lab = Lab {
            a: format!("pbl{id}a"),
            b: format!("pbl{id}b"),
        };
        let mut devs = Vec::new();
        for (ns, addr, side) in [(&lab.a, A, "a"), (&lab.b, B, "b")] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            let name = format!("pbt{id}{side}");
            let dev = tun_rs::DeviceBuilder::new()
                .name(&name)
                .mtu(1500)
                .packet_information(false)
                .build_async()
                .context("cannot create a TUN device")?;
            // The device moves; this process keeps its file descriptor.
            ip(&["link", "set", &name, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", &name])?;
            ip(&["-n", ns, "link", "set", &name, "up"])?;
            devs.push(Arc::new(dev));
        }
        let half = rtt / 2;
        for (from, to) in [(0, 1), (1, 0)] {
            let (rx, tx) = (devs[from].clone(), devs[to].clone());
            tokio::spawn(forward(rx, tx, half));
        }
        Ok(lab)
    }

    /// Moves packets from one TUN to the other, each `delay` after it was read.
    async fn forward(rx: Arc<tun_rs::AsyncDevice>, tx: Arc<tun_rs::AsyncDevice>, delay: Duration) {
        let mut queue: VecDeque<(tokio::time::Instant, Vec<u8>)> = VecDeque::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let due = queue.front().map(|(t, _)| *t);
            let wait = async {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                n = rx.recv(&mut buf) => match n {
                    Ok(n) => {
                        if queue.len() < QUEUE {
                            queue.push_back((tokio::time::Instant::now() + delay, buf[..n].to_vec()));
                        }
                    }
                    Err(_) => return,
                },
                () = wait => {
                    let now = tokio::time::Instant::now();
                    while queue.front().is_some_and(|(t, _)| *t <= now) {
                        if let Some((_, p)) = queue.pop_front() {
                            let _ = tx.send(&p).await;
                        }
                    }
                }
            }
        }
    }
}
