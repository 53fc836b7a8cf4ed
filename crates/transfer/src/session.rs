//! The file phase of a transfer, both sides, without IO: the receiver collects and checks the
//! file list, then checks every chunk frame (order, length, BLAKE3) and every whole file;
//! the sender walks the accepted files from their resume points. The driver reads and writes
//! the bytes.

use crate::wire::{
    CHUNK, Chunk, FILES_PER_MESSAGE, FileEntry, MAX_BYTES, MAX_FILES, MAX_PATH_BYTES, chunk_len,
    chunks,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer broke the protocol's rules or limits.
    #[error("peer broke the transfer protocol: {0}")]
    Protocol(String),
    #[error("chunk {index} of {path:?} does not match its BLAKE3 hash")]
    ChunkHash { path: String, index: u64 },
    #[error("{path:?} does not match its BLAKE3 hash")]
    FileHash { path: String },
}

fn protocol(why: impl Into<String>) -> SessionError {
    SessionError::Protocol(why.into())
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let v = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .ok()?;
    v.try_into().ok()
}

/// The receiver's view of the file list while it arrives.
#[derive(Debug, Default)]
pub struct Manifest {
    files: Vec<FileEntry>,
    bytes: u64,
}

impl Manifest {
    /// One `files` message.
    pub fn add(&mut self, files: Vec<FileEntry>) -> Result<(), SessionError> {
        if files.len() > FILES_PER_MESSAGE {
            return Err(protocol(format!("{} files in one message", files.len())));
        }
        if self.files.len() + files.len() > MAX_FILES {
            return Err(protocol(format!("more than {MAX_FILES} files")));
        }
        for f in files {
            if f.path.len() > MAX_PATH_BYTES {
                return Err(protocol("a path longer than 4096 bytes"));
            }
            if parse_hash(&f.hash).is_none() {
                return Err(protocol("a file hash that is not 32 bytes of hex"));
            }
            self.bytes = self
                .bytes
                .checked_add(f.size)
                .filter(|b| *b <= MAX_BYTES)
                .ok_or_else(|| protocol("more than 16 TiB in one transfer"))?;
            self.files.push(f);
        }
        Ok(())
    }

    /// The `offer` that ends the list: its totals must match what arrived.
    pub fn finish(self, files: u64, bytes: u64) -> Result<Vec<FileEntry>, SessionError> {
        if files != self.files.len() as u64 || bytes != self.bytes {
            return Err(protocol("the offer's totals do not match its file list"));
        }
        Ok(self.files)
    }
}

/// Where the receiver stands on one file before data flows.
#[derive(Debug, Clone)]
pub struct Resume {
    /// First chunk wanted.
    pub from: u64,
    /// BLAKE3 state fed with the chunks before `from` (verified on disk by the driver).
    pub hasher: blake3::Hasher,
}

impl Resume {
    pub fn fresh() -> Resume {
        Resume {
            from: 0,
            hasher: blake3::Hasher::new(),
        }
    }
}

/// What a chunk frame gave.
#[derive(Debug, PartialEq, Eq)]
pub struct Got<'a> {
    pub file: usize,
    pub index: u64,
    pub offset: u64,
    pub payload: &'a [u8],
    /// The payload's BLAKE3 (verified).
    pub hash: [u8; 32],
    /// This was the file's last chunk and the whole file verified.
    pub complete: bool,
}

/// The receiver while data flows.
#[derive(Debug)]
pub struct Receiving {
    files: Vec<FileEntry>,
    hashes: Vec<[u8; 32]>,
    resume: Vec<Resume>,
    /// File now arriving, and its next chunk.
    cur: usize,
    next: u64,
    bytes_done: u64,
}

