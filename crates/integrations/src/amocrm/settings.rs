//! amoCRM's settings (Настройки → Интеграции → amoCRM, seed 001).

use rop_domain::ManagerId;
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;

use crate::crm::CrmUser;
use crate::mask;
use crate::summary::WriteValue;

/// How we authenticate to amoCRM (integrations.md §2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Authorization code, then access tokens refreshed with single-use
    /// refresh tokens.
    #[default]
    Oauth,
    /// A private integration's token from «Ключи и доступы»; no refresh.
    LongLivedToken,
}

/// As stored. Secrets stay in the clear because every request needs them;
/// they never leave the server (`AmocrmSettingsView`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AmocrmSettings {
    pub enabled: bool,
    /// The account's own host, `https://acme.amocrm.ru` (never `www`).
    pub base_url: String,
    pub auth_mode: AuthMode,
    pub client_id: String,
    pub client_secret: String,
    /// Registered in the integration's settings in amoCRM; amoCRM sends
    /// the authorization code there.
    pub redirect_uri: String,
    pub long_lived_token: String,
    /// The account's users, from «Проверить подключение», each with the
    /// employee whose calls they are.
    pub users: Vec<CrmUser>,
    /// amoCRM values copied into each imported call's metadata.
    pub field_mapping: Vec<FieldMapping>,
    /// After analysis, a note with the checklist summary on the deal.
    pub write_note: bool,
    /// After analysis, these lead fields get these results.
    pub field_updates: Vec<FieldUpdate>,
    /// The `state` of the consent page we sent an administrator to.
    pub oauth_state: Option<String>,
}

impl Default for AmocrmSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: String::new(),
            auth_mode: AuthMode::Oauth,
            client_id: String::new(),
            client_secret: String::new(),
            redirect_uri: String::new(),
            long_lived_token: String::new(),
            users: Vec::new(),
            field_mapping: Vec::new(),
            write_note: true,
            field_updates: Vec::new(),
            oauth_state: None,
        }
    }
}

impl std::fmt::Debug for AmocrmSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmocrmSettings")
            .field("enabled", &self.enabled)
            .field("base_url", &self.base_url)
            .field("auth_mode", &self.auth_mode)
            .field("client_id", &self.client_id)
            .field("client_secret", &mask(&self.client_secret))
            .field("long_lived_token", &mask(&self.long_lived_token))
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// Where an imported call's metadata value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldMapping {
    /// `lead.name`, `lead.price`, `lead.pipeline`, `lead.status`,
    /// `lead.responsible`, `lead.field.<id>`, `note.call_result`,
    /// `note.call_status`, `note.uniq`, `note.source`.
    pub amocrm: String,
    /// The metadata key it is stored under.
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FieldUpdate {
    pub field_id: i64,
    pub value: WriteValue,
}

/// What the API and the page show: secrets only masked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AmocrmSettingsView {
    pub enabled: bool,
    pub base_url: String,
    pub auth_mode: AuthMode,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_uri: String,
    pub long_lived_token: Option<String>,
    pub users: Vec<CrmUser>,
    pub field_mapping: Vec<FieldMapping>,
    pub write_note: bool,
    pub field_updates: Vec<FieldUpdate>,
}

/// An edit of the settings. Secrets left empty keep the stored ones.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct AmocrmSettingsUpdate {
    pub enabled: bool,
    pub base_url: String,
    pub auth_mode: AuthMode,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_uri: String,
    pub long_lived_token: Option<String>,
    pub field_mapping: Vec<FieldMapping>,
    pub write_note: bool,
    pub field_updates: Vec<FieldUpdate>,
}

const MAPPING_SOURCES: &[&str] = &[
    "lead.name",
    "lead.price",
    "lead.pipeline",
    "lead.status",
    "lead.responsible",
    "note.call_result",
    "note.call_status",
    "note.uniq",
    "note.source",
];

/// Whether `source` names something an imported call can carry.
pub fn is_mapping_source(source: &str) -> bool {
    MAPPING_SOURCES.contains(&source)
        || source
            .strip_prefix("lead.field.")
            .is_some_and(|id| id.parse::<i64>().is_ok_and(|id| id > 0))
}

impl AmocrmSettings {
    pub fn is_connected(&self) -> bool {
        self.enabled
            && !self.base_url.is_empty()
            && match self.auth_mode {
                AuthMode::Oauth => !self.client_id.is_empty() && !self.client_secret.is_empty(),
                AuthMode::LongLivedToken => !self.long_lived_token.is_empty(),
            }
    }

