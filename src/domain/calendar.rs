//! Statutory working-day calendar for deletion deadlines.
//!
//! Chinese rules express erasure deadlines in working days ("erase within
//! fifteen working days of account cancellation"), and working days follow the
//! State Council's yearly holiday notice: statutory holidays are off, and some
//! weekend days are adjusted working days (调休). The built-in schedule comes
//! from the `chinese_holiday` crate; an optional TOML holiday file extends it
//! with years published after that crate was released, or replaces it for
//! other jurisdictions.
//!
//! Where no published schedule exists the calendar uses a provisional rule
//! ([`law_fixed`]): the holidays the law itself fixes are off, as the law stood
//! that year, and weekends near them count as working days because a 调休 may
//! make them one. That can only make a deadline earlier than the official
//! schedule would, so the service never keeps data longer than allowed; such a
//! deadline is marked [`Deadline::provisional`], with the years concerned in
//! [`Deadline::fallback_years`], so the caller can warn and recompute it once
//! the schedule is published. A calendar that replaces the Chinese schedule
//! (`replace_official`) counts Monday–Friday in its unpublished years instead.
//!
//! The module is pure: it performs no I/O and no logging.

pub mod law_fixed;

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeDelta, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

/// Working days allowed between account cancellation and erasure.
pub const STATUTORY_WORKING_DAYS: u32 = 15;

/// The statutory calendar is defined in China Standard Time.
pub const DEFAULT_TIME_ZONE: Tz = chrono_tz::Asia::Shanghai;

/// Upper bound on the working-day count accepted by [`WorkingCalendar::deadline`].
///
/// Deadlines are weeks, not decades; the bound keeps a misconfigured count from
/// turning into an unbounded loop and allocation.
pub const MAX_WORKING_DAYS: u32 = 3_660;

/// First day covered by the built-in schedule.
pub const OFFICIAL_DATA_FIRST_DAY: NaiveDate = ymd(2004, 1, 1);

/// Last day covered by the built-in schedule. `chinese_holiday` 2026.0.1 asserts
/// (panics) outside `2004-01-01..=2026-12-25`, so it must never be asked about
/// any other day; note the bound stops short of the end of 2026.
pub const OFFICIAL_DATA_LAST_DAY: NaiveDate = ymd(2026, 12, 25);

const fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(year, month, day) {
        Some(date) => date,
        None => panic!("invalid calendar constant"),
    }
}

/// Longest date-string excerpt echoed back in an error. Dates are ten
/// characters; anything longer is not a date and need not be reproduced.
const MAX_ECHOED_DATE_CHARS: usize = 32;

/// Where in the holiday file a parse problem was found (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePosition {
    pub line: usize,
    pub column: usize,
}

fn describe_position(position: &Option<FilePosition>) -> String {
    match position {
        Some(p) => format!("line {}, column {}", p.line, p.column),
        None => "unknown position".to_owned(),
    }
}

/// Errors from building a calendar or computing a deadline.
///
/// Messages name a position or the offending date string only: holiday files
/// are operator-supplied, and error text ends up in logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("holiday file is not valid TOML ({})", describe_position(.position))]
    Syntax { position: Option<FilePosition> },
    #[error(
        "holiday file has an unknown key or a value of the wrong type ({}); \
         allowed keys: years, holidays, workdays, replace_official",
        describe_position(.position)
    )]
    Schema { position: Option<FilePosition> },
    #[error("holiday file: entry \"{date}\" in `{list}` is not a YYYY-MM-DD date")]
    InvalidDate { list: &'static str, date: String },
    #[error("holiday file: {date} is listed both in `holidays` and in `workdays`")]
    ConflictingDate { date: NaiveDate },
    #[error("working day count must be at least 1")]
    ZeroWorkingDays,
    #[error("working day count {requested} exceeds the supported maximum of {max}")]
    TooManyWorkingDays { requested: u32, max: u32 },
    #[error("deadline computation left the representable date range")]
    OutOfRange,
    #[error("local day {day} does not exist in time zone {tz}")]
    NonexistentLocalDay { day: NaiveDate, tz: Tz },
}

/// Result of a deadline computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// End of the last counted working day: local 23:59:59.999 (or the last
    /// instant of that local day where a clock change swallows 23:59).
    pub at: DateTime<Utc>,
    /// The counted working days, in order; the last one is the deadline day.
    pub working_days: Vec<NaiveDate>,
    /// Years of days examined (request day excluded, deadline day included)
    /// that had no published schedule and were decided by the provisional
    /// rule. Sorted and deduplicated; empty when everything was published.
    pub fallback_years: Vec<i32>,
    /// Some day examined had no published schedule: the deadline may be
    /// earlier than the official one (never later) and should be recomputed
    /// when the schedule is published.
    pub provisional: bool,
}

/// Working-day calendar: official Chinese schedule, optional file overrides,
/// and the time zone that decides which calendar day an instant falls on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingCalendar {
    tz: Tz,
    holidays: BTreeSet<NaiveDate>,
    workdays: BTreeSet<NaiveDate>,
    override_years: BTreeSet<i32>,
    replace_official: bool,
}

impl Default for WorkingCalendar {
    fn default() -> Self {
        Self::official(DEFAULT_TIME_ZONE)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolidayFile {
    #[serde(default)]
    years: Vec<i32>,
    #[serde(default)]
    holidays: Vec<DateEntry>,
    #[serde(default)]
    workdays: Vec<DateEntry>,
    #[serde(default)]
    replace_official: bool,
}

/// Operators write dates as strings (the documented format) or, naturally in
/// TOML, as bare local dates; both are accepted.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DateEntry {
    Text(String),
    Native(toml::value::Datetime),
}

impl WorkingCalendar {
    /// Calendar backed by the built-in official schedule only.
    pub fn official(tz: Tz) -> Self {
        Self {
            tz,
            holidays: BTreeSet::new(),
            workdays: BTreeSet::new(),
            override_years: BTreeSet::new(),
            replace_official: false,
        }
    }

