//! What each side keeps between runs, as data (the driver reads and writes the files):
//! the camera's identity and the viewers it paired ([`CameraFile`]), a viewer's cameras
//! ([`ViewerFile`]); and the names both derive: rooms, pairing codes and links.

use peerweb_transfer::code::SECRET_BYTES;
use serde::{Deserialize, Serialize};

/// Most viewers one camera keeps paired.
pub const MAX_VIEWERS: usize = 256;
/// Most cameras one viewer keeps.
pub const MAX_CAMERAS: usize = 256;
/// The browser page a pairing link opens.
pub const WATCH_PATH: &str = "/watch";

/// The room a camera waits in for its paired viewers.
pub fn camera_room(id: &str) -> String {
    format!("camera-{id}")
}

/// The room a pairing code names (only while the camera shows that code).
pub fn pairing_room(nameplate: u16) -> String {
    format!("camera-pair-{nameplate}")
}

/// A camera id from random bytes: 16 lower-case base32 characters (80 bits).
pub fn new_id(random: [u8; 10]) -> String {
    data_encoding::BASE32_NOPAD
        .encode(&random)
        .to_ascii_lowercase()
}

/// Whether `s` is a camera id as [`new_id`] makes them.
pub fn is_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

pub fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

/// A viewer key from its hex form.
pub fn parse_key(s: &str) -> Option<[u8; SECRET_BYTES]> {
    let b = data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .ok()?;
    b.try_into().ok()
}

/// One viewer a camera paired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerRecord {
    pub id: String,
    /// 32 hex digits.
    pub key: String,
    #[serde(default)]
    pub name: String,
    /// Unix seconds.
    #[serde(default)]
    pub paired: u64,
}

/// The camera's file: who it is and whom it streams to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraFile {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub viewers: Vec<ViewerRecord>,
}

impl CameraFile {
    /// Checks what was read from disk: an id of the right shape, well-formed and distinct
    /// viewers, at most [`MAX_VIEWERS`].
    pub fn check(&self) -> Result<(), String> {
        if !is_id(&self.id) {
            return Err(format!("{:?} is not a camera id", self.id));
        }
        if self.viewers.len() > MAX_VIEWERS {
            return Err(format!("more than {MAX_VIEWERS} viewers"));
        }
        for (i, v) in self.viewers.iter().enumerate() {
            if parse_key(&v.key).is_none() {
                return Err(format!("viewer {:?} has a malformed key", v.id));
            }
            if self.viewers[..i].iter().any(|w| w.id == v.id) {
                return Err(format!("viewer {:?} is listed twice", v.id));
            }
        }
        Ok(())
    }

    /// Removes a viewer by id or name; whether one was.
    pub fn revoke(&mut self, who: &str) -> bool {
        let before = self.viewers.len();
        self.viewers.retain(|v| v.id != who && v.name != who);
        self.viewers.len() != before
    }
}

/// The bearer token a WHEP player presents for a paired viewer (`POST /whep/<camera>` on the
/// server, which relays it to the camera): `<viewer id>.<32 hex>`, derived from the viewer's
/// key so that the key itself (which proves visits over DTLS) never passes through the server.
/// Revoking the viewer revokes its token.
pub fn whep_token(viewer: &ViewerRecord) -> Option<String> {
    let key = parse_key(&viewer.key)?;
    Some(format!("{}.{}", viewer.id, hex(&whep_secret(&key))))
}

fn whep_secret(key: &[u8; SECRET_BYTES]) -> [u8; 16] {
    let full = blake3::derive_key("peerweb camera v1 whep token", key);
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The viewer a WHEP token names, if it is that viewer's token (compared in constant time).
pub fn check_whep_token<'a>(viewers: &'a [ViewerRecord], token: &str) -> Option<&'a ViewerRecord> {
    let (id, secret) = token.split_once('.')?;
    let given = parse_whep_secret(secret)?;
    let rec = viewers.iter().find(|v| v.id == id)?;
    let want = whep_secret(&parse_key(&rec.key)?);
    let diff = want
        .iter()
        .zip(given.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(rec)
}

fn parse_whep_secret(s: &str) -> Option<[u8; 16]> {
    let b = data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .ok()?;
    b.try_into().ok()
}

impl CameraFile {
    /// Adds a viewer the camera's owner makes by hand (a WHEP player: it never pairs by code),
    /// from fresh randomness; `None` when the list is full. A viewer of that name already
    /// there is returned as it is.
    pub fn add_viewer(
        &mut self,
        name: &str,
        random: [u8; 6 + SECRET_BYTES],
    ) -> Option<ViewerRecord> {
        let name = crate::wire::clean_name(name);
        if let Some(v) = self.viewers.iter().find(|v| v.name == name) {
            return Some(v.clone());
        }
        if self.viewers.len() >= MAX_VIEWERS {
            return None;
        }
        let rec = ViewerRecord {
            id: hex(&random[..6]),
            key: hex(&random[6..]),
            name,
            paired: 0,
        };
        self.viewers.push(rec.clone());
        Some(rec)
    }
}

