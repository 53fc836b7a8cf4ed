//! What the nodes of a cluster share — sessions, inboxes, rooms — as data types, and the
//! operations on them as a model without I/O.
//!
//! The core never talks to the bus: it emits [`BusOp`]s and is fed their results as
//! [`BusEvent`]s (see `Output::Bus`, `Input::Bus`). A driver runs them on a real bus
//! (`peerweb-server`'s `bus` module: in one process on [`Model`], or on Redis). [`Model`] is
//! the reference: the Redis bus answers every operation as it does (a conformance suite and
//! random operations check it), and the core's own tests run on it in virtual time.
//!
//! - **Sessions**: which node holds a peer's connection, with an *epoch* that grows on every
//!   claim (a node acts for a peer only while its epoch is current) and a *lease* the holding
//!   node renews; a lapsed lease ends the session exactly once, whichever node reaps it.
//! - **Inboxes**: directed messages to a peer, kept in order until it acknowledges them, so a
//!   peer that reconnects to any node gets what was sent to it meanwhile. Bounded: a full
//!   inbox refuses, it never drops.
//! - **Rooms**: members in join order, and a log of joins and leaves that every node with a
//!   member in the room applies in the same order.
//! - **Swarm directory**: who is in each swarm on any node (and which are seeds), so a node
//!   can introduce its members to members of other nodes. Soft state: introductions travel as
//!   inbox entries from [`SWARM_FROM`]; a session that ends leaves the directory.
//! - **Wake-ups**: a node is told when its peers' inboxes or its watched rooms' logs have
//!   something new, or to evict a peer another node claimed. They carry no data: the node
//!   reads after the last entry it applied, so a lost or forged wake-up costs nothing.
//!
//! Times are wall-clock milliseconds (leases are compared across nodes), given by the caller.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;

/// The position of an entry in an inbox or a room log. Ids come from one counter for the
/// whole bus, so one is never used twice (not even by a room emptied and made again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    /// Before every entry.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// The smallest id after this one.
    pub fn next(self) -> EntryId {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }

    /// Parses `ms-seq` (Redis's stream id).
    pub fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A message in a peer's inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub from: String,
    pub data: String,
}

/// What a send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// In the inbox at this position; the holding node was woken.
    Queued(EntryId),
    /// The peer has no session.
    NoSuchPeer,
    /// The peer's inbox holds its limit of unacknowledged messages.
    InboxFull,
    /// A room in common was asked for, and the two have none.
    NotShared,
}

/// An entry of a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    Joined { peer: String, meta: Option<String> },
    Left { peer: String },
}

/// A room's members in join order (with the metadata they joined with), as of log entry `at`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    pub at: EntryId,
    pub members: Vec<(String, Option<String>)>,
}

/// What a join did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// Joined; the log has the join at `members.at`.
    Joined(Members),
    /// Was a member already; nothing logged.
    Already(Members),
    /// The room has its limit of members.
    Full,
    /// The peer has no session (it lapsed).
    NoSession,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The session's new epoch.
    pub epoch: u64,
    /// The node that held the session before, if it existed (a resumed session keeps its
    /// rooms and inbox); `None` for a new session.
    pub previous: Option<String>,
    /// The rooms the session is in, by name.
    pub rooms: Vec<String>,
}

/// A wake-up for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// A peer of this node has something new in its inbox.
    Inbox { peer: String },
    /// A watched room's log has something new.
    Room { room: String },
    /// Another node claimed this peer at `epoch`: drop its connection here if it is older.
    Evict { peer: String, epoch: u64 },
    /// Wake-ups may have been lost (the bus connection dropped, or this node fell behind):
    /// re-read every inbox and room log this node holds. Also: the bus is reachable again
    /// after [`Wake::Lost`].
    Resync,
    /// The bus is unreachable (an operation failed for it): until [`Wake::Resync`], signals
    /// between this node's own peers go directly and the others are refused at once.
    Lost,
}

