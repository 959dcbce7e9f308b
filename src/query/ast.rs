//! The syntax tree. `Display` prints the canonical query; spans are kept for errors but
//! ignored by equality, so `parse(q.to_string()) == q` is the round-trip property.

use std::fmt;

use super::catalog::{Entity, Metric, Prop};
use super::lexer::Span;

/// A value with the span it came from (spans do not take part in equality).
#[derive(Debug, Clone, Copy)]
pub struct Sp<T> {
    pub v: T,
    pub span: Span,
}

impl<T: PartialEq> PartialEq for Sp<T> {
    fn eq(&self, o: &Self) -> bool {
        self.v == o.v
    }
}

impl<T> Sp<T> {
    pub fn new(v: T, span: Span) -> Self {
        Self { v, span }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Agg {
    Sum,
    Avg,
    Min,
    Max,
}

impl Agg {
    pub fn name(self) -> &'static str {
        match self {
            Agg::Sum => "sum",
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSpec {
    pub agg: Agg,
    pub metric: Sp<Metric>,
    /// Bucket size in seconds, when given.
    pub bucket: Option<Sp<u64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Proj {
    Prop(Sp<Prop>),
    Count,
    List(Sp<Prop>),
    Agg(Agg, Sp<Metric>),
    Series(SeriesSpec),
    /// agg(series(...)): e.g. max(series(sum(bytes rate))) is the peak bucket value.
    AggSeries(Agg, SeriesSpec),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Quoted or bare text ('vlan-1105', vlan-1105, '22', 10.0.0.0/8).
    Text(String),
    Int(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    pub fn sym(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PredOp {
    Cmp(CmpOp, Sp<Value>),
    In {
        negated: bool,
        values: Vec<Sp<Value>>,
    },
    Like {
        negated: bool,
        pattern: Sp<Value>,
    },
    IsSet {
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pred {
    pub prop: Sp<Prop>,
    pub op: PredOp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Or(Vec<Cond>),
    And(Vec<Cond>),
    Not(Box<Cond>),
    Pred(Pred),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Unit {
    pub fn seconds(self) -> i64 {
        match self {
            Unit::Minute => 60,
            Unit::Hour => 3600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Month => 30 * 86_400,
        }
    }
    pub fn name(self, n: u64) -> &'static str {
        match (self, n == 1) {
            (Unit::Minute, true) => "minute",
            (Unit::Minute, false) => "minutes",
            (Unit::Hour, true) => "hour",
            (Unit::Hour, false) => "hours",
            (Unit::Day, true) => "day",
            (Unit::Day, false) => "days",
            (Unit::Week, true) => "week",
            (Unit::Week, false) => "weeks",
            (Unit::Month, true) => "month",
            (Unit::Month, false) => "months",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TimeRange {
    Last(u64, Unit),
    Between(Sp<String>, Sp<String>),
    At(Sp<String>),
}

/// Time of day, minutes after midnight, start inclusive, end exclusive; may wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct During {
    pub start_min: u16,
    pub end_min: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderKey {
    Prop(Prop),
    Metric(Metric),
    Agg(Agg, Metric),
    Count,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub key: Sp<OrderKey>,
    pub desc: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub projections: Vec<Proj>,
    pub top: Option<Sp<u64>>,
    pub entity: Sp<Entity>,
    /// "top N <entity> by <metric>".
    pub top_by: Option<Sp<Metric>>,
    pub filter: Option<Cond>,
    pub range: Option<Sp<TimeRange>>,
    pub during: Option<Sp<During>>,
    pub group: Vec<Sp<Prop>>,
    pub order: Option<Order>,
    pub limit: Option<Sp<u64>>,
}

fn quote(s: &str) -> String {
    if s.contains('\'') {
        format!("\"{s}\"")
    } else {
        format!("'{s}'")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(&quote(s)),
            Value::Int(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for SeriesSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "series({}({})", self.agg.name(), self.metric.v.lower())?;
        if let Some(b) = &self.bucket {
            write!(f, ", {}", b.v)?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for Proj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proj::Prop(p) => f.write_str(&p.v.name()),
            Proj::Count => f.write_str("count"),
            Proj::List(p) => write!(f, "list({})", p.v.name()),
            Proj::Agg(a, m) => write!(f, "{}({})", a.name(), m.v.name()),
            Proj::Series(s) => write!(f, "{s}"),
            Proj::AggSeries(a, s) => write!(f, "{}({s})", a.name()),
        }
    }
}

impl fmt::Display for Pred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.prop.v.name();
        match &self.op {
            PredOp::Cmp(op, v) => write!(f, "{p} {} {}", op.sym(), v.v),
            PredOp::In { negated, values } => {
                let vs: Vec<String> = values.iter().map(|v| v.v.to_string()).collect();
                write!(
                    f,
                    "{p} {}in ({})",
                    if *negated { "not " } else { "" },
                    vs.join(", ")
                )
            }
            PredOp::Like { negated, pattern } => write!(
                f,
                "{p} {}like {}",
                if *negated { "not " } else { "" },
                pattern.v
            ),
            PredOp::IsSet { negated } => {
                write!(f, "{p} is {}set", if *negated { "not " } else { "" })
            }
        }
    }
}

impl Cond {
    fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, prec: u8) -> fmt::Result {
        // 0: or, 1: and, 2: not/atom
        match self {
            Cond::Or(v) => {
                if prec > 0 {
                    f.write_str("(")?;
                }
                for (i, c) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    c.fmt_prec(f, 1)?;
                }
                if prec > 0 {
                    f.write_str(")")?;
                }
                Ok(())
            }
            Cond::And(v) => {
                if prec > 1 {
                    f.write_str("(")?;
                }
                for (i, c) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    c.fmt_prec(f, 2)?;
                }
                if prec > 1 {
                    f.write_str(")")?;
                }
                Ok(())
            }
            Cond::Not(c) => {
                f.write_str("not ")?;
                c.fmt_prec(f, 2)
            }
            Cond::Pred(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_prec(f, 0)
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeRange::Last(n, u) => write!(f, "in last {n} {}", u.name(*n)),
            TimeRange::Between(a, b) => write!(f, "between {} and {}", quote(&a.v), quote(&b.v)),
            TimeRange::At(a) => write!(f, "at {}", quote(&a.v)),
        }
    }
}

impl fmt::Display for During {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "during {:02}:{:02}-{:02}:{:02}",
            self.start_min / 60,
            self.start_min % 60,
            self.end_min / 60,
            self.end_min % 60
        )
    }
}

impl fmt::Display for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderKey::Prop(p) => f.write_str(&p.name()),
            OrderKey::Metric(m) => f.write_str(m.name()),
            OrderKey::Agg(a, m) => write!(f, "{}({})", a.name(), m.name()),
            OrderKey::Count => f.write_str("count"),
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(top), Some(by)) = (&self.top, &self.top_by) {
            write!(
                f,
                "top {} {} by {}",
                top.v,
                self.entity.v.name(),
                by.v.name()
            )?;
        } else {
            if !self.projections.is_empty() {
                let ps: Vec<String> = self.projections.iter().map(|p| p.to_string()).collect();
                write!(f, "{} of ", ps.join(", "))?;
            }
            if let Some(t) = &self.top {
                write!(f, "top {} ", t.v)?;
            }
            f.write_str(self.entity.v.name())?;
        }
        if let Some(c) = &self.filter {
            write!(f, " where {c}")?;
        }
        if let Some(r) = &self.range {
            write!(f, " {}", r.v)?;
        }
        if let Some(d) = &self.during {
            write!(f, " {}", d.v)?;
        }
        if !self.group.is_empty() {
            let gs: Vec<String> = self.group.iter().map(|g| g.v.name()).collect();
            write!(f, " group by {}", gs.join(", "))?;
        }
        if let Some(o) = &self.order {
            write!(f, " order by {}", o.key.v)?;
            if !o.desc {
                f.write_str(" asc")?;
            }
        }
        if let Some(l) = &self.limit {
            write!(f, " limit {}", l.v)?;
        }
        Ok(())
    }
}
