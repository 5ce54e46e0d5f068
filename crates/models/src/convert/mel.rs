//! The mel filter bank whisper.cpp reads from the model file: what
//! `librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)` returns (Slaney mel
//! scale, area-normalised), which is also what OpenAI ships as
//! `mel_filters.npz`. Computed in f64 and rounded to f32 at the same steps
//! as librosa, so that the bits come out the same.

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// `n_mels × (n_fft / 2 + 1)` weights, row-major.
pub(crate) fn mel_filters(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_freqs = n_fft / 2 + 1;
    // np.fft.rfftfreq(n_fft, 1 / sr)
    let bin_hz = 1.0 / (n_fft as f64 * (1.0 / f64::from(sample_rate)));
    let fft_freqs: Vec<f64> = (0..n_freqs).map(|k| k as f64 * bin_hz).collect();

    // np.linspace(min_mel, max_mel, n_mels + 2), whose last point is exact.
    let points = n_mels + 2;
    let min_mel = hz_to_mel(0.0);
    let max_mel = hz_to_mel(f64::from(sample_rate) / 2.0);
    let step = (max_mel - min_mel) / (points - 1) as f64;
    let mel_hz: Vec<f64> = (0..points)
        .map(|i| {
            let mel = if i == points - 1 {
                max_mel
            } else {
                i as f64 * step + min_mel
            };
            mel_to_hz(mel)
        })
        .collect();

    let mut weights = Vec::with_capacity(n_mels * n_freqs);
    for i in 0..n_mels {
        let lower_width = mel_hz[i + 1] - mel_hz[i];
        let upper_width = mel_hz[i + 2] - mel_hz[i + 1];
        let norm = 2.0 / (mel_hz[i + 2] - mel_hz[i]);
        for &freq in &fft_freqs {
            let lower = -(mel_hz[i] - freq) / lower_width;
            let upper = (mel_hz[i + 2] - freq) / upper_width;
            // librosa stores the triangle into a float32 array first and
            // multiplies by the f64 norm afterwards: two roundings.
            // `f64::max` leaves the sign of a zero result unspecified, and
            // optimised builds differ from debug ones: spelled out, the
            // first bin's -0.0 of OpenAI's `mel_80` survives in every build.
            let smaller = lower.min(upper);
            let triangle = (if smaller < 0.0 { 0.0 } else { smaller }) as f32;
            weights.push((f64::from(triangle) * norm) as f32);
        }
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn slaney_scale_fixed_points() {
        assert_eq!(hz_to_mel(0.0), 0.0);
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        // 6.4 = 6400 / 1000 spans 27 mels on the log part.
        assert!((hz_to_mel(6400.0) - 42.0).abs() < 1e-12);
        for hz in [0.0, 300.0, 999.0, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
    }

    #[test]
    fn triangles_by_hand() {
        let bank = mel_filters(16_000, 400, 80);
        assert_eq!(bank.len(), 80 * 201);
        // Below 1 kHz the mel points are linear: mel 0..45.245… over 81
        // steps, i.e. every (45.245…/81)·200/3 Hz ≈ 37.2 Hz. Filter 0 rises
        // from 0 Hz to that point and bin 1 (40 Hz) already lies on its
        // falling side.
        let top = hz_to_mel(8000.0);
        let f1 = top / 81.0 * F_SP;
        let f2 = 2.0 * top / 81.0 * F_SP;
        let upper = (f2 - 40.0) / (f2 - f1);
        let expected = f64::from(upper as f32) * (2.0 / f2);
        assert_eq!(bank[1], expected as f32);
        assert_eq!(bank[0], 0.0);
        // As in OpenAI's file, and whatever the optimisation level (the
        // pinned ggml hash depends on this one sign bit).
        assert!(bank[0].is_sign_negative());
        // Every filter is non-negative and has some weight.
        for row in bank.chunks(201) {
            assert!(row.iter().all(|w| *w >= 0.0));
            assert!(row.iter().any(|w| *w > 0.0));
        }
    }

    /// Values of `mel_80` in OpenAI Whisper's `whisper/assets/mel_filters.npz`
    /// (openai-whisper 20250625 on PyPI), which librosa produced.
    #[test]
    fn matches_openai_mel_filters_npz() {
        let bank = mel_filters(16_000, 400, 80);
        assert_eq!(bank[1], 0.024_862_595);
        assert_eq!(bank[26 * 201 + 26], 0.003_318_606);
        assert_eq!(bank[62 * 201 + 101], 0.005_150_905_3);
        assert_eq!(bank[79 * 201 + 199], 0.000_448_759);
        assert_eq!(bank.iter().cloned().fold(0.0f32, f32::max), 0.025_880_683);
        let bytes: Vec<u8> = bank.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            "4f2701b1d287d74a0dc9871026e9519d98cb76426615f2539b0d151a0ae4ec2e",
            "the whole bank, bit for bit"
        );
    }
}
