//! A private, real `redis-server` child process on a loopback port, for `facevault dev`,
//! the test suite (one server per test) and the benchmark.
//!
//! Readiness is checked with raw RESP over TCP so no Redis client is involved, and the
//! answering server is matched against the child's pid so that a foreign Redis that
//! happens to own the port is never mistaken for ours.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Bounds one readiness probe so a listener that accepts but never answers cannot
/// stall the whole wait.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Extra attempts with a fresh port when a picked port was taken before redis bound it.
const PORT_RETRIES: usize = 3;
const LOG_TAIL_LINES: usize = 30;
const LOG_TAIL_BYTES: usize = 8 * 1024;
const DEFAULT_REDIS_PORT: u16 = 6379;

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `None`: a free loopback port, picked by the OS (never 6379).
    pub port: Option<u16>,
    /// Working directory for data and `redis.log`; created if missing. `None`: a private
    /// temporary directory removed when the [`RedisServer`] is dropped.
    pub dir: Option<PathBuf>,
    /// `--appendonly yes --appendfsync always`: every acknowledged write survives a kill.
    pub append_only: bool,
    /// Appended after the generated arguments, so they take precedence; overriding
    /// `--port`, `--bind` or `--dir` leaves this handle looking in the wrong place.
    pub extra_args: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    #[error(
        "redis-server was not found on PATH; install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`) or pass --redis-url"
    )]
    NotInstalled,
    #[error(
        "redis-cli was not found on PATH; it ships with redis-server (Debian/Ubuntu: `sudo apt-get install redis-tools`)"
    )]
    CliNotInstalled,
    #[error("could not start redis-server: {0}")]
    Spawn(#[source] io::Error),
    #[error(
        "redis-server on 127.0.0.1:{port} did not answer PING within {waited:?}; end of its log:\n{log_tail}"
    )]
    NotReady {
        port: u16,
        waited: Duration,
        log_tail: String,
    },
    #[error(
        "redis-server for 127.0.0.1:{port} exited during startup ({status}); end of its log:\n{log_tail}"
    )]
    Exited {
        port: u16,
        status: ExitStatus,
        log_tail: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl RedisServerError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    fn is_port_conflict(&self) -> bool {
        matches!(self, Self::Exited { log_tail, .. } if log_tail.contains("Address already in use"))
    }
}

/// A running `redis-server`. Dropping it kills the process (and removes its directory
/// when that was a temporary one).
#[derive(Debug)]
pub struct RedisServer {
    // Declared before `_temp_dir` so the process is killed before its directory goes.
    child: Option<Child>,
    program: PathBuf,
    port: u16,
    dir: PathBuf,
    append_only: bool,
    extra_args: Vec<String>,
    _temp_dir: Option<TempDir>,
}

impl RedisServer {
    /// Starts `redis-server` from `PATH` and waits until it answers PING.
    pub async fn start(options: RedisOptions) -> Result<Self, RedisServerError> {
        let path = std::env::var_os("PATH");
        Self::start_with_program(Path::new("redis-server"), path.as_deref(), options).await
    }

    /// `start` with the program and the `PATH` value to search made explicit, so the
    /// missing-binary path can be tested without touching the process environment.
    /// A `program` containing a path separator is used as is.
    pub(crate) async fn start_with_program(
        program: &Path,
        search_path: Option<&OsStr>,
        options: RedisOptions,
    ) -> Result<Self, RedisServerError> {
        Self::start_inner(program, search_path, options, pick_free_port).await
    }

