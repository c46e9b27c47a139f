//! OTTL statements: an editor call and an optional `where` condition, applied to decoded spans,
//! log records and data point attributes.
//!
//! Editors: `set(target, value)`, `delete_key(attributes, "k")`,
//! `delete_matching_keys(attributes, "regex")`, `keep_keys(attributes, ["a", "b"])`,
//! `truncate_all(attributes, n)`, `limit(attributes, n, ["priority"])`,
//! `replace_pattern(target, "regex", "replacement")`,
//! `replace_all_patterns(attributes, "value" | "key", "regex", "replacement")`,
//! `replace_match(target, "glob", "replacement")`. Targets: `name` (span), `body` and
//! `severity_text` (log), `attributes["k"]`, and `attributes` for the map editors. Values of
//! `set`: a string, number, boolean, or `attributes["k"]` of the same item.
//!
//! A `where` condition is evaluated on the item as it arrived, before this list of statements
//! changed it (the Collector evaluates each on the item as the statements before left it); a
//! statement whose condition reads what an earlier statement writes is therefore refused.

use opentelemetry_proto::tonic::common::v1::{AnyValue as Any, KeyValue, any_value::Value as V};
use regex::Regex;

use crate::condition::{
    Condition, ConditionError, Expr, Literal, Parser, Path, Scope, Subject, Token, describe, fail,
    tokens,
};

/// Where an editor writes.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Name,
    Body,
    SeverityText,
    Attribute(String),
}

/// The value `set` writes.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Literal(Literal),
    Attribute(String),
}

#[derive(Debug, Clone)]
enum Edit {
    Set(Target, Source),
    DeleteKey(String),
    DeleteMatchingKeys(Regex),
    KeepKeys(Vec<String>),
    TruncateAll(usize),
    Limit(usize, Vec<String>),
    ReplacePattern(Target, Regex, String),
    ReplaceAllPatterns {
        keys: bool,
        pattern: Regex,
        replacement: String,
    },
    ReplaceMatch(Target, Regex, String),
}

/// One parsed statement.
#[derive(Debug, Clone)]
pub struct Statement {
    edit: Edit,
    condition: Option<Condition>,
}

/// A decoded item a statement edits: its name (spans), body and severity text (logs), and
/// attributes.
pub struct Editable<'m> {
    /// A span's name.
    pub name: Option<&'m mut String>,
    /// A log record's body.
    pub body: Option<&'m mut Option<Any>>,
    /// A log record's severity text.
    pub severity_text: Option<&'m mut String>,
    /// The item's attributes.
    pub attributes: &'m mut Vec<KeyValue>,
}

/// A glob (`*` any run, `?` one character) as an anchored regular expression.
fn glob(pattern: &str) -> Result<Regex, ConditionError> {
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| ConditionError(format!("`{pattern}` is not a valid pattern: {e}")))
}

fn regex(pattern: &str) -> Result<Regex, ConditionError> {
    Regex::new(pattern).map_err(|e| {
        ConditionError(format!(
            "`{pattern}` is not a valid regular expression: {e}"
        ))
    })
}

