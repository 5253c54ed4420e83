//! Host accounts (PAM) beside virtdeck's own: which source a name has, and the row a
//! host account signs in with.

use super::{Store, StoreResult, UserRow};
use rusqlite::{params, OptionalExtension};

/// Where an account's password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountSource {
    /// virtdeck's own Argon2id hash.
    Local,
    /// The host, through PAM.
    Host,
}

/// What a password that no hash can match looks like in a host account's row.
const NO_LOCAL_PASSWORD: &str = "!host-account";

impl Store {
    /// The account named `username` and where its password is checked.
    pub fn account(&self, username: &str) -> StoreResult<Option<(UserRow, AccountSource)>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {}, u.source FROM users u WHERE u.username = ?1",
                    super::USER_COLUMNS
                ),
                [username],
                |r| {
                    let source: String = r.get(5)?;
                    Ok((
                        super::user_from_row(r, 0)?,
                        if source == "pam" {
                            AccountSource::Host
                        } else {
                            AccountSource::Local
                        },
                    ))
                },
            )
            .optional()
        })
    }

    /// The row of host account `username` with `role` (made on its first sign-in, its role
    /// refreshed after). `None` when the name belongs to a local account.
    pub fn host_account_signed_in(
        &self,
        username: &str,
        role: &str,
        now: i64,
    ) -> StoreResult<Option<UserRow>> {
        self.with(|c| {
            c.execute(
                "INSERT INTO users (username, role, password_phc, created_at, source)
                 VALUES (?1, ?2, ?3, ?4, 'pam')
                 ON CONFLICT (username) DO UPDATE SET role = ?2 WHERE users.source = 'pam'",
                params![username, role, NO_LOCAL_PASSWORD, now],
            )?;
            Ok(())
        })?;
        Ok(self
            .account(username)?
            .filter(|(_, source)| *source == AccountSource::Host)
            .map(|(user, _)| user))
    }

    /// The names of the host accounts that have signed in.
    pub fn host_account_names(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT username FROM users WHERE source = 'pam' ORDER BY username")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_account_gets_a_row_without_a_password_and_never_takes_a_local_name() {
        let s = Store::open_in_memory().unwrap();
        s.create_user("alice", "admin", "phc", 1).unwrap();
        assert!(s
            .host_account_signed_in("alice", "viewer", 2)
            .unwrap()
            .is_none());
        assert_eq!(s.account("alice").unwrap().unwrap().0.role, "admin");

        let bob = s
            .host_account_signed_in("bob", "operator", 3)
            .unwrap()
            .unwrap();
        assert_eq!(bob.role, "operator");
        assert!(!crate::auth::password::verify_password(
            "!host-account",
            Some(&bob.password_phc)
        ));
        let again = s
            .host_account_signed_in("bob", "admin", 4)
            .unwrap()
            .unwrap();
        assert_eq!((again.id, again.role.as_str()), (bob.id, "admin"));
        assert_eq!(s.account("bob").unwrap().unwrap().1, AccountSource::Host);
        assert_eq!(s.host_account_names().unwrap(), vec!["bob"]);
    }
}
