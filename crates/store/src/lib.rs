//! Meridian's store: accounts, API keys, agent credentials, reserved domains and reserved TCP
//! addresses, kept in SQLite (embedded, the default) or PostgreSQL, chosen by URL.
//!
//! Every write runs in one transaction that also bumps a version counter. After the commit the
//! store rebuilds the [`RoutingSnapshot`] and publishes it on a `watch` channel, before the
//! write returns: a caller that saw a write succeed can rely on subscribers in this process
//! seeing it next. Other processes sharing a PostgreSQL database learn of the change through
//! `LISTEN/NOTIFY`, with a once-a-second version check as the fallback ([`Store::follow`]).
//!
//! # Layout
//! - `lib.rs`: [`Store`], the write path and the per-object operations.
//! - [`records`]: the stored objects and the generic per-account reads.
//! - `schema.rs`: migrations.
//! - `snapshot.rs`: building, publishing and following routing snapshots.
//! - `secrets.rs`: ids and secrets.
#![warn(missing_docs)]

pub mod records;
mod schema;
mod secrets;
mod snapshot;

pub use snapshot::FOLLOW_INTERVAL;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use meridian_core::certificate::CertificatePolicy;
use meridian_core::id::{IdKind, is_valid_id};
use meridian_core::secret::Secret;
use meridian_core::{PopCode, PopSet, RoutingSnapshot};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use tokio::sync::watch;

pub use records::{
    AddrPool, Credential, DomainChanges, NewDomain, Page, Record, ReservedAddr, ReservedDomain,
};
pub use secrets::{new_api_key, new_authtoken, random_label};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such object for this account (it may exist for another).
    #[error("not found")]
    NotFound,
    /// The domain is already reserved.
    #[error("the domain is already reserved")]
    DomainTaken {
        /// Whether the caller's own account holds it.
        by_same_account: bool,
    },
    /// Every port of the region's range is handed out.
    #[error("no free TCP address left in region {0}")]
    AddrsExhausted(PopCode),
    /// The store URL is not `sqlite:…` or `postgres://…`.
    #[error("unsupported store URL '{0}': use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// A stored value no longer parses: the database was edited by hand or by a newer version.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The database refused or failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    backend: Backend,
    url: String,
    ids: secrets::IdGenerator,
    snapshot: watch::Sender<Arc<RoutingSnapshot>>,
}

