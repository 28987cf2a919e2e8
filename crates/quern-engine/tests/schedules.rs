//! The scheduler against a real SQLite store with an injected clock: slots
//! over a simulated week, catch-up after downtime, overlap, enable and
//! disable, and declarative apply — without sleeping.

#![allow(clippy::unwrap_used)]

use quern_core::time::parse_rfc3339;
use quern_core::{ManualClock, Millis, ScheduleSpec, Status};
use quern_engine::{ApplyReport, Caller, Config, Engine};
use quern_store::sqlite::{SqliteOptions, SqliteStore};
use quern_store::{CompleteParams, Completion, LeaseParams, Store};
use std::sync::Arc;
use tokio::sync::watch;

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    engine: Engine,
    store: Arc<SqliteStore>,
    _stop: watch::Sender<bool>,
}

fn at(s: &str) -> Millis {
    parse_rfc3339(s).unwrap()
}

fn open(dir: tempfile::TempDir, clock: Arc<ManualClock>) -> Fixture {
    use quern_core::Clock;
    let opts = SqliteOptions { dir: dir.path().to_owned(), durability: Default::default() };
    let store = Arc::new(SqliteStore::open(&opts, clock.now()).unwrap());
    let (stop, stopped) = watch::channel(false);
    let engine = Engine::new(store.clone() as Arc<dyn Store>, clock.clone(), &Config::default(), stopped);
    Fixture { dir, clock, engine, store, _stop: stop }
}

fn fixture(start: &str) -> Fixture {
    open(tempfile::tempdir().unwrap(), Arc::new(ManualClock::new(at(start))))
}

impl Fixture {
    /// Stops this server and starts another on the same data, with the clock
    /// moved on by `downtime_ms`.
    fn restart(self, downtime_ms: i64) -> Fixture {
        let Fixture { dir, clock, engine, store, _stop } = self;
        drop(engine);
        store.close();
        drop(store);
        clock.advance(downtime_ms);
        open(dir, clock)
    }

    async fn put(&self, json: &str) {
        let spec: ScheduleSpec = serde_json::from_str(json).unwrap();
        let name = spec.name.clone().unwrap();
        self.engine.put_schedule(&Caller::Anonymous, &name, spec).await.unwrap();
    }

    async fn runs(&self, name: &str) -> Vec<quern_core::Task> {
        self.engine.schedule_runs(&Caller::Anonymous, name, 1_000).await.unwrap()
    }

    /// Moves the clock in `step_ms` steps up to `until`, firing at each.
    async fn run_until(&self, until: Millis, step_ms: i64) {
        use quern_core::Clock;
        while self.clock.now() < until {
            self.clock.advance(step_ms.min(until - self.clock.now()));
            self.engine.fire_due_schedules().await.unwrap();
        }
    }

    async fn finish_all(&self) {
        use quern_core::Clock;
        let now = self.clock.now();
        let leased = self
            .store
            .lease(LeaseParams {
                worker: "w".into(),
                queues: vec!["default".into()],
                names: None,
                max: 1_000,
                lease_ms: 60_000,
                now,
            })
            .await
            .unwrap();
        let results = leased
            .iter()
            .map(|t| Completion {
                task: t.id,
                token: t.lease.as_ref().unwrap().token.clone(),
                outcome: quern_core::Outcome::Succeeded {
                    result: serde_json::value::RawValue::from_string("null".into()).unwrap(),
                },
            })
            .collect();
        self.store.complete(CompleteParams { worker: "w".into(), results, now }).await.unwrap();
    }
}

