//! The query language: every seed query parses as written and its canonical form
//! round-trips; malformed variants give positioned errors (snapshots of the rendered
//! messages, caret included).

use nagare::query::parser::parse;

mod seeds;
use seeds::SEEDS;

/// (seed, canonical form)
const CANONICAL: &[(&str, &str)] = &[
    (
        "T1",
        "flows where Flow Type = 'Physical-Physical' order by Total Traffic",
    ),
    ("T2", "top 20 switch ports by Network Rate in last 2 days"),
    ("T3", "top 5 vms by Network Rate in last 2 days"),
    ("S1", "flows group by Source Country"),
    (
        "S3",
        "series(sum(bytes rate)) of flows group by Destination Country order by sum(Total Traffic)",
    ),
    (
        "S6",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows where Destination Country = 'United Kingdom' in last 7 days group by Source VM",
    ),
    (
        "S10",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows in last 7 days group by Port order by sum(Session Count)",
    ),
    (
        "S11",
        "flows where Flow Type = 'Source is Internet' and Port in ('22', '23', '3389') group by Source Country",
    ),
    (
        "S12",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows where Port in (22, 23, 3389) and Flow Type = 'east-west'",
    ),
    (
        "S14b",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows where Port in (22, 23, 3389) and Flow Type = 'east-west' in last 7 days during 21:00-06:30 group by Source VM",
    ),
    (
        "Z2",
        "series(sum(session count)), series(sum(packets)), series(sum(bytes rate)) of flows where Source L2 Network in ('vlan-1105') and Destination L2 Network not in ('vlan-1105')",
    ),
];

#[test]
fn every_seed_parses_and_round_trips() {
    for (id, q) in SEEDS {
        let ast = parse(q).unwrap_or_else(|e| panic!("{id}: {}", e.render(q)));
        let canon = ast.to_string();
        let again =
            parse(&canon).unwrap_or_else(|e| panic!("{id} canonical: {}", e.render(&canon)));
        assert_eq!(
            again, ast,
            "{id}: the canonical form parses to the same query"
        );
        assert_eq!(
            again.to_string(),
            canon,
            "{id}: the canonical form is stable"
        );
    }
    for (id, canon) in CANONICAL {
        let q = SEEDS.iter().find(|s| s.0 == *id).map(|s| s.1).unwrap();
        assert_eq!(parse(q).unwrap().to_string(), *canon, "{id}");
    }
}

#[test]
fn other_forms_round_trip() {
    for q in [
        "count, list(Destination Port) of flows where not (VM = 'web-01' or Port > 1024) group by Source VM limit 10",
        "max(series(sum(bytes rate), 300)), avg(Total Traffic) of flows where Source IP = '10.0.0.0/8' and Destination Country is not set",
        "flows where Source VM like 'web%' and Destination VM is set between '2026-11-27 21:00' and '2026-11-28 06:30' order by Packets asc",
        "vms where Host = 'esxi-01' at '2026-11-27T21:00:00Z'",
        "top 3 countries by Total Traffic in last 1 hour",
        "Source VM, sum(Bytes) of flows group by Source VM, Destination Country order by count",
        "flows where Exporter = 'tor-a1' and Input Interface = 'Ethernet1/1' in last 30 minutes",
        "l2 networks where Flow Type = 'Routed' during 22:00-23:30",
    ] {
        let a = parse(q).unwrap_or_else(|e| panic!("{}", e.render(q)));
        let c = a.to_string();
        assert_eq!(
            parse(&c).unwrap_or_else(|e| panic!("{}", e.render(&c))),
            a,
            "{q} -> {c}"
        );
    }
}

