//! The emulated WAN link of the benchmarks as a process of its own, for benchmarks that are
//! not Rust (bench/run-call): `netlab --rtt-ms 50` builds two network namespaces joined by the
//! link, prints one JSON line (`{"a": NS, "b": NS, "addr_a": IP, "addr_b": IP}`), forwards
//! packets until its standard input closes, then deletes the namespaces. Needs root.
use std::time::Duration;

use clap::Parser;
use peerweb_bench::netlab;
use tokio::io::AsyncReadExt;

#[derive(Parser)]
struct Args {
    /// Round-trip time the link adds, in milliseconds.
    #[arg(long, default_value_t = 50)]
    rtt_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let lab = netlab::build(Duration::from_millis(args.rtt_ms))?;
    println!(
        "{}",
        serde_json::json!({"a": lab.a, "b": lab.b, "addr_a": netlab::A, "addr_b": netlab::B})
    );
    // Until whoever started us closes our input (or exits): then the lab drops.
    let mut sink = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while stdin.read(&mut sink).await? > 0 {}
    drop(lab);
    Ok(())
}
