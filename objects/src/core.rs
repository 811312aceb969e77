//! The core group (`v1`): Namespace, Node, Pod, ReplicationController,
//! Service, Endpoints, ConfigMap, Secret and Event.

use std::collections::BTreeMap;

use crate::meta::{object, resource, Condition, IntOrString, ObjectMeta, Time};
use crate::registry;

// ---------------------------------------------------------------- Namespace

object! {
    /// A namespace: a scope for names.
    pub struct Namespace {
        /// "v1"
        pub api_version: String,
        /// "Namespace"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: NamespaceSpec,
        /// Observed state.
        pub status: Option<NamespaceStatus>,
    }
}
resource!(Namespace, registry::NAMESPACE);

object! {
    /// Desired state of a namespace.
    pub struct NamespaceSpec {
        /// Must be empty before the namespace is removed.
        pub finalizers: Vec<String>,
    }
}

object! {
    /// Observed state of a namespace.
    pub struct NamespaceStatus {
        /// "Active" or "Terminating".
        pub phase: String,
    }
}

// --------------------------------------------------------------------- Node

object! {
    /// A machine that runs pods.
    pub struct Node {
        /// "v1"
        pub api_version: String,
        /// "Node"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: NodeSpec,
        /// Observed state.
        pub status: Option<NodeStatus>,
    }
}
resource!(Node, registry::NODE);

object! {
    /// Desired state of a node.
    pub struct NodeSpec {
        /// Pod IP range of this node.
        #[serde(rename = "podCIDR")]
        pub pod_cidr: String,
        /// Pod IP ranges of this node (first equals `podCIDR`).
        #[serde(rename = "podCIDRs")]
        pub pod_cidrs: Vec<String>,
        /// Whether new pods may not be scheduled here (cordoned).
        pub unschedulable: bool,
        /// Taints repelling pods that do not tolerate them.
        pub taints: Vec<Taint>,
        /// Provider-specific id of the machine.
        #[serde(rename = "providerID")]
        pub provider_id: String,
    }
}

object! {
    /// A taint: pods that do not tolerate it are not scheduled (NoSchedule),
    /// avoided (PreferNoSchedule) or evicted (NoExecute).
    pub struct Taint {
        /// Taint key.
        pub key: String,
        /// Taint value.
        pub value: String,
        /// NoSchedule, PreferNoSchedule or NoExecute.
        pub effect: String,
        /// When a NoExecute taint was added.
        pub time_added: Option<Time>,
    }
}

object! {
    /// Observed state of a node.
    pub struct NodeStatus {
        /// Total resources (quantities by resource name).
        pub capacity: BTreeMap<String, String>,
        /// Resources available to pods.
        pub allocatable: BTreeMap<String, String>,
        /// Conditions such as Ready.
        pub conditions: Vec<NodeCondition>,
        /// Addresses of the node.
        pub addresses: Vec<NodeAddress>,
        /// Versions and identity of the machine.
        pub node_info: NodeSystemInfo,
        /// Ports the node's agent serves on.
        pub daemon_endpoints: NodeDaemonEndpoints,
    }
}

object! {
    /// Ports the node's agent serves on.
    pub struct NodeDaemonEndpoints {
        /// The agent's pod streams (logs, exec), on the node's InternalIP.
        pub kubelet_endpoint: DaemonEndpoint,
    }
}

object! {
    /// A port.
    pub struct DaemonEndpoint {
        /// Port number.
        #[serde(rename = "Port")]
        pub port: i32,
    }
}

object! {
    /// A node condition.
    pub struct NodeCondition {
        /// Ready, MemoryPressure, DiskPressure, PIDPressure, NetworkUnavailable.
        #[serde(rename = "type")]
        pub type_: String,
        /// "True", "False" or "Unknown".
        pub status: String,
        /// Last time the kubelet reported it.
        pub last_heartbeat_time: Option<Time>,
        /// Last time the status changed.
        pub last_transition_time: Option<Time>,
        /// Machine-readable reason.
        pub reason: String,
        /// Human-readable message.
        pub message: String,
    }
}

object! {
    /// An address of a node.
    pub struct NodeAddress {
        /// Hostname, InternalIP, ExternalIP, ...
        #[serde(rename = "type")]
        pub type_: String,
        /// The address.
        pub address: String,
    }
}

