//! A Bitrix24 REST double (integrations.md §3, §5): one portal reachable
//! through an inbound webhook (`/rest/{user}/{secret}/{method}`) and through
//! OAuth (`/rest/{method}?auth=…`, tokens from `/oauth/token/` as
//! oauth.bitrix.info issues them), parameters as JSON, form or PHP-style
//! query strings, 50-row pages with `total`/`next`, a leaky bucket answering
//! 503 `QUERY_LIMIT_EXCEEDED`, call statistics with Bitrix's prefixed filter
//! keys, Disk downloads, deal reads, timeline comments, `batch`, and the
//! `ONVOXIMPLANTCALLEND` event as a form post.
//!
//! Numbers come back as strings where the real service sends strings, so a
//! client that assumes JSON numbers fails here as it would there.
//!
//! Everything is written again from the spec rather than borrowed from the
//! product, so a mistake in one is caught by the other.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

/// The application's `client_id` as the partner cabinet shows it.
pub const CLIENT_ID: &str = "local.65f1c2a9d4e3b7.41829375";
/// The application's `client_secret`.
pub const CLIENT_SECRET: &str = "Xk9mP2vQ7rT4wY8zB3nC6dF1gH5jL0sA2eU7iO9tR4yW6qE";
/// The employee who created the inbound webhook.
pub const WEBHOOK_USER: i64 = 1;
/// The portal's `member_id`.
pub const MEMBER_ID: &str = "a223c6b3710f85df22e9377d6c4f7553";

/// The real service's code lifetime.
const CODE_LIFETIME: Duration = Duration::from_secs(30);
const PAGE: usize = 50;
const BATCH_MAX: usize = 50;

/// An employee (`user.get`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct B24User {
    pub id: i64,
    pub name: String,
    pub last_name: String,
    pub email: String,
    /// The internal phone number (`UF_PHONE_INNER`).
    pub inner_phone: Option<String>,
}

/// A row of the call statistics (`voximplant.statistic.get`). Its `CALL_ID`
/// is [`call_id`] of `id`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatRecord {
    pub id: i64,
    pub portal_user_id: i64,
    pub phone: String,
    /// 1 outgoing, 2 incoming, 3 incoming with redirection, 4 callback,
    /// 5 informational.
    pub call_type: i64,
    pub duration: i64,
    /// ISO-8601 with offset, e.g. `2026-03-10T11:19:38+03:00`.
    pub start: String,
    pub record_file_id: Option<i64>,
    /// `CONTACT`, `COMPANY` or `LEAD`.
    pub crm_entity_type: Option<String>,
    pub crm_entity_id: Option<i64>,
    /// `"200"`, `"304"`, `"603-S"` …
    pub failed_code: String,
}

/// The `CALL_ID` the statistics and the call-end event give record `id`:
/// `externalCall.` and 32 hex digits, fixed for a given id.
pub fn call_id(record_id: i64) -> String {
    let a = splitmix(record_id as u64);
    let b = splitmix(a);
    format!("externalCall.{a:016x}{b:016x}")
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Deal {
    title: String,
    stage_id: String,
    assigned_by_id: i64,
    created: i64,
    modified: i64,
}

struct Auth {
    /// Live code → when it was issued.
    codes: HashMap<String, Instant>,
    code_lifetime: Duration,
    /// Access token → expired?
    access: HashMap<String, bool>,
    refresh: HashSet<String>,
}

struct Bucket {
    capacity: u32,
    drain_per_sec: f64,
    level: f64,
    last: Instant,
}

#[derive(Default)]
struct Data {
    users: BTreeMap<i64, B24User>,
    records: BTreeMap<i64, StatRecord>,
    files: HashMap<i64, Vec<u8>>,
    /// `token` parameter of a download URL → file id.
    download_tokens: HashMap<String, i64>,
    deals: BTreeMap<i64, Deal>,
    /// Stage names given by the test: stage id → name.
    stage_names: BTreeMap<String, String>,
    comments: Vec<Value>,
    next_comment_id: i64,
    deal_updates: Vec<(i64, Value)>,
}

#[derive(Default)]
struct Log {
    downloads: usize,
    limit_refusals: usize,
    calls: Vec<String>,
}

struct Shared {
    addr: SocketAddr,
    webhook_secret: String,
    seed: RandomState,
    counter: AtomicU64,
    auth: Mutex<Auth>,
    bucket: Mutex<Bucket>,
    data: Mutex<Data>,
    log: Mutex<Log>,
}

pub struct Bitrix24Double {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Bitrix24Double {
    /// Starts on a free loopback port with an empty portal and the standard
    /// plan's bucket (50 requests, draining 2 a second).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seed = RandomState::new();
        let mut h = seed.build_hasher();
        h.write_u64(u64::from(addr.port()));
        let webhook_secret = format!("{:016x}", h.finish());
        let shared = Arc::new(Shared {
            addr,
            webhook_secret,
            seed,
            counter: AtomicU64::new(1),
            auth: Mutex::new(Auth {
                codes: HashMap::new(),
                code_lifetime: CODE_LIFETIME,
                access: HashMap::new(),
                refresh: HashSet::new(),
            }),
            bucket: Mutex::new(Bucket {
                capacity: 50,
                drain_per_sec: 2.0,
                level: 0.0,
                last: Instant::now(),
            }),
            data: Mutex::new(Data {
                next_comment_id: 1000,
                ..Data::default()
            }),
            log: Mutex::new(Log::default()),
        });
        let app = Router::new().fallback(portal).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared }
    }

    /// The portal, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An inbound webhook of [`WEBHOOK_USER`]: `…/rest/1/<secret>/`; append
    /// the method name.
    pub fn webhook_url(&self) -> String {
        format!(
            "{}/rest/{WEBHOOK_USER}/{}/",
            self.base_url(),
            self.shared.webhook_secret
        )
    }

    /// Where tokens are issued (`GET {oauth_url}/oauth/token/?…`): this same
    /// server, standing in for oauth.bitrix.info.
    pub fn oauth_url(&self) -> String {
        self.base_url()
    }

    /// What the redirect URI receives after consent: a code for one
    /// exchange within 30 seconds.
    pub fn issue_code(&self) -> String {
        let code = self.shared.token("");
        self.shared
            .auth
            .lock()
            .unwrap()
            .codes
            .insert(code.clone(), Instant::now());
        code
    }

    /// An hour passes: every OAuth access token issued so far answers 401
    /// `expired_token`. Refresh tokens stay good.
    pub fn expire_access_tokens(&self) {
        for expired in self.shared.auth.lock().unwrap().access.values_mut() {
            *expired = true;
        }
    }

    /// Sets the bucket and empties it.
    pub fn set_bucket(&self, capacity: u32, drain_per_sec: f64) {
        *self.shared.bucket.lock().unwrap() = Bucket {
            capacity,
            drain_per_sec,
            level: 0.0,
            last: Instant::now(),
        };
    }

    pub fn add_user(&self, user: B24User) {
        self.shared.data.lock().unwrap().users.insert(user.id, user);
    }

    pub fn add_record(&self, record: StatRecord) {
        self.shared
            .data
            .lock()
            .unwrap()
            .records
            .insert(record.id, record);
    }

    /// A Disk file, served through the `DOWNLOAD_URL` of `disk.file.get`.
    pub fn add_file(&self, file_id: i64, audio: Vec<u8>) {
        self.shared
            .data
            .lock()
            .unwrap()
            .files
            .insert(file_id, audio);
    }

    /// A deal; `C{n}:`-prefixed stage ids put it in pipeline (category) n.
    pub fn add_deal(&self, id: i64, title: &str, stage_id: &str, assigned_by_id: i64) {
        let now = now_unix();
        self.shared.data.lock().unwrap().deals.insert(
            id,
            Deal {
                title: title.to_owned(),
                stage_id: stage_id.to_owned(),
                assigned_by_id,
                created: now,
                modified: now,
            },
        );
    }

    /// Names a deal stage for `crm.status.list` (stages without a name are
    /// listed under their id).
    pub fn add_stage(&self, stage_id: &str, name: &str) {
        self.shared
            .data
            .lock()
            .unwrap()
            .stage_names
            .insert(stage_id.to_owned(), name.to_owned());
    }

    /// The `fields` objects accepted by `crm.timeline.comment.add`.
    pub fn comments(&self) -> Vec<Value> {
        self.shared.data.lock().unwrap().comments.clone()
    }

    /// (deal id, `FIELDS`) accepted by `crm.deal.update`.
    pub fn deal_updates(&self) -> Vec<(i64, Value)> {
        self.shared.data.lock().unwrap().deal_updates.clone()
    }

    pub fn downloads(&self) -> usize {
        self.shared.log.lock().unwrap().downloads
    }

    /// 503 `QUERY_LIMIT_EXCEEDED` answers.
    pub fn limit_refusals(&self) -> usize {
        self.shared.log.lock().unwrap().limit_refusals
    }

    /// Known methods of requests that passed the bucket and auth, in order,
    /// as named in the URL less `.json`, whatever their answer (`batch`
    /// sub-calls are not listed).
    pub fn calls(&self) -> Vec<String> {
        self.shared.log.lock().unwrap().calls.clone()
    }

    /// Posts `ONVOXIMPLANTCALLEND` for `record` to `handler_url` as the
    /// portal does: a form with PHP-style `data[…]` and `auth[…]` keys.
    /// `data[CALL_ID]` is the record's `CALL_ID` in the statistics.
    pub async fn post_call_end(
        &self,
        handler_url: &str,
        application_token: &str,
        record: &StatRecord,
    ) -> reqwest::Response {
        let fields: Vec<(&str, String)> = vec![
            ("event", "ONVOXIMPLANTCALLEND".to_owned()),
            ("event_handler_id", "1".to_owned()),
            ("data[CALL_ID]", call_id(record.id)),
            ("data[CALL_TYPE]", record.call_type.to_string()),
            ("data[PHONE_NUMBER]", record.phone.clone()),
            ("data[PORTAL_USER_ID]", record.portal_user_id.to_string()),
            ("data[CALL_DURATION]", record.duration.to_string()),
            ("data[CALL_START_DATE]", record.start.clone()),
            ("data[CALL_FAILED_CODE]", record.failed_code.clone()),
            ("data[CRM_ACTIVITY_ID]", activity_id(record.id)),
            ("ts", now_unix().to_string()),
            ("auth[domain]", self.addr.to_string()),
            (
                "auth[client_endpoint]",
                format!("{}/rest/", self.base_url()),
            ),
            (
                "auth[server_endpoint]",
                format!("{}/rest/", self.base_url()),
            ),
            ("auth[member_id]", MEMBER_ID.to_owned()),
            ("auth[application_token]", application_token.to_owned()),
        ];
        reqwest::Client::new()
            .post(handler_url)
            .form(&fields)
            .send()
            .await
            .unwrap()
    }
}

