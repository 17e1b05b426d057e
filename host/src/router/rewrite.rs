//! `rewrite_prefix` (and `strip_prefix`, which is `rewrite_prefix = "/"`): the route's prefix,
//! or its exact path, replaced on the way upstream (`/api/v1/users` → `/v2/users`).
//!
//! It is applied to the path as the request phase left it, which is normal (the router's, or
//! one a plugin set, normalised as it was), when that path still starts with the prefix at a
//! segment boundary. The result is normal too: the replacement is a normal path without a
//! trailing `/`, and what follows the prefix is the normal path's own segments, so no `//` and
//! no dot segment can appear.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Without a trailing `/`, except for the root.
    from: String,
    /// A normal path without a trailing `/`, or `/`.
    to: String,
}

impl Rewrite {
    /// `None` when nothing would change.
    pub fn new(from: &str, to: &str) -> Option<Self> {
        let from = wasmgate_config::trim_prefix(from);
        (from != to).then(|| Self {
            from: from.to_owned(),
            to: to.to_owned(),
        })
    }

    /// What replaces the prefix.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// `path` with the prefix replaced; `None` when it does not start with the prefix.
    pub fn apply(&self, path: &str) -> Option<String> {
        let rest = if self.from == "/" {
            path.strip_prefix('/')
                .map(|r| if r.is_empty() { "" } else { path })?
        } else {
            path.strip_prefix(self.from.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))?
        };
        Some(match (self.to.as_str(), rest) {
            ("/", "") => "/".to_owned(),
            ("/", rest) => rest.to_owned(),
            (to, rest) => format!("{to}{rest}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(from: &str, to: &str, path: &str) -> Option<String> {
        Rewrite::new(from, to).unwrap().apply(path)
    }

    #[test]
    fn the_prefix_is_replaced_at_a_segment_boundary() {
        assert_eq!(
            rw("/api/v1", "/v2", "/api/v1/users").as_deref(),
            Some("/v2/users")
        );
        assert_eq!(rw("/api/v1", "/v2", "/api/v1").as_deref(), Some("/v2"));
        assert_eq!(rw("/api/v1", "/v2", "/api/v1/").as_deref(), Some("/v2/"));
        assert_eq!(rw("/api/v1/", "/v2", "/api/v1/x").as_deref(), Some("/v2/x"));
        assert_eq!(rw("/api/v1", "/v2", "/api/v10/x"), None);
        assert_eq!(rw("/api/v1", "/v2", "/other"), None);
        // strip_prefix.
        assert_eq!(rw("/api/users", "/", "/api/users/7").as_deref(), Some("/7"));
        assert_eq!(rw("/api/users", "/", "/api/users").as_deref(), Some("/"));
        // A prefix added under the root.
        assert_eq!(rw("/", "/v2", "/users").as_deref(), Some("/v2/users"));
        assert_eq!(rw("/", "/v2", "/").as_deref(), Some("/v2"));
        assert_eq!(Rewrite::new("/", "/"), None);
        assert_eq!(Rewrite::new("/a/", "/a"), None);
    }

    #[test]
    fn a_rewritten_normal_path_stays_normal() {
        for (from, to) in [
            ("/api/v1", "/v2"),
            ("/api", "/"),
            ("/", "/v2"),
            ("/a", "/b/c"),
        ] {
            let r = Rewrite::new(from, to).unwrap();
            for path in [
                "/api/v1/users/7",
                "/api/v1",
                "/api/v1/",
                "/api/x/",
                "/a/%2E%2E",
                "/a/..%2F",
                "/a/.x/..y",
                "/",
            ] {
                if !wasmgate_uri::is_normal_path(path) {
                    continue;
                }
                if let Some(out) = r.apply(path) {
                    assert!(
                        wasmgate_uri::is_normal_path(&out),
                        "{from} → {to} made {path} into {out}"
                    );
                }
            }
        }
    }
}
