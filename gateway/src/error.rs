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
        grpc_code_name(self.grpc_code())
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

/// Declares `Reason`: each variant with its wire name and what it means.
macro_rules! reasons {
    ($($variant:ident = $name:literal, $meaning:literal;)*) => {
        /// Every machine-readable reason an error carries (the `usher-reason`
        /// metadata, the JSON body's `reason`, the label of
        /// `usher_refusals_total`): a closed set, so an error from another
        /// node maps back onto it (`Reason::from_name`) and nothing grows
        /// without bound.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($variant),*
        }

        impl Reason {
            /// Every reason, in the table's order.
            pub const ALL: &[Reason] = &[$(Reason::$variant),*];

            /// The wire name (`SEATS_TAKEN`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$variant => $name),*
                }
            }

            /// What it means, in one sentence (docs and tooling; the error's
            /// own message says what happened to this call).
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Reason::$variant => $meaning),*
                }
            }
        }
    };
}

reasons! {
    ApiKeyNotFound = "API_KEY_NOT_FOUND", "No API key with this id in the organization.";
    BadCredentials = "BAD_CREDENTIALS", "The email address or password is wrong.";
    BadRefreshToken = "BAD_REFRESH_TOKEN", "The refresh token is unknown, expired or revoked.";
    Busy = "BUSY", "Too many sign-ins are being checked at once; retry in a second.";
    Conflict = "CONFLICT", "Another write changed the same record first; retry.";
    CrossOrigin = "CROSS_ORIGIN", "A state-changing request signed in by cookie came from another site.";
    CustomerHoldLimit = "CUSTOMER_HOLD_LIMIT", "The customer already holds as many seats of the event as one customer may.";
    DeviceNotFound = "DEVICE_NOT_FOUND", "No gate device with this id in the organization.";
    EmailTaken = "EMAIL_TAKEN", "An account with this email address exists already.";
    EventCancelled = "EVENT_CANCELLED", "The event was cancelled.";
    EventNotFound = "EVENT_NOT_FOUND", "No event with this id that the caller may see.";
    EventNotOnSale = "EVENT_NOT_ON_SALE", "The event's sales are not open.";
    FeedEnded = "FEED_ENDED", "The event's live feed ended on this node (the event moved); watch again.";
    Fenced = "FENCED", "Another node took the event over while this one wrote; retry.";
    HoldExpired = "HOLD_EXPIRED", "The hold ran out before the call.";
    HoldIdExists = "HOLD_ID_EXISTS", "A hold with this id exists already (a retry with another request).";
    HoldInOrder = "HOLD_IN_ORDER", "The hold belongs to an order already.";
    HoldNotActive = "HOLD_NOT_ACTIVE", "The hold was released, confirmed or expired.";
    HoldNotFound = "HOLD_NOT_FOUND", "No hold with this id that the caller may see.";
    HoldsOfSeveralEvents = "HOLDS_OF_SEVERAL_EVENTS", "An order's holds must all be of one event.";
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED", "The idempotency key was used before for a different request.";
    Internal = "INTERNAL", "Something failed inside the node; its log says what.";
    InvalidArgument = "INVALID_ARGUMENT", "A field of the request is malformed; the message names it.";
    MemberNotFound = "MEMBER_NOT_FOUND", "The user is not a member of the organization.";
    NoPermissionEntry = "NO_PERMISSION_ENTRY", "The call has no entry in the permission table, so nobody may make it.";
    NotEnoughSeats = "NOT_ENOUGH_SEATS", "Best available found fewer seats side by side than asked for.";
    NotForwardable = "NOT_FORWARDABLE", "Another node asked this one to run a method that is not forwarded.";
    NotFound = "NOT_FOUND", "No such resource, route or record that the caller may see.";
    OrderClosed = "ORDER_CLOSED", "The order is cancelled, expired or failed: it takes no more payments.";
    OrderExpired = "ORDER_EXPIRED", "The order's time to pay ran out.";
    OrderNotFound = "ORDER_NOT_FOUND", "No order with this id that the caller may see.";
    OrderPaid = "ORDER_PAID", "The order is paid: it can no longer be cancelled.";
    OrgNotFound = "ORG_NOT_FOUND", "No organization with this id that the caller may see.";
    OutsideSalesWindow = "OUTSIDE_SALES_WINDOW", "The event's sales have not started or have ended.";
    OverHoldLimit = "OVER_HOLD_LIMIT", "More seats than one hold may take.";
    Overloaded = "OVERLOADED", "The event's queue is full; retry with the same key.";
    OwnedElsewhere = "OWNED_ELSEWHERE", "The event is moving between nodes; retry with the same key.";
    OwnerUnreachable = "OWNER_UNREACHABLE", "The node that owns the event did not answer; retry with the same key.";
    PartnerNotFound = "PARTNER_NOT_FOUND", "No partner with this id.";
    PaymentInProgress = "PAYMENT_IN_PROGRESS", "A payment for the order is already going through or done.";
    PaymentNotFound = "PAYMENT_NOT_FOUND", "No payment with this id that the caller may see.";
    PermissionDenied = "PERMISSION_DENIED", "The caller's role does not allow the call here.";
    QuantityInvalid = "QUANTITY_INVALID", "Best available was asked for no seats, or too many.";
    QuotaExceeded = "QUOTA_EXCEEDED", "The organization holds as much of this as its quota allows.";
    RateLimited = "RATE_LIMITED", "Too many calls from this caller; the answer says when to retry.";
    RefreshTokenReused = "REFRESH_TOKEN_REUSED", "A refresh token was used twice: its whole session is revoked.";
    SeatDuplicated = "SEAT_DUPLICATED", "A seat is listed twice.";
    SeatListEmpty = "SEAT_LIST_EMPTY", "No seats were listed.";
    SeatsNotBlocked = "SEATS_NOT_BLOCKED", "Seats to unblock are not blocked.";
    SeatsTaken = "SEATS_TAKEN", "Some of the seats are held, sold or blocked; the error lists them.";
    ShuttingDown = "SHUTTING_DOWN", "The node is shutting down; retry on another.";
    StatusTransition = "STATUS_TRANSITION", "The event cannot move from its status to the one asked for.";
    TicketsNotReady = "TICKETS_NOT_READY", "The order's tickets are not issued yet.";
    TooManyEvents = "TOO_MANY_EVENTS", "The node serves as many events as it may at once.";
    TooManyStreams = "TOO_MANY_STREAMS", "The caller or the node has as many live feeds open as it may.";
    Unauthenticated = "UNAUTHENTICATED", "The call needs credentials, or the ones sent are not valid.";
    Unavailable = "UNAVAILABLE", "A store or service the call needs is not answering; retry with the same key.";
    Unknown = "UNKNOWN", "Another node gave a reason this node does not know (a newer version's).";
    UnknownSeats = "UNKNOWN_SEATS", "Some seat ids are not in the venue; the error lists them.";
    UserNotFound = "USER_NOT_FOUND", "No user with this id or email address.";
    VenueNotFound = "VENUE_NOT_FOUND", "No venue with this id that the caller may see.";
    WebhookDeleted = "WEBHOOK_DELETED", "The webhook endpoint was deleted.";
    WebhookDeliveryNotFound = "WEBHOOK_DELIVERY_NOT_FOUND", "No webhook delivery with this id that the caller may see.";
    WebhookNotFound = "WEBHOOK_NOT_FOUND", "No webhook endpoint with this id that the caller may see.";
}

