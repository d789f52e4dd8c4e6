//! The schema and the migrations that build it. The SQL is written once for both backends:
//! it sticks to what SQLite and PostgreSQL share (TEXT, BIGINT, UNIQUE, REFERENCES), and every
//! integer column is BIGINT so both drivers hand back an `i64`.

use sqlx::{Any, Transaction};

use crate::{Backend, StoreError};

/// Migrations in order; a migration is never edited once released, only followed by another.
const MIGRATIONS: &[(i64, &str)] = &[(1, INITIAL), (2, DRAINS_AND_OPERATOR)];

const INITIAL: &str = "
CREATE TABLE meridian_meta (
    id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO meridian_meta (id, version) VALUES (1, 0);
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    key_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    token_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    acl TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX credentials_by_account ON credentials (account_id, id);
CREATE TABLE reserved_domains (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    domain TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    resolves_to TEXT NOT NULL,
    cert_authority TEXT,
    cert_key_type TEXT,
    cname_target TEXT UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX reserved_domains_by_account ON reserved_domains (account_id, id);
CREATE TABLE reserved_addrs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    addr TEXT NOT NULL UNIQUE,
    region TEXT NOT NULL,
    port BIGINT NOT NULL,
    description TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX reserved_addrs_by_account ON reserved_addrs (account_id, id);
";

/// Drained PoPs, and which account is the operator's (the first one, made at bootstrap):
/// only the operator may drain a PoP.
const DRAINS_AND_OPERATOR: &str = "
CREATE TABLE pop_drains (
    pop TEXT PRIMARY KEY,
    drained_at BIGINT NOT NULL
);
ALTER TABLE accounts ADD COLUMN operator BIGINT NOT NULL DEFAULT 0;
UPDATE accounts SET operator = 1 WHERE id = (SELECT MIN(id) FROM accounts)
";

/// Brings the schema up to date. Each migration runs in its own transaction together with the
/// row that records it, so a crash leaves either all of it or none.
pub(crate) async fn migrate(pool: &sqlx::AnyPool, backend: Backend) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS meridian_schema \
         (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    for &(version, sql) in MIGRATIONS {
        let mut tx = pool.begin().await?;
        if backend == Backend::Postgres {
            // Two processes starting together must not both apply a migration.
            sqlx::query("SELECT pg_advisory_xact_lock(7413)")
                .execute(&mut *tx)
                .await?;
        }
        if is_applied(&mut tx, version).await? {
            continue;
        }
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO meridian_schema (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(crate::now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied store migration");
    }
    Ok(())
}

async fn is_applied(tx: &mut Transaction<'_, Any>, version: i64) -> Result<bool, StoreError> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT version FROM meridian_schema WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some())
}
