//! Flow semantics: which end is the client, the flow-type tags of a flow, the
//! application of a port, and the traffic type.
//!
//! Client/server rule (docs/query-language.md), in order:
//! 0. A record to a multicast or broadcast address was sent by the client (a group
//!    address never initiates).
//! 1. TCP: a record whose flags have SYN without ACK was sent by the initiator.
//! 2. biflowDirection (IE 239): 1 = the record's source initiated, 2 = its destination.
//! 3. ICMP: echo/timestamp/information replies travel from the server.
//! 4. A known service port or a port below 1024, against an ephemeral one (>= 1024 and
//!    not a known service), is the server's port.
//! 5. Otherwise the lower port is the server's (equal ports: the lower address).
//!
//! The decision is taken once per session (5-tuple) and kept for its later records, see
//! [`super::fold`].

use std::net::IpAddr;

use super::{Endpoint, flag};

/// Flow-type tags (a flow has a set of them).
pub mod tag {
    pub const EAST_WEST: u32 = 1 << 0;
    pub const INTERNET: u32 = 1 << 1;
    pub const SRC_INTERNET: u32 = 1 << 2;
    pub const DST_INTERNET: u32 = 1 << 3;
    pub const SRC_VM: u32 = 1 << 4;
    pub const DST_VM: u32 = 1 << 5;
    pub const SRC_PHYSICAL: u32 = 1 << 6;
    pub const DST_PHYSICAL: u32 = 1 << 7;
    pub const VM_VM: u32 = 1 << 8;
    pub const VM_PHYSICAL: u32 = 1 << 9;
    pub const PHYSICAL_PHYSICAL: u32 = 1 << 10;
    pub const SAME_HOST: u32 = 1 << 11;
    pub const DIFF_HOST: u32 = 1 << 12;
    pub const SWITCHED: u32 = 1 << 13;
    pub const ROUTED: u32 = 1 << 14;
    pub const UNICAST: u32 = 1 << 15;
    pub const MULTICAST: u32 = 1 << 16;
    pub const BROADCAST: u32 = 1 << 17;
}

/// (bit, canonical name, other accepted names)
pub const TAGS: &[(u32, &str, &[&str])] = &[
    (tag::EAST_WEST, "East-West", &["eastwest", "east west"]),
    (
        tag::INTERNET,
        "Internet",
        &["North-South", "northsouth", "north south"],
    ),
    (tag::SRC_INTERNET, "Source is Internet", &[]),
    (tag::DST_INTERNET, "Destination is Internet", &[]),
    (tag::SRC_VM, "Source is VM", &[]),
    (tag::DST_VM, "Destination is VM", &[]),
    (tag::SRC_PHYSICAL, "Source is Physical", &[]),
    (tag::DST_PHYSICAL, "Destination is Physical", &[]),
    (tag::VM_VM, "VM-VM", &["vm to vm"]),
    (
        tag::VM_PHYSICAL,
        "VM-Physical",
        &["vm to physical", "physical-vm"],
    ),
    (
        tag::PHYSICAL_PHYSICAL,
        "Physical-Physical",
        &["physical to physical"],
    ),
    (tag::SAME_HOST, "Same Host", &["samehost"]),
    (tag::DIFF_HOST, "Diff Host", &["different host", "diffhost"]),
    (tag::SWITCHED, "Switched", &[]),
    (tag::ROUTED, "Routed", &[]),
    (tag::UNICAST, "Unicast", &[]),
    (tag::MULTICAST, "Multicast", &[]),
    (tag::BROADCAST, "Broadcast", &[]),
];

/// Tag bit of a name, case-insensitively, accepting aliases.
pub fn tag_by_name(name: &str) -> Option<u32> {
    let n = name.trim();
    TAGS.iter()
        .find(|(_, c, aliases)| {
            c.eq_ignore_ascii_case(n) || aliases.iter().any(|a| a.eq_ignore_ascii_case(n))
        })
        .map(|t| t.0)
}

/// Canonical names of the tags in `bits`, in table order.
pub fn tag_names(bits: u32) -> Vec<&'static str> {
    TAGS.iter()
        .filter(|t| bits & t.0 != 0)
        .map(|t| t.1)
        .collect()
}

