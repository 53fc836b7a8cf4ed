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

/// Most bytes one `swarm-bytes` report may give per source (1 TiB): more than any client moves
/// between two reports, far below what would overflow a total.
pub const MAX_SWARM_REPORT_BYTES: u64 = 1 << 40;

/// Bytes of a swarm's content by source: from the origin over HTTP, from peers, and uploaded
/// to peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SwarmBytes {
    pub http: u64,
    pub p2p: u64,
    pub up: u64,
}

impl SwarmBytes {
    pub fn add(&mut self, other: SwarmBytes) {
        self.http = self.http.saturating_add(other.http);
        self.p2p = self.p2p.saturating_add(other.p2p);
        self.up = self.up.saturating_add(other.up);
    }

    pub fn is_zero(&self) -> bool {
        *self == SwarmBytes::default()
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
