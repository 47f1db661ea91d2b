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

/// Why a cell may not be (`AllocCell::new`): the message `run` logs.
pub(crate) enum Refusal {
    NotForNmi { ctx: usize, alloc: usize },
    Mask { alloc: usize, mask: usize },
    Order { alloc: usize, order: u32 },
    Path { alloc: usize, path: Path },
    PcpBlocking { mask: usize },
    SlowpathBlocking { mask: usize },
    PcpOrder { order: u32 },
    SlabPcpN { alloc: usize },
    SheafN { alloc: usize, path: Path },
    ZeroN,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Refusal::NotForNmi { ctx, alloc } => write!(
                f,
                "ctx={} runs only allocators callable from any context ({}), not {}",
                CONTEXTS[ctx].name, AnyContextNames, ALLOCATORS[alloc].name
            ),
            Refusal::Mask { alloc, mask } => write!(
                f,
                "{} does not take gfp={}",
                ALLOCATORS[alloc].name, MASKS[mask].name
            ),
            Refusal::Order { alloc, order } => {
                let def = &ALLOCATORS[alloc];
                let allowed = if def.max_order == def.default_order {
                    "only"
                } else {
                    "at most"
                };
                write!(
                    f,
                    "{} takes order {} {}, not {}",
                    def.name, def.max_order, allowed, order
                )
            }
            Refusal::Path { alloc, path } => write!(
                f,
                "{} takes no path={} (its paths: {})",
                ALLOCATORS[alloc].name,
                path.name(),
                PathNames(ALLOCATORS[alloc].paths)
            ),
            Refusal::PcpBlocking { mask } => write!(
                f,
                "path=pcp takes no mask with __GFP_DIRECT_RECLAIM (gfp={}): its warm-up allocates under a spinlock_t",
                MASKS[mask].name
            ),
            Refusal::SlowpathBlocking { mask } => write!(
                f,
                "path=slowpath takes no mask with __GFP_DIRECT_RECLAIM (gfp={}): with free memory drained it would enter direct reclaim",
                MASKS[mask].name
            ),
            Refusal::PcpOrder { order } => write!(
                f,
                "order {} is never served by the per-cpu lists (max {})",
                order,
                sys::PCP_MAX_ORDER
            ),
            Refusal::SlabPcpN { alloc } => write!(
                f,
                "{} with path=pcp takes n={} only: the warm-up's kfree() leaves one object in this CPU's sheaf",
                ALLOCATORS[alloc].name, SLAB_PCP_ITERATIONS
            ),
            Refusal::SheafN { alloc, path } => write!(
                f,
                "{} with path={} takes n up to {}: more would fill the sheaf and flush it",
                ALLOCATORS[alloc].name,
                path.name(),
                MAX_RCU_SHEAF_ITERATIONS
            ),
            Refusal::ZeroN => f.write_str("n=0 runs nothing"),
        }
    }
}

impl AllocCell {
    /// The one place that says what a cell may be: `run` builds every
    /// cell through it, and `cases` lists the cells it accepts with the
    /// defaults. `None` takes the allocator's default.
    pub(crate) fn new(
        (ctx, alloc, mask): (usize, usize, usize),
        order: Option<u32>,
        path: Option<Path>,
        n: Option<u32>,
    ) -> core::result::Result<Self, Refusal> {
        let def = &ALLOCATORS[alloc];
        let gfp = MASKS[mask].gfp;
        if CONTEXTS[ctx].body_in == ExecContext::Nmi && !def.any_context {
            return Err(Refusal::NotForNmi { ctx, alloc });
        }
        if !(def.accepts)(gfp) {
            return Err(Refusal::Mask { alloc, mask });
        }
        let order = order.unwrap_or(def.default_order);
        if order > def.max_order {
            return Err(Refusal::Order { alloc, order });
        }
        let path = path.unwrap_or(def.paths[0]);
        if !def.paths.contains(&path) {
            return Err(Refusal::Path { alloc, path });
        }
        // The warm-up allocates with the cell's mask under a spinlock_t: a
        // mask that may enter direct reclaim would sleep there for real.
        // Direct reclaim with memory drained would really sleep, in an
        // atomic section, and reclaim in vain.
        match path {
            Path::Pcp if sys::may_block(gfp) => return Err(Refusal::PcpBlocking { mask }),
            Path::Slowpath if sys::may_block(gfp) => {
                return Err(Refusal::SlowpathBlocking { mask })
            }
            Path::Pcp if order > sys::PCP_MAX_ORDER => return Err(Refusal::PcpOrder { order }),
            _ => {}
        }
        let sheaf = matches!(path, Path::Sheaf | Path::Barn | Path::NewSheaf);
        let n = match n {
            Some(n) if def.slab && path == Path::Pcp && n != SLAB_PCP_ITERATIONS => {
                return Err(Refusal::SlabPcpN { alloc })
            }
            Some(n) if def.rcu && sheaf && n > MAX_RCU_SHEAF_ITERATIONS => {
                return Err(Refusal::SheafN { alloc, path })
            }
            Some(0) => return Err(Refusal::ZeroN),
            Some(n) => n,
            None => default_iterations(def, path, order),
        };
        Ok(Self {
            ctx,
            alloc,
            mask,
            order,
            path,
            n,
        })
    }
}

/// A spec's keys, as given (`None`: not given).
#[derive(Default)]
struct Fields {
    ctx: Option<usize>,
    alloc: Option<usize>,
    mask: Option<usize>,
    order: Option<u32>,
    path: Option<Path>,
    n: Option<u32>,
    control: Option<usize>,
}

