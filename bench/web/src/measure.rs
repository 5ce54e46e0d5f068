//! Times the web pages, one request at a time, against several servers side
//! by side: round after round, every page is asked of every server in turn,
//! so that whatever else the machine does slows them all alike.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// One server under test and what its database holds.
pub struct Target {
    pub name: String,
    pub url: String,
    pub api_key: String,
    /// The seeder's description of the database (`seed --fixture`).
    pub fixture: Value,
}

struct Page {
    label: String,
    /// The path on each target.
    paths: Vec<String>,
    api: bool,
}

struct Session {
    client: Client,
    cookie: String,
}

fn client() -> anyhow::Result<Client> {
    Ok(Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?)
}

fn cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

/// Logs in through the form, as a browser does.
async fn login(url: &str, username: &str, password: &str) -> anyhow::Result<Session> {
    let client = client()?;
    let form = client.get(format!("{url}/login")).send().await?;
    ensure!(
        form.status() == StatusCode::OK,
        "GET /login: {}",
        form.status()
    );
    let login_cookie = cookie(&form, "rop_login").context("no rop_login cookie")?;
    let html = form.text().await?;
    let marker = "name=\"_csrf\" value=\"";
    let start = html.find(marker).context("no _csrf field on /login")? + marker.len();
    let end = start + html[start..].find('"').context("unterminated _csrf")?;
    let csrf = &html[start..end];
    let response = client
        .post(format!("{url}/login"))
        .header(COOKIE, login_cookie)
        .form(&[
            ("username", username),
            ("password", password),
            ("_csrf", csrf),
            ("next", "/dashboard"),
        ])
        .send()
        .await?;
    ensure!(
        response.status() == StatusCode::SEE_OTHER,
        "login to {url} refused: {}",
        response.status()
    );
    let cookie = cookie(&response, "rop_session").context("no session cookie")?;
    Ok(Session { client, cookie })
}

fn pages(targets: &[Target]) -> anyhow::Result<Vec<Page>> {
    let field = |target: &Target, name: &str| -> anyhow::Result<String> {
        match &target.fixture[name] {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            _ => bail!("fixture of {} has no {name}", target.name),
        }
    };
    let per_target = |f: &dyn Fn(&Target) -> anyhow::Result<String>| {
        targets.iter().map(f).collect::<anyhow::Result<Vec<_>>>()
    };
    let same = |path: &str| targets.iter().map(|_| path.to_owned()).collect::<Vec<_>>();
    let search = |key: &str| {
        per_target(&|t| {
            let word = field(t, key)?;
            Ok(format!(
                "/calls?q={}",
                url::form_urlencoded::byte_serialize(word.as_bytes()).collect::<String>()
            ))
        })
    };
    let word = |key: &str| field(&targets[0], key);
    Ok(vec![
        Page {
            label: "/dashboard (30 дней)".into(),
            paths: same("/dashboard"),
            api: false,
        },
        Page {
            label: "/dashboard?days=365".into(),
            paths: same("/dashboard?days=365"),
            api: false,
        },
        Page {
            label: "/calls".into(),
            paths: same("/calls"),
            api: false,
        },
        Page {
            label: format!("/calls?q={} (~10 %)", word("search_common")?),
            paths: search("search_common")?,
            api: false,
        },
        Page {
            label: format!("/calls?q={} (~1,5 %)", word("search_rare")?),
            paths: search("search_rare")?,
            api: false,
        },
        Page {
            label: "/calls?before=<глубоко>".into(),
            paths: per_target(&|t| Ok(format!("/calls?before={}", field(t, "deep_before")?)))?,
            api: false,
        },
        Page {
            label: "/calls/<id> (карточка)".into(),
            paths: per_target(&|t| Ok(format!("/calls/{}", field(t, "card_call_id")?)))?,
            api: false,
        },
        Page {
            label: "/managers".into(),
            paths: same("/managers"),
            api: false,
        },
        Page {
            label: "/offices/<id>".into(),
            paths: per_target(&|t| Ok(format!("/offices/{}", field(t, "office_id")?)))?,
            api: false,
        },
        Page {
            label: "API /api/v1/calls?limit=50".into(),
            paths: same("/api/v1/calls?limit=50"),
            api: true,
        },
    ])
}

