//! RabbitMQ as a benchmark target (`--target amqp://HOST:PORT`, feature `rabbitmq`),
//! through lapin, its official Rust client: the queue workload only. With
//! `--durable` the queue is durable and messages persistent (delivery mode 2);
//! confirmed publishers use publisher confirms, consumers `basic.qos` prefetch and
//! an ack per delivery.

use anyhow::{anyhow, Context};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// Connects to `url` (`amqp://host:port`; the default vhost and guest user).
pub async fn connect(url: &str) -> anyhow::Result<Connection> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .with_context(|| format!("cannot connect to RabbitMQ at {url}"))
}

/// Declares the run's queue afresh: durable (it survives a broker restart) when
/// `durable`, else transient.
pub async fn declare_queue(url: &str, queue: &str, durable: bool) -> anyhow::Result<()> {
    let connection = connect(url).await?;
    let channel = connection.create_channel().await?;
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let options = QueueDeclareOptions {
        durable,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .map_err(|error| anyhow!("declare queue {queue}: {error}"))?;
    connection.close(200, "declared".into()).await.ok();
    Ok(())
}

/// A channel publishing to one queue through the default exchange.
#[derive(Clone)]
pub struct RabbitPublisher {
    /// Keeps the connection open.
    _connection: std::sync::Arc<Connection>,
    channel: Channel,
    queue: String,
    properties: BasicProperties,
}

impl RabbitPublisher {
    /// A publisher to `queue`; with publisher confirms when `confirmed`; persistent
    /// messages when `durable`.
    pub async fn connect(
        url: &str,
        queue: &str,
        confirmed: bool,
        durable: bool,
    ) -> anyhow::Result<Self> {
        let connection = connect(url).await?;
        let channel = connection.create_channel().await?;
        if confirmed {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
        }
        let properties = if durable {
            BasicProperties::default().with_delivery_mode(2)
        } else {
            BasicProperties::default()
        };
        Ok(RabbitPublisher {
            _connection: std::sync::Arc::new(connection),
            channel,
            queue: queue.to_owned(),
            properties,
        })
    }

    /// Sends one message; the returned future completes when RabbitMQ confirms it
    /// (at once without publisher confirms).
    pub async fn send(&self, payload: &[u8]) -> anyhow::Result<lapin::PublisherConfirm> {
        self.channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                payload,
                self.properties.clone(),
            )
            .await
            .map_err(|error| anyhow!("basic.publish: {error}"))
    }
}

/// A consumer of one queue that acks each delivery.
pub struct RabbitConsumer {
    _connection: Connection,
    consumer: lapin::Consumer,
}

impl RabbitConsumer {
    /// Consumes `queue` with `prefetch` unacked deliveries at most.
    pub async fn connect(url: &str, queue: &str, prefetch: u32) -> anyhow::Result<Self> {
        let connection = connect(url).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(
                prefetch.min(u32::from(u16::MAX)) as u16,
                BasicQosOptions::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|error| anyhow!("basic.consume: {error}"))?;
        Ok(RabbitConsumer {
            _connection: connection,
            consumer,
        })
    }

    /// The next payload, acked; `None` when the consumer ended.
    pub async fn next(&mut self) -> anyhow::Result<Option<bytes::Bytes>> {
        match self.consumer.next().await {
            Some(Ok(delivery)) => {
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|error| anyhow!("basic.ack: {error}"))?;
                Ok(Some(bytes::Bytes::from(delivery.data)))
            }
            Some(Err(error)) => Err(anyhow!("consume: {error}")),
            None => Ok(None),
        }
    }
}
