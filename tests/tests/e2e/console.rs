//! The operator console in a real browser: headless Debian Chromium driven through chromedriver
//! by fantoccini (a Rust WebDriver client, built without TLS: it only talks to chromedriver on
//! 127.0.0.1), against a local runner with its Enerflo sandbox and a wiremock CRM.
//!
//! Why Rust and not Python's selenium: the test reuses this crate's harness (runner in process,
//! the CRM mock it steers from failing to answering), adds no pip packages or driver manager to
//! CI, and the WebDriver client is a handful of small crates on top of the hyper already built.
//!
//! It signs in, finds an install by its bare id, reads its timeline after a status round trip
//! (CRM -> Enerflo -> the echo coming back), replays a dead-lettered status change through the
//! confirmation step and sees it delivered; on every page it checks that each input has a label
//! and that every internal link answers. Screenshots of each page go to
//! `target/console-screenshots/` (kept as CI artifacts).
//!
//! Needs `chromium` and `chromedriver` (`apt-get install chromium chromium-driver`, which
//! `.ci/run` does). Without them it is skipped with a note, except with `CI=true`, where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sync_tests::{Harness, start_with_sandbox};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

const INSTALL: u64 = 700001;

/// `chromium` and `chromedriver`, from `CHROME` / `CHROMEDRIVER` or `PATH`.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, names: &[&str]| -> Option<PathBuf> {
        if let Ok(p) = std::env::var(var)
            && Path::new(&p).is_file()
        {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var("PATH").unwrap_or_default();
        names.iter().find_map(|n| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(n))
                .find(|p| p.is_file())
        })
    };
    Some((
        find("CHROME", &["chromium", "chromium-browser", "google-chrome"])?,
        find("CHROMEDRIVER", &["chromedriver"])?,
    ))
}

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(chromedriver: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Ready when its status endpoint says so.
    let http = enerflo_sync::wire::client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["value"]["ready"] == true
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn browser_session(driver: &Driver, chromium: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1366,900", "--lang=en-US"],
        }
    });
    let caps = caps.as_object().unwrap().clone();
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The page's own checks: every input has a label, and every internal link (anchors, GET forms,
/// the stylesheet) answers 200 or redirects inside the console when fetched with this session.
async fn check_page(c: &Client, h: &Harness, checked: &mut BTreeSet<String>) {
    let found = c
        .execute(
            r#"
            const unlabelled = [];
            for (const el of document.querySelectorAll('input, select, textarea')) {
              if (el.type === 'hidden') continue;
              if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) unlabelled.push(el.outerHTML);
            }
            const links = [...document.querySelectorAll('a[href]')].map(a => a.href)
              .concat([...document.querySelectorAll('link[href]')].map(l => l.href))
              .concat([...document.querySelectorAll('form')]
                .filter(f => (f.getAttribute('method') || 'get').toLowerCase() === 'get')
                .map(f => f.action));
            const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
            const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
            return {unlabelled, links, dupes, title: document.title};
            "#,
            vec![],
        )
        .await
        .expect("page checks run");
    let page = found["title"].as_str().unwrap_or("?").to_owned();
    assert_eq!(
        found["unlabelled"],
        json!([]),
        "{page}: inputs without a label"
    );
    assert_eq!(found["dupes"], json!([]), "{page}: duplicate ids");
    let cookies = c
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|k| format!("{}={}", k.name(), k.value()))
        .collect::<Vec<_>>()
        .join("; ");
    let origin = h.runner.url("");
    let http = enerflo_sync::wire::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for link in found["links"].as_array().unwrap() {
        let link = link.as_str().unwrap().split('#').next().unwrap().to_owned();
        if !link.starts_with(&origin) || !checked.insert(link.clone()) {
            continue;
        }
        let resp = http
            .get(&link)
            .header("cookie", &cookies)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(
            status == 200 || (status == 303 && location.starts_with("/ops/")),
            "{page}: broken internal link {link} -> {status} {location}"
        );
    }
}

/// Clicks what `locator` finds and waits until the page that follows is shown: its `<h1>`
/// starts with `heading` (a click returns before the navigation it starts has finished).
async fn click_to(c: &Client, locator: Locator<'_>, heading: &str) {
    c.find(locator).await.unwrap().click().await.unwrap();
    wait_heading(c, heading).await;
}

