//! Admission: what the API server does to an object on its way into the
//! store. [`admit`] decodes (warning about unknown fields), defaults and
//! validates; [`validate_update`] adds the rules of an update (immutable
//! fields). Errors are [`FieldError`]s, displayed as Kubernetes displays
//! them, and [`invalid_message`] is the message of the rejection.

use std::fmt;

use serde_json::Value;

use crate::apps::{DaemonSet, Deployment, ReplicaSet};
use crate::batch::{CronJob, Job};
use crate::certificates::CertificateSigningRequest;
use crate::coordination::Lease;
use crate::core::{
    ConfigMap, Endpoints, Event, Namespace, Node, Pod, ReplicationController, Secret, Service,
    ServiceAccount,
};
use crate::discovery::EndpointSlice;
use crate::networking::{self, Ingress, IngressClass};
use crate::nodepool::NodePool;
use crate::rbac::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use crate::registry::ResourceInfo;
use crate::scheduling::{self, PriorityClass};
use crate::{decode, defaults, validation, Resource};

/// The kind of a [`FieldError`] (Kubernetes' `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// "Required value": a field that must be set is not.
    Required,
    /// "Invalid value": a value that breaks a rule.
    Invalid,
    /// "Unsupported value": a value outside a fixed set.
    NotSupported,
    /// "Duplicate value": a value that must be unique is not.
    Duplicate,
    /// "Forbidden": a field that may not be set (or changed) here.
    Forbidden,
    /// "Too long": a value over a size limit.
    TooLong,
    /// A JSON value of the wrong type (shown as "Invalid value", like
    /// Kubernetes' `FieldValueTypeInvalid`).
    TypeInvalid,
    /// "Not found": a reference to something that is not declared (a
    /// volume mount naming no volume of the pod).
    NotFound,
}

impl FieldErrorKind {
    /// Kubernetes' wording of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::NotFound => "Not found",
        }
    }

    /// The `reason` of this kind in a Kubernetes `Status` cause
    /// (`FieldValueRequired`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::NotFound => "FieldValueNotFound",
        }
    }
}

/// One problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with `[i]` for list indices and `[key]` for map keys,
    /// e.g. `spec.template.spec.containers[0].image`; empty for the whole
    /// object.
    pub path: String,
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// The offending value, already rendered as Kubernetes shows it:
    /// strings quoted (`"Web_1"`), numbers bare (`-1`), maps as JSON.
    pub value: Option<String>,
    /// Details (for NotSupported: `supported values: "A", "B"`).
    pub detail: String,
}

/// Renders a string value as Kubernetes does (quoted, escaped).
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

impl FieldError {
    fn new(
        path: impl Into<String>,
        kind: FieldErrorKind,
        value: Option<String>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            path: path.into(),
            kind,
            value,
            detail: detail.into(),
        }
    }

    /// `path: Required value[: detail]`
    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Required, None, detail)
    }

    /// `path: Invalid value: <value>: detail`, `value` already rendered.
    pub fn invalid(
        path: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(path, FieldErrorKind::Invalid, Some(value.into()), detail)
    }

    /// `path: Invalid value: "<value>": detail` for a string value.
    pub fn invalid_str(path: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        Self::invalid(path, quote(value), detail)
    }

    /// `path: Unsupported value: "v": supported values: "a", "b"`
    pub fn not_supported(path: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
        Self::new(
            path,
            FieldErrorKind::NotSupported,
            Some(quote(value)),
            format!("supported values: {}", list.join(", ")),
        )
    }

    /// `path: Duplicate value: <value>`, `value` already rendered.
    pub fn duplicate(path: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Duplicate, Some(value.into()), "")
    }

    /// `path: Forbidden: detail`
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Forbidden, None, detail)
    }

    /// `path: Too long: may not be more than <max> bytes`
    pub fn too_long(path: impl Into<String>, max: usize) -> Self {
        Self::new(
            path,
            FieldErrorKind::TooLong,
            None,
            format!("may not be more than {max} bytes"),
        )
    }

    /// `path: Not found: "<value>"`
    pub fn not_found(path: impl Into<String>, value: &str) -> Self {
        Self::new(path, FieldErrorKind::NotFound, Some(quote(value)), "")
    }

    /// `path: Invalid value: <value>: expected <type>` for a JSON value of
    /// the wrong type, `value` already rendered.
    pub fn type_invalid(
        path: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            path,
            FieldErrorKind::TypeInvalid,
            Some(value.into()),
            detail,
        )
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(self.kind.as_str())?;
        if let Some(v) = &self.value {
            write!(f, ": {v}")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

/// An object that passed admission.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The decoded, defaulted object with only known fields, `apiVersion`
    /// and `kind` set.
    pub object: Value,
    /// Warnings for the client, e.g. `unknown field "spec.foo"`.
    pub warnings: Vec<String>,
}

