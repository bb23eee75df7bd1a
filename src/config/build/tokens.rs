//! The builder's admin API tokens: `admin_token`, `read_token` and the
//! named `tokens:`, each with its name (recorded as who made a manual
//! change) and what it may do.

use super::*;

impl Builder<'_> {
    /// Every bearer token the admin API takes: `admin_token` (named
    /// `admin`), `read_token` (named `read`) and `tokens:`. An API other
    /// hosts can reach needs one that may write; a read-only token needs
    /// one too (else the API is open and it restricts nothing); no two
    /// tokens may be equal (a scrape credential must not be a spending
    /// one, and the name must say who).
    pub(super) fn tokens(
        &mut self,
        admin: Option<String>,
        read: Option<String>,
        named: BTreeMap<String, raw::RawToken>,
        admin_listen: SocketAddr,
    ) -> (Option<Secret>, Vec<ApiToken>) {
        let admin_token = admin.map(|raw| self.secret(&["daemon", "admin_token"], "daemon", &raw));
        let read_token = read.map(|raw| self.secret(&["daemon", "read_token"], "daemon", &raw));
        let mut tokens = Vec::new();
        let mut at: Vec<Vec<String>> = Vec::new();
        for (name, secret, access, path) in [
            (ADMIN, admin_token.clone(), Access::Admin, "admin_token"),
            (READ, read_token, Access::Read, "read_token"),
        ] {
            if let Some(secret) = secret {
                tokens.push(ApiToken {
                    name: name.to_owned(),
                    secret,
                    access,
                });
                at.push(vec!["daemon".into(), path.into()]);
            }
        }
        for (name, t) in named {
            let path = ["daemon", "tokens", name.as_str()];
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
                self.error(&path, format!("daemon: tokens: {name:?}: a name is 1 to 64 letters, digits, '-', '_' or '.'"));
            }
            if tokens.iter().any(|k| k.name == name) {
                self.error(&path, format!("daemon: tokens: {name}: the name is taken by daemon.{name}_token; name it otherwise"));
            }
            let secret = self.secret(
                &[&path[..], &["token"]].concat(),
                "daemon: tokens",
                &t.token,
            );
            tokens.push(ApiToken {
                name: name.clone(),
                secret,
                access: t.access,
            });
            at.push(path.iter().map(|s| (*s).to_owned()).collect());
        }
        let writes = tokens.iter().any(|t| t.access == Access::Admin);
        if !writes && !admin_listen.ip().is_loopback() {
            self.error(
                &["daemon", "admin_listen"],
                format!(
                    "daemon: admin_listen: {admin_listen} is reachable from other hosts, and the admin API can spend money: set daemon.admin_token (e.g. \"${{credential:admin_token}}\") or listen on 127.0.0.1"
                ),
            );
        }
        if !writes && let Some(i) = tokens.iter().position(|t| t.access == Access::Read) {
            let path: Vec<&str> = at[i].iter().map(String::as_str).collect();
            self.error(
                &path,
                format!("daemon: {}: without admin_token (or a token with access: admin) the API is open to loopback peers and a read token restricts nothing: set admin_token too", path[1..].join(".")),
            );
        }
        for (i, t) in tokens.iter().enumerate() {
            if let Some(j) = tokens[..i]
                .iter()
                .position(|u| !t.secret.is_empty() && u.secret == t.secret)
            {
                let path: Vec<&str> = at[i].iter().map(String::as_str).collect();
                let why = if tokens[j].access != t.access {
                    "so a scrape credential could spend money"
                } else {
                    "so its name could not say who used it"
                };
                self.error(
                    &path,
                    format!(
                        "daemon: {}: is the same as {}, {why}: use different tokens",
                        path[1..].join("."),
                        at[j][1..].join(".")
                    ),
                );
            }
        }
        (admin_token, tokens)
    }
}
