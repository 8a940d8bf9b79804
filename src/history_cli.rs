//! The history commands of the CLI (issue 19): `backfill` (a shop's Shopify order history into the input topics,
//! with a progress bar), `import` (another loyalty app's points export) and `shopify-standin` (the local Admin API
//! stand-in with generated shops, for trying the install, the write-back and the backfill by hand).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use streams::{MerchantId, SinkConfig};

use crate::backfill::{Backfill, Phase, Progress};
use crate::configuration::Settings;
use crate::imports::{ImportStore, Importer, Source, MAX_IMPORT_BYTES};
use crate::shopify::standin::shop_data::{GeneratedShop, ShopSpec};
use crate::shopify::standin::StandinOptions;
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// The shop, as `name.myshopify.com`.
    #[arg(long)]
    pub shop: String,
    /// The shop's Admin API access token; by default the offline token stored at install.
    #[arg(long, env = "SHOPIFY_ACCESS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    #[arg(long)]
    pub shop: String,
    /// `smile` or `loyaltylion`.
    #[arg(long)]
    pub source: String,
    /// The CSV export (at most 10 MB).
    pub file: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StandinArgs {
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: String,
    /// The cost bucket's plan: standard, advanced or plus.
    #[arg(long, default_value = "standard")]
    pub plan: String,
    /// Shops to generate (each with the same counts, a different seed).
    #[arg(long, default_value = "demo-1.myshopify.com")]
    pub shop: Vec<String>,
    #[arg(long, default_value_t = 1_000)]
    pub customers: u64,
    #[arg(long, default_value_t = 3_000)]
    pub orders: u64,
    /// An access token registered for every generated shop (for `backfill --token`); installs get their own by
    /// token exchange.
    #[arg(long, default_value = "standin-token")]
    pub token: String,
}

fn database(settings: &Settings) -> anyhow::Result<Option<Store>> {
    settings
        .database_url
        .as_deref()
        .map(Store::connect_lazy)
        .transpose()
        .context("DATABASE_URL")
}

fn bar_line(p: &Progress) -> String {
    format!(
        "{} {} lines, {} events{}{}",
        p.phase.as_str(),
        p.lines_done,
        p.events_produced,
        if p.lines_failed > 0 {
            format!(", {} unusable", p.lines_failed)
        } else {
            String::new()
        },
        p.bulk_operation_id
            .as_deref()
            .map(|id| format!(" ({id})"))
            .unwrap_or_default()
    )
}

pub async fn backfill(args: &BackfillArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env().context("reading configuration from the environment")?;
    let shop = MerchantId::parse(&args.shop)?;
    let store = database(&settings)?;
    if let Some(store) = &store {
        store.migrate().await.context("applying migrations")?;
    }
    let token = match (&args.token, &store) {
        (Some(token), _) => token.clone(),
        (None, Some(store)) => {
            crate::shopify::access::offline_token(store.pool(), &settings.keys, &shop)
                .await?
                .context(
                    "no offline token is stored for this shop: install the app, or pass --token",
                )?
        }
        (None, None) => {
            anyhow::bail!("pass --token, or set DATABASE_URL to use the token stored at install")
        }
    };
    streams::client_props::install(settings.kafka_client_props.clone())?;
    let sink = SinkConfig::new(settings.kafka_brokers.clone()).build()?;
    let backfill = Backfill::from_settings(&settings, sink, store.as_ref());
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let report = |p: &Progress| {
        if let Some(n) = p.object_count {
            bar.set_length(n);
        }
        bar.set_position(p.lines_done);
        bar.set_message(bar_line(p));
    };
    let outcome = backfill.run(&shop, &token, &report).await;
    bar.finish();
    let progress = outcome?;
    anyhow::ensure!(
        progress.phase == Phase::Completed,
        "backfill ended {}",
        progress.phase.as_str()
    );
    println!("{}", serde_json::to_string(&progress)?);
    Ok(())
}

pub async fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env().context("reading configuration from the environment")?;
    let shop = MerchantId::parse(&args.shop)?;
    let source = Source::parse(&args.source).context("--source is smile or loyaltylion")?;
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("{}", args.file.display()))?
        .len();
    anyhow::ensure!(
        size <= MAX_IMPORT_BYTES as u64,
        "the file is larger than 10 MB"
    );
    let body = std::fs::read(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let store = database(&settings)?;
    if let Some(store) = &store {
        store.migrate().await.context("applying migrations")?;
    }
    streams::client_props::install(settings.kafka_client_props.clone())?;
    let importer = Importer {
        sink: SinkConfig::new(settings.kafka_brokers.clone()).build()?,
        topics: settings.topics.clone(),
        keys: settings.keys.clone(),
        store: store.map_or_else(
            || ImportStore::Memory(Arc::default()),
            |s| ImportStore::Postgres(s.pool().clone()),
        ),
    };
    let status = importer.import(&shop, source, &body).await?;
    for error in &status.errors {
        eprintln!("line {}: {}", error.line, error.reason);
    }
    println!("{}", serde_json::to_string(&status)?);
    Ok(())
}

pub async fn standin(settings: &Settings, args: &StandinArgs) -> anyhow::Result<()> {
    let secret = String::from_utf8_lossy(settings.webhook_secrets.current()).into_owned();
    let options = StandinOptions {
        plan: args.plan.parse().map_err(anyhow::Error::msg)?,
        bulk_polls: 2,
        ..StandinOptions::new(&settings.shopify_api_key, &secret)
    };
    let standin = crate::shopify::standin::start(options, &args.addr)?;
    for (n, shop) in args.shop.iter().enumerate() {
        let spec = ShopSpec {
            customers: args.customers,
            orders: args.orders,
            now: chrono::Utc::now().timestamp(),
            seed: n as u64 + 1,
        };
        standin
            .state
            .bulk
            .add_shop(shop, GeneratedShop::generate(spec));
        // One token per shop, as Shopify issues them: `--token` itself when there is one shop.
        let token = match args.shop.len() {
            1 => args.token.clone(),
            _ => format!("{}-{}", args.token, n + 1),
        };
        standin
            .state
            .register_token(shop, &token)
            .map_err(anyhow::Error::msg)?;
        println!("access token of {shop}: {token}");
    }
    println!(
        "Shopify Admin stand-in: SHOPIFY_ADMIN_URL={}",
        standin.address
    );
    crate::startup::shutdown_signal().await;
    standin.stop().await;
    Ok(())
}
