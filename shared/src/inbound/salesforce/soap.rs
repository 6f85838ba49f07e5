//! The SOAP 1.1 side of Salesforce Outbound Messages (docs/crm-connectors.md 3.10.1): reading the
//! `notifications` envelope, and the two answers Salesforce understands, the
//! `notificationsResponse` with `<Ack>true</Ack>` and a SOAP fault.
//!
//! The reader is namespace-aware (quick-xml's `NsReader`): the envelope must be
//! `{http://schemas.xmlsoap.org/soap/envelope/}Envelope` whatever its prefix, the `notifications`
//! element in `http://soap.sforce.com/2005/09/outbound`, and an sObject's type is its `xsi:type`
//! without the prefix (`sf:Opportunity` -> `Opportunity`). A DTD, an undeclared prefix, an
//! unknown entity, mismatched tags or a missing required element make the envelope malformed;
//! the error names what is wrong.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::http::HttpResponse;

pub const SOAP_ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// Salesforce sends at most 100 notifications in one message.
pub const MAX_NOTIFICATIONS: usize = 100;
/// Deeper than any Outbound Message nests (Envelope/Body/notifications/Notification/sObject/field).
const MAX_DEPTH: usize = 16;

/// One Outbound Message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notifications {
    pub organization_id: String,
    /// The workflow rule or flow action that sent it.
    pub action_id: Option<String>,
    pub notifications: Vec<Notification>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Stable across Salesforce's retries of this notification: the dedupe key.
    pub id: String,
    pub sobject: SObject,
}

/// The record as it was when the message was sent, with the fields the admin selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SObject {
    /// `Opportunity`, `Contact`, ...
    pub object_type: String,
    /// Field -> value; `None` for `xsi:nil="true"` or an empty element (no value in Salesforce).
    pub fields: BTreeMap<String, Option<String>>,
}

impl SObject {
    /// The field's value, trimmed; `None` when absent, nil or blank.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .get(field)
            .and_then(|v| v.as_deref())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }
}

/// An element of the parsed document.
#[derive(Debug, Default)]
struct Element {
    ns: Option<String>,
    name: String,
    /// (namespace, local name, value) of each attribute but namespace declarations.
    attrs: Vec<(Option<String>, String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn is(&self, ns: &str, name: &str) -> bool {
        self.ns.as_deref() == Some(ns) && self.name == name
    }

    fn attr(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, l, _)| n.as_deref() == Some(ns) && l == name)
            .map(|(_, _, v)| v.as_str())
    }

    fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// The text of a leaf child, trimmed; `None` when absent, nil or blank.
    fn child_text(&self, ns: &str, name: &str) -> Option<String> {
        let c = self.child(ns, name)?;
        if c.attr(XSI_NS, "nil") == Some("true") {
            return None;
        }
        Some(c.text.trim().to_owned()).filter(|t| !t.is_empty())
    }
}

fn namespace(r: ResolveResult<'_>) -> Result<Option<String>, String> {
    match r {
        ResolveResult::Bound(ns) => Ok(Some(ns.into_inner().to_owned())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(prefix) => Err(format!("the prefix `{prefix}` is not declared")),
    }
}

/// An element's name and attributes, namespaces resolved (the element's own declarations are in
/// scope once its start tag has been read).
fn open(
    e: &quick_xml::events::BytesStart<'_>,
    ns: Option<String>,
    reader: &NsReader<&[u8]>,
) -> Result<Element, String> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| format!("a malformed attribute: {e}"))?;
        let key = a.key.as_ref();
        if key == "xmlns" || key.starts_with("xmlns:") {
            continue;
        }
        let (attr_ns, local) = reader.resolver().resolve_attribute(a.key);
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("attribute `{key}`: {e}"))?;
        attrs.push((
            namespace(attr_ns)?,
            local.as_ref().to_owned(),
            value.into_owned(),
        ));
    }
    Ok(Element {
        ns,
        name: e.local_name().as_ref().to_owned(),
        attrs,
        ..Element::default()
    })
}

