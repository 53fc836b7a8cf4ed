//! Three `peerweb serve` processes on one real `redis-server` (its own Unix socket in a
//! temporary folder; the nodes on loopback): rooms across nodes, 1,000 signals in order once,
//! a node killed with SIGKILL during a burst, a peer that never returns, Redis restarted
//! mid-traffic, SIGTERM on a node, and one token raced to two nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Dir, Running, serve};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A private redis-server; with `persist`, every write reaches its append-only file before
/// it is acknowledged.
struct Redis {
    dir: Dir,
    proc: Option<Running>,
    persist: bool,
}

impl Redis {
    fn start(name: &str, persist: bool) -> Redis {
        let mut r = Redis {
            dir: Dir::new(&format!("redis-{name}")),
            proc: None,
            persist,
        };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.0.join("r.sock").display())
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.dir.0.join("r.sock"));
        let mut c = Command::new("redis-server");
        c.args(["--port", "0", "--unixsocketperm", "700", "--save", ""])
            .arg("--unixsocket")
            .arg(self.dir.0.join("r.sock"))
            .arg("--dir")
            .arg(&self.dir.0)
            .args(if self.persist {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c
            .spawn()
            .expect("redis-server (Debian package redis-server)");
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        loop {
            let line = lines.next().expect("redis-server ended").unwrap();
            if line
                .to_ascii_lowercase()
                .contains("ready to accept connections")
            {
                break;
            }
        }
        // Its log goes on being read (and dropped), so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.proc = Some(Running(child));
    }

    fn restart(&mut self) {
        self.proc = None;
        self.spawn();
    }
}

/// A node: `peerweb serve` on the cluster bus, a short resume grace.
fn node(redis: &Redis, name: &str, grace: u64) -> (Running, String) {
    let url = redis.url();
    let grace = grace.to_string();
    serve(
        &[
            "--redis",
            &url,
            "--node-name",
            name,
            "--resume-grace-secs",
            &grace,
            "--max-msgs-per-sec",
            "2000",
            "--msg-burst",
            "2000",
        ],
        &[],
    )
}

async fn connect(base: &str) -> Ws {
    let url = format!("{}/ws", base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next text frame (10 s at most), pongs skipped.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the connection open")
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] != "pong" {
                return v;
            }
        }
    }
}

/// What arrives within `d`.
async fn drain_for(ws: &mut Ws, d: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + d;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(end, ws.next()).await {
        if let Message::Text(t) = msg {
            out.push(serde_json::from_str(&t).unwrap());
        }
    }
    out
}

/// A client that acknowledges: hello (resuming with `token` and `last`), the welcome.
async fn hello(base: &str, token: Option<&str>, last: Option<u64>) -> (Ws, Value) {
    let mut ws = connect(base).await;
    let mut m = json!({"type":"hello","v":1,"acks":true});
    if let Some(t) = token {
        m["token"] = json!(t);
    }
    if let Some(n) = last {
        m["last"] = json!(n);
    }
    send(&mut ws, m).await;
    let w = recv(&mut ws).await;
    assert_eq!(w["type"], "welcome", "{w}");
    (ws, w)
}

async fn join(ws: &mut Ws, room: &str) -> Value {
    send(ws, json!({"type":"join","room":room})).await;
    let j = recv(ws).await;
    assert_eq!(j["type"], "joined", "{j}");
    j
}

