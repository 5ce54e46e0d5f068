//! An amoCRM (Kommo) API v4 double (integrations.md §2, §5): the OAuth2
//! token endpoint with single-use codes and refresh tokens, Bearer checks
//! on every `/api/v4` request, a sliding-window limit of 7 requests a second
//! answered with a non-JSON 429, HAL lists paged with `_links.next` and a
//! bare 204 for an empty page, problem+json errors with the
//! `validation-errors` shape the SDK reads, call notes filtered the way the
//! SDK's `NotesFilter` sends them, and write-back (text notes, lead fields).
//!
//! Recordings are served from `/records/{name}` without auth, as the links
//! PBX integrations put in call notes usually are.
//!
//! Everything is written again from the spec rather than borrowed from the
//! product, so a mistake in one is caught by the other.

// Helpers return a finished error response as `Err`; its size is no concern
// in a test double.
#![allow(clippy::result_large_err)]

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

/// The integration's ID, as amoCRM shows it in the account settings.
pub const CLIENT_ID: &str = "5f2c1a9e-7b3d-4e8a-9c61-2d4f8b0e3a17";
/// The integration's secret key.
pub const CLIENT_SECRET: &str = "jH3kQ9vN2xR7tL5mW8pZ4cY6bF1dG0sA3eU9iO7nK2qT5rV8";

/// The account every object belongs to.
const ACCOUNT_ID: i64 = 31_415_926;
/// The real service's published code lifetime.
const CODE_LIFETIME: Duration = Duration::from_secs(20 * 60);
const OAUTH_PROBLEM: &str = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson";

/// A user of the account (`GET /api/v4/users`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub email: String,
}

/// A lead. `custom_fields` holds one text value per field id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lead {
    pub id: i64,
    pub name: String,
    pub price: i64,
    pub pipeline_id: i64,
    pub status_id: i64,
    pub responsible_user_id: i64,
    /// (field_id, text value)
    pub custom_fields: Vec<(i64, String)>,
}

/// A call note (`note_type` `call_in` / `call_out`) on a lead, contact or
/// company card. Its `updated_at` equals `created_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallNote {
    pub id: i64,
    /// "leads" | "contacts" | "companies"
    pub entity: &'static str,
    pub entity_id: i64,
    /// `call_in` when true, `call_out` when false.
    pub incoming: bool,
    /// Unix seconds.
    pub created_at: i64,
    pub responsible_user_id: i64,
    pub duration: i64,
    pub phone: String,
    pub link: String,
    pub call_status: i64,
    pub call_result: String,
}

struct Pipeline {
    id: i64,
    name: String,
    statuses: Vec<(i64, String)>,
}

struct StoredLead {
    lead: Lead,
    created_at: i64,
    updated_at: i64,
}

/// Every note the account holds: the call notes a test adds and the notes
/// the client posts, so an unfiltered read sees the client's own notes too,
/// as it would on the real service.
struct StoredNote {
    id: i64,
    entity: String,
    entity_id: i64,
    note_type: String,
    params: Value,
    created_at: i64,
    updated_at: i64,
    responsible_user_id: i64,
}

struct Code {
    redirect_uri: String,
    issued: Instant,
}

struct Auth {
    codes: HashMap<String, Code>,
    /// Codes already exchanged: a second try is told so.
    used_codes: HashSet<String>,
    code_lifetime: Duration,
    access: HashSet<String>,
    long_lived: HashSet<String>,
    /// Live refresh token → the redirect URI its grant was bound to.
    refresh: HashMap<String, String>,
    grants: usize,
}

#[derive(Default)]
struct Data {
    users: Vec<User>,
    pipelines: Vec<Pipeline>,
    fields: BTreeMap<i64, String>,
    leads: BTreeMap<i64, StoredLead>,
    notes: Vec<StoredNote>,
    next_note_id: i64,
    recordings: HashMap<String, Vec<u8>>,
}

#[derive(Default)]
struct Log {
    downloads: usize,
    notes_added: Vec<(i64, Value)>,
    lead_updates: Vec<(i64, Value)>,
    api_requests: Vec<(Instant, String)>,
    rate_limited: usize,
}

struct Limiter {
    per_second: usize,
    /// Admitted requests of the last second.
    recent: VecDeque<Instant>,
}

struct Shared {
    addr: SocketAddr,
    /// Random keys, so tokens differ between runs and doubles.
    seed: RandomState,
    counter: AtomicU64,
    auth: Mutex<Auth>,
    data: Mutex<Data>,
    log: Mutex<Log>,
    limiter: Mutex<Limiter>,
}

