// SPDX-License-Identifier: GPL-2.0

//! Read-write semaphores.
//!
//! A [`RwSemaphore`] protects data that many readers may hold at once, or one writer alone.
//! Both sides may sleep while they hold it. Drivers use one where a writer must wait for every
//! reader to be done, as an MMU notifier does for the GPU submissions that check its sequence
//! number (`Documentation/gpu/drm-vm-bind-locking.rst`).
//!
//! C header: [`include/linux/rwsem.h`](srctree/include/linux/rwsem.h)

use crate::{
    bindings,
    error::{to_result, Result},
    prelude::*,
    str::CStr,
    sync::LockClassKey,
    types::{NotThreadSafe, Opaque},
};
use core::{cell::UnsafeCell, marker::PhantomPinned, ops::Deref, ops::DerefMut};

/// Creates a [`RwSemaphore`] initialiser with the given name and a new lock class.
///
/// # Examples
///
/// ```
/// use kernel::{new_rwsem, sync::rwsem::RwSemaphore};
///
/// let sem = KBox::pin_init(new_rwsem!(7u32, "example"), GFP_KERNEL)?;
/// {
///     let a = sem.read();
///     let b = sem.read();
///     assert_eq!(*a + *b, 14);
/// }
/// *sem.write() += 1;
/// assert_eq!(*sem.read(), 8);
/// # Ok::<(), Error>(())
/// ```
#[macro_export]
macro_rules! new_rwsem {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::sync::rwsem::RwSemaphore::new(
            $inner, $crate::optional_name!($($name)?), $crate::static_lock_class!())
    };
}
pub use new_rwsem;

/// A read-write semaphore around data of type `T`.
///
/// # Invariants
///
/// `sem` is an initialised `struct rw_semaphore` from the end of initialisation until the
/// semaphore is dropped, and `data` is accessed only as its guards allow: shared through a
/// [`ReadGuard`], exclusive through a [`WriteGuard`].
#[pin_data]
pub struct RwSemaphore<T: ?Sized> {
    #[pin]
    sem: Opaque<bindings::rw_semaphore>,
    /// The C semaphore is self-referential (its wait list) and lockdep knows its address.
    #[pin]
    _pin: PhantomPinned,
    data: UnsafeCell<T>,
}

// SAFETY: The semaphore may be dropped and its data used from any thread; moving the data across
// threads needs `T: Send`.
unsafe impl<T: ?Sized + Send> Send for RwSemaphore<T> {}

// SAFETY: Readers on several threads share `&T` at once (`T: Sync`), and a writer on any thread
// gets `&mut T` (`T: Send`).
unsafe impl<T: ?Sized + Send + Sync> Sync for RwSemaphore<T> {}

impl<T> RwSemaphore<T> {
    /// Creates a semaphore around `data`, in lockdep class `key` called `name`.
    pub fn new(
        data: T,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            data: UnsafeCell::new(data),
            _pin: PhantomPinned,
            // SAFETY: `slot` is valid while the closure runs; `__init_rwsem` initialises it,
            // and `name` and `key` are static, as lockdep needs.
            sem <- unsafe {
                Opaque::ffi_init(|slot| {
                    bindings::__init_rwsem(slot, name.as_char_ptr(), key.as_ptr())
                })
            },
        })
    }
}

impl<T: ?Sized> RwSemaphore<T> {
    fn raw(&self) -> *mut bindings::rw_semaphore {
        self.sem.get()
    }

    /// Takes the semaphore for reading, sleeping while a writer holds it.
    pub fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: `sem` is initialised (type invariant).
        unsafe { bindings::down_read(self.raw()) };
        // INVARIANT: The semaphore is held for reading.
        ReadGuard {
            sem: self,
            _not_send: NotThreadSafe,
        }
    }

    /// Takes the semaphore for reading if no writer holds it or waits for it.
    pub fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        // SAFETY: `sem` is initialised (type invariant).
        if unsafe { bindings::down_read_trylock(self.raw()) } == 0 {
            return None;
        }
        // INVARIANT: The semaphore is held for reading.
        Some(ReadGuard {
            sem: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Takes the semaphore for reading, unless a signal comes first (`EINTR`).
    pub fn read_interruptible(&self) -> Result<ReadGuard<'_, T>> {
        // SAFETY: `sem` is initialised (type invariant).
        to_result(unsafe { bindings::down_read_interruptible(self.raw()) })?;
        // INVARIANT: The semaphore is held for reading.
        Ok(ReadGuard {
            sem: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Takes the semaphore for writing, sleeping until no one else holds it.
    pub fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: `sem` is initialised (type invariant).
        unsafe { bindings::down_write(self.raw()) };
        // INVARIANT: The semaphore is held for writing.
        WriteGuard {
            sem: self,
            _not_send: NotThreadSafe,
        }
    }

    /// Takes the semaphore for writing if no one holds it.
    pub fn try_write(&self) -> Option<WriteGuard<'_, T>> {
        // SAFETY: `sem` is initialised (type invariant).
        if unsafe { bindings::down_write_trylock(self.raw()) } == 0 {
            return None;
        }
        // INVARIANT: The semaphore is held for writing.
        Some(WriteGuard {
            sem: self,
            _not_send: NotThreadSafe,
        })
    }
}

/// The semaphore, held for reading; dropping the guard releases it.
///
/// # Invariants
///
/// The guard holds `sem` for reading.
pub struct ReadGuard<'a, T: ?Sized> {
    sem: &'a RwSemaphore<T>,
    _not_send: NotThreadSafe,
}

