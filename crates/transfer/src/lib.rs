//! Private file transfer as pure logic, no IO: what `peerweb send` / `peerweb receive` and the
//! browser pages agree on.
//!
//! - [`code`]: short codes (`7-crimson-otter`) and links (`…/receive#7-<secret>`), the room
//!   they name;
//! - [`trust`]: the handshake that binds both DTLS fingerprints to the code (SPAKE2) or the
//!   link's secret, and the short authentication string;
//! - [`wire`]: control messages and chunk frames (protocol v1, docs/protocol.md);
//! - [`session`]: the file list, resume points, per-chunk and per-file BLAKE3 checks;
//! - [`names`]: sender-chosen names made safe for the receiver's disk.
//!
//! The random parts (codes, secrets) come in from the caller; SPAKE2 draws its own scalar
//! from the OS (the `spake2` crate's API).

pub mod code;
pub mod names;
pub mod session;
pub mod trust;
pub mod wire;
mod words;

pub use code::{Code, CodeError, Link};
pub use trust::{Handshake, Secret, TrustError, sas};
pub use wire::{Control, FileEntry, Role};
