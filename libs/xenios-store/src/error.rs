use xenios_contract::JobId;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded (connection refused, pool timeout,
    /// shutdown in progress, lock wait exhausted). Transient: callers answer 503 or retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The request contradicts stored state: a duplicate key, or a status change the job's
    /// current status does not allow.
    #[error("{0}")]
    Conflict(String),
    /// The caller's input cannot be used (e.g. an unsupported database URL).
    #[error("{0}")]
    Invalid(String),
    #[error("job {0} not found")]
    NotFound(JobId),
    /// Anything else: a failed migration, a row that does not decode, an unexpected SQL error.
    #[error("store error: {0}")]
    Other(#[source] BoxError),
}

impl StoreError {
    pub(crate) fn other(msg: impl Into<String>) -> StoreError {
        StoreError::Other(msg.into().into())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                StoreError::Unavailable(e.into())
            }
            E::Database(ref db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            E::Database(ref db) if is_transient(db.as_ref()) => StoreError::Unavailable(e.into()),
            other => StoreError::Other(other.into()),
        }
    }
}

/// The SQLite writer's errors, classified as sqlx classifies the same codes.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi;
        match e {
            rusqlite::Error::SqliteFailure(ref f, ref message)
                if matches!(
                    f.extended_code,
                    ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                StoreError::Conflict(message.clone().unwrap_or_else(|| f.to_string()))
            }
            rusqlite::Error::SqliteFailure(ref f, _) if is_transient_sqlite(f.extended_code) => {
                StoreError::Unavailable(e.into())
            }
            other => StoreError::Other(other.into()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            other => StoreError::Other(other.into()),
        }
    }
}

/// Whether a connection whose statement ended with `e` can serve the next one: yes after the
/// server rejected the statement itself; no after a transport failure, a FATAL (a shutdown's
/// `57P01` arrives as a database error), or a transient error (connection trouble, a lock
/// wait that ran out), where a fresh connection costs little and rules out a bad one.
pub(crate) fn leaves_connection_usable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => !is_transient(db.as_ref()) && !is_fatal(db.as_ref()),
        _ => false,
    }
}

/// Whether `e` says the connection itself is gone (its socket failed, or the server or a
/// pooler in front ended the session), rather than that a statement failed on it. The other
/// connections opened to the same place then likely went with it: a restart cuts them all.
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            is_fatal(db.as_ref())
                || db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some_and(|pg| {
                        pg.code().starts_with("08") || matches!(pg.code(), "57P01" | "57P02")
                    })
        }
        _ => false,
    }
}

fn is_fatal(db: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::postgres::PgSeverity;
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some_and(|pg| matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic))
}

fn is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return is_transient_sqlstate(pg.code());
    }
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(is_transient_sqlite)
}

/// Connection exceptions, a statement cancelled (at its `statement_timeout`: a batch held up so
/// long is failed for all its callers, not run again row by row), shutdown in progress, too
/// many connections.
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57014" | "57P01" | "57P02" | "57P03" | "53300")
}

/// SQLITE_BUSY and SQLITE_LOCKED after busy_timeout ran out; extended result codes keep the
/// primary code in their low byte.
fn is_transient_sqlite(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_transient_codes() {
        assert!(is_transient_sqlstate("08006"));
        assert!(is_transient_sqlstate("57P01"));
        assert!(is_transient_sqlstate("57014"));
        assert!(!is_transient_sqlstate("23505"));
        assert!(is_transient_sqlite(5));
        assert!(is_transient_sqlite(517));
        assert!(!is_transient_sqlite(19));
    }
}
