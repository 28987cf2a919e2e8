use super::*;
use crate::time::parse_rfc3339;

fn schedule(json: &str) -> ValidationResult<Schedule> {
    let spec: ScheduleSpec = serde_json::from_str(json).map_err(|e| ValidationError::new("json", e.to_string()))?;
    spec.validate(None, &ExecutionDefaults::default(), at("2026-01-01T00:00:00Z"))
}

fn at(s: &str) -> Millis {
    parse_rfc3339(s).unwrap_or_else(|| panic!("bad time {s}"))
}

fn timing(json: &str) -> Timing {
    match schedule(json) {
        Ok(s) => s.timing,
        Err(e) => panic!("{json}: {e}"),
    }
}

/// Every slot in `(from, to]`, walking as the scheduler does: each slot
/// from the previous one.
fn slots(t: &Timing, from: &str, to: &str, anchor: Millis) -> Vec<Millis> {
    let (mut cursor, end) = (at(from), at(to));
    let mut out = Vec::new();
    while let Some(next) = t.next_after(cursor, anchor).filter(|n| *n <= end) {
        assert!(next > cursor, "slots must increase");
        out.push(next);
        cursor = next;
    }
    out
}

fn field(json: &str) -> String {
    match schedule(json) {
        Ok(_) => panic!("{json} was accepted"),
        Err(e) => e.field,
    }
}