object! {
    /// Versions and identity of a node's machine.
    pub struct NodeSystemInfo {
        /// Version of the node agent.
        pub kubelet_version: String,
        /// OS image name.
        pub os_image: String,
        /// Kernel version.
        pub kernel_version: String,
        /// Container runtime and version.
        pub container_runtime_version: String,
        /// CPU architecture.
        pub architecture: String,
        /// Operating system.
        pub operating_system: String,
        /// Machine id.
        #[serde(rename = "machineID")]
        pub machine_id: String,
    }
}

// ---------------------------------------------------------------------- Pod

object! {
    /// A group of containers run together on one node.
    pub struct Pod {
        /// "v1"
        pub api_version: String,
        /// "Pod"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: PodSpec,
        /// Observed state.
        pub status: Option<PodStatus>,
    }
}
resource!(Pod, registry::POD);

object! {
    /// The metadata and spec of pods a controller creates.
    pub struct PodTemplateSpec {
        /// Metadata of the pods.
        pub metadata: ObjectMeta,
        /// Spec of the pods.
        pub spec: PodSpec,
    }
}

object! {
    /// Desired state of a pod.
    pub struct PodSpec {
        /// The containers (at least one).
        pub containers: Vec<Container>,
        /// Containers run to completion, in order, before `containers`.
        pub init_containers: Vec<Container>,
        /// Always, OnFailure or Never.
        pub restart_policy: String,
        /// The node the pod is bound to.
        pub node_name: String,
        /// Labels a node must have to run the pod.
        pub node_selector: BTreeMap<String, String>,
        /// Seconds between the stop signal and the kill.
        pub termination_grace_period_seconds: Option<i64>,
        /// Seconds the pod may be active before it is failed.
        pub active_deadline_seconds: Option<i64>,
        /// ClusterFirst, ClusterFirstWithHostNet, Default or None.
        pub dns_policy: String,
        /// Name servers, searches and options added to (with dnsPolicy
        /// None: making) the pod's /etc/resolv.conf.
        pub dns_config: Option<PodDnsConfig>,
        /// Lines added to the pod's /etc/hosts.
        pub host_aliases: Vec<HostAlias>,
        /// Whether the pod uses the node's network namespace.
        pub host_network: bool,
        /// Hostname of the pod.
        pub hostname: String,
        /// Subdomain of the pod's hostname.
        pub subdomain: String,
        /// Service account the pod runs as ("default" when not set).
        pub service_account_name: String,
        /// Whether the agent mounts a token of the service account at
        /// /var/run/secrets/kubernetes.io/serviceaccount (overrides the
        /// service account's own setting; true when neither says).
        pub automount_service_account_token: Option<bool>,
        /// Scheduler responsible for the pod.
        pub scheduler_name: String,
        /// Priority of the pod.
        pub priority: Option<i32>,
        /// Volumes the containers may mount.
        pub volumes: Vec<Volume>,
        /// Taints the pod tolerates.
        pub tolerations: Vec<Toleration>,
        /// Name of the pod's PriorityClass (resolved into `priority` at admission).
        pub priority_class_name: String,
        /// PreemptLowerPriority or Never (from the PriorityClass at admission).
        pub preemption_policy: String,
        /// Node and pod (anti-)affinity.
        pub affinity: Option<crate::scheduling::Affinity>,
        /// How the pod's replicas spread across topology domains.
        pub topology_spread_constraints: Vec<crate::scheduling::TopologySpreadConstraint>,
    }
}

object! {
    /// A container of a pod.
    pub struct Container {
        /// Name, unique in the pod (DNS label).
        pub name: String,
        /// Image reference.
        pub image: String,
        /// Entrypoint (replaces the image's).
        pub command: Vec<String>,
        /// Arguments (replace the image's).
        pub args: Vec<String>,
        /// Working directory.
        pub working_dir: String,
        /// Ports the container exposes.
        pub ports: Vec<ContainerPort>,
        /// Environment variables.
        pub env: Vec<EnvVar>,
        /// Resource requests and limits.
        pub resources: ResourceRequirements,
        /// Volumes mounted in the container.
        pub volume_mounts: Vec<VolumeMount>,
        /// Restarts the container when it fails.
        pub liveness_probe: Option<Probe>,
        /// Removes the pod from service endpoints when it fails.
        pub readiness_probe: Option<Probe>,
        /// Holds the other probes until it succeeds.
        pub startup_probe: Option<Probe>,
        /// Always, IfNotPresent or Never.
        pub image_pull_policy: String,
        /// Security settings.
        pub security_context: Option<crate::security::SecurityContext>,
        /// Keep a standard input open for the main process (`flt attach -i`).
        pub stdin: bool,
        /// Close that input after the first attach ends.
        pub stdin_once: bool,
        /// Give the main process a terminal.
        pub tty: bool,
    }
}

