//! The fan-out of applied events to watchers on this master.
//!
//! Every applied revision is published once; a watcher that falls behind (or
//! sees the state replaced by a snapshot) is told to resynchronise from the
//! history in the store, so that no watcher ever skips a revision.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::kv::Event;

#[derive(Debug, Clone)]
pub enum HubMsg {
    /// The events of one revision, in order.
    Revision {
        revision: i64,
        events: Arc<Vec<Event>>,
    },
    /// The state machine was replaced by a snapshot: re-read history.
    Reset,
}

pub struct WatchHub {
    tx: broadcast::Sender<HubMsg>,
}

impl Default for WatchHub {
    fn default() -> Self {
        Self::new(8192)
    }
}

impl WatchHub {
    pub fn new(capacity: usize) -> Self {
        WatchHub {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubMsg> {
        self.tx.subscribe()
    }

    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        if !events.is_empty() {
            // No receivers is not an error: nobody watches.
            let _ = self.tx.send(HubMsg::Revision {
                revision,
                events: Arc::new(events),
            });
        }
    }

    pub fn reset(&self) {
        let _ = self.tx.send(HubMsg::Reset);
    }
}
