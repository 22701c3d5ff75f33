//! The fleet service: stores agents' reports, answers the go/no-go gate for a
//! scope of nodes, keeps waivers and an audit log, serves the on-call page.
//!
//! Layers, each using only those below it: [`api`] (axum router, one module
//! per resource, and the on-call page) → [`state`] (what handlers share) →
//! [`answers`] (gate answers rendered once per change of their scope) →
//! [`service`] (store first, then fleet, rollback; the blocking calls) →
//! [`fleet`] (gate logic, pure) and [`store`] (a SQLite file, or PostgreSQL
//! shared by several replicas, which [`replicas`] follows). [`server`] wires
//! them into a running process.

#![warn(missing_docs)]

pub mod admit;
pub mod answers;
pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod conn;
pub mod error;
pub mod fleet;
pub mod handoff;
pub mod metrics;
pub mod replicas;
pub mod server;
pub mod service;
pub mod state;
pub mod tls;

/// The durable store, its own crate (`crates/store`); kept at this path so
/// that `store::…` reads the same everywhere.
pub use preflight_store as store;
