//! Speed and duplex, which rtnetlink does not carry, from sysfs. Read only when
//! a link message for that interface arrives, never on a metrics scrape, and
//! only when the message can have changed them: each read is two file opens
//! (and the kernel takes the RTNL lock to answer), which in a flap storm of a
//! hundred messages a second was a large part of the agent's work.

use preflight_model::Interface;

/// Fills `speed_mbps` and `duplex` from /sys/class/net/<name>/ when the driver
/// reports them (virtual devices and links without carrier report nothing).
/// `previous` is the interface as the snapshot holds it: when carrier, admin
/// state and name are the same, its speed and duplex are kept unread (a
/// driver reports a new speed only with a carrier change; a bond's or a
/// team's follows its ports, so theirs is always read); a link without
/// carrier has none, so it is not read either.
pub(crate) fn enrich(iface: &mut Interface, previous: Option<&Interface>) {
    if !iface.carrier {
        iface.speed_mbps = None;
        iface.duplex = None;
        return;
    }
    let aggregate = iface.bond.is_some() || iface.kind.as_deref() == Some("team");
    if let Some(p) = previous.filter(|p| {
        !aggregate
            && p.carrier
            && p.admin_up == iface.admin_up
            && p.name == iface.name
            && p.kind == iface.kind
    }) {
        iface.speed_mbps = p.speed_mbps;
        iface.duplex.clone_from(&p.duplex);
        return;
    }
    if iface.name.is_empty() || iface.name.contains('/') || iface.name.starts_with('.') {
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
