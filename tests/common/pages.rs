//! One-line GETs for tests that read many pages.

use reqwest::{Client, StatusCode};
use serde_json::Value;

/// GETs `url` and returns the body (any status).
pub async fn text(c: &Client, url: &str) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}

/// GETs `url` and returns its JSON (Null when it is not JSON).
pub async fn json(c: &Client, url: &str) -> Value {
    c.get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// GETs `url` and returns only the status.
pub async fn status(c: &Client, url: &str) -> StatusCode {
    c.get(url).send().await.unwrap().status()
}
