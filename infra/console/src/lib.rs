//! The operator console: one place that answers "what happened to this project?". Server-rendered
//! HTML and CSS (no JavaScript anywhere) over the same event log, cross-references, sync state and
//! DLQs the `enerflo-sync-ops` CLI reads, through the same logic ([`enerflo_sync::ops`]).
//! Served by the local runner at `/` (a redirect to `/ops/`) and, in AWS, by the `ops-console`
//! function under `/ops/` of the HTTP API (`template.yaml`).
//!
//! Pages (under [`BASE`]): the overview (per stage and inbound route, the last 24 hours' and 7
//! days' events by outcome; each DLQ's depth and oldest dead letter), search by any id form, an
//! entity's timeline (both directions, newest first, with its cross-references and last synced
//! state), an event (raw body pretty-printed, every outcome it reached), the DLQ with filters, and
//! replay (one dead letter or the filtered set) with a confirmation step and a result page.
//!
//! Access: see [`auth`]. Every request is logged with its page, status and a session tag; no
//! query text, ids typed into search, or bodies (they may hold customer data).

pub mod auth;
mod pages;
pub mod tz;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use maud::Markup;

use enerflo_sync::classify::Stage;
use enerflo_sync::http::{HttpRequest, HttpResponse};
use enerflo_sync::ops::{self, Backend, Filter};
use enerflo_sync::queue::DeadLetter;
use enerflo_sync::registry::ROUTES;
use enerflo_sync::secret::SecretSet;
use enerflo_sync::store::{EntityKind, EntityLink, IdForm, IdRef, RECEIVED, SyncState, hour_of};
use enerflo_sync::sync::StateKey;
use enerflo_sync::timefmt::{now_millis, now_unix};

use auth::{Auth, OriginProblem, Session};
use tz::Zone;

/// Where the console lives, locally and in AWS.
pub const BASE: &str = "/ops";
/// The stylesheet (public: the login page needs it, and it holds nothing).
const CSS: &str = include_str!("console.css");
/// The most timeline rows an entity page shows.
const TIMELINE_LIMIT: usize = 200;
/// The most dead letters of one stage a page looks at (the overview says "at least" past it).
const DLQ_PAGE_LIMIT: usize = 1_000;
/// The most dead letters one confirmed replay may name.
pub const REPLAY_LIMIT: usize = 500;

/// How the console is reached: the scheme its pages' `Origin` must name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Behind API Gateway.
    Https,
    /// The local runner on `http://127.0.0.1`.
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Http => "http",
        }
    }
}

pub struct Console {
    backend: Backend,
    auth: Auth,
    scheme: Scheme,
}

/// What every page's layout needs.
pub(crate) struct Ctx {
    pub zone: Zone,
    pub session: Option<Session>,
    /// The page's own path and query, for links back to it.
    pub here: String,
}

impl Ctx {
    pub fn csrf(&self) -> String {
        self.session.as_ref().map(Session::csrf).unwrap_or_default()
    }
}

/// One row of the overview.
pub(crate) struct LaneRow {
    pub lane: String,
    pub label: String,
    pub inbound: bool,
    pub day: BTreeMap<String, i64>,
    pub week: BTreeMap<String, i64>,
    /// `None`: this deployment has no queue for the stage (or it is an inbound route).
    pub dlq: Option<DlqSummary>,
}

pub(crate) struct DlqSummary {
    pub depth: usize,
    /// At least `depth`: more were not looked at.
    pub more: bool,
    pub oldest: Option<DeadLetter>,
    pub error: Option<String>,
}

/// One search result: an entity found by one of its ids.
pub(crate) struct Found {
    pub reference: String,
    pub link: Option<EntityLink>,
}

/// The DLQ filters as the operator typed them (kept to fill the form again).
#[derive(Clone, Debug, Default)]
pub(crate) struct DlqQuery {
    pub stage: String,
    pub entity: String,
    pub since: String,
    pub until: String,
    pub ids: BTreeSet<String>,
}

