//! `rop-loadgen`: loopback load generator for the upload benchmark
//! (see `bench/README.md`).
//!
//! One run, against one server process:
//! 1. serves a short WAV file itself on `127.0.0.1:<random port>` (with HTTP
//!    Range support, as the server's upload-time probe asks for the first
//!    8 KiB);
//! 2. closed-loop phase against `GET /healthz` (the baseline);
//! 3. closed-loop phase against `POST /api/v1/calls/audio-upload` with unique
//!    `call_id`s and `audio_url` pointing at the WAV server above;
//! 4. prints a table (and optionally JSON): requests/s, p50/p90/p99/max
//!    latency, errors, and the upload/healthz throughput ratio.
//!
//! Every phase is bounded in time (`--warmup` + `--duration`) and in count
//! (`--max-requests`), and only loopback addresses are accepted as targets.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{ACCEPT_RANGES, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::{Parser, ValueEnum};
use reqwest::Url;
use serde_json::json;

/// Loopback load generator: /healthz baseline vs. audio upload, same server, same run.
#[derive(Parser, Debug)]
#[command(name = "rop-loadgen", version, about, args_override_self = true)]
struct Cli {
    /// Base URL of the server under test (loopback only).
    #[arg(long, env = "LOADGEN_URL", default_value = "http://127.0.0.1:8080")]
    url: Url,
    /// API key for the upload endpoint (`rop api-key show`). Not `ROP_API_KEY`:
    /// the server treats every `ROP_*` variable as configuration.
    #[arg(long, env = "LOADGEN_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Concurrent closed-loop workers per phase.
    #[arg(long, short = 'c', default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds per phase (after the warm-up).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds per phase: requests are sent but not recorded.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Hard cap on requests per phase, warm-up included.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Per-request timeout in milliseconds (a timeout counts as an error).
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Body encoding of the upload request.
    #[arg(long, value_enum, default_value_t = BodyKind::Form)]
    body: BodyKind,
    /// Extra upload field, NAME=VALUE (repeatable), e.g. `--field direction=incoming`.
    #[arg(long = "field", value_name = "NAME=VALUE", value_parser = parse_field)]
    fields: Vec<(String, String)>,
    /// Tokio worker threads of the load generator [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// Which phases to run.
    #[arg(long, value_enum, default_value_t = Phases::Both)]
    phases: Phases,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Goal: upload rps as a percentage of healthz rps.
    #[arg(long, default_value_t = 30.0)]
    goal_ratio_pct: f64,
    /// Goal: upload p99 latency in milliseconds.
    #[arg(long, default_value_t = 20.0)]
    goal_p99_ms: f64,
    /// Exit with status 1 when a goal is missed or any request failed.
    #[arg(long)]
    check: bool,
    /// Free-text description of the machine, stored in the JSON.
    #[arg(long, env = "LOADGEN_MACHINE")]
    machine: Option<String>,
    /// Free-text version of the server under test, stored in the JSON.
    #[arg(long, env = "LOADGEN_REVISION")]
    revision: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BodyKind {
    /// application/x-www-form-urlencoded (what CRMs usually send).
    Form,
    /// application/json.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phases {
    Both,
    Healthz,
    Upload,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = cli.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rop-loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("rop-loadgen: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Returns whether `--check` passed (always true without `--check`).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    validate(&cli)?;
    let run_id = run_id();
    let (audio_addr, probes) = start_audio_server().await?;
    let audio_url = format!("http://{audio_addr}/audio/call.wav");

    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(cli.concurrency.max(1) * 2)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_millis(cli.timeout_ms))
        .user_agent(concat!("rop-loadgen/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")?;
    let healthz_url = cli.url.join("healthz")?;
    let upload_url = cli.url.join("api/v1/calls/audio-upload")?;
    let ctx = Arc::new(Ctx {
        client,
        healthz_url,
        upload_url,
        api_key: cli.api_key.clone(),
        run_id: run_id.clone(),
        audio_url,
        body: cli.body,
        fields: cli.fields.clone(),
    });

    preflight(&ctx, cli.phases).await?;

    eprintln!(
        "rop-loadgen: run {run_id}, target {}, audio at http://{audio_addr}/audio/call.wav, \
         {} workers, {}s warm-up + {}s per phase",
        cli.url, cli.concurrency, cli.warmup, cli.duration
    );
    let mut reports = Vec::new();
    if cli.phases != Phases::Upload {
        eprintln!("rop-loadgen: phase healthz …");
        reports.push(run_phase(&ctx, &cli, Target::Healthz).await);
    }
    if cli.phases != Phases::Healthz {
        eprintln!("rop-loadgen: phase upload …");
        reports.push(run_phase(&ctx, &cli, Target::Upload).await);
    }
    let probes_served = probes.load(Ordering::Relaxed);

    let healthz = reports.iter().find(|r| r.name == "healthz");
    let upload = reports.iter().find(|r| r.name == "upload");
    let ratio_pct = match (healthz, upload) {
        (Some(h), Some(u)) if h.rps > 0.0 => Some(u.rps / h.rps * 100.0),
        _ => None,
    };
    let upload_p99_ms = upload.map(|u| u.p99_ms);
    let ratio_ok = ratio_pct.map(|r| r >= cli.goal_ratio_pct);
    let p99_ok = upload_p99_ms.map(|p| p < cli.goal_p99_ms);
    let errors: u64 = reports.iter().map(|r| r.errors).sum();

    print_table(&reports);
    println!();
    if let Some(ratio) = ratio_pct {
        println!(
            "upload rps / healthz rps: {ratio:.1} %  (goal >= {:.0} %: {})",
            cli.goal_ratio_pct,
            verdict(ratio_ok)
        );
    }
    if let Some(p99) = upload_p99_ms {
        println!(
            "upload p99: {p99:.2} ms  (goal < {:.0} ms: {})",
            cli.goal_p99_ms,
            verdict(p99_ok)
        );
        if let Some(u) = upload {
            let answers: Vec<String> = u
                .answers
                .iter()
                .map(|(answer, n)| format!("{} {n}", answer.name()))
                .collect();
            println!("upload answers (measured): {}", answers.join(", "));
        }
        let accepted: u64 = upload.map(|u| u.accepted + u.warmup_accepted).unwrap_or(0);
        println!(
            "audio probes served by the loadgen: {probes_served} (uploads answered 200, warm-up and pre-flight included: {})",
            accepted + 1
        );
    }
    for report in &reports {
        for (what, sample) in &report.error_samples {
            println!("{} error sample [{what}]: {sample}", report.name);
        }
    }

    if let Some(path) = &cli.json {
        let document = json!({
            "run_id": run_id,
            "finished_at_unix": SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "target": cli.url.as_str(),
            "machine": cli.machine,
            "revision": cli.revision,
            "config": {
                "concurrency": cli.concurrency,
                "duration_s": cli.duration,
                "warmup_s": cli.warmup,
                "max_requests": cli.max_requests,
                "timeout_ms": cli.timeout_ms,
                "body": format!("{:?}", cli.body).to_lowercase(),
                "loadgen_threads": cli.threads,
            },
            "phases": reports.iter().map(PhaseReport::to_json).collect::<Vec<_>>(),
            "ratio_upload_to_healthz_pct": ratio_pct,
            "upload_p99_ms": upload_p99_ms,
            "probes_served": probes_served,
            "goals": {
                "ratio_pct_min": cli.goal_ratio_pct,
                "upload_p99_ms_max": cli.goal_p99_ms,
                "ratio_ok": ratio_ok,
                "p99_ok": p99_ok,
            },
            "errors": errors,
        });
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("JSON: {}", path.display());
    }

    let passed = errors == 0 && ratio_ok != Some(false) && p99_ok != Some(false);
    Ok(!cli.check || passed)
}

fn parse_field(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got `{text}`")),
    }
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "OK",
        Some(false) => "MISSED",
        None => "n/a",
    }
}

