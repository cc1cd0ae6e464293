//! The Merkle tree of RFC 9162 (Certificate Transparency 2.0) §2.1 over SHA-256:
//! tree hashes, inclusion and consistency proofs, and their verification, so
//! that an audit log can prove an entry is in it and that a later log extends
//! an earlier one without rewriting it. Pure: the caller supplies leaf hashes.
//!
//! Sizes and indices are `u64`, as in the RFC's wire structures. Proof
//! generation walks a slice of leaf hashes (O(n) hashing per proof); the
//! verifiers follow the RFC's algorithms step by step and never panic.

use ring::digest::{Context, SHA256};

/// Length of every hash in the tree (SHA-256).
pub const HASH_LEN: usize = 32;

/// A leaf hash, an interior node hash or a tree head's root hash.
pub type Hash = [u8; HASH_LEN];

/// Domain separation between leaves and interior nodes (RFC 9162 §2.1.1), so
/// that no leaf can be passed off as a subtree.
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a proof could not be made or was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not inside a tree of size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    #[error("tree size {tree_size} exceeds the {available} leaves given")]
    NotEnoughLeaves { tree_size: u64, available: usize },
    #[error("first tree size {first_size} exceeds second tree size {second_size}")]
    SizesOutOfOrder { first_size: u64, second_size: u64 },
    #[error("consistency with the empty tree proves nothing and is refused")]
    EmptyFirstTree,
    #[error("the proof has fewer hashes than the tree sizes require")]
    ProofTooShort,
    #[error("the proof has more hashes than the tree sizes require")]
    ProofTooLong,
    #[error("the inclusion proof does not lead to the expected root")]
    RootMismatch,
    #[error("the consistency proof does not lead to the first tree's root")]
    FirstRootMismatch,
    #[error("the consistency proof does not lead to the second tree's root")]
    SecondRootMismatch,
    #[error("two trees of the same size have different roots")]
    SameSizeRootsDiffer,
    #[error("the hashes of leaves {start}..{end} were not loaded")]
    SubtreeNotLoaded { start: u64, end: u64 },
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    let mut hash = [0; HASH_LEN];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// `SHA-256(0x00 || data)`: the hash of one log entry (RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[LEAF_PREFIX], data])
}

/// `SHA-256(0x01 || left || right)`: an interior node (RFC 9162 §2.1.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[NODE_PREFIX], left, right])
}

/// The root of the empty tree, `SHA-256("")` (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// MTH over all of `leaf_hashes` (RFC 9162 §2.1.1).
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    mth(leaf_hashes)
}

/// PATH(index, D[0:tree_size]) (RFC 9162 §2.1.3.1): the sibling hashes from the
/// leaf up to the root, nearest first.
pub fn inclusion_proof(
    leaf_hashes: &[Hash],
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    Mth::new(leaf_hashes).inclusion_proof(index, tree_size)
}

/// PROOF(first_size, D[0:second_size]) (RFC 9162 §2.1.4.1); empty when the sizes
/// are equal. `first_size` 0 is refused: the RFC defines proofs for 0 < m only.
pub fn consistency_proof(
    leaf_hashes: &[Hash],
    first_size: u64,
    second_size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    Mth::new(leaf_hashes).consistency_proof(first_size, second_size)
}

/// Where the hashes of subtrees come from: every leaf hash in memory ([`Mth`]),
/// or stored tile roots and the leaves of a few tiles ([`Tiled`]).
pub trait Subtrees {
    /// How many leaves there are.
    fn available(&self) -> u64;
    /// MTH(D[start:end]) for `start < end <= available()`.
    fn range(&self, start: u64, end: u64) -> Result<Hash, MerkleError>;

    /// MTH(D[0:n]).
    fn root_of_first(&self, n: u64) -> Result<Hash, MerkleError> {
        self.check(n)?;
        if n == 0 {
            return Ok(empty_root());
        }
        self.range(0, n)
    }

    /// See [`inclusion_proof`].
    fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, MerkleError> {
        if index >= tree_size {
            return Err(MerkleError::IndexOutOfRange { index, tree_size });
        }
        self.check(tree_size)?;
        let mut proof = Vec::new();
        path(self, index, 0, tree_size, &mut proof)?;
        Ok(proof)
    }

    /// See [`consistency_proof`].
    fn consistency_proof(
        &self,
        first_size: u64,
        second_size: u64,
    ) -> Result<Vec<Hash>, MerkleError> {
        if first_size > second_size {
            return Err(MerkleError::SizesOutOfOrder {
                first_size,
                second_size,
            });
        }
        if first_size == 0 {
            return Err(MerkleError::EmptyFirstTree);
        }
        self.check(second_size)?;
        let mut proof = Vec::new();
        subproof(self, first_size, 0, second_size, true, &mut proof)?;
        Ok(proof)
    }

    /// Refuses a tree larger than the leaves at hand.
    fn check(&self, tree_size: u64) -> Result<(), MerkleError> {
        let available = self.available();
        if tree_size > available {
            return Err(MerkleError::NotEnoughLeaves {
                tree_size,
                available: usize::try_from(available).unwrap_or(usize::MAX),
            });
        }
        Ok(())
    }
}

/// The tree heads a log would publish over one list of leaf hashes: the root of
/// the first `n` leaves for any `n`, and proofs between those trees.
#[derive(Debug, Clone, Copy)]
pub struct Mth<'a> {
    leaf_hashes: &'a [Hash],
}

impl<'a> Mth<'a> {
    pub fn new(leaf_hashes: &'a [Hash]) -> Self {
        Self { leaf_hashes }
    }
}

impl Subtrees for Mth<'_> {
    fn available(&self) -> u64 {
        self.leaf_hashes.len() as u64
    }

    fn range(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        // Callers stay within `available()`, which came from a usize.
        Ok(mth(&self.leaf_hashes[start as usize..end as usize]))
    }
}

/// Leaves per tile: the subtrees whose roots a log stores so that a proof over
/// a long log reads one root per tile and the leaves of at most three tiles.
pub const TILE_LEAVES: u64 = 256;
const TILE_LEVEL: u32 = TILE_LEAVES.trailing_zeros();

