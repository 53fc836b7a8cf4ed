//! A TURN client (RFC 8656) as a sans-IO state machine, on the same codec as the server.
//!
//! One [`Client`] is one allocation on one server over one transport (the caller owns the
//! UDP socket or TCP/TLS stream and does the framing with [`crate::stun::stream_frame_len`]).
//! It authenticates with long-term credentials (the 401 round, stale nonces), keeps the
//! allocation, permissions and channel bindings refreshed from the `now` passed in, and wraps
//! application data to a peer as ChannelData once a channel is bound (Send indications
//! before). Requests are retransmitted over UDP.
//!
//! ```
//! use std::time::Instant;
//! use peerweb_turn::client::{Client, Transport};
//!
//! let now = Instant::now();
//! let server = "192.0.2.1:3478".parse().unwrap();
//! let mut c = Client::new(now, server, Transport::Udp, "user", "pass", 7);
//! // The first Allocate goes out at once, without credentials (the server answers 401).
//! let first = c.poll_transmit().unwrap();
//! assert_eq!(first[0..2], [0x00, 0x03]);
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::long_term_key;
use crate::stun::{Builder, Class, Message, attr, channel_data, method};

/// How the client reaches the server (decides retransmission and ChannelData padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// TCP or TLS: reliable, so no retransmissions; ChannelData padded to 4 bytes.
    Stream,
}

/// What the allocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server allocated `relayed`; it sees us at `mapped` (a server-reflexive address).
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
    },
    /// The allocation failed or was lost; the client is done.
    Failed(String),
}

/// Requested lifetime of the allocation; refreshed at half of what the server grants.
const LIFETIME: u32 = 600;
/// Channel bindings last 10 minutes and permissions 5; both are refreshed after 4.
const REFRESH_BINDING: Duration = Duration::from_secs(240);
/// First retransmission timeout over UDP; doubled each time, 6 sends in all.
const RTO: Duration = Duration::from_millis(250);
const MAX_SENDS: u32 = 6;
/// Over TCP/TLS nothing is resent; a request unanswered this long has failed.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Peers (channels) per allocation.
pub const MAX_PEERS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Req {
    Allocate,
    Refresh,
    Bind(u16),
}

#[derive(Debug)]
struct Pending {
    req: Req,
    bytes: Vec<u8>,
    next: Instant,
    sends: u32,
    /// Whether a 438 (stale nonce) retry was already made.
    retried: bool,
}

#[derive(Debug)]
struct Channel {
    number: u16,
    bound: bool,
    refresh_at: Instant,
}

#[derive(Debug)]
pub struct Client {
    server: SocketAddr,
    transport: Transport,
    username: String,
    password: String,
    realm: String,
    nonce: String,
    key: Option<[u8; 16]>,
    relayed: Option<SocketAddr>,
    refresh_at: Option<Instant>,
    failed: bool,
    pending: HashMap<[u8; 12], Pending>,
    channels: HashMap<SocketAddr, Channel>,
    by_number: HashMap<u16, SocketAddr>,
    next_channel: u16,
    tid: u64,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
}

impl Client {
    /// Starts allocating at once. `seed` makes transaction ids unique per client.
    pub fn new(
        now: Instant,
        server: SocketAddr,
        transport: Transport,
        username: &str,
        password: &str,
        seed: u64,
    ) -> Self {
        let mut c = Client {
            server,
            transport,
            username: username.to_owned(),
            password: password.to_owned(),
            realm: String::new(),
            nonce: String::new(),
            key: None,
            relayed: None,
            refresh_at: None,
            failed: false,
            pending: HashMap::new(),
            channels: HashMap::new(),
            by_number: HashMap::new(),
            next_channel: channel_data::MIN,
            tid: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            out: VecDeque::new(),
            events: VecDeque::new(),
        };
        c.request(now, Req::Allocate);
        c
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.relayed
    }

    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Whether a packet from the server is for this client (a response to one of its
    /// requests, a Data indication or ChannelData on a bound channel).
    pub fn accepts(&self, buf: &[u8]) -> bool {
        if let Some((ch, _)) = channel_data::parse(buf) {
            return self.by_number.contains_key(&ch);
        }
        match Message::parse(buf) {
            Ok(m) => {
                self.pending.contains_key(&m.tid)
                    || (m.class == Class::Indication && m.method == method::DATA)
            }
            Err(_) => false,
        }
    }

    /// A packet from the server. Returns relayed application data: (peer, bytes).
    pub fn handle_input<'a>(
        &mut self,
        now: Instant,
        buf: &'a [u8],
    ) -> Option<(SocketAddr, &'a [u8])> {
        if let Some((ch, data)) = channel_data::parse(buf) {
            return self.by_number.get(&ch).map(|peer| (*peer, data));
        }
        let m = Message::parse(buf).ok()?;
        if m.class == Class::Indication && m.method == method::DATA {
            let peer = m.xor_address(attr::XOR_PEER_ADDRESS)?;
            let data = m.get(attr::DATA)?;
            return Some((peer, data));
        }
        let p = self.pending.remove(&m.tid)?;
        // Responses to authenticated requests must carry a valid MESSAGE-INTEGRITY.
        if let Some(key) = self.key
            && m.has_integrity()
            && !m.verify_integrity(&key)
        {
            self.pending.insert(m.tid, p);
            return None;
        }
        match m.class {
            Class::Success => self.on_success(now, p.req, &m),
            Class::Error => self.on_error(now, p, &m),
            _ => {}
        }
        None
    }