    /// Calendar from the built-in schedule plus a TOML holiday file.
    ///
    /// A date in `holidays` is never a working day and a date in `workdays`
    /// always is, whatever its weekday or official status. `years` marks years
    /// the file fully covers, so they stop counting as fallback.
    /// `replace_official = true` drops the built-in Chinese schedule.
    pub fn with_overrides(tz: Tz, holiday_file_toml: &str) -> Result<Self, CalendarError> {
        // Parsing as a bare table first separates "not TOML at all" from "TOML
        // with the wrong shape", so the operator learns which kind of mistake
        // it is without the error quoting the file.
        toml::from_str::<toml::Table>(holiday_file_toml).map_err(|e| CalendarError::Syntax {
            position: file_position(holiday_file_toml, &e),
        })?;
        let file: HolidayFile =
            toml::from_str(holiday_file_toml).map_err(|e| CalendarError::Schema {
                position: file_position(holiday_file_toml, &e),
            })?;

        let holidays = parse_dates("holidays", &file.holidays)?;
        let workdays = parse_dates("workdays", &file.workdays)?;
        if let Some(&date) = holidays.intersection(&workdays).next() {
            return Err(CalendarError::ConflictingDate { date });
        }

        Ok(Self {
            tz,
            holidays,
            workdays,
            override_years: file.years.into_iter().collect(),
            replace_official: file.replace_official,
        })
    }

    /// Time zone deciding the local calendar day of a request.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// Whether `day` is a working day. Total: never panics for any date.
    pub fn is_working_day(&self, day: NaiveDate) -> bool {
        if self.holidays.contains(&day) {
            return false;
        }
        if self.workdays.contains(&day) {
            return true;
        }
        match self.official_kind(day) {
            Some(kind) => kind.is_workday(),
            None if self.replace_official || self.has_published_data(day) => {
                is_monday_to_friday(day)
            }
            None => law_fixed::is_provisional_working_day(day),
        }
    }

    /// Whether `day` is decided by published data (built-in range or an override year) rather than the Mon–Fri fallback.
    ///
    /// A date listed individually in the file does not make its year
    /// published: a partial list says nothing about the other days of that
    /// year, and those are the days the fallback may get wrong.
    pub fn has_published_data(&self, day: NaiveDate) -> bool {
        self.override_years.contains(&day.year())
            || (!self.replace_official && in_official_range(day))
    }

    /// End of the `working_days`-th working day strictly after the local
    /// calendar day of `requested_at`.
    ///
    /// The request day never counts, even when it is itself a working day: a
    /// cancellation at 17:59 on a Friday must not consume that Friday.
    pub fn deadline(
        &self,
        requested_at: DateTime<Utc>,
        working_days: u32,
    ) -> Result<Deadline, CalendarError> {
        if working_days == 0 {
            return Err(CalendarError::ZeroWorkingDays);
        }
        if working_days > MAX_WORKING_DAYS {
            return Err(CalendarError::TooManyWorkingDays {
                requested: working_days,
                max: MAX_WORKING_DAYS,
            });
        }
        let target = usize::try_from(working_days).map_err(|_| CalendarError::OutOfRange)?;
        let request_day = local_date(self.tz, requested_at).ok_or(CalendarError::OutOfRange)?;

        let mut counted = Vec::with_capacity(target);
        let mut fallback_years = BTreeSet::new();
        let mut day = request_day;
        while counted.len() < target {
            day = day.succ_opt().ok_or(CalendarError::OutOfRange)?;
            // Non-working days are examined too: an unpublished weekend might
            // really be an adjusted working day, so it is just as uncertain.
            if !self.has_published_data(day) {
                fallback_years.insert(day.year());
            }
            if self.is_working_day(day) {
                counted.push(day);
            }
        }

        let at = local_day_end(self.tz, day)
            .ok_or(CalendarError::NonexistentLocalDay { day, tz: self.tz })?;
        Ok(Deadline {
            at,
            working_days: counted,
            provisional: !fallback_years.is_empty(),
            fallback_years: fallback_years.into_iter().collect(),
        })
    }