#[tokio::test]
async fn cron_and_intervals_fire_once_per_slot_over_a_simulated_week() {
    let f = fixture("2026-11-30T00:00:00Z");
    f.put(r#"{"name":"daily","cron":"0 9 * * *","timezone":"Europe/Berlin","task":{"name":"report"}}"#).await;
    f.put(r#"{"name":"weekdays","cron":"30 17 * * MON-FRI","task":{"name":"digest"}}"#).await;
    f.put(r#"{"name":"hourly","every":"1 hour","task":{"name":"sync"}}"#).await;
    f.run_until(at("2026-12-07T00:00:00Z"), 7 * 60_000).await;
    let daily = f.runs("daily").await;
    assert_eq!(daily.len(), 7);
    assert!(daily.iter().all(|t| t.metadata.get("schedule").and_then(|v| v.as_str()) == Some("daily")));
    // Each run was created at its slot (08:00 UTC), within one step.
    assert!(daily.iter().all(|t| (t.created_at - at("2026-11-30T08:00:00Z")).rem_euclid(86_400_000) < 7 * 60_000));
    assert_eq!(f.runs("weekdays").await.len(), 5);
    assert_eq!(f.runs("hourly").await.len(), 7 * 24);
    let slots: std::collections::BTreeSet<_> = f
        .runs("hourly")
        .await
        .iter()
        .map(|t| t.metadata["schedule.slot"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(slots.len(), 7 * 24, "one task per slot");
}

#[tokio::test]
async fn downtime_catches_up_once_then_resumes_on_the_slots() {
    let f = fixture("2026-12-01T10:00:00Z");
    f.put(r#"{"name":"m","every":"1 minute","task":{"name":"t"}}"#).await;
    f.run_until(at("2026-12-01T10:03:00Z"), 1_000).await;
    assert_eq!(f.runs("m").await.len(), 3);
    // Down for ten minutes: ten slots missed, one task on start.
    let f = f.restart(10 * 60_000 + 30_000);
    f.engine.fire_due_schedules().await.unwrap();
    let runs = f.runs("m").await;
    assert_eq!(runs.len(), 4);
    assert_eq!(runs[0].metadata["schedule.slot"], "2026-12-01T10:13:00.000Z", "the latest missed slot");
    let view = f.engine.schedule(&Caller::Anonymous, "m").await.unwrap();
    assert_eq!(view.record.next_fire_at, Some(at("2026-12-01T10:14:00Z")));
    f.engine.fire_due_schedules().await.unwrap();
    assert_eq!(f.runs("m").await.len(), 4, "nothing more until the next slot");
    f.run_until(at("2026-12-01T10:16:00Z"), 1_000).await;
    assert_eq!(f.runs("m").await.len(), 7, "10:14, 10:15 and 10:16");
}

#[tokio::test]
async fn overlap_skip_lets_slots_pass_while_the_last_run_is_unfinished() {
    let f = fixture("2026-12-01T10:00:00Z");
    f.put(r#"{"name":"s","every":"1 minute","overlap":"skip","task":{"name":"t"}}"#).await;
    f.put(r#"{"name":"a","every":"1 minute","task":{"name":"u","queue":"other"}}"#).await;
    f.run_until(at("2026-12-01T10:03:00Z"), 1_000).await;
    assert_eq!(f.runs("s").await.len(), 1, "the first run is still queued");
    assert_eq!(f.runs("a").await.len(), 3, "allow creates a task per slot");
    f.finish_all().await;
    f.run_until(at("2026-12-01T10:04:00Z"), 1_000).await;
    let runs = f.runs("s").await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].status, Status::Succeeded);
}

#[tokio::test]
async fn disable_stops_firing_and_enable_resumes_without_a_burst() {
    let f = fixture("2026-12-01T10:00:00Z");
    f.put(r#"{"name":"m","cron":"* * * * *","task":{"name":"t"}}"#).await;
    f.run_until(at("2026-12-01T10:02:00Z"), 1_000).await;
    assert_eq!(f.runs("m").await.len(), 2);
    let off = f.engine.set_schedule_enabled(&Caller::Anonymous, "m", false).await.unwrap();
    assert_eq!(off.record.next_fire_at, None);
    f.run_until(at("2026-12-01T10:10:30Z"), 1_000).await;
    assert_eq!(f.runs("m").await.len(), 2, "disabled: nothing fires");
    let on = f.engine.set_schedule_enabled(&Caller::Anonymous, "m", true).await.unwrap();
    assert_eq!(on.record.next_fire_at, Some(at("2026-12-01T10:11:00Z")), "the next slot, not the missed ones");
    f.engine.fire_due_schedules().await.unwrap();
    assert_eq!(f.runs("m").await.len(), 2);
    f.run_until(at("2026-12-01T10:11:00Z"), 1_000).await;
    assert_eq!(f.runs("m").await.len(), 3);
}

#[tokio::test]
async fn triggers_and_one_time_schedules() {
    let f = fixture("2026-12-01T10:00:00Z");
    f.put(r#"{"name":"once","at":"2026-12-01T11:00:00+01:00","timezone":"Europe/Berlin","task":{"name":"t"}}"#).await;
    f.put(r#"{"name":"later","at":"2026-12-01 12:30","timezone":"Europe/Berlin","task":{"name":"t"}}"#).await;
    assert_eq!(
        f.engine.schedule(&Caller::Anonymous, "later").await.unwrap().record.next_fire_at,
        Some(at("2026-12-01T11:30:00Z"))
    );
    f.run_until(at("2026-12-01T12:00:00Z"), 60_000).await;
    assert_eq!(f.runs("once").await.len(), 1);
    assert_eq!(f.engine.schedule(&Caller::Anonymous, "once").await.unwrap().record.next_fire_at, None, "nothing left");
    assert_eq!(f.runs("later").await.len(), 1);
    let manual = f.engine.trigger_schedule(&Caller::Anonymous, "once").await.unwrap();
    assert_eq!(manual.metadata["schedule"], "once");
    assert_eq!(f.runs("once").await.len(), 2);
    assert!(f.engine.trigger_schedule(&Caller::Anonymous, "nope").await.is_err());
}

const FILE: &str = "schedules:
  - name: daily_report
    cron: \"0 9 * * *\"
    timezone: Europe/Berlin
    task: {name: report.generate, input: {format: pdf}}
  - name: emails
    every: 5 minutes
    task: {name: email.process}
";

#[tokio::test]
async fn apply_is_idempotent_and_prune_deletes_the_rest() {
    let f = fixture("2026-12-01T10:00:00Z");
    f.put(r#"{"name":"stray","every":"1 hour","task":{"name":"t"}}"#).await;
    let first = f.engine.apply_schedules(&Caller::Anonymous, FILE, false, false).await.unwrap();
    assert_eq!(first.created, vec!["daily_report", "emails"]);
    let again = f.engine.apply_schedules(&Caller::Anonymous, FILE, false, false).await.unwrap();
    assert_eq!((again.created.len(), again.updated.len(), again.unchanged.len()), (0, 0, 2));
    let changed = FILE.replace("5 minutes", "10 minutes");
    let dry = f.engine.apply_schedules(&Caller::Anonymous, &changed, true, true).await.unwrap();
    assert_eq!((dry.updated.clone(), dry.deleted.clone()), (vec!["emails".to_owned()], vec!["stray".to_owned()]));
    assert_eq!(f.engine.schedules(&Caller::Anonymous).await.unwrap().len(), 3, "a dry run changes nothing");
    let pruned = f.engine.apply_schedules(&Caller::Anonymous, &changed, false, true).await.unwrap();
    assert_eq!(pruned, ApplyReport { dry_run: false, ..dry });
    let names: Vec<String> =
        f.engine.schedules(&Caller::Anonymous).await.unwrap().into_iter().map(|v| v.record.name).collect();
    assert_eq!(names, vec!["daily_report", "emails"]);
    // A bad entry anywhere applies nothing, and the message names it.
    let bad = format!("{FILE}  - name: broken\n    cron: \"61 * * * *\"\n    task: {{name: t}}\n")
        .replace("emails", "emails2");
    let err = f.engine.apply_schedules(&Caller::Anonymous, &bad, false, false).await.unwrap_err().to_string();
    assert!(err.starts_with("schedules[2] (broken): cron:"), "{err}");
    assert!(f.engine.schedule(&Caller::Anonymous, "emails2").await.is_err());
}

#[tokio::test]
async fn a_stored_schedule_that_no_longer_reads_is_disabled_and_stops_no_other() {
    use quern_core::Clock;
    use quern_store::{ScheduleRecord, ScheduleWrite};
    let f = fixture("2026-12-01T10:00:00Z");
    f.put(r#"{"name":"tick","every":"1 minute","task":{"name":"t"}}"#).await;
    // What a build before the time range check stored: an `at` before 1970.
    let now = f.clock.now();
    let record = ScheduleRecord {
        name: "old".into(),
        spec: r#"{"at":"1969-12-31T23:59:59Z","task":{"name":"x"}}"#.into(),
        timing: "at:-1000".into(),
        enabled: true,
        anchor: now,
        next_fire_at: Some(-1_000),
        last_fired_at: None,
        last_task: None,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    f.store.write_schedules(vec![ScheduleWrite::Put { record, expected: None }]).await.unwrap();
    let listed: Vec<String> =
        f.engine.schedules(&Caller::Anonymous).await.unwrap().into_iter().map(|v| v.schedule.name).collect();
    assert_eq!(listed, ["tick"]);
    f.run_until(at("2026-12-01T10:03:00Z"), 60_000).await;
    assert_eq!(f.runs("tick").await.len(), 3);
    let stored = f.store.schedules(Some("old".into())).await.unwrap().pop().unwrap();
    assert_eq!((stored.enabled, stored.next_fire_at), (false, None));
    assert!(f.engine.delete_schedule(&Caller::Anonymous, "old").await.unwrap().is_none());
}
