//! The SCTP engines alone: two endpoints of one engine wired in memory (no DTLS, no sockets),
//! a virtual clock, BYTES as 64 KiB messages on one reliable ordered stream, every byte checked
//! on arrival. "Window" is the bytes handed to SCTP and not yet acknowledged (what a data
//! channel's `bufferedAmount` limit holds). Engines: peerweb's own (`crates/sctp`) and
//! sctp-proto 0.10.8 (str0m 0.25's), side by side in one run. Prints MB/s per core (payload per
//! CPU-second of this process, both endpoints on one thread) and the ratio.
//!
//! `--engine ours --windows 1048576 --bytes 33554432` runs one cell alone, for callgrind
//! (`bench/run-sctp` does that and prints instructions per byte).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use peerweb_bench::cpu_secs;
use peerweb_sctp::assoc::{self, Association, State};
use peerweb_sctp::outstanding::Reliability;

const MESSAGE: usize = 64 * 1024;

#[derive(Parser)]
#[command(about = "SCTP engines alone, in memory: peerweb's and sctp-proto's")]
struct Args {
    /// Payload moved per cell.
    #[arg(long, default_value_t = 256 << 20)]
    bytes: usize,
    /// Windows (bytes in flight at most), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "131072,1048576,4194304")]
    windows: Vec<usize>,
    /// One-way delay of the in-memory link (virtual time: it keeps a window's worth in
    /// flight, as a real path does; it costs no CPU).
    #[arg(long, default_value_t = 5)]
    delay_ms: u64,
    /// `ours`, `sctp-proto` or `both`.
    #[arg(long, default_value = "both")]
    engine: String,
}

/// The stream's bytes repeat every 251: message and check are slices of one buffer.
struct Pattern(Vec<u8>);

impl Pattern {
    fn new() -> Pattern {
        Pattern((0..MESSAGE + 251).map(|i| (i % 251) as u8).collect())
    }

    /// The stream's bytes `offset..offset + len` (`len` at most one message).
    fn at(&self, offset: usize, len: usize) -> &[u8] {
        &self.0[offset % 251..offset % 251 + len]
    }

    fn check(&self, offset: usize, data: &[u8]) -> anyhow::Result<()> {
        for (k, piece) in data.chunks(MESSAGE).enumerate() {
            let at = offset + k * MESSAGE;
            ensure!(
                piece == self.at(at, piece.len()),
                "bytes from {at} are wrong"
            );
        }
        Ok(())
    }
}

/// Packets on their way one direction, each due `delay` after it left.
struct Link<P> {
    delay: Duration,
    queue: std::collections::VecDeque<(Instant, P)>,
}

impl<P> Link<P> {
    fn new(delay: Duration) -> Link<P> {
        Link {
            delay,
            queue: Default::default(),
        }
    }

    fn send(&mut self, now: Instant, p: P) {
        self.queue.push_back((now + self.delay, p));
    }

    /// The next packet due by `now`.
    fn due(&mut self, now: Instant) -> Option<P> {
        if self.queue.front()?.0 <= now {
            return self.queue.pop_front().map(|(_, p)| p);
        }
        None
    }

    fn next(&self) -> Option<Instant> {
        self.queue.front().map(|(at, _)| *at)
    }
}

