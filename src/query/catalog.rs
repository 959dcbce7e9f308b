//! The vocabulary of the query language: entities, properties and metrics, each with a
//! canonical name (what `Display` prints) and the aliases operators type.

/// Which end of a flow a property refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    Source,
    Destination,
    /// Either end (meta-property).
    Either,
}

/// An attribute of one end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndAttr {
    Ip,
    Vm,
    Host,
    Cluster,
    Subnet,
    L2Network,
    Vlan,
    Country,
    Continent,
    As,
}

impl EndAttr {
    pub const ALL: [EndAttr; 10] = [
        EndAttr::Ip,
        EndAttr::Vm,
        EndAttr::Host,
        EndAttr::Cluster,
        EndAttr::Subnet,
        EndAttr::L2Network,
        EndAttr::Vlan,
        EndAttr::Country,
        EndAttr::Continent,
        EndAttr::As,
    ];
    pub fn name(self) -> &'static str {
        match self {
            EndAttr::Ip => "IP",
            EndAttr::Vm => "VM",
            EndAttr::Host => "Host",
            EndAttr::Cluster => "Cluster",
            EndAttr::Subnet => "Subnet",
            EndAttr::L2Network => "L2 Network",
            EndAttr::Vlan => "VLAN",
            EndAttr::Country => "Country",
            EndAttr::Continent => "Continent",
            EndAttr::As => "AS",
        }
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            EndAttr::Ip => &["ip", "ip address", "address"],
            EndAttr::Vm => &["vm", "virtual machine"],
            EndAttr::Host => &["host", "esxi host", "esxi"],
            EndAttr::Cluster => &["cluster"],
            EndAttr::Subnet => &["subnet"],
            EndAttr::L2Network => &["l2 network", "port group", "segment", "l2"],
            EndAttr::Vlan => &["vlan", "vlan id"],
            EndAttr::Country => &["country"],
            EndAttr::Continent => &["continent"],
            EndAttr::As => &["as", "asn", "as number"],
        }
    }
}

/// A property of a flow (or of another entity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prop {
    End(End, EndAttr),
    Port,
    Protocol,
    FlowType,
    TrafficType,
    Exporter,
    InputInterface,
    OutputInterface,
    Application,
    FirewallRule,
    // entity properties
    Switch,
    Interface,
    DefaultGateway,
    Vcpu,
    Memory,
}

impl Prop {
    /// The canonical name.
    pub fn name(self) -> String {
        match self {
            Prop::End(End::Source, a) => format!("Source {}", a.name()),
            Prop::End(End::Destination, a) => format!("Destination {}", a.name()),
            Prop::End(End::Either, a) => a.name().to_string(),
            Prop::Port => "Port".into(),
            Prop::Protocol => "Protocol".into(),
            Prop::FlowType => "Flow Type".into(),
            Prop::TrafficType => "Traffic Type".into(),
            Prop::Exporter => "Exporter".into(),
            Prop::InputInterface => "Input Interface".into(),
            Prop::OutputInterface => "Output Interface".into(),
            Prop::Application => "Application".into(),
            Prop::FirewallRule => "Firewall Rule".into(),
            Prop::Switch => "Switch".into(),
            Prop::Interface => "Interface".into(),
            Prop::DefaultGateway => "Default Gateway".into(),
            Prop::Vcpu => "vCPU".into(),
            Prop::Memory => "Memory".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    TotalTraffic,
    SourceBytes,
    DestinationBytes,
    Packets,
    Sessions,
    BytesRate,
    PacketRate,
    FlowCount,
    NetworkRate,
    MaxNetworkRate,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::TotalTraffic,
        Metric::SourceBytes,
        Metric::DestinationBytes,
        Metric::Packets,
        Metric::Sessions,
        Metric::BytesRate,
        Metric::PacketRate,
        Metric::FlowCount,
        Metric::NetworkRate,
        Metric::MaxNetworkRate,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Metric::TotalTraffic => "Total Traffic",
            Metric::SourceBytes => "Source Bytes",
            Metric::DestinationBytes => "Destination Bytes",
            Metric::Packets => "Packets",
            Metric::Sessions => "Session Count",
            Metric::BytesRate => "Bytes Rate",
            Metric::PacketRate => "Packet Rate",
            Metric::FlowCount => "Flow Count",
            Metric::NetworkRate => "Network Rate",
            Metric::MaxNetworkRate => "Max Network Rate",
        }
    }
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Metric::TotalTraffic => &["total traffic", "bytes", "total bytes", "traffic"],
            Metric::SourceBytes => &["source bytes", "src bytes"],
            Metric::DestinationBytes => &["destination bytes", "dst bytes", "dest bytes"],
            Metric::Packets => &["packets", "total packets"],
            Metric::Sessions => &["session count", "sessions"],
            Metric::BytesRate => &["bytes rate", "byte rate", "traffic rate", "bit rate"],
            Metric::PacketRate => &["packet rate", "packets rate"],
            Metric::FlowCount => &["flow count", "flows count"],
            Metric::NetworkRate => &["network rate"],
            Metric::MaxNetworkRate => &["max network rate", "peak network rate"],
        }
    }
    /// Unit of the metric's values.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::TotalTraffic | Metric::SourceBytes | Metric::DestinationBytes => "bytes",
            Metric::Packets => "packets",
            Metric::Sessions => "sessions",
            Metric::BytesRate | Metric::NetworkRate | Metric::MaxNetworkRate => "bit/s",
            Metric::PacketRate => "packets/s",
            Metric::FlowCount => "flows",
        }
    }
    /// The lower-case form `Display` uses inside aggregates ("sum(bytes rate)").
    pub fn lower(self) -> String {
        self.name().to_ascii_lowercase()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    Flows,
    Vms,
    SwitchPorts,
    Hosts,
    Subnets,
    L2Networks,
    Countries,
}

