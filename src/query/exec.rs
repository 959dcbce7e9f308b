//! Plan -> result over the window store. No parsing, no I/O.
//!
//! Chunks are scanned in parallel; per chunk, endpoint-level predicates and group keys
//! are computed once per endpoint of the chunk's endpoint table, then rows are checked
//! and accumulated. Distinct flows are counted exactly (a set of flow-key hashes per
//! group).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::{Value as J, json};

use super::ast::{Agg, CmpOp};
use super::catalog::{End, EndAttr, Metric};
use super::planner::{ColSpec, Dim, Filter, Kind, Leaf, OrderBy, Plan, Test, protocol_name};
use super::{Column, Context, QueryError, QueryResult, Series, Stats, TimeRangeOut};
use crate::enrich::{Endpoint, classify, countries};
use crate::model::{ExporterId, ip_to_u128, u128_to_ip};
use crate::rollup::chunk::{Chunk, ObsPoint, Row};
use crate::sym::{self, Sym};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyVal {
    Null,
    Num(u64),
    Ip(u128),
    Sym(Sym),
    Country(u16),
    Continent(u8),
    Subnet(u128, u8, Sym),
    Tag(u32),
    Traffic(u8),
    Exporter(u128, u32),
    Iface(u128, u32, u32),
}

/// A group key: up to 4 group-by values (a listing uses source, destination and
/// port/protocol).
type Key = [KeyVal; 4];

const CONTINENT_CODES: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

fn sym_text(s: Sym) -> Arc<str> {
    sym::resolve(s)
}

/// Glob match, case-insensitive (pattern already lower case): % or * any run, _ or ?
/// one character.
pub fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && (p[pi] == '%' || p[pi] == '*') {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && (p[pi] == '%' || p[pi] == '*') {
        pi += 1;
    }
    pi == p.len()
}

fn cmp_num(op: CmpOp, a: u64, b: u64) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
    }
}

fn cmp_u128(op: CmpOp, a: u128, b: u128) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
    }
}

fn in_net(ip: IpAddr, nets: &[ipnetwork::IpNetwork]) -> bool {
    let ip = crate::model::canonical_ip(ip);
    nets.iter().any(|n| n.contains(ip))
}

fn test_text(t: &Test, s: &str) -> bool {
    match t {
        Test::Text(v) => !s.is_empty() && v.iter().any(|x| x.eq_ignore_ascii_case(s)),
        Test::Like(p) => !s.is_empty() && like(p, s),
        Test::IsSet => !s.is_empty(),
        _ => false,
    }
}

fn test_num(t: &Test, n: u64, set: bool) -> bool {
    match t {
        Test::Num(v) => set && v.contains(&n),
        Test::NumCmp(op, x) => set && cmp_num(*op, n, *x),
        Test::Like(p) => set && like(p, &n.to_string()),
        Test::Text(v) => set && v.iter().any(|x| x == &n.to_string()),
        Test::IsSet => set,
        _ => false,
    }
}

/// Tests one end of a flow.
pub fn test_endpoint(attr: EndAttr, t: &Test, e: &Endpoint) -> bool {
    match attr {
        EndAttr::Ip => match t {
            Test::Ip(nets) => in_net(e.ip, nets),
            Test::IpCmp(op, x) => cmp_u128(*op, ip_to_u128(e.ip), *x),
            Test::Like(p) => like(p, &e.ip.to_string()),
            Test::Text(v) => v.iter().any(|x| x == &e.ip.to_string()),
            Test::IsSet => true,
            _ => false,
        },
        EndAttr::Vm => test_text(t, &sym_text(e.vm)),
        EndAttr::Host => test_text(t, &sym_text(e.host)),
        EndAttr::Cluster => test_text(t, &sym_text(e.cluster)),
        EndAttr::L2Network => test_text(t, &sym_text(e.l2)),
        EndAttr::Vlan => test_num(t, u64::from(e.vlan), e.vlan != 0),
        EndAttr::As => test_num(t, u64::from(e.asn), e.asn != 0),
        EndAttr::Country => match t {
            Test::Country(v) => v.contains(&e.country),
            Test::Like(p) => {
                e.country != 0
                    && (like(p, countries::name(e.country).unwrap_or(""))
                        || like(p, &countries::unpack(e.country).unwrap_or_default()))
            }
            Test::IsSet => e.country != 0,
            _ => false,
        },
        EndAttr::Continent => {
            let c = countries::continent_code(e.country);
            match t {
                Test::Continent(v) => c.is_some_and(|c| v.iter().any(|x| x == c)),
                Test::Like(p) => c
                    .and_then(countries::continent_name)
                    .is_some_and(|n| like(p, n)),
                Test::IsSet => c.is_some(),
                _ => false,
            }
        }
        EndAttr::Subnet => {
            let net = e.subnet();
            match t {
                Test::Subnet(nets, names) => {
                    nets.iter().any(|n| {
                        *n == net
                            || (n.prefix() > net.prefix() && n.contains(e.ip))
                            || (n.prefix() <= net.prefix() && n.contains(net.network()))
                    }) || (e.subnet_name.is_some()
                        && names
                            .iter()
                            .any(|x| x.eq_ignore_ascii_case(&sym_text(e.subnet_name))))
                        || names.iter().any(|x| x == &net.to_string())
                }
                Test::Like(p) => {
                    like(p, &net.to_string())
                        || (e.subnet_name.is_some() && like(p, &sym_text(e.subnet_name)))
                }
                Test::IsSet => true,
                _ => false,
            }
        }
    }
}

/// A leaf evaluated per endpoint or per observation point of a chunk.
enum PreLeaf {
    Ep(End, usize),
    Obs(usize),
}

/// The filter with leaves numbered: endpoint leaves and observation leaves are
/// precomputed per chunk.
enum XF {
    And(Vec<XF>),
    Or(Vec<XF>),
    Not(Box<XF>),
    Pre(PreLeaf),
    Row(Leaf),
    True,
}

struct Compiled {
    f: XF,
    ep_leaves: Vec<(EndAttr, Test)>,
    obs_leaves: Vec<Leaf>,
}

fn compile_exec(f: &Filter, c: &mut Compiled) -> XF {
    match f {
        Filter::And(v) => XF::And(v.iter().map(|x| compile_exec(x, c)).collect()),
        Filter::Or(v) => XF::Or(v.iter().map(|x| compile_exec(x, c)).collect()),
        Filter::Not(x) => XF::Not(Box::new(compile_exec(x, c))),
        Filter::Leaf(Leaf::Ep(end, attr, t)) => {
            c.ep_leaves.push((*attr, t.clone()));
            XF::Pre(PreLeaf::Ep(*end, c.ep_leaves.len() - 1))
        }
        Filter::Leaf(l @ (Leaf::Exporter(_) | Leaf::InIf(_) | Leaf::OutIf(_))) => {
            c.obs_leaves.push(l.clone());
            XF::Pre(PreLeaf::Obs(c.obs_leaves.len() - 1))
        }
        Filter::Leaf(l) => XF::Row(l.clone()),
    }
}

/// Names of switches and interfaces (inventory first, then what exporters announced).
struct Names<'a> {
    ctx: &'a Context,
    tables: arc_swap::Guard<Arc<crate::enrich::Tables>>,
}

impl Names<'_> {
    fn switch(&self, e: ExporterId) -> String {
        match self.tables.interface(e.ip, 0).0 {
            Some(s) => sym_text(s).to_string(),
            None => e.ip.to_string(),
        }
    }
    fn interface(&self, e: ExporterId, ifindex: u32) -> String {
        if let Some(s) = self.tables.interface(e.ip, ifindex).1 {
            return sym_text(s).to_string();
        }
        if let Some(n) = (self.ctx.learned_ifnames)(e, ifindex) {
            return n;
        }
        format!("ifIndex {ifindex}")
    }
}