/// Rank percentile of sorted microseconds, in milliseconds.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

async fn fetch(
    session: &Session,
    target: &Target,
    path: &str,
    api: bool,
) -> anyhow::Result<(u64, usize)> {
    let request = session.client.get(format!("{}{path}", target.url));
    let request = if api {
        request.header("X-Api-Key", &target.api_key)
    } else {
        request.header(COOKIE, &session.cookie)
    };
    let started = Instant::now();
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    let micros = started.elapsed().as_micros() as u64;
    if status != StatusCode::OK {
        bail!(
            "{} {path}: {status}: {}",
            target.name,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
    Ok((micros, body.len()))
}

pub async fn run(
    targets: Vec<Target>,
    username: &str,
    password: &str,
    requests: usize,
    warmup: usize,
) -> anyhow::Result<Value> {
    ensure!(!targets.is_empty(), "no targets");
    ensure!(requests > 0, "--requests must be positive");
    let pages = pages(&targets)?;
    let mut sessions = Vec::new();
    for target in &targets {
        sessions.push(login(&target.url, username, password).await?);
    }
    // times[page][target]
    let mut times = vec![vec![Vec::with_capacity(requests); targets.len()]; pages.len()];
    let mut sizes = vec![vec![0usize; targets.len()]; pages.len()];
    for round in 0..warmup + requests {
        for (p, page) in pages.iter().enumerate() {
            for (t, target) in targets.iter().enumerate() {
                let (micros, bytes) = fetch(&sessions[t], target, &page.paths[t], page.api).await?;
                if round >= warmup {
                    times[p][t].push(micros);
                    sizes[p][t] = bytes;
                }
            }
        }
    }

    let baseline = 0;
    let last = targets.len() - 1;
    let api_row = pages.iter().position(|p| p.api);
    let mut rows = Vec::new();
    print!("{:<34}", "страница");
    for target in &targets {
        print!(
            " {:>10} {:>10}",
            format!("{} p50", target.name),
            format!("{} p95", target.name)
        );
    }
    if last > baseline {
        print!(
            " {:>9}",
            format!("{}/{}", targets[last].name, targets[baseline].name)
        );
    }
    println!(" {:>8} {:>9}", "/API", "KiB");
    let medians: Vec<Vec<f64>> = times
        .iter_mut()
        .map(|row| {
            row.iter_mut()
                .map(|t| {
                    t.sort_unstable();
                    percentile(t, 50.0)
                })
                .collect()
        })
        .collect();
    for (p, page) in pages.iter().enumerate() {
        print!("{:<34}", page.label);
        let mut results = serde_json::Map::new();
        for (t, target) in targets.iter().enumerate() {
            let sorted = &times[p][t];
            let (p50, p95) = (percentile(sorted, 50.0), percentile(sorted, 95.0));
            print!(" {p50:>10.1} {p95:>10.1}");
            results.insert(
                target.name.clone(),
                json!({
                    "path": page.paths[t],
                    "median_ms": p50,
                    "p95_ms": p95,
                    "min_ms": sorted[0] as f64 / 1000.0,
                    "max_ms": *sorted.last().expect("requests > 0") as f64 / 1000.0,
                    "bytes": sizes[p][t],
                }),
            );
        }
        let ratio = medians[p][last] / medians[p][baseline];
        if last > baseline {
            print!(" {:>8.1}×", ratio);
        }
        let per_api = api_row.map(|a| medians[p][last] / medians[a][last]);
        match per_api {
            Some(x) => print!(" {:>7.1}×", x),
            None => print!(" {:>8}", "—"),
        }
        println!(" {:>9.1}", sizes[p][last] as f64 / 1024.0);
        rows.push(json!({
            "page": page.label,
            "results": results,
            "median_ratio_last_to_first": ratio,
            "median_ratio_to_api": per_api,
        }));
    }
    Ok(json!({
        "requests_per_page": requests,
        "warmup_per_page": warmup,
        "targets": targets.iter().map(|t| json!({"name": t.name, "fixture": t.fixture})).collect::<Vec<_>>(),
        "pages": rows,
    }))
}
