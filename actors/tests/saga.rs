//! Actor-level specs of the order saga: the real `OrderSupervisor`, event
//! actors and postman over the in-memory stores and scripted fakes, with
//! paused time driving every deadline, timeout and backoff.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use common::fakes::*;
use common::orders::MemOrderStore;
use common::*;
use usher_actors::postman::{PostmanArgs, PostmanConfig};
use usher_actors::{
    CardVault, CommandError, Email, Epoch, EpochClaim, OrderCreated, OrderStore, OrderWrite, OrderWriter, ProviderError, ProviderStatus,
    RenderQueue, SagaConfig, SagaDeps, SagaError, Sagas, Store as _, StoreError, StoredOrder, TicketStatus,
};
use usher_engine::{
    Command, EventStatus, HoldState, MailKind, Order, OrderEvent, OrderId, OrderInput, OrderStatus, PaymentId, PaymentStatus, SeatState,
    SigningKey, Step, order_lines,
};

const PAY_TIMEOUT_MS: u64 = 5_000;
const RETRY_MS_MIN: u64 = 200;
const CARD: &str = "4242424242424242";

use Step::{Authorize as Authorizing, AwaitPayment, Capture, Confirm, Done, Issue, Notify, QueryStatus, Refund, Release, Render};

/// The steps of an order paid and fulfilled without a hitch.
const FULFILLED: [Step; 8] = [AwaitPayment, Authorizing, Confirm, Capture, Issue, Render, Notify, Done];

/// A directory of its own under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("usher-saga-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything an order needs, started for real: the registry on a
/// `MemStore`, the order supervisor on a `MemOrderStore`, the postman.
struct Shop {
    h: Harness,
    orders: Arc<MemOrderStore>,
    provider: Arc<ScriptedProvider>,
    renderer: Arc<FlakyRenderer>,
    mailer: Arc<RecordingMailer>,
    sagas: Sagas,
    _pdfs: TempDir,
}

impl Shop {
    async fn open() -> Shop {
        let h = Harness::start(Setup::at_t0()).await;
        let (orders, provider, renderer, mailer, pdfs) =
            (MemOrderStore::over(h.store.clone()), ScriptedProvider::new(), FlakyRenderer::new(), RecordingMailer::new(), TempDir::new());
        let deps = SagaDeps {
            orders: orders.clone(),
            store: h.store.clone(),
            registry: h.registry.clone(),
            provider: provider.clone(),
            renderer: renderer.clone(),
            render_slots: RenderQueue::new(1),
            signing_key: Arc::new(SigningKey::from_bytes(&[7; 32])),
            pdf_dir: pdfs.0.clone(),
            clock: h.clock.clone(),
            cfg: SagaConfig { payment_timeout_ms: PAY_TIMEOUT_MS, retry_ms_min: RETRY_MS_MIN, render_workers: 1, ..SagaConfig::default() },
            cards: Arc::new(CardVault::default()),
            mail_queued: Arc::new(tokio::sync::Notify::new()),
            writer: OrderWriter::start(orders.clone()),
            mail_traces: Default::default(),
        };
        let (sagas, _) = within(Sagas::start(deps)).await.expect("the order supervisor starts");
        let postman = PostmanArgs { mailer: mailer.clone(), sagas: sagas.clone(), cfg: PostmanConfig::default() };
        within(usher_actors::postman::start(postman)).await.expect("the postman starts");
        Shop { h, orders, provider, renderer, mailer, sagas, _pdfs: pdfs }
    }

    /// The node stops and starts again: a new supervisor resumes the live
    /// orders from storage, and the card numbers in flight are gone.
    async fn restart(&mut self) {
        within(self.sagas.shutdown()).await;
        let deps = SagaDeps { cards: Arc::new(CardVault::default()), ..self.sagas.deps.clone() };
        self.sagas = within(Sagas::start(deps)).await.expect("the order supervisor starts again").0;
    }

