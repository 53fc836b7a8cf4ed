//! Swarm neighbours: a member is introduced to a few others, first among the members on
//! this node (the registry in `swarm.rs`), then — when those are too few — among members on
//! other nodes, drawn from the bus's swarm directory. A neighbour on another node learns of
//! the link from an entry in its inbox ([`crate::bus::SWARM_FROM`]), after which either may signal the
//! other; its leaving (or being reported) comes the same way. Swarm state is soft: a session
//! that moves to another node joins its swarms again there.

use peerweb_proto::{ErrorCode, ServerMsg, SwarmPeer};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Instant;

use crate::bus::BusOp;
use crate::{ConnId, Output, Signal, grant_allows, swarm};

/// Members of the directory looked at per neighbour wanted (the bus draws them at random;
/// some are on this node or linked already).
const DRAWS_PER_WANT: usize = 4;
/// Members drawn from the directory at most at once.
const MAX_DRAWS: usize = 64;

/// An inbox entry from [`crate::bus::SWARM_FROM`]: `p` was introduced to the inbox's peer in swarm `w`
/// (with `p`'s seed flag `s`), or, with `left`, is no longer its neighbour.
#[derive(Debug, Serialize, Deserialize)]
struct SwarmNote {
    w: String,
    p: String,
    #[serde(default)]
    s: bool,
    #[serde(default)]
    left: bool,
}

impl Signal {
    pub(crate) fn swarm_join(
        &mut self,
        now: Instant,
        conn: ConnId,
        me: &str,
        swarm: &str,
        seed: bool,
    ) {
        let Some(session) = self.sessions.get(me) else {
            return;
        };
        if let Some((pattern, _)) = self.conns.get(&conn).and_then(|c| c.grant.as_ref())
            && !grant_allows(pattern, &format!("swarm:{swarm}"))
        {
            return self.error(
                conn,
                ErrorCode::Forbidden,
                "the access token does not allow swarms (swarm:…)",
            );
        }
        let already = session.swarms.iter().any(|w| w == swarm);
        if !already {
            if session.swarms.len() >= self.cfg.max_swarms_per_conn {
                return self.error(
                    conn,
                    ErrorCode::TooManySwarms,
                    "this connection is in too many swarms",
                );
            }
            if !self.swarms.exists(swarm) && self.swarms.len() >= self.cfg.max_swarms {
                return self.error(conn, ErrorCode::ServerFull, "server holds too many swarms");
            }
        }
        let lim = self.cfg.swarm_limits();
        match self.swarms.join(now, &mut self.rng, &lim, swarm, me, seed) {
            Err(swarm::JoinError::Full) => self.error(conn, ErrorCode::SwarmFull, "swarm is full"),
            Ok(picked) => {
                if !already && let Some(s) = self.sessions.get_mut(me) {
                    s.swarms.push(swarm.to_owned());
                }
                let peers = as_swarm_peers(&picked.peers);
                self.send(
                    conn,
                    &ServerMsg::SwarmJoined {
                        swarm,
                        peers: &peers,
                    },
                );
                self.introduce(swarm, &picked.intros);
                if !already {
                    self.enter_directory(me, swarm, seed);
                    self.pick_remote(me, swarm, lim.on_join.saturating_sub(picked.peers.len()));
                }
            }
        }
    }

    pub(crate) fn swarm_more(&mut self, now: Instant, conn: ConnId, me: &str, swarm: &str) {
        let lim = self.cfg.swarm_limits();
        match self.swarms.more(now, &mut self.rng, &lim, swarm, me) {
            None => self.error(conn, ErrorCode::NotInSwarm, "not in that swarm"),
            Some(Err(wait)) => self.send(
                conn,
                &ServerMsg::SwarmPeers {
                    swarm,
                    peers: &[],
                    retry_ms: Some(wait.as_millis() as u64),
                },
            ),
            Some(Ok(picked)) => {
                let peers = as_swarm_peers(&picked.peers);
                self.send(
                    conn,
                    &ServerMsg::SwarmPeers {
                        swarm,
                        peers: &peers,
                        retry_ms: None,
                    },
                );
                self.introduce(swarm, &picked.intros);
                self.pick_remote(me, swarm, lim.per_more.saturating_sub(picked.peers.len()));
            }
        }
    }

    /// Tells each introduced neighbour who was introduced to it.
    fn introduce(&mut self, swarm: &str, intros: &[swarm::Intro]) {
        for i in intros {
            let peer = SwarmPeer {
                id: &i.peer,
                seed: i.seed,
            };
            self.tell(&i.to, &ServerMsg::SwarmPeer { swarm, peer });
        }
    }

    /// Sends to a session's connection, if it has one now (one that is away re-learns its
    /// neighbours by joining again when it resumes).
    fn tell(&mut self, peer: &str, msg: &ServerMsg<'_>) {
        if let Some(conn) = self.sessions.get(peer).and_then(|s| s.conn) {
            self.send(conn, msg);
        }
    }

    /// Takes `me` out of `swarm` and tells its neighbours; false if it was not in it.
    pub(crate) fn remove_from_swarm(&mut self, me: &str, swarm: &str) -> bool {
        if let Some(s) = self.sessions.get_mut(me) {
            s.swarms.retain(|w| w != swarm);
        }
        let Some(neighbours) = self.swarms.leave(swarm, me) else {
            return false;
        };
        self.out.push_back(Output::Bus(BusOp::SwarmExit {
            swarm: swarm.to_owned(),
            peer: me.to_owned(),
        }));
        for n in neighbours {
            self.tell_left(&n, swarm, me);
        }
        true
    }