impl Reason {
    /// The reason called `name` on the wire; `Unknown` for one this build
    /// does not know (a newer node's).
    pub fn from_name(name: &str) -> Reason {
        Reason::ALL.iter().copied().find(|r| r.as_str() == name).unwrap_or(Reason::Unknown)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// gRPC's name of every status code (`grpc/doc/statuscodes.md`): the one
/// table, read by JSON error bodies and every metric's `code` label.
pub fn grpc_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An error on its way out of the gateway.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    /// A stable, machine-readable reason, e.g. `SEATS_TAKEN`.
    pub reason: Reason,
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
    pub fn new(code: ErrorCode, reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), seats: Vec::new(), retry_after_s: None, owner: None }
    }

    /// A refusal of the access rules, mapped here and nowhere else. `what`
    /// names the resource for NOT_FOUND (e.g. `event 3f…`), so another
    /// tenant's resource reads exactly like one that does not exist.
    pub fn denied(d: Denied, reason_not_found: Reason, what: impl std::fmt::Display) -> ApiError {
        match d {
            Denied::Unauthenticated => ApiError::new(
                ErrorCode::Unauthenticated,
                Reason::Unauthenticated,
                "this call needs credentials: sign in, or send an API key",
            ),
            Denied::NotFound => ApiError::new(ErrorCode::NotFound, reason_not_found, format!("{what} not found")),
            Denied::Forbidden(why) => ApiError::new(ErrorCode::PermissionDenied, Reason::PermissionDenied, why),
            Denied::Invalid { field, message } => ApiError::invalid(field, message),
        }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new(
            ErrorCode::InvalidArgument,
            Reason::InvalidArgument,
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
            Reject::SeatListEmpty => (InvalidArgument, Reason::SeatListEmpty),
            Reject::SeatDuplicated { .. } => (InvalidArgument, Reason::SeatDuplicated),
            Reject::UnknownSeats { .. } => (NotFound, Reason::UnknownSeats),
            Reject::QuantityInvalid { .. } => (InvalidArgument, Reason::QuantityInvalid),
            Reject::OverHoldLimit { .. } => (ResourceExhausted, Reason::OverHoldLimit),
            Reject::IdempotencyKeyReused => (AlreadyExists, Reason::IdempotencyKeyReused),
            // Someone else's hold reads exactly like a missing one.
            Reject::HoldNotFound { .. } | Reject::NotHoldOwner { .. } => (NotFound, Reason::HoldNotFound),
            Reject::HoldExpired { .. } => (FailedPrecondition, Reason::HoldExpired),
            Reject::HoldNotActive { .. } => (FailedPrecondition, Reason::HoldNotActive),
            Reject::HoldIdExists { .. } => (Aborted, Reason::HoldIdExists),
            Reject::StatusTransition { .. } => (FailedPrecondition, Reason::StatusTransition),
            Reject::EventNotOnSale { .. } => (FailedPrecondition, Reason::EventNotOnSale),
            Reject::OutsideSalesWindow { .. } => (FailedPrecondition, Reason::OutsideSalesWindow),
            Reject::EventCancelled => (FailedPrecondition, Reason::EventCancelled),
            Reject::CustomerHoldLimit { .. } => (ResourceExhausted, Reason::CustomerHoldLimit),
            Reject::SeatsTaken { .. } => (FailedPrecondition, Reason::SeatsTaken),
            Reject::SeatsNotBlocked { .. } => (FailedPrecondition, Reason::SeatsNotBlocked),
            Reject::NotEnoughSeats { .. } => (FailedPrecondition, Reason::NotEnoughSeats),
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
        ApiError::new(ErrorCode::ResourceExhausted, Reason::QuotaExceeded, e.sentence())
    }
}