object! {
    /// A port of a container.
    pub struct ContainerPort {
        /// Optional name (IANA service name), referenced by services.
        pub name: String,
        /// Port in the container.
        pub container_port: i32,
        /// Port on the node, if any.
        pub host_port: i32,
        /// TCP, UDP or SCTP.
        pub protocol: String,
    }
}

object! {
    /// An environment variable.
    pub struct EnvVar {
        /// Variable name.
        pub name: String,
        /// Literal value.
        pub value: String,
        /// Value read from elsewhere.
        pub value_from: Option<EnvVarSource>,
    }
}

object! {
    /// Where an environment variable's value comes from (exactly one).
    pub struct EnvVarSource {
        /// A key of a config map.
        pub config_map_key_ref: Option<KeySelector>,
        /// A key of a secret.
        pub secret_key_ref: Option<KeySelector>,
        /// A field of the pod.
        pub field_ref: Option<ObjectFieldSelector>,
    }
}

object! {
    /// A key of a config map or secret.
    pub struct KeySelector {
        /// Name of the config map or secret.
        pub name: String,
        /// The key.
        pub key: String,
        /// Whether the key or object may be absent.
        pub optional: Option<bool>,
    }
}

object! {
    /// A field of the pod, such as `metadata.name` or `status.podIP`.
    pub struct ObjectFieldSelector {
        /// Path of the field.
        pub field_path: String,
    }
}

object! {
    /// Resource requests and limits (quantities by resource name).
    pub struct ResourceRequirements {
        /// Maximum allowed.
        pub limits: BTreeMap<String, String>,
        /// Minimum guaranteed (used for scheduling).
        pub requests: BTreeMap<String, String>,
    }
}

object! {
    /// A volume mounted in a container.
    pub struct VolumeMount {
        /// Name of a volume of the pod.
        pub name: String,
        /// Path in the container.
        pub mount_path: String,
        /// Whether the mount is read-only.
        pub read_only: bool,
        /// Path within the volume to mount instead of its root.
        pub sub_path: String,
    }
}

object! {
    /// A health check of a container (exactly one handler).
    pub struct Probe {
        /// Runs a command; success is exit code 0.
        pub exec: Option<ExecAction>,
        /// HTTP GET; success is a 2xx or 3xx status.
        pub http_get: Option<HttpGetAction>,
        /// TCP connect.
        pub tcp_socket: Option<TcpSocketAction>,
        /// Delay after the container started.
        pub initial_delay_seconds: i32,
        /// Interval between probes.
        pub period_seconds: i32,
        /// Timeout of one probe.
        pub timeout_seconds: i32,
        /// Consecutive successes to be considered successful.
        pub success_threshold: i32,
        /// Consecutive failures to be considered failed.
        pub failure_threshold: i32,
    }
}

object! {
    /// A command run in the container.
    pub struct ExecAction {
        /// The command and its arguments.
        pub command: Vec<String>,
    }
}

object! {
    /// An HTTP GET against the container.
    pub struct HttpGetAction {
        /// Request path.
        pub path: String,
        /// Port number or name.
        pub port: IntOrString,
        /// Host (defaults to the pod IP).
        pub host: String,
        /// HTTP or HTTPS.
        pub scheme: String,
    }
}

object! {
    /// A TCP connection to the container.
    pub struct TcpSocketAction {
        /// Port number or name.
        pub port: IntOrString,
        /// Host (defaults to the pod IP).
        pub host: String,
    }
}

object! {
    /// A volume of a pod (a name and exactly one source).
    pub struct Volume {
        /// Name, unique in the pod (DNS label).
        pub name: String,
        /// A scratch directory living as long as the pod.
        pub empty_dir: Option<EmptyDirVolumeSource>,
        /// The keys of a config map as files.
        pub config_map: Option<ConfigMapVolumeSource>,
        /// The keys of a secret as files.
        pub secret: Option<SecretVolumeSource>,
        /// A path of the node.
        pub host_path: Option<HostPathVolumeSource>,
    }
}

