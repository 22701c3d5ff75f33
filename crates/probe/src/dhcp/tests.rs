//! The DHCP probe's parser and receive loop, on built messages and real
//! loopback sockets.

use super::*;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x42];
const XID: u32 = 0x1234_5678;
/// What [`offer`] offers.
const VALID: Answer = Answer::Offer {
    server: Ipv4Addr::new(10, 0, 0, 1),
    address: Ipv4Addr::new(10, 0, 0, 50),
};

/// A server's OFFER of 10.0.0.50 from 10.0.0.1 for `xid`.
fn offer(xid: u32) -> Vec<u8> {
    let mut p = vec![0u8; HEADER];
    p[0] = 2;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[16..20].copy_from_slice(&[10, 0, 0, 50]);
    p[28..34].copy_from_slice(&MAC);
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, OFFER]);
    p.extend_from_slice(&[OPT_PAD, OPT_PAD]);
    p.extend_from_slice(&[OPT_SERVER_ID, 4, 10, 0, 0, 1]);
    p.extend_from_slice(&[51, 4, 0, 0, 0x0e, 0x10]);
    p.push(OPT_END);
    p
}

/// An OFFER as large as a server sends on a jumbo link (3.3 KB): the
/// usual options, then twelve 255-byte site-specific ones (224-235,
/// RFC 2132 §2), as a vendor's provisioning data would fill it.
fn jumbo_offer(xid: u32) -> Vec<u8> {
    let mut p = offer(xid);
    assert_eq!(p.pop(), Some(OPT_END));
    for code in 224..236u8 {
        p.extend_from_slice(&[code, 255]);
        p.extend(std::iter::repeat_n(code, 255));
    }
    p.push(OPT_END);
    assert!((3300..3400).contains(&p.len()), "{} bytes", p.len());
    p
}

/// `payload` as an IPv4/UDP packet from the server port to the client
/// port: what the packet socket receives.
fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(28 + payload.len()).expect("fits");
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&[10, 0, 0, 1, 255, 255, 255, 255]);
    ip.extend_from_slice(&[0, 67, 0, 68]);
    ip.extend_from_slice(&(total - 20).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ip
}

/// An OFFER of 0.0.0.0, and one without a server identifier.
fn invalid_offers() -> [Vec<u8>; 2] {
    let mut zero = offer(XID);
    zero[16..20].copy_from_slice(&[0; 4]);
    let mut no_id = offer(XID);
    let at = no_id.len() - 13;
    no_id[at..at + 6].copy_from_slice(&[OPT_PAD; 6]);
    [zero, no_id]
}

/// Loopback UDP sockets standing in for the probe's two: `udp` gets the
/// DHCP message, `raw` (a packet socket in the probe) the IPv4 packet.
async fn sockets() -> (
    tokio::net::UdpSocket,
    tokio::net::UdpSocket,
    std::net::UdpSocket,
) {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind udp");
    let raw = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind raw");
    let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind server");
    (udp, raw, server)
}

#[test]
fn a_jumbo_offer_is_decoded() {
    assert_eq!(
        parse_offer(&jumbo_offer(XID), XID, MAC),
        Some(VALID),
        "whole"
    );
    // Cut where the old 1,600-byte buffer cut it: inside an option.
    assert_eq!(parse_offer(&jumbo_offer(XID)[..1600], XID, MAC), None);
}

#[tokio::test]
async fn a_jumbo_offer_arrives_whole_through_either_socket() {
    let (udp, raw, server) = sockets().await;
    let wait = Duration::from_secs(2);
    let big = jumbo_offer(XID);
    server
        .send_to(&big, udp.local_addr().expect("addr"))
        .expect("send");
    let mut invalid = None;
    let got = tokio::time::timeout(
        wait,
        receive(&udp, None, (XID, MAC), Instant::now(), "t0", &mut invalid),
    )
    .await;
    assert!(
        matches!(&got, Ok(Ok(o)) if o.address == Ipv4Addr::new(10, 0, 0, 50)),
        "through the UDP socket: {got:?}"
    );
    server
        .send_to(&ipv4_udp(&big), raw.local_addr().expect("addr"))
        .expect("send");
    let got = tokio::time::timeout(
        wait,
        receive(
            &udp,
            Some(&raw),
            (XID, MAC),
            Instant::now(),
            "t0",
            &mut invalid,
        ),
    )
    .await;
    assert!(
        matches!(&got, Ok(Ok(o)) if o.address == Ipv4Addr::new(10, 0, 0, 50)),
        "through the packet socket: {got:?}"
    );
}

