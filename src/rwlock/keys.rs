//! A read-write lock's paths, their ancestors, and the keys of each level: pure functions,
//! no I/O.
//!
//! Each level `<p>` of a path has twelve keys, `rwlock:<kind>:<p>` (see [`KINDS`]). On a
//! cluster the root segment carries the hash tag, `rwlock:<kind>:{<root>}<rest>`, so that
//! every key of one tree shares a slot: one tree lives on one node.

use crate::keys::{Scheme, fencing_counter};

/// What a lease is: it decides which sets hold it and which wake lists its waiters block on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Read,
    Write,
}

impl Mode {
    /// The scripts' name for a held lock of this mode.
    pub(crate) fn held(self) -> &'static str {
        match self {
            Mode::Read => "r",
            Mode::Write => "w",
        }
    }

    /// The scripts' name for a registration as a waiter of this mode.
    pub(crate) fn waiting(self) -> &'static str {
        match self {
            Mode::Read => "qr",
            Mode::Write => "qw",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Read => "read",
            Mode::Write => "write",
        }
    }
}

/// The kinds of key of one level, in the order the scripts expect them (see
/// `src/rwlock/acquire.lua`).
const KINDS: [&str; 12] = [
    "w", "r", "wb", "rb", "qw", "qr", "qwb", "qrb", "wake-w", "wake-r", "wake-wb", "wake-rb",
];

/// The prefix of every key of a read-write lock. Not `lock:`, so `reset_all` and
/// python-redis-lock never see them.
const PREFIX: &str = "rwlock";

/// The key of `kind` for the level `level` of a tree whose root segment is `root`.
fn key(kind: &str, level: &str, root: &str, scheme: Scheme) -> String {
    match scheme {
        Scheme::Single => format!("{PREFIX}:{kind}:{level}"),
        Scheme::Cluster => format!("{PREFIX}:{kind}:{{{root}}}{}", &level[root.len()..]),
    }
}

/// `(kind, level)` of a read-write lock's key, the level as the key writes it; `None` for
/// another key.
pub(crate) fn parse_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(PREFIX)?.strip_prefix(':')?.split_once(':')
}

/// The key of `kind` for a level as [`parse_key`] gave it.
fn sibling(kind: &str, level: &str) -> String {
    format!("{PREFIX}:{kind}:{level}")
}

/// The path a level of a key stands for: on a cluster, without the braces around the root.
pub(crate) fn path_of(level: &str, scheme: Scheme) -> String {
    match (scheme, level.strip_prefix('{')) {
        (Scheme::Cluster, Some(rest)) => match rest.find('}') {
            Some(close) => format!("{}{}", &rest[..close], &rest[close + 1..]),
            None => level.to_owned(),
        },
        _ => level.to_owned(),
    }
}

/// The twelve keys of one level, in the scripts' order, from the level as a key writes it
/// (see [`parse_key`]).
pub(crate) fn level_keys(level: &str) -> Vec<String> {
    KINDS.iter().map(|kind| sibling(kind, level)).collect()
}

/// Checks a path; returns why it is refused.
pub(crate) fn check_path(path: &str, separator: char) -> Option<String> {
    if path.is_empty() {
        return Some("the path is empty; give every lock a non-empty path".to_owned());
    }
    if path.split(separator).any(str::is_empty) {
        return Some(format!(
            "the path {path:?} has an empty segment (a leading, trailing or doubled \
             {separator:?}); write it as segments joined by single separators, like \"a{separator}b\""
        ));
    }
    None
}

/// The levels of a path, root first: `a/b/c` gives `a`, `a/b`, `a/b/c`. The path must
/// have passed [`check_path`].
fn levels(path: &str, separator: char) -> Vec<&str> {
    let mut levels: Vec<&str> = path
        .match_indices(separator)
        .map(|(at, _)| &path[..at])
        .collect();
    levels.push(path);
    levels
}

/// Every key a path's scripts touch, computed once per lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct RwKeys {
    /// 12 per level, root first ([`KINDS`] order): what acquire and release take.
    all: Vec<String>,
    levels: usize,
    /// The fencing counter write locks take their tokens from.
    pub(crate) fencing: String,
    /// `rwlock:released:<path>`: the leases of the path released moments ago → until when
    /// that is remembered, so that a release sent twice is told it happened.
    pub(crate) released: String,
}

impl RwKeys {
    /// The keys of `path`, which must have passed [`check_path`].
    pub(crate) fn new(path: &str, separator: char, scheme: Scheme) -> RwKeys {
        let levels = levels(path, separator);
        let root = levels[0];
        let all: Vec<String> = levels
            .iter()
            .flat_map(|level| KINDS.iter().map(move |kind| key(kind, level, root, scheme)))
            .collect();
        RwKeys {
            fencing: fencing_counter(&all[0], scheme),
            released: key("released", path, root, scheme),
            all,
            levels: levels.len(),
        }
    }

    /// The key of `kind` (index into [`KINDS`]) at `level` (0: the root).
    fn at(&self, level: usize, kind: usize) -> &str {
        &self.all[level * KINDS.len() + kind]
    }

    /// The keys of the acquire and release scripts, without the fencing counter.
    pub(crate) fn all(&self) -> &[String] {
        &self.all
    }

