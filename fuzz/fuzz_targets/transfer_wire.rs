//! The file-transfer receiver fed whatever a hostile sender sends: control messages into the
//! file list, chunk frames into the checks, names into the sanitiser; and the sender fed a
//! hostile `accept`. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerweb_transfer::session::{Manifest, Receiving, Resume, Sending};
use peerweb_transfer::wire::{Control, FileEntry};
use peerweb_transfer::{Code, Handshake, Link, Secret, names};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = names::plan(text.split('\n'));
    let _ = Code::parse(&text);
    let _ = Link::parse(&text);
    let mut manifest = Manifest::default();
    let files = vec![
        FileEntry { path: "a".into(), size: 70_000, hash: blake3::hash(b"x").to_hex().to_string() },
        FileEntry { path: "b".into(), size: 0, hash: blake3::hash(b"").to_hex().to_string() },
    ];
    let (mut rx, _) = Receiving::new(files, vec![Resume::fresh(), Resume::fresh()]).unwrap();
    let mut hs = Handshake::receiver(&Secret::Link([1; 16]));
    let mut rest = data;
    while rest.len() >= 3 {
        let (op, len) = (rest[0], usize::from(u16::from_le_bytes([rest[1], rest[2]])));
        let take = len.min(rest.len() - 3);
        let chunk = &rest[3..3 + take];
        rest = &rest[3 + take..];
        match op % 3 {
            0 => {
                let _ = rx.on_chunk(chunk);
            }
            1 => match Control::decode(chunk) {
                Ok(Control::Files { files }) => {
                    let _ = manifest.add(files);
                }
                Ok(Control::Accept { from }) => {
                    let _ = Sending::new(vec![10, 70_000], &from).map(|s| s.count());
                }
                Ok(m) => {
                    let _ = hs.on_hello(&m);
                    let _ = hs.verify("sha-256 AA", "sha-256 BB", &m);
                }
                Err(_) => {}
            },
            _ => {
                let _ = names::sanitize(&String::from_utf8_lossy(chunk));
            }
        }
    }
});
