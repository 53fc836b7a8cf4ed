//! The cluster bus: what several `peerweb serve` nodes share, behind one small interface.
//!
//! Every node is equal; the bus holds the truth about sessions, rooms and the messages in
//! flight between peers, so that a node's death loses nothing but its sockets:
//!
//! - **Sessions** ([`Bus::claim`]): which node holds a peer's connection, with an *epoch* that
//!   grows on every claim. A node acts for a peer only while its epoch is current
//!   ([`Bus::renew`] answers false to a stale one), which fences out a node that lost the peer
//!   to another. Each session has a *lease* the holding node renews; a lapsed lease
//!   ([`Bus::expired`], [`Bus::reap`]) ends the session exactly once, whichever node notices.
//! - **Inboxes** ([`Bus::send`], [`Bus::inbox`], [`Bus::ack`]): directed messages to a peer,
//!   kept in order until the peer acknowledges them, so a peer that reconnects to any node gets
//!   what was sent to it meanwhile. An inbox is bounded: a full one refuses, it never drops.
//! - **Rooms** ([`Bus::join`], [`Bus::leave`], [`Bus::room_log`]): members in join order, and a
//!   log of joins and leaves that every node with a member in the room applies in the same
//!   order.
//! - **Swarm directory** ([`Bus::swarm_enter`], [`Bus::swarm_pick`]): each swarm's members on
//!   any node, and which are seeds, so a node can introduce its members to others'.
//! - **Wake-ups** ([`Wake`]): a node is told when its peers' inboxes or its watched rooms' logs
//!   have something new, or to evict a peer another node has claimed. Wake-ups carry no data:
//!   the node reads the inbox or log after the last entry it applied, so a wake-up lost (or
//!   forged) costs nothing; after the bus connection was lost it gets [`Wake::Resync`] and
//!   re-reads everything it holds.
//!
//! The data types and the reference semantics ([`peerweb_signal::bus::Model`]) live in the
//! sans-IO core crate; [`memory::MemoryBus`] keeps the model in one process (one node, or
//! several in a test), [`redis::RedisBus`] keeps it in Redis. Both pass the same conformance
//! tests (`tests/bus.rs`). Times are wall-clock milliseconds passed in by the caller.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

pub mod memory;
pub mod redis;

/// Why a bus operation failed. The operation may or may not have taken effect only for
/// [`BusError::Unreachable`] (a reply lost); callers retry with what makes a retry safe.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BusError {
    #[error("the cluster bus is unreachable: {0}")]
    Unreachable(String),
    /// Redis answered with an error (a script failed, a key of the wrong type, …).
    #[error("the cluster bus refused: {0}")]
    Failed(String),
    #[error("the cluster bus answered what this node does not understand: {0}")]
    Garbage(String),
}

pub type Result<T> = std::result::Result<T, BusError>;

pub use peerweb_signal::bus::{Claim, Entry, EntryId, Joined, Members, RoomEvent, Sent, Wake};

