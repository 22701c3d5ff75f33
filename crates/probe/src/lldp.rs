//! LLDP (IEEE 802.1AB-2016) decoding: an LLDPDU from a switch in, the
//! neighbour it describes out, or an error value that says what is wrong
//! and at which byte. Everything here comes from a device preflight does not
//! control, so every length is checked before it is used, nothing is
//! allocated beyond a bound (texts are cut at 255 bytes, VLANs at
//! [`MAX_VLANS`]) and the decoder never panics (tests feed it random bytes
//! and every truncation of real frames).
//!
//! Only what preflight judges is read: the three mandatory TLVs (chassis
//! ID, port ID, TTL, in that order, as §8.2 requires; a receiver discards an
//! LLDPDU without them, §9.2.7.7.1), port description, system name, the
//! first management address, 802.1 port VLAN ID and VLAN names, 802.3
//! maximum frame size and link aggregation (802.3's subtype 3 and its
//! 802.1AX successor, 802.1 subtype 7: lldpd sends the former). Other TLVs
//! are skipped by their length; the End TLV is optional (802.1AB-2009 made
//! it so). The receive side lives in [`listen`].

pub mod listen;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use preflight_model::lldp::{LldpAggregation, LldpVlan, MAX_TEXT_BYTES, MAX_VLANS};
use preflight_model::LldpNeighbor;

/// The LLDP Ethertype.
pub const ETHERTYPE: u16 = 0x88cc;
/// The nearest-bridge group address switches send LLDPDUs to (§7.1).
pub const NEAREST_BRIDGE: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];

const TLV_END: u8 = 0;
const TLV_CHASSIS_ID: u8 = 1;
const TLV_PORT_ID: u8 = 2;
const TLV_TTL: u8 = 3;
const TLV_PORT_DESCR: u8 = 4;
const TLV_SYSTEM_NAME: u8 = 5;
const TLV_MGMT_ADDR: u8 = 8;
const TLV_ORG: u8 = 127;
const OUI_DOT1: [u8; 3] = [0x00, 0x80, 0xc2];
const OUI_DOT3: [u8; 3] = [0x00, 0x12, 0x0f];
const DOT1_PVID: u8 = 1;
const DOT1_VLAN_NAME: u8 = 3;
const DOT1_LINK_AGG: u8 = 7;
const DOT3_LINK_AGG: u8 = 3;
const DOT3_MAX_FRAME: u8 = 4;

/// An LLDPDU preflight does not take, and why; `offset` is the byte of the
/// LLDPDU (after the Ethernet header) where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LldpError {
    /// Fewer than two bytes left for a TLV header.
    #[error("LLDPDU cut inside a TLV header at byte {offset}")]
    TruncatedHeader {
        /// Byte of the cut header.
        offset: usize,
    },
    /// A TLV's length runs past the end of the LLDPDU.
    #[error("TLV type {tlv} at byte {offset} says {len} bytes but only {left} remain")]
    PastEnd {
        /// TLV type.
        tlv: u8,
        /// Byte of its header.
        offset: usize,
        /// Length it claims.
        len: usize,
        /// Bytes left after its header.
        left: usize,
    },
    /// A TLV whose length is not one 802.1AB allows for its type.
    #[error("{what} TLV at byte {offset} has length {len}, {expected}")]
    BadLength {
        /// Which TLV.
        what: &'static str,
        /// Byte of its header.
        offset: usize,
        /// Its length.
        len: usize,
        /// What 802.1AB allows.
        expected: &'static str,
    },
    /// A chassis or port ID with a reserved subtype.
    #[error("{what} TLV at byte {offset} has reserved subtype {subtype}")]
    ReservedSubtype {
        /// Which TLV.
        what: &'static str,
        /// Byte of its header.
        offset: usize,
        /// The subtype.
        subtype: u8,
    },
    /// The LLDPDU does not start with chassis ID, port ID and TTL, in order,
    /// or repeats one of them.
    #[error("mandatory TLVs out of order or missing: expected {expected} at byte {offset}, found TLV type {found}")]
    Mandatory {
        /// The TLV the order requires here.
        expected: &'static str,
        /// Byte of the TLV found instead.
        offset: usize,
        /// Its type (0: the LLDPDU ended).
        found: u8,
    },
    /// An Ethernet frame that is not an LLDP frame.
    #[error("not an LLDP frame: {0}")]
    NotLldp(&'static str),
}

