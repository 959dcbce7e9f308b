//! Recursive-descent parser: tokens -> [`Query`]. Multi-word names (properties,
//! metrics, entities) are matched longest-first against the [`Lexicon`]; nesting is
//! limited so that no input can exhaust the stack.

use super::QueryError;
use super::ast::*;
use super::catalog::{self, Lexicon, Term};
use super::lexer::{Span, Tok, Token, lex};

/// Maximum nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;

struct P<'a> {
    t: Vec<Token>,
    i: usize,
    lx: &'a Lexicon,
    src_len: usize,
    depth: usize,
}

/// Words that end a property phrase or a bare value.
const KEYWORDS: &[&str] = &[
    "of", "where", "and", "or", "not", "in", "like", "is", "set", "group", "order", "by", "limit",
    "asc", "desc", "last", "between", "at", "during", "top",
];

fn is_keyword(w: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
}

pub fn parse(src: &str) -> Result<Query, QueryError> {
    let lx = lexicon();
    let t = lex(src)?;
    if t.is_empty() {
        return Err(QueryError::at(
            Span::new(0, 0),
            "the query is empty",
            Some("try: flows group by Destination Country".into()),
        ));
    }
    let mut p = P {
        t,
        i: 0,
        lx,
        src_len: src.len(),
        depth: 0,
    };
    let q = p.query()?;
    if let Some(tok) = p.peek() {
        return Err(p.unexpected(tok.clone(), "the end of the query"));
    }
    Ok(q)
}

/// The shared lexicon (built once).
pub fn lexicon() -> &'static Lexicon {
    static L: std::sync::OnceLock<Lexicon> = std::sync::OnceLock::new();
    L.get_or_init(Lexicon::new)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Int(n) => format!("{n}"),
        Tok::Str(s) => format!("'{s}'"),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::Op(o) => format!("'{o}'"),
    }
}

