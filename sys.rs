// SPDX-License-Identifier: GPL-2.0

//! The FFI corner: the few kernel primitives the kernel crate has no
//! abstraction for, each wrapped once here so that the rest of the crate is
//! safe code. The only `unsafe` elsewhere is the tracepoint probes in
//! `detector.rs` getting their data pointer back.

use core::ffi::{c_char, c_int, c_uint, c_void};
use core::num::NonZeroUsize;
use core::ptr::NonNull;
use kernel::{
    bindings,
    prelude::*,
    sync::atomic::{Acquire, Atomic, Full, Relaxed, Release},
    types::Opaque,
};

pub(crate) mod lockdep;
#[cfg(have_slab_rows)]
pub(crate) mod rcu;
pub(crate) mod task;

pub(crate) type Gfp = bindings::gfp_t;

pub(crate) const GFP_KERNEL: Gfp = bindings::GFP_KERNEL;
pub(crate) const GFP_NOWAIT: Gfp = bindings::GFP_NOWAIT;
pub(crate) const GFP_ATOMIC: Gfp = bindings::GFP_ATOMIC;
pub(crate) const GFP_HIGH: Gfp = 1 << bindings::___GFP_HIGH_BIT;
pub(crate) const GFP_NOWARN: Gfp = bindings::__GFP_NOWARN;
/// `__GFP_NORETRY`, which the bindings lack as a constant (like `__GFP_HIGH`).
pub(crate) const GFP_NORETRY: Gfp = 1 << bindings::___GFP_NORETRY_BIT;
/// Highest order the per-cpu lists serve (`PAGE_ALLOC_COSTLY_ORDER`; with
/// THP the PMD order too, which the test kernels do not have).
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

// ---------------------------------------------------------------------------
// Allocations: pages or slab objects, owned, freed once, on drop.
// ---------------------------------------------------------------------------

/// How the allocator handed the memory out, which decides how it is freed.
enum Handle {
    /// From `__get_free_pages()`: a kernel virtual address.
    Addr(NonZeroUsize),
    /// From `alloc_pages_nolock()`: a `struct page`.
    Page(NonNull<bindings::page>),
    /// From `kmalloc()`: freed with `kfree()`.
    #[cfg(have_slab_rows)]
    Kmalloc(NonNull<c_void>),
    /// From `kmalloc_nolock()`: freed with `kfree_nolock()`, its pair,
    /// callable where it was (any context).
    #[cfg(have_kmalloc_nolock_rows)]
    KmallocNolock(NonNull<c_void>),
    /// From `kmem_cache_alloc()` of the `kfree_rcu()` rows' cache
    /// (`rcu::Cache`, which outlives every object: see there): freed with
    /// `kmem_cache_free()`, or handed to RCU by `rcu::kfree_rcu()` and
    /// friends, which take the value.
    #[cfg(have_slab_rows)]
    Cached {
        cache: NonNull<bindings::kmem_cache>,
        object: NonNull<c_void>,
    },
}

/// One allocation, owned: dropping the value frees it with the allocator's
/// own free function, so safe code can neither free it twice nor with the
/// wrong order or function. Neither `Copy` nor `Clone`. Freeing takes the
/// allocator's locks: drop these outside the atomic section (the runner
/// keeps them in a vector reserved beforehand and drops it after the
/// section), except in a freeing cell, whose section drops them on purpose.
pub(crate) struct Allocation {
    handle: Handle,
    order: u32,
}

// SAFETY: An `Allocation` owns its memory exclusively, and the kernel's free
// functions (`free_pages()`, `__free_pages()`, `kfree()`, `kfree_nolock()`,
// `kmem_cache_free()`, and the `kfree_rcu()` calls that hand an object to
// RCU) may run on any task and CPU, not only the allocating one.
unsafe impl Send for Allocation {}

