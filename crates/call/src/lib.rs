//! Calls as pure logic, the native side of what the browser SDK's `call.js` and `verify.js`
//! speak on the `peerweb-call` data channel (docs/protocol.md, "Calls").
//!
//! - [`Verifier`]: one verification exchange with one peer. Each side commits to a fresh
//!   random value before it sees the other's, then reveals it; the short authentication string
//!   (three words, 24 bits) comes from both values and both DTLS fingerprints, so a man in the
//!   middle, who terminates DTLS towards each side, gets different words on each side and
//!   cannot search for a collision. A confirmed SAS leaves a continuity key; the next call
//!   between the same two proves it with a MAC and is verified without reading anything.
//! - [`State`]: the call state each side announces (which mid carries what, mutes, the video
//!   slot).
//!
//! No IO, no clock, no randomness: the caller passes the random value and looks keys up.

pub mod media;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The label of the SDK's call channel.
pub const CALL_LABEL: &str = "peerweb-call";
pub const VERIFY_VERSION: u64 = 1;
/// Largest call message accepted, in bytes of JSON text.
pub const MAX_MESSAGE: usize = 4096;

/// Where a verification stands (the SDK's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Exchanging.
    Waiting,
    /// Show the SAS; the users compare it and call [`Verifier::confirm`].
    Compare,
    /// By the users' confirmation, or by a continuity proof.
    Verified(By),
    /// A key was kept for that identity and the other side could not prove it: maybe a man
    /// in the middle. The SAS is shown to compare again.
    Changed,
    /// The users said the words differ.
    Mismatch,
    /// A message broke the protocol; see [`Verifier::error`].
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Sas,
    Continuity,
}

impl Stage {
    /// The SDK's name of the stage.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Waiting => "waiting",
            Stage::Compare => "compare",
            Stage::Verified(_) => "verified",
            Stage::Changed => "changed",
            Stage::Mismatch => "mismatch",
            Stage::Failed => "failed",
        }
    }
}

/// A message that breaks the protocol: the exchange stops, nothing is verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("verification: {0}")]
pub struct VerifyError(pub String);

fn fail<T>(why: &str) -> Result<T, VerifyError> {
    Err(VerifyError(why.to_owned()))
}

/// Lower-case hex, as the protocol writes identities, values and keys.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 lower-case hex digits (what the protocol sends), or `None`.
pub fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// `sha-256 AB:CD:…` from an SDP (algorithm lower case, digest upper case), as both sides
/// write fingerprints into the transcript.
pub fn fingerprint_of(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|l| {
        let rest = l.trim_end().strip_prefix("a=fingerprint:")?;
        let (algo, digest) = rest.split_once(' ')?;
        Some(format!(
            "{} {}",
            algo.to_ascii_lowercase(),
            digest.trim().to_ascii_uppercase()
        ))
    })
}

/// The transcript: both fingerprints in string order, then each side's revealed value (hex)
/// in the order of its fingerprint.
pub fn transcript(fp_a: &str, r_a: &str, fp_b: &str, r_b: &str) -> Vec<u8> {
    let ((f1, r1), (f2, r2)) = if fp_a < fp_b {
        ((fp_a, r_a), (fp_b, r_b))
    } else {
        ((fp_b, r_b), (fp_a, r_a))
    };
    format!("{f1}\n{f2}\n{r1}\n{r2}").into_bytes()
}

