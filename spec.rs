// SPDX-License-Identifier: GPL-2.0

//! Specs: the grammar `run` takes and `cases` lists, and the order of
//! `run all`.

use crate::select::Selection;
use crate::sys::{self, ExecContext};
use crate::tables::{context_index, AllocatorDef, ALLOCATORS, CONTEXTS, CONTROLS, MASKS};
use core::fmt;
use kernel::prelude::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Allocate until the allocator provably went through `zone->lock`.
    ZoneLock,
    /// Warm this CPU's per-cpu list first, so the section is served from it.
    Pcp,
    /// Drain free memory to the min watermark first (every zone below its
    /// low watermark, kswapd asleep), so the section takes
    /// `__alloc_pages_slowpath()`: kswapd wakeups, allocation-failure
    /// warnings, reserves.
    Slowpath,
    /// Slab rows: allocate until the slab allocator took a page from the
    /// page allocator (`mm_page_alloc`): usually `kmalloc-64`'s new slab,
    /// after the per-cpu sheaves, the barn and the node's partial slabs ran
    /// out, or a new sheaf's `kmalloc-512` slab.
    NewSlab,
    /// `kfree_rcu()` rows: this CPU's `rcu_free` sheaf has room (one
    /// object freed to it before the section): no lock but the sheaves'
    /// `local_trylock()`.
    Sheaf,
    /// No `rcu_free` or spare sheaf, and an empty sheaf in the barn: the
    /// section's first free takes it under `barn->lock`.
    Barn,
    /// No `rcu_free` or spare sheaf and none empty in the barn: the
    /// section's first free allocates a sheaf (`alloc_empty_sheaf()`).
    NewSheaf,
    /// The bulk path of `kvfree_call_rcu()` (PREEMPT_RT): `krc.lock`, a
    /// page of pointers, or for the headless form a page allocated inline.
    Krc,
    /// The bulk path driven until its page cache ran empty: free until the
    /// headless form allocated a page inline (`mm_page_alloc`), or the
    /// two-argument form kicked the cache's refill (`hrtimer_start`).
    KrcEmpty,
}

impl Path {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Path::ZoneLock => "zone_lock",
            Path::Pcp => "pcp",
            Path::Slowpath => "slowpath",
            Path::NewSlab => "new_slab",
            Path::Sheaf => "sheaf",
            Path::Barn => "barn",
            Path::NewSheaf => "new_sheaf",
            Path::Krc => "krc",
            Path::KrcEmpty => "krc_empty",
        }
    }

    pub(crate) const ALL: [Path; 9] = [
        Path::ZoneLock,
        Path::Pcp,
        Path::Slowpath,
        Path::NewSlab,
        Path::Sheaf,
        Path::Barn,
        Path::NewSheaf,
        Path::Krc,
        Path::KrcEmpty,
    ];
}

/// Path names separated by commas, for messages.
struct PathNames(&'static [Path]);

impl fmt::Display for PathNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{}{}", sep, p.name())?;
        }
        Ok(())
    }
}

/// The allocators callable from any context, separated by commas.
struct AnyContextNames;

impl fmt::Display for AnyContextNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = ALLOCATORS.iter().filter(|a| a.any_context);
        for (i, a) in names.enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{}{}", sep, a.name)?;
        }
        Ok(())
    }
}