    /// The employee whose calls an amoCRM user makes.
    pub fn manager_of(&self, user_id: i64) -> ManagerId {
        crate::crm::manager_of(&self.users, "amocrm", user_id)
    }

    pub fn view(&self) -> AmocrmSettingsView {
        let secret = |s: &str| (!s.is_empty()).then(|| mask(s));
        AmocrmSettingsView {
            enabled: self.enabled,
            base_url: self.base_url.clone(),
            auth_mode: self.auth_mode,
            client_id: self.client_id.clone(),
            client_secret: secret(&self.client_secret),
            redirect_uri: self.redirect_uri.clone(),
            long_lived_token: secret(&self.long_lived_token),
            users: self.users.clone(),
            field_mapping: self.field_mapping.clone(),
            write_note: self.write_note,
            field_updates: self.field_updates.clone(),
        }
    }

    /// One line for the audit log; secrets only masked.
    pub fn describe(&self) -> String {
        let yes_no = |on: bool| if on { "да" } else { "нет" };
        let secret = |s: &str| {
            if s.is_empty() {
                "—".to_owned()
            } else {
                mask(s)
            }
        };
        format!(
            "включена: {}; адрес: {}; вход: {}; client_id: {}; client_secret: {}; \
             долгосрочный токен: {}; полей в метаданные: {}; примечание в сделке: {}; \
             полей сделки к обновлению: {}",
            yes_no(self.enabled),
            self.base_url,
            match self.auth_mode {
                AuthMode::Oauth => "OAuth",
                AuthMode::LongLivedToken => "долгосрочный токен",
            },
            self.client_id,
            secret(&self.client_secret),
            secret(&self.long_lived_token),
            self.field_mapping.len(),
            yes_no(self.write_note),
            self.field_updates.len(),
        )
    }

