//! How a receiver knows a webhook is ours and fresh: `X-Rop-Signature` is
//! `sha256=` and the hex HMAC-SHA256, keyed with the webhook's secret, of
//! `"{X-Rop-Timestamp}.{body}"`. Signing the timestamp with the body lets a
//! receiver refuse replays of an old request.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rop_domain::DeliveryEvent;
use sha2::Sha256;

pub const EVENT_HEADER: &str = "X-Rop-Event";
/// The delivery id: the same on every attempt, the receiver's idempotency key.
pub const DELIVERY_HEADER: &str = "X-Rop-Delivery";
/// Unix seconds of this attempt, as signed.
pub const TIMESTAMP_HEADER: &str = "X-Rop-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Rop-Signature";
pub const USER_AGENT: &str = concat!("rop-webhooks/", env!("CARGO_PKG_VERSION"));

const SCHEME: &str = "sha256=";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Rop-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let tag = mac(secret, &timestamp.to_string(), body.as_bytes())
        .finalize()
        .into_bytes();
    format!("{SCHEME}{}", hex::encode(tag))
}

/// Whether `header` is a valid signature of `body` with `timestamp` (the
/// `X-Rop-Timestamp` value as received) and the timestamp is within
/// `tolerance` of `now`, either way. The comparison takes constant time.
/// An empty secret verifies nothing: such webhooks are sent unsigned.
pub fn verify(
    secret: &str,
    timestamp: &str,
    body: &[u8],
    header: &str,
    now: DateTime<Utc>,
    tolerance: Duration,
) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Ok(sent) = timestamp.parse::<i64>() else {
        return false;
    };
    let age = now.timestamp().abs_diff(sent);
    if age > tolerance.as_secs() {
        return false;
    }
    let Some(tag) = header
        .trim()
        .strip_prefix(SCHEME)
        .and_then(|hex_tag| hex::decode(hex_tag).ok())
    else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

/// Every header of one attempt, signature last; without a signature when
/// the secret is empty.
pub fn headers(
    event: DeliveryEvent,
    delivery_id: &str,
    secret: &str,
    timestamp: i64,
    body: &str,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("Content-Type", "application/json".to_owned()),
        ("User-Agent", USER_AGENT.to_owned()),
        (EVENT_HEADER, event.as_str().to_owned()),
        (DELIVERY_HEADER, delivery_id.to_owned()),
        (TIMESTAMP_HEADER, timestamp.to_string()),
    ];
    if !secret.is_empty() {
        headers.push((SIGNATURE_HEADER, sign(secret, timestamp, body)));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const BODY: &str = r#"{"call_id":"call_1","total_score":2}"#;
    const TS: i64 = 1_763_719_200;
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    #[test]
    fn signature_matches_an_independent_computation() {
        // printf '%s' '1763719200.{"call_id":"call_1","total_score":2}' \
        //   | openssl dgst -sha256 -hmac whsec_test
        // and python3: hmac.new(b"whsec_test", b"1763719200." + body, "sha256").hexdigest()
        assert_eq!(
            sign(SECRET, TS, BODY),
            "sha256=3acf0c332d7b7c4cce74f74d29cf5c9c90d4d6c02b6f195bd525b9dc8ffcdc8d"
        );
    }

    #[test]
    fn a_fresh_untouched_request_verifies() {
        let header = sign(SECRET, TS, BODY);
        let ts = TS.to_string();
        assert!(verify(
            SECRET,
            &ts,
            BODY.as_bytes(),
            &header,
            at(TS),
            TOLERANCE
        ));
        assert!(verify(
            SECRET,
            &ts,
            BODY.as_bytes(),
            &header,
            at(TS + 300),
            TOLERANCE
        ));
        // A receiver whose clock is a little behind ours.
        assert!(verify(
            SECRET,
            &ts,
            BODY.as_bytes(),
            &header,
            at(TS - 60),
            TOLERANCE
        ));
    }

    #[test]
    fn tampering_an_old_timestamp_or_another_secret_fails() {
        let header = sign(SECRET, TS, BODY);
        let ts = TS.to_string();
        let now = at(TS + 1);
        let tampered = BODY.replace("2}", "3}");
        assert!(!verify(
            SECRET,
            &ts,
            tampered.as_bytes(),
            &header,
            now,
            TOLERANCE
        ));
        assert!(!verify(
            "other",
            &ts,
            BODY.as_bytes(),
            &header,
            now,
            TOLERANCE
        ));
        // The timestamp is signed: moving it forward breaks the signature.
        let later = (TS + 1).to_string();
        assert!(!verify(
            SECRET,
            &later,
            BODY.as_bytes(),
            &header,
            now,
            TOLERANCE
        ));
        // A replay after the tolerance.
        assert!(!verify(
            SECRET,
            &ts,
            BODY.as_bytes(),
            &header,
            at(TS + 301),
            TOLERANCE
        ));
        // Malformed headers.
        let bare = header.trim_start_matches("sha256=");
        assert!(!verify(SECRET, &ts, BODY.as_bytes(), bare, now, TOLERANCE));
        assert!(!verify(
            SECRET,
            &ts,
            BODY.as_bytes(),
            "sha256=zz",
            now,
            TOLERANCE
        ));
        assert!(!verify(
            SECRET,
            "soon",
            BODY.as_bytes(),
            &header,
            now,
            TOLERANCE
        ));
        assert!(!verify("", &ts, BODY.as_bytes(), &header, now, TOLERANCE));
    }

    #[test]
    fn headers_carry_event_delivery_and_timestamp_and_sign_only_with_a_secret() {
        let signed = headers(DeliveryEvent::TableResult, "d-1", SECRET, TS, BODY);
        let get = |headers: &[(&str, String)], name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get(&signed, EVENT_HEADER).unwrap(), "table.result");
        assert_eq!(get(&signed, DELIVERY_HEADER).unwrap(), "d-1");
        assert_eq!(get(&signed, TIMESTAMP_HEADER).unwrap(), TS.to_string());
        assert_eq!(
            get(&signed, SIGNATURE_HEADER).unwrap(),
            sign(SECRET, TS, BODY)
        );
        assert_eq!(get(&signed, "Content-Type").unwrap(), "application/json");
        assert!(get(&signed, "User-Agent")
            .unwrap()
            .starts_with("rop-webhooks/"));
        let unsigned = headers(DeliveryEvent::TableResult, "d-1", "", TS, BODY);
        assert_eq!(get(&unsigned, SIGNATURE_HEADER), None);
    }
}
