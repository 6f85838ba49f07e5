//! `deal.projectSubmitted` -> canonical `Project`, driven by the captured sample payload
//! (`tests/fixtures/enerflo/v2-deal.projectSubmitted.json`) and hand-made variants of it.
//!
//! Each variant edits the fixture the way Enerflo's payloads drift (docs/design.md 4, tolerant reader):
//! the design the mapping reads is `proposal.pricingOutputs.design`, falling back to the top-level
//! `design`, so design edits are applied to both.

use enerflo_sync::canonical::{Adder, AdderKind, Address, FileRef, Panel, Project};
use enerflo_sync::enerflo::Envelope;
use enerflo_sync::enerflo::install::Install;
use enerflo_sync::enerflo::project::ProjectPayload;
use enerflo_sync::mapping::project::{map_project, project_refs};
use serde_json::{Value, json};

use crate::kit::PROJECT_SUBMITTED as FIXTURE;

const PRICING: &str = "/payload/proposal/pricingOutputs";
const PRICING_DESIGN: &str = "/payload/proposal/pricingOutputs/design";
const TOP_DESIGN: &str = "/payload/design";
const ADDRESS: &str = "/payload/proposal/pricingOutputs/deal/projectAddress";

const DEAL_ID: &str = "00000000-0000-4000-8000-000000000010";
const CUSTOMER_UUID: &str = "00000000-0000-4000-8000-000000000003";

// ----- harness ------------------------------------------------------------------------------------

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is JSON")
}

/// The webhook body as bytes -> envelope -> typed payload, as the project stage reads it.
fn payload_of(body: &[u8]) -> ProjectPayload {
    let env = Envelope::parse(body, None).expect("envelope parses");
    assert_eq!(env.event, "deal.projectSubmitted");
    let payload = ProjectPayload::from_record(&env.record);
    assert!(payload.deal_id().is_some(), "deal id read");
    payload
}

fn payload(body: &Value) -> ProjectPayload {
    payload_of(&serde_json::to_vec(body).expect("serialises"))
}

fn map(body: &Value) -> Project {
    map_project(&payload(body), None, false)
}

fn fixture_project() -> Project {
    map_project(&payload_of(FIXTURE.as_bytes()), None, false)
}

fn at<'a>(v: &'a mut Value, pointer: &str) -> &'a mut Value {
    v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("fixture has {pointer}"))
}

fn object_at<'a>(v: &'a mut Value, pointer: &str) -> &'a mut serde_json::Map<String, Value> {
    at(v, pointer)
        .as_object_mut()
        .unwrap_or_else(|| panic!("{pointer} is an object"))
}

/// Sets `key` to `value` in both designs the payload carries.
fn set_in_designs(v: &mut Value, key: &str, value: Value) {
    for design in [PRICING_DESIGN, TOP_DESIGN] {
        object_at(v, design).insert(key.to_owned(), value.clone());
    }
}

/// Removes `key` from both designs.
fn remove_from_designs(v: &mut Value, key: &str) {
    for design in [PRICING_DESIGN, TOP_DESIGN] {
        object_at(v, design).remove(key);
    }
}

/// The fixture's first array, with `moduleCount` replaced.
fn array_with_count(v: &Value, count: Value) -> Value {
    let mut array = v
        .pointer(&format!("{PRICING_DESIGN}/arrays/0"))
        .cloned()
        .expect("fixture has an array");
    array["moduleCount"] = count;
    array
}

fn install() -> Install {
    Install::from_response(&json!({
        "id": 700001,
        "customer_id": "900001",
        "survey_id": "4000001",
        "status_id": 2,
        "status_name": "Sold",
        "customer": {
            "id": 900001,
            "first_name": "Patricia",
            "last_name": "Installname",
            "email": "  pat@example.com ",
            "phone": "555-0100",
            "customer_timezone": "America/Chicago",
            "lead_source": "Door Knock"
        },
        "solarData": {
            "system_size": 12.15,
            "panel_count": 30,
            "panel": {
                "name": "Install Panel 410",
                "manufacturer": "Install Solar",
                "model": "IS-410",
                "capacity": "410"
            },
            "finance_method": "Loan"
        },
        "updated_at": "2025-01-02 03:04:05"
    }))
}

