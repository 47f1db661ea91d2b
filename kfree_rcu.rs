// SPDX-License-Identifier: GPL-2.0

//! The `kfree_rcu()` rows' cells: the private cache's sheaves set up for
//! the path the cell asks for, before its section, and the path the
//! section took, named from the kernel's events (the lock trace,
//! `kmalloc`, `mm_page_alloc`, `hrtimer_start`), never from the setup.
//!
//! The setups of the sheaf paths, from `__kfree_rcu_sheaf()`
//! (`mm/slub.c`, 7.2 and 7.3), each after `sys::rcu::reset()` (no
//! `rcu_free` or spare sheaf on any CPU, the barn empty), with the objects
//! allocated before the reset:
//!
//! - `new_sheaf`: nothing more. The section's first free finds no
//!   `rcu_free` sheaf, no empty spare and no empty sheaf in the barn
//!   (`barn_get_empty_sheaf()` returns before its lock), and allocates one
//!   (`alloc_empty_sheaf()`: a `kmalloc` event).
//! - `sheaf`: one free first (under a `spinlock_t`, which keeps the task
//!   on its CPU): a section on that CPU finds that `rcu_free` sheaf with
//!   room; one that migrated meanwhile says so (`migrated=1`) and runs
//!   again.
//! - `barn`: `(MAX_FULL_SHEAVES + 1) * capacity` frees, then
//!   `rcu_barrier()`: each filled `rcu_free` sheaf goes to `call_rcu()`,
//!   whose callback (`rcu_free_sheaf()`) puts the first ten into the barn
//!   full and, the barn holding `MAX_FULL_SHEAVES`, flushes the eleventh
//!   and puts it in empty. The section's first free finds no `rcu_free` or
//!   spare sheaf and takes the barn's empty one under `barn->lock`.
//! - `krc` (`kvfree_call_rcu()` on PREEMPT_RT): nothing; the bulk path's
//!   state (a page with room, a cached page, none) is the kernel's: a page
//!   allocated inline shows as `krc_page`, the refill kicked (the cache
//!   found empty by the two-argument form) as `krc_empty`.
//! - `krc_empty`: frees in the section until the page cache ran empty
//!   (each page holds 507 pointers, the cache up to 5 pages:
//!   `rcu_min_cached_objs`, which a boot parameter may raise).
//!   `kvfree_call_rcu()` then allocates a page inline for the headless form
//!   (`mm_page_alloc`: `krc_page`) and, for the two-argument form, queues
//!   the object on its `rcu_head` list and starts the refill's hrtimer
//!   (`run_page_cache_worker()`, `hrtimer_start`: `krc_empty`).
//!
//! A cache with slab debugging has no sheaves (`calculate_sheaf_capacity()`
//! returns 0): the first cell of a sheaf path learns from the kernel's
//! events whether a free allocates an `rcu_free` sheaf after `reset()`,
//! and without sheaves the sheaf paths answer `unsettled=no_sheaves`.
//!
//! The headless form, when it finds no page of pointers, allocates one
//! with `GFP_KERNEL` inside the section, and if that fails waits for a
//! grace period there (`synchronize_rcu()`): a real sleep in an atomic
//! section. Its cells run only where `memory_allows()` (runner.rs) finds
//! the headroom that keeps `GFP_KERNEL` off direct reclaim.

