//! Anchors: every signed tree head also goes where a Redis writer cannot reach
//! it. One JSON line per head in `audit.anchor_file` (append-only, flushed per
//! head), and one structured log line, target `facevault::audit::anchor`,
//! which the log pipeline and the OTLP log export carry off the machine. An
//! auditor who keeps any of them can later demand proof that the log only grew.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use super::heads::{TreeHead, b64};
use super::registry::Published;

pub struct Anchors {
    file: Option<Mutex<std::fs::File>>,
    path: Option<PathBuf>,
}

impl Anchors {
    /// Opens (creating, never truncating) the anchor file, if one is configured.
    pub fn open(path: Option<PathBuf>) -> std::io::Result<Self> {
        let file = match &path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Self { file, path })
    }

    /// Records a registry the service wrote: its generation and chain count.
    pub fn record_registry(&self, written: &Published) {
        tracing::info!(
            target: "facevault::audit::anchor",
            registry_generation = written.generation,
            registry_chains = written.chains,
            timestamp_ms = written.timestamp_ms,
            "audit registry written"
        );
        let line = RegistryAnchor {
            registry_generation: written.generation,
            registry_chains: written.chains,
            timestamp_ms: written.timestamp_ms,
        };
        if let Ok(line) = serde_json::to_string(&line) {
            self.append(&line);
        }
    }

    pub fn record(&self, head: &TreeHead) {
        tracing::info!(
            target: "facevault::audit::anchor",
            tenant = %head.tenant,
            chain_id = %head.chain_id,
            tree_size = head.tree_size,
            root_hash = %b64(&head.root_hash),
            timestamp_ms = head.timestamp_ms,
            signature = %b64(&head.signature),
            "signed tree head"
        );
        if let Ok(line) = serde_json::to_string(head) {
            self.append(&line);
        }
    }

    fn append(&self, line: &str) {
        let Some(file) = &self.file else {
            return;
        };
        let written = file
            .lock()
            .map_err(|_| std::io::Error::other("anchor file lock poisoned"))
            .and_then(|mut f| {
                // One write per line, so lines of concurrent writers never interleave.
                f.write_all(format!("{line}\n").as_bytes())?;
                f.flush()
            });
        if let Err(error) = written {
            tracing::error!(%error, path = ?self.path, "audit anchor not written to the anchor file");
        }
    }
}

/// A registry the service wrote, as the anchor file records it: a later
/// registry with a lower generation or fewer chains lost something.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryAnchor {
    #[serde(with = "super::heads::decimal")]
    pub registry_generation: u64,
    #[serde(with = "super::heads::decimal")]
    pub registry_chains: u64,
    #[serde(with = "super::heads::decimal")]
    pub timestamp_ms: u64,
}

/// An anchor file as read: the heads and registry records with their line
/// numbers, and the numbers of lines that are neither.
pub struct AnchorFile {
    pub heads: Vec<(usize, TreeHead)>,
    pub registries: Vec<(usize, RegistryAnchor)>,
    pub unreadable: Vec<usize>,
}

/// Reads an anchor file.
pub fn read(path: &std::path::Path) -> std::io::Result<AnchorFile> {
    let text = std::fs::read_to_string(path)?;
    let mut heads = Vec::new();
    let mut registries = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(registry) = serde_json::from_str::<RegistryAnchor>(line) {
            registries.push((i + 1, registry));
            continue;
        }
        match serde_json::from_str::<TreeHead>(line) {
            Ok(head) => heads.push((i + 1, head)),
            Err(_) => bad.push(i + 1),
        }
    }
    Ok(AnchorFile {
        heads,
        registries,
        unreadable: bad,
    })
}