impl Receiving {
    /// Starts from the resume points; returns the files already complete (including empty
    /// files), whose whole-file hash has been checked.
    pub fn new(
        files: Vec<FileEntry>,
        resume: Vec<Resume>,
    ) -> Result<(Receiving, Vec<usize>), SessionError> {
        assert_eq!(files.len(), resume.len(), "one resume point per file");
        let hashes: Vec<[u8; 32]> = files
            .iter()
            .map(|f| parse_hash(&f.hash).ok_or_else(|| protocol("bad hash")))
            .collect::<Result<_, _>>()?;
        let mut complete = Vec::new();
        let mut bytes_done = 0;
        for (i, (f, r)) in files.iter().zip(&resume).enumerate() {
            let from = r.from.min(chunks(f.size));
            bytes_done += (from * CHUNK as u64).min(f.size);
            if from == chunks(f.size) {
                if r.hasher.finalize().as_bytes() != &hashes[i] {
                    return Err(SessionError::FileHash {
                        path: f.path.clone(),
                    });
                }
                complete.push(i);
            }
        }
        let mut me = Receiving {
            files,
            hashes,
            resume,
            cur: 0,
            next: 0,
            bytes_done,
        };
        me.skip_complete();
        Ok((me, complete))
    }

    fn skip_complete(&mut self) {
        while let Some(f) = self.files.get(self.cur) {
            let from = self.resume[self.cur].from;
            if from < chunks(f.size) {
                self.next = from;
                return;
            }
            self.cur += 1;
        }
    }

    /// Where each file starts, for `accept`.
    pub fn accept(&self) -> Vec<(u32, u64)> {
        self.files
            .iter()
            .zip(&self.resume)
            .enumerate()
            .map(|(i, (f, r))| (i as u32, r.from.min(chunks(f.size))))
            .collect()
    }

    pub fn is_done(&self) -> bool {
        self.cur >= self.files.len()
    }

    pub fn bytes_done(&self) -> u64 {
        self.bytes_done
    }

    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Checks one chunk frame: the expected file and index, the right length, its hash; and
    /// on a file's last chunk, the whole file's hash.
    pub fn on_chunk<'a>(&mut self, frame: &'a [u8]) -> Result<Got<'a>, SessionError> {
        let c = Chunk::decode(frame).map_err(|e| protocol(e.to_string()))?;
        let Some(f) = self.files.get(self.cur) else {
            return Err(protocol("data after the last file"));
        };
        if c.file as usize != self.cur || c.index != self.next {
            return Err(protocol(format!(
                "chunk {}/{} where {}/{} was due",
                c.file, c.index, self.cur, self.next
            )));
        }
        if c.payload.len() != chunk_len(f.size, c.index) {
            return Err(protocol(format!(
                "chunk {} of {:?} has {} bytes",
                c.index,
                f.path,
                c.payload.len()
            )));
        }
        if blake3::hash(c.payload).as_bytes() != &c.hash {
            return Err(SessionError::ChunkHash {
                path: f.path.clone(),
                index: c.index,
            });
        }
        let file = self.cur;
        let hasher = &mut self.resume[file].hasher;
        hasher.update(c.payload);
        self.next += 1;
        self.bytes_done += c.payload.len() as u64;
        let complete = self.next == chunks(f.size);
        if complete {
            if hasher.finalize().as_bytes() != &self.hashes[file] {
                return Err(SessionError::FileHash {
                    path: f.path.clone(),
                });
            }
            self.resume[file].hasher = blake3::Hasher::new();
            self.cur += 1;
            self.skip_complete();
        }
        Ok(Got {
            file,
            index: c.index,
            offset: c.index * CHUNK as u64,
            payload: c.payload,
            hash: c.hash,
            complete,
        })
    }
}

/// One chunk the sender should read and send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    pub file: usize,
    pub index: u64,
    pub offset: u64,
    pub len: usize,
}

/// The sender while data flows.
#[derive(Debug)]
pub struct Sending {
    sizes: Vec<u64>,
    from: Vec<u64>,
    cur: usize,
    next: u64,
}

/// The `accept` of a receiver that wants every one of `files` files whole: what a sender
/// told `ready` streams before the accept arrives, and then expects it to say.
pub fn accept_all(files: usize) -> Vec<(u32, u64)> {
    (0..files as u32).map(|i| (i, 0)).collect()
}

