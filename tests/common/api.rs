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
    /// Posts a request that starts a job (clone, template VM, volume create). When it is
    /// accepted (202, with the job's URL in Location), follows the job until it ends and
    /// answers the ended job; otherwise the refusal as sent.
    pub async fn post_job(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, v) = self.post(path, body).await;
        if s != StatusCode::ACCEPTED {
            return (s, v);
        }
        (s, self.job_end(&v).await)
    }

    /// The job once it has ended (polled every 50 ms, for at most two minutes).
    pub async fn job_end(&self, job: &Value) -> Value {
        let id = job["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("not a job: {job}"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let (s, j) = self.get(&format!("/api/v1/jobs/{id}")).await;
            assert_eq!(s, StatusCode::OK, "{j}");
            if j["state"] != "running" {
                return j;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} still runs: {j}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PATCH, path, body).await
    }
    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .c
            .request(method, format!("{}{path}", self.base))
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
