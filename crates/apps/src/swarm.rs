//! Verified swarms natively (`peerweb seed`, `peerweb fetch`): one file's swarm on a native
//! peer — neighbours from the server, one [`Link`] each on its default channel, groups read
//! from and written to the file in place, every group verified (also those read from disk
//! before they are served, so a file changed under a seeder is caught, not spread), the origin
//! asked over HTTP only for what the scheduler ([`Fetch`]) cannot get from neighbours.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use peerweb_net::http::Http;
use peerweb_net::{Node, Options, SendHandle};
use peerweb_peer::{Event, SwarmBytes, SwarmCmd};
use peerweb_swarm::fetch::{Action, Config, Fetch};
use peerweb_swarm::link::{Event as LinkEvent, Link, LinkError, Serve, Upload};
use peerweb_swarm::tree::{GROUP, group_len};
use peerweb_swarm::wire::{Have, Msg};
use peerweb_swarm::{FileEntry, Manifest, Tree};
use tokio::sync::mpsc;

use crate::manifest::MANIFEST_NAME;

/// Messages queued per neighbour (the rest of its requests wait in its link).
const QUEUE: usize = 64;
const TICK: Duration = Duration::from_millis(50);
/// How long a fetch waits for the server's introductions before it plans without them.
const NO_SERVER_WAIT: Duration = Duration::from_secs(5);
/// How long it waits for introduced neighbours to say what they have.
const NEIGHBOUR_WAIT: Duration = Duration::from_secs(1);
/// The largest manifest or outboard fetched.
const MAX_FETCHED: u64 = 64 << 20;

/// One file of a swarm: its entry, its tree, where it is.
#[derive(Debug, Clone)]
pub struct Shared {
    pub entry: FileEntry,
    pub tree: Tree,
    pub path: PathBuf,
}

/// What a swarm reports.
#[derive(Debug, Clone)]
pub enum SwarmEvent {
    /// In the swarm, as `id`.
    Joined { path: String, id: String },
    /// Counters, now and then: bytes from the origin, from peers, uploaded; neighbours.
    Progress {
        path: String,
        have: u64,
        groups: u64,
        http: u64,
        p2p: u64,
        up: u64,
        peers: usize,
    },
    /// A neighbour sent a group that failed verification: dropped and reported.
    Banned {
        path: String,
        peer: String,
        group: u64,
    },
    /// Every group is here and verified.
    Complete { path: String },
    /// The origin failed (retried on the next plan).
    OriginFailed { path: String, why: String },
}

/// Reads the manifest at `path` (a file, or a folder holding [`MANIFEST_NAME`]) and the trees
/// of the files it lists (from their outboards), checking each file's size on disk.
pub fn shares(path: &Path, trusted: Option<&str>) -> anyhow::Result<(Manifest, Vec<Shared>)> {
    let file = if path.is_dir() {
        path.join(MANIFEST_NAME)
    } else {
        path.to_path_buf()
    };
    let (manifest, base) = crate::manifest::read_in(&file, trusted)?;
    let mut out = Vec::new();
    for e in &manifest.files {
        let path = base.join(&e.path);
        let len = std::fs::metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if len != e.size {
            bail!(
                "{}: {len} bytes, the manifest says {}",
                path.display(),
                e.size
            );
        }
        let tree = crate::manifest::listed_tree(&base, e)?;
        out.push(Shared {
            entry: e.clone(),
            tree,
            path,
        });
    }
    Ok((manifest, out))
}

/// Where a file to fetch is: its entry and tree, and its URL at the origin.
#[derive(Debug, Clone)]
pub struct Remote {
    pub entry: FileEntry,
    pub tree: Tree,
    pub url: String,
}

/// Finds `url`'s manifest (beside it, unless `manifest` names one), its entry and tree.
pub async fn locate(
    http: &Http,
    url: &str,
    manifest: Option<&str>,
    trusted: Option<&str>,
) -> anyhow::Result<Remote> {
    let file_url = url::Url::parse(url).context("not a URL")?;
    let manifest_url = match manifest {
        Some(m) => file_url.join(m)?,
        None => file_url.join(MANIFEST_NAME)?,
    };
    let bytes = http
        .get(
            manifest_url.as_str(),
            peerweb_swarm::manifest::MAX_BYTES as u64,
        )
        .await
        .map_err(|e| anyhow!("no manifest: {e}"))?;
    let m = Manifest::parse(&bytes).with_context(|| manifest_url.to_string())?;
    if let Some(k) = trusted {
        m.check_signer(k)?;
    }
    let base = manifest_url.join(".")?;
    let rel = file_url
        .as_str()
        .strip_prefix(base.as_str())
        .ok_or_else(|| anyhow!("{url} is not under the manifest's folder {base}"))?;
    let path = crate::percent_decode(rel)
        .ok_or_else(|| anyhow!("{url}: bad percent-encoding in the path"))?;
    let entry = m
        .file(&path)
        .ok_or_else(|| anyhow!("the manifest does not list {path}"))?
        .clone();
    let outboard = match &entry.outboard {
        Some(o) => http
            .get(base.join(o)?.as_str(), MAX_FETCHED)
            .await
            .map_err(|e| anyhow!("no outboard: {e}"))?,
        None => Vec::new(),
    };
    let tree = Tree::from_outboard(entry.size, entry.root_hash(), &outboard)
        .with_context(|| format!("outboard of {path}"))?;
    Ok(Remote {
        entry,
        tree,
        url: file_url.to_string(),
    })
}

