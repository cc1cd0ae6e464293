//! Redis: untrusted storage. Everything written here is ciphertext, a counter or a
//! digest (see `keys`). Every call has a deadline; past it, or with Redis down, the
//! caller gets `StorageError::Unavailable` and fails closed.

pub mod audit;
mod connection;
pub mod decommission;
pub mod deletions;
pub mod keys;
pub mod ledger;
pub mod rewrap;
mod scripts;

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};
use zeroize::Zeroizing;

use connection::RedisConnection;
pub use connection::{RedisMode, redacted_url};
pub use keys::SubjectKeys;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Unavailable(Unreachable),
    #[error("redis returned an unexpected reply")]
    Corrupt,
    #[error("{acknowledged} of {required} redis replicas acknowledged the write in time")]
    NotReplicated { acknowledged: u32, required: u32 },
}

impl From<redis::RedisError> for StorageError {
    fn from(e: redis::RedisError) -> Self {
        Self::Unavailable(Unreachable {
            url: None,
            cause: Some(Cause::Redis(e)),
        })
    }
}

impl StorageError {
    /// Redis could not be reached, for a reason not worth more words (a lost
    /// compare-and-swap race, a closed queue).
    pub fn unavailable() -> Self {
        Self::Unavailable(Unreachable::default())
    }
}

/// Why Redis could not be reached, said once: where (the URL without its
/// password, see [`redacted_url`]) and the cause, e.g. "redis at
/// redis://10.0.0.5:6379/ is unavailable: Connection refused (os error 111)".
///
/// The cause is part of the message and not returned by `source()`: a
/// `RedisError` both prints its I/O error and returns it as its source, so a
/// chain printed with every source (anyhow's `{:#}`) would say it twice.
#[derive(Debug, Default)]
pub struct Unreachable {
    url: Option<std::sync::Arc<str>>,
    cause: Option<Cause>,
}

#[derive(Debug)]
enum Cause {
    Redis(redis::RedisError),
    NoAnswer(Duration),
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("redis")?;
        if let Some(url) = &self.url {
            write!(f, " at {url}")?;
        }
        f.write_str(" is unavailable")?;
        match &self.cause {
            Some(Cause::Redis(e)) => write!(f, ": {e}"),
            Some(Cause::NoAnswer(deadline)) => {
                write!(f, ": no answer within {} ms", deadline.as_millis())
            }
            None => Ok(()),
        }
    }
}

/// TLS material for `rediss://`. The client key is zeroized on drop and never
/// printed.
#[derive(Clone, Default)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("client_cert_pem", &self.client_cert_pem.is_some())
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

static VERIFY_BEGIN: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::VERIFY_BEGIN));
static VERIFY_FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(scripts::VERIFY_FINISH));

/// Durable writes and their `WAIT` go on connections of their own, never on
/// the connection the verify path uses: `WAIT` blocks the connection it is sent
/// on, so a lagging replica slows only durable writes.
const DURABLE_CONNECTIONS: usize = 4;

#[derive(Clone)]
pub struct Store {
    conn: RedisConnection,
    /// Named in every error: which Redis could not be reached.
    redacted_url: std::sync::Arc<str>,
    /// Used only when `replica_acks > 0`; empty otherwise.
    durable: std::sync::Arc<Vec<RedisConnection>>,
    next_durable: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    timeout: Duration,
    replica_acks: u32,
}

/// Where and how to reach Redis. No `Debug`: the URL may carry the password.
#[derive(Clone)]
pub struct RedisTarget<'a> {
    pub url: &'a str,
    pub mode: RedisMode,
    pub tls: RedisTls,
    /// Deadline of every call.
    pub timeout: Duration,
    /// Replicas that must hold a write (`WAIT`) before it is acknowledged.
    pub replica_acks: u32,
}

/// One stored template to change atomically: its id, the bytes read, and the
/// replacement (None erases it).
pub struct TemplateChange {
    pub template_id: String,
    pub expected: Vec<u8>,
    pub replacement: Option<Vec<u8>>,
}

/// The subject's counters and flags as read at the start of a call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SubjectState {
    pub failures: u32,
    pub last_failure_unix_ms: i64,
    pub cancelled: bool,
}

pub struct StoredTemplates {
    pub state: SubjectState,
    /// (template id, sealed template bytes)
    pub templates: Vec<(String, Vec<u8>)>,
}

pub enum VerifyBegin {
    Replayed,
    Busy,
    Ready(StoredTemplates),
}

pub enum EnrollOutcome {
    Stored { templates_held: u32 },
    Replayed,
    Cancelled,
    Disabled,
    Full,
}

pub struct EnrollWrite<'a> {
    pub now_unix_ms: i64,
    pub envelope_digest: &'a [u8],
    pub replay_expires_unix_ms: i64,
    pub replace: bool,
    pub max_templates: u32,
    pub disable_after: u32,
    pub template_id: &'a str,
    pub sealed_template: &'a [u8],
}

