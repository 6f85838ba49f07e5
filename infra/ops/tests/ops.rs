//! The operator tool's operations against both backends: the embedded store and queue of the
//! local runner, and DynamoDB + SQS on moto.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_config::{BehaviorVersion, Region};
use enerflo_sync::classify::Stage;
use enerflo_sync::queue::embedded::EmbeddedQueue;
use enerflo_sync::queue::sqs::{SqsEventQueue, create_queues};
use enerflo_sync::queue::{Delivery, EventQueue, MessageMeta, QueueMessage};
use enerflo_sync::store::dynamo::{DynamoStore, create_table};
use enerflo_sync::store::embedded::{EmbeddedStore, open_database};
use enerflo_sync::store::{EntityKind, EventRecord, IdForm, IdRef};
use enerflo_sync_ops::{
    Backend, Filter, entity_report, event_rerun, list_dead_letters, parse_time, replay,
};

fn meta(group: &str, key: &str) -> MessageMeta {
    MessageMeta {
        stage: Stage::Project,
        event: "deal.projectSubmitted".into(),
        dedupe_key: key.into(),
        group: group.into(),
        received_at: "2026-11-28T06:00:00Z".into(),
    }
}

fn record(key: &str, entity: &str, body: &str) -> EventRecord {
    EventRecord {
        dedupe_key: key.into(),
        event: "deal.projectSubmitted".into(),
        stage: Some("project".into()),
        entity: Some(entity.into()),
        received_at: "2026-11-28T06:00:00Z".into(),
        received_ms: 1_764_309_600_000,
        raw_body: body.into(),
        outcome: "dead_lettered".into(),
        detail: None,
        deliveries: 1,
        attempts: 3,
        history: Vec::new(),
    }
}

/// Puts two messages (two entities) in the project DLQ via the normal dead-letter path.
async fn seed_dead_letters(
    queue: &dyn EventQueue,
    receive: impl AsyncFn() -> Vec<Delivery>,
    ack: impl AsyncFn(String),
) {
    for (group, key) in [("deal:d-1", "k1"), ("deal:d-2", "k2")] {
        queue
            .send(&QueueMessage {
                meta: meta(group, key),
                body: format!("{{\"n\":\"{key}\"}}"),
            })
            .await
            .unwrap();
    }
    let mut dead = 0;
    for _ in 0..10 {
        for d in receive().await {
            queue
                .dead_letter(Stage::Project, &d, "CRM unavailable: HTTP 500")
                .await
                .unwrap();
            ack(d.receipt.clone()).await;
            dead += 1;
        }
        if dead == 2 {
            break;
        }
    }
    assert_eq!(dead, 2);
}

async fn contract(backend: &Backend, received: impl AsyncFn() -> Vec<Delivery>) {
    // list shows both with their reason
    let all = list_dead_letters(backend, &Filter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|d| d.reason == "CRM unavailable: HTTP 500"));

    // a time range that excludes them selects nothing
    let future = Filter {
        since: Some(parse_time("2999-01-01T00:00:00Z").unwrap()),
        ..Filter::default()
    };
    let (none, report) = replay(backend, &future, false, |_, _| {}).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(report.replayed, 0);

    // replay by entity moves exactly that one back, with a replay mark and the same log key
    let only_d1 = Filter {
        entity: Some("deal:d-1".into()),
        stage: Some(Stage::Project),
        ..Filter::default()
    };
    let mut progress = Vec::new();
    let (listed, report) = replay(backend, &only_d1, false, |done, total| {
        progress.push((done, total))
    })
    .await
    .unwrap();
    assert_eq!(
        (listed.len(), report.replayed, report.failed.len()),
        (1, 1, 0)
    );
    assert_eq!(progress, vec![(1, 1)]);
    let back = received().await;
    assert_eq!(back.len(), 1);
    let m = back[0].meta.as_ref().unwrap();
    assert_eq!(m.group, "deal:d-1");
    assert_eq!(m.log_key(), "k1");
    assert_ne!(m.dedupe_key, "k1");
    assert_eq!(back[0].body, "{\"n\":\"k1\"}");

    // the other stays in the DLQ; a dry run changes nothing
    let (listed, _) = replay(backend, &Filter::default(), true, |_, _| {})
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        list_dead_letters(backend, &Filter::default())
            .await
            .unwrap()
            .len(),
        1
    );

    // a confirmed set: exactly the message ids named are replayed, an unknown one matches nothing
    let chosen = |id: &str| Filter {
        message_ids: Some(BTreeSet::from([id.to_owned()])),
        ..Filter::default()
    };
    let (none, report) = replay(backend, &chosen("no-such-message"), false, |_, _| {})
        .await
        .unwrap();
    assert_eq!((none.len(), report.replayed), (0, 0));
    let (replayed, report) = replay(backend, &chosen(&listed[0].message_id), false, |_, _| {})
        .await
        .unwrap();
    assert_eq!((replayed.len(), report.replayed), (1, 1));
    assert_eq!(received().await.len(), 1, "back on its queue");
    assert!(
        list_dead_letters(backend, &Filter::default())
            .await
            .unwrap()
            .is_empty()
    );

    // entity report: cross-references and the event log
    backend
        .xref
        .link(
            EntityKind::Project,
            &[
                IdRef::new(IdForm::Deal, "d-9"),
                IdRef::new(IdForm::Install, 9),
            ],
        )
        .await
        .unwrap();
    backend
        .log
        .record(&record("k9", "install:9", "{\"raw\":true}"), 3600)
        .await
        .unwrap();
    let report = entity_report(backend, "deal:d-9", 10).await.unwrap();
    assert_eq!(report["links"][0]["key"], "deal:d-9");
    assert_eq!(report["events"][0]["dedupe_key"], "k9");

    // rerun one event from the log: the raw body goes back to its stage queue
    let meta = event_rerun(backend, "k9").await.unwrap();
    assert_eq!(meta.log_key(), "k9");
    let again = received().await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, "{\"raw\":true}");
    assert!(event_rerun(backend, "missing").await.is_err());
}

