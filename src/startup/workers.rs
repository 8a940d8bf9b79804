//! The consuming side's wiring: the stream processor (Postgres, the output producer, the snapshot store, the
//! consumer group member) with its live feed, and the Shopify write-back worker with its Admin API client. The
//! HTTP side is built in the parent module; `Engine` puts both in one process.

use std::sync::Arc;

use streams::SinkConfig;

use crate::configuration::Settings;
use crate::live::fanout::subscribe_forever;
use crate::live::{Channels, FrameSink, LiveConfig, LiveFeed};
use crate::redis_link::RedisTarget;
use crate::score_cache::ScoreCache;
use crate::shopify::admin::paced::PacedClient;
use crate::shopify::admin::throttle::CostThrottle;
use crate::shopify::admin::AdminClient;
use crate::snapshots::{PgSnapshots, SnapshotBackend, SnapshotStore};
use crate::store::Store;
use crate::sync::SyncWorker;

/// Builds the stream processor from settings: Postgres (when `DATABASE_URL` is set, migrated first), the output
/// producer, and the consumer group member.
pub async fn build_processor(
    settings: &Settings,
    clock: std::sync::Arc<dyn actors::Clock>,
) -> anyhow::Result<crate::processor::Processor> {
    use crate::processor::{publish::Publisher, ProcessorConfig, SnapshotSettings};
    // The recorder first, so the families described here land in the exporter `/metrics` renders.
    drop(crate::telemetry::prometheus());
    crate::telemetry::describe_metrics(&settings.topics);
    let store = match &settings.database_url {
        Some(url) => {
            let store = Store::connect_with(url, &settings.postgres)?
                .with_attribution(settings.nudge_rules.attribution);
            store.migrate().await?;
            Some(store)
        }
        None => {
            tracing::warn!(
                "DATABASE_URL is not set: deltas and history are not written to Postgres"
            );
            None
        }
    };
    let sink = crate::processor::publish::output_sink(
        &settings.kafka_brokers,
        settings.processor_delivery_timeout,
        settings.processor_output_linger,
    )
    .build()?;
    let cache = settings
        .redis_enabled
        .then(|| ScoreCache::new(&settings.redis_url, settings.redis_timeout))
        .transpose()?;
    let nudges = crate::widget::desk_config(settings).build(clock.clone());
    // Nudges and erasures go to every instance's desk, so a widget on any instance gets its customer's nudges.
    let relay = settings
        .redis_enabled
        .then(|| crate::widget::relay::NudgeRelay::start(settings, nudges.clone()))
        .transpose()?;
    let gdpr = store
        .clone()
        .map(|store| crate::gdpr::Gdpr::new(store, settings));
    // In memory only for the demo (`WIDGET_DEMO`) without Postgres: a real deployment without Postgres keeps no
    // experiments rather than ones each instance would see differently.
    let ledger = crate::experiments::ledger::ledger(
        store.as_ref(),
        settings.widget_demo,
        settings.nudge_rules,
    );
    let publisher = Publisher {
        sink,
        topics: settings.topics.clone(),
        gdpr,
        rows_order: Default::default(),
        store,
        cache,
        nudges: Some(nudges),
        relay,
        desk_turn: Default::default(),
        nudge_rules: settings.nudge_rules,
        ledger,
    };
    let experiments = publisher.store.clone();
    // In memory (the demo), snapshots serve a partition that comes back to this process, and offsets are never
    // committed, so a restart replays from the start.
    let store = snapshot_store(settings, publisher.store.as_ref())?;
    let processor = ProcessorConfig {
        snapshots: Some(SnapshotSettings {
            store,
            every: settings.snapshot_interval,
        }),
        batch_linger: settings.processor_batch_linger,
        ..ProcessorConfig::new(
            &settings.kafka_brokers,
            &settings.kafka_group_id,
            settings.topics.clone(),
        )
    }
    .with_session_timeout(settings.kafka_session_timeout)
    .with_group_instance_id(settings.kafka_group_instance_id.clone())
    .with_max_poll_interval(settings.kafka_max_poll_interval)
    .with_kafka_debug(settings.kafka_debug.clone())
    .build(publisher, clock)?;
    // Nudges fired before the experiments are known would be outside them, so they are loaded before the start.
    if let Some(store) = experiments {
        crate::experiments::plans::sync(&store, &processor.plans()).await?;
        let every = settings.nudge_rules.plan_refresh;
        crate::experiments::plans::spawn_refresh(store, &processor.plans(), every);
    }
    Ok(processor)
}

