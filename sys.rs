// SPDX-License-Identifier: GPL-2.0

//! The FFI corner: the few kernel primitives the kernel crate has no
//! abstraction for, each wrapped once so that the rest of the crate is
//! safe code. One concern per file; the rest of the crate names them
//! `sys::...` through the re-exports below. The only `unsafe` outside
//! `sys` is the tracepoint trampolines `probes.rs` generates (their data
//! pointer and arguments) and the calls of `probes::attach()`.
//!
//! - `alloc`: GFP masks and owned allocations (pages, slab objects);
//! - `rcu`: the `kfree_rcu()` rows' cache and calls;
//! - `locks`: the module's raw spinlock and `preempt_disable()` section;
//! - `contexts`: which context runs, and hard irq, softirq, bottom halves;
//! - `nmi`: a self-NMI (x86);
//! - `memory`: zone watermarks, kswapd, the page counters;
//! - `tracepoint`: probes on builtin tracepoints;
//! - `lockdep`, `task`: lockdep's view, and the running task's fields;
//! - here: clocks, the CPU and task, the taint mask.

use kernel::bindings;

mod alloc;
mod contexts;
mod locks;
mod memory;
#[cfg(have_self_nmi)]
mod nmi;
mod tracepoint;

pub(crate) mod lockdep;
#[cfg(have_slab_rows)]
pub(crate) mod rcu;
pub(crate) mod task;

pub(crate) use alloc::*;
pub(crate) use contexts::*;
pub(crate) use locks::*;
pub(crate) use memory::*;
#[cfg(have_self_nmi)]
pub(crate) use nmi::*;
pub(crate) use tracepoint::*;

pub(crate) fn jiffies() -> usize {
    // SAFETY: `jiffies` is always readable; it is updated atomically.
    unsafe { core::ptr::read_volatile(&raw const bindings::jiffies) as usize }
}

/// Whether the kernel carries TAINT_WARN (set by every WARN and every
/// "sleeping function called from invalid context" report).
pub(crate) fn warn_tainted() -> bool {
    // SAFETY: Reads one bit of the taint mask.
    unsafe { bindings::test_taint(bindings::TAINT_WARN) != 0 }
}

pub(crate) fn hz() -> usize {
    kernel::time::msecs_to_jiffies(1000) as usize
}

pub(crate) fn current_task() -> usize {
    kernel::task::Task::current_raw() as usize
}

pub(crate) fn current_cpu() -> u32 {
    kernel::cpu::CpuId::current().as_u32()
}

/// Monotonic nanoseconds, safe in NMI (`ktime_get_mono_fast_ns()`):
/// `ktime_get()` may spin forever in an NMI that interrupted a timekeeping
/// update on its CPU.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: Callable from any context.
    unsafe { bindings::ktime_get_mono_fast_ns() }
}
