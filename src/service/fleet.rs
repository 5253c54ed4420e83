//! Peer hosts: pairing (single-use code + pinned TLS fingerprint), unpairing, what this
//! host tells its peers, and the cached view of every peer the fleet page shows.
//!
//! A peer's credential is its own kind: it is presented as `Authorization: VirtdeckPeer
//! …`, only its SHA-256 is stored here, and it opens only the `/api/v1/peer/` routes.

use super::{audit, execute, Action, Caller, Denied, Op, Services};
use crate::adapters::http_fetch::peer::{
    fingerprint_for_people, parse_fingerprint, peer_base_url, PeerCallError, PeerClient,
};
use crate::auth::secret::{random_token, sha256_hex};
use crate::domain::fleet::{check_host_name, HostSummary, PeerUnits, PeerVm};
use crate::domain::listing::{ListQuery, Page};
use crate::lifecycle::{FieldError, LcResult, LifecycleError};
use crate::store::fleet::PeerRow;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

type Done<T> = Result<LcResult<T>, Denied>;

/// Prefix of pairing codes, so they are recognisable when pasted.
pub const PAIRING_CODE_PREFIX: &str = "vdpair_";

/// This host's place in the fleet (known once it listens) and the peers' last answers.
#[derive(Default)]
pub struct Fleet {
    own: RwLock<Own>,
    views: Mutex<HashMap<String, PeerView>>,
}

#[derive(Default, Clone)]
struct Own {
    /// `https://host:port/` as bound (when `[fleet] public_url` is not set).
    bound_url: Option<String>,
    /// SHA-256 of this host's TLS certificate; none when it serves plain HTTP.
    fingerprint: Option<String>,
}

/// What this host knows of a peer: its last answer, or why there was none.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub name: String,
    pub url: String,
    pub fingerprint: String,
    /// Shared, not copied: a page reads every peer's VMs.
    pub summary: Option<Arc<HostSummary>>,
    /// When the peer last answered (Unix seconds).
    pub answered_at: Option<i64>,
    /// When it was last asked.
    pub asked_at: Option<i64>,
    /// Why the last request got no answer, if it did not.
    pub error: Option<String>,
}

impl Fleet {
    /// Called once the server listens: the URL it answers at and its certificate.
    pub fn set_own(&self, bound_url: String, fingerprint: Option<String>) {
        if let Ok(mut own) = self.own.write() {
            own.bound_url = Some(bound_url);
            own.fingerprint = fingerprint;
        }
    }

    fn own(&self) -> Own {
        self.own.read().map(|o| o.clone()).unwrap_or_default()
    }

    /// Every paired peer with its last answer, by name.
    pub fn views(&self, peers: &[PeerRow]) -> Vec<PeerView> {
        let known = self.views.lock().map(|v| v.clone()).unwrap_or_default();
        peers
            .iter()
            .map(|p| {
                known.get(&p.name).cloned().unwrap_or_else(|| PeerView {
                    name: p.name.clone(),
                    url: p.url.clone(),
                    fingerprint: p.fingerprint_sha256.clone(),
                    summary: None,
                    answered_at: None,
                    asked_at: None,
                    error: None,
                })
            })
            .collect()
    }

    fn record(&self, view: PeerView) {
        if let Ok(mut v) = self.views.lock() {
            v.insert(view.name.clone(), view);
        }
    }

    fn forget(&self, name: &str) {
        if let Ok(mut v) = self.views.lock() {
            v.remove(name);
        }
    }
}

impl Services {
    /// This host's name in the fleet.
    pub fn fleet_name(&self) -> String {
        self.cfg.fleet.name.clone().unwrap_or_else(|| {
            hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .filter(|h| check_host_name(h).is_ok())
                .unwrap_or_else(|| "virtdeck".into())
        })
    }

    /// The URL peers reach this host at.
    pub fn fleet_url(&self) -> Option<String> {
        self.cfg
            .fleet
            .public_url
            .as_deref()
            .and_then(peer_base_url)
            .map(|u| u.to_string())
            .or_else(|| self.fleet.own().bound_url)
    }