/// An event (or an order of it) that another node serves: a cluster
/// forwards the request to `owner` (`Ctx::routed`); a client sees this only
/// when that could not be done (one hop, or the owner did not answer), and
/// retries.
fn owned_elsewhere(event_id: usher_engine::EventId, owner: String) -> ApiError {
    let mut e = ApiError::new(
        ErrorCode::Unavailable,
        Reason::OwnedElsewhere,
        format!("event {event_id} is moving between nodes; retry with the same idempotency key"),
    );
    e.owner = Some(owner);
    e
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
            CommandError::EventNotFound(id) => ApiError::new(ErrorCode::NotFound, Reason::EventNotFound, format!("event {id} not found")),
            CommandError::Overloaded(id) => ApiError::new(
                ErrorCode::ResourceExhausted,
                Reason::Overloaded,
                format!("event {id} is overloaded; retry with the same idempotency key after a short wait"),
            ),
            CommandError::Unavailable(m) => ApiError::new(ErrorCode::Unavailable, Reason::Unavailable, m),
            CommandError::ShuttingDown => ApiError::new(ErrorCode::Unavailable, Reason::ShuttingDown, "this node is shutting down"),
            CommandError::OwnedElsewhere { event_id, owner } => owned_elsewhere(event_id, owner),
            CommandError::TooManyEvents(n) => ApiError::new(
                ErrorCode::ResourceExhausted,
                Reason::TooManyEvents,
                format!("this node already serves {n} events; try another node or later"),
            ),
            // Logged at ERROR where it was found; the caller gets no internals.
            CommandError::Internal(_) => ApiError::new(ErrorCode::Internal, Reason::Internal, "internal error; it has been logged"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(m) => ApiError::new(ErrorCode::NotFound, Reason::NotFound, m),
            StoreError::Unavailable(m) => ApiError::new(ErrorCode::Unavailable, Reason::Unavailable, m),
            StoreError::Fenced { event_id, .. } => ApiError::new(
                ErrorCode::Unavailable,
                Reason::Fenced,
                format!("event {event_id} changed owner while this request ran; retry with the same idempotency key"),
            ),
            StoreError::Conflict(m) => ApiError::new(ErrorCode::Aborted, Reason::Conflict, format!("{m}; retry")),
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, "stored data is corrupt");
                ApiError::new(ErrorCode::Internal, Reason::Internal, "internal error; it has been logged")
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
                    Reason::OrderClosed,
                    format!("the order is {}; it takes no more payments", status.as_str()),
                ),
                OrderReject::PayDeadlinePassed { .. } => {
                    ApiError::new(FailedPrecondition, Reason::OrderExpired, "the order's holds expired before it was paid")
                }
                OrderReject::PaymentInProgress => {
                    ApiError::new(FailedPrecondition, Reason::PaymentInProgress, "a payment for this order is already in progress or done")
                }
                OrderReject::AlreadyPaid => ApiError::new(
                    FailedPrecondition,
                    Reason::OrderPaid,
                    "the order is paid; it can be refunded (cancel the event), not cancelled",
                ),
            },
            SagaError::NotFound(id) => ApiError::new(NotFound, Reason::OrderNotFound, format!("order {id} not found")),
            SagaError::Unavailable(m) => ApiError::new(Unavailable, Reason::Unavailable, m),
            SagaError::OwnedElsewhere { event_id, owner } => owned_elsewhere(event_id, owner),
            SagaError::Internal(m) => {
                tracing::error!(error = %m, "order failed");
                ApiError::new(Internal, Reason::Internal, "internal error; it has been logged")
            }
        }
    }
}

