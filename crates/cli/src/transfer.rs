//! `peerweb send` and `peerweb receive`: private file transfer over a native peer.
//! The rules (codes, trust handshake, framing, checks, names) are in crates/transfer; this
//! module reads and writes the files and drives the network.
//!
//! The receiver stages everything in `OUT/.peerweb-partial/`: per file a `.part` (data so
//! far) and a `.sums` (BLAKE3 of each chunk written), renamed to `.done` once the whole file
//! verified. Running the receive again re-checks the staged chunks against their sums and asks
//! the sender only for the rest. Files take their final names when the whole transfer verified.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use peerweb_net::Node;
use peerweb_peer::Event;
use peerweb_transfer::code::{Code, Link, SECRET_BYTES};
use peerweb_transfer::session::{Manifest, Receiving, Resume, Sending, accept_all};
use peerweb_transfer::wire::{
    CHUNK, Chunk, Control, FILES_PER_MESSAGE, FileEntry, MAX_FILES, chunk_len, chunks,
};
use peerweb_transfer::{Handshake, Secret, TrustError, names, sas};
use serde_json::json;
use tokio::time::Instant;

use crate::peer::{NetArgs, path_json, path_text, say};

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

/// The other side ended the transfer with `abort`, saying why.
#[derive(Debug, thiserror::Error)]
#[error("the other side stopped: {0}")]
struct Stopped(String);

/// What the chosen peer did next.
enum Input {
    Control(Control),
    Data(Vec<u8>),
}

/// One connected peer in a transfer.
struct Conn {
    node: Node,
    peer: String,
}

impl Conn {
    async fn send(&self, msg: &Control) -> anyhow::Result<()> {
        self.node
            .send(&self.peer, None, false, msg.encode())
            .await
            .context("cannot send to the peer")
    }

