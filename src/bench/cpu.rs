//! CPU per call of each process of a bench run, from `/proc/<pid>/task/*/schedstat`
//! (every thread's run time, in ns), sampled before and after a timed phase.
//!
//! The processes are named as the report names them: `server` (facevault serve),
//! `redis`, `loadgen` (this process: it drives the calls and does the client's
//! work) and `baseline` (the naive unprotected service, when it runs).

use std::collections::BTreeMap;

use serde::Serialize;

use super::stats::PhaseStats;

/// The processes a run watches. Without a pid (a `--target` run does not know
/// the server's) that process is not reported.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Procs {
    pub(super) server: Option<u32>,
    pub(super) redis: Option<u32>,
    pub(super) baseline: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct CpuMark {
    server: Option<u64>,
    redis: Option<u64>,
    loadgen: Option<u64>,
    baseline: Option<u64>,
}

/// CPU time per unit (call, event, subject), in µs, of each process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(super) struct CpuUs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) server: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) redis: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) loadgen: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) baseline: Option<f64>,
}

fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum(),
    )
}

impl Procs {
    pub(super) fn mark(&self) -> CpuMark {
        CpuMark {
            server: self.server.and_then(cpu_ns),
            redis: self.redis.and_then(cpu_ns),
            loadgen: cpu_ns(std::process::id()),
            baseline: self.baseline.and_then(cpu_ns),
        }
    }
}

impl CpuMark {
    /// µs per unit spent since `self`.
    pub(super) fn per(&self, later: &CpuMark, units: f64) -> CpuUs {
        let us = |a: Option<u64>, b: Option<u64>| {
            Some(b?.saturating_sub(a?) as f64 / 1000.0 / units.max(1.0))
        };
        CpuUs {
            server: us(self.server, later.server),
            redis: us(self.redis, later.redis),
            loadgen: us(self.loadgen, later.loadgen),
            baseline: us(self.baseline, later.baseline),
        }
    }
}

impl CpuUs {
    /// Adds `other` in, process by process (a process missing from either stays missing).
    pub(super) fn add(&mut self, other: &CpuUs) {
        let sum = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
        self.server = sum(self.server, other.server);
        self.redis = sum(self.redis, other.redis);
        self.loadgen = sum(self.loadgen, other.loadgen);
        self.baseline = sum(self.baseline, other.baseline);
    }

    pub(super) fn zero() -> Self {
        CpuUs {
            server: Some(0.0),
            redis: Some(0.0),
            loadgen: Some(0.0),
            baseline: None,
        }
    }

    /// `server / redis / loadgen` (with `/ baseline` when measured), `-` where unknown.
    pub(super) fn brief(&self) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        let mut out = format!(
            "{} / {} / {}",
            f(self.server),
            f(self.redis),
            f(self.loadgen)
        );
        if self.baseline.is_some() {
            out.push_str(&format!(" / {}", f(self.baseline)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measured_and_per_divides_by_units() {
        let procs = Procs::default();
        let before = procs.mark();
        // Burn 50 ms of CPU by a second clock (this thread's utime + stime in
        // /proc, in 10 ms ticks), not of wall time: on a loaded machine 50 ms
        // of wall time may be much less CPU. Then sleep: a thread's run time is
        // brought up to date when it is switched out.
        let ticks = || -> u64 {
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            // utime and stime are fields 14 and 15; fields[0] is field 3.
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        };
        let start = ticks();
        let mut x = 0u64;
        while ticks() < start + 6 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        let cpu = before.per(&procs.mark(), 10.0);
        // At least 40 ms over 10 units.
        assert!(cpu.loadgen.unwrap() > 4000.0, "{cpu:?}");
        assert_eq!((cpu.server, cpu.redis, cpu.baseline), (None, None, None));
        let fake = |n| CpuMark {
            server: Some(n),
            redis: None,
            loadgen: Some(2 * n),
            baseline: Some(n),
        };
        let per = fake(1_000).per(&fake(11_000), 5.0);
        assert_eq!(
            (per.server, per.loadgen, per.baseline),
            (Some(2.0), Some(4.0), Some(2.0))
        );
        assert_eq!(per.redis, None);
    }
}

/// What a run's timed phases cost, per call: each process's CPU, and Redis's
/// time per command when the run has one redis-server of its own.
pub(super) struct Budget {
    procs: Procs,
    redis: Option<redis::aio::MultiplexedConnection>,
    pub(super) cpu_us_per_call: BTreeMap<&'static str, CpuUs>,
    pub(super) redis_commands_per_call: BTreeMap<&'static str, Vec<RedisCommand>>,
}

impl Budget {
    /// `procs.redis` is taken from `redis` (the one redis-server, if any).
    pub(super) async fn new(
        mut procs: Procs,
        mut redis: Option<redis::aio::MultiplexedConnection>,
    ) -> anyhow::Result<Self> {
        if let Some(conn) = redis.as_mut() {
            procs.redis = Some(super::audit::redis_pid(conn).await?);
        }
        Ok(Self {
            procs,
            redis,
            cpu_us_per_call: BTreeMap::new(),
            redis_commands_per_call: BTreeMap::new(),
        })
    }

    /// Runs the phase `name` and records its cost per call.
    pub(super) async fn phase(
        &mut self,
        name: &'static str,
        work: impl Future<Output = PhaseStats>,
    ) -> PhaseStats {
        let commands = match self.redis.as_mut() {
            Some(conn) => CommandStats::read(conn).await,
            None => None,
        };
        let before = self.procs.mark();
        let stats = work.await;
        self.cpu_us_per_call
            .insert(name, before.per(&self.procs.mark(), stats.calls as f64));
        if let (Some(before), Some(conn)) = (commands, self.redis.as_mut())
            && let Some(after) = CommandStats::read(conn).await
        {
            self.redis_commands_per_call
                .insert(name, before.per(&after, stats.calls));
        }
        stats
    }
}

/// Redis's own account of its time, per command (`INFO commandstats`): with the
/// process's CPU above, it shows which commands a phase's Redis time went to.
#[derive(Debug, Clone, Default)]
pub(super) struct CommandStats(BTreeMap<String, (u64, u64)>);

impl CommandStats {
    pub(super) async fn read(conn: &mut redis::aio::MultiplexedConnection) -> Option<Self> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(conn)
            .await
            .ok()?;
        Some(Self(
            info.lines()
                .filter_map(|line| {
                    let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                    let field = |key: &str| {
                        fields
                            .split(',')
                            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))?
                            .parse::<u64>()
                            .ok()
                    };
                    Some((name.to_owned(), (field("calls")?, field("usec")?)))
                })
                .collect(),
        ))
    }

    /// Per command run since `self`: (calls, µs) per unit, busiest first.
    pub(super) fn per(&self, later: &CommandStats, units: u64) -> Vec<RedisCommand> {
        let units = units.max(1) as f64;
        let mut out: Vec<RedisCommand> = later
            .0
            .iter()
            .filter_map(|(name, &(calls, usec))| {
                let (calls0, usec0) = self.0.get(name).copied().unwrap_or((0, 0));
                let calls = calls.saturating_sub(calls0);
                (calls > 0).then(|| RedisCommand {
                    command: name.clone(),
                    calls_per_call: calls as f64 / units,
                    us_per_call: usec.saturating_sub(usec0) as f64 / units,
                })
            })
            .collect();
        out.sort_by(|a, b| b.us_per_call.total_cmp(&a.us_per_call));
        out
    }
}

/// One Redis command's share of a phase, per call of the phase.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RedisCommand {
    pub(super) command: String,
    pub(super) calls_per_call: f64,
    pub(super) us_per_call: f64,
}