object! {
    /// A scratch directory.
    pub struct EmptyDirVolumeSource {
        /// "" (node disk) or "Memory".
        pub medium: String,
        /// Maximum size (quantity).
        pub size_limit: String,
    }
}

object! {
    /// A config map as files.
    pub struct ConfigMapVolumeSource {
        /// Name of the config map.
        pub name: String,
        /// Keys to project (all when empty).
        pub items: Vec<KeyToPath>,
        /// File mode bits (0..=0o777).
        pub default_mode: Option<i32>,
        /// Whether the config map may be absent.
        pub optional: Option<bool>,
    }
}

object! {
    /// A secret as files.
    pub struct SecretVolumeSource {
        /// Name of the secret.
        pub secret_name: String,
        /// Keys to project (all when empty).
        pub items: Vec<KeyToPath>,
        /// File mode bits (0..=0o777).
        pub default_mode: Option<i32>,
        /// Whether the secret may be absent.
        pub optional: Option<bool>,
    }
}

object! {
    /// A key projected to a file.
    pub struct KeyToPath {
        /// The key.
        pub key: String,
        /// Relative file path.
        pub path: String,
        /// File mode bits.
        pub mode: Option<i32>,
    }
}

object! {
    /// A path of the node.
    pub struct HostPathVolumeSource {
        /// The path.
        pub path: String,
        /// "", DirectoryOrCreate, Directory, FileOrCreate, File, Socket,
        /// CharDevice or BlockDevice.
        #[serde(rename = "type")]
        pub type_: String,
    }
}

object! {
    /// A taint the pod tolerates.
    pub struct Toleration {
        /// Taint key (empty with Exists: every taint).
        pub key: String,
        /// Equal (default) or Exists.
        pub operator: String,
        /// Taint value for Equal.
        pub value: String,
        /// Taint effect (empty: every effect).
        pub effect: String,
        /// For NoExecute: how long the pod stays once tainted.
        pub toleration_seconds: Option<i64>,
    }
}

object! {
    /// Observed state of a pod.
    pub struct PodStatus {
        /// Pending, Running, Succeeded, Failed or Unknown.
        pub phase: String,
        /// Conditions such as Ready and PodScheduled.
        pub conditions: Vec<PodCondition>,
        /// Human-readable message.
        pub message: String,
        /// Machine-readable reason.
        pub reason: String,
        /// IP of the node.
        #[serde(rename = "hostIP")]
        pub host_ip: String,
        /// IP of the pod.
        #[serde(rename = "podIP")]
        pub pod_ip: String,
        /// IPs of the pod.
        #[serde(rename = "podIPs")]
        pub pod_ips: Vec<PodIp>,
        /// When the node accepted the pod.
        pub start_time: Option<Time>,
        /// Status of the init containers.
        pub init_container_statuses: Vec<ContainerStatus>,
        /// Status of the containers.
        pub container_statuses: Vec<ContainerStatus>,
        /// Guaranteed, Burstable or BestEffort.
        pub qos_class: String,
        /// The node a preempting pod waits for (set by the scheduler).
        pub nominated_node_name: String,
    }
}

object! {
    /// A pod condition.
    pub struct PodCondition {
        /// PodScheduled, Initialized, ContainersReady or Ready.
        #[serde(rename = "type")]
        pub type_: String,
        /// "True", "False" or "Unknown".
        pub status: String,
        /// Last time it was probed.
        pub last_probe_time: Option<Time>,
        /// Last time the status changed.
        pub last_transition_time: Option<Time>,
        /// Machine-readable reason.
        pub reason: String,
        /// Human-readable message.
        pub message: String,
    }
}

object! {
    /// An IP of a pod.
    pub struct PodIp {
        /// The address.
        pub ip: String,
    }
}

object! {
    /// Observed state of a container.
    pub struct ContainerStatus {
        /// Container name.
        pub name: String,
        /// Whether the readiness probe passes.
        pub ready: bool,
        /// Number of restarts.
        pub restart_count: i32,
        /// Image it runs.
        pub image: String,
        /// Resolved image id.
        #[serde(rename = "imageID")]
        pub image_id: String,
        /// Runtime id of the container.
        #[serde(rename = "containerID")]
        pub container_id: String,
        /// Whether it started (startup probe passed).
        pub started: Option<bool>,
        /// Current state.
        pub state: ContainerState,
        /// State of the previous run.
        pub last_state: ContainerState,
    }
}