/// A verification's claim on its subject's single in-flight slot: released only
/// by the call holding `token`, and gone by itself at `expires_unix_ms` if the
/// process dies mid-call.
pub struct InFlightSlot {
    pub token: String,
    pub expires_unix_ms: i64,
}

/// What an erased cancelled account leaves: its ticket id, until the ticket
/// itself expires.
pub struct Tombstone {
    pub ticket_id: String,
    pub expires_unix_ms: i64,
}

/// What a finished verification changes: the lockout counter, and the in-flight slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    Matched,
    Failed,
    /// Refused before comparing (locked, cancelled…): counters stay as they are.
    NotCompared,
}

impl Store {
    /// Connects lazily: the service can start while Redis is still coming up (its
    /// health reports NOT_SERVING until Redis answers).
    pub fn connect(target: &RedisTarget<'_>) -> Result<Self, StorageError> {
        let redacted_url: std::sync::Arc<str> = redacted_url(target.url).into();
        let unreachable = |e| {
            StorageError::Unavailable(Unreachable {
                url: Some(redacted_url.clone()),
                cause: Some(Cause::Redis(e)),
            })
        };
        let open = || {
            RedisConnection::open(target.url, target.mode, &target.tls, target.timeout)
                .map_err(unreachable)
        };
        let durable = if target.replica_acks > 0 {
            (0..DURABLE_CONNECTIONS)
                .map(|_| open())
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            conn: open()?,
            redacted_url: redacted_url.clone(),
            durable: std::sync::Arc::new(durable),
            next_durable: std::sync::Arc::default(),
            timeout: target.timeout,
            replica_acks: target.replica_acks,
        })
    }

    /// The Redis URL without its password, as errors name it.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// Whether durable writes wait for replicas (`redis.replica_acks > 0`).
    pub fn waits_for_replicas(&self) -> bool {
        self.replica_acks > 0
    }

    /// The connection for a durable write: one of the durable pool when replicas
    /// must acknowledge it (a blocked `WAIT` holds up its connection), the
    /// shared one otherwise.
    fn write_conn(&self) -> RedisConnection {
        if self.durable.is_empty() {
            return self.conn.clone();
        }
        let i = self
            .next_durable
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.durable[i % self.durable.len()].clone()
    }

    async fn deadline<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StorageError> {
        let cause = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => Cause::Redis(e),
            Err(_) => Cause::NoAnswer(self.timeout),
        };
        Err(StorageError::Unavailable(Unreachable {
            url: Some(self.redacted_url.clone()),
            cause: Some(cause),
        }))
    }

    /// Runs one durable write (a command whose keys share one slot) on a durable
    /// connection and, when replicas must hold it, `WAIT` right behind it in the
    /// same round trip: `WAIT` then counts exactly this write, on the node that
    /// ran it, whatever reconnection or failover happens around them, so a
    /// failover cannot lose an acknowledged write. Fails closed: too few
    /// replicas in time is `NotReplicated`, whose outcome is unknown like any
    /// timeout's (the primary holds the write).
    async fn durable<T: redis::FromRedisValue>(
        &self,
        write: redis::Cmd,
    ) -> Result<T, StorageError> {
        let mut conn = self.write_conn();
        if self.replica_acks == 0 {
            return self.deadline(write.query_async(&mut conn)).await;
        }
        // WAIT's own timeout stays inside the call's deadline.
        let wait = self.timeout.mul_f32(0.8);
        let mut pipe = redis::pipe();
        pipe.add_command(write)
            .cmd("WAIT")
            .arg(self.replica_acks)
            .arg(wait.as_millis() as u64);
        let (value, acknowledged): (T, u32) = self.deadline(pipe.query_async(&mut conn)).await?;
        if acknowledged < self.replica_acks {
            return Err(StorageError::NotReplicated {
                acknowledged,
                required: self.replica_acks,
            });
        }
        Ok(value)
    }

    /// Members of a sorted set scored at most `max_score`, lowest first, at most
    /// `limit` of them: what is due in a queue or schedule.
    async fn due_members(
        &self,
        key: &str,
        max_score: i64,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let mut conn = self.conn.clone();
        self.deadline(
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(max_score)
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut conn),
        )
        .await
    }

    pub async fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.conn.clone();
        let _: String = self
            .deadline(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }

    /// One round trip: replay check, in-flight claim (held by `slot` until
    /// `slot.expires_unix_ms`), state and templates.
    #[tracing::instrument(name = "redis.verify_begin", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn verify_begin(
        &self,
        keys: &SubjectKeys,
        now_unix_ms: i64,
        envelope_digest: &[u8],
        replay_expires_unix_ms: i64,
        slot: &InFlightSlot,
    ) -> Result<VerifyBegin, StorageError> {
        let mut conn = self.conn.clone();
        let mut invocation = VERIFY_BEGIN.prepare_invoke();
        invocation
            .key(&keys.templates)
            .key(&keys.state)
            .key(&keys.replay)
            .key(&keys.inflight)
            .arg(now_unix_ms)
            .arg(envelope_digest)
            .arg(replay_expires_unix_ms)
            .arg(slot.expires_unix_ms)
            .arg(&slot.token);
        let reply: Value = self.deadline(invocation.invoke_async(&mut conn)).await?;
        let mut items = into_array(reply)?.into_iter();
        match status(items.next())?.as_str() {
            "replayed" => Ok(VerifyBegin::Replayed),
            "busy" => Ok(VerifyBegin::Busy),
            "ok" => {
                let state = parse_state(pairs(items.next())?)?;
                let templates = pairs(items.next())?
                    .into_iter()
                    .map(|(k, v)| Ok((String::from_utf8(k).map_err(|_| StorageError::Corrupt)?, v)))
                    .collect::<Result<_, StorageError>>()?;
                Ok(VerifyBegin::Ready(StoredTemplates { state, templates }))
            }
            _ => Err(StorageError::Corrupt),
        }
    }

    /// One atomic script: the lockout counter, and the release of the in-flight
    /// slot if this call still holds it.
    #[tracing::instrument(name = "redis.verify_finish", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn verify_finish(
        &self,
        keys: &SubjectKeys,
        outcome: VerifyOutcome,
        now_unix_ms: i64,
        slot: &InFlightSlot,
    ) -> Result<(), StorageError> {
        let mut invocation = VERIFY_FINISH.prepare_invoke();
        invocation
            .key(&keys.state)
            .key(&keys.inflight)
            .arg(match outcome {
                VerifyOutcome::Matched => "matched",
                VerifyOutcome::Failed => "failed",
                VerifyOutcome::NotCompared => "none",
            })
            .arg(now_unix_ms)
            .arg(&slot.token);
        let mut conn = self.conn.clone();
        let _: i64 = self.deadline(invocation.invoke_async(&mut conn)).await?;
        Ok(())
    }

    #[tracing::instrument(name = "redis.enroll", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn enroll(
        &self,
        keys: &SubjectKeys,
        write: EnrollWrite<'_>,
    ) -> Result<EnrollOutcome, StorageError> {
        let mut invocation = eval(
            scripts::ENROLL,
            &[&keys.templates, &keys.state, &keys.replay],
        );
        invocation
            .arg(write.now_unix_ms)
            .arg(write.envelope_digest)
            .arg(write.replay_expires_unix_ms)
            .arg(if write.replace { "1" } else { "0" })
            .arg(write.max_templates)
            .arg(write.disable_after)
            .arg(write.template_id)
            .arg(write.sealed_template);
        let reply: Value = self.durable(invocation).await?;
        let mut items = into_array(reply)?.into_iter();
        match status(items.next())?.as_str() {
            "ok" => match items.next() {
                Some(Value::Int(n)) => Ok(EnrollOutcome::Stored {
                    templates_held: u32::try_from(n).map_err(|_| StorageError::Corrupt)?,
                }),
                _ => Err(StorageError::Corrupt),
            },
            "replayed" => Ok(EnrollOutcome::Replayed),
            "cancelled" => Ok(EnrollOutcome::Cancelled),
            "disabled" => Ok(EnrollOutcome::Disabled),
            "full" => Ok(EnrollOutcome::Full),
            _ => Err(StorageError::Corrupt),
        }
    }

    /// Erases the subject's templates, counters and in-flight slot (see
    /// `scripts::ERASE` for what stays). Returns the ids of the templates it held.
    #[tracing::instrument(name = "redis.erase_subject", skip_all, fields(otel.kind = "client", db.system = "redis"))]
    pub async fn erase_subject(
        &self,
        keys: &SubjectKeys,
        tombstone: Option<&Tombstone>,
    ) -> Result<Vec<String>, StorageError> {
        let mut invocation = eval(
            scripts::ERASE,
            &[&keys.templates, &keys.state, &keys.inflight],
        );
        invocation
            .arg(tombstone.map_or("", |t| t.ticket_id.as_str()))
            .arg(tombstone.map_or(0, |t| t.expires_unix_ms));
        self.durable(invocation).await
    }
}

