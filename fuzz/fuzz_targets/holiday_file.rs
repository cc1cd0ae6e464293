//! Any text as an operator's holiday file, then a deadline from it: an error or
//! a deadline, never a panic (the official data's crate panics out of range).
#![no_main]

use facevault::domain::calendar::{DEFAULT_TIME_ZONE, WorkingCalendar};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(calendar) = WorkingCalendar::with_overrides(DEFAULT_TIME_ZONE, text) {
        let start = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let _ = calendar.deadline(start, 15);
    }
});
