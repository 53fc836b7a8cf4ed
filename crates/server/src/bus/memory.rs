//! The cluster bus in one process: a single node's (no Redis needed), or several nodes' in a
//! test. The semantics are the core's reference [`Model`], behind a lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use peerweb_signal::bus::{Model, Wakes};
use tokio::sync::mpsc;

use super::{Bus, Claim, Entry, EntryId, Joined, Members, Result, RoomEvent, Sent, Wake, Waker};

#[derive(Debug, Default)]
struct Shared {
    model: Model,
    wakers: HashMap<String, Arc<Waker>>,
}

impl Shared {
    /// Delivers wake-ups (they never block, so under the lock is fine).
    fn deliver(&self, wakes: Wakes) {
        for (node, wake) in wakes {
            if let Some(w) = self.wakers.get(&node) {
                w.wake(wake);
            }
        }
    }
}

/// The shared state of an in-process cluster. [`MemoryBus::node`] gives each node its handle.
#[derive(Debug, Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Mutex<Shared>>,
}

/// One node's handle on a [`MemoryBus`].
#[derive(Debug, Clone)]
pub struct MemoryNode {
    name: String,
    shared: Arc<Mutex<Shared>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of node `name`, and its wake-ups (a second handle of the same name takes
    /// them over).
    pub fn node(&self, name: &str) -> (MemoryNode, mpsc::Receiver<Wake>) {
        let (waker, rx) = Waker::new();
        lock(&self.shared)
            .wakers
            .insert(name.to_owned(), Arc::new(waker));
        let node = MemoryNode {
            name: name.to_owned(),
            shared: self.shared.clone(),
        };
        (node, rx)
    }
}

impl MemoryNode {
    /// Runs `f` on the model and delivers the wake-ups it caused.
    fn with<T>(&self, f: impl FnOnce(&mut Model, &mut Wakes) -> T) -> Result<T> {
        let mut shared = lock(&self.shared);
        let mut wakes = Wakes::new();
        let out = f(&mut shared.model, &mut wakes);
        shared.deliver(wakes);
        Ok(out)
    }
}

impl Bus for MemoryNode {
    async fn beat(&self, node: &str, info: &str, now_ms: u64, ttl_ms: u64) -> Result<()> {
        self.with(|m, _| m.beat(node, info, now_ms, ttl_ms))
    }

    async fn nodes(&self, now_ms: u64) -> Result<Vec<(String, String)>> {
        self.with(|m, _| m.nodes(now_ms))
    }

    async fn claim(&self, peer: &str, node: &str, lease_until_ms: u64) -> Result<Claim> {
        self.with(|m, _| m.claim(peer, node, lease_until_ms))
    }

    async fn session(&self, peer: &str) -> Result<Option<(String, u64)>> {
        self.with(|m, _| m.session(peer))
    }

    async fn renew(&self, sessions: &[(String, u64)], lease_until_ms: u64) -> Result<Vec<bool>> {
        self.with(|m, _| m.renew(sessions, lease_until_ms))
    }

    async fn send(
        &self,
        to: &str,
        from: &str,
        data: &str,
        max_inbox: usize,
        shared_room: bool,
    ) -> Result<Sent> {
        self.with(|m, w| m.send(to, from, data, max_inbox, shared_room, w))
    }

    async fn inbox(&self, peer: &str, after: EntryId, count: usize) -> Result<Vec<Entry>> {
        self.with(|m, _| m.inbox(peer, after, count))
    }

    async fn ack(&self, peer: &str, upto: EntryId) -> Result<()> {
        self.with(|m, _| m.ack(peer, upto))
    }

    async fn join(
        &self,
        room: &str,
        peer: &str,
        meta: Option<&str>,
        max_members: usize,
    ) -> Result<Joined> {
        self.with(|m, w| m.join(room, peer, meta, max_members, w))
    }

    async fn leave(&self, room: &str, peer: &str) -> Result<Option<EntryId>> {
        self.with(|m, w| m.leave(room, peer, w))
    }

    async fn room_log(
        &self,
        room: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Option<Vec<(EntryId, RoomEvent)>>> {
        self.with(|m, _| m.room_log(room, after, count))
    }

    async fn members(&self, room: &str) -> Result<Members> {
        self.with(|m, _| m.members(room))
    }

    async fn expired(&self, now_ms: u64, max: usize) -> Result<Vec<String>> {
        self.with(|m, _| m.expired(now_ms, max))
    }

    async fn reap(&self, peer: &str, now_ms: u64) -> Result<Vec<(String, EntryId)>> {
        self.with(|m, w| m.reap(peer, now_ms, w))
    }

    async fn end(&self, peer: &str, epoch: u64) -> Result<Vec<(String, EntryId)>> {
        self.with(|m, w| m.end(peer, epoch, w))
    }

    async fn evict(&self, node: &str, peer: &str, epoch: u64) -> Result<()> {
        self.with(|_, w| {
            w.push((
                node.to_owned(),
                Wake::Evict {
                    peer: peer.to_owned(),
                    epoch,
                },
            ));
        })
    }

    async fn totals(&self) -> Result<(usize, usize)> {
        self.with(|m, _| m.totals())
    }

    async fn watch_room(&self, room: &str) -> Result<()> {
        self.with(|m, _| m.watch_room(&self.name, room))
    }

    async fn unwatch_room(&self, room: &str) -> Result<()> {
        self.with(|m, _| m.unwatch_room(&self.name, room))
    }

    async fn swarm_enter(&self, swarm: &str, peer: &str, seed: bool, max: usize) -> Result<()> {
        self.with(|m, _| m.swarm_enter(swarm, peer, seed, max))
    }

    async fn swarm_exit(&self, swarm: &str, peer: &str) -> Result<()> {
        self.with(|m, _| m.swarm_exit(swarm, peer))
    }

    async fn swarm_pick(
        &self,
        swarm: &str,
        peer: &str,
        count: usize,
    ) -> Result<Vec<(String, bool)>> {
        self.with(|m, _| m.swarm_pick(swarm, peer, count))
    }
}
