//! Label selectors (kubectl's `-l` syntax and objects' `LabelSelector`) and
//! field selectors (`--field-selector`).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::meta::LabelSelector;
use crate::names;
use crate::registry::ResourceInfo;

/// A selector that could not be parsed or built; the message names the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// The operator of a label [`Requirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` (or `key==value`): the label is present with that value.
    Equals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (a,b)`: the label is present with one of the values.
    In,
    /// `key notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>n`: the label is an integer greater than n.
    GreaterThan,
    /// `key<n`: the label is an integer less than n.
    LessThan,
}

/// One requirement of a label [`Selector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values, sorted and deduplicated (one for `=`, `!=`, `>`, `<`; none
    /// for Exists and DoesNotExist).
    pub values: Vec<String>,
}

impl Requirement {
    fn new(
        key: &str,
        operator: Operator,
        mut values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        if let Some(m) = names::qualified_name(key).into_iter().next() {
            return Err(SelectorError(format!("invalid label key \"{key}\": {m}")));
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError(format!(
                    "invalid requirement on \"{key}\": for 'in', 'notin' operators, values set can't be empty"
                )));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError(format!(
                    "invalid requirement on \"{key}\": values set must be empty for exists and does not exist"
                )));
            }
            Operator::GreaterThan | Operator::LessThan
                if values.len() != 1 || values[0].parse::<i64>().is_err() =>
            {
                return Err(SelectorError(format!(
                    "invalid requirement on \"{key}\": for 'gt', 'lt' operators, exactly one integer value is required"
                )));
            }
            _ => {}
        }
        if !matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            for v in &values {
                if let Some(m) = names::label_value(v).into_iter().next() {
                    return Err(SelectorError(format!(
                        "invalid label value \"{v}\" for key \"{key}\": {m}"
                    )));
                }
            }
        }
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// Whether a label of this requirement's key with `value` (None: no
    /// such label) satisfies it.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let contains = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(contains),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(contains),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        let k = &self.key;
        match self.operator {
            Operator::Equals => write!(f, "{k}={first}"),
            Operator::NotEquals => write!(f, "{k}!={first}"),
            Operator::In => write!(f, "{k} in ({})", self.values.join(",")),
            Operator::NotIn => write!(f, "{k} notin ({})", self.values.join(",")),
            Operator::Exists => write!(f, "{k}"),
            Operator::DoesNotExist => write!(f, "!{k}"),
            Operator::GreaterThan => write!(f, "{k}>{first}"),
            Operator::LessThan => write!(f, "{k}<{first}"),
        }
    }
}

/// A label selector: a conjunction of requirements. The empty selector
/// matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    LParen,
    RParen,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "'{s}'"),
            Token::Bang => f.write_str("'!'"),
            Token::Eq => f.write_str("'='"),
            Token::DoubleEq => f.write_str("'=='"),
            Token::NotEq => f.write_str("'!='"),
            Token::Gt => f.write_str("'>'"),
            Token::Lt => f.write_str("'<'"),
            Token::LParen => f.write_str("'('"),
            Token::RParen => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
            Token::End => f.write_str("end of input"),
        }
    }
}

