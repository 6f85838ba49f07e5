//! The two-way sync kit shared by the outbound stages (`crate::stages`, run by
//! `crate::pipeline`) and the inbound routes (`crate::inbound`): typed state keys ([`keys`]), one
//! entity lease with a bounded wait ([`lease`]), and one echo guard ([`echo`]) that merges content
//! fingerprints with direction markers. No stage or route imports a sibling's helpers: what two
//! of them share lives here.

pub mod echo;
pub mod fingerprints;
pub mod keys;
pub mod lease;
pub mod links;
pub mod notes;

pub use echo::{Direction, EchoGuard};
pub use keys::{EchoTarget, StateKey};
pub use lease::{EntityLease, LEASE, LEASE_WAIT};
pub use links::{LinkConflict, link_apart};