fn append(stack: &mut [Element], text: &str) -> Result<(), String> {
    match stack.last_mut() {
        Some(top) => {
            top.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err("text outside the root element".into()),
    }
}

fn close(stack: &mut Vec<Element>, root: &mut Option<Element>) {
    if let Some(done) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => *root = Some(done),
        }
    }
}

/// The whole document as a tree (Outbound Messages are small: at most 100 notifications, and the
/// body is bounded by `MAX_BODY_BYTES` before this runs).
fn parse_tree(xml: &str) -> Result<Element, String> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("not well-formed XML: {e}"))?;
        let ns = namespace(resolved);
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err("content after the root element".into());
            }
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                stack.push(open(&e, ns?, &reader)?);
            }
            Event::Empty(e) => {
                stack.push(open(&e, ns?, &reader)?);
                close(&mut stack, &mut root);
            }
            Event::End(_) => close(&mut stack, &mut root),
            Event::Text(t) => append(&mut stack, &t.xml10_content())?,
            Event::CData(t) => append(&mut stack, &t.into_inner())?,
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.xml10_content();
                        quick_xml::escape::resolve_xml_entity(&name)
                            .ok_or_else(|| format!("unknown entity `&{name};`"))?
                            .to_owned()
                    }
                    Err(e) => return Err(format!("a bad character reference: {e}")),
                };
                append(&mut stack, &text)?;
            }
            Event::DocType(_) => return Err("a DOCTYPE is not accepted".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".into());
    }
    root.ok_or_else(|| "the body holds no XML element".into())
}

/// Reads an Outbound Message; the error says what is wrong with it.
pub fn parse_notifications(body: &[u8]) -> Result<Notifications, String> {
    let xml = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let root = parse_tree(xml)?;
    if !root.is(SOAP_ENVELOPE_NS, "Envelope") {
        return Err(format!(
            "the root element is `{}`, not a SOAP 1.1 Envelope ({SOAP_ENVELOPE_NS})",
            root.name
        ));
    }
    let body = root
        .child(SOAP_ENVELOPE_NS, "Body")
        .ok_or("the Envelope has no soapenv:Body")?;
    let n = body
        .child(OUTBOUND_NS, "notifications")
        .ok_or_else(|| format!("the Body holds no `notifications` element of {OUTBOUND_NS}"))?;
    let organization_id = n
        .child_text(OUTBOUND_NS, "OrganizationId")
        .ok_or("`notifications` has no OrganizationId")?;
    let action_id = n.child_text(OUTBOUND_NS, "ActionId");
    let mut notifications = Vec::new();
    for (i, el) in n
        .children
        .iter()
        .filter(|c| c.is(OUTBOUND_NS, "Notification"))
        .enumerate()
    {
        let at = format!("Notification {}", i + 1);
        let id = el
            .child_text(OUTBOUND_NS, "Id")
            .ok_or_else(|| format!("{at} has no Id"))?;
        let so = el
            .child(OUTBOUND_NS, "sObject")
            .ok_or_else(|| format!("{at} ({id}) has no sObject"))?;
        let object_type = so
            .attr(XSI_NS, "type")
            .map(|t| t.rsplit(':').next().unwrap_or(t).trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("{at} ({id}): the sObject has no xsi:type"))?;
        let mut fields = BTreeMap::new();
        for f in &so.children {
            if !f.children.is_empty() {
                return Err(format!(
                    "{at} ({id}): the field `{}` holds elements, not a value",
                    f.name
                ));
            }
            let value = (f.attr(XSI_NS, "nil") != Some("true"))
                .then(|| f.text.clone())
                .filter(|t| !t.trim().is_empty());
            fields.insert(f.name.clone(), value);
        }
        notifications.push(Notification {
            id,
            sobject: SObject {
                object_type,
                fields,
            },
        });
    }
    if notifications.is_empty() {
        return Err("`notifications` holds no Notification".into());
    }
    if notifications.len() > MAX_NOTIFICATIONS {
        return Err(format!(
            "{} notifications; Salesforce sends at most {MAX_NOTIFICATIONS} in one message",
            notifications.len()
        ));
    }
    Ok(Notifications {
        organization_id,
        action_id,
        notifications,
    })
}

