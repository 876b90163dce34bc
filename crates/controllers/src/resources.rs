//! What the API serves, as the controllers need it: every resource with its verbs and scope
//! (from discovery, so custom resources are included), and the lookup from an owner
//! reference's `apiVersion` + `kind` to the resource that holds such objects.

use std::collections::HashMap;

use kube::Client;
use kube::api::ApiResource;
use kube::discovery::{ApiCapabilities, Discovery, Scope, verbs};

/// Resources the garbage collector does not track (upstream ignores events too: they are
/// many, short-lived and never owners).
const IGNORED: [(&str, &str); 2] = [("", "events"), ("events.k8s.io", "events")];

/// One served resource at its most stable version.
#[derive(Clone, Debug)]
pub struct Served {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
    /// The verbs it supports.
    pub verbs: Vec<String>,
}

impl Served {
    /// Whether the resource supports `verb`.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// A stable key: `group/version/plural`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.resource.group, self.resource.version, self.resource.plural
        )
    }
}

/// A snapshot of discovery.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    served: Vec<Served>,
    /// (group, kind) → index into `served`.
    by_kind: HashMap<(String, String), usize>,
}

impl Resources {
    /// Runs discovery (aggregated: two requests).
    pub async fn discover(client: &Client) -> Result<Self, kube::Error> {
        let discovery = Discovery::new(client.clone()).run_aggregated().await?;
        let mut served = Vec::new();
        for group in discovery.groups() {
            for (resource, capabilities) in group.resources_by_stability() {
                served.push(Self::served(resource, &capabilities));
            }
        }
        Ok(Self::from_served(served))
    }

    fn served(resource: ApiResource, capabilities: &ApiCapabilities) -> Served {
        Served {
            namespaced: capabilities.scope == Scope::Namespaced,
            verbs: capabilities.operations.clone(),
            resource,
        }
    }

    /// Builds the lookup over a list of resources.
    pub fn from_served(served: Vec<Served>) -> Self {
        let by_kind = served
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.resource.group.clone(), s.resource.kind.clone()), i))
            .collect();
        Self { served, by_kind }
    }

    /// The resource holding objects of `kind` in the group of `api_version` (any version of
    /// the group: an object is the same whichever version it is read at).
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<&Served> {
        let group = api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
            .to_string();
        self.by_kind
            .get(&(group, kind.to_string()))
            .map(|&i| &self.served[i])
    }

    /// The resource with `key` (see [`Served::key`]).
    pub fn by_key(&self, key: &str) -> Option<&Served> {
        self.served.iter().find(|s| s.key() == key)
    }

    /// The resources whose objects can be owners or dependents: listable, watchable, deletable.
    pub fn collectable(&self) -> impl Iterator<Item = &Served> {
        self.served.iter().filter(|s| {
            s.supports(verbs::LIST)
                && s.supports(verbs::WATCH)
                && s.supports(verbs::DELETE)
                && !IGNORED.contains(&(s.resource.group.as_str(), s.resource.plural.as_str()))
        })
    }

    /// The namespaced resources a namespace's deletion must empty.
    pub fn namespaced_content(&self) -> impl Iterator<Item = &Served> {
        self.served.iter().filter(|s| {
            s.namespaced && s.supports(verbs::LIST) && s.supports(verbs::DELETE_COLLECTION)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(group: &str, version: &str, kind: &str, plural: &str, ns: bool) -> Served {
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Served {
            resource: ApiResource {
                group: group.into(),
                version: version.into(),
                api_version,
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced: ns,
            verbs: ["list", "watch", "delete", "deletecollection"]
                .map(String::from)
                .to_vec(),
        }
    }

    #[test]
    fn resolve_should_match_the_group_whatever_the_version() {
        let resources = Resources::from_served(vec![
            served("apps", "v1", "ReplicaSet", "replicasets", true),
            served("", "v1", "ConfigMap", "configmaps", true),
            served("", "v1", "Event", "events", true),
        ]);
        let rs = resources.resolve("apps/v1beta2", "ReplicaSet").unwrap();
        assert_eq!(rs.resource.plural, "replicasets");
        assert!(resources.resolve("v1", "ConfigMap").is_some());
        assert!(resources.resolve("apps/v1", "ConfigMap").is_none());
        let collectable: Vec<_> = resources
            .collectable()
            .map(|s| s.resource.plural.as_str())
            .collect();
        assert_eq!(collectable, ["replicasets", "configmaps"]);
    }
}
