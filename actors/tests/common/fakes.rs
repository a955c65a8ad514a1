//! Scripted stand-ins for the saga's other ports: a payment provider with a
//! ledger and per-call answers, a renderer that fails a set number of
//! times, and a mailer that keeps what it is given. Each records its calls.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use usher_actors::{
    AuthorizeRequest, BoxFuture, Email, MailError, Mailer, OrderDoc, PaymentOutcome, PaymentProvider, ProviderError, ProviderStatus,
    RenderError, TicketRenderer,
};

use super::take_one;

/// What the provider does with one authorization.
#[derive(Debug, Clone)]
pub enum Authorize {
    /// Authorizes and answers.
    Approve,
    /// Declines with this decline code and answers.
    Decline(&'static str),
    /// Answers `Unavailable` and decides nothing.
    Unavailable,
    /// Never answers and never heard of it: the request was lost.
    Lost,
    /// Authorizes but never answers: the answer was lost.
    ApproveSilently,
    /// Authorizes after this long, then answers.
    ApproveAfter(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Authorize,
    Status,
    Capture,
    Refund,
}

/// A provider that keeps a ledger by idempotency key, like a real one, and
/// answers authorizations (and, when scripted, status queries) as told.
#[derive(Default)]
pub struct ScriptedProvider {
    authorize: Mutex<VecDeque<Authorize>>,
    /// Status answers to give before the ledger's own.
    status: Mutex<VecDeque<Result<ProviderStatus, ProviderError>>>,
    ledger: Mutex<HashMap<String, ProviderStatus>>,
    fail_captures: AtomicU32,
    calls: Mutex<Vec<(Call, String, Instant)>>,
}

impl ScriptedProvider {
    pub fn new() -> Arc<ScriptedProvider> {
        Arc::new(ScriptedProvider::default())
    }

    // -- knobs

    /// The answers of the next authorizations, in order; `Approve` after them.
    pub fn script_authorize(&self, answers: impl IntoIterator<Item = Authorize>) {
        self.authorize.lock().unwrap().extend(answers);
    }
    /// The answers of the next status queries, in order; the ledger's after them.
    pub fn script_status(&self, answers: impl IntoIterator<Item = Result<ProviderStatus, ProviderError>>) {
        self.status.lock().unwrap().extend(answers);
    }
    /// The next `n` captures fail with `Unavailable` (and take nothing).
    pub fn fail_next_captures(&self, n: u32) {
        self.fail_captures.store(n, Ordering::Release);
    }

    // -- observations

    /// Every call of `what`, with the key it named and when it came.
    pub fn calls(&self, what: Call) -> Vec<(String, Instant)> {
        self.calls.lock().unwrap().iter().filter(|(c, _, _)| *c == what).map(|(_, k, t)| (k.clone(), *t)).collect()
    }
    pub fn count(&self, what: Call) -> usize {
        self.calls(what).len()
    }
    /// What the provider's ledger says of an attempt.
    pub fn state(&self, key: &str) -> ProviderStatus {
        self.ledger.lock().unwrap().get(key).cloned().unwrap_or(ProviderStatus::Unknown)
    }

    fn record(&self, what: Call, key: &str) {
        self.calls.lock().unwrap().push((what, key.to_owned(), Instant::now()));
    }

    fn provider_ref(key: &str) -> String {
        format!("ref-{key}")
    }

    fn authorized(&self, key: &str) -> PaymentOutcome {
        let provider_ref = Self::provider_ref(key);
        self.ledger.lock().unwrap().insert(key.to_owned(), ProviderStatus::Authorized { provider_ref: provider_ref.clone() });
        PaymentOutcome::Authorized { provider_ref }
    }

    /// Moves an attempt to `to` if it may (capturing twice, or refunding
    /// twice, changes nothing).
    fn settle(&self, key: &str, provider_ref: &str, capture: bool) -> Result<(), ProviderError> {
        let mut ledger = self.ledger.lock().unwrap();
        let known = match ledger.get(key) {
            Some(ProviderStatus::Authorized { provider_ref: r } | ProviderStatus::Captured { provider_ref: r }) => r == provider_ref,
            Some(ProviderStatus::Refunded { provider_ref: r }) => r == provider_ref && !capture,
            _ => false,
        };
        if !known {
            return Err(ProviderError::Refused(format!("payment {key} cannot be {}", if capture { "captured" } else { "refunded" })));
        }
        let provider_ref = provider_ref.to_owned();
        let to = if capture { ProviderStatus::Captured { provider_ref } } else { ProviderStatus::Refunded { provider_ref } };
        ledger.insert(key.to_owned(), to);
        Ok(())
    }
}

impl PaymentProvider for ScriptedProvider {
    fn authorize(&self, req: AuthorizeRequest) -> BoxFuture<'_, Result<PaymentOutcome, ProviderError>> {
        Box::pin(async move {
            self.record(Call::Authorize, &req.key);
            let answer = self.authorize.lock().unwrap().pop_front().unwrap_or(Authorize::Approve);
            match answer {
                Authorize::Approve => Ok(self.authorized(&req.key)),
                Authorize::Decline(code) => {
                    self.ledger.lock().unwrap().insert(req.key, ProviderStatus::Declined { reason: code.into() });
                    Ok(PaymentOutcome::Declined { reason: code.into() })
                }
                Authorize::Unavailable => Err(ProviderError::Unavailable("scripted outage".into())),
                Authorize::Lost => std::future::pending().await,
                Authorize::ApproveSilently => {
                    self.authorized(&req.key);
                    std::future::pending().await
                }
                Authorize::ApproveAfter(d) => {
                    tokio::time::sleep(d).await;
                    Ok(self.authorized(&req.key))
                }
            }
        })
    }

    fn capture<'a>(&'a self, key: &'a str, provider_ref: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.record(Call::Capture, key);
            if take_one(&self.fail_captures) {
                return Err(ProviderError::Unavailable("scripted outage".into()));
            }
            self.settle(key, provider_ref, true)
        })
    }

    fn refund<'a>(&'a self, key: &'a str, provider_ref: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.record(Call::Refund, key);
            self.settle(key, provider_ref, false)
        })
    }

    fn status<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ProviderStatus, ProviderError>> {
        Box::pin(async move {
            self.record(Call::Status, key);
            let scripted = self.status.lock().unwrap().pop_front();
            scripted.unwrap_or_else(|| Ok(self.state(key)))
        })
    }
}

