//! A command with standard input in a running container (`flt exec -i`,
//! `flt cp` into a pod), through containerd's own task API, as `ctr task
//! exec` does: CRI's ExecSync has no standard input, and CRI's streaming
//! Exec (containerd 1.6's websocket protocol v4) cannot close it.
//!
//! The process runs as the container's own process does (its OCI process
//! spec: user, environment, working folder, capabilities) with other
//! arguments. Its standard input is a FIFO the agent writes then closes
//! (with the shim's CloseIO); its output goes to files that are read once
//! the process is deleted (which waits for the shim to copy all of it).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_proto::containerd::containers::containers_client::ContainersClient;
use flotilla_proto::containerd::containers::GetContainerRequest;
use flotilla_proto::containerd::tasks::tasks_client::TasksClient;
use flotilla_proto::containerd::tasks::{
    Any, CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, KillRequest, StartRequest,
    WaitRequest,
};
use tonic::transport::Channel;

use crate::cri::ExecResult;
use crate::error::{Error, Result};

/// containerd's namespace of CRI's containers.
const CRI_NAMESPACE: &str = "k8s.io";
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// How long a call other than Wait may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT: AtomicU64 = AtomicU64::new(0);

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(CRI_NAMESPACE),
    );
    r
}

fn call(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    Error::runtime(op)
}

/// The container's OCI process with `args` instead of its own.
async fn process_spec(channel: Channel, id: &str, args: Vec<String>) -> Result<Vec<u8>> {
    let c = ContainersClient::new(channel)
        .get(request(GetContainerRequest { id: id.to_string() }))
        .await
        .map_err(call("Containers.Get"))?
        .into_inner()
        .container
        .and_then(|c| c.spec)
        .ok_or_else(|| Error::Containerd(format!("container {id} has no spec")))?;
    let spec: serde_json::Value = serde_json::from_slice(&c.value)
        .map_err(|e| Error::Containerd(format!("the spec of container {id}: {e}")))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| Error::Containerd(format!("the spec of container {id} has no process")))?;
    process["args"] = serde_json::json!(args);
    process["terminal"] = serde_json::json!(false);
    if let Some(p) = process.as_object_mut() {
        p.remove("consoleSize");
    }
    serde_json::to_vec(&process).map_err(|e| Error::Containerd(e.to_string()))
}

/// Removes the exec's folder when dropped.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long `feed` waits for the shim to open the FIFO's reading end.
const READER_WAIT: Duration = Duration::from_secs(10);

/// Write `data` into the FIFO at `path`, then close it. The shim opens the
/// reading end as the process starts; until then a non-blocking open
/// fails with ENXIO and is tried again (under load the shim may not have
/// opened it yet when Start returns: giving up then lost the input, and
/// the command read an empty one).
fn feed(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
    };
    let since = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut f = loop {
        match open() {
            Err(e)
                if e.raw_os_error() == Some(nix::libc::ENXIO) && since.elapsed() < READER_WAIT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => break other?,
        }
    };
    // Blocking writes from here on (this runs on a blocking thread).
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )?;
    match f.write_all(data) {
        // The command ended without reading all of it, as with a pipe.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Run `cmd` in container `id` with `stdin`, to completion or `timeout`;
/// `work` is a folder of the agent's for the exec's FIFO and files.
pub async fn exec_with_stdin(
    channel: Channel,
    work: &Path,
    id: &str,
    cmd: Vec<String>,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<ExecResult> {
    let spec = process_spec(channel.clone(), id, cmd).await?;
    let exec_id = format!(
        "flotilla-exec-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = Dir(work.join(&exec_id));
    std::fs::create_dir_all(&dir.0).map_err(Error::io(format!("creating {}", dir.0.display())))?;
    let (inp, out, err) = (
        dir.0.join("stdin"),
        dir.0.join("stdout"),
        dir.0.join("stderr"),
    );
    nix::unistd::mkfifo(&inp, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::io(format!("mkfifo {}", inp.display()))(e.into()))?;
    for f in [&out, &err] {
        std::fs::File::create(f).map_err(Error::io(format!("creating {}", f.display())))?;
    }
    let mut tasks = TasksClient::new(channel);
    let ids = || (id.to_string(), exec_id.clone());
    let mut r = request(ExecProcessRequest {
        container_id: id.to_string(),
        stdin: inp.display().to_string(),
        stdout: out.display().to_string(),
        stderr: err.display().to_string(),
        terminal: false,
        spec: Some(Any {
            type_url: PROCESS_TYPE.to_string(),
            value: spec,
        }),
        exec_id: exec_id.clone(),
    });
    r.set_timeout(CALL_TIMEOUT);
    tasks.exec(r).await.map_err(call("Tasks.Exec"))?;
    let (container_id, exec_id) = ids();
    let started = tasks
        .start(request(StartRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
        }))
        .await
        .map_err(call("Tasks.Start"));
    if let Err(e) = started {
        let _ = delete(&mut tasks, &container_id, &exec_id).await;
        return Err(e);
    }
    let writer = {
        let mut tasks = tasks.clone();
        let (container_id, exec_id) = ids();
        tokio::spawn(async move {
            let fed = tokio::task::spawn_blocking(move || feed(&inp, &stdin)).await;
            if let Ok(Err(e)) = &fed {
                tracing::debug!(error = %e, "writing an exec's standard input");
            }
            // The shim's own end too: the command reads end of file.
            let _ = tasks
                .close_io(request(CloseIoRequest {
                    container_id,
                    exec_id,
                    stdin: true,
                }))
                .await;
        })
    };
    let wait = |tasks: &mut TasksClient<Channel>| {
        let mut tasks = tasks.clone();
        let (container_id, exec_id) = ids();
        async move {
            tasks
                .wait(request(WaitRequest {
                    container_id,
                    exec_id,
                }))
                .await
                .map_err(call("Tasks.Wait"))
                .map(|r| r.into_inner().exit_status)
        }
    };
    let status = match tokio::time::timeout(timeout, wait(&mut tasks)).await {
        Ok(s) => s,
        Err(_) => {
            let _ = tasks
                .kill(request(KillRequest {
                    container_id: container_id.clone(),
                    exec_id: exec_id.clone(),
                    signal: nix::sys::signal::Signal::SIGKILL as u32,
                    all: false,
                }))
                .await;
            let _ = wait(&mut tasks).await;
            let _ = delete(&mut tasks, &container_id, &exec_id).await;
            writer.abort();
            return Err(Error::Containerd(format!(
                "the command did not finish within {}s",
                timeout.as_secs()
            )));
        }
    };
    // Deleting waits for the shim to have copied all the output.
    let deleted = delete(&mut tasks, &container_id, &exec_id).await;
    writer.abort();
    let code = status?;
    deleted?;
    let read = |p: &Path| std::fs::read(p).map_err(Error::io(format!("reading {}", p.display())));
    Ok(ExecResult {
        stdout: read(&out)?,
        stderr: read(&err)?,
        exit_code: code as i32,
    })
}

async fn delete(tasks: &mut TasksClient<Channel>, container_id: &str, exec_id: &str) -> Result<()> {
    let mut r = request(DeleteProcessRequest {
        container_id: container_id.to_string(),
        exec_id: exec_id.to_string(),
    });
    r.set_timeout(CALL_TIMEOUT);
    tasks
        .delete_process(r)
        .await
        .map_err(call("Tasks.DeleteProcess"))?;
    Ok(())
}
