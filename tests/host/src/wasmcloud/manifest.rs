//! Reading a wadm manifest (`core.oam.dev/v1beta1` `Application`, wadm 0.21) into what the
//! lattice runs: the components with their image, configuration, spreadscaler instances and
//! links to the http-server, http-client, sqldb-postgres and messaging-nats providers.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where an http-server link listens when its source config has no `address`
/// (the http-server provider's default).
const DEFAULT_HTTP_ADDRESS: &str = "0.0.0.0:8000";

#[derive(Deserialize)]
struct RawManifest {
    kind: String,
    spec: RawSpec,
}

#[derive(Deserialize)]
struct RawSpec {
    #[serde(default)]
    components: Vec<RawComponent>,
}

#[derive(Deserialize)]
struct RawComponent {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    properties: RawProperties,
    #[serde(default)]
    traits: Vec<RawTrait>,
}

#[derive(Deserialize, Default)]
struct RawProperties {
    image: Option<String>,
    #[serde(default)]
    config: Vec<RawConfig>,
}

/// A named configuration; without `properties` it names a config stored in the lattice.
#[derive(Deserialize, Clone)]
struct RawConfig {
    name: String,
    properties: Option<BTreeMap<String, serde_yaml::Value>>,
}

#[derive(Deserialize)]
struct RawTrait {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    properties: serde_yaml::Value,
}

#[derive(Deserialize)]
struct RawSpread {
    instances: u32,
}

#[derive(Deserialize)]
struct RawLink {
    /// The link name (`default` when absent).
    name: Option<String>,
    target: RawTarget,
    namespace: String,
    package: String,
    interfaces: Vec<String>,
    #[serde(default)]
    source: RawLinkSide,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTarget {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        config: Vec<RawConfig>,
    },
}

impl RawTarget {
    fn name(&self) -> &str {
        match self {
            RawTarget::Name(name) | RawTarget::Full { name, .. } => name,
        }
    }

    fn config(&self) -> &[RawConfig] {
        match self {
            RawTarget::Name(_) => &[],
            RawTarget::Full { config, .. } => config,
        }
    }
}

#[derive(Deserialize, Default)]
struct RawLinkSide {
    #[serde(default)]
    config: Vec<RawConfig>,
}

/// One `subject|queue_group` entry of a messaging-nats handler link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscription {
    /// The subject (wildcards allowed).
    pub(crate) subject: String,
    /// The queue group: replicas in one group share the subject's messages.
    pub(crate) queue: Option<String>,
}

/// A `wasi:keyvalue` link to a keyvalue provider (keyvalue-nats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyValueLink {
    /// The link name: the identifier `store.open` takes.
    pub(crate) name: String,
    /// The target config (`bucket`, `cluster_uri`, `enable_bucket_auto_create`).
    pub(crate) config: BTreeMap<String, String>,
    /// Whether `atomics` is linked too.
    pub(crate) atomics: bool,
}

/// A component of the manifest and everything linked to it.
#[derive(Debug, Clone)]
pub(crate) struct ComponentSpec {
    /// The component's name (`spec.components[].name`).
    pub(crate) name: String,
    /// The `.wasm` to run.
    pub(crate) wasm: PathBuf,
    /// The image as written in the manifest.
    pub(crate) image: String,
    /// Its merged `config` properties (served by `wasi:config/store`).
    pub(crate) config: BTreeMap<String, String>,
    /// The spreadscaler's `instances` (wasmCloud's maximum concurrent instances).
    pub(crate) instances: Option<u32>,
    /// The target config of its `wasmcloud:postgres` link (`POSTGRES_*`), if linked.
    pub(crate) postgres: Option<BTreeMap<String, String>>,
    /// Whether it is linked to messaging-nats for `wasmcloud:messaging/consumer`.
    pub(crate) consumer: bool,
    /// Whether it is linked to http-client for `wasi:http/outgoing-handler`.
    pub(crate) http_client: bool,
    /// Its `wasi:keyvalue` links.
    pub(crate) keyvalue: Vec<KeyValueLink>,
    /// The `address` of its http-server link, if any.
    pub(crate) http_address: Option<String>,
    /// The subscriptions of its messaging-nats handler link.
    pub(crate) subscriptions: Vec<Subscription>,
    /// The `cluster_uris` of its messaging-nats handler link.
    pub(crate) cluster_uris: Vec<String>,
}

