//! Access to the console, handler by handler: no page or action without the token, cookie flags,
//! CSRF and origin checks on every change, and a replay that goes through only from the
//! console's own page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use enerflo_sync::queue::embedded::EmbeddedQueue;
use enerflo_sync::queue::{EventQueue, MessageMeta, QueueMessage};
use enerflo_sync::store::embedded::{EmbeddedStore, open_database};
use enerflo_sync::store::{EventLog, EventRecord, OutcomeEntry};
use http::HeaderValue;

use super::*;

const TOKEN: &str = "test-ops-token-not-a-secret-0123456789";
const HOST: &str = "127.0.0.1:8080";
const ORIGIN: &str = "http://127.0.0.1:8080";

struct Fixture {
    console: Console,
    queue: Arc<EmbeddedQueue>,
    store: Arc<EmbeddedStore>,
}

fn fixture() -> Fixture {
    let db = open_database(None).unwrap();
    let store = Arc::new(EmbeddedStore::new(db.clone()));
    let queue = Arc::new(EmbeddedQueue::new(db, [Stage::Project]));
    let backend = Backend {
        xref: store.clone(),
        log: store.clone(),
        state: store.clone(),
        queue: queue.clone(),
        dlq: queue.clone(),
        stages: vec![Stage::Project],
    };
    Fixture {
        console: Console::new(backend, SecretSet::parse(TOKEN), Scheme::Http),
        queue,
        store,
    }
}

/// One dead letter of deal d-1, recorded in the event log too; returns its DLQ message id.
async fn seed_dead_letter(f: &Fixture) -> String {
    let meta = MessageMeta {
        stage: Stage::Project,
        event: "deal.projectSubmitted".into(),
        dedupe_key: "k-dead".into(),
        group: "deal:d-1".into(),
        received_at: "2026-11-28T06:00:00Z".into(),
    };
    f.store
        .record(
            &EventRecord {
                dedupe_key: "k-dead".into(),
                event: meta.event.clone(),
                stage: Some("project".into()),
                entity: Some("deal:d-1".into()),
                received_at: meta.received_at.clone(),
                received_ms: now_millis(),
                raw_body: "{\"n\":1}".into(),
                outcome: "queued".into(),
                detail: None,
                deliveries: 1,
                attempts: 0,
                history: vec![OutcomeEntry::new("2026-11-28T06:00:00Z", "queued", None)],
            },
            3600,
        )
        .await
        .unwrap();
    f.queue
        .send(&QueueMessage {
            meta,
            body: "{\"n\":1}".into(),
        })
        .await
        .unwrap();
    let d = f
        .queue
        .receive(Stage::Project, 1, Duration::from_secs(60))
        .await
        .unwrap()
        .remove(0);
    f.queue
        .dead_letter(Stage::Project, &d, "CRM answered 400")
        .await
        .unwrap();
    f.queue.ack(Stage::Project, &d.receipt).await.unwrap();
    f.queue.dead_letters(Stage::Project).unwrap()[0]
        .message_id
        .clone()
}

fn request(method: Method, path_and_query: &str, cookie: Option<&str>, body: &str) -> HttpRequest {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path_and_query.to_owned(), None),
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static(HOST));
    if let Some(c) = cookie {
        headers.insert(header::COOKIE, HeaderValue::from_str(c).unwrap());
    }
    HttpRequest {
        method,
        path,
        query,
        headers,
        body: Bytes::from(body.to_owned()),
    }
}

fn get(path: &str, cookie: Option<&str>) -> HttpRequest {
    request(Method::GET, path, cookie, "")
}

/// A form POST as the console's own page sends it.
fn post(path: &str, cookie: Option<&str>, body: &str) -> HttpRequest {
    let mut req = request(Method::POST, path, cookie, body);
    req.headers
        .insert(header::ORIGIN, HeaderValue::from_static(ORIGIN));
    req.headers
        .insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    req
}