    /// `who` holds `seats` and orders them, as the gateway does.
    async fn order(&self, who: &str, seats: &[u32]) -> Order {
        let ev = self.h.event().await;
        let hold_id = new_hold_id();
        let hold = expect_hold(within(ev.command(key(&format!("hold-{hold_id}")), hold_seats(hold_id, who, seats))).await.unwrap().result);
        let config = self.h.store.event_row(self.h.event_id).config;
        let now = self.h.clock.now();
        let (lines, pay_by) = order_lines(&hold, &config, &ev.layout, &customer(who), now).expect("an orderable hold");
        let order = Order::new(
            OrderId(Uuid::new_v4()),
            self.h.event_id,
            customer(who),
            format!("{who}@example.com"),
            vec![hold_id],
            lines,
            pay_by,
            now,
        )
        .unwrap();
        let labels: Vec<String> = order.lines.iter().map(|l| ev.layout.label(l.seat)).collect();
        let created = within(self.orders.create_order(&format!("order:{}", order.id), 1, &order, &labels, ev.epoch)).await.unwrap();
        assert_eq!(created, OrderCreated::New);
        self.sagas.started(StoredOrder { order: order.clone(), version: 1 });
        order
    }

    async fn try_pay(&self, id: OrderId) -> Result<Order, SagaError> {
        let payment = PaymentId(Uuid::new_v4());
        self.sagas.deps.cards.put(payment.to_string(), CARD.into());
        let input = OrderInput::Pay { payment_id: payment, card_last4: CARD[CARD.len() - 4..].into(), timeout_ms: PAY_TIMEOUT_MS };
        within(self.sagas.input(id, input)).await
    }

    /// Pays the order; returns it as written (authorizing).
    async fn pay(&self, id: OrderId) -> Order {
        let o = self.try_pay(id).await.expect("the payment is taken");
        assert_eq!(o.step, Authorizing);
        o
    }

    /// `who` orders `seats` and pays; waits until the order is fulfilled.
    async fn buy(&self, who: &str, seats: &[u32]) -> Bought {
        let o = self.order(who, seats).await;
        let paid_at = Instant::now();
        let key = payment_key(&self.pay(o.id).await);
        let order = self.finished(o.id).await;
        assert_fulfilled(self, &order).await;
        Bought { order, key, paid_at }
    }

    /// Waits until the stored order satisfies `done`.
    async fn stored_when(&self, id: OrderId, what: &str, done: impl Fn(&Order) -> bool) -> Order {
        eventually_within(Duration::from_secs(120), what, || self.orders.order(id).is_some_and(|s| done(&s.order))).await;
        self.orders.order(id).unwrap().order
    }

    async fn finished(&self, id: OrderId) -> Order {
        self.stored_when(id, "the saga finishes", |o| o.step == Done).await
    }

    /// The email of `kind` the postman delivered for the order.
    async fn mailed(&self, id: OrderId, kind: MailKind) -> Email {
        let message_id = format!("<{}.{}@usher.local>", id.0.simple(), kind.as_str());
        let find = || self.mailer.sent().into_iter().find(|m| m.message_id == message_id);
        eventually(&format!("the {} email is delivered", kind.as_str()), || find().is_some()).await;
        find().unwrap()
    }

    /// The organizer cancels the event: at its actor, then its orders.
    async fn cancel_event(&self) {
        let ev = self.h.event().await;
        let out = within(ev.command(key("cancel-event"), Command::SetStatus { to: EventStatus::Cancelled })).await.unwrap();
        assert!(out.result.is_ok(), "{:?}", out.result);
        self.sagas.event_cancelled(self.h.event_id);
    }

    fn mail_kinds(&self, id: OrderId) -> Vec<MailKind> {
        self.orders.mail(id).into_iter().map(|(k, _)| k).collect()
    }

    fn hold_state(&self, o: &Order) -> HoldState {
        self.h.store.hold(self.h.event_id, o.holds[0]).expect("the hold is stored").state
    }

    async fn seat_states(&self, o: &Order) -> Vec<SeatState> {
        let map = within(self.h.event().await.seat_map()).await.unwrap();
        o.lines.iter().map(|l| map.seats[l.seat.0 as usize]).collect()
    }

    /// Provider calls of `what`: their keys, and the time from `from` to each.
    fn calls_since(&self, what: Call, from: Instant) -> Vec<(String, u64)> {
        self.provider.calls(what).into_iter().map(|(k, at)| (k, (at - from).as_millis() as u64)).collect()
    }

    /// When each call of `what` came, from the first.
    fn call_times(&self, what: Call) -> Vec<u64> {
        let calls = self.provider.calls(what);
        calls.iter().map(|(_, at)| (*at - calls[0].1).as_millis() as u64).collect()
    }
}

/// A fulfilled order, the key of its payment, and when it was paid.
struct Bought {
    order: Order,
    key: String,
    paid_at: Instant,
}