    /// SHA-256 of this host's TLS certificate (none on plain HTTP).
    pub fn fleet_fingerprint(&self) -> Option<String> {
        self.fleet.own().fingerprint
    }

    /// Where a peer's libvirtd reaches this host's libvirtd.
    pub fn fleet_migration_uri(&self) -> String {
        let host = self
            .fleet_url()
            .and_then(|u| url::Url::parse(&u).ok())
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".into());
        crate::domain::fleet::migration_uri(&self.cfg.fleet.migration_uri, &host)
    }

    fn peer_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.fleet.request_timeout_seconds.max(1))
    }

    /// A client for a paired peer, its certificate pinned, with this host's credential.
    pub fn peer_client(&self, peer: &PeerRow) -> Result<PeerClient, PeerCallError> {
        PeerClient::pinned(
            &self.cfg.fetch,
            self.peer_timeout(),
            &peer.url,
            &peer.fingerprint_sha256,
            Some(&peer.outbound_credential),
        )
    }

    /// What this host tells its peers: name, versions, units and VMs (blocking).
    pub fn host_summary(&self) -> LcResult<HostSummary> {
        let facts = self.hv.host_facts()?;
        let list = self
            .vm_list
            .get(self.hv.as_ref(), &self.store, &self.lifecycle)?;
        let usage = crate::domain::capacity::usage(&list.model, &list.claims);
        let vms = list
            .vms
            .iter()
            .map(|v| PeerVm {
                name: v.summary.name.clone(),
                state: v.summary.state,
                units: v.units,
                vcpus: v.summary.vcpus,
                memory_mib: v.summary.memory_mib,
                addresses: v.addresses.clone(),
            })
            .collect();
        Ok(HostSummary {
            name: self.fleet_name(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            libvirt_version: facts.libvirt_version,
            hypervisor_version: facts.hypervisor_version,
            virt_type: self
                .virt_type
                .as_ref()
                .map(|v| v.as_str().to_string())
                .unwrap_or_else(|_| "none".into()),
            units: PeerUnits {
                total: usage.total,
                used: usage.used,
                free: usage.free,
            },
            vms,
            migration_uri: self.fleet_migration_uri(),
            cpu_percent: {
                let now = super::now().clamp(0, i64::from(u32::MAX)) as u32;
                let points: Vec<(u32, f32)> = self
                    .usage
                    .host_points(crate::usage::Window::Recent, now)
                    .iter()
                    .map(|p| (p.t, p.v[crate::domain::usage::rates::CPU]))
                    .collect();
                crate::domain::fleet::cpu_for_peers(&points)
            },
        })
    }

    /// Asks every peer for its summary, each in its own thread so a slow one delays
    /// nobody; records answers and failures (blocking).
    pub fn refresh_peers(&self) {
        let Ok(peers) = self.store.peers() else {
            return;
        };
        std::thread::scope(|scope| {
            for peer in &peers {
                scope.spawn(move || self.refresh_peer(peer));
            }
        });
    }

    fn refresh_peer(&self, peer: &PeerRow) {
        let asked = super::now();
        let previous = self.fleet.views(std::slice::from_ref(peer)).pop();
        let answer = self
            .peer_client(peer)
            .and_then(|c| c.get_json::<HostSummary>("api/v1/peer/summary"));
        let mut view = previous.unwrap_or_else(|| PeerView {
            name: peer.name.clone(),
            url: peer.url.clone(),
            fingerprint: peer.fingerprint_sha256.clone(),
            summary: None,
            answered_at: None,
            asked_at: None,
            error: None,
        });
        view.asked_at = Some(asked);
        match answer {
            Ok(summary) => {
                let mut summary = summary;
                // Sorted once here, so every page merges instead of sorting.
                summary.vms.sort_by(|a, b| a.name.cmp(&b.name));
                view.summary = Some(Arc::new(summary));
                view.answered_at = Some(super::now());
                view.error = None;
            }
            Err(e) => {
                tracing::info!(peer = %peer.name, error = %e, "peer did not answer");
                view.error = Some(e.to_string());
            }
        }
        self.fleet.record(view);
    }
}

