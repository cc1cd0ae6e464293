//! `facevault holidays`: the holidays the law fixes and the lunar and solar-term
//! dates they hang on, as the provisional calendar counts them for years
//! without a published schedule, so they can be checked against other sources.

use serde_json::json;

use crate::domain::calendar::law_fixed::{law_fixed_holidays, statutory_anchors};

#[derive(Debug, clap::Args)]
pub struct HolidaysArgs {
    /// First Gregorian year to print.
    #[arg(long)]
    from_year: i32,
    /// Last Gregorian year to print (at most 2199).
    #[arg(long)]
    to_year: i32,
}

/// One JSON object a line, one line a year.
pub fn run(args: HolidaysArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.from_year <= args.to_year,
        "--from-year must not be after --to-year"
    );
    for year in args.from_year..=args.to_year {
        let anchors = statutory_anchors(year)
            .ok_or_else(|| anyhow::anyhow!("no lunar dates for {year}: years 1900-2199 only"))?;
        let line = json!({
            "year": year,
            "spring_festival": anchors.spring_festival.to_string(),
            "qingming": anchors.qingming.to_string(),
            "dragon_boat": anchors.dragon_boat.to_string(),
            "mid_autumn": anchors.mid_autumn.to_string(),
            "law_fixed_holidays": law_fixed_holidays(year).iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        });
        super::print_line(&line.to_string())?;
    }
    Ok(())
}
