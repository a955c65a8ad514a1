//! The one place where failures become gRPC statuses (and HTTP codes, for the
//! HTTP side). Every status carries a clear message and an `usher-reason`
//! metadata entry that clients can match on.

use tonic::{Code, Status};
use usher_actors::{CommandError, SagaError, StoreError};
use usher_engine::{Denied, InvalidInput, Layout, OrderReject, Reject, SeatIdx};

/// A small, closed set of reasons, each with its gRPC code and HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    FailedPrecondition,
    ResourceExhausted,
    Aborted,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// gRPC's name of the code (`RESOURCE_EXHAUSTED`): JSON error bodies
    /// and the `code` label of `usher_refusals_total`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    pub fn grpc_code(self) -> Code {
        match self {
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Aborted => Code::Aborted,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::Internal => Code::Internal,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::FailedPrecondition => 409,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Aborted => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// An error on its way out of the gateway.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    /// A stable, machine-readable reason, e.g. `SEATS_TAKEN`.
    pub reason: &'static str,
    pub message: String,
    /// Seat ids the error is about, when there are any.
    pub seats: Vec<String>,
    /// For rate limits: seconds to wait (`retry-after` metadata, `Retry-After` header).
    pub retry_after_s: Option<u64>,
    /// `OWNED_ELSEWHERE` only: the node that holds the event's lease, where
    /// a cluster forwards the request (`crate::cluster`). Never shown.
    pub owner: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), seats: Vec::new(), retry_after_s: None, owner: None }
    }

    /// A refusal of the access rules, mapped here and nowhere else. `what`
    /// names the resource for NOT_FOUND (e.g. `event 3f…`), so another
    /// tenant's resource reads exactly like one that does not exist.
    pub fn denied(d: Denied, reason_not_found: &'static str, what: impl std::fmt::Display) -> ApiError {
        match d {
            Denied::Unauthenticated => {
                ApiError::new(ErrorCode::Unauthenticated, "UNAUTHENTICATED", "this call needs credentials: sign in, or send an API key")
            }
            Denied::NotFound => ApiError::new(ErrorCode::NotFound, reason_not_found, format!("{what} not found")),
            Denied::Forbidden(why) => ApiError::new(ErrorCode::PermissionDenied, "PERMISSION_DENIED", why),
            Denied::Invalid { field, message } => ApiError::invalid(field, message),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new(
            ErrorCode::InvalidArgument,
            "INVALID_ARGUMENT",
            if message.starts_with(field) { message } else { format!("{field}: {message}") },
        )
    }

    fn with_seats(mut self, layout: &Layout, seats: &[SeatIdx]) -> ApiError {
        self.seats = seats.iter().map(|&s| layout.label(s)).collect();
        self
    }

    /// A refusal: its status code and machine-readable reason are mapped
    /// here; its words are the engine's (`Reject::describe`).
    pub fn from_reject(r: &Reject, layout: &Layout) -> ApiError {
        use ErrorCode::*;
        let (code, reason) = match r {
            Reject::SeatListEmpty => (InvalidArgument, "SEAT_LIST_EMPTY"),
            Reject::SeatDuplicated { .. } => (InvalidArgument, "SEAT_DUPLICATED"),
            Reject::UnknownSeats { .. } => (NotFound, "UNKNOWN_SEATS"),
            Reject::QuantityInvalid { .. } => (InvalidArgument, "QUANTITY_INVALID"),
            Reject::OverHoldLimit { .. } => (ResourceExhausted, "OVER_HOLD_LIMIT"),
            Reject::IdempotencyKeyReused => (AlreadyExists, "IDEMPOTENCY_KEY_REUSED"),
            // Someone else's hold reads exactly like a missing one.
            Reject::HoldNotFound { .. } | Reject::NotHoldOwner { .. } => (NotFound, "HOLD_NOT_FOUND"),
            Reject::HoldExpired { .. } => (FailedPrecondition, "HOLD_EXPIRED"),
            Reject::HoldNotActive { .. } => (FailedPrecondition, "HOLD_NOT_ACTIVE"),
            Reject::HoldIdExists { .. } => (Aborted, "HOLD_ID_EXISTS"),
            Reject::StatusTransition { .. } => (FailedPrecondition, "STATUS_TRANSITION"),
            Reject::EventNotOnSale { .. } => (FailedPrecondition, "EVENT_NOT_ON_SALE"),
            Reject::OutsideSalesWindow { .. } => (FailedPrecondition, "OUTSIDE_SALES_WINDOW"),
            Reject::EventCancelled => (FailedPrecondition, "EVENT_CANCELLED"),
            Reject::CustomerHoldLimit { .. } => (ResourceExhausted, "CUSTOMER_HOLD_LIMIT"),
            Reject::SeatsTaken { .. } => (FailedPrecondition, "SEATS_TAKEN"),
            Reject::SeatsNotBlocked { .. } => (FailedPrecondition, "SEATS_NOT_BLOCKED"),
            Reject::NotEnoughSeats { .. } => (FailedPrecondition, "NOT_ENOUGH_SEATS"),
        };
        let e = ApiError::new(code, reason, r.describe(layout));
        match r {
            Reject::SeatDuplicated { seat } => e.with_seats(layout, &[*seat]),
            Reject::SeatsTaken { seats } | Reject::SeatsNotBlocked { seats } => e.with_seats(layout, seats),
            _ => e,
        }
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> ApiError {
        ApiError::invalid(e.field, e.message)
    }
}

impl From<usher_engine::QuotaExceeded> for ApiError {
    fn from(e: usher_engine::QuotaExceeded) -> ApiError {
        ApiError::new(ErrorCode::ResourceExhausted, "QUOTA_EXCEEDED", e.sentence())
    }
}

/// An event (or an order of it) that another node serves: a cluster
/// forwards the request to `owner` (`Ctx::routed`); a client sees this only
/// when that could not be done (one hop, or the owner did not answer), and
/// retries.
fn owned_elsewhere(event_id: usher_engine::EventId, owner: String) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::Unavailable,
        "OWNED_ELSEWHERE",
        format!("event {event_id} is moving between nodes; retry with the same idempotency key"),
    );
    e.owner = Some(owner);
    e
}

