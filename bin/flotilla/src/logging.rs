//! Logging for every role: `RUST_LOG`-style filters (default `info`), to
//! stderr, and quiet at start: the election chatter of masters finding each
//! other is not shown as WARN and ERROR lines.
//!
//! openraft logs, at WARN or ERROR, things that are normal while a cluster
//! forms or changes leader: a vote answer that arrives after the vote
//! changed, replication that learns of a higher term, votes and appends to
//! a peer that is not listening yet (or any more, while a cluster stops),
//! and the back-off that follows. [`ElectionChatter`] drops those (they
//! are still shown when `RUST_LOG` asks for openraft at debug), except an
//! unreachable peer that stays unreachable for longer than [`GRACE`]: that
//! is shown, since an operator may have to act on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How long a peer may be unreachable before vote errors about it show.
pub const GRACE: Duration = Duration::from_secs(10);
/// A peer not complained about for this long starts a new grace period.
const FORGET: Duration = Duration::from_secs(30);

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Format {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields, spans),
    /// for log shippers.
    Json,
}

/// Start logging: `RUST_LOG` if set, else `info,openraft=warn`.
pub fn init(format: Format) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let verbose_raft = std::env::var("RUST_LOG")
        .is_ok_and(|v| v.contains("openraft=debug") || v.contains("openraft=trace"));
    let (text, json) = match format {
        Format::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            ),
            None,
        ),
        Format::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with((!verbose_raft).then(ElectionChatter::default))
        .with(text)
        .with(json)
        .try_init();
}

/// The message of an event, its `target` field (a peer), and every other
/// field's value (`error`, `err`, `result`, ...), as text.
#[derive(Default)]
struct Fields {
    message: String,
    error: String,
    target: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let s = format!("{value:?}");
        match field.name() {
            "message" => self.message = s,
            "target" => self.target = s,
            _ => {
                self.error.push_str(&s);
                self.error.push(' ');
            }
        }
    }
}

/// Drops openraft's expected election noise (see the module doc).
#[derive(Default)]
pub struct ElectionChatter {
    /// Peer -> (first complaint of this outage, last complaint).
    unreachable: Mutex<HashMap<String, (Instant, Instant)>>,
}

/// What an openraft WARN or ERROR event is.
#[derive(Debug, PartialEq)]
enum Kind {
    /// Normal while electing: never shown at WARN.
    Chatter,
    /// A vote to a peer that is not listening.
    Unreachable(String),
    Other,
}

fn classify(f: &Fields) -> Kind {
    let m = f.message.as_str();
    if m.starts_with("A message will be ignored because vote changed")
        || m.contains("seen a higher vote")
        || f.error.contains("seen a higher vote")
        // Replication pausing after a failed send: the failure itself is
        // what is reported (or not).
        || m.contains("backoff mode: drain events")
        // A caller that stopped waiting for its answer (a client gone, or
        // a master shutting down).
        || m.starts_with("OneshotConsumer.tx.send")
        // Calls racing the Raft core as it stops (a master shutting down).
        || f.error.trim() == "Stopped"
        || f.error.contains("Err(Stopped)")
        || m.contains("core_result=Err(Stopped)")
    {
        return Kind::Chatter;
    }
    if m.contains("Unreachable node") || f.error.contains("Unreachable node") {
        // Votes, appends and their progress updates to a peer that is not
        // listening (yet, or any more): keyed by the peer.
        let peer = if f.target.is_empty() {
            m.split("target=")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .unwrap_or("")
                .to_string()
        } else {
            f.target.clone()
        };
        let peer = if peer.is_empty() {
            m.split(" to ")
                .nth(1)
                .and_then(|t| t.split(':').next())
                .unwrap_or("?")
                .to_string()
        } else {
            peer
        };
        return Kind::Unreachable(peer);
    }
    Kind::Other
}

impl ElectionChatter {
    /// Whether a complaint about `peer` at `now` is still within its grace.
    fn in_grace(&self, peer: String, now: Instant) -> bool {
        let mut m = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(peer).or_insert((now, now));
        if now.duration_since(e.1) > FORGET {
            *e = (now, now);
        }
        e.1 = now;
        now.duration_since(e.0) < GRACE
    }
}

impl<S: Subscriber> Layer<S> for ElectionChatter {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if !meta.target().starts_with("openraft") || *meta.level() > Level::WARN {
            return true;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        match classify(&f) {
            Kind::Chatter => false,
            Kind::Unreachable(peer) => !self.in_grace(peer, Instant::now()),
            Kind::Other => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &str, error: &str, target: &str) -> Fields {
        Fields {
            message: message.into(),
            error: error.into(),
            target: target.into(),
        }
    }

    #[test]
    fn election_noise_is_told_from_real_trouble() {
        assert_eq!(
            classify(&fields(
                "A message will be ignored because vote changed: msg sent by vote: T2",
                "",
                ""
            )),
            Kind::Chatter
        );
        assert_eq!(
            classify(&fields(
                "error replication to target=1 error=seen a higher vote: T1 GT mine: T1",
                "",
                ""
            )),
            Kind::Chatter
        );
        assert_eq!(
            classify(&fields(
                "while requesting vote",
                "Unreachable node: vote to 127.0.0.1:22380: tcp connect error",
                "7"
            )),
            Kind::Unreachable("7".into())
        );
        assert_eq!(
            classify(&fields("while requesting vote", "Timeout", "7")),
            Kind::Other
        );
        assert_eq!(classify(&fields("failed to apply", "", "")), Kind::Other);
    }

    #[test]
    fn an_unreachable_peer_shows_once_past_its_grace_and_a_new_outage_starts_over() {
        let c = ElectionChatter::default();
        let t0 = Instant::now();
        assert!(c.in_grace("p".into(), t0));
        assert!(c.in_grace("p".into(), t0 + Duration::from_secs(5)));
        assert!(
            !c.in_grace("p".into(), t0 + GRACE + Duration::from_secs(1)),
            "still down: shown"
        );
        // Quiet for longer than FORGET: the next outage has its grace again.
        assert!(c.in_grace("p".into(), t0 + GRACE + FORGET + Duration::from_secs(5)));
        assert!(
            c.in_grace("q".into(), t0 + GRACE + Duration::from_secs(1)),
            "per peer"
        );
    }
}
