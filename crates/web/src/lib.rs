//! The web interface of Цифровой РОП (PRODUCT.md §7): server-rendered
//! Russian pages for administrators, office leaders and managers.
//!
//! - [`session`] logs people in and out, keeps server-side sessions and
//!   checks the CSRF token of every state-changing request;
//! - [`access`] decides what each role may see: every page, fragment and
//!   download asks it, never the template;
//! - `pages` render what the store holds; `assets` serves the built-in
//!   scripts and styles, so no page loads anything from elsewhere.
//!
//! The crate reads and writes through [`Store`] only; work that needs the
//! pipeline's engines (a health check, a test webhook) goes through the
//! [`Services`] the binary provides.

mod access;
mod assets;
mod error;
mod format;
mod pages;
pub mod password;
mod session;

use std::sync::Arc;

use async_trait::async_trait;
use axum::routing::{get, post};
use axum::{middleware, Router};
use chrono::NaiveDate;
use rop_blob::BlobStore;
use rop_domain::{
    Checklist, ChecklistResult, DeliveryEvent, Store, Table, TableResult, Transcript, Webhook,
};

pub use error::PageError;
pub use session::LoginLimits;

/// What the pages need from the engines, provided by the binary.
#[async_trait]
pub trait Services: Send + Sync + 'static {
    /// The configured speech and language engines, each checked now.
    async fn engines(&self) -> Vec<EngineStatus>;
    /// Sends one signed sample delivery to `webhook`; a line for the
    /// administrator either way.
    async fn send_test_webhook(
        &self,
        webhook: &Webhook,
        event: DeliveryEvent,
        body: String,
    ) -> Result<String, String>;
    /// Scores `checklist` on a transcript without storing anything (the
    /// editor's «try on a call»); the error is a line for the administrator.
    async fn try_checklist(
        &self,
        checklist: &Checklist,
        transcript: &Transcript,
    ) -> Result<ChecklistResult, String>;
    /// Fills `table` from a transcript without storing anything; `None`
    /// when no language model is configured for it.
    async fn try_table(
        &self,
        table: &Table,
        transcript: &Transcript,
        call_date: Option<NaiveDate>,
    ) -> Result<Option<TableResult>, String>;
}

/// One engine as the Движки page shows it.
#[derive(Debug, Clone)]
pub struct EngineStatus {
    /// «Распознавание речи», «Анализ».
    pub purpose: String,
    /// The engine and where it runs.
    pub engine: String,
    /// The model file or name.
    pub model: String,
    pub healthy: bool,
    /// What the check found, in Russian.
    pub detail: String,
}

/// Settings of the web interface (from the configuration).
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The address the CRM reaches us at; the request's own address when unset.
    pub public_url: Option<url::Url>,
    /// The company's time zone for days on charts and times on pages.
    pub utc_offset_secs: i32,
    /// How long a login lasts.
    pub session_hours: u32,
    /// Whether audio links into private networks are allowed (shown on the
    /// Подключение page; set in the configuration).
    pub fetch_allow_private: bool,
    pub login_limits: LoginLimits,
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            public_url: None,
            utc_offset_secs: 3 * 3600,
            session_hours: 12,
            fetch_allow_private: false,
            login_limits: LoginLimits::default(),
        }
    }
}

/// Everything the pages share.
pub struct WebState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) services: Arc<dyn Services>,
    pub(crate) integrations: rop_integrations::Integrations,
    pub(crate) settings: WebSettings,
    pub(crate) logins: session::LoginAttempts,
}

impl WebState {
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        services: Arc<dyn Services>,
        integrations: rop_integrations::Integrations,
        settings: WebSettings,
    ) -> Self {
        let logins = session::LoginAttempts::new(settings.login_limits);
        Self {
            store,
            blobs,
            services,
            integrations,
            settings,
            logins,
        }
    }
}

