//! A swarm in virtual time: peers wired by links with latency and bandwidth, an origin that
//! counts the bytes it serves, staggered joins, a seeder that leaves, an origin that goes
//! down, and a poisoned peer — every run checks that every peer ends with the exact file,
//! that no bad byte was ever accepted, and how much the origin was spared.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::fetch::{Action, Config, Fetch};
use crate::link::{Event, Link, LinkError, Serve, Upload};
use crate::tree::{GROUP, Tree, group_len};
use crate::wire::{Have, Msg};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Seeder,
    Leecher,
    /// Serves groups with one byte changed.
    Poisoned,
}

struct Peer {
    role: Role,
    /// The file as this peer holds it (only verified groups are written).
    data: Vec<u8>,
    fetch: Option<Fetch<usize>>,
    links: BTreeMap<usize, Link>,
    banned: Vec<usize>,
    joined: bool,
    left: bool,
    bad_seen: usize,
}

/// What travels: a message between peers, or an origin response.
enum Ev {
    Msg {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Http {
        peer: usize,
        first: u64,
        count: u32,
    },
}

struct Sim {
    now: Instant,
    file: Vec<u8>,
    tree: Tree,
    peers: Vec<Peer>,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    /// When each directed link is free again (its bandwidth).
    busy: HashMap<(usize, usize), Instant>,
    latency: Duration,
    /// Bytes per second of each directed link.
    rate: u64,
    origin_bytes: u64,
    origin_down_at: Option<Instant>,
}

impl Sim {
    fn new(seed: u64, size: usize, roles: &[Role]) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut file = vec![0; size];
        rng.fill_bytes(&mut file);
        let tree = Tree::of(&file);
        let now = Instant::now();
        let peers = roles
            .iter()
            .map(|&role| Peer {
                role,
                data: if role == Role::Leecher {
                    vec![0; size]
                } else {
                    file.clone()
                },
                fetch: (role == Role::Leecher)
                    .then(|| Fetch::new(size as u64, Have::none(size as u64), Config::default())),
                links: BTreeMap::new(),
                banned: Vec::new(),
                joined: false,
                left: false,
                bad_seen: 0,
            })
            .collect();
        Sim {
            now,
            file,
            tree,
            peers,
            queue: BTreeMap::new(),
            seq: 0,
            busy: HashMap::new(),
            latency: Duration::from_millis(20),
            rate: 20_000_000,
            origin_bytes: 0,
            origin_down_at: None,
        }
    }

    fn size(&self) -> u64 {
        self.file.len() as u64
    }

