//! One connection handle over either a single Redis (primary) or a Redis Cluster.
//! Every command the service sends names keys of a single hash slot (see `keys`),
//! so the cluster client can route each script, MULTI and pipeline to one shard.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::RedisTls;

/// How the service reaches Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One primary (with or without replicas behind it).
    #[default]
    Standalone,
    /// A Redis Cluster; `url` names any one node, the rest are discovered.
    Cluster,
}

#[derive(Clone)]
pub(super) enum RedisConnection {
    Standalone(ConnectionManager),
    Cluster(Arc<LazyCluster>),
}

/// The cluster client connects on first use, like the connection manager does, so
/// the service can start while Redis is still coming up; a failed first connection
/// is tried again by the next call.
pub(super) struct LazyCluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl RedisConnection {
    pub(super) fn open(
        url: &str,
        mode: RedisMode,
        tls: &RedisTls,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let certificates = tls_certificates(url, tls);
        match mode {
            RedisMode::Standalone => {
                let client = match certificates {
                    Some(certs) => redis::Client::build_with_tls(url, certs)?,
                    None => redis::Client::open(url)?,
                };
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Ok(Self::Standalone(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisMode::Cluster => {
                let mut builder = ClusterClientBuilder::new(vec![url])
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // A failover moves slots; retries follow MOVED and refresh the
                    // slot map, within the caller's deadline.
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500);
                if let Some(certs) = certificates {
                    builder = builder.certs(certs);
                }
                Ok(Self::Cluster(Arc::new(LazyCluster {
                    client: builder.build()?,
                    connection: OnceCell::new(),
                })))
            }
        }
    }
}

/// The Redis URL as it may be shown in logs and errors: the user and password
/// (`redis://user:secret@host`) become `[redacted]`, and the query (which may
/// carry `password=` for some clients) is dropped. Something that is not a URL
/// is not echoed at all: it may be a password pasted in the wrong place.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "[not a redis:// URL]".to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://[redacted]@{host}{path}"),
        None => format!("{scheme}://{authority}{path}"),
    }
}

fn tls_certificates(url: &str, tls: &RedisTls) -> Option<redis::TlsCertificates> {
    if !url.starts_with("rediss://") || (tls.ca_pem.is_none() && tls.client_cert_pem.is_none()) {
        return None;
    }
    let client_tls = match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: cert.clone(),
            // The Redis client keeps its own copy for reconnections.
            client_key: key.to_vec(),
        }),
        _ => None,
    };
    Some(redis::TlsCertificates {
        client_tls,
        root_cert: tls.ca_pem.clone(),
    })
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(manager) => manager.req_packed_command(cmd),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut connection = lazy.get().await?;
                connection.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(manager) => manager.req_packed_commands(pipeline, offset, count),
            Self::Cluster(lazy) => Box::pin(async move {
                let mut connection = lazy.get().await?;
                connection
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(manager) => manager.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}
