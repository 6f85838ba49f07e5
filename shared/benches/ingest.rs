//! docs/design.md 6: the webhook ingest path, in process and without the queue's network call, should cost
//! within 2x of just parsing the JSON body.
//!
//! - `parse_json`: `serde_json::from_slice::<Value>` of the fixture body, nothing else.
//! - `webhook_embedded`: `WebhookIngest::handle` wired by `runtime::webhook_ingest` on an in-memory
//!   `EmbeddedStore` (redb, no file, so no fsync) and a queue that only counts.
//! - `webhook_null_store`: the same handler with a claim store and event log that do nothing, so
//!   only our code is measured (token check, parse, classify, dedupe hash, records, responses).
//! - `interleaved_sum`: the three above timed in turn inside one loop; the ratios it prints are the
//!   budget check (robust to load drifting between criterion's sequential benches on a shared box).
//! - `ingest_parts/*`: the body-sized steps of the path, one by one (where the time goes).
//!
//! Every request has a unique body (one field varies) so the dedupe claim never short-circuits to
//! "duplicate"; building that request (a 12-digit overwrite and a ~9.5 KB copy) is inside the
//! timed loop of the two separate webhook benches (not of `interleaved_sum`), which makes their
//! ratio slightly pessimistic.
//!
//! Run: `cargo bench -p enerflo-sync --bench ingest -- --warm-up-time 1 --measurement-time 3`.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use enerflo_sync::classify::Stage;
use enerflo_sync::config::Config;
use enerflo_sync::hashing::sha256_hex;
use enerflo_sync::http::HttpRequest;
use enerflo_sync::http::webhook::{ROUTE_PREFIX, WebhookIngest};
use enerflo_sync::queue::{Delivery, EventQueue, QueueError, QueueMessage};
use enerflo_sync::runtime::{Ports, webhook_ingest};
use enerflo_sync::store::embedded::EmbeddedStore;
use enerflo_sync::store::{Claim, ClaimStore, EventLog, EventRecord, StoreError, compress};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/enerflo/v2-deal.projectSubmitted.json");
const TOKEN: &str = "bench-webhook-token";
/// The field varied per request: `initiatedBy`, whose last 12 hex digits become a counter.
const VARIED: &[u8] = b"\"initiatedBy\": \"00000000-0000-4000-8000-000000000002\"";

// ----- in-bench ports -----------------------------------------------------------------------------

/// A queue that accepts every message and only counts them (no network, no storage).
#[derive(Default)]
struct CountingQueue {
    sent: AtomicU64,
}

#[async_trait]
impl EventQueue for CountingQueue {
    async fn send(&self, msg: &QueueMessage) -> Result<(), QueueError> {
        black_box(msg);
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn has_stage(&self, _stage: Stage) -> bool {
        true
    }

    async fn defer(&self, _: Stage, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }

    async fn dead_letter(&self, _: Stage, _: &Delivery, _: &str) -> Result<(), QueueError> {
        Ok(())
    }
}

/// A claim store and event log that remember nothing: every claim is acquired.
struct NullStore;

#[async_trait]
impl ClaimStore for NullStore {
    async fn claim(&self, _: &str, _: u64, _: u64) -> Result<Claim, StoreError> {
        Ok(Claim::Acquired)
    }

