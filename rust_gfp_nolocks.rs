// SPDX-License-Identifier: GPL-2.0

//! GFP mask x atomic context matrix for the page allocator.
//!
//! Runs page allocations (`__get_free_page()`, `__get_free_pages()`,
//! `alloc_pages_nolock()`) with a table of GFP masks inside a table of atomic
//! contexts, catches the kernel reports each cell causes (lockdep's invalid
//! wait context, sleeping in atomic, scheduling while atomic, other lockdep
//! reports, warnings) through the `console` tracepoint, and reports them
//! through debugfs: `/sys/kernel/debug/rust_gfp_nolocks/`.
//!
//! The question it answers is the one of the 2020 `__GFP_NO_LOCKS` debate:
//! which allocation calls are legal under `raw_spin_lock()` and friends on
//! this kernel. Whether one allocation takes `zone->lock` depends on the
//! per-cpu list state, so by default each cell allocates until the
//! allocator has provably been through `zone->lock` (seen on the
//! `mm_page_alloc_zone_locked` tracepoint), and reports the path it took.
//!
//! Spec grammar written to `run` (one cell, or `all`):
//!
//! ```text
//! ctx=CONTEXT alloc=ALLOCATOR gfp=MASK [order=N] [path=zone_lock|pcp] [n=N]
//! control=CONTROL
//! all
//! ```
//!
//! `cases` lists every cell this kernel can run in that grammar; `results`
//! has one `key=value` line per cell run (see the README for the keys).

use core::ffi::{c_char, c_int, c_uint, c_void};
use core::fmt;
use kernel::{
    debugfs::{Scope, ScopedDir},
    interrupt, new_mutex, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        rcu, Mutex, SpinLock,
    },
    time::{delay::fsleep, Delta, Instant, Monotonic},
    uaccess::UserSliceReader,
};

module! {
    type: GfpNoLocks,
    name: "rust_gfp_nolocks",
    authors: ["rust_gfp_nolocks developers"],
    description: "Which GFP masks are legal in which atomic contexts, with the kernel's reports per cell",
    license: "GPL",
    params: {
        autorun: bool {
            default: false,
            description: "Run the selected cells at load time and log a summary",
        },
        contexts: u64 {
            default: u64::MAX,
            description: "Autorun: bit i selects row i of the contexts table (see the cases file)",
        },
        masks: u64 {
            default: u64::MAX,
            description: "Autorun: bit i selects row i of the GFP masks table",
        },
        allocators: u64 {
            default: u64::MAX,
            description: "Autorun: bit i selects row i of the allocators table",
        },
        controls: bool {
            default: true,
            description: "Autorun: also run the control cells",
        },
    },
}

/// The few kernel primitives the kernel crate has no abstraction for, each
/// wrapped once here so that the rest of the module is safe code.
mod sys {
    use super::*;
    use kernel::bindings;
    use kernel::types::Opaque;

    pub(crate) type Gfp = bindings::gfp_t;

    pub(crate) const GFP_KERNEL: Gfp = bindings::GFP_KERNEL;
    pub(crate) const GFP_NOWAIT: Gfp = bindings::GFP_NOWAIT;
    pub(crate) const GFP_ATOMIC: Gfp = bindings::GFP_ATOMIC;
    pub(crate) const GFP_HIGH: Gfp = 1 << bindings::___GFP_HIGH_BIT;
    pub(crate) const GFP_NOWARN: Gfp = bindings::__GFP_NOWARN;
    /// Highest order the per-cpu lists serve (`PAGE_ALLOC_COSTLY_ORDER`).
    pub(crate) const PCP_MAX_ORDER: u32 = bindings::PAGE_ALLOC_COSTLY_ORDER;
    pub(crate) const MAX_ORDER: u32 = bindings::MAX_PAGE_ORDER;

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

    pub(crate) fn jiffies() -> usize {
        // SAFETY: `jiffies` is always readable; it is updated atomically.
        unsafe { core::ptr::read_volatile(&raw const bindings::jiffies) as usize }
    }

    /// Whether a mask may enter direct reclaim, i.e. really sleep
    /// (`gfpflags_allow_blocking()`).
    pub(crate) fn may_block(gfp: Gfp) -> bool {
        gfp & (1 << bindings::___GFP_DIRECT_RECLAIM_BIT) != 0
    }