/// The operations of the cluster bus. See the module docs.
pub trait Bus: Send + Sync + 'static {
    /// This node is alive (for `ttl_ms`), with a short description (its TURN address, load).
    fn beat(
        &self,
        node: &str,
        info: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The nodes alive at `now_ms`, with their descriptions, by name.
    fn nodes(&self, now_ms: u64) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;

    /// `node` holds `peer`'s connection now, leased until `lease_until_ms`. Creates the session
    /// when it does not exist.
    fn claim(
        &self,
        peer: &str,
        node: &str,
        lease_until_ms: u64,
    ) -> impl Future<Output = Result<Claim>> + Send;

    /// The node holding `peer` and its epoch.
    fn session(&self, peer: &str) -> impl Future<Output = Result<Option<(String, u64)>>> + Send;

    /// Extends the leases of sessions this node holds at the given epochs; for each, whether
    /// the epoch is still current (false: another node claimed it, or it lapsed).
    fn renew(
        &self,
        sessions: &[(String, u64)],
        lease_until_ms: u64,
    ) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Appends a message to `to`'s inbox (at most `max_inbox` unacknowledged) and wakes the
    /// node that holds it; with `shared_room`, only if `from` and `to` are in a room together.
    fn send(
        &self,
        to: &str,
        from: &str,
        data: &str,
        max_inbox: usize,
        shared_room: bool,
    ) -> impl Future<Output = Result<Sent>> + Send;

    /// Up to `count` messages of `peer`'s inbox after `after`, in order.
    fn inbox(
        &self,
        peer: &str,
        after: EntryId,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Entry>>> + Send;

    /// `peer` has every message up to `upto`: they leave its inbox.
    fn ack(&self, peer: &str, upto: EntryId) -> impl Future<Output = Result<()>> + Send;

    /// `peer` (which must have a session) joins `room` of at most `max_members`.
    fn join(
        &self,
        room: &str,
        peer: &str,
        meta: Option<&str>,
        max_members: usize,
    ) -> impl Future<Output = Result<Joined>> + Send;

    /// `peer` leaves `room`: the log entry of its leave, or `None` if it was not a member.
    fn leave(&self, room: &str, peer: &str)
    -> impl Future<Output = Result<Option<EntryId>>> + Send;

    /// Up to `count` entries of `room`'s log after `after` (an entry the reader applied, or
    /// [`EntryId::ZERO`]), in order. The log keeps a bounded tail and goes when the room
    /// empties: when entry `after` is no longer in it the answer is `None`, and the reader
    /// starts again from [`Bus::members`].
    fn room_log(
        &self,
        room: &str,
        after: EntryId,
        count: usize,
    ) -> impl Future<Output = Result<Option<Vec<(EntryId, RoomEvent)>>>> + Send;

    /// `room`'s members now.
    fn members(&self, room: &str) -> impl Future<Output = Result<Members>> + Send;

    /// Up to `max` sessions whose lease lapsed before `now_ms`.
    fn expired(&self, now_ms: u64, max: usize) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// Ends `peer`'s session if its lease lapsed before `now_ms` (else does nothing): it leaves
    /// its rooms (the log entries returned, by room) and its inbox is dropped. Exactly one of
    /// any number of concurrent callers gets the leaves.
    fn reap(
        &self,
        peer: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<(String, EntryId)>>> + Send;

    /// Ends `peer`'s session at once (it said goodbye), if `epoch` is still current.
    fn end(
        &self,
        peer: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<Vec<(String, EntryId)>>> + Send;

    /// Tells `node` that `peer` was claimed at `epoch` elsewhere.
    fn evict(&self, node: &str, peer: &str, epoch: u64) -> impl Future<Output = Result<()>> + Send;

    /// Sessions and rooms on the whole bus, for metrics.
    fn totals(&self) -> impl Future<Output = Result<(usize, usize)>> + Send;

    /// This node wants [`Wake::Room`] for `room` (it has a member there)...
    fn watch_room(&self, room: &str) -> impl Future<Output = Result<()>> + Send;

    /// ...or no longer.
    fn unwatch_room(&self, room: &str) -> impl Future<Output = Result<()>> + Send;

    /// `peer` (which must have a session) is in `swarm`'s directory, a seed with `seed` (a seed
    /// stays one), unless it has `max` members already. It leaves with its session.
    fn swarm_enter(
        &self,
        swarm: &str,
        peer: &str,
        seed: bool,
        max: usize,
    ) -> impl Future<Output = Result<()>> + Send;

    /// `peer` left `swarm`.
    fn swarm_exit(&self, swarm: &str, peer: &str) -> impl Future<Output = Result<()>> + Send;

    /// Up to `count` members of `swarm` other than `peer`, with their seed flag: seeds first,
    /// as many as there are up to `count` (which ones is the bus's choice).
    fn swarm_pick(
        &self,
        swarm: &str,
        peer: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<(String, bool)>>> + Send;
}

/// Wake-ups on their way to a node: bounded, and never lost without a trace — when the node
/// falls behind by more than the bound, the wake-ups beyond it become one [`Wake::Resync`].
#[derive(Debug)]
pub(crate) struct Waker {
    tx: mpsc::Sender<Wake>,
    behind: AtomicBool,
    /// Serialises senders so a resync is queued before later wake-ups.
    lock: Mutex<()>,
}

/// Wake-ups a node may have queued before the rest become one resync.
pub const MAX_QUEUED_WAKES: usize = 4096;

impl Waker {
    pub(crate) fn new() -> (Waker, mpsc::Receiver<Wake>) {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_WAKES);
        let waker = Waker {
            tx,
            behind: AtomicBool::new(false),
            lock: Mutex::new(()),
        };
        (waker, rx)
    }

    pub(crate) fn wake(&self, wake: Wake) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.behind.load(Ordering::Relaxed) {
            if self.tx.try_send(Wake::Resync).is_err() {
                return;
            }
            self.behind.store(false, Ordering::Relaxed);
            if wake == Wake::Resync {
                return;
            }
        }
        if self.tx.try_send(wake).is_err() {
            self.behind.store(true, Ordering::Relaxed);
        }
    }
}