/// Three words of the transfer code list: the first three bytes of the SAS key.
pub fn sas_of(t: &[u8]) -> String {
    let d = blake3::Hasher::new_derive_key("peerweb call v1 sas")
        .update(t)
        .finalize();
    let words = &peerweb_transfer::code::WORDS;
    d.as_bytes()[..3]
        .iter()
        .map(|&b| words[usize::from(b)])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The key two sides keep once they confirmed the SAS of transcript `t`.
pub fn continuity_key(t: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("peerweb call v1 continuity")
        .update(t)
        .finalize()
        .as_bytes()
}

/// The proof that the side with fingerprint `fp` holds `key`, for transcript `t`.
pub fn proof_of(key: &[u8; 32], fp: &str, t: &[u8]) -> String {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(format!("peerweb call v1 proof\n{fp}\n").as_bytes());
    h.update(t);
    hex(h.finalize().as_bytes())
}

/// One verification exchange between this side and one peer.
#[derive(Debug)]
pub struct Verifier {
    local_fp: String,
    remote_fp: String,
    identity: String,
    r: [u8; 32],
    stage: Stage,
    sas: Option<String>,
    error: Option<String>,
    remote_identity: Option<String>,
    their_commit: Option<String>,
    their_r: Option<String>,
    my_key: Option<[u8; 32]>,
    /// Their proof: `None` until it came, `Some(None)` for "no key".
    their_proof: Option<Option<String>>,
    t: Option<Vec<u8>>,
}

impl Verifier {
    /// `identity`: this device's long-lived identity (64 hex digits); `r`: 32 fresh random
    /// bytes for this exchange.
    pub fn new(local_fp: String, remote_fp: String, identity: String, r: [u8; 32]) -> Self {
        Verifier {
            local_fp,
            remote_fp,
            identity,
            r,
            stage: Stage::Waiting,
            sas: None,
            error: None,
            remote_identity: None,
            their_commit: None,
            their_r: None,
            my_key: None,
            their_proof: None,
            t: None,
        }
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The three words, once both values are in.
    pub fn sas(&self) -> Option<&str> {
        self.sas.as_deref()
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The other side's long-lived identity, once its commitment came.
    pub fn remote_identity(&self) -> Option<&str> {
        self.remote_identity.as_deref()
    }

    /// The first message: our commitment.
    pub fn start(&self) -> String {
        serde_json::json!({
            "t": "commit", "v": VERIFY_VERSION, "id": self.identity,
            "c": hex(blake3::hash(&self.r).as_bytes()),
        })
        .to_string()
    }

    /// Takes one message of the other side; returns the messages to send. `key_for` gives
    /// the continuity key kept for an identity. A message that breaks the protocol puts the
    /// exchange in [`Stage::Failed`] and is returned as the error.
    pub fn receive(
        &mut self,
        text: &str,
        key_for: impl FnOnce(&str) -> Option<[u8; 32]>,
    ) -> Result<Vec<String>, VerifyError> {
        if matches!(self.stage, Stage::Failed | Stage::Mismatch) {
            return Ok(Vec::new());
        }
        let out = self.receive_inner(text, key_for);
        if let Err(e) = &out {
            self.stage = Stage::Failed;
            self.error = Some(e.0.clone());
        }
        out
    }

    fn receive_inner(
        &mut self,
        text: &str,
        key_for: impl FnOnce(&str) -> Option<[u8; 32]>,
    ) -> Result<Vec<String>, VerifyError> {
        if text.len() > MAX_MESSAGE {
            return fail("a message that is too long");
        }
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
            return fail("a message that is not a JSON object");
        };
        let str_of = |k: &str| m.get(k).and_then(Value::as_str);
        match str_of("t") {
            Some("commit") => {
                if m.get("v").and_then(Value::as_u64) != Some(VERIFY_VERSION) {
                    return fail("the other side speaks another call verification version");
                }
                if self.their_commit.is_some() {
                    return fail("a second commitment (replayed or repeated)");
                }
                let (Some(c), Some(id)) = (str_of("c"), str_of("id")) else {
                    return fail("a malformed commitment");
                };
                if hex32(c).is_none() || hex32(id).is_none() {
                    return fail("a malformed commitment or identity");
                }
                if c == hex(blake3::hash(&self.r).as_bytes()) {
                    return fail("our own commitment came back (reflected)");
                }
                self.their_commit = Some(c.to_owned());
                self.remote_identity = Some(id.to_owned());
                self.my_key = key_for(id);
                // Only now, with their value fixed, is ours revealed.
                Ok(vec![
                    serde_json::json!({"t": "reveal", "r": hex(&self.r)}).to_string(),
                ])
            }
            Some("reveal") => {
                let Some(commit) = &self.their_commit else {
                    return fail("a reveal before its commitment");
                };
                if self.their_r.is_some() {
                    return fail("a second reveal (replayed or repeated)");
                }
                let Some(r) = str_of("r").and_then(hex32) else {
                    return fail("a malformed reveal");
                };
                if &hex(blake3::hash(&r).as_bytes()) != commit {
                    return fail("the reveal does not match its commitment");
                }
                let theirs = hex(&r);
                let t = transcript(&self.local_fp, &hex(&self.r), &self.remote_fp, &theirs);
                self.sas = Some(sas_of(&t));
                let mac = self.my_key.map(|k| proof_of(&k, &self.local_fp, &t));
                self.their_r = Some(theirs);
                self.t = Some(t);
                if self.their_proof.is_some() {
                    self.settle();
                }
                Ok(vec![
                    serde_json::json!({"t": "proof", "mac": mac}).to_string(),
                ])
            }
            Some("proof") => {
                if self.their_proof.is_some() {
                    return fail("a second proof (replayed or repeated)");
                }
                let mac = match m.get("mac") {
                    Some(Value::Null) => None,
                    Some(Value::String(s)) if hex32(s).is_some() => Some(s.clone()),
                    _ => return fail("a malformed proof"),
                };
                self.their_proof = Some(mac);
                if self.t.is_some() {
                    self.settle();
                }
                Ok(Vec::new())
            }
            // Call state shares the channel; newer versions may add messages.
            _ => Ok(Vec::new()),
        }
    }

    fn settle(&mut self) {
        let (Some(t), Some(theirs)) = (&self.t, &self.their_proof) else {
            return;
        };
        self.stage = match &self.my_key {
            None => Stage::Compare,
            Some(k) if theirs.as_deref() == Some(&proof_of(k, &self.remote_fp, t)) => {
                Stage::Verified(By::Continuity)
            }
            Some(_) => Stage::Changed,
        };
    }

    /// The users compared the SAS: `true` when it matched. Returns the continuity key to keep
    /// for [`Verifier::remote_identity`].
    pub fn confirm(&mut self, matches: bool) -> Option<[u8; 32]> {
        if !matches!(self.stage, Stage::Compare | Stage::Changed) {
            return None;
        }
        if !matches {
            self.stage = Stage::Mismatch;
            return None;
        }
        self.stage = Stage::Verified(By::Sas);
        self.t.as_deref().map(continuity_key)
    }
}

/// What a member says of its side of the call (`{"t":"state",...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// mid → `camera`, `screen` or `audio`.
    pub tracks: BTreeMap<String, String>,
    pub muted: Muted,
    /// `on`, `held` (the mesh is full) or `off`.
    pub video: String,
    /// When this member's camera asked for a slot, ms since the epoch.
    pub since: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Muted {
    pub audio: bool,
    pub video: bool,
}

impl State {
    /// The message text.
    pub fn to_message(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("t".into(), "state".into());
            m.insert("v".into(), 1.into());
        }
        v.to_string()
    }

    /// A `state` message, leniently (unknown labels kept, bad fields defaulted); `None` if
    /// the text is no state message.
    pub fn from_message(text: &str) -> Option<State> {
        if text.len() > MAX_MESSAGE {
            return None;
        }
        let v: Value = serde_json::from_str(text).ok()?;
        if v.get("t")?.as_str()? != "state" {
            return None;
        }
        let tracks = v
            .get("tracks")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, l)| Some((k.clone(), l.as_str()?.chars().take(32).collect())))
                    .collect()
            })
            .unwrap_or_default();
        let flag = |k: &str| v["muted"][k].as_bool().unwrap_or(false);
        let video = match v.get("video").and_then(Value::as_str) {
            Some(s @ ("on" | "held" | "off")) => s.to_owned(),
            _ => "off".to_owned(),
        };
        Some(State {
            tracks,
            muted: Muted {
                audio: flag("audio"),
                video: flag("video"),
            },
            video,
            since: v.get("since").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

/// What a [`Session`] asks of its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Send `text` on our `peerweb-call` channel to `peer`.
    Send { peer: String, text: String },
    /// The verification with `peer` moved on.
    Verification {
        peer: String,
        stage: Stage,
        sas: Option<String>,
        error: Option<String>,
    },
    /// `peer` announced its call state (or `None`: it left the call).
    RemoteState { peer: String, state: Option<State> },
}

#[derive(Debug, Default)]
struct PeerCall {
    /// Our `peerweb-call` channel to the peer is open and our state went out on it.
    sent: bool,
    /// Our media lines on this connection: mid → label.
    tracks: BTreeMap<String, String>,
    fps: Option<(String, String)>,
    remote: Option<State>,
    verifier: Option<Verifier>,
}

/// This side of a call with every peer of a room, as the SDK's `call.js` runs it, without
/// media: call state out, the peers' state in, and one [`Verifier`] per peer once both sides
/// sent their state. The driver opens the channels, moves the text and keeps the keys.
#[derive(Debug)]
pub struct Session {
    identity: String,
    state: State,
    peers: std::collections::HashMap<String, PeerCall>,
}

impl Session {
    pub fn new(identity: String, state: State) -> Self {
        Session {
            identity,
            state,
            peers: std::collections::HashMap::new(),
        }
    }

    /// Our call channel to `peer` is open; `fps` are the DTLS fingerprints (ours, theirs) of
    /// the connection, `random` fresh bytes (used if the exchange starts now).
    pub fn channel_open(
        &mut self,
        peer: &str,
        fps: (String, String),
        random: [u8; 32],
    ) -> Vec<Out> {
        let p = self.peers.entry(peer.to_owned()).or_default();
        p.fps = Some(fps);
        p.sent = true;
        let mut out = vec![Out::Send {
            peer: peer.to_owned(),
            text: self.state_for(peer),
        }];
        self.maybe_verify(peer, random, &mut out);
        out
    }

    /// A message on a call channel from `peer`.
    pub fn message(
        &mut self,
        peer: &str,
        text: &str,
        random: [u8; 32],
        key_for: impl FnOnce(&str) -> Option<[u8; 32]>,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        let p = self.peers.entry(peer.to_owned()).or_default();
        if let Some(state) = State::from_message(text) {
            let first = p.remote.is_none();
            p.remote = Some(state.clone());
            out.push(Out::RemoteState {
                peer: peer.to_owned(),
                state: Some(state),
            });
            // It may have joined the call after our state went out.
            if first && p.sent {
                out.push(Out::Send {
                    peer: peer.to_owned(),
                    text: self.state_for(peer),
                });
            }
            self.maybe_verify(peer, random, &mut out);
            return out;
        }
        if serde_json::from_str::<Value>(text).is_ok_and(|v| v["t"] == "bye") {
            p.remote = None;
            p.verifier = None;
            out.push(Out::RemoteState {
                peer: peer.to_owned(),
                state: None,
            });
            return out;
        }
        let Some(v) = p.verifier.as_mut() else {
            // The state comes first on each channel: anything else before it breaks the
            // protocol (the SDK's rule).
            out.push(Out::Verification {
                peer: peer.to_owned(),
                stage: Stage::Failed,
                sas: None,
                error: Some("a verification message before the call state".into()),
            });
            return out;
        };
        let before = (v.stage(), v.sas().map(str::to_owned));
        let sent = v.receive(text, key_for).unwrap_or_default();
        out.extend(sent.into_iter().map(|text| Out::Send {
            peer: peer.to_owned(),
            text,
        }));
        if (v.stage(), v.sas().map(str::to_owned)) != before {
            out.push(verification(peer, v));
        }
        out
    }

    fn maybe_verify(&mut self, peer: &str, random: [u8; 32], out: &mut Vec<Out>) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.verifier.is_some() || !p.sent || p.remote.is_none() {
            return;
        }
        let Some((local, remote)) = p.fps.clone() else {
            return;
        };
        let v = Verifier::new(local, remote, self.identity.clone(), random);
        out.push(Out::Send {
            peer: peer.to_owned(),
            text: v.start(),
        });
        p.verifier = Some(v);
    }

    /// The users compared the words with `peer`; returns the identity and continuity key to
    /// keep when they matched.
    pub fn confirm(&mut self, peer: &str, matches: bool) -> (Vec<Out>, Option<(String, [u8; 32])>) {
        let Some(v) = self.peers.get_mut(peer).and_then(|p| p.verifier.as_mut()) else {
            return (Vec::new(), None);
        };
        let key = v.confirm(matches);
        let keep = key.and_then(|k| Some((v.remote_identity()?.to_owned(), k)));
        (vec![verification(peer, v)], keep)
    }

    /// Our media lines to `peer` changed (a negotiation named them): the peer is told which
    /// mid carries what.
    pub fn set_tracks(&mut self, peer: &str, tracks: BTreeMap<String, String>) -> Vec<Out> {
        let p = self.peers.entry(peer.to_owned()).or_default();
        if p.tracks == tracks {
            return Vec::new();
        }
        p.tracks = tracks;
        if !p.sent {
            return Vec::new();
        }
        vec![Out::Send {
            peer: peer.to_owned(),
            text: self.state_for(peer),
        }]
    }

    /// Our state as `peer` is told it: its connection's mids.
    fn state_for(&self, peer: &str) -> String {
        let mut s = self.state.clone();
        if let Some(p) = self.peers.get(peer) {
            s.tracks = p.tracks.clone();
        }
        s.to_message()
    }

    /// `peer` left the room.
    pub fn peer_left(&mut self, peer: &str) {
        self.peers.remove(peer);
    }
}

fn verification(peer: &str, v: &Verifier) -> Out {
    Out::Verification {
        peer: peer.to_owned(),
        stage: v.stage(),
        sas: v.sas().map(str::to_owned),
        error: v.error().map(str::to_owned),
    }
}

#[cfg(test)]
mod tests;
