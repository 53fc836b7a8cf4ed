//! Manifests on disk (`peerweb manifest`): hashing files into their trees, writing each
//! outboard beside its file and the manifest in the folder they share, signing it with a key
//! kept as PKCS#8 PEM; and checking a folder against its manifest.
//!
//! **Where things are** (the convention readers rely on): the manifest is
//! `peerweb-manifest.json` in the folder its paths are relative to, and the outboard of
//! `path` is `path.obao` — so an origin that serves the folder serves both, and a reader that
//! knows a file's URL looks for the manifest in the same folder.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use peerweb_swarm::{Builder, FileEntry, Manifest, Tree};

/// The manifest's file name, in the folder its paths are relative to.
pub const MANIFEST_NAME: &str = "peerweb-manifest.json";
/// An outboard's suffix, after its file's name.
pub const OUTBOARD_SUFFIX: &str = ".obao";

/// What [`make`] wrote.
#[derive(Debug)]
pub struct Made {
    pub manifest: Manifest,
    /// Where the manifest was written.
    pub path: PathBuf,
    pub bytes: u64,
}

/// Hashes `paths` (files, and folders walked for their files, symlinks not followed) and
/// writes their outboards and the manifest — at `out`, or as [`MANIFEST_NAME`] in the
/// folder the paths share — signed with `key` if given. `each` sees every file's entry.
pub fn make(
    paths: &[PathBuf],
    out: Option<&Path>,
    key: Option<&SigningKey>,
    mut each: impl FnMut(&FileEntry),
) -> anyhow::Result<Made> {
    anyhow::ensure!(!paths.is_empty(), "name at least one file or folder");
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        let p = p
            .canonicalize()
            .with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            for e in walkdir::WalkDir::new(&p).sort_by_file_name() {
                let e = e.with_context(|| format!("cannot list {}", p.display()))?;
                let name = e.file_name().to_string_lossy();
                if e.file_type().is_file()
                    && !name.ends_with(OUTBOARD_SUFFIX)
                    && name != MANIFEST_NAME
                {
                    files.push(e.into_path());
                }
            }
        } else {
            files.push(p);
        }
    }
    let base = match out {
        Some(o) => {
            let dir = o.parent().filter(|d| !d.as_os_str().is_empty());
            dir.unwrap_or(Path::new("."))
                .canonicalize()
                .with_context(|| format!("no folder for {}", o.display()))?
        }
        None => common_folder(paths)?,
    };
    let out = out.map_or_else(
        || base.join(MANIFEST_NAME),
        |o| base.join(o.file_name().unwrap_or(o.as_os_str())),
    );
    // A manifest written under another name is not listed in itself either.
    files.retain(|f| *f != out);
    let mut entries = Vec::with_capacity(files.len());
    let mut bytes = 0;
    for file in &files {
        let rel = relative(&base, file)?;
        let tree = tree_of(file)?;
        let outboard = (tree.groups() > 1).then(|| format!("{rel}{OUTBOARD_SUFFIX}"));
        if let Some(o) = &outboard {
            crate::files::write_atomic(&base.join(o), &tree.outboard(), false)?;
        }
        bytes += tree.size();
        let entry = FileEntry {
            path: rel,
            size: tree.size(),
            root: tree.root().to_hex().to_string(),
            outboard,
        };
        each(&entry);
        entries.push(entry);
    }
    let mut manifest = Manifest::new(entries)?;
    if let Some(k) = key {
        manifest.sign(k);
    }
    let mut text = manifest.to_bytes();
    text.push(b'\n');
    crate::files::write_atomic(&out, &text, false)?;
    Ok(Made {
        manifest,
        path: out,
        bytes,
    })
}

/// What [`check`] found wrong with one file.
#[derive(Debug)]
pub struct Problem {
    pub path: String,
    pub why: String,
}

/// Reads the manifest at `path` (refused unless signed by `trusted`, when given) and checks
/// every file it lists, and its outboard, in its folder. Returns the manifest and the files
/// that do not match.
pub fn check(path: &Path, trusted: Option<&str>) -> anyhow::Result<(Manifest, Vec<Problem>)> {
    let (manifest, base) = read_in(path, trusted)?;
    let mut problems = Vec::new();
    for f in &manifest.files {
        let why = (|| -> anyhow::Result<()> {
            let tree = tree_of(&base.join(&f.path))?;
            if tree.size() != f.size {
                bail!("{} bytes, the manifest says {}", tree.size(), f.size);
            }
            if tree.root() != f.root_hash() {
                bail!("its content changed (BLAKE3 {})", tree.root().to_hex());
            }
            listed_tree(&base, f)?;
            Ok(())
        })();
        if let Err(e) = why {
            problems.push(Problem {
                path: f.path.clone(),
                why: format!("{e:#}"),
            });
        }
    }
    Ok((manifest, problems))
}

/// Reads a manifest (refused unless signed by `trusted`, when given); with the folder its
/// paths are relative to.
pub fn read_in(path: &Path, trusted: Option<&str>) -> anyhow::Result<(Manifest, PathBuf)> {
    let manifest = read(path)?;
    if let Some(k) = trusted {
        manifest.check_signer(k)?;
    }
    let base = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((manifest, base.to_path_buf()))
}