/// A pairing code minted by "Invite a peer", shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Invitation {
    pub code: String,
    pub expires_at: i64,
    /// What the other host's admin should see when adding this one.
    pub name: String,
    pub fingerprint: String,
}

/// Mints a single-use pairing code (its digest is stored), valid `[fleet]
/// pairing_code_minutes`.
pub async fn invite(svc: &Arc<Services>, caller: &Caller) -> Done<Invitation> {
    let who = caller.username.clone();
    execute(
        svc,
        caller,
        Op::admin(
            Action::PeerInvite,
            "fleet",
            move |s| {
                let Some(fingerprint) = s.fleet_fingerprint() else {
                    return Err(LifecycleError::Conflict(
                        "This host serves plain HTTP: peers pair over HTTPS only. Turn \
                         [tls] enabled on first."
                            .into(),
                    ));
                };
                let code = format!("{PAIRING_CODE_PREFIX}{}", random_token());
                let now = super::now();
                let expires_at = now + 60 * s.cfg.fleet.pairing_code_minutes as i64;
                s.store
                    .insert_pairing_code(&sha256_hex(&code), &who, now, expires_at)?;
                Ok(Invitation {
                    code,
                    expires_at,
                    name: s.fleet_name(),
                    fingerprint: fingerprint_for_people(&fingerprint),
                })
            },
            |i| {
                format!(
                    "pairing code made, valid until {}",
                    crate::domain::clock::format_time(i.expires_at)
                )
            },
        ),
    )
    .await
}

/// What a first contact with a host shows before pairing: its name and certificate.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    pub name: String,
    pub url: String,
    /// SHA-256 of its certificate, lowercase hex.
    pub fingerprint: String,
    pub version: String,
}

/// What any host answers at `GET /api/v1/fleet/hello` (no secret in it).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Hello {
    pub name: String,
    pub version: String,
}

/// Connects to `url` (any certificate, nothing sent) and reports the host's name and
/// the fingerprint of the certificate it showed, for the admin to compare.
pub async fn first_contact(svc: &Arc<Services>, caller: &Caller, url: &str) -> Done<Contact> {
    super::check_role(svc, caller, crate::auth::Role::Admin, Action::PeerPair, url).await?;
    let (s, url) = (svc.clone(), url.trim().to_string());
    let done = tokio::task::spawn_blocking(move || {
        let Some(base) = peer_base_url(&url) else {
            return Err(field(
                "url",
                "Enter the other host's address as https://host:port, e.g. https://kvm2.lan:9443.",
            ));
        };
        let client = PeerClient::first_contact(&s.cfg.fetch, s.peer_timeout(), base.as_str())
            .map_err(|e| field("url", &e.to_string()))?;
        let hello: Hello = client
            .get_json("api/v1/fleet/hello")
            .map_err(|e| field("url", &format!("{e}")))?;
        let fingerprint = client
            .seen_fingerprint()
            .ok_or_else(|| field("url", "The host did not show a TLS certificate."))?;
        Ok(Contact {
            name: hello.name,
            url: base.to_string(),
            fingerprint,
            version: hello.version,
        })
    })
    .await;
    Ok(done.unwrap_or_else(|e| Err(LifecycleError::failed(format!("internal error: {e}")))))
}

fn field(name: &'static str, message: &str) -> LifecycleError {
    LifecycleError::Invalid(vec![FieldError {
        field: name,
        message: message.to_string(),
    }])
}

/// What a host sends the host it pairs with (`POST /api/v1/fleet/pair`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    pub code: String,
    /// The asking host: its name, URL and certificate fingerprint.
    pub name: String,
    pub url: String,
    pub fingerprint: String,
    /// What the invited host will present when it calls the asking host.
    pub credential: String,
}

