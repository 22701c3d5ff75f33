//! The link attributes preflight reads, parsed with netlink-packet-route one
//! by one, and nothing else: statistics, the per-family configuration in
//! IFLA_AF_SPEC, queues, XDP, a bridge port's forty settings and the like
//! are most of a link message's bytes, and parsing them into vectors was most
//! of the decoding time in a flap storm. They are still framed (a broken
//! length stops the message and is recorded), but a malformed attribute
//! there cannot mark the interface: nothing preflight reports comes from it.

use netlink_packet_core::{DecodeError, NlaBuffer, NlasIterator, Parseable, ParseableParametrized};
use netlink_packet_route::link::{
    InfoBond, InfoBondPort, InfoData, InfoKind, InfoPortData, InfoPortKind, LinkAttribute, LinkInfo,
};
use netlink_packet_route::AddressFamily;

/// IFLA_LINKINFO: parsed here, not by netlink-packet-route as a whole.
const IFLA_LINKINFO: u16 = 18;

/// The link attributes `convert_link` reads (uapi `if_link.h`):
/// IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_OPERSTATE,
/// IFLA_LINKINFO and IFLA_CARRIER_CHANGES.
pub(super) const LINK_READ: [u16; 7] = [1, 3, 4, 10, 16, IFLA_LINKINFO, 35];

// Inside IFLA_LINKINFO.
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_PORT_KIND: u16 = 4;
const IFLA_INFO_PORT_DATA: u16 = 5;

/// The attributes of [`LINK_READ`] in `buf` (a link message after its
/// header), each parsed on its own: one that does not parse is recorded in
/// `errors` (`attribute 4: ...`) and the others are kept.
pub(super) fn link_attributes(
    buf: &[u8],
    family: AddressFamily,
    errors: &mut Vec<String>,
) -> Vec<LinkAttribute> {
    let mut attributes = Vec::with_capacity(LINK_READ.len());
    for nla in NlasIterator::new(buf) {
        let nla = match nla {
            Ok(nla) => nla,
            Err(e) => {
                errors.push(format!("attribute framing: {e}"));
                break;
            }
        };
        let kind = nla.kind();
        if !LINK_READ.contains(&kind) {
            continue;
        }
        let parsed = if kind == IFLA_LINKINFO {
            link_info(&nla).map(LinkAttribute::LinkInfo)
        } else {
            LinkAttribute::parse_with_param(&nla, family)
        };
        match parsed {
            Ok(a) => attributes.push(a),
            Err(e) => errors.push(format!("attribute {kind}: {e}")),
        }
    }
    attributes
}

/// IFLA_LINKINFO as far as preflight reads it: the kind and the port kind,
/// the data of a bond and of a bond port. Any part of those that does not
/// parse fails the whole attribute, as netlink-packet-route's own parser
/// does; the data of other kinds is framed but not parsed.
fn link_info(nla: &NlaBuffer<&[u8]>) -> Result<Vec<LinkInfo>, DecodeError> {
    let mut out = Vec::with_capacity(4);
    let mut kind = None;
    let mut port_kind = None;
    for info in NlasIterator::new(nla.value()) {
        let info = info?;
        match info.kind() {
            IFLA_INFO_KIND => {
                let k = InfoKind::parse(&info)?;
                kind = Some(k.clone());
                out.push(LinkInfo::Kind(k));
            }
            IFLA_INFO_DATA if kind == Some(InfoKind::Bond) => {
                let bond = NlasIterator::new(info.value())
                    .map(|a| a.and_then(|a| InfoBond::parse(&a)))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(LinkInfo::Data(InfoData::Bond(bond)));
            }
            IFLA_INFO_PORT_KIND => {
                let k = InfoPortKind::parse(&info)?;
                port_kind = Some(k.clone());
                out.push(LinkInfo::PortKind(k));
            }
            IFLA_INFO_PORT_DATA if port_kind == Some(InfoPortKind::Bond) => {
                let port = NlasIterator::new(info.value())
                    .map(|a| a.and_then(|a| InfoBondPort::parse(&a)))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(LinkInfo::PortData(InfoPortData::BondPort(port)));
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One attribute: length, type, payload, padding to 4 bytes.
    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + payload.len()).expect("short");
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    /// IFLA_LINKINFO with a port kind and port data holding one empty
    /// (malformed: a state is one byte) attribute 1.
    fn port(port_kind: &str) -> Vec<u8> {
        let mut info = nla(IFLA_INFO_KIND, b"veth\0");
        info.extend(nla(
            IFLA_INFO_PORT_KIND,
            format!("{port_kind}\0").as_bytes(),
        ));
        info.extend(nla(IFLA_INFO_PORT_DATA, &nla(1, &[])));
        nla(IFLA_LINKINFO, &info)
    }

    #[test]
    fn only_a_bond_ports_data_is_parsed() {
        // A bridge port's data is not read: its malformed state is skipped.
        let mut errors = Vec::new();
        let attrs = link_attributes(&port("bridge"), AddressFamily::Unspec, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            attrs,
            [LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortKind(InfoPortKind::Bridge),
            ])]
        );
        // A bond port's is, and the attribute fails whole, as before.
        let attrs = link_attributes(&port("bond"), AddressFamily::Unspec, &mut errors);
        assert!(attrs.is_empty(), "{attrs:?}");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("attribute 18: "), "{errors:?}");
    }
}
