//! The seed queries, shared by tests and benchmarks.
#![allow(dead_code)]

/// ../shared/spec/seed-queries.md, verbatim (the interop test checks this list against
/// the file).
pub const SEEDS: &[(&str, &str)] = &[
    (
        "T1",
        "flows where flow type = 'Physical-Physical' order by Total Traffic",
    ),
    ("T2", "top 20 switch ports by Network rate in last 2 days"),
    ("T3", "top 5 VMs by Network Rate in last 2 days"),
    ("S1", "flows group by Source Country"),
    ("S2", "flows group by Destination Country"),
    (
        "S3",
        "series(sum(bytes rate)) of flows group by Destination Country order by sum(Total Traffic)",
    ),
    (
        "S4",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows group by Destination Country order by sum(Total Traffic)",
    ),
    (
        "S5",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows where Flow Type = 'Source is VM' and flow type = 'Destination is internet' group by Source Subnet order by sum(Total Traffic)",
    ),
    (
        "S6",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of Flows Destination Country = 'United Kingdom' group by Source VM in last 7 days",
    ),
    ("S7", "flows group by Destination Subnet"),
    ("S8", "flows group by Source Subnet"),
    (
        "S9",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows group by Source Subnet order by sum(Total Traffic)",
    ),
    (
        "S10",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flow group by Port order by sum(Sessions) in last 7 days",
    ),
    (
        "S11",
        "flows where Flow Type = 'Source is Internet' and Port in ('22', '23', '3389') group by Source Country",
    ),
    (
        "S12",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flow where port in (22, 23, 3389) and flow type = 'east-west'",
    ),
    (
        "S13",
        "flow where port in (22, 23, 3389) and flow type = 'east-west'",
    ),
    (
        "S14",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flow where port in (22, 23, 3389) and flow type = 'east-west' group by source vm",
    ),
    (
        "S14b",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flow where port in (22, 23, 3389) and flow type = 'east-west' group by source vm in last 7 days during 21:00-06:30",
    ),
    (
        "Z1",
        "flows where Source L2 Network in ( 'vlan-1105' ) and Destination L2 Network not in ( 'vlan-1105' ) order by Total Traffic",
    ),
    (
        "Z2",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows where Source L2 Network in (vlan-1105) and Destination L2 Network not in ( 'vlan-1105' )",
    ),
];