/// Logs why a spec was refused, and returns the error `run` gives.
fn refuse(what: fmt::Arguments<'_>) -> Error {
    pr_err!(
        "run: {}; nothing was run (the cases file lists valid specs)\n",
        what
    );
    EINVAL
}

/// Index of the entry of `names` that is `value`.
fn find(
    names: impl Iterator<Item = &'static str>,
    what: &str,
    (token, value): (&str, &str),
) -> Result<usize> {
    let mut names = names;
    names
        .position(|name| name == value)
        .ok_or_else(|| refuse(format_args!("unknown {} '{}' in '{}'", what, value, token)))
}

impl Fields {
    /// Sets the field of one `KEY=VALUE` token; refuses a key given twice.
    fn set(&mut self, token: &str) -> Result {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| refuse(format_args!("token '{}' is not key=value", token)))?;
        let number = |max: u32| match value.parse::<u32>() {
            Ok(v) if v <= max => Ok(v),
            _ => Err(refuse(format_args!(
                "'{}' needs a number up to {}",
                token, max
            ))),
        };
        let tv = (token, value);
        let taken = match key {
            "ctx" => self
                .ctx
                .replace(find(CONTEXTS.iter().map(|c| c.name), "context", tv)?)
                .is_some(),
            "alloc" => self
                .alloc
                .replace(find(ALLOCATORS.iter().map(|a| a.name), "allocator", tv)?)
                .is_some(),
            "gfp" => self
                .mask
                .replace(find(MASKS.iter().map(|m| m.name), "GFP mask", tv)?)
                .is_some(),
            "control" => self
                .control
                .replace(find(CONTROLS.iter().map(|c| c.name), "control", tv)?)
                .is_some(),
            "order" => self.order.replace(number(sys::MAX_ORDER)?).is_some(),
            "n" => self.n.replace(number(MAX_ITERATIONS)?).is_some(),
            "path" => {
                let path = Path::ALL
                    .into_iter()
                    .find(|p| p.name() == value)
                    .ok_or_else(|| {
                        refuse(format_args!(
                            "unknown path '{}': use one of {}",
                            value,
                            PathNames(&Path::ALL)
                        ))
                    })?;
                self.path.replace(path).is_some()
            }
            _ => return Err(refuse(format_args!("unknown key '{}' in '{}'", key, token))),
        };
        if taken {
            return Err(refuse(format_args!("key '{}' given twice", key)));
        }
        Ok(())
    }

    /// The cell these fields name.
    fn cell(self) -> Result<Cell> {
        if let Some(c) = self.control {
            let other = self.ctx.or(self.alloc).or(self.mask).is_some()
                || self.order.or(self.n).is_some()
                || self.path.is_some();
            if other {
                return Err(refuse(format_args!(
                    "control={} takes no other key",
                    CONTROLS[c].name
                )));
            }
            // A control whose context this kernel lacks (preempt_disable
            // without CONFIG_DEBUG_PREEMPT) must not run somewhere else.
            let ctx = context_index(CONTROLS[c].context).ok_or_else(|| {
                refuse(format_args!(
                    "control={} runs in {}, which this kernel lacks",
                    CONTROLS[c].name, CONTROLS[c].context
                ))
            })?;
            return Ok(Cell::Control { control: c, ctx });
        }
        let ctx = self
            .ctx
            .ok_or_else(|| refuse(format_args!("missing ctx=")))?;
        let alloc = self
            .alloc
            .ok_or_else(|| refuse(format_args!("missing alloc=")))?;
        let mask = self
            .mask
            .ok_or_else(|| refuse(format_args!("missing gfp=")))?;
        AllocCell::new((ctx, alloc, mask), self.order, self.path, self.n)
            .map(Cell::Alloc)
            .map_err(|why| refuse(format_args!("{}", why)))
    }
}

/// Parses a spec; on error, logs one `pr_err` naming the offending token.
pub(crate) fn parse_spec(input: &[u8]) -> Result<Spec> {
    let text =
        core::str::from_utf8(input).map_err(|_| refuse(format_args!("spec is not UTF-8 text")))?;
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !c.is_ascii_whitespace())
    {
        return Err(refuse(format_args!(
            "control character {:#x} in spec",
            c as u32
        )));
    }
    let mut tokens = text.split_ascii_whitespace().peekable();
    let first = tokens
        .peek()
        .copied()
        .ok_or_else(|| refuse(format_args!("empty spec")))?;
    if first == "all" {
        tokens.next();
        let selection = Selection::parse(tokens, refuse)?;
        return Ok(Spec::All(KBox::new(selection, GFP_KERNEL)?));
    }
    let mut fields = Fields::default();
    for token in tokens {
        fields.set(token)?;
    }
    Ok(Spec::One(fields.cell()?))
}

/// The `n` of a cell that gives none, and of the matrix's cells.
fn default_iterations(def: &AllocatorDef, path: Path, order: u32) -> u32 {
    match path {
        Path::KrcEmpty => DEFAULT_KRC_EMPTY_ITERATIONS,
        // The kfree_rcu() rows' other paths, theirs alone.
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
        for ctx in 0..CONTEXTS.len() {
            for (alloc, def) in ALLOCATORS.iter().enumerate() {
                if def.frees != frees {
                    continue;
                }
                for mask in 0..MASKS.len() {
                    if let Ok(cell) = AllocCell::new((ctx, alloc, mask), None, None, None) {
                        f(Cell::Alloc(cell))?;
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