/// (query, rendered error)
const ERRORS: &[(&str, &str)] = &[
    (
        "flows group by Source Contry",
        "error: expected a property to group by, found an unknown name
 --> line 1, column 16
  |
1 | flows group by Source Contry
  |                ^^^^^^^^^^^^^
  = hint: did you mean \"Source Country\"?
",
    ),
    (
        "flows where Destination Country = 'United Kingdom' grop by Source VM",
        "error: expected where, a time range (in last / between / at / during), group by, order by or limit; found 'grop'
 --> line 1, column 52
  |
1 | flows where Destination Country = 'United Kingdom' grop by Source VM
  |                                                    ^^^^
",
    ),
    (
        "series(sum(bytes rate) of flows",
        "error: expected ')' closing series(, found 'of'
 --> line 1, column 24
  |
1 | series(sum(bytes rate) of flows
  |                        ^^
",
    ),
    (
        "flows where port in (22, 23",
        "error: expected ')' or ',' in the list of values, the query ended
 --> line 1, column 28
  |
1 | flows where port in (22, 23
  |                            ^
",
    ),
    (
        "flows where Port = ",
        "error: expected a value, the query ended
 --> line 1, column 20
  |
1 | flows where Port = 
  |                    ^
",
    ),
    (
        "flws group by Port",
        "error: expected what to list (flows, vms, switch ports, ...), found 'flws'
 --> line 1, column 1
  |
1 | flws group by Port
  | ^^^^
  = hint: did you mean \"flows\"?
",
    ),
    (
        "flows in last 7 dyas",
        "error: expected a unit (minutes, hours, days, weeks, months), found 'dyas'
 --> line 1, column 17
  |
1 | flows in last 7 dyas
  |                 ^^^^
  = hint: did you mean \"days\"?
",
    ),
    (
        "flows where Flow Type = 'east-west' during 25:00-06:30",
        "error: expected a time-of-day window like 21:00-06:30
 --> line 1, column 44
  |
1 | flows where Flow Type = 'east-west' during 25:00-06:30
  |                                            ^^^^^^^^^^^
  = hint: HH:MM-HH:MM, start inclusive, end exclusive; it may wrap midnight
",
    ),
    (
        "flows where Destination Country = 'United Kingdom",
        "error: this quote is never closed
 --> line 1, column 35
  |
1 | flows where Destination Country = 'United Kingdom
  |                                   ^^^^^^^^^^^^^^^
  = hint: add a closing '
",
    ),
    (
        "flows group by Total Traffic",
        "error: 'Total Traffic' is a metric, a property to group by needs a property
 --> line 1, column 16
  |
1 | flows group by Total Traffic
  |                ^^^^^^^^^^^^^
",
    ),
];

#[test]
fn malformed_queries_give_positioned_errors() {
    for (q, expected) in ERRORS {
        let e = parse(q).expect_err(q);
        assert_eq!(e.render(q), *expected, "for {q}");
        assert!(e.position(q).is_some());
    }
}

/// Each parenthesis and each `not` is one level: 16 parentheses parse, as do 32; 33
/// are refused, and the message says how deep the query went and what the limit is.
#[test]
fn nesting_is_limited() {
    let nested = |n: usize| format!("flows where {}Port = 22{}", "(".repeat(n), ")".repeat(n));
    for n in [1, 16, 32] {
        parse(&nested(n)).unwrap_or_else(|e| panic!("{n} levels: {}", e.message));
    }
    for n in [33, 100] {
        let e = parse(&nested(n)).unwrap_err();
        assert_eq!(
            e.message,
            format!("the condition is nested {n} levels deep; at most 32 are allowed")
        );
    }
    let nots = |n: usize| format!("flows where {}Port = 22", "not ".repeat(n));
    parse(&nots(32)).unwrap_or_else(|e| panic!("32 nots: {}", e.message));
    let e = parse(&nots(100)).unwrap_err();
    assert_eq!(
        e.message,
        "the condition is nested 100 levels deep; at most 32 are allowed"
    );
    // a `not` and a parenthesis are one level each
    let mixed = format!(
        "flows where {}Port = 22{}",
        "not (".repeat(17),
        ")".repeat(17)
    );
    let e = parse(&mixed).unwrap_err();
    assert!(e.message.contains("nested 34 levels deep"), "{}", e.message);
}

#[test]
fn garbage_never_panics() {
    let mut x: u64 = 42;
    let alphabet: Vec<char> = "flows where group by order ( ) , = != 'x' \"y\" 22 10.0.0.0/8 series sum of top in last days during 21:00-06:30 not and or like is set ä".chars().collect();
    for _ in 0..20_000 {
        let mut s = String::new();
        for _ in 0..(x % 60) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        let _ = parse(&s);
    }
}