fn lex(s: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let t = match c {
            c if c.is_whitespace() => continue,
            '!' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::NotEq
            }
            '!' => Token::Bang,
            '=' if chars.peek() == Some(&'=') => {
                chars.next();
                Token::DoubleEq
            }
            '=' => Token::Eq,
            '>' => Token::Gt,
            '<' => Token::Lt,
            '(' => Token::LParen,
            ')' => Token::RParen,
            ',' => Token::Comma,
            c => {
                let mut id = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || "!=<>(),".contains(n) {
                        break;
                    }
                    id.push(n);
                    chars.next();
                }
                Token::Ident(id)
            }
        };
        tokens.push(t);
    }
    tokens.push(Token::End);
    tokens
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self, found: &Token, expected: &str) -> SelectorError {
        SelectorError(format!(
            "unable to parse label selector \"{}\": found {found}, expected: {expected}",
            self.input
        ))
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let key = match self.next() {
            Token::Bang => match self.next() {
                Token::Ident(k) => return Requirement::new(&k, Operator::DoesNotExist, Vec::new()),
                t => return Err(self.error(&t, "identifier after '!'")),
            },
            Token::Ident(k) => k,
            t => return Err(self.error(&t, "!, identifier")),
        };
        let op = match self.peek() {
            Token::Comma | Token::End => {
                return Requirement::new(&key, Operator::Exists, Vec::new())
            }
            Token::Ident(w) if w == "in" => Operator::In,
            Token::Ident(w) if w == "notin" => Operator::NotIn,
            Token::Eq | Token::DoubleEq => Operator::Equals,
            Token::NotEq => Operator::NotEquals,
            Token::Gt => Operator::GreaterThan,
            Token::Lt => Operator::LessThan,
            t => return Err(self.error(&t.clone(), "in, notin, =, ==, !=, >, <")),
        };
        self.next();
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => match self.peek().clone() {
                Token::Ident(v) => {
                    self.next();
                    vec![v]
                }
                Token::Comma | Token::End => vec![String::new()],
                t => return Err(self.error(&t, "a value")),
            },
        };
        Requirement::new(&key, op, values)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::LParen => {}
            t => return Err(self.error(&t, "'('")),
        }
        let mut values = Vec::new();
        if *self.peek() == Token::RParen {
            self.next();
            return Ok(values);
        }
        loop {
            match self.peek().clone() {
                Token::Ident(v) => {
                    self.next();
                    values.push(v);
                }
                Token::Comma | Token::RParen => values.push(String::new()),
                t => return Err(self.error(&t, "a value, ',' or ')'")),
            }
            match self.next() {
                Token::Comma => {}
                Token::RParen => return Ok(values),
                t => return Err(self.error(&t, "',' or ')'")),
            }
        }
    }
}

impl Selector {
    /// Parses kubectl's syntax: comma-separated `a=b`, `a==b`, `a!=b`,
    /// `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`, `a<1`. The empty
    /// string is the selector that matches everything.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser {
            input: s,
            tokens: lex(s),
            pos: 0,
        };
        let mut requirements = Vec::new();
        if *p.peek() == Token::End {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(p.requirement()?);
            match p.next() {
                Token::End => break,
                Token::Comma => {}
                t => return Err(p.error(&t, "','")),
            }
        }
        Ok(Selector::from_requirements(requirements))
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements }
    }

    /// The selector that matches everything.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Whether it has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the labels satisfy every requirement. `!=` and `notin` match
    /// when the key is absent.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// [`Selector::matches`] over labels read through `label` (the value
    /// of a key, None when absent), so that an object's labels are not
    /// copied into a map to be matched: a list with a selector matches
    /// every object of its range.
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements
            .iter()
            .all(|r| r.matches_value(label(&r.key)))
    }

    /// The selector of an object's `LabelSelector`: matchLabels and
    /// matchExpressions (In, NotIn, Exists, DoesNotExist). An empty
    /// `LabelSelector` matches everything.
    pub fn from_label_selector(s: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in &s.match_labels {
            requirements.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
        }
        for e in &s.match_expressions {
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "\"{other}\" is not a valid label selector operator"
                    )))
                }
            };
            requirements.push(Requirement::new(&e.key, op, e.values.clone())?);
        }
        Ok(Selector::from_requirements(requirements))
    }

    /// `key=value` for every entry (an equality-based selector, as
    /// services and replication controllers have). Keys and values are
    /// taken as they are.
    pub fn from_map(m: &BTreeMap<String, String>) -> Selector {
        Selector {
            requirements: m
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    operator: Operator::Equals,
                    values: vec![v.clone()],
                })
                .collect(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One requirement of a [`FieldSelector`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field label, e.g. `spec.nodeName`.
    pub field: String,
    /// Whether the operator is `!=`.
    pub negated: bool,
    /// Value to compare with.
    pub value: String,
}

/// A field selector: a conjunction of `field=value` / `field!=value`
/// requirements on the fields a kind supports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

/// The JSON path and the value of an absent field, for a field label.
fn field_path(info: &ResourceInfo, field: &str) -> Option<(&'static str, &'static str)> {
    let common = [
        ("metadata.name", "metadata.name", ""),
        ("metadata.namespace", "metadata.namespace", ""),
    ];
    let per_kind: &[(&str, &'static str, &'static str)] = match info.kind {
        "Pod" => &[
            ("spec.nodeName", "spec.nodeName", ""),
            ("spec.restartPolicy", "spec.restartPolicy", ""),
            ("spec.schedulerName", "spec.schedulerName", ""),
            ("spec.serviceAccountName", "spec.serviceAccountName", ""),
            ("spec.hostNetwork", "spec.hostNetwork", "false"),
            ("status.phase", "status.phase", ""),
            ("status.podIP", "status.podIP", ""),
        ],
        "Node" => &[("spec.unschedulable", "spec.unschedulable", "false")],
        "Namespace" => &[("status.phase", "status.phase", "")],
        "Event" => &[
            ("involvedObject.kind", "involvedObject.kind", ""),
            ("involvedObject.name", "involvedObject.name", ""),
            ("involvedObject.namespace", "involvedObject.namespace", ""),
            ("involvedObject.uid", "involvedObject.uid", ""),
            ("involvedObject.apiVersion", "involvedObject.apiVersion", ""),
            (
                "involvedObject.resourceVersion",
                "involvedObject.resourceVersion",
                "",
            ),
            ("involvedObject.fieldPath", "involvedObject.fieldPath", ""),
            ("reason", "reason", ""),
            ("reportingComponent", "reportingComponent", ""),
            ("type", "type", ""),
            ("source", "source.component", ""),
        ],
        "Secret" => &[("type", "type", "")],
        "Job" => &[("status.successful", "status.succeeded", "0")],
        "ReplicationController" | "ReplicaSet" => &[("status.replicas", "status.replicas", "0")],
        _ => &[],
    };
    common
        .iter()
        .chain(per_kind.iter())
        .find(|(label, _, _)| *label == field)
        .map(|(_, path, absent)| (*path, *absent))
}

/// Splits on unescaped `sep`, keeping escapes.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
            continue;
        }
        if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    }
    parts
}

