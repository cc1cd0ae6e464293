//! On-disk formats of the secrets, all mounted files (Kubernetes Secrets), never
//! Redis. Each is small JSON or one base64 line so an operator can inspect the
//! shape without tooling; loading refuses files that others can read. The key
//! files are the key store: `keys rotate`, `keys retire` and `keys rotate-sealing`
//! change them in place (atomically, mode 0600), and the service re-reads them.
//!
//! The keyring file has two formats. Format 2 (written by every command since key
//! epochs) holds the identity root and the KEK epochs:
//!
//! ```json
//! {"format": 2, "identity_root": "<b64>", "active_epoch": 2,
//!  "epochs": [{"epoch": 2, "secret": "<b64>", "created_at": "2026-12-01T00:00:00Z"}],
//!  "retired": [{"epoch": 1, "retired_at": "2026-12-09T00:00:00Z"}]}
//! ```
//!
//! The format before it, `{"active_version": N, "keys": [{"version", "secret"}]}`,
//! is still read: its first version becomes the identity root (pseudonyms do not
//! change) and is marked `identity_bound_epoch`, and the first `keys rotate`
//! rewrites the file in format 2.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keyring::{KekEpoch, Keyring, MasterSecret};
use super::random_bytes;
use super::sealing::{OpeningKey, SealingKeys, Suite};

pub const KEYRING_FILE: &str = "keyring.json";
pub const TRANSFORM_FILE: &str = "transform.key";
pub const SEALING_FILE: &str = "sealing-keys.json";
pub const SEALING_PUBLIC_FILE: &str = "sealing-public.json";
pub const RECEIPT_FILE: &str = "receipt-signing.key";

/// Where the key files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPaths {
    /// The keyring: identity root and KEK epochs.
    pub keyring: PathBuf,
    /// The transform secret; a separate Secret from the keyring (split knowledge).
    pub transform_secret: PathBuf,
    /// HPKE sealing key seeds.
    pub sealing_keys: PathBuf,
    /// Ed25519 key that signs deletion receipts and audit checkpoints.
    pub receipt_signing_key: PathBuf,
}

impl KeyPaths {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            keyring: dir.join(KEYRING_FILE),
            transform_secret: dir.join(TRANSFORM_FILE),
            sealing_keys: dir.join(SEALING_FILE),
            receipt_signing_key: dir.join(RECEIPT_FILE),
        }
    }
}

pub struct KeyMaterial {
    pub keyring: Keyring,
    pub sealing: SealingKeys,
    pub receipt_signer: Ed25519KeyPair,
    /// SHA-256 over the files as read: a reload that finds the same files has
    /// nothing to do.
    pub fingerprint: [u8; 32],
}

impl KeyMaterial {
    /// The Ed25519 key that verifies receipts, tree heads, the audit registry
    /// and trim statements (published as `receipt_verification_key`).
    pub fn receipt_public_key(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.receipt_signer.public_key().as_ref().to_vec()
    }
}

const KEYRING_FORMAT: u32 = 2;

/// A secret as it appears in a file (base64 text), wiped when dropped.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct SecretText(String);

impl Drop for SecretText {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.0.zeroize();
    }
}