pub struct AmocrmDouble {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl AmocrmDouble {
    /// Starts on a free loopback port with an empty account.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            addr,
            seed: RandomState::new(),
            counter: AtomicU64::new(1),
            auth: Mutex::new(Auth {
                codes: HashMap::new(),
                used_codes: HashSet::new(),
                code_lifetime: CODE_LIFETIME,
                access: HashSet::new(),
                long_lived: HashSet::new(),
                refresh: HashMap::new(),
                grants: 0,
            }),
            data: Mutex::new(Data {
                next_note_id: 1,
                ..Data::default()
            }),
            log: Mutex::new(Log::default()),
            limiter: Mutex::new(Limiter {
                per_second: 7,
                recent: VecDeque::new(),
            }),
        });
        let app = Router::new()
            .route("/oauth2/access_token", post(access_token))
            .route("/records/{name}", get(record))
            .fallback(api)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    /// The account host, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the consent page hands the redirect URI: a code for one
    /// exchange, with this same `redirect_uri`, within 20 minutes.
    pub fn issue_code(&self, redirect_uri: &str) -> String {
        let code = self.shared.token("def50200");
        self.shared.auth.lock().unwrap().codes.insert(
            code.clone(),
            Code {
                redirect_uri: redirect_uri.to_owned(),
                issued: Instant::now(),
            },
        );
        code
    }

    /// A long-lived token of a private integration: a Bearer token with no
    /// refresh token, untouched by [`Self::expire_access_tokens`].
    pub fn long_lived_token(&self) -> String {
        let token = self.shared.token("ll.");
        self.shared
            .auth
            .lock()
            .unwrap()
            .long_lived
            .insert(token.clone());
        token
    }

    /// 24 hours pass: every access token issued so far answers 401. Refresh
    /// tokens stay good (they live three months).
    pub fn expire_access_tokens(&self) {
        self.shared.auth.lock().unwrap().access.clear();
    }

    pub fn add_user(&self, user: User) {
        let mut data = self.shared.data.lock().unwrap();
        data.users.retain(|u| u.id != user.id);
        data.users.push(user);
        data.users.sort_by_key(|u| u.id);
    }

    /// A pipeline with its own statuses; 142 «Успешно реализовано» and 143
    /// «Закрыто и не реализовано» are added to every pipeline, as in amoCRM.
    pub fn add_pipeline(&self, id: i64, name: &str, statuses: &[(i64, &str)]) {
        let mut statuses: Vec<(i64, String)> = statuses
            .iter()
            .map(|(id, name)| (*id, (*name).to_owned()))
            .collect();
        for (id, name) in [
            (142, "Успешно реализовано"),
            (143, "Закрыто и не реализовано"),
        ] {
            if !statuses.iter().any(|(s, _)| *s == id) {
                statuses.push((id, name.to_owned()));
            }
        }
        let mut data = self.shared.data.lock().unwrap();
        data.pipelines.retain(|p| p.id != id);
        data.pipelines.push(Pipeline {
            id,
            name: name.to_owned(),
            statuses,
        });
    }

    /// A lead text field definition; `PATCH` refuses field ids not added here.
    pub fn add_custom_field(&self, id: i64, name: &str) {
        self.shared
            .data
            .lock()
            .unwrap()
            .fields
            .insert(id, name.to_owned());
    }

    pub fn add_lead(&self, lead: Lead) {
        let now = now_unix();
        self.shared.data.lock().unwrap().leads.insert(
            lead.id,
            StoredLead {
                lead,
                created_at: now,
                updated_at: now,
            },
        );
    }

    pub fn add_call_note(&self, note: CallNote) {
        let mut data = self.shared.data.lock().unwrap();
        data.next_note_id = data.next_note_id.max(note.id + 1);
        data.notes.retain(|n| n.id != note.id);
        data.notes.push(StoredNote {
            id: note.id,
            entity: note.entity.to_owned(),
            entity_id: note.entity_id,
            note_type: if note.incoming { "call_in" } else { "call_out" }.to_owned(),
            params: json!({
                "uniq": format!("call-{}", note.id),
                "duration": note.duration,
                "source": "telephony",
                "link": note.link,
                "phone": note.phone,
                "call_status": note.call_status,
                "call_result": note.call_result,
            }),
            created_at: note.created_at,
            updated_at: note.created_at,
            responsible_user_id: note.responsible_user_id,
        });
    }

    /// Serves `audio` at `GET /records/{name}` without auth and returns that
    /// URL. `name` should be URL-safe (letters, digits, `-_.`).
    pub fn add_recording(&self, name: &str, audio: Vec<u8>) -> String {
        self.shared
            .data
            .lock()
            .unwrap()
            .recordings
            .insert(name.to_owned(), audio);
        format!("{}/records/{name}", self.base_url())
    }

    /// Successful recording downloads.
    pub fn downloads(&self) -> usize {
        self.shared.log.lock().unwrap().downloads
    }

    /// (lead id, note object as posted) for every accepted note.
    pub fn notes_added(&self) -> Vec<(i64, Value)> {
        self.shared.log.lock().unwrap().notes_added.clone()
    }

    /// (lead id, PATCH body) for every accepted lead update.
    pub fn lead_updates(&self) -> Vec<(i64, Value)> {
        self.shared.log.lock().unwrap().lead_updates.clone()
    }

    /// Every `/api/v4` request that got past the rate limit and the token
    /// check: when it came, and `"METHOD /path?query"` with the query
    /// percent-decoded (`filter[note_type][]=call_in`), or `"METHOD /path"`.
    pub fn api_requests(&self) -> Vec<(Instant, String)> {
        self.shared.log.lock().unwrap().api_requests.clone()
    }

    /// How many 429s were answered.
    pub fn rate_limited(&self) -> usize {
        self.shared.log.lock().unwrap().rate_limited
    }

    /// Successful `POST /oauth2/access_token` answers.
    pub fn token_grants(&self) -> usize {
        self.shared.auth.lock().unwrap().grants
    }

    /// At most this many `/api/v4` requests in any sliding second (default
    /// 7); the window so far is forgotten.
    pub fn set_rate_limit(&self, per_second: usize) {
        let mut limiter = self.shared.limiter.lock().unwrap();
        limiter.per_second = per_second;
        limiter.recent.clear();
    }
}

impl Shared {
    fn token(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut a = self.seed.build_hasher();
        a.write_u64(n);
        let mut b = self.seed.build_hasher();
        b.write_u64(!n);
        let mut c = self.seed.build_hasher();
        c.write_u64(n.rotate_left(17) ^ 0x5eed);
        format!(
            "{prefix}{:016x}{:016x}{:016x}",
            a.finish(),
            b.finish(),
            c.finish()
        )
    }

