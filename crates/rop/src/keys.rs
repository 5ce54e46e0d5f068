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

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    #[test]
    fn keys_are_long_and_distinct() {
        let a = generate_api_key();
        let b = generate_api_key();
        assert_eq!(a.expose().len(), 44);
        assert_ne!(a, b);
    }

    #[test]
    fn password_hash_verifies() {
        let hash = hash_password("пароль-123").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(argon2::Argon2::default()
            .verify_password("пароль-123".as_bytes(), &parsed)
            .is_ok());
        assert!(argon2::Argon2::default()
            .verify_password(b"wrong", &parsed)
            .is_err());
    }
}
