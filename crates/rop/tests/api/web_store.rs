//! What the web interface asks of the store: users and sessions, the audit
//! log, offices, scoped and full-text call lists, and dashboard figures.
//! Transcripts and analyses get in the way the pipeline puts them there:
//! a claimed job finished with its step's output.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rop_domain::{
    AnalysisEngine, AudioSource, CallAnalysis, CallFilter, CallId, CallStatus, ChecklistResult,
    ConversationMetrics, JobKind, JobOutcome, ManagerId, NewAuditEntry, NewCall, NewCallEvent,
    NewJob, NewSession, NewUser, OfficeId, OfficeUpdate, Role, Segment, SpeakerRole, StageResult,
    StageStatus, StatsQuery, StepOutput, Store, StoreError, Totals, Transcript, UserUpdate,
};

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::on_both_backends;

fn at(raw: &str) -> DateTime<Utc> {
    raw.parse().unwrap()
}

fn manager(id: &str) -> ManagerId {
    ManagerId::parse(id).unwrap()
}

fn managers(ids: &[&str]) -> Vec<ManagerId> {
    ids.iter().map(|id| manager(id)).collect()
}

/// Stores a call as an upload would, with its first step queued when
/// `first_job` is given.
async fn insert_call(
    store: &dyn Store,
    call_id: &str,
    manager_id: &str,
    started: DateTime<Utc>,
    status: CallStatus,
    first_job: Option<JobKind>,
) {
    store
        .insert_call(&NewCall {
            call_id: CallId::parse(call_id).unwrap(),
            manager_id: manager(manager_id),
            deal_id: None,
            deal_stage_id: None,
            stage_id: None,
            direction: None,
            client_phone: None,
            client_name: None,
            call_started_at: Some(started),
            declared_duration_secs: None,
            source: AudioSource::Url("https://crm.invalid/a.mp3".parse().unwrap()),
            manager_channel: None,
            metadata: BTreeMap::new(),
            status,
            status_reason: (status == CallStatus::Skipped).then(|| "Слишком короткий".into()),
            received_at: started,
            events: Vec::new(),
            first_job: first_job.map(|kind| NewJob {
                kind,
                max_attempts: 3,
            }),
        })
        .await
        .unwrap();
}

/// Runs the one queued job of `kind` to completion with `output`, as a
/// worker would; `now` is when the worker finishes it.
async fn finish_next(
    store: &dyn Store,
    kind: JobKind,
    next: Option<JobKind>,
    output: StepOutput,
    now: DateTime<Utc>,
) {
    let job = store
        .claim_job(
            "test",
            &[kind],
            Utc::now() + Duration::minutes(5),
            Utc::now(),
        )
        .await
        .unwrap()
        .expect("a queued job");
    let done = JobOutcome::Done {
        next: next.map(|kind| NewJob {
            kind,
            max_attempts: 3,
        }),
        event: NewCallEvent::info(now, kind.as_str(), "test"),
        output,
    };
    assert!(store.finish_job(&job, &done, now).await.unwrap());
}

fn transcript(lines: &[&str]) -> StepOutput {
    let segments = lines
        .iter()
        .enumerate()
        .map(|(n, text)| Segment {
            role: if n % 2 == 0 {
                SpeakerRole::Manager
            } else {
                SpeakerRole::Client
            },
            channel: (n % 2) as u8,
            start: n as f64,
            end: n as f64 + 1.0,
            text: (*text).to_owned(),
            words: Vec::new(),
        })
        .collect();
    StepOutput::Transcript(Box::new(Transcript {
        engine: "test".into(),
        model: "test".into(),
        language: "ru".into(),
        segments,
        metrics: ConversationMetrics::default(),
        real_time_factor: 0.1,
        created_at: Utc::now(),
    }))
}