/// The invited host's answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PairAnswer {
    pub name: String,
    /// What the asking host will present when it calls the invited host.
    pub credential: String,
}

/// Pairs with the host at `url` using the code its admin gave, once the admin confirmed
/// the certificate `fingerprint` it showed: both hosts then hold each other.
pub async fn pair(
    svc: &Arc<Services>,
    caller: &Caller,
    url: &str,
    code: &str,
    fingerprint: &str,
) -> Done<PeerRow> {
    let (url, code, fingerprint) = (
        url.trim().to_string(),
        code.trim().to_string(),
        fingerprint.to_string(),
    );
    let who = caller.username.clone();
    execute(
        svc,
        caller,
        Op::admin(
            Action::PeerPair,
            url.clone(),
            move |s| pair_now(s, &who, &url, &code, &fingerprint),
            |p: &PeerRow| {
                format!(
                    "paired with {} at {} (certificate SHA-256 {})",
                    p.name,
                    p.url,
                    fingerprint_for_people(&p.fingerprint_sha256)
                )
            },
        ),
    )
    .await
}

fn pair_now(
    s: &Services,
    who: &str,
    url: &str,
    code: &str,
    fingerprint: &str,
) -> LcResult<PeerRow> {
    let mut errors = Vec::new();
    let base = peer_base_url(url);
    if base.is_none() {
        errors.push(FieldError {
            field: "url",
            message: "Enter the other host's address as https://host:port.".into(),
        });
    }
    if !code.starts_with(PAIRING_CODE_PREFIX) || code.len() > 100 {
        errors.push(FieldError {
            field: "code",
            message: format!(
                "Paste the pairing code from the other host's Fleet page (it starts with {PAIRING_CODE_PREFIX})."
            ),
        });
    }
    let pinned = parse_fingerprint(fingerprint);
    if pinned.is_none() {
        errors.push(FieldError {
            field: "fingerprint",
            message:
                "Check the host first: its certificate fingerprint is confirmed before pairing."
                    .into(),
        });
    }
    let (Some(base), Some(pinned)) = (base, pinned) else {
        return Err(LifecycleError::Invalid(errors));
    };
    if !errors.is_empty() {
        return Err(LifecycleError::Invalid(errors));
    }
    let (Some(own_url), Some(own_fingerprint)) = (s.fleet_url(), s.fleet_fingerprint()) else {
        return Err(LifecycleError::Conflict(
            "This host serves plain HTTP: peers pair over HTTPS only. Turn [tls] enabled on first."
                .into(),
        ));
    };
    let theirs_for_us = format!("vdpeer_{}", random_token());
    let client = PeerClient::pinned(&s.cfg.fetch, s.peer_timeout(), base.as_str(), &pinned, None)
        .map_err(|e| LifecycleError::failed(e.to_string()))?;
    let answer: PairAnswer = client
        .post_json(
            "api/v1/fleet/pair",
            &PairRequest {
                code: code.to_string(),
                name: s.fleet_name(),
                url: own_url,
                fingerprint: own_fingerprint,
                credential: theirs_for_us.clone(),
            },
        )
        .map_err(|e| match e {
            PeerCallError::Refused { message, .. } => field("code", &message),
            other => LifecycleError::failed(other.to_string()),
        })?;
    if check_host_name(&answer.name).is_err() || !credential_ok(&answer.credential) {
        return Err(LifecycleError::failed(
            "The other host's answer was not a pairing: nothing was stored.",
        ));
    }
    let row = PeerRow {
        name: answer.name.clone(),
        url: base.to_string(),
        fingerprint_sha256: pinned,
        outbound_credential: answer.credential,
        inbound_credential_sha256: sha256_hex(&theirs_for_us),
        paired_by: who.to_string(),
        paired_at: super::now(),
    };
    match s.store.insert_peer(&row) {
        Ok(()) => {}
        Err(StoreError::Duplicate(_)) => {
            // The other host stored us: undo that, so neither holds a half pairing.
            if let Ok(c) = s.peer_client(&row) {
                let _ = c.post_json::<_, serde_json::Value>("api/v1/peer/unpair", &());
            }
            return Err(LifecycleError::Conflict(format!(
                "A peer named {} is paired already. Unpair it first if it was reinstalled.",
                row.name
            )));
        }
        Err(e) => return Err(e.into()),
    }
    s.refresh_peer(&row);
    Ok(row)
}

