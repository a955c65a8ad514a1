//! Kafka (`rdkafka`, librdkafka): the relay's producer, topic set-up, and a
//! consumer that turns Kafka messages back into [`StreamMessage`]s.
//!
//! Settings and their sources (librdkafka `CONFIGURATION.md`):
//! - `enable.idempotence=true`, set explicitly (librdkafka's default is
//!   `false`): the broker drops a retried duplicate and keeps each
//!   partition's order; it implies `acks=all` and at most 5 requests in
//!   flight per connection, which we also set so the intent is written down.
//! - `message.timeout.ms`: how long librdkafka keeps trying one message
//!   before its delivery report says failed; the relay then sends it again
//!   in a later round (the outbox row stays unpublished).
//! - `linger.ms=5`: a little batching without a noticeable delay.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use usher_actors::{BoxFuture, Publisher, StreamMessage};
use usher_engine::Millis;

use crate::outbox::TOPICS;

/// The headers every message carries (their names follow Kafka's
/// lower-case, dash-separated habit; `traceparent` is W3C Trace Context's).
pub mod header {
    /// The outbox row's UUID: the consumers' deduplication key.
    pub const MESSAGE_ID: &str = "message-id";
    /// The payload's full protobuf name, e.g. `usher.events.v1.SeatsSold`.
    pub const MESSAGE_TYPE: &str = "message-type";
    /// The payload schema's version within its package, a decimal number.
    pub const SCHEMA_VERSION: &str = "schema-version";
    /// When the change committed, RFC 3339 in UTC with milliseconds.
    pub const OCCURRED_AT: &str = "occurred-at";
    /// The message's place in its event's story, a decimal number from 1.
    pub const EVENT_SEQ: &str = "event-seq";
    /// W3C Trace Context, when the change came from a traced request.
    pub const TRACEPARENT: &str = "traceparent";
}

/// Where and how the stream goes to Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Put before every topic name (`usher.` makes `usher.seats-sold`);
    /// empty by default.
    pub topic_prefix: String,
    /// Partitions of each topic Usher creates (existing topics are left as
    /// they are). Each event's messages stay in one partition.
    pub partitions: i32,
    /// Replicas of each topic Usher creates.
    pub replication: i32,
    /// `retention.ms` of each topic Usher creates.
    pub retention_ms: u64,
    /// librdkafka `client.id`: the node's name.
    pub client_id: String,
    /// librdkafka `message.timeout.ms`.
    pub message_timeout_ms: u64,
}

impl KafkaConfig {
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("client.id", &self.client_id);
        c
    }
}

/// Renders ms since the epoch as RFC 3339 UTC (`2026-11-30T21:13:32.123Z`).
pub fn rfc3339(t: Millis) -> String {
    jiff::Timestamp::from_millisecond(t.0).map(|ts| format!("{ts:.3}")).unwrap_or_else(|_| t.0.to_string())
}

/// Creates Usher's topics that do not exist yet, with the configured
/// partitions, replicas and retention.
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = cfg.client().create().map_err(|e| format!("kafka client: {e}"))?;
    let names: Vec<String> = TOPICS.iter().map(|(t, _)| cfg.topic(t)).collect();
    let retention = cfg.retention_ms.to_string();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, cfg.partitions, TopicReplication::Fixed(cfg.replication)).set("retention.ms", &retention))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))).request_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&topics, &opts).await.map_err(|e| format!("creating topics on {}: {e}", cfg.brokers))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name} on {}: {code}", cfg.brokers)),
        }
    }
    Ok(())
}

/// The relay's Kafka producer. An idempotent producer can hit a fatal error
/// (librdkafka `rd_kafka_fatal_error`, e.g. `ProducerFenced` when a broker
/// that stalled past `message.timeout.ms` sees the producer's old epoch):
/// it then fails every message for good, so the publisher replaces it with
/// a new one (a new producer id) and the relay sends the rows again.
pub struct KafkaPublisher {
    producer: std::sync::Mutex<std::sync::Arc<FutureProducer>>,
    cfg: KafkaConfig,
}

