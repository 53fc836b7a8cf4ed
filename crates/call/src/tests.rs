use std::collections::{HashMap, VecDeque};

use super::*;

/// Known answers computed by the browser's `verify.js` (web/sdk) for the same inputs: the two
/// implementations must agree byte for byte, or a native peer and a tab would never match.
#[test]
fn agrees_with_the_browser_byte_for_byte() {
    let (fp_a, fp_b) = ("sha-256 AA:BB:CC", "sha-256 11:22:33");
    let (r_a, r_b) = ("01".repeat(32), "fe".repeat(32));
    let t = transcript(fp_a, &r_a, fp_b, &r_b);
    assert_eq!(
        String::from_utf8(t.clone()).unwrap(),
        format!("{fp_b}\n{fp_a}\n{r_b}\n{r_a}")
    );
    let sas_key = blake3::Hasher::new_derive_key("peerweb call v1 sas")
        .update(&t)
        .finalize();
    assert_eq!(hex(&sas_key.as_bytes()[..3]), "13d0f8");
    let k = continuity_key(&t);
    assert_eq!(
        hex(&k),
        "0204167ab4a18aa6232c3718682bbc4c4a3c6d2f0011e6469f91da5e07b864f6"
    );
    assert_eq!(
        proof_of(&k, fp_a, &t),
        "5785062635b8d1796a7281baee1aa314ba7f2f99fc8c88f733540b152666ed81"
    );
    let words = &peerweb_transfer::code::WORDS;
    assert_eq!(
        sas_of(&t),
        format!("{} {} {}", words[0x13], words[0xd0], words[0xf8])
    );
}

#[test]
fn fingerprints_are_read_as_the_browser_writes_them() {
    let sdp = "v=0\r\na=fingerprint:SHA-256 ab:cd:EF\r\na=setup:actpass\r\n";
    assert_eq!(fingerprint_of(sdp).as_deref(), Some("sha-256 AB:CD:EF"));
    assert_eq!(fingerprint_of("v=0\r\n"), None);
}

/// A small seeded generator (splitmix64): random sequences that can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self) -> [u8; 32] {
        let mut out = [0; 32];
        for b in &mut out {
            *b = self.next() as u8;
        }
        out
    }

    fn fp(&mut self) -> String {
        let b = self.bytes();
        let hexes: Vec<String> = b.iter().map(|x| format!("{x:02X}")).collect();
        format!("sha-256 {}", hexes.join(":"))
    }
}

type Keys = HashMap<String, [u8; 32]>;

/// Runs two verifiers to the end, delivering in a random interleaving of the two directions
/// (each in order), `tamper` changing or dropping messages. Protocol errors are fine here.
fn run(
    rng: &mut Rng,
    a: &mut Verifier,
    ka: &Keys,
    b: &mut Verifier,
    kb: &Keys,
    mut tamper: impl FnMut(&mut Rng, bool, String) -> Option<String>,
) {
    let mut ab: VecDeque<String> = VecDeque::from([a.start()]);
    let mut ba: VecDeque<String> = VecDeque::from([b.start()]);
    for _ in 0..100 {
        if ab.is_empty() && ba.is_empty() {
            break;
        }
        let forward = ba.is_empty() || (!ab.is_empty() && rng.next().is_multiple_of(2));
        let (q, to, keys, back) = if forward {
            (&mut ab, &mut *b, kb, &mut ba)
        } else {
            (&mut ba, &mut *a, ka, &mut ab)
        };
        let Some(m) = q.pop_front() else { continue };
        let Some(m) = tamper(rng, forward, m) else {
            continue;
        };
        if let Ok(out) = to.receive(&m, |id| keys.get(id).copied()) {
            back.extend(out);
        }
    }
}

fn side(rng: &mut Rng, local: &str, remote: &str, id: &str) -> Verifier {
    Verifier::new(local.into(), remote.into(), id.into(), rng.bytes())
}

fn ident(rng: &mut Rng) -> String {
    hex(&rng.bytes())
}

