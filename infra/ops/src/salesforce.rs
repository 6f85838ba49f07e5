//! `enerflo-sync-ops salesforce setup`: checks a Salesforce org for `CRM_CONNECTOR=salesforce`
//! and prints what its admin configures. It changes nothing (fields and picklist values are
//! metadata, made in Setup or deployed), it reports:
//!
//! - for each object of the mapping profile (`GET /sobjects/{Object}/describe`), every field the
//!   profile writes that is missing, with the type to create from its conversion (Text(255),
//!   Number(18, 2), Date, Date/Time, Checkbox, Long Text Area, Picklist), or that exists with a
//!   type the value cannot be written to, or read-only;
//! - every key field (`Enerflo_Customer_Id__c`, `Enerflo_Deal_Id__c`, ...) that is not an
//!   External ID, or not Unique (an upsert by a non-unique external id can match several records,
//!   docs/crm-connectors.md 3.4);
//! - every value of the stage field (`StageName`) the profile names (`first_stage`,
//!   `stages.by_status`) missing from its picklist or inactive;
//! - the org's id against `SALESFORCE_ORG_ID`, which Outbound Messages are checked against;
//!
//! and prints the Flow HTTP Callout and Outbound Message configuration (URLs, the header, the
//! body keys and the fields to include). Exits non-zero when anything is to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::anyhow;
use enerflo_sync::canonical::CrmEventType;
use enerflo_sync::config::Config;
use enerflo_sync::crm::CrmError;
use enerflo_sync::crm::profile::{Conversion, Profile};
use enerflo_sync::crm::salesforce::api::{SalesforceApi, SalesforceError};
use enerflo_sync::inbound::salesforce::same_salesforce_id;
use enerflo_sync::wire::encode_segment;
use reqwest::Method;
use serde_json::{Value, json};

/// The configuration `salesforce setup` runs with: the functions' environment, with
/// `CRM_CONNECTOR=salesforce` implied and the Salesforce credentials required.
pub fn config_from(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
    let config = Config::from_lookup(|k| {
        if k == "CRM_CONNECTOR" {
            Some("salesforce".into())
        } else {
            get(k)
        }
    })?;
    config.salesforce_crm()?;
    Ok(config)
}

#[derive(Clone, Debug, Default)]
pub struct SetupOptions {
    /// The API's public base URL (the stack's `ApiBaseUrl` output, or a custom domain).
    pub public_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    InPlace,
    /// To fix in Salesforce (or the profile); makes the command exit non-zero.
    Problem,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InPlace => "in place",
            Self::Problem => "PROBLEM",
        }
    }
}

/// One checked thing: `object Opportunity`, `field Opportunity.PTO_Date__c`,
/// `picklist value Opportunity.StageName "Closed Won"`, `org`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub outcome: Outcome,
    pub subject: String,
    pub detail: String,
}

/// One Flow HTTP Callout route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callout {
    pub name: &'static str,
    /// The object the flow runs on.
    pub object: String,
    pub url: String,
    /// The JSON body's keys, each with where its value comes from.
    pub body_keys: Vec<(String, String)>,
}

/// One Outbound Message to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    pub object: String,
    pub url: String,
    /// The fields to select.
    pub fields: Vec<String>,
    /// When the workflow rule or flow should send it.
    pub when: String,
}

#[derive(Clone, Debug)]
pub struct SetupReport {
    pub profile: String,
    /// The org's id, as Salesforce answered it.
    pub org_id: Option<String>,
    pub findings: Vec<Finding>,
    pub callouts: Vec<Callout>,
    pub outbound: Vec<OutboundMessage>,
    /// How the callouts authenticate, as lines to show.
    pub authentication: Vec<String>,
    pub warnings: Vec<String>,
}

