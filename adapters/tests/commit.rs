//! The one commit path, on both backends (a fresh SQLite file and a fresh
//! PostgreSQL database, which must be there: a missing server fails the
//! tests, never skips them): epochs move forward only, every write for an
//! event is fenced by its owner's epoch, a stale write fails alone, and the
//! path counts what it did. Also the single-node lock.

use usher_actors::{CommitKind, Epoch, EpochClaim, OrderCreated, OrderWrite, StoreError};
use usher_adapters::{NodeLockError, Stores, connect_all, lock_node};
use usher_engine::{CustomerId, EventConfig, HoldId, Millis, Order, OrderId, OrderInput, OrderLine, SeatIdx, Step, Transition};
use usher_test_support::{on_both_backends as on_both, stored_event};

/// A one-seat order of `event` for seat `n`, pending payment.
fn order(event: &EventConfig, n: u32) -> Order {
    let hold = HoldId(uuid::Uuid::new_v4());
    let price = event.prices[0];
    let lines = vec![OrderLine { hold_id: hold, seat: SeatIdx(n), price }];
    let customer = CustomerId::parse("c").unwrap();
    Order::new(OrderId(uuid::Uuid::new_v4()), event.id, customer, "c@example.com".into(), vec![hold], lines, Millis(10_000), Millis(1))
        .unwrap()
}

fn cancelled(o: &Order) -> (Order, Transition) {
    let mut o = o.clone();
    let t = o.apply(OrderInput::Cancel, Millis(2)).unwrap();
    (o, t)
}

fn write<'a>(o: &'a Order, version: i64, epoch: Epoch, t: &'a Transition) -> OrderWrite<'a> {
    OrderWrite { order: o, epoch, version, transition: t, new_tickets: &[], seat_labels: &[], now: Millis(2), trace: None }
}

async fn stores(url: &str) -> Stores {
    connect_all(url).await.unwrap()
}

#[tokio::test]
async fn an_epoch_only_moves_forward() {
    on_both("epoch", |url| async move {
        let (store, _, _) = stores(&url).await;
        let (event, _) = stored_event(&*store, 4).await;
        let first = store.fence_event(event.id, EpochClaim::Next).await.unwrap();
        assert_eq!(store.fence_event(event.id, EpochClaim::Next).await.unwrap(), Epoch(first.0 + 1));
        // A lease service's token is taken when it is newer, refused when not.
        assert_eq!(store.fence_event(event.id, EpochClaim::Exactly(Epoch(first.0 + 10))).await.unwrap(), Epoch(first.0 + 10));
        for stale in [first.0 + 10, first.0 + 3] {
            let e = store.fence_event(event.id, EpochClaim::Exactly(Epoch(stale))).await.unwrap_err();
            assert!(matches!(e, StoreError::Fenced { epoch: Epoch(x), .. } if x == stale), "{e:?}");
        }
        assert_eq!(store.fence_event(event.id, EpochClaim::Next).await.unwrap(), Epoch(first.0 + 11));
        let unknown = usher_engine::EventId(uuid::Uuid::new_v4());
        assert!(matches!(store.fence_event(unknown, EpochClaim::Next).await, Err(StoreError::NotFound(_))));
    })
    .await;
}

#[tokio::test]
async fn an_order_is_created_only_by_the_events_current_owner() {
    on_both("create", |url| async move {
        let (store, orders, _) = stores(&url).await;
        let (event, _) = stored_event(&*store, 4).await;
        let old = store.fence_event(event.id, EpochClaim::Next).await.unwrap();
        let new = store.fence_event(event.id, EpochClaim::Next).await.unwrap();
        let o = order(&event, 0);
        let e = orders.create_order("k-stale", 1, &o, &["A-1-1".into()], old).await.unwrap_err();
        assert!(matches!(e, StoreError::Fenced { .. }), "{e:?}");
        assert!(orders.get_order(o.id).await.unwrap().is_none(), "a fenced create writes nothing");
        assert_eq!(orders.lookup_command("k-stale").await.unwrap(), None, "nor claims its key");
        assert_eq!(orders.create_order("k-stale", 1, &o, &["A-1-1".into()], new).await.unwrap(), OrderCreated::New);
        let stats = store.commit_stats();
        let create = stats.iter().find(|s| s.kind == CommitKind::OrderCreate).unwrap();
        assert_eq!((create.commits, create.fenced, create.outbox_rows), (1, 1, 1), "{create}");
    })
    .await;
}