impl ComponentSpec {
    /// Whether messages reach it (it has a messaging handler link): a worker.
    pub(crate) fn is_worker(&self) -> bool {
        !self.subscriptions.is_empty()
    }
}

/// The application of a wadm manifest.
#[derive(Debug)]
pub(crate) struct LatticeSpec {
    /// Its components in manifest order (providers are not components).
    pub(crate) components: Vec<ComponentSpec>,
    /// Things the manifest asks for that the lattice ignores.
    pub(crate) warnings: Vec<String>,
}

/// A YAML scalar as the string wadm would pass on.
fn scalar(value: &serde_yaml::Value) -> Result<String> {
    Ok(match value {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Null => String::new(),
        other => bail!("configuration values must be scalars, not {other:?}"),
    })
}

/// Merges the properties of `configs` in order. A config given by name only refers to a
/// config stored in the lattice (`wash config put`), which the test host does not have:
/// wadm stores a config that has properties under an application-scoped name, so a bare
/// name does not reach another entry's properties either.
fn merge(configs: &[RawConfig]) -> Result<BTreeMap<String, String>> {
    let mut merged = BTreeMap::new();
    for config in configs {
        let Some(properties) = &config.properties else {
            bail!(
                "config {:?} has no properties: it would name a config stored in the lattice \
                 (wash config put), which the test host does not have",
                config.name
            );
        };
        for (key, value) in properties {
            merged.insert(
                key.clone(),
                scalar(value).with_context(|| format!("config {:?}", config.name))?,
            );
        }
    }
    Ok(merged)
}

/// The `.wasm` for a component image: `file://` images are used as they are (relative
/// paths from the manifest's folder); OCI references map to `<wasm_dir>/<name>.wasm` with
/// `-` in the component name replaced by `_` (cargo's file name).
/// Refuses what wadm 0.21.1 refuses when a manifest is put (`wash app deploy`), with its
/// messages (`crates/wadm-types/src/validation.rs` at tag v0.21.1), for the parts of a
/// manifest this project uses: duplicate component names, link targets that are not in the
/// manifest, two links of one component on the same interface under the same link name
/// (`default` when unnamed; the target does not tell them apart), and a link config name
/// defined with `properties` more than once anywhere in the manifest (a config named
/// without properties refers to one stored in the lattice and may repeat).
fn validate_like_wadm(spec: &RawSpec) -> Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for component in &spec.components {
        if !names.insert(component.name.as_str()) {
            bail!("Duplicate component name in manifest: {}", component.name);
        }
    }
    let links: Vec<(&RawComponent, RawLink)> = spec
        .components
        .iter()
        .flat_map(|component| {
            component
                .traits
                .iter()
                .filter(|t| t.kind == "link")
                .map(move |t| (component, t))
        })
        .map(|(component, t)| {
            serde_yaml::from_value(t.properties.clone())
                .map(|link| (component, link))
                .with_context(|| {
                    format!("Link trait deserialized as custom trait, ensure fields are correct (component {:?})", component.name)
                })
        })
        .collect::<Result<_>>()?;
    let missing: std::collections::BTreeSet<&str> = links
        .iter()
        .map(|(_, link)| link.target.name())
        .filter(|target| !names.contains(target))
        .collect();
    if !missing.is_empty() {
        bail!("The following capability component(s) are missing from the manifest: {missing:?}");
    }
    let mut seen_links = std::collections::BTreeSet::new();
    for (component, link) in &links {
        let name = link.name.as_deref().unwrap_or("default");
        for interface in &link.interfaces {
            let key = (
                component.name.as_str(),
                name,
                &link.namespace,
                &link.package,
                interface,
            );
            if !seen_links.insert(key) {
                bail!(
                    "Duplicate link found inside component '{}': {name} ({}:{}/{interface})",
                    component.name,
                    link.namespace,
                    link.package
                );
            }
        }
    }
    let mut config_names = std::collections::BTreeSet::new();
    for (_, link) in &links {
        for config in link.target.config().iter().chain(&link.source.config) {
            if config.properties.is_some() && !config_names.insert(config.name.as_str()) {
                bail!("Duplicate link config name found: '{}'", config.name);
            }
        }
    }
    Ok(())
}

