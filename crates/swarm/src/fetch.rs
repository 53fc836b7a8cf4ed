//! One file being fetched, sans-IO: which group to ask of which neighbour, and which few to
//! take from the origin — the origin is a fallback, not a peer.
//!
//! Groups are delivered in order from `position` (the consumer's read position), so the
//! groups just ahead of it — the **near zone**, [`Config::window`] groups — go in order to the
//! least busy neighbour that has them, and when no neighbour has one, or one that was asked
//! misses its deadline, that group alone is taken from the origin with an HTTP `Range`
//! request (hedged: the peer's copy is still welcome if it comes first). Beyond it, groups go
//! **rarest first** among the neighbours; a group no neighbour has is taken from the origin
//! only after [`Config::http_after`], and not while a neighbour says it is fetching it from
//! the origin itself — so two peers seldom pull the same bytes from it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::link::{Link, runs};
use crate::tree::groups;
use crate::wire::{Have, MAX_RANGE};

/// Waits after a failed origin request: the first, and the most.
const HTTP_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

/// How a fetch trades the origin against peers.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Groups ahead of the read position fetched in order, with the origin as fallback.
    pub window: u64,
    /// How long a near-zone group may be awaited from a neighbour before the origin is asked
    /// too.
    pub near_wait: Duration,
    /// How long a far group may be awaited from a neighbour before it is asked elsewhere.
    pub far_wait: Duration,
    /// How long a group no neighbour has waits before the origin is asked for it (beyond the
    /// near zone).
    pub http_after: Duration,
    /// HTTP requests at once.
    pub max_http: usize,
    /// Groups per HTTP request, at most.
    pub http_groups: u32,
    /// Groups scanned for rarest-first beyond the near zone (bounds a plan's cost).
    pub scan: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 32,
            near_wait: Duration::from_secs(2),
            far_wait: Duration::from_secs(10),
            http_after: Duration::from_secs(1),
            max_http: 2,
            http_groups: 64,
            scan: 8192,
        }
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<K> {
    /// Send this `Request` to neighbour `peer` (built by [`Link::ask`]).
    Ask { peer: K, msg: Vec<u8> },
    /// Fetch `first..first + count` from the origin (an HTTP `Range` request), and tell the
    /// neighbours (`Fetching`).
    Http { first: u64, count: u32 },
}

/// Where a group in flight comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From<K> {
    Peer(K),
    Http,
    /// Asked of a peer, and of the origin too (the near zone's hedge).
    Both(K),
}

#[derive(Debug)]
pub struct Fetch<K> {
    cfg: Config,
    have: Have,
    position: u64,
    inflight: HashMap<u64, (From<K>, Instant)>,
    /// Groups a neighbour said it fetches from the origin, trusted until then.
    announced: HashMap<u64, Instant>,
    http_running: usize,
    /// After a failed origin request, none other before this (backing off 1 s to 30 s).
    http_pause: Option<Instant>,
    http_backoff: Duration,
    /// When each missing group was first seen missing everywhere (for `http_after`).
    nowhere_since: HashMap<u64, Instant>,
    pub from_http: u64,
    pub from_peers: u64,
}

impl<K: Copy + Eq + std::fmt::Debug> Fetch<K> {
    pub fn new(size: u64, have: Have, cfg: Config) -> Fetch<K> {
        debug_assert_eq!(have.groups(), groups(size));
        let mut f = Fetch {
            cfg,
            have,
            position: 0,
            inflight: HashMap::new(),
            announced: HashMap::new(),
            http_running: 0,
            http_pause: None,
            http_backoff: HTTP_BACKOFF.0,
            nowhere_since: HashMap::new(),
            from_http: 0,
            from_peers: 0,
        };
        f.advance();
        f
    }

