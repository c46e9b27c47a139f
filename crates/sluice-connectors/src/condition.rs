//! The routing conditions: the subset of OTTL conditions that routing tables use, evaluated
//! against the item views of `sluice_core::view` without decoding anything.
//!
//! Grammar: comparisons `path op literal` (`==`, `!=`, `<`, `<=`, `>`, `>=`) joined by `and`,
//! `or`, `not` and parentheses, plus `true` and `false`. Paths by context:
//! - `resource`: `attributes["k"]`;
//! - `span`: `name`, `kind`, `status.code`, `attributes["k"]`, `resource.attributes["k"]`,
//!   `instrumentation_scope.name`;
//! - `log`: `severity_number`, `severity_text`, `body`, `event_name`, `attributes["k"]`,
//!   `resource.attributes["k"]`, `instrumentation_scope.name`;
//! - `metric`: `name`, `unit`, `resource.attributes["k"]`, `instrumentation_scope.name`;
//! - `datapoint`: `attributes["k"]`, `metric.name`, `resource.attributes["k"]`.
//!
//! Literals: strings, integers, floats, `true`, `false`, `nil`, and OTTL's enum names
//! (`SEVERITY_NUMBER_ERROR`, `SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`). As in OTTL, values of
//! different types are never equal, and a missing attribute is `nil`. Anything else is refused
//! when the configuration is checked, naming what is not supported.

use sluice_core::view::{AnyValue, Context, Item};

/// Why a condition does not parse, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConditionError(String);

fn fail<T>(message: impl Into<String>) -> Result<T, ConditionError> {
    Err(ConditionError(message.into()))
}

/// Where a condition is evaluated (`table.context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Resource,
    Span,
    Log,
    Metric,
    DataPoint,
}

impl Scope {
    pub(crate) fn parse(name: &str) -> Option<Scope> {
        Some(match name {
            "resource" => Scope::Resource,
            "span" => Scope::Span,
            "log" => Scope::Log,
            "metric" => Scope::Metric,
            "datapoint" => Scope::DataPoint,
            _ => return None,
        })
    }

