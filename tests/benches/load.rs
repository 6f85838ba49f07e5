//! The load benchmark (`make bench-load`): the local runner as its own process, a fake CRM that
//! answers at once and a fake Enerflo in this one, and paced webhooks posted over HTTP from here.
//! Every CRM write is counted (each event must arrive exactly once, or the run fails); printed:
//! events/s and webhook POST -> CRM receipt latency (p50, p99, max). Figures are printed, never
//! asserted.
//!
//! Runs (each on a fresh runner and data dir): one stage (status changes, each install its own
//! FIFO group) paced at 100/s and at 500/s, then as fast as 64 requests in flight carry it; then
//! the six-stage mix of `tests/src/load.rs` paced at 100/s and at 300/s.
//! `BENCH_SECONDS` (default 20) sets how long each paced run sends; `BENCH_RUNS` (e.g.
//! `status@100,mix@300,status@max`) picks runs; `WORKERS_PER_STAGE` is passed to the runner.
//!
//! The runner is this same binary started again with `--runner`: the local runner's `start`, with
//! an Enerflo client without the 240 requests/minute limit real Enerflo keys get (that limit,
//! proven by the client's unit tests, would measure Enerflo's quota, not the pipeline), as the
//! load test (`tests/tests/e2e/load.rs`) does in-process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enerflo_sync::config::Config;
use enerflo_sync::enerflo::{EnerfloApi, HttpEnerfloClient};
use enerflo_sync::secret::Secret;
use sync_tests::crm::{CrmIds, EVENTS_PATH, crm_accepts};
use sync_tests::enerflo::finds_installs;
use sync_tests::load::{Webhook, key_of, percentile, status_change, webhook};
use sync_tests::{CRM_SECRET, ENERFLO_API_KEY, TOKEN};
use wiremock::MockServer;

/// Requests in flight at most (the unpaced run keeps exactly this many).
const MAX_IN_FLIGHT: usize = 64;

fn main() {
    if std::env::args().any(|a| a == "--runner") {
        runner_process();
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(drive());
}

/// `--runner`: the local runner on the environment's settings, until SIGTERM or SIGINT.
fn runner_process() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        enerflo_sync::telemetry::init();
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).unwrap();
        let mut int = signal(SignalKind::interrupt()).unwrap();
        let config = Config::from_env().expect("runner settings");
        let client: Arc<dyn EnerfloApi> = Arc::new(
            HttpEnerfloClient::new(
                &config.enerflo_base_url,
                Secret::new(ENERFLO_API_KEY),
                Duration::from_secs(5),
                usize::MAX,
            )
            .expect("Enerflo client"),
        );
        let runner = enerflo_sync_local::start_with_enerflo(config, Some(client))
            .await
            .expect("runner starts");
        println!("listening on {}", runner.url(""));
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        runner.shutdown().await;
    });
}

#[derive(Clone, Copy, Debug)]
enum Mix {
    /// Status changes only: one stage.
    Status,
    /// The six-stage mix (and events no stage handles).
    All,
}

struct Run {
    mix: Mix,
    /// Events per second; `None`: as fast as [`MAX_IN_FLIGHT`] requests carry.
    rate: Option<usize>,
}

fn runs() -> Vec<Run> {
    let spec = std::env::var("BENCH_RUNS")
        .unwrap_or_else(|_| "status@100,status@500,status@max,mix@100,mix@300".into());
    spec.split(',')
        .map(|r| {
            let (mix, rate) = r
                .trim()
                .split_once('@')
                .unwrap_or_else(|| panic!("BENCH_RUNS entry `{r}` is not <status|mix>@<rate|max>"));
            let mix = match mix {
                "status" => Mix::Status,
                "mix" => Mix::All,
                other => panic!("BENCH_RUNS: unknown mix `{other}` (status or mix)"),
            };
            let rate =
                match rate {
                    "max" => None,
                    n => Some(n.parse().unwrap_or_else(|_| {
                        panic!("BENCH_RUNS: rate `{n}` is not a number or `max`")
                    })),
                };
            Run { mix, rate }
        })
        .collect()
}

async fn drive() {
    let seconds: usize = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let workers = std::env::var("WORKERS_PER_STAGE").ok();
    println!(
        "bench-load: {} cores; WORKERS_PER_STAGE={}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        workers.as_deref().unwrap_or("(default)")
    );
    for run in runs() {
        let total = match (run.mix, run.rate) {
            (_, Some(rate)) => rate * seconds,
            (Mix::Status, None) => 500 * seconds,
            (Mix::All, None) => 300 * seconds,
        };
        measure(&run, total).await;
    }
}

/// The runner as a child process, its output drained (and dropped) by a thread.
struct RunnerProcess {
    child: Child,
    port: u16,
    data_dir: std::path::PathBuf,
}

