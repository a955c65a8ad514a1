//! Actor-level specs of `EventActor` and `Registry`, on an in-memory store.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use usher_actors::{CommandError, EventMsg, Outcome};
use usher_engine::{HoldState, Reject, SeatIdx, SeatState};

#[tokio::test(start_paused = true)]
async fn hold_expires_on_its_timer_with_paused_time() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    let mut changes = within(h.registry.subscribe(h.event_id)).await.unwrap();
    let hold_id = new_hold_id();

    let out = within(ev.command(key("k1"), hold_seats(hold_id, "alice", &[0, 1]))).await.unwrap();
    let hold = expect_hold(out.result);
    assert_eq!(hold.expires_at, hold.created_at.plus_ms(HOLD_MS));
    assert_eq!(h.store.hold(h.event_id, hold_id).unwrap().state, HoldState::Active);
    // The placement itself is published once durable.
    let placed = changes.try_recv().expect("placement published");
    assert_eq!(placed.seats, vec![(SeatIdx(0), SeatState::Held), (SeatIdx(1), SeatState::Held)]);

    // One millisecond before expiry: nothing happens.
    let left = (hold.expires_at.0 - h.clock.now().0) as u64;
    tokio::time::advance(Duration::from_millis(left - 1)).await;
    assert_eq!(h.clock.now().0, hold.expires_at.0 - 1);
    let (in_actor, _) = within(ev.hold(hold_id)).await.unwrap().unwrap();
    assert_eq!(in_actor.state, HoldState::Active);
    assert_eq!(h.store.hold(h.event_id, hold_id).unwrap().state, HoldState::Active);
    let map = within(ev.seat_map()).await.unwrap();
    assert_eq!(map.seats[0], SeatState::Held);
    assert_eq!(map.counts.held, 2);
    let commits_before_expiry = h.store.commits();

    // Past expiry: the actor's own timer ends the hold, durably, with no traffic.
    tokio::time::advance(Duration::from_millis(2)).await;
    eventually("the store records the hold as expired", || h.store.hold(h.event_id, hold_id).map(|x| x.state) == Some(HoldState::Expired))
        .await;
    assert_eq!(h.store.commits(), commits_before_expiry + 1);
    let stored = h.store.hold(h.event_id, hold_id).unwrap();
    assert!(stored.ended_at.unwrap() >= hold.expires_at);
    let row = h.store.event_row(h.event_id);
    assert!(
        matches!(row.log.last(), Some(usher_engine::Event::HoldExpired { hold }) if hold.id == hold_id),
        "last stored event is the expiry: {:?}",
        row.log.last()
    );

    let map = within(ev.seat_map()).await.unwrap();
    assert_eq!(map.seats[0], SeatState::Available);
    assert_eq!(map.seats[1], SeatState::Available);
    assert_eq!(map.counts.held, 0);
    let (in_actor, _) = within(ev.hold(hold_id)).await.unwrap().unwrap();
    assert_eq!(in_actor.state, HoldState::Expired);
    let expired = changes.try_recv().expect("expiry published");
    assert_eq!(expired.seats, vec![(SeatIdx(0), SeatState::Available), (SeatIdx(1), SeatState::Available)]);

    // The seats can be held again.
    let again = within(ev.command(key("k2"), hold_seats(new_hold_id(), "bob", &[0, 1]))).await.unwrap();
    expect_hold(again.result);
}