/// A listed file's tree from its outboard in `base` (checked against its root).
pub fn listed_tree(base: &Path, f: &FileEntry) -> anyhow::Result<Tree> {
    let ob = match &f.outboard {
        Some(o) => std::fs::read(base.join(o)).with_context(|| format!("outboard {o}"))?,
        None => Vec::new(),
    };
    Tree::from_outboard(f.size, f.root_hash(), &ob)
        .with_context(|| format!("outboard of {}", f.path))
}

/// Reads and parses a manifest file (limits, form, signature).
pub fn read(path: &Path) -> anyhow::Result<Manifest> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .take(peerweb_swarm::manifest::MAX_BYTES as u64 + 2)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Manifest::parse(&bytes).with_context(|| format!("{}", path.display()))
}

/// The Ed25519 key in `path` (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes),
/// made there (mode 0600) if there is none; `true` when it was made.
pub fn key(path: &Path) -> anyhow::Result<(SigningKey, bool)> {
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not an Ed25519 private key in PEM ({e})",
                    path.display()
                )
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = SigningKey::from_bytes(&seed);
            // PKCS#8 v1 (the seed alone), which every OpenSSL reads; v2 adds the public key.
            let pem = ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: seed,
                public_key: None,
            }
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("cannot encode the key: {e}"))?;
            crate::files::write_atomic(path, pem.as_bytes(), true)?;
            Ok((key, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A file's tree, read in 1 MiB pieces.
pub fn tree_of(path: &Path) -> anyhow::Result<Tree> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut b = Builder::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        b.update(&buf[..n]);
        anyhow::ensure!(
            b.size() <= peerweb_swarm::manifest::MAX_FILE_SIZE,
            "{} is larger than 1 TiB",
            path.display()
        );
    }
    Ok(b.finish())
}

/// The folder every path is in (a folder named is its own; a file's is its parent).
fn common_folder(paths: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let mut common: Option<PathBuf> = None;
    for p in paths {
        let c = p
            .canonicalize()
            .with_context(|| format!("cannot read {}", p.display()))?;
        let dir = if c.is_dir() {
            c
        } else {
            c.parent().map(Path::to_path_buf).unwrap_or(c)
        };
        common = Some(match common {
            None => dir,
            Some(prev) => {
                let mut shared = PathBuf::new();
                for (a, b) in prev.components().zip(dir.components()) {
                    if a != b {
                        break;
                    }
                    shared.push(a);
                }
                shared
            }
        });
    }
    common.context("no path")
}

/// `file` relative to `base`, `/`-separated; refused if it is not under `base` or its name
/// is not UTF-8.
fn relative(base: &Path, file: &Path) -> anyhow::Result<String> {
    let rel = file.strip_prefix(base).with_context(|| {
        format!(
            "{} is not under {}, where the manifest goes",
            file.display(),
            base.display()
        )
    })?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let parts = parts.with_context(|| format!("{}: the name is not UTF-8", file.display()))?;
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_gets_its_manifest_and_outboards_and_checks_clean_until_changed() {
        let dir = std::env::temp_dir().join(format!("peerweb-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("sub/big.bin"), &big).unwrap();
        std::fs::write(dir.join("small.txt"), b"hello").unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        let (k, made) = key(&dir.join("keys/k.pem")).unwrap();
        assert!(made);
        assert_eq!(key(&dir.join("keys/k.pem")).unwrap().0, k, "read back");
        let m = make(std::slice::from_ref(&dir), None, Some(&k), |_| {}).unwrap();
        assert_eq!(m.path, dir.canonicalize().unwrap().join(MANIFEST_NAME));
        let paths: Vec<_> = m.manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["empty", "keys/k.pem", "small.txt", "sub/big.bin"]);
        let f = m.manifest.file("sub/big.bin").unwrap();
        assert_eq!(
            f.root,
            blake3::hash(&big).to_hex().as_str(),
            "what b3sum prints"
        );
        assert_eq!(f.outboard.as_deref(), Some("sub/big.bin.obao"));
        assert_eq!(
            std::fs::metadata(dir.join("sub/big.bin.obao"))
                .unwrap()
                .len(),
            6 * 64
        );
        let trusted = peerweb_swarm::manifest::key_text(&k.verifying_key());
        let (_, problems) = check(&m.path, Some(&trusted)).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        // Made again over the same folder: the manifest and outboards are not listed.
        let again = make(std::slice::from_ref(&dir), None, Some(&k), |_| {}).unwrap();
        assert_eq!(again.manifest, m.manifest);
        // A changed file, a lost outboard: each found.
        std::fs::write(dir.join("small.txt"), b"hellO").unwrap();
        std::fs::remove_file(dir.join("sub/big.bin.obao")).unwrap();
        let (_, problems) = check(&m.path, None).unwrap();
        let bad: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(bad, ["small.txt", "sub/big.bin"]);
        // Another signer is refused.
        let other = SigningKey::from_bytes(&[9; 32]);
        let e = check(
            &m.path,
            Some(&peerweb_swarm::manifest::key_text(&other.verifying_key())),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("signed by"), "{e:#}");
        // A file outside the manifest's folder is refused.
        let e = make(
            &[dir.join("small.txt")],
            Some(&dir.join("sub/m.json")),
            None,
            |_| {},
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("is not under"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
