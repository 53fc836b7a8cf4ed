//! Any bytes through the STUN parser and the ChannelData/stream framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerweb_turn::stun::{Message, attr, channel_data, stream_frame_len};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        for (_, v) in m.attributes() {
            let _ = v.len();
        }
        let _ = m.xor_addresses(attr::XOR_PEER_ADDRESS);
        let _ = m.xor_address(attr::XOR_MAPPED_ADDRESS);
        let _ = m.text(attr::USERNAME);
        let _ = m.u32(attr::LIFETIME);
        let _ = m.unknown_required();
        let _ = m.verify_integrity(b"key");
    }
    let _ = channel_data::parse(data);
    let _ = stream_frame_len(data);
});
