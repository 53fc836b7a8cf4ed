//! Manifests and outboards as a hostile origin or peer sends them: any bytes as a manifest,
//! any bytes as an outboard for any claimed size, any bytes as a group. Must never panic, and
//! a manifest that reads must read again from its own bytes (the canonical form is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerweb_swarm::{Manifest, Tree};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        assert_eq!(Manifest::parse(&m.to_bytes()).ok(), Some(m));
    }
    if data.len() >= 8 {
        // A claimed size (up to ~1 GiB, so an outboard of the right length is possible), the
        // rest as the outboard and then as a group.
        let size = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]])) >> 2;
        let root = blake3::hash(&data[4..8]);
        let rest = &data[8..];
        if let Ok(tree) = Tree::from_outboard(size, root, rest) {
            for g in 0..tree.groups().min(4) {
                let _ = tree.verify(g, rest);
            }
        }
        let tree = Tree::of(rest);
        let _ = Tree::from_outboard(tree.size(), tree.root(), &tree.outboard()).map(|t| {
            assert_eq!(t, tree);
        });
    }
});
