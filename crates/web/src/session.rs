//! Logging in and out, server-side sessions, and the CSRF check.
//!
//! The browser holds a random token in an HttpOnly cookie; the database
//! holds its SHA-256 with the user and a CSRF token. Every request that
//! changes something (any method but GET and HEAD) must echo the CSRF token,
//! in the `_csrf` form field or the `X-CSRF-Token` header (htmx sends it from
//! the `hx-headers` of the page), and must not come from another origin.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use rand::RngCore;
use rop_domain::{NewSession, Session};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::Viewer;
use crate::error::PageError;
use crate::password;
use crate::WebState;

const SESSION_COOKIE: &str = "rop_session";
/// Double-submit token of the login form, which has no session yet.
const LOGIN_COOKIE: &str = "rop_login";
/// The largest form a signed-in page posts (checklists with many stages).
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// How many failed logins are allowed, per username and per address.
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub max_failures: u32,
    pub window: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Failed logins per key within the window. Kept in memory: a restart or a
/// second server process starts its own count, which still bounds guessing
/// to a few attempts a minute.
pub(crate) struct LoginAttempts {
    limits: LoginLimits,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginAttempts {
    pub(crate) fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn blocked(&self, keys: &[String]) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter().any(|key| {
            failures.get(key).is_some_and(|(count, since)| {
                *count >= self.limits.max_failures && since.elapsed() < self.limits.window
            })
        })
    }

    fn failed(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.limits.window;
        failures.retain(|_, (_, since)| since.elapsed() < window);
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert((0, Instant::now()));
            entry.0 += 1;
        }
    }

    fn succeeded(&self, username_key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(username_key);
    }
}

/// The peer's address, when the server was started with connection info.
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Whether the page was reached over HTTPS (directly configured, or behind
/// a proxy that says so), so cookies get `Secure`.
fn secure(state: &WebState, headers: &HeaderMap) -> bool {
    state
        .settings
        .public_url
        .as_ref()
        .is_some_and(|url| url.scheme() == "https")
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .expect("cookie characters are hex and ASCII")
}

/// A path of ours to return to after logging in; anything else goes home.
fn safe_next(next: &str) -> &str {
    let ours = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(char::is_control);
    if ours && !next.starts_with("/login") {
        next
    } else {
        "/"
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    next: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

#[derive(serde::Deserialize)]
pub(crate) struct NextQuery {
    #[serde(default)]
    next: String,
}

fn login_form(
    state: &WebState,
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let csrf = random_token();
    let html = LoginPage {
        csrf: &csrf,
        next: safe_next(next),
        username,
        error,
    }
    .render()?;
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &csrf, 3600, secure(state, headers)),
    );
    no_store(&mut response);
    Ok(response)
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(crate) async fn login_page(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<NextQuery>,
) -> Result<Response, PageError> {
    if current_session(&state, &headers).await?.is_some() {
        return Ok(Redirect::to(safe_next(&query.next)).into_response());
    }
    login_form(&state, &headers, StatusCode::OK, &query.next, "", None)
}

#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    next: String,
}

pub(crate) async fn login(
    State(state): State<Arc<WebState>>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let form: LoginForm = serde_urlencoded::from_bytes(&body)
        .map_err(|_| PageError::BadRequest("Форма входа пришла в неверном виде.".into()))?;
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !equal(expected, &form.csrf) {
        return login_form(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            &form.next,
            &form.username,
            Some("Форма устарела. Войдите ещё раз."),
        );
    }
    let username = form.username.trim().to_owned();
    let user_key = format!("user:{}", username.to_lowercase());
    let mut keys = vec![user_key.clone()];
    if let Some(ip) = ip {
        keys.push(format!("ip:{ip}"));
    }
    if state.logins.blocked(&keys) {
        tracing::warn!(%username, "login refused: too many failed attempts");
        return login_form(
            &state,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            &form.next,
            &username,
            Some("Слишком много неудачных попыток. Подождите 15 минут и попробуйте снова."),
        );
    }
    let credentials = state.store.user_credentials(&username).await?;
    let hash = credentials
        .as_ref()
        .map(|c| c.password_hash.clone())
        .unwrap_or_else(|| password::dummy_hash().to_owned());
    let password = form.password;
    let matches = tokio::task::spawn_blocking(move || password::verify(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(credentials) = credentials.filter(|_| matches) else {
        state.logins.failed(&keys);
        tracing::info!(%username, "login failed");
        return login_form(
            &state,
            &headers,
            StatusCode::UNAUTHORIZED,
            &form.next,
            &username,
            Some("Неверное имя пользователя или пароль."),
        );
    };
    state.logins.succeeded(&user_key);
    let token = random_token();
    let now = Utc::now();
    let lifetime = chrono::Duration::hours(i64::from(state.settings.session_hours.max(1)));
    state
        .store
        .create_session(&NewSession {
            token_hash: token_hash(&token),
            user_id: credentials.user.id,
            csrf_token: random_token(),
            created_at: now,
            expires_at: now + lifetime,
        })
        .await?;
    tracing::info!(username = %credentials.user.username, "logged in");
    let secure = secure(&state, &headers);
    let mut response = Redirect::to(safe_next(&form.next)).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &token,
            lifetime.num_seconds().unsigned_abs(),
            secure,
        ),
    );
    headers.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, secure));
    Ok(response)
}

