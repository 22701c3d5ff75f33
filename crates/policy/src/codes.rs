//! Finding codes. A code never changes meaning once released; severities are
//! configurable, codes are not.

use preflight_model::Severity;

macro_rules! codes {
    ($($variant:ident = $name:literal, $sev:ident, $doc:literal;)*) => {
        /// Every finding code preflight can emit.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $(#[doc = $doc] $variant,)*
        }

        /// All codes, in documentation order.
        pub const ALL: &[Code] = &[$(Code::$variant,)*];

        impl Code {
            /// The stable string (`BOND_PORT_DOWN`).
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// Parses the stable string.
            #[must_use]
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($name => Some(Self::$variant),)* _ => None }
            }

            /// Severity when not configured.
            #[must_use]
            pub fn default_severity(self) -> Severity {
                match self { $(Self::$variant => Severity::$sev,)* }
            }

            /// One-line meaning, for docs and `--help`.
            #[must_use]
            pub fn meaning(self) -> &'static str {
                match self { $(Self::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    BondPortDown = "BOND_PORT_DOWN", Critical, "a bond port's MII status is not up";
    BondDegraded = "BOND_DEGRADED", Critical, "fewer ports up than enslaved, or fewer ports than the minimum (2)";
    BondDown = "BOND_DOWN", Critical, "the bond has no carrier or is not operationally up";
    BondNoActivePort = "BOND_NO_ACTIVE_PORT", Critical, "an active-backup bond has no active port";
    LacpNotNegotiated = "LACP_NOT_NEGOTIATED", Critical, "an 802.3ad port has no LACP partner, defaulted partner data, or is not collecting and distributing";
    LacpAggregatorSplit = "LACP_AGGREGATOR_SPLIT", Critical, "an 802.3ad port is in another aggregator than the bond's active one";
    BondNoLinkMonitor = "BOND_NO_LINK_MONITOR", Critical, "miimon and arp_interval are both 0: a port failure would go unseen";
    LinkFlapping = "LINK_FLAPPING", Warning, "carrier changes above the threshold within the window";
    PortSpeedMismatch = "PORT_SPEED_MISMATCH", Warning, "ports of one bond run at different speed or duplex";
    LinkNoCarrier = "LINK_NO_CARRIER", Warning, "an admin-up interface outside any bond has no carrier";
    StateUnreadable = "STATE_UNREADABLE", Critical, "part of the kernel's report on an interface could not be parsed, so preflight cannot vouch for it";
    ExpectedInterfaceMissing = "EXPECTED_INTERFACE_MISSING", Critical, "an interface of the expected configuration does not exist";
    BondMemberMissing = "BOND_MEMBER_MISSING", Critical, "a configured bond member (Linux or OVS bond) is absent or has no carrier";
    ExpectedAddressMissing = "EXPECTED_ADDRESS_MISSING", Critical, "a configured static address is not on its interface";
    UnexpectedDhcp = "UNEXPECTED_DHCP", Critical, "a dynamic (DHCP) address or route where the configuration is static: the configurator fell back to DHCP";
    DefaultRouteMissing = "DEFAULT_ROUTE_MISSING", Critical, "the configured default route is missing";
    MtuMismatch = "MTU_MISMATCH", Critical, "an interface's MTU differs from the configured one";
    BondModeMismatch = "BOND_MODE_MISMATCH", Critical, "a bond's running mode or miimon differs from its bonding_options";
    ReachabilityFailed = "REACHABILITY_FAILED", Critical, "a reachability probe (ICMP or TCP, bound to an interface) failed several times in a row";
    ExpectationsInvalid = "EXPECTATIONS_INVALID", Critical, "the expected-state file cannot be read; the last good expectations stay in force";
    OvsStateUnreadable = "OVS_STATE_UNREADABLE", Critical, "Open vSwitch bonds are expected (configuration or kernel) but OVSDB cannot be read, so their health is unknown";
    NicRenumbered = "NIC_RENUMBERED", Critical, "os-net-config's next run would map a nicN name to another NIC than the one it is on now";
    ExpectationUnchecked = "EXPECTATION_UNCHECKED", Warning, "an entry of the expected configuration is of a type preflight cannot check; it is listed, not silently skipped";
}

impl Code {
    /// Codes that mean "preflight cannot tell"; they stay critical whatever
    /// the configuration says, because an unknown state must never be a go.
    #[must_use]
    pub fn fail_closed(self) -> bool {
        matches!(
            self,
            Self::StateUnreadable | Self::ExpectationsInvalid | Self::OvsStateUnreadable
        )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
