//! Feeds arbitrary text to the inventory parser. Never a panic; an error names a line
//! and column inside the text and renders as "file:line:column: message"; an accepted
//! inventory keeps the rules the parser enforces (unique names, addresses and VLANs,
//! normalized prefixes) and, written back as TOML, parses to the same inventory.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use nagare::enrich::inventory::Inventory;
use toml::{Table, Value};

fn strings<T: ToString>(v: impl IntoIterator<Item = T>) -> Value {
    Value::Array(
        v.into_iter()
            .map(|x| Value::String(x.to_string()))
            .collect(),
    )
}

fn table(kv: impl IntoIterator<Item = (&'static str, Option<Value>)>) -> Value {
    Value::Table(
        kv.into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect(),
    )
}

fn s(x: &str) -> Option<Value> {
    Some(Value::String(x.to_string()))
}

/// The inventory in the file format it was read from.
fn to_toml(inv: &Inventory) -> String {
    let mut t = Table::new();
    t.insert("internal".into(), strings(&inv.internal));
    let hosts = inv.hosts.iter().map(|h| {
        table([
            ("name", s(&h.name)),
            ("cluster", h.cluster.as_deref().and_then(s)),
            ("ip", h.ip.map(|ip| Value::String(ip.to_string()))),
        ])
    });
    t.insert("host".into(), Value::Array(hosts.collect()));
    let l2 = inv.l2_networks.iter().map(|l| {
        table([
            ("name", s(&l.name)),
            ("vlan", l.vlan.map(|v| Value::Integer(v.into()))),
            ("subnets", Some(strings(&l.subnets))),
        ])
    });
    t.insert("l2_network".into(), Value::Array(l2.collect()));
    let subnets = inv.subnets.iter().map(|n| {
        table([
            ("cidr", Some(Value::String(n.cidr.to_string()))),
            ("name", n.name.as_deref().and_then(s)),
        ])
    });
    t.insert("subnet".into(), Value::Array(subnets.collect()));
    let vms = inv.vms.iter().map(|v| {
        table([
            ("name", s(&v.name)),
            ("ips", Some(strings(&v.ips))),
            ("host", v.host.as_deref().and_then(s)),
            ("vcpu", v.vcpu.map(|x| Value::Integer(x.into()))),
            (
                "memory_mb",
                v.memory_mb
                    .and_then(|x| i64::try_from(x).ok())
                    .map(Value::Integer),
            ),
            ("gateway", v.gateway.map(|g| Value::String(g.to_string()))),
            ("port_group", v.port_group.as_deref().and_then(s)),
            ("uuid", v.uuid.as_deref().and_then(s)),
        ])
    });
    t.insert("vm".into(), Value::Array(vms.collect()));
    let switches = inv.switches.iter().map(|w| {
        let ifs: Table = w
            .interfaces
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        table([
            ("name", s(&w.name)),
            ("exporter", Some(Value::String(w.exporter.to_string()))),
            ("interfaces", Some(Value::Table(ifs))),
        ])
    });
    t.insert("switch".into(), Value::Array(switches.collect()));
    toml::to_string(&t).expect("an inventory serializes")
}

fn check_rules(inv: &Inventory) {
    let unique = |v: Vec<String>| v.len() == v.iter().collect::<HashSet<_>>().len();
    assert!(unique(inv.hosts.iter().map(|h| h.name.clone()).collect()));
    assert!(unique(inv.vms.iter().map(|v| v.name.clone()).collect()));
    assert!(unique(
        inv.l2_networks.iter().map(|l| l.name.clone()).collect()
    ));
    assert!(unique(
        inv.vms
            .iter()
            .flat_map(|v| v.ips.iter().map(|ip| ip.to_string()))
            .collect()
    ));
    assert!(unique(
        inv.switches
            .iter()
            .map(|w| w.exporter.to_string())
            .collect()
    ));
    let vlans: Vec<String> = inv
        .l2_networks
        .iter()
        .filter_map(|l| l.vlan)
        .map(|v| v.to_string())
        .collect();
    assert!(unique(vlans));
    for l in &inv.l2_networks {
        assert!(l.vlan.is_none_or(|v| (1..=4094).contains(&v)), "{l:?}");
    }
    for h in &inv.hosts {
        assert!(!h.name.is_empty() && h.name.trim() == h.name, "{h:?}");
    }
    for v in &inv.vms {
        assert!(!v.name.is_empty() && v.name.trim() == v.name, "{v:?}");
    }
    let nets = inv
        .internal
        .iter()
        .chain(inv.l2_networks.iter().flat_map(|l| &l.subnets));
    for n in nets.chain(inv.subnets.iter().map(|s| &s.cidr)) {
        assert_eq!(n.ip(), n.network(), "prefix {n} keeps host bits");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Inventory::parse(text, "fuzz.toml") {
        Ok(inv) => {
            check_rules(&inv);
            let written = to_toml(&inv);
            let again = Inventory::parse(&written, "again.toml").unwrap_or_else(|e| {
                panic!("the inventory written back does not parse: {e}\n{written}")
            });
            assert_eq!(
                Inventory {
                    warnings: vec![],
                    ..again
                },
                Inventory {
                    warnings: vec![],
                    ..inv
                },
                "written back as\n{written}"
            );
        }
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(
                e.line >= 1 && e.line <= lines,
                "{e} (the text has {lines} lines)"
            );
            let line_len = text
                .split('\n')
                .nth(e.line - 1)
                .map_or(0, |l| l.chars().count());
            assert!(
                e.column >= 1 && e.column <= line_len + 1,
                "{e} (line {} has {line_len} chars)",
                e.line
            );
            let prefix = format!("fuzz.toml:{}:{}: ", e.line, e.column);
            assert!(e.to_string().starts_with(&prefix), "{e}");
            assert!(!e.message.is_empty(), "{e}");
        }
    }
});
