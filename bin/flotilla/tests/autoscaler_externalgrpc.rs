//! The cluster autoscaler with `--cloud-provider externalgrpc`: a small
//! provider written for this test serves cluster-autoscaler's externalgrpc
//! CloudProvider API on loopback with one node group, `ext`, whose
//! machines are hollow agents it starts as processes of its own and names
//! itself. A Deployment that needs two more nodes grows the group by two
//! (to a target, asked again harmlessly each scan), the nodes the provider
//! named register and take the pods; scaled to zero, the idle nodes are
//! deleted through NodeGroupDeleteNodes and the group is back to zero.

mod common;

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hollow::{hollow_agent, node_per_pod_pool};
use common::*;
use flotilla_client::{Api, Client};
use flotilla_objects::apps::Deployment;
use flotilla_objects::core::{Node, Pod};
use flotilla_objects::nodepool::NodePool;
use flotilla_proto::externalgrpc as pb;
use pb::cloud_provider_server::{CloudProvider, CloudProviderServer};
use serde_json::json;
use tonic::{Request, Response, Status};

const TIMEOUT: Duration = Duration::from_secs(90);
const GROUP: &str = "ext";

/// The machines of the test's provider: hollow agents, killed with it.
#[derive(Default)]
struct Machines {
    target: i32,
    next: u32,
    running: BTreeMap<String, Child>,
    /// Every call, in order, as "Method args".
    calls: Vec<String>,
}

impl Drop for Machines {
    fn drop(&mut self) {
        for c in self.running.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone)]
struct TestProvider {
    m: Arc<Mutex<Machines>>,
    servers: String,
    dir: std::path::PathBuf,
}

impl TestProvider {
    fn lock(&self) -> std::sync::MutexGuard<'_, Machines> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_agent(&self, name: &str) -> Result<Child, Status> {
        hollow_agent(name, Some(GROUP), &self.servers, &self.dir)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

fn group() -> pb::NodeGroup {
    pb::NodeGroup {
        id: GROUP.into(),
        min_size: 0,
        max_size: 3,
        debug: "the test's group".into(),
    }
}

fn this_group(id: &str) -> Result<(), Status> {
    if id == GROUP {
        Ok(())
    } else {
        Err(Status::not_found(format!("no node group {id:?}")))
    }
}

#[tonic::async_trait]
impl CloudProvider for TestProvider {
    async fn node_groups(
        &self,
        _: Request<pb::NodeGroupsRequest>,
    ) -> Result<Response<pb::NodeGroupsResponse>, Status> {
        Ok(Response::new(pb::NodeGroupsResponse {
            node_groups: vec![group()],
        }))
    }

    async fn node_group_for_node(
        &self,
        r: Request<pb::NodeGroupForNodeRequest>,
    ) -> Result<Response<pb::NodeGroupForNodeResponse>, Status> {
        let name = r.into_inner().node.map(|n| n.name).unwrap_or_default();
        let ours = self.lock().running.contains_key(&name);
        Ok(Response::new(pb::NodeGroupForNodeResponse {
            node_group: Some(if ours {
                group()
            } else {
                pb::NodeGroup::default()
            }),
        }))
    }

    async fn pricing_node_price(
        &self,
        _: Request<pb::PricingNodePriceRequest>,
    ) -> Result<Response<pb::PricingNodePriceResponse>, Status> {
        Err(Status::unimplemented("no prices"))
    }

    async fn pricing_pod_price(
        &self,
        _: Request<pb::PricingPodPriceRequest>,
    ) -> Result<Response<pb::PricingPodPriceResponse>, Status> {
        Err(Status::unimplemented("no prices"))
    }

    async fn gpu_label(
        &self,
        _: Request<pb::GpuLabelRequest>,
    ) -> Result<Response<pb::GpuLabelResponse>, Status> {
        Ok(Response::new(pb::GpuLabelResponse::default()))
    }

    async fn get_available_gpu_types(
        &self,
        _: Request<pb::GetAvailableGpuTypesRequest>,
    ) -> Result<Response<pb::GetAvailableGpuTypesResponse>, Status> {
        Ok(Response::new(pb::GetAvailableGpuTypesResponse::default()))
    }

