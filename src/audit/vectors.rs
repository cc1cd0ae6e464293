//! The audit-log test vector, `docs/test-vectors/audit-log.json`, checked byte
//! for byte against this crate's own code: leaf hashes, roots, the signed tree
//! head (text, signature, JSON), inclusion and consistency proofs, and the
//! registry and trim statement texts and signatures. The vector's inputs are
//! pinned here too, so neither a changed value in the file nor a change in the
//! code that alters any output can pass. `clients/python/verify_audit_log.py
//! vector` checks the same file with an implementation of its own.

use ring::digest::{SHA256, digest};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::Value;

use super::heads::{Incident, Registry, TreeHead, TrimStatement};
use super::merkle::{
    Hash, Mth, Subtrees, empty_root, leaf_hash, root, verify_consistency, verify_inclusion,
};

const VECTOR: &str = include_str!("../../docs/test-vectors/audit-log.json");

/// The values `docs/audit-log.md` quotes; the file must agree with them.
const SEED: [u8; 32] = [0x01; 32];
const TENANT: &str = "demo";
const CHAIN: &str = "w-0123456789abcdef";
const TIMESTAMP_MS: u64 = 1_764_547_200_000;
const ROOT_7: &str = "1b35c9853bf19a289248a3f47293af4950054d032860aa160031b7e5e6feb07d";
const HEAD_SIGNATURE: &str = "162fc2958046617fcbe8e828057943f2280ad57a7ee2bfda3c8b8e139d78eb6eebbec09c74e2c28ce9703a4346d226f0cd30c6657d8dde35d97b7a2349f4d401";

fn vector() -> Value {
    serde_json::from_str(VECTOR).expect("the vector is JSON")
}

fn text<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

fn number(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

fn bytes(v: &Value, what: &str) -> Vec<u8> {
    hex::decode(text(v, what)).unwrap_or_else(|e| panic!("{what} is not hex: {e}"))
}

fn hash(v: &Value, what: &str) -> Hash {
    bytes(v, what)
        .try_into()
        .unwrap_or_else(|_| panic!("{what} is not 32 bytes"))
}

fn hashes(v: &Value, what: &str) -> Vec<Hash> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a list"))
        .iter()
        .enumerate()
        .map(|(i, h)| hash(h, &format!("{what}[{i}]")))
        .collect()
}

fn list<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a list"))
}

/// Hashes as hex, so that a failed comparison reads like the file.
fn hx(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn flipped(proof: &[Hash], i: usize) -> Vec<Hash> {
    let mut bad = proof.to_vec();
    bad[i][0] ^= 1;
    bad
}

fn signer() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&SEED).expect("a 32-byte seed")
}

/// The leaf hashes the vector's inputs make, after checking the file's leaves.
fn leaves(v: &Value) -> Vec<Hash> {
    let inputs = list(&v["inputs"]["leafInputs"], "inputs.leafInputs");
    let expected: Vec<String> = (1..=7).map(|i| format!("event {i}")).collect();
    let inputs: Vec<&str> = inputs.iter().map(|s| text(s, "a leaf input")).collect();
    assert_eq!(inputs, expected, "the vector's leaf inputs are pinned");
    let stated = list(&v["leaves"], "leaves");
    assert_eq!(stated.len(), inputs.len(), "one leaf per input");
    inputs
        .iter()
        .zip(stated)
        .enumerate()
        .map(|(i, (input, leaf))| {
            assert_eq!(number(&leaf["index"], "leaf index"), i as u64);
            assert_eq!(text(&leaf["input"], "leaf input"), *input);
            let data = digest(&SHA256, input.as_bytes());
            assert_eq!(
                text(&leaf["data"], "leaf data"),
                hex::encode(data.as_ref()),
                "leaf {i}: data is SHA-256 of {input:?}"
            );
            let hashed = leaf_hash(data.as_ref());
            assert_eq!(
                text(&leaf["leafHash"], "leaf hash"),
                hex::encode(hashed),
                "leaf {i}: SHA-256(0x00 || data)"
            );
            hashed
        })
        .collect()
}

#[test]
fn the_key_and_the_leaves_match() {
    let v = vector();
    assert_eq!(
        bytes(&v["inputs"]["ed25519Seed"], "inputs.ed25519Seed"),
        SEED
    );
    let public = signer().public_key().as_ref().to_vec();
    assert_eq!(text(&v["publicKey"], "publicKey"), hex::encode(&public));
    use base64::Engine as _;
    assert_eq!(
        text(&v["publicKeyBase64"], "publicKeyBase64"),
        base64::engine::general_purpose::STANDARD.encode(&public)
    );
    assert_eq!(leaves(&v).len(), 7);
}

