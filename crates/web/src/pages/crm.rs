//! What the CRM settings pages (amoCRM, Bitrix24) share: their users with
//! the employee each is mapped to, and the mapping form.

use std::collections::BTreeMap;

use rop_domain::ManagerId;

use super::Names;
use crate::error::PageError;
use crate::WebState;

/// A CRM user and the employee whose calls they make.
pub(crate) struct UserRow {
    pub id: i64,
    pub name: String,
    pub manager_id: String,
}

impl UserRow {
    pub fn new(id: i64, name: &str, manager_id: Option<&ManagerId>) -> Self {
        Self {
            id,
            name: name.to_owned(),
            manager_id: manager_id
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// An employee in a select.
pub(crate) struct ManagerChoice {
    pub id: String,
    pub name: String,
}

pub(crate) async fn manager_choices(state: &WebState) -> Result<Vec<ManagerChoice>, PageError> {
    let managers = state.store.managers().await?;
    let names = Names::from(managers.clone());
    Ok(managers
        .iter()
        .map(|m| ManagerChoice {
            id: m.manager_id.as_str().to_owned(),
            name: names.of(&m.manager_id),
        })
        .collect())
}

/// The `user_<id>` selects of the mapping form; the error names the user.
pub(crate) fn user_mapping(
    fields: &[(String, String)],
) -> Result<BTreeMap<i64, Option<ManagerId>>, String> {
    let mut mapping = BTreeMap::new();
    for (name, value) in fields {
        let Some(id) = name.strip_prefix("user_") else {
            continue;
        };
        let parsed = id.parse::<i64>().ok().and_then(|id| match value.trim() {
            "" => Some((id, None)),
            manager => ManagerId::parse(manager).ok().map(|m| (id, Some(m))),
        });
        let (id, manager) =
            parsed.ok_or_else(|| format!("Недопустимый сотрудник для пользователя {id}"))?;
        mapping.insert(id, manager);
    }
    Ok(mapping)
}
