//! The HTTP trigger's router, following Spin's rules: a route is an exact path
//! (`/orders`), may contain named segments (`/orders/:id`), and may end in a trailing
//! wildcard (`/orders/...`). Exact routes beat wildcards, longer wildcard prefixes beat
//! shorter ones, and literal segments beat named ones. When two triggers declare the
//! same route the later one wins (Spin warns and does the same).

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Named(String),
}

/// One public route.
#[derive(Debug, Clone)]
struct Route {
    component: String,
    /// The route as written in the manifest.
    raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

/// The result of routing a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteMatch {
    /// The component that handles the request.
    pub(crate) component: String,
    /// The matched route as written in the manifest (`spin-raw-component-route`).
    pub(crate) raw_route: String,
    /// The part of the path matched by a trailing wildcard (`spin-path-info`).
    pub(crate) path_info: String,
    /// Values of named segments (`spin-path-match-<name>`).
    pub(crate) captures: Vec<(String, String)>,
}

impl RouteMatch {
    /// The match Spin synthesises for a service-chaining request: the whole path is
    /// the path info of an implicit `/...` route.
    pub(crate) fn synthetic(component: &str, path: &str) -> Self {
        Self {
            component: component.to_owned(),
            raw_route: "/...".to_owned(),
            path_info: path.to_owned(),
            captures: Vec::new(),
        }
    }

    /// The route without its trailing wildcard (`spin-component-route`).
    pub(crate) fn route_or_prefix(&self) -> &str {
        self.raw_route
            .strip_suffix("/...")
            .unwrap_or(&self.raw_route)
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl Route {
    fn parse(component: &str, raw: &str) -> Result<Self> {
        let absolute = if raw.starts_with('/') {
            raw.to_owned()
        } else {
            format!("/{raw}")
        };
        let (prefix, wildcard) = match absolute
            .strip_suffix("/...")
            .or_else(|| absolute.strip_suffix("/*"))
        {
            Some(prefix) => (prefix, true),
            None => (absolute.as_str(), false),
        };
        let mut segments = Vec::new();
        for segment in split(prefix) {
            if segment == "..." || segment.contains('*') {
                bail!("route {raw:?} of component {component:?}: wildcards may only end a route");
            }
            segments.push(match segment.strip_prefix(':') {
                Some("") => {
                    bail!("route {raw:?} of component {component:?} has an unnamed ':' segment")
                }
                Some(name) => Segment::Named(name.to_owned()),
                None => Segment::Literal(segment.to_owned()),
            });
        }
        Ok(Self {
            component: component.to_owned(),
            raw: raw.to_owned(),
            segments,
            wildcard,
        })
    }

    /// Ranking among matching routes: exact beats wildcard, then more segments
    /// (longer prefix), then more literal segments.
    fn rank(&self) -> (bool, usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (!self.wildcard, self.segments.len(), literals)
    }

    fn matches(&self, path: &str) -> Option<RouteMatch> {
        let parts: Vec<&str> = split(path).collect();
        if parts.len() < self.segments.len()
            || (!self.wildcard && parts.len() != self.segments.len())
        {
            return None;
        }
        let mut captures = Vec::new();
        for (segment, part) in self.segments.iter().zip(&parts) {
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Named(name) => captures.push((name.clone(), (*part).to_owned())),
            }
        }
        let path_info = if self.wildcard {
            let rest = parts[self.segments.len()..].join("/");
            match (rest.is_empty(), path.ends_with('/')) {
                (true, false) => String::new(),
                (true, true) => "/".to_owned(),
                (false, false) => format!("/{rest}"),
                (false, true) => format!("/{rest}/"),
            }
        } else {
            String::new()
        };
        Some(RouteMatch {
            component: self.component.clone(),
            raw_route: self.raw.clone(),
            path_info,
            captures,
        })
    }
}

/// The application's public routes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the router from `(component, route)` pairs in manifest order. Returns
    /// the router and warnings about routes that later triggers replaced.
    pub(crate) fn build<'a>(
        routes: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(Self, Vec<String>)> {
        let mut parsed: Vec<Route> = Vec::new();
        let mut warnings = Vec::new();
        for (component, raw) in routes {
            let route = Route::parse(component, raw)?;
            if let Some(existing) = parsed
                .iter_mut()
                .find(|r| r.segments == route.segments && r.wildcard == route.wildcard)
            {
                warnings.push(format!(
                    "route {raw:?} of component {component:?} replaces the same route of component {:?}",
                    existing.component
                ));
                *existing = route;
            } else {
                parsed.push(route);
            }
        }
        Ok((Self { routes: parsed }, warnings))
    }

    /// Finds the most specific route for `path` (no query string).
    pub(crate) fn route(&self, path: &str) -> Option<RouteMatch> {
        self.routes
            .iter()
            .filter_map(|route| route.matches(path).map(|m| (route.rank(), m)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router {
        Router::build(routes.iter().copied()).unwrap().0
    }

    fn component(router: &Router, path: &str) -> Option<String> {
        router.route(path).map(|m| m.component)
    }

    #[test]
    fn exact_beats_wildcard_and_longest_prefix_wins() {
        let r = router(&[
            ("all", "/..."),
            ("one", "/one"),
            ("one-wild", "/one/..."),
            ("one-two-wild", "/one/two/..."),
        ]);
        assert_eq!(component(&r, "/one").as_deref(), Some("one"));
        assert_eq!(component(&r, "/one/x").as_deref(), Some("one-wild"));
        assert_eq!(
            component(&r, "/one/two/three").as_deref(),
            Some("one-two-wild")
        );
        assert_eq!(component(&r, "/").as_deref(), Some("all"));
        assert_eq!(component(&r, "/other").as_deref(), Some("all"));
    }

    #[test]
    fn unmatched_paths_and_exact_routes() {
        let r = router(&[("a", "/api/orders"), ("root", "/")]);
        assert_eq!(component(&r, "/api/orders").as_deref(), Some("a"));
        assert_eq!(component(&r, "/api/orders/").as_deref(), Some("a"));
        assert_eq!(component(&r, "/api/orders/1"), None);
        assert_eq!(component(&r, "/").as_deref(), Some("root"));
        assert_eq!(component(&r, "/x"), None);
    }

    #[test]
    fn path_info_and_captures() {
        let r = router(&[("w", "/api/..."), ("p", "/users/:id")]);
        let m = r.route("/api/orders/1").unwrap();
        assert_eq!(m.path_info, "/orders/1");
        assert_eq!(m.route_or_prefix(), "/api");
        assert_eq!(r.route("/api").unwrap().path_info, "");
        assert_eq!(r.route("/api/").unwrap().path_info, "/");
        let m = r.route("/users/42").unwrap();
        assert_eq!(m.component, "p");
        assert_eq!(m.captures, vec![("id".to_string(), "42".to_string())]);
    }

    #[test]
    fn literal_beats_named_and_duplicates_are_replaced() {
        let (r, warnings) =
            Router::build([("named", "/u/:id"), ("me", "/u/me"), ("me2", "/u/me")]).unwrap();
        assert_eq!(component(&r, "/u/me").as_deref(), Some("me2"));
        assert_eq!(component(&r, "/u/5").as_deref(), Some("named"));
        assert_eq!(warnings.len(), 1);
        assert!(Router::build([("x", "/a/.../b")]).is_err());
    }
}
