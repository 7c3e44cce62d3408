//! `wasmcloud:messaging@0.2.0` over core NATS, as wasmCloud's messaging-nats provider
//! implements it:
//!
//! - `consumer.request(subject, body, timeout-ms)`: a NATS request (new inbox, first
//!   reply wins) bounded by the timeout; errors are `nats request timed out: ...` and
//!   `nats send error: ...` (no responders, for instance);
//! - `consumer.publish(msg)`: a publish, with the reply subject when `reply-to` is set,
//!   then a flush;
//! - handler links: one subscription per `subject|queue` entry (a queue subscription when
//!   the group is given) per running replica; each message runs `handle-message` on a
//!   fresh instance, at most 75 at a time per subscription. Nothing is acknowledged or
//!   redelivered: a message whose handler traps or returns an error is gone, and so is a
//!   message in flight when its replica stops.
//!
//! With a subject prefix (see `LatticeConfig::subject_prefix`) every subject goes to NATS
//! as `<prefix>.<subject>` and comes back without it, so lattices can share a server.

use super::bindings::wasmcloud::messaging::consumer;
use super::bindings::wasmcloud::messaging::types::{self, BrokerMessage};
use super::manifest::Subscription;
use super::runtime::{LatticeComponent, LatticeRuntime};
use super::state::LatticeState;
use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// The provider's limit on concurrent handler invocations per subscription.
const MAX_IN_FLIGHT: usize = 75;

impl types::Host for LatticeState {}

impl consumer::Host for LatticeState {
    async fn request(
        &mut self,
        subject: String,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<BrokerMessage, String>> {
        self.require_link(self.component.spec.consumer, "wasmcloud:messaging/consumer")?;
        let client = self.runtime.nats.clone();
        let timeout = Duration::from_millis(timeout_ms.into());
        let subject = self.runtime.wire(&subject);
        Ok(
            match tokio::time::timeout(timeout, client.request(subject, body.into())).await {
                Err(elapsed) => Err(format!("nats request timed out: {elapsed}")),
                Ok(Err(e)) => Err(format!("nats send error: {e}")),
                Ok(Ok(reply)) => Ok(BrokerMessage {
                    subject: self.runtime.strip_wire(&reply.subject).to_owned(),
                    body: reply.payload.to_vec(),
                    reply_to: reply.reply.map(|s| s.to_string()),
                }),
            },
        )
    }

    async fn publish(&mut self, msg: BrokerMessage) -> wasmtime::Result<Result<(), String>> {
        self.require_link(self.component.spec.consumer, "wasmcloud:messaging/consumer")?;
        let client = self.runtime.nats.clone();
        let subject = self.runtime.wire(&msg.subject);
        let result = match msg.reply_to {
            Some(reply_to) => {
                client
                    .publish_with_reply(subject, self.runtime.wire(&reply_to), msg.body.into())
                    .await
            }
            None => client.publish(subject, msg.body.into()).await,
        }
        .map_err(|e| e.to_string());
        let _ = client.flush().await;
        Ok(result)
    }
}

/// Subscribes replica `replica` of `component` to `subscription` and returns the task
/// that feeds its messages to the handler. Aborting the task drops the subscription
/// (an unsubscribe) and every invocation still running.
pub(crate) async fn subscribe(
    runtime: &Arc<LatticeRuntime>,
    component: &Arc<LatticeComponent>,
    replica: usize,
    subscription: &Subscription,
) -> Result<JoinHandle<()>> {
    let client = &runtime.nats;
    let subject = runtime.wire(&subscription.subject);
    let mut subscriber = match &subscription.queue {
        Some(queue) => client.queue_subscribe(subject, queue.clone()).await,
        None => client.subscribe(subject).await,
    }
    .with_context(|| format!("cannot subscribe to {:?}", subscription.subject))?;
    // The subscription is registered with the server once this returns.
    client
        .flush()
        .await
        .context("cannot flush the NATS connection")?;

    let runtime = runtime.clone();
    let component = component.clone();
    Ok(tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut in_flight = JoinSet::new();
        while let Some(message) = subscriber.next().await {
            while in_flight.try_join_next().is_some() {}
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let runtime = runtime.clone();
            let component = component.clone();
            in_flight.spawn(async move {
                let _permit = permit;
                let message = BrokerMessage {
                    subject: runtime.strip_wire(&message.subject).to_owned(),
                    body: message.payload.to_vec(),
                    reply_to: message.reply.map(|s| runtime.strip_wire(&s).to_owned()),
                };
                runtime.handle_message(&component, replica, message).await;
            });
        }
    }))
}
