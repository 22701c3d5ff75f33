//! Speed and duplex, which rtnetlink does not carry, from sysfs. Never read on
//! a metrics scrape, and only when a link message can have changed them: each
//! read is two file opens, and the kernel takes the RTNL lock to answer (a
//! trylock that restarts the system call while a link change holds it), which
//! in a flap storm of a hundred messages a second was a large part of the
//! agent's work. The watch does not read at the message itself: it notes the
//! interface ([`carry`] says whether to) and reads once, just before it
//! publishes its snapshot ([`read`]), so a link that regained carrier is read
//! once per publication however many messages it sent, and not at all if it
//! lost carrier again before that.

use preflight_model::Interface;

/// Fills what can be kept of `speed_mbps` and `duplex` from `previous` (the
/// interface as the snapshot holds it) and says whether sysfs must be read:
/// when carrier, admin state, name and kind are the same, the previous
/// values stand (a driver reports a new speed only with a carrier change; a
/// bond's or a team's follows its ports, so theirs is always read); a link
/// without carrier has none, so it is never read.
///
/// When a read is needed, the previous values (if it had carrier) are kept
/// until it happens, so that a message that changes nothing else does not
/// make the snapshot look changed.
pub(crate) fn carry(iface: &mut Interface, previous: Option<&Interface>) -> bool {
    if !iface.carrier {
        iface.speed_mbps = None;
        iface.duplex = None;
        return false;
    }
    let previous = previous.filter(|p| p.carrier);
    if let Some(p) = previous {
        iface.speed_mbps = p.speed_mbps;
        iface.duplex.clone_from(&p.duplex);
    } else {
        iface.speed_mbps = None;
        iface.duplex = None;
    }
    let aggregate = iface.bond.is_some() || iface.kind.as_deref() == Some("team");
    !previous.is_some_and(|p| {
        !aggregate && p.admin_up == iface.admin_up && p.name == iface.name && p.kind == iface.kind
    })
}

/// Reads `speed_mbps` and `duplex` from /sys/class/net/<name>/ when the
/// driver reports them (virtual devices and links without carrier report
/// nothing).
pub(crate) fn read(iface: &mut Interface) {
    iface.speed_mbps = None;
    iface.duplex = None;
    if !iface.carrier
        || iface.name.is_empty()
        || iface.name.contains('/')
        || iface.name.starts_with('.')
    {
        return;
    }
    let base = std::path::Path::new("/sys/class/net").join(&iface.name);
    iface.speed_mbps = std::fs::read_to_string(base.join("speed"))
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|s| *s > 0 && *s < i64::from(u32::MAX))
        .and_then(|s| u32::try_from(s).ok());
    iface.duplex = std::fs::read_to_string(base.join("duplex"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| s == "full" || s == "half");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(carrier: bool, speed: Option<u32>) -> Interface {
        Interface {
            index: 4,
            name: "eth0".into(),
            admin_up: true,
            carrier,
            speed_mbps: speed,
            duplex: speed.map(|_| "full".to_owned()),
            ..Interface::default()
        }
    }

    #[test]
    fn a_link_regaining_carrier_is_read_one_keeping_it_is_not() {
        // Regained carrier: no speed until read, and a read is asked for.
        let mut now = link(true, Some(1));
        assert!(carry(&mut now, Some(&link(false, None))));
        assert_eq!((now.speed_mbps, now.duplex.as_deref()), (None, None));
        // New to the snapshot: read.
        let mut now = link(true, None);
        assert!(carry(&mut now, None));
        // Kept carrier, nothing else changed: the previous values stand.
        let mut now = link(true, None);
        assert!(!carry(&mut now, Some(&link(true, Some(10_000)))));
        assert_eq!(
            (now.speed_mbps, now.duplex.as_deref()),
            (Some(10_000), Some("full"))
        );
        // Lost carrier: nothing to read, nothing kept.
        let mut now = link(false, Some(1));
        assert!(!carry(&mut now, Some(&link(true, Some(10_000)))));
        assert_eq!((now.speed_mbps, now.duplex), (None, None));
    }

    #[test]
    fn a_renamed_or_readmitted_link_and_every_bond_are_read_again_keeping_values_meanwhile() {
        let before = link(true, Some(1_000));
        let mut renamed = link(true, None);
        renamed.name = "eth9".into();
        assert!(carry(&mut renamed, Some(&before)));
        assert_eq!(renamed.speed_mbps, Some(1_000), "kept until read");
        let mut bond = link(true, None);
        bond.kind = Some("bond".into());
        bond.bond = Some(preflight_model::Bond::default());
        let mut prev = bond.clone();
        prev.speed_mbps = Some(20_000);
        assert!(carry(&mut bond, Some(&prev)));
        assert_eq!(bond, prev, "an unchanged bond message changes nothing");
    }

    #[test]
    fn reading_a_link_without_carrier_or_with_an_odd_name_reads_nothing() {
        let mut down = link(false, Some(1));
        read(&mut down);
        assert_eq!((down.speed_mbps, down.duplex), (None, None));
        let mut odd = link(true, Some(1));
        odd.name = "../x".into();
        read(&mut odd);
        assert_eq!((odd.speed_mbps, odd.duplex), (None, None));
    }
}