    async fn cleanup(
        &self,
        _: Request<pb::CleanupRequest>,
    ) -> Result<Response<pb::CleanupResponse>, Status> {
        Ok(Response::new(pb::CleanupResponse {}))
    }

    async fn refresh(
        &self,
        _: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        self.lock().calls.push("Refresh".into());
        Ok(Response::new(pb::RefreshResponse {}))
    }

    async fn node_group_target_size(
        &self,
        r: Request<pb::NodeGroupTargetSizeRequest>,
    ) -> Result<Response<pb::NodeGroupTargetSizeResponse>, Status> {
        this_group(&r.into_inner().id)?;
        Ok(Response::new(pb::NodeGroupTargetSizeResponse {
            target_size: self.lock().target,
        }))
    }

    async fn node_group_increase_size(
        &self,
        r: Request<pb::NodeGroupIncreaseSizeRequest>,
    ) -> Result<Response<pb::NodeGroupIncreaseSizeResponse>, Status> {
        let r = r.into_inner();
        this_group(&r.id)?;
        let mut m = self.lock();
        m.calls.push(format!("NodeGroupIncreaseSize {}", r.delta));
        if r.delta <= 0 || m.target + r.delta > group().max_size {
            return Err(Status::invalid_argument(format!(
                "delta {} from {}",
                r.delta, m.target
            )));
        }
        for _ in 0..r.delta {
            m.next += 1;
            // The provider's own names, nothing like the autoscaler's.
            let name = format!("machine-{}", m.next);
            let child = self.start_agent(&name)?;
            m.running.insert(name, child);
        }
        m.target += r.delta;
        Ok(Response::new(pb::NodeGroupIncreaseSizeResponse {}))
    }

    async fn node_group_delete_nodes(
        &self,
        r: Request<pb::NodeGroupDeleteNodesRequest>,
    ) -> Result<Response<pb::NodeGroupDeleteNodesResponse>, Status> {
        let r = r.into_inner();
        this_group(&r.id)?;
        let mut m = self.lock();
        for n in &r.nodes {
            m.calls
                .push(format!("NodeGroupDeleteNodes {} {}", n.name, n.provider_id));
            let Some(mut c) = m.running.remove(&n.name) else {
                return Err(Status::not_found(format!("{} is not in {GROUP}", n.name)));
            };
            let _ = c.kill();
            let _ = c.wait();
            m.target -= 1;
        }
        Ok(Response::new(pb::NodeGroupDeleteNodesResponse {}))
    }

    async fn node_group_decrease_target_size(
        &self,
        r: Request<pb::NodeGroupDecreaseTargetSizeRequest>,
    ) -> Result<Response<pb::NodeGroupDecreaseTargetSizeResponse>, Status> {
        let r = r.into_inner();
        this_group(&r.id)?;
        let mut m = self.lock();
        m.calls
            .push(format!("NodeGroupDecreaseTargetSize {}", r.delta));
        Err(Status::failed_precondition(
            "every machine asked for is running",
        ))
    }

    async fn node_group_nodes(
        &self,
        r: Request<pb::NodeGroupNodesRequest>,
    ) -> Result<Response<pb::NodeGroupNodesResponse>, Status> {
        this_group(&r.into_inner().id)?;
        let instances = self
            .lock()
            .running
            .keys()
            .map(|n| pb::Instance {
                id: format!("test://{n}"),
                status: Some(pb::InstanceStatus {
                    instance_state: pb::instance_status::InstanceState::InstanceRunning as i32,
                    error_info: None,
                }),
            })
            .collect();
        Ok(Response::new(pb::NodeGroupNodesResponse { instances }))
    }

    async fn node_group_template_node_info(
        &self,
        _: Request<pb::NodeGroupTemplateNodeInfoRequest>,
    ) -> Result<Response<pb::NodeGroupTemplateNodeInfoResponse>, Status> {
        Err(Status::unimplemented("the pool has its shape"))
    }

    async fn node_group_get_options(
        &self,
        _: Request<pb::NodeGroupAutoscalingOptionsRequest>,
    ) -> Result<Response<pb::NodeGroupAutoscalingOptionsResponse>, Status> {
        Err(Status::unimplemented("defaults"))
    }
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| s.phase == "Running")
}

