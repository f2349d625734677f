//! A subset of Consul's `?filter=` expressions (the go-bexpr language Consul evaluates on the
//! server: `agent/consul/health_endpoint.go` and `agent/consul/catalog_endpoint.go` call
//! `bexpr.CreateFilter` on the result type and `Execute` it after the ACL filter; the index of
//! the answer is not affected). Enough for clients that narrow a service by meta or tag:
//!
//! ```text
//! expr     := or;  or := and ("or" and)*;  and := unary ("and" unary)*
//! unary    := "not" unary | "(" expr ")" | match
//! match    := selector ("==" | "!=") value
//!           | selector ["not"] "contains" value
//!           | value ["not"] "in" selector
//!           | selector "is" ["not"] "empty"
//! selector := name ("." name)*        value := "text" | `text` | bare word
//! ```
//!
//! Selectors: on health entries `Node.{ID,Node,Address,Datacenter,Meta[.k]}`,
//! `Service.{ID,Service,Address,Port,Tags,Meta[.k]}`; on catalog entries `Node`, `Address`,
//! `Datacenter`, `NodeMeta[.k]`, `ServiceID`, `ServiceName`, `ServiceAddress`, `ServicePort`,
//! `ServiceTags`, `ServiceMeta[.k]`. A map key that is missing matches nothing (`!=` matches).
//! Anything else (regex `matches`, `Checks`, index syntax) is refused with a 500 like a filter
//! Consul cannot compile (`Failed to create boolean expression evaluator: …`).

use std::collections::BTreeMap;

use crate::catalog::{HealthEntry, Node, Service};

/// A compiled filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Eq(Vec<String>, String),
    Contains(Vec<String>, String),
    Empty(Vec<String>),
}

/// The value a selector names in one entry.
pub enum Selected<'a> {
    Missing,
    Text(String),
    List(&'a [String]),
    Map(&'a BTreeMap<String, String>),
}

/// Consul's error text for an expression that does not compile.
fn compile_error(detail: impl std::fmt::Display) -> String {
    format!("Failed to create boolean expression evaluator: {detail}")
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Op(&'static str),
    Open,
    Close,
}

fn tokenize(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '=' | '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Op(if c == '=' { "==" } else { "!=" }));
                i += 2;
            }
            '"' | '`' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(compile_error("unterminated string")),
                        Some(&q) if q == c => break,
                        Some('\\') if c == '"' => {
                            text.extend(chars.get(i + 1));
                            i += 2;
                        }
                        Some(&ch) => {
                            text.push(ch);
                            i += 1;
                        }
                    }
                }
                i += 1;
                out.push(Tok::Quoted(text));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '(' | ')' | '"' | '`' | '=' | '!')
                {
                    i += 1;
                }
                if start == i {
                    return Err(compile_error(format!("unexpected {c:?}")));
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Word(x)) if x == w)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_word("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.toks.get(self.pos) == Some(&Tok::Open) {
            self.pos += 1;
            let e = self.or()?;
            if self.next() != Some(Tok::Close) {
                return Err(compile_error("missing )"));
            }
            return Ok(e);
        }
        self.matcher()
    }

    fn matcher(&mut self) -> Result<Expr, String> {
        let first = self
            .next()
            .ok_or_else(|| compile_error("unexpected end of expression"))?;
        // `value [not] in selector`
        let negated_in = self.peek_word("not")
            && matches!(self.toks.get(self.pos + 1), Some(Tok::Word(w)) if w == "in");
        if self.peek_word("in") || negated_in {
            self.pos += if negated_in { 2 } else { 1 };
            let value = value_of(first)?;
            let selector = self.selector()?;
            let e = Expr::Contains(selector, value);
            return Ok(if negated_in {
                Expr::Not(Box::new(e))
            } else {
                e
            });
        }
        let selector = match first {
            Tok::Word(w) => parse_selector(&w)?,
            other => return Err(compile_error(format!("expected a selector, got {other:?}"))),
        };
        match self.next() {
            Some(Tok::Op("==")) => Ok(Expr::Eq(selector, self.value()?)),
            Some(Tok::Op("!=")) => Ok(Expr::Not(Box::new(Expr::Eq(selector, self.value()?)))),
            Some(Tok::Word(w)) if w == "contains" => Ok(Expr::Contains(selector, self.value()?)),
            Some(Tok::Word(w)) if w == "not" && self.peek_word("contains") => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(Expr::Contains(selector, self.value()?))))
            }
            Some(Tok::Word(w)) if w == "is" => {
                let not = self.peek_word("not");
                if not {
                    self.pos += 1;
                }
                if !self.peek_word("empty") {
                    return Err(compile_error("expected `empty` after `is`"));
                }
                self.pos += 1;
                let e = Expr::Empty(selector);
                Ok(if not { Expr::Not(Box::new(e)) } else { e })
            }
            other => Err(compile_error(format!(
                "consul-double supports ==, !=, contains, in, is empty; got {other:?}"
            ))),
        }
    }

    fn selector(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Tok::Word(w)) => parse_selector(&w),
            other => Err(compile_error(format!("expected a selector, got {other:?}"))),
        }
    }

    fn value(&mut self) -> Result<String, String> {
        value_of(
            self.next()
                .ok_or_else(|| compile_error("expected a value"))?,
        )
    }
}

