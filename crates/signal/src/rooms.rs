//! Rooms: the bus holds each room's members and log; a node keeps a *view* of every room one
//! of its sessions is in — the members on all nodes, as of the last log entry it applied —
//! and tells its own members what changed, in the log's order.
//!
//! A member of the view gets the events after the position it joined at (`since`): its
//! `joined` answer already listed everyone up to there.

use std::collections::HashMap;

use peerweb_proto::{ErrorCode, PeerInfo, ServerMsg};
use serde_json::value::RawValue;

use crate::bus::{BusOp, EntryId, Joined, Members, RoomEvent};
use crate::{ConnId, Output, Signal, grant_allows};

/// Log entries read at once.
pub(crate) const LOG_PAGE: usize = 64;

/// Whether a read of the bus is under way for something, and whether another is needed after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Reading {
    #[default]
    Idle,
    Busy,
    /// A wake-up came during the read: read again when it ends.
    BusyAgain,
}

impl Reading {
    /// Marks a read wanted; true when one must start now.
    pub(crate) fn want(&mut self) -> bool {
        match self {
            Reading::Idle => {
                *self = Reading::Busy;
                true
            }
            _ => {
                *self = Reading::BusyAgain;
                false
            }
        }
    }

    /// A read ended; true when another must start now.
    pub(crate) fn done(&mut self) -> bool {
        let again = *self == Reading::BusyAgain;
        *self = if again { Reading::Busy } else { Reading::Idle };
        again
    }
}

/// A node's view of one room.
#[derive(Debug, Default)]
pub(crate) struct RoomView {
    /// Every member, on any node, in join order.
    pub(crate) members: Vec<(String, Option<Box<RawValue>>)>,
    /// The last log entry applied.
    pub(crate) at: EntryId,
    /// This node's members and the position each gets events after.
    pub(crate) local: HashMap<String, EntryId>,
    pub(crate) reading: Reading,
}

impl RoomView {
    fn has(&self, peer: &str) -> bool {
        self.members.iter().any(|(p, _)| p == peer)
    }
}

/// Metadata as stored on the bus back to JSON (it was validated on the way in).
fn raw(meta: Option<&str>) -> Option<Box<RawValue>> {
    meta.and_then(|m| RawValue::from_string(m.to_owned()).ok())
}

impl Signal {
    pub(crate) fn join(&mut self, conn: ConnId, me: &str, room: &str, meta: Option<&RawValue>) {
        let Some(session) = self.sessions.get(me) else {
            return;
        };
        if let Some((pattern, _)) = self.conns.get(&conn).and_then(|c| c.grant.as_ref())
            && !grant_allows(pattern, room)
        {
            return self.error(
                conn,
                ErrorCode::Forbidden,
                "the access token does not allow this room",
            );
        }
        // (One join at a time: the connection's next frames wait for the bus's answer.)
        if !session.rooms.iter().any(|r| r == room) {
            if session.rooms.len() >= self.cfg.max_rooms_per_conn {
                return self.error(
                    conn,
                    ErrorCode::TooManyRooms,
                    "this connection is in too many rooms",
                );
            }
            if !self.rooms.contains_key(room) && self.rooms.len() >= self.cfg.max_rooms {
                return self.error(conn, ErrorCode::ServerFull, "server holds too many rooms");
            }
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.blocked += 1;
        }
        self.out.push_back(Output::Bus(BusOp::Join {
            conn,
            room: room.to_owned(),
            peer: me.to_owned(),
            meta: meta.map(|m| m.get().to_owned()),
            max_members: self.cfg.max_peers_per_room,
            reply: true,
        }));
    }

