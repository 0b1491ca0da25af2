//! The connections the store's statements run on, kept by the store itself.
//!
//! sqlx's pool tests every connection as it is released: a `Sync` and its `ReadyForQuery` on
//! PostgreSQL, a hand-off to the connection's own thread on SQLite. Every statement thus cost
//! two round trips and two wake-ups of the server process; on PostgreSQL most of the server's
//! CPU under load is that kernel work, not executing SQL. The test is there for connections
//! left mid-protocol by a statement whose future was dropped, and those are exactly the ones
//! this keeper never takes back: a connection returns to the idle list only when its last
//! statement completed (with rows, or with the server's own error); any other connection is
//! closed, and the next checkout opens a fresh one through sqlx's pool (which still runs the
//! `after_connect` setup and bounds the connect by the acquire timeout).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Connection, Database, Pool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{connection_lost, leaves_connection_usable, StoreError};

/// A connection idle this long is closed rather than used (sqlx's own default), so a quiet
/// service does not hold server connections for good.
const MAX_IDLE: Duration = Duration::from_secs(600);

/// A connection this old is closed rather than used (sqlx's own default): a server process's
/// caches only grow, and a pooler in front of the database may rebalance on reconnects.
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

pub(crate) struct Conns<DB: Database> {
    inner: Arc<Inner<DB>>,
}

impl<DB: Database> Clone for Conns<DB> {
    fn clone(&self) -> Self {
        Conns {
            inner: self.inner.clone(),
        }
    }
}

impl<DB: Database> std::fmt::Debug for Conns<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("idle", &self.idle_count())
            .field("free_slots", &self.inner.slots.available_permits())
            .finish()
    }
}

struct Inner<DB: Database> {
    /// Opens connections; migrations run on it directly. Its limits (maximum connections,
    /// acquire timeout) are the keeper's.
    opener: Pool<DB>,
    idle: Mutex<Vec<Idle<DB>>>,
    /// One permit per connection in use, so the store never holds more than its maximum.
    slots: Arc<Semaphore>,
    acquire_timeout: Duration,
    /// How long a statement's answer may take (see [`Conns::bounded`]); `None`: as long as it
    /// takes.
    answer_within: Option<Duration>,
}

struct Idle<DB: Database> {
    conn: DB::Connection,
    opened: Instant,
    since: Instant,
}

impl<DB: Database> Conns<DB> {
    pub(crate) fn new(opener: Pool<DB>) -> Self {
        Self::answering_within(opener, None)
    }

    /// A keeper whose statements are given up when their answer has not come within
    /// `answer_within` (see [`Conns::bounded`]).
    pub(crate) fn answering_within(opener: Pool<DB>, answer_within: Option<Duration>) -> Self {
        let max = opener.options().get_max_connections().max(1) as usize;
        let acquire_timeout = opener.options().get_acquire_timeout();
        Conns {
            inner: Arc::new(Inner {
                opener,
                idle: Mutex::new(Vec::new()),
                slots: Arc::new(Semaphore::new(max)),
                acquire_timeout,
                answer_within,
            }),
        }
    }

    pub(crate) fn opener(&self) -> &Pool<DB> {
        &self.inner.opener
    }

    /// A connection for one statement: the most recently used idle one, or a new one.
    pub(crate) async fn checkout(&self) -> Result<Checkout<DB>, StoreError> {
        let inner = &self.inner;
        let slot = tokio::time::timeout(inner.acquire_timeout, inner.slots.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let reused = loop {
            let Some(idle) = self.lock_idle().pop() else {
                break None;
            };
            if idle.since.elapsed() < MAX_IDLE && idle.opened.elapsed() < MAX_LIFETIME {
                break Some((idle.conn, idle.opened));
            }
        };
        let (conn, opened) = match reused {
            Some(reused) => reused,
            None => (inner.opener.acquire().await?.detach(), Instant::now()),
        };
        Ok(Checkout {
            conn: Some(conn),
            opened,
            home: self.clone(),
            completed: false,
            _slot: slot,
        })
    }

    /// Runs a statement on a checked-out connection, given up with an I/O error if its answer
    /// has not come within the keeper's bound: a connection that went silent (its server gone
    /// without a reset) would otherwise hold the statement for the kernel's TCP timeout. The
    /// error leaves the connection unsettled, so it is closed, never reused mid-protocol.
    pub(crate) async fn bounded<T>(
        &self,
        statement: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let Some(limit) = self.inner.answer_within else {
            return statement.await;
        };
        tokio::time::timeout(limit, statement)
            .await
            .unwrap_or_else(|_| {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer from the database within {limit:?}"),
                )))
            })
    }

    /// Closes the idle connections and refuses further checkouts; a statement still running
    /// closes its connection when it ends.
    pub(crate) async fn close(&self) {
        self.inner.slots.close();
        let idle = std::mem::take(&mut *self.lock_idle());
        for idle in idle {
            let _ = idle.conn.close().await;
        }
        self.inner.opener.close().await;
    }

    /// Closes the idle connections: the next checkouts open fresh ones.
    fn retire_idle(&self) {
        let retired = std::mem::take(&mut *self.lock_idle());
        drop(retired);
    }

    pub(crate) fn idle_count(&self) -> usize {
        self.lock_idle().len()
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle<DB>>> {
        // The list stays consistent even if a holder panicked: every operation is one push/pop.
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_in(&self, conn: DB::Connection, opened: Instant) {
        if self.inner.slots.is_closed() {
            return;
        }
        let stale = {
            let mut idle = self.lock_idle();
            idle.push(Idle {
                conn,
                opened,
                since: Instant::now(),
            });
            // The least recently used connection sits first; retire it once it idled too long.
            match idle.first() {
                Some(first) if first.since.elapsed() >= MAX_IDLE => Some(idle.remove(0)),
                _ => None,
            }
        };
        drop(stale);
    }
}

/// A connection lent for one statement. Dropped before [`Checkout::settle`] saw the statement
/// complete, it is closed instead of reused.
pub(crate) struct Checkout<DB: Database> {
    conn: Option<DB::Connection>,
    opened: Instant,
    home: Conns<DB>,
    completed: bool,
    _slot: OwnedSemaphorePermit,
}

impl<DB: Database> Checkout<DB> {
    pub(crate) fn raw(&mut self) -> &mut DB::Connection {
        self.conn.as_mut().expect("present until drop")
    }

    /// Passes the statement's result through, noting whether the connection may serve the
    /// next statement: after rows or the server's rejection of the statement it may; after a
    /// transport error, or a server ending the session, it may not.
    ///
    /// A lost connection also retires the idle ones: a restart of the server, or of a pooler
    /// in front of it, cuts them all, and each would otherwise fail the next statement it
    /// served (a caller's `503` for every connection the keeper held).
    pub(crate) fn settle<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.completed = match &result {
            Ok(_) => true,
            Err(e) => {
                if connection_lost(e) {
                    self.home.retire_idle();
                }
                leaves_connection_usable(e)
            }
        };
        result
    }
}

