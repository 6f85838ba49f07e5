//! What the modules of this test binary share: the runner binary as a child process with every
//! line it writes collected, free ports, the Enerflo fixtures and the local CRM inbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sample payload of `tests/fixtures/enerflo/`.
pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../tests/fixtures/enerflo/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A fresh data directory path for a runner (not created: the runner creates it), unique across
/// processes, tests in one process and runs.
pub fn data_dir(tag: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    std::env::temp_dir().join(format!("{tag}-{}-{n}-{nanos}", std::process::id()))
}

/// The local CRM inbox of the runner on `port` (`GET /crm-inbox/events`).
pub async fn inbox(http: &reqwest::Client, port: u16) -> Value {
    http.get(format!("http://127.0.0.1:{port}/crm-inbox/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Posts `body` to the webhook route of the runner on `port` (the local default token) and
/// returns the answer's status.
pub async fn post_webhook(http: &reqwest::Client, port: u16, body: String) -> u16 {
    http.post(format!(
        "http://127.0.0.1:{port}/enerflo/webhooks/local-webhook-token"
    ))
    .body(body)
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

/// The runner binary as a child process: no environment but `PATH`, `DATA_DIR`, `LISTEN_ADDR`,
/// `RUST_LOG` and the settings given; every line of its stdout (JSON logs, the banner) and stderr
/// (a start-up error) is collected. Killed and reaped on drop.
pub struct Process {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Process {
    pub fn spawn(data_dir: &Path, listen: &str, rust_log: &str, env: &[(&str, String)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_enerflo-sync-local"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", listen)
            .env("DATA_DIR", data_dir)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("runner starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let readers = streams
            .into_iter()
            .map(|stream| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        lines.lock().unwrap().push(line);
                    }
                })
            })
            .collect();
        Self {
            child,
            lines,
            readers,
        }
    }

    /// Every line it wrote so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until it printed its banner and returns the port it listens on; panics with what it
    /// wrote if it exits or says nothing within `timeout`.
    pub fn wait_listening(&mut self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            let banner = lines
                .iter()
                .find_map(|l| l.split("listening on http://127.0.0.1:").nth(1));
            if let Some(port) = banner.and_then(|p| p.trim().parse().ok()) {
                return port;
            }
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "runner did not start ({exited:?}):\n{}",
                    self.lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit (killing it after `timeout`), then for its output to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "runner did not exit within {timeout:?}: {:#?}",
                    self.lines()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.join_output())
    }

    /// Kills it (SIGKILL: no chance to clean up) and returns everything it wrote.
    pub fn kill(&mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.join_output()
    }

    fn join_output(&mut self) -> Vec<String> {
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        self.lines()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
