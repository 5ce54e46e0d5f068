//! Generation of the installation's API key and of one-time passwords.

use rand::distributions::Alphanumeric;
use rand::Rng;
use rop_domain::ApiSecret;

/// A new API key: `rop_` and 40 random alphanumerics (≈ 238 bits).
pub fn generate_api_key() -> ApiSecret {
    ApiSecret::new(format!("rop_{}", random_alphanumeric(40)))
}

/// Random text from the operating system's CSPRNG (via `thread_rng`).
pub fn random_alphanumeric(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_and_distinct() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_eq!(a.expose().len(), 44);
        assert_ne!(a, b);
    }
}
