//! The fake's schema: which sObjects exist and their fields, as Salesforce's describe reports
//! them (type, length, precision/scale, nillable/createable/updateable/defaultedOnCreate,
//! External ID and Unique flags, picklist values and whether they are restricted, lookups with
//! their relationship names). Every write is checked against it (`store.rs`), and
//! `GET .../sobjects/{type}/describe` serves it.
//!
//! The standard objects are the ones the Enerflo connector writes (`docs/crm-connectors.md`
//! section 3.6): Account, Contact, Lead, Opportunity, OpportunityContactRole, ContentNote,
//! ContentDocument, ContentDocumentLink, the classic Note, and the User the integration runs as.
//! Their field lists are the subset a solar installer's org uses, not every standard field.
//! [`enerflo_fields`] are the custom fields the connector's setup asks an admin to create.

use serde_json::{Value, json};

/// A field's type, as describe names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Id,
    String,
    TextArea,
    Email,
    Phone,
    Url,
    Picklist,
    Boolean,
    Double,
    Currency,
    Percent,
    Date,
    DateTime,
    Reference,
    Base64,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::String => "string",
            Self::TextArea => "textarea",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Url => "url",
            Self::Picklist => "picklist",
            Self::Boolean => "boolean",
            Self::Double => "double",
            Self::Currency => "currency",
            Self::Percent => "percent",
            Self::Date => "date",
            Self::DateTime => "datetime",
            Self::Reference => "reference",
            Self::Base64 => "base64",
        }
    }

    /// The SOAP type describe reports (`xsd:string`, `tns:ID`, ...).
    fn soap_type(self) -> &'static str {
        match self {
            Self::Id | Self::Reference => "tns:ID",
            Self::Boolean => "xsd:boolean",
            Self::Double | Self::Currency | Self::Percent => "xsd:double",
            Self::Date => "xsd:date",
            Self::DateTime => "xsd:dateTime",
            Self::Base64 => "xsd:base64Binary",
            _ => "xsd:string",
        }
    }

    /// Whether values are text (compared case-insensitively in SOQL and external ids).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            Self::String | Self::TextArea | Self::Email | Self::Phone | Self::Url | Self::Picklist
        )
    }
}

/// One field of an sObject.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDef {
    /// The API name (`LastName`, `Enerflo_Customer_Id__c`).
    pub name: String,
    pub label: String,
    pub ftype: FieldType,
    /// Characters, for text types.
    pub length: u32,
    /// Digits in all and after the point, for numbers.
    pub precision: u32,
    pub scale: u32,
    pub nillable: bool,
    pub createable: bool,
    pub updateable: bool,
    /// Salesforce fills it when a create leaves it out.
    pub defaulted_on_create: bool,
    pub default_value: Option<Value>,
    pub external_id: bool,
    pub unique: bool,
    pub case_sensitive: bool,
    /// Picklist values, in order; `restricted` refuses any other value.
    pub picklist: Vec<String>,
    pub restricted: bool,
    /// The objects a reference may point at.
    pub reference_to: Vec<String>,
    /// The name a body uses to reference the target by its external id (`Account`,
    /// `Opportunity__r`).
    pub relationship_name: Option<String>,
}

impl FieldDef {
    fn base(name: &str, ftype: FieldType) -> Self {
        Self {
            name: name.to_owned(),
            label: humanise(name),
            ftype,
            length: 0,
            precision: 0,
            scale: 0,
            nillable: true,
            createable: true,
            updateable: true,
            defaulted_on_create: false,
            default_value: None,
            external_id: false,
            unique: false,
            case_sensitive: false,
            picklist: Vec::new(),
            restricted: false,
            reference_to: Vec::new(),
            relationship_name: None,
        }
    }

    /// Text(`length`).
    pub fn text(name: &str, length: u32) -> Self {
        Self {
            length,
            ..Self::base(name, FieldType::String)
        }
    }

    /// Text Area / Long Text Area(`length`).
    pub fn textarea(name: &str, length: u32) -> Self {
        Self {
            length,
            ..Self::base(name, FieldType::TextArea)
        }
    }

    pub fn email(name: &str) -> Self {
        Self {
            length: 80,
            ..Self::base(name, FieldType::Email)
        }
    }

    pub fn phone(name: &str) -> Self {
        Self {
            length: 40,
            ..Self::base(name, FieldType::Phone)
        }
    }

