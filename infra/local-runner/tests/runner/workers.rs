//! A stage's workers (`run_stage`) on the embedded queue: messages of different FIFO groups run at
//! once, a group's messages one after another in order, and a failing message holds back its own
//! group only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use enerflo_sync::classify::Stage;
use enerflo_sync::consumer::{Consumer, Outcome, OutcomeKind, StageHandler};
use enerflo_sync::error::SyncError;
use enerflo_sync::queue::embedded::EmbeddedQueue;
use enerflo_sync::queue::{EventQueue, MessageMeta, QueueMessage};
use enerflo_sync::retry::RetryPolicy;
use enerflo_sync::store::embedded::{EmbeddedStore, open_database};
use tokio::sync::{Barrier, watch};

const STAGE: Stage = Stage::Status;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Start(String),
    End(String),
    Failed(String),
}

/// Records every start and end (message ids `{group}#{n}`, the body); fails a message while it is
/// in `failing`; the messages in `meet` each wait until all of them have started.
struct Scripted {
    steps: Mutex<Vec<Step>>,
    failing: Mutex<Vec<String>>,
    meet: Vec<String>,
    barrier: Barrier,
}

impl Scripted {
    fn new(meet: &[&str], failing: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            steps: Mutex::default(),
            failing: Mutex::new(failing.iter().map(|s| (*s).to_owned()).collect()),
            meet: meet.iter().map(|s| (*s).to_owned()).collect(),
            barrier: Barrier::new(meet.len().max(1)),
        })
    }

    fn steps(&self) -> Vec<Step> {
        self.steps.lock().unwrap().clone()
    }

    fn ended(&self, id: &str) -> bool {
        self.steps().contains(&Step::End(id.to_owned()))
    }

    fn count(&self, step: &Step) -> usize {
        self.steps().iter().filter(|s| *s == step).count()
    }
}

#[async_trait]
impl StageHandler for Scripted {
    async fn handle(
        &self,
        _meta: &MessageMeta,
        body: &str,
        _attempt: u32,
    ) -> Result<Outcome, SyncError> {
        let id = body.to_owned();
        self.steps.lock().unwrap().push(Step::Start(id.clone()));
        if self.meet.contains(&id) {
            tokio::time::timeout(Duration::from_secs(20), self.barrier.wait())
                .await
                .expect("the messages of different groups never ran at the same time");
        }
        // Let other workers interleave.
        for _ in 0..fastrand::usize(1..20) {
            tokio::task::yield_now().await;
        }
        if self.failing.lock().unwrap().contains(&id) {
            self.steps.lock().unwrap().push(Step::Failed(id.clone()));
            return Err(SyncError::transient(format!("{id} fails (scripted)")));
        }
        self.steps.lock().unwrap().push(Step::End(id));
        Ok(Outcome::new(OutcomeKind::Delivered, "scripted"))
    }
}