#[test]
fn an_offer_of_no_address_or_from_no_server_is_not_an_offer() {
    let [zero, no_id] = invalid_offers();
    assert_eq!(
        parse_offer(&zero, XID, MAC),
        Some(Answer::Invalid(
            "an OFFER of 0.0.0.0 from 10.0.0.1, not an address a client can take".into()
        )),
        "yiaddr 0.0.0.0"
    );
    assert_eq!(
        parse_offer(&no_id, XID, MAC),
        Some(Answer::Invalid(
            "an OFFER of 10.0.0.50 without a server identifier (option 54)".into()
        )),
        "no option 54"
    );
    for (at, bad) in [
        (16, [255, 255, 255, 255]),
        (16, [224, 0, 0, 1]),
        (16, [127, 0, 0, 1]),
        (247, [0, 0, 0, 0]),
        (247, [255, 255, 255, 255]),
    ] {
        let mut p = offer(XID);
        p[at..at + 4].copy_from_slice(&bad);
        assert!(
            matches!(parse_offer(&p, XID, MAC), Some(Answer::Invalid(_))),
            "{bad:?} at {at}"
        );
    }
}

#[tokio::test]
async fn an_invalid_offer_does_not_end_the_wait() {
    let (udp, _raw, server) = sockets().await;
    let to = udp.local_addr().expect("addr");
    for bad in invalid_offers() {
        server.send_to(&bad, to).expect("send");
    }
    server.send_to(&offer(XID), to).expect("send");
    let mut invalid = None;
    let got = tokio::time::timeout(
        Duration::from_secs(2),
        receive(&udp, None, (XID, MAC), Instant::now(), "t0", &mut invalid),
    )
    .await;
    assert!(
        matches!(&got, Ok(Ok(o)) if o.address == Ipv4Addr::new(10, 0, 0, 50)
            && o.server == Ipv4Addr::new(10, 0, 0, 1)),
        "the valid offer after the invalid ones: {got:?}"
    );
    assert!(
        invalid.as_deref().is_some_and(|w| w.contains("0.0.0.0")),
        "the first invalid one is noted: {invalid:?}"
    );

    // Only invalid ones: the wait runs out, no offer, the reason kept.
    let (udp, _raw, server) = sockets().await;
    let to = udp.local_addr().expect("addr");
    for bad in invalid_offers().iter().rev() {
        server.send_to(bad, to).expect("send");
    }
    let mut invalid = None;
    let got = tokio::time::timeout(
        Duration::from_millis(300),
        receive(&udp, None, (XID, MAC), Instant::now(), "t0", &mut invalid),
    )
    .await;
    assert!(got.is_err(), "no valid offer: {got:?}");
    assert_eq!(
        invalid.as_deref(),
        Some("an OFFER of 10.0.0.50 without a server identifier (option 54)")
    );
}

#[test]
fn a_discover_is_what_rfc_2131_says() {
    let p = discover(XID, MAC);
    assert_eq!(p.len(), MIN_MESSAGE, "padded to the BOOTP minimum");
    assert_eq!(&p[..4], &[1, 1, 6, 0], "op, htype, hlen, hops");
    assert_eq!(&p[4..8], &[0x12, 0x34, 0x56, 0x78], "xid");
    assert_eq!(&p[8..12], &[0, 0, 0x80, 0], "secs 0, BROADCAST flag");
    assert!(p[12..28].iter().all(|b| *b == 0), "ciaddr..giaddr zero");
    assert_eq!(&p[28..34], &MAC);
    assert!(
        p[34..236].iter().all(|b| *b == 0),
        "chaddr pad, sname, file"
    );
    assert_eq!(
        &p[236..261],
        &[
            99, 130, 83, 99, // cookie
            53, 1, 1, // DHCPDISCOVER
            61, 7, 1, 2, 0, 0, 0, 0, 0x42, // client id: Ethernet + MAC
            55, 6, 1, 3, 6, 15, 51, 54, // parameter request list
            255
        ]
    );
    assert!(p[261..].iter().all(|b| *b == 0));
    assert_eq!(parse_offer(&p, XID, MAC), None, "our DISCOVER is no OFFER");
}