    /// Pages available without reclaim, as `/proc/meminfo`'s MemAvailable.
    pub(crate) fn available_pages() -> usize {
        // SAFETY: Reads counters only.
        let pages = unsafe { bindings::si_mem_available() };
        usize::try_from(pages).unwrap_or(0)
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

    /// A page allocation that must be freed with [`free`].
    #[derive(Clone, Copy)]
    pub(crate) enum Pages {
        Addr(usize),
        Page(*mut bindings::page),
    }

    pub(crate) fn get_free_pages(gfp: Gfp, order: u32) -> Option<Pages> {
        // SAFETY: Any mask and any order up to `MAX_ORDER` (checked by the
        // spec parser) are valid arguments; failure returns 0.
        let addr = unsafe { bindings::get_free_pages_noprof(gfp, order) };
        (addr != 0).then_some(Pages::Addr(addr as usize))
    }

    #[cfg(have_alloc_pages_nolock)]
    pub(crate) fn alloc_pages_nolock(gfp: Gfp, order: u32) -> Option<Pages> {
        // SAFETY: Callable from any context, by design; returns NULL rather
        // than spinning or sleeping.
        let page =
            unsafe { bindings::alloc_pages_nolock_noprof(gfp, bindings::NUMA_NO_NODE, order) };
        (!page.is_null()).then_some(Pages::Page(page))
    }

    /// Frees pages obtained from this module's allocators, outside any atomic section.
    pub(crate) fn free(pages: Pages, order: u32) {
        match pages {
            // SAFETY: `addr` came from `get_free_pages_noprof()` with this order
            // and is freed once.
            Pages::Addr(addr) => unsafe {
                bindings::free_pages(addr as kernel::ffi::c_ulong, order)
            },
            // SAFETY: `page` came from `alloc_pages_nolock_noprof()` with this
            // order and is freed once.
            Pages::Page(page) => unsafe { bindings::__free_pages(page, order) },
        }
    }

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

    pub(crate) fn in_hardirq(f: &mut dyn FnMut()) {
        let mut call = HardIrqCall {
            // SAFETY: An all-zero `irq_work` is an idle, unqueued one.
            work: unsafe { core::mem::zeroed() },
            f,
        };
        call.work.node.__bindgen_anon_1.u_flags = bindings::IRQ_WORK_HARD_IRQ as c_uint;
        call.work.func = Some(hardirq_trampoline);
        // Queue and wait with preemption off so that the interrupt lands on
        // this CPU while the runner task is `current` there: reports printed
        // from the handler are attributed to the running cell. The wait is a
        // busy loop on IRQ_WORK_BUSY, since irq_work_sync() may sleep.
        let work = &raw mut call.work;
        with_preempt_off_for_irq_work(&mut || {
            // SAFETY: `work` is initialised and stays alive until
            // `irq_work_sync()` below has returned.
            unsafe { bindings::irq_work_queue(work) };
            // SAFETY: The flags word is an atomic_t the kernel updates; a
            // volatile read of it is what `irq_work_is_busy()` does.
            while unsafe {
                core::ptr::read_volatile(&raw const (*work).node.__bindgen_anon_1.u_flags)
            } & bindings::IRQ_WORK_BUSY as c_uint
                != 0
            {
                core::hint::spin_loop();
            }
        });
        // SAFETY: Preemption is on again; this only confirms the work is idle.
        unsafe { bindings::irq_work_sync(work) };
    }

    fn with_preempt_off_for_irq_work(f: &mut dyn FnMut()) {
        #[cfg(any(CONFIG_DEBUG_PREEMPT, CONFIG_TRACE_PREEMPT_TOGGLE))]
        with_preempt_disabled(f);
        #[cfg(not(any(CONFIG_DEBUG_PREEMPT, CONFIG_TRACE_PREEMPT_TOGGLE)))]
        f();
    }

    /// A probe attached to a kernel tracepoint, found by name; detached on drop.
    pub(crate) struct Probe {
        tp: *mut bindings::tracepoint,
        func: *mut c_void,
        data: *mut c_void,
    }

    // SAFETY: The registration is a pair of pointers the kernel keeps; it may
    // be dropped from any thread.
    unsafe impl Send for Probe {}
    // SAFETY: `Probe` has no `&self` methods.
    unsafe impl Sync for Probe {}

    struct Lookup {
        name: &'static CStr,
        found: *mut bindings::tracepoint,
    }

    /// # Safety
    ///
    /// `tp` must be a valid tracepoint and `priv_` a live `Lookup`.
    unsafe extern "C" fn match_tracepoint(tp: *mut bindings::tracepoint, priv_: *mut c_void) {
        // SAFETY: `priv_` is the `Lookup` passed by `Probe::attach`, alive for
        // the whole iteration; `tp` is a valid builtin tracepoint.
        let (lookup, name) = unsafe {
            (
                &mut *priv_.cast::<Lookup>(),
                CStr::from_char_ptr((*tp).name),
            )
        };
        if name == lookup.name {
            lookup.found = tp;
        }
    }

    impl Probe {
        /// Attaches `func` to the builtin tracepoint `name`, with `data` as
        /// its first argument.
        ///
        /// # Safety
        ///
        /// `func` must have the tracepoint's probe signature, and `data` must
        /// stay valid until the returned `Probe` is dropped.
        pub(crate) unsafe fn attach(
            name: &'static CStr,
            func: *mut c_void,
            data: *const c_void,
        ) -> Result<Self> {
            let mut lookup = Lookup {
                name,
                found: core::ptr::null_mut(),
            };
            // SAFETY: The callback only reads the tracepoint and writes `lookup`.
            unsafe {
                bindings::for_each_kernel_tracepoint(
                    Some(match_tracepoint),
                    (&raw mut lookup).cast(),
                )
            };
            if lookup.found.is_null() {
                return Err(ENOENT);
            }
            let data = data.cast_mut();
            // SAFETY: The caller guarantees the signature and the lifetime of `data`.
            kernel::error::to_result(unsafe {
                bindings::tracepoint_probe_register(lookup.found, func, data)
            })?;
            Ok(Self {
                tp: lookup.found,
                func,
                data,
            })
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            // SAFETY: Registered by `attach` with exactly these arguments.
            unsafe { bindings::tracepoint_probe_unregister(self.tp, self.func, self.data) };
            // Wait for probes still running on other CPUs, so that `data`
            // may be freed after this (tracepoint_synchronize_unregister()).
            // SAFETY: Both only wait.
            unsafe {
                bindings::synchronize_srcu(&raw mut bindings::tracepoint_srcu);
                bindings::synchronize_rcu();
            }
        }
    }

    /// `const char *`, `size_t` of the `console` tracepoint, as bytes.
    ///
    /// # Safety
    ///
    /// `text` must point to `len` readable bytes for the returned lifetime.
    pub(crate) unsafe fn console_text<'a>(text: *const c_char, len: usize) -> &'a [u8] {
        // SAFETY: Guaranteed by the caller.
        unsafe { core::slice::from_raw_parts(text.cast(), len) }
    }

    pub(crate) type ConsoleProbeFn = unsafe extern "C" fn(*mut c_void, *const c_char, usize);
    pub(crate) type ZoneLockedProbeFn =
        unsafe extern "C" fn(*mut c_void, *mut bindings::page, c_uint, c_int, c_int);
}

// ---------------------------------------------------------------------------
// The tables. A context, a mask, an allocator or a control is one line.
// ---------------------------------------------------------------------------

/// Locks a context may take; owned by the module state.
struct Locks {
    raw: Pin<KBox<sys::RawSpinLock>>,
    spin: Pin<KBox<SpinLock<()>>>,
}

struct ContextDef {
    name: &'static str,
    /// Whether the body runs in an atomic section (everything but `process`).
    atomic: bool,
    /// Runs the body inside the context and leaves it, restoring all state.
    enter: fn(&Locks, &mut dyn FnMut()),
}

/// An atomic context: `enter` opens the section around the body.
const fn context(name: &'static str, enter: fn(&Locks, &mut dyn FnMut())) -> ContextDef {
    ContextDef {
        name,
        atomic: true,
        enter,
    }
}

/// The baseline: the body runs as it is, in process context.
const fn no_section(name: &'static str) -> ContextDef {
    ContextDef {
        name,
        atomic: false,
        enter: |_, f| f(),
    }
}

/// Outer contexts, in order of increasing atomicity (the rows of the table).
const CONTEXTS: &[ContextDef] = &[
    no_section("process"),
    context("rcu_read_lock", in_rcu_read_lock),
    context("spin_lock", in_spin_lock),
    #[cfg(any(CONFIG_DEBUG_PREEMPT, CONFIG_TRACE_PREEMPT_TOGGLE))]
    context("preempt_disable", |_, f| sys::with_preempt_disabled(f)),
    context("local_irq_disable", in_local_irq_disable),
    context("raw_spin_lock", |l, f| l.raw.with(f)),
    context("raw_spin_lock_irqsave", |l, f| l.raw.with_irqsave(f)),
    context("hardirq", |_, f| sys::in_hardirq(f)),
];

fn in_rcu_read_lock(_: &Locks, f: &mut dyn FnMut()) {
    let _guard = rcu::read_lock();
    f();
}

fn in_spin_lock(locks: &Locks, f: &mut dyn FnMut()) {
    let _guard = locks.spin.lock();
    f();
}

/// `local_interrupt_disable()` is `local_irq_save()` plus a nesting count in
/// preempt_count; `irqs_disabled()`, what the allocator and
/// `__might_resched()` test, is true either way.
fn in_local_irq_disable(_: &Locks, f: &mut dyn FnMut()) {
    let _guard = interrupt::local_interrupt_disable();
    f();
}

struct MaskDef {
    name: &'static str,
    gfp: sys::Gfp,
}

const fn mask(name: &'static str, gfp: sys::Gfp) -> MaskDef {
    MaskDef { name, gfp }
}

/// GFP masks, named as in the kernel. `0` has no __GFP_KSWAPD_RECLAIM: no
/// kswapd wakeup, as argued in the 2020 __GFP_NO_LOCKS thread.
const MASKS: &[MaskDef] = &[
    mask("GFP_KERNEL", sys::GFP_KERNEL),
    mask("GFP_NOWAIT", sys::GFP_NOWAIT),
    mask("GFP_ATOMIC", sys::GFP_ATOMIC),
    mask("0", 0),
    mask("__GFP_HIGH", sys::GFP_HIGH),
    mask("GFP_ATOMIC|__GFP_NOWARN", sys::GFP_ATOMIC | sys::GFP_NOWARN),
];

struct AllocatorDef {
    name: &'static str,
    /// Order used when the spec gives none.
    default_order: u32,
    /// Whether the spec may choose another order.
    order_fixed: bool,
    /// Masks this allocator accepts (`alloc_pages_nolock()` takes no reclaim flags).
    accepts: fn(sys::Gfp) -> bool,
    alloc: fn(sys::Gfp, u32) -> Option<sys::Pages>,
}

type AllocFn = fn(sys::Gfp, u32) -> Option<sys::Pages>;

const fn allocator(
    name: &'static str,
    order: u32,
    fixed: bool,
    accepts: fn(sys::Gfp) -> bool,
    alloc: AllocFn,
) -> AllocatorDef {
    AllocatorDef {
        name,
        default_order: order,
        order_fixed: fixed,
        accepts,
        alloc,
    }
}

/// Allocators. `get_free_pages` defaults to order 4, above
/// PAGE_ALLOC_COSTLY_ORDER: never served by the per-cpu lists.
///
/// One line per allocator: name, default order, order fixed, masks accepted, call.
#[rustfmt::skip]
const ALLOCATORS: &[AllocatorDef] = &[
    #[cfg(have_alloc_pages_nolock)]
    allocator("alloc_pages_nolock", 0, false, |gfp| gfp == 0, sys::alloc_pages_nolock),
    allocator("get_free_page", 0, true, |_| true, sys::get_free_pages),
    allocator("get_free_pages", 4, false, |_| true, sys::get_free_pages),
];

struct ControlDef {
    name: &'static str,
    /// Context the control's body runs in (a row of `CONTEXTS`).
    context: &'static str,
    body: fn(&Locks),
}

const fn control(name: &'static str, context: &'static str, body: fn(&Locks)) -> ControlDef {
    ControlDef {
        name,
        context,
        body,
    }
}

/// Cells that prove the detector works, each with one known outcome: nothing;
/// invalid wait context (spinlock_t under raw_spinlock_t); sleeping in atomic.
const CONTROLS: &[ControlDef] = &[
    control("empty", "raw_spin_lock", |_| {}),
    control("spin_lock_under_raw_spin_lock", "raw_spin_lock", |l| {
        drop(l.spin.lock())
    }),
    control(
        "might_sleep_under_preempt_disable",
        "preempt_disable",
        |_| kernel::task::might_sleep(),
    ),
];

fn context_index(name: &str) -> Option<usize> {
    CONTEXTS.iter().position(|c| c.name == name)
}

// ---------------------------------------------------------------------------
// Specs: what `run` takes and `cases` lists.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Allocate until the allocator provably went through `zone->lock`.
    ZoneLock,
    /// Warm this CPU's per-cpu list first, so the section is served from it.
    Pcp,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::ZoneLock => "zone_lock",
            Path::Pcp => "pcp",
        }
    }
}