fn credential_ok(c: &str) -> bool {
    (32..=200).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'))
}

/// Why an incoming pairing was refused (the asking host shows the sentence).
#[derive(Debug, thiserror::Error)]
pub enum PairRefused {
    #[error("The pairing code is not valid: it was used already, it expired, or it was mistyped. Make a new one with Invite a peer on the other host.")]
    Code,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("The pairing could not be stored: {0}")]
    Store(#[from] StoreError),
}

/// The invited side of a pairing: the code must be one this host minted and not used or
/// expired; it is used up either way. Audited here with the asking host's name.
pub async fn accept_pairing(
    svc: &Arc<Services>,
    remote_addr: &str,
    req: PairRequest,
) -> Result<PairAnswer, PairRefused> {
    let (s, remote) = (svc.clone(), remote_addr.to_string());
    let done = tokio::task::spawn_blocking(move || {
        let asked_name = req.name.clone();
        let r = accept_now(&s, &req);
        let (actor, result, detail) = match &r {
            Ok(_) => (
                format!("peer:{asked_name}"),
                "ok",
                format!(
                    "paired with {} at {} (certificate SHA-256 {})",
                    asked_name,
                    req.url,
                    fingerprint_for_people(&req.fingerprint)
                ),
            ),
            Err(e) => ("-".to_string(), "refused", e.to_string()),
        };
        let caller = Caller {
            username: actor,
            remote_addr: remote,
            role: crate::auth::Role::Viewer,
        };
        audit::write(
            &s.store,
            &caller,
            Action::PeerPair.as_str(),
            &asked_name.chars().take(63).collect::<String>(),
            result,
            &detail,
        );
        r
    })
    .await;
    done.unwrap_or_else(|e| Err(PairRefused::Invalid(format!("internal error: {e}"))))
}

fn accept_now(s: &Services, req: &PairRequest) -> Result<PairAnswer, PairRefused> {
    // The code first: without a valid one nothing else is looked at or told.
    if s.store
        .take_pairing_code(&sha256_hex(req.code.trim()), super::now())?
        .is_none()
    {
        return Err(PairRefused::Code);
    }
    check_host_name(&req.name).map_err(PairRefused::Invalid)?;
    let url = peer_base_url(&req.url).ok_or_else(|| {
        PairRefused::Invalid("The asking host's URL is not an https:// URL.".into())
    })?;
    let fingerprint = parse_fingerprint(&req.fingerprint).ok_or_else(|| {
        PairRefused::Invalid("The asking host's certificate fingerprint is not a SHA-256.".into())
    })?;
    if !credential_ok(&req.credential) {
        return Err(PairRefused::Invalid(
            "The asking host's credential is not usable.".into(),
        ));
    }
    if req.name == s.fleet_name() {
        return Err(PairRefused::Conflict(format!(
            "Both hosts are named {}: set [fleet] name on one of them.",
            req.name
        )));
    }
    let ours_for_them = format!("vdpeer_{}", random_token());
    let row = PeerRow {
        name: req.name.clone(),
        url: url.to_string(),
        fingerprint_sha256: fingerprint,
        outbound_credential: req.credential.clone(),
        inbound_credential_sha256: sha256_hex(&ours_for_them),
        paired_by: format!("peer:{}", req.name),
        paired_at: super::now(),
    };
    match s.store.insert_peer(&row) {
        Ok(()) => {}
        Err(StoreError::Duplicate(_)) => {
            return Err(PairRefused::Conflict(format!(
                "A peer named {} is paired already here. Unpair it there first.",
                req.name
            )))
        }
        Err(e) => return Err(e.into()),
    }
    s.fleet.forget(&row.name);
    Ok(PairAnswer {
        name: s.fleet_name(),
        credential: ours_for_them,
    })
}

