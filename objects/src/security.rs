//! A container's security context (the Linux fields): who it runs as,
//! its root filesystem, capabilities and privilege.

use crate::meta::object;

object! {
    /// Security settings of a container.
    pub struct SecurityContext {
        /// User id the process runs as.
        pub run_as_user: Option<i64>,
        /// Group id the process runs as.
        pub run_as_group: Option<i64>,
        /// Refuse to start as root (uid 0).
        pub run_as_non_root: Option<bool>,
        /// Mount the root filesystem read-only.
        pub read_only_root_filesystem: Option<bool>,
        /// Run privileged (every capability and device).
        pub privileged: Option<bool>,
        /// Capabilities added and dropped.
        pub capabilities: Option<Capabilities>,
    }
}

object! {
    /// Capabilities to add and drop ("NET_ADMIN", or "ALL" to drop).
    pub struct Capabilities {
        /// Added.
        pub add: Vec<String>,
        /// Dropped.
        pub drop: Vec<String>,
    }
}