/// Ours: two associations that INIT at once, as WebRTC peers do.
fn run_ours(bytes: usize, window: usize, delay: Duration) -> anyhow::Result<Duration> {
    let p = Pattern::new();
    let start = Instant::now();
    let mut now = start;
    let cfg = assoc::Config {
        a_rwnd: (window.max(1 << 20) * 2) as u32,
        max_queued: window * 2 + MESSAGE,
        ..assoc::Config::default()
    };
    let (mut ab, mut ba) = (Link::new(delay), Link::new(delay));
    let mut a = Association::connect(cfg, now, [1; 40]);
    let mut b = Association::connect(cfg, now, [2; 40]);
    let (mut sent, mut got) = (0usize, 0usize);
    let mut idle = 0;
    while got < bytes {
        let mut moved = false;
        if a.state() == State::Established {
            while sent < bytes && a.buffered() < window {
                let len = MESSAGE.min(bytes - sent);
                a.send_message(now, 1, 53, false, Reliability::default(), p.at(sent, len))
                    .map_err(|e| anyhow::anyhow!("send: {e:?}"))?;
                sent += len;
            }
        }
        while let Some(p) = a.poll_transmit() {
            ab.send(now, p);
        }
        while let Some(p) = b.poll_transmit() {
            ba.send(now, p);
        }
        // One datagram at a time, each followed by a poll (as str0m drives its SCTP).
        while let Some(p) = ab.due(now) {
            b.handle_packet(now, &p);
            while let Some(p) = b.poll_transmit() {
                ba.send(now, p);
            }
            moved = true;
        }
        while let Some(p) = ba.due(now) {
            a.handle_packet(now, &p);
            while let Some(p) = a.poll_transmit() {
                ab.send(now, p);
            }
            moved = true;
        }
        while let Some(m) = b.poll_message() {
            p.check(got, &m.data)?;
            got += m.data.len();
            moved = true;
        }
        if !moved {
            // Nothing moves until a timer (a delayed SACK, a setup retransmission).
            let next = [a.poll_timeout(), b.poll_timeout(), ab.next(), ba.next()]
                .into_iter()
                .flatten()
                .min()
                .context("stalled with no timer")?;
            now = now.max(next);
            a.handle_timeout(now);
            b.handle_timeout(now);
            idle += 1;
            if idle > 1_000_000 {
                bail!("stalled at {got} of {bytes} bytes");
            }
        }
    }
    Ok(now - start)
}

/// sctp-proto: a client and a server endpoint, one stream.
fn run_sctp_proto(bytes: usize, window: usize, delay: Duration) -> anyhow::Result<Duration> {
    use sctp_proto::{
        ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event, Payload,
        PayloadProtocolIdentifier, ServerConfig, TransportConfig,
    };
    let p = Pattern::new();
    let start = Instant::now();
    let mut now = start;
    let transport = Arc::new(
        TransportConfig::default()
            .with_max_receive_buffer_size((window.max(1 << 20) * 2) as u32)
            .with_max_send_message_size(MESSAGE as u32 * 2)
            .with_max_receive_message_size(MESSAGE as u32 * 2),
    );
    let ca: std::net::SocketAddr = "10.0.0.1:5000".parse()?;
    let sa: std::net::SocketAddr = "10.0.0.2:5000".parse()?;
    let (mut ab, mut ba) = (Link::new(delay), Link::new(delay));
    let mut client = Endpoint::new(Arc::new(EndpointConfig::default()), None);
    let mut server = Endpoint::new(
        Arc::new(EndpointConfig::default()),
        Some(Arc::new({
            let mut c = ServerConfig::default();
            c.transport = transport.clone();
            c
        })),
    );
    let mut cc = ClientConfig::default();
    cc.transport = transport;
    let (_, mut a) = client.connect(cc, sa)?;
    let mut b = None;
    let mut connected = false;
    let mut stream_open = false;
    let (mut sent, mut got) = (0usize, 0usize);
    let mut buf = vec![0; MESSAGE * 2];
    let mut idle = 0;
    while got < bytes {
        let mut moved = false;
        while let Some(ev) = a.poll() {
            connected |= matches!(ev, Event::Connected);
        }
        if connected {
            if !stream_open {
                a.open_stream(1, PayloadProtocolIdentifier::Binary)?;
                stream_open = true;
            }
            let mut s = a.stream(1)?;
            while sent < bytes && s.buffered_amount()? < window {
                let len = MESSAGE.min(bytes - sent);
                s.write_sctp(
                    &Bytes::copy_from_slice(p.at(sent, len)),
                    PayloadProtocolIdentifier::Binary,
                )?;
                sent += len;
            }
        }
        while let Some(t) = a.poll_transmit(now) {
            if let Payload::RawEncode(raws) = t.payload {
                for raw in raws {
                    ab.send(now, raw);
                }
            }
        }
        // One datagram at a time, each followed by a poll (as str0m drives its SCTP).
        while let Some(raw) = ab.due(now) {
            moved = true;
            match server.handle(now, ca, None, None, raw) {
                Some((_, DatagramEvent::NewAssociation(x))) => b = Some(x),
                Some((_, DatagramEvent::AssociationEvent(ev))) => {
                    if let Some(x) = b.as_mut() {
                        x.handle_event(ev);
                    }
                }
                None => {}
            }
            if let Some(x) = b.as_mut() {
                while let Some(t) = x.poll_transmit(now) {
                    if let Payload::RawEncode(raws) = t.payload {
                        for raw in raws {
                            ba.send(now, raw);
                        }
                    }
                }
            }
        }
        if let Some(bb) = b.as_mut() {
            while bb.poll().is_some() {}
            while bb.accept_stream().is_some() {}
            if let Ok(mut s) = bb.stream(1) {
                while let Ok(Some(chunks)) = s.read_sctp() {
                    let n = chunks.read(&mut buf)?;
                    p.check(got, &buf[..n])?;
                    got += n;
                    moved = true;
                }
            }
            while let Some(t) = bb.poll_transmit(now) {
                if let Payload::RawEncode(raws) = t.payload {
                    for raw in raws {
                        ba.send(now, raw);
                    }
                }
            }
        }
        while let Some(raw) = ba.due(now) {
            moved = true;
            if let Some((_, DatagramEvent::AssociationEvent(ev))) =
                client.handle(now, sa, None, None, raw)
            {
                a.handle_event(ev);
            }
            while let Some(t) = a.poll_transmit(now) {
                if let Payload::RawEncode(raws) = t.payload {
                    for raw in raws {
                        ab.send(now, raw);
                    }
                }
            }
        }
        if !moved {
            let next = [
                a.poll_timeout(),
                b.as_mut().and_then(|x| x.poll_timeout()),
                ab.next(),
                ba.next(),
            ]
            .into_iter()
            .flatten()
            .min();
            now = next.map_or(now + Duration::from_millis(1), |t| now.max(t));
            a.handle_timeout(now);
            if let Some(x) = b.as_mut() {
                x.handle_timeout(now);
            }
            idle += 1;
            if idle > 1_000_000 {
                bail!("stalled at {got} of {bytes} bytes");
            }
        }
    }
    Ok(now - start)
}

