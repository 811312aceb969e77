//! Event expiry: Events are deleted once they have not repeated for a
//! while (an hour by default, the API server's `--event-ttl` in
//! Kubernetes, where etcd leases do it), so that they never grow the store
//! without bound. An event that repeats (its count and lastTimestamp move)
//! lives on from its last occurrence.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flotilla_objects::api::{ApiError, DeleteParams, ObjectApi, Reason};
use flotilla_objects::core::Event;
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use futures::future::BoxFuture;

pub const COMPONENT: &str = "event-expiry";
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// The leader loop.
#[derive(Clone, Copy)]
pub struct EventExpiry {
    pub ttl: Duration,
}

impl Default for EventExpiry {
    fn default() -> Self {
        EventExpiry { ttl: DEFAULT_TTL }
    }
}

impl LeaderLoop for EventExpiry {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        let ttl = self.ttl;
        Box::pin(async move {
            let events = ctx.informers.get::<Event>();
            let r = Arc::new(Expiry {
                api: ctx.api.clone(),
                events: events.clone(),
                ttl,
            });
            Controller::new(COMPONENT, events).run(r, ctx.stop).await
        })
    }
}

struct Expiry {
    api: Arc<dyn ObjectApi>,
    events: Informer<Event>,
    ttl: Duration,
}

/// When the event last happened: lastTimestamp, else firstTimestamp, else
/// its creation.
fn last_seen(e: &Event) -> Option<chrono::DateTime<Utc>> {
    e.last_timestamp
        .or(e.first_timestamp)
        .or(e.metadata.creation_timestamp)
        .map(|t| t.0)
}

#[async_trait::async_trait]
impl Reconciler<Event> for Expiry {
    type Error = ApiError;

    async fn reconcile(
        &self,
        key: &ObjectRef,
        obj: Option<Arc<Event>>,
    ) -> Result<Action, ApiError> {
        if obj.is_none() {
            return Ok(Action::Await);
        }
        let Some(e) = self.events.get_ref(key) else {
            return Ok(Action::Await);
        };
        let Some(at) = last_seen(&e) else {
            return Ok(Action::Await);
        };
        let expires = at + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        if expires > now {
            return Ok(Action::RequeueAfter(
                (expires - now).to_std().unwrap_or_default(),
            ));
        }
        // Only the version seen: a repeat recorded meanwhile keeps it.
        let dp = DeleteParams {
            precondition_resource_version: e.metadata.resource_version.clone(),
            ..Default::default()
        };
        match self
            .api
            .delete("events", &key.namespace, &key.name, &dp)
            .await
        {
            Ok(_) => Ok(Action::Await),
            Err(err) if err.is(Reason::NotFound) || err.is(Reason::Conflict) => Ok(Action::Await),
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_client::events::{EventType, Recorder};
    use flotilla_objects::core::ConfigMap;
    use flotilla_objects::ObjectMeta;

    use super::*;
    use crate::testenv::{until, Env};

    #[tokio::test]
    async fn events_expire_after_their_ttl_from_the_last_repeat() {
        let env = Env::new().await;
        let recorder = Recorder::new(env.dyn_api.clone(), "test");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: "c".into(),
                namespace: "default".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        recorder
            .record(&cm, EventType::Normal, "Old", "happened once")
            .await;
        let events = env.typed::<Event>("default");
        until("recorded", || async {
            events
                .list(&Default::default())
                .await
                .expect("events")
                .items
                .len()
                == 1
        })
        .await;
        // A ttl of zero: anything already recorded is past it.
        env.run(EventExpiry {
            ttl: Duration::ZERO,
        });
        until("expired", || async {
            events
                .list(&Default::default())
                .await
                .expect("events")
                .items
                .is_empty()
        })
        .await;
    }
}
