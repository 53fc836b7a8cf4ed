//! Any bytes through the SCTP packet and chunk parser, as they come and with their checksum
//! made right; what parses encodes and parses again to the same chunks. The same bytes as a DCEP
//! message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerweb_sctp::packet::set_checksum;
use peerweb_sctp::{Chunk, Packet, ReconfigParam, Writer};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = peerweb_sctp::dcep::Message::parse(data) {
        let again = m.encode().expect("a parsed DCEP message encodes");
        assert_eq!(peerweb_sctp::dcep::Message::parse(&again).ok(), Some(m));
    }
    check(data);
    // With its checksum made right, so the chunks behind it are reached.
    let mut fixed = data.to_vec();
    set_checksum(&mut fixed);
    check(&fixed);
});

fn check(data: &[u8]) {
    let Ok(p) = Packet::parse(data) else { return };
    let chunks: Vec<Chunk<'_>> = p.chunks().filter_map(Result::ok).collect();
    let mut w = Writer::new(p.header, Vec::new());
    for c in &chunks {
        match c {
            Chunk::Sack(s) => {
                let _ = s.gap_blocks().count() + s.duplicates().count();
            }
            Chunk::ForwardTsn(f) => {
                let _ = f.streams().count();
            }
            Chunk::Reconfig(r) => {
                for p in r.iter() {
                    let _ = ReconfigParam::parse(p);
                }
            }
            Chunk::Init(i) | Chunk::InitAck(i) => {
                let _ = i.params.supports(0);
            }
            _ => {}
        }
        w.push(c).expect("a parsed chunk encodes");
    }
    let again = w.finish();
    let p2 = Packet::parse(&again).expect("what was encoded parses");
    let chunks2: Vec<Chunk<'_>> = p2.chunks().map(|c| c.expect("and each chunk")).collect();
    assert_eq!(chunks, chunks2);
}