    fn local(&self, p: usize) -> Have {
        match &self.peers[p].fetch {
            Some(f) => f.have().clone(),
            None => Have::all(self.size()),
        }
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn send(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let free = self
            .busy
            .get(&(from, to))
            .copied()
            .unwrap_or(self.now)
            .max(self.now);
        let done = free + Duration::from_micros(bytes.len() as u64 * 1_000_000 / self.rate);
        self.busy.insert((from, to), done);
        self.push(done + self.latency, Ev::Msg { from, to, bytes });
    }

    /// `p` joins: linked with up to eight peers already in (as the server introduces).
    fn join(&mut self, p: usize) {
        self.peers[p].joined = true;
        let others: Vec<usize> = (0..self.peers.len())
            .filter(|&q| q != p && self.peers[q].joined && !self.peers[q].left)
            .take(8)
            .collect();
        for q in others {
            for (a, b) in [(p, q), (q, p)] {
                let upload = Upload::UNLIMITED;
                let mut link =
                    Link::new(self.now, *self.tree.root().as_bytes(), self.size(), upload);
                let first = link.start(&self.local(a));
                self.peers[a].links.insert(b, link);
                for m in first {
                    self.send(a, b, m);
                }
            }
        }
    }

    fn leave(&mut self, p: usize) {
        self.peers[p].left = true;
        let links: Vec<usize> = self.peers[p].links.keys().copied().collect();
        self.peers[p].links.clear();
        for q in links {
            self.drop_link(q, p);
        }
    }

    fn drop_link(&mut self, p: usize, q: usize) {
        self.peers[p].links.remove(&q);
        if let Some(f) = &mut self.peers[p].fetch {
            f.gone(q);
        }
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        if self.peers[to].left || !self.peers[to].links.contains_key(&from) {
            return;
        }
        let local = self.local(to);
        let now = self.now;
        let tree = self.tree.clone();
        let peer = &mut self.peers[to];
        let Some(link) = peer.links.get_mut(&from) else {
            return;
        };
        let result = link.receive(now, &bytes, &tree, &local);
        let replies = link.take_out();
        for m in replies {
            self.send(to, from, m);
        }
        match result {
            Err(LinkError::Bad(_)) => {
                let peer = &mut self.peers[to];
                peer.bad_seen += 1;
                peer.banned.push(from);
                self.drop_link(to, from);
            }
            Err(e) => panic!("peer {to} ← {from}: {e}"),
            Ok(Event::Verified { group, bytes }) => {
                let bytes = bytes.to_vec();
                self.accept(to, group, &bytes, Some(from));
            }
            Ok(Event::Lost(groups)) => {
                if let Some(f) = &mut self.peers[to].fetch {
                    f.lost(&groups);
                }
            }
            Ok(Event::Fetching { first, count }) => {
                if let Some(f) = &mut self.peers[to].fetch {
                    f.announced(now, first, count);
                }
            }
            Ok(Event::Has | Event::None) => {}
        }
    }

    /// A verified group reaches `p`'s file; its neighbours hear it has it.
    fn accept(&mut self, p: usize, group: u64, bytes: &[u8], from: Option<usize>) {
        let Some(f) = &mut self.peers[p].fetch else {
            return;
        };
        let (new, cancel) = f.got(group, from);
        if !new {
            return;
        }
        let at = (group * GROUP) as usize;
        self.peers[p].data[at..at + bytes.len()].copy_from_slice(bytes);
        let mut out = Vec::new();
        for (&q, link) in &mut self.peers[p].links {
            if Some(q) == cancel
                && let Some(m) = link.cancel(group)
            {
                out.push((q, m));
            }
            out.push((q, link.have(group)));
        }
        for (q, m) in out {
            self.send(p, q, m);
        }
    }

    /// Every peer plans, serves and expires.
    fn tick(&mut self) {
        let now = self.now;
        for p in 0..self.peers.len() {
            if !self.peers[p].joined || self.peers[p].left {
                continue;
            }
            // Expired requests go back to the plan.
            let keys: Vec<usize> = self.peers[p].links.keys().copied().collect();
            for q in &keys {
                let (late, msgs) = self.peers[p].links.get_mut(q).unwrap().expire(now);
                if let Some(f) = &mut self.peers[p].fetch {
                    f.lost(&late);
                }
                for m in msgs {
                    self.send(p, *q, m);
                }
            }
            // Serving.
            for q in &keys {
                while let Some(Serve::Group(g)) =
                    self.peers[p].links.get_mut(q).map(|l| l.serve(now))
                {
                    let at = (g * GROUP) as usize;
                    let mut bytes =
                        self.peers[p].data[at..at + group_len(self.size(), g) as usize].to_vec();
                    if self.peers[p].role == Role::Poisoned && !bytes.is_empty() {
                        bytes[0] ^= 1;
                    }
                    let m = self.peers[p].links.get_mut(q).unwrap().data(g, &bytes);
                    self.send(p, *q, m);
                }
                let replies = self.peers[p]
                    .links
                    .get_mut(q)
                    .map(Link::take_out)
                    .unwrap_or_default();
                for m in replies {
                    self.send(p, *q, m);
                }
            }
            // Fetching.
            let Some(mut fetch) = self.peers[p].fetch.take() else {
                continue;
            };
            let mut links: Vec<(usize, &mut Link)> = self.peers[p]
                .links
                .iter_mut()
                .map(|(k, l)| (*k, l))
                .collect();
            let actions = fetch.plan(now, &mut links);
            self.peers[p].fetch = Some(fetch);
            for a in actions {
                match a {
                    Action::Ask { peer, msg } => self.send(p, peer, msg),
                    Action::Http { first, count } => {
                        for q in keys.clone() {
                            self.send(p, q, Msg::Fetching { first, count }.encode());
                        }
                        // The origin: 40 ms to the first byte, then 10 MB/s.
                        let bytes: u64 = (first..first + u64::from(count))
                            .map(|g| group_len(self.size(), g))
                            .sum();
                        let at =
                            now + Duration::from_millis(40) + Duration::from_micros(bytes / 10);
                        self.push(
                            at,
                            Ev::Http {
                                peer: p,
                                first,
                                count,
                            },
                        );
                    }
                }
            }
        }
    }

    fn http(&mut self, p: usize, first: u64, count: u32) {
        let down = self.origin_down_at.is_some_and(|t| self.now >= t);
        if !down && !self.peers[p].left {
            for g in first..first + u64::from(count) {
                let at = (g * GROUP) as usize;
                let bytes = self.file[at..at + group_len(self.size(), g) as usize].to_vec();
                self.origin_bytes += bytes.len() as u64;
                // Bytes from the origin are verified too.
                self.tree.verify(g, &bytes).unwrap();
                self.accept(p, g, &bytes, None);
            }
        }
        if let Some(f) = &mut self.peers[p].fetch {
            if down {
                f.http_failed(self.now);
            }
            f.http_done(first, count);
        }
    }

    /// Runs until every leecher that stays is complete, or `limit` passes.
    fn run(
        &mut self,
        joins: &[(usize, Duration)],
        leaves: &[(usize, Duration)],
        limit: Duration,
    ) -> bool {
        let start = self.now;
        let tick = Duration::from_millis(50);
        let mut next_tick = start;
        loop {
            for &(p, at) in joins {
                if !self.peers[p].joined && self.now >= start + at {
                    self.join(p);
                }
            }
            for &(p, at) in leaves {
                if !self.peers[p].left && self.now >= start + at {
                    self.leave(p);
                }
            }
            let done = self
                .peers
                .iter()
                .all(|p| p.left || p.fetch.as_ref().is_none_or(Fetch::is_complete))
                && joins.iter().all(|(p, _)| self.peers[*p].joined);
            if done {
                return true;
            }
            if self.now >= start + limit {
                return false;
            }
            let next_ev = self.queue.keys().next().map(|k| k.0);
            if next_ev.is_some_and(|t| t <= next_tick) {
                let (k, ev) = self.queue.pop_first().unwrap();
                self.now = self.now.max(k.0);
                match ev {
                    Ev::Msg { from, to, bytes } => self.deliver(from, to, bytes),
                    Ev::Http { peer, first, count } => self.http(peer, first, count),
                }
            } else {
                self.now = self.now.max(next_tick);
                self.tick();
                next_tick = self.now + tick;
            }
        }
    }
}

#[test]
fn a_staggered_swarm_spares_the_origin_and_every_peer_gets_the_exact_file() {
    // Ten leechers joining a second apart, 4 MiB, no seeder: the origin is the only source
    // of the first copy (the ceiling is 1 - 1/10 = 90% offload).
    let size = 4 << 20;
    let roles = [Role::Leecher; 10];
    let mut sim = Sim::new(1, size, &roles);
    let start = sim.now;
    let joins: Vec<(usize, Duration)> = (0..10)
        .map(|p| (p, Duration::from_secs(p as u64)))
        .collect();
    assert!(
        sim.run(&joins, &[], Duration::from_secs(120)),
        "complete in time"
    );
    for p in 0..10 {
        assert!(sim.peers[p].data == sim.file, "peer {p} has the exact file");
    }
    let delivered = 10 * size as u64;
    let offload = 1.0 - sim.origin_bytes as f64 / delivered as f64;
    let from_peers: u64 = sim
        .peers
        .iter()
        .filter_map(|p| p.fetch.as_ref())
        .map(|f| f.from_peers)
        .sum();
    eprintln!(
        "offload {offload:.3}, origin {} B, groups from peers {from_peers}, took {:?}",
        sim.origin_bytes,
        sim.now - start
    );
    assert!(
        offload > 0.85,
        "offload {offload:.2}: the origin sent {} of {delivered}",
        sim.origin_bytes
    );
}

#[test]
fn with_no_seeder_the_first_peer_takes_the_origin_once_and_the_rest_share_it() {
    let size = 2 << 20;
    let roles = [Role::Leecher; 6];
    let mut sim = Sim::new(2, size, &roles);
    let joins: Vec<(usize, Duration)> = (0..6)
        .map(|p| (p, Duration::from_millis(700 * p as u64)))
        .collect();
    // The origin goes down once the first peer could have it all.
    sim.origin_down_at = Some(sim.now + Duration::from_secs(3));
    assert!(sim.run(&joins, &[], Duration::from_secs(120)));
    for p in 0..6 {
        assert!(sim.peers[p].data == sim.file, "peer {p}");
    }
    assert!(
        sim.origin_bytes < 2 * size as u64,
        "origin sent {}",
        sim.origin_bytes
    );
}

#[test]
fn a_poisoned_peer_gets_no_bad_byte_in_and_is_banned_after_one_group() {
    let size = 1 << 20;
    let mut roles = vec![Role::Poisoned, Role::Seeder];
    roles.extend([Role::Leecher; 5]);
    let mut sim = Sim::new(3, size, &roles);
    let joins: Vec<(usize, Duration)> = (0..7)
        .map(|p| (p, Duration::from_millis(100 * p as u64)))
        .collect();
    assert!(sim.run(&joins, &[], Duration::from_secs(120)));
    for p in 2..7 {
        assert!(sim.peers[p].data == sim.file, "peer {p}: no bad byte kept");
        assert!(
            sim.peers[p].bad_seen <= 1,
            "peer {p} took {} bad groups",
            sim.peers[p].bad_seen
        );
        assert!(
            !sim.peers[p].links.contains_key(&0),
            "peer {p} still linked to the poisoner"
        );
    }
    eprintln!(
        "bad seen: {:?}",
        sim.peers.iter().map(|p| p.bad_seen).collect::<Vec<_>>()
    );
    assert!(
        (2..7).any(|p| sim.peers[p].banned == vec![0]),
        "someone caught it"
    );
}

#[test]
fn a_neighbour_asking_without_end_is_cut_off_and_the_queue_stays_bounded() {
    let size = 8 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let tree = Tree::of(&data);
    let now = Instant::now();
    let all = Have::all(size as u64);
    let mut seeder = Link::new(now, *tree.root().as_bytes(), size as u64, Upload::UNLIMITED);
    let mut asker = Link::new(now, *tree.root().as_bytes(), size as u64, Upload::UNLIMITED);
    for m in asker.start(&Have::none(size as u64)) {
        seeder.receive(now, &m, &tree, &all).unwrap();
    }
    // 256 groups queued (nothing served: the seeder's driver has not run) is allowed...
    for first in (0..256).step_by(64) {
        let m = Msg::Request {
            first,
            count: 64,
            deadline_ms: 0,
        }
        .encode();
        seeder.receive(now, &m, &tree, &all).unwrap();
    }
    // ...asking again for what is queued changes nothing...
    let m = Msg::Request {
        first: 0,
        count: 64,
        deadline_ms: 0,
    }
    .encode();
    seeder.receive(now, &m, &tree, &all).unwrap();
    // ...and one more group ends the link.
    let m = Msg::Request {
        first: 256,
        count: 1,
        deadline_ms: 0,
    }
    .encode();
    assert!(matches!(
        seeder.receive(now, &m, &tree, &all),
        Err(LinkError::Flood)
    ));
}

#[test]
fn random_swarms_always_complete_with_the_exact_file() {
    for seed in 0..12 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let size = 1 + (rng.next_u64() % (3 << 20)) as usize;
        let leechers = 2 + (rng.next_u64() % 6) as usize;
        let mut roles = vec![Role::Seeder];
        roles.extend(std::iter::repeat_n(Role::Leecher, leechers));
        if rng.next_u64() % 2 == 0 {
            roles.push(Role::Poisoned);
        }
        let mut sim = Sim::new(seed, size, &roles);
        sim.latency = Duration::from_millis(1 + rng.next_u64() % 80);
        sim.rate = 1_000_000 + rng.next_u64() % 30_000_000;
        let joins: Vec<(usize, Duration)> = (0..roles.len())
            .map(|p| (p, Duration::from_millis(rng.next_u64() % 3000)))
            .collect();
        // The seeder leaves mid-way in half the runs: its groups come from others or the origin.
        let leaves: Vec<(usize, Duration)> = if rng.next_u64() % 2 == 0 {
            vec![(0, Duration::from_millis(500 + rng.next_u64() % 3000))]
        } else {
            vec![]
        };
        assert!(
            sim.run(&joins, &leaves, Duration::from_secs(600)),
            "seed {seed} finished"
        );
        for (p, peer) in sim.peers.iter().enumerate() {
            if peer.role == Role::Leecher {
                assert!(peer.data == sim.file, "seed {seed}: peer {p}");
                assert!(peer.bad_seen <= 1, "seed {seed}: peer {p}");
            }
        }
    }
}
