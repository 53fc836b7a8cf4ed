//! Remote camera monitoring as pure logic (no IO). So far: [`pattern`], the built-in test
//! source — H.264 written here, with no encoder library, that carries a frame number and the
//! time it was made as large blocks a viewer reads back from the decoded picture.

pub mod pattern;
