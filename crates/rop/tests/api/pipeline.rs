//! The processing pipeline: durable jobs with leases, retries and final
//! failures, driven by real workers against real storage.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::multipart::{Form, Part};
use rop_domain::{CallId, JobKind, JobOutcome, NewCallEvent, Store};
use serde_json::Value;

use crate::fileserver::{self, wav};
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;

/// Polls the call until `done` holds for it (at most 15 s).
async fn wait_for(app: &TestApp, call_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let call = app.call_json(call_id).await.expect("the call exists");
        if done(&call) {
            return call;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "call never got there: {call:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn job<'a>(call: &'a Value, kind: &str) -> &'a Value {
    call["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} job in {call:#}"))
}

fn with_workers(config: &mut rop::Config) {
    config.worker_concurrency = 2;
    config.retry_base_secs = 0;
    config.job_attempts = 3;
}

async fn a_linked_call_is_downloaded_into_the_blob_store(backend: Backend) {
    let app = spawn_app_with(backend, with_workers).await;
    let files = fileserver::start().await;
    let link = files.url("/call.wav");
    let fields = [
        ("call_id", "dl"),
        ("manager_id", "m1"),
        ("audio_url", &link),
    ];
    assert_eq!(app.upload(&fields).await.status(), 200);

    let call = wait_for(&app, "dl", |call| call["status"] == "decoding").await;
    let download = job(&call, "download");
    assert_eq!(download["state"], "done", "{call:#}");
    assert_eq!(download["attempts"], 1);
    // Decoding is not part of this build yet: the job waits for it.
    assert_eq!(job(&call, "decode")["state"], "queued");
    let history: Vec<&str> = call["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["message"].as_str().unwrap())
        .collect();
    assert!(
        history.iter().any(|m| m.starts_with("Запись скачана: WAV")),
        "{history:?}"
    );
    assert_eq!(app.files_in("blobs"), 1);
    assert_eq!(app.files_in("staging"), 0);
    let stored = std::fs::read_dir(app.data_dir.join("blobs/audio"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert_eq!(std::fs::read(stored).unwrap(), wav(2, true));
    assert_eq!(files.hits(), 2, "one probe, one download");

    let response = app.delete("/api/v1/calls/dl").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.files_in("blobs"),
        0,
        "the downloaded audio goes with the call"
    );
}

async fn an_uploaded_file_is_not_downloaded_again(backend: Backend) {
    let app = spawn_app_with(backend, with_workers).await;
    let form = Form::new()
        .text("call_id", "file")
        .text("manager_id", "m1")
        .part("file", Part::bytes(wav(1, true)).file_name("call.wav"));
    let response = app
        .post("/api/v1/calls/audio-upload")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let call = app.call_json("file").await.unwrap();
    let kinds: Vec<&Value> = call["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["kind"])
        .collect();
    assert_eq!(kinds, ["decode"], "{call:#}");
}

async fn a_failing_source_is_retried_then_the_call_fails(backend: Backend) {
    let app = spawn_app_with(backend, with_workers).await;
    let files = fileserver::start().await;
    let link = files.url("/unavailable.mp3");
    let fields = [
        ("call_id", "retry"),
        ("manager_id", "m1"),
        ("audio_url", &link),
    ];
    // The probe's 503 is accepted: the download retries later.
    assert_eq!(app.upload(&fields).await.status(), 200);

    let call = wait_for(&app, "retry", |call| call["status"] == "failed").await;
    assert_eq!(call["failure_code"], "attempts_exhausted", "{call:#}");
    let reason = call["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("3 попыток") && reason.contains("503"),
        "{reason}"
    );
    let download = job(&call, "download");
    assert_eq!(download["state"], "failed");
    assert_eq!(download["attempts"], 3);
    let retries = call["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["level"] == "warning" && event["step"] == "download")
        .count();
    assert_eq!(retries, 2, "{call:#}");
    assert_eq!(files.hits(), 1 + 3, "one probe, three downloads");
}

async fn a_permanent_error_fails_the_call_at_once(backend: Backend) {
    let app = spawn_app_with(backend, with_workers).await;
    let files = fileserver::start().await;
    let link = files.url("/once.wav");
    let fields = [
        ("call_id", "gone"),
        ("manager_id", "m1"),
        ("audio_url", &link),
    ];
    assert_eq!(app.upload(&fields).await.status(), 200);

    let call = wait_for(&app, "gone", |call| call["status"] == "failed").await;
    assert_eq!(call["failure_code"], "unreachable", "{call:#}");
    assert!(call["status_reason"].as_str().unwrap().contains("410"));
    assert_eq!(job(&call, "download")["attempts"], 1);
    assert_eq!(app.files_in("blobs"), 0);
    assert_eq!(app.files_in("staging"), 0);
}

/// Uploads `count` calls linking to the test WAV; returns their ids.
async fn upload_calls(app: &TestApp, link: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = format!("c{n}");
        let fields = [
            ("call_id", id.as_str()),
            ("manager_id", "m1"),
            ("audio_url", link),
        ];
        assert_eq!(app.upload(&fields).await.status(), 200);
        ids.push(id);
    }
    ids
}

async fn a_lease_that_runs_out_passes_the_job_on(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    upload_calls(&app, &files.url("/call.wav"), 1).await;
    let store = &app.store;
    let kinds = [JobKind::Download];

    let now = Utc::now();
    let first = store
        .claim_job("a", &kinds, now + chrono::Duration::milliseconds(300), now)
        .await
        .unwrap()
        .expect("a due job");
    assert_eq!((first.kind, first.attempt), (JobKind::Download, 1));
    assert_eq!(app.call_json("c0").await.unwrap()["status"], "downloading");
    let later = now + chrono::Duration::seconds(60);
    assert!(
        store
            .claim_job("b", &kinds, later, Utc::now())
            .await
            .unwrap()
            .is_none(),
        "a leased job is nobody else's"
    );
    assert!(store
        .extend_lease(&first, Utc::now() + chrono::Duration::milliseconds(300))
        .await
        .unwrap());

    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = store
        .claim_job("b", &kinds, later, Utc::now())
        .await
        .unwrap()
        .expect("the lease ran out");
    assert_eq!((second.id, second.attempt), (first.id, 2));
    assert!(
        !store.extend_lease(&first, later).await.unwrap(),
        "a's lease is gone"
    );
    let done = JobOutcome::Done {
        next: None,
        event: NewCallEvent::info(Utc::now(), "download", "test"),
    };
    assert!(
        !store.finish_job(&first, &done, Utc::now()).await.unwrap(),
        "a late worker cannot record an outcome"
    );

    // Stopping hands the job back without using up the attempt.
    let released = JobOutcome::Released {
        event: NewCallEvent::info(Utc::now(), "download", "stopping"),
    };
    assert!(store
        .finish_job(&second, &released, Utc::now())
        .await
        .unwrap());
    let third = store
        .claim_job("c", &kinds, later, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.attempt, 2);
    assert!(store.finish_job(&third, &done, Utc::now()).await.unwrap());
    let call = app.call_json("c0").await.unwrap();
    assert_eq!(call["status"], "done");
    assert_eq!(job(&call, "download")["state"], "done");
}

async fn a_worker_lost_on_the_last_attempt_fails_the_call(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.job_attempts = 1).await;
    let files = fileserver::start().await;
    upload_calls(&app, &files.url("/call.wav"), 1).await;
    let store = &app.store;
    let now = Utc::now();
    let lease = now + chrono::Duration::milliseconds(100);
    let job_held = store
        .claim_job("dead", &[JobKind::Download], lease, now)
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .claim_abandoned_jobs("sweeper", Utc::now())
        .await
        .unwrap()
        .is_empty());

    tokio::time::sleep(Duration::from_millis(200)).await;
    let later = Utc::now() + chrono::Duration::seconds(60);
    assert!(
        store
            .claim_job("other", &[JobKind::Download], later, Utc::now())
            .await
            .unwrap()
            .is_none(),
        "no attempts are left to claim"
    );
    let abandoned = store
        .claim_abandoned_jobs("sweeper", Utc::now())
        .await
        .unwrap();
    assert_eq!(abandoned.len(), 1);
    assert_eq!(abandoned[0].id, job_held.id);
    let failed = JobOutcome::Failed {
        reason: "worker_lost".into(),
        message: "потерян".into(),
    };
    assert!(store
        .finish_job(&abandoned[0], &failed, Utc::now())
        .await
        .unwrap());
    let call = app.call_json("c0").await.unwrap();
    assert_eq!(
        (call["status"].as_str(), call["failure_code"].as_str()),
        (Some("failed"), Some("worker_lost"))
    );
}

async fn concurrent_claims_never_share_a_job(backend: Backend) {
    let app = spawn_app(backend).await;
    let files = fileserver::start().await;
    upload_calls(&app, &files.url("/call.wav"), 30).await;
    let claimers = (0..4).map(|n| {
        let store: Arc<dyn Store> = app.store.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let lease = Utc::now() + chrono::Duration::seconds(60);
            while let Some(job) = store
                .claim_job(&format!("w{n}"), &[JobKind::Download], lease, Utc::now())
                .await
                .unwrap()
            {
                ids.push(job.call_id);
            }
            ids
        })
    });
    let mut all: Vec<CallId> = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<&CallId> = all.iter().collect();
    assert_eq!(all.len(), 30, "every job claimed once: {all:?}");
    assert_eq!(distinct.len(), 30);
}

