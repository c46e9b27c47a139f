//! OTTL conditions, evaluated against the item views of `sluice_core::view` without decoding
//! anything.
//!
//! Grammar: comparisons `path op literal` (`==`, `!=`, `<`, `<=`, `>`, `>=`) and the functions
//! `IsMatch(path, "regex")`, `IsString(path)`, `IsInt(path)`, `IsDouble(path)`, `IsBool(path)`,
//! `IsMap(path)`, `IsList(path)`, joined by `and`, `or`, `not` and parentheses, plus `true` and
//! `false`. Paths by context:
//! - `resource`: `attributes["k"]`;
//! - `span`: `name`, `kind`, `status.code`, `attributes["k"]`, `resource.attributes["k"]`,
//!   `instrumentation_scope.name`;
//! - `spanevent`: `name`, `attributes["k"]`, `span.name`, `resource.attributes["k"]`,
//!   `instrumentation_scope.name`;
//! - `log` (or `log_record`): `severity_number`, `severity_text`, `body`, `event_name`, `attributes["k"]`,
//!   `resource.attributes["k"]`, `instrumentation_scope.name`;
//! - `metric`: `name`, `unit`, `resource.attributes["k"]`, `instrumentation_scope.name`;
//! - `datapoint`: `attributes["k"]`, `metric.name`, `resource.attributes["k"]`.
//!
//! Literals: strings, integers, floats, `true`, `false`, `nil`, and OTTL's enum names
//! (`SEVERITY_NUMBER_ERROR`, `SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`). As in OTTL, values of
//! different types are never equal, and a missing attribute is `nil`. Anything else is refused
//! when the configuration is checked, naming what is not supported.

use sluice_core::view::{self, AnyValue, Context, Item};

/// Why a condition does not parse, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConditionError(pub(crate) String);

pub(crate) fn fail<T>(message: impl Into<String>) -> Result<T, ConditionError> {
    Err(ConditionError(message.into()))
}

/// Where a condition is evaluated: OTTL's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A resource (`resource`).
    Resource,
    /// A span (`span`).
    Span,
    /// A span event (`spanevent`).
    SpanEvent,
    /// A log record (`log`, `log_record`).
    Log,
    /// A metric (`metric`).
    Metric,
    /// A data point (`datapoint`).
    DataPoint,
}

impl Scope {
    /// The context a name denotes.
    pub fn parse(name: &str) -> Option<Scope> {
        Some(match name {
            "resource" => Scope::Resource,
            "span" => Scope::Span,
            "spanevent" => Scope::SpanEvent,
            "log" | "log_record" => Scope::Log,
            "metric" => Scope::Metric,
            "datapoint" => Scope::DataPoint,
            _ => return None,
        })
    }

    /// Whether the decision is the same for every item of a resource (or of a metric).
    pub fn per_resource(self) -> bool {
        self == Scope::Resource
    }
}

/// What a condition is evaluated against: an item in its context, or a span event of a span.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'s, 'a> {
    /// A span, log record or data point (and, for the `resource` and `metric` contexts, the
    /// resource or metric around it).
    Item(&'s Context<'a>, &'s Item<'a>),
    /// A span event, with its span.
    Event(&'s Context<'a>, &'s view::Span<'a>, &'s view::SpanEvent<'a>),
    /// A resource alone (the `resource` context of the `transform` processor).
    Resource(&'s view::Resource<'a>),
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
    SpanName,
    StatusMessage,
    StartTime,
    EndTime,
    Time,
    ObservedTime,
}

/// One side of a comparison: a path, a literal, or a sum or difference of them
/// (`end_time_unix_nano - start_time_unix_nano > 1000000000`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Path(Path),
    Literal(Literal),
    Add(Box<Operand>, Box<Operand>),
    Sub(Box<Operand>, Box<Operand>),
}