fn test_obs(l: &Leaf, o: &ObsPoint, names: &Names<'_>) -> bool {
    let iface = |t: &Test, idx: u32| -> bool {
        if idx == 0 {
            return false;
        }
        let name = names.interface(o.exporter, idx);
        match t {
            Test::Num(v) => v.contains(&u64::from(idx)),
            Test::NumCmp(op, x) => cmp_num(*op, u64::from(idx), *x),
            Test::Text(v) => v
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&name) || x == &idx.to_string()),
            Test::Like(p) => like(p, &name),
            Test::IsSet => true,
            _ => false,
        }
    };
    match l {
        Leaf::Exporter(t) => match t {
            Test::Ip(nets) => in_net(o.exporter.ip, nets),
            Test::Text(v) => {
                let sw = names.switch(o.exporter);
                v.iter().any(|x| x.eq_ignore_ascii_case(&sw))
            }
            Test::Like(p) => {
                like(p, &names.switch(o.exporter)) || like(p, &o.exporter.ip.to_string())
            }
            Test::IsSet => true,
            _ => false,
        },
        Leaf::InIf(t) => iface(t, o.in_if),
        Leaf::OutIf(t) => iface(t, o.out_if),
        _ => false,
    }
}

fn test_row(l: &Leaf, r: &Row) -> bool {
    match l {
        Leaf::Port(t) => test_num(t, u64::from(r.port), true),
        Leaf::Proto(t) => match t {
            Test::Like(p) => like(p, &protocol_name(r.proto)),
            t => test_num(t, u64::from(r.proto), true),
        },
        Leaf::Tags(bits) => r.tags & bits != 0,
        Leaf::TrafficType(names) => names.contains(&classify::traffic_type(r.tags)),
        Leaf::App(t) => {
            let name = classify::application(r.port).unwrap_or("");
            test_text(t, name)
        }
        Leaf::Rule(t) => test_num(t, u64::from(r.rule), r.rule != 0),
        _ => false,
    }
}

struct ChunkCtx<'a> {
    ep_masks: &'a [Vec<bool>],
    obs_masks: &'a [Vec<bool>],
}

fn eval(f: &XF, r: &Row, cc: &ChunkCtx<'_>) -> bool {
    match f {
        XF::True => true,
        XF::And(v) => v.iter().all(|x| eval(x, r, cc)),
        XF::Or(v) => v.iter().any(|x| eval(x, r, cc)),
        XF::Not(x) => !eval(x, r, cc),
        XF::Pre(PreLeaf::Ep(end, i)) => {
            let m = &cc.ep_masks[*i];
            let s = m.get(r.src as usize).copied().unwrap_or(false);
            let d = m.get(r.dst as usize).copied().unwrap_or(false);
            match end {
                End::Source => s,
                End::Destination => d,
                End::Either => s || d,
            }
        }
        XF::Pre(PreLeaf::Obs(i)) => cc.obs_masks[*i]
            .get(r.obs as usize)
            .copied()
            .unwrap_or(false),
        XF::Row(l) => test_row(l, r),
    }
}

fn ep_key(attr: EndAttr, e: &Endpoint) -> KeyVal {
    // unset (NONE symbol, 0) -> Null: one group, shown as "Unknown"
    let sym = |s: Sym| {
        if s.is_some() {
            KeyVal::Sym(s)
        } else {
            KeyVal::Null
        }
    };
    let num = |n: u64| if n != 0 { KeyVal::Num(n) } else { KeyVal::Null };
    match attr {
        EndAttr::Ip => KeyVal::Ip(ip_to_u128(e.ip)),
        EndAttr::Vm => sym(e.vm),
        EndAttr::Host => sym(e.host),
        EndAttr::Cluster => sym(e.cluster),
        EndAttr::L2Network => sym(e.l2),
        EndAttr::Vlan => num(u64::from(e.vlan)),
        EndAttr::As => num(u64::from(e.asn)),
        EndAttr::Country => {
            if e.country != 0 {
                KeyVal::Country(e.country)
            } else {
                KeyVal::Null
            }
        }
        EndAttr::Continent => match countries::continent_code(e.country)
            .and_then(|c| CONTINENT_CODES.iter().position(|x| *x == c))
        {
            Some(i) => KeyVal::Continent(i as u8),
            None => KeyVal::Null,
        },
        EndAttr::Subnet => {
            let n = e.subnet();
            KeyVal::Subnet(ip_to_u128(n.network()), n.prefix(), e.subnet_name)
        }
    }
}

/// Values kept per time bucket, sparse: (bucket index, value), sorted by index with no
/// duplicates. A scan appends in time order, so adding is O(1); merging two is linear.
#[derive(Default, Clone, Debug)]
struct Sparse<T>(Vec<(u32, T)>);

trait Combine: Default {
    fn combine(&mut self, o: Self);
}
impl Combine for [u64; 4] {
    fn combine(&mut self, o: Self) {
        for i in 0..4 {
            self[i] = self[i].saturating_add(o[i]);
        }
    }
}
impl Combine for u64 {
    fn combine(&mut self, o: Self) {
        *self = self.saturating_add(o);
    }
}
impl Combine for FxHashSet<u64> {
    fn combine(&mut self, o: Self) {
        if self.len() < o.len() {
            let mut big = o;
            big.extend(self.drain());
            *self = big;
        } else {
            self.extend(o);
        }
    }
}

impl<T: Combine> Sparse<T> {
    #[inline]
    fn at(&mut self, idx: u32) -> &mut T {
        // one branch: the last entry is the bucket being scanned (chunks are in time
        // order); an out-of-order index falls back to a search
        let n = self.0.len();
        if n > 0 && self.0[n - 1].0 == idx {
            return &mut self.0[n - 1].1;
        }
        if n == 0 || self.0[n - 1].0 < idx {
            self.0.push((idx, T::default()));
            let n = self.0.len();
            return &mut self.0[n - 1].1;
        }
        let p = match self.0.binary_search_by_key(&idx, |e| e.0) {
            Ok(p) => p,
            Err(p) => {
                self.0.insert(p, (idx, T::default()));
                p
            }
        };
        &mut self.0[p].1
    }
    fn get(&self, idx: u32) -> Option<&T> {
        self.0
            .binary_search_by_key(&idx, |e| e.0)
            .ok()
            .map(|p| &self.0[p].1)
    }
    fn merge(&mut self, o: Self) {
        if o.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            *self = o;
            return;
        }
        let a = std::mem::take(&mut self.0);
        let mut out = Vec::with_capacity(a.len() + o.0.len());
        let mut ai = a.into_iter().peekable();
        let mut bi = o.0.into_iter().peekable();
        loop {
            let take_a = match (ai.peek(), bi.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(x), Some(y)) => {
                    if x.0 == y.0 {
                        if let (Some(mut x), Some(y)) = (ai.next(), bi.next()) {
                            x.1.combine(y.1);
                            out.push(x);
                        }
                        continue;
                    }
                    x.0 < y.0
                }
            };
            let next = if take_a { ai.next() } else { bi.next() };
            if let Some(e) = next {
                out.push(e);
            }
        }
        self.0 = out;
    }
}

/// Accumulated traffic of one group (or one flow in a listing).
#[derive(Default)]
struct Acc {
    /// distinct flows (key hashes)
    flows: FxHashSet<u64>,
    src_bytes: u64,
    dst_bytes: u64,
    packets: u64,
    sessions: u64,
    first: i64,
    last: i64,
    /// per series (only the first series of each bucket size holds data, see
    /// `series_slot`): per bucket [src bytes, dst bytes, packets, sessions]
    series: Vec<Sparse<[u64; 4]>>,
    /// per series bucket distinct flows (only for flow-count / average series)
    series_flows: Vec<Sparse<FxHashSet<u64>>>,
    /// bytes per stored bucket (Max Network Rate)
    peak: Sparse<u64>,
    per_flow: FxHashMap<u64, [u64; 4]>,
    lists: Vec<FxHashSet<KeyVal>>,
    // listings
    src: Option<Endpoint>,
    dst: Option<Endpoint>,
    tags: u32,
    port: u16,
    proto: u8,
    obs: Option<ObsPoint>,
    rule: u32,
    // switch ports
    in_bytes: u64,
    out_bytes: u64,
}

/// The series index whose storage series `si` shares (series of one bucket size
/// accumulate the same counters).
fn series_slot(plan: &Plan, si: usize) -> usize {
    let b = plan.series.get(si).map_or(0, |s| s.bucket_s);
    plan.series
        .iter()
        .position(|s| s.bucket_s == b)
        .unwrap_or(si)
}