impl Store {
    /// Freezes the subject for cancellation. Returns the ticket id in force (an
    /// earlier cancellation's, if any) and the number of templates held.
    pub async fn cancel_subject(
        &self,
        keys: &SubjectKeys,
        ticket_id: &str,
    ) -> Result<(String, u64), StorageError> {
        let mut invocation = eval(scripts::CANCEL, &[&keys.templates, &keys.state]);
        invocation.arg(ticket_id);
        self.durable(invocation).await
    }

    /// The subject's state and templates, for rewriting them.
    pub async fn read_subject(&self, keys: &SubjectKeys) -> Result<StoredTemplates, StorageError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(&keys.state)
            .cmd("HGETALL")
            .arg(&keys.templates);
        let mut conn = self.conn.clone();
        let (state, templates): (Value, Value) = self.deadline(pipe.query_async(&mut conn)).await?;
        Ok(StoredTemplates {
            state: parse_state(pairs(Some(state))?)?,
            templates: pairs(Some(templates))?
                .into_iter()
                .map(|(k, v)| Ok((String::from_utf8(k).map_err(|_| StorageError::Corrupt)?, v)))
                .collect::<Result<_, StorageError>>()?,
        })
    }

    /// Applies the changes atomically if no template changed meanwhile. Returns the
    /// number of templates held afterwards, or None on a conflict (read again).
    pub async fn rewrite_templates(
        &self,
        keys: &SubjectKeys,
        changes: &[TemplateChange],
    ) -> Result<Option<u64>, StorageError> {
        let mut invocation = eval(scripts::REWRITE, &[&keys.templates]);
        for c in changes {
            invocation
                .arg(&c.template_id)
                .arg(&c.expected)
                .arg(c.replacement.as_deref().unwrap_or(&[]));
        }
        let held: i64 = self.durable(invocation).await?;
        Ok(u64::try_from(held).ok())
    }
}

