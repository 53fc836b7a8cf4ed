//! The association as a state machine under any sequence of operations: two real ends set up
//! and exchange messages while the input decides what happens — packets delivered, dropped,
//! duplicated or corrupted (with their checksum and tag made right, so they reach the chunk
//! handlers), forged packets of any chunks, time passing, messages sent, streams reset, an end
//! shutting down, the first one coming back with no state (a restart), and the second end's
//! reader reading (it holds its messages' room in a small receive window until then). Nothing
//! may panic.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerweb_sctp::assoc::{Association, Config};
use peerweb_sctp::outstanding::Reliability;
use peerweb_sctp::packet::set_checksum;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut now = start;
    let mut ends = [
        Association::connect(Config::default(), now, [1; 40]),
        Association::connect(
            Config {
                a_rwnd: 64 * 1024,
                hold_messages: true,
                ..Config::default()
            },
            now,
            [2; 40],
        ),
    ];
    // Bytes the second end's reader has not read.
    let mut unread = 0usize;
    let mut wire: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut ops = data.chunks(4);
    for _ in 0..2000 {
        for (i, e) in ends.iter_mut().enumerate() {
            while let Some(p) = e.poll_transmit() {
                if wire.len() < 256 {
                    wire.push((1 - i, p));
                }
            }
            while let Some(m) = e.poll_message() {
                if i == 1 {
                    unread += m.data.len();
                }
            }
            while e.poll_stream_event().is_some() {}
        }
        let Some(op) = ops.next() else { break };
        let (kind, a, b) = (
            op[0] % 12,
            *op.get(1).unwrap_or(&0),
            *op.get(2).unwrap_or(&0),
        );
        match kind {
            // Deliver the next packet (or, for 1, drop it).
            0 | 1 => {
                if !wire.is_empty() {
                    let (to, p) = wire.remove(0);
                    if kind == 0 {
                        ends[to].handle_packet(now, &p);
                    }
                }
            }
            // Deliver one twice.
            2 => {
                if let Some((to, p)) = wire.first().cloned() {
                    ends[to].handle_packet(now, &p);
                }
            }
            // Corrupt one byte of the next packet, keeping its checksum right.
            3 => {
                if !wire.is_empty() {
                    let (to, mut p) = wire.remove(0);
                    let at = 12 + usize::from(a) % p.len().saturating_sub(12).max(1);
                    if at < p.len() {
                        p[at] ^= b | 1;
                    }
                    set_checksum(&mut p);
                    ends[to].handle_packet(now, &p);
                }
            }
            // A forged packet: the rest of the input as chunks, with the right tag.
            4 => {
                let rest: Vec<u8> = ops
                    .by_ref()
                    .take(usize::from(a % 16) + 1)
                    .flatten()
                    .copied()
                    .collect();
                let to = usize::from(b % 2);
                let mut p = vec![0x13, 0x88, 0x13, 0x88];
                p.extend_from_slice(&ends[to].local_tag().to_be_bytes());
                p.extend_from_slice(&[0; 4]);
                p.extend_from_slice(&rest);
                set_checksum(&mut p);
                ends[to].handle_packet(now, &p);
            }
            // Time passes.
            5 => {
                now += Duration::from_millis(u64::from(a) * 16 + u64::from(b));
                for e in &mut ends {
                    e.handle_timeout(now);
                }
            }
            // Streams reset (a channel closes).
            8 => {
                let from = usize::from(a % 2);
                ends[from].reset_streams(now, &[u16::from(b % 4), u16::from(b / 4 % 4)]);
            }
            // One end shuts down.
            10 => ends[usize::from(a % 2)].shutdown(now),
            // The first end loses its state: a new stack (new tags) restarts the association.
            11 => {
                let mut random = [a | 1; 40];
                random[1] = b;
                ends[0] = Association::connect(Config::default(), now, random);
            }
            // The second end's reader reads some of what it holds.
            9 => {
                let n = unread.min(usize::from(a) * 1024 + usize::from(b));
                unread -= n;
                ends[1].release(now, n);
            }
            // A message.
            _ => {
                let from = usize::from(a % 2);
                let len = usize::from(b) * 97 + 1;
                let rel = Reliability {
                    max_retransmits: (kind == 6).then_some(u32::from(a % 3)),
                    expires: None,
                };
                let _ = ends[from].send_message(
                    now,
                    u16::from(b % 4),
                    53,
                    kind == 6,
                    rel,
                    &vec![a; len],
                );
            }
        }
    }
});