/// Most allocations one cell makes: enough to drain a per-cpu list.
const MAX_ITERATIONS: u32 = 8192;
const DEFAULT_ZONE_LOCK_ITERATIONS: u32 = 4096;
const DEFAULT_PCP_ITERATIONS: u32 = 16;
/// Longest spec `run` accepts, in bytes.
const MAX_SPEC_LEN: usize = 256;

#[derive(Clone, Copy)]
struct AllocCell {
    ctx: usize,
    alloc: usize,
    mask: usize,
    order: u32,
    path: Path,
    n: u32,
}

#[derive(Clone, Copy)]
enum Cell {
    Alloc(AllocCell),
    /// A row of `CONTROLS`, and its context resolved in `CONTEXTS`.
    Control {
        control: usize,
        ctx: usize,
    },
}

impl Cell {
    fn context(&self) -> usize {
        match self {
            Cell::Alloc(a) => a.ctx,
            Cell::Control { ctx, .. } => *ctx,
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Alloc(a) => write!(
                f,
                "ctx={} alloc={} gfp={} order={} path={} n={}",
                CONTEXTS[a.ctx].name,
                ALLOCATORS[a.alloc].name,
                MASKS[a.mask].name,
                a.order,
                a.path.name(),
                a.n
            ),
            Cell::Control { control, .. } => write!(f, "control={}", CONTROLS[*control].name),
        }
    }
}

