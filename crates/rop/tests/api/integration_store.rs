//! What the integrations ask of the store: settings swapped like a
//! compare-and-set, the clients directory, the telephony journal merged
//! from notifications in any order, and the durable task queue with its
//! leases, retries and cancellation.

use chrono::{DateTime, Duration, Utc};
use rop_domain::{
    CallId, ClaimedTask, ClientUpdate, Direction, ManagerId, NewTask, Store, TaskOutcome,
    TaskState, TelephonyFilter, TelephonyUpdate, UpsertCounts,
};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend};
use crate::on_both_backends;

fn at(raw: &str) -> DateTime<Utc> {
    raw.parse().unwrap()
}

fn manager(id: &str) -> ManagerId {
    ManagerId::parse(id).unwrap()
}

/// PostgreSQL keeps settings as JSONB, which has its own spelling of a
/// value: compare what they mean.
async fn setting_json(store: &dyn Store, key: &str) -> Option<Value> {
    store
        .setting(key)
        .await
        .unwrap()
        .map(|raw| serde_json::from_str(&raw).unwrap())
}

async fn settings_are_swapped_only_from_the_expected_value(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let key = "integration.amocrm";
    assert_eq!(store.setting(key).await.unwrap(), None);

    // Absent expected: stored only while nothing is there.
    let first = json!({"refresh_token": "r1"}).to_string();
    assert!(store.swap_setting(key, None, &first).await.unwrap());
    let second = json!({"refresh_token": "r2"}).to_string();
    assert!(!store.swap_setting(key, None, &second).await.unwrap());
    assert_eq!(
        setting_json(store, key).await,
        Some(json!({"refresh_token": "r1"}))
    );

    // Another process already spent r1: its value no longer matches.
    let stale = json!({"refresh_token": "r0"}).to_string();
    assert!(!store
        .swap_setting(key, Some(&stale), &second)
        .await
        .unwrap());
    assert_eq!(
        setting_json(store, key).await,
        Some(json!({"refresh_token": "r1"}))
    );

    // What `setting` returned is what the swap expects.
    let current = store.setting(key).await.unwrap().unwrap();
    assert!(store
        .swap_setting(key, Some(&current), &second)
        .await
        .unwrap());
    assert!(!store
        .swap_setting(key, Some(&current), &first)
        .await
        .unwrap());
    assert_eq!(
        setting_json(store, key).await,
        Some(json!({"refresh_token": "r2"}))
    );

    // A plain save replaces whatever is there; other keys are untouched.
    store
        .save_setting(key, &json!({"refresh_token": "r3"}).to_string())
        .await
        .unwrap();
    assert_eq!(
        setting_json(store, key).await,
        Some(json!({"refresh_token": "r3"}))
    );
    assert_eq!(store.setting("integration.zadarma").await.unwrap(), None);
}

fn client(phone: &str, name: Option<&str>, manager_id: Option<&str>) -> ClientUpdate {
    ClientUpdate {
        phone: phone.to_owned(),
        name: name.map(str::to_owned),
        manager_id: manager_id.map(manager),
        source: "amocrm".to_owned(),
    }
}

