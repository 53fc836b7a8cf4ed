//! The core driven in virtual time: no sockets, no sleeping.

mod cluster;
mod swarm;

use super::*;
use peerweb_proto::{ClientKind, PathKind, RelayTransport};
use serde_json::{Value, json};

/// One node on a bus of its own (the in-memory model, run at once as the driver would run it).
struct Lab {
    s: Signal,
    now: Instant,
    start: Instant,
    bus: bus::Model,
    inbox: HashMap<ConnId, Vec<Value>>,
    pings: Vec<ConnId>,
    closed: HashMap<ConnId, u16>,
}

/// The wall clock of virtual time (ms): what the driver gives the bus.
const WALL0: u64 = 1_800_000_000_000;

impl Lab {
    fn new(cfg: Config) -> Self {
        let now = Instant::now();
        Self {
            s: Signal::new(cfg, [1; 32], now),
            now,
            start: now,
            bus: bus::Model::new(),
            inbox: HashMap::new(),
            pings: vec![],
            closed: HashMap::new(),
        }
    }

    fn wall(&self) -> u64 {
        WALL0 + self.now.duration_since(self.start).as_millis() as u64
    }

    fn input(&mut self, input: Input<'_>) {
        self.s.handle_input(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.s.poll_output() {
                Output::Send { conn, frame } => {
                    let v: Value = serde_json::from_str(&frame).unwrap();
                    self.inbox.entry(conn).or_default().push(v);
                }
                Output::Ping { conn } => self.pings.push(conn),
                Output::Close { conn, code, .. } => {
                    self.closed.insert(conn, code);
                }
                Output::Bus(op) => {
                    let mut wakes = Vec::new();
                    let node = self.s.config().node.clone();
                    let event = self.bus.execute(&node, self.wall(), op, &mut wakes);
                    if let Some(e) = event {
                        self.s.handle_bus(self.now, e);
                    }
                    for (to, wake) in wakes {
                        if to == node {
                            self.s.handle_bus(self.now, bus::BusEvent::Wake(wake));
                        }
                    }
                }
                Output::Timeout(_) => break,
            }
        }
    }

    fn open(&mut self, c: u64) {
        self.open_from(c, "10.0.0.1");
    }

    fn open_from(&mut self, c: u64, ip: &str) {
        self.input(Input::Open {
            conn: ConnId(c),
            ip: ip.parse().unwrap(),
        });
    }

    fn say(&mut self, c: u64, v: Value) {
        let text = v.to_string();
        self.input(Input::Text {
            conn: ConnId(c),
            text: &text,
        });
    }

    /// Opens, says hello and returns (id, token).
    fn hello(&mut self, c: u64) -> (String, String) {
        self.open(c);
        self.say(c, json!({"type":"hello","v":1}));
        let w = self.take(c).pop().unwrap();
        assert_eq!(w["type"], "welcome");
        (
            w["id"].as_str().unwrap().into(),
            w["token"].as_str().unwrap().into(),
        )
    }

    fn take(&mut self, c: u64) -> Vec<Value> {
        self.inbox.remove(&ConnId(c)).unwrap_or_default()
    }

    fn last_error(&mut self, c: u64) -> String {
        let frames = self.take(c);
        let e = frames
            .last()
            .unwrap_or_else(|| panic!("conn {c} got nothing"));
        assert_eq!(e["type"], "error", "{e}");
        e["code"].as_str().unwrap().into()
    }

    /// Advances virtual time, firing timeouts as the driver would.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let Output::Timeout(at) = self.s.poll_output() else {
                panic!("undrained output")
            };
            if at > end {
                break;
            }
            self.now = at;
            self.input(Input::Timeout);
        }
        self.now = end;
    }
}

fn join(lab: &mut Lab, c: u64, room: &str) -> Value {
    lab.say(c, json!({"type":"join","room":room}));
    lab.take(c).pop().unwrap()
}

