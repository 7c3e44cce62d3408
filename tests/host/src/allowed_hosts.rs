//! `allowed_outbound_hosts` entries, matched the way Spin matches them:
//! `<scheme>://<host>[:<port>]`, with `*` for any scheme, host or port, `*.domain` for
//! any subdomain, `a..b` port ranges, default ports for well-known schemes, and
//! `self` (or `self.alt`) for requests back to the application itself.
//!
//! As in Spin, a `*.spin.internal` host is local service chaining: it needs an entry
//! that matches it (`http://orders.spin.internal`, `http://*.spin.internal`, or a
//! catch-all `*://*:*`); `self` does not grant it.

use anyhow::{Context, Result, bail};
use std::ops::Range;

/// The domain under which components of the application address each other.
pub(crate) const SERVICE_CHAINING_SUFFIX: &str = ".spin.internal";

/// The target component of a local service chaining host (`orders.spin.internal`
/// or `orders.spin.internal:80` -> `orders`).
pub(crate) fn service_chaining_target(host: &str) -> Option<&str> {
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let (first, rest) = host.split_once('.')?;
    (rest == &SERVICE_CHAINING_SUFFIX[1..] && !first.is_empty()).then_some(first)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemeRule {
    Any,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    Any,
    /// Holds the suffix including its leading dot.
    AnySubdomain(String),
    ToSelf,
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortRule {
    Any,
    Exact(u16),
    Range(Range<u16>),
}

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    scheme: SchemeRule,
    host: HostRule,
    port: PortRule,
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "redis" => Some(6379),
        "mqtt" => Some(1883),
        _ => None,
    }
}

impl AllowedHost {
    fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!(
                "{entry:?} is not an allowed outbound host: it must look like \
                 <scheme>://<host>[:<port>] (use '*://*:*' to allow everything)"
            );
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            bail!("{entry:?} has a path or CIDR range, which the test host does not support");
        }
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));

        let scheme_rule = if scheme == "*" {
            SchemeRule::Any
        } else if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic()) {
            SchemeRule::Exact(scheme.to_owned())
        } else {
            bail!("{entry:?} has an invalid scheme {scheme:?}");
        };

        let host = host.trim();
        let host_rule = if host == "*" {
            HostRule::Any
        } else if host == "self" || host == "self.alt" {
            HostRule::ToSelf
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                bail!("{entry:?}: wildcards are only allowed as a leading '*.'");
            }
            HostRule::AnySubdomain(format!(".{domain}"))
        } else if host.is_empty() || host.contains('*') {
            bail!("{entry:?} has an invalid host {host:?}");
        } else {
            HostRule::Exact(host.to_ascii_lowercase())
        };

        let port_rule = if port.is_empty() {
            let default = well_known_port(scheme).with_context(|| {
                format!("{entry:?} has no port and scheme {scheme:?} has no default port")
            })?;
            PortRule::Exact(default)
        } else if port == "*" {
            PortRule::Any
        } else if let Some((start, end)) = port.split_once("..") {
            let start = start
                .parse()
                .with_context(|| format!("{entry:?}: bad port range"))?;
            let end = end
                .parse()
                .with_context(|| format!("{entry:?}: bad port range"))?;
            PortRule::Range(start..end)
        } else {
            PortRule::Exact(
                port.parse()
                    .with_context(|| format!("{entry:?}: port {port:?} is not a number"))?,
            )
        };

        Ok(Self {
            scheme: scheme_rule,
            host: host_rule,
            port: port_rule,
        })
    }

    fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let scheme_ok = match &self.scheme {
            SchemeRule::Any => true,
            SchemeRule::Exact(s) => s == scheme,
        };
        let host_ok = match &self.host {
            HostRule::Any => true,
            HostRule::AnySubdomain(suffix) => host.ends_with(suffix.as_str()),
            HostRule::ToSelf => false,
            HostRule::Exact(h) => h == host,
        };
        let port_ok = match (&self.port, port.or_else(|| well_known_port(scheme))) {
            (PortRule::Any, _) => true,
            (_, None) => false,
            (PortRule::Exact(p), Some(port)) => *p == port,
            (PortRule::Range(range), Some(port)) => range.contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }

    fn allows_self(&self) -> bool {
        let scheme_ok = match &self.scheme {
            SchemeRule::Any => true,
            SchemeRule::Exact(s) => s == "http" || s == "https",
        };
        scheme_ok && matches!(self.host, HostRule::Any | HostRule::ToSelf)
    }
}

/// A component's parsed `allowed_outbound_hosts`.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedHosts {
    entries: Vec<AllowedHost>,
}

impl AllowedHosts {
    /// Parses already template-rendered entries.
    pub(crate) fn parse(entries: &[String]) -> Result<Self> {
        if entries.len() == 1 && entries[0] == "insecure:allow-all" {
            bail!(
                "'insecure:allow-all' is not allowed: use '*://*:*' to allow all outbound traffic"
            );
        }
        let entries = entries
            .iter()
            .map(|entry| AllowedHost::parse(entry))
            .collect::<Result<_>>()?;
        Ok(Self { entries })
    }

    /// Whether a request to `scheme://host[:port]` is allowed.
    pub(crate) fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.entries
            .iter()
            .any(|entry| entry.allows(scheme, &host, port))
    }

    /// Whether requests back to the application itself (`http://self.alt/...`) are
    /// allowed.
    pub(crate) fn allows_self(&self) -> bool {
        self.entries.iter().any(AllowedHost::allows_self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn service_chaining_targets() {
        assert_eq!(
            service_chaining_target("orders.spin.internal"),
            Some("orders")
        );
        assert_eq!(
            service_chaining_target("orders.spin.internal:80"),
            Some("orders")
        );
        assert_eq!(service_chaining_target("a.b.spin.internal"), None);
        assert_eq!(service_chaining_target("example.com"), None);
        assert_eq!(service_chaining_target("spin.internal"), None);
    }

    #[test]
    fn exact_and_wildcard_chaining() {
        let exact = hosts(&["http://orders.spin.internal"]);
        assert!(exact.allows("http", "orders.spin.internal", None));
        assert!(exact.allows("http", "orders.spin.internal", Some(80)));
        assert!(!exact.allows("http", "orders.spin.internal", Some(8080)));
        assert!(!exact.allows("https", "orders.spin.internal", None));
        assert!(!exact.allows("http", "stock.spin.internal", None));

        let wildcard = hosts(&["http://*.spin.internal"]);
        assert!(wildcard.allows("http", "stock.spin.internal", None));
        assert!(!wildcard.allows("http", "example.com", None));
    }

    #[test]
    fn self_does_not_grant_chaining() {
        let only_self = hosts(&["http://self"]);
        assert!(only_self.allows_self());
        assert!(!only_self.allows("http", "orders.spin.internal", None));
    }

    #[test]
    fn ports_and_schemes() {
        let any = hosts(&["*://*:*"]);
        assert!(any.allows("https", "example.com", None));
        assert!(any.allows_self());
        let range = hosts(&["http://localhost:3000..3010"]);
        assert!(range.allows("http", "localhost", Some(3005)));
        assert!(!range.allows("http", "localhost", Some(3010)));
        assert!(AllowedHosts::parse(&["example.com".to_string()]).is_err());
        assert!(AllowedHosts::parse(&["foo://example.com".to_string()]).is_err());
        assert!(AllowedHosts::parse(&["insecure:allow-all".to_string()]).is_err());
    }
}