    /// The sets a lease of `mode` sits in: its own on the path, then its "below" set on
    /// each ancestor (what the extend script takes).
    pub(crate) fn lease_sets(&self, mode: Mode) -> Vec<String> {
        let (at, below) = match mode {
            Mode::Write => (0, 2),
            Mode::Read => (1, 3),
        };
        let path = self.levels - 1;
        std::iter::once(self.at(path, at))
            .chain((0..path).map(|level| self.at(level, below)))
            .map(str::to_owned)
            .collect()
    }

    /// The lists a waiter of `mode` blocks on: its path's wake list, then the "below" wake
    /// list of each ancestor, nearest first.
    pub(crate) fn wake_lists(&self, mode: Mode) -> Vec<String> {
        let (at, below) = match mode {
            Mode::Write => (8, 10),
            Mode::Read => (9, 11),
        };
        let path = self.levels - 1;
        std::iter::once(self.at(path, at))
            .chain((0..path).rev().map(|level| self.at(level, below)))
            .map(str::to_owned)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_use_the_scripts_entry_names_and_the_metrics_kinds() {
        let release = include_str!("release.lua");
        for (mode, held, waiting, name) in [
            (Mode::Read, "r", "qr", "read"),
            (Mode::Write, "w", "qw", "write"),
        ] {
            assert_eq!(
                (mode.held(), mode.waiting(), mode.name()),
                (held, waiting, name)
            );
            for entry in [held, waiting] {
                assert!(release.contains(&format!("'{entry}'")), "{entry}");
            }
        }
    }

    #[test]
    fn levels_are_the_ancestors_then_the_path() {
        assert_eq!(levels("a", '/'), ["a"]);
        assert_eq!(levels("a/b/c", '/'), ["a", "a/b", "a/b/c"]);
        assert_eq!(levels("a.b/c", '.'), ["a", "a.b/c"]);
        assert_eq!(levels("ü/鎖", '/'), ["ü", "ü/鎖"]);
    }

    #[test]
    fn bad_paths_are_refused() {
        for (path, separator) in [
            ("", '/'),
            ("/", '/'),
            ("/a", '/'),
            ("a/", '/'),
            ("a//b", '/'),
            ("a..b", '.'),
        ] {
            assert!(check_path(path, separator).is_some(), "{path:?}");
        }
        for (path, separator) in [("a", '/'), ("a/b", '/'), ("/", '.'), ("a b/c", '/')] {
            assert_eq!(check_path(path, separator), None, "{path:?}");
        }
    }

    #[test]
    fn keys_follow_the_scripts_layout() {
        let keys = RwKeys::new("a/b", '/', Scheme::Single);
        assert_eq!(keys.fencing, "lock-fencing-counter");
        assert_eq!(keys.all().len(), 24);
        assert_eq!(keys.all()[0], "rwlock:w:a");
        assert_eq!(keys.all()[11], "rwlock:wake-rb:a");
        assert_eq!(keys.all()[12], "rwlock:w:a/b");
        assert_eq!(keys.all()[13], "rwlock:r:a/b");
        assert_eq!(keys.lease_sets(Mode::Read), ["rwlock:r:a/b", "rwlock:rb:a"]);
        assert_eq!(
            keys.lease_sets(Mode::Write),
            ["rwlock:w:a/b", "rwlock:wb:a"]
        );
        assert_eq!(
            RwKeys::new("a/b/c", '/', Scheme::Single).wake_lists(Mode::Write),
            [
                "rwlock:wake-w:a/b/c",
                "rwlock:wake-wb:a/b",
                "rwlock:wake-wb:a"
            ]
        );
        assert_eq!(
            RwKeys::new("a", '/', Scheme::Single).wake_lists(Mode::Read),
            ["rwlock:wake-r:a"]
        );
    }

    #[test]
    fn on_a_cluster_every_key_of_a_tree_shares_the_roots_tag() {
        let keys = RwKeys::new("tenants/42/invoices", '/', Scheme::Cluster);
        assert_eq!(keys.all()[0], "rwlock:w:{tenants}");
        assert_eq!(keys.all()[24], "rwlock:w:{tenants}/42/invoices");
        for key in keys.all() {
            assert_eq!(crate::keys::hash_tag(key), Some("tenants"), "{key}");
        }
        use redis::cluster_routing::Slot;
        assert_eq!(Slot::for_key(&keys.fencing), Slot::for_key("{tenants}"));
        assert_eq!(
            parse_key("rwlock:wake-rb:{a}/b"),
            Some(("wake-rb", "{a}/b"))
        );
        assert_eq!(parse_key("lock:a"), None);
        assert_eq!(sibling("wake-w", "{a}/b"), "rwlock:wake-w:{a}/b");
        assert_eq!(
            level_keys("a/b"),
            RwKeys::new("a/b", '/', Scheme::Single).all()[12..]
        );
        assert_eq!(path_of("{a}/b", Scheme::Cluster), "a/b");
        assert_eq!(path_of("{a}/b", Scheme::Single), "{a}/b");
        let odd = RwKeys::new("x}y/z", '/', Scheme::Cluster);
        let tag = crate::keys::hash_tag(&odd.all()[0]);
        assert!(odd.all().iter().all(|k| crate::keys::hash_tag(k) == tag));
        assert_eq!(
            redis::cluster_routing::Slot::for_key(&odd.fencing),
            redis::cluster_routing::Slot::for_key(&odd.all()[0])
        );
    }
}
