//! The camera's gate fed what a stranger can send: any messages from any of a few peers, in
//! any order, with peers opening, leaving, connecting and time passing, while pairing is open,
//! and app signals as a WHEP bridge would send them. Must never panic, and must never let media
//! go to a peer that proved nothing (none here holds a secret or a token: every `Allow` is a
//! bug).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerweb_camera::gate::{Gate, Out};
use peerweb_camera::store::{CameraFile, ViewerRecord, new_id};

fuzz_target!(|data: &[u8]| {
    let file = CameraFile {
        id: new_id([1; 10]),
        name: "cam".into(),
        viewers: vec![ViewerRecord {
            id: "v1".into(),
            key: "00112233445566778899aabbccddeeff".into(),
            name: "phone".into(),
            paired: 0,
        }],
    };
    let mut gate = Gate::new(&file, [7; 32]);
    let mut now = Instant::now();
    gate.open_pairing(now, Duration::from_secs(60));
    let mut rest = data;
    while let [op, peer, len, tail @ ..] = rest {
        let peer = format!("p{}", peer % 4);
        let n = usize::from(*len).min(tail.len());
        let (msg, after) = tail.split_at(n);
        rest = after;
        match op % 7 {
            0 => gate.peer_open(now, &peer, "sha-256 AA", "sha-256 BB"),
            1 => gate.peer_left(&peer),
            2 => {
                now += Duration::from_millis(u64::from(*len) * 200);
                gate.handle_timeout(now);
            }
            3 => gate.app_signal(now, &peer, msg),
            4 => gate.peer_connected(&peer),
            _ => gate.message(&peer, msg),
        }
        while let Some(out) = gate.poll() {
            assert!(!matches!(out, Out::Allow { .. }), "media to a stranger");
        }
    }
});
