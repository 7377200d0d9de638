//! The roles only one instance may run at a time on a shared PostgreSQL store (the
//! InfluxDB writer, housekeeping), chosen with PostgreSQL session advisory locks: an
//! instance runs a role while its own connection holds the role's lock, and the server
//! releases the lock when that connection ends — however the instance ends — so a
//! survivor takes the role over at its next try, within [`TRY_EVERY`].
//!
//! On SQLite there is one service per store (the file lock), which runs every role.

use std::time::Duration;

use tracing::{info, warn};

use super::{StoreConfig, StoreError};

/// How often an instance that does not hold a role tries to take it, and how often the
/// holder checks that its lock connection is alive.
pub const TRY_EVERY: Duration = Duration::from_secs(1);

/// A role one instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Drains the outbox into InfluxDB (one writer keeps points in commit order).
    InfluxWriter,
    /// Refreshes the day caches, emits the derived days, prunes.
    Housekeeping,
}

impl Role {
    /// The advisory lock key ("aq" and the role number).
    fn key(self) -> i64 {
        match self {
            Role::InfluxWriter => 0x6171_0000_0001,
            Role::Housekeeping => 0x6171_0000_0002,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::InfluxWriter => "influx writer",
            Role::Housekeeping => "housekeeping",
        }
    }
}

/// A held role: its lock connection (asynchronous: it lives in async code). Dropping
/// it ends the connection, which releases the lock.
pub struct Held {
    role: Role,
    client: tokio_postgres::Client,
}

/// One try at taking `role` on a new connection; `Ok(None)` when another instance
/// holds it.
async fn try_take(cfg: &StoreConfig, role: Role) -> Result<Option<Held>, StoreError> {
    let (client, connection) = cfg
        .pg_async_config()?
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|source| StoreError::RoleLock {
            store: cfg.describe(),
            source,
        })?;
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&role.key()])
        .await
        .map_err(|source| StoreError::RoleLock {
            store: cfg.describe(),
            source,
        })?;
    Ok(row.get::<_, bool>(0).then_some(Held { role, client }))
}

/// Waits until this instance holds `role`: tries at once, then every [`TRY_EVERY`]
/// (a database that is down is tried again like a lock that is taken).
pub async fn acquire(cfg: &StoreConfig, role: Role) -> Held {
    let (mut logged_wait, mut logged_err) = (false, false);
    loop {
        let tried = try_take(cfg, role).await;
        if tried.is_ok() {
            logged_err = false;
        }
        match tried {
            Ok(Some(held)) => {
                info!(role = role.name(), "this instance now runs the role");
                return held;
            }
            Ok(None) if !logged_wait => {
                info!(
                    role = role.name(),
                    "another instance runs the role; standing by"
                );
                logged_wait = true;
            }
            Ok(None) => {}
            // Once per outage, not every second.
            Err(e) if !logged_err => {
                warn!(role = role.name(), error = %e, "cannot try the role's lock; trying every second");
                logged_err = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(TRY_EVERY).await;
    }
}

impl Held {
    /// Resolves when the lock connection fails (the server may already have given the
    /// role to another instance): the caller stops the role at once.
    pub async fn lost(&self) {
        loop {
            tokio::time::sleep(TRY_EVERY).await;
            let alive = tokio::time::timeout(TRY_EVERY * 5, self.client.simple_query("SELECT 1"))
                .await
                .is_ok_and(|r| r.is_ok());
            if !alive {
                warn!(
                    role = self.role.name(),
                    "the role's lock connection failed; stopping the role"
                );
                return;
            }
        }
    }
}