/// A tree of `size` leaves known by the roots of its complete tiles (in order)
/// and the leaves of some tiles (a partial last tile holds fewer). Every range
/// RFC 9162's recursion asks for is either a run of whole tiles or inside one
/// tile: splits of a range longer than a tile fall on tile boundaries.
pub struct Tiled<'a> {
    pub size: u64,
    pub tile_roots: &'a [Hash],
    pub tile_leaves: &'a std::collections::BTreeMap<u64, Vec<Hash>>,
}

impl Tiled<'_> {
    /// The tiles whose leaves an inclusion proof of `index` in `tree_size`, or
    /// a consistency proof from `index + 1` to `tree_size`, needs beyond the tile
    /// roots: the tile of the leaf and the partial tile at each tree's end.
    pub fn tiles_needed(index: u64, tree_size: u64) -> Vec<u64> {
        let mut tiles = vec![index / TILE_LEAVES];
        for size in [index + 1, tree_size] {
            if size % TILE_LEAVES != 0 {
                tiles.push((size - 1) / TILE_LEAVES);
            }
        }
        tiles.sort_unstable();
        tiles.dedup();
        tiles
    }

    fn leaves_of(&self, start: u64, end: u64) -> Result<&[Hash], MerkleError> {
        let tile = start / TILE_LEAVES;
        let base = tile * TILE_LEAVES;
        self.tile_leaves
            .get(&tile)
            .and_then(|l| l.get((start - base) as usize..(end - base) as usize))
            .ok_or(MerkleError::SubtreeNotLoaded { start, end })
    }
}

impl Subtrees for Tiled<'_> {
    fn available(&self) -> u64 {
        self.size
    }

    fn range(&self, start: u64, end: u64) -> Result<Hash, MerkleError> {
        let whole_tile = start.is_multiple_of(TILE_LEAVES) && end - start == TILE_LEAVES;
        if whole_tile && let Some(root) = self.tile_roots.get((start / TILE_LEAVES) as usize) {
            return Ok(*root);
        }
        if start / TILE_LEAVES == (end - 1) / TILE_LEAVES {
            return self.leaves_of(start, end).map(mth);
        }
        let k = split_point((end - start) as usize) as u64;
        Ok(node_hash(
            &self.range(start, start + k)?,
            &self.range(start + k, end)?,
        ))
    }
}

/// The right edge of a growing tree: the roots of its complete subtrees, largest
/// first, enough to give the root of the whole tree and to go on appending
/// without the leaves (a compact range, as CT logs keep).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the root of the tile it completes, if any.
    pub fn push(&mut self, leaf: Hash) -> Option<Hash> {
        self.nodes.push(leaf);
        self.size += 1;
        let mut tile = None;
        let mut level = 0;
        let mut s = self.size;
        while s & 1 == 0 {
            let (Some(right), Some(left)) = (self.nodes.pop(), self.nodes.pop()) else {
                unreachable!("a frontier holds one node per set bit of its size");
            };
            self.nodes.push(node_hash(&left, &right));
            s >>= 1;
            level += 1;
            if level == TILE_LEVEL {
                tile = self.nodes.last().copied();
            }
        }
        tile
    }

    /// Appends a whole tile by its root; the frontier must end on a tile boundary.
    pub fn push_tile(&mut self, root: Hash) -> Result<(), MerkleError> {
        if !self.size.is_multiple_of(TILE_LEAVES) {
            return Err(MerkleError::SubtreeNotLoaded {
                start: self.size,
                end: self.size + TILE_LEAVES,
            });
        }
        self.nodes.push(root);
        self.size += TILE_LEAVES;
        let mut s = self.size >> TILE_LEVEL;
        while s & 1 == 0 {
            let (Some(right), Some(left)) = (self.nodes.pop(), self.nodes.pop()) else {
                unreachable!("a frontier holds one node per set bit of its size");
            };
            self.nodes.push(node_hash(&left, &right));
            s >>= 1;
        }
        Ok(())
    }

    /// MTH over every leaf pushed: the complete subtrees folded from the right.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// The largest power of two smaller than `n`, the RFC's split point `k`.
/// Requires `n >= 2`.
fn split_point(n: usize) -> usize {
    1 << (n - 1).ilog2()
}

/// MTH(D_n) (RFC 9162 §2.1.1), recursing on the split point.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let k = split_point(leaves.len());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// PATH(m, D[start:end]) (RFC 9162 §2.1.3.1) with `m` relative to `start`,
/// appended to `proof`. Requires `m < end - start`.
fn path<S: Subtrees + ?Sized>(
    tree: &S,
    m: u64,
    start: u64,
    end: u64,
    proof: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    if end - start <= 1 {
        return Ok(());
    }
    let k = split_point((end - start) as usize) as u64;
    if m < k {
        path(tree, m, start, start + k, proof)?;
        proof.push(tree.range(start + k, end)?);
    } else {
        path(tree, m - k, start + k, end, proof)?;
        proof.push(tree.range(start, start + k)?);
    }
    Ok(())
}

