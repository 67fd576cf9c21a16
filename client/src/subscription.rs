//! Subscription streams and queue deliveries.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tern_proto::Frame;

use crate::client::{Client, Inner};
use crate::error::ClientError;
use crate::handoff::HandoffReceiver;
use crate::message::Message;

/// A broadcast subscription: a [`Stream`](futures_core::Stream) of every matching
/// message. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    sid: u32,
    receiver: HandoffReceiver<Message>,
    missed: Arc<AtomicU64>,
}

impl Subscription {
    pub(crate) fn new(
        client: Client,
        sid: u32,
        receiver: HandoffReceiver<Message>,
        missed: Arc<AtomicU64>,
    ) -> Self {
        Subscription {
            client,
            sid,
            receiver,
            missed,
        }
    }

    /// The next message; `None` once the subscription or client has ended.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut subscription = client.subscribe("orders.>").await?;
    /// if let Some(message) = subscription.next().await {
    ///     println!("{}", message.subject());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Option<Message> {
        self.receiver.recv().await
    }

    /// The next message if one has already arrived, without waiting; `None` when
    /// none has (use [`Subscription::next`] to wait). Lets a consumer drain a burst
    /// without an `.await` per message.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut ticks = client.subscribe("ticks").await?;
    /// while let Some(first) = ticks.next().await {
    ///     let mut burst = vec![first];
    ///     while let Some(more) = ticks.try_next() {
    ///         burst.push(more);
    ///     }
    ///     println!("{} ticks", burst.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_next(&mut self) -> Option<Message> {
        self.receiver.try_recv()
    }

    /// How many messages the broker dropped for this subscription because it fell
    /// behind (reported with LAGGED frames). A non-zero value means a gap.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut ticks = client.subscribe("ticks").await?;
    /// while let Some(_tick) = ticks.next().await {
    ///     if ticks.missed() > 0 {
    ///         eprintln!("fell behind: {} ticks missed so far", ticks.missed());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// The subscription id on this connection (as in the broker's logs).
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let subscription = client.subscribe("orders.>").await?;
    /// println!("subscription {}", subscription.id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> u32 {
        self.sid
    }

    /// Ends the subscription (dropping it does the same). Messages already
    /// buffered are discarded.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let subscription = client.subscribe("orders.>").await?;
    /// subscription.unsubscribe();
    /// # Ok(()) }
    /// ```
    pub fn unsubscribe(self) {
        // Drop does the work.
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.client.inner.remove_subscription(self.sid);
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Message>> {
        self.get_mut().receiver.poll_recv(context)
    }
}

/// A queue subscription: a [`Stream`](futures_core::Stream) of [`Delivery`]s to ack.
/// Dropping it leaves the queue; the broker requeues what it had not acked.
#[derive(Debug)]
pub struct QueueSubscription {
    client: Client,
    sid: u32,
    receiver: HandoffReceiver<Delivery>,
}

impl QueueSubscription {
    pub(crate) fn new(client: Client, sid: u32, receiver: HandoffReceiver<Delivery>) -> Self {
        QueueSubscription {
            client,
            sid,
            receiver,
        }
    }

    /// The next delivery; `None` once the subscription or client has ended.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let mut jobs = client.queue_subscribe("jobs", 8).await?;
    /// while let Some(job) = jobs.next().await {
    ///     job.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Option<Delivery> {
        self.receiver.recv().await
    }

    /// Changes how many unacked deliveries this consumer may hold; 0 pauses it.
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let jobs = client.queue_subscribe("jobs", 8).await?;
    /// jobs.set_prefetch(0)?; // pause
    /// jobs.set_prefetch(32)?; // resume with a wider window
    /// # Ok(()) }
    /// ```
    pub fn set_prefetch(&self, prefetch: u32) -> Result<(), ClientError> {
        if self.client.inner.write_control(&Frame::Credit {
            sid: self.sid,
            prefetch,
        }) {
            Ok(())
        } else {
            Err(ClientError::Disconnected)
        }
    }

    /// The subscription id on this connection (as in the broker's logs).
    ///
    /// ```no_run
    /// # async fn example(client: tern_client::Client) -> Result<(), tern_client::ClientError> {
    /// let jobs = client.queue_subscribe("jobs", 8).await?;
    /// println!("consumer {}", jobs.id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> u32 {
        self.sid
    }
}

