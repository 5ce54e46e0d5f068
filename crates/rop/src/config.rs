//! Configuration: built-in defaults, then a TOML file (`--config` /
//! `ROP_CONFIG`), then `ROP_*` environment variables, then command-line
//! flags — each overriding the one before. With nothing configured at all,
//! `rop serve` runs on SQLite under `./data`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Database, audio and staging files live here.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: SQLite in the data directory.
    pub database_url: Option<String>,
    pub models_dir: PathBuf,
    /// Allow audio links into private networks (on-premise CRMs).
    pub fetch_allow_private: bool,
    /// Allow audio links to this machine (tests, single-host setups).
    pub fetch_allow_loopback: bool,
    pub max_upload_bytes: u64,
    pub max_duration_secs: u32,
    /// Requests per minute per API key; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Upload-time probe of an audio link, in milliseconds.
    pub probe_timeout_ms: u64,
    /// Calls processed at the same time by `serve` (0: none, API only) and
    /// by `worker`.
    pub worker_concurrency: usize,
    /// Attempts each processing step gets before the call fails.
    pub job_attempts: u32,
    /// A worker's hold on a job; another worker takes over this long after
    /// the last heartbeat of a worker that died.
    pub job_lease_secs: u64,
    /// Delay before the first retry of a failed step, doubled for each next.
    pub retry_base_secs: u64,
    /// Longest time one download of a recording may take.
    pub download_timeout_secs: u64,
    /// Log filter, e.g. `info` or `rop=debug,info` (`RUST_LOG` wins).
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            models_dir: PathBuf::from("./models"),
            fetch_allow_private: false,
            fetch_allow_loopback: false,
            max_upload_bytes: 100 * 1024 * 1024,
            max_duration_secs: 2700,
            rate_limit_per_minute: 60,
            probe_timeout_ms: 5000,
            worker_concurrency: 1,
            job_attempts: 5,
            job_lease_secs: 60,
            retry_base_secs: 10,
            download_timeout_secs: 600,
            log: "info".to_owned(),
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models_dir: Option<PathBuf>,
}

impl Config {
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("ROP_").ignore(&["config"]))
            .merge(Serialized::defaults(overrides))
            .extract::<Config>()
            .map_err(Box::new)?
            .validated()
    }

    /// Values that parse but cannot work.
    fn validated(self) -> Result<Self, Box<figment::Error>> {
        let problem = if self.job_attempts == 0 {
            Some("job_attempts: нужна хотя бы одна попытка")
        } else if self.job_lease_secs < 3 {
            Some("job_lease_secs: не меньше 3 секунд")
        } else if self.download_timeout_secs == 0 {
            Some("download_timeout_secs: должно быть больше нуля")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(Box::new(figment::Error::from(problem.to_owned()))),
            None => Ok(self),
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("rop.db").display()),
        }
    }
}

/// Hides the password of a database URL in logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url()))
            .field("models_dir", &self.models_dir)
            .field("fetch_allow_private", &self.fetch_allow_private)
            .field("fetch_allow_loopback", &self.fetch_allow_loopback)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_duration_secs", &self.max_duration_secs)
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("probe_timeout_ms", &self.probe_timeout_ms)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("job_attempts", &self.job_attempts)
            .field("job_lease_secs", &self.job_lease_secs)
            .field("retry_base_secs", &self.retry_base_secs)
            .field("download_timeout_secs", &self.download_timeout_secs)
            .finish()
    }
}

#[cfg(test)]
// figment's Jail API returns its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "rop.toml",
                "listen = \"127.0.0.1:9000\"\nrate_limit_per_minute = 10\nmax_duration_secs = 60",
            )?;
            jail.set_env("ROP_RATE_LIMIT_PER_MINUTE", "20");
            jail.set_env("ROP_FETCH_ALLOW_PRIVATE", "true");
            jail.set_env("ROP_CONFIG", "ignored-here");
            let overrides = Overrides {
                data_dir: Some("/srv/rop".into()),
                ..Overrides::default()
            };
            let config = Config::load(Some(Path::new("rop.toml")), &overrides).unwrap();
            assert_eq!(config.listen.port(), 9000);
            assert_eq!(config.max_duration_secs, 60);
            assert_eq!(config.rate_limit_per_minute, 20);
            assert!(config.fetch_allow_private);
            assert_eq!(config.data_dir, PathBuf::from("/srv/rop"));
            assert_eq!(config.database_url(), "sqlite:///srv/rop/rop.db");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("rop.toml", "lisen = \"127.0.0.1:9000\"")?;
            assert!(Config::load(Some(Path::new("rop.toml")), &Overrides::default()).is_err());
            jail.create_file("bad.toml", "max_duration_secs = \"long\"")?;
            assert!(Config::load(Some(Path::new("bad.toml")), &Overrides::default()).is_err());
            assert!(Config::load(Some(Path::new("missing.toml")), &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        figment::Jail::expect_with(|jail| {
            for (name, value, key) in [
                ("ROP_JOB_ATTEMPTS", "0", "job_attempts"),
                ("ROP_JOB_LEASE_SECS", "1", "job_lease_secs"),
                ("ROP_DOWNLOAD_TIMEOUT_SECS", "0", "download_timeout_secs"),
            ] {
                jail.set_env(name, value);
                let error = Config::load(None, &Overrides::default()).unwrap_err();
                assert!(error.to_string().contains(key), "{error}");
                jail.set_env(name, "60");
            }
            assert!(Config::load(None, &Overrides::default()).is_ok());
            Ok(())
        });
    }

    #[test]
    fn debug_output_hides_database_password() {
        let config = Config {
            database_url: Some("postgres://rop:hunter2@db/rop".into()),
            ..Config::default()
        };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