#[test]
fn an_offer_for_us_is_decoded() {
    assert_eq!(parse_offer(&offer(XID), XID, MAC), Some(VALID));
}

#[test]
fn other_messages_are_ignored() {
    assert_eq!(parse_offer(&offer(XID + 1), XID, MAC), None, "other xid");
    let mut p = offer(XID);
    p[0] = 1;
    assert_eq!(parse_offer(&p, XID, MAC), None, "op is a request");
    let mut p = offer(XID);
    p[28] = 4;
    assert_eq!(parse_offer(&p, XID, MAC), None, "other client");
    let mut p = offer(XID);
    p[242] = 5; // DHCPACK
    assert_eq!(parse_offer(&p, XID, MAC), None, "an ACK is no OFFER");
    let mut p = offer(XID);
    p[236] = 0;
    assert_eq!(parse_offer(&p, XID, MAC), None, "plain BOOTP: no cookie");
}

#[test]
fn ipv4_udp_to_port_68_is_unwrapped() {
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&[10, 0, 0, 1, 255, 255, 255, 255]);
    ip.extend_from_slice(&[0, 67, 0, 68, 0, 0, 0, 0]);
    ip.extend_from_slice(b"dhcp");
    assert_eq!(udp_to_client(&ip), Some(&b"dhcp"[..]));
    let mut other = ip.clone();
    other[23] = 67;
    assert_eq!(udp_to_client(&other), None, "to the server port");
    let mut tcp = ip.clone();
    tcp[9] = 6;
    assert_eq!(udp_to_client(&tcp), None, "not UDP");
    let mut first = ip.clone();
    first[6] = 0x20; // more fragments
    assert_eq!(udp_to_client(&first), None, "a first fragment");
    let mut later = ip.clone();
    later[7] = 0xb9; // offset 185 * 8
    assert_eq!(udp_to_client(&later), None, "a later fragment");
    let mut df = ip.clone();
    df[6] = 0x40; // don't fragment: whole
    assert_eq!(udp_to_client(&df), Some(&b"dhcp"[..]));
    for n in 0..28 {
        let _ = udp_to_client(&ip[..n]);
    }
    assert_eq!(udp_to_client(&ip[..22]), None, "truncated");
    assert_eq!(
        udp_to_client(&[0x4f; 30]),
        None,
        "header longer than the packet"
    );
}

#[test]
fn truncated_messages_are_rejected_without_panic() {
    let p = offer(XID);
    let full = Some(VALID);
    let no_id = Some(Answer::Invalid(
        "an OFFER of 10.0.0.50 without a server identifier (option 54)".into(),
    ));
    for n in 0..p.len() {
        let want = match n {
            // Inside the header, the cookie, or an option: rejected.
            0..=242 | 246..=250 | 252..=256 => None,
            // After the type and the pads: no server id yet, no offer.
            243..=245 => no_id.clone(),
            // After a complete option, only the END is missing.
            _ => full.clone(),
        };
        assert_eq!(parse_offer(&p[..n], XID, MAC), want, "cut at {n}");
    }
    // An option whose length runs past the end.
    let mut p = offer(XID);
    p.truncate(HEADER + 4);
    p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, OFFER, OPT_SERVER_ID, 200, 10]);
    assert_eq!(parse_offer(&p, XID, MAC), None);
    // A lone code byte at the end.
    let mut p = offer(XID);
    p.truncate(p.len() - 1);
    p.push(OPT_SERVER_ID);
    assert_eq!(parse_offer(&p, XID, MAC), None);
}
