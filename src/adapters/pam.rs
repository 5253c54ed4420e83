//! The PAM adapter: checks a host account's password through the host's own PAM stack
//! (`/etc/pam.d/<service>`), and reads which groups the account is in. libpam is loaded
//! when first used (`libpam.so.0`), so hosts that leave `[auth] pam` off need no PAM at all.
//! Blocking; call it off the async runtime.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

const PAM_SUCCESS: c_int = 0;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_SILENT: c_int = 0x8000;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x0001;

// Linux-PAM's return codes that mean something to the person signing in.
const PAM_PERM_DENIED: c_int = 6;
const PAM_AUTH_ERR: c_int = 7;
const PAM_USER_UNKNOWN: c_int = 10;
const PAM_MAXTRIES: c_int = 11;
const PAM_NEW_AUTHTOK_REQD: c_int = 12;
const PAM_ACCT_EXPIRED: c_int = 13;
const PAM_AUTHTOK_EXPIRED: c_int = 27;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

type StartFn =
    unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type HandleFlagsFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type EndFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;

struct Lib {
    start: StartFn,
    authenticate: HandleFlagsFn,
    acct_mgmt: HandleFlagsFn,
    end: EndFn,
}

fn lib() -> Result<&'static Lib, PamError> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the handle is never closed, so
        // the symbols stay valid for the life of the process.
        unsafe {
            let handle = libc::dlopen(c"libpam.so.0".as_ptr(), libc::RTLD_NOW);
            if handle.is_null() {
                return Err("libpam.so.0 could not be loaded (install libpam0g)".into());
            }
            let sym = |name: &CStr| {
                let p = libc::dlsym(handle, name.as_ptr());
                if p.is_null() {
                    Err(format!("libpam has no {}", name.to_string_lossy()))
                } else {
                    Ok(p)
                }
            };
            Ok(Lib {
                start: std::mem::transmute::<*mut c_void, StartFn>(sym(c"pam_start")?),
                authenticate: std::mem::transmute::<*mut c_void, HandleFlagsFn>(sym(
                    c"pam_authenticate",
                )?),
                acct_mgmt: std::mem::transmute::<*mut c_void, HandleFlagsFn>(sym(
                    c"pam_acct_mgmt",
                )?),
                end: std::mem::transmute::<*mut c_void, EndFn>(sym(c"pam_end")?),
            })
        }
    })
    .as_ref()
    .map_err(|e| PamError::Unavailable(e.clone()))
}

/// Why PAM did not let an account in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PamError {
    /// Wrong password, unknown account, or a locked one: PAM does not say which.
    #[error("wrong user name or password")]
    Refused,
    #[error("the host account has expired")]
    AccountExpired,
    #[error("the host account's password has expired or must be changed")]
    PasswordExpired,
    #[error("PAM is not usable: {0}")]
    Unavailable(String),
    #[error("PAM failed with code {0}")]
    Failed(i32),
}

fn error_of(code: c_int) -> PamError {
    match code {
        PAM_AUTH_ERR | PAM_USER_UNKNOWN | PAM_PERM_DENIED | PAM_MAXTRIES => PamError::Refused,
        PAM_ACCT_EXPIRED => PamError::AccountExpired,
        PAM_NEW_AUTHTOK_REQD | PAM_AUTHTOK_EXPIRED => PamError::PasswordExpired,
        other => PamError::Failed(other),
    }
}

/// The password handed to PAM's conversation: answered to every hidden prompt; a visible
/// prompt (a module asking for something else) ends the conversation.
struct Answer {
    password: CString,
}