#[test]
fn cron_over_a_simulated_week() {
    let weekdays = timing(r#"{"name":"w","cron":"0 9 * * MON-FRI","timezone":"Europe/Berlin","task":{"name":"t"}}"#);
    // 2026-11-30 is a Monday; 09:00 in Berlin is 08:00 UTC in winter.
    let got = slots(&weekdays, "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z", 0);
    let want: Vec<Millis> = ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
        .iter()
        .map(|d| at(&format!("{d}T08:00:00Z")))
        .collect();
    assert_eq!(got, want);
    let quarter = timing(r#"{"name":"q","cron":"*/15 * * * *","task":{"name":"t"}}"#);
    assert_eq!(slots(&quarter, "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z", 0).len(), 7 * 24 * 4);
    let seconds = timing(r#"{"name":"s","cron":"*/10 * * * * *","task":{"name":"t"}}"#);
    assert_eq!(slots(&seconds, "2026-11-30T00:00:00Z", "2026-11-30T01:00:00Z", 0).len(), 360);
    let lists = timing(r#"{"name":"l","cron":"0 8-10/2,17 1,15 JAN,JUL *","task":{"name":"t"}}"#);
    assert_eq!(slots(&lists, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z", 0).len(), 4 * 3);
}

#[test]
fn intervals_over_a_simulated_week_count_from_the_anchor() {
    let hourly = timing(r#"{"name":"h","every":"1 hour","task":{"name":"t"}}"#);
    let anchor = at("2026-11-30T00:17:00Z");
    let got = slots(&hourly, "2026-11-30T00:17:00Z", "2026-12-07T00:17:00Z", anchor);
    assert_eq!(got.len(), 168);
    assert_eq!(got[0], at("2026-11-30T01:17:00Z"));
    for (text, ms) in [
        ("30 seconds", 30_000),
        ("5 minutes", 300_000),
        ("2 days", 172_800_000),
        ("1 week", 604_800_000),
        ("90s", 90_000),
    ] {
        let t = timing(&format!(r#"{{"name":"e","every":"{text}","task":{{"name":"t"}}}}"#));
        assert!(matches!(t, Timing::Every { ms: m } if m == ms), "{text}");
    }
    assert!(matches!(timing(r#"{"name":"e","every":30,"task":{"name":"t"}}"#), Timing::Every { ms: 30_000 }));
}

#[test]
fn catch_up_takes_the_latest_missed_slot() {
    let minutely = timing(r#"{"name":"m","cron":"* * * * *","task":{"name":"t"}}"#);
    assert_eq!(minutely.latest_at_or_before(at("2026-12-01T10:07:30Z"), 0), Some(at("2026-12-01T10:07:00Z")));
    assert_eq!(minutely.latest_at_or_before(at("2026-12-01T10:07:00Z"), 0), Some(at("2026-12-01T10:07:00Z")));
    let every = timing(r#"{"name":"e","every":"10 seconds","task":{"name":"t"}}"#);
    let anchor = at("2026-12-01T10:00:00Z");
    assert_eq!(every.latest_at_or_before(at("2026-12-01T10:01:05Z"), anchor), Some(at("2026-12-01T10:01:00Z")));
    assert_eq!(every.latest_at_or_before(at("2026-12-01T10:00:05Z"), anchor), None);
    let once = timing(r#"{"name":"o","at":"2026-12-24T18:00:00+01:00","task":{"name":"t"}}"#);
    assert_eq!(once.first(at("2026-12-01T00:00:00Z")), Some(at("2026-12-24T17:00:00Z")));
    assert_eq!(once.next_after(at("2026-12-24T17:00:00Z"), 0), None);
}

#[test]
fn berlin_spring_forward_runs_a_fixed_time_once_and_skips_wildcards_in_the_gap() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    let daily = timing(r#"{"name":"d","cron":"30 2 * * *","timezone":"Europe/Berlin","task":{"name":"t"}}"#);
    let got = slots(&daily, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z", 0);
    assert_eq!(got, vec![at("2026-03-28T01:30:00Z"), at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")]);
    let half_hourly = timing(r#"{"name":"h","cron":"*/30 * * * *","timezone":"Europe/Berlin","task":{"name":"t"}}"#);
    // The day has 23 hours: 46 half-hour slots.
    assert_eq!(slots(&half_hourly, "2026-03-28T22:59:59Z", "2026-03-29T21:59:59Z", 0).len(), 46);
}

#[test]
fn berlin_fall_back_runs_a_fixed_time_once_and_wildcards_in_both_passes() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00-03:00 happens twice.
    let daily = timing(r#"{"name":"d","cron":"30 2 * * *","timezone":"Europe/Berlin","task":{"name":"t"}}"#);
    let got = slots(&daily, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z", 0);
    assert_eq!(got, vec![at("2026-10-24T00:30:00Z"), at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z")]);
    let half_hourly = timing(r#"{"name":"h","cron":"*/30 * * * *","timezone":"Europe/Berlin","task":{"name":"t"}}"#);
    // The day has 25 hours: 50 half-hour slots.
    assert_eq!(slots(&half_hourly, "2026-10-24T21:59:59Z", "2026-10-25T22:59:59Z", 0).len(), 50);
}

#[test]
fn new_york_spring_forward_and_fall_back() {
    // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    let spring = timing(r#"{"name":"s","cron":"30 2 * * *","timezone":"America/New_York","task":{"name":"t"}}"#);
    let got = slots(&spring, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z", 0);
    assert_eq!(got, vec![at("2026-03-07T07:30:00Z"), at("2026-03-08T07:00:00Z"), at("2026-03-09T06:30:00Z")]);
    // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice, runs once.
    let fall = timing(r#"{"name":"f","cron":"30 1 * * *","timezone":"America/New_York","task":{"name":"t"}}"#);
    let got = slots(&fall, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z", 0);
    assert_eq!(got, vec![at("2026-10-31T05:30:00Z"), at("2026-11-01T05:30:00Z"), at("2026-11-02T06:30:00Z")]);
}

#[test]
fn bad_schedules_name_their_field() {
    assert_eq!(field(r#"{"name":"x","cron":"61 * * * *","task":{"name":"t"}}"#), "cron");
    assert_eq!(field(r#"{"name":"x","cron":"* * *","task":{"name":"t"}}"#), "cron");
    assert_eq!(field(r#"{"name":"x","cron":"0 0 30 2 *","task":{"name":"t"}}"#), "cron");
    assert_eq!(field(r#"{"name":"x","cron":"* * * * *","timezone":"Mars/Olympus","task":{"name":"t"}}"#), "timezone");
    assert_eq!(field(r#"{"name":"x","every":"0 seconds","task":{"name":"t"}}"#), "every");
    assert_eq!(field(r#"{"name":"x","every":"-5 minutes","task":{"name":"t"}}"#), "every");
    assert_eq!(field(r#"{"name":"x","every":0,"task":{"name":"t"}}"#), "every");
    assert_eq!(field(r#"{"name":"x","every":-3,"task":{"name":"t"}}"#), "every");
    assert_eq!(field(r#"{"name":"x","every":"200ms","task":{"name":"t"}}"#), "every");
    assert_eq!(field(r#"{"name":"x","every":"soon","task":{"name":"t"}}"#), "every");
    assert_eq!(field(r#"{"name":"x","cron":"* * * * *","every":"1 hour","task":{"name":"t"}}"#), "every");
    assert_eq!(field(r#"{"name":"x","task":{"name":"t"}}"#), "cron");
    assert_eq!(field(r#"{"name":"x","at":"tomorrow","task":{"name":"t"}}"#), "at");
    for at in ["1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "1970-01-01T00:00:00.001+14:00", "1969-12-31 23:00"] {
        assert_eq!(field(&format!(r#"{{"name":"x","at":"{at}","task":{{"name":"t"}}}}"#)), "at", "{at}");
    }
    assert_eq!(field(r#"{"name":"x","at":"2026-03-29 02:30","timezone":"Europe/Berlin","task":{"name":"t"}}"#), "at");
    assert_eq!(field(r#"{"name":"bad name","every":"1 hour","task":{"name":"t"}}"#), "name");
    assert_eq!(field(r#"{"name":"x","every":"1 hour","task":{"name":"bad name"}}"#), "task.name");
    assert_eq!(
        field(r#"{"name":"x","every":"1 hour","task":{"name":"t","idempotency_key":"k"}}"#),
        "task.idempotency_key"
    );
    assert_eq!(field(r#"{"name":"x","every":"1 hour","task":{"name":"t","timeout_ms":0}}"#), "task.timeout_ms");
}

#[test]
fn the_stored_form_ignores_key_order_and_the_enabled_flag() {
    let a = schedule(r#"{"name":"x","every":"1 hour","enabled":false,"task":{"name":"t","input":{"a":1,"b":2}}}"#);
    let b = schedule(r#"{"task":{"input":{"b":2,"a":1},"name":"t"},"every":"1 hour","name":"x"}"#);
    let (a, b) = (a.unwrap_or_else(|e| panic!("{e}")), b.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(a.spec_json, b.spec_json);
    assert_eq!(a.timing_key, b.timing_key);
    assert!(!a.enabled && b.enabled);
    let c = schedule(r#"{"name":"x","every":"60 minutes","task":{"name":"t"}}"#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.timing_key, a.timing_key, "the same interval, however written");
}

#[test]
fn slot_keys_sort_by_slot_and_fit_an_idempotency_key() {
    let s = schedule(&format!(
        r#"{{"name":"{}","every":"1 hour","task":{{"name":"t"}}}}"#,
        "n".repeat(MAX_SCHEDULE_NAME_LEN)
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(s.slot_key(999) < s.slot_key(1_000));
    assert!(s.trigger_key(at("2030-01-01T00:00:00Z")).len() <= crate::spec::MAX_IDEMPOTENCY_KEY_LEN);
    let task = s.task_for(s.slot_key(5), 5);
    assert_eq!(task.metadata.get("schedule").and_then(|v| v.as_str()), Some(s.name.as_str()));
    assert!(task.validate(&ExecutionDefaults::default(), Uuid::nil(), 0).is_ok());
}