/// A script call as one command (`EVAL`), so that a durable write can carry its
/// `WAIT` in the same round trip. Redis caches the compiled script by its digest.
fn eval(source: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(source).arg(keys.len()).arg(keys);
    cmd
}

fn into_array(value: Value) -> Result<Vec<Value>, StorageError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(StorageError::Corrupt),
    }
}

fn status(value: Option<Value>) -> Result<String, StorageError> {
    match value {
        Some(Value::BulkString(b)) => String::from_utf8(b).map_err(|_| StorageError::Corrupt),
        Some(Value::SimpleString(s)) => Ok(s),
        _ => Err(StorageError::Corrupt),
    }
}

/// A flattened Redis hash: (field, value) pairs.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn pairs(value: Option<Value>) -> Result<Fields, StorageError> {
    let items = into_array(value.ok_or(StorageError::Corrupt)?)?;
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let Some(k) = it.next() {
        match (k, it.next()) {
            (Value::BulkString(k), Some(Value::BulkString(v))) => out.push((k, v)),
            _ => return Err(StorageError::Corrupt),
        }
    }
    Ok(out)
}

/// A hash field written as UTF-8 text.
fn field_text(value: &[u8]) -> Result<String, StorageError> {
    String::from_utf8(value.to_vec()).map_err(|_| StorageError::Corrupt)
}

/// A hash field written as a decimal integer.
fn field_number(value: &[u8]) -> Result<i64, StorageError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(StorageError::Corrupt)
}

fn parse_state(fields: Fields) -> Result<SubjectState, StorageError> {
    let mut state = SubjectState::default();
    for (k, v) in fields {
        match k.as_slice() {
            b"fails" => {
                state.failures = u32::try_from(field_number(&v)?.max(0)).unwrap_or(u32::MAX)
            }
            b"last_failure_ms" => state.last_failure_unix_ms = field_number(&v)?,
            b"cancelled" => state.cancelled = true,
            _ => {}
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_hides_credentials_and_query() {
        assert_eq!(
            redacted_url("redis://:s3cret@10.0.0.5:6379/2"),
            "redis://[redacted]@10.0.0.5:6379/2"
        );
        assert_eq!(
            redacted_url("rediss://app:s3cret@redis.internal?password=x"),
            "rediss://[redacted]@redis.internal"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redacted_url("redis+unix:///run/redis.sock?db=0&pass=x"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(redacted_url("s3cret"), "[not a redis:// URL]");
    }

    /// What `facevault audit verify` and the health monitor print when Redis
    /// is down: the URL without its password and the OS error, each once.
    #[tokio::test]
    async fn an_unreachable_redis_is_named_once_with_its_cause() {
        // A port that was just free: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://:s3cret@127.0.0.1:{port}/0");
        let store = Store::connect(&RedisTarget {
            url: &url,
            mode: RedisMode::Standalone,
            tls: RedisTls::default(),
            timeout: Duration::from_secs(2),
            replica_acks: 0,
        })
        .unwrap();
        let error = store.ping().await.unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(crate::Error::from(error)));
        assert!(
            chain.contains(&format!("redis at redis://[redacted]@127.0.0.1:{port}/0")),
            "{chain}"
        );
        assert_eq!(chain.matches("Connection refused").count(), 1, "{chain}");
        assert!(!chain.contains("s3cret"), "{chain}");
    }
}
