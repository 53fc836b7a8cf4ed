use super::*;
use crate::chunk::{Unknown, kind, param};

const H: Header = Header {
    src_port: 5000,
    dst_port: 5000,
    vtag: 0xdead_beef,
};

fn packet(chunks: &[Chunk<'_>]) -> Vec<u8> {
    let mut w = Writer::new(H, Vec::new());
    for c in chunks {
        w.push(c).unwrap();
    }
    w.finish()
}

fn parsed(b: &[u8]) -> Vec<Chunk<'_>> {
    let p = Packet::parse(b).unwrap();
    assert_eq!(p.header, H);
    p.chunks().map(Result::unwrap).collect()
}

#[test]
fn crc32c_is_the_castagnoli_polynomial() {
    // The CRC-32C check value.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn every_chunk_goes_through_a_packet_and_back() {
    let mut init_params = Vec::new();
    Params::push(param::FORWARD_TSN_SUPPORTED, &[], &mut init_params).unwrap();
    Params::push(
        param::SUPPORTED_EXTENSIONS,
        &[kind::RECONFIG, kind::FORWARD_TSN],
        &mut init_params,
    )
    .unwrap();
    let mut ack_params = init_params.clone();
    Params::push(
        param::STATE_COOKIE,
        b"a cookie of odd size",
        &mut ack_params,
    )
    .unwrap();
    let init = Init {
        tag: 7,
        a_rwnd: 5 << 20,
        outbound_streams: 1024,
        inbound_streams: 65535,
        initial_tsn: u32::MAX - 1,
        params: Params::parse(&init_params).unwrap(),
    };
    let ack = Init {
        params: Params::parse(&ack_params).unwrap(),
        ..init
    };
    let mut gaps = Vec::new();
    Sack::encode_gaps([(2, 3), (5, 9)], &mut gaps);
    let dups = [0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff];
    let mut hb = Vec::new();
    Params::push(param::HEARTBEAT_INFO, b"\x01\x02\x03", &mut hb).unwrap();
    let mut causes = Vec::new();
    Params::push(12, b"user initiated abort", &mut causes).unwrap();
    let mut reconfig = Vec::new();
    ReconfigParam::OutgoingReset {
        request_seq: 1,
        response_seq: 0,
        last_tsn: 41,
        streams: Streams::new(&[0, 1, 0, 3]).unwrap(),
    }
    .encode(&mut reconfig)
    .unwrap();
    ReconfigParam::Response {
        response_seq: 9,
        result: 1,
    }
    .encode(&mut reconfig)
    .unwrap();
    let chunks = [
        Chunk::Init(init),
        Chunk::InitAck(ack),
        Chunk::CookieEcho(b"a cookie of odd size"),
        Chunk::CookieAck,
        Chunk::Data(Data {
            tsn: 42,
            stream: 3,
            ssn: 9,
            ppid: 53,
            unordered: true,
            begin: true,
            end: false,
            immediate: true,
            payload: b"hello, odd",
        }),
        Chunk::Sack(Sack::new(41, 1 << 20, &gaps, &dups).unwrap()),
        Chunk::Heartbeat(&hb),
        Chunk::HeartbeatAck(&hb),
        Chunk::ForwardTsn(ForwardTsn::new(50, &[0, 3, 0, 9]).unwrap()),
        Chunk::Reconfig(Params::parse(&reconfig).unwrap()),
        Chunk::Error {
            causes: Params::parse(&causes).unwrap(),
        },
        Chunk::Shutdown { cum_tsn: 60 },
        Chunk::ShutdownAck,
        Chunk::ShutdownComplete { reflected: true },
        Chunk::Abort {
            reflected: false,
            causes: Params::parse(&causes).unwrap(),
        },
        Chunk::Unknown {
            kind: 0x85,
            flags: 0x5a,
            value: b"xyz",
        },
    ];
    let b = packet(&chunks);
    assert!(b.len().is_multiple_of(4));
    let got = parsed(&b);
    assert_eq!(got, chunks);
    // And what it says.
    let Chunk::InitAck(a) = got[1] else { panic!() };
    assert_eq!(
        a.params.get(param::STATE_COOKIE),
        Some(&b"a cookie of odd size"[..])
    );
    assert!(a.params.supports(kind::RECONFIG) && !a.params.supports(kind::ABORT));
    assert!(a.params.get(param::FORWARD_TSN_SUPPORTED).is_some());
    let Chunk::Sack(s) = got[5] else { panic!() };
    assert_eq!(s.gap_blocks().collect::<Vec<_>>(), [(2, 3), (5, 9)]);
    assert_eq!(s.duplicates().collect::<Vec<_>>(), [9, u32::MAX]);
    let Chunk::ForwardTsn(f) = got[8] else {
        panic!()
    };
    assert_eq!(f.streams().collect::<Vec<_>>(), [(3, 9)]);
    let Chunk::Reconfig(r) = got[9] else { panic!() };
    let r: Vec<ReconfigParam<'_>> = r.iter().map(|p| ReconfigParam::parse(p).unwrap()).collect();
    let ReconfigParam::OutgoingReset {
        last_tsn, streams, ..
    } = r[0]
    else {
        panic!()
    };
    assert_eq!(
        (last_tsn, streams.iter().collect::<Vec<_>>()),
        (41, vec![1, 3])
    );
    assert_eq!(
        r[1],
        ReconfigParam::Response {
            response_seq: 9,
            result: 1
        }
    );
    assert_eq!(Chunk::unknown_action(0x85), Unknown::Skip);
    assert_eq!(Chunk::unknown_action(0x05), Unknown::Stop);
    assert_eq!(Chunk::unknown_action(0x45), Unknown::StopAndReport);
    assert_eq!(Chunk::unknown_action(0xc5), Unknown::SkipAndReport);
}

