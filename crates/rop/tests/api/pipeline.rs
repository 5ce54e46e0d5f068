//! The processing pipeline: durable jobs with leases, retries and final
//! failures, driven by real workers against real storage.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::multipart::{Form, Part};
use rop_domain::{CallId, JobKind, JobOutcome, NewCallEvent, StepOutput, Store};
use serde_json::Value;

use rop_testkit::transcription::TranscriptionDouble;

use crate::fileserver::{self, wav};
use crate::helpers::{spawn_app, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;

/// Polls the call until `done` holds for it (at most 15 s).
pub async fn wait_for(app: &TestApp, call_id: &str, done: impl Fn(&Value) -> bool) -> Value {
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

pub fn job<'a>(call: &'a Value, kind: &str) -> &'a Value {
    call["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} job in {call:#}"))
}

/// Workers on, recognising speech with the OpenAI-compatible double.
pub fn with_workers(config: &mut rop::Config, asr: &TranscriptionDouble) {
    config.worker_concurrency = 2;
    config.retry_base_secs = 0;
    config.job_attempts = 3;
    config.asr_engine = rop::config::AsrEngineKind::OpenAi;
    config.asr_url = Some(asr.base_url());
    // Phrase rules only: these tests are about the pipeline, not the model.
    config.llm_engine = rop::config::LlmEngineKind::None;
}

/// A stereo 8 kHz WAV: a 440 Hz tone on the left from 0.2 to 1.2 s, a
/// 1000 Hz tone on the right from 1.5 to 2.5 s, 3 s in all.
pub fn stereo_wav() -> Vec<u8> {
    let rate = 8000u32;
    let frames = rate * 3;
    let mut out = fileserver::wav_header(rate, 2, frames * 4);
    let tone = |hz: f64, from: f64, to: f64, t: f64| -> i16 {
        if (from..to).contains(&t) {
            ((2.0 * std::f64::consts::PI * hz * t).sin() * 8000.0) as i16
        } else {
            0
        }
    };
    for i in 0..frames {
        let t = f64::from(i) / f64::from(rate);
        out.extend_from_slice(&tone(440.0, 0.2, 1.2, t).to_le_bytes());
        out.extend_from_slice(&tone(1000.0, 1.5, 2.5, t).to_le_bytes());
    }
    out
}