impl Drop for Allocation {
    fn drop(&mut self) {
        match self.handle {
            // SAFETY: `addr` came from `get_free_pages_noprof()` with
            // `self.order` and this value owns it; drop runs once.
            Handle::Addr(addr) => unsafe {
                bindings::free_pages(addr.get() as kernel::ffi::c_ulong, self.order)
            },
            // SAFETY: `page` came from `alloc_pages_nolock_noprof()` with
            // `self.order` and this value owns it; drop runs once.
            Handle::Page(page) => unsafe { bindings::__free_pages(page.as_ptr(), self.order) },
            // SAFETY: `object` came from `krealloc_node_align()` and this
            // value owns it; drop runs once.
            #[cfg(have_slab_rows)]
            Handle::Kmalloc(object) => unsafe { bindings::kfree(object.as_ptr()) },
            // SAFETY: `object` came from `_kmalloc_nolock_noprof()` and this
            // value owns it; drop runs once.
            #[cfg(have_kmalloc_nolock_rows)]
            Handle::KmallocNolock(object) => unsafe { bindings::kfree_nolock(object.as_ptr()) },
            // SAFETY: `object` came from `kmem_cache_alloc_noprof()` of
            // `cache`, which is live until every cell has run (`rcu::Cache`);
            // this value owns it and drop runs once.
            #[cfg(have_slab_rows)]
            Handle::Cached { cache, object } => unsafe {
                bindings::kmem_cache_free(cache.as_ptr(), object.as_ptr())
            },
        }
    }
}

pub(crate) fn get_free_pages(gfp: Gfp, order: u32) -> Option<Allocation> {
    // SAFETY: Any mask and any order up to `MAX_ORDER` (checked by the
    // spec parser) are valid arguments; failure returns 0.
    let addr = unsafe { bindings::get_free_pages_noprof(gfp, order) };
    Some(Allocation {
        handle: Handle::Addr(NonZeroUsize::new(addr as usize)?),
        order,
    })
}

#[cfg(have_alloc_pages_nolock)]
pub(crate) fn alloc_pages_nolock(gfp: Gfp, order: u32) -> Option<Allocation> {
    // SAFETY: Callable from any context, by design; returns NULL rather
    // than spinning or sleeping.
    let page = unsafe { bindings::alloc_pages_nolock_noprof(gfp, bindings::NUMA_NO_NODE, order) };
    Some(Allocation {
        handle: Handle::Page(NonNull::new(page)?),
        order,
    })
}

/// Size of the slab rows' objects: the `kmalloc-64` cache, whose slabs are
/// order 0 (64 objects to a page).
pub(crate) const SLAB_OBJECT_SIZE: usize = 64;
/// Objects in one slab of that cache.
pub(crate) const SLAB_OBJECTS_PER_PAGE: usize = (1 << kernel::page::PAGE_SHIFT) / SLAB_OBJECT_SIZE;

/// `kmalloc(SLAB_OBJECT_SIZE, gfp)`. Through `krealloc(NULL, ...)`, the
/// kernel crate's `Kmalloc` path (`__do_kmalloc_node()`, as `kmalloc()`
/// with a size not known at compile time), whose helper takes any mask
/// where `kernel::alloc::Flags` cannot express `0` or `__GFP_HIGH`. The
/// order is the spec's, always 0 for slab rows.
#[cfg(have_slab_rows)]
pub(crate) fn kmalloc(gfp: Gfp, order: u32) -> Option<Allocation> {
    // SAFETY: A NULL object asks for a new allocation; any mask is valid;
    // failure returns NULL.
    let object = unsafe {
        bindings::krealloc_node_align(
            core::ptr::null(),
            SLAB_OBJECT_SIZE,
            1,
            gfp,
            bindings::NUMA_NO_NODE,
        )
    };
    Some(Allocation {
        handle: Handle::Kmalloc(NonNull::new(object)?),
        order,
    })
}

/// `kmalloc_nolock(SLAB_OBJECT_SIZE, gfp, NUMA_NO_NODE)`: any context, NMI
/// included; returns NULL rather than spin or sleep. Kbuild finds it
/// exported; with `CONFIG_KMALLOC_PARTITION_CACHES` it takes a token this
/// binding lacks, and the rows are absent.
#[cfg(have_kmalloc_nolock_rows)]
pub(crate) fn kmalloc_nolock(gfp: Gfp, order: u32) -> Option<Allocation> {
    // SAFETY: Callable from any context by design, with the masks the spec
    // parser lets through (`0`); failure returns NULL.
    let object =
        unsafe { bindings::_kmalloc_nolock_noprof(SLAB_OBJECT_SIZE, gfp, bindings::NUMA_NO_NODE) };
    Some(Allocation {
        handle: Handle::KmallocNolock(NonNull::new(object)?),
        order,
    })
}