#[test]
fn every_root_matches() {
    let v = vector();
    let leaves = leaves(&v);
    let roots = list(&v["roots"], "roots");
    assert_eq!(roots.len(), leaves.len() + 1, "sizes 0 to 7");
    let tree = Mth::new(&leaves);
    for (n, stated) in roots.iter().enumerate() {
        assert_eq!(number(&stated["treeSize"], "treeSize"), n as u64);
        let expected = hex::encode(hash(&stated["rootHash"], "rootHash"));
        assert_eq!(
            hex::encode(tree.root_of_first(n as u64).unwrap()),
            expected,
            "size {n}"
        );
        assert_eq!(hex::encode(root(&leaves[..n])), expected, "size {n}");
    }
    assert_eq!(
        hash(&roots[0]["rootHash"], "empty root"),
        empty_root(),
        "the empty tree is SHA-256(\"\")"
    );
    assert_eq!(hex::encode(root(&leaves)), ROOT_7);
}

#[test]
fn the_signed_tree_head_matches_in_text_signature_and_json() {
    let v = vector();
    let leaves = leaves(&v);
    let input = &v["inputs"]["head"];
    assert_eq!(text(&input["tenant"], "tenant"), TENANT);
    assert_eq!(text(&input["chainId"], "chainId"), CHAIN);
    assert_eq!(number(&input["treeSize"], "treeSize"), 7);
    assert_eq!(number(&input["timestampMs"], "timestampMs"), TIMESTAMP_MS);
    let signer = signer();
    let public = signer.public_key().as_ref().to_vec();
    let head = TreeHead::sign(&signer, TENANT, CHAIN, 7, root(&leaves), TIMESTAMP_MS);
    let stated = &v["treeHead"];
    assert_eq!(
        hash(&stated["rootHash"], "treeHead.rootHash"),
        head.root_hash
    );
    let message = head.message();
    assert_eq!(
        text(&stated["signedText"], "treeHead.signedText").as_bytes(),
        message.as_slice()
    );
    assert_eq!(
        bytes(&stated["signedTextHex"], "treeHead.signedTextHex"),
        message
    );
    assert_eq!(
        text(&stated["signature"], "treeHead.signature"),
        hex::encode(&head.signature)
    );
    assert_eq!(hex::encode(&head.signature), HEAD_SIGNATURE);
    assert!(head.verify(&public));

    // The JSON line, exactly as the anchor file holds it, and back.
    let json = text(&stated["json"], "treeHead.json");
    assert_eq!(serde_json::to_string(&head).unwrap(), json);
    let parsed: TreeHead = serde_json::from_str(json).unwrap();
    assert_eq!(parsed, head);
    assert!(parsed.verify(&public));

    // Any change to what is signed breaks the signature.
    let mut altered = Vec::new();
    let mut h = head.clone();
    h.tenant = "demp".into();
    altered.push(h);
    let mut h = head.clone();
    h.chain_id = "w-0123456789abcdee".into();
    altered.push(h);
    let mut h = head.clone();
    h.tree_size = 6;
    altered.push(h);
    let mut h = head.clone();
    h.timestamp_ms += 1;
    altered.push(h);
    let mut h = head.clone();
    h.root_hash[31] ^= 1;
    altered.push(h);
    let mut h = head.clone();
    h.signature[0] ^= 1;
    altered.push(h);
    for h in altered {
        assert!(!h.verify(&public), "{h:?} must not verify");
    }
}

#[test]
fn the_inclusion_proofs_match_and_verify() {
    let v = vector();
    let leaves = leaves(&v);
    let tree = Mth::new(&leaves);
    let wanted = [(2u64, 7u64), (6, 7)];
    let inputs = list(&v["inputs"]["inclusionProofs"], "inputs.inclusionProofs");
    let stated = list(&v["inclusionProofs"], "inclusionProofs");
    assert_eq!(inputs.len(), wanted.len());
    assert_eq!(stated.len(), wanted.len());
    for ((input, p), (index, size)) in inputs.iter().zip(stated).zip(wanted) {
        assert_eq!(number(&input["leafIndex"], "leafIndex"), index);
        assert_eq!(number(&input["treeSize"], "treeSize"), size);
        assert_eq!(number(&p["leafIndex"], "leafIndex"), index);
        assert_eq!(number(&p["treeSize"], "treeSize"), size);
        let leaf = leaves[index as usize];
        let root = tree.root_of_first(size).unwrap();
        assert_eq!(hash(&p["leafHash"], "leafHash"), leaf);
        assert_eq!(hash(&p["rootHash"], "rootHash"), root);
        let proof = hashes(&p["hashes"], "hashes");
        assert_eq!(
            hx(&tree.inclusion_proof(index, size).unwrap()),
            hx(&proof),
            "PATH({index}, D[{size}])"
        );
        assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        for i in 0..proof.len() {
            assert!(verify_inclusion(&leaf, index, size, &flipped(&proof, i), &root).is_err());
        }
        let other = leaves[(index as usize + 1) % leaves.len()];
        assert!(verify_inclusion(&other, index, size, &proof, &root).is_err());
        assert!(verify_inclusion(&leaf, index ^ 1, size, &proof, &root).is_err());
    }
}

