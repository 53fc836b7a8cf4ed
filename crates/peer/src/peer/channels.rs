//! Data channels: opening them, sending within the send window, and the queue kept until the
//! default channel opens.

use super::engine::WriteError;
use super::*;

impl Peer {
    pub fn open_channel(
        &mut self,
        now: Instant,
        label: &str,
        opts: ChannelOptions,
    ) -> Result<(), Error> {
        if label == DEFAULT_LABEL {
            return Err(Error::ReservedLabel);
        }
        if self.channels.values().any(|(l, _)| l == label)
            || self.early.iter().any(|c| c.label == label)
        {
            return Ok(());
        }
        if self.channels.len() + self.early.len() >= MAX_CHANNELS {
            return Err(Error::TooManyChannels);
        }
        let reliability = match (opts.max_retransmits, opts.max_packet_lifetime_ms) {
            (Some(n), _) => Reliability::MaxRetransmits { retransmits: n },
            (None, Some(ms)) => Reliability::MaxPacketLifetime { lifetime: ms },
            (None, None) => Reliability::Reliable,
        };
        let config = ChannelConfig {
            label: label.into(),
            ordered: opts.ordered,
            reliability,
            negotiated: None,
            protocol: String::new(),
        };
        if !self.negotiated {
            // No session yet: the joiner's offer (ours, or theirs on its way) brings one, and
            // the channel is created once it is up. A member does not offer first, as the
            // SDK does not: two first offers crossing make the polite side roll its back,
            // which Chromium cannot do for data channels ("Failed to start SCTP transport").
            self.early.push(config);
            return Ok(());
        }
        let id = self
            .rtc
            .create_channel(now, config)
            .ok_or(Error::TooManyChannels)?;
        self.channels.insert(id, (label.into(), false));
        self.drain(now);
        Ok(())
    }

    /// Sends on a channel (the default one when `label` is `None`). Returns `Ok(false)` when
    /// the send window is full: wait for [`Event::Writable`] and try again.
    pub fn send(
        &mut self,
        now: Instant,
        label: Option<&str>,
        binary: bool,
        data: &[u8],
    ) -> Result<bool, Error> {
        if self.closed {
            return Err(Error::PeerGone);
        }
        let id = match label {
            None | Some(DEFAULT_LABEL) => {
                if self.default_gone {
                    return Err(Error::ChannelClosed);
                }
                if !self.is_open() {
                    if self.queued.len() >= MAX_QUEUED {
                        return Err(Error::QueueFull);
                    }
                    self.queued.push_back((binary, data.to_vec()));
                    return Ok(true);
                }
                let id = self.default.ok_or(Error::ChannelClosed)?;
                // What was queued before the channel opened goes first.
                if !self.queued.is_empty() {
                    self.flush_queued(now, id);
                    if !self.queued.is_empty() {
                        self.block(data.len());
                        return Ok(false);
                    }
                }
                id
            }
            Some(l) => self
                .channels
                .iter()
                .find(|(_, (cl, open))| cl == l && *open)
                .map(|(id, _)| *id)
                .ok_or(Error::ChannelClosed)?,
        };
        if !self.room_for(data.len()) {
            return Ok(false);
        }
        let ok = match self.rtc.write(now, id, binary, data) {
            Ok(ok) => ok,
            Err(WriteError::Closed) => return Err(Error::ChannelClosed),
            Err(WriteError::Refused(e)) => return Err(Error::Send(e)),
        };
        if !ok {
            if self.buffered_total() == 0 {
                return Err(Error::Send(format!(
                    "a {}-byte message does not fit the send buffer",
                    data.len()
                )));
            }
            self.block(data.len());
        }
        self.drain(now);
        Ok(ok)
    }

    /// Whether `len` more bytes fit in the send window (a message always fits an empty one);
    /// marks the peer blocked when not.
    pub(super) fn room_for(&mut self, len: usize) -> bool {
        let held = self.buffered_total();
        let fits = held == 0 || held + len <= self.window;
        if !fits {
            self.block(len);
        }
        fits
    }

