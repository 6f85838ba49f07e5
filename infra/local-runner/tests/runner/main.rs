//! The local runner binary as a process, one test binary: durability across kills and restarts,
//! log hygiene, and the metrics it writes and serves; and a stage's parallel workers in-process.

mod durability;
mod kit;
mod log_hygiene;
mod metrics;
mod workers;