    /// The next message from our peer, within `timeout`.
    async fn next(&mut self, timeout: Duration) -> anyhow::Result<Input> {
        let deadline = Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.node.next_event())
                .await
                .map_err(|_| anyhow!("the other side went quiet for {} s", timeout.as_secs()))?
                .ok_or_else(|| anyhow!("the network driver stopped"))?;
            match ev {
                Event::Message {
                    peer, binary, data, ..
                } if peer == self.peer => {
                    if binary {
                        return Ok(Input::Data(data));
                    }
                    let msg =
                        Control::decode(&data).context("the other side sent a bad message")?;
                    if let Control::Abort { reason } = &msg {
                        let r = peerweb_transfer::wire::cut(
                            reason,
                            peerweb_transfer::wire::MAX_REASON_BYTES,
                        );
                        return Err(Stopped(r.escape_debug().to_string()).into());
                    }
                    return Ok(Input::Control(msg));
                }
                Event::PeerLeft { peer } if peer == self.peer => {
                    bail!("the other side left")
                }
                _ => {}
            }
        }
    }

    async fn control(&mut self, timeout: Duration) -> anyhow::Result<Control> {
        match self.next(timeout).await? {
            Input::Control(c) => Ok(c),
            Input::Data(_) => bail!("the other side sent data out of turn"),
        }
    }

    /// Why the other side stopped, if it said so within a second: a send that failed
    /// because the peer aborted and left reports its reason rather than a broken connection.
    async fn stopped_why(&mut self) -> Option<anyhow::Error> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Ok(_) => continue,
                Err(e) if e.is::<Stopped>() => return Some(e),
                Err(_) => return None,
            }
        }
    }

    /// Sends an abort (best effort) and leaves.
    async fn abort(self, reason: &str) {
        let _ = self
            .send(&Control::Abort {
                reason: reason.to_owned(),
            })
            .await;
        self.node.leave().await;
    }

    /// The trust handshake, our hello saying `ready` (a receiver that takes any offer whole);
    /// returns the short authentication string and whether the other side said `ready`.
    async fn handshake(
        &mut self,
        hs: &mut Handshake,
        ready: bool,
    ) -> anyhow::Result<(String, bool)> {
        let mut hello = hs.hello();
        if let Control::Hello { ready: r, .. } = &mut hello {
            *r = ready;
        }
        self.send(&hello).await?;
        let hello = self.control(STEP_TIMEOUT).await?;
        hs.on_hello(&hello)?;
        let peer_ready = matches!(hello, Control::Hello { ready: true, .. });
        let (local, remote) = self
            .node
            .fingerprints(&self.peer)
            .await?
            .and_then(|(l, r)| Some((l, r?)))
            .ok_or_else(|| anyhow!("no DTLS fingerprints for the peer"))?;
        self.send(&hs.confirm(&local, &remote)?).await?;
        let confirm = self.control(STEP_TIMEOUT).await?;
        hs.verify(&local, &remote, &confirm)?;
        let sas = match hs.role() {
            peerweb_transfer::Role::Send => sas(&local, &remote),
            peerweb_transfer::Role::Receive => sas(&remote, &local),
        };
        Ok((sas, peer_ready))
    }

    /// The path to the peer, waiting up to `wait` for the first statistics to tell.
    async fn path(&self, wait: Duration) -> Option<peerweb_peer::Path> {
        let deadline = Instant::now() + wait;
        loop {
            let path = self
                .node
                .status()
                .await
                .ok()?
                .into_iter()
                .find(|p| p.id == self.peer)?
                .path;
            if path.is_some() || Instant::now() >= deadline {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the handshake (our hello saying `ready` or not) and shows the short authentication
/// string; on a failure tells the other side and leaves. Returns whether the peer is ready.
async fn authenticate(
    out: &Out,
    mut conn: Conn,
    mut hs: Handshake,
    ready: bool,
) -> anyhow::Result<(Conn, bool)> {
    let (sas, peer_ready) = match conn.handshake(&mut hs, ready).await {
        Ok(v) => v,
        Err(e) => {
            let reason = if e.is::<TrustError>() {
                "verification failed: wrong code or link, or a man in the middle"
            } else {
                "handshake failed"
            };
            conn.abort(reason).await;
            return Err(e);
        }
    };
    let path = conn.path(Duration::ZERO).await;
    out.say(
        || {
            format!(
                "Verified. Compare if you like: {sas}{}",
                path.as_ref()
                    .map(|p| format!("\npath {}", path_text(p)))
                    .unwrap_or_default()
            )
        },
        || json!({"event": "verified", "sas": sas, "path": path.as_ref().map(path_json)}),
    )?;
    Ok((conn, peer_ready))
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0; N];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no random numbers from the OS: {e}"))?;
    Ok(b)
}

// ---------------------------------------------------------------------------------------
// send

struct Source {
    entry: FileEntry,
    disk: PathBuf,
}

/// The files to send: each file by its name, each folder's files under the folder's name.
fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<Source>> {
    let mut out = Vec::new();
    for root in paths {
        let meta = fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
        let base = root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "files".to_owned());
        if meta.is_file() {
            out.push((base, root.clone(), meta.len()));
            continue;
        }
        for item in walkdir::WalkDir::new(root).sort_by_file_name() {
            let item = item.with_context(|| format!("cannot read {}", root.display()))?;
            if !item.file_type().is_file() {
                if item.file_type().is_symlink() {
                    eprintln!("peerweb: skipping symbolic link {}", item.path().display());
                }
                continue;
            }
            let rel = item.path().strip_prefix(root).unwrap_or(item.path());
            let mut name = base.clone();
            for c in rel.components() {
                name.push('/');
                name.push_str(&c.as_os_str().to_string_lossy());
            }
            let len = item.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((name, item.path().to_owned(), len));
        }
        if out.len() > MAX_FILES {
            bail!("more than {MAX_FILES} files; pack them into an archive first");
        }
    }
    out.into_iter()
        .map(|(path, disk, size)| {
            let mut h = blake3::Hasher::new();
            h.update_mmap_rayon(&disk)
                .with_context(|| format!("cannot read {}", disk.display()))?;
            Ok(Source {
                entry: FileEntry {
                    path,
                    size,
                    hash: h.finalize().to_hex().to_string(),
                },
                disk,
            })
        })
        .collect()
}

/// `peerweb send`: hands out a code and a link, then sends to the first peer that proves it
/// holds one of them. Exit: 0 sent and verified, 1 failed, 3 verification failed.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let out = Out { json: args.json };
    let sources = collect(&args.paths)?;
    let total: u64 = sources.iter().map(|s| s.entry.size).sum();
    let server = args.server.trim_end_matches('/').to_owned();
    let secret: [u8; SECRET_BYTES] = random()?;
    let mut code = Code::from_random(random()?);
    // Find a free nameplate: a room nobody is in.
    let mut node = None;
    for _ in 0..NAMEPLATE_TRIES {
        let mut n = Node::join(args.net.options(&server, &code.room(), None))
            .await
            .context("cannot reach the server")?;
        let mut taken = false;
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::ZERO, n.next_event()).await {
            if let Event::Joined { peers } = ev {
                taken = !peers.is_empty();
            }
        }
        if !taken {
            node = Some(n);
            break;
        }
        n.leave().await;
        code = code.with_nameplate(Code::from_random(random()?).nameplate);
    }
    let mut node = node.ok_or_else(|| anyhow!("no free code on the server; try again"))?;
    let link = Link {
        server: server.clone(),
        nameplate: code.nameplate,
        secret,
    };
    out.say(
        || {
            let mut t = format!(
                "Sending {} file(s), {}.\nOn the other computer run:  peerweb receive {code}\nor open:  {link}",
                sources.len(),
                HumanBytes(total)
            );
            if std::io::stdout().is_terminal()
                && let Ok(qr) = qrcode::QrCode::new(link.to_string().as_bytes()) {
                    t.push('\n');
                    t.push_str(
                        &qr.render::<qrcode::render::unicode::Dense1x2>()
                            .quiet_zone(true)
                            .build(),
                    );
                }
            t
        },
        || json!({"event": "code", "code": code.to_string(), "link": link.to_string(),
                  "files": sources.len(), "bytes": total}),
    )?;
    // Wait for a receiver: the first peer whose channel opens gets the one try.
    let deadline = Instant::now() + Duration::from_secs(args.expire);
    let peer = loop {
        let ev = tokio::select! {
            ev = tokio::time::timeout_at(deadline, node.next_event()) => ev,
            _ = crate::shutdown_signal() => { node.leave().await; bail!("interrupted") }
        };
        match ev {
            Err(_) => {
                node.leave().await;
                bail!(
                    "the code expired after {} s with nobody receiving",
                    args.expire
                );
            }
            Ok(None) => bail!("the network driver stopped"),
            Ok(Some(Event::Open { peer })) => break peer,
            Ok(Some(_)) => {}
        }
    };
    let (mut conn, ready) = authenticate(
        &out,
        Conn { node, peer },
        Handshake::sender(secret, code),
        false,
    )
    .await?;
    // The file list, then the receiver's decision — or, from a receiver that said it is
    // ready for any offer, the data right behind the list, a round trip sooner; its accept
    // then comes while the data flows and is checked at the end.
    for page in sources.chunks(FILES_PER_MESSAGE) {
        conn.send(&Control::Files {
            files: page.iter().map(|s| s.entry.clone()).collect(),
        })
        .await?;
    }
    conn.send(&Control::Offer {
        files: sources.len() as u64,
        bytes: total,
    })
    .await?;
    let from = if ready {
        tracing::debug!("the receiver is ready for any offer: data follows it at once");
        accept_all(sources.len())
    } else {
        let (c, from) = accepted(conn, Duration::from_secs(args.expire)).await?;
        conn = c;
        from
    };
    let plan = match Sending::new(sources.iter().map(|s| s.entry.size).collect(), &from) {
        Ok(p) => p,
        Err(e) => {
            conn.abort("bad accept").await;
            return Err(e.into());
        }
    };
    let skipped = plan.bytes_skipped();
    let bar = out.progress(total, skipped);
    let started = Instant::now();
    let mut open: Option<(usize, File)> = None;
    let mut buf = vec![0u8; CHUNK];
    for next in plan {
        if open.as_ref().map(|(i, _)| *i) != Some(next.file) {
            let s = &sources[next.file];
            let f =
                File::open(&s.disk).with_context(|| format!("cannot open {}", s.disk.display()))?;
            open = Some((next.file, f));
        }
        let Some((_, f)) = open.as_mut() else {
            continue;
        };
        let data = &mut buf[..next.len];
        f.seek(SeekFrom::Start(next.offset))
            .and_then(|_| f.read_exact(data))
            .with_context(|| {
                format!(
                    "cannot read {} (did it change?)",
                    sources[next.file].disk.display()
                )
            })?;
        let frame = Chunk::encode(next.file as u32, next.index, data);
        let sent = tokio::select! {
            r = tokio::time::timeout(STALL_TIMEOUT, conn.node.send(&conn.peer, None, true, frame)) => r,
            _ = crate::shutdown_signal() => { bar.abandon(); conn.abort("the sender stopped").await; bail!("interrupted") }
        };
        let failed = match sent {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(
                anyhow::Error::new(e)
                    .context("the connection to the receiver broke; run again to resume"),
            ),
            Err(_) => Some(anyhow!(
                "the transfer stalled for {} s; run again to resume",
                STALL_TIMEOUT.as_secs()
            )),
        };
        if let Some(e) = failed {
            bar.abandon();
            return Err(conn.stopped_why().await.unwrap_or(e));
        }
        bar.inc(next.len as u64);
    }
    if ready {
        // The accept a ready receiver still sends must be the one we acted on.
        let (c, mut got) = accepted(conn, STALL_TIMEOUT).await?;
        conn = c;
        got.sort_unstable();
        if got != from {
            conn.abort("expected an accept of everything").await;
            bail!("the receiver said it was ready for everything, then accepted less");
        }
    }
    // Asked now: once the receiver says done it leaves, and its path goes with it.
    let path = conn.path(PATH_WAIT).await;
    // Done means the receiver verified every file.
    match conn
        .control(STALL_TIMEOUT + Duration::from_secs(30))
        .await?
    {
        Control::Done => {}
        other => bail!("the receiver did not confirm: {other:?}"),
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let sent = total - skipped;
    conn.node.leave().await;
    summary(
        &out,
        "sent",
        sources.len(),
        sent,
        skipped,
        secs,
        path.as_ref(),
    )
}

