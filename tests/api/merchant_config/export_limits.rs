//! Exports against a reader that does not read: each holds a pool connection while its query streams, so they are
//! capped per shop and per instance (429 with `Retry-After`), and one that outlives the time limit is cut short
//! (a truncated body, never a complete-looking one) and gives its place back.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use streams::MerchantId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::spawn_http_with;
use crate::live::{shop, token, LiveApp};

/// Far more rows than fit in the buffers between the query and a reader (their CSV is about 12 MB; the stalled
/// client's receive buffer is pinned small, the server's send buffer grows to 4 MB at most), so the
/// export's query is still streaming while its client reads nothing.
const BIG: i64 = 150_000;

async fn big_shop(pool: &PgPool, shop: &MerchantId) {
    sqlx::query(
        "INSERT INTO customers (merchant_id, customer_id, version, recency, frequency, monetary, score, segment,
                                lifecycle_stage, orders, net_spend, last_order_at)
         SELECT $1, id, 1, 3, 2, 4, 3.1, 'loyal', 'repeat_buyer', 2, 123.45, now()
         FROM generate_series(1, $2::int8) AS id",
    )
    .bind(shop.as_str())
    .bind(BIG)
    .execute(pool)
    .await
    .expect("customer rows");
}

async fn export(app: &LiveApp, shop: &MerchantId) -> reqwest::Response {
    app.client
        .get(format!("{}/api/v1/rfm/export?format=csv", app.address))
        .bearer_auth(token(shop))
        .send()
        .await
        .expect("the app answers")
}

/// An export by a client that reads the response head and then nothing: a raw socket with a small receive buffer
/// (set explicitly, which also turns off the kernel's growing it).
async fn stalled_export(app: &LiveApp, shop: &MerchantId) -> (u16, TcpStream) {
    let addr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let socket = TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(addr).await.expect("connects");
    let request = format!(
        "GET /api/v1/rfm/export?format=csv HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        token(shop)
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, stream)
}

/// The rest of a stalled export's response, to the end of the connection.
async fn drain(mut stream: TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut rest))
        .await
        .expect("the server ends the connection")
        .ok();
    rest
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[actix_web::test]
async fn exports_are_capped_per_shop_and_overall_and_cut_at_the_time_limit() {
    let (app, pool) = spawn_http_with(&[
        ("EXPORT_CONCURRENCY", "2".into()),
        ("EXPORT_CONCURRENCY_PER_SHOP", "1".into()),
        ("EXPORT_TIME_LIMIT_SECS", "3".into()),
    ])
    .await;
    let (a, b, c) = (shop(), shop(), shop());
    big_shop(&pool, &a).await;
    big_shop(&pool, &b).await;

    // Two exports whose readers stall after the headers.
    let (status, held_a) = stalled_export(&app, &a).await;
    assert_eq!(status, 200);
    let again = export(&app, &a).await;
    assert_eq!(again.status(), 429, "one export of a shop at a time");
    assert!(retry_after(&again).is_some_and(|s| s >= 1));
    let (status, held_b) = stalled_export(&app, &b).await;
    assert_eq!(status, 200, "another shop has its own place");
    let third = export(&app, &c).await;
    assert_eq!(third.status(), 429, "two exports on the instance at a time");
    assert!(retry_after(&third).is_some());

    // The time limit ends both queries and frees their places while their readers still hold the responses.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = export(&app, &c).await;
        if response.status() == 200 {
            let body = response.text().await.expect("a small export reads whole");
            assert_eq!(
                body.lines().count(),
                1,
                "c has no customers: the header only"
            );
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the held exports never gave their places back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What the stalled reader gets: a body that ends in an error, never a complete-looking CSV.
    // (The body is chunked: a complete one ends with the zero-length chunk.)
    let cut = drain(held_a).await;
    let header = b"customer_id,segment,recency";
    assert!(
        cut.windows(header.len()).any(|w| w == header),
        "the export had started"
    );
    assert!(
        !cut.ends_with(b"0\r\n\r\n"),
        "an export cut at the time limit must not end cleanly"
    );
    drop(held_b);
    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_logs WHERE action = 'rfm_export'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audits, 3, "refused exports are not audited as exports");
}
