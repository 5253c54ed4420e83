//! Volumes of a pool on libvirt's test driver (the demo host): who uses each volume,
//! create, resize and delete with their refusals at the field, roles and CSRF, the
//! audit log; uploads and fetches refused before anything is made; an upload the driver
//! cannot take leaves no volume behind and a failed job on the Jobs page; a download it
//! cannot stream is an error answer.

use crate::common;

use common::api::Api;
use common::{client, csrf_in, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn volumes(api: &Api, pool: &str) -> Vec<Value> {
    let (s, v) = api.get(&format!("/api/v1/pools/{pool}/volumes")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["volumes"].as_array().unwrap().clone()
}

async fn volume_names(api: &Api, pool: &str) -> Vec<String> {
    volumes(api, pool)
        .await
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

async fn put(api: &Api, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let r = api
        .c
        .put(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn volumes_are_created_resized_and_deleted_with_refusals_at_the_field() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let before = volume_names(&api, "default").await;

    // Refusals, each at its field, nothing made.
    for (body, at) in [
        (json!({"name": "../etc/passwd", "size_gib": 1}), "name"),
        (json!({"name": "data.qcow2", "size_gib": 0}), "size_gib"),
        (json!({"name": "data.qcow2"}), "size_gib"),
        (
            json!({"name": "data.qcow2", "size_gib": 1, "format": "vmdk"}),
            "format",
        ),
        (json!({"name": "web01.qcow2", "size_gib": 1}), "name"),
    ] {
        let (s, v) = api.post("/api/v1/pools/default/volumes", body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(field(&v), at, "{v}");
    }
    assert_eq!(volume_names(&api, "default").await, before);
    let (s, v) = api
        .post(
            "/api/v1/pools/nosuch/volumes",
            json!({"name": "a", "size_gib": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    // Create a raw and a qcow2 volume: each a job, followed to its end.
    let (s, v) = api
        .post(
            "/api/v1/pools/default/volumes",
            json!({"name": "scratch.img", "size_gib": 2, "format": "raw"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        (v["kind"].as_str(), v["pool"].as_str(), v["volume"].as_str()),
        (Some("create"), Some("default"), Some("scratch.img")),
        "{v}"
    );
    let job = api.job_end(&v).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["bytes_total"], 2u64 << 30);
    assert_eq!(job["percent"], 100);
    assert_eq!(job["source"], "empty raw volume of 2 GiB");
    assert!(job["finished_at"].as_i64().is_some(), "{job}");
    let (s, job) = api
        .post_job(
            "/api/v1/pools/default/volumes",
            json!({"name": "data.qcow2", "size_gib": 3}),
        )
        .await;
    assert_eq!(
        (s, job["state"].as_str()),
        (StatusCode::ACCEPTED, Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["message"], "qcow2 volume of 3 GiB created.");
    let listed = volumes(&api, "default").await;
    let data = listed.iter().find(|v| v["name"] == "data.qcow2").unwrap();
    assert_eq!(data["capacity_bytes"], 3u64 << 30);
    assert_eq!(data["format"], "qcow2");
    let scratch = listed.iter().find(|v| v["name"] == "scratch.img").unwrap();
    assert_eq!(scratch["capacity_bytes"], 2u64 << 30);

    // Resize: grow; shrinking a qcow2 or to the same size is refused at size_gib.
    let (s, v) = api
        .patch(
            "/api/v1/pools/default/volumes/data.qcow2",
            json!({"size_gib": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(field(&v), "size_gib");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("only grow"));
    let (s, v) = api
        .patch(
            "/api/v1/pools/default/volumes/scratch.img",
            json!({"size_gib": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = api
        .patch(
            "/api/v1/pools/default/volumes/data.qcow2",
            json!({"size_gib": 5}),
        )
        .await;
    // The test driver may not implement resizing; then libvirt's refusal is passed on.
    if s == StatusCode::OK {
        assert_eq!(v["capacity_bytes"], 5u64 << 30, "{v}");
    } else {
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be resized"));
    }

    // Delete: refused while a VM uses the volume, naming the VM; else gone.
    let (s, v) = api
        .delete("/api/v1/pools/default/volumes/web01.qcow2")
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("VM web01"),
        "{v}"
    );
    let (s, v) = api.delete("/api/v1/pools/default/volumes/data.qcow2").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = api.delete("/api/v1/pools/default/volumes/data.qcow2").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let names = volume_names(&api, "default").await;
    assert!(names.contains(&"scratch.img".to_string()));
    assert!(!names.contains(&"data.qcow2".to_string()));

    // Every change and refusal is in the audit log.
    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let audit = app.audit_text(&admin).await;
    for needle in [
        "volume.create",
        "default/scratch.img",
        "volume.resize",
        "volume.delete",
        "default/web01.qcow2",
        "is used by VM web01",
    ] {
        assert!(audit.contains(needle), "audit lacks {needle}");
    }
}

#[tokio::test]
async fn the_pool_page_shows_who_uses_each_volume_and_its_forms_answer_at_the_field() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = admin
        .get(app.url("/host/storage/default"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = |name: &str| {
        let start = page
            .find(&format!("data-volume=\"{name}\""))
            .unwrap_or_else(|| panic!("no row for {name}"));
        page[start..start + page[start..].find("</tr>").unwrap()].to_string()
    };
    assert!(row("web01.qcow2").contains("<a href=\"/vms/web01\">web01</a>"));
    assert!(row("debian-12.8.0-amd64-netinst.iso").contains("/vms/build-runner"));
    // A volume in use offers no delete button; the others do.
    assert!(!row("web01.qcow2").contains("/delete\""));
    for id in ["volume-form", "upload-form", "fetch-form"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }
    let csrf = csrf_in(&page);

    // The create form: a bad size comes back at its field, the typed name kept.
    let r = admin
        .post(app.url("/host/storage/default/volumes"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "new.qcow2"),
            ("size_gib", "lots"),
            ("format", "qcow2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(body.contains("data-field=\"size_gib\">Enter a whole number of GiB."));
    assert!(body.contains("value=\"new.qcow2\""));

    // It works with a number.
    let r = admin
        .post(app.url("/host/storage/default/volumes"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "new.qcow2"),
            ("size_gib", "4"),
            ("format", "qcow2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, "/host/storage/default");
    let page = common::pages::text(&admin, &app.url(&to)).await;
    assert!(page.contains("Volume new.qcow2 created"), "{page}");
    let again = common::pages::text(&admin, &app.url(&to)).await;
    assert!(!again.contains("Volume new.qcow2 created"));

    // Deleting a used volume through the page: refused, naming the VM.
    let r = admin
        .post(app.url("/host/storage/default/volumes/debian-12.8.0-amd64-netinst.iso/delete"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body = r.text().await.unwrap();
    assert!(body.contains("used by VM build-runner"), "{body}");

    // Resize through the page: a qcow2 shrink is refused next to that volume's field.
    let r = admin
        .post(app.url("/host/storage/default/volumes/new.qcow2/resize"))
        .form(&[("csrf", csrf.as_str()), ("size_gib", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    let start = body.find("data-volume=\"new.qcow2\"").unwrap();
    let row = &body[start..start + body[start..].find("</tr>").unwrap()];
    assert!(row.contains("data-field=\"size_gib\">A qcow2 volume can only grow"));

    // The fetch form: credentials in the URL are refused at the URL field.
    let r = admin
        .post(app.url("/host/storage/default/fetch"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("url", "https://user:secret@mirror.example/a.iso"),
            ("name", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(body.contains("data-field=\"url\">Leave user names and passwords out"));

    // A form without the CSRF token changes nothing.
    let r = admin
        .post(app.url("/host/storage/default/volumes"))
        .form(&[("name", "x.qcow2"), ("size_gib", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn only_admins_change_volumes_and_session_calls_need_the_csrf_header() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "olga", "operator", "operator-password-1")
        .await;
    let token = app.token_for(&admin, "olga").await;
    let op = client();
    for (method, path) in [
        ("POST", "/api/v1/pools/default/volumes"),
        ("PATCH", "/api/v1/pools/default/volumes/web01.qcow2"),
        ("DELETE", "/api/v1/pools/default/volumes/web01.qcow2"),
        ("GET", "/api/v1/pools/default/volumes/web01.qcow2"),
        ("PUT", "/api/v1/pools/default/volumes/x.iso"),
        ("POST", "/api/v1/pools/default/fetch"),
    ] {
        let r = op
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    // Operators follow jobs (their clones run as jobs); viewers do not.
    for path in ["/jobs", "/api/v1/jobs"] {
        let r = op
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    app.add_user(&admin, "vera", "viewer", "viewer-password-1")
        .await;
    let viewer_token = app.token_for(&admin, "vera").await;
    for path in ["/jobs", "/api/v1/jobs"] {
        let r = op
            .get(app.url(path))
            .bearer_auth(&viewer_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("volume.upload") && audit.contains("denied"));

    // The admin's own session: an upload without X-CSRF-Token is refused.
    let r = admin
        .put(app.url("/api/v1/pools/default/volumes/x.iso"))
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

async fn jobs(api: &Api) -> Vec<Value> {
    let (s, v) = api.get("/api/v1/jobs").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["jobs"].as_array().unwrap().clone()
}

#[tokio::test]
async fn uploads_and_fetches_are_refused_before_anything_is_made() {
    let app = spawn_app_with(|c| c.images.max_bytes = 1000).await;
    let api = Api::new(&app).await;
    let before = volume_names(&api, "default").await;
    // Larger than the limit: refused at the file, nothing made, no job.
    let (s, v) = put(&api, "/api/v1/pools/default/volumes/big.iso", vec![0; 1001]).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(field(&v), "file");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_bytes"));
    // A bad name, a taken name, a stopped/unknown pool.
    let (s, v) = put(&api, "/api/v1/pools/default/volumes/.hidden", vec![0; 10]).await;
    assert_eq!((s, field(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "name"));
    let (s, v) = put(
        &api,
        "/api/v1/pools/default/volumes/web01.qcow2",
        vec![0; 10],
    )
    .await;
    assert_eq!((s, field(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "name"));
    let (s, _) = put(&api, "/api/v1/pools/nosuch/volumes/a.iso", vec![0; 10]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // An empty body (422 with Content-Length: 0, 400 when the client sends no length).
    let (s, v) = put(&api, "/api/v1/pools/default/volumes/empty.iso", Vec::new()).await;
    assert!(
        s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
        "{s} {v}"
    );
    assert_eq!(field(&v), "file", "{v}");
    // A chunked body (no declared size).
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(vec![1u8; 10])]);
    let r = api
        .c
        .put(format!("{}/api/v1/pools/default/volumes/c.iso", api.base))
        .bearer_auth(&api.token)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Content-Length"));

    // Fetch refusals, at their fields.
    for (body, at) in [
        (json!({"url": "ftp://mirror/a.iso"}), "url"),
        (json!({"url": "http://u:p@mirror/a.iso"}), "url"),
        (json!({"url": "http://mirror/dir/"}), "name"),
        (json!({"url": "http://mirror/web01.qcow2"}), "name"),
    ] {
        let (s, v) = api.post("/api/v1/pools/default/fetch", body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(field(&v), at, "{v}");
    }
    assert_eq!(volume_names(&api, "default").await, before);
    assert!(jobs(&api).await.is_empty(), "refusals start no job");
}

#[tokio::test]
async fn an_upload_the_hypervisor_refuses_leaves_no_volume_and_a_failed_job() {
    // libvirt's test driver has no volume upload: the volume is made, the stream is
    // refused, and the volume must be gone again.
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let before = volume_names(&api, "default").await;
    let (s, v) = put(
        &api,
        "/api/v1/pools/default/volumes/tiny.iso?source=tiny.iso",
        vec![7u8; 4096],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("the partial volume was deleted"), "{msg}");
    assert_eq!(volume_names(&api, "default").await, before);
    let js = jobs(&api).await;
    assert_eq!(js.len(), 1);
    assert_eq!(js[0]["state"], "failed");
    assert_eq!(js[0]["kind"], "upload");
    assert_eq!(js[0]["volume"], "tiny.iso");
    let id = js[0]["id"].as_i64().unwrap();
    let (s, one) = api.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["message"], js[0]["message"]);
    // An ended job cannot be cancelled; an unknown one does not exist.
    let (s, v) = api
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _) = api.post("/api/v1/jobs/999/cancel", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // A download the driver cannot stream is an error answer, not a cut-off body.
    let r = api
        .c
        .get(format!(
            "{}/api/v1/pools/default/volumes/web01.qcow2",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("libvirt refused to"),
        "{v}"
    );

    // The Jobs page shows it with its message.
    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = admin
        .get(app.url("/jobs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("data-job=\"{id}\" data-job-state=\"failed\"")));
    assert!(page.contains("the partial volume was deleted"));
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("volume.upload") && audit.contains("default/tiny.iso"));
}

#[tokio::test]
async fn an_upload_whose_volume_cannot_be_made_ends_failed_with_nothing_made() {
    use common::faults::{FailAt, Step};
    use std::sync::Arc;
    let app = common::spawn_app_wrapped(
        |_| {},
        Some(Box::new(|inner| {
            Arc::new(FailAt::new(inner, Step::CreateVolume))
        })),
    )
    .await;
    let api = Api::new(&app).await;
    let before = volume_names(&api, "default").await;
    let (s, v) = put(
        &api,
        "/api/v1/pools/default/volumes/new.iso",
        vec![1u8; 100],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("Volume new.iso could not be created"), "{m}");
    assert_eq!(volume_names(&api, "default").await, before);
    let js = jobs(&api).await;
    assert_eq!(js[0]["state"], "failed");
    assert_eq!(js[0]["volume_path"], Value::Null);
}
