//! Row ↔ domain conversions. SQLite keeps times as unix milliseconds.

use chrono::{DateTime, Utc};
use rop_domain::store::StoreResult;
use rop_domain::{
    Call, CallEvent, CallStatus, Direction, EventLevel, Manager, ManagerId, Office, OfficeId, Role,
    StoreError, User,
};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

pub(crate) use rop_domain::store::backend_error as backend;
use rop_domain::store::{parse_stored as parse, parse_stored_id as parse_id, parse_stored_json};

pub(crate) fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_ms(millis: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| StoreError::Corrupt(format!("time {millis}")))
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(backend)
}

pub(crate) fn call_from_row(row: &SqliteRow) -> StoreResult<Call> {
    let metadata: String = get(row, "metadata")?;
    Ok(Call {
        seq: get(row, "seq")?,
        call_id: parse_id(get(row, "call_id")?)?,
        manager_id: parse_id(get(row, "manager_id")?)?,
        deal_id: get(row, "deal_id")?,
        deal_stage_id: get(row, "deal_stage_id")?,
        stage_id: get(row, "stage_id")?,
        direction: get::<Option<String>>(row, "direction")?
            .map(|d| parse::<Direction>(&d))
            .transpose()?,
        client_phone: get(row, "client_phone")?,
        client_name: get(row, "client_name")?,
        call_started_at: get::<Option<i64>>(row, "call_started_at")?
            .map(from_ms)
            .transpose()?,
        declared_duration: get(row, "declared_duration")?,
        audio_url: get(row, "audio_url")?,
        uploaded_file_bytes: get::<Option<i64>>(row, "blob_bytes")?.map(|b| b.max(0) as u64),
        status: parse::<CallStatus>(&get::<String>(row, "status")?)?,
        status_reason: get(row, "status_reason")?,
        failure_code: get(row, "failure_code")?,
        received_at: from_ms(get(row, "received_at")?)?,
        updated_at: from_ms(get(row, "updated_at")?)?,
        completion_percentage: get(row, "completion_percentage")?,
        audio: get::<Option<String>>(row, "audio")?
            .map(|audio| parse_stored_json(&audio))
            .transpose()?,
        manager_channel: get::<Option<i64>>(row, "manager_channel")?.map(|c| c.clamp(0, 1) as u8),
        metadata: parse_stored_json(&metadata)?,
        audio_blob: get::<Option<String>>(row, "audio_blob_key")?.or(get(row, "blob_key")?),
    })
}

pub(crate) fn event_from_row(row: &SqliteRow) -> StoreResult<CallEvent> {
    Ok(CallEvent {
        at: from_ms(get(row, "at")?)?,
        step: get(row, "step")?,
        level: parse::<EventLevel>(&get::<String>(row, "level")?)?,
        message: get(row, "message")?,
    })
}

pub(crate) fn manager_from_row(row: &SqliteRow) -> StoreResult<Manager> {
    Ok(Manager {
        manager_id: parse_id(get(row, "manager_id")?)?,
        name: get(row, "name")?,
        surname: get(row, "surname")?,
        middlename: get(row, "middlename")?,
        created_at: from_ms(get(row, "created_at")?)?,
        updated_at: from_ms(get(row, "updated_at")?)?,
    })
}

pub(crate) fn office_from_rows(office: &SqliteRow, members: &[SqliteRow]) -> StoreResult<Office> {
    let mut leader_ids = Vec::new();
    let mut manager_ids = Vec::new();
    for member in members {
        let person: ManagerId = parse_id(get(member, "person_id")?)?;
        match get::<String>(member, "role")?.as_str() {
            "leader" => leader_ids.push(person),
            _ => manager_ids.push(person),
        }
    }
    Ok(Office {
        office_id: parse_id::<OfficeId>(get(office, "office_id")?)?,
        title: get(office, "title")?,
        leader_ids,
        manager_ids,
    })
}

pub(crate) fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: get(row, "id")?,
        username: get(row, "username")?,
        role: parse::<Role>(&get::<String>(row, "role")?)?,
        manager_id: get::<Option<String>>(row, "manager_id")?
            .map(parse_id)
            .transpose()?,
        created_at: from_ms(get(row, "created_at")?)?,
    })
}
