//! The gate and watchers together, in virtual time: pairing, later visits, wrong codes, men
//! in the middle, revocation, timeouts, and random sequences of all of them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use peerweb_transfer::code::{Code, SECRET_BYTES};
use peerweb_transfer::{Secret, sas};

use crate::gate::{Gate, HANDSHAKE_TIMEOUT, MAX_PAIRING_FAILURES, Out};
use crate::store::{CameraFile, ViewerRecord, new_id, parse_key, whep_token};
use crate::watch::{Credential, Step, Watcher};
use crate::wire::{Msg, Status, Visit};

const CAM_FP: &str = "sha-256 CA:FE";
const MITM_FP: &str = "sha-256 BA:D0";

fn viewer_fp(i: usize) -> String {
    format!("sha-256 {i:02X}:01")
}

/// A camera and the viewers that visit it, wired through in memory.
struct Lab {
    now: Instant,
    gate: Gate,
    /// What the gate did, in order.
    outs: Vec<Out>,
    /// Viewers by peer id, with what they got.
    watchers: HashMap<String, Watcher>,
    steps: HashMap<String, Vec<Step>>,
    /// Peers the gate lets media go to now.
    allowed: HashSet<String>,
    /// The fingerprints the camera sees for a peer (a man in the middle changes them).
    camera_sees: HashMap<String, String>,
    code: Option<(Code, [u8; SECRET_BYTES])>,
    /// App signals the gate sent to WHEP bridges.
    signals: HashMap<String, Vec<Msg>>,
}

impl Lab {
    fn new(viewers: Vec<ViewerRecord>) -> Lab {
        let file = CameraFile {
            id: new_id([9; 10]),
            name: "porch".into(),
            viewers,
        };
        Lab {
            now: Instant::now(),
            gate: Gate::new(&file, [4; 32]),
            outs: Vec::new(),
            watchers: HashMap::new(),
            steps: HashMap::new(),
            allowed: HashSet::new(),
            camera_sees: HashMap::new(),
            code: None,
            signals: HashMap::new(),
        }
    }