impl KafkaPublisher {
    pub fn new(cfg: KafkaConfig) -> Result<KafkaPublisher, String> {
        let producer = Self::producer(&cfg)?;
        Ok(KafkaPublisher { producer: std::sync::Mutex::new(std::sync::Arc::new(producer)), cfg })
    }

    fn producer(cfg: &KafkaConfig) -> Result<FutureProducer, String> {
        cfg.client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
            .set("linger.ms", "5")
            .create()
            .map_err(|e| format!("kafka producer for {}: {e}", cfg.brokers))
    }

    fn current(&self) -> std::sync::Arc<FutureProducer> {
        self.producer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces a producer that hit a fatal error, or whose messages came
    /// back with an error about its producer id or epoch (`fenced`).
    fn renew_if_fatal(&self, used: &std::sync::Arc<FutureProducer>, fenced: bool) {
        let (code, why) = match used.client().fatal_error() {
            Some((code, why)) => (code.to_string(), why),
            None if fenced => ("fenced".to_owned(), "a message came back with a producer id or epoch error".to_owned()),
            None => return,
        };
        match Self::producer(&self.cfg) {
            Ok(p) => {
                tracing::warn!(%code, error = %why, brokers = %self.cfg.brokers, "the kafka producer failed for good; starting a new one");
                let mut cur = self.producer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if std::sync::Arc::ptr_eq(&cur, used) {
                    *cur = std::sync::Arc::new(p);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot start a new kafka producer"),
        }
    }
}

fn headers_of(m: &StreamMessage) -> OwnedHeaders {
    let version = m.schema_version.to_string();
    let at = rfc3339(m.occurred_at);
    let seq = m.event_seq.to_string();
    let mut h = OwnedHeaders::new_with_capacity(6)
        .insert(Header { key: header::MESSAGE_ID, value: Some(m.message_id.as_bytes()) })
        .insert(Header { key: header::MESSAGE_TYPE, value: Some(m.message_type.as_bytes()) })
        .insert(Header { key: header::SCHEMA_VERSION, value: Some(version.as_bytes()) })
        .insert(Header { key: header::OCCURRED_AT, value: Some(at.as_bytes()) })
        .insert(Header { key: header::EVENT_SEQ, value: Some(seq.as_bytes()) });
    if let Some(tp) = &m.traceparent {
        h = h.insert(Header { key: header::TRACEPARENT, value: Some(tp.as_bytes()) });
    }
    h
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(&'a self, msgs: &'a [StreamMessage]) -> BoxFuture<'a, Vec<bool>> {
        Box::pin(async move {
            // Enqueue all in order first (one event's messages keep their
            // order in their partition), then wait for every report.
            let producer = self.current();
            let mut pending = Vec::with_capacity(msgs.len());
            for m in msgs {
                let topic = self.cfg.topic(&m.topic);
                let record = FutureRecord::to(&topic)
                    .key(m.key.as_bytes())
                    .payload(m.payload.as_slice())
                    .headers(headers_of(m))
                    .timestamp(m.occurred_at.0);
                match producer.send_result(record) {
                    Ok(f) => pending.push(Some(f)),
                    // The local queue is full: this and the rest wait for
                    // the next round.
                    Err(_) => break,
                }
            }
            let mut acked = Vec::with_capacity(msgs.len());
            let mut first_error = None;
            let mut fenced = false;
            for f in pending.into_iter().flatten() {
                match f.await {
                    Ok(Ok(_)) => acked.push(true),
                    Ok(Err((e, _))) => {
                        fenced |= matches!(
                            e.rdkafka_error_code(),
                            Some(
                                RDKafkaErrorCode::ProducerFenced
                                    | RDKafkaErrorCode::InvalidProducerEpoch
                                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                                    | RDKafkaErrorCode::UnknownProducerId
                                    | RDKafkaErrorCode::Fatal
                            )
                        );
                        first_error.get_or_insert_with(|| e.to_string());
                        acked.push(false);
                    }
                    Err(_) => {
                        first_error.get_or_insert_with(|| "the producer dropped the message".to_owned());
                        acked.push(false);
                    }
                }
            }
            if let Some(e) = first_error {
                tracing::warn!(error = %e, brokers = %self.cfg.brokers, "kafka did not acknowledge a message");
                self.renew_if_fatal(&producer, fenced);
            }
            acked.resize(msgs.len(), false);
            acked
        })
    }
    fn describe(&self) -> String {
        format!("kafka {}", self.cfg.brokers)
    }
}

/// A consumer of Usher's topics in the consumer group `group`, reading a
/// new group's partitions from the beginning when `from_start` (librdkafka
/// `auto.offset.reset=earliest`) and committing nothing: for `usher stream
/// tail` and the tests, each with a group of its own.
pub fn consumer(cfg: &KafkaConfig, group: &str, from_start: bool, topics: &[&str]) -> Result<StreamConsumer, String> {
    let c: StreamConsumer = cfg
        .client()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", if from_start { "earliest" } else { "latest" })
        .create()
        .map_err(|e| format!("kafka consumer for {}: {e}", cfg.brokers))?;
    let names: Vec<String> = topics.iter().map(|t| cfg.topic(t)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    c.subscribe(&refs).map_err(|e| format!("subscribing to {refs:?}: {e}"))?;
    Ok(c)
}

/// A Kafka message back as a [`StreamMessage`] (`row` 0, `offset` the
/// Kafka offset), or why not (a header missing or malformed).
pub fn decode(cfg: &KafkaConfig, m: &BorrowedMessage<'_>) -> Result<StreamMessage, String> {
    let get = |name: &str| -> Option<String> {
        m.headers()?.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("no {name} header"));
    let message_id = need(get(header::MESSAGE_ID), header::MESSAGE_ID)?;
    let message_type = need(get(header::MESSAGE_TYPE), header::MESSAGE_TYPE)?;
    let schema_version = need(get(header::SCHEMA_VERSION), header::SCHEMA_VERSION)?.parse().map_err(|e| format!("schema-version: {e}"))?;
    let event_seq = need(get(header::EVENT_SEQ), header::EVENT_SEQ)?.parse().map_err(|e| format!("event-seq: {e}"))?;
    let traceparent = get(header::TRACEPARENT);
    let topic = m.topic().strip_prefix(cfg.topic_prefix.as_str()).unwrap_or(m.topic()).to_owned();
    Ok(StreamMessage {
        row: 0,
        message_id,
        topic,
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
        event_seq,
        message_type,
        schema_version,
        occurred_at: Millis(m.timestamp().to_millis().unwrap_or(0)),
        traceparent,
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        offset: Some(m.offset()),
        partition: Some(m.partition()),
    })
}

/// Runs `projection` from Kafka while this node relays (one consumer per
/// database, like the relay; it moves with the relay lock). It reads every
/// partition of every Usher topic by assignment, not through a consumer
/// group: the next offset of each partition is stored by the projection in
/// the same transaction as its effect (`Projection::kafka_offsets`), so
/// nothing depends on a group coordinator noticing a dead member, and a
/// crash re-reads exactly what was not applied. A rebuild (a new
/// generation, which also empties the offsets) is noticed within 2 s and
/// read from the beginning. Runs until `stopping` turns true.
pub async fn run_projection(
    cfg: KafkaConfig,
    projection: std::sync::Arc<dyn usher_actors::Projection>,
    clock: usher_actors::Clock,
    mut relaying: tokio::sync::watch::Receiver<usher_actors::RelayStatus>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let name = projection.name();
    loop {
        while !relaying.borrow().relaying {
            tokio::select! {
                r = relaying.changed() => if r.is_err() { return },
                _ = stopping.changed() => return,
            }
        }
        match consume(&cfg, projection.as_ref(), &clock, &mut relaying, &mut stopping).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(consumer = name, error = %e, "kafka consumer stopped; starting again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stopping.changed() => return,
                }
            }
        }
    }
}

/// Partitions of each Usher topic, or why not yet (a topic missing).
fn partitions(cfg: &KafkaConfig, c: &StreamConsumer) -> Result<Vec<(&'static str, i32)>, String> {
    let md =
        tokio::task::block_in_place(|| c.fetch_metadata(None, Duration::from_secs(5))).map_err(|e| format!("reading metadata: {e}"))?;
    let mut out = Vec::new();
    for (t, _) in TOPICS {
        let name = cfg.topic(t);
        let n = md.topics().iter().find(|m| m.name() == name).map_or(0, |m| m.partitions().len());
        if n == 0 {
            return Err(format!("topic {name} is not there yet"));
        }
        out.push((*t, n as i32));
    }
    Ok(out)
}

/// One assignment's life: `Ok(true)` to stop for good, `Ok(false)` to
/// assign again (the generation or the partitions changed, or this node no
/// longer relays).
async fn consume(
    cfg: &KafkaConfig,
    projection: &dyn usher_actors::Projection,
    clock: &usher_actors::Clock,
    relaying: &mut tokio::sync::watch::Receiver<usher_actors::RelayStatus>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<bool, String> {
    use rdkafka::{Offset, TopicPartitionList};
    use usher_engine::limits::CONSUMER_BATCH_MAX;
    let name = projection.name();
    let generation = projection.generation().await.map_err(|e| e.to_string())?;
    // librdkafka wants a group id even when nothing is committed to it.
    let c: StreamConsumer = cfg
        .client()
        .set("group.id", format!("usher-{name}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .map_err(|e| format!("kafka consumer for {}: {e}", cfg.brokers))?;
    let parts = partitions(cfg, &c)?;
    let stored: std::collections::HashMap<(String, i32), i64> =
        projection.kafka_offsets().await.map_err(|e| e.to_string())?.into_iter().map(|k| ((k.topic, k.partition), k.next_offset)).collect();
    let mut tpl = TopicPartitionList::new();
    for (t, n) in &parts {
        for p in 0..*n {
            let from = stored.get(&(t.to_string(), p)).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(&cfg.topic(t), p, from).map_err(|e| e.to_string())?;
        }
    }
    c.assign(&tpl).map_err(|e| format!("assigning partitions: {e}"))?;
    let mut checked = std::time::Instant::now();
    let mut metadata_checked = std::time::Instant::now();
    loop {
        if *stopping.borrow() {
            return Ok(true);
        }
        if !relaying.borrow().relaying {
            return Ok(false);
        }
        if checked.elapsed() > Duration::from_secs(2) {
            checked = std::time::Instant::now();
            if projection.generation().await.is_ok_and(|g| g != generation) {
                return Ok(false);
            }
        }
        if metadata_checked.elapsed() > Duration::from_secs(30) {
            metadata_checked = std::time::Instant::now();
            if partitions(cfg, &c).is_ok_and(|now| now != parts) {
                return Ok(false);
            }
        }
        let first = tokio::select! {
            r = c.recv() => r,
            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            _ = stopping.changed() => return Ok(true),
        };
        let mut batch = Vec::new();
        let push = |batch: &mut Vec<StreamMessage>, r: Result<BorrowedMessage<'_>, rdkafka::error::KafkaError>| match r {
            Ok(m) => match decode(cfg, &m) {
                Ok(s) => batch.push(s),
                Err(why) => tracing::error!(consumer = name, topic = m.topic(), offset = m.offset(), error = %why, "skipping a message"),
            },
            Err(e) => tracing::warn!(consumer = name, error = %e, "kafka consumer error"),
        };
        push(&mut batch, first);
        let until = tokio::time::Instant::now() + Duration::from_millis(50);
        while batch.len() < CONSUMER_BATCH_MAX {
            match tokio::time::timeout_at(until, c.recv()).await {
                Ok(r) => push(&mut batch, r),
                Err(_) => break,
            }
        }
        let mut wait = Duration::from_millis(50);
        while let Err(e) = projection.apply(&batch, clock.now()).await {
            tracing::warn!(consumer = name, error = %e, "cannot apply a batch; trying again");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.changed() => return Ok(true),
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}
