//! The `rop` binary itself: help, migrations, administrators, and graceful
//! shutdown of `rop serve` on SIGTERM.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rop(data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rop"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn");
    command
}

#[test]
fn help_lists_every_command() {
    let output = Command::new(env!("CARGO_BIN_EXE_rop"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for command in [
        "serve",
        "worker",
        "migrate",
        "api-key",
        "admin",
        "models",
        "transcribe",
    ] {
        assert!(help.contains(command), "{command} in --help");
    }
    for flag in [
        "--config",
        "--listen",
        "--data-dir",
        "--database-url",
        "--models-dir",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_rop"))
        .args(["api-key", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("show") && help.contains("rotate"));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = rop(dir.path())
        .arg("migrate")
        .env("ROP_MAX_DURATION_SECS", "long")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .to_lowercase()
        .contains("max_duration_secs"));
    let output = rop(dir.path())
        .args(["migrate", "--database-url", "mysql://x"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported database URL"));
}

#[test]
fn migrate_show_key_and_create_admins() {
    let dir = tempfile::tempdir().unwrap();
    assert!(rop(dir.path()).arg("migrate").status().unwrap().success());
    let first = rop(dir.path()).args(["api-key", "show"]).output().unwrap();
    let key = String::from_utf8(first.stdout).unwrap();
    assert_eq!(key.lines().count(), 1);
    assert!(key.starts_with("rop_"));
    let again = rop(dir.path()).args(["api-key", "show"]).output().unwrap();
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        key,
        "the key is stable"
    );

    let output = rop(dir.path())
        .args(["admin", "create", "--username", "boss"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("Одноразовый пароль"), "{printed}");

    let mut child = rop(dir.path())
        .args([
            "admin",
            "create",
            "--username",
            "second",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(!String::from_utf8(output.stdout)
        .unwrap()
        .contains("correct horse"));

    let duplicate = rop(dir.path())
        .args(["admin", "create", "--username", "boss"])
        .output()
        .unwrap();
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already exists"));
}

#[test]
fn serve_without_the_speech_model_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = rop(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--models-dir"])
        .arg(dir.path().join("no-models"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rop models install"), "{stderr}");
}

#[test]
fn serve_stops_gracefully_on_sigterm_and_never_logs_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = rop(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "debug")
        // Workers run, with a remote speech engine that is never called.
        .env("ROP_ASR_ENGINE", "openai")
        .env("ROP_ASR_URL", "http://127.0.0.1:9/v1/")
        .env("ROP_LLM_ENGINE", "none")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = String::from_utf8(
        rop(dir.path())
            .args(["api-key", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let key = key.trim();
    // A request that carries the key in the query string, as the seed does.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /api/v1/calls?apiKey={key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    assert!(!log.contains(key), "the API key appeared in the log");
}

#[test]
fn models_list_and_verify_on_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    let output = rop(dir.path())
        .arg("--models-dir")
        .arg(&models)
        .args(["models", "list"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed = String::from_utf8(output.stdout).unwrap();
    for name in ["whisper-base", "silero-vad", "qwen2.5-coder-1.5b"] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default();
        assert!(line.contains("нет"), "{name} missing: {listed}");
    }
    let output = rop(dir.path())
        .arg("--models-dir")
        .arg(&models)
        .args(["models", "verify"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "default models are missing");
    assert!(String::from_utf8(output.stdout)
        .unwrap()
        .contains("rop models install whisper-base silero-vad qwen2.5-coder-1.5b"));
    let output = rop(dir.path())
        .args(["models", "install", "--sources", "ftp"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ftp"));
}
