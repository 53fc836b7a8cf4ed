//! A neighbour sending anything: every message decoded against a small file, fed to a link
//! in any order, with requests, serving, cancels and expiries between. Must never panic, and
//! only verified groups may come out.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use peerweb_swarm::Tree;
use peerweb_swarm::link::{Event, Link, Serve, Upload};
use peerweb_swarm::wire::{Have, Msg};

fuzz_target!(|data: &[u8]| {
    let file: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let tree = Tree::of(&file);
    let size = file.len() as u64;
    let now = Instant::now();
    let upload = Upload { rate: Some(50_000), budget: Some(100_000) };
    let mut link = Link::new(now, *tree.root().as_bytes(), size, upload);
    let local = Have::all(size);
    let _ = link.start(&local);
    let _ = link.receive(now, &Msg::Hello { version: 1, root: *tree.root().as_bytes(), size }.encode(), &tree, &local);
    let mut t = now;
    let mut rest = data;
    while rest.len() >= 3 {
        let (op, len) = (rest[0], usize::from(u16::from_le_bytes([rest[1], rest[2]])));
        let take = len.min(rest.len() - 3);
        let body = &rest[3..3 + take];
        rest = &rest[3 + take..];
        t += Duration::from_millis(u64::from(op & 0x3f));
        match op >> 6 {
            0 => match link.receive(t, body, &tree, &local) {
                Ok(Event::Verified { group, bytes }) => assert!(tree.verify(group, bytes).is_ok()),
                Ok(_) => {}
                Err(_) => return,
            },
            1 => {
                let g = u64::from(body.first().copied().unwrap_or(0) % 6);
                let _ = link.ask(t, g, 1 + u32::from(body.get(1).copied().unwrap_or(0) % 3), Duration::from_millis(300));
            }
            2 => {
                if let Serve::Group(g) = link.serve(t) {
                    let _ = link.data(g, &[]);
                }
                let _ = link.take_out();
            }
            _ => {
                let _ = link.cancel(u64::from(body.first().copied().unwrap_or(0)));
                let _ = link.expire(t);
            }
        }
    }
});