/// What admission does for one kind.
pub(crate) trait Admission: Resource {
    /// `apiVersion` and `kind`.
    fn type_meta(&mut self) -> (&mut String, &mut String);
    /// Sets Kubernetes' defaults.
    fn set_defaults(&mut self);
    /// The kind's rules (metadata excepted).
    fn validate(&self) -> Vec<FieldError>;
    /// The kind's rules for an update.
    fn validate_update(old: &Self, new: &Self) -> Vec<FieldError>;
}

macro_rules! admission {
    ($ty:ty, $def:path, $val:path, $upd:path) => {
        impl Admission for $ty {
            fn type_meta(&mut self) -> (&mut String, &mut String) {
                (&mut self.api_version, &mut self.kind)
            }
            fn set_defaults(&mut self) {
                $def(self)
            }
            fn validate(&self) -> Vec<FieldError> {
                $val(self)
            }
            fn validate_update(old: &Self, new: &Self) -> Vec<FieldError> {
                $upd(old, new)
            }
        }
    };
}

fn no_update_rules<T>(_old: &T, _new: &T) -> Vec<FieldError> {
    Vec::new()
}

fn no_defaults<T>(_object: &mut T) {}

admission!(
    Namespace,
    defaults::namespace,
    validation::namespace,
    no_update_rules
);
admission!(Node, no_defaults, validation::node, validation::node_update);
admission!(
    NodePool,
    defaults::node_pool,
    validation::node_pool,
    no_update_rules
);
admission!(Pod, defaults::pod, validation::pod, validation::pod_update);
admission!(
    ReplicationController,
    defaults::replication_controller,
    validation::replication_controller,
    no_update_rules
);
admission!(
    ReplicaSet,
    defaults::replica_set,
    validation::replica_set,
    validation::replica_set_update
);
admission!(
    Deployment,
    defaults::deployment,
    validation::deployment,
    validation::deployment_update
);
admission!(Job, defaults::job, validation::job, validation::job_update);
admission!(
    CronJob,
    defaults::cron_job,
    validation::cron_job,
    validation::cron_job_update
);
admission!(
    DaemonSet,
    defaults::daemon_set,
    validation::daemon_set,
    validation::daemon_set_update
);
admission!(
    Service,
    defaults::service,
    validation::service,
    validation::service_update
);
admission!(
    Endpoints,
    defaults::endpoints,
    validation::endpoints,
    no_update_rules
);
admission!(
    EndpointSlice,
    crate::discovery::endpoint_slice_defaults,
    crate::discovery::validate_endpoint_slice,
    crate::discovery::endpoint_slice_update
);
admission!(Ingress, no_defaults, validation::ingress, no_update_rules);
admission!(
    IngressClass,
    no_defaults,
    networking::validate_ingress_class,
    networking::ingress_class_update
);
admission!(
    ConfigMap,
    no_defaults,
    validation::config_map,
    validation::config_map_update
);
admission!(
    Secret,
    defaults::secret,
    validation::secret,
    validation::secret_update
);
admission!(Event, no_defaults, validation::event, no_update_rules);
admission!(
    ServiceAccount,
    no_defaults,
    validation::service_account,
    no_update_rules
);
admission!(
    CertificateSigningRequest,
    no_defaults,
    crate::certificates::validate_csr,
    crate::certificates::csr_update
);
admission!(
    PriorityClass,
    scheduling::priority_class_defaults,
    scheduling::validate_priority_class,
    scheduling::priority_class_update
);
admission!(
    Lease,
    no_defaults,
    crate::coordination::validate_lease,
    no_update_rules
);

