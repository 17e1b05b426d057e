//! `path_pattern` routes as a segment trie: a literal child per segment value, one child for
//! `*`. A lookup follows the request path's segments, literal before `*`, so the routes it
//! considers are those whose pattern fits the path, and its cost is bounded by the path's
//! depth and the trie's, not by how many patterns there are.

use std::collections::HashMap;

use foldhash::fast::RandomState;

#[derive(Debug, Default)]
pub(super) struct Node {
    /// The keys come from the config, so a fast hash is safe here.
    literal: HashMap<Box<str>, Node, RandomState>,
    wildcard: Option<Box<Node>>,
    /// The routes whose pattern ends here, in the order they are tried.
    routes: Vec<usize>,
}

/// A path's segments after its leading `/`: `/a/b/` is `a`, `b` and an empty last one.
fn segments(path: &str) -> std::str::Split<'_, char> {
    path.get(1..).unwrap_or_default().split('/')
}

impl Node {
    pub(super) fn insert(&mut self, pattern: &str, route: usize) {
        let mut node = self;
        for seg in segments(pattern) {
            node = if seg == "*" {
                node.wildcard.get_or_insert_default()
            } else {
                node.literal.entry(seg.into()).or_default()
            };
        }
        node.routes.push(route);
    }

    /// Orders every node's routes by `key`.
    pub(super) fn sort_routes<K: Ord>(&mut self, key: &impl Fn(usize) -> K) {
        self.routes.sort_by_key(|&i| key(i));
        for child in self
            .literal
            .values_mut()
            .chain(self.wildcard.as_deref_mut())
        {
            child.sort_routes(key);
        }
    }

    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.wildcard.is_none()
    }

    /// The first route, by the trie's order, whose pattern fits `path` and for which `holds`.
    pub(super) fn find(&self, path: &str, holds: &mut impl FnMut(usize) -> bool) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        self.walk(segments(path), holds)
    }

    /// Recursion goes only as deep as the trie, whatever the path's length.
    fn walk(
        &self,
        mut rest: std::str::Split<'_, char>,
        holds: &mut impl FnMut(usize) -> bool,
    ) -> Option<usize> {
        let Some(seg) = rest.next() else {
            return self.routes.iter().copied().find(|&i| holds(i));
        };
        if let Some(child) = self.literal.get(seg)
            && let Some(i) = child.walk(rest.clone(), holds)
        {
            return Some(i);
        }
        match &self.wildcard {
            Some(w) if !seg.is_empty() => w.walk(rest, holds),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(patterns: &[&str]) -> Node {
        let mut t = Node::default();
        for (i, p) in patterns.iter().enumerate() {
            t.insert(p, i);
        }
        t
    }

    #[test]
    fn a_star_is_one_segment_and_literals_come_first() {
        let t = trie(&["/api/users/*/profile", "/api/*/*/profile", "/*/b", "/a/*"]);
        let all = &mut |_| true;
        assert_eq!(t.find("/api/users/7/profile", all), Some(0));
        assert_eq!(t.find("/api/teams/7/profile", all), Some(1));
        assert_eq!(t.find("/api/users/7/profile/x", all), None);
        assert_eq!(t.find("/api/users/profile", all), None);
        assert_eq!(
            t.find("/api/users//profile", all),
            None,
            "a star is never empty"
        );
        assert_eq!(
            t.find("/api/users/7/profile/", all),
            None,
            "a trailing / is a segment"
        );
        // Literal before star, from the left.
        assert_eq!(t.find("/a/b", all), Some(3));
        assert_eq!(t.find("/x/b", all), Some(2));
        assert_eq!(t.find("/", all), None);
        // When the literal branch's routes do not hold, the star's are tried.
        assert_eq!(t.find("/api/users/7/profile", &mut |i| i != 0), Some(1));
        assert_eq!(t.find("/a/b", &mut |i| i != 3), Some(2));
    }

    #[test]
    fn a_deep_path_costs_only_the_depth_of_the_trie() {
        let t = trie(&["/*/*"]);
        let deep = "/a".repeat(100_000);
        let mut calls = 0;
        assert_eq!(
            t.find(&deep, &mut |_| {
                calls += 1;
                true
            }),
            None
        );
        assert_eq!(calls, 0);
    }
}