impl Shared {
    fn token(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut a = self.seed.build_hasher();
        a.write_u64(n);
        let mut b = self.seed.build_hasher();
        b.write_u64(!n);
        format!("{prefix}{:016x}{:016x}", a.finish(), b.finish())
    }

    /// The leaky bucket: +1 a request, draining continuously; a request
    /// that would overflow it is refused and adds nothing.
    fn admit(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap();
        let now = Instant::now();
        let drained = now.duration_since(bucket.last).as_secs_f64() * bucket.drain_per_sec;
        bucket.level = (bucket.level - drained).max(0.0);
        bucket.last = now;
        if bucket.level + 1.0 > f64::from(bucket.capacity) {
            return false;
        }
        bucket.level += 1.0;
        true
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn activity_id(record_id: i64) -> String {
    (7000 + record_id).to_string()
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------- dates

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds of `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` with `Z`,
/// `±HH:MM`, `±HHMM`, `±HH` or no offset (then UTC); a space may stand for
/// `T`.
fn parse_iso(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = s.get(a..b)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let sep = |i: usize, c: u8| s.as_bytes().get(i) == Some(&c);
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if !sep(4, b'-') || !sep(7, b'-') || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if s.len() == 10 {
        return Some(days * 86_400);
    }
    if !(sep(10, b'T') || sep(10, b't') || sep(10, b' ')) || !sep(13, b':') {
        return None;
    }
    let (hh, mm) = (num(11, 13)?, num(14, 16)?);
    let mut rest = 16;
    let mut ss = 0;
    if sep(16, b':') {
        ss = num(17, 19)?;
        rest = 19;
        if sep(19, b'.') || sep(19, b',') {
            rest = 20;
            while s.as_bytes().get(rest).is_some_and(u8::is_ascii_digit) {
                rest += 1;
            }
        }
    }
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let zone = s.get(rest..)?;
    let offset = match zone {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
            if !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (oh, om) = match digits.len() {
                2 => (digits.parse::<i64>().ok()?, 0),
                4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
                _ => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

/// `2026-03-10T11:19:38+03:00` — the portal's zone is Moscow.
fn format_iso(unix: i64) -> String {
    let local = unix + 3 * 3600;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+03:00",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// ---------------------------------------------------------------- params

/// Fills a JSON tree from `a[b][]=1&a[c]=2` as PHP fills `$_GET`; lists
/// written with `[]` or `[0]` become arrays.
fn php_params(pairs: impl Iterator<Item = (String, String)>) -> Map<String, Value> {
    let mut root = Value::Object(Map::new());
    for (key, value) in pairs {
        let path = split_key(&key);
        if path[0].is_empty() {
            continue;
        }
        insert(&mut root, &path, value);
    }
    match normalize(root) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// `a[b][]` → `["a", "b", ""]`; a key with unbalanced brackets is one name.
fn split_key(key: &str) -> Vec<String> {
    let Some(open) = key.find('[') else {
        return vec![key.to_owned()];
    };
    let mut path = vec![key[..open].to_owned()];
    let mut rest = &key[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return vec![key.to_owned()];
        };
        path.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    if !rest.is_empty() {
        return vec![key.to_owned()];
    }
    path
}

fn insert(target: &mut Value, path: &[String], value: String) {
    let Some((first, rest)) = path.split_first() else {
        *target = Value::String(value);
        return;
    };
    if first.is_empty() {
        if let Value::Object(map) = target {
            // PHP appends after the largest index; a fresh key does here.
            let key = map.len().to_string();
            let slot = map.entry(key).or_insert(Value::Null);
            insert(slot, rest, value);
            return;
        }
        if !target.is_array() {
            *target = Value::Array(Vec::new());
        }
        if let Value::Array(list) = target {
            list.push(Value::Null);
            if let Some(last) = list.last_mut() {
                insert(last, rest, value);
            }
        }
        return;
    }
    if let Value::Array(list) = target {
        let map: Map<String, Value> = std::mem::take(list)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect();
        *target = Value::Object(map);
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        let slot = map.entry(first.clone()).or_insert(Value::Null);
        insert(slot, rest, value);
    }
}

/// Objects whose keys are all indices become arrays, in index order.
fn normalize(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let indexed = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            if indexed {
                let mut items: Vec<(usize, Value)> = map
                    .into_iter()
                    .map(|(k, v)| (k.parse().unwrap_or(0), normalize(v)))
                    .collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, normalize(v))).collect())
            }
        }
        Value::Array(list) => Value::Array(list.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn query_params(query: &str) -> Map<String, Value> {
    php_params(url::form_urlencoded::parse(query.as_bytes()).into_owned())
}

/// Query parameters, overridden by the body's (JSON or form).
fn request_params(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, Fail> {
    let mut params = query_params(uri.query().unwrap_or_default());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body_params = if content_type.starts_with("application/x-www-form-urlencoded") {
        php_params(url::form_urlencoded::parse(body).into_owned())
    } else if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map,
            Ok(Value::Array(list)) if list.is_empty() => Map::new(),
            Ok(_) => {
                return Err(Fail::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "The request body must be a JSON object",
                ))
            }
            Err(e) => {
                return Err(Fail::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    &format!("Invalid JSON: {e}"),
                ))
            }
        }
    };
    params.extend(body_params);
    Ok(params)
}

/// A parameter by name in any letter case (`FILTER`, `filter`).
fn get_ci<'a>(params: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    params.get(name).or_else(|| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "Y" } else { "N" }.to_owned()),
        _ => None,
    }
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() != Some(0),
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "y" | "1" | "true"),
        _ => false,
    }
}

/// One value or each of a list (`"2"`, `2`, `[1, 2]`, `{"0": 1}`).
fn each(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(list) => list.iter().collect(),
        Value::Object(map) => map.values().collect(),
        other => vec![other],
    }
}

// ---------------------------------------------------------------- answers

/// A refused call: status, `error`, `error_description`.
struct Fail {
    status: StatusCode,
    code: String,
    description: String,
}

impl Fail {
    fn new(status: StatusCode, code: &str, description: &str) -> Self {
        Self {
            status,
            code: code.to_owned(),
            description: description.to_owned(),
        }
    }

    fn argument(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ERROR_ARGUMENT", description)
    }

    fn body(&self) -> Value {
        json!({"error": self.code, "error_description": self.description})
    }

