//! The one task that talks to the cluster bus for a node: it runs the core's bus ops in the
//! order the core emitted them, hands back their results and the bus's wake-ups, and keeps the
//! node's liveness record on the bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerweb_signal::bus::{BusEvent, BusOp, SWARM_FROM};
use tokio::sync::mpsc;
use tracing::warn;

use crate::bus::{Bus, BusError, Wake};

/// How often a node says it is alive, and how long that holds.
const BEAT_EVERY: Duration = Duration::from_secs(1);
const BEAT_TTL: Duration = Duration::from_secs(5);
/// Ops without a result are retried this many times (they are idempotent) before the node
/// gives up on them and says so in its log.
const RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(1000),
];

/// Wall-clock milliseconds: leases and liveness are compared across nodes.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// What the cluster task shares with the rest of the node.
#[derive(Debug, Default)]
pub(crate) struct ClusterStats {
    /// Nodes alive on the bus, and sessions and rooms on it, as of the last beat.
    pub(crate) nodes: AtomicUsize,
    pub(crate) sessions: AtomicUsize,
    pub(crate) rooms: AtomicUsize,
}

/// Runs ops from `ops` (and wake-ups from `wakes`) until the node stops; results and wake-ups
/// go to `deliver`.
pub(crate) async fn run<B: Bus>(
    bus: B,
    node: String,
    info: String,
    mut ops: mpsc::Receiver<BusOp>,
    mut wakes: mpsc::Receiver<Wake>,
    deliver: mpsc::Sender<BusEvent>,
    stats: Arc<ClusterStats>,
) {
    let mut beat = tokio::time::interval(BEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the bus was unreachable for the last op or beat: the core hears of each change
    // (`Wake::Lost`, then `Wake::Resync` at the first thing that goes through again).
    let mut lost = false;
    loop {
        tokio::select! {
            op = ops.recv() => {
                let Some(op) = op else { return };
                let (ev, unreachable) = execute(&bus, &node, op, lost).await;
                if !reachability(&mut lost, unreachable, &deliver).await {
                    return;
                }
                if let Some(ev) = ev
                    && deliver.send(ev).await.is_err()
                {
                    return;
                }
            }
            wake = wakes.recv() => {
                let Some(wake) = wake else { return };
                if deliver.send(BusEvent::Wake(wake)).await.is_err() {
                    return;
                }
            }
            _ = beat.tick() => {
                let now = now_ms();
                let beat = bus.beat(&node, &info, now, BEAT_TTL.as_millis() as u64).await;
                let unreachable = matches!(beat, Err(BusError::Unreachable(_)));
                if !reachability(&mut lost, unreachable, &deliver).await {
                    return;
                }
                if let Err(e) = beat {
                    warn!("cluster bus: {e}");
                    continue;
                }
                if let Ok(nodes) = bus.nodes(now).await {
                    stats.nodes.store(nodes.len(), Ordering::Relaxed);
                }
                if let Ok((sessions, rooms)) = bus.totals().await {
                    stats.sessions.store(sessions, Ordering::Relaxed);
                    stats.rooms.store(rooms, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Notes whether the bus was `unreachable` for the last op or beat; on a change the core hears
/// of it (`Wake::Lost`, or `Wake::Resync` once something goes through again). False when the
/// core is gone.
async fn reachability(
    lost: &mut bool,
    unreachable: bool,
    deliver: &mpsc::Sender<BusEvent>,
) -> bool {
    if unreachable == *lost {
        return true;
    }
    *lost = unreachable;
    if unreachable {
        warn!(
            "cluster bus: unreachable; signals between this node's own peers go directly meanwhile"
        );
    }
    let wake = if unreachable {
        Wake::Lost
    } else {
        Wake::Resync
    };
    deliver.send(BusEvent::Wake(wake)).await.is_ok()
}

/// Runs one op on the bus for `node`: its result for the core, if it has one, and whether the
/// bus was unreachable for it. While it is known to be (`lost`), ops without a result are
/// tried once, not retried.
pub(crate) async fn execute<B: Bus>(
    bus: &B,
    node: &str,
    op: BusOp,
    lost: bool,
) -> (Option<BusEvent>, bool) {
    let unreachable = AtomicBool::new(false);
    let text = |e: BusError| {
        if matches!(e, BusError::Unreachable(_)) {
            unreachable.store(true, Ordering::Relaxed);
        }
        e.to_string()
    };
    let ev = run_op(bus, node, op, lost, &text).await;
    (ev, unreachable.load(Ordering::Relaxed))
}

async fn run_op<B: Bus>(
    bus: &B,
    node: &str,
    op: BusOp,
    lost: bool,
    text: &(impl Fn(BusError) -> String + Sync),
) -> Option<BusEvent> {
    let until = |lease: Duration| now_ms().saturating_add(lease.as_millis() as u64);
    Some(match op {
        BusOp::Claim { conn, peer, lease } => BusEvent::Claimed {
            conn,
            result: bus.claim(&peer, node, until(lease)).await.map_err(text),
            peer,
        },
        BusOp::Renew { sessions, lease } => BusEvent::Renewed {
            result: bus.renew(&sessions, until(lease)).await.map_err(text),
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
            result: bus
                .send(&to, &from, &data, max_inbox, shared_room)
                .await
                .map_err(text),
            to,
        },
        BusOp::ReadInbox { peer, after, count } => BusEvent::Inbox {
            result: bus.inbox(&peer, after, count).await.map_err(text),
            peer,
            after,
        },
        BusOp::Join {
            conn,
            room,
            peer,
            meta,
            max_members,
            reply,
        } => BusEvent::Joined {
            conn,
            result: bus
                .join(&room, &peer, meta.as_deref(), max_members)
                .await
                .map_err(text),
            room,
            peer,
            reply,
        },
        BusOp::ReadRoom { room, after, count } => BusEvent::RoomLog {
            result: bus.room_log(&room, after, count).await.map_err(text),
            room,
            after,
            count,
        },
        BusOp::Members { room } => BusEvent::Members {
            result: bus.members(&room).await.map_err(text),
            room,
        },
        BusOp::Expired { max } => BusEvent::Expired {
            result: bus.expired(now_ms(), max).await.map_err(text),
        },
        BusOp::SwarmPick {
            swarm,
            peer,
            want,
            count,
        } => BusEvent::SwarmPicked {
            result: bus.swarm_pick(&swarm, &peer, count).await.map_err(text),
            swarm,
            peer,
            want,
        },
        op => {
            // No result: retried while the bus is unreachable, then given up with a word.
            let retries = if lost { &[][..] } else { &RETRIES[..] };
            for wait in retries.iter().copied().chain([Duration::ZERO]) {
                let r = match &op {
                    BusOp::Ack { peer, upto } => bus.ack(peer, *upto).await,
                    BusOp::Leave { room, peer } => bus.leave(room, peer).await.map(drop),
                    BusOp::Reap { peer } => bus.reap(peer, now_ms()).await.map(drop),
                    BusOp::End { peer, epoch } => bus.end(peer, *epoch).await.map(drop),
                    BusOp::Evict { node, peer, epoch } => bus.evict(node, peer, *epoch).await,
                    BusOp::Watch { room } => bus.watch_room(room).await,
                    BusOp::Unwatch { room } => bus.unwatch_room(room).await,
                    BusOp::SwarmEnter {
                        swarm,
                        peer,
                        seed,
                        max,
                    } => bus.swarm_enter(swarm, peer, *seed, *max).await,
                    BusOp::SwarmExit { swarm, peer } => bus.swarm_exit(swarm, peer).await,
                    BusOp::SwarmTell {
                        to,
                        data,
                        max_inbox,
                    } => bus
                        .send(to, SWARM_FROM, data, *max_inbox, false)
                        .await
                        .map(drop),
                    _ => return None,
                };
                match r {
                    Ok(()) => return None,
                    Err(BusError::Unreachable(_)) if !wait.is_zero() => {
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => {
                        let e = text(e);
                        warn!(?op, "cluster bus: gave up: {e}");
                        return None;
                    }
                }
            }
            return None;
        }
    })
}