fn validate(cli: &Cli) -> anyhow::Result<()> {
    ensure!(
        matches!(cli.url.scheme(), "http" | "https"),
        "--url must be http:// or https://"
    );
    let host = cli.url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    ensure!(
        loopback,
        "--url must point at this machine (127.0.0.1, ::1 or localhost): this is a loopback benchmark"
    );
    ensure!(
        (1..=4096).contains(&cli.concurrency),
        "--concurrency must be 1..=4096"
    );
    ensure!(
        cli.duration.is_finite() && cli.duration > 0.0 && cli.duration <= 3600.0,
        "--duration must be in (0, 3600] seconds"
    );
    ensure!(
        cli.warmup.is_finite() && (0.0..=600.0).contains(&cli.warmup),
        "--warmup must be in [0, 600] seconds"
    );
    ensure!(cli.max_requests > 0, "--max-requests must be positive");
    ensure!(cli.timeout_ms > 0, "--timeout-ms must be positive");
    ensure!(!cli.api_key.trim().is_empty(), "--api-key is empty");
    Ok(())
}

/// Unique per run, so that repeated runs against one database never collide.
fn run_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{millis}-{}", std::process::id())
}

// ---------------------------------------------------------------- audio server

/// 1 s of 8 kHz mono 16-bit PCM silence behind a 44-byte header.
fn silent_wav(seconds: u32) -> Vec<u8> {
    let rate = 8000u32;
    let channels = 1u16;
    let bits = 16u16;
    let block_align = channels * bits / 8;
    let byte_rate = rate * u32::from(block_align);
    let data_len = byte_rate * seconds;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&byte_rate.to_le_bytes());
    out.extend_from_slice(&block_align.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.resize(44 + data_len as usize, 0);
    out
}

