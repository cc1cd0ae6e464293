//! The client side: build the `EmbeddingPayload`, seal it with HPKE to one of the
//! service's public keys (any RFC 9180 library can do the same; see
//! docs/protocol.md), and call the service over mTLS with typed methods.
//!
//! Available without the server: `default-features = false, features = ["client"]`.

use prost::Message as _;
use zeroize::Zeroizing;

use crate::crypto::sealing::{self, SealedFor, SealingError, Suite};
use crate::proto;

/// A public sealing key as published by `GetSealingKeys`.
#[derive(Debug, Clone)]
pub struct SealingTarget {
    pub key_id: String,
    pub suite: Suite,
    pub public_key: Vec<u8>,
}

pub struct PayloadSpec<'a> {
    pub op: SealedFor,
    pub tenant: &'a str,
    pub subject_id: &'a str,
    pub model: &'a str,
    pub values: &'a [f32],
    pub sealed_at_unix_ms: i64,
}

/// One-shot sealing: one HPKE encapsulation per embedding.
pub fn seal_embedding(
    target: &SealingTarget,
    spec: &PayloadSpec<'_>,
) -> Result<proto::SealedEmbedding, SealingError> {
    let plaintext = payload(spec)?;
    let aad = sealing::aad(spec.op, spec.tenant, spec.subject_id);
    let (enc, ciphertext) = sealing::seal(target.suite, &target.public_key, &aad, &plaintext)?;
    Ok(proto::SealedEmbedding {
        suite: target.suite.as_str().to_owned(),
        key_id: target.key_id.clone(),
        enc,
        ciphertext,
        session_nonce: Vec::new(),
    })
}

/// The serialized `EmbeddingPayload`, with a fresh random nonce.
fn payload(spec: &PayloadSpec<'_>) -> Result<Zeroizing<Vec<u8>>, SealingError> {
    let nonce = crate::crypto::random_bytes::<16>().map_err(|_| SealingError::Seal)?;
    let payload = proto::EmbeddingPayload {
        model: spec.model.to_owned(),
        values: spec.values.to_vec(),
        sealed_at_unix_ms: spec.sealed_at_unix_ms,
        nonce: nonce.to_vec(),
    };
    let plaintext = Zeroizing::new(payload.encode_to_vec());
    let mut values = payload.values;
    zeroize::Zeroize::zeroize(&mut values);
    Ok(plaintext)
}

/// A sealing session (docs/protocol.md): one HPKE setup, then one AES-256-GCM
/// seal per embedding. It belongs to one tenant and one service key.
pub struct SealingSession {
    target: SealingTarget,
    tenant: String,
    enc: Vec<u8>,
    key: Zeroizing<[u8; 32]>,
    started: std::time::Instant,
    roll_over_after: std::time::Duration,
    messages: u32,
}

impl SealingSession {
    /// A client starts a new session after this long at most ...
    pub const ROLL_OVER_AFTER: std::time::Duration = std::time::Duration::from_secs(240);
    /// ... or after this many messages, far under the server's cap (2^24).
    pub const ROLL_OVER_MESSAGES: u32 = 1 << 20;

    /// A new session; it rolls over after half the server's published session
    /// TTL (`GetSealingKeysResponse.session_ttl_seconds`) or `ROLL_OVER_AFTER`,
    /// whichever is sooner.
    pub fn start(
        target: &SealingTarget,
        tenant: &str,
        server_ttl: std::time::Duration,
    ) -> Result<Self, SealingError> {
        let (enc, key) = sealing::start_session(target.suite, &target.public_key, tenant)?;
        Ok(Self {
            target: target.clone(),
            tenant: tenant.to_owned(),
            enc,
            key,
            started: std::time::Instant::now(),
            roll_over_after: (server_ttl / 2).min(Self::ROLL_OVER_AFTER),
            messages: 0,
        })
    }

    /// Whether this session may still seal for `target` and `tenant`.
    pub fn usable_for(&self, target: &SealingTarget, tenant: &str) -> bool {
        self.target.key_id == target.key_id
            && self.tenant == tenant
            && self.started.elapsed() < self.roll_over_after
            && self.messages < Self::ROLL_OVER_MESSAGES
    }

