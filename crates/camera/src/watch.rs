//! The viewer's side of the camera protocol, for one connection to a camera: it proves the
//! pairing code (or link) or its key, checks the camera's proof, and reports what the camera
//! says. Sans-IO: feed [`Watcher::open`] and [`Watcher::message`], act on what they return.

use peerweb_transfer::code::SECRET_BYTES;
use peerweb_transfer::{Handshake, Secret, TrustError, sas};

use crate::store::parse_key;
use crate::wire::{MAX_REASON_BYTES, Msg, Status, VERSION, Visit, clean_name};

/// What the viewer proves.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The code or link secret the camera shows: pairs a new viewer.
    Pair(Secret),
    /// A paired viewer's id and key on this camera.
    Key {
        viewer: String,
        key: [u8; SECRET_BYTES],
    },
}

/// What happened, for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these messages to the camera, in order.
    Send(Vec<Vec<u8>>),
    /// Both proofs verified; the camera streams. `key` only after a pairing: keep it.
    Welcome {
        camera: String,
        name: String,
        viewer: String,
        key: Option<[u8; SECRET_BYTES]>,
        sas: String,
    },
    Status(Status),
    /// The camera refused us, or we refuse it (its proof failed): the visit is over.
    Refused(String),
    /// Nothing to do.
    Nothing,
}

#[derive(Debug)]
enum Stage {
    New,
    Proving,
    Confirmed,
    Welcomed,
    Over,
}

/// One viewer's visit to one camera connection.
#[derive(Debug)]
pub struct Watcher {
    credential: Credential,
    name: String,
    hs: Handshake,
    stage: Stage,
    fps: Option<(String, String)>,
}

impl Watcher {
    /// `name`: how the camera lists us.
    pub fn new(credential: Credential, name: &str) -> Watcher {
        let hs = match &credential {
            Credential::Pair(s) => Handshake::receiver(s),
            Credential::Key { key, .. } => Handshake::receiver(&Secret::Link(*key)),
        };
        Watcher {
            credential,
            name: clean_name(name),
            hs,
            stage: Stage::New,
            fps: None,
        }
    }

    /// The connection's channel opened: `visit` and our `hello`.
    pub fn open(&mut self, local_fp: &str, remote_fp: &str) -> Step {
        self.fps = Some((local_fp.to_owned(), remote_fp.to_owned()));
        self.stage = Stage::Proving;
        let viewer = match &self.credential {
            Credential::Pair(_) => None,
            Credential::Key { viewer, .. } => Some(viewer.clone()),
        };
        let visit = Msg::Camera(Visit::Visit {
            v: VERSION,
            viewer,
            name: (!self.name.is_empty()).then(|| self.name.clone()),
        });
        Step::Send(vec![visit.encode(), Msg::Trust(self.hs.hello()).encode()])
    }

    fn over(&mut self, why: String) -> Step {
        self.stage = Stage::Over;
        Step::Refused(peerweb_transfer::wire::cut(&why, MAX_REASON_BYTES).to_owned())
    }

    /// A message from the camera.
    pub fn message(&mut self, data: &[u8]) -> Step {
        if matches!(self.stage, Stage::Over | Stage::New) {
            return Step::Nothing;
        }
        let Some((local, remote)) = self.fps.clone() else {
            return Step::Nothing;
        };
        let msg = match Msg::decode(data) {
            Ok(m) => m,
            Err(e) => return self.over(format!("the camera sent a bad message: {e}")),
        };
        match (&self.stage, msg) {
            (_, Msg::Camera(Visit::Refused { reason })) => {
                self.over(format!("the camera refused: {reason}"))
            }
            (Stage::Proving, Msg::Trust(c @ peerweb_transfer::Control::Hello { .. })) => match self
                .hs
                .on_hello(&c)
                .and_then(|()| self.hs.confirm(&local, &remote))
            {
                Ok(confirm) => Step::Send(vec![Msg::Trust(confirm).encode()]),
                Err(e) => self.over(e.to_string()),
            },
            (Stage::Proving, Msg::Trust(c @ peerweb_transfer::Control::Confirm { .. })) => {
                match self.hs.verify(&local, &remote, &c) {
                    Ok(()) => {
                        self.stage = Stage::Confirmed;
                        Step::Nothing
                    }
                    Err(TrustError::Mismatch) => self.over(
                        "the camera could not prove it holds the code or key for these DTLS \
                         fingerprints: a wrong code, or a man in the middle"
                            .into(),
                    ),
                    Err(e) => self.over(e.to_string()),
                }
            }
            (
                Stage::Confirmed,
                Msg::Camera(Visit::Welcome {
                    camera,
                    name,
                    viewer,
                    key,
                }),
            ) => {
                let key = match (&self.credential, key) {
                    (Credential::Pair(_), Some(k)) => match parse_key(&k) {
                        Some(k) => Some(k),
                        None => return self.over("the camera sent a malformed key".into()),
                    },
                    (Credential::Pair(_), None) => {
                        return self.over("the camera paired us without a key".into());
                    }
                    (Credential::Key { .. }, _) => None,
                };
                if !crate::store::is_id(&camera) || viewer.is_empty() || viewer.len() > 64 {
                    return self.over("the camera sent a malformed welcome".into());
                }
                self.stage = Stage::Welcomed;
                Step::Welcome {
                    camera,
                    name: clean_name(&name),
                    viewer: clean_name(&viewer),
                    key,
                    sas: sas(&remote, &local),
                }
            }
            (Stage::Welcomed, Msg::Camera(Visit::Status(s))) => Step::Status(s),
            _ => self.over("the camera broke the protocol (a message out of turn)".into()),
        }
    }

    /// Whether the camera verified and welcomed us.
    pub fn welcomed(&self) -> bool {
        matches!(self.stage, Stage::Welcomed)
    }
}
