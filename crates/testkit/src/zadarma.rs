//! A Zadarma double (integrations.md §1, §5): the API methods we call,
//! each request's `Authorization` recomputed from the path and parameters it
//! received (401 in Zadarma's error shape when it differs), 429 after three
//! statistics requests a minute, recording links that download without
//! auth, and the PBX side of notifications: the `zd_echo` URL check and
//! signed form posts (the hex form of the signature).
//!
//! The signing here is written again from the spec rather than borrowed
//! from the product, so a mistake in one is caught by the other.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use serde_json::json;
use sha1::Sha1;

/// The key and secret of the public Go test vector.
pub const KEY: &str = "e30e16c201343883f77e";
pub const SECRET: &str = "dbf5606ea4c1f2234201";

#[derive(Default)]
struct Shared {
    pbx_id: String,
    numbers: Vec<String>,
    /// `call_id_with_rec` → the recording's bytes.
    recordings: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Signed requests accepted: path and parameters.
    seen: Mutex<Vec<(String, BTreeMap<String, String>)>>,
    downloads: Mutex<usize>,
    statistics_calls: Mutex<Vec<Instant>>,
}

pub struct ZadarmaDouble {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl ZadarmaDouble {
    /// Starts on a free loopback port with PBX 1234 and extensions 100–102.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            pbx_id: "1234".into(),
            numbers: vec!["100".into(), "101".into(), "102".into()],
            ..Shared::default()
        });
        let app = Router::new()
            .route("/v1/pbx/record/download/{token}/{file}", get(download))
            .fallback(api)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    /// What to put in the Url setting.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_recording(&self, call_id_with_rec: &str, audio: Vec<u8>) {
        self.shared
            .recordings
            .lock()
            .unwrap()
            .insert(call_id_with_rec.to_owned(), audio);
    }

    /// Signed requests accepted so far, path and parameters.
    pub fn requests(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn downloads(&self) -> usize {
        *self.shared.downloads.lock().unwrap()
    }

    /// What Zadarma does when the notification URL is saved: a GET with
    /// `zd_echo`, expecting the value back. Returns whether it came back.
    pub async fn check_url(&self, url: &str) -> bool {
        let echo = format!("{:x}", Instant::now().elapsed().as_nanos() ^ 0x5eed_1234);
        let response = reqwest::Client::new()
            .get(format!("{url}?zd_echo={echo}"))
            .send()
            .await
            .unwrap();
        response.status() == 200 && response.text().await.unwrap() == echo
    }

    /// Posts a notification as Zadarma does: a form with the `Signature`
    /// header over the event's signed fields.
    pub async fn notify(&self, url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let signature = notification_signature(SECRET, fields);
        reqwest::Client::new()
            .post(url)
            .header("Signature", signature)
            .form(fields)
            .send()
            .await
            .unwrap()
    }
}

/// `base64(hex(HMAC-SHA1(secret, signed fields concatenated)))`.
pub fn notification_signature(secret: &str, fields: &[(&str, &str)]) -> String {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| *v)
    };
    let signed: &[&str] = match field("event") {
        "NOTIFY_ANSWER" => &["caller_id", "destination", "call_start"],
        "NOTIFY_OUT_START" | "NOTIFY_OUT_END" => &["internal", "destination", "call_start"],
        "NOTIFY_RECORD" => &["pbx_call_id", "call_id_with_rec"],
        _ => &["caller_id", "called_did", "call_start"],
    };
    let text: String = signed.iter().map(|name| field(name)).collect();
    base64_hex_hmac(secret, &text)
}

fn base64_hex_hmac(secret: &str, text: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    base64::engine::general_purpose::STANDARD.encode(hex)
}

/// PHP `http_build_query` with RFC 1738 encoding over sorted keys.
fn php_query(params: &BTreeMap<String, String>) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn expected_authorization(path: &str, params: &BTreeMap<String, String>) -> String {
    let query = php_query(params);
    let md5: String = Md5::digest(query.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{KEY}:{}",
        base64_hex_hmac(SECRET, &format!("{path}{query}{md5}"))
    )
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "message": message})),
    )
        .into_response()
}

