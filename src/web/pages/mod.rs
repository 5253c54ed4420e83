//! Server-rendered pages. Each handler: authenticate, check role and CSRF, call the
//! store or the hypervisor off the runtime, fill a view model, render.

pub mod account;
pub mod admin;
pub mod backups;
pub mod bulk;
pub mod fleet;
pub mod host;
pub mod hostnet;
pub mod libvirt_networks;
pub mod storage;
pub mod templates;
pub mod two_factor;
pub mod vm_changes;
pub mod vms;

use super::session::Authed;
use crate::auth::Role;

/// What every signed-in page shows around its content.
pub struct Chrome {
    pub username: String,
    pub role: Role,
    pub csrf: String,
    pub active: &'static str,
}

impl Chrome {
    pub fn new(who: &Authed, active: &'static str) -> Self {
        Chrome {
            username: who.username.clone(),
            role: who.role,
            csrf: who.csrf().to_string(),
            active,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Operators and admins: they change VMs and see the jobs doing it.
    pub fn can_operate(&self) -> bool {
        self.role.allows(Role::Operator)
    }
}

/// "1 unit", "2 units": a count of compute units in a sentence.
pub use crate::domain::capacity::units_text;

pub use crate::domain::clock::format_time;

/// A `next=` target is only followed if it is a path on this site.
/// Where to go after signing in: only a path on this site. It must start with one `/`,
/// and may hold no backslash, no control character (browsers drop tabs and newlines,
/// so `/\t/evil.example` would become `//evil.example`) and no `//` anywhere.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control()) =>
        {
            n
        }
        _ => "/host",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_stay_on_site() {
        assert_eq!(safe_next(Some("/vms")), "/vms");
        assert_eq!(safe_next(Some("//evil.example")), "/host");
        assert_eq!(safe_next(Some("https://evil.example")), "/host");
        assert_eq!(safe_next(Some("/\\evil")), "/host");
        assert_eq!(safe_next(None), "/host");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/host");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/host");
        assert_eq!(safe_next(Some("/vms//x")), "/host");
        assert_eq!(safe_next(Some("/vms/\u{0}")), "/host");
        assert_eq!(safe_next(Some("vms")), "/host");
        assert_eq!(safe_next(Some("/vms?page=2")), "/vms?page=2");
    }

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
    }
}