    fn response(&self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A method's answer before the envelope.
struct Answer {
    result: Value,
    total: Option<usize>,
    next: Option<usize>,
}

impl Answer {
    fn plain(result: Value) -> Self {
        Self {
            result,
            total: None,
            next: None,
        }
    }
}

fn time_object(start: f64) -> Value {
    let finish = now_f64().max(start);
    json!({
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": finish - start,
        "date_start": format_iso(start as i64),
        "date_finish": format_iso(finish as i64),
        "operating_reset_at": finish as i64 + 600,
        "operating": 0,
    })
}

/// `offset` from `start`: a page number times 50; `-1` asks for no count.
fn start_param(params: &Map<String, Value>) -> (usize, bool) {
    match get_ci(params, "start").and_then(as_i64) {
        Some(-1) => (0, false),
        Some(n) if n > 0 => (n as usize, true),
        _ => (0, true),
    }
}

/// One 50-row page of `rows` from `offset`, with `total` (unless `count`
/// is off, as for `start=-1`) and `next` when more remain.
fn page_of(rows: Vec<Value>, offset: usize, count: bool) -> Answer {
    let total = rows.len();
    let page: Vec<Value> = rows.into_iter().skip(offset).take(PAGE).collect();
    let more = offset + PAGE < total;
    Answer {
        result: Value::Array(page),
        total: count.then_some(total),
        next: (count && more).then_some(offset + PAGE),
    }
}

// ---------------------------------------------------------------- routing

async fn portal(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = now_f64();
    let path = uri.path().to_owned();
    if path == "/oauth/token/" || path == "/oauth/token" {
        return oauth_token(&shared, &uri, &headers, &body);
    }
    if path == "/rest/download.json" || path == "/rest/download/" {
        return download(&shared, &uri);
    }
    let Some(rest) = path.strip_prefix("/rest/") else {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    };
    if !shared.admit() {
        shared.log.lock().unwrap().limit_refusals += 1;
        return Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "QUERY_LIMIT_EXCEEDED",
            "Too many requests",
        )
        .response();
    }
    let mut params = match request_params(&uri, &headers, &body) {
        Ok(p) => p,
        Err(fail) => return fail.response(),
    };
    let no_auth = || {
        Fail::new(
            StatusCode::UNAUTHORIZED,
            "NO_AUTH_FOUND",
            "Wrong authorization data",
        )
        .response()
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = match segments.as_slice() {
        [user, secret, method] => {
            if *user != WEBHOOK_USER.to_string() || *secret != shared.webhook_secret {
                return no_auth();
            }
            *method
        }
        [method] => {
            let token = params.remove("auth").as_ref().and_then(as_text);
            let Some(token) = token else {
                return no_auth();
            };
            match shared.auth.lock().unwrap().access.get(&token) {
                Some(false) => {}
                Some(true) => {
                    return Fail::new(
                        StatusCode::UNAUTHORIZED,
                        "expired_token",
                        "The access token provided has expired.",
                    )
                    .response()
                }
                None => {
                    return Fail::new(
                        StatusCode::UNAUTHORIZED,
                        "invalid_token",
                        "The access token provided is invalid.",
                    )
                    .response()
                }
            }
            *method
        }
        _ => return no_auth(),
    };
    let method = method.strip_suffix(".json").unwrap_or(method);
    if METHODS.contains(&method.to_ascii_lowercase().as_str()) {
        shared.log.lock().unwrap().calls.push(method.to_owned());
    }
    let outcome = if method.eq_ignore_ascii_case("batch") {
        batch(&shared, &params)
    } else {
        execute(&shared, method, &params)
    };
    match outcome {
        Ok(answer) => {
            let mut body = Map::new();
            body.insert("result".into(), answer.result);
            if let Some(total) = answer.total {
                body.insert("total".into(), json!(total));
            }
            if let Some(next) = answer.next {
                body.insert("next".into(), json!(next));
            }
            body.insert("time".into(), time_object(started));
            axum::Json(Value::Object(body)).into_response()
        }
        Err(fail) => fail.response(),
    }
}

/// The methods this portal knows, in lower case.
const METHODS: [&str; 8] = [
    "batch",
    "user.get",
    "voximplant.statistic.get",
    "disk.file.get",
    "crm.deal.get",
    "crm.deal.update",
    "crm.status.list",
    "crm.timeline.comment.add",
];

fn execute(shared: &Shared, method: &str, params: &Map<String, Value>) -> Result<Answer, Fail> {
    match method.to_ascii_lowercase().as_str() {
        "user.get" => user_get(shared, params),
        "voximplant.statistic.get" => statistic_get(shared, params),
        "disk.file.get" => disk_file_get(shared, params),
        "crm.deal.get" => deal_get(shared, params),
        "crm.deal.update" => deal_update(shared, params),
        "crm.status.list" => status_list(shared, params),
        "crm.timeline.comment.add" => comment_add(shared, params),
        "batch" => Err(Fail::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "Method is not allowed for batch usage",
        )),
        _ => Err(Fail::new(
            StatusCode::NOT_FOUND,
            "ERROR_METHOD_NOT_FOUND",
            "Method not found!",
        )),
    }
}

// ---------------------------------------------------------------- OAuth

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    Fail::new(status, code, description).response()
}

/// `GET /oauth/token/` as oauth.bitrix.info answers it (a form POST is
/// taken too).
fn oauth_token(shared: &Shared, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let params = match request_params(uri, headers, body) {
        Ok(p) => p,
        Err(fail) => return fail.response(),
    };
    let field = |name: &str| params.get(name).and_then(as_text).unwrap_or_default();
    let grant_type = field("grant_type");
    if grant_type != "authorization_code" && grant_type != "refresh_token" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid grant_type",
        );
    }
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        );
    }
    let mut auth = shared.auth.lock().unwrap();
    if grant_type == "authorization_code" {
        let code = field("code");
        let lifetime = auth.code_lifetime;
        match auth.codes.remove(&code) {
            Some(issued) if issued.elapsed() <= lifetime => {}
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid authorization code",
                )
            }
        }
    } else if !auth.refresh.remove(&field("refresh_token")) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid refresh token",
        );
    }
    let access = shared.token("");
    let refresh = shared.token("");
    auth.access.insert(access.clone(), false);
    auth.refresh.insert(refresh.clone());
    let endpoint = format!("{}/rest/", shared.base());
    axum::Json(json!({
        "access_token": access,
        "expires": now_unix() + 3600,
        "expires_in": 3600,
        "scope": "crm,telephony,disk,user",
        "domain": shared.addr.to_string(),
        "server_endpoint": endpoint,
        "status": "L",
        "client_endpoint": endpoint,
        "member_id": MEMBER_ID,
        "user_id": WEBHOOK_USER,
        "refresh_token": refresh,
    }))
    .into_response()
}

// ---------------------------------------------------------------- methods

fn user_json(user: &B24User) -> Value {
    json!({
        "ID": user.id.to_string(),
        "XML_ID": null,
        "ACTIVE": true,
        "NAME": user.name,
        "LAST_NAME": user.last_name,
        "SECOND_NAME": "",
        "EMAIL": user.email,
        "WORK_PHONE": "",
        "PERSONAL_MOBILE": "",
        "UF_PHONE_INNER": user.inner_phone,
        "UF_DEPARTMENT": [1],
        "IS_ONLINE": "N",
        "USER_TYPE": "employee",
    })
}

fn user_get(shared: &Shared, params: &Map<String, Value>) -> Result<Answer, Fail> {
    let empty = Map::new();
    let filter = match get_ci(params, "FILTER") {
        Some(Value::Object(map)) => map,
        Some(Value::Array(list)) if list.is_empty() => &empty,
        None => &empty,
        Some(_) => return Err(Fail::argument("FILTER must be an object")),
    };
    let mut ids: Vec<i64> = Vec::new();
    for source in [filter.get("ID"), params.get("ID")].into_iter().flatten() {
        ids.extend(each(source).into_iter().filter_map(as_i64));
    }
    let text = |key: &str| filter.get(key).and_then(as_text);
    let active = filter.get("ACTIVE").map(truthy);
    let data = shared.data.lock().unwrap();
    let rows: Vec<Value> = data
        .users
        .values()
        .filter(|u| ids.is_empty() || ids.contains(&u.id))
        .filter(|_| active != Some(false))
        .filter(|u| text("EMAIL").is_none_or(|e| e.eq_ignore_ascii_case(&u.email)))
        .filter(|u| text("NAME").is_none_or(|n| n == u.name))
        .filter(|u| text("LAST_NAME").is_none_or(|n| n == u.last_name))
        .filter(|u| text("UF_PHONE_INNER").is_none_or(|p| Some(&p) == u.inner_phone.as_ref()))
        .map(user_json)
        .collect();
    let (offset, count) = start_param(params);
    Ok(page_of(rows, offset, count))
}

