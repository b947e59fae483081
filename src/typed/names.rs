//! Parameter names ↔ typed property names.
//!
//! The rule: a parameter name in KUDO's usual `UPPER_SNAKE_CASE` (segments of an upper-case
//! letter followed by upper-case letters or digits, joined by single underscores) becomes
//! lowerCamelCase (`NODE_COUNT` → `nodeCount`, `ZK2_PORT` → `zk2Port`), and
//! [`parameter_name`] turns it back (`nodeCount` → `NODE_COUNT`). Every other name
//! (`replicas`, `gossip_port`, `ZK_2_PORT`) is used verbatim, which round-trips trivially;
//! the table built by [`PropertyMap::new`] is what maps back, so both kinds coexist.
//! Two parameters that end up with the same property name (`NODE_COUNT` and `nodeCount`), or
//! a parameter that would take a property kudo reserves (`version`, `placement`), are refused
//! with an error naming both.

use std::collections::BTreeMap;

use super::TypedError;

/// Properties of `spec` that are not parameters: `version` chooses the OperatorVersion,
/// `placement` is the Git control plane's (clusters and rollout).
pub const RESERVED: &[&str] = &["version", super::RESERVED_PLACEMENT];

fn is_upper_snake(name: &str) -> bool {
    !name.is_empty()
        && name.split('_').all(|seg| {
            let mut chars = seg.chars();
            chars.next().is_some_and(|c| c.is_ascii_uppercase())
                && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        })
}

/// The property name of a parameter (see the module docs for the rule).
pub fn property_name(parameter: &str) -> String {
    if !is_upper_snake(parameter) {
        return parameter.to_string();
    }
    let mut out = String::with_capacity(parameter.len());
    for (i, seg) in parameter.split('_').enumerate() {
        let lower = seg.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
        }
    }
    out
}

/// The inverse of [`property_name`] for camelCase properties made from `UPPER_SNAKE_CASE`
/// names; `None` for a property that is not of that form (a verbatim name).
pub fn parameter_name(property: &str) -> Option<String> {
    let mut chars = property.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_lowercase()) {
        return None;
    }
    if !property.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let mut out = String::with_capacity(property.len() + 4);
    for c in property.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    // Only a name that converts back to this exact property was made by the camel rule.
    (is_upper_snake(&out) && property_name(&out) == property).then_some(out)
}

/// The bijection between one OperatorVersion's parameters and `spec` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertyMap {
    to_property: BTreeMap<String, String>,
    to_parameter: BTreeMap<String, String>,
}

impl PropertyMap {
    /// Builds the table for `parameters` of `what` (named in errors), refusing collisions.
    pub fn new<'a>(
        what: &str,
        parameters: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, TypedError> {
        let mut map = PropertyMap::default();
        for parameter in parameters {
            let property = property_name(parameter);
            if RESERVED.contains(&property.as_str()) {
                return Err(TypedError::ReservedProperty {
                    what: what.to_string(),
                    parameter: parameter.to_string(),
                    property,
                });
            }
            if let Some(other) = map.to_parameter.get(&property) {
                return Err(TypedError::PropertyCollision {
                    what: what.to_string(),
                    first: other.clone(),
                    second: parameter.to_string(),
                    property,
                });
            }
            map.to_parameter
                .insert(property.clone(), parameter.to_string());
            map.to_property.insert(parameter.to_string(), property);
        }
        Ok(map)
    }

    pub fn property(&self, parameter: &str) -> Option<&str> {
        self.to_property.get(parameter).map(String::as_str)
    }

    pub fn parameter(&self, property: &str) -> Option<&str> {
        self.to_parameter.get(property).map(String::as_str)
    }

    /// Property names, sorted.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.to_parameter.keys().map(String::as_str)
    }
}

/// The default kind of a framework without a `crd:` block: its name in PascalCase
/// (`zookeeper` → `Zookeeper`, `kafka-connect` → `KafkaConnect`, `first_operator` →
/// `FirstOperator`).
pub fn default_kind(operator: &str) -> String {
    operator
        .split(['-', '_', '.'])
        .filter(|s| !s.is_empty())
        .map(|seg| {
            let mut chars = seg.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_snake_names_become_camel_case_and_back() {
        for (param, prop) in [
            ("NODE_COUNT", "nodeCount"),
            ("ZK2_PORT", "zk2Port"),
            ("REPLICAS", "replicas"),
            ("A_B_C", "aBC"),
            ("CLIENT_PORT_V2", "clientPortV2"),
        ] {
            assert_eq!(property_name(param), prop, "{param}");
            assert_eq!(parameter_name(prop).as_deref(), Some(param), "{prop}");
        }
    }

    #[test]
    fn other_names_are_used_verbatim() {
        for name in [
            "replicas",
            "gossip_port",
            "ZK_2_PORT",
            "_X",
            "X__Y",
            "mixed_Case",
        ] {
            assert_eq!(property_name(name), name);
        }
        // A verbatim lower-case property is not mistaken for a camel one.
        assert_eq!(parameter_name("gossip_port"), None);
        // `replicas` reads back as REPLICAS; the table tells which one a package has.
        let map = PropertyMap::new("t", ["replicas"]).expect("map");
        assert_eq!(map.parameter("replicas"), Some("replicas"));
    }

    #[test]
    fn collisions_name_both_parameters() {
        let err = PropertyMap::new("framework zk 1.0.0", ["NODE_COUNT", "nodeCount"])
            .expect_err("collision");
        let msg = err.to_string();
        assert!(
            msg.contains("NODE_COUNT") && msg.contains("nodeCount"),
            "{msg}"
        );
        assert!(msg.contains("framework zk 1.0.0"), "{msg}");
        let err = PropertyMap::new("zk", ["REPLICAS", "replicas"]).expect_err("collision");
        assert!(err.to_string().contains("REPLICAS"), "{err}");
    }

    #[test]
    fn reserved_properties_are_refused() {
        let err = PropertyMap::new("zk", ["VERSION"]).expect_err("reserved");
        let msg = err.to_string();
        assert!(
            msg.contains("VERSION") && msg.contains("spec.version"),
            "{msg}"
        );
    }

    #[test]
    fn default_kinds() {
        assert_eq!(default_kind("zookeeper"), "Zookeeper");
        assert_eq!(default_kind("kafka-connect"), "KafkaConnect");
        assert_eq!(default_kind("first_operator"), "FirstOperator");
    }
}
