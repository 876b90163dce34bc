//! Table output for custom resources: the CRD version's `additionalPrinterColumns` (or Name and
//! Age when it has none), each cell the first match of the column's JSONPath (Kubernetes'
//! `.a.b[0]` form, filters such as `[?(@.type=="Ready")]` included, evaluated as RFC 9535 by
//! serde_json_path).

use jiff::Timestamp;
use serde_json::{Value, json};

/// The column definitions: Name, then the CRD's columns (Age when there are none).
pub fn columns(defs: &[Value]) -> Vec<Value> {
    let mut out = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    if defs.is_empty() {
        out.push(json!({"name": "Age", "type": "date", "format": "",
            "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}));
    }
    for def in defs {
        out.push(json!({
            "name": def["name"],
            "type": def.get("type").cloned().unwrap_or(json!("string")),
            "format": def.get("format").cloned().unwrap_or(json!("")),
            "description": def.get("description").cloned().unwrap_or(json!("")),
            "priority": def.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    out
}

/// One object's cells for [`columns`].
pub fn cells(defs: &[Value], object: &Value, now: Timestamp) -> Vec<Value> {
    let mut row = vec![
        object
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    ];
    if defs.is_empty() {
        row.push(json!(age(
            object.pointer("/metadata/creationTimestamp"),
            now
        )));
    }
    for def in defs {
        let path = def
            .get("jsonPath")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let value = lookup(object, path);
        row.push(match (def.get("type").and_then(Value::as_str), value) {
            (_, None) => Value::Null,
            (Some("date"), Some(v)) => json!(age(Some(v), now)),
            (_, Some(v)) => v.clone(),
        });
    }
    row
}

fn age(value: Option<&Value>, now: Timestamp) -> String {
    value
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|t| crate::age::human_duration(now.as_second() - t.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// The first value `path` selects; `None` when it selects nothing or does not parse.
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let path = serde_json_path::JsonPath::parse(&format!("${path}")).ok()?;
    path.query(object).first()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_columns_should_read_simple_json_paths() {
        let defs = [
            json!({"name": "Host", "type": "string", "jsonPath": ".spec.host"}),
            json!({"name": "First", "type": "integer", "jsonPath": ".spec.ports[0]"}),
            json!({"name": "Missing", "type": "string", "jsonPath": ".status.nope"}),
            json!({"name": "Ready", "type": "string",
                   "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}),
        ];
        let object = json!({"metadata": {"name": "a"}, "spec": {"host": "h", "ports": [25, 587]},
            "status": {"conditions": [{"type": "Other", "status": "False"},
                                      {"type": "Ready", "status": "True"}]}});
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            cells(&defs, &object, now),
            [
                json!("a"),
                json!("h"),
                json!(25),
                Value::Null,
                json!("True")
            ]
        );
        assert_eq!(columns(&defs).len(), 5);
        assert_eq!(columns(&[]).len(), 2);
    }
}