    pub(super) fn block(&mut self, len: usize) {
        self.blocked = Some(self.blocked.unwrap_or(0).max(len));
    }

    /// Bytes held by SCTP over all channels (queued and unacknowledged).
    pub(super) fn buffered_total(&mut self) -> usize {
        self.rtc.buffered_total(self.channels.keys().copied())
    }

    /// The current send window (bytes).
    pub fn window(&self) -> usize {
        self.window
    }

    /// Messages of `bytes` from this peer were read.
    pub fn release(&mut self, now: Instant, bytes: usize) {
        self.rtc.release(now, bytes);
    }

    /// Bytes buffered on a channel (the default one when `label` is `None`).
    pub fn buffered(&mut self, label: Option<&str>) -> usize {
        let label = label.unwrap_or(DEFAULT_LABEL);
        let Some(id) = self
            .channels
            .iter()
            .find(|(_, (l, _))| l == label)
            .map(|(id, _)| *id)
        else {
            return 0;
        };
        self.rtc.buffered(id)
    }

    /// Writes what was queued for the default channel `id` until the send window is full.
    pub(super) fn flush_queued(&mut self, now: Instant, id: Chan) {
        while let Some((binary, data)) = self.queued.pop_front() {
            if !self.room_for(data.len()) {
                self.queued.push_front((binary, data));
                break;
            }
            match self.rtc.write(now, id, binary, &data) {
                Err(WriteError::Closed) => {
                    self.queued.push_front((binary, data));
                    break;
                }
                Ok(true) => {}
                Ok(false) if self.buffered_total() > 0 => {
                    self.block(data.len());
                    self.queued.push_front((binary, data));
                    break;
                }
                // Too large for the buffer, or refused by SCTP: it can never go; the rest can.
                other => {
                    let why = match other {
                        Err(WriteError::Refused(e)) => e,
                        _ => "it does not fit the send buffer".into(),
                    };
                    self.event(Event::Error {
                        code: "send".into(),
                        message: format!("a queued {}-byte message was dropped: {why}", data.len()),
                    });
                }
            }
        }
    }

    /// The window has room again: the queue goes first, then every open channel is reported
    /// writable.
    pub(super) fn writable(&mut self, now: Instant) {
        self.blocked = None;
        if let Some(id) = self.default.filter(|_| !self.queued.is_empty()) {
            self.flush_queued(now, id);
            if self.blocked.is_some() {
                return;
            }
        }
        let peer = self.id.clone();
        let open: Vec<String> = self
            .channels
            .values()
            .filter(|(_, open)| *open)
            .map(|(label, _)| label.clone())
            .collect();
        for label in open {
            self.event(Event::Writable {
                peer: peer.clone(),
                label,
            });
        }
    }

    pub(super) fn label_of(&self, id: Chan) -> String {
        self.channels
            .get(&id)
            .map(|(l, _)| l.clone())
            .unwrap_or_default()
    }
}

/// Rate the send window is sized for on str0m's path: window = RTT × this, within the
/// configured range (and at most [`STR0M_MAX_WINDOW`]). A larger window costs CPU per byte in
/// str0m's SCTP (its in-flight queue is scanned on every poll): with a large window it
/// carries 10–16 MB/s per connection on a 2-core machine (docs/benchmarks.md), so a window
/// beyond RTT × 20 MB/s would only add CPU.
pub const WINDOW_RATE: f64 = 20e6;
/// The largest send window on str0m's path.
pub const STR0M_MAX_WINDOW: usize = 1024 * 1024;
/// Rate the send window is sized for on our own data path, whose cost per byte does not grow
/// with the window (`bench/run-sctp`): a 50 ms path gets 10 MB in flight.
pub const DATA_WINDOW_RATE: f64 = 200e6;

/// The send window for a path with this round-trip time, sized for `rate` bytes per second.
pub fn window_for(rtt: Duration, (min, max): (usize, usize), rate: f64) -> usize {
    ((rtt.as_secs_f64() * rate) as usize).clamp(min, max)
}