    fn on_success(&mut self, now: Instant, req: Req, m: &Message<'_>) {
        match req {
            Req::Allocate => {
                let Some(relayed) = m.xor_address(attr::XOR_RELAYED_ADDRESS) else {
                    return self.fail("allocate success without a relayed address".into());
                };
                self.relayed = Some(relayed);
                let life = m.u32(attr::LIFETIME).unwrap_or(LIFETIME);
                self.refresh_at = Some(now + Duration::from_secs(u64::from(life / 2).max(30)));
                self.events.push_back(Event::Allocated {
                    relayed,
                    mapped: m.xor_address(attr::XOR_MAPPED_ADDRESS),
                });
            }
            Req::Refresh => {
                let life = m.u32(attr::LIFETIME).unwrap_or(LIFETIME);
                self.refresh_at = Some(now + Duration::from_secs(u64::from(life / 2).max(30)));
            }
            Req::Bind(number) => {
                if let Some(peer) = self.by_number.get(&number)
                    && let Some(c) = self.channels.get_mut(peer)
                {
                    c.bound = true;
                    c.refresh_at = now + REFRESH_BINDING;
                }
            }
        }
    }

    fn on_error(&mut self, now: Instant, p: Pending, m: &Message<'_>) {
        let code = m
            .get(attr::ERROR_CODE)
            .and_then(|v| Some(u16::from(*v.get(2)?) * 100 + u16::from(*v.get(3)?)))
            .unwrap_or(0);
        let first_auth = code == 401 && self.key.is_none();
        if (first_auth || code == 438)
            && !p.retried
            && let (Some(realm), Some(nonce)) = (m.text(attr::REALM), m.text(attr::NONCE))
        {
            if first_auth {
                self.realm = realm.to_owned();
                self.key = Some(long_term_key(&self.username, realm, &self.password));
            }
            self.nonce = nonce.to_owned();
            let tid = self.request(now, p.req);
            if let Some(q) = self.pending.get_mut(&tid) {
                q.retried = code == 438;
            }
            return;
        }
        match p.req {
            Req::Allocate | Req::Refresh => self.fail(format!("TURN server refused: error {code}")),
            Req::Bind(number) => {
                // The peer is not allowed (e.g. 403): forget it; sends to it are dropped.
                if let Some(peer) = self.by_number.remove(&number) {
                    self.channels.remove(&peer);
                }
            }
        }
    }

    fn fail(&mut self, why: String) {
        if !self.failed {
            self.failed = true;
            self.relayed = None;
            self.pending.clear();
            self.events.push_back(Event::Failed(why));
        }
    }

    /// Application data to `peer` through the relay. Binds a channel on first use (which also
    /// installs the permission); until it is bound the data goes as a Send indication.
    pub fn send_to(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        if self.failed || self.relayed.is_none() {
            return;
        }
        if !self.channels.contains_key(&peer) {
            if self.channels.len() >= MAX_PEERS || self.next_channel > channel_data::MAX {
                return;
            }
            let number = self.next_channel;
            self.next_channel += 1;
            self.channels.insert(
                peer,
                Channel {
                    number,
                    bound: false,
                    refresh_at: now + REFRESH_BINDING,
                },
            );
            self.by_number.insert(number, peer);
            self.request(now, Req::Bind(number));
        }
        let Some(c) = self.channels.get(&peer) else {
            return;
        };
        if c.bound {
            let pad = self.transport == Transport::Stream;
            self.out
                .push_back(channel_data::encode(c.number, data, pad));
        } else {
            let tid = self.next_tid();
            let mut b = Builder::new(Class::Indication, method::SEND, &tid);
            b.xor_address(attr::XOR_PEER_ADDRESS, peer)
                .attr(attr::DATA, data);
            self.out.push_back(b.finish());
        }
    }

