//! Two connections wired in memory, in virtual time: offer and answer, ICE, DTLS with the
//! fingerprints checked, SCTP, channels opened by DCEP and negotiated, messages of every kind.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peerweb_dataconn::{
    Candidate, ChannelConfig, ChannelId, Config, Connection, Error, Event, Reliability, certificate,
};

struct Side {
    c: Connection,
    addr: SocketAddr,
    events: Vec<Event>,
}

struct Pair {
    start: Instant,
    now: Instant,
    sides: [Side; 2],
    /// Datagrams dropped on the way: one in this many at random (0: none).
    drop_every: usize,
    /// Side 0's nominating checks are lost (side 1 is never told which pair to use).
    lose_nominations: bool,
    moved: usize,
    rng: u64,
}

/// Whether a datagram is a STUN binding request with USE-CANDIDATE (RFC 8445 §7.1.2).
fn nominates(d: &[u8]) -> bool {
    if d.len() < 20 || d[..2] != [0, 1] {
        return false;
    }
    let mut at = 20;
    while at + 4 <= d.len() {
        let kind = u16::from_be_bytes([d[at], d[at + 1]]);
        let len = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
        if kind == 0x0025 {
            return true;
        }
        at += 4 + len.next_multiple_of(4);
    }
    false
}

fn side(now: Instant, addr: &str, seed: u8) -> Side {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut c = Connection::new(now, Config::default(), certificate().unwrap(), [seed; 48]);
    c.add_local_candidate(Candidate::host(addr, "udp").unwrap());
    Side {
        c,
        addr,
        events: Vec::new(),
    }
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        Pair {
            start: now,
            now,
            sides: [side(now, "10.0.0.1:5000", 1), side(now, "10.0.0.2:6000", 2)],
            drop_every: 0,
            lose_nominations: false,
            moved: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Offer from side 0, answer from side 1 (candidates inside the descriptions).
    fn negotiate(&mut self) {
        let offer = self.sides[0].c.create_offer();
        let answer = self.sides[1].c.accept_offer(self.now, &offer).unwrap();
        self.sides[0].c.accept_answer(self.now, &answer).unwrap();
    }

    /// Runs until `done` or `limit` of virtual time passes.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            let mut moved = false;
            for i in 0..2 {
                while let Some(t) = self.sides[i].c.poll_transmit(self.now) {
                    moved = true;
                    self.moved += 1;
                    // xorshift: a seeded random loss (the link's, not the certificates').
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    if self.drop_every > 0 && (self.rng as usize).is_multiple_of(self.drop_every) {
                        continue;
                    }
                    if i == 0 && self.lose_nominations && nominates(&t.contents) {
                        continue;
                    }
                    let to = 1 - i;
                    if t.destination == self.sides[to].addr {
                        let now = self.now;
                        self.sides[to].c.handle_receive(
                            now,
                            t.proto,
                            t.source,
                            t.destination,
                            &t.contents,
                        );
                    }
                }
            }
            for s in &mut self.sides {
                while let Some(e) = s.c.poll_event() {
                    // PEERWEB_TRACE=1: what happened when, in virtual time.
                    if std::env::var_os("PEERWEB_TRACE").is_some()
                        && !matches!(e, Event::ChannelData { .. })
                    {
                        eprintln!("{:?} {:?}", self.now - self.start, e);
                    }
                    s.events.push(e);
                }
            }
            if !moved {
                let next = self
                    .sides
                    .iter_mut()
                    .filter_map(|s| s.c.poll_timeout())
                    .min()
                    .unwrap_or(self.now + Duration::from_millis(10));
                self.now = next.max(self.now + Duration::from_micros(1));
                let now = self.now;
                for s in &mut self.sides {
                    s.c.handle_timeout(now);
                }
            }
        }
        done(self)
    }

    fn connected(&self) -> bool {
        self.sides.iter().all(|s| s.c.is_connected())
    }

    fn opened(&self, i: usize) -> Vec<(ChannelId, String)> {
        self.sides[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ChannelOpen(id, l) => Some((*id, l.clone())),
                _ => None,
            })
            .collect()
    }

    fn received(&self, i: usize, id: ChannelId) -> Vec<(bool, Vec<u8>)> {
        self.sides[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ChannelData {
                    id: c,
                    binary,
                    data,
                } if *c == id => Some((*binary, data.clone())),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn two_connections_connect_and_carry_channels() {
    let mut p = Pair::new();
    // A negotiated channel on both sides, and one the offerer opens with DCEP.
    let negotiated = ChannelConfig {
        negotiated: Some(0),
        ..ChannelConfig::reliable("peerweb")
    };
    let n0 = p.sides[0]
        .c
        .open_channel(p.now, negotiated.clone())
        .unwrap();
    let n1 = p.sides[1].c.open_channel(p.now, negotiated).unwrap();
    let chat = p.sides[0]
        .c
        .open_channel(p.now, ChannelConfig::reliable("chat"))
        .unwrap();
    let start = p.now;
    p.negotiate();
    assert!(p.run_until(Duration::from_secs(10), |p| p.connected()
        && p.sides[0].c.is_channel_open(chat)
        && p.opened(1).len() == 2));
    let took = p.now;
    let remote_chat = p.opened(1).iter().find(|(_, l)| l == "chat").unwrap().0;
    assert!(p.opened(0).iter().any(|(id, _)| *id == n0));
    assert!(p.opened(1).iter().any(|(id, _)| *id == n1));

    // Every kind of message, both ways, up to the largest the remote takes.
    let big: Vec<u8> = (0..p.sides[1].c.remote_max_message())
        .map(|i| (i % 251) as u8)
        .collect();
    let now = p.now;
    p.sides[0].c.send(now, n0, true, b"bin").unwrap();
    p.sides[0].c.send(now, n0, false, b"text").unwrap();
    p.sides[0].c.send(now, n0, true, b"").unwrap();
    p.sides[0].c.send(now, n0, false, b"").unwrap();
    p.sides[0].c.send(now, n0, true, &big).unwrap();
    p.sides[1].c.send(now, remote_chat, false, b"back").unwrap();
    assert!(
        p.sides[0]
            .c
            .send(now, n0, true, &vec![0; big.len() + 1])
            .is_err(),
        "above the remote's max-message-size"
    );
    assert!(
        p.run_until(Duration::from_secs(10), |p| p.received(1, n1).len() == 5
            && p.received(0, chat).len() == 1)
    );
    let got = p.received(1, n1);
    assert_eq!(got[0], (true, b"bin".to_vec()));
    assert_eq!(got[1], (false, b"text".to_vec()));
    assert_eq!(got[2], (true, Vec::new()));
    assert_eq!(got[3], (false, Vec::new()));
    assert!(got[4].1 == big, "the large message arrives whole");
    assert_eq!(p.received(0, chat), [(false, b"back".to_vec())]);
    assert!(
        took - start < Duration::from_millis(20),
        "connected without waiting on a retransmission ({:?})",
        took - start
    );
}

#[test]
fn a_lossy_link_still_connects_and_delivers_in_order() {
    let mut p = Pair::new();
    // 10% of datagrams lost, handshakes included.
    p.drop_every = 10;
    let cfg = ChannelConfig {
        negotiated: Some(1),
        ..ChannelConfig::reliable("bulk")
    };
    let a = p.sides[0].c.open_channel(p.now, cfg.clone()).unwrap();
    let b = p.sides[1].c.open_channel(p.now, cfg).unwrap();
    p.negotiate();
    let up = p.run_until(Duration::from_secs(60), |p| p.connected());
    assert!(
        up,
        "{:?} {:?} / {:?} {:?}",
        p.sides[0].c, p.sides[0].events, p.sides[1].c, p.sides[1].events
    );
    let now = p.now;
    for i in 0..200u32 {
        let msg = vec![(i % 256) as u8; 3000];
        p.sides[0].c.send(now, a, true, &msg).unwrap();
    }
    assert!(p.run_until(Duration::from_secs(120), |p| p.received(1, b).len() == 200));
    for (i, (_, m)) in p.received(1, b).iter().enumerate() {
        assert_eq!(m, &vec![(i % 256) as u8; 3000], "message {i}");
    }
}

#[test]
fn an_unreliable_channel_gives_up_on_lost_messages() {
    let mut p = Pair::new();
    let cfg = ChannelConfig {
        negotiated: Some(2),
        ordered: false,
        reliability: Reliability::Retransmits(0),
        ..ChannelConfig::reliable("lossy")
    };
    let a = p.sides[0].c.open_channel(p.now, cfg.clone()).unwrap();
    let b = p.sides[1].c.open_channel(p.now, cfg).unwrap();
    p.negotiate();
    assert!(p.run_until(Duration::from_secs(60), |p| p.connected()));
    p.drop_every = 5;
    let now = p.now;
    for i in 0..100u8 {
        // A packet each: some are lost.
        p.sides[0].c.send(now, a, true, &[i; 1000]).unwrap();
    }
    // Everything sent is accounted for: delivered or given up (nothing held for ever).
    assert!(p.run_until(Duration::from_secs(60), |p| p.sides[0].c.buffered() == 0));
    p.drop_every = 0;
    p.run_until(Duration::from_secs(2), |_| false);
    let got = p.received(1, b).len();
    assert!(got < 100, "some were dropped and not sent again ({got})");
    assert!(got > 50, "most arrived ({got})");
}

#[test]
fn a_certificate_that_does_not_match_the_fingerprint_ends_the_connection() {
    let mut p = Pair::new();
    let offer = p.sides[0].c.create_offer();
    let answer = p.sides[1].c.accept_offer(p.now, &offer).unwrap();
    // A man in the middle presents another certificate than the answer names: here, the
    // answer's fingerprint is altered on the way.
    let line = answer
        .lines()
        .find(|l| l.starts_with("a=fingerprint:"))
        .unwrap();
    let mut forged = line.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let answer = answer.replace(line, &forged);
    p.sides[0].c.accept_answer(p.now, &answer).unwrap();
    assert!(p.run_until(Duration::from_secs(30), |p| p.sides[0].c.is_closed()));
    assert!(
        p.sides[0]
            .events
            .contains(&Event::Closed(Some(Error::FingerprintMismatch))),
        "{:?}",
        p.sides[0].events
    );
    assert!(!p.sides[0].c.is_connected() && !p.sides[1].c.is_connected());
}

#[test]
fn bad_descriptions_are_errors() {
    let mut p = Pair::new();
    let now = p.now;
    let c = &mut p.sides[1].c;
    for bad in [
        "",
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:a\r\n",
        "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\na=fingerprint:sha-256 00:11\r\n",
    ] {
        assert!(
            matches!(c.accept_offer(now, bad), Err(Error::Sdp(_))),
            "{bad:?}"
        );
    }
    assert_eq!(c.accept_answer(now, "v=0"), Err(Error::NoOffer));
    let huge = "a".repeat(70_000);
    assert!(c.accept_offer(now, &huge).is_err());
}

#[test]
fn a_closed_channel_closes_on_both_sides_and_its_stream_is_reused() {
    let mut p = Pair::new();
    p.drop_every = 12;
    let chat = p.sides[0]
        .c
        .open_channel(p.now, ChannelConfig::reliable("chat"))
        .unwrap();
    p.negotiate();
    assert!(p.run_until(Duration::from_secs(60), |p| p.opened(1).len() == 1));
    let remote = p.opened(1)[0].0;
    // Messages sent right before the close still arrive, then both sides see it close.
    let now = p.now;
    for i in 0..30u8 {
        p.sides[0].c.send(now, chat, true, &[i; 2000]).unwrap();
    }
    p.sides[0].c.close_channel(now, chat);
    assert!(
        p.sides[0].c.send(now, chat, true, b"late").is_err(),
        "a closing channel takes nothing more"
    );
    let closed =
        |p: &Pair, i: usize, id: ChannelId| p.sides[i].events.contains(&Event::ChannelClose(id));
    assert!(p.run_until(Duration::from_secs(60), |p| closed(p, 0, chat)
        && closed(p, 1, remote)));
    assert_eq!(p.received(1, remote).len(), 30);
    assert_eq!(p.sides[0].c.channel_count(), 0);
    assert_eq!(p.sides[1].c.channel_count(), 0);
    // The answerer closes the next one it opens; a third, from the offerer, takes the first
    // one's stream again and carries ordered messages from the start.
    let now = p.now;
    let two = p.sides[1]
        .c
        .open_channel(now, ChannelConfig::reliable("two"))
        .unwrap();
    let find = |p: &Pair, i: usize, label: &str| {
        p.opened(i)
            .into_iter()
            .find(|(id, l)| l == label && p.sides[i].c.channel_label(*id).is_some())
            .map(|(id, _)| id)
    };
    assert!(
        p.run_until(Duration::from_secs(60), |p| find(p, 0, "two").is_some()
            && p.sides[1].c.is_channel_open(two))
    );
    let two_there = find(&p, 0, "two").unwrap();
    let now = p.now;
    p.sides[1].c.close_channel(now, two);
    assert!(p.run_until(Duration::from_secs(60), |p| closed(p, 1, two)
        && closed(p, 0, two_there)));
    let now = p.now;
    let three = p.sides[0]
        .c
        .open_channel(now, ChannelConfig::reliable("three"))
        .unwrap();
    assert!(p.run_until(Duration::from_secs(60), |p| find(p, 1, "three").is_some()));
    let three_there = find(&p, 1, "three").unwrap();
    let now = p.now;
    for i in 0..10u8 {
        p.sides[0].c.send(now, three, true, &[i]).unwrap();
    }
    assert!(p.run_until(
        Duration::from_secs(60),
        |p| p.received(1, three_there).len() == 10
    ));
    let got: Vec<u8> = p.received(1, three_there).iter().map(|m| m.1[0]).collect();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
}

#[test]
fn the_answerer_is_the_dtls_server_and_answers_before_its_nomination() {
    // The offerer controls ICE, so it nominates first: it offers to be the DTLS client, and
    // its ClientHello follows its nomination at once.
    let mut p = Pair::new();
    let offer = p.sides[0].c.create_offer();
    assert!(offer.contains("a=setup:active"), "{offer}");
    let answer = p.sides[1].c.accept_offer(p.now, &offer).unwrap();
    assert!(answer.contains("a=setup:passive"), "{answer}");
    // Records reach the answerer before any check did: dropped, nothing breaks.
    let (from, to, now) = (p.sides[0].addr, p.sides[1].addr, p.now);
    for junk in [&[22u8, 254, 253, 0, 0][..], &[23; 40], &[22; 13]] {
        p.sides[1]
            .c
            .handle_receive(now, peerweb_dataconn::Protocol::Udp, from, to, junk);
    }
    p.sides[0].c.accept_answer(p.now, &answer).unwrap();
    // The nominations never reach the answerer: it answers the ClientHello on the pair it
    // came on, and both sides connect all the same, without a retransmission's wait.
    p.lose_nominations = true;
    assert!(p.run_until(Duration::from_secs(10), |p| p.connected()));
    assert!(
        p.now - p.start < Duration::from_millis(20),
        "{:?}",
        p.now - p.start
    );
}

#[test]
fn a_channel_we_open_takes_messages_at_once_and_none_passes_its_open() {
    // RFC 8832 §6: the opener may send right after DATA_CHANNEL_OPEN; until the ACK its
    // messages go ordered even on an unordered channel, or a lost OPEN would let them arrive
    // on a stream the peer has no channel for (and be dropped). Over a lossy link, every
    // message arrives, after the channel.
    for seed in 0..8u64 {
        let mut p = Pair::new();
        p.rng ^= seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        p.negotiate();
        assert!(p.run_until(Duration::from_secs(10), |p| p.connected()));
        p.drop_every = 5;
        let cfg = ChannelConfig {
            ordered: false,
            ..ChannelConfig::reliable("fast")
        };
        let now = p.now;
        let id = p.sides[0].c.open_channel(now, cfg).unwrap();
        assert!(p.sides[0].c.is_channel_open(id), "open as its OPEN goes");
        for i in 0..20u8 {
            p.sides[0].c.send(now, id, true, &[i; 300]).unwrap();
        }
        assert!(
            p.run_until(Duration::from_secs(30), |p| {
                p.opened(1)
                    .iter()
                    .any(|(r, _)| p.received(1, *r).len() == 20)
            }),
            "seed {seed}: {:?} {:?}",
            p.opened(1),
            p.opened(1)
                .iter()
                .map(|(r, _)| p.received(1, *r).len())
                .collect::<Vec<_>>()
        );
        let remote = p.opened(1)[0].0;
        let mut got: Vec<u8> = p.received(1, remote).iter().map(|(_, d)| d[0]).collect();
        got.sort_unstable();
        assert_eq!(got, (0..20).collect::<Vec<u8>>());
    }
}