    async fn complete(&self, _: &str, _: &str, _: u64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn release(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl EventLog for NullStore {
    async fn record(&self, event: &EventRecord, _: u64) -> Result<(), StoreError> {
        black_box(event);
        Ok(())
    }

    async fn accept(
        &self,
        event: &EventRecord,
        _: u64,
    ) -> Result<enerflo_sync::store::Acceptance, StoreError> {
        black_box(event);
        Ok(enerflo_sync::store::Acceptance::New)
    }

    async fn tally(&self, event: &EventRecord, _: bool) -> Result<(), StoreError> {
        black_box(event);
        Ok(())
    }

    async fn unsent(&self, _: &str, _: i64, _: usize) -> Result<Vec<EventRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn set_outcome(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get(&self, _: &str) -> Result<Option<EventRecord>, StoreError> {
        Ok(None)
    }

    async fn for_entity(&self, _: &str, _: usize) -> Result<Vec<EventRecord>, StoreError> {
        Ok(Vec::new())
    }

    async fn count_attempt(&self, _: &str, _: u64) -> Result<u32, StoreError> {
        Ok(1)
    }

    async fn outcome_counts(
        &self,
        _: &str,
        _: i64,
    ) -> Result<Vec<enerflo_sync::store::OutcomeCounts>, StoreError> {
        Ok(Vec::new())
    }
}

// ----- harness ------------------------------------------------------------------------------------

/// The fixture body with a per-request counter written into `initiatedBy`.
struct Bodies {
    buf: Vec<u8>,
    /// Offset of the 12 digits to overwrite.
    at: usize,
    next: u64,
}

impl Bodies {
    fn new() -> Self {
        let start = FIXTURE
            .windows(VARIED.len())
            .position(|w| w == VARIED)
            .expect("the fixture has initiatedBy");
        // The closing quote follows the 12 digits.
        let at = start + VARIED.len() - 13;
        Self {
            buf: FIXTURE.to_vec(),
            at,
            next: 0,
        }
    }

    fn request(&mut self) -> HttpRequest {
        let mut n = self.next;
        self.next += 1;
        for slot in self.buf[self.at..self.at + 12].iter_mut().rev() {
            *slot = b'0' + (n % 10) as u8;
            n /= 10;
        }
        HttpRequest {
            method: Method::POST,
            path: format!("{ROUTE_PREFIX}{TOKEN}"),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(&self.buf),
        }
    }
}

fn config() -> Config {
    Config::from_lookup(|k| (k == "WEBHOOK_TOKEN").then(|| TOKEN.to_owned())).expect("config")
}

/// The handler as the webhook function wires it, over an in-memory store (or a null claim store
/// and event log) and the counting queue.
fn ingest(null_store: bool) -> (WebhookIngest, Arc<CountingQueue>) {
    let store = Arc::new(EmbeddedStore::in_memory().expect("in-memory store"));
    let queue = Arc::new(CountingQueue::default());
    let null = Arc::new(NullStore);
    let ports = Ports {
        xref: store.clone(),
        claims: if null_store {
            null.clone()
        } else {
            store.clone()
        },
        state: store.clone(),
        log: if null_store { null } else { store.clone() },
        echo: store,
        queue: queue.clone(),
    };
    (webhook_ingest(&config(), &ports), queue)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
}

/// One delivery is queued, the same body again is a duplicate: the bench measures the real path.
fn check_path(rt: &tokio::runtime::Runtime) {
    let (ingest, queue) = ingest(false);
    let mut bodies = Bodies::new();
    let req = bodies.request();
    let first = rt.block_on(ingest.handle(&req, TOKEN));
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(
        first.body_json()["status"],
        "queued",
        "{:?}",
        first.body_json()
    );
    let again = rt.block_on(ingest.handle(&req, TOKEN));
    assert_eq!(again.body_json()["status"], "duplicate");
    let next = rt.block_on(ingest.handle(&bodies.request(), TOKEN));
    assert_eq!(next.body_json()["status"], "queued");
    // The duplicate found no consumer outcome yet, so it sent again (the queue's dedupe id drops
    // that re-send; this counting queue does not).
    assert_eq!(queue.sent.load(Ordering::Relaxed), 3);
}

fn bench_webhook(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, null_store: bool) {
    let mut bodies = Bodies::new();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            // A fresh store per sample keeps memory bounded; built outside the timed loop.
            let (ingest, queue) = ingest(null_store);
            let elapsed = rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let req = bodies.request();
                    black_box(ingest.handle(&req, TOKEN).await);
                }
                start.elapsed()
            });
            assert_eq!(
                queue.sent.load(Ordering::Relaxed),
                iters,
                "every request was queued, none answered as a duplicate"
            );
            elapsed
        });
    });
}

