//! Spin application variables: name rules, `{{ name }}` templates and the order in
//! which values are looked up (explicit overrides, then `SPIN_VARIABLE_<NAME>` from
//! the environment, then the manifest default).

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};

/// The prefix of Spin's environment-variable provider.
const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// Whether `name` is a valid Spin variable name: lower-case ASCII letters, digits and
/// single underscores, starting with a letter (`snake_case`).
pub(crate) fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_lowercase()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
        && !name.contains("__")
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

/// A parsed Spin template such as `"https://{{ api_host }}/v1"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; `{{` must be closed by `}}` around a valid variable name.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                bail!("unterminated '{{{{' in template {text:?}");
            };
            let name = after[..end].trim();
            if !is_valid_name(name) {
                bail!("invalid variable reference {name:?} in template {text:?}");
            }
            parts.push(Part::Variable(name.to_owned()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Substitutes resolved application variables; a reference to an unknown
    /// variable is an error.
    pub(crate) fn render(&self, values: &BTreeMap<String, String>) -> Result<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Variable(name) => match values.get(name) {
                    Some(value) => out.push_str(value),
                    None => bail!("template refers to undefined application variable {name:?}"),
                },
            }
        }
        Ok(out)
    }
}

/// How an application variable is declared in `[variables]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Declaration {
    /// `{ default = "..." }`
    Default(String),
    /// `{ required = true }` (possibly `secret = true`)
    Required,
}

/// Resolves every declared application variable. `overrides` win over the
/// `SPIN_VARIABLE_<NAME>` environment variables (read through `env`), which win over
/// defaults; a required variable with no value is an error.
pub(crate) fn resolve_application_variables(
    declared: &BTreeMap<String, Declaration>,
    overrides: &HashMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>> {
    let mut resolved = BTreeMap::new();
    for (name, declaration) in declared {
        let env_name = format!("{ENV_PREFIX}{}", name.to_ascii_uppercase());
        let value = match (overrides.get(name), env(&env_name), declaration) {
            (Some(value), _, _) => value.clone(),
            (None, Some(value), _) => value,
            (None, None, Declaration::Default(value)) => value.clone(),
            (None, None, Declaration::Required) => bail!(
                "required application variable {name:?} has no value \
                 (set it with a variable override or the {env_name} environment variable)"
            ),
        };
        resolved.insert(name.clone(), value);
    }
    Ok(resolved)
}

/// Renders a component's `[component.ID.variables]` templates.
pub(crate) fn resolve_component_variables(
    component: &str,
    templates: &BTreeMap<String, String>,
    app_values: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    templates
        .iter()
        .map(|(key, text)| {
            if !is_valid_name(key) {
                bail!("component {component:?} has an invalid variable name {key:?}");
            }
            let value = Template::parse(text)
                .and_then(|template| template.render(app_values))
                .with_context(|| format!("component {component:?} variable {key:?}"))?;
            Ok((key.clone(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_follow_spin_rules() {
        assert!(is_valid_name("api_key"));
        assert!(is_valid_name("a1"));
        assert!(!is_valid_name("API_KEY"));
        assert!(!is_valid_name("1a"));
        assert!(!is_valid_name("a__b"));
        assert!(!is_valid_name("a_"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("a-b"));
    }

    #[test]
    fn templates_render() {
        let template = Template::parse("http://{{ host }}:{{port}}/x").unwrap();
        let rendered = template
            .render(&values(&[("host", "h"), ("port", "80")]))
            .unwrap();
        assert_eq!(rendered, "http://h:80/x");
        assert_eq!(
            Template::parse("plain }} text")
                .unwrap()
                .render(&values(&[]))
                .unwrap(),
            "plain }} text"
        );
        assert!(Template::parse("{{ open").is_err());
        assert!(Template::parse("{{ Bad }}").is_err());
        assert!(
            Template::parse("{{ missing }}")
                .unwrap()
                .render(&values(&[]))
                .is_err()
        );
    }

    #[test]
    fn precedence_is_override_env_default() {
        let declared: BTreeMap<String, Declaration> = [
            ("a".to_string(), Declaration::Default("da".into())),
            ("b".to_string(), Declaration::Default("db".into())),
            ("c".to_string(), Declaration::Required),
        ]
        .into();
        let overrides: HashMap<String, String> = [("a".to_string(), "oa".to_string())].into();
        let env = |name: &str| match name {
            "SPIN_VARIABLE_A" => Some("ea".to_string()),
            "SPIN_VARIABLE_B" => Some("eb".to_string()),
            "SPIN_VARIABLE_C" => Some("ec".to_string()),
            _ => None,
        };
        let resolved = resolve_application_variables(&declared, &overrides, env).unwrap();
        assert_eq!(resolved, values(&[("a", "oa"), ("b", "eb"), ("c", "ec")]));

        let err = resolve_application_variables(&declared, &HashMap::new(), |_| None);
        assert!(err.is_err());
    }
}
