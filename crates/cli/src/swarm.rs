//! `peerweb seed` and `peerweb fetch`: the faces of verified swarms natively — arguments and
//! output. The driver is `peerweb_apps::swarm`, the rules `peerweb_swarm`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use peerweb_apps::swarm::{self as driver, Shared, SwarmEvent};
use peerweb_net::http::Http;
use peerweb_swarm::link::Upload;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::peer::NetArgs;

/// Files seeded at once by one `peerweb seed` (each is a swarm, and a connection).
const MAX_SEEDED: usize = 64;

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Upload at most this many bytes per second to each neighbour (default: no cap).
    #[arg(long, value_name = "BYTES")]
    pub upload_rate: Option<u64>,
    /// Upload at most this many bytes to each neighbour in all.
    #[arg(long, value_name = "BYTES")]
    pub upload_budget: Option<u64>,
}

impl UploadArgs {
    fn upload(&self) -> Upload {
        Upload {
            rate: self.upload_rate,
            budget: self.upload_budget,
        }
    }
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// A folder with `peerweb-manifest.json` (as `peerweb manifest` writes it), or a manifest.
    pub path: PathBuf,
    /// Seed only this file of the manifest (its path there; repeatable).
    #[arg(long = "only", value_name = "PATH")]
    pub only: Vec<String>,
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The file's URL at its origin (its manifest is found beside it).
    pub url: String,
    /// Where to write it (resumed if it is there already: verified groups are kept).
    #[arg(long, short)]
    pub output: PathBuf,
    /// The manifest's URL, when it is not `peerweb-manifest.json` beside the file.
    #[arg(long, value_name = "URL")]
    pub manifest: Option<String>,
    /// Keep serving the file to the swarm once it is complete (until Ctrl-C).
    #[arg(long)]
    pub seed: bool,
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

/// What `peerweb seed` and `peerweb fetch` both take.
#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// Address of `peerweb serve`.
    #[arg(long, env = "PEERWEB_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Refuse a manifest not signed by this key (`ed25519:…`).
    #[arg(long, value_name = "KEY")]
    pub trust: Option<String>,
    #[command(flatten)]
    pub upload: UploadArgs,
    #[command(flatten)]
    pub net: NetArgs,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints swarm events until the channel closes.
async fn print(mut rx: mpsc::UnboundedReceiver<SwarmEvent>, json_out: bool) {
    while let Some(ev) = rx.recv().await {
        let line = match &ev {
            SwarmEvent::Joined { path, id } => {
                if json_out {
                    json!({"event": "joined", "path": path, "id": id})
                } else {
                    println!("{path}: in its swarm as {id}");
                    continue;
                }
            }
            SwarmEvent::Progress {
                path,
                have,
                groups,
                http,
                p2p,
                up,
                peers,
            } => {
                if json_out {
                    json!({"event": "progress", "path": path, "have": have, "groups": groups, "http": http, "p2p": p2p, "up": up, "peers": peers})
                } else {
                    eprintln!(
                        "{path}: {have}/{groups} groups; {p2p} B from peers, {http} B from the origin, {up} B uploaded; {peers} neighbours"
                    );
                    continue;
                }
            }
            SwarmEvent::Banned { path, peer, group } => {
                if json_out {
                    json!({"event": "banned", "path": path, "peer": peer, "group": group})
                } else {
                    println!(
                        "{path}: neighbour {peer} sent a bad group ({group}): dropped and reported"
                    );
                    continue;
                }
            }
            SwarmEvent::Complete { path } => {
                if json_out {
                    json!({"event": "complete", "path": path})
                } else {
                    println!("{path}: complete, every group verified");
                    continue;
                }
            }
            SwarmEvent::OriginFailed { path, why } => {
                if json_out {
                    json!({"event": "origin-failed", "path": path, "why": why})
                } else {
                    eprintln!("{path}: the origin failed: {why}");
                    continue;
                }
            }
        };
        println!("{line}");
    }
}

fn ctrl_c(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
}

pub async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let (_manifest, mut shares) = driver::shares(&args.path, args.swarm.trust.as_deref())?;
    if !args.only.is_empty() {
        shares.retain(|s| args.only.contains(&s.entry.path));
        if shares.is_empty() {
            bail!("the manifest lists none of {:?}", args.only);
        }
    }
    if shares.len() > MAX_SEEDED {
        bail!(
            "the manifest lists {} files; one `peerweb seed` seeds at most {MAX_SEEDED} (name them with --only)",
            shares.len()
        );
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(print(rx, args.swarm.json));
    let (stop_tx, stop) = watch::channel(false);
    ctrl_c(stop_tx);
    let mut tasks = tokio::task::JoinSet::new();
    for s in shares {
        let file = Arc::new(
            std::fs::File::open(&s.path)
                .with_context(|| format!("cannot read {}", s.path.display()))?,
        );
        let opts = args
            .swarm
            .net
            .options(&args.swarm.server, &s.entry.root, None);
        let have = peerweb_swarm::wire::Have::all(s.entry.size);
        let (tx, stop, upload) = (tx.clone(), stop.clone(), args.swarm.upload.upload());
        tasks.spawn(async move {
            let r = driver::run(opts, &s, file, have, None, upload, true, tx, stop).await;
            r.with_context(|| s.entry.path.clone())
        });
    }
    drop(tx);
    let mut result = Ok(());
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r.context("a seeding task failed")? {
            result = Err(e);
        }
    }
    let _ = printer.await;
    result
}

pub async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let http = Http::new(args.swarm.net.ca.as_deref())?;
    let remote = driver::locate(
        &http,
        &args.url,
        args.manifest.as_deref(),
        args.swarm.trust.as_deref(),
    )
    .await?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let have = driver::resume(&file, &remote.tree)?;
    let shared = Shared {
        entry: remote.entry.clone(),
        tree: remote.tree.clone(),
        path: args.output.clone(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(print(rx, args.swarm.json));
    let (stop_tx, stop) = watch::channel(false);
    ctrl_c(stop_tx);
    let opts = args
        .swarm
        .net
        .options(&args.swarm.server, &remote.entry.root, None);
    let r = driver::run(
        opts,
        &shared,
        Arc::new(file),
        have,
        Some((http, remote.url.clone())),
        args.swarm.upload.upload(),
        args.seed,
        tx,
        stop,
    )
    .await;
    let _ = printer.await;
    r
}
