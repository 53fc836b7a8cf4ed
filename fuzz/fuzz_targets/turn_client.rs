//! The TURN client fed whatever a hostile "server" sends, between timeouts and sends to
//! peers. Must never panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerweb_turn::client::{Client, Transport};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let transport = if data.first().is_some_and(|b| b & 1 == 1) {
        Transport::Stream
    } else {
        Transport::Udp
    };
    let mut c = Client::new(now, "127.0.0.1:3478".parse().unwrap(), transport, "u", "p", 1);
    let peer = "127.0.0.5:5000".parse().unwrap();
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]));
        let take = len.min(rest.len() - 2);
        let chunk = &rest[2..2 + take];
        rest = &rest[2 + take..];
        now += Duration::from_millis(u64::from(op >> 3) * 100);
        match op & 0x3 {
            0 | 1 => {
                let _ = c.accepts(chunk);
                let _ = c.handle_input(now, chunk);
            }
            2 => c.send_to(now, peer, chunk),
            _ => c.handle_timeout(now),
        }
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
        let _ = c.poll_timeout();
    }
});
