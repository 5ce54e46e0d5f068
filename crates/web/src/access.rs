//! Who may see what (PRODUCT.md §1). Every handler takes a [`Viewer`] and
//! asks it; the templates only hide links the viewer could not follow anyway.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rop_domain::{Call, ManagerId, Office, OfficeId, Role, Session, User};

use crate::error::PageError;
use crate::WebState;

/// The calls a user may see.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scope {
    Everyone,
    /// These managers' calls only (a leader's offices, or a manager himself).
    Managers(BTreeSet<ManagerId>),
}

/// The signed-in user, what he may see, and his session's CSRF token.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    pub user: User,
    pub csrf: String,
    pub scope: Scope,
    /// The offices a leader leads (empty for other roles: an administrator
    /// sees every office, read when a page needs them).
    led_offices: Vec<Office>,
}

impl Viewer {
    pub(crate) async fn of(state: &WebState, session: Session) -> Result<Self, PageError> {
        let user = session.user;
        let (scope, led_offices) = match user.role {
            Role::Admin => (Scope::Everyone, Vec::new()),
            Role::Leader => {
                let led: Vec<Office> = match &user.manager_id {
                    Some(me) => state
                        .store
                        .offices()
                        .await?
                        .into_iter()
                        .filter(|office| office.leader_ids.contains(me))
                        .collect(),
                    None => Vec::new(),
                };
                let mut managers: BTreeSet<ManagerId> = led
                    .iter()
                    .flat_map(|office| office.manager_ids.iter().cloned())
                    .collect();
                // A leader who also sells sees his own calls.
                managers.extend(user.manager_id.clone());
                (Scope::Managers(managers), led)
            }
            Role::Manager => (
                Scope::Managers(user.manager_id.iter().cloned().collect()),
                Vec::new(),
            ),
        };
        Ok(Self {
            user,
            csrf: session.csrf_token,
            scope,
            led_offices,
        })
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// Administrators only: settings, users, resending webhooks.
    pub fn require_admin(&self) -> Result<(), PageError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(PageError::Forbidden)
        }
    }

    /// Leaders and administrators: the offices pages.
    pub fn require_leader(&self) -> Result<(), PageError> {
        match self.user.role {
            Role::Admin | Role::Leader => Ok(()),
            Role::Manager => Err(PageError::Forbidden),
        }
    }

    pub fn sees_manager(&self, manager: &ManagerId) -> bool {
        match &self.scope {
            Scope::Everyone => true,
            Scope::Managers(managers) => managers.contains(manager),
        }
    }

    /// A call outside the scope is "not found", so its id reveals nothing.
    pub fn check_call(&self, call: &Call) -> Result<(), PageError> {
        if self.sees_manager(&call.manager_id) {
            Ok(())
        } else {
            Err(PageError::NotFound)
        }
    }

    pub fn sees_office(&self, office: &OfficeId) -> bool {
        self.is_admin() || self.led_offices.iter().any(|o| &o.office_id == office)
    }

    /// Every office for an administrator, the led ones for a leader, none
    /// for a manager.
    pub async fn visible_offices(&self, state: &WebState) -> Result<Vec<Office>, PageError> {
        if self.is_admin() {
            Ok(state.store.offices().await?)
        } else {
            Ok(self.led_offices.clone())
        }
    }

    /// The managers filter for the store: `None` for everyone.
    pub fn manager_filter(&self) -> Option<Vec<ManagerId>> {
        match &self.scope {
            Scope::Everyone => None,
            Scope::Managers(managers) => Some(managers.iter().cloned().collect()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Viewer>()
            .cloned()
            // Only reachable if a route were added outside `require_session`.
            .ok_or(PageError::Forbidden)
    }
}
