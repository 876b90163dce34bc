//! Table output for custom resources: the CRD version's `additionalPrinterColumns` (or Name and
//! Age when it has none), each cell read with the column's simple JSONPath.

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
        .map(|t| crate::table::human_duration(now.as_second() - t.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// Reads `.a.b[0].c` (the JSONPath subset printer columns use); anything else finds nothing.
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut current = object;
    for segment in path.strip_prefix('.')?.split('.') {
        let (key, indexes) = segment.split_once('[').unwrap_or((segment, ""));
        if !key.is_empty() {
            current = current.get(key)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let index: usize = index.trim_end_matches(']').parse().ok()?;
            current = current.get(index)?;
        }
    }
    Some(current)
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
        ];
        let object = json!({"metadata": {"name": "a"}, "spec": {"host": "h", "ports": [25, 587]}});
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            cells(&defs, &object, now),
            [json!("a"), json!("h"), json!(25), Value::Null]
        );
        assert_eq!(columns(&defs).len(), 4);
        assert_eq!(columns(&[]).len(), 2);
    }
}
