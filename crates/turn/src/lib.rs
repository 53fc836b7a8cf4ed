//! The STUN/TURN server of peerweb as a sans-IO state machine (RFC 8489 STUN binding,
//! RFC 8656 TURN over UDP relays).
//!
//! [`Turn`] never opens a socket or reads a clock. The driver feeds it what arrives from
//! clients ([`Input::FromClient`]) and at relay sockets ([`Input::FromPeer`]), with the current
//! [`Instant`], then drains [`Turn::poll_output`] until [`Output::Timeout`]. Relay sockets are
//! the driver's: the core asks for one with [`Output::BindRelay`] and continues the Allocate
//! when told [`Input::RelayBound`].
//!
//! ```
//! use std::time::Instant;
//! use peerweb_turn::{Config, Input, Output, Transport, Turn, stun};
//!
//! let now = Instant::now();
//! let mut turn = Turn::new(Config::new(vec![b"secret".to_vec()]), [9; 32], now, 1_700_000_000);
//! let client = "198.51.100.7:40000".parse().unwrap();
//! let request = stun::Builder::new(stun::Class::Request, stun::method::BINDING, &[1; 12]).fingerprint();
//! turn.handle_input(now, Input::FromClient { transport: Transport::Udp, from: client, data: &request });
//! let Output::Transmit(t) = turn.poll_output() else { panic!() };
//! let response = stun::Message::parse(&t.data).unwrap();
//! assert_eq!(response.xor_address(stun::attr::XOR_MAPPED_ADDRESS), Some(client));
//! ```
//!
//! Credentials are the TURN REST ones coturn's `use-auth-secret` accepts: the username is
//! `<unix expiry>[:<id>]`, the password `base64(HMAC-SHA1(secret, username))`. Several secrets
//! may be valid at once (rotation). Expired credentials are refused, so an allocation cannot
//! be refreshed past its credentials' expiry.

pub mod client;
pub mod policy;
pub mod stun;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use sha2::Sha256;

pub use policy::{Cidr, PeerPolicy};
use stun::{Builder, Class, Message, attr, channel_data, method};

/// How a client reaches the server. TCP and TLS connections are named by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp(u64),
    Tls(u64),
}

