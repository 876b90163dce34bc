//! Upstream's field errors and string formats, word for word as Kubernetes 1.34 writes them
//! (`k8s.io/apimachinery/pkg/util/validation` and `.../validation/field`): label keys and
//! values, DNS-1123 and DNS-1035 names, ConfigMap keys, path segments, and the `field.Error`
//! that becomes one `cause` of a 422 (its `ErrorBody` is the cause's message, `field: body` a part
//! of the Status message).

use crate::status::{ApiError, Cause, Target};

/// The longest label value, and the longest name part of a qualified name.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// The longest DNS-1123 (or DNS-1035) label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// The longest DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_MAP_KEY_ERR: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";

/// "must be no more than N characters" (upstream's `MaxLenError`).
pub fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// Upstream's `RegexError`: the message, its examples and the regex.
pub fn regex_error(message: &str, regex: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{message} (regex used for validation is '{regex}')");
    }
    let shown: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{message} (e.g. {}regex used for validation is '{regex}')",
        shown.join(" or ")
    )
}

/// "must be non-empty".
pub fn empty_error() -> &'static str {
    "must be non-empty"
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_label(s: &str) -> bool {
    let lower = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            lower(first) && lower(last) && bytes.iter().all(|b| lower(b) || *b == b'-')
        }
        _ => false,
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(is_dns_label)
}

/// What is wrong with `value` as a qualified name (a label key, an annotation key, a finalizer):
/// an optional DNS subdomain prefix and `/`, then a name part of at most 63 characters.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push(format!("prefix part {}", empty_error()));
            } else {
                errors.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push(format!("name part {}", empty_error()));
    } else if name.len() > LABEL_VALUE_MAX_LENGTH {
        errors.push(format!(
            "name part {}",
            max_len_error(LABEL_VALUE_MAX_LENGTH)
        ));
    }
    if !is_qualified_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// What is wrong with `value` as a label value (empty, or a qualified name part).
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errors.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !value.is_empty() && !is_qualified_part(value) {
        errors.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// What is wrong with `value` as a DNS-1123 label (namespaces, most short names).
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !is_dns_label(value) {
        if is_dns_subdomain(value) {
            errors.push("must not contain dots".into());
        } else {
            errors.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errors
}

/// What is wrong with `value` as a DNS-1123 subdomain (most object names).
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !is_dns_subdomain(value) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// What is wrong with `value` as a DNS-1035 label (Service names: a letter first).
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !(is_dns_label(value) && value.as_bytes()[0].is_ascii_lowercase()) {
        errors.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errors
}

/// What is wrong with `value` as a key of a ConfigMap's or a Secret's data.
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !valid {
        errors.push(regex_error(
            CONFIG_MAP_KEY_ERR,
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    match value {
        "." => errors.push("must not be '.'".into()),
        ".." => errors.push("must not be '..'".into()),
        v if v.starts_with("..") => errors.push("must not start with '..'".into()),
        _ => {}
    }
    errors
}

/// What is wrong with `name` as a path segment (the least any stored name must be); a `prefix`
/// (a generateName) may be `.` or `..`.
pub fn is_valid_path_segment_name(name: &str, prefix: bool) -> Vec<String> {
    if !prefix {
        for illegal in [".", ".."] {
            if name == illegal {
                return vec![format!("may not be '{illegal}'")];
            }
        }
    }
    ["/", "%"]
        .iter()
        .filter(|illegal| name.contains(**illegal))
        .map(|illegal| format!("may not contain '{illegal}'"))
        .collect()
}

/// Whether Go's `unicode.IsPrint` holds for `c`: letters, marks, numbers, punctuation, symbols
/// and the ASCII space; not controls, format characters, private use or other spaces.
pub fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    let format = matches!(
        c,
        '\u{ad}'
            | '\u{600}'..='\u{605}'
            | '\u{61c}'
            | '\u{6dd}'
            | '\u{70f}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    );
    let private = matches!(c, '\u{e000}'..='\u{f8ff}' | '\u{f0000}'..);
    let unassigned = matches!(c, '\u{fdd0}'..='\u{fdef}') || (c as u32 & 0xfffe) == 0xfffe;
    !(c.is_control() || c.is_whitespace() || format || private || unassigned)
}

/// The longest field manager name.
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// Upstream's `ValidateFieldManager` of `manager` at `field` (`fieldManager`,
/// `metadata.managedFields[0].manager`): at most 128 bytes, printable characters only.
pub fn field_manager(manager: &str, field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if manager.len() > FIELD_MANAGER_MAX_LENGTH {
        errors.push(FieldError::too_long(field, FIELD_MANAGER_MAX_LENGTH));
    }
    for (i, c) in manager.char_indices() {
        if !is_print(c) {
            errors.push(FieldError::invalid(
                field,
                manager,
                format!("invalid character U+{:04X} (at position {i})", c as u32),
            ));
        }
    }
    errors
}

/// A string quoted as Go's `%q` (strconv.Quote) writes it.
pub fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_print(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// The type of a field error, as upstream names it (`field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// A value that must be there is not.
    Required,
    /// A malformed value.
    Invalid,
    /// A value outside an enumeration.
    NotSupported,
    /// A value not allowed here.
    Forbidden,
    /// A value too long (the value is not shown).
    TooLong,
    /// A value given twice.
    Duplicate,
}

impl ErrorType {
    /// The cause's `reason` (`FieldValueInvalid`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::Duplicate => "FieldValueDuplicate",
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::Duplicate => "Duplicate value",
        }
    }
}

/// The rejected value of a field error, rendered as Go renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadValue {
    /// A string: quoted (`%q`).
    Str(String),
    /// A number or a boolean: as is.
    Plain(String),
    /// Anything else: its JSON.
    Json(String),
}

impl From<&str> for BadValue {
    fn from(value: &str) -> Self {
        Self::Str(value.to_string())
    }
}

impl From<String> for BadValue {
    fn from(value: String) -> Self {
        Self::Str(value)
    }
}

impl From<i64> for BadValue {
    fn from(value: i64) -> Self {
        Self::Plain(value.to_string())
    }
}

impl From<&serde_json::Value> for BadValue {
    fn from(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::String(s) => Self::Str(s.clone()),
            serde_json::Value::Number(n) => Self::Plain(n.to_string()),
            serde_json::Value::Bool(b) => Self::Plain(b.to_string()),
            other => Self::Json(other.to_string()),
        }
    }
}

