//! The session's consumers, one per queue, each on a channel of its own and
//! all feeding one channel of deliveries. A channel per queue because a
//! refused `basic.consume` (a classic queue whose node is down answers 404)
//! closes its channel, and a consume that hangs (a quorum queue without a
//! quorum never answers) blocks its channel: either would otherwise take
//! every other queue's consumer, and the acks of everything in flight, with
//! it. A pause cancels the consumers and keeps their channels, so what is
//! in flight keeps its acks; resuming consumes again on the same channels.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::bounded;
use crate::broker::BrokerError;

/// A delivery and the channel it came on, where it is acked.
pub(super) type Fed = (Channel, Delivery);

/// Where the consumers send what they receive.
pub(super) type Feed = mpsc::Sender<Fed>;

/// How long the broker may take to answer opening a queue's channel, its
/// prefetch and its consume: a quorum queue without a quorum never answers
/// a consume, and the queue is then tried again later.
pub(super) const CONSUME_TIMEOUT: Duration = Duration::from_secs(5);

/// A consumer that stopped without being cancelled here.
pub(super) struct Ended {
    /// Its queue.
    pub queue: String,
    /// Why, when its stream said: the channel or the connection failed.
    /// `None`: the broker cancelled it (its queue deleted, its node down).
    pub error: Option<lapin::Error>,
}

/// A queue's channel, and its consumer tag while it consumes.
struct QueueChannel {
    channel: Channel,
    tag: Option<String>,
}

/// Consumers of one session, by queue.
pub(super) struct Consumers {
    hostname: String,
    /// Each queue's prefetch ([`crate::config::WorkerConfig::prefetch_for`]).
    prefetch: BTreeMap<String, u16>,
    feed: Feed,
    channels: BTreeMap<String, QueueChannel>,
    /// One forwarding task per consumer.
    forwarders: JoinSet<Ended>,
    /// Channels given up on (a consume that did not answer), closing.
    closing: JoinSet<()>,
}

impl Consumers {
    /// No consumers yet; each queue's will take up to its `prefetch` unacked deliveries.
    pub(super) fn new(hostname: &str, prefetch: BTreeMap<String, u16>, feed: Feed) -> Consumers {
        Consumers {
            hostname: hostname.to_owned(),
            prefetch,
            feed,
            channels: BTreeMap::new(),
            forwarders: JoinSet::new(),
            closing: JoinSet::new(),
        }
    }

    /// Whether `queue` has a consumer now.
    pub(super) fn consuming(&self, queue: &str) -> bool {
        self.channels.get(queue).is_some_and(|q| q.tag.is_some())
    }

    /// Consumes `queue` on its channel (a new one when it has none open),
    /// within [`CONSUME_TIMEOUT`]. On any failure the channel is given up,
    /// so the next try starts on a fresh one.
    pub(super) async fn consume(&mut self, conn: &Connection, queue: &str) -> Result<(), BrokerError> {
        let reuse = self.channels.remove(queue).map(|q| q.channel).filter(|c| c.status().connected());
        let fresh = reuse.is_none();
        let mut opened = None;
        let started = tokio::time::timeout(CONSUME_TIMEOUT, async {
            let channel = match reuse {
                Some(channel) => channel,
                None => conn.create_channel().await?,
            };
            opened = Some(channel.clone());
            if fresh {
                let prefetch = self.prefetch.get(queue).copied().unwrap_or(1);
                channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
            }
            let tag = format!("{}.{queue}", self.hostname);
            let consumer = channel
                .basic_consume(queue.into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
                .await?;
            Ok::<_, lapin::Error>((channel, tag, consumer))
        })
        .await;
        let (channel, tag, mut consumer) = match started {
            Ok(Ok(started)) => started,
            Ok(Err(source)) => {
                self.give_up(opened);
                return Err(BrokerError::declaring(format!("consumer of queue {queue}"), source));
            }
            Err(_) => {
                self.give_up(opened);
                return Err(BrokerError::NoAnswer {
                    what: format!("a consume of queue {queue}"),
                    within: CONSUME_TIMEOUT,
                });
            }
        };
        let (feed, name, on) = (self.feed.clone(), queue.to_owned(), channel.clone());
        self.forwarders.spawn(async move {
            let error = loop {
                match consumer.next().await {
                    Some(Ok(delivery)) => {
                        if feed.send((on.clone(), delivery)).await.is_err() {
                            break None;
                        }
                    }
                    Some(Err(e)) => break Some(e),
                    None => break None,
                }
            };
            Ended { queue: name, error }
        });
        self.channels.insert(queue.to_owned(), QueueChannel { channel, tag: Some(tag) });
        Ok(())
    }

    /// Closes a channel whose step failed or did not answer, in the
    /// background: its broker side may be stuck in that step.
    fn give_up(&mut self, channel: Option<Channel>) {
        if let Some(channel) = channel.filter(|c| c.status().connected()) {
            self.closing.spawn(async move { bounded("channel close", channel.close(200, "given up".into())).await });
        }
    }

    /// The next consumer that stopped by itself: the broker cancelled it, or
    /// its channel closed. Its channel stays, to consume on again if it is open.
    pub(super) async fn ended(&mut self) -> Ended {
        loop {
            match self.forwarders.join_next().await {
                Some(Ok(ended)) => {
                    if let Some(q) = self.channels.get_mut(&ended.queue) {
                        q.tag = None;
                    }
                    return ended;
                }
                // A forwarder that panicked: nothing to learn, wait for the next.
                Some(Err(_)) => {}
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Cancels every consumer: the broker sends nothing more on them, and
    /// what this worker holds stays its own to settle on the same channels.
    pub(super) async fn cancel(&mut self) {
        for q in self.channels.values_mut() {
            if let Some(tag) = q.tag.take() {
                bounded("consumer cancel", q.channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()))
                    .await;
            }
        }
        self.forwarders.abort_all();
        while self.forwarders.join_next().await.is_some() {}
    }

    /// Closes every channel: what is unacked on them goes back to its queue.
    pub(super) async fn close(mut self) {
        for q in self.channels.values() {
            bounded("channel close", q.channel.close(200, "worker stopping".into())).await;
        }
        while self.closing.join_next().await.is_some() {}
    }
}