    /// Takes a session out of its swarms (it is gone; its rooms are the bus's business).
    pub(crate) fn leave_swarms(&mut self, id: &str) {
        let swarms = self
            .sessions
            .get(id)
            .map(|s| s.swarms.clone())
            .unwrap_or_default();
        for swarm in swarms {
            self.remove_from_swarm(id, &swarm);
        }
    }

    pub(crate) fn swarm_seed(&mut self, conn: ConnId, me: &str, swarm: &str) {
        if !self.swarms.seed(swarm, me) {
            return self.error(conn, ErrorCode::NotInSwarm, "not in that swarm");
        }
        self.enter_directory(me, swarm, true);
    }

    /// `me` is in the bus's directory of `swarm` (a seed with `seed`).
    fn enter_directory(&mut self, me: &str, swarm: &str, seed: bool) {
        self.out.push_back(Output::Bus(BusOp::SwarmEnter {
            swarm: swarm.to_owned(),
            peer: me.to_owned(),
            seed,
            max: self.cfg.max_peers_per_swarm,
        }));
    }

    pub(crate) fn swarm_bad(&mut self, conn: ConnId, me: &str, swarm: &str, bad: &str) {
        if self.swarms.bad(swarm, me, bad) {
            self.tell_left(bad, swarm, me);
        } else {
            self.error(
                conn,
                ErrorCode::UnknownPeer,
                "no such neighbour in that swarm",
            );
        }
    }

    /// Tells `to` that `me` is no longer its neighbour in `swarm`: here, or through its inbox.
    fn tell_left(&mut self, to: &str, swarm: &str, me: &str) {
        if self.sessions.contains_key(to) {
            self.tell(to, &ServerMsg::SwarmPeerLeft { swarm, id: me });
        } else {
            self.note(to, swarm, me, false, true);
        }
    }

    /// An entry from [`crate::bus::SWARM_FROM`] into `to`'s inbox.
    fn note(&mut self, to: &str, swarm: &str, peer: &str, seed: bool, left: bool) {
        let note = SwarmNote {
            w: swarm.to_owned(),
            p: peer.to_owned(),
            s: seed,
            left,
        };
        let Ok(data) = serde_json::to_string(&note) else {
            return;
        };
        self.out.push_back(Output::Bus(BusOp::SwarmTell {
            to: to.to_owned(),
            data,
            max_inbox: self.cfg.max_inbox,
        }));
    }

    /// Asks the directory for members on other nodes when `me` wants `want` more neighbours.
    fn pick_remote(&mut self, me: &str, swarm: &str, want: usize) {
        if want == 0 {
            return;
        }
        self.out.push_back(Output::Bus(BusOp::SwarmPick {
            swarm: swarm.to_owned(),
            peer: me.to_owned(),
            want,
            count: (want * DRAWS_PER_WANT).min(MAX_DRAWS),
        }));
    }

    /// Members of `swarm` the directory drew for `me`: those on other nodes it may link to
    /// become its neighbours (it is told with `swarm-peers`; each of them through its inbox).
    pub(crate) fn swarm_picked(
        &mut self,
        me: &str,
        swarm: &str,
        want: usize,
        result: Result<Vec<(String, bool)>, String>,
    ) {
        let Ok(drawn) = result else { return };
        let Some(conn) = self.sessions.get(me).and_then(|s| s.conn) else {
            return;
        };
        let cap = self.cfg.max_swarm_links;
        let mut linked = Vec::new();
        for (peer, seed) in drawn {
            if linked.len() == want {
                break;
            }
            // Members here were the local pick's to choose.
            if self.sessions.contains_key(&peer) {
                continue;
            }
            if self.swarms.link_remote(swarm, me, &peer, cap) {
                linked.push((peer, seed));
            }
        }
        if linked.is_empty() {
            return;
        }
        let my_seed = self.swarms.is_seed(swarm, me);
        for (peer, _) in &linked {
            self.note(peer, swarm, me, my_seed, false);
        }
        let peers = as_swarm_peers(&linked);
        let frame = ServerMsg::SwarmPeers {
            swarm,
            peers: &peers,
            retry_ms: None,
        }
        .encode();
        self.out.push_back(Output::Send { conn, frame });
    }
}

/// An inbox entry from [`crate::bus::SWARM_FROM`] for `me` (connected on `conn`): a neighbour on another
/// node, or its end. Introductions from other nodes may take a member past its own picks'
/// limit, up to `cap`: refusing one would leave the other side linked alone.
pub(crate) fn swarm_note(
    swarms: &mut swarm::Swarms,
    out: &mut VecDeque<Output>,
    cap: usize,
    conn: ConnId,
    me: &str,
    data: &str,
) {
    let Ok(note) = serde_json::from_str::<SwarmNote>(data) else {
        tracing::warn!(peer = me, "swarm entry on the bus is not one; dropped");
        return;
    };
    let swarm = note.w.as_str();
    let frame = if note.left {
        if !swarms.unlink(swarm, me, &note.p) {
            return;
        }
        ServerMsg::SwarmPeerLeft { swarm, id: &note.p }.encode()
    } else {
        if !swarms.link_remote(swarm, me, &note.p, cap) {
            return;
        }
        let peer = SwarmPeer {
            id: &note.p,
            seed: note.s,
        };
        ServerMsg::SwarmPeer { swarm, peer }.encode()
    };
    out.push_back(Output::Send { conn, frame });
}

/// Neighbours as the protocol lists them.
fn as_swarm_peers(peers: &[(String, bool)]) -> Vec<SwarmPeer<'_>> {
    peers
        .iter()
        .map(|(id, seed)| SwarmPeer { id, seed: *seed })
        .collect()
}
