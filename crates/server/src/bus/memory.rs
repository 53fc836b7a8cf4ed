//! The cluster bus in one process: a single node's (no Redis needed), or several nodes' in a
//! test. Same semantics as the Redis bus, checked by the same conformance tests.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::{Bus, Claim, Entry, EntryId, Joined, Members, Result, RoomEvent, Sent, Wake, Waker};

/// Entries a room's log keeps (older ones are dropped; a reader that fell behind them starts
/// again from the members).
pub const ROOM_LOG_ENTRIES: usize = 1000;

#[derive(Debug)]
struct Session {
    node: String,
    epoch: u64,
    lease_until: u64,
    rooms: BTreeSet<String>,
    inbox: VecDeque<Entry>,
}

#[derive(Debug, Default)]
struct Room {
    members: Vec<(String, Option<String>)>,
    log: VecDeque<(EntryId, RoomEvent)>,
}

#[derive(Debug, Default)]
struct State {
    last_id: EntryId,
    nodes: HashMap<String, (u64, String)>,
    sessions: HashMap<String, Session>,
    rooms: HashMap<String, Room>,
    wakers: HashMap<String, Arc<Waker>>,
    watchers: HashMap<String, HashSet<String>>,
}

impl State {
    fn next_id(&mut self) -> EntryId {
        self.last_id = self.last_id.next();
        self.last_id
    }

    /// Appends to a room's log and wakes the nodes that watch it (wake-ups never block, so
    /// this may hold the lock).
    fn log(&mut self, room: &str, event: RoomEvent) -> EntryId {
        let id = self.next_id();
        let r = self.rooms.entry(room.to_owned()).or_default();
        r.log.push_back((id, event));
        while r.log.len() > ROOM_LOG_ENTRIES {
            r.log.pop_front();
        }
        for node in self.watchers.get(room).into_iter().flatten() {
            if let Some(w) = self.wakers.get(node) {
                w.wake(Wake::Room {
                    room: room.to_owned(),
                });
            }
        }
        id
    }

    fn leave(&mut self, room: &str, peer: &str) -> Option<EntryId> {
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
        );
        // An empty room is forgotten (its log too: readers start again from the members).
        if self.rooms.get(room).is_some_and(|r| r.members.is_empty()) {
            self.rooms.remove(room);
        }
        Some(id)
    }

    /// Ends a session: leaves its rooms, drops its inbox.
    fn end(&mut self, peer: &str) -> Vec<(String, EntryId)> {
        let Some(s) = self.sessions.remove(peer) else {
            return Vec::new();
        };
        s.rooms
            .into_iter()
            .filter_map(|room| self.leave(&room, peer).map(|id| (room, id)))
            .collect()
    }

    fn members(&self, room: &str) -> Members {
        self.rooms
            .get(room)
            .map(|r| Members {
                at: r.log.back().map(|(id, _)| *id).unwrap_or_default(),
                members: r.members.clone(),
            })
            .unwrap_or_default()
    }
}

/// The shared state of an in-process cluster. [`MemoryBus::node`] gives each node its handle.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    state: Arc<Mutex<State>>,
}

