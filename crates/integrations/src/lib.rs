//! Integrations with the systems our customers run (PRODUCT.md §8):
//! telephony and CRMs, each behind its own module. Every request goes out
//! through the SSRF guard; every fact about the outside APIs comes from
//! integrations.md.
//!
//! The flow is one way: an integration turns what the outside system tells
//! it (a notification, an exported page) into journal rows, clients and
//! durable tasks, and a task finally hands a recording to the pipeline as an
//! ordinary call (`intake`). Nothing here touches the pipeline's steps.

pub mod amocrm;
pub mod bitrix24;
pub mod crm;
pub mod exports;
mod intake;
pub mod summary;
pub mod tasks;
mod tokens;
pub mod zadarma;

use std::sync::Arc;

use chrono::FixedOffset;
use rop_domain::Store;
use rop_fetch::AudioClients;

pub use tasks::TaskWorker;

/// The last four characters of a secret behind dots, enough to tell which
/// one is stored; what every settings page and log line shows of a secret.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        return "••••".to_owned();
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("••••{tail}")
}

/// What every integration needs from the installation.
#[derive(Clone)]
pub struct Context {
    pub store: Arc<dyn Store>,
    /// Outgoing clients; whether private networks are allowed follows the
    /// connection settings, as for audio links (an on-premise CRM).
    pub http: AudioClients,
    /// The time zone of naive times the PBX sends (`2024-05-01 12:00:00`).
    pub local_offset: FixedOffset,
    /// Attempts each pipeline step of an imported call gets.
    pub job_attempts: u32,
}

impl Context {
    async fn http(&self) -> Result<rop_fetch::GuardedClient, rop_domain::StoreError> {
        let settings = self.store.connection_settings().await?;
        Ok(self.http.client(settings.allow_private_networks).clone())
    }
}

/// The integrations of one process: what the API, the web interface and
/// the task worker call.
#[derive(Clone)]
pub struct Integrations {
    pub zadarma: zadarma::Zadarma,
    pub amocrm: amocrm::Amocrm,
    pub bitrix24: bitrix24::Bitrix24,
}

impl Integrations {
    pub fn new(context: Context) -> Self {
        Self {
            zadarma: zadarma::Zadarma::new(context.clone()),
            amocrm: amocrm::Amocrm::new(context.clone()),
            bitrix24: bitrix24::Bitrix24::new(context),
        }
    }
}
