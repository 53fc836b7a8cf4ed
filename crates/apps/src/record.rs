//! Received media written to files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

/// Received media written to files: `<peer>-<mid>.h264` (from the first keyframe) and
/// `<peer>-<mid>.ogg`, in one folder.
#[allow(missing_debug_implementations)]
pub struct Recorder {
    dir: PathBuf,
    files: BTreeMap<(String, String), Track>,
}

enum Track {
    /// Its file, created at the first keyframe.
    Video {
        path: PathBuf,
        file: Option<std::fs::File>,
    },
    Audio(peerweb_call::media::OpusWriter<std::io::BufWriter<std::fs::File>>),
    Broken,
}

/// Tracks recorded at most (a peer could add many).
const MAX_RECORDED: usize = 64;

impl Recorder {
    pub fn new(dir: PathBuf) -> anyhow::Result<Recorder> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Recorder {
            dir,
            files: BTreeMap::new(),
        })
    }

    pub fn write(&mut self, peer: &str, mid: &str, video: bool, data: &[u8], keyframe: bool) {
        let key = (peer.to_owned(), mid.to_owned());
        if !self.files.contains_key(&key) {
            if self.files.len() >= MAX_RECORDED {
                return;
            }
            // Peer ids and mids are tokens, but the names are made safe anyway.
            let safe = |s: &str| -> String {
                s.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .take(64)
                    .collect()
            };
            let name = format!(
                "{}-{}.{}",
                safe(peer),
                safe(mid),
                if video { "h264" } else { "ogg" }
            );
            let path = self.dir.join(name);
            let track = if video {
                Track::Video { path, file: None }
            } else {
                match std::fs::File::create(&path).and_then(|f| {
                    peerweb_call::media::OpusWriter::new(std::io::BufWriter::new(f), 1, 2)
                }) {
                    Ok(w) => Track::Audio(w),
                    Err(e) => {
                        eprintln!("peerweb: cannot record to {}: {e}", path.display());
                        Track::Broken
                    }
                }
            };
            self.files.insert(key.clone(), track);
        }
        let ok = match self.files.get_mut(&key) {
            Some(Track::Video { path, file }) => {
                if file.is_none() && keyframe {
                    *file = std::fs::File::create(path).ok();
                }
                file.as_mut()
                    .is_none_or(|f| std::io::Write::write_all(f, data).is_ok())
            }
            Some(Track::Audio(w)) => w.write(data).is_ok(),
            _ => true,
        };
        if !ok {
            eprintln!("peerweb: recording {peer} {mid} failed; it stops");
            self.files.insert(key, Track::Broken);
        }
    }

    /// Ends the Ogg streams (their last pages).
    pub fn finish(self) {
        for t in self.files.into_values() {
            if let Track::Audio(w) = t
                && let Ok(mut b) = w.finish()
            {
                let _ = std::io::Write::flush(&mut b);
            }
        }
    }
}