/// The pages, fragments and assets, to be merged with the API's router.
pub fn router(state: WebState) -> Router {
    let state = Arc::new(state);
    let signed_in = Router::new()
        .route("/", get(pages::home))
        .route("/logout", post(session::logout))
        .route("/dashboard", get(pages::dashboard::page))
        .route("/calls", get(pages::calls::list))
        .route("/calls/{call_id}", get(pages::calls::card_page))
        .route("/calls/{call_id}/audio", get(pages::calls::audio))
        .route("/calls/{call_id}/progress", get(pages::calls::progress))
        .route(
            "/calls/{call_id}/deliveries/{delivery_id}/resend",
            post(pages::calls::resend),
        )
        .route("/managers", get(pages::people::managers))
        .route("/managers/{manager_id}", get(pages::people::manager))
        .route("/offices", get(pages::people::offices))
        .route("/offices/{office_id}", get(pages::people::office))
        .route("/settings", get(pages::settings::index))
        .route(
            "/settings/connection",
            get(pages::settings::connection).post(pages::settings::save_connection),
        )
        .route(
            "/settings/checklists",
            get(pages::definitions::checklists).post(pages::definitions::save_checklist),
        )
        .route(
            "/settings/checklists/new",
            get(pages::definitions::new_checklist),
        )
        .route(
            "/settings/checklists/{id}",
            get(pages::definitions::edit_checklist),
        )
        .route(
            "/settings/checklists/{id}/delete",
            post(pages::definitions::delete_checklist),
        )
        .route(
            "/settings/checklists/{id}/test-webhook",
            post(pages::definitions::test_checklist_webhook),
        )
        .route(
            "/settings/checklists/{id}/try",
            post(pages::definitions::try_checklist),
        )
        .route(
            "/settings/tables",
            get(pages::definitions::tables).post(pages::definitions::save_table),
        )
        .route("/settings/tables/new", get(pages::definitions::new_table))
        .route("/settings/tables/{id}", get(pages::definitions::edit_table))
        .route(
            "/settings/tables/{id}/delete",
            post(pages::definitions::delete_table),
        )
        .route(
            "/settings/tables/{id}/test-webhook",
            post(pages::definitions::test_table_webhook),
        )
        .route(
            "/settings/tables/{id}/try",
            post(pages::definitions::try_table),
        )
        .route(
            "/settings/users",
            get(pages::users::list).post(pages::users::create),
        )
        .route("/settings/users/{id}", post(pages::users::update))
        .route("/settings/users/{id}/delete", post(pages::users::delete))
        .route(
            "/settings/integrations",
            get(|| async { axum::response::Redirect::to("/settings/integrations/zadarma") }),
        )
        .route(
            "/settings/integrations/zadarma",
            get(pages::telephony::zadarma).post(pages::telephony::save_zadarma),
        )
        .route(
            "/settings/integrations/zadarma/check",
            post(pages::telephony::check_zadarma),
        )
        .route(
            "/settings/integrations/zadarma/pbx",
            post(pages::telephony::load_pbx),
        )
        .route(
            "/settings/integrations/zadarma/extensions",
            post(pages::telephony::save_extensions),
        )
        .route(
            "/settings/integrations/amocrm",
            get(pages::amocrm::show).post(pages::amocrm::save),
        )
        .route(
            "/settings/integrations/amocrm/check",
            post(pages::amocrm::check),
        )
        .route(
            "/settings/integrations/amocrm/sign-in",
            post(pages::amocrm::sign_in),
        )
        .route(
            "/settings/integrations/amocrm/oauth",
            get(pages::amocrm::oauth_return),
        )
        .route(
            "/settings/integrations/amocrm/users",
            post(pages::amocrm::save_users),
        )
        .route(
            "/settings/integrations/amocrm/exports",
            post(pages::amocrm::start_export),
        )
        .route(
            "/settings/integrations/amocrm/exports/{id}/stop",
            post(pages::amocrm::stop_export),
        )
        .route(
            "/settings/integrations/bitrix24",
            get(pages::bitrix24::show).post(pages::bitrix24::save),
        )
        .route(
            "/settings/integrations/bitrix24/check",
            post(pages::bitrix24::check),
        )
        .route(
            "/settings/integrations/bitrix24/sign-in",
            post(pages::bitrix24::sign_in),
        )
        .route(
            "/settings/integrations/bitrix24/oauth",
            get(pages::bitrix24::oauth_return),
        )
        .route(
            "/settings/integrations/bitrix24/users",
            post(pages::bitrix24::save_users),
        )
        .route(
            "/settings/integrations/bitrix24/exports",
            post(pages::bitrix24::start_export),
        )
        .route(
            "/settings/integrations/bitrix24/exports/{id}/stop",
            post(pages::bitrix24::stop_export),
        )
        .route(
            "/settings/clients",
            get(pages::telephony::clients).post(pages::telephony::save_client),
        )
        .route(
            "/settings/clients/{phone}/delete",
            post(pages::telephony::delete_client),
        )
        .route("/telephony", get(pages::telephony::journal))
        .route("/telephony/call", post(pages::telephony::click_to_call))
        .route("/telephony/webrtc-key", post(pages::telephony::webrtc_key))
        .route(
            "/telephony/{pbx_call_id}/recording",
            get(pages::telephony::recording),
        )
        .route("/settings/engines", get(pages::settings::engines))
        .route("/settings/audit", get(pages::settings::audit_log))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::require_session,
        ));
    Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/assets/{name}", get(assets::serve))
        .merge(signed_in)
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// Pages may load scripts, styles, images and sound from this server only,
/// and may not be framed: with every asset built in, nothing else is needed,
/// and an injected script or a foreign frame has nowhere to go.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{header, HeaderValue};
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}
