//! The `loyalnest-rfm` command line: a thin layer that parses arguments and hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use loyalnest_rfm::configuration::Settings;
use loyalnest_rfm::startup::Application;
use loyalnest_rfm::telemetry;

#[derive(Parser)]
#[command(
    name = "loyalnest-rfm",
    version,
    about = "Real-time RFM segmentation for Shopify loyalty programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service, configured by environment variables (see README).
    Serve {
        /// Which parts to run in this process.
        #[arg(long, value_enum, default_value_t = Role::Ingress)]
        role: Role,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// The webhook ingress only.
    Ingress,
    /// The stream processor (not built yet).
    Processor,
    /// Ingress and processor in one process (the processor is not built yet).
    All,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { role } => serve(role).await,
    }
}

async fn serve(role: Role) -> anyhow::Result<()> {
    if role != Role::Ingress {
        anyhow::bail!(
            "only --role ingress is available in this version; the processor is not built yet"
        );
    }
    let settings = Settings::from_env().context("reading configuration from the environment")?;
    let app = Application::build(&settings).context("starting the HTTP server")?;
    tracing::info!(port = app.port(), brokers = %settings.kafka_brokers, "ingress listening");
    app.run_until_stopped().await.context("HTTP server failed")
}
