//! Swarms in virtual time: introductions, no broadcast, seeds first, limits, resume.

use super::*;

fn swarm_id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// `c` joins swarm `w`; returns the neighbours it was given (id, seed).
fn swarm_join(lab: &mut Lab, c: u64, w: &str, seed: bool) -> Vec<(String, bool)> {
    lab.say(c, json!({"type":"swarm-join","swarm":w,"seed":seed}));
    let f = lab.take(c).pop().unwrap();
    assert_eq!(f["type"], "swarm-joined", "{f}");
    neighbours(&f)
}

fn neighbours(f: &Value) -> Vec<(String, bool)> {
    f["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().into(),
                p["seed"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn joiners_are_introduced_to_a_few_neighbours_and_nobody_else_hears() {
    let mut lab = Lab::new(Config::default());
    let w = swarm_id(1);
    let (a, _) = lab.hello(1);
    assert!(swarm_join(&mut lab, 1, &w, true).is_empty(), "alone");
    let (b, _) = lab.hello(2);
    assert_eq!(swarm_join(&mut lab, 2, &w, false), vec![(a.clone(), true)]);
    // The seed is told who was introduced to it, and expects the joiner's offer.
    let f = lab.take(1).pop().unwrap();
    assert_eq!(
        f,
        json!({"type":"swarm-peer","swarm":w,"peer":{"id":b,"seed":false}})
    );
    // Neighbours signal each other; a member that was not introduced cannot.
    lab.say(2, json!({"type":"signal","to":a,"data":{"x":1}}));
    assert_eq!(lab.take(1).pop().unwrap()["from"], b);
    for c in 3..=40 {
        for d in 1..c {
            lab.take(d);
        }
        lab.hello(c);
        let got = swarm_join(&mut lab, c, &w, false);
        assert!(got.len() <= 10, "at most ten at once");
        assert!(!got.is_empty());
        assert!(
            got.iter().any(|(id, seed)| *id == a && *seed) || c > 30,
            "the seed first while it has room"
        );
    }
    // Peer 40's neighbours heard of it; everyone else heard nothing at all.
    let heard: Vec<u64> = (1..40).filter(|c| !lab.take(*c).is_empty()).collect();
    assert!(heard.len() <= 10, "{heard:?}");
    let stranger = (3..40)
        .map(|c| lab.s.conns[&ConnId(c)].session.clone().unwrap())
        .find(|id| !lab.s.swarms.linked(&w, &b, id))
        .unwrap();
    lab.say(2, json!({"type":"signal","to":stranger,"data":{}}));
    assert_eq!(lab.last_error(2), "unknown-peer");
    // The seed is never linked to more than the limit.
    lab.s.swarms.check(&lab.s.cfg.swarm_limits());
    assert!(lab.s.stats().swarm_introductions >= 40);
}

#[test]
fn more_neighbours_on_request_at_a_limited_rate() {
    let mut lab = Lab::new(Config::default());
    let w = swarm_id(2);
    for c in 1..=60 {
        lab.hello(c);
        swarm_join(&mut lab, c, &w, false);
    }
    for c in 1..=60 {
        lab.take(c);
    }
    let mut total = swarm_join(&mut lab, 1, &w, false).len();
    for i in 0..3 {
        lab.say(1, json!({"type":"swarm-more","swarm":w}));
        let f = lab.take(1).pop().unwrap();
        assert_eq!(f["type"], "swarm-peers", "{f}");
        assert!(f.get("retry_ms").is_none(), "burst {i}");
        total += neighbours(&f).len();
    }
    lab.say(1, json!({"type":"swarm-more","swarm":w}));
    let f = lab.take(1).pop().unwrap();
    assert_eq!(f["peers"], json!([]));
    let retry = f["retry_ms"].as_u64().unwrap();
    assert!(retry > 0 && retry <= 2000, "{retry}");
    lab.advance(Duration::from_millis(retry));
    lab.say(1, json!({"type":"swarm-more","swarm":w}));
    let f = lab.take(1).pop().unwrap();
    assert!(f.get("retry_ms").is_none(), "{f}");
    total += neighbours(&f).len();
    assert!(total <= 40, "never more links than the limit: {total}");
    // Re-joining (as a resumed client does) lists every neighbour, telling no one.
    for c in 2..=60 {
        lab.take(c);
    }
    assert_eq!(swarm_join(&mut lab, 1, &w, false).len(), total);
    assert!((2..=60).all(|c| lab.take(c).is_empty()));
}

#[test]
fn leaving_tells_only_the_neighbours_and_an_empty_swarm_is_forgotten() {
    let mut lab = Lab::new(Config::default());
    let w = swarm_id(3);
    let (a, _) = lab.hello(1);
    swarm_join(&mut lab, 1, &w, false);
    for c in 2..=20 {
        lab.hello(c);
        swarm_join(&mut lab, c, &w, false);
    }
    for c in 1..=20 {
        lab.take(c);
    }
    let linked: Vec<u64> = (2..=20)
        .filter(|c| {
            let id = lab.s.conns[&ConnId(*c)].session.clone().unwrap();
            lab.s.swarms.linked(&w, &a, &id)
        })
        .collect();
    lab.say(1, json!({"type":"swarm-leave","swarm":w}));
    assert_eq!(
        lab.take(1).pop().unwrap(),
        json!({"type":"swarm-left","swarm":w})
    );
    for c in 2..=20 {
        let got = lab.take(c);
        if linked.contains(&c) {
            assert_eq!(
                got,
                vec![json!({"type":"swarm-peer-left","swarm":w,"id":a})]
            );
        } else {
            assert!(got.is_empty());
        }
    }
    lab.say(1, json!({"type":"swarm-leave","swarm":w}));
    assert_eq!(lab.last_error(1), "not-in-swarm");
    lab.say(1, json!({"type":"swarm-more","swarm":w}));
    assert_eq!(lab.last_error(1), "not-in-swarm");
    for c in 2..=20 {
        lab.input(Input::Closed {
            conn: ConnId(c),
            goodbye: true,
        });
    }
    assert_eq!(lab.s.stats().swarms, 0);
    assert_eq!(
        lab.s.stats().sessions,
        1,
        "only the one in no swarm but connected"
    );
}

#[test]
fn a_peer_reported_bad_is_cut_off_from_its_reporter_and_never_introduced_again() {
    let cfg = Config {
        swarm_more_burst: 100,
        ..Config::default()
    };
    let mut lab = Lab::new(cfg);
    let w = swarm_id(4);
    let (bad, _) = lab.hello(1);
    swarm_join(&mut lab, 1, &w, true);
    let (a, _) = lab.hello(2);
    assert_eq!(swarm_join(&mut lab, 2, &w, false)[0].0, bad);
    lab.take(1);
    lab.say(2, json!({"type":"swarm-bad","swarm":w,"id":bad}));
    assert!(lab.take(2).is_empty(), "no answer");
    assert_eq!(
        lab.take(1),
        vec![json!({"type":"swarm-peer-left","swarm":w,"id":a})]
    );
    assert_eq!(lab.s.stats().swarm_bad_reports, 1);
    lab.say(2, json!({"type":"signal","to":bad,"data":{}}));
    assert_eq!(lab.last_error(2), "unknown-peer");
    // Asking for more never brings it back (it is the only other member).
    for _ in 0..5 {
        lab.say(2, json!({"type":"swarm-more","swarm":w}));
        assert_eq!(lab.take(2).pop().unwrap()["peers"], json!([]));
    }
    // Reporting a peer that is no neighbour counts nothing.
    lab.say(2, json!({"type":"swarm-bad","swarm":w,"id":bad}));
    assert_eq!(lab.last_error(2), "unknown-peer");
    assert_eq!(lab.s.stats().swarm_bad_reports, 1);
}

#[test]
fn reported_bytes_add_up_per_swarm_and_the_largest_swarms_are_described() {
    let mut lab = Lab::new(Config::default());
    let (small, big) = (swarm_id(5), swarm_id(6));
    lab.hello(1);
    swarm_join(&mut lab, 1, &small, false);
    for c in 2..=4 {
        lab.hello(c);
        swarm_join(&mut lab, c, &big, c == 2);
    }
    for c in 1..=4 {
        lab.take(c);
    }
    lab.say(
        1,
        json!({"type":"swarm-bytes","swarm":small,"http":100,"p2p":0,"up":0}),
    );
    lab.say(
        3,
        json!({"type":"swarm-bytes","swarm":big,"http":10,"p2p":90,"up":5}),
    );
    lab.say(
        4,
        json!({"type":"swarm-bytes","swarm":big,"http":0,"p2p":100,"up":95}),
    );
    lab.say(
        4,
        json!({"type":"swarm-bytes","swarm":big,"http":0,"p2p":0,"up":1}),
    );
    for c in 1..=4 {
        assert!(lab.take(c).is_empty(), "no answer, nobody told");
    }
    let st = lab.s.stats();
    assert_eq!(
        st.swarm_bytes,
        SwarmBytes {
            http: 110,
            p2p: 190,
            up: 101
        }
    );
    let top: Vec<_> = st.top_swarms.iter().flatten().collect();
    assert_eq!(top.len(), 2);
    assert_eq!((top[0].id(), top[0].members, top[0].seeds), (&*big, 3, 1));
    assert_eq!(top[0].bytes.p2p, 190);
    assert_eq!((top[1].id(), top[1].members), (&*small, 1));
    // Bytes for a swarm one is not in are refused, and counted nowhere.
    lab.say(
        1,
        json!({"type":"swarm-bytes","swarm":big,"http":1,"p2p":1,"up":1}),
    );
    assert_eq!(lab.last_error(1), "not-in-swarm");
    lab.say(
        1,
        json!({"type":"swarm-bytes","swarm":small,"http":-1,"p2p":1,"up":1}),
    );
    assert_eq!(lab.last_error(1), "bad-message");
    assert_eq!(lab.s.stats().swarm_bytes.http, 110);
    // A swarm's own count goes with it; the server's total stays.
    lab.say(1, json!({"type":"swarm-leave","swarm":small}));
    let st = lab.s.stats();
    assert_eq!(st.top_swarms.iter().flatten().count(), 1);
    assert_eq!(st.swarm_bytes.http, 110);
}

#[test]
fn the_largest_swarms_are_kept_in_order_among_many() {
    let mut lab = Lab::new(Config::default());
    // Swarm n gets n members: 1..=14 members in 14 swarms.
    let mut c = 0;
    for n in 1..=14u8 {
        for _ in 0..n {
            c += 1;
            lab.hello(c);
            swarm_join(&mut lab, c, &swarm_id(n), false);
        }
    }
    let top = lab.s.stats().top_swarms;
    let sizes: Vec<u32> = top.iter().flatten().map(|t| t.members).collect();
    assert_eq!(sizes, (5..=14).rev().collect::<Vec<u32>>());
    assert!(
        top.iter()
            .flatten()
            .all(|t| t.id() == swarm_id(t.members as u8))
    );
}

#[test]
fn a_resumed_session_keeps_its_swarms_and_one_that_does_not_return_leaves_them() {
    let mut lab = Lab::new(Config::default());
    let w = swarm_id(5);
    let (a, token) = lab.hello(1);
    swarm_join(&mut lab, 1, &w, false);
    let (b, _) = lab.hello(2);
    swarm_join(&mut lab, 2, &w, false);
    lab.take(1);
    lab.input(Input::Closed {
        conn: ConnId(1),
        goodbye: false,
    });
    lab.advance(Duration::from_secs(5));
    assert!(lab.take(2).is_empty(), "held: nobody sees it leave");
    lab.open(3);
    lab.say(3, json!({"type":"hello","v":1,"token":token}));
    assert_eq!(lab.take(3).pop().unwrap()["resumed"], true);
    assert_eq!(swarm_join(&mut lab, 3, &w, false), vec![(b.clone(), false)]);
    assert!(lab.take(2).is_empty());
    // Gone for good: its neighbour hears once the grace is over.
    lab.input(Input::Closed {
        conn: ConnId(3),
        goodbye: false,
    });
    lab.advance(Duration::from_secs(21));
    assert_eq!(
        lab.take(2),
        vec![json!({"type":"swarm-peer-left","swarm":w,"id":a})]
    );
    assert_eq!(lab.s.stats().swarm_members, 1);
}

#[test]
fn swarm_limits_and_bad_requests_get_their_errors() {
    let cfg = Config {
        max_swarms_per_conn: 2,
        max_peers_per_swarm: 2,
        max_swarms: 3,
        ..Config::default()
    };
    let mut lab = Lab::new(cfg);
    lab.hello(1);
    swarm_join(&mut lab, 1, &swarm_id(1), false);
    swarm_join(&mut lab, 1, &swarm_id(2), false);
    lab.say(1, json!({"type":"swarm-join","swarm":swarm_id(3)}));
    assert_eq!(lab.last_error(1), "too-many-swarms");
    lab.hello(2);
    swarm_join(&mut lab, 2, &swarm_id(1), false);
    lab.hello(3);
    lab.say(3, json!({"type":"swarm-join","swarm":swarm_id(1)}));
    assert_eq!(lab.last_error(3), "swarm-full");
    swarm_join(&mut lab, 3, &swarm_id(3), false);
    lab.say(3, json!({"type":"swarm-join","swarm":swarm_id(4)}));
    assert_eq!(lab.last_error(3), "server-full");
    lab.say(3, json!({"type":"swarm-join","swarm":"ABC"}));
    assert_eq!(lab.last_error(3), "invalid-swarm");
    lab.say(3, json!({"type":"swarm-seed","swarm":swarm_id(9)}));
    assert_eq!(lab.last_error(3), "not-in-swarm");
    // A connection whose access token names rooms only may not enter swarms.
    lab.open(4);
    lab.input(Input::Grant {
        conn: ConnId(4),
        room: "lobby",
        expires: lab.now + Duration::from_secs(60),
    });
    lab.say(4, json!({"type":"hello","v":1}));
    lab.take(4);
    lab.say(4, json!({"type":"swarm-join","swarm":swarm_id(1)}));
    assert_eq!(lab.last_error(4), "forbidden");
}

#[test]
fn a_swarm_of_ten_thousand_costs_each_join_a_few_frames() {
    let mut lab = Lab::new(Config {
        max_conns_per_ip: 0,
        ..Config::default()
    });
    let w = swarm_id(6);
    for c in 1..=10_000 {
        lab.hello(c);
        lab.say(c, json!({"type":"swarm-join","swarm":w,"seed":c <= 3}));
    }
    // Frames sent for the last join: its answer and one per neighbour, nothing else.
    let before = lab.inbox.values().map(Vec::len).sum::<usize>();
    lab.hello(10_001);
    let got = swarm_join(&mut lab, 10_001, &w, false);
    let after = lab.inbox.values().map(Vec::len).sum::<usize>();
    assert_eq!(got.len(), 10);
    assert_eq!(
        after - before,
        10,
        "one swarm-peer per neighbour (the answer was taken)"
    );
    let stats = lab.s.stats();
    assert_eq!(stats.swarm_members, 10_001);
    assert!(stats.swarm_introductions <= 10 * 10_001);
    lab.s.swarms.check(&lab.s.cfg.swarm_limits());
}
