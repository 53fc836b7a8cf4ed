//! The BLAKE3 tree of a file, down to 16 KiB groups: what lets a peer check every group it
//! receives — from another peer or from HTTP — against the file's id, its plain BLAKE3 root
//! (what `b3sum` prints).
//!
//! A file of one group (16 KiB or less) is checked whole against its root. A larger one needs
//! its **outboard**: the tree's parent nodes above the groups, each a pair of chaining values
//! (64 bytes), in pre-order, with no size header — bao-tree's `PreOrderOutboard` at block
//! size 4 (checked against that crate byte for byte in the tests). It costs 64 bytes per
//! group (0.39%). An outboard is checked against the root once, when it is read
//! ([`Tree::from_outboard`]); after that each group costs one hash and one comparison.
//!
//! The tree's shape is BLAKE3's: a subtree of `n` groups splits after the largest power of
//! two below `n`, which — the groups being 16 chunks each — is where BLAKE3 splits its chunks.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// A group is 2^4 BLAKE3 chunks of 1 KiB.
pub const GROUP_LOG: u8 = 4;
/// The bytes of a group (the last one of a file may be shorter).
pub const GROUP: u64 = 1024 << GROUP_LOG;

/// What a tree or a group failed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("an outboard for {size} bytes has {want} bytes, not {got}")]
    OutboardLength { size: u64, want: u64, got: u64 },
    #[error("the outboard does not hash to the file's root")]
    OutboardMismatch,
    #[error("group {index} is out of the file ({groups} groups)")]
    OutOfRange { index: u64, groups: u64 },
    #[error("group {index} has {got} bytes where it should have {want}")]
    GroupLength { index: u64, want: u64, got: u64 },
    #[error("group {index} does not match the file's tree")]
    GroupMismatch { index: u64 },
}

/// The number of groups of a file of `size` bytes (an empty file is one empty group).
pub fn groups(size: u64) -> u64 {
    size.div_ceil(GROUP).max(1)
}

/// The bytes of group `index` of a file of `size` bytes.
pub fn group_len(size: u64, index: u64) -> u64 {
    size.saturating_sub(index * GROUP).min(GROUP)
}

/// The largest power of two below `n` (n ≥ 2): where a subtree of `n` groups splits.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The chaining value of group `index` (its bytes, as one subtree of a larger file).
fn group_cv(index: u64, data: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(index * GROUP)
        .update(data)
        .finalize_non_root()
}

/// A file's tree: its size, root, and the chaining value of each group (for a file of more
/// than one group).
#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    size: u64,
    root: blake3::Hash,
    /// Empty for a one-group file (checked against the root).
    leaves: Vec<ChainingValue>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("size", &self.size)
            .field("root", &self.root.to_hex().as_str())
            .finish_non_exhaustive()
    }
}

impl Tree {
    /// The tree of `data`, in one piece (for files in memory; [`Builder`] for streams).
    pub fn of(data: &[u8]) -> Tree {
        let mut b = Builder::new();
        b.update(data);
        b.finish()
    }

