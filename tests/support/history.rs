//! Histories of lock calls written by many processes, and the checker that reads them: the
//! nemesis's, the failover loops'. Every process logs on the machine's monotonic clock
//! (`CLOCK_MONOTONIC`, shared by every process) each call with its duration and bound, each
//! grant with its fencing token, and each moment a holder was told it held its lock
//! (`ensure_held` returning `Ok`, an `unlock` that found the lock still ours). The checker
//! then proves, for the whole history:
//! - no two holders whose grants conflict were told they held them at overlapping times
//!   (a mutex: any two grants of one name; a read-write lock: a writer and anyone on its
//!   path, its ancestors or its subtree; a semaphore: more permits than its capacity);
//! - fencing tokens rise with every grant, across grants that conflict;
//! - every call returned within its bound (calls of a process that was paused excepted).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: the same clock in every process.
pub fn now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap()
}

pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap()
}

/// What a grant holds, for deciding which grants conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A mutex (or a Redlock): any two grants of one name conflict.
    Exclusive,
    /// A read lock on a path (segments separated by `/`).
    Read,
    /// A write lock on a path.
    Write,
    /// `n` permits of a semaphore of `capacity`.
    Permits { n: u32, capacity: u32 },
}

impl Claim {
    fn word(&self) -> String {
        match self {
            Claim::Exclusive => "x".to_owned(),
            Claim::Read => "r".to_owned(),
            Claim::Write => "w".to_owned(),
            Claim::Permits { n, capacity } => format!("p{n}/{capacity}"),
        }
    }

    fn parse(word: &str) -> Claim {
        match word {
            "x" => Claim::Exclusive,
            "r" => Claim::Read,
            "w" => Claim::Write,
            permits => {
                let (n, capacity) = permits
                    .strip_prefix('p')
                    .and_then(|p| p.split_once('/'))
                    .unwrap_or_else(|| panic!("a claim the history does not know: {word}"));
                Claim::Permits {
                    n: n.parse().unwrap(),
                    capacity: capacity.parse().unwrap(),
                }
            }
        }
    }
}

/// A process's log: one line per event, written at once (a killed process loses nothing
/// it logged).
#[derive(Clone)]
pub struct Log(Arc<Mutex<File>>);

impl Log {
    pub fn open(path: &Path) -> Log {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Log(Arc::new(Mutex::new(file)))
    }

    fn line(&self, line: std::fmt::Arguments<'_>) {
        let mut file = self.0.lock().unwrap();
        writeln!(file, "{line}").unwrap();
    }

    /// Runs and logs a call that may take up to `bound` (`None`: no bound but the test's):
    /// `call <what> <t0> <t1> <bound or 0> <outcome>`. Returns when it started.
    pub fn call<T, E: std::fmt::Display>(
        &self,
        what: &str,
        bound: Option<Duration>,
        f: impl FnOnce() -> Result<T, E>,
    ) -> (u64, Result<T, E>) {
        let t0 = now();
        let result = f();
        let t1 = now();
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("err:{}", e.to_string().replace([' ', '\n'], "_")),
        };
        self.line(format_args!(
            "call {what} {t0} {t1} {} {outcome}",
            bound.map_or(0, nanos)
        ));
        (t0, result)
    }

    /// A grant, right after the call that returned it: its id (unique in the run), what it
    /// holds, its fencing token (0: none), the owner (`w<pid>-…`, for pauses), and when
    /// that call started (as [`call`](Self::call) returned it: the threads of a process
    /// share its log, so the line before a grant may be another thread's call).
    pub fn grant(
        &self,
        id: &str,
        resource: &str,
        (claim, token): (&Claim, u64),
        owner: &str,
        asked: u64,
    ) {
        self.line(format_args!(
            "grant {id} {resource} {} {token} {} {owner} {asked}",
            claim.word(),
            now()
        ));
    }

    /// The holder of grant `id` was told, at `at`, that it held it.
    pub fn held(&self, id: &str, at: u64) {
        self.line(format_args!("held {id} {at}"));
    }

    /// An operator reset `resource` by a call that began at `at`: every grant of it made
    /// before ends there, whatever its holder is told later (it learns at its next round
    /// trip, as documented).
    pub fn reset(&self, resource: &str, at: u64) {
        self.line(format_args!("reset {resource} {at}"));
    }

    /// The holder of grant `id` on `resource` was stuck from `from` to `to`, its guard
    /// alive: the threads of its process should take the lock meanwhile once its grant is
    /// gone (expired or reset).
    pub fn stuck(&self, id: &str, resource: &str, from: u64, to: u64) {
        self.line(format_args!("stuck {id} {resource} {from} {to}"));
    }
}

/// A process's pause by the nemesis: no call of that process overlapping it is held to
/// its bound, nor any grant it got while paused.
pub struct Pause {
    pub pid: u32,
    pub from: u64,
    pub to: u64,
}

/// One grant as the logs tell it.
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: String,
    pub resource: String,
    pub claim: Claim,
    pub token: u64,
    pub log: String,
    /// When the call that returned it began: the grant was made after.
    pub asked: u64,
    /// When the call returned it (the first moment the holder was told).
    pub start: u64,
    /// The last moment the holder was told it held it.
    pub end: u64,
}