/// The `from` of an inbox entry that is not a peer's signal but a swarm introduction (or its
/// end) from another node: peer ids are base64url, so no peer has it.
pub const SWARM_FROM: &str = "~swarm";

/// Entries a room's log keeps (older ones are dropped; a reader that fell behind them starts
/// again from the members).
pub const ROOM_LOG_ENTRIES: usize = 1000;

#[derive(Debug)]
struct Session {
    node: String,
    epoch: u64,
    lease_until: u64,
    rooms: BTreeSet<String>,
    swarms: BTreeSet<String>,
    inbox: VecDeque<Entry>,
}

#[derive(Debug, Default)]
struct Room {
    members: Vec<(String, Option<String>)>,
    log: VecDeque<(EntryId, RoomEvent)>,
}

/// The bus in memory: the reference semantics. Operations return the wake-ups they cause as
/// `(node, wake)`; delivering them is the caller's business.
#[derive(Debug, Default)]
pub struct Model {
    last_id: EntryId,
    nodes: HashMap<String, (u64, String)>,
    sessions: HashMap<String, Session>,
    rooms: HashMap<String, Room>,
    watchers: HashMap<String, HashSet<String>>,
    /// Swarm members on any node, with their seed flag.
    swarms: HashMap<String, BTreeMap<String, bool>>,
}

