//! `peerweb receive`: the offer checked, the data staged and verified, the files placed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::HumanBytes;
use peerweb_net::Node;
use peerweb_peer::Event;
use peerweb_transfer::code::{Code, Link};
use peerweb_transfer::session::{Manifest, Receiving, Resume};
use peerweb_transfer::wire::{CHUNK, Control, FileEntry, chunk_len, chunks};
use peerweb_transfer::{Handshake, Secret, names};
use serde_json::json;
use tokio::time::Instant;

use super::conn::{Conn, Input, authenticate};
use super::{Out, PATH_WAIT, ReceiveArgs, STAGING, STALL_TIMEOUT, STEP_TIMEOUT, summary};

/// Staged files of one transfer.
#[derive(Clone)]
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

/// Asks on the terminal, off the runtime's thread: the connection stays alive meanwhile.
async fn ask(question: String) -> anyhow::Result<bool> {
    blocking(move || {
        eprint!("{question} [y/N] ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
    })
    .await
}

/// Runs disk work that may block for long (hashing what is staged, syncing a finished file)
/// on tokio's blocking threads: the peer's runtime has one thread, and the connection's
/// timers and acknowledgements must not wait for the disk.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a disk task failed")?
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
    let resume: Vec<Resume> = if ready {
        files.iter().map(|_| Resume::fresh()).collect()
    } else {
        let (staging, files) = (staging.clone(), files.clone());
        blocking(move || files.iter().map(|f| staging.resume(f)).collect())
            .await
            .context("cannot read the staged files")?
    };
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
        && !ask(format!(
            "Receive {} into {}?",
            HumanBytes(total),
            args.out.display()
        ))
        .await?
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
            let (staging, entry) = (staging.clone(), files[got.file].clone());
            blocking(move || w.finish(&staging, &entry)).await?;
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