/// What a history came to.
#[derive(Default, Debug)]
pub struct Checked {
    pub operations: usize,
    pub grants: usize,
    pub by_claim: BTreeMap<String, usize>,
    pub double_grants: Vec<String>,
    /// When each double grant's overlap began (the later grant's first told-held moment).
    pub double_grant_starts: Vec<u64>,
    pub token_regressions: Vec<String>,
    pub late_calls: Vec<String>,
    /// The longest call, as a share of its bound.
    pub worst_call: (f64, String),
    /// Holders that got stuck with their guard alive, of an exclusive lock (a mutex, a
    /// write lock).
    pub stuck: usize,
    /// Of those, how many times a thread of the stuck holder's own process took the lock
    /// while it was stuck.
    pub passed_stuck: usize,
    /// Grants whose holder was told it held them after an operator's reset: their
    /// interval ends at the reset.
    pub ended_by_reset: usize,
}

impl Checked {
    pub fn summary(&self) -> String {
        format!(
            "{} operations, {} grants {:?}, {} double grants, {} token regressions, {} late \
             calls; the longest call took {:.0}% of its bound ({})",
            self.operations,
            self.grants,
            self.by_claim,
            self.double_grants.len(),
            self.token_regressions.len(),
            self.late_calls.len(),
            self.worst_call.0 * 100.0,
            self.worst_call.1,
        )
    }

    /// Fails the test, with the seed to repeat it, unless the history is clean.
    pub fn assert_clean(&self, seed: u64) {
        assert!(
            self.double_grants.is_empty(),
            "two holders at once (seed {seed}): {:#?}",
            self.double_grants
        );
        assert!(
            self.token_regressions.is_empty(),
            "fencing tokens went back (seed {seed}): {:#?}",
            self.token_regressions
        );
        assert!(
            self.late_calls.is_empty(),
            "calls past their bound (seed {seed}): {:#?}",
            self.late_calls
        );
    }
}

/// The pid of a log's process, from its grants' owner ids (`w<pid>-…`).
fn pid_of(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("grant "))
        .and_then(|g| g.split(' ').nth(5))
        .and_then(|owner| owner.strip_prefix('w')?.split('-').next()?.parse().ok())
}

/// Reads every log and checks the history (see the module docs).
pub fn check(logs: &[PathBuf], pauses: &[Pause]) -> Checked {
    let mut checked = Checked::default();
    let mut grants: HashMap<String, Grant> = HashMap::new();
    // Resets (resource, when), and stuck holders (grant id, resource, from, to, log).
    let mut resets: Vec<(String, u64)> = Vec::new();
    let mut stuck: Vec<(String, String, u64, u64, String)> = Vec::new();
    for path in logs {
        let log = path.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // a process killed before it wrote anything
        };
        let pid = pid_of(&text);
        let paused = |from: u64, to: u64| {
            pid.is_some_and(|pid| {
                pauses
                    .iter()
                    .any(|p| p.pid == pid && p.from <= to && from <= p.to)
            })
        };
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts[0] {
                "call" if parts.len() >= 6 => {
                    checked.operations += 1;
                    let (t0, t1): (u64, u64) =
                        (parts[2].parse().unwrap(), parts[3].parse().unwrap());
                    let bound: u64 = parts[4].parse().unwrap();
                    if bound > 0 && !paused(t0, t1) {
                        let took = t1 - t0;
                        let share = took as f64 / bound as f64;
                        if share > checked.worst_call.0 {
                            checked.worst_call = (
                                share,
                                format!(
                                    "{} took {} ms of {} ms",
                                    parts[1],
                                    took / 1_000_000,
                                    bound / 1_000_000
                                ),
                            );
                        }
                        if took > bound {
                            checked.late_calls.push(format!("{log}: {line}"));
                        }
                    }
                }
                "grant" if parts.len() >= 8 => {
                    let start: u64 = parts[5].parse().unwrap();
                    let asked: u64 = parts[7].parse().unwrap();
                    // A pause between the return and the clock read would date the grant
                    // late: such a grant counts only through its later confirmations.
                    let uncertain = paused(asked, start);
                    let claim = Claim::parse(parts[3]);
                    checked.grants += 1;
                    *checked.by_claim.entry(parts[3].to_owned()).or_default() += 1;
                    grants.insert(
                        parts[1].to_owned(),
                        Grant {
                            id: parts[1].to_owned(),
                            resource: parts[2].to_owned(),
                            claim,
                            token: parts[4].parse().unwrap(),
                            log: log.clone(),
                            asked,
                            start: if uncertain { u64::MAX } else { start },
                            end: if uncertain { 0 } else { start },
                        },
                    );
                }
                "held" if parts.len() >= 3 => {
                    let at: u64 = parts[2].parse().unwrap();
                    if let Some(grant) = grants.get_mut(parts[1]) {
                        grant.start = grant.start.min(at);
                        grant.end = grant.end.max(at);
                    }
                }
                "reset" if parts.len() >= 3 => {
                    resets.push((parts[1].to_owned(), parts[2].parse().unwrap()));
                }
                "stuck" if parts.len() >= 5 => stuck.push((
                    parts[1].to_owned(),
                    parts[2].to_owned(),
                    parts[3].parse().unwrap(),
                    parts[4].parse().unwrap(),
                    log.clone(),
                )),
                _ => {}
            }
        }
    }
    // A reset ends every grant of its resource made before it, at the reset.
    for (resource, at) in &resets {
        for grant in grants.values_mut() {
            if grant.resource == *resource && grant.start < *at && grant.end > *at {
                grant.end = *at;
                checked.ended_by_reset += 1;
            }
        }
    }
    for (id, resource, from, to, log) in &stuck {
        let Some(held) = grants.get(id) else { continue };
        if !matches!(held.claim, Claim::Exclusive | Claim::Write) {
            continue;
        }
        checked.stuck += 1;
        checked.passed_stuck += grants
            .values()
            .filter(|g| {
                g.log == *log
                    && g.id != *id
                    && g.resource == *resource
                    && g.asked >= *from
                    && g.start < *to
            })
            .count();
    }
    check_grants(grants.into_values().collect(), &mut checked);
    checked
}

