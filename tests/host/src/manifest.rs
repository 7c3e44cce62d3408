//! Loading a Spin manifest (`spin_manifest_version = 2`) into what the host runs.

use crate::allowed_hosts::AllowedHosts;
use crate::variables::{self, Declaration, Template};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The only SQLite label Spin provides without a runtime configuration file.
pub(crate) const DEFAULT_DATABASE: &str = "default";

/// Component keys the host knows it can ignore without changing behaviour.
const IGNORED_COMPONENT_KEYS: &[&str] = &["description", "build", "tool", "exclude_files"];

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: toml::Value,
    #[serde(rename = "application")]
    _application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Table>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
struct RawApplication {
    #[serde(rename = "name")]
    _name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default, rename = "secret")]
    _secret: bool,
    #[serde(default, rename = "description")]
    _description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    route: RawRoute,
    component: toml::Value,
    executor: Option<RawExecutor>,
    #[serde(default, rename = "id")]
    _id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Path(String),
    Private(RawPrivateRoute),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivateRoute {
    private: bool,
}

#[derive(Deserialize)]
struct RawExecutor {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    dependencies: BTreeMap<String, RawDependency>,
    #[serde(flatten)]
    other: toml::Table,
}

/// A component dependency the test host composes: a local `.wasm` file
/// (`"shop:orders" = { path = "...", inherit_configuration = true }`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    path: String,
    #[serde(default)]
    inherit_configuration: Option<toml::Value>,
    #[serde(default)]
    export: Option<String>,
}

/// A component dependency: composed into its component when the app is loaded, as Spin
/// 4.0.2 does (`crates/compose`).
#[derive(Debug, Clone)]
pub(crate) struct Dependency {
    /// The dependency's name in the manifest: a package (`shop:orders`, optionally with an
    /// interface and a version) or a plain name.
    pub(crate) name: String,
    /// The resolved path of its `.wasm` file.
    pub(crate) source: PathBuf,
    /// The export that satisfies the import, when not the import's own name.
    pub(crate) export: Option<String>,
}

/// A component the HTTP trigger runs.
#[derive(Debug, Clone)]
pub(crate) struct ComponentConfig {
    /// The component's id (`[component.ID]`).
    pub(crate) id: String,
    /// The resolved path of its `.wasm` file.
    pub(crate) source: PathBuf,
    /// Parsed `allowed_outbound_hosts`, templates rendered.
    pub(crate) allowed_hosts: AllowedHosts,
    /// `sqlite_databases` labels.
    pub(crate) sqlite_databases: BTreeSet<String>,
    /// `key_value_stores` labels.
    pub(crate) key_value_stores: BTreeSet<String>,
    /// `[component.ID.variables]` with templates rendered: what `wasi:config` serves.
    pub(crate) variables: BTreeMap<String, String>,
    /// `environment` entries, passed as WASI environment variables.
    pub(crate) environment: Vec<(String, String)>,
    /// `[component.ID.dependencies]`, composed into the component.
    pub(crate) dependencies: Vec<Dependency>,
}

/// The parts of a manifest the host needs.
#[derive(Debug, Clone)]
pub(crate) struct AppConfig {
    /// Components referenced by HTTP triggers, by id.
    pub(crate) components: BTreeMap<String, ComponentConfig>,
    /// Public `(component, route)` pairs in manifest order.
    pub(crate) public_routes: Vec<(String, String)>,
    /// Things the host noticed but accepted (printed at start).
    pub(crate) warnings: Vec<String>,
}

