//! The OpenAPI document (`virtdeck::web::openapi`, `GET /api/v1/openapi.json`): it lists
//! exactly the `/api/v1` routes of the router, it is valid OpenAPI 3.1 (checked by
//! `openapi-spec-validator`), and the real app's answers match its schemas for their path,
//! method and status — with no property the document does not declare.

use crate::common;

use common::api::Api;
use common::{client, spawn_app, spawn_app_with, TestApp};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use virtdeck::web::routes::route_table;

const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";

fn document() -> Value {
    serde_json::from_str(virtdeck::web::openapi::document()).expect("the document is JSON")
}

/// `(method, path pattern)` of every route under `/api/v1`.
fn routed() -> BTreeSet<(String, String)> {
    route_table()
        .into_iter()
        .filter(|r| r.pattern.starts_with("/api/v1/") || r.pattern == "/api/v1")
        .map(|r| (r.method.as_str().to_lowercase(), r.pattern))
        .collect()
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(method, path)` of every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_string(), path.clone()));
            }
        }
    }
    out
}

fn listed(set: &BTreeSet<&(String, String)>) -> String {
    set.iter()
        .map(|(m, p)| format!("  {} {p}", m.to_uppercase()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_document_lists_exactly_the_api_routes() {
    let doc = document();
    let routed = routed();
    let documented = documented(&doc);
    assert!(routed.len() > 60, "{} API routes", routed.len());
    let missing: BTreeSet<_> = routed.difference(&documented).collect();
    let extra: BTreeSet<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the OpenAPI document and the router differ.\nRouted but not in the document \
         (add #[utoipa::path] to the handler and list it in web/openapi.rs):\n{}\n\
         In the document but not routed:\n{}",
        listed(&missing),
        listed(&extra)
    );
    // The document lists itself.
    assert!(documented.contains(&("get".to_string(), "/api/v1/openapi.json".to_string())));
    // Every operation says who may call it, and has a tag.
    for (m, p) in &documented {
        let op = &doc["paths"][p][m];
        let description = op["description"].as_str().unwrap_or_default();
        let peer = p.starts_with("/api/v1/peer/") || p == "/api/v1/fleet/pair";
        let says_who = description.starts_with("Role: ")
            || description.starts_with("No authentication")
            || (peer && (description.contains("credential") || description.contains("code")));
        assert!(
            says_who,
            "{} {p}: the description does not say who may call it: {description}",
            m.to_uppercase()
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{m} {p} has no tag"
        );
    }
}

/// Component schemas are named after their Rust types (or `#[schema(as = …)]`): two
/// types of one name would silently share one schema, so every name is one type's.
#[test]
fn schema_names_are_unique() {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut names: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut pending: Option<Option<String>> = None;
        for line in &lines {
            let t = line.trim();
            if t.starts_with("#[derive(") && t.contains("ToSchema") {
                pending = Some(None);
            } else if let Some(alias) = t
                .strip_prefix("#[schema(as = ")
                .and_then(|r| r.strip_suffix(")]"))
            {
                if let Some(p) = pending.as_mut() {
                    *p = Some(alias.to_string());
                }
            } else if let Some(p) = pending.clone() {
                let item = t
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub ");
                let name = item
                    .strip_prefix("struct ")
                    .or_else(|| item.strip_prefix("enum "))
                    .map(|r| {
                        r.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or("")
                            .to_string()
                    });
                if let Some(name) = name {
                    let name = p.unwrap_or(name);
                    names.entry(name).or_default().push(f.display().to_string());
                    pending = None;
                }
            }
            if let Some(name) = t
                .strip_prefix("impl utoipa::ToSchema for ")
                .or_else(|| t.strip_prefix("impl ToSchema for "))
                .and_then(|r| r.split_whitespace().next())
            {
                names
                    .entry(name.to_string())
                    .or_default()
                    .push(f.display().to_string());
            }
        }
    }
    assert!(names.len() > 100, "{} schema types found", names.len());
    let shared: Vec<String> = names
        .iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(n, files)| format!("{n}: {files:?}"))
        .collect();
    assert!(
        shared.is_empty(),
        "schema names used by more than one type (rename one with #[schema(as = …)]):\n{}",
        shared.join("\n")
    );
    // Every schema the document has comes from one of them.
    let doc = document();
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            names.contains_key(name),
            "{name} in the document, not found in src/"
        );
    }
}

// ---- OpenAPI 3.1 validity ----