/// Unpairs `name`: tells the peer (which forgets this host), then forgets it here. A
/// peer that cannot be told is forgotten anyway: its credential stops working here.
pub async fn unpair(svc: &Arc<Services>, caller: &Caller, name: &str) -> Done<String> {
    let n = name.to_string();
    execute(
        svc,
        caller,
        Op::admin(
            Action::PeerUnpair,
            name,
            move |s| {
                let Some(peer) = s.store.peer(&n)? else {
                    return Err(LifecycleError::NotFound(format!("There is no peer named {n}.")));
                };
                let told = s
                    .peer_client(&peer)
                    .and_then(|c| c.post_json::<_, serde_json::Value>("api/v1/peer/unpair", &()));
                s.store.delete_peer(&n)?;
                s.fleet.forget(&n);
                Ok(match told {
                    Ok(_) => format!("{n} was told and forgot this host too"),
                    Err(e) => format!(
                        "{n} could not be told ({e}); its credential no longer works here — unpair this host there too"
                    ),
                })
            },
            |told: &String| told.clone(),
        ),
    )
    .await
}

/// A peer unpairs this host from its side: forget it here too.
pub async fn peer_unpaired(svc: &Arc<Services>, peer: PeerRow, remote_addr: &str) -> LcResult<()> {
    let (s, remote) = (svc.clone(), remote_addr.to_string());
    let done = tokio::task::spawn_blocking(move || {
        s.store.delete_peer(&peer.name)?;
        s.fleet.forget(&peer.name);
        audit::write(
            &s.store,
            &Caller {
                username: format!("peer:{}", peer.name),
                remote_addr: remote,
                role: crate::auth::Role::Viewer,
            },
            Action::PeerUnpair.as_str(),
            &peer.name,
            "ok",
            "the peer unpaired this host; its credential no longer works here",
        );
        Ok(())
    })
    .await;
    done.unwrap_or_else(|e| Err(LifecycleError::failed(format!("internal error: {e}"))))
}

/// Every host of the fleet for the fleet page and API: this one (asked now) first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetHost {
    pub name: String,
    pub url: Option<String>,
    /// This host (the one answering).
    pub local: bool,
    pub reachable: bool,
    /// Why the last request got no answer.
    pub error: Option<String>,
    /// When its part was last answered; its age is what the page shows.
    pub answered_at: Option<i64>,
    #[schema(value_type = Option<HostSummary>)]
    #[schema(value_type = Option<HostSummary>)]
    pub summary: Option<Arc<HostSummary>>,
}

/// This host and every peer from the cache (never waits for a peer) (blocking).
pub fn fleet_hosts(s: &Services) -> LcResult<Vec<FleetHost>> {
    let mut here = s.host_summary()?;
    here.vms.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hosts = vec![FleetHost {
        name: here.name.clone(),
        url: s.fleet_url(),
        local: true,
        reachable: true,
        error: None,
        answered_at: Some(super::now()),
        summary: Some(Arc::new(here)),
    }];
    let peers = s.store.peers()?;
    for v in s.fleet.views(&peers) {
        hosts.push(FleetHost {
            reachable: v.error.is_none() && v.summary.is_some(),
            error: match (&v.error, v.asked_at) {
                (Some(e), _) => Some(e.clone()),
                (None, None) => Some("Not asked yet.".into()),
                _ => None,
            },
            name: v.name,
            url: Some(v.url),
            local: false,
            answered_at: v.answered_at,
            summary: v.summary,
        });
    }
    Ok(hosts)
}

/// A VM of the fleet: where it runs, and the link to its page on its own host.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetVm {
    pub host: String,
    pub local: bool,
    pub url: String,
    #[serde(flatten)]
    pub vm: crate::domain::fleet::PeerVm,
}

