//! Building the routing snapshot from the database, and following changes that other
//! processes commit to a shared database.

use std::future::Future;
use std::time::Duration;

use meridian_core::secret::SecretHash;
use meridian_core::snapshot::{AddrRoute, CredentialRoute, DomainRoute};
use meridian_core::{PopCode, PopSet, RoutingSnapshot};
use sqlx::any::AnyRow;
use sqlx::postgres::PgListener;
use sqlx::{AnyPool, Row};

use crate::records::{Credential, Record, ReservedAddr, ReservedDomain};
use crate::{Backend, Store, StoreError};

/// The PostgreSQL `NOTIFY` channel on which every committed write announces its version.
pub(crate) const CHANNEL: &str = "meridian_changes";

/// How often a follower compares versions even without a notification: the bound on how
/// stale another process's snapshot can get if a notification is lost.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Reads everything in one read transaction, so the snapshot is consistent with its version.
pub(crate) async fn load(pool: &AnyPool, backend: Backend) -> Result<RoutingSnapshot, StoreError> {
    let mut tx = pool.begin().await?;
    if backend == Backend::Postgres {
        // The default, READ COMMITTED, would let each SELECT see a different moment.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
    }
    let version: i64 = sqlx::query_scalar("SELECT version FROM meridian_meta WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;

    let rows: Vec<AnyRow> = sqlx::query(&select_all::<ReservedDomain>(""))
        .fetch_all(&mut *tx)
        .await?;
    let mut domains = Vec::with_capacity(rows.len());
    for row in &rows {
        let d = ReservedDomain::from_row(row)?;
        domains.push(DomainRoute::new(
            d.id,
            d.account_id,
            d.domain,
            d.resolves_to,
            d.cname_target,
        ));
    }

    let rows: Vec<AnyRow> = sqlx::query(&select_all::<ReservedAddr>(""))
        .fetch_all(&mut *tx)
        .await?;
    let mut addrs = Vec::with_capacity(rows.len());
    for row in &rows {
        let a = ReservedAddr::from_row(row)?;
        addrs.push(AddrRoute {
            id: a.id,
            account_id: a.account_id,
            addr: a.addr,
            region: a.region,
        });
    }

    let rows: Vec<AnyRow> = sqlx::query(&select_all::<Credential>(", token_hash"))
        .fetch_all(&mut *tx)
        .await?;
    let mut credentials = Vec::with_capacity(rows.len());
    for row in &rows {
        let c = Credential::from_row(row)?;
        let hash = SecretHash::from_hex(row.try_get("token_hash")?);
        let route = CredentialRoute {
            id: c.id,
            account_id: crate::account_of(row)?,
            acl: c.acl,
        };
        credentials.push((hash, route));
    }
    let drained: Vec<String> = sqlx::query_scalar("SELECT pop FROM pop_drains")
        .fetch_all(&mut *tx)
        .await?;
    let drained = drained
        .iter()
        .map(|code| code.parse::<PopCode>())
        .collect::<Result<PopSet, _>>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.commit().await?;

    let version = u64::try_from(version).map_err(|_| StoreError::Corrupt("version".into()))?;
    Ok(RoutingSnapshot::new(version, domains, addrs, credentials).with_drained(drained))
}

fn select_all<T: Record>(extra_columns: &str) -> String {
    format!("SELECT {}{extra_columns} FROM {}", T::COLUMNS, T::TABLE)
}

impl Store {
    /// Keeps this process's snapshot up to date with writes made by *other* processes sharing
    /// the database, until `shutdown` completes. On PostgreSQL it listens for notifications;
    /// on both backends it also compares versions every [`FOLLOW_INTERVAL`], which covers a
    /// dropped listener connection and SQLite, which has no notifications.
    pub async fn follow(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut listener = self.listen().await;
        let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                notified = next_notification(&mut listener) => {
                    if let Err(error) = notified {
                        tracing::warn!(%error, "lost the store change listener; polling");
                        listener = None;
                    }
                }
                _ = tick.tick() => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                }
            }
            if let Err(error) = self.catch_up().await {
                tracing::warn!(%error, "could not check the store version");
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        if self.inner.backend != Backend::Postgres {
            return None;
        }
        let connected = async {
            let mut listener = PgListener::connect(&self.inner.url).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connected.await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "could not listen for store changes; polling");
                None
            }
        }
    }

    /// Reloads only if the database is ahead of the published snapshot: one cheap query when
    /// nothing changed.
    async fn catch_up(&self) -> Result<(), StoreError> {
        let version: i64 = sqlx::query_scalar("SELECT version FROM meridian_meta WHERE id = 1")
            .fetch_one(&self.inner.pool)
            .await?;
        if u64::try_from(version).unwrap_or(0) > self.snapshot().version() {
            self.refresh().await?;
        }
        Ok(())
    }
}

/// Waits for the next notification, or forever when there is no listener.
async fn next_notification(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(drop),
        None => std::future::pending().await,
    }
}