fn unescape(s: &str) -> Result<String, SelectorError> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=' | '!')) => out.push(n),
                Some(n) => {
                    return Err(SelectorError(format!(
                        "invalid escape sequence \"\\{n}\" in \"{s}\""
                    )))
                }
                None => {
                    return Err(SelectorError(format!(
                        "unterminated escape sequence in \"{s}\""
                    )))
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=' | '!') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl FieldSelector {
    /// Parses comma-separated `field=value`, `field==value` and
    /// `field!=value`. Values may escape `\`, `,`, `=` and `!` with a
    /// backslash. Fields: `metadata.name` and `metadata.namespace` for every
    /// kind, plus the kind's own (Pod: spec.nodeName, spec.restartPolicy,
    /// spec.schedulerName, spec.serviceAccountName, spec.hostNetwork,
    /// status.phase, status.podIP; Node: spec.unschedulable; Namespace:
    /// status.phase; Event: involvedObject.*, reason, type, source,
    /// reportingComponent; Secret: type; Job: status.successful;
    /// ReplicationController and ReplicaSet: status.replicas).
    pub fn parse(s: &str, info: &ResourceInfo) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector::everything());
        }
        for term in split_unescaped(s, ',') {
            let (field, negated, value) = split_term(&term).ok_or_else(|| {
                SelectorError(format!(
                    "invalid field selector \"{s}\": \"{}\" has no operator",
                    term.trim()
                ))
            })?;
            let field = field.trim();
            if field_path(info, field).is_none() {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                negated,
                value: unescape(value.trim())?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The selector that matches everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// Whether it has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order given.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The value the selector requires `field` to equal, if it has such a
    /// requirement (e.g. `spec.nodeName` for a node agent's watch).
    pub fn requires_exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }

    /// Whether the object (JSON of the kind the selector was parsed for)
    /// satisfies every requirement. An absent field reads as "" (as
    /// "false" for booleans and "0" for counts); booleans and numbers
    /// compare by their string form.
    pub fn matches(&self, object: &Value) -> bool {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        // Once per object, not per requirement: a list matches every
        // object of its range.
        let info = crate::registry::RESOURCES.iter().find(|i| i.kind == kind);
        self.requirements.iter().all(|r| {
            let (path, absent) = info
                .and_then(|i| field_path(i, &r.field))
                .unwrap_or((field_label_path(&r.field), ""));
            let equal = match field_at(object, path) {
                None | Some(Value::Null) => absent == r.value,
                Some(Value::String(s)) => *s == r.value,
                // By the string form: a Value equals a String only when it
                // is that string, and `true` or `3` must match "true", "3".
                #[allow(clippy::cmp_owned)]
                Some(other) => other.to_string() == r.value,
            };
            equal != r.negated
        })
    }
}