fn is_physical(e: &Endpoint) -> bool {
    e.is(flag::INTERNAL) && !e.is(flag::VM) && !e.is(flag::MULTICAST) && !e.is(flag::BROADCAST)
}

/// The flow-type tags of a flow from its client (`src`) to its server (`dst`).
pub fn tags(src: &Endpoint, dst: &Endpoint) -> u32 {
    let mut t = 0;
    let (si, di) = (src.is(flag::INTERNAL), dst.is(flag::INTERNAL));
    if si && di {
        t |= tag::EAST_WEST;
    }
    if src.is(flag::INTERNET) {
        t |= tag::SRC_INTERNET | tag::INTERNET;
    }
    if dst.is(flag::INTERNET) {
        t |= tag::DST_INTERNET | tag::INTERNET;
    }
    let (svm, dvm) = (src.is(flag::VM), dst.is(flag::VM));
    let (sph, dph) = (is_physical(src), is_physical(dst));
    if svm {
        t |= tag::SRC_VM;
    }
    if dvm {
        t |= tag::DST_VM;
    }
    if sph {
        t |= tag::SRC_PHYSICAL;
    }
    if dph {
        t |= tag::DST_PHYSICAL;
    }
    if svm && dvm {
        t |= tag::VM_VM;
        if src.host.is_some() && dst.host.is_some() {
            t |= if src.host == dst.host {
                tag::SAME_HOST
            } else {
                tag::DIFF_HOST
            };
        }
    } else if (svm && dph) || (sph && dvm) {
        t |= tag::VM_PHYSICAL;
    } else if sph && dph {
        t |= tag::PHYSICAL_PHYSICAL;
    }
    if si && di {
        let same = if src.l2.is_some() && dst.l2.is_some() {
            src.l2 == dst.l2
        } else {
            src.subnet_len == dst.subnet_len && src.subnet() == dst.subnet()
        };
        t |= if same { tag::SWITCHED } else { tag::ROUTED };
    }
    t |= if dst.is(flag::MULTICAST) {
        tag::MULTICAST
    } else if dst.is(flag::BROADCAST) {
        tag::BROADCAST
    } else {
        tag::UNICAST
    };
    t
}

/// "Traffic Type": East-West, Internet, or Other.
pub fn traffic_type(tags: u32) -> &'static str {
    if tags & tag::INTERNET != 0 {
        "Internet"
    } else if tags & tag::EAST_WEST != 0 {
        "East-West"
    } else {
        "Other"
    }
}

/// Well-known service ports at or above 1024 (below 1024 every port counts as one).
const SERVICES: &[(u16, &str)] = &[
    (1080, "SOCKS"),
    (1194, "OpenVPN"),
    (1433, "MS SQL"),
    (1434, "MS SQL Monitor"),
    (1521, "Oracle"),
    (1645, "RADIUS"),
    (1646, "RADIUS Accounting"),
    (1701, "L2TP"),
    (1723, "PPTP"),
    (1812, "RADIUS"),
    (1813, "RADIUS Accounting"),
    (1883, "MQTT"),
    (2049, "NFS"),
    (2181, "ZooKeeper"),
    (2379, "etcd"),
    (2380, "etcd peer"),
    (3128, "HTTP Proxy"),
    (3260, "iSCSI"),
    (3268, "LDAP GC"),
    (3306, "MySQL"),
    (3389, "RDP"),
    (4500, "IPsec NAT-T"),
    (4789, "VXLAN"),
    (5060, "SIP"),
    (5061, "SIP TLS"),
    (5353, "mDNS"),
    (5355, "LLMNR"),
    (5432, "PostgreSQL"),
    (5480, "VAMI"),
    (5601, "Kibana"),
    (5671, "AMQPS"),
    (5672, "AMQP"),
    (5900, "VNC"),
    (5985, "WinRM"),
    (5986, "WinRM HTTPS"),
    (6081, "Geneve"),
    (6379, "Redis"),
    (6443, "Kubernetes API"),
    (8000, "HTTP Alt"),
    (8080, "HTTP Alt"),
    (8081, "HTTP Alt"),
    (8088, "HTTP Alt"),
    (8443, "HTTPS Alt"),
    (8888, "HTTP Alt"),
    (9000, "HTTP Alt"),
    (9042, "Cassandra"),
    (9090, "Prometheus"),
    (9092, "Kafka"),
    (9093, "Alertmanager"),
    (9100, "Node Exporter"),
    (9200, "Elasticsearch"),
    (9300, "Elasticsearch Transport"),
    (9443, "HTTPS Alt"),
    (10250, "Kubelet"),
    (11211, "Memcached"),
    (27017, "MongoDB"),
];

