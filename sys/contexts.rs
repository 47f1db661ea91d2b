// SPDX-License-Identifier: GPL-2.0

//! Execution contexts: which one is running (task, softirq, hard irq, NMI),
//! and running a body in hard irq or softirq context, or with bottom halves
//! off, on this CPU.

use super::current_cpu;
use core::ffi::c_uint;
use kernel::bindings;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExecContext {
    Task = 0,
    Softirq = 1,
    Hardirq = 2,
    Nmi = 3,
}

impl ExecContext {
    /// The inverse of `as u32`, for a context kept in an atomic.
    pub(crate) fn from_u32(v: u32) -> Self {
        match v {
            1 => ExecContext::Softirq,
            2 => ExecContext::Hardirq,
            3 => ExecContext::Nmi,
            _ => ExecContext::Task,
        }
    }
}

/// The context this CPU runs in, from `preempt_count()` (as `in_nmi()`,
/// `in_hardirq()` and `in_serving_softirq()` read it). Call it where the
/// task cannot migrate (the probes run from printk with interrupts off, and
/// from the allocator under its locks), or the count read may be another
/// CPU's.
///
/// x86 keeps the count in the per-cpu `__preempt_count` (exported); other
/// architectures keep it in `thread_info`, which this module does not
/// read: there every context counts as `Task`. On PREEMPT_RT softirqs run
/// in threads and their count lives in the task, so they count as `Task`
/// of that thread (never the cell's task, which disables no bottom half).
pub(crate) fn exec_context() -> ExecContext {
    #[cfg(CONFIG_X86)]
    {
        extern "C" {
            static __preempt_count: kernel::ffi::c_ulong;
        }
        let cpu = current_cpu() as usize;
        // SAFETY: `__per_cpu_offset` has an entry for every possible CPU and
        // `cpu` is the one we run on; `per_cpu_ptr()` is this sum. The low
        // 32 bits of the count hold every context field (little endian).
        let count = unsafe {
            let base = (&raw const __preempt_count) as usize;
            let ptr = base.wrapping_add(bindings::__per_cpu_offset[cpu]);
            core::ptr::read_volatile(ptr as *const u32)
        };
        let nmi_mask = u32::MAX << bindings::NMI_SHIFT;
        let hardirq_mask = ((1u32 << bindings::HARDIRQ_BITS) - 1) << bindings::HARDIRQ_SHIFT;
        let softirq_offset = 1u32 << bindings::SOFTIRQ_SHIFT;
        // Without separate resched bits the top bit is PREEMPT_NEED_RESCHED.
        #[cfg(not(CONFIG_HAS_SEPARATE_PREEMPT_RESCHED_BITS))]
        let nmi_mask = nmi_mask & !(1 << 31);
        if count & nmi_mask != 0 {
            ExecContext::Nmi
        } else if count & hardirq_mask != 0 {
            ExecContext::Hardirq
        } else if count & softirq_offset != 0 {
            ExecContext::Softirq
        } else {
            ExecContext::Task
        }
    }
    #[cfg(not(CONFIG_X86))]
    ExecContext::Task
}

// ---------------------------------------------------------------------------
// Hard interrupt context on this CPU.
// ---------------------------------------------------------------------------

/// Runs `f` in hard interrupt context on this CPU: an `irq_work` with
/// `IRQ_WORK_HARD_IRQ`, which stays in hard irq on PREEMPT_RT too.
#[repr(C)]
struct HardIrqCall<'a> {
    work: bindings::irq_work,
    f: &'a mut dyn FnMut(),
}