async fn wait_heading(c: &Client, heading: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(h1) = c.find(Locator::Css("h1")).await
            && let Ok(t) = h1.text().await
            && t.starts_with(heading)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no page headed {heading:?} came: {}",
            text(c).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for(h: &Harness, event: &str, outcome: &str) {
    assert!(
        h.wait_for_event_outcome(
            &format!("install:{INSTALL}"),
            event,
            outcome,
            Duration::from_secs(20)
        )
        .await,
        "{event} never reached {outcome}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_an_install_reads_its_two_way_timeline_and_replays_a_dead_letter_to_delivery()
 {
    let Some((chromium, chromedriver)) = browser() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "CI=true: chromium and chromedriver are required for the console's browser test (.ci/run installs chromium and chromium-driver)"
            );
        }
        eprintln!(
            "note: console browser test skipped: chromium or chromedriver not found (apt-get install chromium chromium-driver)"
        );
        return;
    };

    // GIVEN a runner whose CRM refuses the first "Completed" status change (a permanent 400:
    // dead-lettered at once) and accepts everything else
    let h = start_with_sandbox(&[]).await;
    Mock::given(method("POST"))
        .and(path("/crm/events"))
        .and(body_string_contains("Completed"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({"error": "no such pipeline stage"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.crm)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"crm_id": "crm-proj-77"})))
        .with_priority(5)
        .mount(&h.crm)
        .await;
    // ... a status round trip: the CRM sets On Hold, the sandbox fires update_install back
    let (status, body) = h
        .crm_put(
            &format!("/crm/installs/enerflo:{INSTALL}/status"),
            json!({"status": "On Hold"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for(&h, "update_install", "echo").await;
    // ... and a status change made in Enerflo that the CRM refuses
    let completed = json!({"webhook_event": "update_install", "id": INSTALL,
        "status": {"id": 6, "name": "Completed"},
        "timestamps": {"updated_at": "2025-04-02 10:00:00", "timezone": "UTC"}});
    assert_eq!(h.post_webhook(completed.to_string()).await.0, 202);
    wait_for(&h, "update_install", "dead_lettered").await;

    let driver = start_driver(&chromedriver).await;
    let c = browser_session(&driver, &chromium).await;
    let mut checked = BTreeSet::new();

    // WHEN the operator opens the runner's root: the console asks for the token
    c.goto(&h.runner.url("/")).await.unwrap();
    wait_heading(&c, "Sign in").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/ops/login")
    );
    shoot(&c, "01-login").await;
    check_page(&c, &h, &mut checked).await;
    let field = c.find(Locator::Id("token")).await.unwrap();
    field.send_keys("not the token").await.unwrap();
    c.find(Locator::Css("form.card button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let refused = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("p.error"))
        .await
        .expect("the wrong token is refused");
    assert_eq!(
        refused.text().await.unwrap(),
        "That is not the operator token."
    );
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&h.runner.ops_token)
        .await
        .unwrap();
    click_to(&c, Locator::Css("form.card button"), "Overview").await;

    // THEN the overview: per stage counts, the DLQ with its oldest dead letter
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/ops/",
        "{}",
        text(&c).await
    );
    let overview = text(&c).await;
    assert!(overview.contains("Enerflo → CRM: status"), "{overview}");
    assert!(
        overview.contains("oldest"),
        "the status DLQ's oldest entry: {overview}"
    );
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name() == "__Host-ops_session")
        .expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(
        session.same_site().map(|s| s.to_string()),
        Some("Strict".to_owned())
    );
    assert!(
        !c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains(&h.runner.ops_token),
        "no token in a URL"
    );
    shoot(&c, "02-overview").await;
    check_page(&c, &h, &mut checked).await;

    // WHEN they search the install by its bare id
    c.find(Locator::Id("nav-q"))
        .await
        .unwrap()
        .send_keys(&INSTALL.to_string())
        .await
        .unwrap();
    click_to(&c, Locator::Css("form.search button"), "Entity").await;

    // THEN its timeline, newest first: the dead-lettered change, the echo, and the CRM's call
    assert_eq!(c.current_url().await.unwrap().path(), "/ops/entity");
    let timeline = text(&c).await;
    let dead_at = timeline.find("dead lettered").expect("the dead letter");
    let echo_at = timeline.find("echo").expect("the suppressed echo");
    let call_at = timeline.find("crm.status").expect("the CRM's status call");
    assert!(
        dead_at < echo_at && echo_at < call_at,
        "newest first: {timeline}"
    );
    assert!(timeline.contains("CRM → Enerflo") && timeline.contains("Enerflo → CRM"));
    assert!(
        timeline.contains("updated"),
        "the inbound call's outcome: {timeline}"
    );
    assert!(
        timeline.contains("rejected the event with 400"),
        "{timeline}"
    );
    shoot(&c, "03-entity").await;
    check_page(&c, &h, &mut checked).await;
    c.set_window_size(390, 844).await.unwrap();
    shoot(&c, "03-entity-phone").await;
    c.set_window_size(1366, 900).await.unwrap();

    // ... the event page: the raw body pretty-printed and every outcome it reached
    click_to(&c, Locator::LinkText("update_install"), "Event").await;
    let event = text(&c).await;
    assert!(
        event.contains("\"name\": \"Completed\""),
        "pretty-printed: {event}"
    );
    assert!(
        event.contains("queued") && event.contains("dead lettered"),
        "{event}"
    );
    shoot(&c, "04-event").await;
    check_page(&c, &h, &mut checked).await;

    // WHEN they replay it from the DLQ, confirming first
    c.goto(&h.runner.url("/ops/dlq?stage=status"))
        .await
        .unwrap();
    assert!(text(&c).await.contains("1 dead letter(s)"));
    shoot(&c, "05-dlq").await;
    check_page(&c, &h, &mut checked).await;
    click_to(&c, Locator::LinkText("Replay…"), "Replay: confirm").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/ops/dlq/confirm");
    assert_eq!(
        h.runner
            .queue
            .dead_letters(enerflo_sync::classify::Stage::Status)
            .unwrap()
            .len(),
        1,
        "confirming changes nothing"
    );
    shoot(&c, "06-confirm").await;
    check_page(&c, &h, &mut checked).await;
    click_to(&c, Locator::Css("button.danger"), "Replay: result").await;
    let result = text(&c).await;
    assert!(result.contains("Replayed 1 of 1"), "{result}");
    shoot(&c, "07-replayed").await;
    check_page(&c, &h, &mut checked).await;

    // THEN it is delivered, and the timeline says so
    wait_for(&h, "update_install", "delivered").await;
    click_to(
        &c,
        Locator::LinkText(&format!("install:{INSTALL}")),
        "Entity",
    )
    .await;
    let after = text(&c).await;
    assert!(after.contains("delivered"), "{after}");
    assert!(
        !after.contains("dead lettered"),
        "its outcome moved on: {after}"
    );
    assert!(
        after.contains("CRM answered 200"),
        "the CRM's answer: {after}"
    );
    shoot(&c, "08-entity-delivered").await;
    let sent = h
        .crm_events()
        .await
        .into_iter()
        .filter(|e| e["data"]["status"]["name"] == "Completed")
        .count();
    assert_eq!(sent, 2, "refused once, then delivered once by the replay");

    // ... and times follow the operator's zone, chosen without JavaScript
    click_to(
        &c,
        Locator::Css("header nav a[href^='/ops/settings']"),
        "Time zone",
    )
    .await;
    shoot(&c, "09-settings").await;
    check_page(&c, &h, &mut checked).await;
    c.find(Locator::Css("#tz option[value='America/Denver']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click_to(&c, Locator::Css("form.card button"), "Entity").await;
    let local = text(&c).await;
    assert!(local.contains("Times in America/Denver"), "{local}");
    assert!(local.contains(" MST") || local.contains(" MDT"), "{local}");
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/ops/entity",
        "back where they were"
    );

    // ... and a search that finds nothing says so
    c.goto(&h.runner.url("/ops/search?q=no-such-project"))
        .await
        .unwrap();
    assert!(text(&c).await.contains("Nothing is known by"));
    shoot(&c, "10-search").await;
    check_page(&c, &h, &mut checked).await;

    assert!(checked.len() >= 10, "internal links checked: {checked:?}");
    c.close().await.unwrap();
}