    /// Whether the decision is the same for every item of a resource (or of a metric).
    pub(crate) fn per_resource(self) -> bool {
        self == Scope::Resource
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Path {
    Attribute(String),
    ResourceAttribute(String),
    ScopeName,
    Name,
    Kind,
    StatusCode,
    SeverityNumber,
    SeverityText,
    Body,
    EventName,
    MetricName,
    Unit,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    Const(bool),
    Compare(Path, Op, Literal),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

fn tokens(text: &str) -> Result<Vec<Token>, ConditionError> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Num(chars[start..i].iter().collect()));
        } else if c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return fail("a string is not closed"),
                    Some('"') => break,
                    Some('\\') => {
                        i += 1;
                        match chars.get(i) {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(&other) => s.push(other),
                            None => return fail("a string is not closed"),
                        }
                    }
                    Some(&other) => s.push(other),
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Str(s));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = ["==", "!=", "<=", ">="]
                .into_iter()
                .find(|s| *s == two)
                .or_else(|| {
                    ["(", ")", "[", "]", ".", "<", ">", ","]
                        .into_iter()
                        .find(|s| s.starts_with(c))
                })
                .ok_or_else(|| ConditionError(format!("unexpected `{c}`")))?;
            i += sym.len();
            out.push(Token::Sym(sym));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    scope: Scope,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), ConditionError> {
        match self.next() {
            Some(Token::Sym(s)) if s == sym => Ok(()),
            other => fail(format!(
                "expected `{sym}`, found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Condition::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.keyword("not") {
            return Ok(Condition::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ConditionError> {
        if matches!(self.peek(), Some(Token::Sym("("))) {
            self.at += 1;
            let inner = self.or()?;
            self.expect(")")?;
            return Ok(inner);
        }
        if self.keyword("true") {
            return Ok(Condition::Const(true));
        }
        if self.keyword("false") {
            return Ok(Condition::Const(false));
        }
        let path = self.path()?;
        let op = match self.next() {
            Some(Token::Sym("==")) => Op::Eq,
            Some(Token::Sym("!=")) => Op::Ne,
            Some(Token::Sym("<")) => Op::Lt,
            Some(Token::Sym("<=")) => Op::Le,
            Some(Token::Sym(">")) => Op::Gt,
            Some(Token::Sym(">=")) => Op::Ge,
            other => {
                return fail(format!(
                    "expected a comparison (==, !=, <, <=, >, >=), found {}",
                    describe(other.as_ref())
                ));
            }
        };
        let literal = self.literal()?;
        Ok(Condition::Compare(path, op, literal))
    }

    fn key(&mut self) -> Result<String, ConditionError> {
        self.expect("[")?;
        let key = match self.next() {
            Some(Token::Str(s)) => s,
            other => {
                return fail(format!(
                    "expected a quoted key, found {}",
                    describe(other.as_ref())
                ));
            }
        };
        self.expect("]")?;
        Ok(key)
    }

    fn path(&mut self) -> Result<Path, ConditionError> {
        let mut words = Vec::new();
        loop {
            match self.next() {
                Some(Token::Ident(w)) if matches!(self.peek(), Some(Token::Sym("("))) => {
                    return fail(format!(
                        "OTTL functions (`{w}(...)`) are not supported in routing conditions yet; compare a path with a value"
                    ));
                }
                Some(Token::Ident(w)) => words.push(w),
                other => {
                    return fail(format!(
                        "expected a path, found {}",
                        describe(other.as_ref())
                    ));
                }
            }
            if matches!(self.peek(), Some(Token::Sym("."))) {
                self.at += 1;
            } else {
                break;
            }
        }
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let keyed = matches!(self.peek(), Some(Token::Sym("[")));
        use Scope as S;
        let path = match (self.scope, words.as_slice(), keyed) {
            (S::Resource, ["attributes"], true) => Path::ResourceAttribute(self.key()?),
            (S::Span | S::Log | S::DataPoint, ["attributes"], true) => Path::Attribute(self.key()?),
            (S::Span | S::Log | S::Metric | S::DataPoint, ["resource", "attributes"], true) => {
                Path::ResourceAttribute(self.key()?)
            }
            (S::Span | S::Log | S::Metric, ["instrumentation_scope", "name"], false) => {
                Path::ScopeName
            }
            (S::Span | S::Metric, ["name"], false) => Path::Name,
            (S::Span, ["kind"], false) => Path::Kind,
            (S::Span, ["status", "code"], false) => Path::StatusCode,
            (S::Log, ["severity_number"], false) => Path::SeverityNumber,
            (S::Log, ["severity_text"], false) => Path::SeverityText,
            (S::Log, ["body"], false) => Path::Body,
            (S::Log, ["event_name"], false) => Path::EventName,
            (S::Metric, ["unit"], false) => Path::Unit,
            (S::DataPoint, ["metric", "name"], false) => Path::MetricName,
            _ => {
                return fail(format!(
                    "`{}{}` is not a path sluice supports in the `{}` context",
                    words.join("."),
                    if keyed { "[...]" } else { "" },
                    scope_name(self.scope)
                ));
            }
        };
        Ok(path)
    }

    fn literal(&mut self) -> Result<Literal, ConditionError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Literal::Str(s)),
            Some(Token::Num(n)) => {
                if let Ok(i) = n.parse::<i64>() {
                    Ok(Literal::Int(i))
                } else {
                    n.parse::<f64>()
                        .map(Literal::Float)
                        .map_err(|_| ConditionError(format!("`{n}` is not a number")))
                }
            }
            Some(Token::Ident(w)) => match w.as_str() {
                "true" => Ok(Literal::Bool(true)),
                "false" => Ok(Literal::Bool(false)),
                "nil" => Ok(Literal::Nil),
                name => enum_value(name)
                    .map(Literal::Int)
                    .ok_or_else(|| ConditionError(format!("unknown name `{name}`"))),
            },
            other => fail(format!(
                "expected a value, found {}",
                describe(other.as_ref())
            )),
        }
    }
}

fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Resource => "resource",
        Scope::Span => "span",
        Scope::Log => "log",
        Scope::Metric => "metric",
        Scope::DataPoint => "datapoint",
    }
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "the end".into(),
        Some(Token::Ident(w)) => format!("`{w}`"),
        Some(Token::Str(s)) => format!("\"{s}\""),
        Some(Token::Num(n)) => format!("`{n}`"),
        Some(Token::Sym(s)) => format!("`{s}`"),
    }
}

