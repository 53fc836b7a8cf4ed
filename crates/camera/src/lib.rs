//! Remote camera monitoring as pure logic (no IO): what `peerweb camera`, `peerweb watch` and
//! the `/watch` page agree on.
//!
//! - [`gate`]: the camera's side — pairing by code, viewer keys, who gets media;
//! - [`watch`]: a viewer's side of one connection to a camera;
//! - [`wire`]: the camera protocol's messages (v1, docs/protocol.md);
//! - [`gop`]: the frames since the last keyframe, replayed to a viewer who arrives;
//! - [`h264`]: what is checked in the H.264 passed through (profile, size, no B-frames);
//! - [`store`]: what each side keeps between runs, and the rooms and links it names;
//! - [`pattern`]: the built-in test source — H.264 written here, with no encoder library,
//!   that carries a frame number and the time it was made as large blocks a viewer reads
//!   back from the decoded picture.

pub mod gate;
pub mod gop;
pub mod h264;
pub mod layers;
pub mod pattern;
pub mod store;
pub mod watch;
pub mod wire;

#[cfg(test)]
mod tests;
