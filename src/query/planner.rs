//! AST -> Plan: names and values resolved (countries, flow-type tags, protocols),
//! types checked, the time range and the stored resolution chosen.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::ast::*;
use super::catalog::{self, End, EndAttr, Entity, Metric, Prop};
use super::lexer::Span;
use super::{Context, QueryError};
use crate::enrich::{classify, countries};

/// A positive test on a value (negations wrap it in `Filter::Not`).
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// Address equal to / inside one of these prefixes.
    Ip(Vec<IpNetwork>),
    IpCmp(CmpOp, u128),
    /// Case-insensitive equality with one of these (lower case).
    Text(Vec<String>),
    /// Case-insensitive glob (% or * any run, _ or ? one character).
    Like(String),
    Num(Vec<u64>),
    NumCmp(CmpOp, u64),
    Country(Vec<u16>),
    Continent(Vec<String>),
    /// Subnet given as a prefix or a configured name.
    Subnet(Vec<IpNetwork>, Vec<String>),
    IsSet,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Leaf {
    Ep(End, EndAttr, Test),
    Port(Test),
    Proto(Test),
    /// The flow has one of these tag bits.
    Tags(u32),
    TrafficType(Vec<&'static str>),
    /// Application: by name (its ports) or a pattern on the name.
    App(Test),
    Rule(Test),
    Exporter(Test),
    InIf(Test),
    OutIf(Test),
    Switch(Test),
    Interface(Test),
    Gateway(Test),
    Vcpu(Test),
    Memory(Test),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Leaf(Leaf),
}

/// A grouping dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Ep(End, EndAttr),
    Port,
    Proto,
    FlowType,
    TrafficType,
    Application,
    FirewallRule,
    Exporter,
    InIf,
    OutIf,
}

impl Dim {
    pub fn label(self) -> String {
        match self {
            Dim::Ep(e, a) => Prop::End(e, a).name(),
            Dim::Port => "Port".into(),
            Dim::Proto => "Protocol".into(),
            Dim::FlowType => "Flow Type".into(),
            Dim::TrafficType => "Traffic Type".into(),
            Dim::Application => "Application".into(),
            Dim::FirewallRule => "Firewall Rule".into(),
            Dim::Exporter => "Exporter".into(),
            Dim::InIf => "Input Interface".into(),
            Dim::OutIf => "Output Interface".into(),
        }
    }
}

