//! `peerweb send`: the files, the code and link, the offer and the data.

use std::fs::{self, File};
use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use indicatif::HumanBytes;
use peerweb_net::Node;
use peerweb_peer::Event;
use peerweb_transfer::Handshake;
use peerweb_transfer::code::{Code, Link, SECRET_BYTES};
use peerweb_transfer::session::{Sending, accept_all};
use peerweb_transfer::wire::{CHUNK, Chunk, Control, FILES_PER_MESSAGE, FileEntry, MAX_FILES};
use serde_json::json;
use tokio::time::Instant;

use super::conn::{Conn, authenticate};
use super::{NAMEPLATE_TRIES, Out, PATH_WAIT, STALL_TIMEOUT, SendArgs, random, summary};

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
