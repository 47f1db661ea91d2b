// SPDX-License-Identifier: GPL-2.0

//! Fields of the running task, read at the offsets the C compiler gives
//! (`task_offsets.c`, turned into `task_offsets.rs` by `Kbuild`): bindgen's
//! `struct task_struct` is laid out short on the test kernels (48 bytes
//! before `policy` on 7.3.4), so its field offsets are not used.

/// `pub(crate) const NAME: usize = OFFSET;` for each field, from `Kbuild`.
mod offsets {
    include!("../task_offsets.rs");
}

/// Reads a field of the running task.
///
/// # Safety
///
/// `offset` must be the offset of a field of type `T` in `struct
/// task_struct` that the running task may read (its own, racing only with
/// itself and its interrupts, as the kernel's own readers do).
unsafe fn current_field<T: Copy>(offset: usize) -> T {
    let task = kernel::task::Task::current_raw().cast::<u8>();
    // SAFETY: `current` is live and `offset` is within it (caller).
    unsafe { core::ptr::read_volatile(task.add(offset).cast::<T>()) }
}

/// `current->policy`.
pub(crate) fn policy() -> u32 {
    // SAFETY: `policy` is an `unsigned int`.
    unsafe { current_field(offsets::POLICY) }
}

/// `current->static_prio`.
pub(crate) fn static_prio() -> i32 {
    // SAFETY: `static_prio` is an `int`.
    unsafe { current_field(offsets::STATIC_PRIO) }
}

/// `rcu_preempt_depth()`: 0 without `CONFIG_PREEMPT_RCU`.
pub(crate) fn rcu_preempt_depth() -> u32 {
    #[cfg(CONFIG_PREEMPT_RCU)]
    // SAFETY: `rcu_read_lock_nesting` is an `int`.
    return unsafe { current_field::<i32>(offsets::RCU_READ_LOCK_NESTING) } as u32;
    #[cfg(not(CONFIG_PREEMPT_RCU))]
    0
}

/// Lockdep's irq state of the task: `(softirq_context, hardirq_threaded
/// || irq_config)`, both false without `CONFIG_TRACE_IRQFLAGS`.
pub(crate) fn lockdep_irq_state() -> (bool, bool) {
    #[cfg(CONFIG_TRACE_IRQFLAGS)]
    // SAFETY: `softirq_context` and `irq_config` are `int`s,
    // `hardirq_threaded` an `unsigned int`.
    return unsafe {
        (
            current_field::<i32>(offsets::SOFTIRQ_CONTEXT) != 0,
            current_field::<u32>(offsets::HARDIRQ_THREADED) != 0
                || current_field::<i32>(offsets::IRQ_CONFIG) != 0,
        )
    };
    #[cfg(not(CONFIG_TRACE_IRQFLAGS))]
    (false, false)
}

/// `current->lockdep_recursion != 0`: `lockdep_off()` (as in NMI).
pub(crate) fn lockdep_off() -> bool {
    #[cfg(CONFIG_LOCKDEP)]
    // SAFETY: `lockdep_recursion` is an `unsigned int`.
    return unsafe { current_field::<u32>(offsets::LOCKDEP_RECURSION) } != 0;
    #[cfg(not(CONFIG_LOCKDEP))]
    false
}

/// `current->softirq_disable_cnt`, PREEMPT_RT's softirq count.
#[cfg(CONFIG_PREEMPT_RT)]
pub(crate) fn softirq_disable_cnt() -> u32 {
    // SAFETY: `softirq_disable_cnt` is an `int`.
    unsafe { current_field::<i32>(offsets::SOFTIRQ_DISABLE_CNT) as u32 }
}
