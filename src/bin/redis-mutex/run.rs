//! `redis-mutex run`: a command run as a child while a lock (a mutex, or a permit of a
//! semaphore) is held, renewed for as long as the child runs and released once it is gone.
//!
//! The child runs in a process group of its own, so that a lost lock can stop all of it
//! (SIGTERM to the group, SIGKILL `--kill-after` later). SIGINT, SIGTERM, SIGHUP and SIGQUIT
//! sent to `run` are passed on to that group. When `run` is in the foreground of a terminal,
//! the child's group is made the terminal's foreground group while it runs (as a shell does
//! for a job): a Ctrl-C reaches it once, straight from the terminal, and it can read the
//! terminal; `run` takes the terminal back when the child is gone.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};
use redis_mutex::{
    Error, LockKind, LostLock, Pool, RedisMutex, RedisSemaphore, TryLockError, list_locks,
};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

/// The statuses `run` gives itself; every other status is the child's.
pub(crate) const CONFLICT: u8 = 75;
pub(crate) const LOST: u8 = 76;
pub(crate) const DONE: u8 = 77;
pub(crate) const ERROR: u8 = 125;
/// As shells and `timeout(1)`: the command was found but could not be run, or not found.
const CANNOT_RUN: u8 = 126;
const NOT_FOUND: u8 = 127;

/// `run`'s arguments.
#[derive(Args)]
pub(crate) struct RunArgs {
    /// The lock's name (a semaphore's with --permits).
    name: String,
    /// The command to run while the lock is held, and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
    /// Wait at most this long for the lock (`500ms`, `20s`, `5m`); without it, wait for
    /// ever.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "no_wait")]
    wait: Option<Duration>,
    /// Give up at once when the lock is held (flock's -n).
    #[arg(long, short = 'n')]
    no_wait: bool,
    /// The lease: a runner that dies frees the lock this long after (renewed every third
    /// of it while the command runs).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    expire: Duration,
    /// Waiters take the lock in the order they came.
    #[arg(long)]
    fair: bool,
    /// At most N runs of NAME at once across the fleet (a semaphore of N permits).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    permits: Option<u32>,
    /// After a lost lock's SIGTERM, how long the command has before SIGKILL.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    kill_after: Duration,
    /// The owner id the lock is held under (what `redis-mutex list` shows); defaults to
    /// HOSTNAME/PID.
    #[arg(long, value_name = "ID")]
    owner_id: Option<String>,
    /// Run COMMAND at most once in each window of this period across the fleet (windows
    /// of the server's clock: each UTC day for `24h`); a window is marked done when COMMAND
    /// exits with 0.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "permits")]
    once_per: Option<Duration>,
    /// The status when the lock cannot be had (--no-wait, or --wait ran out): flock's -E.
    #[arg(long, value_name = "STATUS", default_value_t = CONFLICT)]
    conflict_exit_code: u8,
    /// The status when the lock was lost while the command ran.
    #[arg(long, value_name = "STATUS", default_value_t = LOST)]
    lost_exit_code: u8,
    /// The status when COMMAND was done already in this window (--once-per).
    #[arg(long, value_name = "STATUS", default_value_t = DONE)]
    done_exit_code: u8,
    /// The status of run's own errors (Redis could not be reached, a bad option).
    #[arg(long, value_name = "STATUS", default_value_t = ERROR)]
    error_exit_code: u8,
}

impl RunArgs {
    /// The status of run's own errors.
    pub(crate) fn error_exit_code(&self) -> u8 {
        self.error_exit_code
    }
}

/// What the main thread waits for while the child runs.
enum Event {
    Signal(i32),
    Lost(LostLock),
    Exited(std::io::Result<ExitStatus>),
}

