//! Streaming conversion of every channel to 16 kHz, so a 45-minute call
//! never has to sit in memory at its original rate.

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use crate::SAMPLE_RATE;

/// Frames fed to the FFT resampler at a time: large enough for throughput,
/// small enough that the pending buffer stays tiny.
const CHUNK: usize = 1024;

pub(crate) struct To16k {
    channels: usize,
    resampler: Option<Fft<f32>>,
    pending: Vec<Vec<f32>>,
    scratch: Vec<Vec<f32>>,
    out: Vec<Vec<f32>>,
    /// Leading frames of resampler delay still to drop.
    to_trim: usize,
    frames_in: u64,
    ratio: f64,
}

impl To16k {
    pub(crate) fn new(input_rate: u32, channels: usize) -> Result<Self, String> {
        let resampler = if input_rate == SAMPLE_RATE {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    input_rate as usize,
                    SAMPLE_RATE as usize,
                    CHUNK,
                    channels,
                    FixedSync::Input,
                )
                .map_err(|error| format!("resampler: {error}"))?,
            )
        };
        let (scratch_len, to_trim) = match &resampler {
            Some(r) => (r.output_frames_max(), r.output_delay()),
            None => (0, 0),
        };
        Ok(Self {
            channels,
            resampler,
            pending: vec![Vec::new(); channels],
            scratch: vec![vec![0.0; scratch_len]; channels],
            out: vec![Vec::new(); channels],
            to_trim,
            frames_in: 0,
            ratio: f64::from(SAMPLE_RATE) / f64::from(input_rate),
        })
    }

    /// Appends planar samples (one slice per channel, equal lengths).
    pub(crate) fn push(&mut self, planes: &[Vec<f32>], frames: usize) -> Result<(), String> {
        self.frames_in += frames as u64;
        if self.resampler.is_none() {
            for (out, plane) in self.out.iter_mut().zip(planes) {
                out.extend_from_slice(&plane[..frames]);
            }
            return Ok(());
        }
        for (pending, plane) in self.pending.iter_mut().zip(planes) {
            pending.extend_from_slice(&plane[..frames]);
        }
        loop {
            let need = self.resampler.as_ref().map_or(0, |r| r.input_frames_next());
            if self.pending[0].len() < need {
                return Ok(());
            }
            self.process(need, None)?;
            for pending in &mut self.pending {
                pending.drain(..need);
            }
        }
    }

    /// Flushes the resampler and returns exactly `ceil(frames × ratio)`
    /// frames per channel.
    pub(crate) fn finish(mut self) -> Result<Vec<Vec<f32>>, String> {
        if self.resampler.is_none() {
            return Ok(self.out);
        }
        let expected = (self.frames_in as f64 * self.ratio).ceil() as usize;
        let left = self.pending[0].len();
        if left > 0 {
            self.process(left, Some(left))?;
            for pending in &mut self.pending {
                pending.clear();
            }
        }
        while self.out[0].len() < expected {
            let before = self.out[0].len();
            self.process(0, Some(0))?;
            if self.out[0].len() == before && self.to_trim == 0 {
                break;
            }
        }
        for out in &mut self.out {
            out.truncate(expected);
        }
        Ok(self.out)
    }

    fn process(&mut self, frames: usize, partial_len: Option<usize>) -> Result<(), String> {
        let Some(resampler) = self.resampler.as_mut() else {
            return Ok(());
        };
        let input = SequentialSliceOfVecs::new(&self.pending, self.channels, frames)
            .map_err(|error| format!("resampler input: {error}"))?;
        let scratch_len = self.scratch[0].len();
        let mut output =
            SequentialSliceOfVecs::new_mut(&mut self.scratch, self.channels, scratch_len)
                .map_err(|error| format!("resampler output: {error}"))?;
        let indexing = Indexing {
            input_offset: 0,
            output_offset: 0,
            partial_len,
            active_channels_mask: None,
        };
        let (_, produced) = resampler
            .process_into_buffer(&input, &mut output, Some(&indexing))
            .map_err(|error| format!("resampler: {error}"))?;
        let skip = self.to_trim.min(produced);
        self.to_trim -= skip;
        for (out, scratch) in self.out.iter_mut().zip(&self.scratch) {
            out.extend_from_slice(&scratch[skip..produced]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    /// Frequency estimate from zero crossings; enough to see that the
    /// pitch survived the rate change.
    fn frequency(samples: &[f32], rate: u32) -> f32 {
        let crossings = samples
            .windows(2)
            .filter(|w| w[0] <= 0.0 && w[1] > 0.0)
            .count();
        crossings as f32 * rate as f32 / samples.len() as f32
    }

    #[test]
    fn resamples_each_channel_keeping_length_and_pitch() {
        for rate in [8_000, 11_025, 22_050, 44_100, 48_000] {
            let left = sine(rate, 440.0, 1.5);
            let right = sine(rate, 1000.0, 1.5);
            let mut to16k = To16k::new(rate, 2).unwrap();
            // Uneven pushes, as packets come.
            let mut at = 0;
            for size in [1, 577, 4096, 13, 100_000] {
                let end = (at + size).min(left.len());
                let planes = vec![left[at..end].to_vec(), right[at..end].to_vec()];
                to16k.push(&planes, end - at).unwrap();
                at = end;
            }
            let out = to16k.finish().unwrap();
            let expected = (left.len() as f64 * 16_000.0 / f64::from(rate)).ceil() as usize;
            assert_eq!(out[0].len(), expected, "rate {rate}");
            assert_eq!(out[1].len(), expected, "rate {rate}");
            let middle = &out[0][2000..expected - 2000];
            assert!(
                (frequency(middle, 16_000) - 440.0).abs() < 5.0,
                "rate {rate}"
            );
            let middle = &out[1][2000..expected - 2000];
            assert!(
                (frequency(middle, 16_000) - 1000.0).abs() < 5.0,
                "rate {rate}"
            );
        }
    }

    #[test]
    fn sixteen_khz_passes_through() {
        let samples = sine(16_000, 300.0, 0.3);
        let mut to16k = To16k::new(16_000, 1).unwrap();
        to16k
            .push(std::slice::from_ref(&samples), samples.len())
            .unwrap();
        assert_eq!(to16k.finish().unwrap(), vec![samples]);
    }

    #[test]
    fn a_clip_shorter_than_one_chunk_still_comes_out() {
        let samples = sine(8_000, 440.0, 0.01);
        let mut to16k = To16k::new(8_000, 1).unwrap();
        to16k
            .push(std::slice::from_ref(&samples), samples.len())
            .unwrap();
        assert_eq!(to16k.finish().unwrap()[0].len(), samples.len() * 2);
    }
}