impl DlqQuery {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            stage: get("stage"),
            entity: get("entity"),
            since: get("since"),
            until: get("until"),
            ids: pairs
                .iter()
                .filter(|(n, v)| n == "id" && !v.trim().is_empty())
                .map(|(_, v)| v.trim().to_owned())
                .collect(),
        }
    }

    /// The query string that reproduces these filters (`id`s included).
    pub fn query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("stage", &self.stage),
            ("entity", &self.entity),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        for id in &self.ids {
            q.append_pair("id", id);
        }
        q.finish()
    }

    fn filter(&self, zone: &Zone) -> Result<Filter, String> {
        let stage = match self.stage.as_str() {
            "" => None,
            s => Some(Stage::parse(s).ok_or_else(|| format!("`{s}` is not a stage"))?),
        };
        let time = |s: &str| (!s.is_empty()).then(|| zone.parse_local(s)).transpose();
        Ok(Filter {
            stage,
            since: time(&self.since)?,
            until: time(&self.until)?,
            entity: (!self.entity.is_empty()).then(|| self.entity.clone()),
            message_ids: (!self.ids.is_empty()).then(|| self.ids.clone()),
        })
    }
}

/// What a replay did, for its result page.
pub(crate) struct ReplayOutcome {
    pub replayed: Vec<DeadLetter>,
    pub failed: Vec<String>,
    pub asked: usize,
}

impl Console {
    /// A console over `backend`, opened by any of `tokens` (an empty set opens nothing).
    pub fn new(backend: Backend, tokens: SecretSet, scheme: Scheme) -> Self {
        Self {
            backend,
            auth: Auth::new(tokens),
            scheme,
        }
    }

    /// Whether `path` is the console's (the local runner sends those here).
    pub fn serves(path: &str) -> bool {
        path == BASE || path.starts_with("/ops/")
    }

    pub async fn handle(&self, req: HttpRequest) -> HttpResponse {
        let now = now_unix();
        let session = self.auth.session(&req, now);
        let zone = auth::cookie(&req, auth::TZ_COOKIE)
            .and_then(Zone::named)
            .unwrap_or_else(Zone::utc);
        let here = match &req.query {
            Some(q) => format!("{}?{q}", req.path),
            None => req.path.clone(),
        };
        let ctx = Ctx {
            zone,
            session,
            here,
        };
        let rest = req.path.strip_prefix(BASE).unwrap_or("/missing");
        let rest = if rest.is_empty() { "/" } else { rest };
        let (page, resp) = self.route(&req, rest, &ctx).await;
        tracing::info!(
            target: "ops_console",
            method = %req.method,
            page,
            status = resp.status.as_u16(),
            session = ctx.session.as_ref().map(Session::tag).unwrap_or_default(),
            "console request"
        );
        resp
    }