    /// The sliding one-second window. Every request it admits counts,
    /// whatever its answer turns out to be, as the real gateway counts them.
    fn admit(&self) -> bool {
        let mut limiter = self.limiter.lock().unwrap();
        let now = Instant::now();
        while limiter
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            limiter.recent.pop_front();
        }
        if limiter.recent.len() >= limiter.per_second {
            return false;
        }
        limiter.recent.push_back(now);
        true
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let token = token.trim();
        let auth = self.auth.lock().unwrap();
        auth.access.contains(token) || auth.long_lived.contains(token)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

// ---------------------------------------------------------------- answers

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn hal(body: Value) -> Response {
    with_type(StatusCode::OK, "application/hal+json", body.to_string())
}

fn problem_value(status: StatusCode, detail: &str) -> Value {
    json!({
        "title": status.canonical_reason().unwrap_or("Error"),
        "type": format!("https://httpstatus.es/{}", status.as_u16()),
        "status": status.as_u16(),
        "detail": detail,
    })
}

fn problem(status: StatusCode, detail: &str) -> Response {
    with_type(
        status,
        "application/problem+json",
        problem_value(status, detail).to_string(),
    )
}

/// One entry of `validation-errors`.
struct Invalid {
    request_id: String,
    code: &'static str,
    path: String,
    detail: String,
}

impl Invalid {
    fn new(request_id: &str, code: &'static str, path: &str, detail: &str) -> Self {
        Self {
            request_id: request_id.to_owned(),
            code,
            path: path.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

/// 400 "Request validation failed", errors grouped by `request_id`.
fn validation(errors: Vec<Invalid>) -> Response {
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for e in errors {
        let entry = json!({"code": e.code, "path": e.path, "detail": e.detail});
        match groups.iter_mut().find(|(id, _)| *id == e.request_id) {
            Some((_, list)) => list.push(entry),
            None => groups.push((e.request_id, vec![entry])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(id, errors)| json!({"request_id": id, "errors": errors}))
        .collect();
    let mut body = problem_value(StatusCode::BAD_REQUEST, "Request validation failed");
    body["validation-errors"] = Value::Array(groups);
    with_type(
        StatusCode::BAD_REQUEST,
        "application/problem+json",
        body.to_string(),
    )
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn oauth_problem(status: StatusCode, hint: &str, detail: &str) -> Response {
    let body = json!({
        "hint": hint,
        "title": status.canonical_reason().unwrap_or("Error"),
        "type": OAUTH_PROBLEM,
        "status": status.as_u16(),
        "detail": detail,
    });
    with_type(status, "application/problem+json", body.to_string())
}

// ---------------------------------------------------------------- OAuth

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// `POST /oauth2/access_token`. The SDK sends JSON; form bodies are taken
/// too, as generic OAuth clients send them.
async fn access_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let fields: HashMap<String, String> = if form {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
            _ => {
                return oauth_problem(
                    StatusCode::BAD_REQUEST,
                    "The request body must be a JSON object",
                    "Request body is malformed",
                )
            }
        }
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let grant_type = field("grant_type");
    if grant_type != "authorization_code" && grant_type != "refresh_token" {
        return oauth_problem(
            StatusCode::BAD_REQUEST,
            "Check the `grant_type` parameter",
            "The authorization grant type is not supported by the authorization server.",
        );
    }
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return oauth_problem(
            StatusCode::UNAUTHORIZED,
            "Client authentication failed",
            "Client authentication failed",
        );
    }
    let redirect_uri = field("redirect_uri");
    let mut auth = shared.auth.lock().unwrap();
    if grant_type == "authorization_code" {
        let code = field("code");
        if code.is_empty() {
            return oauth_problem(
                StatusCode::BAD_REQUEST,
                "Check the `code` parameter",
                "The request is missing a required parameter",
            );
        }
        if auth.used_codes.contains(code) {
            return oauth_problem(
                StatusCode::BAD_REQUEST,
                "Authorization code has been revoked",
                "The provided authorization grant is invalid, expired or revoked",
            );
        }
        let Some(issued) = auth.codes.get(code) else {
            return oauth_problem(
                StatusCode::BAD_REQUEST,
                "Cannot decrypt the authorization code",
                "The provided authorization grant is invalid, expired or revoked",
            );
        };
        if issued.issued.elapsed() > auth.code_lifetime {
            return oauth_problem(
                StatusCode::BAD_REQUEST,
                "Authorization code has expired",
                "The provided authorization grant is invalid, expired or revoked",
            );
        }
        if issued.redirect_uri != redirect_uri {
            return oauth_problem(
                StatusCode::BAD_REQUEST,
                "Authorization code doesn't match the redirect_uri",
                "The provided authorization grant is invalid, expired or revoked",
            );
        }
        auth.codes.remove(code);
        auth.used_codes.insert(code.to_owned());
    } else {
        let refresh_token = field("refresh_token");
        if refresh_token.is_empty() {
            return oauth_problem(
                StatusCode::BAD_REQUEST,
                "Check the `refresh_token` parameter",
                "The request is missing a required parameter",
            );
        }
        match auth.refresh.get(refresh_token) {
            None => {
                return oauth_problem(
                    StatusCode::BAD_REQUEST,
                    "Token has been revoked",
                    "The refresh token is invalid.",
                )
            }
            Some(bound) if bound != redirect_uri => {
                return oauth_problem(
                    StatusCode::BAD_REQUEST,
                    "Check the `redirect_uri` parameter",
                    "The redirect_uri does not match the integration's",
                )
            }
            Some(_) => {}
        }
        auth.refresh.remove(refresh_token);
    }
    let access = shared.token("at.");
    let refresh = shared.token("def50200rt");
    auth.access.insert(access.clone());
    auth.refresh
        .insert(refresh.clone(), redirect_uri.to_owned());
    auth.grants += 1;
    let body = json!({
        "token_type": "Bearer",
        "expires_in": 86400,
        "access_token": access,
        "refresh_token": refresh,
        "server_time": now_unix(),
    });
    with_type(StatusCode::OK, "application/json", body.to_string())
}

async fn record(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let audio = shared.data.lock().unwrap().recordings.get(&name).cloned();
    match audio {
        Some(audio) => {
            shared.log.lock().unwrap().downloads += 1;
            ([(header::CONTENT_TYPE, "audio/mpeg")], audio).into_response()
        }
        None => (StatusCode::NOT_FOUND, "Not found").into_response(),
    }
}

// ---------------------------------------------------------------- /api/v4

type Query = Vec<(String, String)>;

fn last_param<'a>(query: &'a Query, name: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Values of a PHP-style list parameter given as `name=a,b`, `name[]=a` or
/// `name[0]=a` (what `http_build_query` writes).
fn list_param(query: &Query, name: &str) -> Vec<String> {
    query
        .iter()
        .filter(|(k, _)| {
            k == name
                || k.strip_prefix(name)
                    .and_then(|r| r.strip_prefix('['))
                    .and_then(|r| r.strip_suffix(']'))
                    .is_some_and(|i| i.bytes().all(|b| b.is_ascii_digit()))
        })
        .flat_map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn int_list(query: &Query, name: &str, path: &str) -> Result<Vec<i64>, Response> {
    list_param(query, name)
        .iter()
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                validation(vec![Invalid::new(
                    "0",
                    "InvalidType",
                    path,
                    "This value should be of type int.",
                )])
            })
        })
        .collect()
}

fn int_param(query: &Query, name: &str, path: &str) -> Result<Option<i64>, Response> {
    match last_param(query, name) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            validation(vec![Invalid::new(
                "0",
                "InvalidType",
                path,
                "This value should be of type int.",
            )])
        }),
    }
}

/// `page` (1-based) and `limit` (default 50, at most 250).
fn paging(query: &Query) -> Result<(usize, usize), Response> {
    let limit = match last_param(query, "limit") {
        None => 50,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (1..=250).contains(&n) => n as usize,
            Ok(n) if n > 250 => {
                return Err(validation(vec![Invalid::new(
                    "0",
                    "LessThanOrEqual",
                    "limit",
                    "This value should be less than or equal to 250.",
                )]))
            }
            _ => {
                return Err(validation(vec![Invalid::new(
                    "0",
                    "GreaterThanOrEqual",
                    "limit",
                    "This value should be greater than or equal to 1.",
                )]))
            }
        },
    };
    let page = match last_param(query, "page") {
        None => 1,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 1 => n as usize,
            _ => {
                return Err(validation(vec![Invalid::new(
                    "0",
                    "GreaterThanOrEqual",
                    "page",
                    "This value should be greater than or equal to 1.",
                )]))
            }
        },
    };
    Ok((page, limit))
}

/// The same request with another page: the filters kept, `page` and
/// `limit` written last.
fn page_href(shared: &Shared, path: &str, query: &Query, page: usize, limit: usize) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query.iter().filter(|(k, _)| k != "page" && k != "limit") {
        out.append_pair(k, v);
    }
    out.append_pair("page", &page.to_string());
    out.append_pair("limit", &limit.to_string());
    format!("{}?{}", shared.url(path), out.finish())
}

/// A HAL page of `items`; 204 with no body when the page is empty.
fn hal_page(
    shared: &Shared,
    path: &str,
    query: &Query,
    entity: &str,
    items: Vec<Value>,
) -> Response {
    let (page, limit) = match paging(query) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let start = (page - 1).saturating_mul(limit);
    if start >= items.len() {
        return no_content();
    }
    let end = (start + limit).min(items.len());
    let mut links = json!({"self": {"href": page_href(shared, path, query, page, limit)}});
    if end < items.len() {
        links["next"] = json!({"href": page_href(shared, path, query, page + 1, limit)});
    }
    if page > 1 {
        links["prev"] = json!({"href": page_href(shared, path, query, page - 1, limit)});
    }
    let mut embedded = Map::new();
    embedded.insert(entity.to_owned(), Value::Array(items[start..end].to_vec()));
    hal(json!({"_page": page, "_links": links, "_embedded": embedded}))
}