#[test]
fn two_peers_meet_and_signal() {
    let mut lab = Lab::new(Config::default());
    let (a, _) = lab.hello(1);
    let (b, _) = lab.hello(2);
    assert_ne!(a, b);
    lab.say(1, json!({"type":"join","room":"r","meta":{"name":"ada"}}));
    assert_eq!(
        lab.take(1),
        vec![json!({"type":"joined","room":"r","peers":[]})]
    );
    let joined = join(&mut lab, 2, "r");
    assert_eq!(
        joined,
        json!({"type":"joined","room":"r","peers":[{"id":a,"meta":{"name":"ada"}}]})
    );
    assert_eq!(
        lab.take(1),
        vec![json!({"type":"peer-joined","room":"r","peer":{"id":b}})]
    );

    lab.say(
        1,
        json!({"type":"signal","to":b,"data":{"sdp":{"type":"offer","sdp":"v=0"}}}),
    );
    let got = lab.take(2);
    assert_eq!(
        got,
        vec![
            json!({"type":"signal","from":a,"data":{"sdp":{"type":"offer","sdp":"v=0"}},"n":got[0]["n"]})
        ]
    );
    assert!(got[0]["n"].as_u64().unwrap() > 0);
    assert!(lab.take(1).is_empty());
    assert_eq!(lab.s.stats().signals_relayed, 1);

    lab.say(2, json!({"type":"leave","room":"r"}));
    assert_eq!(lab.take(2), vec![json!({"type":"left","room":"r"})]);
    assert_eq!(
        lab.take(1),
        vec![json!({"type":"peer-left","room":"r","id":b})]
    );
}

#[test]
fn signal_needs_a_shared_room() {
    let mut lab = Lab::new(Config::default());
    let (_, _) = lab.hello(1);
    let (b, _) = lab.hello(2);
    let (c, _) = lab.hello(3);
    join(&mut lab, 1, "r1");
    join(&mut lab, 2, "r2");
    join(&mut lab, 3, "r1");
    lab.take(1);
    lab.say(1, json!({"type":"signal","to":b,"data":{}}));
    assert_eq!(lab.last_error(1), "unknown-peer");
    assert!(lab.take(2).is_empty());
    lab.say(1, json!({"type":"signal","to":"nobody","data":{}}));
    assert_eq!(lab.last_error(1), "unknown-peer");
    // To itself.
    let me = lab.s.conns[&ConnId(1)].session.clone().unwrap();
    lab.say(1, json!({"type":"signal","to":me,"data":{}}));
    assert_eq!(lab.last_error(1), "unknown-peer");
    lab.say(1, json!({"type":"signal","to":c,"data":{}}));
    assert_eq!(lab.take(3).len(), 1);
}

#[test]
fn hello_comes_first_and_once() {
    let mut lab = Lab::new(Config::default());
    lab.open(1);
    lab.say(1, json!({"type":"join","room":"r"}));
    assert_eq!(lab.last_error(1), "hello-required");
    lab.say(1, json!({"type":"hello","v":2}));
    assert_eq!(lab.last_error(1), "unsupported-version");
    lab.say(1, json!({"type":"hello","v":1,"token":"not-a-token"}));
    assert_eq!(lab.last_error(1), "bad-token");
    lab.say(1, json!({"type":"hello","v":1}));
    assert_eq!(lab.take(1)[0]["type"], "welcome");
    lab.say(1, json!({"type":"hello","v":1}));
    assert_eq!(lab.last_error(1), "already-hello");
}

#[test]
fn bad_frames_get_error_frames_and_the_connection_lives() {
    let mut lab = Lab::new(Config::default());
    lab.hello(1);
    lab.input(Input::Text {
        conn: ConnId(1),
        text: "{nope",
    });
    assert_eq!(lab.last_error(1), "bad-json");
    lab.say(1, json!({"type":"teleport"}));
    assert_eq!(lab.last_error(1), "unknown-type");
    lab.input(Input::Binary { conn: ConnId(1) });
    assert_eq!(lab.last_error(1), "binary-unsupported");
    lab.say(1, json!({"type":"leave","room":"never"}));
    assert_eq!(lab.last_error(1), "not-in-room");
    assert!(lab.closed.is_empty());
    lab.say(1, json!({"type":"ping","data":{"t":1}}));
    assert_eq!(lab.take(1), vec![json!({"type":"pong","data":{"t":1}})]);
}