    /// Refreshes the allocation now, to learn whether it still exists: after a network
    /// change or a NAT that dropped its mappings, our packets reach the server from a new
    /// address, the server answers 437 (no allocation there) and the client fails.
    pub fn refresh_now(&mut self, now: Instant) {
        let refreshing = self.pending.values().any(|p| p.req == Req::Refresh);
        if self.failed || self.relayed.is_none() || refreshing {
            return;
        }
        self.refresh_at = None;
        self.request(now, Req::Refresh);
    }

    /// Releases the allocation (a Refresh with lifetime 0).
    pub fn close(&mut self, now: Instant) {
        if self.relayed.is_some() && !self.failed {
            self.request_with(now, Req::Refresh, Some(0));
            self.relayed = None;
            self.failed = true;
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if self.refresh_at.is_some_and(|t| now >= t) {
            self.refresh_at = None;
            self.request(now, Req::Refresh);
        }
        let due: Vec<u16> = self
            .channels
            .values()
            .filter(|c| c.bound && now >= c.refresh_at)
            .map(|c| c.number)
            .collect();
        for number in due {
            if let Some(peer) = self.by_number.get(&number)
                && let Some(c) = self.channels.get_mut(peer)
            {
                c.refresh_at = now + REFRESH_BINDING;
            }
            self.request(now, Req::Bind(number));
        }
        let mut lost = None;
        for p in self.pending.values_mut() {
            if now < p.next {
                continue;
            }
            if p.sends >= MAX_SENDS || self.transport == Transport::Stream {
                lost = Some(p.req);
                continue;
            }
            self.out.push_back(p.bytes.clone());
            p.sends += 1;
            p.next = now + RTO * (1 << (p.sends - 1).min(5));
        }
        if let Some(req) = lost {
            self.pending.retain(|_, p| p.req != req);
            match req {
                Req::Allocate | Req::Refresh => self.fail("TURN server did not answer".into()),
                Req::Bind(number) => {
                    if let Some(peer) = self.by_number.remove(&number) {
                        self.channels.remove(&peer);
                    }
                }
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        let mut t = self.refresh_at;
        let mut min = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for p in self.pending.values() {
            min(p.next);
        }
        for c in self.channels.values().filter(|c| c.bound) {
            min(c.refresh_at);
        }
        t
    }

    fn next_tid(&mut self) -> [u8; 12] {
        self.tid = self.tid.wrapping_add(1);
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&self.tid.to_be_bytes());
        tid[8..].copy_from_slice(b"pwtc");
        tid
    }

    fn request(&mut self, now: Instant, req: Req) -> [u8; 12] {
        self.request_with(now, req, None)
    }

    fn request_with(&mut self, now: Instant, req: Req, lifetime: Option<u32>) -> [u8; 12] {
        let tid = self.next_tid();
        let (m, auth) = match req {
            Req::Allocate => (method::ALLOCATE, self.key.is_some()),
            Req::Refresh => (method::REFRESH, true),
            Req::Bind(_) => (method::CHANNEL_BIND, true),
        };
        let mut b = Builder::new(Class::Request, m, &tid);
        match req {
            Req::Allocate => {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                    .u32(attr::LIFETIME, LIFETIME);
            }
            Req::Refresh => {
                b.u32(attr::LIFETIME, lifetime.unwrap_or(LIFETIME));
            }
            Req::Bind(number) => {
                let Some(peer) = self.by_number.get(&number).copied() else {
                    return tid;
                };
                b.attr(
                    attr::CHANNEL_NUMBER,
                    &[(number >> 8) as u8, number as u8, 0, 0],
                )
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
            }
        }
        if auth && let Some(key) = self.key {
            b.attr(attr::USERNAME, self.username.as_bytes())
                .attr(attr::REALM, self.realm.as_bytes())
                .attr(attr::NONCE, self.nonce.as_bytes())
                .integrity(&key);
        }
        let bytes = b.fingerprint();
        self.out.push_back(bytes.clone());
        let wait = match self.transport {
            Transport::Udp => RTO,
            Transport::Stream => STREAM_TIMEOUT,
        };
        self.pending.insert(
            tid,
            Pending {
                req,
                bytes,
                next: now + wait,
                sends: 1,
                retried: false,
            },
        );
        tid
    }
}