    async fn route(
        &self,
        req: &HttpRequest,
        rest: &str,
        ctx: &Ctx,
    ) -> (&'static str, HttpResponse) {
        let get = req.method == Method::GET || req.method == Method::HEAD;
        let post = req.method == Method::POST;
        // Public: the stylesheet and the login form.
        match (rest, get, post) {
            ("/console.css", true, _) => return ("css", css()),
            ("/login", true, _) => {
                return (
                    "login",
                    page(StatusCode::OK, pages::login(ctx, &next_of(req), None)),
                );
            }
            ("/login", _, true) => return ("login", self.login(req, ctx)),
            _ => {}
        }
        if post && let Err(problem) = auth::check_origin(req, self.scheme.as_str()) {
            let why = match problem {
                OriginProblem::Missing => {
                    "This request names no origin, so the console cannot tell it came from its own page."
                }
                OriginProblem::CrossSite => {
                    "This request came from another site. Replays and other changes are only accepted from the console's own pages."
                }
            };
            tracing::warn!(target: "ops_console", page = rest_name(rest), "cross-site or origin-less POST refused");
            return (
                rest_name(rest),
                page(StatusCode::FORBIDDEN, pages::refused(ctx, why)),
            );
        }
        let Some(session) = &ctx.session else {
            if get {
                let next = form_urlencoded::byte_serialize(ctx.here.as_bytes()).collect::<String>();
                return (
                    "login-redirect",
                    redirect(&format!("{BASE}/login?next={next}"), &[]),
                );
            }
            return (
                rest_name(rest),
                page(StatusCode::FORBIDDEN, pages::refused(ctx, "Sign in first.")),
            );
        };
        if post {
            let form = parse_form(&req.body);
            let token = field(&form, "csrf");
            if !session.csrf_ok(&token) {
                tracing::warn!(target: "ops_console", page = rest_name(rest), "POST without this session's CSRF token refused");
                return (
                    rest_name(rest),
                    page(
                        StatusCode::FORBIDDEN,
                        pages::refused(
                            ctx,
                            "This form has expired or was not issued to this session. Go back, reload the page and try again.",
                        ),
                    ),
                );
            }
            return match rest {
                "/logout" => (
                    "logout",
                    redirect(&format!("{BASE}/login"), &[auth::clear_session_cookie()]),
                ),
                "/settings" => ("settings", settings_post(&form)),
                "/dlq/replay" => ("replay", self.replay(ctx, &form).await),
                _ => (
                    "not-found",
                    page(StatusCode::NOT_FOUND, pages::not_found(ctx)),
                ),
            };
        }
        if !get {
            return (
                rest_name(rest),
                page(StatusCode::METHOD_NOT_ALLOWED, pages::not_found(ctx)),
            );
        }
        let query = parse_form(req.query.as_deref().unwrap_or("").as_bytes());
        match rest {
            "/" => ("overview", self.overview(ctx).await),
            "/search" => ("search", self.search(ctx, &field(&query, "q")).await),
            "/entity" => ("entity", self.entity(ctx, &field(&query, "ref")).await),
            "/event" => ("event", self.event(ctx, &field(&query, "key")).await),
            "/dlq" => (
                "dlq",
                self.dlq(ctx, &DlqQuery::from_pairs(&query), false).await,
            ),
            "/dlq/confirm" => (
                "replay-confirm",
                self.dlq(ctx, &DlqQuery::from_pairs(&query), true).await,
            ),
            "/settings" => (
                "settings",
                page(StatusCode::OK, pages::settings(ctx, &next_of(req))),
            ),
            _ => (
                "not-found",
                page(StatusCode::NOT_FOUND, pages::not_found(ctx)),
            ),
        }
    }

    fn login(&self, req: &HttpRequest, ctx: &Ctx) -> HttpResponse {
        if auth::check_origin(req, self.scheme.as_str()).is_err() {
            tracing::warn!(target: "ops_console", "cross-site or origin-less login refused");
            return page(
                StatusCode::FORBIDDEN,
                pages::refused(ctx, "Sign in from the console's own login page."),
            );
        }
        let form = parse_form(&req.body);
        let next = safe_next(&field(&form, "next"));
        if !self.auth.token_ok(&field(&form, "token")) {
            tracing::warn!(target: "ops_console", "login with a wrong token");
            return page(
                StatusCode::UNAUTHORIZED,
                pages::login(ctx, &next, Some("That is not the operator token.")),
            );
        }
        match self.auth.start(now_unix()) {
            Some((session, cookie)) => {
                tracing::info!(target: "ops_console", session = %session.tag(), "signed in");
                redirect(&next, &[cookie])
            }
            None => page(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::refused(ctx, "No OPS_TOKEN is configured: nobody can sign in."),
            ),
        }
    }

