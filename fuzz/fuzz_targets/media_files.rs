//! The media readers of a native call member and camera fed any bytes: a raw H.264 stream
//! split into access units (NAL units, slice headers, the SPS profile), the camera's H.264
//! checks (SPS, profile, size, B-frames) on the whole input and on each access unit, an Ogg
//! Opus file and an Opus packet's TOC. Must never panic, only accept or refuse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerweb_call::media::{H264, Opus, opus_samples};
use peerweb_camera::h264::Checker;

fuzz_target!(|data: &[u8]| {
    let _ = Checker::new().check(data);
    if let Ok(h) = H264::parse(data) {
        assert!(!h.frames.is_empty());
        let mut c = Checker::new();
        for f in &h.frames {
            let _ = c.check(f);
        }
    }
    let _ = Opus::parse(data);
    let _ = opus_samples(data);
});
