//! Zadarma's request and notification signatures (integrations.md §1.2,
//! §1.4). Both are `base64(hex(HMAC-SHA1(secret, …)))`: base64 of the
//! 40-character hex string, not of the 20 raw bytes.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq;

type HmacSha1 = Hmac<Sha1>;

/// `k=v&…` sorted by key, encoded as PHP's
/// `http_build_query(…, PHP_QUERY_RFC1738)`: space as `+`, `A–Z a–z 0–9 - _ .`
/// as they are, every other byte `%XX` in upper-case hex.
pub fn query_string(params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    // PHP's ksort on string keys: byte order.
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", php_encode(k), php_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn php_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Authorization` header value of an API request to `method_path`
/// (e.g. `/v1/statistics/`, with both slashes) with these parameters.
pub fn authorization(
    key: &str,
    secret: &str,
    method_path: &str,
    params: &[(&str, &str)],
) -> String {
    format!("{key}:{}", request_signature(secret, method_path, params))
}

pub fn request_signature(secret: &str, method_path: &str, params: &[(&str, &str)]) -> String {
    let query = query_string(params);
    let md5 = hex::encode(Md5::digest(query.as_bytes()));
    let input = format!("{method_path}{query}{md5}");
    BASE64.encode(hmac_hex(secret, input.as_bytes()))
}

/// The signature Zadarma puts in the `Signature` header of a notification
/// whose signed fields concatenate to `signed`.
pub fn notification_signature(secret: &str, signed: &str) -> String {
    BASE64.encode(hmac_hex(secret, signed.as_bytes()))
}

/// Whether `received` signs `signed`: the documented form (base64 of the hex
/// digest) or the form the official TypeScript SDK checks (base64 of the raw
/// digest). Compared in constant time.
pub fn verify_notification(secret: &str, signed: &str, received: &str) -> bool {
    let received = received.trim();
    let hex_form = notification_signature(secret, signed);
    let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    let raw_form = BASE64.encode(mac.finalize().into_bytes());
    let same = |expected: &str| {
        expected.len() == received.len()
            && bool::from(expected.as_bytes().ct_eq(received.as_bytes()))
    };
    same(&hex_form) | same(&raw_form)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "e30e16c201343883f77e";
    const SECRET: &str = "dbf5606ea4c1f2234201";

    /// The public test vector of integrations.md §1.2.
    #[test]
    fn the_public_request_vector() {
        let params = [
            ("start", "2018-09-01 08:00:00"),
            ("end", "2018-10-04 08:00:00"),
        ];
        assert_eq!(
            query_string(&params),
            "end=2018-10-04+08%3A00%3A00&start=2018-09-01+08%3A00%3A00"
        );
        assert_eq!(
            authorization(KEY, SECRET, "/v1/statistics/", &params),
            "e30e16c201343883f77e:ZmI3YzA1MmJkNzQyYmE1YzI3OWY3OTRjNTlmZDFkMTE2MmI4YmI0Yg=="
        );
    }

    #[test]
    fn the_balance_vector_with_format() {
        assert_eq!(
            request_signature(SECRET, "/v1/info/balance/", &[("format", "json")]),
            "ODBmYWUyY2JhYzRlODhmNTE1YmMyNWI0YWI4MTFkOGE1YTRiNWQ1Yg=="
        );
    }

    #[test]
    fn no_parameters_sign_the_md5_of_nothing() {
        assert_eq!(query_string(&[]), "");
        let expected = BASE64.encode(hmac_hex(
            SECRET,
            b"/v1/pbx/internal/d41d8cd98f00b204e9800998ecf8427e",
        ));
        assert_eq!(
            request_signature(SECRET, "/v1/pbx/internal/", &[]),
            expected
        );
    }

    #[test]
    fn php_encoding_of_unusual_characters() {
        assert_eq!(php_encode("a~b*c d+é"), "a%7Eb%2Ac+d%2B%C3%A9");
    }

    /// The worked notification example of integrations.md §1.4.
    #[test]
    fn the_notification_vector_in_both_encodings() {
        let signed = "+79001234567+749512345672024-05-01 12:00:00";
        let hex_form = "NmNkMGRmMjBlNjI2MzliZDRmNjg1YTk3YjE0MDUxYjQ2ZDEyNzkzZQ==";
        assert_eq!(notification_signature(SECRET, signed), hex_form);
        assert!(verify_notification(SECRET, signed, hex_form));
        assert!(verify_notification(
            SECRET,
            signed,
            "bNDfIOYmOb1PaFqXsUBRtG0SeT4="
        ));
        assert!(!verify_notification(
            SECRET,
            signed,
            "bNDfIOYmOb1PaFqXsUBRtG0SeT5="
        ));
        assert!(!verify_notification("other", signed, hex_form));
        assert!(!verify_notification(SECRET, signed, ""));
    }
}
