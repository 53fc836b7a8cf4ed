//! Data channels over the association (RFC 8831, 8832): a stream per channel — even ids for
//! the DTLS client, odd for the server, the given id for a negotiated channel —, DCEP's
//! OPEN/ACK for the others (ours open as the OPEN goes, their messages sent ordered until the
//! ACK, as Chromium does), the PPIDs of text, binary and empty messages, each channel's
//! ordering and reliability applied to what it sends, and closing (§6.7): each side resets
//! its outgoing stream, and the channel is closed — its stream free again — once both are.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use peerweb_sctp::assoc::{Association, SendError, StreamEvent};
use peerweb_sctp::dcep::{self, ppid};
use peerweb_sctp::outstanding::Reliability as Giveup;
use peerweb_sctp::reassembly::Message;

use crate::Event;

/// Channels per connection at most (open, opening or waiting), either side's.
pub const MAX_CHANNELS: usize = 1024;

/// How a channel is set up (what `RTCDataChannelInit` says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    pub label: String,
    pub protocol: String,
    pub ordered: bool,
    pub reliability: dcep::Reliability,
    /// Negotiated out of band on this stream id (no DCEP), as both sides agreed.
    pub negotiated: Option<u16>,
}

impl ChannelConfig {
    /// An ordered, reliable channel opened with DCEP.
    pub fn reliable(label: &str) -> ChannelConfig {
        ChannelConfig {
            label: label.to_owned(),
            protocol: String::new(),
            ordered: true,
            reliability: dcep::Reliability::Reliable,
            negotiated: None,
        }
    }
}

/// A channel's handle (stable for its life; stream ids are given once SCTP is up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(u32);

/// Why a message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("no such channel, or it is not open")]
    NotOpen,
    #[error("message larger than the remote takes ({0} bytes)")]
    TooLarge(usize),
    #[error("too many channels")]
    TooMany,
    #[error(transparent)]
    Send(#[from] SendError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before SCTP is up (no stream yet).
    Waiting,
    /// Open: ours from the moment its DATA_CHANNEL_OPEN is sent (RFC 8832 §6 lets data
    /// follow it at once, as browsers do), the peer's from its OPEN.
    Open,
    /// Closing: our outgoing stream is being reset or is (`ours_done`), and the peer's
    /// (`theirs_done`).
    Closing { ours_done: bool, theirs_done: bool },
}

#[derive(Debug)]
struct Channel {
    cfg: ChannelConfig,
    stream: Option<u16>,
    state: State,
    /// The peer has our channel: its ACK (or data on the stream) came, or no DCEP was
    /// needed. Until then messages go ordered whatever the channel says, so none can pass
    /// the OPEN (RFC 8832 §6).
    acked: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Channels {
    next: u32,
    by_id: HashMap<ChannelId, Channel>,
    by_stream: HashMap<u16, ChannelId>,
    /// Whether this side opens even stream ids (the DTLS client), once known.
    even: Option<bool>,
}

impl Channels {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Adds a channel; it opens once SCTP is up (at once if it is).
    pub fn open(
        &mut self,
        now: Instant,
        cfg: ChannelConfig,
        assoc: Option<&mut Association>,
        events: &mut VecDeque<Event>,
    ) -> Result<ChannelId, ChannelError> {
        if self.by_id.len() >= MAX_CHANNELS {
            return Err(ChannelError::TooMany);
        }
        if let Some(s) = cfg.negotiated
            && (self.by_stream.contains_key(&s) || s == u16::MAX)
        {
            return Err(ChannelError::TooMany);
        }
        let id = ChannelId(self.next);
        self.next += 1;
        self.by_id.insert(
            id,
            Channel {
                cfg,
                stream: None,
                state: State::Waiting,
                acked: false,
            },
        );
        if let (Some(a), Some(_)) = (assoc, self.even) {
            self.start_one(now, id, a, events);
        }
        Ok(id)
    }

    /// SCTP is up: every waiting channel gets its stream and opens.
    pub fn start(
        &mut self,
        now: Instant,
        dtls_client: bool,
        assoc: &mut Association,
        events: &mut VecDeque<Event>,
    ) {
        self.even = Some(dtls_client);
        let mut waiting: Vec<ChannelId> = self
            .by_id
            .iter()
            .filter(|(_, c)| c.state == State::Waiting)
            .map(|(id, _)| *id)
            .collect();
        // Negotiated first (their ids are fixed), then in the order they were opened.
        waiting.sort_by_key(|id| (self.by_id[id].cfg.negotiated.is_none(), *id));
        for id in waiting {
            self.start_one(now, id, assoc, events);
        }
    }

