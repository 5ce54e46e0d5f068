//! How values read on a Russian page: times in the company's zone, numbers
//! with a decimal comma, statuses in words.

use chrono::{DateTime, FixedOffset, Utc};
use rop_domain::{CallStatus, DeliveryState, StageStatus};

pub fn zone(offset_secs: i32) -> FixedOffset {
    FixedOffset::east_opt(offset_secs).unwrap_or_else(|| FixedOffset::east_opt(0).expect("UTC"))
}

/// `21.11.2026 14:05`.
pub fn datetime(at: DateTime<Utc>, offset_secs: i32) -> String {
    at.with_timezone(&zone(offset_secs))
        .format("%d.%m.%Y %H:%M")
        .to_string()
}

/// `21.11.2026 14:05:09`, for histories.
pub fn datetime_secs(at: DateTime<Utc>, offset_secs: i32) -> String {
    at.with_timezone(&zone(offset_secs))
        .format("%d.%m.%Y %H:%M:%S")
        .to_string()
}

/// `m:ss` or `h:mm:ss`.
pub fn clock(seconds: f64) -> String {
    let total = if seconds.is_finite() && seconds > 0.0 {
        seconds.round() as u64
    } else {
        0
    };
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// `73,5 %`, or a dash when there is no value.
pub fn percent(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{:.1} %", v).replace('.', ","),
        _ => "—".to_owned(),
    }
}

/// A share 0–1 as a percentage.
pub fn share(value: f64) -> String {
    percent(Some(value * 100.0))
}

pub fn decimal(value: f64, places: usize) -> String {
    format!("{value:.places$}").replace('.', ",")
}

pub fn call_status(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Received => "принят",
        CallStatus::Skipped => "пропущен",
        CallStatus::Downloading => "скачивание",
        CallStatus::Decoding => "декодирование",
        CallStatus::Transcribing => "распознавание",
        CallStatus::Analyzing => "анализ",
        CallStatus::Delivering => "отправка результатов",
        CallStatus::Done => "готов",
        CallStatus::Failed => "ошибка",
    }
}

/// Whether the call is still moving through the pipeline.
pub fn in_progress(status: CallStatus) -> bool {
    !matches!(
        status,
        CallStatus::Skipped | CallStatus::Done | CallStatus::Failed
    )
}

pub fn stage_status(status: StageStatus) -> &'static str {
    match status {
        StageStatus::Completed => "выполнен",
        StageStatus::Failed => "не выполнен",
    }
}

pub fn delivery_state(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "ожидает",
        DeliveryState::Sending => "отправляется",
        DeliveryState::Delivered => "доставлен",
        DeliveryState::Failed => "не доставлен",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_number_and_time_forms() {
        assert_eq!(percent(Some(73.46)), "73,5 %");
        assert_eq!(percent(None), "—");
        assert_eq!(clock(65.4), "1:05");
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(clock(f64::NAN), "0:00");
        let at = DateTime::parse_from_rfc3339("2026-11-21T21:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(datetime(at, 3 * 3600), "22.11.2026 00:30");
    }
}
