//! os-net-config's own state files beside the mapping: the NICs bound to
//! DPDK (`/var/lib/os-net-config/dpdk_mapping.yaml`) and the SR-IOV PFs and
//! VFs (`sriov_config.yaml`), read as os-net-config reads them.

use super::nics::DpdkBound;

/// Parses `dpdk_mapping.yaml` (a list of `{name, pci_address, mac_address,
/// driver}`); an empty file is an empty list, as os-net-config reads it.
///
/// # Errors
/// A document os-net-config itself would fail on: not a list, or an entry
/// without `name` or `pci_address` (it indexes both).
pub fn dpdk_map(
    file: &str,
    doc: &serde_json::Value,
) -> Result<Vec<DpdkBound>, crate::expect::ExpectError> {
    let err = |path: String, reason: &str| crate::expect::ExpectError {
        file: file.to_owned(),
        path,
        reason: reason.to_owned(),
    };
    let list = match doc {
        serde_json::Value::Null => return Ok(Vec::new()),
        serde_json::Value::Array(a) => a,
        _ => {
            return Err(err(
                String::new(),
                "not a list: os-net-config would fail reading it",
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let field = |k: &str| e.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            Ok(DpdkBound {
                name: field("name").ok_or_else(|| {
                    err(
                        format!("[{i}].name"),
                        "missing: os-net-config would fail on this entry",
                    )
                })?,
                pci_address: field("pci_address").ok_or_else(|| {
                    err(
                        format!("[{i}].pci_address"),
                        "missing: os-net-config would fail on this entry",
                    )
                })?,
                mac_address: field("mac_address"),
                vf: false,
            })
        })
        .collect()
}

/// The SR-IOV PF and VF names of `sriov_config.yaml` (`device_type`
/// `pf` / `vf`); entries without both keys are left out.
#[must_use]
pub fn sriov_names(doc: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let mut pfs = Vec::new();
    let mut vfs = Vec::new();
    for e in doc.as_array().into_iter().flatten() {
        let name = e.get("name").and_then(|v| v.as_str());
        match (e.get("device_type").and_then(|v| v.as_str()), name) {
            (Some("pf"), Some(n)) => pfs.push(n.to_owned()),
            (Some("vf"), Some(n)) => vfs.push(n.to_owned()),
            _ => {}
        }
    }
    (pfs, vfs)
}