/// One checklist's result: `stages` are (id, name, done).
pub(crate) fn checklist(
    id: &str,
    completion: f64,
    stages: &[(&str, &str, bool)],
) -> ChecklistResult {
    ChecklistResult {
        checklist_id: id.into(),
        checklist_name: id.into(),
        total_score: 0,
        max_score: 0,
        completion_percentage: completion,
        stages: stages
            .iter()
            .map(|&(stage_id, stage_name, done)| StageResult {
                stage_id: stage_id.into(),
                stage_name: stage_name.into(),
                score: if done { 1 } else { -1 },
                percentage: if done { 100 } else { 0 },
                status: if done {
                    StageStatus::Completed
                } else {
                    StageStatus::Failed
                },
                comment: String::new(),
                quote: String::new(),
                quote_start: None,
                quote_end: None,
                weight: 1,
            })
            .collect(),
        engine: AnalysisEngine::Rules,
        analyzed_at: Utc::now(),
    }
}

fn analysis(checklists: Vec<ChecklistResult>) -> StepOutput {
    StepOutput::Analysis(Box::new(CallAnalysis {
        checklists,
        tables: Vec::new(),
        deliveries: Vec::new(),
        crm_tasks: Vec::new(),
    }))
}

/// A call taken through transcription and, with `checklists`, analysis.
pub(crate) async fn processed_call(
    app: &TestApp,
    call_id: &str,
    manager_id: &str,
    started: DateTime<Utc>,
    lines: &[&str],
    checklists: Option<Vec<ChecklistResult>>,
) {
    let store = app.store.as_ref();
    insert_call(
        store,
        call_id,
        manager_id,
        started,
        CallStatus::Received,
        Some(JobKind::Transcribe),
    )
    .await;
    let next = checklists.as_ref().map(|_| JobKind::Analyze);
    finish_next(
        store,
        JobKind::Transcribe,
        next,
        transcript(lines),
        Utc::now(),
    )
    .await;
    if let Some(checklists) = checklists {
        finish_next(
            store,
            JobKind::Analyze,
            None,
            analysis(checklists),
            Utc::now(),
        )
        .await;
    }
}

fn new_user(username: &str, role: Role, manager_id: Option<&str>) -> NewUser {
    NewUser {
        username: username.into(),
        password_hash: format!("hash-of-{username}"),
        role,
        manager_id: manager_id.map(manager),
        created_at: at("2025-03-01T10:00:00Z"),
    }
}

fn new_session(token: &str, user_id: i64, expires_at: DateTime<Utc>) -> NewSession {
    NewSession {
        token_hash: token.into(),
        user_id,
        csrf_token: format!("csrf-{token}"),
        created_at: Utc::now(),
        expires_at,
    }
}

