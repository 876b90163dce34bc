//! Label selectors (`app=web,tier!=db,env in (a,b),!legacy`) and field selectors
//! (`metadata.name=x,status.phase!=Running`), parsed and matched as upstream does.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A malformed selector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unable to parse requirement: {0}")]
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
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn check_key(key: &str, whole: &str) -> Result<String, SelectorError> {
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_string())
    } else {
        Err(SelectorError(format!(
            "invalid label key \"{key}\" in \"{whole}\""
        )))
    }
}

fn check_value(value: &str, whole: &str) -> Result<String, SelectorError> {
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_string())
    } else {
        Err(SelectorError(format!(
            "invalid label value \"{value}\" in \"{whole}\""
        )))
    }
}

fn parse_set(rest: &str, whole: &str) -> Result<BTreeSet<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("expected a parenthesised set in \"{whole}\"")))?;
    inner
        .split(',')
        .map(|v| check_value(v.trim(), whole))
        .collect()
}

impl LabelSelector {
    /// Parses a selector string; the empty string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self(requirements));
        }
        for part in split_top_level(input) {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError(format!("empty requirement in \"{input}\"")));
            }
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(check_key(key.trim(), part)?)
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(
                    check_key(key.trim(), part)?,
                    check_value(value.trim(), part)?,
                )
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(
                    check_key(key.trim(), part)?,
                    check_value(value.trim(), part)?,
                )
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(
                    check_key(key.trim(), part)?,
                    check_value(value.trim(), part)?,
                )
            } else if let Some((key, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(check_key(key.trim(), part)?, parse_set(rest, part)?)
            } else if let Some((key, rest)) = part.split_once(" in ") {
                Requirement::In(check_key(key.trim(), part)?, parse_set(rest, part)?)
            } else {
                Requirement::Exists(check_key(part, part)?)
            };
            requirements.push(requirement);
        }
        Ok(Self(requirements))
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

impl FieldSelector {
    /// Parses a field selector; the empty string selects everything.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self(terms));
        }
        // Upstream skips empty terms (`a=b,`).
        for part in input.split(',').filter(|p| !p.trim().is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid field selector \"{part}\": expected field=value"
                )));
            };
            terms.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    /// The fields this selector uses.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(f, _, _)| f.as_str())
    }

    /// Whether an object is selected; `field` returns a field's value ("" when unset).
    pub fn matches(&self, field: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|(f, equal, value)| (field(f) == *value) == *equal)
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
            "x".into()
        } else {
            "Pending".into()
        }));
        assert!(!f.matches(|_| "Running".into()));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
