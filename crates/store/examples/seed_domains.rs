//! Fills a store with COUNT reserved domains for the DNS benchmark, in one transaction:
//! `seed_domains STORE_URL COUNT`. Domain `dN.bench.example` is global when N is even and
//! pinned to `us-cal-1,eu` when N is odd.

use meridian_core::Hostname;
use meridian_core::target::parse_targets;
use meridian_store::{NewDomain, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(count)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: seed_domains STORE_URL COUNT");
    };
    let count: usize = count.parse()?;
    let store = Store::open(&url).await?;
    let (account, _) = store.create_account("bench").await?;
    let pinned = parse_targets(["us-cal-1", "eu"])?;
    let domains = (0..count).map(|i| NewDomain {
        domain: Hostname::parse(&format!("d{i}.bench.example")).expect("a valid name"),
        description: String::new(),
        metadata: String::new(),
        resolves_to: if i % 2 == 0 {
            Vec::new()
        } else {
            pinned.clone()
        },
        certificate_policy: None,
        cname_target: None,
    });
    let started = std::time::Instant::now();
    let n = store.import_domains(&account, domains).await?;
    eprintln!("seeded {n} domains in {:.1?}", started.elapsed());
    Ok(())
}
