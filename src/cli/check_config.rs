//! `facevault check-config` and `serve --check`: everything `serve` checks
//! before it serves, every problem at once, each with its place in the file.

use std::path::Path;

use crate::config::{ConfigFile, Overrides};
use crate::startup::Preflight;

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    #[command(flatten)]
    pub config: super::ConfigPath,
    #[command(flatten)]
    pub overrides: Overrides,
}

pub async fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    show_warnings();
    check(&args.config.path, &args.overrides).await?;
    super::print_line(&format!(
        "{}: ok (everything serve checks before it talks to Redis)",
        args.config.path.display()
    ))
}

/// `serve --check`: the same checks, then one Redis round trip.
pub async fn run_with_redis(config: &Path, overrides: &Overrides) -> anyhow::Result<()> {
    show_warnings();
    let checked = check(config, overrides).await?;
    checked.ping_redis().await?;
    super::print_line(&format!(
        "{}: ok, and Redis answered PING",
        config.display()
    ))
}

/// Parses and validates the file and runs the start-up checks of [`Preflight`]
/// (even when validation found problems, so that all are reported at once);
/// every problem comes with its `[section] key` and line.
pub async fn check(config: &Path, overrides: &Overrides) -> anyhow::Result<Preflight> {
    let file = ConfigFile::read(config)?;
    let (settings, mut problems) = file.unvalidated(overrides)?;
    match Preflight::run(settings).await {
        Ok(checked) if problems.is_empty() => Ok(checked),
        Ok(_) => Err(file.locate(problems).into()),
        Err(more) => {
            problems.extend(more);
            Err(file.locate(problems).into())
        }
    }
}

/// The checks' warnings (a provisional holiday calendar, Redis without TLS
/// across a network) go to stderr: they do not fail the check, but the
/// operator should see them.
fn show_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_target(false)
        .without_time()
        .try_init();
}