    /// The bus answered a join (the client's, or one re-establishing a resumed session's view).
    pub(crate) fn joined(
        &mut self,
        conn: ConnId,
        room: &str,
        me: &str,
        reply: bool,
        result: Result<Joined, String>,
    ) {
        let members = match result {
            Ok(Joined::Joined(m) | Joined::Already(m)) => m,
            Ok(Joined::Full) => return self.error(conn, ErrorCode::RoomFull, "room is full"),
            Ok(Joined::NoSession) | Err(_) => {
                return self.error(
                    conn,
                    ErrorCode::Unavailable,
                    "the server could not join the room; try again",
                );
            }
        };
        // The connection (or the session's hold on it) may be gone by now: the membership
        // stays with the session on the bus, like any other.
        let current = self.sessions.get(me).is_some_and(|s| s.conn == Some(conn));
        if !current {
            return;
        }
        if let Some(s) = self.sessions.get_mut(me)
            && !s.rooms.iter().any(|r| r == room)
        {
            s.rooms.push(room.to_owned());
        }
        match self.rooms.get(room) {
            None => {
                // A new view from the bus's members; watched from now on, and read once
                // after that, for what happened between the two.
                self.out.push_back(Output::Bus(BusOp::Watch {
                    room: room.to_owned(),
                }));
                let view = RoomView {
                    members: members
                        .members
                        .iter()
                        .map(|(p, m)| (p.clone(), raw(m.as_deref())))
                        .collect(),
                    at: members.at,
                    ..RoomView::default()
                };
                self.rooms.insert(room.to_owned(), view);
                self.read_room(room);
            }
            // The bus's answer is ahead of the view: the view takes it (its members hear the
            // difference), so the joiner's list and the view agree from here on.
            Some(view) if members.at > view.at => self.reconcile(room, &members),
            Some(_) => {}
        }
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        view.local.insert(me.to_owned(), view.at);
        if reply {
            let peers: Vec<PeerInfo<'_>> = view
                .members
                .iter()
                .filter(|(p, _)| p != me)
                .map(|(id, meta)| PeerInfo {
                    id,
                    meta: meta.as_deref(),
                })
                .collect();
            let frame = ServerMsg::Joined {
                room,
                peers: &peers,
            }
            .encode();
            self.out.push_back(Output::Send { conn, frame });
        }
    }

    pub(crate) fn leave(&mut self, conn: ConnId, me: &str, room: &str) {
        let in_room = self
            .sessions
            .get(me)
            .is_some_and(|s| s.rooms.iter().any(|r| r == room));
        if !in_room {
            return self.error(conn, ErrorCode::NotInRoom, "not in that room");
        }
        if let Some(s) = self.sessions.get_mut(me) {
            s.rooms.retain(|r| r != room);
        }
        self.drop_local_member(room, me);
        self.out.push_back(Output::Bus(BusOp::Leave {
            room: room.to_owned(),
            peer: me.to_owned(),
        }));
        self.send(conn, &ServerMsg::Left { room });
    }

    /// This node no longer has `peer` in `room`'s view (it left, or its connection is gone);
    /// a view without local members is dropped.
    pub(crate) fn drop_local_member(&mut self, room: &str, peer: &str) {
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        view.local.remove(peer);
        if view.local.is_empty() {
            self.rooms.remove(room);
            self.out.push_back(Output::Bus(BusOp::Unwatch {
                room: room.to_owned(),
            }));
        }
    }

    /// Reads `room`'s log after the view's position (once at a time).
    pub(crate) fn read_room(&mut self, room: &str) {
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        if view.reading.want() {
            self.out.push_back(Output::Bus(BusOp::ReadRoom {
                room: room.to_owned(),
                after: view.at,
                count: LOG_PAGE,
            }));
        }
    }

