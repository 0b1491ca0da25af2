//! The only place that knows how values differ between the two databases. Store methods write
//! one SQL text (`$n` placeholders work in both) with backend-neutral `Arg`s and read rows
//! through `Row`; here they become uuid/jsonb/timestamptz for PostgreSQL and TEXT for SQLite.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Postgres, Row as _, Sqlite};
use uuid::Uuid;

use crate::conns::Conns;
use crate::error::{connection_lost, StoreError};
use crate::sqlite_writer::SqliteWriter;

type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// The connections for reads and synced writes, and those whose commits are not waited
    /// on (`synchronous_commit = off`), for the `Commit::Lazy` writes (see `connect_pg`).
    Pg(Conns<Postgres>, Conns<Postgres>),
    Sqlite(Conns<Sqlite>, SqliteWriter),
}

/// Whether a statement may write (anything but a plain `SELECT`): on SQLite those go through
/// the group-committing writer.
fn writes(sql: &str) -> bool {
    let head = sql.trim_start().get(..6).unwrap_or_default();
    !head.eq_ignore_ascii_case("select")
}

/// A read's arguments once more, for a second try should its connection be lost (a restart of
/// the server, or of a pooler in front of it, cuts the connections the store keeps): it
/// changes nothing, so running it again on a fresh connection is safe, and spares its caller
/// a `503` for a cut the database already came back from. A write is not run again: whether
/// the server took it before the cut is unknown.
fn read_again(sql: &str, args: &[Arg]) -> Option<Vec<Arg>> {
    (!writes(sql)).then(|| args.to_vec())
}

/// Whether a write must be on disk before it is answered. On SQLite a batch of only `Lazy`
/// writes is not synced (see `SqliteWriter`); on PostgreSQL they go through connections whose
/// commits are not waited on (see `connect_pg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// What a caller promises on: a job answered `202`, an outcome acked to the broker.
    Synced,
    /// Lost with the machine at worst, and then with every later commit (WAL commits are
    /// made durable in order): what the broker's redelivery does again anyway, such as an
    /// attempt's claim, its lease renewals and progress.
    Lazy,
}

#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Uuid(Option<Uuid>),
    Text(Option<String>),
    Json(Option<Value>),
    Time(Option<DateTime<Utc>>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(bool),
}

impl From<Uuid> for Arg {
    fn from(v: Uuid) -> Self {
        Arg::Uuid(Some(v))
    }
}
impl From<Option<Uuid>> for Arg {
    fn from(v: Option<Uuid>) -> Self {
        Arg::Uuid(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<Value> for Arg {
    fn from(v: Value) -> Self {
        Arg::Json(Some(v))
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Time(Some(v))
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Arg::Time(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<Option<f64>> for Arg {
    fn from(v: Option<f64>) -> Self {
        Arg::Real(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

/// `[a, b, c]` of anything convertible into `Arg`.
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$($crate::db::Arg::from($a)),*] };
}
pub(crate) use args;

/// Column access that hides the storage types. Object safe, so row mappers are written once.
pub(crate) trait Row {
    fn uuid(&self, col: &str) -> Result<Option<Uuid>>;
    fn text(&self, col: &str) -> Result<Option<String>>;
    fn json(&self, col: &str) -> Result<Option<Value>>;
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>>;
    fn int(&self, col: &str) -> Result<Option<i64>>;
    fn int4(&self, col: &str) -> Result<i32>;
    fn real(&self, col: &str) -> Result<Option<f64>>;
    fn boolean(&self, col: &str) -> Result<bool>;
}

/// A NOT NULL column read through `Row`.
pub(crate) fn required<T>(col: &str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| StoreError::other(format!("column {col} is unexpectedly NULL")))
}

impl Row for PgRow {
    fn uuid(&self, col: &str) -> Result<Option<Uuid>> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn json(&self, col: &str) -> Result<Option<Value>> {
        Ok(self.try_get(col)?)
    }
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn int4(&self, col: &str) -> Result<i32> {
        Ok(self.try_get(col)?)
    }
    fn real(&self, col: &str) -> Result<Option<f64>> {
        Ok(self.try_get(col)?)
    }
    fn boolean(&self, col: &str) -> Result<bool> {
        Ok(self.try_get(col)?)
    }
}

impl Row for SqliteRow {
    fn uuid(&self, col: &str) -> Result<Option<Uuid>> {
        uuid_from_text(col, self.text(col)?)
    }
    fn text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn json(&self, col: &str) -> Result<Option<Value>> {
        json_from_text(col, self.text(col)?)
    }
    fn time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        time_from_text(col, self.text(col)?)
    }
    fn int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn int4(&self, col: &str) -> Result<i32> {
        Ok(self.try_get(col)?)
    }
    fn real(&self, col: &str) -> Result<Option<f64>> {
        Ok(self.try_get(col)?)
    }
    fn boolean(&self, col: &str) -> Result<bool> {
        Ok(self.try_get(col)?)
    }
}

/// SQLite keeps uuids, JSON and times as TEXT; these read them back.
pub(crate) fn uuid_from_text(col: &str, text: Option<String>) -> Result<Option<Uuid>> {
    text.map(|s| Uuid::parse_str(&s))
        .transpose()
        .map_err(|e| StoreError::other(format!("column {col}: {e}")))
}

pub(crate) fn json_from_text(col: &str, text: Option<String>) -> Result<Option<Value>> {
    text.map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::other(format!("column {col}: {e}")))
}

pub(crate) fn time_from_text(col: &str, text: Option<String>) -> Result<Option<DateTime<Utc>>> {
    text.map(|s| DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)))
        .transpose()
        .map_err(|e| StoreError::other(format!("column {col}: {e}")))
}

/// Fixed width (always six fractional digits), so SQLite's text comparison orders by time.
pub(crate) fn sqlite_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn bind_pg<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    args: Vec<Arg>,
) -> Query<'q, Postgres, PgArguments> {
    for a in args {
        q = match a {
            Arg::Uuid(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Json(v) => q.bind(v),
            Arg::Time(v) => q.bind(v),
            Arg::Int(v) => q.bind(v),
            Arg::Real(v) => q.bind(v),
            Arg::Bool(v) => q.bind(v),
        };
    }
    q
}

