//! `enerflo-sync-ops hubspot setup`: readies a HubSpot portal for `CRM_CONNECTOR=hubspot`.
//!
//! It creates the `enerflo` property group and every custom property the mapping profile writes
//! (on contacts, deals and notes), with the profile's key properties unique; it never changes an
//! existing property: one of another type (or a key property that is not unique) is reported. It
//! checks that `HUBSPOT_PIPELINE` exists and holds every stage the profile names, and prints what
//! each HubSpot workflow's "Send a webhook" action needs: URL, authentication and body keys
//! (docs/crm-connectors.md 2.4, 2.7, 2.12.1). Run twice, the second run creates nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::anyhow;
use enerflo_sync::config::Config;
use enerflo_sync::crm::CrmError;
use enerflo_sync::crm::hubspot::api::{Answer, HubSpotApi, HubSpotError};
use enerflo_sync::crm::profile::{Conversion, Profile};
use enerflo_sync::wire::encode_segment;
use reqwest::Method;
use serde_json::{Value, json};

/// The property group every property setup creates goes into.
pub const GROUP: &str = "enerflo";
pub const GROUP_LABEL: &str = "Enerflo";
/// The header a workflow's "API key" authentication puts a `CRM_INBOUND_TOKEN` value in.
pub const TOKEN_HEADER: &str = "X-Sync-Token";

/// HubSpot-defined properties the connector writes: they exist in every portal and are never
/// created (names starting `hs_` are HubSpot's too).
const HUBSPOT_DEFINED: &[&str] = &[
    "email",
    "firstname",
    "lastname",
    "phone",
    "mobilephone",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "company",
    "dealname",
    "dealstage",
    "pipeline",
    "amount",
    "closedate",
    "description",
    "hubspot_owner_id",
];

fn hubspot_defined(name: &str) -> bool {
    HUBSPOT_DEFINED.contains(&name) || name.starts_with("hs_")
}

/// The configuration `hubspot setup` runs with: the functions' environment, with
/// `CRM_CONNECTOR=hubspot` implied, and `HUBSPOT_ACCESS_TOKEN` required.
pub fn config_from(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
    let config = Config::from_lookup(|k| {
        if k == "CRM_CONNECTOR" {
            Some("hubspot".into())
        } else {
            get(k)
        }
    })?;
    config.hubspot_crm()?;
    Ok(config)
}

#[derive(Clone, Debug, Default)]
pub struct SetupOptions {
    /// Create nothing; list what would be created.
    pub dry_run: bool,
    /// The public base URL HubSpot calls; else `HUBSPOT_PUBLIC_URL`.
    pub public_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    WouldCreate,
    /// Exists as needed; left alone.
    InPlace,
    /// Wrong or not checkable; nothing was changed. Makes the command exit non-zero.
    Problem,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::WouldCreate => "would create",
            Self::InPlace => "in place",
            Self::Problem => "PROBLEM",
        }
    }
}

/// One checked thing: `subject` is `group contacts.enerflo`, `property deals.enerflo_deal_id`,
/// `pipeline default`, `stage default/closedwon`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub outcome: Outcome,
    pub subject: String,
    pub detail: String,
}

/// What a HubSpot workflow's "Send a webhook" action is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workflow {
    pub name: &'static str,
    /// The workflow's object type (what it enrols).
    pub enrols: &'static str,
    pub url: String,
    /// The customised body's keys, each with where its value comes from.
    pub body_keys: Vec<(&'static str, &'static str)>,
}

#[derive(Clone, Debug)]
pub struct SetupReport {
    pub dry_run: bool,
    pub profile: String,
    pub pipeline: String,
    pub findings: Vec<Finding>,
    pub workflows: Vec<Workflow>,
    /// The two authentication choices, as lines to show.
    pub authentication: Vec<String>,
    /// Worth knowing, not wrong in HubSpot (a missing public URL or secret here).
    pub warnings: Vec<String>,
}