object! {
    /// The state of a container: at most one of the three.
    pub struct ContainerState {
        /// Not running yet.
        pub waiting: Option<ContainerStateWaiting>,
        /// Running.
        pub running: Option<ContainerStateRunning>,
        /// Exited.
        pub terminated: Option<ContainerStateTerminated>,
    }
}

object! {
    /// A container not running yet.
    pub struct ContainerStateWaiting {
        /// Why, e.g. ContainerCreating, CrashLoopBackOff, ImagePullBackOff.
        pub reason: String,
        /// Details.
        pub message: String,
    }
}

object! {
    /// A running container.
    pub struct ContainerStateRunning {
        /// When it started.
        pub started_at: Option<Time>,
    }
}

object! {
    /// An exited container.
    pub struct ContainerStateTerminated {
        /// Exit code.
        pub exit_code: i32,
        /// Signal that killed it.
        pub signal: i32,
        /// Why, e.g. Completed, Error, OOMKilled.
        pub reason: String,
        /// Details.
        pub message: String,
        /// When it started.
        pub started_at: Option<Time>,
        /// When it exited.
        pub finished_at: Option<Time>,
    }
}

// ---------------------------------------------------- ReplicationController

object! {
    /// Keeps a number of pods matching an equality selector running.
    pub struct ReplicationController {
        /// "v1"
        pub api_version: String,
        /// "ReplicationController"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: ReplicationControllerSpec,
        /// Observed state.
        pub status: Option<ReplicationControllerStatus>,
    }
}
resource!(ReplicationController, registry::REPLICATION_CONTROLLER);

object! {
    /// Desired state of a replication controller.
    pub struct ReplicationControllerSpec {
        /// Desired number of pods (default 1).
        pub replicas: Option<i32>,
        /// Labels the pods must have (default: the template's labels).
        pub selector: BTreeMap<String, String>,
        /// Template of the pods.
        pub template: Option<PodTemplateSpec>,
        /// Seconds a pod must be ready to count as available.
        pub min_ready_seconds: i32,
    }
}

object! {
    /// Observed state of a replication controller.
    pub struct ReplicationControllerStatus {
        /// Pods matching the selector.
        pub replicas: i32,
        /// Pods with all the template's labels.
        pub fully_labeled_replicas: i32,
        /// Ready pods.
        pub ready_replicas: i32,
        /// Available pods.
        pub available_replicas: i32,
        /// Generation last acted on.
        pub observed_generation: i64,
        /// Conditions.
        pub conditions: Vec<Condition>,
    }
}

// ------------------------------------------------------------------ Service

object! {
    /// A stable address for a set of pods.
    pub struct Service {
        /// "v1"
        pub api_version: String,
        /// "Service"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Desired state.
        pub spec: ServiceSpec,
        /// Observed state.
        pub status: Option<ServiceStatus>,
    }
}
resource!(Service, registry::SERVICE);

object! {
    /// Desired state of a service.
    pub struct ServiceSpec {
        /// ClusterIP, NodePort, LoadBalancer or ExternalName.
        #[serde(rename = "type")]
        pub type_: String,
        /// Labels of the pods behind the service.
        pub selector: BTreeMap<String, String>,
        /// Ports of the service.
        pub ports: Vec<ServicePort>,
        /// Virtual IP ("None" for a headless service; allocated when empty).
        #[serde(rename = "clusterIP")]
        pub cluster_ip: String,
        /// Virtual IPs.
        #[serde(rename = "clusterIPs")]
        pub cluster_ips: Vec<String>,
        /// DNS name an ExternalName service aliases.
        pub external_name: String,
        /// Extra IPs the service accepts traffic on.
        #[serde(rename = "externalIPs")]
        pub external_ips: Vec<String>,
        /// None or ClientIP.
        pub session_affinity: String,
        /// Settings of ClientIP affinity.
        pub session_affinity_config: Option<SessionAffinityConfig>,
        /// Cluster or Local: where traffic from outside the cluster (node
        /// ports, load balancer and external addresses) may go.
        pub external_traffic_policy: String,
        /// Cluster or Local: where traffic from inside the cluster (the
        /// cluster IP) may go.
        pub internal_traffic_policy: String,
        /// Requested load balancer IP.
        #[serde(rename = "loadBalancerIP")]
        pub load_balancer_ip: String,
        /// Whether not-ready pods are published too.
        pub publish_not_ready_addresses: bool,
    }
}

