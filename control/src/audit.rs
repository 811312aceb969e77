//! The audit log: one line of JSON per write to the object API and per
//! exec, attach or port-forward, in Kubernetes' audit event format
//! (`audit.k8s.io/v1` `Event`, level `Metadata`, stage `ResponseComplete`):
//! who (the user, uid and groups the call was authorized as, its source
//! address and user agent), what (the verb and the object: resource,
//! subresource, namespace, name), when (received and completed) and the
//! result (an HTTP status code, and the message of a refusal). Request and
//! response bodies are never written, so Secrets do not leak into it.
//!
//! Lines are written by a thread of their own, fed through a bounded queue
//! that a call never waits on (a full queue drops the line and counts it,
//! with a warning); the file is rotated when it passes its size, keeping
//! `FILE.1` (newest) to `FILE.N`. The path `-` writes to standard output.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use flotilla_objects::rbac::Attributes;
use flotilla_security::authn::Identity;
use serde_json::json;

/// Lines waiting for the writer at most.
const QUEUE: usize = 10_000;

/// Where and how much.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The file (`-`: standard output).
    pub path: PathBuf,
    /// Rotate once the file is this big (0: never).
    pub max_bytes: u64,
    /// Rotated files kept (`FILE.1` .. `FILE.N`).
    pub max_backups: usize,
}

/// The audit log of one master.
pub struct AuditLog {
    /// None only while dropping.
    tx: Option<SyncSender<String>>,
    writer: Option<std::thread::JoinHandle<()>>,
    dropped: AtomicU64,
}

/// Dropping the log lets its writer finish the queued lines, flush and stop.
impl Drop for AuditLog {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

/// One audited call, from its authorization to its answer.
pub struct AuditEvent {
    pub received: DateTime<Utc>,
    /// Who, as authorized (Err: the call was not authenticated).
    pub user: Result<Identity, String>,
    /// Who sent the call, when it acted as `user` by impersonation.
    pub impersonator: Option<Identity>,
    pub source: Option<std::net::SocketAddr>,
    pub user_agent: String,
    pub attrs: Attributes,
    /// The object's API version ("v1", "apps/v1").
    pub api_version: String,
    pub code: u16,
    /// Why the call failed, if it did.
    pub message: Option<String>,
}

impl AuditLog {
    /// Open (append to) the log and start its writer thread.
    pub fn open(cfg: AuditConfig) -> std::io::Result<Arc<AuditLog>> {
        let out = Out::open(&cfg)?;
        let (tx, rx) = sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_lines(out, cfg, rx))?;
        Ok(Arc::new(AuditLog {
            tx: Some(tx),
            writer: Some(writer),
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queue one event; never waits.
    pub fn record(&self, ev: AuditEvent) {
        let Some(tx) = &self.tx else { return };
        let line = ev.to_json().to_string();
        match tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "audit log behind: events dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("audit log writer is gone; event dropped");
            }
        }
    }

    /// Events dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AuditEvent {
    /// Kubernetes' request URI for the call.
    fn request_uri(&self) -> String {
        let a = &self.attrs;
        let mut uri = if a.api_group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}", self.api_version)
        };
        if !a.namespace.is_empty() {
            uri.push_str(&format!("/namespaces/{}", a.namespace));
        }
        uri.push_str(&format!("/{}", a.resource));
        if !a.name.is_empty() {
            uri.push_str(&format!("/{}", a.name));
        }
        if !a.subresource.is_empty() {
            uri.push_str(&format!("/{}", a.subresource));
        }
        uri
    }

    pub fn to_json(&self) -> serde_json::Value {
        let a = &self.attrs;
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
        let id_json =
            |id: &Identity| json!({"username": id.user, "uid": id.uid, "groups": id.groups});
        // As Kubernetes: `user` is who authenticated; `impersonatedUser`
        // whom they acted as.
        let (user, impersonated) = match (&self.user, &self.impersonator) {
            (Ok(acting), Some(real)) => (id_json(real), Some(id_json(acting))),
            (Ok(id), None) => (id_json(id), None),
            (Err(_), _) => (json!({}), None),
        };
        let mut object = json!({
            "resource": a.resource,
            "apiGroup": a.api_group,
            "apiVersion": self.api_version,
        });
        for (k, v) in [
            ("namespace", &a.namespace),
            ("name", &a.name),
            ("subresource", &a.subresource),
        ] {
            if !v.is_empty() {
                object[k] = json!(v);
            }
        }
        let mut status = json!({"metadata": {}, "code": self.code});
        let message = match (&self.user, &self.message) {
            (Err(e), _) => Some(e),
            (Ok(_), m) => m.as_ref(),
        };
        if let Some(m) = message {
            status["status"] = json!("Failure");
            status["message"] = json!(m);
        }
        let mut ev = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": uuid::Uuid::new_v4().to_string(),
            "stage": "ResponseComplete",
            "requestURI": self.request_uri(),
            "verb": a.verb,
            "user": user,
            "sourceIPs": self.source.map(|s| vec![s.ip().to_string()]).unwrap_or_default(),
            "userAgent": self.user_agent,
            "objectRef": object,
            "responseStatus": status,
            "requestReceivedTimestamp": ts(self.received),
            "stageTimestamp": ts(Utc::now()),
        });
        if let Some(i) = impersonated {
            ev["impersonatedUser"] = i;
        }
        ev
    }
}

