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
    let ratio = names.len() == 2;
    println!();
    print!("| metric |");
    for n in names {
        print!(" {n} |");
    }
    if ratio {
        print!(" {} / {} |", names[1], names[0]);
    }
    println!();
    println!("|---|{}", "---|".repeat(names.len() + usize::from(ratio)));
    for (label, vals, decimals) in rows {
        print!("| {label} |");
        for v in vals {
            print!(" {v:.prec$} |", prec = *decimals);
        }
        if ratio {
            let r = if vals[0] == 0.0 {
                f64::NAN
            } else {
                vals[1] / vals[0]
            };
            print!(" {r:.2}x |");
        }
        println!();
    }
}