/// One transaction for many sagas' writes: a write read at an old version,
/// or written with an old epoch, fails alone and leaves nothing behind; the
/// others are committed.
#[tokio::test]
async fn a_batch_commits_every_write_but_the_stale_ones() {
    on_both("batch", |url| async move {
        let (store, orders, _) = stores(&url).await;
        let (e1, _) = stored_event(&*store, 4).await;
        let (e2, _) = stored_event(&*store, 4).await;
        let epoch1 = store.fence_event(e1.id, EpochClaim::Next).await.unwrap();
        let epoch2 = store.fence_event(e2.id, EpochClaim::Next).await.unwrap();
        let (a, b, c, d) = (order(&e1, 0), order(&e1, 1), order(&e1, 2), order(&e2, 0));
        for (k, o, epoch) in [("ka", &a, epoch1), ("kb", &b, epoch1), ("kc", &c, epoch1), ("kd", &d, epoch2)] {
            assert_eq!(orders.create_order(k, 1, o, &["A-1-1".into()], epoch).await.unwrap(), OrderCreated::New);
        }
        // e2 changes owner after d's saga read its epoch.
        store.fence_event(e2.id, EpochClaim::Next).await.unwrap();
        let ((a2, ta), (b2, tb), (c2, tc), (d2, td)) = (cancelled(&a), cancelled(&b), cancelled(&c), cancelled(&d));
        // b was read at version 7: someone else wrote it since.
        let ws = [write(&a2, 1, epoch1, &ta), write(&b2, 7, epoch1, &tb), write(&d2, 1, epoch2, &td), write(&c2, 1, epoch1, &tc)];
        let r = orders.save_orders(&ws).await;
        assert!(r[0].is_ok() && r[3].is_ok(), "{r:?}");
        assert!(matches!(&r[1], Err(StoreError::Conflict(_))), "{r:?}");
        assert!(matches!(&r[2], Err(StoreError::Fenced { .. })), "{r:?}");
        for (id, version, step) in
            [(a.id, 2, Step::Release), (b.id, 1, Step::AwaitPayment), (c.id, 2, Step::Release), (d.id, 1, Step::AwaitPayment)]
        {
            let stored = orders.get_order(id).await.unwrap().unwrap();
            assert_eq!((stored.version, stored.order.step), (version, step), "order {id}");
        }
        let stats = store.commit_stats();
        let batch = stats.iter().find(|s| s.kind == CommitKind::OrderBatch).unwrap();
        assert_eq!((batch.commits, batch.fenced, batch.failed), (1, 1, 0), "{batch}");
    })
    .await;
}

#[tokio::test]
async fn a_second_node_on_one_database_is_refused_until_the_first_lets_go() {
    on_both("lock", |url| async move {
        let first = lock_node(&url).await.unwrap();
        match lock_node(&url).await {
            Err(NodeLockError::Held(m)) => assert!(m.contains("another usher process already serves"), "{m}"),
            other => panic!("expected the lock to be held, got {:?}", other.map(|_| ())),
        }
        drop(first);
        // PostgreSQL frees the lock when the connection closes, which a
        // dropped connection does in the background: give it a moment.
        let mut again = lock_node(&url).await;
        for _ in 0..50 {
            if again.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            again = lock_node(&url).await;
        }
        assert!(again.is_ok(), "the lock is free once its holder is gone");
    })
    .await;
}

