//! Passwords and ACL users of a test server, written as an ACL file.
//!
//! A server with any authentication option gets an ACL file in its
//! temporary directory (`users.acl`, passed with `--aclfile`), holding the
//! `default` user as configured, the users the test asked for, and an
//! internal administrator with a generated password. The helper's own
//! readiness checks and [`RedisServer::connection`](crate::RedisServer::connection)
//! log in as that administrator, so they work whatever the `default` user
//! may do.

use std::collections::hash_map::RandomState;
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The user the helper itself logs in as on a server with authentication.
pub(crate) const ADMIN_USER: &str = "cacheme-test-admin";

/// What the `default` user may do.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum DefaultUser {
    /// `nopass`: anyone may connect without credentials.
    Open,
    /// `requirepass`: the `default` user has this password.
    Password(String),
    /// `off`: connections must log in as a named user.
    Disabled,
}

/// One ACL user asked for by a test.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AclUser {
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) rules: String,
}

/// The authentication of a server: its users and the admin's password.
#[derive(Clone)]
pub(crate) struct Auth {
    pub(crate) default_user: DefaultUser,
    pub(crate) users: Vec<AclUser>,
    pub(crate) admin_password: String,
}

// Debug output (of a builder, in a failing test's message) shows users and
// rules, never passwords.

impl fmt::Debug for DefaultUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DefaultUser::Open => f.write_str("Open"),
            DefaultUser::Password(_) => f.write_str("Password(<redacted>)"),
            DefaultUser::Disabled => f.write_str("Disabled"),
        }
    }
}

impl fmt::Debug for AclUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AclUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("rules", &self.rules)
            .finish()
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("default_user", &self.default_user)
            .field("users", &self.users)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// The contents of the ACL file.
    pub(crate) fn acl_file(&self) -> String {
        let mut out = String::new();
        let default = match &self.default_user {
            DefaultUser::Open => "user default on nopass ~* &* +@all".to_owned(),
            DefaultUser::Password(password) => {
                format!("user default on >{password} ~* &* +@all")
            }
            DefaultUser::Disabled => "user default off resetpass -@all".to_owned(),
        };
        let _ = writeln!(out, "{default}");
        let _ = writeln!(
            out,
            "user {ADMIN_USER} on >{} ~* &* +@all",
            self.admin_password
        );
        for user in &self.users {
            let _ = writeln!(
                out,
                "user {} on >{} {}",
                user.name, user.password, user.rules
            );
        }
        out
    }

    /// The password of `user` (`default` included), if it has one.
    pub(crate) fn password_of(&self, user: &str) -> Option<&str> {
        if user == "default" {
            return match &self.default_user {
                DefaultUser::Password(password) => Some(password),
                DefaultUser::Open | DefaultUser::Disabled => None,
            };
        }
        self.users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.password.as_str())
    }

    /// The names of the users a test asked for, `default` first when it
    /// has a password.
    pub(crate) fn user_names(&self) -> Vec<&str> {
        let default = matches!(self.default_user, DefaultUser::Password(_)).then_some("default");
        default
            .into_iter()
            .chain(self.users.iter().map(|u| u.name.as_str()))
            .collect()
    }
}

/// Checks that `word` can stand in an ACL file line (no spaces, not empty).
#[track_caller]
pub(crate) fn check_acl_word(what: &str, word: &str) {
    assert!(
        !word.is_empty() && !word.chars().any(char::is_whitespace),
        "an ACL {what} must be non-empty and contain no whitespace, got {word:?}"
    );
}

/// A fresh random secret, 32 hex digits, good enough for a throw-away
/// test server (std only: `RandomState` is seeded from the OS).
pub(crate) fn generate_secret() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        hasher.write_u32(std::process::id());
        let _ = write!(out, "{:016x}", hasher.finish());
    }
    out
}

/// `user:password@` for a URL, percent-encoded; an empty user gives
/// `:password@` (the `requirepass` form).
pub(crate) fn url_userinfo(user: &str, password: &str) -> String {
    format!("{}:{}@", percent_encode(user), percent_encode(password))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_file_lists_default_admin_and_users() {
        let auth = Auth {
            default_user: DefaultUser::Password("pw".into()),
            users: vec![AclUser {
                name: "app".into(),
                password: "secret".into(),
                rules: "~CM:* &CM:* +@all".into(),
            }],
            admin_password: "adm".into(),
        };
        assert_eq!(
            auth.acl_file(),
            "user default on >pw ~* &* +@all\n\
             user cacheme-test-admin on >adm ~* &* +@all\n\
             user app on >secret ~CM:* &CM:* +@all\n"
        );
        assert_eq!(auth.password_of("default"), Some("pw"));
        assert_eq!(auth.password_of("app"), Some("secret"));
        assert_eq!(auth.password_of("nobody"), None);
        assert_eq!(auth.user_names(), ["default", "app"]);
    }

    #[test]
    fn userinfo_is_percent_encoded() {
        assert_eq!(url_userinfo("app", "p@ss:w/rd"), "app:p%40ss%3Aw%2Frd@");
        assert_eq!(url_userinfo("", "pw"), ":pw@");
    }

    #[test]
    fn debug_output_holds_no_password() {
        let auth = Auth {
            default_user: DefaultUser::Password("pw-default".into()),
            users: vec![AclUser {
                name: "app".into(),
                password: "pw-app".into(),
                rules: "+@all".into(),
            }],
            admin_password: "pw-admin".into(),
        };
        let debug = format!("{auth:?}");
        assert!(debug.contains("app") && debug.contains("+@all"), "{debug}");
        assert!(!debug.contains("pw-"), "{debug}");
    }

    #[test]
    fn secrets_differ() {
        let a = generate_secret();
        assert_eq!(a.len(), 32);
        assert_ne!(a, generate_secret());
    }
}