impl SetupReport {
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.outcome == Outcome::Problem)
    }

    pub fn has_problems(&self) -> bool {
        self.problems().next().is_some()
    }

    /// The finding about `subject`, if any.
    pub fn finding(&self, subject: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.subject == subject)
    }

    pub fn summary(&self) -> String {
        let problems = self.problems().count();
        let in_place = self.findings.len() - problems;
        match problems {
            0 => format!("salesforce setup: {in_place} in place; no problems"),
            n => format!(
                "salesforce setup: {in_place} in place; {n} problem(s) to fix in Salesforce (this command changes nothing)"
            ),
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "Salesforce setup for profile {}, org {}\n",
            self.profile,
            self.org_id.as_deref().unwrap_or("?")
        );
        for f in &self.findings {
            out.push_str(&format!(
                "  {:<9} {}: {}\n",
                f.outcome.as_str(),
                f.subject,
                f.detail
            ));
        }
        out.push_str("\nFlow HTTP Callouts (Flow Builder: Action > Create HTTP Callout, method POST, on the named credential):\n");
        for c in &self.callouts {
            out.push_str(&format!(
                "  {} ({} flow): POST {}\n",
                c.name, c.object, c.url
            ));
            for (key, from) in &c.body_keys {
                out.push_str(&format!("      {key:<22} {from}\n"));
            }
        }
        out.push_str("\nAuthentication of the callouts:\n");
        for a in &self.authentication {
            out.push_str(&format!("  - {a}\n"));
        }
        out.push_str("\nOutbound Messages (Setup > Outbound Messages; send session id: no):\n");
        for m in &self.outbound {
            out.push_str(&format!(
                "  {}: endpoint {}\n      fields: {}\n      send when: {}\n",
                m.object,
                m.url,
                m.fields.join(", "),
                m.when
            ));
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
            "profile": self.profile,
            "org_id": self.org_id,
            "findings": self.findings.iter().map(|f| json!({
                "outcome": f.outcome.as_str(), "subject": f.subject, "detail": f.detail,
            })).collect::<Vec<_>>(),
            "flow_callouts": self.callouts.iter().map(|c| json!({
                "name": c.name, "object": c.object, "method": "POST", "url": c.url,
                "body_keys": c.body_keys.iter().map(|(k, from)| json!({"key": k, "from": from})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "outbound_messages": self.outbound.iter().map(|m| json!({
                "object": m.object, "url": m.url, "fields": m.fields, "when": m.when,
            })).collect::<Vec<_>>(),
            "authentication": self.authentication,
            "warnings": self.warnings,
            "summary": self.summary(),
            "problems": self.problems().count(),
        })
    }
}

/// The field type to create for a conversion, and the describe `type`s a value of it can be
/// written to.
pub fn salesforce_type(conversion: &Conversion) -> (&'static str, &'static [&'static str]) {
    const TEXT: &[&str] = &[
        "string",
        "textarea",
        "picklist",
        "multipicklist",
        "combobox",
        "email",
        "phone",
        "url",
        "encryptedstring",
        // ContentNote.Content: the connector writes the note's text base64-encoded.
        "base64",
    ];
    match conversion {
        Conversion::Text => ("Text(255)", TEXT),
        Conversion::Enumeration { .. } => ("Picklist", &["picklist", "string", "combobox"]),
        Conversion::Number { .. } => (
            "Number(18, 2)",
            &["double", "currency", "int", "long", "percent"],
        ),
        Conversion::Date => ("Date", &["date"]),
        Conversion::DateTime => ("Date/Time", &["datetime"]),
        Conversion::Bool => ("Checkbox", &["boolean"]),
        Conversion::List { .. } | Conversion::Json => {
            ("Long Text Area(32768)", &["textarea", "string"])
        }
    }
}

/// Custom fields end `__c`; anything else is Salesforce's own and is never created.
fn is_custom(name: &str) -> bool {
    name.ends_with("__c")
}

/// One wanted field: how the profile writes it, and whether records are found by it.
#[derive(Clone, Debug, PartialEq)]
struct Wanted {
    conversion: Conversion,
    key: bool,
}

/// Per object, every field the profile writes. A note's keys are not fields: the connector
/// marks its ContentNote by title (`crate::crm::salesforce::note_title`).
fn wanted(profile: &Profile) -> BTreeMap<String, BTreeMap<String, Wanted>> {
    let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
    let mut add_keys = |ev: &enerflo_sync::crm::profile::EventMap| {
        for k in &ev.keys {
            keys.insert((ev.object.clone(), k.property.clone()));
        }
    };
    for (t, ev) in &profile.events {
        if *t == CrmEventType::NoteCreated.as_str() {
            continue;
        }
        add_keys(ev);
        if let Some(c) = &ev.contact {
            add_keys(c);
        }
    }
    let note = profile.event(CrmEventType::NoteCreated);
    let mut out: BTreeMap<String, BTreeMap<String, Wanted>> = BTreeMap::new();
    for (object, props) in profile.properties_by_object() {
        for (name, conversion) in props {
            let is_note_key = object == note.object && note.keys.iter().any(|k| k.property == name);
            if is_note_key {
                continue;
            }
            let key = keys.contains(&(object.clone(), name.clone()));
            out.entry(object.clone())
                .or_default()
                .insert(name, Wanted { conversion, key });
        }
    }
    // The stage field is written beside the profile's properties (first stage, mapped statuses).
    let deal = profile.event(CrmEventType::StatusChanged);
    out.entry(deal.object.clone())
        .or_default()
        .entry(profile.stages.property.clone())
        .or_insert(Wanted {
            conversion: Conversion::Text,
            key: false,
        });
    if note.object == "ContentNote" {
        out.entry(note.object.clone()).or_default().insert(
            "Title".into(),
            Wanted {
                conversion: Conversion::Text,
                key: false,
            },
        );
    }
    out
}

const MAX_TRIES: u32 = 3;

/// A read, retried briefly when Salesforce is unavailable; `Ok(None)` for 404. A refused
/// session stops the run.
async fn get(api: &SalesforceApi, path: &str) -> anyhow::Result<Result<Option<Value>, String>> {
    let mut tries = 0;
    loop {
        tries += 1;
        match api.call(Method::GET, path, None).await {
            Ok(a) => return Ok(Ok(Some(a.body))),
            Err(SalesforceError::NotFound(_)) => return Ok(Ok(None)),
            // The token endpoint's refusal (any status), or a session refused after a fresh
            // token: nothing else can be read either.
            Err(SalesforceError::Crm(CrmError::Rejected { status, message }))
                if status == 401 || message.starts_with("Salesforce refused the credentials") =>
            {
                return Err(anyhow!(
                    "Salesforce refused the credentials (HTTP {status} to GET {path}): {message}"
                ));
            }
            Err(SalesforceError::Crm(CrmError::Rejected { status, message })) => {
                return Ok(Err(format!(
                    "Salesforce answered {status} to GET {path}: {message}"
                )));
            }
            Err(SalesforceError::Crm(CrmError::Unavailable { status, detail, .. })) => {
                if tries >= MAX_TRIES {
                    let status = status.map_or("no answer".to_owned(), |s| format!("HTTP {s}"));
                    return Ok(Err(format!(
                        "Salesforce unavailable for GET {path} after {tries} tries ({status}): {detail}"
                    )));
                }
                tokio::time::sleep(Duration::from_secs(u64::from(tries))).await;
            }
            Err(e) => {
                return Ok(Err(format!(
                    "GET {path}: {}",
                    e.into_crm("reading the schema")
                )));
            }
        }
    }
}

/// Checks the org; see the module comment. Refused credentials stop the run (`Err`); every other
/// failure is a [`Outcome::Problem`] and the run goes on.
pub async fn setup(config: &Config, options: &SetupOptions) -> anyhow::Result<SetupReport> {
    let salesforce = config.salesforce_crm()?;
    let profile = salesforce.profile.clone();
    let api = enerflo_sync::runtime::salesforce_api(&salesforce)?;
    let mut report = SetupReport {
        profile: profile.name.clone(),
        org_id: None,
        findings: Vec::new(),
        callouts: Vec::new(),
        outbound: Vec::new(),
        authentication: Vec::new(),
        warnings: Vec::new(),
    };
    check_org(&api, config, &mut report).await?;
    let stage_object = profile.event(CrmEventType::StatusChanged).object.clone();
    for (object, fields) in wanted(&profile) {
        let path = api.data_path(&format!("/sobjects/{}/describe", encode_segment(&object)));
        let subject = format!("object {object}");
        let describe = match get(&api, &path).await? {
            Ok(Some(d)) => d,
            Ok(None) => {
                report.findings.push(Finding {
                    outcome: Outcome::Problem,
                    subject,
                    detail: format!(
                        "does not exist, or the integration user cannot see it (GET {path} answered 404): fix the profile's object or the user's permissions; its fields are not checked"
                    ),
                });
                continue;
            }
            Err(why) => {
                report.findings.push(Finding {
                    outcome: Outcome::Problem,
                    subject,
                    detail: format!("{why}; its fields are not checked"),
                });
                continue;
            }
        };
        let by_name: BTreeMap<&str, &Value> = describe
            .get("fields")
            .and_then(Value::as_array)
            .map(|fs| {
                fs.iter()
                    .filter_map(|f| f.get("name").and_then(Value::as_str).map(|n| (n, f)))
                    .collect()
            })
            .unwrap_or_default();
        report.findings.push(Finding {
            outcome: Outcome::InPlace,
            subject,
            detail: format!(
                "exists, {} field(s); the profile writes {}",
                by_name.len(),
                fields.len()
            ),
        });
        for (name, w) in &fields {
            let found = by_name.get(name.as_str()).copied();
            report.findings.push(judge(&object, name, w, found));
        }
        if object == stage_object {
            check_stages(
                &profile,
                &object,
                by_name.get(profile.stages.property.as_str()).copied(),
                &mut report,
            );
        }
    }
    configuration(config, &profile, options, &mut report);
    Ok(report)
}

async fn check_org(
    api: &SalesforceApi,
    config: &Config,
    report: &mut SetupReport,
) -> anyhow::Result<()> {
    let path = api.data_path(&format!(
        "/query?q={}",
        encode_segment("SELECT Id FROM Organization")
    ));
    let found = match get(api, &path).await? {
        Ok(Some(body)) => body
            .pointer("/records/0/Id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Ok(None) => None,
        Err(why) => {
            report.warnings.push(format!(
                "the org's id could not be read ({why}): SALESFORCE_ORG_ID is not checked"
            ));
            return Ok(());
        }
    };
    report.org_id = found.clone();
    let configured = config.salesforce.org_id.as_deref();
    let finding = match (&found, configured) {
        (Some(org), Some(set)) if same_salesforce_id(org, set) => Finding {
            outcome: Outcome::InPlace,
            subject: "org".into(),
            detail: format!("{org} is SALESFORCE_ORG_ID: its Outbound Messages are accepted"),
        },
        (Some(org), Some(set)) => Finding {
            outcome: Outcome::Problem,
            subject: "org".into(),
            detail: format!(
                "this org is {org} but SALESFORCE_ORG_ID is {set}: its Outbound Messages would be refused (403); set SALESFORCE_ORG_ID={org}"
            ),
        },
        (Some(org), None) => Finding {
            outcome: Outcome::Problem,
            subject: "org".into(),
            detail: format!(
                "SALESFORCE_ORG_ID is not set: every Outbound Message is refused until it is; set SALESFORCE_ORG_ID={org}"
            ),
        },
        (None, _) => {
            report.warnings.push(
                "Salesforce answered no Organization record: SALESFORCE_ORG_ID is not checked"
                    .into(),
            );
            return Ok(());
        }
    };
    report.findings.push(finding);
    Ok(())
}

/// An existing (or missing) field against what the profile writes; nothing is changed.
fn judge(object: &str, name: &str, w: &Wanted, found: Option<&Value>) -> Finding {
    let subject = format!("field {object}.{name}");
    let (create, accepted) = salesforce_type(&w.conversion);
    let problem = |detail: String| Finding {
        outcome: Outcome::Problem,
        subject: subject.clone(),
        detail,
    };
    let Some(f) = found else {
        if !is_custom(name) {
            return problem(format!(
                "a standard field the profile writes, but {object} has none visible to the integration user: check the profile, or the field-level security"
            ));
        }
        let key = if w.key {
            ", External ID, Unique (case-insensitive): records are found by it"
        } else {
            ""
        };
        let options = match &w.conversion {
            Conversion::Enumeration { options } => format!(
                " with the values {}",
                options
                    .values()
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        };
        return problem(format!(
            "missing: create it as {create}{options}{key} (or grant the integration user field-level access if it exists)"
        ));
    };
    let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("?");
    let b = |k: &str| f.get(k).and_then(Value::as_bool);
    let kind = s("type");
    if !accepted.contains(&kind) {
        return problem(format!(
            "exists as {kind}, but the profile writes it as {create}: change its type in Salesforce, or the profile"
        ));
    }
    if b("updateable") == Some(false) && b("createable") == Some(false) {
        return problem(format!(
            "exists as {kind} but is read-only for the integration user (a formula, or field-level security): the sync cannot write it"
        ));
    }
    if w.key {
        let mut missing = Vec::new();
        if b("externalId") != Some(true) {
            missing.push("External ID");
        }
        if b("unique") != Some(true) {
            missing.push("Unique");
        }
        if !missing.is_empty() {
            return problem(format!(
                "exists as {kind} but is not {}: the sync upserts records by it; tick {} on the field",
                missing.join(" and "),
                missing.join(" and ")
            ));
        }
        return Finding {
            outcome: Outcome::InPlace,
            subject,
            detail: format!("exists ({kind}, External ID, Unique)"),
        };
    }
    Finding {
        outcome: Outcome::InPlace,
        subject,
        detail: format!("exists ({kind})"),
    }
}

/// Every stage value the profile names must be an active value of the stage field's picklist.
fn check_stages(profile: &Profile, object: &str, field: Option<&Value>, report: &mut SetupReport) {
    let stage_field = &profile.stages.property;
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
    let Some(field) = field else {
        // Reported as a missing field already.
        return;
    };
    let values: BTreeMap<&str, bool> = field
        .get("picklistValues")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    let value = v.get("value").and_then(Value::as_str)?;
                    Some((
                        value,
                        v.get("active").and_then(Value::as_bool) != Some(false),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    for (stage, wherein) in named {
        let subject = format!("picklist value {object}.{stage_field} \"{stage}\"");
        let (outcome, detail) = match values.get(stage) {
            Some(true) => (
                Outcome::InPlace,
                format!("active (named by {})", wherein.join(", ")),
            ),
            Some(false) => (
                Outcome::Problem,
                format!(
                    "inactive, but named by {}: activate it in Setup (Opportunity Stages), or change the profile",
                    wherein.join(", ")
                ),
            ),
            None => (
                Outcome::Problem,
                format!(
                    "missing, but named by {}: add it to {object}.{stage_field}'s picklist (for StageName: Setup > Opportunity Stages, and the sales process), or change the profile; its values are: {}",
                    wherein.join(", "),
                    values.keys().copied().collect::<Vec<_>>().join(", ")
                ),
            ),
        };
        report.findings.push(Finding {
            outcome,
            subject,
            detail,
        });
    }
}

/// The Flow callouts and Outbound Messages to configure.
fn configuration(
    config: &Config,
    profile: &Profile,
    options: &SetupOptions,
    report: &mut SetupReport,
) {
    let base = match &options.public_url {
        Some(u) => {
            let u = u.trim().trim_end_matches('/').to_owned();
            if !u.starts_with("https://") {
                report.warnings.push(format!(
                    "{u}: Salesforce calls out to https:// endpoints only"
                ));
            }
            u
        }
        None => {
            report.warnings.push(
                "no public URL: pass --public-url with the stack's ApiBaseUrl output (or its custom domain)".into(),
            );
            "<ApiBaseUrl>".to_owned()
        }
    };
    let lead = profile.event(CrmEventType::LeadUpserted);
    let deal = profile.event(CrmEventType::StatusChanged);
    let install_field = deal
        .keys
        .iter()
        .find(|k| k.field.text == "$enerflo.install_id")
        .map(|k| k.property.clone());
    let stage_field = profile.stages.property.clone();
    let mut deal_ids = vec![("record_id".to_owned(), format!("{}.Id", deal.object))];
    if let Some(f) = &install_field {
        deal_ids.push((
            "enerflo_install_id".into(),
            format!("{}.{f} (optional; wins over record_id)", deal.object),
        ));
    }
    let mut lead_keys = vec![("record_id".to_owned(), format!("{}.Id", lead.object))];
    for (key, from) in [
        ("first_name", "FirstName"),
        ("last_name", "LastName"),
        ("email", "Email"),
        ("mobile", "MobilePhone (digits)"),
        ("address.street", "MailingStreet"),
        ("address.city", "MailingCity"),
        ("address.state", "MailingState (2 letters)"),
        ("address.zip", "MailingPostalCode"),
        ("rep_email", "the sales rep's e-mail (e.g. Owner.Email)"),
        ("lead_source", "LeadSource"),
        (
            "deal_type_id",
            "optional: an Enerflo deal type id, to create a deal",
        ),
    ] {
        lead_keys.push((key.into(), from.into()));
    }
    let mut status_keys = deal_ids.clone();
    status_keys.push((
        stage_field.clone(),
        format!("{}.{stage_field} (or, instead, the key below)", deal.object),
    ));
    status_keys.push((
        "status".into(),
        "an Enerflo install status name (instead of the stage)".into(),
    ));
    let mut milestone_keys = deal_ids.clone();
    milestone_keys.push((
        "milestone".into(),
        "the Enerflo milestone id or MILESTONE_KEY_MAP key (a static value)".into(),
    ));
    milestone_keys.push((
        "completed_date".into(),
        "the milestone's date (a Date; null clears it)".into(),
    ));
    milestone_keys.push(("start_date".into(), "optional: a start date".into()));
    let mut note_keys = deal_ids.clone();
    note_keys.push((
        "crm_note_id".into(),
        "the note's id (ContentNote.Id)".into(),
    ));
    note_keys.push(("text".into(), "the note's text".into()));
    note_keys.push(("author".into(), "optional: who wrote it".into()));
    report.callouts = vec![
        Callout {
            name: "lead",
            object: lead.object.clone(),
            url: format!("{base}/crm/salesforce/lead"),
            body_keys: lead_keys,
        },
        Callout {
            name: "status",
            object: deal.object.clone(),
            url: format!("{base}/crm/salesforce/status"),
            body_keys: status_keys,
        },
        Callout {
            name: "milestone",
            object: deal.object.clone(),
            url: format!("{base}/crm/salesforce/milestone"),
            body_keys: milestone_keys,
        },
        Callout {
            name: "note",
            object: deal.object.clone(),
            url: format!("{base}/crm/salesforce/note"),
            body_keys: note_keys,
        },
    ];
    let tokens = match config.crm_inbound_tokens.len() {
        0 => "CRM_INBOUND_TOKEN is NOT set here".to_owned(),
        n => format!("CRM_INBOUND_TOKEN holds {n} value(s)"),
    };
    report.authentication = vec![
        format!(
            "a Named Credential with URL {base} and an External Credential (custom header) adding `Authorization: Bearer <a CRM_INBOUND_TOKEN value>` ({tokens}); the callouts use paths /crm/salesforce/..."
        ),
        "callouts cannot run in a record-triggered flow's synchronous save: run them on an asynchronous path".into(),
    ];
    if config.crm_inbound_tokens.is_empty() {
        report.warnings.push(
            "CRM_INBOUND_TOKEN is not set here: check the deployed functions have it, or every callout and Outbound Message is refused".into(),
        );
    }
    let url = format!("{base}/crm/salesforce/outbound-message?token=<a CRM_INBOUND_TOKEN value>");
    let mut deal_fields = vec!["Id".to_owned()];
    deal_fields.extend(deal.keys.iter().map(|k| k.property.clone()));
    deal_fields.push(stage_field.clone());
    deal_fields.extend(profile.milestone_dates.values().cloned());
    let mut lead_fields = vec!["Id".to_owned()];
    lead_fields.extend(lead.properties.iter().filter_map(|(name, p)| {
        p.fields
            .first()
            .and_then(|f| enerflo_sync::inbound::salesforce::lead_field(&f.text))
            .map(|_| name.clone())
    }));
    report.outbound = vec![
        OutboundMessage {
            object: deal.object.clone(),
            url: url.clone(),
            fields: deal_fields,
            when: format!(
                "{stage_field} or a milestone date changed (ISCHANGED), by a user other than the integration user"
            ),
        },
        OutboundMessage {
            object: lead.object.clone(),
            url,
            fields: lead_fields,
            when: "created, or its name, e-mail, phone or address changed, by a user other than the integration user".into(),
        },
    ];
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn default_profile() -> Profile {
        Profile::parse(
            "built-in salesforce",
            enerflo_sync::crm::profile::SALESFORCE_DEFAULT,
        )
        .unwrap()
    }

    #[test]
    fn every_conversion_has_a_type_to_create_that_it_accepts() {
        for (c, create, kind) in [
            (Conversion::Text, "Text(255)", "string"),
            (Conversion::Number { scale: 1.0 }, "Number(18, 2)", "double"),
            (Conversion::Date, "Date", "date"),
            (Conversion::DateTime, "Date/Time", "datetime"),
            (Conversion::Bool, "Checkbox", "boolean"),
            (Conversion::Json, "Long Text Area(32768)", "textarea"),
        ] {
            let (made, accepted) = salesforce_type(&c);
            assert_eq!(made, create);
            assert!(accepted.contains(&kind), "{c:?}");
        }
        assert!(!salesforce_type(&Conversion::Date).1.contains(&"string"));
    }

    #[test]
    fn the_default_profile_wants_its_keys_as_keys_and_no_note_key_as_a_field() {
        let w = wanted(&default_profile());
        let opp = &w["Opportunity"];
        assert!(opp["Enerflo_Deal_Id__c"].key && opp["Enerflo_Install_Id__c"].key);
        assert!(!opp["StageName"].key);
        assert_eq!(opp["PTO_Date__c"].conversion, Conversion::Date);
        assert!(w["Contact"]["Enerflo_Customer_Id__c"].key);
        assert!(!w["ContentNote"].contains_key("Enerflo_Note_Id"));
        assert!(w["ContentNote"].contains_key("Title"));
    }

    #[test]
    fn a_missing_custom_field_names_the_type_to_create_and_a_key_its_flags() {
        let w = Wanted {
            conversion: Conversion::Text,
            key: true,
        };
        let f = judge("Opportunity", "Enerflo_Deal_Id__c", &w, None);
        assert_eq!(f.outcome, Outcome::Problem);
        assert!(
            f.detail.contains("Text(255), External ID, Unique"),
            "{}",
            f.detail
        );
        let not_unique = json!({"name": "Enerflo_Deal_Id__c", "type": "string", "externalId": true, "unique": false, "updateable": true});
        let f = judge("Opportunity", "Enerflo_Deal_Id__c", &w, Some(&not_unique));
        assert_eq!(f.outcome, Outcome::Problem);
        assert!(f.detail.contains("not Unique"), "{}", f.detail);
        let wrong_type = json!({"name": "PTO_Date__c", "type": "string", "updateable": true});
        let d = Wanted {
            conversion: Conversion::Date,
            key: false,
        };
        let f = judge("Opportunity", "PTO_Date__c", &d, Some(&wrong_type));
        assert!(f.detail.contains("exists as string"), "{}", f.detail);
    }
}