fn in_group(n: &Node) -> bool {
    n.metadata
        .labels
        .get("flotilla.dev/nodepool")
        .map(String::as_str)
        == Some(GROUP)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_externalgrpc_provider_grows_and_shrinks_its_node_group() {
    if skip_on_etcd(
        "an_externalgrpc_provider_grows_and_shrinks_its_node_group",
        false,
    ) {
        return;
    }
    let state = tempfile::tempdir().expect("state dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let opts = Opts {
        extra_args: vec![
            "--cloud-provider".into(),
            "externalgrpc".into(),
            "--externalgrpc-address".into(),
            format!("http://{addr}"),
            "--scan-interval".into(),
            "1s".into(),
            "--scale-down-unneeded-time".into(),
            "2s".into(),
            "--scale-down-delay-after-add".into(),
            "2s".into(),
        ],
        ..Default::default()
    };
    let cluster = Cluster::start(1, opts).await;
    let provider = TestProvider {
        m: Default::default(),
        servers: cluster.endpoints(),
        dir: state.path().to_path_buf(),
    };
    let machines = provider.m.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CloudProviderServer::new(provider))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = Client::connect(&[cluster.client_addr(0)]).expect("client");
    let pools = Api::<NodePool>::all(client.clone());
    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let deploys = Api::<Deployment>::namespaced(client.clone(), "default");

    let (pool, request) = node_per_pod_pool(GROUP);
    pools.create(&pool).await.expect("create pool");
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "ext"}},
            "template": {"metadata": {"labels": {"app": "ext"}},
                "spec": {"nodeSelector": {"flotilla.dev/nodepool": GROUP},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": request, "memory": "16Mi"}}}]}}}
    }))
    .expect("deployment");
    deploys.create(&deploy).await.expect("create deployment");

    wait_for(
        TIMEOUT,
        "two machines the provider named, Ready, each running a pod",
        async || {
            let ns = nodes
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut names: Vec<String> = ns
                .items
                .iter()
                .filter(|n| in_group(n))
                .map(|n| n.metadata.name.clone())
                .collect();
            names.sort();
            let ps = pods
                .list(&flotilla_client::ListParams::default().labels("app=ext"))
                .await
                .map_err(|e| e.to_string())?;
            let run = ps.items.iter().filter(|p| running(p)).count();
            let st = pools
                .get(GROUP)
                .await
                .map_err(|e| e.to_string())?
                .status
                .unwrap_or_default();
            if names == ["machine-1", "machine-2"]
                && run == 2
                && st.creating.is_empty()
                && st.target_size == Some(2)
            {
                Ok(())
            } else {
                Err(format!("nodes {names:?}, {run} running, status {st:?}"))
            }
        },
    )
    .await;
    {
        let m = machines.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(m.target, 2);
        let grown: i32 = m
            .calls
            .iter()
            .filter_map(|c| c.strip_prefix("NodeGroupIncreaseSize "))
            .map(|d| d.parse::<i32>().expect("delta"))
            .sum();
        assert_eq!(grown, 2, "asked for two machines in all: {:?}", m.calls);
        assert!(m.calls.iter().any(|c| c == "Refresh"), "{:?}", m.calls);
    }

    // Nothing to run: both nodes are idle and go through the provider.
    deploys
        .patch("ext", &json!({"spec": {"replicas": 0}}))
        .await
        .expect("scale to zero");
    wait_for(TIMEOUT, "the group back to zero machines", async || {
        let ns = nodes
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let left = ns.items.iter().filter(|n| in_group(n)).count();
        let st = pools
            .get(GROUP)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        let target = machines.lock().unwrap_or_else(|e| e.into_inner()).target;
        if left == 0 && target == 0 && st.target_size == Some(0) && st.deleting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{left} nodes, provider target {target}, status {st:?}"
            ))
        }
    })
    .await;
    let m = machines.lock().unwrap_or_else(|e| e.into_inner());
    let mut deleted: Vec<&str> = m
        .calls
        .iter()
        .filter(|c| c.starts_with("NodeGroupDeleteNodes"))
        .map(String::as_str)
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "NodeGroupDeleteNodes machine-1 test://machine-1",
            "NodeGroupDeleteNodes machine-2 test://machine-2"
        ],
        "each machine deleted once, by its name and provider ID: {:?}",
        m.calls
    );
    drop(m);
    server.abort();
}
