//! Server configuration: every field has an embedded default, so `peerweb serve` runs with no
//! file at all. The CLI layers a TOML file, environment variables and flags on top.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The STUN/TURN port when none is configured.
pub const DEFAULT_TURN_PORT: u16 = 3478;

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
    /// HTTP and WebSocket listen address (HTTPS with `tls_cert`/`tls_key` or ACME).
    pub listen: SocketAddr,
    /// Certificate chain and private key (PEM) for HTTPS, the signaling WebSocket and TURN
    /// over TLS; re-read on SIGHUP and when the files change.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How often the certificate files are checked for changes, seconds.
    pub tls_reload_secs: u64,
    /// Unfinished TLS handshakes one client address may hold (a stalled handshake costs a
    /// task and memory for up to 10 s); more connections from it are closed at once.
    pub tls_handshakes_per_ip: usize,
    /// A plain-HTTP listener (e.g. 0.0.0.0:80) that redirects to HTTPS and answers ACME's
    /// HTTP-01 challenge.
    pub http_redirect_listen: Option<SocketAddr>,
    /// Domains to obtain a certificate for by ACME (RFC 8555); empty: no ACME.
    pub acme_domains: Vec<String>,
    /// Contact addresses given to the ACME server (expiry notices).
    pub acme_email: Vec<String>,
    /// The ACME directory [default: Let's Encrypt's, or its staging one with `acme_staging`].
    pub acme_directory: Option<String>,
    pub acme_staging: bool,
    /// Where the ACME account key and certificates are kept across restarts.
    pub acme_cache: PathBuf,
    /// Trust only this CA (PEM) for the ACME directory's HTTPS (a private or test ACME server).
    pub acme_directory_ca: Option<PathBuf>,
    /// `tls-alpn-01` (on the HTTPS port) or `http-01` (on `http_redirect_listen`).
    pub acme_challenge: crate::acme::Challenge,
    /// Secrets that sign access tokens (the first for new ones; all are accepted, for
    /// rotation). Set: signaling and `/api/ice` need a token. Empty: the server is open.
    pub auth_secrets: Vec<String>,
    /// With `auth_secrets`: a password with which the bundled pages get short-lived tokens
    /// for one room each (`POST /api/auth`). Unset: the pages need a token from elsewhere.
    pub page_password: Option<String>,
    /// Reverse proxies (address blocks) whose `Forwarded`/`X-Forwarded-For` name the client,
    /// for per-address limits and logs; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// On SIGTERM/Ctrl-C, how long to wait for WebSocket clients to go once told to
    /// reconnect (1001), seconds.
    pub drain_secs: u64,
    /// Largest signaling frame, bytes.
    pub max_frame_bytes: usize,
    pub max_peers_per_room: usize,
    pub max_rooms_per_conn: usize,
    pub max_rooms: usize,
    /// Swarms one connection may be in.
    pub max_swarms_per_conn: usize,
    /// Peers in one swarm (swarms are not rooms: nothing is broadcast to their members).
    pub max_peers_per_swarm: usize,
    /// Swarms on the server.
    pub max_swarms: usize,
    pub max_conns: usize,
    /// 0 means no per-address limit.
    pub max_conns_per_ip: usize,
    pub max_msgs_per_sec: u32,
    pub msg_burst: u32,
    /// Connectivity reports a connection may send per minute (after a burst of twice as many).
    pub max_reports_per_min: u32,
    /// Bytes queued for one slow client before it is disconnected.
    pub max_send_queue_bytes: usize,
    pub idle_timeout_secs: u64,
    pub resume_grace_secs: u64,
    /// STUN/TURN servers handed to clients, besides the built-in one.
    pub ice_servers: Vec<IceServer>,
    /// Run the built-in STUN/TURN server.
    pub turn: bool,
    /// Swarm members may connect through TURN: `/api/ice?for=swarm` hands out the relays too.
    /// Off by default — content relayed costs the relay what it would cost the origin, so by
    /// default a pair that cannot connect directly leaves those bytes to the origin.
    pub swarm_relay: bool,
    /// The cluster bus several nodes share: a Redis URL (`redis://host:port/db`,
    /// `rediss://…`, `redis+unix:///path`). `None`: one node, its bus in memory.
    pub redis: Option<String>,
    /// The prefix of every key and channel on Redis (clusters may share one Redis).
    pub redis_prefix: String,
    /// This node's name on the bus (unique among the nodes; default: random).
    pub node_name: Option<String>,
    /// Its UDP address; by default the HTTP listen IP, port 3478.
    pub turn_listen: Option<SocketAddr>,
    /// TLS (`turns:`) address of the STUN/TURN server, e.g. 0.0.0.0:5349 or :443; needs
    /// `turn_tls_cert` and `turn_tls_key` (PEM files).
    pub turn_tls_listen: Option<SocketAddr>,
    pub turn_tls_cert: Option<PathBuf>,
    pub turn_tls_key: Option<PathBuf>,
    /// Host in `turns:` URLs, which the certificate must name (often not the HTTP host,
    /// e.g. turn.example.org); defaults to the host used for `turn:`.
    pub turn_tls_host: Option<String>,
    /// Address the relay sockets bind to and announce; defaults to the TURN listen IP.
    pub relay_ip: Option<IpAddr>,
    pub relay_min_port: u16,
    pub relay_max_port: u16,
    /// Host name or address browsers use to reach STUN/TURN; defaults to the host of the
    /// `/api/ice` request, else the TURN listen IP.
    pub turn_host: Option<String>,
    /// Shared secrets for TURN REST credentials: the first signs new ones, all are accepted
    /// (rotation). Empty: a random secret per process.
    pub turn_secrets: Vec<String>,
    pub turn_realm: String,
    /// How long credentials from `/api/ice` stay valid. An allocation cannot be refreshed
    /// past its credentials, so this bounds how long a relayed session can last.
    pub turn_credential_ttl_secs: u64,
    /// Relay to loopback peers (tests on one machine; refused by default).
    pub turn_allow_loopback_peers: bool,
    /// Peer address blocks always allowed / refused, e.g. `10.0.0.0/8`.
    pub turn_allowed_peers: Vec<String>,
    pub turn_denied_peers: Vec<String>,
    pub turn_max_allocations: usize,
    /// Allocations one credential may hold. A browser tab gets one credential per room it
    /// joins and uses it for its connection to every other member, one allocation per TURN
    /// transport offered (up to three each), so a full room needs 3 × (max_peers_per_room − 1).
    pub turn_max_allocations_per_user: usize,
    /// Bytes per second relayed for one allocation (0: no cap).
    pub turn_bandwidth_per_allocation: u64,
    /// 401/438 answers per second to one client address (burst 4x); more are dropped.
    pub turn_max_challenges_per_sec: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let core = peerweb_signal::Config::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            tls_reload_secs: 10,
            tls_handshakes_per_ip: crate::tls::HANDSHAKES_PER_IP,
            http_redirect_listen: None,
            acme_domains: Vec::new(),
            acme_email: Vec::new(),
            acme_directory: None,
            acme_staging: false,
            acme_cache: PathBuf::from("peerweb-acme"),
            acme_directory_ca: None,
            acme_challenge: crate::acme::Challenge::TlsAlpn01,
            auth_secrets: Vec::new(),
            page_password: None,
            trusted_proxies: Vec::new(),
            drain_secs: 10,
            max_frame_bytes: core.max_frame_bytes,
            max_peers_per_room: core.max_peers_per_room,
            max_rooms_per_conn: core.max_rooms_per_conn,
            max_rooms: core.max_rooms,
            max_swarms_per_conn: core.max_swarms_per_conn,
            max_peers_per_swarm: core.max_peers_per_swarm,
            max_swarms: core.max_swarms,
            max_conns: core.max_conns,
            max_conns_per_ip: core.max_conns_per_ip,
            max_msgs_per_sec: core.max_msgs_per_sec,
            msg_burst: core.msg_burst,
            max_reports_per_min: core.max_reports_per_min,
            max_send_queue_bytes: 1024 * 1024,
            idle_timeout_secs: core.idle_timeout.as_secs(),
            resume_grace_secs: core.resume_grace.as_secs(),
            ice_servers: Vec::new(),
            turn: true,
            swarm_relay: false,
            redis: None,
            redis_prefix: "pw:".to_owned(),
            node_name: None,
            turn_listen: None,
            turn_tls_listen: None,
            turn_tls_cert: None,
            turn_tls_key: None,
            turn_tls_host: None,
            relay_ip: None,
            relay_min_port: 49152,
            relay_max_port: 65535,
            turn_host: None,
            turn_secrets: Vec::new(),
            turn_realm: "peerweb".into(),
            turn_credential_ttl_secs: 12 * 3600,
            turn_allow_loopback_peers: false,
            turn_allowed_peers: Vec::new(),
            turn_denied_peers: Vec::new(),
            turn_max_allocations: 10_000,
            turn_max_allocations_per_user: 256,
            turn_bandwidth_per_allocation: 12_500_000,
            turn_max_challenges_per_sec: 20,
        }
    }
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{field} must be at least {min}")]
    TooSmall { field: &'static str, min: u64 },
    #[error("relay_min_port ({min}) is above relay_max_port ({max})")]
    RelayPorts { min: u16, max: u16 },
    #[error("turn_tls_listen needs turn_tls_cert and turn_tls_key, or the server's own TLS")]
    TlsFiles,
    #[error("tls_cert and tls_key go together")]
    TlsPair,
    #[error("a certificate comes from tls_cert/tls_key or from ACME (acme_domain), not both")]
    TlsTwice,
    #[error("acme_challenge http-01 needs http_redirect_listen (port 80)")]
    Http01Listener,
    #[error(
        "auth_secret must be at least {} bytes (e.g. `openssl rand -base64 48`; a comma separates two secrets)",
        crate::auth::MIN_SECRET_BYTES
    )]
    WeakSecret,
    #[error(
        "page_password needs auth_secret, and at least {} characters",
        crate::auth::MIN_PAGE_PASSWORD
    )]
    PagePassword,
    #[error(
        "acme_domain {0:?} is not a domain name an ACME server can validate (e.g. peerweb.example.org)"
    )]
    AcmeDomain(String),
    #[error("relay_ip is needed when TURN listens on the unspecified address {0}")]
    RelayIp(SocketAddr),
    #[error("{field}: {source}")]
    Peers {
        field: &'static str,
        source: peerweb_turn::policy::CidrError,
    },
}