async fn clients_are_upserted_searched_and_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let now = at("2024-05-01T10:00:00Z");
    let counts = store
        .upsert_clients(
            &[
                client("79001234567", Some("Иван Петров"), Some("m1")),
                client("79007654321", Some("Пётр Иванов"), None),
                client("74950000001", Some("100% оплата"), None),
                client("74950000002", Some("1005 оплат"), None),
                client("74950000003", Some("a_b"), None),
                client("74950000004", Some("axb"), None),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        counts,
        UpsertCounts {
            created: 6,
            updated: 0
        }
    );

    // An update replaces every field, None included.
    let later = now + Duration::hours(1);
    let counts = store
        .upsert_clients(
            &[
                client("79007654321", None, Some("m2")),
                client("79990000000", Some("Новый"), None),
            ],
            later,
        )
        .await
        .unwrap();
    assert_eq!(
        counts,
        UpsertCounts {
            created: 1,
            updated: 1
        }
    );
    let petr = store.client_by_phone("79007654321").await.unwrap().unwrap();
    assert_eq!(petr.name, None);
    assert_eq!(petr.manager_id, Some(manager("m2")));
    assert_eq!(petr.source, "amocrm");
    assert_eq!(petr.updated_at, later);
    let ivan = store.client_by_phone("79001234567").await.unwrap().unwrap();
    assert_eq!(ivan.name.as_deref(), Some("Иван Петров"));
    assert_eq!(ivan.manager_id, Some(manager("m1")));
    assert_eq!(ivan.updated_at, now);
    assert_eq!(store.client_by_phone("70000000000").await.unwrap(), None);

    let phones = |search: Option<&'static str>, offset: u32, limit: u32| async move {
        store
            .clients(search, offset, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.phone)
            .collect::<Vec<_>>()
    };
    // By phone, paged.
    assert_eq!(
        phones(None, 0, 3).await,
        ["74950000001", "74950000002", "74950000003"]
    );
    assert_eq!(phones(None, 5, 10).await, ["79007654321", "79990000000"]);
    // Cyrillic names match whatever the case, on both backends.
    assert_eq!(phones(Some("иван"), 0, 10).await, ["79001234567"]);
    assert_eq!(phones(Some("ИВАН П"), 0, 10).await, ["79001234567"]);
    assert_eq!(phones(Some("НОВ"), 0, 10).await, ["79990000000"]);
    // A part of the phone.
    assert_eq!(phones(Some("9001"), 0, 10).await, ["79001234567"]);
    // LIKE's wildcards in the search are plain characters.
    assert_eq!(phones(Some("100%"), 0, 10).await, ["74950000001"]);
    assert_eq!(phones(Some("a_b"), 0, 10).await, ["74950000003"]);
    assert_eq!(phones(Some("%"), 0, 10).await, ["74950000001"]);

    assert!(store.delete_client("79001234567").await.unwrap());
    assert!(!store.delete_client("79001234567").await.unwrap());
    assert_eq!(store.client_by_phone("79001234567").await.unwrap(), None);
    assert!(phones(Some("иван"), 0, 10).await.is_empty());
}

async fn telephony_notifications_merge_in_any_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let started = at("2024-05-01T10:00:00Z");

    // The end arrives first and creates the row.
    let mut end = TelephonyUpdate::new(
        "zadarma",
        "pbx-1",
        Direction::Incoming,
        started,
        "NOTIFY_END",
        started + Duration::seconds(95),
    );
    end.answered_at = Some(started + Duration::seconds(5));
    end.ended_at = Some(started + Duration::seconds(95));
    end.duration_secs = Some(90);
    end.disposition = Some("answered".into());
    end.recording_id = Some("rec-1".into());
    end.extension = Some("101".into());
    store.record_telephony(&end).await.unwrap();

    // The start, late: it adds what it knows and cannot change the
    // direction or the start time, nor erase what it does not know.
    let mut start = TelephonyUpdate::new(
        "zadarma",
        "pbx-1",
        Direction::Outgoing,
        started + Duration::seconds(30),
        "NOTIFY_START",
        started + Duration::seconds(96),
    );
    start.client_phone = Some("+7 900 123-45-67".into());
    start.our_number = Some("74951234567".into());
    start.manager_id = Some(manager("m1"));
    start.client_name = Some("Иван Петров".into());
    start.routed_to = Some("101".into());
    store.record_telephony(&start).await.unwrap();

    let mut linked = TelephonyUpdate::new(
        "zadarma",
        "pbx-1",
        Direction::Outgoing,
        started,
        "RECORDING",
        started + Duration::seconds(120),
    );
    linked.call_id = Some(CallId::parse("zadarma-pbx-1").unwrap());
    store.record_telephony(&linked).await.unwrap();

    let call = store.telephony_call("pbx-1").await.unwrap().unwrap();
    assert_eq!(call.provider, "zadarma");
    assert_eq!(call.direction, Direction::Incoming);
    assert_eq!(call.started_at, started);
    assert_eq!(call.answered_at, Some(started + Duration::seconds(5)));
    assert_eq!(call.ended_at, Some(started + Duration::seconds(95)));
    assert_eq!(call.duration_secs, Some(90));
    assert_eq!(call.disposition.as_deref(), Some("answered"));
    assert_eq!(call.recording_id.as_deref(), Some("rec-1"));
    assert_eq!(call.extension.as_deref(), Some("101"));
    assert_eq!(call.client_phone.as_deref(), Some("+7 900 123-45-67"));
    assert_eq!(call.our_number.as_deref(), Some("74951234567"));
    assert_eq!(call.manager_id, Some(manager("m1")));
    assert_eq!(call.client_name.as_deref(), Some("Иван Петров"));
    assert_eq!(call.routed_to.as_deref(), Some("101"));
    assert_eq!(call.call_id, Some(CallId::parse("zadarma-pbx-1").unwrap()));
    assert_eq!(call.last_event, "RECORDING");
    assert_eq!(call.updated_at, started + Duration::seconds(120));
    assert_eq!(store.telephony_call("pbx-2").await.unwrap(), None);
}