/// Every VM of every host that answered, filtered like the local list, one page.
pub fn fleet_vms(hosts: &[FleetHost], query: &ListQuery) -> (Vec<FleetVm>, Page) {
    // Each host's VMs come sorted by name; the page is a merge of those lists, so only
    // its own rows are compared, ordered and copied (21,000 VMs cost one filtering pass).
    let lists: Vec<(&FleetHost, Vec<&PeerVm>)> = hosts
        .iter()
        .filter_map(|h| h.summary.as_ref().map(|s| (h, s)))
        .map(|(h, s)| {
            let vms = s
                .vms
                .iter()
                .filter(|vm| query.admits(&vm.name, vm.state, &[]))
                .collect();
            (h, vms)
        })
        .collect();
    let page = Page::of(query, lists.iter().map(|(_, v)| v.len()).sum());
    let mut next: Vec<usize> = vec![0; lists.len()];
    let mut rows = Vec::with_capacity(page.end - page.start);
    for at in 0..page.end {
        // The smallest head among the lists (ties: by host name).
        let Some(i) = (0..lists.len())
            .filter(|&i| next[i] < lists[i].1.len())
            .min_by(|&x, &y| {
                let (hx, vx) = (lists[x].0, lists[x].1[next[x]]);
                let (hy, vy) = (lists[y].0, lists[y].1[next[y]]);
                vx.name.cmp(&vy.name).then(hx.name.cmp(&hy.name))
            })
        else {
            break;
        };
        let (h, vm) = (lists[i].0, lists[i].1[next[i]]);
        next[i] += 1;
        if at < page.start {
            continue;
        }
        let base = if h.local {
            "/".to_string()
        } else {
            h.url.clone().unwrap_or_default()
        };
        rows.push(FleetVm {
            host: h.name.clone(),
            local: h.local,
            url: format!("{base}vms/{}", vm.name),
            vm: vm.clone(),
        });
    }
    (rows, page)
}

/// Whether a VM of a given size fits on one host, by that host's own rule.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SizeFit {
    pub host: String,
    /// Units a VM of this size takes there (hosts split differently).
    pub units: u32,
    pub free: u32,
    pub fits: bool,
    /// Why it does not fit, or why the host could not be asked.
    pub reason: Option<String>,
}

/// A size to place: vCPUs and memory.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SizeAsk {
    pub vcpus: u32,
    pub memory_mib: u64,
}

impl SizeAsk {
    /// The size as typed, or the field errors.
    pub fn parse(vcpus: &str, memory_mib: &str) -> Result<SizeAsk, Vec<FieldError>> {
        let mut errors = Vec::new();
        let v = vcpus
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=1024).contains(v));
        if v.is_none() {
            errors.push(FieldError {
                field: "fit_vcpus",
                message: "Enter 1 to 1024 vCPUs.".into(),
            });
        }
        let m = memory_mib
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|m| (64..=16 * 1024 * 1024).contains(m));
        if m.is_none() {
            errors.push(FieldError {
                field: "fit_memory_mib",
                message: "Enter the memory in MiB, 64 to 16777216.".into(),
            });
        }
        match (v, m) {
            (Some(vcpus), Some(memory_mib)) => Ok(SizeAsk { vcpus, memory_mib }),
            _ => Err(errors),
        }
    }
}

/// Whether `size` fits on this host now (blocking).
pub fn fit_size_here(s: &Services, size: SizeAsk) -> LcResult<SizeFit> {
    let capacity = crate::lifecycle::capacity(s.hv.as_ref(), &s.store, &s.lifecycle)?;
    let units = capacity
        .model
        .units_for(crate::domain::capacity::Size {
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
        })
        .max(1);
    let free = capacity.usage.free;
    let draining = s.store.draining()?;
    let reason = if let Some(d) = &draining {
        Some(format!("It is being emptied for maintenance ({d})."))
    } else if units > free {
        Some(format!(
            "It needs {} and {} free.",
            crate::domain::capacity::units_text(units),
            crate::domain::capacity::units_text(free)
        ))
    } else {
        None
    };
    Ok(SizeFit {
        host: s.fleet_name(),
        units,
        free,
        fits: reason.is_none(),
        reason,
    })
}

