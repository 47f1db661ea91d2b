// SPDX-License-Identifier: GPL-2.0

//! The tables: contexts, GFP masks, allocators and controls. Each entry is
//! one line; the spec grammar, `cases`, `run all` and autorun follow them.

use crate::spec::Path;
use crate::sys::{self, ExecContext};
#[cfg(have_local_interrupt_disable)]
use kernel::interrupt;
use kernel::{
    prelude::*,
    sync::{rcu, SpinLock},
};

/// Locks a context may take; owned by the module state.
pub(crate) struct Locks {
    pub(crate) raw: Pin<KBox<sys::RawSpinLock>>,
    pub(crate) spin: Pin<KBox<SpinLock<()>>>,
    #[cfg(have_self_nmi)]
    pub(crate) nmi: Pin<KBox<sys::NmiHandler>>,
}

pub(crate) struct ContextDef {
    pub(crate) name: &'static str,
    /// Whether the body runs in an atomic section (everything but `process`).
    pub(crate) atomic: bool,
    /// Where the body runs: the cell's task, or an interrupt context on its
    /// CPU, by which the detector attributes reports (see
    /// `Detector::begin`).
    pub(crate) body_in: ExecContext,
    /// Runs the body inside the context and leaves it, restoring all state.
    pub(crate) enter: fn(&Locks, &mut dyn FnMut()),
}

/// An atomic context run by the cell's task: `enter` opens the section.
const fn context(name: &'static str, enter: fn(&Locks, &mut dyn FnMut())) -> ContextDef {
    ContextDef {
        name,
        atomic: true,
        body_in: ExecContext::Task,
        enter,
    }
}

/// The baseline: the body runs as it is, in process context.
const fn no_section(name: &'static str) -> ContextDef {
    ContextDef {
        name,
        atomic: false,
        body_in: ExecContext::Task,
        enter: |_, f| f(),
    }
}

/// The body runs in an interrupt context (`body_in`) on the cell's CPU.
const fn interrupt(
    name: &'static str,
    body_in: ExecContext,
    enter: fn(&Locks, &mut dyn FnMut()),
) -> ContextDef {
    ContextDef {
        name,
        atomic: true,
        body_in,
        enter,
    }
}

