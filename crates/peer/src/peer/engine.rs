//! The connection under a peer: str0m's `Rtc` (calls: media and data), or our data-only
//! [`Connection`] (ICE and DTLS from str0m's own crates, our SCTP: see `crates/dataconn`).
//! The peer's negotiation, channels and restarts are written once over this.

use std::time::{Duration, Instant};

use peerweb_dataconn as dc;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output, Rtc};

use super::Packet;
use crate::Transmit;

/// A data channel of either engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Chan {
    Rtc(ChannelId),
    Data(dc::ChannelId),
}

/// Our offer awaiting its answer.
#[derive(Debug)]
pub(crate) enum Pending {
    Rtc(SdpPendingOffer),
    Data,
}

/// What the engine reports, in order.
#[derive(Debug)]
pub(crate) enum Happened {
    Ice(IceConnectionState),
    ChannelOpen(Chan, String),
    ChannelData {
        chan: Chan,
        binary: bool,
        data: Vec<u8>,
    },
    ChannelClose(Chan),
    /// The path in use (local, remote addresses and protocol) and its RTT.
    Stats {
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
        protocol: str0m::net::Protocol,
        rtt: Option<Duration>,
    },
    /// Media events (str0m only; boxed: a media frame's event is large).
    Rtc(Box<RtcEvent>),
}

pub(crate) enum Out {
    Timeout(Instant),
    Transmit(Transmit),
    Event(Happened),
}

/// How often the data-only engine reports its path's RTT (str0m's stats interval).
const STATS_EVERY: Duration = Duration::from_millis(250);
/// How soon the path is reported again while its RTT is unknown.
const STATS_SOON: Duration = Duration::from_millis(20);

pub(crate) struct DataEngine {
    conn: dc::Connection,
    /// When the path and RTT are next reported.
    next_stats: Instant,
    path: Option<(
        str0m::net::Protocol,
        std::net::SocketAddr,
        std::net::SocketAddr,
    )>,
}

pub(crate) enum Engine {
    Rtc(Box<Rtc>),
    Data(Box<DataEngine>),
}

/// Settings of the data-only engine: SCTP's windows sized for the largest send window.
pub(crate) fn data_engine(now: Instant, max_window: usize, hold_messages: bool) -> Engine {
    let mut random = [0u8; 48];
    if getrandom::fill(&mut random).is_err() {
        // No OS generator: the time is all there is (tags still differ per connection).
        let t = now.elapsed().as_nanos().to_le_bytes();
        random[..16].copy_from_slice(&t);
    }
    let mut cfg = dc::Config::default();
    // The remote's receive window bounds what we send; ours lets a fast sender fill a long path.
    cfg.sctp.a_rwnd = (max_window.max(1 << 20) * 2).min(u32::MAX as usize) as u32;
    cfg.sctp.max_queued = max_window + 4 * cfg.max_message_size;
    cfg.sctp.hold_messages = hold_messages;
    let cert = match dc::certificate() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("no DTLS certificate: {e}");
            dc::DtlsCertificate {
                certificate: Vec::new(),
                private_key: Vec::new(),
            }
        }
    };
    Engine::Data(Box::new(DataEngine {
        conn: dc::Connection::new(now, cfg, cert, random),
        next_stats: now,
        path: None,
    }))
}

fn fingerprint_text(f: [u8; 32]) -> String {
    let hex: Vec<String> = f.iter().map(|b| format!("{b:02X}")).collect();
    format!("sha-256 {}", hex.join(":"))
}

impl Engine {
    pub fn rtc(&mut self) -> Option<&mut Rtc> {
        match self {
            Engine::Rtc(r) => Some(r),
            Engine::Data(_) => None,
        }
    }

    pub fn local_fingerprint(&mut self) -> String {
        match self {
            Engine::Rtc(r) => r.direct_api().local_dtls_fingerprint().to_string(),
            Engine::Data(d) => fingerprint_text(d.conn.local_fingerprint()),
        }
    }