impl<DB: Database> Drop for Checkout<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.completed {
                self.home.check_in(conn, self.opened);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::Sqlite;

    use super::*;

    async fn sqlite_conns(dir: &tempfile::TempDir, max: u32) -> Conns<Sqlite> {
        let url = format!("sqlite://{}", dir.path().join("conns.db").display());
        let opts = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await
            .unwrap();
        Conns::new(pool)
    }

    async fn answer(conns: &Conns<Sqlite>, sql: &str) -> Result<i64, StoreError> {
        let mut conn = conns.checkout().await?;
        let row = sqlx::query_as::<_, (i64,)>(sql).fetch_one(conn.raw()).await;
        Ok(conn.settle(row)?.0)
    }

    #[tokio::test]
    async fn a_completed_statement_hands_its_connection_back() {
        let dir = tempfile::tempdir().unwrap();
        let conns = sqlite_conns(&dir, 4).await;
        assert_eq!(answer(&conns, "SELECT 41 + 1").await.unwrap(), 42);
        assert_eq!(conns.idle_count(), 1);
        // The same connection serves the next statement: no second one is opened.
        assert_eq!(answer(&conns, "SELECT 7").await.unwrap(), 7);
        assert_eq!(conns.idle_count(), 1);
        // A server error leaves the connection at a clean boundary too.
        assert!(answer(&conns, "SELECT no_such_column").await.is_err());
        assert_eq!(conns.idle_count(), 1);
    }

    #[tokio::test]
    async fn an_abandoned_statement_closes_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let conns = sqlite_conns(&dir, 4).await;
        let mut setup = conns.checkout().await.unwrap();
        let created = sqlx::query("CREATE TABLE t (i INTEGER)")
            .execute(setup.raw())
            .await;
        setup.settle(created).unwrap();
        drop(setup);
        assert_eq!(conns.idle_count(), 1);
        let mut locker = conns.opener().acquire().await.unwrap().detach();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut locker)
            .await
            .unwrap();
        // The insert waits for the write lock; its caller gives up first.
        let waiting = answer(&conns, "INSERT INTO t VALUES (1) RETURNING i");
        let abandoned = tokio::time::timeout(Duration::from_millis(50), waiting).await;
        assert!(
            abandoned.is_err(),
            "the insert cannot finish while the lock is held"
        );
        assert_eq!(conns.idle_count(), 0);
        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        // Its slot came back, and the next statement gets a working connection.
        assert_eq!(answer(&conns, "SELECT 1").await.unwrap(), 1);
        assert_eq!(conns.idle_count(), 1);
    }

    #[tokio::test]
    async fn checkouts_wait_for_a_free_slot_and_stop_after_close() {
        let dir = tempfile::tempdir().unwrap();
        let conns = sqlite_conns(&dir, 1).await;
        let held = conns.checkout().await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), conns.checkout());
        assert!(waiting.await.is_err(), "one slot, already taken");
        drop(held);
        // Never settled: closed, not kept.
        assert_eq!(conns.idle_count(), 0);
        assert_eq!(answer(&conns, "SELECT 3").await.unwrap(), 3);
        conns.close().await;
        assert_eq!(conns.idle_count(), 0);
        assert!(matches!(
            conns.checkout().await,
            Err(StoreError::Unavailable(_))
        ));
    }
}
