//! The apps' drivers, between the pure logic (crates/camera, crates/call, crates/transfer,
//! crates/swarm) and the faces (the CLI, benches, tests): files, clocks, media sources and
//! tasks over the native peer (crates/net).
//!
//! - [`source`]: video and audio sources, paced;
//! - [`rtsp`]: an RTSP camera as a source (retina), reconnected with backoff;
//! - `v4l2`: a V4L2 device with an H.264 encoder as a source (Linux);
//! - [`record`]: received media into files;
//! - [`camera`]: `peerweb camera` — a camera's room, its pairing room and its gate;
//! - [`watch`]: `peerweb watch` — pairing with a camera and watching it;
//! - [`manifest`]: `peerweb manifest` — files hashed into trees, outboards, signed manifests;
//! - [`swarm`]: `peerweb seed`/`fetch` — one file's swarm on a native peer;
//! - [`files`]: small private JSON files (mode 0600, replaced atomically).

pub mod camera;
pub mod files;
pub mod manifest;
pub mod record;
pub mod rtsp;
pub mod source;
pub mod swarm;
#[cfg(target_os = "linux")]
pub mod v4l2;
pub mod watch;

/// `%xx` decoding (URL credentials, a file's path in its URL); `None` for a bad escape or
/// bytes that are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
