//! Conformance of the cluster bus: the in-memory bus and the Redis bus (a real `redis-server`
//! per test, on a private Unix socket) pass the same tests, and a random sequence of
//! operations gives the same answers on both. Then what only Redis can do to a node: answer
//! garbage, go away, come back.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::redis::RedisServer;
use peerweb_server::bus::memory::MemoryBus;
use peerweb_server::bus::redis::RedisBus;
use peerweb_server::bus::{Bus, BusError, EntryId, Joined, RoomEvent, Sent, Wake};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::sync::mpsc::Receiver;

/// A second is 1000 of these.
const T0: u64 = 1_800_000_000_000;

async fn next_wake(rx: &mut Receiver<Wake>) -> Wake {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a wake-up within 5 s")
        .expect("the wake-up channel open")
}

/// No wake-up is waiting (after a round trip through the bus, which a published one precedes).
async fn no_wake<B: Bus>(bus: &B, rx: &mut Receiver<Wake>) {
    bus.session("nobody").await.unwrap();
    assert_eq!(rx.try_recv().ok(), None);
}

fn ids_increase(ids: &[EntryId]) -> bool {
    ids.windows(2).all(|w| w[0] < w[1])
}

async fn sessions_and_fencing<B: Bus>(a: B, _ra: Receiver<Wake>, b: B, mut rb: Receiver<Wake>) {
    assert_eq!(a.session("p").await.unwrap(), None);
    let c1 = a.claim("p", "A", T0 + 20_000).await.unwrap();
    assert_eq!((c1.epoch, c1.previous.as_deref()), (1, None));
    assert_eq!(a.session("p").await.unwrap(), Some(("A".into(), 1)));
    // The peer resumes on node B: B's claim supersedes A's, whose epoch is now stale.
    let c2 = b.claim("p", "B", T0 + 20_000).await.unwrap();
    assert_eq!((c2.epoch, c2.previous.as_deref()), (2, Some("A")));
    let renewed = a
        .renew(&[("p".into(), 1), ("q".into(), 1)], T0 + 40_000)
        .await
        .unwrap();
    assert_eq!(renewed, [false, false], "a stale epoch and no session");
    assert_eq!(
        b.renew(&[("p".into(), 2)], T0 + 40_000).await.unwrap(),
        [true]
    );
    // B tells A to let go; A's own end at the stale epoch does nothing.
    b.evict("A", "p", 2).await.unwrap();
    assert_eq!(a.end("p", 1).await.unwrap(), []);
    assert_eq!(b.session("p").await.unwrap(), Some(("B".into(), 2)));
    // The evict went to A only.
    no_wake(&b, &mut rb).await;
    // A goodbye at the current epoch ends it.
    assert_eq!(b.end("p", 2).await.unwrap(), []);
    assert_eq!(b.session("p").await.unwrap(), None);
    let c3 = a.claim("p", "A", T0 + 20_000).await.unwrap();
    assert_eq!(
        (c3.epoch, c3.previous),
        (1, None),
        "a new session after the end"
    );
}

async fn inbox_in_order_until_acked<B: Bus>(
    a: B,
    _ra: Receiver<Wake>,
    b: B,
    mut rb: Receiver<Wake>,
) {
    assert_eq!(
        a.send("p", "q", "x", 10, false).await.unwrap(),
        Sent::NoSuchPeer
    );
    b.claim("p", "B", T0 + 20_000).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        match a.send("p", "q", &format!("m{i}"), 5, false).await.unwrap() {
            Sent::Queued(id) => ids.push(id),
            other => panic!("{other:?}"),
        }
        // Each message wakes the node that holds the peer.
        assert_eq!(next_wake(&mut rb).await, Wake::Inbox { peer: "p".into() });
    }
    assert!(ids_increase(&ids));
    // Full at five unacknowledged: refused, nothing dropped.
    assert_eq!(
        a.send("p", "q", "m5", 5, false).await.unwrap(),
        Sent::InboxFull
    );
    let all = b.inbox("p", EntryId::ZERO, 100).await.unwrap();
    let data: Vec<&str> = all.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["m0", "m1", "m2", "m3", "m4"]);
    assert!(all.iter().all(|e| e.from == "q"));
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    // Reading after an entry, and a page at a time.
    let page = b.inbox("p", ids[1], 2).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["m2", "m3"]
    );
    // Acknowledged entries leave; there is room again.
    b.ack("p", ids[2]).await.unwrap();
    let rest = b.inbox("p", EntryId::ZERO, 100).await.unwrap();
    assert_eq!(
        rest.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["m3", "m4"]
    );
    assert!(matches!(
        a.send("p", "q", "m5", 5, false).await.unwrap(),
        Sent::Queued(_)
    ));
    // Acknowledging an older entry again changes nothing.
    b.ack("p", ids[0]).await.unwrap();
    assert_eq!(b.inbox("p", EntryId::ZERO, 100).await.unwrap().len(), 3);
}