async fn api(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let Some(rest) = path.strip_prefix("/api/v4/") else {
        return problem(StatusCode::NOT_FOUND, "Not found");
    };
    if !shared.admit() {
        shared.log.lock().unwrap().rate_limited += 1;
        return with_type(
            StatusCode::TOO_MANY_REQUESTS,
            "text/html; charset=UTF-8",
            "<html><head><title>429 Too Many Requests</title></head>\
             <body><h1>429 Too Many Requests</h1></body></html>"
                .to_owned(),
        );
    }
    if !shared.authorized(&headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "The access token is missing, invalid or expired",
        );
    }
    let query: Query = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let shown = if query.is_empty() {
        format!("{method} {path}")
    } else {
        let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{method} {path}?{}", q.join("&"))
    };
    shared
        .log
        .lock()
        .unwrap()
        .api_requests
        .push((Instant::now(), shown));

    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let id = |s: &str| s.parse::<i64>().ok();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["account"]) => hal(json!({
            "id": ACCOUNT_ID,
            "name": "Test account",
            "subdomain": "test",
            "country": "RU",
            "currency": "RUB",
            "_links": {"self": {"href": shared.url("/api/v4/account")}},
        })),
        ("GET", ["users"]) => {
            let items = shared
                .data
                .lock()
                .unwrap()
                .users
                .iter()
                .map(|u| user_json(&shared, u))
                .collect();
            hal_page(&shared, &path, &query, "users", items)
        }
        ("GET", ["users", uid]) => {
            let data = shared.data.lock().unwrap();
            match id(uid).and_then(|uid| data.users.iter().find(|u| u.id == uid)) {
                Some(u) => hal(user_json(&shared, u)),
                None => no_content(),
            }
        }
        ("GET", ["leads", "pipelines"]) => pipelines(&shared),
        ("GET", ["leads", "custom_fields"]) => {
            let items = shared
                .data
                .lock()
                .unwrap()
                .fields
                .iter()
                .enumerate()
                .map(|(i, (id, name))| {
                    json!({
                        "id": id, "name": name, "type": "text", "code": null,
                        "sort": (i + 1) * 10, "is_api_only": false, "entity_type": "leads",
                        "enums": null, "account_id": ACCOUNT_ID,
                        "_links": {"self": {"href": shared.url(&format!("/api/v4/leads/custom_fields/{id}"))}},
                    })
                })
                .collect();
            hal_page(&shared, &path, &query, "custom_fields", items)
        }
        ("GET", ["leads"]) => {
            let ids = match int_list(&query, "filter[id]", "filter.id") {
                Ok(ids) => ids,
                Err(r) => return r,
            };
            let fields = shared.data_fields();
            let items = shared
                .data
                .lock()
                .unwrap()
                .leads
                .values()
                .filter(|l| ids.is_empty() || ids.contains(&l.lead.id))
                .map(|l| lead_json(&shared, &fields, l))
                .collect();
            hal_page(&shared, &path, &query, "leads", items)
        }
        ("GET", ["leads", lead_id]) if id(lead_id).is_some() => {
            let fields = shared.data_fields();
            let data = shared.data.lock().unwrap();
            match id(lead_id).and_then(|lid| data.leads.get(&lid)) {
                Some(l) => hal(lead_json(&shared, &fields, l)),
                None => no_content(),
            }
        }
        ("PATCH", ["leads", lead_id]) => match id(lead_id) {
            Some(lead_id) => patch_lead(&shared, lead_id, &body),
            None => problem(StatusCode::NOT_FOUND, "Not found"),
        },
        ("GET", [entity @ ("leads" | "contacts" | "companies"), "notes"]) => {
            list_notes(&shared, entity, None, &path, &query)
        }
        ("GET", [entity @ ("leads" | "contacts" | "companies"), entity_id, "notes"]) => {
            match id(entity_id) {
                Some(eid) => list_notes(&shared, entity, Some(eid), &path, &query),
                None => problem(StatusCode::NOT_FOUND, "Not found"),
            }
        }
        ("POST", ["leads", "notes"]) => add_notes(&shared, None, &body),
        ("POST", ["leads", lead_id, "notes"]) => match id(lead_id) {
            Some(lead_id) => add_notes(&shared, Some(lead_id), &body),
            None => problem(StatusCode::NOT_FOUND, "Not found"),
        },
        _ => problem(StatusCode::NOT_FOUND, "Not found"),
    }
}

impl Shared {
    fn data_fields(&self) -> BTreeMap<i64, String> {
        self.data.lock().unwrap().fields.clone()
    }
}

fn user_json(shared: &Shared, user: &User) -> Value {
    json!({
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "lang": "ru",
        "rights": {
            "leads": {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"},
            "contacts": {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"},
            "companies": {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"},
            "mail_access": false, "catalog_access": false,
            "is_admin": false, "is_free": false, "is_active": true,
            "group_id": null, "role_id": null,
        },
        "_links": {"self": {"href": shared.url(&format!("/api/v4/users/{}", user.id))}},
    })
}

fn pipelines(shared: &Shared) -> Response {
    let data = shared.data.lock().unwrap();
    let items: Vec<Value> = data
        .pipelines
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let statuses: Vec<Value> = p
                .statuses
                .iter()
                .enumerate()
                .map(|(j, (id, name))| {
                    let system = *id == 142 || *id == 143;
                    json!({
                        "id": id, "name": name, "sort": if system { 10000 + j * 10 } else { (j + 1) * 10 },
                        "is_editable": !system, "pipeline_id": p.id,
                        "color": if *id == 142 { "#CCFF66" } else if *id == 143 { "#D5D8DB" } else { "#99ccff" },
                        "type": 0, "account_id": ACCOUNT_ID,
                        "_links": {"self": {"href": shared.url(&format!("/api/v4/leads/pipelines/{}/statuses/{id}", p.id))}},
                    })
                })
                .collect();
            json!({
                "id": p.id, "name": p.name, "sort": (i + 1) * 100, "is_main": i == 0,
                "is_unsorted_on": false, "is_archive": false, "account_id": ACCOUNT_ID,
                "_links": {"self": {"href": shared.url(&format!("/api/v4/leads/pipelines/{}", p.id))}},
                "_embedded": {"statuses": statuses},
            })
        })
        .collect();
    hal(json!({
        "_total_items": items.len(),
        "_links": {"self": {"href": shared.url("/api/v4/leads/pipelines")}},
        "_embedded": {"pipelines": items},
    }))
}

fn lead_json(shared: &Shared, fields: &BTreeMap<i64, String>, stored: &StoredLead) -> Value {
    let lead = &stored.lead;
    let values: Value = if lead.custom_fields.is_empty() {
        Value::Null
    } else {
        lead.custom_fields
            .iter()
            .map(|(id, value)| {
                json!({
                    "field_id": id,
                    "field_name": fields.get(id).cloned().unwrap_or_default(),
                    "field_code": null,
                    "field_type": "text",
                    "values": [{"value": value}],
                })
            })
            .collect()
    };
    let closed = lead.status_id == 142 || lead.status_id == 143;
    json!({
        "id": lead.id,
        "name": lead.name,
        "price": lead.price,
        "responsible_user_id": lead.responsible_user_id,
        "group_id": 0,
        "status_id": lead.status_id,
        "pipeline_id": lead.pipeline_id,
        "loss_reason_id": null,
        "created_by": lead.responsible_user_id,
        "updated_by": lead.responsible_user_id,
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
        "closed_at": if closed { json!(stored.updated_at) } else { Value::Null },
        "closest_task_at": null,
        "is_deleted": false,
        "custom_fields_values": values,
        "score": null,
        "account_id": ACCOUNT_ID,
        "labor_cost": null,
        "_links": {"self": {"href": shared.url(&format!("/api/v4/leads/{}", lead.id))}},
        "_embedded": {"tags": [], "contacts": []},
    })
}

fn note_json(shared: &Shared, note: &StoredNote) -> Value {
    json!({
        "id": note.id,
        "entity_id": note.entity_id,
        "created_by": note.responsible_user_id,
        "updated_by": note.responsible_user_id,
        "created_at": note.created_at,
        "updated_at": note.updated_at,
        "responsible_user_id": note.responsible_user_id,
        "group_id": 0,
        "note_type": note.note_type,
        "params": note.params,
        "account_id": ACCOUNT_ID,
        "_links": {"self": {"href": shared.url(&format!("/api/v4/{}/{}/notes/{}", note.entity, note.entity_id, note.id))}},
    })
}

/// `GET /api/v4/{entity}/notes` with the filters of the SDK's
/// `NotesFilter`: note types, entity ids, note ids, an inclusive
/// `updated_at` range; ordered by `updated_at`, then `id`.
fn list_notes(
    shared: &Shared,
    entity: &str,
    entity_id: Option<i64>,
    path: &str,
    query: &Query,
) -> Response {
    let types = list_param(query, "filter[note_type]");
    let mut entity_ids = match int_list(query, "filter[entity_id]", "filter.entity_id") {
        Ok(v) => v,
        Err(r) => return r,
    };
    entity_ids.extend(entity_id);
    let note_ids = match int_list(query, "filter[id]", "filter.id") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let from = match int_param(query, "filter[updated_at][from]", "filter.updated_at.from") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let to = match int_param(query, "filter[updated_at][to]", "filter.updated_at.to") {
        Ok(v) => v,
        Err(r) => return r,
    };
    // `filter[updated_at]=<unix>` alone means "since".
    let since = match int_param(query, "filter[updated_at]", "filter.updated_at") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let descending = [
        last_param(query, "order[updated_at]"),
        last_param(query, "order[id]"),
    ]
    .iter()
    .any(|o| o.is_some_and(|o| o.eq_ignore_ascii_case("desc")));

    let data = shared.data.lock().unwrap();
    let mut notes: Vec<&StoredNote> = data
        .notes
        .iter()
        .filter(|n| n.entity == entity)
        .filter(|n| types.is_empty() || types.contains(&n.note_type))
        .filter(|n| entity_ids.is_empty() || entity_ids.contains(&n.entity_id))
        .filter(|n| note_ids.is_empty() || note_ids.contains(&n.id))
        .filter(|n| from.is_none_or(|f| n.updated_at >= f))
        .filter(|n| since.is_none_or(|f| n.updated_at >= f))
        .filter(|n| to.is_none_or(|t| n.updated_at <= t))
        .collect();
    notes.sort_by_key(|n| (n.updated_at, n.id));
    if descending {
        notes.reverse();
    }
    let items: Vec<Value> = notes.iter().map(|n| note_json(shared, n)).collect();
    drop(data);
    hal_page(shared, path, query, "notes", items)
}

fn parse_json(body: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            &format!("Request body is not valid JSON: {e}"),
        )
    })
}

