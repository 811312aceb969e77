//! A client of the Container Runtime Interface (runtime.v1, as containerd
//! 1.6 and later serve it) over containerd's unix socket: the calls the
//! agent makes, each turned into the agent's [`Error`] with the call's name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{Error, Result};
use crate::metrics::{RuntimeOps, Timed};

pub use cri::{
    Container, ContainerConfig, ContainerState, ContainerStatus, PodSandbox, PodSandboxConfig,
    PodSandboxState,
};

/// Longest a CRI call other than a pull or a stop may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to a CRI runtime. Cheap to clone.
#[derive(Clone)]
pub struct Cri {
    channel: Channel,
    /// `kubelet_runtime_operations_*`, once the agent's metrics are set.
    ops: Option<RuntimeOps>,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// What an exec run to completion gave.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Cri {
    /// Connect to the runtime's socket (lazily: the first call connects).
    pub async fn connect(socket: &Path) -> Result<Cri> {
        let path: PathBuf = socket.to_path_buf();
        // The URI is not used: every connection goes to the socket.
        let channel =
            Endpoint::from_static("http://[::1]:50051")
                .timeout(CALL_TIMEOUT)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|e| {
                    Error::Containerd(format!("connecting to {}: {e}", socket.display()))
                })?;
        Ok(Cri {
            ops: None,
            channel: channel.clone(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// Time every call from now on into `kubelet_runtime_operations_*`.
    pub fn observe(&mut self, ops: RuntimeOps) {
        self.ops = Some(ops);
    }

    /// The connection to the runtime's socket, for containerd's own API.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// "containerd 1.6.20~ds1"
    pub async fn version(&mut self) -> Result<String> {
        let v = self
            .runtime
            .version(cri::VersionRequest::default())
            .timed(&self.ops, "Version")
            .await
            .map_err(Error::runtime("Version"))?
            .into_inner();
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version))
    }

    /// The image's id if present.
    pub async fn image_id(&mut self, image: &str) -> Result<Option<String>> {
        let r = self
            .images
            .image_status(cri::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .timed(&self.ops, "ImageStatus")
            .await
            .map_err(Error::runtime("ImageStatus"))?
            .into_inner();
        Ok(r.image.map(|i| i.id))
    }

    /// Pull an image; its reference (digest) on success.
    pub async fn pull_image(
        &mut self,
        image: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String> {
        let mut req = tonic::Request::new(cri::PullImageRequest {
            image: Some(image_spec(image)),
            auth,
            sandbox_config: None,
        });
        req.set_timeout(Duration::from_secs(600));
        let r = self
            .images
            .pull_image(req)
            .timed(&self.ops, "PullImage")
            .await
            .map_err(Error::runtime("PullImage"))?
            .into_inner();
        Ok(r.image_ref)
    }

    pub async fn run_pod_sandbox(&mut self, config: PodSandboxConfig) -> Result<String> {
        let mut req = tonic::Request::new(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        });
        req.set_timeout(Duration::from_secs(300));
        Ok(self
            .runtime
            .run_pod_sandbox(req)
            .timed(&self.ops, "RunPodSandbox")
            .await
            .map_err(Error::runtime("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    pub async fn stop_pod_sandbox(&mut self, id: &str) -> Result<()> {
        self.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .timed(&self.ops, "StopPodSandbox")
            .await
            .map_err(Error::runtime("StopPodSandbox"))?;
        Ok(())
    }

    pub async fn remove_pod_sandbox(&mut self, id: &str) -> Result<()> {
        self.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .timed(&self.ops, "RemovePodSandbox")
            .await
            .map_err(Error::runtime("RemovePodSandbox"))?;
        Ok(())
    }

    /// The sandbox's IP (empty with the node's network) and whether it is ready.
    pub async fn pod_sandbox_status(&mut self, id: &str) -> Result<(String, bool)> {
        let s = self
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .timed(&self.ops, "PodSandboxStatus")
            .await
            .map_err(Error::runtime("PodSandboxStatus"))?
            .into_inner()
            .status
            .unwrap_or_default();
        let ip = s.network.map(|n| n.ip).unwrap_or_default();
        Ok((ip, s.state == PodSandboxState::SandboxReady as i32))
    }

    /// The sandbox's network namespace (a path the agent can open), from
    /// the runtime's verbose status: the namespace in its OCI spec, or its
    /// process's.
    pub async fn pod_netns(&mut self, id: &str) -> Result<Option<PathBuf>> {
        let info = self
            .runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .timed(&self.ops, "PodSandboxStatus")
            .await
            .map_err(Error::runtime("PodSandboxStatus"))?
            .into_inner()
            .info;
        let Some(v) = info
            .get("info")
            .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        else {
            return Ok(None);
        };
        let from_spec = v
            .pointer("/runtimeSpec/linux/namespaces")
            .and_then(|n| n.as_array())
            .and_then(|ns| {
                ns.iter()
                    .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))
            })
            .and_then(|n| n.get("path").and_then(|p| p.as_str()))
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let from_pid = v
            .get("pid")
            .and_then(|p| p.as_u64())
            .filter(|p| *p > 0)
            .map(|p| PathBuf::from(format!("/proc/{p}/ns/net")));
        Ok(from_spec.or(from_pid))
    }

    /// Sandboxes with all these labels.
    pub async fn list_pod_sandboxes(
        &mut self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<PodSandbox>> {
        Ok(self
            .runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: labels,
                    ..Default::default()
                }),
            })
            .timed(&self.ops, "ListPodSandbox")
            .await
            .map_err(Error::runtime("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    pub async fn create_container(
        &mut self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String> {
        Ok(self
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .timed(&self.ops, "CreateContainer")
            .await
            .map_err(Error::runtime("CreateContainer"))?
            .into_inner()
            .container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> Result<()> {
        self.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .timed(&self.ops, "StartContainer")
            .await
            .map_err(Error::runtime("StartContainer"))?;
        Ok(())
    }

    /// Stop: the stop signal, then SIGKILL after `grace_seconds`.
    pub async fn stop_container(&mut self, id: &str, grace_seconds: i64) -> Result<()> {
        let mut req = tonic::Request::new(cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_seconds,
        });
        req.set_timeout(Duration::from_secs(grace_seconds.max(0) as u64) + CALL_TIMEOUT);
        self.runtime
            .stop_container(req)
            .timed(&self.ops, "StopContainer")
            .await
            .map_err(Error::runtime("StopContainer"))?;
        Ok(())
    }

    pub async fn remove_container(&mut self, id: &str) -> Result<()> {
        self.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .timed(&self.ops, "RemoveContainer")
            .await
            .map_err(Error::runtime("RemoveContainer"))?;
        Ok(())
    }

    /// Containers of one sandbox (every sandbox: empty id).
    pub async fn list_containers(&mut self, sandbox_id: &str) -> Result<Vec<Container>> {
        Ok(self
            .runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sandbox_id.to_string(),
                    ..Default::default()
                }),
            })
            .timed(&self.ops, "ListContainers")
            .await
            .map_err(Error::runtime("ListContainers"))?
            .into_inner()
            .containers)
    }

    pub async fn container_status(&mut self, id: &str) -> Result<ContainerStatus> {
        self.runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .timed(&self.ops, "ContainerStatus")
            .await
            .map_err(Error::runtime("ContainerStatus"))?
            .into_inner()
            .status
            .ok_or_else(|| Error::Containerd(format!("container {id} has no status")))
    }

    /// Run a command in a container to completion (probes, `flt exec`).
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult> {
        let mut req = tonic::Request::new(cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd,
            timeout: timeout.as_secs() as i64,
        });
        req.set_timeout(timeout + Duration::from_secs(5));
        let r = self
            .runtime
            .exec_sync(req)
            .timed(&self.ops, "ExecSync")
            .await
            .map_err(Error::runtime("ExecSync"))?
            .into_inner();
        Ok(ExecResult {
            stdout: r.stdout,
            stderr: r.stderr,
            exit_code: r.exit_code,
        })
    }
}

impl Cri {
    /// The streaming URL for the standard input of container `id`
    /// (Attach, stdin only: output comes from the container's log).
    pub async fn attach_stdin(&mut self, id: &str, tty: bool) -> Result<String> {
        let mut req = tonic::Request::new(cri::AttachRequest {
            container_id: id.to_string(),
            stdin: true,
            tty,
            stdout: false,
            stderr: false,
        });
        req.set_timeout(Duration::from_secs(30));
        Ok(self
            .runtime
            .attach(req)
            .timed(&self.ops, "Attach")
            .await
            .map_err(Error::runtime("Attach"))?
            .into_inner()
            .url)
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}