impl Operand {
    /// Calls `found` on each path, stopping at the first `true`.
    pub(crate) fn any_path(&self, found: &mut dyn FnMut(&Path) -> bool) -> bool {
        match self {
            Operand::Path(p) => found(p),
            Operand::Literal(_) => false,
            Operand::Add(a, b) | Operand::Sub(a, b) => a.any_path(found) || b.any_path(found),
        }
    }
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

/// The type tests and `IsMatch` of OTTL's converters.
#[derive(Debug, Clone)]
pub(crate) enum Function {
    Match(regex::Regex),
    String,
    Int,
    Double,
    Bool,
    Map,
    List,
}

impl PartialEq for Function {
    fn eq(&self, other: &Function) -> bool {
        match (self, other) {
            (Function::Match(a), Function::Match(b)) => a.as_str() == b.as_str(),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// A parsed condition, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition(pub(crate) Expr);

impl Condition {
    /// Whether the subject meets the condition.
    pub fn holds(&self, subject: &Subject<'_, '_>) -> bool {
        self.0.holds(subject)
    }
}

/// A condition's syntax tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Const(bool),
    Compare(Operand, Op, Operand),
    Call(Function, Path),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    Ident(String),
    Str(String),
    Num(String),
    Sym(&'static str),
}

pub(crate) fn tokens(text: &str) -> Result<Vec<Token>, ConditionError> {
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
                    ["(", ")", "[", "]", ".", "<", ">", ",", "+", "-"]
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

pub(crate) struct Parser {
    pub(crate) tokens: Vec<Token>,
    pub(crate) at: usize,
    pub(crate) scope: Scope,
}

impl Parser {
    pub(crate) fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    pub(crate) fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    pub(crate) fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(w)) if w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn expect(&mut self, sym: &'static str) -> Result<(), ConditionError> {
        match self.next() {
            Some(Token::Sym(s)) if s == sym => Ok(()),
            other => fail(format!(
                "expected `{sym}`, found {}",
                describe(other.as_ref())
            )),
        }
    }

    pub(crate) fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ConditionError> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ConditionError> {
        if matches!(self.peek(), Some(Token::Sym("("))) {
            self.at += 1;
            let inner = self.or()?;
            self.expect(")")?;
            return Ok(inner);
        }
        if self.keyword("true") {
            return Ok(Expr::Const(true));
        }
        if self.keyword("false") {
            return Ok(Expr::Const(false));
        }
        if let (Some(Token::Ident(name)), Some(Token::Sym("("))) =
            (self.peek().cloned(), self.tokens.get(self.at + 1).cloned())
        {
            self.at += 2;
            return self.call(&name);
        }
        let left = self.operand()?;
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
        let right = self.operand()?;
        Ok(Expr::Compare(left, op, right))
    }

    /// A term, then any `+ term` or `- term`.
    fn operand(&mut self) -> Result<Operand, ConditionError> {
        let mut left = self.term()?;
        loop {
            match self.peek() {
                Some(Token::Sym("+")) => {
                    self.at += 1;
                    left = Operand::Add(Box::new(left), Box::new(self.term()?));
                }
                Some(Token::Sym("-")) => {
                    self.at += 1;
                    left = Operand::Sub(Box::new(left), Box::new(self.term()?));
                }
                // `a -5` reads as `a - 5`.
                Some(Token::Num(n)) if n.starts_with('-') => {
                    let n = n[1..].to_owned();
                    self.at += 1;
                    let right = Parser {
                        tokens: vec![Token::Num(n)],
                        at: 0,
                        scope: self.scope,
                    }
                    .literal()?;
                    left = Operand::Sub(Box::new(left), Box::new(Operand::Literal(right)));
                }
                _ => return Ok(left),
            }
        }
    }

    /// A path or a literal.
    fn term(&mut self) -> Result<Operand, ConditionError> {
        let is_path = match (self.peek(), self.tokens.get(self.at + 1)) {
            // Paths are lower case; OTTL's enum names (`SPAN_KIND_SERVER`) upper case.
            (Some(Token::Ident(w)), next) => {
                matches!(next, Some(Token::Sym("." | "[")))
                    || (!matches!(w.as_str(), "true" | "false" | "nil")
                        && w.bytes().any(|b| b.is_ascii_lowercase()))
            }
            _ => false,
        };
        if is_path {
            Ok(Operand::Path(self.path()?))
        } else {
            Ok(Operand::Literal(self.literal()?))
        }
    }

    /// A function call, after its `(`.
    fn call(&mut self, name: &str) -> Result<Expr, ConditionError> {
        let path = self.path()?;
        let function = match name {
            "IsMatch" => {
                self.expect(",")?;
                let pattern = match self.next() {
                    Some(Token::Str(s)) => s,
                    other => {
                        return fail(format!(
                            "IsMatch takes a quoted regular expression, found {}",
                            describe(other.as_ref())
                        ));
                    }
                };
                Function::Match(regex::Regex::new(&pattern).map_err(|e| {
                    ConditionError(format!(
                        "`{pattern}` is not a valid regular expression: {e}"
                    ))
                })?)
            }
            "IsString" => Function::String,
            "IsInt" => Function::Int,
            "IsDouble" => Function::Double,
            "IsBool" => Function::Bool,
            "IsMap" => Function::Map,
            "IsList" => Function::List,
            other => {
                return fail(format!(
                    "the OTTL function `{other}` is not supported; sluice supports IsMatch, IsString, IsInt, IsDouble, IsBool, IsMap and IsList"
                ));
            }
        };
        self.expect(")")?;
        Ok(Expr::Call(function, path))
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

    pub(crate) fn path(&mut self) -> Result<Path, ConditionError> {
        let mut words = Vec::new();
        loop {
            match self.next() {
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
        let mut words: Vec<&str> = words.iter().map(String::as_str).collect();
        // A path may name its own context first (`span.name` in the `span` context), as the
        // Collector's context-inferring statements do.
        if words.len() > 1 && words[0] == scope_name(self.scope) {
            words.remove(0);
        }
        let keyed = matches!(self.peek(), Some(Token::Sym("[")));
        use Scope as S;
        let path = match (self.scope, words.as_slice(), keyed) {
            (S::Resource, ["attributes"], true) => Path::ResourceAttribute(self.key()?),
            (S::Span | S::SpanEvent | S::Log | S::DataPoint, ["attributes"], true) => {
                Path::Attribute(self.key()?)
            }
            (
                S::Span | S::SpanEvent | S::Log | S::Metric | S::DataPoint,
                ["resource", "attributes"],
                true,
            ) => Path::ResourceAttribute(self.key()?),
            (
                S::Span | S::SpanEvent | S::Log | S::Metric,
                ["instrumentation_scope", "name"],
                false,
            ) => Path::ScopeName,
            (S::Span | S::SpanEvent | S::Metric, ["name"], false) => Path::Name,
            (S::SpanEvent, ["span", "name"], false) => Path::SpanName,
            (S::Span, ["kind"], false) => Path::Kind,
            (S::Span, ["status", "code"], false) => Path::StatusCode,
            (S::Span, ["status", "message"], false) => Path::StatusMessage,
            (S::Span, ["start_time_unix_nano"], false) => Path::StartTime,
            (S::Span, ["end_time_unix_nano"], false) => Path::EndTime,
            (S::Log, ["time_unix_nano"], false) => Path::Time,
            (S::Log, ["observed_time_unix_nano"], false) => Path::ObservedTime,
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

    pub(crate) fn literal(&mut self) -> Result<Literal, ConditionError> {
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

pub(crate) fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Resource => "resource",
        Scope::Span => "span",
        Scope::SpanEvent => "spanevent",
        Scope::Log => "log",
        Scope::Metric => "metric",
        Scope::DataPoint => "datapoint",
    }
}

pub(crate) fn describe(token: Option<&Token>) -> String {
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

/// The context of a statement written without one (the Collector's flat `trace_statements:
/// ["set(span.name, ...)"]`): the most specific of `candidates` (listed most specific first)
/// whose name prefixes a path of the statement; `None` when no path names one.
pub fn infer_scope(text: &str, candidates: &[Scope]) -> Option<Scope> {
    let tokens = tokens(text).ok()?;
    let named: Vec<&str> = tokens
        .windows(2)
        .filter_map(|w| match w {
            [Token::Ident(name), Token::Sym(".")] => Some(name.as_str()),
            _ => None,
        })
        .collect();
    candidates
        .iter()
        .copied()
        .find(|scope| named.contains(&scope_name(*scope)))
}

/// Parses an OTTL condition in `scope`.
///
/// # Errors
/// What does not parse, or is outside the subset, named.
pub fn parse(text: &str, scope: Scope) -> Result<Condition, ConditionError> {
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
    Ok(Condition(condition))
}

/// Parses an OTTL routing statement, `route() where <condition>`.
///
/// # Errors
/// As [`parse`], and a statement that is not `route()`.
pub fn parse_statement(text: &str, scope: Scope) -> Result<Condition, ConditionError> {
    let rest = text.trim_start();
    let Some(rest) = rest.strip_prefix("route()") else {
        return fail("a routing statement reads `route() where <condition>`");
    };
    let rest = rest.trim_start();
    match rest.strip_prefix("where") {
        Some(condition) if condition.starts_with(char::is_whitespace) => parse(condition, scope),
        _ if rest.is_empty() => Ok(Condition(Expr::Const(true))),
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
        Some(AnyValue::String(s)) => Val::Str(s.as_str()),
        Some(AnyValue::Int(i)) => Val::Int(i),
        Some(AnyValue::Double(f)) => Val::Float(f),
        Some(AnyValue::Bool(b)) => Val::Bool(b),
        // Bytes, arrays and maps compare as nothing here.
        Some(_) | None => Val::Nil,
    }
}

fn read<'a>(path: &Path, subject: &Subject<'_, 'a>) -> Option<AnyValue<'a>> {
    let str_value = |s: &'a str| Some(AnyValue::String(s.into()));
    let (context, item) = match subject {
        Subject::Resource(resource) => {
            return match path {
                Path::ResourceAttribute(key) => resource.attribute(key),
                _ => None,
            };
        }
        Subject::Item(context, item) => (*context, Some(*item)),
        Subject::Event(context, span, event) => {
            return match path {
                Path::Attribute(key) => event
                    .attributes()
                    .find(|kv| kv.has_key(key))
                    .map(|kv| kv.value()),
                Path::Name => str_value(event.name()),
                Path::SpanName => str_value(span.name()),
                Path::ResourceAttribute(key) => context.resource.attribute(key),
                Path::ScopeName => str_value(context.scope.name()),
                _ => None,
            };
        }
    };
    let item = item?;
    match path {
        Path::Attribute(key) => match item {
            Item::Span(s) => s.attribute(key),
            Item::Log(l) => l.attribute(key),
            Item::Point(p) => p.attribute(key),
        },
        Path::ResourceAttribute(key) => context.resource.attribute(key),
        Path::ScopeName => str_value(context.scope.name()),
        Path::Name => match (item, context.metric) {
            (Item::Span(s), _) => str_value(s.name()),
            (_, Some(m)) => str_value(m.name()),
            _ => None,
        },
        Path::SpanName => None,
        Path::MetricName => context.metric.and_then(|m| str_value(m.name())),
        Path::Unit => context.metric.and_then(|m| str_value(m.unit())),
        Path::Kind => item.as_span().map(|s| AnyValue::Int(s.kind().into())),
        Path::StatusCode => item
            .as_span()
            .map(|s| AnyValue::Int(s.status_code().into())),
        Path::SeverityNumber => item
            .as_log()
            .map(|l| AnyValue::Int(l.severity_number().into())),
        Path::SeverityText => item.as_log().and_then(|l| str_value(l.severity_text())),
        Path::Body => item.as_log().map(|l| l.body()),
        Path::EventName => item.as_log().and_then(|l| str_value(l.event_name())),
        Path::StatusMessage => item.as_span().and_then(|s| str_value(s.status_message())),
        Path::StartTime => item.as_span().map(|s| time(s.start_time_unix_nano())),
        Path::EndTime => item.as_span().map(|s| time(s.end_time_unix_nano())),
        Path::Time => item.as_log().map(|l| time(l.time_unix_nano())),
        Path::ObservedTime => item.as_log().map(|l| time(l.observed_time_unix_nano())),
    }
}

/// A timestamp as OTTL's `*_unix_nano` paths read it: an int.
fn time<'a>(nanos: u64) -> AnyValue<'a> {
    AnyValue::Int(i64::try_from(nanos).unwrap_or(i64::MAX))
}

/// An operand's value for one subject; sums and differences of numbers (an int overflowing, or
/// anything but numbers, gives `nil`).
fn value<'x>(operand: &'x Operand, subject: &Subject<'_, 'x>) -> Val<'x> {
    let numbers =
        |a: &'x Operand, b: &'x Operand, add: bool| match (value(a, subject), value(b, subject)) {
            (Val::Int(x), Val::Int(y)) => {
                let r = if add {
                    x.checked_add(y)
                } else {
                    x.checked_sub(y)
                };
                r.map_or(Val::Nil, Val::Int)
            }
            (x, y) => match (float(x), float(y)) {
                (Some(x), Some(y)) => Val::Float(if add { x + y } else { x - y }),
                _ => Val::Nil,
            },
        };
    match operand {
        Operand::Path(path) => from_any(read(path, subject)),
        Operand::Literal(literal) => match literal {
            Literal::Str(s) => Val::Str(s),
            Literal::Int(i) => Val::Int(*i),
            Literal::Float(f) => Val::Float(*f),
            Literal::Bool(b) => Val::Bool(*b),
            Literal::Nil => Val::Nil,
        },
        Operand::Add(a, b) => numbers(a, b, true),
        Operand::Sub(a, b) => numbers(a, b, false),
    }
}

fn float(v: Val<'_>) -> Option<f64> {
    match v {
        Val::Int(i) => Some(i as f64),
        Val::Float(f) => Some(f),
        _ => None,
    }
}

fn compare(left: Val<'_>, op: Op, right: Val<'_>) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (left, right) {
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Int(a), Val::Int(b)) => Some(a.cmp(&b)),
        (Val::Int(a), Val::Float(b)) => (a as f64).partial_cmp(&b),
        (Val::Float(a), Val::Float(b)) => a.partial_cmp(&b),
        (Val::Float(a), Val::Int(b)) => a.partial_cmp(&(b as f64)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(&b)),
        (Val::Nil, Val::Nil) => Some(Ordering::Equal),
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

impl Expr {
    fn holds(&self, subject: &Subject<'_, '_>) -> bool {
        match self {
            Expr::Const(b) => *b,
            Expr::Compare(left, op, right) => {
                compare(value(left, subject), *op, value(right, subject))
            }
            Expr::Call(function, path) => {
                let value = read(path, subject);
                match function {
                    Function::Match(r) => value
                        .and_then(|v| v.as_str())
                        .is_some_and(|s| r.is_match(s)),
                    Function::String => matches!(value, Some(AnyValue::String(_))),
                    Function::Int => matches!(value, Some(AnyValue::Int(_))),
                    Function::Double => matches!(value, Some(AnyValue::Double(_))),
                    Function::Bool => matches!(value, Some(AnyValue::Bool(_))),
                    Function::Map => matches!(value, Some(AnyValue::Kvlist(_))),
                    Function::List => matches!(value, Some(AnyValue::Array(_))),
                }
            }
            Expr::And(a, b) => a.holds(subject) && b.holds(subject),
            Expr::Or(a, b) => a.holds(subject) || b.holds(subject),
            Expr::Not(a) => !a.holds(subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_differences_of_numbers_and_timestamps() {
        let parsed = |t: &str, scope| parse(t, scope).unwrap_or_else(|e| panic!("{t}: {e}"));
        let c = parsed(
            "end_time_unix_nano - start_time_unix_nano > 5000000000",
            Scope::Span,
        );
        assert_eq!(
            c.0,
            Expr::Compare(
                Operand::Sub(
                    Box::new(Operand::Path(Path::EndTime)),
                    Box::new(Operand::Path(Path::StartTime))
                ),
                Op::Gt,
                Operand::Literal(Literal::Int(5_000_000_000))
            )
        );
        // `a -5` is `a - 5`; `-5` after an operator is a negative number.
        assert_eq!(
            parsed(r#"attributes["n"] -5 == 1"#, Scope::Span),
            parsed(r#"attributes["n"] - 5 == 1"#, Scope::Span)
        );
        parsed(r#"attributes["n"] + 1.5 > -5"#, Scope::Span);
        parsed(
            "observed_time_unix_nano - time_unix_nano > 60000000000",
            Scope::Log,
        );
        assert!(parse("time_unix_nano > 0", Scope::Span).is_err());
    }

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
            parse_statement(r#"route() where attributes["a"] == "b""#, Scope::Resource)
                .unwrap()
                .0,
            Expr::Compare(
                Operand::Path(Path::ResourceAttribute("a".into())),
                Op::Eq,
                Operand::Literal(Literal::Str("b".into()))
            )
        );
        assert_eq!(enum_value("SEVERITY_NUMBER_ERROR"), Some(17));
        assert_eq!(enum_value("SEVERITY_NUMBER_WARN3"), Some(15));
        assert_eq!(enum_value("SEVERITY_NUMBER_UNSPECIFIED"), Some(0));
    }

    #[test]
    fn parses_functions_and_the_spanevent_and_log_record_contexts() {
        for (text, scope) in [
            (
                r#"IsMatch(attributes["http.route"], "^/health")"#,
                Scope::Span,
            ),
            (r#"IsString(body) and not IsMap(body)"#, Scope::Log),
            (
                r#"IsInt(attributes["n"]) or IsDouble(attributes["n"]) or IsBool(attributes["b"])"#,
                Scope::DataPoint,
            ),
            (r#"IsList(attributes["tags"])"#, Scope::Span),
            (
                r#"name == "cache.miss" and span.name == "GET /""#,
                Scope::SpanEvent,
            ),
        ] {
            parse(text, scope).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
        assert_eq!(Scope::parse("log_record"), Some(Scope::Log));
        assert_eq!(Scope::parse("spanevent"), Some(Scope::SpanEvent));
        // A path may name its own context, as the Collector's context-inferring syntax does.
        assert_eq!(
            parse("span.name == \"x\"", Scope::Span).unwrap(),
            parse("name == \"x\"", Scope::Span).unwrap()
        );
        let err = parse("span.trace_state == \"x\"", Scope::Span)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`trace_state` is not a path sluice supports in the `span` context"),
            "{err}"
        );
    }

    #[test]
    fn refuses_what_it_does_not_support_naming_it() {
        for (text, scope, message) in [
            (
                r#"Concat(attributes["a"], "x")"#,
                Scope::Resource,
                "the OTTL function `Concat` is not supported",
            ),
            (
                r#"IsMatch(attributes["a"], "(")"#,
                Scope::Resource,
                "is not a valid regular expression",
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
