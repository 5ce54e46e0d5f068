//! Progress bars on a terminal; elsewhere (CI, services) a few plain log
//! lines, so logs stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a step without a bar reports in the log.
const LOG_EVERY: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub(crate) struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    pub(crate) fn new(show_bars: bool) -> Progress {
        let bars = (show_bars && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { bars }
    }

    /// A step that moves `total` bytes (unknown: `None`).
    pub(crate) fn bytes(&self, message: String, total: Option<u64>) -> Step {
        let bar = self.bars.as_ref().map(|bars| {
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{msg:40!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ~{eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            let bar = bars.add(bar.with_message(message.clone()));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if bar.is_none() {
            tracing::info!("{message}");
        }
        Step {
            bar,
            message,
            total,
            position: 0,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    /// A step with no byte count (pip, hashing a cached file…).
    pub(crate) fn spinner(&self, message: String) -> Step {
        self.bytes(message, None)
    }

    /// A line that must not tear the bars apart.
    pub(crate) fn note(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => tracing::warn!("{line}"),
        }
    }
}

pub(crate) struct Step {
    bar: Option<ProgressBar>,
    message: String,
    total: Option<u64>,
    position: u64,
    started: Instant,
    last_log: Instant,
}

impl Step {
    pub(crate) fn set(&mut self, position: u64) {
        self.position = position;
        match &self.bar {
            Some(bar) => bar.set_position(position),
            None if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                match self.total {
                    Some(total) if total > 0 => tracing::info!(
                        "{}: {}%",
                        self.message,
                        position.saturating_mul(100) / total
                    ),
                    _ => tracing::info!("{}: {} МБ", self.message, position / 1_000_000),
                }
            }
            None => {}
        }
    }

    pub(crate) fn inc(&mut self, delta: u64) {
        self.set(self.position + delta);
    }

    pub(crate) fn done(mut self) {
        let seconds = self.started.elapsed().as_secs_f32();
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None => tracing::info!("{}: готово за {seconds:.1} с", self.message),
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