    async fn overview(&self, ctx: &Ctx) -> HttpResponse {
        let now = now_millis();
        let day_from = hour_of(now - 24 * 3_600_000);
        let week_from = now - 7 * 24 * 3_600_000;
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        let lanes = Stage::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str().to_owned(),
                    format!("Enerflo → CRM: {s}"),
                    false,
                    Some(*s),
                )
            })
            .chain(ROUTES.iter().map(|r| {
                (
                    enerflo_sync::http::calls::call_event(r.name),
                    format!("CRM → Enerflo: {} ({} {})", r.name, r.method, r.path),
                    true,
                    None,
                )
            }));
        for (lane, label, inbound, stage) in lanes {
            let mut day = BTreeMap::new();
            let mut week = BTreeMap::new();
            match self.backend.log.outcome_counts(&lane, week_from).await {
                Ok(hours) => {
                    for h in hours {
                        for (outcome, n) in &h.counts {
                            *week.entry(outcome.clone()).or_insert(0) += n;
                            if h.hour_ms >= day_from {
                                *day.entry(outcome.clone()).or_insert(0) += n;
                            }
                        }
                    }
                }
                Err(e) => errors.push(format!("counts of {lane}: {e}")),
            }
            let dlq = match stage {
                Some(s) if self.backend.stages.contains(&s) => Some(self.dlq_summary(s).await),
                _ => None,
            };
            rows.push(LaneRow {
                lane,
                label,
                inbound,
                day,
                week,
                dlq,
            });
        }
        page(StatusCode::OK, pages::overview(ctx, &rows, &errors))
    }

    async fn dlq_summary(&self, stage: Stage) -> DlqSummary {
        let filter = Filter {
            stage: Some(stage),
            ..Filter::default()
        };
        match ops::list_dead_letters_max(&self.backend, &filter, DLQ_PAGE_LIMIT).await {
            Ok(dead) => DlqSummary {
                depth: dead.len(),
                more: dead.len() >= DLQ_PAGE_LIMIT,
                oldest: dead
                    .iter()
                    .min_by(|a, b| a.failed_at.cmp(&b.failed_at))
                    .cloned(),
                error: None,
            },
            Err(e) => DlqSummary {
                depth: 0,
                more: false,
                oldest: None,
                error: Some(e.to_string()),
            },
        }
    }

    async fn search(&self, ctx: &Ctx, q: &str) -> HttpResponse {
        if q.trim().is_empty() {
            return page(StatusCode::OK, pages::search(ctx, q, &[], &[]));
        }
        let mut found: Vec<Found> = Vec::new();
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for reference in ops::search_refs(q) {
            let refs = match ops::entity_refs(&reference) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            let mut linked = false;
            for (kind, id) in refs {
                match self.backend.xref.resolve(kind, &id).await {
                    Ok(Some(link)) => {
                        linked = true;
                        if seen.insert((link.kind, link.key.clone())) {
                            found.push(Found {
                                reference: reference_of(&link),
                                link: Some(link),
                            });
                        }
                    }
                    Ok(None) => {}
                    Err(e) => errors.push(format!("{reference}: {e}")),
                }
            }
            // Events filed under an id no cross-reference names yet (a status event of an
            // install never synced as a project, say).
            if !linked
                && !reference.starts_with("crm:")
                && !reference.starts_with("survey:")
                && !reference.starts_with("short_code:")
            {
                let group = reference.clone();
                match self.backend.log.for_entity(&group, 1).await {
                    Ok(events)
                        if !events.is_empty()
                            && seen.insert((EntityKind::Project, group.clone())) =>
                    {
                        found.push(Found {
                            reference: group,
                            link: None,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{reference}: {e}")),
                }
            }
        }
        if found.len() == 1 && errors.is_empty() {
            let target = format!(
                "{BASE}/entity?ref={}",
                form_urlencoded::byte_serialize(found[0].reference.as_bytes()).collect::<String>()
            );
            return redirect(&target, &[]);
        }
        page(StatusCode::OK, pages::search(ctx, q, &found, &errors))
    }

    async fn entity(&self, ctx: &Ctx, reference: &str) -> HttpResponse {
        if reference.is_empty() {
            return redirect(&format!("{BASE}/search"), &[]);
        }
        let view = match ops::entity_view(&self.backend, reference, TIMELINE_LIMIT).await {
            Ok(v) => v,
            Err(e) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    pages::problem(ctx, "Entity", &e.to_string()),
                );
            }
        };
        let mut states = Vec::new();
        for scope in state_scopes(&view.links, &view.event_groups) {
            match self.backend.state.get_state(&scope).await {
                Ok(Some(state)) => states.push((scope, state)),
                Ok(None) => {}
                Err(e) => states.push((
                    scope,
                    SyncState {
                        hash: String::new(),
                        data: serde_json::json!({"error": e.to_string()}),
                        updated_at: String::new(),
                        seq: 0,
                    },
                )),
            }
        }
        page(StatusCode::OK, pages::entity(ctx, &view, &states))
    }

    async fn event(&self, ctx: &Ctx, key: &str) -> HttpResponse {
        match ops::event_show(&self.backend, key).await {
            Ok(record) => page(StatusCode::OK, pages::event(ctx, &record)),
            Err(e) => page(
                StatusCode::NOT_FOUND,
                pages::problem(ctx, "Event", &e.to_string()),
            ),
        }
    }

    async fn dlq(&self, ctx: &Ctx, q: &DlqQuery, confirm: bool) -> HttpResponse {
        let filter = match q.filter(&ctx.zone) {
            Ok(f) => f,
            Err(e) => {
                return page(
                    StatusCode::BAD_REQUEST,
                    pages::dlq(ctx, q, &self.backend.stages, &[], Some(&e)),
                );
            }
        };
        let mut dead =
            match ops::list_dead_letters_max(&self.backend, &filter, DLQ_PAGE_LIMIT).await {
                Ok(d) => d,
                Err(e) => {
                    return page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        pages::dlq(ctx, q, &self.backend.stages, &[], Some(&e.to_string())),
                    );
                }
            };
        dead.sort_by(|a, b| b.failed_at.cmp(&a.failed_at));
        if confirm {
            dead.truncate(REPLAY_LIMIT);
            page(StatusCode::OK, pages::confirm(ctx, q, &dead))
        } else {
            page(
                StatusCode::OK,
                pages::dlq(ctx, q, &self.backend.stages, &dead, None),
            )
        }
    }

    async fn replay(&self, ctx: &Ctx, form: &[(String, String)]) -> HttpResponse {
        let q = DlqQuery::from_pairs(form);
        if q.ids.is_empty() {
            return page(
                StatusCode::BAD_REQUEST,
                pages::problem(ctx, "Replay", "Nothing was chosen to replay."),
            );
        }
        if q.ids.len() > REPLAY_LIMIT {
            return page(
                StatusCode::BAD_REQUEST,
                pages::problem(
                    ctx,
                    "Replay",
                    &format!("At most {REPLAY_LIMIT} dead letters can be replayed at once."),
                ),
            );
        }
        // Exactly what was confirmed (the ids), in the stage it was shown for.
        let filter = Filter {
            stage: Stage::parse(&q.stage),
            message_ids: Some(q.ids.clone()),
            ..Filter::default()
        };
        let session = ctx.session.as_ref().map(Session::tag).unwrap_or_default();
        match ops::replay(&self.backend, &filter, false, |_, _| {}).await {
            Ok((listed, report)) => {
                let failed_ids: BTreeSet<&str> = report
                    .failed
                    .iter()
                    .filter_map(|f| f.split(':').next())
                    .collect();
                let replayed: Vec<DeadLetter> = listed
                    .into_iter()
                    .filter(|d| !failed_ids.contains(d.message_id.as_str()))
                    .collect();
                let mut ids = String::new();
                for d in &replayed {
                    let _ = write!(ids, "{} ", d.message_id);
                }
                tracing::info!(
                    target: "ops_console",
                    session,
                    asked = q.ids.len(),
                    replayed = replayed.len(),
                    failed = report.failed.len(),
                    message_ids = ids.trim_end(),
                    "dead letters replayed"
                );
                page(
                    StatusCode::OK,
                    pages::replayed(
                        ctx,
                        &ReplayOutcome {
                            replayed,
                            failed: report.failed,
                            asked: q.ids.len(),
                        },
                    ),
                )
            }
            Err(e) => {
                tracing::error!(target: "ops_console", session, error = %e, "replay failed");
                page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::problem(ctx, "Replay", &e.to_string()),
                )
            }
        }
    }
}