use crate::results::{CellResult, Outcome};
use crate::runner::State;
use crate::spec::{AllocCell, Cell, Path};
use crate::sys;
use crate::tables::{context_index, AllocatorDef, ALLOCATORS};
use kernel::{
    alloc::KVVec,
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

/// A sheaf path cell that took another path than the one set up (another
/// sheaf path, or the bulk path after the sheaves failed): not an answer
/// for its path; it runs again.
pub(crate) const PATH_NOT_REACHED: &str = "path_not_reached";
/// A sheaf path on a cache without sheaves (slab debugging): no answer.
const NO_SHEAVES: &str = "no_sheaves";

/// Whether the private cache has sheaves: `UNKNOWN` until a sheaf path's
/// first cell has looked (`State::cache_has_sheaves`).
static SHEAVES: Atomic<u32> = Atomic::new(UNKNOWN);
const UNKNOWN: u32 = 0;
const HAS_SHEAVES: u32 = 1;
const NO_SHEAVES_SEEN: u32 = 2;

/// The paths on which `__kfree_rcu_sheaf()` serves the free.
const SHEAF_PATHS: [Path; 3] = [Path::Sheaf, Path::Barn, Path::NewSheaf];

/// Lockdep's names of the maps that tell the paths apart (as the lock
/// trace records them, names of 7.2 and 7.3): the wait-type override
/// `__kfree_rcu_sheaf()` holds on !PREEMPT_RT, the per-cpu sheaves'
/// `local_trylock_t` (lockdep sees it only when the trylock succeeds), the
/// barn's `spinlock_t`, and the bulk path's `raw_spinlock_t`.
const SHEAF_OVERRIDE: &[u8] = b"kfree_rcu_sheaf_map";
const SHEAVES_LOCK: &[u8] = b"&pcs->lock";
const BARN_LOCK: &[u8] = b"&barn->lock";
const KRC_LOCK: &[u8] = b"krc.lock";

/// Whether lockdep's `name` is `map`'s: equal, or `map` with a prefix
/// lockdep adds (`(local_lock_t *)`) or a suffix (`-wait-type-override`).
fn names(name: &[u8], map: &[u8]) -> bool {
    name.windows(map.len()).any(|w| w == map)
}

/// Objects freed before the section, for `path`.
fn setup_frees(path: Path) -> usize {
    let capacity = sys::rcu::SHEAF_CAPACITY as usize;
    match path {
        Path::Sheaf => 1,
        Path::Barn => (sys::rcu::BARN_MAX_FULL_SHEAVES as usize + 1) * capacity,
        _ => 0,
    }
}

/// The path a section of `n` frees took, from what the kernel showed of
/// it (the lock trace, and the `kmalloc` and `hrtimer_start` events of its
/// context). Each free takes the sheaves' trylock once; a free that allocated a
/// sheaf takes it again after the allocation (`__kfree_rcu_sheaf()`), and
/// the allocation shows as a `kmalloc` event too, except through
/// `kmalloc_nolock()`, which has none.
fn path_taken(r: &CellResult, n: u32, (kmallocs, hrtimers): (u64, u64)) -> &'static str {
    // Without the lock trace nothing below is known: no absence proves
    // anything.
    if !r.traced {
        return "unseen";
    }
    let (locks, page_allocs) = (&r.locks, r.page_events);
    let takes = |map: &[u8]| -> u32 {
        let seen = locks.seen.iter().filter(|l| names(l.name.as_bytes(), map));
        seen.map(|l| l.count).sum()
    };
    if takes(KRC_LOCK) > 0 {
        // The page cache was empty: the headless form allocated a page
        // inline, the two-argument form kicked the refill's hrtimer
        // (run_page_cache_worker(); unless a refill was already running).
        if page_allocs > 0 {
            "krc_page"
        } else if hrtimers > 0 {
            "krc_empty"
        } else {
            "krc"
        }
    } else if kmallocs > 0 || takes(SHEAVES_LOCK) > n {
        "new_sheaf"
    } else if takes(BARN_LOCK) > 0 {
        "barn"
    } else if takes(SHEAVES_LOCK) > 0 {
        "sheaf"
    } else if takes(SHEAF_OVERRIDE) > 0 || locks.seen.is_empty() {
        // No sheaf took it: the sheaves' trylock refused (on PREEMPT_RT in
        // hard irq and NMI before lockdep sees it), and
        // kfree_call_rcu_nolock() deferred the object (defer_kfree_rcu()).
        "deferred"
    } else {
        "unseen"
    }
}

/// Takes `n` objects of the private cache into `objects`, in process
/// context (`GFP_KERNEL`, failing rather than calling the OOM killer).
fn take(objects: &mut KVVec<sys::Allocation>, n: usize) -> Result {
    objects.reserve(n, GFP_KERNEL)?;
    while objects.len() < n {
        let gfp = sys::GFP_KERNEL | sys::GFP_NOWARN | sys::GFP_NORETRY;
        let object = sys::rcu::alloc(gfp, 0).ok_or(ENOMEM)?;
        objects.push_within_capacity(object).map_err(|_| ENOMEM)?;
    }
    Ok(())
}

/// The call a setup frees with: the row's own, or `kfree_rcu()` for the
/// headless form (whose `might_sleep()` would report under the setup's
/// lock); the same sheaves take both.
fn setup_free(def: &AllocatorDef) -> fn(sys::Allocation) {
    if def.might_sleep {
        sys::rcu::kfree_rcu
    } else {
        def.free
    }
}

impl State {
    /// Whether the private cache has sheaves, learnt once: after `reset()`,
    /// one free in process context must allocate an `rcu_free` sheaf
    /// (`path_taken()` names it `new_sheaf`). `None` where the kernel shows
    /// nothing (no lock trace).
    fn cache_has_sheaves(&self, cell: AllocCell) -> Result<Option<bool>> {
        match SHEAVES.load(Relaxed) {
            HAS_SHEAVES => return Ok(Some(true)),
            NO_SHEAVES_SEEN => return Ok(Some(false)),
            _ => {}
        }
        let Some(process) = context_index("process") else {
            return Ok(None);
        };
        let mut object = KVVec::new();
        take(&mut object, 1)?;
        sys::rcu::reset();
        let free = setup_free(&ALLOCATORS[cell.alloc]);
        // Observed as a cell is, never recorded as one.
        let mut r = CellResult::new(Cell::Alloc(cell), Outcome::Ran);
        self.observe_section(&mut r, process, &mut || {
            if let Some(o) = object.pop() {
                free(o);
            }
        });
        let kmallocs = self.detector.kmallocs.load(Relaxed);
        r.page_events = self.detector.page_allocs.load(Relaxed);
        self.end_observation(&mut r);
        if !r.traced {
            return Ok(None);
        }
        let has = path_taken(&r, 1, (kmallocs, 0)) == "new_sheaf";
        SHEAVES.store(if has { HAS_SHEAVES } else { NO_SHEAVES_SEEN }, Relaxed);
        if !has {
            pr_warn!("the kfree_rcu() rows' cache has no sheaves (slab debugging?): their sheaf paths answer unsettled=no_sheaves\n");
        }
        Ok(Some(has))
    }