async fn api(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let params: BTreeMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let sent = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if sent != expected_authorization(&path, &params) {
        return error(StatusCode::UNAUTHORIZED, "Not authorized");
    }
    shared
        .seen
        .lock()
        .unwrap()
        .push((path.clone(), params.clone()));
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    // Numbers as strings and back, as the real service mixes them.
    let body = match path.as_str() {
        "/v1/info/balance/" => json!({"status": "success", "balance": "10.34", "currency": "USD"}),
        "/v1/pbx/internal/" => {
            let numbers: Vec<serde_json::Value> = shared
                .numbers
                .iter()
                .map(|n| n.parse::<u64>().map_or_else(|_| json!(n), |n| json!(n)))
                .collect();
            json!({"status": "success", "pbx_id": shared.pbx_id.parse::<u64>().unwrap_or(0), "numbers": numbers})
        }
        "/v1/pbx/record/request/" => {
            let id = params.get("call_id").cloned().unwrap_or_default();
            if !shared.recordings.lock().unwrap().contains_key(&id) {
                return error(StatusCode::BAD_REQUEST, "Record not found");
            }
            json!({
                "status": "success",
                "link": format!("http://{host}/v1/pbx/record/download/tok{}/{id}.mp3", params.len()),
                "lifetime_till": "2024-05-01 12:30:00"
            })
        }
        "/v1/request/callback/" => {
            if !params.contains_key("from") || !params.contains_key("to") {
                return error(StatusCode::BAD_REQUEST, "Wrong parameters");
            }
            json!({"status": "success", "from": params["from"], "to": params["to"], "time": 1435573082})
        }
        "/v1/webrtc/get_key/" => match params.get("sip") {
            Some(sip) if shared.numbers.contains(sip) => {
                json!({"status": "success", "key": format!("webrtc-key-{sip}")})
            }
            _ => return error(StatusCode::BAD_REQUEST, "Wrong sip"),
        },
        "/v1/statistics/" | "/v1/statistics/pbx/" => {
            let mut calls = shared.statistics_calls.lock().unwrap();
            calls.retain(|t| t.elapsed() < Duration::from_secs(60));
            if calls.len() >= 3 {
                return error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            }
            calls.push(Instant::now());
            json!({"status": "success", "stats": []})
        }
        _ => return error(StatusCode::NOT_FOUND, "Method not found"),
    };
    axum::Json(body).into_response()
}

async fn download(
    State(shared): State<Arc<Shared>>,
    Path((_token, file)): Path<(String, String)>,
) -> Response {
    let id = file.trim_end_matches(".mp3");
    match shared.recordings.lock().unwrap().get(id) {
        Some(audio) => {
            *shared.downloads.lock().unwrap() += 1;
            ([("content-type", "audio/mpeg")], audio.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_vectors_hold() {
        let params = BTreeMap::from([
            ("start".to_owned(), "2018-09-01 08:00:00".to_owned()),
            ("end".to_owned(), "2018-10-04 08:00:00".to_owned()),
        ]);
        assert_eq!(
            expected_authorization("/v1/statistics/", &params),
            "e30e16c201343883f77e:ZmI3YzA1MmJkNzQyYmE1YzI3OWY3OTRjNTlmZDFkMTE2MmI4YmI0Yg=="
        );
        assert_eq!(
            notification_signature(
                SECRET,
                &[
                    ("event", "NOTIFY_START"),
                    ("caller_id", "+79001234567"),
                    ("called_did", "+74951234567"),
                    ("call_start", "2024-05-01 12:00:00"),
                ]
            ),
            "NmNkMGRmMjBlNjI2MzliZDRmNjg1YTk3YjE0MDUxYjQ2ZDEyNzkzZQ=="
        );
    }
}