/// Most allocations (or frees) one cell makes: enough to drain a per-cpu
/// list, or to fill one past its high mark (which grows with frees, up to
/// `high_max`: 30248 pages in the test guest's 1 GiB zone).
pub(crate) const MAX_ITERATIONS: u32 = 65536;
/// Frees of a freeing cell, by default: past the test guest's `high_max`.
const DEFAULT_FREE_ITERATIONS: u32 = 32768;
const DEFAULT_ZONE_LOCK_ITERATIONS: u32 = 4096;
const DEFAULT_PCP_ITERATIONS: u32 = 16;
/// A slab row's `path=pcp` serves one object, the one its warm-up freed to
/// this CPU's sheaf; a second could come from the barn or a slab.
const SLAB_PCP_ITERATIONS: u32 = 1;
/// Objects a `path=new_slab` cell may take before the new slab: the
/// sheaves, the barn and the partial slabs of `kmalloc-64` first.
const DEFAULT_NEW_SLAB_ITERATIONS: u32 = 4096;
/// The slow path's first allocation is the answer; more may take reserves.
const DEFAULT_SLOWPATH_ITERATIONS: u32 = 1;
/// A `kfree_rcu()` cell frees one object: the path is its first free's.
const DEFAULT_RCU_ITERATIONS: u32 = 1;
/// Most frees a `path=krc_empty` cell makes: each page of pointers holds
/// 507 (`KVFREE_BULK_MAX_ENTR`), and the cache keeps up to 5
/// (`rcu_min_cached_objs`) besides the page in use, so the cache runs
/// empty within 3041 frees.
const DEFAULT_KRC_EMPTY_ITERATIONS: u32 = 8192;
/// Most a `kfree_rcu()` cell on a sheaf path frees: the sheaf its first
/// free found or made keeps room for the rest (no flush in the section).
#[cfg(have_slab_rows)]
const MAX_RCU_SHEAF_ITERATIONS: u32 = sys::rcu::SHEAF_CAPACITY / 2;
#[cfg(not(have_slab_rows))]
const MAX_RCU_SHEAF_ITERATIONS: u32 = 0;
/// Longest spec `run` accepts, in bytes.
pub(crate) const MAX_SPEC_LEN: usize = 256;

#[derive(Clone, Copy)]
pub(crate) struct AllocCell {
    pub(crate) ctx: usize,
    pub(crate) alloc: usize,
    pub(crate) mask: usize,
    pub(crate) order: u32,
    pub(crate) path: Path,
    pub(crate) n: u32,
}

#[derive(Clone, Copy)]
pub(crate) enum Cell {
    Alloc(AllocCell),
    /// A row of `CONTROLS`, and its context resolved in `CONTEXTS`.
    Control {
        control: usize,
        ctx: usize,
    },
}

impl Cell {
    /// Whether this is a cell of the default matrix (`run all`, `cases`):
    /// its allocator's first path, with the default order and `n`.
    pub(crate) fn in_matrix(&self) -> bool {
        match self {
            Cell::Alloc(a) => {
                let def = &ALLOCATORS[a.alloc];
                a.path == def.paths[0]
                    && a.order == def.default_order
                    && a.n == default_iterations(def, a.path, a.order)
            }
            Cell::Control { .. } => true,
        }
    }

