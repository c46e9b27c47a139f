//! Which PostgreSQL failures are worth retrying.

use sluice_core::ExportError;

/// SQLSTATE of "no partition of relation … found for row": a partition is missing.
pub(crate) const NO_PARTITION: &str = "23514";

/// Whether a failure with this SQLSTATE may pass by itself: connection trouble (class 08), a
/// transaction rolled back by a deadlock or serialization failure (40), the server out of
/// resources (53), shutting down, restarting or cancelling (57), a lock not available (55P03),
/// system or I/O errors (58, XX001/XX002 are not: they mean corruption), and writes refused by a
/// standby that may be promoted (25006). Everything else — a missing table or column, a
/// permission denied, bad data — stays wrong until someone acts, so retrying would only loop.
pub(crate) fn retryable_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"))
        || matches!(code, "55P03" | "55006" | "25006")
}

/// An [`ExportError`] for a failed write, with the SQLSTATE in the message.
pub(crate) fn export_error(context: &str, error: &sqlx::Error) -> ExportError {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = format!("{context}: {} (SQLSTATE {code})", db.message());
            if retryable_sqlstate(&code) {
                ExportError::retryable(message)
            } else {
                ExportError::permanent(message)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => ExportError::retryable(format!("{context}: {error}")),
        _ => ExportError::permanent(format!("{context}: {error}")),
    }
}

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_states_retry_and_mistakes_do_not() {
        for code in [
            "08006", "08001", "40P01", "40001", "53300", "57P01", "57P03", "57014", "55P03",
            "25006", "58030",
        ] {
            assert!(retryable_sqlstate(code), "{code}");
        }
        for code in [
            "42P01", "42703", "42501", "22021", "23505", "28P01", "XX001", "3D000",
        ] {
            assert!(!retryable_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn connection_failures_are_retryable() {
        let error = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(export_error("write", &error).retryable);
        assert!(export_error("write", &sqlx::Error::PoolTimedOut).retryable);
        assert!(!export_error("write", &sqlx::Error::RowNotFound).retryable);
    }
}