/// MB/s of payload per CPU-second of this process.
/// MB/s of payload per CPU-second of this process; MB/s in the link's virtual time.
fn measure(run: impl Fn() -> anyhow::Result<Duration>, bytes: usize) -> anyhow::Result<(f64, f64)> {
    let me = std::process::id();
    let cpu0 = cpu_secs(me)?;
    let took = run()?;
    let cpu = (cpu_secs(me)? - cpu0).max(0.01);
    Ok((
        bytes as f64 / 1e6 / cpu,
        bytes as f64 / 1e6 / took.as_secs_f64().max(1e-6),
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (ours, theirs) = match args.engine.as_str() {
        "ours" => (true, false),
        "sctp-proto" => (false, true),
        "both" => (true, true),
        e => bail!("--engine {e}: ours, sctp-proto or both"),
    };
    let delay = Duration::from_millis(args.delay_ms);
    let mut rows = Vec::new();
    for &w in &args.windows {
        let o = if ours {
            Some(measure(|| run_ours(args.bytes, w, delay), args.bytes)?)
        } else {
            None
        };
        let t = if theirs {
            Some(measure(
                || run_sctp_proto(args.bytes, w, delay),
                args.bytes,
            )?)
        } else {
            None
        };
        for (name, r) in [("peerweb-sctp", o), ("sctp-proto", t)] {
            if let Some((cpu, link)) = r {
                eprintln!(
                    "window {w:>8} B: {name:>12} {cpu:>5.0} MB/s per core, {link:>5.0} MB/s of link time"
                );
            }
        }
        let (o, t) = (o.map(|r| r.0), t.map(|r| r.0));
        rows.push((w, o, t));
    }
    if ours && theirs {
        println!(
            "\n| window | peerweb-sctp (MB/s per core) | sctp-proto 0.10.8 | ratio |\n|---|---|---|---|"
        );
        for (w, o, t) in rows {
            let (o, t) = (o.unwrap_or(0.0), t.unwrap_or(0.0));
            println!(
                "| {} KiB | {o:.0} | {t:.0} | {:.1}x |",
                w / 1024,
                o / t.max(1e-9)
            );
        }
    }
    Ok(())
}