on_both_backends!(
    a_linked_call_is_downloaded_into_the_blob_store,
    an_uploaded_file_is_not_downloaded_again,
    a_failing_source_is_retried_then_the_call_fails,
    a_permanent_error_fails_the_call_at_once,
    a_lease_that_runs_out_passes_the_job_on,
    a_worker_lost_on_the_last_attempt_fails_the_call,
    concurrent_claims_never_share_a_job,
);

/// Two worker processes' worth of workers on one PostgreSQL database: every
/// call downloaded exactly once, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_fifty_calls_on_postgres() {
    let app = spawn_app(Backend::Postgres).await;
    let files = fileserver::start().await;
    let ids = upload_calls(&app, &files.url("/call.wav"), 50).await;
    assert_eq!(files.hits(), 50, "the probes");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = futures_util::FutureExt::shared(async {
        let _ = stopped.await;
    });
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut config = app.config.clone();
        config.worker_concurrency = 3;
        let stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            rop::run_workers(&config, stopped).await.unwrap();
        }));
    }
    for id in &ids {
        let call = wait_for(&app, id, |call| call["status"] == "decoding").await;
        assert_eq!(job(&call, "download")["attempts"], 1, "{call:#}");
    }
    assert_eq!(files.hits(), 100, "each call downloaded exactly once");
    assert_eq!(app.files_in("blobs"), 50);
    let _ = stop.send(());
    for worker in workers {
        worker.await.unwrap();
    }
}