fn set_cookies(resp: &HttpResponse) -> Vec<String> {
    resp.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn text(resp: &HttpResponse) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

fn location(resp: &HttpResponse) -> String {
    resp.headers
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Signs in; returns the `Cookie` header value and the session's CSRF token.
async fn sign_in(f: &Fixture) -> (String, String) {
    let resp = f
        .console
        .handle(post(
            "/ops/login",
            None,
            &format!("token={TOKEN}&next=%2Fops%2Fdlq"),
        ))
        .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", text(&resp));
    let set = set_cookies(&resp).remove(0);
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = f.console.handle(get("/ops/settings", Some(&cookie))).await;
    let body = text(&page);
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page's forms carry a CSRF token")
        .to_owned();
    (cookie, csrf)
}

#[tokio::test]
async fn no_page_and_no_action_without_signing_in_with_the_token() {
    let f = fixture();
    let id = seed_dead_letter(&f).await;
    for path in [
        "/ops",
        "/ops/",
        "/ops/search?q=d-1",
        "/ops/entity?ref=deal:d-1",
        "/ops/event?key=k-dead",
        "/ops/dlq",
        &format!("/ops/dlq/confirm?stage=project&id={id}"),
        "/ops/settings",
        "/ops/no-such-page",
    ] {
        let resp = f.console.handle(get(path, None)).await;
        assert_eq!(resp.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            location(&resp).starts_with("/ops/login?next=%2Fops"),
            "{path}: {}",
            location(&resp)
        );
        assert!(resp.body.is_empty(), "{path} shows nothing");
    }
    // A cookie that is not a session is no session.
    for cookie in [
        "__Host-ops_session=forged",
        "__Host-ops_session=0123456789abcdef0123456789abcdef.99999999999.c2lnbmF0dXJl",
    ] {
        let resp = f.console.handle(get("/ops/dlq", Some(cookie))).await;
        assert_eq!(resp.status, StatusCode::SEE_OTHER, "{cookie}");
    }
    for (path, body) in [
        ("/ops/dlq/replay", format!("csrf=x&stage=project&id={id}")),
        ("/ops/logout", "csrf=x".to_owned()),
        ("/ops/settings", "csrf=x&tz=UTC".to_owned()),
    ] {
        let resp = f.console.handle(post(path, None, &body)).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        f.queue.dead_letters(Stage::Project).unwrap().len(),
        1,
        "nothing was replayed"
    );
    // The stylesheet and the login form are all that is public.
    assert_eq!(
        f.console.handle(get("/ops/console.css", None)).await.status,
        StatusCode::OK
    );
    let login = f.console.handle(get("/ops/login", None)).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(
        text(&login).contains("method=\"post\""),
        "the token is posted, never in a URL"
    );
}

#[tokio::test]
async fn signing_in_sets_a_signed_httponly_secure_strict_expiring_cookie_and_a_wrong_token_sets_none()
 {
    let f = fixture();
    let wrong = f
        .console
        .handle(post(
            "/ops/login",
            None,
            "token=not-the-token&next=%2Fops%2F",
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(set_cookies(&wrong).is_empty());

    let resp = f
        .console
        .handle(post(
            "/ops/login",
            None,
            &format!("token={TOKEN}&next=%2Fops%2Fdlq"),
        ))
        .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/ops/dlq");
    assert!(!location(&resp).contains(TOKEN));
    let cookie = set_cookies(&resp).remove(0);
    assert!(cookie.starts_with("__Host-ops_session="), "{cookie}");
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        &format!("Max-Age={}", auth::SESSION_SECS),
    ] {
        assert!(
            cookie.split("; ").any(|part| part == flag),
            "{flag} missing: {cookie}"
        );
    }
    assert!(!cookie.contains(TOKEN), "the cookie is not the token");
    let value = cookie.split(';').next().unwrap();
    // Signed: any change to it is no session.
    let tampered = format!("{}x", value);
    assert_eq!(
        f.console
            .handle(get("/ops/dlq", Some(&tampered)))
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    // Expires inside its signed value too: an old cookie resent is no session.
    let expires: i64 = value.split('.').nth(1).unwrap().parse().unwrap();
    assert!(
        f.console
            .auth
            .session(&get("/ops/", Some(value)), expires)
            .is_none()
    );
    assert!(
        f.console
            .auth
            .session(&get("/ops/", Some(value)), expires - 1)
            .is_some()
    );
    // And it works.
    let page = f.console.handle(get("/ops/dlq", Some(value))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers.get("content-security-policy").is_some());
    assert_eq!(page.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
}

#[tokio::test]
async fn a_replay_from_another_site_or_without_this_sessions_csrf_token_is_refused_and_moves_nothing()
 {
    let f = fixture();
    let id = seed_dead_letter(&f).await;
    let (cookie, csrf) = sign_in(&f).await;
    let (_, other_csrf) = sign_in(&f).await;
    let body = format!("csrf={csrf}&stage=project&id={id}");

    let mut cross_origin = post("/ops/dlq/replay", Some(&cookie), &body);
    cross_origin.headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    cross_origin
        .headers
        .insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    let mut no_origin = post("/ops/dlq/replay", Some(&cookie), &body);
    no_origin.headers.remove(header::ORIGIN);
    no_origin.headers.remove("sec-fetch-site");
    let mut same_site_other_origin = post("/ops/dlq/replay", Some(&cookie), &body);
    same_site_other_origin.headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("http://127.0.0.1:9999"),
    );
    let mut fetch_site_says_cross = post("/ops/dlq/replay", Some(&cookie), &body);
    fetch_site_says_cross
        .headers
        .insert("sec-fetch-site", HeaderValue::from_static("same-site"));
    let wrong_csrf = post(
        "/ops/dlq/replay",
        Some(&cookie),
        &format!("csrf=forged&stage=project&id={id}"),
    );
    let other_sessions_csrf = post(
        "/ops/dlq/replay",
        Some(&cookie),
        &format!("csrf={other_csrf}&stage=project&id={id}"),
    );
    let no_csrf = post(
        "/ops/dlq/replay",
        Some(&cookie),
        &format!("stage=project&id={id}"),
    );
    for (what, req) in [
        ("cross-site Origin", cross_origin),
        ("no Origin", no_origin),
        ("another origin on the same host", same_site_other_origin),
        ("Sec-Fetch-Site same-site", fetch_site_says_cross),
        ("a forged CSRF token", wrong_csrf),
        ("another session's CSRF token", other_sessions_csrf),
        ("no CSRF token", no_csrf),
    ] {
        let resp = f.console.handle(req).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{what}");
        assert_eq!(
            f.queue.dead_letters(Stage::Project).unwrap().len(),
            1,
            "{what}: nothing replayed"
        );
    }

    // From the console's own confirmation page it goes through.
    let confirm = f
        .console
        .handle(get(
            &format!("/ops/dlq/confirm?stage=project&id={id}"),
            Some(&cookie),
        ))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(text(&confirm).contains(&format!("name=\"id\" value=\"{id}\"")));
    assert_eq!(
        f.queue.dead_letters(Stage::Project).unwrap().len(),
        1,
        "confirming changes nothing"
    );
    let resp = f
        .console
        .handle(post("/ops/dlq/replay", Some(&cookie), &body))
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", text(&resp));
    assert!(
        text(&resp).contains("Replayed <strong>1</strong> of 1"),
        "{}",
        text(&resp)
    );
    assert!(f.queue.dead_letters(Stage::Project).unwrap().is_empty());
    let back = f
        .queue
        .receive(Stage::Project, 10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].meta.as_ref().unwrap().log_key(), "k-dead");
}

#[tokio::test]
async fn signing_in_from_another_site_is_refused() {
    let f = fixture();
    let mut req = post("/ops/login", None, &format!("token={TOKEN}"));
    req.headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    let resp = f.console.handle(req).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(set_cookies(&resp).is_empty());
}

#[tokio::test]
async fn signing_out_ends_the_cookie_and_next_never_leaves_the_console() {
    let f = fixture();
    let (cookie, csrf) = sign_in(&f).await;
    let resp = f
        .console
        .handle(post("/ops/logout", Some(&cookie), &format!("csrf={csrf}")))
        .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    let cleared = set_cookies(&resp).remove(0);
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    for next in [
        "//evil.example/ops/",
        "https://evil.example",
        "/ops\\@evil",
        "/elsewhere",
    ] {
        assert_eq!(safe_next(next), "/ops/", "{next}");
    }
    assert_eq!(
        safe_next("/ops/dlq?stage=project"),
        "/ops/dlq?stage=project"
    );
}

#[tokio::test]
async fn the_time_zone_is_a_cookie_and_times_show_in_it() {
    let f = fixture();
    seed_dead_letter(&f).await;
    let (cookie, csrf) = sign_in(&f).await;
    let resp = f
        .console
        .handle(post(
            "/ops/settings",
            Some(&cookie),
            &format!("csrf={csrf}&tz=America%2FDenver&next=%2Fops%2Fevent%3Fkey%3Dk-dead"),
        ))
        .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/ops/event?key=k-dead");
    let tz = set_cookies(&resp).remove(0);
    assert!(tz.starts_with("__Host-ops_tz=America/Denver;"), "{tz}");
    assert!(
        tz.contains("SameSite=Strict") && tz.contains("Secure"),
        "{tz}"
    );
    let both = format!("{cookie}; {}", tz.split(';').next().unwrap());
    let page = text(
        &f.console
            .handle(get("/ops/event?key=k-dead", Some(&both)))
            .await,
    );
    assert!(
        page.contains("2026-11-27 23:00:00 MST"),
        "history in Denver time: {page}"
    );
    assert!(page.contains("Times in America/Denver"));
}

#[tokio::test]
async fn a_single_search_hit_opens_its_timeline_and_the_event_page_shows_every_outcome() {
    let f = fixture();
    seed_dead_letter(&f).await;
    f.store
        .set_outcome("k-dead", "dead_lettered", Some("CRM answered 400"))
        .await
        .unwrap();
    let (cookie, _) = sign_in(&f).await;
    let resp = f
        .console
        .handle(get("/ops/search?q=deal%3Ad-1", Some(&cookie)))
        .await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", text(&resp));
    assert_eq!(location(&resp), "/ops/entity?ref=deal%3Ad-1");
    let timeline = text(&f.console.handle(get(&location(&resp), Some(&cookie))).await);
    assert!(timeline.contains("deal.projectSubmitted"), "{timeline}");
    assert!(
        timeline.contains("dead lettered"),
        "outcome as text: {timeline}"
    );
    let event = text(
        &f.console
            .handle(get("/ops/event?key=k-dead", Some(&cookie)))
            .await,
    );
    assert!(event.contains("CRM answered 400"));
    assert!(
        event.contains("&quot;n&quot;: 1") || event.contains("\"n\": 1"),
        "{event}"
    );
}