/// Wake-ups an operation caused: `(node, wake)`.
pub type Wakes = Vec<(String, Wake)>;

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    fn next_id(&mut self) -> EntryId {
        self.last_id = self.last_id.next();
        self.last_id
    }

    fn log(&mut self, room: &str, event: RoomEvent, wakes: &mut Wakes) -> EntryId {
        let id = self.next_id();
        let r = self.rooms.entry(room.to_owned()).or_default();
        r.log.push_back((id, event));
        while r.log.len() > ROOM_LOG_ENTRIES {
            r.log.pop_front();
        }
        for node in self.watchers.get(room).into_iter().flatten() {
            wakes.push((
                node.clone(),
                Wake::Room {
                    room: room.to_owned(),
                },
            ));
        }
        id
    }

    fn take_out(&mut self, room: &str, peer: &str, wakes: &mut Wakes) -> Option<EntryId> {
        let r = self.rooms.get_mut(room)?;
        let before = r.members.len();
        r.members.retain(|(p, _)| p != peer);
        if r.members.len() == before {
            return None;
        }
        if let Some(s) = self.sessions.get_mut(peer) {
            s.rooms.remove(room);
        }
        let id = self.log(
            room,
            RoomEvent::Left {
                peer: peer.to_owned(),
            },
            wakes,
        );
        // An empty room is forgotten (its log too: readers start again from the members).
        if self.rooms.get(room).is_some_and(|r| r.members.is_empty()) {
            self.rooms.remove(room);
        }
        Some(id)
    }

    fn end_session(&mut self, peer: &str, wakes: &mut Wakes) -> Vec<(String, EntryId)> {
        let Some(s) = self.sessions.remove(peer) else {
            return Vec::new();
        };
        for swarm in &s.swarms {
            self.swarm_out(swarm, peer);
        }
        s.rooms
            .into_iter()
            .filter_map(|room| self.take_out(&room, peer, wakes).map(|id| (room, id)))
            .collect()
    }

    /// `node` is alive until `now_ms + ttl_ms`, with a short description.
    pub fn beat(&mut self, node: &str, info: &str, now_ms: u64, ttl_ms: u64) {
        self.nodes.retain(|_, (until, _)| *until > now_ms);
        self.nodes.insert(
            node.to_owned(),
            (now_ms.saturating_add(ttl_ms), info.to_owned()),
        );
    }

    /// The nodes alive at `now_ms`, with their descriptions, by name.
    pub fn nodes(&self, now_ms: u64) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .nodes
            .iter()
            .filter(|(_, (until, _))| *until > now_ms)
            .map(|(n, (_, info))| (n.clone(), info.clone()))
            .collect();
        v.sort();
        v
    }

    /// `node` holds `peer`'s connection now, leased until `lease_until_ms`; creates the
    /// session when it does not exist.
    pub fn claim(&mut self, peer: &str, node: &str, lease_until_ms: u64) -> Claim {
        let s = self
            .sessions
            .entry(peer.to_owned())
            .or_insert_with(|| Session {
                node: String::new(),
                epoch: 0,
                lease_until: 0,
                rooms: BTreeSet::new(),
                swarms: BTreeSet::new(),
                inbox: VecDeque::new(),
            });
        let previous = (s.epoch > 0).then(|| std::mem::replace(&mut s.node, node.to_owned()));
        s.node = node.to_owned();
        s.epoch += 1;
        s.lease_until = lease_until_ms;
        Claim {
            epoch: s.epoch,
            previous,
            rooms: s.rooms.iter().cloned().collect(),
        }
    }

    /// The node holding `peer`, and its epoch.
    pub fn session(&self, peer: &str) -> Option<(String, u64)> {
        self.sessions.get(peer).map(|s| (s.node.clone(), s.epoch))
    }

    /// Extends the leases of sessions held at the given epochs; for each, whether the epoch is
    /// still current.
    pub fn renew(&mut self, sessions: &[(String, u64)], lease_until_ms: u64) -> Vec<bool> {
        sessions
            .iter()
            .map(|(peer, epoch)| match self.sessions.get_mut(peer) {
                Some(s) if s.epoch == *epoch => {
                    s.lease_until = lease_until_ms;
                    true
                }
                _ => false,
            })
            .collect()
    }

    /// Appends to `to`'s inbox (at most `max_inbox` unacknowledged) and wakes its node;
    /// with `shared_room`, only if `from` and `to` are in a room together.
    pub fn send(
        &mut self,
        to: &str,
        from: &str,
        data: &str,
        max_inbox: usize,
        shared_room: bool,
        wakes: &mut Wakes,
    ) -> Sent {
        let id = self.last_id.next();
        if shared_room {
            let rooms = |p: &str| self.sessions.get(p).map(|s| &s.rooms);
            let shared = match (rooms(from), rooms(to)) {
                (Some(a), Some(b)) => a.intersection(b).next().is_some(),
                _ => false,
            };
            if self.sessions.contains_key(to) && !shared {
                return Sent::NotShared;
            }
        }
        let Some(s) = self.sessions.get_mut(to) else {
            return Sent::NoSuchPeer;
        };
        if s.inbox.len() >= max_inbox {
            return Sent::InboxFull;
        }
        s.inbox.push_back(Entry {
            id,
            from: from.to_owned(),
            data: data.to_owned(),
        });
        wakes.push((
            s.node.clone(),
            Wake::Inbox {
                peer: to.to_owned(),
            },
        ));
        self.last_id = id;
        Sent::Queued(id)
    }

    /// Up to `count` messages of `peer`'s inbox after `after`, in order.
    pub fn inbox(&self, peer: &str, after: EntryId, count: usize) -> Vec<Entry> {
        self.sessions
            .get(peer)
            .map(|s| {
                s.inbox
                    .iter()
                    .filter(|e| e.id > after)
                    .take(count)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `peer` has every message up to `upto`: they leave its inbox.
    pub fn ack(&mut self, peer: &str, upto: EntryId) {
        if let Some(s) = self.sessions.get_mut(peer) {
            while s.inbox.front().is_some_and(|e| e.id <= upto) {
                s.inbox.pop_front();
            }
        }
    }

    /// `peer` (which must have a session) joins `room` of at most `max_members`.
    pub fn join(
        &mut self,
        room: &str,
        peer: &str,
        meta: Option<&str>,
        max_members: usize,
        wakes: &mut Wakes,
    ) -> Joined {
        if !self.sessions.contains_key(peer) {
            return Joined::NoSession;
        }
        let existing = self.rooms.get(room);
        if existing.is_some_and(|r| r.members.iter().any(|(p, _)| p == peer)) {
            return Joined::Already(self.members(room));
        }
        if existing.map_or(0, |r| r.members.len()) >= max_members {
            return Joined::Full;
        }
        self.rooms
            .entry(room.to_owned())
            .or_default()
            .members
            .push((peer.to_owned(), meta.map(str::to_owned)));
        if let Some(s) = self.sessions.get_mut(peer) {
            s.rooms.insert(room.to_owned());
        }
        self.log(
            room,
            RoomEvent::Joined {
                peer: peer.to_owned(),
                meta: meta.map(str::to_owned),
            },
            wakes,
        );
        Joined::Joined(self.members(room))
    }

    /// `peer` leaves `room`: the log entry of its leave, or `None` if it was not a member.
    pub fn leave(&mut self, room: &str, peer: &str, wakes: &mut Wakes) -> Option<EntryId> {
        self.take_out(room, peer, wakes)
    }

    /// Up to `count` entries of `room`'s log after `after` (an entry the reader applied, or
    /// [`EntryId::ZERO`]), in order; `None` when entry `after` is no longer in the log (it
    /// keeps a bounded tail and goes when the room empties): the reader starts again from
    /// [`Model::members`].
    pub fn room_log(
        &self,
        room: &str,
        after: EntryId,
        count: usize,
    ) -> Option<Vec<(EntryId, RoomEvent)>> {
        let Some(r) = self.rooms.get(room) else {
            return (after == EntryId::ZERO).then(Vec::new);
        };
        if after != EntryId::ZERO && !r.log.iter().any(|(id, _)| *id == after) {
            return None;
        }
        Some(
            r.log
                .iter()
                .filter(|(id, _)| *id > after)
                .take(count)
                .cloned()
                .collect(),
        )
    }

    /// `room`'s members now.
    pub fn members(&self, room: &str) -> Members {
        self.rooms
            .get(room)
            .map(|r| Members {
                at: r.log.back().map(|(id, _)| *id).unwrap_or_default(),
                members: r.members.clone(),
            })
            .unwrap_or_default()
    }

    /// Up to `max` sessions whose lease lapsed before `now_ms`, oldest first.
    pub fn expired(&self, now_ms: u64, max: usize) -> Vec<String> {
        let mut v: Vec<(u64, String)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.lease_until < now_ms)
            .map(|(p, s)| (s.lease_until, p.clone()))
            .collect();
        v.sort();
        v.into_iter().take(max).map(|(_, p)| p).collect()
    }

    /// Ends `peer`'s session if its lease lapsed before `now_ms`: it leaves its rooms (the log
    /// entries, by room) and its inbox is dropped.
    pub fn reap(&mut self, peer: &str, now_ms: u64, wakes: &mut Wakes) -> Vec<(String, EntryId)> {
        if self
            .sessions
            .get(peer)
            .is_none_or(|s| s.lease_until >= now_ms)
        {
            return Vec::new();
        }
        self.end_session(peer, wakes)
    }

    /// Ends `peer`'s session at once (it said goodbye), if `epoch` is still current.
    pub fn end(&mut self, peer: &str, epoch: u64, wakes: &mut Wakes) -> Vec<(String, EntryId)> {
        if self.sessions.get(peer).is_none_or(|s| s.epoch != epoch) {
            return Vec::new();
        }
        self.end_session(peer, wakes)
    }

    /// `peer` (which must have a session) is in `swarm` (a seed with `seed`; a seed stays one),
    /// unless the directory has `max` members of it already.
    pub fn swarm_enter(&mut self, swarm: &str, peer: &str, seed: bool, max: usize) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        let members = self.swarms.entry(swarm.to_owned()).or_default();
        if members.len() >= max && !members.contains_key(peer) {
            if members.is_empty() {
                self.swarms.remove(swarm);
            }
            return;
        }
        *members.entry(peer.to_owned()).or_default() |= seed;
        s.swarms.insert(swarm.to_owned());
    }

    /// `peer` left `swarm`.
    pub fn swarm_exit(&mut self, swarm: &str, peer: &str) {
        if let Some(s) = self.sessions.get_mut(peer) {
            s.swarms.remove(swarm);
        }
        self.swarm_out(swarm, peer);
    }

    fn swarm_out(&mut self, swarm: &str, peer: &str) {
        if let Some(m) = self.swarms.get_mut(swarm) {
            m.remove(peer);
            if m.is_empty() {
                self.swarms.remove(swarm);
            }
        }
    }

    /// Up to `count` members of `swarm` other than `peer`, with their seed flag: seeds first.
    /// Which ones is the bus's choice (Redis draws at random; the model takes them in order).
    pub fn swarm_pick(&self, swarm: &str, peer: &str, count: usize) -> Vec<(String, bool)> {
        let Some(m) = self.swarms.get(swarm) else {
            return Vec::new();
        };
        let others = || m.iter().filter(|(p, _)| *p != peer);
        others()
            .filter(|(_, seed)| **seed)
            .chain(others().filter(|(_, seed)| !**seed))
            .take(count)
            .map(|(p, seed)| (p.clone(), *seed))
            .collect()
    }

    /// Sessions and rooms on the whole bus.
    pub fn totals(&self) -> (usize, usize) {
        (self.sessions.len(), self.rooms.len())
    }

    /// `node` wants wake-ups for `room`...
    pub fn watch_room(&mut self, node: &str, room: &str) {
        self.watchers
            .entry(room.to_owned())
            .or_default()
            .insert(node.to_owned());
    }

    /// ...or no longer.
    pub fn unwatch_room(&mut self, node: &str, room: &str) {
        if let Some(w) = self.watchers.get_mut(room) {
            w.remove(node);
            if w.is_empty() {
                self.watchers.remove(room);
            }
        }
    }
}

