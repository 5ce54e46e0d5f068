//! Zadarma's settings (Настройки → Интеграции → Zadarma, seed 004 §2–3).

use rop_domain::ManagerId;

use crate::mask;
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

pub const DEFAULT_API_URL: &str = "https://api.zadarma.com";

/// As stored. The secret is kept in the clear because every request is
/// signed with it; it never leaves the server (`ZadarmaSettingsView`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ZadarmaSettings {
    pub enabled: bool,
    pub api_url: String,
    pub key: String,
    pub secret: String,
    /// Recordings play from Zadarma's link instead of our stored copy.
    pub play_recordings_remotely: bool,
    pub webrtc_enabled: bool,
    /// Incoming calls from a client with an assigned manager ring that
    /// manager's extension first.
    pub route_to_assigned_manager: bool,
    /// Seconds the assigned manager's extension rings before the call goes
    /// back to the PBX's own scenario (Zadarma's `return_timeout`).
    pub route_ring_secs: u32,
    /// Recorded calls enter the analysis pipeline.
    pub analyze_recordings: bool,
    /// From «Получить АТС».
    pub pbx_id: Option<String>,
    pub extensions: Vec<Extension>,
}

impl Default for ZadarmaSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            api_url: DEFAULT_API_URL.to_owned(),
            key: String::new(),
            secret: String::new(),
            play_recordings_remotely: false,
            webrtc_enabled: false,
            route_to_assigned_manager: true,
            route_ring_secs: 20,
            analyze_recordings: true,
            pbx_id: None,
            extensions: Vec::new(),
        }
    }
}

impl std::fmt::Debug for ZadarmaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZadarmaSettings")
            .field("enabled", &self.enabled)
            .field("api_url", &self.api_url)
            .field("key", &self.key)
            .field("secret", &mask(&self.secret))
            .field("pbx_id", &self.pbx_id)
            .field("extensions", &self.extensions.len())
            .finish_non_exhaustive()
    }
}

/// A PBX extension and the employee who answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Extension {
    pub number: String,
    pub manager_id: Option<ManagerId>,
}

impl ZadarmaSettings {
    /// Whether notifications and requests can be handled.
    pub fn is_connected(&self) -> bool {
        self.enabled && !self.key.is_empty() && !self.secret.is_empty()
    }

    pub fn manager_of(&self, extension: &str) -> Option<&ManagerId> {
        self.extensions
            .iter()
            .find(|e| e.number == extension)
            .and_then(|e| e.manager_id.as_ref())
    }

    pub fn extension_of(&self, manager_id: &ManagerId) -> Option<&str> {
        self.extensions
            .iter()
            .find(|e| e.manager_id.as_ref() == Some(manager_id))
            .map(|e| e.number.as_str())
    }

    pub fn view(&self) -> ZadarmaSettingsView {
        ZadarmaSettingsView {
            enabled: self.enabled,
            api_url: self.api_url.clone(),
            key: self.key.clone(),
            secret: (!self.secret.is_empty()).then(|| mask(&self.secret)),
            play_recordings_remotely: self.play_recordings_remotely,
            webrtc_enabled: self.webrtc_enabled,
            route_to_assigned_manager: self.route_to_assigned_manager,
            route_ring_secs: self.route_ring_secs,
            analyze_recordings: self.analyze_recordings,
            pbx_id: self.pbx_id.clone(),
            extensions: self.extensions.clone(),
        }
    }

    /// One line for the audit log; the secret only masked.
    pub fn describe(&self) -> String {
        let yes_no = |on: bool| if on { "да" } else { "нет" };
        format!(
            "включена: {}; Url: {}; Key: {}; Secret: {}; проигрывать удалённо: {}; WebRTC: {}; \
             маршрутизация к менеджеру: {} ({} с); анализ записей: {}",
            yes_no(self.enabled),
            self.api_url,
            self.key,
            if self.secret.is_empty() {
                "—".to_owned()
            } else {
                mask(&self.secret)
            },
            yes_no(self.play_recordings_remotely),
            yes_no(self.webrtc_enabled),
            yes_no(self.route_to_assigned_manager),
            self.route_ring_secs,
            yes_no(self.analyze_recordings),
        )
    }

    /// The audit line of «Получить АТС».
    pub fn pbx_details(&self) -> String {
        format!(
            "АТС {}, внутренних номеров: {}",
            self.pbx_id.as_deref().unwrap_or("—"),
            self.extensions.len()
        )
    }

