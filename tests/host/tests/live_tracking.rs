//! Live order tracking (Server-Sent Events through the gateway) and per-caller rate limits,
//! black box over HTTP against the real `.wasm` files on the test host.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use shop_domain::auth::Role;
use support::{App, Flavour, scenarios, staff, start, start_with, token};

scenarios!(
    an_order_stream_follows_every_change_live_and_ends_after_delivery,
    last_event_id_resumes_without_gaps_or_repeats,
    the_staff_stream_follows_all_orders_with_heartbeats_and_ends_on_time,
    streams_check_who_asks_and_what_they_send,
    each_caller_gets_its_own_request_budget,
    many_open_streams_each_get_every_change,
);

/// One parsed Server-Sent Event.
#[derive(Debug, Clone)]
struct Event {
    name: String,
    id: i64,
    data: Value,
}

/// An open event stream read chunk by chunk.
struct Stream {
    response: reqwest::Response,
    buffer: String,
    comments: usize,
}

impl Stream {
    /// Opens `path` with `token` and `Last-Event-ID` when given; panics unless 200.
    async fn open(app: &App, path: &str, token: &str, last_event_id: Option<i64>) -> Stream {
        let response = request(app, path, token, last_event_id).await;
        assert_eq!(response.status(), 200, "stream {path} opens");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Stream {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event; `None` when the stream ended. Panics after `timeout` without one.
    async fn next(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.next_event())
            .await
            .expect("an event or the end of the stream in time")
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let mut event = Event {
                    name: String::new(),
                    id: -1,
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event.name = name.to_owned();
                    } else if let Some(id) = line.strip_prefix("id: ") {
                        event.id = id.parse().expect("numeric event id");
                    } else if let Some(line) = line.strip_prefix("data: ") {
                        data.push_str(line);
                    }
                }
                event.data = serde_json::from_str(&data).expect("event data is JSON");
                return Some(event);
            }
            match self.response.chunk().await.expect("stream readable") {
                Some(chunk) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                None => return None,
            }
        }
    }
}

async fn request(
    app: &App,
    path: &str,
    token: &str,
    last_event_id: Option<i64>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{}{path}", app.base))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    request.send().await.expect("request sent")
}

/// A customer with credit and a product in stock; returns the customer's email.
async fn shop(app: &App, name: &str) -> String {
    let email = format!("{name}@example.com");
    app.product("LAMP-1", 5_000, 20).await;
    app.credit(&email, 100_000).await;
    email
}

async fn place(app: &App, email: &str) -> String {
    let placed = app
        .place(&json!({"customer": email, "items": [{"sku": "LAMP-1", "quantity": 1}]}))
        .await;
    placed["id"].as_str().unwrap().to_owned()
}

const WAIT: Duration = Duration::from_secs(20);

async fn an_order_stream_follows_every_change_live_and_ends_after_delivery(flavour: Flavour) {
    let app = start(flavour).await;
    let alice = shop(&app, "alice").await;
    let id = place(&app, &alice).await;
    let path = format!("/api/v1/orders/{id}/events");
    let mut stream = Stream::open(&app, &path, &token(&alice, Role::Customer), None).await;

    let first = stream.next(WAIT).await.expect("the current state first");
    assert_eq!(first.name, "status");
    assert_eq!(first.data["id"], id.as_str());
    let mut seen = vec![(first.id, first.data["status"].as_str().unwrap().to_owned())];
    while seen.last().unwrap().1 != "confirmed" {
        let event = stream.next(WAIT).await.expect("confirmation arrives live");
        seen.push((event.id, event.data["status"].as_str().unwrap().to_owned()));
    }
    app.ship_and_deliver(&id).await;
    while let Some(event) = stream.next(WAIT).await {
        seen.push((event.id, event.data["status"].as_str().unwrap().to_owned()));
    }
    let statuses: Vec<&str> = seen.iter().map(|(_, s)| s.as_str()).collect();
    let full = ["placed", "confirmed", "shipped", "delivered"];
    assert!(
        full.ends_with(&statuses),
        "one event per change, in order: {statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&"delivered"),
        "the stream ends after the terminal status"
    );
    assert!(
        seen.windows(2).all(|pair| pair[0].0 < pair[1].0),
        "ids increase: {seen:?}"
    );
}

