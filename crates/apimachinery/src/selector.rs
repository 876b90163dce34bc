//! Label selectors (`app=web,tier!=db,env in (a,b),!legacy`) and field selectors
//! (`metadata.name=x,status.phase!=Running`), parsed and matched as upstream does.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::validation::{FieldError, is_qualified_name, is_valid_label_value};

/// A malformed selector, with upstream's message (answered as a 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: also true when the key is absent.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, BTreeSet<String>),
    /// `key notin (a,b)`: also true when the key is absent.
    NotIn(String, BTreeSet<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
    /// `key>n`: the label is an integer greater than `n`.
    GreaterThan(String, i64),
    /// `key<n`: the label is an integer less than `n`.
    LessThan(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// The tokens of upstream's selector lexer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn literal_token(text: &str) -> Option<Token> {
    Some(match text {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits `input` into tokens as upstream's lexer does (identifiers end at blanks and at
/// operator characters; operators are the longest known prefix).
fn lex(input: &str) -> Vec<(Token, String)> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut items = Vec::new();
    loop {
        while pos < bytes.len() && is_blank(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            items.push((Token::End, String::new()));
            return items;
        }
        let start = pos;
        if is_special(bytes[pos]) {
            let mut last: Option<(Token, usize)> = None;
            while pos < bytes.len() && is_special(bytes[pos]) {
                let candidate = &input[start..=pos];
                match literal_token(candidate) {
                    Some(token) => last = Some((token, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            match last {
                Some((token, end)) => {
                    pos = end;
                    items.push((token, input[start..end].to_string()));
                }
                None => items.push((
                    Token::Error,
                    format!("error expected: keyword found '{}'", &input[start..pos]),
                )),
            }
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_blank(bytes[pos]) {
                pos += 1;
            }
            let text = &input[start..pos];
            items.push((
                literal_token(text).unwrap_or(Token::Identifier),
                text.to_string(),
            ));
        }
    }
}

/// Whether a parser reads keys and operators, or values (where `in` and `notin` are names).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

fn err(message: impl Into<String>) -> SelectorError {
    SelectorError(message.into())
}

/// A key that is not a qualified name: upstream's `field.Invalid` at a nil path.
fn check_key(key: &str, path: &str) -> Result<(), FieldError> {
    let problems = is_qualified_name(key);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(FieldError::invalid(path, key, problems.join("; ")))
    }
}

impl Parser {
    fn at(&self, index: usize, context: Context) -> (Token, String) {
        let (token, text) = self
            .items
            .get(index)
            .cloned()
            .unwrap_or((Token::End, String::new()));
        match token {
            Token::In | Token::NotIn if context == Context::Values => (Token::Identifier, text),
            other => (other, text),
        }
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.at(self.position, context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.at(self.position, context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, text) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .requirement()
                        .map_err(|e| err(format!("unable to parse requirement: {}", e.0)))?;
                    requirements.push(requirement);
                    let (next, text) = self.consume(Context::Values);
                    match next {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (after, text) = self.lookahead(Context::Values);
                            if after != Token::Identifier && after != Token::DoesNotExist {
                                return Err(err(format!(
                                    "found '{text}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(err(format!(
                                "found '{text}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(err(format!(
                        "found '{text}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (mut token, mut key) = self.consume(Context::Values);
        let negated = token == Token::DoesNotExist;
        if negated {
            (token, key) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(err(format!("found '{key}', expected: identifier")));
        }
        check_key(&key, "<nil>").map_err(|e| err(e.to_string()))?;
        if negated {
            // Upstream ends a `!key` requirement here; whatever follows must be `,` or the end.
            return Ok(Requirement::NotExists(key));
        }
        let (next, _) = self.lookahead(Context::Values);
        if matches!(next, Token::End | Token::Comma) {
            return Ok(Requirement::Exists(key));
        }
        let (token, text) = self.consume(Context::KeyAndOperator);
        let values = match token {
            Token::In | Token::NotIn => self.set()?,
            Token::Equals
            | Token::DoubleEquals
            | Token::NotEquals
            | Token::GreaterThan
            | Token::LessThan => self.exact_value()?,
            _ => return Err(err(format!("found '{text}', expected: {BINARY_OPERATORS}"))),
        };
        let mut problems = Vec::new();
        let numeric = matches!(token, Token::GreaterThan | Token::LessThan);
        let number = values.iter().next().and_then(|v| v.parse::<i64>().ok());
        if numeric && number.is_none() {
            problems.push(FieldError::invalid(
                "values[0]",
                values.iter().next().cloned().unwrap_or_default(),
                "for 'Gt', 'Lt' operators, the value must be an integer",
            ));
        }
        for (i, value) in values.iter().enumerate() {
            let found = is_valid_label_value(value);
            if !found.is_empty() {
                problems.push(FieldError::invalid(
                    format!("values[{i}][{key}]"),
                    value.as_str(),
                    found.join("; "),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(err(crate::validation::aggregate(&problems)));
        }
        let first = || values.iter().next().cloned().unwrap_or_default();
        Ok(match (token, number) {
            (Token::In, _) => Requirement::In(key, values),
            (Token::NotIn, _) => Requirement::NotIn(key, values),
            (Token::NotEquals, _) => Requirement::NotEquals(key, first()),
            (Token::GreaterThan, Some(n)) => Requirement::GreaterThan(key, n),
            (Token::LessThan, Some(n)) => Requirement::LessThan(key, n),
            _ => Requirement::Equals(key, first()),
        })
    }

    /// `(a, b, ...)`; empty entries are the empty value.
    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let (token, text) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(err(format!("found '{text}' expected: '('")));
        }
        let (token, text) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let set = self.identifiers()?;
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosedPar {
                    return Err(err(format!("found '{text}', expected: ')'")));
                }
                Ok(set)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(err(format!(
                "found '{text}', expected: ',', ')' or identifier"
            ))),
        }
    }

    fn identifiers(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let mut set = BTreeSet::new();
        loop {
            let (token, text) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    set.insert(text);
                    let (next, text) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set),
                        _ => return Err(err(format!("found '{text}', expected: ',' or ')'"))),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        set.insert(String::new());
                        return Ok(set);
                    }
                    if next == Token::Comma {
                        self.consume(Context::Values);
                        set.insert(String::new());
                    }
                }
                _ => return Err(err(format!("found '{text}', expected: ',', or identifier"))),
            }
        }
    }

    /// The one value of `=`, `==`, `!=`, `>` or `<` (empty at the end or before a comma).
    fn exact_value(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        let (token, _) = self.lookahead(Context::Values);
        if matches!(token, Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (token, text) = self.consume(Context::Values);
        if token == Token::Identifier {
            return Ok(BTreeSet::from([text]));
        }
        Err(err(format!("found '{text}', expected: identifier")))
    }
}

impl LabelSelector {
    /// Parses a selector string as upstream's `labels.Parse` does; the empty string selects
    /// everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            items: lex(input),
            position: 0,
        };
        Ok(Self(parser.parse()?))
    }

    /// Whether an object with these labels (`metadata.labels`) is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => get(k).is_none_or(|v| !set.contains(v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::GreaterThan(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Requirement::LessThan(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed field selector: `field=value` / `field==value` / `field!=value` terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// Splits a field selector on commas that no backslash escapes.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut start, mut escaped) = (0, false);
    for (i, c) in selector.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Upstream's `UnescapeValue`: `\\`, `\,` and `\=` stand for themselves; a bare `,` or `=` is
/// an error.
fn unescape(value: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(err(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )));
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    u32::from(c)
                )));
            }
            other => out.push(other),
        }
    }
    if escaped {
        return Err(err("invalid field selector: invalid escape sequence: \\"));
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses a field selector as upstream's `fields.ParseSelector` does (no trimming; `\,`,
    /// `\=` and `\\` escape a value); the empty string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(input);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let split = part.char_indices().find_map(|(i, _)| {
                let rest = &part[i..];
                ["!=", "==", "="]
                    .into_iter()
                    .find(|op| rest.starts_with(op))
                    .map(|op| (&part[..i], op, &rest[op.len()..]))
            });
            let Some((field, op, value)) = split else {
                return Err(err(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            terms.push((field.to_string(), op != "!=", unescape(value)?));
        }
        Ok(Self(terms))
    }

    /// The fields this selector uses.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(f, _, _)| f.as_str())
    }

    /// The value an equality term (`field=value`) requires of `field`, if there is one: an
    /// object whose `field` has another value is never selected.
    pub fn required(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, equal, _)| *equal && f == field)
            .map(|(_, _, value)| value.as_str())
    }

    /// Whether an object is selected; `field` returns a field's value ("" when unset).
    pub fn matches<S: AsRef<str>>(&self, field: impl Fn(&str) -> S) -> bool {
        self.0
            .iter()
            .all(|(f, equal, value)| (field(f).as_ref() == value) == *equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn label_selector_should_support_every_operator() {
        let l = labels(json!({"app": "web", "tier": "front", "env": "prod"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "env in (prod, staging)",
            "env notin (dev)",
            "missing notin (dev)",
            "app",
            "!missing",
            "app=web,tier=front,env in (prod)",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "env in (dev)",
            "env notin (prod)",
            "missing",
            "!app",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
    }

    #[test]
    fn label_selector_should_reject_garbage() {
        for s in ["app=", "=x", "a b", "env in prod", "app=web,", "x in (a b)"] {
            let parsed = LabelSelector::parse(s);
            if s == "app=" {
                // An empty value is valid upstream (`app=` selects app="").
                assert!(parsed.is_ok());
            } else {
                assert!(parsed.is_err(), "{s}");
            }
        }
    }

    #[test]
    fn field_selector_should_compare_fields() {
        let f = FieldSelector::parse("metadata.name=x,status.phase!=Running").unwrap();
        assert!(f.matches(|field| if field == "metadata.name" {
            "x"
        } else {
            "Pending"
        }));
        assert!(!f.matches(|_| String::from("Running")));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn label_selector_with_an_invalid_key_should_get_upstreams_message() {
        let error = LabelSelector::parse("-bad=x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unable to parse requirement: <nil>: Invalid value: \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        let error = LabelSelector::parse("!a/b/c").unwrap_err();
        assert!(
            error.0.starts_with(
                "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name"
            ),
            "{error}"
        );
        let value = LabelSelector::parse("app=-x").unwrap_err();
        assert!(value.0.starts_with("unable to parse requirement: values[0][app]: Invalid value: \"-x\": a valid label must be"), "{value}");
    }

    #[test]
    fn label_selector_syntax_errors_should_read_as_upstreams() {
        let cases = [
            (
                "=x",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            ("app=web,", "found '', expected: identifier after ','"),
            (
                "env in prod",
                "unable to parse requirement: found 'prod' expected: '('",
            ),
            (
                "x in (a b)",
                "unable to parse requirement: found 'b', expected: ',' or ')'",
            ),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            (
                "n>x",
                "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
        ];
        for (input, message) in cases {
            assert_eq!(
                LabelSelector::parse(input).unwrap_err().0,
                message,
                "{input}"
            );
        }
    }

    #[test]
    fn label_selector_should_compare_numbers_and_read_keywords_as_values() {
        let l = labels(json!({"n": "5", "in": "notin"}));
        assert!(LabelSelector::parse("n>4,n<6").unwrap().matches(Some(&l)));
        assert!(!LabelSelector::parse("n>5").unwrap().matches(Some(&l)));
        assert!(LabelSelector::parse("in=notin").unwrap().matches(Some(&l)));
        assert!(
            LabelSelector::parse("in in (notin, x)")
                .unwrap()
                .matches(Some(&l))
        );
        assert!(
            LabelSelector::parse("x in ()")
                .unwrap()
                .matches(Some(&labels(json!({"x": ""}))))
        );
        assert!(LabelSelector::parse("  ").unwrap().is_empty());
    }

    #[test]
    fn field_selector_should_unescape_values_and_refuse_bare_operators() {
        let f = FieldSelector::parse("metadata.name=a\\,b,spec.x!=y").unwrap();
        assert_eq!(
            f.0,
            vec![
                ("metadata.name".into(), true, "a,b".into()),
                ("spec.x".into(), false, "y".into())
            ]
        );
        assert_eq!(
            FieldSelector::parse("nonsense").unwrap_err().0,
            "invalid selector: 'nonsense'; can't understand 'nonsense'"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err().0,
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            FieldSelector::parse("a=b\\x").unwrap_err().0,
            "invalid field selector: invalid escape sequence: \\x"
        );
    }

    #[test]
    fn a_field_selectors_required_value_should_come_from_an_equality_term_only() {
        let f = FieldSelector::parse("spec.nodeName!=,metadata.name==web").unwrap();
        assert_eq!(f.required("metadata.name"), Some("web"));
        assert_eq!(f.required("spec.nodeName"), None);
        assert_eq!(FieldSelector::default().required("metadata.name"), None);
    }
}