#[tokio::test]
async fn dlq_list_replay_entity_and_rerun_work_on_the_local_runner_state() {
    let dir = std::env::temp_dir().join(format!(
        "ops-test-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    let db = open_database(Some(&dir)).unwrap();
    let store = Arc::new(EmbeddedStore::new(db.clone()));
    let queue = Arc::new(EmbeddedQueue::new(db, [Stage::Project]));
    let backend = Backend {
        xref: store.clone(),
        log: store.clone(),
        state: store,
        queue: queue.clone(),
        dlq: queue.clone(),
        stages: vec![Stage::Project],
    };
    let (q, qa) = (queue.clone(), queue.clone());
    seed_dead_letters(
        queue.as_ref(),
        async move || {
            q.receive(Stage::Project, 10, std::time::Duration::from_secs(60))
                .unwrap()
        },
        async move |r: String| qa.ack(Stage::Project, &r).unwrap(),
    )
    .await;
    let q2 = queue.clone();
    contract(&backend, async move || {
        let got = q2
            .receive(Stage::Project, 10, std::time::Duration::from_secs(60))
            .unwrap();
        for d in &got {
            q2.ack(Stage::Project, &d.receipt).unwrap();
        }
        got
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn dlq_list_replay_entity_and_rerun_work_on_dynamodb_and_sqs() {
    let Ok(url) = std::env::var("MOTO_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MOTO_URL must be set in CI (make test starts moto)"
        );
        eprintln!("MOTO_URL unset: skipping the AWS backend test");
        return;
    };
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&url)
        .region(Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await;
    let suffix = format!("{}-{}", std::process::id(), fastrand_suffix() % 1_000_000);
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let table = format!("ops-{suffix}");
    create_table(&ddb, &table).await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let urls = create_queues(&sqs, &format!("ops-{suffix}")).await.unwrap();
    let store = Arc::new(DynamoStore::new(ddb, table));
    let queue = Arc::new(SqsEventQueue::new(
        sqs,
        BTreeMap::from([(Stage::Project, urls)]),
    ));
    let backend = Backend {
        xref: store.clone(),
        log: store.clone(),
        state: store,
        queue: queue.clone(),
        dlq: queue.clone(),
        stages: vec![Stage::Project],
    };
    let (q, qa) = (queue.clone(), queue.clone());
    seed_dead_letters(
        queue.as_ref(),
        async move || q.receive(Stage::Project, 10, 1, 60).await.unwrap(),
        async move |r: String| qa.ack(Stage::Project, &r).await.unwrap(),
    )
    .await;
    let q2 = queue.clone();
    contract(&backend, async move || {
        let got = q2.receive(Stage::Project, 10, 1, 60).await.unwrap();
        for d in &got {
            q2.ack(Stage::Project, &d.receipt).await.unwrap();
        }
        got
    })
    .await;
}
