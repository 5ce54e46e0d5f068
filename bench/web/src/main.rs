//! `rop-webbench`: the web pages with many calls (see `bench/README.md`).
//!
//! - `seed` fills a fresh SQLite or PostgreSQL database with N realistic
//!   calls (managers in offices, a year of calls, Russian transcripts,
//!   checklist results with eight stages) through the `Store` trait, and
//!   writes a fixture: which call, office and words the pages should ask for.
//! - `measure` logs in to one or more running servers and times the pages,
//!   one request at a time, every server in turn, and prints the medians,
//!   p95 and the ratio of the last server to the first.
//! - `drop-postgres` removes a database `seed` created.

mod dialogue;
mod measure;
mod seed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context};
use clap::{Parser, Subcommand};
use rop_domain::Store;
use rop_storage_postgres::PostgresStore;
use rop_storage_sqlite::SqliteStore;
use serde_json::json;
use sqlx::Connection;

#[derive(Parser)]
#[command(name = "rop-webbench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fill a new database with calls and write its fixture.
    Seed {
        /// sqlite:///path/rop.db (a new file) or postgres://…/NAME (created
        /// here, replacing any database of that name).
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 100_000)]
        calls: u64,
        /// Seed of the made-up data: the same seed gives the same calls.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Concurrent job workers [default: 2 on SQLite, 8 on PostgreSQL].
        #[arg(long)]
        workers: Option<usize>,
        /// Where to write the fixture (JSON).
        #[arg(long)]
        fixture: PathBuf,
    },
    /// Time the pages on running servers; the first is the baseline.
    Measure {
        /// Short name of a server, e.g. `1k`; repeat once per server, in the
        /// order of --url, --api-key and --fixture.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        #[arg(long = "url", required = true)]
        urls: Vec<String>,
        #[arg(long = "api-key", required = true)]
        api_keys: Vec<String>,
        #[arg(long = "fixture", required = true)]
        fixtures: Vec<PathBuf>,
        /// A web administrator on every server.
        #[arg(long)]
        username: String,
        #[arg(long, env = "WEBBENCH_PASSWORD", hide_env_values = true)]
        password: String,
        /// Timed requests per page and server.
        #[arg(long, default_value_t = 30)]
        requests: usize,
        /// Untimed requests per page and server first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Recorded in the JSON: the machine, the revision, the backend.
        #[arg(long, default_value = "")]
        machine: String,
        #[arg(long, default_value = "")]
        revision: String,
        #[arg(long, default_value = "")]
        backend: String,
    },
    /// Drop a PostgreSQL database made by `seed`.
    DropPostgres {
        #[arg(long)]
        database_url: String,
    },
}

/// The server's maintenance database URL and the database's name.
fn postgres_admin(url: &str) -> anyhow::Result<(String, String)> {
    let mut parsed = url::Url::parse(url).context("a postgres:// URL")?;
    let name = parsed.path().trim_start_matches('/').to_owned();
    ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name `{name}`: letters, digits and _ only"
    );
    parsed.set_path("/postgres");
    Ok((parsed.to_string(), name))
}

async fn admin_sql(url: &str, sql: &str) -> anyhow::Result<()> {
    let mut connection = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(sql).execute(&mut connection).await?;
    connection.close().await?;
    Ok(())
}

async fn seed(
    url: String,
    calls: u64,
    seed_value: u64,
    workers: Option<usize>,
    fixture: PathBuf,
) -> anyhow::Result<()> {
    ensure!(calls > 0, "--calls must be positive");
    let started = Instant::now();
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let store: Arc<dyn Store> = if postgres {
        let (admin, name) = postgres_admin(&url)?;
        admin_sql(
            &admin,
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .await?;
        admin_sql(&admin, &format!("CREATE DATABASE \"{name}\"")).await?;
        // Seeding only: commits need not wait for the disk. Reset below,
        // before any server uses the database.
        admin_sql(
            &admin,
            &format!("ALTER DATABASE \"{name}\" SET synchronous_commit = off"),
        )
        .await?;
        Arc::new(PostgresStore::connect(&url).await?)
    } else {
        let path = url
            .strip_prefix("sqlite://")
            .context("a sqlite:// or postgres:// URL")?;
        ensure!(
            !std::path::Path::new(path).exists(),
            "{path} exists: seed a new file"
        );
        if let Some(parent) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(parent)?;
        }
        Arc::new(SqliteStore::connect(&url).await?)
    };
    store.migrate().await?;
    let plan = Arc::new(seed::Plan::new(calls, seed_value));
    let workers = workers.unwrap_or(if postgres { 8 } else { 2 });
    seed::seed(store.clone(), plan.clone(), workers).await?;
    drop(store);
    if postgres {
        let (admin, name) = postgres_admin(&url)?;
        admin_sql(
            &admin,
            &format!("ALTER DATABASE \"{name}\" RESET synchronous_commit"),
        )
        .await?;
        // What autovacuum would have done by the time a real installation
        // has this many calls; done now so that it does not run mid-measure.
        admin_sql(&url, "VACUUM ANALYZE").await?;
    } else {
        let mut connection = sqlx::SqliteConnection::connect(&url).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut connection)
            .await?;
        connection.close().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let description = json!({
        "calls": calls,
        "seed": seed_value,
        "backend": if postgres { "postgres" } else { "sqlite" },
        "seed_seconds": seconds,
        "card_call_id": plan.card_call(),
        "office_id": "msk",
        "manager_id": seed::manager_id(0),
        // A cursor nine tenths of the way down the list.
        "deep_before": (calls / 10).max(2),
        "search_common": seed::SEARCH_COMMON,
        "search_rare": seed::SEARCH_RARE,
    });
    std::fs::write(&fixture, serde_json::to_string_pretty(&description)?)
        .with_context(|| format!("cannot write {}", fixture.display()))?;
    eprintln!(
        "  seeded {calls} calls in {seconds:.0} s ({:.0} calls/s)",
        calls as f64 / seconds
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed {
            database_url,
            calls,
            seed: seed_value,
            workers,
            fixture,
        } => seed(database_url, calls, seed_value, workers, fixture).await,
        Command::Measure {
            names,
            urls,
            api_keys,
            fixtures,
            username,
            password,
            requests,
            warmup,
            json: json_path,
            machine,
            revision,
            backend,
        } => {
            ensure!(
                names.len() == urls.len()
                    && names.len() == api_keys.len()
                    && names.len() == fixtures.len(),
                "give --name, --url, --api-key and --fixture once per server"
            );
            let mut targets = Vec::new();
            for (((name, url), api_key), fixture) in
                names.into_iter().zip(urls).zip(api_keys).zip(fixtures)
            {
                let text = std::fs::read_to_string(&fixture)
                    .with_context(|| format!("cannot read {}", fixture.display()))?;
                targets.push(measure::Target {
                    name,
                    url: url.trim_end_matches('/').to_owned(),
                    api_key,
                    fixture: serde_json::from_str(&text)?,
                });
            }
            let mut results = measure::run(targets, &username, &password, requests, warmup).await?;
            results["machine"] = json!(machine);
            results["revision"] = json!(revision);
            results["backend"] = json!(backend);
            if let Some(path) = json_path {
                std::fs::write(&path, serde_json::to_string_pretty(&results)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(())
        }
        Command::DropPostgres { database_url } => {
            let (admin, name) = postgres_admin(&database_url)?;
            admin_sql(
                &admin,
                &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            )
            .await
        }
    }
}