impl SetupReport {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.findings
            .iter()
            .filter(|f| f.outcome == outcome)
            .count()
    }

    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.outcome == Outcome::Problem)
    }

    pub fn has_problems(&self) -> bool {
        self.count(Outcome::Problem) > 0
    }

    pub fn created(&self) -> Vec<&str> {
        self.subjects(Outcome::Created)
    }

    pub fn would_create(&self) -> Vec<&str> {
        self.subjects(Outcome::WouldCreate)
    }

    fn subjects(&self, outcome: Outcome) -> Vec<&str> {
        self.findings
            .iter()
            .filter(|f| f.outcome == outcome)
            .map(|f| f.subject.as_str())
            .collect()
    }

    /// The last line: what was done, and whether anything is wrong.
    pub fn summary(&self) -> String {
        let problems = self.count(Outcome::Problem);
        let in_place = self.count(Outcome::InPlace);
        let made = if self.dry_run {
            match self.count(Outcome::WouldCreate) {
                0 => "dry run: nothing to create".to_owned(),
                n => format!("dry run: would create {n} (nothing written)"),
            }
        } else {
            match self.count(Outcome::Created) {
                0 => "created nothing: everything was already in place".to_owned(),
                n => format!("created {n}"),
            }
        };
        let wrong = match problems {
            0 => "no problems".to_owned(),
            n => format!("{n} problem(s) to fix by hand (nothing of them was changed)"),
        };
        format!("hubspot setup: {made}; {in_place} in place; {wrong}")
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mode = if self.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        };
        out.push_str(&format!(
            "HubSpot setup for profile {}, pipeline {}{mode}\n",
            self.profile, self.pipeline
        ));
        for f in &self.findings {
            out.push_str(&format!(
                "  {:<12} {}: {}\n",
                f.outcome.as_str(),
                f.subject,
                f.detail
            ));
        }
        out.push_str(
            "\nWorkflows: in each, add the action \"Send a webhook\", method POST, \"Customize request body\" with these keys:\n",
        );
        for w in &self.workflows {
            out.push_str(&format!(
                "  {} ({} workflow): POST {}\n",
                w.name, w.enrols, w.url
            ));
            for (key, from) in &w.body_keys {
                out.push_str(&format!("      {key:<20} {from}\n"));
            }
        }
        out.push_str("\nAuthentication (one of):\n");
        for a in &self.authentication {
            out.push_str(&format!("  - {a}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    pub fn to_json(&self) -> Value {
        json!({
            "dry_run": self.dry_run,
            "profile": self.profile,
            "pipeline": self.pipeline,
            "findings": self.findings.iter().map(|f| json!({
                "outcome": f.outcome.as_str(), "subject": f.subject, "detail": f.detail,
            })).collect::<Vec<_>>(),
            "workflows": self.workflows.iter().map(|w| json!({
                "name": w.name, "enrols": w.enrols, "method": "POST", "url": w.url,
                "body_keys": w.body_keys.iter().map(|(k, from)| json!({"key": k, "from": from})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "authentication": self.authentication,
            "warnings": self.warnings,
            "summary": self.summary(),
            "problems": self.count(Outcome::Problem),
        })
    }
}

use enerflo_sync::crm::hubspot::schema::{Wanted, hubspot_type, wanted};

/// The option values a property must offer (bool: `true`/`false`; enumeration: the profile's
/// CRM options).
fn option_values(conversion: &Conversion) -> Vec<String> {
    match conversion {
        Conversion::Bool => vec!["true".into(), "false".into()],
        Conversion::Enumeration { options } => options
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// `enerflo_customer_id` -> `Enerflo customer ID`.
pub fn humanise(name: &str) -> String {
    name.split('_')
        .filter(|w| !w.is_empty())
        .enumerate()
        .map(|(i, w)| match w {
            "id" => "ID".to_owned(),
            "uuid" => "UUID".to_owned(),
            "kw" => "kW".to_owned(),
            "ppw" => "PPW".to_owned(),
            "json" => "JSON".to_owned(),
            "pto" => "PTO".to_owned(),
            "url" => "URL".to_owned(),
            _ if i == 0 => {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            }
            _ => w.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body of `POST /crm/v3/properties/{object}` for one wanted property.
fn create_body(profile: &str, w: &Wanted) -> Value {
    let (kind, field_type) = hubspot_type(&w.conversion);
    let mut body = json!({
        "name": w.name,
        "label": humanise(&w.name),
        "type": kind,
        "fieldType": field_type,
        "groupName": GROUP,
        "description": if w.unique {
            format!("Enerflo id the sync finds this record by (unique); written by the Enerflo sync, profile {profile}.")
        } else {
            format!("Written by the Enerflo sync, profile {profile}.")
        },
        "hasUniqueValue": w.unique,
        "formField": false,
    });
    let values = option_values(&w.conversion);
    if !values.is_empty() {
        let options: Vec<Value> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let label = match (&w.conversion, v.as_str()) {
                    (Conversion::Bool, "true") => "Yes".to_owned(),
                    (Conversion::Bool, _) => "No".to_owned(),
                    _ => humanise(v),
                };
                json!({"label": label, "value": v, "displayOrder": i, "hidden": false})
            })
            .collect();
        body["options"] = Value::Array(options);
    }
    body
}

/// What a call came to, once a 401 has stopped the run.
enum Reply {
    Ok(Answer),
    NotFound,
    Conflict,
    /// Anything else, as one line (a 403 names the scope the call needs).
    Failed(String),
}

/// The scope a call on `object` needs (docs/crm-connectors.md 2.2).
fn scope_for(object: &str, write: bool) -> String {
    let rw = if write { "write" } else { "read" };
    match object {
        "contacts" | "deals" | "companies" => format!("crm.schemas.{object}.{rw}"),
        // Notes go through the contacts scopes (docs/crm-connectors.md 2.2).
        "notes" => format!("crm.objects.contacts.{rw}"),
        "pipelines" => "crm.objects.deals.read".to_owned(),
        other => format!("crm.schemas.{other}.{rw}"),
    }
}

const MAX_TRIES: u32 = 4;
/// The longest a rate-limit or budget wait is waited out before the call is reported.
const MAX_WAIT: Duration = Duration::from_secs(60);

async fn call(
    api: &HubSpotApi,
    method: Method,
    path: &str,
    body: Option<&Value>,
    scope: &str,
) -> anyhow::Result<Reply> {
    let mut tries = 0;
    loop {
        tries += 1;
        match api.call(method.clone(), path, &[], body).await {
            Ok(a) => return Ok(Reply::Ok(a)),
            Err(HubSpotError::NotFound(_)) => return Ok(Reply::NotFound),
            Err(HubSpotError::Conflict { .. }) => return Ok(Reply::Conflict),
            Err(HubSpotError::Crm(CrmError::Rejected {
                status: 401,
                message,
            })) => {
                return Err(anyhow!(
                    "HUBSPOT_ACCESS_TOKEN: token invalid (HubSpot answered 401 to {method} {path}): {message}"
                ));
            }
            Err(HubSpotError::Crm(CrmError::Rejected {
                status: 403,
                message,
            })) => {
                return Ok(Reply::Failed(format!(
                    "HubSpot answered 403: the token lacks a scope ({method} {path} needs {scope}): {message}"
                )));
            }
            Err(HubSpotError::Crm(CrmError::Rejected { status, message })) => {
                return Ok(Reply::Failed(format!(
                    "HubSpot answered {status} to {method} {path}: {message}"
                )));
            }
            Err(HubSpotError::Crm(CrmError::Unavailable {
                status,
                detail,
                retry_after,
            })) => {
                let wait = retry_after.unwrap_or(Duration::from_secs(u64::from(tries)));
                if tries >= MAX_TRIES || wait > MAX_WAIT {
                    let status = status.map_or("no answer".to_owned(), |s| format!("HTTP {s}"));
                    return Ok(Reply::Failed(format!(
                        "HubSpot unavailable for {method} {path} after {tries} tries ({status}): {detail}"
                    )));
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Readies the portal; see the module comment. An invalid token stops the run (`Err`); every
/// other failure is a [`Outcome::Problem`] and the run goes on.
pub async fn setup(config: &Config, options: &SetupOptions) -> anyhow::Result<SetupReport> {
    let hubspot = config.hubspot_crm()?;
    let profile = hubspot.profile.clone();
    let api = enerflo_sync::runtime::hubspot_api(&hubspot.api)?;
    let mut report = SetupReport {
        dry_run: options.dry_run,
        profile: profile.name.clone(),
        pipeline: config.hubspot.pipeline.clone(),
        findings: Vec::new(),
        workflows: Vec::new(),
        authentication: Vec::new(),
        warnings: Vec::new(),
    };
    let wanted = wanted(&profile);
    for (object, props) in &wanted {
        let needs_group = props.iter().any(|w| !hubspot_defined(&w.name));
        if needs_group {
            ensure_group(&api, object, options.dry_run, &mut report).await?;
        }
        for w in props {
            ensure_property(&api, &profile.name, object, w, options.dry_run, &mut report).await?;
        }
    }
    check_pipeline(&api, &profile, &config.hubspot.pipeline, &mut report).await?;
    workflows(config, options, &mut report);
    Ok(report)
}

async fn ensure_group(
    api: &HubSpotApi,
    object: &str,
    dry_run: bool,
    report: &mut SetupReport,
) -> anyhow::Result<()> {
    let subject = format!("group {object}.{GROUP}");
    let base = format!("/crm/v3/properties/{}/groups", encode_segment(object));
    let finding = if dry_run {
        let path = format!("{base}/{GROUP}");
        match call(api, Method::GET, &path, None, &scope_for(object, false)).await? {
            Reply::Ok(_) | Reply::Conflict => (Outcome::InPlace, "exists".to_owned()),
            Reply::NotFound => (
                Outcome::WouldCreate,
                format!("label \"{GROUP_LABEL}\" (POST {base})"),
            ),
            Reply::Failed(why) => (Outcome::Problem, why),
        }
    } else {
        let body = json!({"name": GROUP, "label": GROUP_LABEL, "displayOrder": -1});
        match call(
            api,
            Method::POST,
            &base,
            Some(&body),
            &scope_for(object, true),
        )
        .await?
        {
            Reply::Ok(_) => (Outcome::Created, format!("label \"{GROUP_LABEL}\"")),
            Reply::Conflict => (Outcome::InPlace, "exists".to_owned()),
            Reply::NotFound => (
                Outcome::Problem,
                format!("HubSpot answered 404 to POST {base}: is `{object}` an object type?"),
            ),
            Reply::Failed(why) => (Outcome::Problem, why),
        }
    };
    report.findings.push(Finding {
        outcome: finding.0,
        subject,
        detail: finding.1,
    });
    Ok(())
}

async fn ensure_property(
    api: &HubSpotApi,
    profile: &str,
    object: &str,
    w: &Wanted,
    dry_run: bool,
    report: &mut SetupReport,
) -> anyhow::Result<()> {
    let subject = format!("property {object}.{}", w.name);
    let path = format!(
        "/crm/v3/properties/{}/{}",
        encode_segment(object),
        encode_segment(&w.name)
    );
    let push = |report: &mut SetupReport, outcome: Outcome, detail: String| {
        report.findings.push(Finding {
            outcome,
            subject: subject.clone(),
            detail,
        })
    };
    let (kind, field_type) = hubspot_type(&w.conversion);
    match call(api, Method::GET, &path, None, &scope_for(object, false)).await? {
        Reply::Ok(answer) => {
            let (outcome, detail) = judge(w, &answer.body);
            push(report, outcome, detail);
        }
        Reply::NotFound if hubspot_defined(&w.name) => push(
            report,
            Outcome::Problem,
            format!(
                "HubSpot-defined, yet HubSpot has no such property on {object}: check the profile's object"
            ),
        ),
        Reply::NotFound if dry_run => push(
            report,
            Outcome::WouldCreate,
            format!(
                "{kind}/{field_type}{}",
                if w.unique { ", unique" } else { "" }
            ),
        ),
        Reply::NotFound => {
            let create = format!("/crm/v3/properties/{}", encode_segment(object));
            let body = create_body(profile, w);
            match call(
                api,
                Method::POST,
                &create,
                Some(&body),
                &scope_for(object, true),
            )
            .await?
            {
                Reply::Ok(_) => push(
                    report,
                    Outcome::Created,
                    format!(
                        "{kind}/{field_type}{} in group {GROUP}",
                        if w.unique { ", unique" } else { "" }
                    ),
                ),
                // Created meanwhile by someone else: judge what is there now.
                Reply::Conflict => {
                    match call(api, Method::GET, &path, None, &scope_for(object, false)).await? {
                        Reply::Ok(answer) => {
                            let (outcome, detail) = judge(w, &answer.body);
                            push(report, outcome, detail);
                        }
                        _ => push(
                            report,
                            Outcome::Problem,
                            format!(
                                "HubSpot answered 409 to creating it, yet GET {path} finds none"
                            ),
                        ),
                    }
                }
                Reply::NotFound => push(
                    report,
                    Outcome::Problem,
                    format!("HubSpot answered 404 to POST {create}: is `{object}` an object type?"),
                ),
                Reply::Failed(why) => push(report, Outcome::Problem, why),
            }
        }
        Reply::Conflict => push(
            report,
            Outcome::Problem,
            format!("HubSpot answered 409 to GET {path}"),
        ),
        Reply::Failed(why) => push(report, Outcome::Problem, why),
    }
    Ok(())
}

/// An existing property against what the profile needs; nothing is ever changed.
fn judge(w: &Wanted, found: &Value) -> (Outcome, String) {
    let s = |k: &str| found.get(k).and_then(Value::as_str).unwrap_or("?");
    let (has_kind, has_field_type) = (s("type"), s("fieldType"));
    if found.get("hubspotDefined").and_then(Value::as_bool) == Some(true) {
        return (
            Outcome::InPlace,
            format!("HubSpot-defined ({has_kind}/{has_field_type}); left alone"),
        );
    }
    let (kind, field_type) = hubspot_type(&w.conversion);
    if has_kind != kind {
        return (
            Outcome::Problem,
            format!(
                "exists as {has_kind}/{has_field_type}, but the profile writes it as {kind}/{field_type}: left unchanged (change its type in HubSpot, or the profile)"
            ),
        );
    }
    if w.unique && found.get("hasUniqueValue").and_then(Value::as_bool) != Some(true) {
        return (
            Outcome::Problem,
            "exists without hasUniqueValue, but the sync finds records by it: left unchanged (delete it in HubSpot and run setup again to recreate it unique)".to_owned(),
        );
    }
    let offered: BTreeSet<&str> = found
        .get("options")
        .and_then(Value::as_array)
        .map(|o| {
            o.iter()
                .filter_map(|o| o.get("value").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<String> = option_values(&w.conversion)
        .into_iter()
        .filter(|v| !offered.contains(v.as_str()))
        .collect();
    if matches!(w.conversion, Conversion::Enumeration { .. }) && !missing.is_empty() {
        return (
            Outcome::Problem,
            format!(
                "lacks the option(s) {} the profile writes: left unchanged (add them in HubSpot)",
                missing.join(", ")
            ),
        );
    }
    (
        Outcome::InPlace,
        format!(
            "exists ({has_kind}/{has_field_type}{})",
            if w.unique { ", unique" } else { "" }
        ),
    )
}

async fn check_pipeline(
    api: &HubSpotApi,
    profile: &Profile,
    pipeline: &str,
    report: &mut SetupReport,
) -> anyhow::Result<()> {
    // Every stage the profile names, with where it names it.
    let mut named: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    if let Some(first) = &profile.stages.first_stage {
        named
            .entry(first.as_str())
            .or_default()
            .push("stages.first_stage".into());
    }
    for (status, stage) in &profile.stages.by_status {
        named
            .entry(stage.as_str())
            .or_default()
            .push(format!("stages.by_status \"{status}\""));
    }
    let path = "/crm/v3/pipelines/deals";
    let subject = format!("pipeline {pipeline}");
    let answer = match call(api, Method::GET, path, None, &scope_for("pipelines", false)).await? {
        Reply::Ok(a) => a,
        Reply::NotFound | Reply::Conflict => {
            report.findings.push(Finding {
                outcome: Outcome::Problem,
                subject,
                detail: format!("GET {path} found no deal pipelines"),
            });
            return Ok(());
        }
        Reply::Failed(why) => {
            report.findings.push(Finding {
                outcome: Outcome::Problem,
                subject,
                detail: why,
            });
            return Ok(());
        }
    };
    let pipelines = answer
        .body
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let id_of = |v: &Value| {
        v.get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let Some(found) = pipelines.iter().find(|p| id_of(p) == pipeline) else {
        let existing: Vec<String> = pipelines
            .iter()
            .map(|p| {
                let label = p.get("label").and_then(Value::as_str).unwrap_or("");
                format!("{} ({label})", id_of(p))
            })
            .collect();
        report.findings.push(Finding {
            outcome: Outcome::Problem,
            subject,
            detail: format!(
                "HUBSPOT_PIPELINE `{pipeline}` is not a deal pipeline; the pipelines are: {}; stages not checked",
                if existing.is_empty() { "none".to_owned() } else { existing.join(", ") }
            ),
        });
        return Ok(());
    };
    let stages: Vec<String> = found
        .get("stages")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter(|st| st.get("archived").and_then(Value::as_bool) != Some(true))
                .map(id_of)
                .collect()
        })
        .unwrap_or_default();
    report.findings.push(Finding {
        outcome: Outcome::InPlace,
        subject,
        detail: format!(
            "exists, {} stage(s); the profile names {}",
            stages.len(),
            named.len()
        ),
    });
    for (stage, wherein) in named {
        let subject = format!("stage {pipeline}/{stage}");
        if stages.iter().any(|s| s == stage) {
            report.findings.push(Finding {
                outcome: Outcome::InPlace,
                subject,
                detail: format!("exists (named by {})", wherein.join(", ")),
            });
        } else {
            report.findings.push(Finding {
                outcome: Outcome::Problem,
                subject,
                detail: format!(
                    "named by {}, but not a stage id of pipeline `{pipeline}`; its stage ids are: {}",
                    wherein.join(", "),
                    stages.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Routes of the inbound HubSpot workflows, with their body keys.
fn workflows(config: &Config, options: &SetupOptions, report: &mut SetupReport) {
    let public = options
        .public_url
        .clone()
        .or_else(|| config.hubspot.public_url.clone())
        .map(|u| u.trim().trim_end_matches('/').to_owned());
    let base = match &public {
        Some(u) => {
            if !u.starts_with("https://") {
                report.warnings.push(format!(
                    "{u}: HubSpot workflow webhooks must call an https:// URL"
                ));
            }
            u.clone()
        }
        None => {
            report.warnings.push(
                "no public URL: pass --public-url or set HUBSPOT_PUBLIC_URL (the API's URL with its custom domain or stage prefix; v3 signatures cover the exact URL)".into(),
            );
            "<HUBSPOT_PUBLIC_URL>".to_owned()
        }
    };
    let id = ("hs_object_id", "Record ID of the enrolled record");
    report.workflows = vec![
        Workflow {
            name: "lead",
            enrols: "contact-based",
            url: format!("{base}/crm/hubspot/lead"),
            body_keys: vec![
                id,
                ("firstname", "First name"),
                ("lastname", "Last name"),
                ("email", "Email"),
                ("phone", "Phone number"),
                ("address", "Street address"),
                ("city", "City"),
                ("state", "State/Region"),
                ("zip", "Postal code"),
                ("lead_source", "the lead source (e.g. enerflo_lead_source)"),
                (
                    "rep_email",
                    "the sales rep's e-mail (e.g. the contact owner's)",
                ),
            ],
        },
        Workflow {
            name: "status",
            enrols: "deal-based",
            url: format!("{base}/crm/hubspot/status"),
            body_keys: vec![
                id,
                ("enerflo_install_id", "Enerflo install ID"),
                ("dealstage", "Deal stage (or, instead, the key below)"),
                (
                    "status",
                    "an Enerflo install status name (instead of dealstage)",
                ),
            ],
        },
        Workflow {
            name: "milestone",
            enrols: "deal-based",
            url: format!("{base}/crm/hubspot/milestone"),
            body_keys: vec![
                id,
                ("enerflo_install_id", "Enerflo install ID"),
                (
                    "milestone",
                    "the Enerflo milestone id or MILESTONE_KEY_MAP key (a static value)",
                ),
                (
                    "completed_date",
                    "the milestone's date property (YYYY-MM-DD)",
                ),
                ("start_date", "optional: a start date property (YYYY-MM-DD)"),
            ],
        },
    ];
    let secret = if config.hubspot.client_secret.is_some() {
        "HUBSPOT_CLIENT_SECRET is set"
    } else {
        "HUBSPOT_CLIENT_SECRET is NOT set here"
    };
    let tokens = match config.crm_inbound_tokens.len() {
        0 => "CRM_INBOUND_TOKEN is NOT set here".to_owned(),
        n => format!("CRM_INBOUND_TOKEN holds {n} value(s)"),
    };
    report.authentication = vec![
        format!(
            "\"Include request signature in header\", with the id of the HubSpot app whose client secret is HUBSPOT_CLIENT_SECRET ({secret})"
        ),
        format!(
            "\"API key\": key name {TOKEN_HEADER}, location request header, value one of CRM_INBOUND_TOKEN's values ({tokens})"
        ),
    ];
    if config.hubspot.client_secret.is_none() && config.crm_inbound_tokens.is_empty() {
        report.warnings.push(
            "neither HUBSPOT_CLIENT_SECRET nor CRM_INBOUND_TOKEN is set here: check the deployed functions have one, or every workflow call is refused".into(),
        );
    }
}