fn lines(call: &Value) -> Vec<(String, String)> {
    call["transcript"]["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("no transcript: {call:#}"))
        .iter()
        .map(|s| {
            (
                s["role"].as_str().unwrap().to_owned(),
                s["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn a_linked_call_goes_through_download_decode_and_transcription(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    let files = fileserver::start().await;
    let link = files.url("/call.wav");
    let fields = [
        ("call_id", "dl"),
        ("manager_id", "m1"),
        ("audio_url", &link),
    ];
    assert_eq!(app.upload(&fields).await.status(), 200);

    let call = wait_for(&app, "dl", |call| call["status"] == "done").await;
    for step in ["download", "decode", "transcribe"] {
        assert_eq!(job(&call, step)["state"], "done", "{call:#}");
        assert_eq!(job(&call, step)["attempts"], 1, "{call:#}");
    }
    let audio = &call["audio"];
    assert_eq!(
        (audio["container"].as_str(), audio["codec"].as_str()),
        (Some("wave"), Some("pcm_s16le"))
    );
    assert_eq!(
        (audio["channels"].as_u64(), audio["duration_secs"].as_f64()),
        (Some(1), Some(2.0))
    );
    // Mono: one stream, speakers not told apart. The test WAV is a 200 Hz
    // sawtooth, which the double "hears" as its pitch.
    assert_eq!(
        lines(&call),
        [("unknown".to_owned(), "тон 200 герц".to_owned())]
    );
    assert_eq!(call["transcript"]["engine"], "openai");
    assert_eq!(call["transcript"]["language"], "ru");
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
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    app.upload_file("file", wav(1, true), &[]).await;
    let call = wait_for(&app, "file", |call| call["status"] == "done").await;
    let kinds: Vec<&Value> = call["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["kind"])
        .collect();
    assert_eq!(kinds, ["decode", "transcribe", "analyze"], "{call:#}");
}

async fn stereo_channels_get_roles_from_settings_or_the_call(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    let manager = |text: &str| ("manager".to_owned(), text.to_owned());
    let client = |text: &str| ("client".to_owned(), text.to_owned());

    // Default: left is the manager.
    app.upload_file("left", stereo_wav(), &[]).await;
    let call = wait_for(&app, "left", |call| call["status"] == "done").await;
    assert_eq!(
        lines(&call),
        [manager("тон 440 герц"), client("тон 1000 герц")]
    );
    let segments = call["transcript"]["segments"].as_array().unwrap();
    assert_eq!(
        (
            segments[0]["channel"].as_u64(),
            segments[1]["channel"].as_u64()
        ),
        (Some(0), Some(1))
    );
    let start = segments[1]["start"].as_f64().unwrap();
    assert!((start - 1.5).abs() < 0.05, "times are the call's: {start}");
    assert_eq!(segments[0]["words"].as_array().unwrap().len(), 3);
    let metrics = &call["transcript"]["metrics"];
    assert!(
        (metrics["manager_talk_share"].as_f64().unwrap() - 0.5).abs() < 0.02,
        "{metrics}"
    );
    assert_eq!(metrics["interruptions"], 0);
    let silence = metrics["silence_share"].as_f64().unwrap();
    assert!((silence - 1.0 / 3.0).abs() < 0.02, "{metrics}");

    // The Connection page says the manager is on the right…
    let response = app
        .client
        .put(app.url("/api/v1/settings/connection"))
        .header("X-Api-Key", &app.key)
        .json(&serde_json::json!({"min_call_duration_secs": 0, "manager_channel": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.upload_file("right", stereo_wav(), &[]).await;
    let call = wait_for(&app, "right", |call| call["status"] == "done").await;
    assert_eq!(
        lines(&call),
        [client("тон 440 герц"), manager("тон 1000 герц")]
    );

    // …and a call may say otherwise.
    app.upload_file("override", stereo_wav(), &[("manager_channel", "0")])
        .await;
    let call = wait_for(&app, "override", |call| call["status"] == "done").await;
    assert_eq!(call["manager_channel"], 0);
    assert_eq!(
        lines(&call),
        [manager("тон 440 герц"), client("тон 1000 герц")]
    );

    let (status, code, field) = crate::helpers::error_of(
        app.upload(&[
            ("call_id", "bad"),
            ("manager_id", "m1"),
            ("audio_url", "http://127.0.0.1:9/a.wav"),
            ("manager_channel", "2"),
        ])
        .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (400, "invalid_request", Some("manager_channel"))
    );
}

async fn recordings_the_decoder_refuses_fail_with_a_reason(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| {
        with_workers(c, &asr);
        c.max_duration_secs = 1;
    })
    .await;
    // A WAV of GSM 6.10 (format tag 49): looks like audio, cannot be decoded.
    let mut gsm = wav(1, true);
    gsm[20..22].copy_from_slice(&49u16.to_le_bytes());
    app.upload_file("gsm", gsm, &[]).await;
    // 1.5 s of Vorbis: longer than allowed, though nothing declared it.
    let ogg = include_bytes!("../../../audio/tests/fixtures/stereo-44k.ogg");
    app.upload_file("long", ogg.to_vec(), &[]).await;

    let call = wait_for(&app, "gsm", |call| call["status"] == "failed").await;
    let code = call["failure_code"].as_str().unwrap();
    assert!(
        matches!(code, "unsupported_format" | "unsupported_codec"),
        "{call:#}"
    );
    assert!(
        call["status_reason"]
            .as_str()
            .unwrap()
            .starts_with("Запись не обработана"),
        "{call:#}"
    );
    assert_eq!(job(&call, "decode")["attempts"], 1, "not retried");

    let call = wait_for(&app, "long", |call| call["status"] == "failed").await;
    assert_eq!(call["failure_code"], "too_long", "{call:#}");
    assert_eq!(asr.requests(), 0, "nothing reached speech recognition");
}

async fn a_recording_shorter_than_the_minimum_is_skipped_after_decoding(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    let response = app
        .client
        .put(app.url("/api/v1/settings/connection"))
        .header("X-Api-Key", &app.key)
        .json(&serde_json::json!({"min_call_duration_secs": 5, "manager_channel": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // No duration declared: only decoding can tell it is 2 s long.
    app.upload_file("short", wav(2, true), &[]).await;
    let call = wait_for(&app, "short", |call| call["status"] == "skipped").await;
    assert!(
        call["status_reason"]
            .as_str()
            .unwrap()
            .contains("короче минимальной"),
        "{call:#}"
    );
    assert!(call["transcript"].is_null());
    assert_eq!(asr.requests(), 0);
}

async fn a_busy_speech_server_is_retried(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    asr.fail_next(&[503, 429]);
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
    app.upload_file("busy", wav(1, true), &[]).await;
    let call = wait_for(&app, "busy", |call| call["status"] == "done").await;
    let transcribe = job(&call, "transcribe");
    assert_eq!(transcribe["attempts"], 3, "{call:#}");
    assert!(
        transcribe["last_error"].as_str().unwrap().contains("429"),
        "{call:#}"
    );
    assert_eq!(lines(&call).len(), 1);
}

async fn a_failing_source_is_retried_then_the_call_fails(backend: Backend) {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
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
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(backend, |c| with_workers(c, &asr)).await;
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
        output: StepOutput::Nothing,
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
    a_linked_call_goes_through_download_decode_and_transcription,
    an_uploaded_file_is_not_downloaded_again,
    stereo_channels_get_roles_from_settings_or_the_call,
    recordings_the_decoder_refuses_fail_with_a_reason,
    a_recording_shorter_than_the_minimum_is_skipped_after_decoding,
    a_busy_speech_server_is_retried,
    a_failing_source_is_retried_then_the_call_fails,
    a_permanent_error_fails_the_call_at_once,
    a_lease_that_runs_out_passes_the_job_on,
    a_worker_lost_on_the_last_attempt_fails_the_call,
    concurrent_claims_never_share_a_job,
);

/// Two worker processes' worth of workers on one PostgreSQL database: every
/// call downloaded and transcribed exactly once, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_fifty_calls_on_postgres() {
    let asr = TranscriptionDouble::start(None).await;
    let app = spawn_app_with(Backend::Postgres, |c| {
        c.asr_engine = rop::config::AsrEngineKind::OpenAi;
        c.asr_url = Some(asr.base_url());
    })
    .await;
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
        let call = wait_for(&app, id, |call| call["status"] == "done").await;
        for step in ["download", "decode", "transcribe"] {
            assert_eq!(job(&call, step)["attempts"], 1, "{call:#}");
        }
        assert_eq!(lines(&call).len(), 1, "{call:#}");
    }
    assert_eq!(files.hits(), 100, "each call downloaded exactly once");
    assert_eq!(asr.requests(), 50, "each call transcribed exactly once");
    assert_eq!(app.files_in("blobs"), 50);
    let _ = stop.send(());
    for worker in workers {
        worker.await.unwrap();
    }
}

/// `rop serve` as a child process on SQLite, with short leases; the caller's
/// `ROP_*` variables are dropped (the server refuses unknown ones).
fn spawn_serve(data_dir: &std::path::Path, port: u16, asr_url: &str) -> std::process::Child {
    spawn_serve_with(data_dir, port, asr_url, &[])
}

/// [`spawn_serve`] with more `ROP_*` settings.
pub fn spawn_serve_with(
    data_dir: &std::path::Path,
    port: u16,
    asr_url: &str,
    settings: &[(&str, &str)],
) -> std::process::Child {
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
        .env("ROP_ASR_ENGINE", "openai")
        .env("ROP_ASR_URL", asr_url)
        .env("ROP_LLM_ENGINE", "none")
        .envs(settings.iter().copied())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

pub async fn wait_ready(client: &reqwest::Client, base: &str) {
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

/// The API key of a data directory, from the CLI.
pub fn api_key_of(data_dir: &std::path::Path) -> String {
    let key = std::process::Command::new(env!("CARGO_BIN_EXE_rop"))
        .args(["api-key", "show", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
        .stdout;
    String::from_utf8(key).unwrap().trim().to_owned()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls a call of a child `rop serve` until it is done (at most 30 s).
pub async fn wait_done(client: &reqwest::Client, base: &str, key: &str, call_id: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let call: Value = client
            .get(format!("{base}/api/v1/calls/{call_id}"))
            .header("X-Api-Key", key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if call["status"] == "done" {
            return call;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not taken over: {call:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kill -9 in the middle of a download: the restarted process takes the job
/// over once the lease runs out and finishes it; one file, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_download_is_taken_over_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let files = fileserver::start().await;
    let asr = TranscriptionDouble::start(None).await;

    let mut server = spawn_serve(dir.path(), port, &asr.base_url());
    wait_ready(&client, &base).await;
    let key = api_key_of(dir.path());
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

    let mut server = spawn_serve(dir.path(), port, &asr.base_url());
    wait_ready(&client, &base).await;
    let call = wait_done(&client, &base, &key, "crash").await;
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

/// kill -9 while the speech recogniser works on the call: a restarted
/// process transcribes it again, and the call has one transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_transcription_is_taken_over_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let asr = TranscriptionDouble::start(None).await;
    asr.set_delay(Duration::from_secs(2));

    let mut server = spawn_serve(dir.path(), port, &asr.base_url());
    wait_ready(&client, &base).await;
    let key = api_key_of(dir.path());
    let form = Form::new()
        .text("call_id", "crash")
        .text("manager_id", "m1")
        .part("file", Part::bytes(stereo_wav()).file_name("call.wav"));
    let response = client
        .post(format!("{base}/api/v1/calls/audio-upload"))
        .header("X-Api-Key", &key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let started = std::time::Instant::now();
    while asr.requests() < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "transcription never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
    asr.set_delay(Duration::ZERO);

    let mut server = spawn_serve(dir.path(), port, &asr.base_url());
    wait_ready(&client, &base).await;
    let call = wait_done(&client, &base, &key, "crash").await;
    server.kill().unwrap();
    server.wait().unwrap();
    let transcribe = job(&call, "transcribe");
    assert_eq!(transcribe["attempts"], 2, "{call:#}");
    assert_eq!(job(&call, "decode")["attempts"], 1, "{call:#}");
    assert_eq!(
        lines(&call).len(),
        2,
        "one transcript, both channels: {call:#}"
    );
    // The first try's channel, the retry's two.
    assert_eq!(asr.requests(), 3);
    let store = rop::open_store(&format!("sqlite://{}", dir.path().join("rop.db").display()))
        .await
        .unwrap();
    let details = store
        .call(&CallId::try_from("crash".to_owned()).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(details.transcript.unwrap().segments.len(), 2);
}
