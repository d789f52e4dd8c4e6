//! The store suite: every test runs once on SQLite and once on PostgreSQL.
//!
//! PostgreSQL comes from `MERIDIAN_TEST_POSTGRES`, an admin URL (the test script starts a
//! cluster and sets it); each test creates its own database there. Without it the PostgreSQL
//! half fails rather than pass untested.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_core::target::parse_targets;
use meridian_core::{Hostname, PopCode, PopSet, RoutingSnapshot};
use meridian_store::{
    AddrPool, Credential, DomainChanges, NewDomain, ReservedAddr, ReservedDomain, Store, StoreError,
};
use sqlx::Connection;
use tokio::sync::watch;

/// A database for one test, and what keeps it alive.
struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("meridian.db").display());
    TestDb {
        url,
        _dir: Some(dir),
    }
}

async fn postgres_db() -> TestDb {
    let admin = std::env::var("MERIDIAN_TEST_POSTGRES")
        .expect("MERIDIAN_TEST_POSTGRES must name a PostgreSQL admin URL (see scripts/test)");
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let name = format!("meridian_test_{}", meridian_store::random_label());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    TestDb {
        url: format!("{base}/{name}"),
        _dir: None,
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::sqlite_db().await).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::postgres_db().await).await })*
        }
    };
}

both_backends!(
    domains_round_trip_and_publish_at_once,
    lists_are_newest_first_and_page_by_before_id,
    accounts_never_see_each_other,
    addresses_come_from_the_region_pool,
    credentials_resolve_to_their_account,
    everything_survives_reopening,
    another_store_on_the_same_database_follows_changes,
    drains_are_published_and_only_the_first_account_operates,
    imports_are_one_transaction,
);

fn host(name: &str) -> Hostname {
    Hostname::parse(name).unwrap()
}

fn new_domain(name: &str, targets: &[&str]) -> NewDomain {
    NewDomain {
        domain: host(name),
        description: format!("{name} description"),
        metadata: "{\"k\":1}".into(),
        resolves_to: parse_targets(targets.iter().copied()).unwrap(),
        certificate_policy: None,
        cname_target: None,
    }
}

async fn domains_round_trip_and_publish_at_once(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let (account, _) = store.create_account("a").await.unwrap();
    let mut updates = store.subscribe();
    let before = store.snapshot().version();

    let created = store
        .create_domain(&account, new_domain("api.example.com", &["us-cal-1", "eu"]))
        .await
        .unwrap();
    // Published before create_domain returned: no waiting needed.
    assert!(updates.has_changed().unwrap());
    let snap = updates.borrow_and_update().clone();
    assert!(snap.version() > before);
    let route = snap.domain(&host("api.example.com")).unwrap();
    assert_eq!(route.id, created.id);
    assert!(route.resolution.allows(PopCode::Eu) && !route.resolution.allows(PopCode::Jp));

    let fetched: ReservedDomain = store.get(&account, &created.id).await.unwrap();
    assert_eq!(fetched, created);

    let changes = DomainChanges {
        resolves_to: Some(parse_targets(["us-cal-1", "eu", "jp"]).unwrap()),
        ..DomainChanges::default()
    };
    let updated = store
        .update_domain(&account, &created.id, changes)
        .await
        .unwrap();
    assert_eq!(
        updated.description, created.description,
        "untouched fields stay"
    );
    assert_eq!(updated.resolves_to.len(), 3);
    assert!(
        store
            .snapshot()
            .domain(&host("api.example.com"))
            .unwrap()
            .resolution
            .allows(PopCode::Jp)
    );

    let unpin = DomainChanges {
        resolves_to: Some(vec![]),
        ..DomainChanges::default()
    };
    store
        .update_domain(&account, &created.id, unpin)
        .await
        .unwrap();
    let route = store
        .snapshot()
        .domain(&host("api.example.com"))
        .unwrap()
        .clone();
    assert!(route.resolution.is_global());

    store
        .delete::<ReservedDomain>(&account, &created.id)
        .await
        .unwrap();
    assert!(store.snapshot().domain(&host("api.example.com")).is_none());
    assert!(matches!(
        store.get::<ReservedDomain>(&account, &created.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete::<ReservedDomain>(&account, &created.id).await,
        Err(StoreError::NotFound)
    ));
}

async fn lists_are_newest_first_and_page_by_before_id(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let (account, _) = store.create_account("a").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..25 {
        let d = store
            .create_domain(&account, new_domain(&format!("d{i}.example.com"), &[]))
            .await
            .unwrap();
        ids.push(d.id);
    }
    ids.reverse(); // newest first

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = store
            .list::<ReservedDomain>(&account, before.as_deref(), 10)
            .await
            .unwrap();
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        if !page.has_more {
            break;
        }
        before = Some(page.items.last().unwrap().id.clone());
    }
    assert_eq!(seen, ids);

    let exact = store
        .list::<ReservedDomain>(&account, None, 25)
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 25);
    assert!(!exact.has_more, "a page that holds the last item says so");
}

