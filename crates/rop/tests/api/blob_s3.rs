//! Recordings in an S3-compatible bucket instead of the data directory: a
//! real server (moto on 127.0.0.1, see scripts/ensure-s3-server.sh) behind
//! the real service.

use rop::config::BlobStoreKind;
use rop::Config;
use rop_blob::testing::S3TestServer;
use rop_blob::{BlobStore, S3Store};
use tokio::io::AsyncReadExt;

use crate::fileserver::wav;
use crate::helpers::{spawn_app_with, test_config, Backend};

fn use_bucket(config: &mut Config, server: &S3TestServer, bucket: &str) {
    config.blob_store = BlobStoreKind::S3;
    config.s3_bucket = Some(bucket.to_owned());
    config.s3_endpoint = Some(server.endpoint().to_string());
    config.s3_access_key_id = Some("test-key-id".to_owned());
    config.s3_secret_access_key = Some("test-secret".to_owned());
    config.s3_allow_http = true;
    config.s3_prefix = Some("office-1".to_owned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_file_goes_to_the_bucket_and_delete_removes_it() {
    let server = S3TestServer::start();
    server.create_bucket("calls");
    let app = spawn_app_with(Backend::Sqlite, |config| {
        use_bucket(config, &server, "calls")
    })
    .await;

    let audio = wav(1, true);
    app.upload_file("in-s3", audio.clone(), &[]).await;

    let keys = server.keys("calls");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = keys[0]
        .strip_prefix("office-1/")
        .unwrap_or_else(|| panic!("{} is outside the prefix", keys[0]));
    assert!(key.starts_with("audio/"), "{key}");
    let store = S3Store::new(&server.config("calls")).unwrap();
    let mut stored = Vec::new();
    store
        .open(&keys[0])
        .await
        .unwrap()
        .read_to_end(&mut stored)
        .await
        .unwrap();
    assert!(stored == audio, "the bucket holds the uploaded bytes");
    assert_eq!(app.files_in("blobs"), 0, "nothing is kept locally");
    assert_eq!(app.files_in("staging"), 0);

    let response = app.delete("/api/v1/calls/in-s3").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        server.keys("calls").is_empty(),
        "the object goes with the call"
    );
    assert!(app.call_json("in-s3").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_does_not_answer_stops_the_start() {
    let server = S3TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    use_bucket(&mut config, &server, "no-such-bucket");
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let error = match rop::Server::build(&config, listener).await {
        Ok(_) => panic!("the server started without its bucket"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("blob store"), "{error}");
    assert!(error.contains("no-such-bucket"), "{error}");
    assert!(!error.contains("test-secret"), "{error}");
}