impl ApiError {
    /// Counts the refusal (`usher_refusals_total`): called where it becomes
    /// an answer on either door. Both labels come from closed sets.
    pub(crate) fn count(&self) {
        metrics::counter!(usher_actors::metrics::names::REFUSALS, "code" => self.code.name(), "reason" => self.reason.as_str())
            .increment(1);
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.count();
        let mut s = Status::new(e.code.grpc_code(), e.message);
        if let Ok(v) = e.reason.as_str().parse() {
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

// ---------------------------------------------------------------------------
// The HTTP side: a 4xx/5xx with a JSON body.

#[derive(serde::Serialize)]
struct ErrorBody {
    error: ErrorJson,
}

#[derive(serde::Serialize)]
/// The JSON form of an error: `{"code", "reason", "message", "seats"}`
/// (the HTTP side's body, and a live feed's `error` event).
pub(crate) struct ErrorJson {
    code: &'static str,
    reason: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    seats: Vec<String>,
}

impl From<ApiError> for ErrorJson {
    fn from(e: ApiError) -> ErrorJson {
        ErrorJson { code: e.code.name(), reason: e.reason.as_str(), message: e.message, seats: e.seats }
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{StatusCode, header};
        self.count();
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after_s;
        let mut r = (status, axum::Json(ErrorBody { error: self.into() })).into_response();
        if let Some(secs) = retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer realm=\"usher\""));
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reasons are unique, spelled as the wire spells them, each with a
    /// sentence; a name read back from another node is the same reason, and
    /// one this build does not know is `UNKNOWN` (the set stays closed).
    #[test]
    fn reasons_are_a_closed_set_that_round_trips() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            let name = r.as_str();
            assert!(seen.insert(name), "{name} is listed twice");
            assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{name}");
            assert!(r.meaning().ends_with('.'), "{name}: a sentence");
            assert_eq!(Reason::from_name(name), *r);
        }
        assert_eq!(Reason::from_name("SOMETHING_NEW"), Reason::Unknown);
    }
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
