//! The per-customer aggregate: what the engine remembers about one customer, and how events change it.
//!
//! Shopify delivers at least once and in any order, so every fact is applied as a join on a per-order record:
//! flags only ever get set, an order's total is taken from its create event whenever that arrives, and refunds are
//! keyed by refund id. Applying the same set of facts in any order, with any duplicates, gives the same state.
//! The state is kept small (one 20-byte record per order, rare data boxed behind a pointer) because millions of
//! customers live in memory at once.

use crate::money::Money;
use crate::time::Timestamp;

const CREATED: u8 = 1;
const CANCELLED: u8 = 2;
/// Test orders and voided payments never count, but the record stays so a later duplicate is recognised.
const EXCLUDED: u8 = 4;
const FLAG_BITS: u32 = 3;
const FLAG_MASK: i64 = (1 << FLAG_BITS) - 1;
/// The balance keeps the 61 bits the flags leave: ±1.15·10^18 minor units, far past any order.
const BALANCE_MAX: i64 = i64::MAX >> FLAG_BITS;
const BALANCE_MIN: i64 = i64::MIN >> FLAG_BITS;

/// One order as a customer's aggregate keeps it: 20 bytes. Packed to 4-byte alignment so three fields take 20
/// bytes rather than 24, with the three flag bits in the low bits of the balance word; a resident customer holds
/// one per order, which makes this the largest part of the engine's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct OrderRecord {
    /// Private like the rest: a reference to a field of a packed struct may be unaligned, so callers get copies.
    order_id: u64,
    /// `balance << 3 | flags`. The balance is the order's total minus its refunds. Refunds that arrive before the
    /// order are subtracted from zero and the total is added when the order arrives, so one field serves both
    /// orders of arrival.
    balance_flags: i64,
    placed_at: u32,
}

impl OrderRecord {
    fn new(order_id: u64) -> Self {
        OrderRecord {
            order_id,
            balance_flags: 0,
            placed_at: 0,
        }
    }

    fn balance(&self) -> i64 {
        self.balance_flags >> FLAG_BITS
    }

    fn flags(&self) -> u8 {
        (self.balance_flags & FLAG_MASK) as u8
    }

    fn set_balance(&mut self, balance: i64) {
        let flags = self.balance_flags & FLAG_MASK;
        self.balance_flags = (balance.clamp(BALANCE_MIN, BALANCE_MAX) << FLAG_BITS) | flags;
    }

    fn set_flags(&mut self, flags: u8) {
        self.balance_flags |= i64::from(flags) & FLAG_MASK;
    }

    pub fn order_id(&self) -> u64 {
        self.order_id
    }

    /// Its create event has arrived.
    pub fn created(&self) -> bool {
        self.flags() & CREATED != 0
    }

    /// Created, not cancelled, not a test or voided order.
    pub fn counts(&self) -> bool {
        self.flags() & (CREATED | CANCELLED | EXCLUDED) == CREATED
    }

    /// Net contribution; a refund larger than the order (shipping refunds, adjustments) floors at zero rather
    /// than eating into the customer's other orders.
    pub fn net(&self) -> Money {
        Money::from_minor(self.balance().max(0))
    }

    pub fn placed_at(&self) -> Timestamp {
        Timestamp::from_compact(self.placed_at)
    }

    /// The stored fields, for codecs that persist state (snapshots): order id, balance in minor units (total
    /// minus refunds, negative while only refunds have arrived), placed-at in compact seconds, flag bits.
    pub fn parts(&self) -> (u64, i64, u32, u8) {
        (self.order_id, self.balance(), self.placed_at, self.flags())
    }

    /// The inverse of [`OrderRecord::parts`]; `None` for flag bits this build does not know. A balance past the
    /// 61 bits kept (stored by a build that kept 64) saturates, as it would have live.
    pub fn from_parts(order_id: u64, balance: i64, placed_at: u32, flags: u8) -> Option<Self> {
        let known = flags & !(CREATED | CANCELLED | EXCLUDED) == 0;
        let balance = balance.clamp(BALANCE_MIN, BALANCE_MAX);
        known.then_some(OrderRecord {
            order_id,
            balance_flags: (balance << FLAG_BITS) | i64::from(flags),
            placed_at,
        })
    }
}