impl Sending {
    /// Checks the receiver's `accept`: each file once, from a chunk within it.
    pub fn new(sizes: Vec<u64>, accept: &[(u32, u64)]) -> Result<Sending, SessionError> {
        if accept.len() != sizes.len() {
            return Err(protocol("accept does not list every file once"));
        }
        let mut from = vec![u64::MAX; sizes.len()];
        for &(i, c) in accept {
            let i = i as usize;
            let slot = from
                .get_mut(i)
                .filter(|s| **s == u64::MAX)
                .ok_or_else(|| protocol("accept lists a file twice or one that is not offered"))?;
            if c > chunks(sizes[i]) {
                return Err(protocol("accept resumes past a file's end"));
            }
            *slot = c;
        }
        let mut me = Sending {
            sizes,
            from,
            cur: 0,
            next: 0,
        };
        me.next = me.from.first().copied().unwrap_or(0);
        Ok(me)
    }

    /// Bytes the receiver already has.
    pub fn bytes_skipped(&self) -> u64 {
        self.sizes
            .iter()
            .zip(&self.from)
            .map(|(s, f)| (f * CHUNK as u64).min(*s))
            .sum()
    }
}

impl Iterator for Sending {
    type Item = Next;

    fn next(&mut self) -> Option<Next> {
        loop {
            let size = *self.sizes.get(self.cur)?;
            if self.next < chunks(size) {
                let n = Next {
                    file: self.cur,
                    index: self.next,
                    offset: self.next * CHUNK as u64,
                    len: chunk_len(size, self.next),
                };
                self.next += 1;
                return Some(n);
            }
            self.cur += 1;
            self.next = self.from.get(self.cur).copied().unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, data: &[u8]) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: data.len() as u64,
            hash: blake3::hash(data).to_hex().to_string(),
        }
    }

    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Sends every accepted chunk from `files` through a fresh receiver.
    fn transfer(contents: &[Vec<u8>], resume: Vec<Resume>) -> Vec<Vec<u8>> {
        let entries: Vec<FileEntry> = contents
            .iter()
            .enumerate()
            .map(|(i, d)| entry(&format!("f{i}"), d))
            .collect();
        let mut m = Manifest::default();
        m.add(entries.clone()).unwrap();
        let files = m
            .finish(
                entries.len() as u64,
                contents.iter().map(|d| d.len() as u64).sum(),
            )
            .unwrap();
        let fresh = resume.iter().all(|r| r.from == 0);
        let (mut rx, complete) = Receiving::new(files, resume).unwrap();
        if fresh {
            // What a `ready` receiver promised, empty files included.
            assert_eq!(rx.accept(), accept_all(contents.len()));
        }
        let mut out: Vec<Vec<u8>> = contents.iter().map(|_| Vec::new()).collect();
        let sending = Sending::new(entries.iter().map(|e| e.size).collect(), &rx.accept()).unwrap();
        let mut done = complete;
        for n in sending {
            let d = &contents[n.file][n.offset as usize..n.offset as usize + n.len];
            let frame = Chunk::encode(n.file as u32, n.index, d);
            let got = rx.on_chunk(&frame).unwrap();
            out[got.file].extend_from_slice(got.payload);
            if got.complete {
                done.push(got.file);
            }
        }
        assert!(rx.is_done());
        done.sort();
        assert_eq!(done, (0..contents.len()).collect::<Vec<_>>());
        out
    }

    #[test]
    fn files_of_every_awkward_size_arrive_whole() {
        let contents = vec![
            data(0, 1),
            data(1, 2),
            data(CHUNK - 1, 3),
            data(CHUNK, 4),
            data(CHUNK + 1, 5),
            data(3 * CHUNK + 17, 6),
        ];
        let resume = contents.iter().map(|_| Resume::fresh()).collect();
        assert_eq!(transfer(&contents, resume), contents);
    }

    #[test]
    fn a_resumed_file_sends_only_the_rest() {
        let contents = vec![data(3 * CHUNK + 5, 1), data(10, 2)];
        let mut h = blake3::Hasher::new();
        h.update(&contents[0][..2 * CHUNK]);
        let mut h2 = blake3::Hasher::new();
        h2.update(&contents[1]);
        let resume = vec![
            Resume { from: 2, hasher: h },
            Resume {
                from: 1,
                hasher: h2,
            },
        ];
        let out = transfer(&contents, resume);
        assert_eq!(out[0], contents[0][2 * CHUNK..]);
        assert!(out[1].is_empty(), "already complete");
    }

    #[test]
    fn a_complete_file_that_does_not_match_is_refused() {
        let e = entry("x", b"abc");
        let mut h = blake3::Hasher::new();
        h.update(b"abd");
        let err = Receiving::new(vec![e], vec![Resume { from: 1, hasher: h }]).unwrap_err();
        assert_eq!(err, SessionError::FileHash { path: "x".into() });
    }

    #[test]
    fn bad_frames_are_refused() {
        let d = data(CHUNK + 10, 1);
        let e = entry("x", &d);
        let (mut rx, _) = Receiving::new(vec![e.clone()], vec![Resume::fresh()]).unwrap();
        // Out of order.
        assert!(matches!(
            rx.on_chunk(&Chunk::encode(0, 1, &d[CHUNK..])),
            Err(SessionError::Protocol(_))
        ));
        // Wrong length.
        assert!(matches!(
            rx.on_chunk(&Chunk::encode(0, 0, &d[..10])),
            Err(SessionError::Protocol(_))
        ));
        // Payload that does not match the frame's hash.
        let mut f = Chunk::encode(0, 0, &d[..CHUNK]);
        let last = f.len() - 1;
        f[last] ^= 1;
        assert_eq!(
            rx.on_chunk(&f),
            Err(SessionError::ChunkHash {
                path: "x".into(),
                index: 0
            })
        );
        // Right frames, wrong file: the whole-file hash catches it.
        let other = data(CHUNK + 10, 2);
        let (mut rx, _) = Receiving::new(vec![e], vec![Resume::fresh()]).unwrap();
        rx.on_chunk(&Chunk::encode(0, 0, &other[..CHUNK])).unwrap();
        assert_eq!(
            rx.on_chunk(&Chunk::encode(0, 1, &other[CHUNK..])),
            Err(SessionError::FileHash { path: "x".into() })
        );
        assert!(matches!(
            rx.on_chunk(&[0; 3]),
            Err(SessionError::Protocol(_))
        ));
    }

    #[test]
    fn manifest_limits() {
        let mut m = Manifest::default();
        let many = vec![entry("a", b""); FILES_PER_MESSAGE + 1];
        assert!(m.add(many).is_err());
        let mut bad = entry("a", b"");
        bad.hash = "zz".into();
        assert!(m.add(vec![bad]).is_err());
        let mut huge = entry("a", b"");
        huge.size = MAX_BYTES + 1;
        assert!(m.add(vec![huge]).is_err());
        let mut m = Manifest::default();
        m.add(vec![entry("a", b"xy")]).unwrap();
        assert!(Manifest::default().finish(1, 0).is_err());
        assert!(m.finish(1, 3).is_err());
    }

    #[test]
    fn bad_accepts_are_refused() {
        assert!(Sending::new(vec![10, 10], &[(0, 0)]).is_err());
        assert!(Sending::new(vec![10, 10], &[(0, 0), (0, 0)]).is_err());
        assert!(Sending::new(vec![10, 10], &[(0, 0), (2, 0)]).is_err());
        assert!(Sending::new(vec![10], &[(0, 2)]).is_err());
        let s = Sending::new(vec![10, CHUNK as u64 * 2], &[(1, 1), (0, 1)]).unwrap();
        assert_eq!(s.bytes_skipped(), 10 + CHUNK as u64);
        assert_eq!(s.map(|n| (n.file, n.index)).collect::<Vec<_>>(), [(1, 1)]);
    }
}
