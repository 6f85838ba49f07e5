//! How Salesforce calls out (`docs/crm-connectors.md` section 3.10):
//!
//! * **Outbound Messages**: a SOAP 1.1 `notifications` envelope (`OrganizationId`, `ActionId`,
//!   `SessionId` or nil, `EnterpriseUrl`, `PartnerUrl`, 1..100 `Notification {Id, sObject}`)
//!   POSTed as `text/xml; charset=utf-8` with `SOAPAction: ""`. Delivery is done only when the
//!   receiver answers 200 with a `notificationsResponse` whose `Ack` is `true`; anything else (a
//!   5xx, `Ack` false, a SOAP fault, no answer) is retried with exponentially growing gaps capped
//!   at 2 hours, and the message is dropped 24 hours after the first attempt
//!   ([`RetrySchedule::salesforce`]; tests use [`RetrySchedule::compressed`]). Notification ids
//!   are stable across retries; a message built from records carries the records' values at each
//!   attempt (send time, not trigger time). Duplicates and re-ordering can be asked for.
//! * **Flow HTTP Callout**: one JSON request to a named credential's URL with the credential's
//!   auth header (a bearer token or a custom header); Flow does not retry it.
//!
//! The first retry gap (30 s) is the fake's choice: the docs give only the growth and the caps.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::SalesforceFake;
use super::ids;

/// When to retry an outbound message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    pub first: Duration,
    pub factor: u32,
    pub cap: Duration,
    /// No attempt starts later than this after the first (then the message is dropped).
    pub give_up_after: Duration,
    /// At most this many attempts (`None`: only `give_up_after` ends it).
    pub max_attempts: Option<u32>,
}

impl RetrySchedule {
    /// Salesforce's: growing gaps capped at 2 hours, dropped after 24 hours.
    pub fn salesforce() -> Self {
        Self {
            first: Duration::from_secs(30),
            factor: 2,
            cap: Duration::from_secs(2 * 3600),
            give_up_after: Duration::from_secs(24 * 3600),
            max_attempts: None,
        }
    }

    /// Salesforce's schedule with every duration divided by `divisor` (1000: first retry after
    /// 30 ms, gaps capped at 7.2 s, dropped after 86.4 s).
    pub fn compressed(divisor: u32) -> Self {
        let s = Self::salesforce();
        let d = divisor.max(1);
        Self {
            first: s.first / d,
            cap: s.cap / d,
            give_up_after: s.give_up_after / d,
            ..s
        }
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// The gap before retry number `n` (1: the first retry).
    pub fn delay(&self, n: u32) -> Duration {
        let mut d = self.first;
        for _ in 1..n {
            d = d.saturating_mul(self.factor).min(self.cap);
        }
        d.min(self.cap)
    }
}

/// How outbound messages are delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundOptions {
    pub schedule: RetrySchedule,
    /// Per attempt.
    pub timeout: Duration,
    /// After the ack, deliver the same message this many more times (at-least-once delivery).
    pub duplicates: u32,
}

impl Default for OutboundOptions {
    fn default() -> Self {
        Self {
            schedule: RetrySchedule::compressed(1000),
            timeout: Duration::from_secs(10),
            duplicates: 0,
        }
    }
}

/// Where a notification's field values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Read from the fake's record with this id at each attempt: the admin's chosen fields.
    Record { id: String, fields: Vec<String> },
    /// Exactly these (`None`: `xsi:nil`). `Id` should be first.
    Fixed(Vec<(String, Option<String>)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// The notification id (`04l...`), the same on every retry: receivers dedupe on it.
    pub id: String,
    pub values: Values,
}

/// One outbound message: one action's notifications about records of one object.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundMessage {
    /// The workflow/flow action (`04k...`).
    pub action_id: String,
    pub object: String,
    pub notifications: Vec<Notification>,
    /// `Some`: "Send Session ID" is ticked and this session goes in `SessionId`.
    pub session_id: Option<String>,
}

/// One delivery attempt.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The wait before this attempt (zero for the first).
    pub waited: Duration,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response: String,
    pub acked: bool,
    /// The envelope this attempt sent.
    pub body: String,
}