async fn the_telephony_journal_pages_newest_first_within_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    for (id, manager_id, started) in [
        ("a", Some("m1"), "2024-05-01T10:00:00Z"),
        ("b", Some("m2"), "2024-05-01T11:00:00Z"),
        ("c", None, "2024-05-01T12:00:00Z"),
        ("d", Some("m1"), "2024-05-01T13:00:00Z"),
    ] {
        let mut update = TelephonyUpdate::new(
            "zadarma",
            id,
            Direction::Incoming,
            at(started),
            "NOTIFY_START",
            at(started),
        );
        update.manager_id = manager_id.map(manager);
        store.record_telephony(&update).await.unwrap();
    }
    let ids = |filter: TelephonyFilter| async move {
        store
            .telephony_calls(&filter)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.pbx_call_id)
            .collect::<Vec<_>>()
    };
    let page = |limit| TelephonyFilter {
        limit,
        ..TelephonyFilter::default()
    };
    assert_eq!(ids(page(10)).await, ["d", "c", "b", "a"]);
    assert_eq!(ids(page(2)).await, ["d", "c"]);
    // The cursor is exclusive: the next page starts after the last seen.
    assert_eq!(
        ids(TelephonyFilter {
            before: Some(at("2024-05-01T12:00:00Z")),
            ..page(2)
        })
        .await,
        ["b", "a"]
    );
    // A scope leaves out calls of no known manager too.
    assert_eq!(
        ids(TelephonyFilter {
            managers: Some(vec![manager("m1")]),
            ..page(10)
        })
        .await,
        ["d", "a"]
    );
    assert_eq!(
        ids(TelephonyFilter {
            managers: Some(vec![manager("m1"), manager("m2")]),
            before: Some(at("2024-05-01T13:00:00Z")),
            ..page(10)
        })
        .await,
        ["b", "a"]
    );
    assert!(ids(TelephonyFilter {
        managers: Some(Vec::new()),
        ..page(10)
    })
    .await
    .is_empty());
}

fn task(kind: &str, key: &str, due_at: DateTime<Utc>, max_attempts: u32) -> NewTask {
    NewTask {
        kind: kind.to_owned(),
        key: key.to_owned(),
        payload: json!({"key": key}).to_string(),
        due_at,
        max_attempts,
    }
}