/// The reasons an error can carry, for an error that crossed from another
/// node (`crate::cluster`): its reason string becomes the same `&'static
/// str` again. A reason this build does not know (a newer node's) reads as
/// `UNAVAILABLE`; the set is closed, so nothing grows without bound.
pub fn known_reason(reason: &str) -> &'static str {
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    let mut set = known.lock().expect("reasons");
    if let Some(r) = set.get(reason) {
        return r;
    }
    // Reasons are SCREAMING_SNAKE_CASE and few (see `ErrorCode`'s users).
    let plausible = !reason.is_empty() && reason.len() <= 40 && reason.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
    if plausible && set.len() < 256 {
        let leaked: &'static str = Box::leak(reason.to_owned().into_boxed_str());
        set.insert(leaked);
        return leaked;
    }
    "UNAVAILABLE"
}

impl ErrorCode {
    /// The code whose `grpc_code()` is `code` (an error from another node).
    pub fn from_grpc(code: Code) -> ErrorCode {
        use ErrorCode::*;
        [
            Unauthenticated,
            InvalidArgument,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            FailedPrecondition,
            ResourceExhausted,
            Aborted,
            Unavailable,
        ]
        .into_iter()
        .find(|c| c.grpc_code() == code)
        .unwrap_or(Internal)
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        match e {
            CommandError::EventNotFound(id) => ApiError::new(ErrorCode::NotFound, "EVENT_NOT_FOUND", format!("event {id} not found")),
            CommandError::Overloaded(id) => ApiError::new(
                ErrorCode::ResourceExhausted,
                "OVERLOADED",
                format!("event {id} is overloaded; retry with the same idempotency key after a short wait"),
            ),
            CommandError::Unavailable(m) => ApiError::new(ErrorCode::Unavailable, "UNAVAILABLE", m),
            CommandError::ShuttingDown => ApiError::new(ErrorCode::Unavailable, "SHUTTING_DOWN", "this node is shutting down"),
            CommandError::OwnedElsewhere { event_id, owner } => owned_elsewhere(event_id, owner),
            CommandError::TooManyEvents(n) => ApiError::new(
                ErrorCode::ResourceExhausted,
                "TOO_MANY_EVENTS",
                format!("this node already serves {n} events; try another node or later"),
            ),
            // Logged at ERROR where it was found; the caller gets no internals.
            CommandError::Internal(_) => ApiError::new(ErrorCode::Internal, "INTERNAL", "internal error; it has been logged"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(m) => ApiError::new(ErrorCode::NotFound, "NOT_FOUND", m),
            StoreError::Unavailable(m) => ApiError::new(ErrorCode::Unavailable, "UNAVAILABLE", m),
            StoreError::Fenced { event_id, .. } => ApiError::new(
                ErrorCode::Unavailable,
                "FENCED",
                format!("event {event_id} changed owner while this request ran; retry with the same idempotency key"),
            ),
            StoreError::Conflict(m) => ApiError::new(ErrorCode::Aborted, "CONFLICT", format!("{m}; retry")),
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, "stored data is corrupt");
                ApiError::new(ErrorCode::Internal, "INTERNAL", "internal error; it has been logged")
            }
        }
    }
}