/// Names of ports below 1024 that operators ask for by name.
const LOW: &[(u16, &str)] = &[
    (20, "FTP Data"),
    (21, "FTP"),
    (22, "SSH"),
    (23, "Telnet"),
    (25, "SMTP"),
    (53, "DNS"),
    (67, "DHCP"),
    (68, "DHCP"),
    (69, "TFTP"),
    (80, "HTTP"),
    (88, "Kerberos"),
    (110, "POP3"),
    (123, "NTP"),
    (135, "MS RPC"),
    (137, "NetBIOS Name"),
    (138, "NetBIOS Datagram"),
    (139, "NetBIOS Session"),
    (143, "IMAP"),
    (161, "SNMP"),
    (162, "SNMP Trap"),
    (179, "BGP"),
    (389, "LDAP"),
    (443, "HTTPS"),
    (445, "SMB"),
    (465, "SMTPS"),
    (500, "IKE"),
    (514, "Syslog"),
    (515, "LPD"),
    (587, "SMTP Submission"),
    (636, "LDAPS"),
    (873, "rsync"),
    (902, "VMware Auth"),
    (993, "IMAPS"),
    (995, "POP3S"),
];

/// Whether a port is a known service port.
pub fn is_service_port(port: u16) -> bool {
    (1..1024).contains(&port) || SERVICES.binary_search_by_key(&port, |s| s.0).is_ok()
}

/// Application name of a server port (protocol-independent table).
pub fn application(port: u16) -> Option<&'static str> {
    LOW.iter()
        .chain(SERVICES)
        .find(|(p, _)| *p == port)
        .map(|s| s.1)
}

/// Who initiated a record's conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The record's source is the client.
    Src,
    /// The record's destination is the client.
    Dst,
}

/// How sure the decision is (a later record with a stronger reason may not override a
/// session's decision; see fold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    GroupDestination,
    LowerPort,
    ServicePort,
    Icmp,
    Biflow,
    Syn,
}

const SYN: u16 = 0x02;
const ACK: u16 = 0x10;