async fn tasks_are_queued_once_and_claimed_in_due_order(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let t = at("2024-05-01T10:00:00Z");
    let lease = t + Duration::minutes(10);

    assert!(store
        .enqueue_task(
            &task("zadarma.recording", "a", t + Duration::minutes(10), 3),
            t
        )
        .await
        .unwrap());
    // Queued again: not a second task, but due at the earlier time.
    assert!(!store
        .enqueue_task(
            &task("zadarma.recording", "a", t + Duration::minutes(5), 3),
            t
        )
        .await
        .unwrap());
    assert!(!store
        .enqueue_task(
            &task("zadarma.recording", "a", t + Duration::minutes(20), 3),
            t
        )
        .await
        .unwrap());
    let queued = store.tasks("zadarma.recording", 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    let a_id = queued[0].id;
    assert_eq!(queued[0].state, TaskState::Queued);
    assert_eq!(queued[0].due_at, t + Duration::minutes(5));
    assert_eq!(queued[0].attempts, 0);
    assert_eq!(queued[0].max_attempts, 3);
    assert_eq!(queued[0].payload, json!({"key": "a"}).to_string());

    assert!(store
        .enqueue_task(&task("zadarma.recording", "b", t, 3), t)
        .await
        .unwrap());
    assert!(store
        .enqueue_task(&task("amocrm.export", "x", t - Duration::minutes(1), 3), t)
        .await
        .unwrap());

    // Only the kinds asked for, the earliest due first, and only when due.
    let b = store
        .claim_task("w1", &["zadarma.recording"], lease, t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.kind.as_str(), b.key.as_str()),
        ("zadarma.recording", "b")
    );
    assert_eq!(b.attempt, 1);
    assert_eq!(b.max_attempts, 3);
    assert_eq!(b.worker, "w1");
    assert_eq!(b.payload, json!({"key": "b"}).to_string());
    assert_eq!(
        store
            .claim_task("w1", &["zadarma.recording"], lease, t)
            .await
            .unwrap(),
        None
    );
    // No kinds: every kind.
    let x = store
        .claim_task("w1", &[], lease, t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((x.kind.as_str(), x.key.as_str()), ("amocrm.export", "x"));
    assert_eq!(store.claim_task("w1", &[], lease, t).await.unwrap(), None);
    let a = store
        .claim_task(
            "w2",
            &["other", "zadarma.recording"],
            lease,
            t + Duration::minutes(5),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.id, a_id);

    // Work under way is not moved by asking again.
    assert!(!store
        .enqueue_task(&task("zadarma.recording", "a", t, 3), t)
        .await
        .unwrap());
    let a_record = store.task(a_id).await.unwrap().unwrap();
    assert_eq!(a_record.state, TaskState::Running);
    assert_eq!(a_record.due_at, t + Duration::minutes(5));
    assert_eq!(a_record.attempts, 1);

    // Newest first.
    let listed: Vec<_> = store
        .tasks("zadarma.recording", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|task| task.key)
        .collect();
    assert_eq!(listed, ["b", "a"]);
    assert_eq!(store.tasks("zadarma.recording", 1).await.unwrap().len(), 1);
    assert_eq!(store.task(a_id + 1000).await.unwrap(), None);
}

async fn an_expired_lease_is_claimed_again_until_attempts_run_out(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let t = at("2024-05-01T10:00:00Z");
    let kinds = ["amocrm.export"];
    assert!(store
        .enqueue_task(&task("amocrm.export", "e", t, 2), t)
        .await
        .unwrap());
    let first = store
        .claim_task("w1", &kinds, t + Duration::minutes(1), t)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt, 1);
    // The lease is held.
    assert_eq!(
        store
            .claim_task(
                "w2",
                &kinds,
                t + Duration::minutes(2),
                t + Duration::seconds(30)
            )
            .await
            .unwrap(),
        None
    );

    // w1 vanished: after its lease another worker takes the task over.
    let second = store
        .claim_task(
            "w2",
            &kinds,
            t + Duration::minutes(3),
            t + Duration::minutes(2),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.attempt, 2);
    assert_eq!(second.worker, "w2");
    // w1 coming back holds nothing.
    let late = t + Duration::minutes(2);
    assert!(!store
        .save_task_progress(&first, "{}", t + Duration::minutes(9), late)
        .await
        .unwrap());
    assert!(!store
        .finish_task(&first, &TaskOutcome::Done, late)
        .await
        .unwrap());
    // Not even the same worker under its old attempt.
    let stale = ClaimedTask {
        worker: "w2".into(),
        ..first.clone()
    };
    assert!(!store
        .finish_task(&stale, &TaskOutcome::Done, late)
        .await
        .unwrap());

    // Progress extends the lease.
    let progress = json!({"page": 3}).to_string();
    assert!(store
        .save_task_progress(&second, &progress, t + Duration::minutes(5), late)
        .await
        .unwrap());
    let record = store.task(second.id).await.unwrap().unwrap();
    assert_eq!(record.payload, progress);
    assert_eq!(record.state, TaskState::Running);
    assert_eq!(
        store
            .claim_task(
                "w3",
                &kinds,
                t + Duration::minutes(9),
                t + Duration::minutes(4)
            )
            .await
            .unwrap(),
        None
    );

    // w2 vanished on the last attempt: the task fails instead of being
    // claimed a third time.
    assert_eq!(
        store
            .claim_task(
                "w3",
                &kinds,
                t + Duration::minutes(9),
                t + Duration::minutes(6)
            )
            .await
            .unwrap(),
        None
    );
    let record = store.task(second.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.attempts, 2);
    assert_eq!(
        record.last_error.as_deref(),
        Some("Обработчик пропал во время последней попытки")
    );
    assert!(!store
        .finish_task(&second, &TaskOutcome::Done, t + Duration::minutes(7))
        .await
        .unwrap());
    assert!(!store.cancel_task(second.id, t).await.unwrap());
}

