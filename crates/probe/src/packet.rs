//! The workspace's one audited `unsafe` module. A packet socket needs a
//! `sockaddr_ll` to be bound to one interface and to address a frame, and
//! three socket options (`PACKET_AUXDATA`, `PACKET_ADD_MEMBERSHIP`,
//! `PACKET_IGNORE_OUTGOING`) that neither socket2 nor nix offers safely;
//! this module is those and nothing else. Audit: the storage is zeroed, is
//! large enough (socket2's `view_as` asserts it), only plain integer fields
//! are written, and the length given to `SockAddr::new` is exactly that of
//! the `sockaddr_ll` the family names;
//! each `setsockopt` is given a pointer to a live, fully initialised value
//! and exactly its size, on a descriptor the borrowed `Socket` keeps open.

#![allow(unsafe_code)]

use socket2::{SockAddr, SockAddrStorage};

/// `sockaddr_ll` for interface `ifindex`, Ethernet protocol `protocol` (host
/// order) and link-layer destination `dest`.
pub(crate) fn link_addr(ifindex: i32, protocol: u16, dest: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_ll` is one of this platform's `sockaddr_*` types and
    // `view_as` asserts that it fits in the zeroed storage.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = u16::try_from(libc::AF_PACKET).expect("AF_PACKET fits sa_family_t");
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&dest);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
        .expect("sockaddr_ll length fits socklen_t");
    // SAFETY: the family is AF_PACKET and the storage holds an initialised
    // `sockaddr_ll` of exactly `len` bytes.
    unsafe { SockAddr::new(storage, len) }
}

/// Asks the kernel for a `tpacket_auxdata` control message with every frame
/// received on `sock`: where it reports the 802.1Q tag that it took out of
/// the frame.
pub(crate) fn enable_auxdata(sock: &socket2::Socket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    set(sock, libc::PACKET_AUXDATA, &on)
}

/// `PACKET_ADD_MEMBERSHIP` of kind `mr_type` (`PACKET_MR_UNICAST`,
/// `PACKET_MR_MULTICAST`) for `addr` on interface `ifindex`: the interface
/// accepts frames to `addr` for as long as `sock` is open (the kernel drops
/// the membership when it closes).
pub(crate) fn add_membership(
    sock: &socket2::Socket,
    ifindex: i32,
    mr_type: libc::c_int,
    addr: [u8; 6],
) -> std::io::Result<()> {
    let mut mreq = libc::packet_mreq {
        mr_ifindex: ifindex,
        mr_type: u16::try_from(mr_type).map_err(|_| std::io::ErrorKind::InvalidInput)?,
        mr_alen: 6,
        mr_address: [0; 8],
    };
    mreq.mr_address[..6].copy_from_slice(&addr);
    set(sock, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

/// PACKET_IGNORE_OUTGOING (Linux 4.20): frames this node sends out of the
/// interface are not delivered to the socket, so lldpd's own LLDPDUs on the
/// same member are never taken for the switch's.
pub(crate) fn ignore_outgoing(sock: &socket2::Socket) -> std::io::Result<()> {
    set(sock, libc::PACKET_IGNORE_OUTGOING, &libc::c_int::from(1u8))
}

fn set<T>(sock: &socket2::Socket, option: libc::c_int, value: &T) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("option size fits");
    // SAFETY: `value` is a live `T`, the type `option` of SOL_PACKET reads
    // (callers pass `packet_mreq` or `c_int`), and `len` is its exact size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_address_says_what_was_asked() {
        let a = super::link_addr(7, 0x0806, [0xff; 6]);
        assert_eq!(i32::from(a.family()), libc::AF_PACKET);
        assert_eq!(
            a.len() as usize,
            std::mem::size_of::<libc::sockaddr_ll>(),
            "length of a sockaddr_ll"
        );
    }
}
