//! The NATS JetStream event bus: every accepted mutation is published to one stream and
//! acknowledged by JetStream before the API answers; each replica replicates the stream into
//! its read model (an ordered consumer), and one durable consumer shared by all replicas
//! applies events to the feature store (each message to one replica, redelivered to another
//! if the first dies before acknowledging it).

use crate::{Result, ScaleoutError};
use async_nats::jetstream::{self, consumer, stream};
use cascade_core::Mutation;
use cascade_features::FeatureStore;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// `[bus.nats]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub url: String,
    /// JetStream stream holding every mutation (one per deployment).
    pub stream: String,
    /// Subject mutations are published on (the stream's only subject).
    pub subject: String,
    /// Durable consumer shared by the feature updaters of every replica.
    pub durable: String,
    /// An updater that took a message and neither acknowledged nor refused it within this
    /// time (it died) loses it to another replica.
    pub ack_wait_ms: u64,
    /// How long a publish waits for JetStream's acknowledgement before the API answers 503.
    pub publish_timeout_ms: u64,
    /// Impressions queued for publishing without waiting; beyond, they are dropped (counted).
    pub nowait_queue: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "CASCADE".into(),
            subject: "cascade.mutations".into(),
            durable: "cascade-features".into(),
            ack_wait_ms: 5000,
            publish_timeout_ms: 5000,
            nowait_queue: 4096,
        }
    }
}

