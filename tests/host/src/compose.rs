//! Component dependencies, composed as Spin 4.0.2 composes them when it loads an app
//! (`crates/compose` at tag v4.0.2): each dependency name is matched to the root
//! component's imports, each dependency is instantiated once, its export (the import's
//! own name, or the one the manifest names) must be a subtype of the import and is wired
//! to it; every other import, of the root and of the dependencies alike, stays an import
//! of the composition, and the root's exports are its exports. Only the root's imports are
//! wired: a dependency's import of another dependency is not.

use anyhow::{Context, Result, bail};
use semver::Version;
use wac_graph::types::{Package, SubtypeChecker};
use wac_graph::{CompositionGraph, EncodeOptions};

use crate::manifest::Dependency;

/// The composition of `root` (a component's bytes) with `dependencies`.
pub(crate) fn compose(
    component_id: &str,
    root: Vec<u8>,
    dependencies: &[Dependency],
) -> Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let root_package = Package::from_bytes(component_id, None, root, graph.types_mut())?;
    let root_world = root_package.ty();
    let root_id = graph.register_package(root_package)?;
    let root_instance = graph.instantiate(root_id);
    let imports: Vec<String> = graph.types()[root_world].imports.keys().cloned().collect();

    let mut wired: Vec<(String, String)> = Vec::new();
    for dependency in dependencies {
        let matched: Vec<&String> = imports
            .iter()
            .filter(|import| matches_import(&dependency.name, import))
            .collect();
        if matched.is_empty() {
            bail!(
                "dependency '{}' doesn't match any imports of component '{component_id}'",
                dependency.name
            );
        }
        let bytes = std::fs::read(&dependency.source).with_context(|| {
            format!(
                "dependency '{}': cannot read {}",
                dependency.name,
                dependency.source.display()
            )
        })?;
        let package_name = dependency
            .name
            .split_once('/')
            .map_or(dependency.name.as_str(), |(package, _)| package)
            .split_once('@')
            .map_or(dependency.name.as_str(), |(package, _)| package)
            .to_owned();
        let package = Package::from_bytes(&package_name, None, bytes, graph.types_mut())
            .with_context(|| format!("dependency '{}'", dependency.name))?;
        let world = package.ty();
        let package_id = graph
            .register_package(package)
            .with_context(|| format!("dependency '{}'", dependency.name))?;
        let instance = graph.instantiate(package_id);
        for import in matched {
            if let Some((_, other)) = wired.iter().find(|(name, _)| name == import) {
                bail!(
                    "component '{component_id}' has dependency conflicts: import '{import}' \
                     satisfied by dependencies: '{other}', '{}'",
                    dependency.name
                );
            }
            let export_name = dependency.export.clone().unwrap_or_else(|| import.clone());
            let Some(export_ty) = graph.types()[world].exports.get(&export_name).copied() else {
                bail!(
                    "dependency '{}' doesn't export '{export_name}' to satisfy import '{import}'",
                    dependency.name
                );
            };
            let import_ty = graph.types()[root_world].imports[import.as_str()];
            let mut cache = Default::default();
            SubtypeChecker::new(&mut cache)
                .is_subtype(export_ty, graph.types(), import_ty, graph.types())
                .with_context(|| {
                    format!(
                        "dependency '{}' exports '{export_name}' which is not compatible with import '{import}'",
                        dependency.name
                    )
                })?;
            let export = graph.alias_instance_export(instance, &export_name)?;
            graph.set_instantiation_argument(root_instance, import, export)?;
            wired.push((import.clone(), dependency.name.clone()));
        }
    }

    let exports: Vec<String> = graph.types()[root_world].exports.keys().cloned().collect();
    for name in exports {
        let export = graph.alias_instance_export(root_instance, &name)?;
        graph.export(export, &name)?;
    }
    Ok(graph.encode(EncodeOptions::default())?)
}

/// Whether dependency `name` (a package `ns:pkg`, optionally `/interface` and `@version`,
/// or a plain name) matches `import`, as Spin 4.0.2 matches them.
fn matches_import(name: &str, import: &str) -> bool {
    let is_package = |s: &str| s.contains([':', '/']);
    if !is_package(name) || !is_package(import) {
        return !is_package(name) && !is_package(import) && name == import;
    }
    let Some((import_package, rest)) = import.split_once('/') else {
        return false;
    };
    let (import_interface, import_version) = match rest.split_once('@') {
        Some((interface, version)) => (interface, Version::parse(version).ok()),
        None => (rest, None),
    };
    let (package_and_interface, version) = match name.rsplit_once('@') {
        Some((head, version)) => (head, Version::parse(version).ok()),
        None => (name, None),
    };
    let (package, interface) = match package_and_interface.split_once('/') {
        Some((package, interface)) => (package, Some(interface)),
        None => (package_and_interface, None),
    };
    package == import_package
        && interface.is_none_or(|i| i == import_interface)
        && version.is_none_or(|v| Some(v) == import_version)
}

#[cfg(test)]
mod tests {
    use super::matches_import;

    /// The cases of Spin 4.0.2's own test of `matches_import`.
    #[test]
    fn dependency_names_match_imports_as_in_spin() {
        for (name, imports) in [
            ("foo:bar/baz@0.1.0", vec!["foo:bar/baz@0.1.0"]),
            ("foo:bar/baz", vec!["foo:bar/baz@0.1.0", "foo:bar/baz"]),
            ("foo:bar", vec!["foo:bar/baz@0.1.0", "foo:bar/baz"]),
            ("foo:bar@0.1.0", vec!["foo:bar/baz@0.1.0"]),
            ("foo-bar", vec!["foo-bar"]),
        ] {
            for import in imports {
                assert!(matches_import(name, import), "{name} {import}");
            }
        }
        for (name, imports) in [
            ("foo:bar/baz@0.1.0", vec!["foo:bar/baz"]),
            ("foo:bar/baz", vec!["foo:bar/bub", "foo:bar/bub@0.1.0"]),
            ("foo:bar", vec!["foo:bub/bib"]),
            ("foo:bar@0.1.0", vec!["foo:bar/baz"]),
            ("foo:bar/baz", vec!["foo:bar/baz-bub", "foo-bar"]),
        ] {
            for import in imports {
                assert!(!matches_import(name, import), "{name} {import}");
            }
        }
    }
}