impl Entity {
    pub fn name(self) -> &'static str {
        match self {
            Entity::Flows => "flows",
            Entity::Vms => "vms",
            Entity::SwitchPorts => "switch ports",
            Entity::Hosts => "hosts",
            Entity::Subnets => "subnets",
            Entity::L2Networks => "l2 networks",
            Entity::Countries => "countries",
        }
    }
    fn aliases(self) -> &'static [&'static str] {
        match self {
            Entity::Flows => &["flow", "flows"],
            Entity::Vms => &["vm", "vms", "virtual machine", "virtual machines"],
            Entity::SwitchPorts => &[
                "switch port",
                "switch ports",
                "switchport",
                "switchports",
                "interfaces",
            ],
            Entity::Hosts => &["host", "hosts", "esxi host", "esxi hosts"],
            Entity::Subnets => &["subnet", "subnets"],
            Entity::L2Networks => &[
                "l2 network",
                "l2 networks",
                "port group",
                "port groups",
                "segments",
            ],
            Entity::Countries => &["country", "countries"],
        }
    }
}

/// What a phrase at the cursor names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Term {
    Prop(Prop),
    Metric(Metric),
}

fn prop_phrases() -> Vec<(String, Prop)> {
    let mut v: Vec<(String, Prop)> = Vec::new();
    for a in EndAttr::ALL {
        for al in a.aliases() {
            v.push((al.to_string(), Prop::End(End::Either, a)));
            for (pre, end) in [
                ("source", End::Source),
                ("src", End::Source),
                ("destination", End::Destination),
                ("dst", End::Destination),
                ("dest", End::Destination),
            ] {
                v.push((format!("{pre} {al}"), Prop::End(end, a)));
            }
        }
    }
    let others: &[(&str, Prop)] = &[
        ("port", Prop::Port),
        ("destination port", Prop::Port),
        ("dst port", Prop::Port),
        ("server port", Prop::Port),
        ("protocol", Prop::Protocol),
        ("proto", Prop::Protocol),
        ("flow type", Prop::FlowType),
        ("flow types", Prop::FlowType),
        ("traffic type", Prop::TrafficType),
        ("exporter", Prop::Exporter),
        ("input interface", Prop::InputInterface),
        ("output interface", Prop::OutputInterface),
        ("in interface", Prop::InputInterface),
        ("out interface", Prop::OutputInterface),
        ("application", Prop::Application),
        ("app", Prop::Application),
        ("firewall rule", Prop::FirewallRule),
        ("rule", Prop::FirewallRule),
        ("switch", Prop::Switch),
        ("interface", Prop::Interface),
        ("default gateway", Prop::DefaultGateway),
        ("gateway", Prop::DefaultGateway),
        ("vcpu", Prop::Vcpu),
        ("vcpus", Prop::Vcpu),
        ("memory", Prop::Memory),
        ("memory mb", Prop::Memory),
    ];
    v.extend(others.iter().map(|(s, p)| (s.to_string(), *p)));
    v
}

/// Canonical names of every property and metric (for completion and suggestions).
pub fn all_names() -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for a in EndAttr::ALL {
        v.push(format!("Source {}", a.name()));
        v.push(format!("Destination {}", a.name()));
        v.push(a.name().to_string());
    }
    for p in [
        Prop::Port,
        Prop::Protocol,
        Prop::FlowType,
        Prop::TrafficType,
        Prop::Exporter,
        Prop::InputInterface,
        Prop::OutputInterface,
        Prop::Application,
        Prop::FirewallRule,
        Prop::Switch,
        Prop::Interface,
        Prop::DefaultGateway,
        Prop::Vcpu,
        Prop::Memory,
    ] {
        v.push(p.name());
    }
    for m in Metric::ALL {
        v.push(m.name().to_string());
    }
    v
}

