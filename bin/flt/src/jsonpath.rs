//! kubectl's JSONPath templates, for `-o jsonpath=`, `-o custom-columns=`
//! and `--sort-by`: text with `{...}` actions. An action is a path
//! (`{.metadata.name}`, `{.items[*].metadata.name}`, `{..image}`,
//! `{.items[0]}`, `{.items[-1:]}`, `{.items[0,2]}`, `{.spec['a.b']}`,
//! `{.items[?(@.status.phase=="Running")]}`), a string literal
//! (`{"\n"}`), or `{range PATH}...{end}`, which repeats its body for each
//! value with `.` (and `@`) standing for that value. Several results of one
//! path are printed separated by spaces; strings as they are, anything else
//! as JSON. A missing field prints nothing (kubectl's
//! `--allow-missing-template-keys`, on by default).

use std::fmt;

use serde_json::Value;

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPathError {
    pub template: String,
    pub reason: String,
}

impl fmt::Display for JsonPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error parsing jsonpath {}: {}",
            self.template, self.reason
        )
    }
}

impl std::error::Error for JsonPathError {}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// `.name` or `['name']`
    Field(String),
    /// `[*]` or `.*`
    All,
    /// `[n]`, negative from the end
    Index(i64),
    /// `[a:b]`
    Slice(Option<i64>, Option<i64>),
    /// `..name`: every descendant's field of that name
    Descend(String),
    /// `[?(@.path OP literal)]`, or `[?(@.path)]` (the field exists)
    Filter(Path, Option<(Op, Value)>),
    /// `[0,2]`, `['a','b']`: each in turn
    Union(Vec<Step>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A path: from the root (`$`) or from the current value (`.`, `@`).
#[derive(Debug, Clone, PartialEq)]
struct Path {
    from_root: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Path),
    Range(Path, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parse a template (`{.metadata.name}{"\n"}`).
    pub fn parse(text: &str) -> Result<Template, JsonPathError> {
        let err = |reason: &str| JsonPathError {
            template: text.to_string(),
            reason: reason.to_string(),
        };
        // The actions and the text between them, ranges nested.
        let mut stack: Vec<(Option<Path>, Vec<Node>)> = vec![(None, Vec::new())];
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                push_text(&mut stack, rest);
                break;
            };
            push_text(&mut stack, &rest[..open]);
            let close = action_end(&rest[open..]).ok_or_else(|| err("unclosed action"))?;
            let action = rest[open + 1..open + close].trim();
            rest = &rest[open + close + 1..];
            if action == "end" {
                if stack.len() < 2 {
                    return Err(err("not in range, nothing to end"));
                }
                let (range, body) = stack.pop().unwrap_or_default();
                let Some(range) = range else {
                    return Err(err("not in range, nothing to end"));
                };
                if let Some(top) = stack.last_mut() {
                    top.1.push(Node::Range(range, body));
                }
            } else if let Some(p) = action.strip_prefix("range ") {
                stack.push((Some(parse_path(p.trim()).map_err(|r| err(&r))?), Vec::new()));
            } else if action.starts_with('"') || action.starts_with('\'') {
                let (s, tail) = literal(action).map_err(|r| err(&r))?;
                if !tail.trim().is_empty() {
                    return Err(err(&format!("unexpected {:?} after a string", tail.trim())));
                }
                push_text(&mut stack, &s);
            } else if action.is_empty() {
                return Err(err("empty action"));
            } else {
                let p = parse_path(action).map_err(|r| err(&r))?;
                if let Some(top) = stack.last_mut() {
                    top.1.push(Node::Path(p));
                }
            }
        }
        if stack.len() != 1 {
            return Err(err("unclosed range (no {end})"));
        }
        Ok(Template {
            nodes: stack.pop().map(|t| t.1).unwrap_or_default(),
        })
    }

    /// kubectl's relaxed form, for custom-columns and --sort-by:
    /// `.a.b`, `a.b` and `{.a.b}` mean the same.
    pub fn parse_relaxed(text: &str) -> Result<Template, JsonPathError> {
        let t = text.trim();
        if t.starts_with('{') {
            return Template::parse(t);
        }
        let t = if t.starts_with('.') || t.starts_with('$') || t.starts_with('@') {
            t.to_string()
        } else {
            format!(".{t}")
        };
        Template::parse(&format!("{{{t}}}"))
    }

    /// The template applied to `root`.
    pub fn render(&self, root: &Value) -> String {
        let mut out = String::new();
        render(&self.nodes, root, root, &mut out);
        out
    }

    /// The values of a relaxed template's single path (for columns and
    /// sorting); empty when the template is not one path.
    pub fn values<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        match self.nodes.as_slice() {
            [Node::Path(p)] => eval(p, root, root),
            _ => Vec::new(),
        }
    }
}

