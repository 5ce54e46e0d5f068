//! Test harness: every test gets a fresh database (a SQLite file in a temp
//! directory, or a new PostgreSQL database named by a UUID), the real server
//! on port 0, and a real HTTP client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rop::config::LlmEngineKind;
use rop::{Config, Server};
use rop_domain::Store;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Where test databases are created; `ROP_TEST_POSTGRES_URL` overrides it.
pub fn pg_admin_url() -> String {
    std::env::var("ROP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each listed test function.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

pub struct TestApp {
    pub base: String,
    pub key: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub config: Config,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("X-Api-Key", &self.key)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .get(self.url(path))
            .header("X-Api-Key", &self.key)
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .put(self.url(path))
            .header("X-Api-Key", &self.key)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .delete(self.url(path))
            .header("X-Api-Key", &self.key)
    }

    /// Uploads `audio` as a multipart file part with extra form fields, and
    /// checks it is accepted.
    pub async fn upload_file(&self, call_id: &str, audio: Vec<u8>, extra: &[(&str, &str)]) {
        let mut form = reqwest::multipart::Form::new()
            .text("call_id", call_id.to_owned())
            .text("manager_id", "m1")
            .part(
                "file",
                reqwest::multipart::Part::bytes(audio)
                    .file_name("call.wav")
                    .mime_str("audio/wav")
                    .unwrap(),
            );
        for (name, value) in extra {
            form = form.text(name.to_string(), value.to_string());
        }
        let response = self
            .post("/api/v1/calls/audio-upload")
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// Uploads by urlencoded form, the CRM's most common way.
    pub async fn upload(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        self.post("/api/v1/calls/audio-upload")
            .form(fields)
            .send()
            .await
            .expect("request sent")
    }

    /// The stored call as the API shows it, or None on 404.
    pub async fn call_json(&self, call_id: &str) -> Option<serde_json::Value> {
        let response = self
            .get(&format!("/api/v1/calls/{call_id}"))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => Some(response.json().await.unwrap()),
            404 => None,
            other => panic!("unexpected status {other}"),
        }
    }

    pub fn files_in(&self, sub: &str) -> usize {
        std::fs::read_dir(self.data_dir.join(sub))
            .map(|dir| {
                dir.flatten()
                    .map(|entry| {
                        if entry.path().is_dir() {
                            std::fs::read_dir(entry.path())
                                .map(|d| d.count())
                                .unwrap_or(0)
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(name) = self.pg_database.take() {
            // Dropping needs async I/O, and Drop is synchronous: use a
            // thread with its own small runtime.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Settings that make sense for most tests: loopback audio links allowed (the
/// test file server is on loopback), no rate limit, a short probe timeout,
/// no workers, so that a call stays as the API stored it (the pipeline
/// tests turn them on), and phrase rules instead of a language model (the
/// analysis tests choose theirs).
pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.to_path_buf(),
        fetch_allow_loopback: true,
        rate_limit_per_minute: 0,
        probe_timeout_ms: 1500,
        worker_concurrency: 0,
        llm_engine: LlmEngineKind::None,
        ..Config::default()
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let mut pg_database = None;
    if let Backend::Postgres = backend {
        let name = format!("rop_test_{}", uuid::Uuid::new_v4().simple());
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&pg_admin_url())
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (see .ci/run)");
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = url::Url::parse(&pg_admin_url()).unwrap();
        url.set_path(&name);
        config.database_url = Some(url.to_string());
        pg_database = Some(name);
    }
    configure(&mut config);
    start(config, dir, pg_database).await
}

async fn start(config: Config, dir: tempfile::TempDir, pg_database: Option<String>) -> TestApp {
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let server = Server::build(&config, listener)
        .await
        .expect("server builds");
    let addr = server.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = signal.await;
    }));
    let store = rop::open_store(&config.database_url()).await.unwrap();
    let key = store
        .valid_api_keys(chrono::Utc::now())
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.is_current())
        .expect("the server created a key")
        .secret
        .expose()
        .to_owned();
    TestApp {
        base: format!("http://{addr}"),
        key,
        client: reqwest::Client::new(),
        store,
        data_dir: config.data_dir.clone(),
        config,
        shutdown: Some(shutdown),
        _dir: dir,
        pg_database,
    }
}

pub async fn error_of(response: reqwest::Response) -> (u16, String, Option<String>) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    let field = body["error"]["field"].as_str().map(str::to_owned);
    (status, code, field)
}