/// Every name an operator may type (all aliases), lower case, for phrase matching.
pub struct Lexicon {
    props: Vec<(Vec<String>, Prop)>,
    metrics: Vec<(Vec<String>, Metric)>,
    entities: Vec<(Vec<String>, Entity)>,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

impl Lexicon {
    pub fn new() -> Self {
        let mut props: Vec<(Vec<String>, Prop)> = prop_phrases()
            .into_iter()
            .map(|(s, p)| (words(&s), p))
            .collect();
        props.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        let mut metrics: Vec<(Vec<String>, Metric)> = Metric::ALL
            .iter()
            .flat_map(|m| m.aliases().iter().map(move |a| (words(a), *m)))
            .collect();
        metrics.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        let all = [
            Entity::Flows,
            Entity::Vms,
            Entity::SwitchPorts,
            Entity::Hosts,
            Entity::Subnets,
            Entity::L2Networks,
            Entity::Countries,
        ];
        let mut entities: Vec<(Vec<String>, Entity)> = all
            .iter()
            .flat_map(|e| e.aliases().iter().map(move |a| (words(a), *e)))
            .collect();
        entities.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Self {
            props,
            metrics,
            entities,
        }
    }

    fn longest<T: Copy>(table: &[(Vec<String>, T)], ws: &[String]) -> Option<(usize, T)> {
        table
            .iter()
            .filter(|(p, _)| p.len() <= ws.len() && p.iter().zip(ws).all(|(a, b)| a == b))
            .map(|(p, t)| (p.len(), *t))
            .max_by_key(|x| x.0)
    }

    /// The longest property at the start of `ws` (lower-case words): (words used, prop).
    pub fn prop(&self, ws: &[String]) -> Option<(usize, Prop)> {
        Self::longest(&self.props, ws)
    }
    pub fn metric(&self, ws: &[String]) -> Option<(usize, Metric)> {
        Self::longest(&self.metrics, ws)
    }
    pub fn entity(&self, ws: &[String]) -> Option<(usize, Entity)> {
        Self::longest(&self.entities, ws)
    }
    /// Either a property or a metric (metrics win on ties: "bytes" is a metric).
    pub fn term(&self, ws: &[String]) -> Option<(usize, Term)> {
        let p = self.prop(ws).map(|(n, p)| (n, Term::Prop(p)));
        let m = self.metric(ws).map(|(n, m)| (n, Term::Metric(m)));
        match (p, m) {
            (Some(p), Some(m)) => Some(if m.0 >= p.0 { m } else { p }),
            (a, b) => a.or(b),
        }
    }
}

impl Default for Lexicon {
    fn default() -> Self {
        Self::new()
    }
}

/// Edit distance with transpositions (optimal string alignment), for "did you mean".
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// The closest candidate to `typed` if it is close enough to be a typo.
pub fn suggest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let t = typed.trim();
    if t.is_empty() {
        return None;
    }
    let limit = (t.chars().count() / 4).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (distance(t, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, c.len()))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn phrases_match_longest() {
        let l = Lexicon::new();
        assert_eq!(
            l.prop(&ws("Source L2 Network in")),
            Some((3, Prop::End(End::Source, EndAttr::L2Network)))
        );
        assert_eq!(
            l.prop(&ws("source vm")),
            Some((2, Prop::End(End::Source, EndAttr::Vm)))
        );
        assert_eq!(
            l.prop(&ws("vm group")),
            Some((1, Prop::End(End::Either, EndAttr::Vm)))
        );
        assert_eq!(
            l.prop(&ws("dest country")),
            Some((2, Prop::End(End::Destination, EndAttr::Country)))
        );
        assert_eq!(l.metric(&ws("bytes rate")), Some((2, Metric::BytesRate)));
        assert_eq!(l.metric(&ws("Session Count")), Some((2, Metric::Sessions)));
        assert_eq!(
            l.entity(&ws("switch ports by")),
            Some((2, Entity::SwitchPorts))
        );
        assert_eq!(l.entity(&ws("VMs by")), Some((1, Entity::Vms)));
        assert_eq!(
            l.term(&ws("bytes")),
            Some((1, Term::Metric(Metric::TotalTraffic)))
        );
    }

    #[test]
    fn suggestions() {
        let names = all_names();
        let s = suggest("Source Contry", names.iter().map(String::as_str));
        assert_eq!(s, Some("Source Country"));
        assert_eq!(
            suggest("Desination VM", names.iter().map(String::as_str)),
            Some("Destination VM")
        );
        assert_eq!(suggest("zzzz", names.iter().map(String::as_str)), None);
    }
}