#[test]
fn too_many_errors_close_the_connection() {
    let mut lab = Lab::new(Config {
        max_errors: 5,
        ..Config::default()
    });
    lab.hello(1);
    for _ in 0..6 {
        lab.input(Input::Text {
            conn: ConnId(1),
            text: "x",
        });
    }
    assert_eq!(lab.closed.get(&ConnId(1)), Some(&close::PROTOCOL_ERRORS));
}

#[test]
fn oversize_frame_closes_with_1009() {
    let mut lab = Lab::new(Config::default());
    lab.hello(1);
    lab.input(Input::Oversize { conn: ConnId(1) });
    assert_eq!(lab.closed.get(&ConnId(1)), Some(&close::MESSAGE_TOO_BIG));
    assert_eq!(lab.s.stats().conns, 0);
}

#[test]
fn room_and_connection_limits() {
    let cfg = Config {
        max_peers_per_room: 2,
        max_rooms_per_conn: 2,
        max_rooms: 3,
        ..Config::default()
    };
    let mut lab = Lab::new(cfg);
    lab.hello(1);
    lab.hello(2);
    lab.hello(3);
    join(&mut lab, 1, "full");
    join(&mut lab, 2, "full");
    lab.say(3, json!({"type":"join","room":"full"}));
    assert_eq!(lab.last_error(3), "room-full");
    join(&mut lab, 1, "second");
    lab.say(1, json!({"type":"join","room":"third"}));
    assert_eq!(lab.last_error(1), "too-many-rooms");
    join(&mut lab, 3, "third");
    lab.say(3, json!({"type":"join","room":"fourth"}));
    assert_eq!(lab.last_error(3), "server-full");
    // Joining again is idempotent and does not count twice.
    let again = join(&mut lab, 1, "full");
    assert_eq!(again["type"], "joined");
    assert!(lab.take(2).iter().all(|f| f["type"] != "peer-joined"));
}

#[test]
fn connection_limits_total_and_per_ip() {
    let mut lab = Lab::new(Config {
        max_conns: 3,
        max_conns_per_ip: 2,
        ..Config::default()
    });
    lab.open_from(1, "10.0.0.1");
    lab.open_from(2, "10.0.0.1");
    lab.open_from(3, "10.0.0.1");
    assert_eq!(lab.closed.get(&ConnId(3)), Some(&close::SERVER_FULL));
    lab.open_from(4, "10.0.0.2");
    lab.open_from(5, "10.0.0.3");
    assert_eq!(lab.closed.get(&ConnId(5)), Some(&close::SERVER_FULL));
    // A slot frees when a connection goes.
    lab.input(Input::Closed {
        conn: ConnId(1),
        goodbye: false,
    });
    lab.open_from(6, "10.0.0.1");
    assert!(!lab.closed.contains_key(&ConnId(6)));
    assert_eq!(lab.s.stats().conns, 3);
}

#[test]
fn rate_limit_drops_then_closes_a_flood() {
    let cfg = Config {
        max_msgs_per_sec: 10,
        msg_burst: 5,
        max_dropped_in_a_row: 20,
        ..Config::default()
    };
    let mut lab = Lab::new(cfg);
    lab.hello(1); // one token spent
    for _ in 0..4 {
        lab.say(1, json!({"type":"ping"}));
    }
    assert_eq!(lab.take(1).len(), 4);
    lab.say(1, json!({"type":"ping"}));
    lab.say(1, json!({"type":"ping"}));
    // One error for the episode, not one per dropped frame.
    assert_eq!(
        lab.take(1),
        vec![
            json!({"type":"error","code":"rate-limited","message":"too many messages; frame dropped"})
        ]
    );
    // The bucket refills at the sustained rate.
    lab.advance(Duration::from_millis(100));
    lab.say(1, json!({"type":"ping"}));
    assert_eq!(lab.take(1), vec![json!({"type":"pong"})]);
    // A sustained flood is cut off.
    for _ in 0..30 {
        lab.say(1, json!({"type":"ping"}));
    }
    assert_eq!(lab.closed.get(&ConnId(1)), Some(&close::RATE_LIMITED));
}