/// `POST /api/v4/leads/{id}/notes` (or `/api/v4/leads/notes` with
/// `entity_id` in each item). All items are checked before any is kept.
fn add_notes(shared: &Shared, lead_id: Option<i64>, body: &[u8]) -> Response {
    let body = match parse_json(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if let Some(lead_id) = lead_id {
        if !shared.data.lock().unwrap().leads.contains_key(&lead_id) {
            return problem(StatusCode::NOT_FOUND, "Entity not found");
        }
    }
    let items = match &body {
        Value::Array(items) if !items.is_empty() => items,
        Value::Array(_) => {
            return validation(vec![Invalid::new(
                "0",
                "NotBlank",
                "",
                "This collection should contain 1 element or more.",
            )])
        }
        _ => {
            return validation(vec![Invalid::new(
                "0",
                "InvalidType",
                "",
                "This value should be of type array.",
            )])
        }
    };
    let mut errors = Vec::new();
    let mut accepted: Vec<(String, i64, &Value)> = Vec::new();
    {
        let data = shared.data.lock().unwrap();
        for (i, item) in items.iter().enumerate() {
            let request_id = match item.get("request_id") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => i.to_string(),
            };
            let before = errors.len();
            let Some(object) = item.as_object() else {
                errors.push(Invalid::new(
                    &request_id,
                    "InvalidType",
                    "",
                    "This value should be of type object.",
                ));
                continue;
            };
            let entity_id = match lead_id {
                Some(id) => id,
                None => match object.get("entity_id").and_then(Value::as_i64) {
                    Some(id) if data.leads.contains_key(&id) => id,
                    Some(_) => {
                        errors.push(Invalid::new(
                            &request_id,
                            "NotFound",
                            "entity_id",
                            "Entity not found.",
                        ));
                        0
                    }
                    None => {
                        errors.push(Invalid::new(
                            &request_id,
                            "NotBlank",
                            "entity_id",
                            "This value should not be blank.",
                        ));
                        0
                    }
                },
            };
            let note_type = object.get("note_type").and_then(Value::as_str);
            match note_type {
                Some("common" | "call_in" | "call_out") => {}
                Some(_) => errors.push(Invalid::new(
                    &request_id,
                    "NotSupportedChoice",
                    "note_type",
                    "The value you selected is not a valid choice.",
                )),
                None => errors.push(Invalid::new(
                    &request_id,
                    "NotBlank",
                    "note_type",
                    "This value should not be blank.",
                )),
            }
            let params = object.get("params");
            if params.is_some_and(|p| !p.is_object()) {
                errors.push(Invalid::new(
                    &request_id,
                    "InvalidType",
                    "params",
                    "This value should be of type object.",
                ));
            } else if note_type == Some("common") {
                match params.and_then(|p| p.get("text")) {
                    Some(Value::String(s)) if !s.trim().is_empty() => {}
                    Some(Value::String(_)) | None | Some(Value::Null) => errors.push(Invalid::new(
                        &request_id,
                        "NotBlank",
                        "params.text",
                        "This value should not be blank.",
                    )),
                    Some(_) => errors.push(Invalid::new(
                        &request_id,
                        "InvalidType",
                        "params.text",
                        "This value should be of type string.",
                    )),
                }
            } else if matches!(note_type, Some("call_in" | "call_out")) && params.is_none() {
                errors.push(Invalid::new(
                    &request_id,
                    "NotBlank",
                    "params",
                    "This value should not be blank.",
                ));
            }
            if errors.len() == before {
                accepted.push((request_id, entity_id, item));
            }
        }
    }
    if !errors.is_empty() {
        return validation(errors);
    }
    let now = now_unix();
    let mut answers = Vec::new();
    let mut data = shared.data.lock().unwrap();
    let mut log = shared.log.lock().unwrap();
    for (request_id, entity_id, item) in accepted {
        let id = data.next_note_id;
        data.next_note_id += 1;
        let responsible = data
            .leads
            .get(&entity_id)
            .map_or(0, |l| l.lead.responsible_user_id);
        data.notes.push(StoredNote {
            id,
            entity: "leads".to_owned(),
            entity_id,
            note_type: item["note_type"].as_str().unwrap_or("common").to_owned(),
            params: item.get("params").cloned().unwrap_or_else(|| json!({})),
            created_at: now,
            updated_at: now,
            responsible_user_id: responsible,
        });
        log.notes_added.push((entity_id, item.clone()));
        answers.push(json!({
            "id": id,
            "entity_id": entity_id,
            "request_id": request_id,
            "_links": {"self": {"href": shared.url(&format!("/api/v4/leads/{entity_id}/notes/{id}"))}},
        }));
    }
    hal(json!({
        "_links": {"self": {"href": shared.url("/api/v4/leads/notes")}},
        "_embedded": {"notes": answers},
    }))
}

