//! How many exports may read Postgres at once, per shop and on this instance, and for how long. An export holds
//! one pool connection for as long as its query streams, and the query streams only as fast as the client reads
//! (the channel in `export` is bounded on purpose), so without a cap a few slow downloads would take the pool that
//! every other read and every save needs. A refused export is answered 429 with `Retry-After`; one that outlives
//! the time limit is cut short (the client sees a truncated body) and gives its connection back.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use streams::MerchantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The caps, from configuration (`EXPORT_CONCURRENCY`, `EXPORT_CONCURRENCY_PER_SHOP`, `EXPORT_TIME_LIMIT_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportLimits {
    /// Exports at once on this instance, all shops together.
    pub total: usize,
    /// Exports at once of one shop on this instance.
    pub per_shop: usize,
    /// Longest an export may stream before it is cut.
    pub time_limit: Duration,
}

impl Default for ExportLimits {
    fn default() -> Self {
        // The pool holds 8 connections (`Store::connect_lazy`): exports may take 3 of them, one shop 2.
        ExportLimits {
            total: 3,
            per_shop: 2,
            time_limit: Duration::from_secs(600),
        }
    }
}

impl ExportLimits {
    pub fn build(self) -> ExportGate {
        ExportGate {
            limits: self,
            total: Arc::new(Semaphore::new(self.total)),
            shops: Arc::new(DashMap::new()),
        }
    }
}

/// The shared counters; one per instance.
pub struct ExportGate {
    limits: ExportLimits,
    total: Arc<Semaphore>,
    shops: Arc<DashMap<MerchantId, usize>>,
}

/// Why an export may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this shop already has the most exports running at once; retry when one has finished")]
    Shop,
    #[error("the server is running the most exports it takes at once; retry shortly")]
    Instance,
}

impl ExportGate {
    pub fn time_limit(&self) -> Duration {
        self.limits.time_limit
    }

    /// A place for one export of `shop`, held until the permit is dropped.
    pub fn admit(&self, shop: &MerchantId) -> Result<ExportPermit, Refused> {
        let shop_place = {
            let mut running = self.shops.entry(shop.clone()).or_insert(0);
            if *running >= self.limits.per_shop {
                return Err(Refused::Shop);
            }
            *running += 1;
            ShopPlace {
                shops: self.shops.clone(),
                shop: shop.clone(),
            }
        };
        // Dropping `shop_place` on this error gives the shop's place back.
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Instance)?;
        Ok(ExportPermit {
            _shop: shop_place,
            _total: total,
        })
    }
}

/// One running export; gives both of its places back when dropped.
pub struct ExportPermit {
    _shop: ShopPlace,
    _total: OwnedSemaphorePermit,
}

struct ShopPlace {
    shops: Arc<DashMap<MerchantId, usize>>,
    shop: MerchantId,
}

impl Drop for ShopPlace {
    fn drop(&mut self) {
        // Shops with nothing running are removed, so the map holds only shops exporting now.
        self.shops.remove_if_mut(&self.shop, |_, running| {
            *running = running.saturating_sub(1);
            *running == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(name: &str) -> MerchantId {
        MerchantId::parse(&format!("{name}.myshopify.com")).unwrap()
    }

    #[test]
    fn places_are_capped_per_shop_and_overall_and_given_back() {
        let gate = ExportLimits {
            total: 3,
            per_shop: 2,
            time_limit: Duration::from_secs(1),
        }
        .build();
        let (a, b, c) = (shop("a"), shop("b"), shop("c"));
        let a1 = gate.admit(&a).unwrap();
        let _a2 = gate.admit(&a).unwrap();
        assert_eq!(gate.admit(&a).err(), Some(Refused::Shop));
        let b1 = gate.admit(&b).unwrap();
        assert_eq!(gate.admit(&c).err(), Some(Refused::Instance));
        // A refusal by the instance did not keep c's place.
        assert!(gate.shops.get(&c).is_none());
        drop(b1);
        let _c1 = gate.admit(&c).unwrap();
        drop(a1);
        assert_eq!(*gate.shops.get(&a).unwrap(), 1);
        let _a3 = gate.admit(&a).unwrap();
        assert_eq!(gate.admit(&b).err(), Some(Refused::Instance));
    }
}
