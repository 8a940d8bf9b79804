//! The stand-in's bulk operations: `bulkOperationRunQuery` starts one per shop, `currentBulkOperation` and
//! `node(id:)` report it (CREATED, then RUNNING, then COMPLETED with `objectCount` and `url`), and the JSONL result
//! of the shop's generated orders is served at `GET /standin/bulk/{id}.jsonl`. Shapes follow Shopify's Admin
//! GraphQL documentation; the operation advances one status per status query, so tests see every status without
//! waiting on a clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};

use super::shop_data::GeneratedShop;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Created,
    Running,
    Completed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Created => "CREATED",
            Status::Running => "RUNNING",
            Status::Completed => "COMPLETED",
        }
    }
}

struct Operation {
    id: u64,
    shop: String,
    status: Status,
    /// Status queries seen while running; the operation completes after `BulkState::polls_to_complete`.
    polls: u32,
    result: Option<Bytes>,
    objects: u64,
}

/// Every shop's data and every bulk operation the stand-in has started.
#[derive(Default)]
pub struct BulkState {
    shops: Mutex<HashMap<String, Arc<GeneratedShop>>>,
    operations: Mutex<HashMap<u64, Operation>>,
    next_id: AtomicU64,
    started: AtomicU64,
    /// The stand-in's own address, for result URLs (`http://127.0.0.1:port`).
    pub public_base: Mutex<String>,
    /// Status queries of a running operation before it completes (default 1).
    pub polls_to_complete: u32,
    /// A fault for tests: result downloads break off after this many bytes, as a dropped connection would.
    pub cut_after: Mutex<Option<usize>>,
}

impl std::fmt::Debug for BulkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkState")
            .field("operations_started", &self.operations_started())
            .finish_non_exhaustive()
    }
}

impl BulkState {
    pub fn new(polls_to_complete: u32) -> Self {
        BulkState {
            polls_to_complete,
            next_id: AtomicU64::new(1),
            ..BulkState::default()
        }
    }

    /// Makes `shop`'s order history the generated one.
    pub fn add_shop(&self, shop: &str, data: GeneratedShop) {
        lock(&self.shops).insert(shop.to_owned(), Arc::new(data));
    }

    /// How many bulk operations were started, over all shops (tests check a resumed backfill starts none).
    pub fn operations_started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// The JSONL result of a completed operation.
    pub fn result(&self, id: u64) -> Option<Bytes> {
        lock(&self.operations).get(&id)?.result.clone()
    }

    fn run_query(&self, shop: &str) -> Value {
        let mut operations = lock(&self.operations);
        let busy = operations
            .values()
            .any(|op| op.shop == shop && op.status != Status::Completed);
        if busy {
            return json!({"bulkOperation": null, "userErrors": [{"field": null,
                "message": "A bulk query operation for this app and shop is already in progress."}]});
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst).max(1);
        self.started.fetch_add(1, Ordering::SeqCst);
        operations.insert(
            id,
            Operation {
                id,
                shop: shop.to_owned(),
                status: Status::Created,
                polls: 0,
                result: None,
                objects: 0,
            },
        );
        json!({"bulkOperation": {"id": gid(id), "status": "CREATED"}, "userErrors": []})
    }

    /// Reports an operation, moving it one step on.
    fn report(&self, id: u64) -> Value {
        let mut operations = lock(&self.operations);
        let Some(op) = operations.get_mut(&id) else {
            return Value::Null;
        };
        match op.status {
            Status::Created => op.status = Status::Running,
            Status::Running => {
                op.polls += 1;
                if op.polls >= self.polls_to_complete {
                    self.complete(op);
                }
            }
            Status::Completed => {}
        }
        let url = (op.status == Status::Completed).then(|| {
            format!(
                "{}/standin/bulk/{}.jsonl",
                lock(&self.public_base).as_str(),
                op.id
            )
        });
        json!({
            "id": gid(op.id),
            "status": op.status.as_str(),
            "errorCode": null,
            "objectCount": op.objects.to_string(),
            "url": url,
            "partialDataUrl": null,
        })
    }