// ----- system -------------------------------------------------------------------------------------

#[test]
fn panel_count_is_the_sum_of_the_arrays_module_counts() {
    let body = fixture();
    let expected: u64 = body
        .pointer(&format!("{PRICING_DESIGN}/arrays"))
        .and_then(Value::as_array)
        .expect("arrays")
        .iter()
        .filter_map(|a| a["moduleCount"].as_u64())
        .sum();
    assert_eq!(expected, 20, "the fixture's one array has 20 modules");
    assert_eq!(fixture_project().system.panel_count, Some(expected));

    let mut two = fixture();
    let arrays = json!([
        array_with_count(&two, json!(12)),
        array_with_count(&two, json!(8))
    ]);
    set_in_designs(&mut two, "arrays", arrays);
    assert_eq!(map(&two).system.panel_count, Some(20), "12 + 8");
}

#[test]
fn panel_type_comes_from_the_module_with_its_name_trimmed() {
    let expected = Panel {
        name: Some("405W Example Module".into()),
        manufacturer: Some("Example Solar".into()),
        model: Some("EX-405".into()),
        capacity_watts: Some(405.0),
    };
    assert_eq!(fixture_project().system.panel, Some(expected.clone()));

    let mut padded = fixture();
    for design in [PRICING_DESIGN, TOP_DESIGN] {
        *at(&mut padded, &format!("{design}/arrays/0/module/name")) =
            json!("  405W Example Module  ");
    }
    assert_eq!(map(&padded).system.panel, Some(expected));
}

#[test]
fn system_size_and_inverters_come_from_the_design() {
    let system = fixture_project().system;
    assert_eq!(system.size_watts, Some(8100.0));
    assert_eq!(system.inverters.len(), 1);
    let inv = &system.inverters[0];
    assert_eq!(inv.name.as_deref(), Some("EX-INV-7600"));
    assert_eq!(inv.manufacturer.as_deref(), Some("Example Inverters"));
    assert_eq!(inv.count, Some(1));
    assert_eq!(inv.ac_output_watts, Some(7600.0));
    assert_eq!(inv.is_micro, Some(false));
}

#[test]
fn batteries_without_any_are_count_zero_with_purpose_and_no_items() {
    let batteries = fixture_project().system.batteries;
    assert_eq!(batteries.count, Some(0));
    assert_eq!(batteries.purpose.as_deref(), Some("BACKUP"));
    assert!(batteries.items.is_empty());
}

#[test]
fn battery_count_missing_is_the_sum_of_item_counts_and_items_pass_through() {
    // One battery object with count 2: the count is 2, not "one item".
    let mut one = fixture();
    remove_from_designs(&mut one, "batteryCount");
    let items = json!([{"name": "EX-BAT", "count": 2}]);
    set_in_designs(&mut one, "batteries", items.clone());
    let batteries = map(&one).system.batteries;
    assert_eq!(batteries.count, Some(2));
    assert_eq!(
        json!(batteries.items),
        items,
        "items passed through as sent"
    );
    assert_eq!(batteries.purpose.as_deref(), Some("BACKUP"));

    // Two battery objects with count 2 each: 2 + 2, not the number of objects.
    let mut two = fixture();
    remove_from_designs(&mut two, "batteryCount");
    let items = json!([{"name": "EX-BAT", "count": 2}, {"name": "EX-BAT", "count": 2}]);
    set_in_designs(&mut two, "batteries", items.clone());
    let batteries = map(&two).system.batteries;
    assert_eq!(batteries.count, Some(4));
    assert_eq!(
        json!(batteries.items),
        items,
        "items passed through as sent"
    );
}

// ----- adders, finance, pricing -------------------------------------------------------------------