/// `rop serve` as a child process on SQLite, with short leases; the caller's
/// `ROP_*` variables are dropped (the server refuses unknown ones).
fn spawn_serve(data_dir: &std::path::Path, port: u16) -> std::process::Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rop"));
    for (name, _) in std::env::vars() {
        if name.starts_with("ROP_") {
            command.env_remove(name);
        }
    }
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .env("ROP_FETCH_ALLOW_LOOPBACK", "true")
        .env("ROP_RATE_LIMIT_PER_MINUTE", "0")
        .env("ROP_JOB_LEASE_SECS", "3")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(response) = client.get(format!("{base}/readyz")).send().await {
            if response.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rop serve did not become ready");
}

/// kill -9 in the middle of a download: the restarted process takes the job
/// over once the lease runs out and finishes it; one file, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_is_taken_over_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let files = fileserver::start().await;

    let mut server = spawn_serve(dir.path(), port);
    wait_ready(&client, &base).await;
    let key = std::process::Command::new(env!("CARGO_BIN_EXE_rop"))
        .args(["api-key", "show", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
        .stdout;
    let key = String::from_utf8(key).unwrap().trim().to_owned();
    let link = files.url("/slow.wav");
    let response = client
        .post(format!("{base}/api/v1/calls/audio-upload"))
        .header("X-Api-Key", &key)
        .form(&[
            ("call_id", "crash"),
            ("manager_id", "m1"),
            ("audio_url", &link),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The probe, then the download's first request: kill the worker mid-way.
    let started = std::time::Instant::now();
    while files.hits() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "download never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill().unwrap();
    server.wait().unwrap();

    let mut server = spawn_serve(dir.path(), port);
    wait_ready(&client, &base).await;
    let started = std::time::Instant::now();
    let call = loop {
        let call: Value = client
            .get(format!("{base}/api/v1/calls/crash"))
            .header("X-Api-Key", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if call["status"] == "decoding" {
            break call;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not taken over: {call:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    server.kill().unwrap();
    server.wait().unwrap();
    let download = job(&call, "download");
    assert_eq!(download["state"], "done");
    assert_eq!(download["attempts"], 2, "{call:#}");
    assert_eq!(
        files.hits(),
        3,
        "probe, interrupted download, finished download"
    );
    let blobs = std::fs::read_dir(dir.path().join("blobs/audio"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1);
}
