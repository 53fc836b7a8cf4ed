//! Fetches the pages' JavaScript libraries (`web/package-lock.json`, `npm ci`) into OUT_DIR
//! and writes `vendor.rs`: every ES module of those packages as `(url path, source)`, so the
//! binary serves them under `/vendor/` and the pages load them through an import map — no
//! bundler, nothing from those packages committed here.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The packages the pages import from (the lockfile pins their versions and hashes).
const PACKAGES: &[&str] = &["@noble/curves", "@noble/hashes", "uqr"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let deps = out.join("web-deps");
    fs::create_dir_all(&deps).expect("create OUT_DIR/web-deps");
    for file in ["package.json", "package-lock.json"] {
        let from = web.join(file);
        println!("cargo:rerun-if-changed={}", from.display());
        fs::copy(&from, deps.join(file)).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }

    let status = Command::new("npm")
        .args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .current_dir(&deps)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "building peerweb-server runs `npm ci` to fetch the pages' libraries \
                 (web/package-lock.json), and npm could not start: {e}; install Node.js and npm"
            )
        });
    assert!(
        status.success(),
        "`npm ci` for web/package-lock.json failed ({status})"
    );

    let mut modules = Vec::new();
    for package in PACKAGES {
        let root = deps.join("node_modules").join(package);
        let mut found = Vec::new();
        collect(&root, &root, &mut found);
        assert!(
            !found.is_empty(),
            "{package}: no modules under {}",
            root.display()
        );
        modules.extend(
            found
                .into_iter()
                .map(|(rel, file)| (format!("/vendor/{package}/{rel}"), file)),
        );
    }
    modules.sort();
    let mut code = String::from(
        "/// `(url path, source)` of every ES module the pages may import (build.rs).\n\
         pub(crate) static VENDOR: &[(&str, &str)] = &[\n",
    );
    for (url, file) in &modules {
        code.push_str(&format!(
            "    ({url:?}, include_str!({:?})),\n",
            file.display()
        ));
    }
    code.push_str("];\n");
    fs::write(out.join("vendor.rs"), code).expect("write vendor.rs");
}

/// The `.js` and `.mjs` files of one package, leaving out its TypeScript sources and nested packages.
fn collect(root: &Path, dir: &Path, into: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "src" && name != "node_modules" {
                collect(root, &path, into);
            }
        } else if name.ends_with(".js") || name.ends_with(".mjs") {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            into.push((rel, path));
        }
    }
}
