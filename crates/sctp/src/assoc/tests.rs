//! The association in virtual time: its setup (simultaneous, lossy, refused input) and data
//! transfer over a lossy link.
use super::*;
use crate::chunk::ReconfigParam;

std::thread_local! {
    /// One start time for both ends of a test.
    static T0: Instant = Instant::now();
}

fn random(seed: u8) -> [u8; 40] {
    let mut r = [0; 40];
    for (i, b) in r.iter_mut().enumerate() {
        *b = seed
            .wrapping_mul(31)
            .wrapping_add((i as u8).wrapping_mul(7));
    }
    r
}

/// Two associations wired to each other; `lose(n)` says whether the n-th packet is lost.
fn run(
    a: &mut Association,
    b: &mut Association,
    mut lose: impl FnMut(usize) -> bool,
) -> std::time::Duration {
    let start = a.start;
    let mut now = start;
    let mut n = 0;
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(p) = a.poll_transmit() {
            moved = true;
            n += 1;
            if !lose(n) {
                b.handle_packet(now, &p);
            }
        }
        while let Some(p) = b.poll_transmit() {
            moved = true;
            n += 1;
            if !lose(n) {
                a.handle_packet(now, &p);
            }
        }
        if moved {
            continue;
        }
        let done = |x: &Association| matches!(x.state(), State::Established | State::Closed(_));
        if done(a) && done(b) {
            break;
        }
        let next = [a.poll_timeout(), b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else { break };
        now = next.max(now);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    now - start
}

#[test]
fn both_sides_connecting_at_once_get_established() {
    let mut a = Association::connect(Config::default(), T0.with(|t| *t), random(1));
    let mut b = Association::connect(Config::default(), T0.with(|t| *t), random(2));
    let took = run(&mut a, &mut b, |_| false);
    assert_eq!(
        (a.state(), b.state()),
        (State::Established, State::Established)
    );
    assert_eq!(took, std::time::Duration::ZERO, "no timer needed");
    assert_eq!(a.peer().unwrap().tag, b.local_tag());
    assert_eq!(b.peer().unwrap().tag, a.local_tag());
    assert!(a.peer().unwrap().forward_tsn && a.peer().unwrap().reconfig);
}

#[test]
fn lost_setup_packets_are_sent_again_and_too_many_losses_fail() {
    // The first three packets lost (both INITs and an INIT ACK): T1 brings them back.
    let mut a = Association::connect(Config::default(), T0.with(|t| *t), random(3));
    let mut b = Association::connect(Config::default(), T0.with(|t| *t), random(4));
    let took = run(&mut a, &mut b, |n| n <= 3);
    assert_eq!(
        (a.state(), b.state()),
        (State::Established, State::Established)
    );
    assert!(
        took >= std::time::Duration::from_secs(1),
        "after the initial RTO: {took:?}"
    );
    // A peer that never answers: the setup fails after its attempts.
    let mut a = Association::connect(Config::default(), T0.with(|t| *t), random(5));
    let mut b = Association::connect(Config::default(), T0.with(|t| *t), random(6));
    run(&mut a, &mut b, |_| true);
    assert_eq!(a.state(), State::Closed(Closed::SetupFailed));
}

#[test]
fn wrong_tags_forged_cookies_and_stray_chunks_are_dropped() {
    let mut a = Association::connect(Config::default(), T0.with(|t| *t), random(7));
    let mut b = Association::connect(Config::default(), T0.with(|t| *t), random(8));
    let a_init = a.poll_transmit().unwrap();
    b.poll_transmit();
    // An INIT with a nonzero tag in its header, then a COOKIE ECHO with a made-up cookie.
    let mut bad = a_init.clone();
    bad[4..8].copy_from_slice(&9u32.to_be_bytes());
    crate::packet::set_checksum(&mut bad);
    assert!(!b.handle_packet(T0.with(|t| *t), &bad));
    let hdr = Header {
        src_port: 5000,
        dst_port: 5000,
        vtag: b.local_tag(),
    };
    let mut w = Writer::new(hdr, Vec::new());
    w.push(&Chunk::CookieEcho(&[0; COOKIE_LEN])).unwrap();
    assert!(!b.handle_packet(T0.with(|t| *t), &w.finish()));
    // A COOKIE ACK before anything, and garbage.
    let mut w = Writer::new(hdr, Vec::new());
    w.push(&Chunk::CookieAck).unwrap();
    assert!(!b.handle_packet(T0.with(|t| *t), &w.finish()));
    assert!(!b.handle_packet(T0.with(|t| *t), b"not sctp at all"));
    assert_eq!(b.state(), State::CookieWait);
    // The real INIT is answered.
    assert!(b.handle_packet(T0.with(|t| *t), &a_init));
    // An ABORT with the wrong tag is ignored; with ours it closes.
    let mut w = Writer::new(Header { vtag: 1, ..hdr }, Vec::new());
    let abort = Chunk::Abort {
        reflected: false,
        causes: Params::raw(&[]),
    };
    w.push(&abort).unwrap();
    assert!(!b.handle_packet(T0.with(|t| *t), &w.finish()));
    let mut w = Writer::new(hdr, Vec::new());
    w.push(&abort).unwrap();
    assert!(b.handle_packet(T0.with(|t| *t), &w.finish()));
    assert_eq!(b.state(), State::Closed(Closed::Aborted));
}

#[test]
fn random_losses_still_connect_or_fail_cleanly() {
    let mut rand = crate::test_rng(0x5eed);
    let mut established = 0;
    for seed in 0..100u8 {
        let mut a = Association::connect(Config::default(), T0.with(|t| *t), random(seed));
        let mut b = Association::connect(
            Config::default(),
            T0.with(|t| *t),
            random(seed.wrapping_add(100)),
        );
        let x = rand();
        run(&mut a, &mut b, |_| rand() % 100 < 30 + x % 20);
        for s in [a.state(), b.state()] {
            assert!(
                matches!(s, State::Established | State::Closed(Closed::SetupFailed)),
                "seed {seed}: {s:?}"
            );
        }
        if a.state() == State::Established && b.state() == State::Established {
            established += 1;
            assert_eq!(a.peer().map(|p| p.tag), Some(b.local_tag()), "seed {seed}");
            assert_eq!(b.peer().map(|p| p.tag), Some(a.local_tag()), "seed {seed}");
        }
    }
    assert!(
        established > 90,
        "only {established} of 100 connected at 30–50% loss"
    );
}

/// Two established associations over a link with a one-way `delay`, losing a packet with
/// probability `loss_pct`%; runs until `done` or `limit` of virtual time.
struct Link {
    a: Association,
    b: Association,
    now: Instant,
    /// (arrival, to b?, packet)
    wire: Vec<(Instant, bool, Vec<u8>)>,
    rand: Box<dyn FnMut() -> u64>,
    delay: std::time::Duration,
    loss_pct: u64,
    got: [Vec<Message>; 2],
    /// A bottleneck from a to b: bytes per second, and the most queueing time its router
    /// holds (drop-tail beyond). None: no bottleneck.
    bottleneck: Option<(f64, std::time::Duration)>,
    /// When the bottleneck has sent all it holds.
    busy: Instant,
    dropped: usize,
    /// Stream-reset events of a and b.
    events: [Vec<StreamEvent>; 2],
    /// Whether the application reads what arrives (with `hold_messages`: releases it), and
    /// the bytes of messages it has not read.
    reading: bool,
    unread: [usize; 2],
    /// Packets from a to b so far, and which of them (by that count) the link loses.
    to_b: usize,
    lose_to_b: Vec<usize>,
}

impl Link {
    fn new(seed: u64, delay_ms: u64, loss_pct: u64) -> Link {
        Link::with(Config::default(), seed, delay_ms, loss_pct)
    }

    fn with(cfg: Config, seed: u64, delay_ms: u64, loss_pct: u64) -> Link {
        let now = T0.with(|t| *t);
        let mut l = Link {
            a: Association::connect(cfg, now, random(seed as u8)),
            b: Association::connect(cfg, now, random(seed as u8 ^ 0x55)),
            now,
            wire: Vec::new(),
            rand: Box::new(crate::test_rng(seed | 1)),
            delay: std::time::Duration::from_millis(delay_ms),
            loss_pct: 0,
            got: [Vec::new(), Vec::new()],
            bottleneck: None,
            busy: now,
            dropped: 0,
            events: [Vec::new(), Vec::new()],
            reading: true,
            unread: [0, 0],
            to_b: 0,
            lose_to_b: Vec::new(),
        };
        l.run(std::time::Duration::from_secs(5), |l| {
            l.a.state() == State::Established && l.b.state() == State::Established
        });
        l.loss_pct = loss_pct;
        l
    }

    fn pump(&mut self) {
        let now = self.now;
        for to_b in [true, false] {
            let from = if to_b { &mut self.a } else { &mut self.b };
            while let Some(p) = from.poll_transmit() {
                if to_b {
                    self.to_b += 1;
                    if self.lose_to_b.contains(&self.to_b) {
                        continue;
                    }
                }
                if (self.rand)() % 100 < self.loss_pct {
                    continue;
                }
                let mut at = now;
                if let (true, Some((rate, queue))) = (to_b, self.bottleneck) {
                    let start = self.busy.max(now);
                    if start > now + queue {
                        self.dropped += 1;
                        continue;
                    }
                    at = start + std::time::Duration::from_secs_f64(p.len() as f64 / rate);
                    self.busy = at;
                }
                self.wire.push((at + self.delay, to_b, p));
            }
        }
    }

    fn run(&mut self, limit: std::time::Duration, mut done: impl FnMut(&Link) -> bool) {
        let end = self.now + limit;
        loop {
            self.pump();
            for (i, x) in [&mut self.a, &mut self.b].into_iter().enumerate() {
                while let Some(m) = x.poll_message() {
                    self.unread[i] += m.data.len();
                    self.got[i].push(m);
                }
                if self.reading && self.unread[i] > 0 {
                    x.release(self.now, std::mem::take(&mut self.unread[i]));
                }
                while let Some(e) = x.poll_stream_event() {
                    self.events[i].push(e);
                }
            }
            if done(self) {
                return;
            }
            if self.now >= end {
                break;
            }
            let next_packet = self.wire.iter().map(|(t, _, _)| *t).min();
            let next = [next_packet, self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
            self.now = next.max(self.now);
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wire)
                .into_iter()
                .partition(|(t, _, _)| *t <= now);
            self.wire = later;
            for (_, to_b, p) in due {
                if to_b {
                    self.b.handle_packet(now, &p);
                } else {
                    self.a.handle_packet(now, &p);
                }
            }
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
        }
        panic!("not done after {limit:?}");
    }
}

#[test]
fn messages_arrive_whole_and_in_order_over_a_lossy_link() {
    for seed in 0..6u64 {
        let mut l = Link::new(seed, 10, 5);
        let mut rand = crate::test_rng(seed + 77);
        let mut sent: Vec<(u16, Vec<u8>)> = Vec::new();
        for i in 0..150u32 {
            let stream = (rand() % 3) as u16;
            let len = 1 + (rand() % 6000) as usize;
            let body: Vec<u8> = (0..len).map(|j| (i as usize * 7 + j) as u8).collect();
            let now = l.now;
            l.a.send_message(now, stream, 53, false, Reliability::default(), &body)
                .unwrap();
            sent.push((stream, body));
        }
        let total = sent.len();
        l.run(std::time::Duration::from_secs(120), |l| {
            l.got[1].len() == total
        });
        for stream in 0..3u16 {
            let want: Vec<&Vec<u8>> = sent
                .iter()
                .filter(|(s, _)| *s == stream)
                .map(|(_, b)| b)
                .collect();
            let have: Vec<&Vec<u8>> = l.got[1]
                .iter()
                .filter(|m| m.stream == stream)
                .map(|m| &m.data)
                .collect();
            assert_eq!(have, want, "seed {seed} stream {stream}");
        }
        // Everything acknowledged in the end.
        l.run(std::time::Duration::from_secs(30), |l| l.a.buffered() == 0);
    }
}

#[test]
fn a_large_message_goes_in_many_packets_and_the_window_opens() {
    let mut l = Link::new(9, 5, 0);
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let now = l.now;
    l.a.send_message(now, 1, 53, false, Reliability::default(), &body)
        .unwrap();
    let start = l.now;
    l.run(std::time::Duration::from_secs(30), |l| !l.got[1].is_empty());
    assert_eq!(l.got[1][0].data, body);
    println!(
        "1 MB in {:?} of virtual time, cwnd {}",
        l.now - start,
        l.a.cwnd()
    );
    assert!(
        l.a.cwnd() > 100_000,
        "slow start opened the window: {}",
        l.a.cwnd()
    );
    // ~1 MB over a 10 ms round trip: a few dozen round trips, not hundreds.
    assert!(
        l.now - start < std::time::Duration::from_secs(2),
        "{:?}",
        l.now - start
    );
}

#[test]
fn a_reader_that_stops_stops_the_sender_and_reading_again_resumes_it_at_once() {
    let cfg = Config {
        a_rwnd: 256 * 1024,
        hold_messages: true,
        ..Config::default()
    };
    let mut l = Link::with(cfg, 21, 10, 0);
    l.reading = false;
    let sent: Vec<Vec<u8>> = (0..40u32)
        .map(|i| (0..65536u32).map(|j| (i * 3 + j) as u8).collect())
        .collect();
    for body in &sent {
        let now = l.now;
        l.a.send_message(now, 1, 53, false, Reliability::default(), body)
            .unwrap();
    }
    // Ten seconds of a reader that reads nothing: what waits for it stays within the
    // window, and the sender holds the rest.
    let stop = l.now + std::time::Duration::from_secs(10);
    l.run(std::time::Duration::from_secs(11), |l| l.now >= stop);
    assert!(l.unread[1] > 0, "something arrived");
    assert!(
        l.unread[1] + l.b.flow.as_ref().unwrap().reasm.buffered() <= 256 * 1024 + 1200,
        "unread {} within the window",
        l.unread[1]
    );
    assert!(l.a.buffered() > 2 << 20, "the sender holds the rest");
    // The reader reads: a SACK opens the window at once, not a backed-off timer.
    l.reading = true;
    let start = l.now;
    l.run(std::time::Duration::from_secs(60), |l| l.got[1].len() == 40);
    let took = l.now - start;
    println!("{took:?} {:?} cwnd {}", l.a.stats(), l.a.cwnd());
    assert!(
        took < std::time::Duration::from_secs(1),
        "2.5 MB took {took:?} after reading resumed"
    );
    let got: Vec<&Vec<u8>> = l.got[1].iter().map(|m| &m.data).collect();
    assert_eq!(got, sent.iter().collect::<Vec<_>>());
}

#[test]
fn an_unreliable_channel_drops_instead_of_stalling() {
    let mut l = Link::new(11, 10, 20);
    let never_again = Reliability {
        max_retransmits: Some(0),
        expires: None,
    };
    for i in 0..200u32 {
        let now = l.now;
        l.a.send_message(now, 2, 53, true, never_again, &i.to_be_bytes())
            .unwrap();
        // Each in a packet of its own (each may be lost on its own).
        l.pump();
    }
    // A reliable message after them still arrives; the unreliable ones arrive at most once.
    let now = l.now;
    l.a.send_message(now, 4, 51, false, Reliability::default(), b"after")
        .unwrap();
    l.run(std::time::Duration::from_secs(60), |l| {
        l.got[1].iter().any(|m| m.data == b"after")
    });
    let mut ids: Vec<u32> = l.got[1]
        .iter()
        .filter(|m| m.stream == 2)
        .map(|m| u32::from_be_bytes(m.data[..4].try_into().unwrap()))
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "none twice");
    assert!(n < 200, "some were lost and not sent again: {n}");
    assert!(n > 100, "most arrived: {n}");
}