#[tokio::test]
async fn a_panicking_actor_is_restarted_with_state_rebuilt_from_storage() {
    let h = Harness::start(Setup::system()).await;
    let ev = h.event().await;
    let hold_id = new_hold_id();
    let out = within(ev.command(key("k1"), hold_seats(hold_id, "alice", &[3, 4]))).await.unwrap();
    let placed = expect_hold(out.result);
    let epoch_before = h.store.epoch(h.event_id);
    let loads_before = h.store.loads();

    let old = ev.actor.get_id();
    ev.actor.cast(EventMsg::Panic).unwrap();
    let ev2 = h.next_actor(old).await;

    assert!(h.store.loads() > loads_before, "the new actor read the store");
    assert_eq!(h.store.epoch(h.event_id), epoch_before + 1, "restart took ownership anew");
    let (hold, _) = within(ev2.hold(hold_id)).await.unwrap().expect("hold survives");
    assert_eq!(hold, placed);
    let map = within(ev2.seat_map()).await.unwrap();
    assert_eq!(map.seats[3], SeatState::Held);
    assert_eq!(map.seats[4], SeatState::Held);
    assert_eq!(map.counts.held, 2);

    // New commands are served, and the held seat stays taken for others.
    let other = within(ev2.command(key("k2"), hold_seats(new_hold_id(), "bob", &[5]))).await.unwrap();
    expect_hold(other.result);
    let taken = within(ev2.command(key("k3"), hold_seats(new_hold_id(), "bob", &[4]))).await.unwrap();
    assert_eq!(taken.result, Err(Reject::SeatsTaken { seats: seats(&[4]) }));

    // A request through the old handle comes back from its closed channel
    // and goes to the actor the registry serves now.
    let stale_id = new_hold_id();
    let stale = within(ev.command(key("k4"), hold_seats(stale_id, "carol", &[9]))).await.unwrap();
    expect_hold(stale.result);
    assert_eq!(h.store.hold(h.event_id, stale_id).unwrap().state, HoldState::Active, "decided by the new actor, durably");
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_acknowledges_nothing_and_restores_memory() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    let hold_id = new_hold_id();
    let cmd = hold_seats(hold_id, "alice", &[7]);

    h.store.fail_next_commits(1);
    let r = within(ev.command(key("k1"), cmd.clone())).await;
    match &r {
        Err(CommandError::Unavailable(m)) => assert!(m.contains("injected"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(h.store.commit_attempts(), 1);
    assert_eq!(h.store.commits(), 0);

    // Memory went back to what storage holds.
    let map = within(ev.seat_map()).await.unwrap();
    assert_eq!(map.seats[7], SeatState::Available);
    assert_eq!(map.counts.held, 0);
    assert_eq!(within(ev.hold(hold_id)).await.unwrap(), None);
    let row = h.store.event_row(h.event_id);
    assert!(row.holds.is_empty() && row.log.is_empty() && row.idempotency.is_empty());

    // A retry inside the backoff is refused at once; after it, the retry
    // under the same key is decided afresh and stored.
    let early = within(ev.command(key("k1"), cmd.clone())).await;
    assert!(matches!(early, Err(CommandError::Unavailable(_))), "{early:?}");
    assert_eq!(h.store.commit_attempts(), 1, "the early retry did not touch storage");
    tokio::time::sleep(Duration::from_millis(usher_engine::limits::STORE_RETRY_BACKOFF_MS_MIN + 1)).await;
    let out = within(ev.command(key("k1"), cmd)).await.unwrap();
    let hold = expect_hold(out.result);
    assert_eq!(hold.id, hold_id);
    assert_eq!(hold.seats, seats(&[7]));
    assert_eq!(h.store.commits(), 1);
    assert_eq!(h.store.hold(h.event_id, hold_id).unwrap().state, HoldState::Active);
    assert!(h.store.record(h.event_id, &key("k1")).is_some());
    let map = within(ev.seat_map()).await.unwrap();
    assert_eq!(map.seats[7], SeatState::Held);
}

/// Runs one concurrent hold command per seat of `seats_`, one customer each,
/// and sends each result (with its seat) on the returned channel.
fn spawn_holds(
    ev: &usher_actors::EventHandle,
    seats_: std::ops::Range<u32>,
) -> tokio::sync::mpsc::UnboundedReceiver<(u32, Result<Outcome, CommandError>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for i in seats_ {
        let ev = ev.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let cmd = hold_seats(new_hold_id(), &format!("c{i}"), &[i]);
            let r = ev.command(key(&format!("k{i}")), cmd).await;
            let _ = tx.send((i, r));
        });
    }
    rx
}

#[tokio::test(start_paused = true)]
async fn a_full_mailbox_refuses_at_once() {
    const CAPACITY: usize = 4;
    const BATCH: usize = 4;
    const N: u32 = 16;
    let mut setup = Setup::at_t0();
    setup.mailbox_capacity = CAPACITY;
    setup.batch_max = BATCH;
    let h = Harness::start(setup).await;
    let ev = h.event().await;
    h.store.close_gate();

    let mut rx = spawn_holds(&ev, 0..N);
    eventually("a commit waits at the gate", || h.store.commits_waiting() == 1).await;
    // Let every caller run (paused time: this returns once all are idle).
    tokio::time::sleep(Duration::from_millis(10)).await;

    // With the gate still closed, the refused callers already have their answer.
    let mut refused = Vec::new();
    while let Ok((seat, r)) = rx.try_recv() {
        match r {
            Err(CommandError::Overloaded(id)) => {
                assert_eq!(id, h.event_id);
                refused.push(seat);
            }
            other => panic!("only refusals may finish while the gate is closed: {other:?}"),
        }
    }
    assert_eq!(h.store.commits(), 0, "nothing committed yet");
    // At most one batch is deciding and `CAPACITY` wait in the queue.
    let accepted = N as usize - refused.len();
    assert!(!refused.is_empty(), "nobody was refused");
    assert!(accepted <= BATCH + CAPACITY, "{accepted} accepted");
    println!("accepted {accepted}, refused at once {}", refused.len());

    h.store.open_gate();
    let mut done = 0;
    while done < accepted {
        let (seat, r) = within(rx.recv()).await.expect("a result");
        let hold = expect_hold(r.expect("accepted command succeeds").result);
        assert_eq!(hold.seats, seats(&[seat]));
        assert!(!refused.contains(&seat));
        done += 1;
    }
    let row = h.store.event_row(h.event_id);
    assert_eq!(row.holds.len(), accepted);
    let map = within(ev.seat_map()).await.unwrap();
    assert_eq!(map.counts.held as usize, accepted);
}

#[tokio::test(start_paused = true)]
async fn concurrent_commands_are_group_committed() {
    const N: u32 = 100;
    let mut setup = Setup::at_t0();
    setup.batch_max = 512;
    let h = Harness::start(setup).await;
    let ev = h.event().await;
    h.store.close_gate();

    // One command reaches the store and is held there; the other 99 arrive
    // while it is being written.
    let mut first = spawn_holds(&ev, 0..1);
    eventually("the first commit waits at the gate", || h.store.commits_waiting() == 1).await;
    let mut rest = spawn_holds(&ev, 1..N);
    // Paused time: this returns once every caller has queued its command.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.store.commit_attempts(), 1, "the others wait for the first commit");
    h.store.open_gate();

    let mut held = Vec::new();
    for rx in [&mut first, &mut rest] {
        while let Some((seat, r)) = within(rx.recv()).await {
            let hold = expect_hold(r.expect("command succeeds").result);
            assert_eq!(hold.seats, seats(&[seat]));
            held.push(seat);
        }
    }
    held.sort_unstable();
    assert_eq!(held, (0..N).collect::<Vec<_>>());

    let commits = h.store.commits();
    let stats = h.registry.stats();
    println!("{N} commands in {commits} commits; {}", stats.summary());
    assert!(commits < N as u64, "{commits} commits for {N} commands");
    assert_eq!(commits, 2, "one commit for the first command, one for the 99 queued behind it");
    assert_eq!(stats.largest.load(Ordering::Relaxed), N as u64 - 1);
    assert_eq!(stats.commands.load(Ordering::Relaxed), N as u64);
    assert_eq!(stats.batches.load(Ordering::Relaxed), commits);
    assert_eq!(h.store.event_row(h.event_id).holds.len(), N as usize);
}

#[tokio::test(start_paused = true)]
async fn a_fenced_actor_stops_and_a_new_owner_takes_over() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    let first = new_hold_id();
    let out = within(ev.command(key("k1"), hold_seats(first, "alice", &[0]))).await.unwrap();
    expect_hold(out.result);

    let theirs = h.store.bump_epoch(h.event_id);
    let r = within(ev.command(key("k2"), hold_seats(new_hold_id(), "bob", &[1]))).await;
    match &r {
        Err(CommandError::Unavailable(m)) => assert!(m.contains("fenced"), "{m}"),
        other => panic!("expected a fenced refusal, got {other:?}"),
    }
    let row = h.store.event_row(h.event_id);
    assert_eq!(row.holds.len(), 1, "the fenced write left nothing behind");
    assert!(!row.idempotency.contains_key(&key("k2")));

    let ev2 = h.next_actor(ev.actor.get_id()).await;
    assert_eq!(h.store.epoch(h.event_id), theirs + 1, "the new actor acquired a newer epoch");
    let out = within(ev2.command(key("k2"), hold_seats(new_hold_id(), "bob", &[1]))).await.unwrap();
    expect_hold(out.result);
    let (kept, _) = within(ev2.hold(first)).await.unwrap().expect("earlier hold kept");
    assert_eq!(kept.state, HoldState::Active);
    assert_eq!(h.store.event_row(h.event_id).holds.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn replayed_key_returns_first_answer_through_the_actor() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    let first = within(ev.command(key("k1"), hold_seats(new_hold_id(), "alice", &[2, 3]))).await.unwrap();
    let first_hold = expect_hold(first.result.clone());
    let commits = h.store.commits();

    // A retry picks a new hold id per attempt; the first answer comes back.
    let again = within(ev.command(key("k1"), hold_seats(new_hold_id(), "alice", &[2, 3]))).await.unwrap();
    assert_eq!(again.result, first.result);
    assert_eq!(expect_hold(again.result).id, first_hold.id);
    assert_eq!(h.store.commits(), commits, "a replay writes nothing");

    // The same key for another request is refused, and takes nothing.
    let reused = within(ev.command(key("k1"), hold_seats(new_hold_id(), "alice", &[5]))).await.unwrap();
    assert_eq!(reused.result, Err(Reject::IdempotencyKeyReused));
    let map = within(ev.seat_map()).await.unwrap();
    assert_eq!(map.seats[5], SeatState::Available);
    assert_eq!(map.counts.held, 2);

    // The record is durable: a rebuilt actor answers the same.
    let ev2 = {
        let old = ev.actor.get_id();
        ev.actor.cast(EventMsg::Panic).unwrap();
        h.next_actor(old).await
    };
    let after_restart = within(ev2.command(key("k1"), hold_seats(new_hold_id(), "alice", &[2, 3]))).await.unwrap();
    assert_eq!(after_restart.result, first.result);
}

// ------------------------------------------------------------------------
// Failure paths that were production bugs when these specs were written
// (all fixed): expiry after an outage, retry backoff, queries in a failed
// batch, traffic during the backoff.

#[tokio::test(start_paused = true)]
async fn traffic_during_the_backoff_is_refused_without_touching_storage() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    h.store.fail_next_commits(1_000);
    let loads_before = h.store.loads();
    let mut refused = 0;
    for i in 0..50u32 {
        let r = within(ev.command(key(&format!("k{i}")), hold_seats(new_hold_id(), "alice", &[i % 8]))).await;
        assert!(matches!(r, Err(CommandError::Unavailable(_))), "{r:?}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(refused, 50);
    // 50 requests within the first backoff windows: a handful of attempts,
    // not one commit and one reload per request.
    let attempts = h.store.commit_attempts();
    let reloads = h.store.loads() - loads_before;
    assert!(attempts <= 3, "{attempts} commit attempts for 50 requests in 50 ms");
    assert!(reloads <= 3, "{reloads} reloads for 50 requests in 50 ms");
}

#[tokio::test(start_paused = true)]
async fn an_expiry_that_could_not_be_written_is_retried_without_traffic() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    let hold_id = new_hold_id();
    let out = within(ev.command(key("k1"), hold_seats(hold_id, "alice", &[0]))).await.unwrap();
    expect_hold(out.result);

    // A short outage exactly when the hold expires: the expiry commit fails,
    // and so does the reload after it.
    h.store.fail_next_commits(1);
    h.store.fail_next_loads(1);
    tokio::time::sleep(Duration::from_millis(HOLD_MS + 1)).await;
    assert_eq!(h.store.commit_attempts(), 2, "the expiry was attempted");

    // The store is healthy again; nobody sends a request for ten minutes.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        h.store.hold(h.event_id, hold_id).unwrap().state,
        HoldState::Expired,
        "the hold should have expired durably without traffic"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_is_not_retried_in_a_hot_loop() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    let out = within(ev.command(key("k1"), hold_seats(new_hold_id(), "alice", &[0]))).await.unwrap();
    expect_hold(out.result);

    // Writes fail (reads work) for the next 1000 commits.
    h.store.fail_next_commits(1000);
    tokio::time::sleep(Duration::from_millis(HOLD_MS + 1000)).await;
    let attempts = h.store.commit_attempts() - 1;
    assert!(attempts < 100, "{attempts} expiry commits (and {} reloads) within one second of tokio time", h.store.loads());
}

#[tokio::test(start_paused = true)]
async fn a_query_batched_with_a_failed_commit_is_still_answered() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    h.store.close_gate();
    // Hold the actor in a first commit, so that a command and a query queue
    // up behind it and are decided in the same (second) batch.
    let mut first = spawn_holds(&ev, 9..10);
    eventually("a commit waits at the gate", || h.store.commits_waiting() == 1).await;
    let mut cmd = spawn_holds(&ev, 0..1);
    let ev2 = ev.clone();
    let query = tokio::spawn(async move { ev2.seat_map().await.map(|m| m.seats[0]) });
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Both commits fail; every rebuild succeeds.
    h.store.fail_next_commits(2);
    h.store.open_gate();

    let (_, r) = within(first.recv()).await.unwrap();
    assert!(matches!(r, Err(CommandError::Unavailable(_))), "{r:?}");
    let (_, r) = within(cmd.recv()).await.unwrap();
    assert!(matches!(r, Err(CommandError::Unavailable(_))), "{r:?}");
    // The actor did not fail and its state was rebuilt: the query can be
    // answered from durable state.
    let seat = within(query).await.unwrap();
    assert_eq!(seat, Ok(SeatState::Available));
}