fn wasm_for(image: &str, name: &str, manifest_dir: &Path, wasm_dir: &Path) -> PathBuf {
    match image.strip_prefix("file://") {
        Some(path) => manifest_dir.join(path),
        None => wasm_dir.join(format!("{}.wasm", name.replace('-', "_"))),
    }
}

impl LatticeSpec {
    /// Reads the manifest at `path`; OCI component images map into `wasm_dir`.
    pub(crate) fn load(path: &Path, wasm_dir: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let manifest_dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, manifest_dir, wasm_dir)
            .with_context(|| format!("invalid wadm manifest {}", path.display()))
    }

    fn parse(text: &str, manifest_dir: &Path, wasm_dir: &Path) -> Result<Self> {
        let raw: RawManifest = serde_yaml::from_str(text)?;
        if raw.kind != "Application" {
            bail!("kind is {:?}, expected \"Application\"", raw.kind);
        }
        validate_like_wadm(&raw.spec)?;
        let mut warnings = Vec::new();
        let mut components: Vec<ComponentSpec> = Vec::new();
        for raw_component in raw.spec.components.iter().filter(|c| c.kind == "component") {
            let name = raw_component.name.clone();
            let Some(image) = raw_component.properties.image.clone() else {
                bail!("component {name:?} has no image");
            };
            let mut spec = ComponentSpec {
                wasm: wasm_for(&image, &name, manifest_dir, wasm_dir),
                image,
                config: merge(&raw_component.properties.config)
                    .with_context(|| format!("component {name:?}"))?,
                instances: None,
                postgres: None,
                consumer: false,
                http_client: false,
                keyvalue: Vec::new(),
                http_address: None,
                subscriptions: Vec::new(),
                cluster_uris: Vec::new(),
                name,
            };
            for raw_trait in &raw_component.traits {
                match raw_trait.kind.as_str() {
                    "spreadscaler" | "daemonscaler" => {
                        let spread: RawSpread =
                            serde_yaml::from_value(raw_trait.properties.clone())
                                .with_context(|| format!("the scaler of {:?}", spec.name))?;
                        spec.instances = Some(spread.instances);
                    }
                    "link" => {
                        let link: RawLink = serde_yaml::from_value(raw_trait.properties.clone())?;
                        let has = |interface: &str| link.interfaces.iter().any(|i| i == interface);
                        match (link.namespace.as_str(), link.package.as_str()) {
                            ("wasmcloud", "postgres") if has("query") => {
                                spec.postgres = Some(merge(link.target.config())?);
                            }
                            ("wasmcloud", "messaging") if has("consumer") => spec.consumer = true,
                            ("wasi", "http") if has("outgoing-handler") => spec.http_client = true,
                            ("wasi", "keyvalue") if has("store") => {
                                spec.keyvalue.push(KeyValueLink {
                                    name: link.name.clone().unwrap_or_else(|| "default".to_owned()),
                                    config: merge(link.target.config())?,
                                    atomics: has("atomics"),
                                });
                            }
                            (namespace, package) => warnings.push(format!(
                                "component {:?}: link to {:?} for {namespace}:{package}/{:?} is not supported and ignored",
                                spec.name,
                                link.target.name(),
                                link.interfaces
                            )),
                        }
                    }
                    other => warnings.push(format!(
                        "component {:?}: trait {other:?} ignored",
                        spec.name
                    )),
                }
            }
            components.push(spec);
        }

        for provider in raw
            .spec
            .components
            .iter()
            .filter(|c| c.kind == "capability")
        {
            for raw_trait in &provider.traits {
                if raw_trait.kind != "link" {
                    warnings.push(format!(
                        "provider {:?}: trait {:?} ignored",
                        provider.name, raw_trait.kind
                    ));
                    continue;
                }
                let link: RawLink = serde_yaml::from_value(raw_trait.properties.clone())
                    .with_context(|| format!("a link of {:?}", provider.name))?;
                let source = merge(&link.source.config)?;
                let Some(target) = components.iter_mut().find(|c| c.name == link.target.name())
                else {
                    bail!(
                        "provider {:?} links to {:?}, which is not a component of the manifest",
                        provider.name,
                        link.target.name()
                    );
                };
                let has = |interface: &str| link.interfaces.iter().any(|i| i == interface);
                match (link.namespace.as_str(), link.package.as_str()) {
                    ("wasi", "http") if has("incoming-handler") => {
                        target.http_address = Some(
                            source
                                .get("address")
                                .cloned()
                                .unwrap_or_else(|| DEFAULT_HTTP_ADDRESS.to_owned()),
                        );
                    }
                    ("wasmcloud", "messaging") if has("handler") => {
                        target.subscriptions = source
                            .get("subscriptions")
                            .map(String::as_str)
                            .unwrap_or("")
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|entry| match entry.split_once('|') {
                                Some((subject, queue)) => Subscription {
                                    subject: subject.to_owned(),
                                    queue: Some(queue.to_owned()),
                                },
                                None => Subscription {
                                    subject: entry.to_owned(),
                                    queue: None,
                                },
                            })
                            .collect();
                        target.cluster_uris = source
                            .get("cluster_uris")
                            .map(String::as_str)
                            .unwrap_or("")
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect();
                    }
                    (namespace, package) => warnings.push(format!(
                        "provider {:?}: link to {:?} for {namespace}:{package}/{:?} is not supported and ignored",
                        provider.name, target.name, link.interfaces
                    )),
                }
            }
        }
        if components.is_empty() {
            bail!("the manifest has no components");
        }
        Ok(Self {
            components,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: t
spec:
  components:
    - name: front-end
      type: component
      properties:
        image: ghcr.io/x/front-end:0.1.0
        config:
          - name: front-config
            properties:
              backend_url: http://127.0.0.1:8081
              retries: 3
      traits:
        - type: spreadscaler
          properties:
            instances: 8
        - type: link
          properties:
            target: http-client
            namespace: wasi
            package: http
            interfaces: [outgoing-handler]
    - name: worker
      type: component
      properties:
        image: file:///abs/worker.wasm
      traits:
        - type: link
          properties:
            target:
              name: sqldb-postgres
              config:
                - name: db
                  properties:
                    POSTGRES_HOST: 127.0.0.1
                    POSTGRES_PORT: 5432
            namespace: wasmcloud
            package: postgres
            interfaces: [query]
        - type: link
          properties:
            target: nats-messaging
            namespace: wasmcloud
            package: messaging
            interfaces: [consumer]
        - type: link
          properties:
            target: blobstore-fs
            namespace: wasi
            package: blobstore
            interfaces: [blobstore]
    - name: other
      type: component
      properties:
        image: other.wasm
      traits:
        - type: link
          properties:
            target:
              name: sqldb-postgres
              config:
                - name: db-other
                  properties:
                    POSTGRES_HOST: 127.0.0.1
                    POSTGRES_PORT: "5432"
            namespace: wasmcloud
            package: postgres
            interfaces: [query]
        - type: link
          properties:
            name: counters
            target:
              name: keyvalue-nats
              config:
                - name: kv
                  properties:
                    bucket: b1
            namespace: wasi
            package: keyvalue
            interfaces: [store, atomics]
    - name: http-server
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-server:0.27.0
      traits:
        - type: link
          properties:
            target: front-end
            namespace: wasi
            package: http
            interfaces: [incoming-handler]
            source:
              config:
                - name: fe-http
                  properties:
                    address: 0.0.0.0:8000
    - name: nats
      type: capability
      properties:
        image: ghcr.io/wasmcloud/messaging-nats:0.27.0
      traits:
        - type: link
          properties:
            target: worker
            namespace: wasmcloud
            package: messaging
            interfaces: [handler]
            source:
              config:
                - name: sub
                  properties:
                    subscriptions: "a.b|group, c.d"
                    cluster_uris: nats://127.0.0.1:4222
    - name: http-client
      type: capability
      properties:
        image: ghcr.io/wasmcloud/http-client:0.13.0
    - name: sqldb-postgres
      type: capability
      properties:
        image: ghcr.io/wasmcloud/sqldb-postgres:0.10.0
    - name: nats-messaging
      type: capability
      properties:
        image: ghcr.io/wasmcloud/messaging-nats:0.27.0
    - name: keyvalue-nats
      type: capability
      properties:
        image: ghcr.io/wasmcloud/keyvalue-nats:0.3.1
    - name: blobstore-fs
      type: capability
      properties:
        image: ghcr.io/wasmcloud/blobstore-fs:0.10.0
"#;

    #[test]
    fn reads_components_links_and_configs() {
        let spec = LatticeSpec::parse(MANIFEST, Path::new("/m"), Path::new("/wasm")).unwrap();
        let [front, worker, other] = &spec.components[..] else {
            panic!("{spec:?}");
        };
        assert_eq!(front.wasm, PathBuf::from("/wasm/front_end.wasm"));
        assert_eq!(front.config["backend_url"], "http://127.0.0.1:8081");
        assert_eq!(front.config["retries"], "3");
        assert_eq!(front.instances, Some(8));
        assert!(front.http_client && !front.consumer && front.postgres.is_none());
        assert_eq!(front.http_address.as_deref(), Some("0.0.0.0:8000"));
        assert!(!front.is_worker());

        assert_eq!(worker.wasm, PathBuf::from("/abs/worker.wasm"));
        assert!(worker.consumer && !worker.http_client);
        assert_eq!(worker.postgres.as_ref().unwrap()["POSTGRES_PORT"], "5432");
        assert_eq!(
            worker.subscriptions,
            [
                Subscription {
                    subject: "a.b".into(),
                    queue: Some("group".into())
                },
                Subscription {
                    subject: "c.d".into(),
                    queue: None
                }
            ]
        );
        assert_eq!(worker.cluster_uris, ["nats://127.0.0.1:4222"]);
        assert!(worker.is_worker());

        assert_eq!(other.postgres, worker.postgres);
        assert_eq!(
            other.keyvalue,
            [KeyValueLink {
                name: "counters".into(),
                config: [("bucket".to_owned(), "b1".to_owned())].into(),
                atomics: true
            }]
        );
        assert_eq!(other.wasm, PathBuf::from("/wasm/other.wasm"));
        assert_eq!(spec.warnings.len(), 1, "{:?}", spec.warnings);
    }

    #[test]
    fn rejects_broken_manifests() {
        let dir = Path::new("/");
        assert!(LatticeSpec::parse("kind: Other\nspec: {}", dir, dir).is_err());
        assert!(LatticeSpec::parse("kind: Application\nspec: {}", dir, dir).is_err());
        // A config by name only would come from the lattice's config store.
        let bare = MANIFEST.replace(
            "- name: kv\n                  properties:\n                    bucket: b1",
            "- name: kv",
        );
        assert_ne!(bare, MANIFEST);
        assert!(LatticeSpec::parse(&bare, dir, dir).is_err());
    }

    #[test]
    fn the_repository_manifest_passes_what_wadm_checks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        LatticeSpec::load(&root.join("wadm.yaml"), &root.join("target")).unwrap();
    }

    /// The error `manifest` is refused with.
    fn refusal(manifest: &str) -> String {
        let dir = Path::new("/");
        match LatticeSpec::parse(manifest, dir, dir) {
            Ok(_) => panic!("accepted: {manifest}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn refuses_what_wadm_refuses() {
        // Two links of one source on one interface, both unnamed: "default" twice, even
        // with different targets.
        let handler_link = "        - type: link\n          properties:\n            target: worker\n            namespace: wasmcloud\n            package: messaging\n            interfaces: [handler]\n";
        assert!(MANIFEST.contains(handler_link));
        let twice = MANIFEST.replace(
            handler_link,
            &format!(
                "{}{handler_link}",
                handler_link.replace("target: worker", "target: other")
            ),
        );
        assert_eq!(
            refusal(&twice),
            "Duplicate link found inside component 'nats': default (wasmcloud:messaging/handler)"
        );
        // Named apart, they are two links.
        let named = twice.replacen(
            "target: other\n",
            "target: other\n            name: to-other\n",
            1,
        );
        let dir = Path::new("/");
        LatticeSpec::parse(&named, dir, dir).unwrap();

        assert_eq!(
            refusal(&MANIFEST.replace("name: db-other", "name: db")),
            "Duplicate link config name found: 'db'"
        );
        assert_eq!(
            refusal(&MANIFEST.replace("target: blobstore-fs", "target: blobstore-s3")),
            "The following capability component(s) are missing from the manifest: {\"blobstore-s3\"}"
        );
        assert_eq!(
            refusal(&MANIFEST.replace("- name: other\n", "- name: worker\n")),
            "Duplicate component name in manifest: worker"
        );
    }
}