    pub fn url(name: &str) -> Self {
        Self {
            length: 255,
            ..Self::base(name, FieldType::Url)
        }
    }

    /// Number(`precision`, `scale`).
    pub fn number(name: &str, precision: u32, scale: u32) -> Self {
        Self {
            precision,
            scale,
            ..Self::base(name, FieldType::Double)
        }
    }

    /// Currency(`precision`, `scale`).
    pub fn currency(name: &str, precision: u32, scale: u32) -> Self {
        Self {
            precision,
            scale,
            ..Self::base(name, FieldType::Currency)
        }
    }

    pub fn percent(name: &str, precision: u32, scale: u32) -> Self {
        Self {
            precision,
            scale,
            ..Self::base(name, FieldType::Percent)
        }
    }

    /// Checkbox: never null, `false` unless set.
    pub fn checkbox(name: &str) -> Self {
        Self {
            nillable: false,
            defaulted_on_create: true,
            default_value: Some(Value::Bool(false)),
            ..Self::base(name, FieldType::Boolean)
        }
    }

    pub fn date(name: &str) -> Self {
        Self::base(name, FieldType::Date)
    }

    pub fn datetime(name: &str) -> Self {
        Self::base(name, FieldType::DateTime)
    }

    /// A picklist of these values; `restricted` refuses others
    /// (`INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`).
    pub fn picklist(name: &str, values: &[&str], restricted: bool) -> Self {
        Self {
            length: 255,
            picklist: values.iter().map(|v| (*v).to_owned()).collect(),
            restricted,
            ..Self::base(name, FieldType::Picklist)
        }
    }

    /// A lookup to `to`; a body may name the target by its external id under `relationship`.
    pub fn lookup(name: &str, to: &[&str], relationship: &str) -> Self {
        Self {
            length: 18,
            reference_to: to.iter().map(|t| (*t).to_owned()).collect(),
            relationship_name: Some(relationship.to_owned()),
            ..Self::base(name, FieldType::Reference)
        }
    }

    pub fn base64(name: &str) -> Self {
        Self {
            length: 131_072,
            ..Self::base(name, FieldType::Base64)
        }
    }

    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_owned();
        self
    }

    /// Required on create (not nillable, no default).
    pub fn required(mut self) -> Self {
        self.nillable = false;
        self
    }

    /// External ID + Unique (case-insensitive), as the connector's keys should be set up.
    pub fn external_id(mut self) -> Self {
        self.external_id = true;
        self.unique = true;
        self
    }

    /// External ID without Unique: an upsert matching several records answers 300.
    pub fn external_id_not_unique(mut self) -> Self {
        self.external_id = true;
        self.unique = false;
        self
    }

    /// Unique without External ID.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    pub fn case_sensitive(mut self) -> Self {
        self.case_sensitive = true;
        self
    }

    /// Set by Salesforce only.
    pub fn read_only(mut self) -> Self {
        self.createable = false;
        self.updateable = false;
        self
    }

    /// Writable on create only (`ContactId` on Opportunity).
    pub fn create_only(mut self) -> Self {
        self.updateable = false;
        self
    }

    /// Filled with `v` when a create leaves it out.
    pub fn default(mut self, v: Value) -> Self {
        self.defaulted_on_create = true;
        self.default_value = Some(v);
        self
    }

    /// Salesforce fills it (owner, audit fields) when a create leaves it out.
    fn defaulted(mut self) -> Self {
        self.defaulted_on_create = true;
        self.nillable = false;
        self
    }

    pub fn custom(&self) -> bool {
        self.name.ends_with("__c")
    }

    /// Required on create: not nillable, createable, not defaulted.
    pub fn is_required(&self) -> bool {
        !self.nillable && self.createable && !self.defaulted_on_create
    }

    /// describe's JSON for this field.
    pub fn describe(&self) -> Value {
        let is_name = matches!(self.name.as_str(), "Name" | "Title");
        json!({
            "name": self.name,
            "label": self.label,
            "type": self.ftype.name(),
            "soapType": self.ftype.soap_type(),
            "length": self.length,
            "byteLength": self.length * 3,
            "precision": self.precision,
            "scale": self.scale,
            "digits": 0,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.defaulted_on_create,
            "defaultValue": self.default_value,
            "externalId": self.external_id,
            "unique": self.unique,
            "caseSensitive": self.case_sensitive,
            "idLookup": self.external_id || self.ftype == FieldType::Id || self.unique,
            "custom": self.custom(),
            "calculated": false,
            "autoNumber": false,
            "nameField": is_name,
            "filterable": self.ftype != FieldType::TextArea || self.length <= 255,
            "sortable": self.ftype != FieldType::TextArea || self.length <= 255,
            "picklistValues": self.picklist.iter().map(|v| json!({
                "active": true,
                "defaultValue": self.default_value.as_ref().and_then(Value::as_str) == Some(v.as_str()),
                "label": v,
                "validFor": null,
                "value": v,
            })).collect::<Vec<_>>(),
            "restrictedPicklist": self.restricted,
            "referenceTo": self.reference_to,
            "relationshipName": self.relationship_name,
        })
    }
}