/// The reference an entity page is opened with for a linked entity: its install, deal,
/// customer or CRM id (in that order of preference).
pub(crate) fn reference_of(link: &EntityLink) -> String {
    let by = |form: IdForm| link.id(form);
    if let Some(v) = by(IdForm::Install) {
        return format!("install:{v}");
    }
    if let Some(v) = by(IdForm::Deal) {
        return format!("deal:{v}");
    }
    if let Some(v) = by(IdForm::CustomerId).or_else(|| by(IdForm::CustomerUuid)) {
        return format!("customer:{v}");
    }
    if let Some(v) = by(IdForm::ShortCode) {
        return format!("short_code:{v}");
    }
    if let Some(v) = link.crm_id.clone().or_else(|| by(IdForm::Crm)) {
        return format!("crm:{v}");
    }
    link.key.clone()
}

/// The sync-state scopes an entity's last synced state lives under.
fn state_scopes(links: &[EntityLink], groups: &[String]) -> Vec<String> {
    let mut scopes = BTreeSet::new();
    for link in links {
        match link.kind {
            EntityKind::Project => {
                scopes.insert(StateKey::Project(link.key.clone()).to_string());
            }
            EntityKind::Customer => {
                scopes.insert(StateKey::Lead(link.key.clone()).to_string());
            }
            EntityKind::Note => {}
        }
    }
    for group in groups {
        if let Some(install) = group.strip_prefix("install:").and_then(|i| i.parse().ok()) {
            scopes.insert(StateKey::Status(install).to_string());
            scopes.insert(StateKey::ChangeOrder(install).to_string());
        }
    }
    scopes.into_iter().collect()
}

