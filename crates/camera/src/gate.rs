//! The camera's gate: who gets the stream. Private by default — media goes to a peer only
//! after it proved, over this very DTLS connection, either the pairing code (or link) the
//! camera shows, or the key it was given when it paired ([`crate::wire`] for the messages,
//! [`peerweb_transfer::trust`] for the proofs).
//!
//! Pairing: a code pairs one viewer per try. A wrong guess burns the code (a guesser gets one
//! try in 65,536 per code shown); after [`MAX_PAIRING_FAILURES`] the camera stops pairing. A
//! success or a failure draws a fresh code while the pairing window lasts.
//!
//! Sans-IO: the driver feeds peers' openings, messages and departures with the time, and
//! carries out what [`Gate::poll`] returns.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use peerweb_transfer::code::{Code, SECRET_BYTES};
use peerweb_transfer::{Handshake, TrustError, sas};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore as _, SeedableRng as _};

use crate::store::{CameraFile, ViewerRecord, hex, parse_key};
use crate::wire::{MAX_REASON_BYTES, Msg, Status, VERSION, Visit, clean_name};

/// How long a peer may take from its channel opening to a verified handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Wrong codes tried before the camera stops pairing.
pub const MAX_PAIRING_FAILURES: u32 = 3;
/// Peers in a handshake at once (the rest are refused until one finishes).
pub const MAX_HANDSHAKES: usize = 16;

/// What the stream is, for viewers' status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceInfo {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A message to a peer on its default channel.
    Send { peer: String, data: Vec<u8> },
    /// A message to a WHEP player's bridge on the server, as an app signal.
    Signal { peer: String, data: Vec<u8> },
    /// Media to this peer from now on (and a keyframe for its decoder).
    Allow { peer: String },
    /// No more media to this peer.
    Cut { peer: String },
    /// A new paired viewer: keep it (the camera file changed).
    Paired(ViewerRecord),
    /// Pairing is open under this code and link secret until `until`.
    Code {
        code: Code,
        secret: [u8; SECRET_BYTES],
        until: Instant,
    },
    /// Pairing closed, and why.
    PairingClosed { why: &'static str },
    /// A viewer is watching (verified); `sas` is what both sides can compare.
    Watching {
        peer: String,
        viewer: String,
        name: String,
        sas: String,
    },
    /// A peer was refused, and why.
    Refused { peer: String, why: String },
}

#[derive(Debug)]
struct Pairing {
    code: Code,
    secret: [u8; SECRET_BYTES],
    until: Instant,
    /// The peer trying the current code.
    busy: Option<String>,
}

#[derive(Debug)]
enum Stage {
    /// Channel open, waiting for `visit`.
    Waiting,
    /// `visit` came; the handshake runs. `viewer`: the paired viewer it claims to be, or
    /// `None` for a pairing.
    Proving {
        hs: Box<Handshake>,
        viewer: Option<String>,
        name: String,
        hello: bool,
    },
    Watching {
        viewer: String,
    },
    /// A WHEP player whose token named `viewer`: media once its connection is up.
    Connecting {
        viewer: String,
        name: String,
    },
    /// Paired by this connection; it watches on its next visit.
    Paired,
    Refused,
}

#[derive(Debug)]
struct Session {
    stage: Stage,
    since: Instant,
    local_fp: String,
    remote_fp: String,
    /// A WHEP player: no channel, it hears from us by app signals.
    whep: bool,
}

/// The camera side of the camera protocol.
#[derive(Debug)]
pub struct Gate {
    camera: String,
    name: String,
    viewers: Vec<ViewerRecord>,
    rng: ChaCha20Rng,
    pairing: Option<Pairing>,
    pairing_failures: u32,
    sessions: HashMap<String, Session>,
    source: SourceInfo,
    out: VecDeque<Out>,
}

