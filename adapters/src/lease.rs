//! Cluster ownership: one lease per event in Redis, fenced by the database.
//!
//! Redis says where an event runs; the database says whether a write counts
//! (Kleppmann, "How to do distributed locking"; Temporal's shard `range_id`).
//!
//! - **Take** (`acquire`): `SET usher:lease:{event} {node} NX PX {ttl}`. On
//!   success the node asks the store for the event's next epoch
//!   (`Store::fence_event` with `EpochClaim::Next`: `owner_epoch + 1`, an
//!   `UPDATE` of the event's row that waits for the previous owner's
//!   in-flight batch, which holds that row, to commit or roll back). Every
//!   later write of the previous owner carries the old epoch and is refused.
//!   The epoch is never minted by Redis: a Redis that restarts empty cannot
//!   roll it back.
//! - **Renew**: every `renew_ms`, one script extends every lease this node
//!   still holds (`GET == node` then `PEXPIRE`), and refreshes the node's
//!   membership record. A lease the script finds gone or another node's is
//!   revoked at once (`Ownership::revocations`); when Redis does not answer,
//!   every lease is revoked once the last good renewal is older than the TTL
//!   less a margin for clock drift.
//! - **Give back** (`release`, `release_all`): compare-and-delete, so a node
//!   never deletes a lease that became another's.
//! - **Membership**: `usher:node:{node}` holds a `NodeRecord` (addresses,
//!   owned events with their epochs, fenced writes) with the same TTL as the
//!   leases: a dead node's record expires with its leases.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};
use usher_actors::{BoxFuture, Epoch, EpochClaim, Ownership, OwnershipError, Store, StoreError};
use usher_engine::EventId;

/// What a node needs to join a cluster.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// `redis://host:port[/db]`.
    pub redis_url: String,
    /// The node's name (`--node-name`), e.g. `node-1`; the lease holder is
    /// this name plus a random suffix per process, so a restarted node never
    /// mistakes its predecessor's leases for its own.
    pub node_name: String,
    /// Where other nodes reach this node's gRPC server (`host:port`).
    pub grpc_addr: String,
    /// Where people reach this node's HTTP side (`host:port`), for `usher cluster status`.
    pub http_addr: String,
    /// Where this node's admin listener (metrics, status) answers
    /// (`host:port`), for `usher status`.
    pub admin_addr: String,
    /// How long a lease lasts without renewal, in ms: the longest an event
    /// stays unserved after its owner dies.
    pub ttl_ms: u64,
    /// How often leases are renewed, in ms; well under `ttl_ms`.
    pub renew_ms: u64,
    /// Prefix of every key (`usher:`); tests give each cluster its own.
    pub key_prefix: String,
}

/// A node as it describes itself in Redis (`usher:node:{node}`, JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    /// The lease holder's id: `name/suffix`.
    pub node: String,
    pub name: String,
    pub grpc_addr: String,
    pub http_addr: String,
    /// The admin listener (`/metrics`, `/status`); empty from nodes that
    /// predate it.
    #[serde(default)]
    pub admin_addr: String,
    /// Unix ms.
    pub started_ms: i64,
    /// Unix ms of the renewal that wrote this record.
    pub heartbeat_ms: i64,
    /// Events this node owns, with the epoch it took each one with.
    pub events: Vec<(EventId, i64)>,
    /// Writes of this node the epoch fence refused since it started.
    pub fenced_writes: u64,
}

/// A lease found in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub event_id: EventId,
    pub node: String,
    /// Ms left before it expires.
    pub ttl_ms: i64,
}

/// The drift allowed between this node's clock and Redis's, as a share of
/// the TTL: a lease is taken for lost once `ttl × (1 − 1/8)` has passed
/// since the last renewal that Redis confirmed.
const DRIFT_DIVISOR: u32 = 8;
/// Leases renewed per script call (bounded arguments per Redis command).
const RENEW_CHUNK: usize = 1_000;

const RENEW: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Grants events to this node while it holds their Redis leases.
pub struct RedisLeases {
    conn: ConnectionManager,
    cfg: LeaseConfig,
    node: String,
    store: Arc<dyn Store>,
    started_ms: i64,
    /// The grants this node holds now.
    held: Mutex<HashMap<EventId, Epoch>>,
    /// Until when every lease in `held` is surely still this node's.
    valid_until: Mutex<Instant>,
    lost_tx: mpsc::UnboundedSender<(EventId, Epoch)>,
    lost_rx: Mutex<Option<mpsc::UnboundedReceiver<(EventId, Epoch)>>>,
    draining: AtomicBool,
    /// Events another node held when last asked, and until when to believe
    /// it without asking Redis again (a quarter of the renewal period): a
    /// node forwarding a burst of requests asks Redis once, not per request.
    elsewhere: Mutex<HashMap<EventId, (String, Instant)>>,
    renew: Arc<redis::Script>,
    give_back: Arc<redis::Script>,
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A connection to `url` whose calls give up after `timeout`.
pub async fn redis_connection(url: &str, timeout: Duration) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable(format!("redis url {url}: {e}")))?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(timeout);
    client.get_connection_manager_with_config(cfg).await.map_err(redis_error)
}

