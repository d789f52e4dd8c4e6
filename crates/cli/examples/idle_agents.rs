//! Holds N idle agent sessions open against an edge, each with one HTTP endpoint bound (a
//! generated name), until killed: the load for `bench/tunnel`'s memory figure.
//!
//! `idle_agents N SERVER_ADDR CA_FILE AUTHTOKEN` prints `ready N` once all are bound.

use ngrok::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, n, server_addr, ca, authtoken] = &args[..] else {
        anyhow::bail!("usage: idle_agents N SERVER_ADDR CA_FILE AUTHTOKEN");
    };
    let n: usize = n.parse()?;
    let mut held = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (server_addr, ca, authtoken) = (server_addr.clone(), ca.clone(), authtoken.clone());
        pending.spawn(async move {
            let session = ngrok::Session::builder()
                .authtoken(authtoken)
                .server_addr(server_addr)?
                .root_cas(ca)?
                .connect()
                .await?;
            let endpoint = session.http_endpoint().listen().await?;
            anyhow::Ok((session, endpoint))
        });
        // Keep the number of handshakes in flight modest, like agents starting over time.
        if pending.len() >= 50 {
            held.push(pending.join_next().await.expect("a task")??);
        }
    }
    while let Some(done) = pending.join_next().await {
        held.push(done??);
    }
    println!("ready {}", held.len());
    std::future::pending::<()>().await;
    Ok(())
}
