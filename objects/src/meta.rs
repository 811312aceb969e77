//! Object metadata and the small types every kind shares: [`Time`],
//! [`ObjectMeta`], [`OwnerReference`], [`LabelSelector`], [`IntOrString`]
//! and a generic [`Condition`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `skip_serializing_if` helper: whether a value equals its type's default
/// (empty string, empty list or map, `None`, 0, false).
pub fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Declares a struct whose fields are all `#[serde(default)]`, camelCase and
/// skipped when empty: the shape of every Kubernetes object part.
macro_rules! object {
    (
        $(#[$sattr:meta])*
        pub struct $name:ident {
            $( $(#[$fattr:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$sattr])*
        #[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, rename_all = "camelCase")]
        pub struct $name {
            $(
                $(#[$fattr])*
                #[serde(skip_serializing_if = "crate::meta::is_default")]
                pub $field: $ty,
            )*
        }
    };
}
pub(crate) use object;

/// Implements [`crate::Resource`] for a kind.
macro_rules! resource {
    ($ty:ty, $info:path) => {
        impl $crate::Resource for $ty {
            fn info() -> &'static $crate::ResourceInfo {
                &$info
            }
            fn meta(&self) -> &$crate::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut $crate::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use resource;

/// A point in time, serialized as RFC 3339 with seconds precision in UTC:
/// `"2026-11-26T18:45:45Z"`. Reading accepts any RFC 3339 time (fractions
/// and offsets included) and drops the fraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub DateTime<Utc>);

impl Time {
    /// The current time, truncated to whole seconds (what survives a round
    /// trip through JSON).
    pub fn now() -> Time {
        Time(Utc::now().trunc_subsecs(0))
    }

    /// Parses an RFC 3339 time.
    pub fn parse(s: &str) -> Option<Time> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Time(t.with_timezone(&Utc).trunc_subsecs(0)))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%SZ"))
    }
}

impl From<DateTime<Utc>> for Time {
    fn from(t: DateTime<Utc>) -> Self {
        Time(t)
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl Visitor<'_> for TimeVisitor {
            type Value = Time;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Time, E> {
                Time::parse(s).ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
            }
        }
        deserializer.deserialize_str(TimeVisitor)
    }
}

object! {
    /// Metadata every object carries: name, namespace, identity, version,
    /// labels and ownership.
    pub struct ObjectMeta {
        /// Unique within the namespace (or the cluster for cluster-scoped kinds).
        pub name: String,
        /// Prefix from which the server generates a unique name when `name` is empty.
        pub generate_name: String,
        /// Namespace of a namespaced object.
        pub namespace: String,
        /// Unique id set by the server on creation.
        pub uid: String,
        /// Opaque version set by the server on every write.
        pub resource_version: String,
        /// Sequence number of a change to the desired state (spec).
        pub generation: i64,
        /// Set by the server on creation.
        pub creation_timestamp: Option<Time>,
        /// Set by the server when deletion was requested.
        pub deletion_timestamp: Option<Time>,
        /// Grace period of a requested deletion.
        pub deletion_grace_period_seconds: Option<i64>,
        /// Identifying labels, matched by selectors.
        pub labels: BTreeMap<String, String>,
        /// Non-identifying data.
        pub annotations: BTreeMap<String, String>,
        /// Objects this one depends on (for garbage collection).
        pub owner_references: Vec<OwnerReference>,
        /// Must be emptied before the object is removed.
        pub finalizers: Vec<String>,
    }
}

object! {
    /// A reference to an owning object.
    pub struct OwnerReference {
        /// apiVersion of the owner.
        pub api_version: String,
        /// Kind of the owner.
        pub kind: String,
        /// Name of the owner.
        pub name: String,
        /// uid of the owner.
        pub uid: String,
        /// Whether the owner is the managing controller.
        pub controller: Option<bool>,
        /// Whether the owner's foreground deletion waits for this object.
        pub block_owner_deletion: Option<bool>,
    }
}

object! {
    /// A label query: `matchLabels` and `matchExpressions`, all ANDed.
    /// See [`crate::selector::Selector::from_label_selector`].
    pub struct LabelSelector {
        /// key = value requirements.
        pub match_labels: BTreeMap<String, String>,
        /// Set-based requirements.
        pub match_expressions: Vec<LabelSelectorRequirement>,
    }
}

object! {
    /// One set-based requirement of a [`LabelSelector`].
    pub struct LabelSelectorRequirement {
        /// Label key.
        pub key: String,
        /// In, NotIn, Exists or DoesNotExist.
        pub operator: String,
        /// Values for In and NotIn; empty for Exists and DoesNotExist.
        pub values: Vec<String>,
    }
}

object! {
    /// A status condition (type, status, reason) as most kinds report them.
    pub struct Condition {
        /// Condition type, e.g. "Available".
        #[serde(rename = "type")]
        pub type_: String,
        /// "True", "False" or "Unknown".
        pub status: String,
        /// Last time the status changed.
        pub last_transition_time: Option<Time>,
        /// Machine-readable reason.
        pub reason: String,
        /// Human-readable message.
        pub message: String,
    }
}

/// A value that is either an integer or a string (a port number or name, a
/// count or a percentage).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IntOrString {
    /// An integer.
    Int(i32),
    /// A string.
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl From<i32> for IntOrString {
    fn from(i: i32) -> Self {
        IntOrString::Int(i)
    }
}

impl From<&str> for IntOrString {
    fn from(s: &str) -> Self {
        IntOrString::String(s.to_string())
    }
}

impl IntOrString {
    /// The value scaled against `total`: an int as is, "25%" as
    /// `total * 25 / 100` rounded up (`round_up`) or down. `None` for a
    /// string that is not a percentage.
    pub fn scaled_value(&self, total: i32, round_up: bool) -> Option<i32> {
        match self {
            IntOrString::Int(i) => Some(*i),
            IntOrString::String(s) => {
                let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
                let prod = pct * i64::from(total);
                let v = if round_up {
                    (prod + 99).div_euclid(100)
                } else {
                    prod.div_euclid(100)
                };
                i32::try_from(v).ok()
            }
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            IntOrString::Int(i) => serializer.serialize_i32(*i),
            IntOrString::String(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an int32 or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn time_is_rfc3339_seconds() {
        let t = Time::parse("2026-11-26T18:45:45.123+01:00").unwrap();
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            json!("2026-11-26T17:45:45Z")
        );
        let back: Time = serde_json::from_value(json!("2026-11-26T17:45:45Z")).unwrap();
        assert_eq!(back, t);
        let now = Time::now();
        let rt: Time = serde_json::from_value(serde_json::to_value(now).unwrap()).unwrap();
        assert_eq!(rt, now);
        assert!(serde_json::from_value::<Time>(json!("yesterday")).is_err());
    }

    #[test]
    fn object_meta_skips_empty_fields() {
        let m = ObjectMeta {
            name: "web".into(),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&m).unwrap(), json!({"name": "web"}));
        let m: ObjectMeta = serde_json::from_value(json!({
            "name": "a", "generateName": "a-", "resourceVersion": "7", "generation": 2,
            "creationTimestamp": "2026-01-02T03:04:05Z", "deletionGracePeriodSeconds": 30,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true}]
        }))
        .unwrap();
        assert_eq!(m.generate_name, "a-");
        assert_eq!(m.generation, 2);
        assert_eq!(m.owner_references[0].controller, Some(true));
        assert_eq!(
            m.creation_timestamp.map(|t| t.to_string()).as_deref(),
            Some("2026-01-02T03:04:05Z")
        );
    }

    #[test]
    fn int_or_string() {
        assert_eq!(
            serde_json::from_value::<IntOrString>(json!(8080)).unwrap(),
            IntOrString::Int(8080)
        );
        assert_eq!(
            serde_json::from_value::<IntOrString>(json!("http")).unwrap(),
            IntOrString::String("http".into())
        );
        assert!(serde_json::from_value::<IntOrString>(json!(true)).is_err());
        assert!(serde_json::from_value::<IntOrString>(json!(1u64 << 40)).is_err());
        assert_eq!(
            serde_json::to_value(IntOrString::from("25%")).unwrap(),
            json!("25%")
        );
        assert_eq!(
            serde_json::to_value(IntOrString::from(3)).unwrap(),
            json!(3)
        );
        assert_eq!(IntOrString::from("25%").scaled_value(10, true), Some(3));
        assert_eq!(IntOrString::from("25%").scaled_value(10, false), Some(2));
        assert_eq!(IntOrString::from(4).scaled_value(10, false), Some(4));
        assert_eq!(IntOrString::from("x").scaled_value(10, false), None);
    }
}
