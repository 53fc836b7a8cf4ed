//! Several nodes on one bus (the in-memory model), in virtual time: rooms and signals across
//! nodes, a node that dies, sessions that move — and random sequences of all of it.

use super::*;
use crate::bus::{BusEvent, Model, Wake};

/// Nodes sharing one bus. Bus ops run at once, in order; wake-ups reach their node.
struct Cluster {
    nodes: Vec<Option<Signal>>,
    bus: Model,
    now: Instant,
    start: Instant,
    /// Frames each connection got (connection ids are unique across the cluster).
    got: HashMap<ConnId, Vec<Value>>,
    closed: HashMap<ConnId, u16>,
    /// Which node each connection is on.
    on: HashMap<ConnId, usize>,
    next_conn: u64,
}

impl Cluster {
    fn new(n: usize) -> Self {
        let now = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let cfg = Config {
                    node: format!("n{i}"),
                    max_conns_per_ip: 0,
                    ..Config::default()
                };
                Some(Signal::new(cfg, [i as u8 + 1; 32], now))
            })
            .collect();
        Self {
            nodes,
            bus: Model::new(),
            now,
            start: now,
            got: HashMap::new(),
            closed: HashMap::new(),
            on: HashMap::new(),
            next_conn: 1,
        }
    }

    fn wall(&self) -> u64 {
        WALL0 + self.now.duration_since(self.start).as_millis() as u64
    }

    /// Runs every node's output (and what it causes on the others) until all are quiet.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.nodes.len() {
                while let Some(s) = self.nodes[i].as_mut() {
                    match s.poll_output() {
                        Output::Send { conn, frame } => {
                            let v: Value = serde_json::from_str(&frame).unwrap();
                            self.got.entry(conn).or_default().push(v);
                        }
                        Output::Close { conn, code, .. } => {
                            self.closed.insert(conn, code);
                            self.on.remove(&conn);
                        }
                        Output::Ping { .. } => {}
                        Output::Bus(op) => {
                            busy = true;
                            let mut wakes = Vec::new();
                            let node = format!("n{i}");
                            let wall = self.wall();
                            let ev = self.bus.execute(&node, wall, op, &mut wakes);
                            let now = self.now;
                            if let (Some(ev), Some(s)) = (ev, self.nodes[i].as_mut()) {
                                s.handle_bus(now, ev);
                            }
                            for (to, wake) in wakes {
                                let j: usize = to[1..].parse().unwrap();
                                if let Some(t) = self.nodes[j].as_mut() {
                                    t.handle_bus(now, BusEvent::Wake(wake));
                                }
                            }
                        }
                        Output::Timeout(_) => break,
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn input(&mut self, node: usize, input: Input<'_>) {
        let now = self.now;
        if let Some(s) = self.nodes[node].as_mut() {
            s.handle_input(now, input);
        }
        self.settle();
    }

    /// A connection to `node`; says hello (with `token` and `last` to resume). Returns the
    /// connection and its welcome.
    fn hello(&mut self, node: usize, token: Option<&str>, last: Option<u64>) -> (ConnId, Value) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.on.insert(conn, node);
        self.input(
            node,
            Input::Open {
                conn,
                ip: "10.0.0.1".parse().unwrap(),
            },
        );
        let mut m = json!({"type":"hello","v":1,"acks":true});
        if let Some(t) = token {
            m["token"] = json!(t);
        }
        if let Some(n) = last {
            m["last"] = json!(n);
        }
        self.say(conn, m);
        let frames = self.got.get_mut(&conn).expect("an answer to hello");
        let w = frames.remove(0);
        assert_eq!(w["type"], "welcome", "{w}");
        (conn, w)
    }

    fn say(&mut self, conn: ConnId, v: Value) {
        let Some(&node) = self.on.get(&conn) else {
            return;
        };
        let text = v.to_string();
        self.input(node, Input::Text { conn, text: &text });
    }

    fn take(&mut self, conn: ConnId) -> Vec<Value> {
        self.got.remove(&conn).unwrap_or_default()
    }

    fn close(&mut self, conn: ConnId, goodbye: bool) {
        if let Some(node) = self.on.remove(&conn) {
            self.input(node, Input::Closed { conn, goodbye });
        }
    }

    /// The node dies: its state is gone, its connections with it (no goodbye, no renewals).
    fn kill(&mut self, node: usize) {
        self.nodes[node] = None;
        self.on.retain(|_, n| *n != node);
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(250)).min(end);
            for i in 0..self.nodes.len() {
                self.input(i, Input::Timeout);
            }
        }
    }
}

