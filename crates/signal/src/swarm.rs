//! Swarms: peers sharing content, known to the server by content id, introduced to each other
//! a few at a time. Unlike a room nothing is broadcast: a peer learns only the neighbours it
//! is introduced to (and who was introduced to it), so a swarm of 10,000 costs memory per
//! peer — its links, at most `max_links` — never per pair, and no member can list the others.
//!
//! Picking neighbours: seeds (peers with all of the content) first, then anyone, among those
//! with room for another link, fewest links first — drawn from a bounded random sample, so a
//! join costs the same in a swarm of ten or of a hundred thousand.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use peerweb_proto::{SWARM_ID_LEN, SwarmBytes};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use crate::{SwarmSummary, TOP_SWARMS};

/// How many candidates a pick looks at, per neighbour wanted.
const SAMPLE_PER_PICK: usize = 4;
/// Peers a member remembers having reported bad (never introduced again).
const MAX_BLOCKED: usize = 64;

/// The swarm limits, from the core's `Config`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_peers: usize,
    /// Neighbours introduced on joining.
    pub on_join: usize,
    /// Neighbours introduced per `swarm-more`.
    pub per_more: usize,
    /// Links one member may have.
    pub max_links: usize,
    /// `swarm-more` allowance: this many at once, then one per `more_every`.
    pub more_burst: u32,
    pub more_every: Duration,
}

#[derive(Debug)]
struct Member {
    /// Index in `Swarm::members`.
    at: usize,
    /// Index in `Swarm::seeds` when a seed.
    seed_at: Option<usize>,
    links: Vec<String>,
    /// Peers this member reported bad.
    blocked: Vec<String>,
    /// `swarm-more` tokens, in thousandths, and when they were counted.
    more_milli: u64,
    more_at: Instant,
}

#[derive(Debug, Default)]
struct Swarm {
    members: Vec<String>,
    seeds: Vec<String>,
    info: HashMap<String, Member>,
    /// What its members reported moving (`swarm-bytes`) while the swarm existed.
    bytes: SwarmBytes,
}

/// An introduction: `to` learns of `peer` (with its seed flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Intro {
    pub to: String,
    pub peer: String,
    pub seed: bool,
}

/// What a join or a `swarm-more` gave: the new neighbours (id, seed) and who to tell.
#[derive(Debug, Default)]
pub(crate) struct Picked {
    pub peers: Vec<(String, bool)>,
    pub intros: Vec<Intro>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinError {
    Full,
}

/// Every swarm on the server.
#[derive(Debug, Default)]
pub(crate) struct Swarms {
    map: HashMap<String, Swarm>,
    pub introductions: u64,
    pub bad_reports: u64,
    /// What members of every swarm reported moving, since the server started.
    pub bytes: SwarmBytes,
    /// Members of all swarms (kept, not counted: the metrics ask twice a second).
    members: usize,
}

impl Swarms {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn exists(&self, swarm: &str) -> bool {
        self.map.contains_key(swarm)
    }

    /// Whether `me` is in `swarm` (tests).
    #[cfg(test)]
    pub fn contains(&self, swarm: &str, me: &str) -> bool {
        self.map.get(swarm).is_some_and(|s| s.info.contains_key(me))
    }

    pub fn members(&self) -> usize {
        self.members
    }

    /// `me` enters `swarm` (or is in it already: then its current neighbours, no one told).
    pub fn join(
        &mut self,
        now: Instant,
        rng: &mut ChaCha20Rng,
        lim: &Limits,
        swarm: &str,
        me: &str,
        seed: bool,
    ) -> Result<Picked, JoinError> {
        let s = self.map.entry(swarm.to_owned()).or_default();
        if let Some(m) = s.info.get(me) {
            let peers = m
                .links
                .iter()
                .map(|l| {
                    (
                        l.clone(),
                        s.info.get(l).is_some_and(|i| i.seed_at.is_some()),
                    )
                })
                .collect();
            return Ok(Picked {
                peers,
                intros: Vec::new(),
            });
        }
        if s.members.len() >= lim.max_peers {
            return Err(JoinError::Full);
        }
        s.members.push(me.to_owned());
        self.members += 1;
        s.info.insert(
            me.to_owned(),
            Member {
                at: s.members.len() - 1,
                seed_at: None,
                links: Vec::new(),
                blocked: Vec::new(),
                more_milli: u64::from(lim.more_burst) * 1000,
                more_at: now,
            },
        );
        if seed {
            s.make_seed(me);
        }
        let picked = s.pick(rng, lim, me, lim.on_join);
        self.introductions += picked.intros.len() as u64;
        Ok(picked)
    }