    /// Frees `setup` before the section: under the module's `spinlock_t`
    /// (a legal context for every row's free, which keeps the task on its
    /// CPU), with `setup_free()`. Returns that CPU.
    fn set_up(&self, def: &AllocatorDef, path: Path, setup: &mut KVVec<sys::Allocation>) -> u32 {
        let free = setup_free(def);
        let guard = self.locks.spin.lock();
        while let Some(object) = setup.pop() {
            free(object);
        }
        let cpu = sys::current_cpu();
        drop(guard);
        if path == Path::Barn {
            // The filled sheaves' callbacks fill the barn.
            sys::rcu::rcu_barrier();
        }
        cpu
    }

    /// A `kfree_rcu()` cell: `n` objects allocated, the sheaves set up for
    /// the path, the objects handed to RCU one by one inside the section.
    pub(crate) fn rcu_section(
        &self,
        cell: AllocCell,
        objects: &mut KVVec<sys::Allocation>,
    ) -> Result<CellResult> {
        let def = &ALLOCATORS[cell.alloc];
        if SHEAF_PATHS.contains(&cell.path) && self.cache_has_sheaves(cell)? == Some(false) {
            let mut r = CellResult::new(Cell::Alloc(cell), Outcome::Ran);
            r.unsettled = Some(NO_SHEAVES);
            return Ok(r);
        }
        let mut setup = KVVec::new();
        take(&mut setup, setup_frees(cell.path))?;
        take(objects, cell.n as usize)?;
        // The bulk path does not look at the sheaves: no reset (an RCU grace
        // period and a flush on every CPU) for it.
        if SHEAF_PATHS.contains(&cell.path) {
            sys::rcu::reset();
        }
        let setup_cpu = self.set_up(def, cell.path, &mut setup);
        let mut r = CellResult::new(Cell::Alloc(cell), Outcome::Ran);
        r.allocated = objects.len() as u32;
        r.calls_might_sleep = def.might_sleep;
        let mut freed = 0u32;
        let mut freed_on = setup_cpu;
        let detector = &self.detector;
        // path=krc_empty frees until the page cache was found empty.
        let emptied =
            || detector.page_allocs.load(Relaxed) > 0 || detector.hrtimer_starts.load(Relaxed) > 0;
        self.observe_section(&mut r, cell.ctx, &mut || {
            freed_on = sys::current_cpu();
            while let Some(object) = objects.pop() {
                (def.free)(object);
                freed += 1;
                if cell.path == Path::KrcEmpty && emptied() {
                    break;
                }
            }
        });
        let events = (
            detector.kmallocs.load(Relaxed),
            detector.hrtimer_starts.load(Relaxed),
        );
        r.page_events = detector.page_allocs.load(Relaxed);
        self.end_observation(&mut r);
        // What the section did not free, freed as allocated (kmem_cache_free()).
        objects.clear();
        r.iterations = freed;
        r.path = path_taken(&r, freed, events);
        // The sheaf set up is this CPU's only; the barn is the node's.
        r.migrated = cell.path == Path::Sheaf && freed_on != setup_cpu;
        // Another sheaf path, or the bulk path the sheaves fell back to: the
        // setup did not hold. A free the context defers (`deferred`) is the
        // kernel's answer there, and judged.
        let missed = ["sheaf", "barn", "new_sheaf", "krc", "krc_page", "krc_empty"];
        if SHEAF_PATHS.contains(&cell.path)
            && r.path != cell.path.name()
            && missed.contains(&r.path)
        {
            r.unsettled = r.unsettled.or(Some(PATH_NOT_REACHED));
        }
        // The cache never ran empty within n (a refill already running, or
        // backing off, starts no timer): run again. Each form has its own
        // sign: the headless form's inline page, the other's refill timer.
        let emptied_sign = if def.might_sleep {
            "krc_page"
        } else {
            "krc_empty"
        };
        if cell.path == Path::KrcEmpty && r.traced && r.path != emptied_sign {
            r.unsettled = r.unsettled.or(Some(PATH_NOT_REACHED));
        }
        Ok(r)
    }
}