impl ServerConfig {
    /// Checks values that would make the server unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, u64, u64); 10] = [
            ("max_frame_bytes", self.max_frame_bytes as u64, 1024),
            ("max_peers_per_room", self.max_peers_per_room as u64, 2),
            ("max_rooms_per_conn", self.max_rooms_per_conn as u64, 1),
            ("max_rooms", self.max_rooms as u64, 1),
            ("max_peers_per_swarm", self.max_peers_per_swarm as u64, 2),
            ("max_swarms", self.max_swarms as u64, 1),
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
        if self.relay_min_port > self.relay_max_port {
            return Err(ConfigError::RelayPorts {
                min: self.relay_min_port,
                max: self.relay_max_port,
            });
        }
        if let Some(l) = self.turn_addr()
            && l.ip().is_unspecified()
            && self.relay_ip.is_none()
        {
            return Err(ConfigError::RelayIp(l));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsPair);
        }
        if self.tls_cert.is_some() && !self.acme_domains.is_empty() {
            return Err(ConfigError::TlsTwice);
        }
        if self.turn_tls_listen.is_some()
            && (self.turn_tls_cert.is_none() || self.turn_tls_key.is_none())
            && !self.https()
        {
            return Err(ConfigError::TlsFiles);
        }
        if self
            .auth_secrets
            .iter()
            .any(|s| s.len() < crate::auth::MIN_SECRET_BYTES)
        {
            return Err(ConfigError::WeakSecret);
        }
        if self.page_password.as_ref().is_some_and(|p| {
            self.auth_secrets.is_empty() || p.chars().count() < crate::auth::MIN_PAGE_PASSWORD
        }) {
            return Err(ConfigError::PagePassword);
        }
        if let Some(bad) = self.acme_domains.iter().find(|d| !is_domain(d)) {
            return Err(ConfigError::AcmeDomain(bad.clone()));
        }
        if !self.acme_domains.is_empty()
            && self.acme_challenge == crate::acme::Challenge::Http01
            && self.http_redirect_listen.is_none()
        {
            return Err(ConfigError::Http01Listener);
        }
        self.peer_blocks()?;
        self.proxy_blocks()?;
        Ok(())
    }

    /// [`ServerConfig::validate`], and the files it names read as the server would read
    /// them (certificate pairs, CA files), without binding anything or calling ACME.
    pub fn check(&self) -> std::io::Result<()> {
        let invalid = |e: ConfigError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        self.validate().map_err(invalid)?;
        let stats = std::sync::Arc::default;
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            crate::tls::FileCert::load(c, k, stats())?;
        }
        if let (Some(c), Some(k)) = (&self.turn_tls_cert, &self.turn_tls_key) {
            crate::tls::FileCert::load(c, k, stats())?;
        }
        if let Some(ca) = &self.acme_directory_ca {
            std::fs::read(ca).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot read {}: {e}", ca.display()))
            })?;
        }
        Ok(())
    }

    /// Whether the web server speaks HTTPS (certificate files or ACME).
    pub fn https(&self) -> bool {
        self.tls_cert.is_some() || !self.acme_domains.is_empty()
    }

    /// The ACME client's settings, when ACME is on.
    pub fn acme(&self) -> Option<crate::acme::AcmeSettings> {
        (!self.acme_domains.is_empty()).then(|| crate::acme::AcmeSettings {
            domains: self.acme_domains.clone(),
            contact: self.acme_email.clone(),
            directory: self.acme_directory.clone().unwrap_or_else(|| {
                if self.acme_staging {
                    crate::acme::LETS_ENCRYPT_STAGING.into()
                } else {
                    crate::acme::LETS_ENCRYPT.into()
                }
            }),
            cache: self.acme_cache.clone(),
            directory_ca: self.acme_directory_ca.clone(),
            challenge: self.acme_challenge,
        })
    }

    /// Where STUN/TURN listens, or `None` when it is off.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn.then(|| {
            self.turn_listen
                .unwrap_or_else(|| SocketAddr::new(self.listen.ip(), DEFAULT_TURN_PORT))
        })
    }

    /// The allow and deny lists, parsed.
    pub(crate) fn peer_blocks(
        &self,
    ) -> Result<(Vec<peerweb_turn::Cidr>, Vec<peerweb_turn::Cidr>), ConfigError> {
        let parse = |field: &'static str, list: &[String]| {
            list.iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| ConfigError::Peers { field, source })
        };
        Ok((
            parse("turn_allowed_peers", &self.turn_allowed_peers)?,
            parse("turn_denied_peers", &self.turn_denied_peers)?,
        ))
    }

    /// The trusted proxies, parsed.
    pub(crate) fn proxy_blocks(&self) -> Result<Vec<peerweb_turn::Cidr>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ConfigError::Peers {
                field: "trusted_proxies",
                source,
            })
    }

    /// The signaling core's part of this configuration.
    pub fn core(&self) -> peerweb_signal::Config {
        peerweb_signal::Config {
            max_frame_bytes: self.max_frame_bytes,
            max_peers_per_room: self.max_peers_per_room,
            max_rooms_per_conn: self.max_rooms_per_conn,
            max_rooms: self.max_rooms,
            max_swarms_per_conn: self.max_swarms_per_conn,
            max_peers_per_swarm: self.max_peers_per_swarm,
            max_swarms: self.max_swarms,
            max_conns: self.max_conns,
            max_conns_per_ip: self.max_conns_per_ip,
            max_msgs_per_sec: self.max_msgs_per_sec,
            msg_burst: self.msg_burst.max(1),
            max_dropped_in_a_row: self.msg_burst.max(1).saturating_mul(2),
            max_reports_per_min: self.max_reports_per_min,
            report_burst: self.max_reports_per_min.saturating_mul(2).max(1),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            resume_grace: Duration::from_secs(self.resume_grace_secs),
            ..peerweb_signal::Config::default()
        }
    }
}

/// A DNS name a public ACME server could validate: two labels at least, letters, digits and
/// inner hyphens, not an address, no wildcard (TLS-ALPN-01 and HTTP-01 cannot prove one).
fn is_domain(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && !labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::is_domain;

    #[test]
    fn acme_domains_are_checked() {
        for good in ["peerweb.test", "a-b.example.org", "x1.y2.io"] {
            assert!(is_domain(good), "{good}");
        }
        for bad in [
            "localhost",
            "127.0.0.1",
            "*.example.org",
            "-a.example.org",
            "a..b",
            "under_score.test",
            "with space.test",
            "",
        ] {
            assert!(!is_domain(bad), "{bad}");
        }
    }
}
