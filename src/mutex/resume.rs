//! Lock handles for a [`RedisMutex`]: [`resume`](RedisMutex::resume) takes over a grant
//! named by a [`LockHandle`], made by a guard's `handle()` or `into_handle()`, perhaps in
//! another process.

use std::sync::Arc;

use super::guard::Core;
use super::{ArcRedisMutexGuard, RedisMutex, RedisMutexGuard};
use crate::acquire;
use crate::error::Result;
use crate::handle::{HandleKind, LockHandle};
use crate::held::Held;
use crate::options::AttemptId;

impl RedisMutex {
    /// A guard, in this process, for the grant `handle` names (made by a guard's
    /// [`handle`](RedisMutexGuard::handle) or [`into_handle`](RedisMutexGuard::into_handle),
    /// perhaps in another process), if and only if the lock still holds exactly that grant.
    ///
    /// The grant is taken over: it keeps its owner id (the handle's, which
    /// [`get_owner_id`](Self::get_owner_id) and python-redis-lock clients go on seeing) and
    /// its expiry, and gets a new [fencing token](RedisMutexGuard::fencing_token), so the
    /// handle cannot be resumed twice, and whatever its earlier holder still sends (a
    /// renewal, a release) leaves the grant alone. The guard's lease clock starts from what
    /// Redis says is left of the lease, never from the original grant. From then on the
    /// guard is this mutex's: its auto-renewal (with this mutex's expiry: build it with the
    /// giver's `expire` and `auto_renewal`, or the grant runs out when its lease does),
    /// `on_lost`, fair mode and response timeout. The grant keeps the handle's owner id:
    /// [`reset_owned_by`](crate::reset_owned_by) of that id frees it, wherever it was
    /// resumed.
    ///
    /// It waits for nothing: one request, bounded by the response timeout, takes the grant
    /// over or finds it gone, whatever the threads of this process hold or wait for.
    ///
    /// # Errors
    ///
    /// [`Error::HandleStale`](crate::Error::HandleStale) when the lock no longer holds that grant: it expired, was
    /// released or reset, was granted again (even to the same owner id), or the handle was
    /// resumed already. [`Error::InvalidOptions`](crate::Error::InvalidOptions) when the handle is not a mutex's of this
    /// name. [`Error::WrongType`](crate::Error::WrongType), [`Error::NotReplicated`](crate::Error::NotReplicated), and the errors of a request
    /// when Redis cannot be reached (an unanswered request is undone: the grant is then
    /// released, and lost to both).
    ///
    /// # Examples
    ///
    /// A scheduler takes a job's lock and hands it to the worker that runs it, in another
    /// process:
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis_mutex::{LockHandle, Pool, RedisMutex};
    ///
    /// // The scheduler:
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let job = RedisMutex::builder(pool, "job:42").expire(Duration::from_secs(30)).build()?;
    /// let handle = job.lock()?.into_handle().to_string();
    /// // ... starts the worker with REDIS_MUTEX_HANDLE=<handle> ...
    ///
    /// // The worker:
    /// let handle: LockHandle = std::env::var("REDIS_MUTEX_HANDLE").unwrap().parse()?;
    /// let pool = Pool::new("redis://127.0.0.1/")?;
    /// let job = RedisMutex::builder(pool, handle.name()).expire(Duration::from_secs(30)).build()?;
    /// let guard = job.resume(&handle)?; // renewed from now on
    /// // ... the job ...
    /// guard.unlock()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn resume(&self, handle: &LockHandle) -> Result<RedisMutexGuard<'_>> {
        handle.expect(HandleKind::Mutex, &self.name)?;
        let core = self.take_over(handle)?;
        Ok(RedisMutexGuard::new(self, core))
    }

    /// Like [`resume`](Self::resume), for an `Arc<RedisMutex>`: the guard owns a reference
    /// to the mutex (see [`lock_arc`](Self::lock_arc)).
    ///
    /// # Errors
    ///
    /// As for [`resume`](Self::resume).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use redis_mutex::{LockHandle, Pool, RedisMutex};
    ///
    /// let handle: LockHandle = std::env::var("REDIS_MUTEX_HANDLE").unwrap().parse()?;
    /// let job = RedisMutex::builder(Pool::new("redis://127.0.0.1/")?, handle.name())
    ///     .expire(std::time::Duration::from_secs(30))
    ///     .auto_renewal(true)
    ///     .build()?;
    /// let guard = Arc::new(job).resume_arc(&handle)?;
    /// std::thread::spawn(move || guard.unlock()).join().unwrap()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn resume_arc(self: &Arc<Self>, handle: &LockHandle) -> Result<ArcRedisMutexGuard> {
        handle.expect(HandleKind::Mutex, &self.name)?;
        let core = self.take_over(handle)?;
        Ok(ArcRedisMutexGuard::new(self.clone(), core))
    }

    /// Takes over the grant `handle` names, for the thread holding `local`.
    fn take_over(&self, handle: &LockHandle) -> Result<Core> {
        let calls = Arc::new(self.calls.with_owner(handle.holder()));
        let attempt = AttemptId::new();
        let call = calls.resume(handle.token(), attempt.as_str());
        let undo = [calls.undo(attempt.as_str())];
        let (granted, left) =
            acquire::take_over(&self.lock_ref(), &call, &undo, || self.wrong_type())?;
        log::debug!(
            "resumed lock `{}` from a handle (token {} taken over as {})",
            self.name,
            handle.token(),
            granted.token
        );
        let (grant, holder) = self.grant_of(calls, &granted, attempt.as_str().to_owned());
        let held = Held::resumed(grant, holder, &granted, left, &self.options)?;
        Ok(Core::new(held, &self.local, granted.token))
    }
}