/// The receiver's answer to the offer: its `accept` list; a `decline`, or anything else
/// (then aborted), ends the transfer.
async fn accepted(mut conn: Conn, timeout: Duration) -> anyhow::Result<(Conn, Vec<(u32, u64)>)> {
    match conn.control(timeout).await? {
        Control::Accept { from } => Ok((conn, from)),
        Control::Decline => {
            conn.node.leave().await;
            bail!("the receiver declined");
        }
        _ => {
            conn.abort("expected accept").await;
            bail!("the receiver broke the protocol");
        }
    }
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

/// Staged files of one transfer.
struct Staging {
    dir: PathBuf,
}

/// Staged files of other transfers are kept this long after their last write, for resuming.
const KEEP_STAGED: Duration = Duration::from_secs(7 * 24 * 3600);

impl Staging {
    /// Removes what earlier transfers staged and nobody resumed within [`KEEP_STAGED`].
    fn expire(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = path
                .extension()
                .is_some_and(|x| x == "part" || x == "sums" || x == "done");
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > KEEP_STAGED);
            if ours && old {
                let _ = fs::remove_file(&path);
            }
        }
    }

    fn key(e: &FileEntry) -> String {
        let mut h = blake3::Hasher::new();
        h.update(e.path.as_bytes());
        h.update(&[0]);
        h.update(e.hash.as_bytes());
        h.finalize().to_hex()[..32].to_owned()
    }

    fn file(&self, e: &FileEntry, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", Self::key(e)))
    }

    /// How far a file got in an earlier run: its verified chunks and a hasher over them.
    fn resume(&self, e: &FileEntry) -> anyhow::Result<Resume> {
        let done = self.file(e, "done");
        if fs::metadata(&done).is_ok_and(|m| m.len() == e.size) {
            let mut hasher = blake3::Hasher::new();
            hasher.update_mmap_rayon(&done)?;
            if hasher.finalize().to_hex().as_str() == e.hash {
                return Ok(Resume {
                    from: chunks(e.size),
                    hasher,
                });
            }
            fs::remove_file(&done)?;
        }
        let (part, sums) = (self.file(e, "part"), self.file(e, "sums"));
        let (Ok(mut data), Ok(recorded)) = (File::open(&part), fs::read(&sums)) else {
            return Ok(Resume::fresh());
        };
        let mut hasher = blake3::Hasher::new();
        let mut from = 0u64;
        let mut buf = vec![0u8; CHUNK];
        for want in recorded.chunks_exact(32) {
            let len = chunk_len(e.size, from);
            if len == 0 || data.read_exact(&mut buf[..len]).is_err() {
                break;
            }
            if blake3::hash(&buf[..len]).as_bytes()[..] != *want {
                break;
            }
            hasher.update(&buf[..len]);
            from += 1;
        }
        Ok(Resume { from, hasher })
    }
}

