//! The fleet service: stores agents' reports, answers the go/no-go gate for a
//! scope of nodes, keeps waivers and an audit log, serves the on-call page.
//!
//! [`fleet`] holds the gate logic (pure); [`store`] is the SQLite file;
//! [`api`] is the axum router.

#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod fleet;
pub mod metrics;
pub mod page;
pub mod server;
pub mod store;
