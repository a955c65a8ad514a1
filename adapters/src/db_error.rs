//! Driver errors told apart where they happen, so none crosses the port as
//! it is. What a retry can fix (the database unreachable, busy, too slow, a
//! serialization failure) is `StoreError::Unavailable` with a plain sentence;
//! what a retry cannot fix (a constraint the write breaks, such as the
//! `seat_claims` key refusing a seat sold twice, or a value that does not
//! decode) is `StoreError::Corrupt`, which the gateway logs at ERROR and
//! answers as INTERNAL. The driver's own text goes to the log, never to a
//! caller.
//!
//! SQLSTATE classes are PostgreSQL's (Appendix A, "PostgreSQL Error Codes");
//! SQLite's are its result codes (`SQLITE_BUSY` 5, `SQLITE_LOCKED` 6 and
//! their extended codes).

use sqlx::error::ErrorKind;
use usher_actors::StoreError;

/// The sentence a caller reads when a retry may work.
const UNREACHABLE: &str = "the database is unreachable right now; retry with the same idempotency key";
const BUSY: &str = "the database is busy right now; retry with the same idempotency key";

pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    let retry = |sentence: &str, e: &sqlx::Error| {
        tracing::warn!(error = %e, "database error a retry may fix");
        StoreError::Unavailable(sentence.to_owned())
    };
    match &e {
        sqlx::Error::Database(d) => {
            if matches!(
                d.kind(),
                ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation | ErrorKind::NotNullViolation | ErrorKind::CheckViolation
            ) {
                return StoreError::Corrupt(format!("the database refused a write that breaks a constraint: {d}"));
            }
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // serialization_failure, deadlock_detected: the transaction lost a race.
                "40001" | "40P01" => retry(BUSY, &e),
                // query_canceled (our statement timeout), lock_not_available.
                "57014" | "55P03" => retry(BUSY, &e),
                // SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
                "5" | "6" | "261" | "262" | "517" | "773" => retry(BUSY, &e),
                // connection exceptions, insufficient resources, operator intervention (shutdown).
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => retry(UNREACHABLE, &e),
                // data exceptions (a value the database cannot store, e.g. a NUL in text):
                // the same request fails the same way every time.
                c if c.starts_with("22") => StoreError::Corrupt(format!("the database refused a value: {d}")),
                _ => StoreError::Corrupt(format!("the database failed: {d}")),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => retry(UNREACHABLE, &e),
        sqlx::Error::RowNotFound
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(format!("stored data does not read back: {e}")),
        _ => StoreError::Corrupt(format!("the database failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// A database error as a driver would report it.
    #[derive(Debug)]
    struct Fake {
        code: &'static str,
        kind: ErrorKind,
    }
    impl std::fmt::Display for Fake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "fake error {} with SQL text SELECT secret", self.code)
        }
    }
    impl std::error::Error for Fake {}
    impl sqlx::error::DatabaseError for Fake {
        fn message(&self) -> &str {
            "fake"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.code))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            match self.kind {
                ErrorKind::UniqueViolation => ErrorKind::UniqueViolation,
                ErrorKind::ForeignKeyViolation => ErrorKind::ForeignKeyViolation,
                ErrorKind::NotNullViolation => ErrorKind::NotNullViolation,
                ErrorKind::CheckViolation => ErrorKind::CheckViolation,
                _ => ErrorKind::Other,
            }
        }
    }

    fn db(code: &'static str, kind: ErrorKind) -> sqlx::Error {
        sqlx::Error::Database(Box::new(Fake { code, kind }))
    }

    #[test]
    fn a_seat_claimed_twice_is_corrupt_not_retryable() {
        assert!(matches!(db_error(db("23505", ErrorKind::UniqueViolation)), StoreError::Corrupt(_)));
        assert!(matches!(db_error(db("2067", ErrorKind::UniqueViolation)), StoreError::Corrupt(_)), "SQLite's constraint code");
        assert!(matches!(db_error(db("22021", ErrorKind::Other)), StoreError::Corrupt(_)), "a NUL in text");
    }

    #[test]
    fn what_a_retry_fixes_is_unavailable_in_plain_words() {
        let io = sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer"));
        for e in [io, sqlx::Error::PoolTimedOut, db("40001", ErrorKind::Other), db("57P01", ErrorKind::Other), db("5", ErrorKind::Other)] {
            match db_error(e) {
                StoreError::Unavailable(m) => {
                    assert!(!m.contains("SELECT") && !m.contains("reset") && !m.contains("fake"), "driver text leaked: {m}");
                    assert!(m.contains("retry"), "{m}");
                }
                other => panic!("not retryable: {other:?}"),
            }
        }
    }
}