/// Where the current file's bytes go: straight to the files, a chunk at a time, so a killed
/// receiver loses at most the chunk in flight.
struct Writer {
    file: usize,
    part: File,
    sums: File,
}

impl Writer {
    fn open(staging: &Staging, e: &FileEntry, file: usize, from: u64) -> anyhow::Result<Writer> {
        let (part_path, sums_path) = (staging.file(e, "part"), staging.file(e, "sums"));
        let part = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part_path)?;
        part.set_len(from * CHUNK as u64)?;
        let sums = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&sums_path)?;
        sums.set_len(from * 32)?;
        let (mut part, mut sums) = (part, sums);
        part.seek(SeekFrom::End(0))?;
        sums.seek(SeekFrom::End(0))?;
        Ok(Writer { file, part, sums })
    }

    /// Appends a verified chunk and its BLAKE3.
    fn write(&mut self, payload: &[u8], hash: &[u8; 32]) -> std::io::Result<()> {
        self.part.write_all(payload)?;
        self.sums.write_all(hash)
    }

    fn finish(self, staging: &Staging, e: &FileEntry) -> anyhow::Result<()> {
        self.part.sync_data()?;
        drop(self.sums);
        fs::rename(staging.file(e, "part"), staging.file(e, "done"))?;
        let _ = fs::remove_file(staging.file(e, "sums"));
        Ok(())
    }
}