/// The clock, in Unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up to date:
    /// `sqlite://PATH` (created when missing) or `postgres://USER:PASS@HOST/DB`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, connect_url) = if let Some(path) = url.strip_prefix("sqlite://") {
            (Backend::Sqlite, format!("sqlite://{path}?mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL so readers never block the writer; FULL so that a write is on
                        // disk before we acknowledge it, not only in the OS cache.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await?;
        schema::migrate(&pool, backend).await?;
        let first = snapshot::load(&pool, backend).await?;
        let (sender, _) = watch::channel(Arc::new(first));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                backend,
                url: url.to_owned(),
                ids: secrets::IdGenerator::default(),
                snapshot: sender,
            }),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The newest published snapshot.
    pub fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.inner.snapshot.borrow().clone()
    }

    /// A receiver that sees every snapshot published from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RoutingSnapshot>> {
        self.inner.snapshot.subscribe()
    }

    /// Starts a transaction that writes: the version bump comes first, so writers queue on the
    /// version row (SQLite takes its write lock at once instead of failing an upgrade later).
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.inner.pool.begin().await?;
        let version: i64 = sqlx::query_scalar(
            "UPDATE meridian_meta SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await?;
        if self.inner.backend == Backend::Postgres {
            // Delivered to listeners only if and when the transaction commits.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(snapshot::CHANNEL)
                .bind(version.to_string())
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Commits a write and publishes the snapshot that includes it.
    async fn commit(&self, tx: Transaction<'static, Any>) -> Result<(), StoreError> {
        tx.commit().await?;
        if let Err(error) = self.refresh().await {
            // The write is durable; only its publication failed. `follow` retries every second,
            // so report the write as done rather than invite a duplicate retry.
            tracing::warn!(%error, "could not publish the snapshot after a write");
        }
        Ok(())
    }

    /// Reloads the snapshot and publishes it if it is newer than the current one.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let fresh = snapshot::load(&self.inner.pool, self.inner.backend).await?;
        self.inner.snapshot.send_if_modified(|current| {
            let newer = fresh.version() > current.version();
            if newer {
                *current = Arc::new(fresh);
            }
            newer
        });
        Ok(())
    }

    // ---- accounts and API keys ----

    /// Whether any account exists yet.
    pub async fn has_accounts(&self) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.inner.pool)
            .await?;
        Ok(count > 0)
    }

    /// Creates the first account with the given API key and agent authtoken, unless an account
    /// exists already. Returns the new account's id, or `None` when it did nothing.
    pub async fn bootstrap(
        &self,
        api_key: &Secret,
        authtoken: &Secret,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *tx)
            .await?;
        if count > 0 {
            return Ok(None);
        }
        let account = self.insert_account(&mut tx, "default", api_key).await?;
        sqlx::query("UPDATE accounts SET operator = 1 WHERE id = $1")
            .bind(&account)
            .execute(&mut *tx)
            .await?;
        self.insert_credential(
            &mut tx,
            &account,
            "bootstrap credential",
            "",
            &[],
            authtoken,
        )
        .await?;
        self.commit(tx).await?;
        Ok(Some(account))
    }

    /// Creates an account with one API key; returns the account id and the key.
    pub async fn create_account(&self, name: &str) -> Result<(String, Secret), StoreError> {
        let api_key = new_api_key();
        let mut tx = self.begin_write().await?;
        let account = self.insert_account(&mut tx, name, &api_key).await?;
        self.commit(tx).await?;
        Ok((account, api_key))
    }

    async fn insert_account(
        &self,
        tx: &mut Transaction<'static, Any>,
        name: &str,
        api_key: &Secret,
    ) -> Result<String, StoreError> {
        let account = self.inner.ids.next(IdKind::Account);
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&account)
            .bind(name)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, key_hash, description, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.inner.ids.next(IdKind::ApiKey))
        .bind(&account)
        .bind(api_key.hash().as_str())
        .bind("")
        .bind(now())
        .execute(&mut **tx)
        .await?;
        Ok(account)
    }

    /// The account an API key belongs to.
    pub async fn account_for_api_key(&self, key: &str) -> Result<Option<String>, StoreError> {
        let hash = meridian_core::secret::SecretHash::of(key);
        Ok(
            sqlx::query_scalar("SELECT account_id FROM api_keys WHERE key_hash = $1")
                .bind(hash.as_str())
                .fetch_optional(&self.inner.pool)
                .await?,
        )
    }

    /// Whether the account is the operator's, the one allowed to manage PoPs.
    pub async fn is_operator(&self, account: &str) -> Result<bool, StoreError> {
        let flag: Option<i64> = sqlx::query_scalar("SELECT operator FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(&self.inner.pool)
            .await?;
        Ok(flag == Some(1))
    }

    // ---- PoPs ----

    /// Drains `pop` (DNS stops naming it while another PoP of a domain's set is available) or
    /// undrains it. Returns the drained set after the change.
    pub async fn set_drained(&self, pop: PopCode, drained: bool) -> Result<PopSet, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM pop_drains WHERE pop = $1")
            .bind(pop.as_str())
            .execute(&mut *tx)
            .await?;
        if drained {
            sqlx::query("INSERT INTO pop_drains (pop, drained_at) VALUES ($1, $2)")
                .bind(pop.as_str())
                .bind(now())
                .execute(&mut *tx)
                .await?;
        }
        self.commit(tx).await?;
        Ok(self.snapshot().drained())
    }

    // ---- generic per-account reads ----

    /// One object of the account, by id. A malformed id or another account's object is
    /// [`StoreError::NotFound`], exactly like a missing one.
    pub async fn get<T: Record>(&self, account: &str, id: &str) -> Result<T, StoreError> {
        fetch_owned(&self.inner.pool, account, id).await
    }

    /// A page of the account's objects, newest first, older than `before_id` when given.
    pub async fn list<T: Record>(
        &self,
        account: &str,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Page<T>, StoreError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            T::COLUMNS,
            T::TABLE
        );
        // Every id of a kind shares its prefix, and "~" sorts after every base62 digit, so
        // this bound admits them all when no `before_id` is given.
        let upper = before_id.map_or_else(|| format!("{}~", T::KIND.prefix()), str::to_owned);
        let rows: Vec<AnyRow> = sqlx::query(&sql)
            .bind(account)
            .bind(upper)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.inner.pool)
            .await?;
        let has_more = rows.len() > limit as usize;
        let items = rows
            .iter()
            .take(limit as usize)
            .map(T::from_row)
            .collect::<Result<_, _>>()?;
        Ok(Page { items, has_more })
    }

    /// Deletes one of the account's objects.
    pub async fn delete<T: Record>(&self, account: &str, id: &str) -> Result<(), StoreError> {
        if !is_valid_id(T::KIND, id) {
            return Err(StoreError::NotFound);
        }
        let mut tx = self.begin_write().await?;
        let sql = format!("DELETE FROM {} WHERE id = $1 AND account_id = $2", T::TABLE);
        let done = sqlx::query(&sql)
            .bind(id)
            .bind(account)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.commit(tx).await
    }

    // ---- reserved domains ----

    /// Reserves a domain for the account.
    pub async fn create_domain(
        &self,
        account: &str,
        new: NewDomain,
    ) -> Result<ReservedDomain, StoreError> {
        let domain = ReservedDomain {
            id: self.inner.ids.next(IdKind::ReservedDomain),
            account_id: account.to_owned(),
            domain: new.domain,
            description: new.description,
            metadata: new.metadata,
            resolves_to: new.resolves_to,
            certificate_policy: new.certificate_policy,
            cname_target: new.cname_target,
            created_at: now(),
        };
        let mut tx = self.begin_write().await?;
        let holder: Option<String> =
            sqlx::query_scalar("SELECT account_id FROM reserved_domains WHERE domain = $1")
                .bind(domain.domain.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(holder) = holder {
            return Err(StoreError::DomainTaken {
                by_same_account: holder == account,
            });
        }
        let (authority, key_type) = policy_columns(domain.certificate_policy);
        sqlx::query(
            "INSERT INTO reserved_domains (id, account_id, domain, description, metadata, \
             resolves_to, cert_authority, cert_key_type, cname_target, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&domain.id)
        .bind(account)
        .bind(domain.domain.as_str())
        .bind(&domain.description)
        .bind(&domain.metadata)
        .bind(records::encode_targets(&domain.resolves_to))
        .bind(authority)
        .bind(key_type)
        .bind(domain.cname_target.as_ref().map(|t| t.as_str().to_owned()))
        .bind(domain.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            // Lost a race with another process between the check and the insert.
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::DomainTaken {
                by_same_account: false,
            },
            _ => StoreError::Database(e),
        })?;
        self.commit(tx).await?;
        Ok(domain)
    }

    /// Reserves many domains for the account in one transaction, publishing one snapshot at
    /// the end: for imports and benchmarks, where a snapshot per domain would cost O(n²). All
    /// or nothing: a name already taken fails the whole import.
    pub async fn import_domains(
        &self,
        account: &str,
        domains: impl IntoIterator<Item = NewDomain>,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut count = 0;
        for new in domains {
            let (authority, key_type) = policy_columns(new.certificate_policy);
            sqlx::query(
                "INSERT INTO reserved_domains (id, account_id, domain, description, metadata, \
                 resolves_to, cert_authority, cert_key_type, cname_target, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(self.inner.ids.next(IdKind::ReservedDomain))
            .bind(account)
            .bind(new.domain.as_str())
            .bind(&new.description)
            .bind(&new.metadata)
            .bind(records::encode_targets(&new.resolves_to))
            .bind(authority)
            .bind(key_type)
            .bind(new.cname_target.as_ref().map(|t| t.as_str().to_owned()))
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::DomainTaken {
                    by_same_account: false,
                },
                _ => StoreError::Database(e),
            })?;
            count += 1;
        }
        self.commit(tx).await?;
        Ok(count)
    }

    /// Applies `changes` to one of the account's domains.
    pub async fn update_domain(
        &self,
        account: &str,
        id: &str,
        changes: DomainChanges,
    ) -> Result<ReservedDomain, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut domain: ReservedDomain = fetch_owned(&mut *tx, account, id).await?;
        let DomainChanges {
            description,
            metadata,
            resolves_to,
            certificate_policy,
        } = changes;
        if let Some(description) = description {
            domain.description = description;
        }
        if let Some(metadata) = metadata {
            domain.metadata = metadata;
        }
        if let Some(resolves_to) = resolves_to {
            domain.resolves_to = resolves_to;
        }
        if let Some(policy) = certificate_policy {
            domain.certificate_policy = policy;
        }
        let (authority, key_type) = policy_columns(domain.certificate_policy);
        sqlx::query(
            "UPDATE reserved_domains SET description = $1, metadata = $2, resolves_to = $3, \
             cert_authority = $4, cert_key_type = $5 WHERE id = $6",
        )
        .bind(&domain.description)
        .bind(&domain.metadata)
        .bind(records::encode_targets(&domain.resolves_to))
        .bind(authority)
        .bind(key_type)
        .bind(&domain.id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(domain)
    }

    // ---- reserved TCP addresses ----

    /// Reserves the lowest free port of `pool` in `region` for the account.
    pub async fn create_addr(
        &self,
        account: &str,
        region: PopCode,
        pool: &AddrPool,
        description: String,
        metadata: String,
    ) -> Result<ReservedAddr, StoreError> {
        let mut tx = self.begin_write().await?;
        // Writers are serialised by the version bump, so nobody can take the port we pick
        // between this read and the insert.
        let taken: Vec<i64> =
            sqlx::query_scalar("SELECT port FROM reserved_addrs WHERE region = $1")
                .bind(region.as_str())
                .fetch_all(&mut *tx)
                .await?;
        let taken: std::collections::HashSet<i64> = taken.into_iter().collect();
        let port = (pool.first_port..=pool.last_port)
            .find(|p| !taken.contains(&i64::from(*p)))
            .ok_or(StoreError::AddrsExhausted(region))?;
        let addr = ReservedAddr {
            id: self.inner.ids.next(IdKind::ReservedAddr),
            account_id: account.to_owned(),
            addr: format!("{}:{port}", pool.host),
            region,
            description,
            metadata,
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO reserved_addrs (id, account_id, addr, region, port, description, \
             metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&addr.id)
        .bind(account)
        .bind(&addr.addr)
        .bind(region.as_str())
        .bind(i64::from(port))
        .bind(&addr.description)
        .bind(&addr.metadata)
        .bind(addr.created_at)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(addr)
    }

    /// Changes an address's description and metadata (`None` keeps a field).
    pub async fn update_addr(
        &self,
        account: &str,
        id: &str,
        description: Option<String>,
        metadata: Option<String>,
    ) -> Result<ReservedAddr, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut addr: ReservedAddr = fetch_owned(&mut *tx, account, id).await?;
        addr.description = description.unwrap_or(addr.description);
        addr.metadata = metadata.unwrap_or(addr.metadata);
        sqlx::query("UPDATE reserved_addrs SET description = $1, metadata = $2 WHERE id = $3")
            .bind(&addr.description)
            .bind(&addr.metadata)
            .bind(&addr.id)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(addr)
    }

    // ---- agent credentials ----

    /// Creates a credential; the token is returned here and never again.
    pub async fn create_credential(
        &self,
        account: &str,
        description: &str,
        metadata: &str,
        acl: &[String],
    ) -> Result<(Credential, Secret), StoreError> {
        let token = new_authtoken();
        let mut tx = self.begin_write().await?;
        let id = self
            .insert_credential(&mut tx, account, description, metadata, acl, &token)
            .await?;
        let credential = fetch_owned(&mut *tx, account, &id).await?;
        self.commit(tx).await?;
        Ok((credential, token))
    }

    async fn insert_credential(
        &self,
        tx: &mut Transaction<'static, Any>,
        account: &str,
        description: &str,
        metadata: &str,
        acl: &[String],
        token: &Secret,
    ) -> Result<String, StoreError> {
        let id = self.inner.ids.next(IdKind::Credential);
        sqlx::query(
            "INSERT INTO credentials (id, account_id, token_hash, description, metadata, acl, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(account)
        .bind(token.hash().as_str())
        .bind(description)
        .bind(metadata)
        .bind(serde_json::Value::from(acl.to_vec()).to_string())
        .bind(now())
        .execute(&mut **tx)
        .await?;
        Ok(id)
    }

    /// Changes a credential's description, metadata or ACL (`None` keeps a field).
    pub async fn update_credential(
        &self,
        account: &str,
        id: &str,
        description: Option<String>,
        metadata: Option<String>,
        acl: Option<Vec<String>>,
    ) -> Result<Credential, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut credential: Credential = fetch_owned(&mut *tx, account, id).await?;
        credential.description = description.unwrap_or(credential.description);
        credential.metadata = metadata.unwrap_or(credential.metadata);
        credential.acl = acl.unwrap_or(credential.acl);
        sqlx::query(
            "UPDATE credentials SET description = $1, metadata = $2, acl = $3 WHERE id = $4",
        )
        .bind(&credential.description)
        .bind(&credential.metadata)
        .bind(serde_json::Value::from(credential.acl.clone()).to_string())
        .bind(&credential.id)
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(credential)
    }
}

/// Reads one of `account`'s objects through any executor: the pool, or a write transaction.
async fn fetch_owned<'e, T, E>(executor: E, account: &str, id: &str) -> Result<T, StoreError>
where
    T: Record,
    E: Executor<'e, Database = Any>,
{
    if !is_valid_id(T::KIND, id) {
        return Err(StoreError::NotFound);
    }
    let sql = format!(
        "SELECT {} FROM {} WHERE id = $1 AND account_id = $2",
        T::COLUMNS,
        T::TABLE
    );
    let row: Option<AnyRow> = sqlx::query(&sql)
        .bind(id)
        .bind(account)
        .fetch_optional(executor)
        .await?;
    T::from_row(&row.ok_or(StoreError::NotFound)?)
}

fn policy_columns(policy: Option<CertificatePolicy>) -> (Option<String>, Option<String>) {
    match policy {
        Some(p) => (
            Some(p.authority.as_str().to_owned()),
            Some(p.private_key_type.as_str().to_owned()),
        ),
        None => (None, None),
    }
}

/// The account id in a row; used by snapshot loading.
pub(crate) fn account_of(row: &AnyRow) -> Result<String, StoreError> {
    Ok(row.try_get("account_id")?)
}