/// Where a VM of `size` fits: this host and every peer, each by its own rule, asked at
/// once (blocking).
pub fn where_fits(s: &Services, size: SizeAsk) -> LcResult<Vec<SizeFit>> {
    let mut out = vec![fit_size_here(s, size)?];
    let peers = s.store.peers()?;
    let answers: Vec<SizeFit> = std::thread::scope(|scope| {
        let asks: Vec<_> = peers
            .iter()
            .map(|p| {
                scope.spawn(move || {
                    s.peer_client(p)
                        .and_then(|c| c.post_json::<_, SizeFit>("api/v1/peer/fit-size", &size))
                        .unwrap_or_else(|e| SizeFit {
                            host: p.name.clone(),
                            units: 0,
                            free: 0,
                            fits: false,
                            reason: Some(e.to_string()),
                        })
                })
            })
            .collect();
        asks.into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| SizeFit {
                    host: String::new(),
                    units: 0,
                    free: 0,
                    fits: false,
                    reason: Some("internal error".into()),
                })
            })
            .collect()
    });
    out.extend(answers);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::vm::VmState;

    fn host(name: &str, local: bool, vms: &[(&str, VmState)]) -> FleetHost {
        FleetHost {
            name: name.into(),
            url: Some(format!("https://{name}:9443/")),
            local,
            reachable: true,
            error: None,
            answered_at: Some(1),
            summary: Some(Arc::new(HostSummary {
                name: name.into(),
                version: "0".into(),
                libvirt_version: String::new(),
                hypervisor_version: String::new(),
                virt_type: "qemu".into(),
                units: PeerUnits::default(),
                vms: vms
                    .iter()
                    .map(|(n, state)| PeerVm {
                        name: n.to_string(),
                        state: *state,
                        units: 1,
                        vcpus: 1,
                        memory_mib: 512,
                        addresses: vec![],
                    })
                    .collect(),
                migration_uri: String::new(),
                cpu_percent: vec![],
            })),
        }
    }

    #[test]
    fn the_fleet_list_merges_every_hosts_sorted_vms_into_pages() {
        use VmState::*;
        let hosts = vec![
            host(
                "a",
                true,
                &[("db", Running), ("web", ShutOff), ("x", Running)],
            ),
            host(
                "b",
                false,
                &[("api", Running), ("db", Running), ("zz", Paused)],
            ),
        ];
        let q = |page: &str, state: &str| ListQuery::from_params("", state, page, "25");
        let (rows, page) = fleet_vms(&hosts, &q("1", ""));
        let names: Vec<String> = rows
            .iter()
            .map(|r| format!("{}@{}", r.vm.name, r.host))
            .collect();
        assert_eq!(names, ["api@b", "db@a", "db@b", "web@a", "x@a", "zz@b"]);
        assert_eq!(page.matching, 6);
        assert_eq!(rows[0].url, "https://b:9443/vms/api");
        assert_eq!(rows[1].url, "/vms/db");
        let (rows, page) = fleet_vms(&hosts, &q("1", "running"));
        assert_eq!(page.matching, 4);
        assert!(rows.iter().all(|r| r.vm.state == Running));
        // A later page starts where the one before ended.
        let many: Vec<(String, VmState)> =
            (0..60).map(|i| (format!("vm{i:02}"), Running)).collect();
        let refs: Vec<(&str, VmState)> = many.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        let hosts = vec![host("a", true, &refs[..30]), host("b", false, &refs[30..])];
        let (rows, page) = fleet_vms(&hosts, &q("3", ""));
        assert_eq!((page.number, page.matching), (3, 60));
        let names: Vec<&str> = rows.iter().map(|r| r.vm.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"vm50"));
        assert_eq!(names.len(), 10);
    }
}
