//! Reading and writing the bits of SDP and signaling JSON the peer needs.

use super::*;

pub(super) fn is_mdns(line: &str) -> bool {
    line.split_whitespace()
        .nth(4)
        .is_some_and(|addr| addr.ends_with(".local"))
}

pub(super) fn description_json(ty: &str, sdp: &str) -> String {
    serde_json::json!({ "description": { "type": ty, "sdp": sdp } }).to_string()
}

pub(super) fn candidate_json(c: &Candidate, mid: Option<&str>) -> String {
    // The shape of RTCIceCandidateInit; everything is bundled on the first m-line, whose mid
    // is whatever the offer chose (browsers reject a candidate naming another mid).
    serde_json::json!({ "candidate": {
        "candidate": c.to_sdp_string().trim_start_matches("a="),
        "sdpMid": mid,
        "sdpMLineIndex": 0,
    } })
    .to_string()
}

/// The first `a=ice-ufrag:` of an SDP: a new one means the sender restarted ICE.
pub(super) fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

/// The mid of the first m-line of an SDP.
pub(super) fn first_mid(sdp: &str) -> Option<String> {
    mids(sdp).next().map(str::to_owned)
}

/// The mids of an SDP's m-lines.
pub(super) fn mids(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
}

/// The DTLS certificate fingerprint of an SDP (`sha-256 AB:…`, upper case).
pub(super) fn fingerprint(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=fingerprint:"))
        .map(str::to_ascii_uppercase)
}
