//! The sockets under test (shoppers' widgets or merchants' dashboards): opened at a bounded rate from several
//! loopback source addresses, each held by a task that only reads and hands every text frame to its socket's own
//! reader. The first arrival of each order's result (a nudge, or a delta on some dashboard) is stamped into the hub,
//! which the report reads; every task is owned by one `JoinSet` and aborted at the end.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::Options;

/// Handshakes in flight at most, whatever the rate.
const HANDSHAKES: usize = 512;
/// A handshake that takes longer counts as failed, so the opening phase always ends.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Per-socket read buffer: nudges are a few hundred bytes, and 50,000 sockets with tungstenite's default 128 KiB
/// would make the generator, not the server, the thing measured.
const READ_BUFFER: usize = 4 * 1024;

/// What the sockets saw, per shopper (index = customer − first customer). Times are nanoseconds since `epoch`,
/// 0 meaning not yet.
pub struct Hub {
    pub epoch: Instant,
    first: u64,
    pub sent_at: Vec<AtomicU64>,
    pub accepted_at: Vec<AtomicU64>,
    pub arrived_at: Vec<AtomicU64>,
    arrived: Notify,
    tasks: Mutex<JoinSet<()>>,
    /// Sockets that ended before the run did (closed by the server, or broken): their results cannot arrive.
    pub ended_early: AtomicU64,
}

/// How the opening went.
pub struct Opened {
    pub open: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
}

impl Hub {
    pub fn new(customers: &[u64]) -> Hub {
        let slots = || (0..customers.len()).map(|_| AtomicU64::new(0)).collect();
        Hub {
            epoch: Instant::now(),
            first: customers.first().copied().unwrap_or(0),
            sent_at: slots(),
            accepted_at: slots(),
            arrived_at: slots(),
            arrived: Notify::new(),
            tasks: Mutex::new(JoinSet::new()),
            ended_early: AtomicU64::new(0),
        }
    }

    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos().max(1) as u64
    }

    pub fn slot(&self, customer: u64) -> usize {
        (customer - self.first) as usize
    }

    /// The slot of `customer` when it is one of this run's.
    pub fn slot_of(&self, customer: u64) -> Option<usize> {
        let slot = customer.checked_sub(self.first)? as usize;
        (slot < self.sent_at.len()).then_some(slot)
    }

    /// Stamps the first arrival of `slot`'s result (once its order was sent).
    pub fn arrived(&self, slot: usize) {
        let sent = self.sent_at[slot].load(Ordering::Acquire);
        if sent == 0 {
            return;
        }
        let now = self.now();
        if self.arrived_at[slot]
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.arrived.notify_waiters();
        }
    }

    /// Waits until every slot in `accepted` has its nudge, or the deadline.
    pub async fn wait_for(&self, accepted: &[usize], deadline: Instant) {
        loop {
            let notified = self.arrived.notified();
            let missing = accepted
                .iter()
                .filter(|s| self.arrived_at[**s].load(Ordering::Acquire) == 0)
                .count();
            if missing == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    pub fn close_all(&self) {
        self.tasks.lock().expect("not poisoned").abort_all();
    }
}

/// What reads one socket's text frames.
pub type Reader = Box<dyn FnMut(&str) + Send>;

/// One socket to open: the bearer token it presents and its reader.
pub struct Planned {
    pub token: String,
    pub reader: Reader,
}

/// The widget sockets: one per shopper, in customer order, each stamping its shopper's first nudge.
pub fn widget_sockets(tokens: &HashMap<u64, String>, hub: &Arc<Hub>) -> Vec<Planned> {
    let mut ordered: Vec<(&u64, &String)> = tokens.iter().collect();
    ordered.sort();
    ordered
        .into_iter()
        .map(|(customer, token)| {
            let (hub, slot) = (hub.clone(), hub.slot(*customer));
            let reader: Reader = Box::new(move |text: &str| {
                if text.contains("\"nudge_id\"") {
                    hub.arrived(slot);
                }
            });
            Planned {
                token: token.clone(),
                reader,
            }
        })
        .collect()
}

/// Opens the planned sockets on `path` at `connect_rate` per second. Each socket's task connects, reports how that
/// went, then holds the socket until the end, so early sockets are read (and their pings answered) while later ones
/// open.
pub async fn open_all(
    options: &Options,
    path: &str,
    planned: Vec<Planned>,
    hub: &Arc<Hub>,
) -> Opened {
    let started = Instant::now();
    let url = options.base_url.replacen("http", "ws", 1) + path;
    let server: SocketAddr = tokio::net::lookup_host(url_authority(&options.base_url))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let gate = Arc::new(Semaphore::new(HANDSHAKES));
    let mut pace = tokio::time::interval(Duration::from_secs_f64(
        1.0 / options.connect_rate.max(1) as f64,
    ));
    let (report, mut outcomes) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    let total = planned.len();
    for (n, Planned { token, reader }) in planned.into_iter().enumerate() {
        pace.tick().await;
        let permit = gate.clone().acquire_owned().await.expect("never closed");
        let source = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (n as u8 % options.source_ips.max(1)),
        ));
        let (url, report, hub_of_task) = (url.clone(), report.clone(), hub.clone());
        hub.tasks.lock().expect("not poisoned").spawn(async move {
            let connected =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(&url, server, source, &token))
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!("no handshake within {HANDSHAKE_TIMEOUT:?}"))
                    });
            drop(permit);
            match connected {
                Ok(ws) => {
                    let _ = report.send(Ok(()));
                    hold(ws, reader).await;
                    hub_of_task.ended_early.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let _ = report.send(Err(e.to_string()));
                }
            }
        });
    }
    let mut opened = Opened {
        open: 0,
        failed: 0,
        first_error: None,
        seconds: 0.0,
    };
    for _ in 0..total {
        match outcomes.recv().await {
            Some(Ok(())) => opened.open += 1,
            Some(Err(e)) => {
                opened.failed += 1;
                opened.first_error.get_or_insert(e);
            }
            None => break,
        }
    }
    opened.seconds = started.elapsed().as_secs_f64();
    opened
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(
    url: &str,
    server: SocketAddr,
    source: IpAddr,
    token: &str,
) -> anyhow::Result<Socket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("bearer, {token}").parse()?,
    );
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// Reads until the server closes; pings are answered by tungstenite as part of reading.
async fn hold(mut ws: Socket, mut reader: Reader) {
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message {
            reader(text.as_str());
        }
    }
}

fn url_authority(base_url: &str) -> String {
    base_url
        .split("://")
        .nth(1)
        .unwrap_or(base_url)
        .trim_end_matches('/')
        .to_owned()
}
