//! The webhook connector's signature checked by an independent implementation of the Standard
//! Webhooks scheme (Python's standard library hmac/hashlib/base64), over the exact bytes the CRM
//! received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use sync_tests::crm::crm_accepts;
use sync_tests::enerflo::finds_installs;
use sync_tests::{CRM_SECRET, fixture, start};

const VERIFY_PY: &str = r#"
import base64, hashlib, hmac, sys, time
secret, msg_id, ts, sig_header, body_path = sys.argv[1:6]
key = base64.b64decode(secret[len("whsec_"):])
body = open(body_path, "rb").read()
signed = msg_id.encode() + b"." + ts.encode() + b"." + body
expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
assert abs(time.time() - int(ts)) < 300, "timestamp outside tolerance"
ok = any(s.split(",", 1)[1] == expected for s in sig_header.split() if s.startswith("v1,"))
print("verified" if ok else "mismatch")
sys.exit(0 if ok else 1)
"#;

#[tokio::test]
async fn connector_signature_verifies_with_an_independent_implementation() {
    let h = start(&[]).await;
    finds_installs(&h.enerflo).await;
    crm_accepts(&h.crm, "crm-proj-1").await;
    assert_eq!(
        h.post_webhook(fixture("v2-deal.projectSubmitted.json"))
            .await
            .0,
        202
    );
    h.drain(Duration::from_secs(10)).await;

    let requests = h.crm.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    let header = |k: &str| {
        r.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .expect(k)
            .to_owned()
    };
    let body_path = sync_tests::temp_dir("sig").join("body.json");
    std::fs::write(&body_path, &r.body).unwrap();

    let run = |sig: &str| {
        Command::new("python3")
            .args([
                "-c",
                VERIFY_PY,
                CRM_SECRET,
                &header("webhook-id"),
                &header("webhook-timestamp"),
                sig,
            ])
            .arg(&body_path)
            .output()
            .expect("python3 runs")
    };
    let out = run(&header("webhook-signature"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "verified");
    // The same check must fail for a signature that is not ours.
    let out = run("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert!(!out.status.success());
    // And the event id is the webhook-id.
    let event: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(event["id"].as_str(), Some(header("webhook-id").as_str()));
}
