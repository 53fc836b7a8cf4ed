//! The media readers of a native call member and camera fed any bytes: a raw H.264 stream
//! split into access units (NAL units, slice headers, the SPS profile), an Ogg Opus file and
//! an Opus packet's TOC. Must never panic, only accept or refuse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerweb_call::media::{H264, Opus, opus_samples};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = H264::parse(data) {
        assert!(!h.frames.is_empty());
    }
    let _ = Opus::parse(data);
    let _ = opus_samples(data);
});
