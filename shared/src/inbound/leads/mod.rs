//! Stage 1.1: `POST /crm/leads` -> `POST /api/v1/partner/action/lead/add`, linking the CRM id to
//! the Enerflo customer id.
//!
//! One Enerflo lead per `crm_id`, whatever the CRM repeats: calls for one `crm_id` are serialised
//! by a claim (a conditional put), a known lead whose content is what we last sent answers 200
//! without calling Enerflo, and any other call is an upsert keyed by `integration_record_id` =
//! `crm_id` (docs/enerflo-api.md 2.1, docs/peer-lessons.md 7, 19). Before writing, the CRM id is
//! linked and the lead's fingerprint recorded, so the `new_customer` / `customer.created` Enerflo
//! fires back is recognised as our own write by stage 1.2 (docs/peer-lessons.md 9).
//!
//! By responsibility: `request` reads and validates the body, `route` is the handler and its
//! decisions, `link` the claims, links and state around the write, `lead_add` the Enerflo
//! call and its answer.

mod lead_add;
mod link;
mod request;
mod route;
#[cfg(test)]
mod test_kit;

pub use request::{LeadRequest, is_email};
pub use route::{LeadsRoute, PEER_WAIT};