// ---------------------------------------------------------------------------
// Free memory against the zone watermarks.
// ---------------------------------------------------------------------------

/// What the best zone a `GFP_KERNEL` allocation may use can give without
/// reclaim, by the checks of `__zone_watermark_ok()`.
#[derive(Clone, Copy, Default)]
pub(crate) struct Headroom {
    /// Free pages above the zone's high watermark (boost included) plus its
    /// lowmem reserve for `ZONE_NORMAL` allocations, without the free pages
    /// `GFP_KERNEL` may not use (highatomic reserves, CMA).
    pub(crate) pages: usize,
    /// Free blocks of the asked order: `2^(o - order)` for each free block
    /// of order `o >= order`, less the highatomic and CMA pages counted as
    /// blocks of that order.
    pub(crate) blocks: usize,
}

impl Headroom {
    /// Pages the zone can give in blocks of `order`: the lesser limit.
    fn capacity(&self, order: u32) -> usize {
        self.pages.min(self.blocks << order)
    }
}

/// One zone's headroom for `order`.
///
/// # Safety
///
/// `zone` must point to a zone of a live node. Its counters are read with
/// volatile loads, racing with the allocator as `/proc/zoneinfo` does.
unsafe fn zone_headroom(zone: *const bindings::zone, order: u32) -> Headroom {
    let read_stat = |item: u32| {
        // SAFETY: `zone` is live (caller) and `item` indexes `vm_stat`.
        let v =
            unsafe { core::ptr::read_volatile(&raw const (*zone).vm_stat[item as usize].counter) };
        usize::try_from(v).unwrap_or(0)
    };
    // SAFETY: `zone` is live (caller); each load reads one word.
    let (high, boost, reserve, highatomic) = unsafe {
        (
            core::ptr::read_volatile(
                &raw const (*zone)._watermark[bindings::zone_watermarks_WMARK_HIGH as usize],
            ),
            core::ptr::read_volatile(&raw const (*zone).watermark_boost),
            core::ptr::read_volatile(
                &raw const (*zone).lowmem_reserve[bindings::zone_type_ZONE_NORMAL as usize],
            ),
            core::ptr::read_volatile(&raw const (*zone).nr_free_highatomic),
        )
    };
    #[cfg(CONFIG_CMA)]
    let cma = read_stat(bindings::zone_stat_item_NR_FREE_CMA_PAGES);
    #[cfg(not(CONFIG_CMA))]
    let cma = 0;
    let unusable = highatomic + cma;
    let mark = high + boost + usize::try_from(reserve).unwrap_or(0);
    let free = read_stat(bindings::zone_stat_item_NR_FREE_PAGES);
    let mut blocks = 0usize;
    for o in order as usize..bindings::NR_PAGE_ORDERS as usize {
        // SAFETY: As above; `o` is below NR_PAGE_ORDERS.
        let nr_free = unsafe { core::ptr::read_volatile(&raw const (*zone).free_area[o].nr_free) };
        blocks = blocks.saturating_add(nr_free << (o - order as usize));
    }
    Headroom {
        pages: free.saturating_sub(mark + unusable),
        blocks: blocks.saturating_sub(unusable >> order),
    }
}

/// The zone of one node, up to `ZONE_NORMAL` (what `GFP_KERNEL` may use),
/// with the most headroom.
///
/// # Safety
///
/// `node` must point to a live node (nodes are never freed).
unsafe fn node_headroom(node: *const bindings::pglist_data, order: u32) -> Headroom {
    let mut best = Headroom::default();
    for z in 0..=bindings::zone_type_ZONE_NORMAL as usize {
        // SAFETY: `z` indexes `node_zones`; the node is live (caller).
        let h = unsafe { zone_headroom(&raw const (*node).node_zones[z], order) };
        if h.capacity(order) > best.capacity(order) {
            best = h;
        }
    }
    best
}