impl Gate {
    /// `seed`: randomness for codes, link secrets and viewer keys (from the OS).
    pub fn new(file: &CameraFile, seed: [u8; 32]) -> Gate {
        Gate {
            camera: file.id.clone(),
            name: file.name.clone(),
            viewers: file.viewers.clone(),
            rng: ChaCha20Rng::from_seed(seed),
            pairing: None,
            pairing_failures: 0,
            sessions: HashMap::new(),
            source: SourceInfo::default(),
            out: VecDeque::new(),
        }
    }

    /// Opens pairing for `window` (a fresh code each time a code is used).
    pub fn open_pairing(&mut self, now: Instant, window: Duration) {
        self.pairing_failures = 0;
        self.new_code(now + window);
    }

    fn new_code(&mut self, until: Instant) {
        let mut b = [0; 4];
        self.rng.fill_bytes(&mut b);
        let mut secret = [0; SECRET_BYTES];
        self.rng.fill_bytes(&mut secret);
        let code = Code::from_random(b);
        self.pairing = Some(Pairing {
            code,
            secret,
            until,
            busy: None,
        });
        self.out.push_back(Out::Code {
            code,
            secret,
            until,
        });
    }

    /// The room the current code names is taken (someone waits there already): another code,
    /// not counted as a failure. Nothing while someone is trying the code.
    pub fn redraw_code(&mut self) {
        if let Some(p) = &self.pairing
            && p.busy.is_none()
        {
            let until = p.until;
            self.new_code(until);
        }
    }

    fn close_pairing(&mut self, why: &'static str) {
        if self.pairing.take().is_some() {
            self.out.push_back(Out::PairingClosed { why });
        }
    }

    /// Whether pairing is open.
    pub fn pairing(&self) -> bool {
        self.pairing.is_some()
    }

