//! The native peer core fed hostile signaling frames (any text, and well-formed `signal`
//! frames carrying arbitrary SDP and candidates) and arbitrary datagrams, with time moving
//! forward. Must never panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerweb_peer::{Candidate, Client, Output, Protocol, Settings};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut c = Client::new(now, "r", Settings::default());
    let host = "127.0.0.1:5000".parse().unwrap();
    let remote = "127.0.0.2:6000".parse().unwrap();
    if let Ok(cand) = Candidate::host(host, "udp") {
        c.add_local_candidate(now, cand);
    }
    c.signaling_connected(now);
    c.handle_frame(now, r#"{"type":"welcome","v":1,"id":"m","token":"t","resumed":false,"rooms":[]}"#);
    c.handle_frame(now, r#"{"type":"joined","room":"r","peers":[{"id":"a"}]}"#);
    let mut rest = data;
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]));
        let take = len.min(rest.len() - 2);
        let chunk = &rest[2..2 + take];
        rest = &rest[2 + take..];
        now += Duration::from_millis(u64::from(op >> 3) * 50);
        let text = String::from_utf8_lossy(chunk);
        let quoted = serde_json::to_string(&text).unwrap_or_default();
        match op & 0x7 {
            0 => c.handle_frame(now, &text),
            1 | 2 => {
                let ty = if op & 0x7 == 1 { "offer" } else { "answer" };
                let frame = format!(
                    r#"{{"type":"signal","from":"a","data":{{"description":{{"type":"{ty}","sdp":{quoted}}}}}}}"#
                );
                c.handle_frame(now, &frame);
            }
            3 => {
                let frame = format!(
                    r#"{{"type":"signal","from":"a","data":{{"candidate":{{"candidate":{quoted}}}}}}}"#
                );
                c.handle_frame(now, &frame);
            }
            4 | 5 => {
                let _ = c.handle_receive(now, Protocol::Udp, remote, host, chunk);
            }
            6 => {
                let _ = c.send(now, "a", None, op & 0x80 != 0, chunk);
            }
            _ => c.handle_timeout(now),
        }
        while !matches!(c.poll_output(now), Output::Timeout(_)) {}
    }
});