impl AppConfig {
    /// Reads and validates `manifest`. `overrides` are application-variable values
    /// that win over `SPIN_VARIABLE_*` environment variables and defaults.
    pub(crate) fn load(manifest: &Path, overrides: &HashMap<String, String>) -> Result<Self> {
        let text = std::fs::read_to_string(manifest)
            .with_context(|| format!("cannot read manifest {}", manifest.display()))?;
        let base_dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base_dir, overrides, |name| std::env::var(name).ok())
            .with_context(|| format!("invalid Spin manifest {}", manifest.display()))
    }

    fn parse(
        text: &str,
        base_dir: &Path,
        overrides: &HashMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        if raw.spin_manifest_version.as_integer() != Some(2) {
            bail!(
                "spin_manifest_version must be 2 (found {}); older manifests are not supported",
                raw.spin_manifest_version
            );
        }
        let mut warnings = Vec::new();

        let mut declared = BTreeMap::new();
        for (name, variable) in &raw.variables {
            if !variables::is_valid_name(name) {
                bail!("invalid application variable name {name:?}: use lower snake_case");
            }
            let declaration = match (&variable.default, variable.required) {
                (Some(_), true) => {
                    bail!("variable {name:?} cannot both be required and have a default")
                }
                (Some(default), false) => Declaration::Default(default.clone()),
                (None, true) => Declaration::Required,
                (None, false) => {
                    bail!("variable {name:?} must either have a default or be required")
                }
            };
            declared.insert(name.clone(), declaration);
        }
        for name in overrides.keys() {
            if !declared.contains_key(name) {
                warnings.push(format!(
                    "variable override {name:?} is not declared in [variables]"
                ));
            }
        }
        let app_values = variables::resolve_application_variables(&declared, overrides, env)?;

        let mut public_routes = Vec::new();
        let mut triggered = BTreeSet::new();
        for (kind, triggers) in &raw.trigger {
            if kind != "http" {
                bail!(
                    "trigger type {kind:?} is not supported: Spin 4.0.2 only has it through a \
                     plugin, and the test host only runs HTTP triggers"
                );
            }
            for table in triggers {
                let trigger: RawHttpTrigger = toml::Value::Table(table.clone())
                    .try_into()
                    .context("invalid [[trigger.http]] entry")?;
                let Some(component) = trigger.component.as_str() else {
                    bail!("[[trigger.http]] `component` must be the id of a [component.ID] table");
                };
                if !raw.component.contains_key(component) {
                    bail!("[[trigger.http]] refers to undefined component {component:?}");
                }
                if let Some(executor) = &trigger.executor
                    && executor.kind != "spin"
                    && executor.kind != "http"
                {
                    bail!(
                        "component {component:?}: executor {:?} is not supported by the test host",
                        executor.kind
                    );
                }
                match trigger.route {
                    RawRoute::Path(route) => public_routes.push((component.to_owned(), route)),
                    // Reachable only by local service chaining: not routed.
                    RawRoute::Private(RawPrivateRoute { private: true }) => {}
                    RawRoute::Private(RawPrivateRoute { private: false }) => bail!(
                        "component {component:?}: route must be a path or `{{ private = true }}`"
                    ),
                }
                triggered.insert(component.to_owned());
            }
        }

        let mut components = BTreeMap::new();
        for (id, component) in &raw.component {
            if !is_valid_component_id(id) {
                bail!("invalid component id {id:?}: use lower kebab-case");
            }
            if !triggered.contains(id) {
                warnings.push(format!("component {id:?} has no trigger and is not loaded"));
                continue;
            }
            for key in component.other.keys() {
                if !IGNORED_COMPONENT_KEYS.contains(&key.as_str()) {
                    warnings.push(format!(
                        "component {id:?}: `{key}` is not supported and is ignored"
                    ));
                }
            }
            components.insert(
                id.clone(),
                load_component(id, component, base_dir, &app_values)?,
            );
        }

        Ok(Self {
            components,
            public_routes,
            warnings,
        })
    }
}

