//! `peerweb join --call`: the native peer as a member of a call (no media yet): it speaks the
//! SDK's call channel, announces its state and verifies each peer with the words both people
//! read aloud (crates/call), keeping continuity keys in a file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use peerweb_call::{By, CALL_LABEL, Muted, Out, Session, Stage, State, hex, hex32};
use peerweb_net::Node;
use peerweb_peer::ChannelOptions;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::peer::say;

/// This device's identity and the continuity keys it kept, in one JSON file (mode 0600).
#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    identity: String,
    /// Peer identity → key (hex) and the name it had.
    keys: BTreeMap<String, Kept>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    key: String,
    name: Option<String>,
}

fn random() -> anyhow::Result<[u8; 32]> {
    let mut b = [0; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(b)
}

/// The default key file: `$XDG_CONFIG_HOME/peerweb/call-keys.json`, or under `~/.config`.
pub fn default_key_file() -> Option<PathBuf> {
    peerweb_apps::files::config_file("call-keys.json")
}

impl KeyFile {
    fn load(path: &Path) -> anyhow::Result<KeyFile> {
        let mut f = peerweb_apps::files::load::<KeyFile>(path)?.unwrap_or_default();
        if hex32(&f.identity).is_none() {
            f.identity = hex(&random()?);
            f.save(path)?;
        }
        Ok(f)
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        peerweb_apps::files::save(path, self)
    }
}

/// The call side of `peerweb join`.
pub struct Call {
    session: Session,
    keys: KeyFile,
    path: PathBuf,
    opened: HashSet<String>,
    json: bool,
}

impl Call {
    /// `video`: whether we send a camera (the call state says so).
    pub fn new(key_file: PathBuf, json: bool, video: bool) -> anyhow::Result<Call> {
        let keys = KeyFile::load(&key_file)?;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let state = State {
            tracks: BTreeMap::new(),
            muted: Muted::default(),
            video: if video { "on" } else { "off" }.into(),
            since,
        };
        Ok(Call {
            session: Session::new(keys.identity.clone(), state),
            keys,
            path: key_file,
            opened: HashSet::new(),
            json,
        })
    }

    /// The default channel to `peer` is open: open the call channel too.
    pub async fn peer_open(&mut self, node: &Node, peer: &str) -> anyhow::Result<()> {
        node.open_channel(peer, CALL_LABEL, ChannelOptions::default())
            .await?;
        Ok(())
    }

    /// A call channel to `peer` opened (ours or theirs: the first one starts the exchange).
    pub async fn channel_open(&mut self, node: &Node, peer: &str) -> anyhow::Result<()> {
        if !self.opened.insert(peer.to_owned()) {
            return Ok(());
        }
        let Some((local, Some(remote))) = node.fingerprints(peer).await? else {
            return Ok(());
        };
        let norm = |f: &str| peerweb_call::fingerprint_of(&format!("a=fingerprint:{f}"));
        let (Some(local), Some(remote)) = (norm(&local), norm(&remote)) else {
            return Ok(());
        };
        let outs = self.session.channel_open(peer, (local, remote), random()?);
        self.apply(node, outs).await
    }

    pub async fn message(&mut self, node: &Node, peer: &str, text: &str) -> anyhow::Result<()> {
        let keys = &self.keys.keys;
        let outs = self.session.message(peer, text, random()?, |id| {
            keys.get(id).and_then(|k| hex32(&k.key))
        });
        self.apply(node, outs).await
    }

    /// A media line to `peer` was negotiated: tell it which of ours carries what.
    pub async fn tracks(&mut self, node: &Node, peer: &str) -> anyhow::Result<()> {
        let tracks = node
            .sending(peer)
            .await?
            .into_iter()
            .map(|(mid, label)| (mid, label.to_owned()))
            .collect();
        let outs = self.session.set_tracks(peer, tracks);
        self.apply(node, outs).await
    }

    pub fn peer_left(&mut self, peer: &str) {
        self.opened.remove(peer);
        self.session.peer_left(peer);
    }

    /// `/verify PEER yes|no` typed by the user.
    pub async fn command(&mut self, node: &Node, line: &str) -> anyhow::Result<()> {
        let mut words = line.split_whitespace().skip(1);
        let (Some(peer), Some(answer)) = (words.next(), words.next()) else {
            say("usage: /verify PEER yes|no")?;
            return Ok(());
        };
        let matches = match answer {
            "yes" | "y" => true,
            "no" | "n" => false,
            _ => {
                say("usage: /verify PEER yes|no")?;
                return Ok(());
            }
        };
        let (outs, keep) = self.session.confirm(peer, matches);
        if let Some((identity, key)) = keep {
            self.keys.keys.insert(
                identity,
                Kept {
                    key: hex(&key),
                    name: None,
                },
            );
            self.keys.save(&self.path)?;
        }
        self.apply(node, outs).await
    }

    async fn apply(&mut self, node: &Node, outs: Vec<Out>) -> anyhow::Result<()> {
        for o in outs {
            match o {
                Out::Send { peer, text } => {
                    if let Err(e) = node
                        .send(&peer, Some(CALL_LABEL), false, text.into_bytes())
                        .await
                    {
                        eprintln!("peerweb: call message to {peer}: {e}");
                    }
                }
                Out::Verification {
                    peer,
                    stage,
                    sas,
                    error,
                } => self.report(&peer, stage, sas.as_deref(), error.as_deref())?,
                Out::RemoteState { peer, state } => {
                    if self.json {
                        say(&json!({"event": "call-state", "peer": peer,
                            "in_call": state.is_some(),
                            "muted": state.as_ref().map(|s| json!({"audio": s.muted.audio, "video": s.muted.video})),
                            "video": state.as_ref().map(|s| s.video.clone())})
                        .to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn report(
        &self,
        peer: &str,
        stage: Stage,
        sas: Option<&str>,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let by = match stage {
            Stage::Verified(By::Sas) => Some("sas"),
            Stage::Verified(By::Continuity) => Some("continuity"),
            _ => None,
        };
        if self.json {
            return say(
                &json!({"event": "verification", "peer": peer, "state": stage.name(),
                "sas": sas, "by": by, "error": error})
                .to_string(),
            );
        }
        let text = match stage {
            Stage::Compare => format!(
                "* {peer}: read these words aloud together: {}   (then /verify {peer} yes|no)",
                sas.unwrap_or("")
            ),
            Stage::Changed => format!(
                "! {peer}: WARNING: the key kept from your last call does not match. Someone may be \
                 in the middle. Compare the words: {}   (then /verify {peer} yes|no)",
                sas.unwrap_or("")
            ),
            Stage::Verified(By::Continuity) => format!("* {peer}: verified (known key)"),
            Stage::Verified(By::Sas) => format!("* {peer}: verified"),
            Stage::Mismatch => {
                format!("! {peer}: the words differed: someone may be in the middle of this call")
            }
            Stage::Failed => format!(
                "! {peer}: verification broke: {}",
                error.unwrap_or("a broken message")
            ),
            Stage::Waiting => return Ok(()),
        };
        say(&text)
    }
}