fn settings_post(form: &[(String, String)]) -> HttpResponse {
    let name = field(form, "tz");
    let next = safe_next(&field(form, "next"));
    match Zone::named(&name) {
        Some(zone) => redirect(&next, &[auth::tz_cookie(&zone.name)]),
        None => redirect(&format!("{BASE}/settings"), &[]),
    }
}

fn rest_name(rest: &str) -> &'static str {
    match rest {
        "/dlq/replay" => "replay",
        "/logout" => "logout",
        "/settings" => "settings",
        _ => "other",
    }
}

/// `next` from the query (`/ops/...` only), else the overview.
fn next_of(req: &HttpRequest) -> String {
    safe_next(&req.query_param("next").unwrap_or_default())
}

/// A path inside the console to go back to: never another site (`//host`, `https://...`).
pub(crate) fn safe_next(next: &str) -> String {
    let ok = next.starts_with("/ops/") || next == BASE;
    if ok && !next.starts_with("//") && !next.contains('\\') && !next.contains("/login") {
        next.to_owned()
    } else {
        format!("{BASE}/")
    }
}

fn parse_form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn field(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn security_headers(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "same-origin");
}

fn page(status: StatusCode, markup: Markup) -> HttpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(&mut headers);
    HttpResponse {
        status,
        headers,
        body: Bytes::from(markup.into_string()),
    }
}

fn css() -> HttpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    security_headers(&mut headers);
    HttpResponse {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(CSS.as_bytes()),
    }
}

fn redirect(location: &str, cookies: &[String]) -> HttpResponse {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(&mut headers);
    HttpResponse {
        status: StatusCode::SEE_OTHER,
        headers,
        body: Bytes::new(),
    }
}

/// The id refs of an entity reference, for tests and pages.
pub(crate) fn id_label(id: &str) -> String {
    match IdRef::parse_key(id) {
        Some(r) => format!("{}: {}", r.form.as_str().replace('_', " "), r.value),
        None => id.to_owned(),
    }
}

/// `received` first, then the outcomes in the order an operator reads them.
pub(crate) const OUTBOUND_COLUMNS: [&str; 7] = [
    RECEIVED,
    "delivered",
    "unchanged",
    "echo",
    "retrying",
    "dead_lettered",
    "queued",
];
pub(crate) const INBOUND_COLUMNS: [&str; 7] = [
    RECEIVED,
    "created",
    "updated",
    "unchanged",
    "echo",
    "rejected",
    "failed",
];

#[cfg(test)]
mod tests;
