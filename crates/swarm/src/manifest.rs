//! Manifests: the files a swarm shares — each a path, a size, a BLAKE3 root and, above one
//! group, where its outboard is — optionally signed with Ed25519 by the publisher.
//!
//! A manifest is JSON in one **canonical** form, so that the bytes signed are the bytes any
//! reader rebuilds from what it parsed (Rust here, `JSON.stringify` in the browser): fields in
//! the order `v, group_log, files, key, sig` (a file's: `path, size, root, outboard`), no
//! whitespace, files sorted by path (byte order) with no duplicates, absent optional fields
//! left out. The signature covers `peerweb-manifest-v1\n` followed by the canonical JSON of
//! everything but `sig`. A manifest that is not canonical, or names unknown fields, is
//! refused — a reader never has to guess what was signed.
//!
//! Every size and count has a limit ([`MAX_BYTES`], [`MAX_FILES`], [`MAX_FILE_SIZE`],
//! [`MAX_PATH`]); paths are relative, `/`-separated, with no empty, `.` or `..` component,
//! no backslash and no control character, so a path can be joined under a folder safely.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::tree::GROUP_LOG;

/// The manifest format's version.
pub const VERSION: u32 = 1;
/// The largest manifest read (a folder of many small files fits; a user's list of files
/// should not need more).
pub const MAX_BYTES: usize = 8 << 20;
pub const MAX_FILES: usize = 50_000;
/// The largest file (1 TiB: its outboard is 4 GiB; under 2^53, so every size is exact in
/// JavaScript too).
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// The longest path, in bytes.
pub const MAX_PATH: usize = 1024;
/// What a signature signs before the manifest's canonical JSON.
const DOMAIN: &[u8] = b"peerweb-manifest-v1\n";
/// How a public key is written: this prefix and 64 hex digits.
const KEY_PREFIX: &str = "ed25519:";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest has {0} bytes; the most is {MAX_BYTES}")]
    TooLarge(usize),
    #[error("not a manifest: {0}")]
    Json(String),
    #[error("manifest version {0} is not supported (this peerweb reads version {VERSION})")]
    Version(u32),
    #[error("group_log {0} is not supported (16 KiB groups: {GROUP_LOG})")]
    GroupLog(u8),
    #[error("the manifest lists {0} files; the most is {MAX_FILES}")]
    TooManyFiles(usize),
    #[error("the manifest lists no file")]
    Empty,
    #[error("path {path:?}: {why}")]
    Path { path: String, why: &'static str },
    #[error("files are not sorted by path, or {0:?} is listed twice")]
    Order(String),
    #[error("{path:?} claims {size} bytes; the most is {MAX_FILE_SIZE}")]
    FileSize { path: String, size: u64 },
    #[error("{path:?}: the root is not 64 lowercase hex digits")]
    Root { path: String },
    #[error("{path:?}: {why}")]
    Outboard { path: String, why: &'static str },
    #[error("the manifest is not in canonical form (reformatted or edited)")]
    NotCanonical,
    #[error("the key is not an Ed25519 public key ({KEY_PREFIX} and 64 hex digits)")]
    Key,
    #[error("the manifest has a key but no signature, or a signature but no key")]
    Unsigned,
    #[error("the manifest is not signed, and a signature is required")]
    NotSigned,
    #[error("the manifest's signature does not verify")]
    Signature,
    #[error("the manifest is signed by {got}, not by {want}")]
    Signer { want: String, got: String },
}

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the manifest's folder, `/`-separated.
    pub path: String,
    pub size: u64,
    /// The file's BLAKE3 root, lowercase hex: its content id.
    pub root: String,
    /// Where its outboard is, relative to the manifest's folder (files above one group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outboard: Option<String>,
}

