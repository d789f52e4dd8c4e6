//! `meridian pop`: the operator's PoP commands, over the API's `/pops`. Draining a PoP makes
//! the DNS server stop naming it wherever a domain's set has another PoP available.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::bootstrap::BOOTSTRAP_FILE;

/// `meridian pop` flags.
#[derive(Debug, Args)]
pub struct PopArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: PopAction,
    /// The API's URL.
    #[arg(
        long,
        env = "MERIDIAN_API_URL",
        default_value = "http://127.0.0.1:7180",
        global = true
    )]
    pub api_url: String,
    /// The operator's API key; default: the one in DATA_DIR/bootstrap.json.
    #[arg(long, env = "MERIDIAN_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Where `meridian serve` keeps its data (to find bootstrap.json).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// The PoP commands.
#[derive(Debug, Subcommand)]
pub enum PopAction {
    /// List the PoPs and whether each is drained.
    List,
    /// Stop DNS from naming a PoP while others of a domain's set are available.
    Drain {
        /// PoP code: us, us-cal-1, eu, au, ap, jp, sa or in.
        code: String,
    },
    /// Put a drained PoP back into DNS answers.
    Undrain {
        /// PoP code.
        code: String,
    },
}

/// Runs `meridian pop …`, printing one line per PoP.
pub async fn run(args: PopArgs) -> anyhow::Result<()> {
    let key = match args.api_key {
        Some(key) => key,
        None => key_from_bootstrap(args.data_dir)?,
    };
    let client = reqwest::Client::new();
    let base = args.api_url.trim_end_matches('/');
    let request = match &args.action {
        PopAction::List => client.get(format!("{base}/pops")),
        PopAction::Drain { code } | PopAction::Undrain { code } => {
            let drained = matches!(args.action, PopAction::Drain { .. });
            client
                .patch(format!("{base}/pops/{code}"))
                .json(&serde_json::json!({ "drained": drained }))
        }
    };
    let response = request
        .bearer_auth(key)
        .header("ngrok-version", "2")
        .send()
        .await
        .with_context(|| format!("calling the API at {base}"))?;
    let status = response.status();
    let body: Value = response.json().await.context("reading the API's answer")?;
    if !status.is_success() {
        bail!(
            "the API refused ({status}): {}",
            body["msg"].as_str().unwrap_or("no message")
        );
    }
    let pops = match body.get("pops") {
        Some(Value::Array(pops)) => pops.clone(),
        _ => vec![body],
    };
    for pop in pops {
        println!(
            "{:<9} {:<12} {}",
            pop["code"].as_str().unwrap_or("?"),
            pop["city"].as_str().unwrap_or("?"),
            if pop["drained"] == Value::Bool(true) {
                "drained"
            } else {
                "in service"
            }
        );
    }
    Ok(())
}

fn key_from_bootstrap(data_dir: Option<PathBuf>) -> anyhow::Result<String> {
    let dir = match data_dir {
        Some(dir) => dir,
        None => crate::config::default_data_dir()?,
    };
    let path = dir.join(BOOTSTRAP_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (or pass --api-key / MERIDIAN_API_KEY)",
            path.display()
        )
    })?;
    let json: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    json["api_key"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} holds no api_key", path.display()))
}