admission!(
    Role,
    no_defaults,
    crate::rbac::validate_role,
    no_update_rules
);
admission!(
    ClusterRole,
    no_defaults,
    crate::rbac::validate_cluster_role,
    no_update_rules
);
admission!(
    RoleBinding,
    no_defaults,
    crate::rbac::validate_role_binding,
    crate::rbac::role_binding_update
);
admission!(
    ClusterRoleBinding,
    no_defaults,
    crate::rbac::validate_cluster_role_binding,
    crate::rbac::cluster_role_binding_update
);

/// Calls `$f::<Kind>` for the kind `$info` names.
macro_rules! dispatch {
    ($info:expr, $f:ident, $($arg:expr),*) => {
        match $info.kind {
            "Namespace" => Some($f::<Namespace>($($arg),*)),
            "Node" => Some($f::<Node>($($arg),*)),
            "NodePool" => Some($f::<NodePool>($($arg),*)),
            "Pod" => Some($f::<Pod>($($arg),*)),
            "ReplicationController" => Some($f::<ReplicationController>($($arg),*)),
            "ReplicaSet" => Some($f::<ReplicaSet>($($arg),*)),
            "Deployment" => Some($f::<Deployment>($($arg),*)),
            "Job" => Some($f::<Job>($($arg),*)),
            "CronJob" => Some($f::<CronJob>($($arg),*)),
            "DaemonSet" => Some($f::<DaemonSet>($($arg),*)),
            "Service" => Some($f::<Service>($($arg),*)),
            "Endpoints" => Some($f::<Endpoints>($($arg),*)),
            "EndpointSlice" => Some($f::<EndpointSlice>($($arg),*)),
            "Ingress" => Some($f::<Ingress>($($arg),*)),
            "IngressClass" => Some($f::<IngressClass>($($arg),*)),
            "ConfigMap" => Some($f::<ConfigMap>($($arg),*)),
            "Secret" => Some($f::<Secret>($($arg),*)),
            "Event" => Some($f::<Event>($($arg),*)),
            "ServiceAccount" => Some($f::<ServiceAccount>($($arg),*)),
            "CertificateSigningRequest" => Some($f::<CertificateSigningRequest>($($arg),*)),
            "PriorityClass" => Some($f::<PriorityClass>($($arg),*)),
            "Lease" => Some($f::<Lease>($($arg),*)),
            "Role" => Some($f::<Role>($($arg),*)),
            "ClusterRole" => Some($f::<ClusterRole>($($arg),*)),
            "RoleBinding" => Some($f::<RoleBinding>($($arg),*)),
            "ClusterRoleBinding" => Some($f::<ClusterRoleBinding>($($arg),*)),
            _ => None,
        }
    };
}

fn unknown_kind(info: &ResourceInfo) -> FieldError {
    FieldError::invalid_str("kind", info.kind, "kind not supported by admission")
}

/// Decode, default and validate an object on its way into the store.
///
/// 1. The value must be a JSON object whose `apiVersion` and `kind`, when
///    present, are `info`'s.
/// 2. It is decoded into the kind's type: an unknown field becomes a
///    warning `unknown field "spec.template.spec.foo"`, a value of the wrong
///    type an error (`spec.replicas: Invalid value: "three": expected
///    int32`). A `null` member of an object reads as absent.
/// 3. Kubernetes' defaults are set (see the crate's `defaults` module:
///    restartPolicy, imagePullPolicy, replicas, strategy, ...). A Job's
///    selector is not generated here, since the uid does not exist yet: the
///    server calls [`crate::batch::Job::generate_selector`] on creation.
/// 4. The metadata and the kind's rules are validated; every problem is
///    reported, with its field path.
/// 5. The typed object is serialized back: only known fields survive.
pub fn admit(info: &'static ResourceInfo, object: Value) -> Result<Admitted, Vec<FieldError>> {
    admit_with(info, object, true)
}

