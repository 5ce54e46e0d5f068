//! `rop amocrm …`: the amoCRM connection check and the export from the
//! command line. The export itself runs in the task worker of `rop serve`
//! or `rop worker`, as one started from the interface does; the command
//! queues it, or stops it, and shows its progress.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::NaiveDate;
use clap::{Subcommand, ValueEnum};
use rop_integrations::amocrm::{ExportDirection, ExportRequest, ExportView};

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

#[derive(Clone, Copy, ValueEnum)]
pub enum CliDirection {
    All,
    Outgoing,
    Incoming,
}

fn line(export: &ExportView) -> String {
    let progress = &export.progress;
    let mut text = format!(
        "выгрузка {}: {} — {}, {:?}; найдено {}, загружено {}, пропущено {}, ошибок {}",
        export.id,
        export.request.date_from,
        export.request.date_to,
        export.state,
        progress.found,
        progress.imported,
        progress.skipped,
        progress.failed
    );
    if let Some(error) = export.error.as_ref().or(progress.last_error.as_ref()) {
        text.push_str(&format!("; последняя ошибка: {error}"));
    }
    text
}

pub async fn run(command: AmocrmCommand, config: &Config) -> anyhow::Result<()> {
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
                follow(amocrm, export.id).await?;
            }
        }
        AmocrmCommand::Exports => {
            let exports = amocrm.exports(20).await?;
            if exports.is_empty() {
                println!("Выгрузок ещё не было.");
            }
            for export in exports {
                println!("{}", line(&export));
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

/// Prints the progress whenever it changes, until the export is over.
async fn follow(amocrm: &rop_integrations::amocrm::Amocrm, id: i64) -> anyhow::Result<()> {
    let mut last = String::new();
    loop {
        let export = amocrm.export(id).await?.context("the export is gone")?;
        let now = line(&export);
        if now != last {
            eprintln!("{now}");
            last = now;
        }
        if !export.is_active() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
