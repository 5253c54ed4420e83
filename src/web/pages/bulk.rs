//! Bulk actions from the VM list: the selected VMs (or every VM matching the list's
//! filter) → one job per VM; the batch's page shows each VM's outcome.

use super::super::errors::{html, AppError};
use super::super::kit::see_other;
use super::super::session::Authed;
use super::super::{db, lc, AppState};
use super::Chrome;
use crate::domain::listing::ListQuery;
use crate::lifecycle::LifecycleError;
use crate::service::bulk::{self, BulkAction};
use crate::store::jobs::JobRow;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;

/// The bulk form: repeated `vm` fields (the ticked rows), or `all=1` with the list's
/// filter (`q`, `state`, `tag`); `action`, and `add_tag` for "tag". Repeated keys are read
/// from the raw body (serde's form decoding keeps only one).
struct BulkForm {
    csrf: String,
    action: String,
    add_tag: String,
    vms: Vec<String>,
    all: bool,
    q: String,
    state: String,
    tag: String,
    back: String,
}

fn parse_form(body: &[u8]) -> BulkForm {
    let mut f = BulkForm {
        csrf: String::new(),
        action: String::new(),
        add_tag: String::new(),
        vms: Vec::new(),
        all: false,
        q: String::new(),
        state: String::new(),
        tag: String::new(),
        back: String::new(),
    };
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = v.into_owned();
        match k.as_ref() {
            "csrf" => f.csrf = v,
            "action" => f.action = v,
            "add_tag" => f.add_tag = v,
            "vm" => f.vms.push(v),
            "all" => f.all = v == "1",
            "q" => f.q = v,
            "state" => f.state = v,
            "tag" => f.tag = v,
            "back" => f.back = v,
            _ => {}
        }
    }
    f
}

/// Where the list was: a `/vms` path of plain characters, else the list itself.
fn list_path(back: &str) -> String {
    let plain = back.bytes().all(|b| b.is_ascii_graphic());
    match back.strip_prefix("/vms") {
        Some(rest) if plain && (rest.is_empty() || rest.starts_with('?')) => back.to_string(),
        _ => "/vms".to_string(),
    }
}

pub async fn bulk_form(
    state: web::Data<AppState>,
    who: Authed,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let f = parse_form(&body);
    who.check_csrf(Some(&f.csrf))?;
    let back = list_path(&f.back);
    let action = match BulkAction::parse(&f.action, Some(&f.add_tag)) {
        Ok(a) => a,
        Err(e) => return Ok(see_other(&who, &back, &e.to_string())),
    };
    let vms = if f.all {
        let query = ListQuery::from_params(&f.q, &f.state, "", "").with_tag(&f.tag);
        let list = lc(&state, |s| {
            s.vm_list.get(s.hv.as_ref(), &s.store, &s.lifecycle)
        })
        .await?;
        bulk::names_matching(&list.vms, &query)
    } else {
        f.vms
    };
    match bulk::start(&state.svc, &who.caller(), action, vms).await? {
        Ok(b) => Ok(HttpResponse::SeeOther()
            .insert_header(("location", format!("/vms/bulk/{}", b.batch)))
            .finish()),
        Err(LifecycleError::Invalid(errors)) => {
            let message = errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            Ok(see_other(&who, &back, &message))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "vm_bulk.html")]
struct BulkPage {
    chrome: Chrome,
    batch: i64,
    action: String,
    jobs: Vec<JobRow>,
    running: usize,
    succeeded: usize,
    failed: usize,
}

pub async fn bulk_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let batch = path.into_inner();
    let jobs = db(&state, move |s| s.batch_jobs(batch)).await?;
    if jobs.is_empty() {
        return Err(AppError::not_found(
            "There is no such bulk action; see Jobs for what ran.",
        ));
    }
    let counts = bulk::BatchCounts::of(&jobs);
    Ok(html(
        StatusCode::OK,
        &BulkPage {
            chrome: Chrome::new(&who, "vms"),
            batch,
            action: jobs[0].source.clone(),
            running: counts.running,
            succeeded: counts.succeeded,
            failed: counts.failed,
            jobs,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_vm_fields_are_all_kept() {
        let f = parse_form(b"csrf=x&action=start&vm=a&vm=b%2Dc&all=0&back=%2Fvms%3Fq%3Dw");
        assert_eq!(f.vms, vec!["a", "b-c"]);
        assert_eq!(f.action, "start");
        assert!(!f.all);
        assert_eq!(list_path(&f.back), "/vms?q=w");
        assert_eq!(list_path("https://elsewhere/"), "/vms");
        assert_eq!(list_path("/vmsx"), "/vms");
    }
}