impl Acc {
    fn bytes(&self) -> u64 {
        self.src_bytes + self.dst_bytes + self.in_bytes + self.out_bytes
    }
    fn merge(&mut self, o: Acc) {
        self.flows.combine(o.flows);
        self.src_bytes = self.src_bytes.saturating_add(o.src_bytes);
        self.dst_bytes = self.dst_bytes.saturating_add(o.dst_bytes);
        self.packets = self.packets.saturating_add(o.packets);
        self.sessions = self.sessions.saturating_add(o.sessions);
        self.in_bytes = self.in_bytes.saturating_add(o.in_bytes);
        self.out_bytes = self.out_bytes.saturating_add(o.out_bytes);
        self.first = if self.first == 0 {
            o.first
        } else if o.first == 0 {
            self.first
        } else {
            self.first.min(o.first)
        };
        self.last = self.last.max(o.last);
        if self.series.len() < o.series.len() {
            self.series.resize_with(o.series.len(), Sparse::default);
        }
        for (a, b) in self.series.iter_mut().zip(o.series) {
            a.merge(b);
        }
        if self.series_flows.len() < o.series_flows.len() {
            self.series_flows
                .resize_with(o.series_flows.len(), Sparse::default);
        }
        for (a, b) in self.series_flows.iter_mut().zip(o.series_flows) {
            a.merge(b);
        }
        self.peak.merge(o.peak);
        for (k, v) in o.per_flow {
            self.per_flow.entry(k).or_default().combine(v);
        }
        if self.lists.len() < o.lists.len() {
            self.lists.resize_with(o.lists.len(), FxHashSet::default);
        }
        for (a, b) in self.lists.iter_mut().zip(o.lists) {
            if a.len() < 100 {
                a.extend(b);
            }
        }
        if self.src.is_none() {
            self.src = o.src;
            self.dst = o.dst;
            self.port = o.port;
            self.proto = o.proto;
            self.obs = o.obs;
        }
        self.tags |= o.tags;
        if o.rule != 0 {
            self.rule = o.rule;
        }
    }
}

fn flow_hash(s: u128, d: u128, port: u16, proto: u8) -> u64 {
    crate::model::hash64(&(s, d, port, proto))
}

struct Scan<'a> {
    plan: &'a Plan,
    compiled: &'a Compiled,
    names: &'a Names<'a>,
    /// per series: whether it owns its storage (first of its bucket size) and whether
    /// that storage counts distinct flows
    series_owner: Vec<bool>,
    series_needs_flows: Vec<bool>,
}

fn in_during(plan: &Plan, start: i64) -> bool {
    let Some((a, b)) = plan.during else {
        return true;
    };
    let Ok(ts) = jiff::Timestamp::from_second(start) else {
        return false;
    };
    let z = ts.to_zoned(plan.tz.clone());
    let sod = (z.hour() as u32) * 3600 + (z.minute() as u32) * 60 + z.second() as u32;
    if a < b {
        sod >= a && sod < b
    } else {
        sod >= a || sod < b
    }
}

/// Buffers of one scanning thread, reused from chunk to chunk.
#[derive(Default)]
struct Bufs {
    ep_masks: Vec<Vec<bool>>,
    obs_masks: Vec<Vec<bool>>,
    ep_ip: Vec<u128>,
    dim_keys: Vec<Vec<KeyVal>>,
    /// group of each endpoint of the chunk (single endpoint-dimension grouping)
    ep_group: Vec<u32>,
    /// per endpoint leaf: result for each name symbol seen
    sym_memo: Vec<FxHashMap<Sym, bool>>,
}

/// Up to 18 values of one dimension for one row (flow types are multi-valued).
struct Vals {
    n: usize,
    v: [KeyVal; 18],
}

impl Vals {
    fn new() -> Self {
        Self {
            n: 0,
            v: [KeyVal::Null; 18],
        }
    }
    #[inline]
    fn push(&mut self, k: KeyVal) {
        if self.n < self.v.len() {
            self.v[self.n] = k;
            self.n += 1;
        }
    }
    fn as_slice(&self) -> &[KeyVal] {
        &self.v[..self.n]
    }
}

/// A thread's groups and the rows it scanned.
type ScanOut = (FxHashMap<Key, Acc>, u64);

/// Groups being built by one thread: key -> index into `accs`.
struct Groups {
    index: FxHashMap<Key, u32>,
    accs: Vec<Acc>,
}

