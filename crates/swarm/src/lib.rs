//! Verified swarms as pure logic (no IO, no clock): what peers that share files need to agree
//! on before any byte moves.
//!
//! - [`tree`]: a file's id is its plain BLAKE3 root; its tree down to 16 KiB groups (the
//!   outboard) lets every group be checked on its own, whoever sent it;
//! - [`manifest`]: the files a swarm shares, in one canonical JSON form, optionally signed
//!   with Ed25519.

pub mod manifest;
pub mod tree;

pub use manifest::{FileEntry, Manifest, ManifestError};
pub use tree::{Builder, GROUP, Tree, TreeError};
