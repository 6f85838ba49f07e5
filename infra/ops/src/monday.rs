//! `enerflo-sync-ops monday setup`: readies Monday.com boards for `CRM_CONNECTOR=monday`.
//!
//! It reads the boards the profile names (`MONDAY_CUSTOMERS_BOARD`, `MONDAY_PROJECTS_BOARD`, or
//! board ids in the profile) and checks every column the profile writes or watches, its type
//! included (`enerflo_sync::crm::monday::wanted_columns`), and the status column's labels. With
//! `--create` it creates a missing column (with the profile's id and type; a status column with
//! the labels, a link column connected to the customers board) and a missing label (through one
//! write with `create_labels_if_missing` on a scratch item, deleted again: the documented way).
//! It never changes an existing column: one of another type is reported. With `--webhook-url` it
//! creates the board webhooks the route needs (`webhook_subscriptions`) that do not exist yet,
//! each answering Monday's challenge. It prints what it did; run twice, the second run creates
//! nothing. Exit 1 when anything is wrong.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use enerflo_sync::config::Config;
use enerflo_sync::crm::monday::api::{MondayApi, Spend, idempotency_key};
use enerflo_sync::crm::monday::{wanted_columns, wanted_labels, webhook_subscriptions};
use serde_json::{Value, json};

/// The configuration `monday setup` runs with: the functions' environment, with
/// `CRM_CONNECTOR=monday` implied, `MONDAY_API_TOKEN` and the boards required.
pub fn config_from(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
    let config = Config::from_lookup(|k| {
        if k == "CRM_CONNECTOR" {
            Some("monday".into())
        } else {
            get(k)
        }
    })?;
    config.monday_crm()?;
    Ok(config)
}

#[derive(Clone, Debug, Default)]
pub struct SetupOptions {
    /// Create missing columns and labels (otherwise only report them).
    pub create: bool,
    /// The public base URL Monday calls (the API's URL): create the board webhooks under it.
    pub webhook_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Created,
    /// Absent, and not created (no `--create`).
    Missing,
    Problem,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Created => "created",
            Self::Missing => "missing",
            Self::Problem => "problem",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub outcome: Outcome,
    pub what: String,
}

#[derive(Debug, Default)]
pub struct SetupReport {
    pub findings: Vec<Finding>,
    /// Monday API calls the run made.
    pub calls: u32,
}

impl SetupReport {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.findings
            .iter()
            .filter(|f| f.outcome == outcome)
            .count()
    }

    pub fn has_problems(&self) -> bool {
        self.count(Outcome::Problem) > 0 || self.count(Outcome::Missing) > 0
    }

    fn push(&mut self, outcome: Outcome, what: impl Into<String>) {
        self.findings.push(Finding {
            outcome,
            what: what.into(),
        });
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!("{:<8} {}\n", f.outcome.as_str(), f.what));
        }
        out.push_str(&format!(
            "{} ok, {} created, {} missing, {} problems; {} Monday.com calls\n",
            self.count(Outcome::Ok),
            self.count(Outcome::Created),
            self.count(Outcome::Missing),
            self.count(Outcome::Problem),
            self.calls
        ));
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "findings": self.findings.iter().map(|f| json!({"outcome": f.outcome.as_str(), "what": f.what})).collect::<Vec<_>>(),
            "calls": self.calls,
        })
    }
}

fn humanise(id: &str) -> String {
    let mut t = id.replace('_', " ");
    if let Some(first) = t.get(..1) {
        t = first.to_uppercase() + &t[1..];
    }
    t
}