/// Which groups of `file` are already there and verified (a fetch resumed); the file is made
/// `size` bytes long.
pub fn resume(file: &std::fs::File, tree: &Tree) -> anyhow::Result<Have> {
    let mut have = Have::none(tree.size());
    if file.metadata()?.len() != tree.size() {
        file.set_len(tree.size())?;
        return Ok(have);
    }
    let mut buf = vec![0; GROUP as usize];
    for g in 0..tree.groups() {
        let len = group_len(tree.size(), g) as usize;
        file.read_exact_at(&mut buf[..len], g * GROUP)?;
        if tree.verify(g, &buf[..len]).is_ok() {
            have.set(g);
        }
    }
    Ok(have)
}

struct Neighbour {
    /// The scheduler's name for it.
    key: u32,
    link: Link,
    queue: mpsc::Sender<Vec<u8>>,
    open: bool,
}

/// One file's swarm until `stop` fires — or, when fetching, until it is complete and `linger`
/// is false. `origin` is the file's URL for what no neighbour has (fetching only).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut opts: Options,
    shared: &Shared,
    file: Arc<std::fs::File>,
    have: Have,
    origin: Option<(Http, String)>,
    upload: Upload,
    linger: bool,
    events: mpsc::UnboundedSender<SwarmEvent>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let size = shared.entry.size;
    let root = *shared.tree.root().as_bytes();
    let name = shared.entry.path.clone();
    let complete = have.is_complete();
    if complete && origin.is_some() && !linger {
        // A fetch resumed with every group there and verified: nothing to do.
        let _ = events.send(SwarmEvent::Complete { path: name });
        return Ok(());
    }
    opts.room = shared.entry.root.clone();
    opts.settings.swarm = Some(complete);
    let mut node = Node::join(opts).await?;
    let _ = events.send(SwarmEvent::Joined {
        path: name.clone(),
        id: node.id().to_owned(),
    });
    let sender = node.send_handle();
    let mut fetch: Option<Fetch<u32>> =
        (!complete).then(|| Fetch::new(size, have.clone(), Config::default()));
    let mut have = have;
    let mut peers: HashMap<String, Neighbour> = HashMap::new();
    // The scheduler's key of each neighbour, back to its id.
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut next_key = 0u32;
    let mut banned: HashSet<String> = HashSet::new();
    let (http_tx, mut http_rx) = mpsc::unbounded_channel();
    let mut ticker = tokio::time::interval(TICK);
    let mut last_report = Instant::now();
    let (mut from_http, mut from_peers, mut up) = (0u64, 0u64, 0u64);
    // What the server has been told of (`swarm-bytes` carries the difference).
    let mut told = SwarmBytes::default();
    // Nothing is planned until the server names the neighbours (or, unreachable, for
    // NO_SERVER_WAIT), then for up to NEIGHBOUR_WAIT while none of them has said what it has:
    // a small file lies wholly in the near window and would otherwise go to the origin first.
    let mut plan_after = Some(Instant::now() + NO_SERVER_WAIT);
    let mut buf = vec![0u8; GROUP as usize];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            ev = node.next_event() => {
                let Some(ev) = ev else { bail!("the node stopped") };
                match ev {
                    Event::Joined { peers: ids } => {
                        if plan_after.is_some() {
                            let wait = if ids.is_empty() { Duration::ZERO } else { NEIGHBOUR_WAIT };
                            plan_after = Some(Instant::now() + wait);
                        }
                        for id in ids {
                            add(&mut peers, &mut names, &mut next_key, &sender, &banned, &id, root, size, upload);
                        }
                    }
                    Event::PeerJoined { peer, .. } => add(&mut peers, &mut names, &mut next_key, &sender, &banned, &peer, root, size, upload),
                    Event::PeerLeft { peer } => drop_neighbour(&mut peers, &mut names, &mut fetch, &peer),
                    Event::Open { peer } => {
                        if let Some(n) = peers.get_mut(&peer) {
                            n.open = true;
                            for m in n.link.start(&have) {
                                let _ = n.queue.try_send(m);
                            }
                        }
                    }
                    Event::Message { peer, label, binary: true, data } if label == "peerweb" => {
                        let Some(n) = peers.get_mut(&peer) else { continue };
                        let result = n.link.receive(Instant::now(), &data, &shared.tree, &have);
                        for m in n.link.take_out() {
                            let _ = n.queue.try_send(m);
                        }
                        let key = n.key;
                        match result {
                            Err(LinkError::Bad(group)) => {
                                drop_neighbour(&mut peers, &mut names, &mut fetch, &peer);
                                banned.insert(peer.clone());
                                node.swarm(SwarmCmd::Bad(peer.clone())).await?;
                                let _ = events.send(SwarmEvent::Banned { path: name.clone(), peer, group });
                            }
                            Err(e) => {
                                tracing::warn!(peer = %peer, "swarm neighbour dropped: {e}");
                                drop_neighbour(&mut peers, &mut names, &mut fetch, &peer);
                                banned.insert(peer);
                            }
                            Ok(LinkEvent::Verified { group, bytes }) => {
                                from_peers += bytes.len() as u64;
                                got(&file, &mut fetch, &mut have, &mut peers, &names, group, bytes, Some(key))?;
                            }
                            Ok(LinkEvent::Lost(groups)) => {
                                if let Some(f) = &mut fetch { f.lost(&groups); }
                            }
                            Ok(LinkEvent::Fetching { first, count }) => {
                                if let Some(f) = &mut fetch { f.announced(Instant::now(), first, count); }
                            }
                            Ok(LinkEvent::Has | LinkEvent::None) => {}
                        }
                    }
                    _ => {}
                }
            }
            Some((first, count, result)) = http_rx.recv() => {
                let result: Result<Vec<u8>, String> = result;
                match result {
                    Ok(bytes) => {
                        let mut at = 0usize;
                        for g in first..first + u64::from(count) {
                            let len = group_len(size, g) as usize;
                            let Some(group) = bytes.get(at..at + len) else { break };
                            if shared.tree.verify(g, group).is_err() {
                                bail!("group {g} from the origin does not match the manifest: the origin's file changed, or something between changes it");
                            }
                            from_http += len as u64;
                            got(&file, &mut fetch, &mut have, &mut peers, &names, g, group, None)?;
                            at += len;
                        }
                    }
                    Err(why) => {
                        let _ = events.send(SwarmEvent::OriginFailed { path: name.clone(), why });
                        if let Some(f) = &mut fetch { f.http_failed(Instant::now()); }
                    }
                }
                if let Some(f) = &mut fetch { f.http_done(first, count); }
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                for n in peers.values_mut() {
                    let (late, msgs) = n.link.expire(now);
                    for m in msgs { let _ = n.queue.try_send(m); }
                    if let Some(f) = &mut fetch && !late.is_empty() {
                        f.lost(&late);
                    }
                    // Serving, while the neighbour's queue has room.
                    while n.open && n.queue.capacity() > 1 {
                        let Serve::Group(g) = n.link.serve(now) else { break };
                        let len = group_len(size, g) as usize;
                        file.read_exact_at(&mut buf[..len], g * GROUP)?;
                        if shared.tree.verify(g, &buf[..len]).is_err() {
                            bail!("{}: group {g} on disk no longer matches the manifest; stopped serving it", shared.path.display());
                        }
                        up += len as u64;
                        let m = n.link.data(g, &buf[..len]);
                        let _ = n.queue.try_send(m);
                    }
                    for m in n.link.take_out() { let _ = n.queue.try_send(m); }
                }
                let waiting = plan_after.is_some_and(|t| {
                    now < t && !peers.values().any(|n| n.link.remote().count() > 0)
                });
                if !waiting {
                    plan_after = None;
                }
                if let Some(f) = fetch.as_mut().filter(|_| !waiting) {
                    let mut links: Vec<(u32, &mut Link)> = Vec::new();
                    for n in peers.values_mut() {
                        if n.open && n.queue.capacity() > 4 { links.push((n.key, &mut n.link)); }
                    }
                    let actions = f.plan(now, &mut links);
                    drop(links);
                    let mut nowhere = false;
                    for a in actions {
                        match a {
                            Action::Ask { peer, msg } => {
                                if let Some(n) = names.get(&peer).and_then(|id| peers.get(id)) {
                                    let _ = n.queue.try_send(msg);
                                }
                            }
                            Action::Http { first, count } => {
                                nowhere = true;
                                for n in peers.values() {
                                    if n.open { let _ = n.queue.try_send(Msg::Fetching { first, count }.encode()); }
                                }
                                match &origin {
                                    Some((http, url)) => {
                                        let (http, url, tx) = (http.clone(), url.clone(), http_tx.clone());
                                        let start = first * GROUP;
                                        let end = (start + (first..first + u64::from(count)).map(|g| group_len(size, g)).sum::<u64>()).saturating_sub(1);
                                        tokio::spawn(async move {
                                            let r = http.range(&url, start, end).await.map_err(|e| e.to_string());
                                            let _ = tx.send((first, count, r));
                                        });
                                    }
                                    None => {
                                        // No origin: only neighbours can give it.
                                        let _ = http_tx.send((first, count, Err("no origin given".into())));
                                    }
                                }
                            }
                        }
                    }
                    if nowhere && peers.len() < 8 {
                        node.swarm(SwarmCmd::More).await?;
                    }
                }
                let done = fetch.as_ref().is_some_and(Fetch::is_complete);
                if done || last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    let _ = events.send(SwarmEvent::Progress {
                        path: name.clone(), have: have.count(), groups: have.groups(),
                        http: from_http, p2p: from_peers, up, peers: peers.len(),
                    });
                    let now = SwarmBytes { http: from_http, p2p: from_peers, up };
                    report_bytes(&node, &mut told, now).await?;
                }
                if done {
                    fetch = None;
                    file.sync_all()?;
                    node.swarm(SwarmCmd::Seed).await?;
                    let _ = events.send(SwarmEvent::Complete { path: name.clone() });
                    if !linger { break; }
                }
            }
        }
    }
    // The last word: what it moved in all.
    let _ = events.send(SwarmEvent::Progress {
        path: name.clone(),
        have: have.count(),
        groups: have.groups(),
        http: from_http,
        p2p: from_peers,
        up,
        peers: peers.len(),
    });
    report_bytes(
        &node,
        &mut told,
        SwarmBytes {
            http: from_http,
            p2p: from_peers,
            up,
        },
    )
    .await?;
    node.leave().await;
    Ok(())
}