#[test]
fn idle_connections_are_pinged_then_closed() {
    let mut lab = Lab::new(Config {
        idle_timeout: Duration::from_secs(10),
        ..Config::default()
    });
    lab.hello(1);
    lab.hello(2);
    lab.advance(Duration::from_secs(6));
    assert_eq!(lab.pings.len(), 2);
    lab.input(Input::Alive { conn: ConnId(2) });
    lab.advance(Duration::from_secs(5));
    assert_eq!(lab.closed.get(&ConnId(1)), Some(&close::IDLE_TIMEOUT));
    assert!(!lab.closed.contains_key(&ConnId(2)));
}

#[test]
fn silent_connections_must_say_hello_in_time() {
    let mut lab = Lab::new(Config::default());
    lab.open(1);
    lab.advance(Duration::from_secs(11));
    assert_eq!(lab.closed.get(&ConnId(1)), Some(&close::IDLE_TIMEOUT));
}

#[test]
fn resume_within_grace_keeps_rooms_and_others_see_nothing() {
    let mut lab = Lab::new(Config::default());
    let (a, token) = lab.hello(1);
    let (b, _) = lab.hello(2);
    join(&mut lab, 1, "r");
    join(&mut lab, 2, "r");
    lab.take(1);
    lab.input(Input::Closed {
        conn: ConnId(1),
        goodbye: false,
    });
    // While away, signals to it wait for it.
    lab.say(2, json!({"type":"signal","to":a,"data":{"while":"away"}}));
    assert!(lab.take(2).is_empty());
    lab.advance(Duration::from_secs(5));
    lab.open(3);
    lab.say(3, json!({"type":"hello","v":1,"token":token}));
    let frames = lab.take(3);
    let w = &frames[0];
    assert_eq!(
        (w["id"].as_str().unwrap(), &w["resumed"], &w["rooms"]),
        (a.as_str(), &json!(true), &json!(["r"]))
    );
    assert_eq!(frames[1]["data"], json!({"while":"away"}));
    // Re-joining is idempotent and silent for the others.
    assert_eq!(
        join(&mut lab, 3, "r"),
        json!({"type":"joined","room":"r","peers":[{"id":b}]})
    );
    lab.advance(Duration::from_secs(30));
    assert!(lab.take(2).is_empty(), "b saw a leave or join");
    lab.say(2, json!({"type":"signal","to":a,"data":{"x":1}}));
    assert_eq!(lab.take(3)[0]["from"], b);
}

#[test]
fn a_goodbye_close_leaves_at_once() {
    let mut lab = Lab::new(Config::default());
    let (a, _) = lab.hello(1);
    lab.hello(2);
    join(&mut lab, 1, "r");
    join(&mut lab, 1, "s");
    join(&mut lab, 2, "r");
    lab.take(1);
    lab.input(Input::Closed {
        conn: ConnId(1),
        goodbye: true,
    });
    assert_eq!(
        lab.take(2),
        vec![json!({"type":"peer-left","room":"r","id":a})]
    );
    assert_eq!(lab.s.stats().sessions, 1);
    assert_eq!(lab.s.stats().rooms, 1);
}

#[test]
fn away_sessions_leave_after_the_grace() {
    let mut lab = Lab::new(Config {
        resume_grace: Duration::from_secs(20),
        ..Config::default()
    });
    let (a, _) = lab.hello(1);
    lab.hello(2);
    join(&mut lab, 1, "r");
    join(&mut lab, 2, "r");
    lab.take(1);
    lab.input(Input::Closed {
        conn: ConnId(1),
        goodbye: false,
    });
    lab.advance(Duration::from_secs(19));
    assert!(lab.take(2).is_empty());
    lab.advance(Duration::from_secs(2));
    assert_eq!(
        lab.take(2),
        vec![json!({"type":"peer-left","room":"r","id":a})]
    );
    assert_eq!(lab.s.stats().sessions, 1);
}