    /// Applies an edit; names the offending field when it is wrong.
    pub fn apply(&mut self, update: ZadarmaSettingsUpdate) -> Result<(), (&'static str, String)> {
        let api_url = update.api_url.trim();
        let api_url = if api_url.is_empty() {
            DEFAULT_API_URL
        } else {
            api_url
        };
        match Url::parse(api_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => return Err(("api_url", "Url должен быть адресом http(s)://…".into())),
        }
        let key = update.key.trim();
        if key.chars().any(char::is_control) || key.len() > 200 {
            return Err(("key", "Key содержит недопустимые символы".into()));
        }
        let secret = update
            .secret
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map_or_else(|| self.secret.clone(), str::to_owned);
        if secret.chars().any(char::is_control) || secret.len() > 200 {
            return Err(("secret", "Secret содержит недопустимые символы".into()));
        }
        if update.enabled && (key.is_empty() || secret.is_empty()) {
            return Err((
                "key",
                "Чтобы включить интеграцию, укажите Key и Secret".into(),
            ));
        }
        if !(3..=600).contains(&update.route_ring_secs) {
            return Err((
                "route_ring_secs",
                "Время дозвона до менеджера — от 3 до 600 секунд".into(),
            ));
        }
        self.enabled = update.enabled;
        self.api_url = api_url.trim_end_matches('/').to_owned();
        self.key = key.to_owned();
        self.secret = secret;
        self.play_recordings_remotely = update.play_recordings_remotely;
        self.webrtc_enabled = update.webrtc_enabled;
        self.route_to_assigned_manager = update.route_to_assigned_manager;
        self.route_ring_secs = update.route_ring_secs;
        self.analyze_recordings = update.analyze_recordings;
        Ok(())
    }
}

/// The audit line of an extension mapping: `101 → m1, 102 → —`.
pub fn mapping_details(mapping: &std::collections::BTreeMap<String, Option<ManagerId>>) -> String {
    mapping
        .iter()
        .map(|(number, manager)| {
            format!(
                "{number} → {}",
                manager.as_ref().map_or("—", ManagerId::as_str)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the API and the interface show: the secret only as its last
/// characters.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ZadarmaSettingsView {
    pub enabled: bool,
    pub api_url: String,
    pub key: String,
    /// `••••a201` when a secret is set.
    pub secret: Option<String>,
    pub play_recordings_remotely: bool,
    pub webrtc_enabled: bool,
    pub route_to_assigned_manager: bool,
    pub route_ring_secs: u32,
    pub analyze_recordings: bool,
    pub pbx_id: Option<String>,
    pub extensions: Vec<Extension>,
}

/// An edit of the connection. An absent or empty secret keeps the stored one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZadarmaSettingsUpdate {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub api_url: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub play_recordings_remotely: bool,
    #[serde(default)]
    pub webrtc_enabled: bool,
    #[serde(default = "yes")]
    pub route_to_assigned_manager: bool,
    #[serde(default = "default_ring")]
    pub route_ring_secs: u32,
    #[serde(default = "yes")]
    pub analyze_recordings: bool,
}

fn yes() -> bool {
    true
}

fn default_ring() -> u32 {
    20
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update() -> ZadarmaSettingsUpdate {
        ZadarmaSettingsUpdate {
            enabled: true,
            api_url: String::new(),
            key: "e30e16c201343883f77e".into(),
            secret: Some("dbf5606ea4c1f2234201".into()),
            play_recordings_remotely: false,
            webrtc_enabled: true,
            route_to_assigned_manager: true,
            route_ring_secs: 20,
            analyze_recordings: true,
        }
    }

    #[test]
    fn the_secret_is_kept_when_not_sent_and_never_shown_in_full() {
        let mut settings = ZadarmaSettings::default();
        settings.apply(update()).unwrap();
        assert_eq!(settings.api_url, DEFAULT_API_URL);
        settings
            .apply(ZadarmaSettingsUpdate {
                secret: None,
                ..update()
            })
            .unwrap();
        assert_eq!(settings.secret, "dbf5606ea4c1f2234201");
        let view = serde_json::to_string(&settings.view()).unwrap();
        assert!(!view.contains("dbf5606ea4c1f2234201"), "{view}");
        assert!(view.contains("••••4201"), "{view}");
        assert!(!format!("{settings:?}").contains("dbf5606ea4c1f2234201"));
    }

    #[test]
    fn bad_edits_name_their_field_and_change_nothing() {
        let mut settings = ZadarmaSettings::default();
        let before = settings.clone();
        let cases = [
            (
                ZadarmaSettingsUpdate {
                    api_url: "ftp://x".into(),
                    ..update()
                },
                "api_url",
            ),
            (
                ZadarmaSettingsUpdate {
                    key: String::new(),
                    ..update()
                },
                "key",
            ),
            (
                ZadarmaSettingsUpdate {
                    route_ring_secs: 1,
                    ..update()
                },
                "route_ring_secs",
            ),
            (
                ZadarmaSettingsUpdate {
                    secret: Some("a\u{0}b".into()),
                    ..update()
                },
                "secret",
            ),
        ];
        for (edit, field) in cases {
            assert_eq!(settings.apply(edit).unwrap_err().0, field);
            assert_eq!(settings, before);
        }
    }
}