/// The keyring file, format 2.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringDoc {
    format: u32,
    identity_root: SecretText,
    /// The epoch sharing the identity root's secret (a keyring from before key
    /// epochs): its retirement cannot shred it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity_bound_epoch: Option<u32>,
    active_epoch: u32,
    epochs: Vec<EpochEntry>,
    #[serde(default)]
    retired: Vec<RetiredEpoch>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochEntry {
    epoch: u32,
    secret: SecretText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredEpoch {
    pub epoch: u32,
    pub retired_at: String,
}

/// The keyring file before key epochs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyKeyringFile {
    active_version: u32,
    keys: Vec<LegacyMasterEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyMasterEntry {
    version: u32,
    secret: SecretText,
}

impl KeyringDoc {
    pub fn active_epoch(&self) -> u32 {
        self.active_epoch
    }

    /// The epochs present, oldest first, with their creation time (RFC 3339).
    pub fn epochs(&self) -> Vec<(u32, Option<String>)> {
        let mut out: Vec<_> = self
            .epochs
            .iter()
            .map(|e| (e.epoch, e.created_at.clone()))
            .collect();
        out.sort_by_key(|(n, _)| *n);
        out
    }

    pub fn retired(&self) -> &[RetiredEpoch] {
        &self.retired
    }

    pub fn identity_bound_epoch(&self) -> Option<u32> {
        self.identity_bound_epoch
    }

    fn next_epoch(&self) -> u32 {
        self.epochs
            .iter()
            .map(|e| e.epoch)
            .chain(self.retired.iter().map(|r| r.epoch))
            .max()
            .unwrap_or(0)
            + 1
    }

    fn from_legacy(file: LegacyKeyringFile) -> anyhow::Result<Self> {
        let first = file
            .keys
            .iter()
            .min_by_key(|k| k.version)
            .context("the keyring holds no master key")?;
        Ok(Self {
            format: KEYRING_FORMAT,
            identity_root: SecretText(first.secret.0.clone()),
            identity_bound_epoch: Some(first.version),
            active_epoch: file.active_version,
            epochs: file
                .keys
                .iter()
                .map(|k| EpochEntry {
                    epoch: k.version,
                    secret: SecretText(k.secret.0.clone()),
                    created_at: None,
                })
                .collect(),
            retired: Vec::new(),
        })
    }

    fn keyring(&self, transform: MasterSecret) -> anyhow::Result<Keyring> {
        let mut epochs = BTreeMap::new();
        for entry in &self.epochs {
            let secret = decode32(&entry.secret.0)
                .with_context(|| format!("keyring epoch {} is not 32 base64 bytes", entry.epoch))?;
            let created_at_unix_ms = match &entry.created_at {
                Some(t) => Some(
                    chrono::DateTime::parse_from_rfc3339(t)
                        .with_context(|| {
                            format!("keyring epoch {}: created_at is not RFC 3339", entry.epoch)
                        })?
                        .timestamp_millis(),
                ),
                None => None,
            };
            let epoch = KekEpoch {
                secret,
                created_at_unix_ms,
            };
            if epochs.insert(entry.epoch, epoch).is_some() {
                bail!("keyring epoch {} appears twice", entry.epoch);
            }
        }
        if let Some(r) = self.retired.iter().find(|r| epochs.contains_key(&r.epoch)) {
            bail!("keyring epoch {} is both present and retired", r.epoch);
        }
        let root =
            decode32(&self.identity_root.0).context("identity_root is not 32 base64 bytes")?;
        Ok(Keyring::new(
            root,
            self.active_epoch,
            epochs,
            self.identity_bound_epoch,
            transform,
        )?)
    }
}

/// Reads a keyring file in either format.
pub fn read_keyring(path: &Path) -> anyhow::Result<KeyringDoc> {
    parse_keyring(path, &read_secret(path)?)
}

fn parse_keyring(path: &Path, bytes: &[u8]) -> anyhow::Result<KeyringDoc> {
    #[derive(Deserialize)]
    struct Probe {
        format: Option<u32>,
    }
    let invalid = || format!("{} is not a valid keyring file", path.display());
    let probe: Probe = serde_json::from_slice(bytes).with_context(invalid)?;
    match probe.format {
        Some(KEYRING_FORMAT) => Ok(serde_json::from_slice(bytes).with_context(invalid)?),
        Some(other) => bail!(
            "{}: keyring format {other} is not supported (this version reads 2 and the format before it)",
            path.display()
        ),
        None => KeyringDoc::from_legacy(serde_json::from_slice(bytes).with_context(invalid)?),
    }
}

/// Adds a new KEK epoch and makes it active; returns its number. The file is
/// rewritten in format 2.
pub fn rotate_keyring(path: &Path) -> anyhow::Result<u32> {
    let mut doc = read_keyring(path)?;
    let epoch = doc.next_epoch();
    let secret = Zeroizing::new(random_bytes::<32>()?);
    doc.epochs.push(EpochEntry {
        epoch,
        secret: SecretText(B64.encode(secret.as_slice())),
        created_at: Some(rfc3339(chrono::Utc::now())),
    });
    doc.active_epoch = epoch;
    write_keyring(path, &doc)?;
    Ok(epoch)
}

/// Removes an epoch's secret from the file, recording its retirement. The caller
/// has checked that no DEK is wrapped under it any more; this refuses only what
/// the file itself shows to be wrong.
pub fn retire_epoch(path: &Path, epoch: u32) -> anyhow::Result<()> {
    let mut doc = read_keyring(path)?;
    if doc.active_epoch == epoch {
        bail!("epoch {epoch} is the active epoch; rotate first");
    }
    let before = doc.epochs.len();
    doc.epochs.retain(|e| e.epoch != epoch);
    if doc.epochs.len() == before {
        bail!("epoch {epoch} is not in the keyring");
    }
    doc.retired.push(RetiredEpoch {
        epoch,
        retired_at: rfc3339(chrono::Utc::now()),
    });
    write_keyring(path, &doc)
}

fn write_keyring(path: &Path, doc: &KeyringDoc) -> anyhow::Result<()> {
    let json = Zeroizing::new(serde_json::to_string_pretty(doc)?);
    replace_secret(path, json.as_bytes())
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealingFile {
    keys: Vec<SealingEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealingEntry {
    key_id: String,
    suite: String,
    seed: SecretText,
    not_after: String,
}

/// The public half of the sealing keys, in the JSON shape `grpcurl` prints for
/// `GetSealingKeys`, so `facevault seal` accepts either.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicSealingKeys {
    pub keys: Vec<PublicSealingKey>,
    /// Ed25519 key verifying deletion receipts (base64).
    #[serde(default)]
    pub receipt_verification_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicSealingKey {
    pub key_id: String,
    pub suite: String,
    pub public_key: String,
    #[serde(default)]
    pub not_after: Option<String>,
}

pub fn load(paths: &KeyPaths) -> anyhow::Result<KeyMaterial> {
    let mut fingerprint = ring::digest::Context::new(&ring::digest::SHA256);
    let keyring_bytes = read_secret(&paths.keyring)?;
    fingerprint.update(&keyring_bytes);
    let keyring_doc = parse_keyring(&paths.keyring, &keyring_bytes)?;
    let transform_bytes = read_secret(&paths.transform_secret)?;
    fingerprint.update(&transform_bytes);
    let transform = decode32(std::str::from_utf8(&transform_bytes)?.trim()).with_context(|| {
        format!(
            "{} must hold 32 base64 bytes",
            paths.transform_secret.display()
        )
    })?;
    let keyring = keyring_doc.keyring(transform)?;
    let sealing_bytes = read_secret(&paths.sealing_keys)?;
    fingerprint.update(&sealing_bytes);
    let sealing = parse_sealing(&paths.sealing_keys, &sealing_bytes)?;
    let receipt_bytes = read_secret(&paths.receipt_signing_key)?;
    fingerprint.update(&receipt_bytes);
    Ok(KeyMaterial {
        keyring,
        sealing,
        receipt_signer: parse_receipt_signer(&receipt_bytes)?,
        fingerprint: fingerprint
            .finish()
            .as_ref()
            .try_into()
            .context("digest length")?,
    })
}

fn parse_sealing(path: &Path, bytes: &[u8]) -> anyhow::Result<SealingKeys> {
    let sealing_file: SealingFile = serde_json::from_slice(bytes)
        .with_context(|| format!("{} is not a valid sealing key file", path.display()))?;
    let mut keys = Vec::new();
    for entry in sealing_file.keys {
        let suite = Suite::parse(&entry.suite)
            .with_context(|| format!("sealing key {}: unknown suite", entry.key_id))?;
        let seed = decode32(&entry.seed.0).with_context(|| {
            format!("sealing key {}: seed is not 32 base64 bytes", entry.key_id)
        })?;
        let not_after = chrono::DateTime::parse_from_rfc3339(&entry.not_after)
            .with_context(|| format!("sealing key {}: not_after is not RFC 3339", entry.key_id))?;
        if !valid_key_id(&entry.key_id) {
            bail!("sealing key id must be 1-64 characters of [A-Za-z0-9_.-]");
        }
        keys.push(OpeningKey::from_seed(
            entry.key_id,
            suite,
            &seed,
            not_after.timestamp_millis(),
        ));
    }
    if keys.is_empty() {
        bail!("{} holds no sealing key", path.display());
    }
    Ok(SealingKeys::new(keys))
}

fn parse_receipt_signer(bytes: &[u8]) -> anyhow::Result<Ed25519KeyPair> {
    let pkcs8 = Zeroizing::new(
        B64.decode(std::str::from_utf8(bytes)?.trim())
            .context("the receipt signing key is not base64")?,
    );
    Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|_| anyhow::anyhow!("the receipt signing key is not an Ed25519 PKCS#8 key"))
}

/// Writes a fresh set of key files into `dir`; refuses to overwrite any existing
/// one (losing a keyring loses every template).
pub fn generate(dir: &Path, sealing_validity_days: i64) -> anyhow::Result<KeyPaths> {
    let paths = KeyPaths::in_dir(dir);
    for path in [
        &paths.keyring,
        &paths.transform_secret,
        &paths.sealing_keys,
        &paths.receipt_signing_key,
    ] {
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite key material",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = Zeroizing::new(random_bytes::<32>()?);
    let first = Zeroizing::new(random_bytes::<32>()?);
    let keyring = KeyringDoc {
        format: KEYRING_FORMAT,
        identity_root: SecretText(B64.encode(root.as_slice())),
        identity_bound_epoch: None,
        active_epoch: 1,
        epochs: vec![EpochEntry {
            epoch: 1,
            secret: SecretText(B64.encode(first.as_slice())),
            created_at: Some(rfc3339(chrono::Utc::now())),
        }],
        retired: Vec::new(),
    };
    write_secret(
        &paths.keyring,
        Zeroizing::new(serde_json::to_string_pretty(&keyring)?).as_bytes(),
    )?;
    let transform = Zeroizing::new(random_bytes::<32>()?);
    write_secret(
        &paths.transform_secret,
        format!("{}\n", B64.encode(transform.as_slice())).as_bytes(),
    )?;

    write_secret(
        &paths.sealing_keys,
        Zeroizing::new(serde_json::to_string_pretty(&SealingFile {
            keys: new_sealing_keys(chrono::Utc::now(), sealing_validity_days)?,
        })?)
        .as_bytes(),
    )?;

    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("cannot generate the receipt signing key"))?;
    write_secret(
        &paths.receipt_signing_key,
        format!("{}\n", B64.encode(pkcs8.as_ref())).as_bytes(),
    )?;

    let material = load(&paths)?;
    write_public(
        &dir.join(SEALING_PUBLIC_FILE),
        &material.sealing,
        Some(&material.receipt_signer),
    )?;
    Ok(paths)
}

/// One fresh sealing key per suite, valid for `validity_days` from `now`.
fn new_sealing_keys(
    now: chrono::DateTime<chrono::Utc>,
    validity_days: i64,
) -> anyhow::Result<Vec<SealingEntry>> {
    let not_after = rfc3339(now + chrono::Duration::days(validity_days));
    let stamp = now.format("%Y%m%d");
    let mut entries = Vec::new();
    for (suite, prefix) in [
        (Suite::X25519Sha256Aes256Gcm, "x25519"),
        (Suite::XWingSha256Aes256Gcm, "xwing"),
    ] {
        let seed = Zeroizing::new(random_bytes::<32>()?);
        entries.push(SealingEntry {
            key_id: format!("{prefix}-{stamp}-{}", hex::encode(random_bytes::<3>()?)),
            suite: suite.as_str().to_owned(),
            seed: SecretText(B64.encode(seed.as_slice())),
            not_after: not_after.clone(),
        });
    }
    Ok(entries)
}

/// Adds a new sealing key per suite (valid `validity_days`), and ends every
/// older key's validity at `now + overlap` at the latest: both are published
/// meanwhile, so clients holding the old public key have that long to fetch the
/// new one. Keys already past their `not_after` are removed from the file (their
/// secrets destroyed). `sealing-public.json` beside the file is rewritten.
pub fn rotate_sealing(
    dir: &Path,
    validity_days: i64,
    overlap: chrono::Duration,
) -> anyhow::Result<Vec<String>> {
    let paths = KeyPaths::in_dir(dir);
    let mut file: SealingFile = serde_json::from_slice(&read_secret(&paths.sealing_keys)?)
        .with_context(|| {
            format!(
                "{} is not a valid sealing key file",
                paths.sealing_keys.display()
            )
        })?;
    let now = chrono::Utc::now();
    let cutoff = now + overlap;
    let mut kept = Vec::new();
    for mut entry in std::mem::take(&mut file.keys) {
        let not_after = chrono::DateTime::parse_from_rfc3339(&entry.not_after)
            .with_context(|| format!("sealing key {}: not_after is not RFC 3339", entry.key_id))?
            .with_timezone(&chrono::Utc);
        if not_after <= now {
            continue;
        }
        if not_after > cutoff {
            entry.not_after = rfc3339(cutoff);
        }
        kept.push(entry);
    }
    let fresh = new_sealing_keys(now, validity_days)?;
    let ids = fresh.iter().map(|e| e.key_id.clone()).collect();
    kept.extend(fresh);
    file.keys = kept;
    let json = Zeroizing::new(serde_json::to_string_pretty(&file)?);
    // Checked as the service will load it before anything is written.
    let sealing = parse_sealing(&paths.sealing_keys, json.as_bytes())?;
    // Only the sealing keys are needed here; the receipt key, when it is in the
    // same directory, adds its public half to the public file.
    let receipt_signer = match paths.receipt_signing_key.exists() {
        true => Some(parse_receipt_signer(&read_secret(
            &paths.receipt_signing_key,
        )?)?),
        false => None,
    };
    replace_secret(&paths.sealing_keys, json.as_bytes())?;
    write_public(
        &dir.join(SEALING_PUBLIC_FILE),
        &sealing,
        receipt_signer.as_ref(),
    )?;
    Ok(ids)
}

/// `sealing-public.json`: what a client needs to seal, safe to share.
pub fn write_public(
    path: &Path,
    sealing: &SealingKeys,
    receipt_signer: Option<&Ed25519KeyPair>,
) -> anyhow::Result<()> {
    use ring::signature::KeyPair as _;
    let mut keys = public_keys(sealing, chrono::Utc::now().timestamp_millis());
    keys.receipt_verification_key =
        receipt_signer.map(|signer| B64.encode(signer.public_key().as_ref()));
    let json = serde_json::to_string_pretty(&keys)?;
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn public_keys(sealing: &SealingKeys, now_unix_ms: i64) -> PublicSealingKeys {
    PublicSealingKeys {
        keys: sealing
            .current(now_unix_ms)
            .into_iter()
            .map(|k| PublicSealingKey {
                key_id: k.key_id.clone(),
                suite: k.suite.as_str().to_owned(),
                public_key: B64.encode(&k.public_key),
                not_after: chrono::DateTime::from_timestamp_millis(k.not_after_unix_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            })
            .collect(),
        receipt_verification_key: None,
    }
}

fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn decode32(text: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(B64.decode(text.trim()).context("not base64")?);
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        bail!("expected 32 bytes");
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Reads a secret file, refusing one that users other than the owner and group may
/// read or write: a leaked keyring is a leaked biometric database.
pub fn read_secret(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    check_private(path)?;
    Ok(Zeroizing::new(std::fs::read(path).with_context(|| {
        format!("cannot read {}", path.display())
    })?))
}

pub fn check_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.permissions().mode() & 0o007 != 0 {
            bail!(
                "{} is accessible to other users (mode {:o}); run `chmod 600` on it (or set defaultMode 0440 on the Secret volume)",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    Ok(())
}

pub fn write_secret(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Replaces a secret file atomically: the new contents go to a fresh 0600 file
/// beside it, which is synced and renamed over the old one, so a reader sees the
/// old file or the new one, never a torn one. The old file must be private.
pub fn replace_secret(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    check_private(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("a key file path must name a file")?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.tmp", hex::encode(random_bytes::<6>()?)));
    let written = write_secret(&temp, contents).and_then(|()| {
        std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    // The rename itself is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let paths = generate(dir.path(), 365).unwrap();
        let material = load(&paths).unwrap();
        assert_eq!(
            material
                .sealing
                .current(chrono::Utc::now().timestamp_millis())
                .len(),
            2
        );
        assert!(generate(dir.path(), 365).is_err(), "must not overwrite");
        let public: PublicSealingKeys =
            serde_json::from_slice(&std::fs::read(dir.path().join(SEALING_PUBLIC_FILE)).unwrap())
                .unwrap();
        assert_eq!(public.keys.len(), 2);
    }

    #[test]
    fn keygen_writes_an_identity_root_apart_from_the_first_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let paths = generate(dir.path(), 365).unwrap();
        let doc = read_keyring(&paths.keyring).unwrap();
        assert_eq!(doc.active_epoch(), 1);
        assert_eq!(doc.identity_bound_epoch(), None);
        assert_ne!(doc.identity_root.0, doc.epochs[0].secret.0);
        assert!(doc.epochs[0].created_at.is_some());
    }

    /// The format before key epochs loads with its first version as the identity
    /// root; rotation rewrites it in format 2, atomically and 0600, keeping the
    /// pseudonyms.
    #[cfg(unix)]
    #[test]
    fn a_legacy_keyring_moves_to_format_2_on_rotation() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let paths = generate(dir.path(), 365).unwrap();
        std::fs::remove_file(&paths.keyring).unwrap();
        let (one, two) = (B64.encode([1u8; 32]), B64.encode([2u8; 32]));
        write_secret(
            &paths.keyring,
            format!(
                r#"{{"active_version": 2, "keys": [{{"version": 2, "secret": "{two}"}}, {{"version": 1, "secret": "{one}"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let tenant = crate::domain::Tenant::try_from("demo").unwrap();
        let subject = crate::domain::SubjectId::try_from("alice".to_owned()).unwrap();
        let legacy = load(&paths).unwrap();
        assert_eq!(legacy.keyring.identity_bound_epoch(), Some(1));
        assert_eq!(legacy.keyring.active_epoch(), 2);
        let pseudonym = legacy
            .keyring
            .tenant(&tenant)
            .unwrap()
            .subject_ref(&subject);

        assert_eq!(rotate_keyring(&paths.keyring).unwrap(), 3);
        let mode = std::fs::metadata(&paths.keyring)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file is left behind");
        let rotated = load(&paths).unwrap();
        assert_eq!(rotated.keyring.active_epoch(), 3);
        assert_eq!(
            rotated
                .keyring
                .tenant(&tenant)
                .unwrap()
                .subject_ref(&subject),
            pseudonym
        );
        retire_epoch(&paths.keyring, 1).unwrap();
        let retired = load(&paths).unwrap();
        assert_eq!(retired.keyring.oldest_epoch(), 2);
        assert_eq!(
            retired.keyring.identity_bound_epoch(),
            Some(1),
            "remembered after retirement"
        );
        assert_eq!(
            retired
                .keyring
                .tenant(&tenant)
                .unwrap()
                .subject_ref(&subject),
            pseudonym
        );
        assert!(
            retire_epoch(&paths.keyring, 3)
                .unwrap_err()
                .to_string()
                .contains("active")
        );
        assert!(
            retire_epoch(&paths.keyring, 1)
                .unwrap_err()
                .to_string()
                .contains("not in")
        );
    }

    #[test]
    fn unknown_keyring_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYRING_FILE);
        write_secret(&path, br#"{"format": 3}"#).unwrap();
        let err = read_keyring(&path).err().unwrap().to_string();
        assert!(err.contains("format 3 is not supported"), "{err}");
    }

    /// Rotation needs only the sealing file: the keyring and the transform
    /// secret stay apart (split knowledge).
    #[test]
    fn sealing_rotation_overlaps_then_drops_old_keys() {
        let full = tempfile::tempdir().unwrap();
        let paths = generate(full.path(), 365).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sealing = dir.path().join(SEALING_FILE);
        write_secret(&sealing, &std::fs::read(&paths.sealing_keys).unwrap()).unwrap();
        let new_ids = rotate_sealing(dir.path(), 30, chrono::Duration::seconds(60)).unwrap();
        assert_eq!(new_ids.len(), 2);
        let now = chrono::Utc::now().timestamp_millis();
        let keys = parse_sealing(&sealing, &std::fs::read(&sealing).unwrap()).unwrap();
        let current = keys.current(now);
        assert_eq!(current.len(), 4, "old and new are both published");
        for key in &current {
            let old = !new_ids.contains(&key.key_id);
            let ends_soon = key.not_after_unix_ms <= now + 61_000;
            assert_eq!(old, ends_soon, "{}", key.key_id);
        }
        assert_eq!(
            keys.current(now + 120_000).len(),
            2,
            "old keys end after the overlap"
        );
        let public: PublicSealingKeys =
            serde_json::from_slice(&std::fs::read(dir.path().join(SEALING_PUBLIC_FILE)).unwrap())
                .unwrap();
        assert_eq!(public.keys.len(), 4);
        assert!(public.receipt_verification_key.is_none());
        // A second rotation with no overlap drops the first generation at once
        // from what is accepted.
        rotate_sealing(dir.path(), 30, chrono::Duration::zero()).unwrap();
        let keys = parse_sealing(&sealing, &std::fs::read(&sealing).unwrap()).unwrap();
        assert_eq!(keys.current(chrono::Utc::now().timestamp_millis()).len(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn refuses_world_readable_secrets() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let paths = generate(dir.path(), 365).unwrap();
        std::fs::set_permissions(&paths.keyring, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&paths).err().unwrap().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
