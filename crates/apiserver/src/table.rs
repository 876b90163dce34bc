//! Server-side printing: `meta.k8s.io/v1` Tables with kubectl's usual columns per kind, and
//! `PartialObjectMetadata`.

use jiff::Timestamp;
use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

fn column(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

/// kubectl's human duration (`5s`, `3m20s`, `4h`, `6d`, `2y30d`), as upstream's `HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if d / 365 < 8 {
        format!("{}y{}d", d / 365, d % 365)
    } else {
        format!("{}y", d / 365)
    }
}

fn age(object: &Value, now: Timestamp) -> String {
    object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map_or_else(
            || "<unknown>".into(),
            |created| human_duration(now.as_second() - created.as_second()),
        )
}

fn text(object: &Value, pointer: &str) -> String {
    match object.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn count(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).map_or(0, |v| match v {
        Value::Object(m) => m.len() as i64,
        Value::Array(a) => a.len() as i64,
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    })
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

/// The column definitions and one row's cells for a kind.
fn columns(kind: &str) -> Vec<Value> {
    let name = column(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = column(
        "Age",
        "string",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    let mut cols = vec![name];
    let extra: Vec<Value> = match kind {
        "Pod" => vec![
            column(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            column(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            column(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
        ],
        "Deployment" => vec![
            column("Ready", "string", 0, "Number of the pod with ready state"),
            column(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            column(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
        ],
        "ReplicaSet" => vec![
            column("Desired", "integer", 0, "Number of desired pods."),
            column("Current", "integer", 0, "Number of actual pods."),
            column("Ready", "integer", 0, "Number of ready pods."),
        ],
        "Service" => vec![
            column("Type", "string", 0, "The type of the service."),
            column("Cluster-IP", "string", 0, "The cluster IP of the service."),
            column(
                "External-IP",
                "string",
                0,
                "The external IPs of the service.",
            ),
            column("Port(s)", "string", 0, "The ports of the service."),
        ],
        "ConfigMap" => vec![column("Data", "integer", 0, "Number of data entries.")],
        "Secret" => vec![
            column("Type", "string", 0, "The type of the secret."),
            column("Data", "integer", 0, "Number of data entries."),
        ],
        "Namespace" => vec![column(
            "Status",
            "string",
            0,
            "The status of the namespace.",
        )],
        "Node" => vec![
            column("Status", "string", 0, "The status of the node."),
            column("Roles", "string", 0, "The roles of the node."),
        ],
        "ServiceAccount" => vec![column("Secrets", "integer", 0, "Number of secrets.")],
        _ => vec![],
    };
    cols.extend(extra);
    cols.push(age);
    match kind {
        "Pod" => {
            cols.push(column(
                "IP",
                "string",
                1,
                "IP address allocated to the pod.",
            ));
            cols.push(column(
                "Node",
                "string",
                1,
                "Name of the node the pod is assigned to.",
            ));
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" => {
            cols.push(column(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ));
            cols.push(column(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ));
            cols.push(column("Selector", "string", 1, "Label selector for pods."));
        }
        "Service" => cols.push(column(
            "Selector",
            "string",
            1,
            "The service's pod selector.",
        )),
        _ => {}
    }
    cols
}

/// `a=b,c=d` from a map (a label selector's matchLabels, or a Service's selector).
pub fn labels_text(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn template_containers(object: &Value, field: &str) -> String {
    object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c[field].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn cells(kind: &str, object: &Value, now: Timestamp) -> Vec<Value> {
    let mut row = vec![json!(text(object, "/metadata/name"))];
    match kind {
        "Pod" => {
            let statuses = object
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = count(object, "/spec/containers");
            let ready = statuses
                .iter()
                .filter(|s| s["ready"] == json!(true))
                .count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|s| s["restartCount"].as_i64())
                .sum();
            let phase = text(object, "/status/phase");
            let status = if object.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating".to_string()
            } else if phase.is_empty() {
                "Pending".into()
            } else {
                phase
            };
            row.extend([
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts.to_string()),
            ]);
        }
        "Deployment" => {
            let desired = object
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            row.extend([
                json!(format!(
                    "{}/{desired}",
                    count(object, "/status/readyReplicas")
                )),
                json!(count(object, "/status/updatedReplicas")),
                json!(count(object, "/status/availableReplicas")),
            ]);
        }
        "ReplicaSet" => {
            row.extend([
                json!(
                    object
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
                json!(count(object, "/status/replicas")),
                json!(count(object, "/status/readyReplicas")),
            ]);
        }
        "Service" => {
            let ports: Vec<String> = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| {
                            let protocol = p["protocol"].as_str().unwrap_or("TCP");
                            match p.get("nodePort").and_then(Value::as_i64) {
                                Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                                None => format!("{}/{protocol}", p["port"]),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            row.extend([
                json!(text(object, "/spec/type")),
                json!(or_none(text(object, "/spec/clusterIP"))),
                json!("<none>"),
                json!(or_none(ports.join(","))),
            ]);
        }
        "ConfigMap" => row.push(json!(count(object, "/data") + count(object, "/binaryData"))),
        "Secret" => row.extend([json!(text(object, "/type")), json!(count(object, "/data"))]),
        "Namespace" => row.push(json!(text(object, "/status/phase"))),
        "Node" => {
            let ready = object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            row.extend([json!(ready), json!("<none>")]);
        }
        "ServiceAccount" => row.push(json!(count(object, "/secrets"))),
        _ => {}
    }
    row.push(json!(age(object, now)));
    match kind {
        "Pod" => {
            row.push(json!(or_none(text(object, "/status/podIP"))));
            row.push(json!(or_none(text(object, "/spec/nodeName"))));
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" => {
            let selector = if kind == "ReplicationController" {
                "/spec/selector"
            } else {
                "/spec/selector/matchLabels"
            };
            row.push(json!(template_containers(object, "name")));
            row.push(json!(template_containers(object, "image")));
            row.push(json!(or_none(labels_text(object, selector))));
        }
        "Service" => row.push(json!(or_none(labels_text(object, "/spec/selector")))),
        _ => {}
    }
    row
}

/// `PartialObjectMetadata` for one object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A Table of `objects`; `list_meta` is the list's metadata (resourceVersion, continue).
/// `printer` holds a custom resource's printer columns (`None` for built-in kinds).
pub fn table(
    info: &ResourceInfo,
    printer: Option<&[Value]>,
    objects: &[Value],
    list_meta: Value,
    now: Timestamp,
    with_columns: bool,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells = match printer {
                Some(defs) => crate::crd::printer::cells(defs, o, now),
                None => cells(&info.kind, o, now),
            };
            json!({"cells": cells, "object": partial_metadata(o)})
        })
        .collect();
    let columns = match (with_columns, printer) {
        (false, _) => vec![],
        (true, Some(defs)) => crate::crd::printer::columns(defs),
        (true, None) => columns(&info.kind),
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn human_duration_should_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
        assert_eq!(human_duration(800 * 86400), "2y70d");
    }
}