/// SUBPROOF(m, D[start:end], b) (RFC 9162 §2.1.4.1), appended to `proof`.
/// `first_known` is `b`: whether MTH(D[0:m]) is the verifier's own first root
/// (and so left out). Requires `0 < m <= end - start`.
fn subproof<S: Subtrees + ?Sized>(
    tree: &S,
    m: u64,
    start: u64,
    end: u64,
    first_known: bool,
    proof: &mut Vec<Hash>,
) -> Result<(), MerkleError> {
    let n = end - start;
    if m == n {
        if !first_known {
            proof.push(tree.range(start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n as usize) as u64;
    if m <= k {
        subproof(tree, m, start, start + k, first_known, proof)?;
        proof.push(tree.range(start + k, end)?);
    } else {
        subproof(tree, m - k, start + k, end, false, proof)?;
        proof.push(tree.range(start, start + k)?);
    }
    Ok(())
}

/// Right-shifts `fn_` and `sn` together until LSB(fn_) is set or `fn_` is 0:
/// the step both verifiers take after consuming a right-border hash.
fn skip_right_border(fn_: &mut u64, sn: &mut u64) {
    while *fn_ != 0 && *fn_ & 1 == 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `tree_size` leaves
/// whose root is `root`, following RFC 9162 §2.1.3.2 step by step.
///
/// The proof binds the leaf to `root` only; `tree_size` must come from the same
/// signed tree head as `root`. (A path that is valid for one size can also fit
/// another size with the same shape above the leaf: the proof for leaf 0 of 3
/// leaves also passes as leaf 0 of 4 against the 3-leaf root.)
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    // 1.
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size });
    }
    // 2., 3.
    let mut fn_ = index;
    let mut sn = tree_size - 1;
    let mut r = *leaf_hash;
    // 4.
    for p in proof {
        if sn == 0 {
            return Err(MerkleError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            skip_right_border(&mut fn_, &mut sn);
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5.
    if sn != 0 {
        return Err(MerkleError::ProofTooShort);
    }
    if r != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `second_size` leaves with root `second_root`
/// extends the tree of `first_size` leaves with root `first_root`, following
/// RFC 9162 §2.1.4.2 step by step for `0 < first_size < second_size`.
///
/// Outside that range: equal sizes are consistent exactly when the proof is
/// empty and the roots are equal (SUBPROOF(m, D[m], true) is empty, §2.1.4.1);
/// `first_size` 0 is refused, since the RFC defines no proof from the empty
/// tree (any tree extends it, so such a proof would prove nothing); and
/// `first_size > second_size` is refused.
///
/// As with inclusion, both sizes must come from the signed tree heads of their
/// roots: the proof from 2 to 3 leaves also passes as one from 2 to 4 against
/// the same two roots.
pub fn verify_consistency(
    first_size: u64,
    second_size: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if first_size > second_size {
        return Err(MerkleError::SizesOutOfOrder {
            first_size,
            second_size,
        });
    }
    if first_size == 0 {
        return Err(MerkleError::EmptyFirstTree);
    }
    if first_size == second_size {
        if !proof.is_empty() {
            return Err(MerkleError::ProofTooLong);
        }
        if first_root != second_root {
            return Err(MerkleError::SameSizeRootsDiffer);
        }
        return Ok(());
    }
    // 1.
    let Some((head, tail)) = proof.split_first() else {
        return Err(MerkleError::ProofTooShort);
    };
    // 2. Prepending first_root makes it the seed and the whole proof the rest.
    let (seed, rest) = if first_size.is_power_of_two() {
        (first_root, proof)
    } else {
        (head, tail)
    };
    // 3.
    let mut fn_ = first_size - 1;
    let mut sn = second_size - 1;
    // 4.
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    // 5.
    let mut fr = *seed;
    let mut sr = *seed;
    // 6.
    for c in rest {
        if sn == 0 {
            return Err(MerkleError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            skip_right_border(&mut fn_, &mut sn);
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    // 7.
    if sn != 0 {
        return Err(MerkleError::ProofTooShort);
    }
    if fr != *first_root {
        return Err(MerkleError::FirstRootMismatch);
    }
    if sr != *second_root {
        return Err(MerkleError::SecondRootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(hex: &str) -> Vec<u8> {
        assert!(hex.len().is_multiple_of(2), "odd hex length: {hex}");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn h(hex: &str) -> Hash {
        bytes(hex).try_into().unwrap()
    }

    fn to_hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    // The leaves, roots and subtree hashes every implementation tests against.
    // github.com/transparency-dev/merkle testonly/constants.go (LeafInputs,
    // RootHashes, NodeHashes); the same values are in
    // github.com/google/certificate-transparency cpp/merkletree/merkle_tree_test.cc
    // (kInputs, kSHA256Roots, kSHA256EmptyTreeHash).
    const LEAF_INPUTS: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    /// Indexed by tree size, 0..=8.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    /// `NODE_HASHES[level][i]` is the complete subtree over leaves
    /// `[i << level, (i + 1) << level)`.
    const NODE_HASHES: [&[&str]; 4] = [
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
        ],
        &[
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        ],
        &[
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
        &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
    ];

    // Published proofs over the eight leaves, as (index or first size, size,
    // proof). github.com/transparency-dev/merkle testonly/reference_test.go
    // (TestRefInclusionProof, TestRefConsistencyProof) and cmd/proofgen/main.go
    // (inclusionProofs, consistencyProofs: 1-based leaf numbers there, the
    // source of testdata/); also kSHA256Paths and kSHA256Proofs in
    // github.com/google/certificate-transparency cpp/merkletree/merkle_tree_test.cc.
    const PUBLISHED_INCLUSION_PROOFS: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            2,
            &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
        ),
        (
            1,
            2,
            &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    const PUBLISHED_CONSISTENCY_PROOFS: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    /// `sha256SomeHash` of transparency-dev/merkle cmd/proofgen/main.go: a
    /// hash that is nobody's root.
    const SOME_HASH: &str = "abacaba000000000000000000000000000000000000000000060061e00123456";

    fn leaves8() -> Vec<Hash> {
        LEAF_INPUTS.iter().map(|d| leaf_hash(&bytes(d))).collect()
    }

    fn root8(size: u64) -> Hash {
        h(ROOTS[size as usize])
    }

    fn hashes(hexes: &[&str]) -> Vec<Hash> {
        hexes.iter().map(|x| h(x)).collect()
    }

    // github.com/transparency-dev/merkle rfc6962/rfc6962_test.go (TestRFC6962Hasher).
    #[test]
    fn hashes_match_the_rfc6962_hasher_vectors() {
        assert_eq!(
            to_hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            to_hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            to_hex(&leaf_hash(b"L123456")),
            "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
        );
        // The vector hashes two 4-byte "children", which `node_hash` cannot
        // take; the prefix and layout are the same.
        assert_eq!(
            to_hex(&sha256(&[&[NODE_PREFIX], b"N123", b"N456"])),
            "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
        );
        let (left, right) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut joined = vec![NODE_PREFIX];
        joined.extend_from_slice(&left);
        joined.extend_from_slice(&right);
        assert_eq!(node_hash(&left, &right), sha256(&[&joined]));
    }

    #[test]
    fn roots_of_every_size_match_the_published_roots() {
        let leaves = leaves8();
        let log = Mth::new(&leaves);
        for size in 0..=8u64 {
            assert_eq!(
                to_hex(&root(&leaves[..size as usize])),
                ROOTS[size as usize],
                "size {size}"
            );
            assert_eq!(log.root_of_first(size).unwrap(), root8(size), "size {size}");
        }
        for (level, nodes) in NODE_HASHES.iter().enumerate() {
            for (i, node) in nodes.iter().enumerate() {
                let leaves = &leaves[i << level..(i + 1) << level];
                assert_eq!(to_hex(&root(leaves)), *node, "level {level} node {i}");
            }
        }
        assert_eq!(
            log.root_of_first(9),
            Err(MerkleError::NotEnoughLeaves {
                tree_size: 9,
                available: 8
            })
        );
        assert_eq!(
            log.root_of_first(u64::MAX),
            Err(MerkleError::NotEnoughLeaves {
                tree_size: u64::MAX,
                available: 8
            })
        );
    }

    #[test]
    fn generated_proofs_equal_the_published_ones_and_verify() {
        let leaves = leaves8();
        for &(index, size, published) in PUBLISHED_INCLUSION_PROOFS {
            let proof = inclusion_proof(&leaves, index, size).unwrap();
            assert_eq!(proof, hashes(published), "inclusion {index}:{size}");
            let leaf = &leaves[index as usize];
            assert_eq!(
                verify_inclusion(leaf, index, size, &proof, &root8(size)),
                Ok(())
            );
        }
        for &(first, second, published) in PUBLISHED_CONSISTENCY_PROOFS {
            let proof = consistency_proof(&leaves, first, second).unwrap();
            assert_eq!(proof, hashes(published), "consistency {first}:{second}");
            assert_eq!(
                verify_consistency(first, second, &root8(first), &root8(second), &proof),
                Ok(())
            );
        }
    }

    struct InclusionProbe {
        file: &'static str,
        leaf_index: u64,
        tree_size: u64,
        root: &'static str,
        leaf_hash: &'static str,
        proof: &'static [&'static str],
        want_err: bool,
    }

    struct ConsistencyProbe {
        file: &'static str,
        size1: u64,
        size2: u64,
        root1: &'static str,
        root2: &'static str,
        proof: &'static [&'static str],
        want_err: bool,
    }

    /// A probe value as a hash; `None` for the probes' deliberately malformed
    /// values (`""`, "don't care 1", ...), which a `[u8; 32]` cannot hold.
    fn probe_hash(hex: &str) -> Option<Hash> {
        bytes(hex).try_into().ok()
    }

    /// Zero-padded, so that equal values stay equal and different ones
    /// different: all a probe that expects success can rely on.
    fn padded_probe_hash(hex: &str) -> Hash {
        let value = bytes(hex);
        let mut hash = [0; HASH_LEN];
        hash[..value.len()].copy_from_slice(&value);
        hash
    }

    // Every happy-path, `additional` and `single-entry` probe of
    // github.com/transparency-dev/merkle testdata/inclusion and
    // testdata/consistency (file paths below, base64 there, hex here). The
    // corrupted probes beside them are made by cmd/proofgen/main.go
    // (invalidInclusionProof, invalidConsistencyProof) from the happy paths;
    // the tamper tests below apply the same corruptions to every pair of sizes.
    const INCLUSION_PROBES: &[InclusionProbe] = &[
        InclusionProbe {
            file: "inclusion/0/happy-path.json",
            leaf_index: 0,
            tree_size: 1,
            root: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            leaf_hash: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            proof: &[],
            want_err: false,
        },
        InclusionProbe {
            file: "inclusion/1/happy-path.json",
            leaf_index: 0,
            tree_size: 8,
            root: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
            leaf_hash: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            proof: &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
            want_err: false,
        },
        InclusionProbe {
            file: "inclusion/2/happy-path.json",
            leaf_index: 5,
            tree_size: 8,
            root: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
            leaf_hash: "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
            proof: &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
            want_err: false,
        },
        InclusionProbe {
            file: "inclusion/3/happy-path.json",
            leaf_index: 2,
            tree_size: 3,
            root: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            leaf_hash: "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
            proof: &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            want_err: false,
        },
        InclusionProbe {
            file: "inclusion/4/happy-path.json",
            leaf_index: 1,
            tree_size: 5,
            root: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            leaf_hash: "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            proof: &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
            want_err: false,
        },
        InclusionProbe {
            file: "inclusion/additional/0/empty-root-and-random-leaf.json",
            leaf_index: 0,
            tree_size: 0,
            root: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            leaf_hash: "abacaba000000000000000000000000000000000000000000060061e00123456",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/0/empty-root.json",
            leaf_index: 0,
            tree_size: 0,
            root: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            leaf_hash: "",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/0/random-leaf.json",
            leaf_index: 0,
            tree_size: 0,
            root: "",
            leaf_hash: "abacaba000000000000000000000000000000000000000000060061e00123456",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/1/empty-root-and-random-leaf.json",
            leaf_index: 0,
            tree_size: 1,
            root: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            leaf_hash: "abacaba000000000000000000000000000000000000000000060061e00123456",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/1/empty-root.json",
            leaf_index: 0,
            tree_size: 1,
            root: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            leaf_hash: "",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/1/random-leaf.json",
            leaf_index: 0,
            tree_size: 1,
            root: "",
            leaf_hash: "abacaba000000000000000000000000000000000000000000060061e00123456",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/2/empty-root-and-random-leaf.json",
            leaf_index: 1,
            tree_size: 0,
            root: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            leaf_hash: "abacaba000000000000000000000000000000000000000000060061e00123456",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/2/empty-root.json",
            leaf_index: 1,
            tree_size: 0,
            root: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            leaf_hash: "",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/2/random-leaf.json",
            leaf_index: 1,
            tree_size: 0,
            root: "",
            leaf_hash: "abacaba000000000000000000000000000000000000000000060061e00123456",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/3/empty-root-and-random-leaf.json",
            leaf_index: 2,
            tree_size: 1,
            root: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            leaf_hash: "abacaba000000000000000000000000000000000000000000060061e00123456",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/3/empty-root.json",
            leaf_index: 2,
            tree_size: 1,
            root: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            leaf_hash: "",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/additional/3/random-leaf.json",
            leaf_index: 2,
            tree_size: 1,
            root: "",
            leaf_hash: "abacaba000000000000000000000000000000000000000000060061e00123456",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/single-entry/empty-leaf.json",
            leaf_index: 0,
            tree_size: 1,
            root: "0d3aed023148ffd2a259fbd0cdc7fb3cf975658760d3775b82af6f90aacc2dfc",
            leaf_hash: "",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/single-entry/empty-root-and-leaf.json",
            leaf_index: 0,
            tree_size: 1,
            root: "",
            leaf_hash: "",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/single-entry/empty-root.json",
            leaf_index: 0,
            tree_size: 1,
            root: "",
            leaf_hash: "0d3aed023148ffd2a259fbd0cdc7fb3cf975658760d3775b82af6f90aacc2dfc",
            proof: &[],
            want_err: true,
        },
        InclusionProbe {
            file: "inclusion/single-entry/matching-root-and-leaf.json",
            leaf_index: 0,
            tree_size: 1,
            root: "0d3aed023148ffd2a259fbd0cdc7fb3cf975658760d3775b82af6f90aacc2dfc",
            leaf_hash: "0d3aed023148ffd2a259fbd0cdc7fb3cf975658760d3775b82af6f90aacc2dfc",
            proof: &[],
            want_err: false,
        },
    ];
    const CONSISTENCY_PROBES: &[ConsistencyProbe] = &[
        ConsistencyProbe {
            file: "consistency/0/happy-path.json",
            size1: 1,
            size2: 1,
            root1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            root2: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            proof: &[],
            want_err: false,
        },
        ConsistencyProbe {
            file: "consistency/1/happy-path.json",
            size1: 1,
            size2: 8,
            root1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            root2: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
            proof: &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
            want_err: false,
        },
        ConsistencyProbe {
            file: "consistency/2/happy-path.json",
            size1: 6,
            size2: 8,
            root1: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            root2: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
            proof: &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
            want_err: false,
        },
        ConsistencyProbe {
            file: "consistency/3/happy-path.json",
            size1: 2,
            size2: 5,
            root1: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            root2: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            proof: &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
            want_err: false,
        },
        ConsistencyProbe {
            file: "consistency/4/happy-path.json",
            size1: 6,
            size2: 7,
            root1: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            root2: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            proof: &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
            want_err: false,
        },
        ConsistencyProbe {
            file: "consistency/additional/consistency-check-on-empty-tree-size1-is-zero-is-useless.json",
            size1: 0,
            size2: 1,
            root1: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            root2: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            proof: &["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/roots-do-not-match-and-sizes-are-zero.json",
            size1: 0,
            size2: 0,
            root1: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/roots-do-not-not-match-and-sizes-are-one.json",
            size1: 1,
            size2: 1,
            root1: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/size1-is-greater-than-size2-again.json",
            size1: 2,
            size2: 1,
            root1: "646f6e277420636172652031",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/size1-is-greater-than-size2.json",
            size1: 1,
            size2: 0,
            root1: "646f6e277420636172652031",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/size1-is-zero-and-does-not-equal-size2.json",
            size1: 0,
            size2: 1,
            root1: "646f6e277420636172652031",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/size1-is-zero-and-size2-is-not-zero.json",
            size1: 0,
            size2: 1,
            root1: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json",
            size1: 1,
            size2: 1,
            root1: "646f6e277420636172652032",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: false,
        },
        ConsistencyProbe {
            file: "consistency/additional/sizes-are-equal-one-but-roots-are-not.json",
            size1: 1,
            size2: 1,
            root1: "646f6e277420636172652031",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/sizes-are-equal-zero-and-proof-is-empty.json",
            size1: 0,
            size2: 0,
            root1: "646f6e277420636172652031",
            root2: "646f6e277420636172652031",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/sizes-are-equal-zero-but-roots-are-not.json",
            size1: 0,
            size2: 0,
            root1: "646f6e277420636172652031",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/sizes-do-not-watch-and-proof-is-empty.json",
            size1: 1,
            size2: 2,
            root1: "646f6e277420636172652031",
            root2: "646f6e277420636172652032",
            proof: &[],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/sizes-match-but-proof-is-not-empty-and-sizes-are-one.json",
            size1: 1,
            size2: 1,
            root1: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            root2: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            proof: &["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
            want_err: true,
        },
        ConsistencyProbe {
            file: "consistency/additional/sizes-match-but-proof-is-not-empty-and-sizes-are-zero.json",
            size1: 0,
            size2: 0,
            root1: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            root2: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            proof: &["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
            want_err: true,
        },
    ];
    /// A probe with a value that is not 32 bytes cannot reach this API: one that
    /// expects an error is refused by the type. Only "sizes-are-equal-one-and-
    /// proof-is-empty" expects success with such values (equal 12-byte roots),
    /// and it is run zero-padded.
    #[test]
    fn transparency_dev_probe_files_give_the_expected_verdicts() {
        for p in INCLUSION_PROBES {
            let values: Option<Vec<Hash>> = [p.leaf_hash, p.root]
                .iter()
                .chain(p.proof)
                .map(|x| probe_hash(x))
                .collect();
            let result = match values {
                Some(values) => {
                    let (leaf, root, proof) = (&values[0], &values[1], &values[2..]);
                    verify_inclusion(leaf, p.leaf_index, p.tree_size, proof, root)
                }
                None if p.want_err => continue,
                None => panic!("{}: expects success with malformed hashes", p.file),
            };
            assert_eq!(result.is_err(), p.want_err, "{}: {result:?}", p.file);
        }
        for p in CONSISTENCY_PROBES {
            let values: Option<Vec<Hash>> = [p.root1, p.root2]
                .iter()
                .chain(p.proof)
                .map(|x| probe_hash(x))
                .collect();
            let values = match values {
                Some(values) => values,
                None if p.want_err => continue,
                None => [p.root1, p.root2]
                    .iter()
                    .chain(p.proof)
                    .map(|x| padded_probe_hash(x))
                    .collect(),
            };
            let (root1, root2, proof) = (&values[0], &values[1], &values[2..]);
            let result = verify_consistency(p.size1, p.size2, root1, root2, proof);
            assert_eq!(result.is_err(), p.want_err, "{}: {result:?}", p.file);
        }
    }

    fn flip_bit(proof: &[Hash], element: usize, byte: usize, mask: u8) -> Vec<Hash> {
        let mut proof = proof.to_vec();
        proof[element][byte] ^= mask;
        proof
    }

    fn with_front(proof: &[Hash], front: Hash) -> Vec<Hash> {
        let mut longer = vec![front];
        longer.extend_from_slice(proof);
        longer
    }

    fn with_back(proof: &[Hash], back: Hash) -> Vec<Hash> {
        let mut longer = proof.to_vec();
        longer.push(back);
        longer
    }

    #[test]
    fn every_inclusion_proof_over_eight_leaves_verifies_and_no_tampered_one_does() {
        use MerkleError::*;
        let leaves = leaves8();
        let some = h(SOME_HASH);
        for size in 1..=8u64 {
            let root = root8(size);
            for index in 0..size {
                let leaf = leaves[index as usize];
                let proof = inclusion_proof(&leaves, index, size).unwrap();
                assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));

                for element in 0..proof.len() {
                    for (byte, mask) in [(0, 8), (HASH_LEN - 1, 1)] {
                        let tampered = flip_bit(&proof, element, byte, mask);
                        assert_eq!(
                            verify_inclusion(&leaf, index, size, &tampered, &root),
                            Err(RootMismatch)
                        );
                    }
                }
                if let Some((_, shorter)) = proof.split_last() {
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, shorter, &root),
                        Err(ProofTooShort)
                    );
                }
                if proof.len() > 1 {
                    let mut inserted = proof.clone();
                    inserted.insert(1, some);
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &inserted, &root),
                        Err(ProofTooLong)
                    );
                }
                for extra in [[0; HASH_LEN], root, some] {
                    let longer = with_back(&proof, extra);
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &longer, &root),
                        Err(ProofTooLong)
                    );
                    let longer = with_front(&proof, extra);
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &longer, &root),
                        Err(ProofTooLong)
                    );
                }

                for wrong_leaf in [leaf_hash(b"WrongLeaf"), root, some] {
                    if wrong_leaf != leaf {
                        assert_eq!(
                            verify_inclusion(&wrong_leaf, index, size, &proof, &root),
                            Err(RootMismatch)
                        );
                    }
                }
                for wrong_root in [empty_root(), some, leaf] {
                    if wrong_root != root {
                        assert_eq!(
                            verify_inclusion(&leaf, index, size, &proof, &wrong_root),
                            Err(RootMismatch)
                        );
                    }
                }
                for other in (0..size + 2).filter(|&other| other != index) {
                    assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
                }
                for other in [index.wrapping_sub(1), index ^ 2] {
                    if other != index {
                        assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
                    }
                }
                for other_size in [size * 2, size / 2] {
                    assert!(verify_inclusion(&leaf, index, other_size, &proof, &root).is_err());
                }
                for other_size in (1..=8).filter(|&other_size| other_size != size) {
                    assert!(
                        verify_inclusion(&leaf, index, other_size, &proof, &root8(other_size))
                            .is_err()
                    );
                }
            }
            assert_eq!(
                verify_inclusion(&leaves[0], size, size, &[], &root),
                Err(IndexOutOfRange {
                    index: size,
                    tree_size: size
                })
            );
        }
    }

    /// Sizes are bound by the signed tree heads, not by the proofs: a proof
    /// also fits another size whose tree has the same shape along the path.
    #[test]
    fn a_proof_fits_another_size_with_the_same_shape() {
        let leaves = leaves8();
        let proof = inclusion_proof(&leaves, 0, 3).unwrap();
        assert_eq!(
            verify_inclusion(&leaves[0], 0, 4, &proof, &root8(3)),
            Ok(())
        );
        assert_eq!(
            verify_inclusion(&leaves[0], 0, 4, &proof, &root8(4)),
            Err(MerkleError::RootMismatch)
        );
        let proof = consistency_proof(&leaves, 2, 3).unwrap();
        assert_eq!(
            verify_consistency(2, 4, &root8(2), &root8(3), &proof),
            Ok(())
        );
        assert_eq!(
            verify_consistency(2, 4, &root8(2), &root8(4), &proof),
            Err(MerkleError::SecondRootMismatch)
        );
    }

    #[test]
    fn every_consistency_proof_over_eight_leaves_verifies_and_no_tampered_one_does() {
        use MerkleError::*;
        let leaves = leaves8();
        let some = h(SOME_HASH);
        for second in 1..=8u64 {
            let second_root = root8(second);
            for first in 1..=second {
                let first_root = root8(first);
                let proof = consistency_proof(&leaves, first, second).unwrap();
                assert_eq!(
                    verify_consistency(first, second, &first_root, &second_root, &proof),
                    Ok(())
                );

                if first == second {
                    assert!(proof.is_empty());
                    assert_eq!(
                        verify_consistency(first, second, &first_root, &some, &proof),
                        Err(SameSizeRootsDiffer)
                    );
                    assert_eq!(
                        verify_consistency(first, second, &first_root, &first_root, &[first_root]),
                        Err(ProofTooLong)
                    );
                    continue;
                }

                for element in 0..proof.len() {
                    for (byte, mask) in [(0, 16), (HASH_LEN - 1, 1)] {
                        let tampered = flip_bit(&proof, element, byte, mask);
                        assert!(
                            verify_consistency(first, second, &first_root, &second_root, &tampered)
                                .is_err()
                        );
                    }
                }
                assert_eq!(
                    verify_consistency(first, second, &first_root, &second_root, &[]),
                    Err(ProofTooShort)
                );
                let (_, shorter) = proof.split_last().unwrap();
                assert_eq!(
                    verify_consistency(first, second, &first_root, &second_root, shorter),
                    Err(ProofTooShort)
                );
                for extra in [[0; HASH_LEN], first_root, second_root, proof[0]] {
                    let longer = with_back(&proof, extra);
                    assert_eq!(
                        verify_consistency(first, second, &first_root, &second_root, &longer),
                        Err(ProofTooLong)
                    );
                    let longer = with_front(&proof, extra);
                    assert_eq!(
                        verify_consistency(first, second, &first_root, &second_root, &longer),
                        Err(ProofTooLong)
                    );
                }

                let wrong = leaf_hash(b"WrongRoot");
                assert!(verify_consistency(first, second, &wrong, &second_root, &proof).is_err());
                assert!(verify_consistency(first, second, &first_root, &wrong, &proof).is_err());
                assert!(
                    verify_consistency(first, second, &second_root, &first_root, &proof).is_err()
                );

                for other_first in [first - 1, first + 1, first ^ 2] {
                    assert!(
                        verify_consistency(other_first, second, &first_root, &second_root, &proof)
                            .is_err(),
                        "{first}:{second} as {other_first}:{second}"
                    );
                }
                for other_second in [second * 2, second / 2] {
                    assert!(
                        verify_consistency(first, other_second, &first_root, &second_root, &proof)
                            .is_err(),
                        "{first}:{second} as {first}:{other_second}"
                    );
                }
                for other_second in 1..=8 {
                    for other_first in 1..=other_second {
                        if (other_first, other_second) != (first, second) {
                            let (r1, r2) = (root8(other_first), root8(other_second));
                            assert!(
                                verify_consistency(other_first, other_second, &r1, &r2, &proof)
                                    .is_err()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn edge_cases_named_by_the_rfc_are_refused_without_panicking() {
        use MerkleError::*;
        let leaves = leaves8();
        let (r1, r8) = (root8(1), root8(8));

        assert_eq!(
            inclusion_proof(&leaves, 0, 0),
            Err(IndexOutOfRange {
                index: 0,
                tree_size: 0
            })
        );
        assert_eq!(
            inclusion_proof(&leaves, 8, 8),
            Err(IndexOutOfRange {
                index: 8,
                tree_size: 8
            })
        );
        assert_eq!(
            inclusion_proof(&leaves, 3, 9),
            Err(NotEnoughLeaves {
                tree_size: 9,
                available: 8
            })
        );
        assert_eq!(
            inclusion_proof(&leaves, 3, u64::MAX),
            Err(NotEnoughLeaves {
                tree_size: u64::MAX,
                available: 8
            })
        );
        assert_eq!(consistency_proof(&leaves, 0, 0), Err(EmptyFirstTree));
        assert_eq!(consistency_proof(&leaves, 0, 8), Err(EmptyFirstTree));
        assert_eq!(
            consistency_proof(&leaves, 5, 4),
            Err(SizesOutOfOrder {
                first_size: 5,
                second_size: 4
            })
        );
        assert_eq!(
            consistency_proof(&leaves, 1, 9),
            Err(NotEnoughLeaves {
                tree_size: 9,
                available: 8
            })
        );
        assert_eq!(consistency_proof(&leaves, 8, 8), Ok(vec![]));

        assert_eq!(
            verify_inclusion(&leaves[0], 0, 0, &[], &empty_root()),
            Err(IndexOutOfRange {
                index: 0,
                tree_size: 0
            })
        );
        assert_eq!(
            verify_inclusion(&leaves[0], u64::MAX, u64::MAX, &[], &r8),
            Err(IndexOutOfRange {
                index: u64::MAX,
                tree_size: u64::MAX
            })
        );
        let empty = empty_root();
        assert_eq!(
            verify_consistency(0, 0, &empty, &empty, &[]),
            Err(EmptyFirstTree)
        );
        assert_eq!(
            verify_consistency(0, 8, &empty, &r8, &[]),
            Err(EmptyFirstTree)
        );
        assert_eq!(
            verify_consistency(2, 1, &r8, &r1, &[]),
            Err(SizesOutOfOrder {
                first_size: 2,
                second_size: 1
            })
        );
        // A power-of-two first size: its root is the seed (step 2) and must
        // not be sent again; sent again, the proof is one hash too long.
        let proof = consistency_proof(&leaves, 4, 8).unwrap();
        assert_eq!(verify_consistency(4, 8, &root8(4), &r8, &proof), Ok(()));
        assert_eq!(
            verify_consistency(4, 8, &root8(4), &r8, &with_front(&proof, root8(4))),
            Err(ProofTooLong)
        );

        // Sizes near u64::MAX with any proof length: errors, no overflow.
        let mut rng = SplitMix64(7);
        for (first, second) in [
            (1, u64::MAX),
            (u64::MAX - 1, u64::MAX),
            (u64::MAX, u64::MAX),
            (1 << 63, u64::MAX),
            ((1 << 63) - 1, 1 << 63),
        ] {
            for len in 0..=70 {
                let proof: Vec<Hash> = (0..len).map(|_| rng.hash()).collect();
                assert!(verify_consistency(first, second, &r1, &r8, &proof).is_err());
                assert!(verify_inclusion(&r1, first, second, &proof, &r8).is_err());
                assert!(verify_inclusion(&r1, second - 1, second, &proof, &r8).is_err());
            }
        }
    }

    /// Tree D of the draft's test vectors: d[i] = the byte i.
    const VECTOR_TREE_SIZE: usize = 130;

    /// Whether [start, end) is a subtree in the sense of
    /// draft-ietf-plants-merkle-tree-certs (start a multiple of
    /// BIT_CEIL(end - start)); as `isSubtreeValid` in transparency-dev/merkle
    /// testonly/tree.go.
    fn is_valid_subtree(start: usize, end: usize) -> bool {
        start <= end
            && (start == 0
                || start == end
                || start.is_multiple_of((end - start).next_power_of_two()))
    }

    // Accumulated vectors of draft-ietf-plants-merkle-tree-certs appendix C.1
    // (subtree hashes, subtree inclusion proofs) for every tree up to 130
    // leaves: a subtree [start, end) is the tree over d[start..end], so these
    // check MTH and PATH over thousands of trees. Values and line formats from
    // github.com/transparency-dev/merkle testonly/vectors_test.go
    // (TestSubtreeHashVectors, TestSubtreeInclusionProofVectors).
    #[test]
    fn accumulated_vectors_for_trees_up_to_130_leaves_match() {
        let leaves: Vec<Hash> = (0..VECTOR_TREE_SIZE)
            .map(|i| leaf_hash(&[i as u8]))
            .collect();
        let mut hashes = Context::new(&SHA256);
        let mut proofs = Context::new(&SHA256);
        for end in 0..=VECTOR_TREE_SIZE {
            for start in (0..=end).filter(|&start| is_valid_subtree(start, end)) {
                let subtree = &leaves[start..end];
                let line = format!("[{start}, {end}) {}\n", to_hex(&root(subtree)));
                hashes.update(line.as_bytes());
                for index in start..end {
                    let size = (end - start) as u64;
                    let proof = inclusion_proof(subtree, (index - start) as u64, size).unwrap();
                    let mut line = format!("{index} [{start}, {end})");
                    for hash in &proof {
                        line.push(' ');
                        line.push_str(&to_hex(hash));
                    }
                    line.push('\n');
                    proofs.update(line.as_bytes());
                }
            }
        }
        assert_eq!(
            to_hex(hashes.finish().as_ref()),
            "b82806ad4265bb151c1119c0f4db437bb4d1a1f887b3a7fba1cd4ebf552e3e81"
        );
        assert_eq!(
            to_hex(proofs.finish().as_ref()),
            "ac2a8f989e44d99e399db448050ff5f19757df53cfb716aa81015d3955d8163f"
        );
    }

    /// A fixed-seed generator (SplitMix64), so failures reproduce.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform enough in `low..=high` for test sampling.
        fn between(&mut self, low: u64, high: u64) -> u64 {
            low + self.next() % (high - low + 1)
        }

        fn hash(&mut self) -> Hash {
            let mut hash = [0; HASH_LEN];
            for chunk in hash.chunks_mut(8) {
                chunk.copy_from_slice(&self.next().to_be_bytes());
            }
            hash
        }
    }

    #[test]
    fn random_sizes_up_to_300_round_trip_and_proofs_do_not_transfer() {
        const LEAVES: u64 = 300;
        let leaves: Vec<Hash> = (0..LEAVES).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let log = Mth::new(&leaves);
        let roots: Vec<Hash> = (0..=LEAVES)
            .map(|n| log.root_of_first(n).unwrap())
            .collect();
        let mut rng = SplitMix64(0x5eed_f00d);
        for _ in 0..1_000 {
            let size = rng.between(1, LEAVES);
            let index = rng.between(0, size - 1);
            let proof = log.inclusion_proof(index, size).unwrap();
            let leaf = &leaves[index as usize];
            assert_eq!(
                verify_inclusion(leaf, index, size, &proof, &roots[size as usize]),
                Ok(()),
                "inclusion {index}:{size}"
            );
            for _ in 0..4 {
                let other_size = rng.between(1, LEAVES);
                let other_index = rng.between(0, other_size - 1);
                if (other_index, other_size) == (index, size) {
                    continue;
                }
                let other_leaf = &leaves[other_index as usize];
                let other_root = &roots[other_size as usize];
                assert!(
                    verify_inclusion(other_leaf, other_index, other_size, &proof, other_root)
                        .is_err(),
                    "inclusion {index}:{size} as {other_index}:{other_size}"
                );
            }

            let second = rng.between(1, LEAVES);
            let first = rng.between(1, second);
            let proof = log.consistency_proof(first, second).unwrap();
            let (r1, r2) = (&roots[first as usize], &roots[second as usize]);
            assert_eq!(
                verify_consistency(first, second, r1, r2, &proof),
                Ok(()),
                "consistency {first}:{second}"
            );
            if first == second {
                continue;
            }
            for _ in 0..4 {
                let other_second = rng.between(1, LEAVES);
                let other_first = rng.between(1, other_second);
                if (other_first, other_second) == (first, second) {
                    continue;
                }
                let (o1, o2) = (&roots[other_first as usize], &roots[other_second as usize]);
                assert!(
                    verify_consistency(other_first, other_second, o1, o2, &proof).is_err(),
                    "consistency {first}:{second} as {other_first}:{other_second}"
                );
            }
        }
    }

    #[test]
    fn a_frontier_gives_every_root_and_every_tile_and_tiled_proofs_equal_full_ones() {
        let mut rng = SplitMix64(0x7115_0001);
        let leaves: Vec<Hash> = (0..1100).map(|_| rng.hash()).collect();
        let mut frontier = Frontier::default();
        let mut tile_roots = Vec::new();
        for (i, leaf) in leaves.iter().enumerate() {
            if let Some(tile) = frontier.push(*leaf) {
                tile_roots.push(tile);
            }
            assert_eq!(frontier.root(), root(&leaves[..=i]), "size {}", i + 1);
        }
        let expected_tiles: Vec<Hash> = leaves
            .chunks_exact(TILE_LEAVES as usize)
            .map(root)
            .collect();
        assert_eq!(tile_roots, expected_tiles);
        let mut by_tiles = Frontier::default();
        for tile in &tile_roots {
            by_tiles.push_tile(*tile).unwrap();
        }
        for leaf in &leaves[tile_roots.len() * TILE_LEAVES as usize..] {
            by_tiles.push(*leaf);
        }
        assert_eq!(
            by_tiles, frontier,
            "tiles then leaves build the same frontier"
        );
        let full = Mth::new(&leaves);
        let mut checked = 0;
        for _ in 0..400 {
            let size = rng.between(1, leaves.len() as u64);
            let index = rng.between(0, size - 1);
            let tile_leaves = Tiled::tiles_needed(index, size)
                .into_iter()
                .map(|t| {
                    let start = (t * TILE_LEAVES) as usize;
                    let end = (start + TILE_LEAVES as usize).min(size as usize);
                    (t, leaves[start..end].to_vec())
                })
                .collect();
            let whole_tiles = (size / TILE_LEAVES) as usize;
            let tiled = Tiled {
                size,
                tile_roots: &tile_roots[..whole_tiles],
                tile_leaves: &tile_leaves,
            };
            assert_eq!(tiled.root_of_first(size), full.root_of_first(size));
            assert_eq!(
                tiled.inclusion_proof(index, size),
                full.inclusion_proof(index, size),
                "inclusion {index} in {size}"
            );
            assert_eq!(
                tiled.consistency_proof(index + 1, size),
                full.consistency_proof(index + 1, size),
                "consistency {} to {size}",
                index + 1
            );
            checked += 1;
        }
        println!("seed 0x71150001: {checked} tiled proofs equal the full ones");
    }

    #[test]
    fn a_tiled_tree_without_the_leaves_it_needs_says_so() {
        let leaves: Vec<Hash> = (0..300u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let tile_leaves = std::collections::BTreeMap::new();
        let tiled = Tiled {
            size: 300,
            tile_roots: &[root(&leaves[..256])],
            tile_leaves: &tile_leaves,
        };
        assert!(matches!(
            tiled.inclusion_proof(5, 300),
            Err(MerkleError::SubtreeNotLoaded { .. })
        ));
    }
}