async fn finishing_a_task_applies_its_outcome(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let t = at("2024-05-01T10:00:00Z");
    let lease = t + Duration::hours(1);
    for kind in ["done", "retry", "failed", "cancelled", "queued"] {
        assert!(store.enqueue_task(&task(kind, "1", t, 2), t).await.unwrap());
    }
    let claim = |kind: &'static str, now: DateTime<Utc>| async move {
        store.claim_task("w", &[kind], lease, now).await.unwrap()
    };

    // Done: over for good, and not queued again by the same key.
    let done = claim("done", t).await.unwrap();
    assert!(store
        .finish_task(&done, &TaskOutcome::Done, t)
        .await
        .unwrap());
    assert_eq!(
        store.task(done.id).await.unwrap().unwrap().state,
        TaskState::Done
    );
    assert_eq!(claim("done", t + Duration::days(1)).await, None);
    assert!(!store
        .enqueue_task(&task("done", "1", t, 2), t)
        .await
        .unwrap());
    assert!(!store
        .finish_task(&done, &TaskOutcome::Done, t)
        .await
        .unwrap());

    // Retry: queued again for later, until the attempts are used up.
    let first = claim("retry", t).await.unwrap();
    let again = t + Duration::minutes(10);
    assert!(store
        .finish_task(
            &first,
            &TaskOutcome::Retry {
                at: again,
                error: "503".into()
            },
            t
        )
        .await
        .unwrap());
    let record = store.task(first.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Queued);
    assert_eq!(record.due_at, again);
    assert_eq!(record.last_error.as_deref(), Some("503"));
    assert_eq!(record.attempts, 1);
    assert_eq!(claim("retry", again - Duration::seconds(1)).await, None);
    let last = claim("retry", again).await.unwrap();
    assert_eq!(last.attempt, 2);
    assert!(store
        .finish_task(
            &last,
            &TaskOutcome::Retry {
                at: again + Duration::minutes(10),
                error: "504".into()
            },
            again
        )
        .await
        .unwrap());
    let record = store.task(last.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.last_error.as_deref(), Some("504"));
    assert_eq!(claim("retry", t + Duration::days(1)).await, None);

    let failed = claim("failed", t).await.unwrap();
    assert!(store
        .finish_task(
            &failed,
            &TaskOutcome::Failed {
                error: "401".into()
            },
            t
        )
        .await
        .unwrap());
    let record = store.task(failed.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failed);
    assert_eq!(record.last_error.as_deref(), Some("401"));
    assert_eq!(record.attempts, 1);

    // A user stops a running export: its worker's next save is refused.
    let running = claim("cancelled", t).await.unwrap();
    assert!(store.cancel_task(running.id, t).await.unwrap());
    assert!(!store
        .save_task_progress(&running, "{}", lease, t)
        .await
        .unwrap());
    assert!(!store
        .finish_task(&running, &TaskOutcome::Done, t)
        .await
        .unwrap());
    assert_eq!(
        store.task(running.id).await.unwrap().unwrap().state,
        TaskState::Cancelled
    );
    assert!(!store.cancel_task(running.id, t).await.unwrap());
    assert_eq!(claim("cancelled", t + Duration::days(1)).await, None);

    // A queued one is cancelled before anyone takes it.
    let queued = store.tasks("queued", 1).await.unwrap().remove(0);
    assert!(store.cancel_task(queued.id, t).await.unwrap());
    assert_eq!(claim("queued", t + Duration::days(1)).await, None);
    assert!(!store.cancel_task(done.id, t).await.unwrap());
}

on_both_backends!(
    settings_are_swapped_only_from_the_expected_value,
    clients_are_upserted_searched_and_deleted,
    telephony_notifications_merge_in_any_order,
    the_telephony_journal_pages_newest_first_within_scope,
    tasks_are_queued_once_and_claimed_in_due_order,
    an_expired_lease_is_claimed_again_until_attempts_run_out,
    finishing_a_task_applies_its_outcome,
);
