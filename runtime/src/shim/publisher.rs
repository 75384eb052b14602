//! Task events to containerd (`containerd.services.events.ttrpc.v1.Events/Forward` on
//! `$TTRPC_ADDRESS`), surviving a containerd restart: containerd-shim's `RemotePublisher`
//! keeps its first connection for good, so after containerd restarts every event (TaskExit
//! above all) would be lost. This one reconnects when a forward fails and retries with a
//! growing pause for about 15 s (containerd-shim-runc-v2 also retries a failed event), in
//! order: one event at a time.

use std::time::Duration;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim::events_ttrpc::EventsClient;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::protos::ttrpc::Client;

/// Pauses before each try of one event: at once, then up to about 15 s in all.
const RETRY: [u64; 7] = [0, 100, 400, 1000, 2000, 4000, 8000];

/// Errors publishing an event.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Connecting to containerd's ttrpc address.
    #[error("connecting to {address}: {msg}")]
    Connect {
        /// `$TTRPC_ADDRESS`.
        address: String,
        /// Why.
        msg: String,
    },
    /// Packing the event.
    #[error("event {topic}: {msg}")]
    Encode {
        /// The topic.
        topic: String,
        /// Why.
        msg: String,
    },
    /// Every try failed.
    #[error("event {topic}: {msg} (after {tries} tries)")]
    Forward {
        /// The topic.
        topic: String,
        /// The last error.
        msg: String,
        /// How many tries.
        tries: usize,
    },
}

/// containerd's event service, reconnected on failure.
pub struct Publisher {
    address: String,
    client: Option<EventsClient>,
}

impl Publisher {
    /// Connects to containerd's ttrpc `address` (an error if it does not answer now).
    pub fn new(address: &str) -> Result<Publisher, PublishError> {
        let mut p = Publisher {
            address: address.to_owned(),
            client: None,
        };
        p.client = Some(p.connect()?);
        Ok(p)
    }

    fn connect(&self) -> Result<EventsClient, PublishError> {
        let err = |msg: String| PublishError::Connect {
            address: self.address.clone(),
            msg,
        };
        let fd = containerd_shim::util::connect(&self.address).map_err(|e| err(e.to_string()))?;
        let client = Client::new(fd).map_err(|e| err(e.to_string()))?;
        Ok(EventsClient::new(client))
    }

    /// Forwards `event` under `topic` in `namespace`, reconnecting and retrying on failure.
    pub fn publish(
        &mut self,
        topic: &str,
        namespace: &str,
        event: Box<dyn MessageDyn>,
    ) -> Result<(), PublishError> {
        let encode = |msg: String| PublishError::Encode {
            topic: topic.to_owned(),
            msg,
        };
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_owned());
        envelope.set_namespace(namespace.to_owned());
        envelope
            .set_timestamp(containerd_shim::util::timestamp().map_err(|e| encode(e.to_string()))?);
        envelope.set_event(
            containerd_shim::util::convert_to_any(event).map_err(|e| encode(e.to_string()))?,
        );
        let mut req = ForwardRequest::new();
        req.set_envelope(envelope);
        let mut last = String::new();
        for (i, pause) in RETRY.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(*pause));
            if self.client.is_none() {
                match self.connect() {
                    Ok(c) => self.client = Some(c),
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                }
            }
            let Some(client) = &self.client else { continue };
            match client.forward(Context::default(), &req) {
                Ok(_) => {
                    if i > 0 {
                        tracing::info!("event {topic} forwarded after {} tries", i + 1);
                    }
                    return Ok(());
                }
                Err(e) => {
                    // containerd went away (restart): a new connection for the next try.
                    last = e.to_string();
                    self.client = None;
                }
            }
        }
        Err(PublishError::Forward {
            topic: topic.to_owned(),
            msg: last,
            tries: RETRY.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::events::task::TaskOOM;
    use containerd_shim::protos::shim::events::ForwardRequest;
    use containerd_shim::protos::shim::events_ttrpc::{create_events, Events};
    use containerd_shim::protos::ttrpc::{self, Server};
    use std::sync::mpsc;
    use std::sync::Arc;

    struct Sink(std::sync::Mutex<mpsc::Sender<String>>);
    impl Events for Sink {
        fn forward(
            &self,
            _ctx: &ttrpc::TtrpcContext,
            req: ForwardRequest,
        ) -> ttrpc::Result<containerd_shim::protos::types::empty::Empty> {
            let _ = self.0.lock().unwrap().send(req.envelope.topic.clone());
            Ok(Default::default())
        }
    }

    fn serve(path: &str, tx: mpsc::Sender<String>) -> Server {
        let mut s = Server::new()
            .bind(&format!("unix://{path}"))
            .unwrap()
            .register_service(create_events(Arc::new(Sink(std::sync::Mutex::new(tx)))));
        s.start().unwrap();
        s
    }

    fn oom() -> Box<TaskOOM> {
        Box::new(TaskOOM {
            container_id: "c".into(),
            ..Default::default()
        })
    }

    #[test]
    fn events_reach_a_restarted_containerd() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("ttrpc.sock").display().to_string();
        let (tx, rx) = mpsc::channel();
        let first = serve(&path, tx.clone());
        let mut p = Publisher::new(&format!("unix://{path}")).unwrap();
        p.publish("/tasks/oom", "ns", oom()).unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            "/tasks/oom"
        );
        // containerd restarts: its socket goes away and comes back a little later.
        first.shutdown();
        let _ = std::fs::remove_file(&path);
        let again = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(600));
                serve(&path, tx)
            })
        };
        p.publish("/tasks/exit", "ns", oom()).unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            "/tasks/exit"
        );
        let second = again.join().unwrap();
        second.shutdown();
    }
}