    pub fn have(&self) -> &Have {
        &self.have
    }

    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
    }

    /// The first group not yet here: what the consumer waits for.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn advance(&mut self) {
        while self.position < self.have.groups() && self.have.has(self.position) {
            self.position += 1;
        }
    }

    /// What to ask for now, of which neighbours and of the origin.
    pub fn plan(&mut self, now: Instant, peers: &mut [(K, &mut Link)]) -> Vec<Action<K>> {
        let mut actions = Vec::new();
        let n = self.have.groups();
        self.announced.retain(|_, until| now < *until);
        let near_end = (self.position + self.cfg.window).min(n);
        // The near zone, in order.
        let mut to_http = Vec::new();
        let mut asks: Vec<(usize, u64)> = Vec::new();
        for g in self.position..near_end {
            if self.have.has(g) {
                continue;
            }
            match self.inflight.get(&g).copied() {
                None => {}
                // Asked of a peer that is late: the origin too.
                Some((From::Peer(_), since)) if now >= since + self.cfg.near_wait => {
                    to_http.push(g);
                    continue;
                }
                Some(_) => continue,
            }
            match best_peer(now, peers, g, &asks) {
                Some(i) => asks.push((i, g)),
                None if self.announced.contains_key(&g) => {}
                None => to_http.push(g),
            }
        }
        // Beyond it: rarest first among what the neighbours have.
        let scan_end = (near_end + self.cfg.scan).min(n);
        let mut far: Vec<(usize, u64)> = Vec::new();
        for g in near_end..scan_end {
            if self.have.has(g) || self.inflight.contains_key(&g) {
                continue;
            }
            let holders = peers
                .iter()
                .filter(|(_, l)| l.ready() && l.remote().has(g))
                .count();
            if holders == 0 {
                if self.announced.contains_key(&g) {
                    continue;
                }
                let since = *self.nowhere_since.entry(g).or_insert(now);
                if now >= since + self.cfg.http_after {
                    to_http.push(g);
                }
            } else {
                self.nowhere_since.remove(&g);
                far.push((holders, g));
            }
        }
        far.sort_by_key(|&(holders, g)| (holders, g));
        for (_, g) in far {
            if let Some(i) = best_peer(now, peers, g, &asks) {
                asks.push((i, g));
            }
        }
        // Requests, one per run of groups to the same neighbour.
        let mut by_peer: Vec<Vec<u64>> = vec![Vec::new(); peers.len()];
        for (i, g) in asks {
            by_peer[i].push(g);
        }
        for (i, mut gs) in by_peer.into_iter().enumerate() {
            gs.sort_unstable();
            let (key, link) = &mut peers[i];
            for (first, count) in runs(&gs, MAX_RANGE) {
                let near = first < near_end;
                let within = if near {
                    self.cfg.near_wait
                } else {
                    self.cfg.far_wait
                };
                let msg = link.ask(now, first, count, within);
                for g in first..first + u64::from(count) {
                    self.inflight.insert(g, (From::Peer(*key), now));
                }
                actions.push(Action::Ask { peer: *key, msg });
            }
        }
        // The origin: runs of what no neighbour can give, a few requests at once.
        to_http.sort_unstable();
        to_http.dedup();
        for (first, count) in runs(&to_http, self.cfg.http_groups) {
            if self.http_running >= self.cfg.max_http || self.http_pause.is_some_and(|t| now < t) {
                break;
            }
            self.http_running += 1;
            for g in first..first + u64::from(count) {
                // A late peer's request stands: whichever copy comes first is used.
                let entry = match self.inflight.get(&g) {
                    Some((From::Peer(k) | From::Both(k), since)) => (From::Both(*k), *since),
                    _ => (From::Http, now),
                };
                self.inflight.insert(g, entry);
            }
            actions.push(Action::Http { first, count });
        }
        actions
    }

    /// A verified group arrived (from a peer, or `None`: the origin). Returns whether it was
    /// new, and the neighbour whose request for it should be cancelled (a hedge's loser).
    pub fn got(&mut self, group: u64, from: Option<K>) -> (bool, Option<K>) {
        let was = self.inflight.remove(&group);
        if !self.have.set(group) {
            return (false, None);
        }
        match from {
            Some(_) => self.from_peers += 1,
            None => {
                self.from_http += 1;
                self.http_backoff = HTTP_BACKOFF.0;
            }
        }
        self.nowhere_since.remove(&group);
        self.advance();
        let cancel = match (was, from) {
            (Some((From::Both(k), _)), None) => Some(k),
            _ => None,
        };
        (true, cancel)
    }

    /// Groups a neighbour will not send (rejected, choked, late, or it left): asked again.
    pub fn lost(&mut self, groups: &[u64]) {
        for g in groups {
            match self.inflight.get(g) {
                Some((From::Peer(_), _)) => {
                    self.inflight.remove(g);
                }
                // Still coming from the origin.
                Some((From::Both(_), since)) => {
                    let since = *since;
                    self.inflight.insert(*g, (From::Http, since));
                }
                _ => {}
            }
        }
    }

    /// A neighbour left: everything asked of it is asked again.
    pub fn gone(&mut self, peer: K) {
        let lost: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, (f, _))| matches!(f, From::Peer(k) | From::Both(k) if *k == peer))
            .map(|(g, _)| *g)
            .collect();
        self.lost(&lost);
    }

    /// An HTTP request ended (every group it brought was passed to [`Fetch::got`]); groups it
    /// did not bring are asked again.
    pub fn http_done(&mut self, first: u64, count: u32) {
        self.http_running = self.http_running.saturating_sub(1);
        for g in first..first + u64::from(count) {
            if let Some((From::Http, _)) = self.inflight.get(&g) {
                self.inflight.remove(&g);
            } else if let Some((From::Both(k), since)) = self.inflight.get(&g).copied() {
                self.inflight.insert(g, (From::Peer(k), since));
            }
        }
    }

    /// An HTTP request failed (call before [`Fetch::http_done`]): the origin is not asked again
    /// for a while, 1 s doubling to 30 s, until one succeeds.
    pub fn http_failed(&mut self, now: Instant) {
        self.http_pause = Some(now + self.http_backoff);
        self.http_backoff = (self.http_backoff * 2).min(HTTP_BACKOFF.1);
    }

    /// A neighbour is fetching these from the origin: leave them to it for a while.
    pub fn announced(&mut self, now: Instant, first: u64, count: u32) {
        let until = now + self.cfg.near_wait * 2;
        for g in first
            ..first
                .saturating_add(u64::from(count))
                .min(self.have.groups())
        {
            self.announced.insert(g, until);
        }
    }
}

/// The least busy ready neighbour that has `g` and may be asked, counting this plan's asks.
fn best_peer<K>(
    now: Instant,
    peers: &[(K, &mut Link)],
    g: u64,
    planned: &[(usize, u64)],
) -> Option<usize> {
    peers
        .iter()
        .enumerate()
        .filter(|(_, (_, l))| l.can_ask(now) && l.remote().has(g))
        .map(|(i, (_, l))| {
            (
                l.outstanding() + planned.iter().filter(|(j, _)| *j == i).count(),
                i,
            )
        })
        .filter(|(load, _)| *load < crate::link::MAX_OUTSTANDING)
        .min()
        .map(|(_, i)| i)
}
