//! `bench --rewrap`: how fast the re-wrap worker moves DEKs to a new key epoch,
//! and what it costs verify while it runs.
//!
//! After the ordinary verify phase the bench counts the DEKs (`dek_census`),
//! rotates the keyring of the server it started (whose `keys.reload_interval_secs`
//! is 1 and `keys.rewrap_per_second` is `--rewrap-per-second`), and at once runs
//! a verify phase of the usual length and concurrency, `verify-during-rewrap`.
//!
//! **How the re-wrap is timed.** Not by polling `dek_census` during the phase:
//! a census reads every subject (two `HGETALL`s each), so polling it every 500 ms
//! would load Redis with more reads than the re-wrap itself makes, and the verify
//! figure would measure the census as much as the re-wrap (the report gives the
//! census's own duration, `census_ms`, for scale). Instead the bench polls, every
//! 50 ms, the walk's saved cursor (`Store::rewrap_cursor`, one `HMGET`): the worker
//! saves a non-zero cursor after every page of 100 subjects but the last, and 0
//! after the last. The walk runs from the last poll that saw no walk before the
//! first that saw one, to the first poll that sees the cursor back at 0, so
//! `seconds` errs long by at most two poll intervals and DEKs/s errs low. The
//! bench's stack has one tenant, so one cursor. A census after the phase confirms
//! that nothing is left under the old epoch, and `deks` is what the census before
//! the rotation counted minus what is left.
//!
//! A ledger small enough to come back in one `SSCAN` page leaves the cursor at 0
//! throughout, and a short walk can fall between two polls. So when the census
//! before the rotation took at most 5 ms (a few hundred subjects), the bench also
//! takes a census at each poll until it sees the walk, and a census at 0 ends the
//! measurement. That, and DEKs left after the walk (the worker retries them a
//! minute later; the bench then polls the census every 500 ms), are timed from
//! the rotation to the first census at 0, which includes the key reload (up to
//! 1 s) and the worker's poll (200 ms): an upper bound (`timing: "census"`).
//!
//! **What "during" means.** The verify figures for `verify-during-rewrap` are
//! those of the calls that *started* while the walk ran (clipped to the phase),
//! over that span; `overlap_fraction` says how much of the phase that was,
//! `after` holds the calls of the phase that started after the walk (a control:
//! same probes, same Redis, no walk) and `phase` the whole phase. Before is the ordinary verify phase of the same
//! run, on the same subjects, with fresh probes.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::Samples;
use super::stats::PhaseStats;
use crate::crypto::keyfiles;
use crate::storage::Store;
use crate::vault::{DekCensus, dek_census};

/// How often the walk's cursor is read during the phase.
const CURSOR_POLL: Duration = Duration::from_millis(50);
/// A census at most this long is cheap enough to poll during the phase.
const CHEAP_CENSUS: Duration = Duration::from_millis(5);
/// How often the census is taken after the phase, when DEKs are left.
const CENSUS_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize)]
pub(super) struct RewrapReport {
    /// DEKs moved to the new epoch.
    pub deks: u64,
    pub seconds: f64,
    pub deks_per_second: f64,
    pub limit_per_second: u32,
    /// `cursor` (the walk itself, ±2 × 50 ms) or `census` (from the rotation,
    /// an upper bound).
    pub timing: &'static str,
    /// From the rotation to the end of the walk (includes the key reload).
    pub seconds_from_rotation: f64,
    pub old_epoch: u32,
    pub new_epoch: u32,
    /// One census over every subject, before the rotation.
    pub census_ms: f64,
    /// With `cursor` timing: distinct cursor positions seen (about one per page
    /// of 100 subjects; far more than subjects / 100 means the walk ran twice),
    /// and the longest time the walk stood at one (a page takes about
    /// 100 / rate s; seconds mean a stalled or retried walk).
    pub cursor_positions: Option<u64>,
    pub cursor_longest_stall_s: Option<f64>,
    pub verify_p99_ms_before: f64,
    pub verify_p99_ms_during: f64,
    pub p99_ratio: Option<f64>,
    pub verify_calls_per_second_before: f64,
    pub verify_calls_per_second_during: f64,
    pub throughput_ratio: Option<f64>,
    /// The part of the verify-during-rewrap phase the walk covered.
    pub overlap_fraction: f64,
    /// The part of the walk that ran under verify load (below 1 when the walk
    /// outlasted the phase: the rest of it ran with the server otherwise idle).
    pub walk_under_load_fraction: f64,
    /// Verify calls that started while the walk ran.
    pub during: PhaseStats,
    /// Verify calls of the same phase that started after the walk, when that
    /// is at least a second: a control on the same probes and Redis state.
    pub after: Option<PhaseStats>,
    /// The whole verify-during-rewrap phase.
    pub phase: PhaseStats,
}