    /// More neighbours for `me`, or how long until it may ask again.
    pub fn more(
        &mut self,
        now: Instant,
        rng: &mut ChaCha20Rng,
        lim: &Limits,
        swarm: &str,
        me: &str,
    ) -> Option<Result<Picked, Duration>> {
        let s = self.map.get_mut(swarm)?;
        let m = s.info.get_mut(me)?;
        let every_ms = lim.more_every.as_millis().max(1) as u64;
        let elapsed = now.saturating_duration_since(m.more_at).as_millis() as u64;
        m.more_milli =
            (m.more_milli + elapsed * 1000 / every_ms).min(u64::from(lim.more_burst) * 1000);
        m.more_at = now;
        if m.more_milli < 1000 {
            let wait = (1000 - m.more_milli) * every_ms / 1000;
            return Some(Err(Duration::from_millis(wait.max(1))));
        }
        m.more_milli -= 1000;
        let picked = s.pick(rng, lim, me, lim.per_more);
        self.introductions += picked.intros.len() as u64;
        Some(Ok(picked))
    }

    /// `me` has all of the content now; `false` if it is not in the swarm.
    pub fn seed(&mut self, swarm: &str, me: &str) -> bool {
        match self.map.get_mut(swarm) {
            Some(s) if s.info.contains_key(me) => {
                s.make_seed(me);
                true
            }
            _ => false,
        }
    }

    /// Takes `me` out of `swarm`; returns the neighbours to tell. `None`: not a member.
    pub fn leave(&mut self, swarm: &str, me: &str) -> Option<Vec<String>> {
        let s = self.map.get_mut(swarm)?;
        let m = s.info.remove(me)?;
        s.members.swap_remove(m.at);
        self.members -= 1;
        if let Some(moved) = s.members.get(m.at)
            && let Some(i) = s.info.get_mut(moved)
        {
            i.at = m.at;
        }
        if let Some(at) = m.seed_at {
            s.seeds.swap_remove(at);
            if let Some(moved) = s.seeds.get(at)
                && let Some(i) = s.info.get_mut(moved)
            {
                i.seed_at = Some(at);
            }
        }
        for l in &m.links {
            if let Some(other) = s.info.get_mut(l) {
                other.links.retain(|x| x != me);
            }
        }
        if s.members.is_empty() {
            self.map.remove(swarm);
        }
        Some(m.links)
    }

    /// `me` reports `bad` (a neighbour) for bytes that failed verification: counted, the
    /// link cut and never made again. Returns whether `bad` was a neighbour (then it is told
    /// that `me` left).
    pub fn bad(&mut self, swarm: &str, me: &str, bad: &str) -> bool {
        let Some(s) = self.map.get_mut(swarm) else {
            return false;
        };
        let linked = s
            .info
            .get(me)
            .is_some_and(|m| m.links.iter().any(|l| l == bad));
        if !linked {
            return false;
        }
        self.bad_reports += 1;
        if let Some(m) = s.info.get_mut(me) {
            m.links.retain(|l| l != bad);
            if m.blocked.len() >= MAX_BLOCKED {
                m.blocked.remove(0);
            }
            m.blocked.push(bad.to_owned());
        }
        if let Some(b) = s.info.get_mut(bad) {
            b.links.retain(|l| l != me);
        }
        true
    }

    /// `me` reports bytes it moved in `swarm`; `false` if it is not in it.
    pub fn report_bytes(&mut self, swarm: &str, me: &str, bytes: SwarmBytes) -> bool {
        match self.map.get_mut(swarm) {
            Some(s) if s.info.contains_key(me) => {
                s.bytes.add(bytes);
                self.bytes.add(bytes);
                true
            }
            _ => false,
        }
    }

    /// The [`TOP_SWARMS`] swarms with the most members (then the most bytes), largest first:
    /// one pass over the swarms, so the metrics' label sets stay bounded at any count.
    pub fn top(&self) -> [Option<SwarmSummary>; TOP_SWARMS] {
        let key = |t: &SwarmSummary| (t.members, t.bytes.http.saturating_add(t.bytes.p2p));
        let mut top: [Option<SwarmSummary>; TOP_SWARMS] = [None; TOP_SWARMS];
        for (id, s) in &self.map {
            let Ok(id) = <[u8; SWARM_ID_LEN]>::try_from(id.as_bytes()) else {
                continue;
            };
            let mut cand = SwarmSummary {
                id,
                members: u32::try_from(s.members.len()).unwrap_or(u32::MAX),
                seeds: u32::try_from(s.seeds.len()).unwrap_or(u32::MAX),
                bytes: s.bytes,
            };
            // Insertion into a short sorted array.
            for slot in &mut top {
                match slot {
                    None => {
                        *slot = Some(cand);
                        break;
                    }
                    Some(t) if key(&cand) > key(t) => std::mem::swap(t, &mut cand),
                    Some(_) => {}
                }
            }
        }
        top
    }

    /// Whether `me` is a seed of `swarm` here.
    pub fn is_seed(&self, swarm: &str, me: &str) -> bool {
        self.map
            .get(swarm)
            .and_then(|s| s.info.get(me))
            .is_some_and(|m| m.seed_at.is_some())
    }

