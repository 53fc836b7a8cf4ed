//! The TURN core in virtual time: RFC 5769 vectors, the allocation life cycle, credentials,
//! nonces, permissions, channels, policy, quotas and rates. No sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::stun::{Builder, Class, Message, ParseError, attr, channel_data, method};

fn hex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
}

// RFC 5769 §2.1: sample request, short-term credentials, password "VOkJxbRl1RmTxUk/WvJxBt".
const REQ_2_1: &str = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";
// RFC 5769 §2.2: sample IPv4 response, mapped address 192.0.2.1:32853.
const RESP_2_2: &str = "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96";
// RFC 5769 §2.4: sample request with long-term credentials.
const REQ_2_4: &str = "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b900000015001c662f2f3439396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f72670000080014f67024656dd64a3e02b8e0712e85c9a28ca89666";

#[test]
fn rfc5769_sample_request() {
    let raw = hex(REQ_2_1);
    let m = Message::parse(&raw).unwrap();
    assert_eq!((m.class, m.method), (Class::Request, method::BINDING));
    assert_eq!(m.text(attr::USERNAME), Some("evtj:h6vY"));
    assert_eq!(m.text(attr::SOFTWARE), Some("STUN test client"));
    assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
    assert!(!m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"));
    // ICE attributes are understood (comprehension-optional or in the list).
    assert!(m.unknown_required().is_empty());
}

#[test]
fn rfc5769_sample_ipv4_response() {
    let raw = hex(RESP_2_2);
    let m = Message::parse(&raw).unwrap();
    assert_eq!((m.class, m.method), (Class::Success, method::BINDING));
    assert_eq!(
        m.xor_address(attr::XOR_MAPPED_ADDRESS),
        Some("192.0.2.1:32853".parse().unwrap())
    );
    assert!(m.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
}

#[test]
fn rfc5769_long_term_request_verifies_and_is_rebuilt_byte_for_byte() {
    let raw = hex(REQ_2_4);
    let m = Message::parse(&raw).unwrap();
    let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    assert_eq!(m.text(attr::USERNAME), Some(user));
    assert_eq!(m.text(attr::NONCE), Some("f//499k954d6OL34oL9FSTvy64sA"));
    assert_eq!(m.text(attr::REALM), Some("example.org"));
    let key = long_term_key(user, "example.org", "TheMatrIX");
    assert!(m.verify_integrity(&key));
    assert!(!m.verify_integrity(&long_term_key(user, "example.org", "TheMatrix")));
    let mut b = Builder::new(Class::Request, method::BINDING, &m.tid);
    b.attr(attr::USERNAME, user.as_bytes())
        .attr(attr::NONCE, b"f//499k954d6OL34oL9FSTvy64sA")
        .attr(attr::REALM, b"example.org")
        .integrity(&key);
    assert_eq!(b.finish(), raw);
}

#[test]
fn fingerprint_and_framing_are_checked() {
    let mut raw = hex(REQ_2_1);
    let last = raw.len() - 1;
    raw[last] ^= 1;
    assert_eq!(
        Message::parse(&raw).unwrap_err(),
        ParseError::BadFingerprint
    );
    let raw = hex(REQ_2_1);
    assert_eq!(Message::parse(&raw[..19]).unwrap_err(), ParseError::Short);
    assert_eq!(
        Message::parse(&raw[..raw.len() - 4]).unwrap_err(),
        ParseError::BadLength
    );
    let mut bad = raw.clone();
    bad[4] = 0;
    assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::NotStun);
    // An attribute whose length runs past the end.
    let mut bad = raw.clone();
    bad[22] = 0x7f;
    assert_eq!(Message::parse(&bad).unwrap_err(), ParseError::BadAttribute);
}

/// A small deterministic generator for the no-panic loops.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_parser_or_the_core() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds = [hex(REQ_2_1), hex(RESP_2_2), hex(REQ_2_4)];
    let mut lab = Lab::new(Config::new(vec![b"s".to_vec()]));
    let client = lab.client("203.0.113.5:5000");
    for i in 0..50_000 {
        let mut buf = seeds[i % 3].clone();
        // Mutate a few bytes, sometimes truncate, sometimes pure noise.
        match rng.next() % 4 {
            0 => {
                for b in &mut buf {
                    *b = rng.next() as u8;
                }
            }
            1 => buf.truncate((rng.next() % buf.len() as u64) as usize),
            _ => {
                for _ in 0..1 + rng.next() % 4 {
                    let at = (rng.next() % buf.len() as u64) as usize;
                    buf[at] = rng.next() as u8;
                }
            }
        }
        if let Ok(m) = Message::parse(&buf) {
            let _ = m.attributes().count();
            let _ = m.xor_addresses(attr::XOR_PEER_ADDRESS);
            let _ = m.verify_integrity(b"k");
        }
        let _ = channel_data::parse(&buf);
        lab.deliver(client, &buf);
        lab.take();
    }
}

// ---- the core in virtual time ---------------------------------------------------------

const SECRET: &[u8] = b"north-secret";
const UNIX0: u64 = 1_800_000_000;

struct Lab {
    turn: Turn,
    now: Instant,
    out: Vec<Output>,
    next_port: u16,
    relays: Vec<(AllocId, SocketAddr)>,
}

#[derive(Clone, Copy)]
struct Who {
    addr: SocketAddr,
}

impl Lab {
    fn new(cfg: Config) -> Self {
        let now = Instant::now();
        Self {
            turn: Turn::new(cfg, [5; 32], now, UNIX0),
            now,
            out: Vec::new(),
            next_port: 50_000,
            relays: Vec::new(),
        }
    }

    fn client(&self, addr: &str) -> Who {
        Who {
            addr: addr.parse().unwrap(),
        }
    }