impl Scan<'_> {
    fn new_acc(&self) -> Acc {
        Acc {
            series: self.plan.series.iter().map(|_| Sparse::default()).collect(),
            series_flows: self.plan.series.iter().map(|_| Sparse::default()).collect(),
            lists: self
                .plan
                .list_props
                .iter()
                .map(|_| FxHashSet::default())
                .collect(),
            ..Default::default()
        }
    }

    #[inline]
    fn group(&self, g: &mut Groups, k: &Key, max_groups: usize) -> Result<u32, QueryError> {
        if let Some(i) = g.index.get(k) {
            return Ok(*i);
        }
        if g.accs.len() >= max_groups {
            return Err(QueryError::limit(
                &format!("the query builds more than {max_groups} groups"),
                Some(
                    "group by fewer or coarser properties, filter more, or raise query.max_groups"
                        .into(),
                ),
            ));
        }
        let i = g.accs.len() as u32;
        g.accs.push(self.new_acc());
        g.index.insert(*k, i);
        Ok(i)
    }

    /// Adds row `r` of chunk `c` to `a`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn add(
        &self,
        a: &mut Acc,
        r: &Row,
        c: &Chunk,
        fh: u64,
        series_idx: &[u32],
        peak_idx: u32,
        listing: bool,
    ) {
        let plan = self.plan;
        if !listing {
            a.flows.insert(fh);
        }
        a.src_bytes = a.src_bytes.saturating_add(r.src_bytes);
        a.dst_bytes = a.dst_bytes.saturating_add(r.dst_bytes);
        a.packets = a.packets.saturating_add(r.packets);
        a.sessions = a.sessions.saturating_add(u64::from(r.sessions));
        let f = c.start + i64::from(r.first);
        let l = c.start + i64::from(r.last);
        a.first = if a.first == 0 { f } else { a.first.min(f) };
        a.last = a.last.max(l);
        for (si, owner) in self.series_owner.iter().enumerate() {
            if !*owner {
                continue;
            }
            if let Some(s) = a.series.get_mut(si) {
                s.at(series_idx[si]).combine([
                    r.src_bytes,
                    r.dst_bytes,
                    r.packets,
                    u64::from(r.sessions),
                ]);
            }
            if self.series_needs_flows[si]
                && let Some(s) = a.series_flows.get_mut(si)
            {
                s.at(series_idx[si]).insert(fh);
            }
        }
        if plan.wants_peak {
            let peak = a.peak.at(peak_idx);
            *peak = peak.saturating_add(r.bytes());
        }
        if plan.wants_per_flow {
            a.per_flow.entry(fh).or_default().combine([
                r.src_bytes,
                r.dst_bytes,
                r.packets,
                u64::from(r.sessions),
            ]);
        }
        for (li, (_, d)) in plan.list_props.iter().enumerate() {
            if a.lists[li].len() >= 100 {
                continue;
            }
            let v = match d {
                Dim::Ep(End::Destination, at) => {
                    c.endpoints.get(r.dst as usize).map(|e| ep_key(*at, e))
                }
                Dim::Ep(_, at) => c.endpoints.get(r.src as usize).map(|e| ep_key(*at, e)),
                Dim::Port | Dim::Application => Some(KeyVal::Num(u64::from(r.port))),
                Dim::Proto => Some(KeyVal::Num(u64::from(r.proto))),
                _ => None,
            };
            if let Some(v) = v {
                a.lists[li].insert(v);
            }
        }
        if listing || a.src.is_none() {
            if a.src.is_none() {
                a.src = c.endpoints.get(r.src as usize).copied();
                a.dst = c.endpoints.get(r.dst as usize).copied();
                a.port = r.port;
                a.proto = r.proto;
                a.obs = c.obs.get(r.obs as usize).copied();
            }
            a.tags |= r.tags;
            if r.rule != 0 {
                a.rule = r.rule;
            }
        }
    }

    /// The values of group dimension `d` for row `r`.
    fn dim_vals(&self, d: &Dim, dk: Option<&Vec<KeyVal>>, r: &Row, c: &Chunk, out: &mut Vals) {
        let plan = self.plan;
        let vm_only = plan.kind == Kind::Vms;
        let entity_group = plan.kind == Kind::EntityGroup;
        out.n = 0;
        match d {
            Dim::Ep(end, _) => {
                let Some(dk) = dk else { return };
                let s = dk.get(r.src as usize).copied().unwrap_or(KeyVal::Null);
                let dd = dk.get(r.dst as usize).copied().unwrap_or(KeyVal::Null);
                match end {
                    End::Source => out.push(s),
                    End::Destination => out.push(dd),
                    End::Either => {
                        let skip_null = vm_only || entity_group;
                        if !(skip_null && s == KeyVal::Null) {
                            out.push(s);
                        }
                        if dd != s && !(skip_null && dd == KeyVal::Null) {
                            out.push(dd);
                        }
                    }
                }
            }
            Dim::Port | Dim::Application => out.push(KeyVal::Num(u64::from(r.port))),
            Dim::Proto => out.push(KeyVal::Num(u64::from(r.proto))),
            Dim::FlowType => {
                for t in classify::TAGS {
                    if r.tags & t.0 != 0 {
                        out.push(KeyVal::Tag(t.0));
                    }
                }
            }
            Dim::TrafficType => out.push(KeyVal::Traffic(match classify::traffic_type(r.tags) {
                "Internet" => 1,
                "East-West" => 0,
                _ => 2,
            })),
            Dim::FirewallRule => out.push(if r.rule != 0 {
                KeyVal::Num(u64::from(r.rule))
            } else {
                KeyVal::Null
            }),
            Dim::Exporter | Dim::InIf | Dim::OutIf => {
                let Some(o) = c.obs.get(r.obs as usize) else {
                    return;
                };
                let ip = ip_to_u128(o.exporter.ip);
                out.push(match d {
                    Dim::Exporter => KeyVal::Exporter(ip, o.exporter.domain),
                    Dim::InIf if o.in_if != 0 => KeyVal::Iface(ip, o.exporter.domain, o.in_if),
                    Dim::OutIf if o.out_if != 0 => KeyVal::Iface(ip, o.exporter.domain, o.out_if),
                    _ => KeyVal::Null,
                });
            }
        }
    }

    /// Scans chunks (in time order) into groups. Returns (map, rows scanned).
    fn run(
        &self,
        chunks: &[&Arc<Chunk>],
        deadline: Instant,
        max_groups: usize,
    ) -> Result<ScanOut, QueryError> {
        let plan = self.plan;
        let mut g = Groups {
            index: FxHashMap::default(),
            accs: Vec::new(),
        };
        let mut b = Bufs::default();
        let mut scanned = 0u64;
        let listing = plan.kind == Kind::FlowListing;
        // grouping by one end's attribute: each endpoint of a chunk resolves its group
        // once
        let cached_end = match plan.group.as_slice() {
            [Dim::Ep(e @ (End::Source | End::Destination), _)] if !listing => Some(*e),
            _ => None,
        };
        // grouping by port or protocol alone: the value indexes the group directly
        let by_port = matches!(plan.group.as_slice(), [Dim::Port | Dim::Application]) && !listing;
        let by_proto = matches!(plan.group.as_slice(), [Dim::Proto]) && !listing;
        let mut val_group: Vec<u32> = if by_port || by_proto {
            vec![u32::MAX; 65_536]
        } else {
            Vec::new()
        };
        let mut vals: [Vals; 4] = [Vals::new(), Vals::new(), Vals::new(), Vals::new()];
        let mut series_idx: Vec<u32> = vec![0; plan.series.len()];
        for c in chunks {
            if Instant::now() > deadline {
                return Err(QueryError::limit(
                    "the query ran longer than its time limit",
                    Some("narrow the time range or the filter, or raise query.timeout_ms".into()),
                ));
            }
            scanned += c.rows.len() as u64;
            b.ep_masks
                .resize_with(self.compiled.ep_leaves.len(), Vec::new);
            b.sym_memo
                .resize_with(self.compiled.ep_leaves.len(), FxHashMap::default);
            for ((m, memo), (attr, t)) in b
                .ep_masks
                .iter_mut()
                .zip(b.sym_memo.iter_mut())
                .zip(&self.compiled.ep_leaves)
            {
                m.clear();
                // name attributes: one test per distinct name, not per endpoint
                let sym_of = |e: &Endpoint| match attr {
                    EndAttr::Vm => Some(e.vm),
                    EndAttr::Host => Some(e.host),
                    EndAttr::Cluster => Some(e.cluster),
                    EndAttr::L2Network => Some(e.l2),
                    _ => None,
                };
                m.extend(c.endpoints.iter().map(|e| match sym_of(e) {
                    Some(sy) => *memo.entry(sy).or_insert_with(|| test_endpoint(*attr, t, e)),
                    None => test_endpoint(*attr, t, e),
                }));
            }
            b.obs_masks
                .resize_with(self.compiled.obs_leaves.len(), Vec::new);
            for (m, l) in b.obs_masks.iter_mut().zip(&self.compiled.obs_leaves) {
                m.clear();
                m.extend(c.obs.iter().map(|o| test_obs(l, o, self.names)));
            }
            b.ep_ip.clear();
            b.ep_ip.extend(c.endpoints.iter().map(|e| ip_to_u128(e.ip)));
            b.dim_keys.resize_with(plan.group.len(), Vec::new);
            for (dk, d) in b.dim_keys.iter_mut().zip(&plan.group) {
                dk.clear();
                if cached_end.is_some() {
                    // computed on first use per endpoint, below
                    continue;
                }
                if let Dim::Ep(_, a) = d {
                    dk.extend(c.endpoints.iter().map(|e| ep_key(*a, e)));
                }
            }
            if cached_end.is_some() {
                b.ep_group.clear();
                b.ep_group.resize(c.endpoints.len(), u32::MAX);
            }
            let cc = ChunkCtx {
                ep_masks: &b.ep_masks,
                obs_masks: &b.obs_masks,
            };
            let offset = c.start - plan.from;
            for (si, s) in plan.series.iter().enumerate() {
                series_idx[si] = (offset / i64::from(s.bucket_s)).max(0) as u32;
            }
            let peak_idx = (offset / i64::from(plan.res)).max(0) as u32;
            for r in &c.rows {
                if !eval(&self.compiled.f, r, &cc) {
                    continue;
                }
                let (Some(&sh), Some(&dh)) =
                    (b.ep_ip.get(r.src as usize), b.ep_ip.get(r.dst as usize))
                else {
                    continue;
                };
                let fh = flow_hash(sh, dh, r.port, r.proto);
                // one group for the row, found directly where the key allows it
                let single: Option<u32> = if listing {
                    let k = [
                        KeyVal::Ip(sh),
                        KeyVal::Ip(dh),
                        KeyVal::Num((u64::from(r.port) << 8) | u64::from(r.proto)),
                        KeyVal::Null,
                    ];
                    Some(self.group(&mut g, &k, max_groups)?)
                } else if by_port || by_proto {
                    // grouping by port or protocol alone: the value indexes the group
                    let v = if by_port { r.port } else { u16::from(r.proto) };
                    match val_group[usize::from(v)] {
                        u32::MAX => {
                            let k = [
                                KeyVal::Num(u64::from(v)),
                                KeyVal::Null,
                                KeyVal::Null,
                                KeyVal::Null,
                            ];
                            let gi = self.group(&mut g, &k, max_groups)?;
                            val_group[usize::from(v)] = gi;
                            Some(gi)
                        }
                        gi => Some(gi),
                    }
                } else if let Some(end) = cached_end {
                    // grouping by one end's attribute: resolved once per chunk endpoint
                    let ei = if end == End::Source { r.src } else { r.dst } as usize;
                    match b.ep_group.get(ei).copied() {
                        Some(gi) if gi != u32::MAX => Some(gi),
                        Some(_) => {
                            let kv = match (plan.group.first(), c.endpoints.get(ei)) {
                                (Some(Dim::Ep(_, at)), Some(e)) => ep_key(*at, e),
                                _ => KeyVal::Null,
                            };
                            let k = [kv, KeyVal::Null, KeyVal::Null, KeyVal::Null];
                            let gi = self.group(&mut g, &k, max_groups)?;
                            b.ep_group[ei] = gi;
                            Some(gi)
                        }
                        None => continue,
                    }
                } else {
                    None
                };
                if let Some(gi) = single {
                    self.add(
                        &mut g.accs[gi as usize],
                        r,
                        c,
                        fh,
                        &series_idx,
                        peak_idx,
                        listing,
                    );
                    continue;
                }
                // general case: the cartesian product of every dimension's values
                let nd = plan.group.len();
                let mut empty = false;
                for (di, (d, v)) in plan.group.iter().zip(vals.iter_mut()).enumerate() {
                    self.dim_vals(d, b.dim_keys.get(di), r, c, v);
                    if v.n == 0 {
                        empty = true;
                        break;
                    }
                }
                if empty {
                    continue;
                }
                let mut pos = [0usize; 4];
                loop {
                    let mut k = [KeyVal::Null; 4];
                    for di in 0..nd {
                        k[di] = vals[di].as_slice()[pos[di]];
                    }
                    let gi = self.group(&mut g, &k, max_groups)?;
                    self.add(
                        &mut g.accs[gi as usize],
                        r,
                        c,
                        fh,
                        &series_idx,
                        peak_idx,
                        false,
                    );
                    // odometer
                    let mut di = 0;
                    loop {
                        if di == nd {
                            break;
                        }
                        pos[di] += 1;
                        if pos[di] < vals[di].n {
                            break;
                        }
                        pos[di] = 0;
                        di += 1;
                    }
                    if di == nd {
                        break;
                    }
                }
            }
        }
        let mut out: FxHashMap<Key, Acc> = FxHashMap::default();
        out.reserve(g.index.len());
        let mut accs: Vec<Option<Acc>> = g.accs.into_iter().map(Some).collect();
        for (k, i) in g.index {
            if let Some(a) = accs.get_mut(i as usize).and_then(Option::take) {
                out.insert(k, a);
            }
        }
        Ok((out, scanned))
    }
}