/// What a delivery did.
#[derive(Clone, Debug)]
pub struct OutboundResult {
    pub url: String,
    pub notification_ids: Vec<String>,
    pub attempts: Vec<Attempt>,
    pub acked: bool,
    /// Why it stopped without an ack (dropped after the schedule ran out, ...).
    pub gave_up: Option<String>,
    /// Deliveries made after the ack (see [`OutboundOptions::duplicates`]).
    pub duplicates_sent: u32,
}

/// Escapes XML text.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether a SOAP answer is a `notificationsResponse` with `Ack` true (namespace prefixes
/// allowed).
pub fn is_ack(body: &str) -> bool {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        if stack.last().map(String::as_str) == Some("Ack")
            && stack.iter().any(|s| s == "notificationsResponse")
            && text.trim() == "true"
        {
            return true;
        }
        let Some(gt) = rest[lt..].find('>') else {
            return false;
        };
        let tag = &rest[lt + 1..lt + gt];
        rest = &rest[lt + gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        let closing = tag.starts_with('/');
        let self_closing = tag.ends_with('/');
        let name = tag
            .trim_start_matches('/')
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or_default();
        let local = name.rsplit(':').next().unwrap_or(name).to_owned();
        if closing {
            if let Some(i) = stack.iter().rposition(|s| *s == local) {
                stack.truncate(i);
            }
        } else if !self_closing {
            stack.push(local);
        }
    }
    false
}

fn render_value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

impl SalesforceFake {
    /// An outbound message about these records of `object`, carrying `fields` (`Id` is always
    /// sent first) read from the store at each delivery attempt. 1..=100 records.
    pub fn outbound_message(
        &self,
        object: &str,
        record_ids: &[&str],
        fields: &[&str],
    ) -> Result<OutboundMessage, String> {
        if record_ids.is_empty() || record_ids.len() > 100 {
            return Err(format!(
                "an outbound message carries 1 to 100 notifications, not {}",
                record_ids.len()
            ));
        }
        let db = self.db();
        let obj = db
            .object(object)
            .ok_or_else(|| format!("no sObject {object}"))?
            .clone();
        let mut names = vec!["Id".to_owned()];
        for f in fields {
            let def = obj
                .field(f)
                .ok_or_else(|| format!("{} has no field {f}", obj.name))?;
            if def.name != "Id" {
                names.push(def.name.clone());
            }
        }
        let mut notifications = Vec::new();
        for id in record_ids {
            let rec = db
                .get(&obj.name, id)
                .ok_or_else(|| format!("no {} {id}", obj.name))?;
            notifications.push(Notification {
                id: String::new(),
                values: Values::Record {
                    id: rec.id.clone(),
                    fields: names.clone(),
                },
            });
        }
        drop(db);
        for n in &mut notifications {
            n.id = self.next_emitter_id("04l");
        }
        Ok(OutboundMessage {
            action_id: self.action_id.clone(),
            object: obj.name,
            notifications,
            session_id: None,
        })
    }

    /// An outbound message with exactly these values per notification (for envelopes about
    /// records the fake does not hold, or with values a test chooses).
    pub fn outbound_message_with_values(
        &self,
        object: &str,
        rows: &[Vec<(&str, Option<&str>)>],
    ) -> Result<OutboundMessage, String> {
        if rows.is_empty() || rows.len() > 100 {
            return Err(format!(
                "an outbound message carries 1 to 100 notifications, not {}",
                rows.len()
            ));
        }
        let notifications = rows
            .iter()
            .map(|row| Notification {
                id: self.next_emitter_id("04l"),
                values: Values::Fixed(
                    row.iter()
                        .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                        .collect(),
                ),
            })
            .collect();
        Ok(OutboundMessage {
            action_id: self.action_id.clone(),
            object: object.to_owned(),
            notifications,
            session_id: None,
        })
    }