    /// Links `me` to `other`, a member of `swarm` on another node, if `me` has fewer than `cap`
    /// links, is not linked to it already and did not report it. Returns whether it did.
    pub fn link_remote(&mut self, swarm: &str, me: &str, other: &str, cap: usize) -> bool {
        let Some(s) = self.map.get_mut(swarm) else {
            return false;
        };
        if other == me || s.info.contains_key(other) {
            return false;
        }
        let Some(m) = s.info.get_mut(me) else {
            return false;
        };
        if m.links.len() >= cap || m.links.iter().chain(&m.blocked).any(|l| l == other) {
            return false;
        }
        m.links.push(other.to_owned());
        self.introductions += 1;
        true
    }

    /// Cuts `me`'s link to `other` (who left, or reported `me`); whether there was one.
    pub fn unlink(&mut self, swarm: &str, me: &str, other: &str) -> bool {
        let Some(m) = self.map.get_mut(swarm).and_then(|s| s.info.get_mut(me)) else {
            return false;
        };
        let before = m.links.len();
        m.links.retain(|l| l != other);
        m.links.len() != before
    }

    /// Whether `a` and `b` are neighbours in `swarm`.
    pub fn linked(&self, swarm: &str, a: &str, b: &str) -> bool {
        self.map
            .get(swarm)
            .and_then(|s| s.info.get(a))
            .is_some_and(|m| m.links.iter().any(|l| l == b))
    }

    /// Checks the registry's invariants (tests): indexes, symmetric links within bounds,
    /// no empty swarm.
    #[cfg(test)]
    pub fn check(&self, lim: &Limits) {
        assert_eq!(
            self.members,
            self.map.values().map(|s| s.members.len()).sum::<usize>()
        );
        for (id, s) in &self.map {
            assert!(!s.members.is_empty(), "empty swarm {id} kept");
            assert_eq!(s.members.len(), s.info.len());
            for (i, p) in s.members.iter().enumerate() {
                assert_eq!(s.info[p].at, i);
            }
            for (i, p) in s.seeds.iter().enumerate() {
                assert_eq!(s.info[p].seed_at, Some(i));
            }
            for (p, m) in &s.info {
                // Links to members on other nodes come on top, up to the same again.
                let local = m.links.iter().filter(|l| s.info.contains_key(*l)).count();
                assert!(local <= lim.max_links, "{p} has too many links");
                assert!(m.links.len() <= 2 * lim.max_links, "{p} has too many links");
                for l in &m.links {
                    assert_ne!(l, p);
                    let Some(other) = s.info.get(l) else {
                        continue;
                    };
                    assert!(other.links.contains(p), "link {p}–{l} one-sided");
                    assert!(!m.blocked.contains(l), "{p} linked to a peer it reported");
                }
            }
        }
    }
}

impl Swarm {
    fn make_seed(&mut self, me: &str) {
        if let Some(m) = self.info.get_mut(me)
            && m.seed_at.is_none()
        {
            m.seed_at = Some(self.seeds.len());
            self.seeds.push(me.to_owned());
        }
    }

    /// Up to `n` new neighbours for `me`, linked both ways.
    fn pick(&mut self, rng: &mut ChaCha20Rng, lim: &Limits, me: &str, n: usize) -> Picked {
        let Some(mine) = self.info.get(me) else {
            return Picked::default();
        };
        let room = lim.max_links.saturating_sub(mine.links.len());
        let n = n.min(room);
        if n == 0 {
            return Picked::default();
        }
        let eligible = |id: &String| {
            id != me
                && !mine.links.contains(id)
                && !mine.blocked.contains(id)
                && self.info.get(id).is_some_and(|o| {
                    o.links.len() < lim.max_links && !o.blocked.iter().any(|b| b == me)
                })
        };
        let mut candidates: Vec<&String> = Vec::new();
        let budget = n * SAMPLE_PER_PICK;
        for list in [&self.seeds, &self.members] {
            let draws: Vec<&String> = if list.len() <= budget {
                list.iter().collect()
            } else {
                (0..budget)
                    .map(|_| &list[(rng.next_u64() % list.len() as u64) as usize])
                    .collect()
            };
            for id in draws {
                if eligible(id) && !candidates.contains(&id) {
                    candidates.push(id);
                }
            }
        }
        // Seeds first, then fewest links; ties keep the draw's order (a stable sort).
        let mut scored: Vec<(bool, usize, String)> = candidates
            .into_iter()
            .map(|id| {
                let o = &self.info[id];
                (o.seed_at.is_none(), o.links.len(), id.clone())
            })
            .collect();
        scored.sort_by_key(|c| (c.0, c.1));
        let mut picked = Picked::default();
        let my_seed = mine.seed_at.is_some();
        for (not_seed, _, id) in scored {
            if picked.peers.len() == n {
                break;
            }
            picked.intros.push(Intro {
                to: id.clone(),
                peer: me.to_owned(),
                seed: my_seed,
            });
            picked.peers.push((id, !not_seed));
        }
        for (id, _) in &picked.peers {
            if let Some(o) = self.info.get_mut(id) {
                o.links.push(me.to_owned());
            }
        }
        if let Some(m) = self.info.get_mut(me) {
            m.links
                .extend(picked.peers.iter().map(|(id, _)| id.clone()));
        }
        picked
    }
}