/// Decodes an Ethernet frame (header included, as a capture holds it): the
/// destination must be an LLDP group address and the Ethertype 0x88cc.
///
/// # Errors
/// See [`decode`]; [`LldpError::NotLldp`] for another kind of frame.
pub fn decode_frame(
    frame: &[u8],
    member: &str,
    since: SystemTime,
) -> Result<LldpNeighbor, LldpError> {
    let header = frame
        .get(..14)
        .ok_or(LldpError::NotLldp("shorter than an Ethernet header"))?;
    // Nearest bridge, nearest non-TPMR bridge, nearest customer bridge.
    if header[..5] != NEAREST_BRIDGE[..5] || ![0x0e, 0x03, 0x00].contains(&header[5]) {
        return Err(LldpError::NotLldp(
            "destination is not an LLDP group address",
        ));
    }
    if header[12..14] != ETHERTYPE.to_be_bytes() {
        return Err(LldpError::NotLldp("Ethertype is not 0x88cc"));
    }
    decode(&frame[14..], member, since)
}

/// Decodes one LLDPDU (the Ethernet payload) received on `member`.
///
/// # Errors
/// A truncated TLV, a length past the end or not allowed for its type, a
/// reserved ID subtype, or missing or misordered mandatory TLVs: the whole
/// LLDPDU is refused (§9.2.7.7.1), never partly believed.
pub fn decode(pdu: &[u8], member: &str, since: SystemTime) -> Result<LldpNeighbor, LldpError> {
    let mut n = LldpNeighbor {
        member: text(member.as_bytes()),
        chassis_id: String::new(),
        chassis_id_subtype: String::new(),
        port_id: String::new(),
        port_id_subtype: String::new(),
        ttl_s: 0,
        system_name: None,
        port_descr: None,
        mgmt_address: None,
        pvid: None,
        vlans: Vec::new(),
        vlans_cut: false,
        max_frame_size: None,
        aggregation: None,
        since,
    };
    let mut offset = 0;
    let mut index = 0;
    while offset < pdu.len() {
        let (tlv, value) = next_tlv(pdu, offset)?;
        match index {
            0 => mandatory(tlv, TLV_CHASSIS_ID, "a Chassis ID TLV", offset)?,
            1 => mandatory(tlv, TLV_PORT_ID, "a Port ID TLV", offset)?,
            2 => mandatory(tlv, TLV_TTL, "a TTL TLV", offset)?,
            _ if matches!(tlv, TLV_CHASSIS_ID | TLV_PORT_ID | TLV_TTL) => {
                return Err(LldpError::Mandatory {
                    expected: "no second Chassis ID, Port ID or TTL TLV",
                    offset,
                    found: tlv,
                })
            }
            _ => {}
        }
        if tlv == TLV_END {
            if !value.is_empty() {
                return Err(bad_length("End", offset, value.len(), "must be 0"));
            }
            break;
        }
        read_tlv(&mut n, tlv, value, offset)?;
        offset += 2 + value.len();
        index += 1;
    }
    if index < 3 {
        let expected = ["a Chassis ID TLV", "a Port ID TLV", "a TTL TLV"][index];
        return Err(LldpError::Mandatory {
            expected,
            offset,
            found: 0,
        });
    }
    Ok(n)
}

/// The TLV at `offset`: its type and value, length checked.
fn next_tlv(pdu: &[u8], offset: usize) -> Result<(u8, &[u8]), LldpError> {
    let header = pdu
        .get(offset..offset + 2)
        .ok_or(LldpError::TruncatedHeader { offset })?;
    let word = u16::from_be_bytes([header[0], header[1]]);
    let tlv = header[0] >> 1;
    let len = usize::from(word & 0x01ff);
    let left = pdu.len() - offset - 2;
    let value = pdu
        .get(offset + 2..offset + 2 + len)
        .ok_or(LldpError::PastEnd {
            tlv,
            offset,
            len,
            left,
        })?;
    Ok((tlv, value))
}