    /// Delivers everything queued, both ways, until quiet.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let Some(o) = self.gate.poll() else { return };
            match &o {
                Out::Send { peer, data } => {
                    if let Some(w) = self.watchers.get_mut(peer) {
                        let step = w.message(data);
                        self.viewer_step(peer.clone(), step);
                    }
                }
                Out::Allow { peer } => {
                    self.allowed.insert(peer.clone());
                }
                Out::Cut { peer } => {
                    self.allowed.remove(peer);
                }
                Out::Signal { peer, data } => {
                    let m = Msg::decode(data).expect("the gate's signals decode");
                    self.signals.entry(peer.clone()).or_default().push(m);
                }
                Out::Code { code, secret, .. } => self.code = Some((*code, *secret)),
                Out::PairingClosed { .. } => self.code = None,
                _ => {}
            }
            self.outs.push(o);
        }
        panic!("the gate and viewers never went quiet");
    }

    fn viewer_step(&mut self, peer: String, step: Step) {
        if let Step::Send(msgs) = &step {
            for m in msgs {
                self.gate.message(&peer, m);
            }
        }
        self.steps.entry(peer).or_default().push(step);
    }

    /// A viewer connects as `peer` with `cred`; `mitm`: the camera sees another fingerprint.
    fn visit(&mut self, peer: &str, i: usize, cred: Credential, mitm: bool) {
        let fp = viewer_fp(i);
        let seen = if mitm { MITM_FP.to_owned() } else { fp.clone() };
        self.camera_sees.insert(peer.into(), seen.clone());
        self.gate.peer_open(self.now, peer, CAM_FP, &seen);
        let mut w = Watcher::new(cred, &format!("viewer {i}"));
        let step = w.open(&fp, if mitm { MITM_FP } else { CAM_FP });
        self.watchers.insert(peer.into(), w);
        self.viewer_step(peer.into(), step);
        self.settle();
    }

    /// A WHEP bridge presents `token` for `peer`, and its player's connection comes up;
    /// whether the camera welcomed it.
    fn whep(&mut self, peer: &str, token: &str) -> bool {
        let msg = format!(r#"{{"t":"whep","v":1,"token":"{token}"}}"#);
        self.gate.app_signal(self.now, peer, msg.as_bytes());
        self.settle();
        let welcomed = self.signals.get(peer).is_some_and(|s| {
            s.iter()
                .any(|m| matches!(m, Msg::Camera(Visit::Welcome { key: None, .. })))
        });
        if welcomed {
            self.gate.peer_connected(peer);
            self.settle();
        }
        welcomed
    }

    fn leave(&mut self, peer: &str) {
        self.watchers.remove(peer);
        self.allowed.remove(peer);
        self.gate.peer_left(peer);
        self.settle();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.gate.handle_timeout(self.now);
        self.settle();
    }

    fn welcome(&self, peer: &str) -> Option<&Step> {
        self.steps
            .get(peer)?
            .iter()
            .find(|s| matches!(s, Step::Welcome { .. }))
    }

    fn refused(&self, peer: &str) -> bool {
        self.steps
            .get(peer)
            .is_some_and(|s| s.iter().any(|s| matches!(s, Step::Refused(_))))
    }

    fn paired(&self) -> Vec<ViewerRecord> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Out::Paired(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn current_code(&self) -> Code {
        self.code.expect("pairing is open").0
    }
}

/// The key credential a welcome gave.
fn key_of(step: &Step) -> Credential {
    let Step::Welcome {
        viewer,
        key: Some(key),
        ..
    } = step
    else {
        panic!("no key in {step:?}");
    };
    Credential::Key {
        viewer: viewer.clone(),
        key: *key,
    }
}

#[test]
fn a_viewer_pairs_by_code_then_comes_back_with_its_key() {
    let mut lab = Lab::new(Vec::new());
    lab.gate.open_pairing(lab.now, Duration::from_secs(600));
    lab.settle();
    let code = lab.current_code();
    lab.visit("p1", 1, Credential::Pair(Secret::Code(code)), false);
    let w = lab.welcome("p1").cloned().expect("welcomed");
    let Step::Welcome {
        camera,
        name,
        sas: s,
        ..
    } = &w
    else {
        unreachable!()
    };
    assert_eq!(
        (camera.as_str(), name.as_str()),
        (new_id([9; 10]).as_str(), "porch")
    );
    assert_eq!(s, &sas(CAM_FP, &viewer_fp(1)), "both sides' SAS");
    assert!(lab.allowed.is_empty(), "a pairing connection gets no media");
    let paired = lab.paired();
    assert_eq!(paired.len(), 1);
    assert_eq!(paired[0].name, "viewer 1");
    assert_ne!(lab.current_code(), code, "a used code is not shown again");
    // Then, on a new connection (new fingerprints), with the key and no code.
    lab.leave("p1");
    lab.gate.set_viewers(paired.clone());
    lab.visit("p2", 2, key_of(&w), false);
    let again = lab.welcome("p2").expect("welcomed again");
    assert!(matches!(again, Step::Welcome { key: None, .. }));
    assert!(lab.allowed.contains("p2"));
    // Status to the watcher: one viewer.
    assert!(
        lab.steps["p2"]
            .iter()
            .any(|s| matches!(s, Step::Status(Status { viewers: 1, .. })))
    );
    assert_eq!(lab.paired().len(), 1, "a key visit pairs nobody new");
    // Revoked: cut off at once, and refused next time.
    lab.gate.set_viewers(Vec::new());
    lab.settle();
    assert!(!lab.allowed.contains("p2") && lab.refused("p2"));
    lab.visit("p3", 3, key_of(&w), false);
    assert!(lab.refused("p3") && !lab.allowed.contains("p3"));
}

#[test]
fn a_key_link_and_a_pairing_link_work_and_a_key_cannot_be_borrowed() {
    let mut lab = Lab::new(Vec::new());
    lab.gate.open_pairing(lab.now, Duration::from_secs(600));
    lab.settle();
    let secret = lab.code.unwrap().1;
    lab.visit("p1", 1, Credential::Pair(Secret::Link(secret)), false);
    let w = lab.welcome("p1").cloned().expect("paired by link");
    lab.gate.set_viewers(lab.paired());
    // Someone with the viewer id but another key.
    let Credential::Key { viewer, .. } = key_of(&w) else {
        unreachable!()
    };
    lab.visit(
        "p2",
        2,
        Credential::Key {
            viewer,
            key: [0; SECRET_BYTES],
        },
        false,
    );
    assert!(lab.refused("p2") && !lab.allowed.contains("p2"));
}

#[test]
fn wrong_codes_burn_the_code_and_close_pairing_after_three() {
    let mut lab = Lab::new(Vec::new());
    lab.gate.open_pairing(lab.now, Duration::from_secs(600));
    lab.settle();
    let mut seen = vec![lab.current_code()];
    for i in 0..MAX_PAIRING_FAILURES as usize {
        let right = lab.current_code();
        let wrong = Code {
            words: [right.words[0].wrapping_add(1), right.words[1]],
            ..right
        };
        let peer = format!("g{i}");
        lab.visit(&peer, i, Credential::Pair(Secret::Code(wrong)), false);
        assert!(lab.refused(&peer), "guess {i} refused");
        assert!(lab.allowed.is_empty());
        if let Some((c, _)) = lab.code {
            assert!(!seen.contains(&c), "a burned code comes back");
            seen.push(c);
        }
    }
    assert!(!lab.gate.pairing(), "pairing still open after failures");
    assert!(
        lab.outs
            .iter()
            .any(|o| matches!(o, Out::PairingClosed { .. }))
    );
    // The last right code no longer works either.
    let last = *seen.last().unwrap();
    lab.visit("late", 9, Credential::Pair(Secret::Code(last)), false);
    assert!(lab.refused("late") && lab.paired().is_empty());
}

#[test]
fn a_man_in_the_middle_is_refused_on_both_sides() {
    let mut lab = Lab::new(Vec::new());
    lab.gate.open_pairing(lab.now, Duration::from_secs(600));
    lab.settle();
    let code = lab.current_code();
    lab.visit("m", 1, Credential::Pair(Secret::Code(code)), true);
    assert!(lab.welcome("m").is_none() && lab.refused("m"));
    assert!(lab.allowed.is_empty() && lab.paired().is_empty());
    assert!(
        lab.outs
            .iter()
            .any(|o| matches!(o, Out::Refused { why, .. } if why.contains("man in the middle")))
    );
}

#[test]
fn strangers_silence_and_closed_pairing_get_nothing() {
    let mut lab = Lab::new(Vec::new());
    // Not pairing: a code is refused.
    let code = Code::parse("7-crimson-otter").unwrap();
    lab.visit("a", 1, Credential::Pair(Secret::Code(code)), false);
    assert!(lab.refused("a"));
    // A viewer id the camera never gave.
    lab.visit(
        "b",
        2,
        Credential::Key {
            viewer: "nobody".into(),
            key: [1; SECRET_BYTES],
        },
        false,
    );
    assert!(lab.refused("b"));
    // Garbage and silence.
    lab.gate.peer_open(lab.now, "c", CAM_FP, "sha-256 00");
    lab.gate.message("c", b"\xff\xfe");
    lab.gate.peer_open(lab.now, "d", CAM_FP, "sha-256 01");
    lab.settle();
    assert_eq!(lab.gate.next_timeout(), Some(lab.now + HANDSHAKE_TIMEOUT));
    lab.advance(HANDSHAKE_TIMEOUT);
    assert!(lab.outs.iter().any(
        |o| matches!(o, Out::Refused { peer, why } if peer == "c" && why.contains("malformed"))
    ));
    assert!(lab.outs.iter().any(
        |o| matches!(o, Out::Refused { peer, why } if peer == "d" && why.contains("too long"))
    ));
    assert!(lab.allowed.is_empty());
    // The pairing window ends.
    lab.gate.open_pairing(lab.now, Duration::from_secs(60));
    lab.advance(Duration::from_secs(61));
    assert!(!lab.gate.pairing());
}

/// Random visits — right and wrong codes and links, keys and borrowed keys, men in the
/// middle, garbage, departures mid-handshake, revocations, time passing — in random order.
/// Media is allowed exactly to peers that proved a current secret over unaltered
/// fingerprints, pairing never survives more than three failures, and every viewer that
/// paired can come back with its key until revoked.
fn random_visits(seed: u64) {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut lab = Lab::new(Vec::new());
    lab.gate.open_pairing(lab.now, Duration::from_secs(600));
    lab.settle();
    // Keys handed out, and which are revoked.
    let mut keys: Vec<(Credential, String)> = Vec::new();
    let mut revoked: HashSet<String> = HashSet::new();
    // Peers that should be allowed now, with the viewer each proved to be.
    let mut honest: HashMap<String, String> = HashMap::new();
    for n in 0..60 {
        let peer = format!("p{n}");
        let mitm = next() % 6 == 0;
        match next() % 10 {
            0 | 1 if lab.code.is_some() => {
                let (code, secret) = lab.code.unwrap();
                let cred = if next() % 2 == 0 {
                    Secret::Code(code)
                } else {
                    Secret::Link(secret)
                };
                let before = lab.paired().len();
                lab.visit(&peer, n, Credential::Pair(cred), mitm);
                let busy = lab.steps[&peer]
                    .iter()
                    .any(|s| matches!(s, Step::Refused(r) if r.contains("busy")));
                if mitm || busy {
                    assert!(lab.welcome(&peer).is_none(), "seed {seed}: paired anyway");
                } else {
                    let w = lab.welcome(&peer).cloned().expect("paired");
                    assert_eq!(lab.paired().len(), before + 1);
                    let rec = lab.paired().pop().unwrap();
                    keys.push((key_of(&w), rec.id.clone()));
                    assert!(
                        !lab.allowed.contains(&peer),
                        "seed {seed}: media to a pairing"
                    );
                }
            }
            2 => {
                // A wrong code.
                let code = lab
                    .code
                    .map(|(c, _)| c)
                    .unwrap_or_else(|| Code::parse("3-crimson-otter").unwrap());
                let wrong = Code {
                    words: [code.words[0], code.words[1].wrapping_add(1)],
                    ..code
                };
                lab.visit(&peer, n, Credential::Pair(Secret::Code(wrong)), mitm);
                assert!(
                    lab.welcome(&peer).is_none(),
                    "seed {seed}: wrong code worked"
                );
            }
            3 | 4 if !keys.is_empty() => {
                let (cred, id) = keys[next() as usize % keys.len()].clone();
                lab.visit(&peer, n, cred, mitm);
                if mitm || revoked.contains(&id) {
                    assert!(lab.welcome(&peer).is_none(), "seed {seed}: {n} got in");
                } else {
                    assert!(
                        lab.welcome(&peer).is_some(),
                        "seed {seed}: key {id} refused"
                    );
                    honest.insert(peer.clone(), id);
                }
            }
            5 if !keys.is_empty() => {
                // Revoke one.
                // Revoke one: its watchers are cut off.
                let (_, id) = keys[next() as usize % keys.len()].clone();
                honest.retain(|_, v| *v != id);
                revoked.insert(id);
            }
            6 => {
                // Garbage, or a visit abandoned halfway.
                lab.gate.peer_open(lab.now, &peer, CAM_FP, "sha-256 EE");
                if next() % 2 == 0 {
                    let junk: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
                    lab.gate.message(&peer, &junk);
                } else {
                    lab.gate.message(&peer, br#"{"t":"visit","v":1}"#);
                }
                lab.settle();
                if next() % 2 == 0 {
                    lab.leave(&peer);
                }
            }
            8 if !keys.is_empty() => {
                // A WHEP player with a viewer's token, a forged one, or another camera's.
                let (_, id) = keys[next() as usize % keys.len()].clone();
                let rec = lab.paired().into_iter().find(|r| r.id == id).unwrap();
                let token = whep_token(&rec).unwrap();
                let (token, good) = match next() % 4 {
                    0 => (format!("{}.{}", id, "0".repeat(32)), false),
                    1 => (token.replace('.', ""), false),
                    _ => (token, !revoked.contains(&id)),
                };
                let welcomed = lab.whep(&peer, &token);
                assert_eq!(welcomed, good, "seed {seed}: WHEP token {token}");
                if good {
                    honest.insert(peer.clone(), id);
                } else {
                    assert!(!lab.allowed.contains(&peer), "seed {seed}: WHEP got in");
                }
            }
            7 => {
                let gone: Vec<String> = honest.keys().take(1).cloned().collect();
                for p in gone {
                    honest.remove(&p);
                    lab.leave(&p);
                }
            }
            _ => lab.advance(Duration::from_secs(next() % 40)),
        }
        // The paired viewers keep the ids and keys the camera keeps.
        let live: Vec<ViewerRecord> = lab
            .paired()
            .into_iter()
            .filter(|r| !revoked.contains(&r.id))
            .collect();
        lab.gate.set_viewers(live);
        lab.settle();
        let want: HashSet<String> = honest.keys().cloned().collect();
        assert_eq!(
            lab.allowed, want,
            "seed {seed}, step {n}: media allowed to the wrong peers"
        );
        assert_eq!(lab.gate.watching(), honest.len(), "seed {seed}");
        for r in lab.paired() {
            assert!(parse_key(&r.key).is_some());
        }
    }
    let failures = lab
        .outs
        .iter()
        .filter(|o| matches!(o, Out::Code { .. }))
        .count();
    assert!(failures <= 61, "seed {seed}: {failures} codes");
}

#[test]
fn a_whep_player_with_a_viewers_token_watches_until_revoked() {
    let mut file = CameraFile {
        id: new_id([9; 10]),
        name: "porch".into(),
        viewers: Vec::new(),
    };
    let ha = file.add_viewer("home\nassistant", [7; 22]).unwrap();
    assert_eq!(ha.name, "homeassistant");
    // The same name again is the same viewer.
    assert_eq!(file.add_viewer("homeassistant", [8; 22]), Some(ha.clone()));
    let token = whep_token(&ha).unwrap();
    assert!(token.starts_with(&format!("{}.", ha.id)));
    assert!(!token.contains(&ha.key), "the key itself stays home");
    let mut lab = Lab::new(file.viewers.clone());

    // Wrong tokens: refused by signal, nothing allowed, and the next try is a new peer.
    for bad in [
        format!("{}.{}", ha.id, "ab".repeat(16)),
        "nonsense".to_owned(),
        format!("{}x", token),
    ] {
        let peer = format!("bad-{}", bad.len());
        assert!(!lab.whep(&peer, &bad));
        assert!(matches!(
            lab.signals[&peer].last(),
            Some(Msg::Camera(Visit::Refused { .. }))
        ));
    }
    lab.gate
        .app_signal(lab.now, "junk", b"{\"t\":\"visit\",\"v\":1}");
    lab.settle();
    assert!(matches!(
        lab.signals["junk"].last(),
        Some(Msg::Camera(Visit::Refused { .. }))
    ));
    assert!(lab.allowed.is_empty());

    // The right one: welcome, and media once connected (not before).
    let msg = format!(r#"{{"t":"whep","v":1,"token":"{token}"}}"#);
    lab.gate.app_signal(lab.now, "player", msg.as_bytes());
    lab.settle();
    assert!(lab.allowed.is_empty(), "media before the connection is up");
    lab.gate.peer_connected("player");
    lab.settle();
    assert!(lab.allowed.contains("player"));
    assert_eq!(lab.gate.watching(), 1);
    // A second token signal from the same peer changes nothing.
    lab.gate.app_signal(lab.now, "player", b"garbage");
    lab.settle();
    assert!(lab.allowed.contains("player"));

    // A player that never connects is refused after the handshake time.
    assert!(lab.whep("slow", &token));
    // (lab.whep connected it; a fresh one that does not:)
    lab.gate.app_signal(lab.now, "stuck", msg.as_bytes());
    lab.advance(HANDSHAKE_TIMEOUT + Duration::from_secs(1));
    assert!(matches!(
        lab.signals["stuck"].last(),
        Some(Msg::Camera(Visit::Refused { .. }))
    ));
    assert!(!lab.allowed.contains("stuck"));

    // Revoked: cut off, and told so.
    lab.gate.set_viewers(Vec::new());
    lab.settle();
    assert!(lab.allowed.is_empty());
    assert!(matches!(
        lab.signals["player"].last(),
        Some(Msg::Camera(Visit::Refused { reason })) if reason.contains("revoked")
    ));
}

#[test]
fn random_visits_never_let_the_wrong_peer_watch() {
    let seeds: u64 = std::env::var("PEERWEB_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    if let Some(seed) = std::env::var("PEERWEB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return random_visits(seed);
    }
    for seed in 0..seeds {
        random_visits(seed);
    }
}
