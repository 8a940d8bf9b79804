//! A split deployment: one `ingress` instance takes the webhooks and serves the dashboards, two `processor`
//! instances share the consumer group. The processors own the merchants' state, so the frames a merchant's
//! dashboard shows must travel from whichever processor owns the shop to the ingress (through Redis).

use super::*;
use crate::live::{count, frames_until, open_socket, post_order, shop};

#[actix_web::test]
async fn a_dashboard_on_the_ingress_receives_frames_from_the_processors() {
    let scenario = Scenario::new("split").await;
    let mut ingress = scenario.instance();
    ingress.role = "ingress";
    let mut processors = [scenario.instance(), scenario.instance()];
    ingress.start();
    for processor in &mut processors {
        processor.role = "processor";
        processor.start();
    }
    let address = ingress.address();
    eventually(
        "the ingress to listen",
        Duration::from_secs(60),
        async || reqwest::get(format!("{address}/health")).await.is_ok(),
    )
    .await;

    let shop = shop();
    let (mut socket, _) = open_socket(&address, &token(&shop))
        .await
        .expect("the dashboard socket opens on the ingress");
    // An order placed yesterday, $20: R5 F1 M1, a new customer.
    post_order(&address, &shop, 1, 1, "20.00", 1).await;
    let frames = frames_until(&mut socket, Duration::from_secs(90), |frame| {
        count(frame, "new") == 1
    })
    .await;
    assert!(
        frames.iter().all(|f| count(f, "new") <= 1),
        "one customer, counted once"
    );
    for processor in &mut processors {
        processor.stop();
    }
    ingress.stop();
}