#[test]
fn token_keeps_the_id_after_state_is_lost() {
    // What a server restart looks like to the core: a fresh instance.
    let mut lab = Lab::new(Config::default());
    let (a, token) = lab.hello(1);
    let mut fresh = Lab::new(Config::default());
    fresh.open(9);
    fresh.say(9, json!({"type":"hello","v":1,"token":token}));
    let w = fresh.take(9).pop().unwrap();
    assert_eq!(
        (w["id"].as_str().unwrap(), &w["resumed"]),
        (a.as_str(), &json!(false))
    );
}

#[test]
fn a_second_connection_with_the_token_replaces_the_first() {
    let mut lab = Lab::new(Config::default());
    let (a, token) = lab.hello(1);
    lab.hello(2);
    join(&mut lab, 1, "r");
    join(&mut lab, 2, "r");
    lab.open(3);
    lab.say(3, json!({"type":"hello","v":1,"token":token}));
    assert_eq!(lab.closed.get(&ConnId(1)), Some(&close::REPLACED));
    assert_eq!(lab.take(3)[0]["id"], a);
    lab.say(2, json!({"type":"signal","to":a,"data":{}}));
    assert_eq!(lab.take(3).len(), 1);
    // The replaced connection's late close does not make the session away.
    lab.input(Input::Closed {
        conn: ConnId(1),
        goodbye: false,
    });
    lab.advance(Duration::from_secs(60));
    lab.input(Input::Alive { conn: ConnId(2) });
    assert!(lab.take(2).iter().all(|f| f["type"] != "peer-left"));
}

#[test]
fn sessions_without_rooms_are_dropped_at_once() {
    let mut lab = Lab::new(Config::default());
    lab.hello(1);
    lab.input(Input::Closed {
        conn: ConnId(1),
        goodbye: false,
    });
    assert_eq!(
        lab.s.stats(),
        Stats {
            closes: 0,
            ..Stats::default()
        }
    );
}

#[test]
fn peer_ids_derive_from_tokens_only() {
    assert_eq!(peer_id_for("short"), None);
    assert_eq!(peer_id_for(&"A".repeat(43)).unwrap().len(), 16);
    assert_eq!(peer_id_for(&"A".repeat(43)), peer_id_for(&"A".repeat(43)));
    assert_ne!(peer_id_for(&"A".repeat(43)), peer_id_for(&"B".repeat(43)));
}

#[test]
fn an_access_token_allows_its_rooms_only_and_ends_with_4401() {
    let mut lab = Lab::new(Config::default());
    lab.open(1);
    let expires = lab.now + Duration::from_secs(60);
    lab.input(Input::Grant {
        conn: ConnId(1),
        room: "team-*",
        expires,
    });
    lab.say(1, json!({"type":"hello","v":1}));
    lab.take(1);
    assert_eq!(join(&mut lab, 1, "team-a")["type"], "joined");
    lab.say(1, json!({"type":"join","room":"lobby"}));
    assert_eq!(lab.last_error(1), "forbidden");
    assert!(grant_allows("*", "anything") && grant_allows("lobby", "lobby"));
    assert!(!grant_allows("lobby", "lobby2") && !grant_allows("team-*", "team"));
    // The connection lives until the token expires, however active, then is closed with
    // 4401 (the session waits out the grace for a reconnect with a fresh token).
    lab.advance(Duration::from_secs(59));
    lab.input(Input::Alive { conn: ConnId(1) });
    assert!(!lab.closed.contains_key(&ConnId(1)));
    lab.advance(Duration::from_secs(2));
    assert_eq!(lab.closed.get(&ConnId(1)), Some(&close::UNAUTHORIZED));
}