impl RedisLeases {
    /// Connects, registers the node and starts renewing. Fails when Redis
    /// does not answer: a node that cannot take leases must not serve.
    pub async fn start(cfg: LeaseConfig, store: Arc<dyn Store>) -> Result<Arc<RedisLeases>, StoreError> {
        if cfg.renew_ms == 0 || cfg.renew_ms * 2 > cfg.ttl_ms {
            return Err(StoreError::Unavailable(format!(
                "lease renewal every {} ms must be at most half the lease TTL ({} ms)",
                cfg.renew_ms, cfg.ttl_ms
            )));
        }
        let conn = redis_connection(&cfg.redis_url, Duration::from_millis((cfg.ttl_ms / 4).max(100))).await?;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let node = format!("{}/{}", cfg.node_name, &suffix[..8]);
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let leases = Arc::new(RedisLeases {
            conn,
            node,
            store,
            started_ms: unix_ms(),
            held: Mutex::new(HashMap::new()),
            valid_until: Mutex::new(Instant::now() + Duration::from_millis(cfg.ttl_ms)),
            lost_tx,
            lost_rx: Mutex::new(Some(lost_rx)),
            draining: AtomicBool::new(false),
            elsewhere: Mutex::new(HashMap::new()),
            renew: Arc::new(redis::Script::new(RENEW)),
            give_back: Arc::new(redis::Script::new(RELEASE)),
            cfg,
        });
        leases.heartbeat(&[]).await?;
        info!(node = %leases.node, ttl_ms = leases.cfg.ttl_ms, renew_ms = leases.cfg.renew_ms, "joined the cluster");
        tokio::spawn(renew_loop(Arc::downgrade(&leases), Duration::from_millis(leases.cfg.renew_ms)));
        Ok(leases)
    }

