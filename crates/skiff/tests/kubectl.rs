//! End to end with real kubectl binaries (1.33 beside the `kubectl` dispatcher, 1.35 from the
//! PyPI wheel that `scripts/install-deps` unpacks) against a real `skiff server` process. Each
//! version runs the same scenario in its own namespace. The tests need both binaries, so they are
//! `#[ignore = "needs kubectl 1.33 and 1.35"]`: `cargo test -- --include-ignored` (as
//! `./scripts/test` runs it) includes them, and they fail, not skip, when a binary is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::kubectl::{Kubectl, kubectl_binaries};
use support::start_server;

const APP: &str = "
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {app: demo}}
data: {color: blue}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: busybox:1.36, ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
";

fn scenario(k: &Kubectl<'_>) {
    let version = k.binary.display();
    let namespace = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n",
        k.namespace
    );
    assert!(
        k.apply_yaml(&namespace, &[]).status.success(),
        "{version}: namespace"
    );

    // apply, then apply again (unchanged), get in every format.
    let applied = k.apply_yaml(APP, &[]);
    assert!(
        applied.status.success(),
        "{version}: apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let again = String::from_utf8(k.apply_yaml(APP, &[]).stdout).unwrap();
    assert!(
        again.contains("configmap/settings unchanged"),
        "{version}: {again}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "cm", "settings", "-o", "json"])).unwrap();
    assert_eq!(json["data"]["color"], "blue");
    assert!(
        k.ok(&["get", "deploy", "web", "-o", "yaml"])
            .contains("kind: Deployment")
    );
    assert!(
        k.ok(&["get", "svc", "web", "-o", "wide"])
            .contains("ClusterIP")
    );
    assert_eq!(
        k.jsonpath("deploy/web", "{.spec.template.spec.containers[0].image}"),
        "busybox:1.36"
    );
    let table = k.ok(&["get", "deploy"]);
    assert!(
        table.starts_with("NAME") && table.contains("UP-TO-DATE") && table.contains("web"),
        "{version}: {table}"
    );
    assert!(k.ok(&["describe", "cm", "settings"]).contains("color"));

    // Imperative commands: client-go sends these bodies as protobuf.
    imperative(k);

    // label, annotate, the three patch types, edit, scale.
    k.ok(&["label", "cm", "settings", "tier=front"]);
    k.ok(&["annotate", "cm", "settings", "note=hello"]);
    assert_eq!(
        k.jsonpath(
            "cm/settings",
            "{.metadata.labels.tier}/{.metadata.annotations.note}"
        ),
        "front/hello"
    );
    k.ok(&["patch", "cm", "settings", "-p", r#"{"data":{"size":"L"}}"#]);
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":null}}"#,
    ]);
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/shape","value":"round"}]"#,
    ]);
    assert_eq!(
        k.jsonpath("cm/settings", "{.data}"),
        r#"{"shape":"round","size":"L"}"#
    );
    let mut edit = k.command(&["edit", "deploy", "web"]);
    edit.env("EDITOR", "sed -i s/busybox:1.36/busybox:1.37/");
    assert!(edit.output().unwrap().status.success(), "{version}: edit");
    assert_eq!(
        k.jsonpath("deploy/web", "{.spec.template.spec.containers[0].image}"),
        "busybox:1.37"
    );
    assert_eq!(
        k.jsonpath(
            "deploy/web",
            "{.spec.template.spec.containers[0].ports[0].containerPort}"
        ),
        "80"
    );
    k.ok(&["scale", "deploy", "web", "--replicas=3"]);
    assert_eq!(
        k.jsonpath("deploy/web", "{.spec.replicas}/{.metadata.generation}"),
        "3/3"
    );

    // --chunk-size pages through every object.
    for i in 0..5 {
        let cm = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: page-{i}}}\n");
        assert!(k.apply_yaml(&cm, &[]).status.success());
    }
    let chunked = k.ok(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    assert_eq!(
        chunked
            .lines()
            .filter(|l| l.starts_with("configmap/page-"))
            .count(),
        5,
        "{version}: {chunked}"
    );

    // --validate=strict rejects unknown fields; --dry-run=server stores nothing.
    let strict = k.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad}\nbogus: 1\n",
        &["--validate=strict"],
    );
    assert!(!strict.status.success());
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains("unknown field \"bogus\""),
        "{version}"
    );
    let dry = k.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dry}\n",
        &["--dry-run=server"],
    );
    assert!(dry.status.success());
    assert!(
        !k.run(&["get", "cm", "dry"]).status.success(),
        "{version}: dry run stored nothing"
    );

    // get --watch sees a change; wait sees a condition and a deletion.
    let watch = k
        .command(&[
            "get",
            "cm",
            "settings",
            "--watch",
            "--output-watch-events",
            "--request-timeout=6s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    k.ok(&["label", "cm", "settings", "watched=yes"]);
    let mut wait = k
        .command(&[
            "wait",
            "--for=jsonpath={.data.size}=XL",
            "cm/settings",
            "--timeout=20s",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    k.ok(&["patch", "cm", "settings", "-p", r#"{"data":{"size":"XL"}}"#]);
    assert!(
        wait.wait().unwrap().success(),
        "{version}: wait --for=jsonpath"
    );
    let started = Instant::now();
    let watched = watch.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    let watched = String::from_utf8_lossy(&watched.stdout);
    assert!(
        watched.contains("ADDED") && watched.contains("MODIFIED"),
        "{version}: {watched}"
    );

    let mut deleted = k
        .command(&["wait", "--for=delete", "cm/settings", "--timeout=20s"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    k.ok(&["delete", "cm", "settings"]);
    assert!(
        deleted.wait().unwrap().success(),
        "{version}: wait --for=delete"
    );

    custom_resources_and_server_side_apply(k);

    // Discovery, OpenAPI, identity.
    assert!(k.ok(&["api-resources"]).contains("deployments"));
    assert!(k.ok(&["get", "apiservices"]).contains("v1.apps"));
    assert!(
        k.ok(&["explain", "deployment.spec.replicas"])
            .contains("replicas")
    );
    assert!(k.ok(&["auth", "whoami"]).contains("kubernetes-admin"));
}

const CRD: &str = "
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: mailboxes.e2e.example.com}
spec:
  group: e2e.example.com
  scope: Namespaced
  names: {plural: mailboxes, kind: Mailbox, shortNames: [mbx]}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Host, type: string, jsonPath: .spec.host}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [host]
            properties:
              host: {type: string, description: The mail server.}
              port: {type: integer, default: 587}
";

/// CRDs (served at once, schema-checked, in Tables and explain) and server-side apply
/// (field managers, conflicts, --force-conflicts).
fn custom_resources_and_server_side_apply(k: &Kubectl<'_>) {
    let version = k.binary.display();
    // Both kubectl versions share the cluster-wide CRD.
    assert!(k.apply_yaml(CRD, &[]).status.success(), "{version}: CRD");
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/mailboxes.e2e.example.com",
        "--timeout=10s",
    ]);
    let mailbox = "apiVersion: e2e.example.com/v1\nkind: Mailbox\nmetadata: {name: inbox}\nspec: {host: mail.example}\n";
    assert!(
        k.apply_yaml(mailbox, &["--server-side"]).status.success(),
        "{version}: apply CR"
    );
    assert_eq!(
        k.jsonpath("mbx/inbox", "{.spec.port}"),
        "587",
        "{version}: defaulted"
    );
    let table = k.ok(&["get", "mailboxes"]);
    assert!(
        table.contains("HOST") && table.contains("mail.example"),
        "{version}: {table}"
    );
    assert!(
        k.ok(&["explain", "mailboxes.spec.host"])
            .contains("The mail server.")
    );
    let bad = k.apply_yaml(
        "apiVersion: e2e.example.com/v1\nkind: Mailbox\nmetadata: {name: bad}\nspec: {port: x}\n",
        &[],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("spec.host: Required value"),
        "{version}: {stderr}"
    );

    // Another manager changes a field: a plain re-apply conflicts, a forced one wins.
    k.ok(&[
        "patch",
        "mbx",
        "inbox",
        "--type=merge",
        "-p",
        r#"{"spec":{"host":"other.example"}}"#,
        "--field-manager=someone",
    ]);
    let conflict = k.apply_yaml(mailbox, &["--server-side"]);
    assert!(!conflict.status.success(), "{version}: conflict expected");
    assert!(String::from_utf8_lossy(&conflict.stderr).contains("conflict with \"someone\""));
    assert!(
        k.apply_yaml(mailbox, &["--server-side", "--force-conflicts"])
            .status
            .success()
    );
    assert_eq!(k.jsonpath("mbx/inbox", "{.spec.host}"), "mail.example");
    k.ok(&["delete", "mbx", "inbox"]);
}

/// `kubectl create/run/expose`: typed client-go requests with protobuf bodies.
fn imperative(k: &Kubectl<'_>) {
    let version = k.binary.display();
    k.ok(&[
        "create",
        "configmap",
        "imp",
        "--from-literal=a=1",
        "--from-literal=b=",
    ]);
    assert_eq!(k.jsonpath("cm/imp", "{.data}"), r#"{"a":"1","b":""}"#);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "imp",
        "--from-literal=p=secret",
    ]);
    assert_eq!(k.jsonpath("secret/imp", "{.data.p}"), "c2VjcmV0");
    k.ok(&[
        "create",
        "deployment",
        "imp",
        "--image=busybox:1.36",
        "--replicas=0",
    ]);
    assert_eq!(
        k.jsonpath("deploy/imp", "{.spec.replicas}/{.spec.strategy.type}"),
        "0/RollingUpdate",
        "{version}: a zero that was set stays zero"
    );
    k.ok(&[
        "expose",
        "deployment",
        "imp",
        "--port=80",
        "--target-port=8080",
    ]);
    let service = k.jsonpath("svc/imp", "{.spec.ports[0].targetPort} {.spec.clusterIP}");
    assert!(service.starts_with("8080 10.43."), "{version}: {service}");
    k.ok(&[
        "run",
        "imp",
        "--image=busybox:1.36",
        "--restart=Never",
        "--",
        "sleep",
        "1",
    ]);
    let pod = k.jsonpath(
        "pod/imp",
        "{.spec.restartPolicy} {.spec.containers[0].args} {.metadata.creationTimestamp}",
    );
    assert!(
        pod.starts_with("Never [\"sleep\",\"1\"] 20"),
        "{version}: {pod}"
    );
    k.ok(&["create", "ingress", "imp", "--rule=imp.example/=imp:80"]);
    assert_eq!(
        k.jsonpath(
            "ingress/imp",
            "{.spec.rules[0].http.paths[0].backend.service.name}"
        ),
        "imp",
        "{version}: embedded (inline) structs are flattened"
    );
    k.ok(&["create", "serviceaccount", "imp"]);
    let token = k.ok(&["create", "token", "imp"]);
    assert_eq!(token.trim().split('.').count(), 3, "{version}: {token}");
    cascade(k);
    client_to_server_side_apply(k);
    let extra = format!("{}-extra", k.namespace);
    k.ok(&["create", "namespace", &extra]);
    k.ok(&["create", "configmap", "inside", "--namespace", &extra]);
    // kubectl waits until the namespace controller has emptied it and it is gone.
    k.ok(&["delete", "namespace", &extra, "--timeout=30s"]);
    let after = k.run(&["get", "namespace", &extra]);
    assert!(!after.status.success(), "{version}: the namespace is gone");
}

/// Migration from client-side to server-side apply: kubectl moves the client-side manager's
/// fields to its server-side manager (a JSON patch of managedFields), so a field the
/// server-side apply no longer names is removed.
fn client_to_server_side_apply(k: &Kubectl<'_>) {
    let version = k.binary.display();
    let before =
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: migrated}\ndata: {a: '1', b: '2'}\n";
    assert!(k.apply_yaml(before, &[]).status.success(), "{version}");
    let after = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: migrated}\ndata: {a: '1'}\n";
    let out = k.apply_yaml(after, &["--server-side"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        k.jsonpath("cm/migrated", "{.data}"),
        r#"{"a":"1"}"#,
        "{version}: the field dropped from the applied configuration is gone"
    );
    let managers = k.jsonpath("cm/migrated", "{.metadata.managedFields[*].manager}");
    assert!(
        !managers.contains("kubectl-client-side-apply"),
        "{version}: {managers}"
    );
}

/// A ConfigMap `child` owned by the ConfigMap `owner` (both created here).
fn owned_pair(k: &Kubectl<'_>, owner: &str, child: &str) {
    k.ok(&["create", "configmap", owner]);
    let uid = k.jsonpath(&format!("cm/{owner}"), "{.metadata.uid}");
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {child}\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {uid}, blockOwnerDeletion: true}}\n"
    );
    let out = k.apply_yaml(&yaml, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl delete --cascade=background|foreground|orphan` with the garbage collector.
fn cascade(k: &Kubectl<'_>) {
    let version = k.binary.display();
    owned_pair(k, "bg-owner", "bg-child");
    k.ok(&["delete", "cm", "bg-owner", "--cascade=background"]);
    k.ok(&["wait", "--for=delete", "cm/bg-child", "--timeout=20s"]);

    owned_pair(k, "fg-owner", "fg-child");
    // Foreground: the owner goes only after its child, and kubectl waits for the owner.
    k.ok(&[
        "delete",
        "cm",
        "fg-owner",
        "--cascade=foreground",
        "--timeout=20s",
    ]);
    assert!(
        !k.run(&["get", "cm", "fg-child"]).status.success(),
        "{version}: the child went before its owner"
    );

    owned_pair(k, "or-owner", "or-child");
    k.ok(&["delete", "cm", "or-owner", "--cascade=orphan"]);
    assert_eq!(
        k.jsonpath("cm/or-child", "{.metadata.ownerReferences}"),
        "",
        "{version}: the orphan lost its owner reference"
    );
}

#[test]
#[ignore = "needs kubectl 1.33 and 1.35"]
fn kubectl_should_work_against_skiff_server() {
    let binaries = kubectl_binaries();
    let server = start_server();
    for (i, binary) in binaries.iter().enumerate() {
        let k = Kubectl {
            binary,
            kubeconfig: &server.kubeconfig,
            namespace: format!("e2e-{i}"),
        };
        scenario(&k);
        eprintln!("{}: scenario passed", binary.display());
    }
}

const LISTED: &str = "
apiVersion: v1
kind: ConfigMap
metadata: {name: listed, labels: {set: listed}}
data: {color: green}
---
apiVersion: v1
kind: Secret
metadata: {name: listed, labels: {set: listed}}
data: {token: c2VjcmV0}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: listed, labels: {set: listed}}
spec:
  replicas: 2
  selector: {matchLabels: {app: listed}}
  template:
    metadata: {labels: {app: listed}}
    spec:
      containers:
      - {name: web, image: busybox:1.36, ports: [{containerPort: 80}]}
---
apiVersion: e2e.example.com/v1
kind: Mailbox
metadata: {name: listed, labels: {set: listed}}
spec: {host: list.example}
";

/// What `kubectl get -o yaml` wrote comes back: every object with its fields.
fn assert_listed_back(k: &Kubectl<'_>, how: &str) {
    let version = k.binary.display();
    assert_eq!(
        k.jsonpath("cm/listed", "{.data.color}"),
        "green",
        "{version}: {how}"
    );
    assert_eq!(
        k.jsonpath("secret/listed", "{.data.token}"),
        "c2VjcmV0",
        "{version}: {how}"
    );
    assert_eq!(
        k.jsonpath(
            "deploy/listed",
            "{.spec.replicas} {.spec.template.spec.containers[0].image}"
        ),
        "2 busybox:1.36",
        "{version}: {how}"
    );
    assert_eq!(
        k.jsonpath("mbx/listed", "{.spec.host}"),
        "list.example",
        "{version}: {how}"
    );
}

/// `kubectl get -o yaml` of several objects writes a `kind: List`; kubectl validates a List
/// client-side against `/openapi/v2` in protobuf, so `create -f` and `apply -f` of that file
/// work only when the server serves it.
fn list_round_trip(k: &Kubectl<'_>, dir: &Path) {
    let version = k.binary.display();
    let namespace = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n",
        k.namespace
    );
    assert!(k.apply_yaml(&namespace, &[]).status.success());
    let applied = k.apply_yaml(LISTED, &[]);
    assert!(
        applied.status.success(),
        "{version}: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let kinds = "configmaps,secrets,deployments,mailboxes";
    let list = k.ok(&["get", kinds, "-l", "set=listed", "-o", "yaml"]);
    assert!(
        list.starts_with("apiVersion: v1\nitems:") && list.contains("\nkind: List\n"),
        "{version}: {list}"
    );
    assert_eq!(list.matches("\n  kind: ").count(), 4, "{version}: {list}");
    let file = dir.join(format!("{}.yaml", k.namespace));
    std::fs::write(&file, &list).unwrap();
    let file = file.to_str().unwrap();

    let delete = ["delete", kinds, "-l", "set=listed", "--wait=true"];
    k.ok(&delete);
    let created = k.ok(&["create", "-f", file]);
    for object in [
        "configmap/listed created",
        "secret/listed created",
        "deployment.apps/listed created",
        "mailbox.e2e.example.com/listed created",
    ] {
        assert!(created.contains(object), "{version}: {created}");
    }
    assert_listed_back(k, "create -f");

    k.ok(&delete);
    let applied = k.ok(&["apply", "-f", file]);
    assert_eq!(
        applied.matches(" created").count(),
        4,
        "{version}: {applied}"
    );
    assert_listed_back(k, "apply -f");
    assert!(
        k.jsonpath(
            "cm/listed",
            "{.metadata.annotations.kubectl\\.kubernetes\\.io/last-applied-configuration}"
        )
        .contains("green"),
        "{version}: apply recorded its configuration"
    );

    // A List with unknown fields (at the top of an item and nested): kubectl's client-side
    // validation names each and nothing is created.
    let bad = format!(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: strict-bad, namespace: {}, bogusmeta: 1}}\n  bogus: 1\n",
        k.namespace
    );
    let bad_file = dir.join(format!("{}-bad.yaml", k.namespace));
    std::fs::write(&bad_file, bad).unwrap();
    let bad_file = bad_file.to_str().unwrap();
    for verb in ["create", "apply"] {
        let out = k.run(&[verb, "-f", bad_file, "--validate=strict"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{version}: {verb}: {stderr}");
        assert!(
            stderr.contains("unknown field \"bogus\"")
                && stderr.contains("unknown field \"bogusmeta\""),
            "{version}: {verb}: {stderr}"
        );
    }
    assert!(!k.run(&["get", "cm", "strict-bad"]).status.success());
    let lenient = k.run(&["create", "-f", bad_file, "--validate=false"]);
    assert!(
        lenient.status.success(),
        "{version}: {}",
        String::from_utf8_lossy(&lenient.stderr)
    );
}

#[test]
#[ignore = "needs kubectl 1.33 and 1.35"]
fn kubectl_should_create_and_apply_a_list_it_got_as_yaml() {
    let binaries = kubectl_binaries();
    let server = start_server();
    let dir = tempfile::tempdir().unwrap();
    for (i, binary) in binaries.iter().enumerate() {
        let k = Kubectl {
            binary,
            kubeconfig: &server.kubeconfig,
            namespace: format!("list-{i}"),
        };
        if i == 0 {
            assert!(k.apply_yaml(CRD, &[]).status.success(), "CRD");
            k.ok(&[
                "wait",
                "--for=condition=Established",
                "crd/mailboxes.e2e.example.com",
                "--timeout=10s",
            ]);
        }
        list_round_trip(&k, dir.path());
        eprintln!("{}: list round trip passed", binary.display());
    }
}
