//! The session's consumers, one per queue, all feeding one channel of
//! deliveries. A pause cancels them; resuming starts them again on the same
//! channel, so what is in flight keeps its acks. A consumer the broker
//! cancels (its queue deleted, its node down) is subscribed again once its
//! queue can be declared, while the others keep running.

use std::collections::HashMap;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{WorkerError, bounded};
use crate::broker::{self, BrokerError};
use crate::config::WorkerConfig;

/// Where the consumers send what they receive.
pub(super) type Feed = mpsc::Sender<lapin::Result<Delivery>>;

/// How long one declaration of a cancelled consumer's queue may take.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(5);

/// Consumers running on a channel.
pub(super) struct Consumers {
    /// Consumer tag by queue, for the ones running.
    tags: HashMap<String, String>,
    /// One forwarding task per consumer; each ends with its queue's name.
    feeds: JoinSet<String>,
}

impl Consumers {
    /// Starts one consumer per queue, each forwarding to `feed`.
    pub(super) async fn start(
        config: &WorkerConfig,
        queues: &[String],
        channel: &Channel,
        feed: &Feed,
    ) -> Result<Consumers, WorkerError> {
        let mut consumers = Consumers { tags: HashMap::new(), feeds: JoinSet::new() };
        for queue in queues {
            consumers.subscribe(config, queue, channel, feed).await?;
        }
        Ok(consumers)
    }

    async fn subscribe(
        &mut self,
        config: &WorkerConfig,
        queue: &str,
        channel: &Channel,
        feed: &Feed,
    ) -> Result<(), WorkerError> {
        let tag = format!("{}.{queue}", config.hostname);
        let mut consumer = channel
            .basic_consume(queue.into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(BrokerError::from)?;
        self.tags.insert(queue.to_owned(), tag);
        let (feed, queue) = (feed.clone(), queue.to_owned());
        self.feeds.spawn(async move {
            while let Some(delivery) = consumer.next().await {
                if feed.send(delivery).await.is_err() {
                    break;
                }
            }
            queue
        });
        Ok(())
    }

    /// The queue of a consumer that stopped without being cancelled here
    /// (the broker cancelled it, or the channel closed).
    pub(super) async fn ended(&mut self) -> String {
        loop {
            match self.feeds.join_next().await {
                Some(Ok(queue)) => {
                    self.tags.remove(&queue);
                    return queue;
                }
                // A forwarder that panicked: nothing to learn, wait for the next.
                Some(Err(_)) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Declares each of `queues` on a channel of its own (a refusal, such as
    /// a classic queue whose node is down, closes only that channel) and
    /// subscribes again to those declared; returns the ones still refused.
    pub(super) async fn resubscribe(
        &mut self,
        conn: &Connection,
        config: &WorkerConfig,
        channel: &Channel,
        feed: &Feed,
        queues: Vec<String>,
    ) -> Result<Vec<String>, WorkerError> {
        let mut refused = Vec::new();
        for queue in queues {
            let declared = tokio::time::timeout(DECLARE_TIMEOUT, async {
                let scratch = conn.create_channel().await.map_err(BrokerError::from)?;
                broker::declare_destination(&scratch, &queue, config.queue_kinds()).await?;
                bounded("scratch channel close", scratch.close(200, "declared".into())).await;
                Ok::<(), BrokerError>(())
            })
            .await;
            match declared {
                Ok(Ok(())) => {
                    self.subscribe(config, &queue, channel, feed).await?;
                    tracing::warn!(%queue, "subscribed again");
                }
                Ok(Err(e)) => {
                    tracing::warn!(%queue, error = %e, "queue not available yet; trying again");
                    refused.push(queue);
                }
                Err(_) => {
                    tracing::warn!(%queue, "declaring the queue did not finish in time; trying again");
                    refused.push(queue);
                }
            }
        }
        Ok(refused)
    }

    /// Cancels every consumer: the broker sends nothing more on them, and
    /// what this worker holds stays its own to settle.
    pub(super) async fn cancel(mut self, channel: &Channel) {
        for tag in self.tags.values() {
            bounded("consumer cancel", channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())).await;
        }
        self.feeds.abort_all();
        while self.feeds.join_next().await.is_some() {}
    }
}
