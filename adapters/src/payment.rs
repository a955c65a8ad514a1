//! The simulated payment provider: deterministic test cards, authorization
//! and capture, refunds, idempotency keys, a status query, and a ledger that
//! survives restarts (a JSON-lines file), like a real provider's memory that
//! does not die with our process.
//!
//! Test cards (spaces and dashes are ignored):
//!
//! | card                  | what the provider does                                        |
//! |-----------------------|---------------------------------------------------------------|
//! | `4242 4242 4242 4242` | authorizes                                                    |
//! | `4000 0000 0000 0002` | declines: `card_declined`                                     |
//! | `4000 0000 0000 9995` | declines: `insufficient_funds`                                |
//! | `4000 0000 0000 0119` | never answers; the status query then says `issuer_timeout`    |
//! | `4000 0000 0000 0259` | never answers; the status query then says authorized          |
//! | `4000 0000 0000 3220` | authorizes after the configured delay (3 s by default)        |
//! | any other valid card  | authorizes                                                    |

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use usher_actors::{AuthorizeRequest, BoxFuture, PaymentOutcome, PaymentProvider, ProviderError, ProviderStatus};

pub const CARD_OK: &str = "4242424242424242";
pub const CARD_DECLINED: &str = "4000000000000002";
pub const CARD_INSUFFICIENT_FUNDS: &str = "4000000000009995";
pub const CARD_NO_ANSWER_DECLINED: &str = "4000000000000119";
pub const CARD_NO_ANSWER_AUTHORIZED: &str = "4000000000000259";
pub const CARD_SLOW: &str = "4000000000003220";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    /// Received, not decided: a card that never answers.
    Pending,
    Authorized,
    Captured,
    Declined,
    Refunded,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Authorized => "authorized",
            State::Captured => "captured",
            State::Declined => "declined",
            State::Refunded => "refunded",
        }
    }
}

/// How a card that never answers resolves when its status is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Resolves {
    Authorized,
    Declined(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    key: String,
    /// The card as a merchant may keep it (PCI DSS truncation: the first six
    /// and last four digits, the rest masked); never the whole number.
    card: String,
    amount_minor: i64,
    currency: String,
    state: State,
    provider_ref: String,
    reason: Option<String>,
    /// The slow card's decision time (unix ms): the provider decides on its
    /// own clock, whether or not the caller is still waiting.
    #[serde(default)]
    decide_at_ms: Option<u64>,
    /// A card that never answers: what its status query will say.
    #[serde(default)]
    resolves: Option<Resolves>,
}

/// `424242******4242`: the first six and the last four digits.
pub fn truncate_card(card: &str) -> String {
    let n = card.len();
    if n <= 10 || !card.is_ascii() {
        return "*".repeat(n);
    }
    format!("{}{}{}", &card[..6], "*".repeat(n - 10), &card[n - 4..])
}