impl Parser {
    fn string_arg(&mut self, what: &str) -> Result<String, ConditionError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(s),
            other => fail(format!(
                "expected {what} (a quoted string), found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn int_arg(&mut self, what: &str) -> Result<usize, ConditionError> {
        match self.next() {
            Some(Token::Num(n)) => n.parse().map_err(|_| {
                ConditionError(format!("{what} must be a whole number ≥ 0, not `{n}`"))
            }),
            other => fail(format!(
                "expected {what}, found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn list_arg(&mut self) -> Result<Vec<String>, ConditionError> {
        self.expect("[")?;
        let mut out = Vec::new();
        if matches!(self.peek(), Some(Token::Sym("]"))) {
            self.at += 1;
            return Ok(out);
        }
        loop {
            out.push(self.string_arg("a key")?);
            match self.next() {
                Some(Token::Sym(",")) => {}
                Some(Token::Sym("]")) => return Ok(out),
                other => {
                    return fail(format!(
                        "expected `,` or `]`, found {}",
                        describe(other.as_ref())
                    ));
                }
            }
        }
    }

    /// `attributes` as a whole map (or `<context>.attributes`, naming the statement's own).
    fn map_arg(&mut self) -> Result<(), ConditionError> {
        if let (Some(Token::Ident(w)), Some(Token::Sym("."))) =
            (self.peek(), self.tokens.get(self.at + 1))
            && w == crate::condition::scope_name(self.scope)
        {
            self.at += 2;
        }
        let first = self.next();
        let keyed = matches!(self.peek(), Some(Token::Sym("[")));
        match first {
            Some(Token::Ident(w)) if w == "attributes" && !keyed => Ok(()),
            other => fail(format!(
                "this editor works on `attributes` (the whole map), found {}{}",
                describe(other.as_ref()),
                if keyed { "[...]" } else { "" }
            )),
        }
    }

    fn target(&mut self) -> Result<Target, ConditionError> {
        let path = self.path()?;
        Ok(match (self.scope, path) {
            (Scope::Span | Scope::SpanEvent, Path::Name) => Target::Name,
            (Scope::Log, Path::Body) => Target::Body,
            (Scope::Log, Path::SeverityText) => Target::SeverityText,
            (
                Scope::Span | Scope::SpanEvent | Scope::Log | Scope::DataPoint | Scope::Resource,
                Path::Attribute(k),
            )
            | (Scope::Resource, Path::ResourceAttribute(k)) => Target::Attribute(k),
            (scope, path) => {
                return fail(format!(
                    "`{path:?}` cannot be written in the `{scope:?}` context; sluice's editors write name (span), body and severity_text (log) and attributes[\"k\"]"
                ));
            }
        })
    }

    fn edit(&mut self, name: &str) -> Result<Edit, ConditionError> {
        let comma = |p: &mut Parser| p.expect(",");
        let edit = match name {
            "set" => {
                let target = self.target()?;
                comma(self)?;
                let is_path = matches!(
                    (self.peek(), self.tokens.get(self.at + 1)),
                    (Some(Token::Ident(_)), Some(Token::Sym("." | "[")))
                );
                let source = match self.peek() {
                    Some(Token::Ident(_)) if is_path => match (self.scope, self.path()?) {
                        (Scope::Resource, Path::ResourceAttribute(k)) => Source::Attribute(k),
                        (scope, Path::Attribute(k)) if scope != Scope::Resource => {
                            Source::Attribute(k)
                        }
                        _ => return fail("`set` copies from attributes[\"k\"] of the same item"),
                    },
                    _ => Source::Literal(self.literal()?),
                };
                Edit::Set(target, source)
            }
            "delete_key" => {
                self.map_arg()?;
                comma(self)?;
                Edit::DeleteKey(self.string_arg("a key")?)
            }
            "delete_matching_keys" => {
                self.map_arg()?;
                comma(self)?;
                Edit::DeleteMatchingKeys(regex(&self.string_arg("a regular expression")?)?)
            }
            "keep_keys" => {
                self.map_arg()?;
                comma(self)?;
                Edit::KeepKeys(self.list_arg()?)
            }
            "truncate_all" => {
                self.map_arg()?;
                comma(self)?;
                Edit::TruncateAll(self.int_arg("a length")?)
            }
            "limit" => {
                self.map_arg()?;
                comma(self)?;
                let n = self.int_arg("a count")?;
                let priority = if matches!(self.peek(), Some(Token::Sym(","))) {
                    self.at += 1;
                    self.list_arg()?
                } else {
                    Vec::new()
                };
                Edit::Limit(n, priority)
            }
            "replace_pattern" => {
                let target = self.target()?;
                comma(self)?;
                let pattern = regex(&self.string_arg("a regular expression")?)?;
                comma(self)?;
                Edit::ReplacePattern(target, pattern, self.string_arg("a replacement")?)
            }
            "replace_all_patterns" => {
                self.map_arg()?;
                comma(self)?;
                let keys = match self.string_arg("\"key\" or \"value\"")?.as_str() {
                    "key" => true,
                    "value" => false,
                    other => {
                        return fail(format!(
                            "replace_all_patterns replaces \"key\" or \"value\", not \"{other}\""
                        ));
                    }
                };
                comma(self)?;
                let pattern = regex(&self.string_arg("a regular expression")?)?;
                comma(self)?;
                Edit::ReplaceAllPatterns {
                    keys,
                    pattern,
                    replacement: self.string_arg("a replacement")?,
                }
            }
            "replace_match" => {
                let target = self.target()?;
                comma(self)?;
                let pattern = glob(&self.string_arg("a pattern")?)?;
                comma(self)?;
                Edit::ReplaceMatch(target, pattern, self.string_arg("a replacement")?)
            }
            other => {
                return fail(format!(
                    "the OTTL editor `{other}` is not supported; sluice supports set, delete_key, delete_matching_keys, keep_keys, truncate_all, limit, replace_pattern, replace_all_patterns and replace_match"
                ));
            }
        };
        self.expect(")")?;
        Ok(edit)
    }
}

impl Edit {
    /// The attribute keys this edit may write, for refusing conditions that would read them.
    fn writes(&self) -> Option<Vec<&str>> {
        match self {
            Edit::Set(Target::Attribute(k), _)
            | Edit::ReplacePattern(Target::Attribute(k), ..)
            | Edit::ReplaceMatch(Target::Attribute(k), ..) => Some(vec![k.as_str()]),
            Edit::Set(..) | Edit::ReplacePattern(..) | Edit::ReplaceMatch(..) => Some(Vec::new()),
            // Map editors may touch any key.
            _ => None,
        }
    }
}

/// Parses a list of statements, each `editor(args) [where condition]`, in `scope`.
///
/// # Errors
/// The index of the first statement that does not parse, is outside the subset, or has a
/// condition reading what an earlier statement writes, and why.
pub fn parse_statement_list(
    texts: &[String],
    scope: Scope,
) -> Result<Vec<Statement>, (usize, ConditionError)> {
    let mut out: Vec<Statement> = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let statement = parse_edit(text, scope).map_err(|e| (i, e))?;
        // A condition must not read what an earlier statement of the list writes.
        let resource = scope == Scope::Resource;
        if let Some(condition) = &statement.condition {
            for earlier in &out {
                let conflict = match earlier.edit.writes() {
                    None => condition.0.reads_attributes(resource),
                    Some(keys) => {
                        keys.iter()
                            .any(|k| condition.0.reads_attribute(k, resource))
                            || (keys.is_empty() && condition.0.reads_name_or_body())
                    }
                };
                if conflict {
                    return Err((
                        i,
                        ConditionError(
                            "this condition reads what an earlier statement writes; sluice evaluates conditions on the item as it arrived, so put the statements in separate transform processors".into(),
                        ),
                    ));
                }
            }
        }
        out.push(statement);
    }
    Ok(out)
}

fn parse_edit(text: &str, scope: Scope) -> Result<Statement, ConditionError> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
        scope,
    };
    let name = match (parser.next(), parser.next()) {
        (Some(Token::Ident(name)), Some(Token::Sym("("))) => name,
        _ => {
            return fail(
                "a statement reads `editor(arguments)`, optionally followed by `where <condition>`",
            );
        }
    };
    let edit = parser.edit(&name)?;
    let condition = if parser.keyword("where") {
        Some(Condition(parser.or()?))
    } else {
        None
    };
    if parser.at < parser.tokens.len() {
        return fail(format!(
            "unexpected {} after the statement",
            describe(parser.peek())
        ));
    }
    Ok(Statement { edit, condition })
}

fn literal_value(l: &Literal) -> Option<V> {
    Some(match l {
        Literal::Str(s) => V::StringValue(s.clone()),
        Literal::Int(i) => V::IntValue(*i),
        Literal::Float(f) => V::DoubleValue(*f),
        Literal::Bool(b) => V::BoolValue(*b),
        Literal::Nil => return None,
    })
}

fn find<'a>(attributes: &'a mut [KeyValue], key: &str) -> Option<&'a mut KeyValue> {
    attributes.iter_mut().find(|kv| kv.key == key)
}