/// A fact about a customer, already normalised from its Kafka event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    OrderPlaced {
        order_id: u64,
        total: Money,
        placed_at: Timestamp,
        /// Test order or voided payment.
        excluded: bool,
        /// Created already cancelled.
        cancelled: bool,
    },
    OrderCancelled {
        order_id: u64,
    },
    Refunded {
        order_id: u64,
        refund_id: u64,
        amount: Money,
    },
    /// Points earned (positive) or redeemed (negative), keyed by a hash of the event id.
    Points {
        event_key: u64,
        delta: i64,
        at: Timestamp,
    },
    CustomerCreated {
        at: Timestamp,
    },
}

impl Fact {
    /// The order the fact is about, if any.
    pub fn order_id(&self) -> Option<u64> {
        match *self {
            Fact::OrderPlaced { order_id, .. }
            | Fact::OrderCancelled { order_id }
            | Fact::Refunded { order_id, .. } => Some(order_id),
            Fact::Points { .. } | Fact::CustomerCreated { .. } => None,
        }
    }
}

/// Data most customers never have, kept out of line so the common case costs one pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Extra {
    refund_ids: Vec<u64>,
    points_event_keys: Vec<u64>,
    points: i64,
}

/// What the orders add up to, as scoring sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub orders: u32,
    pub net: Money,
    pub first_order: Option<Timestamp>,
    pub last_order: Option<Timestamp>,
}

/// An aggregate's stored fields exactly as kept, for codecs that persist state (snapshots). Times are compact
/// seconds since 2000-01-01, 0 meaning never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateParts<'a> {
    /// Strictly ascending by order id.
    pub orders: &'a [OrderRecord],
    /// Strictly ascending.
    pub refund_ids: &'a [u64],
    /// Strictly ascending.
    pub points_event_keys: &'a [u64],
    pub points: i64,
    pub first_seen: u32,
    pub last_engaged: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerAggregate {
    /// Sorted by order id.
    orders: Box<[OrderRecord]>,
    extra: Option<Box<Extra>>,
    first_seen: u32,
    last_engaged: u32,
}

impl CustomerAggregate {
    /// Applies a fact; `false` when it changed nothing (a duplicate or replay).
    pub fn apply(&mut self, fact: &Fact) -> bool {
        match *fact {
            Fact::OrderPlaced {
                order_id,
                total,
                placed_at,
                excluded,
                cancelled,
            } => self.with_order(order_id, |o| {
                if o.flags() & CREATED != 0 {
                    return false;
                }
                o.set_balance(o.balance().saturating_add(total.minor()));
                o.placed_at = placed_at.to_compact();
                o.set_flags(
                    CREATED
                        | if excluded { EXCLUDED } else { 0 }
                        | if cancelled { CANCELLED } else { 0 },
                );
                true
            }),
            Fact::OrderCancelled { order_id } => self.with_order(order_id, |o| {
                let fresh = o.flags() & CANCELLED == 0;
                o.set_flags(CANCELLED);
                fresh
            }),
            Fact::Refunded {
                order_id,
                refund_id,
                amount,
            } => {
                if !insert_sorted(&mut self.extra_mut().refund_ids, refund_id) {
                    return false;
                }
                self.with_order(order_id, |o| {
                    o.set_balance(o.balance().saturating_sub(amount.minor().max(0)));
                    true
                })
            }
            Fact::Points {
                event_key,
                delta,
                at,
            } => {
                let extra = self.extra_mut();
                if !insert_sorted(&mut extra.points_event_keys, event_key) {
                    return false;
                }
                extra.points = extra.points.saturating_add(delta);
                self.last_engaged = self.last_engaged.max(at.to_compact());
                true
            }
            Fact::CustomerCreated { at } => {
                let at = at.to_compact();
                if self.first_seen != 0 && self.first_seen <= at {
                    return false;
                }
                self.first_seen = at;
                true
            }
        }
    }