    fn input(&mut self, input: Input<'_>) {
        self.turn.handle_input(self.now, input);
        loop {
            match self.turn.poll_output() {
                Output::Timeout(_) => break,
                Output::BindRelay { alloc } => {
                    // The driver binds a socket right away.
                    let addr = SocketAddr::new("192.0.2.200".parse().unwrap(), self.next_port);
                    self.next_port += 1;
                    self.relays.push((alloc, addr));
                    self.out.push(Output::BindRelay { alloc });
                    self.turn.handle_input(
                        self.now,
                        Input::RelayBound {
                            alloc,
                            addr: Some(addr),
                        },
                    );
                }
                o => self.out.push(o),
            }
        }
    }

    fn deliver(&mut self, who: Who, data: &[u8]) {
        self.input(Input::FromClient {
            transport: Transport::Udp,
            from: who.addr,
            data,
        });
    }

    fn turn_alloc_for(&self, relayed: SocketAddr) -> AllocId {
        self.relays.iter().find(|(_, a)| *a == relayed).unwrap().0
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = (self.now + Duration::from_millis(500)).min(end);
            self.input(Input::Timeout);
        }
    }

    /// What the client received, parsed.
    fn replies(&mut self, who: Who) -> Vec<Vec<u8>> {
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                Output::Transmit(t) if t.to == who.addr && t.via == Via::Client(Transport::Udp) => {
                    Some(t.data)
                }
                _ => None,
            })
            .collect()
    }

    /// Sends a request and returns the one reply.
    fn ask(&mut self, who: Who, req: &[u8]) -> Vec<u8> {
        self.deliver(who, req);
        let mut r = self.replies(who);
        assert_eq!(r.len(), 1, "expected one reply");
        r.remove(0)
    }
}

fn error_code(raw: &[u8]) -> Option<u16> {
    let m = Message::parse(raw).unwrap();
    let v = m.get(attr::ERROR_CODE)?;
    Some(u16::from(v[2]) * 100 + u16::from(v[3]))
}

/// A TURN client's credentials and nonce.
struct Creds {
    user: String,
    pass: String,
    realm: String,
    nonce: String,
    tid: u8,
}

impl Creds {
    fn rest(secret: &[u8], expiry: u64) -> Self {
        let user = format!("{expiry}:alice");
        Self {
            pass: rest_password(secret, &user),
            user,
            realm: String::new(),
            nonce: String::new(),
            tid: 0,
        }
    }

    fn next_tid(&mut self) -> [u8; 12] {
        self.tid += 1;
        [self.tid; 12]
    }

    fn build(&mut self, m: u16, tid: [u8; 12], extra: impl FnOnce(&mut Builder)) -> Vec<u8> {
        let mut b = Builder::new(Class::Request, m, &tid);
        extra(&mut b);
        b.attr(attr::USERNAME, self.user.as_bytes())
            .attr(attr::REALM, self.realm.as_bytes())
            .attr(attr::NONCE, self.nonce.as_bytes())
            .integrity(&long_term_key(&self.user, &self.realm, &self.pass));
        b.fingerprint()
    }

    fn req(&mut self, m: u16, extra: impl FnOnce(&mut Builder)) -> Vec<u8> {
        let tid = self.next_tid();
        self.build(m, tid, extra)
    }

    /// Learns realm and nonce from a 401/438.
    fn learn(&mut self, reply: &[u8]) {
        let m = Message::parse(reply).unwrap();
        self.realm = m.text(attr::REALM).unwrap().to_owned();
        self.nonce = m.text(attr::NONCE).unwrap().to_owned();
    }
}

fn allocate_req(c: &mut Creds) -> Vec<u8> {
    c.req(method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    })
}

/// Runs the 401 dance and an Allocate; returns the relayed address.
fn allocate(lab: &mut Lab, who: Who, c: &mut Creds) -> SocketAddr {
    let plain = Builder::new(Class::Request, method::ALLOCATE, &c.next_tid()).fingerprint();
    let r = lab.ask(who, &plain);
    assert_eq!(error_code(&r), Some(401));
    c.learn(&r);
    let req = allocate_req(c);
    let r = lab.ask(who, &req);
    let m = Message::parse(&r).unwrap();
    assert_eq!(
        m.class,
        Class::Success,
        "allocate failed: {:?}",
        error_code(&r)
    );
    assert!(m.verify_integrity(&long_term_key(&c.user, &c.realm, &c.pass)));
    assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS), Some(who.addr));
    assert_eq!(m.u32(attr::LIFETIME), Some(600));
    m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap()
}

fn permit(lab: &mut Lab, who: Who, c: &mut Creds, peer: SocketAddr) -> Option<u16> {
    let req = c.req(method::CREATE_PERMISSION, |b| {
        b.xor_address(attr::XOR_PEER_ADDRESS, peer);
    });
    error_code(&lab.ask(who, &req))
}