/// The lock held while the child runs.
enum Held<'a> {
    Mutex(redis_mutex::RedisMutexGuard<'a>),
    Permit(redis_mutex::RedisSemaphorePermit<'a>),
}

impl Held<'_> {
    fn fencing_token(&self) -> u64 {
        match self {
            Held::Mutex(g) => g.fencing_token(),
            Held::Permit(p) => p.fencing_token(),
        }
    }

    fn unlock(self) -> redis_mutex::Result<()> {
        match self {
            Held::Mutex(g) => g.unlock(),
            Held::Permit(p) => p.release(),
        }
    }
}

/// The lock `run` takes: a mutex, or a semaphore with --permits.
enum Lock {
    Mutex(RedisMutex),
    Semaphore(RedisSemaphore),
}

/// Runs `run`: every outcome is a status, its errors included.
pub(crate) fn run(pool: Pool, args: RunArgs) -> ExitCode {
    match run_locked(pool, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redis-mutex run: {e}");
            ExitCode::from(match e {
                Error::InvalidOptions { .. } => 2, // a bad argument: a usage error
                _ => args.error_exit_code,
            })
        }
    }
}

fn default_owner_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}/{}", std::process::id())
}

fn run_locked(pool: Pool, args: &RunArgs) -> redis_mutex::Result<ExitCode> {
    let owner_id = args.owner_id.clone().unwrap_or_else(default_owner_id);
    let (tx, events) = mpsc::channel::<Event>();
    let lost_tx = tx.clone();
    let on_lost = move |lost: &LostLock| {
        lost_tx.send(Event::Lost(lost.clone())).ok();
    };
    // The options `run` gives either kind's builder (their setters share names, not a
    // trait).
    macro_rules! configured {
        ($builder:expr) => {
            $builder
                .expire(args.expire)
                .auto_renewal(true)
                .fair(args.fair)
                .owner_id(&owner_id)
                .on_lost(on_lost)
                .build()?
        };
    }
    let lock = match args.permits {
        None => Lock::Mutex(configured!(RedisMutex::builder(pool.clone(), &args.name))),
        Some(n) => Lock::Semaphore(configured!(
            RedisSemaphore::builder(pool.clone(), &args.name).permits(n)
        )),
    };
    if let (Some(period), Lock::Mutex(m)) = (args.once_per, &lock) {
        // Done already: no need to wait for the lock.
        if let Some(done) = m.period_window(period)?.done {
            eprintln!("{}", done_line(&args.name, period, &done.owner_id, done.at));
            return Ok(ExitCode::from(args.done_exit_code));
        }
    }
    let started = Instant::now();
    let taken = match (&lock, args.no_wait, args.wait) {
        (Lock::Mutex(m), true, _) => m.try_lock().map(Held::Mutex),
        (Lock::Mutex(m), false, Some(d)) => m.try_lock_for(d).map(Held::Mutex),
        (Lock::Mutex(m), false, None) => m.lock().map(Held::Mutex).map_err(TryLockError::Error),
        (Lock::Semaphore(s), true, _) => s.try_acquire().map(Held::Permit),
        (Lock::Semaphore(s), false, Some(d)) => s.try_acquire_for(d).map(Held::Permit),
        (Lock::Semaphore(s), false, None) => {
            s.acquire().map(Held::Permit).map_err(TryLockError::Error)
        }
    };
    let held = match taken {
        Ok(held) => held,
        Err(TryLockError::WouldBlock) => {
            let waited = if args.no_wait {
                String::new()
            } else {
                format!(" after waiting {:.1}s", started.elapsed().as_secs_f64())
            };
            eprintln!(
                "redis-mutex run: not running the command{waited}: {}",
                who_holds(&pool, &args.name, args.permits)
            );
            return Ok(ExitCode::from(args.conflict_exit_code));
        }
        Err(TryLockError::Error(e)) => return Err(e),
        Err(e) => {
            eprintln!("redis-mutex run: {e}");
            return Ok(ExitCode::from(args.error_exit_code));
        }
    };
    let (owner, mutex) = match &lock {
        Lock::Mutex(m) => (m.owner_id().to_owned(), Some(m)),
        Lock::Semaphore(s) => (s.owner_id().to_owned(), None),
    };
    let (Some(period), Some(mutex), Held::Mutex(_)) = (args.once_per, mutex, &held) else {
        return supervise(args, held, &owner, tx, events, |_| Ok(()));
    };
    // The window is the one the lock was taken in, however long the command runs.
    let window = match mutex.period_window(period) {
        Ok(window) => window,
        Err(e) => {
            release(held);
            return Err(e);
        }
    };
    if let Some(done) = &window.done {
        eprintln!("{}", done_line(&args.name, period, &done.owner_id, done.at));
        release(held);
        return Ok(ExitCode::from(args.done_exit_code));
    }
    supervise(args, held, &owner, tx, events, |held| match held {
        Held::Mutex(guard) => mutex.mark_period_done(guard, &window).map(drop),
        Held::Permit(_) => Ok(()),
    })
}