    /// This process's lease-holder id (`name/suffix`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The nodes alive, as their records in Redis say (on this node's
    /// connection).
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        nodes(&mut self.conn.clone(), &self.cfg.key_prefix).await
    }

    /// Leases this node holds now.
    pub fn held_count(&self) -> usize {
        self.held.lock().expect("held").len()
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    fn lease_key(&self, event: EventId) -> String {
        format!("{}lease:{event}", self.cfg.key_prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}node:{node}", self.cfg.key_prefix)
    }

    /// The record of node `node` (a lease holder's id), if it is alive.
    pub async fn node_record(&self, node: &str) -> Result<Option<NodeRecord>, StoreError> {
        let raw: Option<String> =
            redis::cmd("GET").arg(self.node_key(node)).query_async(&mut self.conn.clone()).await.map_err(redis_error)?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Who holds `event`'s lease now, if anyone.
    pub async fn owner_of(&self, event: EventId) -> Result<Option<String>, StoreError> {
        redis::cmd("GET").arg(self.lease_key(event)).query_async(&mut self.conn.clone()).await.map_err(redis_error)
    }

    /// The membership record, refreshed with what this node holds.
    async fn heartbeat(&self, events: &[(EventId, Epoch)]) -> Result<(), StoreError> {
        let fenced_writes = self.store.commit_stats().iter().map(|s| s.fenced).sum();
        let record = NodeRecord {
            node: self.node.clone(),
            name: self.cfg.node_name.clone(),
            grpc_addr: self.cfg.grpc_addr.clone(),
            http_addr: self.cfg.http_addr.clone(),
            admin_addr: self.cfg.admin_addr.clone(),
            started_ms: self.started_ms,
            heartbeat_ms: unix_ms(),
            events: events.iter().map(|(e, ep)| (*e, ep.0)).collect(),
            fenced_writes,
        };
        let json = serde_json::to_string(&record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let _: () = redis::cmd("SET")
            .arg(self.node_key(&self.node))
            .arg(json)
            .arg("PX")
            .arg(self.cfg.ttl_ms)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// One renewal round: extends every lease still held, revokes the
    /// others; when Redis fails, revokes everything once the leases may
    /// have expired.
    async fn renew_round(&self) {
        let sent = Instant::now();
        let held: Vec<(EventId, Epoch)> = self.held.lock().expect("held").iter().map(|(e, ep)| (*e, *ep)).collect();
        let mut lost = Vec::new();
        let mut failed = None;
        for chunk in held.chunks(RENEW_CHUNK) {
            let mut inv = self.renew.prepare_invoke();
            for (e, _) in chunk {
                inv.key(self.lease_key(*e));
            }
            inv.arg(&self.node).arg(self.cfg.ttl_ms);
            match inv.invoke_async::<Vec<i64>>(&mut self.conn.clone()).await {
                Ok(kept) => lost.extend(chunk.iter().zip(kept).filter(|(_, k)| *k == 0).map(|(g, _)| *g)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none()
            && let Err(e) = self.heartbeat(&held).await
        {
            warn!(error = %e, "could not refresh this node's membership record");
        }
        match failed {
            None => {
                let margin = Duration::from_millis(self.cfg.ttl_ms / DRIFT_DIVISOR as u64);
                *self.valid_until.lock().expect("valid_until") = sent + Duration::from_millis(self.cfg.ttl_ms) - margin;
                for (event, epoch) in lost {
                    warn!(event_id = %event, epoch = %epoch, "this node's lease on the event is gone (expired, taken, or Redis restarted)");
                    self.revoke(event, epoch);
                }
            }
            Some(e) => {
                // What the chunks that did answer found gone is gone.
                for (event, epoch) in lost {
                    self.revoke(event, epoch);
                }
                let until = *self.valid_until.lock().expect("valid_until");
                if Instant::now() >= until {
                    if !held.is_empty() {
                        warn!(error = %e, events = held.len(), "no lease renewal confirmed within the TTL; giving up every event");
                    }
                    for (event, epoch) in held {
                        self.revoke(event, epoch);
                    }
                } else {
                    warn!(error = %e, "lease renewal failed; retrying before the leases expire");
                }
            }
        }
    }

    fn revoke(&self, event: EventId, epoch: Epoch) {
        let mut held = self.held.lock().expect("held");
        if held.get(&event) == Some(&epoch) {
            held.remove(&event);
            drop(held);
            metrics::counter!(usher_actors::metrics::names::LEASES_LOST).increment(1);
            let _ = self.lost_tx.send((event, epoch));
        }
    }

    async fn compare_and_delete(&self, key: String) {
        if let Err(e) = self.give_back.key(key).arg(&self.node).invoke_async::<i64>(&mut self.conn.clone()).await {
            warn!(error = %e, "could not give a lease back; it expires on its own");
        }
    }
}

/// What a cluster's Redis says: every live node's record and every lease,
/// for `usher cluster status` (read-only: it joins nothing).
pub async fn cluster_view(redis_url: &str, key_prefix: &str) -> Result<(Vec<NodeRecord>, Vec<LeaseRecord>), StoreError> {
    let mut conn = redis_connection(redis_url, Duration::from_secs(5)).await?;
    Ok((nodes(&mut conn, key_prefix).await?, leases(&mut conn, key_prefix).await?))
}

async fn nodes(conn: &mut ConnectionManager, key_prefix: &str) -> Result<Vec<NodeRecord>, StoreError> {
    let keys = scan(conn, &format!("{key_prefix}node:*")).await?;
    let mut out = Vec::new();
    for k in keys {
        let raw: Option<String> = redis::cmd("GET").arg(&k).query_async(conn).await.map_err(redis_error)?;
        if let Some(r) = raw.and_then(|r| serde_json::from_str::<NodeRecord>(&r).ok()) {
            out.push(r);
        }
    }
    out.sort_by(|a, b| (&a.name, &a.node).cmp(&(&b.name, &b.node)));
    Ok(out)
}

async fn leases(conn: &mut ConnectionManager, key_prefix: &str) -> Result<Vec<LeaseRecord>, StoreError> {
    let prefix = format!("{key_prefix}lease:");
    let keys = scan(conn, &format!("{prefix}*")).await?;
    let mut out = Vec::new();
    for k in keys {
        let Ok(event_id) = EventId::parse(&k[prefix.len()..]) else { continue };
        let (node, ttl_ms): (Option<String>, i64) =
            redis::pipe().cmd("GET").arg(&k).cmd("PTTL").arg(&k).query_async(conn).await.map_err(redis_error)?;
        if let Some(node) = node {
            out.push(LeaseRecord { event_id, node, ttl_ms });
        }
    }
    out.sort_by_key(|l| l.event_id);
    Ok(out)
}

/// Every key matching `pattern` (SCAN, so Redis never blocks on a KEYS).
async fn scan(conn: &mut ConnectionManager, pattern: &str) -> Result<Vec<String>, StoreError> {
    let mut cursor = 0u64;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1_000)
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        out.extend(keys);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

async fn renew_loop(leases: Weak<RedisLeases>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(l) = leases.upgrade() else { return };
        if l.draining.load(Ordering::Acquire) {
            return;
        }
        l.renew_round().await;
    }
}

impl Ownership for RedisLeases {
    fn acquire(&self, event: EventId) -> BoxFuture<'_, Result<Epoch, OwnershipError>> {
        Box::pin(async move {
            if self.draining.load(Ordering::Acquire) {
                return Err(OwnershipError::Store(StoreError::Unavailable("this node is draining".into())));
            }
            if let Some((owner, until)) = self.elsewhere.lock().expect("elsewhere").get(&event)
                && Instant::now() < *until
            {
                return Err(OwnershipError::Elsewhere { event_id: event, owner: owner.clone() });
            }
            let key = self.lease_key(event);
            let mut conn = self.conn.clone();
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&self.node)
                .arg("NX")
                .arg("PX")
                .arg(self.cfg.ttl_ms)
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
            if set.is_none() {
                let owner: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.map_err(redis_error)?;
                match owner {
                    // Ours still: an actor restarted before its release ran.
                    Some(o) if o == self.node => {}
                    Some(o) => {
                        let mut hints = self.elsewhere.lock().expect("elsewhere");
                        // Bounded like the events a node may serve.
                        if hints.len() >= usher_engine::limits::EVENTS_LOADED_MAX {
                            hints.clear();
                        }
                        hints.insert(event, (o.clone(), Instant::now() + Duration::from_millis(self.cfg.renew_ms / 4)));
                        return Err(OwnershipError::Elsewhere { event_id: event, owner: o });
                    }
                    // Expired between the two calls: the next look takes it.
                    None => {
                        return Err(OwnershipError::Store(StoreError::Unavailable(format!(
                            "event {event}'s lease changed hands while this node looked; retry"
                        ))));
                    }
                }
            }
            match self.store.fence_event(event, EpochClaim::Next).await {
                Ok(epoch) => {
                    self.elsewhere.lock().expect("elsewhere").remove(&event);
                    self.held.lock().expect("held").insert(event, epoch);
                    info!(event_id = %event, epoch = %epoch, "took the event");
                    metrics::counter!(usher_actors::metrics::names::LEASES_TAKEN).increment(1);
                    Ok(epoch)
                }
                Err(e) => {
                    self.compare_and_delete(key).await;
                    Err(e.into())
                }
            }
        })
    }

    /// The grant stays in `held` until Redis has dropped the lease, so that
    /// a drain's `release_all`, running while this is in flight, still sees
    /// it and gives it back before the process exits.
    fn release(&self, event: EventId, epoch: Epoch) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.held.lock().expect("held").get(&event) != Some(&epoch) {
                return;
            }
            self.compare_and_delete(self.lease_key(event)).await;
            let mut held = self.held.lock().expect("held");
            if held.get(&event) == Some(&epoch) {
                held.remove(&event);
            }
        })
    }

    fn describe(&self) -> String {
        format!("cluster node {} (Redis leases of {} ms at {})", self.node, self.cfg.ttl_ms, self.cfg.redis_url)
    }

    fn revocations(&self) -> Option<mpsc::UnboundedReceiver<(EventId, Epoch)>> {
        self.lost_rx.lock().expect("lost_rx").take()
    }

    fn sweep_ms(&self) -> Option<u64> {
        Some(self.cfg.renew_ms * 2)
    }

    /// One pipelined `EXISTS` per chunk of events: the sweep then tries to
    /// take only those whose lease is gone. While Redis fails: none.
    fn unclaimed<'a>(&'a self, events: &'a [EventId]) -> BoxFuture<'a, Vec<EventId>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for chunk in events.chunks(RENEW_CHUNK) {
                let mut pipe = redis::pipe();
                for e in chunk {
                    pipe.cmd("EXISTS").arg(self.lease_key(*e));
                }
                match pipe.query_async::<Vec<i64>>(&mut self.conn.clone()).await {
                    Ok(held) => out.extend(chunk.iter().zip(held).filter(|(_, h)| *h == 0).map(|(e, _)| *e)),
                    Err(e) => {
                        warn!(error = %e, "cannot look for orphaned events; sweeping later");
                        return Vec::new();
                    }
                }
            }
            out
        })
    }

    fn release_all(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.draining.store(true, Ordering::Release);
            let held: Vec<EventId> = self.held.lock().expect("held").drain().map(|(e, _)| e).collect();
            for e in &held {
                self.compare_and_delete(self.lease_key(*e)).await;
            }
            let _: Result<(), _> = redis::cmd("DEL").arg(self.node_key(&self.node)).query_async(&mut self.conn.clone()).await;
            info!(events = held.len(), "gave every lease back");
        })
    }
}
