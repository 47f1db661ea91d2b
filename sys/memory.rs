// SPDX-License-Identifier: GPL-2.0

//! Memory state as the allocator sees it: free pages against the zone
//! watermarks, kswapd's state, and the page counters `/proc/vmstat` shows.
//! Read racily, as the kernel's own readers do.

use super::task;
use core::ffi::c_int;
use kernel::bindings;

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