    fn official_kind(&self, day: NaiveDate) -> Option<chinese_holiday::DayKind> {
        // The range check is what keeps the crate's assert unreachable.
        (!self.replace_official && in_official_range(day))
            .then(|| chinese_holiday::chinese_holiday(&day))
    }
}

fn in_official_range(day: NaiveDate) -> bool {
    (OFFICIAL_DATA_FIRST_DAY..=OFFICIAL_DATA_LAST_DAY).contains(&day)
}

fn is_monday_to_friday(day: NaiveDate) -> bool {
    !matches!(day.weekday(), Weekday::Sat | Weekday::Sun)
}

/// Local calendar day of an instant. `DateTime::date_naive` panics when the
/// local time is not representable (e.g. `DateTime::<Utc>::MAX_UTC` east of
/// UTC), so the offset is applied with checked arithmetic instead.
fn local_date(tz: Tz, instant: DateTime<Utc>) -> Option<NaiveDate> {
    let utc = instant.naive_utc();
    let offset = tz.offset_from_utc_datetime(&utc).fix();
    utc.checked_add_offset(offset).map(|local| local.date())
}

/// Last millisecond of local `day` in `tz`, as a UTC instant; `None` when the
/// day does not exist there at all (e.g. Pacific/Apia skipped 2011-12-30).
///
/// Normally local 23:59:59.999. When a fall-back transition repeats that time,
/// the later occurrence is the real end of the day. When a spring-forward jump
/// skips it (America/Nuuk moves from 23:00 straight to 00:00), the day ends
/// just before the jump.
fn local_day_end(tz: Tz, day: NaiveDate) -> Option<DateTime<Utc>> {
    let last_millisecond = day.and_hms_milli_opt(23, 59, 59, 999)?;
    if let Some(end) = tz.from_local_datetime(&last_millisecond).latest() {
        return Some(end.to_utc());
    }

    // Bisect between an instant known to be on `day` and one known to be
    // after it; a single transition keeps the local date monotonic in between.
    let mut on_day = (0..24)
        .rev()
        .filter_map(|hour| day.and_hms_opt(hour, 0, 0))
        .find_map(|local| tz.from_local_datetime(&local).earliest())?
        .to_utc();
    let mut after_day = on_day.checked_add_signed(TimeDelta::hours(26))?;
    loop {
        let gap_ms = after_day.signed_duration_since(on_day).num_milliseconds();
        if gap_ms <= 1 {
            return Some(on_day);
        }
        let mid = on_day.checked_add_signed(TimeDelta::milliseconds(gap_ms / 2))?;
        if local_date(tz, mid)? <= day {
            on_day = mid;
        } else {
            after_day = mid;
        }
    }
}

fn parse_dates(
    list: &'static str,
    entries: &[DateEntry],
) -> Result<BTreeSet<NaiveDate>, CalendarError> {
    entries
        .iter()
        .map(|entry| {
            let parsed = match entry {
                DateEntry::Text(text) => parse_iso_date(text),
                DateEntry::Native(datetime) => native_date(datetime),
            };
            parsed.ok_or_else(|| CalendarError::InvalidDate {
                list,
                date: sanitize_for_error(&match entry {
                    DateEntry::Text(text) => text.clone(),
                    DateEntry::Native(datetime) => datetime.to_string(),
                }),
            })
        })
        .collect()
}

/// Strict `YYYY-MM-DD`: a legal deadline must not hinge on a lenient parser's
/// guess about "2027-2-3" or trailing text.
fn parse_iso_date(text: &str) -> Option<NaiveDate> {
    let &[y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2] = text.as_bytes() else {
        return None;
    };
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(number(&[y1, y2, y3, y4])?).ok()?;
    NaiveDate::from_ymd_opt(year, number(&[m1, m2])?, number(&[d1, d2])?)
}

/// A bare TOML local date; a time or offset means the entry is not a day.
fn native_date(datetime: &toml::value::Datetime) -> Option<NaiveDate> {
    if datetime.time.is_some() || datetime.offset.is_some() {
        return None;
    }
    let date = datetime.date?;
    NaiveDate::from_ymd_opt(
        i32::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    )
}

/// Bounded, printable-ASCII-only excerpt so a hostile entry cannot flood or
/// forge log lines through the error message.
fn sanitize_for_error(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_ECHOED_DATE_CHARS)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if text.chars().nth(MAX_ECHOED_DATE_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

/// 1-based line and column of a TOML error, from its byte span.
fn file_position(text: &str, error: &toml::de::Error) -> Option<FilePosition> {
    let start = error.span()?.start;
    let before = text.get(..start)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    let line = before.matches('\n').count() + 1;
    Some(FilePosition { line, column })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Asia::Shanghai;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn dates(list: &[(i32, u32, u32)]) -> Vec<NaiveDate> {
        list.iter().map(|&(y, m, day)| d(y, m, day)).collect()
    }

    /// A Shanghai wall-clock time as a UTC instant.
    fn shanghai(y: i32, m: u32, day: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Shanghai
            .with_ymd_and_hms(y, m, day, h, mi, s)
            .single()
            .expect("Shanghai has no DST")
            .to_utc()
    }

    fn noon(day: NaiveDate) -> DateTime<Utc> {
        shanghai(day.year(), day.month(), day.day(), 12, 0, 0)
    }

    fn rfc3339(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid test instant")
            .to_utc()
    }

    fn official() -> WorkingCalendar {
        WorkingCalendar::official(Shanghai)
    }

    fn statutory(cal: &WorkingCalendar, at: DateTime<Utc>) -> Deadline {
        cal.deadline(at, STATUTORY_WORKING_DAYS)
            .expect("deadline computable")
    }

    fn overrides(toml_text: &str) -> WorkingCalendar {
        WorkingCalendar::with_overrides(Shanghai, toml_text).expect("valid holiday file")
    }

    #[test]
    fn defaults() {
        assert_eq!(STATUTORY_WORKING_DAYS, 15);
        assert_eq!(WorkingCalendar::default().time_zone(), Shanghai);
        assert_eq!(WorkingCalendar::default(), official());
    }

    #[test]
    fn crate_bounds_are_callable_and_beyond_them_falls_back() {
        // If a future chinese_holiday narrows its range, these calls panic here
        // rather than in production.
        let _ = chinese_holiday::chinese_holiday(&OFFICIAL_DATA_FIRST_DAY);
        let _ = chinese_holiday::chinese_holiday(&OFFICIAL_DATA_LAST_DAY);

        let cal = official();
        assert!(cal.has_published_data(d(2004, 1, 1)));
        assert!(cal.has_published_data(d(2026, 12, 25)));
        assert!(!cal.has_published_data(d(2003, 12, 31)));
        assert!(!cal.has_published_data(d(2026, 12, 26)));
        // Outside the range the provisional rule answers, with no panic:
        // Friday 2027-01-01 is 元旦, fixed by law; Saturday 2026-12-26 is
        // near enough to it to be a 调休, so it counts as a working day.
        assert!(!cal.is_working_day(d(2027, 1, 1)));
        assert!(cal.is_working_day(d(2026, 12, 26)));
        // Before 2008 no statute is encoded: Monday–Friday.
        assert!(cal.is_working_day(d(2003, 12, 31))); // Wednesday
        assert!(!cal.is_working_day(d(2003, 12, 27))); // Saturday
        for extreme in [NaiveDate::MIN, NaiveDate::MAX] {
            let _ = cal.is_working_day(extreme);
            assert!(!cal.has_published_data(extreme));
        }
    }

    #[test]
    fn national_day_2025_request_on_friday_before() {
        // 国办发明电〔2024〕12号, item 6: National Day + Mid-Autumn, Oct 1 (Wed)
        // to Oct 8 (Wed) off; Sunday Sep 28 and Saturday Oct 11 are worked.
        let cal = official();
        let deadline = statutory(&cal, shanghai(2025, 9, 26, 10, 0, 0));
        let expected = dates(&[
            (2025, 9, 28), // Sun, adjusted working day (Sat Sep 27 is off)
            (2025, 9, 29),
            (2025, 9, 30),
            // Oct 1–8 holiday
            (2025, 10, 9),
            (2025, 10, 10),
            (2025, 10, 11), // Sat, adjusted working day
            (2025, 10, 13),
            (2025, 10, 14),
            (2025, 10, 15),
            (2025, 10, 16),
            (2025, 10, 17),
            (2025, 10, 20),
            (2025, 10, 21),
            (2025, 10, 22),
            (2025, 10, 23),
        ]);
        assert_eq!(deadline.working_days, expected);
        assert_eq!(deadline.at, rfc3339("2025-10-23T23:59:59.999+08:00"));
        assert!(deadline.fallback_years.is_empty());
    }

    #[test]
    fn spring_festival_2026() {
        // 2026 notice (gov.cn content_7047090, Nov 2025), item 2 as encoded in
        // chinese_holiday 2026.0.1: Feb 15 (Sun, 腊月廿八) to Feb 23 (Mon, 正月初七)
        // off, 9 days; Saturday Feb 14 and Saturday Feb 28 are worked.
        let cal = official();
        assert!(cal.is_working_day(d(2026, 2, 14)));
        assert!(cal.is_working_day(d(2026, 2, 28)));
        for day in 15..=23 {
            assert!(!cal.is_working_day(d(2026, 2, day)), "2026-02-{day}");
        }
        assert!(!cal.is_working_day(d(2026, 3, 1))); // ordinary Sunday

        // Request in the middle of the holiday (Wed Feb 18, 初二).
        let during = statutory(&cal, shanghai(2026, 2, 18, 9, 30, 0));
        let expected = dates(&[
            (2026, 2, 24),
            (2026, 2, 25),
            (2026, 2, 26),
            (2026, 2, 27),
            (2026, 2, 28), // Sat, adjusted working day
            (2026, 3, 2),
            (2026, 3, 3),
            (2026, 3, 4),
            (2026, 3, 5),
            (2026, 3, 6),
            (2026, 3, 9),
            (2026, 3, 10),
            (2026, 3, 11),
            (2026, 3, 12),
            (2026, 3, 13),
        ]);
        assert_eq!(during.working_days, expected);
        assert_eq!(during.at, rfc3339("2026-03-13T23:59:59.999+08:00"));

        // Request just before (Thu Feb 12): Feb 13 and the working Saturday
        // Feb 14 count, then the holiday, then both Feb 28 and March.
        let before = statutory(&cal, shanghai(2026, 2, 12, 16, 0, 0));
        assert_eq!(
            before.working_days[..3],
            dates(&[(2026, 2, 13), (2026, 2, 14), (2026, 2, 24)])
        );
        assert!(before.working_days.contains(&d(2026, 2, 28)));
        assert_eq!(before.at, rfc3339("2026-03-11T23:59:59.999+08:00"));
    }

    #[test]
    fn year_boundary_2025_to_2026() {
        // 2026 notice, item 1: Jan 1 (Thu) to Jan 3 (Sat) off, Sunday Jan 4 worked.
        let cal = official();
        let deadline = statutory(&cal, shanghai(2025, 12, 24, 11, 0, 0));
        let expected = dates(&[
            (2025, 12, 25),
            (2025, 12, 26),
            (2025, 12, 29),
            (2025, 12, 30),
            (2025, 12, 31),
            // Jan 1–3 holiday
            (2026, 1, 4), // Sun, adjusted working day
            (2026, 1, 5),
            (2026, 1, 6),
            (2026, 1, 7),
            (2026, 1, 8),
            (2026, 1, 9),
            (2026, 1, 12),
            (2026, 1, 13),
            (2026, 1, 14),
            (2026, 1, 15),
        ]);
        assert_eq!(deadline.working_days, expected);
        assert_eq!(deadline.at, rfc3339("2026-01-15T23:59:59.999+08:00"));
        assert!(deadline.fallback_years.is_empty());
    }

    #[test]
    fn end_of_official_data_2026() {
        let cal = official();

        // Fri 2026-12-04: the 15th working day is exactly Fri Dec 25, the last
        // day the crate covers, so nothing falls back.
        let inside = statutory(&cal, shanghai(2026, 12, 4, 12, 0, 0));
        assert_eq!(inside.at, rfc3339("2026-12-25T23:59:59.999+08:00"));
        assert!(inside.fallback_years.is_empty());
        assert!(!inside.provisional);

        // Mon 2026-12-07: Dec 8–25 gives 14; Sat 26 has no data and, six days
        // before 元旦, may be a 调休, so it is the 15th.
        let straddling = statutory(&cal, shanghai(2026, 12, 7, 12, 0, 0));
        assert_eq!(straddling.at, rfc3339("2026-12-26T23:59:59.999+08:00"));
        assert_eq!(straddling.fallback_years, vec![2026]);
        assert!(straddling.provisional);

        // Mon 2026-12-21: Dec 22–25 official (4), then the provisional rule:
        // the weekends around 元旦 count, 元旦 itself does not.
        let beyond = statutory(&cal, shanghai(2026, 12, 21, 12, 0, 0));
        let expected = dates(&[
            (2026, 12, 22),
            (2026, 12, 23),
            (2026, 12, 24),
            (2026, 12, 25),
            (2026, 12, 26), // Sat
            (2026, 12, 27), // Sun
            (2026, 12, 28),
            (2026, 12, 29),
            (2026, 12, 30),
            (2026, 12, 31),
            // Fri Jan 1: 元旦
            (2027, 1, 2), // Sat
            (2027, 1, 3), // Sun
            (2027, 1, 4),
            (2027, 1, 5),
            (2027, 1, 6),
        ]);
        assert_eq!(beyond.working_days, expected);
        assert_eq!(beyond.at, rfc3339("2027-01-06T23:59:59.999+08:00"));
        assert_eq!(beyond.fallback_years, vec![2026, 2027]);
        assert!(beyond.provisional);

        // Entirely before the data: 2003 is Mon–Fri only.
        let early = statutory(&cal, shanghai(2003, 6, 2, 12, 0, 0)); // Monday
        assert_eq!(early.at, rfc3339("2003-06-23T23:59:59.999+08:00"));
        assert_eq!(early.fallback_years, vec![2003]);
        assert!(early.provisional);
    }

    #[test]
    fn weekend_requests() {
        // March 2025 has no holidays or adjusted days.
        let cal = official();
        let end = rfc3339("2025-03-21T23:59:59.999+08:00");
        for (day, label) in [(1, "Saturday"), (2, "Sunday")] {
            let deadline = statutory(&cal, shanghai(2025, 3, day, 14, 0, 0));
            assert_eq!(deadline.at, end, "{label}");
            assert_eq!(deadline.working_days[0], d(2025, 3, 3), "{label}");
        }
        // A Friday request reaches the same deadline: the weekend adds nothing.
        assert_eq!(statutory(&cal, shanghai(2025, 2, 28, 14, 0, 0)).at, end);

        // Sat 2025-10-11 is an adjusted working day, yet as the request day it
        // still does not count: Oct 13–31 gives exactly 15.
        let working_saturday = statutory(&cal, shanghai(2025, 10, 11, 10, 0, 0));
        assert_eq!(working_saturday.working_days[0], d(2025, 10, 13));
        assert_eq!(
            working_saturday.at,
            rfc3339("2025-10-31T23:59:59.999+08:00")
        );
    }

    #[test]
    fn local_day_boundaries() {
        let cal = official();
        // 2025-03-02T15:59:30Z is Sunday 23:59:30 in Shanghai.
        let late_sunday = statutory(&cal, rfc3339("2025-03-02T15:59:30Z"));
        assert_eq!(late_sunday.at, rfc3339("2025-03-21T23:59:59.999+08:00"));
        // 2025-03-02T16:00:00Z is already Monday 00:00 in Shanghai, so Monday
        // itself no longer counts.
        let monday_midnight = statutory(&cal, rfc3339("2025-03-02T16:00:00Z"));
        assert_eq!(monday_midnight.working_days[0], d(2025, 3, 4));
        assert_eq!(monday_midnight.at, rfc3339("2025-03-24T23:59:59.999+08:00"));
        // The same instant is still Sunday in UTC: the zone decides the day.
        let in_utc = WorkingCalendar::official(chrono_tz::UTC)
            .deadline(rfc3339("2025-03-02T16:00:00Z"), 15)
            .expect("deadline computable");
        assert_eq!(in_utc.at, rfc3339("2025-03-21T23:59:59.999Z"));
    }

    #[test]
    fn single_working_day() {
        // Tue 2025-09-30: the next working day is Thu Oct 9, after the holiday.
        let deadline = official()
            .deadline(shanghai(2025, 9, 30, 8, 0, 0), 1)
            .expect("deadline computable");
        assert_eq!(deadline.working_days, vec![d(2025, 10, 9)]);
        assert_eq!(deadline.at, rfc3339("2025-10-09T23:59:59.999+08:00"));
    }

    #[test]
    fn override_year_holiday_shifts_deadline_and_clears_fallback() {
        // Fictional 2027 schedule declaring only New Year's Day.
        let cal = overrides("years = [2027]\nholidays = [\"2027-01-01\"]\n");
        assert!(!cal.is_working_day(d(2027, 1, 1)));
        assert!(cal.has_published_data(d(2027, 6, 1)));
        assert!(!cal.has_published_data(d(2026, 12, 31)));

        // Same request as in end_of_official_data_2026: the file's 2027 has
        // no working weekends, so the deadline moves two days later, and only
        // the uncovered tail of 2026 is still provisional.
        let deadline = statutory(&cal, shanghai(2026, 12, 21, 12, 0, 0));
        assert!(!deadline.working_days.contains(&d(2027, 1, 1)));
        assert_eq!(deadline.at, rfc3339("2027-01-08T23:59:59.999+08:00"));
        assert_eq!(deadline.fallback_years, vec![2026]);
        assert!(deadline.provisional);
    }

    #[test]
    fn override_working_saturday_counts() {
        // Fictional: Sat 2027-02-20 declared a working day.
        let request = shanghai(2027, 2, 12, 12, 0, 0); // Friday
        // Provisionally the weekend after 春节 (Feb 13–14) counts, Feb 20 is
        // too far from it to.
        let plain = statutory(&official(), request);
        assert_eq!(plain.at, rfc3339("2027-03-03T23:59:59.999+08:00"));
        assert_eq!(plain.fallback_years, vec![2027]);

        let cal = overrides("years = [2027]\nworkdays = [\"2027-02-20\"]\n");
        let deadline = statutory(&cal, request);
        assert!(deadline.working_days.contains(&d(2027, 2, 20)));
        // The fictional file declares no 春节 and no other working weekend, so
        // the published deadline is a day later than the provisional one.
        assert_eq!(deadline.at, rfc3339("2027-03-04T23:59:59.999+08:00"));
        assert!(deadline.fallback_years.is_empty());
        assert!(!deadline.provisional);
    }

    #[test]
    fn override_dates_beat_official_data() {
        // Official Thu Oct 9 declared off, official holiday Wed Oct 8 declared
        // worked: the count swaps one for the other, deadline unchanged; an
        // extra holiday on Oct 23 then pushes it to Fri Oct 24.
        let cal =
            overrides("holidays = [\"2025-10-09\", \"2025-10-23\"]\nworkdays = [\"2025-10-08\"]\n");
        let deadline = statutory(&cal, shanghai(2025, 9, 26, 10, 0, 0));
        assert!(deadline.working_days.contains(&d(2025, 10, 8)));
        assert!(!deadline.working_days.contains(&d(2025, 10, 9)));
        assert_eq!(deadline.at, rfc3339("2025-10-24T23:59:59.999+08:00"));
        // Listing dates does not mark a year as published; 2025 already is.
        assert!(deadline.fallback_years.is_empty());
    }

    #[test]
    fn listed_dates_without_year_still_fall_back() {
        let cal = overrides("holidays = [\"2027-01-01\"]\n");
        assert!(!cal.is_working_day(d(2027, 1, 1)));
        assert!(!cal.has_published_data(d(2027, 1, 1)));
        let deadline = statutory(&cal, shanghai(2026, 12, 21, 12, 0, 0));
        assert_eq!(deadline.at, rfc3339("2027-01-06T23:59:59.999+08:00"));
        assert_eq!(deadline.fallback_years, vec![2026, 2027]);
        assert!(deadline.provisional);
    }

    #[test]
    fn replace_official_ignores_chinese_schedule() {
        let cal = overrides("replace_official = true\n");
        assert!(cal.is_working_day(d(2025, 10, 1))); // Wednesday, official holiday
        assert!(!cal.is_working_day(d(2025, 9, 28))); // Sunday, official workday
        assert!(!cal.has_published_data(d(2025, 10, 1)));

        // Plain Mon–Fri from Fri Sep 26: Sep 29–Oct 3, Oct 6–10, Oct 13–17.
        let deadline = statutory(&cal, shanghai(2025, 9, 26, 10, 0, 0));
        assert_eq!(deadline.at, rfc3339("2025-10-17T23:59:59.999+08:00"));
        assert_eq!(deadline.fallback_years, vec![2025]);

        // Another jurisdiction publishing its own 2025 list.
        let other = WorkingCalendar::with_overrides(
            chrono_tz::Europe::Berlin,
            "replace_official = true\nyears = [2025]\nholidays = [\"2025-10-03\"]\n",
        )
        .expect("valid holiday file");
        assert!(other.has_published_data(d(2025, 10, 1)));
        assert!(!other.is_working_day(d(2025, 10, 3)));
        assert!(other.is_working_day(d(2025, 10, 1)));
    }

    #[test]
    fn empty_file_and_native_toml_dates() {
        assert_eq!(overrides(""), official());
        assert_eq!(
            overrides("holidays = [2027-01-01]\nworkdays = [\"2027-02-20\"]"),
            overrides("holidays = [\"2027-01-01\"]\nworkdays = [2027-02-20]"),
        );
        assert!(!overrides("holidays = [2027-01-01]").is_working_day(d(2027, 1, 1)));
    }

    fn parse_error(toml_text: &str) -> CalendarError {
        WorkingCalendar::with_overrides(Shanghai, toml_text).expect_err("file must be rejected")
    }

    #[test]
    fn invalid_files_are_rejected() {
        assert_eq!(
            parse_error("holidays = [\"2027-01-01\"]\nworkdays = [\"2027-01-01\"]"),
            CalendarError::ConflictingDate {
                date: d(2027, 1, 1)
            }
        );
        for bad in [
            "2027-02-30",
            "2027-2-3",
            "2027-02-03 ",
            "27-02-03",
            "２０２７-02-03",
        ] {
            assert!(
                matches!(
                    parse_error(&format!("workdays = [\"{bad}\"]")),
                    CalendarError::InvalidDate {
                        list: "workdays",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_error("holidays = [2027-01-01T08:00:00]"),
            CalendarError::InvalidDate {
                list: "holidays",
                ..
            }
        ));
        assert_eq!(
            parse_error("years = [2027]\nholiday = [\"2027-01-01\"]\n"),
            CalendarError::Schema {
                position: Some(FilePosition { line: 2, column: 1 })
            }
        );
        assert!(matches!(
            parse_error("years = \"2027\""),
            CalendarError::Schema { .. }
        ));
        assert!(matches!(
            parse_error("replace_official = \"yes\""),
            CalendarError::Schema { .. }
        ));
        assert_eq!(
            parse_error("years = [2027]\nholidays = [\"2027-01-01\"\n"),
            CalendarError::Syntax {
                // Points just past the unterminated array on line 2.
                position: Some(FilePosition {
                    line: 2,
                    column: 25
                })
            }
        );
    }

    #[test]
    fn error_messages_do_not_echo_file_content() {
        let secret = "hunter2-secret";
        let messages = [
            parse_error(&format!("{secret} = 1")).to_string(),
            parse_error(&format!(
                "years = [2027]\n# {secret}\nholidays = [\"{secret}\""
            ))
            .to_string(),
            parse_error(&format!("years = \"{secret}\"")).to_string(),
            parse_error(&format!(
                "holidays = [\"2027-01-01\"]\n# {secret}\nworkdays = [\"2027-01-01\"]"
            ))
            .to_string(),
        ];
        for message in &messages {
            assert!(!message.contains("hunter2"), "{message}");
        }

        // The offending date string is echoed, but bounded and printable.
        let hostile = format!("2027\n{}", "x".repeat(500));
        let message = parse_error(&format!("holidays = [{hostile:?}]")).to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("2027?xxx"), "{message}");
    }

    #[test]
    fn invalid_counts_and_instants() {
        let cal = official();
        let now = shanghai(2025, 3, 3, 12, 0, 0);
        assert_eq!(cal.deadline(now, 0), Err(CalendarError::ZeroWorkingDays));
        assert_eq!(
            cal.deadline(now, MAX_WORKING_DAYS + 1),
            Err(CalendarError::TooManyWorkingDays {
                requested: MAX_WORKING_DAYS + 1,
                max: MAX_WORKING_DAYS
            })
        );
        assert!(cal.deadline(now, MAX_WORKING_DAYS).is_ok());
        // Extreme instants must yield errors or values, never panics.
        assert_eq!(
            cal.deadline(DateTime::<Utc>::MAX_UTC, 15),
            Err(CalendarError::OutOfRange)
        );
        let _ = cal.deadline(DateTime::<Utc>::MIN_UTC, 15);
        let _ = WorkingCalendar::official(chrono_tz::America::Los_Angeles)
            .deadline(DateTime::<Utc>::MIN_UTC, 15);
    }

    #[test]
    fn day_end_across_clock_changes() {
        // Ordinary spring-forward day in Berlin: the day still ends at 23:59:59.999 CEST.
        assert_eq!(
            local_day_end(chrono_tz::Europe::Berlin, d(2025, 3, 30)),
            Some(rfc3339("2025-03-30T23:59:59.999+02:00"))
        );
        // São Paulo left DST at midnight 2019-02-17, repeating 23:00–23:59 of
        // Feb 16; the later repetition (-03:00) is the true end of the day.
        assert_eq!(
            local_day_end(chrono_tz::America::Sao_Paulo, d(2019, 2, 16)),
            Some(rfc3339("2019-02-16T23:59:59.999-03:00"))
        );
        // Nuuk springs forward at 23:00 local on 2025-03-29 (-02:00 -> -01:00),
        // so that Saturday ends at 22:59:59.999 -02:00.
        assert_eq!(
            local_day_end(chrono_tz::America::Nuuk, d(2025, 3, 29)),
            Some(rfc3339("2025-03-29T22:59:59.999-02:00"))
        );
        // Samoa skipped 2011-12-30 entirely.
        assert_eq!(
            local_day_end(chrono_tz::Pacific::Apia, d(2011, 12, 30)),
            None
        );
        assert_eq!(
            WorkingCalendar::official(chrono_tz::Pacific::Apia)
                .deadline(rfc3339("2011-12-29T00:00:00-10:00"), 1),
            Err(CalendarError::NonexistentLocalDay {
                day: d(2011, 12, 30),
                tz: chrono_tz::Pacific::Apia
            })
        );
    }

    #[test]
    fn every_request_day_in_2025_and_2026() {
        let cal = official();
        let mut request_day = d(2025, 1, 1);
        while request_day <= d(2026, 12, 31) {
            let requested_at = noon(request_day);
            let deadline = statutory(&cal, requested_at);
            let last = *deadline.working_days.last().expect("15 days counted");

            assert!(deadline.at > requested_at, "{request_day}");
            assert!(last >= request_day + TimeDelta::days(15), "{request_day}");
            assert!(cal.is_working_day(last), "{request_day}");
            assert_eq!(deadline.at, local_day_end(Shanghai, last).expect("exists"));
            assert_eq!(local_date(Shanghai, deadline.at), Some(last));
            assert_eq!(
                local_date(Shanghai, deadline.at + TimeDelta::milliseconds(1)),
                last.succ_opt()
            );

            let mut counted = Vec::new();
            let mut day = request_day;
            while day < last {
                day = day.succ_opt().expect("in range");
                if cal.is_working_day(day) {
                    counted.push(day);
                }
            }
            assert_eq!(counted.len(), 15, "{request_day}");
            assert_eq!(counted, deadline.working_days, "{request_day}");
            // The published range ends on 2026-12-25; nothing earlier may
            // report a fallback and nothing reaching past it may hide one.
            assert_eq!(
                deadline.fallback_years.is_empty(),
                last <= OFFICIAL_DATA_LAST_DAY,
                "{request_day}"
            );

            request_day = request_day.succ_opt().expect("in range");
        }
    }
}

#[cfg(test)]
mod properties {
    use chrono::{DateTime, Datelike as _, Utc};
    use proptest::prelude::*;

    use super::*;

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2004 to 2030: official data, its end, and fallback years.
        (1_072_915_200i64..1_924_992_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Fifteen distinct working days strictly after the request day, in order,
        /// the last being the deadline's day, which is at least 15 days later.
        #[test]
        fn deadlines_count_fifteen_working_days(t in instant()) {
            let calendar = WorkingCalendar::default();
            let d = calendar.deadline(t, STATUTORY_WORKING_DAYS).unwrap();
            let tz = calendar.time_zone();
            let request_day = t.with_timezone(&tz).date_naive();
            prop_assert!(d.at > t);
            prop_assert_eq!(d.working_days.len(), 15);
            prop_assert!(d.working_days.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(d.working_days.iter().all(|day| calendar.is_working_day(*day) && *day > request_day));
            let last = *d.working_days.last().unwrap();
            prop_assert_eq!(d.at.with_timezone(&tz).date_naive(), last);
            prop_assert!((last - request_day).num_days() >= 15);
            // Every working day in between was counted: none skipped.
            let mut day = request_day.succ_opt().unwrap();
            let mut counted = 0;
            while day <= last {
                if calendar.is_working_day(day) {
                    counted += 1;
                }
                day = day.succ_opt().unwrap();
            }
            prop_assert_eq!(counted, 15);
            prop_assert!(d.fallback_years.iter().all(|y| *y >= request_day.year()));
        }

        /// A later request never gets an earlier deadline.
        #[test]
        fn deadlines_are_monotonic(a in instant(), b in instant()) {
            let calendar = WorkingCalendar::default();
            let (early, late) = if a <= b { (a, b) } else { (b, a) };
            let de = calendar.deadline(early, STATUTORY_WORKING_DAYS).unwrap().at;
            let dl = calendar.deadline(late, STATUTORY_WORKING_DAYS).unwrap().at;
            prop_assert!(de <= dl);
        }
    }
}

/// The provisional rule for unpublished years, checked against every published one.
#[cfg(test)]
mod provisional_tests {
    use chrono::{Datelike as _, NaiveDate, TimeZone as _};
    use chrono_tz::Asia::Shanghai;

    use super::law_fixed::{
        ADJUSTED_WEEKEND_MARGIN_DAYS, FIRST_RULED_YEAR, is_law_fixed_holiday,
        is_provisional_working_day_with_margin, law_fixed_holidays, statutory_anchors,
    };
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn at_ten(day: NaiveDate) -> DateTime<Utc> {
        Shanghai
            .with_ymd_and_hms(day.year(), day.month(), day.day(), 10, 0, 0)
            .single()
            .expect("Shanghai has no DST")
            .to_utc()
    }

    /// The one adjusted weekend of 2008–2026 the statute does not explain: the
    /// Sunday worked for the one-off 2015 Victory Day holiday (3–4 September).
    const ONE_OFF_ADJUSTED_WEEKEND: NaiveDate = ymd(2015, 9, 6);

    fn published_days() -> impl Iterator<Item = NaiveDate> {
        d(FIRST_RULED_YEAR, 1, 1)
            .iter_days()
            .take_while(|day| *day <= OFFICIAL_DATA_LAST_DAY)
    }

    fn officially_working(day: NaiveDate) -> bool {
        chinese_holiday::chinese_holiday(&day).is_workday()
    }

    #[test]
    fn law_fixed_holidays_are_official_holidays() {
        // Checks the lunar dates and 清明 against the published schedules too.
        for day in published_days().filter(|day| is_law_fixed_holiday(*day)) {
            assert!(!officially_working(day), "{day} is law-fixed but worked");
        }
        let count = |year| law_fixed_holidays(year).len();
        assert_eq!(
            (count(2013), count(2014), count(2024), count(2025)),
            (11, 11, 11, 13)
        );
        // 2020 and 2025: 中秋 falls on 1 October.
        assert_eq!(count(2020), 10);
        assert!(law_fixed_holidays(2007).is_empty());
    }

    #[test]
    fn anchors_for_the_years_after_the_published_data() {
        let anchors = statutory_anchors(2027).expect("in range");
        assert_eq!(anchors.spring_festival, d(2027, 2, 6));
        assert_eq!(anchors.qingming, d(2027, 4, 5));
        assert_eq!(anchors.dragon_boat, d(2027, 6, 9));
        assert_eq!(anchors.mid_autumn, d(2027, 9, 15));
        assert_eq!(
            law_fixed_holidays(2027),
            [
                d(2027, 1, 1),
                d(2027, 2, 5),
                d(2027, 2, 6),
                d(2027, 2, 7),
                d(2027, 2, 8),
                d(2027, 4, 5),
                d(2027, 5, 1),
                d(2027, 5, 2),
                d(2027, 6, 9),
                d(2027, 9, 15),
                d(2027, 10, 1),
                d(2027, 10, 2),
                d(2027, 10, 3),
            ]
        );
        assert_eq!(statutory_anchors(1899), None);
        assert_eq!(statutory_anchors(2200), None);
        assert!(law_fixed_holidays(2200).is_empty());
    }

    #[test]
    fn every_statutory_adjusted_weekend_is_within_the_margin() {
        // With every 调休 weekend counted, the provisional working days contain
        // the official ones, so no mix of published and unpublished days can
        // give a later deadline.
        let missed: Vec<NaiveDate> = published_days()
            .filter(|day| {
                officially_working(*day)
                    && !is_provisional_working_day_with_margin(*day, ADJUSTED_WEEKEND_MARGIN_DAYS)
            })
            .collect();
        assert_eq!(missed, vec![ONE_OFF_ADJUSTED_WEEKEND]);
    }

    /// Index of the `n`-th working day after `request`, or `None` past the data.
    fn nth_working_day_after(request: usize, n: u32, working: &[bool]) -> Option<usize> {
        let mut left = n;
        (request + 1..working.len()).find(|&i| {
            if working[i] {
                left -= 1;
            }
            left == 0
        })
    }

    #[derive(Default)]
    struct Earlier {
        requests: u64,
        total_days: u64,
        max_days: u64,
        later: Vec<(NaiveDate, u32)>,
    }

    /// For each request day of 2008–2026: the deadline counted with the
    /// request's year unpublished (the rest official), and with every year
    /// unpublished, against the official one.
    fn compare(margin: u64, n: u32) -> (Earlier, Earlier) {
        let days: Vec<NaiveDate> = published_days().collect();
        let official: Vec<bool> = days.iter().map(|day| officially_working(*day)).collect();
        let provisional: Vec<bool> = days
            .iter()
            .map(|day| is_provisional_working_day_with_margin(*day, margin))
            .collect();
        let (mut own_year, mut all_years) = (Earlier::default(), Earlier::default());
        for (request, request_day) in days.iter().enumerate() {
            let Some(official_end) = nth_working_day_after(request, n, &official) else {
                continue; // the official deadline lies past the published data
            };
            let mixed: Vec<bool> = (0..days.len())
                .map(|i| {
                    if days[i].year() == request_day.year() {
                        provisional[i]
                    } else {
                        official[i]
                    }
                })
                .collect();
            for (tally, working) in [(&mut own_year, &mixed), (&mut all_years, &provisional)] {
                let end = nth_working_day_after(request, n, working).expect("earlier or equal");
                tally.requests += 1;
                if end > official_end {
                    tally.later.push((*request_day, n));
                } else {
                    let earlier = (official_end - end) as u64;
                    tally.total_days += earlier;
                    tally.max_days = tally.max_days.max(earlier);
                }
            }
        }
        (own_year, all_years)
    }

    #[test]
    fn provisional_rule_is_never_later_than_the_official_schedule() {
        for n in [STATUTORY_WORKING_DAYS, 30] {
            let (own_year, all_years) = compare(ADJUSTED_WEEKEND_MARGIN_DAYS, n);
            for (label, tally) in [("request's year", &own_year), ("every year", &all_years)] {
                assert!(
                    tally.later.is_empty(),
                    "{n} days, {label} unpublished: later for {:?}",
                    tally.later
                );
                println!(
                    "{n} working days, {label} unpublished: {} requests, on average {:.2} days earlier, at most {}",
                    tally.requests,
                    tally.total_days as f64 / tally.requests as f64,
                    tally.max_days
                );
            }
        }
        // The smallest margin the deadlines need, for the record.
        let needed = (0..=ADJUSTED_WEEKEND_MARGIN_DAYS)
            .find(|&margin| {
                [STATUTORY_WORKING_DAYS, 30].iter().all(|&n| {
                    let (own_year, all_years) = compare(margin, n);
                    own_year.later.is_empty() && all_years.later.is_empty()
                })
            })
            .expect("the chosen margin passes");
        println!(
            "smallest weekend margin keeping every deadline: {needed} days (chosen: {ADJUSTED_WEEKEND_MARGIN_DAYS})"
        );
    }

    #[test]
    fn new_year_2027_is_not_counted() {
        let deadline = WorkingCalendar::official(Shanghai)
            .deadline(at_ten(d(2026, 12, 20)), STATUTORY_WORKING_DAYS)
            .expect("deadline computable");
        assert!(!deadline.working_days.contains(&d(2027, 1, 1)));
        assert!(deadline.provisional);
        assert_eq!(deadline.fallback_years, vec![2026, 2027]);
    }

    #[test]
    fn spring_festival_2027_eve_to_third_day_are_not_counted() {
        let calendar = WorkingCalendar::official(Shanghai);
        for request in d(2027, 1, 1).iter_days().take(31) {
            let deadline = calendar
                .deadline(at_ten(request), STATUTORY_WORKING_DAYS)
                .expect("deadline computable");
            assert!(deadline.provisional);
            for holiday in [d(2027, 2, 5), d(2027, 2, 8)] {
                assert!(
                    !deadline.working_days.contains(&holiday),
                    "{request}: {holiday}"
                );
            }
        }
        // Weekends that a 调休 may make working days count as such.
        assert!(calendar.is_working_day(d(2027, 1, 30)));
        assert!(calendar.is_working_day(d(2027, 2, 13)));
        assert!(!calendar.is_working_day(d(2027, 2, 20)));
    }

    #[test]
    fn a_published_year_is_not_provisional() {
        let deadline = WorkingCalendar::official(Shanghai)
            .deadline(at_ten(d(2025, 9, 26)), STATUTORY_WORKING_DAYS)
            .expect("deadline computable");
        assert!(!deadline.provisional);
    }
}