/// An sObject type.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectDef {
    pub name: String,
    pub label: String,
    pub label_plural: String,
    /// The 3-character id prefix.
    pub key_prefix: String,
    pub createable: bool,
    pub updateable: bool,
    pub deletable: bool,
    pub fields: Vec<FieldDef>,
}

impl ObjectDef {
    fn new(name: &str, label: &str, plural: &str, prefix: &str, owned: bool) -> Self {
        let mut fields = vec![
            FieldDef::base("Id", FieldType::Id)
                .label(&format!("{label} ID"))
                .read_only()
                .defaulted(),
            FieldDef::checkbox("IsDeleted").label("Deleted").read_only(),
            FieldDef::datetime("CreatedDate")
                .label("Created Date")
                .read_only()
                .defaulted(),
            FieldDef::lookup("CreatedById", &["User"], "CreatedBy")
                .label("Created By ID")
                .read_only()
                .defaulted(),
            FieldDef::datetime("LastModifiedDate")
                .label("Last Modified Date")
                .read_only()
                .defaulted(),
            FieldDef::lookup("LastModifiedById", &["User"], "LastModifiedBy")
                .label("Last Modified By ID")
                .read_only()
                .defaulted(),
            FieldDef::datetime("SystemModstamp")
                .label("System Modstamp")
                .read_only()
                .defaulted(),
        ];
        if owned {
            fields.push(
                FieldDef::lookup("OwnerId", &["User"], "Owner")
                    .label("Owner ID")
                    .defaulted(),
            );
        }
        Self {
            name: name.to_owned(),
            label: label.to_owned(),
            label_plural: plural.to_owned(),
            key_prefix: prefix.to_owned(),
            createable: true,
            updateable: true,
            deletable: true,
            fields,
        }
    }

    /// A custom object (`Project__c`) with its `Name` (Text(80), required) and an owner.
    pub fn custom(name: &str, key_prefix: &str) -> Self {
        let label = humanise(name);
        let mut o = Self::new(name, &label, &format!("{label}s"), key_prefix, true);
        o.fields.push(
            FieldDef::text("Name", 80)
                .label(&format!("{label} Name"))
                .required(),
        );
        o
    }

    pub fn with(mut self, f: FieldDef) -> Self {
        self.add_field(f);
        self
    }

    /// Adds a field, replacing one of the same name (case-insensitively).
    pub fn add_field(&mut self, f: FieldDef) {
        match self
            .fields
            .iter_mut()
            .find(|x| x.name.eq_ignore_ascii_case(&f.name))
        {
            Some(x) => *x = f,
            None => self.fields.push(f),
        }
    }

    /// The field of this name, case-insensitively (as the API matches them).
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    pub fn field_mut(&mut self, name: &str) -> Option<&mut FieldDef> {
        self.fields
            .iter_mut()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The reference field whose relationship name is `rel` (case-insensitively).
    pub fn relationship(&self, rel: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| {
            f.relationship_name
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(rel))
        })
    }

    pub fn custom_object(&self) -> bool {
        self.name.ends_with("__c")
    }

    fn urls(&self, version: &str) -> Value {
        let base = format!("/services/data/v{version}/sobjects/{}", self.name);
        json!({
            "sobject": base,
            "describe": format!("{base}/describe"),
            "rowTemplate": format!("{base}/{{ID}}"),
        })
    }

    /// The `describeGlobal` entry.
    pub fn summary(&self, version: &str) -> Value {
        json!({
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label_plural,
            "keyPrefix": self.key_prefix,
            "custom": self.custom_object(),
            "createable": self.createable,
            "updateable": self.updateable,
            "deletable": self.deletable,
            "queryable": true,
            "retrieveable": true,
            "searchable": true,
            "layoutable": true,
            "urls": self.urls(version),
        })
    }

    /// `GET .../sobjects/{type}/describe`.
    pub fn describe(&self, version: &str) -> Value {
        let mut v = self.summary(version);
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "fields".into(),
                Value::Array(self.fields.iter().map(FieldDef::describe).collect()),
            );
            o.insert("childRelationships".into(), json!([]));
            o.insert("recordTypeInfos".into(), json!([]));
        }
        v
    }
}