#[test]
fn the_last_chunk_may_come_without_its_padding() {
    let data = Chunk::Data(Data {
        tsn: 1,
        stream: 0,
        ssn: 0,
        ppid: 51,
        unordered: false,
        begin: true,
        end: true,
        immediate: false,
        payload: b"abc",
    });
    let mut b = packet(&[data]);
    b.pop();
    // The checksum covers the bytes as sent.
    let mut again = b.clone();
    packet::set_checksum(&mut again);
    assert_eq!(parsed(&again), [data]);
    assert_eq!(Packet::parse(&b).unwrap_err(), Error::BadChecksum);
}

/// `b` with a fresh checksum (to get past it to what is being tested).
fn resum(mut b: Vec<u8>) -> Vec<u8> {
    packet::set_checksum(&mut b);
    b
}

fn raw_chunk(kind: u8, flags: u8, value: &[u8]) -> Vec<u8> {
    let mut b = Writer::new(H, Vec::new()).finish();
    b.push(kind);
    b.push(flags);
    b.extend_from_slice(&(4 + value.len() as u16).to_be_bytes());
    b.extend_from_slice(value);
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    resum(b)
}

fn first(b: &[u8]) -> Result<Chunk<'_>, Error> {
    Packet::parse(b)?.chunks().next().unwrap()
}

#[test]
fn malformed_packets_and_chunks_are_errors() {
    assert!(matches!(Packet::parse(&[0; 11]), Err(Error::Malformed(_))));
    let mut b = packet(&[Chunk::CookieAck]);
    b[13] ^= 1;
    assert_eq!(Packet::parse(&b).unwrap_err(), Error::BadChecksum);
    // Chunk framing: shorter than a header, a length under four, one past the end.
    let mut b = Writer::new(H, Vec::new()).finish();
    b.extend_from_slice(&[11, 0]);
    assert!(matches!(Packet::parse(&resum(b)), Err(Error::Malformed(_))));
    let mut b = Writer::new(H, Vec::new()).finish();
    b.extend_from_slice(&[11, 0, 0, 3]);
    assert!(matches!(Packet::parse(&resum(b)), Err(Error::Malformed(_))));
    let mut b = Writer::new(H, Vec::new()).finish();
    b.extend_from_slice(&[0, 3, 0, 40, 1, 2, 3, 4]);
    assert!(matches!(Packet::parse(&resum(b)), Err(Error::Malformed(_))));
    // Contents.
    for (kind, value) in [
        (kind::DATA, &[0u8; 11][..]),
        (kind::INIT, &[0; 15][..]),
        (kind::INIT_ACK, &[0; 16 + 3][..]),
        (kind::SACK, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0][..]),
        (kind::SACK, &[0; 11][..]),
        (kind::HEARTBEAT, &[0, 2, 0, 4][..]),
        (kind::SHUTDOWN, &[0; 3][..]),
        (kind::FORWARD_TSN, &[0, 0, 0, 1, 0, 3][..]),
        (kind::RECONFIG, &[0, 13, 0, 8, 0, 0, 0, 1][..]),
        (kind::RECONFIG, &[0, 16, 0, 4][..]),
        (kind::ABORT, &[0, 12, 0, 9, 1, 2, 3][..]),
    ] {
        let b = raw_chunk(kind, 0, value);
        assert!(
            matches!(first(&b), Err(Error::Malformed(_))),
            "type {kind} {value:?}: {:?}",
            first(&b)
        );
    }
    // A DATA chunk with nothing in it parses (the association answers it with an ABORT).
    let b = raw_chunk(kind::DATA, 3, &[0; 12]);
    assert!(matches!(first(&b), Ok(Chunk::Data(d)) if d.payload.is_empty()));
}

#[test]
fn what_cannot_be_encoded_is_refused() {
    let big = vec![0; 70_000];
    let d = Chunk::Data(Data {
        tsn: 1,
        stream: 0,
        ssn: 0,
        ppid: 53,
        unordered: false,
        begin: true,
        end: true,
        immediate: false,
        payload: &big,
    });
    let mut out = Vec::new();
    assert_eq!(d.encode(&mut out), Err(Error::TooLarge));
    assert_eq!(Params::push(1, &big, &mut out), Err(Error::TooLarge));
    assert!(Sack::new(1, 1, &[0; 3], &[]).is_err());
    assert!(ForwardTsn::new(1, &[0; 2]).is_err());
    assert!(Streams::new(&[0; 3]).is_err());
}
