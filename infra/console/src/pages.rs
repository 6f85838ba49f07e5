//! The console's pages (maud: HTML written as Rust, every value escaped). No JavaScript: forms,
//! links and `<details>` do everything. Every input has a `<label>`; every outcome is shown as
//! a coloured badge that also carries its name and a symbol, never colour alone.

use maud::{DOCTYPE, Markup, html};

use enerflo_sync::classify::Stage;
use enerflo_sync::ops::EntityView;
use enerflo_sync::queue::DeadLetter;
use enerflo_sync::store::{EventRecord, INBOUND_EVENT_PREFIX, RECEIVED, SyncState};

use crate::{
    BASE, Ctx, DlqQuery, Found, INBOUND_COLUMNS, LaneRow, OUTBOUND_COLUMNS, REPLAY_LIMIT,
    ReplayOutcome, id_label,
};

/// Bodies and details longer than this are folded.
const FOLD_BYTES: usize = 600;
const FOLD_LINES: usize = 12;

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn entity_href(reference: &str) -> String {
    format!("{BASE}/entity?ref={}", enc(reference))
}

fn event_href(key: &str) -> String {
    format!("{BASE}/event?key={}", enc(key))
}

fn layout(ctx: &Ctx, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · Enerflo ↔ CRM sync console" }
                link rel="stylesheet" href={ (BASE) "/console.css" };
            }
            body {
                header.top {
                    a.brand href={ (BASE) "/" } { "Enerflo ↔ CRM sync" }
                    @if ctx.session.is_some() {
                        nav aria-label="Console" {
                            a href={ (BASE) "/" } { "Overview" }
                            a href={ (BASE) "/dlq" } { "Dead letters" }
                            a href={ (BASE) "/settings?next=" (enc(&ctx.here)) } { "Time zone: " (ctx.zone.name) }
                        }
                        form.search action={ (BASE) "/search" } method="get" role="search" {
                            label for="nav-q" { "Find" }
                            input #nav-q type="search" name="q" placeholder="deal, install, customer, short code or CRM id";
                            button type="submit" { "Search" }
                        }
                        form.logout action={ (BASE) "/logout" } method="post" {
                            input type="hidden" name="csrf" value=(ctx.csrf());
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                footer {
                    "Times in " (ctx.zone.name) ". Read-only, except replays, which ask first."
                }
            }
        }
    }
}

/// The badge class, symbol and words for an outcome.
fn outcome_style(outcome: &str) -> (&'static str, &'static str) {
    match outcome {
        "delivered" | "created" | "updated" | "linked" | "accepted" => ("ok", "✓"),
        "unchanged" | "echo" | "duplicate" | "ignored" | "stale" | "incomplete"
        | "no_completion" => ("quiet", "="),
        "queued" | "retrying" | "parked" => ("wait", "↻"),
        "dead_lettered" | "rejected" | "failed" | "enqueue_failed" => ("bad", "✗"),
        _ => ("quiet", "•"),
    }
}

pub(crate) fn badge(outcome: &str) -> Markup {
    let (class, symbol) = outcome_style(outcome);
    html! {
        span class={ "badge " (class) } {
            span aria-hidden="true" { (symbol) } " " (outcome.replace('_', " "))
        }
    }
}

/// Text shown whole when short, folded in `<details>` (its first line as the summary) when long.
fn folded(text: &str) -> Markup {
    let long = text.len() > FOLD_BYTES || text.lines().count() > FOLD_LINES;
    if !long {
        return html! { span.detail { (text) } };
    }
    let first: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(100)
        .collect();
    html! {
        details.fold {
            summary { (first) "… (" (text.len()) " bytes)" }
            pre { (text) }
        }
    }
}

fn pretty(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| body.to_owned()),
        Err(_) => body.to_owned(),
    }
}

fn direction(event: &str) -> &'static str {
    if event.starts_with(INBOUND_EVENT_PREFIX) {
        "CRM → Enerflo"
    } else {
        "Enerflo → CRM"
    }
}

pub(crate) fn login(ctx: &Ctx, next: &str, error: Option<&str>) -> Markup {
    layout(
        ctx,
        "Sign in",
        html! {
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form.card action={ (BASE) "/login" } method="post" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Operator token (OPS_TOKEN)" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
            p.hint { "The token is never put in a link. A session lasts 8 hours." }
        },
    )
}