fn payment_key(o: &Order) -> String {
    o.current_payment().expect("a payment").id.to_string()
}

fn count(events: &[OrderEvent], what: impl Fn(&OrderEvent) -> bool) -> usize {
    events.iter().filter(|e| what(e)).count()
}

/// What a fulfilled order leaves behind: the seats sold, money taken once,
/// one valid ticket per seat, the PDF on disk and in the confirmation email.
async fn assert_fulfilled(shop: &Shop, o: &Order) {
    assert_eq!((o.status, o.step), (OrderStatus::Fulfilled, Done), "{o:?}");
    let key = payment_key(o);
    assert!(shop.provider.calls(Call::Capture).iter().all(|(k, _)| *k == key), "every capture names the one payment");
    assert!(matches!(shop.provider.state(&key), ProviderStatus::Captured { .. }), "the provider holds one capture");
    assert_eq!(shop.provider.count(Call::Refund), 0);
    assert_eq!(shop.hold_state(o), HoldState::Confirmed);
    assert!(shop.seat_states(o).await.iter().all(|s| *s == SeatState::Sold));
    let tickets = shop.orders.tickets(o.id);
    assert_eq!(tickets.iter().map(|t| t.id).collect::<Vec<_>>(), o.tickets);
    assert!(tickets.iter().all(|t| t.status == TicketStatus::Valid));
    assert_eq!(tickets.len(), o.lines.len());
    let events = shop.orders.outbox(o.id);
    assert_eq!(count(&events, |e| matches!(e, OrderEvent::PaymentSucceeded { .. })), 1, "{events:?}");
    assert_eq!(count(&events, |e| matches!(e, OrderEvent::TicketsIssued { .. })), 1, "{events:?}");
    assert_eq!(shop.mail_kinds(o.id), [MailKind::Confirmation]);
    let pdf = std::fs::read(shop.sagas.deps.pdf_path(o.id)).expect("the PDF is written");
    assert!(pdf.starts_with(b"%PDF-fake"));
    let mail = shop.mailed(o.id, MailKind::Confirmation).await;
    assert_eq!(mail.attachments[0].bytes, pdf);
}

// ---------------------------------------------------------------- the way through

#[tokio::test(start_paused = true)]
async fn rendering_that_fails_twice_is_retried_and_the_tickets_are_issued_once() {
    let shop = Shop::open().await;
    shop.renderer.fail_next(2);
    let o = shop.buy("alice", &[0, 1]).await.order;
    assert_eq!(shop.renderer.calls(), 3);
    assert_eq!(shop.provider.count(Call::Capture), 1);
    // A failed render writes nothing: the saga redoes the step it stands on.
    assert_eq!(shop.orders.steps(o.id), FULFILLED);
    assert_eq!(shop.orders.writes(o.id).iter().map(|w| w.new_tickets).sum::<usize>(), 2, "the tickets are written once");
}

/// Three 6-seat orders reach rendering before a 1-seat one, with one render
/// slot: the 1-seat order's render begins as soon as the running one ends,
/// ahead of the two large ones queued before it. The renders are held at the
/// fake's gate on the blocking pool, and tokio's paused clock does not move
/// while a blocking task runs, so this test runs on the real clock; it
/// counts renders and never measures time.
#[tokio::test]
async fn a_large_order_delays_a_one_seat_order_by_at_most_one_render() {
    let shop = Shop::open().await;
    shop.renderer.close_gate();
    let slots = &shop.sagas.deps.render_slots;
    let mut large = Vec::new();
    for (i, who) in ["bob", "carol", "dave"].into_iter().enumerate() {
        let first = 6 * i as u32;
        let o = shop.order(who, &(first..first + 6).collect::<Vec<_>>()).await;
        shop.pay(o.id).await;
        eventually("the large order reaches its render", || shop.renderer.begun().len() == 1 && slots.waiting() == i).await;
        large.push(o);
    }
    let small = shop.order("alice", &[19]).await;
    shop.pay(small.id).await;
    eventually("the 1-seat order waits for a slot", || slots.waiting() == 3).await;
    assert_eq!(shop.renderer.begun(), [6]);

    // One render ends: the freed slot goes to the 1-seat order.
    shop.renderer.let_through(1);
    eventually("the next render begins", || shop.renderer.begun().len() == 2).await;
    assert_eq!(shop.renderer.begun(), [6, 1], "the 1-seat order waited for one render only");
    shop.renderer.let_through(1);
    let small = shop.finished(small.id).await;
    assert_eq!(small.status, OrderStatus::Fulfilled);
    assert_eq!(
        large.iter().filter(|o| shop.orders.order(o.id).unwrap().order.step == Done).count(),
        1,
        "the 1-seat order's tickets came after one large order's, not three"
    );

    shop.renderer.let_through(2);
    for o in &large {
        assert_eq!(shop.finished(o.id).await.status, OrderStatus::Fulfilled);
    }
    assert_eq!(shop.renderer.begun(), [6, 1, 6, 6]);
}