/// Calls `f` with every node, a `pglist_data` that lives for the whole
/// uptime.
fn for_each_node(mut f: impl FnMut(*const bindings::pglist_data)) {
    #[cfg(not(CONFIG_NUMA))]
    f(&raw const bindings::contig_page_data);
    #[cfg(CONFIG_NUMA)]
    {
        extern "C" {
            static node_data: [*mut bindings::pglist_data; 0];
        }
        // SAFETY: `nr_node_ids` is set at boot and never changes.
        let nodes = unsafe { bindings::nr_node_ids } as usize;
        for nid in 0..nodes {
            // SAFETY: `node_data` has `nr_node_ids` entries; an entry is
            // NULL or a node that is never freed.
            let node = unsafe {
                *(&raw const node_data)
                    .cast::<*mut bindings::pglist_data>()
                    .add(nid)
            };
            if !node.is_null() {
                f(node);
            }
        }
    }
}

/// The headroom of the best zone of any node: the allocator must find
/// both the pages and the blocks in one zone. A snapshot, racing with the
/// allocator as `/proc/zoneinfo` does, which the caller's margin covers.
pub(crate) fn headroom(order: u32) -> Headroom {
    let mut best = Headroom::default();
    for_each_node(|node| {
        // SAFETY: `for_each_node()` gives live nodes.
        let h = unsafe { node_headroom(node, order) };
        if h.capacity(order) > best.capacity(order) {
            best = h;
        }
    });
    best
}

/// Whether every populated zone up to `ZONE_NORMAL` of every node holds at
/// most its min watermark (boost and lowmem reserve included) in free
/// pages: then `get_page_from_freelist()` fails every zone with the fast
/// path's `ALLOC_WMARK_LOW`, `__alloc_pages_noprof()` takes
/// `__alloc_pages_slowpath()`, and its retry at `ALLOC_WMARK_MIN` fails
/// too, unless the mask may use reserves. A snapshot, read as [`headroom`]
/// reads.
pub(crate) fn at_min_watermarks() -> bool {
    let mut below = true;
    for_each_node(|node| {
        for z in 0..=bindings::zone_type_ZONE_NORMAL as usize {
            // SAFETY: `z` indexes `node_zones` of a live node; each load
            // reads one word.
            let (managed, free, min, boost, reserve) = unsafe {
                let zone = &raw const (*node).node_zones[z];
                (
                    core::ptr::read_volatile(&raw const (*zone).managed_pages.counter),
                    core::ptr::read_volatile(
                        &raw const (*zone).vm_stat[bindings::zone_stat_item_NR_FREE_PAGES as usize]
                            .counter,
                    ),
                    core::ptr::read_volatile(
                        &raw const (*zone)._watermark[bindings::zone_watermarks_WMARK_MIN as usize],
                    ),
                    core::ptr::read_volatile(&raw const (*zone).watermark_boost),
                    core::ptr::read_volatile(
                        &raw const (*zone).lowmem_reserve[bindings::zone_type_ZONE_NORMAL as usize],
                    ),
                )
            };
            let mark = i64::try_from(min + boost)
                .unwrap_or(i64::MAX)
                .saturating_add(reserve as i64);
            if managed > 0 && free > mark {
                below = false;
            }
        }
    });
    below
}

/// `MAX_RECLAIM_RETRIES` (mm/internal.h): kswapd runs that reclaimed
/// nothing before `wakeup_kswapd()` gives up on a node (hopeless) and
/// returns before its wait queue.
const MAX_RECLAIM_RETRIES: i32 = 16;

/// What `wakeup_kswapd()` would find, for every node with memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kswapd {
    /// Every kswapd sleeps on its wait queue: a wakeup takes the queue's
    /// `spinlock_t` (`wake_up_interruptible()`).
    Asleep,
    /// A kswapd runs: `waitqueue_active()` is false and a wakeup returns
    /// before the lock.
    Awake,
    /// A node failed `MAX_RECLAIM_RETRIES` times: a wakeup returns early.
    Hopeless,
}

