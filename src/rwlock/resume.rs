//! Lock handles for a [`RedisRwLock`]: [`resume_read`](RedisRwLock::resume_read) and
//! [`resume_write`](RedisRwLock::resume_write) take over a lease named by a
//! [`LockHandle`], made by a guard's `handle()` or `into_handle()`, perhaps in another
//! process.

use super::RESUME;
use super::grant::RwGrant;
use super::keys::Mode;
use super::{RedisRwLock, RedisRwLockReadGuard, RedisRwLockWriteGuard};
use crate::acquire;
use crate::error::{Error, Result};
use crate::handle::{HandleKind, LockHandle};
use crate::held::Held;
use crate::scripts::Call;

impl RedisRwLock {
    /// A read guard, in this process, for the read lease `handle` names (made by a read
    /// guard's [`handle`](RedisRwLockReadGuard::handle) or
    /// [`into_handle`](RedisRwLockReadGuard::into_handle), perhaps in another process), if
    /// and only if that lease is still held and live.
    ///
    /// The lease is taken over under a new lease id (with the same owner id before its
    /// `#`, and the same expiry), so the handle cannot be resumed twice and whatever its
    /// earlier holder still sends leaves it alone. The guard's lease clock starts from what
    /// Redis says is left of the lease. From then on the guard is this lock's: its
    /// auto-renewal (with this lock's expiry), `on_lost` and response timeout. It waits
    /// for nothing: one request, bounded by the response timeout, takes the lease over or
    /// finds it gone.
    ///
    /// # Errors
    ///
    /// [`Error::HandleStale`] when the lease is gone: it expired, was released or reset, or
    /// the handle was resumed already. [`Error::InvalidOptions`] when the handle is not a
    /// read lease of this path. [`Error::WrongType`], [`Error::NotReplicated`], and the
    /// errors of a request when Redis cannot be reached (an unanswered request is undone:
    /// the lease is then released, and lost to both).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{LockHandle, Pool, RedisRwLock};
    ///
    /// let handle: LockHandle = std::env::var("REDIS_MUTEX_HANDLE").unwrap().parse()?;
    /// let lock = RedisRwLock::new(Pool::new("redis://127.0.0.1/")?, handle.name())?;
    /// let reading = lock.resume_read(&handle)?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn resume_read(&self, handle: &LockHandle) -> Result<RedisRwLockReadGuard<'_>> {
        handle.expect(HandleKind::Read, &self.path)?;
        let held = self.take_over(Mode::Read, handle)?;
        Ok(RedisRwLockReadGuard::new(self, held))
    }

    /// A write guard for the write lease `handle` names: as
    /// [`resume_read`](Self::resume_read), for a write lease (made by a write guard's
    /// [`handle`](RedisRwLockWriteGuard::handle) or
    /// [`into_handle`](RedisRwLockWriteGuard::into_handle)). The lease gets a new
    /// [fencing token](RedisRwLockWriteGuard::fencing_token).
    ///
    /// # Errors
    ///
    /// As for [`resume_read`](Self::resume_read), for a write lease.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::{LockHandle, Pool, RedisRwLock};
    ///
    /// let handle: LockHandle = std::env::var("REDIS_MUTEX_HANDLE").unwrap().parse()?;
    /// let lock = RedisRwLock::new(Pool::new("redis://127.0.0.1/")?, handle.name())?;
    /// let writing = lock.resume_write(&handle)?;
    /// writing.unlock()?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn resume_write(&self, handle: &LockHandle) -> Result<RedisRwLockWriteGuard<'_>> {
        handle.expect(HandleKind::Write, &self.path)?;
        let held = self.take_over(Mode::Write, handle)?;
        Ok(RedisRwLockWriteGuard::new(self, held))
    }

    /// Takes over the lease of `mode` that `handle` names, under a new lease id.
    fn take_over(&self, mode: Mode, handle: &LockHandle) -> Result<Held<RwGrant>> {
        let owner = handle
            .holder()
            .rsplit_once('#')
            .map_or(handle.holder(), |(owner, _)| owner);
        let lease_id = format!("{owner}#{:016x}", rand::random::<u64>());
        let mut call = RESUME.call();
        call.key(self.keys.lease_sets(mode))
            .key(&self.keys.fencing)
            .arg(handle.holder())
            .arg(&lease_id)
            .arg(mode.held());
        let undo: Vec<Call> = [mode.held(), mode.waiting()]
            .into_iter()
            .map(|entry| self.release_call(entry, &lease_id))
            .collect();
        let labels = self.labels_of(mode);
        let wrong_type = || Error::WrongType {
            name: self.path.to_string(),
            key: None,
        };
        let (granted, left) =
            acquire::take_over(&self.lock_ref(mode, &labels), &call, &undo, wrong_type)?;
        log::debug!(
            "resumed {} lock `{}` from a handle, as lease {lease_id}",
            mode.name(),
            self.path
        );
        let (grant, holder) = self.grant_of(mode, lease_id.clone(), &granted);
        Held::resumed(grant, holder, &granted, left, &self.options)
    }
}
