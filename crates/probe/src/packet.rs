//! The workspace's one audited `unsafe` module. A packet socket needs a
//! `sockaddr_ll` to be bound to one interface and to address a frame, and
//! neither socket2 nor nix offers a safe constructor for it; this module is
//! that constructor and nothing else. Audit: the storage is zeroed, is large
//! enough (socket2's `view_as` asserts it), only plain integer fields are
//! written, and the length given to `SockAddr::new` is exactly that of the
//! `sockaddr_ll` the family names.

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
