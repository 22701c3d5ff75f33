//! The set-up the `*_inspect` tests share: a namespace the test made with a
//! veth `v0` holding 192.0.2.10/24 (so one declared address is there and
//! the rest are not), `preflight inspect --expect STACK:PATH` run inside it,
//! and its findings read back.

use std::fmt;

use serde_json::Value;

use crate::netns::Netns;
use crate::preflight_bin;

/// A namespace with `v0`/`v1` up and 192.0.2.10/24 on `v0`.
pub struct StackNs(pub Netns);

impl StackNs {
    /// Makes the namespace (tagged `tag`) and its veth pair.
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let ns = Netns::new(tag);
        for l in [
            "link add v0 type veth peer name v1",
            "link set v0 up",
            "link set v1 up",
            "addr add 192.0.2.10/24 dev v0",
        ] {
            ns.ip(l);
        }
        Self(ns)
    }

    /// `preflight inspect --json --expect EXPECT` inside the namespace.
    #[must_use]
    pub fn inspect_json(&self, expect: &str) -> Inspected {
        let out = self
            .0
            .command(preflight_bin())
            .arg("inspect")
            .arg("--json")
            .arg("--expect")
            .arg(expect)
            .output()
            .expect("preflight runs");
        let json = if out.status.code() == Some(1) {
            serde_json::from_slice(&out.stdout).expect("json")
        } else {
            Value::Null
        };
        Inspected {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            json,
        }
    }

    /// `preflight inspect --expect EXPECT` inside the namespace: its text.
    #[must_use]
    pub fn inspect_text(&self, expect: &str) -> String {
        let out = self
            .0
            .command(preflight_bin())
            .arg("inspect")
            .arg("--expect")
            .arg(expect)
            .output()
            .expect("preflight runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// What `inspect --json` answered.
pub struct Inspected {
    /// Its exit code.
    pub code: Option<i32>,
    /// Its stderr, for the failure message.
    pub stderr: String,
    /// Its stdout as JSON (Null unless it exited 1, the no-go answer).
    pub json: Value,
}

impl Inspected {
    /// The findings.
    #[must_use]
    pub fn findings(&self) -> &[Value] {
        self.json["findings"].as_array().expect("findings")
    }

    /// Whether a finding has `code`, `severity` and a message containing
    /// `text`.
    #[must_use]
    pub fn has(&self, code: &str, severity: &str, text: &str) -> bool {
        self.findings().iter().any(|f| {
            f["code"] == code
                && f["severity"] == severity
                && f["message"].as_str().is_some_and(|m| m.contains(text))
        })
    }

    /// Whether any finding's subject is `subject`.
    #[must_use]
    pub fn has_subject(&self, subject: &str) -> bool {
        self.findings().iter().any(|f| f["subject"] == subject)
    }
}

impl fmt::Display for Inspected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.json.fmt(f)
    }
}