impl NatsConfig {
    pub fn validate(&self) -> Result<()> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name_ok(&self.stream) || !name_ok(&self.durable) {
            return Err(ScaleoutError::Config(
                "bus.nats.stream and bus.nats.durable must be ASCII letters, digits, `_` or `-`"
                    .into(),
            ));
        }
        if self.subject.is_empty() || self.subject.contains([' ', '*', '>']) {
            return Err(ScaleoutError::Config(
                "bus.nats.subject must be a literal subject".into(),
            ));
        }
        if self.ack_wait_ms == 0 || self.publish_timeout_ms == 0 || self.nowait_queue == 0 {
            return Err(ScaleoutError::Config(
                "bus.nats: ack_wait_ms, publish_timeout_ms and nowait_queue must be positive"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A connection to the bus.
pub struct NatsBus {
    js: jetstream::Context,
    config: NatsConfig,
    nowait: mpsc::Sender<Vec<u8>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("stream", &self.config.stream)
            .finish_non_exhaustive()
    }
}

/// The replica's copy of the stream: how far it has applied.
#[derive(Debug)]
pub struct Replication {
    applied: watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
    /// False once replication ended on its own (undecodable message, apply panicked, stream
    /// gone): the replica no longer follows the stream.
    alive: Arc<AtomicBool>,
}

impl Replication {
    /// Highest stream sequence applied to the read model.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until everything up to `seq` is applied, or `timeout` passes; whether it was.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.clone();
        tokio::time::timeout(timeout, rx.wait_for(|&a| a >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Stops replicating (the task ends at its next message or within a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The next message of a consumer and its stream sequence, waiting at most a second at a
/// time so that `stop` is seen; `None` once stopped or when the consumer ended. Consumer
/// errors are logged and waited out (`pause`).
async fn next_message<S, E>(
    messages: &mut S,
    stop: &AtomicBool,
    what: &str,
    pause: Duration,
) -> Option<(jetstream::Message, u64)>
where
    S: futures::Stream<Item = std::result::Result<jetstream::Message, E>> + Unpin,
    E: std::fmt::Display,
{
    while !stop.load(Ordering::SeqCst) {
        match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
            Err(_) => {}
            Ok(None) => return None,
            Ok(Some(Err(e))) => {
                tracing::warn!(error = %e, "{what} consumer error");
                tokio::time::sleep(pause).await;
            }
            Ok(Some(Ok(m))) => {
                if let Ok(seq) = m.info().map(|i| i.stream_sequence) {
                    return Some((m, seq));
                }
            }
        }
    }
    None
}

fn encode(m: &Mutation) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    cascade_storage::encode_mutation(m, &mut out)
        .map_err(|e| ScaleoutError::Encode(e.to_string()))?;
    Ok(out)
}

impl NatsBus {
    /// Connects and creates the stream if it does not exist (file storage: acknowledged
    /// messages survive a NATS restart).
    pub async fn connect(config: NatsConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(config.url.as_str())
            .await
            .map_err(ScaleoutError::nats)?;
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(ScaleoutError::nats)?;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(config.nowait_queue);
        let bus = Arc::new(Self {
            js: js.clone(),
            config: config.clone(),
            nowait: tx,
        });
        // Impressions: published in order, acknowledgements awaited here, not by requests.
        let subject = config.subject.clone();
        tokio::spawn(async move {
            while let Some(body) = rx.recv().await {
                let sent = match js.publish(subject.clone(), body.into()).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = sent {
                    metrics::counter!("cascade_impressions_dropped_total").increment(1);
                    tracing::warn!(error = %e, "impression publish failed");
                }
            }
        });
        Ok(bus)
    }

    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// Publishes `m` and waits for JetStream's acknowledgement: once this returns, the
    /// mutation is durable in the stream. Returns its stream sequence.
    pub async fn publish(&self, m: &Mutation) -> Result<u64> {
        let body = encode(m)?;
        let timeout = Duration::from_millis(self.config.publish_timeout_ms);
        let publish = async {
            let ack = self
                .js
                .publish(self.config.subject.clone(), body.into())
                .await
                .map_err(ScaleoutError::nats)?;
            ack.await.map_err(ScaleoutError::nats)
        };
        let ack = tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| ScaleoutError::Nats("publish not acknowledged in time".into()))??;
        Ok(ack.sequence)
    }

    /// Publishes `ms` in order without waiting between them, then waits for every
    /// acknowledgement; returns the last one's sequence.
    pub async fn publish_all(&self, ms: &[Mutation]) -> Result<u64> {
        let timeout = Duration::from_millis(self.config.publish_timeout_ms);
        let publish = async {
            let mut acks = Vec::with_capacity(ms.len());
            for m in ms {
                let body = encode(m)?;
                acks.push(
                    self.js
                        .publish(self.config.subject.clone(), body.into())
                        .await
                        .map_err(ScaleoutError::nats)?,
                );
            }
            let mut last = 0;
            for ack in acks {
                last = ack.await.map_err(ScaleoutError::nats)?.sequence;
            }
            Ok::<u64, ScaleoutError>(last)
        };
        tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| ScaleoutError::Nats("publish not acknowledged in time".into()))?
    }

    /// Queues `m` for publishing without waiting (impressions); `Err` when the queue is full.
    pub fn publish_nowait(&self, m: &Mutation) -> Result<()> {
        let body = encode(m)?;
        self.nowait
            .try_send(body)
            .map_err(|_| ScaleoutError::Nats("publish queue full".into()))
    }

    /// The stream's last sequence (0 when empty).
    pub async fn last_seq(&self) -> Result<u64> {
        let s = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(ScaleoutError::nats)?;
        let info = s.get_info().await.map_err(ScaleoutError::nats)?;
        Ok(info.state.last_sequence)
    }

    /// Replicates the stream from `from` into `apply`, which runs on its own thread (state
    /// updates never block the async runtime) in stream order.
    pub async fn replicate<F>(&self, from: u64, apply: F) -> Result<Replication>
    where
        F: FnMut(u64, Mutation) + Send + 'static,
    {
        let s = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(ScaleoutError::nats)?;
        let consumer = s
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(ScaleoutError::nats)?;
        let mut messages = consumer.messages().await.map_err(ScaleoutError::nats)?;
        let (applied_tx, applied_rx) = watch::channel(from.saturating_sub(1));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Mutation)>(1024);
        let mut apply = apply;
        let thread_tx = applied_tx.clone();
        std::thread::Builder::new()
            .name("cascade-replica".into())
            .spawn(move || {
                for (seq, m) in rx {
                    apply(seq, m);
                    thread_tx.send_replace(seq);
                }
            })
            .map_err(|e| ScaleoutError::Nats(format!("replica thread: {e}")))?;
        let stop2 = stop.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let alive2 = alive.clone();
        tokio::spawn(async move {
            // Marks replication dead however the loop ends, unless asked to stop.
            struct Mark(Arc<AtomicBool>, Arc<AtomicBool>);
            impl Drop for Mark {
                fn drop(&mut self) {
                    if !self.1.load(Ordering::SeqCst) {
                        self.0.store(false, Ordering::SeqCst);
                    }
                }
            }
            let _mark = Mark(alive2, stop2.clone());
            while let Some((msg, seq)) =
                next_message(&mut messages, &stop2, "replication", Duration::ZERO).await
            {
                match cascade_storage::decode_mutation(&msg.payload) {
                    Ok(m) => {
                        // The thread applies in order; when it is 1024 messages behind, this
                        // consumer waits (backpressure on replication alone, no blocking).
                        let mut item = (seq, m);
                        loop {
                            match tx.try_send(item) {
                                Ok(()) => break,
                                Err(std::sync::mpsc::TrySendError::Full(back)) => {
                                    item = back;
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                            }
                        }
                    }
                    Err(e) => {
                        // Never silently skipped: the replica stops advancing and says why.
                        tracing::error!(seq, error = %e, "undecodable bus message");
                        break;
                    }
                }
            }
        });
        Ok(Replication {
            applied: applied_rx,
            stop,
            alive,
        })
    }

    /// Runs this replica's member of the feature-updater group until `stop`: takes messages
    /// from the shared durable consumer, applies their events to `store`, then acknowledges.
    /// A failed apply is refused (`nak`) and redelivered after a pause.
    pub async fn run_updater(
        self: &Arc<Self>,
        store: Arc<dyn FeatureStore>,
        stop: Arc<AtomicBool>,
    ) -> Result<()> {
        let s = self
            .js
            .get_stream(&self.config.stream)
            .await
            .map_err(ScaleoutError::nats)?;
        let consumer: consumer::PullConsumer = s
            .get_or_create_consumer(
                &self.config.durable,
                consumer::pull::Config {
                    durable_name: Some(self.config.durable.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_millis(self.config.ack_wait_ms),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                },
            )
            .await
            .map_err(ScaleoutError::nats)?;
        let mut messages = consumer.messages().await.map_err(ScaleoutError::nats)?;
        tokio::spawn(async move {
            let pause = Duration::from_millis(200);
            while let Some((msg, seq)) =
                next_message(&mut messages, &stop, "feature updater", pause).await
            {
                let result = match cascade_storage::decode_mutation(&msg.payload) {
                    Ok(Mutation::Events(events)) => store.apply(seq, &events).await,
                    Ok(m @ (Mutation::EraseUser { .. } | Mutation::DeleteFeedback { .. })) => {
                        store.forget(seq, &m).await
                    }
                    // Catalog mutations are replicated, not features.
                    Ok(_) => Ok(()),
                    Err(e) => {
                        tracing::error!(seq, error = %e, "undecodable bus message");
                        // Terminated rather than redelivered forever; it stays in the stream.
                        let _ = msg.ack_with(jetstream::AckKind::Term).await;
                        continue;
                    }
                };
                match result {
                    Ok(()) => {
                        if let Err(e) = msg.ack().await {
                            tracing::warn!(seq, error = %e, "ack failed (will be redelivered)");
                        }
                        metrics::counter!("cascade_feature_updates_total").increment(1);
                    }
                    Err(e) => {
                        tracing::warn!(seq, error = %e, "feature store write failed");
                        metrics::counter!("cascade_feature_update_errors_total").increment(1);
                        let _ = msg
                            .ack_with(jetstream::AckKind::Nak(Some(Duration::from_millis(500))))
                            .await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Deletes the stream and its consumers (tests and decommissioning).
    pub async fn delete_stream(&self) -> Result<()> {
        self.js
            .delete_stream(&self.config.stream)
            .await
            .map_err(ScaleoutError::nats)?;
        Ok(())
    }
}