pub(crate) fn refused(ctx: &Ctx, why: &str) -> Markup {
    layout(
        ctx,
        "Refused",
        html! {
            p.error role="alert" { (why) }
            p { a href={ (BASE) "/" } { "Back to the overview" } }
        },
    )
}

pub(crate) fn not_found(ctx: &Ctx) -> Markup {
    layout(
        ctx,
        "Not found",
        html! { p { "No such page. " a href={ (BASE) "/" } { "Back to the overview" } } },
    )
}

pub(crate) fn problem(ctx: &Ctx, title: &str, message: &str) -> Markup {
    layout(
        ctx,
        title,
        html! {
            p.error role="alert" { (message) }
            p { a href={ (BASE) "/search" } { "Search again" } }
        },
    )
}

fn count_cell(counts: &std::collections::BTreeMap<String, i64>, outcome: &str) -> Markup {
    let n = counts.get(outcome).copied().unwrap_or(0).max(0);
    html! { td.num data-label=(outcome.replace('_', " ")) { (n) } }
}

fn other_count(counts: &std::collections::BTreeMap<String, i64>, shown: &[&str]) -> i64 {
    counts
        .iter()
        .filter(|(k, _)| !shown.contains(&k.as_str()))
        .map(|(_, n)| (*n).max(0))
        .sum()
}

