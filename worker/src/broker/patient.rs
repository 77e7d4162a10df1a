//! Publishing for a delivery when the broker cannot take the message now.
//!
//! A message that reaches no queue (its queue's node is down: `312
//! NO_ROUTE`; the queue deleted and not declared again yet) or is nacked (a
//! quorum queue without a quorum) is not the delivery's fault. Handing the
//! delivery back would loop it through the worker as fast as the broker
//! redelivers, and every redelivery counts toward `--max-deliveries`: within
//! a second the message would be poison and its schedule FAIL. Instead the
//! publish is tried again with backoff while the delivery stays held
//! (unacked, so a worker that dies meanwhile loses nothing), until the
//! broker takes the message or the worker stops; a stop ends the wait
//! after the publish in flight, never during it, and the delivery is then
//! handed back.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, FixedOffset};
use lapin::BasicProperties;
use tokio::sync::watch;

use super::{BrokerError, Publish};

/// First pause before publishing again: a consumer cancelled by a deleted
/// queue is declared again within this.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// Longest pause between tries: as often as the worker tries again what it
/// could not declare.
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// A publisher that waits out a missing route; see the module's docs.
#[derive(Clone)]
pub struct Patient<P> {
    inner: P,
    /// True once the worker stops: the wait ends with the broker's last refusal.
    stopping: watch::Receiver<bool>,
}

impl<P: Publish> Patient<P> {
    /// Publishes through `inner`, waiting out missing routes until `stopping`.
    pub fn new(inner: P, stopping: watch::Receiver<bool>) -> Patient<P> {
        Patient { inner, stopping }
    }
}

fn pauses() -> ExponentialBuilder {
    super::doubling(FIRST_PAUSE, LONGEST_PAUSE)
}

impl<P: Publish> Publish for Patient<P> {
    async fn publish_to_queue(
        &self,
        queue: &str,
        eta: Option<DateTime<FixedOffset>>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let mut waited = false;
        // A stop cuts a pause short and ends the retries, never a publish
        // in flight: one the broker takes is then acked as usual.
        let stopping = self.stopping.clone();
        let pause = move |pause: Duration| {
            let mut stopping = stopping.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stopping.wait_for(|stop| *stop) => {}
                }
            }
        };
        let published = (|| self.inner.publish_to_queue(queue, eta, body, properties.clone()))
            .retry(pauses())
            .sleep(pause)
            .when(|e: &BrokerError| e.route_missing() && !*self.stopping.borrow())
            .notify(|e: &BrokerError, _| {
                if !waited {
                    tracing::warn!(%queue, error = %e, "the broker cannot take the message now; holding the delivery and publishing again until it can");
                    waited = true;
                }
            })
            .await;
        if published.is_ok() && waited {
            tracing::warn!(%queue, "the broker took the message after a wait");
        }
        published
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Refuses its first `refusals` publishes as a broker nack, then takes them.
    #[derive(Clone, Default)]
    struct Refusing {
        refusals: Arc<AtomicU32>,
        taken: Arc<AtomicU32>,
    }

    impl Publish for Refusing {
        async fn publish_to_queue(
            &self,
            queue: &str,
            _eta: Option<DateTime<FixedOffset>>,
            _body: &[u8],
            _properties: BasicProperties,
        ) -> Result<(), BrokerError> {
            let refused = self.refusals.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            match refused {
                Ok(_) => Err(BrokerError::Nacked(queue.to_owned())),
                Err(_) => {
                    self.taken.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        }
    }

    fn refusing(refusals: u32) -> Refusing {
        Refusing { refusals: Arc::new(AtomicU32::new(refusals)), taken: Arc::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_message_is_published_again_until_the_broker_takes_it() {
        let broker = refusing(12);
        let (_stop, stopping) = watch::channel(false);
        let patient = Patient::new(broker.clone(), stopping);
        let started = tokio::time::Instant::now();
        patient.publish_to_queue("celerity.schedule", None, b"x", BasicProperties::default()).await.unwrap();
        assert_eq!(broker.taken.load(Ordering::SeqCst), 1, "published once it was taken");
        // 0.2 + 0.4 + 0.8 + 1.6 s, then 2 s each: the pauses are bounded.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(19) && waited <= Duration::from_secs(21), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_wait_with_the_refusal() {
        let broker = refusing(u32::MAX);
        let (stop, stopping) = watch::channel(false);
        let patient = Patient::new(broker.clone(), stopping);
        let publishing = patient.publish_to_queue("plugin_callback", None, b"x", BasicProperties::default());
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            stop.send(true).unwrap();
        };
        let started = tokio::time::Instant::now();
        let (published, ()) = tokio::join!(publishing, stopper);
        assert!(matches!(published, Err(BrokerError::Nacked(_))), "the broker's own refusal: {published:?}");
        assert!(started.elapsed() < Duration::from_secs(31), "ended with the stop: {:?}", started.elapsed());
        assert_eq!(broker.taken.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_never_cuts_a_publish_short() {
        #[derive(Clone)]
        struct Slow;
        impl Publish for Slow {
            async fn publish_to_queue(
                &self,
                _queue: &str,
                _eta: Option<DateTime<FixedOffset>>,
                _body: &[u8],
                _properties: BasicProperties,
            ) -> Result<(), BrokerError> {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(())
            }
        }
        // Stopping already: the message goes out all the same, and its delivery is acked.
        let (_stop, stopping) = watch::channel(true);
        let published = Patient::new(Slow, stopping).publish_to_queue("q", None, b"x", Default::default()).await;
        assert!(published.is_ok(), "{published:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn any_other_failure_is_returned_at_once() {
        #[derive(Clone)]
        struct Broken;
        impl Publish for Broken {
            async fn publish_to_queue(
                &self,
                _queue: &str,
                _eta: Option<DateTime<FixedOffset>>,
                _body: &[u8],
                _properties: BasicProperties,
            ) -> Result<(), BrokerError> {
                let closed = lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "basic.publish");
                Err(BrokerError::Amqp(closed.into()))
            }
        }
        let (_stop, stopping) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let published = Patient::new(Broken, stopping).publish_to_queue("q", None, b"x", Default::default()).await;
        assert!(matches!(published, Err(BrokerError::Amqp(_))), "{published:?}");
        assert_eq!(started.elapsed(), Duration::ZERO, "a dead channel is the caller's to hand back");
    }
}