/// One field-level problem (upstream's `field.Error`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem.
    pub kind: ErrorType,
    /// The field path, e.g. `metadata.labels`.
    pub field: String,
    /// The rejected value, where the message shows it.
    pub value: Option<BadValue>,
    /// Why.
    pub detail: String,
}

impl FieldError {
    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: ErrorType::Invalid,
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    /// `Required value[: <detail>]`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            kind: ErrorType::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self {
            kind: ErrorType::TooLong,
            field: field.into(),
            value: None,
            detail: format!(
                "may not be more than {max} {}",
                if max == 1 { "byte" } else { "bytes" }
            ),
        }
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<BadValue>,
        valid: &[&str],
    ) -> Self {
        let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
        Self {
            kind: ErrorType::NotSupported,
            field: field.into(),
            value: Some(value.into()),
            detail: if valid.is_empty() {
                String::new()
            } else {
                format!("supported values: {}", quoted.join(", "))
            },
        }
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<BadValue>) -> Self {
        Self {
            kind: ErrorType::Duplicate,
            field: field.into(),
            value: Some(value.into()),
            detail: String::new(),
        }
    }

    /// The message without the field (upstream's `ErrorBody`): a cause's `message`.
    pub fn body(&self) -> String {
        let mut out = self.kind.text().to_string();
        match &self.value {
            Some(BadValue::Str(s)) => {
                out.push_str(": ");
                out.push_str(&go_quote(s));
            }
            Some(BadValue::Plain(s) | BadValue::Json(s)) => {
                out.push_str(": ");
                out.push_str(s);
            }
            None => {}
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }

    /// The cause of a `Status`.
    pub fn cause(&self) -> Cause {
        Cause {
            reason: self.kind.reason().into(),
            message: self.body(),
            field: self.field.clone(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Upstream's aggregate of errors: one message, or `[a, b]` without repeats.
pub fn aggregate(errors: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for error in errors {
        let text = error.to_string();
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
    match seen.len() {
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

/// A 422 for `errors` about the object `name` of `kind` (as the message names it).
pub fn invalid(kind: &str, target: Target, errors: &[FieldError]) -> ApiError {
    ApiError::Invalid {
        kind: kind.to_string(),
        target,
        causes: errors.iter().map(FieldError::cause).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_key_with_a_leading_dash_should_get_upstreams_message() {
        assert_eq!(
            is_qualified_name("-bad"),
            vec![
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
            ]
        );
        assert!(is_qualified_name("example.com/My_Name.1").is_empty());
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert!(is_qualified_name("a/b/c")[0].starts_with("a qualified name must consist"));
        let long = "a".repeat(64);
        assert_eq!(
            is_qualified_name(&long),
            vec!["name part must be no more than 63 characters"]
        );
        assert!(
            is_qualified_name("Example.com/x")[0]
                .starts_with("prefix part a lowercase RFC 1123 subdomain")
        );
    }

    #[test]
    fn label_value_longer_than_63_should_be_rejected() {
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("a.b_c-d").is_empty());
        assert_eq!(
            is_valid_label_value(&"v".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        assert_eq!(is_valid_label_value("x y").len(), 1);
    }

    #[test]
    fn dns_names_should_follow_rfc_1123_and_1035() {
        assert!(is_dns1123_subdomain("web-1.example").is_empty());
        assert_eq!(is_dns1123_label("web.1"), vec!["must not contain dots"]);
        assert!(is_dns1123_label("Web")[0].starts_with("a lowercase RFC 1123 label"));
        assert!(is_dns1123_subdomain("a..b")[0].starts_with("a lowercase RFC 1123 subdomain"));
        assert_eq!(is_dns1123_subdomain(&"a".repeat(254)).len(), 1);
        assert_eq!(is_dns1123_subdomain(&"-".repeat(254)).len(), 2);
        assert!(is_dns1035_label("web").is_empty());
        assert!(is_dns1035_label("1web")[0].starts_with("a DNS-1035 label"));
    }

    #[test]
    fn config_map_keys_should_refuse_slashes_and_dot_prefixes() {
        assert!(is_config_map_key("key.name_1-x").is_empty());
        assert_eq!(is_config_map_key("a/b").len(), 1);
        assert_eq!(is_config_map_key(".."), vec!["must not be '..'"]);
        assert_eq!(is_config_map_key("..a"), vec!["must not start with '..'"]);
        assert_eq!(is_config_map_key("").len(), 1);
    }

    #[test]
    fn path_segment_names_should_refuse_slash_and_percent() {
        assert!(is_valid_path_segment_name("system:admin", false).is_empty());
        assert_eq!(
            is_valid_path_segment_name("..", false),
            vec!["may not be '..'"]
        );
        assert!(is_valid_path_segment_name("..", true).is_empty());
        assert_eq!(
            is_valid_path_segment_name("a/%", false),
            vec!["may not contain '/'", "may not contain '%'"]
        );
    }

    #[test]
    fn field_errors_should_render_as_go_does() {
        let e = FieldError::invalid("metadata.labels", "a\u{7}\"", "bad");
        assert_eq!(
            e.to_string(),
            "metadata.labels: Invalid value: \"a\\a\\\"\": bad"
        );
        assert_eq!(
            FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0").body(),
            "Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            FieldError::required("metadata.namespace", "").body(),
            "Required value"
        );
        assert_eq!(
            FieldError::too_long("data", 1048576).body(),
            "Too long: may not be more than 1048576 bytes"
        );
        assert_eq!(
            FieldError::not_supported("x", "b", &["", "A"]).body(),
            "Unsupported value: \"b\": supported values: \"\", \"A\""
        );
        let one = FieldError::forbidden("f", "no");
        assert_eq!(aggregate(&[one.clone(), one.clone()]), "f: Forbidden: no");
        assert_eq!(
            aggregate(&[one, FieldError::required("g", "")]),
            "[f: Forbidden: no, g: Required value]"
        );
        assert_eq!(go_quote("\u{1}\u{200b}é"), "\"\\x01\\u200bé\"");
    }

    #[test]
    fn field_manager_over_128_bytes_or_with_controls_should_be_rejected() {
        assert!(field_manager("kubectl-client-side-apply", "fieldManager").is_empty());
        assert_eq!(
            field_manager(&"m".repeat(129), "fieldManager")[0].to_string(),
            "fieldManager: Too long: may not be more than 128 bytes"
        );
        assert_eq!(
            field_manager("a\u{7}b", "fieldManager")[0].to_string(),
            "fieldManager: Invalid value: \"a\\ab\": invalid character U+0007 (at position 1)"
        );
    }
}