/// `openapi-spec-validator`: `VIRTDECK_OPENAPI_VALIDATOR`, else the one `make test-deps`
/// installs in target/pyvenv, else one on PATH.
fn validator() -> PathBuf {
    if let Some(p) = std::env::var_os("VIRTDECK_OPENAPI_VALIDATOR") {
        return PathBuf::from(p);
    }
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/openapi-spec-validator");
    if venv.exists() {
        return venv;
    }
    let on_path = std::process::Command::new("openapi-spec-validator")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        on_path,
        "openapi-spec-validator is missing ({} does not exist and none is on PATH): run \
         `make test-deps` (scripts/install-deps.sh test installs it into target/pyvenv)",
        venv.display()
    );
    PathBuf::from("openapi-spec-validator")
}

/// Runs the validator on `doc` as OpenAPI 3.1: its verdict and what it printed.
fn validate(program: &PathBuf, doc: &Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = std::process::Command::new(program)
        .args(["--schema", "3.1", "--validation-errors", "all"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} does not run ({e}): run `make test-deps`",
                program.display()
            )
        });
    // Its messages quote the whole document: keep the start of each line.
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let short = text
        .lines()
        .map(|l| l.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n");
    (out.status.success(), short)
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let program = validator();
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    // VIRTDECK_OPENAPI_OUT=FILE keeps a copy, e.g. for a client generator.
    if let Some(out) = std::env::var_os("VIRTDECK_OPENAPI_OUT") {
        std::fs::write(out, virtdeck::web::openapi::document()).unwrap();
    }
    let (ok, said) = validate(&program, &doc);
    assert!(ok, "openapi-spec-validator refuses the document:\n{said}");
    // The validator really looks: a dangling reference is refused.
    let mut broken = doc.clone();
    broken["components"]["schemas"]
        .as_object_mut()
        .unwrap()
        .remove("ApiError");
    let (ok, said) = validate(&program, &broken);
    assert!(
        !ok,
        "the validator accepted a document without ApiError: {said}"
    );
}

// ---- answers against the document ----

