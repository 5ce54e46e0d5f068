//! What the web interface stores on SQLite: users, their sessions and the
//! audit log.

use chrono::{DateTime, Utc};
use rop_domain::store::StoreResult;
use rop_domain::{
    AuditEntry, NewAuditEntry, NewSession, Session, StoreError, User, UserCredentials, UserUpdate,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::rows::{backend, from_ms, ms, user_from_row};
use crate::{ensure_people, unique_violation};

const USER_COLUMNS: &str =
    "users.id, users.username, users.role, users.manager_id, users.created_at";

pub(crate) async fn users(reader: &SqlitePool) -> StoreResult<Vec<User>> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY username"
    ))
    .fetch_all(reader)
    .await
    .map_err(backend)?
    .iter()
    .map(user_from_row)
    .collect()
}

pub(crate) async fn user_count(reader: &SqlitePool) -> StoreResult<u64> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(reader)
        .await
        .map_err(backend)?;
    Ok(count.max(0) as u64)
}

pub(crate) async fn user_credentials(
    reader: &SqlitePool,
    username: &str,
) -> StoreResult<Option<UserCredentials>> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS}, users.password_hash FROM users WHERE username = $1"
    ))
    .bind(username)
    .fetch_optional(reader)
    .await
    .map_err(backend)?
    .map(|row| {
        Ok(UserCredentials {
            user: user_from_row(&row)?,
            password_hash: row.try_get("password_hash").map_err(backend)?,
        })
    })
    .transpose()
}

pub(crate) async fn update_user(writer: &SqlitePool, update: &UserUpdate) -> StoreResult<bool> {
    let mut tx = writer.begin().await.map_err(backend)?;
    if let Some(manager) = &update.manager_id {
        ensure_people(&mut tx, &[manager.as_str()], ms(Utc::now())).await?;
    }
    let updated = sqlx::query(
        "UPDATE users SET role = $2, manager_id = $3, password_hash = COALESCE($4, password_hash)
         WHERE id = $1",
    )
    .bind(update.id)
    .bind(update.role.as_str())
    .bind(update.manager_id.as_ref().map(|m| m.as_str()))
    .bind(&update.password_hash)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    if updated.rows_affected() == 0 {
        // Dropping the transaction also drops a placeholder manager made above.
        return Ok(false);
    }
    if update.password_hash.is_some() {
        // Whoever knew the old password is logged out with it.
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(update.id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(true)
}

pub(crate) async fn delete_user(writer: &SqlitePool, id: i64) -> StoreResult<bool> {
    // Sessions go with the user (ON DELETE CASCADE).
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(writer)
        .await
        .map_err(backend)?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn create_session(writer: &SqlitePool, session: &NewSession) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&session.token_hash)
    .bind(session.user_id)
    .bind(&session.csrf_token)
    .bind(ms(session.created_at))
    .bind(ms(session.expires_at))
    .execute(writer)
    .await
    .map_err(|error| match &error {
        // The user was deleted meanwhile.
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        _ => unique_violation(error),
    })?;
    Ok(())
}

pub(crate) async fn session(
    reader: &SqlitePool,
    token_hash: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Session>> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS}, sessions.csrf_token, sessions.expires_at
         FROM sessions JOIN users ON users.id = sessions.user_id
         WHERE sessions.token_hash = $1 AND sessions.expires_at > $2"
    ))
    .bind(token_hash)
    .bind(ms(now))
    .fetch_optional(reader)
    .await
    .map_err(backend)?
    .map(|row| {
        Ok(Session {
            user: user_from_row(&row)?,
            csrf_token: row.try_get("csrf_token").map_err(backend)?,
            expires_at: from_ms(row.try_get("expires_at").map_err(backend)?)?,
        })
    })
    .transpose()
}

pub(crate) async fn delete_session(writer: &SqlitePool, token_hash: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(writer)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(crate) async fn delete_expired_sessions(
    writer: &SqlitePool,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(ms(now))
        .execute(writer)
        .await
        .map_err(backend)?;
    Ok(done.rows_affected())
}

pub(crate) async fn add_audit_entry(writer: &SqlitePool, entry: &NewAuditEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(ms(entry.at))
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.target)
    .bind(&entry.details)
    .execute(writer)
    .await
    .map_err(backend)?;
    Ok(())
}

pub(crate) async fn audit_entries(
    reader: &SqlitePool,
    before_id: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<AuditEntry>> {
    let mut query =
        QueryBuilder::<Sqlite>::new("SELECT id, at, actor, action, target, details FROM audit_log");
    if let Some(before) = before_id {
        query.push(" WHERE id < ").push_bind(before);
    }
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit));
    query
        .build()
        .fetch_all(reader)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| {
            Ok(AuditEntry {
                id: row.try_get("id").map_err(backend)?,
                at: from_ms(row.try_get("at").map_err(backend)?)?,
                actor: row.try_get("actor").map_err(backend)?,
                action: row.try_get("action").map_err(backend)?,
                target: row.try_get("target").map_err(backend)?,
                details: row.try_get("details").map_err(backend)?,
            })
        })
        .collect()
}
