//! [`LockHandle`]: what identifies one grant, in a string that travels between processes, so
//! that a lock taken in one process can be resumed in another (a scheduler hands a job's lock
//! to the worker that runs it; a process restarted in place resumes what it held).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// What the string form starts with: the format and its version.
const PREFIX: &str = "redis-mutex:1:";

/// The kinds of grant a [`LockHandle`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandleKind {
    /// A grant of a [`RedisMutex`](crate::RedisMutex): resumed with
    /// [`RedisMutex::resume`](crate::RedisMutex::resume).
    Mutex,
    /// A read lease of a [`RedisRwLock`](crate::RedisRwLock): resumed with
    /// [`RedisRwLock::resume_read`](crate::RedisRwLock::resume_read).
    Read,
    /// A write lease of a [`RedisRwLock`](crate::RedisRwLock): resumed with
    /// [`RedisRwLock::resume_write`](crate::RedisRwLock::resume_write).
    Write,
}

impl HandleKind {
    fn as_str(self) -> &'static str {
        match self {
            HandleKind::Mutex => "mutex",
            HandleKind::Read => "read",
            HandleKind::Write => "write",
        }
    }
}

impl fmt::Display for HandleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one grant of a lock: its kind, the lock's name (a read-write lock's path), who
/// holds it (a mutex's owner id; a read or write lease's id) and its fencing token. Made by
/// a guard's `handle()` or `into_handle()`; given to `resume` in another process (or later
/// in this one) to hold the same grant there.
///
/// A handle is only a name for a grant, not a right to it: resuming checks that the lock
/// still holds exactly that grant, and takes it over (with a new fencing token), so a handle
/// can be resumed once. Anyone who can read the handle can resume it: treat it like the
/// lock itself.
///
/// # String form
///
/// `Display` and `FromStr` give and read a stable form that fits an environment variable,
/// a queue message or a command line:
///
/// ```text
/// redis-mutex:1:<kind>:<fencing token>:<name>:<holder>
/// ```
///
/// `<kind>` is `mutex`, `read` or `write`; `<fencing token>` a decimal number (0 for a read
/// lease, which takes none); `<name>` and `<holder>` are percent-encoded as UTF-8, every
/// byte other than ASCII letters, digits and `-._~/` written `%XX`, so that a name may
/// hold any character (`:` and `%` included). The `1` is the format's version: a later one
/// will read this one.
///
/// # Examples
///
/// ```
/// use redis_mutex::{HandleKind, LockHandle};
///
/// let handle: LockHandle = "redis-mutex:1:mutex:1796547421338291:jobs%3A42:worker-7".parse()?;
/// assert_eq!(handle.kind(), HandleKind::Mutex);
/// assert_eq!(handle.name(), "jobs:42");
/// assert_eq!(handle.holder(), "worker-7");
/// assert_eq!(handle.fencing_token(), Some(1796547421338291));
/// assert_eq!(handle.to_string().parse::<LockHandle>()?, handle);
/// # Ok::<(), redis_mutex::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockHandle {
    kind: HandleKind,
    name: String,
    holder: String,
    token: u64,
}

impl LockHandle {
    pub(crate) fn new(kind: HandleKind, name: &str, holder: &str, token: u64) -> LockHandle {
        LockHandle {
            kind,
            name: name.to_owned(),
            holder: holder.to_owned(),
            token,
        }
    }

    /// What kind of grant it names.
    pub fn kind(&self) -> HandleKind {
        self.kind
    }

    /// The lock's name (a read-write lock's path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who holds the grant: a mutex's owner id (what `get_owner_id` shows; a resumed guard
    /// keeps it), or the id of a read or write lease (`<owner id>#<16 hex digits>`).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The grant's fencing token; `None` for a read lease, which takes none.
    pub fn fencing_token(&self) -> Option<u64> {
        (self.kind != HandleKind::Read).then_some(self.token)
    }