#[test]
fn adders_keep_their_kind_system_or_value() {
    assert_eq!(
        fixture_project().adders,
        vec![
            Adder {
                name: Some("Electrical Upgrade".into()),
                amount: Some(3500.0),
                kind: AdderKind::System,
            },
            Adder {
                name: Some("Tree Removal".into()),
                amount: Some(1200.0),
                kind: AdderKind::Value,
            },
        ]
    );
    let data = serde_json::to_value(fixture_project()).expect("serialises");
    assert_eq!(data["adders"][0]["kind"], json!("system"));
    assert_eq!(data["adders"][1]["kind"], json!("value"));
}

#[test]
fn finance_is_product_method_and_term() {
    let finance = fixture_project().finance;
    assert_eq!(finance.product.as_deref(), Some("Cash"));
    assert_eq!(finance.method.as_deref(), Some("Cash Finance"));
    assert_eq!(finance.term_months, Some(0));
}

#[test]
fn pricing_carries_gross_net_and_price_per_watt() {
    let pricing = fixture_project().pricing;
    assert_eq!(pricing.gross_cost, Some(25500.0));
    assert_eq!(pricing.net_cost, Some(17850.0));
    assert_eq!(pricing.gross_ppw, Some(3.15));
    assert_eq!(pricing.net_ppw, Some(2.2));
}

// ----- address ------------------------------------------------------------------------------------

#[test]
fn zip_is_a_five_digit_string_even_when_sent_as_a_number() {
    let body = fixture();
    assert_eq!(
        body.pointer(&format!("{ADDRESS}/postalCode")),
        Some(&json!(75001)),
        "the fixture sends the zip as a number"
    );
    let project = fixture_project();
    let address = project.address.clone().expect("address");
    assert_eq!(address.zip.as_deref(), Some("75001"));
    assert_eq!(address.street.as_deref(), Some("1 Example Way"));
    assert_eq!(address.city.as_deref(), Some("Exampleville"));
    assert_eq!(address.state.as_deref(), Some("TX"));
    assert_eq!(address.country.as_deref(), Some("US"));
    assert_eq!(project.customer.address, project.address);
    let data = serde_json::to_value(&project).expect("serialises");
    assert_eq!(data["address"]["zip"], json!("75001"));

    // A leading-zero zip that lost its zero as a number: padded back, by country or by state.
    let mut ma = fixture();
    let addr = object_at(&mut ma, ADDRESS);
    addr.insert("postalCode".into(), json!(2134));
    addr.insert("state".into(), json!("MA"));
    let zip = |v: &Value| map(v).address.and_then(|a| a.zip);
    assert_eq!(zip(&ma).as_deref(), Some("02134"));
    object_at(&mut ma, ADDRESS).insert("country".into(), Value::Null);
    assert_eq!(zip(&ma).as_deref(), Some("02134"), "a US state alone");
}

#[test]
fn lat_lng_are_numbers_parsed_from_strings() {
    let address = fixture_project().address.expect("address");
    assert_eq!((address.lat, address.lng), (Some(32.0), Some(-97.0)));

    let mut strings = fixture();
    let addr = object_at(&mut strings, ADDRESS);
    addr.insert("lat".into(), json!("32.5"));
    addr.insert("lng".into(), json!(" -97.25 "));
    let address = map(&strings).address.expect("address");
    assert_eq!((address.lat, address.lng), (Some(32.5), Some(-97.25)));
    let data = serde_json::to_value(map(&strings)).expect("serialises");
    assert_eq!(data["address"]["lat"], json!(32.5), "a JSON number");
}

// ----- files --------------------------------------------------------------------------------------

#[test]
fn files_carry_name_and_source_but_never_a_url() {
    assert!(FIXTURE.contains("https://files.example.com/signed-url"));
    let project = fixture_project();
    assert_eq!(
        project.files,
        vec![
            FileRef {
                name: Some("utility-bill.pdf".into()),
                source: Some("full-utility-bill".into()),
            },
            FileRef {
                name: Some("executed_contract.pdf".into()),
                source: Some("signedContractFiles".into()),
            },
        ]
    );
    let text = serde_json::to_string(&project).expect("serialises");
    for leaked in [
        "signed-url",
        "https://files.example.com",
        "assets.example.com",
        "\"url\"",
        "externalUrl",
    ] {
        assert!(!text.contains(leaked), "{leaked} in {text}");
    }
}

