//! `facevault keys`: the key files are the key store, and these commands are its
//! lifecycle. The operator's cycle is rotate → wait for `status` to show 0 DEKs
//! under the old epoch → retire; the service picks up each change by itself
//! (`keys.reload_interval_secs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::config::{Overrides, Settings};
use crate::crypto::keyfiles::{self, KeyPaths, KeyringDoc};
use crate::storage::Store;
use crate::vault::dek_census;

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Add KEK epoch N+1 and make it active (the file is replaced atomically, mode 0600).
    Rotate {
        /// Directory holding keyring.json.
        #[arg(long)]
        dir: PathBuf,
    },
    /// The epochs in the keyring, how many DEKs each still wraps in Redis, and
    /// the re-wrap progress.
    Status {
        /// Configuration file (names the keyring and Redis).
        #[arg(long, short, env = "FACEVAULT_CONFIG", hide_env_values = true)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Remove an epoch's secret from the keyring once no DEK is wrapped under it.
    /// Refused (exit 2) while it is active, unknown, or still wraps DEKs.
    Retire {
        /// Directory holding keyring.json.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        epoch: u32,
        /// Configuration file (names Redis).
        #[arg(long, short, env = "FACEVAULT_CONFIG", hide_env_values = true)]
        config: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Add a new sealing key per suite; older keys stay accepted for --overlap-secs.
    RotateSealing {
        /// Directory holding sealing-keys.json (sealing-public.json is rewritten beside it).
        #[arg(long)]
        dir: PathBuf,
        /// Days the new keys are accepted.
        #[arg(long, default_value_t = 365)]
        validity_days: i64,
        /// Seconds the older keys stay accepted (and published) from now.
        #[arg(long, default_value_t = 7 * 86_400)]
        overlap_secs: i64,
    },
}

/// A refusal the operator must act on: exit status 2, the file unchanged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate { dir } => {
            let path = KeyPaths::in_dir(&dir).keyring;
            let epoch = keyfiles::rotate_keyring(&path)?;
            super::print_line(&format!(
                "epoch {epoch} is now active in {}; replicas pick it up within keys.reload_interval_secs, \
                 then the re-wrap worker moves every DEK to it (watch `facevault keys status`)",
                path.display()
            ))
        }
        KeysCommand::Status {
            config,
            json,
            overrides,
        } => status(&config, &overrides, json).await,
        KeysCommand::Retire {
            dir,
            epoch,
            config,
            overrides,
        } => retire(&dir, epoch, &config, &overrides).await,
        KeysCommand::RotateSealing {
            dir,
            validity_days,
            overlap_secs,
        } => {
            if !(1..=3650).contains(&validity_days) {
                anyhow::bail!("--validity-days must be between 1 and 3650");
            }
            if !(0..=365 * 86_400).contains(&overlap_secs) {
                anyhow::bail!("--overlap-secs must be between 0 and one year");
            }
            let ids = keyfiles::rotate_sealing(
                &dir,
                validity_days,
                chrono::Duration::seconds(overlap_secs),
            )?;
            super::print_line(&format!(
                "added sealing keys {}; older keys are accepted for {overlap_secs} s more; \
                 clients fetch the new ones from GetSealingKeys or {}",
                ids.join(", "),
                dir.join(keyfiles::SEALING_PUBLIC_FILE).display()
            ))
        }
    }
}

fn connect(settings: &Settings) -> anyhow::Result<Store> {
    Ok(Store::connect(&settings.redis.target(
        Duration::from_millis(settings.redis.timeout_ms.max(5000)),
    )?)?)
}