/// A renderer that fails its first `n` calls, then answers `pdf_bytes`.
/// Its renders can be held at a gate and let through one by one, to see
/// which order a freed render slot goes to.
#[derive(Default)]
pub struct FlakyRenderer {
    fail: AtomicU32,
    calls: AtomicU32,
    gate: Gate,
    /// The page counts of the renders begun, in the order they began.
    begun: Mutex<Vec<usize>>,
}

/// While closed, each render waits for a pass (`let_through`).
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, u32)>,
    opened: std::sync::Condvar,
}

impl FlakyRenderer {
    pub fn new() -> Arc<FlakyRenderer> {
        Arc::new(FlakyRenderer::default())
    }
    pub fn fail_next(&self, n: u32) {
        self.fail.store(n, Ordering::Release);
    }
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::Acquire)
    }
    /// From now on every render waits at the gate for a pass.
    pub fn close_gate(&self) {
        self.gate.state.lock().unwrap().0 = true;
    }
    /// Lets `n` more renders through the gate.
    pub fn let_through(&self, n: u32) {
        self.gate.state.lock().unwrap().1 += n;
        self.gate.opened.notify_all();
    }
    /// The page counts of the renders begun so far, in order.
    pub fn begun(&self) -> Vec<usize> {
        self.begun.lock().unwrap().clone()
    }
}

/// The PDF the fake renderer makes of an order.
pub fn pdf_bytes(doc: &OrderDoc) -> Vec<u8> {
    format!("%PDF-fake {} seats={}", doc.order_number, doc.tickets.len()).into_bytes()
}

impl TicketRenderer for FlakyRenderer {
    fn render(&self, doc: &OrderDoc) -> Result<Vec<u8>, RenderError> {
        self.calls.fetch_add(1, Ordering::AcqRel);
        self.begun.lock().unwrap().push(doc.tickets.len());
        let gate = self.gate.state.lock().unwrap();
        // Waits in real time, at most `WAIT`: a failed test ends instead of
        // hanging in the runtime's shutdown, which waits for this thread.
        let (mut gate, _) = self.gate.opened.wait_timeout_while(gate, super::WAIT, |(closed, passes)| *closed && *passes == 0).unwrap();
        if gate.0 {
            gate.1 = gate.1.saturating_sub(1);
        }
        drop(gate);
        if take_one(&self.fail) {
            return Err(RenderError("scripted render failure".into()));
        }
        Ok(pdf_bytes(doc))
    }
}

/// A mailer that delivers everything to a list.
#[derive(Default)]
pub struct RecordingMailer {
    sent: Mutex<Vec<Email>>,
}

impl RecordingMailer {
    pub fn new() -> Arc<RecordingMailer> {
        Arc::new(RecordingMailer::default())
    }
    pub fn sent(&self) -> Vec<Email> {
        self.sent.lock().unwrap().clone()
    }
}

impl Mailer for RecordingMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            self.sent.lock().unwrap().push(email.clone());
            Ok(())
        })
    }
    fn describe(&self) -> String {
        "a list in memory".into()
    }
}
