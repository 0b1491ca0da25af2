//! Waiting for another process's SQLite write lock.
//!
//! SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 … ms between tries. The API and the
//! consumers are separate processes writing one file, each holding the lock for tens of
//! microseconds at a time, so those sleeps, not the work, decided the tail latency of every
//! write. This handler retries in steps close to how long the lock is really held, and gives
//! up after about the same total time as the configured busy timeout.

use std::os::raw::{c_int, c_void};
use std::time::Duration;

use sqlx::sqlite::SqliteConnection;

/// Tries at each step length; after the last, 1 ms steps until the budget is spent.
const STEPS: [(c_int, Duration); 2] = [
    (50, Duration::from_micros(20)),
    (100, Duration::from_micros(200)),
];
const LONG_STEP: Duration = Duration::from_millis(1);

/// Installs the handler on `conn`; `timeout` bounds the whole wait for one statement.
pub(crate) async fn install(conn: &mut SqliteConnection, timeout: Duration) -> sqlx::Result<()> {
    let long_tries = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the connection's worker thread is parked while `handle` holds its lock.
    unsafe { install_raw(handle.as_raw_handle().as_ptr(), long_tries) }.map_err(|rc| {
        sqlx::Error::Protocol(format!(
            "cannot install the SQLite busy handler (code {rc})"
        ))
    })
}

/// Installs the handler on a raw connection, with `long_tries` 1 ms steps after the short ones.
///
/// # Safety
/// `db` must be an open connection that no other thread uses during the call. The handler
/// keeps no pointer: its budget travels in the context argument as an integer, and the
/// function is a plain `extern "C" fn` that cannot unwind.
pub(crate) unsafe fn install_raw(
    db: *mut libsqlite3_sys::sqlite3,
    long_tries: c_int,
) -> Result<(), c_int> {
    let rc = unsafe {
        libsqlite3_sys::sqlite3_busy_handler(db, Some(on_busy), long_tries as usize as *mut c_void)
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

/// SQLite's busy callback: non-zero to try again, zero to fail with `SQLITE_BUSY`.
extern "C" fn on_busy(budget: *mut c_void, tries: c_int) -> c_int {
    let long_tries = budget as usize as c_int;
    match pause(tries, long_tries) {
        Some(step) => {
            std::thread::sleep(step);
            1
        }
        None => 0,
    }
}

/// How long to wait before try `tries` (counted from 0), or `None` once the budget is spent.
fn pause(tries: c_int, long_tries: c_int) -> Option<Duration> {
    let mut before = 0;
    for (count, step) in STEPS {
        if tries < before + count {
            return Some(step);
        }
        before += count;
    }
    (tries < before + long_tries).then_some(LONG_STEP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_steps_first_then_the_budget_in_milliseconds() {
        assert_eq!(pause(0, 5000), Some(Duration::from_micros(20)));
        assert_eq!(pause(49, 5000), Some(Duration::from_micros(20)));
        assert_eq!(pause(50, 5000), Some(Duration::from_micros(200)));
        assert_eq!(pause(150, 5000), Some(LONG_STEP));
        assert_eq!(pause(150 + 4999, 5000), Some(LONG_STEP));
        assert_eq!(pause(150 + 5000, 5000), None);
        assert_eq!(pause(150, 0), None);
    }
}