/// The JSON path of a field label whose kind is unknown: the label itself,
/// except for the labels that are renamed.
fn field_label_path(field: &str) -> &str {
    match field {
        "status.successful" => "status.succeeded",
        "source" => "source.component",
        f => f,
    }
}

fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    let bytes = term.as_bytes();
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'!' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], true, &term[i + 2..]))
            }
            b'=' if bytes.get(i + 1) == Some(&b'=') => {
                return Some((&term[..i], false, &term[i + 2..]))
            }
            b'=' => return Some((&term[..i], false, &term[i + 1..])),
            _ => {}
        }
    }
    None
}

/// The value at a dotted field path, if any.
fn field_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(object, |v, part| v.get(part))
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if r.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", r.field, escape(&r.value))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::LabelSelectorRequirement;
    use crate::registry;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let none = labels(&[]);
        let cases: &[(&str, bool, bool)] = &[
            // selector, matches l, matches empty labels
            ("app=web", true, false),
            ("app==web", true, false),
            ("app=db", false, false),
            ("app!=db", true, true),
            ("app!=web", false, true),
            ("app in (web,db)", true, false),
            ("app in (db)", false, false),
            ("app notin (db)", true, true),
            ("app notin (web, db)", false, true),
            ("app", true, false),
            ("!app", false, true),
            ("missing", false, false),
            ("!missing", true, true),
            ("n>4", true, false),
            ("n<5", false, false),
            ("app=web,tier=front", true, false),
            ("app=web,tier=back", false, false),
            ("  app = web ,  tier  in ( front )  ", true, false),
            ("", true, true),
        ];
        for (s, want, want_empty) in cases {
            let sel = Selector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(sel.matches(&l), *want, "{s}");
            assert_eq!(sel.matches(&none), *want_empty, "{s} on no labels");
            // Labels read in place match as the map does.
            let read = |k: &str| l.get(k).map(String::as_str);
            assert_eq!(sel.matches_with(read), *want, "{s} read in place");
            assert_eq!(sel.matches_with(|_| None), *want_empty, "{s} on none");
        }
    }

    #[test]
    fn display_round_trips() {
        let s =
            Selector::parse("tier notin (b, a),app==web, !gone,x,y!=z,env in (prod),n>3").unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env in (prod),!gone,n>3,tier notin (a,b),x,y!=z"
        );
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
        assert_eq!(Selector::parse("a=").unwrap().to_string(), "a=");
        assert!(Selector::parse("a=")
            .unwrap()
            .matches(&labels(&[("a", "")])));
        assert!(Selector::everything().is_empty());
        assert_eq!(Selector::everything().to_string(), "");
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        let cases = [
            ("a in (x", "unable to parse label selector \"a in (x\": found end of input, expected: ',' or ')'"),
            ("a in x", "unable to parse label selector \"a in x\": found 'x', expected: '('"),
            ("a b", "unable to parse label selector \"a b\": found 'b', expected: in, notin, =, ==, !=, >, <"),
            ("=b", "unable to parse label selector \"=b\": found '=', expected: !, identifier"),
            ("a=b,", "unable to parse label selector \"a=b,\": found end of input, expected: !, identifier"),
            ("a=b c", "unable to parse label selector \"a=b c\": found 'c', expected: ','"),
            ("!", "unable to parse label selector \"!\": found end of input, expected: identifier after '!'"),
            ("a in ()", "invalid requirement on \"a\": for 'in', 'notin' operators, values set can't be empty"),
            ("a>x", "invalid requirement on \"a\": for 'gt', 'lt' operators, exactly one integer value is required"),
            ("Bad_/x=1", "invalid label key \"Bad_/x\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
            ("a=-x", "invalid label value \"-x\" for key \"a\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
        ];
        for (s, want) in cases {
            assert_eq!(Selector::parse(s).unwrap_err().to_string(), want, "{s}");
        }
    }

    #[test]
    fn from_label_selector_and_map() {
        let ls = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: vec!["front".into(), "edge".into()],
                },
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "NotIn".into(),
                    values: vec!["dev".into()],
                },
                LabelSelectorRequirement {
                    key: "team".into(),
                    operator: "Exists".into(),
                    values: vec![],
                },
                LabelSelectorRequirement {
                    key: "old".into(),
                    operator: "DoesNotExist".into(),
                    values: vec![],
                },
            ],
        };
        let s = Selector::from_label_selector(&ls).unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env notin (dev),!old,team,tier in (edge,front)"
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "edge"), ("team", "x")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("team", "x"),
            ("old", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("team", "x"),
            ("env", "dev")
        ])));
        assert!(Selector::from_label_selector(&LabelSelector::default())
            .unwrap()
            .is_empty());

        let bad = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Like".into(),
                values: vec![],
            }],
            ..Default::default()
        };
        assert_eq!(
            Selector::from_label_selector(&bad).unwrap_err().to_string(),
            "\"Like\" is not a valid label selector operator"
        );
        let m = Selector::from_map(&labels(&[("b", "2"), ("a", "1")]));
        assert_eq!(m.to_string(), "a=1,b=2");
        assert!(m.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(!m.matches(&labels(&[("a", "1")])));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always"}, "status": {"phase": "Running"}});
        let m = |s: &str| {
            FieldSelector::parse(s, &registry::POD)
                .unwrap()
                .matches(&pod)
        };
        assert!(m("spec.nodeName=n1"));
        assert!(m("spec.nodeName==n1,status.phase=Running"));
        assert!(!m("spec.nodeName!=n1"));
        assert!(m("spec.nodeName!=n2"));
        assert!(m("metadata.name=p, metadata.namespace = ns"));
        assert!(m("status.podIP="));
        assert!(m("spec.hostNetwork=false"));
        assert!(!m("status.podIP!="));
        assert!(m(""));
        let sel =
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", &registry::POD).unwrap();
        assert_eq!(sel.requires_exact("spec.nodeName"), Some("n1"));
        assert_eq!(sel.requires_exact("status.phase"), None);
        assert_eq!(sel.to_string(), "spec.nodeName=n1,status.phase!=Failed");

        let node = json!({"kind": "Node", "metadata": {"name": "n"}});
        let n = |s: &str| {
            FieldSelector::parse(s, &registry::NODE)
                .unwrap()
                .matches(&node)
        };
        assert!(n("spec.unschedulable=false"));
        assert!(!n("spec.unschedulable=true"));
        assert!(
            !FieldSelector::parse("spec.unschedulable=false", &registry::NODE)
                .unwrap()
                .matches(&json!({"kind": "Node", "spec": {"unschedulable": true}}))
        );

        let ev = json!({"kind": "Event", "involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"}, "type": "Warning"});
        let e = |s: &str| {
            FieldSelector::parse(s, &registry::EVENT)
                .unwrap()
                .matches(&ev)
        };
        assert!(e(
            "involvedObject.kind=Pod,involvedObject.name=p,source=kubelet,type=Warning"
        ));
        assert!(!e("reason=Failed"));

        let job = json!({"kind": "Job", "status": {"succeeded": 1}});
        assert!(FieldSelector::parse("status.successful=1", &registry::JOB)
            .unwrap()
            .matches(&job));
        assert!(FieldSelector::parse("status.successful=0", &registry::JOB)
            .unwrap()
            .matches(&json!({"kind": "Job"})));
        let secret = json!({"kind": "Secret", "type": "kubernetes.io/tls"});
        assert!(
            FieldSelector::parse("type=kubernetes.io/tls", &registry::SECRET)
                .unwrap()
                .matches(&secret)
        );
        let ns = json!({"kind": "Namespace", "status": {"phase": "Active"}});
        assert!(
            FieldSelector::parse("status.phase=Active", &registry::NAMESPACE)
                .unwrap()
                .matches(&ns)
        );

        let escaped =
            FieldSelector::parse(r"metadata.name=a\,b\=c", &registry::CONFIG_MAP).unwrap();
        assert_eq!(escaped.requirements()[0].value, "a,b=c");
        assert_eq!(escaped.to_string(), r"metadata.name=a\,b\=c");
        assert!(escaped.matches(&json!({"kind": "ConfigMap", "metadata": {"name": "a,b=c"}})));
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(
            FieldSelector::parse("spec.foo=x", &registry::POD)
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.foo"
        );
        assert_eq!(
            FieldSelector::parse("spec.nodeName=x", &registry::SERVICE)
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.nodeName"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name", &registry::POD)
                .unwrap_err()
                .to_string(),
            "invalid field selector \"metadata.name\": \"metadata.name\" has no operator"
        );
        assert_eq!(
            FieldSelector::parse(r"metadata.name=a\x", &registry::POD)
                .unwrap_err()
                .to_string(),
            "invalid escape sequence \"\\x\" in \"a\\x\""
        );
    }
}