    /// The SOAP envelope of `msg` as it would be sent now.
    pub fn outbound_envelope(&self, msg: &OutboundMessage) -> String {
        let version = format!("{}.0", self.opts.api_version_latest);
        let instance = self.instance_url_or_default();
        let org15 = ids::short(&self.opts.org_id);
        let mut x = String::new();
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n");
        x.push_str(" <soapenv:Body>\n  <notifications xmlns=\"http://soap.sforce.com/2005/09/outbound\">\n");
        x.push_str(&format!(
            "   <OrganizationId>{}</OrganizationId>\n",
            xml_escape(&self.opts.org_id)
        ));
        x.push_str(&format!(
            "   <ActionId>{}</ActionId>\n",
            xml_escape(&msg.action_id)
        ));
        match &msg.session_id {
            Some(s) => x.push_str(&format!("   <SessionId>{}</SessionId>\n", xml_escape(s))),
            None => x.push_str("   <SessionId xsi:nil=\"true\"/>\n"),
        }
        x.push_str(&format!(
            "   <EnterpriseUrl>{}</EnterpriseUrl>\n",
            xml_escape(&format!("{instance}/services/Soap/c/{version}/{org15}"))
        ));
        x.push_str(&format!(
            "   <PartnerUrl>{}</PartnerUrl>\n",
            xml_escape(&format!("{instance}/services/Soap/u/{version}/{org15}"))
        ));
        let db = self.db();
        for n in &msg.notifications {
            let values: Vec<(String, Option<String>)> = match &n.values {
                Values::Fixed(v) => v.clone(),
                Values::Record { id, fields } => {
                    let rec = db.get(&msg.object, id);
                    fields
                        .iter()
                        .filter(|f| {
                            db.object(&msg.object)
                                .and_then(|o| o.field(f))
                                .is_none_or(|d| d.ftype != super::schema::FieldType::Base64)
                        })
                        .map(|f| {
                            let v = rec.and_then(|r| r.fields.get(f)).and_then(render_value);
                            (f.clone(), v)
                        })
                        .collect()
                }
            };
            x.push_str("   <Notification>\n");
            x.push_str(&format!("    <Id>{}</Id>\n", xml_escape(&n.id)));
            x.push_str(&format!(
                "    <sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n",
                xml_escape(&msg.object)
            ));
            for (k, v) in values {
                let k = xml_escape(&k);
                match v {
                    Some(v) => x.push_str(&format!("     <sf:{k}>{}</sf:{k}>\n", xml_escape(&v))),
                    None => x.push_str(&format!("     <sf:{k} xsi:nil=\"true\"/>\n")),
                }
            }
            x.push_str("    </sObject>\n   </Notification>\n");
        }
        x.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
        x
    }

    /// Delivers `msg` to `url` with the fake's [`OutboundOptions`], retrying until acked or
    /// dropped. The result is also kept in [`SalesforceFake::outbound_log`].
    pub async fn send_outbound(&self, url: &str, msg: &OutboundMessage) -> OutboundResult {
        let opts = self.opts.outbound.clone();
        self.send_outbound_with(url, msg, &opts).await
    }

    /// Delivers several messages one after another: in order, or last first (`reversed`), as
    /// Salesforce may deliver them out of order.
    pub async fn send_outbound_all(
        &self,
        url: &str,
        msgs: &[OutboundMessage],
        reversed: bool,
    ) -> Vec<OutboundResult> {
        let mut order: Vec<&OutboundMessage> = msgs.iter().collect();
        if reversed {
            order.reverse();
        }
        let mut out = Vec::new();
        for m in order {
            out.push(self.send_outbound(url, m).await);
        }
        out
    }

