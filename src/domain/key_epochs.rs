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

/// Why a shred statement is not issued (or not believed) for an erasure. Each
/// is a log line, a metric attribute and an audit event detail
/// (`shred-refused:<as_str>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShredRefusal {
    /// The ticket's receipt does not verify under the service's own key.
    ReceiptUnverified,
    /// The ticket, the index or the shred statement names another erasure than
    /// the signed receipt (ticket id, tenant, subject or completion time).
    OtherErasure,
    /// The signed receipt names no key epoch (made before key epochs): nothing
    /// says which retirement would shred it.
    NoEpochs,
    /// An epoch the signed receipt names is still in the keyring.
    EpochNotRetired,
    /// The signed receipt names the epoch that shares the identity root, whose
    /// retirement shreds nothing.
    IdentityBound,
    /// The statement's retired epochs do not include every epoch the receipt names.
    EpochsNotCovered,
    /// A template the erasure covers still opens under the keyring.
    TemplateReadable,
}

impl ShredRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReceiptUnverified => "receipt-unverified",
            Self::OtherErasure => "other-erasure",
            Self::NoEpochs => "no-epochs",
            Self::EpochNotRetired => "epoch-not-retired",
            Self::IdentityBound => "identity-bound-epoch",
            Self::EpochsNotCovered => "epochs-not-covered",
            Self::TemplateReadable => "template-readable",
        }
    }
}

/// The epochs of an erasure (from its signed receipt) are all shredded: none is
/// still in the keyring (`in_keyring`), and none is the epoch the identity root
/// can derive again.
pub fn epochs_shredded(
    key_epochs: &[u32],
    in_keyring: impl Fn(u32) -> bool,
    identity_bound: Option<u32>,
) -> Result<(), ShredRefusal> {
    if key_epochs.is_empty() {
        return Err(ShredRefusal::NoEpochs);
    }
    if identity_bound.is_some_and(|b| key_epochs.contains(&b)) {
        return Err(ShredRefusal::IdentityBound);
    }
    if key_epochs.iter().any(|e| in_keyring(*e)) {
        return Err(ShredRefusal::EpochNotRetired);
    }
    Ok(())
}

/// A shred statement's retired epochs cover the receipt's: every epoch that
/// could have wrapped the erased DEKs is among them (and there is one at least).
pub fn epochs_covered(retired: &[u32], key_epochs: &[u32]) -> Result<(), ShredRefusal> {
    if key_epochs.is_empty() {
        return Err(ShredRefusal::NoEpochs);
    }
    if key_epochs.iter().all(|e| retired.contains(e)) {
        Ok(())
    } else {
        Err(ShredRefusal::EpochsNotCovered)
    }
}

/// What an erasure removed, read from its signed receipt's `erased` list, as
/// far as the shred check needs it: which templates, still readable, would
/// make "copies made before completed_at are unreadable" false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureScope {
    /// Everything of the subject (delete, cancel, decommission: "consents").
    Subject,
    /// The consent purposes withdrawn ("consent-purpose:<p>"): every template
    /// that held one of them was rewritten or erased.
    Purposes(Vec<String>),
    /// One template (retention): the one whose retention ticket id is the
    /// receipt's ticket id.
    OneTemplate,
}

impl ErasureScope {
    pub fn from_erased(erased: &[String]) -> Self {
        if erased.iter().any(|e| e == "consents") {
            return Self::Subject;
        }
        let purposes: Vec<String> = erased
            .iter()
            .filter_map(|e| e.strip_prefix("consent-purpose:"))
            .map(str::to_owned)
            .collect();
        if purposes.is_empty() {
            Self::OneTemplate
        } else {
            Self::Purposes(purposes)
        }
    }

    /// A readable template blocks the statement when the erasure covered it:
    /// enrolled at or before the erasure completed (its authenticated
    /// `enrolled_at`; a later enrollment is a new, legitimate one), and in scope.
    /// `is_ticket_template` says the template's retention ticket id is the
    /// receipt's ticket id.
    pub fn covers(
        &self,
        enrolled_at_ms: i64,
        completed_at_ms: i64,
        purposes: &[String],
        is_ticket_template: bool,
    ) -> bool {
        if enrolled_at_ms > completed_at_ms {
            return false;
        }
        match self {
            Self::Subject => true,
            Self::Purposes(withdrawn) => purposes.iter().any(|p| withdrawn.contains(p)),
            Self::OneTemplate => is_ticket_template,
        }
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

    #[test]
    fn shred_needs_every_signed_epoch_retired_and_none_identity_bound() {
        let keyring = [2u32, 3];
        let in_keyring = |e: u32| keyring.contains(&e);
        assert_eq!(epochs_shredded(&[1], in_keyring, None), Ok(()));
        assert_eq!(
            epochs_shredded(&[1, 2], in_keyring, None),
            Err(ShredRefusal::EpochNotRetired)
        );
        assert_eq!(
            epochs_shredded(&[1], in_keyring, Some(1)),
            Err(ShredRefusal::IdentityBound)
        );
        assert_eq!(
            epochs_shredded(&[], in_keyring, None),
            Err(ShredRefusal::NoEpochs)
        );
        assert_eq!(epochs_covered(&[1, 2, 5], &[1, 2]), Ok(()));
        assert_eq!(
            epochs_covered(&[0], &[1]),
            Err(ShredRefusal::EpochsNotCovered)
        );
        assert_eq!(epochs_covered(&[1], &[]), Err(ShredRefusal::NoEpochs));
    }

    #[test]
    fn a_readable_template_blocks_only_what_the_erasure_covered() {
        let s = |v: &[&str]| v.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>();
        let subject =
            ErasureScope::from_erased(&s(&["templates:2", "consents", "lockout-counters"]));
        assert_eq!(subject, ErasureScope::Subject);
        assert!(subject.covers(10, 10, &[], false));
        assert!(
            !subject.covers(11, 10, &[], false),
            "re-enrolled after the erasure"
        );
        let withdraw = ErasureScope::from_erased(&s(&["templates:0", "consent-purpose:login"]));
        assert_eq!(withdraw, ErasureScope::Purposes(s(&["login"])));
        assert!(withdraw.covers(5, 10, &s(&["pay", "login"]), false));
        assert!(
            !withdraw.covers(5, 10, &s(&["pay"]), false),
            "kept by its other purpose"
        );
        let retention = ErasureScope::from_erased(&s(&["templates:1"]));
        assert_eq!(retention, ErasureScope::OneTemplate);
        assert!(retention.covers(5, 10, &[], true));
        assert!(
            !retention.covers(5, 10, &[], false),
            "another template of the subject"
        );
    }
}
