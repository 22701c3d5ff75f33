//! Rules for libteam devices (`team` in os-net-config, RHEL 7-era
//! deployments). The kernel's rtnetlink has no per-port team state (that is
//! in the `team` generic netlink family), so a team is judged by what
//! rtnetlink does show: the team device's oper state and each port's
//! carrier. A port without carrier is down for the gate.

use preflight_model::{Interface, OperState, Snapshot};

use crate::{raw, Code, PolicyConfig, Raw};

/// Whether `iface` is a port of a team device.
#[must_use]
pub fn is_team_port(snap: &Snapshot, iface: &Interface) -> bool {
    iface
        .controller
        .and_then(|c| snap.interfaces.get(&c))
        .is_some_and(|t| t.kind.as_deref() == Some("team"))
}

/// BOND_DOWN, BOND_PORT_DOWN and BOND_DEGRADED for one team device.
pub fn rules(snap: &Snapshot, team: &Interface, config: &PolicyConfig, out: &mut Vec<Raw>) {
    let name = &team.name;
    let ports = snap.ports_of(team.index);
    let up = ports.iter().filter(|p| p.carrier).count();
    if !team.admin_up
        || !team.carrier
        || !matches!(team.oper_state, OperState::Up | OperState::Unknown)
    {
        out.push(raw(
            Code::BondDown,
            name,
            format!(
                "team {name} is down (oper state {}, {up} of {} ports with carrier); all traffic through it is lost. See `teamdctl {name} state`",
                team.oper_state.as_str(),
                ports.len()
            ),
        ));
    }
    for p in ports.iter().filter(|p| !p.carrier) {
        out.push(raw(
            Code::BondPortDown,
            format!("{name}/{}", p.name),
            format!(
                "team {name} port {} has no carrier; {name} runs without redundancy. Check the cable and switch port of {}",
                p.name, p.name
            ),
        ));
    }
    let min = config.bond_min_ports as usize;
    if up < ports.len() || ports.len() < min {
        out.push(raw(
            Code::BondDegraded,
            name,
            format!(
                "team {name} has {up} of {} ports with carrier (at least {min} needed for redundancy); one more failure takes it down",
                ports.len()
            ),
        ));
    }
}
