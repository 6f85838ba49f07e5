//! What the modules of this test binary share: the Enerflo sample payloads (the fixtures of
//! `tests/fixtures/enerflo/`) and the moto server the AWS adapters are tested against.

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The captured `deal.projectSubmitted` sample.
pub const PROJECT_SUBMITTED: &str =
    include_str!("../../../tests/fixtures/enerflo/v2-deal.projectSubmitted.json");
/// `update_install` as Enerflo sends it (a status object).
pub const UPDATE_INSTALL: &str =
    include_str!("../../../tests/fixtures/enerflo/v1-update_install.json");
/// `update_install` as Enerflo's docs show it (a status id only).
pub const UPDATE_INSTALL_DOCS: &str =
    include_str!("../../../tests/fixtures/enerflo/v1-update_install.docs-variant.json");

/// The moto endpoint (`MOTO_URL`, which `make test` exports), or `None` (skip, with a note) when it
/// is not set; in CI (`CI=true`) a missing `MOTO_URL` fails the test instead.
pub fn moto_url(test: &str) -> Option<String> {
    match std::env::var("MOTO_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "{test}: MOTO_URL is not set, and CI=true requires the moto contract tests to run (start moto_server and export MOTO_URL)"
            )
        }
        _ => {
            eprintln!(
                "note: {test} skipped: MOTO_URL is not set (`make test` starts moto and sets it)"
            );
            None
        }
    }
}

/// An AWS SDK configuration on moto (fake credentials), or `None` as [`moto_url`] says.
pub async fn moto_sdk(test: &str) -> Option<SdkConfig> {
    let url = moto_url(test)?;
    Some(
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(Region::new("us-east-1"))
            .test_credentials()
            .load()
            .await,
    )
}

/// A table or queue name no other test (or test process) uses: tests run in parallel against one
/// moto. SQS names are at most 80 characters with `-dlq.fifo`.
pub fn unique_name(test: &str) -> String {
    let test: String = test.chars().take(48).collect();
    format!(
        "{test}-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..0x00ff_ffff)
    )
}