/// An order saga's refusals and failures. `OrderReject` is closed and
/// ordered like `Reject`; each gets its code here and nowhere else.
impl From<SagaError> for ApiError {
    fn from(e: SagaError) -> ApiError {
        use ErrorCode::*;
        match e {
            SagaError::Rejected(r) => match r {
                OrderReject::OrderClosed { status } => ApiError::new(
                    FailedPrecondition,
                    "ORDER_CLOSED",
                    format!("the order is {}; it takes no more payments", status.as_str()),
                ),
                OrderReject::PayDeadlinePassed { .. } => {
                    ApiError::new(FailedPrecondition, "ORDER_EXPIRED", "the order's holds expired before it was paid")
                }
                OrderReject::PaymentInProgress => {
                    ApiError::new(FailedPrecondition, "PAYMENT_IN_PROGRESS", "a payment for this order is already in progress or done")
                }
                OrderReject::AlreadyPaid => ApiError::new(
                    FailedPrecondition,
                    "ORDER_PAID",
                    "the order is paid; it can be refunded (cancel the event), not cancelled",
                ),
            },
            SagaError::NotFound(id) => ApiError::new(NotFound, "ORDER_NOT_FOUND", format!("order {id} not found")),
            SagaError::Unavailable(m) => ApiError::new(Unavailable, "UNAVAILABLE", m),
            SagaError::OwnedElsewhere { event_id, owner } => owned_elsewhere(event_id, owner),
            SagaError::Internal(m) => {
                tracing::error!(error = %m, "order failed");
                ApiError::new(Internal, "INTERNAL", "internal error; it has been logged")
            }
        }
    }
}

impl ApiError {
    /// Counts the refusal (`usher_refusals_total`): called where it becomes
    /// an answer on either door. Both labels come from closed sets.
    pub(crate) fn count(&self) {
        metrics::counter!(usher_actors::metrics::names::REFUSALS, "code" => self.code.name(), "reason" => self.reason).increment(1);
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.count();
        let mut s = Status::new(e.code.grpc_code(), e.message);
        if let Ok(v) = e.reason.parse() {
            s.metadata_mut().insert("usher-reason", v);
        }
        if !e.seats.is_empty()
            && let Ok(v) = e.seats.join(",").parse()
        {
            s.metadata_mut().insert("usher-seats", v);
        }
        if let Some(secs) = e.retry_after_s
            && let Ok(v) = secs.to_string().parse()
        {
            s.metadata_mut().insert("retry-after", v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use usher_engine::{Layout, grid_venue};

    #[test]
    fn infrastructure_failures_map_to_retryable_codes() {
        let id = usher_engine::EventId(uuid::Uuid::nil());
        let cases = [
            (CommandError::Overloaded(id), Code::ResourceExhausted, 429),
            (CommandError::EventNotFound(id), Code::NotFound, 404),
            (CommandError::Unavailable("db down".into()), Code::Unavailable, 503),
            (CommandError::ShuttingDown, Code::Unavailable, 503),
            (CommandError::Internal("claims disagree".into()), Code::Internal, 500),
            (CommandError::TooManyEvents(10), Code::ResourceExhausted, 429),
            (CommandError::OwnedElsewhere { event_id: id, owner: "node-2".into() }, Code::Unavailable, 503),
        ];
        for (err, grpc, http) in cases {
            let e = ApiError::from(err);
            assert_eq!((e.code.grpc_code(), e.code.http_status()), (grpc, http), "{e:?}");
        }
        let e = ApiError::from_reject(&Reject::IdempotencyKeyReused, &Layout::build(&grid_venue("v", 1, 1, 1)).unwrap());
        assert_eq!((e.code.grpc_code(), e.code.http_status()), (Code::AlreadyExists, 409));
    }

    #[test]
    fn seats_taken_is_failed_precondition_naming_seats() {
        let l = Layout::build(&grid_venue("v", 1, 1, 3)).unwrap();
        let e = ApiError::from_reject(&Reject::SeatsTaken { seats: vec![SeatIdx(0), SeatIdx(2)] }, &l);
        assert_eq!(e.code.grpc_code(), Code::FailedPrecondition);
        assert_eq!(e.code.http_status(), 409);
        let s: Status = e.into();
        assert!(s.message().contains("A-1-1, A-1-3"), "{}", s.message());
        assert_eq!(s.metadata().get("usher-seats").unwrap(), "A-1-1,A-1-3");
        assert_eq!(s.metadata().get("usher-reason").unwrap(), "SEATS_TAKEN");
    }
}