/// What the core asks of the bus (`Output::Bus`). The driver runs them **in the order they
/// were emitted** and feeds each one's result back as a [`BusEvent`] (`Signal::handle_bus`);
/// ops with nothing to report give none. Leases are durations: the driver turns them into
/// deadlines on the wall clock, which all nodes share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusOp {
    /// Claim `peer` for this node (answer: [`BusEvent::Claimed`]).
    Claim {
        conn: crate::ConnId,
        peer: String,
        lease: std::time::Duration,
    },
    /// Extend these sessions' leases ([`BusEvent::Renewed`]).
    Renew {
        sessions: Vec<(String, u64)>,
        lease: std::time::Duration,
    },
    /// A signal from `from` to `to`'s inbox ([`BusEvent::Sent`]).
    Send {
        conn: crate::ConnId,
        to: String,
        from: String,
        data: String,
        max_inbox: usize,
        /// Only to a peer in a room with `from` (checked on the bus, where rooms are current).
        shared_room: bool,
    },
    /// Read `peer`'s inbox after `after` ([`BusEvent::Inbox`]).
    ReadInbox {
        peer: String,
        after: EntryId,
        count: usize,
    },
    Ack {
        peer: String,
        upto: EntryId,
    },
    /// `peer` joins `room` ([`BusEvent::Joined`]); `reply`: answer the client with `joined`.
    Join {
        conn: crate::ConnId,
        room: String,
        peer: String,
        meta: Option<String>,
        max_members: usize,
        reply: bool,
    },
    Leave {
        room: String,
        peer: String,
    },
    /// Read `room`'s log after `after` ([`BusEvent::RoomLog`]).
    ReadRoom {
        room: String,
        after: EntryId,
        count: usize,
    },
    /// `room`'s members now ([`BusEvent::Members`]).
    Members {
        room: String,
    },
    /// Sessions whose lease lapsed ([`BusEvent::Expired`]).
    Expired {
        max: usize,
    },
    /// End `peer`'s session if its lease lapsed.
    Reap {
        peer: String,
    },
    /// End `peer`'s session (goodbye) if `epoch` is current.
    End {
        peer: String,
        epoch: u64,
    },
    /// Tell `node` that `peer` was claimed at `epoch`.
    Evict {
        node: String,
        peer: String,
        epoch: u64,
    },
    Watch {
        room: String,
    },
    Unwatch {
        room: String,
    },
    /// `peer` is in `swarm`'s directory (at most `max` members).
    SwarmEnter {
        swarm: String,
        peer: String,
        seed: bool,
        max: usize,
    },
    SwarmExit {
        swarm: String,
        peer: String,
    },
    /// Up to `count` members of `swarm` for `peer`, who wants `want` more neighbours
    /// ([`BusEvent::SwarmPicked`]).
    SwarmPick {
        swarm: String,
        peer: String,
        want: usize,
        count: usize,
    },
    /// An entry from [`SWARM_FROM`] into `to`'s inbox (no result: introductions are soft).
    SwarmTell {
        to: String,
        data: String,
        max_inbox: usize,
    },
}

