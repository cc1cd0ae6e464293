//! The holidays the law itself fixes, for years whose official schedule is not
//! published yet.
//!
//! The State Council publishes each year's schedule late in the year before;
//! until then the only certainty is the statute (全国年节及纪念日放假办法),
//! which names the holidays and their length but not the 调休 that moves
//! weekdays and weekends around them. Counting the statute's days as holidays
//! and every weekend near them as a possible working day gives a working-day
//! set that contains the official one, so a deadline counted on it can only be
//! earlier than the official deadline, never later. The property test in
//! `calendar::provisional_tests::provisional_rule_is_never_later_than_the_official_schedule`
//! checks that against every published year.
//!
//! Lunar dates and the 清明 solar term come from `tyme4rs`; `scripts/check_lunar_dates.py`
//! compares its lunar dates with the independent Python `lunardate` tables.

use std::sync::OnceLock;

use chrono::{Datelike, Days, NaiveDate, Weekday};
use tyme4rs::tyme::lunar::LunarDay;
use tyme4rs::tyme::solar::{SolarDay, SolarTerm};

/// The 2007 revision of the statute, in force from 2008, is the oldest encoded
/// here; earlier unpublished years count Monday–Friday only.
pub const FIRST_RULED_YEAR: i32 = 2008;

/// Later years are not computed: no deadline reaches that far, and the lunar
/// data is checked only up to 2100.
pub const LAST_RULED_YEAR: i32 = 2199;

/// A weekend day this many calendar days or fewer from a law-fixed holiday may
/// be a 调休 working day, so the provisional rule counts it as one. It is the
/// smallest margin that covers every adjusted weekend of 2008–2026 the statute
/// explains (the farthest, Saturday 11 May 2024, is 10 days after 劳动节), and
/// also the smallest with which no deadline of those years comes out later
/// (`calendar::provisional_tests`). The one adjusted weekend it misses is
/// Sunday 6 September 2015, worked for that year's one-off Victory Day holiday.
pub const ADJUSTED_WEEKEND_MARGIN_DAYS: u64 = 10;

/// The days the statute's holidays hang on, for one Gregorian year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatutoryAnchors {
    /// 春节, lunar 1/1.
    pub spring_festival: NaiveDate,
    /// 清明, the day of the solar term (China Standard Time).
    pub qingming: NaiveDate,
    /// 端午, lunar 5/5.
    pub dragon_boat: NaiveDate,
    /// 中秋, lunar 8/15.
    pub mid_autumn: NaiveDate,
}

/// Years the lunar library answers for without panicking, with margin.
const ANCHOR_YEARS: std::ops::RangeInclusive<i32> = 1900..=2199;

/// The anchors of `year`, or `None` outside 1900–2199.
pub fn statutory_anchors(year: i32) -> Option<StatutoryAnchors> {
    if !ANCHOR_YEARS.contains(&year) {
        return None;
    }
    let lunar = |month: isize, day: usize| {
        solar_to_date(
            LunarDay::new(year as isize, month, day)
                .ok()?
                .get_solar_day(),
        )
    };
    Some(StatutoryAnchors {
        spring_festival: lunar(1, 1)?,
        qingming: solar_to_date(SolarTerm::new(year as isize, "清明").ok()?.get_solar_day())?,
        dragon_boat: lunar(5, 5)?,
        mid_autumn: lunar(8, 15)?,
    })
}

fn solar_to_date(day: SolarDay) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(
        i32::try_from(day.get_year()).ok()?,
        u32::try_from(day.get_month()).ok()?,
        u32::try_from(day.get_day()).ok()?,
    )
}

/// The holidays the statute in force in `year` fixes, sorted; empty for years
/// outside `FIRST_RULED_YEAR..=LAST_RULED_YEAR`.
pub fn law_fixed_holidays(year: i32) -> &'static [NaiveDate] {
    const YEARS: usize = (LAST_RULED_YEAR - FIRST_RULED_YEAR + 1) as usize;
    // Each year is computed once: the lunar conversions are astronomy, and a
    // deadline asks about the same few years dozens of times.
    static TABLE: [OnceLock<Vec<NaiveDate>>; YEARS] = [const { OnceLock::new() }; YEARS];
    let Some(slot) = year
        .checked_sub(FIRST_RULED_YEAR)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| TABLE.get(i))
    else {
        return &[];
    };
    slot.get_or_init(|| compute_law_fixed_holidays(year))
}

fn compute_law_fixed_holidays(year: i32) -> Vec<NaiveDate> {
    let Some(anchors) = statutory_anchors(year) else {
        return Vec::new();
    };
    let on = |month, day| NaiveDate::from_ymd_opt(year, month, day);
    let spring = anchors.spring_festival;
    // 春节: 2008–2013 除夕 to 初二; 2014–2024 初一 to 初三; from 2025 除夕 to 初三.
    let (spring_from_eve, spring_days) = match year {
        ..=2013 => (true, 3),
        2014..=2024 => (false, 3),
        _ => (true, 4),
    };
    let spring_first = if spring_from_eve {
        spring.pred_opt()
    } else {
        Some(spring)
    };
    // 劳动节: one day until 2024, 1–2 May from 2025.
    let labour_days = if year >= 2025 { 2 } else { 1 };

    let mut days: Vec<NaiveDate> = [on(1, 1)]
        .into_iter()
        .chain((0..spring_days).map(|i| spring_first?.checked_add_days(Days::new(i))))
        .chain([Some(anchors.qingming)])
        .chain((1..=labour_days).map(|d| on(5, d)))
        .chain([Some(anchors.dragon_boat), Some(anchors.mid_autumn)])
        .chain((1..=3).map(|d| on(10, d)))
        .flatten()
        .collect();
    days.sort_unstable();
    // 中秋 can fall on 1–3 October (2020, 2025).
    days.dedup();
    days
}

/// Whether the statute makes `day` a holiday.
pub fn is_law_fixed_holiday(day: NaiveDate) -> bool {
    law_fixed_holidays(day.year()).binary_search(&day).is_ok()
}

/// The provisional rule for a day without a published schedule: the statute's
/// holidays are off, other weekdays are working days, and a weekend day is a
/// working day when it is near enough to a law-fixed holiday to be a 调休.
pub fn is_provisional_working_day(day: NaiveDate) -> bool {
    is_provisional_working_day_with_margin(day, ADJUSTED_WEEKEND_MARGIN_DAYS)
}

/// The rule with another weekend margin, so the property test can show which
/// margins are enough.
pub(super) fn is_provisional_working_day_with_margin(day: NaiveDate, margin_days: u64) -> bool {
    if is_law_fixed_holiday(day) {
        return false;
    }
    if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
        return true;
    }
    // A 调休 can sit in the year before its holiday (a Saturday late in
    // December worked for 元旦), so both neighbouring years are looked at.
    let margin = Days::new(margin_days);
    let (Some(from), Some(to)) = (day.checked_sub_days(margin), day.checked_add_days(margin))
    else {
        return false;
    };
    (from.year()..=to.year())
        .flat_map(law_fixed_holidays)
        .any(|holiday| (from..=to).contains(holiday))
}