struct AudioState {
    wav: Bytes,
    hits: Arc<AtomicU64>,
}

async fn start_audio_server() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot bind the audio server")?;
    let addr = listener.local_addr()?;
    let hits = Arc::new(AtomicU64::new(0));
    let state = Arc::new(AudioState {
        wav: Bytes::from(silent_wav(1)),
        hits: hits.clone(),
    });
    let app = Router::new()
        .route("/audio/call.wav", get(serve_wav))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("rop-loadgen: audio server stopped: {error}");
        }
    });
    Ok((addr, hits))
}

enum RangeRequest {
    Full,
    Partial(usize, usize),
    Unsatisfiable,
}

/// One `bytes=` range, as RFC 9110 §14.1.2 allows; anything fancier gets
/// the whole file, which is also a correct answer.
fn parse_range(header: Option<&str>, total: usize) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if total == 0 {
        return RangeRequest::Unsatisfiable;
    }
    if first.is_empty() {
        // Suffix range: the last N bytes.
        return match last.parse::<usize>() {
            Ok(0) => RangeRequest::Unsatisfiable,
            Ok(n) => RangeRequest::Partial(total.saturating_sub(n), total - 1),
            Err(_) => RangeRequest::Full,
        };
    }
    let Ok(start) = first.parse::<usize>() else {
        return RangeRequest::Full;
    };
    if start >= total {
        return RangeRequest::Unsatisfiable;
    }
    let end = if last.is_empty() {
        total - 1
    } else {
        match last.parse::<usize>() {
            Ok(end) if end >= start => end.min(total - 1),
            _ => return RangeRequest::Full,
        }
    };
    RangeRequest::Partial(start, end)
}