#[test]
fn a_session_resumed_under_a_narrower_token_leaves_the_rooms_it_no_longer_allows() {
    let mut lab = Lab::new(Config::default());
    let (a, token) = lab.hello(1);
    lab.hello(2);
    join(&mut lab, 1, "r1");
    join(&mut lab, 1, "r2");
    join(&mut lab, 2, "r2");
    lab.take(1);
    lab.take(2);
    lab.input(Input::Closed {
        conn: ConnId(1),
        goodbye: false,
    });
    lab.open(3);
    let expires = lab.now + Duration::from_secs(60);
    lab.input(Input::Grant {
        conn: ConnId(3),
        room: "r1",
        expires,
    });
    lab.say(3, json!({"type":"hello","v":1,"token":token}));
    let w = lab.take(3).pop().unwrap();
    assert_eq!((&w["resumed"], &w["rooms"]), (&json!(true), &json!(["r1"])));
    assert_eq!(
        lab.take(2),
        vec![json!({"type":"peer-left","room":"r2","id":a})]
    );
}

#[test]
fn random_operation_sequences_keep_invariants() {
    // A small deterministic fuzz of the state machine: random clients doing random things.
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let cfg = Config {
        max_peers_per_room: 4,
        max_rooms_per_conn: 3,
        max_conns_per_ip: 0,
        ..Config::default()
    };
    let mut lab = Lab::new(cfg);
    let rooms = ["a", "b", "c", "d"];
    let swarms = ["1".repeat(64), "2".repeat(64), "3".repeat(64)];
    let mut next = 1u64;
    let mut tokens = vec![];
    let mut ids = vec!["x".to_string()];
    for _ in 0..5000 {
        let c = rng.next_u64() % (next + 1);
        match rng.next_u32() % 13 {
            10 => {
                let w = &swarms[rng.next_u32() as usize % 3];
                let ty = ["swarm-join", "swarm-more", "swarm-seed", "swarm-leave"]
                    [rng.next_u32() as usize % 4];
                lab.say(
                    c,
                    json!({"type":ty,"swarm":w,"seed":rng.next_u32() % 4 == 0}),
                );
            }
            11 => {
                let w = &swarms[rng.next_u32() as usize % 3];
                let id = &ids[rng.next_u32() as usize % ids.len()];
                lab.say(c, json!({"type":"swarm-bad","swarm":w,"id":id}));
            }
            12 => lab.say(c, json!({"type":"swarm-join","swarm":"not-a-content-id"})),
            0 => {
                lab.open(next);
                // Some connections carry an access token for some rooms, some short-lived.
                if rng.next_u32() % 3 == 0 {
                    let expires =
                        lab.now + Duration::from_millis(u64::from(rng.next_u32() % 20_000));
                    lab.input(Input::Grant {
                        conn: ConnId(next),
                        room: ["a", "b*", "*", "c", "swarm:*"][rng.next_u32() as usize % 5],
                        expires,
                    });
                }
                next += 1;
            }
            1 => {
                let token = tokens
                    .get((rng.next_u32() as usize) % (tokens.len() + 1))
                    .cloned();
                let mut m = json!({"type":"hello","v":1});
                if let Some(t) = token {
                    m["token"] = json!(t);
                }
                lab.say(c, m);
                for f in lab.take(c) {
                    if f["type"] == "welcome" {
                        tokens.push(f["token"].as_str().unwrap().to_string());
                        ids.push(f["id"].as_str().unwrap().to_string());
                    }
                }
            }
            2 | 3 => lab.say(
                c,
                json!({"type":"join","room":rooms[rng.next_u32() as usize % 4]}),
            ),
            4 => lab.say(
                c,
                json!({"type":"leave","room":rooms[rng.next_u32() as usize % 4]}),
            ),
            5 => {
                let to = &ids[rng.next_u32() as usize % ids.len()];
                lab.say(c, json!({"type":"signal","to":to,"data":{}}));
            }
            6 => lab.input(Input::Closed {
                conn: ConnId(c),
                goodbye: rng.next_u32() % 2 == 0,
            }),
            7 => lab.advance(Duration::from_millis(u64::from(rng.next_u32() % 5000))),
            8 => {
                let ok = rng.next_u32() % 2 == 0;
                let path = ["host", "srflx", "prflx", "relay"][rng.next_u32() as usize % 4];
                let what = ["connect", "restart"][rng.next_u32() as usize % 2];
                let client = ["firefox", "lynx"][rng.next_u32() as usize % 2];
                let ms = rng.next_u32() % 700_000;
                let mut m = json!({"type":"report","what":what,"ok":ok,"ms":ms,"client":client});
                if ok {
                    m["path"] = json!(path);
                }
                lab.say(c, m);
            }
            _ => lab.input(Input::Text {
                conn: ConnId(c),
                text: "]",
            }),
        }
        check_invariants(&lab.s, &lab.bus);
    }
}

