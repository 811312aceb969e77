//! ServiceAccounts: every namespace has the account `default`, which pods
//! that name none run as; it is made again when deleted, as Kubernetes'
//! serviceaccount controller does.

use std::sync::Arc;

use flotilla_objects::api::{ApiError, ObjectApi, Reason};
use flotilla_objects::core::{Namespace, ServiceAccount};
use flotilla_objects::DEFAULT_SERVICE_ACCOUNT;
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;
use serde_json::json;

pub const COMPONENT: &str = "serviceaccount";

/// The leader loop.
#[derive(Clone, Copy, Default)]
pub struct ServiceAccountLoop;

impl LeaderLoop for ServiceAccountLoop {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let namespaces = ctx.informers.get::<Namespace>();
            let accounts = ctx.informers.get::<ServiceAccount>();
            let r = Arc::new(Accounts {
                api: ctx.api.clone(),
                namespaces: namespaces.clone(),
                accounts: accounts.clone(),
            });
            Controller::new(COMPONENT, namespaces)
                .watches(accounts, |sa: &ServiceAccount| {
                    vec![ObjectRef::new("", &sa.metadata.namespace)]
                })
                .run(r, ctx.stop)
                .await
        })
    }
}

struct Accounts {
    api: Arc<dyn ObjectApi>,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
}

#[async_trait::async_trait]
impl Reconciler<Namespace> for Accounts {
    type Error = ApiError;

    async fn reconcile(
        &self,
        key: &ObjectRef,
        _obj: Option<Arc<Namespace>>,
    ) -> Result<Action, ApiError> {
        let Some(ns) = self.namespaces.get_ref(key) else {
            return Ok(Action::Await);
        };
        if ns.metadata.deletion_timestamp.is_some()
            || self
                .accounts
                .get(&key.name, DEFAULT_SERVICE_ACCOUNT)
                .is_some()
        {
            return Ok(Action::Await);
        }
        let sa = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": key.name},
        });
        match self
            .api
            .create("serviceaccounts", &key.name, sa, false)
            .await
        {
            Ok(_) => {
                tracing::debug!(namespace = %key.name, "default service account created");
                Ok(Action::Await)
            }
            // Made meanwhile, or the namespace is going away.
            Err(e) if e.is(Reason::AlreadyExists) || e.is(Reason::Forbidden) => Ok(Action::Await),
            Err(e) if e.is(Reason::NotFound) => Ok(Action::Await),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_objects::api::DeleteParams;

    use super::*;
    use crate::testenv::{until, Env};

    #[tokio::test]
    async fn every_namespace_gets_a_default_account_again_after_a_delete() {
        let env = Env::new().await;
        env.run(ServiceAccountLoop);
        let api = env.dyn_api.clone();
        env.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}))
            .await;
        let uid = || async {
            api.get("serviceaccounts", "team", "default", false)
                .await
                .ok()
                .map(|sa| sa["metadata"]["uid"].to_string())
        };
        until("the default account", || async { uid().await.is_some() }).await;
        let first = uid().await;
        api.delete(
            "serviceaccounts",
            "team",
            "default",
            &DeleteParams::default(),
        )
        .await
        .expect("delete");
        until("the default account made again", || async {
            uid().await.is_some_and(|u| Some(u) != first)
        })
        .await;
    }
}
