//! One neighbour, sans-IO: what it has, what we asked of it and what it asked of us, our
//! upload allowance towards it, and every check on what it sends. Time comes in as `now`.
//!
//! The driver feeds each received message to [`Link::receive`], sends what the link returns,
//! asks [`Link::serve`] which group to upload next (reading it from storage and wrapping it
//! with [`Link::data`]), and calls [`Link::expire`] now and then. Any [`LinkError`] ends the
//! link: a protocol violation, an unrequested group, or — [`LinkError::Bad`] — bytes that
//! failed verification, which bans the neighbour from this swarm and is reported to the
//! server. A peer never keeps bytes it did not ask for, and never passes on unverified ones.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::tree::{GROUP, Tree, group_len};
use crate::wire::{Have, MAX_RANGE, Msg, VERSION, WireError};

/// Requests from one neighbour queued at once; more are rejected.
pub const MAX_INBOUND: usize = 256;
/// Groups asked of one neighbour at once.
pub const MAX_OUTSTANDING: usize = 32;
/// Withdrawn requests remembered, so a group already on its way is dropped, not refused.
const MAX_CANCELLED: usize = 256;

/// How much a link uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upload {
    /// Bytes per second (`None`: no cap; `Some(0)`: uploads nothing, as when the page's
    /// connection asks to save data).
    pub rate: Option<u64>,
    /// Bytes this link may upload in all (the session's budget, shared out by the driver).
    pub budget: Option<u64>,
}

impl Upload {
    pub const NONE: Upload = Upload {
        rate: Some(0),
        budget: None,
    };
    pub const UNLIMITED: Upload = Upload {
        rate: None,
        budget: None,
    };
}

/// Why a link ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("the neighbour speaks swarm protocol version {0}, not {VERSION}")]
    Version(u8),
    #[error("the neighbour shares another file")]
    OtherFile,
    #[error("the neighbour sent {0} before its hello")]
    NoHello(&'static str),
    #[error("the neighbour sent group {0}, which was not asked of it")]
    Unrequested(u64),
    #[error("group {0} from the neighbour failed verification")]
    Bad(u64),
    #[error("the neighbour asked for more than {MAX_INBOUND} groups at once")]
    Flood,
}

/// What a received message means for the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Nothing for the driver (the link's state changed, or replies are queued).
    None,
    /// The neighbour's groups changed (a bitfield, `HaveAll` or `Have`).
    Has,
    /// A group we asked for, verified.
    Verified { group: u64, bytes: &'a [u8] },
    /// Groups we asked for will not come from this neighbour (rejected, or it choked).
    Lost(Vec<u64>),
    /// The neighbour is fetching these groups from the origin.
    Fetching { first: u64, count: u32 },
}

/// What to upload next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Read this group and pass it to [`Link::data`].
    Group(u64),
    /// Nothing may go before this instant (the allowance refills).
    Wait(Instant),
    /// Nothing asked.
    Idle,
}

#[derive(Debug)]
pub struct Link {
    root: [u8; 32],
    size: u64,
    upload: Upload,
    hello: bool,
    remote: Have,
    /// Groups the neighbour asked for, in order.
    inbound: VecDeque<u64>,
    /// Groups we asked for, with when we give up on each.
    asked: HashMap<u64, Instant>,
    cancelled: VecDeque<u64>,
    choked_until: Option<Instant>,
    /// Told the neighbour we choke it.
    choking: bool,
    tokens: u64,
    tokens_at: Instant,
    pub uploaded: u64,
    pub downloaded: u64,
    /// Messages to send, queued by `receive`.
    out: Vec<Vec<u8>>,
}

impl Link {
    pub fn new(now: Instant, root: [u8; 32], size: u64, upload: Upload) -> Link {
        Link {
            root,
            size,
            upload,
            hello: false,
            remote: Have::none(size),
            inbound: VecDeque::new(),
            asked: HashMap::new(),
            cancelled: VecDeque::new(),
            choked_until: None,
            choking: false,
            tokens: burst(upload),
            tokens_at: now,
            uploaded: 0,
            downloaded: 0,
            out: Vec::new(),
        }
    }

    /// The first messages: our hello and what we have (and a choke if we upload nothing).
    pub fn start(&mut self, local: &Have) -> Vec<Vec<u8>> {
        let mut out = vec![
            Msg::Hello {
                version: VERSION,
                root: self.root,
                size: self.size,
            }
            .encode(),
        ];
        out.extend(local.announce());
        if self.upload.rate == Some(0) {
            self.choking = true;
            out.push(Msg::Choke { retry_ms: u32::MAX }.encode());
        }
        out
    }