    /// The viewers it streams to, from the camera file (read again when it changed): those
    /// no longer listed are cut off.
    pub fn set_viewers(&mut self, viewers: Vec<ViewerRecord>) {
        self.viewers = viewers;
        let revoked: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| match &s.stage {
                Stage::Watching { viewer }
                | Stage::Connecting { viewer, .. }
                | Stage::Proving {
                    viewer: Some(viewer),
                    ..
                } => !self.viewers.iter().any(|v| &v.id == viewer),
                _ => false,
            })
            .map(|(p, _)| p.clone())
            .collect();
        for peer in revoked {
            self.refuse(&peer, "this viewer's pairing was revoked".into());
        }
    }

    /// What is streamed: told to every viewer.
    pub fn set_source(&mut self, info: SourceInfo) {
        if info != self.source {
            self.source = info;
            self.status_all();
        }
    }

    /// Peers watching now.
    pub fn watching(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s.stage, Stage::Watching { .. }))
            .count()
    }

    /// A peer's default channel opened; `local_fp`/`remote_fp` are the DTLS fingerprints of
    /// its connection.
    pub fn peer_open(&mut self, now: Instant, peer: &str, local_fp: &str, remote_fp: &str) {
        self.peer_left(peer);
        self.sessions.insert(
            peer.to_owned(),
            Session {
                stage: Stage::Waiting,
                since: now,
                local_fp: local_fp.to_owned(),
                remote_fp: remote_fp.to_owned(),
                whep: false,
            },
        );
    }

    /// An app signal from a peer: a WHEP player's bridge presenting its bearer token
    /// ([`crate::store::whep_token`]). A valid token gets `welcome` (the bridge then sends the
    /// player's offer); media starts when [`Gate::peer_connected`] says its connection is up.
    /// WHEP has no DTLS-bound proof: the token is a bearer secret, and whoever relays it (the
    /// server) could use it — the price of WHEP, documented.
    pub fn app_signal(&mut self, now: Instant, peer: &str, data: &[u8]) {
        if self.sessions.contains_key(peer) {
            // A peer of the camera protocol, or a bridge that presented a token already.
            return;
        }
        self.sessions.insert(
            peer.to_owned(),
            Session {
                stage: Stage::Waiting,
                since: now,
                local_fp: String::new(),
                remote_fp: String::new(),
                whep: true,
            },
        );
        let (v, token) = match Msg::decode(data) {
            Ok(Msg::Camera(Visit::Whep { v, token })) => (v, token),
            Ok(_) => return self.refuse(peer, "unexpected signal".into()),
            Err(e) => return self.refuse(peer, e.to_string()),
        };
        if !self.admits(peer, "WHEP bridge", v) {
            return;
        }
        let Some(rec) = crate::store::check_whep_token(&self.viewers, &token) else {
            return self.refuse(
                peer,
                "not a token of a viewer of this camera (or it was revoked)".into(),
            );
        };
        let (viewer, name) = (rec.id.clone(), rec.name.clone());
        if let Some(s) = self.sessions.get_mut(peer) {
            s.stage = Stage::Connecting {
                viewer: viewer.clone(),
                name,
            };
        }
        let welcome = Msg::Camera(Visit::Welcome {
            camera: self.camera.clone(),
            name: self.name.clone(),
            viewer,
            key: None,
        });
        self.send(peer, &welcome);
    }

    /// A peer's connection is up (ICE and DTLS): a WHEP player that presented a good token
    /// gets media from now on.
    pub fn peer_connected(&mut self, peer: &str) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        let Stage::Connecting { viewer, name } = &s.stage else {
            return;
        };
        let (viewer, name) = (viewer.clone(), name.clone());
        s.stage = Stage::Watching {
            viewer: viewer.clone(),
        };
        self.out.push_back(Out::Allow {
            peer: peer.to_owned(),
        });
        self.out.push_back(Out::Watching {
            peer: peer.to_owned(),
            viewer,
            name,
            sas: String::new(),
        });
        self.status_all();
    }

    /// Whether a peer (`who`: a viewer, a WHEP bridge) speaking protocol `v` may start proving
    /// itself now; if not it is refused, and why.
    fn admits(&mut self, peer: &str, who: &str, v: u32) -> bool {
        let why = if v != VERSION {
            format!("{who} speaks camera protocol v{v}, this camera v{VERSION}")
        } else if self.connecting() >= MAX_HANDSHAKES {
            "busy: too many viewers connecting; retry".into()
        } else {
            return true;
        };
        self.refuse(peer, why);
        false
    }

    /// Peers proving who they are (a handshake, or a WHEP player not connected yet).
    fn connecting(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| matches!(s.stage, Stage::Proving { .. } | Stage::Connecting { .. }))
            .count()
    }

    /// A peer left or its connection ended.
    pub fn peer_left(&mut self, peer: &str) {
        let Some(s) = self.sessions.remove(peer) else {
            return;
        };
        if let Some(p) = &mut self.pairing
            && p.busy.as_deref() == Some(peer)
        {
            // Gone mid-try: the code may have been guessed at, so it is burned.
            let until = p.until;
            self.pairing_failed(until);
        }
        if matches!(s.stage, Stage::Watching { .. }) {
            self.out.push_back(Out::Cut {
                peer: peer.to_owned(),
            });
            self.status_all();
        }
    }

    /// A text message from a peer's default channel.
    pub fn message(&mut self, peer: &str, data: &[u8]) {
        let Some(s) = self.sessions.get(peer) else {
            return;
        };
        if matches!(s.stage, Stage::Refused | Stage::Paired) {
            return;
        }
        let msg = match Msg::decode(data) {
            Ok(m) => m,
            Err(e) => return self.refuse(peer, e.to_string()),
        };
        match msg {
            Msg::Camera(Visit::Visit { v, viewer, name }) => self.visit(peer, v, viewer, name),
            Msg::Trust(c) => self.trust(peer, &c),
            Msg::Camera(_) => self.refuse(peer, "unexpected message from a viewer".into()),
        }
    }

    fn visit(&mut self, peer: &str, v: u32, viewer: Option<String>, name: Option<String>) {
        let waiting = self
            .sessions
            .get(peer)
            .is_some_and(|s| matches!(s.stage, Stage::Waiting));
        if !waiting {
            return self.refuse(peer, "visit out of turn".into());
        }
        if !self.admits(peer, "viewer", v) {
            return;
        }
        let mut name = clean_name(name.as_deref().unwrap_or(""));
        let hs = match &viewer {
            Some(id) => match self.viewers.iter().find(|v| &v.id == id) {
                Some(rec) => match parse_key(&rec.key) {
                    Some(key) => {
                        // Known by the name it paired under.
                        if !rec.name.is_empty() {
                            name.clone_from(&rec.name);
                        }
                        Handshake::sender_link(key)
                    }
                    None => return self.refuse(peer, "this viewer's key is damaged".into()),
                },
                None => {
                    return self.refuse(
                        peer,
                        "not paired with this camera (or the pairing was revoked): pair with a code"
                            .into(),
                    );
                }
            },
            None => match &mut self.pairing {
                None => return self.refuse(peer, "this camera is not pairing now".into()),
                Some(p) if p.busy.is_some() => {
                    return self.refuse(peer, "busy: someone else is pairing; retry".into());
                }
                Some(p) => {
                    p.busy = Some(peer.to_owned());
                    Handshake::sender(p.secret, p.code)
                }
            },
        };
        let hello = hs.hello();
        if let Some(s) = self.sessions.get_mut(peer) {
            s.stage = Stage::Proving {
                hs: Box::new(hs),
                viewer,
                name,
                hello: false,
            };
        }
        self.send(peer, &Msg::Trust(hello));
    }

    fn trust(&mut self, peer: &str, c: &peerweb_transfer::Control) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        let Stage::Proving { hs, hello, .. } = &mut s.stage else {
            return self.refuse(peer, "handshake out of turn".into());
        };
        let step = if !*hello {
            *hello = true;
            hs.on_hello(c)
                .and_then(|()| hs.confirm(&s.local_fp, &s.remote_fp))
                .map(Some)
        } else {
            hs.verify(&s.local_fp, &s.remote_fp, c).map(|()| None)
        };
        match step {
            Ok(Some(confirm)) => self.send(peer, &Msg::Trust(confirm)),
            Ok(None) => self.verified(peer),
            Err(e) => {
                let why = match e {
                    TrustError::Mismatch => {
                        "verification failed: wrong code or key, or a man in the middle".into()
                    }
                    e => e.to_string(),
                };
                self.refuse(peer, why);
            }
        }
    }

    fn verified(&mut self, peer: &str) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        let Stage::Proving { viewer, name, .. } = &s.stage else {
            return;
        };
        let (viewer, name) = (viewer.clone(), name.clone());
        let code_sas = sas(&s.local_fp, &s.remote_fp);
        let Some(viewer) = viewer else {
            return self.paired(peer, name);
        };
        if let Some(s) = self.sessions.get_mut(peer) {
            s.stage = Stage::Watching {
                viewer: viewer.clone(),
            };
        }
        let welcome = Msg::Camera(Visit::Welcome {
            camera: self.camera.clone(),
            name: self.name.clone(),
            viewer: viewer.clone(),
            key: None,
        });
        self.send(peer, &welcome);
        self.out.push_back(Out::Allow {
            peer: peer.to_owned(),
        });
        self.out.push_back(Out::Watching {
            peer: peer.to_owned(),
            viewer,
            name,
            sas: code_sas,
        });
        self.status_all();
    }

    /// A pairing verified: a new viewer with its own key, sent over this connection. It
    /// watches by coming back with that key (to the camera's room), like any later visit.
    fn paired(&mut self, peer: &str, name: String) {
        if self.viewers.len() >= crate::store::MAX_VIEWERS {
            return self.refuse(
                peer,
                format!(
                    "this camera has {} paired viewers already; revoke one first",
                    crate::store::MAX_VIEWERS
                ),
            );
        }
        let mut id = [0; 6];
        self.rng.fill_bytes(&mut id);
        let mut key = [0; SECRET_BYTES];
        self.rng.fill_bytes(&mut key);
        let rec = ViewerRecord {
            id: hex(&id),
            key: hex(&key),
            name,
            paired: 0,
        };
        if let Some(s) = self.sessions.get_mut(peer) {
            s.stage = Stage::Paired;
        }
        self.viewers.push(rec.clone());
        let welcome = Msg::Camera(Visit::Welcome {
            camera: self.camera.clone(),
            name: self.name.clone(),
            viewer: rec.id.clone(),
            key: Some(rec.key.clone()),
        });
        self.send(peer, &welcome);
        self.out.push_back(Out::Paired(rec));
        // The code is used: a fresh one while the window lasts (after the welcome, which
        // leaves through the room this code named).
        if let Some(p) = &self.pairing {
            let until = p.until;
            self.new_code(until);
        }
    }

    /// Ends a peer's visit: no media, a `refused` message, and a failed pairing try burns
    /// the code.
    fn refuse(&mut self, peer: &str, why: String) {
        let Some(s) = self.sessions.get_mut(peer) else {
            return;
        };
        let was_watching = matches!(s.stage, Stage::Watching { .. });
        let was_pairing = matches!(s.stage, Stage::Proving { viewer: None, .. });
        s.stage = Stage::Refused;
        let why = peerweb_transfer::wire::cut(&why, MAX_REASON_BYTES).to_owned();
        self.send(
            peer,
            &Msg::Camera(Visit::Refused {
                reason: why.clone(),
            }),
        );
        if was_watching {
            self.out.push_back(Out::Cut {
                peer: peer.to_owned(),
            });
            self.status_all();
        }
        if was_pairing
            && let Some(p) = &self.pairing
            && p.busy.as_deref() == Some(peer)
        {
            let until = p.until;
            self.pairing_failed(until);
        }
        self.out.push_back(Out::Refused {
            peer: peer.to_owned(),
            why,
        });
    }

    fn pairing_failed(&mut self, until: Instant) {
        self.pairing_failures += 1;
        if self.pairing_failures >= MAX_PAIRING_FAILURES {
            self.close_pairing("too many failed tries");
        } else {
            self.new_code(until);
        }
    }

    fn status_all(&mut self) {
        let viewers = self.watching() as u32;
        let msg = Msg::Camera(Visit::Status(Status {
            viewers,
            width: self.source.width,
            height: self.source.height,
            fps: self.source.fps,
        }));
        let peers: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.stage, Stage::Watching { .. }) && !s.whep)
            .map(|(p, _)| p.clone())
            .collect();
        for p in peers {
            self.send(&p, &msg);
        }
    }

    fn send(&mut self, peer: &str, msg: &Msg) {
        let (peer, data) = (peer.to_owned(), msg.encode());
        let whep = self.sessions.get(&peer).is_some_and(|s| s.whep);
        self.out.push_back(if whep {
            Out::Signal { peer, data }
        } else {
            Out::Send { peer, data }
        });
    }

    /// Handshakes that took too long are refused; the pairing window ends.
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s.stage,
                    Stage::Waiting | Stage::Proving { .. } | Stage::Connecting { .. }
                ) && now >= s.since + HANDSHAKE_TIMEOUT
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in late {
            self.refuse(&p, "the handshake took too long".into());
        }
        if self.pairing.as_ref().is_some_and(|p| now >= p.until) {
            self.close_pairing("the pairing window ended");
        }
    }

    /// When [`Gate::handle_timeout`] next has something to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        let handshakes = self
            .sessions
            .values()
            .filter(|s| {
                matches!(
                    s.stage,
                    Stage::Waiting | Stage::Proving { .. } | Stage::Connecting { .. }
                )
            })
            .map(|s| s.since + HANDSHAKE_TIMEOUT);
        handshakes
            .chain(self.pairing.as_ref().map(|p| p.until))
            .min()
    }

    pub fn poll(&mut self) -> Option<Out> {
        self.out.pop_front()
    }
}