async fn last_event_id_resumes_without_gaps_or_repeats(flavour: Flavour) {
    let app = start(flavour).await;
    let bob = shop(&app, "bob").await;
    let id = place(&app, &bob).await;
    app.wait_status(&id, "confirmed").await;
    app.ship_and_deliver(&id).await;
    let bob_token = token(&bob, Role::Customer);
    let path = format!("/api/v1/orders/{id}/events");

    // From the start (id 0): every change of the order, then the end.
    let mut all = Vec::new();
    let mut stream = Stream::open(&app, &path, &bob_token, Some(0)).await;
    while let Some(event) = stream.next(WAIT).await {
        all.push((event.id, event.data["status"].as_str().unwrap().to_owned()));
    }
    let statuses: Vec<&str> = all.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses, ["placed", "confirmed", "shipped", "delivered"]);

    // Resuming after "confirmed" gives exactly the rest, with the same ids.
    let mut stream = Stream::open(&app, &path, &bob_token, Some(all[1].0)).await;
    let mut rest = Vec::new();
    while let Some(event) = stream.next(WAIT).await {
        assert_eq!(
            event.data["history"].as_array().unwrap().len() as i64 - 1,
            rest.len() as i64 + 2
        );
        rest.push((event.id, event.data["status"].as_str().unwrap().to_owned()));
    }
    assert_eq!(rest, all[2..].to_vec());

    // Without Last-Event-ID a finished order gives its current state and ends.
    let mut stream = Stream::open(&app, &path, &bob_token, None).await;
    let current = stream.next(WAIT).await.unwrap();
    assert_eq!(
        (current.id, current.data["status"].as_str()),
        (all[3].0, Some("delivered"))
    );
    assert!(stream.next(WAIT).await.is_none());
}

async fn the_staff_stream_follows_all_orders_with_heartbeats_and_ends_on_time(flavour: Flavour) {
    let app = start_with(
        flavour,
        &[("stream_heartbeat_ms", "200"), ("stream_max_ms", "4000")],
    )
    .await;
    let carol = shop(&app, "carol").await;
    let dave = "dave@example.com".to_owned();
    app.credit(&dave, 100_000).await;
    let mut stream = Stream::open(&app, "/api/v1/orders/events", &staff(), None).await;
    let first = place(&app, &carol).await;
    let second = place(&app, &dave).await;

    let mut confirmed = Vec::new();
    let mut last_id = 0;
    while confirmed.len() < 2 {
        let event = stream.next(WAIT).await.expect("both orders' changes");
        assert!(event.id > last_id, "ids increase");
        last_id = event.id;
        if event.data["status"] == "confirmed" {
            confirmed.push(event.data["id"].as_str().unwrap().to_owned());
        }
    }
    confirmed.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(confirmed, expected);
    // Idle: keep-alive comments, then the stream ends after stream_max_ms.
    assert!(stream.next(Duration::from_secs(10)).await.is_none());
    assert!(stream.comments >= 1, "keep-alive comments while idle");
}

async fn streams_check_who_asks_and_what_they_send(flavour: Flavour) {
    let app = start(flavour).await;
    let erin = shop(&app, "erin").await;
    let id = place(&app, &erin).await;
    let path = format!("/api/v1/orders/{id}/events");
    let other = token("mallory@example.com", Role::Customer);

    let no_token = reqwest::Client::new()
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(request(&app, &path, &other, None).await.status(), 403);
    assert_eq!(
        request(
            &app,
            "/api/v1/orders/events",
            &token(&erin, Role::Customer),
            None
        )
        .await
        .status(),
        403
    );
    let missing = request(&app, "/api/v1/orders/ord_missing/events", &staff(), None).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let bad_resume = reqwest::Client::new()
        .get(format!("{}{path}", app.base))
        .bearer_auth(staff())
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_resume.status(), 400);
}

async fn each_caller_gets_its_own_request_budget(flavour: Flavour) {
    let app = start_with(flavour, &[("rate_limit_per_minute", "5")]).await;
    // All requests in one counting window: wait out a window about to end.
    let into_window = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 60_000;
    if into_window > 50_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - into_window + 100) as u64)).await;
    }
    let frank = token("frank@example.com", Role::Customer);
    for _ in 0..5 {
        assert_eq!(app.get("/api/v1/products", &frank).await.status, 200);
    }
    let limited = app.get("/api/v1/products", &frank).await;
    limited.assert_problem(429);
    let retry_after: i64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    // Another caller is not affected; /healthz is never counted.
    let grace = token("grace@example.com", Role::Customer);
    assert_eq!(app.get("/api/v1/products", &grace).await.status, 200);
    assert_eq!(
        app.raw("GET", "/healthz", None, None, &[]).await.status,
        200
    );
}

/// Open streams each hold an instance of the gateway and of orders (the test host pools
/// 1000, like Spin): 40 of them at once all see the same new order's changes.
async fn many_open_streams_each_get_every_change(flavour: Flavour) {
    let app = start(flavour).await;
    let heidi = shop(&app, "heidi").await;
    let staff = staff();
    let mut streams = Vec::new();
    for _ in 0..40 {
        streams.push(Stream::open(&app, "/api/v1/orders/events", &staff, None).await);
    }
    let id = place(&app, &heidi).await;
    let waits: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let id = id.clone();
            tokio::spawn(async move {
                loop {
                    let event = stream.next(WAIT).await.expect("the stream stays open");
                    if event.data["id"] == id.as_str() && event.data["status"] == "confirmed" {
                        return event.id;
                    }
                }
            })
        })
        .collect();
    let mut ids = Vec::new();
    for wait in waits {
        ids.push(wait.await.expect("stream task"));
    }
    assert!(
        ids.windows(2).all(|pair| pair[0] == pair[1]),
        "every stream saw the confirmation under the same id: {ids:?}"
    );
}