async fn status(config: &Path, overrides: &Overrides, as_json: bool) -> anyhow::Result<()> {
    let settings = Settings::load(config, overrides)?;
    let doc = keyfiles::read_keyring(&settings.keys.keyring)?;
    let store = connect(&settings)?;
    let census = dek_census(&store)
        .await
        .context("cannot count the DEKs in Redis")?;
    let in_use = store
        .epochs_in_use(chrono::Utc::now().timestamp_millis())
        .await
        .context("cannot read which epochs the running processes use")?;
    let policy = settings.keys.epoch_policy();
    let epochs = doc.epochs();
    let active = doc.active_epoch();
    let total: u64 = census.by_epoch.values().sum();
    let under_active = census.by_epoch.get(&active).copied().unwrap_or(0);
    let pending = total - under_active;
    let created = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
    };
    let ts = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let rows: Vec<_> = epochs
        .iter()
        .enumerate()
        .map(|(i, (epoch, created_at))| {
            let successor = epochs.get(i + 1).and_then(|(_, c)| created(c));
            let retire_by = (*epoch != active)
                .then(|| policy.retire_by(created(created_at), successor))
                .flatten();
            json!({
                "epoch": epoch,
                "active": *epoch == active,
                "created_at": created_at,
                "deks": census.by_epoch.get(epoch).copied().unwrap_or(0),
                "retire_by": ts(retire_by),
                "rotate_by": (*epoch == active).then(|| ts(policy.rotate_by(created(created_at)))).flatten(),
                "shares_identity_root": doc.identity_bound_epoch() == Some(*epoch),
            })
        })
        .collect();
    // DEKs under an epoch the keyring no longer has: unreadable (shredded, or
    // restored from a copy older than a retirement).
    let unreadable: u64 = census
        .by_epoch
        .iter()
        .filter(|(e, _)| !epochs.iter().any(|(n, _)| n == *e))
        .map(|(_, n)| n)
        .sum();
    let out = json!({
        "active_epoch": active,
        "epochs": rows,
        "retired": doc.retired(),
        "deks_total": total,
        "deks_unreadable": unreadable,
        "templates_corrupt": census.corrupt,
        "subjects": census.subjects,
        "processes": in_use
            .iter()
            .map(|(id, epoch)| json!({"id": id, "active_epoch": epoch}))
            .collect::<Vec<_>>(),
        "rewrap": {
            "pending": pending,
            "done_percent": if total == 0 { 100.0 } else { under_active as f64 * 100.0 / total as f64 },
            "per_second": settings.keys.rewrap_per_second,
        },
    });
    if as_json {
        return super::print_line(&serde_json::to_string_pretty(&out)?);
    }
    super::print_line(&format!(
        "keyring {}: active epoch {active}",
        settings.keys.keyring.display()
    ))?;
    super::print_line("epoch  active  DEKs      created               retire by")?;
    for row in &rows {
        super::print_line(&format!(
            "{:<6} {:<7} {:<9} {:<21} {}",
            row["epoch"],
            if row["active"] == true { "yes" } else { "" },
            row["deks"],
            row["created_at"].as_str().unwrap_or("unknown"),
            row["retire_by"]
                .as_str()
                .unwrap_or(if row["active"] == true { "-" } else { "now" }),
        ))?;
    }
    for r in doc.retired() {
        super::print_line(&format!("{:<6} retired {}", r.epoch, r.retired_at))?;
    }
    let lagging = in_use.iter().filter(|(_, e)| *e != active).count();
    super::print_line(&format!(
        "processes: {} running, {lagging} not yet on epoch {active}",
        in_use.len()
    ))?;
    super::print_line(&format!(
        "re-wrap: {pending} of {total} DEKs still under an older epoch ({}% done); {unreadable} unreadable; {} subjects read",
        out["rewrap"]["done_percent"]
            .as_f64()
            .map_or_else(String::new, |p| format!("{p:.1}")),
        census.subjects
    ))
}

