//! Signals between peers go through the bus: into the receiver's inbox, then to whichever node
//! holds its connection, in order, each with its position `n`. A client that acknowledges
//! (`hello` with `acks`) keeps its signals on the bus until its `ack`, so a connection lost
//! with its node loses none: the next node sends what came after the client's `last`.

use peerweb_proto::{ErrorCode, ServerMsg};
use serde_json::value::RawValue;

use crate::bus::{BusOp, Entry, EntryId, SWARM_FROM, Sent};
use crate::neighbours::swarm_note;
use crate::rooms::Reading;
use crate::{ConnId, Output, Signal};

/// Inbox entries read at once.
const INBOX_PAGE: usize = 64;

/// An inbox position as the protocol's `n` (the bus's ids are one counter: `0-n`).
pub(crate) fn n_of(id: EntryId) -> u64 {
    id.seq
}

pub(crate) fn id_of(n: u64) -> EntryId {
    EntryId { ms: 0, seq: n }
}

impl Signal {
    pub(crate) fn signal(&mut self, conn: ConnId, me: &str, to: &str, data: &RawValue) {
        let Some(s) = self.sessions.get(me) else {
            return;
        };
        if to == me || s.rooms.is_empty() && s.swarms.is_empty() {
            return self.error(conn, ErrorCode::UnknownPeer, "no such peer in your rooms");
        }
        // A room in common, or neighbours in a swarm (swarms live on one node). The views
        // hold every member on any node, but may not have heard yet of one that joined a
        // moment ago (its offer can come before its join): what the view does not show, the
        // bus checks, where rooms are current.
        let in_view = s.rooms.iter().any(|r| {
            self.rooms
                .get(r)
                .is_some_and(|v| v.members.iter().any(|(p, _)| p == to))
        });
        let linked = s.swarms.iter().any(|w| self.swarms.linked(w, me, to));
        if self.bus_lost {
            return self.signal_directly(conn, me, to, data, in_view || linked);
        }
        if let Some(t) = self.sessions.get_mut(to) {
            t.sending += 1;
        }
        self.out.push_back(Output::Bus(BusOp::Send {
            conn,
            to: to.to_owned(),
            from: me.to_owned(),
            data: data.get().to_owned(),
            max_inbox: self.cfg.max_inbox,
            shared_room: !in_view && !linked,
        }));
    }

    /// While the bus is away: a signal to a peer connected here goes to it directly, without
    /// an `n` (it is not kept for a resume), when nothing this node sent it is still on its
    /// way through the bus (per sender order); anything else is refused, to be tried again.
    fn signal_directly(
        &mut self,
        conn: ConnId,
        me: &str,
        to: &str,
        data: &RawValue,
        allowed: bool,
    ) {
        let target = self.sessions.get(to).and_then(|t| {
            let clear = t.sending == 0 && t.queued <= t.delivered;
            t.conn.filter(|_| clear)
        });
        match target {
            Some(target) if allowed => {
                let frame = ServerMsg::Signal {
                    from: me,
                    data,
                    n: None,
                }
                .encode();
                self.out.push_back(Output::Send {
                    conn: target,
                    frame,
                });
                self.stats.signals_relayed += 1;
            }
            _ => self.error(
                conn,
                ErrorCode::Unavailable,
                "the servers' shared state is unreachable; try again shortly",
            ),
        }
    }

    pub(crate) fn sent(&mut self, conn: ConnId, to: &str, result: Result<Sent, String>) {
        if let Some(t) = self.sessions.get_mut(to) {
            t.sending = t.sending.saturating_sub(1);
            if let Ok(Sent::Queued(id)) = result {
                t.queued = t.queued.max(id);
            }
        }
        match result {
            Ok(Sent::Queued(_)) => self.stats.signals_relayed += 1,
            Ok(Sent::NoSuchPeer | Sent::NotShared) => {
                self.error(conn, ErrorCode::UnknownPeer, "no such peer in your rooms");
            }
            Ok(Sent::InboxFull) => self.error(
                conn,
                ErrorCode::InboxFull,
                "the peer has too many signals it has not read; try again later",
            ),
            Err(_) => self.error(
                conn,
                ErrorCode::Unavailable,
                "the signal could not be relayed; try again",
            ),
        }
    }

    /// Reads `peer`'s inbox after what was delivered (once at a time), if it is connected here.
    pub(crate) fn read_inbox(&mut self, peer: &str) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        if s.conn.is_none() {
            return;
        }
        if s.reading.want() {
            self.out.push_back(Output::Bus(BusOp::ReadInbox {
                peer: peer.to_owned(),
                after: s.delivered,
                count: INBOX_PAGE,
            }));
        }
    }

    pub(crate) fn inbox(&mut self, peer: &str, after: EntryId, result: Result<Vec<Entry>, String>) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        let entries = match result {
            Ok(e) => e,
            Err(_) => {
                // Read again on the next wake-up or resync.
                s.reading = Reading::Idle;
                return;
            }
        };
        let more = entries.len() >= INBOX_PAGE;
        let conn = s.conn;
        if after == s.delivered
            && let Some(conn) = conn
        {
            for e in &entries {
                if e.id <= s.delivered {
                    continue;
                }
                s.delivered = e.id;
                if e.from == SWARM_FROM {
                    let cap = 2 * self.cfg.max_swarm_links;
                    swarm_note(&mut self.swarms, &mut self.out, cap, conn, peer, &e.data);
                    continue;
                }
                let Ok(data) = RawValue::from_string(e.data.clone()) else {
                    tracing::warn!(peer, "signal on the bus is not JSON; dropped");
                    continue;
                };
                let frame = ServerMsg::Signal {
                    from: &e.from,
                    data: &data,
                    n: Some(n_of(e.id)),
                }
                .encode();
                self.out.push_back(Output::Send { conn, frame });
            }
            // A client that does not acknowledge has what was written to it.
            if !s.acks && !entries.is_empty() {
                self.out.push_back(Output::Bus(BusOp::Ack {
                    peer: peer.to_owned(),
                    upto: s.delivered,
                }));
            }
        }
        if s.reading.done() || more {
            s.reading = Reading::Idle;
            self.read_inbox(peer);
        }
    }

    /// The client has every signal up to `n`.
    pub(crate) fn ack(&mut self, conn: ConnId, me: &str, n: u64) {
        let Some(s) = self.sessions.get(me) else {
            return;
        };
        if id_of(n) > s.delivered {
            return self.error(conn, ErrorCode::BadMessage, "ack for a signal not yet sent");
        }
        self.out.push_back(Output::Bus(BusOp::Ack {
            peer: me.to_owned(),
            upto: id_of(n),
        }));
    }
}