    pub(crate) fn room_log(
        &mut self,
        room: &str,
        after: EntryId,
        count: usize,
        result: Result<Option<Vec<(EntryId, RoomEvent)>>, String>,
    ) {
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        let entries = match result {
            Ok(Some(entries)) => entries,
            Ok(None) => {
                // The log moved past the view (or the room emptied): start again from the
                // members, telling the local ones the difference.
                self.out.push_back(Output::Bus(BusOp::Members {
                    room: room.to_owned(),
                }));
                return;
            }
            Err(_) => {
                // Read again on the next wake-up or resync.
                view.reading = Reading::Idle;
                return;
            }
        };
        // A read from before the view moved on (it took a join's answer) is read again.
        let stale = after != view.at;
        let more = entries.len() >= count;
        if !stale {
            for (id, event) in entries {
                self.apply(room, id, event);
            }
        }
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        if view.reading.done() || more || stale {
            view.reading = Reading::Idle;
            self.read_room(room);
        }
    }

    /// One log entry: the view changes and the local members after `since` are told.
    fn apply(&mut self, room: &str, id: EntryId, event: RoomEvent) {
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        if id <= view.at {
            return;
        }
        view.at = id;
        self.change(room, event, Some(id));
    }

    /// Changes the view by one event and tells the local members whose position is before
    /// `id` (all of them when `None`: a reconciliation).
    fn change(&mut self, room: &str, event: RoomEvent, id: Option<EntryId>) {
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        let (who, frame) = match &event {
            RoomEvent::Joined { peer, meta } => {
                if view.has(peer) {
                    return;
                }
                view.members.push((peer.clone(), raw(meta.as_deref())));
                let stored = view.members.last().and_then(|(_, m)| m.as_deref());
                let frame = ServerMsg::PeerJoined {
                    room,
                    peer: PeerInfo {
                        id: peer,
                        meta: stored,
                    },
                }
                .encode();
                (peer.clone(), frame)
            }
            RoomEvent::Left { peer } => {
                if !view.has(peer) {
                    return;
                }
                view.members.retain(|(p, _)| p != peer);
                let frame = ServerMsg::PeerLeft { room, id: peer }.encode();
                (peer.clone(), frame)
            }
        };
        let mut to: Vec<ConnId> = view
            .local
            .iter()
            .filter(|(p, since)| **p != who && id.is_none_or(|id| **since < id))
            .filter_map(|(p, _)| self.sessions.get(p).and_then(|s| s.conn))
            .collect();
        to.sort();
        for conn in to {
            self.out.push_back(Output::Send {
                conn,
                frame: frame.clone(),
            });
        }
        // A local member taken out elsewhere (its session ended on the bus) is out here too.
        if matches!(event, RoomEvent::Left { .. }) && view.local.contains_key(&who) {
            if let Some(s) = self.sessions.get_mut(&who) {
                s.rooms.retain(|r| r != room);
            }
            self.drop_local_member(room, &who);
        }
    }

    /// The bus's members after a gap in the log.
    pub(crate) fn room_members(&mut self, room: &str, result: Result<Members, String>) {
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        let again = view.reading == Reading::BusyAgain;
        view.reading = Reading::Idle;
        let Ok(m) = result else {
            return;
        };
        self.reconcile(room, &m);
        if again {
            self.read_room(room);
        }
    }

    /// The view takes the bus's members as of `m.at`; its local members are told the
    /// difference.
    fn reconcile(&mut self, room: &str, m: &Members) {
        let Some(view) = self.rooms.get_mut(room) else {
            return;
        };
        let gone: Vec<String> = view
            .members
            .iter()
            .filter(|(p, _)| !m.members.iter().any(|(q, _)| q == p))
            .map(|(p, _)| p.clone())
            .collect();
        let new: Vec<(String, Option<String>)> = m
            .members
            .iter()
            .filter(|(p, _)| !view.has(p))
            .cloned()
            .collect();
        for peer in gone {
            self.change(room, RoomEvent::Left { peer }, None);
        }
        for (peer, meta) in new {
            self.change(room, RoomEvent::Joined { peer, meta }, None);
        }
        if let Some(view) = self.rooms.get_mut(room) {
            view.at = m.at;
            for since in view.local.values_mut() {
                *since = (*since).min(m.at);
            }
        }
    }
}
