//! Swarms: peers that share content, introduced to each other a few at a time (see
//! docs/protocol.md, "Swarms"). A swarm is named by its content id — a BLAKE3 root, 64
//! lowercase hex digits — so that the same bytes meet under the same name wherever their URL.

use serde::{Deserialize, Serialize};

use crate::{DecodeError, ErrorCode};

/// A swarm id's length: a BLAKE3 root in hex.
pub const SWARM_ID_LEN: usize = 64;

/// Checks a swarm id: 64 lowercase hex digits.
pub fn validate_swarm(id: &str) -> Result<(), DecodeError> {
    if id.len() == SWARM_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(DecodeError::new(
            ErrorCode::InvalidSwarm,
            "a swarm id is a content id: 64 lowercase hex digits",
        ))
    }
}

/// A swarm neighbour as the server introduces it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SwarmPeer<'a> {
    pub id: &'a str,
    /// It has all of the content.
    pub seed: bool,
}

/// A swarm neighbour as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SwarmMember {
    pub id: String,
    #[serde(default)]
    pub seed: bool,
}
