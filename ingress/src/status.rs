//! `status.loadBalancer.ingress` of every served Ingress: this router's
//! address, written (as a merge patch of the status) only when it differs.

use std::sync::Arc;

use flotilla_client::{Api, Client};
use flotilla_objects::networking::Ingress;
use serde_json::json;

pub struct Writer {
    client: Client,
    address: Option<String>,
}

impl Writer {
    pub fn new(client: Client, address: Option<String>) -> Writer {
        Writer { client, address }
    }

    fn current(ing: &Ingress) -> Vec<(String, String)> {
        ing.status
            .as_ref()
            .map(|s| {
                s.load_balancer
                    .ingress
                    .iter()
                    .map(|i| (i.ip.clone(), i.hostname.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bring the status of `served` to this router's address; false when a
    /// write failed (try again later).
    pub async fn sync(&self, served: &[Arc<Ingress>]) -> bool {
        let Some(addr) = &self.address else {
            return true;
        };
        let is_ip = addr.parse::<std::net::IpAddr>().is_ok();
        let want = if is_ip {
            vec![(addr.clone(), String::new())]
        } else {
            vec![(String::new(), addr.clone())]
        };
        let point = if is_ip {
            json!({"ip": addr})
        } else {
            json!({"hostname": addr})
        };
        let mut ok = true;
        for ing in served {
            if Self::current(ing) == want {
                continue;
            }
            let (ns, name) = (&ing.metadata.namespace, &ing.metadata.name);
            let api = Api::<Ingress>::namespaced(self.client.clone(), ns);
            let patch = json!({"status": {"loadBalancer": {"ingress": [point.clone()]}}});
            match api.patch_status(name, &patch).await {
                Ok(_) => {
                    tracing::info!(ingress = %format!("{ns}/{name}"), address = %addr, "status written")
                }
                Err(e) if e.reason == flotilla_client::Reason::NotFound => {}
                Err(e) => {
                    tracing::warn!(ingress = %format!("{ns}/{name}"), error = %e, "writing status");
                    ok = false;
                }
            }
        }
        ok
    }
}