fn mandatory(tlv: u8, want: u8, expected: &'static str, offset: usize) -> Result<(), LldpError> {
    if tlv == want {
        Ok(())
    } else {
        Err(LldpError::Mandatory {
            expected,
            offset,
            found: tlv,
        })
    }
}

fn bad_length(what: &'static str, offset: usize, len: usize, expected: &'static str) -> LldpError {
    LldpError::BadLength {
        what,
        offset,
        len,
        expected,
    }
}

fn read_tlv(n: &mut LldpNeighbor, tlv: u8, v: &[u8], offset: usize) -> Result<(), LldpError> {
    match tlv {
        TLV_CHASSIS_ID | TLV_PORT_ID => {
            let what = if tlv == TLV_CHASSIS_ID {
                "Chassis ID"
            } else {
                "Port ID"
            };
            if !(2..=256).contains(&v.len()) {
                return Err(bad_length(what, offset, v.len(), "2 to 256 allowed"));
            }
            let (subtype, id) = (v[0], &v[1..]);
            let (name, shown) =
                id_text(tlv == TLV_CHASSIS_ID, subtype, id).ok_or(LldpError::ReservedSubtype {
                    what,
                    offset,
                    subtype,
                })?;
            if tlv == TLV_CHASSIS_ID {
                (n.chassis_id_subtype, n.chassis_id) = (name.into(), shown);
            } else {
                (n.port_id_subtype, n.port_id) = (name.into(), shown);
            }
        }
        TLV_TTL => {
            let [a, b, ..] = *v else {
                return Err(bad_length("TTL", offset, v.len(), "2 expected"));
            };
            n.ttl_s = u16::from_be_bytes([a, b]);
        }
        TLV_PORT_DESCR => n.port_descr = Some(text(v)).filter(|s| !s.is_empty()),
        TLV_SYSTEM_NAME => n.system_name = Some(text(v)).filter(|s| !s.is_empty()),
        TLV_MGMT_ADDR => {
            // Address string length (subtype byte included), the address,
            // interface numbering subtype and number, OID length.
            let len = usize::from(*v.first().unwrap_or(&0));
            if !(2..=32).contains(&len) || v.len() < 1 + len + 5 + 1 {
                return Err(bad_length(
                    "Management Address",
                    offset,
                    v.len(),
                    "too short for the address length it gives (2 to 32)",
                ));
            }
            if n.mgmt_address.is_none() {
                n.mgmt_address = Some(address_text(v[1], &v[2..=len]));
            }
        }
        TLV_ORG => org_tlv(n, v, offset)?,
        // System description, capabilities, reserved and unknown types:
        // nothing preflight judges; skipped by their length.
        _ => {}
    }
    Ok(())
}

