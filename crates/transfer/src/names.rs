//! Turning the names a sender chose into safe relative paths on the receiver's disk.
//!
//! Hostile names are neutralised, not trusted: separators of any platform split components;
//! empty, `.` and `..` components are dropped (so nothing climbs out of the output folder and
//! absolute paths become relative); control characters and characters Windows forbids become
//! `_`; trailing dots and spaces go; device names (`CON`, `nul.txt`, `COM1`…) get a `_`
//! prefix; a component is cut to 255 bytes. Names that collide within one transfer (also
//! case-insensitively, and a file where another entry needs a folder) get a ` (n)` suffix.

use std::collections::HashSet;

/// Longest component in bytes.
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Deepest path, in components.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    #[error("file name {0:?} has nothing left once made safe")]
    Empty(String),
    #[error("file name {0:?} is more than {MAX_DEPTH} folders deep")]
    TooDeep(String),
}

const DEVICES: [&str; 4] = ["con", "prn", "aux", "nul"];

fn is_device(component: &str) -> bool {
    let stem = component
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_ascii_lowercase();
    DEVICES.contains(&stem.as_str())
        || ((stem.starts_with("com") || stem.starts_with("lpt"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit())
}

fn clean_component(raw: &str) -> Option<String> {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    while s.ends_with(['.', ' ']) {
        s.pop();
    }
    let s = s.trim_start_matches(' ').to_owned();
    if s.is_empty() {
        return None;
    }
    let mut s = if is_device(&s) { format!("_{s}") } else { s };
    s.truncate(crate::wire::cut(&s, MAX_COMPONENT_BYTES).len());
    Some(s)
}

/// The safe components of one path as the sender named it.
pub fn sanitize(path: &str) -> Result<Vec<String>, NameError> {
    let parts: Vec<String> = path
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .filter_map(clean_component)
        .collect();
    if parts.is_empty() {
        return Err(NameError::Empty(path.chars().take(64).collect()));
    }
    if parts.len() > MAX_DEPTH {
        return Err(NameError::TooDeep(path.chars().take(64).collect()));
    }
    Ok(parts)
}

/// `name (n).ext`: the suffix goes before the first dot that is not the first character.
pub fn with_suffix(name: &str, n: u32) -> String {
    let split = name
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == '.')
        .map_or(name.len(), |(i, _)| i);
    let (stem, ext) = name.split_at(split);
    format!("{stem} ({n}){ext}")
}

/// Safe, distinct relative paths for a whole transfer, in the sender's order.
pub fn plan<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<Vec<Vec<String>>, NameError> {
    // Lower-cased paths taken by files, and by folders.
    let mut files: HashSet<String> = HashSet::new();
    let mut dirs: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for path in paths {
        let mut parts = sanitize(path)?;
        // Folders: a folder name that a file already has gets a suffix.
        for i in 0..parts.len() - 1 {
            let mut n = 1;
            loop {
                let key = parts[..=i].join("/").to_lowercase();
                if !files.contains(&key) {
                    dirs.insert(key);
                    break;
                }
                parts[i] = with_suffix(&parts[i], n);
                n += 1;
            }
        }
        let last = parts.len() - 1;
        let base = parts[last].clone();
        let mut n = 1;
        loop {
            let key = parts.join("/").to_lowercase();
            if !files.contains(&key) && !dirs.contains(&key) {
                files.insert(key);
                break;
            }
            parts[last] = with_suffix(&base, n);
            n += 1;
        }
        out.push(parts);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &str) -> String {
        sanitize(p)
            .map(|v| v.join("/"))
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn hostile_names_are_neutralised() {
        assert_eq!(s("../../etc/passwd"), "etc/passwd");
        assert_eq!(s("/etc/shadow"), "etc/shadow");
        assert_eq!(s("a/./b/../c"), "a/b/c");
        assert_eq!(s("..\\..\\windows\\system32"), "windows/system32");
        assert_eq!(s("C:\\boot.ini"), "C_/boot.ini");
        assert_eq!(s("CON"), "_CON");
        assert_eq!(s("nul.txt"), "_nul.txt");
        assert_eq!(s("com1"), "_com1");
        assert_eq!(s("console"), "console");
        assert_eq!(s("bell\u{7}\nname"), "bell__name");
        assert_eq!(s("trailing. . "), "trailing");
        assert_eq!(s("a*b?c|d"), "a_b_c_d");
        assert_eq!(s(".bashrc"), ".bashrc");
        assert!(s("..").starts_with("error"));
        assert!(s("/./..//").starts_with("error"));
        assert!(s(" . ").starts_with("error"));
        assert_eq!(s(&"é".repeat(200)).len(), 254);
        assert!(s(&"a/".repeat(65)).starts_with("error"));
    }

    #[test]
    fn suffixes_go_before_the_extension() {
        assert_eq!(with_suffix("photo.tar.gz", 1), "photo (1).tar.gz");
        assert_eq!(with_suffix(".env", 2), ".env (2)");
        assert_eq!(with_suffix("README", 3), "README (3)");
    }

    #[test]
    fn collisions_in_one_transfer_get_suffixes() {
        let p = plan([
            "a.txt",
            "A.TXT",
            "../a.txt",
            "x/../a.txt",
            "d",
            "d/e",
            "f/g",
            "f",
        ])
        .unwrap();
        let joined: Vec<String> = p.iter().map(|v| v.join("/")).collect();
        assert_eq!(
            joined,
            [
                "a.txt",
                "A (1).TXT",
                "a (2).txt",
                "x/a.txt",
                "d",
                "d (1)/e",
                "f/g",
                "f (1)"
            ]
        );
    }
}
