// SPDX-License-Identifier: GPL-2.0

//! Lockdep's view, read where lockdep and `__might_resched()` read it: a
//! `struct lockdep_map`'s name and wait types (which its class copies when
//! lockdep registers it), the inputs of lockdep's `task_wait_context()` and
//! `task_irq_context()`, and the state the sleep check tests (preempt count,
//! RCU nesting, interrupts). All of it from the running CPU and task, in
//! any context: no lock, no allocation, no printk.

use core::marker::PhantomData;
use kernel::bindings;
use kernel::ffi::c_char;

pub(crate) const WAIT_SPIN: u8 = bindings::lockdep_wait_type_LD_WAIT_SPIN as u8;
/// `LD_WAIT_SPIN` itself without `CONFIG_PROVE_RAW_LOCK_NESTING`.
pub(crate) const WAIT_CONFIG: u8 = bindings::lockdep_wait_type_LD_WAIT_CONFIG as u8;
pub(crate) const WAIT_SLEEP: u8 = bindings::lockdep_wait_type_LD_WAIT_SLEEP as u8;
pub(crate) const WAIT_MAX: u8 = bindings::lockdep_wait_type_LD_WAIT_MAX as u8;
pub(crate) const LOCK_NORMAL: u8 = bindings::lockdep_lock_type_LD_LOCK_NORMAL as u8;
/// A local lock's map (`local_lock_t`; on PREEMPT_RT a `spinlock_t`).
pub(crate) const LOCK_PERCPU: u8 = bindings::lockdep_lock_type_LD_LOCK_PERCPU as u8;
/// A `DEFINE_WAIT_OVERRIDE_MAP()`: while held, the context's wait type
/// becomes the map's inner one (`check_wait_context()`).
pub(crate) const LOCK_WAIT_OVERRIDE: u8 = bindings::lockdep_lock_type_LD_LOCK_WAIT_OVERRIDE as u8;
/// `MIGHT_RESCHED_RCU_SHIFT` (include/linux/sched.h): where
/// `__might_resched()` adds the RCU nesting to the preempt count.
const MIGHT_RESCHED_RCU_SHIFT: u32 = 8;

/// A lockdep map handed to a tracepoint probe, alive for the probe's call.
#[derive(Clone, Copy)]
pub(crate) struct MapRef<'a> {
    map: *const bindings::lockdep_map,
    _probe: PhantomData<&'a bindings::lockdep_map>,
}

impl<'a> MapRef<'a> {
    /// # Safety
    ///
    /// `map` must point to a lockdep map that lives as long as the value:
    /// the `lock_acquire` or `lock_release` tracepoint's `lock` argument,
    /// used within the probe.
    pub(crate) unsafe fn new(map: *const bindings::lockdep_map) -> Self {
        Self {
            map,
            _probe: PhantomData,
        }
    }

    /// The map's address: the lock instance's identity.
    pub(crate) fn addr(self) -> usize {
        self.map as usize
    }

    /// `(wait_type_inner, wait_type_outer, lock_type)`.
    pub(crate) fn wait_types(self) -> (u8, u8, u8) {
        // SAFETY: `map` is live (`new`); three plain byte fields, set when
        // the map was initialised.
        unsafe {
            (
                (*self.map).wait_type_inner,
                (*self.map).wait_type_outer,
                (*self.map).lock_type,
            )
        }
    }

    /// Keyed `__lockdep_no_track__` (`lockdep_set_notrack_class()`):
    /// `__lock_acquire()` returns before it checks or holds such a lock.
    pub(crate) fn untracked(self) -> bool {
        // SAFETY: `map` is live (`new`); `key` is a plain pointer field.
        let key = unsafe { (*self.map).key };
        core::ptr::eq(key, &raw const bindings::__lockdep_no_track__)
    }

    /// The map's name (its class name, as lockdep prints it), up to `max`
    /// bytes; empty if it has none.
    pub(crate) fn name(self, max: usize) -> &'a [u8] {
        // SAFETY: `map` is live (`new`); `name` is NULL or a NUL-terminated
        // string that lives as long as the lock (a literal, mostly, or a
        // name its owner keeps, such as a workqueue's).
        let name: *const c_char = unsafe { (*self.map).name };
        if name.is_null() {
            return &[];
        }
        let mut len = 0;
        // SAFETY: As above: readable up to its NUL, which ends the loop.
        while len < max && unsafe { *name.add(len) } != 0 {
            len += 1;
        }
        // SAFETY: `len` bytes were just read; the string outlives the
        // probe's use of it (copied before it returns).
        unsafe { core::slice::from_raw_parts(name.cast(), len) }
    }
}

