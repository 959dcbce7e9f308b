//! The inventory file: ESXi hosts, VMs, L2 networks, named subnets and switches.
//! Schema documented in `config/inventory.example.toml`. Every error names the line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use toml::Spanned;

use crate::util::line_col;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct InventoryError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn default_internal() -> Vec<Spanned<String>> {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ]
    .iter()
    .map(|s| Spanned::new(0..0, s.to_string()))
    .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    #[serde(default = "default_internal")]
    internal: Vec<Spanned<String>>,
    #[serde(default)]
    host: Vec<RawHost>,
    #[serde(default)]
    vm: Vec<RawVm>,
    #[serde(default)]
    l2_network: Vec<RawL2>,
    #[serde(default)]
    subnet: Vec<RawSubnet>,
    #[serde(default)]
    switch: Vec<RawSwitch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Spanned<String>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    ip: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Spanned<String>,
    #[serde(default)]
    ips: Vec<Spanned<String>>,
    #[serde(default)]
    host: Option<Spanned<String>>,
    #[serde(default)]
    vcpu: Option<u32>,
    #[serde(default)]
    memory_mb: Option<u64>,
    #[serde(default)]
    gateway: Option<Spanned<String>>,
    #[serde(default)]
    port_group: Option<Spanned<String>>,
    #[serde(default)]
    uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawL2 {
    name: Spanned<String>,
    #[serde(default)]
    vlan: Option<Spanned<u32>>,
    #[serde(default)]
    subnets: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    cidr: Spanned<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSwitch {
    name: Spanned<String>,
    exporter: Spanned<String>,
    #[serde(default)]
    interfaces: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub cluster: Option<String>,
    pub ip: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub host: Option<String>,
    pub vcpu: Option<u32>,
    pub memory_mb: Option<u64>,
    pub gateway: Option<IpAddr>,
    pub port_group: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2Network {
    pub name: String,
    pub vlan: Option<u16>,
    pub subnets: Vec<IpNetwork>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSubnet {
    pub cidr: IpNetwork,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub name: String,
    pub exporter: IpAddr,
    pub interfaces: BTreeMap<u32, String>,
}

/// A validated inventory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    pub internal: Vec<IpNetwork>,
    pub hosts: Vec<Host>,
    pub vms: Vec<Vm>,
    pub l2_networks: Vec<L2Network>,
    pub subnets: Vec<NamedSubnet>,
    pub switches: Vec<Switch>,
    /// Problems that do not stop the load (a VM on an undeclared host, ...).
    pub warnings: Vec<String>,
}

impl Inventory {
    /// The inventory used when none is configured: default internal prefixes only.
    pub fn empty() -> Self {
        Self {
            internal: default_internal()
                .iter()
                .filter_map(|s| s.get_ref().parse().ok())
                .collect(),
            ..Default::default()
        }
    }

    /// Parses and validates inventory TOML; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, InventoryError> {
        let err_at = |offset: usize, message: String| {
            let (line, column) = line_col(text, offset);
            InventoryError {
                file: file.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RawInventory = toml::from_str(text).map_err(|e| {
            let off = e.span().map_or(0, |s| s.start);
            err_at(off, e.message().to_string())
        })?;
        let ip_of = |s: &Spanned<String>, what: &str| -> Result<IpAddr, InventoryError> {
            s.get_ref()
                .trim()
                .parse::<IpAddr>()
                .map(crate::model::canonical_ip)
                .map_err(|_| {
                    err_at(
                        s.span().start,
                        format!("{what} '{}' is not an IP address", s.get_ref()),
                    )
                })
        };
        let net_of = |s: &Spanned<String>, what: &str| -> Result<IpNetwork, InventoryError> {
            let t = s.get_ref().trim();
            let n: IpNetwork = t.parse().map_err(|_| {
                err_at(
                    s.span().start,
                    format!("{what} '{t}' is not a CIDR prefix (like 10.11.5.0/24)"),
                )
            })?;
            // normalize host bits away (10.1.2.3/24 -> 10.1.2.0/24)
            IpNetwork::new(n.network(), n.prefix())
                .map_err(|e| err_at(s.span().start, e.to_string()))
        };
        let mut inv = Inventory::default();
        for s in &raw.internal {
            inv.internal.push(net_of(s, "internal prefix")?);
        }
        let mut host_names = HashSet::new();
        for h in raw.host {
            let name = h.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(err_at(h.name.span().start, "host name is empty".into()));
            }
            if !host_names.insert(name.clone()) {
                return Err(err_at(
                    h.name.span().start,
                    format!("host '{name}' is declared twice"),
                ));
            }
            let ip = match &h.ip {
                Some(s) => Some(ip_of(s, "host ip")?),
                None => None,
            };
            inv.hosts.push(Host {
                name,
                cluster: h.cluster.filter(|c| !c.is_empty()),
                ip,
            });
        }
        let mut l2_names = HashSet::new();
        let mut vlans: HashMap<u16, String> = HashMap::new();
        for l in raw.l2_network {
            let name = l.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(err_at(
                    l.name.span().start,
                    "l2_network name is empty".into(),
                ));
            }
            if !l2_names.insert(name.clone()) {
                return Err(err_at(
                    l.name.span().start,
                    format!("l2_network '{name}' is declared twice"),
                ));
            }
            let vlan = match &l.vlan {
                Some(v) => {
                    let n = *v.get_ref();
                    if n == 0 || n > 4094 {
                        return Err(err_at(
                            v.span().start,
                            format!("vlan {n} is outside 1..4094"),
                        ));
                    }
                    let n = n as u16;
                    if let Some(other) = vlans.insert(n, name.clone()) {
                        return Err(err_at(
                            v.span().start,
                            format!("vlan {n} is used by l2_network '{other}' and '{name}'"),
                        ));
                    }
                    Some(n)
                }
                None => None,
            };
            let mut subnets = Vec::new();
            for s in &l.subnets {
                subnets.push(net_of(s, "subnet")?);
            }
            inv.l2_networks.push(L2Network {
                name,
                vlan,
                subnets,
            });
        }
        for s in raw.subnet {
            inv.subnets.push(NamedSubnet {
                cidr: net_of(&s.cidr, "subnet cidr")?,
                name: s.name.filter(|n| !n.is_empty()),
            });
        }
        let mut vm_names = HashSet::new();
        let mut ip_owner: HashMap<IpAddr, String> = HashMap::new();
        for v in raw.vm {
            let name = v.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(err_at(v.name.span().start, "vm name is empty".into()));
            }
            if !vm_names.insert(name.clone()) {
                return Err(err_at(
                    v.name.span().start,
                    format!("vm '{name}' is declared twice"),
                ));
            }
            let mut ips = Vec::new();
            for s in &v.ips {
                let ip = ip_of(s, "vm ip")?;
                if let Some(other) = ip_owner.insert(ip, name.clone()) {
                    return Err(err_at(
                        s.span().start,
                        format!("ip {ip} belongs to vm '{other}' and to vm '{name}'"),
                    ));
                }
                ips.push(ip);
            }
            if ips.is_empty() {
                inv.warnings.push(format!(
                    "vm '{name}' has no ips: no flow can be attributed to it"
                ));
            }
            let host = v.host.as_ref().map(|h| h.get_ref().trim().to_string());
            if let Some(h) = &host
                && !host_names.contains(h)
            {
                let (line, _) = line_col(text, v.host.as_ref().map_or(0, |s| s.span().start));
                inv.warnings.push(format!(
                    "line {line}: vm '{name}' is on host '{h}', which no [[host]] declares"
                ));
            }
            let port_group = v
                .port_group
                .as_ref()
                .map(|p| p.get_ref().trim().to_string());
            if let Some(p) = &port_group
                && !l2_names.contains(p)
            {
                let (line, _) = line_col(text, v.port_group.as_ref().map_or(0, |s| s.span().start));
                inv.warnings.push(format!(
                    "line {line}: vm '{name}' is on port group '{p}', which no [[l2_network]] declares"
                ));
            }
            let gateway = match &v.gateway {
                Some(g) => Some(ip_of(g, "gateway")?),
                None => None,
            };
            inv.vms.push(Vm {
                name,
                ips,
                host,
                vcpu: v.vcpu,
                memory_mb: v.memory_mb,
                gateway,
                port_group,
                uuid: v.uuid.filter(|u| !u.is_empty()),
            });
        }
        let mut exporters = HashSet::new();
        for s in raw.switch {
            let name = s.name.get_ref().trim().to_string();
            let exporter = ip_of(&s.exporter, "switch exporter")?;
            if !exporters.insert(exporter) {
                return Err(err_at(
                    s.exporter.span().start,
                    format!("exporter {exporter} is declared twice"),
                ));
            }
            let mut interfaces = BTreeMap::new();
            for (k, v) in s.interfaces {
                let idx: u32 = k.trim().parse().map_err(|_| {
                    err_at(
                        s.name.span().start,
                        format!("switch '{name}': interface key '{k}' is not an ifIndex number"),
                    )
                })?;
                interfaces.insert(idx, v);
            }
            inv.switches.push(Switch {
                name,
                exporter,
                interfaces,
            });
        }
        Ok(inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
internal = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
[[host]]
name = "esxi-01"
cluster = "prod"
ip = "10.1.0.11"
[[vm]]
name = "web-01"
ips = ["10.11.5.21"]
host = "esxi-01"
vcpu = 4
memory_mb = 8192
gateway = "10.11.5.1"
port_group = "vlan-1105"
uuid = "42"
[[l2_network]]
name = "vlan-1105"
vlan = 1105
subnets = ["10.11.5.0/24"]
[[subnet]]
cidr = "10.20.0.0/16"
name = "osaka-branch"
[[switch]]
name = "tor-a1"
exporter = "192.0.2.10"
interfaces = { 1 = "Ethernet1/1", 2 = "Ethernet1/2" }
"#;

    #[test]
    fn parses_the_documented_schema() {
        let inv = Inventory::parse(GOOD, "inv.toml").unwrap();
        assert_eq!(inv.hosts[0].cluster.as_deref(), Some("prod"));
        assert_eq!(
            inv.vms[0].ips,
            vec!["10.11.5.21".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(inv.vms[0].memory_mb, Some(8192));
        assert_eq!(inv.l2_networks[0].vlan, Some(1105));
        assert_eq!(inv.subnets[0].name.as_deref(), Some("osaka-branch"));
        assert_eq!(
            inv.switches[0].interfaces.get(&2).map(String::as_str),
            Some("Ethernet1/2")
        );
        assert!(inv.warnings.is_empty(), "{:?}", inv.warnings);
    }

    #[test]
    fn defaults_internal_prefixes() {
        let inv = Inventory::parse("", "x").unwrap();
        assert_eq!(inv.internal.len(), 5);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (
                GOOD.replace("\"10.11.5.21\"", "\"10.11.5.321\""),
                9,
                "vm ip '10.11.5.321' is not an IP address",
            ),
            (
                GOOD.replace("cidr = \"10.20.0.0/16\"", "cidr = \"10.20.0.0/33\""),
                21,
                "is not a CIDR prefix",
            ),
            (
                GOOD.replace("vcpu = 4", "vcpus = 4"),
                11,
                "unknown field `vcpus`",
            ),
            (
                GOOD.replace("vlan = 1105", "vlan = 5000"),
                18,
                "vlan 5000 is outside 1..4094",
            ),
            (
                format!("{GOOD}\n[[vm]]\nname = \"web-01\"\n"),
                29,
                "vm 'web-01' is declared twice",
            ),
            (
                format!("{GOOD}\n[[vm]]\nname = \"db-01\"\nips = [\"10.11.5.21\"]\n"),
                30,
                "belongs to vm 'web-01' and to vm 'db-01'",
            ),
            ("[[vm]\nname = 1".to_string(), 1, ""),
        ];
        for (text, line, msg) in cases {
            let e = Inventory::parse(&text, "inv.toml").unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains(msg), "{e}");
            assert!(
                e.to_string().starts_with(&format!("inv.toml:{line}:")),
                "{e}"
            );
        }
    }

    #[test]
    fn warnings_do_not_stop_the_load() {
        let t = GOOD.replace("host = \"esxi-01\"", "host = \"esxi-09\"");
        let inv = Inventory::parse(&t, "x").unwrap();
        assert_eq!(inv.warnings.len(), 1);
        assert!(inv.warnings[0].contains("esxi-09"), "{:?}", inv.warnings);
    }
}