    fn start_one(
        &mut self,
        now: Instant,
        id: ChannelId,
        assoc: &mut Association,
        events: &mut VecDeque<Event>,
    ) {
        let Some(even) = self.even else { return };
        let negotiated = self.by_id[&id].cfg.negotiated;
        let stream = match negotiated {
            Some(s) => s,
            None => {
                let mut s = if even { 0u16 } else { 1 };
                while self.by_stream.contains_key(&s) {
                    match s.checked_add(2) {
                        Some(n) if n < u16::MAX => s = n,
                        _ => {
                            // No stream left: the channel cannot open.
                            self.by_id.remove(&id);
                            events.push_back(Event::ChannelClose(id));
                            return;
                        }
                    }
                }
                s
            }
        };
        self.by_stream.insert(stream, id);
        let Some(c) = self.by_id.get_mut(&id) else {
            return;
        };
        c.stream = Some(stream);
        c.state = State::Open;
        events.push_back(Event::ChannelOpen(id, c.cfg.label.clone()));
        if negotiated.is_some() {
            c.acked = true;
            return;
        }
        let open = dcep::Message::Open {
            unordered: !c.cfg.ordered,
            reliability: c.cfg.reliability,
            priority: 256,
            label: c.cfg.label.clone(),
            protocol: c.cfg.protocol.clone(),
        };
        // Label and protocol were checked when the channel was opened.
        if let Ok(bytes) = open.encode() {
            let _ = assoc.send_message(now, stream, ppid::DCEP, false, Giveup::default(), &bytes);
        }
    }

    /// Closes a channel: its outgoing stream is reset after what was sent on it (a channel
    /// not yet open just goes). [`Event::ChannelClose`] comes once the peer reset its side.
    pub fn close(
        &mut self,
        now: Instant,
        id: ChannelId,
        assoc: Option<&mut Association>,
        events: &mut VecDeque<Event>,
    ) {
        let Some(c) = self.by_id.get_mut(&id) else {
            return;
        };
        match (c.state, c.stream, assoc) {
            (State::Closing { .. }, _, _) => {}
            (State::Open, Some(stream), Some(a)) => {
                c.state = State::Closing {
                    ours_done: false,
                    theirs_done: false,
                };
                a.reset_streams(now, &[stream]);
            }
            _ => self.remove(id, events),
        }
    }

    fn remove(&mut self, id: ChannelId, events: &mut VecDeque<Event>) {
        if let Some(c) = self.by_id.remove(&id) {
            if let Some(s) = c.stream {
                self.by_stream.remove(&s);
            }
            events.push_back(Event::ChannelClose(id));
        }
    }

    /// What SCTP's stream resets did: the peer closing channels (ours close too: our side
    /// is reset in turn) or our resets done.
    pub fn on_stream_event(
        &mut self,
        now: Instant,
        e: StreamEvent,
        assoc: &mut Association,
        events: &mut VecDeque<Event>,
    ) {
        let (streams, theirs) = match e {
            // None listed: all of them.
            StreamEvent::IncomingReset(s) if s.is_empty() => {
                (self.by_stream.keys().copied().collect(), true)
            }
            StreamEvent::IncomingReset(s) => (s, true),
            StreamEvent::OutgoingReset { streams, .. } => (streams, false),
        };
        let mut reset = Vec::new();
        for stream in streams {
            let Some(&id) = self.by_stream.get(&stream) else {
                continue;
            };
            let Some(c) = self.by_id.get_mut(&id) else {
                continue;
            };
            let (mut ours, mut their) = match c.state {
                State::Closing {
                    ours_done,
                    theirs_done,
                } => (ours_done, theirs_done),
                _ if theirs => {
                    // The peer closed it: our side goes too.
                    reset.push(stream);
                    (false, false)
                }
                // Our reset done for a channel not closing (cannot happen): ignored.
                _ => continue,
            };
            if theirs {
                their = true;
            } else {
                ours = true;
            }
            if ours && their {
                self.remove(id, events);
            } else {
                c.state = State::Closing {
                    ours_done: ours,
                    theirs_done: their,
                };
            }
        }
        if !reset.is_empty() {
            assoc.reset_streams(now, &reset);
        }
    }

    pub fn label(&self, id: ChannelId) -> Option<&str> {
        self.by_id.get(&id).map(|c| c.cfg.label.as_str())
    }

