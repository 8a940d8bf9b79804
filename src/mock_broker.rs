//! `KAFKA_BROKERS=mock`: an in-process Kafka-protocol broker (librdkafka's mock cluster) for the embedded demo and
//! for measuring the service's own cost without a real broker's. Nothing survives the process; never for production.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use streams::Topics;

/// A running mock cluster; lives as long as the process (the cluster stops when dropped).
pub struct MockBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl MockBroker {
    /// Starts a one-broker cluster with every topic created (`partitions` each).
    pub fn start(topics: &Topics, partitions: i32) -> anyhow::Result<MockBroker> {
        let cluster = MockCluster::new(1)?;
        for topic in topics.all() {
            cluster.create_topic(topic, partitions, 1)?;
        }
        Ok(MockBroker { cluster })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Delays every answer of the broker by `delay` (a slow or busy broker), for tests.
    #[cfg(test)]
    pub fn delay_answers(&self, delay: std::time::Duration) {
        self.cluster
            .broker_round_trip_time(-1, delay)
            .expect("mock broker round-trip time");
    }
}

/// True when the configured brokers ask for the in-process mock.
pub fn is_mock(brokers: &str) -> bool {
    brokers.trim() == "mock"
}