fn is_valid_component_id(id: &str) -> bool {
    id.starts_with(|c: char| c.is_ascii_lowercase())
        && id.split('-').all(|word| {
            !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

fn load_component(
    id: &str,
    raw: &RawComponent,
    base_dir: &Path,
    app_values: &BTreeMap<String, String>,
) -> Result<ComponentConfig> {
    let Some(source) = raw.source.as_str() else {
        bail!("component {id:?}: only a local file `source = \"path.wasm\"` is supported");
    };
    let rendered_hosts = raw
        .allowed_outbound_hosts
        .iter()
        .map(|entry| Template::parse(entry).and_then(|t| t.render(app_values)))
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
    let allowed_hosts = AllowedHosts::parse(&rendered_hosts)
        .with_context(|| format!("component {id:?}: allowed_outbound_hosts"))?;
    let sqlite_databases: BTreeSet<String> = raw.sqlite_databases.iter().cloned().collect();
    let key_value_stores: BTreeSet<String> = raw.key_value_stores.iter().cloned().collect();
    if let Some(label) = key_value_stores
        .iter()
        .find(|l| *l != crate::keyvalue::DEFAULT_STORE)
    {
        bail!(
            "component {id:?} uses key-value store {label:?}, which is not defined: Spin only \
             provides \"{}\" unless a runtime configuration file defines more",
            crate::keyvalue::DEFAULT_STORE
        );
    }
    let mut dependencies = Vec::new();
    for (name, dependency) in &raw.dependencies {
        // Spin puts a deny-all adapter in front of every capability a dependency does not
        // inherit; the test host composes only dependencies that inherit everything.
        if dependency.inherit_configuration != Some(toml::Value::Boolean(true)) {
            bail!(
                "component {id:?}: dependency {name:?} must set `inherit_configuration = true`: \
                 the test host does not restrict a dependency's capabilities"
            );
        }
        dependencies.push(Dependency {
            name: name.clone(),
            source: base_dir.join(&dependency.path),
            export: dependency.export.clone(),
        });
    }
    Ok(ComponentConfig {
        id: id.to_owned(),
        source: base_dir.join(source),
        dependencies,
        allowed_hosts,
        sqlite_databases,
        key_value_stores,
        variables: variables::resolve_component_variables(id, &raw.variables, app_values)?,
        environment: raw
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
spin_manifest_version = 2

[application]
name = "shop"

[variables]
greeting = { default = "hello" }
token = { required = true, secret = true }

[[trigger.http]]
route = "/api/..."
component = "gateway"

[[trigger.http]]
route = { private = true }
component = "orders"

[component.gateway]
source = "gateway.wasm"
allowed_outbound_hosts = ["http://orders.spin.internal"]
description = "front door"
[component.gateway.variables]
message = "{{ greeting }}, world"

[component.orders]
source = "target/orders.wasm"
sqlite_databases = ["default"]
[component.orders.variables]
token = "{{ token }}"

[component.unused]
source = "unused.wasm"
"#;

    fn parse(text: &str, overrides: &[(&str, &str)]) -> Result<AppConfig> {
        let overrides = overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AppConfig::parse(text, Path::new("/app"), &overrides, |_| None)
    }

    #[test]
    fn parses_components_routes_and_variables() {
        let app = parse(MANIFEST, &[("token", "t0k")]).unwrap();
        assert_eq!(
            app.public_routes,
            vec![("gateway".to_string(), "/api/...".to_string())]
        );
        assert!(app.components.contains_key("orders"));
        assert_eq!(app.components.len(), 2);
        let gateway = &app.components["gateway"];
        assert_eq!(gateway.source, Path::new("/app/gateway.wasm"));
        assert_eq!(gateway.variables["message"], "hello, world");
        assert!(
            gateway
                .allowed_hosts
                .allows("http", "orders.spin.internal", None)
        );
        assert_eq!(app.components["orders"].variables["token"], "t0k");
        assert!(app.warnings.iter().any(|w| w.contains("unused")));
    }

    #[test]
    fn allowed_outbound_hosts_render_variables() {
        let manifest = MANIFEST
            .replace(
                "greeting = { default = \"hello\" }",
                "greeting = { default = \"hello\" }\ndb_host = { default = \"127.0.0.1:5432\" }",
            )
            .replace(
                "sqlite_databases = [\"default\"]",
                "sqlite_databases = [\"default\"]\nallowed_outbound_hosts = [\"postgres://{{ db_host }}\"]",
            );
        let overrides: HashMap<String, String> = [("token".to_string(), "t".to_string())].into();
        let load = |overrides: &HashMap<String, String>, env: Option<&str>| {
            let env = env.map(str::to_owned);
            AppConfig::parse(&manifest, Path::new("/app"), overrides, |name| {
                (name == "SPIN_VARIABLE_DB_HOST")
                    .then(|| env.clone())
                    .flatten()
            })
            .unwrap()
        };
        let hosts = |app: &AppConfig| app.components["orders"].allowed_hosts.clone();

        let app = load(&overrides, None);
        assert!(hosts(&app).allows("postgres", "127.0.0.1", Some(5432)));
        assert!(!hosts(&app).allows("postgres", "db.internal", Some(5432)));

        let app = load(&overrides, Some("db.internal:6432"));
        assert!(hosts(&app).allows("postgres", "db.internal", Some(6432)));
        assert!(!hosts(&app).allows("postgres", "127.0.0.1", Some(5432)));

        let mut with_override = overrides.clone();
        with_override.insert("db_host".into(), "10.0.0.7".into());
        let app = load(&with_override, Some("db.internal:6432"));
        assert!(
            hosts(&app).allows("postgres", "10.0.0.7", None),
            "default port 5432"
        );
        assert!(!hosts(&app).allows("postgres", "db.internal", Some(6432)));

        let undefined = manifest.replace("{{ db_host }}", "{{ nope }}");
        assert!(AppConfig::parse(&undefined, Path::new("/app"), &overrides, |_| None).is_err());
    }

    #[test]
    fn rejects_what_spin_rejects() {
        assert!(
            parse(MANIFEST, &[]).is_err(),
            "required variable without value"
        );
        let unknown_var = MANIFEST.replace("{{ greeting }}", "{{ nope }}");
        assert!(parse(&unknown_var, &[("token", "x")]).is_err());
        let v1 = MANIFEST.replace("spin_manifest_version = 2", "spin_manifest_version = \"1\"");
        assert!(parse(&v1, &[("token", "x")]).is_err());
        let redis = format!("{MANIFEST}\n[[trigger.redis]]\ncomponent = \"orders\"\n");
        assert!(parse(&redis, &[("token", "x")]).is_err());
    }
}
