//! Bitrix24's settings (Настройки → Интеграции → Bitrix24, seed 003).

use rop_domain::ManagerId;
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

use crate::crm::CrmUser;
use crate::mask;

pub const DEFAULT_OAUTH_URL: &str = "https://oauth.bitrix.info";
/// Seed 003 recommends leaving out calls shorter than this.
pub const RECOMMENDED_MIN_SECS: u32 = 30;

/// How we call Bitrix24 (integrations.md §3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum B24AuthMode {
    /// An inbound webhook `https://portal/rest/<user>/<secret>/`.
    #[default]
    Webhook,
    /// A local or market application with OAuth tokens.
    Oauth,
}

/// As stored; secrets never leave the server (`Bitrix24SettingsView`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bitrix24Settings {
    pub enabled: bool,
    pub auth_mode: B24AuthMode,
    /// The inbound webhook, ending with `/`.
    pub webhook_url: String,
    /// The portal, `https://company.bitrix24.ru`, for the OAuth consent page.
    pub portal_url: String,
    /// The token server, `https://oauth.bitrix.info`.
    pub oauth_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// What Bitrix24 puts in `auth[application_token]` of the events it
    /// sends us; events without it are refused.
    pub application_token: String,
    /// Calls that end are imported at once (ONVOXIMPLANTCALLEND).
    pub realtime: bool,
    /// Calls shorter than this are left out (seconds).
    pub min_duration_secs: u32,
    /// After analysis, a timeline comment with the checklist summary.
    pub write_comment: bool,
    /// The portal's employees, from «Проверить подключение», each with the
    /// employee whose calls they are.
    pub users: Vec<CrmUser>,
    pub oauth_state: Option<String>,
}

impl Default for Bitrix24Settings {
    fn default() -> Self {
        Self {
            enabled: false,
            auth_mode: B24AuthMode::Webhook,
            webhook_url: String::new(),
            portal_url: String::new(),
            oauth_url: DEFAULT_OAUTH_URL.to_owned(),
            client_id: String::new(),
            client_secret: String::new(),
            application_token: String::new(),
            realtime: true,
            min_duration_secs: RECOMMENDED_MIN_SECS,
            write_comment: true,
            users: Vec::new(),
            oauth_state: None,
        }
    }
}

impl std::fmt::Debug for Bitrix24Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitrix24Settings")
            .field("enabled", &self.enabled)
            .field("auth_mode", &self.auth_mode)
            .field("webhook_url", &masked_webhook(&self.webhook_url))
            .field("portal_url", &self.portal_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &mask(&self.client_secret))
            .field("application_token", &mask(&self.application_token))
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// What the API and the page show.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Bitrix24SettingsView {
    pub enabled: bool,
    pub auth_mode: B24AuthMode,
    /// With its secret masked.
    pub webhook_url: Option<String>,
    pub portal_url: String,
    pub oauth_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub application_token: Option<String>,
    pub realtime: bool,
    pub min_duration_secs: u32,
    pub write_comment: bool,
    pub users: Vec<CrmUser>,
}

/// An edit. Secrets (the webhook URL too) left empty keep the stored ones.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct Bitrix24SettingsUpdate {
    pub enabled: bool,
    pub auth_mode: B24AuthMode,
    pub webhook_url: Option<String>,
    pub portal_url: String,
    pub oauth_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub application_token: Option<String>,
    pub realtime: bool,
    pub min_duration_secs: Option<u32>,
    pub write_comment: bool,
}

/// `https://portal/rest/1/••••abcd/`: the webhook's secret is its path.
pub fn masked_webhook(url: &str) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return mask(url);
    };
    let segments: Vec<&str> = parsed
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    match segments.as_slice() {
        ["rest", user, secret] => format!(
            "{}://{}/rest/{user}/{}/",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            mask(secret)
        ),
        _ => mask(url),
    }
}