fn push_text(stack: &mut [(Option<Path>, Vec<Node>)], s: &str) {
    if s.is_empty() {
        return;
    }
    if let Some(top) = stack.last_mut() {
        match top.1.last_mut() {
            Some(Node::Text(t)) => t.push_str(s),
            _ => top.1.push(Node::Text(s.to_string())),
        }
    }
}

/// The offset of the `}` closing the action `s` starts with (skipping
/// braces inside quotes).
fn action_end(s: &str) -> Option<usize> {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '}' => return Some(i),
            None => {}
        }
    }
    None
}

/// A quoted string at the start of `s` (escapes \n \t \r \\ \" \'), and what follows.
fn literal(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let Some((_, q)) = chars.next() else {
        return Err("empty string".to_string());
    };
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in chars {
        if escaped {
            out.push(match c {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                other => other,
            });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == q {
            return Ok((out, &s[i + c.len_utf8()..]));
        } else {
            out.push(c);
        }
    }
    Err(format!("unterminated string {s}"))
}

fn parse_path(s: &str) -> Result<Path, String> {
    let mut rest = s;
    let from_root = rest.starts_with('$');
    if from_root || rest.starts_with('@') {
        rest = &rest[1..];
    }
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("..") {
            let (name, r) = ident(r);
            if name.is_empty() {
                return Err(format!("a field name must follow '..' in {s}"));
            }
            steps.push(Step::Descend(name));
            rest = r;
        } else if let Some(r) = rest.strip_prefix('.') {
            if let Some(r2) = r.strip_prefix('*') {
                steps.push(Step::All);
                rest = r2;
                continue;
            }
            let (name, r) = ident(r);
            // A lone "." is the current value.
            if !name.is_empty() {
                steps.push(Step::Field(name));
            } else if !r.is_empty() && !r.starts_with('[') {
                return Err(format!("unrecognized character in action: {r}"));
            }
            rest = r;
        } else if rest.starts_with('[') {
            let end = bracket_end(rest).ok_or_else(|| format!("unterminated array in {s}"))?;
            steps.push(parse_bracket(&rest[1..end])?);
            rest = &rest[end + 1..];
        } else {
            return Err(format!("unrecognized character in action: {rest}"));
        }
    }
    Ok(Path { from_root, steps })
}

/// A field name and what follows it; `\.` is a dot inside the name
/// (`{.metadata.labels.app\.kubernetes\.io/name}`).
fn ident(s: &str) -> (String, &str) {
    let mut name = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\\' && matches!(chars.peek(), Some((_, '.'))) {
            name.push('.');
            chars.next();
        } else if c.is_alphanumeric() || c == '_' || c == '-' || c == '/' {
            name.push(c);
        } else {
            return (name, &s[i..]);
        }
    }
    (name, "")
}

/// The offset of the `]` closing the bracket `s` starts with.
fn bracket_end(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    let t = inner.trim();
    if !t.starts_with('?') {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some((a, b)) = split_outside_quotes(rest, ",") {
            parts.push(a);
            rest = b;
        }
        if !parts.is_empty() {
            parts.push(rest);
            return parts
                .into_iter()
                .map(parse_bracket)
                .collect::<Result<Vec<_>, _>>()
                .map(Step::Union);
        }
    }
    if t == "*" {
        return Ok(Step::All);
    }
    if t.starts_with('\'') || t.starts_with('"') {
        let (name, tail) = literal(t)?;
        if !tail.trim().is_empty() {
            return Err(format!("unexpected {tail:?} in [{inner}]"));
        }
        return Ok(Step::Field(name));
    }
    if let Some(f) = t.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        return parse_filter(f.trim());
    }
    let num = |x: &str| -> Result<Option<i64>, String> {
        let x = x.trim();
        if x.is_empty() {
            return Ok(None);
        }
        x.parse()
            .map(Some)
            .map_err(|_| format!("invalid array index {x:?}"))
    };
    if let Some((a, b)) = t.split_once(':') {
        return Ok(Step::Slice(num(a)?, num(b)?));
    }
    match num(t)? {
        Some(i) => Ok(Step::Index(i)),
        None => Err("empty array index".to_string()),
    }
}

fn parse_filter(f: &str) -> Result<Step, String> {
    const OPS: [(&str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    for (text, op) in OPS {
        if let Some((l, r)) = split_outside_quotes(f, text) {
            let path = parse_path(l.trim())?;
            let r = r.trim();
            let v = if r.starts_with('"') || r.starts_with('\'') {
                Value::String(literal(r)?.0)
            } else {
                serde_json::from_str(r).map_err(|_| format!("invalid value {r:?} in filter"))?
            };
            return Ok(Step::Filter(path, Some((op, v))));
        }
    }
    if !f.starts_with('@') {
        return Err(format!("a filter must test @: ?({f})"));
    }
    Ok(Step::Filter(parse_path(f)?, None))
}

fn split_outside_quotes<'a>(s: &'a str, pat: &str) -> Option<(&'a str, &'a str)> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if s[i..].starts_with(pat) => return Some((&s[..i], &s[i + pat.len()..])),
            None => {}
        }
    }
    None
}