unsafe extern "C" fn converse(
    count: c_int,
    messages: *mut *const PamMessage,
    responses: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    if count <= 0 || messages.is_null() || responses.is_null() || appdata.is_null() {
        return PAM_CONV_ERR;
    }
    let answer = &*(appdata as *const Answer);
    let n = count as usize;
    // PAM frees the array and every `resp` with free(): allocate them with calloc/strdup.
    let out = libc::calloc(n, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
    if out.is_null() {
        return PAM_BUF_ERR;
    }
    for i in 0..n {
        // Linux-PAM passes an array of pointers to messages.
        let m = *messages.add(i);
        if m.is_null() {
            continue;
        }
        match (*m).msg_style {
            PAM_PROMPT_ECHO_OFF => {
                let copy = libc::strdup(answer.password.as_ptr());
                if copy.is_null() {
                    free_responses(out, i);
                    return PAM_BUF_ERR;
                }
                (*out.add(i)).resp = copy;
            }
            PAM_PROMPT_ECHO_ON => {
                free_responses(out, i);
                return PAM_CONV_ERR;
            }
            // Error and information messages need no answer.
            _ => {}
        }
    }
    *responses = out;
    PAM_SUCCESS
}

unsafe fn free_responses(out: *mut PamResponse, filled: usize) {
    for j in 0..filled {
        let r = (*out.add(j)).resp;
        if !r.is_null() {
            // Wipe the copied password before handing the memory back.
            libc::memset(r as *mut c_void, 0, libc::strlen(r));
            libc::free(r as *mut c_void);
        }
    }
    libc::free(out as *mut c_void);
}

/// Checks `password` for host account `username` through PAM service `service`:
/// authentication, then account management (expiry, locks).
pub fn check_password(service: &str, username: &str, password: &str) -> Result<(), PamError> {
    let lib = lib()?;
    let bad = |_| PamError::Refused;
    let service = CString::new(service).map_err(|_| PamError::Failed(PAM_BUF_ERR))?;
    let user = CString::new(username).map_err(bad)?;
    let answer = Box::new(Answer {
        password: CString::new(password).map_err(bad)?,
    });
    let conv = PamConv {
        conv: converse,
        appdata_ptr: &*answer as *const Answer as *mut c_void,
    };
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: the strings, `conv` and `answer` outlive the transaction, which ends with
    // pam_end below on every path after a successful pam_start.
    unsafe {
        let rc = (lib.start)(service.as_ptr(), user.as_ptr(), &conv, &mut handle);
        if rc != PAM_SUCCESS || handle.is_null() {
            return Err(PamError::Unavailable(format!(
                "pam_start failed with code {rc}"
            )));
        }
        let mut rc = (lib.authenticate)(handle, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
        if rc == PAM_SUCCESS {
            rc = (lib.acct_mgmt)(handle, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
        }
        (lib.end)(handle, rc);
        if rc == PAM_SUCCESS {
            Ok(())
        } else {
            Err(error_of(rc))
        }
    }
}

/// Whether the host has an account named `username` (any source NSS knows).
pub fn host_account_exists(username: &str) -> bool {
    matches!(nix::unistd::User::from_name(username), Ok(Some(_)))
}

/// The names of the groups host account `username` is in (its primary group too);
/// empty when there is no such account.
pub fn groups_of(username: &str) -> Vec<String> {
    let Ok(Some(user)) = nix::unistd::User::from_name(username) else {
        return Vec::new();
    };
    let Ok(name) = CString::new(username) else {
        return Vec::new();
    };
    let Ok(gids) = nix::unistd::getgrouplist(&name, user.gid) else {
        return Vec::new();
    };
    gids.into_iter()
        .filter_map(|g| nix::unistd::Group::from_gid(g).ok().flatten())
        .map(|g| g.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pam_codes_read_as_what_the_person_can_do() {
        assert_eq!(error_of(PAM_AUTH_ERR), PamError::Refused);
        assert_eq!(error_of(PAM_USER_UNKNOWN), PamError::Refused);
        assert_eq!(error_of(PAM_ACCT_EXPIRED), PamError::AccountExpired);
        assert_eq!(error_of(PAM_NEW_AUTHTOK_REQD), PamError::PasswordExpired);
        assert_eq!(error_of(99), PamError::Failed(99));
    }

    #[test]
    fn root_is_a_host_account_in_its_own_group() {
        assert!(host_account_exists("root"));
        assert!(groups_of("root").iter().any(|g| g == "root"));
        assert!(!host_account_exists("no-such-account-virtdeck"));
        assert!(groups_of("no-such-account-virtdeck").is_empty());
    }
}