struct Stage_ {
    queue: Arc<EmbeddedQueue>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// `workers` workers of a stage whose handler is `handler`, on an in-memory queue; retries come
/// after 10-20 ms.
fn stage(handler: Arc<Scripted>, workers: usize) -> Stage_ {
    let db = open_database(None).unwrap();
    let queue = Arc::new(EmbeddedQueue::new(db.clone(), [STAGE]));
    let consumer = Consumer {
        handler,
        queue: queue.clone(),
        log: Arc::new(EmbeddedStore::new(db)),
        retry: RetryPolicy {
            max_attempts: 1000,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(20),
        },
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(enerflo_sync_local::run_stage(
        STAGE,
        Arc::new(consumer),
        queue.clone(),
        workers,
        stopped,
    ));
    Stage_ { queue, stop, task }
}

async fn send(queue: &EmbeddedQueue, group: &str, n: usize) {
    let id = format!("{group}#{n}");
    let msg = QueueMessage {
        meta: MessageMeta {
            stage: STAGE,
            event: "update_install".into(),
            dedupe_key: format!("update_install:{id}"),
            group: group.to_owned(),
            received_at: "2025-01-02T03:04:05Z".into(),
        },
        body: id,
    };
    queue.send(&msg).await.unwrap();
}

async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// For each group, the index in `steps` of each message's start and end, by message number.
fn spans(steps: &[Step]) -> HashMap<String, Vec<(usize, usize, usize)>> {
    let mut starts: HashMap<String, usize> = HashMap::new();
    let mut out: HashMap<String, Vec<(usize, usize, usize)>> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Start(id) => {
                starts.insert(id.clone(), i);
            }
            Step::End(id) => {
                let (group, n) = id.split_once('#').unwrap();
                out.entry(group.to_owned())
                    .or_default()
                    .push((n.parse().unwrap(), starts[id], i));
            }
            Step::Failed(_) => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_workers_keep_the_order_within_each_group() {
    // GIVEN 4 workers, and 6 groups of 8 messages each, sent interleaved; the first messages of
    // g0 and g1 each wait until both have started (a single worker would never get past them)
    let handler = Scripted::new(&["g0#0", "g1#0"], &[]);
    let s = stage(handler.clone(), 4);
    let groups: Vec<String> = (0..6).map(|g| format!("g{g}")).collect();
    for n in 0..8 {
        for g in &groups {
            send(&s.queue, g, n).await;
        }
    }

    // WHEN they are all processed
    until("all 48 messages", || {
        handler.count_where(|s| matches!(s, Step::End(_))) == 48
    })
    .await;

    // THEN each message ran once, and within a group each started only after the one before
    // it ended, in the order sent
    let steps = handler.steps();
    let spans = spans(&steps);
    assert_eq!(spans.len(), 6);
    for (group, runs) in &spans {
        let order: Vec<usize> = runs.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(
            order,
            (0..8).collect::<Vec<_>>(),
            "group {group}: {steps:?}"
        );
        for pair in runs.windows(2) {
            let ((_, _, ended), (n, started, _)) = (pair[0], pair[1]);
            assert!(
                started > ended,
                "group {group}: message {n} started before the one before it ended: {steps:?}"
            );
        }
    }
    let _ = s.stop.send(true);
    s.task.await.unwrap();
}

impl Scripted {
    fn count_where(&self, f: impl Fn(&Step) -> bool) -> usize {
        self.steps().iter().filter(|s| f(s)).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_groups_progress_while_a_failing_message_holds_back_its_own_group() {
    // GIVEN groups a, b and c of 3 messages each, where a's first message fails until told not to
    let handler = Scripted::new(&[], &["a#0"]);
    let s = stage(handler.clone(), 4);
    for n in 0..3 {
        for g in ["a", "b", "c"] {
            send(&s.queue, g, n).await;
        }
    }

    // WHEN b and c are done, and a#0 has failed at least twice (it was retried, still failing)
    until("b and c done, a#0 retried", || {
        ["b#2", "c#2"].iter().all(|id| handler.ended(id))
            && handler.count(&Step::Failed("a#0".into())) >= 2
    })
    .await;

    // THEN a's later messages never started: a#0 holds its group back
    let steps = handler.steps();
    for id in ["a#1", "a#2"] {
        assert!(
            !steps.contains(&Step::Start(id.into())),
            "{id} overtook the failing a#0: {steps:?}"
        );
    }
    for g in ["b", "c"] {
        let order: Vec<usize> = spans(&steps)[g].iter().map(|(n, _, _)| *n).collect();
        assert_eq!(order, vec![0, 1, 2], "group {g}");
    }

    // AND once a#0 succeeds, a's messages follow in order
    handler.failing.lock().unwrap().clear();
    until("a done", || handler.ended("a#2")).await;
    let steps = handler.steps();
    let a = &spans(&steps)["a"];
    assert_eq!(
        a.iter().map(|(n, _, _)| *n).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(a[1].1 > a[0].2 && a[2].1 > a[1].2, "{steps:?}");
    // A message is acknowledged after its handler returns, once that commit is on disk.
    until("every message acknowledged", || {
        s.queue.depth(STAGE).unwrap() == 0
    })
    .await;
    let _ = s.stop.send(true);
    s.task.await.unwrap();
}