#[test]
fn random_orders_give_equal_words_and_a_man_in_the_middle_different_ones() {
    let none = Keys::new();
    for seed in 0..200 {
        let mut rng = Rng(seed);
        let (fa, fb) = (rng.fp(), rng.fp());
        let (ia, ib) = (ident(&mut rng), ident(&mut rng));
        let mut a = side(&mut rng, &fa, &fb, &ia);
        let mut b = side(&mut rng, &fb, &fa, &ib);
        run(&mut rng, &mut a, &none, &mut b, &none, |_, _, m| Some(m));
        assert_eq!(a.stage(), Stage::Compare, "seed {seed}");
        assert_eq!(b.stage(), Stage::Compare, "seed {seed}");
        assert_eq!(a.sas(), b.sas(), "seed {seed}");

        // The same two through a man in the middle with his own certificates.
        let (m1, m2) = (rng.fp(), rng.fp());
        let mut a = side(&mut rng, &fa, &m1, &ia);
        let mut b = side(&mut rng, &fb, &m2, &ib);
        let mut to_a = side(&mut rng, &m1, &fa, &ib);
        let mut to_b = side(&mut rng, &m2, &fb, &ia);
        run(&mut rng, &mut a, &none, &mut to_a, &none, |_, _, m| Some(m));
        run(&mut rng, &mut to_b, &none, &mut b, &none, |_, _, m| Some(m));
        assert_eq!(a.stage(), Stage::Compare);
        assert_ne!(a.sas(), b.sas(), "seed {seed}: the words must differ");
    }
}

#[test]
fn continuity_verifies_the_next_call_and_catches_a_man_in_the_middle() {
    let mut rng = Rng(7);
    let (ia, ib) = (ident(&mut rng), ident(&mut rng));
    let (mut ka, mut kb) = (Keys::new(), Keys::new());
    let (fa, fb) = (rng.fp(), rng.fp());
    let mut a = side(&mut rng, &fa, &fb, &ia);
    let mut b = side(&mut rng, &fb, &fa, &ib);
    run(&mut rng, &mut a, &ka, &mut b, &kb, |_, _, m| Some(m));
    ka.insert(ib.clone(), a.confirm(true).unwrap());
    kb.insert(ia.clone(), b.confirm(true).unwrap());
    assert_eq!(a.stage(), Stage::Verified(By::Sas));
    assert_eq!(ka[&ib], kb[&ia]);

    let (fa, fb) = (rng.fp(), rng.fp());
    let mut a = side(&mut rng, &fa, &fb, &ia);
    let mut b = side(&mut rng, &fb, &fa, &ib);
    run(&mut rng, &mut a, &ka, &mut b, &kb, |_, _, m| Some(m));
    assert_eq!(a.stage(), Stage::Verified(By::Continuity));
    assert_eq!(b.stage(), Stage::Verified(By::Continuity));

    let (m1, m2) = (rng.fp(), rng.fp());
    let mut a = side(&mut rng, &fa, &m1, &ia);
    let mut b = side(&mut rng, &fb, &m2, &ib);
    let mut to_a = side(&mut rng, &m1, &fa, &ib);
    let mut to_b = side(&mut rng, &m2, &fb, &ia);
    let none = Keys::new();
    run(&mut rng, &mut a, &ka, &mut to_a, &none, |_, _, m| Some(m));
    run(&mut rng, &mut to_b, &none, &mut b, &kb, |_, _, m| Some(m));
    assert_eq!(a.stage(), Stage::Changed);
    assert_eq!(b.stage(), Stage::Changed);
    // Confirming the words again (after comparing them) keeps the new key.
    assert!(a.confirm(true).is_some());
}

