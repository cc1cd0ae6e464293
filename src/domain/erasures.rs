//! What the verified audit log says was erased, and the rule that keeps an
//! erased template from being carried into a new key epoch.
//!
//! Every erasure is an audit event (`op: Erasure`) whose detail states its scope:
//! the whole subject (`erased:all`) or named templates (`erased:<id>+<id>`; ids are
//! random, never personal), and when the erasure began (`from:<unix ms>`). A
//! template is dead when its subject was wholly erased after it was enrolled, or
//! when its own id was erased. A withdrawal that leaves a template with fewer
//! purposes re-seals it under the same id and says so (`narrowed:<id>+<id>`,
//! `withdrawn:<purpose>+<purpose>`): a copy of that template that still holds a
//! withdrawn purpose is the copy from before the withdrawal, dead too. Its
//! `enrolled_at` and purposes come from inside its AEAD, the erasure from an
//! event whose HMAC verified: neither is Redis's word.

use std::collections::{BTreeMap, BTreeSet};

/// One erasure as its event states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// When the erasure began (unix ms): everything enrolled before it is gone
    /// when the scope is the whole subject.
    pub from_ms: i64,
    pub scope: ErasureScope,
    /// Templates kept with fewer purposes (re-sealed under the same id).
    pub narrowed: Vec<String>,
    /// The purposes withdrawn from them.
    pub withdrawn: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErasureScope {
    /// Everything the subject held.
    Subject,
    /// These templates only (a withdrawal or a retention expiry that left others).
    Templates(Vec<String>),
}

const ALL: &str = "erased:all";
const ERASED: &str = "erased:";
const FROM: &str = "from:";
const NARROWED: &str = "narrowed:";
const WITHDRAWN: &str = "withdrawn:";

fn plus_list(items: &str) -> Vec<String> {
    items
        .split('+')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Erasure {
    /// An erasure of `scope` that narrowed nothing.
    pub fn of(from_ms: i64, scope: ErasureScope) -> Self {
        Self {
            from_ms,
            scope,
            narrowed: Vec::new(),
            withdrawn: Vec::new(),
        }
    }

    /// The markers this erasure adds to its event's detail (after the kind).
    pub fn detail_markers(&self) -> Vec<String> {
        let scope = match &self.scope {
            ErasureScope::Subject => ALL.to_owned(),
            ErasureScope::Templates(ids) => format!("{ERASED}{}", ids.join("+")),
        };
        let mut markers = vec![scope, format!("{FROM}{}", self.from_ms)];
        if !self.narrowed.is_empty() {
            markers.push(format!("{NARROWED}{}", self.narrowed.join("+")));
            markers.push(format!("{WITHDRAWN}{}", self.withdrawn.join("+")));
        }
        markers
    }

    /// Reads an erasure event's detail. Events from before erasures stated
    /// their scope say `delete`, `cancel` or `decommission` (whole subject, as
    /// of the event's own time) or `withdraw`/`retention` (scope unknown:
    /// nothing is concluded from them, rather than erase what may be alive).
    pub fn from_detail(detail: &str, event_time_ms: i64) -> Option<Self> {
        let mut markers = detail.split(", ");
        let kind = markers.next()?;
        let (mut scope, mut from_ms) = (None, None);
        let (mut narrowed, mut withdrawn) = (Vec::new(), Vec::new());
        for marker in markers {
            if marker == ALL {
                scope = Some(ErasureScope::Subject);
            } else if let Some(ids) = marker.strip_prefix(ERASED) {
                scope = Some(ErasureScope::Templates(plus_list(ids)));
            } else if let Some(ms) = marker.strip_prefix(FROM) {
                from_ms = ms.parse().ok();
            } else if let Some(ids) = marker.strip_prefix(NARROWED) {
                narrowed = plus_list(ids);
            } else if let Some(purposes) = marker.strip_prefix(WITHDRAWN) {
                withdrawn = plus_list(purposes);
            }
        }
        let scope = match (scope, kind) {
            (Some(scope), _) => scope,
            (None, "delete" | "cancel" | "decommission") => ErasureScope::Subject,
            (None, _) => return None,
        };
        Some(Self {
            from_ms: from_ms.unwrap_or(event_time_ms),
            scope,
            narrowed,
            withdrawn,
        })
    }
}

/// The erasures of one subject that can still matter.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubjectErasures {
    /// When the newest erasure of the whole subject began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_from_ms: Option<i64>,
    /// Templates erased one by one, and when.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, i64>,
    /// Templates kept with fewer purposes: when, and every purpose withdrawn
    /// from them (a template's purposes only ever shrink).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub narrowed: BTreeMap<String, (i64, BTreeSet<String>)>,
}

/// Subject ref → its erasures, as walked over in the verified log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ErasureIndex {
    subjects: BTreeMap<String, SubjectErasures>,
}