pub(crate) fn kswapd() -> Kswapd {
    let mut state = Kswapd::Asleep;
    for_each_node(|node| {
        // SAFETY: A live node; each load reads one word. `waitqueue_active()`
        // is `!list_empty(&wq_head->head)`.
        let (present, failures, sleeping) = unsafe {
            let head = &raw const (*node).kswapd_wait.head;
            (
                core::ptr::read_volatile(&raw const (*node).node_present_pages) > 0,
                core::ptr::read_volatile(&raw const (*node).kswapd_failures.counter),
                !core::ptr::eq(
                    core::ptr::read_volatile(&raw const (*head).next).cast_const(),
                    head,
                ),
            )
        };
        if !present {
            return;
        }
        if failures >= MAX_RECLAIM_RETRIES {
            state = Kswapd::Hopeless;
        } else if !sleeping && state == Kswapd::Asleep {
            state = Kswapd::Awake;
        }
    });
    state
}

/// The calling task runs `SCHED_FIFO` (`sched_set_fifo_low()`) until this
/// is dropped, then `SCHED_NORMAL` again with its nice value: a kswapd the
/// cell wakes cannot preempt it on its CPU while the module holds the
/// memory it drained (kswapd would reclaim in vain, and after
/// `MAX_RECLAIM_RETRIES` such runs mark the node hopeless). A task that is
/// not `SCHED_NORMAL` keeps its policy.
pub(crate) struct FifoWhileDrained {
    nice: Option<c_int>,
}

impl FifoWhileDrained {
    pub(crate) fn new() -> Self {
        let task = kernel::task::Task::current_raw();
        let (policy, static_prio) = (task::policy(), task::static_prio());
        if policy != bindings::SCHED_NORMAL {
            return Self { nice: None };
        }
        // SAFETY: `current` is live; sched_set_fifo_low() may sleep, and we
        // run in process context.
        unsafe { bindings::sched_set_fifo_low(task) };
        Self {
            // PRIO_TO_NICE(): DEFAULT_PRIO (MAX_RT_PRIO + 20) is nice 0.
            nice: Some(static_prio - bindings::DEFAULT_PRIO as c_int),
        }
    }
}

impl Drop for FifoWhileDrained {
    fn drop(&mut self) {
        if let Some(nice) = self.nice {
            // SAFETY: `current` is live; back to the policy it had.
            unsafe { bindings::sched_set_normal(kernel::task::Task::current_raw(), nice) };
        }
    }
}

// ---------------------------------------------------------------------------
// Which context printed: task, softirq, hard irq or NMI.
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// NMI on this CPU (x86).
// ---------------------------------------------------------------------------

/// `struct nmiaction` of `arch/x86/include/asm/nmi.h`, which the bindings
/// do not include; `Kbuild` checks that the tree declares these fields in
/// this order (`have_self_nmi`).
#[cfg(have_self_nmi)]
#[repr(C)]
struct NmiAction {
    list: bindings::list_head,
    handler: Option<unsafe extern "C" fn(c_uint, *mut bindings::pt_regs) -> c_int>,
    max_duration: u64,
    flags: kernel::ffi::c_ulong,
    name: *const kernel::ffi::c_char,
}

#[cfg(have_self_nmi)]
extern "C" {
    fn __register_nmi_handler(type_: c_uint, action: *mut NmiAction) -> c_int;
    fn unregister_nmi_handler(type_: c_uint, name: *const kernel::ffi::c_char);
    /// `static_call(apic_call_send_IPI_mask)`, whose trampoline the kernel
    /// exports for modules (`__apic_send_IPI_mask()` is inline).
    fn __SCT__apic_call_send_IPI_mask(mask: *const bindings::cpumask, vector: c_int);
}

#[cfg(have_self_nmi)]
const NMI_LOCAL: c_uint = 0;
#[cfg(have_self_nmi)]
const NMI_DONE: c_int = 0;
#[cfg(have_self_nmi)]
const NMI_HANDLED: c_int = 1;
#[cfg(have_self_nmi)]
const NMI_HANDLER_NAME: &CStr = c"rust_gfp_nolocks";