/// What lockdep and the sleep check see of the running context.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ContextState {
    /// `preempt_count()`, without x86's inverted need-resched bit.
    pub(crate) preempt_count: u32,
    /// `softirq_count()`: in the preempt count, or on PREEMPT_RT the
    /// task's `softirq_disable_cnt`.
    pub(crate) softirq_count: u32,
    /// `rcu_preempt_depth()`: 0 without `CONFIG_PREEMPT_RCU`.
    pub(crate) rcu_depth: u32,
    pub(crate) irqs_disabled: bool,
    /// `lockdep_hardirq_context()`: the per-cpu `hardirq_context`.
    pub(crate) hardirq_context: bool,
    /// `current->softirq_context`.
    pub(crate) softirq_context: bool,
    /// `current->hardirq_threaded || current->irq_config`: a hard irq that
    /// force-threading would run in a thread (`task_wait_context()`).
    pub(crate) irq_threaded: bool,
    /// Lockdep is running on this CPU (the per-cpu `lockdep_recursion`,
    /// while it checks a lock or prints a report): what it acquires
    /// meanwhile is its own, and it checks none of it.
    pub(crate) in_lockdep: bool,
    /// Lockdep is off for this task (`lockdep_off()`, as `__nmi_enter()`
    /// does): it checks nothing the task acquires.
    pub(crate) lockdep_off: bool,
}

const fn field_mask(bits: u32, shift: u32) -> u32 {
    ((1 << bits) - 1) << shift
}
/// Up to bit 31, which `preempt_count()` leaves out on x86.
const NMI_MASK: u32 = u32::MAX << bindings::NMI_SHIFT;
const HARDIRQ_MASK: u32 = field_mask(bindings::HARDIRQ_BITS, bindings::HARDIRQ_SHIFT);
const SOFTIRQ_MASK: u32 = field_mask(bindings::SOFTIRQ_BITS, bindings::SOFTIRQ_SHIFT);
const SOFTIRQ_OFFSET: u32 = 1 << bindings::SOFTIRQ_SHIFT;

/// The runtime checks of `include/linux/preempt.h`, as code inside the
/// context would call them.
impl ContextState {
    pub(crate) fn in_nmi(&self) -> bool {
        self.preempt_count & NMI_MASK != 0
    }

    pub(crate) fn in_hardirq(&self) -> bool {
        self.preempt_count & HARDIRQ_MASK != 0
    }

    pub(crate) fn in_serving_softirq(&self) -> bool {
        self.softirq_count & SOFTIRQ_OFFSET != 0
    }

    pub(crate) fn in_task(&self) -> bool {
        !(self.in_nmi() || self.in_hardirq() || self.in_serving_softirq())
    }

    pub(crate) fn in_atomic(&self) -> bool {
        self.preempt_count != 0
    }

    pub(crate) fn preemptible(&self) -> bool {
        self.preempt_count == 0 && !self.irqs_disabled
    }
}

impl ContextState {
    /// Lockdep's `task_irq_context()`: hard irq 2, softirq 1.
    pub(crate) fn irq_context(&self) -> u8 {
        (u8::from(self.hardirq_context) << 1) | u8::from(self.softirq_context)
    }

    /// Lockdep's `task_wait_context()`: the wait type the context itself
    /// allows, before any held lock lowers it.
    pub(crate) fn wait_context(&self) -> u8 {
        if self.hardirq_context {
            if self.irq_threaded {
                WAIT_CONFIG
            } else {
                WAIT_SPIN
            }
        } else if self.softirq_context {
            WAIT_CONFIG
        } else {
            WAIT_MAX
        }
    }

    /// Whether `__might_resched(.., offsets)` reports here, where `offsets`
    /// counts `rcu_nesting_allowed` levels of RCU (`resched_offsets_ok()`,
    /// or interrupts off); the rate limit and the boot states aside.
    fn might_resched_reports(&self, rcu_nesting_allowed: u32) -> bool {
        let nested = self.preempt_count + (self.rcu_depth << MIGHT_RESCHED_RCU_SHIFT);
        nested != rcu_nesting_allowed << MIGHT_RESCHED_RCU_SHIFT || self.irqs_disabled
    }

    /// `might_sleep()` (`__might_resched(file, line, 0)`), as `might_alloc()`
    /// and `mutex_lock()` call it.
    pub(crate) fn might_sleep_reports(&self) -> bool {
        self.might_resched_reports(0)
    }

    /// `rtlock_might_resched()` of PREEMPT_RT's `spinlock_t` and `rwlock_t`
    /// (`RTLOCK_RESCHED_OFFSETS`: the caller's own RCU nesting is allowed).
    pub(crate) fn rtlock_reports(&self) -> bool {
        self.might_resched_reports(self.rcu_depth)
    }
}

/// Reads a per-cpu `u32` of `cpu` at `var` (its `&per_cpu_var`).
///
/// # Safety
///
/// `var` must be a per-cpu variable at least 4 bytes long, `cpu` a possible CPU.
#[cfg(CONFIG_X86)]
unsafe fn per_cpu_u32<T>(var: *const T, cpu: u32) -> u32 {
    // SAFETY: `per_cpu_ptr()` is this sum; `__per_cpu_offset` has an entry
    // for every possible CPU (caller). One load of one word.
    unsafe {
        let ptr = (var as usize).wrapping_add(bindings::__per_cpu_offset[cpu as usize]);
        core::ptr::read_volatile(ptr as *const u32)
    }
}

