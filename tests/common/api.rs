//! A Bearer-token API client for tests.

use super::TestApp;
use reqwest::{Client, StatusCode};
use serde_json::Value;

pub struct Api {
    pub c: Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub async fn new(app: &TestApp) -> Api {
        let admin = app.setup_admin("admin").await;
        let token = app.admin_token(&admin).await;
        Api {
            c: Client::builder()
                .pool_idle_timeout(super::IDLE_REUSE)
                .build()
                .expect("client"),
            base: app.base.clone(),
            token,
        }
    }
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .c
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .c
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .c
            .patch(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .c
            .delete(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
    pub async fn free_units(&self) -> u64 {
        self.get("/api/v1/host").await.1["capacity"]["usage"]["free"]
            .as_u64()
            .unwrap()
    }
    /// VM names, volume paths and claims: what a failed create must leave unchanged.
    pub async fn fingerprint(&self) -> (Vec<String>, u64) {
        let vms = self.get("/api/v1/vms").await.1;
        let mut names: Vec<String> = vms["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        (names, self.free_units().await)
    }
}