#[tokio::test(start_paused = true)]
async fn an_actor_that_keeps_failing_is_not_restarted_by_traffic_before_its_delay() {
    let h = Harness::start(Setup::at_t0()).await;
    let mut ev = h.event().await;
    // RESTARTS_PER_WINDOW_MAX failures restart at once; the next one waits.
    for _ in 0..usher_engine::limits::RESTARTS_PER_WINDOW_MAX {
        let old = ev.actor.get_id();
        ev.actor.cast(EventMsg::Panic).unwrap();
        ev = h.next_actor(old).await;
    }
    ev.actor.cast(EventMsg::Panic).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let loads = h.store.loads();
    let r = within(h.registry.event(h.event_id)).await;
    match r {
        Err(CommandError::Unavailable(m)) => assert!(m.contains("keeps failing"), "{m}"),
        Err(e) => panic!("expected Unavailable, got {e:?}"),
        Ok(_) => panic!("a request restarted the actor before its delay"),
    }
    assert_eq!(h.store.loads(), loads, "no reload during the delay");
    // After the delay the event is served again.
    tokio::time::sleep(Duration::from_millis(usher_engine::limits::RESTART_DELAY_MS + 100)).await;
    let ev = h.event().await;
    within(ev.summary()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_idle_event_is_unloaded_and_a_stale_handle_still_reaches_it() {
    let h = Harness::start(Setup::at_t0()).await;
    let ev = h.event().await;
    let out = within(ev.command(key("k1"), hold_seats(new_hold_id(), "alice", &[1]))).await.unwrap();
    let placed = expect_hold(out.result);
    let loads = h.store.loads();
    // The hold expires; ten idle minutes later the actor is gone.
    tokio::time::sleep(Duration::from_millis(HOLD_MS + usher_engine::limits::EVENT_IDLE_UNLOAD_MS + 1_000)).await;
    eventually("the idle actor stops", || matches!(ev.actor.get_status(), ractor::ActorStatus::Stopped)).await;
    assert_eq!(h.store.loads(), loads, "unloading reads nothing");
    assert_eq!(h.store.hold(h.event_id, placed.id).unwrap().state, HoldState::Expired);
    // The old handle still works: its request is resent to a freshly loaded actor.
    let again = within(ev.command(key("k2"), hold_seats(new_hold_id(), "bob", &[1]))).await.unwrap();
    expect_hold(again.result);
    assert_eq!(h.store.loads(), loads + 1, "loaded again on first use");
    let fresh = h.event().await;
    assert_ne!(fresh.actor.get_id(), ev.actor.get_id());
}
