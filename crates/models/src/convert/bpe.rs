//! GPT-2 byte-level BPE writes every byte as a printable character
//! (`bytes_to_unicode` in OpenAI's gpt-2 encoder); whisper.cpp wants the
//! raw bytes back.

/// Character → byte, for the 256 characters the mapping uses (all below
/// U+0144).
fn decoder() -> &'static [Option<u8>; 324] {
    static TABLE: std::sync::OnceLock<[Option<u8>; 324]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [None; 324];
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut shifted = 256;
        for byte in 0..=255u8 {
            if printable(byte) {
                table[usize::from(byte)] = Some(byte);
            } else {
                table[shifted] = Some(byte);
                shifted += 1;
            }
        }
        table
    })
}

/// The raw bytes of one vocabulary entry, or `None` if it holds a character
/// outside the byte mapping.
pub(crate) fn token_bytes(token: &str) -> Option<Vec<u8>> {
    let table = decoder();
    token
        .chars()
        .map(|c| table.get(c as usize).copied().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverses_the_byte_level_mapping() {
        assert_eq!(token_bytes("Ġ").unwrap(), b" ");
        assert_eq!(token_bytes("Ċ").unwrap(), b"\n");
        assert_eq!(token_bytes("hello").unwrap(), b"hello");
        assert_eq!(token_bytes("ĠÐ¿").unwrap(), " п".as_bytes());
        assert_eq!(token_bytes("ÐŁÑĢÐ¸Ð²ÐµÑĤ").unwrap(), "Привет".as_bytes());
        assert_eq!(token_bytes("").unwrap(), b"");
        // Control and Latin-1 gap bytes map to U+0100.., in byte order.
        assert_eq!(token_bytes("Ā").unwrap(), [0u8]);
        assert_eq!(token_bytes("Ń").unwrap(), [0xAD]);
        // A half of a UTF-8 sequence is a valid token.
        assert_eq!(token_bytes("Ð").unwrap(), [0xD0]);
        assert!(token_bytes("п").is_none());
        assert!(
            token_bytes("<|en|>").is_some(),
            "specials are filtered elsewhere"
        );
    }

    #[test]
    fn the_mapping_is_a_bijection() {
        let table = decoder();
        let mut seen = [false; 256];
        for byte in table.iter().flatten() {
            assert!(!seen[usize::from(*byte)]);
            seen[usize::from(*byte)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