/// `Enerflo_Customer_Id__c` -> "Enerflo Customer Id"; `LastName` -> "Last Name".
fn humanise(name: &str) -> String {
    let base = name.trim_end_matches("__c").trim_end_matches("__r");
    let mut out = String::new();
    let mut prev_lower = false;
    for c in base.chars() {
        if c == '_' {
            out.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_ascii_lowercase();
        out.push(c);
    }
    out
}

/// Opportunity stages of a new org (the `StageName` restricted picklist).
pub const OPPORTUNITY_STAGES: &[&str] = &[
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];

/// Lead statuses of a new org; the first is the default.
pub const LEAD_STATUSES: &[&str] = &[
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "Closed - Not Converted",
];

const LEAD_SOURCES: &[&str] = &[
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Other",
];

/// The standard objects the fake starts with.
pub fn standard_objects() -> Vec<ObjectDef> {
    let address = |prefix: &str| -> Vec<FieldDef> {
        let p = |s: &str| format!("{prefix}{s}");
        vec![
            FieldDef::textarea(&p("Street"), 255),
            FieldDef::text(&p("City"), 40),
            FieldDef::text(&p("State"), 80),
            FieldDef::text(&p("PostalCode"), 20),
            FieldDef::text(&p("Country"), 80),
        ]
    };

    let user = ObjectDef::new("User", "User", "Users", "005", false)
        .with(FieldDef::text("Username", 80).required().unique())
        .with(FieldDef::text("LastName", 80).required())
        .with(FieldDef::text("Name", 121).read_only())
        .with(FieldDef::email("Email").required());

    let mut account = ObjectDef::new("Account", "Account", "Accounts", "001", true)
        .with(FieldDef::text("Name", 255).label("Account Name").required())
        .with(FieldDef::phone("Phone").label("Account Phone"))
        .with(FieldDef::textarea("Description", 32_000));
    for f in address("Billing") {
        account.add_field(f);
    }

    let mut contact = ObjectDef::new("Contact", "Contact", "Contacts", "003", true)
        .with(FieldDef::lookup("AccountId", &["Account"], "Account").label("Account ID"))
        .with(FieldDef::text("FirstName", 40).label("First Name"))
        .with(FieldDef::text("LastName", 80).label("Last Name").required())
        .with(FieldDef::text("Name", 121).label("Full Name").read_only())
        .with(FieldDef::email("Email"))
        .with(FieldDef::phone("Phone").label("Business Phone"))
        .with(FieldDef::phone("MobilePhone").label("Mobile Phone"))
        .with(FieldDef::picklist("LeadSource", LEAD_SOURCES, false).label("Lead Source"))
        .with(FieldDef::textarea("Description", 32_000));
    for f in address("Mailing") {
        contact.add_field(f);
    }

    let mut lead = ObjectDef::new("Lead", "Lead", "Leads", "00Q", true)
        .with(FieldDef::text("FirstName", 40).label("First Name"))
        .with(FieldDef::text("LastName", 80).label("Last Name").required())
        .with(FieldDef::text("Name", 121).label("Full Name").read_only())
        .with(FieldDef::text("Company", 255).required())
        .with(FieldDef::email("Email"))
        .with(FieldDef::phone("Phone"))
        .with(FieldDef::phone("MobilePhone").label("Mobile Phone"))
        .with(
            FieldDef::picklist("Status", LEAD_STATUSES, true)
                .required()
                .default(json!(LEAD_STATUSES[0])),
        )
        .with(FieldDef::picklist("LeadSource", LEAD_SOURCES, false).label("Lead Source"))
        .with(FieldDef::textarea("Description", 32_000));
    for f in address("") {
        lead.add_field(f);
    }

    let opportunity = ObjectDef::new("Opportunity", "Opportunity", "Opportunities", "006", true)
        .with(FieldDef::lookup("AccountId", &["Account"], "Account").label("Account ID"))
        .with(
            FieldDef::lookup("ContactId", &["Contact"], "Contact")
                .label("Contact ID")
                .create_only(),
        )
        .with(FieldDef::text("Name", 120).required())
        .with(FieldDef::textarea("Description", 32_000))
        .with(
            FieldDef::picklist("StageName", OPPORTUNITY_STAGES, true)
                .label("Stage")
                .required(),
        )
        .with(FieldDef::currency("Amount", 16, 2))
        .with(FieldDef::percent("Probability", 3, 0).label("Probability (%)"))
        .with(FieldDef::date("CloseDate").label("Close Date").required())
        .with(FieldDef::picklist(
            "Type",
            &["Existing Business", "New Business"],
            false,
        ))
        .with(FieldDef::picklist("LeadSource", LEAD_SOURCES, false).label("Lead Source"))
        .with(FieldDef::checkbox("IsClosed").label("Closed").read_only())
        .with(FieldDef::checkbox("IsWon").label("Won").read_only());

    let role = ObjectDef::new(
        "OpportunityContactRole",
        "Opportunity Contact Role",
        "Opportunity Contact Roles",
        "00K",
        false,
    )
    .with(
        FieldDef::lookup("OpportunityId", &["Opportunity"], "Opportunity")
            .label("Opportunity ID")
            .required()
            .create_only(),
    )
    .with(
        FieldDef::lookup("ContactId", &["Contact"], "Contact")
            .label("Contact ID")
            .required(),
    )
    .with(FieldDef::picklist(
        "Role",
        &[
            "Business User",
            "Decision Maker",
            "Economic Buyer",
            "Economic Decision Maker",
            "Evaluator",
            "Executive Sponsor",
            "Influencer",
            "Technical Buyer",
            "Other",
        ],
        false,
    ))
    .with(FieldDef::checkbox("IsPrimary").label("Primary"));

    let note = ObjectDef::new("ContentNote", "Note", "Notes", "069", true)
        .with(FieldDef::text("Title", 255).required())
        .with(FieldDef::base64("Content"))
        .with(FieldDef::text("TextPreview", 255).read_only())
        .with(FieldDef::text("FileType", 20).read_only())
        .with(FieldDef::currency("ContentSize", 18, 0).read_only())
        .with(
            FieldDef::lookup(
                "LatestPublishedVersionId",
                &["ContentVersion"],
                "LatestPublishedVersion",
            )
            .read_only(),
        );

    let mut document = ObjectDef::new(
        "ContentDocument",
        "Content Document",
        "Content Documents",
        "069",
        true,
    )
    .with(FieldDef::text("Title", 255).required())
    .with(FieldDef::text("FileType", 20).read_only())
    .with(FieldDef::currency("ContentSize", 18, 0).read_only())
    .with(
        FieldDef::lookup(
            "LatestPublishedVersionId",
            &["ContentVersion"],
            "LatestPublishedVersion",
        )
        .read_only(),
    );
    // Made by creating a ContentNote (or a ContentVersion), never directly.
    document.createable = false;

    let link = ObjectDef::new(
        "ContentDocumentLink",
        "Content Document Link",
        "Content Document Links",
        "06A",
        false,
    )
    .with(
        FieldDef::lookup("ContentDocumentId", &["ContentDocument"], "ContentDocument")
            .label("ContentDocument ID")
            .required()
            .create_only(),
    )
    .with(
        FieldDef::lookup("LinkedEntityId", &["*"], "LinkedEntity")
            .label("Linked Entity ID")
            .required()
            .create_only(),
    )
    .with(FieldDef::picklist("ShareType", &["V", "C", "I"], true).required())
    .with(
        FieldDef::picklist(
            "Visibility",
            &["AllUsers", "InternalUsers", "SharedUsers"],
            true,
        )
        .default(json!("AllUsers")),
    );

    let classic = ObjectDef::new("Note", "Note", "Notes", "002", true)
        .with(
            FieldDef::lookup("ParentId", &["*"], "Parent")
                .label("Parent ID")
                .required()
                .create_only(),
        )
        .with(FieldDef::text("Title", 80).required())
        .with(FieldDef::textarea("Body", 32_000))
        .with(FieldDef::checkbox("IsPrivate").label("Private"));

    vec![
        user,
        account,
        contact,
        lead,
        opportunity,
        role,
        note,
        document,
        link,
        classic,
    ]
}

/// The custom fields the default Salesforce mapping profile (`shared/profiles/salesforce.json`)
/// writes, as an admin creates them: the keys (External ID + Unique, case-insensitive) on Contact
/// and Lead (a profile may map leads to either) and Opportunity, and the project, status,
/// milestone and change-order fields on Opportunity; plus a restricted `Status__c` picklist and
/// a `Contact__c` lookup (`docs/crm-connectors.md` section 3.6) for profiles that use them. Tests
/// add more with [`super::SalesforceFake::seed_field`].
pub fn enerflo_fields() -> Vec<(String, FieldDef)> {
    let mut out = Vec::new();
    for object in ["Contact", "Lead"] {
        out.push((
            object.to_owned(),
            FieldDef::text("Enerflo_Customer_Id__c", 64)
                .label("Enerflo Customer ID")
                .external_id(),
        ));
        out.push((
            object.to_owned(),
            FieldDef::text("Enerflo_Customer_Uuid__c", 64)
                .label("Enerflo Customer UUID")
                .external_id(),
        ));
    }
    let opp = |f: FieldDef| ("Opportunity".to_owned(), f);
    out.extend([
        opp(FieldDef::text("Enerflo_Deal_Id__c", 64)
            .label("Enerflo Deal ID")
            .external_id()),
        opp(FieldDef::text("Enerflo_Install_Id__c", 64)
            .label("Enerflo Install ID")
            .external_id()),
        opp(FieldDef::number("System_Size_kW__c", 6, 2).label("System Size (kW)")),
        opp(FieldDef::text("Panel__c", 255).label("Panel")),
        opp(FieldDef::number("Panel_Count__c", 18, 0).label("Panel Count")),
        opp(FieldDef::text("Inverters__c", 255).label("Inverters")),
        opp(FieldDef::number("Battery_Count__c", 18, 0).label("Battery Count")),
        opp(FieldDef::textarea("Adders__c", 32_768).label("Adders")),
        opp(FieldDef::textarea("Adders_JSON__c", 131_072).label("Adders (JSON)")),
        opp(FieldDef::text("Finance_Product__c", 255).label("Finance Product")),
        opp(FieldDef::text("Finance_Method__c", 255).label("Finance Method")),
        opp(FieldDef::number("Finance_Term_Months__c", 18, 0).label("Finance Term (months)")),
        opp(FieldDef::currency("Gross_Cost__c", 16, 2).label("Gross Cost")),
        opp(FieldDef::currency("Net_Cost__c", 16, 2).label("Net Cost")),
        opp(FieldDef::number("Gross_PPW__c", 14, 4).label("Gross PPW")),
        opp(FieldDef::number("Net_PPW__c", 14, 4).label("Net PPW")),
        opp(FieldDef::checkbox("Resubmission__c").label("Resubmission")),
        opp(FieldDef::text("Enerflo_Status__c", 255).label("Enerflo Status")),
        opp(FieldDef::checkbox("On_Hold__c").label("On Hold")),
        opp(FieldDef::datetime("Status_Changed_At__c").label("Status Changed At")),
        opp(FieldDef::text("Last_Milestone__c", 255).label("Last Milestone")),
        opp(FieldDef::date("Last_Milestone_Date__c").label("Last Milestone Date")),
        opp(FieldDef::text("Last_Change_Order_Id__c", 64).label("Last Change Order ID")),
        opp(FieldDef::datetime("Change_Order_Signed_At__c").label("Change Order Signed At")),
        opp(FieldDef::date("Site_Survey_Date__c").label("Site Survey Date")),
        opp(FieldDef::date("Design_Date__c").label("Design Date")),
        opp(FieldDef::date("Permit_Date__c").label("Permit Date")),
        opp(FieldDef::date("Install_Date__c").label("Install Date")),
        opp(FieldDef::date("Inspection_Date__c").label("Inspection Date")),
        opp(FieldDef::date("PTO_Date__c").label("PTO Date")),
        opp(FieldDef::picklist(
            "Status__c",
            &["Active", "On Hold", "Voided", "Cancelled", "Completed"],
            true,
        )
        .label("Status")),
        opp(FieldDef::lookup("Contact__c", &["Contact"], "Contact__r").label("Homeowner")),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_humanised_from_api_names() {
        assert_eq!(humanise("LastName"), "Last Name");
        assert_eq!(humanise("Enerflo_Deal_Id__c"), "Enerflo Deal Id");
    }
}