/// An aggregate column.
#[derive(Debug, Clone, PartialEq)]
pub struct ColSpec {
    pub label: String,
    pub agg: Agg,
    pub metric: Metric,
    /// For agg(series(...)): aggregate over this series' points.
    pub over_series: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPlan {
    pub label: String,
    pub agg: Agg,
    pub metric: Metric,
    pub bucket_s: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OrderBy {
    Count,
    Col(usize),
    Key(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// flows without group by: one row per flow.
    FlowListing,
    /// flows group by ...
    Grouped,
    Vms,
    SwitchPorts,
    /// hosts, subnets, l2 networks, countries: flows grouped by that meta-property.
    EntityGroup,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub canonical: String,
    pub entity: Entity,
    pub kind: Kind,
    /// [from, to): bucket starts read; `from` is aligned to the resolution.
    pub from: i64,
    pub to: i64,
    /// Seconds the rates divide by.
    pub range_secs: i64,
    pub res: u32,
    /// Time-of-day window, seconds after local midnight (start inclusive, end exclusive).
    pub during: Option<(u32, u32)>,
    pub tz: jiff::tz::TimeZone,
    pub filter: Option<Filter>,
    pub group: Vec<Dim>,
    pub cols: Vec<ColSpec>,
    pub series: Vec<SeriesPlan>,
    pub list_props: Vec<(usize, Dim)>,
    pub order: OrderBy,
    pub desc: bool,
    pub limit: usize,
    /// Extra property columns of a flow listing.
    pub listing_props: Vec<Dim>,
    pub wants_per_flow: bool,
    pub wants_peak: bool,
}

fn prop_dim(p: Prop, span: Span) -> Result<Dim, QueryError> {
    Ok(match p {
        Prop::End(e, a) => Dim::Ep(e, a),
        Prop::Port => Dim::Port,
        Prop::Protocol => Dim::Proto,
        Prop::FlowType => Dim::FlowType,
        Prop::TrafficType => Dim::TrafficType,
        Prop::Application => Dim::Application,
        Prop::FirewallRule => Dim::FirewallRule,
        Prop::Exporter => Dim::Exporter,
        Prop::InputInterface => Dim::InIf,
        Prop::OutputInterface => Dim::OutIf,
        other => {
            return Err(QueryError::plan(
                span,
                &format!(
                    "'{}' is a property of VMs or switch ports, not of flows",
                    other.name()
                ),
                None,
            ));
        }
    })
}

fn text_of(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Int(n) => n.to_string(),
    }
}

fn num_of(v: &Sp<Value>, what: &str) -> Result<u64, QueryError> {
    match &v.v {
        Value::Int(n) => Ok(*n),
        Value::Text(s) => s.trim().parse::<u64>().map_err(|_| {
            QueryError::plan(v.span, &format!("{what} takes a number, found '{s}'"), None)
        }),
    }
}

/// Protocol names operators use.
pub fn protocol_number(s: &str) -> Option<u8> {
    match s.trim().to_ascii_lowercase().as_str() {
        "icmp" => Some(1),
        "igmp" => Some(2),
        "tcp" => Some(6),
        "udp" => Some(17),
        "gre" => Some(47),
        "esp" => Some(50),
        "ah" => Some(51),
        "icmpv6" | "icmp6" | "ipv6-icmp" => Some(58),
        "ospf" => Some(89),
        "sctp" => Some(132),
        n => n.parse().ok(),
    }
}

pub fn protocol_name(n: u8) -> String {
    match n {
        1 => "ICMP".into(),
        2 => "IGMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        47 => "GRE".into(),
        50 => "ESP".into(),
        51 => "AH".into(),
        58 => "ICMPv6".into(),
        89 => "OSPF".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

fn ip_value(v: &Sp<Value>) -> Result<IpNetwork, QueryError> {
    let t = text_of(&v.v);
    let t = t.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(IpNetwork::from(crate::model::canonical_ip(ip)));
    }
    let n: IpNetwork = t.parse().map_err(|_| {
        QueryError::plan(
            v.span,
            &format!("'{t}' is not an IP address or CIDR prefix"),
            Some("e.g. '10.11.5.21' or '10.0.0.0/8'".into()),
        )
    })?;
    IpNetwork::new(n.network(), n.prefix())
        .map_err(|e| QueryError::plan(v.span, &e.to_string(), None))
}

/// Builds the positive test of one value list for a property.
fn test_for(prop: Prop, values: &[Sp<Value>], ctx: &Context) -> Result<Test, QueryError> {
    let span = values.first().map_or(Span::default(), |v| v.span);
    let texts = || {
        values
            .iter()
            .map(|v| text_of(&v.v).trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    Ok(match prop {
        Prop::End(_, EndAttr::Ip) | Prop::Exporter | Prop::DefaultGateway => {
            Test::Ip(values.iter().map(ip_value).collect::<Result<_, _>>()?)
        }
        Prop::End(_, EndAttr::Country) => {
            let mut v = Vec::new();
            for x in values {
                let t = text_of(&x.v);
                if t.eq_ignore_ascii_case("unknown") {
                    v.push(0);
                    continue;
                }
                match countries::lookup(&t) {
                    Some(c) => v.push(c),
                    None => {
                        let hint = catalog::suggest(&t, countries::COUNTRIES.iter().map(|c| c.1)).map(|s| format!("did you mean '{s}'?"));
                        return Err(QueryError::plan(x.span, &format!("unknown country '{t}'"), hint.or(Some("use an English name or an ISO code: 'United Kingdom' or 'GB'".into()))));
                    }
                }
            }
            Test::Country(v)
        }
        Prop::End(_, EndAttr::Continent) => {
            let mut v = Vec::new();
            for x in values {
                let t = text_of(&x.v);
                match countries::lookup_continent(&t) {
                    Some(c) => v.push(c.to_string()),
                    None => return Err(QueryError::plan(x.span, &format!("unknown continent '{t}'"), Some("Africa, Antarctica, Asia, Europe, North America, Oceania, South America".into()))),
                }
            }
            Test::Continent(v)
        }
        Prop::End(_, EndAttr::Subnet) => {
            let mut nets = Vec::new();
            let mut names = Vec::new();
            for x in values {
                let t = text_of(&x.v);
                match ip_value(x) {
                    Ok(n) => nets.push(n),
                    Err(_) => names.push(t.trim().to_ascii_lowercase()),
                }
            }
            Test::Subnet(nets, names)
        }
        Prop::End(_, EndAttr::Vlan | EndAttr::As) | Prop::FirewallRule | Prop::Vcpu | Prop::Memory | Prop::Port => {
            let what = prop.name();
            Test::Num(values.iter().map(|v| num_of(v, &what)).collect::<Result<_, _>>()?)
        }
        Prop::Protocol => {
            let mut v = Vec::new();
            for x in values {
                let t = text_of(&x.v);
                match protocol_number(&t) {
                    Some(n) => v.push(u64::from(n)),
                    None => return Err(QueryError::plan(x.span, &format!("unknown protocol '{t}'"), Some("tcp, udp, icmp, ... or a number".into()))),
                }
            }
            Test::Num(v)
        }
        Prop::End(_, EndAttr::Vm | EndAttr::Host | EndAttr::Cluster | EndAttr::L2Network) => {
            // Suggest an inventory name for a value that matches nothing.
            let tables = ctx.enricher.tables();
            for x in values {
                let t = text_of(&x.v).trim().to_ascii_lowercase();
                let known: Vec<String> = match prop {
                    Prop::End(_, EndAttr::Vm) => tables.inventory.vms.iter().map(|v| v.name.clone()).collect(),
                    Prop::End(_, EndAttr::Host) => tables.inventory.hosts.iter().map(|h| h.name.clone()).collect(),
                    Prop::End(_, EndAttr::L2Network) => tables.inventory.l2_networks.iter().map(|l| l.name.clone()).collect(),
                    _ => vec![],
                };
                if !known.is_empty()
                    && !known.iter().any(|k| k.eq_ignore_ascii_case(&t))
                    && !t.starts_with("vlan-")
                    && let Some(s) = catalog::suggest(&t, known.iter().map(String::as_str))
                {
                    return Err(QueryError::plan(x.span, &format!("no {} is named '{t}'", prop.name()), Some(format!("did you mean '{s}'?"))));
                }
            }
            Test::Text(texts())
        }
        _ => Test::Text(texts()),
    })
    .inspect(|_| {
        let _ = span;
    })
}

fn like_test(v: &Sp<Value>) -> Test {
    Test::Like(text_of(&v.v).to_ascii_lowercase())
}

fn leaf(prop: Prop, test: Test, span: Span, entity: Entity) -> Result<Leaf, QueryError> {
    let vm_entity = entity == Entity::Vms;
    let sw_entity = entity == Entity::SwitchPorts;
    Ok(match prop {
        Prop::End(e, a) if !sw_entity => Leaf::Ep(e, a, test),
        Prop::Port if !vm_entity && !sw_entity => Leaf::Port(test),
        Prop::Protocol if !vm_entity && !sw_entity => Leaf::Proto(test),
        Prop::Application if !vm_entity && !sw_entity => Leaf::App(test),
        Prop::FirewallRule if !vm_entity && !sw_entity => Leaf::Rule(test),
        Prop::Exporter if !vm_entity => Leaf::Exporter(test),
        Prop::InputInterface if !vm_entity && !sw_entity => Leaf::InIf(test),
        Prop::OutputInterface if !vm_entity && !sw_entity => Leaf::OutIf(test),
        Prop::Switch if sw_entity => Leaf::Switch(test),
        Prop::Interface if sw_entity => Leaf::Interface(test),
        Prop::DefaultGateway if vm_entity => Leaf::Gateway(test),
        Prop::Vcpu if vm_entity => Leaf::Vcpu(test),
        Prop::Memory if vm_entity => Leaf::Memory(test),
        other => {
            return Err(QueryError::plan(
                span,
                &format!("{} cannot be filtered by {}", entity.name(), other.name()),
                None,
            ));
        }
    })
}

fn compile(c: &Cond, ctx: &Context, entity: Entity) -> Result<Filter, QueryError> {
    Ok(match c {
        Cond::Or(v) => Filter::Or(
            v.iter()
                .map(|c| compile(c, ctx, entity))
                .collect::<Result<_, _>>()?,
        ),
        Cond::And(v) => Filter::And(
            v.iter()
                .map(|c| compile(c, ctx, entity))
                .collect::<Result<_, _>>()?,
        ),
        Cond::Not(c) => Filter::Not(Box::new(compile(c, ctx, entity)?)),
        Cond::Pred(p) => {
            let prop = p.prop.v;
            let span = p.prop.span;
            // flow-type tags and traffic types are sets of names
            if matches!(prop, Prop::FlowType | Prop::TrafficType) {
                let (vals, negated): (Vec<&Sp<Value>>, bool) = match &p.op {
                    PredOp::Cmp(CmpOp::Eq, v) => (vec![v], false),
                    PredOp::Cmp(CmpOp::Ne, v) => (vec![v], true),
                    PredOp::In { negated, values } => (values.iter().collect(), *negated),
                    PredOp::IsSet { negated } => {
                        let f = Filter::Leaf(Leaf::Tags(u32::MAX));
                        return Ok(if *negated {
                            Filter::Not(Box::new(f))
                        } else {
                            f
                        });
                    }
                    _ => {
                        return Err(QueryError::plan(
                            span,
                            &format!("{} takes =, !=, in or not in", prop.name()),
                            None,
                        ));
                    }
                };
                let leaf = if prop == Prop::FlowType {
                    let mut bits = 0;
                    for v in vals {
                        let t = text_of(&v.v);
                        match classify::tag_by_name(&t) {
                            Some(b) => bits |= b,
                            None => {
                                let hint = catalog::suggest(&t, classify::TAGS.iter().map(|t| t.1))
                                    .map(|s| format!("did you mean '{s}'?"));
                                return Err(QueryError::plan(v.span, &format!("unknown flow type '{t}'"), hint.or(Some("e.g. 'East-West', 'Source is VM', 'Destination is Internet'".into()))));
                            }
                        }
                    }
                    Leaf::Tags(bits)
                } else {
                    let mut names = Vec::new();
                    for v in vals {
                        let t = text_of(&v.v);
                        let n = ["East-West", "Internet", "Other"]
                            .into_iter()
                            .find(|n| n.eq_ignore_ascii_case(t.trim()));
                        match n {
                            Some(n) => names.push(n),
                            None => {
                                return Err(QueryError::plan(
                                    v.span,
                                    &format!("unknown traffic type '{t}'"),
                                    Some("East-West, Internet or Other".into()),
                                ));
                            }
                        }
                    }
                    Leaf::TrafficType(names)
                };
                let f = Filter::Leaf(leaf);
                return Ok(if negated { Filter::Not(Box::new(f)) } else { f });
            }
            let (test, negated) = match &p.op {
                PredOp::Cmp(op @ (CmpOp::Eq | CmpOp::Ne), v) => (
                    test_for(prop, std::slice::from_ref(v), ctx)?,
                    *op == CmpOp::Ne,
                ),
                PredOp::Cmp(op, v) => {
                    let t = match prop {
                        Prop::End(_, EndAttr::Ip) => match ip_value(v)? {
                            n if n.prefix() == if n.is_ipv4() { 32 } else { 128 } => {
                                Test::IpCmp(*op, crate::model::ip_to_u128(n.ip()))
                            }
                            _ => {
                                return Err(QueryError::plan(
                                    v.span,
                                    "compare an address with a single address, not a prefix",
                                    None,
                                ));
                            }
                        },
                        Prop::End(_, EndAttr::Vlan | EndAttr::As)
                        | Prop::Port
                        | Prop::FirewallRule
                        | Prop::Vcpu
                        | Prop::Memory
                        | Prop::Protocol => Test::NumCmp(*op, num_of(v, &prop.name())?),
                        _ => {
                            return Err(QueryError::plan(
                                span,
                                &format!("{} cannot be compared with {}", prop.name(), op.sym()),
                                Some("use =, !=, in or like".into()),
                            ));
                        }
                    };
                    (t, false)
                }
                PredOp::In { negated, values } => (test_for(prop, values, ctx)?, *negated),
                PredOp::Like { negated, pattern } => (like_test(pattern), *negated),
                PredOp::IsSet { negated } => (Test::IsSet, *negated),
            };
            let f = Filter::Leaf(leaf(prop, test, span, entity)?);
            if negated { Filter::Not(Box::new(f)) } else { f }
        }
    })
}

/// Parses a date-time of a `between` / `at` clause in the query time zone.
pub fn parse_datetime(s: &Sp<String>, tz: &jiff::tz::TimeZone) -> Result<i64, QueryError> {
    let t = s.v.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_second());
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(dt) = jiff::civil::DateTime::strptime(fmt, t)
            && let Ok(z) = dt.to_zoned(tz.clone())
        {
            return Ok(z.timestamp().as_second());
        }
    }
    if let Ok(d) = jiff::civil::Date::strptime("%Y-%m-%d", t)
        && let Ok(z) = d.to_zoned(tz.clone())
    {
        return Ok(z.timestamp().as_second());
    }
    Err(QueryError::plan(
        s.span,
        &format!("'{t}' is not a date and time"),
        Some("use '2026-11-27 21:00' (query time zone) or RFC 3339 '2026-11-27T21:00:00Z'".into()),
    ))
}

/// The latest `now` a query may be evaluated at (9999-12-31T23:59:59Z).
const MAX_NOW_S: i64 = 253_402_300_799;

const SERIES_BUCKETS: [u32; 5] = [60, 300, 1800, 3600, 86_400];

/// Plans a query.
pub fn plan(q: &Query, ctx: &Context, now_s: i64) -> Result<Plan, QueryError> {
    let tz = ctx.timezone();
    let entity = q.entity.v;
    // `now` may come from a request: years 0 to 9999 only, so that no range overflows
    if !(0..=MAX_NOW_S).contains(&now_s) {
        return Err(QueryError::at(
            q.entity.span,
            &format!("\"now\" ({now_s}) is not a Unix time between 1970 and 9999"),
            None,
        ));
    }
    // time range
    let (from, to, at_bucket) = match &q.range {
        None => (now_s - 86_400, now_s, None),
        Some(Sp {
            v: TimeRange::Last(n, u),
            ..
        }) => {
            // the parser caps a range at 400 days; saturate all the same
            let secs = i64::try_from(*n)
                .unwrap_or(i64::MAX)
                .saturating_mul(u.seconds());
            (now_s.saturating_sub(secs), now_s, None)
        }
        Some(Sp {
            v: TimeRange::Between(a, b),
            span,
        }) => {
            let (f, t) = (parse_datetime(a, &tz)?, parse_datetime(b, &tz)?);
            if t <= f {
                return Err(QueryError::plan(
                    *span,
                    "the end of the range is not after its start",
                    None,
                ));
            }
            (f, t, None)
        }
        Some(Sp {
            v: TimeRange::At(a),
            ..
        }) => {
            let t = parse_datetime(a, &tz)?;
            (t, t + 1, Some(t))
        }
    };
    let during = q
        .during
        .as_ref()
        .map(|d| (u32::from(d.v.start_min) * 60, u32::from(d.v.end_min) * 60));

    // resolutions that retain the whole range (oldest start), else the longest-kept one
    let view = ctx.store.view();
    let mut res_all: Vec<(u32, i64)> = ctx
        .store
        .resolutions()
        .iter()
        .map(|r| (r.seconds, r.retention_secs))
        .collect();
    res_all.sort_by_key(|r| r.0);
    let covered = |r: &(u32, i64)| {
        now_s - r.1 <= from
            && view
                .coverage(r.0)
                .is_none_or(|(lo, _)| lo <= from.max(now_s - r.1) + i64::from(r.0))
    };
    let mut cands: Vec<u32> = res_all.iter().filter(|r| covered(r)).map(|r| r.0).collect();
    if cands.is_empty() {
        cands = res_all
            .iter()
            .filter(|r| now_s - r.1 <= from)
            .map(|r| r.0)
            .collect();
    }
    if cands.is_empty() {
        // nothing keeps that far back: the longest-kept resolution, and say so via the
        // time range in the result
        if let Some(r) = res_all.iter().max_by_key(|r| r.1) {
            cands.push(r.0);
        }
    }
    let finest = cands.first().copied().unwrap_or(60);
    let span_s = (to - from).max(1);

    // projections -> columns and series
    let mut cols: Vec<ColSpec> = Vec::new();
    let mut series: Vec<SeriesPlan> = Vec::new();
    let mut list_props: Vec<(usize, Dim)> = Vec::new();
    let mut prop_projs: Vec<(Prop, Span)> = Vec::new();
    let auto_bucket = SERIES_BUCKETS
        .into_iter()
        .find(|b| *b >= finest && span_s / i64::from(*b) <= 300)
        .unwrap_or(86_400);
    let series_plan = |s: &SeriesSpec| -> Result<SeriesPlan, QueryError> {
        let bucket_s = match &s.bucket {
            Some(b) => {
                let b32 = b.v as u32;
                if b32 < finest || !b32.is_multiple_of(finest) {
                    return Err(QueryError::plan(
                        b.span,
                        &format!(
                            "the data kept for this time range has {finest}s buckets: use a multiple of {finest}"
                        ),
                        None,
                    ));
                }
                if span_s / i64::from(b32) > 5000 {
                    return Err(QueryError::plan(
                        b.span,
                        "more than 5000 points in a series",
                        Some("use a larger bucket".into()),
                    ));
                }
                b32
            }
            None => auto_bucket,
        };
        Ok(SeriesPlan {
            label: format!("{}({})", s.agg.name(), s.metric.v.lower()),
            agg: s.agg,
            metric: s.metric.v,
            bucket_s,
        })
    };
    let mut want_count_col = false;
    for p in &q.projections {
        match p {
            Proj::Count => want_count_col = true,
            Proj::Prop(pr) => prop_projs.push((pr.v, pr.span)),
            Proj::List(pr) => list_props.push((list_props.len(), prop_dim(pr.v, pr.span)?)),
            Proj::Agg(a, m) => cols.push(ColSpec {
                label: format!("{}({})", a.name(), m.v.name()),
                agg: *a,
                metric: m.v,
                over_series: None,
            }),
            Proj::Series(s) => {
                let sp = series_plan(s)?;
                // a series contributes its aggregate over the whole range
                cols.push(ColSpec {
                    label: sp.label.clone(),
                    agg: s.agg,
                    metric: s.metric.v,
                    over_series: None,
                });
                series.push(sp);
            }
            Proj::AggSeries(a, s) => {
                let sp = series_plan(s)?;
                cols.push(ColSpec {
                    label: format!("{}({})", a.name(), sp.label),
                    agg: *a,
                    metric: s.metric.v,
                    over_series: Some(series.len()),
                });
                series.push(sp);
            }
        }
    }
    let _ = want_count_col; // the count column is always present

    // resolution: divides every series bucket and the during window; else ~24 buckets
    let divides = |r: u32| {
        series.iter().all(|s| s.bucket_s % r == 0)
            && during.is_none_or(|(a, b)| a % r == 0 && b % r == 0)
            && at_bucket.is_none()
    };
    let res = if at_bucket.is_some() {
        finest
    } else if !series.is_empty() || during.is_some() {
        cands
            .iter()
            .rev()
            .copied()
            .find(|r| divides(*r))
            .unwrap_or(finest)
    } else {
        cands
            .iter()
            .rev()
            .copied()
            .find(|r| i64::from(*r) * 24 <= span_s)
            .unwrap_or(finest)
    };
    let r = i64::from(res);
    let (from_a, to_a) = match at_bucket {
        Some(t) => {
            let b = t.div_euclid(r) * r;
            (b, b + r)
        }
        None => (from.div_euclid(r) * r, to),
    };
    let range_secs = (to_a - from_a).max(1);

    // entity kind and grouping
    let mut group: Vec<Dim> = Vec::new();
    for g in &q.group {
        group.push(prop_dim(g.v, g.span)?);
    }
    if group.len() > 4 {
        return Err(QueryError::plan(
            q.group[4].span,
            "at most 4 group-by properties",
            None,
        ));
    }
    let kind = match entity {
        // series or aggregates without group by: one group, the whole filtered traffic
        Entity::Flows if group.is_empty() && series.is_empty() && cols.is_empty() => {
            Kind::FlowListing
        }
        Entity::Flows => Kind::Grouped,
        Entity::Vms => Kind::Vms,
        Entity::SwitchPorts => Kind::SwitchPorts,
        Entity::Hosts | Entity::Subnets | Entity::L2Networks | Entity::Countries => {
            Kind::EntityGroup
        }
    };
    if kind != Kind::Grouped && kind != Kind::FlowListing && !q.group.is_empty() {
        return Err(QueryError::plan(
            q.group[0].span,
            &format!("group by applies to flows, not to {}", entity.name()),
            Some(format!(
                "try: flows group by ... (or list {})",
                entity.name()
            )),
        ));
    }
    if kind == Kind::EntityGroup {
        group.push(Dim::Ep(
            End::Either,
            match entity {
                Entity::Hosts => EndAttr::Host,
                Entity::Subnets => EndAttr::Subnet,
                Entity::L2Networks => EndAttr::L2Network,
                _ => EndAttr::Country,
            },
        ));
    }
    if kind == Kind::Vms {
        group.push(Dim::Ep(End::Either, EndAttr::Vm));
    }
    // projected properties
    let mut listing_props = Vec::new();
    for (p, span) in &prop_projs {
        match kind {
            Kind::FlowListing => listing_props.push(prop_dim(*p, *span)?),
            Kind::Grouped => {
                let d = prop_dim(*p, *span)?;
                if !group.contains(&d) {
                    return Err(QueryError::plan(
                        *span,
                        &format!("{} is neither grouped by nor aggregated", p.name()),
                        Some(format!("add it to group by, or use list({})", p.name())),
                    ));
                }
            }
            _ => {}
        }
    }
    // entity-specific standard columns
    let std_cols: Vec<(Agg, Metric)> = match kind {
        Kind::Vms | Kind::EntityGroup | Kind::SwitchPorts => vec![
            (Agg::Sum, Metric::NetworkRate),
            (Agg::Sum, Metric::TotalTraffic),
        ],
        _ => vec![],
    };
    for (a, m) in std_cols {
        if !cols
            .iter()
            .any(|c| c.metric == m && c.agg == a && c.over_series.is_none())
        {
            cols.push(ColSpec {
                label: if m == Metric::NetworkRate || m == Metric::TotalTraffic {
                    m.name().to_string()
                } else {
                    format!("{}({})", a.name(), m.name())
                },
                agg: a,
                metric: m,
                over_series: None,
            });
        }
    }
    // order
    let find_col = |a: Agg, m: Metric, cols: &mut Vec<ColSpec>| -> usize {
        if let Some(i) = cols
            .iter()
            .position(|c| c.agg == a && c.metric == m && c.over_series.is_none())
        {
            return i;
        }
        if let Some(i) = cols
            .iter()
            .position(|c| c.metric == m && c.over_series.is_none())
        {
            return i;
        }
        cols.push(ColSpec {
            label: format!("{}({})", a.name(), m.name()),
            agg: a,
            metric: m,
            over_series: None,
        });
        cols.len() - 1
    };
    let (order, desc) = if let Some(by) = &q.top_by {
        (OrderBy::Col(find_col(Agg::Sum, by.v, &mut cols)), true)
    } else {
        match &q.order {
            Some(o) => {
                let ob = match &o.key.v {
                    OrderKey::Count => OrderBy::Count,
                    OrderKey::Agg(a, m) => OrderBy::Col(find_col(*a, *m, &mut cols)),
                    OrderKey::Metric(Metric::FlowCount) => OrderBy::Count,
                    OrderKey::Metric(m) => OrderBy::Col(find_col(Agg::Sum, *m, &mut cols)),
                    OrderKey::Prop(p) => {
                        let d = prop_dim(*p, o.key.span)?;
                        match group.iter().position(|g| *g == d) {
                            Some(i) => OrderBy::Key(i),
                            None if kind == Kind::FlowListing => {
                                OrderBy::Col(find_col(Agg::Sum, Metric::TotalTraffic, &mut cols))
                            }
                            None => {
                                return Err(QueryError::plan(
                                    o.key.span,
                                    &format!(
                                        "order by {}: it is not a group-by property",
                                        p.name()
                                    ),
                                    None,
                                ));
                            }
                        }
                    }
                };
                (ob, o.desc)
            }
            None => match kind {
                Kind::FlowListing => (
                    OrderBy::Col(find_col(Agg::Sum, Metric::TotalTraffic, &mut cols)),
                    true,
                ),
                Kind::Vms | Kind::EntityGroup | Kind::SwitchPorts => (
                    OrderBy::Col(find_col(Agg::Sum, Metric::NetworkRate, &mut cols)),
                    true,
                ),
                _ => match cols.first() {
                    Some(_) => (OrderBy::Col(0), true),
                    None => (OrderBy::Count, true),
                },
            },
        }
    };
    let limit = q
        .top
        .as_ref()
        .map(|t| t.v as usize)
        .or(q.limit.as_ref().map(|l| l.v as usize))
        .unwrap_or(ctx.cfg.default_limit)
        .min(100_000);
    if limit == 0 {
        return Err(QueryError::plan(
            q.limit.as_ref().map_or(Span::default(), |l| l.span),
            "limit 0 returns nothing",
            None,
        ));
    }
    let filter = q
        .filter
        .as_ref()
        .map(|c| compile(c, ctx, entity))
        .transpose()?;
    let wants_per_flow = cols.iter().any(|c| {
        matches!(c.agg, Agg::Min | Agg::Max)
            && c.over_series.is_none()
            && c.metric != Metric::MaxNetworkRate
    });
    let wants_peak = cols.iter().any(|c| c.metric == Metric::MaxNetworkRate);
    Ok(Plan {
        canonical: q.to_string(),
        entity,
        kind,
        from: from_a,
        to: to_a,
        range_secs,
        res,
        during,
        tz,
        filter,
        group,
        cols,
        series,
        list_props,
        order,
        desc,
        limit,
        listing_props,
        wants_per_flow,
        wants_peak,
    })
}
