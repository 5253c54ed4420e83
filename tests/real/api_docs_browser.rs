//! The API page in a real headless Chromium: reached from the menu, Swagger UI (vendored)
//! renders every operation of the OpenAPI document under the site's own
//! Content-Security-Policy, with nothing blocked, and an operation opens to its answers.

use crate::common;

use common::webdriver::{Browser, WAIT};
use common::{spawn_app, ADMIN_PASSWORD};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The paths of the operations the page shows, and what the browser blocked (empty when
/// nothing was).
const RENDERED: &str = r#"
const paths = [...document.querySelectorAll('#api-docs .opblock-summary-path')]
  .map(e => e.dataset.path || e.textContent);
const blocked = document.getElementById('api-docs-blocked');
return { paths, blocked: blocked && !blocked.hidden ? blocked.textContent : '' };
"#;

#[tokio::test]
async fn the_api_page_renders_every_operation_in_chromium() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let setup_url = app.setup_url.clone().expect("no accounts → setup link");
    let b = Browser::start().await;
    b.set_up_first_admin(&setup_url, "admin", ADMIN_PASSWORD)
        .await;

    // 1. The menu's "API" link opens the page.
    let link = b
        .find_by("link text", "API")
        .await
        .expect("menu link \"API\"");
    b.click(&link).await;
    b.wait_for_path("/docs/api").await;
    assert_eq!(b.text_of("main h1").await, "API");

    // 2. Swagger UI renders one block per operation of the document.
    let doc: Value = serde_json::from_str(virtdeck::web::openapi::document()).unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().map(|o| o.len()).unwrap_or(0))
        .sum();
    b.wait_until(
        &format!("return document.querySelectorAll('#api-docs .opblock').length >= {operations};"),
        WAIT,
        "every operation rendered",
    )
    .await;
    let shown = b.execute(RENDERED, json!([])).await;
    let paths: BTreeSet<&str> = shown["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in ["/api/v1/vms", "/api/v1/vms/{name}", "/api/v1/openapi.json"] {
        assert!(paths.contains(want), "{want} not shown: {paths:?}");
    }
    assert_eq!(shown["blocked"], "", "the CSP blocked part of the viewer");

    // 3. An operation opens to its description, role and answers.
    let summary = b
        .find("#operations-vms-list_vms .opblock-summary-control")
        .await;
    b.click(&summary).await;
    b.wait_until(
        "return !!document.querySelector('#operations-vms-list_vms .responses-table');",
        WAIT,
        "GET /api/v1/vms opened",
    )
    .await;
    let opened = b.text_of("#operations-vms-list_vms").await;
    assert!(opened.contains("Role: viewer"), "{opened}");
    assert!(opened.contains("401"), "{opened}");
    let shown = b.execute(RENDERED, json!([])).await;
    assert_eq!(shown["blocked"], "", "the CSP blocked part of the viewer");
    b.screenshot("api-docs").await;
    b.quit().await;

    // The viewer is served from this host with its license, never from elsewhere.
    let c = reqwest::Client::new();
    for (path, kind) in [
        (
            "/static/vendor/swagger-ui/swagger-ui-bundle.js",
            "javascript",
        ),
        ("/static/vendor/swagger-ui/swagger-ui.css", "text/css"),
        ("/static/vendor/swagger-ui/LICENSE", ""),
        ("/static/api_docs.js", "javascript"),
    ] {
        let r = c.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.contains(kind), "{path}: {ct}");
    }
}