const SWARM: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn of_type<'a>(frames: &'a [Value], ty: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == ty).collect()
}

#[test]
fn peers_on_two_nodes_meet_signal_and_leave_as_on_one() {
    let mut c = Cluster::new(2);
    let (a, wa) = c.hello(0, None, None);
    let (b, wb) = c.hello(1, None, None);
    let (ida, idb) = (wa["id"].as_str().unwrap(), wb["id"].as_str().unwrap());
    c.say(a, json!({"type":"join","room":"r","meta":{"n":"a"}}));
    assert_eq!(
        c.take(a),
        vec![json!({"type":"joined","room":"r","peers":[]})]
    );
    c.say(b, json!({"type":"join","room":"r"}));
    assert_eq!(
        c.take(b),
        vec![json!({"type":"joined","room":"r","peers":[{"id":ida,"meta":{"n":"a"}}]})]
    );
    assert_eq!(
        c.take(a),
        vec![json!({"type":"peer-joined","room":"r","peer":{"id":idb}})]
    );
    for i in 0..3 {
        c.say(b, json!({"type":"signal","to":ida,"data":{"i":i}}));
    }
    let got = c.take(a);
    let data: Vec<&Value> = got.iter().map(|f| &f["data"]["i"]).collect();
    assert_eq!(data, [&json!(0), &json!(1), &json!(2)]);
    assert!(got.iter().all(|f| f["from"] == idb));
    c.say(b, json!({"type":"leave","room":"r"}));
    assert_eq!(c.take(b), vec![json!({"type":"left","room":"r"})]);
    assert_eq!(
        c.take(a),
        vec![json!({"type":"peer-left","room":"r","id":idb})]
    );
    // Not in a room together any more.
    c.say(b, json!({"type":"signal","to":ida,"data":{}}));
    assert_eq!(c.take(b)[0]["code"], "unknown-peer");
}

#[test]
fn swarm_members_on_different_nodes_are_introduced_signal_and_see_each_other_leave() {
    let mut c = Cluster::new(2);
    let (a, wa) = c.hello(0, None, None);
    let (b, wb) = c.hello(1, None, None);
    let (ida, idb) = (wa["id"].as_str().unwrap(), wb["id"].as_str().unwrap());
    c.say(a, json!({"type":"swarm-join","swarm":SWARM,"seed":true}));
    assert_eq!(
        c.take(a),
        vec![json!({"type":"swarm-joined","swarm":SWARM,"peers":[]})]
    );
    // Nobody on b's node: the directory finds a on the other one.
    c.say(b, json!({"type":"swarm-join","swarm":SWARM,"seed":false}));
    assert_eq!(
        c.take(b),
        vec![
            json!({"type":"swarm-joined","swarm":SWARM,"peers":[]}),
            json!({"type":"swarm-peers","swarm":SWARM,"peers":[{"id":ida,"seed":true}]}),
        ]
    );
    assert_eq!(
        c.take(a),
        vec![json!({"type":"swarm-peer","swarm":SWARM,"peer":{"id":idb,"seed":false}})]
    );
    // Neighbours signal each other, as on one node.
    c.say(b, json!({"type":"signal","to":ida,"data":{"offer":1}}));
    assert_eq!(c.take(a)[0]["data"], json!({"offer":1}));
    c.say(a, json!({"type":"signal","to":idb,"data":{"answer":1}}));
    assert_eq!(c.take(b)[0]["data"], json!({"answer":1}));
    // A third member on a's node gets a (local) and b (from the directory) — b only once.
    let (x, wx) = c.hello(0, None, None);
    let idx = wx["id"].as_str().unwrap();
    c.say(x, json!({"type":"swarm-join","swarm":SWARM,"seed":false}));
    let got = c.take(x);
    assert_eq!(
        got,
        vec![
            json!({"type":"swarm-joined","swarm":SWARM,"peers":[{"id":ida,"seed":true}]}),
            json!({"type":"swarm-peers","swarm":SWARM,"peers":[{"id":idb,"seed":false}]}),
        ]
    );
    for p in [a, b] {
        assert_eq!(
            c.take(p),
            vec![json!({"type":"swarm-peer","swarm":SWARM,"peer":{"id":idx,"seed":false}})]
        );
    }
    // b leaves: both its neighbours on the other node hear it; signals to it are refused.
    c.say(b, json!({"type":"swarm-leave","swarm":SWARM}));
    assert_eq!(c.take(b), vec![json!({"type":"swarm-left","swarm":SWARM})]);
    for p in [a, x] {
        assert_eq!(
            c.take(p),
            vec![json!({"type":"swarm-peer-left","swarm":SWARM,"id":idb})]
        );
    }
    c.say(a, json!({"type":"signal","to":idb,"data":{}}));
    assert_eq!(c.take(a)[0]["code"], "unknown-peer");
    // a's session ends: it leaves the directory with it (a newcomer on b's node finds x only).
    c.close(a, true);
    let (y, _) = c.hello(1, None, None);
    c.say(y, json!({"type":"swarm-join","swarm":SWARM,"seed":false}));
    assert_eq!(
        c.take(y)[1],
        json!({"type":"swarm-peers","swarm":SWARM,"peers":[{"id":idx,"seed":false}]})
    );
    for s in c.nodes.iter().flatten() {
        s.swarms.check(&s.cfg.swarm_limits());
    }
}