#[test]
fn the_consistency_proofs_match_and_verify() {
    let v = vector();
    let leaves = leaves(&v);
    let tree = Mth::new(&leaves);
    let wanted = [(3u64, 7u64), (4, 7)];
    let inputs = list(
        &v["inputs"]["consistencyProofs"],
        "inputs.consistencyProofs",
    );
    let stated = list(&v["consistencyProofs"], "consistencyProofs");
    assert_eq!(inputs.len(), wanted.len());
    assert_eq!(stated.len(), wanted.len());
    for ((input, p), (first, second)) in inputs.iter().zip(stated).zip(wanted) {
        assert_eq!(number(&input["firstSize"], "firstSize"), first);
        assert_eq!(number(&input["secondSize"], "secondSize"), second);
        assert_eq!(number(&p["firstSize"], "firstSize"), first);
        assert_eq!(number(&p["secondSize"], "secondSize"), second);
        let first_root = tree.root_of_first(first).unwrap();
        let second_root = tree.root_of_first(second).unwrap();
        assert_eq!(hash(&p["firstRoot"], "firstRoot"), first_root);
        assert_eq!(hash(&p["secondRoot"], "secondRoot"), second_root);
        let proof = hashes(&p["hashes"], "hashes");
        assert_eq!(
            hx(&tree.consistency_proof(first, second).unwrap()),
            hx(&proof),
            "PROOF({first}, D[{second}])"
        );
        assert_eq!(
            verify_consistency(first, second, &first_root, &second_root, &proof),
            Ok(())
        );
        for i in 0..proof.len() {
            assert!(
                verify_consistency(
                    first,
                    second,
                    &first_root,
                    &second_root,
                    &flipped(&proof, i)
                )
                .is_err()
            );
        }
        assert!(verify_consistency(first, second, &second_root, &first_root, &proof).is_err());
    }
}

#[test]
fn the_registry_and_trim_statements_match() {
    let v = vector();
    let leaves = leaves(&v);
    let signer = signer();
    let public = signer.public_key().as_ref().to_vec();
    let head = TreeHead::sign(&signer, TENANT, CHAIN, 7, root(&leaves), TIMESTAMP_MS);

    let input = &v["inputs"]["registry"];
    let incidents: Vec<Incident> = serde_json::from_value(input["incidents"].clone())
        .expect("incidents as the code reads them");
    assert_eq!(incidents.len(), 1);
    let mut registry = Registry {
        generation: number(&input["generation"], "generation"),
        timestamp_ms: number(&input["timestampMs"], "timestampMs"),
        heads: vec![head.clone()],
        incidents,
        folded: Default::default(),
        signature: Vec::new(),
    };
    registry.seal(&signer);
    let stated = &v["registry"];
    assert_eq!(
        text(&stated["signedText"], "registry.signedText").as_bytes(),
        registry.message().as_slice()
    );
    assert_eq!(
        text(&stated["signature"], "registry.signature"),
        hex::encode(&registry.signature)
    );
    assert!(registry.verify(&public));

    let input = &v["inputs"]["trim"];
    let mut trim = TrimStatement {
        tenant: TENANT.into(),
        chain_id: CHAIN.into(),
        first_index: number(&input["firstIndex"], "firstIndex"),
        tree_size: head.tree_size,
        root_hash: head.root_hash,
        timestamp_ms: number(&input["timestampMs"], "timestampMs"),
        newest_excused_ms: number(&input["newestExcusedMs"], "newestExcusedMs"),
        retention_days: number(&input["retentionDays"], "retentionDays"),
        signature: Vec::new(),
    };
    trim.seal(&signer);
    let stated = &v["trim"];
    assert_eq!(
        text(&stated["signedText"], "trim.signedText").as_bytes(),
        trim.message().as_slice()
    );
    assert_eq!(
        text(&stated["signature"], "trim.signature"),
        hex::encode(&trim.signature)
    );
    assert!(trim.verify(&public));
    assert_eq!(trim.check(&public), Ok(()));
}