// ---------------------------------------------------------------- the customer's money

#[tokio::test(start_paused = true)]
async fn a_declined_payment_fails_the_order_releases_its_seats_and_mails_the_customer() {
    let shop = Shop::open().await;
    shop.provider.script_authorize([Authorize::Decline("insufficient_funds")]);
    let o = shop.order("alice", &[0, 1]).await;
    let paying = shop.pay(o.id).await;

    let done = shop.finished(o.id).await;
    assert_eq!(done.status, OrderStatus::PaymentFailed);
    assert_eq!(done.note.as_deref(), Some("the card has insufficient funds"));
    assert_eq!(done.payments[0].status, PaymentStatus::Declined);
    assert_eq!(shop.orders.steps(o.id), [AwaitPayment, Authorizing, Release, Done]);
    assert_eq!(shop.hold_state(&o), HoldState::Released);
    assert_eq!(shop.seat_states(&o).await, [SeatState::Available, SeatState::Available]);
    assert_eq!((shop.provider.count(Call::Capture), shop.provider.count(Call::Refund)), (0, 0));
    assert!(shop.orders.tickets(o.id).is_empty());
    assert_eq!(shop.sagas.deps.cards.get(&payment_key(&paying)), None, "the card number is forgotten");
    let events = shop.orders.outbox(o.id);
    assert!(matches!(&events[..], [OrderEvent::PaymentFailed { reason, .. }] if reason == "insufficient_funds"), "{events:?}");
    assert_eq!(shop.mail_kinds(o.id), [MailKind::PaymentFailed]);
    let mail = shop.mailed(o.id, MailKind::PaymentFailed).await;
    assert!(mail.text.contains("the card has insufficient funds"), "{}", mail.text);
}

