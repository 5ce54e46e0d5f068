//! A real S3-compatible server for tests (this crate's and the service's):
//! moto, installed by `scripts/ensure-s3-server.sh`, started on a free
//! 127.0.0.1 port and killed when the handle is dropped. Test support only;
//! nothing in the service calls it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use url::Url;

use crate::S3Config;

/// Where `scripts/ensure-s3-server.sh` installs the server.
pub fn moto_server_path() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("rop-test-tools/moto/bin/moto_server")
}

/// A port nothing listens on right now (also what a stopped server looks
/// like).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

pub struct S3TestServer {
    child: Child,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl S3TestServer {
    /// Starts the server and waits until it answers.
    ///
    /// Panics when the server is not installed: a test that silently skipped
    /// would pass without testing anything.
    pub fn start() -> Self {
        let binary = moto_server_path();
        assert!(
            binary.is_file(),
            "the S3 test server is not installed at {}: run scripts/ensure-s3-server.sh",
            binary.display()
        );
        let mut last_failure = String::new();
        // Another process may take the free port before the server binds it.
        for _ in 0..3 {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().expect("a log file for the S3 test server");
            let output = |log: &tempfile::NamedTempFile| -> Stdio {
                log.reopen()
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null())
            };
            let child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(output(&log))
                .stderr(output(&log))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut server = Self { child, port, log };
            match server.wait_until_ready(Duration::from_secs(60)) {
                Ok(()) => return server,
                Err(failure) => last_failure = format!("{failure}\n{}", server.log_text()),
            }
        }
        panic!("the S3 test server did not start: {last_failure}");
    }

    fn wait_until_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("moto_server exited: {status}"));
            }
            if let Ok((200, _)) = self.request("GET", "/") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("moto_server did not answer within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        let _ = File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    pub fn endpoint(&self) -> Url {
        Url::parse(&format!("http://127.0.0.1:{}", self.port)).expect("valid URL")
    }

    /// Makes a bucket; moto accepts unsigned requests.
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self
            .request("PUT", &format!("/{bucket}"))
            .expect("the S3 test server answers");
        assert_eq!(status, 200, "bucket `{bucket}` not created: {body}");
    }

    /// Every object key in the bucket (up to a thousand).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self
            .request("GET", &format!("/{bucket}?list-type=2"))
            .expect("the S3 test server answers");
        assert_eq!(status, 200, "bucket `{bucket}` not listed: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }

    /// Settings for a bucket on this server; moto takes any credentials.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            allow_http: true,
            ..S3Config::new(bucket, "test-key-id", "test-secret")
        }
    }

    /// One plain HTTP/1.1 request: enough for the test helpers, and no HTTP
    /// client dependency for the library.
    fn request(&self, method: &str, path: &str) -> io::Result<(u16, String)> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
