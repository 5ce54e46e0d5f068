//! Пользователи: who may log in, with which role, linked to which CRM
//! manager. Administrators only.

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use rop_domain::{ManagerId, NewUser, Role, StoreError, User, UserUpdate};

use super::{audit, field, form_fields, render, role_name, Chrome, Names};
use crate::access::Viewer;
use crate::error::PageError;
use crate::password;
use crate::WebState;

pub(crate) struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: &'static str,
    pub manager_id: String,
    pub manager: String,
    pub created: String,
    pub me: bool,
}

#[derive(Template)]
#[template(path = "settings/users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    roles: Vec<(&'static str, &'static str)>,
    error: Option<String>,
    /// The new user's fields, kept when the form is refused.
    draft_username: String,
    draft_role: String,
    draft_manager: String,
}

const ROLES: [(&str, &str); 3] = [
    ("manager", "менеджер"),
    ("leader", "руководитель офиса"),
    ("admin", "администратор"),
];

async fn users_page(
    state: &WebState,
    viewer: &Viewer,
    error: Option<String>,
    draft: (&str, &str, &str),
) -> Result<Response, PageError> {
    let names = Names::load(state).await?;
    let users = state
        .store
        .users()
        .await?
        .into_iter()
        .map(|u: User| UserRow {
            id: u.id,
            me: u.id == viewer.user.id,
            role: u.role.as_str(),
            manager: u
                .manager_id
                .as_ref()
                .map(|m| names.of(m))
                .unwrap_or_default(),
            manager_id: u
                .manager_id
                .as_ref()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
            created: super::when(state, u.created_at),
            username: u.username,
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut response = render(UsersPage {
        chrome: Chrome::new(viewer, "settings"),
        users,
        roles: ROLES.to_vec(),
        error,
        draft_username: draft.0.to_owned(),
        draft_role: draft.1.to_owned(),
        draft_manager: draft.2.to_owned(),
    })?;
    *response.status_mut() = status;
    Ok(response)
}

pub(crate) async fn list(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    users_page(&state, &viewer, None, ("", "manager", "")).await
}

fn parse_role(raw: &str) -> Result<Role, String> {
    raw.parse::<Role>()
        .map_err(|_| "Выберите роль из списка.".to_owned())
}

/// Leaders and managers see calls through their CRM id, so they need one.
fn parse_manager(raw: &str, role: Role) -> Result<Option<ManagerId>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return if role == Role::Admin {
            Ok(None)
        } else {
            Err("Для менеджера и руководителя укажите его ID в CRM.".to_owned())
        };
    }
    ManagerId::try_from(raw.to_owned())
        .map(Some)
        .map_err(|_| "ID в CRM: до 64 печатных символов.".to_owned())
}

fn check_password(raw: &str) -> Result<(), String> {
    if raw.chars().count() < password::MIN_CHARS {
        Err(format!(
            "Пароль — не короче {} символов.",
            password::MIN_CHARS
        ))
    } else {
        Ok(())
    }
}

async fn hashed(raw: String) -> Result<String, PageError> {
    tokio::task::spawn_blocking(move || password::hash(&raw))
        .await
        .map_err(|e| PageError::Internal(e.to_string()))?
        .map_err(|e| PageError::Internal(e.to_string()))
}

pub(crate) async fn create(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let fields = form_fields(&body);
    let username = field(&fields, "username").trim().to_owned();
    let (role_raw, manager_raw) = (field(&fields, "role"), field(&fields, "manager_id"));
    let draft = (username.as_str(), role_raw, manager_raw);
    let checked = (|| {
        if username.is_empty()
            || username.chars().count() > 64
            || username.chars().any(char::is_control)
        {
            return Err("Имя пользователя — от 1 до 64 печатных символов.".to_owned());
        }
        let role = parse_role(role_raw)?;
        let manager = parse_manager(manager_raw, role)?;
        check_password(field(&fields, "password"))?;
        Ok((role, manager))
    })();
    let (role, manager_id) = match checked {
        Ok(valid) => valid,
        Err(message) => return users_page(&state, &viewer, Some(message), draft).await,
    };
    let password_hash = hashed(field(&fields, "password").to_owned()).await?;
    let created = state
        .store
        .create_user(&NewUser {
            username: username.clone(),
            password_hash,
            role,
            manager_id: manager_id.clone(),
            created_at: Utc::now(),
        })
        .await;
    match created {
        Ok(_) => {}
        Err(StoreError::Duplicate) => {
            return users_page(
                &state,
                &viewer,
                Some(format!("Пользователь «{username}» уже есть.")),
                draft,
            )
            .await
        }
        Err(error) => return Err(error.into()),
    }
    audit(
        &state,
        &viewer,
        "user.create",
        &username,
        format!(
            "роль: {}{}",
            role_name(role),
            manager_id
                .map(|m| format!(", ID в CRM: {}", m.as_str()))
                .unwrap_or_default()
        ),
    )
    .await?;
    Ok(Redirect::to("/settings/users").into_response())
}

async fn target(state: &WebState, id: i64) -> Result<User, PageError> {
    state
        .store
        .users()
        .await?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or(PageError::NotFound)
}

pub(crate) async fn update(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    let user = target(&state, id).await?;
    let fields = form_fields(&body);
    let new_password = field(&fields, "password");
    let checked = (|| {
        let role = parse_role(field(&fields, "role"))?;
        if user.id == viewer.user.id && role != Role::Admin {
            return Err(
                "Свою роль администратора снять нельзя — это сделает другой администратор."
                    .to_owned(),
            );
        }
        let manager = parse_manager(field(&fields, "manager_id"), role)?;
        if !new_password.is_empty() {
            check_password(new_password)?;
        }
        Ok((role, manager))
    })();
    let (role, manager_id) = match checked {
        Ok(valid) => valid,
        Err(message) => {
            return users_page(&state, &viewer, Some(message), ("", "manager", "")).await
        }
    };
    let password_hash = if new_password.is_empty() {
        None
    } else {
        Some(hashed(new_password.to_owned()).await?)
    };
    let changed_password = password_hash.is_some();
    if !state
        .store
        .update_user(&UserUpdate {
            id,
            role,
            manager_id: manager_id.clone(),
            password_hash,
        })
        .await?
    {
        return Err(PageError::NotFound);
    }
    audit(
        &state,
        &viewer,
        "user.update",
        &user.username,
        format!(
            "роль: {}{}{}",
            role_name(role),
            manager_id
                .map(|m| format!(", ID в CRM: {}", m.as_str()))
                .unwrap_or_default(),
            if changed_password {
                ", пароль изменён"
            } else {
                ""
            }
        ),
    )
    .await?;
    Ok(Redirect::to("/settings/users").into_response())
}

pub(crate) async fn delete(
    State(state): State<Arc<WebState>>,
    viewer: Viewer,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    viewer.require_admin()?;
    if id == viewer.user.id {
        return users_page(
            &state,
            &viewer,
            Some("Себя удалить нельзя.".into()),
            ("", "manager", ""),
        )
        .await;
    }
    let user = target(&state, id).await?;
    if !state.store.delete_user(id).await? {
        return Err(PageError::NotFound);
    }
    audit(&state, &viewer, "user.delete", &user.username, "").await?;
    Ok(Redirect::to("/settings/users").into_response())
}
