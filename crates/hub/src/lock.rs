//! Locking a `std::sync::Mutex` without giving up on poisoning.
//!
//! Every mutex in the hub guards plain data (queues, subscriber lists, timestamps) that stays
//! consistent even if a holder panicked, so a poisoned lock is simply taken over.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking it over if a panicking holder poisoned it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
