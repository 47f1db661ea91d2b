// SPDX-License-Identifier: GPL-2.0

//! Memory-state reasoning: whether memory allows a cell whose mask may
//! block to run in an atomic section without entering direct reclaim, and
//! the state the slow path needs (memory drained to the min watermark,
//! kswapd asleep). The zones and counters it reads are `sys::memory`'s.

use crate::spec::{AllocCell, Cell};
use crate::sys;
use crate::tables::{ALLOCATORS, CONTEXTS, MASKS};
use kernel::{alloc::KVVec, prelude::*};

/// Most blocks `path=slowpath` holds while memory is drained.
const DRAIN_MAX_BLOCKS: usize = 1 << 16;
/// Memory a blocking mask in an atomic cell must leave free above the
/// watermarks, for whatever else runs meanwhile: 16 MiB.
const MARGIN_PAGES: usize = 16 << (20 - kernel::page::PAGE_SHIFT);
/// Reasons a `path=slowpath` run does not answer its cell (`unsettled=`).
pub(crate) const ABOVE_MIN: &str = "above_min_watermark";
pub(crate) const KSWAPD_AWAKE: &str = "kswapd_awake";
pub(crate) const KSWAPD_HOPELESS: &str = "kswapd_hopeless";

/// Takes every free page the fast path would give, from the largest
/// blocks down, with a mask that neither reclaims nor wakes kswapd nor
/// warns (`__GFP_NOWARN` alone): each order stops at its first failure,
/// when the zones are at their min watermark. Returns the pages, freed
/// when dropped.
pub(crate) fn drain() -> Result<KVVec<sys::Allocation>> {
    // Reserved up front: growing it later would allocate with memory
    // drained. 65536 blocks: 256 GiB in 4 MiB blocks.
    let mut held = KVVec::<sys::Allocation>::with_capacity(DRAIN_MAX_BLOCKS, GFP_KERNEL)?;
    for order in (0..=sys::MAX_ORDER).rev() {
        while held.len() < held.capacity() {
            match sys::get_free_pages(sys::GFP_NOWARN, order) {
                Some(p) => {
                    if let Err(p) = held.push_within_capacity(p) {
                        drop(p);
                        break;
                    }
                }
                None => break,
            }
        }
    }
    Ok(held)
}

/// Why the state `path=slowpath` needs is not there, if it is not.
pub(crate) fn slowpath_unready() -> Option<&'static str> {
    if !sys::at_min_watermarks() {
        return Some(ABOVE_MIN);
    }
    match sys::kswapd() {
        sys::Kswapd::Asleep => None,
        sys::Kswapd::Awake => Some(KSWAPD_AWAKE),
        sys::Kswapd::Hopeless => Some(KSWAPD_HOPELESS),
    }
}

/// A blocking mask in an atomic context only prints a report while the
/// free lists can serve it; short of memory it would enter direct
/// reclaim (or compaction) and really sleep, with a raw lock held or in
/// hard irq. `get_page_from_freelist()` serves it without either while
/// a zone passes `__zone_watermark_ok()` for the order (the slow path
/// retries at the min watermark before it reclaims). The cell runs only
/// if one zone holds all `n` blocks it may take (whatever the path),
/// plus a margin, above its high watermark, in blocks of its order that
/// `GFP_KERNEL` may use. Not covered: `vm.defrag_mode=1`, which the
/// module cannot read (it keeps `ALLOC_NOFRAGMENT` and may send even an
/// allocation with free pages to the slow path).
pub(crate) fn memory_allows(cell: AllocCell) -> bool {
    // The headless kvfree_rcu() may allocate a page with GFP_KERNEL.
    let gfp = if ALLOCATORS[cell.alloc].might_sleep {
        sys::GFP_KERNEL
    } else {
        MASKS[cell.mask].gfp
    };
    if !sys::may_block(gfp) || !CONTEXTS[cell.ctx].atomic {
        return true;
    }
    // A slab row takes objects: at most a new slab (order 0) per
    // `SLAB_OBJECTS_PER_PAGE` of them.
    let n = if ALLOCATORS[cell.alloc].slab {
        (cell.n as usize).div_ceil(sys::SLAB_OBJECTS_PER_PAGE)
    } else {
        cell.n as usize
    };
    let needed = (n << cell.order) + MARGIN_PAGES;
    let h = sys::headroom(cell.order);
    if h.pages >= needed && h.blocks >= n {
        return true;
    }
    pr_err!(
        "run: refusing {}: {} may enter direct reclaim and sleep inside {}; the cell may take {} blocks of order {} ({} pages, with a {} page margin), and the best zone holds {} usable free pages above its high watermark and {} usable free blocks of that order; free memory or lower n= or order=\n",
        Cell::Alloc(cell),
        if ALLOCATORS[cell.alloc].might_sleep {
            ALLOCATORS[cell.alloc].name
        } else {
            MASKS[cell.mask].name
        },
        CONTEXTS[cell.ctx].name,
        n,
        cell.order,
        needed,
        MARGIN_PAGES,
        h.pages,
        h.blocks
    );
    false
}
