//! The resources this server serves, looked up by group, version and plural name: the built-in
//! table plus the custom resources of established CRDs (replaced as a whole when CRDs change).
//! Pure types: the CRD module (`crd`) computes what is served and replaces it here.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use skiff_apimachinery::ResourceInfo;
use skiff_apimachinery::resources::builtin;

use serde_json::Value;

use crate::crd::rules::Rules;

/// One served version of a custom resource.
#[derive(Clone, Debug)]
pub struct CustomResource {
    /// How the version is served.
    pub info: ResourceInfo,
    /// The version's `openAPIV3Schema`, if it has one.
    pub schema: Option<Value>,
    /// The compiled `x-kubernetes-validations` of that schema, if it has any.
    pub rules: Option<Arc<Rules>>,
    /// The version's `additionalPrinterColumns`.
    pub columns: Vec<Value>,
    /// The version's `subresources.scale` paths, if any.
    pub scale: Option<Value>,
    /// Whether this is the storage version.
    pub storage: bool,
}

/// The served custom resources, shared.
pub type Served = Arc<Vec<CustomResource>>;

/// The served resources.
#[derive(Debug)]
pub struct Registry {
    builtin: Vec<ResourceInfo>,
    /// The built-in resources by plural name (a request's lookup: no scan, no copy).
    by_plural: HashMap<String, Vec<Arc<ResourceInfo>>>,
    custom: RwLock<Served>,
}

impl Registry {
    /// The built-in resources, no custom ones yet.
    pub fn builtin() -> Self {
        let builtin = builtin();
        let mut by_plural: HashMap<String, Vec<Arc<ResourceInfo>>> = HashMap::new();
        for info in &builtin {
            by_plural
                .entry(info.plural.clone())
                .or_default()
                .push(Arc::new(info.clone()));
        }
        Self {
            builtin,
            by_plural,
            custom: RwLock::new(Arc::new(Vec::new())),
        }
    }

    /// The custom resources now served.
    pub fn custom(&self) -> Served {
        match self.custom.read() {
            Ok(custom) => custom.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the custom resources.
    pub fn set_custom(&self, resources: Vec<CustomResource>) {
        let resources = Arc::new(resources);
        match self.custom.write() {
            Ok(mut custom) => *custom = resources,
            Err(poisoned) => *poisoned.into_inner() = resources,
        }
    }

    /// Finds a resource.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        let matches =
            |r: &ResourceInfo| r.group == group && r.version == version && r.plural == plural;
        self.by_plural
            .get(plural)
            .and_then(|infos| infos.iter().find(|r| matches(r)))
            .cloned()
            .or_else(|| {
                self.custom()
                    .iter()
                    .find(|c| matches(&c.info))
                    .map(|c| Arc::new(c.info.clone()))
            })
    }

    /// The custom resource served at this group, version and plural, if it is one.
    pub fn find_custom(&self, group: &str, version: &str, plural: &str) -> Option<CustomResource> {
        self.custom()
            .iter()
            .find(|c| c.info.group == group && c.info.version == version && c.info.plural == plural)
            .cloned()
    }

    /// Every resource: built-in ones in table order, then custom ones.
    pub fn all(&self) -> Vec<ResourceInfo> {
        let mut all = self.builtin.clone();
        all.extend(self.custom().iter().map(|c| c.info.clone()));
        all
    }

    /// The resources of one group version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<ResourceInfo> {
        self.all()
            .into_iter()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }

    /// The named groups (not core) with their versions, in table order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.all().into_iter().filter(|r| !r.group.is_empty()) {
            match groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) if !versions.contains(&r.version) => {
                    versions.push(r.version.clone());
                }
                Some(_) => {}
                None => groups.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        groups
    }
}