    /// A tree from a file's size, root and outboard, checked: every parent pair must hash to
    /// the node above it and the top one to `root`. Refuses an outboard of the wrong length
    /// before reading it.
    pub fn from_outboard(
        size: u64,
        root: blake3::Hash,
        outboard: &[u8],
    ) -> Result<Tree, TreeError> {
        let n = groups(size);
        let want = (n - 1) * 64;
        if outboard.len() as u64 != want {
            return Err(TreeError::OutboardLength {
                size,
                want,
                got: outboard.len() as u64,
            });
        }
        if n == 1 {
            return Ok(Tree {
                size,
                root,
                leaves: Vec::new(),
            });
        }
        let mut leaves = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut pairs = outboard.chunks_exact(64);
        // Pre-order: a subtree's pair, then its left subtree, then its right one; each
        // expected chaining value comes from the pair above.
        fn walk<'a>(
            n: u64,
            expected: &[u8; 32],
            root: bool,
            pairs: &mut impl Iterator<Item = &'a [u8]>,
            leaves: &mut Vec<ChainingValue>,
        ) -> bool {
            if n == 1 {
                leaves.push(*expected);
                return true;
            }
            let Some(pair) = pairs.next() else {
                return false;
            };
            let mut l = [0; 32];
            let mut r = [0; 32];
            l.copy_from_slice(&pair[..32]);
            r.copy_from_slice(&pair[32..]);
            let ok = if root {
                merge_subtrees_root(&l, &r, Mode::Hash).as_bytes() == expected
            } else {
                &merge_subtrees_non_root(&l, &r, Mode::Hash) == expected
            };
            let left = split(n);
            ok && walk(left, &l, false, pairs, leaves) && walk(n - left, &r, false, pairs, leaves)
        }
        if walk(n, root.as_bytes(), true, &mut pairs, &mut leaves) {
            Ok(Tree { size, root, leaves })
        } else {
            Err(TreeError::OutboardMismatch)
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's id: its plain BLAKE3 hash.
    pub fn root(&self) -> blake3::Hash {
        self.root
    }

    pub fn groups(&self) -> u64 {
        groups(self.size)
    }

    /// Whether `data` is group `index` of this file — exactly its bytes, no more.
    pub fn verify(&self, index: u64, data: &[u8]) -> Result<(), TreeError> {
        let n = self.groups();
        if index >= n {
            return Err(TreeError::OutOfRange { index, groups: n });
        }
        let want = group_len(self.size, index);
        if data.len() as u64 != want {
            return Err(TreeError::GroupLength {
                index,
                want,
                got: data.len() as u64,
            });
        }
        let ok = if n == 1 {
            blake3::hash(data) == self.root
        } else {
            usize::try_from(index)
                .ok()
                .and_then(|i| self.leaves.get(i))
                .is_some_and(|cv| *cv == group_cv(index, data))
        };
        if ok {
            Ok(())
        } else {
            Err(TreeError::GroupMismatch { index })
        }
    }

    /// The outboard: the parent pairs in pre-order (empty for a one-group file).
    pub fn outboard(&self) -> Vec<u8> {
        let n = self.groups();
        let mut out = Vec::with_capacity(usize::try_from((n - 1) * 64).unwrap_or(0));
        if n > 1 {
            // Each subtree reserves its pair, then fills it once its children are known.
            fn walk(leaves: &[ChainingValue], out: &mut Vec<u8>) -> ChainingValue {
                if leaves.len() == 1 {
                    return leaves[0];
                }
                let at = out.len();
                out.extend_from_slice(&[0; 64]);
                let left = split(leaves.len() as u64) as usize;
                let l = walk(&leaves[..left], out);
                let r = walk(&leaves[left..], out);
                out[at..at + 32].copy_from_slice(&l);
                out[at + 32..at + 64].copy_from_slice(&r);
                merge_subtrees_non_root(&l, &r, Mode::Hash)
            }
            walk(&self.leaves, &mut out);
        }
        out
    }
}

/// Builds a tree from a file's bytes as they come, in pieces of any size.
#[derive(Debug)]
pub struct Builder {
    size: u64,
    /// The bytes of the group being filled.
    group: Vec<u8>,
    leaves: Vec<ChainingValue>,
    /// The whole file's hash (the root, whatever its size).
    whole: blake3::Hasher,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            size: 0,
            group: Vec::with_capacity(GROUP as usize),
            leaves: Vec::new(),
            whole: blake3::Hasher::new(),
        }
    }

    /// The bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            if self.group.len() as u64 == GROUP {
                self.flush();
            }
            let take = (GROUP as usize - self.group.len()).min(data.len());
            self.group.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    fn flush(&mut self) {
        let index = self.leaves.len() as u64;
        self.leaves.push(group_cv(index, &self.group));
        self.group.clear();
    }

    pub fn finish(mut self) -> Tree {
        let root = self.whole.finalize();
        if groups(self.size) == 1 {
            return Tree {
                size: self.size,
                root,
                leaves: Vec::new(),
            };
        }
        if !self.group.is_empty() {
            self.flush();
        }
        Tree {
            size: self.size,
            root,
            leaves: self.leaves,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{RngCore, SeedableRng};

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0; n];
        rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    /// Sizes around every boundary that matters: empty, chunk, group, powers of two of groups.
    fn sizes() -> Vec<usize> {
        let g = GROUP as usize;
        let mut v = vec![
            0,
            1,
            1023,
            1024,
            1025,
            g - 1,
            g,
            g + 1,
            2 * g,
            3 * g - 5,
            3 * g,
        ];
        for n in [4, 5, 7, 8, 9, 16, 17, 31, 33] {
            v.extend([n * g - 1, n * g, n * g + 1]);
        }
        v
    }

    #[test]
    fn root_is_plain_blake3_and_the_outboard_is_bao_trees_pre_order() {
        for (i, size) in sizes().into_iter().enumerate() {
            let data = bytes(size, i as u64);
            let tree = Tree::of(&data);
            assert_eq!(tree.root(), blake3::hash(&data), "size {size}");
            let reference = bao_tree::io::outboard::PreOrderMemOutboard::create(
                &data,
                bao_tree::BlockSize::from_chunk_log(GROUP_LOG),
            );
            assert_eq!(reference.root, tree.root());
            assert_eq!(tree.outboard(), reference.data, "size {size}");
            // Built in odd pieces: the same tree.
            let mut b = Builder::new();
            for piece in data.chunks(7777) {
                b.update(piece);
            }
            assert_eq!(b.finish(), tree);
        }
    }

    #[test]
    fn every_group_verifies_and_any_change_is_caught() {
        for (i, size) in sizes().into_iter().enumerate() {
            let data = bytes(size, 100 + i as u64);
            let made = Tree::of(&data);
            let tree = Tree::from_outboard(data.len() as u64, made.root(), &made.outboard())
                .expect("its own outboard");
            for g in 0..tree.groups() {
                let start = (g * GROUP) as usize;
                let end = (start + GROUP as usize).min(data.len());
                let group = &data[start..end];
                tree.verify(g, group).expect("the group verifies");
                if !group.is_empty() {
                    let mut bad = group.to_vec();
                    bad[group.len() / 2] ^= 1;
                    assert_eq!(
                        tree.verify(g, &bad),
                        Err(TreeError::GroupMismatch { index: g })
                    );
                    assert!(matches!(
                        tree.verify(g, &group[..group.len() - 1]),
                        Err(TreeError::GroupLength { .. })
                    ));
                }
                // Another group's bytes in this place: refused (position is in the hash).
                if g > 0 && group.len() == GROUP as usize {
                    assert!(tree.verify(g - 1, group).is_err());
                }
            }
            assert!(matches!(
                tree.verify(tree.groups(), &[]),
                Err(TreeError::OutOfRange { .. })
            ));
        }
    }

    #[test]
    fn a_forged_outboard_is_refused() {
        let data = bytes(9 * GROUP as usize + 3, 7);
        let tree = Tree::of(&data);
        let ob = tree.outboard();
        let size = data.len() as u64;
        for at in (0..ob.len()).step_by(61) {
            let mut bad = ob.clone();
            bad[at] ^= 0x80;
            assert_eq!(
                Tree::from_outboard(size, tree.root(), &bad),
                Err(TreeError::OutboardMismatch),
                "byte {at}"
            );
        }
        assert!(matches!(
            Tree::from_outboard(size, tree.root(), &ob[..ob.len() - 64]),
            Err(TreeError::OutboardLength { .. })
        ));
        assert!(matches!(
            Tree::from_outboard(size, blake3::hash(b"other"), &ob),
            Err(TreeError::OutboardMismatch)
        ));
        // A huge claimed size is refused by length before anything is allocated.
        assert!(matches!(
            Tree::from_outboard(u64::MAX / 2, tree.root(), &ob),
            Err(TreeError::OutboardLength { .. })
        ));
    }
}