// ----- hydration ----------------------------------------------------------------------------------

#[test]
fn hydration_payload_design_wins_and_install_fills_contact_fields_and_refs() {
    let install = install();
    let payload = payload_of(FIXTURE.as_bytes());
    let project = map_project(&payload, Some(&install), false);

    // The payload's signed design wins over the install's solarData.
    assert_eq!(project.system.panel_count, Some(20));
    assert_eq!(
        project
            .system
            .panel
            .as_ref()
            .and_then(|p| p.name.as_deref()),
        Some("405W Example Module")
    );
    assert_eq!(project.system.size_watts, Some(8100.0));
    // Names come from the payload; what it lacks comes from the install.
    assert_eq!(project.customer.first_name.as_deref(), Some("Pat"));
    assert_eq!(project.customer.last_name.as_deref(), Some("Placeholder"));
    assert_eq!(project.customer.email.as_deref(), Some("pat@example.com"));
    assert_eq!(project.customer.phone.as_deref(), Some("555-0100"));
    assert_eq!(
        project.customer.timezone.as_deref(),
        Some("America/Chicago")
    );
    assert_eq!(project.customer.lead_source.as_deref(), Some("Door Knock"));
    assert_eq!(
        project.customer.owner.as_deref(),
        Some("00000000-0000-4000-8000-000000000002")
    );

    let refs = project_refs(&payload, Some(&install));
    assert_eq!(refs.install_id, Some(700001));
    assert_eq!(refs.survey_id, Some(4000001));
    assert_eq!(refs.customer_id, Some(900001));
    assert_eq!(refs.customer_uuid.as_deref(), Some(CUSTOMER_UUID));
    assert_eq!(refs.deal_id.as_deref(), Some(DEAL_ID));

    // Without an install: the payload's ids only, the rest null.
    let bare = project_refs(&payload, None);
    assert_eq!(bare.deal_id.as_deref(), Some(DEAL_ID));
    assert_eq!(bare.customer_uuid.as_deref(), Some(CUSTOMER_UUID));
    assert_eq!(
        (bare.install_id, bare.survey_id, bare.customer_id),
        (None, None, None)
    );
    let unhydrated = fixture_project();
    assert_eq!(
        (unhydrated.customer.email, unhydrated.customer.timezone),
        (None, None)
    );
}

#[test]
fn without_design_arrays_panel_count_and_panel_come_from_install_solar_data() {
    let install = install();
    let expected = Panel {
        name: Some("Install Panel 410".into()),
        manufacturer: Some("Install Solar".into()),
        model: Some("IS-410".into()),
        capacity_watts: Some(410.0),
    };

    let mut no_arrays = fixture();
    remove_from_designs(&mut no_arrays, "arrays");
    let project = map_project(&payload(&no_arrays), Some(&install), false);
    assert_eq!(project.system.panel_count, Some(30));
    assert_eq!(project.system.panel, Some(expected.clone()));
    assert_eq!(
        project.system.size_watts,
        Some(8100.0),
        "the design's size still wins"
    );

    // No design objects at all: size falls back too (pricing, then solarData kW).
    let mut no_design = fixture();
    object_at(&mut no_design, PRICING).remove("design");
    object_at(&mut no_design, "/payload").remove("design");
    let project = map_project(&payload(&no_design), Some(&install), false);
    assert_eq!(project.system.panel_count, Some(30));
    assert_eq!(project.system.panel, Some(expected));
    assert_eq!(project.system.size_watts, Some(8100.0), "systemSizeWatts");

    // And without an install either: nothing is invented.
    let project = map(&no_arrays);
    assert_eq!(
        (project.system.panel_count, project.system.panel),
        (None, None)
    );
}

// ----- absent and odd fields ----------------------------------------------------------------------

