//! Kickstart operations: create, update, delete (refused while an install uses one).
//! Admins make them (kickstarts hold root passwords).

use super::{execute, Action, Caller, Denied, Op, Services};
use crate::lifecycle::kickstart::{self as ks, KickstartRequest};
use crate::lifecycle::LcResult;
use crate::store::kickstarts::KickstartRow;
use std::sync::Arc;

type Done<T> = Result<LcResult<T>, Denied>;

pub async fn create(
    svc: &Arc<Services>,
    caller: &Caller,
    req: KickstartRequest,
) -> Done<KickstartRow> {
    let (target, actor) = (req.name.trim().to_string(), caller.username.clone());
    execute(
        svc,
        caller,
        Op::admin(
            Action::KickstartCreate,
            target,
            move |s| ks::create(&s.store, &req, &actor, super::now()),
            |k: &KickstartRow| format!("{} bytes", k.content.len()),
        ),
    )
    .await
}

pub async fn update(
    svc: &Arc<Services>,
    caller: &Caller,
    req: KickstartRequest,
) -> Done<KickstartRow> {
    let (target, actor) = (req.name.clone(), caller.username.clone());
    execute(
        svc,
        caller,
        Op::admin(
            Action::KickstartUpdate,
            target,
            move |s| ks::update(&s.store, &req, &actor, super::now()),
            |k: &KickstartRow| format!("{} bytes", k.content.len()),
        ),
    )
    .await
}

pub async fn delete(svc: &Arc<Services>, caller: &Caller, name: String) -> Done<()> {
    let target = name.clone();
    execute(
        svc,
        caller,
        Op::admin(
            Action::KickstartDelete,
            target,
            move |s| ks::delete(s.hv.as_ref(), &s.store, &name, super::now()),
            |()| "deleted".into(),
        ),
    )
    .await
}
