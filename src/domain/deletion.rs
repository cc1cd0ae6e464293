//! Deletion rules: when an erasure is due, by when it must be done, and which
//! grace periods are lawful. Pure: the caller passes the instant.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::calendar::{CalendarError, WorkingCalendar};

/// Why a subject's data is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionKind {
    /// `DeleteSubject`: erased at once.
    Delete,
    /// `WithdrawConsent`: templates no purpose covers any more, erased at once.
    Withdraw,
    /// `CancelAccount`: unusable at once, erased by the statutory deadline.
    Cancel,
    /// The tenant's maximum template age was reached.
    Retention,
    /// The tenant stopped using face recognition (`Admin.DecommissionTenant`).
    Decommission,
}

impl DeletionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "delete",
            Self::Withdraw => "withdraw",
            Self::Cancel => "cancel",
            Self::Retention => "retention",
            Self::Decommission => "decommission",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Delete,
            Self::Withdraw,
            Self::Cancel,
            Self::Retention,
            Self::Decommission,
        ]
        .into_iter()
        .find(|k| k.as_str() == value)
    }
}

/// The caller's free-text note on a cancellation: at most 256 characters, no
/// control characters. Promised to hold no personal data, which nothing can
/// enforce, so it is kept sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelReason(String);

impl CancelReason {
    pub const MAX_CHARS: usize = 256;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CancelReason {
    type Error = super::InvalidInput;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.chars().count() > Self::MAX_CHARS || value.chars().any(char::is_control) {
            return Err(super::InvalidInput::Reason);
        }
        Ok(Self(value))
    }
}

/// The note is the caller's text: never printed.
impl std::fmt::Debug for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelReason({} chars)", self.0.chars().count())
    }
}

/// When an account cancellation is erased and by when it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub due: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// Years counted with the provisional rule (no published schedule).
    pub fallback_years: Vec<i32>,
    /// The deadline may be earlier than the official one (never later); it is
    /// recomputed once the schedule for those years is published.
    pub provisional: bool,
}

#[derive(Debug, Clone)]
pub struct DeletionPolicy {
    calendar: WorkingCalendar,
    working_days: u32,
    grace: Duration,
}

/// Working days that must remain between the end of a grace period and the
/// statutory deadline, so an erasure that fails once still has time to be retried.
pub const GRACE_MARGIN_WORKING_DAYS: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum DeletionPolicyError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(
        "the deletion grace period must end at least {GRACE_MARGIN_WORKING_DAYS} working days before the \
         {working_days}-working-day deadline; a request on {day} would not (shorten deletion.grace_period_secs)"
    )]
    GraceTooLong {
        working_days: u32,
        day: chrono::NaiveDate,
    },
    #[error("deletion.working_days must be greater than {GRACE_MARGIN_WORKING_DAYS}")]
    TooFewWorkingDays,
}

impl DeletionPolicy {
    /// Checks the grace period against every request day of the coming year (the
    /// calendar's holidays make some deadlines much closer than others).
    pub fn new(
        calendar: WorkingCalendar,
        working_days: u32,
        grace: Duration,
        today: DateTime<Utc>,
    ) -> Result<Self, DeletionPolicyError> {
        if working_days <= GRACE_MARGIN_WORKING_DAYS {
            return Err(DeletionPolicyError::TooFewWorkingDays);
        }
        let policy = Self {
            calendar,
            working_days,
            grace,
        };
        if !grace.is_zero() {
            let grace = chrono::Duration::from_std(grace).map_err(|_| CalendarError::OutOfRange)?;
            for (day, requested_at) in policy.request_days_from(today) {
                let limit = policy
                    .calendar
                    .deadline(requested_at, working_days - GRACE_MARGIN_WORKING_DAYS)?;
                if requested_at + grace > limit.at {
                    return Err(DeletionPolicyError::GraceTooLong { working_days, day });
                }
            }
        }
        Ok(policy)
    }