impl FileEntry {
    pub fn root_hash(&self) -> blake3::Hash {
        // Checked when the manifest was made or read.
        blake3::Hash::from_hex(&self.root).unwrap_or_else(|_| blake3::hash(b""))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub v: u32,
    pub group_log: u8,
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl Manifest {
    /// A manifest of `files` (sorted here), unsigned; checked as a parsed one would be.
    pub fn new(mut files: Vec<FileEntry>) -> Result<Manifest, ManifestError> {
        files.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let m = Manifest {
            v: VERSION,
            group_log: GROUP_LOG,
            files,
            key: None,
            sig: None,
        };
        m.check()?;
        Ok(m)
    }

    /// Signs the manifest with `key` (replacing any signature).
    pub fn sign(&mut self, key: &SigningKey) {
        self.key = Some(key_text(&key.verifying_key()));
        self.sig = None;
        let sig = key.sign(&self.signed_bytes());
        self.sig = Some(hex(&sig.to_bytes()));
    }

    /// The canonical bytes: what is written, and what a reader must have read.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// What the signature covers: the domain, then the canonical JSON without `sig`.
    fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Manifest {
            sig: None,
            ..self.clone()
        };
        let mut b = DOMAIN.to_vec();
        b.extend_from_slice(&unsigned.to_bytes());
        b
    }

    /// Reads a manifest: limits, fields, paths, canonical form, and — when it has one — its
    /// signature. A signed manifest's signer is [`Manifest::signer`]; compare it with the key
    /// you trust ([`Manifest::check_signer`]).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        m.check()?;
        if m.to_bytes() != bytes.strip_suffix(b"\n").unwrap_or(bytes) {
            return Err(ManifestError::NotCanonical);
        }
        match (&m.key, &m.sig) {
            (None, None) => {}
            (Some(_), Some(sig)) => {
                let key = m.signer().ok_or(ManifestError::Key)?;
                let sig = unhex::<64>(sig).ok_or(ManifestError::Signature)?;
                key.verify(&m.signed_bytes(), &Signature::from_bytes(&sig))
                    .map_err(|_| ManifestError::Signature)?;
            }
            _ => return Err(ManifestError::Unsigned),
        }
        Ok(m)
    }

    /// The key that signed the manifest (checked by [`Manifest::parse`]), if it is signed.
    pub fn signer(&self) -> Option<VerifyingKey> {
        let hex = self.key.as_deref()?.strip_prefix(KEY_PREFIX)?;
        VerifyingKey::from_bytes(&unhex::<32>(hex)?).ok()
    }

    /// Refuses a manifest not signed by `trusted` (a key as [`key_text`] writes it).
    pub fn check_signer(&self, trusted: &str) -> Result<(), ManifestError> {
        let want = parse_key(trusted)?;
        match self.signer() {
            Some(k) if k == want => Ok(()),
            Some(k) => Err(ManifestError::Signer {
                want: key_text(&want),
                got: key_text(&k),
            }),
            None => Err(ManifestError::NotSigned),
        }
    }

    /// The file with this path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_bytes().cmp(path.as_bytes()))
            .ok()
            .map(|i| &self.files[i])
    }

    fn check(&self) -> Result<(), ManifestError> {
        if self.v != VERSION {
            return Err(ManifestError::Version(self.v));
        }
        if self.group_log != GROUP_LOG {
            return Err(ManifestError::GroupLog(self.group_log));
        }
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles(self.files.len()));
        }
        if self.files.is_empty() {
            return Err(ManifestError::Empty);
        }
        for (i, f) in self.files.iter().enumerate() {
            check_path(&f.path)?;
            if i > 0 && self.files[i - 1].path.as_bytes() >= f.path.as_bytes() {
                return Err(ManifestError::Order(f.path.clone()));
            }
            if f.size > MAX_FILE_SIZE {
                return Err(ManifestError::FileSize {
                    path: f.path.clone(),
                    size: f.size,
                });
            }
            let hex_ok = f.root.len() == 64
                && f.root
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(ManifestError::Root {
                    path: f.path.clone(),
                });
            }
            let needs = crate::tree::groups(f.size) > 1;
            match (&f.outboard, needs) {
                (Some(o), true) => check_path(o).map_err(|_| ManifestError::Outboard {
                    path: f.path.clone(),
                    why: "its outboard's path is not a safe relative path",
                })?,
                (None, false) => {}
                (None, true) => {
                    return Err(ManifestError::Outboard {
                        path: f.path.clone(),
                        why: "a file above 16 KiB needs an outboard",
                    });
                }
                (Some(_), false) => {
                    return Err(ManifestError::Outboard {
                        path: f.path.clone(),
                        why: "a file of one group has no outboard",
                    });
                }
            }
        }
        Ok(())
    }
}