    /// The grant's token as the handle carries it (0 for a read lease).
    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    /// Whether this handle is for a lock of `kind` named `name`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] naming the `handle` when it is not.
    pub(crate) fn expect(&self, kind: HandleKind, name: &str) -> Result<()> {
        if self.kind != kind {
            return Err(Error::invalid(
                "handle",
                format!(
                    "it names a {} grant, not a {kind} grant; resume it with the matching \
                     method",
                    self.kind
                ),
            ));
        }
        if self.name != name {
            return Err(Error::invalid(
                "handle",
                format!(
                    "it names lock `{}`, not `{name}`; resume it on a lock of that name",
                    self.name
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for LockHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}:{}:{}",
            self.kind,
            self.token,
            Encoded(&self.name),
            Encoded(&self.holder)
        )
    }
}

impl FromStr for LockHandle {
    type Err = Error;

    /// Reads the [string form](LockHandle#string-form). Whitespace around it (a line's end,
    /// as a file or a pipe gives it) is ignored: the form has none of its own.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] naming the `handle`, saying what is wrong with it.
    fn from_str(s: &str) -> Result<LockHandle> {
        let bad = |what: &str| {
            Error::invalid(
                "handle",
                format!(
                    "{what}; a handle reads \
                     \"redis-mutex:1:<mutex|read|write>:<token>:<name>:<holder>\", as a \
                     guard's handle() wrote it"
                ),
            )
        };
        // A handle read from a file or a pipe carries its line's end: not part of it.
        let s = s.trim();
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with \"redis-mutex:1:\""))?;
        let fields: Vec<&str> = rest.split(':').collect();
        let [kind, token, name, holder] = fields[..] else {
            return Err(bad(&format!(
                "it has {} fields after the version, not 4",
                fields.len()
            )));
        };
        let kind = match kind {
            "mutex" => HandleKind::Mutex,
            "read" => HandleKind::Read,
            "write" => HandleKind::Write,
            other => return Err(bad(&format!("`{other}` is not a kind of grant"))),
        };
        let token = token
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| token.parse().ok())
            .flatten()
            .ok_or_else(|| bad(&format!("`{token}` is not a fencing token")))?;
        let name = decode(name).ok_or_else(|| bad("the name is not percent-encoded UTF-8"))?;
        let holder =
            decode(holder).ok_or_else(|| bad("the holder is not percent-encoded UTF-8"))?;
        if name.is_empty() || holder.is_empty() {
            return Err(bad("the name or the holder is empty"));
        }
        Ok(LockHandle {
            kind,
            name,
            holder,
            token,
        })
    }
}

/// Whether `byte` stands for itself in the string form.
fn plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/')
}

/// A field percent-encoded for the string form.
struct Encoded<'a>(&'a str);

impl fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0.as_bytes() {
            if plain(byte) {
                write!(f, "{}", byte as char)?;
            } else {
                write!(f, "%{byte:02X}")?;
            }
        }
        Ok(())
    }
}

/// A percent-encoded field, decoded; `None` when it is not valid (a stray `%`, a byte left
/// unencoded that must not be, or bytes that are not UTF-8).
fn decode(field: &str) -> Option<String> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = field.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            byte if plain(byte) => {
                out.push(byte);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        let names = [
            "jobs",
            "a:b:c",
            "100%",
            "tenants/42/invoices",
            "spaces and\ttabs\n",
            "ünïcødé ✓",
            "{tag}",
            "%41",
            "~-._/",
        ];
        for kind in [HandleKind::Mutex, HandleKind::Read, HandleKind::Write] {
            for name in names {
                let handle = LockHandle::new(kind, name, "owner:#1%", 7);
                let text = handle.to_string();
                assert_eq!(text.matches(':').count(), 5, "{text}");
                assert!(!text.contains(char::is_whitespace), "{text}");
                assert_eq!(text.parse::<LockHandle>().unwrap(), handle, "{text}");
            }
        }
    }

    #[test]
    fn the_string_form_is_stable() {
        let handle = LockHandle::new(HandleKind::Write, "reports/2024", "w#00ff", 12);
        assert_eq!(
            handle.to_string(),
            "redis-mutex:1:write:12:reports/2024:w%2300ff"
        );
        assert_eq!(handle.fencing_token(), Some(12));
        let read = LockHandle::new(HandleKind::Read, "a", "r#1", 0);
        assert_eq!(read.fencing_token(), None);
    }

    #[test]
    fn a_bad_handle_says_what_is_wrong() {
        for (text, says) in [
            ("", "does not start"),
            ("redis-mutex:2:mutex:1:a:b", "does not start"),
            ("redis-mutex:1:mutex:1:a", "not 4"),
            ("redis-mutex:1:lock:1:a:b", "`lock` is not a kind"),
            ("redis-mutex:1:mutex:x:a:b", "`x` is not a fencing token"),
            ("redis-mutex:1:mutex:+1:a:b", "`+1` is not a fencing token"),
            (
                "redis-mutex:1:mutex:1:a%zz:b",
                "name is not percent-encoded",
            ),
            ("redis-mutex:1:mutex:1:a%4:b", "name is not percent-encoded"),
            (
                "redis-mutex:1:mutex:1:a%+F:b",
                "name is not percent-encoded",
            ),
            (
                "redis-mutex:1:mutex:1:a%4a:b",
                "name is not percent-encoded",
            ),
            ("redis-mutex:1:mutex:1:a b:b", "name is not percent-encoded"),
            ("redis-mutex:1:mutex:1:%FF:b", "name is not percent-encoded"),
            ("redis-mutex:1:mutex:1::b", "empty"),
        ] {
            let e = text.parse::<LockHandle>().unwrap_err();
            assert!(
                e.to_string().contains(says),
                "{text:?}: {e} does not say {says:?}"
            );
            assert!(e.to_string().starts_with("invalid `handle`"), "{e}");
        }
    }

    #[test]
    fn a_handle_fits_only_its_own_kind_and_name() {
        let handle = LockHandle::new(HandleKind::Mutex, "a", "o", 1);
        assert!(handle.expect(HandleKind::Mutex, "a").is_ok());
        assert!(handle.expect(HandleKind::Write, "a").is_err());
        assert!(handle.expect(HandleKind::Mutex, "b").is_err());
    }
}