    /// The remote's fingerprint once DTLS has checked it.
    pub fn remote_fingerprint(&mut self) -> Option<String> {
        match self {
            Engine::Rtc(r) => r
                .direct_api()
                .remote_dtls_fingerprint()
                .map(|f| f.to_string()),
            Engine::Data(d) => d.conn.verified_remote_fingerprint().map(fingerprint_text),
        }
    }

    pub fn invalidate_candidate(&mut self, c: &Candidate) {
        match self {
            Engine::Rtc(r) => {
                r.direct_api().invalidate_candidate(c);
            }
            Engine::Data(d) => {
                d.conn.invalidate_candidate(c);
            }
        }
    }

    /// The candidate as added (to trickle), if it was new.
    pub fn add_local_candidate(&mut self, c: Candidate) -> Option<Candidate> {
        match self {
            Engine::Rtc(r) => r.add_local_candidate(c).cloned(),
            Engine::Data(d) => d.conn.add_local_candidate(c),
        }
    }

    pub fn add_remote_candidate(&mut self, now: Instant, c: Candidate) {
        match self {
            Engine::Rtc(r) => r.add_remote_candidate(c),
            Engine::Data(d) => d.conn.add_remote_candidate(now, c),
        }
    }

    pub fn accepts(&self, now: Instant, p: &Packet<'_>) -> bool {
        match self {
            Engine::Rtc(rtc) => p
                .receive()
                .is_some_and(|r| rtc.accepts(&Input::Receive(now, r))),
            Engine::Data(d) => d.conn.accepts(p.source, p.contents),
        }
    }

    /// A datagram in; an error only from str0m (logged by the caller).
    pub fn receive(&mut self, now: Instant, p: &Packet<'_>) -> Result<(), String> {
        match self {
            Engine::Rtc(rtc) => match p.receive() {
                Some(r) => rtc
                    .handle_input(Input::Receive(now, r))
                    .map_err(|e| e.to_string()),
                None => Err("not a datagram str0m takes".into()),
            },
            Engine::Data(d) => {
                d.conn
                    .handle_receive(now, p.proto, p.source, p.destination, p.contents);
                Ok(())
            }
        }
    }

    pub fn timeout(&mut self, now: Instant) -> Result<(), String> {
        match self {
            Engine::Rtc(rtc) => rtc
                .handle_input(Input::Timeout(now))
                .map_err(|e| e.to_string()),
            Engine::Data(d) => {
                d.conn.handle_timeout(now);
                Ok(())
            }
        }
    }

    pub fn disconnect(&mut self, now: Instant) {
        match self {
            Engine::Rtc(r) => r.disconnect(),
            Engine::Data(d) => d.conn.close(now),
        }
    }

    pub fn is_alive(&self) -> bool {
        match self {
            Engine::Rtc(r) => r.is_alive(),
            Engine::Data(d) => !d.conn.is_closed(),
        }
    }

