//! Which server a test, chaos run or benchmark drives.

use serde::{Deserialize, Serialize};

/// The environment variable that picks the target of `bin/flotilla/tests`.
pub const TARGET_ENV: &str = "FLOTILLA_TEST_TARGET";

/// Which server is under test: Flotilla's masters, or a real etcd (Debian's
/// `/usr/bin/etcd`) for comparison. Both speak the etcd v3 API.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `flotilla master` processes.
    Flotilla,
    /// etcd members (Debian's /usr/bin/etcd), for comparison.
    Etcd,
}

impl Target {
    /// `flotilla` or `etcd`: as on the command line, in JSON and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Flotilla => "flotilla",
            Target::Etcd => "etcd",
        }
    }

    /// The target named by `FLOTILLA_TEST_TARGET`: `flotilla` when it is
    /// unset or empty.
    ///
    /// # Panics
    /// When it names anything else than `flotilla` or `etcd`.
    pub fn from_env() -> Target {
        let value = std::env::var(TARGET_ENV).ok();
        from_env_value(value.as_deref()).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn from_env_value(value: Option<&str>) -> Result<Target, String> {
    match value {
        None | Some("") | Some("flotilla") => Ok(Target::Flotilla),
        Some("etcd") => Ok(Target::Etcd),
        Some(other) => Err(format!(
            "{TARGET_ENV} must be `flotilla` or `etcd`, not {other:?}"
        )),
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum as _;

    #[test]
    fn the_environment_picks_the_target() {
        assert_eq!(from_env_value(None), Ok(Target::Flotilla));
        assert_eq!(from_env_value(Some("")), Ok(Target::Flotilla));
        assert_eq!(from_env_value(Some("flotilla")), Ok(Target::Flotilla));
        assert_eq!(from_env_value(Some("etcd")), Ok(Target::Etcd));
        assert_eq!(
            from_env_value(Some("Etcd")),
            Err("FLOTILLA_TEST_TARGET must be `flotilla` or `etcd`, not \"Etcd\"".to_string())
        );
    }

    #[test]
    fn one_spelling_everywhere() {
        for t in [Target::Flotilla, Target::Etcd] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.name()));
            assert_eq!(serde_json::from_str::<Target>(&json).unwrap(), t);
            assert_eq!(t.to_string(), t.name());
            assert_eq!(Target::from_str(t.name(), false), Ok(t));
        }
    }
}