#[test]
fn reports_are_counted_by_client_outcome_and_path() {
    let mut lab = Lab::new(Config::default());
    lab.hello(1);
    for m in [
        json!({"type":"report","what":"connect","ok":true,"ms":40,"path":"host","client":"firefox"}),
        json!({"type":"report","what":"connect","ok":true,"ms":900,"path":"relay","relay":"tcp","client":"native"}),
        json!({"type":"report","what":"connect","ok":true,"ms":31000,"path":"relay","client":"chromium"}),
        json!({"type":"report","what":"connect","ok":false,"ms":30000,"client":"chromium"}),
        json!({"type":"report","what":"restart","ok":true,"ms":2000,"path":"srflx","client":"toaster"}),
        json!({"type":"report","what":"restart","ok":false,"ms":60000,"client":"native"}),
    ] {
        lab.say(1, m);
    }
    assert_eq!(lab.take(1), Vec::<Value>::new(), "reports get no answer");
    let c = lab.s.stats().connectivity;
    let at = |client: ClientKind, o: Outcome| (client.index(), o.index());
    let mut want = [[0u64; OUTCOMES]; ClientKind::COUNT];
    for (client, o) in [
        (ClientKind::Firefox, Outcome::Direct(PathKind::Host)),
        (ClientKind::Native, Outcome::Relayed(RelayTransport::Tcp)),
        (
            ClientKind::Chromium,
            Outcome::Relayed(RelayTransport::Unknown),
        ),
        (ClientKind::Chromium, Outcome::Failed),
    ] {
        let (i, j) = at(client, o);
        want[i][j] += 1;
    }
    assert_eq!(c.connects, want);
    let mut want = [[0u64; OUTCOMES]; ClientKind::COUNT];
    want[ClientKind::Other.index()][Outcome::Direct(PathKind::Srflx).index()] = 1;
    want[ClientKind::Native.index()][Outcome::Failed.index()] = 1;
    assert_eq!(c.restarts, want);
    // Time to connect, by path: 40 ms in the ≤50 bucket; 900 in ≤1000; 31 s above them all.
    let host = c.connect_ms[PathKind::Host.index()];
    assert_eq!((host.buckets[0], host.count, host.sum_ms), (1, 1, 40));
    let relay = c.connect_ms[PathKind::Relay.index()];
    assert_eq!((relay.buckets[4], relay.buckets[9], relay.count), (1, 1, 2));
    assert_eq!((c.dropped_flood, c.dropped_malformed), (0, 0));
}

