//! Signaling frames (and access-token grants) from three connections into the rooms core,
//! with time moving forward.
//! Frames are decoded from UTF-8 text; must never panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerweb_signal::{Config, ConnId, Input, Output, Signal};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut s = Signal::new(Config::default(), [3; 32], now);
    let ip = "192.0.2.1".parse().unwrap();
    for c in 0..3 {
        s.handle_input(
            now,
            Input::Open {
                conn: ConnId(c),
                ip,
            },
        );
    }
    // Frames are separated by 0xFF bytes (never valid UTF-8): [conn/op byte][text]...
    for frame in data.split(|b| *b == 0xFF) {
        let Some((&op, body)) = frame.split_first() else {
            continue;
        };
        let conn = ConnId(u64::from(op % 3));
        now += Duration::from_millis(u64::from(op >> 5) * 700);
        let input = match (op >> 2) & 0x7 {
            0 => Input::Binary { conn },
            1 => Input::Alive { conn },
            2 => Input::Closed {
                conn,
                goodbye: op & 1 == 1,
            },
            3 => Input::Timeout,
            // An access token's room pattern (any text), expiring a few seconds on.
            4 if op & 1 == 1 => match std::str::from_utf8(body) {
                Ok(room) => Input::Grant {
                    conn,
                    room,
                    expires: now + Duration::from_millis(u64::from(op) * 40),
                },
                Err(_) => Input::Timeout,
            },
            _ => match std::str::from_utf8(body) {
                Ok(text) => Input::Text { conn, text },
                Err(_) => Input::Oversize { conn },
            },
        };
        s.handle_input(now, input);
        while !matches!(s.poll_output(), Output::Timeout(_)) {}
        if let Ok(text) = std::str::from_utf8(body) {
            let _ = peerweb_proto::ClientMsg::decode(text);
        }
    }
});