    pub fn is_open(&self, id: ChannelId) -> bool {
        self.by_id.get(&id).is_some_and(|c| c.state == State::Open)
    }

    /// Sends a message on an open channel, within `max` bytes (the remote's limit).
    pub fn send(
        &mut self,
        now: Instant,
        id: ChannelId,
        binary: bool,
        data: &[u8],
        max: usize,
        assoc: &mut Association,
    ) -> Result<(), ChannelError> {
        let c = self.by_id.get(&id).ok_or(ChannelError::NotOpen)?;
        let (State::Open, Some(stream)) = (c.state, c.stream) else {
            return Err(ChannelError::NotOpen);
        };
        if data.len() > max {
            return Err(ChannelError::TooLarge(max));
        }
        let giveup = match c.cfg.reliability {
            dcep::Reliability::Reliable => Giveup::default(),
            dcep::Reliability::Retransmits(n) => Giveup {
                max_retransmits: Some(n),
                expires: None,
            },
            dcep::Reliability::Lifetime(ms) => Giveup {
                max_retransmits: None,
                expires: Some(now + Duration::from_millis(u64::from(ms))),
            },
        };
        let (p, bytes): (u32, &[u8]) = match (binary, data.is_empty()) {
            (true, false) => (ppid::BINARY, data),
            (false, false) => (ppid::STRING, data),
            (true, true) => (ppid::BINARY_EMPTY, &[0]),
            (false, true) => (ppid::STRING_EMPTY, &[0]),
        };
        let unordered = !c.cfg.ordered && c.acked;
        assoc.send_message(now, stream, p, unordered, giveup, bytes)?;
        Ok(())
    }

    /// A message SCTP delivered; whether it went to the application (as `ChannelData`).
    pub fn on_message(
        &mut self,
        now: Instant,
        m: Message,
        assoc: &mut Association,
        events: &mut VecDeque<Event>,
    ) -> bool {
        if m.ppid == ppid::DCEP {
            self.on_dcep(now, m, assoc, events);
            return false;
        }
        let Some(&id) = self.by_stream.get(&m.stream) else {
            tracing::debug!(stream = m.stream, "data on a stream with no channel");
            return false;
        };
        let Some(c) = self.by_id.get_mut(&id) else {
            return false;
        };
        // Data after our OPEN means the remote took it (its ACK may be on its way).
        c.acked = true;
        let (binary, data) = match m.ppid {
            ppid::BINARY => (true, m.data),
            ppid::STRING => (false, m.data),
            ppid::BINARY_EMPTY => (true, Vec::new()),
            ppid::STRING_EMPTY => (false, Vec::new()),
            other => {
                tracing::debug!(ppid = other, "message with an unknown PPID dropped");
                return false;
            }
        };
        events.push_back(Event::ChannelData { id, binary, data });
        true
    }

    fn on_dcep(
        &mut self,
        now: Instant,
        m: Message,
        assoc: &mut Association,
        events: &mut VecDeque<Event>,
    ) {
        match dcep::Message::parse(&m.data) {
            Ok(dcep::Message::Ack) => {
                if let Some(&id) = self.by_stream.get(&m.stream)
                    && let Some(c) = self.by_id.get_mut(&id)
                {
                    c.acked = true;
                }
            }
            Ok(dcep::Message::Open {
                unordered,
                reliability,
                label,
                protocol,
                ..
            }) => {
                if self.by_stream.contains_key(&m.stream) || self.by_id.len() >= MAX_CHANNELS {
                    tracing::debug!(stream = m.stream, "DATA_CHANNEL_OPEN refused");
                    return;
                }
                let id = ChannelId(self.next);
                self.next += 1;
                self.by_stream.insert(m.stream, id);
                self.by_id.insert(
                    id,
                    Channel {
                        cfg: ChannelConfig {
                            label: label.clone(),
                            protocol,
                            ordered: !unordered,
                            reliability,
                            negotiated: None,
                        },
                        stream: Some(m.stream),
                        state: State::Open,
                        acked: true,
                    },
                );
                if let Ok(ack) = dcep::Message::Ack.encode() {
                    let _ = assoc.send_message(
                        now,
                        m.stream,
                        ppid::DCEP,
                        false,
                        Giveup::default(),
                        &ack,
                    );
                }
                events.push_back(Event::ChannelOpen(id, label));
            }
            Err(e) => tracing::debug!(stream = m.stream, "bad DCEP message: {e}"),
        }
    }
}