/// Order writes and the owner's seat batches commit side by side: on SQLite
/// an order transaction takes the write lock first (a read that later
/// upgrades would be refused at once while seat batches write), on
/// PostgreSQL the order's epoch lock does not wait for the seat batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_and_seat_batches_commit_side_by_side() {
    on_both("sidebyside", |url| async move {
        let (store, orders, _) = stores(&url).await;
        let (event, layout) = stored_event(&*store, 40).await;
        let epoch = store.fence_event(event.id, EpochClaim::Next).await.unwrap();
        let layout = std::sync::Arc::new(layout);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..30u32 {
            let (store, layout) = (store.clone(), layout.clone());
            let id = event.id;
            tasks.spawn(async move {
                let batch = usher_actors::Batch {
                    event_id: id,
                    epoch,
                    now: Millis(100 + i64::from(i)),
                    layout: &layout,
                    decisions: &[],
                    audits: &[],
                    traces: &[],
                };
                store.commit(batch).await.map(|_| ())
            });
            let (orders, o) = (orders.clone(), order(&event, i));
            tasks.spawn(async move {
                match orders.create_order(&format!("k-{i}"), 1, &o, &["A-1-1".into()], epoch).await {
                    Ok(OrderCreated::New) => Ok(()),
                    other => panic!("{other:?}"),
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap_or_else(|e| panic!("{url}: a commit failed beside the others: {e}"));
        }
    })
    .await;
}

/// The PostgreSQL single-node lock lives on a connection: when that
/// connection is gone (a restart, a failover), `check` says so, and the
/// node grants itself no more events. A file lock holds for the process.
#[tokio::test]
async fn a_lost_postgres_node_lock_is_noticed() {
    use usher_actors::SoleServer as _;
    let dir = tempfile::tempdir().unwrap();
    let file = lock_node(&format!("sqlite://{}", dir.path().join("usher.db").display())).await.unwrap();
    assert_eq!(file.check().await, Ok(()));
    let (name, url) = usher_test_support::fresh_pg_database("locklost").await;
    let lock = lock_node(&url).await.unwrap();
    assert_eq!(lock.check().await, Ok(()));
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'usher node lock' AND datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();
    let lost = lock.check().await.unwrap_err();
    assert!(lost.starts_with("this node lost its single-node lock on PostgreSQL"), "{lost}");
    drop((lock, admin));
    usher_test_support::drop_pg_database(&name).await;
}

/// Outbox rows are numbered per event as their commits' last statements:
/// concurrent writers of one event get 1, 2, 3 ... with no gap, in commit
/// (insert) order, so a relay that reads "not yet published" in insert
/// order meets each event's rows in their order. The embedded stream gives
/// offsets in the relay's order; pruning removes published rows.
#[tokio::test]
async fn concurrent_writers_number_an_events_outbox_rows_without_gaps() {
    on_both("outboxseq", |url| async move {
        let ((store, orders, _), stream) = usher_adapters::connect_with_stream(&url).await.unwrap();
        let (event, _) = stored_event(&*store, 40).await;
        let epoch = store.fence_event(event.id, EpochClaim::Next).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        let mut made = Vec::new();
        for i in 0..30u32 {
            let (orders, o) = (orders.clone(), order(&event, i));
            made.push(o.clone());
            tasks.spawn(async move { orders.create_order(&format!("k-{i}"), 1, &o, &["A-1-1".into()], epoch).await });
        }
        while let Some(r) = tasks.join_next().await {
            assert!(matches!(r.unwrap(), Ok(OrderCreated::New)));
        }
        // One group commit that cancels ten of them.
        let cancels: Vec<(Order, Transition)> = made[..10].iter().map(cancelled).collect();
        let ws: Vec<OrderWrite<'_>> = cancels.iter().map(|(o, t)| write(o, 1, epoch, t)).collect();
        assert!(orders.save_orders(&ws).await.iter().all(Result::is_ok));

        let mut relay = stream.relay_session().await.unwrap().expect("the only relay");
        let rows = relay.unpublished(1_000).await.unwrap();
        let seqs: Vec<i64> = rows.iter().filter(|m| m.key == event.id.to_string()).map(|m| m.event_seq).collect();
        assert!(seqs.len() >= 30, "{url}: {seqs:?}");
        assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{url}");
        let n = rows.len() as i64;
        assert!(rows.iter().all(|m| m.message_type.starts_with("usher.events.v1.") && m.schema_version == 1));
        assert_eq!(stream.backlog().await.unwrap().rows, n as u64);

        // The embedded stream: offsets 1..n in the order given.
        let ids: Vec<i64> = rows.iter().map(|m| m.row).collect();
        relay.append_local(&ids, Millis(50)).await.unwrap();
        let read = stream.read_local(1, 100).await.unwrap();
        assert_eq!(read.iter().map(|m| m.offset.unwrap()).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
        assert_eq!(read.iter().map(|m| m.row).collect::<Vec<_>>(), ids);
        assert_eq!(stream.stream_end().await.unwrap(), n + 1);
        assert_eq!(stream.backlog().await.unwrap(), usher_actors::Backlog { rows: 0, oldest_at: None });
        // Appending again changes nothing.
        relay.append_local(&ids, Millis(60)).await.unwrap();
        assert_eq!(stream.stream_end().await.unwrap(), n + 1);
        // Published before 40: none; before 51: all.
        assert_eq!(relay.prune(Millis(40), 1_000).await.unwrap(), 0);
        assert_eq!(relay.prune(Millis(51), 1_000).await.unwrap(), n as u64);
        assert!(stream.read_local(1, 100).await.unwrap().is_empty());
    })
    .await;
}

/// One relay per PostgreSQL database: a second session is refused while the
/// first lives, and granted once it is dropped.
#[tokio::test]
async fn one_relay_per_postgres_database() {
    let (name, url) = usher_test_support::fresh_pg_database("relaylock").await;
    let (_, stream) = usher_adapters::connect_with_stream(&url).await.unwrap();
    let (_, other) = usher_adapters::connect_with_stream(&url).await.unwrap();
    let first = stream.relay_session().await.unwrap().expect("the first relay");
    assert!(other.relay_session().await.unwrap().is_none(), "a second relay while the first lives");
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while other.relay_session().await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the lock was not given back");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop((stream, other));
    usher_test_support::drop_pg_database(&name).await;
}