fn rfc3339(s: i64) -> String {
    jiff::Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn key_json(d: Dim, k: KeyVal, names: &Names<'_>) -> J {
    match k {
        KeyVal::Null => J::Null,
        KeyVal::Num(n) => match d {
            Dim::Proto => J::String(protocol_name(n as u8)),
            Dim::Application => match classify::application(n as u16) {
                Some(a) => J::String(a.into()),
                None => J::String(format!("port {n}")),
            },
            _ => json!(n),
        },
        KeyVal::Ip(v) => J::String(u128_to_ip(v).to_string()),
        KeyVal::Sym(s) => J::String(sym_text(s).to_string()),
        KeyVal::Country(c) => J::String(
            countries::name(c)
                .map(str::to_string)
                .or_else(|| countries::unpack(c))
                .unwrap_or_default(),
        ),
        KeyVal::Continent(i) => J::String(
            CONTINENT_CODES
                .get(i as usize)
                .and_then(|c| countries::continent_name(c))
                .unwrap_or("")
                .to_string(),
        ),
        KeyVal::Subnet(net, len, name) => {
            let n = ipnetwork::IpNetwork::new(u128_to_ip(net), len)
                .map(|n| n.to_string())
                .unwrap_or_default();
            if name.is_some() {
                J::String(format!("{n} ({})", sym_text(name)))
            } else {
                J::String(n)
            }
        }
        KeyVal::Tag(b) => J::String(
            classify::tag_names(b)
                .first()
                .copied()
                .unwrap_or("")
                .to_string(),
        ),
        KeyVal::Traffic(t) => J::String(
            ["East-West", "Internet", "Other"]
                .get(t as usize)
                .copied()
                .unwrap_or("Other")
                .to_string(),
        ),
        KeyVal::Exporter(ip, dom) => J::String(names.switch(ExporterId::new(u128_to_ip(ip), dom))),
        KeyVal::Iface(ip, dom, idx) => {
            let e = ExporterId::new(u128_to_ip(ip), dom);
            J::String(format!("{} {}", names.switch(e), names.interface(e, idx)))
        }
    }
}

fn metric_value(m: Metric, a: &Acc, plan: &Plan, flows: u64) -> f64 {
    let range = plan.range_secs as f64;
    match m {
        Metric::TotalTraffic => a.bytes() as f64,
        Metric::SourceBytes => a.src_bytes as f64,
        Metric::DestinationBytes => a.dst_bytes as f64,
        Metric::Packets => a.packets as f64,
        Metric::Sessions => a.sessions as f64,
        Metric::BytesRate | Metric::NetworkRate => 8.0 * a.bytes() as f64 / range,
        Metric::PacketRate => a.packets as f64 / range,
        Metric::FlowCount => flows as f64,
        Metric::MaxNetworkRate => {
            a.peak.0.iter().map(|e| e.1).max().unwrap_or(0) as f64 * 8.0 / f64::from(plan.res)
        }
    }
}

fn per_flow_value(m: Metric, v: &[u64; 4], plan: &Plan) -> f64 {
    let range = plan.range_secs as f64;
    match m {
        Metric::TotalTraffic => (v[0] + v[1]) as f64,
        Metric::SourceBytes => v[0] as f64,
        Metric::DestinationBytes => v[1] as f64,
        Metric::Packets => v[2] as f64,
        Metric::Sessions => v[3] as f64,
        Metric::BytesRate | Metric::NetworkRate | Metric::MaxNetworkRate => {
            8.0 * (v[0] + v[1]) as f64 / range
        }
        Metric::PacketRate => v[2] as f64 / range,
        Metric::FlowCount => 1.0,
    }
}

fn series_points(
    s: &super::planner::SeriesPlan,
    si: usize,
    a: &Acc,
    plan: &Plan,
) -> Vec<(i64, f64)> {
    let b = f64::from(s.bucket_s);
    let slot = series_slot(plan, si);
    let Some(buckets) = a.series.get(slot) else {
        return Vec::new();
    };
    let flows = a.series_flows.get(slot);
    let n = ((plan.to - plan.from + i64::from(s.bucket_s) - 1) / i64::from(s.bucket_s)).max(1);
    (0..n)
        .map(|i| {
            let v = buckets.get(i as u32).copied().unwrap_or([0; 4]);
            let nflows = flows.and_then(|f| f.get(i as u32)).map_or(0, |f| f.len()) as f64;
            let bytes = (v[0] + v[1]) as f64;
            let sum = match s.metric {
                Metric::TotalTraffic => bytes,
                Metric::SourceBytes => v[0] as f64,
                Metric::DestinationBytes => v[1] as f64,
                Metric::Packets => v[2] as f64,
                Metric::Sessions => v[3] as f64,
                Metric::BytesRate | Metric::NetworkRate | Metric::MaxNetworkRate => 8.0 * bytes / b,
                Metric::PacketRate => v[2] as f64 / b,
                Metric::FlowCount => nflows,
            };
            let val = match s.agg {
                Agg::Avg if s.metric != Metric::FlowCount => {
                    if nflows > 0.0 {
                        sum / nflows
                    } else {
                        0.0
                    }
                }
                _ => sum,
            };
            (plan.from + i * i64::from(s.bucket_s), val)
        })
        .collect()
}

fn col_value(c: &ColSpec, a: &Acc, plan: &Plan, flows: u64) -> f64 {
    if let Some(si) = c.over_series {
        let Some(s) = plan.series.get(si) else {
            return 0.0;
        };
        let pts = series_points(s, si, a, plan);
        let vals = pts.iter().map(|p| p.1);
        return match c.agg {
            Agg::Max => vals.fold(0.0, f64::max),
            Agg::Min => vals.fold(f64::INFINITY, f64::min).clamp(0.0, f64::MAX),
            Agg::Sum => vals.sum(),
            Agg::Avg => {
                let n = pts.len().max(1) as f64;
                vals.sum::<f64>() / n
            }
        };
    }
    match c.agg {
        Agg::Sum => metric_value(c.metric, a, plan, flows),
        Agg::Avg => {
            if flows == 0 {
                0.0
            } else {
                metric_value(c.metric, a, plan, flows) / flows as f64
            }
        }
        Agg::Min | Agg::Max if c.metric == Metric::MaxNetworkRate => {
            metric_value(c.metric, a, plan, flows)
        }
        Agg::Min => a
            .per_flow
            .values()
            .map(|v| per_flow_value(c.metric, v, plan))
            .fold(f64::INFINITY, f64::min)
            .min(f64::MAX),
        Agg::Max => a
            .per_flow
            .values()
            .map(|v| per_flow_value(c.metric, v, plan))
            .fold(0.0, f64::max),
    }
}

fn num(v: f64) -> J {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!((v * 1000.0).round() / 1000.0)
    }
}

