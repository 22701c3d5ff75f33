//! Speed and duplex, which rtnetlink does not carry, from sysfs. Read only when
//! a link message for that interface arrives, never on a metrics scrape.

use preflight_model::Interface;

/// Fills `speed_mbps` and `duplex` from /sys/class/net/<name>/ when the driver
/// reports them (virtual devices and links without carrier report nothing).
pub(crate) fn enrich(iface: &mut Interface) {
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
