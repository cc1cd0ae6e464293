//! `facevault deadline`: the statutory deadline for a request instant, so anyone
//! (a compliance officer, a regulator) can check the service's arithmetic.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;

use crate::domain::calendar::{STATUTORY_WORKING_DAYS, WorkingCalendar};

#[derive(Debug, clap::Args)]
pub struct DeadlineArgs {
    /// The request instant, RFC 3339 (e.g. 2025-09-26T10:00:00+08:00).
    #[arg(long)]
    from: String,
    /// Working days to count after the request day.
    #[arg(long, default_value_t = STATUTORY_WORKING_DAYS)]
    working_days: u32,
    /// IANA time zone deciding the calendar day.
    #[arg(long, default_value = "Asia/Shanghai")]
    tz: String,
    /// Holiday file extending or overriding the official schedule.
    #[arg(long)]
    holiday_file: Option<PathBuf>,
    /// Print the working days counted as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DeadlineArgs) -> anyhow::Result<()> {
    let from = chrono::DateTime::parse_from_rfc3339(&args.from)
        .context("--from must be an RFC 3339 timestamp, e.g. 2025-09-26T10:00:00+08:00")?
        .with_timezone(&chrono::Utc);
    let tz: chrono_tz::Tz = args
        .tz
        .parse()
        .map_err(|_| anyhow::anyhow!("--tz {:?} is not an IANA time zone", args.tz))?;
    let calendar = match &args.holiday_file {
        Some(path) => WorkingCalendar::with_overrides(
            tz,
            &std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )?,
        None => WorkingCalendar::official(tz),
    };
    let deadline = calendar.deadline(from, args.working_days)?;
    let local = deadline
        .at
        .with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    if deadline.provisional {
        eprintln!(
            "warning: no published holiday schedule for {:?}; the deadline is provisional: those days count only the holidays the law fixes, and weekends near them as working days, so it may be earlier than the official deadline, never later",
            deadline.fallback_years
        );
    }
    if args.json {
        let body = json!({
            "requested_at": from.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            "deadline": local,
            "time_zone": tz.name(),
            "working_days_counted": deadline.working_days.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "fallback_years": deadline.fallback_years,
            "provisional": deadline.provisional,
        });
        super::print_line(&serde_json::to_string_pretty(&body)?)?;
    } else {
        super::print_line(&local)?;
    }
    Ok(())
}