#[test]
fn small_messages_share_packets() {
    let mut l = Link::new(13, 5, 0);
    for i in 0..50u8 {
        let now = l.now;
        l.a.send_message(now, 1, 51, false, Reliability::default(), &[i; 10])
            .unwrap();
    }
    let mut packets = 0;
    while let Some(p) = l.a.poll_transmit() {
        assert!(p.len() <= Config::default().mtu);
        packets += 1;
        l.wire.push((l.now + l.delay, true, p));
    }
    // 28 bytes a chunk: 42 fit in a packet of 1,200.
    assert_eq!(packets, 2, "50 messages in as few packets as fit");
    l.run(std::time::Duration::from_secs(5), |l| l.got[1].len() == 50);
    assert!(
        l.got[1]
            .iter()
            .enumerate()
            .all(|(i, m)| m.data == [i as u8; 10])
    );
}

/// 50 ms RTT, 25 MB/s with `queue_ms` of router buffer: slow start overshoots and the router
/// drops much of a burst. Recovery must keep the link busy, not collapse, and send again only
/// what was lost.
fn a_bottleneck_stays_busy(queue_ms: u64) {
    let mut l = Link::new(3, 25, 0);
    l.bottleneck = Some((25e6, std::time::Duration::from_millis(queue_ms)));
    let chunk = vec![5u8; 64 * 1024];
    let start = l.now;
    let span = std::time::Duration::from_secs(6);
    let mut sent = 0usize;
    while l.now < start + span {
        while l.a.buffered() < 8 << 20 {
            let now = l.now;
            l.a.send_message(now, 1, 53, false, Reliability::default(), &chunk)
                .unwrap();
            sent += chunk.len();
        }
        let until = l.now + std::time::Duration::from_millis(100);
        l.run(std::time::Duration::from_secs(1), |l| l.now >= until);
    }
    let got: usize = l.got[1].iter().map(|m| m.data.len()).sum();
    let rate = got as f64 / span.as_secs_f64() / 1e6;
    let s = l.a.stats();
    println!(
        "queue {queue_ms} ms: {rate:.1} MB/s of 25, {} dropped at the router, cwnd {}, sent {sent}, {s:?}",
        l.dropped,
        l.a.cwnd(),
    );
    // Before RACK and PRR: 0.4 / 15.6 / 12.3 MB/s at 5 / 20 / 50 ms, each after T3s (halving
    // the window left more in flight than it allowed: nothing went until the timer), and
    // with 2.5x as many retransmissions as drops at 20 ms.
    assert!(rate > 14.0, "{rate:.1} MB/s on a 25 MB/s bottleneck");
    assert_eq!(s.timeouts, 0);
    assert!(
        s.chunks_retransmitted as usize <= l.dropped + l.dropped / 10,
        "{} sent again for {} dropped",
        s.chunks_retransmitted,
        l.dropped
    );
}