    /// The next output; `Err` from str0m.
    pub fn poll(&mut self, now: Instant) -> Result<Out, String> {
        match self {
            Engine::Rtc(rtc) => Ok(match rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(t) => Out::Timeout(t),
                Output::Transmit(t) => Out::Transmit(Transmit {
                    proto: t.proto,
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.to_vec(),
                }),
                Output::Event(e) => Out::Event(match e {
                    RtcEvent::IceConnectionStateChange(s) => Happened::Ice(s),
                    RtcEvent::ChannelOpen(id, label) => Happened::ChannelOpen(Chan::Rtc(id), label),
                    RtcEvent::ChannelData(d) => Happened::ChannelData {
                        chan: Chan::Rtc(d.id),
                        binary: d.binary,
                        data: d.data,
                    },
                    RtcEvent::ChannelClose(id) => Happened::ChannelClose(Chan::Rtc(id)),
                    RtcEvent::PeerStats(s) => match s.selected_candidate_pair {
                        Some(pair) => Happened::Stats {
                            local: pair.local.addr,
                            remote: pair.remote.addr,
                            protocol: pair.protocol,
                            rtt: pair.current_round_trip_time.or(s.rtt),
                        },
                        None => Happened::Rtc(Box::new(RtcEvent::PeerStats(s))),
                    },
                    other => Happened::Rtc(Box::new(other)),
                }),
            }),
            Engine::Data(d) => Ok(d.poll(now)),
        }
    }

    /// Bytes SCTP holds (queued and unacknowledged) over all channels.
    pub fn buffered_total(&mut self, chans: impl Iterator<Item = Chan>) -> usize {
        match self {
            Engine::Rtc(rtc) => chans
                .filter_map(|c| match c {
                    Chan::Rtc(id) => rtc.channel(id).map(|mut c| c.buffered_amount()),
                    Chan::Data(_) => None,
                })
                .sum(),
            Engine::Data(d) => d.conn.buffered(),
        }
    }

    /// Messages of `bytes` were read (the data-only engine with `hold_messages`; str0m's
    /// SCTP frees its window as it delivers).
    pub fn release(&mut self, now: Instant, bytes: usize) {
        if let Engine::Data(d) = self {
            d.conn.release(now, bytes);
        }
    }

    /// Bytes buffered on one channel (over all channels for the data-only engine, which
    /// counts per connection).
    pub fn buffered(&mut self, chan: Chan) -> usize {
        match (self, chan) {
            (Engine::Rtc(rtc), Chan::Rtc(id)) => rtc
                .channel(id)
                .map(|mut c| c.buffered_amount())
                .unwrap_or(0),
            (Engine::Data(d), Chan::Data(_)) => d.conn.buffered(),
            _ => 0,
        }
    }

    /// Writes a message: `Ok(false)` when the send buffer is full.
    pub fn write(
        &mut self,
        now: Instant,
        chan: Chan,
        binary: bool,
        data: &[u8],
    ) -> Result<bool, WriteError> {
        match (self, chan) {
            (Engine::Rtc(rtc), Chan::Rtc(id)) => {
                let mut ch = rtc.channel(id).ok_or(WriteError::Closed)?;
                ch.write(binary, data)
                    .map_err(|e| WriteError::Refused(e.to_string()))
            }
            (Engine::Data(d), Chan::Data(id)) => match d.conn.send(now, id, binary, data) {
                Ok(()) => Ok(true),
                Err(dc::ChannelError::Send(peerweb_sctp::assoc::SendError::QueueFull)) => Ok(false),
                Err(dc::ChannelError::NotOpen) => Err(WriteError::Closed),
                Err(e) => Err(WriteError::Refused(e.to_string())),
            },
            _ => Err(WriteError::Closed),
        }
    }

    /// Creates a channel once the session is up (str0m: it opens with the next packets).
    pub fn create_channel(&mut self, now: Instant, config: ChannelConfig) -> Option<Chan> {
        match self {
            Engine::Rtc(rtc) => Some(Chan::Rtc(rtc.direct_api().create_data_channel(config))),
            Engine::Data(d) => d
                .conn
                .open_channel(now, data_config(&config))
                .ok()
                .map(Chan::Data),
        }
    }

    /// Whether `sdp` is an offer this engine can read (checked before perfect negotiation
    /// decides what to do with it).
    pub fn check_offer(&self, sdp: &str) -> Result<(), String> {
        match self {
            Engine::Rtc(_) => SdpOffer::from_sdp_string(sdp)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Engine::Data(_) => dc::sdp::parse(sdp).map(|_| ()).map_err(|e| e.to_string()),
        }
    }

    /// The remote's offer: our answer's SDP.
    pub fn accept_offer(&mut self, now: Instant, sdp: &str) -> Result<String, String> {
        match self {
            Engine::Rtc(rtc) => {
                // We answer an `actpass` offer as the DTLS client (`active`), as browsers do:
                // str0m would take `passive`, but a browser that opens a channel before our
                // answer arrives gives it a DTLS server's stream id (odd) — the parity str0m
                // then picks too, and the two channels collide (RFC 8832 §6).
                let offer =
                    SdpOffer::from_sdp_string(&sdp.replace("a=setup:actpass", "a=setup:passive"))
                        .map_err(|e| e.to_string())?;
                let answer = rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| e.to_string())?;
                Ok(answer.to_sdp_string())
            }
            Engine::Data(d) => d.conn.accept_offer(now, sdp).map_err(|e| e.to_string()),
        }
    }

    /// The remote's answer to our offer `pending`.
    pub fn accept_answer(
        &mut self,
        now: Instant,
        pending: Pending,
        sdp: &str,
    ) -> Result<(), String> {
        match (self, pending) {
            (Engine::Rtc(rtc), Pending::Rtc(p)) => {
                let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
                rtc.sdp_api()
                    .accept_answer(p, answer)
                    .map_err(|e| e.to_string())
            }
            (Engine::Data(d), Pending::Data) => {
                d.conn.accept_answer(now, sdp).map_err(|e| e.to_string())
            }
            _ => Err("an answer to another connection's offer".into()),
        }
    }
}

