//! `peerweb manifest`: the face of manifests — arguments and output. The driver is
//! `peerweb_apps::manifest`, the format `peerweb_swarm::manifest`.

use std::path::PathBuf;

use clap::Args;
use peerweb_apps::manifest::{self as driver, MANIFEST_NAME};
use peerweb_swarm::manifest::key_text;
use serde_json::json;

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Files and folders to list (folders walked; symlinks not followed). Each file's id is
    /// its BLAKE3 root, what `b3sum` prints; each file above 16 KiB gets its outboard beside
    /// it (`FILE.obao`).
    #[arg(required_unless_present = "check")]
    pub paths: Vec<PathBuf>,
    /// Sign the manifest with the Ed25519 key in this file (PKCS#8 PEM, as `openssl genpkey
    /// -algorithm ed25519` writes it); made there if there is none. Readers pin its public
    /// key, printed here.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Where to write the manifest (default: `peerweb-manifest.json` in the folder the paths
    /// share); every path must be under its folder.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Check the files a manifest lists, and their outboards, against it instead; exit 1 if
    /// any differs.
    #[arg(long, value_name = "MANIFEST", conflicts_with_all = ["paths", "key", "out"])]
    pub check: Option<PathBuf>,
    /// With --check: refuse the manifest unless this key (`ed25519:…`) signed it.
    #[arg(long, value_name = "KEY", requires = "check")]
    pub trust: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `peerweb manifest`; `false` when --check found a file that differs.
pub fn manifest(args: ManifestArgs) -> anyhow::Result<bool> {
    if let Some(path) = &args.check {
        let (m, problems) = driver::check(path, args.trust.as_deref())?;
        for p in &problems {
            if args.json {
                println!(
                    "{}",
                    json!({"event": "differs", "path": p.path, "why": p.why})
                );
            } else {
                println!("{}: {}", p.path, p.why);
            }
        }
        let signer = m.key.clone();
        if args.json {
            println!(
                "{}",
                json!({"event": "checked", "files": m.files.len(), "differ": problems.len(), "key": signer})
            );
        } else {
            let by = signer.map_or("unsigned".into(), |k| format!("signed by {k}"));
            println!(
                "{} of {} files match ({by})",
                m.files.len() - problems.len(),
                m.files.len()
            );
        }
        return Ok(problems.is_empty());
    }
    let key = match &args.key {
        Some(path) => {
            let (key, made) = driver::key(path)?;
            if made && !args.json {
                eprintln!(
                    "Made a new signing key in {} (keep it private).",
                    path.display()
                );
            }
            Some(key)
        }
        None => None,
    };
    let json_out = args.json;
    let made = driver::make(&args.paths, args.out.as_deref(), key.as_ref(), |f| {
        if json_out {
            println!(
                "{}",
                json!({"event": "file", "path": f.path, "size": f.size, "root": f.root, "outboard": f.outboard})
            );
        } else {
            // As b3sum prints it.
            println!("{}  {}", f.root, f.path);
        }
    })?;
    let signer = key.map(|k| key_text(&k.verifying_key()));
    if json_out {
        println!(
            "{}",
            json!({"event": "manifest", "path": made.path, "files": made.manifest.files.len(), "bytes": made.bytes, "key": signer})
        );
    } else {
        println!(
            "Wrote {} ({} files, {} bytes){}.",
            made.path.display(),
            made.manifest.files.len(),
            made.bytes,
            signer.map_or(String::new(), |k| format!(", signed by {k}"))
        );
        if made.path.file_name().is_some_and(|n| n != MANIFEST_NAME) {
            println!("Readers look for {MANIFEST_NAME} beside the files: name it when not there.");
        }
    }
    Ok(true)
}