/// `schema` with every `$ref` replaced by what it points to, and every object schema
/// closed (`unevaluatedProperties: false`) where it is not one part of an `allOf`, so an
/// answer may carry no property the document does not declare.
fn strict(schema: &Value, doc: &Value, in_all_of: bool, depth: usize) -> Value {
    assert!(depth < 64, "the schema nests too deep (a loop of $refs?)");
    let Value::Object(m) = schema else {
        return schema.clone();
    };
    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("a $ref outside the document: {r}"));
        let target = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("a $ref to nothing: {r}"));
        return strict(target, doc, in_all_of, depth + 1);
    }
    let mut out = Map::new();
    for (k, v) in m {
        let v = match (k.as_str(), v) {
            ("properties", Value::Object(props)) => Value::Object(
                props
                    .iter()
                    .map(|(name, s)| (name.clone(), strict(s, doc, false, depth + 1)))
                    .collect(),
            ),
            ("items" | "additionalProperties" | "not", s @ Value::Object(_)) => {
                strict(s, doc, false, depth + 1)
            }
            ("prefixItems" | "oneOf" | "anyOf", Value::Array(list)) => Value::Array(
                list.iter()
                    .map(|s| strict(s, doc, false, depth + 1))
                    .collect(),
            ),
            ("allOf", Value::Array(list)) => Value::Array(
                list.iter()
                    .map(|s| strict(s, doc, true, depth + 1))
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    let object = out.contains_key("properties") || out.contains_key("allOf");
    if object
        && !in_all_of
        && !out.contains_key("additionalProperties")
        && !out.contains_key("unevaluatedProperties")
    {
        out.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// Checks answers against a document and keeps what did not match.
struct Contract {
    doc: Value,
    problems: Vec<String>,
    /// `METHOD pattern status` of every answer checked.
    seen: BTreeSet<String>,
}

impl Contract {
    fn new(doc: Value) -> Contract {
        Contract {
            doc,
            problems: Vec::new(),
            seen: BTreeSet::new(),
        }
    }

    /// Whether an answer (`status`, `content_type`, `body`) to `method pattern` is one the
    /// document describes; why not, otherwise.
    fn check(
        &self,
        method: &str,
        pattern: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let m = method.to_lowercase();
        let op = &self.doc["paths"][pattern][&m];
        if op.is_null() {
            return Err("the document has no such operation".into());
        }
        let response = &op["responses"][status.to_string()];
        if response.is_null() {
            let listed: Vec<&String> = op["responses"]
                .as_object()
                .map(|r| r.keys().collect())
                .unwrap_or_default();
            return Err(format!(
                "answered {status}, which the document does not list (it lists {listed:?}): {}",
                String::from_utf8_lossy(body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        }
        let media = content_type.split(';').next().unwrap_or("").trim();
        let content = response["content"].as_object();
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "answered {status} with a {media} body, documented without one"
                ))
            };
        };
        let Some(described) = content.get(media) else {
            return Err(format!(
                "answered {status} as {media:?}, documented as {:?}",
                content.keys().collect::<Vec<_>>()
            ));
        };
        if media != "application/json" {
            return Ok(());
        }
        let answer: Value = serde_json::from_slice(body)
            .map_err(|e| format!("answered {status} with JSON that does not parse: {e}"))?;
        let schema = strict(&described["schema"], &self.doc, false, 0);
        let validator = jsonschema::draft202012::new(&schema)
            .map_err(|e| format!("the documented schema does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&answer)
            .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "answered {status} with JSON the schema refuses:\n    {}\n    answer: {}",
                errors.join("\n    "),
                answer.to_string().chars().take(600).collect::<String>()
            ))
        }
    }

    /// Sends the request, checks its answer, and gives back its status and JSON (Null
    /// when the body is not JSON).
    async fn call(
        &mut self,
        method: &str,
        pattern: &str,
        rb: RequestBuilder,
    ) -> (StatusCode, Value) {
        let r = rb.send().await.expect("the request is answered");
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.bytes().await.unwrap_or_default();
        self.seen
            .insert(format!("{method} {pattern} {}", status.as_u16()));
        if let Err(why) = self.check(method, pattern, status.as_u16(), &content_type, &body) {
            self.problems
                .push(format!("{method} {pattern} ({status}): {why}"));
        }
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn assert_clean(&self) {
        assert!(
            self.problems.is_empty(),
            "{} answers do not match the OpenAPI document:\n{}",
            self.problems.len(),
            self.problems.join("\n")
        );
    }
}

/// A bearer-token client.
struct Bearer {
    c: Client,
    base: String,
    token: String,
}

impl Bearer {
    fn of(api: &Api) -> Bearer {
        Bearer {
            c: api.c.clone(),
            base: api.base.clone(),
            token: api.token.clone(),
        }
    }
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.c
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }
}

fn small_vm(name: &str) -> Value {
    json!({
        "name": name,
        "flavor": "small",
        "disk": {"type": "new", "pool": "default", "size_gib": 2},
        "install": {"type": "cdrom", "volume": ISO},
        "nic": {"bridge": "br0"},
        "start": true
    })
}

/// An API client's usual calls — reads, a VM's life, errors — each answer checked
/// against the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_the_document() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let b = Bearer::of(&api);
    let mut c = Contract::new(document());
    use Method as M;

    let (s, me) = c
        .call("GET", "/api/v1/whoami", b.req(M::GET, "/api/v1/whoami"))
        .await;
    assert_eq!((s, me["via"].clone()), (StatusCode::OK, json!("token")));
    c.call("GET", "/api/v1/host", b.req(M::GET, "/api/v1/host"))
        .await;
    let (s, list) = c
        .call("GET", "/api/v1/vms", b.req(M::GET, "/api/v1/vms"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        list["vms"].as_array().is_some_and(|v| v.len() > 3),
        "{list}"
    );
    c.call(
        "GET",
        "/api/v1/vms/{name}",
        b.req(M::GET, "/api/v1/vms/web01"),
    )
    .await;
    c.call("GET", "/api/v1/pools", b.req(M::GET, "/api/v1/pools"))
        .await;
    c.call("GET", "/api/v1/networks", b.req(M::GET, "/api/v1/networks"))
        .await;
    c.call(
        "GET",
        "/api/v1/networks/{name}",
        b.req(M::GET, "/api/v1/networks/default"),
    )
    .await;
    c.call(
        "GET",
        "/api/v1/pools/{pool}/volumes",
        b.req(M::GET, "/api/v1/pools/default/volumes"),
    )
    .await;

    // A VM's life.
    let (s, made) = c
        .call(
            "POST",
            "/api/v1/vms",
            b.req(M::POST, "/api/v1/vms").json(&small_vm("oapi01")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let (s, vm) = c
        .call(
            "GET",
            "/api/v1/vms/{name}",
            b.req(M::GET, "/api/v1/vms/oapi01"),
        )
        .await;
    assert_eq!((s, vm["state"].clone()), (StatusCode::OK, json!("running")));
    c.call(
        "PATCH",
        "/api/v1/vms/{name}",
        b.req(M::PATCH, "/api/v1/vms/oapi01")
            .json(&json!({"autostart": true})),
    )
    .await;
    let (s, snap) = c
        .call(
            "POST",
            "/api/v1/vms/{name}/snapshots",
            b.req(M::POST, "/api/v1/vms/oapi01/snapshots")
                .json(&json!({"name": "first", "description": "before"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{snap}");
    c.call(
        "GET",
        "/api/v1/vms/{name}/snapshots",
        b.req(M::GET, "/api/v1/vms/oapi01/snapshots"),
    )
    .await;
    let (s, off) = c
        .call(
            "POST",
            "/api/v1/vms/{name}/{action}",
            b.req(M::POST, "/api/v1/vms/oapi01/force-off"),
        )
        .await;
    assert_eq!(
        (s, off["state"].clone()),
        (StatusCode::OK, json!("shut_off"))
    );
    let (s, job) = c
        .call(
            "POST",
            "/api/v1/vms/{name}/clone",
            b.req(M::POST, "/api/v1/vms/oapi01/clone")
                .json(&json!({"name": "oapi02"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let ended = api.job_end(&job).await;
    c.call(
        "GET",
        "/api/v1/jobs/{id}",
        b.req(M::GET, &format!("/api/v1/jobs/{}", ended["id"])),
    )
    .await;
    c.call("GET", "/api/v1/jobs", b.req(M::GET, "/api/v1/jobs"))
        .await;
    let (s, marked) = c
        .call(
            "POST",
            "/api/v1/vms/{name}/template",
            b.req(M::POST, "/api/v1/vms/oapi02/template"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{marked}");
    c.call(
        "GET",
        "/api/v1/templates",
        b.req(M::GET, "/api/v1/templates"),
    )
    .await;
    c.call(
        "DELETE",
        "/api/v1/vms/{name}/template",
        b.req(M::DELETE, "/api/v1/vms/oapi02/template"),
    )
    .await;
    let (s, vol) = c
        .call(
            "POST",
            "/api/v1/pools/{pool}/volumes",
            b.req(M::POST, "/api/v1/pools/default/volumes")
                .json(&json!({"name": "oapi-data.qcow2", "size_gib": 1, "format": "qcow2"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{vol}");
    let (s, ks) = c
        .call(
            "POST",
            "/api/v1/kickstarts",
            b.req(M::POST, "/api/v1/kickstarts")
                .json(&json!({"name": "oapi.ks", "content": "text\nreboot\n"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ks}");
    c.call(
        "GET",
        "/api/v1/kickstarts/{name}",
        b.req(M::GET, "/api/v1/kickstarts/oapi.ks"),
    )
    .await;
    c.call(
        "GET",
        "/api/v1/kickstarts",
        b.req(M::GET, "/api/v1/kickstarts"),
    )
    .await;
    let (s, net) = c
        .call(
            "POST",
            "/api/v1/networks",
            b.req(M::POST, "/api/v1/networks").json(&json!({
                "name": "oapi-nat", "mode": "nat", "address": "192.168.150.1", "prefix": 24,
                "dhcp_start": "192.168.150.10", "dhcp_end": "192.168.150.99"
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{net}");
    let (s, deleted) = c
        .call(
            "DELETE",
            "/api/v1/vms/{name}",
            b.req(M::DELETE, "/api/v1/vms/oapi02?delete_volumes=true"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{deleted}");

    // Errors.
    let (s, _) = c
        .call(
            "GET",
            "/api/v1/vms/{name}",
            b.req(M::GET, "/api/v1/vms/no-such-vm"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = c
        .call(
            "POST",
            "/api/v1/vms",
            b.req(M::POST, "/api/v1/vms").json(&small_vm("bad/name")),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["error"]["errors"].is_array(), "{e}");
    let mut big = small_vm("oapi03");
    big["units"] = json!(100);
    big.as_object_mut().unwrap().remove("flavor");
    let (s, e) = c
        .call(
            "POST",
            "/api/v1/vms",
            b.req(M::POST, "/api/v1/vms").json(&big),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, _) = c
        .call(
            "POST",
            "/api/v1/vms",
            b.req(M::POST, "/api/v1/vms")
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = c
        .call(
            "GET",
            "/api/v1/host",
            Client::new().get(app.url("/api/v1/host")),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, e) = c
        .call(
            "POST",
            "/api/v1/host/network/plan",
            b.req(M::POST, "/api/v1/host/network/plan")
                .json(&json!({"kind": "bridge", "name": "bad name!"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["error"]["fields"].is_array(), "{e}");

    // A signed-in browser: the session, and its CSRF token for changes.
    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let csrf = app.csrf(&admin, "/vms").await;
    let (s, me) = c
        .call(
            "GET",
            "/api/v1/whoami",
            admin.get(app.url("/api/v1/whoami")),
        )
        .await;
    assert_eq!((s, me["via"].clone()), (StatusCode::OK, json!("session")));
    let (s, _) = c
        .call(
            "POST",
            "/api/v1/vms/{name}/{action}",
            admin.post(app.url("/api/v1/vms/oapi01/start")),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no CSRF header");
    let (s, _) = c
        .call(
            "POST",
            "/api/v1/vms/{name}/{action}",
            admin
                .post(app.url("/api/v1/vms/oapi01/start"))
                .header("X-CSRF-Token", &csrf),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    c.assert_clean();

    // The check has teeth: a schema that says another type, or lacks a property the
    // answer has, is refused.
    let r = b.req(M::GET, "/api/v1/vms").send().await.unwrap();
    let body = r.bytes().await.unwrap();
    let ok = Contract::new(document());
    assert_eq!(
        ok.check("GET", "/api/v1/vms", 200, "application/json", &body),
        Ok(())
    );
    let mut wrong = document();
    wrong["components"]["schemas"]["VmSummary"]["properties"]["name"] = json!({"type": "integer"});
    let refused = Contract::new(wrong).check("GET", "/api/v1/vms", 200, "application/json", &body);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("/vms/0/name")),
        "{refused:?}"
    );
    let mut lacking = document();
    lacking["components"]["schemas"]["VmSummary"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("uuid");
    let refused =
        Contract::new(lacking).check("GET", "/api/v1/vms", 200, "application/json", &body);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("uuid")),
        "{refused:?}"
    );
    let refused = ok.check("GET", "/api/v1/vms", 418, "application/json", &body);
    assert!(refused.is_err(), "an undocumented status passes");
}

/// A path for a route pattern, with the demo host's names.
fn fill(pattern: &str) -> String {
    crate::hostile_routes::fill(pattern)
}

/// Every `/api/v1` route, as a viewer would call it (refusals included) and, for reads,
/// as an admin: each answer is one the document lists, in the shape it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_answers_as_documented() {
    let app: TestApp = spawn_app_with(|cfg| {
        cfg.http.max_connections_per_address = 10_000;
    })
    .await;
    let api = Api::new(&app).await;
    let admin = Bearer::of(&api);
    let admin_pages = app.login("admin", common::ADMIN_PASSWORD).await.0;
    app.add_user(&admin_pages, "vera", "viewer", "a-long-test-password")
        .await;
    let viewer = Bearer {
        token: app.token_for(&admin_pages, "vera").await,
        ..Bearer::of(&api)
    };
    let mut c = Contract::new(document());
    let routes: Vec<_> = route_table()
        .into_iter()
        .filter(|r| r.pattern.starts_with("/api/v1/"))
        .collect();
    for route in &routes {
        let method = route.method.as_str();
        let path = fill(&route.pattern);
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = viewer.req(m.clone(), &path);
        if m != Method::GET {
            rb = rb.json(&json!({}));
        }
        c.call(method, &route.pattern, rb).await;
        if m == Method::GET {
            c.call(method, &route.pattern, admin.req(m, &path)).await;
        }
    }
    eprintln!("{} answers checked", c.seen.len());
    c.assert_clean();
}

/// The document is served to anyone signed in, and the API page shows it.
#[tokio::test]
async fn the_document_and_the_api_page_are_for_signed_in_users() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let stranger = client();
    let r = stranger
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unauthorized", "{e}");

    let r = Bearer::of(&api)
        .req(Method::GET, "/api/v1/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, document());

    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    app.add_user(&admin, "vera", "viewer", "a-long-test-password")
        .await;
    let (viewer, _) = app.login("vera", "a-long-test-password").await;
    let r = viewer
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The page: a sign-in first, then the viewer and its glue as files (no inline
    // script), under the site's usual Content-Security-Policy, linked from the menu.
    let r = stranger.get(app.url("/docs/api")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        common::location(&r).starts_with("/login"),
        "{}",
        common::location(&r)
    );
    let r = viewer.get(app.url("/docs/api")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self';") && csp.contains("style-src 'self';"),
        "{csp}"
    );
    let page = r.text().await.unwrap();
    assert!(
        page.contains("src=\"/static/vendor/swagger-ui/swagger-ui-bundle.js\""),
        "{page}"
    );
    assert!(page.contains("src=\"/static/api_docs.js\""), "{page}");
    assert!(
        page.contains("data-spec=\"/api/v1/openapi.json\""),
        "{page}"
    );
    assert!(!page.contains("<script>"), "an inline script: {page}");
    let host = viewer
        .get(app.url("/host"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        host.contains("href=\"/docs/api\""),
        "the menu links the API page"
    );
    let glue = viewer
        .get(app.url("/static/api_docs.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(glue.status(), StatusCode::OK);
}
