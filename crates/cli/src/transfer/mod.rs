//! `peerweb send` and `peerweb receive`: private file transfer over a native peer.
//! The rules (codes, trust handshake, framing, checks, names) are in crates/transfer; this
//! module reads and writes the files and drives the network.
//!
//! The receiver stages everything in `OUT/.peerweb-partial/`: per file a `.part` (data so
//! far) and a `.sums` (BLAKE3 of each chunk written), renamed to `.done` once the whole file
//! verified. Running the receive again re-checks the staged chunks against their sums and asks
//! the sender only for the rest. Files take their final names when the whole transfer verified.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::peer::{NetArgs, path_json, say};

mod conn;
mod receive;
mod send;

pub use receive::receive;
pub use send::send;

/// How long each handshake step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long data may stall before the transfer is given up (it can be resumed).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the summary waits for the path (statistics come once a second).
const PATH_WAIT: Duration = Duration::from_secs(3);
/// Nameplates tried before giving up on finding a free one.
const NAMEPLATE_TRIES: u32 = 8;
/// The receiver's staging folder inside the output folder.
const STAGING: &str = ".peerweb-partial";

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Files and folders to send.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Address of `peerweb serve`.
    #[arg(long, env = "PEERWEB_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Seconds the code and link stay valid while nobody receives.
    #[arg(long, default_value_t = 600)]
    pub expire: u64,
    /// One JSON object per line on stdout instead of text for people.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// The code (e.g. 7-crimson-otter) or the link the sender printed.
    pub code: String,
    /// Folder to save into.
    #[arg(long, short, default_value = ".")]
    pub out: PathBuf,
    /// Address of `peerweb serve` (a link names its own).
    #[arg(long, env = "PEERWEB_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Accept the offered files without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Seconds to wait for the sender to be there.
    #[arg(long, default_value_t = 15)]
    pub wait: u64,
    /// One JSON object per line on stdout instead of text for people.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: NetArgs,
}

/// Text for people or a JSON line for scripts.
struct Out {
    json: bool,
}

impl Out {
    fn say(
        &self,
        text: impl FnOnce() -> String,
        value: impl FnOnce() -> serde_json::Value,
    ) -> anyhow::Result<()> {
        if self.json {
            say(&value().to_string())
        } else {
            say(&text())
        }
    }

    fn progress(&self, total: u64, done: u64) -> ProgressBar {
        let target = if self.json || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(done);
        bar
    }
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0; N];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no random numbers from the OS: {e}"))?;
    Ok(b)
}

fn summary(
    out: &Out,
    verb: &str,
    files: usize,
    moved: u64,
    skipped: u64,
    secs: f64,
    path: Option<&peerweb_peer::Path>,
) -> anyhow::Result<()> {
    let mbps = moved as f64 / 1e6 / secs.max(1e-6);
    let how = path.map_or("", |p| if p.is_direct() { "direct" } else { "relayed" });
    out.say(
        || {
            let resumed = if skipped > 0 {
                format!(" ({} were already there)", HumanBytes(skipped))
            } else {
                String::new()
            };
            format!(
                "{verb} {files} file(s): {} in {secs:.1} s, {mbps:.1} MB/s, {how}{resumed}",
                HumanBytes(moved)
            )
        },
        || {
            json!({"event": "done", "files": files, "bytes": moved, "resumed_bytes": skipped,
                  "seconds": secs, "mb_per_s": mbps, "direct": path.map(|p| p.is_direct()),
                  "path": path.map(path_json)})
        },
    )
}

// ---------------------------------------------------------------------------------------
// receive