/// Outer contexts, in order of increasing atomicity (the rows of the table).
pub(crate) const CONTEXTS: &[ContextDef] = &[
    no_section("process"),
    context("rcu_read_lock", in_rcu_read_lock),
    context("spin_lock", in_spin_lock),
    // Bottom halves need the exported __local_bh_disable_ip(); a real
    // softirq also needs x86 to be attributed (as hardirq below). On
    // PREEMPT_RT both are task context under rcu_read_lock(), preemptible.
    #[cfg(any(CONFIG_TRACE_IRQFLAGS, CONFIG_PREEMPT_RT))]
    context("local_bh_disable", |_, f| sys::with_bh_disabled(f)),
    #[cfg(all(CONFIG_X86, any(CONFIG_TRACE_IRQFLAGS, CONFIG_PREEMPT_RT)))]
    interrupt("softirq", ExecContext::Softirq, |_, f| sys::in_softirq(f)),
    #[cfg(any(CONFIG_DEBUG_PREEMPT, CONFIG_TRACE_PREEMPT_TOGGLE))]
    context("preempt_disable", |_, f| sys::with_preempt_disabled(f)),
    #[cfg(have_local_interrupt_disable)]
    context("local_irq_disable", in_local_irq_disable),
    context("raw_spin_lock", |l, f| l.raw.with(f)),
    context("raw_spin_lock_irqsave", |l, f| l.raw.with_irqsave(f)),
    // Only where the detector can tell hard irq context (x86's per-cpu
    // preempt_count()): elsewhere the row's reports and buddy-list events
    // could not be attributed, and the row is absent.
    #[cfg(CONFIG_X86)]
    interrupt("hardirq", ExecContext::Hardirq, |_, f| sys::in_hardirq(f)),
    // A self-NMI through the local APIC (x86, detected by Kbuild). Only
    // allocators callable from any context run here.
    #[cfg(have_self_nmi)]
    interrupt("nmi", ExecContext::Nmi, |l, f| l.nmi.run(f)),
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
/// `__might_resched()` test, is true either way. Kernel crates without it
/// (before 7.3) have no row.
#[cfg(have_local_interrupt_disable)]
fn in_local_irq_disable(_: &Locks, f: &mut dyn FnMut()) {
    let _guard = interrupt::local_interrupt_disable();
    f();
}

pub(crate) struct MaskDef {
    pub(crate) name: &'static str,
    /// The column head the tables show (`rgn-report`, from the results).
    pub(crate) short: &'static str,
    pub(crate) gfp: sys::Gfp,
}

const fn mask(name: &'static str, short: &'static str, gfp: sys::Gfp) -> MaskDef {
    MaskDef { name, short, gfp }
}

/// GFP masks, named as in the kernel. `0` and `__GFP_HIGH` have no
/// `__GFP_KSWAPD_RECLAIM`: no kswapd wakeup, as argued in the 2020
/// `__GFP_NO_LOCKS` thread; `GFP_NOWAIT` and `GFP_ATOMIC` have it.
pub(crate) const MASKS: &[MaskDef] = &[
    mask("GFP_KERNEL", "KERNEL", sys::GFP_KERNEL),
    mask("GFP_NOWAIT", "NOWAIT", sys::GFP_NOWAIT),
    mask("GFP_ATOMIC", "ATOMIC", sys::GFP_ATOMIC),
    mask("0", "0", 0),
    mask("__GFP_HIGH", "HIGH", sys::GFP_HIGH),
    mask(
        "GFP_ATOMIC|__GFP_NOWARN",
        "AT|NW",
        sys::GFP_ATOMIC | sys::GFP_NOWARN,
    ),
    // GFP_NOWAIT without __GFP_KSWAPD_RECLAIM: the 2020 thread's candidate
    // for a lock-free mask.
    mask("__GFP_NOWARN", "NOWARN", sys::GFP_NOWARN),
];

pub(crate) type AllocFn = fn(sys::Gfp, u32) -> Option<sys::Allocation>;

pub(crate) struct AllocatorDef {
    pub(crate) name: &'static str,
    /// The call as a kernel developer writes it, the tables' column head
    /// (`title=` on each result line; no white space, which the build
    /// checks). A row with an order has `()`, which the report fills with
    /// the cells' order.
    pub(crate) title: &'static str,
    /// Order used when the spec gives none.
    pub(crate) default_order: u32,
    /// Highest order the spec may choose.
    pub(crate) max_order: u32,
    /// Masks the module passes to this allocator.
    pub(crate) accepts: fn(sys::Gfp) -> bool,
    /// Whether a failure without `__GFP_NOWARN` goes through `warn_alloc()`.
    pub(crate) warns: bool,
    /// A freeing row: `alloc` takes `n` pages or objects before the section
    /// (`GFP_KERNEL`, or for an allocator of any context its own mask), and
    /// the section frees them.
    pub(crate) frees: bool,
    /// Callable from any context, NMI included: the only allocators the
    /// `nmi` row runs.
    pub(crate) any_context: bool,
    /// A slab row (`kmalloc-64` objects, order 0), not pages.
    pub(crate) slab: bool,
    /// Paths the spec may ask for; the first is the default, the matrix's.
    pub(crate) paths: &'static [Path],
    pub(crate) alloc: AllocFn,
    /// How a freeing row's section frees one allocation: dropped (the
    /// allocator's own free), or handed to RCU.
    pub(crate) free: fn(sys::Allocation),
    /// A `kfree_rcu()` row: its section hands objects of the private cache
    /// to RCU, after a setup of the sheaves for its path (`kfree_rcu.rs`).
    pub(crate) rcu: bool,
    /// The call starts with `might_sleep()`, whatever the mask.
    pub(crate) might_sleep: bool,
}

/// Properties of an allocator row, combined with `|` in `ALLOCATORS`.
const WARNS: u8 = 1 << 0;
const FREES: u8 = 1 << 1;
const ANY_CONTEXT: u8 = 1 << 2;
#[cfg_attr(not(have_slab_rows), allow(dead_code))]
const SLAB: u8 = 1 << 3;
#[cfg_attr(not(have_slab_rows), allow(dead_code))]
const MIGHT_SLEEP: u8 = 1 << 4;

/// The paths of each kind of row, the matrix's first.
const PAGE_PATHS: &[Path] = &[Path::ZoneLock, Path::Pcp, Path::Slowpath];
const PAGE_FREE_PATHS: &[Path] = &[Path::ZoneLock, Path::Pcp];
const SLAB_PATHS: &[Path] = &[Path::NewSlab, Path::Pcp];
const SLAB_FREE_PATHS: &[Path] = &[Path::Pcp];
/// `kfree_rcu()` rows where `kvfree_call_rcu()` tries the sheaves first:
/// the barn's empty sheaf (`barn->lock`, the matrix's), a sheaf with room,
/// a new sheaf allocated in the section.
#[cfg_attr(not(have_slab_rows), allow(dead_code))]
const RCU_SHEAF_PATHS: &[Path] = &[Path::Barn, Path::Sheaf, Path::NewSheaf];
/// PREEMPT_RT's `kvfree_call_rcu()` skips the sheaves for the `krc` bulk
/// path (`kfree_call_rcu_nolock()` does not).
#[cfg_attr(not(have_slab_rows), allow(dead_code))]
const RCU_BULK_PATHS: &[Path] = &[Path::Krc, Path::KrcEmpty];

fn free_now(allocation: sys::Allocation) {
    drop(allocation)
}

const fn allocator(
    name: &'static str,
    title: &'static str,
    order: u32,
    max_order: u32,
    accepts: fn(sys::Gfp) -> bool,
    properties: u8,
    alloc: AllocFn,
) -> AllocatorDef {
    let (frees, slab) = (properties & FREES != 0, properties & SLAB != 0);
    let paths = match (slab, frees) {
        (false, false) => PAGE_PATHS,
        (false, true) => PAGE_FREE_PATHS,
        (true, false) => SLAB_PATHS,
        (true, true) => SLAB_FREE_PATHS,
    };
    AllocatorDef {
        name,
        title,
        default_order: order,
        max_order,
        accepts,
        warns: properties & WARNS != 0,
        frees,
        any_context: properties & ANY_CONTEXT != 0,
        slab,
        paths,
        alloc,
        free: free_now,
        rcu: false,
        might_sleep: false,
    }
}

/// A `kfree_rcu()` row: frees (`gfp=0`, order 0) objects of the private
/// cache (`sys::rcu`) with `free`.
#[cfg_attr(not(have_slab_rows), allow(dead_code))]
const fn rcu_row(
    name: &'static str,
    title: &'static str,
    properties: u8,
    free: fn(sys::Allocation),
) -> AllocatorDef {
    let any_context = properties & ANY_CONTEXT != 0;
    #[cfg(have_slab_rows)]
    let alloc: AllocFn = sys::rcu::alloc;
    #[cfg(not(have_slab_rows))]
    let alloc: AllocFn = |_, _| None;
    AllocatorDef {
        paths: if cfg!(CONFIG_PREEMPT_RT) && !any_context {
            RCU_BULK_PATHS
        } else {
            RCU_SHEAF_PATHS
        },
        free,
        rcu: true,
        might_sleep: properties & MIGHT_SLEEP != 0,
        ..allocator(
            name,
            title,
            0,
            0,
            |gfp| gfp == 0,
            properties | FREES | SLAB,
            alloc,
        )
    }
}

/// Allocators. `get_free_pages` defaults to order 4, above
/// PAGE_ALLOC_COSTLY_ORDER: never served by the per-cpu lists.
/// `alloc_pages_nolock()` is run with `0` only, its documented mask (the
/// kernel also accepts `__GFP_ACCOUNT` and a few modifiers, which this
/// table does not test), and at the per-cpu orders only: above them it
/// always returns NULL (`alloc_order_allowed()`).
///
/// `alloc_pages_nolock()` adds `__GFP_NOWARN` itself.
///
/// `free_page` is a freeing row: `free_page()` of pages allocated before
/// the section; it takes `gfp=0` only (a free takes no mask) and order 0,
/// which goes through the per-cpu list and reaches `zone->lock` once the
/// list passes its high mark (`free_pcppages_bulk()`). `free_pages` frees
/// one order-4 block by default: above the per-cpu orders,
/// `__free_frozen_pages()` hands it to `free_one_page()`, which takes
/// `zone->lock` for every such free.
///
/// Slab rows: `kmalloc()` of 64 bytes (`kmalloc-64`, order-0 slabs)
/// with the masks that differ for slab (`__GFP_HIGH` and `__GFP_NOWARN`
/// only change what the page allocator does once a new slab is needed,
/// which `0` and `GFP_NOWAIT` already show); `kmalloc_nolock()` with `0`,
/// its documented mask; `kfree()` and `kfree_nolock()` of one object
/// allocated before the section, each from its allocation pair. Not with
/// `CONFIG_SLUB_TINY`, which has no per-cpu sheaves (every `kmalloc()` and
/// `kfree()` takes the node's `list_lock`): the rows would ask about
/// another allocator.
///
/// `kfree_rcu` rows: one object of a private 64-byte cache (`sys::rcu`),
/// allocated before the section, handed to RCU inside it:
/// `kfree_rcu(p, head)` (`kvfree_call_rcu()` with the object's head),
/// `kvfree_rcu_mightsleep(p)` (without: `might_sleep()` first) and, where
/// `Kbuild` finds it exported, `kfree_rcu_nolock(p, head)`
/// (`kfree_call_rcu_nolock()`, the only one for NMI: the others take locks
/// without trying). Each path is set up before the section and the path
/// taken named from the kernel's events (`kfree_rcu.rs`).
///
/// One line per allocator: name, title, default order, highest order,
/// masks accepted, properties (failures warn, frees, callable from any
/// context, slab), call (for a freeing row: the allocation whose free it
/// runs).
#[rustfmt::skip]
pub(crate) const ALLOCATORS: &[AllocatorDef] = &[
    #[cfg(have_alloc_pages_nolock)]
    allocator("alloc_pages_nolock", "alloc_pages_nolock()", 0, sys::PCP_MAX_ORDER, |gfp| gfp == 0, ANY_CONTEXT, sys::alloc_pages_nolock),
    allocator("get_free_page", "__get_free_page()", 0, 0, |_| true, WARNS, sys::get_free_pages),
    allocator("get_free_pages", "__get_free_pages()", 4, sys::MAX_ORDER, |_| true, WARNS, sys::get_free_pages),
    allocator("free_page", "free_page()", 0, 0, |gfp| gfp == 0, FREES, sys::get_free_pages),
    allocator("free_pages", "free_pages()", 4, sys::MAX_ORDER, |gfp| gfp == 0, FREES, sys::get_free_pages),
    #[cfg(have_kmalloc_nolock_rows)]
    allocator("kmalloc_nolock", "kmalloc_nolock(64)", 0, 0, |gfp| gfp == 0, ANY_CONTEXT | SLAB, sys::kmalloc_nolock),
    #[cfg(have_slab_rows)]
    allocator("kmalloc", "kmalloc(64)", 0, 0, slab_mask, WARNS | SLAB, sys::kmalloc),
    #[cfg(have_slab_rows)]
    allocator("kfree", "kfree()", 0, 0, |gfp| gfp == 0, FREES | SLAB, sys::kmalloc),
    #[cfg(have_kmalloc_nolock_rows)]
    allocator("kfree_nolock", "kfree_nolock()", 0, 0, |gfp| gfp == 0, FREES | ANY_CONTEXT | SLAB, sys::kmalloc_nolock),
    #[cfg(have_slab_rows)]
    rcu_row("kfree_rcu", "kfree_rcu()", 0, sys::rcu::kfree_rcu),
    #[cfg(have_slab_rows)]
    rcu_row("kvfree_rcu_mightsleep", "kvfree_rcu_mightsleep()", MIGHT_SLEEP, sys::rcu::kvfree_rcu_mightsleep),
    #[cfg(have_kfree_rcu_nolock)]
    rcu_row("kfree_rcu_nolock", "kfree_rcu_nolock()", ANY_CONTEXT, sys::rcu::kfree_rcu_nolock),
];

// The slab rows' titles name their object size.
const _: () = assert!(sys::SLAB_OBJECT_SIZE == 64);

/// Whether `s` holds white space, which would split its `key=value` on a
/// result line.
const fn has_space(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            return true;
        }
        i += 1;
    }
    false
}

