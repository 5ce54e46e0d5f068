//! The download step against a loopback server standing in for a CRM's file
//! storage. Nothing here leaves 127.0.0.1: the one link that points elsewhere
//! (cloud metadata) must be refused by the guard before any connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, StreamExt};
use rop_fetch::{
    download_to_file, AudioFormat, ClientConfig, DownloadError, DownloadLimits, Downloaded,
    GuardedClient, UrlGuard,
};
use tokio::io::AsyncWriteExt;
use url::Url;

/// A PCM WAV: 8 kHz mono 16-bit, `seconds` long.
fn wav(seconds: u32) -> Vec<u8> {
    let rate = 8000u32;
    let data_len = rate * 2 * seconds;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend((0..data_len / 2).flat_map(|i| (((i % 40) as i16 - 20) * 300).to_le_bytes()));
    out
}

/// A body without `Content-Length`: `pieces` chunks, each `size` bytes, the
/// first starting with a WAV header.
fn chunked_wav(pieces: usize, size: usize) -> Body {
    let mut head = wav(0);
    head.resize(size, 0);
    let rest = std::iter::repeat_n(vec![1u8; size], pieces - 1);
    let chunks = std::iter::once(head).chain(rest);
    Body::from_stream(stream::iter(chunks.map(Ok::<_, Infallible>)))
}

struct Server {
    addr: SocketAddr,
    /// Answers with headers and a first piece of a longer body, then closes.
    cut_addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Server {
    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn start() -> Server {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/call.wav",
            get(|| async { ([(header::CONTENT_TYPE, "audio/wav")], wav(2)) }),
        )
        .route(
            "/chunked.wav",
            get(|| async { ([(header::CONTENT_TYPE, "audio/wav")], chunked_wav(40, 1000)) }),
        )
        .route("/endless.wav", get(|| async { chunked_wav(1024, 8192) }))
        .route(
            "/stalled.wav",
            get(|| async {
                let first = stream::once(async { Ok::<_, Infallible>(wav(0)) });
                Body::from_stream(first.chain(stream::pending()))
            }),
        )
        .route(
            "/page.html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    "<!DOCTYPE html><html><body>Файл не найден</body></html>",
                )
            }),
        )
        .route("/empty.wav", get(|| async { StatusCode::OK }))
        .route("/missing.wav", get(|| async { StatusCode::NOT_FOUND }))
        .route("/forbidden.wav", get(|| async { StatusCode::FORBIDDEN }))
        .route(
            "/error.wav",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/unavailable.wav",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/timeout.wav",
            get(|| async { StatusCode::REQUEST_TIMEOUT }),
        )
        .route("/busy.wav", get(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .route(
            "/to-metadata",
            get(|| async {
                Redirect::temporary("http://169.254.169.254/latest/meta-data/").into_response()
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            hits.clone(),
            |State(hits): State<Arc<AtomicUsize>>,
             request: axum::extract::Request,
             next: axum::middleware::Next| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let response: Response = next.run(request).await;
                response
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });

    let cut = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cut_addr = cut.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = cut.accept().await {
            let mut request = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
            let mut answer =
                b"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n"
                    .to_vec();
            answer.extend_from_slice(&wav(1)[..10_000]);
            let _ = socket.write_all(&answer).await;
            let _ = socket.shutdown().await;
        }
    });
    Server {
        addr,
        cut_addr,
        hits,
    }
}

fn loopback_client() -> GuardedClient {
    GuardedClient::new(&ClientConfig {
        guard: UrlGuard {
            allow_loopback: true,
            ..UrlGuard::default()
        },
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })
}

const LIMITS: DownloadLimits = DownloadLimits {
    max_bytes: 1 << 20,
    total_timeout: Duration::from_secs(10),
};

/// A destination no other test uses.
fn dest(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!(
        "rop-fetch-download-{}-{n}-{name}",
        std::process::id()
    ))
}

async fn download(
    client: &GuardedClient,
    url: &Url,
    limits: DownloadLimits,
) -> (Result<Downloaded, DownloadError>, PathBuf) {
    let path = dest(url.path().trim_start_matches('/'));
    let outcome = download_to_file(client, url, &path, limits).await;
    (outcome, path)
}

#[track_caller]
fn assert_permanent(outcome: &Result<Downloaded, DownloadError>, expected: &str) -> String {
    match outcome {
        Err(DownloadError::Permanent { code, message }) if *code == expected => message.clone(),
        other => panic!("expected Permanent {expected}, got {other:?}"),
    }
}

#[track_caller]
fn assert_no_file(path: &std::path::Path) {
    assert!(!path.exists(), "{} was left behind", path.display());
}

#[tokio::test]
async fn downloads_a_wav_whole_into_a_truncated_file() {
    let server = start().await;
    let client = loopback_client();
    for path in ["/call.wav", "/chunked.wav"] {
        let url = server.url(path);
        let dest = dest("call.wav");
        // Left over from an earlier, longer attempt: must not survive.
        std::fs::write(&dest, vec![7u8; 200_000]).unwrap();
        let downloaded = download_to_file(&client, &url, &dest, LIMITS)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
        let written = std::fs::read(&dest).unwrap();
        std::fs::remove_file(&dest).unwrap();
        let expected = if path == "/call.wav" {
            wav(2)
        } else {
            let mut body = wav(0);
            body.resize(1000, 0);
            body.extend(std::iter::repeat_n(1u8, 39 * 1000));
            body
        };
        assert_eq!(downloaded.bytes, expected.len() as u64, "{path}");
        assert_eq!(downloaded.format, AudioFormat::Wav, "{path}");
        assert_eq!(
            downloaded.content_type.as_deref(),
            Some("audio/wav"),
            "{path}"
        );
        assert!(
            written == expected,
            "{path}: the file differs from the body"
        );
    }
}

