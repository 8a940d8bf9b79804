//! Kafka topic names. Every name is configurable (`KAFKA_TOPIC_<NAME>`), and an optional prefix lets several
//! environments, or several tests, share one cluster without seeing each other's records.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    pub orders_create: String,
    pub orders_cancelled: String,
    pub refunds_create: String,
    pub customer_created: String,
    pub points_earned: String,
    pub points_redeemed: String,
    pub customers_redact: String,
    pub customers_data_request: String,
    pub shop_redact: String,
    /// Saved merchant configurations (`events::ConfigChanged`), an input like the others.
    pub rfm_config: String,
    pub rfm_updated: String,
    pub churn_risk_detected: String,
    pub rfm_task: String,
    pub dlq: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics::with_prefix("")
    }
}

impl Topics {
    /// The default names (DESIGN.md §3), each preceded by `prefix`.
    pub fn with_prefix(prefix: &str) -> Self {
        let t = |name: &str| format!("{prefix}{name}");
        Topics {
            orders_create: t("orders.create"),
            orders_cancelled: t("orders.cancelled"),
            refunds_create: t("refunds.create"),
            customer_created: t("customer.created"),
            points_earned: t("points.earned"),
            points_redeemed: t("points.redeemed"),
            customers_redact: t("customers.redact"),
            customers_data_request: t("customers.data_request"),
            shop_redact: t("shop.redact"),
            rfm_config: t("rfm.config"),
            rfm_updated: t("rfm.updated"),
            churn_risk_detected: t("churn_risk.detected"),
            rfm_task: t("rfm.task"),
            dlq: t("rfm.dlq"),
        }
    }

    /// Overrides names from `lookup("KAFKA_TOPIC_ORDERS_CREATE")`-style variables; the caller passes the lookup
    /// so this stays testable without touching the process environment.
    pub fn overridden(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        for (var, slot) in self.slots_mut() {
            if let Some(name) =
                lookup(&format!("KAFKA_TOPIC_{var}")).filter(|n| !n.trim().is_empty())
            {
                *slot = name.trim().to_owned();
            }
        }
        self
    }

    fn slots_mut(&mut self) -> [(&'static str, &mut String); 14] {
        [
            ("ORDERS_CREATE", &mut self.orders_create),
            ("ORDERS_CANCELLED", &mut self.orders_cancelled),
            ("REFUNDS_CREATE", &mut self.refunds_create),
            ("CUSTOMER_CREATED", &mut self.customer_created),
            ("POINTS_EARNED", &mut self.points_earned),
            ("POINTS_REDEEMED", &mut self.points_redeemed),
            ("CUSTOMERS_REDACT", &mut self.customers_redact),
            ("CUSTOMERS_DATA_REQUEST", &mut self.customers_data_request),
            ("SHOP_REDACT", &mut self.shop_redact),
            ("RFM_CONFIG", &mut self.rfm_config),
            ("RFM_UPDATED", &mut self.rfm_updated),
            ("CHURN_RISK_DETECTED", &mut self.churn_risk_detected),
            ("RFM_TASK", &mut self.rfm_task),
            ("DLQ", &mut self.dlq),
        ]
    }

    /// Topics the processor consumes.
    pub fn inputs(&self) -> Vec<&str> {
        vec![
            &self.orders_create,
            &self.orders_cancelled,
            &self.refunds_create,
            &self.customer_created,
            &self.points_earned,
            &self.points_redeemed,
            &self.customers_redact,
            &self.customers_data_request,
            &self.shop_redact,
            &self.rfm_config,
        ]
    }

    /// Every topic, for creating them in tests and dev clusters.
    pub fn all(&self) -> Vec<&str> {
        let mut all = self.inputs();
        all.extend([
            self.rfm_updated.as_str(),
            self.churn_risk_detected.as_str(),
            self.rfm_task.as_str(),
            self.dlq.as_str(),
        ]);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_prefix_and_overrides() {
        assert_eq!(Topics::default().orders_create, "orders.create");
        let t = Topics::with_prefix("t1.")
            .overridden(|var| (var == "KAFKA_TOPIC_DLQ").then(|| "dead".to_owned()));
        assert_eq!(t.refunds_create, "t1.refunds.create");
        assert_eq!(t.dlq, "dead");
        assert_eq!(t.all().len(), 14);
        assert!(t.inputs().contains(&"t1.rfm.config"));
    }
}