    pub fn seal(&mut self, spec: &PayloadSpec<'_>) -> Result<proto::SealedEmbedding, SealingError> {
        if spec.tenant != self.tenant {
            return Err(SealingError::Seal);
        }
        let plaintext = payload(spec)?;
        let aad = sealing::aad(spec.op, spec.tenant, spec.subject_id);
        let nonce = crate::crypto::random_bytes::<{ crate::crypto::sessions::NONCE_LEN }>()
            .map_err(|_| SealingError::Seal)?;
        let ciphertext = crate::crypto::sessions::seal(&self.key, &nonce, &aad, &plaintext)
            .ok_or(SealingError::Seal)?;
        self.messages += 1;
        Ok(proto::SealedEmbedding {
            suite: self.target.suite.as_str().to_owned(),
            key_id: self.target.key_id.clone(),
            enc: self.enc.clone(),
            ciphertext,
            session_nonce: nonce.to_vec(),
        })
    }
}

/// How to reach a facevault deployment.
#[derive(Clone)]
pub struct ClientConfig {
    /// e.g. `https://facevault.prod.svc:50051`
    pub endpoint: String,
    /// CA bundle that signed the server certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// This backend's client certificate and key (PEM), SAN
    /// `spiffe://<td>/tenant/<tenant>/role/app`.
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Server name to verify, when it differs from the endpoint's host.
    pub server_name: Option<String>,
    /// The tenant of the client certificate (it is part of the sealing AAD).
    pub tenant: String,
    /// Sealing suite to use; X-Wing is the post-quantum hybrid.
    pub suite: Suite,
    /// Seal through sealing sessions (one KEM per session instead of one per
    /// call; see docs/protocol.md). The default; turn off for one-shot HPKE.
    pub sealing_sessions: bool,
    pub timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error(transparent)]
    Status(#[from] tonic::Status),
    #[error("the service publishes no key of the configured suite")]
    NoKey,
    #[error(transparent)]
    Sealing(#[from] SealingError),
}

/// A typed facevault client. Sealing keys are fetched once and cached; a call
/// refused because its key was retired, or its sealing session expired on the
/// server, refreshes them and is sealed again in a new session (the refusal
/// came before any effect, so this is safe). Only idempotent calls are retried on
/// `UNAVAILABLE`: a verify is never replayed, as it may already have counted.
pub struct FaceVault {
    inner: proto::face_vault_client::FaceVaultClient<tonic::transport::Channel>,
    tenant: String,
    suite: Suite,
    target: tokio::sync::RwLock<Option<SealingTarget>>,
    /// The current sealing session, when `sealing_sessions` is on.
    session: Option<std::sync::Mutex<Option<SealingSession>>>,
    /// The service's published session TTL, in ms.
    session_ttl_ms: std::sync::atomic::AtomicU64,
}

const IDEMPOTENT_RETRIES: usize = 2;

impl FaceVault {
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&config.ca_pem))
            .identity(Identity::from_pem(&config.cert_pem, &config.key_pem));
        if let Some(name) = &config.server_name {
            tls = tls.domain_name(name.clone());
        }
        let channel = Channel::from_shared(config.endpoint.clone())
            .map_err(|_| tonic::Status::invalid_argument("endpoint is not a URI"))?
            .tls_config(tls)?
            .timeout(config.timeout)
            .connect()
            .await?;
        Ok(Self {
            inner: proto::face_vault_client::FaceVaultClient::new(channel),
            tenant: config.tenant,
            suite: config.suite,
            target: tokio::sync::RwLock::new(None),
            session: config.sealing_sessions.then(|| std::sync::Mutex::new(None)),
            session_ttl_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    async fn sealing_target(&self, refresh: bool) -> Result<SealingTarget, ClientError> {
        if !refresh && let Some(t) = self.target.read().await.as_ref() {
            return Ok(t.clone());
        }
        let keys = self
            .idempotent(
                |mut c| async move { c.get_sealing_keys(proto::GetSealingKeysRequest {}).await },
            )
            .await?;
        self.session_ttl_ms.store(
            u64::from(keys.session_ttl_seconds) * 1000,
            std::sync::atomic::Ordering::Relaxed,
        );
        let key = keys
            .keys
            .into_iter()
            .find(|k| k.suite == self.suite.as_str())
            .ok_or(ClientError::NoKey)?;
        let target = SealingTarget {
            key_id: key.key_id,
            suite: self.suite,
            public_key: key.public_key,
        };
        *self.target.write().await = Some(target.clone());
        Ok(target)
    }

    async fn seal(
        &self,
        op: SealedFor,
        subject_id: &str,
        model: &str,
        values: &[f32],
        refresh: bool,
    ) -> Result<proto::SealedEmbedding, ClientError> {
        let target = self.sealing_target(refresh).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let spec = PayloadSpec {
            op,
            tenant: &self.tenant,
            subject_id,
            model,
            values,
            sealed_at_unix_ms: now,
        };
        let Some(session) = &self.session else {
            return Ok(seal_embedding(&target, &spec)?);
        };
        let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
        let current = match session.take() {
            Some(s) if !refresh && s.usable_for(&target, &self.tenant) => s,
            _ => SealingSession::start(
                &target,
                &self.tenant,
                std::time::Duration::from_millis(
                    self.session_ttl_ms
                        .load(std::sync::atomic::Ordering::Relaxed),
                ),
            )?,
        };
        Ok(session.insert(current).seal(&spec)?)
    }

    /// Runs a call, retrying on UNAVAILABLE: only for calls whose repetition has
    /// no further effect.
    async fn idempotent<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(proto::face_vault_client::FaceVaultClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            match call(self.inner.clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable && attempt < IDEMPOTENT_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// True when the service refused the envelope's key (retired or rotated) or
    /// its sealing session (expired or full): refusals that precede any effect.
    fn stale_key(status: &tonic::Status) -> bool {
        status.code() == tonic::Code::InvalidArgument
            && (status.message().contains("sealing key")
                || status.message().contains("sealing session"))
    }

    pub async fn enroll(
        &self,
        subject_id: &str,
        model: &str,
        values: &[f32],
        consent: proto::Consent,
        replace: bool,
    ) -> Result<proto::EnrollResponse, ClientError> {
        for refresh in [false, true] {
            let request = proto::EnrollRequest {
                subject_id: subject_id.to_owned(),
                embedding: Some(
                    self.seal(SealedFor::Enroll, subject_id, model, values, refresh)
                        .await?,
                ),
                consent: Some(consent.clone()),
                replace,
            };
            match self.inner.clone().enroll(request).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if !refresh && Self::stale_key(&s) => continue,
                Err(s) => return Err(s.into()),
            }
        }
        Err(ClientError::NoKey)
    }

    pub async fn verify(
        &self,
        subject_id: &str,
        model: &str,
        values: &[f32],
        purpose: &str,
    ) -> Result<proto::VerifyResponse, ClientError> {
        for refresh in [false, true] {
            let request = proto::VerifyRequest {
                subject_id: subject_id.to_owned(),
                probe: Some(
                    self.seal(SealedFor::Verify, subject_id, model, values, refresh)
                        .await?,
                ),
                purpose: purpose.to_owned(),
            };
            match self.inner.clone().verify(request).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if !refresh && Self::stale_key(&s) => continue,
                Err(s) => return Err(s.into()),
            }
        }
        Err(ClientError::NoKey)
    }

    pub async fn delete_subject(
        &self,
        subject_id: &str,
    ) -> Result<proto::DeletionTicket, ClientError> {
        let subject_id = subject_id.to_owned();
        self.idempotent(|mut c| {
            let subject_id = subject_id.clone();
            async move {
                c.delete_subject(proto::DeleteSubjectRequest { subject_id })
                    .await
            }
        })
        .await
    }

    pub async fn withdraw_consent(
        &self,
        subject_id: &str,
        purposes: &[&str],
    ) -> Result<proto::DeletionTicket, ClientError> {
        let request = proto::WithdrawConsentRequest {
            subject_id: subject_id.to_owned(),
            purposes: purposes.iter().map(|p| (*p).to_owned()).collect(),
        };
        self.idempotent(|mut c| {
            let request = request.clone();
            async move { c.withdraw_consent(request).await }
        })
        .await
    }

    /// Cancelling twice returns the same ticket, so this is safe to retry.
    pub async fn cancel_account(
        &self,
        subject_id: &str,
        reason: &str,
    ) -> Result<proto::DeletionTicket, ClientError> {
        let request = proto::CancelAccountRequest {
            subject_id: subject_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.idempotent(|mut c| {
            let request = request.clone();
            async move { c.cancel_account(request).await }
        })
        .await
    }

    pub async fn deletion_ticket(
        &self,
        ticket_id: &str,
    ) -> Result<proto::DeletionTicket, ClientError> {
        let ticket_id = ticket_id.to_owned();
        self.idempotent(|mut c| {
            let ticket_id = ticket_id.clone();
            async move {
                c.get_deletion_ticket(proto::GetDeletionTicketRequest { ticket_id })
                    .await
            }
        })
        .await
    }

    pub async fn compliance_report(&self) -> Result<proto::ComplianceReport, ClientError> {
        self.idempotent(|mut c| async move {
            c.get_compliance_report(proto::GetComplianceReportRequest {})
                .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use hpke::{Deserializable as _, Kem as _, Serializable as _};
    use serde_json::Value;

    use super::*;
    use crate::crypto::sealing::{OpeningKey, SealingKeys, SuppliedRng};

    const VECTOR: &str = include_str!("../docs/test-vectors/sealing-x25519.json");

    fn hex_field(v: &Value, name: &str) -> Vec<u8> {
        hex::decode(v[name].as_str().unwrap()).unwrap()
    }

    /// The byte-exact vector in docs/protocol.md, also checked by the Python client
    /// with an independent HPKE implementation.
    #[test]
    fn sealing_matches_the_published_test_vector() {
        use hpke::aead::AesGcm256;
        use hpke::kdf::HkdfSha256;
        use hpke::kem::X25519HkdfSha256;

        let v: Value = serde_json::from_str(VECTOR).unwrap();
        let ikm_r: [u8; 32] = hex_field(&v, "ikm_r").try_into().unwrap();
        let service_key =
            OpeningKey::from_seed("tv".into(), Suite::X25519Sha256Aes256Gcm, &ikm_r, i64::MAX);
        assert_eq!(service_key.public_key, hex_field(&v, "pk_r"));

        let payload = proto::EmbeddingPayload {
            model: v["payload_model"].as_str().unwrap().to_owned(),
            values: v["payload_values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
            sealed_at_unix_ms: v["payload_sealed_at_unix_ms"].as_i64().unwrap(),
            nonce: hex_field(&v, "payload_nonce"),
        };
        assert_eq!(payload.encode_to_vec(), hex_field(&v, "payload_serialized"));
        let aad = sealing::aad(SealedFor::Verify, "demo", "alice");
        assert_eq!(aad.as_slice(), hex_field(&v, "aad").as_slice());
        assert_eq!(sealing::INFO, hex_field(&v, "info").as_slice());

        let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&service_key.public_key)
            .unwrap();
        let ikm_e = hex_field(&v, "ikm_e");
        let (enc, ciphertext) =
            hpke::single_shot_seal_with_rng::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                &hpke::OpModeS::Base,
                &pk,
                sealing::INFO,
                &payload.encode_to_vec(),
                &aad,
                &mut SuppliedRng(&ikm_e),
            )
            .unwrap();
        assert_eq!(enc.to_bytes().to_vec(), hex_field(&v, "enc"));
        assert_eq!(ciphertext, hex_field(&v, "ciphertext"));

        // And the service opens it.
        let keys = SealingKeys::new(vec![service_key]);
        let opened = keys
            .open(
                "x25519-sha256-aes256gcm",
                "tv",
                &enc.to_bytes(),
                &ciphertext,
                &aad,
                0,
            )
            .unwrap();
        assert_eq!(opened.as_slice(), payload.encode_to_vec().as_slice());
        let _ = X25519HkdfSha256::derive_keypair(&ikm_e);
    }
}

/// The sealing-session vector (docs/test-vectors/sealing-session-x25519.json):
/// produced and checked here, checked again by the Python client with pyhpke.
#[cfg(test)]
mod session_vector {
    use serde_json::{Value, json};

    use super::*;
    use crate::crypto::sealing::{OpeningKey, SealingKeys, SuppliedRng};
    use crate::crypto::sessions;

    const PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/test-vectors/sealing-session-x25519.json"
    );

    fn vector() -> Value {
        let ikm_r: [u8; 32] = std::array::from_fn(|i| i as u8 + 0x01);
        let ikm_e: [u8; 32] = std::array::from_fn(|i| i as u8 + 0x21);
        let key =
            OpeningKey::from_seed("tv".into(), Suite::X25519Sha256Aes256Gcm, &ikm_r, i64::MAX);
        let (enc, session_key) = sealing::start_session_with_rng(
            Suite::X25519Sha256Aes256Gcm,
            &key.public_key,
            "demo",
            &mut SuppliedRng(&ikm_e),
        )
        .unwrap();
        let messages: Vec<Value> = [
            ("enroll", "alice", [0x11u8; 12], [0.5f32, -0.25, 0.125, 1.0]),
            (
                "verify",
                "alice",
                [0x22u8; 12],
                [0.5f32, -0.25, 0.125, 0.75],
            ),
        ]
        .into_iter()
        .map(|(op, subject, nonce, values)| {
            let payload = proto::EmbeddingPayload {
                model: "demo-4".into(),
                values: values.to_vec(),
                sealed_at_unix_ms: 1_790_000_000_000,
                nonce: vec![0xaa; 16],
            }
            .encode_to_vec();
            let sealed_for = if op == "enroll" {
                SealedFor::Enroll
            } else {
                SealedFor::Verify
            };
            let aad = sealing::aad(sealed_for, "demo", subject);
            let ciphertext = sessions::seal(&session_key, &nonce, &aad, &payload).unwrap();
            json!({
                "op": op,
                "subject_id": subject,
                "aad": hex::encode(aad.as_slice()),
                "payload_values": values,
                "payload_serialized": hex::encode(&payload),
                "session_nonce": hex::encode(nonce),
                "ciphertext": hex::encode(ciphertext),
            })
        })
        .collect();
        json!({
            "description": "facevault/v1 sealing-session test vector: one HPKE base-mode setup (RFC 9180), DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, with info = \"facevault/v1 session|\" || tenant; session_key = Export(exporter_context, 32); each message is AES-256-GCM(session_key, session_nonce, aad, payload) and carries enc. Recipient and ephemeral key pairs are DeriveKeyPair(ikm_r) and DeriveKeyPair(ikm_e). Payloads: model demo-4, sealed_at_unix_ms 1790000000000, payload nonce 16 x 0xaa. Byte strings are hex. See docs/protocol.md.",
            "suite": "x25519-sha256-aes256gcm",
            "mode": 0,
            "kem_id": 32,
            "kdf_id": 1,
            "aead_id": 2,
            "tenant": "demo",
            "ikm_r": hex::encode(ikm_r),
            "pk_r": hex::encode(&key.public_key),
            "ikm_e": hex::encode(ikm_e),
            "info": hex::encode(sessions::info("demo")),
            "enc": hex::encode(&enc),
            "exporter_context": hex::encode(sessions::KEY_LABEL),
            "session_key": hex::encode(session_key.as_slice()),
            "messages": messages,
        })
    }

    /// `FACEVAULT_WRITE_VECTORS=1` rewrites the file; otherwise it must match.
    /// The service then opens both messages from a cold cache and a warm one.
    #[test]
    fn the_session_vector_matches_and_opens() {
        let computed = vector();
        if std::env::var_os("FACEVAULT_WRITE_VECTORS").is_some() {
            std::fs::write(
                PATH,
                serde_json::to_string_pretty(&computed).unwrap() + "\n",
            )
            .unwrap();
        }
        let committed: Value =
            serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
        assert_eq!(
            committed, computed,
            "{PATH} differs from what the code computes"
        );

        let ikm_r: [u8; 32] = hex::decode(committed["ikm_r"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let keys = SealingKeys::new(vec![OpeningKey::from_seed(
            "tv".into(),
            Suite::X25519Sha256Aes256Gcm,
            &ikm_r,
            i64::MAX,
        )]);
        let cache = sessions::SessionCache::new(
            std::num::NonZeroUsize::new(8).unwrap(),
            ["demo"],
            std::time::Duration::from_secs(600),
        );
        let enc = hex::decode(committed["enc"].as_str().unwrap()).unwrap();
        for m in committed["messages"].as_array().unwrap() {
            let field = |k: &str| hex::decode(m[k].as_str().unwrap()).unwrap();
            let opened = keys
                .open_session(
                    &cache,
                    "demo",
                    "x25519-sha256-aes256gcm",
                    "tv",
                    &enc,
                    &field("session_nonce").try_into().unwrap(),
                    &field("ciphertext"),
                    &field("aad"),
                    0,
                )
                .unwrap();
            assert_eq!(opened.as_slice(), field("payload_serialized").as_slice());
        }
        assert_eq!(cache.len(), 1);
    }
}