/// The file being written, or standard output.
enum Out {
    File { w: BufWriter<File>, size: u64 },
    Stdout(std::io::Stdout),
}

impl Out {
    fn open(cfg: &AuditConfig) -> std::io::Result<Out> {
        if cfg.path.as_os_str() == "-" {
            return Ok(Out::Stdout(std::io::stdout()));
        }
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)?;
        let size = f.metadata()?.len();
        Ok(Out::File {
            w: BufWriter::new(f),
            size,
        })
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Out::File { w, size } => {
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")?;
                *size += line.len() as u64 + 1;
                Ok(())
            }
            Out::Stdout(s) => writeln!(s.lock(), "{line}"),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::File { w, .. } => w.flush(),
            Out::Stdout(s) => s.flush(),
        }
    }

    fn full(&self, max: u64) -> bool {
        matches!(self, Out::File { size, .. } if max > 0 && *size >= max)
    }
}

fn backup(path: &std::path::Path, i: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Move FILE to FILE.1, FILE.1 to FILE.2 ..., dropping the oldest.
fn rotate(cfg: &AuditConfig) -> std::io::Result<()> {
    if cfg.max_backups == 0 {
        return std::fs::remove_file(&cfg.path);
    }
    let _ = std::fs::remove_file(backup(&cfg.path, cfg.max_backups));
    for i in (1..cfg.max_backups).rev() {
        let from = backup(&cfg.path, i);
        if from.exists() {
            std::fs::rename(&from, backup(&cfg.path, i + 1))?;
        }
    }
    std::fs::rename(&cfg.path, backup(&cfg.path, 1))
}

fn write_lines(mut out: Out, cfg: AuditConfig, rx: Receiver<String>) {
    let fail = |e: std::io::Error| {
        tracing::error!(path = %cfg.path.display(), error = %e, "cannot write the audit log");
    };
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(line) = next {
            if let Err(e) = out.write_line(&line) {
                fail(e);
            }
            if out.full(cfg.max_bytes) {
                let reopened = out
                    .flush()
                    .and_then(|()| rotate(&cfg))
                    .and_then(|()| Out::open(&cfg));
                match reopened {
                    Ok(o) => out = o,
                    Err(e) => fail(e),
                }
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            fail(e);
        }
    }
}

/// The attributes of a call on `resource` (the plural) and the API
/// version of its kind; a resource this cluster does not serve is still
/// named as asked.
pub fn attributes(verb: &str, resource: &str, ns: &str, name: &str) -> (Attributes, String) {
    match crate::api::resolve(resource) {
        Ok(info) => {
            let v = if info.group.is_empty() {
                info.version.to_string()
            } else {
                format!("{}/{}", info.group, info.version)
            };
            (Attributes::new(verb, info, ns, name), v)
        }
        Err(_) => (
            Attributes {
                verb: verb.into(),
                api_group: String::new(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: ns.into(),
                name: name.into(),
            },
            String::new(),
        ),
    }
}

/// Run `call` on `req`, recorded in `log` (when there is one) with the
/// attributes `what` reads from the request, and the call's answer. Its
/// caller is authenticated here too, for the record: cheap, and the call's
/// own check may refuse before naming anyone.
pub async fn audited<T, R, F>(
    log: Option<&Arc<AuditLog>>,
    auth: &crate::auth::Auth,
    req: tonic::Request<T>,
    what: impl FnOnce(&T) -> (Attributes, String),
    created: bool,
    call: impl FnOnce(tonic::Request<T>) -> F,
) -> Result<R, tonic::Status>
where
    F: std::future::Future<Output = Result<R, tonic::Status>>,
{
    let Some(log) = log else {
        return call(req).await;
    };
    let (attrs, api_version) = what(req.get_ref());
    let user_agent = req
        .metadata()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (user, impersonator) = match auth.callers(&req).await {
        Ok((acting, real)) => (Ok(acting), real),
        Err(e) => (Err(e.to_string()), None),
    };
    let mut ev = AuditEvent {
        received: Utc::now(),
        user,
        impersonator,
        source: req.remote_addr(),
        user_agent,
        attrs,
        api_version,
        code: 0,
        message: None,
    };
    let res = call(req).await;
    match &res {
        Ok(_) => ev.code = http_code(tonic::Code::Ok, created),
        Err(s) => {
            ev.code = http_code(s.code(), false);
            ev.message = Some(s.message().to_string());
        }
    }
    log.record(ev);
    res
}

/// Name of the object in a JSON manifest, for the record.
pub fn name_in(object: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Meta {
        name: String,
        namespace: String,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Obj {
        metadata: Meta,
    }
    let o: Obj = serde_json::from_slice(object).unwrap_or_default();
    (o.metadata.name, o.metadata.namespace)
}

/// The HTTP status code Kubernetes would answer for a gRPC outcome.
pub fn http_code(code: tonic::Code, created: bool) -> u16 {
    use tonic::Code::*;
    match code {
        Ok if created => 201,
        Ok => 200,
        InvalidArgument | OutOfRange => 400,
        Unauthenticated => 401,
        PermissionDenied => 403,
        NotFound => 404,
        AlreadyExists | Aborted | FailedPrecondition => 409,
        ResourceExhausted => 429,
        Unavailable => 503,
        DeadlineExceeded => 504,
        Unimplemented => 405,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(verb: &str, name: &str, code: u16) -> AuditEvent {
        AuditEvent {
            received: Utc::now(),
            user: Ok(Identity {
                user: "alice".into(),
                uid: "u1".into(),
                groups: vec!["dev".into(), "system:authenticated".into()],
            }),
            impersonator: None,
            source: "10.0.0.7:5555".parse().ok(),
            user_agent: "flt/0.1".into(),
            attrs: Attributes::new(verb, &flotilla_objects::registry::POD, "web", name)
                .subresource(if verb == "create" { "exec" } else { "" }),
            api_version: "v1".into(),
            code,
            message: (code >= 400).then(|| "forbidden".to_string()),
        }
    }

    #[test]
    fn events_read_as_kubernetes_audit_events() {
        let v = event("create", "p", 200).to_json();
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["stage"], "ResponseComplete");
        assert_eq!(v["requestURI"], "/api/v1/namespaces/web/pods/p/exec");
        assert_eq!(v["user"]["username"], "alice");
        assert_eq!(v["user"]["groups"][0], "dev");
        assert_eq!(v["sourceIPs"][0], "10.0.0.7");
        assert_eq!(v["objectRef"]["subresource"], "exec");
        assert_eq!(v["responseStatus"]["code"], 200);
        assert!(v.get("impersonatedUser").is_none());
        let v = event("delete", "p", 403).to_json();
        assert_eq!(v["responseStatus"]["message"], "forbidden");
        assert!(v["objectRef"].get("subresource").is_none());
    }

    #[test]
    fn an_impersonated_call_names_who_sent_it_and_whom_it_acted_as() {
        let mut e = event("update", "p", 200);
        e.impersonator = Some(Identity::user("admin", &["system:masters"]));
        let v = e.to_json();
        assert_eq!(v["user"]["username"], "admin");
        assert_eq!(v["impersonatedUser"]["username"], "alice");
        assert_eq!(v["impersonatedUser"]["groups"][0], "dev");
    }

    #[test]
    fn the_file_rotates_and_keeps_its_backups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit").join("audit.log");
        let cfg = AuditConfig {
            path: path.clone(),
            max_bytes: 2_000,
            max_backups: 2,
        };
        let log = AuditLog::open(cfg).expect("open");
        for i in 0..40 {
            log.record(event("update", &format!("pod-{i}"), 200));
        }
        // Dropping the log waits for its writer to drain and flush.
        drop(log);
        let lines = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert!(backup(&path, 1).exists() && backup(&path, 2).exists());
        assert!(!backup(&path, 3).exists(), "only two backups are kept");
        for p in [path.clone(), backup(&path, 1), backup(&path, 2)] {
            let ls = lines(&p);
            // The file itself may have just been rotated away.
            assert!(!ls.is_empty() || p == path, "{} is empty", p.display());
            for l in ls {
                let v: serde_json::Value = serde_json::from_str(&l).expect("a JSON line");
                assert_eq!(v["verb"], "update");
            }
        }
        // Oldest first across the files: .2, .1, then the file itself.
        let all: Vec<String> = [backup(&path, 2), backup(&path, 1), path.clone()]
            .iter()
            .flat_map(|p| lines(p))
            .collect();
        let names: Vec<u32> = all
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["objectRef"]["name"].as_str().expect("name")[4..]
                    .parse()
                    .expect("n")
            })
            .collect();
        assert!(names.windows(2).all(|w| w[1] == w[0] + 1), "{names:?}");
        assert_eq!(names.last(), Some(&39));
    }
}