/// A safe relative path: what can be joined under a folder and served from it.
fn check_path(path: &str) -> Result<(), ManifestError> {
    let bad = |why| {
        Err(ManifestError::Path {
            path: path.chars().take(80).collect(),
            why,
        })
    };
    if path.is_empty() || path.len() > MAX_PATH {
        return bad("empty or longer than 1024 bytes");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return bad("a control character or backslash");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("not relative, or an empty, `.` or `..` component");
    }
    Ok(())
}

/// A public key as manifests write it: `ed25519:` and 64 hex digits.
pub fn key_text(key: &VerifyingKey) -> String {
    format!("{KEY_PREFIX}{}", hex(key.as_bytes()))
}

/// Reads a public key written by [`key_text`].
pub fn parse_key(text: &str) -> Result<VerifyingKey, ManifestError> {
    let hex = text.strip_prefix(KEY_PREFIX).ok_or(ManifestError::Key)?;
    VerifyingKey::from_bytes(&unhex::<32>(hex).ok_or(ManifestError::Key)?)
        .map_err(|_| ManifestError::Key)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            root: blake3::hash(path.as_bytes()).to_hex().to_string(),
            outboard: (size > 16384).then(|| format!("{path}.obao")),
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn written_then_read_signed_or_not() {
        let mut m = Manifest::new(vec![entry("b/x.bin", 70_000), entry("a.txt", 5)]).unwrap();
        assert_eq!(m.files[0].path, "a.txt", "sorted");
        let plain = m.to_bytes();
        assert_eq!(
            String::from_utf8(plain.clone()).unwrap(),
            format!(
                r#"{{"v":1,"group_log":4,"files":[{{"path":"a.txt","size":5,"root":"{}"}},{{"path":"b/x.bin","size":70000,"root":"{}","outboard":"b/x.bin.obao"}}]}}"#,
                m.files[0].root, m.files[1].root
            )
        );
        assert_eq!(Manifest::parse(&plain).unwrap(), m);
        m.sign(&key(1));
        let signed = m.to_bytes();
        let read = Manifest::parse(&signed).unwrap();
        assert_eq!(read, m);
        read.check_signer(&key_text(&key(1).verifying_key()))
            .unwrap();
        assert!(matches!(
            read.check_signer(&key_text(&key(2).verifying_key())),
            Err(ManifestError::Signer { .. })
        ));
        assert!(matches!(
            Manifest::parse(&plain)
                .unwrap()
                .check_signer(&key_text(&key(1).verifying_key())),
            Err(ManifestError::NotSigned)
        ));
        // A trailing newline is allowed (files end with one).
        let mut nl = signed.clone();
        nl.push(b'\n');
        assert!(Manifest::parse(&nl).is_ok());
        assert_eq!(m.file("b/x.bin").unwrap().size, 70_000);
        assert!(m.file("b").is_none());
    }

    #[test]
    fn tampering_is_refused() {
        let mut m = Manifest::new(vec![entry("a", 1), entry("b", 100_000)]).unwrap();
        m.sign(&key(3));
        let good = String::from_utf8(m.to_bytes()).unwrap();
        // A changed size, root, path or key: the signature fails (or the form does).
        for (from, to) in [
            (r#""size":1,"#, r#""size":2,"#),
            (&m.files[0].root[..6], "000000"),
            (r#""path":"b""#, r#""path":"c""#),
        ] {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good);
            assert!(
                matches!(
                    Manifest::parse(bad.as_bytes()),
                    Err(ManifestError::Signature)
                ),
                "{from} → {to}"
            );
        }
        let other = key_text(&key(4).verifying_key());
        let bad = good.replace(m.key.as_deref().unwrap(), &other);
        assert!(matches!(
            Manifest::parse(bad.as_bytes()),
            Err(ManifestError::Signature)
        ));
        // Reformatted, reordered or extended: not canonical or unknown.
        let spaced = good.replace(",\"", ", \"");
        assert!(matches!(
            Manifest::parse(spaced.as_bytes()),
            Err(ManifestError::NotCanonical)
        ));
        let extra = good.replacen("{\"v\":1,", "{\"v\":1,\"x\":0,", 1);
        assert!(matches!(
            Manifest::parse(extra.as_bytes()),
            Err(ManifestError::Json(_))
        ));
        let no_sig = good.split(",\"sig\"").next().unwrap().to_string() + "}";
        assert!(matches!(
            Manifest::parse(no_sig.as_bytes()),
            Err(ManifestError::Unsigned)
        ));
    }

    #[test]
    fn bad_manifests_get_a_clear_error() {
        let ok = |files: Vec<FileEntry>| Manifest::new(files);
        let cases: Vec<(Result<Manifest, ManifestError>, &str)> = vec![
            (ok(vec![]), "no file"),
            (ok(vec![entry("/etc/passwd", 1)]), "not relative"),
            (ok(vec![entry("a/../../b", 1)]), "not relative"),
            (ok(vec![entry("a//b", 1)]), "not relative"),
            (ok(vec![entry("a\\b", 1)]), "backslash"),
            (ok(vec![entry("a\nb", 1)]), "control"),
            (ok(vec![entry(&"x".repeat(1025), 1)]), "longer than"),
            (ok(vec![entry("a", 1), entry("a", 2)]), "listed twice"),
            (ok(vec![entry("a", MAX_FILE_SIZE + 1)]), "the most is"),
            (
                ok(vec![FileEntry {
                    root: "ABC".into(),
                    ..entry("a", 1)
                }]),
                "lowercase hex",
            ),
            (
                ok(vec![FileEntry {
                    outboard: None,
                    ..entry("a", 20_000)
                }]),
                "needs an outboard",
            ),
            (
                ok(vec![FileEntry {
                    outboard: Some("x".into()),
                    ..entry("a", 20)
                }]),
                "has no outboard",
            ),
        ];
        for (r, want) in cases {
            let e = r.expect_err(want).to_string();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
        let parse = |s: &str| Manifest::parse(s.as_bytes()).unwrap_err().to_string();
        assert!(parse("{").contains("not a manifest"));
        assert!(parse(r#"{"v":2,"group_log":4,"files":[]}"#).contains("version 2"));
        assert!(parse(r#"{"v":1,"group_log":3,"files":[]}"#).contains("group_log 3"));
        assert!(
            parse(r#"{"v":1,"group_log":4,"files":[{"path":"a","size":-1,"root":""}]}"#)
                .contains("not a manifest")
        );
        let huge = vec![b' '; MAX_BYTES + 1];
        assert!(matches!(
            Manifest::parse(&huge),
            Err(ManifestError::TooLarge(_))
        ));
        let many = Manifest {
            v: 1,
            group_log: 4,
            files: (0..=MAX_FILES)
                .map(|i| entry(&format!("{i:06}"), 1))
                .collect(),
            key: None,
            sig: None,
        };
        assert!(matches!(
            Manifest::parse(&many.to_bytes()),
            Err(ManifestError::TooManyFiles(_))
        ));
        assert!(matches!(parse_key("ed25519:00"), Err(ManifestError::Key)));
    }
}