impl<T: ?Sized> Deref for ReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: Readers only share the data: no writer holds the semaphore (type invariant).
        unsafe { &*self.sem.data.get() }
    }
}

impl<T: ?Sized> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: The guard holds the semaphore for reading (type invariant).
        unsafe { bindings::up_read(self.sem.raw()) };
    }
}

/// The semaphore, held for writing; dropping the guard releases it.
///
/// # Invariants
///
/// The guard holds `sem` for writing.
pub struct WriteGuard<'a, T: ?Sized> {
    sem: &'a RwSemaphore<T>,
    _not_send: NotThreadSafe,
}

impl<T: ?Sized> Deref for WriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The writer holds the semaphore alone (type invariant).
        unsafe { &*self.sem.data.get() }
    }
}

impl<T: ?Sized> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: The writer holds the semaphore alone (type invariant), and the guard is
        // borrowed mutably.
        unsafe { &mut *self.sem.data.get() }
    }
}

impl<T: ?Sized> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: The guard holds the semaphore for writing (type invariant).
        unsafe { bindings::up_write(self.sem.raw()) };
    }
}

#[macros::kunit_tests(rust_rwsem)]
mod tests {
    use super::*;
    use crate::{
        sync::{
            atomic::{Atomic, Relaxed},
            Arc, Completion,
        },
        workqueue::{self, impl_has_work, new_work, Work, WorkItem},
    };

    #[test]
    fn readers_share_and_writers_exclude() -> Result {
        let sem = KBox::pin_init(new_rwsem!(0u32), GFP_KERNEL)?;
        {
            let r1 = sem.read();
            let r2 = sem.try_read().ok_or(EBUSY)?;
            assert_eq!(*r1 + *r2, 0);
            // A writer must wait for the readers.
            assert!(sem.try_write().is_none());
        }
        {
            let mut w = sem.write();
            *w = 5;
            assert!(sem.try_read().is_none());
            assert!(sem.try_write().is_none());
        }
        assert_eq!(*sem.read_interruptible()?, 5);
        Ok(())
    }

    /// A writer on another thread, blocked by a reader here.
    #[pin_data]
    struct Writer {
        sem: Pin<KBox<RwSemaphore<u32>>>,
        #[pin]
        started: Completion,
        #[pin]
        done: Completion,
        wrote: Atomic<bool>,
        #[pin]
        work: Work<Writer>,
    }

    impl_has_work! {
        impl HasWork<Self> for Writer { self.work }
    }

    impl WorkItem for Writer {
        type Pointer = Arc<Writer>;

        fn run(this: Arc<Writer>) {
            this.started.complete_all();
            let mut w = this.sem.write();
            *w += 1;
            // Before letting go, so that a reader that gets in next sees it.
            this.wrote.store(true, Relaxed);
            drop(w);
            this.done.complete_all();
        }
    }

    #[test]
    fn a_writer_waits_for_the_reader() -> Result {
        let sem = KBox::pin_init(new_rwsem!(0u32), GFP_KERNEL)?;
        let writer = Arc::pin_init(
            pin_init!(Writer {
                sem,
                started <- Completion::new(),
                done <- Completion::new(),
                wrote: Atomic::new(false),
                work <- new_work!("rust_rwsem::writer"),
            }),
            GFP_KERNEL,
        )?;
        let reader = writer.sem.read();
        let _ = workqueue::system().enqueue(writer.clone());
        writer.started.wait_for_completion();
        // Give the writer time to block on the semaphore.
        crate::time::delay::fsleep(crate::time::Delta::from_millis(20));
        assert!(!writer.wrote.load(Relaxed));
        drop(reader);
        // The writer gets it once the reader let go.
        writer.done.wait_for_completion();
        assert!(writer.wrote.load(Relaxed));
        assert_eq!(*writer.sem.read(), 1);
        Ok(())
    }
}