/// The body an NMI is to run: the address of a live `NmiCall`, or 0.
#[cfg(have_self_nmi)]
static NMI_PENDING: Atomic<usize> = Atomic::new(0);
/// The CPU the pending body's NMI was sent to: the kernel calls every
/// `NMI_LOCAL` handler for every NMI, on every CPU.
#[cfg(have_self_nmi)]
static NMI_TARGET: Atomic<u32> = Atomic::new(u32::MAX);
/// NMIs this module sent that no handler run has accounted for yet: a late
/// one (its body taken back, or run by another NMI on that CPU) is ours,
/// claimed, and not reported as an unknown NMI.
#[cfg(have_self_nmi)]
static NMI_SENT: Atomic<u32> = Atomic::new(0);

/// Takes one of `NMI_SENT`, never below zero; whether there was one.
#[cfg(have_self_nmi)]
fn nmi_sent_take() -> bool {
    let mut sent = NMI_SENT.load(Relaxed);
    while sent > 0 {
        match NMI_SENT.cmpxchg(sent, sent - 1, Full) {
            Ok(_) => return true,
            Err(now) => sent = now,
        }
    }
    false
}

#[cfg(have_self_nmi)]
struct NmiCall<'a> {
    f: &'a mut dyn FnMut(),
    done: Atomic<bool>,
}

/// # Safety
///
/// Called by the kernel's NMI code only, once registered.
#[cfg(have_self_nmi)]
unsafe extern "C" fn nmi_trampoline(_type: c_uint, _regs: *mut bindings::pt_regs) -> c_int {
    if current_cpu() != NMI_TARGET.load(Acquire) {
        return NMI_DONE;
    }
    let call = NMI_PENDING.xchg(0, Full);
    if call == 0 {
        // Not ours, or a late one of ours.
        return if nmi_sent_take() {
            NMI_HANDLED
        } else {
            NMI_DONE
        };
    }
    nmi_sent_take();
    // SAFETY: `call` is the address of the `NmiCall` that `NmiHandler::run`
    // published; taking it from `NMI_PENDING` makes this handler its only
    // user, and `run` does not return before `done` is set.
    let call = unsafe { &mut *(call as *mut NmiCall<'_>) };
    (call.f)();
    call.done.store(true, Release);
    NMI_HANDLED
}

/// An `NMI_LOCAL` handler that runs a body sent to it by a self-NMI,
/// registered while this value lives.
#[cfg(have_self_nmi)]
#[pin_data(PinnedDrop)]
pub(crate) struct NmiHandler {
    #[pin]
    action: Opaque<NmiAction>,
    registered: bool,
}

// SAFETY: The action is only handed to the kernel, which serialises its use.
#[cfg(have_self_nmi)]
unsafe impl Send for NmiHandler {}
// SAFETY: `run` keeps its body in statics, one at a time: its only caller,
// the runner, serialises cells under `run_lock`.
#[cfg(have_self_nmi)]
unsafe impl Sync for NmiHandler {}

#[cfg(have_self_nmi)]
impl NmiHandler {
    /// Registers the handler; on failure the row's cells report that their
    /// body did not run.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            action <- Opaque::ffi_init(|slot: *mut NmiAction| {
                // SAFETY: `slot` is valid for writes; `list` is made an
                // empty list once pinned, then linked by the registration.
                unsafe {
                    slot.write(NmiAction {
                        list: core::mem::zeroed(),
                        handler: Some(nmi_trampoline),
                        max_duration: 0,
                        flags: 0,
                        name: NMI_HANDLER_NAME.as_char_ptr(),
                    })
                }
            }),
            registered: false,
        })
        .pin_chain(|this| {
            // SAFETY: Only `registered` is written below; nothing is moved.
            let this = unsafe { this.get_unchecked_mut() };
            let action = this.action.get();
            // SAFETY: The action is initialised and pinned, so its list head
            // can point at itself (`LIST_HEAD_INIT`, an unlinked action), and
            // it stays registered until `drop` unregisters it.
            let ret = unsafe {
                let list = &raw mut (*action).list;
                (*list).next = list;
                (*list).prev = list;
                __register_nmi_handler(NMI_LOCAL, action)
            };
            this.registered = ret == 0;
            if ret != 0 {
                pr_warn!(
                    "cannot register an NMI handler ({}): the nmi row will not run\n",
                    ret
                );
            }
            Ok(())
        })
    }

    /// Runs `f` in an NMI on the CPU this task is on when called (it may
    /// migrate while it waits) and returns once it has run; gives up after a
    /// second if the NMI never came (then `f` never runs). Only code that
    /// is legal in NMI may be in `f`. Callers run one body at a time.
    pub(crate) fn run(&self, f: &mut dyn FnMut()) {
        if !self.registered {
            return;
        }
        let call = NmiCall {
            f,
            done: Atomic::new(false),
        };
        let addr = &raw const call as usize;
        // SAFETY: An all-zero cpumask is empty.
        let mut mask: bindings::cpumask = unsafe { core::mem::zeroed() };
        let cpu = current_cpu();
        let bits = 8 * core::mem::size_of::<kernel::ffi::c_ulong>();
        mask.bits[cpu as usize / bits] |= 1 << (cpu as usize % bits);
        NMI_PENDING.store(addr, Release);
        NMI_TARGET.store(cpu, Release);
        NMI_SENT.fetch_add(1, Full);
        // SAFETY: `mask` names an online CPU (this one, or the one this task
        // just left); NMI_VECTOR is sent with the NMI delivery mode.
        unsafe { __SCT__apic_call_send_IPI_mask(&mask, bindings::NMI_VECTOR as c_int) };
        let deadline = jiffies().wrapping_add(hz());
        while !call.done.load(Acquire) {
            if (jiffies().wrapping_sub(deadline) as isize) > 0
                && NMI_PENDING.cmpxchg(addr, 0, Full).is_ok()
            {
                // Taken back before any handler took it: `f` never runs.
                pr_warn!("no NMI arrived within a second: the cell's body did not run\n");
                return;
            }
            core::hint::spin_loop();
        }
    }
}