fn put(attributes: &mut Vec<KeyValue>, key: &str, value: V) {
    let value = Some(Any { value: Some(value) });
    match find(attributes, key) {
        Some(kv) => kv.value = value,
        None => attributes.push(KeyValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
    }
}

/// The string a target holds, to rewrite; `None` when it holds something else or nothing.
fn string_of<'a>(item: &'a mut Editable<'_>, target: &Target) -> Option<&'a mut String> {
    match target {
        Target::Name => item.name.as_deref_mut(),
        Target::SeverityText => item.severity_text.as_deref_mut(),
        Target::Body => match item.body.as_deref_mut()? {
            Some(Any {
                value: Some(V::StringValue(s)),
            }) => Some(s),
            _ => None,
        },
        Target::Attribute(k) => match find(item.attributes, k)?.value.as_mut()?.value.as_mut()? {
            V::StringValue(s) => Some(s),
            _ => None,
        },
    }
}

/// The longest prefix of `s` of at most `limit` bytes that ends on a character boundary.
fn truncate(s: &mut String, limit: usize) {
    if s.len() > limit {
        let mut end = limit;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl Condition {
    /// Whether the condition reads resource attributes.
    pub fn reads_resource_attributes(&self) -> bool {
        self.0.reads_attributes(true)
    }
}

impl Statement {
    /// Whether the statement's condition reads resource attributes.
    pub fn reads_resource_attributes(&self) -> bool {
        self.condition
            .as_ref()
            .is_some_and(Condition::reads_resource_attributes)
    }

    /// Whether the statement applies to the item as it arrived.
    pub fn applies(&self, subject: &Subject<'_, '_>) -> bool {
        self.condition.as_ref().is_none_or(|c| c.holds(subject))
    }

    /// Applies the editor to the decoded item.
    pub fn apply(&self, item: &mut Editable<'_>) {
        match &self.edit {
            Edit::Set(target, source) => {
                let value = match source {
                    Source::Literal(l) => literal_value(l),
                    Source::Attribute(k) => find(item.attributes, k)
                        .and_then(|kv| kv.value.clone())
                        .and_then(|v| v.value),
                };
                let Some(value) = value else {
                    return;
                };
                match target {
                    Target::Attribute(k) => put(item.attributes, k, value),
                    Target::Body => {
                        if let Some(body) = item.body.as_deref_mut() {
                            *body = Some(Any { value: Some(value) });
                        }
                    }
                    Target::Name | Target::SeverityText => {
                        if let (Some(slot), V::StringValue(s)) = (string_of(item, target), value) {
                            *slot = s;
                        }
                    }
                }
            }
            Edit::DeleteKey(k) => item.attributes.retain(|kv| kv.key != *k),
            Edit::DeleteMatchingKeys(r) => item.attributes.retain(|kv| !r.is_match(&kv.key)),
            Edit::KeepKeys(keys) => item.attributes.retain(|kv| keys.contains(&kv.key)),
            Edit::TruncateAll(limit) => {
                for kv in item.attributes.iter_mut() {
                    if let Some(V::StringValue(s)) =
                        kv.value.as_mut().and_then(|v| v.value.as_mut())
                    {
                        truncate(s, *limit);
                    }
                }
            }
            Edit::Limit(n, priority) => {
                if item.attributes.len() > *n {
                    // Priority keys first (at most n of them), then the rest in order.
                    let (mut kept, rest): (Vec<KeyValue>, Vec<KeyValue>) =
                        std::mem::take(item.attributes)
                            .into_iter()
                            .partition(|kv| priority.contains(&kv.key));
                    kept.truncate(*n);
                    let room = n - kept.len();
                    kept.extend(rest.into_iter().take(room));
                    *item.attributes = kept;
                }
            }
            Edit::ReplacePattern(target, pattern, replacement) => {
                if let Some(s) = string_of(item, target) {
                    let new = pattern.replace_all(s, replacement.as_str()).into_owned();
                    *s = new;
                }
            }
            Edit::ReplaceAllPatterns {
                keys,
                pattern,
                replacement,
            } => {
                for kv in item.attributes.iter_mut() {
                    if *keys {
                        kv.key = pattern
                            .replace_all(&kv.key, replacement.as_str())
                            .into_owned();
                    } else if let Some(V::StringValue(s)) =
                        kv.value.as_mut().and_then(|v| v.value.as_mut())
                    {
                        *s = pattern.replace_all(s, replacement.as_str()).into_owned();
                    }
                }
            }
            Edit::ReplaceMatch(target, pattern, replacement) => {
                if let Some(s) = string_of(item, target)
                    && pattern.is_match(s)
                {
                    s.clone_from(replacement);
                }
            }
        }
    }
}

impl Expr {
    fn walk(&self, found: &mut dyn FnMut(&Path) -> bool) -> bool {
        match self {
            Expr::Const(_) => false,
            Expr::Compare(left, _, right) => left.any_path(found) || right.any_path(found),
            Expr::Call(_, path) => found(path),
            Expr::And(a, b) | Expr::Or(a, b) => a.walk(found) || b.walk(found),
            Expr::Not(a) => a.walk(found),
        }
    }

    /// Whether the condition reads the item's attributes (or, with `resource`, the resource's:
    /// what a `resource` context statement writes).
    fn reads_attributes(&self, resource: bool) -> bool {
        self.walk(&mut |p| match p {
            Path::Attribute(_) => !resource,
            Path::ResourceAttribute(_) => resource,
            _ => false,
        })
    }

    fn reads_attribute(&self, key: &str, resource: bool) -> bool {
        self.walk(&mut |p| match p {
            Path::Attribute(k) => !resource && k == key,
            Path::ResourceAttribute(k) => resource && k == key,
            _ => false,
        })
    }

    fn reads_name_or_body(&self) -> bool {
        self.walk(&mut |p| matches!(p, Path::Name | Path::Body | Path::SeverityText))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statements(texts: &[&str], scope: Scope) -> Vec<Statement> {
        let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        parse_statement_list(&texts, scope).unwrap_or_else(|(i, e)| panic!("{}: {e}", texts[i]))
    }

    fn s(v: &str) -> V {
        V::StringValue(v.into())
    }

    fn kv(k: &str, v: V) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(Any { value: Some(v) }),
            ..Default::default()
        }
    }

    fn run(list: &[Statement], name: &mut String, attributes: &mut Vec<KeyValue>) {
        for st in list {
            st.apply(&mut Editable {
                name: Some(name),
                body: None,
                severity_text: None,
                attributes,
            });
        }
    }

    #[test]
    fn endpoint_normalization_with_replace_pattern() {
        let list = statements(
            &[
                r#"replace_pattern(name, "/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "/{id}")"#,
                r#"replace_pattern(name, "/[0-9]+(/|$)", "/{id}$1")"#,
                r#"replace_pattern(name, "/[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*(/|$)", "/{id}$1")"#,
                r#"replace_pattern(attributes["http.route"], "/[0-9]+", "/{id}")"#,
            ],
            Scope::Span,
        );
        let mut name = "GET /users/123/orders/9f1c4b2e".to_owned();
        let mut attributes = vec![kv("http.route", s("/users/123/orders"))];
        run(&list, &mut name, &mut attributes);
        assert_eq!(name, "GET /users/{id}/orders/{id}");
        assert_eq!(attributes, vec![kv("http.route", s("/users/{id}/orders"))]);
        let mut uuid = "/carts/0b6f2c1e-8d3a-4f5b-9c7d-1e2f3a4b5c6d/items".to_owned();
        run(&list, &mut uuid, &mut Vec::new());
        assert_eq!(uuid, "/carts/{id}/items");
    }

    #[test]
    fn map_editors_follow_the_collector() {
        let list = statements(
            &[
                r#"delete_key(attributes, "password")"#,
                r#"delete_matching_keys(attributes, "^tmp\\.")"#,
                r#"truncate_all(attributes, 4)"#,
                r#"replace_all_patterns(attributes, "key", "^http\\.", "h.")"#,
                r#"set(attributes["copy"], attributes["h.method"])"#,
                r#"set(attributes["n"], 3)"#,
                r#"replace_match(attributes["h.method"], "G*", "get")"#,
                r#"limit(attributes, 3, ["n"])"#,
            ],
            Scope::Span,
        );
        let mut attributes = vec![
            kv("password", s("x")),
            kv("tmp.a", s("1")),
            kv("http.method", s("GETTING")),
            kv("http.url", s("https://x")),
            kv("ok", V::IntValue(1)),
        ];
        run(&list, &mut String::new(), &mut attributes);
        assert_eq!(
            attributes,
            vec![
                kv("n", V::IntValue(3)),
                kv("h.method", s("get")),
                kv("h.url", s("http"))
            ]
        );
        let keep = statements(&[r#"keep_keys(attributes, ["a", "c"])"#], Scope::Log);
        let mut attributes = vec![kv("a", s("1")), kv("b", s("2")), kv("c", s("3"))];
        run(&keep, &mut String::new(), &mut attributes);
        assert_eq!(attributes, vec![kv("a", s("1")), kv("c", s("3"))]);
    }

    #[test]
    fn unsupported_statements_are_refused_naming_what() {
        for (text, message) in [
            (
                r#"merge_maps(attributes, attributes, "upsert")"#,
                "the OTTL editor `merge_maps` is not supported",
            ),
            (r#"set(kind, 2)"#, "cannot be written"),
            (
                r#"delete_key(attributes["a"], "b")"#,
                "works on `attributes` (the whole map)",
            ),
            (
                r#"replace_pattern(name, "(", "x")"#,
                "is not a valid regular expression",
            ),
            (
                r#"set(attributes["a"], "b") where nonsense"#,
                "`nonsense` is not a path",
            ),
        ] {
            let err = parse_statement_list(&[text.to_owned()], Scope::Span)
                .unwrap_err()
                .1
                .to_string();
            assert!(err.contains(message), "{text}: {err}");
        }
        let err = parse_statement_list(
            &[
                r#"set(attributes["env"], "prod")"#.to_owned(),
                r#"delete_key(attributes, "x") where attributes["env"] == "prod""#.to_owned(),
            ],
            Scope::Span,
        )
        .unwrap_err();
        assert_eq!(err.0, 1);
        assert!(
            err.1
                .to_string()
                .contains("reads what an earlier statement writes")
        );
    }
}