fn xml_response(status: StatusCode, body: String) -> HttpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    HttpResponse {
        status,
        headers,
        body: Bytes::from(body),
    }
}

/// `200` with `<Ack>true</Ack>`: every notification of the message is done, Salesforce drops it.
pub fn ack() -> HttpResponse {
    xml_response(
        StatusCode::OK,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{SOAP_ENVELOPE_NS}">
 <soapenv:Body>
  <notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>
 </soapenv:Body>
</soapenv:Envelope>
"#
        ),
    )
}

/// Who a fault blames: `soapenv:Client` (the message, or something to fix in Salesforce or the
/// configuration) or `soapenv:Server` (this side; the retry may succeed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCode {
    Client,
    Server,
}

/// A SOAP 1.1 fault: anything but an Ack, so Salesforce keeps the message and retries it (its
/// Outbound Message queue shows `message` as the failure reason).
pub fn fault(status: StatusCode, code: FaultCode, message: &str) -> HttpResponse {
    let code = match code {
        FaultCode::Client => "soapenv:Client",
        FaultCode::Server => "soapenv:Server",
    };
    let message = quick_xml::escape::escape(message);
    xml_response(
        status,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{SOAP_ENVELOPE_NS}">
 <soapenv:Body>
  <soapenv:Fault>
   <faultcode>{code}</faultcode>
   <faultstring>{message}</faultstring>
  </soapenv:Fault>
 </soapenv:Body>
</soapenv:Envelope>
"#
        ),
    )
}

/// The `faultstring` of a fault answer (for tests and logs), `None` for anything else.
pub fn fault_string(body: &[u8]) -> Option<String> {
    let root = parse_tree(std::str::from_utf8(body).ok()?).ok()?;
    let fault = root
        .child(SOAP_ENVELOPE_NS, "Body")?
        .child(SOAP_ENVELOPE_NS, "Fault")?;
    fault
        .children
        .iter()
        .find(|c| c.name == "faultstring")
        .map(|c| c.text.clone())
}

/// Whether `body` is a `notificationsResponse` acknowledging the message.
pub fn is_ack(body: &[u8]) -> bool {
    let Some(root) = std::str::from_utf8(body)
        .ok()
        .and_then(|x| parse_tree(x).ok())
    else {
        return false;
    };
    root.child(SOAP_ENVELOPE_NS, "Body")
        .and_then(|b| b.child(OUTBOUND_NS, "notificationsResponse"))
        .and_then(|r| r.child_text(OUTBOUND_NS, "Ack"))
        .as_deref()
        == Some("true")
}

/// One notification of [`envelope`]: `(notification id, sObject type, fields)`, a `None` value
/// written `xsi:nil`.
pub type TestNotification<'a> = (&'a str, &'a str, Vec<(&'a str, Option<&'a str>)>);

