// SPDX-License-Identifier: GPL-2.0

//! The module's own locks and sections: a `raw_spinlock_t` with a lockdep
//! class of its own, and a `preempt_disable()` section.

use kernel::{bindings, prelude::*, types::Opaque};

/// `raw_spinlock_t` with a lockdep class of its own.
#[pin_data]
pub(crate) struct RawSpinLock {
    #[pin]
    lock: Opaque<bindings::raw_spinlock_t>,
}

// SAFETY: A `raw_spinlock_t` is designed to be locked from any thread.
unsafe impl Send for RawSpinLock {}
// SAFETY: A `raw_spinlock_t` is designed to be shared between threads.
unsafe impl Sync for RawSpinLock {}

impl RawSpinLock {
    pub(crate) fn new() -> impl PinInit<Self> {
        let key = kernel::static_lock_class!();
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes; the name and the class key
            // are static, as lockdep requires.
            lock <- Opaque::ffi_init(|slot| unsafe {
                bindings::__raw_spin_lock_init(
                    slot,
                    c"rust_gfp_nolocks_raw".as_char_ptr(),
                    key.as_ptr(),
                    bindings::lockdep_wait_type_LD_WAIT_SPIN as i16,
                )
            }),
        })
    }

    /// Runs `f` with the lock held (`raw_spin_lock()`).
    pub(crate) fn with(&self, f: &mut dyn FnMut()) {
        // SAFETY: The lock was initialised by `new` and lives as long as `self`.
        unsafe { bindings::_raw_spin_lock(self.lock.get()) };
        f();
        // SAFETY: Taken just above, on this CPU, with preemption still off.
        unsafe { bindings::_raw_spin_unlock(self.lock.get()) };
    }

    /// Runs `f` with the lock held and interrupts off (`raw_spin_lock_irqsave()`).
    pub(crate) fn with_irqsave(&self, f: &mut dyn FnMut()) {
        // SAFETY: As in `with`.
        let flags = unsafe { bindings::_raw_spin_lock_irqsave(self.lock.get()) };
        f();
        // SAFETY: Taken just above; `flags` is what the lock call returned.
        unsafe { bindings::_raw_spin_unlock_irqrestore(self.lock.get(), flags) };
    }
}

/// Runs `f` between `preempt_disable()` and `preempt_enable_no_resched()`.
///
/// The exported `preempt_count_add()` exists with `CONFIG_DEBUG_PREEMPT`
/// or `CONFIG_TRACE_PREEMPT_TOGGLE` only; elsewhere the context is absent.
/// A reschedule requested inside `f` waits for the next preemption point.
#[cfg(any(CONFIG_DEBUG_PREEMPT, CONFIG_TRACE_PREEMPT_TOGGLE))]
pub(crate) fn with_preempt_disabled(f: &mut dyn FnMut()) {
    // SAFETY: Balanced by the `preempt_count_sub()` below on the same task.
    unsafe { bindings::preempt_count_add(1) };
    f();
    // SAFETY: Balances the `preempt_count_add()` above.
    unsafe { bindings::preempt_count_sub(1) };
}

/// Whether lockdep still checks anything (`debug_locks`): lockdep turns
/// itself off after its first report.
pub(crate) fn lockdep_armed() -> bool {
    // SAFETY: `debug_locks` is a plain int the kernel only ever sets to 0;
    // a racy read is what the kernel itself does.
    unsafe { core::ptr::read_volatile(&raw const bindings::debug_locks) != 0 }
}
