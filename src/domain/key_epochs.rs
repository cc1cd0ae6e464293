//! The key-epoch policy that makes an erasure reach every copy of Redis.
//!
//! An erasure at time `t` is cryptographic once every KEK epoch that existed at
//! `t` has been retired. The epoch active at `t` stays active at most
//! `epoch_days`, its DEKs are re-wrapped and the epoch retired within
//! `max_rewrap_days` after that, so every copy made before `t` is unreadable by
//! `t + epoch_days + max_rewrap_days`. That must fall before the statutory
//! deadline, for every day a request can arrive.

use chrono::{DateTime, Utc};

use super::calendar::CalendarError;
use super::deletion::DeletionPolicy;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPolicy {
    pub epoch_days: u32,
    pub max_rewrap_days: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EpochPolicyError {
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(
        "keys.epoch_days ({epoch_days}) + keys.max_rewrap_days ({max_rewrap_days}) do not end before the \
         {working_days}-working-day deletion deadline of a request on {day}: copies made before that erasure \
         would stay readable past the deadline; shorten keys.epoch_days or keys.max_rewrap_days"
    )]
    TooLong {
        epoch_days: u32,
        max_rewrap_days: u32,
        working_days: u32,
        day: chrono::NaiveDate,
    },
}

impl EpochPolicy {
    /// Longest from an erasure until every copy made before it is unreadable.
    pub fn shred_window(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.epoch_days) + i64::from(self.max_rewrap_days))
    }

    /// Checks the window against the deadline of every request day of the coming
    /// year, counted from the end of that day and after any grace period.
    pub fn check(
        &self,
        deletion: &DeletionPolicy,
        today: DateTime<Utc>,
    ) -> Result<(), EpochPolicyError> {
        for (day, requested_at) in deletion.request_days_from(today) {
            let schedule = deletion.schedule(requested_at)?;
            if schedule.due + self.shred_window() > schedule.deadline {
                return Err(EpochPolicyError::TooLong {
                    epoch_days: self.epoch_days,
                    max_rewrap_days: self.max_rewrap_days,
                    working_days: deletion.working_days(),
                    day,
                });
            }
        }
        Ok(())
    }

    /// When an epoch must be retired: `max_rewrap_days` after it stopped (or
    /// had to stop) being active. None when its creation time is unknown (an
    /// epoch from before key epochs): it is due at once.
    pub fn retire_by(
        &self,
        created_at_unix_ms: Option<i64>,
        successor_created_at_unix_ms: Option<i64>,
    ) -> Option<i64> {
        let created = created_at_unix_ms?;
        let active_until = created + i64::from(self.epoch_days) * DAY_MS;
        let ended = successor_created_at_unix_ms.map_or(active_until, |s| s.min(active_until));
        Some(ended + i64::from(self.max_rewrap_days) * DAY_MS)
    }

    /// When the active epoch must be rotated.
    pub fn rotate_by(&self, created_at_unix_ms: Option<i64>) -> Option<i64> {
        Some(created_at_unix_ms? + i64::from(self.epoch_days) * DAY_MS)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone as _;

    use super::*;
    use crate::domain::calendar::{DEFAULT_TIME_ZONE, WorkingCalendar};

    fn deletion(grace: Duration) -> DeletionPolicy {
        let today = Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap();
        DeletionPolicy::new(
            WorkingCalendar::official(DEFAULT_TIME_ZONE),
            15,
            grace,
            today,
        )
        .unwrap()
    }

    #[test]
    fn defaults_fit_the_statutory_deadline_every_day_of_the_year() {
        let today = Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap();
        let policy = EpochPolicy {
            epoch_days: 7,
            max_rewrap_days: 1,
        };
        policy.check(&deletion(Duration::ZERO), today).unwrap();
    }

    /// In the year from 1 December 2025 (all published) the shortest 15 working
    /// days are those from a request late on Monday 23 February 2026, after the
    /// Spring Festival holiday: the working Saturday 28 February brings them to
    /// Friday 13 March, 18 days later. 17 + 1 fits every day, 18 + 1 does not,
    /// and 30 fits none. (An unpublished year's provisional deadlines can be
    /// shorter still: they count the weekends near a holiday.)
    #[test]
    fn too_long_an_epoch_is_refused_naming_the_day_and_the_fix() {
        let today = Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap();
        let fits = EpochPolicy {
            epoch_days: 17,
            max_rewrap_days: 1,
        };
        fits.check(&deletion(Duration::ZERO), today).unwrap();
        let one_more = EpochPolicy {
            epoch_days: 18,
            max_rewrap_days: 1,
        };
        assert!(one_more.check(&deletion(Duration::ZERO), today).is_err());
        let too_long = EpochPolicy {
            epoch_days: 30,
            max_rewrap_days: 1,
        };
        let err = too_long
            .check(&deletion(Duration::ZERO), today)
            .unwrap_err()
            .to_string();
        assert!(err.contains("shorten keys.epoch_days"), "{err}");
        // A grace period eats into the same deadline.
        let err = fits
            .check(&deletion(Duration::from_secs(10 * 86_400)), today)
            .unwrap_err()
            .to_string();
        assert!(err.contains("keys.epoch_days (17)"), "{err}");
    }

    #[test]
    fn retirement_is_due_rewrap_days_after_the_epoch_ended() {
        let policy = EpochPolicy {
            epoch_days: 7,
            max_rewrap_days: 1,
        };
        // Rotated early: the successor's creation ends it.
        assert_eq!(
            policy.retire_by(Some(0), Some(2 * DAY_MS)),
            Some(3 * DAY_MS)
        );
        // Not rotated: it should have ended after 7 days.
        assert_eq!(policy.retire_by(Some(0), None), Some(8 * DAY_MS));
        assert_eq!(
            policy.retire_by(Some(0), Some(30 * DAY_MS)),
            Some(8 * DAY_MS)
        );
        assert_eq!(policy.retire_by(None, Some(0)), None);
        assert_eq!(policy.rotate_by(Some(0)), Some(7 * DAY_MS));
    }
}
