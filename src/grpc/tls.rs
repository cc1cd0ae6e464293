//! mTLS termination with rustls (ring provider). Client certificates are
//! mandatory and checked against the configured CA and CRLs in the handshake; the
//! caller identity is parsed once per connection and travels with every request
//! as a connection extension.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::audit::refusals::{Refusal, RefusalTally};
use crate::domain::caller::parse_spiffe_id;
use crate::domain::{Caller, Principal, Role, Tenant};

/// What one client, or all of them, may hold of the transport.
#[derive(Debug, Clone, Copy)]
pub struct TransportBounds {
    /// TCP connections open at once, handshaking or established; past it a new
    /// connection is closed at once.
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// Handshakes one peer address may have in progress at once, so one
    /// stranger cannot take the whole handshake budget.
    pub max_handshakes_per_peer: usize,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
}

/// Handshakes in progress per peer address. A slot is held by its
/// `HandshakeSlot` and freed when the handshake ends, however it ends.
#[derive(Default)]
struct PeerHandshakes(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct HandshakeSlot {
    peers: Arc<PeerHandshakes>,
    ip: std::net::IpAddr,
}

impl PeerHandshakes {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<HandshakeSlot> {
        let mut peers = self.0.lock().ok()?;
        let held = peers.entry(ip).or_default();
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(HandshakeSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Ok(mut peers) = self.peers.0.lock()
            && let Some(held) = peers.get_mut(&self.ip)
        {
            *held -= 1;
            if *held == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: &'a Path,
    pub crls: &'a [PathBuf],
}

pub fn server_config(files: &TlsFiles<'_>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(files.cert)
        .with_context(|| format!("cannot read server certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not PEM certificates", files.cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", files.cert.display());
    }
    crate::crypto::keyfiles::check_private(files.key)?;
    let key = PrivateKeyDer::from_pem_file(files.key)
        .with_context(|| format!("cannot read server key {}", files.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(files.client_ca)
        .with_context(|| format!("cannot read client CA {}", files.client_ca.display()))?
    {
        roots
            .add(ca.with_context(|| format!("{} is not PEM", files.client_ca.display()))?)
            .context("client CA certificate rejected")?;
    }
    if roots.is_empty() {
        bail!("{} holds no CA certificate", files.client_ca.display());
    }
    let mut crls = Vec::new();
    for path in files.crls {
        let before = crls.len();
        for crl in CertificateRevocationListDer::pem_file_iter(path)
            .with_context(|| format!("cannot read CRL {}", path.display()))?
        {
            crls.push(crl.with_context(|| format!("{} is not a PEM CRL", path.display()))?);
        }
        // A configured CRL file without a CRL would silently un-revoke everyone:
        // refuse it (fail closed) instead.
        if crls.len() == before {
            bail!("{} holds no PEM CRL", path.display());
        }
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls(crls)
        .build()
        .context("cannot build the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("server certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// How a certificate maps to a caller.
#[derive(Debug, Clone)]
pub struct IdentityPolicy {
    pub trust_domain: String,
    /// Accept `CN=<tenant>:<role>` from certificates without a SPIFFE URI SAN.
    pub allow_cn_fallback: bool,
}

/// Why an authenticated certificate does not name a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityRejection {
    NoCertificate,
    Unparsable,
    NoIdentity,
}

/// Attached to every request of a connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    pub caller: Result<Caller, IdentityRejection>,
}

impl IdentityPolicy {
    pub fn caller(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> Result<Caller, IdentityRejection> {
        let leaf = chain
            .and_then(|c| c.first())
            .ok_or(IdentityRejection::NoCertificate)?;
        let (_, cert) =
            X509Certificate::from_der(leaf.as_ref()).map_err(|_| IdentityRejection::Unparsable)?;
        let spiffe: Vec<&str> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fingerprint = hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()));
        let (principal, identity) = match spiffe.as_slice() {
            [uri] => {
                let principal = parse_spiffe_id(uri, &self.trust_domain)
                    .ok_or(IdentityRejection::NoIdentity)?;
                (principal, (*uri).to_owned())
            }
            // The CN fallback names tenant callers only: an operator needs its
            // SPIFFE id, so a legacy certificate can never become one.
            [] if self.allow_cn_fallback => {
                let cn = cert
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok())
                    .ok_or(IdentityRejection::NoIdentity)?;
                let (tenant, role) = cn.split_once(':').ok_or(IdentityRejection::NoIdentity)?;
                let tenant = Tenant::try_from(tenant).map_err(|_| IdentityRejection::NoIdentity)?;
                let role = Role::parse(role).ok_or(IdentityRejection::NoIdentity)?;
                (Principal::Tenant { tenant, role }, format!("cn:{cn}"))
            }
            // Several SPIFFE ids in one certificate would make the identity ambiguous.
            _ => return Err(IdentityRejection::NoIdentity),
        };
        Ok(Caller {
            principal,
            identity,
            cert_sha256: fingerprint,
        })
    }
}

/// A TLS connection with its caller, as tonic's server consumes it. It holds its
/// share of the connection bound, and ends itself once idle for too long.
pub struct PeerStream {
    inner: TlsStream<TcpStream>,
    peer: PeerInfo,
    _connection: OwnedSemaphorePermit,
    idle: IdleTimer,
}

/// Closes a connection idle for `limit`. Activity only stamps a time; the timer
/// is re-armed when it fires early, so busy connections pay no timer per byte.
struct IdleTimer {
    limit: Duration,
    last_activity: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    fn new(limit: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            limit,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + limit)),
        }
    }

    fn touch(&mut self) {
        self.last_activity = tokio::time::Instant::now();
    }

    /// Ready once the connection has been idle for the whole limit.
    fn poll_expired(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_activity + self.limit;
            if deadline <= tokio::time::Instant::now() {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => match self.idle.poll_expired(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
            ready => {
                if buf.filled().len() > filled {
                    self.idle.touch();
                }
                ready
            }
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.idle.touch();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.idle.touch();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop, so a
/// slow or hostile client cannot stall others. Connections past the bound are
/// closed at once; failed handshakes are dropped (the client sees the TLS alert)
/// and counted in the audit log; only established connections reach the server.
pub fn incoming(
    listener: TcpListener,
    config: watch::Receiver<Arc<rustls::ServerConfig>>,
    policy: Arc<IdentityPolicy>,
    bounds: TransportBounds,
    refusals: RefusalTally,
) -> (
    ReceiverStream<Result<PeerStream, io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let connections = Arc::new(Semaphore::new(bounds.max_connections));
    // Peers not yet authenticated get their own budget, a quarter of the
    // connections, and each peer address a share of it: however many
    // handshakes a stranger opens, other peers can still connect.
    let handshakes = Arc::new(Semaphore::new((bounds.max_connections / 4).max(1)));
    let per_peer = Arc::new(PeerHandshakes::default());
    let task = tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (Some(peer_slot), Ok(permit), Ok(handshaking)) = (
                per_peer.take(remote.ip(), bounds.max_handshakes_per_peer),
                connections.clone().try_acquire_owned(),
                handshakes.clone().try_acquire_owned(),
            ) else {
                refusals.peer(Some(remote.ip()), Refusal::ConnectionLimit);
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            // Each connection uses the configuration current when it arrives, so a
            // renewed certificate or CRL applies to new connections at once.
            let acceptor = TlsAcceptor::from(config.borrow().clone());
            let policy = policy.clone();
            let conn_tx = tx.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(bounds.handshake_timeout, acceptor.accept(tcp)).await;
                drop((handshaking, peer_slot));
                match handshake {
                    Ok(Ok(tls)) => {
                        let caller = policy.caller(tls.get_ref().1.peer_certificates());
                        if let Err(rejection) = &caller {
                            tracing::warn!(%remote, ?rejection, "client certificate names no acceptable identity");
                        }
                        let peer = PeerInfo {
                            remote: Some(remote),
                            caller,
                        };
                        let stream = PeerStream {
                            inner: tls,
                            peer,
                            _connection: permit,
                            idle: IdleTimer::new(bounds.idle_timeout),
                        };
                        let _ = conn_tx.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        refusals.peer(Some(remote.ip()), Refusal::TlsHandshake);
                        // WARN: a client that cannot connect sees only a
                        // closed connection or a timeout; the reason is here
                        // (rustls's words, e.g. no certificate, unknown issuer),
                        // never the certificate itself.
                        tracing::warn!(%remote, reason = %error, "TLS handshake refused");
                    }
                    Err(_) => {
                        refusals.peer(Some(remote.ip()), Refusal::TlsHandshake);
                        tracing::info!(%remote, "TLS handshake timed out");
                    }
                }
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    (ReceiverStream::new(rx), task)
}

/// The TLS files as owned paths, for reloading.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub crls: Vec<PathBuf>,
}

impl TlsPaths {
    fn files(&self) -> TlsFiles<'_> {
        TlsFiles {
            cert: &self.cert,
            key: &self.key,
            client_ca: &self.client_ca,
            crls: &self.crls,
        }
    }

    /// A digest of every file's bytes: cert-manager and Kubernetes swap files by
    /// symlink, so contents, not mtimes, say whether anything changed.
    fn digest(&self) -> Option<Vec<u8>> {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for path in [&self.cert, &self.key, &self.client_ca]
            .into_iter()
            .chain(&self.crls)
        {
            ctx.update(&std::fs::read(path).ok()?);
        }
        Some(ctx.finish().as_ref().to_vec())
    }
}

/// Loads the TLS configuration and returns it as a watch channel that a reload
/// task keeps current.
pub fn reloading(
    paths: TlsPaths,
) -> anyhow::Result<(watch::Sender<Arc<rustls::ServerConfig>>, TlsPaths)> {
    let config = server_config(&paths.files())?;
    let (tx, _) = watch::channel(config);
    Ok((tx, paths))
}

/// Re-reads the certificate, key, client CA and CRLs every `interval`; a change
/// that loads cleanly replaces the configuration for new connections. A change that
/// does not load is logged as an error and the last good configuration stays.
pub async fn reload_loop(
    paths: TlsPaths,
    tx: watch::Sender<Arc<rustls::ServerConfig>>,
    interval: Duration,
) {
    let mut seen = paths.digest();
    loop {
        tokio::time::sleep(interval).await;
        let now = paths.digest();
        if now.is_none() || now == seen {
            continue;
        }
        match server_config(&paths.files()) {
            Ok(config) => {
                tx.send_replace(config);
                seen = now;
                tracing::info!("TLS certificates and CRLs reloaded");
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "TLS reload failed; keeping the previous configuration")
            }
        }
    }
}
