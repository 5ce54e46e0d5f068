//! HTTP API v1 of Цифровой РОП (PRODUCT.md §3): the CRM-facing endpoints,
//! health and metrics, and the OpenAPI document generated from this code.

mod amocrm;
mod auth;
mod bitrix24;
mod cache;
mod calls;
mod definitions;
mod error;
mod integrations;
mod ops;
mod settings;
mod tables;
mod upload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::routing::{any, delete, get, post, put};
use axum::{middleware, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use rop_blob::BlobStore;
use rop_domain::Store;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use auth::RateLimit;
pub use cache::Caches;
pub use error::ApiError;
pub use ops::prometheus;

/// Limits on what the CRM may send (seed 002, all configurable).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_upload_bytes: u64,
    pub max_duration_secs: u32,
    /// How long the upload-time probe of an audio link may take.
    pub probe_timeout: Duration,
    /// Attempts each processing step of an accepted call gets.
    pub job_attempts: u32,
}

/// Everything the handlers share.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    /// Guarded clients for audio links (private networks allowed or not, as
    /// the connection settings say).
    pub http: rop_fetch::AudioClients,
    pub limits: Limits,
    pub rate_limit: RateLimit,
    /// Where uploaded files are written while they stream in.
    pub staging_dir: PathBuf,
    pub metrics: PrometheusHandle,
    /// In-memory copies of keys and settings; `Caches::default()`.
    pub caches: Caches,
    /// Telephony and CRM integrations.
    pub integrations: rop_integrations::Integrations,
}

impl AppState {
    /// The connection settings, from memory when recently read.
    async fn connection_settings(&self) -> Result<rop_domain::ConnectionSettings, ApiError> {
        let store = &self.store;
        let (settings, _) = self
            .caches
            .connection_settings
            .get(|| store.connection_settings())
            .await?;
        Ok(settings)
    }

    /// Notes a settings change made with the API key in the audit log (the
    /// web interface's Журнал), as the interface does for its users.
    ///
    /// Written after the change itself and not in one transaction with it
    /// (the store has no transactions across calls): should this write fail,
    /// the request fails with a 500 although the change was saved.
    async fn audit(&self, action: &str, target: &str, details: String) -> Result<(), ApiError> {
        self.store
            .add_audit_entry(&rop_domain::NewAuditEntry {
                at: chrono::Utc::now(),
                actor: rop_domain::API_ACTOR.to_owned(),
                action: action.to_owned(),
                target: target.to_owned(),
                details,
            })
            .await?;
        Ok(())
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Цифровой РОП — REST API v1",
        description = "Загрузка звонков из CRM, синхронизация офисов и менеджеров, результаты анализа. Ключ передаётся параметром apiKey, заголовком X-Api-Key или Authorization: Bearer."
    ),
    paths(
        upload::audio_upload,
        calls::list_calls,
        calls::get_call,
        calls::delete_call,
        calls::reanalyze_call,
        calls::resend_delivery,
        definitions::list_checklists,
        definitions::create_checklist,
        definitions::get_checklist,
        definitions::put_checklist,
        definitions::delete_checklist,
        definitions::list_tables,
        definitions::create_table,
        definitions::get_table,
        definitions::put_table,
        definitions::delete_table,
        settings::offices_update,
        settings::managers_update,
        settings::get_connection,
        settings::put_connection,
        tables::call_ready,
        integrations::get_zadarma,
        integrations::put_zadarma,
        integrations::check_zadarma,
        integrations::load_zadarma_pbx,
        integrations::put_zadarma_extensions,
        integrations::zadarma_callback,
        integrations::zadarma_webrtc_key,
        integrations::telephony_journal,
        integrations::list_clients,
        integrations::upsert_clients,
        integrations::delete_client,
        amocrm::get_amocrm,
        amocrm::put_amocrm,
        amocrm::check_amocrm,
        amocrm::amocrm_consent_url,
        amocrm::amocrm_sign_in,
        amocrm::put_amocrm_users,
        amocrm::list_amocrm_exports,
        amocrm::start_amocrm_export,
        amocrm::get_amocrm_export,
        amocrm::stop_amocrm_export,
        bitrix24::get_bitrix24,
        bitrix24::put_bitrix24,
        bitrix24::check_bitrix24,
        bitrix24::bitrix24_consent_url,
        bitrix24::bitrix24_sign_in,
        bitrix24::put_bitrix24_users,
        bitrix24::list_bitrix24_exports,
        bitrix24::start_bitrix24_export,
        bitrix24::get_bitrix24_export,
        bitrix24::stop_bitrix24_export,
        openapi_json,
        ops::healthz,
        ops::readyz,
        ops::metrics_text,
    ),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("apiKey"))),
        );
        components.add_security_scheme(
            "api_key_header",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3 document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", responses((status = 200, description = "This document")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "Нет такого адреса")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Этот метод не поддерживается по этому адресу",
    )
}