fn ask(question: &str) -> anyhow::Result<bool> {
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// `peerweb receive`: proves it holds the code or link, checks the offer, saves verified files.
pub async fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    let out = Out { json: args.json };
    let (server, room, secret) = if args.code.contains("://") {
        let link = Link::parse(&args.code)?;
        (link.server.clone(), link.room(), Secret::Link(link.secret))
    } else {
        let code = Code::parse(&args.code)?;
        (
            args.server.trim_end_matches('/').to_owned(),
            code.room(),
            Secret::Code(code),
        )
    };
    if !args.yes && !std::io::stdin().is_terminal() {
        bail!("cannot ask whether to accept (stdin is not a terminal); pass --yes");
    }
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    // Ready for any offer whole: nobody to ask and nothing staged to resume. The sender then
    // streams right behind its offer, a round trip sooner.
    let ready =
        args.yes && fs::read_dir(args.out.join(STAGING)).map_or(true, |mut d| d.next().is_none());
    let mut node = Node::join(args.net.options(&server, &room, None))
        .await
        .context("cannot reach the server")?;
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let peer = loop {
        match tokio::time::timeout_at(deadline, node.next_event()).await {
            Err(_) => {
                node.leave().await;
                bail!("nobody is sending with this code (wrong number, expired, or already used)");
            }
            Ok(None) => bail!("the network driver stopped"),
            Ok(Some(Event::Open { peer })) => break peer,
            Ok(Some(_)) => {}
        }
    };
    let (mut conn, _) = authenticate(
        &out,
        Conn { node, peer },
        Handshake::receiver(&secret),
        ready,
    )
    .await?;
    // The file list.
    let mut manifest = Manifest::default();
    let files = loop {
        match conn.control(STEP_TIMEOUT).await? {
            Control::Files { files } => manifest.add(files)?,
            Control::Offer { files, bytes } => break manifest.finish(files, bytes)?,
            _ => {
                conn.abort("expected files").await;
                bail!("the sender broke the protocol");
            }
        }
    };
    let plan = names::plan(files.iter().map(|f| f.path.as_str()))?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    out.say(
        || {
            let mut t = format!("Offered {} file(s), {}:", files.len(), HumanBytes(total));
            for (f, p) in files.iter().zip(&plan).take(20) {
                t.push_str(&format!("\n  {}  {}", p.join("/"), HumanBytes(f.size)));
            }
            if files.len() > 20 {
                t.push_str(&format!("\n  … and {} more", files.len() - 20));
            }
            t
        },
        || {
            json!({"event": "offer", "bytes": total, "files": files.iter().zip(&plan)
                  .map(|(f, p)| json!({"path": p.join("/"), "size": f.size})).collect::<Vec<_>>()})
        },
    )?;
    let staging = Staging {
        dir: args.out.join(STAGING),
    };
    fs::create_dir_all(&staging.dir)
        .with_context(|| format!("cannot create {}", staging.dir.display()))?;
    staging.expire();
    // A ready receiver promised to take everything from the start.
    let resume: Vec<Resume> = files
        .iter()
        .map(|f| {
            if ready {
                Ok(Resume::fresh())
            } else {
                staging.resume(f)
            }
        })
        .collect::<anyhow::Result<_>>()
        .context("cannot read the staged files")?;
    let (mut rx, complete) = Receiving::new(files.clone(), resume)?;
    let needed = total - rx.bytes_done();
    let free = fs4::available_space(&args.out).unwrap_or(u64::MAX);
    if needed > free {
        conn.abort("not enough free space at the receiver").await;
        bail!(
            "not enough free space in {}: {} needed, {} available",
            args.out.display(),
            HumanBytes(needed),
            HumanBytes(free)
        );
    }
    if !args.yes
        && !ask(&format!(
            "Receive {} into {}?",
            HumanBytes(total),
            args.out.display()
        ))?
    {
        conn.send(&Control::Decline).await?;
        conn.node.leave().await;
        bail!("declined");
    }
    // Complete before any data: empty files, and files whose last chunk was written but
    // not yet renamed when an earlier run stopped.
    for &i in &complete {
        let done = staging.file(&files[i], "done");
        if fs::metadata(&done).is_err() {
            if files[i].size == 0 {
                File::create(&done)?;
            } else {
                fs::rename(staging.file(&files[i], "part"), &done)?;
                let _ = fs::remove_file(staging.file(&files[i], "sums"));
            }
        }
    }
    conn.send(&Control::Accept { from: rx.accept() }).await?;
    let skipped = rx.bytes_done();
    let bar = out.progress(total, skipped);
    let started = Instant::now();
    let mut writer: Option<Writer> = None;
    while !rx.is_done() {
        let input = tokio::select! {
            i = conn.next(STALL_TIMEOUT) => i,
            _ = crate::shutdown_signal() => { bar.abandon(); conn.abort("the receiver stopped").await; bail!("interrupted; run again to resume") }
        };
        let frame = match input {
            Ok(Input::Data(d)) => d,
            Ok(Input::Control(c)) => {
                conn.abort("expected data").await;
                bail!("the sender broke the protocol: {c:?} during data");
            }
            Err(e) => {
                bar.abandon();
                return Err(
                    e.context("the transfer broke off; run the same command again to resume")
                );
            }
        };
        let got = match rx.on_chunk(&frame) {
            Ok(g) => g,
            Err(e) => {
                conn.abort("a chunk failed verification").await;
                return Err(e.into());
            }
        };
        if writer.as_ref().map(|w| w.file) != Some(got.file) {
            let e = &files[got.file];
            writer = Some(
                Writer::open(&staging, e, got.file, got.index)
                    .with_context(|| format!("cannot write into {}", staging.dir.display()))?,
            );
        }
        let Some(w) = writer.as_mut() else { continue };
        w.write(got.payload, &got.hash)
            .context("cannot write the file")?;
        bar.inc(got.payload.len() as u64);
        if got.complete
            && let Some(w) = writer.take()
        {
            w.finish(&staging, &files[got.file])?;
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let placed = place(&args.out, &staging, &files, &plan)?;
    // Asked before `done`, after which the sender leaves and its path goes with it.
    let path = conn.path(PATH_WAIT).await;
    conn.send(&Control::Done).await?;
    conn.node.leave().await;
    let _ = fs::remove_dir(&staging.dir);
    summary(
        &out,
        "received",
        files.len(),
        total - skipped,
        skipped,
        secs,
        path.as_ref(),
    )?;
    out.say(
        || format!("saved: {}", placed.join(", ")),
        || json!({"event": "saved", "out": args.out.display().to_string(), "names": placed}),
    )
}

/// Moves the verified files to their final names; a top-level name that exists gets a
/// suffix, so nothing is overwritten. Returns the top-level names used.
fn place(
    out: &Path,
    staging: &Staging,
    files: &[FileEntry],
    plan: &[Vec<String>],
) -> anyhow::Result<Vec<String>> {
    let mut tops: HashMap<&str, String> = HashMap::new();
    let mut order = Vec::new();
    for (f, parts) in files.iter().zip(plan) {
        let top = match tops.get(parts[0].as_str()) {
            Some(t) => t.clone(),
            None => {
                let mut name = parts[0].clone();
                let mut n = 1;
                while fs::symlink_metadata(out.join(&name)).is_ok() || order.contains(&name) {
                    name = names::with_suffix(&parts[0], n);
                    n += 1;
                }
                tops.insert(&parts[0], name.clone());
                order.push(name.clone());
                name
            }
        };
        let mut dest = out.join(&top);
        for p in &parts[1..] {
            dest.push(p);
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        if fs::symlink_metadata(&dest).is_ok() {
            bail!(
                "{} appeared while saving; not overwriting it",
                dest.display()
            );
        }
        fs::rename(staging.file(f, "done"), &dest)
            .with_context(|| format!("cannot save {}", dest.display()))?;
    }
    Ok(order)
}