#[test]
fn garbage_replays_and_false_reveals_never_verify() {
    let broken = [
        "not json".to_owned(),
        "[]".to_owned(),
        r#"{"t":"commit"}"#.to_owned(),
        r#"{"t":"commit","v":2,"id":"00","c":"00"}"#.to_owned(),
        "x".repeat(5000),
        format!(r#"{{"t":"reveal","r":"{}"}}"#, "00".repeat(32)),
        r#"{"t":"proof","mac":"zz"}"#.to_owned(),
    ];
    for seed in 0..300 {
        let mut rng = Rng(seed);
        let kind = rng.next() % 4;
        let (fa, fb) = (rng.fp(), rng.fp());
        let (ia, ib) = (ident(&mut rng), ident(&mut rng));
        let mut a = side(&mut rng, &fa, &fb, &ia);
        let mut b = side(&mut rng, &fb, &fa, &ib);
        let mut seen: Vec<String> = Vec::new();
        let none = Keys::new();
        run(&mut rng, &mut a, &none, &mut b, &none, |rng, forward, m| {
            seen.push(m.clone());
            if forward || rng.next() % 2 == 0 {
                return Some(m);
            }
            match kind {
                0 => Some(broken[(rng.next() % broken.len() as u64) as usize].clone()),
                1 => Some(seen[(rng.next() % seen.len() as u64) as usize].clone()),
                2 if m.contains("reveal") => {
                    Some(format!(r#"{{"t":"reveal","r":"{}"}}"#, hex(&rng.bytes())))
                }
                2 => Some(m),
                _ => None,
            }
        });
        for v in [&a, &b] {
            assert!(
                matches!(v.stage(), Stage::Waiting | Stage::Compare | Stage::Failed),
                "seed {seed}: {:?}",
                v.stage()
            );
            if v.stage() == Stage::Failed {
                assert!(v.error().is_some());
            }
        }
        if kind == 3 && a.stage() == Stage::Compare && b.stage() == Stage::Compare {
            assert_eq!(a.sas(), b.sas());
        }
    }
}

#[test]
fn state_messages_round_trip_and_bad_fields_are_defaulted() {
    let s = State {
        tracks: [
            ("0".to_owned(), "audio".to_owned()),
            ("1".to_owned(), "camera".to_owned()),
        ]
        .into(),
        muted: Muted {
            audio: true,
            video: false,
        },
        video: "on".into(),
        since: 1_700_000_000_000,
    };
    assert_eq!(State::from_message(&s.to_message()), Some(s));
    let odd = State::from_message(
        r#"{"t":"state","tracks":{"2":7,"3":"screen"},"muted":"x","video":"huge"}"#,
    )
    .unwrap();
    assert_eq!(odd.tracks.len(), 1);
    assert_eq!(odd.video, "off");
    assert_eq!(odd.muted, Muted::default());
    assert_eq!(State::from_message(r#"{"t":"commit"}"#), None);
    assert_eq!(State::from_message("garbage"), None);
}

/// Two sessions wired together: messages delivered in order, each side's channel opening at
/// its own moment. Both reach `compare` with the same words, and exchange their states.
#[test]
fn two_sessions_verify_each_other() {
    for seed in 0..50 {
        let mut rng = Rng(seed);
        let (fa, fb) = (rng.fp(), rng.fp());
        let state = |since| State {
            tracks: BTreeMap::new(),
            muted: Muted::default(),
            video: "off".into(),
            since,
        };
        let mut a = Session::new(ident(&mut rng), state(1));
        let mut b = Session::new(ident(&mut rng), state(2));
        let mut to_b: VecDeque<String> = VecDeque::new();
        let mut to_a: VecDeque<String> = VecDeque::new();
        let mut stages: HashMap<&str, (Stage, Option<String>)> = HashMap::new();
        let route = |who: &'static str,
                     outs: Vec<Out>,
                     to_b: &mut VecDeque<String>,
                     to_a: &mut VecDeque<String>,
                     stages: &mut HashMap<&str, (Stage, Option<String>)>| {
            for o in outs {
                match o {
                    Out::Send { text, .. } if who == "a" => to_b.push_back(text),
                    Out::Send { text, .. } => to_a.push_back(text),
                    Out::Verification { stage, sas, .. } => {
                        stages.insert(who, (stage, sas));
                    }
                    Out::RemoteState { .. } => {}
                }
            }
        };
        // B may hear A's state before its own channel opened.
        let b_first = rng.next().is_multiple_of(2);
        let outs = a.channel_open("b", (fa.clone(), fb.clone()), rng.bytes());
        route("a", outs, &mut to_b, &mut to_a, &mut stages);
        if b_first {
            while let Some(m) = to_b.pop_front() {
                let outs = b.message("a", &m, rng.bytes(), |_| None);
                route("b", outs, &mut to_b, &mut to_a, &mut stages);
            }
        }
        let outs = b.channel_open("a", (fb.clone(), fa.clone()), rng.bytes());
        route("b", outs, &mut to_b, &mut to_a, &mut stages);
        for _ in 0..50 {
            if let Some(m) = to_b.pop_front() {
                let outs = b.message("a", &m, rng.bytes(), |_| None);
                route("b", outs, &mut to_b, &mut to_a, &mut stages);
            }
            if let Some(m) = to_a.pop_front() {
                let outs = a.message("b", &m, rng.bytes(), |_| None);
                route("a", outs, &mut to_b, &mut to_a, &mut stages);
            }
        }
        let (sa, wa) = stages.get("a").cloned().unwrap_or((Stage::Waiting, None));
        let (sb, wb) = stages.get("b").cloned().unwrap_or((Stage::Waiting, None));
        assert_eq!((sa, sb), (Stage::Compare, Stage::Compare), "seed {seed}");
        assert_eq!(wa, wb);
        let (_, kept) = a.confirm("b", true);
        assert!(kept.is_some());
    }
}