// Column heads are single words on the result lines (`title=`,
// `gfp_short=`): the build fails on one with a space.
const _: () = {
    let mut i = 0;
    while i < ALLOCATORS.len() {
        assert!(
            !has_space(ALLOCATORS[i].title),
            "an allocator's title has a space"
        );
        i += 1;
    }
    let mut i = 0;
    while i < MASKS.len() {
        assert!(
            !has_space(MASKS[i].short),
            "a mask's short name has a space"
        );
        i += 1;
    }
};

#[cfg(have_slab_rows)]
fn slab_mask(gfp: sys::Gfp) -> bool {
    matches!(gfp, sys::GFP_KERNEL | sys::GFP_NOWAIT | sys::GFP_ATOMIC | 0)
}

pub(crate) struct ControlDef {
    pub(crate) name: &'static str,
    /// Context the control's body runs in (a row of `CONTEXTS`).
    pub(crate) context: &'static str,
    /// The body calls `might_sleep()`: the runner derives its verdict.
    pub(crate) calls_might_sleep: bool,
    pub(crate) body: fn(&Locks),
}

const fn control(name: &'static str, context: &'static str, body: fn(&Locks)) -> ControlDef {
    ControlDef {
        name,
        context,
        calls_might_sleep: false,
        body,
    }
}

/// A control whose body calls `might_sleep()`.
const fn sleep_control(name: &'static str, context: &'static str, body: fn(&Locks)) -> ControlDef {
    ControlDef {
        calls_might_sleep: true,
        ..control(name, context, body)
    }
}

/// Cells that prove the detector works, each with one known outcome: nothing;
/// invalid wait context (spinlock_t under raw_spinlock_t); sleeping in
/// atomic; and a report printed by an interrupt on the cell's CPU while the
/// cell's task is `current` there, which is not the cell's (unattributed).
pub(crate) const CONTROLS: &[ControlDef] = &[
    control("empty", "raw_spin_lock", |_| {}),
    control("spin_lock_under_raw_spin_lock", "raw_spin_lock", |l| {
        drop(l.spin.lock())
    }),
    sleep_control(
        "might_sleep_under_preempt_disable",
        "preempt_disable",
        |_| kernel::task::might_sleep(),
    ),
    #[cfg(CONFIG_X86)]
    control("might_sleep_in_interrupt_on_cell_cpu", "process", |_| {
        sys::in_hardirq(&mut || kernel::task::might_sleep())
    }),
];

pub(crate) fn context_index(name: &str) -> Option<usize> {
    CONTEXTS.iter().position(|c| c.name == name)
}