#[tokio::test]
async fn a_missing_file_is_unreachable() {
    let server = start().await;
    let client = loopback_client();
    for (path, status) in [("/missing.wav", "404"), ("/forbidden.wav", "403")] {
        let (outcome, dest) = download(&client, &server.url(path), LIMITS).await;
        let message = assert_permanent(&outcome, "unreachable");
        assert!(message.contains(status), "{message}");
        assert_no_file(&dest);
    }
}

#[tokio::test]
async fn server_trouble_is_transient() {
    let server = start().await;
    let client = loopback_client();
    for path in [
        "/error.wav",
        "/unavailable.wav",
        "/timeout.wav",
        "/busy.wav",
    ] {
        let (outcome, dest) = download(&client, &server.url(path), LIMITS).await;
        assert!(
            matches!(outcome, Err(DownloadError::Transient(_))),
            "{path}: {outcome:?}"
        );
        assert_no_file(&dest);
    }
}

#[tokio::test]
async fn an_html_page_is_not_audio_and_leaves_no_file() {
    let server = start().await;
    let (outcome, dest) = download(&loopback_client(), &server.url("/page.html"), LIMITS).await;
    let message = assert_permanent(&outcome, "not_audio");
    assert!(message.contains("HTML page"), "{message}");
    assert_no_file(&dest);
}

#[tokio::test]
async fn an_empty_body_is_refused() {
    let server = start().await;
    let (outcome, dest) = download(&loopback_client(), &server.url("/empty.wav"), LIMITS).await;
    assert_permanent(&outcome, "empty");
    assert_no_file(&dest);
}

#[tokio::test]
async fn a_stream_beyond_the_limit_is_cut_off() {
    let server = start().await;
    let limits = DownloadLimits {
        max_bytes: 64 * 1024,
        ..LIMITS
    };
    // 8 MiB without Content-Length: only the bytes that arrive tell.
    let (outcome, dest) = download(&loopback_client(), &server.url("/endless.wav"), limits).await;
    let message = assert_permanent(&outcome, "too_large");
    assert!(message.contains("arrived"), "{message}");
    assert_no_file(&dest);
}

#[tokio::test]
async fn a_declared_length_beyond_the_limit_fails_before_reading() {
    let server = start().await;
    let limits = DownloadLimits {
        max_bytes: 1000,
        ..LIMITS
    };
    let (outcome, dest) = download(&loopback_client(), &server.url("/call.wav"), limits).await;
    let message = assert_permanent(&outcome, "too_large");
    assert!(message.contains(&wav(2).len().to_string()), "{message}");
    assert_no_file(&dest);
}

#[tokio::test]
async fn a_stalled_source_runs_into_the_deadline() {
    let server = start().await;
    let limits = DownloadLimits {
        total_timeout: Duration::from_millis(300),
        ..LIMITS
    };
    let started = Instant::now();
    // The client's read timeout (10 s) is far off: the deadline must end it.
    let (outcome, dest) = download(&loopback_client(), &server.url("/stalled.wav"), limits).await;
    assert!(
        matches!(&outcome, Err(DownloadError::Transient(m)) if m.contains("within 300 ms")),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_no_file(&dest);
}

#[tokio::test]
async fn a_body_cut_off_midway_is_transient() {
    let server = start().await;
    let url = Url::parse(&format!("http://{}/call.wav", server.cut_addr)).unwrap();
    let (outcome, dest) = download(&loopback_client(), &url, LIMITS).await;
    assert!(
        matches!(outcome, Err(DownloadError::Transient(_))),
        "{outcome:?}"
    );
    assert_no_file(&dest);
}

#[tokio::test]
async fn an_unwritable_destination_is_transient() {
    let server = start().await;
    let dest = dest("no-such-dir").join("call.wav");
    let outcome =
        download_to_file(&loopback_client(), &server.url("/call.wav"), &dest, LIMITS).await;
    assert!(
        matches!(outcome, Err(DownloadError::Transient(_))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_redirect_to_cloud_metadata_is_refused_before_connecting() {
    let server = start().await;
    let started = Instant::now();
    let (outcome, dest) = download(&loopback_client(), &server.url("/to-metadata"), LIMITS).await;
    let message = assert_permanent(&outcome, "forbidden_url");
    // The guard's own words: it judged the address, which it does before any
    // connection (a connection attempt would fail differently, or time out).
    assert!(
        message.contains("169.254.169.254") && message.contains("link-local"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.hits(), 1, "only the redirecting request reached us");
    assert_no_file(&dest);
}

#[tokio::test]
async fn loopback_is_refused_unless_allowed() {
    let server = start().await;
    let strict = GuardedClient::new(&ClientConfig::default());
    // By name, so that the guard's resolver is asked.
    let url = Url::parse(&format!("http://localhost:{}/call.wav", server.addr.port())).unwrap();
    let (outcome, dest) = download(&strict, &url, LIMITS).await;
    let message = assert_permanent(&outcome, "forbidden_url");
    assert!(message.contains("loopback"), "{message}");
    assert_eq!(server.hits(), 0, "the server must not have been asked");
    assert_no_file(&dest);

    // As a literal address reqwest does not resolve: refused all the same.
    let url = Url::parse(&format!("http://127.0.0.1:{}/call.wav", server.addr.port())).unwrap();
    let (outcome, dest) = download(&strict, &url, LIMITS).await;
    let message = assert_permanent(&outcome, "forbidden_url");
    assert!(message.contains("loopback"), "{message}");
    assert_eq!(server.hits(), 0, "the server must not have been asked");
    assert_no_file(&dest);
}