/// # Safety
///
/// `work` must be the `work` field of a live `HardIrqCall`.
unsafe extern "C" fn hardirq_trampoline(work: *mut bindings::irq_work) {
    // SAFETY: `work` is the first field of the `HardIrqCall` queued by
    // `in_hardirq`, which waits for this function to return.
    let call = unsafe { &mut *work.cast::<HardIrqCall<'_>>() };
    (call.f)();
}

/// Runs `f` in a hard interrupt and returns once it has run. Who is
/// `current` while it runs does not matter: the detector attributes what
/// the handler prints by CPU and context, not by task.
pub(crate) fn in_hardirq(f: &mut dyn FnMut()) {
    let mut call = HardIrqCall {
        // SAFETY: An all-zero `irq_work` is an idle, unqueued one.
        work: unsafe { core::mem::zeroed() },
        f,
    };
    call.work.node.__bindgen_anon_1.u_flags = bindings::IRQ_WORK_HARD_IRQ as c_uint;
    call.work.func = Some(hardirq_trampoline);
    let work = &raw mut call.work;
    // SAFETY: `work` is initialised and stays alive until `irq_work_sync()`
    // has returned; the hard-irq work is waited for by spinning, in process
    // context with interrupts on.
    unsafe {
        bindings::irq_work_queue(work);
        bindings::irq_work_sync(work);
    }
}

// ---------------------------------------------------------------------------
// Bottom halves and softirq context on this CPU.
// ---------------------------------------------------------------------------

/// Runs `f` with bottom halves disabled (`local_bh_disable()`).
///
/// The exported `__local_bh_disable_ip()` exists with `CONFIG_TRACE_IRQFLAGS`
/// or on PREEMPT_RT only (elsewhere it is an inline `preempt_count_add()`);
/// without it the row is absent. On PREEMPT_RT this takes no preemption
/// count: it holds `rcu_read_lock()`, disables migration and acquires
/// lockdep's `local_bh` map. Softirqs raised inside `f` run when `f` returns.
#[cfg(any(CONFIG_TRACE_IRQFLAGS, CONFIG_PREEMPT_RT))]
pub(crate) fn with_bh_disabled(f: &mut dyn FnMut()) {
    let ip = with_bh_disabled as *const () as usize as kernel::ffi::c_ulong;
    // SAFETY: Balanced by the `__local_bh_enable_ip()` below on the same task,
    // which runs in process context with interrupts on.
    unsafe { bindings::__local_bh_disable_ip(ip, bindings::SOFTIRQ_DISABLE_OFFSET) };
    f();
    // SAFETY: Balances the `__local_bh_disable_ip()` above.
    unsafe { bindings::__local_bh_enable_ip(ip, bindings::SOFTIRQ_DISABLE_OFFSET) };
}

/// A tasklet that runs `f` once, in the softirq that serves it.
#[cfg(any(CONFIG_TRACE_IRQFLAGS, CONFIG_PREEMPT_RT))]
#[repr(C)]
struct SoftirqCall<'a> {
    tasklet: bindings::tasklet_struct,
    f: &'a mut dyn FnMut(),
}

/// # Safety
///
/// `t` must be the `tasklet` field of a live `SoftirqCall`.
#[cfg(any(CONFIG_TRACE_IRQFLAGS, CONFIG_PREEMPT_RT))]
unsafe extern "C" fn softirq_trampoline(t: *mut bindings::tasklet_struct) {
    // SAFETY: `t` is the first field of the `SoftirqCall` scheduled by
    // `in_softirq`, which waits in `tasklet_kill()` for this function.
    let call = unsafe { &mut *t.cast::<SoftirqCall<'_>>() };
    (call.f)();
}

/// Runs `f` in a softirq on this CPU, served by the calling task: a
/// high-priority tasklet is scheduled with bottom halves disabled, and
/// `local_bh_enable()` runs it before it returns (`do_softirq()`; on
/// PREEMPT_RT `__do_softirq()` in this task, with bottom halves still
/// disabled: a preemptible softirq under `rcu_read_lock()`). Should a
/// softirq daemon serve it instead, `f` has still run once, on this CPU,
/// when this returns.
#[cfg(any(CONFIG_TRACE_IRQFLAGS, CONFIG_PREEMPT_RT))]
pub(crate) fn in_softirq(f: &mut dyn FnMut()) {
    let mut call = SoftirqCall {
        // SAFETY: `tasklet_setup()` below initialises every field.
        tasklet: unsafe { core::mem::zeroed() },
        f,
    };
    let t = &raw mut call.tasklet;
    // SAFETY: `t` is valid and stays alive until `tasklet_kill()` returns,
    // which waits for a scheduled tasklet to have run and finished. The
    // tasklet is new, so `tasklet_hi_schedule()`'s test-and-set of
    // TASKLET_STATE_SCHED is a plain set here.
    unsafe {
        bindings::tasklet_setup(t, Some(softirq_trampoline));
        (*t).state = 1 << bindings::TASKLET_STATE_SCHED;
    }
    with_bh_disabled(&mut || {
        // SAFETY: As above; raising HI_SOFTIRQ with bottom halves disabled
        // wakes no daemon, and `local_bh_enable()` serves it.
        unsafe { bindings::__tasklet_hi_schedule(t) }
    });
    // SAFETY: Process context: `tasklet_kill()` may sleep until it ran.
    unsafe { bindings::tasklet_kill(t) };
}