/// The raw per-cpu preempt count of x86, where it lives per CPU (the
/// low 32 bits hold every field; bit 31 is the inverted need-resched bit
/// without separate resched bits).
#[cfg(CONFIG_X86)]
pub(crate) fn raw_preempt_count(cpu: u32) -> u32 {
    // SAFETY: `__preempt_count` is a per-cpu `int` of x86; `cpu` is the
    // caller's own.
    unsafe { per_cpu_u32(&raw const bindings::__preempt_count, cpu) }
}

/// Whether this CPU runs with interrupts off (`arch_irqs_disabled()`: IF
/// clear in RFLAGS).
#[cfg(CONFIG_X86)]
fn irqs_disabled() -> bool {
    let flags: u64;
    // SAFETY: Pushes RFLAGS and pops it into a register: no other effect.
    unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
    flags & (1 << 9) == 0
}

/// Runs `f` with interrupts off on this CPU, and so without preemption:
/// the lock trace's probes run in whatever context takes a lock (tracepoint
/// probes run under SRCU, preemptible), and a schedule or an interrupt in
/// the middle of an update would take locks of its own, traced into the
/// same stack. Raw: lockdep's own irq state is left alone, as
/// `raw_local_irq_save()` does; `f` takes no lock.
#[cfg(CONFIG_X86)]
pub(crate) fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let flags: u64;
    // SAFETY: Saves RFLAGS and clears IF; restored below on this CPU (no
    // migration with interrupts off).
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags) };
    let r = f();
    // SAFETY: Restores the RFLAGS saved above (IF as it was).
    unsafe { core::arch::asm!("push {}", "popfq", in(reg) flags) };
    r
}

/// Without x86 the module attributes nothing to a cell (`exec_context()`).
#[cfg(not(CONFIG_X86))]
pub(crate) fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The running context, read on the running CPU. A preemptible task may
/// move between reading its CPU and that CPU's counts: read again until the
/// CPU is the same before and after (a task that moved was preemptible, and
/// a second read finds it settled).
#[cfg(CONFIG_X86)]
pub(crate) fn context_state() -> ContextState {
    let mut state = ContextState::default();
    for _ in 0..4 {
        let cpu = super::current_cpu();
        state.irqs_disabled = irqs_disabled();
        state.preempt_count = raw_preempt_count(cpu) & !(1 << 31);
        state.softirq_count = state.preempt_count & SOFTIRQ_MASK;
        #[cfg(CONFIG_TRACE_IRQFLAGS)]
        {
            // SAFETY: `hardirq_context` is a per-cpu `int` (kernel/softirq.c).
            state.hardirq_context =
                unsafe { per_cpu_u32(&raw const bindings::hardirq_context, cpu) } != 0;
        }
        #[cfg(CONFIG_LOCKDEP)]
        {
            // SAFETY: `lockdep_recursion` is a per-cpu `unsigned int`.
            state.in_lockdep =
                unsafe { per_cpu_u32(&raw const bindings::lockdep_recursion, cpu) } != 0;
        }
        if super::current_cpu() == cpu {
            break;
        }
    }
    #[cfg(CONFIG_PREEMPT_RT)]
    {
        state.softirq_count = super::task::softirq_disable_cnt() & SOFTIRQ_MASK;
    }
    state.rcu_depth = super::task::rcu_preempt_depth();
    (state.softirq_context, state.irq_threaded) = super::task::lockdep_irq_state();
    state.lockdep_off = super::task::lockdep_off();
    state
}

/// `[name]` without its brackets.
fn without_brackets(s: &[u8]) -> &[u8] {
    let s = s.strip_prefix(b"[").unwrap_or(s);
    s.strip_suffix(b"]").unwrap_or(s)
}

/// Writes the function `ip` is in (`sprint_symbol_no_offset()`), or the
/// address if it has none.
pub(crate) fn write_symbol(f: &mut core::fmt::Formatter<'_>, ip: usize) -> core::fmt::Result {
    // KSYM_SYMBOL_LEN: the name, " [module]" and offsets, rounded up.
    let mut buf = [0u8; bindings::KSYM_NAME_LEN as usize + 128];
    // SAFETY: `buf` holds KSYM_SYMBOL_LEN bytes; the function writes a
    // NUL-terminated string no longer than that.
    let len = unsafe {
        bindings::sprint_symbol_no_offset(buf.as_mut_ptr().cast(), ip as kernel::ffi::c_ulong)
    };
    let text = buf.get(..len.max(0) as usize).unwrap_or(&[]);
    let mut words = text.split(|&b| b == b' ');
    // Only the function: " [module]" would break a results line's words.
    let name = words.next().unwrap_or(&[]);
    // A Rust symbol of a module (v0 mangling, a few hundred bytes for a
    // closure) reads better as the module it is in.
    let name = match words.next() {
        Some(module) if name.starts_with(b"_R") => without_brackets(module),
        _ => name,
    };
    match core::str::from_utf8(name) {
        Ok(s) if !s.is_empty() => f.write_str(s),
        _ => write!(f, "{:#x}", ip),
    }
}