pub async fn setup(config: &Config, options: &SetupOptions) -> anyhow::Result<SetupReport> {
    let monday = config.monday_crm()?;
    let (profile, boards) = (monday.profile, monday.boards);
    let api = MondayApi::new(
        &monday.api.api_url,
        monday.api.api_token,
        &monday.api.api_version,
        monday.api.timeout,
        monday.api.minute_budget,
        None,
    )
    .context("Monday.com HTTP client")?;
    let spend = Spend::default();
    let mut report = SetupReport::default();
    let call = |doc: &'static str, vars: Value, mutation: Option<String>| {
        let api = &api;
        let spend = &spend;
        async move {
            api.call(doc, vars, mutation.as_deref(), spend)
                .await
                .map(|a| a.data)
                .map_err(|e| e.into_crm("monday setup"))
        }
    };
    let ids: Vec<&String> = boards.values().collect();
    let data = call(
        "query ($b: [ID!]) { boards(ids: $b) { id name columns { id title type settings_str } } }",
        json!({"b": ids}),
        None,
    )
    .await
    .map_err(|e| anyhow!("reading the boards: {e} ({})", e.answer().unwrap_or("")))?;
    let mut found: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for b in data["boards"].as_array().into_iter().flatten() {
        let id = b["id"].as_str().unwrap_or("").to_owned();
        found.insert(id, b["columns"].as_array().cloned().unwrap_or_default());
    }
    let status_column = profile.stages.property.clone();
    let labels = wanted_labels(&profile);
    let customers_board = boards
        .get(
            &profile
                .event(enerflo_sync::canonical::CrmEventType::LeadUpserted)
                .object,
        )
        .cloned();
    for (object, columns) in wanted_columns(&profile) {
        let Some(board) = boards.get(&object) else {
            continue;
        };
        let Some(existing) = found.get(board) else {
            report.push(
                Outcome::Problem,
                format!("board {board} ({object}) is not readable with this token"),
            );
            continue;
        };
        for (id, kind) in columns {
            let here = existing.iter().find(|c| c["id"] == id.as_str());
            match here {
                Some(c) if c["type"] == kind.as_str() => {
                    report.push(Outcome::Ok, format!("board {board}: column {id} ({kind})"));
                    if id == status_column {
                        let settings: Value = c["settings_str"]
                            .as_str()
                            .and_then(|s| serde_json::from_str(s).ok())
                            .unwrap_or(Value::Null);
                        let have: Vec<String> = settings["labels"]
                            .as_object()
                            .map(|o| o.values().filter_map(Value::as_str).map(str::to_owned).collect())
                            .unwrap_or_default();
                        for l in labels.iter().filter(|l| !have.contains(l)) {
                            if !options.create {
                                report.push(
                                    Outcome::Missing,
                                    format!("board {board}: status label `{l}` of column {id} (run with --create)"),
                                );
                                continue;
                            }
                            let made = call(
                                "mutation ($b: ID!, $v: JSON) { create_item(board_id: $b, item_name: \"Enerflo setup\", column_values: $v, create_labels_if_missing: true) { id } }",
                                json!({"b": board, "v": json!({id.as_str(): {"label": l}}).to_string()}),
                                Some(idempotency_key(&["setup-label", board, &id, l])),
                            )
                            .await;
                            match made {
                                Ok(d) => {
                                    if let Some(item) = d["create_item"]["id"].as_str() {
                                        let _ = call(
                                            "mutation ($i: ID!) { delete_item(item_id: $i) { id } }",
                                            json!({"i": item}),
                                            Some(idempotency_key(&["setup-delete", item])),
                                        )
                                        .await;
                                    }
                                    report.push(Outcome::Created, format!("board {board}: status label `{l}` of column {id}"));
                                }
                                Err(e) => report.push(
                                    Outcome::Problem,
                                    format!("board {board}: status label `{l}` not created: {}", e.answer().unwrap_or(&e.to_string())),
                                ),
                            }
                        }
                    }
                }
                Some(c) => report.push(
                    Outcome::Problem,
                    format!(
                        "board {board}: column {id} is a {} column; the profile writes it as {kind} (not changed)",
                        c["type"].as_str().unwrap_or("?")
                    ),
                ),
                None if !options.create => report.push(
                    Outcome::Missing,
                    format!("board {board}: column {id} ({kind}) (run with --create)"),
                ),
                None => {
                    let defaults = match kind.as_str() {
                        "status" => Some(json!({"labels": labels.iter().enumerate()
                            .map(|(i, l)| ((if i >= 5 { i + 1 } else { i }).to_string(), Value::String(l.clone())))
                            .collect::<serde_json::Map<_, _>>()})),
                        "board_relation" => customers_board.as_ref().map(|c| json!({"boardIds": [c]})),
                        _ => None,
                    };
                    let made = call(
                        "mutation ($b: ID!, $t: String!, $k: ColumnType!, $i: String, $d: JSON) { create_column(board_id: $b, title: $t, column_type: $k, id: $i, defaults: $d) { id type } }",
                        json!({"b": board, "t": humanise(&id), "k": kind, "i": id,
                               "d": defaults.map(|d| d.to_string())}),
                        Some(idempotency_key(&["setup-column", board, &id])),
                    )
                    .await;
                    match made {
                        Ok(_) => report.push(Outcome::Created, format!("board {board}: column {id} ({kind})")),
                        Err(e) => report.push(
                            Outcome::Problem,
                            format!("board {board}: column {id} not created: {}", e.answer().unwrap_or(&e.to_string())),
                        ),
                    }
                }
            }
        }
    }
    if let Some(base) = &options.webhook_url {
        let token =
            config.monday.webhook_tokens.first().ok_or_else(|| {
                anyhow!("MONDAY_WEBHOOK_TOKEN is required to create the webhooks")
            })?;
        let url = format!(
            "{}/crm/monday/webhooks/{}",
            base.trim_end_matches('/'),
            token.expose()
        );
        let mut existing: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
        for (object, event, config_json) in webhook_subscriptions(&profile) {
            let Some(board) = boards.get(&object) else {
                continue;
            };
            if !existing.contains_key(board) {
                let d = call(
                    "query ($b: ID!) { webhooks(board_id: $b) { id event config } }",
                    json!({"b": board}),
                    None,
                )
                .await
                .map_err(|e| anyhow!("reading the webhooks of board {board}: {e}"))?;
                let list = d["webhooks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        let cfg = w["config"]
                            .as_str()
                            .and_then(|s| serde_json::from_str(s).ok())
                            .unwrap_or(Value::Null);
                        (w["event"].as_str().unwrap_or("").to_owned(), cfg)
                    })
                    .collect();
                existing.insert(board.clone(), list);
            }
            let what = match config_json.get("columnId").and_then(Value::as_str) {
                Some(c) => format!("board {board}: webhook {event} on {c}"),
                None => format!("board {board}: webhook {event}"),
            };
            let have = existing[board]
                .iter()
                .any(|(e, c)| e == event && c.get("columnId") == config_json.get("columnId"));
            if have {
                report.push(Outcome::Ok, what);
                continue;
            }
            let made = call(
                "mutation ($b: ID!, $u: String!, $e: WebhookEventType!, $c: JSON) { create_webhook(board_id: $b, url: $u, event: $e, config: $c) { id } }",
                json!({"b": board, "u": url, "e": event,
                       "c": (!config_json.is_null()).then(|| config_json.to_string())}),
                Some(idempotency_key(&["setup-webhook", board, event, &config_json.to_string()])),
            )
            .await;
            match made {
                Ok(_) => report.push(Outcome::Created, what),
                Err(e) => report.push(
                    Outcome::Problem,
                    format!(
                        "{what} not created: {}",
                        e.answer().unwrap_or(&e.to_string())
                    ),
                ),
            }
        }
    }
    report.calls = spend.get();
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use enerflo_sync_local::fakes::monday::{FakeOptions, spawn};
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    use super::*;

    const TOKEN: &str = "fake-monday-token-2222";

    /// A runner stand-in that echoes Monday's challenge.
    async fn echoes_challenges() -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(|req: &Request| {
                ResponseTemplate::new(200).set_body_raw(req.body.clone(), "application/json")
            })
            .mount(&server)
            .await;
        server
    }

    #[tokio::test]
    async fn setup_creates_what_is_missing_once_and_reports_a_column_of_another_type() {
        let (url, fake) = spawn(FakeOptions {
            token: TOKEN.into(),
            ..FakeOptions::default()
        })
        .await;
        let customers = fake.add_board("Customers", &[("zip", "Zip", "numbers")]);
        let projects = fake.add_board("Projects", &[("project_status", "Status", "status")]);
        let runner = echoes_challenges().await;
        let env: HashMap<&str, String> = HashMap::from([
            ("MONDAY_API_TOKEN", TOKEN.to_owned()),
            ("MONDAY_API_URL", format!("{url}/v2")),
            ("MONDAY_CUSTOMERS_BOARD", customers.to_string()),
            ("MONDAY_PROJECTS_BOARD", projects.to_string()),
            (
                "MONDAY_WEBHOOK_TOKEN",
                "hook-token-0123456789abcdef0123".to_owned(),
            ),
            ("MONDAY_RATE_LIMIT", "5000".to_owned()),
        ]);
        let config = config_from(|k| env.get(k).cloned()).unwrap();
        let options = SetupOptions {
            create: true,
            webhook_url: Some(runner.uri()),
        };
        let first = setup(&config, &options).await.unwrap();
        let text = first.to_text();
        assert!(
            text.contains(&format!(
                "created  board {customers}: column enerflo_customer_id (text)"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "created  board {projects}: column date_permit (date)"
            )),
            "{text}"
        );
        assert!(
            text.contains("status label `Permitting Complete`"),
            "{text}"
        );
        assert!(text.contains(&format!("problem  board {customers}: column zip is a numbers column; the profile writes it as text")), "{text}");
        assert!(first.has_problems());
        let board = fake.board(projects).unwrap();
        assert_eq!(board.column("customer").unwrap().kind, "board_relation");
        assert!(
            board
                .column("project_status")
                .unwrap()
                .labels
                .iter()
                .any(|(_, l)| l == "Permitting Complete")
        );
        assert!(
            fake.items(projects).is_empty(),
            "the scratch item is deleted"
        );
        let hooks = fake.webhooks();
        assert_eq!(
            hooks.len(),
            webhook_subscriptions(config.crm_profile.as_ref().unwrap()).len()
        );
        assert!(hooks.iter().all(|h| {
            h.url
                .ends_with("/crm/monday/webhooks/hook-token-0123456789abcdef0123")
        }));

        // Run again: nothing more is created; the wrong column is still reported, unchanged.
        let second = setup(&config, &options).await.unwrap();
        assert_eq!(second.count(Outcome::Created), 0, "{}", second.to_text());
        assert_eq!(second.count(Outcome::Problem), 1, "{}", second.to_text());
        assert_eq!(
            fake.board(customers).unwrap().column("zip").unwrap().kind,
            "numbers"
        );
        assert_eq!(fake.webhooks().len(), hooks.len());

        // Without --create, a missing column is reported as missing.
        let bare = fake.add_board("Other", &[]);
        let env2: HashMap<&str, String> = env
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .chain([("MONDAY_CUSTOMERS_BOARD", bare.to_string())])
            .collect();
        let config = config_from(|k| env2.get(k).cloned()).unwrap();
        let report = setup(&config, &SetupOptions::default()).await.unwrap();
        assert!(report.count(Outcome::Missing) > 0);
        assert!(report.to_text().contains("(run with --create)"));
    }
}
