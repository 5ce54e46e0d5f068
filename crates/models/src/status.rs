//! What is installed: `list` looks at sizes (instant), `verify` at hashes.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::files::sha256_file;
use crate::manifest::{Manifest, ModelSpec};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Installed,
    Missing,
    /// Present but not the pinned file; the reason is for people.
    Corrupt(String),
}

#[derive(Debug, Clone)]
pub struct ModelStatus {
    pub name: String,
    pub file: String,
    pub path: PathBuf,
    /// The pinned size.
    pub size: u64,
    pub default: bool,
    pub description: String,
    pub state: State,
}

impl ModelStatus {
    fn new(model: &ModelSpec, dir: &Path, state: State) -> ModelStatus {
        ModelStatus {
            name: model.name.clone(),
            file: model.file.clone(),
            path: dir.join(&model.file),
            size: model.size,
            default: model.default,
            description: model.description.clone(),
            state,
        }
    }

    /// A missing or damaged default model, or a damaged optional one.
    pub fn is_problem(&self) -> bool {
        match self.state {
            State::Installed => false,
            State::Missing => self.default,
            State::Corrupt(_) => true,
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} МБ", bytes as f64 / 1_000_000.0)
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Installed => f.write_str("установлена"),
            State::Missing => f.write_str("нет"),
            State::Corrupt(reason) => write!(f, "повреждена ({reason})"),
        }
    }
}

/// One table row: name, state, size, file, whether it is required.
impl fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.default {
            "по умолчанию"
        } else {
            "по запросу"
        };
        let state = self.state.to_string();
        write!(
            f,
            "{:<20} {:<12} {:>10}  {:<14} {}  — {}",
            self.name,
            state,
            megabytes(self.size),
            kind,
            self.path.display(),
            self.description
        )
    }
}

fn size_state(model: &ModelSpec, path: &Path) -> State {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == model.size => State::Installed,
        Ok(meta) => State::Corrupt(format!("размер {} байт вместо {}", meta.len(), model.size)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => State::Missing,
        Err(error) => State::Corrupt(format!("не читается: {error}")),
    }
}

/// Models and their files, judged by size only (no hashing): fast enough
/// for every `rop models list`.
pub fn list(dir: &Path) -> Vec<ModelStatus> {
    Manifest::builtin().list(dir)
}

/// Every model file hashed and compared with its pin.
pub fn verify(dir: &Path) -> VerifyReport {
    Manifest::builtin().verify(dir)
}

/// Where `name` lives under `dir` (built-in manifest), whether installed or
/// not; `None` for an unknown name.
pub fn model_path(dir: &Path, name: &str) -> Option<PathBuf> {
    Manifest::builtin().model_path(dir, name)
}

impl Manifest {
    pub fn list(&self, dir: &Path) -> Vec<ModelStatus> {
        self.models
            .iter()
            .map(|model| ModelStatus::new(model, dir, size_state(model, &dir.join(&model.file))))
            .collect()
    }

    pub fn verify(&self, dir: &Path) -> VerifyReport {
        let models = self
            .models
            .iter()
            .map(|model| {
                let path = dir.join(&model.file);
                let state = match size_state(model, &path) {
                    State::Installed => match sha256_file(&path, |_| {}) {
                        Ok(actual) if actual == model.sha256 => State::Installed,
                        Ok(_) => State::Corrupt("sha256 не совпадает".into()),
                        Err(error) => State::Corrupt(format!("не читается: {error}")),
                    },
                    other => other,
                };
                ModelStatus::new(model, dir, state)
            })
            .collect();
        VerifyReport { models }
    }
}

#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub models: Vec<ModelStatus>,
}

impl VerifyReport {
    /// Every default model in place and nothing damaged.
    pub fn ok(&self) -> bool {
        !self.models.iter().any(ModelStatus::is_problem)
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for model in &self.models {
            writeln!(f, "{model}")?;
        }
        let problems: Vec<&str> = self
            .models
            .iter()
            .filter(|m| m.is_problem())
            .map(|m| m.name.as_str())
            .collect();
        if problems.is_empty() {
            write!(
                f,
                "Все нужные модели на месте, контрольные суммы совпадают."
            )
        } else {
            write!(
                f,
                "Требуют установки: {} (rop models install {})",
                problems.join(", "),
                problems.join(" ")
            )
        }
    }
}