/// `PATCH /api/v4/leads/{id}`: `custom_fields_values` (text fields the
/// account has), `status_id`, `pipeline_id`, `name`, `price`. Nothing is
/// changed unless the whole body is valid.
fn patch_lead(shared: &Shared, lead_id: i64, body: &[u8]) -> Response {
    let body = match parse_json(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(object) = body.as_object() else {
        return validation(vec![Invalid::new(
            "0",
            "InvalidType",
            "",
            "This value should be of type object.",
        )]);
    };
    let mut data = shared.data.lock().unwrap();
    let Some(stored) = data.leads.get(&lead_id) else {
        return problem(StatusCode::NOT_FOUND, "Entity not found");
    };
    let mut lead = stored.lead.clone();
    let mut errors = Vec::new();
    let mut invalid = |code, path: &str, detail: &str| {
        errors.push(Invalid::new("0", code, path, detail));
    };
    const NOT_A_CHOICE: &str = "The value you selected is not a valid choice.";

    if let Some(name) = object.get("name") {
        match name.as_str() {
            Some(name) => lead.name = name.to_owned(),
            None => invalid(
                "InvalidType",
                "name",
                "This value should be of type string.",
            ),
        }
    }
    if let Some(price) = object.get("price") {
        match price.as_i64() {
            Some(price) => lead.price = price,
            None => invalid("InvalidType", "price", "This value should be of type int."),
        }
    }
    if let Some(pipeline_id) = object.get("pipeline_id") {
        match pipeline_id.as_i64() {
            Some(p) if data.pipelines.is_empty() || data.pipelines.iter().any(|x| x.id == p) => {
                lead.pipeline_id = p
            }
            Some(_) => invalid("NotSupportedChoice", "pipeline_id", NOT_A_CHOICE),
            None => invalid(
                "InvalidType",
                "pipeline_id",
                "This value should be of type int.",
            ),
        }
    }
    if let Some(status_id) = object.get("status_id") {
        // Checked against the lead's pipeline when the test described it.
        let known = data
            .pipelines
            .iter()
            .find(|p| p.id == lead.pipeline_id)
            .map(|p| p.statuses.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        match status_id.as_i64() {
            Some(s) if known.as_ref().is_none_or(|k| k.contains(&s)) => lead.status_id = s,
            Some(_) => invalid("NotSupportedChoice", "status_id", NOT_A_CHOICE),
            None => invalid(
                "InvalidType",
                "status_id",
                "This value should be of type int.",
            ),
        }
    }
    match object.get("custom_fields_values") {
        None | Some(Value::Null) => {}
        Some(Value::Array(values)) => {
            for (i, entry) in values.iter().enumerate() {
                let field_id = entry.get("field_id").and_then(Value::as_i64);
                let Some(field_id) = field_id.filter(|id| data.fields.contains_key(id)) else {
                    invalid(
                        "NotSupportedChoice",
                        &format!("custom_fields_values.{i}.field_id"),
                        NOT_A_CHOICE,
                    );
                    continue;
                };
                let texts: Option<Vec<String>> = match entry.get("values") {
                    Some(Value::Array(vs)) => vs
                        .iter()
                        .map(|v| match v.get("value") {
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
                            _ => None,
                        })
                        .collect(),
                    Some(Value::Null) => Some(Vec::new()),
                    _ => None,
                };
                match texts {
                    Some(texts) => {
                        lead.custom_fields.retain(|(id, _)| *id != field_id);
                        if let Some(text) = texts.into_iter().next() {
                            lead.custom_fields.push((field_id, text));
                        }
                    }
                    None => invalid(
                        "InvalidType",
                        &format!("custom_fields_values.{i}.values"),
                        "This value should be of type array of {\"value\": …}.",
                    ),
                }
            }
        }
        Some(_) => invalid(
            "InvalidType",
            "custom_fields_values",
            "This value should be of type array.",
        ),
    }
    if !errors.is_empty() {
        return validation(errors);
    }
    let now = now_unix();
    let stored = data.leads.get_mut(&lead_id).expect("checked above");
    stored.lead = lead;
    stored.updated_at = now.max(stored.updated_at);
    let updated_at = stored.updated_at;
    drop(data);
    shared
        .log
        .lock()
        .unwrap()
        .lead_updates
        .push((lead_id, body.clone()));
    hal(json!({
        "id": lead_id,
        "updated_at": updated_at,
        "_links": {"self": {"href": shared.url(&format!("/api/v4/leads/{lead_id}"))}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIRECT: &str = "https://rop.example/oauth/amocrm";

    async fn grant(double: &AmocrmDouble, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/oauth2/access_token", double.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn get(double: &AmocrmDouble, token: &str, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", double.base_url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    fn code_body(code: &str) -> Value {
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
               "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT})
    }

    fn refresh_body(refresh: &str) -> Value {
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
               "grant_type": "refresh_token", "refresh_token": refresh, "redirect_uri": REDIRECT})
    }

    #[tokio::test]
    async fn code_grant_refresh_and_reuse_refusal() {
        let double = AmocrmDouble::start().await;
        let code = double.issue_code(REDIRECT);

        let mut wrong_redirect = code_body(&code);
        wrong_redirect["redirect_uri"] = json!("https://elsewhere.example/cb");
        assert_eq!(grant(&double, wrong_redirect).await.0, 400);

        let (status, first) = grant(&double, code_body(&code)).await;
        assert_eq!(status, 200, "{first}");
        assert_eq!(first["token_type"], "Bearer");
        assert_eq!(first["expires_in"], 86400);
        assert!(first["server_time"].as_i64().unwrap() > 1_700_000_000);
        let access1 = first["access_token"].as_str().unwrap().to_owned();
        let refresh1 = first["refresh_token"].as_str().unwrap().to_owned();

        // The code is single-use.
        let (status, again) = grant(&double, code_body(&code)).await;
        assert_eq!(status, 400);
        assert_eq!(again["status"], 400);

        // Wrong client secret.
        let mut wrong_client = refresh_body(&refresh1);
        wrong_client["client_secret"] = json!("nope");
        assert_eq!(grant(&double, wrong_client).await.0, 401);

        let (status, second) = grant(&double, refresh_body(&refresh1)).await;
        assert_eq!(status, 200);
        let access2 = second["access_token"].as_str().unwrap().to_owned();
        assert_ne!(access1, access2);
        assert_ne!(second["refresh_token"].as_str().unwrap(), refresh1);

        // The used refresh token is revoked.
        let (status, reused) = grant(&double, refresh_body(&refresh1)).await;
        assert_eq!(status, 400);
        assert_eq!(reused["hint"], "Token has been revoked");
        assert_eq!(double.token_grants(), 2);

        // Both access tokens work until a day passes.
        assert_eq!(
            get(&double, &access1, "/api/v4/account").await.status(),
            200
        );
        assert_eq!(
            get(&double, &access2, "/api/v4/account").await.status(),
            200
        );
        let long_lived = double.long_lived_token();
        double.expire_access_tokens();
        let expired = get(&double, &access2, "/api/v4/account").await;
        assert_eq!(expired.status(), 401);
        assert_eq!(
            expired.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = expired.json().await.unwrap();
        assert_eq!(body["title"], "Unauthorized");
        assert_eq!(body["type"], "https://httpstatus.es/401");
        assert_eq!(body["status"], 401);
        assert!(body["detail"].is_string());
        assert_eq!(
            get(&double, &long_lived, "/api/v4/account").await.status(),
            200
        );

        // The refresh token from the last grant still refreshes.
        let refresh2 = second["refresh_token"].as_str().unwrap();
        let (status, third) = grant(&double, refresh_body(refresh2)).await;
        assert_eq!(status, 200);
        let access3 = third["access_token"].as_str().unwrap();
        assert_eq!(get(&double, access3, "/api/v4/account").await.status(), 200);
    }

    #[tokio::test]
    async fn expired_code_and_odd_bodies_are_refused() {
        let double = AmocrmDouble::start().await;
        double.shared.auth.lock().unwrap().code_lifetime = Duration::from_millis(50);
        let code = double.issue_code(REDIRECT);
        tokio::time::sleep(Duration::from_millis(80)).await;
        let (status, body) = grant(&double, code_body(&code)).await;
        assert_eq!(status, 400);
        assert_eq!(body["hint"], "Authorization code has expired");

        let response = reqwest::Client::new()
            .post(format!("{}/oauth2/access_token", double.base_url()))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );

        let (status, _) = grant(&double, json!({"grant_type": "password"})).await;
        assert_eq!(status, 400);
        assert_eq!(double.token_grants(), 0);
    }

    #[tokio::test]
    async fn bearer_is_required() {
        let double = AmocrmDouble::start().await;
        let bare = reqwest::get(format!("{}/api/v4/users", double.base_url()))
            .await
            .unwrap();
        assert_eq!(bare.status(), 401);
        assert_eq!(bare.headers()["content-type"], "application/problem+json");
        assert_eq!(get(&double, "made-up", "/api/v4/users").await.status(), 401);
        assert!(double.api_requests().is_empty());

        let token = double.long_lived_token();
        let unknown = get(&double, &token, "/api/v4/nothing/here").await;
        assert_eq!(unknown.status(), 404);
        assert_eq!(
            unknown.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(double.api_requests().len(), 1);
        assert_eq!(double.api_requests()[0].1, "GET /api/v4/nothing/here");
    }

    fn call(id: i64, entity: &'static str, entity_id: i64, incoming: bool, at: i64) -> CallNote {
        CallNote {
            id,
            entity,
            entity_id,
            incoming,
            created_at: at,
            responsible_user_id: 7,
            duration: 60 + id,
            phone: "+79001234567".into(),
            link: format!("https://rec.example/{id}.mp3"),
            call_status: 4,
            call_result: "Talked".into(),
        }
    }

    #[tokio::test]
    async fn call_notes_page_with_next_then_204() {
        let double = AmocrmDouble::start().await;
        let token = double.long_lived_token();
        double.set_rate_limit(1000);
        // Out of order on purpose; one contact note and one outside the range.
        double.add_call_note(call(5, "leads", 11, true, 1_000_300));
        double.add_call_note(call(3, "leads", 10, false, 1_000_100));
        double.add_call_note(call(4, "leads", 10, true, 1_000_100));
        double.add_call_note(call(6, "contacts", 20, true, 1_000_200));
        double.add_call_note(call(7, "leads", 12, true, 1_000_400));
        double.add_call_note(call(2, "leads", 10, true, 999_000));

        let first = "/api/v4/leads/notes?filter[note_type][]=call_in&filter[note_type][]=call_out\
                     &filter[updated_at][from]=1000100&filter[updated_at][to]=1000400&limit=2&page=1";
        let response = get(&double, &token, first).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/hal+json");
        let page: Value = response.json().await.unwrap();
        assert_eq!(page["_page"], 1);
        let notes = page["_embedded"]["notes"].as_array().unwrap();
        let ids: Vec<i64> = notes.iter().map(|n| n["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, [3, 4]);
        assert_eq!(notes[0]["note_type"], "call_out");
        assert_eq!(notes[0]["updated_at"], notes[0]["created_at"]);
        assert_eq!(notes[1]["params"]["link"], "https://rec.example/4.mp3");
        assert_eq!(notes[1]["params"]["duration"], 64);
        assert_eq!(notes[1]["group_id"], 0);
        assert_eq!(notes[1]["account_id"], ACCOUNT_ID);

        let next = page["_links"]["next"]["href"].as_str().unwrap().to_owned();
        assert!(next.starts_with(&double.base_url()));
        let page2: Value = reqwest::Client::new()
            .get(&next)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page2["_page"], 2);
        let ids: Vec<i64> = page2["_embedded"]["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [5, 7], "the `to` bound is inclusive");
        assert!(page2["_links"].get("next").is_none());

        let empty = get(&double, &token, &first.replace("page=1", "page=3")).await;
        assert_eq!(empty.status(), 204);
        assert!(empty.bytes().await.unwrap().is_empty());

        // A single note_type, an entity filter, http_build_query's [0] form.
        let single = "/api/v4/leads/notes?filter[note_type]=call_in&filter[entity_id][0]=10";
        let page: Value = get(&double, &token, single).await.json().await.unwrap();
        let ids: Vec<i64> = page["_embedded"]["notes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [2, 4]);

        let contacts: Value = get(&double, &token, "/api/v4/contacts/notes")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(contacts["_embedded"]["notes"][0]["id"], 6);
        assert_eq!(
            get(&double, &token, "/api/v4/companies/notes")
                .await
                .status(),
            204
        );

        let too_many = get(&double, &token, "/api/v4/leads/notes?limit=251").await;
        assert_eq!(too_many.status(), 400);
        let body: Value = too_many.json().await.unwrap();
        assert_eq!(body["validation-errors"][0]["errors"][0]["path"], "limit");
        let bad_range = get(
            &double,
            &token,
            "/api/v4/leads/notes?filter[updated_at][from]=yesterday",
        )
        .await;
        assert_eq!(bad_range.status(), 400);
    }

    #[tokio::test]
    async fn bursts_over_the_rate_are_refused() {
        let double = AmocrmDouble::start().await;
        let token = double.long_lived_token();
        let client = reqwest::Client::new();
        let url = format!("{}/api/v4/account", double.base_url());
        let burst = (0..10).map(|_| client.get(&url).bearer_auth(&token).send());
        let responses = futures_join(burst).await;
        let mut ok = 0;
        let mut refused = 0;
        for response in responses {
            match response.status().as_u16() {
                200 => ok += 1,
                429 => {
                    refused += 1;
                    let text = response.text().await.unwrap();
                    assert!(serde_json::from_str::<Value>(&text).is_err());
                }
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!((ok, refused), (7, 3));
        assert_eq!(double.rate_limited(), 3);
        assert_eq!(double.api_requests().len(), 7);

        double.set_rate_limit(2);
        let burst = (0..4).map(|_| client.get(&url).bearer_auth(&token).send());
        let statuses: Vec<u16> = futures_join(burst)
            .await
            .iter()
            .map(|r| r.status().as_u16())
            .collect();
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
        // The window slides: a second later there is room again.
        tokio::time::sleep(Duration::from_millis(1050)).await;
        assert_eq!(get(&double, &token, "/api/v4/account").await.status(), 200);
        // OAuth and recordings are not limited.
        let link = double.add_recording("a.mp3", vec![1, 2, 3]);
        for _ in 0..5 {
            assert_eq!(reqwest::get(&link).await.unwrap().status(), 200);
        }
        assert_eq!(double.rate_limited(), 5);
    }

    /// Sends all requests at once and waits for every answer.
    async fn futures_join<F>(requests: impl Iterator<Item = F>) -> Vec<reqwest::Response>
    where
        F: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
    {
        let handles: Vec<_> = requests.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await.unwrap().unwrap());
        }
        out
    }

    #[tokio::test]
    async fn users_pipelines_fields_and_leads() {
        let double = AmocrmDouble::start().await;
        let token = double.long_lived_token();
        double.set_rate_limit(1000);
        double.add_user(User {
            id: 504141,
            name: "Анна".into(),
            email: "anna@example.com".into(),
        });
        double.add_pipeline(3508507, "Продажи", &[(7039101, "Первичный контакт")]);
        double.add_custom_field(66339, "Оценка звонка");
        double.add_lead(Lead {
            id: 25399013,
            name: "Сделка".into(),
            price: 1000,
            pipeline_id: 3508507,
            status_id: 7039101,
            responsible_user_id: 504141,
            custom_fields: vec![],
        });

        let users: Value = get(&double, &token, "/api/v4/users")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(users["_embedded"]["users"][0]["email"], "anna@example.com");
        assert_eq!(users["_embedded"]["users"][0]["lang"], "ru");
        assert!(users["_embedded"]["users"][0]["rights"].is_object());

        let pipelines: Value = get(&double, &token, "/api/v4/leads/pipelines")
            .await
            .json()
            .await
            .unwrap();
        let statuses = &pipelines["_embedded"]["pipelines"][0]["_embedded"]["statuses"];
        let ids: Vec<i64> = statuses
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, [7039101, 142, 143]);
        assert_eq!(statuses[1]["name"], "Успешно реализовано");
        assert_eq!(statuses[0]["pipeline_id"], 3508507);
        assert_eq!(pipelines["_embedded"]["pipelines"][0]["is_main"], true);

        let fields: Value = get(&double, &token, "/api/v4/leads/custom_fields")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(fields["_embedded"]["custom_fields"][0]["id"], 66339);
        assert_eq!(fields["_embedded"]["custom_fields"][0]["type"], "text");

        let lead: Value = get(&double, &token, "/api/v4/leads/25399013?with=contacts")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(lead["price"], 1000);
        assert!(lead["custom_fields_values"].is_null());
        assert_eq!(lead["_embedded"]["contacts"], json!([]));
        assert_eq!(get(&double, &token, "/api/v4/leads/1").await.status(), 204);

        let client = reqwest::Client::new();
        let patch = |body: String| {
            client
                .patch(format!("{}/api/v4/leads/25399013", double.base_url()))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let refused = patch(
            json!({"custom_fields_values": [{"field_id": 66339, "values": [{"value": "ok"}]},
                                              {"field_id": 1, "values": [{"value": "x"}]}]})
            .to_string(),
        )
        .await
        .unwrap();
        assert_eq!(refused.status(), 400);
        assert_eq!(
            refused.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = refused.json().await.unwrap();
        assert_eq!(
            body,
            json!({"title": "Bad Request", "type": "https://httpstatus.es/400", "status": 400,
                   "detail": "Request validation failed",
                   "validation-errors": [{"request_id": "0", "errors": [{
                       "code": "NotSupportedChoice", "path": "custom_fields_values.1.field_id",
                       "detail": "The value you selected is not a valid choice."}]}]})
        );
        assert!(double.lead_updates().is_empty());

        let bad_status = patch(json!({"status_id": 999}).to_string()).await.unwrap();
        assert_eq!(bad_status.status(), 400);
        let malformed = patch("{\"custom_fields_values\":".into()).await.unwrap();
        assert_eq!(malformed.status(), 400);
        assert_eq!(
            malformed.headers()["content-type"],
            "application/problem+json"
        );

        let update = json!({"status_id": 142,
            "custom_fields_values": [{"field_id": 66339, "values": [{"value": "Оценка 87"}]}]});
        let accepted = patch(update.to_string()).await.unwrap();
        assert_eq!(accepted.status(), 200);
        let body: Value = accepted.json().await.unwrap();
        assert_eq!(body["id"], 25399013);
        assert!(body["updated_at"].is_i64());
        assert_eq!(double.lead_updates(), vec![(25399013, update)]);

        let lead: Value = get(&double, &token, "/api/v4/leads/25399013")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(lead["status_id"], 142);
        assert_eq!(
            lead["custom_fields_values"],
            json!([{"field_id": 66339, "field_name": "Оценка звонка", "field_code": null,
                    "field_type": "text", "values": [{"value": "Оценка 87"}]}])
        );
    }

    #[tokio::test]
    async fn text_notes_are_validated_and_recorded() {
        let double = AmocrmDouble::start().await;
        let token = double.long_lived_token();
        double.set_rate_limit(1000);
        double.add_lead(Lead {
            id: 42,
            name: "Lead".into(),
            ..Lead::default()
        });
        let client = reqwest::Client::new();
        let post = |id: i64, body: String| {
            client
                .post(format!("{}/api/v4/leads/{id}/notes", double.base_url()))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };

        let note = json!({"note_type": "common", "params": {"text": "Итог звонка"}});
        let ok = post(42, json!([note]).to_string()).await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["content-type"], "application/hal+json");
        let body: Value = ok.json().await.unwrap();
        let created = &body["_embedded"]["notes"][0];
        assert_eq!(created["entity_id"], 42);
        assert_eq!(created["request_id"], "0");
        assert!(created["id"].is_i64());
        assert_eq!(double.notes_added(), vec![(42, note.clone())]);

        for bad in [
            json!([]),
            json!({"note_type": "common"}),
            json!([{"note_type": "common", "params": {"text": ""}}]),
            json!([{"note_type": "common", "params": {}}]),
            json!([{"note_type": "shout", "params": {"text": "x"}}]),
            json!([{"params": {"text": "x"}}]),
            json!(["text"]),
        ] {
            let response = post(42, bad.to_string()).await.unwrap();
            assert_eq!(response.status(), 400, "{bad}");
            let body: Value = response.json().await.unwrap();
            assert!(
                body["validation-errors"][0]["errors"][0]["code"].is_string(),
                "{bad}"
            );
        }
        let two = json!([note, {"request_id": "x7", "note_type": "common", "params": {"text": 5}}]);
        let body: Value = post(42, two.to_string())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["validation-errors"][0]["request_id"], "x7");
        assert_eq!(
            body["validation-errors"][0]["errors"][0]["path"],
            "params.text"
        );

        assert_eq!(post(42, "[{".into()).await.unwrap().status(), 400);
        assert_eq!(
            post(7, json!([note]).to_string()).await.unwrap().status(),
            404
        );
        assert_eq!(double.notes_added().len(), 1);

        // The client's own note shows up in an unfiltered read, not in a call read.
        let all: Value = get(&double, &token, "/api/v4/leads/notes")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(all["_embedded"]["notes"][0]["note_type"], "common");
        let calls = get(
            &double,
            &token,
            "/api/v4/leads/notes?filter[note_type][]=call_in",
        )
        .await;
        assert_eq!(calls.status(), 204);
    }

    #[tokio::test]
    async fn recordings_download_without_auth() {
        let double = AmocrmDouble::start().await;
        let url = double.add_recording("call-1.mp3", b"ID3audio".to_vec());
        assert_eq!(url, format!("{}/records/call-1.mp3", double.base_url()));
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"ID3audio");
        let missing = reqwest::get(format!("{}/records/none.mp3", double.base_url()))
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        assert_eq!(double.downloads(), 1);
    }
}