async fn serve_wav(State(state): State<Arc<AudioState>>, headers: HeaderMap) -> Response {
    state.hits.fetch_add(1, Ordering::Relaxed);
    let total = state.wav.len();
    let range = headers.get(RANGE).and_then(|v| v.to_str().ok());
    match parse_range(range, total) {
        RangeRequest::Full => (
            StatusCode::OK,
            [(CONTENT_TYPE, "audio/wav"), (ACCEPT_RANGES, "bytes")],
            state.wav.clone(),
        )
            .into_response(),
        RangeRequest::Partial(start, end) => (
            StatusCode::PARTIAL_CONTENT,
            [
                (CONTENT_TYPE, "audio/wav".to_owned()),
                (ACCEPT_RANGES, "bytes".to_owned()),
                (CONTENT_RANGE, format!("bytes {start}-{end}/{total}")),
            ],
            state.wav.slice(start..=end),
        )
            .into_response(),
        RangeRequest::Unsatisfiable => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------- load phases

struct Ctx {
    client: reqwest::Client,
    healthz_url: Url,
    upload_url: Url,
    api_key: String,
    run_id: String,
    audio_url: String,
    body: BodyKind,
    fields: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Answer {
    Queued,
    Skipped,
    Other,
}

impl Answer {
    fn of(body: &[u8]) -> Self {
        if contains(body, br#""status":"queued""#) {
            Answer::Queued
        } else if contains(body, br#""status":"skipped""#) {
            Answer::Skipped
        } else {
            Answer::Other
        }
    }

    fn name(self) -> &'static str {
        match self {
            Answer::Queued => "queued",
            Answer::Skipped => "skipped",
            Answer::Other => "other",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Healthz,
    Upload,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Healthz => "healthz",
            Target::Upload => "upload",
        }
    }
}

enum Outcome {
    /// Status, the `status` a 200 upload answer named, and the body.
    Http(u16, Answer, Bytes),
    Transport(&'static str, String),
}

/// Form-encodes one value (`application/x-www-form-urlencoded`).
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn upload_body(ctx: &Ctx, call_id: &str, manager: u64) -> (&'static str, String) {
    let manager_id = format!("bench-m{manager}");
    match ctx.body {
        BodyKind::Form => {
            let mut body = format!(
                "call_id={}&manager_id={}&audio_url={}",
                form_encode(call_id),
                form_encode(&manager_id),
                form_encode(&ctx.audio_url)
            );
            for (name, value) in &ctx.fields {
                body.push('&');
                body.push_str(&form_encode(name));
                body.push('=');
                body.push_str(&form_encode(value));
            }
            ("application/x-www-form-urlencoded", body)
        }
        BodyKind::Json => {
            let mut object = serde_json::Map::new();
            object.insert("call_id".to_owned(), json!(call_id));
            object.insert("manager_id".to_owned(), json!(manager_id));
            object.insert("audio_url".to_owned(), json!(ctx.audio_url));
            for (name, value) in &ctx.fields {
                object.insert(name.clone(), json!(value));
            }
            (
                "application/json",
                serde_json::Value::Object(object).to_string(),
            )
        }
    }
}

async fn send(ctx: &Ctx, target: Target, call_id: &str, seq: u64) -> Outcome {
    let request = match target {
        Target::Healthz => ctx.client.get(ctx.healthz_url.clone()),
        Target::Upload => {
            let (content_type, body) = upload_body(ctx, call_id, seq % 20);
            ctx.client
                .post(ctx.upload_url.clone())
                .header("x-api-key", &ctx.api_key)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body)
        }
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return transport(&error),
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(body) => {
            let answer = if target == Target::Upload && status == 200 {
                Answer::of(&body)
            } else {
                Answer::Other
            };
            Outcome::Http(status, answer, body)
        }
        Err(error) => transport(&error),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn transport(error: &reqwest::Error) -> Outcome {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "transport"
    };
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Outcome::Transport(kind, text)
}

/// One healthz and one upload before the clock starts, so that a wrong key,
/// a forbidden loopback link or a down server is reported plainly.
async fn preflight(ctx: &Ctx, phases: Phases) -> anyhow::Result<()> {
    match send(ctx, Target::Healthz, "", 0).await {
        Outcome::Http(200, _, _) => {}
        Outcome::Http(status, _, body) => bail!(
            "GET {} answered {status}: {}",
            ctx.healthz_url,
            String::from_utf8_lossy(&body)
        ),
        Outcome::Transport(_, error) => bail!("GET {} failed: {error}", ctx.healthz_url),
    }
    if phases == Phases::Healthz {
        return Ok(());
    }
    let call_id = format!("bench-{}-preflight", ctx.run_id);
    match send(ctx, Target::Upload, &call_id, 0).await {
        Outcome::Http(200, Answer::Queued | Answer::Skipped, _) => Ok(()),
        Outcome::Http(status, _, body) => {
            let body = String::from_utf8_lossy(&body);
            let hint = if body.contains("forbidden_url") {
                " (start the server with ROP_FETCH_ALLOW_LOOPBACK=true)"
            } else if status == 401 {
                " (wrong --api-key / LOADGEN_API_KEY)"
            } else if status == 429 {
                " (start the server with ROP_RATE_LIMIT_PER_MINUTE=0)"
            } else {
                ""
            };
            bail!("pre-flight upload answered {status}{hint}: {body}")
        }
        Outcome::Transport(_, error) => bail!("pre-flight upload failed: {error}"),
    }
}

#[derive(Default)]
struct WorkerStats {
    /// Latency of every measured 200 answer, microseconds.
    latencies_us: Vec<u32>,
    warmup_accepted: u64,
    by_status: BTreeMap<u16, u64>,
    by_transport: BTreeMap<&'static str, u64>,
    /// Measured 200 upload answers by their `status` field.
    answers: BTreeMap<Answer, u64>,
    samples: BTreeMap<String, String>,
}

impl WorkerStats {
    fn merge(&mut self, other: WorkerStats) {
        self.latencies_us.extend(other.latencies_us);
        self.warmup_accepted += other.warmup_accepted;
        for (status, n) in other.by_status {
            *self.by_status.entry(status).or_default() += n;
        }
        for (kind, n) in other.by_transport {
            *self.by_transport.entry(kind).or_default() += n;
        }
        for (answer, n) in other.answers {
            *self.answers.entry(answer).or_default() += n;
        }
        for (key, sample) in other.samples {
            self.samples.entry(key).or_insert(sample);
        }
    }
}

async fn worker(
    ctx: Arc<Ctx>,
    target: Target,
    worker_id: usize,
    sent: Arc<AtomicU64>,
    max_requests: u64,
    measure_from: Instant,
    stop_at: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats {
        latencies_us: Vec::with_capacity(16 * 1024),
        ..WorkerStats::default()
    };
    let mut call_id = String::new();
    loop {
        let started = Instant::now();
        if started >= stop_at {
            break;
        }
        let seq = sent.fetch_add(1, Ordering::Relaxed);
        if seq >= max_requests {
            break;
        }
        if target == Target::Upload {
            call_id.clear();
            call_id.push_str(&format!("bench-{}-{worker_id}-{seq}", ctx.run_id));
        }
        let outcome = send(&ctx, target, &call_id, seq).await;
        let latency = started.elapsed();
        let measured = started >= measure_from;
        match outcome {
            Outcome::Http(200, answer, body) => {
                if !measured {
                    stats.warmup_accepted += 1;
                    continue;
                }
                let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
                stats.latencies_us.push(micros);
                if target == Target::Upload {
                    *stats.answers.entry(answer).or_default() += 1;
                    if answer == Answer::Other {
                        stats
                            .samples
                            .entry("200 without status".to_owned())
                            .or_insert_with(|| String::from_utf8_lossy(&body).into_owned());
                    }
                }
            }
            Outcome::Http(status, _, body) => {
                // Failures count whether or not the clock was running.
                *stats.by_status.entry(status).or_default() += 1;
                stats
                    .samples
                    .entry(format!("HTTP {status}"))
                    .or_insert_with(|| String::from_utf8_lossy(&body).chars().take(400).collect());
            }
            Outcome::Transport(kind, text) => {
                *stats.by_transport.entry(kind).or_default() += 1;
                stats.samples.entry(kind.to_owned()).or_insert(text);
                // Do not spin on a dead server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    stats
}

struct PhaseReport {
    name: &'static str,
    concurrency: usize,
    /// Measured 200 answers.
    accepted: u64,
    warmup_accepted: u64,
    measured_secs: f64,
    rps: f64,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    errors: u64,
    by_status: BTreeMap<u16, u64>,
    by_transport: BTreeMap<&'static str, u64>,
    answers: BTreeMap<Answer, u64>,
    error_samples: BTreeMap<String, String>,
    stopped_by_cap: bool,
}

impl PhaseReport {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "concurrency": self.concurrency,
            "requests": self.accepted,
            "warmup_requests": self.warmup_accepted,
            "measured_s": self.measured_secs,
            "rps": self.rps,
            "latency_ms": {
                "mean": self.mean_ms,
                "p50": self.p50_ms,
                "p90": self.p90_ms,
                "p99": self.p99_ms,
                "p999": self.p999_ms,
                "max": self.max_ms,
            },
            "errors": self.errors,
            "errors_by_status": self.by_status.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "errors_by_transport": self.by_transport.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "answers": self.answers.iter().map(|(k, v)| (k.name().to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "error_samples": self.error_samples,
            "stopped_by_max_requests": self.stopped_by_cap,
        })
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[index]) / 1000.0
}

async fn run_phase(ctx: &Arc<Ctx>, cli: &Cli, target: Target) -> PhaseReport {
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(cli.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(cli.duration);
    let handles: Vec<_> = (0..cli.concurrency)
        .map(|worker_id| {
            tokio::spawn(worker(
                ctx.clone(),
                target,
                worker_id,
                sent.clone(),
                cli.max_requests,
                measure_from,
                stop_at,
            ))
        })
        .collect();
    let mut stats = WorkerStats::default();
    for handle in handles {
        match handle.await {
            Ok(worker_stats) => stats.merge(worker_stats),
            Err(error) => {
                *stats.by_transport.entry("worker panic").or_default() += 1;
                stats
                    .samples
                    .entry("worker panic".to_owned())
                    .or_insert_with(|| error.to_string());
            }
        }
    }
    let finished = Instant::now();
    // In-flight requests started before `stop_at` finish after it and are
    // counted, so the window runs to the last answer.
    let measured_secs = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-6);

    let mut latencies = std::mem::take(&mut stats.latencies_us);
    latencies.sort_unstable();
    let accepted = latencies.len() as u64;
    let mean_ms = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&us| f64::from(us)).sum::<f64>() / latencies.len() as f64 / 1000.0
    };
    let errors = stats.by_status.values().sum::<u64>() + stats.by_transport.values().sum::<u64>();
    PhaseReport {
        name: target.name(),
        concurrency: cli.concurrency,
        accepted,
        warmup_accepted: stats.warmup_accepted,
        measured_secs,
        rps: accepted as f64 / measured_secs,
        mean_ms,
        p50_ms: percentile_ms(&latencies, 50.0),
        p90_ms: percentile_ms(&latencies, 90.0),
        p99_ms: percentile_ms(&latencies, 99.0),
        p999_ms: percentile_ms(&latencies, 99.9),
        max_ms: latencies.last().map_or(0.0, |&us| f64::from(us) / 1000.0),
        errors,
        by_status: stats.by_status,
        by_transport: stats.by_transport,
        answers: stats.answers,
        error_samples: stats.samples,
        stopped_by_cap: sent.load(Ordering::Relaxed) >= cli.max_requests,
    }
}

fn print_table(reports: &[PhaseReport]) {
    println!();
    println!(
        "{:<8} {:>5} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}  errors",
        "phase", "conc", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"
    );
    for r in reports {
        let mut errors = r.errors.to_string();
        let details: Vec<String> = r
            .by_status
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .chain(
                r.by_transport
                    .iter()
                    .map(|(kind, n)| format!("{kind}: {n}")),
            )
            .collect();
        if !details.is_empty() {
            errors.push_str(&format!(" ({})", details.join(", ")));
        }
        if r.stopped_by_cap {
            errors.push_str(" [stopped by --max-requests]");
        }
        println!(
            "{:<8} {:>5} {:>9} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}",
            r.name,
            r.concurrency,
            r.accepted,
            r.rps,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.mean_ms,
            errors
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_header_is_44_bytes_and_sized() {
        let wav = silent_wav(1);
        assert_eq!(wav.len(), 44 + 16_000);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[8..16], b"WAVEfmt ");
        assert_eq!(&wav[36..40], b"data");
        assert_eq!(u32::from_le_bytes(wav[40..44].try_into().unwrap()), 16_000);
    }

    #[test]
    fn ranges() {
        assert!(matches!(
            parse_range(Some("bytes=0-8191"), 16_044),
            RangeRequest::Partial(0, 8191)
        ));
        assert!(matches!(
            parse_range(Some("bytes=0-99999"), 100),
            RangeRequest::Partial(0, 99)
        ));
        assert!(matches!(
            parse_range(Some("bytes=10-"), 100),
            RangeRequest::Partial(10, 99)
        ));
        assert!(matches!(
            parse_range(Some("bytes=-10"), 100),
            RangeRequest::Partial(90, 99)
        ));
        assert!(matches!(
            parse_range(Some("bytes=100-"), 100),
            RangeRequest::Unsatisfiable
        ));
        assert!(matches!(parse_range(None, 100), RangeRequest::Full));
        assert!(matches!(
            parse_range(Some("bytes=0-1,5-6"), 100),
            RangeRequest::Full
        ));
    }

    #[test]
    fn percentiles_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 50.0), 50.0);
        assert_eq!(percentile_ms(&sorted, 99.0), 99.0);
        assert_eq!(percentile_ms(&sorted, 100.0), 100.0);
        assert_eq!(percentile_ms(&[], 99.0), 0.0);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(
            form_encode("http://127.0.0.1:1/a.wav"),
            "http%3A%2F%2F127.0.0.1%3A1%2Fa.wav"
        );
        assert_eq!(form_encode("a b"), "a+b");
    }
}