    /// `pick_port` is a seam for testing the lost-port race.
    async fn start_inner(
        program: &Path,
        search_path: Option<&OsStr>,
        options: RedisOptions,
        mut pick_port: impl FnMut() -> Result<u16, RedisServerError>,
    ) -> Result<Self, RedisServerError> {
        let program = resolve_program(program, search_path)?;
        let RedisOptions {
            port,
            dir,
            append_only,
            extra_args,
        } = options;

        let (dir, temp_dir) = match dir {
            Some(dir) => {
                fs::create_dir_all(&dir)
                    .map_err(RedisServerError::io(format!("creating {}", dir.display())))?;
                // Absolute, because redis chdirs into --dir while parsing its arguments.
                let dir = fs::canonicalize(&dir)
                    .map_err(RedisServerError::io(format!("resolving {}", dir.display())))?;
                (dir, None)
            }
            None => {
                let temp = TempDir::new()?;
                (temp.path.clone(), Some(temp))
            }
        };

        let mut retries = 0;
        let (child, port) = loop {
            let candidate = match port {
                Some(port) => port,
                None => pick_port()?,
            };
            match launch(&program, candidate, &dir, append_only, &extra_args).await {
                Ok(child) => break (child, candidate),
                Err(e) if port.is_none() && retries < PORT_RETRIES && e.is_port_conflict() => {
                    retries += 1;
                }
                Err(e) => return Err(e),
            }
        };

        Ok(Self {
            child: Some(child),
            program,
            port,
            dir,
            append_only,
            extra_args,
            _temp_dir: temp_dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// False after `stop`, until `restart`.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's working directory (data files and `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log; it also receives the process's stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Kills the server (SIGKILL, no shutdown save) and reaps it. No-op when stopped.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if the process is already gone, which is what we want anyway.
            let _ = child.kill().await;
        }
    }

    /// Freezes the process (SIGSTOP): it holds its connections but answers
    /// nothing, like a replica that lags without failing. `resume` undoes it.
    pub async fn freeze(&self) -> Result<(), RedisServerError> {
        self.signal("-STOP").await
    }

    /// Lets a frozen process run again (SIGCONT).
    pub async fn resume(&self) -> Result<(), RedisServerError> {
        self.signal("-CONT").await
    }

    async fn signal(&self, signal: &str) -> Result<(), RedisServerError> {
        let pid = self.child.as_ref().and_then(Child::id).ok_or_else(|| {
            RedisServerError::io("signalling redis-server".to_owned())(std::io::Error::other(
                "not running",
            ))
        })?;
        let status = tokio::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .await
            .map_err(RedisServerError::io(format!("kill {signal} {pid}")))?;
        if !status.success() {
            return Err(RedisServerError::io(format!("kill {signal} {pid}"))(
                std::io::Error::other(status.to_string()),
            ));
        }
        Ok(())
    }

    /// Stops the server if running and starts it again on the same port and directory
    /// (so append-only data is kept), waiting until it answers.
    pub async fn restart(&mut self) -> Result<(), RedisServerError> {
        self.stop().await;
        let child = launch(
            &self.program,
            self.port,
            &self.dir,
            self.append_only,
            &self.extra_args,
        )
        .await?;
        self.child = Some(child);
        Ok(())
    }
}

/// A real Redis Cluster on loopback: `masters` primaries with `replicas` each, made
/// by `redis-cli --cluster create`, for the test suite.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// Failure detection after this long without an answer; a replica takes over soon
/// after, so a failover completes in a few seconds.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;

impl RedisCluster {
    pub async fn start(masters: usize, replicas: usize) -> Result<Self, RedisServerError> {
        let mut nodes = Vec::with_capacity(masters * (1 + replicas));
        for _ in 0..masters * (1 + replicas) {
            nodes.push(
                RedisServer::start(RedisOptions {
                    extra_args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &CLUSTER_NODE_TIMEOUT_MS.to_string(),
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                    ..RedisOptions::default()
                })
                .await?,
            );
        }
        let mut create = Command::new(
            resolve_program(Path::new("redis-cli"), std::env::var_os("PATH").as_deref())
                .map_err(|_| RedisServerError::CliNotInstalled)?,
        );
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let output = create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(RedisServerError::io("running redis-cli --cluster create"))?;
        if !output.status.success() {
            return Err(RedisServerError::Io {
                context: "redis-cli --cluster create".into(),
                source: io::Error::other(String::from_utf8_lossy(&output.stdout).into_owned()),
            });
        }
        let cluster = Self { nodes };
        cluster.wait_until_healthy(READY_TIMEOUT * 3).await?;
        Ok(cluster)
    }

    /// A node to give clients as the seed (any node would do).
    pub fn seed_url(&self) -> String {
        self.nodes[0].url()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    pub fn node_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| n.port() == port)
    }