/// OTTL's enum names for severity numbers, span kinds and status codes.
fn enum_value(name: &str) -> Option<i64> {
    if let Some(level) = name.strip_prefix("SEVERITY_NUMBER_") {
        let (base, step) = match level.trim_end_matches(['2', '3', '4']) {
            "UNSPECIFIED" => return (level == "UNSPECIFIED").then_some(0),
            "TRACE" => (1, level),
            "DEBUG" => (5, level),
            "INFO" => (9, level),
            "WARN" => (13, level),
            "ERROR" => (17, level),
            "FATAL" => (21, level),
            _ => return None,
        };
        let offset = match step.chars().last() {
            Some(d @ '2'..='4') => i64::from(d.to_digit(10)?) - 1,
            _ => 0,
        };
        return Some(base + offset);
    }
    Some(match name {
        "SPAN_KIND_UNSPECIFIED" => 0,
        "SPAN_KIND_INTERNAL" => 1,
        "SPAN_KIND_SERVER" => 2,
        "SPAN_KIND_CLIENT" => 3,
        "SPAN_KIND_PRODUCER" => 4,
        "SPAN_KIND_CONSUMER" => 5,
        "STATUS_CODE_UNSET" => 0,
        "STATUS_CODE_OK" => 1,
        "STATUS_CODE_ERROR" => 2,
        _ => return None,
    })
}

/// Parses an OTTL condition in `scope`.
pub(crate) fn parse(text: &str, scope: Scope) -> Result<Condition, ConditionError> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
        scope,
    };
    let condition = parser.or()?;
    if parser.at < parser.tokens.len() {
        return fail(format!(
            "unexpected {} after the condition",
            describe(parser.peek())
        ));
    }
    Ok(condition)
}

/// Parses an OTTL routing statement, `route() where <condition>`.
pub(crate) fn parse_statement(text: &str, scope: Scope) -> Result<Condition, ConditionError> {
    let rest = text.trim_start();
    let Some(rest) = rest.strip_prefix("route()") else {
        return fail("a routing statement reads `route() where <condition>`");
    };
    let rest = rest.trim_start();
    match rest.strip_prefix("where") {
        Some(condition) if condition.starts_with(char::is_whitespace) => parse(condition, scope),
        _ if rest.is_empty() => Ok(Condition::Const(true)),
        _ => fail("a routing statement reads `route() where <condition>`"),
    }
}

/// A value read from an item, for comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
}

fn from_any(value: Option<AnyValue<'_>>) -> Val<'_> {
    match value {
        Some(AnyValue::String(s)) => Val::Str(s),
        Some(AnyValue::Int(i)) => Val::Int(i),
        Some(AnyValue::Double(f)) => Val::Float(f),
        Some(AnyValue::Bool(b)) => Val::Bool(b),
        // Bytes, arrays and maps compare as nothing here.
        Some(_) | None => Val::Nil,
    }
}

fn read<'a>(path: &Path, context: &Context<'a>, item: &Item<'a>) -> Val<'a> {
    let attribute = |key: &str| match item {
        Item::Span(s) => s.attribute(key),
        Item::Log(l) => l.attribute(key),
        Item::Point(p) => p.attribute(key),
    };
    match path {
        Path::Attribute(key) => from_any(attribute(key)),
        Path::ResourceAttribute(key) => from_any(context.resource.attribute(key)),
        Path::ScopeName => Val::Str(context.scope.name()),
        Path::Name => match (item, context.metric) {
            (Item::Span(s), _) => Val::Str(s.name()),
            (_, Some(m)) => Val::Str(m.name()),
            _ => Val::Nil,
        },
        Path::MetricName => context.metric.map_or(Val::Nil, |m| Val::Str(m.name())),
        Path::Unit => context.metric.map_or(Val::Nil, |m| Val::Str(m.unit())),
        Path::Kind => item
            .as_span()
            .map_or(Val::Nil, |s| Val::Int(s.kind().into())),
        Path::StatusCode => item
            .as_span()
            .map_or(Val::Nil, |s| Val::Int(s.status_code().into())),
        Path::SeverityNumber => item
            .as_log()
            .map_or(Val::Nil, |l| Val::Int(l.severity_number().into())),
        Path::SeverityText => item
            .as_log()
            .map_or(Val::Nil, |l| Val::Str(l.severity_text())),
        Path::Body => item.as_log().map_or(Val::Nil, |l| from_any(Some(l.body()))),
        Path::EventName => item.as_log().map_or(Val::Nil, |l| Val::Str(l.event_name())),
    }
}

fn compare(left: Val<'_>, op: Op, right: &Literal) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (left, right) {
        (Val::Str(a), Literal::Str(b)) => Some(a.cmp(b.as_str())),
        (Val::Int(a), Literal::Int(b)) => Some(a.cmp(b)),
        (Val::Int(a), Literal::Float(b)) => (a as f64).partial_cmp(b),
        (Val::Float(a), Literal::Float(b)) => a.partial_cmp(b),
        (Val::Float(a), Literal::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Val::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Val::Nil, Literal::Nil) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ordering) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
        (_, None) => false,
    }
}

