//! Server configuration: every field has an embedded default, so `peerweb serve` runs with no
//! file at all. The CLI layers a TOML file, environment variables and flags on top.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One entry of `RTCConfiguration.iceServers`, as handed out by `GET /api/ice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Everything `peerweb serve` can be told. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP and WebSocket listen address.
    pub listen: SocketAddr,
    /// Largest signaling frame, bytes.
    pub max_frame_bytes: usize,
    pub max_peers_per_room: usize,
    pub max_rooms_per_conn: usize,
    pub max_rooms: usize,
    pub max_conns: usize,
    /// 0 means no per-address limit.
    pub max_conns_per_ip: usize,
    pub max_msgs_per_sec: u32,
    pub msg_burst: u32,
    /// Bytes queued for one slow client before it is disconnected.
    pub max_send_queue_bytes: usize,
    pub idle_timeout_secs: u64,
    pub resume_grace_secs: u64,
    /// STUN/TURN servers handed to clients.
    pub ice_servers: Vec<IceServer>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let core = peerweb_signal::Config::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_frame_bytes: core.max_frame_bytes,
            max_peers_per_room: core.max_peers_per_room,
            max_rooms_per_conn: core.max_rooms_per_conn,
            max_rooms: core.max_rooms,
            max_conns: core.max_conns,
            max_conns_per_ip: core.max_conns_per_ip,
            max_msgs_per_sec: core.max_msgs_per_sec,
            msg_burst: core.msg_burst,
            max_send_queue_bytes: 1024 * 1024,
            idle_timeout_secs: core.idle_timeout.as_secs(),
            resume_grace_secs: core.resume_grace.as_secs(),
            ice_servers: Vec::new(),
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{field} must be at least {min}")]
    TooSmall { field: &'static str, min: u64 },
}

impl ServerConfig {
    /// Checks values that would make the server unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, u64, u64); 8] = [
            ("max_frame_bytes", self.max_frame_bytes as u64, 1024),
            ("max_peers_per_room", self.max_peers_per_room as u64, 2),
            ("max_rooms_per_conn", self.max_rooms_per_conn as u64, 1),
            ("max_rooms", self.max_rooms as u64, 1),
            ("max_conns", self.max_conns as u64, 1),
            ("max_msgs_per_sec", u64::from(self.max_msgs_per_sec), 1),
            (
                "max_send_queue_bytes",
                self.max_send_queue_bytes as u64,
                self.max_frame_bytes as u64,
            ),
            ("idle_timeout_secs", self.idle_timeout_secs, 2),
        ];
        for (field, value, min) in checks {
            if value < min {
                return Err(ConfigError::TooSmall { field, min });
            }
        }
        Ok(())
    }

    /// The signaling core's part of this configuration.
    pub fn core(&self) -> peerweb_signal::Config {
        peerweb_signal::Config {
            max_frame_bytes: self.max_frame_bytes,
            max_peers_per_room: self.max_peers_per_room,
            max_rooms_per_conn: self.max_rooms_per_conn,
            max_rooms: self.max_rooms,
            max_conns: self.max_conns,
            max_conns_per_ip: self.max_conns_per_ip,
            max_msgs_per_sec: self.max_msgs_per_sec,
            msg_burst: self.msg_burst.max(1),
            max_dropped_in_a_row: self.msg_burst.max(1).saturating_mul(2),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            resume_grace: Duration::from_secs(self.resume_grace_secs),
            ..peerweb_signal::Config::default()
        }
    }
}
