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
//! 10 ms, the walk's saved cursor (`Store::rewrap_cursor`, one `HMGET` per
//! tenant; the bench's stack has one): the worker saves a non-zero cursor after
//! every page of 100 subjects but the last, and 0 after the last.
//!
//! The worker walks in passes. It rests only after a pass that moved nothing,
//! so the pass that re-wraps (the one measured) is followed at once by a
//! confirming pass that re-reads every subject at the same rate and moves
//! nothing. The cursor is 0 between the two for only a few ms, so a pass also
//! counts as ended when the cursor comes back to a position the pass already
//! held (the positions of a walk over an unchanged set repeat). A pass runs from
//! the last poll before it was seen to the first poll that saw it over. That is
//! right to within about one page plus two polls (the first page's work starts
//! before its cursor is saved, the last page's rate-limit pause comes after its
//! 0 is saved; an end seen as a repeat is a page late): about 1% for 10,000
//! subjects at 2,000/s, but a walk of a few pages (the bench smoke) gives no
//! meaningful rate. A census after the phase confirms that nothing is left
//! under the old epoch; `deks` is what the census before the rotation counted.
//!
//! A ledger small enough to come back in one `SSCAN` page leaves the cursor at 0
//! throughout, and a short walk can fall between two polls. So when the census
//! before the rotation took at most 5 ms (a few hundred subjects), the bench also
//! takes a census at each poll until it sees the walk, and a census at 0 ends the
//! measurement. That, and DEKs still under the old epoch once the phase is over,
//! are timed from the rotation to the first census at 0, which includes the key
//! reload (up to 1 s) and the worker's poll (200 ms): an upper bound
//! (`timing: "census"`).
//!
//! **What "during" means.** The verify figures for `verify-during-rewrap` are
//! those of the calls that *started* during the re-wrapping pass (clipped to the
//! phase), over that span; `overlap_fraction` says how much of the phase that
//! was. The rest of the phase is split the same way: `confirming` (the
//! read-only pass) and `after` (the worker resting: a control on the same
//! probes and Redis state), each when at least a second of the phase; `phase`
//! is the whole phase. "Before" is the ordinary verify phase of the same run,
//! on the same subjects, with its own probes.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::Samples;
use super::stats::PhaseStats;
use crate::crypto::keyfiles;
use crate::storage::Store;
use crate::vault::{DekCensus, dek_census};

/// How often the walk's cursor is read during the phase.
const CURSOR_POLL: Duration = Duration::from_millis(10);
/// A census at most this long is cheap enough to poll during the phase.
const CHEAP_CENSUS: Duration = Duration::from_millis(5);
/// How often the census is taken after the phase, when DEKs are left.
const CENSUS_POLL: Duration = Duration::from_millis(500);
/// Verify windows shorter than this are not reported on their own.
const MIN_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize)]
pub(super) struct RewrapReport {
    /// DEKs moved to the new epoch.
    pub deks: u64,
    /// The re-wrapping pass of the walk.
    pub seconds: f64,
    pub deks_per_second: f64,
    pub limit_per_second: u32,
    /// `cursor` (the walk itself, to about a page) or `census` (from the
    /// rotation, an upper bound).
    pub timing: &'static str,
    /// From the rotation to the end of the re-wrapping pass (includes the key
    /// reload).
    pub seconds_from_rotation: f64,
    pub old_epoch: u32,
    pub new_epoch: u32,
    /// One census over every subject, before the rotation.
    pub census_ms: f64,
    /// With `cursor` timing: distinct cursor positions seen in the re-wrapping
    /// pass (about one per page of 100 subjects), and the longest time it stood
    /// at one (a page takes about 100 / rate s; seconds mean a stalled or
    /// retried walk).
    pub cursor_positions: Option<u64>,
    pub cursor_longest_stall_s: Option<f64>,
    /// The worker's next pass, which re-reads every subject and moves nothing
    /// (it rests only after a pass that moved nothing): its length, when it
    /// ended while the bench watched.
    pub confirming_pass_seconds: Option<f64>,
    pub verify_p99_ms_before: f64,
    pub verify_p99_ms_during: f64,
    pub p99_ratio: Option<f64>,
    pub verify_calls_per_second_before: f64,
    pub verify_calls_per_second_during: f64,
    pub throughput_ratio: Option<f64>,
    /// The part of the verify-during-rewrap phase the re-wrapping pass covered.
    pub overlap_fraction: f64,
    /// The part of the re-wrapping pass that ran under verify load (below 1
    /// when it outlasted the phase: the rest ran with the server otherwise idle).
    pub walk_under_load_fraction: f64,
    /// Verify calls that started during the re-wrapping pass.
    pub during: PhaseStats,
    /// Verify calls of the same phase that started after it, while the
    /// confirming pass ran (when that is at least a second of the phase).
    pub confirming: Option<PhaseStats>,
    /// Verify calls of the same phase that started after both passes, the
    /// worker resting (when that is at least a second): a control on the same
    /// probes and Redis state.
    pub after: Option<PhaseStats>,
    /// The whole verify-during-rewrap phase.
    pub phase: PhaseStats,
}

/// One pass of the walk, as the cursor polls saw it.
#[derive(Debug, Clone, Copy)]
struct Pass {
    /// The last poll before the pass was seen: it started after this.
    from: Instant,
    /// The first poll that saw it over: it ended before this.
    to: Option<Instant>,
}

