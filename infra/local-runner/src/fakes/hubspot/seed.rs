//! Seeding the sandbox from a mapping profile: every property the profile writes, as
//! `enerflo-sync-ops hubspot setup` creates them in a real portal (same list, same types, keys
//! unique), so `make run` with `CRM_CONNECTOR=hubspot` works without a setup step.

use enerflo_sync::crm::hubspot::schema::{hubspot_type, wanted};
use enerflo_sync::crm::profile::{Conversion, Profile};

use super::{HubSpotFake, ObjectType, PropertyDef};

pub fn seed_profile(fake: &HubSpotFake, profile: &Profile) {
    for (object, props) in wanted(profile) {
        let Some(t) = ObjectType::parse(&object) else {
            continue;
        };
        for w in props {
            if fake.property(t, &w.name).is_some() {
                continue;
            }
            let def = match (hubspot_type(&w.conversion), &w.conversion) {
                (_, Conversion::Enumeration { options }) => {
                    let values: Vec<&str> = options.values().map(String::as_str).collect();
                    PropertyDef::enumeration(&w.name, &values)
                }
                (("number", _), _) => PropertyDef::number(&w.name),
                (("date", _), _) => PropertyDef::date(&w.name),
                (("datetime", _), _) => PropertyDef::datetime(&w.name),
                (("bool", _), _) => PropertyDef::boolean(&w.name),
                (("string", "textarea"), _) => PropertyDef::textarea(&w.name),
                _ => PropertyDef::text(&w.name),
            };
            let def = def.group("enerflo");
            fake.seed_property(t, if w.unique { def.unique() } else { def });
        }
    }
}