    pub(crate) fn context(&self) -> usize {
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

/// For `pr_*!`, which format through the kernel's own `Display`.
impl kernel::fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

pub(crate) enum Spec {
    One(Cell),
    /// `all`, or `all` and a selection by name (boxed: a few hundred bytes).
    All(KBox<Selection>),
}

/// Parses a spec; on error, logs one `pr_err` naming the offending token.
pub(crate) fn parse_spec(input: &[u8]) -> Result<Spec> {
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
        return Ok(Spec::All(KBox::new(
            Selection::parse(tokens, bad)?,
            GFP_KERNEL,
        )?));
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
                .replace(
                    Path::ALL
                        .into_iter()
                        .find(|p| p.name() == value)
                        .ok_or_else(|| {
                            bad(format_args!(
                                "unknown path '{}': use one of {}",
                                value,
                                PathNames(&Path::ALL)
                            ))
                        })?,
                )
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
    if CONTEXTS[ctx].body_in == ExecContext::Nmi && !def.any_context {
        return Err(bad(format_args!(
            "ctx={} runs only allocators callable from any context ({}), not {}",
            CONTEXTS[ctx].name, AnyContextNames, def.name
        )));
    }
    if !(def.accepts)(MASKS[mask].gfp) {
        return Err(bad(format_args!(
            "{} does not take gfp={}",
            def.name, MASKS[mask].name
        )));
    }
    let order = match order {
        Some(o) if o > def.max_order => {
            let allowed = if def.max_order == def.default_order {
                "only"
            } else {
                "at most"
            };
            return Err(bad(format_args!(
                "{} takes order {} {}, not {}",
                def.name, def.max_order, allowed, o
            )));
        }
        Some(o) => o,
        None => def.default_order,
    };
    let path = path.unwrap_or(def.paths[0]);
    if !def.paths.contains(&path) {
        return Err(bad(format_args!(
            "{} takes no path={} (its paths: {})",
            def.name,
            path.name(),
            PathNames(def.paths)
        )));
    }
    // The warm-up allocates with the cell's mask under a spinlock_t: a mask
    // that may enter direct reclaim would sleep there for real.
    if path == Path::Pcp && sys::may_block(MASKS[mask].gfp) {
        return Err(bad(format_args!(
            "path=pcp takes no mask with __GFP_DIRECT_RECLAIM (gfp={}): its warm-up allocates under a spinlock_t",
            MASKS[mask].name
        )));
    }
    // Direct reclaim with memory drained would really sleep, in an atomic
    // section, and reclaim in vain.
    if path == Path::Slowpath && sys::may_block(MASKS[mask].gfp) {
        return Err(bad(format_args!(
            "path=slowpath takes no mask with __GFP_DIRECT_RECLAIM (gfp={}): with free memory drained it would enter direct reclaim",
            MASKS[mask].name
        )));
    }
    if path == Path::Pcp && order > sys::PCP_MAX_ORDER {
        return Err(bad(format_args!(
            "order {} is never served by the per-cpu lists (max {})",
            order,
            sys::PCP_MAX_ORDER
        )));
    }
    if def.slab && path == Path::Pcp && n.is_some_and(|n| n != SLAB_PCP_ITERATIONS) {
        return Err(bad(format_args!(
            "{} with path=pcp takes n={} only: the warm-up's kfree() leaves one object in this CPU's sheaf",
            def.name, SLAB_PCP_ITERATIONS
        )));
    }
    let bulk = matches!(path, Path::Krc | Path::KrcEmpty);
    if def.rcu && !bulk && n.is_some_and(|n| n > MAX_RCU_SHEAF_ITERATIONS) {
        return Err(bad(format_args!(
            "{} with path={} takes n up to {}: more would fill the sheaf and flush it",
            def.name,
            path.name(),
            MAX_RCU_SHEAF_ITERATIONS
        )));
    }
    let n = match n {
        Some(0) => return Err(bad(format_args!("n=0 runs nothing"))),
        Some(n) => n,
        None => default_iterations(def, path, order),
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

/// The `n` of a cell that gives none, and of the matrix's cells.
fn default_iterations(def: &AllocatorDef, path: Path, order: u32) -> u32 {
    match path {
        Path::KrcEmpty => DEFAULT_KRC_EMPTY_ITERATIONS,
        _ if def.rcu => DEFAULT_RCU_ITERATIONS,
        Path::Sheaf | Path::Barn | Path::NewSheaf | Path::Krc => DEFAULT_RCU_ITERATIONS,
        Path::Pcp if def.slab => SLAB_PCP_ITERATIONS,
        Path::Pcp => DEFAULT_PCP_ITERATIONS,
        Path::Slowpath => DEFAULT_SLOWPATH_ITERATIONS,
        Path::NewSlab => DEFAULT_NEW_SLAB_ITERATIONS,
        // One block above the per-cpu orders reaches zone->lock.
        Path::ZoneLock if def.frees && order > sys::PCP_MAX_ORDER => 1,
        // The same pages in blocks of the order.
        Path::ZoneLock if def.frees => DEFAULT_FREE_ITERATIONS >> order,
        Path::ZoneLock => DEFAULT_ZONE_LOCK_ITERATIONS,
    }
}

/// Every cell this kernel can run with default parameters, in `run all` order:
/// rows by increasing atomicity, allocations before frees, the controls
/// (which splat on purpose) last.
pub(crate) fn for_each_case(mut f: impl FnMut(Cell) -> Result) -> Result {
    // Freeing rows after every allocation row: they leave the per-cpu
    // lists full and their high marks raised, where the allocation rows
    // need to reach zone->lock within n allocations.
    for frees in [false, true] {
        for (ctx, context) in CONTEXTS.iter().enumerate() {
            for (alloc, def) in ALLOCATORS.iter().enumerate() {
                if def.frees != frees || (context.body_in == ExecContext::Nmi && !def.any_context) {
                    continue;
                }
                for (mask, m) in MASKS.iter().enumerate() {
                    if (def.accepts)(m.gfp) {
                        f(Cell::Alloc(AllocCell {
                            ctx,
                            alloc,
                            mask,
                            order: def.default_order,
                            path: def.paths[0],
                            n: default_iterations(def, def.paths[0], def.default_order),
                        }))?;
                    }
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
