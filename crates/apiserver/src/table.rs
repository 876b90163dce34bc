//! Server-side printing: `meta.k8s.io/v1` Tables with kubectl's usual columns per kind, and
//! `PartialObjectMetadata`.

use jiff::Timestamp;
use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

use crate::age::human_duration;

fn column(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

/// The value at a JSON pointer without escapes (`/a/b/0`), found without allocating (unlike
/// [`Value::pointer`], which unescapes every segment into a new string).
fn at<'a>(object: &'a Value, pointer: &str) -> Option<&'a Value> {
    pointer
        .split('/')
        .skip(1)
        .try_fold(object, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

fn age(object: &Value, now: Timestamp) -> String {
    at(object, "/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map_or_else(
            || "<unknown>".into(),
            |created| human_duration(now.as_second() - created.as_second()),
        )
}

fn text(object: &Value, pointer: &str) -> String {
    match at(object, pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn count(object: &Value, pointer: &str) -> i64 {
    at(object, pointer).map_or(0, |v| match v {
        Value::Object(m) => m.len() as i64,
        Value::Array(a) => a.len() as i64,
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    })
}

/// Up to three of `items` joined by commas, then `+ N more...` (upstream's
/// `listWithMoreString`); `<unset>` when there is none.
fn first_three(items: Vec<String>) -> String {
    match items.len() {
        0 => "<unset>".into(),
        1..=3 => items.join(","),
        n => format!("{} + {} more...", items[..3].join(","), n - 3),
    }
}

/// An Endpoints object's ENDPOINTS cell (upstream's `formatEndpoints`): `ip:port` of every
/// ready address and port, the first three, or `<none>`.
fn endpoints_cell(object: &Value) -> Value {
    let mut pairs = Vec::new();
    for subset in at(object, "/subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let addresses = subset.get("addresses").and_then(Value::as_array);
        let ports: Vec<String> = match subset.get("ports").and_then(Value::as_array) {
            Some(ports) if !ports.is_empty() => ports
                .iter()
                .map(|p| {
                    format!(
                        ":{}",
                        p.get("port").and_then(Value::as_i64).unwrap_or_default()
                    )
                })
                .collect(),
            _ => vec![String::new()],
        };
        for ip in addresses
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("ip").and_then(Value::as_str))
        {
            for port in &ports {
                pairs.push(format!("{ip}{port}"));
            }
        }
    }
    if pairs.is_empty() {
        return json!("<none>");
    }
    json!(first_three(pairs))
}

/// An EndpointSlice's ADDRESSTYPE, PORTS and ENDPOINTS cells (upstream's printer).
fn endpoint_slice_cells(object: &Value) -> [Value; 3] {
    let ports = at(object, "/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            match (
                p.get("port").and_then(Value::as_i64),
                p.get("name").and_then(Value::as_str),
            ) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".into(),
            }
        })
        .collect();
    let addresses = at(object, "/endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("addresses").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    [
        json!(text(object, "/addressType")),
        json!(first_three(ports)),
        json!(first_three(addresses)),
    ]
}

/// A Service's EXTERNAL-IP cell (upstream's `getServiceExternalIP`): an ExternalName's name;
/// a LoadBalancer's ingress addresses and externalIPs, `<pending>` until it has any; else its
/// externalIPs.
fn service_external_ip(object: &Value) -> String {
    let strings = |pointer: &str, key: Option<&str>| -> Vec<String> {
        at(object, pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| match key {
                Some(key) => v
                    .get(key)
                    .or_else(|| v.get("hostname"))
                    .and_then(Value::as_str),
                None => v.as_str(),
            })
            .map(str::to_string)
            .collect()
    };
    let external = strings("/spec/externalIPs", None);
    match text(object, "/spec/type").as_str() {
        "ExternalName" => text(object, "/spec/externalName"),
        "LoadBalancer" => {
            let mut all = strings("/status/loadBalancer/ingress", Some("ip"));
            all.extend(external);
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        _ => or_none(external.join(",")),
    }
}

/// `N/M` of the pod's readiness gates that pass, or `<none>`.
fn readiness_gates(pod: &Value) -> String {
    let Some(gates) = at(pod, "/spec/readinessGates")
        .and_then(Value::as_array)
        .filter(|g| !g.is_empty())
    else {
        return "<none>".into();
    };
    let conditions = at(pod, "/status/conditions").and_then(Value::as_array);
    let passing = gates
        .iter()
        .filter(|gate| {
            conditions.is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == gate["conditionType"] && c["status"] == "True")
            })
        })
        .count();
    format!("{passing}/{}", gates.len())
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

