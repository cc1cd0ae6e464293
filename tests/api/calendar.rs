//! Provisional deadlines: years without a published holiday schedule, the
//! `deadline` command's account of them, and tickets recounted once a holiday
//! file publishes their years.

use std::time::Duration;

use chrono::{DateTime, Utc};
use facevault::domain::calendar::WorkingCalendar;
use facevault::domain::calendar::law_fixed::law_fixed_holidays;
use facevault::proto;

use crate::helpers::*;
use crate::lifecycle::cancel;

#[tokio::test]
async fn the_deadline_command_skips_new_year_2027_and_says_provisional() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
        .args(["deadline", "--from", "2026-12-20T10:00:00+08:00", "--json"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["provisional"], true);
    let counted: Vec<&str> = body["working_days_counted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(counted.len(), 15);
    assert!(!counted.contains(&"2027-01-01"), "{counted:?}");
    assert_eq!(body["deadline"], "2027-01-05T23:59:59.999+08:00");
    let warning = String::from_utf8_lossy(&output.stderr);
    assert!(warning.contains("provisional"), "{warning}");
    assert!(!warning.contains("earliest"), "{warning}");

    // A published year is not provisional.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_facevault"))
        .args(["deadline", "--from", "2025-09-26T10:00:00+08:00", "--json"])
        .output()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["provisional"], false);
    assert!(output.stderr.is_empty());
}

fn instant(t: &prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

#[tokio::test]
async fn a_provisional_deadline_is_recounted_when_a_holiday_file_publishes_its_years() {
    // A day's grace keeps the ticket pending across the restart; 30 working
    // days (what decommission and filing count) reach past the built-in
    // schedule's last day, 2026-12-25, from any request day since November 2026.
    let deletion =
        "[deletion]\nworking_days = 30\ngrace_period_secs = 86400\npoll_interval_ms = 50\n";
    let mut app = spawn_app_with(AppOptions {
        extra_config: deletion.to_owned(),
        ..AppOptions::default()
    })
    .await;
    let mut client = app.app_client().await;
    app.enroll(&mut client, "hana", &face(1)).await;
    let first = cancel(&mut client, "hana").await;
    let requested = instant(first.requested_at.as_ref().unwrap());
    let stated = instant(first.deadline.as_ref().unwrap());

    let provisional = WorkingCalendar::default().deadline(requested, 30).unwrap();
    assert!(provisional.provisional);
    assert!(first.deadline_provisional);
    assert_eq!(stated, provisional.at);

    // The schedule for those years is published: the law's holidays and no
    // working weekend (the strictest a schedule can be for the deadline).
    let years = provisional.fallback_years.clone();
    let holidays: Vec<String> = years
        .iter()
        .flat_map(|&year| law_fixed_holidays(year))
        .map(|day| format!("\"{day}\""))
        .collect();
    let file_text = format!("years = {years:?}\nholidays = [{}]\n", holidays.join(", "));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("holidays.toml");
    std::fs::write(&file, &file_text).unwrap();
    let published =
        WorkingCalendar::with_overrides(facevault::domain::calendar::DEFAULT_TIME_ZONE, &file_text)
            .unwrap()
            .deadline(requested, 30)
            .unwrap();
    assert!(!published.provisional);
    assert!(
        provisional.at <= published.at,
        "the provisional deadline is never later"
    );

    app.stop_server().await;
    let server = app
        .start_server(&format!(
            "{deletion}holiday_file = {:?}\n",
            file.display().to_string()
        ))
        .await;
    let mut client = app.app_client_for(&server).await;
    let mut restated = None;
    for _ in 0..200 {
        let t = client
            .get_deletion_ticket(proto::GetDeletionTicketRequest {
                ticket_id: first.ticket_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if !t.deadline_provisional {
            restated = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restated = restated.expect("the ticket's deadline was recounted");
    assert_eq!(restated.state, i32::from(proto::DeletionState::Pending));
    assert_eq!(instant(restated.deadline.as_ref().unwrap()), published.at);
    assert!(stated <= published.at);
    server.stop().await;
}