pub(crate) async fn logout(
    State(state): State<Arc<WebState>>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(&token_hash(token)).await?;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, secure(&state, &headers)),
    );
    Ok(response)
}

async fn current_session(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<Option<Session>, PageError> {
    let Some(token) = cookie(headers, SESSION_COOKIE).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    Ok(state.store.session(&token_hash(token), Utc::now()).await?)
}

/// Whether the request comes from a page of ours: browsers send `Origin` on
/// cross-site posts, and it must name the host the request is for.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    url::Url::parse(origin).is_ok_and(|url| {
        let origin_host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return false,
        };
        origin_host.eq_ignore_ascii_case(host)
    })
}

/// Lets signed-in users through with their [`Viewer`]; sends others to the
/// login page; refuses state changes without the session's CSRF token.
pub(crate) async fn require_session(
    State(state): State<Arc<WebState>>,
    request: Request,
    next: Next,
) -> Response {
    match check_session(&state, request).await {
        Ok(request) => {
            let mut response = next.run(request).await;
            no_store(&mut response);
            response
        }
        Err(response) => response,
    }
}

async fn check_session(state: &WebState, request: Request) -> Result<Request, Response> {
    let session = current_session(state, request.headers())
        .await
        .map_err(IntoResponse::into_response)?;
    let Some(session) = session else {
        let target = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let login = format!(
            "/login?next={}",
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        );
        if request.headers().contains_key("hx-request") {
            // htmx follows HX-Redirect with a full page load.
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            if let Ok(value) = HeaderValue::from_str(&login) {
                response.headers_mut().insert("hx-redirect", value);
            }
            return Err(response);
        }
        if request.method() == Method::GET || request.method() == Method::HEAD {
            return Err(Redirect::to(&login).into_response());
        }
        return Err((StatusCode::UNAUTHORIZED, "Войдите заново.").into_response());
    };
    let request = if request.method() == Method::GET || request.method() == Method::HEAD {
        request
    } else {
        check_csrf(&session, request).await?
    };
    let viewer = Viewer::of(state, session)
        .await
        .map_err(IntoResponse::into_response)?;
    let mut request = request;
    request.extensions_mut().insert(viewer);
    Ok(request)
}

async fn check_csrf(session: &Session, request: Request) -> Result<Request, Response> {
    let refuse = |why: &str| {
        tracing::warn!(user = %session.user.username, why, "request refused: CSRF check");
        PageError::Forbidden.into_response()
    };
    if !same_origin(request.headers()) {
        return Err(refuse("foreign origin"));
    }
    if let Some(sent) = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
    {
        return if equal(sent, &session.csrf_token) {
            Ok(request)
        } else {
            Err(refuse("wrong header token"))
        };
    }
    // A plain form: the token is a field of the body, which the handler
    // reads again afterwards.
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "Форма слишком большая.").into_response())?;
    let sent = url::form_urlencoded::parse(&bytes)
        .find(|(key, _)| key == "_csrf")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if sent.is_empty() || !equal(&sent, &session.csrf_token) {
        return Err(refuse("missing or wrong form token"));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_paths_are_returned_to() {
        assert_eq!(safe_next("/calls?page=2"), "/calls?page=2");
        for hostile in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "",
            "/login",
        ] {
            assert_eq!(safe_next(hostile), "/", "{hostile}");
        }
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x_rop_session=bad; rop_session=good"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("good"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), None);
    }

    #[test]
    fn foreign_origins_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&headers));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
    }

    #[test]
    fn failures_block_until_the_window_passes() {
        let attempts = LoginAttempts::new(LoginLimits {
            max_failures: 2,
            window: Duration::from_secs(60),
        });
        let keys = vec!["user:a".to_owned()];
        assert!(!attempts.blocked(&keys));
        attempts.failed(&keys);
        assert!(!attempts.blocked(&keys));
        attempts.failed(&keys);
        assert!(attempts.blocked(&keys));
        assert!(!attempts.blocked(&["user:b".to_owned()]));
        attempts.succeeded("user:a");
        assert!(!attempts.blocked(&keys));
    }
}