/// Tells the server the bytes moved since it was last told (`told`), if any, for its metrics.
async fn report_bytes(node: &Node, told: &mut SwarmBytes, now: SwarmBytes) -> anyhow::Result<()> {
    let d = SwarmBytes {
        http: now.http - told.http,
        p2p: now.p2p - told.p2p,
        up: now.up - told.up,
    };
    if !d.is_zero() {
        node.swarm(SwarmCmd::Bytes(d)).await?;
        *told = now;
    }
    Ok(())
}

/// A neighbour: its link, its key, and the task that sends to it in order (waiting for its
/// window).
#[allow(clippy::too_many_arguments)]
fn add(
    peers: &mut HashMap<String, Neighbour>,
    names: &mut HashMap<u32, String>,
    next_key: &mut u32,
    sender: &SendHandle,
    banned: &HashSet<String>,
    id: &str,
    root: [u8; 32],
    size: u64,
    upload: Upload,
) {
    if peers.contains_key(id) || banned.contains(id) {
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let (h, peer) = (sender.clone(), id.to_owned());
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let Err(e) = h.send(&peer, None, true, m).await {
                tracing::debug!(peer = %peer, "swarm: sending stopped: {e}");
                break;
            }
        }
    });
    let key = *next_key;
    *next_key = next_key.wrapping_add(1);
    names.insert(key, id.to_owned());
    peers.insert(
        id.to_owned(),
        Neighbour {
            key,
            link: Link::new(Instant::now(), root, size, upload),
            queue: tx,
            open: false,
        },
    );
}

