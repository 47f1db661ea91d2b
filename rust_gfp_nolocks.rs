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
//! `mm_page_alloc_zone_locked` and `mm_page_alloc_extfrag` tracepoints),
//! and reports the path it took.
//!
//! Spec grammar written to `run` (one cell, or `all` and a selection):
//!
//! ```text
//! ctx=CONTEXT alloc=ALLOCATOR gfp=MASK [order=N] [path=zone_lock|pcp|slowpath|new_slab] [n=N]
//! control=CONTROL
//! all [KEY=VALUE[,VALUE...]]...
//! ```
//!
//! `cases` lists every cell this kernel can run in that grammar; `results`
//! has one `key=value` line per cell run (see the README for the keys).
//!
//! One file per concern:
//!
//! - `tables`: the contexts, masks, allocators and controls, one line each;
//! - `spec`, `select`: the grammar of a cell, `cases`, selections by name;
//! - `runner`: running cells, one at a time, in their contexts;
//! - `sections`: the page and slab rows' sections and the paths they took;
//! - `results`: a cell's result, its results line, the counters;
//! - `kfree_rcu`: the `kfree_rcu()` rows' setups and paths;
//! - `mm`: whether memory allows a cell, and the slow path's state;
//! - `detector`: the kernel's reports and events, through tracepoints;
//! - `probes`: the tracepoint probes, declared one line each;
//! - `locktrace`: every lock a cell takes, judged by the kernel's rules;
//! - `inside`: each context seen from inside;
//! - `debugfs`, `text`: the files, and fixed-size text for probes;
//! - `sys`: the FFI corner (its own files, one concern each).

/// A module parameter's value, by copy: `value()` returns one where the
/// kernel crate has `value_ref()` beside it (detected by `Kbuild`), and a
/// reference before.
macro_rules! param {
    ($name:ident) => {{
        #[cfg(have_param_value_copy)]
        let value = module_parameters::$name.value();
        #[cfg(not(have_param_value_copy))]
        let value = *module_parameters::$name.value();
        value
    }};
}

mod debugfs;
mod detector;
mod inside;
mod kfree_rcu;
mod locktrace;
mod mm;
mod probes;
mod results;
mod runner;
mod sections;
mod select;
mod spec;
mod sys;
mod tables;
mod text;

use kernel::{debugfs::Scope, prelude::*, sync::atomic::Relaxed};
use runner::State;
use spec::Cell;

module! {
    type: GfpNoLocks,
    name: "rust_gfp_nolocks",
    authors: ["rust_gfp_nolocks developers"],
    description: "Which GFP masks are legal in which atomic contexts, with the kernel's reports per cell",
    license: "GPL",
    // 0/1 rather than bool, which kernel crates before 7.3 cannot parse.
    params: {
        autorun: u32 {
            default: 0,
            description: "1: run every cell at load time and log a summary (a selection by name: write 'all KEY=VALUE...' to run)",
        },
        controls: u32 {
            default: 1,
            description: "Autorun: 1 (default) to also run the control cells, 0 not to",
        },
        sleep_check_wait: u32 {
            default: 1,
            description: "1 (default): each cell waits until the kernel's once-per-second sleep check may print again, so its report is seen; 0: no wait (faster; the module's derived verdicts still answer)",
        },
    },
}

struct GfpNoLocks {
    // Field order is teardown order: probes go before the state they point
    // to, and the `kfree_rcu()` rows' cache after every cell's objects.
    _probes: KVec<sys::Probe>,
    state: Pin<KBox<Scope<State>>>,
    #[cfg(have_slab_rows)]
    _rcu_cache: sys::rcu::Cache,
}

impl kernel::Module for GfpNoLocks {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        #[cfg(have_slab_rows)]
        let rcu_cache = sys::rcu::Cache::new()?;
        let state = KBox::pin_init(
            Scope::dir(State::new()?, c"rust_gfp_nolocks", debugfs::populate),
            GFP_KERNEL,
        )?;
        let probes = Self::attach_probes(&state)?;
        state
            .wait_sleep_check
            .store(param!(sleep_check_wait) != 0, Relaxed);
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
        state.record_inside()?;
        // Only now may `run` start a cell: every probe is attached.
        state.ready.store(true, Relaxed);
        let module = Self {
            _probes: probes,
            state,
            #[cfg(have_slab_rows)]
            _rcu_cache: rcu_cache,
        };
        if param!(autorun) != 0 {
            module.autorun()?;
        }
        Ok(module)
    }
}

impl GfpNoLocks {
    /// Attaches the load-time probes (`probes::LOAD_PROBES`), and learns
    /// whether the kernel has the ones runs attach (`probes::RUN_PROBES`:
    /// lockdep's exist with `CONFIG_LOCKDEP` only): without them the module
    /// runs and its results have no lock trace.
    fn attach_probes(state: &State) -> Result<KVec<sys::Probe>> {
        // SAFETY: `state` outlives the probes (field order in `GfpNoLocks`).
        let probes = unsafe { probes::attach(probes::LOAD_PROBES, &state.detector, true) }?;
        // SAFETY: The probes are dropped at once, while `state` lives.
        match unsafe { probes::attach(probes::RUN_PROBES, &state.detector, false) } {
            Ok(_) => state.lock_trace.store(true, Relaxed),
            Err(_) => pr_warn!("no lock_acquire/lock_release tracepoints (the kernel needs CONFIG_LOCKDEP), or no kmalloc/hrtimer_start: results have no lock trace, no verdicts from it and no kfree_rcu() paths\n"),
        }
        Ok(probes)
    }

    /// Runs every cell (and the controls unless `controls=0`); a refused
    /// cell is recorded as such and the run goes on. Module parameters are
    /// numbers, so a selection by name goes through `run` instead
    /// (`all ctx=raw_spin_lock alloc=kmalloc`): no bit positions, which
    /// would shift with the rows a kernel's configuration has.
    fn autorun(&self) -> Result {
        let with_controls = param!(controls) != 0;
        let serialized = self.state.run_lock.lock();
        let first = self.state.results.lock().len();
        self.state.with_lock_probes(|| {
            self.state.run_all(|cell| match cell {
                Cell::Alloc(_) => true,
                Cell::Control { .. } => with_controls,
            })
        })?;
        drop(serialized);
        self.state.summary(first);
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
