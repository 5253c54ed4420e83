//! Tags and notes of a VM, kept in its own definition: set from the VM page and the API,
//! refused at the field when bad, both or neither written, filtered on in the list (URL)
//! and the API, carried by clones, audited, refused to viewers.

use crate::common;

use common::api::Api;
use common::faults::{FailAt, Step};
use common::{csrf_in, location, spawn_app, spawn_app_wrapped};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

fn names(list: &Value) -> Vec<String> {
    list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn tags_and_notes_live_in_the_definition_and_filter_the_list() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let (s, vm) = api
        .patch(
            "/api/v1/vms/web01",
            json!({"tags": ["Web", "prod", "web"], "notes": "Front end.\nOwner: </description><devices/> & co"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert_eq!(vm["tags"], json!(["web", "prod"]));
    assert_eq!(
        vm["devices"]["description"],
        "Front end.\nOwner: </description><devices/> & co"
    );
    // In the definition: virtdeck's namespace under <metadata>, the notes escaped.
    let xml = vm["xml"].as_str().unwrap();
    assert!(
        xml.contains(r#"<virtdeck:vm xmlns:virtdeck="https://virtdeck.example/xmlns/vm/1">"#),
        "{xml}"
    );
    assert!(xml.contains("<virtdeck:tag>prod</virtdeck:tag>"), "{xml}");
    assert!(
        xml.contains("&lt;/description&gt;&lt;devices/&gt; &amp; co"),
        "{xml}"
    );
    api.patch("/api/v1/vms/db01", json!({"tags": ["prod", "db"]}))
        .await;

    // The API filters by tag; no tag, every VM.
    let (_, prod) = api.get("/api/v1/vms?tag=prod").await;
    let mut got = names(&prod);
    got.sort();
    assert_eq!(got, vec!["db01", "web01"]);
    assert_eq!(
        names(&api.get("/api/v1/vms?tag=WEB").await.1),
        vec!["web01"]
    );
    assert!(names(&api.get("/api/v1/vms?tag=none").await.1).is_empty());
    assert!(names(&api.get("/api/v1/vms").await.1).len() >= 6);

    // The list page too, with the tag in its URL and on each row.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, "/vms?tag=web").await;
    assert!(page.contains(r#"data-vm="web01""#), "{page}");
    assert!(!page.contains(r#"data-vm="db01""#));
    assert!(page.contains(r#"<a class="tag" href="/vms?tag=prod" data-tag="prod">"#));
    assert!(page.contains(r#"name="tag" value="web""#));
    let none = app.get_text(&session, "/vms?tag=nothing").await;
    assert!(none.contains("No VM tagged “nothing”"), "{none}");

    // Only the notes: the tags stay. Empty tags remove them.
    let (_, vm) = api.patch("/api/v1/vms/web01", json!({"notes": ""})).await;
    assert_eq!(vm["tags"], json!(["web", "prod"]));
    assert_eq!(vm["devices"]["description"], "");
    let (_, vm) = api.patch("/api/v1/vms/web01", json!({"tags": []})).await;
    assert_eq!(vm["tags"], json!([]));
    assert!(!vm["xml"].as_str().unwrap().contains("virtdeck:vm"));

    let audit = app.audit_text(&session).await;
    assert!(audit.contains("vm.labels"), "{audit}");
}

#[tokio::test]
async fn bad_tags_and_notes_are_refused_at_their_field_and_change_nothing() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    api.patch("/api/v1/vms/web01", json!({"tags": ["keep"]}))
        .await;
    for (body, field) in [
        (json!({"tags": ["bad tag!"], "notes": "x"}), "tags"),
        (
            json!({"tags": (0..17).map(|i| format!("t{i}")).collect::<Vec<_>>()}),
            "tags",
        ),
        (json!({"notes": "bell\u{7}"}), "notes"),
        (json!({"notes": "n".repeat(4001)}), "notes"),
    ] {
        let (s, e) = api.patch("/api/v1/vms/web01", body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    let (_, vm) = api.get("/api/v1/vms/web01").await;
    assert_eq!(vm["tags"], json!(["keep"]));
    assert_eq!(vm["devices"]["description"], "");

    // The page form: the message at the field, what was typed kept.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let csrf = app.csrf(&session, "/vms/web01").await;
    let r = session
        .post(app.url("/vms/web01/labels"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("tags", "ok, Not/Ok"),
            ("notes", "typed"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains("“not/ok” is not a tag"), "{page}");
    assert!(page.contains(r#"value="ok, Not/Ok""#), "{page}");
    assert!(page.contains(">typed</textarea>"), "{page}");

    // A good one: back to the page with the tags shown.
    let r = session
        .post(app.url("/vms/web01/labels"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("tags", "web prod"),
            ("notes", "Front end"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/vms/web01");
    let page = app.get_text(&session, "/vms/web01").await;
    assert!(page.contains("Tags and notes saved."), "{page}");
    assert!(page.contains(r#"data-tag="prod""#), "{page}");
    assert!(
        page.contains(r#"<pre class="notes" id="vm-notes">Front end</pre>"#),
        "{page}"
    );
}

#[tokio::test]
async fn viewers_cannot_change_tags() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let (viewer, token) = app.viewer(&admin).await;
    let r = reqwest::Client::new()
        .patch(app.url("/api/v1/vms/web01"))
        .bearer_auth(&token)
        .json(&json!({"tags": ["x"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let page = app.get_text(&viewer, "/vms/web01").await;
    assert!(!page.contains("labels-form"), "no form for viewers");
    let csrf = csrf_in(&page);
    let r = viewer
        .post(app.url("/vms/web01/labels"))
        .form(&[("csrf", csrf.as_str()), ("tags", "x"), ("notes", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn when_the_notes_fail_the_tags_are_put_back() {
    let app = spawn_app_wrapped(
        |_| {},
        Some(Box::new(|inner| {
            Arc::new(FailAt::new(inner, Step::SetDescription))
        })),
    )
    .await;
    let api = Api::new(&app).await;
    let (s, e) = api
        .patch(
            "/api/v1/vms/web01",
            json!({"tags": ["new"], "notes": "never written"}),
        )
        .await;
    // libvirt's refusal, said as such.
    assert!(s.is_server_error(), "{s} {e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("notes"),
        "{e}"
    );
    let (_, vm) = api.get("/api/v1/vms/web01").await;
    assert_eq!(vm["tags"], json!([]), "{vm}");
    // Tags alone do not touch the notes, so they are written.
    let (s, vm) = api
        .patch("/api/v1/vms/web01", json!({"tags": ["new"]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert_eq!(vm["tags"], json!(["new"]));
}

#[tokio::test]
async fn a_clone_carries_the_tags_and_notes() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let source = "app01";
    let (s, made) = api
        .post(
            "/api/v1/vms",
            json!({
                "name": source,
                "units": 1,
                "disk": {"type": "new", "pool": "default", "size_gib": 2},
                "install": {"type": "cdrom", "volume": "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso"},
                "nic": {"bridge": "br0"},
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let (s, v) = api
        .patch(
            &format!("/api/v1/vms/{source}"),
            json!({"tags": ["golden"], "notes": "base image"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, job) = api
        .post_job(
            &format!("/api/v1/vms/{source}/clone"),
            json!({"name": "copy01"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let end = api.job_end(&job).await;
    assert_eq!(end["state"], "succeeded", "{end}");
    let (_, copy) = api.get("/api/v1/vms/copy01").await;
    assert_eq!(copy["tags"], json!(["golden"]));
    assert_eq!(copy["devices"]["description"], "base image");
}
