//! `rop amocrm …` and `rop bitrix24 …`: the connection check and the
//! export from the command line. The export itself runs in the task worker of `rop serve`
//! or `rop worker`, as one started from the interface does; the command
//! queues it, or stops it, and shows its progress.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::NaiveDate;
use clap::{Subcommand, ValueEnum};
use rop_integrations::amocrm::{ExportDirection, ExportRequest, ExportView};
use rop_integrations::bitrix24::{B24ExportRequest, B24ExportView};
use rop_integrations::exports::ExportProgress;

use crate::config::Config;

#[derive(Subcommand)]
pub enum AmocrmCommand {
    /// Check the connection and load the account's users.
    Check,
    /// Start an export of recorded calls into the analysis and follow it.
    Export {
        /// First day, included (YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// Last day, included (YYYY-MM-DD).
        #[arg(long)]
        to: NaiveDate,
        /// amoCRM user ids whose calls to take (repeat; none: everyone's).
        #[arg(long = "user", value_name = "ID")]
        users: Vec<i64>,
        #[arg(long, value_enum, default_value_t = CliDirection::All)]
        direction: CliDirection,
        /// Import calls again even if they were imported before.
        #[arg(long)]
        reexport: bool,
        /// Shortest call to take, seconds (0: no limit).
        #[arg(long, default_value_t = 0)]
        min_duration: u32,
        /// Longest call to take, seconds (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_duration: u32,
        /// Return at once instead of printing progress until it ends.
        #[arg(long)]
        detach: bool,
    },
    /// List exports with their progress.
    Exports,
    /// Stop a running export; calls imported so far stay.
    Stop { id: i64 },
}

#[derive(Subcommand)]
pub enum Bitrix24Command {
    /// Check the connection and load the portal's users.
    Check,
    /// Start an export of recorded calls into the analysis and follow it.
    Export {
        /// Calls from this day on (YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// Portal user ids whose calls to take (repeat; none: everyone's).
        #[arg(long = "user", value_name = "ID")]
        users: Vec<i64>,
        /// Shortest call to take, seconds [default: the settings' minimum].
        #[arg(long)]
        min_duration: Option<u32>,
        /// Return at once instead of printing progress until it ends.
        #[arg(long)]
        detach: bool,
    },
    /// List exports with their progress.
    Exports,
    /// Stop a running export; calls imported so far stay.
    Stop { id: i64 },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CliDirection {
    All,
    Outgoing,
    Incoming,
}

fn line(
    id: i64,
    period: &str,
    state: rop_domain::TaskState,
    progress: &ExportProgress,
    error: Option<&String>,
) -> String {
    let mut text = format!(
        "выгрузка {id}: {period}, {state:?}; найдено {}, загружено {}, пропущено {}, ошибок {}",
        progress.found, progress.imported, progress.skipped, progress.failed
    );
    if let Some(error) = error.or(progress.last_error.as_ref()) {
        text.push_str(&format!("; последняя ошибка: {error}"));
    }
    text
}

fn amocrm_line(export: &ExportView) -> String {
    let period = format!("{} — {}", export.request.date_from, export.request.date_to);
    line(
        export.id,
        &period,
        export.state,
        &export.progress,
        export.error.as_ref(),
    )
}

fn bitrix24_line(export: &B24ExportView) -> String {
    let period = format!("с {}", export.request.date_from);
    line(
        export.id,
        &period,
        export.state,
        &export.progress,
        export.error.as_ref(),
    )
}

/// Prints the progress whenever it changes, until the export is over.
async fn follow<F, Fut>(mut current: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(String, bool)>>,
{
    let mut last = String::new();
    loop {
        let (now, active) = current().await?;
        if now != last {
            eprintln!("{now}");
            last = now;
        }
        if !active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn run_amocrm(command: AmocrmCommand, config: &Config) -> anyhow::Result<()> {
    let integrations = crate::app::open_integrations(config).await?;
    let amocrm = &integrations.amocrm;
    match command {
        AmocrmCommand::Check => {
            let found = amocrm.check().await?;
            println!(
                "Подключение к amoCRM работает: пользователей {}, воронок {}",
                found.users, found.pipelines
            );
        }
        AmocrmCommand::Export {
            from,
            to,
            users,
            direction,
            reexport,
            min_duration,
            max_duration,
            detach,
        } => {
            let request = ExportRequest {
                date_from: from,
                date_to: to,
                user_ids: users,
                direction: match direction {
                    CliDirection::All => ExportDirection::All,
                    CliDirection::Outgoing => ExportDirection::Outgoing,
                    CliDirection::Incoming => ExportDirection::Incoming,
                },
                reexport,
                min_duration_secs: min_duration,
                max_duration_secs: max_duration,
            };
            let export = amocrm.start_export(request).await?;
            println!(
                "Выгрузка {} запущена; её выполняет работающий `rop serve` или `rop worker`.",
                export.id
            );
            if !detach {
                let id = export.id;
                follow(|| async move {
                    let export = amocrm.export(id).await?.context("the export is gone")?;
                    Ok((amocrm_line(&export), export.is_active()))
                })
                .await?;
            }
        }
        AmocrmCommand::Exports => {
            let exports = amocrm.exports(20).await?;
            if exports.is_empty() {
                println!("Выгрузок ещё не было.");
            }
            for export in exports {
                println!("{}", amocrm_line(&export));
            }
        }
        AmocrmCommand::Stop { id } => {
            if amocrm.stop_export(id).await? {
                println!("Выгрузка {id} остановлена.");
            } else {
                bail!("выгрузки {id} нет или она уже закончилась");
            }
        }
    }
    Ok(())
}

pub async fn run_bitrix24(command: Bitrix24Command, config: &Config) -> anyhow::Result<()> {
    let integrations = crate::app::open_integrations(config).await?;
    let bitrix24 = &integrations.bitrix24;
    match command {
        Bitrix24Command::Check => {
            let found = bitrix24.check().await?;
            println!(
                "Подключение к Bitrix24 работает: сотрудников {}",
                found.users
            );
        }
        Bitrix24Command::Export {
            from,
            users,
            min_duration,
            detach,
        } => {
            let export = bitrix24
                .start_export(B24ExportRequest {
                    date_from: from,
                    user_ids: users,
                    min_duration_secs: min_duration,
                })
                .await?;
            println!(
                "Выгрузка {} запущена; её выполняет работающий `rop serve` или `rop worker`.",
                export.id
            );
            if !detach {
                let id = export.id;
                follow(|| async move {
                    let export = bitrix24.export(id).await?.context("the export is gone")?;
                    Ok((bitrix24_line(&export), export.is_active()))
                })
                .await?;
            }
        }
        Bitrix24Command::Exports => {
            let exports = bitrix24.exports(20).await?;
            if exports.is_empty() {
                println!("Выгрузок ещё не было.");
            }
            for export in exports {
                println!("{}", bitrix24_line(&export));
            }
        }
        Bitrix24Command::Stop { id } => {
            if bitrix24.stop_export(id).await? {
                println!("Выгрузка {id} остановлена.");
            } else {
                bail!("выгрузки {id} нет или она уже закончилась");
            }
        }
    }
    Ok(())
}