#[test]
fn while_the_bus_is_away_peers_on_one_node_still_signal_and_the_rest_is_refused() {
    let mut c = Cluster::new(2);
    let (a, wa) = c.hello(0, None, None);
    let (b, wb) = c.hello(0, None, None);
    let (x, wx) = c.hello(1, None, None);
    let id = |w: &Value| w["id"].as_str().unwrap().to_owned();
    let (ida, idb, idx) = (id(&wa), id(&wb), id(&wx));
    for conn in [a, b, x] {
        c.say(conn, json!({"type":"join","room":"r"}));
    }
    for conn in [a, b, x] {
        c.take(conn);
    }
    c.say(a, json!({"type":"signal","to":idb,"data":{"i":0}}));
    assert!(c.take(b)[0]["n"].as_u64().is_some(), "through the bus");
    // Node 0 loses the bus.
    let now = c.now;
    c.nodes[0]
        .as_mut()
        .unwrap()
        .handle_bus(now, BusEvent::Wake(Wake::Lost));
    c.settle();
    for i in 1..4 {
        c.say(a, json!({"type":"signal","to":idb,"data":{"i":i}}));
    }
    let got = c.take(b);
    assert_eq!(
        got,
        (1..4)
            .map(|i| json!({"type":"signal","from":ida,"data":{"i":i}}))
            .collect::<Vec<_>>(),
        "directly, in order, without n"
    );
    // To a peer on another node, and from a peer it does not share a room with: refused.
    c.say(a, json!({"type":"signal","to":idx,"data":{}}));
    assert_eq!(c.take(a)[0]["code"], "unavailable");
    assert!(c.take(x).is_empty());
    // Back: everything goes through the bus again, with its n.
    c.nodes[0]
        .as_mut()
        .unwrap()
        .handle_bus(now, BusEvent::Wake(Wake::Resync));
    c.settle();
    c.say(a, json!({"type":"signal","to":idx,"data":{"back":1}}));
    assert_eq!(c.take(x)[0]["data"], json!({"back":1}));
    c.say(a, json!({"type":"signal","to":idb,"data":{"i":4}}));
    let f = c.take(b);
    assert_eq!(f[0]["data"], json!({"i":4}));
    assert!(f[0]["n"].as_u64().is_some());
}