/// The API, with `pages` (the web interface) served beside it under the
/// same tracing, metrics and limits.
pub fn router(state: AppState, pages: Router) -> Router {
    let state = Arc::new(state);
    // Room for the largest allowed file plus the other multipart fields.
    let upload_limit = usize::try_from(state.limits.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1024 * 1024);
    let protected = Router::new()
        .route(
            "/calls/audio-upload",
            post(upload::audio_upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/calls", get(calls::list_calls))
        .route(
            "/calls/{call_id}",
            get(calls::get_call).delete(calls::delete_call),
        )
        .route("/settings/offices-update", post(settings::offices_update))
        .route("/settings/managers-update", post(settings::managers_update))
        .route(
            "/settings/connection",
            get(settings::get_connection).put(settings::put_connection),
        )
        .route("/calls/{call_id}/reanalyze", post(calls::reanalyze_call))
        .route(
            "/calls/{call_id}/deliveries/{delivery_id}/resend",
            post(calls::resend_delivery),
        )
        .route(
            "/checklists",
            get(definitions::list_checklists).post(definitions::create_checklist),
        )
        .route(
            "/checklists/{checklist_id}",
            get(definitions::get_checklist)
                .put(definitions::put_checklist)
                .delete(definitions::delete_checklist),
        )
        .route("/tables/call-ready", get(tables::call_ready))
        .route(
            "/tables",
            get(definitions::list_tables).post(definitions::create_table),
        )
        .route(
            "/tables/{table_id}",
            get(definitions::get_table)
                .put(definitions::put_table)
                .delete(definitions::delete_table),
        )
        .route(
            "/integrations/zadarma",
            get(integrations::get_zadarma).put(integrations::put_zadarma),
        )
        .route(
            "/integrations/zadarma/check",
            post(integrations::check_zadarma),
        )
        .route(
            "/integrations/zadarma/pbx",
            post(integrations::load_zadarma_pbx),
        )
        .route(
            "/integrations/zadarma/extensions",
            put(integrations::put_zadarma_extensions),
        )
        .route(
            "/integrations/zadarma/callback",
            post(integrations::zadarma_callback),
        )
        .route(
            "/integrations/zadarma/webrtc-key",
            get(integrations::zadarma_webrtc_key),
        )
        .route("/telephony/calls", get(integrations::telephony_journal))
        .route(
            "/clients",
            get(integrations::list_clients).post(integrations::upsert_clients),
        )
        .route("/clients/{phone}", delete(integrations::delete_client))
        .route(
            "/integrations/amocrm",
            get(amocrm::get_amocrm).put(amocrm::put_amocrm),
        )
        .route("/integrations/amocrm/check", post(amocrm::check_amocrm))
        .route(
            "/integrations/amocrm/oauth",
            get(amocrm::amocrm_consent_url).post(amocrm::amocrm_sign_in),
        )
        .route("/integrations/amocrm/users", put(amocrm::put_amocrm_users))
        .route(
            "/integrations/amocrm/exports",
            get(amocrm::list_amocrm_exports).post(amocrm::start_amocrm_export),
        )
        .route(
            "/integrations/amocrm/exports/{id}",
            get(amocrm::get_amocrm_export),
        )
        .route(
            "/integrations/amocrm/exports/{id}/stop",
            post(amocrm::stop_amocrm_export),
        )
        .route(
            "/integrations/bitrix24",
            get(bitrix24::get_bitrix24).put(bitrix24::put_bitrix24),
        )
        .route(
            "/integrations/bitrix24/check",
            post(bitrix24::check_bitrix24),
        )
        .route(
            "/integrations/bitrix24/oauth",
            get(bitrix24::bitrix24_consent_url).post(bitrix24::bitrix24_sign_in),
        )
        .route(
            "/integrations/bitrix24/users",
            put(bitrix24::put_bitrix24_users),
        )
        .route(
            "/integrations/bitrix24/exports",
            get(bitrix24::list_bitrix24_exports).post(bitrix24::start_bitrix24_export),
        )
        .route(
            "/integrations/bitrix24/exports/{id}",
            get(bitrix24::get_bitrix24_export),
        )
        .route(
            "/integrations/bitrix24/exports/{id}/stop",
            post(bitrix24::stop_bitrix24_export),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let api = Router::new()
        .route("/openapi.json", get(openapi_json))
        .merge(protected);
    Router::new()
        .nest("/api/v1", api)
        // Zadarma authenticates by its signature, not our key (§8).
        .route(
            "/exec/Zadarma.notify",
            any(integrations::zadarma_notify)
                .layer(DefaultBodyLimit::max(integrations::NOTIFY_BODY_LIMIT)),
        )
        // Bitrix24 authenticates by the application token in the event.
        .route(
            "/exec/Bitrix24.event",
            any(bitrix24::bitrix24_event)
                .layer(DefaultBodyLimit::max(integrations::NOTIFY_BODY_LIMIT)),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics_text))
        .with_state(state)
        .merge(pages)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(2 * 1024 * 1024))
        .layer(middleware::from_fn(ops::record_metrics))
        .layer(
            // The span names the route template and method only: the raw URI
            // may carry the API key in `apiKey`.
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| request.uri().path().to_owned());
                tracing::info_span!("http", method = %request.method(), route = %route)
            }),
        )
}
