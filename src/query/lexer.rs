//! Tokens with spans.

use super::QueryError;

/// Byte range in the query text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A bare word: identifiers, IPs, CIDRs, times ("21:00-06:30"), hyphenated values.
    Word(String),
    /// An integer.
    Int(u64),
    /// A quoted string ('x' or "x").
    Str(String),
    LParen,
    RParen,
    Comma,
    /// = == != <> > >= < <=
    Op(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

impl Token {
    /// The word in lower case, if the token is a word.
    pub fn word(&self) -> Option<String> {
        match &self.tok {
            Tok::Word(w) => Some(w.to_ascii_lowercase()),
            _ => None,
        }
    }
    pub fn is_word(&self, w: &str) -> bool {
        matches!(&self.tok, Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }
}

fn word_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(
            c,
            '-' | '_' | '.' | ':' | '/' | '*' | '%' | '?' | '+' | '@' | '#'
        )
}

/// Splits a query into tokens. Limits: 4096 bytes, 512 tokens.
pub fn lex(src: &str) -> Result<Vec<Token>, QueryError> {
    if src.len() > 4096 {
        return Err(QueryError::at(
            Span::new(4096, src.len()),
            "the query is longer than 4096 characters",
            None,
        ));
    }
    let mut out = Vec::new();
    let mut it = src.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        let single = |t: Tok, it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
            it.next();
            Token {
                tok: t,
                span: Span::new(i, i + c.len_utf8()),
            }
        };
        let tok = match c {
            '(' => single(Tok::LParen, &mut it),
            ')' => single(Tok::RParen, &mut it),
            ',' => single(Tok::Comma, &mut it),
            '\'' | '"' | '‘' | '’' | '“' | '”' => {
                let close: &[char] = match c {
                    '\'' | '‘' | '’' => &['\'', '’', '‘'],
                    _ => &['"', '”', '“'],
                };
                it.next();
                let mut s = String::new();
                let mut end = None;
                for (j, ch) in it.by_ref() {
                    if close.contains(&ch) {
                        end = Some(j + ch.len_utf8());
                        break;
                    }
                    s.push(ch);
                }
                let Some(end) = end else {
                    return Err(QueryError::at(
                        Span::new(i, src.len()),
                        "this quote is never closed",
                        Some(format!("add a closing {c}")),
                    ));
                };
                Token {
                    tok: Tok::Str(s),
                    span: Span::new(i, end),
                }
            }
            '=' | '!' | '<' | '>' => {
                it.next();
                let next = it.peek().map(|x| x.1);
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => ("==", 2),
                    ('=', _) => ("=", 1),
                    ('!', Some('=')) => ("!=", 2),
                    ('<', Some('>')) => ("!=", 2),
                    ('<', Some('=')) => ("<=", 2),
                    ('<', _) => ("<", 1),
                    ('>', Some('=')) => (">=", 2),
                    ('>', _) => (">", 1),
                    _ => {
                        return Err(QueryError::at(
                            Span::new(i, i + 1),
                            "unexpected '!'",
                            Some("use != for \"not equal\"".into()),
                        ));
                    }
                };
                if len == 2 {
                    it.next();
                }
                Token {
                    tok: Tok::Op(op),
                    span: Span::new(i, i + len),
                }
            }
            c if word_char(c) => {
                let mut end = i;
                while let Some(&(j, ch)) = it.peek() {
                    if !word_char(ch) {
                        break;
                    }
                    end = j + ch.len_utf8();
                    it.next();
                }
                let w = &src[i..end];
                let tok = if w.bytes().all(|b| b.is_ascii_digit()) {
                    match w.parse::<u64>() {
                        Ok(n) => Tok::Int(n),
                        Err(_) => Tok::Word(w.to_string()),
                    }
                } else {
                    Tok::Word(w.to_string())
                };
                Token {
                    tok,
                    span: Span::new(i, end),
                }
            }
            other => {
                return Err(QueryError::at(
                    Span::new(i, i + other.len_utf8()),
                    &format!("unexpected character '{other}'"),
                    None,
                ));
            }
        };
        out.push(tok);
        if out.len() > 512 {
            return Err(QueryError::at(
                Span::new(i, src.len()),
                "the query has more than 512 tokens",
                None,
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn tokens() {
        assert_eq!(
            toks("series(sum(bytes rate)) of flows"),
            vec![
                Tok::Word("series".into()),
                Tok::LParen,
                Tok::Word("sum".into()),
                Tok::LParen,
                Tok::Word("bytes".into()),
                Tok::Word("rate".into()),
                Tok::RParen,
                Tok::RParen,
                Tok::Word("of".into()),
                Tok::Word("flows".into())
            ]
        );
        assert_eq!(
            toks("port in (22, '23') and ip = 10.0.0.0/8 during 21:00-06:30 x!=y"),
            vec![
                Tok::Word("port".into()),
                Tok::Word("in".into()),
                Tok::LParen,
                Tok::Int(22),
                Tok::Comma,
                Tok::Str("23".into()),
                Tok::RParen,
                Tok::Word("and".into()),
                Tok::Word("ip".into()),
                Tok::Op("="),
                Tok::Word("10.0.0.0/8".into()),
                Tok::Word("during".into()),
                Tok::Word("21:00-06:30".into()),
                Tok::Word("x".into()),
                Tok::Op("!="),
                Tok::Word("y".into()),
            ]
        );
        let t = lex("a = 'x y'").unwrap();
        assert_eq!(t[2].span, Span::new(4, 9));
    }

    #[test]
    fn errors() {
        assert!(
            lex("a = 'open")
                .unwrap_err()
                .message
                .contains("never closed")
        );
        assert!(
            lex("a ; b")
                .unwrap_err()
                .message
                .contains("unexpected character ';'")
        );
    }
}
