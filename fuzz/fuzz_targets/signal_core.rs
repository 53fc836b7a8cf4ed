//! Signaling frames (and access-token grants) from three connections into the rooms core,
//! with time moving forward, its bus ops run on the in-memory bus or failed.
//! Frames are decoded from UTF-8 text; must never panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerweb_signal::bus::{BusEvent, Model};
use peerweb_signal::{Config, ConnId, Input, Output, Signal};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let start = now;
    let mut s = Signal::new(Config::default(), [3; 32], now);
    let mut bus = Model::new();
    let mut failures = 0u32;
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
        // The bus in memory answers; every third op instead fails (the bus away), which the
        // core must take without a panic.
        let wall = 1_800_000_000_000 + now.duration_since(start).as_millis() as u64;
        loop {
            match s.poll_output() {
                Output::Timeout(_) => break,
                Output::Bus(bus_op) => {
                    failures += 1;
                    let ev = if failures % 3 == 0 && op & 4 == 4 {
                        bus_op.failed("fuzzed failure")
                    } else {
                        let mut wakes = Vec::new();
                        let ev = bus.execute("node", wall, bus_op, &mut wakes);
                        for (_, w) in wakes {
                            s.handle_bus(now, BusEvent::Wake(w));
                        }
                        ev
                    };
                    if let Some(ev) = ev {
                        s.handle_bus(now, ev);
                    }
                }
                _ => {}
            }
        }
        if let Ok(text) = std::str::from_utf8(body) {
            let _ = peerweb_proto::ClientMsg::decode(text);
        }
    }
});