#[test]
fn a_dead_nodes_peer_resumes_elsewhere_with_every_signal_once_and_unseen_by_the_others() {
    let mut c = Cluster::new(3);
    let (a, wa) = c.hello(0, None, None);
    let (b, wb) = c.hello(1, None, None);
    let ida = wa["id"].as_str().unwrap().to_owned();
    let (idb, token_b) = (
        wb["id"].as_str().unwrap().to_owned(),
        wb["token"].as_str().unwrap().to_owned(),
    );
    c.say(a, json!({"type":"join","room":"r"}));
    c.say(b, json!({"type":"join","room":"r"}));
    c.take(a);
    c.take(b);
    // A burst; b reads part of it, acknowledges less, and its node dies.
    for i in 0..10 {
        c.say(a, json!({"type":"signal","to":idb,"data":{"i":i}}));
    }
    let seen = c.take(b);
    assert_eq!(seen.len(), 10);
    let n = |f: &Value| f["n"].as_u64().unwrap();
    c.say(b, json!({"type":"ack","n":n(&seen[3])}));
    c.kill(1);
    for i in 10..15 {
        c.say(a, json!({"type":"signal","to":idb,"data":{"i":i}}));
    }
    assert!(
        c.take(a).is_empty(),
        "the sender is told nothing went wrong"
    );
    c.advance(Duration::from_secs(5));
    // b got up to #6 before its connection died; it resumes on node 2.
    let (b2, w) = c.hello(2, Some(&token_b), Some(n(&seen[6])));
    assert_eq!((&w["id"], &w["resumed"]), (&json!(idb), &json!(true)));
    assert_eq!(w["rooms"], json!(["r"]));
    let rest: Vec<u64> = of_type(&c.take(b2), "signal")
        .iter()
        .map(|f| f["data"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(
        rest,
        (7..15).collect::<Vec<_>>(),
        "each signal once, in order"
    );
    // Well past the grace: a never saw b leave, and they still signal both ways.
    c.advance(Duration::from_secs(40));
    assert!(of_type(&c.take(a), "peer-left").is_empty());
    c.say(b2, json!({"type":"signal","to":ida,"data":{"back":true}}));
    assert_eq!(of_type(&c.take(a), "signal").len(), 1);
    c.say(b2, json!({"type":"join","room":"r"}));
    assert_eq!(
        c.take(b2),
        vec![json!({"type":"joined","room":"r","peers":[{"id":ida}]})]
    );
}

#[test]
fn a_peer_that_does_not_return_leaves_once_for_everyone_on_every_node() {
    let mut c = Cluster::new(3);
    let (x, wx) = c.hello(0, None, None);
    let idx = wx["id"].as_str().unwrap().to_owned();
    let watchers: Vec<ConnId> = (1..3).map(|n| c.hello(n, None, None).0).collect();
    for conn in watchers.iter().chain([&x]) {
        c.say(*conn, json!({"type":"join","room":"r"}));
    }
    for w in &watchers {
        c.take(*w);
    }
    c.kill(0);
    c.advance(Duration::from_secs(19));
    for w in &watchers {
        assert!(c.take(*w).is_empty(), "a leave within the grace");
    }
    c.advance(Duration::from_secs(10));
    for w in &watchers {
        assert_eq!(
            c.take(*w),
            vec![json!({"type":"peer-left","room":"r","id":idx})],
            "exactly one leave"
        );
    }
}

#[test]
fn a_stale_node_is_fenced_out_when_its_peer_resumes_elsewhere() {
    let mut c = Cluster::new(2);
    let (a, wa) = c.hello(0, None, None);
    let token = wa["token"].as_str().unwrap().to_owned();
    c.say(a, json!({"type":"join","room":"r"}));
    // The same token on the other node (a client racing two nodes, or a network that
    // looked dead): the newest claim wins and the old connection is told so.
    let (a2, w) = c.hello(1, Some(&token), None);
    assert_eq!(w["resumed"], json!(true));
    assert_eq!(c.closed.get(&a), Some(&close::REPLACED));
    // The first node holds nothing of it any more; it keeps the room on the second.
    assert!(c.nodes[0].as_ref().unwrap().sessions.is_empty());
    c.say(a2, json!({"type":"join","room":"r"}));
    assert_eq!(c.take(a2)[0]["type"], "joined");
    c.advance(Duration::from_secs(60));
    assert_eq!(c.bus.members("r").members.len(), 1);
}

/// Random clients on three nodes: hellos (new and resumed, on any node), joins, leaves,
/// signals with acknowledgements, closes with and without goodbye, node deaths and time. At
/// every step each node's views agree with the bus; at the end every signal accepted for a
/// session that still exists reached it exactly once, in order per sender.
#[test]
fn random_operations_on_three_nodes_deliver_each_signal_once_in_order() {
    let (mut checked, mut resumed) = (0, 0);
    for seed in 0..20u8 {
        let (c, r) = random_cluster(seed);
        checked += c;
        resumed += r;
    }
    // The runs did what they are for.
    assert!(checked > 50, "only {checked} signals checked at the end");
    assert!(resumed > 50, "only {resumed} sessions resumed");
}

/// Returns the signals checked at the end and the sessions resumed on the way.
fn random_cluster(seed: u8) -> (usize, usize) {
    let mut rng = ChaCha20Rng::from_seed([seed; 32]);
    let mut c = Cluster::new(3);
    let rooms = ["a", "b"];
    // Clients: token, id, connection (if any), last n seen, and what they got per sender.
    struct Client {
        token: String,
        id: String,
        conn: Option<ConnId>,
        last: Option<u64>,
        got: HashMap<String, Vec<u64>>,
    }
    let mut clients: Vec<Client> = Vec::new();
    // Per (from, to): the sequence numbers of signals the bus accepted.
    let mut sent: HashMap<(String, String), Vec<u64>> = HashMap::new();
    let mut seq = 0u64;
    let (mut checked, mut resumed) = (0, 0);
    let read = |c: &mut Cluster, cl: &mut Client| {
        let Some(conn) = cl.conn else { return };
        for f in c.take(conn) {
            if f["type"] == "welcome" && f["resumed"] == json!(false) {
                cl.last = None;
                cl.got.clear();
            }
            if f["type"] == "signal" {
                let n = f["n"].as_u64().unwrap();
                assert!(cl.last.is_none_or(|l| n > l), "seed {seed}: n went back");
                cl.last = Some(n);
                let s = f["data"]["s"].as_u64().unwrap();
                cl.got
                    .entry(f["from"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(s);
            }
        }
    };
    for _ in 0..400 {
        let alive: Vec<usize> = (0..3).filter(|&i| c.nodes[i].is_some()).collect();
        if alive.is_empty() {
            break;
        }
        let node = alive[rng.next_u32() as usize % alive.len()];
        let k = if clients.is_empty() {
            None
        } else {
            Some(rng.next_u32() as usize % clients.len())
        };
        match (rng.next_u32() % 14, k) {
            (0, _) | (_, None) => {
                let (conn, w) = c.hello(node, None, None);
                clients.push(Client {
                    token: w["token"].as_str().unwrap().to_owned(),
                    id: w["id"].as_str().unwrap().to_owned(),
                    conn: Some(conn),
                    last: None,
                    got: HashMap::new(),
                });
            }
            (1, Some(k)) if !clients[k].token.is_empty() => {
                // (Re)connect on some node, resuming with what it has.
                if let Some(old) = clients[k].conn.take() {
                    c.close(old, false);
                }
                let (token, last) = (clients[k].token.clone(), clients[k].last);
                let (conn, w) = c.hello(node, Some(&token), last);
                clients[k].conn = Some(conn);
                if w["resumed"] == json!(true) {
                    resumed += 1;
                }
                if w["resumed"] == json!(false) {
                    clients[k].last = None;
                    clients[k].got.clear();
                    sent.retain(|(_, to), _| *to != clients[k].id);
                }
                read(&mut c, &mut clients[k]);
            }
            (2 | 3, Some(k)) => {
                if let Some(conn) = clients[k].conn {
                    let room = rooms[usize::from(rng.next_u32() % 4 == 0)];
                    c.say(conn, json!({"type":"join","room":room}));
                }
            }
            (4, Some(k)) => {
                if let Some(conn) = clients[k].conn {
                    let room = rooms[rng.next_u32() as usize % 2];
                    c.say(conn, json!({"type":"leave","room":room}));
                }
            }
            (5..=7, Some(k)) => {
                let to = clients[rng.next_u32() as usize % clients.len()].id.clone();
                if let Some(conn) = clients[k].conn {
                    // What came before is read first: the answer to this one is what follows.
                    read(&mut c, &mut clients[k]);
                    seq += 1;
                    c.say(conn, json!({"type":"signal","to":to,"data":{"s":seq}}));
                    let refused = c
                        .got
                        .get(&conn)
                        .is_some_and(|f| f.iter().any(|f| f["type"] == "error"));
                    if !refused {
                        sent.entry((clients[k].id.clone(), to))
                            .or_default()
                            .push(seq);
                    }
                    read(&mut c, &mut clients[k]);
                }
            }
            (8, Some(k)) => {
                read(&mut c, &mut clients[k]);
                if let (Some(conn), Some(n)) = (clients[k].conn, clients[k].last) {
                    c.say(conn, json!({"type":"ack","n":n}));
                }
            }
            (9, Some(k)) => {
                if let Some(conn) = clients[k].conn.take() {
                    let goodbye = rng.next_u32() % 2 == 0;
                    c.close(conn, goodbye);
                    if goodbye {
                        clients[k].token.clear();
                    }
                }
            }
            (10, _) => {
                if rng.next_u32() % 8 == 0 && alive.len() > 1 {
                    c.kill(node);
                    for cl in &mut clients {
                        if cl.conn.is_some_and(|conn| !c.on.contains_key(&conn)) {
                            cl.conn = None;
                        }
                    }
                }
            }
            (11, Some(k)) => {
                if let Some(conn) = clients[k].conn {
                    let seed = rng.next_u32() % 3 == 0;
                    c.say(conn, json!({"type":"swarm-join","swarm":SWARM,"seed":seed}));
                }
            }
            (12, Some(k)) => {
                if let Some(conn) = clients[k].conn {
                    c.say(conn, json!({"type":"swarm-leave","swarm":SWARM}));
                }
            }
            _ => c.advance(Duration::from_millis(u64::from(rng.next_u32() % 2000))),
        }
        for cl in &mut clients {
            if cl.conn.is_some_and(|conn| c.closed.contains_key(&conn)) {
                cl.conn = None;
            }
        }
        // What each client got from each sender is, so far, exactly what the bus accepted
        // from that sender for it, in order, without a gap or a repeat.
        for cl in &clients {
            for (from, got) in &cl.got {
                let accepted = sent.get(&(from.clone(), cl.id.clone()));
                let accepted = accepted.map_or(&[][..], |v| &v[..]);
                assert!(
                    accepted.starts_with(got),
                    "seed {seed}: {from} -> {}: got {got:?} of {accepted:?}",
                    cl.id
                );
            }
        }
        // Every view on every node agrees with the bus; swarm registries keep their shape.
        for s in c.nodes.iter().flatten() {
            s.swarms.check(&s.cfg.swarm_limits());
            for (name, view) in &s.rooms {
                let truth = c.bus.members(name);
                let ids: Vec<&String> = view.members.iter().map(|(p, _)| p).collect();
                let want: Vec<&String> = truth.members.iter().map(|(p, _)| p).collect();
                assert_eq!(ids, want, "seed {seed}: view of {name} on {}", s.cfg.node);
            }
        }
    }
    // Everyone still holding a session reads what is left: each signal the bus accepted for
    // it arrived once, in order per sender.
    for cl in &mut clients {
        if cl.token.is_empty() || c.bus.session(&cl.id).is_none() {
            continue;
        }
        let node = (0..3).find(|&i| c.nodes[i].is_some()).unwrap();
        if let Some(old) = cl.conn.take() {
            c.close(old, false);
        }
        let (token, last) = (cl.token.clone(), cl.last);
        let (conn, _) = c.hello(node, Some(&token), last);
        cl.conn = Some(conn);
        read(&mut c, cl);
        for ((from, to), seqs) in &sent {
            if *to != cl.id {
                continue;
            }
            let got = cl.got.get(from).cloned().unwrap_or_default();
            assert_eq!(&got, seqs, "seed {seed}: {from} -> {to}");
            checked += seqs.len();
        }
    }
    (checked, resumed)
}
