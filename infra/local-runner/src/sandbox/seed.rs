//! A few hundred obviously fake installs and customers, the same on every start, so `make run`
//! plus a backfill fills the CRM inbox: install `800000 + n` belongs to customer `820000 + n`,
//! is `n % 7` milestones along (each completed one dated), and has the status that goes with that
//! (a few On Hold, Voided or waiting on a custom status). Names are from a placeholder list,
//! e-mails `@example.com`, phones in the fictional 555-01xx range.

use serde_json::{Value, json};

use super::Model;
use super::installs::{MILESTONES, STATUSES};
use super::projects::install_object;

/// How many of each the runner seeds (`SANDBOX_RECORDS` overrides it).
pub const DEFAULT_RECORDS: usize = 300;
pub const FIRST_SEEDED_INSTALL: u64 = 800_001;
pub const FIRST_SEEDED_CUSTOMER: u64 = 820_001;

const FIRST: &[&str] = &[
    "Pat", "Sam", "Casey", "Jordan", "Riley", "Morgan", "Taylor", "Alex", "Jamie", "Drew",
];
const LAST: &[&str] = &[
    "Placeholder",
    "Sample",
    "Example",
    "Fixture",
    "Testperson",
    "Demo",
    "Mockley",
    "Dummy",
];
const PLACES: &[(&str, &str, &str)] = &[
    ("Exampleville", "TX", "75001"),
    ("Sampletown", "AZ", "85001"),
    ("Placeholder City", "CA", "90001"),
    ("Testburg", "FL", "32003"),
    ("Demo Springs", "NV", "89001"),
];

fn status_name(id: u64) -> &'static str {
    STATUSES
        .iter()
        .find(|(s, _)| *s == id)
        .map_or("New", |(_, n)| n)
}

/// The v1 customer object of seeded customer `n` (1-based), as `GET /api/v1/customers` lists it
/// and the customer webhooks carry it.
pub fn customer(n: u64) -> Value {
    let id = FIRST_SEEDED_CUSTOMER - 1 + n;
    let (first, last) = (
        FIRST[n as usize % FIRST.len()],
        LAST[(n as usize / FIRST.len()) % LAST.len()],
    );
    let (city, state, zip) = PLACES[n as usize % PLACES.len()];
    let street = format!("{} Example Way", 100 + n);
    let digits = format!("555010{:04}", n % 10_000);
    let created = format!("2025-01-{:02} 10:00:00", 1 + n % 28);
    json!({
        "id": id,
        "external_id": null,
        "first_name": first,
        "last_name": last,
        "full_name": format!("{first} {last}"),
        "email": format!("{}.{}.{n}@example.com", first.to_lowercase(), last.to_lowercase()),
        "phone": format!("({}) {}-{}", &digits[..3], &digits[3..6], &digits[6..]),
        "address": {
            "street": street, "city": city, "state": state, "zip": zip, "county": null,
            "full_address": format!("{street}, {city}, {state} {zip}"),
            "latitude": 30.0 + (n % 10) as f64 / 10.0, "longitude": -97.0 - (n % 10) as f64 / 10.0
        },
        "customer_timezone": "America/Chicago",
        "lead_source": "sandbox seed",
        "status_id": 1,
        "status_name": "Lead",
        "timestamps": {"deleted_at": null, "created_at": created, "updated_at": created, "timezone": "UTC"}
    })
}

/// The install of seeded record `n`: its status and milestones follow from `n`.
pub fn install(n: u64, start_field: &str, completed_field: &str) -> Value {
    let id = FIRST_SEEDED_INSTALL - 1 + n;
    let customer = customer(n);
    let done = (n % 7) as usize;
    let status = match n {
        n if n % 23 == 0 => 5,
        n if n % 11 == 0 => 4,
        n if n % 17 == 0 => 323,
        _ if done == 0 => 1,
        _ if done >= MILESTONES.len() => 6,
        _ => 2,
    };
    let mut install = install_object(id, customer["id"].as_u64().unwrap_or(0), 4_100_000 + n);
    let updated = format!("2025-02-{:02} 12:00:00", 1 + n % 28);
    install["status_id"] = json!(status);
    install["status_name"] = json!(status_name(status));
    install["updated_at"] = json!(updated);
    for k in ["first_name", "last_name", "email", "phone"] {
        install["customer"][k] = customer[k].clone();
    }
    install["customer"]["mobile"] = json!(
        customer["phone"]
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()
    );
    let rows: Vec<Value> = MILESTONES
        .iter()
        .enumerate()
        .map(|(i, (mid, title))| {
            let mut row = json!({
                "id": 60_000 + n * 10 + i as u64,
                "milestone_id": mid,
                "sequence": i + 1,
                "title": title,
            });
            let (start, completed) = if i < done {
                (
                    json!(format!("2025-{:02}-01", 1 + i)),
                    json!(format!("2025-{:02}-{:02}", 1 + i, 2 + n % 27)),
                )
            } else if i == done {
                (json!(format!("2025-{:02}-01", 1 + i)), Value::Null)
            } else {
                (Value::Null, Value::Null)
            };
            row[start_field] = start;
            row[completed_field] = completed;
            row
        })
        .collect();
    install["current_milestone"] = MILESTONES
        .get(done.min(MILESTONES.len() - 1))
        .map_or(Value::Null, |(id, title)| json!({"id": id, "title": title}));
    install["all_milestones"] = Value::Array(rows);
    install
}

/// Makes the model hold exactly `count` seeded installs and customers (earlier seeded ones
/// beyond `count` are removed; records made through the API are kept).
pub fn seed(model: &mut Model, count: usize, start_field: &str, completed_field: &str) {
    let count = count as u64;
    model.installs.retain(|id, _| {
        !(FIRST_SEEDED_INSTALL..FIRST_SEEDED_INSTALL + 100_000).contains(id)
            || *id < FIRST_SEEDED_INSTALL + count
    });
    for n in 1..=count {
        model.installs.insert(
            FIRST_SEEDED_INSTALL - 1 + n,
            install(n, start_field, completed_field),
        );
    }
    let customers: Vec<Value> = (1..=count).map(customer).collect();
    super::leads::seed_customers(
        model,
        customers,
        FIRST_SEEDED_CUSTOMER..FIRST_SEEDED_CUSTOMER + 100_000,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_records_are_fake_varied_and_consistent() {
        let mut model = Model::default();
        seed(&mut model, 50, "start_date", "completed_date");
        assert_eq!(model.installs.len(), 50);
        let statuses: std::collections::BTreeSet<u64> = model
            .installs
            .values()
            .filter_map(|i| i["status_id"].as_u64())
            .collect();
        assert!(statuses.len() >= 4, "{statuses:?}");
        for (id, install) in &model.installs {
            let customer = install["customer_id"].as_u64().expect("customer");
            assert_eq!(customer - FIRST_SEEDED_CUSTOMER, id - FIRST_SEEDED_INSTALL);
            assert!(
                install["customer"]["email"]
                    .as_str()
                    .is_some_and(|e| e.ends_with("@example.com"))
            );
        }
        seed(&mut model, 10, "start_date", "completed_date");
        assert_eq!(
            model.installs.len(),
            10,
            "reseeding to fewer drops the rest"
        );
    }
}