object! {
    /// Settings of a service's session affinity.
    pub struct SessionAffinityConfig {
        /// ClientIP affinity.
        #[serde(rename = "clientIP")]
        pub client_ip: Option<ClientIpConfig>,
    }
}

object! {
    /// ClientIP affinity.
    pub struct ClientIpConfig {
        /// How long a client sticks to its endpoint (default 10800, at
        /// most 86400).
        pub timeout_seconds: Option<i32>,
    }
}

/// The default of `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: i32 = 10800;

impl ServiceSpec {
    /// The ClientIP affinity timeout, when the service asks for affinity.
    pub fn affinity_timeout(&self) -> Option<i32> {
        (self.session_affinity == "ClientIP").then(|| {
            self.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
        })
    }
}

object! {
    /// A port of a service.
    pub struct ServicePort {
        /// Name (required when there is more than one port).
        pub name: String,
        /// TCP, UDP or SCTP.
        pub protocol: String,
        /// Port of the service.
        pub port: i32,
        /// Port number or name on the pods (default: `port`).
        pub target_port: Option<IntOrString>,
        /// Port on every node (NodePort and LoadBalancer).
        pub node_port: i32,
    }
}

object! {
    /// Observed state of a service.
    pub struct ServiceStatus {
        /// The load balancer, if any.
        pub load_balancer: LoadBalancerStatus,
    }
}

object! {
    /// A load balancer's addresses.
    pub struct LoadBalancerStatus {
        /// Ingress points.
        pub ingress: Vec<LoadBalancerIngress>,
    }
}

object! {
    /// An ingress point of a load balancer.
    pub struct LoadBalancerIngress {
        /// IP address.
        pub ip: String,
        /// DNS name.
        pub hostname: String,
    }
}

// ---------------------------------------------------------------- Endpoints

object! {
    /// The addresses behind a service.
    pub struct Endpoints {
        /// "v1"
        pub api_version: String,
        /// "Endpoints"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Sets of addresses sharing ports.
        pub subsets: Vec<EndpointSubset>,
    }
}
resource!(Endpoints, registry::ENDPOINTS);

object! {
    /// Addresses and the ports they all serve.
    pub struct EndpointSubset {
        /// Ready addresses.
        pub addresses: Vec<EndpointAddress>,
        /// Addresses not ready.
        pub not_ready_addresses: Vec<EndpointAddress>,
        /// Ports.
        pub ports: Vec<EndpointPort>,
    }
}

object! {
    /// One address of an endpoint.
    pub struct EndpointAddress {
        /// IP address.
        pub ip: String,
        /// Hostname.
        pub hostname: String,
        /// Node hosting it.
        pub node_name: String,
        /// The object (pod) behind it.
        pub target_ref: Option<ObjectReference>,
    }
}

object! {
    /// A reference to an object.
    pub struct ObjectReference {
        /// Kind.
        pub kind: String,
        /// Namespace.
        pub namespace: String,
        /// Name.
        pub name: String,
        /// uid.
        pub uid: String,
    }
}

object! {
    /// A port of an endpoint.
    pub struct EndpointPort {
        /// Name (the service port's name).
        pub name: String,
        /// Port number.
        pub port: i32,
        /// TCP, UDP or SCTP.
        pub protocol: String,
    }
}

// ---------------------------------------------------------------- ConfigMap

object! {
    /// Configuration data.
    pub struct ConfigMap {
        /// "v1"
        pub api_version: String,
        /// "ConfigMap"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// UTF-8 data.
        pub data: BTreeMap<String, String>,
        /// Binary data, base64-encoded.
        pub binary_data: BTreeMap<String, String>,
        /// Whether the data may no longer change.
        pub immutable: Option<bool>,
    }
}
resource!(ConfigMap, registry::CONFIG_MAP);

// ------------------------------------------------------------------- Secret

object! {
    /// Secret data.
    pub struct Secret {
        /// "v1"
        pub api_version: String,
        /// "Secret"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Values, base64-encoded.
        pub data: BTreeMap<String, String>,
        /// Plain values, merged into `data` on admission.
        pub string_data: BTreeMap<String, String>,
        /// Opaque, kubernetes.io/tls, ...
        #[serde(rename = "type")]
        pub type_: String,
        /// Whether the data may no longer change.
        pub immutable: Option<bool>,
    }
}
resource!(Secret, registry::SECRET);