    fn complete(&self, op: &mut Operation) {
        let data = lock(&self.shops).get(&op.shop).cloned();
        let mut jsonl = Vec::new();
        if let Some(data) = data {
            // Writing into a Vec cannot fail.
            let _ = data.write_jsonl(&mut jsonl);
            op.objects = data.object_count();
        }
        op.result = Some(Bytes::from(jsonl));
        op.status = Status::Completed;
    }

    fn current(&self, shop: &str) -> Value {
        let latest = lock(&self.operations)
            .values()
            .filter(|op| op.shop == shop)
            .map(|op| op.id)
            .max();
        latest.map_or(Value::Null, |id| self.report(id))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn gid(id: u64) -> String {
    format!("gid://shopify/BulkOperation/{id}")
}

fn parse_gid(raw: &str) -> Option<u64> {
    raw.strip_prefix("gid://shopify/BulkOperation/")?
        .parse()
        .ok()
}

/// Whether a GraphQL request is one for this module (see `server.rs`'s dispatch).
pub fn is_bulk(query: &str) -> bool {
    query.contains("bulkOperationRunQuery")
        || query.contains("currentBulkOperation")
        || (query.contains("node(") && query.contains("BulkOperation"))
}

/// Answers one bulk GraphQL request of `shop`: the body's `data`; the server charges the shop's bucket and adds
/// the cost extension, as for every other call.
pub fn handle(state: &BulkState, shop: &str, body: &Value) -> Value {
    let query = body.get("query").and_then(Value::as_str).unwrap_or("");
    let data = if query.contains("bulkOperationRunQuery") {
        json!({"bulkOperationRunQuery": state.run_query(shop)})
    } else if query.contains("currentBulkOperation") {
        json!({"currentBulkOperation": state.current(shop)})
    } else {
        let id = body
            .pointer("/variables/id")
            .and_then(Value::as_str)
            .and_then(parse_gid);
        let own = id.filter(|id| {
            lock(&state.operations)
                .get(id)
                .is_some_and(|op| op.shop == shop)
        });
        json!({"node": own.map_or(Value::Null, |id| state.report(id))})
    };
    json!({ "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shopify::standin::shop_data::ShopSpec;

    #[test]
    fn an_operation_runs_then_completes_with_its_lines() {
        let state = BulkState::new(1);
        let spec = ShopSpec {
            customers: 5,
            orders: 12,
            now: 1_780_000_000,
            seed: 1,
        };
        state.add_shop("a.myshopify.com", GeneratedShop::generate(spec));
        let run = json!({"query": "mutation { bulkOperationRunQuery(query: \"\") { bulkOperation { id } } }"});
        let started = handle(&state, "a.myshopify.com", &run);
        assert_eq!(
            started.pointer("/data/bulkOperationRunQuery/bulkOperation/status"),
            Some(&json!("CREATED"))
        );
        let again = handle(&state, "a.myshopify.com", &run);
        assert!(again
            .pointer("/data/bulkOperationRunQuery/userErrors/0/message")
            .is_some());
        let poll = json!({"query": "{ currentBulkOperation { id status url } }"});
        let statuses: Vec<Value> = (0..3)
            .map(|_| {
                handle(&state, "a.myshopify.com", &poll)["data"]["currentBulkOperation"]["status"]
                    .clone()
            })
            .collect();
        assert_eq!(
            statuses,
            [json!("RUNNING"), json!("COMPLETED"), json!("COMPLETED")]
        );
        let lines = state.result(1).unwrap();
        assert_eq!(lines.iter().filter(|b| **b == b'\n').count(), 12);
        assert_eq!(
            handle(&state, "b.myshopify.com", &poll)["data"]["currentBulkOperation"],
            Value::Null
        );
    }
}