impl P<'_> {
    fn peek(&self) -> Option<&Token> {
        self.t.get(self.i)
    }
    fn peek_at(&self, k: usize) -> Option<&Token> {
        self.t.get(self.i + k)
    }
    fn end_span(&self) -> Span {
        Span::new(self.src_len, self.src_len)
    }
    fn next_span(&self) -> Span {
        self.peek().map_or(self.end_span(), |t| t.span)
    }
    fn at_word(&self, w: &str) -> bool {
        self.peek().is_some_and(|t| t.is_word(w))
    }
    fn eat_word(&mut self, w: &str) -> Option<Span> {
        if self.at_word(w) {
            let s = self.t[self.i].span;
            self.i += 1;
            Some(s)
        } else {
            None
        }
    }
    fn eat(&mut self, tok: &Tok) -> Option<Span> {
        match self.peek() {
            Some(t) if &t.tok == tok => {
                let s = t.span;
                self.i += 1;
                Some(s)
            }
            _ => None,
        }
    }
    fn unexpected(&self, found: Token, expected: &str) -> QueryError {
        QueryError::at(
            found.span,
            &format!("expected {expected}, found {}", describe(&found.tok)),
            None,
        )
    }
    fn expect(&mut self, tok: &Tok, what: &str) -> Result<Span, QueryError> {
        if let Some(s) = self.eat(tok) {
            return Ok(s);
        }
        Err(match self.peek().cloned() {
            Some(t) => self.unexpected(t, what),
            None => QueryError::at(
                self.end_span(),
                &format!("expected {what}, the query ended"),
                None,
            ),
        })
    }
    fn expect_word(&mut self, w: &str) -> Result<Span, QueryError> {
        if let Some(s) = self.eat_word(w) {
            return Ok(s);
        }
        Err(match self.peek().cloned() {
            Some(t) => self.unexpected(t, &format!("'{w}'")),
            None => QueryError::at(
                self.end_span(),
                &format!("expected '{w}', the query ended"),
                None,
            ),
        })
    }
    fn int(&mut self, what: &str) -> Result<Sp<u64>, QueryError> {
        match self.peek().cloned() {
            Some(Token {
                tok: Tok::Int(n),
                span,
            }) => {
                self.i += 1;
                Ok(Sp::new(n, span))
            }
            Some(t) => Err(self.unexpected(t, what)),
            None => Err(QueryError::at(
                self.end_span(),
                &format!("expected {what}, the query ended"),
                None,
            )),
        }
    }

    /// Lower-case words starting at the cursor (up to 4, stopping at non-words).
    fn words_ahead(&self) -> Vec<String> {
        let mut v = Vec::new();
        for k in 0..4 {
            match self.peek_at(k).and_then(|t| t.word()) {
                Some(w) => v.push(w),
                None => break,
            }
        }
        v
    }

    fn span_of(&self, n: usize) -> Span {
        let a = self.t[self.i].span;
        let b = self.t[self.i + n - 1].span;
        a.join(b)
    }

    /// A property or metric phrase at the cursor.
    fn term(&mut self) -> Option<Sp<Term>> {
        let ws = self.words_ahead();
        let (n, t) = self.lx.term(&ws)?;
        let span = self.span_of(n);
        self.i += n;
        Some(Sp::new(t, span))
    }

    fn unknown_name(&self, what: &str) -> QueryError {
        let Some(tok) = self.peek().cloned() else {
            return QueryError::at(
                self.end_span(),
                &format!("expected {what}, the query ended"),
                None,
            );
        };
        if tok.word().is_none() {
            return self.unexpected(tok, what);
        }
        // Suggest from 1..3 words at the cursor.
        let names = catalog::all_names();
        let mut best: Option<(usize, String, Span)> = None;
        let ws: Vec<&Token> = self.t[self.i..]
            .iter()
            .take(3)
            .take_while(|t| t.word().is_some())
            .collect();
        for n in 1..=ws.len() {
            let typed: Vec<String> = ws[..n]
                .iter()
                .filter_map(|t| match &t.tok {
                    Tok::Word(w) => Some(w.clone()),
                    _ => None,
                })
                .collect();
            let typed = typed.join(" ");
            if let Some(s) = catalog::suggest(&typed, names.iter().map(String::as_str)) {
                let d = catalog::distance(&typed, s);
                let span = ws[0].span.join(ws[n - 1].span);
                if best.as_ref().is_none_or(|b| d < b.0 || (d == b.0 && n > 0)) {
                    best = Some((d, s.to_string(), span));
                }
            }
        }
        match best {
            Some((_, s, span)) => {
                let typed = &self.t[self.i].span;
                let _ = typed;
                QueryError::at(
                    span,
                    &format!("expected {what}, found an unknown name"),
                    Some(format!("did you mean \"{s}\"?")),
                )
            }
            None => QueryError::at(
                tok.span,
                &format!("expected {what}, found {}", describe(&tok.tok)),
                Some("see docs/query-language.md for the property names".into()),
            ),
        }
    }

    fn prop(&mut self, what: &str) -> Result<Sp<catalog::Prop>, QueryError> {
        let save = self.i;
        match self.term() {
            Some(Sp {
                v: Term::Prop(p),
                span,
            }) => Ok(Sp::new(p, span)),
            Some(Sp {
                v: Term::Metric(m),
                span,
            }) => {
                self.i = save;
                Err(QueryError::at(
                    span,
                    &format!("'{}' is a metric, {what} needs a property", m.name()),
                    None,
                ))
            }
            None => Err(self.unknown_name(what)),
        }
    }

    fn metric(&mut self, what: &str) -> Result<Sp<catalog::Metric>, QueryError> {
        let ws = self.words_ahead();
        if let Some((n, m)) = self.lx.metric(&ws) {
            let span = self.span_of(n);
            self.i += n;
            return Ok(Sp::new(m, span));
        }
        if self.at_word("count") {
            let s = self.t[self.i].span;
            self.i += 1;
            return Ok(Sp::new(catalog::Metric::FlowCount, s));
        }
        Err(self.unknown_name(what))
    }

    fn agg_word(&self) -> Option<Agg> {
        let w = self.peek()?.word()?;
        let a = match w.as_str() {
            "sum" => Agg::Sum,
            "avg" | "average" => Agg::Avg,
            "min" => Agg::Min,
            "max" => Agg::Max,
            _ => return None,
        };
        // an aggregate is followed by '('
        matches!(self.peek_at(1).map(|t| &t.tok), Some(Tok::LParen)).then_some(a)
    }

    fn series_spec(&mut self) -> Result<SeriesSpec, QueryError> {
        self.expect_word("series")?;
        self.expect(&Tok::LParen, "'(' after series")?;
        let Some(agg) = self.agg_word() else {
            return Err(match self.peek().cloned() {
                Some(t) => QueryError::at(
                    t.span,
                    "expected an aggregate (sum, avg, min, max) inside series(...)",
                    Some("e.g. series(sum(bytes rate))".into()),
                ),
                None => QueryError::at(
                    self.end_span(),
                    "expected an aggregate inside series(...), the query ended",
                    None,
                ),
            });
        };
        self.i += 1;
        self.expect(&Tok::LParen, "'('")?;
        let metric = self.metric("a metric")?;
        self.expect(&Tok::RParen, "')'")?;
        let bucket = if self.eat(&Tok::Comma).is_some() {
            let b = self.int("a bucket size in seconds")?;
            if b.v < 60 || b.v > 86_400 {
                return Err(QueryError::at(
                    b.span,
                    "the series bucket must be between 60 and 86400 seconds",
                    None,
                ));
            }
            Some(b)
        } else {
            None
        };
        self.expect(&Tok::RParen, "')' closing series(")?;
        Ok(SeriesSpec {
            agg,
            metric,
            bucket,
        })
    }

    fn projection(&mut self) -> Result<Proj, QueryError> {
        if self.at_word("series") {
            return Ok(Proj::Series(self.series_spec()?));
        }
        if self.at_word("count") && !matches!(self.peek_at(1).map(|t| &t.tok), Some(Tok::LParen)) {
            self.i += 1;
            return Ok(Proj::Count);
        }
        if self.at_word("list") && matches!(self.peek_at(1).map(|t| &t.tok), Some(Tok::LParen)) {
            self.i += 2;
            let p = self.prop("a property inside list(...)")?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(Proj::List(p));
        }
        if let Some(agg) = self.agg_word() {
            self.i += 2;
            if self.at_word("series") {
                let s = self.series_spec()?;
                self.expect(&Tok::RParen, "')'")?;
                return Ok(Proj::AggSeries(agg, s));
            }
            let m = self.metric("a metric")?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(Proj::Agg(agg, m));
        }
        Ok(Proj::Prop(
            self.prop("a property, count, an aggregate or series(...)")?,
        ))
    }

    /// Whether "of" appears (projections precede it). "of" has no other use in the
    /// language, so an unbalanced projection still gets a precise error.
    fn has_of(&self) -> bool {
        self.t[self.i..].iter().any(|t| t.is_word("of"))
    }

    fn entity(&mut self) -> Result<Sp<catalog::Entity>, QueryError> {
        let ws = self.words_ahead();
        match self.lx.entity(&ws) {
            Some((n, e)) => {
                let span = self.span_of(n);
                self.i += n;
                Ok(Sp::new(e, span))
            }
            None => {
                let Some(tok) = self.peek().cloned() else {
                    return Err(QueryError::at(
                        self.end_span(),
                        "expected what to list (flows, vms, switch ports, ...), the query ended",
                        None,
                    ));
                };
                let typed = tok.word().unwrap_or_default();
                let names = [
                    "flows",
                    "vms",
                    "switch ports",
                    "hosts",
                    "subnets",
                    "l2 networks",
                    "countries",
                ];
                let hint = catalog::suggest(&typed, names).map(|s| format!("did you mean \"{s}\"?")).or(Some(
                    "queries are about flows, vms, switch ports, hosts, subnets, l2 networks or countries".into(),
                ));
                Err(QueryError::at(
                    tok.span,
                    &format!(
                        "expected what to list (flows, vms, switch ports, ...), found {}",
                        describe(&tok.tok)
                    ),
                    hint,
                ))
            }
        }
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        // "top N <entity> by <metric> [filter] [time]"
        if self.at_word("top")
            && matches!(self.peek_at(1).map(|t| &t.tok), Some(Tok::Int(_)))
            && !self.has_of()
        {
            let save = self.i;
            self.i += 1;
            let top = self.int("a number")?;
            let entity = self.entity()?;
            if self.eat_word("by").is_some() {
                let m = self.metric("a metric after 'by'")?;
                let mut q = Query {
                    projections: vec![],
                    top: Some(top),
                    entity,
                    top_by: Some(m),
                    filter: None,
                    range: None,
                    during: None,
                    group: vec![],
                    order: None,
                    limit: None,
                };
                self.clauses(&mut q)?;
                return Ok(q);
            }
            self.i = save;
        }
        let mut projections = Vec::new();
        if self.has_of() {
            loop {
                projections.push(self.projection()?);
                if self.eat(&Tok::Comma).is_none() {
                    break;
                }
            }
            self.expect_word("of")?;
        }
        let top = if self.at_word("top")
            && matches!(self.peek_at(1).map(|t| &t.tok), Some(Tok::Int(_)))
        {
            self.i += 1;
            Some(self.int("a number")?)
        } else {
            None
        };
        let entity = self.entity()?;
        let mut q = Query {
            projections,
            top,
            entity,
            top_by: None,
            filter: None,
            range: None,
            during: None,
            group: vec![],
            order: None,
            limit: None,
        };
        self.clauses(&mut q)?;
        Ok(q)
    }

    fn clauses(&mut self, q: &mut Query) -> Result<(), QueryError> {
        while let Some(tok) = self.peek().cloned() {
            let w = tok.word().unwrap_or_default();
            match w.as_str() {
                "where" => {
                    self.i += 1;
                    self.set_filter(q, tok.span)?;
                }
                "in" | "last" | "between" | "at" if self.is_time_start() => {
                    if q.range.is_some() {
                        return Err(QueryError::at(
                            tok.span,
                            "a second time range",
                            Some(
                                "use one of in last / between / at; during combines with them"
                                    .into(),
                            ),
                        ));
                    }
                    q.range = Some(self.time_range()?);
                }
                "during" => {
                    if q.during.is_some() {
                        return Err(QueryError::at(tok.span, "a second 'during' clause", None));
                    }
                    self.i += 1;
                    q.during = Some(self.during()?);
                }
                "group" => {
                    if !q.group.is_empty() {
                        return Err(QueryError::at(tok.span, "a second 'group by'", None));
                    }
                    self.i += 1;
                    self.expect_word("by")?;
                    loop {
                        q.group.push(self.prop("a property to group by")?);
                        if self.eat(&Tok::Comma).is_none() {
                            break;
                        }
                    }
                }
                "order" => {
                    if q.order.is_some() {
                        return Err(QueryError::at(tok.span, "a second 'order by'", None));
                    }
                    self.i += 1;
                    self.expect_word("by")?;
                    q.order = Some(self.order()?);
                }
                "limit" => {
                    if q.limit.is_some() {
                        return Err(QueryError::at(tok.span, "a second 'limit'", None));
                    }
                    self.i += 1;
                    q.limit = Some(self.int("a number after limit")?);
                }
                _ if q.filter.is_none() && !is_keyword(&w) && tok.word().is_some() => {
                    // "of flows Destination Country = 'X'": a filter without 'where'
                    self.set_filter(q, tok.span)?;
                }
                _ => {
                    return Err(QueryError::at(
                        tok.span,
                        &format!(
                            "expected where, a time range (in last / between / at / during), group by, order by or limit; found {}",
                            describe(&tok.tok)
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    fn set_filter(&mut self, q: &mut Query, at: Span) -> Result<(), QueryError> {
        if q.filter.is_some() {
            return Err(QueryError::at(
                at,
                "a second filter",
                Some("combine conditions with and / or".into()),
            ));
        }
        q.filter = Some(self.cond()?);
        Ok(())
    }

    fn is_time_start(&self) -> bool {
        let w = |k| self.peek_at(k).and_then(|t: &Token| t.word());
        match w(0).as_deref() {
            Some("in") => w(1).as_deref() == Some("last"),
            Some("last") => matches!(self.peek_at(1).map(|t| &t.tok), Some(Tok::Int(_))),
            Some("between") | Some("at") => true,
            _ => false,
        }
    }

    fn time_range(&mut self) -> Result<Sp<TimeRange>, QueryError> {
        let start = self.next_span();
        if self.eat_word("in").is_some() || self.at_word("last") {
            self.expect_word("last")?;
            let n = self.int("a number (in last N days)")?;
            if n.v == 0 {
                return Err(QueryError::at(
                    n.span,
                    "the time range must be at least 1",
                    None,
                ));
            }
            let Some(tok) = self.peek().cloned() else {
                return Err(QueryError::at(
                    self.end_span(),
                    "expected a unit (minutes, hours, days, weeks, months), the query ended",
                    None,
                ));
            };
            let unit = match tok.word().as_deref() {
                Some("minute" | "minutes" | "min" | "mins" | "m") => Unit::Minute,
                Some("hour" | "hours" | "h" | "hr" | "hrs") => Unit::Hour,
                Some("day" | "days" | "d") => Unit::Day,
                Some("week" | "weeks" | "w") => Unit::Week,
                Some("month" | "months") => Unit::Month,
                _ => {
                    let hint = tok
                        .word()
                        .and_then(|w| {
                            catalog::suggest(&w, ["minutes", "hours", "days", "weeks", "months"])
                        })
                        .map(|s| format!("did you mean \"{s}\"?"));
                    return Err(QueryError::at(
                        tok.span,
                        &format!(
                            "expected a unit (minutes, hours, days, weeks, months), found {}",
                            describe(&tok.tok)
                        ),
                        hint,
                    ));
                }
            };
            self.i += 1;
            if n.v.saturating_mul(unit.seconds() as u64) > 400 * 86_400 {
                return Err(QueryError::at(
                    start.join(tok.span),
                    "the time range is longer than 400 days",
                    None,
                ));
            }
            return Ok(Sp::new(TimeRange::Last(n.v, unit), start.join(tok.span)));
        }
        if self.eat_word("between").is_some() {
            let a = self.datetime()?;
            self.expect_word("and")?;
            let b = self.datetime()?;
            let span = start.join(b.span);
            return Ok(Sp::new(TimeRange::Between(a, b), span));
        }
        self.expect_word("at")?;
        let a = self.datetime()?;
        let span = start.join(a.span);
        Ok(Sp::new(TimeRange::At(a), span))
    }

    fn datetime(&mut self) -> Result<Sp<String>, QueryError> {
        match self.peek().cloned() {
            Some(Token {
                tok: Tok::Str(s),
                span,
            }) => {
                self.i += 1;
                Ok(Sp::new(s, span))
            }
            Some(Token {
                tok: Tok::Word(w),
                span,
            }) if !is_keyword(&w) => {
                self.i += 1;
                // an unquoted "2026-11-27 21:00": date word followed by time word
                if let Some(Token {
                    tok: Tok::Word(t),
                    span: s2,
                }) = self.peek().cloned()
                    && t.contains(':')
                    && !w.contains('T')
                {
                    self.i += 1;
                    return Ok(Sp::new(format!("{w} {t}"), span.join(s2)));
                }
                Ok(Sp::new(w, span))
            }
            Some(t) => Err(QueryError::at(
                t.span,
                &format!(
                    "expected a date and time like '2026-11-27 21:00', found {}",
                    describe(&t.tok)
                ),
                None,
            )),
            None => Err(QueryError::at(
                self.end_span(),
                "expected a date and time like '2026-11-27 21:00', the query ended",
                None,
            )),
        }
    }

    fn during(&mut self) -> Result<Sp<During>, QueryError> {
        let start = self.next_span();
        // "21:00-06:30" (one word), "21:00 - 06:30" (three), or quoted
        let mut text = String::new();
        let mut end = start;
        let complete = |t: &str| {
            t.split_once('-')
                .is_some_and(|(a, b)| a.contains(':') && b.contains(':'))
        };
        for _ in 0..3 {
            let piece = match self.peek().cloned() {
                Some(Token {
                    tok: Tok::Word(w) | Tok::Str(w),
                    span,
                }) => (w, span),
                _ => break,
            };
            text.push_str(&piece.0);
            end = piece.1;
            self.i += 1;
            if complete(&text) {
                break;
            }
        }
        let span = start.join(end);
        let bad = || {
            QueryError::at(
                span,
                "expected a time-of-day window like 21:00-06:30",
                Some("HH:MM-HH:MM, start inclusive, end exclusive; it may wrap midnight".into()),
            )
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let hm = |s: &str| -> Option<u16> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
        };
        let (Some(s), Some(e)) = (hm(a), hm(b)) else {
            return Err(bad());
        };
        if s == e {
            return Err(QueryError::at(
                span,
                "the time-of-day window is empty (start equals end)",
                None,
            ));
        }
        Ok(Sp::new(
            During {
                start_min: s % 1440,
                end_min: if e == 1440 { 0 } else { e },
            },
            span,
        ))
    }

    fn order(&mut self) -> Result<Order, QueryError> {
        let start = self.next_span();
        let key = if self.at_word("count")
            && !matches!(self.peek_at(1).map(|t| &t.tok), Some(Tok::LParen))
        {
            self.i += 1;
            Sp::new(OrderKey::Count, start)
        } else if let Some(agg) = self.agg_word() {
            self.i += 2;
            let m = self.metric("a metric")?;
            let end = self.expect(&Tok::RParen, "')'")?;
            Sp::new(OrderKey::Agg(agg, m.v), start.join(end))
        } else {
            match self.term() {
                Some(Sp {
                    v: Term::Prop(p),
                    span,
                }) => Sp::new(OrderKey::Prop(p), span),
                Some(Sp {
                    v: Term::Metric(m),
                    span,
                }) => Sp::new(OrderKey::Metric(m), span),
                None => {
                    return Err(
                        self.unknown_name("a metric, an aggregate or a property to order by")
                    );
                }
            }
        };
        let desc = if self.eat_word("asc").is_some() {
            false
        } else {
            self.eat_word("desc");
            true
        };
        Ok(Order { key, desc })
    }

    /// Enters one level of nesting (an opening parenthesis or a `not`).
    fn nest(&mut self, at: Span) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let depth = self.depth + self.parens_ahead();
            return Err(QueryError::at(
                at,
                &format!(
                    "the condition is nested {depth} levels deep; at most {MAX_DEPTH} are allowed"
                ),
                Some("each parenthesis and each `not` is one level".into()),
            ));
        }
        Ok(())
    }

    /// How much deeper the nesting from here goes (to tell the real depth): the
    /// `not`s and parentheses opened before the next predicate, then the parentheses.
    fn parens_ahead(&self) -> usize {
        let (mut d, mut max) = (0usize, 0usize);
        let mut prefix = true;
        for t in &self.t[self.i..] {
            match &t.tok {
                Tok::Word(w) if prefix && w.eq_ignore_ascii_case("not") => {
                    d += 1;
                    max = max.max(d);
                }
                Tok::LParen => {
                    d += 1;
                    max = max.max(d);
                }
                Tok::RParen if d == 0 => break,
                Tok::RParen => d -= 1,
                _ => prefix = false,
            }
        }
        max
    }

    fn cond(&mut self) -> Result<Cond, QueryError> {
        let mut ors = vec![self.and()?];
        while self.eat_word("or").is_some() {
            ors.push(self.and()?);
        }
        Ok(if ors.len() == 1 {
            ors.pop().unwrap_or(Cond::And(vec![]))
        } else {
            Cond::Or(ors)
        })
    }

    fn and(&mut self) -> Result<Cond, QueryError> {
        let mut ands = vec![self.not()?];
        while self.eat_word("and").is_some() {
            ands.push(self.not()?);
        }
        Ok(if ands.len() == 1 {
            ands.pop().unwrap_or(Cond::And(vec![]))
        } else {
            Cond::And(ands)
        })
    }

    fn not(&mut self) -> Result<Cond, QueryError> {
        if let Some(s) = self.eat_word("not") {
            self.nest(s)?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        if let Some(s) = self.eat(&Tok::LParen) {
            self.nest(s)?;
            let c = self.cond()?;
            self.depth -= 1;
            self.expect(&Tok::RParen, "')' closing the condition")?;
            return Ok(c);
        }
        Ok(Cond::Pred(self.pred()?))
    }

    fn value(&mut self) -> Result<Sp<Value>, QueryError> {
        match self.peek().cloned() {
            Some(Token {
                tok: Tok::Str(s),
                span,
            }) => {
                self.i += 1;
                Ok(Sp::new(Value::Text(s), span))
            }
            Some(Token {
                tok: Tok::Int(n),
                span,
            }) => {
                self.i += 1;
                Ok(Sp::new(Value::Int(n), span))
            }
            Some(Token {
                tok: Tok::Word(w),
                span,
            }) if !is_keyword(&w) => {
                self.i += 1;
                Ok(Sp::new(Value::Text(w), span))
            }
            Some(t) => Err(QueryError::at(
                t.span,
                &format!("expected a value, found {}", describe(&t.tok)),
                Some("quote values that contain spaces: 'United Kingdom'".into()),
            )),
            None => Err(QueryError::at(
                self.end_span(),
                "expected a value, the query ended",
                None,
            )),
        }
    }

    fn pred(&mut self) -> Result<Pred, QueryError> {
        let prop = self.prop("a property")?;
        let Some(tok) = self.peek().cloned() else {
            return Err(QueryError::at(
                self.end_span(),
                "expected a comparison (=, !=, in, like, is set) after the property, the query ended",
                None,
            ));
        };
        let op = match &tok.tok {
            Tok::Op(o) => {
                self.i += 1;
                let op = match *o {
                    "=" | "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    ">" => CmpOp::Gt,
                    ">=" => CmpOp::Ge,
                    "<" => CmpOp::Lt,
                    _ => CmpOp::Le,
                };
                PredOp::Cmp(op, self.value()?)
            }
            Tok::Word(w) => match w.to_ascii_lowercase().as_str() {
                "in" => {
                    self.i += 1;
                    PredOp::In {
                        negated: false,
                        values: self.value_list()?,
                    }
                }
                "like" => {
                    self.i += 1;
                    PredOp::Like {
                        negated: false,
                        pattern: self.value()?,
                    }
                }
                "is" => {
                    self.i += 1;
                    let negated = self.eat_word("not").is_some();
                    self.expect_word("set")?;
                    PredOp::IsSet { negated }
                }
                "not" => {
                    self.i += 1;
                    if self.eat_word("in").is_some() {
                        PredOp::In {
                            negated: true,
                            values: self.value_list()?,
                        }
                    } else if self.eat_word("like").is_some() {
                        PredOp::Like {
                            negated: true,
                            pattern: self.value()?,
                        }
                    } else {
                        return Err(match self.peek().cloned() {
                            Some(t) => self.unexpected(t, "'in' or 'like' after 'not'"),
                            None => QueryError::at(
                                self.end_span(),
                                "expected 'in' or 'like' after 'not', the query ended",
                                None,
                            ),
                        });
                    }
                }
                _ => {
                    return Err(QueryError::at(
                        tok.span,
                        &format!(
                            "expected a comparison (=, !=, >, <, in, like, is set) after {}, found {}",
                            prop.v.name(),
                            describe(&tok.tok)
                        ),
                        None,
                    ));
                }
            },
            _ => {
                return Err(QueryError::at(
                    tok.span,
                    &format!(
                        "expected a comparison (=, !=, >, <, in, like, is set) after {}, found {}",
                        prop.v.name(),
                        describe(&tok.tok)
                    ),
                    None,
                ));
            }
        };
        Ok(Pred { prop, op })
    }

    fn value_list(&mut self) -> Result<Vec<Sp<Value>>, QueryError> {
        self.expect(&Tok::LParen, "'(' starting the list of values")?;
        let mut v = vec![self.value()?];
        while self.eat(&Tok::Comma).is_some() {
            if v.len() >= 1000 {
                return Err(QueryError::at(
                    self.next_span(),
                    "more than 1000 values in a list",
                    None,
                ));
            }
            v.push(self.value()?);
        }
        self.expect(&Tok::RParen, "')' or ',' in the list of values")?;
        Ok(v)
    }
}
