//! Verified swarms as pure logic (no IO, no clock): what peers that share files need to agree
//! on before any byte moves.
//!
//! - [`tree`]: a file's id is its plain BLAKE3 root; its tree down to 16 KiB groups (the
//!   outboard) lets every group be checked on its own, whoever sent it;
//! - [`manifest`]: the files a swarm shares, in one canonical JSON form, optionally signed
//!   with Ed25519;
//! - [`wire`]: the binary messages neighbours exchange on a data channel, and `Have`, which
//!   groups a peer has;
//! - [`link`]: one neighbour — requests both ways, the upload allowance, every check on what
//!   it sends (a bad group ends it);
//! - [`fetch`]: one file being fetched — near groups in order with the origin as fallback,
//!   far ones rarest first.

pub mod fetch;
pub mod link;
pub mod manifest;
pub mod tree;
pub mod wire;

pub use manifest::{FileEntry, Manifest, ManifestError};
pub use tree::{Builder, GROUP, Tree, TreeError};

#[cfg(test)]
mod tests;