impl Drop for QueueSubscription {
    fn drop(&mut self) {
        self.client.inner.remove_subscription(self.sid);
    }
}

impl futures_core::Stream for QueueSubscription {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.get_mut().receiver.poll_recv(context)
    }
}

/// A message from a queue, to be acked (done) or nacked (failed).
///
/// Dereferences to its [`Message`]. A delivery that is neither acked nor nacked
/// stays with this consumer until the connection or subscription ends, when the
/// broker requeues it.
#[derive(Debug)]
pub struct Delivery {
    message: Message,
    delivery_id: u64,
    redelivered: bool,
    epoch: u64,
    inner: Arc<Inner>,
}

impl crate::handoff::Weighed for Delivery {
    fn weight(&self) -> usize {
        self.message.payload().len()
    }
}

impl Delivery {
    pub(crate) fn new(
        message: Message,
        delivery_id: u64,
        redelivered: bool,
        epoch: u64,
        inner: Arc<Inner>,
    ) -> Self {
        Delivery {
            message,
            delivery_id,
            redelivered,
            epoch,
            inner,
        }
    }

    /// The broker's id for this delivery (what ACK and NACK carry).
    ///
    /// ```no_run
    /// # fn example(delivery: tern_client::Delivery) {
    /// println!("delivery {:#x}", delivery.id());
    /// # }
    /// ```
    pub fn id(&self) -> u64 {
        self.delivery_id
    }

    /// Whether this message was delivered before (to this or another consumer) and
    /// not acked: work on it may have been done already.
    ///
    /// ```no_run
    /// # async fn example(delivery: tern_client::Delivery) -> Result<(), tern_client::ClientError> {
    /// if delivery.is_redelivered() {
    ///     // check whether the side effect already happened
    /// }
    /// delivery.ack().await?;
    /// # Ok(()) }
    /// ```
    pub fn is_redelivered(&self) -> bool {
        self.redelivered
    }

    /// The message.
    ///
    /// ```no_run
    /// # fn example(delivery: tern_client::Delivery) {
    /// println!("{} bytes on {}", delivery.message().payload().len(), delivery.message().subject());
    /// # }
    /// ```
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Takes the message out (after which it can no longer be acked; the broker
    /// requeues it when this consumer goes away).
    ///
    /// ```no_run
    /// # fn example(delivery: tern_client::Delivery) {
    /// let message = delivery.into_message();
    /// # }
    /// ```
    pub fn into_message(self) -> Message {
        self.message
    }

    /// Settles the delivery: the queue forgets the message.
    ///
    /// ```no_run
    /// # async fn example(delivery: tern_client::Delivery) -> Result<(), tern_client::ClientError> {
    /// delivery.ack().await?;
    /// # Ok(()) }
    /// ```
    pub async fn ack(&self) -> Result<(), ClientError> {
        self.settle(Frame::Ack {
            delivery_id: self.delivery_id,
        })
    }

    /// Rejects the delivery: `requeue` puts it back at the front of the queue
    /// (redelivered), otherwise it is discarded.
    ///
    /// ```no_run
    /// # async fn example(delivery: tern_client::Delivery) -> Result<(), tern_client::ClientError> {
    /// delivery.nack(true).await?; // try again later
    /// # Ok(()) }
    /// ```
    pub async fn nack(&self, requeue: bool) -> Result<(), ClientError> {
        self.settle(Frame::Nack {
            delivery_id: self.delivery_id,
            requeue,
        })
    }

    fn settle(&self, frame: Frame) -> Result<(), ClientError> {
        let inner = &self.inner;
        if inner.epoch() != self.epoch {
            return Err(ClientError::StaleDelivery);
        }
        if inner.write_control(&frame) {
            Ok(())
        } else {
            Err(ClientError::Disconnected)
        }
    }
}

impl std::ops::Deref for Delivery {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}