/// What the cursor polls saw, as instants.
#[derive(Debug, Default)]
struct Walk {
    /// The last poll that saw no walk under way, before one was seen.
    idle: Option<Instant>,
    /// The first poll that saw a walk under way.
    started: Option<Instant>,
    /// The first poll after that which saw every cursor back at 0.
    ended: Option<Instant>,
    /// With a cheap census and no walk seen: when a census first saw nothing
    /// left under the old epoch.
    census_zero: Option<Instant>,
    /// Distinct cursor positions seen (about one per page of the walk).
    positions: u64,
    /// The longest time one position was seen, and since when it is seen.
    longest_stall: Duration,
    position: Option<(Vec<u64>, Instant)>,
}

/// DEKs under any epoch but `epoch`.
fn not_under(census: &DekCensus, epoch: u32) -> u64 {
    census
        .by_epoch
        .iter()
        .filter(|(e, _)| **e != epoch)
        .map(|(_, n)| n)
        .sum()
}

/// Rotates `keyring`, runs `phase` (the verify-during-rewrap phase) at once, and
/// times the re-wrap while it runs; `before` is the verify phase it compares to.
pub(super) async fn measure<P>(
    store: &Store,
    keyring: &Path,
    limit_per_second: u32,
    timeout: Duration,
    before: &PhaseStats,
    quiet: bool,
    phase: P,
) -> anyhow::Result<RewrapReport>
where
    P: Future<Output = Samples>,
{
    let tenants = store.ledger_tenants().await?;
    let old_epoch = keyfiles::read_keyring(keyring)?.active_epoch();
    let t = Instant::now();
    let census = dek_census(store).await.context("cannot count the DEKs")?;
    let census_took = t.elapsed();
    let census_ms = census_took.as_secs_f64() * 1000.0;
    let total: u64 = census.by_epoch.values().sum();
    if census.by_epoch.get(&old_epoch).copied() != Some(total) || total == 0 {
        bail!(
            "before the rotation every DEK should be under epoch {old_epoch}; the census shows {:?}",
            census.by_epoch
        );
    }
    if !quiet {
        eprintln!(
            "re-wrap: {total} DEKs under epoch {old_epoch} (census took {census_ms:.0} ms); rotating the keyring …"
        );
    }

    let new_epoch = keyfiles::rotate_keyring(keyring)?;
    let rotated = Instant::now();
    let deadline = rotated + timeout;
    let poll = {
        let store = store.clone();
        async move {
            let mut walk = Walk::default();
            while Instant::now() < deadline {
                let seen = Instant::now();
                let mut walking = false;
                let mut cursors = Vec::with_capacity(tenants.len());
                for tenant in &tenants {
                    match store.rewrap_cursor(tenant, new_epoch).await {
                        Ok(cursor) => {
                            walking |= cursor != 0;
                            cursors.push(cursor);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "cannot read the re-wrap cursor");
                        }
                    }
                }
                if walking {
                    match &walk.position {
                        Some((same, since)) if *same == cursors => {
                            walk.longest_stall = walk.longest_stall.max(seen - *since);
                        }
                        _ => {
                            walk.positions += 1;
                            walk.position = Some((cursors, seen));
                        }
                    }
                }
                match (walking, walk.started) {
                    (false, None) => {
                        walk.idle = Some(seen);
                        // A small ledger may be walked in one page, or between two
                        // polls: its census is cheap, so it is taken too.
                        if census_took <= CHEAP_CENSUS
                            && dek_census(&store)
                                .await
                                .is_ok_and(|c| not_under(&c, new_epoch) == 0)
                        {
                            walk.census_zero = Some(Instant::now());
                            break;
                        }
                    }
                    (true, None) => {
                        walk.started = Some(seen);
                        if !quiet {
                            eprintln!(
                                "  re-wrap: walk seen {:.2} s after the rotation",
                                (seen - rotated).as_secs_f64()
                            );
                        }
                    }
                    (false, Some(_)) => {
                        walk.ended = Some(seen);
                        if !quiet {
                            eprintln!(
                                "  re-wrap: walk done {:.2} s after the rotation",
                                (seen - rotated).as_secs_f64()
                            );
                        }
                        break;
                    }
                    (true, Some(_)) => {}
                }
                tokio::time::sleep(CURSOR_POLL.saturating_sub(seen.elapsed())).await;
            }
            walk
        }
    };
    let (samples, walk) = tokio::join!(phase, poll);

    // What is left under the old epoch; with no walk seen, or DEKs left after
    // it (retried a minute later), this times it.
    let mut census_zero = walk.census_zero;
    let mut first_census = true;
    let left = loop {
        let census = dek_census(store).await.context("cannot count the DEKs")?;
        let left = not_under(&census, new_epoch);
        if left == 0 {
            census_zero.get_or_insert_with(Instant::now);
            break 0;
        }
        first_census = false;
        if Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(CENSUS_POLL).await;
    };
    if left > 0 {
        bail!(
            "the re-wrap did not finish within {:.0} s: {left} of {total} DEKs are still under epoch {old_epoch}",
            timeout.as_secs_f64()
        );
    }
    let (timing, from, to) = match walk {
        Walk {
            idle,
            started: Some(_),
            ended: Some(ended),
            ..
        } if first_census => ("cursor", idle.unwrap_or(rotated), ended),
        _ => (
            "census",
            rotated,
            census_zero.expect("the census reached 0"),
        ),
    };
    let deks = total - left;
    let by_cursor = timing == "cursor";
    let seconds = (to - from).as_secs_f64();

    // The verify calls that started while the walk ran, clipped to the phase.
    let offset = |i: Instant| i.saturating_duration_since(samples.started);
    let (a, b) = (
        offset(from).min(samples.elapsed),
        offset(to).min(samples.elapsed),
    );
    let during = samples.window(a, b);
    let after = (samples.elapsed.saturating_sub(b) >= Duration::from_secs(1))
        .then(|| samples.window(b, samples.elapsed));
    let phase = samples.stats();
    let ratio = |x: f64, y: f64| (y > 0.0).then(|| x / y);
    Ok(RewrapReport {
        deks,
        seconds,
        deks_per_second: if seconds > 0.0 {
            deks as f64 / seconds
        } else {
            0.0
        },
        limit_per_second,
        timing,
        seconds_from_rotation: (to - rotated).as_secs_f64(),
        old_epoch,
        new_epoch,
        census_ms,
        cursor_positions: by_cursor.then_some(walk.positions),
        cursor_longest_stall_s: by_cursor.then_some(walk.longest_stall.as_secs_f64()),
        verify_p99_ms_before: before.p99_ms,
        verify_p99_ms_during: during.p99_ms,
        p99_ratio: ratio(during.p99_ms, before.p99_ms),
        verify_calls_per_second_before: before.throughput_per_s,
        verify_calls_per_second_during: during.throughput_per_s,
        throughput_ratio: ratio(during.throughput_per_s, before.throughput_per_s),
        overlap_fraction: if samples.elapsed.is_zero() {
            0.0
        } else {
            (b - a).as_secs_f64() / samples.elapsed.as_secs_f64()
        },
        walk_under_load_fraction: if seconds > 0.0 {
            (b - a).as_secs_f64() / seconds
        } else {
            0.0
        },
        during,
        after,
        phase,
    })
}
