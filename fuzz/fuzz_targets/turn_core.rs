//! The TURN core driven by a sequence of datagrams from two clients and two peers, with
//! time moving forward; relay sockets are "bound" as soon as asked. Must never panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerweb_turn::{Config, Input, Output, Transport, Turn};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut cfg = Config::new(vec![b"s".to_vec()]);
    cfg.policy.allow_loopback = true;
    let mut turn = Turn::new(cfg, [1; 32], now, 1_800_000_000);
    let clients = [
        "127.0.0.1:1000".parse().unwrap(),
        "127.0.0.2:2000".parse().unwrap(),
    ];
    let peers = [
        "127.0.0.3:3000".parse().unwrap(),
        "127.0.0.4:4000".parse().unwrap(),
    ];
    let mut allocs = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]));
        let take = len.min(rest.len() - 2);
        let chunk = &rest[2..2 + take];
        rest = &rest[2 + take..];
        now += Duration::from_millis(u64::from(op >> 4) * 250);
        let input = match op & 0x7 {
            0 | 1 => Input::FromClient {
                transport: Transport::Udp,
                from: clients[usize::from(op & 1)],
                data: chunk,
            },
            2 => Input::FromClient {
                transport: Transport::Tcp(1),
                from: clients[0],
                data: chunk,
            },
            3 | 4 => match allocs.get(usize::from(op & 1)) {
                Some(&alloc) => Input::FromPeer {
                    alloc,
                    from: peers[usize::from(op & 1)],
                    data: chunk,
                },
                None => Input::Timeout,
            },
            5 => Input::ClientClosed {
                transport: Transport::Tcp(1),
            },
            _ => Input::Timeout,
        };
        turn.handle_input(now, input);
        loop {
            match turn.poll_output() {
                Output::Timeout(_) => break,
                Output::BindRelay { alloc } => {
                    allocs.push(alloc);
                    let addr = Some(
                        format!("127.0.0.9:{}", 50_000 + allocs.len())
                            .parse()
                            .unwrap(),
                    );
                    turn.handle_input(now, Input::RelayBound { alloc, addr });
                }
                _ => {}
            }
        }
    }
});
