// SPDX-License-Identifier: GPL-2.0

//! The sections of the page and slab rows: an allocating cell (per-cpu
//! warm-up, memory drained for the slow path, allocations until the path
//! was reached) and a freeing cell, each observed by the detector, and the
//! path each took, from the events its section raised.

use crate::mm;
use crate::results::{CellResult, Outcome, Stats};
use crate::runner::{State, PCP_DRAINED, WARN_SPENT};
use crate::spec::{AllocCell, Cell, Path};
use crate::sys;
use crate::tables::{AllocatorDef, ALLOCATORS, MASKS};
use kernel::{alloc::KVVec, prelude::*, sync::atomic::Relaxed};

/// Most warm-ups of a `path=pcp` cell whose pages the kernel drained.
const WARM_ATTEMPTS: u32 = 3;

/// What a `path=pcp` warm-up left: the CPU whose list it filled, and the
/// per-cpu drain count at the start of its last attempt (a drain since
/// then, that attempt's own included, may have emptied the list).
#[derive(Clone, Copy)]
struct WarmUp {
    cpu: u32,
    drains_seen: u64,
}

/// What an allocating section counted (`State::allocate_in_section`).
#[derive(Default)]
struct Tally {
    iterations: u32,
    failed: u32,
    /// Duration of the first allocation that took zone->lock, 0 if none did.
    zone_locked_alloc_ns: u64,
    cpu_first: u32,
    cpu_last: u32,
    /// A page the full vector could not take, freed after the section.
    spare: Option<sys::Allocation>,
}

/// The path an allocating cell took, from the events its section raised.
fn allocation_path(cell: AllocCell, r: &CellResult) -> &'static str {
    let slab = ALLOCATORS[cell.alloc].slab;
    if r.allocated > 0 && cell.path == Path::Slowpath {
        "slowpath"
    } else if slab && r.page_events > 0 {
        "new_slab"
    } else if r.zone_locked_pages + r.extfrag_events > 0 {
        "zone_lock"
    } else if r.allocated == 0 {
        "none"
    } else if !slab && cell.order > sys::PCP_MAX_ORDER {
        "unseen"
    } else {
        "pcp"
    }
}

impl State {
    /// An allocating cell: warm-up for `path=pcp`, memory drained for
    /// `path=slowpath`, then the section, then the frees.
    pub(crate) fn page_section(
        &self,
        cell: AllocCell,
        pages: &mut KVVec<sys::Allocation>,
        times: &mut KVVec<u64>,
    ) -> Result<CellResult> {
        let def = &ALLOCATORS[cell.alloc];
        let gfp = MASKS[cell.mask].gfp;
        let warm_up = match cell.path {
            Path::Pcp => Some(self.warm_pcp(def, gfp, cell.order, cell.n as usize)?),
            _ => None,
        };
        let mut r = CellResult::new(Cell::Alloc(cell), Outcome::Ran);
        r.calls_might_sleep = sys::may_block(gfp);
        // The slow path's state: memory drained, held until after the
        // section, with the task kept on its CPU ahead of kswapd.
        let (fifo, drained) = if cell.path == Path::Slowpath {
            let fifo = sys::FifoWhileDrained::new();
            let drained = mm::drain()?;
            r.unsettled = mm::slowpath_unready();
            if r.unsettled.is_some() {
                // Not run: the section would spend lockdep's one report
                // and the rate limits on a state that is not the cell's.
                return Ok(r);
            }
            (Some(fifo), Some(drained))
        } else {
            (None, None)
        };
        let tally = self.allocate_in_section(&mut r, cell, pages, times);
        let detector = &self.detector;
        r.zone_locked_pages = detector.zone_locked.load(Relaxed);
        r.page_events = detector.page_allocs.load(Relaxed);
        r.extfrag_events = detector.extfrag.load(Relaxed);
        r.kswapd_wakeups = detector.kswapd_wakeups.load(Relaxed);
        r.allocated = (pages.len() + usize::from(tally.spare.is_some())) as u32;
        // Read before the frees below, which may drain a list themselves.
        let drained_since_warm_up =
            warm_up.is_some_and(|w| detector.pcpu_drained_total.load(Relaxed) != w.drains_seen);
        // Freed outside the section (freeing takes the same locks), while
        // still observed: a report from freeing would be the cell's (for
        // the hardirq row, whose body alone is attributed, unattributed).
        pages.clear();
        drop(tally.spare);
        r.alloc_warnings = detector.alloc_warnings.load(Relaxed);
        self.end_observation(&mut r);
        // A page cell that refilled under zone->lock after the kernel
        // drained its warmed list did not take the fast path it asks
        // about (slab rows warm a sheaf, which no page drain touches).
        if drained_since_warm_up && !def.slab && r.zone_locked_pages + r.extfrag_events > 0 {
            r.unsettled = r.unsettled.or(Some(PCP_DRAINED));
        }
        drop(drained);
        drop(fifo);
        // warn_alloc() prints once per 10 s, system-wide: a failure without
        // __GFP_NOWARN that printed nothing met a spent rate limit, and its
        // report (show_mem() takes zone->lock) is missing.
        if def.warns && tally.failed > 0 && gfp & sys::GFP_NOWARN == 0 && r.alloc_warnings == 0 {
            r.unsettled = r.unsettled.or(Some(WARN_SPENT));
        }
        r.iterations = tally.iterations;
        r.failed = tally.failed;
        r.migrated =
            warm_up.is_some_and(|w| w.cpu != tally.cpu_first || tally.cpu_first != tally.cpu_last);
        r.path = allocation_path(cell, &r);
        r.alloc_ns = Stats::of(times);
        r.zone_locked_alloc_ns = tally.zone_locked_alloc_ns;
        Ok(r)
    }

