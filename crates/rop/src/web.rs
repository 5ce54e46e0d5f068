//! What the web interface asks of the engines: their health for the Движки
//! page, and a signed test webhook from the editors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use rop_analysis::Analyzer;
use rop_delivery::Verdict;
use rop_domain::{
    CallId, Checklist, ChecklistResult, ClaimedDelivery, DeliveryEvent, Table, TableResult,
    Transcript, Webhook,
};
use rop_fetch::GuardedClient;
use rop_web::{EngineStatus, Services};

use crate::config::{AsrEngineKind, Config, LlmEngineKind};

pub struct EngineServices {
    config: Config,
    webhooks: GuardedClient,
    probe: reqwest::Client,
    analyzer: Arc<Analyzer>,
}

impl EngineServices {
    pub fn new(config: &Config, webhooks: GuardedClient, analyzer: Arc<Analyzer>) -> Self {
        Self {
            config: config.clone(),
            webhooks,
            analyzer,
            probe: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Whether a remote OpenAI-compatible server answers `GET …/models`.
    async fn remote(&self, base: Option<&str>, key: Option<&str>) -> (bool, String) {
        let Some(base) = base else {
            return (false, "адрес сервера не задан".into());
        };
        let url = format!("{}/models", base.trim_end_matches('/'));
        let mut request = self.probe.get(&url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                (true, format!("сервер ответил {}", response.status()))
            }
            Ok(response) => (false, format!("сервер ответил {}", response.status())),
            Err(error) if error.is_timeout() => (false, "сервер не ответил за 5 секунд".into()),
            Err(_) => (false, "сервер недоступен".into()),
        }
    }
}

fn file_check(path: &Path) -> (bool, String) {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => (
            true,
            format!("файл на месте, {} МБ", meta.len() / (1024 * 1024)),
        ),
        _ => (false, "файла нет — выполните rop models install".to_owned()),
    }
}

#[async_trait]
impl Services for EngineServices {
    async fn engines(&self) -> Vec<EngineStatus> {
        let config = &self.config;
        let asr = match config.asr_engine {
            AsrEngineKind::Whisper => {
                let model = config.whisper_model();
                let (healthy, detail) = file_check(&model);
                EngineStatus {
                    purpose: "Распознавание речи".into(),
                    engine: format!("whisper.cpp в процессе, язык {}", config.asr_language),
                    model: model.display().to_string(),
                    healthy,
                    detail,
                }
            }
            AsrEngineKind::OpenAi => {
                let (healthy, detail) = self
                    .remote(config.asr_url.as_deref(), config.asr_api_key.as_deref())
                    .await;
                EngineStatus {
                    purpose: "Распознавание речи".into(),
                    engine: format!(
                        "внешний сервер {}",
                        config.asr_url.as_deref().unwrap_or_default()
                    ),
                    model: config.asr_remote_model.clone(),
                    healthy,
                    detail,
                }
            }
        };
        let mut engines = vec![asr];
        if config.asr_engine == AsrEngineKind::Whisper {
            if let Some(vad) = config.vad_model() {
                let (healthy, detail) = file_check(&vad);
                engines.push(EngineStatus {
                    purpose: "Поиск речи (VAD)".into(),
                    engine: "Silero VAD".into(),
                    model: vad.display().to_string(),
                    healthy,
                    detail,
                });
            }
        }
        engines.push(match config.llm_engine {
            LlmEngineKind::Local => {
                let model = config.llm_model();
                let program = config.llm_program();
                let (model_ok, model_detail) = file_check(&model);
                let (program_ok, _) = file_check(&program);
                EngineStatus {
                    purpose: "Анализ звонков".into(),
                    engine: "llama.cpp в дочернем процессе rop-llm".into(),
                    model: model.display().to_string(),
                    healthy: model_ok && program_ok,
                    detail: if program_ok {
                        model_detail
                    } else {
                        format!(
                            "нет программы {} — соберите её scripts/run.sh",
                            program.display()
                        )
                    },
                }
            }
            LlmEngineKind::OpenAi => {
                let (healthy, detail) = self
                    .remote(config.llm_url.as_deref(), config.llm_api_key.as_deref())
                    .await;
                EngineStatus {
                    purpose: "Анализ звонков".into(),
                    engine: format!(
                        "внешний сервер {}",
                        config.llm_url.as_deref().unwrap_or_default()
                    ),
                    model: config.llm_remote_model.clone(),
                    healthy,
                    detail,
                }
            }
            LlmEngineKind::None => EngineStatus {
                purpose: "Анализ звонков".into(),
                engine: "правила по фразам (языковая модель выключена)".into(),
                model: "—".into(),
                healthy: true,
                detail: "этапы оцениваются по примерам фраз; таблицы не заполняются".into(),
            },
        });
        engines
    }

    async fn send_test_webhook(
        &self,
        webhook: &Webhook,
        event: DeliveryEvent,
        body: String,
    ) -> Result<String, String> {
        let delivery = ClaimedDelivery {
            delivery_id: format!("test-{}", uuid_like()),
            call_id: CallId::try_from("test".to_owned()).map_err(|e| e.to_string())?,
            event,
            url: webhook.url.clone(),
            secret: webhook.secret.clone(),
            body,
            attempt: 1,
            created_at: chrono::Utc::now(),
            worker: "web".into(),
        };
        let timeout = Duration::from_secs(self.config.webhook_timeout_secs);
        let report = rop_delivery::send(&self.webhooks, &delivery, timeout).await;
        let answer = report
            .status_code
            .map(|code| format!("HTTP {code}"))
            .unwrap_or_else(|| "нет ответа".to_owned());
        let error = report.error.map(|e| format!(": {e}")).unwrap_or_default();
        match report.verdict {
            Verdict::Delivered => Ok(format!(
                "Доставлен: {answer} за {} мс",
                report.duration.as_millis()
            )),
            _ => Err(format!("Не доставлен: {answer}{error}")),
        }
    }

    async fn try_checklist(
        &self,
        checklist: &Checklist,
        transcript: &Transcript,
    ) -> Result<ChecklistResult, String> {
        self.analyzer
            .checklist(checklist, transcript, chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())
    }

    async fn try_table(
        &self,
        table: &Table,
        transcript: &Transcript,
        call_date: Option<NaiveDate>,
    ) -> Result<Option<TableResult>, String> {
        self.analyzer
            .table(table, transcript, call_date, chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())
    }
}

/// A random id for a test delivery, so receivers that deduplicate by
/// `X-Rop-Delivery` accept every test.
fn uuid_like() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}