fn bind_sqlite<'q>(
    mut q: Query<'q, Sqlite, SqliteArguments<'q>>,
    args: &'q [Arg],
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    for a in args {
        q = match a {
            Arg::Uuid(v) => q.bind(v.map(|u| u.hyphenated().to_string())),
            Arg::Text(v) => q.bind(v.as_deref()),
            Arg::Json(v) => q.bind(v.as_ref().map(Value::to_string)),
            Arg::Time(v) => q.bind(v.map(sqlite_time)),
            Arg::Int(v) => q.bind(*v),
            Arg::Real(v) => q.bind(*v),
            Arg::Bool(v) => q.bind(*v),
        };
    }
    q
}

impl Pool {
    pub(crate) async fn execute(&self, sql: &str, args: Vec<Arg>) -> Result<u64> {
        self.execute_as(Commit::Synced, sql, args).await
    }

    pub(crate) async fn execute_as(
        &self,
        commit: Commit,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<u64> {
        Ok(match self {
            Pool::Pg(synced, lazy) => {
                let conns = if commit == Commit::Lazy { lazy } else { synced };
                let mut conn = conns.checkout().await?;
                let done = bind_pg(sqlx::query(sql), args).execute(conn.raw());
                let done = conns.bounded(done).await;
                conn.settle(done)?.rows_affected()
            }
            Pool::Sqlite(_, writer) if writes(sql) => {
                writer.write(sql, args, false, commit).await?.rows
            }
            Pool::Sqlite(conns, _) => {
                let mut conn = conns.checkout().await?;
                let done = bind_sqlite(sqlx::query(sql), &args)
                    .execute(conn.raw())
                    .await;
                conn.settle(done)?.rows_affected()
            }
        })
    }

    pub(crate) async fn fetch_optional<T>(
        &self,
        sql: &str,
        args: Vec<Arg>,
        map: impl Fn(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        self.fetch_optional_as(Commit::Synced, sql, args, map).await
    }

    pub(crate) async fn fetch_optional_as<T>(
        &self,
        commit: Commit,
        sql: &str,
        args: Vec<Arg>,
        map: impl Fn(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        match self {
            Pool::Pg(synced, lazy) => {
                let conns = if commit == Commit::Lazy { lazy } else { synced };
                let mut again = read_again(sql, &args);
                let mut args = args;
                loop {
                    let mut conn = conns.checkout().await?;
                    let row = bind_pg(sqlx::query(sql), args).fetch_optional(conn.raw());
                    let row = conns.bounded(row).await;
                    match conn.settle(row) {
                        Err(e) if connection_lost(&e) && again.is_some() => {
                            args = again.take().unwrap_or_default();
                        }
                        row => return row?.map(|r| map(&r)).transpose(),
                    }
                }
            }
            Pool::Sqlite(_, writer) if writes(sql) => writer
                .write(sql, args, true, commit)
                .await?
                .row
                .map(|r| map(&r))
                .transpose(),
            Pool::Sqlite(conns, _) => {
                let mut conn = conns.checkout().await?;
                let row = bind_sqlite(sqlx::query(sql), &args)
                    .fetch_optional(conn.raw())
                    .await;
                conn.settle(row)?.map(|r| map(&r)).transpose()
            }
        }
    }

    pub(crate) async fn fetch_all<T>(
        &self,
        sql: &str,
        args: Vec<Arg>,
        map: impl Fn(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        match self {
            Pool::Pg(conns, _) => {
                let mut again = read_again(sql, &args);
                let mut args = args;
                loop {
                    let mut conn = conns.checkout().await?;
                    let rows = bind_pg(sqlx::query(sql), args).fetch_all(conn.raw());
                    let rows = conns.bounded(rows).await;
                    match conn.settle(rows) {
                        Err(e) if connection_lost(&e) && again.is_some() => {
                            args = again.take().unwrap_or_default();
                        }
                        rows => return rows?.iter().map(|r| map(r)).collect(),
                    }
                }
            }
            Pool::Sqlite(conns, _) => {
                let mut conn = conns.checkout().await?;
                let rows = bind_sqlite(sqlx::query(sql), &args)
                    .fetch_all(conn.raw())
                    .await;
                conn.settle(rows)?.iter().map(|r| map(r)).collect()
            }
        }
    }
}