#[test]
fn missing_fields_are_null_never_invented() {
    let body = json!({"event": "deal.projectSubmitted", "payload": {"deal": {"id": "d-1"}}});
    let payload = payload(&body);
    let project = map_project(&payload, None, false);
    assert_eq!(project.system.panel, None);
    assert_eq!(project.system.panel_count, None);
    assert!(project.adders.is_empty());
    assert_eq!(project.address, None);
    assert_eq!(project, Project::default(), "every field empty");

    let data = serde_json::to_value(&project).expect("serialises");
    assert_eq!(data["system"]["panel"], Value::Null);
    assert_eq!(data["system"]["panel_count"], Value::Null);
    assert_eq!(data["address"], Value::Null);
    assert_eq!(data["customer"]["email"], Value::Null);
    assert_eq!(data["finance"]["term_months"], Value::Null);
    assert_eq!(data["pricing"]["gross_cost"], Value::Null);
    assert_eq!(data["adders"], json!([]));

    let refs = project_refs(&payload, None);
    assert_eq!(refs.deal_id.as_deref(), Some("d-1"));
    assert_eq!(refs.customer_uuid, None);
}

#[test]
fn odd_types_never_fail_the_mapping() {
    // A module count sent as a string still counts.
    let mut string_count = fixture();
    let arrays = json!([
        array_with_count(&string_count, json!("20")),
        array_with_count(&string_count, json!(" 5 "))
    ]);
    set_in_designs(&mut string_count, "arrays", arrays);
    assert_eq!(map(&string_count).system.panel_count, Some(25));

    // A zip as an object reads as no zip; the rest of the address survives.
    let mut object_zip = fixture();
    object_at(&mut object_zip, ADDRESS).insert("postalCode".into(), json!({"code": 75001}));
    let address = map(&object_zip).address.expect("address");
    assert_eq!(address.zip, None);
    assert_eq!(address.city.as_deref(), Some("Exampleville"));

    // Arrays as `{}` read as empty.
    let mut objects = fixture();
    set_in_designs(&mut objects, "arrays", json!({}));
    set_in_designs(&mut objects, "inverters", json!({}));
    set_in_designs(&mut objects, "batteries", json!({}));
    let pricing = object_at(&mut objects, PRICING);
    pricing.insert("calculatedSystemAdders".into(), json!({}));
    pricing.insert("calculatedValueAdders".into(), json!({}));
    object_at(&mut objects, "/payload/deal").insert("files".into(), json!({}));
    let project = map(&objects);
    assert_eq!(project.system.panel_count, None);
    assert_eq!(project.system.panel, None);
    assert!(project.system.inverters.is_empty());
    assert!(project.system.batteries.items.is_empty());
    assert!(project.adders.is_empty());
    assert!(project.files.is_empty());
    assert_eq!(
        project.pricing.gross_cost,
        Some(25500.0),
        "siblings still map"
    );

    // Numbers as strings, objects as arrays, and one bad element among good ones.
    let mut mixed = fixture();
    let pricing = object_at(&mut mixed, PRICING);
    pricing.insert("grossCost".into(), json!("25500"));
    pricing.insert("financeMethod".into(), json!([]));
    let adders = pricing
        .get_mut("calculatedSystemAdders")
        .and_then(Value::as_array_mut)
        .expect("adders");
    adders.insert(0, json!("not an adder"));
    object_at(&mut mixed, "/payload").insert("customer".into(), json!([]));
    let project = map(&mixed);
    assert_eq!(project.pricing.gross_cost, Some(25500.0));
    assert_eq!(project.adders.len(), 2, "the odd element is skipped");
    assert_eq!(project.customer.first_name, None);
    assert_eq!(project.finance.method.as_deref(), Some("Cash Finance"));
}

#[test]
fn resubmission_flag_is_carried_as_given() {
    let payload = payload_of(FIXTURE.as_bytes());
    assert!(!map_project(&payload, None, false).resubmission);
    assert!(map_project(&payload, None, true).resubmission);
    let address: Option<Address> = map_project(&payload, None, true).address;
    assert!(address.is_some());
}