impl RunnerProcess {
    fn start(enerflo: &MockServer, crm: &MockServer) -> Self {
        let data_dir = std::env::temp_dir().join(format!(
            "bench-load-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--runner")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DATA_DIR", &data_dir)
            .env("WEBHOOK_TOKEN", TOKEN)
            .env("CRM_WEBHOOK_URL", format!("{}{EVENTS_PATH}", crm.uri()))
            .env("CRM_WEBHOOK_SECRET", CRM_SECRET)
            .env("ENERFLO_BASE_URL", enerflo.uri())
            .env("ENERFLO_API_KEY", ENERFLO_API_KEY)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_RUST_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("runner process starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("listening on http://127.0.0.1:")
                    .nth(1)
                    .and_then(|p| p.trim().trim_end_matches('/').parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                } else if line.contains("\"level\":\"ERROR\"") {
                    eprintln!("runner: {line}");
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the runner prints where it listens");
        Self {
            child,
            port,
            data_dir,
        }
    }

    /// The CPU time the runner process used so far (user + system), from `/proc`.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // After the parenthesised command: state is field 3, utime 14, stime 15 (clock ticks).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // CLK_TCK is 100 on Linux.
        Duration::from_millis((ticks(14) + ticks(15)) * 10)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

async fn measure(run: &Run, total: usize) {
    let enerflo = MockServer::start().await;
    let crm = MockServer::start().await;
    finds_installs(&enerflo).await;
    let arrivals = crm_accepts(&crm, CrmIds::PerEvent(|e| format!("crm-{}", key_of(e)))).await;
    let runner = RunnerProcess::start(&enerflo, &crm);
    let url = format!("http://127.0.0.1:{}/enerflo/webhooks/{TOKEN}", runner.port);

    let webhooks: Arc<Vec<Webhook>> = Arc::new(
        (0..total)
            .map(|i| match run.mix {
                Mix::Status => status_change(i),
                Mix::All => webhook(i),
            })
            .collect(),
    );
    let expected: BTreeMap<String, usize> = webhooks
        .iter()
        .filter_map(|w| w.key.clone().map(|k| (k, 1)))
        .collect();
    let http = enerflo_sync::wire::client_builder()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .unwrap();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let acked_in: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..total {
        if let Some(rate) = run.rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let slot = slots.clone().acquire_owned().await.unwrap();
        let (http, url, webhooks, sent_at, acked_in) = (
            http.clone(),
            url.clone(),
            webhooks.clone(),
            sent_at.clone(),
            acked_in.clone(),
        );
        posts.spawn(async move {
            let w = &webhooks[i];
            let at = Instant::now();
            if let Some(key) = &w.key {
                sent_at.lock().unwrap().insert(key.clone(), at);
            }
            let resp = http
                .post(format!("{url}{}", w.query))
                .header("content-type", "application/json")
                .body(w.body.clone())
                .send()
                .await
                .expect("webhook request");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            assert_eq!(status, 202, "event {i}: {text}");
            acked_in.lock().unwrap().push(at.elapsed());
            drop(slot);
        });
        while posts.try_join_next().is_some() {}
    }
    while let Some(done) = posts.join_next().await {
        done.expect("a webhook post failed");
    }
    let sent_in = started.elapsed();

    // Every routed event reaches the CRM: wait on observed progress, with a generous bound.
    let mut last = (0, Instant::now());
    while arrivals.len() < expected.len() {
        let n = arrivals.len();
        if n != last.0 {
            last = (n, Instant::now());
        }
        assert!(
            last.1.elapsed() < Duration::from_secs(60),
            "no CRM write for 60 s: {n} of {} arrived",
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anything written twice arrives soon after: settle before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = runner.cpu();
    runner.stop();

    let all = arrivals.all();
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for (event, _) in &all {
        *received.entry(key_of(event)).or_insert(0) += 1;
    }
    assert!(
        received == expected,
        "not every event written exactly once: {} distinct of {} expected, {} writes",
        received.len(),
        expected.len(),
        all.len()
    );
    let sent_at = sent_at.lock().unwrap();
    let mut latencies: Vec<Duration> = all
        .iter()
        .filter_map(|(e, at)| {
            sent_at
                .get(&key_of(e))
                .map(|s| at.saturating_duration_since(*s))
        })
        .collect();
    latencies.sort();
    let mut acks = acked_in.lock().unwrap().clone();
    acks.sort();
    let first = sent_at.values().min().copied().unwrap_or(started);
    let last_write = all.iter().map(|(_, at)| *at).max().unwrap_or(started);
    let span = last_write.duration_since(first).as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "bench-load: {:<6} {:>9}: {total} webhooks in {:.1} s ({:.0}/s sent), {} CRM writes (each event once) in {span:.1} s: {:.0} events/s; \
         webhook -> CRM p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; webhook 202 p50 {:.1} ms, p99 {:.1} ms; \
         runner CPU {:.1} s ({:.2} ms/event)",
        match run.mix {
            Mix::Status => "status",
            Mix::All => "mix",
        },
        run.rate.map_or("max".to_owned(), |r| format!("{r}/s")),
        sent_in.as_secs_f64(),
        total as f64 / sent_in.as_secs_f64(),
        all.len(),
        all.len() as f64 / span,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        ms(percentile(&acks, 0.50)),
        ms(percentile(&acks, 0.99)),
        cpu.as_secs_f64(),
        ms(cpu) / total as f64,
    );
}