    /// Every day of the coming year, with its latest instant: a request then
    /// leaves the least time before its deadline, so a policy that holds for
    /// it holds for the whole day.
    pub fn request_days_from(
        &self,
        today: DateTime<Utc>,
    ) -> impl Iterator<Item = (chrono::NaiveDate, DateTime<Utc>)> + use<> {
        let tz = self.calendar.time_zone();
        let first = today.with_timezone(&tz).date_naive();
        (0..=366).filter_map(move |offset| {
            let day = first + chrono::Days::new(offset);
            let latest = day
                .and_hms_opt(23, 59, 59)?
                .and_local_timezone(tz)
                .latest()?;
            Some((day, latest.with_timezone(&Utc)))
        })
    }

    pub fn calendar(&self) -> &WorkingCalendar {
        &self.calendar
    }

    pub fn working_days(&self) -> u32 {
        self.working_days
    }

    pub fn schedule(&self, requested_at: DateTime<Utc>) -> Result<Schedule, CalendarError> {
        let deadline = self.calendar.deadline(requested_at, self.working_days)?;
        let grace =
            chrono::Duration::from_std(self.grace).map_err(|_| CalendarError::OutOfRange)?;
        Ok(Schedule {
            due: requested_at + grace,
            deadline: deadline.at,
            fallback_years: deadline.fallback_years,
            provisional: deadline.provisional,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::domain::calendar::DEFAULT_TIME_ZONE;

    #[test]
    fn cancel_reasons_are_short_plain_text_and_never_printed() {
        assert!(CancelReason::try_from(String::new()).is_ok());
        assert!(CancelReason::try_from("关闭账户".repeat(64)).is_ok());
        assert!(CancelReason::try_from("x".repeat(257)).is_err());
        assert!(CancelReason::try_from("line\nbreak".to_owned()).is_err());
        let reason = CancelReason::try_from("moved abroad".to_owned()).unwrap();
        assert_eq!(format!("{reason:?}"), "CancelReason(12 chars)");
    }

    fn shanghai(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        DEFAULT_TIME_ZONE
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn immediate_erasure_is_due_at_request() {
        let p = DeletionPolicy::new(
            WorkingCalendar::default(),
            15,
            Duration::ZERO,
            shanghai(2025, 9, 1, 0, 0),
        )
        .unwrap();
        let at = shanghai(2025, 9, 26, 10, 0);
        let s = p.schedule(at).unwrap();
        assert_eq!(s.due, at);
        // 2025 National Day: see calendar tests; the 15th working day is 23 Oct.
        assert_eq!(
            s.deadline,
            shanghai(2025, 10, 23, 23, 59) + chrono::Duration::milliseconds(59_999)
        );
    }

    #[test]
    fn a_short_grace_period_is_accepted() {
        let grace = Duration::from_secs(3 * 24 * 3600);
        let p = DeletionPolicy::new(
            WorkingCalendar::default(),
            15,
            grace,
            shanghai(2025, 1, 1, 0, 0),
        )
        .unwrap();
        let at = shanghai(2025, 3, 3, 9, 0);
        assert_eq!(p.schedule(at).unwrap().due, at + chrono::Duration::days(3));
    }

    #[test]
    fn a_grace_period_too_close_to_the_deadline_is_refused() {
        // 15 working days are at least three calendar weeks; around Spring Festival
        // or National Day the 13th working day comes before 17 calendar days, so
        // 17 days of grace must be refused.
        let grace = Duration::from_secs(17 * 24 * 3600);
        let err = DeletionPolicy::new(
            WorkingCalendar::default(),
            15,
            grace,
            shanghai(2025, 1, 1, 0, 0),
        )
        .unwrap_err();
        assert!(
            matches!(err, DeletionPolicyError::GraceTooLong { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("grace_period_secs"));
    }

    #[test]
    fn too_few_working_days_are_refused() {
        assert!(matches!(
            DeletionPolicy::new(WorkingCalendar::default(), 2, Duration::ZERO, Utc::now()),
            Err(DeletionPolicyError::TooFewWorkingDays)
        ));
    }
}
