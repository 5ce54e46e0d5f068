//! One behaviour suite, run against the local directory and against a real
//! S3-compatible server (moto on 127.0.0.1, started by the test): callers
//! must not be able to tell the stores apart.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use rop_blob::testing::{free_port, S3TestServer};
use rop_blob::{
    open_blob_store, BlobError, BlobStore, BlobStoreSpec, LocalDirStore, S3Config, S3Store,
};
use tokio::io::AsyncReadExt;

/// Bigger than one multipart part (8 MiB) twice over, and not a multiple
/// of it, so that the S3 store uploads three parts, the last one short.
fn recording() -> Vec<u8> {
    (0..17 * 1024 * 1024 + 4321u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

async fn stage(dir: &Path, name: &str, content: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    tokio::fs::write(&path, content).await.unwrap();
    path
}

async fn read_all(store: &dyn BlobStore, key: &str) -> Vec<u8> {
    let mut content = Vec::new();
    store
        .open(key)
        .await
        .unwrap()
        .read_to_end(&mut content)
        .await
        .unwrap();
    content
}

async fn behaves_like_a_blob_store(store: &dyn BlobStore, staging: &Path) {
    // A multi-megabyte recording round-trips, and the staged file is moved.
    let big = recording();
    let staged = stage(staging, "big", &big).await;
    store.put_file("audio/big.bin", &staged).await.unwrap();
    assert!(!staged.exists(), "put_file moves the file, not copies it");
    assert!(
        read_all(store, "audio/big.bin").await == big,
        "content differs"
    );

    // The decoders read the opened file synchronously and seek in it.
    let mut file = store.open("audio/big.bin").await.unwrap().into_std().await;
    file.seek(SeekFrom::Start(9 * 1024 * 1024)).unwrap();
    let mut middle = [0u8; 16];
    file.read_exact(&mut middle).unwrap();
    assert_eq!(middle, big[9 * 1024 * 1024..9 * 1024 * 1024 + 16]);
    drop(file);

    // A small one (a single request on S3), and an empty one.
    let staged = stage(staging, "small", b"RIFF....WAVE").await;
    store.put_file("audio/small.wav", &staged).await.unwrap();
    assert!(!staged.exists());
    assert_eq!(read_all(store, "audio/small.wav").await, b"RIFF....WAVE");
    let staged = stage(staging, "empty", b"").await;
    store.put_file("audio/empty.bin", &staged).await.unwrap();
    assert!(read_all(store, "audio/empty.bin").await.is_empty());

    // Missing objects are NotFound, which the pipeline treats as permanent.
    assert!(matches!(
        store.open("audio/never-stored.wav").await,
        Err(BlobError::NotFound(_))
    ));

    // Deleting is idempotent and really deletes.
    for key in ["audio/big.bin", "audio/small.wav", "audio/empty.bin"] {
        store.delete(key).await.unwrap();
        store.delete(key).await.unwrap();
        assert!(
            matches!(store.open(key).await, Err(BlobError::NotFound(_))),
            "{key} still there"
        );
    }
    store.delete("audio/never-stored.wav").await.unwrap();

    // Keys that could escape the store are refused before any I/O, and the
    // staged file stays where it was.
    let staged = stage(staging, "kept", b"data").await;
    for key in [
        "../etc/passwd",
        "/abs",
        "a//b",
        "a/./b",
        "",
        "a b",
        "ä",
        "a/",
    ] {
        assert!(
            matches!(store.delete(key).await, Err(BlobError::InvalidKey(_))),
            "delete {key:?}"
        );
        assert!(
            matches!(store.open(key).await, Err(BlobError::InvalidKey(_))),
            "open {key:?}"
        );
        assert!(
            matches!(
                store.put_file(key, &staged).await,
                Err(BlobError::InvalidKey(_))
            ),
            "put_file {key:?}"
        );
    }
    assert!(staged.exists());

    // A staged file that is not there is an error, not a silent success.
    let error = store
        .put_file("audio/ghost.wav", &staging.join("ghost"))
        .await
        .unwrap_err();
    assert!(!matches!(error, BlobError::NotFound(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_dir_store_behaves() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::open_dir(dir.path().join("blobs"))
        .await
        .unwrap();
    behaves_like_a_blob_store(&store, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_behaves() {
    let server = S3TestServer::start();
    server.create_bucket("calls");
    let dir = tempfile::tempdir().unwrap();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let config = S3Config {
        prefix: Some("/office-1/".into()),
        staging_dir: Some(downloads.clone()),
        ..server.config("calls")
    };
    let store = S3Store::connect(&config).await.unwrap();
    behaves_like_a_blob_store(&store, dir.path()).await;

    // Objects live under the prefix, and nothing is left behind: neither
    // objects nor the downloads `open` made.
    let staged = stage(dir.path(), "one", b"one").await;
    store.put_file("audio/one.wav", &staged).await.unwrap();
    assert_eq!(server.keys("calls"), ["office-1/audio/one.wav"]);
    let opened = store.open("audio/one.wav").await.unwrap();
    drop(opened);
    store.delete("audio/one.wav").await.unwrap();
    assert!(server.keys("calls").is_empty());
    assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_blob_store_picks_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let local = open_blob_store(&BlobStoreSpec::LocalDir(dir.path().join("blobs")))
        .await
        .unwrap();
    let staged = stage(dir.path(), "a", b"a").await;
    local.put_file("audio/a.wav", &staged).await.unwrap();
    assert!(dir.path().join("blobs/audio/a.wav").is_file());

    let server = S3TestServer::start();
    server.create_bucket("calls");
    let remote = open_blob_store(&BlobStoreSpec::S3(Box::new(server.config("calls"))))
        .await
        .unwrap();
    let staged = stage(dir.path(), "b", b"b").await;
    remote.put_file("audio/b.wav", &staged).await.unwrap();
    assert_eq!(server.keys("calls"), ["audio/b.wav"]);

    // A bucket that does not exist is reported at start, not per call.
    let missing = open_blob_store(&BlobStoreSpec::S3(Box::new(
        server.config("no-such-bucket"),
    )))
    .await;
    assert!(
        matches!(missing, Err(BlobError::Unavailable(_))),
        "{:?}",
        missing.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_fast_and_retryably() {
    let dir = tempfile::tempdir().unwrap();
    let config = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{}", free_port()).parse().unwrap()),
        allow_http: true,
        ..S3Config::new("calls", "id", "secret")
    };
    let started = Instant::now();
    let error = S3Store::connect(&config).await.unwrap_err();
    assert!(matches!(error, BlobError::Unavailable(_)), "{error:?}");

    let store = S3Store::new(&config).unwrap();
    let staged = stage(dir.path(), "staged", b"RIFF....WAVE").await;
    let put = store.put_file("audio/a.wav", &staged).await.unwrap_err();
    assert!(matches!(put, BlobError::Unavailable(_)), "{put:?}");
    assert!(staged.exists(), "a failed upload keeps the staged file");
    // Not NotFound: the pipeline must retry, not give the call up.
    let open = store.open("audio/a.wav").await.unwrap_err();
    assert!(matches!(open, BlobError::Unavailable(_)), "{open:?}");
    let delete = store.delete("audio/a.wav").await.unwrap_err();
    assert!(matches!(delete, BlobError::Unavailable(_)), "{delete:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn plain_http_needs_allow_http() {
    // object_store would only fail at the first request, with a bare
    // "builder error" that reads like a network failure.
    let config = S3Config {
        endpoint: Some("http://127.0.0.1:9".parse().unwrap()),
        ..S3Config::new("calls", "id", "secret")
    };
    let error = S3Store::new(&config).unwrap_err();
    assert!(matches!(error, BlobError::Config(_)), "{error:?}");
    assert!(error.to_string().contains("allow_http"), "{error}");
}

#[test]
fn config_debug_hides_the_secret() {
    let config = S3Config::new("calls", "AKIDEXAMPLE", "wJalrXUtnFEMI-very-secret");
    let shown = format!("{config:?}");
    assert!(shown.contains("AKIDEXAMPLE"));
    assert!(!shown.contains("very-secret"), "{shown}");
}
