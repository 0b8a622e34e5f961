//! The devices of one kind running in this process (vhost-user backends, virtio-user
//! frontends), so that a port can be found by its socket path and stopped.
//!
//! Where it sits: in [`crate::vhost`]; `backend.rs` and `frontend.rs` keep one each.

use std::sync::{Arc, Mutex, MutexGuard};

/// Devices of one kind, shared by every thread of the process.
#[derive(Debug)]
pub(crate) struct Registry<T>(Mutex<Vec<Arc<T>>>);

impl<T> Registry<T> {
    /// An empty registry (for a `static`).
    pub(crate) const fn new() -> Registry<T> {
        Registry(Mutex::new(Vec::new()))
    }

    /// The list, even after a panic while it was held: every change is one push or
    /// retain, so it is never left half-changed.
    fn list(&self) -> MutexGuard<'_, Vec<Arc<T>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a started device.
    pub(crate) fn add(&self, dev: Arc<T>) {
        self.list().push(dev);
    }

    /// The first device `is` accepts.
    pub(crate) fn find(&self, is: impl Fn(&T) -> bool) -> Option<Arc<T>> {
        self.list().iter().find(|d| is(d)).cloned()
    }

    /// Forgets device `dev`.
    pub(crate) fn remove(&self, dev: &Arc<T>) {
        self.list().retain(|d| !Arc::ptr_eq(d, dev));
    }
}