fn org_tlv(n: &mut LldpNeighbor, v: &[u8], offset: usize) -> Result<(), LldpError> {
    let Some((head, info)) = v.split_at_checked(4) else {
        return Err(bad_length(
            "Organizationally Specific",
            offset,
            v.len(),
            "at least 4 expected",
        ));
    };
    let oui = [head[0], head[1], head[2]];
    match (oui, head[3]) {
        (OUI_DOT1, DOT1_PVID) => {
            let [a, b] = *info else {
                return Err(bad_length("Port VLAN ID", offset, v.len(), "6 expected"));
            };
            n.pvid = Some(u16::from_be_bytes([a, b]));
        }
        (OUI_DOT1, DOT1_VLAN_NAME) => {
            let [a, b, name_len, ref name @ ..] = *info else {
                return Err(bad_length(
                    "VLAN Name",
                    offset,
                    v.len(),
                    "at least 7 expected",
                ));
            };
            if usize::from(name_len) > 32 || name.len() != usize::from(name_len) {
                return Err(bad_length(
                    "VLAN Name",
                    offset,
                    v.len(),
                    "7 plus the name length it gives (at most 32)",
                ));
            }
            let id = u16::from_be_bytes([a, b]);
            // VID 0 and 4095 are reserved (802.1Q): not a VLAN a port carries.
            if (1..=4094).contains(&id) {
                if n.vlans.len() < MAX_VLANS {
                    n.vlans.push(LldpVlan {
                        id,
                        name: text(name),
                    });
                } else {
                    n.vlans_cut = true;
                }
            }
        }
        (OUI_DOT1, DOT1_LINK_AGG) | (OUI_DOT3, DOT3_LINK_AGG) => {
            let [status, a, b, c, d] = *info else {
                return Err(bad_length(
                    "Link Aggregation",
                    offset,
                    v.len(),
                    "9 expected",
                ));
            };
            n.aggregation = Some(LldpAggregation {
                capable: status & 1 != 0,
                enabled: status & 2 != 0,
                port_id: u32::from_be_bytes([a, b, c, d]),
            });
        }
        (OUI_DOT3, DOT3_MAX_FRAME) => {
            let [a, b] = *info else {
                return Err(bad_length(
                    "Maximum Frame Size",
                    offset,
                    v.len(),
                    "6 expected",
                ));
            };
            n.max_frame_size = Some(u16::from_be_bytes([a, b]));
        }
        _ => {}
    }
    Ok(())
}

/// A chassis or port ID's subtype name and the ID shown as text; `None`
/// for a reserved subtype.
fn id_text(chassis: bool, subtype: u8, id: &[u8]) -> Option<(&'static str, String)> {
    // The two TLVs number their subtypes differently (Tables 8-2 and 8-3).
    let name = match (chassis, subtype) {
        (true, 1) => "chassis-component",
        (true, 2) | (false, 1) => "ifalias",
        (true, 3) | (false, 2) => "port-component",
        (true, 4) | (false, 3) => "mac",
        (true, 5) | (false, 4) => "address",
        (true, 6) | (false, 5) => "ifname",
        (false, 6) => "agent-circuit-id",
        (_, 7) => "local",
        _ => return None,
    };
    let shown = match name {
        "mac" => mac_text(id),
        "address" => match id.split_first() {
            Some((family, addr)) => address_text(*family, addr),
            None => String::new(),
        },
        _ => text(id),
    };
    Some((name, shown))
}

/// `aa:bb:cc:dd:ee:ff`; any other length as colon-separated hex too.
fn mac_text(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, byte) in b.iter().take(MAX_TEXT_BYTES / 3).enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// An address of IANA family `family` (1 IPv4, 2 IPv6, 6 802 MAC) as text;
/// anything else as `family N: hex`.
fn address_text(family: u8, a: &[u8]) -> String {
    match (family, a.len()) {
        (1, 4) => Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string(),
        (2, 16) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(a);
            Ipv6Addr::from(b).to_string()
        }
        (6, 6) => mac_text(a),
        _ => format!("family {family}: {}", mac_text(a)),
    }
}

/// Text from the wire, safe to show anywhere: printable characters of valid
/// UTF-8 as they are, control and format characters as `\u{..}`, bytes that
/// are not UTF-8 as `\xNN`, a backslash doubled; cut to [`MAX_TEXT_BYTES`]
/// on a character boundary.
#[must_use]
pub fn text(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            let piece = if c == '\\' {
                "\\\\".to_string()
            } else if c.is_control() || is_format(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            };
            if out.len() + piece.len() > MAX_TEXT_BYTES {
                return out;
            }
            out.push_str(&piece);
        }
        for byte in chunk.invalid() {
            if out.len() + 4 > MAX_TEXT_BYTES {
                return out;
            }
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Characters that change how text around them shows (bidirectional
/// overrides, zero-width ones, separators, tags): a switch name must not
/// reorder a terminal line. The one list the CLI escapes too.
fn is_format(c: char) -> bool {
    preflight_model::excerpt::invisible(c)
}

#[cfg(test)]
mod tests;