fn is_truncated(card: &str) -> bool {
    card.contains('*')
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub struct SimulatedProvider {
    ledger: Mutex<HashMap<String, Entry>>,
    file: Option<Mutex<std::fs::File>>,
    /// The ledger's path and how far it has been read: the nodes of a
    /// cluster share one ledger file (one provider's memory), each appending
    /// whole lines; every look-up first reads what the others appended.
    follow: Option<(PathBuf, Mutex<u64>)>,
    slow: Duration,
}

/// What the card does when asked to authorize.
enum Behaviour {
    Authorize,
    Decline(&'static str),
    Hang { resolves_to: Result<(), &'static str> },
    Slow,
}

fn behaviour(card: &str) -> Behaviour {
    match card {
        CARD_DECLINED => Behaviour::Decline("card_declined"),
        CARD_INSUFFICIENT_FUNDS => Behaviour::Decline("insufficient_funds"),
        CARD_NO_ANSWER_DECLINED => Behaviour::Hang { resolves_to: Err("issuer_timeout") },
        CARD_NO_ANSWER_AUTHORIZED => Behaviour::Hang { resolves_to: Ok(()) },
        CARD_SLOW => Behaviour::Slow,
        _ => Behaviour::Authorize,
    }
}

impl SimulatedProvider {
    /// `ledger`: where the provider keeps its memory (None: in memory only).
    /// `slow`: how long the slow test card takes to answer.
    pub fn open(ledger: Option<PathBuf>, slow: Duration) -> std::io::Result<SimulatedProvider> {
        let mut map = HashMap::new();
        let mut follow = None;
        let file = match ledger {
            None => None,
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut whole_numbers = false;
                let mut read_to = 0u64;
                if let Ok(text) = std::fs::read_to_string(&path) {
                    // Up to the last whole line; a torn one is read again
                    // once its writer has finished it.
                    read_to = text.rfind('\n').map_or(0, |i| i as u64 + 1);
                    // The last line of a key wins; a torn last line (crash
                    // mid-write) is skipped.
                    for line in text.lines() {
                        if let Ok(mut e) = serde_json::from_str::<Entry>(line) {
                            if !is_truncated(&e.card) {
                                // A ledger from before truncation: what a
                                // card that never answers does is kept, the
                                // number is not.
                                whole_numbers = true;
                                if let Behaviour::Hang { resolves_to } = behaviour(&e.card) {
                                    e.resolves = Some(resolves(resolves_to));
                                }
                                e.card = truncate_card(&e.card);
                            }
                            map.insert(e.key.clone(), e);
                        }
                    }
                }
                if whole_numbers {
                    // Rewrite the ledger without the whole numbers, atomically.
                    let tmp = path.with_extension("jsonl.tmp");
                    let mut text = Vec::new();
                    for e in map.values() {
                        text.extend(serde_json::to_vec(e).map_err(std::io::Error::other)?);
                        text.push(b'\n');
                    }
                    write_owner_only(&tmp, &text)?;
                    std::fs::rename(&tmp, &path)?;
                    read_to = text.len() as u64;
                }
                let f = open_owner_only(&path)?;
                follow = Some((path, Mutex::new(read_to)));
                Some(Mutex::new(f))
            }
        };
        Ok(SimulatedProvider { ledger: Mutex::new(map), file, follow, slow })
    }

    /// Reads the lines other processes appended to the ledger since the
    /// last look (the last line of a key wins, as at start).
    fn catch_up(&self) {
        use std::io::{Read as _, Seek as _};
        let Some((path, read_to)) = &self.follow else { return };
        let mut read_to = read_to.lock().expect("ledger offset");
        let Ok(meta) = std::fs::metadata(path) else { return };
        if meta.len() <= *read_to {
            return;
        }
        let Ok(mut f) = std::fs::File::open(path) else { return };
        let mut bytes = Vec::new();
        if f.seek(std::io::SeekFrom::Start(*read_to)).is_err() || f.read_to_end(&mut bytes).is_err() {
            return;
        }
        let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else { return };
        let mut ledger = self.ledger.lock().expect("ledger lock");
        for line in bytes[..end].split(|&b| b == b'\n') {
            if let Ok(e) = serde_json::from_slice::<Entry>(line) {
                ledger.insert(e.key.clone(), e);
            }
        }
        *read_to += end as u64 + 1;
    }

    fn record(&self, e: &Entry) -> Result<(), ProviderError> {
        self.ledger.lock().expect("ledger lock").insert(e.key.clone(), e.clone());
        if let Some(f) = &self.file {
            let mut f = f.lock().expect("ledger file lock");
            let mut line = serde_json::to_vec(e).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
            line.push(b'\n');
            // One write of a whole line to a file opened for appending:
            // the lines of several processes never interleave.
            f.write_all(&line).and_then(|_| f.sync_data()).map_err(|e| ProviderError::Unavailable(format!("ledger: {e}")))?;
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Option<Entry> {
        self.catch_up();
        self.ledger.lock().expect("ledger lock").get(key).cloned()
    }

    fn outcome(e: &Entry) -> Option<PaymentOutcome> {
        match e.state {
            State::Pending => None,
            State::Declined => Some(PaymentOutcome::Declined { reason: e.reason.clone().unwrap_or_default() }),
            State::Authorized | State::Captured | State::Refunded => {
                Some(PaymentOutcome::Authorized { provider_ref: e.provider_ref.clone() })
            }
        }
    }

    async fn do_authorize(&self, req: AuthorizeRequest) -> Result<PaymentOutcome, ProviderError> {
        if let Some(e) = self.get(&req.key) {
            if e.card != truncate_card(&req.card_number) || e.amount_minor != req.amount.minor {
                return Err(ProviderError::Refused(format!("idempotency key {} was used for another payment", req.key)));
            }
            if let (State::Pending, Some(at)) = (e.state, e.decide_at_ms) {
                tokio::time::sleep(Duration::from_millis(at.saturating_sub(unix_ms()))).await;
                let e = self.decide_if_due(key_entry(self, &req.key)?)?;
                return Ok(Self::outcome(&e).expect("decided once due"));
            }
            return match Self::outcome(&e) {
                Some(o) => Ok(o),
                None => std::future::pending().await,
            };
        }
        let mut e = Entry {
            key: req.key.clone(),
            card: truncate_card(&req.card_number),
            amount_minor: req.amount.minor,
            currency: req.amount.currency.as_str().to_owned(),
            state: State::Pending,
            provider_ref: format!("sim_{}", uuid::Uuid::new_v4().simple()),
            reason: None,
            decide_at_ms: None,
            resolves: None,
        };
        match behaviour(&req.card_number) {
            Behaviour::Authorize => e.state = State::Authorized,
            Behaviour::Decline(why) => {
                e.state = State::Declined;
                e.reason = Some(why.into());
            }
            Behaviour::Hang { resolves_to } => {
                e.resolves = Some(resolves(resolves_to));
                self.record(&e)?;
                return std::future::pending().await;
            }
            Behaviour::Slow => {
                e.decide_at_ms = Some(unix_ms() + self.slow.as_millis() as u64);
                self.record(&e)?;
                // Dropping this future (the caller gave up waiting) does not
                // stop the decision: the status query finds it when due.
                tokio::time::sleep(self.slow).await;
                let e = self.decide_if_due(key_entry(self, &req.key)?)?;
                return Ok(Self::outcome(&e).expect("decided once due"));
            }
        }
        self.record(&e)?;
        Ok(Self::outcome(&e).expect("decided"))
    }

    async fn do_status(&self, key: &str) -> Result<ProviderStatus, ProviderError> {
        let Some(mut e) = self.get(key) else { return Ok(ProviderStatus::Unknown) };
        if e.state == State::Pending {
            match e.resolves.clone() {
                Some(r) => {
                    match r {
                        Resolves::Authorized => e.state = State::Authorized,
                        Resolves::Declined(why) => {
                            e.state = State::Declined;
                            e.reason = Some(why);
                        }
                    }
                    self.record(&e)?;
                }
                // The slow card decides when its time comes, not before.
                _ => e = self.decide_if_due(e)?,
            }
        }
        Ok(match e.state {
            State::Pending => ProviderStatus::Pending,
            State::Authorized => ProviderStatus::Authorized { provider_ref: e.provider_ref },
            State::Captured => ProviderStatus::Captured { provider_ref: e.provider_ref },
            State::Declined => ProviderStatus::Declined { reason: e.reason.unwrap_or_default() },
            State::Refunded => ProviderStatus::Refunded { provider_ref: e.provider_ref },
        })
    }

    /// A pending slow payment whose time has come is authorized (and recorded).
    fn decide_if_due(&self, mut e: Entry) -> Result<Entry, ProviderError> {
        if e.state == State::Pending && e.decide_at_ms.is_some_and(|at| unix_ms() >= at) {
            e.state = State::Authorized;
            self.record(&e)?;
        }
        Ok(e)
    }

    fn settle(&self, key: &str, provider_ref: &str, to: State) -> Result<(), ProviderError> {
        let Some(mut e) = self.get(key) else {
            return Err(ProviderError::Refused(format!("no payment with key {key}")));
        };
        if e.provider_ref != provider_ref {
            return Err(ProviderError::Refused(format!("payment {key} has another reference")));
        }
        let ok = matches!(
            (e.state, to),
            (State::Authorized | State::Captured, State::Captured)
                | (State::Authorized | State::Captured | State::Refunded, State::Refunded)
        );
        if !ok {
            return Err(ProviderError::Refused(format!("payment {key} is {}, it cannot become {}", e.state.as_str(), to.as_str())));
        }
        if e.state != to {
            e.state = to;
            self.record(&e)?;
        }
        Ok(())
    }
}

fn resolves(r: Result<(), &'static str>) -> Resolves {
    match r {
        Ok(()) => Resolves::Authorized,
        Err(why) => Resolves::Declined(why.into()),
    }
}

/// The ledger, opened for appending, readable by its owner only.
fn open_owner_only(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let f = opts.open(path)?;
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(f)
}

fn write_owner_only(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn key_entry(p: &SimulatedProvider, key: &str) -> Result<Entry, ProviderError> {
    p.get(key).ok_or_else(|| ProviderError::Unavailable(format!("payment {key} vanished from the ledger")))
}

impl PaymentProvider for SimulatedProvider {
    fn authorize(&self, req: AuthorizeRequest) -> BoxFuture<'_, Result<PaymentOutcome, ProviderError>> {
        Box::pin(self.do_authorize(req))
    }
    fn capture<'a>(&'a self, key: &'a str, provider_ref: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { self.settle(key, provider_ref, State::Captured) })
    }
    fn refund<'a>(&'a self, key: &'a str, provider_ref: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { self.settle(key, provider_ref, State::Refunded) })
    }
    fn status<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ProviderStatus, ProviderError>> {
        Box::pin(self.do_status(key))
    }
}

/// Digits of a card number as typed (spaces and dashes allowed), checked
/// with the Luhn sum. `None` when it cannot be a card number.
pub fn parse_card_number(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use usher_engine::{Currency, Money};

    fn req(key: &str, card: &str) -> AuthorizeRequest {
        AuthorizeRequest {
            key: key.into(),
            reference: "order".into(),
            amount: Money { minor: 1000, currency: Currency::parse("EUR").unwrap() },
            card_number: card.into(),
        }
    }

    #[test]
    fn test_cards_pass_luhn() {
        for c in [CARD_OK, CARD_DECLINED, CARD_INSUFFICIENT_FUNDS, CARD_NO_ANSWER_DECLINED, CARD_NO_ANSWER_AUTHORIZED, CARD_SLOW] {
            assert_eq!(parse_card_number(c).as_deref(), Some(c), "{c}");
        }
        assert_eq!(parse_card_number("4242 4242-4242 4242").as_deref(), Some(CARD_OK));
        assert_eq!(parse_card_number("4242424242424241"), None);
        assert_eq!(parse_card_number("42"), None);
        assert_eq!(parse_card_number("4242x42424242424"), None);
    }

    #[tokio::test]
    async fn authorize_capture_refund_and_replay() {
        let p = SimulatedProvider::open(None, Duration::from_millis(1)).unwrap();
        let PaymentOutcome::Authorized { provider_ref } = p.authorize(req("k1", CARD_OK)).await.unwrap() else { panic!() };
        // Same key: the same answer, no second authorization.
        assert_eq!(p.authorize(req("k1", CARD_OK)).await.unwrap(), PaymentOutcome::Authorized { provider_ref: provider_ref.clone() });
        assert!(matches!(p.authorize(req("k1", CARD_DECLINED)).await, Err(ProviderError::Refused(_))));
        p.capture("k1", &provider_ref).await.unwrap();
        p.refund("k1", &provider_ref).await.unwrap();
        p.refund("k1", &provider_ref).await.unwrap();
        assert_eq!(p.status("k1").await.unwrap(), ProviderStatus::Refunded { provider_ref });
        assert_eq!(p.status("nope").await.unwrap(), ProviderStatus::Unknown);
    }

    #[tokio::test]
    async fn declines_and_cards_that_never_answer() {
        let p = SimulatedProvider::open(None, Duration::from_millis(1)).unwrap();
        assert_eq!(
            p.authorize(req("d", CARD_INSUFFICIENT_FUNDS)).await.unwrap(),
            PaymentOutcome::Declined { reason: "insufficient_funds".into() }
        );
        let hang = tokio::time::timeout(Duration::from_millis(50), p.authorize(req("h", CARD_NO_ANSWER_DECLINED))).await;
        assert!(hang.is_err(), "the provider must not answer");
        assert_eq!(p.status("h").await.unwrap(), ProviderStatus::Declined { reason: "issuer_timeout".into() });
        let _ = tokio::time::timeout(Duration::from_millis(50), p.authorize(req("h2", CARD_NO_ANSWER_AUTHORIZED))).await;
        assert!(matches!(p.status("h2").await.unwrap(), ProviderStatus::Authorized { .. }));
    }

    #[tokio::test]
    async fn the_slow_card_decides_on_time_even_when_its_caller_gave_up() {
        let p = SimulatedProvider::open(None, Duration::from_millis(300)).unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(20), p.authorize(req("s", CARD_SLOW))).await;
        assert!(gave_up.is_err(), "not decided yet");
        assert_eq!(p.status("s").await.unwrap(), ProviderStatus::Pending);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(matches!(p.status("s").await.unwrap(), ProviderStatus::Authorized { .. }));
        // A retry of the authorization gets the same answer at once.
        assert!(matches!(p.authorize(req("s", CARD_SLOW)).await.unwrap(), PaymentOutcome::Authorized { .. }));
    }

    #[tokio::test]
    async fn the_ledger_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("usher-sim-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("ledger.jsonl");
        let r = {
            let p = SimulatedProvider::open(Some(path.clone()), Duration::from_millis(1)).unwrap();
            let PaymentOutcome::Authorized { provider_ref } = p.authorize(req("k", CARD_OK)).await.unwrap() else { panic!() };
            provider_ref
        };
        let p = SimulatedProvider::open(Some(path), Duration::from_millis(1)).unwrap();
        p.capture("k", &r).await.unwrap();
        assert_eq!(p.status("k").await.unwrap(), ProviderStatus::Captured { provider_ref: r });
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn the_ledger_keeps_no_card_number_and_only_its_owner_reads_it() {
        let dir = std::env::temp_dir().join(format!("usher-sim-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("ledger.jsonl");
        {
            let p = SimulatedProvider::open(Some(path.clone()), Duration::from_millis(1)).unwrap();
            p.authorize(req("k", CARD_OK)).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(20), p.authorize(req("h", CARD_NO_ANSWER_DECLINED))).await;
            // The same key with the same card is a retry; another card is refused.
            assert!(p.authorize(req("k", CARD_OK)).await.is_ok());
            assert!(matches!(p.authorize(req("k", "4242424242424241")).await, Err(ProviderError::Refused(_))));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(CARD_OK) && !text.contains(CARD_NO_ANSWER_DECLINED), "{text}");
        assert!(text.contains("424242******4242"), "{text}");
        #[cfg(unix)]
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions()) & 0o777, 0o600);
        // After a restart the card that never answered still resolves as it would have.
        let p = SimulatedProvider::open(Some(path.clone()), Duration::from_millis(1)).unwrap();
        assert_eq!(p.status("h").await.unwrap(), ProviderStatus::Declined { reason: "issuer_timeout".into() });
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_ledger_from_before_truncation_is_rewritten_without_the_numbers() {
        let dir = std::env::temp_dir().join(format!("usher-sim-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger.jsonl");
        let old = format!(
            "{}\n",
            serde_json::json!({"key": "h", "card": CARD_NO_ANSWER_AUTHORIZED, "amount_minor": 1000, "currency": "EUR",
                "state": "Pending", "provider_ref": "sim_1", "reason": null})
        );
        std::fs::write(&path, old).unwrap();
        let p = SimulatedProvider::open(Some(path.clone()), Duration::from_millis(1)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(CARD_NO_ANSWER_AUTHORIZED) && text.contains("400000******0259"), "{text}");
        assert!(matches!(p.status("h").await.unwrap(), ProviderStatus::Authorized { .. }), "the old entry still resolves");
        assert_eq!(truncate_card("123"), "***");
        let _ = std::fs::remove_dir_all(dir);
    }
}