    /// The section of an allocating cell: allocates up to `n` times, into
    /// `pages` (reserved), timing each, until its path was reached (the
    /// zone_lock path until the buddy lists served, the new_slab path
    /// until the slab allocator took a page) or the allocator refused (it
    /// would refuse again). Observation starts here, after any warm-up:
    /// its reports and trips through zone->lock are not the cell's.
    fn allocate_in_section(
        &self,
        r: &mut CellResult,
        cell: AllocCell,
        pages: &mut KVVec<sys::Allocation>,
        times: &mut KVVec<u64>,
    ) -> Tally {
        let def = &ALLOCATORS[cell.alloc];
        let gfp = MASKS[cell.mask].gfp;
        let detector = &self.detector;
        let mut t = Tally::default();
        self.observe_section(r, cell.ctx, &mut || {
            t.cpu_first = sys::current_cpu();
            while t.iterations < cell.n {
                let buddy_before = detector.buddy_events();
                // NMI-safe clock: the body may run in an NMI.
                let t0 = sys::now_ns();
                let page = (def.alloc)(gfp, cell.order);
                let ns = sys::now_ns().saturating_sub(t0);
                let _ = times.push_within_capacity(ns);
                if t.zone_locked_alloc_ns == 0 && detector.buddy_events() != buddy_before {
                    t.zone_locked_alloc_ns = ns;
                }
                t.iterations += 1;
                let got = page.is_some();
                match page {
                    // At most `n` pages into `n` reserved slots; were it
                    // ever full, the page waits in `spare`, to be freed
                    // after the section like the others.
                    Some(p) => {
                        if let Err(p) = pages.push_within_capacity(p) {
                            t.spare = Some(p.0);
                            break;
                        }
                    }
                    None => t.failed += 1,
                }
                let reached = match cell.path {
                    Path::ZoneLock => detector.buddy_events() > 0,
                    Path::NewSlab => detector.page_allocs.load(Relaxed) > 0,
                    _ => continue,
                };
                if reached || !got {
                    break;
                }
            }
            t.cpu_last = sys::current_cpu();
        });
        t
    }