impl Condition {
    /// Whether the item (in its context) meets the condition.
    pub(crate) fn holds(&self, context: &Context<'_>, item: &Item<'_>) -> bool {
        match self {
            Condition::Const(b) => *b,
            Condition::Compare(path, op, literal) => {
                compare(read(path, context, item), *op, literal)
            }
            Condition::And(a, b) => a.holds(context, item) && b.holds(context, item),
            Condition::Or(a, b) => a.holds(context, item) || b.holds(context, item),
            Condition::Not(a) => !a.holds(context, item),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_collectors_examples() {
        for (text, scope) in [
            (r#"attributes["X-Tenant"] == "acme""#, Scope::Resource),
            (
                r#"attributes["env"] == "prod" and attributes["region"] == "east""#,
                Scope::Resource,
            ),
            ("severity_number < SEVERITY_NUMBER_ERROR", Scope::Log),
            (r#"attributes["region"] == "west""#, Scope::Log),
            (
                r#"not (name == "GET /health" or kind == SPAN_KIND_CLIENT)"#,
                Scope::Span,
            ),
            (
                r#"metric.name != "up" and attributes["code"] >= 500"#,
                Scope::DataPoint,
            ),
        ] {
            parse(text, scope).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        assert_eq!(
            parse_statement(r#"route() where attributes["a"] == "b""#, Scope::Resource).unwrap(),
            Condition::Compare(
                Path::ResourceAttribute("a".into()),
                Op::Eq,
                Literal::Str("b".into())
            )
        );
        assert_eq!(enum_value("SEVERITY_NUMBER_ERROR"), Some(17));
        assert_eq!(enum_value("SEVERITY_NUMBER_WARN3"), Some(15));
        assert_eq!(enum_value("SEVERITY_NUMBER_UNSPECIFIED"), Some(0));
    }

    #[test]
    fn refuses_what_it_does_not_support_naming_it() {
        for (text, scope, message) in [
            (
                r#"IsMatch(attributes["a"], "x")"#,
                Scope::Resource,
                "OTTL functions (`IsMatch(...)`) are not supported",
            ),
            (
                "severity_number < 9",
                Scope::Span,
                "`severity_number` is not a path sluice supports in the `span` context",
            ),
            (
                r#"attributes["a"] == "b" extra"#,
                Scope::Resource,
                "unexpected `extra`",
            ),
            (
                r#"attributes["a] == 1"#,
                Scope::Resource,
                "a string is not closed",
            ),
            ("name == SEVERITY_NUMBER_NOPE", Scope::Span, "unknown name"),
        ] {
            let err = parse(text, scope).unwrap_err().to_string();
            assert!(err.contains(message), "{text}: {err}");
        }
        assert!(parse_statement("set(x, 1)", Scope::Resource).is_err());
    }
}
