//! The local runner binary as a process, one test binary: durability across kills and restarts,
//! and log hygiene.

mod durability;
mod kit;
mod log_hygiene;