fn render(nodes: &[Node], root: &Value, cur: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Path(p) => {
                let vals = eval(p, root, cur);
                let texts: Vec<String> = vals.iter().map(|v| scalar(v)).collect();
                out.push_str(&texts.join(" "));
            }
            Node::Range(p, body) => {
                for v in eval(p, root, cur) {
                    render(body, root, v, out);
                }
            }
        }
    }
}

/// How one value prints: a string as it is, anything else as JSON.
pub fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn eval<'a>(p: &Path, root: &'a Value, cur: &'a Value) -> Vec<&'a Value> {
    let mut vals = vec![if p.from_root { root } else { cur }];
    for s in &p.steps {
        let mut next = Vec::new();
        for v in vals {
            step(s, root, v, &mut next);
        }
        vals = next;
    }
    vals
}

fn step<'a>(s: &Step, root: &'a Value, v: &'a Value, out: &mut Vec<&'a Value>) {
    match s {
        Step::Field(name) => out.extend(v.get(name.as_str())),
        Step::All => match v {
            Value::Array(a) => out.extend(a.iter()),
            Value::Object(m) => out.extend(m.values()),
            _ => {}
        },
        Step::Index(i) => {
            if let Value::Array(a) = v {
                let i = if *i < 0 { a.len() as i64 + i } else { *i };
                out.extend(usize::try_from(i).ok().and_then(|i| a.get(i)));
            }
        }
        Step::Slice(from, to) => {
            if let Value::Array(a) = v {
                let len = a.len() as i64;
                let clamp = |x: i64| (if x < 0 { len + x } else { x }).clamp(0, len) as usize;
                let from = clamp(from.unwrap_or(0));
                let to = clamp(to.unwrap_or(len));
                if from < to {
                    out.extend(a[from..to].iter());
                }
            }
        }
        Step::Descend(name) => descend(name, v, out),
        Step::Union(steps) => {
            for s in steps {
                step(s, root, v, out);
            }
        }
        Step::Filter(path, test) => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for it in items {
                let found = eval(path, root, it);
                let keep = match test {
                    None => !found.is_empty(),
                    Some((op, want)) => found.first().is_some_and(|got| compare(got, *op, want)),
                };
                if keep {
                    out.push(it);
                }
            }
        }
    }
}

fn descend<'a>(name: &str, v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            out.extend(m.get(name));
            for c in m.values() {
                descend(name, c, out);
            }
        }
        Value::Array(a) => {
            for c in a {
                descend(name, c, out);
            }
        }
        _ => {}
    }
}

fn compare(got: &Value, op: Op, want: &Value) -> bool {
    use std::cmp::Ordering;
    let ord = match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) if a == b => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, o) => o == Some(Ordering::Equal),
        (Op::Ne, o) => o != Some(Ordering::Equal),
        (_, None) => false,
        (Op::Lt, Some(o)) => o == Ordering::Less,
        (Op::Le, Some(o)) => o != Ordering::Greater,
        (Op::Gt, Some(o)) => o == Ordering::Greater,
        (Op::Ge, Some(o)) => o != Ordering::Less,
    }
}

/// The order `--sort-by` puts two values in, as kubectl's: numbers by
/// value, strings that are both quantities (`100m`, `2Gi`, `10`) by
/// amount, other strings (and so RFC 3339 times) in natural order
/// (`a2` before `a10`); a missing value first.
pub fn sort_order(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let num = |x: Option<f64>, y: Option<f64>| x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => num(x.as_f64(), y.as_f64()),
        (Some(Value::String(x)), Some(Value::String(y))) => {
            match (
                flotilla_objects::parse_quantity(x),
                flotilla_objects::parse_quantity(y),
            ) {
                (Some(p), Some(q)) => num(Some(p), Some(q)),
                _ => natural(x, y),
            }
        }
        (Some(x), Some(y)) => natural(&scalar(x), &scalar(y)),
    }
}

/// Natural order: runs of digits compare by value.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut x, mut y) = (a, b);
    loop {
        let (Some(c), Some(d)) = (x.chars().next(), y.chars().next()) else {
            return x.len().cmp(&y.len());
        };
        if c.is_ascii_digit() && d.is_ascii_digit() {
            let n = x.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(x.len());
            let m = y.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(y.len());
            let (p, q) = (
                x[..n].trim_start_matches('0'),
                y[..m].trim_start_matches('0'),
            );
            let o = p.len().cmp(&q.len()).then_with(|| p.cmp(q));
            if o != Ordering::Equal {
                return o;
            }
            x = &x[n..];
            y = &y[m..];
        } else {
            if c != d {
                return c.cmp(&d);
            }
            x = &x[c.len_utf8()..];
            y = &y[d.len_utf8()..];
        }
    }
}

#[cfg(test)]
mod tests;
