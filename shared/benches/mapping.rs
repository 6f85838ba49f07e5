//! docs/design.md 6: mapping the largest real `deal.projectSubmitted` (73 KB) to a CRM event takes under
//! 1 ms. Measured: body bytes -> typed payload in one pass (as the project stage does) -> `map_project` (hydrated with an
//! install) + `project_refs` -> `CrmEvent` -> `serde_json::to_vec`, for the ~9.5 KB fixture and for
//! a ~73 KB variant synthesized from it (more arrays in both designs, adders and files).
//!
//! Run: `cargo bench -p enerflo-sync --bench mapping -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use enerflo_sync::canonical::{CrmEvent, CrmEventType};
use enerflo_sync::enerflo::Envelope;
use enerflo_sync::enerflo::install::Install;
use enerflo_sync::enerflo::project::{ProjectBody, ProjectPayload};
use enerflo_sync::mapping::project::{map_project, project_refs};
use serde_json::{Value, json};

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/enerflo/v2-deal.projectSubmitted.json");

/// The size docs/design.md 6 names: the largest real delivery seen.
const TARGET_BYTES: usize = 73 * 1024;
/// Roof arrays, adders and files that bring the fixture to about `TARGET_BYTES` as compact JSON.
const ARRAYS: usize = 30;
const ADDERS: usize = 60;
const FILES: usize = 72;

fn install() -> Install {
    Install::from_response(&json!({
        "id": 700001,
        "customer_id": 900001,
        "survey_id": 4000001,
        "customer": {
            "id": 900001,
            "email": "pat@example.com",
            "phone": "555-0100",
            "customer_timezone": "America/Chicago",
            "lead_source": "Door Knock"
        },
        "solarData": {"system_size": 8.1, "panel_count": 20}
    }))
}

/// What the project stage produces for the CRM, as bytes on the wire.
fn crm_event_bytes(body: &[u8], install: &Install) -> Vec<u8> {
    // The project stage's path: one typed pass over the body bytes.
    let parsed = ProjectBody::parse(body).expect("body");
    let payload = parsed.payload.expect("payload");
    let project = map_project(&payload, Some(install), false);
    let event = CrmEvent {
        event_type: CrmEventType::ProjectSubmitted,
        id: "evt_00000000000000000000000000000000".to_owned(),
        occurred_at: "2025-01-01T00:00:00Z".to_owned(),
        source_event: parsed.event.unwrap_or_default(),
        crm_id: None,
        enerflo: project_refs(&payload, Some(install)),
        data: serde_json::to_value(&project).unwrap_or(Value::Null),
        raw: None,
    };
    serde_json::to_vec(&event).expect("event serialises")
}

fn cloned_with(item: &Value, i: usize, edit: impl Fn(&mut Value, usize)) -> Value {
    let mut v = item.clone();
    edit(&mut v, i);
    v
}

/// The fixture grown to `arrays` roof arrays (in both designs), `adders` adders (half system,
/// half value) and `files` deal files, as compact JSON.
fn synthesize(arrays: usize, adders: usize, files: usize) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(FIXTURE).expect("fixture is JSON");
    let pricing = "/payload/proposal/pricingOutputs";
    let first = |v: &Value, pointer: &str| v.pointer(pointer).cloned().expect(pointer);

    let array = first(&body, &format!("{pricing}/design/arrays/0"));
    let grown: Vec<Value> = (0..arrays)
        .map(|i| {
            cloned_with(&array, i, |a, i| {
                a["moduleCount"] = json!(8 + i % 17);
                a["azimuth"] = json!(90.0 + i as f64);
                a["roofPlaneIndex"] = json!(i);
            })
        })
        .collect();
    for design in [format!("{pricing}/design"), "/payload/design".to_owned()] {
        *body
            .pointer_mut(&format!("{design}/arrays"))
            .expect("arrays") = json!(grown);
    }

    for (key, share) in [
        ("calculatedSystemAdders", adders / 2),
        ("calculatedValueAdders", adders - adders / 2),
    ] {
        let adder = first(&body, &format!("{pricing}/{key}/0"));
        let grown: Vec<Value> = (0..share)
            .map(|i| {
                cloned_with(&adder, i, |a, i| {
                    a["id"] = json!(format!("00000000-0000-4000-8000-{i:012}"));
                    a["displayName"] = json!(format!("Adder {i}"));
                    a["amount"] = json!(100 * (i + 1));
                })
            })
            .collect();
        *body
            .pointer_mut(&format!("{pricing}/{key}"))
            .expect("adders") = json!(grown);
    }

    let file = first(&body, "/payload/deal/files/0");
    let grown: Vec<Value> = (0..files)
        .map(|i| {
            cloned_with(&file, i, |f, i| {
                f["id"] = json!(format!("00000000-0000-4000-9000-{i:012}"));
                f["name"] = json!(format!("document-{i}.pdf"));
                f["url"] = json!(format!(
                    "https://files.example.com/signed-url/{i}?X-Amz-Signature={i:064}"
                ));
            })
        })
        .collect();
    *body.pointer_mut("/payload/deal/files").expect("files") = json!(grown);

    serde_json::to_vec(&body).expect("serialises")
}

fn mapping_benches(c: &mut Criterion) {
    let install = install();
    let large = synthesize(ARRAYS, ADDERS, FILES);
    assert!(
        large.len().abs_diff(TARGET_BYTES) < TARGET_BYTES / 20,
        "synthesized body is {} bytes, not about {TARGET_BYTES}",
        large.len()
    );
    // The mapping reads the synthesized body as it should.
    let check: Value = serde_json::from_slice(&crm_event_bytes(&large, &install)).expect("JSON");
    let panels: usize = (0..ARRAYS).map(|i| 8 + i % 17).sum();
    assert_eq!(check["data"]["system"]["panel_count"], json!(panels));
    assert_eq!(
        check["data"]["adders"].as_array().map(Vec::len),
        Some(ADDERS)
    );
    assert_eq!(check["data"]["files"].as_array().map(Vec::len), Some(FILES));
    println!(
        "fixture body: {} bytes; synthesized body: {} bytes (target ~{TARGET_BYTES}); CRM event: {} / {} bytes",
        FIXTURE.len(),
        large.len(),
        crm_event_bytes(FIXTURE, &install).len(),
        crm_event_bytes(&large, &install).len(),
    );

    let mut group = c.benchmark_group("mapping");
    for (name, body) in [("fixture_9k", FIXTURE), ("synth_73k", large.as_slice())] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(crm_event_bytes(black_box(body), &install)));
        });
    }
    group.finish();

    // Where the time goes, on the large body.
    let envelope = Envelope::parse(&large, None).expect("envelope");
    let payload = ProjectPayload::from_record(&envelope.record);
    let project = map_project(&payload, Some(&install), false);
    let mut group = c.benchmark_group("mapping_parts_73k");
    group.bench_function("envelope_parse", |b| {
        b.iter(|| black_box(Envelope::parse(black_box(&large), None).expect("envelope")));
    });
    group.bench_function("payload_from_record", |b| {
        b.iter(|| black_box(ProjectPayload::from_record(black_box(&envelope.record))));
    });
    group.bench_function("map_project", |b| {
        b.iter(|| black_box(map_project(black_box(&payload), Some(&install), false)));
    });
    group.bench_function("project_to_event_bytes", |b| {
        b.iter(|| {
            let data = serde_json::to_value(black_box(&project)).unwrap_or(Value::Null);
            black_box(serde_json::to_vec(&data).expect("JSON"))
        });
    });
    group.finish();
}

criterion_group!(benches, mapping_benches);
criterion_main!(benches);
