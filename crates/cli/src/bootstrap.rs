//! The first start: an account, an API key and an agent authtoken, shown once and saved to
//! `DATA_DIR/bootstrap.json` (mode 0600) for scripts.
//!
//! The secrets reach the file (written whole, then renamed into place and synced) *before* the
//! store commits their hashes. A crash in between leaves a file whose secrets the store does
//! not know, and the next start simply bootstraps again, overwriting it; the other order could
//! leave an account whose secrets nobody will ever see.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use meridian_core::secret::Secret;
use meridian_store::Store;

/// The file's name inside the data directory.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";

/// Creates the first account unless one exists, printing its secrets and a ready `curl` line.
pub async fn ensure(store: &Store, data_dir: &Path, api_url: &str) -> anyhow::Result<()> {
    if store.has_accounts().await? {
        return Ok(());
    }
    let api_key = meridian_store::new_api_key();
    let authtoken = meridian_store::new_authtoken();
    let path = data_dir.join(BOOTSTRAP_FILE);
    write_secrets(&path, &api_key, &authtoken)
        .with_context(|| format!("writing {}", path.display()))?;
    let Some(account) = store.bootstrap(&api_key, &authtoken).await? else {
        // Another process sharing the store bootstrapped first; our secrets mean nothing.
        fs::remove_file(&path).ok();
        return Ok(());
    };
    tracing::info!(%account, file = %path.display(), "created the first account");
    println!(
        "\nMeridian created its first account. These secrets are shown once; they are also in\n\
         {path} (mode 0600).\n\n  API key:          {key}\n  agent authtoken:  {token}\n\n\
         Try the API:\n\n  curl -H \"Authorization: Bearer {key}\" -H \"ngrok-version: 2\" \
         {api_url}/reserved_domains\n",
        path = path.display(),
        key = api_key.expose(),
        token = authtoken.expose(),
    );
    Ok(())
}

fn write_secrets(path: &Path, api_key: &Secret, authtoken: &Secret) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "api_key": api_key.expose(),
        "authtoken": authtoken.expose(),
    });
    let tmp = path.with_extension("json.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(format!("{body:#}\n").as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