async fn users_are_managed_and_a_new_password_ends_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let before = store.user_count().await.unwrap();
    let boris = store
        .create_user(&new_user("boris", Role::Leader, None))
        .await
        .unwrap();
    let anna = store
        .create_user(&new_user("anna", Role::Manager, Some("m1")))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_user(&new_user("anna", Role::Admin, None))
            .await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.user_count().await.unwrap(), before + 2);
    let names: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|user| user.username)
        .filter(|name| name == "anna" || name == "boris")
        .collect();
    assert_eq!(names, ["anna", "boris"], "by username");

    let credentials = store.user_credentials("anna").await.unwrap().unwrap();
    assert_eq!(credentials.user, anna);
    assert_eq!(credentials.password_hash, "hash-of-anna");
    assert_eq!(credentials.user.manager_id, Some(manager("m1")));
    assert!(store.user_credentials("Anna").await.unwrap().is_none());
    assert!(store.user_credentials("nobody").await.unwrap().is_none());

    let later = Utc::now() + Duration::hours(1);
    for (token, user) in [("a1", anna.id), ("a2", anna.id), ("b1", boris.id)] {
        store
            .create_session(&new_session(token, user, later))
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .create_session(&new_session("a1", anna.id, later))
            .await,
        Err(StoreError::Duplicate)
    ));
    let session = store.session("a1", Utc::now()).await.unwrap().unwrap();
    assert_eq!(session.user, anna);
    assert_eq!(session.csrf_token, "csrf-a1");

    // A new role and office person keep the sessions; they see the change.
    let promoted = UserUpdate {
        id: anna.id,
        role: Role::Leader,
        manager_id: Some(manager("l1")),
        password_hash: None,
    };
    assert!(store.update_user(&promoted).await.unwrap());
    let session = store.session("a2", Utc::now()).await.unwrap().unwrap();
    assert_eq!(
        (session.user.role, session.user.manager_id),
        (Role::Leader, Some(manager("l1")))
    );
    assert!(
        store
            .managers()
            .await
            .unwrap()
            .iter()
            .any(|m| m.manager_id == manager("l1")),
        "the person exists, as a placeholder"
    );

    let new_password = UserUpdate {
        password_hash: Some("new-hash".into()),
        ..promoted
    };
    assert!(store.update_user(&new_password).await.unwrap());
    for token in ["a1", "a2"] {
        assert!(store.session(token, Utc::now()).await.unwrap().is_none());
    }
    assert!(store.session("b1", Utc::now()).await.unwrap().is_some());
    let credentials = store.user_credentials("anna").await.unwrap().unwrap();
    assert_eq!(credentials.password_hash, "new-hash");
    assert_eq!(credentials.user.role, Role::Leader);
    let nobody = UserUpdate {
        id: anna.id + boris.id + 1000,
        ..new_password
    };
    assert!(!store.update_user(&nobody).await.unwrap());

    assert!(store.delete_user(boris.id).await.unwrap());
    assert!(store.session("b1", Utc::now()).await.unwrap().is_none());
    assert!(!store.delete_user(boris.id).await.unwrap());
    assert!(store.user_credentials("boris").await.unwrap().is_none());
    assert!(matches!(
        store
            .create_session(&new_session("b2", boris.id, later))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.user_count().await.unwrap(), before + 1);
}

async fn sessions_expire(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let user = store
        .create_user(&new_user("vera", Role::Admin, None))
        .await
        .unwrap();
    let now = Utc::now();
    store
        .create_session(&new_session("old", user.id, now - Duration::seconds(1)))
        .await
        .unwrap();
    store
        .create_session(&new_session("live", user.id, now + Duration::hours(1)))
        .await
        .unwrap();

    assert!(store.session("old", now).await.unwrap().is_none());
    let live = store.session("live", now).await.unwrap().unwrap();
    assert_eq!(live.user.username, "vera");
    assert!(
        store
            .session("live", now + Duration::hours(2))
            .await
            .unwrap()
            .is_none(),
        "expiry is judged at the time asked about"
    );
    assert!(store.session("unknown", now).await.unwrap().is_none());

    assert_eq!(store.delete_expired_sessions(now).await.unwrap(), 1);
    assert_eq!(store.delete_expired_sessions(now).await.unwrap(), 0);
    assert!(store.session("live", now).await.unwrap().is_some());
    store.delete_session("live").await.unwrap();
    assert!(store.session("live", now).await.unwrap().is_none());
    store.delete_session("live").await.unwrap();
}

async fn the_audit_log_pages_newest_first(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    for n in 1..=5 {
        store
            .add_audit_entry(&NewAuditEntry {
                at: at("2025-03-01T10:00:00Z") + Duration::minutes(n),
                actor: if n == 5 { "API".into() } else { "admin".into() },
                action: "checklist.update".into(),
                target: format!("sales-{n}"),
                details: format!("{{\"n\":{n}}}"),
            })
            .await
            .unwrap();
    }
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store.audit_entries(before, 2).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        pages.push(
            page.iter()
                .map(|entry| entry.target.clone())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        pages,
        [
            vec!["sales-5", "sales-4"],
            vec!["sales-3", "sales-2"],
            vec!["sales-1"]
        ]
    );
    let newest = &store.audit_entries(None, 1).await.unwrap()[0];
    assert_eq!(newest.at, at("2025-03-01T10:05:00Z"));
    assert_eq!(
        (
            newest.actor.as_str(),
            newest.action.as_str(),
            newest.details.as_str()
        ),
        ("API", "checklist.update", "{\"n\":5}")
    );
}