async fn retire(
    dir: &Path,
    epoch: u32,
    config: &Path,
    overrides: &Overrides,
) -> anyhow::Result<()> {
    let settings = Settings::load(config, overrides)?;
    let path = KeyPaths::in_dir(dir).keyring;
    let doc = keyfiles::read_keyring(&path)?;
    check_retirable(&doc, epoch, settings.keys.reload_interval_secs)?;
    let store = connect(&settings)?;
    let stale: Vec<(String, u32)> = store
        .epochs_in_use(chrono::Utc::now().timestamp_millis())
        .await
        .context("cannot read which epochs the running processes use")?
        .into_iter()
        .filter(|(_, active)| *active <= epoch)
        .collect();
    if !stale.is_empty() {
        return Err(Refused(format!(
            "{} running process(es) still wrap new DEKs under epoch {epoch} or older (they have not \
             loaded the rotated keyring yet; on Kubernetes the kubelet refreshes a Secret within about a \
             minute, then the service reloads within keys.reload_interval_secs); try again shortly",
            stale.len()
        ))
        .into());
    }
    let census = dek_census(&store)
        .await
        .context("cannot count the DEKs in Redis")?;
    let left = census.by_epoch.get(&epoch).copied().unwrap_or(0);
    if left > 0 {
        return Err(Refused(format!(
            "epoch {epoch} still wraps {left} DEK(s) in Redis; retiring it now would make them unreadable. \
             Wait until `facevault keys status` shows 0 for it (the re-wrap worker moves them at \
             keys.rewrap_per_second = {}/s), then retire again",
            settings.keys.rewrap_per_second
        ))
        .into());
    }
    keyfiles::retire_epoch(&path, epoch)?;
    let bound = doc.identity_bound_epoch() == Some(epoch);
    super::print_line(&format!(
        "retired epoch {epoch} in {}: once every replica has reloaded and every older copy of this keyring \
         file is destroyed, copies of Redis wrapped under it cannot be opened{}",
        path.display(),
        if bound {
            ". Note: this epoch shares the identity root (a keyring from before key epochs), so its copies \
             stay readable to whoever holds the identity root; receipts never claim it shredded"
        } else {
            ""
        }
    ))
}

/// What the file alone shows: the epoch exists, is not active, and replicas
/// have had time to stop wrapping under it.
fn check_retirable(doc: &KeyringDoc, epoch: u32, reload_interval_secs: u64) -> anyhow::Result<()> {
    let epochs = doc.epochs();
    if let Some(r) = doc.retired().iter().find(|r| r.epoch == epoch) {
        return Err(Refused(format!(
            "epoch {epoch} was already retired at {}",
            r.retired_at
        ))
        .into());
    }
    let Some(index) = epochs.iter().position(|(n, _)| *n == epoch) else {
        let known: Vec<String> = epochs.iter().map(|(n, _)| n.to_string()).collect();
        return Err(Refused(format!(
            "epoch {epoch} is not in the keyring (it holds {})",
            known.join(", ")
        ))
        .into());
    };
    if epoch == doc.active_epoch() {
        return Err(Refused(format!(
            "epoch {epoch} is the active epoch; run `facevault keys rotate` first"
        ))
        .into());
    }
    // A replica that has not reloaded yet may still wrap new DEKs under it.
    let settle = chrono::Duration::seconds(2 * reload_interval_secs as i64);
    if let Some(next) = epochs
        .get(index + 1)
        .and_then(|(_, c)| c.as_deref())
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
    {
        let since = chrono::Utc::now().signed_duration_since(next);
        if since < settle {
            return Err(Refused(format!(
                "epoch {epoch} stopped being active only {} s ago; wait {} s (twice keys.reload_interval_secs) \
                 so no replica still wraps under it",
                since.num_seconds().max(0),
                settle.num_seconds()
            ))
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(dir: &Path) -> KeyringDoc {
        keyfiles::read_keyring(&KeyPaths::in_dir(dir).keyring).unwrap()
    }

    #[test]
    fn retirement_checks_what_the_file_shows() {
        let dir = tempfile::tempdir().unwrap();
        keyfiles::generate(dir.path(), 30).unwrap();
        let path = KeyPaths::in_dir(dir.path()).keyring;
        let refused = |epoch, reload| {
            check_retirable(&doc(dir.path()), epoch, reload)
                .unwrap_err()
                .downcast::<Refused>()
                .unwrap()
                .0
        };
        assert!(refused(1, 10).contains("active epoch"));
        assert!(refused(7, 10).contains("not in the keyring (it holds 1)"));
        assert_eq!(keyfiles::rotate_keyring(&path).unwrap(), 2);
        assert!(refused(1, 10).contains("wait 20 s"));
        check_retirable(&doc(dir.path()), 1, 0).unwrap();
        keyfiles::retire_epoch(&path, 1).unwrap();
        assert!(refused(1, 0).contains("already retired"));
        assert_eq!(
            keyfiles::rotate_keyring(&path).unwrap(),
            3,
            "numbers are never reused"
        );
    }
}
