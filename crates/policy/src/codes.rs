//! Finding codes. The codes themselves (string, default severity, meaning)
//! live in [`preflight_model::code`], beside the node-level codes the
//! aggregator adds, so that every crate shares one vocabulary; this module
//! keeps the policy's view of them: [`ALL`] is the finding codes, the ones
//! a rule can emit and `[policy.severity]` can configure.

pub use preflight_model::code::{Code, FINDING_CODES as ALL};