fn failed_reason(code: &str) -> &'static str {
    match code {
        "200" => "Success call",
        "304" => "Skipped call",
        "603" => "Call declined",
        "603-S" => "Call cancelled",
        "403" => "Forbidden",
        "404" => "Invalid number",
        "486" => "Busy",
        "484" | "503" => "This direction is not available",
        "480" => "Temporarily unavailable",
        "402" => "Insufficient funds",
        "423" => "Blocked",
        _ => "Other",
    }
}

fn record_json(record: &StatRecord) -> Value {
    json!({
        "ID": record.id.to_string(),
        "CALL_ID": call_id(record.id),
        "EXTERNAL_CALL_ID": null,
        "CALL_CATEGORY": "external",
        "PORTAL_USER_ID": record.portal_user_id.to_string(),
        "PORTAL_NUMBER": "REST_APP:1",
        "PHONE_NUMBER": record.phone,
        "CALL_TYPE": record.call_type.to_string(),
        "CALL_DURATION": record.duration.to_string(),
        "CALL_START_DATE": record.start,
        "CALL_LOG": null,
        "CALL_RECORD_URL": null,
        "RECORD_FILE_ID": record.record_file_id,
        "RECORD_DURATION": record.record_file_id.map(|_| record.duration.to_string()),
        "CALL_VOTE": null,
        "COST": "0.0000",
        "COST_CURRENCY": "RUR",
        "CALL_FAILED_CODE": record.failed_code,
        "CALL_FAILED_REASON": failed_reason(&record.failed_code),
        "CRM_ENTITY_TYPE": record.crm_entity_type,
        "CRM_ENTITY_ID": record.crm_entity_id.map(|id| id.to_string()),
        "CRM_ACTIVITY_ID": activity_id(record.id),
        "REST_APP_ID": null,
        "REST_APP_NAME": null,
        "TRANSCRIPT_ID": null,
        "TRANSCRIPT_PENDING": "N",
        "SESSION_ID": null,
        "REDIAL_ATTEMPT": null,
        "COMMENT": null,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Date,
    Text,
}

#[derive(PartialEq, PartialOrd)]
enum Cell {
    Int(i64),
    Text(String),
}

fn split_op(key: &str) -> (Op, &str) {
    for (prefix, op) in [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("!=", Op::Ne),
        ("=", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("!", Op::Ne),
    ] {
        if let Some(field) = key.strip_prefix(prefix) {
            return (op, field);
        }
    }
    (Op::Eq, key)
}

fn field_kind(field: &str) -> Option<Kind> {
    match field {
        "ID" | "PORTAL_USER_ID" | "CALL_TYPE" | "CALL_DURATION" | "CRM_ENTITY_ID"
        | "RECORD_FILE_ID" => Some(Kind::Int),
        "CALL_START_DATE" => Some(Kind::Date),
        "CALL_ID" | "PHONE_NUMBER" | "CALL_FAILED_CODE" | "CRM_ENTITY_TYPE" | "PORTAL_NUMBER"
        | "CRM_ACTIVITY_ID" => Some(Kind::Text),
        _ => None,
    }
}

fn cell(record: &StatRecord, field: &str) -> Option<Cell> {
    Some(match field {
        "ID" => Cell::Int(record.id),
        "PORTAL_USER_ID" => Cell::Int(record.portal_user_id),
        "CALL_TYPE" => Cell::Int(record.call_type),
        "CALL_DURATION" => Cell::Int(record.duration),
        "CRM_ENTITY_ID" => Cell::Int(record.crm_entity_id?),
        "RECORD_FILE_ID" => Cell::Int(record.record_file_id?),
        "CALL_START_DATE" => Cell::Int(parse_iso(&record.start)?),
        "CALL_ID" => Cell::Text(call_id(record.id)),
        "PHONE_NUMBER" => Cell::Text(record.phone.clone()),
        "CALL_FAILED_CODE" => Cell::Text(record.failed_code.clone()),
        "CRM_ENTITY_TYPE" => Cell::Text(record.crm_entity_type.clone()?),
        "PORTAL_NUMBER" => Cell::Text("REST_APP:1".into()),
        "CRM_ACTIVITY_ID" => Cell::Text(activity_id(record.id)),
        _ => return None,
    })
}

/// One `FILTER` entry made ready to test records against.
struct Condition {
    op: Op,
    field: String,
    values: Vec<Cell>,
}

impl Condition {
    fn parse(key: &str, value: &Value) -> Result<Self, Fail> {
        let (op, field) = split_op(key);
        let Some(kind) = field_kind(field) else {
            return Err(Fail::argument(&format!(
                "Filter field {key} is not supported by the test double"
            )));
        };
        let values = each(value)
            .into_iter()
            .map(|v| {
                let cell = match kind {
                    Kind::Int => as_i64(v).map(Cell::Int),
                    Kind::Date => v.as_str().and_then(parse_iso).map(Cell::Int),
                    Kind::Text => as_text(v).map(Cell::Text),
                };
                cell.ok_or_else(|| Fail::argument(&format!("Invalid filter value for {key}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            op,
            field: field.to_owned(),
            values,
        })
    }

    fn holds(&self, record: &StatRecord) -> bool {
        let Some(have) = cell(record, &self.field) else {
            return self.op == Op::Ne;
        };
        match self.op {
            Op::Eq => self.values.is_empty() || self.values.contains(&have),
            Op::Ne => !self.values.contains(&have),
            Op::Ge => self.values.iter().all(|v| have >= *v),
            Op::Gt => self.values.iter().all(|v| have > *v),
            Op::Le => self.values.iter().all(|v| have <= *v),
            Op::Lt => self.values.iter().all(|v| have < *v),
        }
    }
}

fn statistic_get(shared: &Shared, params: &Map<String, Value>) -> Result<Answer, Fail> {
    let conditions = match get_ci(params, "FILTER") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) if list.is_empty() => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| Condition::parse(k, v))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(Fail::argument("FILTER must be an object")),
    };
    let (sort_field, sort_order) = match get_ci(params, "SORT") {
        None | Some(Value::Null) => ("ID".to_owned(), get_ci(params, "ORDER").and_then(as_text)),
        Some(Value::String(s)) => (s.clone(), get_ci(params, "ORDER").and_then(as_text)),
        Some(Value::Object(map)) if map.len() == 1 => {
            let (k, v) = map.iter().next().expect("one entry");
            (k.clone(), as_text(v))
        }
        Some(_) => return Err(Fail::argument("SORT must be a field name")),
    };
    let sort_field = sort_field.to_ascii_uppercase();
    if sort_field == "CALL_TYPE" {
        return Err(Fail::argument("Sorting by CALL_TYPE is not allowed"));
    }
    if field_kind(&sort_field).is_none() {
        return Err(Fail::argument(&format!(
            "Sorting by {sort_field} is not supported"
        )));
    }
    let descending = sort_order.is_some_and(|o| o.eq_ignore_ascii_case("DESC"));

    let data = shared.data.lock().unwrap();
    let mut records: Vec<&StatRecord> = data
        .records
        .values()
        .filter(|r| conditions.iter().all(|c| c.holds(r)))
        .collect();
    records.sort_by(|a, b| {
        let key = |r: &StatRecord| cell(r, &sort_field);
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.id.cmp(&b.id))
    });
    if descending {
        records.reverse();
    }
    let rows: Vec<Value> = records.into_iter().map(record_json).collect();
    let (offset, count) = start_param(params);
    Ok(page_of(rows, offset, count))
}

fn disk_file_get(shared: &Shared, params: &Map<String, Value>) -> Result<Answer, Fail> {
    let Some(id) = get_ci(params, "id").and_then(as_i64) else {
        return Err(Fail::argument("Required parameter id is missing"));
    };
    let size = shared.data.lock().unwrap().files.get(&id).map(Vec::len);
    let Some(size) = size else {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "ERROR_NOT_FOUND",
            &format!("Could not find entity with id `{id}`"),
        ));
    };
    let token = format!("disk|{}", shared.token(""));
    let auth = shared.token("");
    shared
        .data
        .lock()
        .unwrap()
        .download_tokens
        .insert(token.clone(), id);
    let now = format_iso(now_unix());
    Ok(Answer::plain(json!({
        "ID": id.to_string(),
        "NAME": format!("call_record_{id}.mp3"),
        "CODE": null,
        "STORAGE_ID": "1",
        "TYPE": "file",
        "PARENT_ID": "7",
        "DELETED_TYPE": "0",
        "GLOBAL_CONTENT_VERSION": "1",
        "FILE_ID": (id + 100_000).to_string(),
        "SIZE": size.to_string(),
        "CREATE_TIME": now,
        "UPDATE_TIME": now,
        "DELETE_TIME": null,
        "CREATED_BY": WEBHOOK_USER.to_string(),
        "UPDATED_BY": WEBHOOK_USER.to_string(),
        "DELETED_BY": "0",
        "DOWNLOAD_URL": format!("{}/rest/download.json?auth={auth}&token={token}", shared.base()),
        "DETAIL_URL": format!("{}/docs/file/call_record_{id}.mp3", shared.base()),
    })))
}