/// A bus operation's result, or a wake-up, for the core. Errors are the bus's message (the
/// bus was unreachable or answered what the node did not understand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusEvent {
    Claimed {
        conn: crate::ConnId,
        peer: String,
        result: Result<Claim, String>,
    },
    Renewed {
        sessions: Vec<(String, u64)>,
        result: Result<Vec<bool>, String>,
    },
    Sent {
        conn: crate::ConnId,
        to: String,
        result: Result<Sent, String>,
    },
    Inbox {
        peer: String,
        after: EntryId,
        result: Result<Vec<Entry>, String>,
    },
    Joined {
        conn: crate::ConnId,
        room: String,
        peer: String,
        reply: bool,
        result: Result<Joined, String>,
    },
    RoomLog {
        room: String,
        after: EntryId,
        count: usize,
        result: Result<Option<Vec<(EntryId, RoomEvent)>>, String>,
    },
    Members {
        room: String,
        result: Result<Members, String>,
    },
    Expired {
        result: Result<Vec<String>, String>,
    },
    SwarmPicked {
        swarm: String,
        peer: String,
        want: usize,
        result: Result<Vec<(String, bool)>, String>,
    },
    Wake(Wake),
}

impl Model {
    /// Runs one op for `node` at wall-clock `now_ms`: its result for the core, if any.
    pub fn execute(
        &mut self,
        node: &str,
        now_ms: u64,
        op: BusOp,
        wakes: &mut Wakes,
    ) -> Option<BusEvent> {
        let until = |lease: std::time::Duration| now_ms.saturating_add(lease.as_millis() as u64);
        Some(match op {
            BusOp::Claim { conn, peer, lease } => BusEvent::Claimed {
                conn,
                result: Ok(self.claim(&peer, node, until(lease))),
                peer,
            },
            BusOp::Renew { sessions, lease } => BusEvent::Renewed {
                result: Ok(self.renew(&sessions, until(lease))),
                sessions,
            },
            BusOp::Send {
                conn,
                to,
                from,
                data,
                max_inbox,
                shared_room,
            } => BusEvent::Sent {
                conn,
                result: Ok(self.send(&to, &from, &data, max_inbox, shared_room, wakes)),
                to,
            },
            BusOp::ReadInbox { peer, after, count } => BusEvent::Inbox {
                result: Ok(self.inbox(&peer, after, count)),
                peer,
                after,
            },
            BusOp::Ack { peer, upto } => {
                self.ack(&peer, upto);
                return None;
            }
            BusOp::Join {
                conn,
                room,
                peer,
                meta,
                max_members,
                reply,
            } => BusEvent::Joined {
                conn,
                result: Ok(self.join(&room, &peer, meta.as_deref(), max_members, wakes)),
                room,
                peer,
                reply,
            },
            BusOp::Leave { room, peer } => {
                self.leave(&room, &peer, wakes);
                return None;
            }
            BusOp::ReadRoom { room, after, count } => BusEvent::RoomLog {
                result: Ok(self.room_log(&room, after, count)),
                room,
                after,
                count,
            },
            BusOp::Members { room } => BusEvent::Members {
                result: Ok(self.members(&room)),
                room,
            },
            BusOp::Expired { max } => BusEvent::Expired {
                result: Ok(self.expired(now_ms, max)),
            },
            BusOp::Reap { peer } => {
                self.reap(&peer, now_ms, wakes);
                return None;
            }
            BusOp::End { peer, epoch } => {
                self.end(&peer, epoch, wakes);
                return None;
            }
            BusOp::Evict { node, peer, epoch } => {
                wakes.push((node, Wake::Evict { peer, epoch }));
                return None;
            }
            BusOp::Watch { room } => {
                self.watch_room(node, &room);
                return None;
            }
            BusOp::Unwatch { room } => {
                self.unwatch_room(node, &room);
                return None;
            }
            BusOp::SwarmEnter {
                swarm,
                peer,
                seed,
                max,
            } => {
                self.swarm_enter(&swarm, &peer, seed, max);
                return None;
            }
            BusOp::SwarmExit { swarm, peer } => {
                self.swarm_exit(&swarm, &peer);
                return None;
            }
            BusOp::SwarmPick {
                swarm,
                peer,
                want,
                count,
            } => BusEvent::SwarmPicked {
                result: Ok(self.swarm_pick(&swarm, &peer, count)),
                swarm,
                peer,
                want,
            },
            BusOp::SwarmTell {
                to,
                data,
                max_inbox,
            } => {
                self.send(&to, SWARM_FROM, &data, max_inbox, false, wakes);
                return None;
            }
        })
    }
}

