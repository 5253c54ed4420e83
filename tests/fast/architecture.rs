//! The layout's rules, checked on the source: each fails when a forbidden import or a
//! second audit path appears. Reads `src/` as text (imports and calls), so a rule names
//! the file and line that breaks it.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file under `src/`, as (path relative to the crate, text without
/// comment lines).
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            // The file's own code: its unit tests (from `#[cfg(test)]` on) are left out.
            let full = fs::read_to_string(&p).unwrap();
            let code = full.split("\n#[cfg(test)]").next().unwrap_or_default();
            let text: String = code
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("//") {
                        ""
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            (rel, text)
        })
        .collect()
}

/// Lines of files matching `in_files` that contain any of `needles`, except in
/// `allowed` files: "path:line: text".
fn offenders(
    in_files: impl Fn(&str) -> bool,
    needles: &[&str],
    allowed: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut bad = Vec::new();
    for (path, text) in sources() {
        if !in_files(&path) || allowed(&path) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                bad.push(format!("{path}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    bad
}

#[test]
fn only_the_web_layer_and_the_console_socket_code_know_actix() {
    let bad = offenders(
        |_| true,
        &["actix_web", "actix_ws", "actix_rt"],
        |p| {
            p.starts_with("src/web/")
                || p == "src/console/proxy.rs"
                // Starts the runtime the server runs on.
                || p == "src/main.rs"
        },
    );
    assert!(bad.is_empty(), "actix outside web/:\n{}", bad.join("\n"));
}

#[test]
fn only_the_libvirt_adapter_imports_virt() {
    let bad = offenders(
        |_| true,
        &["use virt::", " virt::", "(virt::", "virt_sys"],
        |p| p == "src/adapters/libvirt.rs" || p.starts_with("src/adapters/libvirt/"),
    );
    assert!(
        bad.is_empty(),
        "virt outside adapters/libvirt:\n{}",
        bad.join("\n")
    );
}

#[test]
fn each_outside_system_is_reached_only_through_its_adapter() {
    for (needles, adapter, what) in [
        (&["ureq"][..], "src/adapters/http_fetch/", "outbound HTTP"),
        (
            &["rtnetlink", "netlink_packet"][..],
            "src/adapters/netlink.rs",
            "netlink",
        ),
        (
            &["Command::new", "process::Command"][..],
            "src/adapters/",
            "programs",
        ),
        (&["rusqlite"][..], "src/store/", "SQLite"),
    ] {
        let bad = offenders(|_| true, needles, |p| p.starts_with(adapter));
        assert!(
            bad.is_empty(),
            "{what} outside {adapter}:\n{}",
            bad.join("\n")
        );
    }
}

#[test]
fn the_domain_does_no_io_and_knows_no_adapter() {
    let bad = offenders(
        |p| p.starts_with("src/domain/"),
        &[
            "actix",
            "rusqlite",
            "virt::",
            "ureq",
            "std::fs",
            "std::process",
            "std::net::TcpStream",
            "tokio",
            "crate::store",
            "crate::hypervisor",
            "crate::web",
            "crate::service",
            "crate::lifecycle",
        ],
        |_| false,
    );
    assert!(bad.is_empty(), "domain doing I/O:\n{}", bad.join("\n"));
}

#[test]
fn the_service_layer_knows_nothing_of_http() {
    let bad = offenders(
        |p| p.starts_with("src/service/"),
        &["actix", "crate::web", "super::web", "HttpResponse"],
        |_| false,
    );
    assert!(bad.is_empty(), "HTTP in service/:\n{}", bad.join("\n"));
}

#[test]
fn api_handlers_and_page_handlers_never_import_each_other() {
    let api = |p: &str| {
        p == "src/web/api.rs" || p == "src/web/api_storage.rs" || p == "src/web/hostnet_api.rs"
    };
    let bad = offenders(
        api,
        &["pages::", "super::pages", "crate::web::pages"],
        |_| false,
    );
    assert!(bad.is_empty(), "API imports pages:\n{}", bad.join("\n"));
    let bad = offenders(
        |p| p.starts_with("src/web/pages/"),
        &["super::super::api", "crate::web::api", "web::api::"],
        |_| false,
    );
    assert!(bad.is_empty(), "pages import the API:\n{}", bad.join("\n"));
}

/// A change is audited once, by `service::execute`; the web layer records only events
/// that are not changes (sign-ins, refusals before a change is known, console sessions,
/// reads of secrets), and the store is written only by the audit writer.
#[test]
fn changes_are_audited_only_by_the_service_layer() {
    let writers = offenders(
        |_| true,
        &["append_audit(", "append_audit_folded("],
        |p| {
            p.starts_with("src/store/")
                || p == "src/service/audit.rs"
                // Job outcomes, written by the job's own thread when it ends.
                || p == "src/lifecycle/jobs.rs"
                // A host change rolled back by its missed confirmation deadline (a timer,
                // not a request).
                || p == "src/hostcfg/mod.rs"
                // The retention prune's own entry.
                || p == "src/web/audit.rs"
        },
    );
    assert!(
        writers.is_empty(),
        "audit rows written outside the audit writer:\n{}",
        writers.join("\n")
    );

    // No `audit::record` in the web layer names a change: those go through execute().
    let changes: Vec<&str> = virtdeck::service::Action::ALL
        .iter()
        .map(|a| a.as_str())
        .collect();
    let mut bad = Vec::new();
    for (path, text) in sources() {
        if !path.starts_with("src/web/") {
            continue;
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("audit::record(") {
            let call = &rest[at..rest.len().min(at + 400)];
            let end = call.find(".await").unwrap_or(call.len());
            for name in &changes {
                if call[..end].contains(&format!("\"{name}\"")) {
                    bad.push(format!("{path}: audit::record(… \"{name}\" …)"));
                }
            }
            rest = &rest[at + 1..];
        }
    }
    assert!(
        bad.is_empty(),
        "changes audited outside service::execute:\n{}",
        bad.join("\n")
    );
}

#[test]
fn routes_are_registered_only_through_the_route_table() {
    let bad = offenders(
        |p| p.starts_with("src/web/"),
        &[".route(\"", "web::resource(", ".service(web::scope"],
        |p| p == "src/web/routes.rs",
    );
    assert!(
        bad.is_empty(),
        "routes outside web::routes::RouteExt:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_lifecycle_takes_its_own_settings_not_the_whole_config() {
    let bad = offenders(
        |p| p.starts_with("src/lifecycle/"),
        &[
            "config::Config",
            "&Config",
            "crate::web",
            "crate::service",
            "actix",
        ],
        |_| false,
    );
    assert!(
        bad.is_empty(),
        "lifecycle sees Config or a layer above it:\n{}",
        bad.join("\n")
    );
    // And config.rs owns every settings struct: it imports no layer's types.
    let bad = offenders(
        |p| p == "src/config.rs",
        &["crate::lifecycle", "crate::web", "crate::service"],
        |_| false,
    );
    assert!(
        bad.is_empty(),
        "config.rs imports a layer:\n{}",
        bad.join("\n")
    );
}

/// Long argument lists are grouped into context structs (`lifecycle::Ctx` and `By`,
/// `lifecycle::jobs::JobCtx` and `RunningJob`, `console::proxy::Browser` and `Pump`…),
/// never silenced.
#[test]
fn no_function_needs_a_too_many_arguments_allow() {
    let bad = offenders(
        |p| p.starts_with("src/"),
        &["too_many_arguments"],
        |_| false,
    );
    assert!(
        bad.is_empty(),
        "a too_many_arguments allow (pass a context struct instead):\n{}",
        bad.join("\n")
    );
}

/// One mapping of errors to HTTP statuses (`web::errors`: `ErrorKind::status`,
/// `kind_of`): no handler picks a status for a change's error by hand.
#[test]
fn errors_map_to_statuses_in_one_place() {
    let bad = offenders(
        |p| p.starts_with("src/web/"),
        &["StatusCode::BAD_GATEWAY"],
        |p| p == "src/web/errors.rs",
    );
    assert!(
        bad.is_empty(),
        "a status for an error chosen outside web::errors:\n{}",
        bad.join("\n")
    );
}