pub(crate) fn overview(ctx: &Ctx, rows: &[LaneRow], errors: &[String]) -> Markup {
    let section = |inbound: bool, window: &str, day: bool| {
        let columns: &[&str] = if inbound {
            &INBOUND_COLUMNS
        } else {
            &OUTBOUND_COLUMNS
        };
        html! {
            table.counts {
                caption { (window) }
                thead {
                    tr {
                        th scope="col" { "Stage" }
                        @for c in columns {
                            th scope="col" { (badge_header(c)) }
                        }
                        th scope="col" { "other" }
                        @if !inbound { th scope="col" { "DLQ now" } }
                    }
                }
                tbody {
                    @for row in rows.iter().filter(|r| r.inbound == inbound) {
                        @let counts = if day { &row.day } else { &row.week };
                        tr {
                            th scope="row" data-label="Stage" { (row.label) }
                            @for c in columns { (count_cell(counts, c)) }
                            td.num data-label="other" { (other_count(counts, columns)) }
                            @if !inbound {
                                td data-label="DLQ now" {
                                    @match &row.dlq {
                                        None => { span.muted { "no queue here" } }
                                        Some(d) => {
                                            @if let Some(e) = &d.error {
                                                span.error { "unreadable: " (e) }
                                            } @else if d.depth == 0 {
                                                (badge("empty"))
                                            } @else {
                                                a href={ (BASE) "/dlq?stage=" (enc(&row.lane)) } {
                                                    (badge("dead_lettered")) " " (d.depth) @if d.more { "+" }
                                                }
                                                @if let Some(o) = &d.oldest {
                                                    br;
                                                    span.muted { "oldest " time datetime=(o.failed_at) { (ctx.zone.format_text(&o.failed_at)) } }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(
        ctx,
        "Overview",
        html! {
            @for e in errors { p.error role="alert" { (e) } }
            p.hint {
                "Events received by hour, counted by where each one is now. \"Last 24 hours\" counts from the start of the hour 24 hours ago."
            }
            h2 { "Enerflo → CRM" }
            (section(false, "Last 24 hours", true))
            (section(false, "Last 7 days", false))
            h2 { "CRM → Enerflo (inbound calls)" }
            (section(true, "Last 24 hours", true))
            (section(true, "Last 7 days", false))
        },
    )
}

fn badge_header(c: &str) -> Markup {
    if c == RECEIVED {
        html! { "received" }
    } else {
        badge(c)
    }
}

pub(crate) fn search(ctx: &Ctx, q: &str, found: &[Found], errors: &[String]) -> Markup {
    layout(
        ctx,
        "Search",
        html! {
            form.card action={ (BASE) "/search" } method="get" {
                label for="q" { "Deal UUID, install id, customer id or UUID, short code, or CRM record id" }
                input #q type="search" name="q" value=(q) required;
                p.hint { "A bare id is tried as every kind it could be; prefix it (install:700001, crm:abc) to pick one." }
                button type="submit" { "Search" }
            }
            @for e in errors { p.error role="alert" { (e) } }
            @if !q.trim().is_empty() {
                @if found.is_empty() {
                    p { "Nothing is known by " code { (q) } " (no cross-reference and no event)." }
                } @else {
                    ul.results {
                        @for f in found {
                            li {
                                a href=(entity_href(&f.reference)) { (f.reference) }
                                @if let Some(link) = &f.link {
                                    " — " (link.kind.as_str()) ", known as "
                                    @for (i, id) in link.ids.iter().enumerate() {
                                        @if i > 0 { ", " }
                                        code { (id) }
                                    }
                                } @else {
                                    " — events, no cross-references yet"
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub(crate) fn entity(ctx: &Ctx, view: &EntityView, states: &[(String, SyncState)]) -> Markup {
    layout(
        ctx,
        &format!("Entity {}", view.reference),
        html! {
            section.card {
                h2 { "Cross-references" }
                @if view.links.is_empty() {
                    p.muted { "No cross-references: this id was never linked to another." }
                }
                @for link in &view.links {
                    dl.kv {
                        dt { "Kind" } dd { (link.kind.as_str()) }
                        dt { "CRM record" } dd { (link.crm_id.as_deref().unwrap_or("not yet")) }
                        dt { "Known as" }
                        dd {
                            ul.ids {
                                @for id in &link.ids { li { code { (id_label(id)) } } }
                            }
                        }
                    }
                }
                p.muted { "Events filed under: " @for g in &view.event_groups { code { (g) } " " } }
            }
            section.card {
                h2 { "Last synced state" }
                @if states.is_empty() { p.muted { "Nothing synced yet." } }
                @for (scope, state) in states {
                    details.fold {
                        summary {
                            code { (scope) } " — "
                            @if state.updated_at.is_empty() { "unreadable" } @else {
                                "updated " time datetime=(state.updated_at) { (ctx.zone.format_text(&state.updated_at)) }
                                ", change " (state.seq)
                            }
                        }
                        pre { (serde_json::to_string_pretty(&state.data).unwrap_or_default()) }
                    }
                }
            }
            section {
                h2 { "Timeline, newest first" }
                @if view.events.is_empty() { p.muted { "No events in the event log." } }
                @else {
                    table.timeline {
                        thead {
                            tr {
                                th scope="col" { "When" }
                                th scope="col" { "Direction" }
                                th scope="col" { "Event" }
                                th scope="col" { "Outcome" }
                                th scope="col" { "Attempts" }
                                th scope="col" { "Detail (what was sent, or the call made)" }
                            }
                        }
                        tbody {
                            @for e in &view.events {
                                tr {
                                    td data-label="When" { time datetime=(e.received_at) { (ctx.zone.format_ms(e.received_ms)) } }
                                    td data-label="Direction" { (direction(&e.event)) }
                                    td data-label="Event" { a href=(event_href(&e.dedupe_key)) { (e.event) } }
                                    td data-label="Outcome" { (badge(&e.outcome)) }
                                    td.num data-label="Attempts" {
                                        (e.attempts)
                                        @if e.deliveries > 1 { span.muted { " (" (e.deliveries) " deliveries)" } }
                                    }
                                    td data-label="Detail" { (folded(e.detail.as_deref().unwrap_or(""))) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub(crate) fn event(ctx: &Ctx, e: &EventRecord) -> Markup {
    let body = pretty(&e.raw_body);
    let long = body.len() > FOLD_BYTES * 4 || body.lines().count() > 60;
    layout(
        ctx,
        &format!("Event {}", e.event),
        html! {
            section.card {
                dl.kv {
                    dt { "Outcome" } dd { (badge(&e.outcome)) }
                    dt { "Direction" } dd { (direction(&e.event)) }
                    dt { "Received" } dd { time datetime=(e.received_at) { (ctx.zone.format_ms(e.received_ms)) } }
                    dt { "Stage" } dd { (e.stage.as_deref().unwrap_or("none (not queued)")) }
                    dt { "Entity" }
                    dd {
                        @match &e.entity {
                            Some(entity) if !entity.starts_with("unidentified:") => a href=(entity_href(entity)) { (entity) },
                            Some(entity) => code { (entity) },
                            None => span.muted { "none" },
                        }
                    }
                    dt { "Attempts" } dd { (e.attempts) }
                    dt { "Deliveries" } dd { (e.deliveries) }
                    dt { "Dedupe key" } dd { code.wrap { (e.dedupe_key) } }
                    dt { "Last detail" } dd { (folded(e.detail.as_deref().unwrap_or(""))) }
                }
                @if e.outcome == "dead_lettered" {
                    @if let Some(entity) = &e.entity {
                        p { a href={ (BASE) "/dlq?entity=" (enc(entity)) } { "Find it in the dead letters to replay it" } }
                    }
                }
            }
            section {
                h2 { "Every outcome, oldest first" }
                @if e.history.is_empty() { p.muted { "No history kept for this event (recorded before histories were)." } }
                @else {
                    table.timeline {
                        thead { tr { th scope="col" { "When" } th scope="col" { "Outcome" } th scope="col" { "Detail" } } }
                        tbody {
                            @for h in &e.history {
                                tr {
                                    td data-label="When" { time datetime=(h.at) { (ctx.zone.format_text(&h.at)) } }
                                    td data-label="Outcome" { (badge(&h.outcome)) }
                                    td data-label="Detail" { (folded(h.detail.as_deref().unwrap_or(""))) }
                                }
                            }
                        }
                    }
                    @if (e.history.len() as u64) < e.attempts + 1 && e.history.len() >= enerflo_sync::store::MAX_HISTORY {
                        p.muted { "Only the first " (e.history.len()) " outcomes are kept; attempts and the last detail count on." }
                    }
                }
            }
            section {
                h2 { "Raw body" }
                @if e.raw_body.is_empty() {
                    p.muted { "No body kept (a repeat delivery)." }
                } @else if long {
                    details.fold {
                        summary { "Show the body (" (e.raw_body.len()) " bytes)" }
                        pre.body { (body) }
                    }
                } @else {
                    pre.body { (body) }
                }
            }
        },
    )
}

fn dlq_form(q: &DlqQuery, stages: &[Stage]) -> Markup {
    html! {
        form.card.filters action={ (BASE) "/dlq" } method="get" {
            div {
                label for="f-stage" { "Stage" }
                select #f-stage name="stage" {
                    option value="" selected[q.stage.is_empty()] { "every stage" }
                    @for s in stages {
                        option value=(s.as_str()) selected[q.stage == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            div {
                label for="f-entity" { "Entity (e.g. install:700001)" }
                input #f-entity type="text" name="entity" value=(q.entity);
            }
            div {
                label for="f-since" { "Failed at or after" }
                input #f-since type="datetime-local" name="since" value=(q.since);
            }
            div {
                label for="f-until" { "Failed at or before" }
                input #f-until type="datetime-local" name="until" value=(q.until);
            }
            button type="submit" { "Filter" }
        }
    }
}

fn dead_table(ctx: &Ctx, dead: &[DeadLetter], actions: bool) -> Markup {
    html! {
        table.timeline {
            thead {
                tr {
                    th scope="col" { "Failed" }
                    th scope="col" { "Stage" }
                    th scope="col" { "Event" }
                    th scope="col" { "Entity" }
                    th scope="col" { "Attempts" }
                    th scope="col" { "Reason" }
                    @if actions { th scope="col" { "Replay" } }
                }
            }
            tbody {
                @for d in dead {
                    @let group = d.attributes.get("group").cloned().unwrap_or_default();
                    @let event = d.attributes.get("event").cloned().unwrap_or_default();
                    @let key = d.attributes.get("dedupe_key").map(|k| k.split(enerflo_sync::queue::REPLAY_MARK).next().unwrap_or(k).to_owned());
                    tr {
                        td data-label="Failed" { time datetime=(d.failed_at) { (ctx.zone.format_text(&d.failed_at)) } }
                        td data-label="Stage" { (d.stage.as_str()) }
                        td data-label="Event" {
                            @if let Some(k) = &key { a href=(event_href(k)) { (event) } } @else { (event) }
                        }
                        td data-label="Entity" {
                            @if group.is_empty() || group.starts_with("unidentified:") { code { (group) } }
                            @else { a href=(entity_href(&group)) { (group) } }
                        }
                        td.num data-label="Attempts" { (d.attempts) }
                        td data-label="Reason" { (badge("dead_lettered")) " " (folded(&d.reason)) }
                        @if actions {
                            td data-label="Replay" {
                                a.button href={ (BASE) "/dlq/confirm?stage=" (enc(d.stage.as_str())) "&id=" (enc(&d.message_id)) } { "Replay…" }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn dlq(
    ctx: &Ctx,
    q: &DlqQuery,
    stages: &[Stage],
    dead: &[DeadLetter],
    error: Option<&str>,
) -> Markup {
    let mut all = q.clone();
    all.ids.clear();
    layout(
        ctx,
        "Dead letters",
        html! {
            (dlq_form(q, stages))
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if error.is_none() {
                @if dead.is_empty() {
                    p { (badge("empty")) " No dead letters match." }
                } @else {
                    p {
                        (dead.len()) " dead letter(s), newest first. "
                        a.button href={ (BASE) "/dlq/confirm?" (all.query()) } { "Replay all " (dead.len()) " shown…" }
                    }
                    (dead_table(ctx, dead, true))
                }
            }
        },
    )
}

pub(crate) fn confirm(ctx: &Ctx, q: &DlqQuery, dead: &[DeadLetter]) -> Markup {
    let single_stage = dead
        .first()
        .map(|d| d.stage)
        .filter(|s| dead.iter().all(|d| d.stage == *s));
    layout(
        ctx,
        "Replay: confirm",
        html! {
            @if dead.is_empty() {
                p { "Nothing to replay: no dead letter matches (it may have been replayed already)." }
                p { a href={ (BASE) "/dlq" } { "Back to the dead letters" } }
            } @else {
                p.warn {
                    "Send these " strong { (dead.len()) } " dead letter(s) back to their stage queue? "
                    "Each keeps its event log entry; the stage judges again whether anything changed, so an event that was in fact delivered writes nothing new."
                }
                @if dead.len() >= REPLAY_LIMIT { p.muted { "At most " (REPLAY_LIMIT) " at once: replay these, then come back for the rest." } }
                (dead_table(ctx, dead, false))
                form.card action={ (BASE) "/dlq/replay" } method="post" {
                    input type="hidden" name="csrf" value=(ctx.csrf());
                    @if let Some(s) = single_stage { input type="hidden" name="stage" value=(s.as_str()); }
                    @else if !q.stage.is_empty() { input type="hidden" name="stage" value=(q.stage); }
                    @for d in dead { input type="hidden" name="id" value=(d.message_id); }
                    button.danger type="submit" { "Replay " (dead.len()) " dead letter(s)" }
                    " "
                    a href={ (BASE) "/dlq?" (q.query()) } { "Cancel" }
                }
            }
        },
    )
}

pub(crate) fn replayed(ctx: &Ctx, r: &ReplayOutcome) -> Markup {
    layout(
        ctx,
        "Replay: result",
        html! {
            p {
                (badge(if r.failed.is_empty() && !r.replayed.is_empty() { "delivered" } else if r.replayed.is_empty() { "failed" } else { "retrying" }))
                " Replayed " strong { (r.replayed.len()) } " of " (r.asked) " confirmed dead letter(s)."
            }
            @if r.replayed.len() < r.asked && r.failed.is_empty() {
                p.muted { "The others were no longer in the DLQ (replayed by someone else meanwhile)." }
            }
            @for f in &r.failed { p.error role="alert" { "Not replayed: " (f) } }
            @if !r.replayed.is_empty() {
                p { "They are back on their queue; follow each on its timeline:" }
                ul.results {
                    @for d in &r.replayed {
                        @let group = d.attributes.get("group").cloned().unwrap_or_default();
                        li {
                            (d.stage.as_str()) " "
                            (d.attributes.get("event").map(String::as_str).unwrap_or(""))
                            " — "
                            @if group.starts_with("unidentified:") || group.is_empty() { code { (group) } }
                            @else { a href=(entity_href(&group)) { (group) } }
                        }
                    }
                }
            }
            p { a href={ (BASE) "/dlq" } { "Back to the dead letters" } }
        },
    )
}

pub(crate) fn settings(ctx: &Ctx, next: &str) -> Markup {
    layout(
        ctx,
        "Time zone",
        html! {
            form.card action={ (BASE) "/settings" } method="post" {
                input type="hidden" name="csrf" value=(ctx.csrf());
                input type="hidden" name="next" value=(next);
                label for="tz" { "Show times in" }
                select #tz name="tz" {
                    @for z in crate::tz::all_zones() {
                        option value=(z) selected[z == ctx.zone.name] { (z) }
                    }
                }
                button type="submit" { "Save" }
            }
            p.hint { "Kept in a cookie on this browser. UTC until you choose." }
        },
    )
}