/// An Outbound Message envelope as Salesforce sends it (docs/crm-connectors.md 3.10.1), for
/// tests.
pub fn envelope(organization_id: &str, notifications: &[TestNotification<'_>]) -> String {
    use quick_xml::escape::escape;
    let mut out = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="{SOAP_ENVELOPE_NS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="{XSI_NS}">
 <soapenv:Body>
  <notifications xmlns="{OUTBOUND_NS}">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme-solar.my.salesforce.com/services/Soap/c/66.0/{org15}</EnterpriseUrl>
   <PartnerUrl>https://acme-solar.my.salesforce.com/services/Soap/u/66.0/{org15}</PartnerUrl>
"#,
        org = escape(organization_id),
        org15 = escape(organization_id.get(..15).unwrap_or(organization_id)),
    );
    for (id, object, fields) in notifications {
        out.push_str(&format!(
            "   <Notification>\n    <Id>{}</Id>\n    <sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n",
            escape(*id),
            escape(*object)
        ));
        for (name, value) in fields {
            match value {
                Some(v) => out.push_str(&format!("     <sf:{name}>{}</sf:{name}>\n", escape(*v))),
                None => out.push_str(&format!("     <sf:{name} xsi:nil=\"true\"/>\n")),
            }
        }
        out.push_str("    </sObject>\n   </Notification>\n");
    }
    out.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::inbound::salesforce::same_salesforce_id;

    /// The envelope of docs/crm-connectors.md 3.10.1, as Salesforce sends it.
    const REFERENCE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
                  xmlns:xsd="http://www.w3.org/2001/XMLSchema"
                  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>00D000000000001EAA</OrganizationId>
   <ActionId>04k000000000001AAA</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://acme-solar.my.salesforce.com/services/Soap/c/62.0/00D000000000001</EnterpriseUrl>
   <PartnerUrl>https://acme-solar.my.salesforce.com/services/Soap/u/62.0/00D000000000001</PartnerUrl>
   <Notification>
    <Id>04l000000000001AAA</Id>
    <sObject xsi:type="sf:Project__c" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
     <sf:Id>a0X000000000001AAA</sf:Id>
     <sf:Enerflo_Project_Id__c>deal_0001</sf:Enerflo_Project_Id__c>
     <sf:Status__c>On Hold</sf:Status__c>
    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>"#;

    #[test]
    fn the_reference_envelope_is_read_field_by_field() {
        let m = parse_notifications(REFERENCE.as_bytes()).unwrap();
        assert_eq!(m.organization_id, "00D000000000001EAA");
        assert_eq!(m.action_id.as_deref(), Some("04k000000000001AAA"));
        assert_eq!(m.notifications.len(), 1);
        let n = &m.notifications[0];
        assert_eq!(n.id, "04l000000000001AAA");
        assert_eq!(n.sobject.object_type, "Project__c");
        assert_eq!(n.sobject.get("Id"), Some("a0X000000000001AAA"));
        assert_eq!(n.sobject.get("Enerflo_Project_Id__c"), Some("deal_0001"));
        assert_eq!(n.sobject.get("Status__c"), Some("On Hold"));
        assert_eq!(n.sobject.fields.len(), 3);
    }

    #[test]
    fn other_prefixes_entities_cdata_and_nil_fields_are_read_as_salesforce_means_them() {
        let xml = r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
<e:Header/><e:Body><o:notifications xmlns:o="http://soap.sforce.com/2005/09/outbound">
<o:OrganizationId>00D000000000001EAA</o:OrganizationId>
<o:Notification><o:Id>04l1</o:Id><o:sObject i:type="x:Opportunity" xmlns:x="urn:sobject.enterprise.soap.sforce.com">
<x:Name>Doe &amp; Sons &#8211; <![CDATA[<roof>]]></x:Name><x:PTO_Date__c i:nil="true"/><x:Description></x:Description>
</o:sObject></o:Notification></o:notifications></e:Body></e:Envelope>"#;
        let m = parse_notifications(xml.as_bytes()).unwrap();
        let so = &m.notifications[0].sobject;
        assert_eq!(so.object_type, "Opportunity");
        assert_eq!(so.get("Name"), Some("Doe & Sons \u{2013} <roof>"));
        assert_eq!(so.fields.get("PTO_Date__c"), Some(&None));
        assert_eq!(so.fields.get("Description"), Some(&None));
        assert_eq!(so.get("PTO_Date__c"), None);
    }

    #[test]
    fn what_is_wrong_with_a_malformed_envelope_is_named() {
        let n = |inner: &str| {
            format!(
                r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><s:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">{inner}</notifications></s:Body></s:Envelope>"#
            )
        };
        let org = "<OrganizationId>00D000000000001EAA</OrganizationId>";
        let one = r#"<Notification><Id>04l1</Id><sObject xsi:type="sf:Contact" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>003</sf:Id></sObject></Notification>"#;
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "no XML element"),
            ("\u{fffe}".into(), "text outside"),
            ("<a><b></a>".into(), "not well-formed"),
            (format!("{}<x/>", n(&format!("{org}{one}"))), "after the root"),
            (
                "<!DOCTYPE x [<!ENTITY e \"boom\">]><x>&e;</x>".into(),
                "DOCTYPE",
            ),
            ("<Envelope/>".into(), "not a SOAP 1.1 Envelope"),
            (
                r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/>"#.into(),
                "no soapenv:Body",
            ),
            (
                r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><notifications/></s:Body></s:Envelope>"#.into(),
                "no `notifications` element",
            ),
            (n(one), "no OrganizationId"),
            (n(org), "no Notification"),
            (
                n(&format!("{org}<Notification><sObject/></Notification>")),
                "has no Id",
            ),
            (
                n(&format!("{org}<Notification><Id>04l1</Id></Notification>")),
                "has no sObject",
            ),
            (
                n(&format!(
                    "{org}<Notification><Id>04l1</Id><sObject><Id>1</Id></sObject></Notification>"
                )),
                "no xsi:type",
            ),
            (
                n(&format!(
                    r#"{org}<Notification><Id>04l1</Id><sObject xsi:type="sf:Contact"><A><B/></A></sObject></Notification>"#
                )),
                "holds elements",
            ),
            (n(&format!("{org}<q:Notification/>")), "not declared"),
            (n(&format!("{org}&nope;")), "unknown entity"),
            (n(&format!("{org}{}", one.repeat(101))), "at most 100"),
        ];
        for (xml, names) in cases {
            let err = parse_notifications(xml.as_bytes()).expect_err(&xml);
            assert!(err.contains(names), "{xml}\n=> {err}");
        }
        assert!(
            parse_notifications(&[0xff, 0xfe])
                .unwrap_err()
                .contains("UTF-8")
        );
    }

    #[test]
    fn the_ack_and_the_fault_are_what_salesforce_reads() {
        let a = ack();
        assert_eq!(a.status, StatusCode::OK);
        assert!(is_ack(&a.body));
        let f = fault(
            StatusCode::SERVICE_UNAVAILABLE,
            FaultCode::Server,
            "04l1: Enerflo <down> & out",
        );
        assert_eq!(f.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!is_ack(&f.body));
        assert_eq!(
            fault_string(&f.body).as_deref(),
            Some("04l1: Enerflo <down> & out")
        );
        let text = String::from_utf8(f.body.to_vec()).unwrap();
        assert!(
            text.contains("<faultcode>soapenv:Server</faultcode>"),
            "{text}"
        );
        assert!(text.contains("&lt;down&gt; &amp; out"), "{text}");
    }

    #[test]
    fn the_test_envelope_reads_back_as_written() {
        let xml = envelope(
            "00D000000000001EAA",
            &[(
                "04l1",
                "Opportunity",
                vec![
                    ("Id", Some("006x")),
                    ("PTO_Date__c", None),
                    ("Name", Some("A & B")),
                ],
            )],
        );
        let m = parse_notifications(xml.as_bytes()).unwrap();
        let so = &m.notifications[0].sobject;
        assert_eq!(so.get("Name"), Some("A & B"));
        assert_eq!(so.fields.get("PTO_Date__c"), Some(&None));
    }

    #[test]
    fn fifteen_and_eighteen_character_ids_of_one_record_are_the_same() {
        assert!(same_salesforce_id(
            "00D000000000001EAA",
            "00D000000000001EAA"
        ));
        assert!(same_salesforce_id("00D000000000001", "00D000000000001EAA"));
        assert!(same_salesforce_id("00D000000000001EAA", "00D000000000001"));
        assert!(!same_salesforce_id("00D000000000001", "00d000000000001EAA"));
        assert!(!same_salesforce_id(
            "00D000000000002EAA",
            "00D000000000001EAA"
        ));
        assert!(!same_salesforce_id("00D00000000000", "00D000000000001EAA"));
    }
}