#[test]
fn malformed_or_flooding_reports_are_dropped_and_the_connection_stays() {
    let cfg = Config {
        report_burst: 10,
        max_reports_per_min: 60,
        ..Config::default()
    };
    let mut lab = Lab::new(cfg);
    lab.hello(1);
    // Malformed: an error frame each, nothing counted but the refusal.
    for bad in [
        json!({"type":"report","what":"connect","ok":true,"ms":5,"path":"wormhole"}),
        json!({"type":"report","what":"connect","ok":true,"ms":5,"path":"relay","relay":"x".repeat(100_000)}),
        json!({"type":"report","what":"connect","ok":false,"ms":5,"pad":"x".repeat(600)}),
        json!({"type":"report","what":"connect","ok":false,"ms":u64::MAX}),
    ] {
        lab.say(1, bad);
        let e = lab.take(1);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0]["code"], "bad-message", "{e:?}");
    }
    assert_eq!(lab.s.stats().connectivity.dropped_malformed, 4);
    assert_eq!(
        lab.s.stats().connectivity,
        Connectivity {
            dropped_malformed: 4,
            ..Default::default()
        }
    );
    // A flood: the burst is counted, the rest dropped with one error frame.
    let ok = json!({"type":"report","what":"connect","ok":true,"ms":5,"path":"host"});
    for _ in 0..50 {
        lab.say(1, ok.clone());
    }
    let errors = lab.take(1);
    assert_eq!(errors.len(), 1, "told once per run: {errors:?}");
    assert_eq!(errors[0]["code"], "rate-limited");
    let c = lab.s.stats().connectivity;
    let counted: u64 = c.connects.iter().flatten().sum();
    assert_eq!((counted, c.dropped_flood), (10, 40));
    // The connection is kept and works; the allowance refills at 60 a minute.
    lab.say(1, json!({"type":"ping"}));
    assert_eq!(lab.take(1)[0]["type"], "pong");
    assert!(!lab.closed.contains_key(&ConnId(1)));
    lab.advance(Duration::from_secs(3));
    for _ in 0..3 {
        lab.say(1, ok.clone());
    }
    assert_eq!(lab.take(1), Vec::<Value>::new());
    let counted: u64 = lab.s.stats().connectivity.connects.iter().flatten().sum();
    assert_eq!(counted, 13);
    // Before hello a report is like anything else: hello-required.
    lab.open(2);
    lab.say(2, ok);
    assert_eq!(lab.take(2)[0]["code"], "hello-required");
}

fn check_invariants(s: &Signal, bus: &bus::Model) {
    for (name, view) in &s.rooms {
        assert!(
            !view.local.is_empty(),
            "view of {name} without local members kept"
        );
        assert!(view.members.len() <= s.cfg.max_peers_per_room);
        // The bus is run at once here, so every view is up to date with it.
        let ids: Vec<&str> = view.members.iter().map(|(p, _)| p.as_str()).collect();
        let truth = bus.members(name);
        let want: Vec<&str> = truth.members.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(ids, want, "view of {name}");
        assert_eq!(view.at, truth.at, "view of {name}");
        for id in view.local.keys() {
            let sess = &s.sessions[id];
            assert!(sess.conn.is_some(), "{id} away but local in {name}");
            assert!(
                sess.rooms.contains(name),
                "{id} local in {name} but not in its session"
            );
        }
    }
    for (id, sess) in &s.sessions {
        assert!(sess.rooms.len() <= s.cfg.max_rooms_per_conn);
        assert_eq!(sess.conn.is_none(), sess.away_since.is_some(), "{id}");
        if let Some(c) = sess.conn {
            assert_eq!(s.conns[&c].session.as_deref(), Some(id.as_str()));
            // A connection with an access token is only in rooms it allows.
            if let Some((pattern, _)) = &s.conns[&c].grant {
                for r in &sess.rooms {
                    assert!(grant_allows(pattern, r), "{id} in {r} under {pattern}");
                }
            }
            for r in &sess.rooms {
                assert!(s.rooms[r].local.contains_key(id), "{id} in {r}: no view");
            }
            assert_eq!(
                bus.session(id).map(|(_, e)| e),
                Some(sess.epoch),
                "{id}'s epoch"
            );
        } else {
            assert!(sess.rooms.is_empty(), "{id} away with rooms held here");
        }
    }
    let total: usize = s.per_ip.values().sum();
    assert_eq!(total, s.conns.len());
    for (id, sess) in &s.sessions {
        assert!(sess.swarms.len() <= s.cfg.max_swarms_per_conn);
        for w in &sess.swarms {
            assert!(
                s.swarms.contains(w, id),
                "{id} lists swarm {w} it is not in"
            );
            if let Some((pattern, _)) = sess.conn.and_then(|c| s.conns[&c].grant.as_ref()) {
                assert!(grant_allows(pattern, &format!("swarm:{w}")));
            }
        }
    }
    assert_eq!(
        s.swarms.members(),
        s.sessions.values().map(|x| x.swarms.len()).sum::<usize>(),
        "every swarm member is a session that lists it"
    );
    s.swarms.check(&s.cfg.swarm_limits());
}
