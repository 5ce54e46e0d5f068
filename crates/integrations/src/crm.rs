//! What the CRM integrations share about people: the CRM's users, each
//! with the employee whose calls they make.

use std::collections::BTreeMap;

use rop_domain::ManagerId;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A user of the CRM and the employee mapped to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CrmUser {
    pub id: i64,
    pub name: String,
    pub manager_id: Option<ManagerId>,
}

/// The employee whose calls a CRM user makes: the mapped one, or
/// `<crm>-<id>` until someone maps it.
pub fn manager_of(users: &[CrmUser], crm: &str, user_id: i64) -> ManagerId {
    users
        .iter()
        .find(|u| u.id == user_id)
        .and_then(|u| u.manager_id.clone())
        .unwrap_or_else(|| {
            ManagerId::parse(&format!("{crm}-{user_id}"))
                .expect("a CRM name and digits make a valid id")
        })
}

/// The users just read from the CRM, keeping the mapping of those known.
pub fn refreshed(known: &[CrmUser], found: Vec<(i64, String)>) -> Vec<CrmUser> {
    found
        .into_iter()
        .map(|(id, name)| CrmUser {
            manager_id: known
                .iter()
                .find(|u| u.id == id)
                .and_then(|u| u.manager_id.clone()),
            id,
            name,
        })
        .collect()
}

/// Applies a mapping; the id of a user the CRM does not have is the error.
pub fn map(users: &mut [CrmUser], mapping: &BTreeMap<i64, Option<ManagerId>>) -> Result<(), i64> {
    if let Some(unknown) = mapping
        .keys()
        .find(|id| !users.iter().any(|u| u.id == **id))
    {
        return Err(*unknown);
    }
    for user in users.iter_mut() {
        if let Some(manager_id) = mapping.get(&user.id) {
            user.manager_id = manager_id.clone();
        }
    }
    Ok(())
}

/// The audit line of a mapping: `11 → anna, 12 → —`.
pub fn mapping_details(mapping: &BTreeMap<i64, Option<ManagerId>>) -> String {
    mapping
        .iter()
        .map(|(id, manager)| format!("{id} → {}", manager.as_ref().map_or("—", ManagerId::as_str)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_keep_their_mapping_and_unknown_ones_are_refused() {
        let anna = ManagerId::parse("anna").unwrap();
        let mut users = refreshed(&[], vec![(7, "Анна".into()), (8, "Борис".into())]);
        map(&mut users, &BTreeMap::from([(7, Some(anna.clone()))])).unwrap();
        assert_eq!(map(&mut users, &BTreeMap::from([(9, None)])), Err(9));
        let again = refreshed(&users, vec![(7, "Анна С.".into())]);
        assert_eq!(again[0].manager_id.as_ref(), Some(&anna));
        assert_eq!(manager_of(&again, "amocrm", 7), anna);
        assert_eq!(manager_of(&again, "amocrm", 8).as_str(), "amocrm-8");
    }
}