/// The column definitions and one row's cells for a kind.
pub(crate) fn columns(kind: &str) -> Vec<Value> {
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
        "Endpoints" => vec![column(
            "Endpoints",
            "string",
            0,
            "Endpoints of this service (the first three).",
        )],
        "EndpointSlice" => vec![
            column(
                "AddressType",
                "string",
                0,
                "Type of address contained in this endpoint slice.",
            ),
            column(
                "Ports",
                "string",
                0,
                "Ports contained in this endpoint slice.",
            ),
            column(
                "Endpoints",
                "string",
                0,
                "Endpoints contained in this endpoint slice.",
            ),
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
        "Job" => vec![
            column("Status", "string", 0, "Status of the job."),
            column(
                "Completions",
                "string",
                0,
                "The desired number of successfully finished pods the job should be run with.",
            ),
            column(
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
            ),
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
            cols.push(column(
                "Nominated Node",
                "string",
                1,
                "Name of the node where the pod is nominated to run (preemption).",
            ));
            cols.push(column(
                "Readiness Gates",
                "string",
                1,
                "Whether the pod's readiness gates pass.",
            ));
        }
        "Node" => {
            cols.push(column(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ));
            for (name, description) in [
                ("Internal-IP", "List of internal IPs in the node."),
                ("External-IP", "List of external IPs in this node."),
                (
                    "OS-Image",
                    "OS image reported by the node from /etc/os-release.",
                ),
                ("Kernel-Version", "Kernel version reported by the node."),
                ("Container-Runtime", "Container runtime name and version."),
            ] {
                cols.push(column(name, "string", 1, description));
            }
        }
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicationController"
        | "Job" => {
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
    at(object, pointer)
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
    at(object, "/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c[field].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The fields a built-in kind's cells read (see [`cells`]), as paths that cross arrays
/// (`/status/conditions/type` is every condition's type), and those of which they only count
/// the members: a list's objects need no more decoded to be printed.
pub fn fields_read(kind: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut read = vec!["/metadata/name", "/metadata/creationTimestamp"];
    let mut counted = vec![];
    match kind {
        "Pod" => {
            read.extend([
                "/metadata/deletionTimestamp",
                "/spec/nodeName",
                "/spec/initContainers/name",
                "/spec/initContainers/restartPolicy",
                "/spec/readinessGates",
                "/status/containerStatuses",
                "/status/initContainerStatuses",
                "/status/conditions",
                "/status/phase",
                "/status/reason",
                "/status/podIP",
                "/status/nominatedNodeName",
            ]);
            counted.push("/spec/containers");
        }
        "Deployment" => read.extend([
            "/spec/replicas",
            "/status/readyReplicas",
            "/status/updatedReplicas",
            "/status/availableReplicas",
        ]),
        "ReplicaSet" => read.extend([
            "/spec/replicas",
            "/status/replicas",
            "/status/readyReplicas",
        ]),
        "Service" => read.extend([
            "/spec/type",
            "/spec/clusterIP",
            "/spec/ports",
            "/spec/selector",
            "/spec/externalIPs",
            "/spec/externalName",
            "/status/loadBalancer/ingress",
        ]),
        "EndpointSlice" => read.extend(["/addressType", "/ports", "/endpoints/addresses"]),
        "Endpoints" => read.extend(["/subsets"]),
        "Job" => read.extend([
            "/spec/completions",
            "/spec/parallelism",
            "/status/succeeded",
            "/status/startTime",
            "/status/completionTime",
            "/status/conditions/type",
            "/status/conditions/status",
        ]),
        "ConfigMap" => counted.extend(["/data", "/binaryData"]),
        "Secret" => {
            read.push("/type");
            counted.push("/data");
        }
        "Namespace" => read.push("/status/phase"),
        "Node" => read.extend([
            "/metadata/labels",
            "/spec/unschedulable",
            "/status/conditions/type",
            "/status/conditions/status",
            "/status/addresses",
            "/status/nodeInfo/kubeletVersion",
            "/status/nodeInfo/osImage",
            "/status/nodeInfo/kernelVersion",
            "/status/nodeInfo/containerRuntimeVersion",
        ]),
        "ServiceAccount" => counted.push("/secrets"),
        _ => {}
    }
    if matches!(
        kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" | "Job"
    ) {
        read.extend([
            "/spec/template/spec/containers/name",
            "/spec/template/spec/containers/image",
            "/spec/selector",
        ]);
    }
    (read, counted)
}

/// A Job's Status, Completions and Duration, as upstream's printer writes them.
fn job_cells(object: &Value, now: Timestamp) -> [Value; 3] {
    let holds = |kind: &str| {
        at(object, "/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
    };
    let status = [
        "Complete",
        "Failed",
        "Suspended",
        "FailureTarget",
        "SuccessCriteriaMet",
    ]
    .into_iter()
    .find(|kind| holds(kind))
    .unwrap_or("Running");
    let succeeded = count(object, "/status/succeeded");
    let completions = match at(object, "/spec/completions").and_then(Value::as_i64) {
        Some(wanted) => format!("{succeeded}/{wanted}"),
        None => match at(object, "/spec/parallelism").and_then(Value::as_i64) {
            Some(parallelism) if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let time = |pointer: &str| {
        at(object, pointer)
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok())
    };
    let duration = match (time("/status/startTime"), time("/status/completionTime")) {
        (Some(start), Some(end)) => human_duration(end.as_second() - start.as_second()),
        (Some(start), None) => human_duration(now.as_second() - start.as_second()),
        _ => String::new(),
    };
    [json!(status), json!(completions), json!(duration)]
}

/// One object's cells for a built-in kind's [`columns`].
pub(crate) fn cells(kind: &str, object: &Value, now: Timestamp) -> Vec<Value> {
    let mut row = vec![json!(text(object, "/metadata/name"))];
    match kind {
        "Pod" => row.extend(crate::printers::pod_cells(object, now)),
        "Deployment" => {
            let desired = at(object, "/spec/replicas")
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
                    at(object, "/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                ),
                json!(count(object, "/status/replicas")),
                json!(count(object, "/status/readyReplicas")),
            ]);
        }
        "Service" => {
            let ports: Vec<String> = at(object, "/spec/ports")
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
                json!(service_external_ip(object)),
                json!(or_none(ports.join(","))),
            ]);
        }
        "EndpointSlice" => row.extend(endpoint_slice_cells(object)),
        "Endpoints" => row.push(endpoints_cell(object)),
        "Job" => row.extend(job_cells(object, now)),
        "ConfigMap" => row.push(json!(count(object, "/data") + count(object, "/binaryData"))),
        "Secret" => row.extend([json!(text(object, "/type")), json!(count(object, "/data"))]),
        "Namespace" => row.push(json!(text(object, "/status/phase"))),
        "Node" => row.extend(crate::printers::node_cells(object)),
        "ServiceAccount" => row.push(json!(count(object, "/secrets"))),
        _ => {}
    }
    row.push(json!(age(object, now)));
    if kind == "Node" {
        row.push(json!(text(object, "/status/nodeInfo/kubeletVersion")));
    }
    match kind {
        "Pod" => {
            row.push(json!(or_none(text(object, "/status/podIP"))));
            row.push(json!(or_none(text(object, "/spec/nodeName"))));
            row.push(json!(or_none(text(object, "/status/nominatedNodeName"))));
            row.push(json!(readiness_gates(object)));
        }
        "Node" => {
            let address = |kind: &str| {
                at(object, "/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|a| a["type"] == kind))
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string()
            };
            row.push(json!(address("InternalIP")));
            row.push(json!(address("ExternalIP")));
            row.push(json!(or_none(text(object, "/status/nodeInfo/osImage"))));
            row.push(json!(or_none(text(
                object,
                "/status/nodeInfo/kernelVersion"
            ))));
            row.push(json!(or_none(text(
                object,
                "/status/nodeInfo/containerRuntimeVersion"
            ))));
        }
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicationController"
        | "Job" => {
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

/// [`partial_metadata`] from an object's rendered `metadata` JSON:
/// `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":…}`.
pub fn write_partial_metadata(metadata: Option<&[u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(
        br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#,
    );
    out.extend_from_slice(metadata.unwrap_or(b"{}"));
    out.push(b'}');
}

/// `PartialObjectMetadata` for one object.
pub fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The column definitions of a kind's Table; `printer` holds a custom resource's printer
/// columns (`None` for built-in kinds).
pub fn column_definitions(info: &ResourceInfo, printer: Option<&[Value]>) -> Vec<Value> {
    match printer {
        Some(defs) => crate::crd::printer::columns(defs),
        None => columns(&info.kind),
    }
}

/// One object's cells, in the order of [`column_definitions`].
pub fn row_cells(
    info: &ResourceInfo,
    printer: Option<&[Value]>,
    object: &Value,
    now: Timestamp,
) -> Vec<Value> {
    match printer {
        Some(defs) => crate::crd::printer::cells(defs, object, now),
        None => cells(&info.kind, object, now),
    }
}

/// Whether a Table's cells may be computed without the object's `metadata.managedFields`: no
/// built-in column reads them, and a custom resource's column only if its JSONPath names them
/// or may reach them (a wildcard or recursive descent).
pub fn cells_skip_managed_fields(printer: Option<&[Value]>) -> bool {
    printer.is_none_or(|defs| {
        !defs.iter().any(|d| {
            d.get("jsonPath")
                .and_then(Value::as_str)
                .is_some_and(|p| p.contains("managedFields") || p.contains("..") || p.contains('*'))
        })
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
        .map(|o| json!({"cells": row_cells(info, printer, o, now), "object": partial_metadata(o)}))
        .collect();
    let columns = if with_columns {
        column_definitions(info, printer)
    } else {
        vec![]
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
    use super::*;

    #[test]
    fn pointers_should_be_found_as_serde_json_finds_them() {
        let object = json!({"a": {"b": [1, {"c": "x"}]}, "d": null});
        for pointer in [
            "/a", "/a/b", "/a/b/1/c", "/a/b/2", "/a/x", "/d", "/d/e", "/a/b/x",
        ] {
            assert_eq!(at(&object, pointer), object.pointer(pointer), "{pointer}");
        }
    }

    #[test]
    fn services_and_endpoint_slices_should_print_as_upstream() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let lb = json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer",
            "clusterIP": "10.43.0.7", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"}]}}});
        // Name and the kind's own columns (age and the wide ones follow); what a list
        // decodes of them is checked over `stream.rs`'s samples.
        let cells_of = |kind: &str, object: &Value| cells(kind, object, now);
        assert_eq!(
            cells_of("Service", &lb)[..5],
            vec![
                json!("web"),
                json!("LoadBalancer"),
                json!("10.43.0.7"),
                json!("127.0.0.1"),
                json!("80:30080/TCP")
            ]
        );
        let pending = json!({"metadata": {"name": "p"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.8"}});
        assert_eq!(cells_of("Service", &pending)[3], json!("<pending>"));
        let endpoints = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.42.0.5"}],
            "notReadyAddresses": [{"ip": "10.42.0.7"}], "ports": [{"port": 8080}, {"port": 9090}]}]});
        assert_eq!(
            cells_of("Endpoints", &endpoints)[1],
            json!("10.42.0.5:8080,10.42.0.5:9090")
        );
        let endpoints: Vec<Value> = (1..=5)
            .map(|i| json!({"addresses": [format!("10.42.0.{i}")]}))
            .collect();
        let slice = json!({"metadata": {"name": "web-x"}, "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints});
        assert_eq!(
            cells_of("EndpointSlice", &slice)[..4],
            vec![
                json!("web-x"),
                json!("IPv4"),
                json!("8080"),
                json!("10.42.0.1,10.42.0.2,10.42.0.3 + 2 more...")
            ]
        );
    }

    #[test]
    fn jobs_should_print_status_completions_and_duration_as_upstream() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let done = json!({"spec": {"completions": 3},
            "status": {"succeeded": 3, "startTime": "2026-01-01T00:00:00Z",
                       "completionTime": "2026-01-01T00:00:12Z",
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                      {"type": "Complete", "status": "True"}]}});
        assert_eq!(
            job_cells(&done, now),
            [json!("Complete"), json!("3/3"), json!("12s")]
        );
        let queue =
            json!({"spec": {"parallelism": 2}, "status": {"startTime": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            job_cells(&queue, now),
            [json!("Running"), json!("0/1 of 2"), json!("60s")]
        );
    }
}