fn http_url(raw: &str) -> Option<Url> {
    Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

impl Bitrix24Settings {
    pub fn is_connected(&self) -> bool {
        self.enabled
            && match self.auth_mode {
                B24AuthMode::Webhook => !self.webhook_url.is_empty(),
                B24AuthMode::Oauth => {
                    !self.portal_url.is_empty()
                        && !self.client_id.is_empty()
                        && !self.client_secret.is_empty()
                }
            }
    }

    /// The employee whose calls a portal user makes.
    pub fn manager_of(&self, user_id: i64) -> ManagerId {
        crate::crm::manager_of(&self.users, "bitrix24", user_id)
    }

    pub fn view(&self) -> Bitrix24SettingsView {
        let secret = |s: &str| (!s.is_empty()).then(|| mask(s));
        Bitrix24SettingsView {
            enabled: self.enabled,
            auth_mode: self.auth_mode,
            webhook_url: (!self.webhook_url.is_empty()).then(|| masked_webhook(&self.webhook_url)),
            portal_url: self.portal_url.clone(),
            oauth_url: self.oauth_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: secret(&self.client_secret),
            application_token: secret(&self.application_token),
            realtime: self.realtime,
            min_duration_secs: self.min_duration_secs,
            write_comment: self.write_comment,
            users: self.users.clone(),
        }
    }

    /// One line for the audit log; secrets only masked.
    pub fn describe(&self) -> String {
        let yes_no = |on: bool| if on { "да" } else { "нет" };
        format!(
            "включена: {}; доступ: {}; вебхук: {}; портал: {}; client_id: {}; \
             client_secret: {}; токен событий: {}; звонки сразу после окончания: {}; \
             от {} с; комментарий в CRM: {}",
            yes_no(self.enabled),
            match self.auth_mode {
                B24AuthMode::Webhook => "входящий вебхук",
                B24AuthMode::Oauth => "приложение OAuth",
            },
            if self.webhook_url.is_empty() {
                "—".to_owned()
            } else {
                masked_webhook(&self.webhook_url)
            },
            self.portal_url,
            self.client_id,
            mask(&self.client_secret),
            mask(&self.application_token),
            yes_no(self.realtime),
            self.min_duration_secs,
            yes_no(self.write_comment),
        )
    }

    /// Applies an edit; names the offending field when it is wrong.
    pub fn apply(&mut self, update: Bitrix24SettingsUpdate) -> Result<(), (&'static str, String)> {
        let keep = |new: Option<String>, old: &str| {
            new.map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| old.to_owned())
        };
        let mut webhook_url = keep(update.webhook_url, &self.webhook_url);
        if !webhook_url.is_empty() {
            if !webhook_url.ends_with('/') {
                webhook_url.push('/');
            }
            let ok = http_url(&webhook_url).is_some_and(|u| {
                let segments: Vec<&str> = u
                    .path_segments()
                    .map(|s| s.filter(|s| !s.is_empty()).collect())
                    .unwrap_or_default();
                matches!(segments.as_slice(), ["rest", user, secret]
                    if user.parse::<u64>().is_ok() && !secret.is_empty())
                    && u.query().is_none()
            });
            if !ok {
                return Err((
                    "webhook_url",
                    "Адрес вебхука — вида https://company.bitrix24.ru/rest/1/секрет/".into(),
                ));
            }
        }
        let portal_url = update.portal_url.trim().trim_end_matches('/').to_owned();
        if !portal_url.is_empty() && http_url(&portal_url).is_none() {
            return Err((
                "portal_url",
                "Адрес портала — вида https://company.bitrix24.ru".into(),
            ));
        }
        let oauth_url = match update.oauth_url.trim().trim_end_matches('/') {
            "" => DEFAULT_OAUTH_URL.to_owned(),
            url if http_url(url).is_some() => url.to_owned(),
            _ => {
                return Err((
                    "oauth_url",
                    "Сервер авторизации — вида https://oauth.bitrix.info".into(),
                ))
            }
        };
        let client_id = update.client_id.trim().to_owned();
        let client_secret = keep(update.client_secret, &self.client_secret);
        let application_token = keep(update.application_token, &self.application_token);
        for (field, value) in [
            ("client_id", &client_id),
            ("client_secret", &client_secret),
            ("application_token", &application_token),
        ] {
            if value.chars().any(char::is_control) || value.len() > 512 {
                return Err((field, "Значение содержит недопустимые символы".into()));
            }
        }
        let min_duration_secs = update.min_duration_secs.unwrap_or(self.min_duration_secs);
        if min_duration_secs > 24 * 3600 {
            return Err((
                "min_duration_secs",
                "Минимальная длительность — не больше суток".into(),
            ));
        }
        if update.enabled {
            match update.auth_mode {
                B24AuthMode::Webhook if webhook_url.is_empty() => {
                    return Err(("webhook_url", "Укажите адрес входящего вебхука".into()))
                }
                B24AuthMode::Oauth
                    if portal_url.is_empty()
                        || client_id.is_empty()
                        || client_secret.is_empty() =>
                {
                    return Err((
                        "client_id",
                        "Для приложения укажите адрес портала, client_id и client_secret".into(),
                    ))
                }
                _ => {}
            }
            if update.realtime && application_token.is_empty() {
                return Err((
                    "application_token",
                    "Чтобы принимать звонки сразу после окончания, укажите токен приложения из настроек обработчика событий".into(),
                ));
            }
        }
        let same_portal = webhook_url == self.webhook_url && portal_url == self.portal_url;
        if !same_portal {
            self.users.clear();
        }
        self.oauth_state = None;
        self.enabled = update.enabled;
        self.auth_mode = update.auth_mode;
        self.webhook_url = webhook_url;
        self.portal_url = portal_url;
        self.oauth_url = oauth_url;
        self.client_id = client_id;
        self.client_secret = client_secret;
        self.application_token = application_token;
        self.realtime = update.realtime;
        self.min_duration_secs = min_duration_secs;
        self.write_comment = update.write_comment;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update() -> Bitrix24SettingsUpdate {
        Bitrix24SettingsUpdate {
            enabled: true,
            webhook_url: Some("https://acme.bitrix24.ru/rest/1/abcdefgh12345678".into()),
            application_token: Some("app-token-123456".into()),
            realtime: true,
            write_comment: true,
            ..Bitrix24SettingsUpdate::default()
        }
    }

    #[test]
    fn the_webhook_secret_is_kept_and_masked() {
        let mut settings = Bitrix24Settings::default();
        settings.apply(update()).unwrap();
        assert_eq!(
            settings.webhook_url,
            "https://acme.bitrix24.ru/rest/1/abcdefgh12345678/"
        );
        assert_eq!(settings.min_duration_secs, RECOMMENDED_MIN_SECS);
        settings
            .apply(Bitrix24SettingsUpdate {
                webhook_url: None,
                application_token: None,
                ..update()
            })
            .unwrap();
        assert!(settings.webhook_url.ends_with("12345678/"));
        let shown = format!("{settings:?} {:?} {}", settings.view(), settings.describe());
        assert!(!shown.contains("abcdefgh12345678") && !shown.contains("app-token-123456"));
        assert!(shown.contains("/rest/1/••••5678/"));
    }

    #[test]
    fn wrong_settings_name_their_field() {
        let cases = [
            (
                Bitrix24SettingsUpdate {
                    webhook_url: Some("https://acme.bitrix24.ru/crm/".into()),
                    ..update()
                },
                "webhook_url",
            ),
            (
                Bitrix24SettingsUpdate {
                    auth_mode: B24AuthMode::Oauth,
                    ..update()
                },
                "client_id",
            ),
            (
                Bitrix24SettingsUpdate {
                    application_token: Some(String::new()),
                    ..update()
                },
                "application_token",
            ),
            (
                Bitrix24SettingsUpdate {
                    oauth_url: "ftp://x".into(),
                    ..update()
                },
                "oauth_url",
            ),
        ];
        for (case, field) in cases {
            let mut settings = Bitrix24Settings::default();
            assert_eq!(settings.apply(case).unwrap_err().0, field);
            assert_eq!(settings, Bitrix24Settings::default());
        }
    }
}
