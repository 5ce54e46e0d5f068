//! Decodes files to 16 kHz per-channel PCM `--repeat` times each and prints
//! one JSON line per file with the best time (bench/asr.sh compares it with
//! ffmpeg doing the same work).

use std::path::PathBuf;
use std::time::Instant;

use rop_audio::{decode_file, DecodeLimits};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 5;
    if let Some(at) = args.iter().position(|a| a == "--repeat") {
        repeat = args.get(at + 1).and_then(|n| n.parse().ok()).unwrap_or(5);
        args.drain(at..(at + 2).min(args.len()));
    }
    let limits = DecodeLimits {
        max_duration: std::time::Duration::from_secs(6 * 3600),
    };
    for file in args.into_iter().map(PathBuf::from) {
        let mut best = f64::MAX;
        let mut seconds = 0.0;
        for _ in 0..repeat {
            let started = Instant::now();
            match decode_file(&file, &limits) {
                Ok(decoded) => seconds = decoded.info.duration.as_secs_f64(),
                Err(error) => {
                    eprintln!("{}: {error}", file.display());
                    std::process::exit(1);
                }
            }
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "{{\"file\": \"{}\", \"audio_secs\": {seconds:.3}, \"best_secs\": {best:.6}}}",
            file.display()
        );
    }
}