    /// A freeing cell: `n` pages or objects allocated before the section
    /// (process context, `GFP_KERNEL`, or an any-context allocator's own
    /// mask), freed one by one inside it until `free_pcppages_bulk()` took
    /// `zone->lock` (`mm_page_pcpu_drain`), or all of them (`path=pcp`:
    /// back to the per-cpu list or sheaf they came from); the rest are
    /// freed after it, still observed.
    pub(crate) fn free_section(
        &self,
        cell: AllocCell,
        pages: &mut KVVec<sys::Allocation>,
    ) -> Result<CellResult> {
        let def = &ALLOCATORS[cell.alloc];
        // An allocator for any context takes its own masks only (the
        // cell's); the others may reclaim here, in process context, but
        // fail rather than call the OOM killer.
        let gfp = if def.any_context {
            MASKS[cell.mask].gfp
        } else {
            sys::GFP_KERNEL | sys::GFP_NOWARN | sys::GFP_NORETRY
        };
        // path=pcp frees pages back to the list they were just taken from:
        // n more are taken and kept until after the section, so the list
        // ends n below where it started, under its high mark even if that
        // mark decayed to the list's length meanwhile (decay_pcp_high()).
        let n = cell.n as usize;
        let held = if cell.path == Path::Pcp && !def.slab {
            n
        } else {
            0
        };
        pages.reserve(n + held, GFP_KERNEL)?;
        while pages.len() < n + held {
            match (def.alloc)(gfp, cell.order) {
                Some(p) => {
                    if let Err(p) = pages.push_within_capacity(p) {
                        drop(p);
                        break;
                    }
                }
                None => break,
            }
        }
        let mut r = CellResult::new(Cell::Alloc(cell), Outcome::Ran);
        r.allocated = pages.len() as u32;
        let mut freed = 0u32;
        let detector = &self.detector;
        let allocated_on = sys::current_cpu();
        let mut freed_on = allocated_on;
        self.observe_section(&mut r, cell.ctx, &mut || {
            freed_on = sys::current_cpu();
            while pages.len() > held {
                let Some(p) = pages.pop() else { break };
                drop(p);
                freed += 1;
                // A report also ends it: a free whose per-cpu trylock
                // failed takes zone->lock in free_one_page(), which no
                // tracepoint shows; no more of those than needed.
                if detector.pcpu_drained.load(Relaxed) > 0 || detector.reported() {
                    break;
                }
            }
        });
        r.zone_locked_pages = detector.pcpu_drained.load(Relaxed);
        r.page_events = detector.page_frees.load(Relaxed);
        pages.clear();
        self.end_observation(&mut r);
        r.iterations = freed;
        // A path=pcp free lands in this CPU's sheaf or per-cpu list only on
        // the CPU that allocated it (whose allocation left room there).
        r.migrated = cell.path == Path::Pcp && freed_on != allocated_on;
        // Above the per-cpu orders every free goes to free_one_page(),
        // under zone->lock, where no tracepoint fires: mm_page_free (before
        // it) shows the free happened, the order where it went.
        let freed_to_buddy = !def.slab && cell.order > sys::PCP_MAX_ORDER && r.page_events > 0;
        r.path = if r.zone_locked_pages > 0 || freed_to_buddy {
            "zone_lock"
        } else if def.slab && r.page_events > 0 {
            "slab_freed"
        } else if freed > 0 {
            "pcp"
        } else {
            "none"
        };
        Ok(r)
    }

    /// Leaves `n` pages of this order on this CPU's per-cpu list: allocated
    /// and freed under a `spinlock_t`, which keeps the task on this CPU and
    /// is a legal context for the masks `path=pcp` takes, on both flavors.
    fn warm_pcp(&self, def: &AllocatorDef, gfp: sys::Gfp, order: u32, n: usize) -> Result<WarmUp> {
        let mut pages = KVVec::<sys::Allocation>::with_capacity(n, GFP_KERNEL)?;
        let drained = &self.detector.pcpu_drained_total;
        let mut cpu = 0;
        let mut drained_before = drained.load(Relaxed);
        for _ in 0..WARM_ATTEMPTS {
            drained_before = drained.load(Relaxed);
            let guard = self.locks.spin.lock();
            for _ in 0..n {
                match (def.alloc)(gfp | sys::GFP_NOWARN, order) {
                    Some(p) => {
                        if let Err(p) = pages.push_within_capacity(p) {
                            drop(p);
                        }
                    }
                    None => break,
                }
            }
            // The pages go back to this CPU's list under the lock.
            while let Some(p) = pages.pop() {
                drop(p);
            }
            cpu = sys::current_cpu();
            drop(guard);
            // A free that found the list at its high mark drained it
            // (free_pcppages_bulk(), starting with the freed page's own
            // list): the section would refill under zone->lock. The drain
            // left room; warm up again.
            if drained.load(Relaxed) == drained_before {
                break;
            }
        }
        // The vector itself (perhaps vmalloc'ed, whose vfree() may sleep)
        // after the lock.
        drop(pages);
        // Counted from the last warm-up's start: a drain after it, the
        // vfree() above included, is seen by the caller.
        Ok(WarmUp {
            cpu,
            drains_seen: drained_before,
        })
    }
}
