//! `deal.projectSubmitted` / `deal.projectReceived` + the hydrated install -> canonical [`Project`].
//!
//! Precedence: the webhook payload carries the newest signed design and pricing, so it wins for
//! system, adders, finance and pricing; the install (from `installs/find`) fills what the payload
//! lacks (customer email and phone, timezone, v1 ids, and panel data when the design is absent).

use crate::canonical::{
    Adder, AdderKind, Address, Batteries, EnerfloRefs, FileRef, Finance, Inverter, Lead, Panel,
    Pricing, Project, System, clean, normalise_zip,
};
use crate::enerflo::install::Install;
use crate::enerflo::lenient::{value_to_f64, value_to_string};
use crate::enerflo::project::{self as ev, ProjectPayload};

pub fn map_project(p: &ProjectPayload, install: Option<&Install>, resubmission: bool) -> Project {
    let pricing = p
        .proposal
        .as_ref()
        .and_then(|pr| pr.pricing_outputs.as_ref());
    let design = pricing
        .and_then(|po| po.design.as_ref())
        .or(p.design.as_ref());
    let address = pricing
        .and_then(|po| po.deal.as_ref())
        .and_then(|d| d.project_address.as_ref())
        .map(map_address);

    let inst_customer = install.and_then(|i| i.customer.as_ref());
    let customer = Lead {
        first_name: p
            .customer
            .as_ref()
            .and_then(|c| clean(c.first_name.as_deref()))
            .or_else(|| inst_customer.and_then(|c| clean(c.first_name.as_deref()))),
        last_name: p
            .customer
            .as_ref()
            .and_then(|c| clean(c.last_name.as_deref()))
            .or_else(|| inst_customer.and_then(|c| clean(c.last_name.as_deref()))),
        email: p
            .customer
            .as_ref()
            .and_then(|c| clean(c.email.as_deref()))
            .or_else(|| inst_customer.and_then(|c| clean(c.email.as_deref()))),
        phone: p
            .customer
            .as_ref()
            .and_then(|c| clean(c.mobile.as_deref()).or_else(|| clean(c.phone.as_deref())))
            .or_else(|| {
                inst_customer
                    .and_then(|c| clean(c.mobile.as_deref()).or_else(|| clean(c.phone.as_deref())))
            }),
        address: address.clone(),
        lead_source: inst_customer.and_then(|c| clean(c.lead_source.as_deref())),
        timezone: inst_customer.and_then(|c| clean(c.customer_timezone.as_deref())),
        owner: p
            .deal
            .as_ref()
            .and_then(|d| d.sales_rep.as_ref())
            .and_then(|r| clean(r.id.as_deref())),
    };

    Project {
        customer,
        address,
        system: map_system(design, pricing, install),
        adders: map_adders(pricing),
        finance: map_finance(p),
        pricing: Pricing {
            gross_cost: pricing.and_then(|po| po.gross_cost),
            net_cost: pricing.and_then(|po| po.net_cost),
            gross_ppw: pricing.and_then(|po| po.gross_ppw),
            net_ppw: pricing.and_then(|po| po.net_ppw),
        },
        files: p
            .deal
            .as_ref()
            .map(|d| {
                d.files
                    .iter()
                    .map(|f| FileRef {
                        name: clean(f.name.as_deref()),
                        source: clean(f.source.as_deref()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        resubmission,
    }
}

/// The Enerflo ids of an install's project, as far as the cross-reference knows them.
pub fn install_project_refs(link: &crate::store::EntityLink, install_id: u64) -> EnerfloRefs {
    use crate::store::IdForm;
    EnerfloRefs {
        customer_id: None,
        customer_uuid: None,
        deal_id: link.id(IdForm::Deal),
        install_id: Some(install_id),
        survey_id: link.id(IdForm::Survey).and_then(|s| s.parse().ok()),
    }
}

pub fn project_refs(p: &ProjectPayload, install: Option<&Install>) -> EnerfloRefs {
    EnerfloRefs {
        customer_id: install.and_then(|i| {
            i.customer_id
                .or_else(|| i.customer.as_ref().and_then(|c| c.id))
        }),
        customer_uuid: p.customer.as_ref().and_then(|c| clean(c.id.as_deref())),
        deal_id: p.deal_id().map(str::to_owned),
        install_id: install.and_then(|i| i.id),
        survey_id: install.and_then(|i| i.survey_id),
    }
}

fn map_address(a: &ev::Address) -> Address {
    Address {
        street: match (clean(a.line1.as_deref()), clean(a.line2.as_deref())) {
            (Some(l1), Some(l2)) => Some(format!("{l1} {l2}")),
            (l1, l2) => l1.or(l2),
        },
        city: clean(a.city.as_deref()),
        state: clean(a.state.as_deref()),
        zip: normalise_zip(
            a.postal_code.as_deref(),
            a.state.as_deref(),
            a.country.as_deref(),
        ),
        country: clean(a.country.as_deref()),
        lat: a.lat,
        lng: a.lng,
    }
}

fn map_system(
    design: Option<&ev::Design>,
    pricing: Option<&ev::PricingOutputs>,
    install: Option<&Install>,
) -> System {
    let solar = install.and_then(|i| i.solar_data.as_ref());
    let arrays = design.map(|d| d.arrays.as_slice()).unwrap_or_default();
    let counted: Vec<u64> = arrays.iter().filter_map(|a| a.module_count).collect();
    let panel_count = if counted.is_empty() {
        solar.and_then(|s| s.panel_count)
    } else {
        Some(counted.iter().sum())
    };

    // The panel type is the module on the most panels (arrays normally share one module).
    let panel = arrays
        .iter()
        .filter_map(|a| a.module.as_ref().map(|m| (a.module_count.unwrap_or(0), m)))
        .max_by_key(|(count, _)| *count)
        .map(|(_, m)| Panel {
            name: clean(m.name.as_deref()),
            manufacturer: clean(m.manufacturer.as_deref()),
            model: clean(m.model.as_deref()),
            capacity_watts: m.capacity,
        })
        .or_else(|| {
            solar
                .and_then(|s| s.panel.as_ref())
                .and_then(panel_from_solar_data)
        });

    let size_watts = design
        .and_then(|d| d.total_system_size_watts)
        .or_else(|| pricing.and_then(|po| po.system_size_watts))
        .or_else(|| {
            solar
                .and_then(|s| s.system_size)
                .map(|kw| (kw * 1000.0).round())
        });

    let inverters = design
        .map(|d| {
            d.inverters
                .iter()
                .map(|i| Inverter {
                    name: clean(i.name.as_deref()),
                    manufacturer: clean(i.manufacturer.as_deref()),
                    model: clean(i.model.as_deref()),
                    count: i.count,
                    ac_output_watts: i.ac_output,
                    is_micro: i.is_micro,
                })
                .collect()
        })
        .unwrap_or_default();

    let batteries = design
        .map(|d| {
            let items = if d.batteries.is_empty() {
                d.battery.clone()
            } else {
                d.batteries.clone()
            };
            let item_count: u64 = items
                .iter()
                .map(|b| {
                    b.get("count")
                        .or_else(|| b.get("quantity"))
                        .and_then(value_to_f64)
                        .map_or(1, |c| c as u64)
                })
                .sum();
            Batteries {
                count: d
                    .battery_count
                    .or((!items.is_empty()).then_some(item_count)),
                purpose: clean(d.battery_purpose.as_deref()),
                items,
            }
        })
        .unwrap_or_default();

    System {
        size_watts,
        panel,
        panel_count,
        inverters,
        batteries,
    }
}

fn panel_from_solar_data(v: &serde_json::Value) -> Option<Panel> {
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| v.get(*k).and_then(value_to_string))
    };
    let panel = Panel {
        name: text(&["name", "title", "panel_name"]),
        manufacturer: text(&["manufacturer", "make", "brand"]),
        model: text(&["model"]),
        capacity_watts: ["capacity", "watts", "wattage", "output"]
            .iter()
            .find_map(|k| v.get(*k).and_then(value_to_f64)),
    };
    (panel != Panel::default()).then_some(panel)
}

fn map_adders(pricing: Option<&ev::PricingOutputs>) -> Vec<Adder> {
    let Some(po) = pricing else { return Vec::new() };
    let map = |a: &ev::Adder, kind| Adder {
        name: clean(a.display_name.as_deref()).or_else(|| clean(a.name.as_deref())),
        amount: a.amount,
        kind,
    };
    po.calculated_system_adders
        .iter()
        .map(|a| map(a, AdderKind::System))
        .chain(
            po.calculated_value_adders
                .iter()
                .map(|a| map(a, AdderKind::Value)),
        )
        .collect()
}

fn map_finance(p: &ProjectPayload) -> Finance {
    let proposal = p.proposal.as_ref();
    let pricing = proposal.and_then(|pr| pr.pricing_outputs.as_ref());
    let product = proposal
        .and_then(|pr| pr.finance_product.as_ref())
        .or(pricing.and_then(|po| po.finance_product.as_ref()));
    Finance {
        product: product.and_then(|f| clean(f.name.as_deref())),
        method: product
            .and_then(|f| clean(f.finance_method_name.as_deref()))
            .or_else(|| {
                pricing
                    .and_then(|po| po.finance_method.as_ref())
                    .and_then(|m| clean(m.plugin_name.as_deref()))
            })
            .or_else(|| product.and_then(|f| clean(f.method_id.as_deref()))),
        term_months: product.and_then(|f| f.term_months),
    }
}