/// The aggregates an entity listing shows besides its own Network Rate column; their
/// columns are appended to `columns`.
fn extra_columns<'p>(plan: &'p Plan, columns: &mut Vec<Column>) -> Vec<&'p ColSpec> {
    let extra: Vec<&ColSpec> = plan
        .cols
        .iter()
        .filter(|c| {
            !(c.metric == Metric::NetworkRate && c.agg == Agg::Sum && c.over_series.is_none())
        })
        .collect();
    for c in &extra {
        columns.push(Column {
            name: c.label.clone(),
            unit: col_unit(c),
        });
    }
    extra
}

fn col_unit(c: &ColSpec) -> Option<String> {
    Some(c.metric.unit().to_string())
}

/// Runs a plan.
pub fn execute(plan: &Plan, ctx: &Context, t0: Instant) -> Result<QueryResult, QueryError> {
    let view = ctx.store.view();
    let names = Names {
        ctx,
        tables: ctx.enricher.tables(),
    };
    let deadline = t0 + std::time::Duration::from_millis(ctx.cfg.timeout_ms.max(1));
    let mut chunks: Vec<&Arc<Chunk>> = view
        .chunks(plan.res, plan.from, plan.to)
        .into_iter()
        .filter(|c| in_during(plan, c.start))
        .collect();
    // time order: per-bucket accumulators append
    chunks.sort_by_key(|c| c.start);

    let (of, ob) = chunks.iter().fold((0u64, 0u64), |(f, b), c| {
        (
            f + c.overflow.flows,
            b + c.overflow.src_bytes + c.overflow.dst_bytes,
        )
    });
    let mut r = execute_chunks(plan, ctx, &chunks, &names, t0, deadline)?;
    r.stats.overflow_flows = of;
    r.stats.overflow_bytes = ob;
    Ok(r)
}

fn execute_chunks(
    plan: &Plan,
    ctx: &Context,
    chunks: &[&Arc<Chunk>],
    names: &Names<'_>,
    t0: Instant,
    deadline: Instant,
) -> Result<QueryResult, QueryError> {
    if plan.kind == Kind::SwitchPorts {
        return switch_ports(plan, ctx, chunks, names, t0);
    }

    let mut compiled = Compiled {
        f: XF::True,
        ep_leaves: vec![],
        obs_leaves: vec![],
    };
    // VM filters apply to the VMs, not to their flows
    if plan.kind != Kind::Vms
        && let Some(f) = &plan.filter
    {
        compiled.f = compile_exec(f, &mut compiled);
    }
    let series_owner: Vec<bool> = (0..plan.series.len())
        .map(|si| series_slot(plan, si) == si)
        .collect();
    let series_needs_flows: Vec<bool> = (0..plan.series.len())
        .map(|si| {
            series_owner[si]
                && plan.series.iter().enumerate().any(|(sj, s)| {
                    series_slot(plan, sj) == si
                        && (s.metric == Metric::FlowCount || s.agg == Agg::Avg)
                })
        })
        .collect();
    let scan = Scan {
        plan,
        compiled: &compiled,
        names,
        series_owner,
        series_needs_flows,
    };
    // parallel scan over contiguous parts of the chunk list
    // parallel scan over contiguous time ranges of the chunk list (measured faster than
    // partitioning by flow hash, which makes every thread read every chunk)
    let total_rows: usize = chunks.iter().map(|c| c.rows.len()).sum();
    let threads = if total_rows < 50_000 {
        1
    } else {
        ctx.cfg.threads.clamp(1, 16).min(chunks.len().max(1))
    };
    let mut parts: Vec<Vec<&Arc<Chunk>>> = vec![Vec::new(); threads];
    let mut acc_rows = 0usize;
    for c in chunks {
        let i = (acc_rows * threads / total_rows.max(1)).min(threads - 1);
        parts[i].push(c);
        acc_rows += c.rows.len();
    }
    let results: Vec<Result<ScanOut, QueryError>> = if threads > 1 {
        let scan = &scan;
        std::thread::scope(|s| {
            let hs: Vec<_> = parts
                .iter()
                .map(|p| s.spawn(move || scan.run(p, deadline, ctx.cfg.max_groups)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(QueryError::limit("a query thread failed", None)))
                })
                .collect()
        })
    } else {
        vec![scan.run(chunks, deadline, ctx.cfg.max_groups)]
    };
    let mut map: FxHashMap<Key, Acc> = FxHashMap::default();
    let mut scanned = 0;
    for r in results {
        let (m, n) = r?;
        scanned += n;
        if map.is_empty() {
            map = m;
            continue;
        }
        for (k, v) in m {
            match map.get_mut(&k) {
                Some(a) => a.merge(v),
                None => {
                    map.insert(k, v);
                }
            }
        }
    }
    if map.len() > ctx.cfg.max_groups {
        return Err(QueryError::limit(
            &format!("the query builds more than {} groups", ctx.cfg.max_groups),
            None,
        ));
    }
    match plan.kind {
        Kind::FlowListing => Ok(listing(plan, map, scanned, t0, names)),
        Kind::Vms => Ok(vms(plan, map, scanned, t0, names)),
        _ => Ok(grouped(plan, map, scanned, t0, names)),
    }
}

