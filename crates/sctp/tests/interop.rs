//! The codec against a real SCTP stack: two `sctp-proto` endpoints (str0m's SCTP) run an
//! association — handshake, ordered and unordered messages, a lost packet (gap blocks, a
//! retransmission, FORWARD TSN for a message given up), a stream reset, a shutdown — and every
//! packet they exchange parses here, chunk by chunk, and encodes back to the same bytes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use peerweb_sctp::{Chunk, Packet, Writer};
use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Payload,
    PayloadProtocolIdentifier, ReliabilityType, ServerConfig,
};

const GAP_REPORTED: u8 = 255;

/// Parses `raw`, checks it encodes back to itself, and notes its chunk types.
fn check(raw: &[u8], seen: &mut BTreeSet<u8>) {
    let p = Packet::parse(raw).unwrap_or_else(|e| panic!("{e}: {raw:02x?}"));
    let mut w = Writer::new(p.header, Vec::new());
    for c in p.chunks() {
        let c: Chunk<'_> = c.unwrap_or_else(|e| panic!("{e}: {raw:02x?}"));
        seen.insert(c.kind());
        if let Chunk::Sack(s) = c
            && s.gap_blocks().next().is_some()
        {
            // (Not a chunk type: a SACK that reported a gap.)
            seen.insert(GAP_REPORTED);
        }
        w.push(&c).unwrap();
    }
    assert_eq!(w.finish(), raw, "encoded back");
}

struct Side {
    ep: Endpoint,
    assoc: Option<(AssociationHandle, Association)>,
    addr: SocketAddr,
}

struct Pair {
    sides: [Side; 2],
    now: Instant,
    seen: BTreeSet<u8>,
    packets: usize,
    /// Drop the next DATA-carrying packet from side 0.
    drop_data: bool,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let client_addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let server_addr: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let mut client = Endpoint::new(Arc::new(EndpointConfig::default()), None);
        let server = Endpoint::new(
            Arc::new(EndpointConfig::default()),
            Some(Arc::new(ServerConfig::default())),
        );
        let assoc = client
            .connect(ClientConfig::default(), server_addr)
            .unwrap();
        Pair {
            sides: [
                Side {
                    ep: client,
                    assoc: Some(assoc),
                    addr: client_addr,
                },
                Side {
                    ep: server,
                    assoc: None,
                    addr: server_addr,
                },
            ],
            now,
            seen: BTreeSet::new(),
            packets: 0,
            drop_data: false,
        }
    }

    fn assoc(&mut self, i: usize) -> &mut Association {
        &mut self.sides[i].assoc.as_mut().unwrap().1
    }

    /// Moves packets both ways until neither side has any, then lets `step` of time pass.
    fn run(&mut self, step: Duration) {
        for _ in 0..1000 {
            let mut moved = false;
            for i in 0..2 {
                let mut out = Vec::new();
                if let Some((_, a)) = self.sides[i].assoc.as_mut() {
                    while let Some(t) = a.poll_transmit(self.now) {
                        if let Payload::RawEncode(raws) = t.payload {
                            out.extend(raws);
                        }
                    }
                }
                for raw in out {
                    moved = true;
                    self.packets += 1;
                    check(&raw, &mut self.seen);
                    let has_data = Packet::parse(&raw)
                        .unwrap()
                        .chunks()
                        .any(|c| matches!(c, Ok(Chunk::Data(_))));
                    if i == 0 && has_data && self.drop_data {
                        self.drop_data = false;
                        continue;
                    }
                    self.deliver(1 - i, raw);
                }
            }
            if !moved {
                break;
            }
        }
        self.now += step;
        for s in &mut self.sides {
            if let Some((_, a)) = s.assoc.as_mut() {
                a.handle_timeout(self.now);
            }
        }
    }

    fn deliver(&mut self, to: usize, raw: Bytes) {
        let from = self.sides[1 - to].addr;
        let now = self.now;
        let side = &mut self.sides[to];
        match side.ep.handle(now, from, None, None, raw) {
            Some((h, DatagramEvent::NewAssociation(a))) => side.assoc = Some((h, a)),
            Some((_, DatagramEvent::AssociationEvent(ev))) => {
                if let Some((_, a)) = side.assoc.as_mut() {
                    a.handle_event(ev);
                }
            }
            None => {}
        }
    }

    /// What side `i` has received on `stream`, message by message.
    fn read(&mut self, i: usize, stream: u16) -> Vec<Vec<u8>> {
        let a = self.assoc(i);
        while a.accept_stream().is_some() {}
        let Ok(mut s) = a.stream(stream) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Ok(Some(chunks)) = s.read_sctp() {
            let mut buf = vec![0; chunks.len()];
            let n = chunks.read(&mut buf).unwrap();
            buf.truncate(n);
            out.push(buf);
        }
        out
    }
}