async fn offices_are_listed_with_their_people(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    assert!(store.offices().await.unwrap().is_empty());
    let office = |id: &str, title: Option<&str>, leaders: &[&str], members: &[&str]| OfficeUpdate {
        office_id: OfficeId::parse(id).unwrap(),
        title: title.map(str::to_owned),
        leader_ids: Some(managers(leaders)),
        manager_ids: Some(managers(members)),
    };
    store
        .upsert_offices(
            &[
                office("o2", Some("Казань"), &["l2"], &["m3"]),
                office("o1", Some("Москва"), &["l1"], &["m2", "m1"]),
                office("o3", None, &[], &[]),
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    let offices = store.offices().await.unwrap();
    let ids: Vec<&str> = offices.iter().map(|o| o.office_id.as_str()).collect();
    assert_eq!(ids, ["o1", "o2", "o3"]);
    assert_eq!(offices[0].title.as_deref(), Some("Москва"));
    assert_eq!(offices[0].leader_ids, managers(&["l1"]));
    assert_eq!(offices[0].manager_ids, managers(&["m1", "m2"]));
    assert_eq!(offices[1].manager_ids, managers(&["m3"]));
    assert_eq!(offices[2].title, None);
    assert!(offices[2].leader_ids.is_empty() && offices[2].manager_ids.is_empty());
    for office in &offices {
        assert_eq!(
            store.office(&office.office_id).await.unwrap().as_ref(),
            Some(office)
        );
    }
}

async fn listed(store: &dyn Store, filter: CallFilter) -> Vec<String> {
    store
        .list_calls(&CallFilter {
            limit: 50,
            ..filter
        })
        .await
        .unwrap()
        .calls
        .into_iter()
        .map(|call| call.call_id.as_str().to_owned())
        .collect()
}

fn scope(ids: &[&str]) -> CallFilter {
    CallFilter {
        managers: Some(managers(ids)),
        ..CallFilter::default()
    }
}

fn text(text: &str) -> CallFilter {
    CallFilter {
        text: Some(text.into()),
        ..CallFilter::default()
    }
}

async fn calls_are_scoped_to_managers_and_found_by_word_forms(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let day = at("2025-03-03T09:00:00Z");
    processed_call(
        &app,
        "c1",
        "m1",
        day,
        &["Добрый день!", "Мы можем дать вам скидку на доставку."],
        None,
    )
    .await;
    processed_call(
        &app,
        "c2",
        "m2",
        day,
        &["Доставка будет завтра, ёлки."],
        None,
    )
    .await;
    insert_call(store, "c3", "m3", day, CallStatus::Received, None).await;

    assert_eq!(
        listed(store, CallFilter::default()).await,
        ["c3", "c2", "c1"]
    );
    assert_eq!(listed(store, scope(&["m1", "m2"])).await, ["c2", "c1"]);
    assert_eq!(listed(store, scope(&["m3"])).await, ["c3"]);
    assert!(listed(store, scope(&[])).await.is_empty(), "nobody's calls");

    assert_eq!(listed(store, text("скидки")).await, ["c1"]);
    assert_eq!(listed(store, text("Доставкой")).await, ["c2", "c1"]);
    assert_eq!(listed(store, text("скидка, доставка")).await, ["c1"]);
    assert_eq!(listed(store, text("елки")).await, ["c2"]);
    assert!(listed(store, text("скидка кредит")).await.is_empty());
    assert!(
        listed(store, text("клиент")).await.is_empty(),
        "speaker labels are not words of the call"
    );
    assert_eq!(
        listed(store, text(" ,.! ")).await,
        ["c3", "c2", "c1"],
        "a text without words does not filter"
    );
    let theirs = CallFilter {
        managers: Some(managers(&["m2"])),
        ..text("скидку")
    };
    assert!(listed(store, theirs).await.is_empty());

    // Paging works the same with a search.
    let first = store
        .list_calls(&CallFilter {
            limit: 1,
            ..text("доставка")
        })
        .await
        .unwrap();
    assert_eq!(first.calls[0].call_id.as_str(), "c2");
    let second = store
        .list_calls(&CallFilter {
            limit: 1,
            before_seq: first.next_before_seq,
            ..text("доставка")
        })
        .await
        .unwrap();
    assert_eq!(second.calls[0].call_id.as_str(), "c1");
    assert_eq!(second.next_before_seq, None);

    // The API's `q`.
    let page: serde_json::Value = app
        .get("/api/v1/calls")
        .query(&[("q", "скидкой")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["calls"].as_array().unwrap().len(), 1);
    assert_eq!(page["calls"][0]["call_id"], "c1");
    let too_long = app
        .get("/api/v1/calls")
        .query(&[("q", "а".repeat(501))])
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), 400);

    store
        .delete_call(&CallId::parse("c1").unwrap())
        .await
        .unwrap();
    assert!(listed(store, text("скидки")).await.is_empty());
    assert_eq!(listed(store, text("доставка")).await, ["c2"]);
    // A new call under the old id is not found by the old words.
    insert_call(store, "c1", "m1", day, CallStatus::Received, None).await;
    assert!(listed(store, text("скидки")).await.is_empty());
}

/// A database upgraded from before the search index has transcripts and no
/// search rows; starting (migrating) again indexes them.
async fn transcripts_stored_before_the_index_are_indexed_on_migrate(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    processed_call(
        &app,
        "c1",
        "m1",
        Utc::now(),
        &["Пришлю коммерческое предложение."],
        None,
    )
    .await;
    processed_call(&app, "c2", "m1", Utc::now(), &["Перезвоню завтра."], None).await;
    execute(&app, "DELETE FROM transcript_search").await;
    assert!(listed(store, text("предложения")).await.is_empty());

    store.migrate().await.unwrap();
    assert_eq!(listed(store, text("предложения")).await, ["c1"]);
    assert_eq!(listed(store, text("завтра")).await, ["c2"]);
    store.migrate().await.unwrap();
    assert_eq!(listed(store, text("предложения")).await, ["c1"]);
}

/// Runs SQL on the test's database behind the store's back.
async fn execute(app: &TestApp, sql: &str) {
    use sqlx::Connection;
    let url = app.config.database_url();
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

fn totals(calls: u64, analysed: u64, average_completion: Option<f64>) -> Totals {
    Totals {
        calls,
        analysed,
        average_completion,
    }
}

fn sales(completion: f64, needs: bool, budget: (&str, bool)) -> ChecklistResult {
    checklist(
        "sales",
        completion,
        &[
            ("greeting", "Приветствие", true),
            ("needs", "Потребности", needs),
            ("budget", budget.0, budget.1),
        ],
    )
}

fn period(managers: Option<Vec<ManagerId>>, utc_offset_secs: i32) -> StatsQuery {
    StatsQuery {
        from: at("2025-03-01T00:00:00Z"),
        to: at("2025-03-10T00:00:00Z"),
        managers,
        utc_offset_secs,
    }
}

fn day(raw: &str) -> NaiveDate {
    raw.parse().unwrap()
}

async fn the_dashboard_counts_ranks_and_finds_failed_stages(backend: Backend) {
    let app = spawn_app(backend).await;
    let store = app.store.as_ref();
    let people = |id: &str, leaders: &[&str], members: &[&str]| OfficeUpdate {
        office_id: OfficeId::parse(id).unwrap(),
        title: Some(format!("Офис {id}")),
        leader_ids: Some(managers(leaders)),
        manager_ids: Some(managers(members)),
    };
    store
        .upsert_offices(
            &[
                // m3 leads o1 too: a leader's calls are not his office's.
                people("o1", &["m3"], &["m1", "m2"]),
                people("o2", &[], &["m3"]),
                people("o3", &[], &["m5"]),
                people("o4", &[], &["m4"]),
            ],
            Utc::now(),
        )
        .await
        .unwrap();
    let line = ["Здравствуйте"];
    // 23:30 in Moscow on March 1st, but 00:30 on March 2nd for the next one.
    processed_call(
        &app,
        "a1",
        "m1",
        at("2025-03-01T20:30:00Z"),
        &line,
        Some(vec![sales(80.0, true, ("Бюджет", false))]),
    )
    .await;
    processed_call(
        &app,
        "a2",
        "m1",
        at("2025-03-01T21:30:00Z"),
        &line,
        Some(vec![sales(60.0, false, ("Бюджет", false))]),
    )
    .await;
    // Twelve failed stages of another script: only ten stages are listed.
    let many: Vec<(String, String)> = (1..=12)
        .map(|n| (format!("s{n:02}"), format!("Шаг {n}")))
        .collect();
    let many: Vec<(&str, &str, bool)> = many
        .iter()
        .map(|(id, name)| (id.as_str(), name.as_str(), false))
        .collect();
    processed_call(
        &app,
        "a3",
        "m2",
        at("2025-03-02T10:00:00Z"),
        &line,
        Some(vec![
            sales(100.0, true, ("Бюджет", true)),
            checklist("script2", 100.0, &many),
        ]),
    )
    .await;
    processed_call(&app, "a4", "m3", at("2025-03-02T11:00:00Z"), &line, None).await;
    processed_call(
        &app,
        "a5",
        "m5",
        at("2025-03-03T10:00:00Z"),
        &line,
        Some(vec![sales(70.0, true, ("Бюджет", false))]),
    )
    .await;
    // Neither counts: one is skipped, the other outside the period.
    insert_call(
        store,
        "skip",
        "m2",
        at("2025-03-02T12:00:00Z"),
        CallStatus::Skipped,
        None,
    )
    .await;
    processed_call(
        &app,
        "april",
        "m1",
        at("2025-04-01T10:00:00Z"),
        &line,
        Some(vec![sales(0.0, false, ("Бюджет", false))]),
    )
    .await;

    let moscow = 3 * 3600;
    let board = store.dashboard(&period(None, moscow)).await.unwrap();
    assert_eq!(board.totals, totals(5, 4, Some(77.5)));
    let days: Vec<(NaiveDate, Totals)> = board.days.iter().map(|d| (d.day, d.totals)).collect();
    assert_eq!(
        days,
        [
            (day("2025-03-01"), totals(1, 1, Some(80.0))),
            (day("2025-03-02"), totals(3, 2, Some(80.0))),
            (day("2025-03-03"), totals(1, 1, Some(70.0))),
        ]
    );
    let in_utc = store.dashboard(&period(None, 0)).await.unwrap();
    let days: Vec<(NaiveDate, Totals)> = in_utc.days.iter().map(|d| (d.day, d.totals)).collect();
    assert_eq!(
        days[..2],
        [
            (day("2025-03-01"), totals(2, 2, Some(70.0))),
            (day("2025-03-02"), totals(2, 1, Some(100.0))),
        ]
    );
    // Best first, a tie by id, the unscored last.
    let ranked: Vec<(&str, Totals)> = board
        .managers
        .iter()
        .map(|m| (m.manager_id.as_str(), m.totals))
        .collect();
    assert_eq!(
        ranked,
        [
            ("m2", totals(1, 1, Some(100.0))),
            ("m1", totals(2, 2, Some(70.0))),
            ("m5", totals(1, 1, Some(70.0))),
            ("m3", totals(1, 0, None)),
        ]
    );
    let offices: Vec<(&str, Option<&str>, Totals)> = board
        .offices
        .iter()
        .map(|o| (o.office_id.as_str(), o.title.as_deref(), o.totals))
        .collect();
    assert_eq!(
        offices,
        [
            ("o1", Some("Офис o1"), totals(3, 3, Some(80.0))),
            ("o3", Some("Офис o3"), totals(1, 1, Some(70.0))),
            ("o2", Some("Офис o2"), totals(1, 0, None)),
        ]
    );
    let failed: Vec<(&str, &str, &str, u64, u64)> = board
        .failed_stages
        .iter()
        .map(|s| {
            (
                s.checklist_id.as_str(),
                s.stage_id.as_str(),
                s.stage_name.as_str(),
                s.failed,
                s.scored,
            )
        })
        .collect();
    let mut expected = vec![
        ("sales", "budget", "Бюджет", 3, 4),
        ("sales", "needs", "Потребности", 1, 4),
    ];
    expected.extend(many[..8].iter().map(|s| ("script2", s.0, s.1, 1, 1)));
    assert_eq!(failed, expected);

    // A leader's view: his managers only.
    let scoped = store
        .dashboard(&period(Some(managers(&["m1"])), moscow))
        .await
        .unwrap();
    assert_eq!(scoped.totals, totals(2, 2, Some(70.0)));
    assert_eq!(scoped.managers.len(), 1);
    assert_eq!(
        scoped.offices.iter().map(|o| o.totals).collect::<Vec<_>>(),
        [totals(2, 2, Some(70.0))]
    );
    let stages: Vec<(&str, u64, u64)> = scoped
        .failed_stages
        .iter()
        .map(|s| (s.stage_id.as_str(), s.failed, s.scored))
        .collect();
    assert_eq!(stages, [("budget", 2, 2), ("needs", 1, 2)]);
    let nobody = store
        .dashboard(&period(Some(Vec::new()), moscow))
        .await
        .unwrap();
    assert_eq!(nobody.totals, Totals::default());
    assert!(nobody.days.is_empty() && nobody.managers.is_empty());
    assert!(nobody.offices.is_empty() && nobody.failed_stages.is_empty());

    // Analysing a1 again replaces its stages; the newest result names one.
    let a1 = CallId::parse("a1").unwrap();
    let again = NewJob {
        kind: JobKind::Analyze,
        max_attempts: 3,
    };
    assert!(store
        .requeue_analysis(&a1, again, Utc::now())
        .await
        .unwrap());
    finish_next(
        store,
        JobKind::Analyze,
        None,
        analysis(vec![sales(80.0, true, ("Бюджет и сроки", true))]),
        Utc::now() + Duration::minutes(1),
    )
    .await;
    let board = store.dashboard(&period(None, moscow)).await.unwrap();
    assert_eq!(board.totals, totals(5, 4, Some(77.5)));
    assert_eq!(
        (
            board.failed_stages[0].stage_name.as_str(),
            board.failed_stages[0].failed,
            board.failed_stages[0].scored
        ),
        ("Бюджет и сроки", 2, 4)
    );

    // A deleted call's stages go with it.
    store
        .delete_call(&CallId::parse("a2").unwrap())
        .await
        .unwrap();
    let board = store
        .dashboard(&period(Some(managers(&["m1", "m5"])), moscow))
        .await
        .unwrap();
    let stages: Vec<(&str, u64, u64)> = board
        .failed_stages
        .iter()
        .map(|s| (s.stage_id.as_str(), s.failed, s.scored))
        .collect();
    assert_eq!(stages, [("budget", 1, 2)]);
}

on_both_backends!(
    users_are_managed_and_a_new_password_ends_sessions,
    sessions_expire,
    the_audit_log_pages_newest_first,
    offices_are_listed_with_their_people,
    calls_are_scoped_to_managers_and_found_by_word_forms,
    transcripts_stored_before_the_index_are_indexed_on_migrate,
    the_dashboard_counts_ranks_and_finds_failed_stages,
);
