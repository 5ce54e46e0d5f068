//! A loopback file server standing in for a CRM's file storage: real audio
//! headers, pages that are not audio, error statuses, redirects, and a socket
//! that accepts connections but never answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;

pub struct FileServer {
    pub addr: SocketAddr,
    /// A listener that accepts and then says nothing.
    pub silent_addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl FileServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The 44-byte header of a 16-bit PCM WAV whose data chunk is `data_len` bytes.
pub fn wav_header(rate: u32, channels: u16, data_len: u32) -> Vec<u8> {
    let frame = 2 * u32::from(channels);
    let mut out = Vec::with_capacity(44);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * frame).to_le_bytes());
    out.extend_from_slice(&(frame as u16).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

/// A PCM WAV: 8 kHz mono 16-bit, `seconds` long (header declares it).
pub fn wav(seconds: u32, with_samples: bool) -> Vec<u8> {
    let rate = 8000u32;
    let data_len = rate * 2 * seconds;
    let mut out = wav_header(rate, 1, data_len);
    if with_samples {
        out.extend((0..data_len / 2).flat_map(|i| (((i % 40) as i16 - 20) * 300).to_le_bytes()));
    }
    out
}

/// MPEG-1 layer III frames at 128 kbit/s, 44.1 kHz, after an ID3 tag.
pub fn mp3() -> Vec<u8> {
    let mut out = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    for _ in 0..20 {
        out.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        out.extend(std::iter::repeat_n(0u8, 413));
    }
    out
}

pub fn ogg() -> Vec<u8> {
    let mut out = b"OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00".to_vec();
    out.extend_from_slice(b"\x01vorbis");
    out.extend(std::iter::repeat_n(0u8, 200));
    out
}

pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01";

/// Serves `body` honouring `Range: bytes=0-N` with 206 like real file servers.
fn ranged(headers: &HeaderMap, body: Vec<u8>, content_type: &'static str) -> Response {
    let total = body.len();
    let end = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes=0-"))
        .and_then(|v| v.parse::<usize>().ok());
    match end {
        Some(end) if total > 0 => {
            let last = end.min(total - 1);
            (
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (header::CONTENT_RANGE, format!("bytes 0-{last}/{total}")),
                ],
                body[..=last].to_vec(),
            )
                .into_response()
        }
        _ => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct Target {
    to: String,
}

pub async fn start() -> FileServer {
    let hits = Arc::new(AtomicUsize::new(0));
    let once_served = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            // Audio for the upload's probe, gone by the time it is downloaded.
            "/once.wav",
            get(move |h: HeaderMap| async move {
                if once_served.fetch_add(1, Ordering::SeqCst) == 0 {
                    ranged(&h, wav(2, true), "audio/wav")
                } else {
                    StatusCode::GONE.into_response()
                }
            }),
        )
        .route(
            // The head at once (so the probe passes), the rest over ~4 s.
            "/slow.wav",
            get(|h: HeaderMap| async move {
                if h.contains_key(header::RANGE) {
                    return ranged(&h, wav(2, true), "audio/wav");
                }
                let whole = wav(2, true);
                let chunks: Vec<Vec<u8>> = whole.chunks(4096).map(<[u8]>::to_vec).collect();
                let stream = futures_util::stream::iter(chunks.into_iter().enumerate()).then(
                    |(n, chunk)| async move {
                        if n > 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        }
                        Ok::<_, std::io::Error>(chunk)
                    },
                );
                (
                    [(header::CONTENT_TYPE, "audio/wav")],
                    axum::body::Body::from_stream(stream),
                )
                    .into_response()
            }),
        )
        .route(
            // Real recordings prepared by scripts/ensure-test-audio.sh.
            "/speech/{name}",
            get(
                |h: HeaderMap, axum::extract::Path(name): axum::extract::Path<String>| async move {
                    let kind = match name.rsplit('.').next() {
                        Some("wav") => "audio/wav",
                        Some("mp3") => "audio/mpeg",
                        _ => "audio/ogg",
                    };
                    match std::fs::read(crate::speech::test_data_dir().join("e2e").join(&name)) {
                        Ok(bytes) => ranged(&h, bytes, kind),
                        Err(_) => StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .route(
            "/call.wav",
            get(|h: HeaderMap| async move { ranged(&h, wav(2, true), "audio/wav") }),
        )
        .route(
            "/call.mp3",
            get(|h: HeaderMap| async move { ranged(&h, mp3(), "audio/mpeg") }),
        )
        .route(
            "/call.ogg",
            get(|h: HeaderMap| async move { ranged(&h, ogg(), "audio/ogg") }),
        )
        .route(
            "/three-hours.wav",
            get(|h: HeaderMap| async move { ranged(&h, wav(3 * 3600, false), "audio/wav") }),
        )
        .route(
            "/huge.mp3",
            get(|| async {
                // Claims 500 MB; sends only the head.
                let head = mp3();
                (
                    StatusCode::PARTIAL_CONTENT,
                    [(
                        header::CONTENT_RANGE,
                        format!("bytes 0-{}/{}", head.len() - 1, 500_000_000u64),
                    )],
                    head,
                )
            }),
        )
        .route(
            "/page.html",
            get(|h: HeaderMap| async move {
                ranged(
                    &h,
                    b"<!DOCTYPE html><html><body>404</body></html>".to_vec(),
                    "text/html",
                )
            }),
        )
        .route(
            "/data.json",
            get(|h: HeaderMap| async move {
                ranged(
                    &h,
                    br#"{"error":"no such file"}"#.to_vec(),
                    "application/json",
                )
            }),
        )
        .route(
            "/image.png",
            get(|h: HeaderMap| async move { ranged(&h, PNG.to_vec(), "image/png") }),
        )
        .route(
            "/empty.mp3",
            get(|| async { StatusCode::RANGE_NOT_SATISFIABLE }),
        )
        .route("/missing.mp3", get(|| async { StatusCode::NOT_FOUND }))
        .route("/forbidden.mp3", get(|| async { StatusCode::FORBIDDEN }))
        .route("/gone.mp3", get(|| async { StatusCode::GONE }))
        .route(
            "/error.mp3",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/unavailable.mp3",
            get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route(
            "/redirect",
            get(|Query(t): Query<Target>| async move { Redirect::temporary(&t.to) }),
        )
        .layer(axum::middleware::from_fn_with_state(
            hits.clone(),
            |State(hits): State<Arc<AtomicUsize>>,
             request: axum::extract::Request,
             next: axum::middleware::Next| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                next.run(request).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    FileServer {
        addr,
        silent_addr,
        hits,
    }
}