/// A neighbour gone (it left, or was dropped): what was asked of it is asked again.
fn drop_neighbour(
    peers: &mut HashMap<String, Neighbour>,
    names: &mut HashMap<u32, String>,
    fetch: &mut Option<Fetch<u32>>,
    id: &str,
) {
    if let Some(n) = peers.remove(id) {
        names.remove(&n.key);
        if let Some(f) = fetch {
            f.gone(n.key);
        }
    }
}

/// A verified group: written in place, and told to the neighbours.
#[allow(clippy::too_many_arguments)]
fn got(
    file: &std::fs::File,
    fetch: &mut Option<Fetch<u32>>,
    have: &mut Have,
    peers: &mut HashMap<String, Neighbour>,
    names: &HashMap<u32, String>,
    group: u64,
    bytes: &[u8],
    from: Option<u32>,
) -> anyhow::Result<()> {
    let Some(f) = fetch else { return Ok(()) };
    let (new, cancel) = f.got(group, from);
    if !new {
        return Ok(());
    }
    file.write_all_at(bytes, group * GROUP)?;
    have.set(group);
    let loser = cancel.and_then(|k| names.get(&k));
    for (id, n) in peers.iter_mut() {
        if Some(id) == loser
            && let Some(m) = n.link.cancel(group)
        {
            let _ = n.queue.try_send(m);
        }
        if n.open {
            let _ = n.queue.try_send(n.link.have(group));
        }
    }
    Ok(())
}