#[test]
fn every_packet_of_a_real_association_parses_and_encodes_back() {
    let mut p = Pair::new();
    for _ in 0..20 {
        p.run(Duration::from_millis(10));
    }
    assert!(p.sides[1].assoc.is_some(), "the server side was made");
    // Ordered messages on stream 1, small and spanning several packets.
    let msgs: Vec<Bytes> = (0..20u8)
        .map(|i| {
            Bytes::from(vec![
                i;
                if i % 5 == 0 {
                    4000
                } else {
                    100 + usize::from(i)
                }
            ])
        })
        .collect();
    {
        let mut s = p
            .assoc(0)
            .open_stream(1, PayloadProtocolIdentifier::Binary)
            .unwrap();
        for (i, m) in msgs.iter().enumerate() {
            if i == 5 {
                // (Written later, after a loss.)
                break;
            }
            s.write_sctp(m, PayloadProtocolIdentifier::Binary).unwrap();
        }
    }
    p.run(Duration::from_millis(10));
    // One packet lost: the receiver reports a gap, the sender retransmits.
    p.drop_data = true;
    {
        let mut s = p.assoc(0).stream(1).unwrap();
        for m in &msgs[5..] {
            s.write_sctp(m, PayloadProtocolIdentifier::Binary).unwrap();
        }
    }
    for _ in 0..400 {
        p.run(Duration::from_millis(10));
    }
    let got = p.read(1, 1);
    assert_eq!(got.len(), msgs.len(), "every message");
    assert!(got.iter().zip(&msgs).all(|(g, m)| g[..] == m[..]));
    // An unordered stream that gives up after no retransmission: a lost message is skipped
    // with FORWARD TSN.
    {
        let mut s = p
            .assoc(0)
            .open_stream(2, PayloadProtocolIdentifier::Binary)
            .unwrap();
        s.set_reliability_params(true, ReliabilityType::Rexmit, 0)
            .unwrap();
    }
    p.drop_data = true;
    {
        let mut s = p.assoc(0).stream(2).unwrap();
        for i in 0..5u8 {
            s.write_sctp(
                &Bytes::from(vec![i; 300]),
                PayloadProtocolIdentifier::Binary,
            )
            .unwrap();
        }
    }
    for _ in 0..400 {
        p.run(Duration::from_millis(10));
    }
    // A stream reset (a data channel closing), then the association's shutdown.
    p.assoc(0).stream(1).unwrap().close().unwrap();
    for _ in 0..100 {
        p.run(Duration::from_millis(10));
    }
    p.assoc(0).close().unwrap();
    for _ in 0..100 {
        p.run(Duration::from_millis(10));
    }
    println!("{} packets, chunk types {:?}", p.packets, p.seen);
    use peerweb_sctp::chunk::kind;
    for k in [
        kind::INIT,
        kind::INIT_ACK,
        kind::COOKIE_ECHO,
        kind::COOKIE_ACK,
        kind::DATA,
        kind::SACK,
        kind::FORWARD_TSN,
        kind::RECONFIG,
        GAP_REPORTED,
    ] {
        assert!(
            p.seen.contains(&k),
            "no chunk of type {k} went by: {:?}",
            p.seen
        );
    }
}

/// Our association against sctp-proto's server side: the setup (INIT, INIT ACK with its
/// cookie, COOKIE ECHO, COOKIE ACK), then messages both ways — ours (one of 60 kB, cut into
/// chunks; its default largest message is 64 KiB) read on its stream, its reply read here.
#[test]
fn our_association_talks_with_sctp_proto() {
    use peerweb_sctp::assoc::{self, State};
    use peerweb_sctp::outstanding::Reliability;
    let mut now = Instant::now();
    let from: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let mut server = Endpoint::new(
        Arc::new(EndpointConfig::default()),
        Some(Arc::new(ServerConfig::default())),
    );
    let mut ours = assoc::Association::connect(assoc::Config::default(), now, [7; 40]);
    let mut theirs: Option<Association> = None;
    let mut connected = false;
    let mut seen = BTreeSet::new();
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
    let mut sent = false;
    let mut replied = false;
    let mut got_there: Vec<Vec<u8>> = Vec::new();
    let mut got_here: Vec<Vec<u8>> = Vec::new();
    for _ in 0..2000 {
        if ours.state() == State::Established && !sent {
            ours.send_message(now, 1, 53, false, Reliability::default(), b"hello")
                .unwrap();
            ours.send_message(now, 1, 53, false, Reliability::default(), &big)
                .unwrap();
            sent = true;
        }
        while let Some(p) = ours.poll_transmit() {
            check(&p, &mut seen);
            match server.handle(now, from, None, None, Bytes::from(p)) {
                Some((_, DatagramEvent::NewAssociation(a))) => theirs = Some(a),
                Some((_, DatagramEvent::AssociationEvent(ev))) => {
                    if let Some(a) = theirs.as_mut() {
                        a.handle_event(ev);
                    }
                }
                None => {}
            }
        }
        if let Some(a) = theirs.as_mut() {
            while let Some(ev) = a.poll() {
                connected |= matches!(ev, sctp_proto::Event::Connected);
            }
            while a.accept_stream().is_some() {}
            if let Ok(mut st) = a.stream(1) {
                while let Ok(Some(chunks)) = st.read_sctp() {
                    let mut buf = vec![0; chunks.len()];
                    let n = chunks.read(&mut buf).unwrap();
                    buf.truncate(n);
                    got_there.push(buf);
                }
                if got_there.len() == 2 && !replied {
                    st.write_sctp(
                        &Bytes::from_static(b"back"),
                        PayloadProtocolIdentifier::Binary,
                    )
                    .unwrap();
                    replied = true;
                }
            }
            while let Some(t) = a.poll_transmit(now) {
                if let Payload::RawEncode(raws) = t.payload {
                    for raw in raws {
                        check(&raw, &mut seen);
                        ours.handle_packet(now, &raw);
                    }
                }
            }
            a.handle_timeout(now);
        }
        while let Some(m) = ours.poll_message() {
            got_here.push(m.data);
        }
        if !got_here.is_empty() {
            break;
        }
        now += Duration::from_millis(5);
        ours.handle_timeout(now);
    }
    assert_eq!(ours.state(), State::Established);
    assert!(connected, "sctp-proto's side is up too");
    assert_eq!(
        got_there,
        [b"hello".to_vec(), big],
        "ours, read by sctp-proto"
    );
    assert_eq!(got_here, [b"back".to_vec()], "sctp-proto's, read here");
    assert!(seen.contains(&peerweb_sctp::chunk::kind::SACK));
}
