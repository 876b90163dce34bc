//! Every object the collector's watches have shown, in a few bytes each: its uid as a number,
//! its resource and a hash of its name. An owner reference whose uid and name are here points
//! at an object that exists as far as the watches know, so a new dependent of it needs no API
//! check: upstream's graph holds every object for the same reason and asks the API only about
//! owners it has not observed (its "virtual" nodes). When such an owner goes, its Delete event
//! (or a relist that misses it) removes it here and queues a check of its dependents.
//!
//! A uid that is not a canonical uuid (lowercase, 8-4-4-4-12) is not kept, so a reference to
//! it is always checked through the API.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// What is kept of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// Its resource, as numbered in [`Observed::resources`].
    resource: u16,
    /// A hash of its name.
    name: u64,
}

/// The observed objects, by uid.
#[derive(Debug, Default)]
pub struct Observed {
    objects: HashMap<u128, Seen>,
    /// The resource keys seen, each with its position (what [`Seen::resource`] holds).
    resources: HashMap<String, u16>,
}

impl Observed {
    /// Records an object seen through `resource`.
    pub fn insert(&mut self, resource: &str, uid: &str, name: &str) {
        let Some(uid) = parse_uid(uid) else {
            return;
        };
        let Some(resource) = self.resource_index(resource) else {
            return;
        };
        self.objects.insert(
            uid,
            Seen {
                resource,
                name: name_hash(name),
            },
        );
    }

    /// Forgets an object (it is gone).
    pub fn remove(&mut self, uid: &str) {
        if let Some(uid) = parse_uid(uid) {
            self.objects.remove(&uid);
        }
    }

    /// Whether `reference` names an observed object (its uid, with the same name).
    pub fn holds(&self, reference: &OwnerReference) -> bool {
        parse_uid(&reference.uid)
            .and_then(|uid| self.objects.get(&uid))
            .is_some_and(|seen| seen.name == name_hash(&reference.name))
    }

    /// The uids of the objects seen through `resource`.
    pub fn uids_of(&self, resource: &str) -> Vec<String> {
        let Some(&index) = self.resources.get(resource) else {
            return Vec::new();
        };
        self.objects
            .iter()
            .filter(|(_, seen)| seen.resource == index)
            .map(|(uid, _)| format_uid(*uid))
            .collect()
    }

    fn resource_index(&mut self, resource: &str) -> Option<u16> {
        if let Some(&index) = self.resources.get(resource) {
            return Some(index);
        }
        let index = u16::try_from(self.resources.len()).ok()?;
        self.resources.insert(resource.to_string(), index);
        Some(index)
    }
}

fn name_hash(name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

/// The number a canonical uuid spells (lowercase, hyphenated); `None` for anything else.
fn parse_uid(uid: &str) -> Option<u128> {
    // `uuid` also reads uppercase, braced and unhyphenated forms: only the canonical spelling
    // round-trips through the number, so only it is kept.
    let canonical = uid.len() == 36 && !uid.bytes().any(|b| b.is_ascii_uppercase());
    canonical
        .then(|| uuid::Uuid::try_parse(uid).ok())
        .flatten()
        .map(|uid| uid.as_u128())
}

/// The canonical uuid spelling of a number [`parse_uid`] read.
fn format_uid(value: u128) -> String {
    uuid::Uuid::from_u128(value).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b9f3c2e-51a4-4d6e-9f0a-7c1d2e3f4a5b";

    fn reference(uid: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: name.into(),
            uid: uid.into(),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn canonical_uids_should_round_trip_and_others_should_not_be_kept() {
        assert_eq!(parse_uid(UID).map(format_uid).as_deref(), Some(UID));
        assert_eq!(parse_uid(&UID.to_uppercase()), None);
        assert_eq!(parse_uid("owner-1"), None);
        assert_eq!(parse_uid(&UID.replace('-', "x")), None);
        let mut observed = Observed::default();
        observed.insert("/v1/configmaps", "owner-1", "a");
        assert!(!observed.holds(&reference("owner-1", "a")));
        assert!(observed.uids_of("/v1/configmaps").is_empty());
    }

    #[test]
    fn a_reference_should_hold_only_with_the_observed_uid_and_name() {
        let mut observed = Observed::default();
        observed.insert("/v1/configmaps", UID, "a");
        assert!(observed.holds(&reference(UID, "a")));
        assert!(!observed.holds(&reference(UID, "b")));
        assert!(!observed.holds(&reference("0b9f3c2e-51a4-4d6e-9f0a-7c1d2e3f4a5c", "a")));
        assert_eq!(observed.uids_of("/v1/configmaps"), [UID]);
        assert!(observed.uids_of("/v1/secrets").is_empty());
        observed.remove(UID);
        assert!(!observed.holds(&reference(UID, "a")));
    }
}