#[tokio::test(start_paused = true)]
async fn an_unpaid_order_expires_at_its_pay_by_and_its_seats_come_back() {
    let shop = Shop::open().await;
    let o = shop.order("bob", &[2]).await;
    assert_eq!(o.pay_by, shop.h.store.hold(shop.h.event_id, o.holds[0]).unwrap().expires_at);

    // A millisecond before the deadline nothing has moved.
    tokio::time::sleep_until(shop.h.clock.instant_at(o.pay_by) - Duration::from_millis(1)).await;
    assert_eq!(shop.orders.order(o.id).unwrap().order.step, AwaitPayment);
    assert_eq!(shop.hold_state(&o), HoldState::Active);

    let done = shop.finished(o.id).await;
    assert_eq!(done.status, OrderStatus::Expired);
    assert!(done.updated_at >= o.pay_by);
    assert_eq!(shop.orders.steps(o.id), [AwaitPayment, Done]);
    assert_eq!(shop.orders.outbox(o.id), [OrderEvent::OrderExpired]);
    // The event actor ends the hold on its own timer; the saga releases nothing.
    eventually("the hold expires", || shop.hold_state(&o) == HoldState::Expired).await;
    assert_eq!(shop.seat_states(&o).await, [SeatState::Available]);
    assert!(shop.provider.calls(Call::Authorize).is_empty() && shop.provider.calls(Call::Status).is_empty());
    assert_eq!(shop.mail_kinds(o.id), [MailKind::Expired]);
    shop.mailed(o.id, MailKind::Expired).await;
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_never_answers_is_asked_for_the_status_which_says_authorized() {
    let shop = Shop::open().await;
    shop.provider.script_authorize([Authorize::ApproveSilently]);
    let Bought { order: o, key, paid_at } = shop.buy("carol", &[3, 4]).await;
    assert_eq!(shop.calls_since(Call::Authorize, paid_at), [(key.clone(), 0)]);
    assert_eq!(shop.calls_since(Call::Status, paid_at), [(key, PAY_TIMEOUT_MS)], "asked once, when the answer is late");
    assert_eq!(shop.orders.steps(o.id), [AwaitPayment, Authorizing, QueryStatus, Confirm, Capture, Issue, Render, Notify, Done]);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_the_provider_never_saw_is_sent_again_with_the_same_key() {
    let shop = Shop::open().await;
    shop.provider.script_authorize([Authorize::Lost]);
    let Bought { order: o, key, paid_at } = shop.buy("dave", &[5]).await;
    assert_eq!(o.payments.len(), 1, "one attempt");
    assert_eq!(shop.calls_since(Call::Status, paid_at), [(key.clone(), PAY_TIMEOUT_MS)]);
    assert_eq!(shop.calls_since(Call::Authorize, paid_at), [(key.clone(), 0), (key, PAY_TIMEOUT_MS)]);
    assert_eq!(
        shop.orders.steps(o.id),
        [AwaitPayment, Authorizing, QueryStatus, Authorizing, Confirm, Capture, Issue, Render, Notify, Done]
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_an_attempt_the_provider_never_saw_is_declined_and_its_seats_released() {
    let mut shop = Shop::open().await;
    shop.provider.script_authorize([Authorize::Lost]);
    let o = shop.order("erin", &[6, 7]).await;
    shop.pay(o.id).await;
    // The card number dies with the node: the saga resumed from storage
    // cannot send the attempt again, and the provider never saw it.
    shop.restart().await;

    let done = shop.finished(o.id).await;
    assert_eq!(done.status, OrderStatus::PaymentFailed);
    assert_eq!(done.note.as_deref(), Some("the payment was interrupted before it reached the provider; pay again"));
    assert_eq!((shop.provider.count(Call::Authorize), shop.provider.count(Call::Status)), (1, 1));
    assert_eq!(shop.orders.steps(o.id), [AwaitPayment, Authorizing, QueryStatus, Release, Done]);
    assert_eq!(shop.hold_state(&o), HoldState::Released);
    assert_eq!(shop.seat_states(&o).await, [SeatState::Available, SeatState::Available]);
    assert_eq!(shop.mail_kinds(o.id), [MailKind::PaymentFailed]);
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_provider_is_asked_for_the_status_with_backoff_until_it_answers() {
    let shop = Shop::open().await;
    shop.provider.script_authorize([Authorize::Unavailable]);
    let outage = || Err(ProviderError::Unavailable("down".into()));
    shop.provider.script_status([outage(), outage(), Ok(ProviderStatus::Pending)]);
    let Bought { key, paid_at, .. } = shop.buy("frank", &[8]).await;
    // An unavailable provider is not asked at once: the saga waits out the
    // payment timeout (the attempt may be deciding), then asks with backoff.
    // The fourth answer is the ledger's: it never saw the attempt.
    let asked: Vec<u64> = shop.calls_since(Call::Status, paid_at).into_iter().map(|(_, t)| t).collect();
    let t = PAY_TIMEOUT_MS;
    assert_eq!(asked, [t, t + RETRY_MS_MIN, t + 3 * RETRY_MS_MIN, t + 7 * RETRY_MS_MIN]);
    assert_eq!(shop.calls_since(Call::Authorize, paid_at), [(key.clone(), 0), (key, t + 7 * RETRY_MS_MIN)]);
}

#[tokio::test(start_paused = true)]
async fn a_capture_the_provider_fails_is_retried_with_backoff_and_taken_once() {
    let shop = Shop::open().await;
    shop.provider.fail_next_captures(2);
    let o = shop.buy("grace", &[9]).await.order;
    assert_eq!(shop.call_times(Call::Capture), [0, RETRY_MS_MIN, 3 * RETRY_MS_MIN]);
    assert_eq!(shop.orders.steps(o.id), FULFILLED);
}

// ---------------------------------------------------------------- compensations

#[tokio::test(start_paused = true)]
async fn cancelling_the_event_refunds_a_fulfilled_order_exactly_once() {
    let shop = Shop::open().await;
    let Bought { order: o, key, .. } = shop.buy("heidi", &[10, 11]).await;

    shop.cancel_event().await;
    // A retried cancel asks again while the first is refunding.
    shop.sagas.event_cancelled(shop.h.event_id);

    let done = shop.stored_when(o.id, "the order is refunded", |o| o.status == OrderStatus::Refunded).await;
    assert_eq!(done.step, Done);
    assert_eq!(done.note.as_deref(), Some("the event was cancelled"));
    assert_eq!(done.payments[0].status, PaymentStatus::Refunded);
    assert!(matches!(shop.provider.state(&key), ProviderStatus::Refunded { .. }));
    assert!(shop.orders.tickets(o.id).iter().all(|t| t.status == TicketStatus::Refunded));
    assert_eq!(shop.orders.steps(o.id)[8..], [Refund, Done]);
    assert_eq!(shop.mail_kinds(o.id), [MailKind::Confirmation, MailKind::Refunded]);
    shop.mailed(o.id, MailKind::Refunded).await;

    // Once more, long after: the order is no longer open.
    shop.sagas.event_cancelled(shop.h.event_id);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let refunds = shop.provider.calls(Call::Refund);
    assert_eq!(refunds.len(), 1, "refunded once");
    assert_eq!(refunds[0].0, key);
    assert_eq!(count(&shop.orders.outbox(o.id), |e| matches!(e, OrderEvent::OrderRefunded { .. })), 1);
    assert_eq!(shop.provider.count(Call::Capture), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_listing_of_the_cancelled_event_s_orders_is_retried() {
    let shop = Shop::open().await;
    let o = shop.buy("heidi", &[10]).await.order;

    shop.orders.fail_next_listings(1);
    shop.cancel_event().await;

    let done = shop.stored_when(o.id, "the order is refunded", |o| o.status == OrderStatus::Refunded).await;
    assert_eq!(shop.provider.count(Call::Refund), 1);
    // The supervisor lives on: it still takes inputs.
    let closed = within(shop.sagas.input(o.id, OrderInput::Cancel)).await;
    assert!(matches!(closed, Err(SagaError::Rejected(_))), "{closed:?}");
    assert_eq!(done.note.as_deref(), Some("the event was cancelled"));
}

#[tokio::test(start_paused = true)]
async fn an_authorization_that_lands_after_the_hold_expired_is_voided() {
    let shop = Shop::open().await;
    let o = shop.order("ivan", &[12, 13]).await;
    // Paid a second before the hold ends; the provider takes three.
    tokio::time::sleep_until(shop.h.clock.instant_at(o.pay_by) - Duration::from_secs(1)).await;
    shop.provider.script_authorize([Authorize::ApproveAfter(Duration::from_secs(3))]);
    shop.pay(o.id).await;

    let done = shop.finished(o.id).await;
    assert_eq!(done.status, OrderStatus::Refunded);
    assert!(done.note.as_deref().is_some_and(|n| n.starts_with("the seats were no longer held")), "{:?}", done.note);
    assert_eq!(done.payments[0].status, PaymentStatus::Refunded);
    assert_eq!(shop.orders.steps(o.id), [AwaitPayment, Authorizing, Confirm, Refund, Done]);
    assert_eq!((shop.provider.count(Call::Capture), shop.provider.count(Call::Refund)), (0, 1));
    assert_eq!(shop.hold_state(&o), HoldState::Expired, "never sold");
    assert_eq!(shop.seat_states(&o).await, [SeatState::Available, SeatState::Available]);
    assert!(shop.orders.tickets(o.id).is_empty());
    assert_eq!(shop.mail_kinds(o.id), [MailKind::Refunded]);
}

#[tokio::test(start_paused = true)]
async fn a_customer_cancel_while_awaiting_payment_releases_the_seats() {
    let shop = Shop::open().await;
    let o = shop.order("ivan", &[12, 13]).await;
    let answer = within(shop.sagas.input(o.id, OrderInput::Cancel)).await.unwrap();
    assert_eq!(answer.step, Release, "answered once the cancel is written");

    let done = shop.finished(o.id).await;
    assert_eq!(done.status, OrderStatus::Cancelled);
    assert_eq!(shop.orders.steps(o.id), [AwaitPayment, Release, Done]);
    assert_eq!(shop.hold_state(&o), HoldState::Released);
    assert_eq!(shop.seat_states(&o).await, [SeatState::Available, SeatState::Available]);
    assert!(shop.provider.calls(Call::Authorize).is_empty());
    assert_eq!(shop.orders.outbox(o.id), [OrderEvent::OrderCancelled]);
    assert_eq!(shop.mail_kinds(o.id), [MailKind::Cancelled]);
}

#[tokio::test(start_paused = true)]
async fn a_customer_cancel_while_authorizing_voids_the_authorization_and_releases_the_seats() {
    let shop = Shop::open().await;
    shop.provider.script_authorize([Authorize::ApproveAfter(Duration::from_secs(1))]);
    let o = shop.order("judy", &[14]).await;
    shop.pay(o.id).await;
    let answer = within(shop.sagas.input(o.id, OrderInput::Cancel)).await.unwrap();
    assert!(answer.cancel_requested && answer.step == Authorizing, "honoured once the payment settles: {answer:?}");

    let done = shop.finished(o.id).await;
    assert_eq!(done.status, OrderStatus::Cancelled);
    assert_eq!(done.payments[0].status, PaymentStatus::Refunded);
    assert_eq!(shop.orders.steps(o.id), [AwaitPayment, Authorizing, Authorizing, Refund, Release, Done]);
    assert_eq!((shop.provider.count(Call::Capture), shop.provider.count(Call::Refund)), (0, 1));
    assert!(matches!(shop.provider.state(&payment_key(&done)), ProviderStatus::Refunded { .. }));
    assert_eq!(shop.hold_state(&o), HoldState::Released);
    assert_eq!(shop.seat_states(&o).await, [SeatState::Available]);
    assert_eq!(shop.mail_kinds(o.id), [MailKind::Cancelled]);
}

// ---------------------------------------------------------------- storage faults

#[tokio::test(start_paused = true)]
async fn a_pay_whose_write_fails_answers_unavailable_and_changes_nothing() {
    let shop = Shop::open().await;
    let o = shop.order("kim", &[15]).await;
    shop.orders.fail_next_saves(1);
    assert!(matches!(shop.try_pay(o.id).await, Err(SagaError::Unavailable(_))));
    assert_eq!(shop.orders.order(o.id).unwrap().order, o);
    assert!(shop.provider.calls(Call::Authorize).is_empty(), "nothing is sent before the step is written");

    shop.pay(o.id).await;
    assert_fulfilled(&shop, &shop.finished(o.id).await).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_save_after_the_capture_is_redone_without_taking_the_money_twice() {
    let shop = Shop::open().await;
    shop.orders.fail_saves_moving_to(Issue, 2);
    let o = shop.buy("lena", &[16, 17]).await.order;
    // The saga redoes the capture it could not record, with the same key:
    // the provider takes the money once.
    assert_eq!(shop.call_times(Call::Capture), [0, RETRY_MS_MIN, 3 * RETRY_MS_MIN]);
    let to_issue: Vec<bool> = shop.orders.writes(o.id).iter().filter(|w| w.step == Issue).map(|w| w.outcome.is_ok()).collect();
    assert_eq!(to_issue, [false, false, true]);
    assert_eq!(shop.orders.steps(o.id), FULFILLED);
}

#[tokio::test(start_paused = true)]
async fn an_order_another_writer_moved_is_reloaded_from_storage() {
    let shop = Shop::open().await;
    shop.renderer.fail_next(1);
    let o = shop.order("mallory", &[18]).await;
    shop.pay(o.id).await;
    eventually("the first render fails", || shop.renderer.calls() == 1).await;

    // While the saga waits to render again, another writer renders the
    // order and moves it on.
    let stored = shop.orders.order(o.id).unwrap();
    assert_eq!(stored.order.step, Render);
    usher_actors::saga::write_atomically(&shop.sagas.deps.pdf_path(o.id), b"%PDF-fake from elsewhere").await.unwrap();
    shop.orders.write_elsewhere(o.id, OrderInput::Rendered, shop.h.clock.now());

    let done = shop.finished(o.id).await;
    assert_eq!(done.status, OrderStatus::Fulfilled);
    // The saga's own write lost the race; the saga reloaded at Notify, so
    // its next write read the other writer's version.
    let writes = shop.orders.writes(o.id);
    let lost: Vec<_> = writes.iter().filter(|w| matches!(w.outcome, Err(StoreError::Conflict(_)))).collect();
    assert_eq!(lost.len(), 1, "{writes:?}");
    assert_eq!((lost[0].step, lost[0].version), (Notify, stored.version));
    let last = writes.last().unwrap();
    assert_eq!((last.step, last.version, last.outcome.is_ok()), (Done, stored.version + 1, true));
    assert_eq!(shop.orders.steps(o.id), FULFILLED);
    assert_eq!(shop.renderer.calls(), 2, "the reloaded saga does not render again");
    assert_eq!(shop.mail_kinds(o.id), [MailKind::Confirmation]);
    assert_eq!(shop.provider.count(Call::Capture), 1);
}

// ---------------------------------------------------------------- ownership

/// Whether a saga runs for the order on this node now.
async fn saga_runs(shop: &Shop, id: OrderId) -> bool {
    within(shop.sagas.watch(id)).await.is_some()
}

/// Another node takes the event while a payment is in flight: this node's
/// event actor is fenced at its next commit, the order's saga stops here
/// (its writes would be fenced too) and writes nothing; when the grant
/// comes back the saga resumes from storage and finishes the order once.
#[tokio::test(start_paused = true)]
async fn an_event_taken_by_another_owner_stops_its_sagas_until_the_grant_comes_back() {
    let shop = Shop::open().await;
    shop.provider.script_authorize([Authorize::ApproveSilently]);
    let o = shop.order("gina", &[8]).await;
    let paid_at = Instant::now();
    let key_of_payment = payment_key(&shop.pay(o.id).await);
    assert!(saga_runs(&shop, o.id).await, "the paid order's saga runs here");

    // Another owner's grant moves the event's epoch past ours.
    let ours = shop.h.event().await;
    let theirs = within(shop.h.store.fence_event(shop.h.event_id, EpochClaim::Next)).await.unwrap();
    assert!(theirs > ours.epoch);
    let refused = within(ours.command(key("after-the-loss"), hold_seats(new_hold_id(), "hal", &[9]))).await;
    assert!(matches!(&refused, Err(CommandError::Unavailable(m)) if m.contains("fenced")), "{:?}", refused.map(|o| o.result));
    within(async {
        while saga_runs(&shop, o.id).await {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(shop.orders.order(o.id).unwrap().order.step, Authorizing, "the stopped saga wrote nothing more");

    // The grant comes back (the next use of the event takes it again).
    let back = shop.h.next_actor(ours.actor.get_id()).await;
    assert!(back.epoch > theirs);
    let done = shop.finished(o.id).await;
    assert_fulfilled(&shop, &done).await;
    assert_eq!(shop.calls_since(Call::Capture, paid_at).len(), 1, "captured once");
    assert!(shop.calls_since(Call::Authorize, paid_at).iter().all(|(k, _)| *k == key_of_payment), "one payment key");
}

/// A write stamped with an epoch the event has left is refused alone and
/// changes nothing, as the SQL store does.
#[tokio::test(start_paused = true)]
async fn an_order_write_with_a_stale_epoch_is_fenced_and_changes_nothing() {
    let shop = Shop::open().await;
    let o = shop.order("ivan", &[10]).await;
    let ev = shop.h.event().await;
    let stored = shop.orders.order(o.id).unwrap();
    let mut moved = stored.order.clone();
    let t = moved.apply(OrderInput::Cancel, shop.h.clock.now()).unwrap();
    let stale = Epoch(ev.epoch.0 - 1);
    let w = OrderWrite {
        order: &moved,
        epoch: stale,
        version: stored.version,
        transition: &t,
        new_tickets: &[],
        seat_labels: &[],
        now: shop.h.clock.now(),
        trace: None,
    };
    let r = within(shop.orders.save_orders(std::slice::from_ref(&w))).await;
    assert!(matches!(r.as_slice(), [Err(StoreError::Fenced { .. })]), "{r:?}");
    assert_eq!(shop.orders.order(o.id).unwrap().version, stored.version);
    let again = within(shop.orders.create_order("order-stale", 1, &o, &[], stale)).await;
    assert!(matches!(again, Err(StoreError::Fenced { .. })), "{again:?}");
}

/// The grant comes back before the lost saga has finished stopping: the
/// order still gets a running saga and is fulfilled once.
#[tokio::test(start_paused = true)]
async fn a_grant_that_comes_back_at_once_still_resumes_the_order() {
    let shop = Shop::open().await;
    shop.provider.script_authorize([Authorize::ApproveSilently]);
    let o = shop.order("judy", &[11]).await;
    let paid_at = Instant::now();
    shop.pay(o.id).await;
    let ours = shop.h.event().await;
    within(shop.h.store.fence_event(shop.h.event_id, EpochClaim::Next)).await.unwrap();
    let _ = within(ours.command(key("fenced-now"), hold_seats(new_hold_id(), "kim", &[12]))).await;
    // No wait for the saga to stop: the next use takes the event again.
    shop.h.next_actor(ours.actor.get_id()).await;
    let done = shop.finished(o.id).await;
    assert_fulfilled(&shop, &done).await;
    assert_eq!(shop.calls_since(Call::Capture, paid_at).len(), 1, "captured once");
}