fn download(shared: &Shared, uri: &Uri) -> Response {
    let token = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let audio = {
        let data = shared.data.lock().unwrap();
        data.download_tokens
            .get(&token)
            .and_then(|id| data.files.get(id))
            .cloned()
    };
    match audio {
        Some(audio) => {
            shared.log.lock().unwrap().downloads += 1;
            ([(header::CONTENT_TYPE, "audio/mpeg")], audio).into_response()
        }
        None => (StatusCode::NOT_FOUND, "Not found").into_response(),
    }
}

fn category_of(stage_id: &str) -> i64 {
    stage_id
        .strip_prefix('C')
        .and_then(|r| r.split_once(':'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}

fn semantics(stage_id: &str) -> Option<&'static str> {
    let plain = stage_id.rsplit(':').next().unwrap_or(stage_id);
    match plain {
        "WON" => Some("S"),
        "LOSE" | "APOLOGY" => Some("F"),
        _ => None,
    }
}

fn deal_id(params: &Map<String, Value>) -> Result<i64, Fail> {
    get_ci(params, "ID")
        .and_then(as_i64)
        .filter(|id| *id > 0)
        .ok_or_else(|| Fail::new(StatusCode::BAD_REQUEST, "", "ID is not defined or invalid."))
}

fn deal_get(shared: &Shared, params: &Map<String, Value>) -> Result<Answer, Fail> {
    let id = deal_id(params)?;
    let data = shared.data.lock().unwrap();
    let Some(deal) = data.deals.get(&id) else {
        return Err(Fail::new(StatusCode::BAD_REQUEST, "", "Not found"));
    };
    let closed = semantics(&deal.stage_id).is_some();
    Ok(Answer::plain(json!({
        "ID": id.to_string(),
        "TITLE": deal.title,
        "TYPE_ID": "SALE",
        "STAGE_ID": deal.stage_id,
        "CATEGORY_ID": category_of(&deal.stage_id).to_string(),
        "STAGE_SEMANTIC_ID": semantics(&deal.stage_id).unwrap_or("P"),
        "ASSIGNED_BY_ID": deal.assigned_by_id.to_string(),
        "CREATED_BY_ID": deal.assigned_by_id.to_string(),
        "CONTACT_ID": null,
        "COMPANY_ID": null,
        "OPPORTUNITY": "0.00",
        "CURRENCY_ID": "RUB",
        "OPENED": "Y",
        "CLOSED": if closed { "Y" } else { "N" },
        "DATE_CREATE": format_iso(deal.created),
        "DATE_MODIFY": format_iso(deal.modified),
    })))
}

/// `crm.deal.update {"ID", "FIELDS"}`: `TITLE`, `STAGE_ID` and
/// `ASSIGNED_BY_ID` change the stored deal; every field is recorded.
fn deal_update(shared: &Shared, params: &Map<String, Value>) -> Result<Answer, Fail> {
    let id = deal_id(params)?;
    let Some(Value::Object(fields)) = params.get("FIELDS").or_else(|| params.get("fields")) else {
        return Err(Fail::argument("Required parameter FIELDS is missing"));
    };
    let mut data = shared.data.lock().unwrap();
    let Some(deal) = data.deals.get_mut(&id) else {
        return Err(Fail::new(StatusCode::BAD_REQUEST, "", "Not found"));
    };
    if let Some(title) = fields.get("TITLE").and_then(as_text) {
        deal.title = title;
    }
    if let Some(stage) = fields.get("STAGE_ID").and_then(as_text) {
        deal.stage_id = stage;
    }
    if let Some(user) = fields.get("ASSIGNED_BY_ID").and_then(as_i64) {
        deal.assigned_by_id = user;
    }
    deal.modified = now_unix();
    data.deal_updates.push((id, Value::Object(fields.clone())));
    Ok(Answer::plain(json!(true)))
}

const DEFAULT_STAGES: [(&str, &str); 7] = [
    ("NEW", "Новая"),
    ("PREPARATION", "Подготовка документов"),
    ("PREPAYMENT_INVOICE", "Счёт на предоплату"),
    ("EXECUTING", "В работе"),
    ("FINAL_INVOICE", "Финальный счёт"),
    ("WON", "Сделка успешна"),
    ("LOSE", "Сделка провалена"),
];

/// `crm.status.list`: deal stages of the default pipeline (`DEAL_STAGE`)
/// or of pipeline n (`DEAL_STAGE_n`): the standard ones, those the test
/// named and those its deals use.
fn status_list(shared: &Shared, params: &Map<String, Value>) -> Result<Answer, Fail> {
    let entity = get_ci(params, "filter")
        .and_then(|f| f.as_object())
        .and_then(|f| get_ci(f, "ENTITY_ID"))
        .and_then(as_text);
    let data = shared.data.lock().unwrap();
    let mut categories: Vec<i64> = vec![0];
    for c in data
        .deals
        .values()
        .map(|d| category_of(&d.stage_id))
        .chain(data.stage_names.keys().map(|s| category_of(s)))
    {
        if !categories.contains(&c) {
            categories.push(c);
        }
    }
    categories.sort_unstable();
    let wanted: Vec<i64> = match entity.as_deref() {
        None => categories,
        Some("DEAL_STAGE") => vec![0],
        Some(other) => match other
            .strip_prefix("DEAL_STAGE_")
            .and_then(|n| n.parse().ok())
        {
            Some(n) => vec![n],
            None => Vec::new(),
        },
    };
    let mut rows = Vec::new();
    for category in wanted {
        let prefix = if category == 0 {
            String::new()
        } else {
            format!("C{category}:")
        };
        let mut stages: Vec<(String, String)> = DEFAULT_STAGES
            .iter()
            .map(|(id, name)| (format!("{prefix}{id}"), (*name).to_owned()))
            .collect();
        let extra = data
            .stage_names
            .keys()
            .chain(data.deals.values().map(|d| &d.stage_id))
            .filter(|s| category_of(s) == category);
        for stage in extra {
            if !stages.iter().any(|(id, _)| id == stage) {
                stages.push((stage.clone(), stage.clone()));
            }
        }
        for (id, name) in stages.iter_mut() {
            if let Some(given) = data.stage_names.get(id.as_str()) {
                *name = given.clone();
            }
        }
        let entity_id = if category == 0 {
            "DEAL_STAGE".to_owned()
        } else {
            format!("DEAL_STAGE_{category}")
        };
        for (i, (status_id, name)) in stages.into_iter().enumerate() {
            rows.push(json!({
                "ID": (rows.len() + 1).to_string(),
                "ENTITY_ID": entity_id,
                "STATUS_ID": status_id,
                "NAME": name,
                "NAME_INIT": name,
                "SORT": ((i + 1) * 10).to_string(),
                "SYSTEM": if matches!(status_id.rsplit(':').next(), Some("NEW" | "WON" | "LOSE")) { "Y" } else { "N" },
                "CATEGORY_ID": category.to_string(),
                "COLOR": "#39A8EF",
                "SEMANTICS": semantics(&status_id),
                "EXTRA": {"SEMANTICS": match semantics(&status_id) { Some("S") => "success", Some(_) => "failure", None => "process" }},
            }));
        }
    }
    let total = rows.len();
    Ok(Answer {
        result: Value::Array(rows),
        total: Some(total),
        next: None,
    })
}

/// `crm.timeline.comment.add {"fields": {ENTITY_ID, ENTITY_TYPE, COMMENT}}`.
/// A deal must exist; other entity types are taken on trust.
fn comment_add(shared: &Shared, params: &Map<String, Value>) -> Result<Answer, Fail> {
    let Some(fields) = params.get("fields") else {
        return Err(Fail::argument(if params.contains_key("FIELDS") {
            "Parameter 'fields' is required; 'FIELDS' is not accepted"
        } else {
            "Parameter 'fields' is required"
        }));
    };
    let Some(fields) = fields.as_object() else {
        return Err(Fail::argument("Parameter 'fields' must be an object"));
    };
    let Some(entity_id) = fields
        .get("ENTITY_ID")
        .and_then(as_i64)
        .filter(|id| *id > 0)
    else {
        return Err(Fail::argument("ENTITY_ID is required"));
    };
    let entity_type = fields
        .get("ENTITY_TYPE")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !matches!(
        entity_type.as_str(),
        "deal" | "contact" | "lead" | "company"
    ) {
        return Err(Fail::argument("ENTITY_TYPE is not supported"));
    }
    match fields.get("COMMENT") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => return Err(Fail::argument("COMMENT is empty")),
    }
    let mut data = shared.data.lock().unwrap();
    if entity_type == "deal" && !data.deals.contains_key(&entity_id) {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "ERROR_NOT_FOUND",
            "Entity not found",
        ));
    }
    let id = data.next_comment_id;
    data.next_comment_id += 1;
    data.comments.push(Value::Object(fields.clone()));
    Ok(Answer::plain(json!(id)))
}