// ----------------------------------------------------------- ServiceAccount

object! {
    /// An identity for the programs of pods: tokens the masters sign
    /// authenticate as `system:serviceaccount:NAMESPACE:NAME`.
    pub struct ServiceAccount {
        /// "v1"
        pub api_version: String,
        /// "ServiceAccount"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// Whether pods of this account get a token mounted by default.
        pub automount_service_account_token: Option<bool>,
        /// Secrets pods of this account may use (kept, not enforced).
        pub secrets: Vec<ObjectReference>,
        /// Image pull secrets of pods of this account (kept, not used).
        pub image_pull_secrets: Vec<LocalObjectReference>,
    }
}

object! {
    /// A reference to an object of the same namespace, by name.
    pub struct LocalObjectReference {
        /// Its name.
        pub name: String,
    }
}
resource!(ServiceAccount, registry::SERVICE_ACCOUNT);

// -------------------------------------------------------------------- Event

object! {
    /// A report of something that happened to an object.
    pub struct Event {
        /// "v1"
        pub api_version: String,
        /// "Event"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// The object it is about.
        pub involved_object: EventObjectReference,
        /// Machine-readable reason, e.g. Scheduled.
        pub reason: String,
        /// Human-readable message.
        pub message: String,
        /// Normal or Warning.
        #[serde(rename = "type")]
        pub type_: String,
        /// How many times it happened.
        pub count: i32,
        /// First time it happened.
        pub first_timestamp: Option<Time>,
        /// Last time it happened.
        pub last_timestamp: Option<Time>,
        /// Who reported it.
        pub source: EventSource,
        /// Controller that reported it.
        pub reporting_component: String,
    }
}
resource!(Event, registry::EVENT);

object! {
    /// The object an event is about.
    pub struct EventObjectReference {
        /// Kind.
        pub kind: String,
        /// Namespace.
        pub namespace: String,
        /// Name.
        pub name: String,
        /// uid.
        pub uid: String,
        /// apiVersion.
        pub api_version: String,
        /// resourceVersion when the event happened.
        pub resource_version: String,
        /// Part of the object, e.g. `spec.containers{web}`.
        pub field_path: String,
    }
}

object! {
    /// Who reported an event.
    pub struct EventSource {
        /// Component, e.g. default-scheduler.
        pub component: String,
        /// Node.
        pub host: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_reads_unknown_fields_of_a_later_version() {
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "futureMeta": 1},
            "spec": {"containers": [{"name": "c", "image": "nginx", "futureField": {"x": 1}}], "futureSpec": true},
            "futureTop": "x"
        }))
        .unwrap();
        assert_eq!(p.metadata.name, "p");
        assert_eq!(p.spec.containers[0].image, "nginx");
    }

    #[test]
    fn renamed_fields_use_kubernetes_names() {
        let mut s = Service::default();
        s.spec.cluster_ip = "10.0.0.1".into();
        s.spec.type_ = "ClusterIP".into();
        s.spec.external_ips = vec!["1.2.3.4".into()];
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1", "externalIPs": ["1.2.3.4"]}})
        );
        let mut n = Node::default();
        n.spec.pod_cidr = "10.1.0.0/24".into();
        n.spec.provider_id = "x".into();
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"spec": {"podCIDR": "10.1.0.0/24", "providerID": "x"}})
        );
    }

    #[test]
    fn empty_volume_source_survives() {
        let p: Pod =
            serde_json::from_value(json!({"spec": {"volumes": [{"name": "d", "emptyDir": {}}]}}))
                .unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"spec": {"volumes": [{"name": "d", "emptyDir": {}}]}})
        );
    }
}

object! {
    /// DNS settings of a pod, merged into what its dnsPolicy gives.
    pub struct PodDnsConfig {
        /// Name server addresses (at most 3 in all).
        pub nameservers: Vec<String>,
        /// Search domains (at most 32).
        pub searches: Vec<String>,
        /// resolv.conf options, e.g. ndots.
        pub options: Vec<PodDnsConfigOption>,
    }
}

object! {
    /// One resolv.conf option: `name` or `name:value`.
    pub struct PodDnsConfigOption {
        pub name: String,
        pub value: Option<String>,
    }
}

object! {
    /// One line of a pod's /etc/hosts: an address and its names.
    pub struct HostAlias {
        pub ip: String,
        pub hostnames: Vec<String>,
    }
}