fn result(
    plan: &Plan,
    columns: Vec<Column>,
    rows: Vec<Vec<J>>,
    series: Vec<Series>,
    truncated: bool,
    scanned: u64,
    t0: Instant,
) -> QueryResult {
    QueryResult {
        query: plan.canonical.clone(),
        time_range: TimeRangeOut {
            start: rfc3339(plan.from),
            end: rfc3339(plan.to),
        },
        resolution_s: plan.res,
        columns,
        rows,
        series,
        truncated,
        stats: Stats {
            rows_scanned: scanned,
            took_ms: (t0.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            overflow_flows: 0,
            overflow_bytes: 0,
        },
    }
}

/// Sorts (key, order value) and cuts to the limit; returns whether it cut.
fn order_and_cut<T>(v: &mut Vec<(T, f64, Vec<J>)>, desc: bool, limit: usize) -> bool {
    v.sort_by(|a, b| {
        let o = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
        let o = if desc { o.reverse() } else { o };
        o.then_with(|| {
            a.2.iter()
                .map(|x| x.to_string())
                .cmp(b.2.iter().map(|x| x.to_string()))
        })
    });
    let cut = v.len() > limit;
    v.truncate(limit);
    cut
}

fn make_series(plan: &Plan, group: Vec<J>, a: &Acc) -> Vec<Series> {
    plan.series
        .iter()
        .enumerate()
        .map(|(si, s)| Series {
            group: group.clone(),
            metric: s.label.clone(),
            unit: s.metric.unit().to_string(),
            bucket_s: s.bucket_s,
            points: series_points(s, si, a, plan),
        })
        .collect()
}

fn grouped(
    plan: &Plan,
    map: FxHashMap<Key, Acc>,
    scanned: u64,
    t0: Instant,
    names: &Names<'_>,
) -> QueryResult {
    let mut columns: Vec<Column> = plan
        .group
        .iter()
        .map(|d| Column {
            name: d.label(),
            unit: None,
        })
        .collect();
    if plan.kind == Kind::EntityGroup
        && let Some(Dim::Ep(_, a)) = plan.group.first()
    {
        columns[0].name = a.name().to_string();
    }
    columns.push(Column {
        name: "count".into(),
        unit: Some("flows".into()),
    });
    for c in &plan.cols {
        columns.push(Column {
            name: c.label.clone(),
            unit: col_unit(c),
        });
    }
    for (_, d) in &plan.list_props {
        columns.push(Column {
            name: format!("list({})", d.label()),
            unit: None,
        });
    }
    let mut rows: Vec<(Key, f64, Vec<J>)> = map
        .iter()
        .map(|(k, a)| {
            let flows = a.flows.len() as u64;
            let keyj: Vec<J> = plan
                .group
                .iter()
                .enumerate()
                .map(|(i, d)| key_json(*d, k[i], names))
                .collect();
            let mut row = keyj.clone();
            row.push(json!(flows));
            let vals: Vec<f64> = plan
                .cols
                .iter()
                .map(|c| col_value(c, a, plan, flows))
                .collect();
            row.extend(vals.iter().map(|v| num(*v)));
            for (li, (_, d)) in plan.list_props.iter().enumerate() {
                let mut items: Vec<J> = a
                    .lists
                    .get(li)
                    .map(|s| s.iter().map(|v| key_json(*d, *v, names)).collect())
                    .unwrap_or_default();
                items.sort_by_key(|x| x.to_string());
                row.push(J::Array(items));
            }
            let ov = match plan.order {
                OrderBy::Count => flows as f64,
                OrderBy::Col(i) => vals.get(i).copied().unwrap_or(0.0),
                OrderBy::Key(_) => 0.0,
            };
            (*k, ov, row)
        })
        .collect();
    let truncated = if let OrderBy::Key(i) = plan.order {
        rows.sort_by(|a, b| {
            let o = a.2[i].to_string().cmp(&b.2[i].to_string());
            if plan.desc { o.reverse() } else { o }
        });
        let cut = rows.len() > plan.limit;
        rows.truncate(plan.limit);
        cut
    } else {
        order_and_cut(&mut rows, plan.desc, plan.limit)
    };
    let mut series = Vec::new();
    if !plan.series.is_empty() {
        for (k, _, row) in &rows {
            if let Some(a) = map.get(k) {
                series.extend(make_series(plan, row[..plan.group.len()].to_vec(), a));
            }
        }
    }
    result(
        plan,
        columns,
        rows.into_iter().map(|r| r.2).collect(),
        series,
        truncated,
        scanned,
        t0,
    )
}

fn ep_name(e: &Option<Endpoint>, f: impl Fn(&Endpoint) -> Sym) -> J {
    match e {
        Some(e) if f(e).is_some() => J::String(sym_text(f(e)).to_string()),
        _ => J::Null,
    }
}

fn listing(
    plan: &Plan,
    map: FxHashMap<Key, Acc>,
    scanned: u64,
    t0: Instant,
    names: &Names<'_>,
) -> QueryResult {
    let mut columns: Vec<Column> = [
        ("Source IP", None),
        ("Source VM", None),
        ("Destination IP", None),
        ("Destination VM", None),
        ("Port", None),
        ("Protocol", None),
        ("Flow Type", None),
        ("Total Traffic", Some("bytes")),
        ("Packets", Some("packets")),
        ("Session Count", Some("sessions")),
        ("First Seen", None),
        ("Last Seen", None),
    ]
    .iter()
    .map(|(n, u)| Column {
        name: n.to_string(),
        unit: u.map(str::to_string),
    })
    .collect();
    for d in &plan.listing_props {
        columns.push(Column {
            name: d.label(),
            unit: None,
        });
    }
    for c in &plan.cols {
        columns.push(Column {
            name: c.label.clone(),
            unit: col_unit(c),
        });
    }
    let mut rows: Vec<(Key, f64, Vec<J>)> = map
        .iter()
        .map(|(k, a)| {
            let mut row = vec![
                a.src.map_or(J::Null, |e| J::String(e.ip.to_string())),
                ep_name(&a.src, |e| e.vm),
                a.dst.map_or(J::Null, |e| J::String(e.ip.to_string())),
                ep_name(&a.dst, |e| e.vm),
                json!(a.port),
                J::String(protocol_name(a.proto)),
                J::Array(
                    classify::tag_names(a.tags)
                        .into_iter()
                        .map(|t| J::String(t.into()))
                        .collect(),
                ),
                json!(a.bytes()),
                json!(a.packets),
                json!(a.sessions),
                J::String(rfc3339(a.first)),
                J::String(rfc3339(a.last)),
            ];
            for d in &plan.listing_props {
                row.push(match d {
                    Dim::Ep(End::Destination, at) => a
                        .dst
                        .map_or(J::Null, |e| key_json(*d, ep_key(*at, &e), names)),
                    Dim::Ep(_, at) => a
                        .src
                        .map_or(J::Null, |e| key_json(*d, ep_key(*at, &e), names)),
                    Dim::Port => json!(a.port),
                    Dim::Proto => J::String(protocol_name(a.proto)),
                    Dim::Application => {
                        classify::application(a.port).map_or(J::Null, |x| J::String(x.into()))
                    }
                    Dim::FlowType => J::Array(
                        classify::tag_names(a.tags)
                            .into_iter()
                            .map(|t| J::String(t.into()))
                            .collect(),
                    ),
                    Dim::TrafficType => J::String(classify::traffic_type(a.tags).into()),
                    Dim::FirewallRule => {
                        if a.rule != 0 {
                            json!(a.rule)
                        } else {
                            J::Null
                        }
                    }
                    Dim::Exporter => a
                        .obs
                        .map_or(J::Null, |o| J::String(names.switch(o.exporter))),
                    Dim::InIf => a
                        .obs
                        .filter(|o| o.in_if != 0)
                        .map_or(J::Null, |o| J::String(names.interface(o.exporter, o.in_if))),
                    Dim::OutIf => a.obs.filter(|o| o.out_if != 0).map_or(J::Null, |o| {
                        J::String(names.interface(o.exporter, o.out_if))
                    }),
                });
            }
            let vals: Vec<f64> = plan.cols.iter().map(|c| col_value(c, a, plan, 1)).collect();
            row.extend(vals.iter().map(|v| num(*v)));
            let ov = match plan.order {
                OrderBy::Count => 1.0,
                OrderBy::Col(i) => vals.get(i).copied().unwrap_or(0.0),
                OrderBy::Key(_) => 0.0,
            };
            (*k, ov, row)
        })
        .collect();
    let truncated = order_and_cut(&mut rows, plan.desc, plan.limit);
    result(
        plan,
        columns,
        rows.into_iter().map(|r| r.2).collect(),
        Vec::new(),
        truncated,
        scanned,
        t0,
    )
}

fn vm_passes(f: &Filter, vm: &crate::enrich::VmInfo, tables: &crate::enrich::Tables) -> bool {
    match f {
        Filter::And(v) => v.iter().all(|x| vm_passes(x, vm, tables)),
        Filter::Or(v) => v.iter().any(|x| vm_passes(x, vm, tables)),
        Filter::Not(x) => !vm_passes(x, vm, tables),
        Filter::Leaf(l) => match l {
            Leaf::Ep(_, attr, t) => {
                let text = |s: Sym| sym_text(s).to_string();
                match attr {
                    EndAttr::Vm => test_text(t, &text(vm.name)),
                    EndAttr::Host => test_text(t, &text(vm.host)),
                    EndAttr::Cluster => test_text(t, &text(vm.cluster)),
                    EndAttr::L2Network => test_text(t, &text(vm.port_group)),
                    _ => vm.ips.iter().any(|ip| {
                        let e =
                            tables.endpoint(&crate::enrich::geoip::GeoTable::default(), *ip, 0, 0);
                        test_endpoint(*attr, t, &e)
                    }),
                }
            }
            Leaf::Gateway(t) => match (t, vm.gateway) {
                (Test::Ip(nets), Some(g)) => in_net(g, nets),
                (Test::IsSet, g) => g.is_some(),
                (Test::Like(p), Some(g)) => like(p, &g.to_string()),
                _ => false,
            },
            Leaf::Vcpu(t) => test_num(t, u64::from(vm.vcpu.unwrap_or(0)), vm.vcpu.is_some()),
            Leaf::Memory(t) => test_num(t, vm.memory_mb.unwrap_or(0), vm.memory_mb.is_some()),
            _ => false,
        },
    }
}

fn vms(
    plan: &Plan,
    map: FxHashMap<Key, Acc>,
    scanned: u64,
    t0: Instant,
    names: &Names<'_>,
) -> QueryResult {
    let tables = &names.tables;
    let mut columns: Vec<Column> = [
        "VM",
        "Network Rate",
        "IP Address",
        "Default Gateway",
        "Host",
        "vCPU",
        "Memory",
        "Port Group",
    ]
    .iter()
    .map(|n| Column {
        name: n.to_string(),
        unit: match *n {
            "Network Rate" => Some("bit/s".into()),
            "Memory" => Some("MB".into()),
            _ => None,
        },
    })
    .collect();
    let extra = extra_columns(plan, &mut columns);
    // every inventory VM, with its traffic (none: zero)
    let traffic: HashMap<Sym, &Acc> = map
        .iter()
        .filter_map(|(k, a)| match k[0] {
            KeyVal::Sym(s) => Some((s, a)),
            _ => None,
        })
        .collect();
    let empty = Acc::default();
    let mut rows: Vec<(Sym, f64, Vec<J>)> = tables
        .vms
        .iter()
        .filter(|vm| {
            plan.filter
                .as_ref()
                .is_none_or(|f| vm_passes(f, vm, tables))
        })
        .map(|vm| {
            let a = traffic.get(&vm.name).copied().unwrap_or(&empty);
            let flows = a.flows.len() as u64;
            let rate = 8.0 * a.bytes() as f64 / plan.range_secs as f64;
            let mut row = vec![
                J::String(sym_text(vm.name).to_string()),
                num(rate),
                J::String(
                    vm.ips
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                vm.gateway.map_or(J::Null, |g| J::String(g.to_string())),
                if vm.host.is_some() {
                    J::String(sym_text(vm.host).to_string())
                } else {
                    J::Null
                },
                vm.vcpu.map_or(J::Null, |v| json!(v)),
                vm.memory_mb.map_or(J::Null, |v| json!(v)),
                if vm.port_group.is_some() {
                    J::String(sym_text(vm.port_group).to_string())
                } else {
                    J::Null
                },
            ];
            let vals: Vec<f64> = plan
                .cols
                .iter()
                .map(|c| col_value(c, a, plan, flows))
                .collect();
            for (c, v) in plan.cols.iter().zip(&vals) {
                if extra.iter().any(|e| std::ptr::eq(*e, c)) {
                    row.push(num(*v));
                }
            }
            let ov = match plan.order {
                OrderBy::Count => flows as f64,
                OrderBy::Col(i) => vals.get(i).copied().unwrap_or(0.0),
                OrderBy::Key(_) => 0.0,
            };
            (vm.name, ov, row)
        })
        .collect();
    let truncated = order_and_cut(&mut rows, plan.desc, plan.limit);
    let mut series = Vec::new();
    for (s, _, row) in &rows {
        if let Some(a) = traffic.get(s) {
            series.extend(make_series(plan, vec![row[0].clone()], a));
        }
    }
    result(
        plan,
        columns,
        rows.into_iter().map(|r| r.2).collect(),
        series,
        truncated,
        scanned,
        t0,
    )
}

fn switch_ports(
    plan: &Plan,
    ctx: &Context,
    chunks: &[&Arc<Chunk>],
    names: &Names<'_>,
    t0: Instant,
) -> Result<QueryResult, QueryError> {
    let deadline = t0 + std::time::Duration::from_millis(ctx.cfg.timeout_ms.max(1));
    let mut map: FxHashMap<(ExporterId, u32), Acc> = FxHashMap::default();
    let mut scanned = 0u64;
    let mut passes: HashMap<(ExporterId, u32), bool> = HashMap::new();
    for c in chunks {
        if Instant::now() > deadline {
            return Err(QueryError::limit(
                "the query ran longer than its time limit",
                None,
            ));
        }
        scanned += c.ifaces.len() as u64;
        let offset = c.start - plan.from;
        for f in &c.ifaces {
            let key = (f.exporter, f.ifindex);
            let ok = *passes.entry(key).or_insert_with(|| {
                plan.filter
                    .as_ref()
                    .is_none_or(|flt| port_passes(flt, f.exporter, f.ifindex, names))
            });
            if !ok {
                continue;
            }
            let a = map.entry(key).or_insert_with(|| Acc {
                series: plan.series.iter().map(|_| Sparse::default()).collect(),
                ..Default::default()
            });
            a.in_bytes = a.in_bytes.saturating_add(f.in_bytes);
            a.out_bytes = a.out_bytes.saturating_add(f.out_bytes);
            a.packets = a
                .packets
                .saturating_add(f.in_packets)
                .saturating_add(f.out_packets);
            for (si, s) in plan.series.iter().enumerate() {
                if series_slot(plan, si) != si {
                    continue;
                }
                if let Some(sp) = a.series.get_mut(si) {
                    sp.at((offset / i64::from(s.bucket_s)).max(0) as u32)
                        .combine([
                            f.in_bytes,
                            f.out_bytes,
                            f.in_packets.saturating_add(f.out_packets),
                            0,
                        ]);
                }
            }
            if plan.wants_peak {
                let peak = a.peak.at((offset / i64::from(plan.res)).max(0) as u32);
                *peak = peak.saturating_add(f.in_bytes).saturating_add(f.out_bytes);
            }
        }
    }
    let mut columns: Vec<Column> = vec![
        Column {
            name: "Switch".into(),
            unit: None,
        },
        Column {
            name: "Interface".into(),
            unit: None,
        },
        Column {
            name: "Network Rate".into(),
            unit: Some("bit/s".into()),
        },
        Column {
            name: "Rate In".into(),
            unit: Some("bit/s".into()),
        },
        Column {
            name: "Rate Out".into(),
            unit: Some("bit/s".into()),
        },
    ];
    let extra = extra_columns(plan, &mut columns);
    let range = plan.range_secs as f64;
    let mut rows: Vec<((ExporterId, u32), f64, Vec<J>)> = map
        .iter()
        .map(|(k, a)| {
            let mut row = vec![
                J::String(names.switch(k.0)),
                J::String(names.interface(k.0, k.1)),
                num(8.0 * (a.in_bytes + a.out_bytes) as f64 / range),
                num(8.0 * a.in_bytes as f64 / range),
                num(8.0 * a.out_bytes as f64 / range),
            ];
            let vals: Vec<f64> = plan.cols.iter().map(|c| col_value(c, a, plan, 0)).collect();
            for (c, v) in plan.cols.iter().zip(&vals) {
                if extra.iter().any(|e| std::ptr::eq(*e, c)) {
                    row.push(num(*v));
                }
            }
            let ov = match plan.order {
                OrderBy::Col(i) => vals.get(i).copied().unwrap_or(0.0),
                _ => 8.0 * (a.in_bytes + a.out_bytes) as f64 / range,
            };
            (*k, ov, row)
        })
        .collect();
    let truncated = order_and_cut(&mut rows, plan.desc, plan.limit);
    let mut series = Vec::new();
    for (k, _, row) in &rows {
        if let Some(a) = map.get(k) {
            series.extend(make_series(plan, row[..2].to_vec(), a));
        }
    }
    Ok(result(
        plan,
        columns,
        rows.into_iter().map(|r| r.2).collect(),
        series,
        truncated,
        scanned,
        t0,
    ))
}

fn port_passes(f: &Filter, e: ExporterId, ifindex: u32, names: &Names<'_>) -> bool {
    match f {
        Filter::And(v) => v.iter().all(|x| port_passes(x, e, ifindex, names)),
        Filter::Or(v) => v.iter().any(|x| port_passes(x, e, ifindex, names)),
        Filter::Not(x) => !port_passes(x, e, ifindex, names),
        Filter::Leaf(Leaf::Switch(t)) => {
            let sw = names.switch(e);
            test_text(t, &sw) || matches!(t, Test::Ip(n) if in_net(e.ip, n))
        }
        Filter::Leaf(Leaf::Interface(t)) => {
            let name = names.interface(e, ifindex);
            test_text(t, &name) || matches!(t, Test::Num(v) if v.contains(&u64::from(ifindex)))
        }
        Filter::Leaf(l @ Leaf::Exporter(_)) => test_obs(
            l,
            &ObsPoint {
                exporter: e,
                in_if: 0,
                out_if: 0,
            },
            names,
        ),
        Filter::Leaf(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("web%", "web-01"));
        assert!(like("*-01", "web-01"));
        assert!(like("w_b-0?", "WEB-01"));
        assert!(!like("web", "web-01"));
        assert!(like("%", ""));
        assert!(like("%vlan%", "pg-vlan-1105"));
        assert!(!like("db%", "web-01"));
    }
}