#[cfg(have_self_nmi)]
#[pinned_drop]
impl PinnedDrop for NmiHandler {
    fn drop(self: Pin<&mut Self>) {
        if self.registered {
            // SAFETY: Registered by `new`; `unregister_nmi_handler()` waits
            // (synchronize_rcu()) until no NMI runs the handler any more.
            unsafe { unregister_nmi_handler(NMI_LOCAL, NMI_HANDLER_NAME.as_char_ptr()) };
        }
    }
}

/// Monotonic nanoseconds, safe in NMI (`ktime_get_mono_fast_ns()`):
/// `ktime_get()` may spin forever in an NMI that interrupted a timekeeping
/// update on its CPU.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: Callable from any context.
    unsafe { bindings::ktime_get_mono_fast_ns() }
}

// ---------------------------------------------------------------------------
// The kernel's page counters, as /proc/vmstat reads them.
// ---------------------------------------------------------------------------

/// The kernel's own page counts since boot, the figures `/proc/vmstat`
/// prints: pages the page allocator handed out (`pgalloc_*`, every zone)
/// and took back (`pgfree`), per-cpu events summed over the CPUs, and
/// pages in slabs now (`nr_slab_reclaimable` + `nr_slab_unreclaimable`),
/// the global counters without the CPUs' pending deltas.
#[derive(Clone, Copy)]
pub(crate) struct PageCounts {
    pub(crate) alloc: u64,
    pub(crate) free: u64,
    pub(crate) slab: i64,
}

/// The counts now, where the kernel counts events
/// (`CONFIG_VM_EVENT_COUNTERS`). Sleeps (`all_vm_events()` takes
/// `cpus_read_lock()`): process context only, outside any section.
#[cfg(CONFIG_VM_EVENT_COUNTERS)]
pub(crate) fn page_counts() -> Option<PageCounts> {
    let mut events =
        [0 as kernel::ffi::c_ulong; bindings::vm_event_item_NR_VM_EVENT_ITEMS as usize];
    // SAFETY: `events` has room for the NR_VM_EVENT_ITEMS counters the
    // function writes; it is called from process context.
    unsafe { bindings::all_vm_events(events.as_mut_ptr()) };
    // FOR_ALL_ZONES(PGALLOC): one item per zone type, in zone order.
    let first = (bindings::vm_event_item_PGALLOC_NORMAL - bindings::zone_type_ZONE_NORMAL) as usize;
    let zones = bindings::zone_type___MAX_NR_ZONES as usize;
    let node_stat = |item: u32| {
        // SAFETY: `item` indexes `vm_node_stat`, which is always
        // readable; one load of one word, racing as `/proc/vmstat` does.
        unsafe {
            core::ptr::read_volatile(&raw const bindings::vm_node_stat[item as usize].counter)
        }
    };
    Some(PageCounts {
        alloc: events[first..first + zones].iter().map(|&n| n as u64).sum(),
        free: events[bindings::vm_event_item_PGFREE as usize] as u64,
        // Counted in pages in the global counters, despite the _B.
        slab: node_stat(bindings::node_stat_item_NR_SLAB_RECLAIMABLE_B)
            + node_stat(bindings::node_stat_item_NR_SLAB_UNRECLAIMABLE_B),
    })
}

