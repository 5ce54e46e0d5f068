//! Any bytes through the decoder entry point the pipeline uses: it must
//! return a result (never panic, hang or blow up memory).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rop_audio::{decode_bytes, DecodeLimits};

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        // Keeps each run short; long files are tested elsewhere.
        max_duration: std::time::Duration::from_secs(30),
    };
    let _ = decode_bytes(data.to_vec(), &limits);
});