impl BusOp {
    /// The result of this op when the bus could not run it (`None` for ops without one).
    pub fn failed(self, error: &str) -> Option<BusEvent> {
        fn e<T>(error: &str) -> Result<T, String> {
            Err(error.to_owned())
        }
        Some(match self {
            BusOp::Claim { conn, peer, .. } => BusEvent::Claimed {
                conn,
                peer,
                result: e(error),
            },
            BusOp::Renew { sessions, .. } => BusEvent::Renewed {
                sessions,
                result: e(error),
            },
            BusOp::Send { conn, to, .. } => BusEvent::Sent {
                conn,
                to,
                result: e(error),
            },
            BusOp::ReadInbox { peer, after, .. } => BusEvent::Inbox {
                peer,
                after,
                result: e(error),
            },
            BusOp::Join {
                conn,
                room,
                peer,
                reply,
                ..
            } => BusEvent::Joined {
                conn,
                room,
                peer,
                reply,
                result: e(error),
            },
            BusOp::ReadRoom { room, after, count } => BusEvent::RoomLog {
                room,
                after,
                count,
                result: e(error),
            },
            BusOp::Members { room } => BusEvent::Members {
                room,
                result: e(error),
            },
            BusOp::Expired { .. } => BusEvent::Expired { result: e(error) },
            BusOp::SwarmPick {
                swarm, peer, want, ..
            } => BusEvent::SwarmPicked {
                swarm,
                peer,
                want,
                result: e(error),
            },
            BusOp::Ack { .. }
            | BusOp::Leave { .. }
            | BusOp::Reap { .. }
            | BusOp::End { .. }
            | BusOp::Evict { .. }
            | BusOp::Watch { .. }
            | BusOp::Unwatch { .. }
            | BusOp::SwarmEnter { .. }
            | BusOp::SwarmExit { .. }
            | BusOp::SwarmTell { .. } => return None,
        })
    }
}