/// Without `CONFIG_VM_EVENT_COUNTERS` the kernel counts no page events.
#[cfg(not(CONFIG_VM_EVENT_COUNTERS))]
pub(crate) fn page_counts() -> Option<PageCounts> {
    None
}

impl PageCounts {
    /// The change from `before` to `self`.
    pub(crate) fn since(self, before: Self) -> Self {
        Self {
            alloc: self.alloc.wrapping_sub(before.alloc),
            free: self.free.wrapping_sub(before.free),
            slab: self.slab - before.slab,
        }
    }
}

// ---------------------------------------------------------------------------
// Tracepoint probes.
// ---------------------------------------------------------------------------

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
            bindings::for_each_kernel_tracepoint(Some(match_tracepoint), (&raw mut lookup).cast())
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
/// `mm_page_alloc_zone_locked(page, order, migratetype, percpu_refill)`.
pub(crate) type ZoneLockedProbeFn =
    unsafe extern "C" fn(*mut c_void, *mut bindings::page, c_uint, c_int, c_int);
/// `mm_page_alloc_extfrag(page, alloc_order, fallback_order, alloc_mt, fallback_mt)`.
pub(crate) type ExtfragProbeFn =
    unsafe extern "C" fn(*mut c_void, *mut bindings::page, c_int, c_int, c_int, c_int);
/// `mm_vmscan_wakeup_kswapd(nid, zid, order, gfp_flags)`.
/// `mm_page_pcpu_drain(page, order, migratetype)`.
pub(crate) type PcpuDrainProbeFn =
    unsafe extern "C" fn(*mut c_void, *mut bindings::page, c_uint, c_int);
/// `mm_page_alloc(page, order, gfp_flags, migratetype)`.
pub(crate) type PageAllocProbeFn =
    unsafe extern "C" fn(*mut c_void, *mut bindings::page, c_uint, bindings::gfp_t, c_int);
/// `kmalloc(call_site, ptr, bytes_req, bytes_alloc, gfp_flags, node)`.
pub(crate) type KmallocProbeFn = unsafe extern "C" fn(
    *mut c_void,
    kernel::ffi::c_ulong,
    *const c_void,
    usize,
    usize,
    bindings::gfp_t,
    c_int,
);
/// `hrtimer_start(hrtimer, mode, was_armed)`.
pub(crate) type HrtimerStartProbeFn =
    unsafe extern "C" fn(*mut c_void, *mut bindings::hrtimer, c_uint, bool);
/// `mm_page_free(page, order)`.
pub(crate) type PageFreeProbeFn = unsafe extern "C" fn(*mut c_void, *mut bindings::page, c_uint);
pub(crate) type WakeupKswapdProbeFn =
    unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, bindings::gfp_t);
/// `lock_acquire(lock, subclass, trylock, read, check, next_lock, ip)`.
pub(crate) type LockAcquireProbeFn = unsafe extern "C" fn(
    *mut c_void,
    *mut bindings::lockdep_map,
    c_uint,
    c_int,
    c_int,
    c_int,
    *mut bindings::lockdep_map,
    kernel::ffi::c_ulong,
);
/// `lock_release(lock, ip)`.
pub(crate) type LockReleaseProbeFn =
    unsafe extern "C" fn(*mut c_void, *mut bindings::lockdep_map, kernel::ffi::c_ulong);
