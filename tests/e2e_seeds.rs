//! End to end: `nagare serve` on loopback ports, with an inventory and a GeoIP
//! database, receives a generated data centre's traffic over IPFIX (ESXi hosts) and
//! NetFlow v9 (top-of-rack switches). Every seed query runs through HTTP, the CLI and
//! the Unix socket; the three answers are identical, and the HTTP answer is compared
//! with totals this test computes itself from the generated conversations, using its
//! own model of the site (which address is a VM, which subnet, which country).

mod common;
mod seeds;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::net::IpAddr;

use common::Daemon;
use ipnetwork::IpNetwork;
use nagare::generate::Emitter;
use nagare::generate::profile::{Generated, Site, Source};
use serde_json::Value as J;

// ---------------------------------------------------------------------------------
// The test's own model of the site

struct Model<'a> {
    site: &'a Site,
    vm_by_ip: HashMap<IpAddr, usize>,
}

const INTERNAL: [&str; 4] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
];

fn country_name(iso: &str) -> &'static str {
    match iso {
        "GB" => "United Kingdom",
        "US" => "United States",
        "JP" => "Japan",
        "DE" => "Germany",
        "FR" => "France",
        "NL" => "Netherlands",
        "CN" => "China",
        "RU" => "Russia",
        "BR" => "Brazil",
        "IN" => "India",
        "KR" => "South Korea",
        "SG" => "Singapore",
        "AU" => "Australia",
        "CA" => "Canada",
        "VN" => "Vietnam",
        "IR" => "Iran",
        other => panic!("no name for {other} in the test's table"),
    }
}

impl<'a> Model<'a> {
    fn new(site: &'a Site) -> Self {
        let vm_by_ip = site
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| (IpAddr::V4(v.ip), i))
            .collect();
        Self { site, vm_by_ip }
    }
    fn internal(&self, ip: IpAddr) -> bool {
        INTERNAL
            .iter()
            .any(|n| n.parse::<IpNetwork>().unwrap().contains(ip))
    }
    fn vm(&self, ip: IpAddr) -> Option<&'a nagare::generate::profile::Vm> {
        self.vm_by_ip.get(&ip).map(|i| &self.site.vms[*i])
    }
    fn country(&self, ip: IpAddr) -> J {
        for (iso, net) in &self.site.internet {
            if net.contains(ip) {
                return J::String(country_name(iso).into());
            }
        }
        J::Null
    }
    /// Subnet key as nagare shows it: configured prefixes (named ones with their
    /// name), else the /24.
    fn subnet(&self, ip: IpAddr) -> J {
        for n in &self.site.nets {
            if n.subnet.contains(ip) {
                return J::String(n.subnet.to_string());
            }
        }
        if "10.40.0.0/24".parse::<IpNetwork>().unwrap().contains(ip) {
            return J::String("10.40.0.0/24".into());
        }
        for (name, net) in &self.site.branches {
            if net.contains(ip) {
                return J::String(format!("{net} ({name})"));
            }
        }
        let IpAddr::V4(v4) = ip else {
            panic!("IPv4 only in this site")
        };
        let o = v4.octets();
        J::String(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
    }
    fn l2(&self, ip: IpAddr) -> Option<String> {
        if let Some(v) = self.vm(ip) {
            return Some(self.site.nets[v.net].name.clone());
        }
        for n in &self.site.nets {
            if n.subnet.contains(ip) {
                return Some(n.name.clone());
            }
        }
        if "10.40.0.0/24".parse::<IpNetwork>().unwrap().contains(ip) {
            return Some("servers-phys".into());
        }
        None
    }
}

/// One vRNI flow as the test computes it from the generated records.
#[derive(Debug, Default, Clone)]
struct Flow {
    src_bytes: u64,
    dst_bytes: u64,
    packets: u64,
    sessions: HashSet<u16>,
}

type FlowKey = (IpAddr, IpAddr, u16, u8);

fn client_port(g: &Generated) -> u16 {
    let r = &g.record;
    match (&r.vmware, g.reply) {
        (Some(v), false) if !v.tenant_src.is_unspecified() => v.tenant_src_port,
        (Some(v), true) if !v.tenant_src.is_unspecified() => v.tenant_dst_port,
        (_, false) => r.src_port,
        (_, true) => r.dst_port,
    }
}

