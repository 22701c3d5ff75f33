//! LLDP for the one-shot commands: `preflight debug lldp` (listen on one
//! interface and print what was heard) and `inspect`, which listens on the
//! bond members beside the path check, 2 s by default (`--lldp-wait`):
//! switches send one LLDPDU every 30 s, so a short listen mostly hears
//! nothing; the agent listens all the time and its report carries them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use preflight_model::lldp::LldpState;

use crate::{emit, EXIT_GO, EXIT_UNDECIDED};

/// `preflight debug lldp`: listens on `interface` for `seconds` and prints
/// `{"neighbors": [...], "decoded": n, "malformed": n, "limited": n,
/// "errors": {...}}`.
pub async fn debug(interface: String, seconds: u64) -> u8 {
    let (_keep, rx) = tokio::sync::watch::channel(vec![interface]);
    let l = preflight_probe::lldp::listen::spawn(rx);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let errors = l.errors.borrow().clone();
    let out = serde_json::json!({
        "neighbors": *l.neighbors.borrow(),
        "decoded": l.stats.decoded.load(Ordering::Relaxed),
        "malformed": l.stats.malformed.load(Ordering::Relaxed),
        "limited": l.stats.limited.load(Ordering::Relaxed),
        "errors": errors,
    });
    emit(&format!("{out}\n"));
    if errors.is_empty() {
        EXIT_GO
    } else {
        EXIT_UNDECIDED
    }
}

/// The LLDP state of `snap`'s bond members after listening up to `wait`
/// (until every member was heard); `complete` when `wait` covers a full
/// LLDP interval. `wait` zero: not listened, no LLDP rule applies.
pub async fn heard(snap: &preflight_model::Snapshot, wait: Duration) -> LldpState {
    let members = preflight_agent::lldp::members(snap);
    if wait.is_zero() || members.is_empty() {
        return LldpState::default();
    }
    let (neighbors, errors) = preflight_probe::lldp::listen::listen_for(members, wait).await;
    for (member, e) in &errors {
        eprintln!("preflight: LLDP: cannot listen on {member}: {e}");
    }
    LldpState {
        listening: true,
        complete: wait >= preflight_agent::lldp::FULL_INTERVAL && errors.is_empty(),
        neighbors,
        vlans: preflight_agent::lldp::vlans(),
        errors,
    }
}

/// The SWITCH cell of a member row: `switch-A swp1` (system name, else
/// chassis ID, and the port as [`preflight_model::LldpNeighbor::port`]
/// names it: lldpd's default MAC port ID shows as its description), every
/// sender the member hears joined by `, ` (a switch and a NIC's LLDP
/// agent), escaped; `-` when no LLDP was heard on it.
pub fn cell(lldp: &[preflight_model::LldpNeighbor], member: &str) -> String {
    let heard: Vec<String> = lldp
        .iter()
        .filter(|n| n.member == member)
        .map(|n| {
            crate::output::escape(&format!(
                "{} {}",
                n.system_name.as_deref().unwrap_or(&n.chassis_id),
                n.port()
            ))
        })
        .collect();
    if heard.is_empty() {
        "-".into()
    } else {
        heard.join(", ")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mac_port_id_shows_as_the_port_description() {
        let n = preflight_model::LldpNeighbor {
            member: "mA".into(),
            chassis_id: "52:54:00:00:00:0a".into(),
            chassis_id_subtype: "mac".into(),
            port_id: "9a:68:8f:e1:8e:4c".into(),
            port_id_subtype: "mac".into(),
            ttl_s: 120,
            system_name: Some("switch-A".into()),
            port_descr: Some("swp1".into()),
            mgmt_address: None,
            pvid: None,
            vlans: Vec::new(),
            vlans_cut: false,
            max_frame_size: None,
            aggregation: None,
            since: std::time::SystemTime::UNIX_EPOCH,
        };
        assert_eq!(super::cell(std::slice::from_ref(&n), "mA"), "switch-A swp1");
        // A second sender on the member: both shown.
        let agent = preflight_model::LldpNeighbor {
            chassis_id: "3c:fd:fe:00:00:01".into(),
            system_name: None,
            port_id: "port0".into(),
            port_id_subtype: "ifname".into(),
            ..n.clone()
        };
        assert_eq!(
            super::cell(&[n, agent], "mA"),
            "switch-A swp1, 3c:fd:fe:00:00:01 port0"
        );
    }
}