/// The line that says a window was done already.
fn done_line(name: &str, period: Duration, owner: &str, at: std::time::SystemTime) -> String {
    format!(
        "redis-mutex run: not running the command: `{name}` was done in this window of {} by \
         {owner} at {}",
        period_text(period),
        humantime::format_rfc3339_seconds(at)
    )
}

/// A period as a crontab user writes it: `24h`, `90m`, `1500ms`.
fn period_text(period: Duration) -> String {
    let ms = period.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Who holds `name`, for the conflict line.
fn who_holds(pool: &Pool, name: &str, permits: Option<u32>) -> String {
    let holders: Vec<_> = list_locks(pool)
        .named(name)
        .filter_map(Result::ok)
        .filter(|l| match permits {
            Some(_) => l.kind == LockKind::Semaphore,
            None => matches!(l.kind, LockKind::Mutex | LockKind::Redlock),
        })
        .map(|l| {
            let left = l.expires_in.map_or_else(
                || "with no expiry".to_owned(),
                |d| format!("for {:.1}s more", d.as_secs_f64()),
            );
            let token = l
                .fencing_token
                .map_or_else(String::new, |t| format!(", token {t}"));
            format!("{} ({left}{token})", l.owner_id)
        })
        .collect();
    let what = match permits {
        Some(n) => format!("every permit of `{name}` (at most {n} at once) is held"),
        None => format!("`{name}` is held"),
    };
    if holders.is_empty() {
        format!("{what} (its holder let go just now)")
    } else {
        format!("{what} by {}", holders.join(", "))
    }
}

/// Runs the child while `held` lasts, and releases it once the child is gone.
fn supervise(
    args: &RunArgs,
    held: Held<'_>,
    owner: &str,
    tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    on_success: impl FnOnce(&Held<'_>) -> redis_mutex::Result<()>,
) -> redis_mutex::Result<ExitCode> {
    // Before the child exists: a signal that comes from here on is passed on to it.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("redis-mutex run: cannot handle signals: {e}");
            release(held);
            return Ok(ExitCode::from(args.error_exit_code));
        }
    };
    let signal_tx = tx.clone();
    std::thread::Builder::new()
        .name("redis-mutex-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_tx.send(Event::Signal(signal)).is_err() {
                    break;
                }
            }
        })
        .ok();
    // Our terminal, when we are in its foreground: the child's group gets it while it runs.
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal() && tcgetpgrp(&stdin).is_ok_and(|pg| pg == getpgrp());

    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut command = Command::new(program);
    command
        .args(rest)
        .env("REDIS_MUTEX_NAME", &args.name)
        .env("REDIS_MUTEX_TOKEN", held.fencing_token().to_string())
        .env("REDIS_MUTEX_OWNER_ID", owner)
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!(
                "redis-mutex run: cannot run `{}`: {e}",
                program.to_string_lossy()
            );
            release(held);
            return Ok(ExitCode::from(match e.kind() {
                std::io::ErrorKind::NotFound => NOT_FOUND,
                _ => CANNOT_RUN,
            }));
        }
    };
    let group = Pid::from_raw(i32::try_from(child.id()).expect("a pid fits an i32"));
    if terminal {
        // The child may have read the terminal already, and been stopped for it.
        tcsetpgrp(&stdin, group).ok();
        killpg(group, Signal::SIGCONT).ok();
    }
    std::thread::Builder::new()
        .name("redis-mutex-child".into())
        .spawn(move || {
            tx.send(Event::Exited(child.wait())).ok();
        })
        .expect("a thread to wait for the command");

    let mut lost = false;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        let event = match kill_at {
            Some(at) => match events.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(event) => event,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    eprintln!(
                        "redis-mutex run: the command outlived SIGTERM by {}; sending SIGKILL",
                        period_text(args.kill_after)
                    );
                    killpg(group, Signal::SIGKILL).ok();
                    kill_at = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    unreachable!("the lock's on_lost keeps a sender")
                }
            },
            None => events
                .recv()
                .expect("the child's thread sends before it ends"),
        };
        match event {
            Event::Signal(signal) => {
                if let Ok(signal) = Signal::try_from(signal) {
                    killpg(group, signal).ok();
                }
            }
            Event::Lost(why) if !lost => {
                lost = true;
                eprintln!(
                    "redis-mutex run: lost the lock `{}` (token {}): {}; stopping the command \
                     (SIGTERM now, SIGKILL in {})",
                    why.name,
                    why.fencing_token
                        .map_or_else(|| "-".to_owned(), |t| t.to_string()),
                    why.reason,
                    period_text(args.kill_after)
                );
                killpg(group, Signal::SIGTERM).ok();
                kill_at = Some(Instant::now() + args.kill_after);
            }
            Event::Lost(_) => {}
            Event::Exited(status) => break status,
        }
    };
    if terminal {
        // We are in the background now: SIGTTOU would stop us for taking the terminal back.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        if ttou.thread_block().is_ok() {
            tcsetpgrp(&stdin, getpgrp()).ok();
            ttou.thread_unblock().ok();
        }
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            eprintln!("redis-mutex run: lost track of the command: {e}");
            release(held);
            return Ok(ExitCode::from(args.error_exit_code));
        }
    };
    if lost {
        drop(held); // nothing to release
        return Ok(ExitCode::from(args.lost_exit_code));
    }
    // Marked while the lock is still held: a run whose lock was lost marks nothing.
    if status.success()
        && let Err(e) = on_success(&held)
    {
        if e.is_lock_lost() {
            drop(held); // nothing to release
            eprintln!("redis-mutex run: the lock was lost before the run was marked done");
            return Ok(ExitCode::from(args.lost_exit_code));
        }
        eprintln!("redis-mutex run: marking the run done: {e}");
        release(held);
        return Ok(ExitCode::from(args.error_exit_code));
    }
    let released = held.unlock();
    match released {
        Ok(()) => {}
        Err(e) if e.is_lock_lost() || e.is_not_acquired() => {
            eprintln!("redis-mutex run: the lock was lost before the command ended: {e}");
            return Ok(ExitCode::from(args.lost_exit_code));
        }
        Err(e) => eprintln!("redis-mutex run: releasing the lock: {e} (its lease ends it)"),
    }
    Ok(ExitCode::from(child_status(status)))
}

/// The child's status as a shell gives it: its exit code, or 128 + the signal that killed
/// it.
fn child_status(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(u8::MAX),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
        (None, None) => u8::MAX,
    }
}

/// Releases a lock whose child never ran.
fn release(held: Held<'_>) {
    if let Err(e) = held.unlock() {
        eprintln!("redis-mutex run: releasing the lock: {e} (its lease ends it)");
    }
}