    fn with_order(&mut self, order_id: u64, change: impl FnOnce(&mut OrderRecord) -> bool) -> bool {
        let index = match self
            .orders
            .binary_search_by_key(&order_id, OrderRecord::order_id)
        {
            Ok(i) => i,
            Err(i) => {
                // A boxed slice grows by one on each new order: customers have few orders, and the exact fit
                // saves the spare capacity a Vec would keep for every customer.
                let mut orders = std::mem::take(&mut self.orders).into_vec();
                orders.insert(i, OrderRecord::new(order_id));
                self.orders = orders.into_boxed_slice();
                i
            }
        };
        change(&mut self.orders[index])
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    pub fn orders(&self) -> &[OrderRecord] {
        &self.orders
    }

    /// The record of `order_id`, if a fact about it has been applied.
    pub fn order(&self, order_id: u64) -> Option<&OrderRecord> {
        let at = self
            .orders
            .binary_search_by_key(&order_id, OrderRecord::order_id)
            .ok()?;
        self.orders.get(at)
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for order in self.orders.iter().filter(|o| o.counts()) {
            let at = order.placed_at();
            totals.orders += 1;
            totals.net = totals.net.saturating_add(order.net());
            totals.first_order = Some(totals.first_order.map_or(at, |f| f.min(at)));
            totals.last_order = Some(totals.last_order.map_or(at, |l| l.max(at)));
        }
        totals
    }

    pub fn points(&self) -> i64 {
        self.extra.as_ref().map_or(0, |e| e.points)
    }

    /// Latest engagement: an order or a points event, whichever is later.
    pub fn last_engaged(&self) -> Option<Timestamp> {
        let last_order = self
            .totals()
            .last_order
            .map(Timestamp::to_compact)
            .unwrap_or(0);
        let compact = self.last_engaged.max(last_order);
        (compact != 0).then(|| Timestamp::from_compact(compact))
    }

    pub fn first_seen(&self) -> Option<Timestamp> {
        (self.first_seen != 0).then(|| Timestamp::from_compact(self.first_seen))
    }

    /// Heap bytes owned by this aggregate, for the memory figures.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.orders)
            + self.extra.as_ref().map_or(0, |e| {
                std::mem::size_of::<Extra>()
                    + 8 * (e.refund_ids.capacity() + e.points_event_keys.capacity())
            })
    }
}

/// Persistence support, kept apart from the update path.
impl CustomerAggregate {
    pub fn parts(&self) -> AggregateParts<'_> {
        let extra = self.extra.as_deref();
        AggregateParts {
            orders: &self.orders,
            refund_ids: extra.map_or(&[], |e| &e.refund_ids),
            points_event_keys: extra.map_or(&[], |e| &e.points_event_keys),
            points: self.points(),
            first_seen: self.first_seen,
            last_engaged: self.last_engaged,
        }
    }

    /// Rebuilds an aggregate from [`CustomerAggregate::parts`], with exactly sized allocations. `None` when the
    /// parts are not strictly ascending, since every lookup and idempotency check binary-searches them.
    pub fn from_parts(parts: AggregateParts<'_>) -> Option<Self> {
        if !strictly_ascending(parts.orders.iter().map(OrderRecord::order_id))
            || !strictly_ascending(parts.refund_ids.iter().copied())
            || !strictly_ascending(parts.points_event_keys.iter().copied())
        {
            return None;
        }
        // Extra exists exactly when a refund or points fact was applied, which always leaves a key behind.
        let has_extra = !parts.refund_ids.is_empty()
            || !parts.points_event_keys.is_empty()
            || parts.points != 0;
        Some(CustomerAggregate {
            orders: parts.orders.into(),
            extra: has_extra.then(|| {
                Box::new(Extra {
                    refund_ids: parts.refund_ids.to_vec(),
                    points_event_keys: parts.points_event_keys.to_vec(),
                    points: parts.points,
                })
            }),
            first_seen: parts.first_seen,
            last_engaged: parts.last_engaged,
        })
    }
}

fn strictly_ascending(mut keys: impl Iterator<Item = u64>) -> bool {
    let mut prev = None;
    keys.all(|k| prev.replace(k).is_none_or(|p| p < k))
}

fn insert_sorted(keys: &mut Vec<u64>, key: u64) -> bool {
    match keys.binary_search(&key) {
        Ok(_) => false,
        Err(i) => {
            keys.insert(i, key);
            true
        }
    }
}

#[cfg(test)]
mod tests;
