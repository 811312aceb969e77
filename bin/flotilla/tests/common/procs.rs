//! A child process killed on drop, and flt and flotilla run as a user would
//! run them, with no configuration of the machine's own.

use std::path::Path;
use std::process::{Child, Command, Output};

/// A child killed (and reaped) on drop, so also when a test fails.
pub struct Up(pub Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// flt with no configuration of the user's own: only what `env` and
/// `args` say (HOME is `home`).
pub fn flt_env(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(super::flt_bin());
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(["--command-timeout-secs", "5"]).args(args);
    c.output().expect("run flt")
}

/// A command's standard output and error, together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run `flotilla ARGS`, which must succeed.
pub fn flotilla(args: &[&str]) {
    let o = Command::new(super::flotilla_bin())
        .args(args)
        .output()
        .expect("run flotilla");
    assert!(o.status.success(), "flotilla {args:?}: {}", text(&o));
}