/// One camera a viewer paired with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraRecord {
    pub camera: String,
    pub name: String,
    pub server: String,
    /// Our id on that camera.
    pub viewer: String,
    pub key: String,
}

/// A viewer's file: the cameras it may watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerFile {
    #[serde(default)]
    pub cameras: Vec<CameraRecord>,
}

impl ViewerFile {
    /// A camera by id or name.
    pub fn find(&self, who: &str) -> Option<&CameraRecord> {
        self.cameras
            .iter()
            .find(|c| c.camera == who)
            .or_else(|| self.cameras.iter().find(|c| c.name == who))
    }

    /// Keeps a pairing, replacing an earlier one with the same camera (the oldest goes when
    /// the list is full).
    pub fn keep(&mut self, rec: CameraRecord) {
        self.cameras.retain(|c| c.camera != rec.camera);
        if self.cameras.len() >= MAX_CAMERAS {
            self.cameras.remove(0);
        }
        self.cameras.push(rec);
    }
}

/// What a viewer is given to pair: the code people type, or the link (QR) a browser opens,
/// `https://host/watch#7-<secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingLink {
    pub server: String,
    pub nameplate: u16,
    pub secret: [u8; SECRET_BYTES],
}

impl PairingLink {
    pub fn parse(s: &str) -> Option<PairingLink> {
        let (base, fragment) = s.trim().split_once('#')?;
        let server = base
            .strip_suffix(WATCH_PATH)
            .or_else(|| base.strip_suffix(&format!("{WATCH_PATH}/")))?;
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return None;
        }
        let (n, secret) = fragment.split_once('-')?;
        let nameplate = n.parse().ok().filter(|n| (1..=999).contains(n))?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(secret.to_ascii_uppercase().as_bytes())
            .ok()?;
        Some(PairingLink {
            server: server.to_owned(),
            nameplate,
            secret: bytes.try_into().ok()?,
        })
    }
}

impl std::fmt::Display for PairingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = data_encoding::BASE32_NOPAD
            .encode(&self.secret)
            .to_ascii_lowercase();
        write!(
            f,
            "{}{WATCH_PATH}#{}-{secret}",
            self.server.trim_end_matches('/'),
            self.nameplate
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_links_round_trip() {
        let id = new_id([7; 10]);
        assert!(is_id(&id), "{id}");
        assert!(!is_id("camera-1") && !is_id(&id.to_uppercase()));
        let l = PairingLink {
            server: "https://cam.example".into(),
            nameplate: 12,
            secret: [3; SECRET_BYTES],
        };
        assert_eq!(PairingLink::parse(&l.to_string()), Some(l.clone()));
        assert!(l.to_string().starts_with("https://cam.example/watch#12-"));
        for bad in [
            "https://x/receive#12-aaaa",
            "ftp://x/watch#12-aaaa",
            "https://x/watch#0-aaaa",
            "https://x/watch#12-!!",
            "https://x/watch",
        ] {
            assert_eq!(PairingLink::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn files_are_checked_and_viewers_revoked() {
        let v = |id: &str, name: &str| ViewerRecord {
            id: id.into(),
            key: hex(&[1; SECRET_BYTES]),
            name: name.into(),
            paired: 0,
        };
        let mut f = CameraFile {
            id: new_id([1; 10]),
            name: "porch".into(),
            viewers: vec![v("a", "phone"), v("b", "laptop")],
        };
        assert_eq!(f.check(), Ok(()));
        assert!(f.revoke("laptop") && !f.revoke("laptop"));
        assert!(f.revoke("a") && f.viewers.is_empty());
        f.viewers = vec![v("a", ""), v("a", "")];
        assert!(f.check().is_err());
        f.viewers = vec![ViewerRecord {
            key: "zz".into(),
            ..v("a", "")
        }];
        assert!(f.check().is_err());
        f.viewers.clear();
        f.id = "nope".into();
        assert!(f.check().is_err());
    }

    #[test]
    fn a_viewer_keeps_one_record_per_camera() {
        let mut f = ViewerFile::default();
        for i in 0..(MAX_CAMERAS + 3) {
            f.keep(CameraRecord {
                camera: format!("c{i}"),
                name: format!("n{i}"),
                server: "http://x".into(),
                viewer: "v".into(),
                key: String::new(),
            });
        }
        assert_eq!(f.cameras.len(), MAX_CAMERAS);
        assert_eq!(f.find("n5").map(|c| c.camera.as_str()), Some("c5"));
        let again = CameraRecord {
            name: "new".into(),
            ..f.cameras[10].clone()
        };
        f.keep(again);
        assert_eq!(f.cameras.len(), MAX_CAMERAS);
        assert!(f.find("new").is_some());
    }
}