enum Spec {
    One(Cell),
    All,
}

/// Parses a spec; on error, logs one `pr_err` naming the offending token.
fn parse_spec(input: &[u8]) -> Result<Spec> {
    let bad = |what: fmt::Arguments<'_>| {
        pr_err!(
            "run: {}; nothing was run (the cases file lists valid specs)\n",
            what
        );
        EINVAL
    };
    let text =
        core::str::from_utf8(input).map_err(|_| bad(format_args!("spec is not UTF-8 text")))?;
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !c.is_ascii_whitespace())
    {
        return Err(bad(format_args!(
            "control character {:#x} in spec",
            c as u32
        )));
    }
    let mut tokens = text.split_ascii_whitespace().peekable();
    let first = tokens
        .peek()
        .copied()
        .ok_or_else(|| bad(format_args!("empty spec")))?;
    if first == "all" {
        tokens.next();
        return match tokens.next() {
            None => Ok(Spec::All),
            Some(t) => Err(bad(format_args!("trailing token '{}' after 'all'", t))),
        };
    }
    let (mut ctx, mut alloc, mut mask, mut order, mut path, mut n, mut control) =
        (None, None, None, None, None, None, None);
    for token in tokens {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| bad(format_args!("token '{}' is not key=value", token)))?;
        let number = |max: u32| -> Result<u32> {
            match value.parse::<u32>() {
                Ok(v) if v <= max => Ok(v),
                _ => Err(bad(format_args!(
                    "'{}' needs a number up to {}",
                    token, max
                ))),
            }
        };
        let find = |names: &mut dyn Iterator<Item = &'static str>, what: &str| {
            for (i, name) in names.enumerate() {
                if name == value {
                    return Ok(i);
                }
            }
            Err(bad(format_args!(
                "unknown {} '{}' in '{}'",
                what, value, token
            )))
        };
        let slot_taken = match key {
            "ctx" => ctx
                .replace(find(&mut CONTEXTS.iter().map(|c| c.name), "context")?)
                .is_some(),
            "alloc" => alloc
                .replace(find(&mut ALLOCATORS.iter().map(|a| a.name), "allocator")?)
                .is_some(),
            "gfp" => mask
                .replace(find(&mut MASKS.iter().map(|m| m.name), "GFP mask")?)
                .is_some(),
            "control" => control
                .replace(find(&mut CONTROLS.iter().map(|c| c.name), "control")?)
                .is_some(),
            "order" => order.replace(number(sys::MAX_ORDER)?).is_some(),
            "n" => n.replace(number(MAX_ITERATIONS)?).is_some(),
            "path" => path
                .replace(match value {
                    "zone_lock" => Path::ZoneLock,
                    "pcp" => Path::Pcp,
                    _ => {
                        return Err(bad(format_args!(
                            "unknown path '{}': use zone_lock or pcp",
                            value
                        )))
                    }
                })
                .is_some(),
            _ => return Err(bad(format_args!("unknown key '{}' in '{}'", key, token))),
        };
        if slot_taken {
            return Err(bad(format_args!("key '{}' given twice", key)));
        }
    }
    if let Some(c) = control {
        if ctx.or(alloc).or(mask).is_some() || order.or(n).is_some() || path.is_some() {
            return Err(bad(format_args!(
                "control={} takes no other key",
                CONTROLS[c].name
            )));
        }
        // A control whose context this kernel lacks (preempt_disable without
        // CONFIG_DEBUG_PREEMPT) must not run somewhere else instead.
        let ctx = context_index(CONTROLS[c].context).ok_or_else(|| {
            bad(format_args!(
                "control={} runs in {}, which this kernel lacks",
                CONTROLS[c].name, CONTROLS[c].context
            ))
        })?;
        return Ok(Spec::One(Cell::Control { control: c, ctx }));
    }
    let ctx = ctx.ok_or_else(|| bad(format_args!("missing ctx=")))?;
    let alloc = alloc.ok_or_else(|| bad(format_args!("missing alloc=")))?;
    let mask = mask.ok_or_else(|| bad(format_args!("missing gfp=")))?;
    let def = &ALLOCATORS[alloc];
    if !(def.accepts)(MASKS[mask].gfp) {
        return Err(bad(format_args!(
            "{} does not take gfp={}",
            def.name, MASKS[mask].name
        )));
    }
    let order = match order {
        Some(o) if def.order_fixed && o != def.default_order => {
            return Err(bad(format_args!(
                "{} has order {} only, not {}",
                def.name, def.default_order, o
            )))
        }
        Some(o) => o,
        None => def.default_order,
    };
    let path = path.unwrap_or(Path::ZoneLock);
    if path == Path::Pcp && order > sys::PCP_MAX_ORDER {
        return Err(bad(format_args!(
            "order {} is never served by the per-cpu lists (max {})",
            order,
            sys::PCP_MAX_ORDER
        )));
    }
    let n = match n {
        Some(0) => return Err(bad(format_args!("n=0 runs nothing"))),
        Some(n) => n,
        None if path == Path::Pcp => DEFAULT_PCP_ITERATIONS,
        None => DEFAULT_ZONE_LOCK_ITERATIONS,
    };
    Ok(Spec::One(Cell::Alloc(AllocCell {
        ctx,
        alloc,
        mask,
        order,
        path,
        n,
    })))
}