fn flows_of(gen_: &[Generated], out: &mut HashMap<FlowKey, Flow>) {
    for g in gen_ {
        let f = out
            .entry((g.client, g.server, g.port, g.proto))
            .or_default();
        if g.reply {
            f.dst_bytes += g.record.bytes;
        } else {
            f.src_bytes += g.record.bytes;
        }
        f.packets += g.record.packets;
        if g.session_start {
            f.sessions.insert(client_port(g));
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Agg {
    flows: u64,
    bytes: u64,
    packets: u64,
    sessions: u64,
}

impl Agg {
    fn add(&mut self, f: &Flow) {
        self.flows += 1;
        self.bytes += f.src_bytes + f.dst_bytes;
        self.packets += f.packets;
        self.sessions += f.sessions.len() as u64;
    }
}

// ---------------------------------------------------------------------------------
// Result access

fn col(r: &J, name: &str) -> Option<usize> {
    r["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .position(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
}

fn rows(r: &J) -> &Vec<J> {
    r["rows"].as_array().expect("rows")
}

fn f64_of(v: &J) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn range_secs(r: &J) -> f64 {
    let p = |k: &str| -> i64 {
        r["time_range"][k]
            .as_str()
            .expect("time range")
            .parse::<jiff::Timestamp>()
            .expect("rfc3339")
            .as_second()
    };
    (p("end") - p("start")) as f64
}

/// Equal up to the result's rounding (numbers carry three decimals).
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= (1e-9 * a.abs().max(b.abs())).max(0.0005 + 1e-9)
}

/// Checks a group-by answer against the expected groups: every returned group's
/// values, the row count (limit 100), the order, and the series.
fn check_groups(id: &str, r: &J, exp: &HashMap<J, Agg>, order: &str) {
    let rs = rows(r);
    assert_eq!(
        rs.len(),
        exp.len().min(100),
        "{id}: groups returned vs expected ({:?})",
        exp.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        r["truncated"].as_bool(),
        Some(exp.len() > 100),
        "{id}: truncated"
    );
    let range = range_secs(r);
    let c_count = col(r, "count").expect("count column");
    let c_sess = col(r, "sum(session count)");
    let c_pk = col(r, "sum(packets)");
    let c_rate = col(r, "sum(bytes rate)");
    let mut returned = HashSet::new();
    let mut last = f64::INFINITY;
    let order_of = |a: &Agg| match order {
        "count" => a.flows as f64,
        "bytes" => a.bytes as f64,
        "sessions" => a.sessions as f64,
        _ => unreachable!(),
    };
    for row in rs {
        // group columns come first; without group by there are none
        let key = if c_count == 0 {
            J::Null
        } else {
            row[0].clone()
        };
        let e = exp
            .get(&key)
            .unwrap_or_else(|| panic!("{id}: group {key} is not expected"));
        assert_eq!(
            row[c_count].as_u64(),
            Some(e.flows),
            "{id} {key}: flow count"
        );
        if let Some(c) = c_sess {
            assert_eq!(row[c].as_u64(), Some(e.sessions), "{id} {key}: sessions");
        }
        if let Some(c) = c_pk {
            assert_eq!(row[c].as_u64(), Some(e.packets), "{id} {key}: packets");
        }
        if let Some(c) = c_rate {
            let want = 8.0 * e.bytes as f64 / range;
            assert!(
                close(f64_of(&row[c]), want),
                "{id} {key}: bytes rate {} vs {want}",
                row[c]
            );
        }
        let ov = order_of(e);
        assert!(ov <= last, "{id}: rows not in descending {order} order");
        last = ov;
        returned.insert(key);
    }
    // nothing left out ranks above what was returned
    for (k, e) in exp {
        if !returned.contains(k) {
            assert!(
                order_of(e) <= last,
                "{id}: group {k} ({}) left out",
                order_of(e)
            );
        }
    }
    // series: one per returned group and metric; their points add up to the totals
    if let Some(series) = r["series"].as_array() {
        for s in series {
            let key = s["group"]
                .as_array()
                .and_then(|g| g.first())
                .cloned()
                .unwrap_or(J::Null);
            let e = if s["group"].as_array().is_some_and(|g| g.is_empty()) {
                exp.values().next().copied().expect("one group")
            } else {
                exp[&key]
            };
            let pts: Vec<f64> = s["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| f64_of(&p[1]))
                .collect();
            let b = s["bucket_s"].as_f64().expect("bucket_s");
            let total: f64 = pts.iter().sum();
            match s["metric"].as_str().expect("metric") {
                "sum(session count)" => {
                    assert_eq!(total as u64, e.sessions, "{id} {key}: session series")
                }
                "sum(packets)" => assert_eq!(total as u64, e.packets, "{id} {key}: packet series"),
                "sum(bytes rate)" => assert!(
                    close(total * b / 8.0, e.bytes as f64),
                    "{id} {key}: bytes-rate series adds to {} bytes, expected {}",
                    total * b / 8.0,
                    e.bytes
                ),
                m => panic!("{id}: unexpected series {m}"),
            }
        }
        let metrics = series
            .iter()
            .filter(|s| s["metric"] == "sum(packets)")
            .count();
        if c_pk.is_some() {
            assert_eq!(metrics, rs.len(), "{id}: one packet series per group");
        }
    }
}

/// Checks a flow listing: each row is an expected flow with its totals, ordered by
/// Total Traffic, and nothing bigger was left out.
fn check_listing(id: &str, r: &J, exp: &HashMap<FlowKey, &Flow>) {
    let rs = rows(r);
    assert_eq!(rs.len(), exp.len().min(100), "{id}: flows returned");
    let (cs, cd, cp) = (
        col(r, "Source IP").unwrap(),
        col(r, "Destination IP").unwrap(),
        col(r, "Port").unwrap(),
    );
    let (ct, cpk, css) = (
        col(r, "Total Traffic").unwrap(),
        col(r, "Packets").unwrap(),
        col(r, "Session Count").unwrap(),
    );
    let mut last = u64::MAX;
    let mut seen = HashSet::new();
    for row in rs {
        let s: IpAddr = row[cs].as_str().unwrap().parse().unwrap();
        let d: IpAddr = row[cd].as_str().unwrap().parse().unwrap();
        let port = row[cp].as_u64().unwrap() as u16;
        let (k, f) = exp
            .iter()
            .find(|(k, _)| k.0 == s && k.1 == d && k.2 == port)
            .unwrap_or_else(|| panic!("{id}: flow {s} -> {d}:{port} not expected"));
        let bytes = f.src_bytes + f.dst_bytes;
        assert_eq!(row[ct].as_u64(), Some(bytes), "{id} {k:?}: total traffic");
        assert_eq!(row[cpk].as_u64(), Some(f.packets), "{id} {k:?}: packets");
        assert_eq!(
            row[css].as_u64(),
            Some(f.sessions.len() as u64),
            "{id} {k:?}: sessions"
        );
        assert!(bytes <= last, "{id}: not ordered by Total Traffic");
        last = bytes;
        seen.insert(*k);
    }
    for (k, f) in exp {
        if !seen.contains(k) {
            assert!(
                f.src_bytes + f.dst_bytes <= last,
                "{id}: bigger flow {k:?} left out"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// The three surfaces

fn http_query(d: &Daemon, q: &str, now: i64) -> J {
    let url = format!("http://{}/api/v1/query", d.http);
    let body = serde_json::json!({"query": q, "now": now}).to_string();
    let mut resp = ureq::post(&url)
        .header("content-type", "application/json")
        .send(body.as_bytes())
        .unwrap_or_else(|e| panic!("POST {q}: {e}"));
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

fn cli_query(d: &Daemon, q: &str, now: i64, socket: Option<&std::path::Path>) -> J {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nagare"));
    cmd.args(["query", "--format", "json", "--now", &now.to_string()]);
    match socket {
        Some(p) => cmd.arg("--socket").arg(p),
        None => cmd.args(["--server", &format!("http://{}", d.http)]),
    };
    let out = cmd.arg(q).output().expect("run nagare query");
    assert!(
        out.status.success(),
        "nagare query {q}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("CLI JSON")
}

fn socket_query(path: &std::path::Path, q: &str, now: i64) -> J {
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect socket");
    let req = serde_json::json!({"query": q, "now": now});
    s.write_all(format!("{req}\n").as_bytes()).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(&s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).expect("socket JSON")
}

fn without_timing(mut v: J) -> J {
    if let Some(s) = v.get_mut("stats").and_then(|s| s.as_object_mut()) {
        s.remove("took_ms");
    }
    v
}

// ---------------------------------------------------------------------------------

/// Start (ms) of the most recent HH:05 UTC whose 3-minute slice ended a minute ago.
fn slice_start(now_ms: i64, hour: i64) -> i64 {
    let day = 86_400_000;
    let mut t = now_ms.div_euclid(day) * day + hour * 3_600_000 + 300_000;
    while t + 240_000 > now_ms {
        t -= day;
    }
    t
}

#[test]
fn every_seed_query_answers_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (site, inv, mmdb) = common::site_files(dir.path(), 500);
    let cfg = dir.path().join("nagare.toml");
    std::fs::write(&cfg, "[query]\ntimezone = \"UTC\"\n").unwrap();
    let sock = dir.path().join("q.sock");
    let state = dir.path().join("state");
    let d = Daemon::start(
        &state,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--inventory",
            inv.to_str().unwrap(),
            "--geoip",
            mmdb.to_str().unwrap(),
            "--query-socket",
            sock.to_str().unwrap(),
        ],
    );

    // a night slice (02:05 UTC: admins and the scanner at work) and a day slice
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let night0 = slice_start(now_ms, 2);
    let day0 = slice_start(now_ms, 12);
    let night = site.generate(night0, night0 + 180_000, 1.0, 11);
    let day = site.generate(day0, day0 + 180_000, 1.0, 12);
    let to = d.udp[0];
    let mut em = Emitter::new(to, None);
    for slice in [&night, &day] {
        for chunk in slice.chunks(200) {
            em.send(chunk, now_ms).unwrap();
        }
    }
    let sent = em.records;
    assert_eq!(sent as usize, night.len() + day.len());
    assert!(
        em.source_ips.keys().any(|s| matches!(s, Source::Switch(_))),
        "v9 exporters used"
    );
    assert!(
        em.source_ips.keys().any(|s| matches!(s, Source::Host(_))),
        "IPFIX exporters used"
    );
    d.wait_metrics(60, "every record decoded and rolled up", |m| {
        common::metric_sum(m, "nagare_rollup_records_total") >= sent as f64
    });
    // visible within 5 s (the late buckets linger 2 s before they close)
    std::thread::sleep(std::time::Duration::from_secs(6));
    let m = d.metrics();
    assert_eq!(
        common::metric_sum(&m, "nagare_decode_records_total"),
        sent as f64
    );
    assert_eq!(
        common::metric_sum(&m, "nagare_listener_kernel_drops_total"),
        0.0
    );

    // expected flows
    let model = Model::new(&site);
    let mut flows: HashMap<FlowKey, Flow> = HashMap::new();
    flows_of(&night, &mut flows);
    flows_of(&day, &mut flows);
    // a query restricted to the night ("during 21:00-06:30") sees the night slice's
    // records only, also of a flow that talked by day as well
    let mut night_flows: HashMap<FlowKey, Flow> = HashMap::new();
    flows_of(&night, &mut night_flows);
    let tags_ew = |k: &FlowKey| model.internal(k.0) && model.internal(k.1);
    let src_inet = |k: &FlowKey| !model.internal(k.0);
    let dst_inet = |k: &FlowKey| !model.internal(k.1);
    let src_vm = |k: &FlowKey| model.vm(k.0).is_some();
    let phys_phys = |k: &FlowKey| tags_ew(k) && model.vm(k.0).is_none() && model.vm(k.1).is_none();
    let group_in = |flows: &HashMap<FlowKey, Flow>,
                    f: &dyn Fn(&FlowKey) -> bool,
                    key: &dyn Fn(&FlowKey) -> Option<J>| {
        let mut out: HashMap<J, Agg> = HashMap::new();
        for (k, fl) in flows {
            if f(k)
                && let Some(g) = key(k)
            {
                out.entry(g).or_default().add(fl);
            }
        }
        out
    };
    let group = |f: &dyn Fn(&FlowKey) -> bool, key: &dyn Fn(&FlowKey) -> Option<J>| {
        group_in(&flows, f, key)
    };
    let listing = |f: &dyn Fn(&FlowKey) -> bool| -> HashMap<FlowKey, &Flow> {
        flows
            .iter()
            .filter(|(k, _)| f(k))
            .map(|(k, v)| (*k, v))
            .collect()
    };
    let all = |_: &FlowKey| true;
    let remote = |k: &FlowKey| [22u16, 23, 3389].contains(&k.2);
    let in1105 = |ip: IpAddr| model.l2(ip).as_deref() == Some("vlan-1105");
    let z = |k: &FlowKey| in1105(k.0) && !in1105(k.1);

    let now_s = now_ms / 1000;
    let mut checked = 0;
    for (id, q) in seeds::SEEDS {
        let r = http_query(&d, q, now_s);
        assert!(r.get("error").is_none(), "{id}: {r}");
        // the same answer through the CLI (HTTP and socket) and the socket itself
        let base = without_timing(r.clone());
        assert_eq!(
            without_timing(cli_query(&d, q, now_s, None)),
            base,
            "{id}: CLI over HTTP"
        );
        assert_eq!(
            without_timing(cli_query(&d, q, now_s, Some(&sock))),
            base,
            "{id}: CLI over the socket"
        );
        assert_eq!(
            without_timing(socket_query(&sock, q, now_s)),
            base,
            "{id}: socket"
        );
        assert!(!rows(&r).is_empty(), "{id}: empty answer");
        match *id {
            "T1" => check_listing(id, &r, &listing(&phys_phys)),
            "T2" => check_switch_ports(&r, &site, &night, &day),
            "T3" => check_vms(&r, &site, &model, &flows),
            "S1" => check_groups(id, &r, &group(&all, &|k| Some(model.country(k.0))), "count"),
            "S2" | "S3" | "S4" => {
                let order = if *id == "S2" { "count" } else { "bytes" };
                check_groups(id, &r, &group(&all, &|k| Some(model.country(k.1))), order)
            }
            "S5" => check_groups(
                id,
                &r,
                &group(&|k| src_vm(k) && dst_inet(k), &|k| Some(model.subnet(k.0))),
                "bytes",
            ),
            "S6" => check_groups(
                id,
                &r,
                &group(
                    &|k| model.country(k.1) == J::String("United Kingdom".into()),
                    &|k| Some(model.vm(k.0).map_or(J::Null, |v| J::String(v.name.clone()))),
                ),
                "sessions",
            ),
            "S7" => check_groups(id, &r, &group(&all, &|k| Some(model.subnet(k.1))), "count"),
            "S8" => check_groups(id, &r, &group(&all, &|k| Some(model.subnet(k.0))), "count"),
            "S9" => check_groups(id, &r, &group(&all, &|k| Some(model.subnet(k.0))), "bytes"),
            "S10" => check_groups(id, &r, &group(&all, &|k| Some(J::from(k.2))), "sessions"),
            "S11" => check_groups(
                id,
                &r,
                &group(&|k| src_inet(k) && remote(k), &|k| Some(model.country(k.0))),
                "count",
            ),
            "S12" => check_groups(
                id,
                &r,
                &group(&|k| remote(k) && tags_ew(k), &|_| Some(J::Null)),
                "bytes",
            ),
            "S13" => check_listing(id, &r, &listing(&|k| remote(k) && tags_ew(k))),
            "S14" | "S14b" => {
                let exp = group_in(
                    if *id == "S14b" { &night_flows } else { &flows },
                    &|k| remote(k) && tags_ew(k),
                    &|k| Some(model.vm(k.0).map_or(J::Null, |v| J::String(v.name.clone()))),
                );
                // the audit finds the scanner: one source with an unusual number of flows
                let top = exp
                    .iter()
                    .max_by_key(|(_, a)| a.flows)
                    .map(|(k, _)| k.clone());
                assert_eq!(
                    top,
                    Some(J::String("vuln-scan-01".into())),
                    "{id}: scanner on top"
                );
                // no order by: the first aggregate (sessions) orders the groups
                check_groups(id, &r, &exp, "sessions")
            }
            "Z1" => check_listing(id, &r, &listing(&z)),
            "Z2" => check_groups(id, &r, &group(&z, &|_| Some(J::Null)), "bytes"),
            other => panic!("seed {other} has no expectation in this test"),
        }
        checked += 1;
    }
    assert_eq!(checked, seeds::SEEDS.len());
    d.terminate();
}

/// T2: switch ports by Network Rate. Each record counts for its input and its
/// output interface.
fn check_switch_ports(r: &J, site: &Site, night: &[Generated], day: &[Generated]) {
    let mut ports: HashMap<(String, String), (u64, u64)> = HashMap::new();
    let ifname = |sw: usize, i: u32| {
        if i == site.switches[sw].uplink {
            "Ethernet1/49 (uplink)".to_string()
        } else {
            format!("Ethernet1/{i}")
        }
    };
    for g in night.iter().chain(day) {
        if let Source::Switch(w) = g.source {
            let name = site.switches[w].name.clone();
            if g.record.in_if != 0 {
                ports
                    .entry((name.clone(), ifname(w, g.record.in_if)))
                    .or_default()
                    .0 += g.record.bytes;
            }
            if g.record.out_if != 0 {
                ports
                    .entry((name, ifname(w, g.record.out_if)))
                    .or_default()
                    .1 += g.record.bytes;
            }
        }
    }
    let range = range_secs(r);
    let rs = rows(r);
    assert_eq!(rs.len(), ports.len().min(20), "T2: ports returned");
    let mut rates: Vec<f64> = ports
        .values()
        .map(|(i, o)| 8.0 * (i + o) as f64 / range)
        .collect();
    rates.sort_by(|a, b| b.partial_cmp(a).unwrap());
    for (row, want) in rs.iter().zip(&rates) {
        let key = (
            row[0].as_str().unwrap().to_string(),
            row[1].as_str().unwrap().to_string(),
        );
        let (i, o) = ports
            .get(&key)
            .unwrap_or_else(|| panic!("T2: port {key:?} not expected"));
        assert!(
            close(f64_of(&row[2]), 8.0 * (i + o) as f64 / range),
            "T2 {key:?}: rate"
        );
        assert!(
            close(f64_of(&row[3]), 8.0 * *i as f64 / range),
            "T2 {key:?}: rate in"
        );
        assert!(
            close(f64_of(&row[4]), 8.0 * *o as f64 / range),
            "T2 {key:?}: rate out"
        );
        assert!(close(f64_of(&row[2]), *want), "T2: order");
    }
}

/// T3: the five VMs with the highest Network Rate (flows where the VM is either end),
/// with their inventory attributes.
fn check_vms(r: &J, site: &Site, model: &Model<'_>, flows: &HashMap<FlowKey, Flow>) {
    let mut bytes: HashMap<usize, u64> = HashMap::new();
    for (k, f) in flows {
        let b = f.src_bytes + f.dst_bytes;
        let a = model.vm_by_ip.get(&k.0).copied();
        let z = model.vm_by_ip.get(&k.1).copied();
        if let Some(a) = a {
            *bytes.entry(a).or_default() += b;
        }
        if let Some(z) = z
            && Some(z) != a
        {
            *bytes.entry(z).or_default() += b;
        }
    }
    let mut top: Vec<(usize, u64)> = bytes.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    let range = range_secs(r);
    let rs = rows(r);
    assert_eq!(rs.len(), 5, "T3: five VMs");
    let c = |n: &str| col(r, n).unwrap_or_else(|| panic!("T3: column {n}"));
    for (row, (vi, b)) in rs.iter().zip(&top) {
        let vm = &site.vms[*vi];
        assert_eq!(row[c("VM")].as_str(), Some(vm.name.as_str()), "T3: order");
        assert!(
            close(f64_of(&row[c("Network Rate")]), 8.0 * *b as f64 / range),
            "T3 {}: rate",
            vm.name
        );
        assert_eq!(
            row[c("IP Address")].as_str(),
            Some(vm.ip.to_string().as_str()),
            "T3 {}: ip",
            vm.name
        );
        let net = &site.nets[vm.net];
        assert_eq!(
            row[c("Default Gateway")].as_str(),
            Some(net.gateway.to_string().as_str())
        );
        assert_eq!(
            row[c("Host")].as_str(),
            Some(site.hosts[vm.host].name.as_str())
        );
        assert_eq!(row[c("vCPU")].as_u64(), Some(u64::from(vm.vcpu)));
        assert_eq!(row[c("Memory")].as_u64(), Some(vm.memory_mb));
        assert_eq!(row[c("Port Group")].as_str(), Some(net.name.as_str()));
    }
}