/// [`admit`] that always decodes the slow way, tracking every field: the
/// reference that the quick way is tested against.
#[doc(hidden)]
pub fn admit_tracked(
    info: &'static ResourceInfo,
    object: Value,
) -> Result<Admitted, Vec<FieldError>> {
    admit_with(info, object, false)
}

fn admit_with(
    info: &'static ResourceInfo,
    object: Value,
    quick: bool,
) -> Result<Admitted, Vec<FieldError>> {
    let Value::Object(members) = &object else {
        return Err(vec![FieldError::type_invalid(
            "",
            decode::render(&object),
            "expected object",
        )]);
    };
    let mut errors = Vec::new();
    let api_version = info.api_version();
    if let Some(Value::String(v)) = members.get("apiVersion") {
        if *v != api_version {
            errors.push(FieldError::not_supported("apiVersion", v, &[&api_version]));
        }
    }
    if let Some(Value::String(k)) = members.get("kind") {
        if k != info.kind {
            errors.push(FieldError::not_supported("kind", k, &[info.kind]));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    dispatch!(info, admit_as, info, &object, quick).unwrap_or_else(|| Err(vec![unknown_kind(info)]))
}

/// Decoding first the quick way (no path tracking, which took about half
/// of a pod create's admission), and the slow way only where that fails
/// (for the error's field) or where a member of the input is not in the
/// admitted object (for the unknown fields' warnings).
fn admit_as<T: Admission>(
    info: &'static ResourceInfo,
    object: &Value,
    quick: bool,
) -> Result<Admitted, Vec<FieldError>> {
    let plain = if quick {
        decode::decode_plain::<T>(object)
    } else {
        None
    };
    let decoded_plain = plain.is_some();
    let (mut typed, mut warnings) = match plain {
        Some(t) => (t, Vec::new()),
        None => decode::decode::<T>(object).map_err(|e| vec![e])?,
    };
    let (api_version, kind) = typed.type_meta();
    *api_version = info.api_version();
    *kind = info.kind.to_string();
    typed.set_defaults();
    let mut errors = validation::object_meta(info, typed.meta());
    errors.extend(typed.validate());
    if !errors.is_empty() {
        return Err(errors);
    }
    let admitted = serde_json::to_value(&typed).map_err(|e| {
        vec![FieldError::invalid(
            "",
            "",
            format!("cannot encode the object: {e}"),
        )]
    })?;
    if decoded_plain && !decode::covers(&admitted, object) {
        warnings = decode::decode::<T>(object).map_err(|e| vec![e])?.1;
    }
    Ok(Admitted {
        object: admitted,
        warnings,
    })
}

/// Rules that only apply to an update (immutable fields), in Kubernetes'
/// wording (`spec.selector: Invalid value: {...}: field is immutable`).
/// Both objects are already admitted. Not checked here: metadata.name and
/// metadata.namespace (the server's), and a Job's generated selector, which
/// the server must carry over (or regenerate with
/// [`crate::batch::Job::generate_selector`]) before calling this.
pub fn validate_update(info: &'static ResourceInfo, old: &Value, new: &Value) -> Vec<FieldError> {
    dispatch!(info, update_as, old, new).unwrap_or_else(|| vec![unknown_kind(info)])
}

fn update_as<T: Admission>(old: &Value, new: &Value) -> Vec<FieldError> {
    let old = match decode::decode::<T>(old) {
        Ok((o, _)) => o,
        Err(e) => return vec![e],
    };
    match decode::decode::<T>(new) {
        Ok((n, _)) => T::validate_update(&old, &n),
        Err(e) => vec![e],
    }
}

/// Kubernetes' message for a rejected object: `Deployment.apps "web" is
/// invalid: <e1>, <e2>` (the kind, ".group" when the group is not empty,
/// the name, then the errors joined by ", ").
pub fn invalid_message(info: &ResourceInfo, name: &str, errors: &[FieldError]) -> String {
    let kind = if info.group.is_empty() {
        info.kind.to_string()
    } else {
        format!("{}.{}", info.kind, info.group)
    };
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("{kind} {} is invalid: {}", quote(name), list.join(", "))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod workload_tests;