fn bind(lab: &mut Lab, who: Who, c: &mut Creds, ch: u16, peer: SocketAddr) -> Option<u16> {
    let req = c.req(method::CHANNEL_BIND, |b| {
        b.attr(attr::CHANNEL_NUMBER, &[(ch >> 8) as u8, ch as u8, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, peer);
    });
    error_code(&lab.ask(who, &req))
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut b = Builder::new(Class::Indication, method::SEND, &[7; 12]);
    b.xor_address(attr::XOR_PEER_ADDRESS, peer)
        .attr(attr::DATA, data);
    b.fingerprint()
}

fn lab() -> (Lab, Who, Creds) {
    let lab = Lab::new(Config::new(vec![SECRET.to_vec()]));
    let who = lab.client("198.51.100.7:40000");
    (lab, who, Creds::rest(SECRET, UNIX0 + 3600))
}

fn relayed(out: &[Output]) -> Vec<(AllocId, SocketAddr, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Transmit(Transmit {
                via: Via::Relay(a),
                to,
                data,
            }) => Some((*a, *to, data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn binding_answers_the_reflexive_address_without_credentials() {
    let (mut lab, who, _) = lab();
    let req = Builder::new(Class::Request, method::BINDING, &[3; 12]).fingerprint();
    let r = lab.ask(who, &req);
    let m = Message::parse(&r).unwrap();
    assert_eq!((m.class, m.tid), (Class::Success, [3; 12]));
    assert_eq!(m.xor_address(attr::XOR_MAPPED_ADDRESS), Some(who.addr));
    assert_eq!(lab.turn.stats().binding_requests, 1);
}

#[test]
fn allocate_then_retransmit_then_mismatch() {
    let (mut lab, who, mut c) = lab();
    let relay = allocate(&mut lab, who, &mut c);
    assert_eq!(relay.ip().to_string(), "192.0.2.200");
    assert_eq!(lab.turn.stats().allocations, 1);
    // The same transaction again (a lost response): the same answer, no second relay.
    let tid = [c.tid; 12];
    let again = c.build(method::ALLOCATE, tid, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    let r = lab.ask(who, &again);
    assert_eq!(
        Message::parse(&r)
            .unwrap()
            .xor_address(attr::XOR_RELAYED_ADDRESS),
        Some(relay)
    );
    // A new Allocate from the same 5-tuple: 437.
    let req = allocate_req(&mut c);
    assert_eq!(error_code(&lab.ask(who, &req)), Some(437));
    assert_eq!(lab.turn.stats().allocations, 1);
}

#[test]
fn unsupported_transport_family_and_attributes_are_refused() {
    let (mut lab, who, mut c) = lab();
    allocate(&mut lab, who, &mut c);
    let other = lab.client("198.51.100.7:40001");
    let req = c.req(method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
    });
    assert_eq!(error_code(&lab.ask(other, &req)), Some(442));
    let req = c.req(method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
    });
    assert_eq!(error_code(&lab.ask(other, &req)), Some(440));
    let req = c.req(method::ALLOCATE, |b| {
        b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(0x0018, &[0x80, 0, 0, 0]); // EVEN-PORT
    });
    let r = lab.ask(other, &req);
    assert_eq!(error_code(&r), Some(420));
    assert_eq!(
        Message::parse(&r).unwrap().get(attr::UNKNOWN_ATTRIBUTES),
        Some(&[0x00, 0x18][..])
    );
    let req = c.req(method::ALLOCATE, |_| {});
    assert_eq!(error_code(&lab.ask(other, &req)), Some(400));
}

#[test]
fn wrong_or_expired_credentials_get_401_and_count_as_failures() {
    let (mut lab, who, mut c) = lab();
    let r = lab.ask(
        who,
        &Builder::new(Class::Request, method::ALLOCATE, &[1; 12]).fingerprint(),
    );
    c.learn(&r);
    let mut wrong = Creds::rest(b"other-secret", UNIX0 + 3600);
    wrong.realm = c.realm.clone();
    wrong.nonce = c.nonce.clone();
    assert_eq!(
        error_code(&lab.ask(who, &allocate_req(&mut wrong))),
        Some(401)
    );
    let mut expired = Creds::rest(SECRET, UNIX0 - 1);
    expired.realm = c.realm.clone();
    expired.nonce = c.nonce.clone();
    assert_eq!(
        error_code(&lab.ask(who, &allocate_req(&mut expired))),
        Some(401)
    );
    let mut no_expiry = Creds::rest(SECRET, 0);
    no_expiry.user = "alice".into();
    no_expiry.pass = rest_password(SECRET, "alice");
    no_expiry.realm = c.realm.clone();
    no_expiry.nonce = c.nonce.clone();
    assert_eq!(
        error_code(&lab.ask(who, &allocate_req(&mut no_expiry))),
        Some(401)
    );
    assert_eq!(lab.turn.stats().auth_failures, 3);
    assert_eq!(lab.turn.stats().allocations, 0);
    // MESSAGE-INTEGRITY without USERNAME is a bad request.
    let mut b = Builder::new(Class::Request, method::ALLOCATE, &[9; 12]);
    b.integrity(b"k");
    assert_eq!(error_code(&lab.ask(who, &b.fingerprint())), Some(400));
}

#[test]
fn every_configured_secret_is_accepted_for_rotation() {
    let mut lab = Lab::new(Config::new(vec![b"new".to_vec(), SECRET.to_vec()]));
    let who = lab.client("198.51.100.7:40000");
    let mut old = Creds::rest(SECRET, UNIX0 + 60);
    allocate(&mut lab, who, &mut old);
    let who2 = lab.client("198.51.100.8:40000");
    let mut new = Creds::rest(b"new", UNIX0 + 60);
    allocate(&mut lab, who2, &mut new);
    assert_eq!(lab.turn.stats().allocations, 2);
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_nonce() {
    let (mut lab, who, mut c) = lab();
    allocate(&mut lab, who, &mut c);
    lab.advance(Duration::from_secs(400));
    let req = c.req(method::REFRESH, |_| {});
    assert_eq!(error_code(&lab.ask(who, &req)), None);
    // The nonce was issued at 0 s and lives 600 s.
    lab.advance(Duration::from_secs(201));
    let req = c.req(method::REFRESH, |_| {});
    let r = lab.ask(who, &req);
    assert_eq!(error_code(&r), Some(438));
    let old = c.nonce.clone();
    c.learn(&r);
    assert_ne!(c.nonce, old);
    let req = c.req(method::REFRESH, |_| {});
    let r = lab.ask(who, &req);
    assert_eq!(error_code(&r), None);
    assert_eq!(lab.turn.stats().stale_nonces, 1);
    // A forged nonce is as stale as an old one.
    c.nonce = "AAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    let req = c.req(method::REFRESH, |_| {});
    assert_eq!(error_code(&lab.ask(who, &req)), Some(438));
}

#[test]
fn allocations_expire_and_refresh_extends_or_deletes() {
    let (mut lab, who, mut c) = lab();
    allocate(&mut lab, who, &mut c);
    lab.advance(Duration::from_secs(500));
    let req = c.req(method::REFRESH, |b| {
        b.u32(attr::LIFETIME, 1200);
    });
    let r = lab.ask(who, &req);
    assert_eq!(Message::parse(&r).unwrap().u32(attr::LIFETIME), Some(1200));
    lab.advance(Duration::from_secs(1100));
    assert_eq!(
        lab.turn.stats().allocations,
        1,
        "refreshed past its first lifetime"
    );
    lab.advance(Duration::from_secs(101));
    assert_eq!(lab.turn.stats().allocations, 0);
    assert!(
        lab.take()
            .iter()
            .any(|o| matches!(o, Output::CloseRelay { .. }))
    );

    let who2 = lab.client("198.51.100.9:1");
    let mut c2 = Creds::rest(SECRET, UNIX0 + 7200);
    allocate(&mut lab, who2, &mut c2);
    let req = c2.req(method::REFRESH, |b| {
        b.u32(attr::LIFETIME, 0);
    });
    lab.deliver(who2, &req);
    let out = lab.take();
    assert!(out.iter().any(|o| matches!(o, Output::CloseRelay { .. })));
    assert_eq!(lab.turn.stats().allocations, 0);
    // Refresh without an allocation: 437.
    let req = c2.req(method::REFRESH, |_| {});
    assert_eq!(error_code(&lab.ask(who2, &req)), Some(437));
}

#[test]
fn an_allocation_is_not_refreshed_past_its_credentials() {
    let (mut lab, who, _) = lab();
    let mut c = Creds::rest(SECRET, UNIX0 + 700);
    allocate(&mut lab, who, &mut c);
    lab.advance(Duration::from_secs(590));
    let req = c.req(method::REFRESH, |_| {});
    assert_eq!(error_code(&lab.ask(who, &req)), None);
    lab.advance(Duration::from_secs(120));
    // Past the nonce's 600 s first: 438, then with a fresh nonce the expiry shows.
    let req = c.req(method::REFRESH, |_| {});
    let r = lab.ask(who, &req);
    assert_eq!(error_code(&r), Some(438));
    c.learn(&r);
    let req = c.req(method::REFRESH, |_| {});
    let r = lab.ask(who, &req);
    assert_eq!(error_code(&r), Some(401));
    lab.advance(Duration::from_secs(600));
    assert_eq!(lab.turn.stats().allocations, 0);
}

#[test]
fn refresh_with_other_credentials_is_wrong_credentials() {
    let (mut lab, who, mut c) = lab();
    allocate(&mut lab, who, &mut c);
    let mut other = Creds::rest(SECRET, UNIX0 + 3601);
    other.realm = c.realm.clone();
    other.nonce = c.nonce.clone();
    let req = other.req(method::REFRESH, |_| {});
    assert_eq!(error_code(&lab.ask(who, &req)), Some(441));
}

#[test]
fn permissions_gate_data_both_ways_and_expire() {
    let (mut lab, who, mut c) = lab();
    allocate(&mut lab, who, &mut c);
    let peer: SocketAddr = "203.0.113.50:7000".parse().unwrap();
    // No permission: nothing is relayed.
    lab.deliver(who, &send_indication(peer, b"early"));
    assert!(relayed(&lab.take()).is_empty());
    assert_eq!(permit(&mut lab, who, &mut c, peer), None);
    lab.deliver(who, &send_indication(peer, b"hello peer"));
    let out = relayed(&lab.take());
    assert_eq!(out.len(), 1);
    let alloc = out[0].0;
    assert_eq!((out[0].1, &out[0].2[..]), (peer, &b"hello peer"[..]));
    // The peer answers from another port of the permitted IP: a Data indication.
    let from: SocketAddr = "203.0.113.50:7001".parse().unwrap();
    lab.input(Input::FromPeer {
        alloc,
        from,
        data: b"hi client",
    });
    let r = lab.replies(who);
    let m = Message::parse(&r[0]).unwrap();
    assert_eq!((m.class, m.method), (Class::Indication, method::DATA));
    assert_eq!(m.xor_address(attr::XOR_PEER_ADDRESS), Some(from));
    assert_eq!(m.get(attr::DATA), Some(&b"hi client"[..]));
    // Another IP has no permission.
    lab.input(Input::FromPeer {
        alloc,
        from: "203.0.113.51:7000".parse().unwrap(),
        data: b"x",
    });
    assert!(lab.replies(who).is_empty());
    // Permissions last 300 s unless refreshed.
    lab.advance(Duration::from_secs(301));
    lab.input(Input::FromPeer {
        alloc,
        from,
        data: b"late",
    });
    assert!(lab.replies(who).is_empty());
    let s = lab.turn.stats();
    assert_eq!(
        (s.packets_to_peers, s.packets_to_clients, s.no_permission),
        (1, 1, 3)
    );
    assert_eq!(s.bytes_to_peers, 10);
}

#[test]
fn channels_carry_data_and_cannot_be_rebound_elsewhere() {
    let (mut lab, who, mut c) = lab();
    allocate(&mut lab, who, &mut c);
    let peer: SocketAddr = "203.0.113.60:9000".parse().unwrap();
    assert_eq!(bind(&mut lab, who, &mut c, 0x4001, peer), None);
    lab.deliver(who, &channel_data::encode(0x4001, b"via channel", false));
    let out = relayed(&lab.take());
    assert_eq!((out[0].1, &out[0].2[..]), (peer, &b"via channel"[..]));
    let alloc = out[0].0;
    lab.input(Input::FromPeer {
        alloc,
        from: peer,
        data: b"back",
    });
    let r = lab.replies(who);
    assert_eq!(channel_data::parse(&r[0]), Some((0x4001, &b"back"[..])));
    // Rebinding the same pair refreshes; the channel to another peer, or the peer to
    // another channel, is refused; numbers outside 0x4000..=0x4FFF too.
    assert_eq!(bind(&mut lab, who, &mut c, 0x4001, peer), None);
    assert_eq!(
        bind(
            &mut lab,
            who,
            &mut c,
            0x4001,
            "203.0.113.61:9000".parse().unwrap()
        ),
        Some(400)
    );
    assert_eq!(bind(&mut lab, who, &mut c, 0x4002, peer), Some(400));
    assert_eq!(
        bind(
            &mut lab,
            who,
            &mut c,
            0x3FFF,
            "203.0.113.62:1".parse().unwrap()
        ),
        Some(400)
    );
    assert_eq!(
        bind(
            &mut lab,
            who,
            &mut c,
            0x5000,
            "203.0.113.62:1".parse().unwrap()
        ),
        Some(400)
    );
    assert_eq!(lab.turn.stats().channels, 1);
    // ChannelData whose length overruns the datagram is dropped.
    let mut bad = channel_data::encode(0x4001, b"abc", false);
    bad[3] = 200;
    lab.deliver(who, &bad);
    assert!(relayed(&lab.take()).is_empty());
    // Channels expire after 600 s (the permission after 300 s).
    lab.advance(Duration::from_secs(601));
    assert_eq!(lab.turn.stats().channels, 0);
    lab.deliver(who, &channel_data::encode(0x4001, b"gone", false));
    assert!(relayed(&lab.take()).is_empty());
}

#[test]
fn channel_data_to_a_stream_client_is_padded() {
    let (mut lab, _, mut c) = lab();
    let who: SocketAddr = "198.51.100.20:1234".parse().unwrap();
    let tcp = Transport::Tcp(1);
    let ask = |lab: &mut Lab, req: &[u8]| {
        lab.input(Input::FromClient {
            transport: tcp,
            from: who,
            data: req,
        });
        let out = lab.take();
        out.into_iter()
            .find_map(|o| match o {
                Output::Transmit(t) if t.via == Via::Client(tcp) => Some(t.data),
                _ => None,
            })
            .unwrap()
    };
    let r = ask(
        &mut lab,
        &Builder::new(Class::Request, method::ALLOCATE, &[1; 12]).fingerprint(),
    );
    c.learn(&r);
    let r = ask(&mut lab, &allocate_req(&mut c));
    assert_eq!(error_code(&r), None);
    let peer: SocketAddr = "203.0.113.60:9000".parse().unwrap();
    let req = c.req(method::CHANNEL_BIND, |b| {
        b.attr(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])
            .xor_address(attr::XOR_PEER_ADDRESS, peer);
    });
    assert_eq!(error_code(&ask(&mut lab, &req)), None);
    let alloc = AllocId(1);
    lab.input(Input::FromPeer {
        alloc,
        from: peer,
        data: b"12345",
    });
    let out = lab.take();
    let Output::Transmit(t) = &out[0] else {
        panic!()
    };
    assert_eq!(t.data.len(), 12, "4 header + 5 data + 3 padding");
    // The connection closing takes the allocation with it.
    lab.input(Input::ClientClosed { transport: tcp });
    assert_eq!(lab.turn.stats().allocations, 0);
    assert!(
        lab.take()
            .iter()
            .any(|o| matches!(o, Output::CloseRelay { .. }))
    );
}

#[test]
fn peers_in_private_and_loopback_space_are_refused_by_default() {
    let (mut lab, who, mut c) = lab();
    allocate(&mut lab, who, &mut c);
    for peer in [
        "127.0.0.1:5000",
        "10.1.2.3:5000",
        "172.16.0.1:5000",
        "192.168.1.1:5000",
        "169.254.1.1:5000",
        "224.0.0.1:5000",
        "0.0.0.0:5000",
        "100.64.0.1:5000",
        "255.255.255.255:5000",
    ] {
        assert_eq!(
            permit(&mut lab, who, &mut c, peer.parse().unwrap()),
            Some(403),
            "{peer}"
        );
    }
    assert_eq!(lab.turn.stats().refused_peer, 9);
    assert_eq!(lab.turn.stats().permissions, 0);
}

#[test]
fn policy_allow_and_deny_lists_and_own_addresses() {
    let mut p = PeerPolicy::default();
    assert!(!p.allows("127.0.0.1:1".parse().unwrap()));
    assert!(!p.allows("[::1]:1".parse().unwrap()));
    assert!(
        !p.allows("[::ffff:10.0.0.1]:1".parse().unwrap()),
        "IPv4-mapped private"
    );
    assert!(!p.allows("[fd00::1]:1".parse().unwrap()));
    assert!(!p.allows("[fe80::1]:1".parse().unwrap()));
    assert!(p.allows("[2001:db8::1]:1".parse().unwrap()));
    assert!(p.allows("203.0.113.9:1".parse().unwrap()));
    p.allow_loopback = true;
    assert!(p.allows("127.0.0.1:1".parse().unwrap()));
    p.allow.push("10.0.0.0/8".parse().unwrap());
    assert!(p.allows("10.9.9.9:1".parse().unwrap()));
    p.deny.push("203.0.113.0/24".parse().unwrap());
    assert!(!p.allows("203.0.113.9:1".parse().unwrap()));
    // The server's own address: only its relay ports (other allocations).
    p.own.push("198.51.100.1".parse().unwrap());
    p.relay_ports = Some(49152..=49200);
    assert!(p.allows("198.51.100.1:49160".parse().unwrap()));
    assert!(!p.allows("198.51.100.1:8080".parse().unwrap()));
    assert!(p.allows_ip("198.51.100.1".parse().unwrap()));
    assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    assert!("bogus".parse::<Cidr>().is_err());
    assert_eq!("fd00::/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
}

#[test]
fn relaying_to_the_server_itself_is_refused_off_the_relay_ports() {
    let mut cfg = Config::new(vec![SECRET.to_vec()]);
    cfg.policy.own = vec!["192.0.2.200".parse().unwrap()];
    cfg.policy.relay_ports = Some(50_000..=50_100);
    let mut lab = Lab::new(cfg);
    let who = lab.client("198.51.100.7:40000");
    let mut c = Creds::rest(SECRET, UNIX0 + 3600);
    allocate(&mut lab, who, &mut c);
    assert_eq!(
        bind(
            &mut lab,
            who,
            &mut c,
            0x4000,
            "192.0.2.200:8080".parse().unwrap()
        ),
        Some(403)
    );
    assert_eq!(
        bind(
            &mut lab,
            who,
            &mut c,
            0x4001,
            "192.0.2.200:50001".parse().unwrap()
        ),
        None
    );
    // A permission on the own IP does not open its other ports to Send indications.
    lab.deliver(
        who,
        &send_indication("192.0.2.200:8080".parse().unwrap(), b"GET /"),
    );
    assert!(relayed(&lab.take()).is_empty());
}

#[test]
fn quotas_per_user_and_in_total() {
    let mut cfg = Config::new(vec![SECRET.to_vec()]);
    cfg.max_allocations_per_user = 2;
    cfg.max_allocations = 3;
    let mut lab = Lab::new(cfg);
    let mut c = Creds::rest(SECRET, UNIX0 + 3600);
    for port in 1..=2 {
        let who = lab.client(&format!("198.51.100.7:{port}"));
        allocate(&mut lab, who, &mut c);
    }
    let who = lab.client("198.51.100.7:3");
    assert_eq!(error_code(&lab.ask(who, &allocate_req(&mut c))), Some(486));
    let mut bob = Creds::rest(SECRET, UNIX0 + 3601);
    let who = lab.client("198.51.100.8:1");
    allocate(&mut lab, who, &mut bob);
    let who = lab.client("198.51.100.8:2");
    bob.realm = c.realm.clone();
    assert_eq!(
        error_code(&lab.ask(who, &allocate_req(&mut bob))),
        Some(508)
    );
    assert_eq!(lab.turn.stats().refused_quota, 2);
}

#[test]
fn a_relay_socket_that_cannot_be_bound_gives_508() {
    let (mut lab, who, mut c) = lab();
    let r = lab.ask(
        who,
        &Builder::new(Class::Request, method::ALLOCATE, &[1; 12]).fingerprint(),
    );
    c.learn(&r);
    lab.turn.handle_input(
        lab.now,
        Input::FromClient {
            transport: Transport::Udp,
            from: who.addr,
            data: &allocate_req(&mut c),
        },
    );
    let Output::BindRelay { alloc } = lab.turn.poll_output() else {
        panic!()
    };
    lab.input(Input::RelayBound { alloc, addr: None });
    let r = lab.replies(who);
    assert_eq!(error_code(&r[0]), Some(508));
    assert_eq!(lab.turn.stats().allocations, 0);
    // The user's quota is given back.
    let again = lab.client("198.51.100.7:40009");
    allocate(&mut lab, again, &mut c);
}

#[test]
fn bandwidth_cap_drops_what_exceeds_it() {
    let mut cfg = Config::new(vec![SECRET.to_vec()]);
    cfg.bandwidth_per_allocation = 10_000;
    let mut lab = Lab::new(cfg);
    let who = lab.client("198.51.100.7:40000");
    let mut c = Creds::rest(SECRET, UNIX0 + 3600);
    allocate(&mut lab, who, &mut c);
    let peer: SocketAddr = "203.0.113.50:7000".parse().unwrap();
    assert_eq!(bind(&mut lab, who, &mut c, 0x4000, peer), None);
    let pkt = channel_data::encode(0x4000, &[0u8; 1000], false);
    for _ in 0..20 {
        lab.deliver(who, &pkt);
    }
    assert_eq!(relayed(&lab.take()).len(), 10);
    assert_eq!(lab.turn.stats().refused_bandwidth, 10);
    lab.advance(Duration::from_millis(500));
    for _ in 0..20 {
        lab.deliver(who, &pkt);
    }
    assert_eq!(
        relayed(&lab.take()).len(),
        5,
        "refilled at 10 kB/s for 0.5 s"
    );
}

#[test]
fn challenges_are_rate_limited_per_address() {
    let (mut lab, who, _) = lab();
    let mut answered = 0;
    for i in 0..200u8 {
        let req = Builder::new(Class::Request, method::ALLOCATE, &[i; 12]).fingerprint();
        lab.deliver(who, &req);
        answered += lab.replies(who).len();
    }
    assert_eq!(answered, 80, "burst of 4 s at 20/s");
    assert_eq!(lab.turn.stats().refused_rate, 120);
    // Another address is unaffected, and the first recovers with time.
    let other = lab.client("198.51.100.99:1");
    lab.deliver(
        other,
        &Builder::new(Class::Request, method::ALLOCATE, &[1; 12]).fingerprint(),
    );
    assert_eq!(lab.replies(other).len(), 1);
    lab.advance(Duration::from_secs(1));
    lab.deliver(
        who,
        &Builder::new(Class::Request, method::ALLOCATE, &[1; 12]).fingerprint(),
    );
    assert_eq!(lab.replies(who).len(), 1);
}

#[test]
fn responses_and_stray_indications_are_ignored() {
    let (mut lab, who, _) = lab();
    lab.deliver(who, &hex(RESP_2_2));
    let mut b = Builder::new(Class::Indication, method::DATA, &[1; 12]);
    b.attr(attr::DATA, b"x");
    lab.deliver(who, &b.fingerprint());
    // Send indication and ChannelData without an allocation.
    lab.deliver(
        who,
        &send_indication("203.0.113.1:1".parse().unwrap(), b"x"),
    );
    lab.deliver(who, &channel_data::encode(0x4000, b"x", false));
    assert!(lab.take().is_empty());
}

// ---- RFC 8489: MESSAGE-INTEGRITY-SHA256 and password algorithms ------------------------

#[test]
fn rfc8489_b1_sha256_integrity_vector() {
    // B.1, built from its parts (USERHASH is not otherwise supported here); the expected
    // HMAC is the one in the verified erratum.
    let userhash = hex("4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704");
    let mut b = Builder::new(
        Class::Request,
        method::BINDING,
        &hex("78ad3433c6ad72c029da412e").try_into().unwrap(),
    );
    b.attr(0x001E, &userhash)
        .attr(attr::NONCE, b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA")
        .attr(attr::REALM, b"example.org")
        .attr(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0]);
    let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    let key = long_term_key_sha256(user, "example.org", "TheMatrIX");
    b.integrity_sha256(&key);
    let raw = b.finish();
    assert_eq!(
        raw.len(),
        20 + 0x90,
        "the erratum corrects the length to 0x90"
    );
    assert_eq!(
        raw[raw.len() - 32..],
        hex("b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65")[..]
    );
    let m = Message::parse(&raw).unwrap();
    assert!(m.has_integrity_sha256());
    assert!(m.verify_integrity_sha256(&key));
    assert!(!m.verify_integrity_sha256(&long_term_key_sha256(user, "example.org", "TheMatrix")));
    // A MAC truncated to 16 bytes (RFC 8489 §14.6) verifies; the header counts the truncation.
    let mut t = raw[..raw.len() - 36].to_vec();
    let len = (t.len() + 4 + 16 - 20) as u16;
    t[2..4].copy_from_slice(&len.to_be_bytes());
    let mac = crate::stun::hmac_sha256_of(&key, &t);
    t.extend_from_slice(&[0x00, 0x1C, 0x00, 0x10]);
    t.extend_from_slice(&mac[..16]);
    assert!(Message::parse(&t).unwrap().verify_integrity_sha256(&key));
    // Shorter than 16 bytes is malformed.
    let mut short = raw[..raw.len() - 36].to_vec();
    short.extend_from_slice(&[0x00, 0x1C, 0x00, 0x0C]);
    short.extend_from_slice(&[0; 12]);
    let len = (short.len() - 20) as u16;
    short[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        Message::parse(&short).unwrap_err(),
        ParseError::BadAttribute
    );
}

/// The 401 round, then a request signed the RFC 8489 way: SHA-256 password algorithm
/// (when `sha256_password`) and MESSAGE-INTEGRITY-SHA256.
fn allocate_sha256(
    lab: &mut Lab,
    who: Who,
    c: &mut Creds,
    algorithms: &[u8],
    sha256_password: bool,
) -> Vec<u8> {
    let r = lab.ask(
        who,
        &Builder::new(Class::Request, method::ALLOCATE, &c.next_tid()).fingerprint(),
    );
    let m = Message::parse(&r).unwrap();
    assert!(
        m.text(attr::NONCE).unwrap().starts_with("obMatJos2gAAA"),
        "nonce cookie: password algorithms"
    );
    assert_eq!(
        m.get(attr::PASSWORD_ALGORITHMS),
        Some(&[0, 2, 0, 0, 0, 1, 0, 0][..])
    );
    c.learn(&r);
    let key = if sha256_password {
        long_term_key_sha256(&c.user, &c.realm, &c.pass).to_vec()
    } else {
        long_term_key(&c.user, &c.realm, &c.pass).to_vec()
    };
    let mut b = Builder::new(Class::Request, method::ALLOCATE, &c.next_tid());
    b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attr(attr::USERNAME, c.user.as_bytes())
        .attr(attr::REALM, c.realm.as_bytes())
        .attr(attr::NONCE, c.nonce.as_bytes())
        .attr(attr::PASSWORD_ALGORITHMS, algorithms)
        .attr(
            attr::PASSWORD_ALGORITHM,
            if sha256_password {
                &[0, 2, 0, 0]
            } else {
                &[0, 1, 0, 0]
            },
        )
        .integrity_sha256(&key);
    let r = lab.ask(who, &b.fingerprint());
    if error_code(&r).is_none() {
        let m = Message::parse(&r).unwrap();
        assert!(m.has_integrity_sha256(), "answered in kind");
        assert!(m.verify_integrity_sha256(&key));
    }
    r
}

#[test]
fn sha256_password_algorithm_and_integrity_are_accepted_and_answered_in_kind() {
    let (mut lab, who, mut c) = lab();
    let offered = [0, 2, 0, 0, 0, 1, 0, 0];
    assert_eq!(
        error_code(&allocate_sha256(&mut lab, who, &mut c, &offered, true)),
        None
    );
    let who2 = lab.client("198.51.100.7:40002");
    assert_eq!(
        error_code(&allocate_sha256(&mut lab, who2, &mut c, &offered, false)),
        None
    );
    assert_eq!(lab.turn.stats().allocations, 2);
}

#[test]
fn a_password_algorithm_bid_down_is_refused() {
    let (mut lab, who, mut c) = lab();
    // The client claims the server offered only MD5.
    let r = allocate_sha256(&mut lab, who, &mut c, &[0, 1, 0, 0], false);
    assert_eq!(error_code(&r), Some(400));
    // PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS, and an unknown algorithm.
    let mut b = Builder::new(Class::Request, method::ALLOCATE, &c.next_tid());
    b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attr(attr::USERNAME, c.user.as_bytes())
        .attr(attr::REALM, c.realm.as_bytes())
        .attr(attr::NONCE, c.nonce.as_bytes())
        .attr(attr::PASSWORD_ALGORITHM, &[0, 2, 0, 0])
        .integrity(b"x");
    assert_eq!(error_code(&lab.ask(who, &b.fingerprint())), Some(400));
    let r = allocate_sha256(&mut lab, who, &mut c, &[0, 2, 0, 0, 0, 1, 0, 0], false);
    assert_eq!(error_code(&r), None, "a proper request still works");
    assert_eq!(lab.turn.stats().allocations, 1);
}

// ---- the client against the server core ----------------------------------------------

/// Runs a TURN client against the server core until both are idle; returns what the
/// server relayed to peers.
fn pump(lab: &mut Lab, who: Who, c: &mut client::Client) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut to_peers = Vec::new();
    for _ in 0..100 {
        let mut any = false;
        while let Some(bytes) = c.poll_transmit() {
            lab.deliver(who, &bytes);
            any = true;
        }
        for o in lab.take() {
            if let Output::Transmit(t) = o {
                match t.via {
                    Via::Client(_) if t.to == who.addr => {
                        let _ = c.handle_input(lab.now, &t.data);
                        any = true;
                    }
                    Via::Relay(_) => to_peers.push((t.to, t.data)),
                    _ => {}
                }
            }
        }
        if !any {
            break;
        }
    }
    to_peers
}

/// A TURN client over UDP with valid credentials, allocating from the lab's server.
fn alice(lab: &Lab) -> client::Client {
    let user = format!("{}:alice", UNIX0 + 3600);
    let pass = rest_password(SECRET, &user);
    client::Client::new(
        lab.now,
        "192.0.2.1:3478".parse().unwrap(),
        client::Transport::Udp,
        &user,
        &pass,
        1,
    )
}

#[test]
fn the_client_allocates_binds_a_channel_and_relays_both_ways() {
    let (mut lab, who, creds) = lab();
    let _ = creds;
    let mut c = alice(&lab);
    pump(&mut lab, who, &mut c);
    let Some(client::Event::Allocated { relayed, mapped }) = c.poll_event() else {
        panic!("not allocated");
    };
    assert_eq!(mapped, Some(who.addr));
    assert_eq!(Some(relayed), c.relayed());
    // The first send binds a channel (and the permission); once bound, ChannelData flows.
    let peer: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    c.send_to(lab.now, peer, b"first");
    pump(&mut lab, who, &mut c);
    c.send_to(lab.now, peer, b"second");
    let out = c.poll_transmit().unwrap();
    assert!(
        channel_data::is_channel_data(&out),
        "bound channel sends ChannelData"
    );
    lab.deliver(who, &out);
    let relayed_out = relayed_to_peers(&mut lab);
    assert_eq!(relayed_out, vec![(peer, b"second".to_vec())]);
    // A peer's packet comes back as ChannelData and is unwrapped.
    let alloc = lab.turn_alloc_for(relayed);
    lab.input(Input::FromPeer {
        alloc,
        from: peer,
        data: b"pong",
    });
    let back: Vec<Vec<u8>> = lab.replies(who);
    assert_eq!(
        c.handle_input(lab.now, &back[0]),
        Some((peer, &b"pong"[..]))
    );
    // Refreshes keep the allocation and the channel past their lifetimes.
    for _ in 0..30 {
        lab.now += Duration::from_secs(60);
        c.handle_timeout(lab.now);
        lab.input(Input::Timeout);
        pump(&mut lab, who, &mut c);
    }
    assert!(!c.is_failed());
    c.send_to(lab.now, peer, b"late");
    let out = c.poll_transmit().unwrap();
    lab.deliver(who, &out);
    assert_eq!(relayed_to_peers(&mut lab), vec![(peer, b"late".to_vec())]);
}

#[test]
fn a_refresh_now_finds_an_allocation_lost_to_a_new_client_address() {
    let (mut lab, who, _) = lab();
    let mut c = alice(&lab);
    pump(&mut lab, who, &mut c);
    assert!(matches!(
        c.poll_event(),
        Some(client::Event::Allocated { .. })
    ));
    // Still there: a refresh now succeeds.
    c.refresh_now(lab.now);
    pump(&mut lab, who, &mut c);
    assert!(!c.is_failed());
    assert_eq!(c.poll_event(), None);
    // The NAT in front of us dropped its mapping: we now come from another port.
    let moved = lab.client("198.51.100.7:40001");
    c.refresh_now(lab.now);
    pump(&mut lab, moved, &mut c);
    assert!(
        matches!(c.poll_event(), Some(client::Event::Failed(why)) if why.contains("437")),
        "the lost allocation is reported"
    );
    assert!(c.is_failed());
    assert_eq!(c.relayed(), None);
}

#[test]
fn the_client_reports_refusal_with_bad_credentials() {
    let (mut lab, who, _) = lab();
    let user = format!("{}:alice", UNIX0 + 3600);
    let mut c = client::Client::new(
        lab.now,
        "192.0.2.1:3478".parse().unwrap(),
        client::Transport::Udp,
        &user,
        "wrong",
        1,
    );
    pump(&mut lab, who, &mut c);
    assert!(matches!(c.poll_event(), Some(client::Event::Failed(why)) if why.contains("401")));
    assert!(c.is_failed());
}

#[test]
fn the_client_gives_up_when_the_server_is_silent() {
    let now = Instant::now();
    let mut c = client::Client::new(
        now,
        "192.0.2.1:3478".parse().unwrap(),
        client::Transport::Udp,
        "u",
        "p",
        1,
    );
    let mut sends = 0;
    let mut t = now;
    while let Some(next) = c.poll_timeout() {
        while c.poll_transmit().is_some() {
            sends += 1;
        }
        t = next;
        c.handle_timeout(t);
    }
    assert_eq!(sends, 6, "six sends of the first Allocate");
    assert!(t - now < Duration::from_secs(20));
    assert!(matches!(c.poll_event(), Some(client::Event::Failed(_))));
}

fn relayed_to_peers(lab: &mut Lab) -> Vec<(SocketAddr, Vec<u8>)> {
    lab.take()
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit(Transmit {
                via: Via::Relay(_),
                to,
                data,
            }) => Some((to, data)),
            _ => None,
        })
        .collect()
}

#[test]
fn over_a_stream_the_client_waits_instead_of_resending() {
    let now = Instant::now();
    let mut c = client::Client::new(
        now,
        "192.0.2.1:3478".parse().unwrap(),
        client::Transport::Stream,
        "u",
        "p",
        1,
    );
    assert!(c.poll_transmit().is_some());
    c.handle_timeout(now + Duration::from_secs(5));
    assert!(c.poll_transmit().is_none(), "no resend over TCP");
    assert!(!c.is_failed());
    c.handle_timeout(now + Duration::from_secs(11));
    assert!(c.is_failed());
}