impl Transport {
    fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A client's 5-tuple as far as the core needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// An allocation's handle, shared with the driver (which owns its relay socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocId(pub u64);

/// Server limits and timers.
#[derive(Debug, Clone)]
pub struct Config {
    pub realm: String,
    /// Shared secrets for REST credentials; any one of them may have signed a username.
    pub secrets: Vec<Vec<u8>>,
    /// Sent as SOFTWARE in responses.
    pub software: String,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    /// A nonce is stale after this long (the client retries with the new one).
    pub nonce_lifetime: Duration,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    pub max_permissions_per_allocation: usize,
    pub max_channels_per_allocation: usize,
    /// Bytes per second relayed for one allocation, both directions together (0: no cap).
    pub bandwidth_per_allocation: u64,
    /// 401 and 438 answers per second per client IP address (burst 4x); beyond, requests
    /// that would get one are dropped.
    pub max_challenges_per_sec: u32,
    /// Which peers may be relayed to.
    pub policy: PeerPolicy,
}

impl Config {
    pub fn new(secrets: Vec<Vec<u8>>) -> Self {
        Self {
            realm: "peerweb".into(),
            secrets,
            software: concat!("peerweb ", env!("CARGO_PKG_VERSION")).into(),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            max_allocations: 10_000,
            max_allocations_per_user: 256,
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            bandwidth_per_allocation: 0,
            max_challenges_per_sec: 20,
            policy: PeerPolicy::default(),
        }
    }
}

/// What the core has for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Transmit(Transmit),
    /// Bind a UDP relay socket for this allocation and answer with [`Input::RelayBound`].
    BindRelay {
        alloc: AllocId,
    },
    /// The allocation is gone: close its relay socket.
    CloseRelay {
        alloc: AllocId,
    },
    /// Nothing more until this instant; then feed [`Input::Timeout`].
    Timeout(Instant),
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub via: Via,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Which socket sends a [`Transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The listener (or TCP/TLS connection) the client talks to.
    Client(Transport),
    /// The allocation's relay socket.
    Relay(AllocId),
}

/// What happened on the driver's side.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    FromClient {
        transport: Transport,
        from: SocketAddr,
        data: &'a [u8],
    },
    FromPeer {
        alloc: AllocId,
        from: SocketAddr,
        data: &'a [u8],
    },
    /// The relay socket asked for by [`Output::BindRelay`] is bound at this address, or
    /// could not be bound.
    RelayBound {
        alloc: AllocId,
        addr: Option<SocketAddr>,
    },
    /// A TCP/TLS client connection closed: its allocation goes with it.
    ClientClosed {
        transport: Transport,
    },
    Timeout,
}

/// Counters and gauges for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations: usize,
    pub permissions: usize,
    pub channels: usize,
    pub allocations_total: u64,
    pub bytes_to_peers: u64,
    pub packets_to_peers: u64,
    pub bytes_to_clients: u64,
    pub packets_to_clients: u64,
    pub binding_requests: u64,
    pub auth_failures: u64,
    pub stale_nonces: u64,
    pub refused_peer: u64,
    pub refused_quota: u64,
    pub refused_bandwidth: u64,
    pub refused_rate: u64,
    pub no_permission: u64,
}

#[derive(Debug)]
struct Allocation {
    client: Client,
    user: String,
    relay: SocketAddr,
    expires: Instant,
    /// The Allocate transaction and its success response, for retransmissions.
    created_by: [u8; 12],
    response: Vec<u8>,
    perms: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    peer_channel: HashMap<SocketAddr, u16>,
    tokens: u64,
    tokens_at: Instant,
}

impl Allocation {
    fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.perms.get(&ip).is_some_and(|t| *t > now)
    }
}

#[derive(Debug)]
struct Pending {
    client: Client,
    user: String,
    key: Key,
    tid: [u8; 12],
    lifetime: Duration,
}

#[derive(Debug)]
struct Bucket {
    milli: u64,
    at: Instant,
}

const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// RFC 8489 §9.2: the nonce cookie announcing security features, here "password
/// algorithms" (the first of 24 feature bits, base64 `gAAA`).
const NONCE_COOKIE: &str = "obMatJos2gAAA";
/// PASSWORD-ALGORITHMS as offered in every 401: SHA-256 first, then MD5, no parameters.
const PASSWORD_ALGORITHMS: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];

/// The key a request was authenticated with, and whether it used MESSAGE-INTEGRITY-SHA256
/// (then so does the answer).
#[derive(Debug, Clone)]
struct Key {
    bytes: Vec<u8>,
    sha256: bool,
}
/// Client addresses tracked for the 401 rate limit.
const MAX_CHALLENGE_ADDRS: usize = 100_000;

/// The STUN/TURN server core. See the crate docs.
#[derive(Debug)]
pub struct Turn {
    cfg: Config,
    start: Instant,
    start_unix: u64,
    nonce_key: [u8; 32],
    allocs: HashMap<AllocId, Allocation>,
    by_client: HashMap<Client, AllocId>,
    pending: HashMap<AllocId, Pending>,
    per_user: HashMap<String, usize>,
    challenges: HashMap<IpAddr, Bucket>,
    next_alloc: u64,
    out: VecDeque<Output>,
    next_sweep: Instant,
    stats: Stats,
}

/// The outcome of checking a request's credentials.
enum Auth {
    Ok {
        user: String,
        key: Key,
    },
    /// An answer (401/438/400) was queued or the request dropped.
    Answered,
}

impl Turn {
    /// `seed` keys the nonces; `now`/`unix_now` tie the monotonic clock to wall time (REST
    /// usernames carry a Unix expiry).
    pub fn new(cfg: Config, seed: [u8; 32], now: Instant, unix_now: u64) -> Self {
        Self {
            cfg,
            start: now,
            start_unix: unix_now,
            nonce_key: seed,
            allocs: HashMap::new(),
            by_client: HashMap::new(),
            pending: HashMap::new(),
            per_user: HashMap::new(),
            challenges: HashMap::new(),
            next_alloc: 1,
            out: VecDeque::new(),
            next_sweep: now + SWEEP_EVERY,
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            allocations: self.allocs.len(),
            permissions: self.allocs.values().map(|a| a.perms.len()).sum(),
            channels: self.allocs.values().map(|a| a.channels.len()).sum(),
            ..self.stats
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        self.out
            .pop_front()
            .unwrap_or(Output::Timeout(self.next_sweep))
    }

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::FromClient {
                transport,
                from,
                data,
            } => self.on_client_packet(
                now,
                Client {
                    transport,
                    addr: from,
                },
                data,
            ),
            Input::FromPeer { alloc, from, data } => self.on_peer_packet(now, alloc, from, data),
            Input::RelayBound { alloc, addr } => self.relay_bound(now, alloc, addr),
            Input::ClientClosed { transport } => {
                let gone: Vec<AllocId> = self
                    .by_client
                    .iter()
                    .filter(|(c, _)| c.transport == transport)
                    .map(|(_, id)| *id)
                    .collect();
                for id in gone {
                    self.remove(id);
                }
                self.pending.retain(|_, p| p.client.transport != transport);
            }
            Input::Timeout => {
                if now >= self.next_sweep {
                    self.sweep(now);
                    self.next_sweep = now + SWEEP_EVERY;
                }
            }
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.start_unix + now.saturating_duration_since(self.start).as_secs()
    }

    fn on_client_packet(&mut self, now: Instant, client: Client, data: &[u8]) {
        if channel_data::is_channel_data(data) {
            return self.channel_data_from_client(now, client, data);
        }
        let Ok(msg) = Message::parse(data) else {
            return;
        };
        match (msg.class, msg.method) {
            (Class::Request, m) => self.request(now, client, &msg, m),
            (Class::Indication, method::SEND) => self.send_indication(now, client, &msg),
            // Responses and other indications are not for a server.
            _ => {}
        }
    }

    fn request(&mut self, now: Instant, client: Client, msg: &Message<'_>, m: u16) {
        let unknown = msg.unknown_required();
        if !unknown.is_empty() {
            let mut list = Vec::with_capacity(unknown.len() * 2);
            for t in unknown.iter().take(16) {
                list.extend_from_slice(&t.to_be_bytes());
            }
            let mut b = self.error(msg, 420, "Unknown Attribute");
            b.attr(attr::UNKNOWN_ATTRIBUTES, &list);
            return self.reply(client, b.fingerprint());
        }
        if m == method::BINDING {
            self.stats.binding_requests += 1;
            let mut b = Builder::new(Class::Success, method::BINDING, &msg.tid);
            b.xor_address(attr::XOR_MAPPED_ADDRESS, client.addr)
                .attr(attr::SOFTWARE, self.cfg.software.as_bytes());
            return self.reply(client, b.fingerprint());
        }
        if !matches!(
            m,
            method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND
        ) {
            let b = self.error(msg, 400, "Bad Request: unknown method");
            return self.reply(client, b.fingerprint());
        }
        let (user, key) = match self.authenticate(now, client, msg) {
            Auth::Ok { user, key } => (user, key),
            Auth::Answered => return,
        };
        match m {
            method::ALLOCATE => self.allocate(client, msg, user, key),
            method::REFRESH => self.refresh(now, client, msg, &user, &key),
            method::CREATE_PERMISSION => self.create_permission(now, client, msg, &user, &key),
            _ => self.channel_bind(now, client, msg, &user, &key),
        }
    }

    fn error(&self, msg: &Message<'_>, code: u16, reason: &str) -> Builder {
        let mut b = Builder::new(Class::Error, msg.method, &msg.tid);
        b.error(code, reason)
            .attr(attr::SOFTWARE, self.cfg.software.as_bytes());
        b
    }

    /// An error answer to an authenticated request: with MESSAGE-INTEGRITY.
    fn error_auth(&mut self, client: Client, msg: &Message<'_>, key: &Key, code: u16, why: &str) {
        let mut b = self.error(msg, code, why);
        b.sign(&key.bytes, key.sha256);
        self.reply(client, b.fingerprint());
    }

    /// A success answer to an authenticated request: `extra` attributes, SOFTWARE, then
    /// the integrity attribute the request used.
    fn success_auth(
        &mut self,
        client: Client,
        msg: &Message<'_>,
        key: &Key,
        extra: impl FnOnce(&mut Builder),
    ) {
        let mut b = Builder::new(Class::Success, msg.method, &msg.tid);
        extra(&mut b);
        b.attr(attr::SOFTWARE, self.cfg.software.as_bytes())
            .sign(&key.bytes, key.sha256);
        self.reply(client, b.fingerprint());
    }

    /// Answers 443 or 403 (and counts it) unless every peer matches the relay's family and
    /// passes the policy; `exact` checks ports too (ChannelBind knows them, a permission
    /// does not).
    fn check_peers(
        &mut self,
        client: Client,
        msg: &Message<'_>,
        key: &Key,
        relay: SocketAddr,
        peers: &[SocketAddr],
        exact: bool,
    ) -> bool {
        if peers.iter().any(|p| p.is_ipv4() != relay.is_ipv4()) {
            self.error_auth(client, msg, key, 443, "Peer Address Family Mismatch");
            return false;
        }
        let policy = &self.cfg.policy;
        let allowed = |p: &SocketAddr| {
            if exact {
                policy.allows(*p)
            } else {
                policy.allows_ip(p.ip())
            }
        };
        if !peers.iter().all(allowed) {
            self.stats.refused_peer += 1;
            self.error_auth(client, msg, key, 403, "Forbidden: peer address not allowed");
            return false;
        }
        true
    }

    fn reply(&mut self, client: Client, data: Vec<u8>) {
        self.out.push_back(Output::Transmit(Transmit {
            via: Via::Client(client.transport),
            to: client.addr,
            data,
        }));
    }

    // ---- authentication -------------------------------------------------------------

    fn nonce(&self, now: Instant) -> String {
        let expiry = now.saturating_duration_since(self.start) + self.cfg.nonce_lifetime;
        let expiry = expiry.as_secs().to_be_bytes();
        let tag = blake3::keyed_hash(&self.nonce_key, &expiry);
        let mut raw = expiry.to_vec();
        raw.extend_from_slice(&tag.as_bytes()[..12]);
        format!(
            "{NONCE_COOKIE}{}",
            data_encoding::BASE64URL_NOPAD.encode(&raw)
        )
    }

    fn nonce_valid(&self, now: Instant, nonce: &str) -> bool {
        let Some(body) = nonce.strip_prefix(NONCE_COOKIE) else {
            return false;
        };
        let Ok(raw) = data_encoding::BASE64URL_NOPAD.decode(body.as_bytes()) else {
            return false;
        };
        if raw.len() != 20 {
            return false;
        }
        let tag = blake3::keyed_hash(&self.nonce_key, &raw[..8]);
        if tag.as_bytes()[..12] != raw[8..] {
            return false;
        }
        let mut e = [0u8; 8];
        e.copy_from_slice(&raw[..8]);
        now.saturating_duration_since(self.start).as_secs() < u64::from_be_bytes(e)
    }

    /// Spends one 401/438 from the client address's allowance.
    fn may_challenge(&mut self, now: Instant, ip: IpAddr) -> bool {
        let rate = u64::from(self.cfg.max_challenges_per_sec);
        let cap = rate * 4 * 1000;
        if self.challenges.len() >= MAX_CHALLENGE_ADDRS && !self.challenges.contains_key(&ip) {
            // A flood from many (likely spoofed) addresses: answer none of the new ones.
            self.stats.refused_rate += 1;
            return false;
        }
        let b = self.challenges.entry(ip).or_insert(Bucket {
            milli: cap,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_millis() as u64;
        b.milli = (b.milli + elapsed * rate).min(cap);
        b.at = now;
        if b.milli >= 1000 {
            b.milli -= 1000;
            true
        } else {
            self.stats.refused_rate += 1;
            false
        }
    }

    fn challenge(&mut self, now: Instant, client: Client, msg: &Message<'_>, code: u16, why: &str) {
        if !self.may_challenge(now, client.addr.ip()) {
            return;
        }
        let nonce = self.nonce(now);
        let mut b = self.error(msg, code, why);
        b.attr(attr::REALM, self.cfg.realm.as_bytes())
            .attr(attr::NONCE, nonce.as_bytes())
            .attr(attr::PASSWORD_ALGORITHMS, &PASSWORD_ALGORITHMS);
        self.reply(client, b.fingerprint());
    }

    /// The password algorithm the request chose (RFC 8489 §9.2.4): MD5 when it names none;
    /// `None` when its choice is malformed, unknown, or its PASSWORD-ALGORITHMS is not the
    /// list this server sent (a bid-down attempt).
    fn password_algorithm(msg: &Message<'_>) -> Option<bool> {
        match (
            msg.get(attr::PASSWORD_ALGORITHM),
            msg.get(attr::PASSWORD_ALGORITHMS),
        ) {
            (None, None) => Some(false),
            (Some(a), Some(list)) if list == PASSWORD_ALGORITHMS => match a.get(..4)? {
                [0, 1, 0, 0] => Some(false),
                [0, 2, 0, 0] => Some(true),
                _ => None,
            },
            _ => None,
        }
    }

    fn authenticate(&mut self, now: Instant, client: Client, msg: &Message<'_>) -> Auth {
        if !msg.has_integrity() {
            self.challenge(now, client, msg, 401, "Unauthorized");
            return Auth::Answered;
        }
        let (Some(user), Some(realm), Some(nonce)) = (
            msg.text(attr::USERNAME),
            msg.text(attr::REALM),
            msg.text(attr::NONCE),
        ) else {
            let b = self.error(msg, 400, "Bad Request: USERNAME, REALM and NONCE needed");
            self.reply(client, b.fingerprint());
            return Auth::Answered;
        };
        if !self.nonce_valid(now, nonce) {
            self.stats.stale_nonces += 1;
            self.challenge(now, client, msg, 438, "Stale Nonce");
            return Auth::Answered;
        }
        if realm != self.cfg.realm {
            self.stats.auth_failures += 1;
            self.challenge(now, client, msg, 401, "Unauthorized: wrong realm");
            return Auth::Answered;
        }
        let Some(sha256_password) = Self::password_algorithm(msg) else {
            let b = self.error(
                msg,
                400,
                "Bad Request: PASSWORD-ALGORITHM(S) not as offered",
            );
            self.reply(client, b.fingerprint());
            return Auth::Answered;
        };
        let expiry = user.split(':').next().and_then(|e| e.parse::<u64>().ok());
        match expiry {
            Some(e) if e > self.unix(now) => {}
            _ => {
                self.stats.auth_failures += 1;
                self.challenge(now, client, msg, 401, "Unauthorized: credentials expired");
                return Auth::Answered;
            }
        }
        // With both integrity attributes present, the SHA-256 one is the one that counts.
        let sha256 = msg.has_integrity_sha256();
        for secret in &self.cfg.secrets {
            let password = rest_password(secret, user);
            let bytes = if sha256_password {
                long_term_key_sha256(user, &self.cfg.realm, &password).to_vec()
            } else {
                long_term_key(user, &self.cfg.realm, &password).to_vec()
            };
            let ok = if sha256 {
                msg.verify_integrity_sha256(&bytes)
            } else {
                msg.verify_integrity(&bytes)
            };
            if ok {
                return Auth::Ok {
                    user: user.to_owned(),
                    key: Key { bytes, sha256 },
                };
            }
        }
        self.stats.auth_failures += 1;
        self.challenge(now, client, msg, 401, "Unauthorized");
        Auth::Answered
    }

    // ---- allocations ----------------------------------------------------------------

    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let requested = msg
            .u32(attr::LIFETIME)
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.cfg.default_lifetime);
        requested
            .min(self.cfg.max_lifetime)
            .max(self.cfg.default_lifetime)
    }

    fn allocate(&mut self, client: Client, msg: &Message<'_>, user: String, key: Key) {
        if let Some(id) = self.by_client.get(&client) {
            let a = &self.allocs[id];
            if a.created_by == msg.tid {
                let again = a.response.clone();
                return self.reply(client, again);
            }
            return self.error_auth(client, msg, &key, 437, "Allocation Mismatch");
        }
        if let Some(p) = self.pending.values().find(|p| p.client == client) {
            if p.tid != msg.tid {
                self.error_auth(client, msg, &key, 437, "Allocation Mismatch");
            }
            return;
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            None => {
                return self.error_auth(
                    client,
                    msg,
                    &key,
                    400,
                    "Bad Request: no REQUESTED-TRANSPORT",
                );
            }
            Some(v) if v.first() != Some(&17) => {
                return self.error_auth(client, msg, &key, 442, "Unsupported Transport Protocol");
            }
            Some(_) => {}
        }
        if let Some(f) = msg.get(attr::REQUESTED_ADDRESS_FAMILY)
            && f.first() != Some(&1)
        {
            return self.error_auth(client, msg, &key, 440, "Address Family not Supported");
        }
        if *self.per_user.get(&user).unwrap_or(&0) >= self.cfg.max_allocations_per_user {
            self.stats.refused_quota += 1;
            return self.error_auth(client, msg, &key, 486, "Allocation Quota Reached");
        }
        if self.allocs.len() + self.pending.len() >= self.cfg.max_allocations {
            self.stats.refused_quota += 1;
            return self.error_auth(client, msg, &key, 508, "Insufficient Capacity");
        }
        let id = AllocId(self.next_alloc);
        self.next_alloc += 1;
        *self.per_user.entry(user.clone()).or_insert(0) += 1;
        let lifetime = self.lifetime(msg);
        self.pending.insert(
            id,
            Pending {
                client,
                user,
                key,
                tid: msg.tid,
                lifetime,
            },
        );
        self.out.push_back(Output::BindRelay { alloc: id });
    }

    fn relay_bound(&mut self, now: Instant, id: AllocId, addr: Option<SocketAddr>) {
        let Some(p) = self.pending.remove(&id) else {
            // The client went away meanwhile.
            if addr.is_some() {
                self.out.push_back(Output::CloseRelay { alloc: id });
            }
            return;
        };
        let Some(relay) = addr else {
            self.release_user(&p.user);
            let mut b = Builder::new(Class::Error, method::ALLOCATE, &p.tid);
            b.error(508, "Insufficient Capacity")
                .attr(attr::SOFTWARE, self.cfg.software.as_bytes())
                .sign(&p.key.bytes, p.key.sha256);
            return self.reply(p.client, b.fingerprint());
        };
        let mut b = Builder::new(Class::Success, method::ALLOCATE, &p.tid);
        b.xor_address(attr::XOR_RELAYED_ADDRESS, relay)
            .u32(attr::LIFETIME, p.lifetime.as_secs() as u32)
            .xor_address(attr::XOR_MAPPED_ADDRESS, p.client.addr)
            .attr(attr::SOFTWARE, self.cfg.software.as_bytes())
            .sign(&p.key.bytes, p.key.sha256);
        let response = b.fingerprint();
        self.stats.allocations_total += 1;
        self.by_client.insert(p.client, id);
        self.allocs.insert(
            id,
            Allocation {
                client: p.client,
                user: p.user,
                relay,
                expires: now + p.lifetime,
                created_by: p.tid,
                response: response.clone(),
                perms: HashMap::new(),
                channels: HashMap::new(),
                peer_channel: HashMap::new(),
                tokens: self.cfg.bandwidth_per_allocation,
                tokens_at: now,
            },
        );
        self.reply(p.client, response);
    }

    /// The client's allocation, after checking it was made with the same username.
    fn own_alloc(
        &mut self,
        client: Client,
        msg: &Message<'_>,
        user: &str,
        key: &Key,
    ) -> Option<AllocId> {
        let Some(&id) = self.by_client.get(&client) else {
            self.error_auth(client, msg, key, 437, "Allocation Mismatch");
            return None;
        };
        if self.allocs[&id].user != user {
            self.error_auth(client, msg, key, 441, "Wrong Credentials");
            return None;
        }
        Some(id)
    }

    fn refresh(&mut self, now: Instant, client: Client, msg: &Message<'_>, user: &str, key: &Key) {
        let Some(id) = self.own_alloc(client, msg, user, key) else {
            return;
        };
        let lifetime = if msg.u32(attr::LIFETIME) == Some(0) {
            self.remove(id);
            Duration::ZERO
        } else {
            let l = self.lifetime(msg);
            if let Some(a) = self.allocs.get_mut(&id) {
                a.expires = now + l;
            }
            l
        };
        self.success_auth(client, msg, key, |b| {
            b.u32(attr::LIFETIME, lifetime.as_secs() as u32);
        });
    }

    fn create_permission(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        user: &str,
        key: &Key,
    ) {
        let Some(id) = self.own_alloc(client, msg, user, key) else {
            return;
        };
        let peers = match msg.xor_addresses(attr::XOR_PEER_ADDRESS) {
            Some(p) if !p.is_empty() => p,
            _ => {
                return self.error_auth(
                    client,
                    msg,
                    key,
                    400,
                    "Bad Request: XOR-PEER-ADDRESS needed",
                );
            }
        };
        let relay = self.allocs[&id].relay;
        if !self.check_peers(client, msg, key, relay, &peers, false) {
            return;
        }
        let lifetime = self.cfg.permission_lifetime;
        let max = self.cfg.max_permissions_per_allocation;
        let Some(a) = self.allocs.get_mut(&id) else {
            return;
        };
        let new = peers
            .iter()
            .filter(|p| !a.perms.contains_key(&p.ip()))
            .count();
        if a.perms.len() + new > max {
            self.stats.refused_quota += 1;
            return self.error_auth(
                client,
                msg,
                key,
                508,
                "Insufficient Capacity: too many permissions",
            );
        }
        for p in &peers {
            a.perms.insert(p.ip(), now + lifetime);
        }
        self.success_auth(client, msg, key, |_| {});
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        user: &str,
        key: &Key,
    ) {
        let Some(id) = self.own_alloc(client, msg, user, key) else {
            return;
        };
        let ch = msg
            .get(attr::CHANNEL_NUMBER)
            .filter(|v| v.len() == 4)
            .map(|v| u16::from_be_bytes([v[0], v[1]]));
        let (Some(ch), Some(peer)) = (ch, msg.xor_address(attr::XOR_PEER_ADDRESS)) else {
            return self.error_auth(
                client,
                msg,
                key,
                400,
                "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS needed",
            );
        };
        if !(channel_data::MIN..=channel_data::MAX).contains(&ch) {
            return self.error_auth(
                client,
                msg,
                key,
                400,
                "Bad Request: channel number out of range",
            );
        }
        let relay = self.allocs[&id].relay;
        if !self.check_peers(client, msg, key, relay, &[peer], true) {
            return;
        }
        let (perm_life, chan_life) = (self.cfg.permission_lifetime, self.cfg.channel_lifetime);
        let max = self.cfg.max_channels_per_allocation;
        let Some(a) = self.allocs.get_mut(&id) else {
            return;
        };
        let clash_ch = a.channels.get(&ch).is_some_and(|(p, _)| *p != peer);
        let clash_peer = a.peer_channel.get(&peer).is_some_and(|c| *c != ch);
        if clash_ch || clash_peer {
            return self.error_auth(
                client,
                msg,
                key,
                400,
                "Bad Request: channel or peer bound otherwise",
            );
        }
        if !a.channels.contains_key(&ch) && a.channels.len() >= max {
            self.stats.refused_quota += 1;
            return self.error_auth(
                client,
                msg,
                key,
                508,
                "Insufficient Capacity: too many channels",
            );
        }
        a.channels.insert(ch, (peer, now + chan_life));
        a.peer_channel.insert(peer, ch);
        a.perms.insert(peer.ip(), now + perm_life);
        self.success_auth(client, msg, key, |_| {});
    }

    // ---- data -----------------------------------------------------------------------

    /// Spends `bytes` of the allocation's bandwidth; false when over the cap.
    fn spend(cfg: &Config, a: &mut Allocation, now: Instant, bytes: usize) -> bool {
        let rate = cfg.bandwidth_per_allocation;
        if rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(a.tokens_at);
        a.tokens =
            (a.tokens + (elapsed.as_micros() as u64).saturating_mul(rate) / 1_000_000).min(rate);
        a.tokens_at = now;
        if a.tokens >= bytes as u64 {
            a.tokens -= bytes as u64;
            true
        } else {
            false
        }
    }

    fn relay_to_peer(&mut self, now: Instant, id: AllocId, peer: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocs.get_mut(&id) else {
            return;
        };
        if !a.permits(peer.ip(), now) {
            self.stats.no_permission += 1;
            return;
        }
        // Permissions are per IP; the server's own addresses are only reachable on relay ports.
        if !self.cfg.policy.allows(peer) {
            self.stats.refused_peer += 1;
            return;
        }
        if !Self::spend(&self.cfg, a, now, data.len()) {
            self.stats.refused_bandwidth += 1;
            return;
        }
        self.stats.bytes_to_peers += data.len() as u64;
        self.stats.packets_to_peers += 1;
        self.out.push_back(Output::Transmit(Transmit {
            via: Via::Relay(id),
            to: peer,
            data: data.to_vec(),
        }));
    }

    fn channel_data_from_client(&mut self, now: Instant, client: Client, data: &[u8]) {
        let Some((ch, payload)) = channel_data::parse(data) else {
            return;
        };
        let Some(&id) = self.by_client.get(&client) else {
            return;
        };
        let peer = match self.allocs[&id].channels.get(&ch) {
            Some((peer, exp)) if *exp > now => *peer,
            _ => return,
        };
        self.relay_to_peer(now, id, peer, payload);
    }

    fn send_indication(&mut self, now: Instant, client: Client, msg: &Message<'_>) {
        let Some(&id) = self.by_client.get(&client) else {
            return;
        };
        let (Some(peer), Some(data)) =
            (msg.xor_address(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
        else {
            return;
        };
        self.relay_to_peer(now, id, peer, data);
    }

    fn on_peer_packet(&mut self, now: Instant, id: AllocId, from: SocketAddr, data: &[u8]) {
        let Some(a) = self.allocs.get_mut(&id) else {
            return;
        };
        if !a.permits(from.ip(), now) {
            self.stats.no_permission += 1;
            return;
        }
        if !Self::spend(&self.cfg, a, now, data.len()) {
            self.stats.refused_bandwidth += 1;
            return;
        }
        let client = a.client;
        let bytes = match a.peer_channel.get(&from) {
            Some(ch) if a.channels.get(ch).is_some_and(|(_, t)| *t > now) => {
                channel_data::encode(*ch, data, client.transport.is_stream())
            }
            _ => {
                let tid = indication_tid(id, self.stats.packets_to_clients);
                let mut b = Builder::new(Class::Indication, method::DATA, &tid);
                b.xor_address(attr::XOR_PEER_ADDRESS, from)
                    .attr(attr::DATA, data);
                b.finish()
            }
        };
        self.stats.bytes_to_clients += data.len() as u64;
        self.stats.packets_to_clients += 1;
        self.reply(client, bytes);
    }

    // ---- upkeep ---------------------------------------------------------------------

    fn release_user(&mut self, user: &str) {
        if let Some(n) = self.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(user);
            }
        }
    }

    fn remove(&mut self, id: AllocId) {
        if let Some(a) = self.allocs.remove(&id) {
            self.by_client.remove(&a.client);
            self.release_user(&a.user);
            self.out.push_back(Output::CloseRelay { alloc: id });
        }
    }

    fn sweep(&mut self, now: Instant) {
        let mut expired: Vec<AllocId> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort();
        for id in expired {
            self.remove(id);
        }
        for a in self.allocs.values_mut() {
            a.perms.retain(|_, t| *t > now);
            let before = a.channels.len();
            a.channels.retain(|_, (_, t)| *t > now);
            if a.channels.len() != before {
                let live: Vec<SocketAddr> = a.channels.values().map(|(p, _)| *p).collect();
                a.peer_channel.retain(|p, _| live.contains(p));
            }
        }
        // An address idle this long has its full allowance again.
        self.challenges
            .retain(|_, b| now.saturating_duration_since(b.at) < Duration::from_secs(10));
    }
}

/// A transaction id for a Data indication: unique per allocation and packet.
fn indication_tid(id: AllocId, n: u64) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..4].copy_from_slice(&(id.0 as u32).to_be_bytes());
    t[4..].copy_from_slice(&n.to_be_bytes());
    t
}

/// The TURN REST password for `username` under `secret`: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    data_encoding::BASE64.encode(&stun::hmac_sha1_of(secret, username.as_bytes()))
}

/// Long-term credential key with the SHA-256 password algorithm:
/// SHA-256(username ":" realm ":" password).
pub fn long_term_key_sha256(username: &str, realm: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Long-term credential key: MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests;