fn value_of(t: Tok) -> Result<String, String> {
    match t {
        Tok::Quoted(s) | Tok::Word(s) => Ok(s),
        other => Err(compile_error(format!("expected a value, got {other:?}"))),
    }
}

fn parse_selector(w: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = w.split('.').map(str::to_string).collect();
    if parts.iter().any(|p| {
        p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return Err(compile_error(format!("invalid selector {w:?}")));
    }
    Ok(parts)
}

/// Compiles `src`; `check` says whether a selector exists on the entry type.
pub fn compile(src: &str, check: impl Fn(&[String]) -> bool) -> Result<Expr, String> {
    let mut p = Parser {
        toks: tokenize(src)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(compile_error(format!(
            "unexpected {:?} after the expression",
            p.toks[p.pos]
        )));
    }
    let mut bad = None;
    visit(&e, &mut |sel| {
        if bad.is_none() && !check(sel) {
            bad = Some(sel.join("."));
        }
    });
    match bad {
        Some(sel) => Err(compile_error(format!("Selector {sel:?} is not valid"))),
        None => Ok(e),
    }
}

fn visit(e: &Expr, f: &mut impl FnMut(&[String])) {
    match e {
        Expr::Or(a, b) | Expr::And(a, b) => {
            visit(a, f);
            visit(b, f);
        }
        Expr::Not(a) => visit(a, f),
        Expr::Eq(s, _) | Expr::Contains(s, _) | Expr::Empty(s) => f(s),
    }
}

/// Evaluates `e` with `select` naming each selector's value.
pub fn matches<'a>(e: &Expr, select: &impl Fn(&[String]) -> Selected<'a>) -> bool {
    match e {
        Expr::Or(a, b) => matches(a, select) || matches(b, select),
        Expr::And(a, b) => matches(a, select) && matches(b, select),
        Expr::Not(a) => !matches(a, select),
        Expr::Eq(s, v) => match select(s) {
            Selected::Text(t) => &t == v,
            _ => false,
        },
        Expr::Contains(s, v) => match select(s) {
            Selected::Text(t) => t.contains(v.as_str()),
            Selected::List(l) => l.iter().any(|x| x == v),
            Selected::Map(m) => m.contains_key(v),
            Selected::Missing => false,
        },
        Expr::Empty(s) => match select(s) {
            Selected::Text(t) => t.is_empty(),
            Selected::List(l) => l.is_empty(),
            Selected::Map(m) => m.is_empty(),
            Selected::Missing => true,
        },
    }
}

fn map_value<'a>(m: &'a BTreeMap<String, String>, rest: &[String]) -> Selected<'a> {
    match rest {
        [] => Selected::Map(m),
        [k] => m
            .get(k)
            .map_or(Selected::Missing, |v| Selected::Text(v.clone())),
        _ => Selected::Missing,
    }
}

fn node_field<'a>(n: &'a Node, dc: &str, sel: &[String]) -> Option<Selected<'a>> {
    let text = |s: &str| Some(Selected::Text(s.to_string()));
    match sel {
        [f] if f == "ID" => text(&n.id),
        [f] if f == "Node" => text(&n.name),
        [f] if f == "Address" => text(&n.address),
        [f] if f == "Datacenter" => text(dc),
        [f, rest @ ..] if f == "Meta" && rest.len() <= 1 => Some(map_value(&n.meta, rest)),
        _ => None,
    }
}