async fn rooms_in_join_order<B: Bus>(a: B, mut ra: Receiver<Wake>, b: B, mut rb: Receiver<Wake>) {
    for p in ["p", "q", "r"] {
        a.claim(p, "A", T0 + 20_000).await.unwrap();
    }
    assert_eq!(
        a.join("room", "nobody", None, 2).await.unwrap(),
        Joined::NoSession
    );
    a.watch_room("room").await.unwrap();
    let Joined::Joined(m1) = a.join("room", "p", Some(r#"{"n":1}"#), 2).await.unwrap() else {
        panic!()
    };
    assert_eq!(m1.members, [("p".into(), Some(r#"{"n":1}"#.into()))]);
    assert_eq!(
        next_wake(&mut ra).await,
        Wake::Room {
            room: "room".into()
        }
    );
    b.watch_room("room").await.unwrap();
    let Joined::Joined(m2) = b.join("room", "q", None, 2).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        m2.members,
        [("p".into(), Some(r#"{"n":1}"#.into())), ("q".into(), None)]
    );
    assert!(m2.at > m1.at);
    // A signal that must be between room-mates: p and q are, r (in no room) is not.
    assert!(matches!(
        a.send("q", "p", "x", 8, true).await.unwrap(),
        Sent::Queued(_)
    ));
    assert_eq!(
        a.send("r", "p", "x", 8, true).await.unwrap(),
        Sent::NotShared
    );
    assert_eq!(
        a.send("nobody", "p", "x", 8, true).await.unwrap(),
        Sent::NoSuchPeer
    );
    assert_eq!(
        next_wake(&mut ra).await,
        Wake::Room {
            room: "room".into()
        }
    );
    assert_eq!(
        next_wake(&mut rb).await,
        Wake::Room {
            room: "room".into()
        }
    );
    assert_eq!(a.join("room", "r", None, 2).await.unwrap(), Joined::Full);
    assert_eq!(
        a.join("room", "p", None, 2).await.unwrap(),
        Joined::Already(m2.clone())
    );
    // The log from the first join on.
    let log = a.room_log("room", m1.at, 10).await.unwrap().unwrap();
    assert_eq!(
        log,
        [(
            m2.at,
            RoomEvent::Joined {
                peer: "q".into(),
                meta: None
            }
        )]
    );
    // A leave is logged once.
    let left = a.leave("room", "p").await.unwrap().unwrap();
    assert_eq!(a.leave("room", "p").await.unwrap(), None);
    assert_eq!(a.leave("elsewhere", "p").await.unwrap(), None);
    let log = b.room_log("room", m2.at, 10).await.unwrap().unwrap();
    assert_eq!(log, [(left, RoomEvent::Left { peer: "p".into() })]);
    assert_eq!(
        b.members("room").await.unwrap().members,
        [("q".into(), None)]
    );
    // Someone's leave makes room.
    assert!(matches!(
        a.join("room", "r", None, 2).await.unwrap(),
        Joined::Joined(_)
    ));
    // A node that stopped watching is not woken.
    b.unwatch_room("room").await.unwrap();
    while rb.try_recv().is_ok() {}
    a.leave("room", "r").await.unwrap().unwrap();
    no_wake(&b, &mut rb).await;
    // The last leave forgets the room: a reader's position is gone, it starts from the
    // (empty) members.
    let last = b.leave("room", "q").await.unwrap().unwrap();
    assert_eq!(b.room_log("room", last, 10).await.unwrap(), None);
    assert_eq!(b.room_log("room", m2.at, 10).await.unwrap(), None);
    assert_eq!(b.members("room").await.unwrap().members, []);
    assert_eq!(
        b.room_log("room", EntryId::ZERO, 10).await.unwrap(),
        Some(vec![])
    );
}

async fn lapsed_sessions_end_once<B: Bus>(a: B, _ra: Receiver<Wake>, b: B, _rb: Receiver<Wake>) {
    a.claim("p", "A", T0 + 10_000).await.unwrap();
    a.claim("q", "A", T0 + 30_000).await.unwrap();
    for room in ["r1", "r2"] {
        a.join(room, "p", None, 8).await.unwrap();
        a.join(room, "q", None, 8).await.unwrap();
    }
    a.send("p", "q", "hello", 8, false).await.unwrap();
    assert_eq!(
        a.expired(T0 + 10_000, 10).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(a.expired(T0 + 10_001, 10).await.unwrap(), ["p"]);
    // Not lapsed yet: nothing.
    assert_eq!(a.reap("q", T0 + 10_001).await.unwrap(), []);
    // Two nodes reap at once: one of them gets the leaves.
    let (x, y) = tokio::join!(a.reap("p", T0 + 10_001), b.reap("p", T0 + 10_001));
    let (x, y) = (x.unwrap(), y.unwrap());
    let leaves = if x.is_empty() { y.clone() } else { x.clone() };
    assert!(x.is_empty() || y.is_empty(), "{x:?} {y:?}");
    assert_eq!(
        leaves.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert_eq!(a.session("p").await.unwrap(), None);
    assert_eq!(
        a.send("p", "q", "x", 8, false).await.unwrap(),
        Sent::NoSuchPeer
    );
    assert_eq!(a.inbox("p", EntryId::ZERO, 8).await.unwrap(), []);
    assert_eq!(a.members("r1").await.unwrap().members, [("q".into(), None)]);
    assert_eq!(
        a.expired(T0 + 20_000, 10).await.unwrap(),
        Vec::<String>::new()
    );
    // A renewed lease does not lapse.
    a.renew(&[("q".into(), 1)], T0 + 60_000).await.unwrap();
    assert_eq!(a.reap("q", T0 + 40_000).await.unwrap(), []);
    assert_eq!(
        a.expired(T0 + 40_000, 10).await.unwrap(),
        Vec::<String>::new()
    );
    // Resumed on another node: the session's rooms come with the claim.
    let c = b.claim("q", "B", T0 + 90_000).await.unwrap();
    assert_eq!(
        (c.epoch, c.previous.as_deref(), c.rooms),
        (2, Some("A"), vec!["r1".to_owned(), "r2".to_owned()])
    );
}

async fn swarm_directory<B: Bus>(a: B, _ra: Receiver<Wake>, b: B, _rb: Receiver<Wake>) {
    for p in ["p", "q", "r", "s"] {
        a.claim(p, "A", T0 + 60_000).await.unwrap();
    }
    // No session, no entry.
    b.swarm_enter("w", "ghost", true, 8).await.unwrap();
    assert_eq!(b.swarm_pick("w", "q", 8).await.unwrap(), []);
    a.swarm_enter("w", "p", true, 3).await.unwrap();
    b.swarm_enter("w", "q", false, 3).await.unwrap();
    b.swarm_enter("w", "r", false, 3).await.unwrap();
    // Full at 3: s is not listed.
    a.swarm_enter("w", "s", true, 3).await.unwrap();
    let mut got = a.swarm_pick("w", "q", 8).await.unwrap();
    assert_eq!(got[0], ("p".into(), true), "seeds first: {got:?}");
    got.sort();
    assert_eq!(got, [("p".into(), true), ("r".into(), false)]);
    assert_eq!(
        b.swarm_pick("w", "q", 1).await.unwrap(),
        [("p".into(), true)]
    );
    assert_eq!(b.swarm_pick("w", "q", 0).await.unwrap(), []);
    // A seed stays one; a member entering again is not counted twice.
    b.swarm_enter("w", "r", true, 3).await.unwrap();
    b.swarm_enter("w", "p", false, 3).await.unwrap();
    let mut got = b.swarm_pick("w", "q", 8).await.unwrap();
    got.sort();
    assert_eq!(got, [("p".into(), true), ("r".into(), true)]);
    // Exits and ended sessions leave the directory; the last one takes the swarm with it.
    a.swarm_exit("w", "r").await.unwrap();
    assert_eq!(
        a.swarm_pick("w", "q", 8).await.unwrap(),
        [("p".into(), true)]
    );
    b.end("p", 1).await.unwrap();
    assert_eq!(a.swarm_pick("w", "q", 8).await.unwrap(), []);
    a.swarm_enter("w", "s", false, 3).await.unwrap();
    assert_eq!(
        a.swarm_pick("w", "q", 8).await.unwrap(),
        [("s".into(), false)]
    );
    a.swarm_exit("w", "q").await.unwrap();
    a.swarm_exit("w", "s").await.unwrap();
    assert_eq!(a.swarm_pick("w", "x", 8).await.unwrap(), []);
}

async fn nodes_alive<B: Bus>(a: B, _ra: Receiver<Wake>, b: B, _rb: Receiver<Wake>) {
    a.beat("A", "turn 10.0.0.1:3478", T0, 5_000).await.unwrap();
    b.beat("B", "turn 10.0.0.2:3478", T0 + 1_000, 5_000)
        .await
        .unwrap();
    assert_eq!(
        b.nodes(T0 + 2_000).await.unwrap(),
        [
            ("A".into(), "turn 10.0.0.1:3478".into()),
            ("B".into(), "turn 10.0.0.2:3478".into())
        ]
    );
    assert_eq!(
        b.nodes(T0 + 5_000).await.unwrap(),
        [("B".into(), "turn 10.0.0.2:3478".into())]
    );
    b.beat("B", "turn 10.0.0.2:3478", T0 + 7_000, 5_000)
        .await
        .unwrap();
    assert_eq!(b.nodes(T0 + 7_000).await.unwrap().len(), 1);
}

async fn evict_wakes_the_node<B: Bus>(a: B, mut ra: Receiver<Wake>, b: B, _rb: Receiver<Wake>) {
    b.evict("A", "p", 7).await.unwrap();
    assert_eq!(
        next_wake(&mut ra).await,
        Wake::Evict {
            peer: "p".into(),
            epoch: 7
        }
    );
    // To a node nobody runs: nothing happens.
    b.evict("Z", "p", 7).await.unwrap();
    no_wake(&a, &mut ra).await;
}

/// Two senders on two nodes at once, 300 messages each: all arrive once, each sender's in order.
async fn concurrent_senders_keep_their_order<B: Bus>(
    a: B,
    _ra: Receiver<Wake>,
    b: B,
    _rb: Receiver<Wake>,
) {
    a.claim("p", "A", T0 + 20_000).await.unwrap();
    async fn send_all<B: Bus>(bus: &B, from: &str) {
        for i in 0..300 {
            let sent = bus
                .send("p", from, &i.to_string(), 1000, false)
                .await
                .unwrap();
            assert!(matches!(sent, Sent::Queued(_)));
        }
    }
    tokio::join!(send_all(&a, "x"), send_all(&b, "y"));
    let all = a.inbox("p", EntryId::ZERO, 1000).await.unwrap();
    assert_eq!(all.len(), 600);
    assert!(ids_increase(&all.iter().map(|e| e.id).collect::<Vec<_>>()));
    for from in ["x", "y"] {
        let seq: Vec<u32> = all
            .iter()
            .filter(|e| e.from == from)
            .map(|e| e.data.parse().unwrap())
            .collect();
        assert_eq!(seq, (0..300).collect::<Vec<_>>(), "from {from}");
    }
}

/// What one operation answered, with entry ids replaced by their rank among the ids seen so
/// far (Redis's ids are clock-based, the memory bus's a counter: only their order is the
/// contract).
#[derive(Debug, PartialEq)]
struct Answer(String);

/// Ids seen so far, by stream (ids are ordered within one inbox or log only).
struct Ranks(HashMap<String, Vec<EntryId>>);

impl Ranks {
    fn rank(&mut self, stream: &str, id: EntryId) -> usize {
        let ids = self.0.entry(stream.to_owned()).or_default();
        if !ids.contains(&id) {
            ids.push(id);
            ids.sort();
        }
        ids.iter().position(|x| *x == id).unwrap()
    }
}

/// A random sequence of operations on two nodes; returns what each answered.
async fn random_run<B: Bus>(a: B, b: B, seed: u64, steps: usize) -> Vec<Answer> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let peers = ["p0", "p1", "p2", "p3", "p4"];
    let rooms = ["r0", "r1"];
    let mut ranks = Ranks(HashMap::new());
    // The last entry each reader applied, to ask logs and inboxes "after" something real.
    let mut seen: HashMap<String, EntryId> = HashMap::new();
    let mut epochs: HashMap<&str, u64> = HashMap::new();
    let mut now = T0;
    let mut out = Vec::new();
    for _ in 0..steps {
        let bus = if rng.next_u32() % 2 == 0 { &a } else { &b };
        let node = if std::ptr::eq(bus, &a) { "A" } else { "B" };
        let peer = peers[rng.next_u32() as usize % peers.len()];
        let other = peers[rng.next_u32() as usize % peers.len()];
        let room = rooms[rng.next_u32() as usize % rooms.len()];
        now += u64::from(rng.next_u32() % 600);
        let answer = match rng.next_u32() % 17 {
            0 | 1 => {
                let c = bus.claim(peer, node, now + 5_000).await.unwrap();
                epochs.insert(peer, c.epoch);
                format!("claim {peer} {c:?}")
            }
            2 => {
                let e = epochs.get(peer).copied().unwrap_or(1);
                format!(
                    "renew {peer} {:?}",
                    bus.renew(&[(peer.into(), e)], now + 5_000).await.unwrap()
                )
            }
            3 | 12 | 13 => match bus
                .send(peer, other, "d", 3, rng.next_u32() % 4 == 0)
                .await
                .unwrap()
            {
                Sent::Queued(id) => format!("send {peer} queued {}", ranks.rank(peer, id)),
                s => format!("send {peer} {s:?}"),
            },
            4 => {
                let after = seen.get(peer).copied().unwrap_or_default();
                let got = bus.inbox(peer, after, 2).await.unwrap();
                // (Acknowledged one time in three: inboxes fill up too.)
                if let Some(last) = got.last() {
                    seen.insert(peer.into(), last.id);
                    if rng.next_u32() % 3 == 0 {
                        bus.ack(peer, last.id).await.unwrap();
                    }
                }
                let got: Vec<(usize, String)> = got
                    .iter()
                    .map(|e| (ranks.rank(peer, e.id), e.from.clone()))
                    .collect();
                format!("inbox {peer} {got:?}")
            }
            5 | 6 => match bus.join(room, peer, Some("{}"), 3).await.unwrap() {
                Joined::Joined(m) | Joined::Already(m) => {
                    format!(
                        "join {room} {peer} {:?} {}",
                        m.members,
                        ranks.rank(room, m.at)
                    )
                }
                j => format!("join {room} {peer} {j:?}"),
            },
            7 => match bus.leave(room, peer).await.unwrap() {
                Some(id) => format!("leave {room} {peer} {}", ranks.rank(room, id)),
                None => format!("leave {room} {peer} none"),
            },
            8 => {
                let after = seen.get(room).copied().unwrap_or_default();
                match bus.room_log(room, after, 3).await.unwrap() {
                    Some(log) => {
                        if let Some((id, _)) = log.last() {
                            seen.insert(room.into(), *id);
                        }
                        let log: Vec<(usize, RoomEvent)> = log
                            .into_iter()
                            .map(|(id, e)| (ranks.rank(room, id), e))
                            .collect();
                        format!("log {room} {log:?}")
                    }
                    None => {
                        let m = bus.members(room).await.unwrap();
                        seen.insert(room.into(), m.at);
                        format!("log {room} gap; members {:?}", m.members)
                    }
                }
            }
            9 => format!("expired {:?}", bus.expired(now, 10).await.unwrap()),
            14 => {
                let seed = rng.next_u32() % 3 == 0;
                bus.swarm_enter("w", peer, seed, 4).await.unwrap();
                format!("swarm enter {peer} {seed}")
            }
            15 => {
                bus.swarm_exit("w", peer).await.unwrap();
                format!("swarm exit {peer}")
            }
            16 => {
                // Which members the bus draws is its choice: how many, and how many seeds.
                let count = 1 + rng.next_u32() as usize % 3;
                let got = bus.swarm_pick("w", peer, count).await.unwrap();
                let seeds = got.iter().take_while(|(_, s)| *s).count();
                let all_seeds = got.iter().filter(|(_, s)| *s).count();
                assert!(got.iter().all(|(p, _)| p != peer));
                format!(
                    "swarm pick {peer} {count}: {} seeds first {seeds} of {all_seeds}",
                    got.len()
                )
            }
            10 => {
                let left = bus.reap(peer, now).await.unwrap();
                let left: Vec<(String, usize)> = left
                    .into_iter()
                    .map(|(r, id)| {
                        let rank = ranks.rank(&r, id);
                        (r, rank)
                    })
                    .collect();
                format!("reap {peer} {left:?}")
            }
            _ => {
                let e = epochs.get(peer).copied().unwrap_or(1);
                let left = bus.end(peer, e).await.unwrap();
                let left: Vec<(String, usize)> = left
                    .into_iter()
                    .map(|(r, id)| {
                        let rank = ranks.rank(&r, id);
                        (r, rank)
                    })
                    .collect();
                format!("end {peer} {left:?}")
            }
        };
        out.push(Answer(answer));
    }
    out
}

mod on_memory {
    use super::*;

    fn pair() -> (
        peerweb_server::bus::memory::MemoryNode,
        Receiver<Wake>,
        peerweb_server::bus::memory::MemoryNode,
        Receiver<Wake>,
    ) {
        let bus = MemoryBus::new();
        let (a, ra) = bus.node("A");
        let (b, rb) = bus.node("B");
        (a, ra, b, rb)
    }

    macro_rules! conformance {
        ($($name:ident),*) => {$(
            #[tokio::test]
            async fn $name() {
                let (a, ra, b, rb) = pair();
                super::$name(a, ra, b, rb).await;
            }
        )*};
    }

    conformance!(
        sessions_and_fencing,
        inbox_in_order_until_acked,
        rooms_in_join_order,
        lapsed_sessions_end_once,
        swarm_directory,
        nodes_alive,
        evict_wakes_the_node,
        concurrent_senders_keep_their_order
    );
}

mod on_redis {
    use super::*;

    async fn pair(r: &RedisServer) -> (RedisBus, Receiver<Wake>, RedisBus, Receiver<Wake>) {
        let (a, ra) = RedisBus::connect(&r.url, "pw:", "A").await.unwrap();
        let (b, rb) = RedisBus::connect(&r.url, "pw:", "B").await.unwrap();
        (a, ra, b, rb)
    }

    macro_rules! conformance {
        ($($name:ident),*) => {$(
            #[tokio::test]
            async fn $name() {
                let r = RedisServer::start(false).await;
                let (a, ra, b, rb) = pair(&r).await;
                super::$name(a, ra, b, rb).await;
            }
        )*};
    }

    conformance!(
        sessions_and_fencing,
        inbox_in_order_until_acked,
        rooms_in_join_order,
        lapsed_sessions_end_once,
        swarm_directory,
        nodes_alive,
        evict_wakes_the_node,
        concurrent_senders_keep_their_order
    );

    /// The same random operations on both buses answer the same, for several seeds.
    #[tokio::test]
    async fn random_operations_answer_as_the_memory_bus_does() {
        let mut all = Vec::new();
        for seed in 0..8 {
            let r = RedisServer::start(false).await;
            let (a, _ra, b, _rb) = pair(&r).await;
            let on_redis = random_run(a, b, seed, 300).await;
            let mem = MemoryBus::new();
            let on_memory = random_run(mem.node("A").0, mem.node("B").0, seed, 300).await;
            for (i, (x, y)) in on_redis.iter().zip(&on_memory).enumerate() {
                assert_eq!(x, y, "seed {seed}, step {i}");
            }
            all.extend(on_memory);
        }
        // The runs went through the interesting outcomes, not only the easy ones.
        for outcome in [
            "queued",
            "InboxFull",
            "NoSuchPeer",
            "Full",
            "NoSession",
            "gap",
            "Left",
            "Joined",
            "previous: Some",
            "[false]",
            "seeds first 1",
            ": 2 seeds",
        ] {
            let n = all.iter().filter(|a| a.0.contains(outcome)).count();
            assert!(n > 0, "no answer with {outcome:?}");
        }
        let reaped = all
            .iter()
            .filter(|a| a.0.starts_with("reap") && a.0.contains("(\"r"))
            .count();
        assert!(reaped > 0, "no lapsed session left a room");
    }

    /// Keys of the wrong type, garbage entries and wake-ups nobody should send: errors, no
    /// panic, and a forged wake-up only makes the node look (it carries no data).
    #[tokio::test]
    async fn garbage_in_redis_gives_errors_not_panics() {
        let r = RedisServer::start(false).await;
        let (a, mut ra, b, _rb) = pair(&r).await;
        let client = ::redis::Client::open(r.url.as_str()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let set = |k: &'static str, v: &'static str| ::redis::cmd("SET").arg(k).arg(v).clone();
        // An inbox that is a string.
        a.claim("p", "A", T0 + 20_000).await.unwrap();
        let () = set("pw:i:p", "x").query_async(&mut raw).await.unwrap();
        assert!(matches!(
            b.send("p", "q", "d", 10, false).await,
            Err(BusError::Failed(_))
        ));
        assert!(matches!(
            a.inbox("p", EntryId::ZERO, 10).await,
            Err(BusError::Failed(_))
        ));
        // A session whose epoch is not a number.
        let () = ::redis::cmd("HSET")
            .arg("pw:s:q")
            .arg("node")
            .arg("A")
            .arg("epoch")
            .arg("many")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(matches!(
            a.claim("q", "A", T0).await,
            Err(BusError::Failed(_))
        ));
        assert!(matches!(a.session("q").await, Err(BusError::Garbage(_))));
        // A room log entry this version never writes.
        a.claim("m", "A", T0 + 20_000).await.unwrap();
        let Joined::Joined(m) = a.join("room", "m", None, 8).await.unwrap() else {
            panic!()
        };
        let _: String = ::redis::cmd("XADD")
            .arg("pw:rl:room")
            .arg("*")
            .arg("e")
            .arg("zap")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(matches!(
            a.room_log("room", m.at, 10).await,
            Err(BusError::Garbage(_))
        ));
        // Member metadata in no format of ours.
        let () = ::redis::cmd("HSET")
            .arg("pw:rm:room")
            .arg("m")
            .arg("?")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(matches!(a.members("room").await, Err(BusError::Garbage(_))));
        // A swarm directory that is a string; a member whose seed flag is not one.
        let () = set("pw:w:bad", "x").query_async(&mut raw).await.unwrap();
        assert!(matches!(
            a.swarm_pick("bad", "m", 4).await,
            Err(BusError::Failed(_))
        ));
        assert!(matches!(
            a.swarm_enter("bad", "m", false, 8).await,
            Err(BusError::Failed(_))
        ));
        let () = ::redis::cmd("HSET")
            .arg("pw:w:odd")
            .arg("m")
            .arg("maybe")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(matches!(
            a.swarm_pick("odd", "p", 4).await,
            Err(BusError::Garbage(_))
        ));
        // Wake-ups in no format of ours are ignored; a well-formed one wakes.
        for junk in ["", "i", "i a b", "e p", "e p notanumber", "zz p"] {
            let () = ::redis::cmd("PUBLISH")
                .arg("pw:n:A")
                .arg(junk)
                .query_async(&mut raw)
                .await
                .map(|_: i64| ())
                .unwrap();
        }
        let () = ::redis::cmd("PUBLISH")
            .arg("pw:n:A")
            .arg("i p")
            .query_async(&mut raw)
            .await
            .map(|_: i64| ())
            .unwrap();
        assert_eq!(next_wake(&mut ra).await, Wake::Inbox { peer: "p".into() });
    }

    /// Redis killed mid-traffic: operations fail fast as unreachable (never hang, never
    /// panic); restarted with its append-only file, every message it acknowledged is still
    /// there, the node is told to resync, and its subscriptions are back.
    #[tokio::test]
    async fn redis_restarted_keeps_what_it_acknowledged() {
        let mut r = RedisServer::start(true).await;
        let (a, mut ra, b, _rb) = pair(&r).await;
        a.claim("p", "A", T0 + 60_000).await.unwrap();
        a.watch_room("room").await.unwrap();
        let mut acknowledged = Vec::new();
        for i in 0..50 {
            if let Sent::Queued(_) = b.send("p", "q", &i.to_string(), 1000, false).await.unwrap() {
                acknowledged.push(i.to_string());
            }
        }
        while ra.try_recv().is_ok() {}
        r.kill().await;
        let started = std::time::Instant::now();
        let err = b.send("p", "q", "lost", 1000, false).await.unwrap_err();
        assert!(matches!(err, BusError::Unreachable(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        r.restart().await;
        // Told to resync once the connection is back.
        loop {
            match next_wake(&mut ra).await {
                Wake::Resync => break,
                Wake::Inbox { .. } => {}
                w => panic!("{w:?}"),
            }
        }
        let got: Vec<String> = a
            .inbox("p", EntryId::ZERO, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.data)
            .collect();
        assert_eq!(got, acknowledged);
        // The room subscription came back with the connection.
        a.claim("m", "A", T0 + 60_000).await.unwrap();
        b.join("room", "m", None, 8).await.unwrap();
        loop {
            if next_wake(&mut ra).await
                == (Wake::Room {
                    room: "room".into(),
                })
            {
                break;
            }
        }
    }
}
