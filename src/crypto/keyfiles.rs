//! On-disk formats of the secrets, all mounted files (Kubernetes Secrets), never
//! Redis. Each is small JSON or one base64 line so an operator can inspect the
//! shape without tooling; loading refuses files that others can read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::keyring::Keyring;
use super::random_bytes;
use super::sealing::{OpeningKey, SealingKeys, Suite};

pub const KEYRING_FILE: &str = "keyring.json";
pub const TRANSFORM_FILE: &str = "transform.key";
pub const SEALING_FILE: &str = "sealing-keys.json";
pub const SEALING_PUBLIC_FILE: &str = "sealing-public.json";
pub const RECEIPT_FILE: &str = "receipt-signing.key";

/// Where the key files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPaths {
    /// Versioned master keyring.
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
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    active_version: u32,
    keys: Vec<MasterKeyEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterKeyEntry {
    version: u32,
    secret: String,
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
    seed: String,
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
    let keyring_file: KeyringFile = serde_json::from_slice(&read_secret(&paths.keyring)?)
        .with_context(|| format!("{} is not a valid keyring file", paths.keyring.display()))?;
    let mut masters = BTreeMap::new();
    for entry in keyring_file.keys {
        let secret = decode32(&entry.secret)
            .with_context(|| format!("keyring version {} is not 32 base64 bytes", entry.version))?;
        if masters.insert(entry.version, secret).is_some() {
            bail!("keyring version {} appears twice", entry.version);
        }
    }
    let transform = decode32(std::str::from_utf8(&read_secret(&paths.transform_secret)?)?.trim())
        .with_context(|| {
        format!(
            "{} must hold 32 base64 bytes",
            paths.transform_secret.display()
        )
    })?;
    let keyring = Keyring::new(keyring_file.active_version, masters, transform)?;

    let sealing_file: SealingFile = serde_json::from_slice(&read_secret(&paths.sealing_keys)?)
        .with_context(|| {
            format!(
                "{} is not a valid sealing key file",
                paths.sealing_keys.display()
            )
        })?;
    let mut keys = Vec::new();
    for entry in sealing_file.keys {
        let suite = Suite::parse(&entry.suite)
            .with_context(|| format!("sealing key {}: unknown suite", entry.key_id))?;
        let seed = decode32(&entry.seed).with_context(|| {
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
        bail!("{} holds no sealing key", paths.sealing_keys.display());
    }
    let pkcs8 = Zeroizing::new(
        B64.decode(std::str::from_utf8(&read_secret(&paths.receipt_signing_key)?)?.trim())
            .context("the receipt signing key is not base64")?,
    );
    let receipt_signer = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .map_err(|_| anyhow::anyhow!("the receipt signing key is not an Ed25519 PKCS#8 key"))?;
    Ok(KeyMaterial {
        keyring,
        sealing: SealingKeys::new(keys),
        receipt_signer,
    })
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
    let master = Zeroizing::new(random_bytes::<32>()?);
    let keyring = KeyringFile {
        active_version: 1,
        keys: vec![MasterKeyEntry {
            version: 1,
            secret: B64.encode(master.as_slice()),
        }],
    };
    write_secret(
        &paths.keyring,
        serde_json::to_string_pretty(&keyring)?.as_bytes(),
    )?;
    let transform = Zeroizing::new(random_bytes::<32>()?);
    write_secret(
        &paths.transform_secret,
        format!("{}\n", B64.encode(transform.as_slice())).as_bytes(),
    )?;

    let now = chrono::Utc::now();
    let not_after = (now + chrono::Duration::days(sealing_validity_days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
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
            seed: B64.encode(seed.as_slice()),
            not_after: not_after.clone(),
        });
    }
    write_secret(
        &paths.sealing_keys,
        serde_json::to_string_pretty(&SealingFile { keys: entries })?.as_bytes(),
    )?;

    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("cannot generate the receipt signing key"))?;
    write_secret(
        &paths.receipt_signing_key,
        format!("{}\n", B64.encode(pkcs8.as_ref())).as_bytes(),
    )?;

    let material = load(&paths)?;
    write_public(&dir.join(SEALING_PUBLIC_FILE), &material)?;
    Ok(paths)
}

/// `sealing-public.json`: what a client needs to seal, safe to share.
pub fn write_public(path: &Path, material: &KeyMaterial) -> anyhow::Result<()> {
    use ring::signature::KeyPair as _;
    let mut keys = public_keys(&material.sealing, chrono::Utc::now().timestamp_millis());
    keys.receipt_verification_key = Some(B64.encode(material.receipt_signer.public_key().as_ref()));
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
