//! Every metric a node exports, in one table: name, kind, labels and
//! meaning (repeated in docs/metrics.md, checked by a test).
//!
//! Recorded through the `metrics` facade (`metrics::counter!(names::X)`),
//! so code that records needs no handle passed in, and a process with no
//! recorder installed (unit tests, the bench's in-process stores) pays one
//! relaxed atomic load per call. The gateway installs the Prometheus
//! recorder and serves the page on its admin listener.
//!
//! Names follow Prometheus' conventions (prometheus.io, "Metric and label
//! naming"): the `usher_` prefix, base units last (`_seconds`, `_bytes`),
//! `_total` on counters. Labels take values from closed sets only (a
//! command's kind, a refusal's reason, a saga step): never an event, order
//! or customer id. Per-event figures go through a bounded top-N by rank.

/// What kind of series a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, kind, labels (each a closed set) and meaning.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

macro_rules! metrics_table {
    ($($const:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        /// Metric names, for `metrics::counter!(names::X)` and friends.
        pub mod names {
            $(#[doc = $help] pub const $const: &str = $name;)*
        }
        /// Every metric, in the order docs/metrics.md lists them.
        pub const ALL: &[Metric] = &[$(Metric { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help }),*];
    };
}

metrics_table! {
    BUILD_INFO = "usher_build_info", Gauge, ["version"], "Always 1; the label carries the binary's version.";
    // -- requests at the doors
    GRPC_REQUESTS = "usher_grpc_requests_total", Counter, ["method", "code"],
        "gRPC calls answered, by full method name and gRPC status code name (unknown methods count as method=\"other\").";
    GRPC_REQUEST_DURATION = "usher_grpc_request_duration_seconds", Histogram, ["method"],
        "Time from a gRPC call's arrival to the end of its answer (for a stream, its whole life), in seconds.";
    HTTP_REQUESTS = "usher_http_requests_total", Counter, ["route", "method", "status"],
        "HTTP requests answered, by route template (\"unmatched\" for none), method and status code.";
    HTTP_REQUEST_DURATION = "usher_http_request_duration_seconds", Histogram, ["route", "method"],
        "Time from an HTTP request's arrival to its response head, in seconds.";
    REFUSALS = "usher_refusals_total", Counter, ["code", "reason"],
        "Requests refused with an error, by error code and machine-readable reason (OVERLOADED, RATE_LIMITED, SEATS_TAKEN, ...), on both doors.";
    CONNECTIONS_REFUSED = "usher_connections_refused_total", Counter, ["door"],
        "Connections closed at once because the node or the client's address was at its connection cap.";
    // -- event actors and group commit
    COMMANDS = "usher_commands_total", Counter, ["command", "outcome"],
        "Seat-map commands decided by event actors, by command kind and outcome (accepted, replayed, rejected, unavailable).";
    COMMANDS_REJECTED = "usher_commands_rejected_total", Counter, ["command", "reason"],
        "Seat-map commands rejected by the engine, by command kind and rejection (seats_taken, hold_expired, ...).";
    GROUP_COMMIT_BATCH_SIZE = "usher_group_commit_batch_size_commands", Histogram, [],
        "Commands per group commit that wrote to storage.";
    GROUP_COMMIT_DURATION = "usher_group_commit_duration_seconds", Histogram, [],
        "Time one group commit spent in the store's write transaction, in seconds.";
    GROUP_COMMIT_FAILURES = "usher_group_commit_failures_total", Counter, ["reason"],
        "Group commits that wrote nothing: reason=fenced (another node owns the event) or error (storage failed).";
    FENCED_WRITES = "usher_fenced_writes_total", Counter, ["writer"],
        "Writes the store refused for a stale epoch, by writer (event, saga): a node acting on an ownership it had lost.";
    HOLDS_EXPIRED = "usher_holds_expired_total", Counter, [],
        "Holds ended by their expiry.";
    EVENT_LOADS = "usher_event_loads_total", Counter, [],
        "Event actors started (an event loaded from storage after this node took it).";
    EVENT_UNLOADS = "usher_event_unloads_total", Counter, ["reason"],
        "Event actors stopped, by reason (idle; fenced: a write was refused or the lease was lost; failed: a panic, restarted; shutdown).";
    EVENTS_LOADED = "usher_events_loaded", Gauge, [],
        "Event actors alive on this node now.";
    EVENT_QUEUE_DEPTH = "usher_event_queue_depth_requests", Gauge, [],
        "Requests waiting in all event actors' queues now.";
    HOT_EVENT_QUEUE_DEPTH = "usher_hot_event_queue_depth_requests", Gauge, ["rank"],
        "Queue depth of the deepest events now, rank 1 the deepest, at most 10 ranks (`usher status` names the events).";
    EVENT_QUEUE_CAPACITY = "usher_event_queue_capacity_requests", Gauge, [],
        "Requests one event's queue holds before new ones are refused as OVERLOADED.";
    // -- sagas
    SAGAS_ACTIVE = "usher_sagas_active", Gauge, [],
        "Order sagas alive on this node now.";
    SAGA_STEPS = "usher_saga_steps_total", Counter, ["step", "outcome"],
        "Saga steps ended, by step and outcome (done: the order moved on; retried: the step's IO failed and is redone).";
    SAGA_STEP_DURATION = "usher_saga_step_duration_seconds", Histogram, ["step"],
        "Time an order spent in a step, from entering it to leaving it, in seconds (await_payment waits for the buyer).";
    PAYMENTS = "usher_payments_total", Counter, ["outcome"],
        "Payment provider answers recorded by sagas: authorized, declined, timed_out, captured, refunded.";
    PDF_RENDER_DURATION = "usher_pdf_render_duration_seconds", Histogram, [],
        "Time to render one order's ticket PDF, in seconds.";
    PDF_QUEUE_WAIT = "usher_pdf_queue_wait_seconds", Histogram, [],
        "Time a render waited for a free render slot, in seconds.";
    PDF_QUEUE_DEPTH = "usher_pdf_queue_depth_orders", Gauge, [],
        "Renders waiting for a slot now.";
    // -- email
    EMAILS_QUEUED = "usher_emails_queued_total", Counter, [],
        "Emails queued by order transitions on this node.";
    EMAILS_SENT = "usher_emails_sent_total", Counter, [],
        "Emails handed to the mail server (or written to the mail directory).";
    EMAIL_RETRIES = "usher_email_retries_total", Counter, [],
        "Email deliveries that failed and were scheduled again.";
    EMAILS_FAILED = "usher_emails_failed_total", Counter, [],
        "Emails the mail server refused for good (not retried).";
    EMAIL_BACKLOG = "usher_email_backlog_messages", Gauge, [],
        "Emails queued and not yet sent or given up on, deployment-wide.";
    // -- outbox and stream
    OUTBOX_BACKLOG = "usher_outbox_backlog_rows", Gauge, [],
        "Outbox rows not yet published, deployment-wide, as last counted by this node.";
    OUTBOX_LAG = "usher_outbox_lag_seconds", Gauge, [],
        "Age of the oldest unpublished outbox row, in seconds (0 when none).";
    OUTBOX_PUBLISHED = "usher_outbox_published_total", Counter, [],
        "Outbox rows this node published to the stream.";
    OUTBOX_PUBLISH_FAILURES = "usher_outbox_publish_failures_total", Counter, [],
        "Publish attempts of this node's relay that failed (retried).";
    OUTBOX_RELAYING = "usher_outbox_relaying", Gauge, [],
        "1 while this node is the outbox relay's leader, else 0.";
    // -- webhooks
    WEBHOOK_DELIVERIES = "usher_webhook_deliveries_total", Counter, ["outcome"],
        "Webhook delivery attempts, by outcome (delivered, failed: retried later, gave_up).";
    WEBHOOK_DELIVERY_DURATION = "usher_webhook_delivery_duration_seconds", Histogram, [],
        "Time of one webhook POST, from connecting to the receiver's answer, in seconds.";
    // -- cluster
    LEASES_HELD = "usher_leases_held", Gauge, [],
        "Event leases this node holds now (1 per loaded event in a cluster).";
    LEASES_TAKEN = "usher_leases_taken_total", Counter, [],
        "Event leases this node took (each with a new fencing token): on first use, after an idle unload elsewhere, or from a node that died.";
    LEASES_LOST = "usher_leases_lost_total", Counter, [],
        "Leases this node lost (not renewed in time, or taken by another node).";
    FORWARDED = "usher_forwarded_requests_total", Counter, ["direction"],
        "Requests this node forwarded to an event's owner (direction=out) and forwarded requests it served (in).";
    NODES = "usher_cluster_nodes", Gauge, [],
        "Nodes this node sees alive in the cluster (1 for a single node).";
}

/// The metric named `name`, if it is in the table.
pub fn find(name: &str) -> Option<&'static Metric> {
    ALL.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("usher_"), "{}", m.name);
            assert_eq!(m.kind == Kind::Counter, m.name.ends_with("_total"), "{}: counters and only counters end in _total", m.name);
            if m.kind == Kind::Histogram {
                assert!(m.name.ends_with("_seconds") || m.name.ends_with("_commands"), "{}: a histogram names its unit", m.name);
            }
            assert!(!m.labels.iter().any(|l| l.contains("id")), "{}: no label per id", m.name);
        }
    }
}