    /// Applies an edit; names the offending field when it is wrong.
    pub fn apply(&mut self, update: AmocrmSettingsUpdate) -> Result<(), (&'static str, String)> {
        let base_url = update.base_url.trim().trim_end_matches('/');
        if !base_url.is_empty() {
            match Url::parse(base_url) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host().is_some()
                        && url.path() == "/"
                        && url.query().is_none() =>
                {
                    if url.host_str().is_some_and(|h| h.starts_with("www.")) {
                        return Err((
                            "base_url",
                            "Укажите адрес своего аккаунта, например https://company.amocrm.ru, а не www".into(),
                        ));
                    }
                }
                _ => {
                    return Err((
                        "base_url",
                        "Адрес аккаунта — вида https://company.amocrm.ru".into(),
                    ))
                }
            }
        }
        let keep = |new: Option<String>, old: &str| {
            new.map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| old.to_owned())
        };
        let client_id = update.client_id.trim().to_owned();
        let client_secret = keep(update.client_secret, &self.client_secret);
        let long_lived_token = keep(update.long_lived_token, &self.long_lived_token);
        for (field, value) in [
            ("client_id", &client_id),
            ("client_secret", &client_secret),
            ("long_lived_token", &long_lived_token),
        ] {
            if value.chars().any(char::is_control) || value.len() > 4096 {
                return Err((field, "Значение содержит недопустимые символы".into()));
            }
        }
        let redirect_uri = update.redirect_uri.trim().to_owned();
        if !redirect_uri.is_empty()
            && !Url::parse(&redirect_uri).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return Err((
                "redirect_uri",
                "Адрес перенаправления — вида https://rop.example.ru/…".into(),
            ));
        }
        if update.enabled {
            if base_url.is_empty() {
                return Err((
                    "base_url",
                    "Чтобы включить интеграцию, укажите адрес аккаунта".into(),
                ));
            }
            match update.auth_mode {
                AuthMode::Oauth if client_id.is_empty() || client_secret.is_empty() => {
                    return Err((
                        "client_id",
                        "Для входа через OAuth укажите ID интеграции и секретный ключ".into(),
                    ))
                }
                AuthMode::Oauth if redirect_uri.is_empty() => {
                    return Err((
                        "redirect_uri",
                        "Для входа через OAuth укажите адрес перенаправления".into(),
                    ))
                }
                AuthMode::LongLivedToken if long_lived_token.is_empty() => {
                    return Err(("long_lived_token", "Укажите долгосрочный токен".into()))
                }
                _ => {}
            }
        }
        if update.field_mapping.len() > 50 || update.field_updates.len() > 20 {
            return Err(("field_mapping", "Слишком много соответствий полей".into()));
        }
        let mut keys = std::collections::HashSet::new();
        for mapping in &update.field_mapping {
            if !is_mapping_source(mapping.amocrm.trim()) {
                return Err((
                    "field_mapping",
                    format!("Неизвестное поле amoCRM «{}»", mapping.amocrm.trim()),
                ));
            }
            let key = mapping.key.trim();
            if key.is_empty()
                || key.len() > 64
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    "field_mapping",
                    format!("Ключ «{key}»: латинские буквы, цифры, _ и -"),
                ));
            }
            if !keys.insert(key.to_owned()) {
                return Err(("field_mapping", format!("Ключ «{key}» указан дважды")));
            }
        }
        let mut fields = std::collections::HashSet::new();
        for update in &update.field_updates {
            if update.field_id <= 0 || !fields.insert(update.field_id) {
                return Err((
                    "field_updates",
                    format!("Поле сделки {} указано неверно или дважды", update.field_id),
                ));
            }
        }
        if base_url != self.base_url || update.auth_mode != self.auth_mode {
            // Another account's users are not this one's.
            if base_url != self.base_url {
                self.users.clear();
            }
            self.oauth_state = None;
        }
        self.enabled = update.enabled;
        self.base_url = base_url.to_owned();
        self.auth_mode = update.auth_mode;
        self.client_id = client_id;
        self.client_secret = client_secret;
        self.redirect_uri = redirect_uri;
        self.long_lived_token = long_lived_token;
        self.field_mapping = update
            .field_mapping
            .into_iter()
            .map(|m| FieldMapping {
                amocrm: m.amocrm.trim().to_owned(),
                key: m.key.trim().to_owned(),
            })
            .collect();
        self.write_note = update.write_note;
        self.field_updates = update.field_updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update() -> AmocrmSettingsUpdate {
        AmocrmSettingsUpdate {
            enabled: true,
            base_url: "https://acme.amocrm.ru/".into(),
            auth_mode: AuthMode::LongLivedToken,
            long_lived_token: Some("token".into()),
            ..AmocrmSettingsUpdate::default()
        }
    }

    #[test]
    fn secrets_are_kept_when_not_sent_and_never_shown() {
        let mut settings = AmocrmSettings::default();
        settings.apply(update()).unwrap();
        assert_eq!(settings.base_url, "https://acme.amocrm.ru");
        let mut again = update();
        again.long_lived_token = None;
        settings.apply(again).unwrap();
        assert_eq!(settings.long_lived_token, "token");
        assert!(!format!("{settings:?}").contains("token\""));
        assert_ne!(settings.view().long_lived_token.as_deref(), Some("token"));
        assert!(!settings.describe().contains("token;"));
    }

    #[test]
    fn wrong_settings_name_their_field() {
        let cases: Vec<(AmocrmSettingsUpdate, &str)> = vec![
            (
                AmocrmSettingsUpdate {
                    base_url: "ftp://acme".into(),
                    ..update()
                },
                "base_url",
            ),
            (
                AmocrmSettingsUpdate {
                    base_url: "https://www.amocrm.ru".into(),
                    ..update()
                },
                "base_url",
            ),
            (
                AmocrmSettingsUpdate {
                    auth_mode: AuthMode::Oauth,
                    ..update()
                },
                "client_id",
            ),
            (
                AmocrmSettingsUpdate {
                    field_mapping: vec![FieldMapping {
                        amocrm: "lead.password".into(),
                        key: "x".into(),
                    }],
                    ..update()
                },
                "field_mapping",
            ),
            (
                AmocrmSettingsUpdate {
                    field_mapping: vec![FieldMapping {
                        amocrm: "lead.field.12".into(),
                        key: "ключ".into(),
                    }],
                    ..update()
                },
                "field_mapping",
            ),
        ];
        for (case, field) in cases {
            let mut settings = AmocrmSettings::default();
            assert_eq!(settings.apply(case).unwrap_err().0, field);
            assert_eq!(settings, AmocrmSettings::default());
        }
    }

    #[test]
    fn unmapped_users_get_their_own_id() {
        let mut settings = AmocrmSettings::default();
        settings.users.push(CrmUser {
            id: 7,
            name: "Анна".into(),
            manager_id: Some(ManagerId::parse("anna").unwrap()),
        });
        assert_eq!(settings.manager_of(7).as_str(), "anna");
        assert_eq!(settings.manager_of(8).as_str(), "amocrm-8");
    }
}
