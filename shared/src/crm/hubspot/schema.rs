//! The HubSpot properties a mapping profile needs, with their HubSpot types: what
//! `enerflo-sync-ops hubspot setup` creates, and what the local HubSpot sandbox is seeded with.

use std::collections::{BTreeMap, BTreeSet};

use super::NOTE_KEY;
use crate::crm::profile::{Conversion, Profile};

/// One property the profile needs.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub name: String,
    pub conversion: Conversion,
    /// A key property: records are found by it, so it must be `hasUniqueValue`.
    pub unique: bool,
}

/// Every property per object, keys marked unique (the connector's note key included).
pub fn wanted(profile: &Profile) -> BTreeMap<String, Vec<Wanted>> {
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    fn add_keys(keys: &mut BTreeMap<String, BTreeSet<String>>, ev: &crate::crm::profile::EventMap) {
        let slot = keys.entry(ev.object.clone()).or_default();
        slot.extend(ev.keys.iter().map(|k| k.property.clone()));
        if let Some(c) = &ev.contact {
            add_keys(keys, c);
        }
    }
    for ev in profile.events.values() {
        add_keys(&mut keys, ev);
    }
    let mut all = profile.properties_by_object();
    // The connector marks every note it writes with NOTE_KEY, whatever the profile's key.
    if let Some(notes) = profile
        .events
        .get(crate::canonical::CrmEventType::NoteCreated.as_str())
    {
        all.entry(notes.object.clone())
            .or_default()
            .entry(NOTE_KEY.to_owned())
            .or_insert(Conversion::Text);
        keys.entry(notes.object.clone())
            .or_default()
            .insert(NOTE_KEY.to_owned());
    }
    all.into_iter()
        .map(|(object, props)| {
            let unique = keys.get(&object).cloned().unwrap_or_default();
            let list = props
                .into_iter()
                .map(|(name, conversion)| Wanted {
                    unique: unique.contains(&name),
                    name,
                    conversion,
                })
                .collect();
            (object, list)
        })
        .collect()
}

/// HubSpot's `type` and `fieldType` for a conversion.
pub fn hubspot_type(conversion: &Conversion) -> (&'static str, &'static str) {
    match conversion {
        Conversion::Text => ("string", "text"),
        Conversion::Number { .. } => ("number", "number"),
        Conversion::Date => ("date", "date"),
        Conversion::DateTime => ("datetime", "date"),
        Conversion::Bool => ("bool", "booleancheckbox"),
        Conversion::Enumeration { .. } => ("enumeration", "select"),
        Conversion::List { .. } | Conversion::Json => ("string", "textarea"),
    }
}