/// Decides the client of a record (see the module documentation for the rule).
#[allow(clippy::too_many_arguments)] // the record fields the rule reads, as plain values
pub fn decide(
    proto: u8,
    src: IpAddr,
    src_port: u16,
    dst: IpAddr,
    dst_port: u16,
    tcp_flags: u16,
    biflow_direction: u8,
    dst_is_group: bool,
) -> (Initiator, Reason) {
    if dst_is_group {
        return (Initiator::Src, Reason::GroupDestination);
    }
    if proto == 6 && tcp_flags & SYN != 0 && tcp_flags & ACK == 0 {
        return (Initiator::Src, Reason::Syn);
    }
    match biflow_direction {
        1 => return (Initiator::Src, Reason::Biflow),
        2 => return (Initiator::Dst, Reason::Biflow),
        _ => {}
    }
    if proto == 1 || proto == 58 {
        // ICMP type travels in the high byte of the destination port.
        let icmp_type = (dst_port >> 8) as u8;
        let reply = if proto == 1 {
            matches!(icmp_type, 0 | 14 | 16 | 18)
        } else {
            matches!(icmp_type, 129 | 131 | 136)
        };
        return (
            if reply {
                Initiator::Dst
            } else {
                Initiator::Src
            },
            Reason::Icmp,
        );
    }
    let ss = is_service_port(src_port);
    let ds = is_service_port(dst_port);
    if ds && !ss {
        return (Initiator::Src, Reason::ServicePort);
    }
    if ss && !ds {
        return (Initiator::Dst, Reason::ServicePort);
    }
    if dst_port < src_port || (dst_port == src_port && dst <= src) {
        (Initiator::Src, Reason::LowerPort)
    } else {
        (Initiator::Dst, Reason::LowerPort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::{Tables, geoip::GeoTable, inventory::Inventory};

    #[test]
    fn client_server_decisions() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // (proto, sport, dport, flags, biflow) -> initiator, reason
        let cases = [
            (6, 51514, 443, 0x02, 255, Initiator::Src, Reason::Syn), // SYN only: the sender
            (6, 443, 51514, 0x02, 255, Initiator::Src, Reason::Syn), // SYN beats ports
            (
                6,
                443,
                51514,
                0x12,
                255,
                Initiator::Dst,
                Reason::ServicePort,
            ), // SYN-ACK: ports decide
            (
                6,
                51514,
                443,
                0x1b,
                255,
                Initiator::Src,
                Reason::ServicePort,
            ), // established, to 443
            (
                6,
                443,
                51514,
                0x1b,
                255,
                Initiator::Dst,
                Reason::ServicePort,
            ), // the reply
            (
                6,
                40000,
                3389,
                0x18,
                255,
                Initiator::Src,
                Reason::ServicePort,
            ), // known service >= 1024
            (
                6,
                3389,
                40000,
                0x18,
                255,
                Initiator::Dst,
                Reason::ServicePort,
            ),
            (6, 40000, 50000, 0x18, 1, Initiator::Src, Reason::Biflow),
            (6, 40000, 50000, 0x18, 2, Initiator::Dst, Reason::Biflow),
            (17, 53, 53, 0, 255, Initiator::Src, Reason::LowerPort), // equal ports: lower address is server
            (17, 40000, 50000, 0, 255, Initiator::Dst, Reason::LowerPort), // both ephemeral: lower port serves
            (17, 50000, 40000, 0, 255, Initiator::Src, Reason::LowerPort),
            (17, 123, 80, 0, 255, Initiator::Src, Reason::LowerPort), // both < 1024: lower port
            (1, 0, 0x0800, 0, 255, Initiator::Src, Reason::Icmp),     // echo request
            (1, 0, 0x0000, 0, 255, Initiator::Dst, Reason::Icmp),     // echo reply
            (58, 0, 0x8100, 0, 255, Initiator::Dst, Reason::Icmp),    // ICMPv6 echo reply
        ];
        // NetBIOS to the subnet broadcast, equal ports: the sender is the client
        assert_eq!(
            decide(17, b, 138, a, 138, 0, 255, true),
            (Initiator::Src, Reason::GroupDestination)
        );
        for (proto, sp, dp, flags, bi, who, why) in cases {
            assert_eq!(
                decide(proto, b, sp, a, dp, flags, bi, false),
                (who, why),
                "{proto} {sp}->{dp} flags {flags:#x} biflow {bi}"
            );
        }
    }

    fn ep(t: &Tables, s: &str) -> Endpoint {
        t.endpoint(&GeoTable::default(), s.parse().unwrap(), 0, 0)
    }

    #[test]
    fn every_flow_type_tag() {
        let inv = Inventory::parse(
            r#"
[[vm]]
name = "a"
ips = ["10.1.1.10"]
host = "h1"
port_group = "pg-1"
[[vm]]
name = "b"
ips = ["10.1.1.11"]
host = "h1"
port_group = "pg-1"
[[vm]]
name = "c"
ips = ["10.2.2.10"]
host = "h2"
port_group = "pg-2"
[[vm]]
name = "d"
ips = ["10.2.2.11"]
"#,
            "t",
        )
        .unwrap();
        let t = Tables::build(inv, 1);
        use tag::*;
        // (client, server, tags that must hold, tags that must not)
        let cases: &[(&str, &str, u32, u32)] = &[
            (
                "10.1.1.10",
                "10.1.1.11",
                EAST_WEST | SRC_VM | DST_VM | VM_VM | SAME_HOST | SWITCHED | UNICAST,
                INTERNET | DIFF_HOST | ROUTED | VM_PHYSICAL,
            ),
            (
                "10.1.1.10",
                "10.2.2.10",
                EAST_WEST | VM_VM | DIFF_HOST | ROUTED,
                SAME_HOST | SWITCHED,
            ),
            (
                "10.2.2.11",
                "10.2.2.10",
                VM_VM | EAST_WEST,
                SAME_HOST | DIFF_HOST,
            ), // d has no host
            (
                "10.1.1.10",
                "10.1.1.99",
                SRC_VM | DST_PHYSICAL | VM_PHYSICAL | SWITCHED,
                DST_VM | VM_VM,
            ), // same /24, no l2 on one side
            (
                "10.9.9.1",
                "10.1.1.10",
                SRC_PHYSICAL | DST_VM | VM_PHYSICAL | ROUTED,
                SRC_VM,
            ),
            (
                "10.9.9.1",
                "10.9.9.2",
                SRC_PHYSICAL | DST_PHYSICAL | PHYSICAL_PHYSICAL | SWITCHED,
                VM_PHYSICAL,
            ),
            ("10.9.9.1", "10.9.8.2", PHYSICAL_PHYSICAL | ROUTED, SWITCHED),
            (
                "81.2.69.142",
                "10.1.1.10",
                INTERNET | SRC_INTERNET | DST_VM,
                EAST_WEST | DST_INTERNET | SRC_PHYSICAL | SWITCHED | ROUTED,
            ),
            (
                "10.1.1.10",
                "8.8.8.8",
                INTERNET | DST_INTERNET | SRC_VM,
                SRC_INTERNET | EAST_WEST | DST_PHYSICAL,
            ),
            (
                "10.1.1.10",
                "224.0.0.252",
                MULTICAST | SRC_VM,
                UNICAST | DST_PHYSICAL | DST_INTERNET | INTERNET,
            ),
            (
                "10.1.1.10",
                "10.1.1.255",
                BROADCAST | EAST_WEST,
                UNICAST | DST_PHYSICAL,
            ),
            ("10.1.1.10", "255.255.255.255", BROADCAST, UNICAST),
            // an Internet address's prefix length is unknown: .255 there is unicast
            (
                "10.1.1.10",
                "145.100.162.255",
                UNICAST | DST_INTERNET | INTERNET,
                BROADCAST,
            ),
            ("fe80::1", "ff02::1:3", MULTICAST, UNICAST | INTERNET),
            (
                "2001:db8::1",
                "2a00:1450::1",
                DST_INTERNET | INTERNET,
                EAST_WEST,
            ),
        ];
        for &(c, s, yes, no) in cases {
            let got = tags(&ep(&t, c), &ep(&t, s));
            assert_eq!(
                got & yes,
                yes,
                "{c} -> {s}: missing {:?}",
                tag_names(yes & !got)
            );
            assert_eq!(
                got & no,
                0,
                "{c} -> {s}: unexpected {:?}",
                tag_names(got & no)
            );
        }
        // every tag appears in some case above
        let all: u32 = cases.iter().map(|c| c.2).fold(0, |a, b| a | b);
        assert_eq!(all, TAGS.iter().fold(0, |a, t| a | t.0));
    }

    #[test]
    fn tag_names_and_aliases() {
        assert_eq!(tag_by_name("east-west"), Some(tag::EAST_WEST));
        assert_eq!(tag_by_name("North-South"), Some(tag::INTERNET));
        assert_eq!(
            tag_by_name("destination is internet"),
            Some(tag::DST_INTERNET)
        );
        assert_eq!(tag_by_name("Source is VM"), Some(tag::SRC_VM));
        assert_eq!(tag_by_name("nonsense"), None);
        assert_eq!(
            tag_names(tag::VM_VM | tag::UNICAST),
            vec!["VM-VM", "Unicast"]
        );
        assert_eq!(application(22), Some("SSH"));
        assert_eq!(application(3389), Some("RDP"));
        assert!(is_service_port(1000) && is_service_port(5432) && !is_service_port(51514));
        // the table must stay sorted for binary search
        assert!(SERVICES.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