/// Checks the grants of a history for double grants and token regressions.
pub fn check_grants(grants: Vec<Grant>, checked: &mut Checked) {
    let mut list: Vec<Grant> = grants.into_iter().filter(|g| g.start <= g.end).collect();
    list.sort_by_key(|g| g.start);
    check_overlaps(&list, checked);
    check_tokens(&list, checked);
}

/// Whether paths `a` and `b` are the same, or one is an ancestor of the other.
fn related(a: &str, b: &str) -> bool {
    let below =
        |p: &str, q: &str| p.len() > q.len() && p.starts_with(q) && p[q.len()..].starts_with('/');
    a == b || below(a, b) || below(b, a)
}

/// Whether two grants may not be held at once.
fn conflict(a: &Grant, b: &Grant) -> bool {
    match (&a.claim, &b.claim) {
        (Claim::Exclusive, Claim::Exclusive) => a.resource == b.resource,
        (Claim::Read, Claim::Read) => false,
        (Claim::Read | Claim::Write, Claim::Read | Claim::Write) => {
            related(&a.resource, &b.resource)
        }
        // Semaphores are checked by their sums.
        _ => false,
    }
}

/// Every pair of conflicting told-held intervals that overlap, and every instant at which
/// a semaphore's permits sum past its capacity. `list` is sorted by start.
fn check_overlaps(list: &[Grant], checked: &mut Checked) {
    // A sweep: the grants still held at each start.
    let mut active: Vec<&Grant> = Vec::new();
    for grant in list {
        active.retain(|g| g.end >= grant.start);
        for before in &active {
            if conflict(before, grant) {
                checked.double_grant_starts.push(grant.start);
                checked.double_grants.push(format!(
                    "`{}` and `{}`: {} ({before:?}) and {} ({grant:?})",
                    before.resource, grant.resource, before.log, grant.log
                ));
            }
        }
        if let Claim::Permits { n, capacity } = grant.claim {
            let held: u32 = active
                .iter()
                .filter(|g| g.resource == grant.resource)
                .map(|g| match g.claim {
                    Claim::Permits { n, .. } => n,
                    _ => 0,
                })
                .sum();
            if held + n > capacity {
                checked.double_grant_starts.push(grant.start);
                checked.double_grants.push(format!(
                    "`{}`: {} permits held at once, of {capacity}, at {grant:?}",
                    grant.resource,
                    held + n
                ));
            }
        }
        active.push(grant);
    }
}

/// Tokens in the order of the grants: of two grants that conflict where the first was let
/// go before the second was told it held it, the second has the higher token; of two grants
/// of one semaphore where the first was let go before the second was asked for, the same
/// (two permits may be held at once, so the second may have been granted, with a lower
/// token, before the first was, and told later).
fn check_tokens(list: &[Grant], checked: &mut Checked) {
    let mut by_group: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for grant in list.iter().filter(|g| g.token > 0) {
        let group = match grant.claim {
            // A tree's paths share one order of write grants.
            Claim::Write => grant.resource.split('/').next().unwrap_or(""),
            _ => grant.resource.as_str(),
        };
        by_group.entry(group).or_default().push(grant);
    }
    for (group, grants) in by_group {
        // Each against the grants before it that it can be ordered with; a long run keeps
        // the latest few hundred, far more than are ever held at once.
        let mut earlier: Vec<&Grant> = Vec::new();
        for grant in grants {
            for before in &earlier {
                let ordered = match grant.claim {
                    Claim::Permits { .. } => {
                        before.resource == grant.resource && before.end < grant.asked
                    }
                    _ => conflict(before, grant) && before.end < grant.start,
                };
                if ordered && grant.token <= before.token {
                    checked
                        .token_regressions
                        .push(format!("`{group}`: {before:?} then {grant:?}"));
                }
            }
            earlier.push(grant);
            if earlier.len() > 256 {
                earlier.remove(0);
            }
        }
    }
}