/// `batch {"halt", "cmd": {key: "method?query"}}`: one bucket unit, each
/// command run in turn; `$result[…]` references are not resolved.
fn batch(shared: &Shared, params: &Map<String, Value>) -> Result<Answer, Fail> {
    let halt = params.get("halt").is_some_and(truthy);
    let commands: Vec<(String, String)> = match params.get("cmd") {
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| (k.clone(), as_text(v).unwrap_or_default()))
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), as_text(v).unwrap_or_default()))
            .collect(),
        _ => return Err(Fail::argument("Parameter 'cmd' is required")),
    };
    if commands.len() > BATCH_MAX {
        return Err(Fail::new(
            StatusCode::BAD_REQUEST,
            "ERROR_BATCH_LENGTH_EXCEEDED",
            "Max batch length exceeded",
        ));
    }
    let mut result = Map::new();
    let mut errors = Map::new();
    let mut totals = Map::new();
    let mut nexts = Map::new();
    let mut times = Map::new();
    for (key, command) in commands {
        let started = now_f64();
        let (method, query) = command.split_once('?').unwrap_or((&command, ""));
        let method = method.trim_start_matches('/');
        let method = method.strip_suffix(".json").unwrap_or(method);
        match execute(shared, method, &query_params(query)) {
            Ok(answer) => {
                result.insert(key.clone(), answer.result);
                if let Some(total) = answer.total {
                    totals.insert(key.clone(), json!(total));
                }
                if let Some(next) = answer.next {
                    nexts.insert(key.clone(), json!(next));
                }
                times.insert(key, time_object(started));
            }
            Err(fail) => {
                errors.insert(key, fail.body());
                if halt {
                    break;
                }
            }
        }
    }
    // PHP writes an empty array as `[]`.
    let errors = if errors.is_empty() {
        json!([])
    } else {
        Value::Object(errors)
    };
    Ok(Answer::plain(json!({
        "result": result,
        "result_error": errors,
        "result_total": totals,
        "result_next": nexts,
        "result_time": times,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(url: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn hook(double: &Bitrix24Double, method: &str, body: Value) -> (u16, Value) {
        call(&format!("{}{method}", double.webhook_url()), body).await
    }

    fn record(id: i64, user: i64, call_type: i64, start: &str) -> StatRecord {
        StatRecord {
            id,
            portal_user_id: user,
            phone: format!("7900123450{}", id % 10),
            call_type,
            duration: 10 * id,
            start: start.into(),
            record_file_id: Some(9000 + id),
            crm_entity_type: Some("CONTACT".into()),
            crm_entity_id: Some(797),
            failed_code: "200".into(),
        }
    }

    #[test]
    fn dates_and_php_keys_parse() {
        assert_eq!(parse_iso("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso("2026-03-10T11:19:38+03:00"), Some(1_773_130_778));
        assert_eq!(parse_iso("2026-03-10T08:19:38.250Z"), Some(1_773_130_778));
        assert_eq!(parse_iso("2026-03-10 08:19:38"), Some(1_773_130_778));
        assert_eq!(parse_iso("2026-03-10T11:19:38+0300"), Some(1_773_130_778));
        assert_eq!(parse_iso("2026-03-10"), Some(1_773_100_800));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-03-10T11",
            "2026-03-10T11:19:38+3",
            "2026-03-10Tab:cd",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
        assert_eq!(format_iso(1_773_130_778), "2026-03-10T11:19:38+03:00");

        let params = query_params(
            "FILTER[%3E%3DCALL_START_DATE]=2026-01-01&FILTER[CALL_TYPE][]=1&FILTER[CALL_TYPE][]=2\
             &FILTER[PORTAL_USER_ID][0]=5&start=50&odd]=1&[x]=2&a[b=3",
        );
        assert_eq!(
            Value::Object(params),
            json!({"FILTER": {">=CALL_START_DATE": "2026-01-01", "CALL_TYPE": ["1", "2"],
                              "PORTAL_USER_ID": ["5"]},
                   "start": "50", "odd]": "1", "a[b": "3"})
        );
    }

    #[tokio::test]
    async fn webhook_auth_envelope_and_errors() {
        let double = Bitrix24Double::start().await;
        assert!(double.webhook_url().ends_with('/'));
        double.add_user(B24User {
            id: 1,
            name: "Иван".into(),
            last_name: "Петров".into(),
            email: "ivan@example.com".into(),
            inner_phone: Some("101".into()),
        });
        let (status, body) = hook(&double, "user.get.json", json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(body["result"][0]["ID"], "1");
        assert_eq!(body["result"][0]["UF_PHONE_INNER"], "101");
        assert_eq!(body["result"][0]["ACTIVE"], true);
        assert_eq!(body["total"], 1);
        assert!(body.get("next").is_none());
        for key in [
            "start",
            "finish",
            "duration",
            "processing",
            "date_start",
            "date_finish",
            "operating_reset_at",
            "operating",
        ] {
            assert!(body["time"].get(key).is_some(), "{key}");
        }

        let wrong = double.webhook_url().replace("/rest/1/", "/rest/2/");
        let (status, body) = call(&format!("{wrong}user.get"), json!({})).await;
        assert_eq!(status, 401);
        assert_eq!(
            body,
            json!({"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"})
        );
        let (status, _) = call(
            &format!("{}/rest/1/bad-secret/user.get", double.base_url()),
            json!({}),
        )
        .await;
        assert_eq!(status, 401);
        let (status, body) = call(&format!("{}/rest/user.get", double.base_url()), json!({})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("NO_AUTH_FOUND"))
        );

        let (status, body) = hook(&double, "crm.nothing.get", json!({})).await;
        assert_eq!(status, 404);
        assert_eq!(
            body,
            json!({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"})
        );
        let bad = reqwest::Client::new()
            .post(format!("{}user.get", double.webhook_url()))
            .header("content-type", "application/json")
            .body("{\"FILTER\":")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let body: Value = bad.json().await.unwrap();
        assert_eq!(body["error"], "INVALID_REQUEST");
        assert_eq!(double.calls(), ["user.get"]);
    }

    #[tokio::test]
    async fn oauth_codes_refresh_and_expiry() {
        let double = Bitrix24Double::start().await;
        let token_url = |query: &str| format!("{}/oauth/token/?{query}", double.oauth_url());
        let exchange = |code: &str| {
            token_url(&format!(
                "grant_type=authorization_code&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&code={code}"
            ))
        };
        let code = double.issue_code();
        let response = reqwest::get(exchange(&code)).await.unwrap();
        assert_eq!(response.status(), 200);
        let first: Value = response.json().await.unwrap();
        assert_eq!(first["expires_in"], 3600);
        assert_eq!(first["scope"], "crm,telephony,disk,user");
        assert_eq!(first["member_id"], MEMBER_ID);
        assert_eq!(first["status"], "L");
        let endpoint = first["client_endpoint"].as_str().unwrap().to_owned();
        assert_eq!(endpoint, format!("{}/rest/", double.base_url()));
        let access1 = first["access_token"].as_str().unwrap().to_owned();
        let refresh1 = first["refresh_token"].as_str().unwrap().to_owned();

        // Single use.
        let again = reqwest::get(exchange(&code)).await.unwrap();
        assert_eq!(again.status(), 400);
        assert_eq!(
            again.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );
        // A stale code.
        double.shared.auth.lock().unwrap().code_lifetime = Duration::from_millis(30);
        let stale = double.issue_code();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(reqwest::get(exchange(&stale)).await.unwrap().status(), 400);
        let wrong_client = token_url(&format!(
            "grant_type=refresh_token&client_id={CLIENT_ID}&client_secret=x&refresh_token={refresh1}"
        ));
        assert_eq!(reqwest::get(wrong_client).await.unwrap().status(), 401);

        // The token in the query and in the JSON body.
        let (status, _) = call(&format!("{endpoint}user.get?auth={access1}"), json!({})).await;
        assert_eq!(status, 200);
        let (status, _) = call(&format!("{endpoint}user.get"), json!({"auth": access1})).await;
        assert_eq!(status, 200);
        let (status, body) = call(&format!("{endpoint}user.get"), json!({"auth": "forged"})).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"], "invalid_token");

        let refresh = |token: &str| {
            token_url(&format!(
                "grant_type=refresh_token&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&refresh_token={token}"
            ))
        };
        let second: Value = reqwest::get(refresh(&refresh1))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let access2 = second["access_token"].as_str().unwrap().to_owned();
        assert_ne!(access1, access2);
        let reused = reqwest::get(refresh(&refresh1)).await.unwrap();
        assert_eq!(reused.status(), 400);
        assert_eq!(
            reused.json::<Value>().await.unwrap()["error"],
            "invalid_grant"
        );

        double.expire_access_tokens();
        let (status, body) = call(&format!("{endpoint}user.get?auth={access2}"), json!({})).await;
        assert_eq!(status, 401);
        assert_eq!(
            body,
            json!({"error": "expired_token", "error_description": "The access token provided has expired."})
        );
        let third: Value = reqwest::get(refresh(second["refresh_token"].as_str().unwrap()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let access3 = third["access_token"].as_str().unwrap();
        let (status, _) = call(&format!("{endpoint}user.get?auth={access3}"), json!({})).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn users_come_fifty_a_page() {
        let double = Bitrix24Double::start().await;
        for id in 1..=120 {
            double.add_user(B24User {
                id,
                name: format!("User{id}"),
                email: format!("u{id}@example.com"),
                ..B24User::default()
            });
        }
        let (_, first) = hook(&double, "user.get", json!({"FILTER": {"ACTIVE": true}})).await;
        assert_eq!(first["result"].as_array().unwrap().len(), 50);
        assert_eq!(
            (first["total"].as_i64(), first["next"].as_i64()),
            (Some(120), Some(50))
        );
        let (_, last) = hook(&double, "user.get", json!({"start": 100})).await;
        assert_eq!(last["result"].as_array().unwrap().len(), 20);
        assert_eq!(last["result"][0]["ID"], "101");
        assert!(last.get("next").is_none());
        // GET with a query string.
        let body: Value = reqwest::get(format!(
            "{}user.get?FILTER[ID][]=7&FILTER[ID][]=9",
            double.webhook_url()
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let ids: Vec<&str> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["ID"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["7", "9"]);
    }

    #[tokio::test]
    async fn statistics_filter_sort_and_page() {
        let double = Bitrix24Double::start().await;
        double.set_bucket(1000, 100.0);
        // Same instant written in two zones: 1 and 2 start together.
        double.add_record(record(1, 12, 2, "2026-03-10T11:00:00+03:00"));
        double.add_record(record(2, 12, 1, "2026-03-10T08:00:00+00:00"));
        double.add_record(record(3, 13, 2, "2026-03-10T12:00:00+03:00"));
        double.add_record(StatRecord {
            record_file_id: None,
            crm_entity_type: None,
            crm_entity_id: None,
            failed_code: "304".into(),
            ..record(4, 12, 2, "2026-03-09T12:00:00+03:00")
        });
        for id in 10..70 {
            double.add_record(record(id, 14, 1, "2026-03-11T10:00:00+03:00"));
        }

        let (status, body) = hook(
            &double,
            "voximplant.statistic.get",
            json!({"FILTER": {">=CALL_START_DATE": "2026-03-10T00:00:00+03:00",
                              "<CALL_START_DATE": "2026-03-11T00:00:00+03:00",
                              "CALL_TYPE": 2},
                   "SORT": "CALL_START_DATE", "ORDER": "DESC", "start": 0}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let rows = body["result"].as_array().unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r["ID"].as_str().unwrap()).collect();
        assert_eq!(ids, ["3", "1"]);
        assert_eq!(body["total"], 2);
        let row = &rows[1];
        assert_eq!(row["CALL_ID"], call_id(1));
        assert!(row["CALL_ID"]
            .as_str()
            .unwrap()
            .starts_with("externalCall."));
        assert_eq!(row["PORTAL_USER_ID"], "12");
        assert_eq!(row["CALL_TYPE"], "2");
        assert_eq!(row["CALL_DURATION"], "10");
        assert_eq!(row["CALL_START_DATE"], "2026-03-10T11:00:00+03:00");
        assert_eq!(row["RECORD_FILE_ID"], 9001);
        assert!(row["CALL_RECORD_URL"].is_null());
        assert_eq!(row["CRM_ENTITY_ID"], "797");
        assert_eq!(row["CALL_FAILED_CODE"], "200");

        // The same as a GET with PHP brackets, types as a list, users as one.
        let url = format!(
            "{}voximplant.statistic.get?FILTER[%3E%3DCALL_START_DATE]=2026-03-10T00:00:00%2B03:00\
             &FILTER[CALL_TYPE][]=1&FILTER[CALL_TYPE][]=2&FILTER[PORTAL_USER_ID]=12&SORT=ID&ORDER=ASC",
            double.webhook_url()
        );
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        let ids: Vec<&str> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ID"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["1", "2"]);

        // Paging: 64 rows, start 50 is the last page.
        let (_, page) = hook(
            &double,
            "voximplant.statistic.get",
            json!({"FILTER": {">=CALL_DURATION": 30}}),
        )
        .await;
        assert_eq!(
            (page["total"].as_i64(), page["next"].as_i64()),
            (Some(62), Some(50))
        );
        let (_, page) = hook(
            &double,
            "voximplant.statistic.get",
            json!({"FILTER": {">=CALL_DURATION": 30}, "start": 50}),
        )
        .await;
        assert_eq!(page["result"].as_array().unwrap().len(), 12);
        assert!(page.get("next").is_none());
        // start=-1: no count; page on by ID.
        let (_, page) = hook(
            &double,
            "voximplant.statistic.get",
            json!({"FILTER": {">ID": 20, "PORTAL_USER_ID": [14]}, "SORT": "ID", "ORDER": "ASC", "start": -1}),
        )
        .await;
        assert!(page.get("total").is_none());
        assert_eq!(page["result"][0]["ID"], "21");
        assert_eq!(page["result"].as_array().unwrap().len(), 49);

        let (_, by_call) = hook(
            &double,
            "voximplant.statistic.get",
            json!({"FILTER": {"CALL_ID": call_id(4)}}),
        )
        .await;
        assert_eq!(by_call["result"][0]["ID"], "4");
        assert!(by_call["result"][0]["RECORD_FILE_ID"].is_null());
        assert!(by_call["result"][0]["CRM_ENTITY_ID"].is_null());

        for refused in [
            json!({"SORT": "CALL_TYPE"}),
            json!({"FILTER": {">=CALL_START_DATE": "yesterday"}}),
            json!({"FILTER": {"?COMMENT": "x"}}),
            json!({"FILTER": "ID"}),
        ] {
            let (status, body) = hook(&double, "voximplant.statistic.get", refused.clone()).await;
            assert_eq!(status, 400, "{refused}");
            assert!(body["error"].is_string());
        }
    }

    #[tokio::test]
    async fn the_bucket_refuses_when_full() {
        let double = Bitrix24Double::start().await;
        double.set_bucket(5, 0.0);
        let client = reqwest::Client::new();
        let url = format!("{}user.get", double.webhook_url());
        let handles: Vec<_> = (0..8)
            .map(|_| tokio::spawn(client.post(&url).json(&json!({})).send()))
            .collect();
        let mut statuses = Vec::new();
        for handle in handles {
            let response = handle.await.unwrap().unwrap();
            let status = response.status().as_u16();
            if status == 503 {
                assert_eq!(
                    response.json::<Value>().await.unwrap(),
                    json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
                );
            }
            statuses.push(status);
        }
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5);
        assert_eq!(double.limit_refusals(), 3);
        assert_eq!(double.calls().len(), 5);
        // Refusals apply before auth, and to OAuth-style calls too.
        let (status, _) = call(&format!("{}/rest/user.get", double.base_url()), json!({})).await;
        assert_eq!(status, 503);

        // It drains.
        double.set_bucket(2, 20.0);
        for _ in 0..2 {
            assert_eq!(hook(&double, "user.get", json!({})).await.0, 200);
        }
        assert_eq!(hook(&double, "user.get", json!({})).await.0, 503);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(hook(&double, "user.get", json!({})).await.0, 200);
        assert_eq!(double.limit_refusals(), 5);
    }

    #[tokio::test]
    async fn disk_files_download_by_url() {
        let double = Bitrix24Double::start().await;
        double.add_file(9079, b"RIFFaudio".to_vec());
        let (status, body) = hook(&double, "disk.file.get", json!({"id": 9079})).await;
        assert_eq!(status, 200);
        assert_eq!(body["result"]["ID"], "9079");
        assert_eq!(body["result"]["SIZE"], "9");
        let url = body["result"]["DOWNLOAD_URL"].as_str().unwrap().to_owned();
        assert!(url.starts_with(&format!("{}/rest/download.json?auth=", double.base_url())));
        assert!(url.contains("&token=disk|"));
        let before = double.calls().len();
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"RIFFaudio");
        assert_eq!(double.downloads(), 1);
        assert_eq!(
            double.calls().len(),
            before,
            "downloads are not method calls"
        );

        let forged = url.replace("token=disk|", "token=disk|x");
        assert_eq!(reqwest::get(forged).await.unwrap().status(), 404);
        let (status, body) = hook(&double, "disk.file.get", json!({"id": 1})).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "ERROR_NOT_FOUND");
        assert_eq!(double.downloads(), 1);
    }

    #[tokio::test]
    async fn deals_stages_and_comments() {
        let double = Bitrix24Double::start().await;
        double.add_deal(410, "Поставка", "C1:PREPARATION", 12);
        double.add_deal(411, "Сервис", "NEGOTIATION", 13);
        double.add_stage("NEGOTIATION", "Переговоры");

        let (status, body) = hook(&double, "crm.deal.get", json!({"ID": 410})).await;
        assert_eq!(status, 200);
        assert_eq!(body["result"]["ID"], "410");
        assert_eq!(body["result"]["CATEGORY_ID"], "1");
        assert_eq!(body["result"]["ASSIGNED_BY_ID"], "12");
        let (status, body) = hook(&double, "crm.deal.get", json!({"ID": "411"})).await;
        assert_eq!(
            (status, body["result"]["CATEGORY_ID"].as_str()),
            (200, Some("0"))
        );
        let (status, body) = hook(&double, "crm.deal.get", json!({"ID": 1})).await;
        assert_eq!(status, 400);
        assert_eq!(body, json!({"error": "", "error_description": "Not found"}));

        let (_, body) = hook(
            &double,
            "crm.status.list",
            json!({"filter": {"ENTITY_ID": "DEAL_STAGE"}}),
        )
        .await;
        let stages: Vec<(&str, &str)> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["STATUS_ID"].as_str().unwrap(),
                    s["NAME"].as_str().unwrap(),
                )
            })
            .collect();
        for expected in ["NEW", "PREPARATION", "WON", "LOSE"] {
            assert!(stages.iter().any(|(id, _)| *id == expected), "{expected}");
        }
        assert!(stages.contains(&("NEGOTIATION", "Переговоры")));
        let (_, body) = hook(
            &double,
            "crm.status.list",
            json!({"filter": {"ENTITY_ID": "DEAL_STAGE_1"}}),
        )
        .await;
        assert_eq!(body["result"][0]["STATUS_ID"], "C1:NEW");

        let fields = json!({"ENTITY_ID": 410, "ENTITY_TYPE": "deal", "COMMENT": "Итог звонка"});
        let (status, body) = hook(
            &double,
            "crm.timeline.comment.add",
            json!({"fields": fields}),
        )
        .await;
        assert_eq!(status, 200);
        assert!(body["result"].is_i64());
        for refused in [
            json!({"FIELDS": fields}),
            json!({"fields": {"ENTITY_ID": 410, "ENTITY_TYPE": "deal", "COMMENT": " "}}),
            json!({"fields": {"ENTITY_ID": 410, "ENTITY_TYPE": "invoice", "COMMENT": "x"}}),
            json!({"fields": {"ENTITY_TYPE": "deal", "COMMENT": "x"}}),
            json!({"fields": {"ENTITY_ID": 999, "ENTITY_TYPE": "deal", "COMMENT": "x"}}),
            json!({"fields": "x"}),
        ] {
            let (status, body) = hook(&double, "crm.timeline.comment.add", refused.clone()).await;
            assert_eq!(status, 400, "{refused}");
            assert!(body["error"].is_string(), "{refused}");
        }
        let (_, body) = hook(
            &double,
            "crm.timeline.comment.add",
            json!({"FIELDS": fields}),
        )
        .await;
        assert_eq!(body["error"], "ERROR_ARGUMENT");
        assert_eq!(double.comments(), vec![fields]);

        let (status, _) = hook(
            &double,
            "crm.deal.update",
            json!({"ID": 411, "FIELDS": {"STAGE_ID": "WON"}}),
        )
        .await;
        assert_eq!(status, 200);
        let (_, body) = hook(&double, "crm.deal.get", json!({"ID": 411})).await;
        assert_eq!(body["result"]["STAGE_ID"], "WON");
        assert_eq!(
            double.deal_updates(),
            vec![(411, json!({"STAGE_ID": "WON"}))]
        );
    }

    #[tokio::test]
    async fn batch_is_one_request() {
        let double = Bitrix24Double::start().await;
        double.add_deal(410, "Поставка", "NEW", 12);
        double.add_user(B24User {
            id: 12,
            name: "Анна".into(),
            ..B24User::default()
        });
        double.set_bucket(1, 0.0);
        let (status, body) = hook(
            &double,
            "batch",
            json!({"halt": 0, "cmd": {
                "deal": "crm.deal.get?ID=410",
                "user": "user.get?FILTER[ID]=12",
                "missing": "crm.deal.get?ID=1",
                "nested": "batch?cmd[a]=user.get",
            }}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let inner = &body["result"];
        assert_eq!(inner["result"]["deal"]["TITLE"], "Поставка");
        assert_eq!(inner["result"]["user"][0]["NAME"], "Анна");
        assert_eq!(inner["result_total"]["user"], 1);
        assert!(inner["result_next"].is_object());
        assert!(inner["result_time"]["deal"]["start"].is_number());
        assert_eq!(
            inner["result_error"]["missing"]["error_description"],
            "Not found"
        );
        assert_eq!(
            inner["result_error"]["nested"]["error"],
            "ERROR_BATCH_METHOD_NOT_ALLOWED"
        );
        assert!(body["time"].is_object());
        assert_eq!(double.calls(), ["batch"]);
        assert_eq!(double.limit_refusals(), 0);

        double.set_bucket(50, 2.0);
        let (_, body) = hook(
            &double,
            "batch",
            json!({"halt": 0, "cmd": {"u": "user.get"}}),
        )
        .await;
        assert_eq!(body["result"]["result_error"], json!([]));

        let cmd: Map<String, Value> = (0..51)
            .map(|i| (format!("c{i}"), json!("user.get")))
            .collect();
        let (status, body) = hook(&double, "batch", json!({"halt": 0, "cmd": cmd})).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "ERROR_BATCH_LENGTH_EXCEEDED");
    }

    #[tokio::test]
    async fn call_end_is_a_form_post() {
        use axum::routing::post;
        let double = Bitrix24Double::start().await;
        let rec = record(7, 12, 2, "2026-03-10T11:19:38+03:00");
        double.add_record(rec.clone());

        let received: Arc<Mutex<Option<(String, String)>>> = Arc::default();
        let sink = received.clone();
        let app = Router::new().route(
            "/b24/events",
            post(move |headers: HeaderMap, body: String| {
                let sink = sink.clone();
                async move {
                    let ct = headers[header::CONTENT_TYPE].to_str().unwrap().to_owned();
                    *sink.lock().unwrap() = Some((ct, body));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handler = format!("http://{}/b24/events", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let response = double.post_call_end(&handler, "app-token-1", &rec).await;
        assert_eq!(response.status(), 200);
        let (content_type, body) = received.lock().unwrap().clone().unwrap();
        assert_eq!(content_type, "application/x-www-form-urlencoded");
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(form["event"], "ONVOXIMPLANTCALLEND");
        assert_eq!(form["data[CALL_TYPE]"], "2");
        assert_eq!(form["data[PORTAL_USER_ID]"], "12");
        assert_eq!(form["data[CALL_DURATION]"], "70");
        assert_eq!(form["data[CALL_FAILED_CODE]"], "200");
        assert_eq!(form["auth[application_token]"], "app-token-1");
        assert_eq!(form["auth[domain]"], double.addr.to_string());
        assert_eq!(form["auth[member_id]"], MEMBER_ID);
        assert!(form["ts"].parse::<i64>().unwrap() > 1_700_000_000);

        let (_, found) = hook(
            &double,
            "voximplant.statistic.get",
            json!({"FILTER": {"CALL_ID": form["data[CALL_ID]"]}}),
        )
        .await;
        assert_eq!(found["result"][0]["ID"], "7");
        assert_eq!(
            found["result"][0]["CRM_ACTIVITY_ID"],
            form["data[CRM_ACTIVITY_ID]"]
        );
    }
}