    pub async fn send_outbound_with(
        &self,
        url: &str,
        msg: &OutboundMessage,
        opts: &OutboundOptions,
    ) -> OutboundResult {
        let mut result = OutboundResult {
            url: url.to_owned(),
            notification_ids: msg.notifications.iter().map(|n| n.id.clone()).collect(),
            attempts: Vec::new(),
            acked: false,
            gave_up: None,
            duplicates_sent: 0,
        };
        let client = match enerflo_sync::wire::client_builder()
            .timeout(opts.timeout)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                result.gave_up = Some(format!("no HTTP client: {e}"));
                self.log_outbound(&result);
                return result;
            }
        };
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let mut retries = 0u32;
        loop {
            let attempt = self.attempt(&client, url, msg, waited).await;
            let acked = attempt.acked;
            result.attempts.push(attempt);
            if acked {
                result.acked = true;
                break;
            }
            retries += 1;
            if opts
                .schedule
                .max_attempts
                .is_some_and(|n| result.attempts.len() as u32 >= n)
            {
                result.gave_up = Some(format!(
                    "stopped after {} attempts without an ack",
                    result.attempts.len()
                ));
                break;
            }
            let next = opts.schedule.delay(retries);
            if started.elapsed() + next > opts.schedule.give_up_after {
                result.gave_up = Some(format!(
                    "dropped: no ack within {:?} of the first attempt",
                    opts.schedule.give_up_after
                ));
                break;
            }
            tokio::time::sleep(next).await;
            waited = next;
        }
        if result.acked {
            for _ in 0..opts.duplicates {
                let a = self.attempt(&client, url, msg, Duration::ZERO).await;
                result.attempts.push(a);
                result.duplicates_sent += 1;
            }
        }
        self.log_outbound(&result);
        result
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        url: &str,
        msg: &OutboundMessage,
        waited: Duration,
    ) -> Attempt {
        let body = self.outbound_envelope(msg);
        let mut a = Attempt {
            waited,
            status: None,
            error: None,
            response: String::new(),
            acked: false,
            body: body.clone(),
        };
        let sent = client
            .post(url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "\"\"")
            .header("User-Agent", "Salesforce Outbound Messaging (local fake)")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                a.status = Some(status);
                a.response = resp.text().await.unwrap_or_default();
                a.acked = status == 200 && is_ack(&a.response);
            }
            Err(e) => a.error = Some(e.without_url().to_string()),
        }
        a
    }

    /// Sends one Flow HTTP Callout: `method` `body` (JSON) to the credential's URL + `path`,
    /// with its auth header. No retry, as in Flow.
    pub async fn flow_callout(
        &self,
        credential: &NamedCredential,
        method: &str,
        path: &str,
        body: &Value,
    ) -> CalloutResult {
        let url = format!("{}{path}", credential.url.trim_end_matches('/'));
        let raw = body.to_string();
        let mut headers = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("Accept".to_owned(), "application/json".to_owned()),
        ];
        match &credential.auth {
            CalloutAuth::None => {}
            CalloutAuth::Bearer(t) => headers.push(("Authorization".into(), format!("Bearer {t}"))),
            CalloutAuth::Header { name, value } => headers.push((name.clone(), value.clone())),
        }
        let mut result = CalloutResult {
            url: url.clone(),
            body: raw.clone(),
            headers: headers.clone(),
            status: None,
            error: None,
            response: String::new(),
        };
        let client = match enerflo_sync::wire::client_builder()
            .timeout(credential.timeout)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                result.error = Some(format!("no HTTP client: {e}"));
                return result;
            }
        };
        let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let mut req = client.request(m, &url).body(raw);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(resp) => {
                result.status = Some(resp.status().as_u16());
                result.response = resp.text().await.unwrap_or_default();
            }
            Err(e) => result.error = Some(e.without_url().to_string()),
        }
        self.log_callout(&result);
        result
    }
}

/// How a Flow callout authenticates (the External Credential behind the Named Credential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CalloutAuth {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// A custom header (`X-Enerflo-Sync-Token: ...`).
    Header {
        name: String,
        value: String,
    },
}

/// A Named Credential: the base URL the callout's path is appended to, and its auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedCredential {
    pub url: String,
    pub auth: CalloutAuth,
    /// Flow/Apex callouts time out after 10 s by default (120 s at most).
    pub timeout: Duration,
}

impl NamedCredential {
    pub fn bearer(url: &str, token: &str) -> Self {
        Self {
            url: url.to_owned(),
            auth: CalloutAuth::Bearer(token.to_owned()),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a callout did.
#[derive(Clone, Debug)]
pub struct CalloutResult {
    pub url: String,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_read_with_or_without_prefixes() {
        let plain = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#;
        assert!(is_ack(plain));
        assert!(is_ack(
            "<s:Envelope><s:Body><out:notificationsResponse><out:Ack> true </out:Ack></out:notificationsResponse></s:Body></s:Envelope>"
        ));
        assert!(!is_ack(&plain.replace("true", "false")));
        assert!(!is_ack("<Envelope><Body><Ack>true</Ack></Body></Envelope>"));
        assert!(!is_ack(
            "<soapenv:Fault><faultstring>no</faultstring></soapenv:Fault>"
        ));
    }

    #[test]
    fn the_schedule_doubles_up_to_its_cap() {
        let s = RetrySchedule::compressed(1000);
        assert_eq!(s.delay(1), Duration::from_millis(30));
        assert_eq!(s.delay(2), Duration::from_millis(60));
        assert_eq!(s.delay(30), Duration::from_millis(7200));
    }
}