impl ErasureIndex {
    pub fn record(&mut self, subject_ref: &str, erasure: &Erasure) {
        let entry = self.subjects.entry(subject_ref.to_owned()).or_default();
        match &erasure.scope {
            ErasureScope::Subject => {
                entry.all_from_ms = entry.all_from_ms.max(Some(erasure.from_ms));
            }
            ErasureScope::Templates(ids) => {
                for id in ids {
                    let at = entry.templates.entry(id.clone()).or_insert(erasure.from_ms);
                    *at = (*at).max(erasure.from_ms);
                }
            }
        }
        for id in &erasure.narrowed {
            let (at, purposes) = entry
                .narrowed
                .entry(id.clone())
                .or_insert((erasure.from_ms, BTreeSet::new()));
            *at = (*at).max(erasure.from_ms);
            purposes.extend(erasure.withdrawn.iter().cloned());
        }
    }

    /// When an erasure that covers this template began, if one does: the
    /// template is then a restored copy of erased data, never alive.
    /// `purposes` are those the template's own (authenticated) consent holds:
    /// one a withdrawal took from it marks the copy from before it.
    pub fn erased_at(
        &self,
        subject_ref: &str,
        template_id: &str,
        enrolled_at_ms: i64,
        purposes: &[String],
    ) -> Option<i64> {
        let entry = self.subjects.get(subject_ref)?;
        let whole = entry.all_from_ms.filter(|from| enrolled_at_ms < *from);
        let narrowed = entry
            .narrowed
            .get(template_id)
            .filter(|(_, withdrawn)| purposes.iter().any(|p| withdrawn.contains(p)))
            .map(|(at, _)| *at);
        whole
            .or_else(|| entry.templates.get(template_id).copied())
            .or(narrowed)
    }

    /// Whether any erasure of the subject can still matter.
    pub fn names(&self, subject_ref: &str) -> bool {
        self.subjects.contains_key(subject_ref)
    }

    /// Subjects whose erasures differ from `before` (gained one since).
    pub fn changed_since<'a>(&'a self, before: &'a ErasureIndex) -> impl Iterator<Item = &'a str> {
        self.subjects
            .iter()
            .filter(move |(k, s)| before.subjects.get(*k) != Some(*s))
            .map(|(k, _)| k.as_str())
    }

    /// Forgets erasures that began before `horizon_ms`: no copy that escaped
    /// them can still be opened (see `AuditReader::erasure_index`).
    pub fn prune(&mut self, horizon_ms: i64) {
        self.subjects.retain(|_, s| {
            s.all_from_ms = s.all_from_ms.filter(|t| *t >= horizon_ms);
            s.templates.retain(|_, t| *t >= horizon_ms);
            s.narrowed.retain(|_, (t, _)| *t >= horizon_ms);
            s.all_from_ms.is_some() || !s.templates.is_empty() || !s.narrowed.is_empty()
        });
    }

    /// Subjects with an erasure that can still matter.
    pub fn len(&self) -> usize {
        self.subjects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_round_trips_and_old_details_are_read_safely() {
        let whole = Erasure::of(42, ErasureScope::Subject);
        let detail = format!("delete, {}", whole.detail_markers().join(", "));
        assert_eq!(Erasure::from_detail(&detail, 99), Some(whole));
        let some = Erasure {
            narrowed: vec!["c".into()],
            withdrawn: vec!["payment".into(), "login".into()],
            ..Erasure::of(7, ErasureScope::Templates(vec!["a-1".into(), "b_2".into()]))
        };
        let detail = format!(
            "withdraw, {}, caller-gone",
            some.detail_markers().join(", ")
        );
        assert_eq!(Erasure::from_detail(&detail, 99), Some(some));
        assert_eq!(
            Erasure::from_detail("cancel", 99),
            Some(Erasure::of(99, ErasureScope::Subject))
        );
        assert_eq!(Erasure::from_detail("withdraw", 99), None);
    }

    #[test]
    fn only_templates_older_than_a_whole_erasure_or_named_by_one_are_dead() {
        let mut index = ErasureIndex::default();
        index.record("s", &Erasure::of(100, ErasureScope::Subject));
        index.record(
            "s",
            &Erasure {
                narrowed: vec!["n".into()],
                withdrawn: vec!["payment".into()],
                ..Erasure::of(150, ErasureScope::Templates(vec!["t".into()]))
            },
        );
        let none: &[String] = &[];
        let (login, both) = (
            &["login".to_owned()][..],
            &["login".to_owned(), "payment".to_owned()][..],
        );
        assert_eq!(index.erased_at("s", "x", 99, none), Some(100));
        assert_eq!(
            index.erased_at("s", "x", 100, none),
            None,
            "re-enrolled after"
        );
        assert_eq!(index.erased_at("s", "t", 120, none), Some(150));
        assert_eq!(index.erased_at("other", "x", 1, none), None);
        // The narrowed template: alive as re-sealed, dead as it was before.
        assert_eq!(index.erased_at("s", "n", 120, login), None);
        assert_eq!(index.erased_at("s", "n", 120, both), Some(150));
        index.prune(120);
        assert_eq!(
            index.erased_at("s", "x", 99, none),
            None,
            "older than the horizon"
        );
        assert_eq!(index.erased_at("s", "t", 120, none), Some(150));
        assert_eq!(index.erased_at("s", "n", 120, both), Some(150));
        index.prune(151);
        assert!(index.is_empty());
    }
}