#[test]
fn a_bottleneck_with_a_5_ms_queue_stays_busy() {
    a_bottleneck_stays_busy(5);
}

#[test]
fn a_bottleneck_with_a_20_ms_queue_stays_busy() {
    a_bottleneck_stays_busy(20);
}

#[test]
fn a_bottleneck_with_a_50_ms_queue_stays_busy() {
    a_bottleneck_stays_busy(50);
}

/// A packet of `chunks` to `to`, with its tag.
fn packet_to(to: &Association, chunks: &[Chunk<'_>]) -> Vec<u8> {
    let hdr = Header {
        src_port: 5000,
        dst_port: 5000,
        vtag: to.local_tag(),
    };
    let mut w = Writer::new(hdr, Vec::new());
    for c in chunks {
        w.push(c).unwrap();
    }
    w.finish()
}

/// The kinds of the chunks in the packets `x` sends now.
fn sent_kinds(x: &mut Association) -> Vec<u8> {
    let mut kinds = Vec::new();
    while let Some(p) = x.poll_transmit() {
        let p = Packet::parse(&p).unwrap();
        kinds.extend(p.chunks().map(|c| c.unwrap().kind()));
    }
    kinds
}

#[test]
fn closing_a_channel_resets_its_streams_both_ways_and_they_start_over() {
    // RFC 8831 §6.7 over a lossy link: a resets its stream 1 right after queueing messages
    // on it (the request waits for them and names their last TSN); b, once they are all in,
    // starts the stream over and resets its own stream 1; both then reuse it from SSN 0.
    for seed in 0..12u64 {
        let mut l = Link::new(seed, 10, 10);
        let body = vec![7u8; 3000];
        for i in 0..20u8 {
            let now = l.now;
            for stream in [1, 2] {
                l.a.send_message(now, stream, 53, false, Reliability::default(), &[i; 700])
                    .unwrap();
            }
        }
        let now = l.now;
        l.a.send_message(now, 1, 53, false, Reliability::default(), &body)
            .unwrap();
        l.a.reset_streams(now, &[1]);
        l.run(std::time::Duration::from_secs(60), |l| {
            l.events[1].contains(&StreamEvent::IncomingReset(vec![1]))
        });
        // Everything sent on stream 1 before the reset arrived first.
        let on_1 = l.got[1].iter().filter(|m| m.stream == 1).count();
        assert_eq!(on_1, 21, "seed {seed}");
        let now = l.now;
        l.b.reset_streams(now, &[1]);
        l.run(std::time::Duration::from_secs(60), |l| {
            let done = |e: &Vec<StreamEvent>| {
                e.contains(&StreamEvent::OutgoingReset {
                    streams: vec![1],
                    performed: true,
                })
            };
            done(&l.events[0]) && done(&l.events[1])
        });
        assert!(
            l.events[0].contains(&StreamEvent::IncomingReset(vec![1])),
            "seed {seed}: {:?}",
            l.events[0]
        );
        // Reused both ways: ordered delivery starts again at SSN 0 on each side.
        let now = l.now;
        for i in 0..5u8 {
            l.a.send_message(now, 1, 53, false, Reliability::default(), &[100 + i])
                .unwrap();
            l.b.send_message(now, 1, 53, false, Reliability::default(), &[200 + i])
                .unwrap();
        }
        l.run(std::time::Duration::from_secs(60), |l| {
            let after = |got: &Vec<Message>, x: u8| {
                got.iter()
                    .filter(|m| m.data.len() == 1 && m.data[0] >= x)
                    .count()
                    == 5
            };
            after(&l.got[1], 100) && after(&l.got[0], 200)
        });
        let order: Vec<u8> = l.got[1]
            .iter()
            .filter(|m| m.stream == 1 && m.data.len() == 1)
            .map(|m| m.data[0])
            .collect();
        assert_eq!(order, [100, 101, 102, 103, 104], "seed {seed}");
        let order: Vec<u8> = l.got[0].iter().map(|m| m.data[0]).collect();
        assert_eq!(order, [200, 201, 202, 203, 204], "seed {seed}");
        // Stream 2 went on untouched.
        assert_eq!(l.got[1].iter().filter(|m| m.stream == 2).count(), 20);
    }
}

#[test]
fn reset_requests_out_of_sequence_or_asking_us_are_refused() {
    let mut l = Link::new(21, 5, 0);
    let peer_tsn = l.b.peer().unwrap().initial_tsn;
    let mut req = Vec::new();
    // A request with a sequence number far ahead: "bad sequence number", nothing reset.
    let wire = 1u16.to_be_bytes();
    ReconfigParam::OutgoingReset {
        request_seq: peer_tsn.wrapping_add(50),
        response_seq: 0,
        last_tsn: peer_tsn.wrapping_sub(1),
        streams: crate::chunk::Streams::new(&wire).unwrap(),
    }
    .encode(&mut req)
    .unwrap();
    let now = l.now;
    assert!(l.b.handle_packet(now, &packet_to(&l.b, &[Chunk::Reconfig(Params::raw(&req))])));
    assert_eq!(l.b.poll_stream_event(), None);
    let answer = |b: &mut Association| {
        let mut results = Vec::new();
        while let Some(p) = b.poll_transmit() {
            let p = Packet::parse(&p).unwrap();
            for c in p.chunks() {
                if let Ok(Chunk::Reconfig(params)) = c {
                    for q in params.iter() {
                        if let Ok(ReconfigParam::Response { result, .. }) = ReconfigParam::parse(q)
                        {
                            results.push(result);
                        }
                    }
                }
            }
        }
        results
    };
    assert_eq!(answer(&mut l.b), [5], "bad sequence number");
    // Asking b to reset its own outgoing streams: denied.
    req.clear();
    ReconfigParam::IncomingReset {
        request_seq: peer_tsn,
        streams: crate::chunk::Streams::new(&wire).unwrap(),
    }
    .encode(&mut req)
    .unwrap();
    assert!(l.b.handle_packet(now, &packet_to(&l.b, &[Chunk::Reconfig(Params::raw(&req))])));
    assert_eq!(answer(&mut l.b), [2], "denied");
    // A request whose data has not arrived (its last TSN ahead): in progress, deferred.
    req.clear();
    ReconfigParam::OutgoingReset {
        request_seq: peer_tsn.wrapping_add(1),
        response_seq: 0,
        last_tsn: peer_tsn.wrapping_add(10),
        streams: crate::chunk::Streams::new(&wire).unwrap(),
    }
    .encode(&mut req)
    .unwrap();
    assert!(l.b.handle_packet(now, &packet_to(&l.b, &[Chunk::Reconfig(Params::raw(&req))])));
    assert_eq!(answer(&mut l.b), [6], "in progress");
    assert_eq!(l.b.poll_stream_event(), None, "not reset before its data");
}

#[test]
fn a_heartbeat_is_answered_once_per_packet() {
    let mut l = Link::new(23, 5, 0);
    let now = l.now;
    let info = [0u8, 1, 0, 8, 1, 2, 3, 4];
    let hb = Chunk::Heartbeat(&info);
    assert!(l.b.handle_packet(now, &packet_to(&l.b, &[hb, hb, hb, hb])));
    let mut acks = Vec::new();
    while let Some(p) = l.b.poll_transmit() {
        let p = Packet::parse(&p).unwrap();
        for c in p.chunks() {
            if let Ok(Chunk::HeartbeatAck(v)) = c {
                acks.push(v.to_vec());
            }
        }
    }
    assert_eq!(acks, [info.to_vec()], "one HEARTBEAT ACK echoing the info");
}

#[test]
fn a_shutdown_finishes_what_is_in_flight_then_acknowledges() {
    let mut l = Link::new(25, 10, 0);
    let now = l.now;
    l.b.send_message(
        now,
        1,
        53,
        false,
        Reliability::default(),
        &vec![1u8; 200_000],
    )
    .unwrap();
    l.pump();
    // a's user shuts down (made by hand: a only answers shutdowns).
    let cum = l.b.local_initial_tsn.wrapping_sub(1);
    let shutdown = packet_to(&l.b, &[Chunk::Shutdown { cum_tsn: cum }]);
    assert!(l.b.handle_packet(now, &shutdown));
    assert_eq!(l.b.state(), State::ShuttingDown);
    assert_eq!(
        l.b.send_message(now, 1, 53, false, Reliability::default(), b"x"),
        Err(SendError::NotEstablished),
        "no new messages once shutting down"
    );
    // What was in flight still arrives, whole.
    l.run(std::time::Duration::from_secs(30), |l| {
        !l.got[0].is_empty() && l.b.buffered() == 0
    });
    assert_eq!(l.got[0][0].data.len(), 200_000);
    // Then SHUTDOWN ACK, sent again on T2 until SHUTDOWN COMPLETE.
    let now = l.now;
    l.b.handle_timeout(now);
    assert!(l.b.state() == State::ShuttingDown);
    let next = l.b.poll_timeout().unwrap();
    l.b.handle_timeout(next);
    assert!(
        sent_kinds(&mut l.b).contains(&kind::SHUTDOWN_ACK),
        "sent again on T2"
    );
    let complete = packet_to(&l.b, &[Chunk::ShutdownComplete { reflected: false }]);
    assert!(l.b.handle_packet(next, &complete));
    assert_eq!(l.b.state(), State::Closed(Closed::ShutDown));
    // A peer that never completes: T2 gives up after its attempts.
    let mut l = Link::new(27, 10, 0);
    let cum = l.b.local_initial_tsn.wrapping_sub(1);
    let now = l.now;
    l.b.handle_packet(now, &packet_to(&l.b, &[Chunk::Shutdown { cum_tsn: cum }]));
    assert!(sent_kinds(&mut l.b).contains(&kind::SHUTDOWN_ACK));
    for _ in 0..20 {
        let Some(t) = l.b.poll_timeout() else { break };
        l.b.handle_timeout(t);
        l.b.poll_transmit();
    }
    assert_eq!(l.b.state(), State::Closed(Closed::ShutDown));
}

#[test]
fn our_shutdown_finishes_both_ways_over_a_lossy_link_then_closes_both_sides() {
    // a shuts down right after queueing a large message; b sends one after that. Everything
    // arrives whole, then SHUTDOWN / SHUTDOWN ACK / SHUTDOWN COMPLETE close both sides, each
    // lost packet sent again on its timer.
    let closed = |l: &Link| {
        l.a.state() == State::Closed(Closed::ShutDown)
            && l.b.state() == State::Closed(Closed::ShutDown)
    };
    for seed in 0..12u64 {
        let mut l = Link::new(seed, 10, 10);
        let now = l.now;
        let big = vec![7u8; 300_000];
        l.a.send_message(now, 1, 53, false, Reliability::default(), &big)
            .unwrap();
        l.a.shutdown(now);
        assert_eq!(l.a.state(), State::ShutdownPending);
        assert_eq!(
            l.a.send_message(now, 1, 53, false, Reliability::default(), b"late"),
            Err(SendError::NotEstablished),
            "no new messages once we shut down"
        );
        l.b.send_message(now, 2, 51, false, Reliability::default(), b"from b")
            .unwrap();
        l.run(std::time::Duration::from_secs(120), closed);
        assert_eq!(l.got[1].len(), 1, "seed {seed}");
        assert_eq!(l.got[1][0].data, big, "seed {seed}");
        assert_eq!(l.got[0].len(), 1, "seed {seed}: what b sent still arrives");
        assert_eq!(l.got[0][0].data, b"from b");
        assert_eq!(l.a.poll_timeout(), None, "seed {seed}: no timer left");
        assert_eq!(l.b.poll_timeout(), None, "seed {seed}");
    }
}

#[test]
fn both_sides_shutting_down_at_once_close_and_a_silent_peer_is_given_up() {
    for seed in 0..8u64 {
        let mut l = Link::new(seed, 10, 10);
        let now = l.now;
        l.a.send_message(now, 1, 53, false, Reliability::default(), &[1; 50_000])
            .unwrap();
        l.b.send_message(now, 1, 53, false, Reliability::default(), &[2; 50_000])
            .unwrap();
        l.a.shutdown(now);
        l.b.shutdown(now);
        l.run(std::time::Duration::from_secs(120), |l| {
            matches!(l.a.state(), State::Closed(_)) && matches!(l.b.state(), State::Closed(_))
        });
        assert_eq!(
            (l.a.state(), l.b.state()),
            (
                State::Closed(Closed::ShutDown),
                State::Closed(Closed::ShutDown)
            ),
            "seed {seed}"
        );
        assert_eq!((l.got[0].len(), l.got[1].len()), (1, 1), "seed {seed}");
    }
    // Nothing in flight: SHUTDOWN goes at the next flush, then again on T2 while the peer is
    // silent, until the attempts run out.
    let mut l = Link::new(31, 10, 0);
    let now = l.now;
    l.a.shutdown(now);
    assert_eq!(sent_kinds(&mut l.a), [kind::SHUTDOWN]);
    assert_eq!(l.a.state(), State::ShutdownSent);
    let mut sent = 1;
    for _ in 0..40 {
        let Some(t) = l.a.poll_timeout() else { break };
        l.a.handle_timeout(t);
        sent += sent_kinds(&mut l.a)
            .iter()
            .filter(|k| **k == kind::SHUTDOWN)
            .count();
    }
    assert_eq!(l.a.state(), State::Closed(Closed::ShutDown));
    assert_eq!(sent, Config::default().max_init_attempts as usize);
    // Before it is established there is nothing to finish.
    let mut a = Association::connect(Config::default(), T0.with(|t| *t), random(33));
    a.shutdown(T0.with(|t| *t));
    assert_eq!(a.state(), State::Closed(Closed::ShutDown));
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn after_our_shutdown_the_peers_data_is_answered_with_shutdown_and_stray_acks_are_dropped() {
    let mut l = Link::new(35, 10, 0);
    let now = l.now;
    // A SHUTDOWN ACK nobody asked for is dropped.
    let stray = packet_to(&l.a, &[Chunk::ShutdownAck]);
    assert!(!l.a.handle_packet(now, &stray));
    assert_eq!(l.a.state(), State::Established);
    l.a.shutdown(now);
    assert_eq!(sent_kinds(&mut l.a), [kind::SHUTDOWN]);
    // b's DATA arriving now: a answers with SHUTDOWN (T2 started again) besides its SACK.
    l.b.send_message(now, 1, 53, false, Reliability::default(), b"late data")
        .unwrap();
    let p = l.b.poll_transmit().unwrap();
    assert!(l.a.handle_packet(now, &p));
    let kinds = sent_kinds(&mut l.a);
    assert!(kinds.contains(&kind::SHUTDOWN), "{kinds:?}");
    assert_eq!(l.a.poll_message().unwrap().data, b"late data");
    // The peer's SHUTDOWN ACK: SHUTDOWN COMPLETE goes, and a is closed.
    let ack = packet_to(&l.a, &[Chunk::ShutdownAck]);
    assert!(l.a.handle_packet(now, &ack));
    assert_eq!(sent_kinds(&mut l.a), [kind::SHUTDOWN_COMPLETE]);
    assert_eq!(l.a.state(), State::Closed(Closed::ShutDown));
}

/// Every packet `from` sends now, handed to `to`.
fn deliver(now: Instant, from: &mut Association, to: &mut Association) {
    while let Some(p) = from.poll_transmit() {
        to.handle_packet(now, &p);
    }
}

#[test]
fn a_peer_that_lost_its_state_restarts_the_association_and_no_other_cookie_does() {
    let mut l = Link::new(41, 10, 0);
    let now = l.now;
    l.a.send_message(now, 1, 53, false, Reliability::default(), b"before")
        .unwrap();
    l.run(std::time::Duration::from_secs(5), |l| l.got[1].len() == 1);
    let (now, old_tag) = (l.now, l.a.local_tag());
    // b's side comes back with no state (a new stack, same DTLS session), and so does
    // another; both INITs are answered with cookies tied to the current association.
    let mut b2 = Association::connect(Config::default(), now, random(91));
    let mut b3 = Association::connect(Config::default(), now, random(92));
    for b in [&mut b2, &mut b3] {
        let init = b.poll_transmit().unwrap();
        assert!(l.a.handle_packet(now, &init));
        assert_eq!(l.a.state(), State::Established, "an INIT changes nothing");
        assert_eq!(l.a.local_tag(), old_tag);
        deliver(now, &mut l.a, b);
        assert_eq!(b.state(), State::CookieEchoed);
    }
    let echo2 = b2.poll_transmit().unwrap();
    let echo3 = b3.poll_transmit().unwrap();
    // A cookie altered (its checksum made right) or past its lifetime restarts nothing.
    let mut forged = echo2.clone();
    forged[30] ^= 1;
    crate::packet::set_checksum(&mut forged);
    assert!(!l.a.handle_packet(now, &forged));
    let late = now + std::time::Duration::from_millis(Config::default().cookie_lifetime_ms + 1);
    assert!(!l.a.handle_packet(late, &echo2));
    assert_eq!(l.a.restarts(), 0);
    // The real one restarts it: new tags, a COOKIE ACK, and b2 is established.
    assert!(l.a.handle_packet(now, &echo2));
    assert_eq!(l.a.restarts(), 1);
    assert_ne!(l.a.local_tag(), old_tag);
    assert_eq!(l.a.peer().unwrap().tag, b2.local_tag());
    deliver(now, &mut l.a, &mut b2);
    assert_eq!(b2.state(), State::Established);
    // b3's cookie was tied to the association that is gone: refused.
    assert!(!l.a.handle_packet(now, &echo3));
    assert_eq!(l.a.restarts(), 1);
    // The old b's packets carry a tag that is gone.
    let now = l.now;
    l.b.send_message(now, 1, 53, false, Reliability::default(), b"stale")
        .unwrap();
    while let Some(p) = l.b.poll_transmit() {
        assert!(!l.a.handle_packet(now, &p));
    }
    // Messages flow both ways again, streams from the start.
    l.a.send_message(now, 1, 53, false, Reliability::default(), b"to b2")
        .unwrap();
    b2.send_message(now, 1, 53, false, Reliability::default(), b"to a")
        .unwrap();
    run(&mut l.a, &mut b2, |_| false);
    assert_eq!(b2.poll_message().unwrap().data, b"to b2");
    assert_eq!(l.a.poll_message().unwrap().data, b"to a");
}

#[test]
fn the_first_messages_ride_with_cookie_echo_and_nothing_else_goes_before_the_ack() {
    // RFC 9260 §5.1: once the INIT ACK is in, messages may be queued; the COOKIE ECHO is the
    // first chunk of the packet carrying them, and no other packet leaves until the peer's
    // COOKIE ACK (or its own COOKIE ECHO) says the association is up.
    let t0 = T0.with(|t| *t);
    let mut a = Association::connect(Config::default(), t0, random(11));
    let mut b = Association::connect(Config::default(), t0, random(12));
    let a_init = a.poll_transmit().unwrap();
    let _ = b.poll_transmit();
    assert!(!a.can_send());
    assert_eq!(
        a.send_message(t0, 1, 51, false, Reliability::default(), b"x"),
        Err(SendError::NotEstablished)
    );
    // b answers a's INIT; a may send from then on.
    assert!(b.handle_packet(t0, &a_init));
    let ack = b.poll_transmit().unwrap();
    assert!(a.handle_packet(t0, &ack));
    assert_eq!(a.state(), State::CookieEchoed);
    assert!(a.can_send());
    a.send_message(t0, 1, 51, false, Reliability::default(), b"first")
        .unwrap();
    // More than one packet's worth queued: only what fits rides along.
    a.send_message(t0, 1, 53, false, Reliability::default(), &[7; 4000])
        .unwrap();
    let echo = a.poll_transmit().unwrap();
    assert!(echo.len() <= Config::default().mtu, "{}", echo.len());
    let kinds: Vec<u8> = Packet::parse(&echo)
        .unwrap()
        .chunks()
        .map(|c| c.unwrap().kind())
        .collect();
    assert_eq!(kinds[..2], [kind::COOKIE_ECHO, kind::DATA], "{kinds:?}");
    assert!(
        a.poll_transmit().is_none(),
        "nothing else before COOKIE ACK"
    );
    let t1 = t0 + std::time::Duration::from_millis(1);
    a.handle_timeout(t1);
    assert!(a.poll_transmit().is_none(), "no T3 while COOKIE-ECHOED");
    // b takes the cookie, then the message in the same packet.
    assert!(b.handle_packet(t1, &echo));
    assert_eq!(b.state(), State::Established);
    assert_eq!(b.poll_message().unwrap().data, b"first");
    // The rest follows once a hears back.
    let mut got = 0;
    for _ in 0..20 {
        while let Some(p) = b.poll_transmit() {
            a.handle_packet(t1, &p);
        }
        while let Some(p) = a.poll_transmit() {
            b.handle_packet(t1, &p);
        }
        while let Some(m) = b.poll_message() {
            got += m.data.len();
        }
    }
    assert_eq!(a.state(), State::Established);
    assert_eq!(got, 4000);
}

#[test]
fn a_lost_cookie_echo_with_data_is_sent_again_and_the_data_still_arrives() {
    // b's INIT is lost, so a sets up through its own INIT and COOKIE ECHO; the packet with
    // that COOKIE ECHO and a's message is lost too. T1 sends the COOKIE ECHO again, alone;
    // once established, T3 sends the message.
    let t0 = T0.with(|t| *t);
    let mut a = Association::connect(Config::default(), t0, random(13));
    let mut b = Association::connect(Config::default(), t0, random(14));
    let _ = b.poll_transmit();
    let mut now = t0;
    let mut queued = false;
    let mut echoes = Vec::new();
    let mut got = Vec::new();
    for _ in 0..1000 {
        if a.can_send() && !queued {
            a.send_message(now, 2, 51, false, Reliability::default(), b"hello")
                .unwrap();
            queued = true;
        }
        let mut moved = false;
        while let Some(p) = a.poll_transmit() {
            moved = true;
            let kinds: Vec<u8> = Packet::parse(&p)
                .unwrap()
                .chunks()
                .map(|c| c.unwrap().kind())
                .collect();
            if kinds[0] == kind::COOKIE_ECHO {
                echoes.push(kinds);
                if echoes.len() == 1 {
                    continue;
                }
            }
            b.handle_packet(now, &p);
        }
        while let Some(p) = b.poll_transmit() {
            moved = true;
            a.handle_packet(now, &p);
        }
        while let Some(m) = b.poll_message() {
            got.push(m.data);
        }
        if !got.is_empty() && a.buffered() == 0 {
            break;
        }
        if !moved {
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap();
            now = next.max(now);
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
    }
    assert_eq!(echoes[0], [kind::COOKIE_ECHO, kind::DATA]);
    assert_eq!(echoes[1], [kind::COOKIE_ECHO]);
    assert_eq!(got, [b"hello".to_vec()]);
    assert_eq!(a.state(), State::Established);
}

#[test]
fn requests_and_answers_are_acknowledged_within_a_round_trip_on_a_long_path() {
    // 150 ms round trips: a request on its own asks for a SACK at once (I bit) and an answer
    // carries the SACK of the request, so neither waits out the peer's SACK delay — which,
    // with the RTO near its 220 ms floor, would fire T3 and collapse the window for nothing.
    let mut l = Link::new(21, 75, 0);
    let rtt = std::time::Duration::from_millis(150);
    for round in 0..6u8 {
        let t = l.now;
        l.a.send_message(t, 1, 51, false, Reliability::default(), &[round; 100])
            .unwrap();
        l.run(std::time::Duration::from_secs(5), |l| {
            l.got[1].len() == usize::from(round) + 1
        });
        // b answers at once: its SACK of the request rides with the answer.
        let t = l.now;
        l.b.send_message(t, 1, 51, false, Reliability::default(), &[round; 50])
            .unwrap();
        l.run(std::time::Duration::from_secs(5), |l| {
            l.got[0].len() == usize::from(round) + 1 && l.a.buffered() == 0 && l.b.buffered() == 0
        });
        let took = l.now - t;
        assert!(took <= rtt, "round {round}: {took:?}");
    }
    assert_eq!((l.a.stats().timeouts, l.b.stats().timeouts), (0, 0));
}

#[test]
fn a_lost_tail_is_found_by_a_probe_before_the_timer() {
    // 50 ms round trips; a message of 7 packets whose last two are lost. Nothing after them
    // would make b report them missing: without a probe, T3 (RTO at its 220 ms floor) finds
    // them. The probe goes after two round trips of silence, and its SACK shows the hole.
    let mut l = Link::new(5, 25, 0);
    let t = l.now;
    l.a.send_message(t, 1, 53, false, Reliability::default(), &[1; 100])
        .unwrap();
    l.run(std::time::Duration::from_secs(1), |l| {
        l.got[1].len() == 1 && l.a.buffered() == 0
    });
    let mtu = Config::default().mtu;
    let body = vec![2u8; 7 * (mtu - 28 - 16) - 100];
    l.lose_to_b = vec![l.to_b + 6, l.to_b + 7];
    let t = l.now;
    l.a.send_message(t, 1, 53, false, Reliability::default(), &body)
        .unwrap();
    l.run(std::time::Duration::from_secs(2), |l| l.got[1].len() == 2);
    let took = l.now - t;
    let s = l.a.stats();
    println!("{took:?} {s:?}");
    assert_eq!(l.got[1][1].data, body);
    assert_eq!((s.tail_probes, s.timeouts, s.fast_recoveries), (1, 0, 1));
    // The first SACKs at 50 ms, the probe two round trips later, its SACK at 200 ms, the
    // lost chunk 25 ms after that (T3 would have fired at 270 ms).
    assert!(took <= std::time::Duration::from_millis(225), "{took:?}");
}

#[test]
fn a_data_chunk_without_data_aborts_with_no_user_data() {
    // RFC 9260 §6.2: ABORT with the "No User Data" cause and the chunk's TSN; the rest of the
    // packet is not acted on, and nothing else leaves.
    let mut l = Link::new(31, 5, 0);
    let t = l.now;
    let tsn = 0x0102_0304;
    let empty = crate::chunk::Data {
        tsn,
        stream: 1,
        ssn: 0,
        ppid: 51,
        unordered: false,
        begin: true,
        end: true,
        immediate: false,
        payload: &[],
    };
    let whole = crate::chunk::Data {
        payload: b"after",
        tsn: tsn.wrapping_add(1),
        ..empty
    };
    let p = packet_to(&l.b, &[Chunk::Data(empty), Chunk::Data(whole)]);
    assert!(l.b.handle_packet(t, &p));
    assert_eq!(l.b.state(), State::Closed(Closed::Violation));
    assert!(l.b.poll_message().is_none());
    let raw = l.b.poll_transmit().unwrap();
    let abort = Packet::parse(&raw).unwrap();
    assert_eq!(abort.header.vtag, l.a.local_tag());
    let chunks: Vec<Chunk<'_>> = abort.chunks().map(Result::unwrap).collect();
    let [Chunk::Abort { reflected, causes }] = &chunks[..] else {
        panic!("{chunks:?}");
    };
    assert!(!reflected);
    assert_eq!(
        causes.get(crate::chunk::cause::NO_USER_DATA),
        Some(&tsn.to_be_bytes()[..])
    );
    assert!(l.b.poll_transmit().is_none());
    assert_eq!(l.b.poll_timeout(), None);
    // The peer takes the ABORT.
    assert!(l.a.handle_packet(t, &raw));
    assert_eq!(l.a.state(), State::Closed(Closed::Aborted));
}
