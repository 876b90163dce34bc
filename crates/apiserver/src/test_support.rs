//! Helpers the unit tests of several modules share.

use skiff_apimachinery::ResourceInfo;

/// The built-in resource named `plural`.
pub fn builtin_info(plural: &str) -> ResourceInfo {
    skiff_apimachinery::resources::builtin()
        .into_iter()
        .find(|r| r.plural == plural)
        .expect("a built-in resource")
}