/// Reads swarm introductions (`swarm-peer`, `swarm-peers`) until every one of `ids` was
/// introduced, and returns them; any other frame fails.
async fn introduced(ws: &mut Ws, ids: &[&str]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    let mut frames = Vec::new();
    while !ids.iter().all(|i| seen.contains(*i)) {
        let f = recv(ws).await;
        match f["type"].as_str() {
            Some("swarm-peer") => {
                seen.insert(f["peer"]["id"].as_str().unwrap_or_default().to_owned());
            }
            Some("swarm-peers") => {
                for p in f["peers"].as_array().into_iter().flatten() {
                    seen.insert(p["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            _ => panic!("expected an introduction to {ids:?}, got {f}"),
        }
        frames.push(f);
    }
    frames
}

/// The next frame that is not a swarm introduction (one a race made twice is harmless).
async fn recv_not_intro(ws: &mut Ws) -> Value {
    loop {
        let f = recv(ws).await;
        if !matches!(f["type"].as_str(), Some("swarm-peer" | "swarm-peers")) {
            return f;
        }
    }
}

fn id(w: &Value) -> String {
    w["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_different_nodes_share_rooms_and_signal_in_order_once() {
    let redis = Redis::start("rooms", false);
    let nodes: Vec<(Running, String)> = (1..=3)
        .map(|i| node(&redis, &format!("n{i}"), 20))
        .collect();
    let (mut a, wa) = hello(&nodes[0].1, None, None).await;
    let (mut b, wb) = hello(&nodes[1].1, None, None).await;
    let (mut c, wc) = hello(&nodes[2].1, None, None).await;
    join(&mut a, "r").await;
    let jb = join(&mut b, "r").await;
    assert_eq!(jb["peers"], json!([{"id": id(&wa)}]));
    assert_eq!(
        recv(&mut a).await,
        json!({"type":"peer-joined","room":"r","peer":{"id": id(&wb)}})
    );
    let jc = join(&mut c, "r").await;
    assert_eq!(jc["peers"], json!([{"id": id(&wa)}, {"id": id(&wb)}]));
    for ws in [&mut a, &mut b] {
        assert_eq!(
            recv(ws).await,
            json!({"type":"peer-joined","room":"r","peer":{"id": id(&wc)}})
        );
    }
    // 1,000 sequenced signals from a node-1 peer to a node-2 peer: in order, each once.
    let to = id(&wb);
    let sender = async {
        for i in 0..1000 {
            send(&mut a, json!({"type":"signal","to":to,"data":{"i":i}})).await;
        }
    };
    let receiver = async {
        let mut got = Vec::new();
        let mut last = 0;
        while got.len() < 1000 {
            let f = recv(&mut b).await;
            assert_eq!(f["type"], "signal", "{f}");
            assert_eq!(f["from"], json!(id(&wa)));
            let n = f["n"].as_u64().unwrap();
            assert!(n > last, "n goes up");
            last = n;
            got.push(f["data"]["i"].as_u64().unwrap());
            if got.len() % 100 == 0 {
                send(&mut b, json!({"type":"ack","n":n})).await;
            }
        }
        got
    };
    let ((), got) = tokio::join!(sender, receiver);
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    // A leave on node 3 reaches nodes 1 and 2 once.
    send(&mut c, json!({"type":"leave","room":"r"})).await;
    assert_eq!(recv(&mut c).await["type"], "left");
    for ws in [&mut a, &mut b] {
        assert_eq!(
            recv(ws).await,
            json!({"type":"peer-left","room":"r","id": id(&wc)})
        );
    }
    let rest = drain_for(&mut a, Duration::from_millis(500)).await;
    assert!(rest.is_empty(), "{rest:?}");
    // The nodes see each other, and the cluster's sessions and rooms (`/metrics`, updated
    // every second).
    let want = [
        "peerweb_cluster_nodes 3",
        "peerweb_cluster_sessions 3",
        "peerweb_cluster_rooms 1",
    ];
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http_get(&nodes[0].1, "/metrics").await;
        if want.iter().all(|w| metrics.lines().any(|l| l == *w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cluster: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("peerweb_cluster"))
        .collect();
    assert_eq!(cluster, want);
}

async fn http_get(base: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_burst_loses_nothing_and_no_one_sees_its_peer_leave() {
    let redis = Redis::start("kill", false);
    let mut nodes: Vec<Option<(Running, String)>> = (1..=3)
        .map(|i| Some(node(&redis, &format!("n{i}"), 4)))
        .collect();
    let base = |nodes: &[Option<(Running, String)>], i: usize| nodes[i].as_ref().unwrap().1.clone();
    let (mut a, wa) = hello(&base(&nodes, 0), None, None).await;
    let (mut b, wb) = hello(&base(&nodes, 1), None, None).await;
    let token_b = wb["token"].as_str().unwrap().to_owned();
    join(&mut a, "r").await;
    join(&mut b, "r").await;
    recv(&mut a).await;
    let to = id(&wb);
    // The first half of the burst, of which b reads what arrives in time.
    for i in 0..250 {
        send(&mut a, json!({"type":"signal","to":to,"data":{"i":i}})).await;
    }
    let mut got = Vec::new();
    let mut last = None;
    while got.len() < 100 {
        let f = recv(&mut b).await;
        last = f["n"].as_u64();
        got.push(f["data"]["i"].as_u64().unwrap());
    }
    send(&mut b, json!({"type":"ack","n":last.unwrap()})).await;
    // b's node dies (SIGKILL) while the burst goes on.
    let killed = nodes[1].take().unwrap();
    drop(killed);
    for i in 250..500 {
        send(&mut a, json!({"type":"signal","to":to,"data":{"i":i}})).await;
    }
    drop(b);
    // b comes back on node 3 with its token and the last signal it got.
    let (mut b, w) = hello(&base(&nodes, 2), Some(&token_b), last).await;
    assert_eq!(
        (w["id"].as_str(), &w["resumed"]),
        (Some(to.as_str()), &json!(true))
    );
    while got.len() < 500 {
        let f = recv(&mut b).await;
        assert_eq!(f["type"], "signal", "{f}");
        got.push(f["data"]["i"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (0..500).collect::<Vec<_>>(),
        "every signal once, in order"
    );
    // Past the grace (4 s): a never saw b leave; they still talk.
    let seen = drain_for(&mut a, Duration::from_secs(6)).await;
    assert!(seen.iter().all(|f| f["type"] != "peer-left"), "{seen:?}");
    send(
        &mut b,
        json!({"type":"signal","to":id(&wa),"data":{"back":1}}),
    )
    .await;
    assert_eq!(recv(&mut a).await["data"], json!({"back":1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_returns_leaves_once_for_everyone() {
    let redis = Redis::start("gone", false);
    let nodes: Vec<(Running, String)> =
        (1..=3).map(|i| node(&redis, &format!("n{i}"), 2)).collect();
    let (mut x, wx) = hello(&nodes[0].1, None, None).await;
    join(&mut x, "r").await;
    let mut watchers = Vec::new();
    for n in &nodes[1..] {
        let (mut w, _) = hello(&n.1, None, None).await;
        join(&mut w, "r").await;
        watchers.push(w);
    }
    // x's network goes: its socket dropped without a goodbye.
    drop(x);
    for w in &mut watchers {
        let frames = drain_for(w, Duration::from_secs(7)).await;
        let left: Vec<&Value> = frames.iter().filter(|f| f["type"] == "peer-left").collect();
        assert_eq!(
            left,
            [&json!({"type":"peer-left","room":"r","id": id(&wx)})],
            "{frames:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_traffic_loses_no_accepted_signal() {
    let mut redis = Redis::start("restart", true);
    let nodes: Vec<(Running, String)> = (1..=2)
        .map(|i| node(&redis, &format!("n{i}"), 20))
        .collect();
    let (mut a, _) = hello(&nodes[0].1, None, None).await;
    let (mut b, wb) = hello(&nodes[1].1, None, None).await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;
    recv(&mut a).await;
    let to = id(&wb);
    let (mut a_tx, mut a_rx) = a.split();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // a signals steadily; b reads and acknowledges as it goes; Redis is killed and started
    // again (from its append-only file) in the middle of it.
    let sender = tokio::spawn(async move {
        let mut i = 0u64;
        while !*stop_rx.borrow_and_update() && i < 3000 {
            let m = json!({"type":"signal","to":to,"data":{"i":i}});
            a_tx.send(Message::text(m.to_string())).await.unwrap();
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        i
    });
    let receiver = tokio::spawn(async move {
        let mut got = Vec::new();
        // Until nothing came for 5 s (the sender stops after about 2 s).
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), b.next()).await {
            let Message::Text(t) = msg else { continue };
            let f: Value = serde_json::from_str(&t).unwrap();
            if f["type"] == "signal" {
                got.push(f["data"]["i"].as_u64().unwrap());
                if got.len() % 50 == 0 {
                    let ack = json!({"type":"ack","n":f["n"]});
                    let _ = b.send(Message::text(ack.to_string())).await;
                }
            }
        }
        got
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_tx.send(true).unwrap();
    let sent = sender.await.unwrap();
    // Refusals come back to a as errors; everything else reaches b, once, in order.
    let errors = drain_for_split(&mut a_rx, Duration::from_secs(3)).await;
    let refused = errors.iter().filter(|f| f["type"] == "error").count() as u64;
    let got = receiver.await.unwrap();
    println!(
        "Redis restarted mid-traffic: {} of {sent} signals arrived, {refused} refused",
        got.len()
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, each once");
    assert!(
        sent - got.len() as u64 <= refused,
        "a signal neither arrived nor was refused: {} arrived, {refused} refused of {sent}",
        got.len()
    );
    assert!(
        got.len() as u64 > sent / 2,
        "most got through: {} of {sent}",
        got.len()
    );
}

async fn drain_for_split(
    rx: &mut futures_util::stream::SplitStream<Ws>,
    d: Duration,
) -> Vec<Value> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + d;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(end, rx.next()).await {
        if let Message::Text(t) = msg {
            out.push(serde_json::from_str(&t).unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_node_moves_its_clients_to_the_others_unseen() {
    let redis = Redis::start("drain", false);
    let nodes: Vec<(Running, String)> =
        (1..=3).map(|i| node(&redis, &format!("n{i}"), 4)).collect();
    let (mut x, wx) = hello(&nodes[0].1, None, None).await;
    let (mut w, _) = hello(&nodes[1].1, None, None).await;
    join(&mut x, "r").await;
    join(&mut w, "r").await;
    recv(&mut x).await;
    // A rolling deploy: node 1 is told to stop. Its clients are told to reconnect (1001).
    let pid = nodes[0].0.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match x.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, Some(1001));
    // The client resumes on node 3; the member on node 2 sees nothing, well past the grace.
    let token = wx["token"].as_str().unwrap();
    let (mut x, again) = hello(&nodes[2].1, Some(token), None).await;
    assert_eq!((&again["id"], &again["resumed"]), (&wx["id"], &json!(true)));
    join(&mut x, "r").await;
    let seen = drain_for(&mut w, Duration::from_secs(6)).await;
    assert!(seen.is_empty(), "{seen:?}");
    send(
        &mut w,
        json!({"type":"signal","to":id(&wx),"data":{"after":"deploy"}}),
    )
    .await;
    assert_eq!(recv(&mut x).await["data"], json!({"after":"deploy"}));
}

/// What a connection gets until its socket closes (`timeout` at most): its frames, and the
/// close code if it was closed.
async fn until_closed(ws: &mut Ws, timeout: Duration) -> (Vec<Value>, Option<u16>) {
    let mut frames = Vec::new();
    let end = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => frames.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(f)))) => return (frames, f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            Ok(_) | Err(_) => return (frames, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_racing_two_nodes_with_one_token_ends_with_one_connection() {
    let redis = Redis::start("race", false);
    let nodes: Vec<(Running, String)> = (1..=3)
        .map(|i| node(&redis, &format!("n{i}"), 20))
        .collect();
    let (mut a, _) = hello(&nodes[0].1, None, None).await;
    let (mut b, wb) = hello(&nodes[0].1, None, None).await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;
    recv(&mut a).await;
    let (token, to) = (wb["token"].as_str().unwrap().to_owned(), id(&wb));
    let mut last = None;
    for round in 0..6u64 {
        // One token, two hellos at once: one to node 2, one to node 3 (the rounds alternate
        // which is sent first). Both may be welcomed; the later claim fences out the other.
        let (first, second) = if round % 2 == 0 { (1, 2) } else { (2, 1) };
        let hello_with = |i: usize| {
            let base = nodes[i].1.clone();
            let token = token.clone();
            async move {
                let mut ws = connect(&base).await;
                let mut m = json!({"type":"hello","v":1,"acks":true,"token":token});
                if let Some(n) = last {
                    m["last"] = json!(n);
                }
                send(&mut ws, m).await;
                ws
            }
        };
        let (mut x, mut y) = tokio::join!(hello_with(first), hello_with(second));
        // The one still open gets a's next signal; every other is closed as replaced.
        send(
            &mut a,
            json!({"type":"signal","to":to,"data":{"round":round}}),
        )
        .await;
        let ((fx, cx), (fy, cy), (fb, cb)) = tokio::join!(
            until_closed(&mut x, Duration::from_secs(2)),
            until_closed(&mut y, Duration::from_secs(2)),
            until_closed(&mut b, Duration::from_secs(2)),
        );
        let closes = [cx, cy, cb];
        let survivors: Vec<usize> = (0..3).filter(|&i| closes[i].is_none()).collect();
        assert_eq!(
            survivors.len(),
            1,
            "round {round}: one connection holds the session: closes {closes:?}"
        );
        for c in closes.iter().flatten() {
            assert_eq!(*c, 4409, "round {round}: closed as replaced, {closes:?}");
        }
        let frames = [fx, fy, fb];
        let signals = |i: usize| -> Vec<&Value> {
            frames[i].iter().filter(|f| f["type"] == "signal").collect()
        };
        let got = signals(survivors[0]);
        assert_eq!(got.len(), 1, "round {round}: the signal once: {frames:?}");
        assert_eq!(got[0]["data"], json!({"round": round}));
        // A connection replaced after it got the signal had it as well, at the same `n`
        // (the client keeps the first), since it never acknowledged it.
        for i in (0..3).filter(|&i| i != survivors[0]) {
            assert!(
                signals(i).iter().all(|f| f == &got[0]),
                "round {round}: {frames:?}"
            );
        }
        last = got[0]["n"].as_u64();
        b = [x, y, b].into_iter().nth(survivors[0]).unwrap();
        send(&mut b, json!({"type":"ack","n":last})).await;
    }
    // Well inside the grace, a never saw b leave or come back.
    let seen = drain_for(&mut a, Duration::from_millis(500)).await;
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_members_on_different_nodes_meet_through_the_directory() {
    let redis = Redis::start("swarm", false);
    let nodes: Vec<(Running, String)> = (1..=3)
        .map(|i| node(&redis, &format!("n{i}"), 20))
        .collect();
    let swarm = "c0".repeat(32);
    // A seed on node 1, then one member on each of nodes 2 and 3.
    let (mut seed, ws) = hello(&nodes[0].1, None, None).await;
    send(
        &mut seed,
        json!({"type":"swarm-join","swarm":swarm,"seed":true}),
    )
    .await;
    assert_eq!(recv(&mut seed).await["peers"], json!([]));
    // Members on nodes 2 and 3 (nobody else on their nodes): the directory introduces the
    // others. Through whom and in which order is a race between the nodes (the seed's node
    // may meet a member in the directory before the member's own node introduces the seed),
    // so ids are gathered from `swarm-peer` and `swarm-peers` frames alike; a list drawn
    // from the directory names the seed first.
    let seed_id = id(&ws);
    let mut members: Vec<(Ws, String)> = Vec::new();
    for (k, n) in nodes[1..].iter().enumerate() {
        let (mut m, wm) = hello(&n.1, None, None).await;
        send(
            &mut m,
            json!({"type":"swarm-join","swarm":swarm,"seed":false}),
        )
        .await;
        let joined = recv(&mut m).await;
        assert_eq!(joined["type"], "swarm-joined", "{joined}");
        let mut want = vec![seed_id.as_str()];
        if k == 1 {
            want.push(members[0].1.as_str());
        }
        let frames = introduced(&mut m, &want).await;
        for f in frames.iter().filter(|f| f["type"] == "swarm-peers") {
            assert_eq!(f["peers"][0], json!({"id": seed_id, "seed": true}), "{f}");
        }
        members.push((m, id(&wm)));
    }
    let (m0, m1) = (members[0].1.clone(), members[1].1.clone());
    introduced(&mut seed, &[&m0, &m1]).await;
    introduced(&mut members[0].0, &[&m1]).await;
    // Neighbours on different nodes signal each other.
    send(
        &mut seed,
        json!({"type":"signal","to":m0,"data":{"piece":1}}),
    )
    .await;
    assert_eq!(
        recv_not_intro(&mut members[0].0).await["data"],
        json!({"piece":1})
    );
    // The seed goes: each member hears it, on its own node.
    send(&mut seed, json!({"type":"swarm-leave","swarm":swarm})).await;
    assert_eq!(recv_not_intro(&mut seed).await["type"], "swarm-left");
    for (m, _) in &mut members {
        assert_eq!(
            recv_not_intro(m).await,
            json!({"type":"swarm-peer-left","swarm":swarm,"id":id(&ws)})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_peers_on_one_node_still_signal_and_the_rest_retry() {
    let mut redis = Redis::start("down", true);
    let nodes: Vec<(Running, String)> = (1..=2)
        .map(|i| node(&redis, &format!("n{i}"), 30))
        .collect();
    let (mut a, _) = hello(&nodes[0].1, None, None).await;
    let (mut b, wb) = hello(&nodes[0].1, None, None).await;
    let (mut x, wx) = hello(&nodes[1].1, None, None).await;
    for ws in [&mut a, &mut b, &mut x] {
        join(ws, "r").await;
    }
    drain_for(&mut a, Duration::from_millis(300)).await;
    drain_for(&mut b, Duration::from_millis(100)).await;
    // Redis goes away (and stays away a while).
    redis.proc = None;
    // Within a beat (1 s) node 1 knows; until then a signal may still be refused.
    let (to_b, to_x) = (id(&wb), id(&wx));
    let mut i = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "local signals never went through"
        );
        send(&mut a, json!({"type":"signal","to":to_b,"data":{"i":i}})).await;
        i += 1;
        let got = drain_for(&mut b, Duration::from_millis(300)).await;
        if let Some(f) = got.iter().find(|f| f["type"] == "signal") {
            assert_eq!(f["n"], Value::Null, "directly, not through the inbox: {f}");
            break;
        }
    }
    drain_for(&mut a, Duration::from_millis(100)).await;
    // Now every local signal goes through, in order; one to the other node is refused at once.
    for k in 0..50 {
        send(&mut a, json!({"type":"signal","to":to_b,"data":{"k":k}})).await;
    }
    let mut got = Vec::new();
    while got.len() < 50 {
        let f = recv(&mut b).await;
        got.push(f["data"]["k"].as_u64().unwrap());
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    send(&mut a, json!({"type":"signal","to":to_x,"data":{"lost":1}})).await;
    let refused = recv(&mut a).await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("unavailable")),
        "{refused}"
    );
    // Redis is back (from its append-only file): the signal tried again arrives, through the bus.
    redis.spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never back on the bus"
        );
        send(
            &mut a,
            json!({"type":"signal","to":to_x,"data":{"again":1}}),
        )
        .await;
        let answer = drain_for(&mut a, Duration::from_millis(300)).await;
        if answer.iter().all(|f| f["type"] != "error") {
            break;
        }
    }
    let f = recv(&mut x).await;
    assert_eq!(f["data"], json!({"again":1}), "{f}");
    assert!(f["n"].as_u64().is_some());
}
