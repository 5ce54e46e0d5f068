//! The Zadarma client against a local double that follows integrations.md
//! §1: it recomputes every request's signature from the path and the
//! parameters it received, answers 401 in Zadarma's error shape when they
//! differ, and serves the methods we use with loosely typed bodies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rop_fetch::{ClientConfig, GuardedClient, UrlGuard};
use rop_integrations::zadarma::{authorization, Credentials, ZadarmaClient, ZadarmaError};
use serde_json::json;

const KEY: &str = "e30e16c201343883f77e";
const SECRET: &str = "dbf5606ea4c1f2234201";

#[derive(Default)]
struct Double {
    /// Every accepted request: path and parameters.
    seen: Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "message": message})),
    )
        .into_response()
}

async fn handle(
    State(double): State<Arc<Double>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let borrowed: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected = authorization(KEY, SECRET, &path, &borrowed);
    let sent = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if sent != expected {
        return error(StatusCode::UNAUTHORIZED, "Not authorized");
    }
    let params: BTreeMap<String, String> = params.into_iter().collect();
    double
        .seen
        .lock()
        .unwrap()
        .push((path.clone(), params.clone()));
    let body = match path.as_str() {
        // Numbers as strings and back, as the real service mixes them.
        "/v1/info/balance/" => json!({"status": "success", "balance": "10.34", "currency": "USD"}),
        "/v1/pbx/internal/" => {
            json!({"status": "success", "pbx_id": 1234, "numbers": [100, "101", 102]})
        }
        "/v1/pbx/record/request/" => match params.get("call_id") {
            Some(id) if id == "1714564800.123456" => json!({
                "status": "success",
                "link": format!("https://api.zadarma.com/v1/pbx/record/download/tok/{id}.mp3"),
                "lifetime_till": "2024-05-01 12:30:00"
            }),
            _ => return error(StatusCode::BAD_REQUEST, "Record not found"),
        },
        "/v1/request/callback/" => json!({
            "status": "success",
            "from": params.get("from"),
            "to": params.get("to"),
            "time": 1435573082
        }),
        "/v1/webrtc/get_key/" => {
            json!({"status": "success", "key": format!("key-for-{}", params["sip"])})
        }
        "/v1/statistics/pbx/" => return error(StatusCode::TOO_MANY_REQUESTS, "Too many requests"),
        _ => return error(StatusCode::NOT_FOUND, "Method not found"),
    };
    axum::Json(body).into_response()
}

async fn start() -> (SocketAddr, Arc<Double>) {
    let double = Arc::new(Double::default());
    let app = Router::new().fallback(handle).with_state(double.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, double)
}

fn client(addr: SocketAddr, secret: &str) -> ZadarmaClient {
    let http = GuardedClient::new(&ClientConfig {
        guard: UrlGuard {
            allow_private: false,
            allow_loopback: true,
        },
        ..ClientConfig::default()
    });
    ZadarmaClient::new(
        Credentials {
            base_url: format!("http://{addr}").parse().unwrap(),
            key: KEY.into(),
            secret: secret.into(),
        },
        http,
    )
}

#[tokio::test]
async fn signed_requests_are_accepted_and_loose_types_read() {
    let (addr, double) = start().await;
    let zadarma = client(addr, SECRET);
    let balance = zadarma.balance().await.unwrap();
    assert_eq!((balance.balance, balance.currency.as_str()), (10.34, "USD"));
    let pbx = zadarma.pbx().await.unwrap();
    assert_eq!(pbx.pbx_id, "1234");
    assert_eq!(pbx.numbers, vec!["100", "101", "102"]);
    let link = zadarma.record_link("1714564800.123456").await.unwrap();
    assert!(link.ends_with("/1714564800.123456.mp3"));
    zadarma.callback("100", "+79001234567").await.unwrap();
    assert_eq!(zadarma.webrtc_key("100").await.unwrap(), "key-for-100");

    let seen = double.seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    // Every request carried format=json, signed with the rest.
    assert!(seen
        .iter()
        .all(|(_, params)| params.get("format").map(String::as_str) == Some("json")));
    let (path, params) = &seen[3];
    assert_eq!(path, "/v1/request/callback/");
    assert_eq!(
        params["to"], "+79001234567",
        "a plus sign survives the encoding"
    );
}

#[tokio::test]
async fn errors_come_back_in_words() {
    let (addr, _) = start().await;
    let wrong = client(addr, "not the secret");
    assert!(matches!(
        wrong.balance().await,
        Err(ZadarmaError::Unauthorized(_))
    ));
    let zadarma = client(addr, SECRET);
    match zadarma.record_link("no-such-call").await {
        Err(ZadarmaError::Api(message)) => assert_eq!(message, "Record not found"),
        other => panic!("{other:?}"),
    }
    // Nothing listens here.
    let gone = client("127.0.0.1:9".parse().unwrap(), SECRET);
    assert!(matches!(
        gone.balance().await,
        Err(ZadarmaError::Unavailable(_))
    ));
}
