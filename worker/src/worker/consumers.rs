//! The session's consumers, one per queue, all feeding one channel of
//! deliveries. A pause cancels them; resuming starts them again on the same
//! channel, so what is in flight keeps its acks.

use futures_lite::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{WorkerError, bounded};
use crate::broker::BrokerError;
use crate::config::WorkerConfig;

/// Where the consumers send what they receive.
pub(super) type Feed = mpsc::Sender<lapin::Result<Delivery>>;

/// Consumers running on a channel.
pub(super) struct Consumers {
    tags: Vec<String>,
    feeds: JoinSet<()>,
}

impl Consumers {
    /// Starts one consumer per queue, each forwarding to `feed`.
    pub(super) async fn start(
        config: &WorkerConfig,
        queues: &[String],
        channel: &Channel,
        feed: &Feed,
    ) -> Result<Consumers, WorkerError> {
        let mut consumers = Consumers { tags: Vec::new(), feeds: JoinSet::new() };
        for queue in queues {
            let tag = format!("{}.{queue}", config.hostname);
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(BrokerError::from)?;
            consumers.tags.push(tag);
            let feed = feed.clone();
            consumers.feeds.spawn(async move {
                while let Some(delivery) = consumer.next().await {
                    if feed.send(delivery).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(consumers)
    }

    /// Resolves when a consumer stops without being cancelled here (the
    /// broker cancelled it, or the channel closed).
    pub(super) async fn ended(&mut self) {
        if self.feeds.join_next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Cancels every consumer: the broker sends nothing more on them, and
    /// what this worker holds stays its own to settle.
    pub(super) async fn cancel(mut self, channel: &Channel) {
        for tag in &self.tags {
            bounded("consumer cancel", channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())).await;
        }
        self.feeds.abort_all();
        while self.feeds.join_next().await.is_some() {}
    }
}