/// The processor with its live feed attached, as every role that consumes runs it (`all` and `processor`): frames
/// go through Redis when it is enabled, so dashboards served by any instance (an `ingress` one included) see the
/// merchants this one owns. Returns the channels local dashboards subscribe to.
pub async fn build_live_processor(
    settings: &Settings,
    clock: Arc<dyn actors::Clock>,
) -> anyhow::Result<(crate::processor::Processor, Arc<Channels>)> {
    let mut processor = build_processor(settings, clock).await?;
    let channels = Arc::new(Channels::default());
    let sink = if settings.redis_enabled {
        let client = RedisTarget::open(&settings.redis_url)?;
        tokio::spawn(subscribe_forever(client, channels.clone()));
        FrameSink::redis(
            &settings.redis_url,
            channels.clone(),
            settings.redis_timeout,
        )?
    } else {
        FrameSink::local(channels.clone())
    };
    let live = LiveConfig {
        min_interval: settings.live_frame_interval,
        ..LiveConfig::default()
    };
    let feed = LiveFeed::new(sink, live);
    processor.attach_live(feed.clone());
    tokio::spawn(feed.run(std::future::pending()));
    Ok((processor, channels))
}

/// The store `SNAPSHOT_STORE` names, or Postgres when there is a database, Redis when Redis is enabled, memory
/// otherwise.
fn snapshot_store(settings: &Settings, database: Option<&Store>) -> anyhow::Result<SnapshotStore> {
    let backend = settings.snapshot_store.unwrap_or(match database {
        Some(_) => SnapshotBackend::Postgres,
        None if settings.redis_enabled => SnapshotBackend::Redis,
        None => SnapshotBackend::Memory,
    });
    let group = &settings.kafka_group_id;
    Ok(match (backend, database) {
        (SnapshotBackend::Postgres, Some(db)) => {
            SnapshotStore::Postgres(PgSnapshots::new(db.pool().clone(), group))
        }
        (SnapshotBackend::Postgres, None) => {
            anyhow::bail!("SNAPSHOT_STORE=postgres needs DATABASE_URL")
        }
        (SnapshotBackend::Redis, _) => SnapshotStore::redis(
            &settings.redis_url,
            group,
            std::time::Duration::from_secs(10),
        )?,
        (SnapshotBackend::Memory, _) => SnapshotStore::memory(),
    })
}

/// The Admin API client every role shares: pinned version, paced by the plan's bucket until Shopify reports one.
pub fn admin_client(settings: &Settings) -> PacedClient {
    let throttle = Arc::new(CostThrottle::new(settings.shopify_throttle_plan));
    PacedClient::new(AdminClient::new(settings.shopify_admin.clone()), throttle)
}

/// The write-back worker (`--role sync`): Postgres (migrated), the sealed tokens' keys, its consumer group.
pub async fn build_sync_worker(settings: &Settings) -> anyhow::Result<SyncWorker> {
    let url = settings.database_url.as_deref().ok_or_else(|| {
        anyhow::anyhow!("the sync role needs DATABASE_URL (tokens and written versions)")
    })?;
    let store = Store::connect_with(url, &settings.postgres)?;
    store.migrate().await?;
    let topic = &settings.topics.rfm_updated;
    Ok(SyncWorker {
        consumer: crate::sync::consumer(&settings.kafka_brokers, &settings.sync, topic)?,
        brokers: settings.kafka_brokers.clone(),
        pool: store.pool().clone(),
        keys: settings.keys.clone(),
        admin: admin_client(settings),
        sink: SinkConfig::new(settings.kafka_brokers.clone()).build()?,
        topics: settings.topics.clone(),
        settings: settings.sync.clone(),
    })
}