    /// Messages queued for the neighbour (replies to what it sent).
    pub fn take_out(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.out)
    }

    /// The neighbour's groups.
    pub fn remote(&self) -> &Have {
        &self.remote
    }

    pub fn ready(&self) -> bool {
        self.hello
    }

    /// Whether we may ask this neighbour for more now.
    pub fn can_ask(&self, now: Instant) -> bool {
        self.hello
            && self.asked.len() < MAX_OUTSTANDING
            && self.choked_until.is_none_or(|t| now >= t)
    }

    /// Groups asked of this neighbour and not yet here.
    pub fn outstanding(&self) -> usize {
        self.asked.len()
    }

    pub fn is_asked(&self, group: u64) -> bool {
        self.asked.contains_key(&group)
    }

    /// Reads one message from the neighbour.
    pub fn receive<'a>(
        &mut self,
        now: Instant,
        bytes: &'a [u8],
        tree: &Tree,
        local: &Have,
    ) -> Result<Event<'a>, LinkError> {
        let msg = Msg::decode(bytes, self.size)?;
        if !self.hello && !matches!(msg, Msg::Hello { .. }) {
            return Err(LinkError::NoHello(name(&msg)));
        }
        Ok(match msg {
            Msg::Hello {
                version,
                root,
                size,
            } => {
                if version != VERSION {
                    return Err(LinkError::Version(version));
                }
                if root != self.root || size != self.size {
                    return Err(LinkError::OtherFile);
                }
                self.hello = true;
                Event::None
            }
            Msg::HaveAll => {
                self.remote = Have::all(self.size);
                Event::Has
            }
            Msg::Bitfield { first, bits } => {
                self.remote.merge(first, bits);
                Event::Has
            }
            Msg::Have { group } => {
                self.remote.set(group);
                Event::Has
            }
            Msg::Request { first, count, .. } => {
                let mut refused = Vec::new();
                for g in first..first + u64::from(count) {
                    if !local.has(g) || self.choking {
                        refused.push(g);
                    } else if !self.inbound.contains(&g) {
                        // A neighbour keeps at most MAX_OUTSTANDING asked (and cancels what
                        // it gave up on): a full queue means it does not, and asking
                        // without end is a flood.
                        if self.inbound.len() >= MAX_INBOUND {
                            return Err(LinkError::Flood);
                        }
                        self.inbound.push_back(g);
                    }
                }
                for (first, count) in runs(&refused, MAX_RANGE) {
                    self.out.push(Msg::Reject { first, count }.encode());
                }
                Event::None
            }
            Msg::Data { group, bytes } => {
                if self.asked.remove(&group).is_none() {
                    if let Some(i) = self.cancelled.iter().position(|g| *g == group) {
                        // Withdrawn while on its way: dropped, unread.
                        self.cancelled.remove(i);
                        return Ok(Event::None);
                    }
                    return Err(LinkError::Unrequested(group));
                }
                tree.verify(group, bytes)
                    .map_err(|_| LinkError::Bad(group))?;
                self.downloaded += bytes.len() as u64;
                Event::Verified { group, bytes }
            }
            Msg::Cancel { first, count } => {
                let range = first..first + u64::from(count);
                self.inbound.retain(|g| !range.contains(g));
                Event::None
            }
            Msg::Reject { first, count } => {
                let lost: Vec<u64> = (first..first + u64::from(count))
                    .filter(|g| self.asked.remove(g).is_some())
                    .collect();
                Event::Lost(lost)
            }
            Msg::Choke { retry_ms } => {
                self.choked_until = Some(now + Duration::from_millis(u64::from(retry_ms)));
                let mut lost: Vec<u64> = self.asked.drain().map(|(g, _)| g).collect();
                lost.sort_unstable();
                Event::Lost(lost)
            }
            Msg::Unchoke => {
                self.choked_until = None;
                Event::None
            }
            Msg::Fetching { first, count } => Event::Fetching { first, count },
        })
    }

    /// Asks the neighbour for `first..first + count` (at most [`MAX_RANGE`], groups it has),
    /// given up on after `within`; the message to send.
    pub fn ask(&mut self, now: Instant, first: u64, count: u32, within: Duration) -> Vec<u8> {
        let count = count.min(MAX_RANGE);
        for g in first..first + u64::from(count) {
            self.asked.insert(g, now + within);
        }
        Msg::Request {
            first,
            count,
            deadline_ms: u32::try_from(within.as_millis()).unwrap_or(u32::MAX),
        }
        .encode()
    }

    /// Withdraws a request (the group came from elsewhere); the message to send, if it was
    /// asked here.
    pub fn cancel(&mut self, group: u64) -> Option<Vec<u8>> {
        self.asked.remove(&group)?;
        if self.cancelled.len() >= MAX_CANCELLED {
            self.cancelled.pop_front();
        }
        self.cancelled.push_back(group);
        Some(
            Msg::Cancel {
                first: group,
                count: 1,
            }
            .encode(),
        )
    }

    /// Requests past their time: given up on here (cancelled) and returned to be asked
    /// elsewhere, with the messages to send.
    pub fn expire(&mut self, now: Instant) -> (Vec<u64>, Vec<Vec<u8>>) {
        let mut late: Vec<u64> = self
            .asked
            .iter()
            .filter(|(_, t)| now >= **t)
            .map(|(g, _)| *g)
            .collect();
        late.sort_unstable();
        let msgs = late.iter().filter_map(|g| self.cancel(*g)).collect();
        (late, msgs)
    }

    /// The next group to upload, by the allowance.
    pub fn serve(&mut self, now: Instant) -> Serve {
        let Some(&g) = self.inbound.front() else {
            return Serve::Idle;
        };
        let len = group_len(self.size, g);
        if let Some(budget) = self.upload.budget
            && self.uploaded + len > budget
        {
            // The budget is spent: reject the rest and choke for good.
            let queued: Vec<u64> = self.inbound.drain(..).collect();
            for (first, count) in runs(&queued, MAX_RANGE) {
                self.out.push(Msg::Reject { first, count }.encode());
            }
            if !self.choking {
                self.choking = true;
                self.out.push(Msg::Choke { retry_ms: u32::MAX }.encode());
            }
            return Serve::Idle;
        }
        let Some(rate) = self.upload.rate else {
            self.inbound.pop_front();
            return Serve::Group(g);
        };
        if rate == 0 {
            return Serve::Idle;
        }
        let cap = burst(self.upload);
        let elapsed = now.saturating_duration_since(self.tokens_at);
        let add = (elapsed.as_micros() as u64).saturating_mul(rate) / 1_000_000;
        if add > 0 {
            self.tokens = (self.tokens + add).min(cap);
            self.tokens_at = now;
        }
        if self.tokens >= len {
            self.tokens -= len;
            self.inbound.pop_front();
            Serve::Group(g)
        } else {
            let wait = (len - self.tokens) * 1_000_000 / rate;
            Serve::Wait(now + Duration::from_micros(wait.max(1)))
        }
    }

    /// The `Data` message for a group [`Link::serve`] chose, read from storage.
    pub fn data(&mut self, group: u64, bytes: &[u8]) -> Vec<u8> {
        self.uploaded += bytes.len() as u64;
        Msg::Data { group, bytes }.encode()
    }

    /// Tells the neighbour we now have `group`.
    pub fn have(&self, group: u64) -> Vec<u8> {
        Msg::Have { group }.encode()
    }
}

/// The allowance's size: a second of the rate, and at least a group.
fn burst(u: Upload) -> u64 {
    u.rate.map_or(0, |r| r.max(GROUP))
}

/// Sorted groups as runs `(first, count)` of at most `limit` groups.
pub fn runs(groups: &[u64], limit: u32) -> Vec<(u64, u32)> {
    let mut out: Vec<(u64, u32)> = Vec::new();
    for &g in groups {
        match out.last_mut() {
            Some((first, count)) if *first + u64::from(*count) == g && *count < limit => {
                *count += 1;
            }
            _ => out.push((g, 1)),
        }
    }
    out
}

fn name(m: &Msg<'_>) -> &'static str {
    match m {
        Msg::Hello { .. } => "hello",
        Msg::HaveAll => "have-all",
        Msg::Bitfield { .. } => "bitfield",
        Msg::Have { .. } => "have",
        Msg::Request { .. } => "request",
        Msg::Data { .. } => "data",
        Msg::Cancel { .. } => "cancel",
        Msg::Reject { .. } => "reject",
        Msg::Choke { .. } => "choke",
        Msg::Unchoke => "unchoke",
        Msg::Fetching { .. } => "fetching",
    }
}