/// One node's handle on a [`MemoryBus`].
#[derive(Debug, Clone)]
pub struct MemoryNode {
    name: String,
    state: Arc<Mutex<State>>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of node `name`, and its wake-ups (a second handle of the same name takes
    /// them over).
    pub fn node(&self, name: &str) -> (MemoryNode, mpsc::Receiver<Wake>) {
        let (waker, rx) = Waker::new();
        self.lock().wakers.insert(name.to_owned(), Arc::new(waker));
        let node = MemoryNode {
            name: name.to_owned(),
            state: self.state.clone(),
        };
        (node, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MemoryNode {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Bus for MemoryNode {
    async fn beat(&self, node: &str, info: &str, now_ms: u64, ttl_ms: u64) -> Result<()> {
        let mut st = self.lock();
        st.nodes.retain(|_, (until, _)| *until > now_ms);
        st.nodes.insert(
            node.to_owned(),
            (now_ms.saturating_add(ttl_ms), info.to_owned()),
        );
        Ok(())
    }

    async fn nodes(&self, now_ms: u64) -> Result<Vec<(String, String)>> {
        let st = self.lock();
        let mut v: Vec<(String, String)> = st
            .nodes
            .iter()
            .filter(|(_, (until, _))| *until > now_ms)
            .map(|(n, (_, info))| (n.clone(), info.clone()))
            .collect();
        v.sort();
        Ok(v)
    }

    async fn claim(&self, peer: &str, node: &str, lease_until_ms: u64) -> Result<Claim> {
        let mut st = self.lock();
        let s = st
            .sessions
            .entry(peer.to_owned())
            .or_insert_with(|| Session {
                node: String::new(),
                epoch: 0,
                lease_until: 0,
                rooms: BTreeSet::new(),
                inbox: VecDeque::new(),
            });
        let previous = (s.epoch > 0).then(|| std::mem::replace(&mut s.node, node.to_owned()));
        s.node = node.to_owned();
        s.epoch += 1;
        s.lease_until = lease_until_ms;
        Ok(Claim {
            epoch: s.epoch,
            previous,
        })
    }

    async fn session(&self, peer: &str) -> Result<Option<(String, u64)>> {
        Ok(self
            .lock()
            .sessions
            .get(peer)
            .map(|s| (s.node.clone(), s.epoch)))
    }

    async fn renew(&self, sessions: &[(String, u64)], lease_until_ms: u64) -> Result<Vec<bool>> {
        let mut st = self.lock();
        Ok(sessions
            .iter()
            .map(|(peer, epoch)| match st.sessions.get_mut(peer) {
                Some(s) if s.epoch == *epoch => {
                    s.lease_until = lease_until_ms;
                    true
                }
                _ => false,
            })
            .collect())
    }

    async fn send(&self, to: &str, from: &str, data: &str, max_inbox: usize) -> Result<Sent> {
        let mut st = self.lock();
        let id = st.last_id.next();
        let Some(s) = st.sessions.get_mut(to) else {
            return Ok(Sent::NoSuchPeer);
        };
        if s.inbox.len() >= max_inbox {
            return Ok(Sent::InboxFull);
        }
        s.inbox.push_back(Entry {
            id,
            from: from.to_owned(),
            data: data.to_owned(),
        });
        let node = s.node.clone();
        st.last_id = id;
        let waker = st.wakers.get(&node).cloned();
        drop(st);
        if let Some(w) = waker {
            w.wake(Wake::Inbox {
                peer: to.to_owned(),
            });
        }
        Ok(Sent::Queued(id))
    }

    async fn inbox(&self, peer: &str, after: EntryId, count: usize) -> Result<Vec<Entry>> {
        Ok(self
            .lock()
            .sessions
            .get(peer)
            .map(|s| {
                s.inbox
                    .iter()
                    .filter(|e| e.id > after)
                    .take(count)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn ack(&self, peer: &str, upto: EntryId) -> Result<()> {
        if let Some(s) = self.lock().sessions.get_mut(peer) {
            while s.inbox.front().is_some_and(|e| e.id <= upto) {
                s.inbox.pop_front();
            }
        }
        Ok(())
    }

    async fn join(
        &self,
        room: &str,
        peer: &str,
        meta: Option<&str>,
        max_members: usize,
    ) -> Result<Joined> {
        let mut st = self.lock();
        if !st.sessions.contains_key(peer) {
            return Ok(Joined::NoSession);
        }
        let existing = st.rooms.get(room);
        if existing.is_some_and(|r| r.members.iter().any(|(p, _)| p == peer)) {
            return Ok(Joined::Already(st.members(room)));
        }
        if existing.map_or(0, |r| r.members.len()) >= max_members {
            return Ok(Joined::Full);
        }
        st.rooms
            .entry(room.to_owned())
            .or_default()
            .members
            .push((peer.to_owned(), meta.map(str::to_owned)));
        if let Some(s) = st.sessions.get_mut(peer) {
            s.rooms.insert(room.to_owned());
        }
        st.log(
            room,
            RoomEvent::Joined {
                peer: peer.to_owned(),
                meta: meta.map(str::to_owned),
            },
        );
        let members = st.members(room);
        Ok(Joined::Joined(members))
    }

    async fn leave(&self, room: &str, peer: &str) -> Result<Option<EntryId>> {
        Ok(self.lock().leave(room, peer))
    }

    async fn room_log(
        &self,
        room: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Option<Vec<(EntryId, RoomEvent)>>> {
        let st = self.lock();
        let Some(r) = st.rooms.get(room) else {
            return Ok((after == EntryId::ZERO).then(Vec::new));
        };
        if after != EntryId::ZERO && !r.log.iter().any(|(id, _)| *id == after) {
            return Ok(None);
        }
        Ok(Some(
            r.log
                .iter()
                .filter(|(id, _)| *id > after)
                .take(count)
                .cloned()
                .collect(),
        ))
    }

    async fn members(&self, room: &str) -> Result<Members> {
        Ok(self.lock().members(room))
    }

    async fn expired(&self, now_ms: u64, max: usize) -> Result<Vec<String>> {
        let st = self.lock();
        let mut v: Vec<(u64, String)> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.lease_until < now_ms)
            .map(|(p, s)| (s.lease_until, p.clone()))
            .collect();
        v.sort();
        Ok(v.into_iter().take(max).map(|(_, p)| p).collect())
    }

    async fn reap(&self, peer: &str, now_ms: u64) -> Result<Vec<(String, EntryId)>> {
        let mut st = self.lock();
        if st
            .sessions
            .get(peer)
            .is_none_or(|s| s.lease_until >= now_ms)
        {
            return Ok(Vec::new());
        }
        Ok(st.end(peer))
    }

    async fn end(&self, peer: &str, epoch: u64) -> Result<Vec<(String, EntryId)>> {
        let mut st = self.lock();
        if st.sessions.get(peer).is_none_or(|s| s.epoch != epoch) {
            return Ok(Vec::new());
        }
        Ok(st.end(peer))
    }

    async fn evict(&self, node: &str, peer: &str, epoch: u64) -> Result<()> {
        let waker = self.lock().wakers.get(node).cloned();
        if let Some(w) = waker {
            w.wake(Wake::Evict {
                peer: peer.to_owned(),
                epoch,
            });
        }
        Ok(())
    }

    async fn watch_room(&self, room: &str) -> Result<()> {
        let name = self.name.clone();
        self.lock()
            .watchers
            .entry(room.to_owned())
            .or_default()
            .insert(name);
        Ok(())
    }

    async fn unwatch_room(&self, room: &str) -> Result<()> {
        let mut st = self.lock();
        if let Some(w) = st.watchers.get_mut(room) {
            w.remove(&self.name);
            if w.is_empty() {
                st.watchers.remove(room);
            }
        }
        Ok(())
    }
}