fn ingest_benches(c: &mut Criterion) {
    let rt = runtime();
    check_path(&rt);
    println!("fixture body: {} bytes", FIXTURE.len());

    c.bench_function("ingest/parse_json", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<Value>(black_box(FIXTURE)).expect("JSON"));
        });
    });
    bench_webhook(c, "ingest/webhook_embedded", &rt, false);
    bench_webhook(c, "ingest/webhook_null_store", &rt, true);
    bench_interleaved(c, &rt);
    bench_parts(c);
}

/// Per-iteration means of one criterion sample, for each of the three paths.
#[derive(Default)]
struct Split {
    parse: Vec<f64>,
    null_store: Vec<f64>,
    embedded: Vec<f64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The three paths timed in turn inside one loop, so load drifting on a shared machine hits them
/// alike; the ratios printed after it are the budget check. Criterion reports the sum.
fn bench_interleaved(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let split = RefCell::new(Split::default());
    let mut bodies = Bodies::new();
    c.bench_function("ingest/interleaved_sum", |b| {
        b.iter_custom(|iters| {
            let (embedded, embedded_queue) = ingest(false);
            let (null_store, null_queue) = ingest(true);
            let (parse, null, emb) = rt.block_on(async {
                let (mut parse, mut null, mut emb) =
                    (Duration::ZERO, Duration::ZERO, Duration::ZERO);
                for _ in 0..iters {
                    let start = Instant::now();
                    black_box(serde_json::from_slice::<Value>(black_box(FIXTURE)).expect("JSON"));
                    parse += start.elapsed();

                    let req = bodies.request();
                    let start = Instant::now();
                    black_box(null_store.handle(&req, TOKEN).await);
                    null += start.elapsed();

                    let req = bodies.request();
                    let start = Instant::now();
                    black_box(embedded.handle(&req, TOKEN).await);
                    emb += start.elapsed();
                }
                (parse, null, emb)
            });
            assert_eq!(embedded_queue.sent.load(Ordering::Relaxed), iters);
            assert_eq!(null_queue.sent.load(Ordering::Relaxed), iters);
            let mut split = split.borrow_mut();
            let per_iter = |d: Duration| d.as_secs_f64() / iters as f64;
            split.parse.push(per_iter(parse));
            split.null_store.push(per_iter(null));
            split.embedded.push(per_iter(emb));
            parse + null + emb
        });
    });
    let mut split = split.into_inner();
    if split.parse.len() > 10 {
        let parse = median(&mut split.parse);
        let null = median(&mut split.null_store);
        let emb = median(&mut split.embedded);
        println!(
            "ingest/interleaved medians over {} samples: parse_json {:.1} µs; webhook_null_store {:.1} µs = {:.2}x; webhook_embedded {:.1} µs = {:.2}x (docs/design.md 6 budget: 2x)",
            split.parse.len(),
            parse * 1e6,
            null * 1e6,
            null / parse,
            emb * 1e6,
            emb / parse,
        );
    }
}

/// Where the time goes: the steps of the path that scale with the body, one by one.
fn bench_parts(c: &mut Criterion) {
    let value: Value = serde_json::from_slice(FIXTURE).expect("JSON");
    let text = String::from_utf8_lossy(FIXTURE).into_owned();
    let normalised = value.to_string();
    let gz = compress(&text);
    let mut group = c.benchmark_group("ingest_parts");
    group.bench_function("value_clone", |b| b.iter(|| black_box(value.clone())));
    group.bench_function("value_to_string", |b| {
        b.iter(|| black_box(black_box(&value).to_string()));
    });
    group.bench_function("sha256_hex", |b| {
        b.iter(|| black_box(sha256_hex(black_box(normalised.as_bytes()))));
    });
    group.bench_function("gzip_body", |b| {
        b.iter(|| black_box(compress(black_box(&text))));
    });
    // The embedded event log stores the gzip bytes in a JSON record (`Vec<u8>`: an array of numbers).
    group.bench_function("gzip_bytes_to_json", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&gz)).expect("JSON")));
    });
    group.finish();
}

criterion_group!(benches, ingest_benches);
criterion_main!(benches);
