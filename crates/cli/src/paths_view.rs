//! The member path check in `inspect`'s bond table: a PATHS cell per member
//! (`ok 2/2`: both of its paths answered; `NO 1/2`: one did not; `?`: could
//! not be checked; `? 1/2`: one answered, the other could not be checked) and, under the table, one line per path that did not
//! answer, naming the network, its VLAN and the target.

use std::fmt::Write as _;

use preflight_model::MemberPathStatus;

use crate::output::escape;

/// The PATHS cell of `member` of `bond`: `-` when it has no checked path.
pub fn cell(paths: &[MemberPathStatus], bond: &str, member: &str) -> String {
    let mine: Vec<&MemberPathStatus> = paths
        .iter()
        .filter(|p| p.bond == bond && p.member == member)
        .collect();
    if mine.is_empty() {
        return "-".into();
    }
    let up = mine.iter().filter(|p| p.up).count();
    // "NO" only for a path that was asked and not answered: an unchecked
    // one is unknown, not a miss.
    if mine.iter().all(|p| p.unchecked) {
        "?".into()
    } else if mine.iter().any(|p| !p.up && !p.unchecked) {
        format!("NO {up}/{}", mine.len())
    } else if up < mine.len() {
        format!("? {up}/{}", mine.len())
    } else {
        format!("ok {up}/{}", mine.len())
    }
}

/// One line per path of `bond` that is not up.
pub fn misses(o: &mut String, paths: &[MemberPathStatus], bond: &str) {
    for p in paths.iter().filter(|p| p.bond == bond && !p.up) {
        let _ = writeln!(
            o,
            "  path {} -> {}: {}",
            escape(&p.member),
            escape(&p.describe_target()),
            if p.unchecked {
                format!(
                    "not checked ({})",
                    escape(p.last_error.as_deref().unwrap_or("cannot send"))
                )
            } else {
                format!("{}/{} ARP answered", p.answered, p.sent)
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(member: &str, up: bool) -> MemberPathStatus {
        MemberPathStatus {
            bond: "bond0".into(),
            member: member.into(),
            network: "bond0.200".into(),
            vlan: Some(200),
            target: "10.200.0.1".parse().expect("ip"),
            sent: if up { 1 } else { 3 },
            answered: u32::from(up),
            failed: !up,
            up,
            consecutive_failures: 0,
            source_mac: None,
            last_error: None,
            unchecked: false,
        }
    }

    #[test]
    fn cells_and_miss_lines() {
        let mut evil = path("m\u{1b}[2JB", false);
        evil.network = "b\u{202e}0".into();
        let paths = [path("mA", true), path("mB", false), evil];
        assert_eq!(cell(&paths, "bond0", "mA"), "ok 1/1");
        assert_eq!(cell(&paths, "bond0", "mB"), "NO 0/1");
        assert_eq!(cell(&paths, "bond0", "mC"), "-");
        assert_eq!(cell(&paths, "bond1", "mA"), "-");
        let mut o = String::new();
        misses(&mut o, &paths, "bond0");
        assert!(
            o.contains("  path mB -> 10.200.0.1 on bond0.200 (VLAN 200): 0/3 ARP answered\n"),
            "{o}"
        );
        assert!(
            !o.contains('\u{1b}') && !o.contains('\u{202e}'),
            "escaped: {o}"
        );
        let mut u = path("mA", false);
        u.unchecked = true;
        assert_eq!(cell(&[u.clone()], "bond0", "mA"), "?");
        // Review item 17: answered and unchecked, none missed, is not "NO".
        assert_eq!(cell(&[path("mA", true), u.clone()], "bond0", "mA"), "? 1/2");
        assert_eq!(cell(&[path("mA", false), u], "bond0", "mA"), "NO 0/2");
    }
}