/// What the cursor polls saw.
#[derive(Debug, Default)]
struct Watch {
    passes: Vec<Pass>,
    /// With a cheap census and no walk seen: when a census first saw nothing
    /// left under the old epoch.
    census_zero: Option<Instant>,
    /// In the first pass: distinct cursor positions, and the longest time one
    /// was seen.
    positions: u64,
    longest_stall: Duration,
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
    let phase_done = AtomicBool::new(false);
    let phase = async {
        let samples = phase.await;
        phase_done.store(true, Ordering::Relaxed);
        samples
    };
    let note = |what: &str, at: Instant| {
        if !quiet {
            eprintln!(
                "  re-wrap: {what} {:.2} s after the rotation",
                (at - rotated).as_secs_f64()
            );
        }
    };
    let poll = async {
        let mut watch = Watch::default();
        let mut last_poll = rotated;
        // The positions of the open pass, and the one seen last with since when.
        let mut this_pass: HashSet<Vec<u64>> = HashSet::new();
        let mut position: Option<(Vec<u64>, Instant)> = None;
        while Instant::now() < deadline {
            let now = Instant::now();
            let mut cursors = Vec::with_capacity(tenants.len());
            for tenant in &tenants {
                match store.rewrap_cursor(tenant, new_epoch).await {
                    Ok(cursor) => cursors.push(cursor),
                    Err(error) => tracing::warn!(%error, "cannot read the re-wrap cursor"),
                }
            }
            let open = watch.passes.last().is_some_and(|p| p.to.is_none());
            if cursors.len() < tenants.len() {
                // A failed read tells nothing.
            } else if cursors.iter().any(|&c| c != 0) {
                match &position {
                    Some((same, since)) if *same == cursors => {
                        if watch.passes.len() == 1 {
                            watch.longest_stall = watch.longest_stall.max(now - *since);
                        }
                    }
                    _ => {
                        // Back at a position of the open pass: the next pass began
                        // between two polls (the cursor's 0 between them was missed).
                        if open && this_pass.contains(&cursors) {
                            if let Some(pass) = watch.passes.last_mut() {
                                pass.to = Some(now);
                            }
                            note("pass ended (seen as a new pass)", now);
                        }
                        if !open || this_pass.contains(&cursors) {
                            this_pass.clear();
                            watch.passes.push(Pass {
                                from: last_poll,
                                to: None,
                            });
                            note("pass seen", now);
                        }
                        if watch.passes.len() == 1 {
                            watch.positions += 1;
                        }
                        this_pass.insert(cursors.clone());
                        position = Some((cursors, now));
                    }
                }
            } else {
                position = None;
                if open {
                    if let Some(pass) = watch.passes.last_mut() {
                        pass.to = Some(now);
                    }
                    note("pass ended", now);
                } else if watch.passes.is_empty()
                    // A small ledger may be walked in one page, or between two
                    // polls: its census is cheap, so it is taken too.
                    && census_took <= CHEAP_CENSUS
                    && dek_census(store)
                        .await
                        .is_ok_and(|c| not_under(&c, new_epoch) == 0)
                {
                    watch.census_zero = Some(Instant::now());
                    break;
                }
            }
            last_poll = now;
            // Enough: the re-wrapping and confirming passes are over, or the
            // phase is and so is the re-wrapping pass.
            let over = watch.passes.iter().filter(|p| p.to.is_some()).count();
            if over >= 2 || (over >= 1 && phase_done.load(Ordering::Relaxed)) {
                break;
            }
            tokio::time::sleep(CURSOR_POLL.saturating_sub(now.elapsed())).await;
        }
        watch
    };
    let (samples, watch) = tokio::join!(phase, poll);

    // What is left under the old epoch; with no walk seen, or DEKs left after
    // it (retried by a later pass), this times it.
    let mut census_zero = watch.census_zero;
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
    let (timing, from, to) = match watch.passes.first() {
        Some(&Pass { from, to: Some(to) }) if first_census => ("cursor", from, to),
        _ => (
            "census",
            rotated,
            census_zero.expect("the census reached 0"),
        ),
    };
    let by_cursor = timing == "cursor";
    let confirming_pass = watch.passes.get(1).filter(|_| by_cursor);
    let deks = total - left;
    let seconds = (to - from).as_secs_f64();

    // The verify calls that started in each part of the walk, clipped to the
    // phase: the re-wrapping pass, the confirming pass, and after both.
    let offset = |i: Instant| {
        i.saturating_duration_since(samples.started)
            .min(samples.elapsed)
    };
    let (a, b) = (offset(from), offset(to));
    let c = confirming_pass
        .and_then(|p| p.to)
        .map_or(samples.elapsed, offset);
    let window = |x: Duration, y: Duration| {
        (by_cursor && y.saturating_sub(x) >= MIN_WINDOW).then(|| samples.window(x, y))
    };
    let during = samples.window(a, b);
    let (confirming, after) = if confirming_pass.is_some() {
        (window(b, c), window(c, samples.elapsed))
    } else {
        // The phase ended before the confirming pass was seen.
        (window(b, samples.elapsed), None)
    };
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
        cursor_positions: by_cursor.then_some(watch.positions),
        cursor_longest_stall_s: by_cursor.then_some(watch.longest_stall.as_secs_f64()),
        confirming_pass_seconds: confirming_pass.and_then(|p| Some((p.to? - p.from).as_secs_f64())),
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
        confirming,
        after,
        phase,
    })
}