    /// Waits until every running node sees the cluster as `ok` with all slots served,
    /// and every replica's link to its primary is up and in sync.
    pub async fn wait_until_healthy(&self, within: Duration) -> Result<(), RedisServerError> {
        let started = Instant::now();
        loop {
            let mut healthy = true;
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                healthy &= node_is_healthy(node.port()).await;
            }
            if healthy {
                return Ok(());
            }
            if started.elapsed() >= within {
                return Err(RedisServerError::NotReady {
                    port: self.nodes[0].port(),
                    waited: started.elapsed(),
                    log_tail: log_tail(&self.nodes[0].log_path(), 0).await,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn node_is_healthy(port: u16) -> bool {
    let Some(info) = query_text(port, &["CLUSTER", "INFO"]).await else {
        return false;
    };
    if !(info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")) {
        return false;
    }
    let Some(replication) = query_text(port, &["INFO", "replication"]).await else {
        return false;
    };
    !replication.contains("role:slave")
        || (replication.contains("master_link_status:up")
            && !replication.contains("master_sync_in_progress:1"))
}

/// One command over raw RESP; its bulk-string reply as text (None for any other
/// reply).
async fn query_text(port: u16, args: &[&str]) -> Option<String> {
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    exchange(port, request.as_bytes(), parse_bulk_text)
        .await
        .flatten()
}

/// `Some(None)` for a complete reply that is not a bulk string; `None` until complete.
fn parse_bulk_text(buf: &[u8]) -> Option<Option<String>> {
    let (header, rest) = split_line(buf)?;
    let Some(len) = header.strip_prefix(b"$") else {
        return Some(None);
    };
    let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
    let body = rest.get(..len)?;
    Some(Some(String::from_utf8_lossy(body).into_owned()))
}

fn resolve_program(
    program: &Path,
    search_path: Option<&OsStr>,
) -> Result<PathBuf, RedisServerError> {
    if program.components().count() != 1 || program.is_absolute() {
        return Ok(program.to_path_buf());
    }
    let Some(search_path) = search_path else {
        return Err(RedisServerError::NotInstalled);
    };
    std::env::split_paths(search_path)
        // An empty PATH entry means the current directory; running whatever
        // `redis-server` happens to sit there is not what anyone wants.
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or(RedisServerError::NotInstalled)
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// Binding port 0 lets the OS pick a free port; it is released right away, so the
/// caller must cope with losing it to someone else before redis binds it.
fn pick_free_port() -> Result<u16, RedisServerError> {
    for _ in 0..8 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(RedisServerError::io("picking a free loopback port"))?;
        let port = listener
            .local_addr()
            .map_err(RedisServerError::io("picking a free loopback port"))?
            .port();
        // Never collide with a developer's own Redis, even if the OS offers its port.
        if port != DEFAULT_REDIS_PORT {
            return Ok(port);
        }
    }
    Err(RedisServerError::Io {
        context: "picking a free loopback port".into(),
        source: io::Error::new(io::ErrorKind::AddrNotAvailable, "the OS kept offering 6379"),
    })
}

async fn launch(
    program: &Path,
    port: u16,
    dir: &Path,
    append_only: bool,
    extra_args: &[String],
) -> Result<Child, RedisServerError> {
    let log_path = dir.join("redis.log");
    // Only lines written by this launch are relevant to its failure.
    let log_offset = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    // Configuration errors are printed to stderr before redis opens its logfile;
    // sending stderr to the same file keeps them in the error report.
    let stderr = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(RedisServerError::io(format!(
            "opening {}",
            log_path.display()
        )))?;

    let mut cmd = Command::new(program);
    cmd.arg("--bind")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg(if append_only { "yes" } else { "no" });
    if append_only {
        cmd.arg("--appendfsync").arg("always");
    }
    cmd.arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log_path)
        .arg("--protected-mode")
        .arg("yes")
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true);

    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => RedisServerError::NotInstalled,
        _ => RedisServerError::Spawn(e),
    })?;

    let pid = child.id();
    let started = Instant::now();
    loop {
        // Racing the probe against the child's exit reports a failed start (e.g. port
        // taken by a listener that never answers) at once instead of after a probe timeout.
        let answer = tokio::select! {
            exited = child.wait() => {
                return Err(match exited {
                    Ok(status) => RedisServerError::Exited {
                        port,
                        status,
                        log_tail: log_tail(&log_path, log_offset).await,
                    },
                    Err(e) => {
                        let _ = child.kill().await;
                        RedisServerError::io("waiting for redis-server")(e)
                    }
                });
            }
            answer = probe(port) => answer,
        };
        // A pid that is not ours means another server owns the port; ours will fail to
        // bind and exit, which the next round reports.
        if let Some(answer) = answer
            && answer.pong
            && answer.pid.is_none_or(|p| Some(p) == pid)
        {
            return Ok(child);
        }
        let waited = started.elapsed();
        if waited >= READY_TIMEOUT {
            let _ = child.kill().await;
            return Err(RedisServerError::NotReady {
                port,
                waited,
                log_tail: log_tail(&log_path, log_offset).await,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

struct ProbeAnswer {
    /// PING answered `+PONG` (not `-LOADING` while the AOF is replayed).
    pong: bool,
    /// `process_id` from `INFO server`, when the server allowed the command.
    pid: Option<u32>,
}

async fn probe(port: u16) -> Option<ProbeAnswer> {
    exchange(port, b"PING\r\nINFO server\r\n", parse_probe).await
}

/// Sends `request` to the loopback `port` and reads until `parse` recognises a
/// complete answer, within `PROBE_TIMEOUT`.
async fn exchange<T>(port: u16, request: &[u8], parse: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            if let Some(answer) = parse(&buf) {
                return Some(answer);
            }
            if buf.len() > 256 * 1024 {
                return None;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// Parses the replies to `PING` and `INFO server`; `None` until both are complete.
fn parse_probe(buf: &[u8]) -> Option<ProbeAnswer> {
    let (first, rest) = split_line(buf)?;
    let pong = first == b"+PONG";
    let (header, rest) = split_line(rest)?;
    let pid = match header.split_first() {
        Some((b'$', len)) => {
            let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
            let body = rest.get(..len)?;
            String::from_utf8_lossy(body)
                .lines()
                .find_map(|line| line.strip_prefix("process_id:"))
                .and_then(|pid| pid.trim().parse().ok())
        }
        // An error reply (e.g. -NOAUTH, -LOADING) cannot identify the server.
        _ => None,
    };
    Some(ProbeAnswer { pong, pid })
}

fn split_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..end], &buf[end + 2..]))
}

async fn log_tail(path: &Path, offset: u64) -> String {
    let Ok(bytes) = tokio::fs::read(path).await else {
        return format!("({} could not be read)", path.display());
    };
    let start = usize::try_from(offset).unwrap_or(0);
    let recent = bytes.get(start..).unwrap_or(&bytes);
    let text = String::from_utf8_lossy(recent);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    if tail.len() > LOG_TAIL_BYTES {
        let mut cut = tail.len() - LOG_TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
    if tail.trim().is_empty() {
        "(log is empty)".into()
    } else {
        tail
    }
}

/// A private temporary directory, removed on drop. (`tempfile` is only a
/// dev-dependency of this crate.)
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn new() -> Result<Self, RedisServerError> {
        use ring::rand::{SecureRandom, SystemRandom};
        let base = std::env::temp_dir();
        let mut last_error = None;
        for _ in 0..8 {
            let mut nonce = [0u8; 8];
            SystemRandom::new()
                .fill(&mut nonce)
                .map_err(|_| RedisServerError::Io {
                    context: "creating a temporary directory".into(),
                    source: io::Error::other("system RNG failure"),
                })?;
            let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
            let path = base.join(format!("facevault-redis-{}-{nonce}", std::process::id()));
            let mut builder = fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            match builder.create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => {
                    return Err(RedisServerError::io(format!("creating {}", path.display()))(e));
                }
            }
        }
        Err(RedisServerError::Io {
            context: format!("creating a temporary directory in {}", base.display()),
            source: last_error.unwrap_or_else(|| io::Error::other("no unused name found")),
        })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(port: u16, request: &[u8], reply_prefix_len: usize) -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        stream.write_all(request).await?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 1024];
        while reply.len() < reply_prefix_len {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        Ok(reply)
    }

    async fn ping(port: u16) -> io::Result<Vec<u8>> {
        send(port, b"PING\r\n", 7).await
    }

    fn resp(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        out.into_bytes()
    }

    #[tokio::test]
    async fn start_answers_ping() {
        let server = RedisServer::start(RedisOptions::default()).await.unwrap();
        assert_ne!(server.port(), DEFAULT_REDIS_PORT);
        assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
        assert_eq!(ping(server.port()).await.unwrap(), b"+PONG\r\n");
        assert!(server.log_path().starts_with(server.dir()));
        assert!(server.log_path().exists());
    }

    #[tokio::test]
    async fn two_servers_get_different_ports_and_dirs() {
        let (a, b) = tokio::join!(
            RedisServer::start(RedisOptions::default()),
            RedisServer::start(RedisOptions::default())
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.port(), b.port());
        assert_ne!(a.dir(), b.dir());
        assert_eq!(ping(a.port()).await.unwrap(), b"+PONG\r\n");
        assert_eq!(ping(b.port()).await.unwrap(), b"+PONG\r\n");
    }

    #[tokio::test]
    async fn stop_refuses_connections_and_restart_brings_it_back() {
        let mut server = RedisServer::start(RedisOptions::default()).await.unwrap();
        let port = server.port();
        server.stop().await;
        let err = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        server.stop().await;

        server.restart().await.unwrap();
        assert_eq!(server.port(), port);
        assert_eq!(ping(port).await.unwrap(), b"+PONG\r\n");
        // Restarting a running server works too.
        server.restart().await.unwrap();
        assert_eq!(ping(port).await.unwrap(), b"+PONG\r\n");
    }

    #[tokio::test]
    async fn append_only_data_survives_kill_and_restart() {
        let mut server = RedisServer::start(RedisOptions {
            append_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
        let port = server.port();
        assert_eq!(
            send(port, &resp(&["SET", "k", "v"]), 5).await.unwrap(),
            b"+OK\r\n"
        );
        server.stop().await;
        server.restart().await.unwrap();
        assert_eq!(
            send(port, &resp(&["GET", "k"]), 7).await.unwrap(),
            b"$1\r\nv\r\n"
        );
    }

    #[tokio::test]
    async fn without_append_only_data_is_gone_after_restart() {
        let mut server = RedisServer::start(RedisOptions::default()).await.unwrap();
        let port = server.port();
        assert_eq!(
            send(port, &resp(&["SET", "k", "v"]), 5).await.unwrap(),
            b"+OK\r\n"
        );
        server.restart().await.unwrap();
        assert_eq!(
            send(port, &resp(&["GET", "k"]), 5).await.unwrap(),
            b"$-1\r\n"
        );
    }

    #[tokio::test]
    async fn not_installed_when_path_has_no_redis_server() {
        let empty = tempfile::tempdir().unwrap();
        let err = RedisServer::start_with_program(
            Path::new("redis-server"),
            Some(empty.path().as_os_str()),
            RedisOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RedisServerError::NotInstalled), "{err:?}");
        assert!(
            err.to_string()
                .contains("sudo apt-get install redis-server")
        );

        let err = RedisServer::start_with_program(
            Path::new("redis-server"),
            None,
            RedisOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RedisServerError::NotInstalled), "{err:?}");

        let missing = empty.path().join("bin/redis-server");
        let err = RedisServer::start_with_program(&missing, None, RedisOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, RedisServerError::NotInstalled), "{err:?}");
    }

    #[tokio::test]
    async fn non_executable_file_on_path_is_not_redis() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("redis-server"), "").unwrap();
        let err = RedisServer::start_with_program(
            Path::new("redis-server"),
            Some(dir.path().as_os_str()),
            RedisOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RedisServerError::NotInstalled), "{err:?}");
    }

    #[tokio::test]
    async fn config_errors_are_reported_with_the_log() {
        let started = Instant::now();
        let err = RedisServer::start(RedisOptions {
            extra_args: vec!["--no-such-directive".into(), "1".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < READY_TIMEOUT);
        let RedisServerError::Exited { log_tail, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(log_tail.contains("no-such-directive"), "{log_tail}");
    }

    #[tokio::test]
    async fn explicit_port_in_use_is_an_error_with_the_log() {
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = squatter.local_addr().unwrap().port();
        let err = RedisServer::start(RedisOptions {
            port: Some(port),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(err.is_port_conflict(), "{err}");
    }

    #[tokio::test]
    async fn lost_port_race_is_retried_with_another_port() {
        let squatters: Vec<TcpListener> = (0..=PORT_RETRIES)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
            .collect();
        let taken: Vec<u16> = squatters
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let path = std::env::var_os("PATH");

        // Every pick but the last is taken by the time redis binds it.
        let mut picks = taken[..PORT_RETRIES].iter().copied();
        let server = RedisServer::start_inner(
            Path::new("redis-server"),
            path.as_deref(),
            RedisOptions::default(),
            || picks.next().map_or_else(pick_free_port, Ok),
        )
        .await
        .unwrap();
        assert!(!taken.contains(&server.port()));
        assert_eq!(ping(server.port()).await.unwrap(), b"+PONG\r\n");

        // Giving up after the retries reports the conflict.
        let mut picks = taken.iter().copied();
        let err = RedisServer::start_inner(
            Path::new("redis-server"),
            path.as_deref(),
            RedisOptions::default(),
            || picks.next().map_or_else(pick_free_port, Ok),
        )
        .await
        .unwrap_err();
        assert!(err.is_port_conflict(), "{err}");
    }

    #[tokio::test]
    async fn foreign_redis_on_the_port_is_not_mistaken_for_ours() {
        let foreign = RedisServer::start(RedisOptions::default()).await.unwrap();
        let err = RedisServer::start(RedisOptions {
            port: Some(foreign.port()),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(err.is_port_conflict(), "{err}");
    }

    #[tokio::test]
    async fn explicit_dir_is_used_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("redis data");
        let server = RedisServer::start(RedisOptions {
            dir: Some(dir.clone()),
            append_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(server.dir(), fs::canonicalize(&dir).unwrap());
        assert!(dir.join("redis.log").exists());
        drop(server);
        assert!(dir.join("redis.log").exists());
    }

    #[tokio::test]
    async fn temp_dir_is_removed_on_drop() {
        let server = RedisServer::start(RedisOptions::default()).await.unwrap();
        let dir = server.dir().to_path_buf();
        assert!(dir.exists());
        drop(server);
        assert!(!dir.exists());
    }

    #[test]
    fn probe_parsing() {
        let info = b"# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\n";
        let mut reply = format!("+PONG\r\n${}\r\n", info.len()).into_bytes();
        reply.extend_from_slice(info);
        reply.extend_from_slice(b"\r\n");
        let answer = parse_probe(&reply).unwrap();
        assert!(answer.pong);
        assert_eq!(answer.pid, Some(4242));
        for cut in 0..reply.len() - 2 {
            assert!(parse_probe(&reply[..cut]).is_none(), "{cut}");
        }
        let answer = parse_probe(b"-LOADING Redis is loading\r\n-LOADING x\r\n").unwrap();
        assert!(!answer.pong);
        assert!(parse_probe(b"+PONG\r\n$99999999999999999999999\r\n").is_none());
        assert!(parse_probe(b"+PONG\r\n$-5\r\n").is_none());
    }

    #[test]
    fn bulk_text_parsing() {
        let reply = b"$17\r\ncluster_state:ok\n\r\n";
        assert_eq!(
            parse_bulk_text(reply),
            Some(Some("cluster_state:ok\n".to_owned()))
        );
        for cut in 0..reply.len() - 2 {
            assert_eq!(parse_bulk_text(&reply[..cut]), None, "{cut}");
        }
        assert_eq!(
            parse_bulk_text(b"-ERR cluster support disabled\r\n"),
            Some(None)
        );
    }
}