async fn accounts_never_see_each_other(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let (alice, _) = store.create_account("alice").await.unwrap();
    let (bob, _) = store.create_account("bob").await.unwrap();
    let d = store
        .create_domain(&alice, new_domain("alice.example.com", &["eu"]))
        .await
        .unwrap();

    assert!(matches!(
        store.get::<ReservedDomain>(&bob, &d.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .update_domain(&bob, &d.id, DomainChanges::default())
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete::<ReservedDomain>(&bob, &d.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .list::<ReservedDomain>(&bob, None, 100)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let same = store
        .create_domain(&alice, new_domain("alice.example.com", &[]))
        .await;
    assert!(matches!(
        same,
        Err(StoreError::DomainTaken {
            by_same_account: true
        })
    ));
    let other = store
        .create_domain(&bob, new_domain("ALICE.example.com.", &[]))
        .await;
    assert!(matches!(
        other,
        Err(StoreError::DomainTaken {
            by_same_account: false
        })
    ));
    // The refused writes changed nothing.
    let still: ReservedDomain = store.get(&alice, &d.id).await.unwrap();
    assert_eq!(still, d);
}

async fn addresses_come_from_the_region_pool(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let (account, _) = store.create_account("a").await.unwrap();
    let pool = AddrPool {
        host: "eu.tcp.meridian.test".into(),
        first_port: 20000,
        last_port: 20002,
    };
    let mut made = Vec::new();
    for _ in 0..3 {
        let a = store
            .create_addr(&account, PopCode::Eu, &pool, "db".into(), String::new())
            .await
            .unwrap();
        made.push(a);
    }
    let addrs: Vec<&str> = made.iter().map(|a| a.addr.as_str()).collect();
    assert_eq!(
        addrs,
        [
            "eu.tcp.meridian.test:20000",
            "eu.tcp.meridian.test:20001",
            "eu.tcp.meridian.test:20002"
        ]
    );
    let full = store
        .create_addr(&account, PopCode::Eu, &pool, String::new(), String::new())
        .await;
    assert!(matches!(full, Err(StoreError::AddrsExhausted(PopCode::Eu))));

    // Another region has its own ports.
    let jp_pool = AddrPool {
        host: "jp.tcp.meridian.test".into(),
        ..pool.clone()
    };
    let jp = store
        .create_addr(
            &account,
            PopCode::Jp,
            &jp_pool,
            String::new(),
            String::new(),
        )
        .await
        .unwrap();
    assert_eq!(jp.addr, "jp.tcp.meridian.test:20000");
    assert_eq!(store.snapshot().addr(&jp.addr).unwrap().region, PopCode::Jp);

    store
        .delete::<ReservedAddr>(&account, &made[1].id)
        .await
        .unwrap();
    let reused = store
        .create_addr(&account, PopCode::Eu, &pool, String::new(), String::new())
        .await
        .unwrap();
    assert_eq!(reused.addr, "eu.tcp.meridian.test:20001");

    let changed = store
        .update_addr(&account, &reused.id, Some("renamed".into()), None)
        .await
        .unwrap();
    assert_eq!(
        (changed.description.as_str(), changed.region),
        ("renamed", PopCode::Eu)
    );
}

async fn credentials_resolve_to_their_account(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let (account, api_key) = store.create_account("a").await.unwrap();
    assert_eq!(
        store
            .account_for_api_key(api_key.expose())
            .await
            .unwrap()
            .as_deref(),
        Some(account.as_str())
    );
    assert_eq!(
        store.account_for_api_key("mrd_api_wrong").await.unwrap(),
        None
    );

    let acl = vec!["bind:*.example.com".to_owned()];
    let (cred, token) = store
        .create_credential(&account, "laptop", "", &acl)
        .await
        .unwrap();
    let snap = store.snapshot();
    let route = snap.credential(&token.hash()).unwrap();
    assert_eq!(
        (route.account_id.as_str(), route.acl.as_slice()),
        (account.as_str(), &acl[..])
    );

    let renamed = store
        .update_credential(
            &account,
            &cred.id,
            Some("desktop".into()),
            None,
            Some(vec![]),
        )
        .await
        .unwrap();
    assert_eq!(
        (renamed.description.as_str(), renamed.acl.len()),
        ("desktop", 0)
    );
    store
        .delete::<Credential>(&account, &cred.id)
        .await
        .unwrap();
    assert!(store.snapshot().credential(&token.hash()).is_none());
}

async fn everything_survives_reopening(db: TestDb) {
    let (account, id) = {
        let store = Store::open(&db.url).await.unwrap();
        let api_key = meridian_store::new_api_key();
        let token = meridian_store::new_authtoken();
        let account = store.bootstrap(&api_key, &token).await.unwrap().unwrap();
        assert_eq!(
            store.bootstrap(&api_key, &token).await.unwrap(),
            None,
            "only once"
        );
        let d = store
            .create_domain(&account, new_domain("kept.example.com", &["au"]))
            .await
            .unwrap();
        (account, d.id)
    };
    let store = Store::open(&db.url).await.unwrap();
    let d: ReservedDomain = store.get(&account, &id).await.unwrap();
    assert_eq!(d.domain.as_str(), "kept.example.com");
    let snap = store.snapshot();
    assert!(
        snap.domain(&host("kept.example.com"))
            .unwrap()
            .resolution
            .allows(PopCode::Au)
    );
    assert!(store.has_accounts().await.unwrap());
}

/// Waits until `rx` publishes a snapshot satisfying `done`, for at most `limit`.
async fn wait_for(
    rx: &mut watch::Receiver<Arc<RoutingSnapshot>>,
    limit: Duration,
    done: impl Fn(&RoutingSnapshot) -> bool,
) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(limit, rx.wait_for(|s| done(s)))
        .await
        .expect("the change never reached the other store")
        .unwrap();
    start.elapsed()
}

async fn another_store_on_the_same_database_follows_changes(db: TestDb) {
    // Two independent stores (separate pools, nothing shared in memory) stand for two
    // processes: one writes, the other only follows.
    let writer = Store::open(&db.url).await.unwrap();
    let follower = Store::open(&db.url).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let follower = follower.clone();
        async move { follower.follow(async { drop(stop_rx.await) }).await }
    });
    let mut rx = follower.subscribe();
    let (account, _) = writer.create_account("a").await.unwrap();

    for (i, pin) in ["eu", "jp", "sa"].into_iter().enumerate() {
        let name = format!("f{i}.example.com");
        writer
            .create_domain(&account, new_domain(&name, &[pin]))
            .await
            .unwrap();
        let took = wait_for(&mut rx, Duration::from_secs(30), |s| {
            s.domain(&host(&name)).is_some()
        })
        .await;
        eprintln!(
            "{:?}: change {i} reached the follower after {took:?}",
            writer.backend()
        );
    }
    assert_eq!(follower.snapshot().version(), writer.snapshot().version());
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

async fn drains_are_published_and_only_the_first_account_operates(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let operator = store
        .bootstrap(
            &meridian_store::new_api_key(),
            &meridian_store::new_authtoken(),
        )
        .await
        .unwrap()
        .unwrap();
    let (customer, _) = store.create_account("customer").await.unwrap();
    assert!(store.is_operator(&operator).await.unwrap());
    assert!(!store.is_operator(&customer).await.unwrap());
    assert!(!store.is_operator("ac_nobody").await.unwrap());

    assert_eq!(store.snapshot().drained(), PopSet::EMPTY);
    let drained = store.set_drained(PopCode::Eu, true).await.unwrap();
    assert_eq!(drained, PopSet::only(PopCode::Eu));
    assert_eq!(store.snapshot().drained(), PopSet::only(PopCode::Eu));
    // Idempotent, and another PoP adds to the set.
    store.set_drained(PopCode::Eu, true).await.unwrap();
    let both = store.set_drained(PopCode::Jp, true).await.unwrap();
    assert_eq!(both.len(), 2);

    // Survives a restart.
    drop(store);
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.snapshot().drained().len(), 2);
    let left = store.set_drained(PopCode::Eu, false).await.unwrap();
    assert_eq!(left, PopSet::only(PopCode::Jp));
}

async fn imports_are_one_transaction(db: TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let (account, _) = store.create_account("bulk").await.unwrap();
    let before = store.snapshot().version();
    let names: Vec<NewDomain> = (0..500)
        .map(|i| new_domain(&format!("d{i}.example.com"), &["eu"]))
        .collect();
    assert_eq!(store.import_domains(&account, names).await.unwrap(), 500);
    let snap = store.snapshot();
    assert_eq!((snap.domain_count(), snap.version()), (500, before + 1));
    assert!(snap.domain(&host("d499.example.com")).is_some());

    // One name already taken: nothing of the import is kept.
    let clash = vec![
        new_domain("fresh.example.com", &[]),
        new_domain("d7.example.com", &[]),
    ];
    assert!(matches!(
        store.import_domains(&account, clash).await,
        Err(StoreError::DomainTaken { .. })
    ));
    assert!(
        store
            .snapshot()
            .domain(&host("fresh.example.com"))
            .is_none()
    );
    let page = store
        .list::<ReservedDomain>(&account, None, 1000)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 500);
}