/// Every cell this kernel can run with default parameters, in `run all` order:
/// rows by increasing atomicity, the controls (which splat on purpose) last.
fn for_each_case(mut f: impl FnMut(Cell) -> Result) -> Result {
    for ctx in 0..CONTEXTS.len() {
        for (alloc, def) in ALLOCATORS.iter().enumerate() {
            for (mask, m) in MASKS.iter().enumerate() {
                if (def.accepts)(m.gfp) {
                    f(Cell::Alloc(AllocCell {
                        ctx,
                        alloc,
                        mask,
                        order: def.default_order,
                        path: Path::ZoneLock,
                        n: DEFAULT_ZONE_LOCK_ITERATIONS,
                    }))?;
                }
            }
        }
    }
    for (control, def) in CONTROLS.iter().enumerate() {
        if let Some(ctx) = context_index(def.context) {
            f(Cell::Control { control, ctx })?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The detector: kernel reports, seen synchronously on the console tracepoint.
// ---------------------------------------------------------------------------

/// Report kinds, in the order of the counters and of the results line.
const REPORT_KINDS: [&str; 5] = [
    "invalid_wait_context",
    "sleeping_in_atomic",
    "scheduling_while_atomic",
    "lockdep_other",
    "warning",
];
const INVALID_WAIT_CONTEXT: usize = 0;
const SLEEPING_IN_ATOMIC: usize = 1;
const SCHEDULING_WHILE_ATOMIC: usize = 2;
const LOCKDEP_OTHER: usize = 3;
const WARNING: usize = 4;

/// Classifies one printk record. `after_rule`: the previous record of this
/// task was a `=====` line, which lockdep prints before each report header.
fn classify(line: &[u8], after_rule: bool) -> Option<usize> {
    let line = line.trim_ascii_start();
    if line.starts_with(b"[ BUG: Invalid wait context ]") {
        Some(INVALID_WAIT_CONTEXT)
    } else if line.starts_with(b"BUG: sleeping function called from invalid context") {
        Some(SLEEPING_IN_ATOMIC)
    } else if line.starts_with(b"BUG: scheduling while atomic") {
        Some(SCHEDULING_WHILE_ATOMIC)
    } else if after_rule
        && (line.starts_with(b"WARNING:")
            || line.starts_with(b"BUG:")
            || line.starts_with(b"[ BUG:"))
    {
        Some(LOCKDEP_OTHER)
    } else if line.starts_with(b"WARNING:") || line.starts_with(b"BUG:") {
        Some(WARNING)
    } else {
        None
    }
}

fn is_rule(line: &[u8]) -> bool {
    line.len() >= 8 && line.iter().all(|&b| b == b'=')
}

/// State shared with the tracepoint probes: atomics only, since probes run
/// in any context with preemption off.
struct Detector {
    /// `task_struct` of the running cell, or 0 when no cell runs.
    runner: Atomic<usize>,
    reports: [Atomic<u64>; 5],
    /// Pages the runner took from the buddy lists under `zone->lock`.
    zone_locked: Atomic<u64>,
    after_rule: Atomic<bool>,
    /// `jiffies` of the last "sleeping function called" report, from any task:
    /// `__might_resched()` prints at most once per HZ, system-wide.
    last_sleep_report: Atomic<usize>,
    /// Reports printed by other tasks while a cell ran: not attributed.
    unattributed: Atomic<u64>,
}

impl Detector {
    fn new() -> Self {
        Self {
            runner: Atomic::new(0),
            reports: [const { Atomic::new(0) }; 5],
            zone_locked: Atomic::new(0),
            after_rule: Atomic::new(false),
            last_sleep_report: Atomic::new(sys::jiffies()),
            unattributed: Atomic::new(0),
        }
    }

    fn on_console(&self, line: &[u8]) {
        let mine = self.runner.load(Relaxed) == sys::current_task();
        let after_rule = mine && self.after_rule.load(Relaxed);
        let kind = classify(line, after_rule);
        if kind == Some(SLEEPING_IN_ATOMIC) {
            self.last_sleep_report.store(sys::jiffies(), Relaxed);
        }
        if !mine {
            if kind.is_some() && self.runner.load(Relaxed) != 0 {
                self.unattributed.fetch_add(1, Relaxed);
            }
            return;
        }
        self.after_rule.store(is_rule(line), Relaxed);
        if let Some(kind) = kind {
            self.reports[kind].fetch_add(1, Relaxed);
        }
    }

    fn begin(&self) {
        for r in &self.reports {
            r.store(0, Relaxed);
        }
        self.zone_locked.store(0, Relaxed);
        self.after_rule.store(false, Relaxed);
        self.runner.store(sys::current_task(), Relaxed);
    }

    fn end(&self) -> [u64; 5] {
        self.runner.store(0, Relaxed);
        core::array::from_fn(|i| self.reports[i].load(Relaxed))
    }
}

/// Probe on the `console` tracepoint.
///
/// # Safety
///
/// `data` must be the registered `Detector`, and `text` point to `len` bytes.
unsafe extern "C" fn console_probe(data: *mut c_void, text: *const c_char, len: usize) {
    // SAFETY: `data` is the `Detector` registered with this probe, alive until
    // the probe is detached; the tracepoint passes `len` readable bytes.
    let (detector, line) = unsafe { (&*data.cast::<Detector>(), sys::console_text(text, len)) };
    detector.on_console(line);
}

/// Probe on `mm_page_alloc_zone_locked`, which fires under `zone->lock`.
///
/// # Safety
///
/// `data` must be the registered `Detector`.
unsafe extern "C" fn zone_locked_probe(
    data: *mut c_void,
    _page: *mut kernel::bindings::page,
    _order: c_uint,
    _migratetype: c_int,
    _percpu_refill: c_int,
) {
    // SAFETY: As in `console_probe`.
    let detector = unsafe { &*data.cast::<Detector>() };
    if detector.runner.load(Relaxed) == sys::current_task() {
        detector.zone_locked.fetch_add(1, Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Results.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Stats {
    min: u64,
    median: u64,
    max: u64,
}

impl Stats {
    fn of(samples: &mut [u64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        Self {
            min: samples[0],
            median: samples[samples.len() / 2],
            max: samples[samples.len() - 1],
        }
    }
}

struct CellResult {
    cell: Cell,
    /// `zone_lock`, `pcp`, or `none` (nothing allocated, or a control).
    path: &'static str,
    iterations: u32,
    allocated: u32,
    failed: u32,
    freed: u32,
    zone_locked_pages: u64,
    lockdep_before: bool,
    lockdep_after: bool,
    reports: [u64; 5],
    alloc_ns: Stats,
    /// Duration of the first allocation that took zone->lock, 0 if none did.
    zone_locked_alloc_ns: u64,
    section_ns: u64,
}

impl fmt::Display for CellResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.cell {
            Cell::Alloc(_) => "alloc",
            Cell::Control { .. } => "control",
        };
        write!(
            f,
            "kind={} {} context={} observed_path={}",
            kind,
            self.cell,
            CONTEXTS[self.cell.context()].name,
            self.path
        )?;
        write!(
            f,
            " iterations={} allocated={} failed={} freed={} zone_locked_pages={}",
            self.iterations, self.allocated, self.failed, self.freed, self.zone_locked_pages
        )?;
        write!(
            f,
            " lockdep_before={} lockdep_after={}",
            u8::from(self.lockdep_before),
            u8::from(self.lockdep_after)
        )?;
        for (name, count) in REPORT_KINDS.iter().zip(self.reports) {
            write!(f, " {}={}", name, count)?;
        }
        writeln!(
            f,
            " alloc_ns_min={} alloc_ns_median={} alloc_ns_max={} zone_locked_alloc_ns={} section_ns={}",
            self.alloc_ns.min,
            self.alloc_ns.median,
            self.alloc_ns.max,
            self.zone_locked_alloc_ns,
            self.section_ns
        )
    }
}

struct Counters {
    reports: [Atomic<u64>; 5],
    allocs_ok: Atomic<u64>,
    allocs_failed: Atomic<u64>,
    pages_freed: Atomic<u64>,
    cells_run: Atomic<u64>,
}

impl Counters {
    fn new() -> Self {
        Self {
            reports: [const { Atomic::new(0) }; 5],
            allocs_ok: Atomic::new(0),
            allocs_failed: Atomic::new(0),
            pages_freed: Atomic::new(0),
            cells_run: Atomic::new(0),
        }
    }

    fn add(&self, r: &CellResult) {
        for (c, n) in self.reports.iter().zip(r.reports) {
            c.fetch_add(n, Relaxed);
        }
        self.allocs_ok.fetch_add(r.allocated.into(), Relaxed);
        self.allocs_failed.fetch_add(r.failed.into(), Relaxed);
        self.pages_freed.fetch_add(r.freed.into(), Relaxed);
        self.cells_run.fetch_add(1, Relaxed);
    }

    fn clear(&self) {
        for c in Iterator::chain(
            self.reports.iter(),
            [
                &self.allocs_ok,
                &self.allocs_failed,
                &self.pages_freed,
                &self.cells_run,
            ],
        ) {
            c.store(0, Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------
// The runner.
// ---------------------------------------------------------------------------

#[pin_data]
struct State {
    detector: Detector,
    counters: Counters,
    locks: Locks,
    /// Results and counters change together under this lock, so they agree.
    #[pin]
    results: Mutex<KVec<CellResult>>,
    /// Serializes runs and resets.
    #[pin]
    run_lock: Mutex<()>,
    stopping: Atomic<bool>,
}

impl State {
    fn new() -> Result<impl PinInit<Self, Error>> {
        let locks = Locks {
            raw: KBox::pin_init(sys::RawSpinLock::new(), GFP_KERNEL)?,
            spin: KBox::pin_init(new_spinlock!(()), GFP_KERNEL)?,
        };
        Ok(try_pin_init!(Self {
            detector: Detector::new(),
            counters: Counters::new(),
            locks,
            results <- new_mutex!(KVec::new()),
            run_lock <- new_mutex!(()),
            stopping: Atomic::new(false),
        }? Error))
    }

    /// Runs a spec; returns when all its cells ran.
    fn run(&self, spec: Spec) -> Result {
        let _serialized = self.run_lock.lock();
        if self.stopping.load(Relaxed) {
            return Err(ENODEV);
        }
        match spec {
            Spec::One(cell) => self.run_cell(cell),
            Spec::All => for_each_case(|cell| {
                if self.stopping.load(Relaxed) {
                    return Err(EINTR);
                }
                self.run_cell(cell)
            }),
        }
    }

    /// Waits until `__might_resched()`'s once-per-HZ rate limit has expired,
    /// so that it cannot swallow a report of the next cell.
    fn wait_might_resched_window(&self) {
        let hz = sys::hz();
        while sys::jiffies().wrapping_sub(self.detector.last_sleep_report.load(Relaxed)) <= hz + 1 {
            if self.stopping.load(Relaxed) {
                return;
            }
            fsleep(Delta::from_millis(20));
        }
    }

    fn run_cell(&self, cell: Cell) -> Result {
        self.wait_might_resched_window();
        let result = match cell {
            Cell::Alloc(a) => self.run_alloc(a)?,
            Cell::Control { control, ctx } => self.run_control(control, ctx),
        };
        let mut results = self.results.lock();
        results.push(result, GFP_KERNEL)?;
        if let Some(r) = results.last() {
            self.counters.add(r);
        }
        Ok(())
    }

    fn run_control(&self, c: usize, ctx: usize) -> CellResult {
        let def = &CONTROLS[c];
        let lockdep_before = sys::lockdep_armed();
        self.detector.begin();
        let start = Instant::<Monotonic>::now();
        (CONTEXTS[ctx].enter)(&self.locks, &mut || (def.body)(&self.locks));
        let section_ns = start.elapsed().as_nanos() as u64;
        let reports = self.detector.end();
        CellResult {
            cell: Cell::Control { control: c, ctx },
            path: "none",
            iterations: 0,
            allocated: 0,
            failed: 0,
            freed: 0,
            zone_locked_pages: 0,
            lockdep_before,
            lockdep_after: sys::lockdep_armed(),
            reports,
            alloc_ns: Stats::default(),
            zone_locked_alloc_ns: 0,
            section_ns,
        }
    }

    fn run_alloc(&self, cell: AllocCell) -> Result<CellResult> {
        let def = &ALLOCATORS[cell.alloc];
        let gfp = MASKS[cell.mask].gfp;
        let n = cell.n as usize;
        Self::check_memory(cell, gfp)?;
        // Allocated before the section: nothing inside it may allocate.
        let mut pages = KVec::<sys::Pages>::with_capacity(n, GFP_KERNEL)?;
        let mut times = KVec::<u64>::with_capacity(n, GFP_KERNEL)?;
        let (mut iterations, mut failed) = (0u32, 0u32);
        // Duration of the first allocation that went through zone->lock.
        let mut zone_locked_alloc_ns = 0u64;

        let lockdep_before = sys::lockdep_armed();
        self.detector.begin();
        if cell.path == Path::Pcp {
            self.warm_pcp(def, gfp, cell.order, n);
            self.detector.zone_locked.store(0, Relaxed);
        }
        let zone_locked = &self.detector.zone_locked;
        let start = Instant::<Monotonic>::now();
        (CONTEXTS[cell.ctx].enter)(&self.locks, &mut || {
            while (iterations as usize) < n {
                let locked_before = zone_locked.load(Relaxed);
                let t0 = Instant::<Monotonic>::now();
                let page = (def.alloc)(gfp, cell.order);
                let ns = t0.elapsed().as_nanos() as u64;
                let _ = times.push_within_capacity(ns);
                if zone_locked_alloc_ns == 0 && zone_locked.load(Relaxed) != locked_before {
                    zone_locked_alloc_ns = ns;
                }
                iterations += 1;
                match page {
                    Some(p) => {
                        let _ = pages.push_within_capacity(p);
                    }
                    None => failed += 1,
                }
                // The zone_lock path is driven until it has been taken, or
                // until the allocator refuses (it would refuse again).
                if cell.path == Path::ZoneLock && (zone_locked.load(Relaxed) > 0 || page.is_none())
                {
                    break;
                }
            }
        });
        let section_ns = start.elapsed().as_nanos() as u64;
        let zone_locked_pages = zone_locked.load(Relaxed);
        let allocated = pages.len() as u32;
        // Freed outside the section: freeing takes the same locks.
        let freed = Self::free_all(&mut pages, cell.order);
        let reports = self.detector.end();
        Ok(CellResult {
            cell: Cell::Alloc(cell),
            path: match (zone_locked_pages, allocated) {
                (0, 0) => "none",
                (0, _) => "pcp",
                _ => "zone_lock",
            },
            iterations,
            allocated,
            failed,
            freed,
            zone_locked_pages,
            lockdep_before,
            lockdep_after: sys::lockdep_armed(),
            reports,
            alloc_ns: Stats::of(&mut times),
            zone_locked_alloc_ns,
            section_ns,
        })
    }

    /// A blocking mask in an atomic context only prints a report while the
    /// free lists can serve it; short of memory it would enter direct reclaim
    /// and really sleep, with a raw lock held or in hard irq. Such a cell
    /// runs only with ample memory: what it may allocate plus 16 MiB.
    fn check_memory(cell: AllocCell, gfp: sys::Gfp) -> Result {
        if !sys::may_block(gfp) || !CONTEXTS[cell.ctx].atomic {
            return Ok(());
        }
        // Above the per-cpu orders the first allocation takes zone->lock.
        let allocations = if cell.order > sys::PCP_MAX_ORDER {
            1
        } else {
            cell.n as usize
        };
        let needed = (allocations << cell.order) + (16 << (20 - kernel::page::PAGE_SHIFT));
        let available = sys::available_pages();
        if available < needed {
            pr_err!(
                "run: refusing ctx={} alloc={} gfp={} order={} n={}: a blocking mask in an atomic context could sleep for real with {} pages available ({} needed); free memory or lower n=\n",
                CONTEXTS[cell.ctx].name,
                ALLOCATORS[cell.alloc].name,
                MASKS[cell.mask].name,
                cell.order,
                cell.n,
                available,
                needed
            );
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Leaves `n` pages of this order on this CPU's per-cpu list: allocated
    /// and freed under a `spinlock_t`, which keeps the task on this CPU and
    /// is a legal context for these masks on both flavors.
    fn warm_pcp(&self, def: &AllocatorDef, gfp: sys::Gfp, order: u32, n: usize) {
        let Ok(mut pages) = KVec::<sys::Pages>::with_capacity(n, GFP_KERNEL) else {
            return;
        };
        let _g = self.locks.spin.lock();
        for _ in 0..n {
            match (def.alloc)(gfp | sys::GFP_NOWARN, order) {
                Some(p) => {
                    let _ = pages.push_within_capacity(p);
                }
                None => break,
            }
        }
        Self::free_all(&mut pages, order);
    }

    fn free_all(pages: &mut KVec<sys::Pages>, order: u32) -> u32 {
        let mut freed = 0;
        while let Some(p) = pages.pop() {
            sys::free(p, order);
            freed += 1;
        }
        freed
    }

    fn reset(&self) {
        let _serialized = self.run_lock.lock();
        let mut results = self.results.lock();
        // Frees the memory too, not only the entries.
        *results = KVec::new();
        self.counters.clear();
    }

    fn summary(&self) {
        let results = self.results.lock();
        let unchecked = results
            .iter()
            .filter(|r| !r.lockdep_before || !r.lockdep_after)
            .count();
        let with_reports = results
            .iter()
            .filter(|r| r.reports.iter().any(|&n| n > 0))
            .count();
        pr_info!(
            "ran {} cells: {} with reports, {} not fully checked by lockdep; details in /sys/kernel/debug/rust_gfp_nolocks/results\n",
            results.len(),
            with_reports,
            unchecked
        );
    }
}

// ---------------------------------------------------------------------------
// debugfs.
// ---------------------------------------------------------------------------

fn write_run(state: &State, reader: &mut UserSliceReader) -> Result {
    let len = reader.len();
    if len > MAX_SPEC_LEN {
        pr_err!(
            "run: spec of {} bytes is longer than {}; nothing was run\n",
            len,
            MAX_SPEC_LEN
        );
        return Err(EINVAL);
    }
    let mut buf = [0u8; MAX_SPEC_LEN];
    reader.read_slice(&mut buf[..len])?;
    let spec = parse_spec(&buf[..len])?;
    state.run(spec)
}

fn write_reset(state: &State, reader: &mut UserSliceReader) -> Result {
    let mut buf = [0u8; 8];
    let len = reader.len();
    if len > buf.len() {
        pr_err!("reset: write 1 to clear results and counters\n");
        return Err(EINVAL);
    }
    reader.read_slice(&mut buf[..len])?;
    if buf[..len].trim_ascii() != b"1" {
        pr_err!("reset: write 1 to clear results and counters\n");
        return Err(EINVAL);
    }
    state.reset();
    Ok(())
}

fn show_results(state: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for r in state.results.lock().iter() {
        write!(f, "{}", r)?;
    }
    Ok(())
}

fn show_cases(_: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut out = Ok(());
    let _ = for_each_case(|cell| {
        out = writeln!(f, "{}", cell);
        out.map_err(|_| EINVAL)
    });
    out
}

fn show_tables(_: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, c) in CONTEXTS.iter().enumerate() {
        writeln!(f, "context {} {}", i, c.name)?;
    }
    for (i, m) in MASKS.iter().enumerate() {
        writeln!(f, "mask {} {} {:#x}", i, m.name, m.gfp)?;
    }
    for (i, a) in ALLOCATORS.iter().enumerate() {
        writeln!(f, "allocator {} {} order={}", i, a.name, a.default_order)?;
    }
    for (i, c) in CONTROLS.iter().enumerate() {
        writeln!(f, "control {} {} in {}", i, c.name, c.context)?;
    }
    Ok(())
}

fn show_lockdep(_: &State, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(
        f,
        "{}",
        if sys::lockdep_armed() {
            "armed"
        } else {
            "disarmed"
        }
    )
}

fn show_counter(c: &Atomic<u64>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(f, "{}", c.load(Relaxed))
}

fn populate<'a>(state: &'a State, dir: &ScopedDir<'a, '_>) {
    dir.write_only_callback_file(c"run", state, &write_run);
    dir.write_only_callback_file(c"reset", state, &write_reset);
    dir.read_callback_file(c"results", state, &show_results);
    dir.read_callback_file(c"cases", state, &show_cases);
    dir.read_callback_file(c"tables", state, &show_tables);
    dir.read_callback_file(c"lockdep", state, &show_lockdep);
    let counters = dir.dir(c"counters");
    let c = &state.counters;
    let names: [&CStr; 5] = [
        c"invalid_wait_context",
        c"sleeping_in_atomic",
        c"scheduling_while_atomic",
        c"lockdep_other",
        c"warning",
    ];
    for (name, counter) in names.into_iter().zip(&c.reports) {
        counters.read_callback_file(name, counter, &show_counter);
    }
    counters.read_callback_file(c"allocs_ok", &c.allocs_ok, &show_counter);
    counters.read_callback_file(c"allocs_failed", &c.allocs_failed, &show_counter);
    counters.read_callback_file(c"pages_freed", &c.pages_freed, &show_counter);
    counters.read_callback_file(c"cells_run", &c.cells_run, &show_counter);
    counters.read_callback_file(c"unattributed", &state.detector.unattributed, &show_counter);
}

// ---------------------------------------------------------------------------
// The module.
// ---------------------------------------------------------------------------

struct GfpNoLocks {
    // Field order is teardown order: probes go before the state they point to.
    _console: sys::Probe,
    _zone_locked: Option<sys::Probe>,
    state: Pin<KBox<Scope<State>>>,
}

impl kernel::Module for GfpNoLocks {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let state = KBox::pin_init(
            Scope::dir(State::new()?, c"rust_gfp_nolocks", populate),
            GFP_KERNEL,
        )?;
        let detector: *const c_void = (&raw const state.detector).cast();
        let console: sys::ConsoleProbeFn = console_probe;
        // SAFETY: `console_probe` has the console tracepoint's signature and
        // `detector` outlives the probe (field order in `GfpNoLocks`).
        let console = unsafe { sys::Probe::attach(c"console", console as *mut c_void, detector) }.inspect_err(|_| {
            pr_err!("the console tracepoint is missing: the kernel needs CONFIG_TRACEPOINTS (e.g. CONFIG_FTRACE=y with CONFIG_ENABLE_DEFAULT_TRACERS=y)\n")
        })?;
        let zone_locked: sys::ZoneLockedProbeFn = zone_locked_probe;
        // SAFETY: As above, for `mm_page_alloc_zone_locked`.
        let zone_locked = unsafe {
            sys::Probe::attach(
                c"mm_page_alloc_zone_locked",
                zone_locked as *mut c_void,
                detector,
            )
        }
        .inspect_err(|_| {
            pr_warn!(
                "mm_page_alloc_zone_locked tracepoint missing: every cell will report path=pcp\n"
            )
        })
        .ok();
        // Reports printed before the probe was attached are invisible. Every
        // __might_resched() report taints the kernel with TAINT_WARN: without
        // it no rate limit is running; with it, let one expire before the
        // first cell.
        let since = if sys::warn_tainted() {
            0
        } else {
            sys::hz() + 2
        };
        state
            .detector
            .last_sleep_report
            .store(sys::jiffies().wrapping_sub(since), Relaxed);
        let module = Self {
            _console: console,
            _zone_locked: zone_locked,
            state,
        };
        if module_parameters::autorun.value() {
            module.autorun()?;
        }
        Ok(module)
    }
}

impl GfpNoLocks {
    fn autorun(&self) -> Result {
        let selected = |mask: u64, i: usize| i >= 64 || mask & (1 << i) != 0;
        let (ctxs, masks, allocs) = (
            module_parameters::contexts.value(),
            module_parameters::masks.value(),
            module_parameters::allocators.value(),
        );
        let with_controls = module_parameters::controls.value();
        let _serialized = self.state.run_lock.lock();
        for_each_case(|cell| match cell {
            Cell::Alloc(a)
                if selected(ctxs, a.ctx)
                    && selected(masks, a.mask)
                    && selected(allocs, a.alloc) =>
            {
                self.state.run_cell(cell)
            }
            Cell::Control { .. } if with_controls => self.state.run_cell(cell),
            _ => Ok(()),
        })?;
        drop(_serialized);
        self.state.summary();
        Ok(())
    }
}

impl Drop for GfpNoLocks {
    fn drop(&mut self) {
        // Let a run in progress stop at its next cell, then wait for it.
        self.state.stopping.store(true, Relaxed);
        drop(self.state.run_lock.lock());
    }
}