fn service_field<'a>(s: &'a Service, sel: &[String]) -> Option<Selected<'a>> {
    let text = |v: String| Some(Selected::Text(v));
    match sel {
        [f] if f == "ID" => text(s.id.clone()),
        [f] if f == "Service" => text(s.name.clone()),
        [f] if f == "Address" => text(s.address.clone()),
        [f] if f == "Port" => text(s.port.to_string()),
        [f] if f == "Tags" => Some(Selected::List(&s.tags)),
        [f, rest @ ..] if f == "Meta" && rest.len() <= 1 => Some(map_value(&s.meta, rest)),
        _ => None,
    }
}

/// A selector's value on a `/v1/health/service` entry (`structs.CheckServiceNode`).
pub fn health_select<'a>(e: &'a HealthEntry, dc: &str, sel: &[String]) -> Option<Selected<'a>> {
    match sel {
        [first, rest @ ..] if first == "Node" => node_field(&e.node, dc, rest),
        [first, rest @ ..] if first == "Service" => service_field(&e.service, rest),
        _ => None,
    }
}

/// A selector's value on a `/v1/catalog/service` entry (`structs.ServiceNode`, flat).
pub fn catalog_select<'a>(
    n: &'a Node,
    s: &'a Service,
    dc: &str,
    sel: &[String],
) -> Option<Selected<'a>> {
    let (first, rest) = sel.split_first()?;
    let one = |f: &str| node_field(n, dc, &[f.to_string()]);
    match (first.as_str(), rest) {
        ("Node", []) => one("Node"),
        ("Address", []) => one("Address"),
        ("Datacenter", []) => one("Datacenter"),
        ("NodeMeta", _) if rest.len() <= 1 => Some(map_value(&n.meta, rest)),
        ("ServiceID", []) => service_field(s, &["ID".to_string()]),
        ("ServiceName", []) => service_field(s, &["Service".to_string()]),
        ("ServiceAddress", []) => service_field(s, &["Address".to_string()]),
        ("ServicePort", []) => service_field(s, &["Port".to_string()]),
        ("ServiceTags", []) => service_field(s, &["Tags".to_string()]),
        ("ServiceMeta", _) if rest.len() <= 1 => Some(map_value(&s.meta, rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str, tags: &[&str], meta: &[(&str, &str)]) -> bool {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let meta: BTreeMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let e = compile(src, |s| {
            matches!(
                s.first().map(String::as_str),
                Some("Tags" | "Meta" | "Port")
            )
        })
        .unwrap();
        matches(&e, &|s: &[String]| match s {
            [f] if f == "Tags" => Selected::List(&tags),
            [f, rest @ ..] if f == "Meta" => map_value(&meta, rest),
            [f] if f == "Port" => Selected::Text("3306".into()),
            _ => Selected::Missing,
        })
    }

    #[test]
    fn operators_and_combinators() {
        let m = [("cluster", "main")];
        assert!(eval(r#"Meta.cluster == "main""#, &[], &m));
        assert!(eval("Meta.cluster == main", &[], &m));
        assert!(!eval(r#"Meta.cluster != "main""#, &[], &m));
        assert!(!eval(r#"Meta.other == "main""#, &[], &m), "missing key");
        assert!(eval(r#"Meta.other != "main""#, &[], &m));
        assert!(eval(r#""primary" in Tags"#, &["primary"], &[]));
        assert!(eval(r#"Tags contains `primary`"#, &["primary"], &[]));
        assert!(eval(r#""replica" not in Tags"#, &["primary"], &[]));
        assert!(eval("Tags not contains replica", &["primary"], &[]));
        assert!(eval("Tags is empty", &[], &[]));
        assert!(eval("Meta is not empty", &[], &m));
        assert!(eval("Port == 3306", &[], &[]));
        assert!(eval(
            r#"not (Meta.cluster == "x" or "a" in Tags) and Meta.cluster == main"#,
            &["b"],
            &m
        ));
    }

    #[test]
    fn compile_errors_name_the_problem() {
        let err = compile(r#"Checks.Status == "passing""#, |s| s[0] != "Checks").unwrap_err();
        assert!(
            err.starts_with("Failed to create boolean expression evaluator")
                && err.contains("Checks.Status"),
            "{err}"
        );
        assert!(compile(r#"Meta.x matches "a.*""#, |_| true).is_err());
        assert!(compile(r#"Meta.x == "open"#, |_| true).is_err());
        assert!(compile("(Meta.x == a", |_| true).is_err());
        assert!(compile("Meta.x == a b", |_| true).is_err());
    }
}
