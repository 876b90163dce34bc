//! Volume binding as the scheduler sees it (upstream's VolumeBinding plugin, for claims that
//! are bound already): a pod's PersistentVolumeClaims must exist and be bound, and a node must
//! match the required node affinity of every PersistentVolume they are bound to (a local disk
//! lives on one node). Claims are read from the watches; the pure check is here.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{NodeSelector, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;

/// Why a pod's claims let no node take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// A claim the pod mounts does not exist.
    MissingClaim(String),
    /// A claim is not bound to a volume yet.
    Unbound(String),
    /// A claim is bound to a volume that does not exist.
    MissingVolume(String),
}

impl std::fmt::Display for Unusable {
    /// Upstream's PreFilter text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingClaim(claim) => write!(f, "persistentvolumeclaim \"{claim}\" not found"),
            Self::Unbound(_) => f.write_str("pod has unbound immediate PersistentVolumeClaims"),
            Self::MissingVolume(volume) => write!(
                f,
                "pvc(s) bound to non-existent pv(s): persistentvolume \"{volume}\" not found"
            ),
        }
    }
}

impl Unusable {
    /// The same for a person.
    pub fn explain(&self) -> String {
        match self {
            Self::MissingClaim(claim) => format!(
                "It mounts the PersistentVolumeClaim \"{claim}\", which does not exist in its namespace: create it, or fix the pod's claimName."
            ),
            Self::Unbound(claim) => format!(
                "Its PersistentVolumeClaim \"{claim}\" is not bound to a PersistentVolume yet; the pod waits until it is."
            ),
            Self::MissingVolume(volume) => format!(
                "Its claim is bound to the PersistentVolume \"{volume}\", which does not exist."
            ),
        }
    }
}

/// Claims and volumes, as far as scheduling needs them.
#[derive(Debug, Default)]
pub struct Volumes {
    /// `namespace/name` of each claim → the volume it is bound to (`None`: not bound yet).
    claims: HashMap<String, Option<String>>,
    /// Each volume's required node affinity, if it has one.
    volumes: HashMap<String, Option<NodeSelector>>,
}

impl Volumes {
    /// Records a claim (added or changed).
    pub fn upsert_claim(&mut self, claim: &PersistentVolumeClaim) {
        let bound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        let key = format!(
            "{}/{}",
            claim.namespace().unwrap_or_default(),
            claim.name_any()
        );
        self.claims.insert(key, bound);
    }

    /// Forgets a claim.
    pub fn remove_claim(&mut self, claim: &PersistentVolumeClaim) {
        let key = format!(
            "{}/{}",
            claim.namespace().unwrap_or_default(),
            claim.name_any()
        );
        self.claims.remove(&key);
    }

    /// Records a volume (added or changed).
    pub fn upsert_volume(&mut self, volume: &PersistentVolume) {
        let affinity = volume
            .spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.clone());
        self.volumes.insert(volume.name_any(), affinity);
    }

    /// Forgets a volume.
    pub fn remove_volume(&mut self, volume: &PersistentVolume) {
        self.volumes.remove(&volume.name_any());
    }

    /// Forgets every claim (before a relist).
    pub fn clear_claims(&mut self) {
        self.claims.clear();
    }

    /// Forgets every volume (before a relist).
    pub fn clear_volumes(&mut self) {
        self.volumes.clear();
    }

    /// The node affinities a node must match for `pod`, or why no node can take it.
    pub fn requirements(&self, pod: &Pod) -> Result<Vec<NodeSelector>, Unusable> {
        let namespace = pod.namespace().unwrap_or_default();
        let claims = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.as_str());
        let mut required = Vec::new();
        for claim in claims {
            let volume = match self.claims.get(&format!("{namespace}/{claim}")) {
                None => return Err(Unusable::MissingClaim(claim.to_string())),
                Some(None) => return Err(Unusable::Unbound(claim.to_string())),
                Some(Some(volume)) => volume,
            };
            match self.volumes.get(volume) {
                None => return Err(Unusable::MissingVolume(volume.clone())),
                Some(Some(selector)) => required.push(selector.clone()),
                Some(None) => {}
            }
        }
        Ok(required)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claim(name: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"volumeName": volume}}),
        )
        .unwrap()
    }

    fn pod(claims: &[&str]) -> Pod {
        let volumes: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [], "volumes": volumes}}))
        .unwrap()
    }

    #[test]
    fn claims_should_exist_be_bound_and_carry_their_volumes_node_affinity() {
        let mut volumes = Volumes::default();
        let text = |r: Result<Vec<NodeSelector>, Unusable>| r.unwrap_err().to_string();
        assert_eq!(
            text(volumes.requirements(&pod(&["data"]))),
            "persistentvolumeclaim \"data\" not found"
        );
        volumes.upsert_claim(&claim("data", None));
        assert_eq!(
            text(volumes.requirements(&pod(&["data"]))),
            "pod has unbound immediate PersistentVolumeClaims"
        );
        volumes.upsert_claim(&claim("data", Some("pv-1")));
        assert_eq!(
            text(volumes.requirements(&pod(&["data"]))),
            "pvc(s) bound to non-existent pv(s): persistentvolume \"pv-1\" not found"
        );
        let pv: PersistentVolume = serde_json::from_value(json!({"metadata": {"name": "pv-1"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions":
                [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}))
        .unwrap();
        volumes.upsert_volume(&pv);
        let required = volumes.requirements(&pod(&["data"])).unwrap();
        assert_eq!(required.len(), 1);
        assert_eq!(volumes.requirements(&pod(&[])), Ok(Vec::new()));
    }

    #[test]
    fn a_pod_should_go_where_its_volume_lives_or_say_why_it_cannot() {
        use rand::SeedableRng;

        use crate::cache::Cache;
        use crate::decide::place;
        use crate::filters::Candidate;
        use crate::message::upstream;

        let mut cache = Cache::default();
        for name in ["n1", "n2"] {
            let node = serde_json::from_value(json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name}},
                "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "10"},
                    "conditions": [{"type": "Ready", "status": "True"}]}}))
            .unwrap();
            cache.upsert_node(node);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let p = pod(&["data"]);
        let missing = place(&mut Candidate::new(&p), &cache, &mut 0, &mut rng).unwrap_err();
        assert_eq!(
            upstream(&missing),
            "0/2 nodes are available: persistentvolumeclaim \"data\" not found."
        );
        let on = |host: &str| -> PersistentVolume {
            serde_json::from_value(json!({"metadata": {"name": "pv-1"},
                "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions":
                    [{"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}]}}}}))
            .unwrap()
        };
        cache
            .volumes_mut()
            .upsert_claim(&claim("data", Some("pv-1")));
        cache.volumes_mut().upsert_volume(&on("n2"));
        for _ in 0..4 {
            let placed = place(&mut Candidate::new(&p), &cache, &mut 0, &mut rng);
            assert_eq!(placed, Ok("n2".into()));
        }
        cache.volumes_mut().upsert_volume(&on("gone"));
        let conflict = place(&mut Candidate::new(&p), &cache, &mut 0, &mut rng).unwrap_err();
        assert_eq!(
            upstream(&conflict),
            "0/2 nodes are available: 2 node(s) had volume node affinity conflict."
        );
    }
}
