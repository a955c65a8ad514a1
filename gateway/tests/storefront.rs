//! The HTTP side: the JSON API against both stores, and the storefront page
//! driven in a real headless Chromium.

mod common;

use common::*;
use serde_json::Value;

both_backends!(the_json_api_holds_releases_and_explains_errors);

async fn the_json_api_holds_releases_and_explains_errors(b: Backend) {
    let app = TestApp::spawn(b).await;
    let event = create_event(&app, 1, 2, 10).await;
    let json = [("Content-Type", "application/json")];
    let post = |key: &'static str, body: &'static str| {
        let path = format!("/api/events/{event}/holds");
        let addr = app.http;
        async move { http(addr, "POST", &path, &[("Content-Type", "application/json"), ("Idempotency-Key", key)], Some(body)).await }
    };
    let (status, body) = post("k1", r#"{"customer_id":"ann","seat_ids":["A-1-1","A-1-2"]}"#).await;
    assert_eq!(status, 201, "{body}");
    let hold: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hold["state"], "active");
    assert_eq!(hold["total_minor"], 18_000);
    assert_eq!(hold["seats"].as_array().unwrap().len(), 2);
    // A retry with the same key gets the first answer.
    let (status, again) = post("k1", r#"{"customer_id":"ann","seat_ids":["A-1-1","A-1-2"]}"#).await;
    assert_eq!((status, serde_json::from_str::<Value>(&again).unwrap()["hold_id"].clone()), (201, hold["hold_id"].clone()));
    // Conflicts and bad input: a 4xx with a JSON body that says why.
    let (status, body) = post("k2", r#"{"customer_id":"bob","seat_ids":["A-1-2"]}"#).await;
    assert_eq!(status, 409, "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["reason"], "SEATS_TAKEN");
    assert_eq!(err["error"]["seats"][0], "A-1-2");
    let (status, body) = post("k3", r#"{"customer_id":"bob","seat_ids":["A-1-2"],"#).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["error"]["code"], "INVALID_ARGUMENT");
    let (status, body) = post("k4", r#"{"customer_id":"bob","seat_ids":["nope"]}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post("k5", r#"{"customer_id":"bob","seats":["A-1-3"]}"#).await;
    assert_eq!(status, 400, "unknown fields are refused: {body}");
    let (status, body) = http(app.http, "POST", &format!("/api/events/{event}/holds"), &[("Idempotency-Key", "k6")], Some("{}")).await;
    assert_eq!(status, 400, "no JSON content type: {body}");
    let (status, _) = http(app.http, "GET", &format!("/api/events/{}", uuid::Uuid::new_v4()), &json, None).await;
    assert_eq!(status, 404);
    let (status, body) = post("k7", r#"{"customer_id":"bob","quantity":3}"#).await;
    assert_eq!(status, 201, "best available: {body}");
    // Reads.
    let (status, body) = http(app.http, "GET", &format!("/api/events/{event}/seats"), &[], None).await;
    assert_eq!(status, 200);
    let map: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(map["seats"].as_array().unwrap().len(), 20);
    assert_eq!(map["counts"]["held"], 5);
    let (status, body) = http(app.http, "GET", "/api/events?status=on_sale", &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["events"].as_array().unwrap().len(), 1);
    let (status, _) = http(app.http, "GET", "/api/events?status=bogus", &[], None).await;
    assert_eq!(status, 400);
    // Release, with an owner check.
    let id = hold["hold_id"].as_str().unwrap();
    let (status, _) = http(app.http, "DELETE", &format!("/api/holds/{id}?customer_id=bob"), &[("Idempotency-Key", "r0")], None).await;
    assert_eq!(status, 403);
    let (status, body) = http(app.http, "DELETE", &format!("/api/holds/{id}"), &[("Idempotency-Key", "r1")], None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["state"], "released");
    let (status, body) = http(app.http, "GET", &format!("/api/holds/{id}"), &[], None).await;
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()["state"].clone()), (200, "released".into()));
    // Storage agrees: only the best-available hold is live.
    assert_eq!(app.db.claims(&event).await.len(), 3);
    app.stop().await;
}

/// Where the test command installed the browser driver.
fn browser_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_holds_and_releases_seats_in_the_storefront() {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the storefront test needs Chromium and playwright-core: run scripts/test, which installs them"
    );
    let app = TestApp::spawn(Backend::Sqlite).await;
    let event = create_event(&app, 2, 5, 12).await;
    let shot = std::env::temp_dir().join(format!("usher-storefront-{}.png", uuid::Uuid::new_v4()));
    let out = tokio::process::Command::new("node")
        .arg(dir.join("storefront.mjs"))
        .args([&format!("http://{}", app.http), "Test Night", "A-2-5", "A-2-6"])
        .arg(&shot)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser run failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(seen["seats_drawn"], 120);
    assert_eq!(seen["selected_class"], "selected");
    assert_eq!(seen["hold_title"], "Held for you");
    assert!(seen["hold_seats"].as_str().unwrap().starts_with("A-2-5, A-2-6"), "{seen}");
    assert!(seen["expiry"].as_str().unwrap().starts_with("Expires in"), "{seen}");
    assert_eq!(seen["held_class"], "held");
    assert_eq!(seen["click_on_held_class"], "held", "a held seat cannot be selected");
    assert_eq!(seen["after_release"], "Hold released");
    assert_eq!(seen["released_class"], "available");
    assert_eq!(seen["page_errors"], serde_json::json!([]));
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "a screenshot was taken");
    // What the person did is what storage holds: one hold, released.
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM holds WHERE event_id = $1 AND state = 'released'", &[&event]).await, 1);
    assert!(app.db.claims(&event).await.is_empty());
    app.stop().await;
}