/// Why a write failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    Closed,
    Refused(String),
}

/// A str0m channel config in the data-only engine's terms.
pub(crate) fn data_config(c: &ChannelConfig) -> dc::ChannelConfig {
    use str0m::channel::Reliability as R;
    dc::ChannelConfig {
        label: c.label.clone(),
        protocol: c.protocol.clone(),
        ordered: c.ordered,
        reliability: match c.reliability {
            R::Reliable => dc::Reliability::Reliable,
            R::MaxRetransmits { retransmits } => {
                dc::Reliability::Retransmits(u32::from(retransmits))
            }
            R::MaxPacketLifetime { lifetime } => dc::Reliability::Lifetime(u32::from(lifetime)),
        },
        negotiated: c.negotiated,
    }
}

impl DataEngine {
    pub fn conn(&mut self) -> &mut dc::Connection {
        &mut self.conn
    }

    /// Our offer (a restart's with new ICE credentials).
    pub fn offer(&mut self, restart: bool) -> String {
        if restart {
            self.conn.restart_ice();
        }
        self.conn.create_offer()
    }

    fn poll(&mut self, now: Instant) -> Out {
        // Events first: what the application sends on hearing them (a channel open) makes
        // the same packets (the first messages ride with SCTP's COOKIE ECHO).
        while let Some(e) = self.conn.poll_event() {
            let h = match e {
                dc::Event::Ice(s) => Happened::Ice(s),
                dc::Event::Path {
                    proto,
                    local,
                    remote,
                } => {
                    self.path = Some((proto, local, remote));
                    self.next_stats = now;
                    continue;
                }
                dc::Event::ChannelOpen(id, label) => Happened::ChannelOpen(Chan::Data(id), label),
                dc::Event::ChannelData { id, binary, data } => Happened::ChannelData {
                    chan: Chan::Data(id),
                    binary,
                    data,
                },
                dc::Event::ChannelClose(id) => Happened::ChannelClose(Chan::Data(id)),
                dc::Event::Connected => continue,
                dc::Event::Closed(why) => {
                    if let Some(e) = why {
                        tracing::debug!("data connection closed: {e}");
                    }
                    continue;
                }
            };
            return Out::Event(h);
        }
        if let Some(t) = self.conn.poll_transmit(now) {
            return Out::Transmit(t);
        }
        if let Some((protocol, local, remote)) = self.path
            && now >= self.next_stats
        {
            // A path whose RTT is not known yet (the nominating check's answer still on its
            // way) is reported again soon rather than a stats period later.
            let rtt = self.conn.rtt();
            self.next_stats = now
                + if rtt.is_some() {
                    STATS_EVERY
                } else {
                    STATS_SOON
                };
            return Out::Event(Happened::Stats {
                local,
                remote,
                protocol,
                rtt,
            });
        }
        let next = self.conn.poll_timeout();
        let stats = self.path.map(|_| self.next_stats);
        Out::Timeout(
            [next, stats]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(1)),
        )
    }
}
