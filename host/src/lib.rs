// SPDX-License-Identifier: GPL-2.0

//! Host side of rust_gfp_nolocks: reads the `# RESULT` lines the guests
//! print (one per cell run, in the module's `results` format), merges the
//! boots of one flavor, and renders the answer: JSON for other tools, a
//! compact table per flavor in the spirit of `lib/locking-selftest.c`, the
//! differences between flavors, a timing summary and an SVG heatmap.

pub mod contexts;
pub mod derived;
pub mod locks;
pub mod select;

use locks::LockSeen;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    pub min: u64,
    pub median: u64,
    pub max: u64,
}

/// One cell as observed, in the JSON shape of `results/*.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The spec that runs this cell again (`echo SPEC > run`).
    pub spec: String,
    /// `alloc` or `control`.
    pub kind: String,
    pub context: String,
    /// The allocator, or for a control the control's name.
    pub allocator: String,
    /// The GFP mask, `-` for a control.
    pub gfp: String,
    /// The mask's column head, as the module's table names it
    /// (`gfp_short=`); the mask itself in older outputs.
    #[serde(default)]
    pub gfp_short: String,
    /// The allocator's column head, the call as the module's table names
    /// it (`title=`, `-` for a control); empty in older outputs.
    #[serde(default)]
    pub title: String,
    pub order: u32,
    /// The path the spec asked for: `zone_lock`, `pcp`, `slowpath`,
    /// `new_slab`, or `none` (controls).
    pub requested_path: String,
    /// The path the allocations took: `zone_lock`, `pcp`, `slowpath`,
    /// `none`, `unseen` (an order above the per-cpu orders with no
    /// buddy-list event); for slab rows `new_slab` (the slab allocator took
    /// a page), `slab_freed` (it gave one back) or `pcp` (neither).
    pub path: String,
    /// A cell of the default matrix (the module says so; older outputs:
    /// the zone_lock path, then the only matrix path).
    #[serde(default)]
    pub matrix: bool,
    /// A slab row: `allocated` counts objects, not pages.
    #[serde(default)]
    pub slab: bool,
    /// `ran`, or why the module refused to run the cell
    /// (`refused_low_memory`).
    #[serde(default = "ran")]
    pub outcome: String,
    pub iterations: u64,
    pub allocated: u64,
    pub failed: u64,
    /// Whether lockdep was armed when the cell started: if not, the cell
    /// was not checked by lockdep.
    pub lockdep_armed: bool,
    /// A `path=pcp` cell whose task left the CPU whose list it filled.
    #[serde(default)]
    pub migrated: bool,
    /// Why the module found this run does not answer the cell (`-` if it
    /// does): `path=slowpath` without its state, or a spent allocation
    /// failure warning. Absent from older outputs.
    #[serde(default = "settled_marker")]
    pub unsettled: String,
    /// "page allocation failure" warnings the cell printed.
    #[serde(default)]
    pub alloc_warnings: u64,
    /// The lock behind the cell's first report: lockdep's class name,
    /// `rtlock` or `might_sleep`; `-` without a report (or in older outputs).
    #[serde(default = "settled_marker")]
    pub lock: String,
    /// Where it was taken: a function, or FILE:LINE for `might_sleep`.
    #[serde(default = "settled_marker")]
    pub lock_at: String,
    /// kswapd wakeups during the cell (each takes a `spinlock_t`).
    #[serde(default)]
    pub kswapd_wakeups: u64,
    pub reports: BTreeMap<String, u64>,
    /// The module's report kinds and their table symbols, in its order
    /// (`kinds=` on each results line): the one source of both.
    #[serde(default)]
    pub kinds: Vec<(String, char)>,
    pub alloc_ns: Stats,
    /// Duration of the first allocation that took `zone->lock` (0: none did).
    #[serde(default)]
    pub zone_locked_alloc_ns: u64,
    pub section_ns: u64,
    /// The module traced the section's locks (lockdep's `lock_acquire`):
    /// the results carry the trace's keys, and the sleep check's state. False
    /// in older outputs and on kernels without lockdep.
    #[serde(default)]
    pub lock_trace: bool,
    /// The trace is whole (no acquisition dropped, every lock released):
    /// `derived`, `derived_lock` and `locks` answer the cell even with
    /// lockdep off. A trace that is not whole answers nothing (the
    /// kernel's reports still do).
    #[serde(default)]
    pub trace_whole: bool,
    /// The module's own verdicts, per report kind it derives
    /// (`invalid_wait_context`, `sleeping_in_atomic`): from the locks it saw
    /// and the context's state, by the kernel's rules. Kept apart from
    /// `reports`, which the kernel printed.
    #[serde(default)]
    pub derived: BTreeMap<String, u64>,
    /// The first derived verdict: a lock class, or `might_sleep`.
    #[serde(default = "settled_marker")]
    pub derived_lock: String,
    #[serde(default = "settled_marker")]
    pub derived_at: String,
    /// What the cell's first sleep report checked, whatever report came
    /// before it: `might_sleep`, `rtlock`, or `-` (none, or older outputs).
    #[serde(default = "settled_marker")]
    pub sleep_report: String,
    /// `__might_resched()` could print when the cell began (its
    /// once-per-second limit had expired): a missing sleep report is
    /// absent, not swallowed.
    #[serde(default)]
    pub sleep_check_open: bool,
    /// Every lock the section took, in order.
    #[serde(default)]
    pub locks: Vec<LockSeen>,
    /// Outcomes the kernel's state decides between (a cache's or a list's:
    /// expectations.txt's `|`, from the judge's `# STATE` line); empty
    /// where the kernel's source allows one answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_decides: Vec<String>,
    /// Every answer of such a cell seen in the run (`Cell::outcome`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

/// A lock site as a reader knows it: lockdep prints a Rust function of
/// the module by its v0-mangled symbol (`_RNv...`, a few hundred bytes for
/// a closure); the module's own sites (`derived_at`) read `rust_gfp_nolocks`.
fn site_name(site: &str) -> String {
    if site.starts_with("_R") {
        "rust_gfp_nolocks".to_string()
    } else {
        site.to_string()
    }
}

/// The `key=value` fields of one results line.
struct Fields<'a> {
    line: &'a str,
    kv: BTreeMap<&'a str, &'a str>,
}

impl<'a> Fields<'a> {
    fn parse(line: &'a str) -> Result<Self, String> {
        let line = line.trim().trim_start_matches("# RESULT ").trim();
        let mut kv = BTreeMap::new();
        for token in line.split_ascii_whitespace() {
            let (k, v) = token
                .split_once('=')
                .ok_or_else(|| format!("token '{token}' is not key=value in: {line}"))?;
            kv.insert(k, v);
        }
        Ok(Self { line, kv })
    }

    fn get(&self, k: &str) -> Result<&'a str, String> {
        self.kv
            .get(k)
            .copied()
            .ok_or_else(|| format!("missing {k}= in: {}", self.line))
    }

    fn num(&self, k: &str) -> Result<u64, String> {
        self.get(k)?
            .parse::<u64>()
            .map_err(|_| format!("{k}= is not a number in: {}", self.line))
    }

    /// A number older outputs may lack.
    fn num_or(&self, k: &str, default: u64) -> Result<u64, String> {
        match self.kv.get(k) {
            Some(_) => self.num(k),
            None => Ok(default),
        }
    }

    /// The module's report kinds and symbols (`kinds=NAME:SYMBOL,...`).
    fn kinds(&self) -> Result<Vec<(String, char)>, String> {
        let list = self
            .get("kinds")
            .map_err(|e| format!("{e} (a module older than this tool names no report kinds)"))?;
        list.split(',')
            .map(|pair| {
                let (name, symbol) = pair.split_once(':').unwrap_or((pair, ""));
                let mut chars = symbol.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if !name.is_empty() => Ok((name.to_string(), c)),
                    _ => Err(format!(
                        "kinds= entry '{pair}' is not NAME:SYMBOL in: {}",
                        self.line
                    )),
                }
            })
            .collect()
    }

    /// A name, `-` where the line has none.
    fn or_dash(&self, k: &str) -> String {
        self.kv.get(k).copied().unwrap_or("-").to_string()
    }

    /// What names the cell: its spec, allocator (a control's name), mask,
    /// order and the path it asked for.
    fn identity(&self, kind: &str) -> Result<(String, String, String, u32, String), String> {
        match kind {
            "alloc" => Ok((
                format!(
                    "ctx={} alloc={} gfp={} order={} path={} n={}",
                    self.get("ctx")?,
                    self.get("alloc")?,
                    self.get("gfp")?,
                    self.get("order")?,
                    self.get("path")?,
                    self.get("n")?
                ),
                self.get("alloc")?.to_string(),
                self.get("gfp")?.to_string(),
                self.num("order")? as u32,
                self.get("path")?.to_string(),
            )),
            "control" => Ok((
                format!("control={}", self.get("control")?),
                self.get("control")?.to_string(),
                "-".to_string(),
                0,
                "none".to_string(),
            )),
            other => Err(format!("unknown kind={other} in: {}", self.line)),
        }
    }
}

fn ran() -> String {
    "ran".to_string()
}

impl Cell {
    /// Parses one line of the module's `results` file (with or without the
    /// guest's `# RESULT ` prefix).
    pub fn parse(line: &str) -> Result<Cell, String> {
        let f = Fields::parse(line)?;
        let kind = f.get("kind")?.to_string();
        let kinds = f.kinds()?;
        let mut reports = BTreeMap::new();
        for (k, _) in &kinds {
            reports.insert(k.clone(), f.num(k)?);
        }
        let (spec, allocator, gfp, order, requested_path) = f.identity(&kind)?;
        let traced = f.kv.contains_key("locks");
        Ok(Cell {
            matrix: match f.kv.get("matrix") {
                Some(_) => f.num("matrix")? == 1,
                None => requested_path == "zone_lock",
            },
            spec,
            kind,
            context: f.get("context")?.to_string(),
            gfp_short: f.kv.get("gfp_short").copied().unwrap_or("").to_string(),
            title: f.kv.get("title").copied().unwrap_or("").to_string(),
            allocator,
            gfp,
            order,
            requested_path,
            path: f.get("observed_path")?.to_string(),
            slab: f.num_or("slab", 0)? == 1,
            outcome: f.get("outcome")?.to_string(),
            iterations: f.num("iterations")?,
            allocated: f.num("allocated")?,
            failed: f.num("failed")?,
            lockdep_armed: f.num("lockdep_before")? == 1,
            migrated: f.num("migrated")? == 1,
            unsettled: f.or_dash("unsettled"),
            alloc_warnings: f.num_or("alloc_warnings", 0)?,
            lock: f.or_dash("lock"),
            lock_at: site_name(&f.or_dash("lock_at")),
            kswapd_wakeups: f.num("kswapd_wakeups")?,
            reports,
            alloc_ns: Stats {
                min: f.num("alloc_ns_min")?,
                median: f.num("alloc_ns_median")?,
                max: f.num("alloc_ns_max")?,
            },
            zone_locked_alloc_ns: f.num("zone_locked_alloc_ns")?,
            section_ns: f.num("section_ns")?,
            lock_trace: traced,
            trace_whole: traced
                && f.kv.get("locks_held_after").is_none_or(|v| *v == "0")
                && f.kv.get("locks_dropped").is_none_or(|v| *v == "0"),
            derived: kinds
                .iter()
                .filter(|(k, _)| f.kv.contains_key(format!("derived_{k}").as_str()))
                .map(|(k, _)| Ok((k.clone(), f.num(&format!("derived_{k}"))?)))
                .collect::<Result<_, String>>()?,
            kinds,
            derived_lock: f.or_dash("derived_lock"),
            sleep_report: f.or_dash("sleep_report"),
            derived_at: f.or_dash("derived_at"),
            sleep_check_open: f.kv.get("sleep_check_open") == Some(&"1"),
            locks: match f.kv.get("locks") {
                Some(v) => locks::parse(v).map_err(|e| format!("{e} in: {}", f.line))?,
                None => Vec::new(),
            },
            state_decides: Vec::new(),
            seen: Vec::new(),
        })
    }

    /// One observation's answer: its symbol (in capitals: a derived `w` is
    /// the answer of a printed `W`), the lock behind its first report, and
    /// the path it took where that is not the one it asked for.
    pub fn outcome(&self) -> String {
        let mut s = self.symbol().to_ascii_uppercase();
        let lock = if self.answered_by_trace() && self.lock == "-" {
            &self.derived_lock
        } else {
            &self.lock
        };
        if lock != "-" {
            s = format!("{s} {lock}");
        }
        if self.kind == "alloc" && self.path != self.requested_path {
            s = format!("{s} observed_path={}", self.path);
        }
        s
    }

    /// Whether this observation answers the cell: lockdep was armed, and
    /// a `path=pcp` cell stayed on its per-cpu list without waking kswapd
    /// (otherwise the guest ran it again instead of judging it).
    pub fn settled(&self) -> bool {
        (self.lockdep_armed || self.answered_by_trace())
            && self.unsettled == "-"
            && !self.migrated
            && !(self.requested_path == "pcp" && self.kswapd_wakeups > 0)
    }

    fn report(&self, kind: &str) -> u64 {
        self.reports.get(kind).copied().unwrap_or(0)
    }

    /// The module's verdicts of `kind` (0 for kinds it does not derive).
    pub fn derived(&self, kind: &str) -> u64 {
        self.derived.get(kind).copied().unwrap_or(0)
    }

    /// Whether the kernel could print every report itself: lockdep was
    /// armed and the sleep check's once-per-second limit had expired (older
    /// outputs, without a lock trace, waited for it). Then its reports are
    /// the answer, rather than the lock trace standing in for them.
    /// A whole lock trace answers for the cell.
    pub fn answered_by_trace(&self) -> bool {
        self.lock_trace && self.trace_whole
    }

    pub fn kernel_answer(&self) -> bool {
        self.lockdep_armed && self.unsettled == "-" && (!self.lock_trace || self.sleep_check_open)
    }

    /// The allocator's column head: the module's title for it, with the
    /// cell's order where that is not 0 (`__get_free_pages(order 4)`); the
    /// allocator's name in older outputs, which have no title.
    pub fn heading(&self) -> String {
        let title = if self.title.is_empty() {
            &self.allocator
        } else {
            &self.title
        };
        match (self.order, title.strip_suffix("()")) {
            (0, _) => title.to_string(),
            (order, Some(call)) => format!("{call}(order {order})"),
            (order, None) => format!("{title} order {order}"),
        }
    }

    /// The legend symbol: `.` clean, `W` invalid wait context, `S` sleeping
    /// in atomic, `A` scheduling while atomic, `L` other lockdep report,
    /// `!` warning, `F` every allocation failed, `R` refused (not run); `w`
    /// and `s` for an invalid wait context or a sleep the kernel did not
    /// print (lockdep off, or the sleep check's rate limit) but the module
    /// derived from the locks it saw; and a trailing `?` when the cell is
    /// unanswered (lockdep off and no lock trace, or an unsettled run).
    pub fn symbol(&self) -> String {
        if self.outcome != "ran" {
            return "R".to_string();
        }
        let mut s = String::new();
        if self.kind == "alloc" && self.allocated == 0 && self.failed > 0 {
            s.push('F');
        }
        for (kind, sym) in &self.kinds {
            if self.report(kind) > 0 {
                s.push(*sym);
            } else if self.answered_by_trace() && self.derived(kind) > 0 {
                s.push(sym.to_ascii_lowercase());
            }
        }
        if !self.settled() {
            s.push('?');
        } else if s.is_empty() {
            s.push('.');
        }
        if !self.state_decides.is_empty() {
            s.push('~');
        }
        s
    }
}

/// `unsettled` of a run that answers its cell.
fn settled_marker() -> String {
    "-".to_string()
}

/// All `# RESULT` lines of one boot's guest output, in order.
pub fn parse_boot(output: &str) -> Result<Vec<Cell>, String> {
    let mut cells: Vec<Cell> = output
        .lines()
        .filter(|l| l.starts_with("# RESULT "))
        .map(Cell::parse)
        .collect::<Result<_, _>>()?;
    // The judge's word that the kernel's state decides the cell.
    let states = output.lines().filter_map(|l| l.strip_prefix("# STATE "));
    for (spec, alternatives) in states.filter_map(|l| l.split_once('\t')) {
        for c in cells.iter_mut().filter(|c| c.spec == spec) {
            c.state_decides = alternatives.split('|').map(str::to_string).collect();
        }
    }
    Ok(cells)
}

/// Merges boots in order: each cell keeps its first observation with
/// lockdep armed (and for `path=pcp` the pure per-cpu path), or else its
/// first answered by the lock trace, or else its last (then marked not
/// checked). Cells keep the order in which they were first seen.
pub fn merge(boots: &[Vec<Cell>]) -> Vec<Cell> {
    let mut merged: Vec<Cell> = Vec::new();
    // Per spec: what the judge said the kernel's state decides, and every
    // answer seen (an output and its judged copy hold the same one).
    let mut decides: BTreeMap<&str, &Vec<String>> = BTreeMap::new();
    let mut seen: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for cell in boots.iter().flatten() {
        if !cell.state_decides.is_empty() {
            decides.insert(&cell.spec, &cell.state_decides);
        }
        let answers = seen.entry(&cell.spec).or_default();
        let answer = Cell {
            state_decides: Vec::new(),
            ..cell.clone()
        }
        .outcome();
        if cell.settled() && !answers.contains(&answer) {
            answers.push(answer);
        }
        // An answer lockdep gave armed beats one the lock trace derived,
        // which beats none.
        let rank = |c: &Cell| u8::from(c.settled()) + u8::from(c.kernel_answer());
        match merged.iter_mut().find(|c| c.spec == cell.spec) {
            None => merged.push(cell.clone()),
            Some(kept) if rank(kept) < rank(cell) => *kept = cell.clone(),
            Some(_) => {}
        }
    }
    for c in &mut merged {
        if let Some(alternatives) = decides.get(c.spec.as_str()) {
            c.state_decides = alternatives.to_vec();
            c.seen = seen.remove(c.spec.as_str()).unwrap_or_default();
        }
    }
    merged
}

/// One flavor's merged results, the shape of `results/<kernel>-<flavor>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub kernel: String,
    pub flavor: String,
    pub config: BTreeMap<String, bool>,
    pub boots: u32,
    /// Cells run from a restored VM state instead of a boot.
    #[serde(default)]
    pub restores: u32,
    pub cells: Vec<Cell>,
    /// Each context seen from inside (absent from older outputs).
    #[serde(default)]
    pub contexts: Vec<contexts::ContextSeen>,
}

/// Kernel options the report records, read from the build's `.config`.
pub const CONFIG_KEYS: [&str; 8] = [
    "PREEMPT_RT",
    "PREEMPT",
    "PROVE_LOCKING",
    "PROVE_RAW_LOCK_NESTING",
    "DEBUG_ATOMIC_SLEEP",
    "DEBUG_PREEMPT",
    "PREEMPT_RCU",
    "TRACEPOINTS",
];

/// Reads `CONFIG_KEYS` from the text of a `.config`.
pub fn config_flags(dot_config: &str) -> BTreeMap<String, bool> {
    CONFIG_KEYS
        .iter()
        .map(|k| {
            let set = dot_config.lines().any(|l| l == format!("CONFIG_{k}=y"));
            (k.to_string(), set)
        })
        .collect()
}

impl Report {
    /// The cells of the default matrix (each allocator's first path), as a table:
    /// contexts as rows, (allocator, gfp) pairs as columns.
    fn grid(&self) -> (Vec<&str>, Vec<(&str, &str)>) {
        let mut rows: Vec<&str> = Vec::new();
        let mut cols: Vec<(&str, &str)> = Vec::new();
        for c in self.cells.iter().filter(|c| c.kind == "alloc" && c.matrix) {
            if !rows.contains(&c.context.as_str()) {
                rows.push(&c.context);
            }
            let col = (c.allocator.as_str(), c.gfp.as_str());
            if !cols.contains(&col) {
                cols.push(col);
            }
        }
        // Each allocator's masks together, in the order of the cells
        // (the module's, see `sort_by_cases`).
        let allocators: Vec<&str> = cols.iter().fold(Vec::new(), |mut v, c| {
            if !v.contains(&c.0) {
                v.push(c.0);
            }
            v
        });
        cols.sort_by_key(|c| {
            (
                allocators.iter().position(|a| *a == c.0),
                self.mask_rank(c.0, c.1),
            )
        });
        (rows, cols)
    }

    fn cell(&self, ctx: &str, alloc: &str, gfp: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| {
            c.kind == "alloc"
                && c.matrix
                && c.context == ctx
                && c.allocator == alloc
                && c.gfp == gfp
        })
    }

    /// A mask's place under its allocator in the module's table: where
    /// the pair first comes in the cells (the module's `run all` order,
    /// see `sort_by_cases`: masks in table order under each allocator).
    fn mask_rank(&self, alloc: &str, gfp: &str) -> usize {
        // The matrix's cells first: other cells' cases (a spec file's) may
        // come earlier, in another order.
        let pair = |c: &Cell| c.allocator == alloc && c.gfp == gfp;
        let in_matrix = self
            .cells
            .iter()
            .filter(|c| c.kind == "alloc" && c.matrix)
            .position(pair);
        let anywhere = || self.cells.iter().position(pair);
        in_matrix
            .or_else(|| anywhere().map(|i| i + self.cells.len()))
            .unwrap_or(usize::MAX)
    }

    /// A mask's column head, as the module's table names it.
    fn short_gfp<'a>(&'a self, gfp: &'a str) -> &'a str {
        self.cells
            .iter()
            .find(|c| c.gfp == gfp && !c.gfp_short.is_empty())
            .map_or(gfp, |c| c.gfp_short.as_str())
    }

    /// An allocator's column head (`Cell::heading`), from its first
    /// matrix cell with a title (an older boot's cells have none).
    fn alloc_heading(&self, alloc: &str) -> String {
        let of_alloc = |c: &&Cell| c.kind == "alloc" && c.matrix && c.allocator == alloc;
        self.cells
            .iter()
            .filter(of_alloc)
            .find(|c| !c.title.is_empty())
            .or_else(|| self.cells.iter().find(of_alloc))
            .map_or(alloc.to_string(), Cell::heading)
    }

    /// The allocator groups of a grid's columns: column head and column
    /// count.
    fn column_groups(&self, cols: &[(&str, &str)]) -> Vec<(String, usize)> {
        let mut groups = Vec::new();
        let mut j = 0;
        while j < cols.len() {
            let span = cols[j..].iter().take_while(|c| c.0 == cols[j].0).count();
            groups.push((self.alloc_heading(cols[j].0), span));
            j += span;
        }
        groups
    }

    fn title(&self) -> String {
        let on = |k: &str| self.config.get(k).copied().unwrap_or(false);
        format!(
            "{} {} ({}{}), {} boot{}",
            self.flavor,
            self.kernel,
            if on("PREEMPT_RT") {
                "PREEMPT_RT"
            } else {
                "PREEMPT"
            },
            if on("PROVE_RAW_LOCK_NESTING") {
                ", PROVE_RAW_LOCK_NESTING"
            } else {
                ""
            },
            self.boots,
            if self.boots == 1 { "" } else { "s" }
        ) + &match self.restores {
            0 => String::new(),
            1 => ", 1 restore".to_string(),
            n => format!(", {n} restores"),
        }
    }

    /// A cell's symbol in the text table, `-` where there is no cell.
    fn text_symbol(&self, row: &str, alloc: &str, gfp: &str) -> String {
        self.cell(row, alloc, gfp)
            .map_or("-".to_string(), Cell::symbol)
    }

    /// The text table's column widths: each column fits its mask and its
    /// cells' symbols, and an allocator's columns together its head.
    fn text_widths(&self, rows: &[&str], cols: &[(&str, &str)]) -> Vec<usize> {
        let mut widths = Vec::new();
        for (name, span) in self.column_groups(cols) {
            let share = (name.len() + 1).div_ceil(span);
            for (alloc, gfp) in &cols[widths.len()..widths.len() + span] {
                let widest = rows
                    .iter()
                    .map(|r| self.text_symbol(r, alloc, gfp).len())
                    .chain([self.short_gfp(gfp).len()])
                    .max()
                    .unwrap_or(0);
                widths.push(TEXT_CELL_W.max(share).max(widest + 1));
            }
        }
        widths
    }

    /// The compact text table of one flavor.
    pub fn table(&self) -> String {
        let (rows, cols) = self.grid();
        let label = rows.iter().map(|r| r.len()).max().unwrap_or(8).max(8) + 2;
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.title());
        // Each allocator's head spans its columns.
        let widths = self.text_widths(&rows, &cols);
        let mut line = " ".repeat(label);
        let mut first = 0;
        for (name, span) in self.column_groups(&cols) {
            let w = widths[first..first + span].iter().sum();
            let _ = write!(line, "{:<w$}", format!("|{name}"));
            first += span;
        }
        let _ = writeln!(out, "{}", line.trim_end());
        let mut line = format!("{:<label$}", "");
        for ((_, gfp), width) in cols.iter().zip(&widths) {
            let _ = write!(line, "{:<width$}", format!("|{}", self.short_gfp(gfp)));
        }
        let _ = writeln!(out, "{}", line.trim_end());
        for row in &rows {
            let mut line = format!("{row:<label$}");
            for ((alloc, gfp), width) in cols.iter().zip(&widths) {
                let sym = self.text_symbol(row, alloc, gfp);
                let _ = write!(line, "{:<width$}", format!("|{sym}"));
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let controls: Vec<String> = self
            .cells
            .iter()
            .filter(|c| c.kind == "control")
            .map(|c| format!("{} {}", c.allocator, c.symbol()))
            .collect();
        if !controls.is_empty() {
            let _ = writeln!(out, "controls: {}", controls.join(", "));
        }
        let slow: Vec<String> = self
            .slow_path()
            .iter()
            .map(|(label, symbol)| format!("{label} {symbol}"))
            .collect();
        if !slow.is_empty() {
            let _ = writeln!(
                out,
                "slow path (memory drained to the min watermark, kswapd asleep; k: kswapd woken):\n  {}",
                slow.join(", ")
            );
        }
        out
    }

    /// The slow path cells (`path=slowpath`), in table order: a label
    /// `context/allocator:mask` and the cell's symbol, with `k` for a
    /// kswapd wakeup.
    pub fn slow_path(&self) -> Vec<(String, String)> {
        let (rows, _) = self.grid();
        let mut cells: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| c.kind == "alloc" && c.requested_path == "slowpath")
            .collect();
        cells.sort_by_key(|c| {
            (
                rows.iter().position(|r| *r == c.context),
                self.mask_rank(&c.allocator, &c.gfp),
            )
        });
        cells
            .iter()
            .map(|c| {
                let kswapd = if c.kswapd_wakeups > 0 { "k" } else { "" };
                (
                    format!("{}/{}:{}", c.context, c.heading(), self.short_gfp(&c.gfp)),
                    format!("{}{kswapd}", c.symbol()),
                )
            })
            .collect()
    }

    /// Cells the merge could not observe settled.
    pub fn unchecked(&self) -> Vec<&Cell> {
        self.cells.iter().filter(|c| !c.settled()).collect()
    }

    /// Timing summary: an order-0 allocation served from the per-cpu list
    /// (pcp cells), and the allocation that refilled it under `zone->lock`
    /// (zone_lock cells without reports, whose printing would be counted).
    pub fn timing(&self) -> String {
        // Page allocations only: slab rows time objects, freeing rows
        // time nothing.
        let order0 =
            |c: &&Cell| c.kind == "alloc" && c.order == 0 && !c.slab && c.alloc_ns.median > 0;
        let clean = |c: &&Cell| c.reports.values().all(|&n| n == 0);
        let pcp: Vec<&Cell> = self
            .cells
            .iter()
            .filter(order0)
            .filter(|c| c.path == "pcp")
            .collect();
        let refill: Vec<&Cell> = self
            .cells
            .iter()
            .filter(order0)
            .filter(clean)
            .filter(|c| c.path == "zone_lock" && c.zone_locked_alloc_ns > 0)
            .collect();
        let mut out = String::new();
        self.timing_line(
            &mut out,
            "from the per-cpu list",
            "cells' medians",
            &pcp,
            |c| c.alloc_ns.median,
        );
        self.timing_line(
            &mut out,
            "that refilled the list under zone->lock",
            "clean cells",
            &refill,
            |c| c.zone_locked_alloc_ns,
        );
        out
    }

    /// One line of `timing`: the median of `ns` over `cells`, and the median
    /// of their atomic sections; nothing when there are no such cells.
    fn timing_line(
        &self,
        out: &mut String,
        what: &str,
        over: &str,
        cells: &[&Cell],
        ns: fn(&Cell) -> u64,
    ) {
        if cells.is_empty() {
            return;
        }
        let mut values: Vec<u64> = cells.iter().map(|c| ns(c)).collect();
        // The process row has no atomic section: its section time is not one.
        let mut section: Vec<u64> = cells
            .iter()
            .filter(|c| c.context != "process")
            .map(|c| c.section_ns)
            .collect();
        let _ = writeln!(
            out,
            "{}: order-0 allocation {what}: {} ns (median of {} {over}); their atomic sections (process row excluded): {} ns",
            self.flavor,
            median(&mut values),
            cells.len(),
            median(&mut section)
        );
    }
}

fn median(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// What each lock behind a report is: lockdep class names, and the two
/// kinds a sleep report gives.
const LOCKS: &[(&str, &str)] = &[
    ("&zone->lock", "the zone's buddy-list lock, a spinlock_t: rmqueue_bulk() or rmqueue_buddy() when the per-cpu list cannot serve, free_pcppages_bulk() when a free fills it past its high mark, or show_free_areas() in warn_alloc()'s show_mem() after a failure without __GFP_NOWARN"),
    ("&barn->lock", "a node's barn of spare slab sheaves, a spinlock_t: barn_replace_empty_sheaf() or barn_get_empty_sheaf() when this CPU's sheaves are empty (kmalloc()) or full (kfree())"),
    ("&n->list_lock", "a slab cache node's partial-slab list lock, a spinlock_t: refill_objects() or ___slab_alloc() when no sheaf can serve, __slab_free() when a slab turns full to partial or empty"),
    ("&pcp->lock", "the per-cpu list lock, a spinlock_t (taken with a trylock, which lockdep does not check)"),
    ("&pgdat->kswapd_wait", "kswapd's wait queue lock, a spinlock_t: wakeup_kswapd() for a mask with __GFP_KSWAPD_RECLAIM once the fast path failed"),
    ("fs_reclaim", "might_alloc()'s lockdep map of reclaim, for a mask with __GFP_DIRECT_RECLAIM: in hard irq, or a served softirq on !PREEMPT_RT, an inconsistent lock state"),
    ("rtlock", "a spinlock_t, a sleeping lock on PREEMPT_RT (no lockdep class in the report: the function that took it tells which)"),
    ("might_sleep", "no lock: a might_sleep() check, here might_alloc() for a mask with __GFP_DIRECT_RECLAIM"),
    ("rust_gfp_nolocks_spin", "the module's own spinlock_t, which the control spin_lock_under_raw_spin_lock takes"),
];

/// Functions that take an rtlock in these cells, and which lock it is.
const RTLOCK_SITES: &[(&str, &str)] = &[
    ("__rmqueue_pcplist", "zone->lock"),
    ("rmqueue_bulk", "zone->lock"),
    ("rmqueue_buddy", "zone->lock"),
    (
        "get_page_from_freelist",
        "zone->lock (rmqueue_buddy(), inlined)",
    ),
    ("__show_mem", "zone->lock (show_free_areas(), inlined)"),
    ("show_free_areas", "zone->lock"),
    ("free_pcppages_bulk", "zone->lock"),
    (
        "free_frozen_page_commit",
        "zone->lock (free_pcppages_bulk(), inlined)",
    ),
    ("free_one_page", "zone->lock"),
    ("refill_objects", "a slab node's list_lock (or barn->lock)"),
    ("___slab_alloc", "a slab node's list_lock"),
    ("__slab_free", "a slab node's list_lock"),
    ("barn_replace_empty_sheaf", "a slab barn's lock"),
    ("barn_get_empty_sheaf", "a slab barn's lock"),
    (
        "__wake_up_common_lock",
        "a wait queue's lock: kswapd's when the cell woke kswapd",
    ),
];

/// The locks behind the reports of one flavor: each lock, what it is, and
/// the settled cells whose first report it caused; with `cells`, every
/// such cell with the function that took the lock.
pub fn explain(report: &Report, cells: bool) -> String {
    let mut out = String::new();
    let mut locks: Vec<&str> = Vec::new();
    for c in report.cells.iter().filter(|c| c.settled() && c.lock != "-") {
        if !locks.contains(&c.lock.as_str()) {
            locks.push(&c.lock);
        }
    }
    let _ = writeln!(
        out,
        "locks behind the first report of each cell, {} {}:",
        report.flavor, report.kernel
    );
    for lock in locks {
        let with: Vec<&Cell> = report
            .cells
            .iter()
            .filter(|c| c.settled() && c.lock == lock)
            .collect();
        let what = LOCKS
            .iter()
            .find(|(l, _)| *l == lock)
            .map_or("(not one this tool knows)", |(_, w)| w);
        let _ = writeln!(out, "  {lock}: {} cells; {what}", with.len());
        let mut sites: Vec<&str> = Vec::new();
        for c in &with {
            if !sites.contains(&c.lock_at.as_str()) {
                sites.push(&c.lock_at);
            }
        }
        for site in sites {
            let n = with.iter().filter(|c| c.lock_at == site).count();
            let which = RTLOCK_SITES
                .iter()
                .find(|(f, _)| lock == "rtlock" && *f == site)
                .map_or(String::new(), |(_, l)| format!(": {l}"));
            let _ = writeln!(out, "    at {site}{which}: {n} cells");
        }
        if cells {
            for c in &with {
                let _ = writeln!(out, "    {} {} at {}", c.spec, c.symbol(), c.lock_at);
            }
        }
    }
    out.push_str(&derived::describe(&report.cells, cells));
    out.push_str(&state_decided(report));
    out
}

/// The cells whose answer the kernel's state decides: what the source
/// allows (expectations.txt) and what this run saw.
fn state_decided(report: &Report) -> String {
    let cells: Vec<&Cell> = report
        .cells
        .iter()
        .filter(|c| !c.state_decides.is_empty())
        .collect();
    if cells.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "cells the kernel's state decides (a cache's or a list's; marked ~), {} {}: the outcomes the source allows, and those seen in this run\n",
        report.flavor, report.kernel
    );
    for c in cells {
        let _ = writeln!(
            out,
            "  {}: allows {}; seen {}",
            c.spec,
            c.state_decides.join(" | "),
            c.seen.join(" | ")
        );
    }
    out
}

/// The legend of `Cell::symbol` for `reports`: the report kinds and the
/// masks' short names as their results lines name them.
pub fn legend(reports: &[Report]) -> String {
    let cells = || reports.iter().flat_map(|r| &r.cells);
    let mut kinds: Vec<&(String, char)> = Vec::new();
    for k in cells().flat_map(|c| &c.kinds) {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let symbol = |name: &str, default: char| {
        kinds
            .iter()
            .find(|(n, _)| n == name)
            .map_or(default, |(_, sym)| *sym)
    };
    // The two kinds the module also derives from a cell's locks.
    let (w, s) = (
        symbol("invalid_wait_context", 'W'),
        symbol("sleeping_in_atomic", 'S'),
    );
    let (lw, ls) = (w.to_ascii_lowercase(), s.to_ascii_lowercase());
    let kinds: String = kinds
        .iter()
        .map(|(name, sym)| format!("  {sym} {}", name.replace('_', " ")))
        .collect();
    // The table's short names that are not their mask without its
    // GFP_ or __GFP_ prefix.
    let mut shorts: Vec<String> = Vec::new();
    for c in cells().filter(|c| c.kind == "alloc" && c.matrix && !c.gfp_short.is_empty()) {
        let plain = c.gfp.trim_start_matches("__").trim_start_matches("GFP_");
        let named = format!("{} = {}", c.gfp_short, c.gfp);
        if c.gfp_short != plain && !shorts.contains(&named) {
            shorts.push(named);
        }
    }
    let shorts = if shorts.is_empty() {
        String::new()
    } else {
        format!("; {}", shorts.join(", "))
    };
    format!(
        "legend: . clean{kinds}  F allocation failed  R refused (memory too short)  ? not checked by lockdep\n\
{lw} {ls}: invalid wait context / sleeping in atomic the kernel did not print (lockdep off, or the sleep check's once-a-second limit) but the module derived from the locks the cell took, by the kernel's rules\n\
~ the kernel's state (a slab cache's sheaves and slabs, kfree_rcu()'s page cache) decides between outcomes the source allows: explain lists them, and those seen\n\
- not a cell: the call is not legal in that context (NMI runs only the calls made for any context, the *_nolock() ones)\n\
{w} on a !PREEMPT_RT kernel is lockdep's PROVE_RAW_LOCK_NESTING check: that lock would sleep on PREEMPT_RT (legal here)\n\
columns: masks under each allocator, named without GFP_ or __GFP_{shorts}; rows: the atomic context\n{LEGEND_READING}"
    )
}

/// The legend's note on what sets equal columns apart.
const LEGEND_READING: &str = "equal columns are not equal masks: each page cell is driven to zone->lock (slab: to a new slab; frees: kfree() of one\n\
object, free_page() until the per-cpu list drains) with ample memory; the slow path\n\
line (memory drained to the min watermark) is where kswapd wakeups, warnings and reserves set NOWAIT, ATOMIC, 0 and NOWARN apart";

/// Cells whose symbol differs between two flavors, one line each.
pub fn diff(a: &Report, b: &Report) -> Vec<String> {
    // Two flavors of one kernel are named by flavor, one flavor of two
    // kernels by kernel.
    let (la, lb) = if a.flavor == b.flavor {
        (a.kernel.as_str(), b.kernel.as_str())
    } else {
        (a.flavor.as_str(), b.flavor.as_str())
    };
    let mut out = Vec::new();
    for ca in &a.cells {
        let Some(cb) = b.cells.iter().find(|c| c.spec == ca.spec) else {
            out.push(format!("{}: only on {}", ca.spec, la));
            continue;
        };
        // The lock behind the first report counts where both name one
        // (outputs before the field name none).
        // Not where the kernel's state picks the lock (cells marked ~).
        let state_decides = !ca.state_decides.is_empty() || !cb.state_decides.is_empty();
        let lock_differs = ca.lock != "-" && cb.lock != "-" && ca.lock != cb.lock && !state_decides;
        // The answer, whichever evidence gave it (a derived `w` is the
        // answer of a printed `W`); `~` says the kernel's state decides.
        let answer_of = |c: &Cell| c.symbol().replace('~', "").to_ascii_uppercase();
        if answer_of(ca) != answer_of(cb) || lock_differs {
            let path = if ca.matrix {
                String::new()
            } else {
                format!(" path={}", ca.requested_path)
            };
            let answer = |c: &Cell| {
                if lock_differs {
                    format!("{} ({})", c.symbol(), c.lock)
                } else {
                    c.symbol()
                }
            };
            out.push(format!(
                "{} {} {}{path}: {} {}, {} {}",
                ca.context,
                ca.allocator,
                ca.gfp,
                la,
                answer(ca),
                lb,
                answer(cb)
            ));
        }
    }
    for cb in b
        .cells
        .iter()
        .filter(|cb| !a.cells.iter().any(|ca| ca.spec == cb.spec))
    {
        out.push(format!("{}: only on {}", cb.spec, lb));
    }
    out
}

/// The specs a guest announced it must answer (`# CASE SPEC` lines).
pub fn parse_cases(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("# CASE "))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Puts `cells` in the order of the cases they answer (the guests' `# CASE`
/// lines: the module's `run all` order, contexts by increasing atomicity,
/// allocations before frees); cells no case names keep their order, last.
/// The tables read their rows and columns in this order.
pub fn sort_by_cases(cells: &mut [Cell], cases: &[String]) {
    cells.sort_by_key(|c| {
        cases
            .iter()
            .position(|case| answers(c, case))
            .unwrap_or(usize::MAX)
    });
}

/// Whether `cell` answers `case`: every `key=value` of the case (a spec,
/// perhaps without its defaults) is in the cell's spec.
fn answers(cell: &Cell, case: &str) -> bool {
    let tokens: Vec<&str> = cell.spec.split_ascii_whitespace().collect();
    case.split_ascii_whitespace().all(|t| tokens.contains(&t))
}

/// Every case has a settled answer among `cells`: returns the cases that
/// have none (missing, or observed only unsettled), each with why.
pub fn unanswered(cases: &[String], cells: &[Cell]) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for case in cases {
        if seen.contains(&case.as_str()) {
            continue;
        }
        seen.push(case);
        let found: Vec<&Cell> = cells.iter().filter(|c| answers(c, case)).collect();
        if found.is_empty() {
            out.push(format!("{case}: no result"));
        } else if !found.iter().any(|c| c.settled()) {
            out.push(format!(
                "{case}: never observed settled (lockdep armed, pure path)"
            ));
        }
    }
    out
}

/// Compares the answers of two runs of the same cells (say, from fresh
/// boots and from restores of a saved state): for each cell of `a`, the
/// report kinds (its symbol) and the path taken must be the same in `b`.
/// Returns one line per cell, and whether all agreed.
pub fn same_answers(a: &[Cell], b: &[Cell]) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut all = true;
    for cb in b.iter().filter(|cb| !a.iter().any(|ca| ca.spec == cb.spec)) {
        all = false;
        lines.push(format!(
            "missing {}: nothing against {}",
            cb.spec,
            cb.symbol()
        ));
    }
    for ca in a {
        // The answer, whichever evidence gave it: a lock-derived `w` is the
        // same answer as lockdep's `W`.
        let answer = |c: &Cell| {
            let symbol = c.symbol().replace('~', "").to_ascii_uppercase();
            format!("{symbol} {}", c.path)
        };
        match b.iter().find(|cb| cb.spec == ca.spec) {
            Some(cb) if answer(ca) == answer(cb) && ca.settled() && cb.settled() => {
                lines.push(format!("same {}: {}", ca.spec, answer(ca)));
            }
            // Each run's answer is one the judge found among those the
            // kernel's state decides between.
            Some(cb)
                if !ca.state_decides.is_empty()
                    && !cb.state_decides.is_empty()
                    && ca.settled()
                    && cb.settled() =>
            {
                lines.push(format!(
                    "same {}: {} and {}, both outcomes the kernel's state decides between",
                    ca.spec,
                    answer(ca),
                    answer(cb)
                ));
            }
            Some(cb) => {
                all = false;
                lines.push(format!(
                    "differs {}: {} against {}",
                    ca.spec,
                    answer(ca),
                    answer(cb)
                ));
            }
            None => {
                all = false;
                lines.push(format!(
                    "missing {}: {} against nothing",
                    ca.spec,
                    answer(ca)
                ));
            }
        }
    }
    if a.is_empty() {
        all = false;
    }
    (lines, all)
}

/// Fill colour of a symbol in the heatmap.
fn colour(sym: &str) -> &'static str {
    let s = sym.trim_end_matches('?');
    match () {
        _ if s.is_empty() => "#d9d9d9",
        _ if s == "." => "#a6d96a",
        _ if s.contains('W') && s.contains('S') => "#a50026",
        _ if s.contains('W') => "#d73027",
        _ if s.contains('L') || s.contains('!') => "#f46d43",
        _ if s.contains('S') || s.contains('A') => "#fdae61",
        _ if s.contains('F') => "#74add1",
        _ => "#ffffbf",
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Width of one column of the text table, a mask's short name and `|`.
const TEXT_CELL_W: usize = 7;

/// Width of one character of the SVG's 11 px monospace font, rounded up.
const SVG_CHAR_W: usize = 7;

/// Whether a name fits flat over `span` columns of `cell` pixels.
fn fits_flat(name: &str, span: usize, cell: usize) -> bool {
    name.chars().count() * SVG_CHAR_W + 4 <= span * cell
}

/// How far a name drawn at -60 degrees reaches up (sin 60 = 0.87).
fn slanted_height(name: &str) -> usize {
    name.chars().count() * SVG_CHAR_W * 87 / 100 + 12
}

/// A self-contained SVG heatmap of the flavors side by side.
pub fn svg(reports: &[Report]) -> String {
    let panels: Vec<_> = reports.iter().map(|r| (r, r.grid())).collect();
    let layout = SvgLayout::of(&panels, &legend(reports));
    let (width, height) = (layout.width, layout.height);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let mut x0 = 0;
    for (report, (rows, cols)) in &panels {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#,
            x0 + 10,
            xml_escape(&report.title())
        );
        svg_column_heads(&mut out, report, (x0, layout.top), cols);
        svg_grid(&mut out, report, (rows, cols), x0, layout.top);
        svg_slow_path(&mut out, report, x0, layout.slow_top);
        x0 += layout.panel_w(cols.len());
    }
    for (i, line) in legend(reports).lines().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}">{}</text>"#,
            height - layout.legend_h + 12 + i * 16,
            xml_escape(line)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Side of a cell, width of the row labels, height of a slow path line.
const SVG_CELL: usize = 34;
const SVG_LABEL: usize = 170;
const SVG_SLOW_LINE: usize = 16;

/// Where the SVG's parts go.
struct SvgLayout {
    /// Room above the grid for allocator names drawn slanted.
    slanted_h: usize,
    top: usize,
    slow_top: usize,
    legend_h: usize,
    width: usize,
    height: usize,
}

type Panel<'a> = (&'a Report, (Vec<&'a str>, Vec<(&'a str, &'a str)>));

impl SvgLayout {
    fn of(panels: &[Panel<'_>], legend: &str) -> Self {
        // Room above the grid for the allocator names drawn slanted (those
        // wider than their group of columns).
        let slanted_h = panels
            .iter()
            .flat_map(|(report, (_, cols))| report.column_groups(cols))
            .filter(|(name, span)| !fits_flat(name, *span, SVG_CELL))
            .map(|(name, _)| slanted_height(&name))
            .max()
            .unwrap_or(0);
        let top: usize = 130.max(96 + slanted_h);
        let mut layout = Self {
            slanted_h,
            top,
            slow_top: 0,
            legend_h: legend.lines().count() * 16 + 10,
            width: 0,
            height: 0,
        };
        // The legend's longest line, drawn in full.
        let legend_w = legend
            .lines()
            .map(|l| l.chars().count() * SVG_CHAR_W + 20)
            .max()
            .unwrap_or(0);
        let panels_w: usize = panels
            .iter()
            .map(|(_, (_, cols))| layout.panel_w(cols.len()))
            .sum();
        layout.width = panels_w.max(legend_w).max(400);
        let rows_max = panels
            .iter()
            .map(|(_, (rows, _))| rows.len())
            .max()
            .unwrap_or(0);
        // Under each grid, the slow path cells, one line each.
        let slow_max = panels
            .iter()
            .map(|(r, _)| r.slow_path().len())
            .max()
            .unwrap_or(0);
        layout.slow_top = top + rows_max * SVG_CELL + 24;
        let slow_h = if slow_max > 0 {
            (slow_max + 1) * SVG_SLOW_LINE + 10
        } else {
            0
        };
        layout.height = layout.slow_top + slow_h + layout.legend_h;
        layout
    }

    fn panel_w(&self, cols: usize) -> usize {
        SVG_LABEL + cols * SVG_CELL + 30 + self.slanted_h / 2
    }
}

/// Allocator names over their group of columns (slanted where the group
/// is too narrow for them), mask names under them.
fn svg_column_heads(
    out: &mut String,
    report: &Report,
    (x0, top): (usize, usize),
    cols: &[(&str, &str)],
) {
    let mut j = 0;
    for (name, span) in report.column_groups(cols) {
        let (x1, x2) = (
            x0 + SVG_LABEL + j * SVG_CELL,
            x0 + SVG_LABEL + (j + span) * SVG_CELL,
        );
        let label = xml_escape(&name);
        let (xm, y) = ((x1 + x2) / 2, top - 72);
        if fits_flat(&name, span, SVG_CELL) {
            let _ = write!(
                out,
                r#"<text x="{xm}" y="{y}" text-anchor="middle">{label}</text>"#
            );
        } else {
            let _ = write!(
                out,
                r#"<text transform="translate({},{y}) rotate(-60)">{label}</text>"#,
                xm - 4
            );
        }
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            x1 + 2,
            top - 66,
            x2 - 2,
            top - 66
        );
        j += span;
    }
    for (j, (_, gfp)) in cols.iter().enumerate() {
        let x = x0 + SVG_LABEL + j * SVG_CELL + SVG_CELL / 2;
        let _ = writeln!(
            out,
            r#"<text transform="translate({x},{}) rotate(-60)">{}</text>"#,
            top - 6,
            xml_escape(report.short_gfp(gfp))
        );
    }
}

/// One panel's grid: a row label, then a coloured cell per column.
fn svg_grid(
    out: &mut String,
    report: &Report,
    (rows, cols): (&[&str], &[(&str, &str)]),
    x0: usize,
    top: usize,
) {
    for (i, row) in rows.iter().enumerate() {
        let y = top + i * SVG_CELL;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            x0 + 10,
            y + SVG_CELL / 2 + 4,
            xml_escape(row)
        );
        for (j, (alloc, gfp)) in cols.iter().enumerate() {
            let x = x0 + SVG_LABEL + j * SVG_CELL;
            let sym = report
                .cell(row, alloc, gfp)
                .map_or(String::new(), Cell::symbol);
            let _ = writeln!(
                out,
                r##"<rect x="{x}" y="{y}" width="{}" height="{}" fill="{}" stroke="#ffffff"><title>{} / {} / {}: {}</title></rect>"##,
                SVG_CELL,
                SVG_CELL,
                colour(&sym),
                xml_escape(row),
                xml_escape(alloc),
                xml_escape(gfp),
                xml_escape(&sym)
            );
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                x + SVG_CELL / 2,
                y + SVG_CELL / 2 + 4,
                xml_escape(&sym)
            );
        }
    }
}

/// Under a panel's grid, its slow path cells, one line each.
fn svg_slow_path(out: &mut String, report: &Report, x0: usize, slow_top: usize) {
    let slow = report.slow_path();
    if !slow.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-weight="bold">slow path (memory drained to the min watermark; k: kswapd woken)</text>"#,
            x0 + 10,
            slow_top + 10
        );
    }
    for (i, (label, sym)) in slow.iter().enumerate() {
        let y = slow_top + (i + 1) * SVG_SLOW_LINE;
        let _ = writeln!(
            out,
            r##"<rect x="{}" y="{y}" width="{SVG_CELL}" height="{}" fill="{}" stroke="#ffffff"><title>{}: {}</title></rect><text x="{}" y="{}" text-anchor="middle">{}</text><text x="{}" y="{}">{}</text>"##,
            x0 + 10,
            SVG_SLOW_LINE - 1,
            colour(sym.trim_end_matches('k')),
            xml_escape(label),
            xml_escape(sym),
            x0 + 10 + SVG_CELL / 2,
            y + SVG_SLOW_LINE - 4,
            xml_escape(sym),
            x0 + 16 + SVG_CELL,
            y + SVG_SLOW_LINE - 4,
            xml_escape(label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix cell of LINE's context for `alloc` (titled `title`, `""`
    /// for none) at `gfp` and `order`.
    fn matrix_cell(alloc: &str, title: &str, gfp: &str, order: u32) -> Cell {
        let short = gfp.trim_start_matches("GFP_");
        let title = if title.is_empty() {
            String::new()
        } else {
            format!("title={title} ")
        };
        Cell::parse(
            &LINE
                .replace("alloc=get_free_page", &format!("alloc={alloc}"))
                .replace("gfp=GFP_ATOMIC", &format!("gfp={gfp}"))
                .replace("order=0", &format!("order={order}"))
                .replace(
                    " iterations=",
                    &format!(" matrix=1 gfp_short={short} {title}iterations="),
                ),
        )
        .unwrap()
    }

    #[test]
    fn one_column_groups_are_slanted_and_wide_groups_flat() {
        let mut cells: Vec<Cell> = ["GFP_KERNEL", "GFP_NOWAIT", "GFP_ATOMIC", "0"]
            .iter()
            .map(|m| matrix_cell("get_free_page", "__get_free_page()", m, 0))
            .collect();
        cells.push(matrix_cell("free_page", "free_page()", "0", 0));
        cells.push(matrix_cell("free_pages", "free_pages()", "0", 4));
        cells.push(matrix_cell("kfree", "kfree()", "0", 0));
        let r = report(cells);
        let (_, cols) = r.grid();
        let groups = r.column_groups(&cols);
        let groups: Vec<(&str, usize)> = groups.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        assert_eq!(
            groups,
            vec![
                ("__get_free_page()", 4),
                ("free_page()", 1),
                ("free_pages(order 4)", 1),
                ("kfree()", 1)
            ]
        );
        // 17 characters of 7 px fit over four columns of 34 px.
        assert!(fits_flat(groups[0].0, 4, 34));
        // Each one-column name is wider than its 34 px: drawn flat, it
        // would run into its neighbours' names.
        for (name, span) in &groups[1..] {
            assert!(!fits_flat(name, *span, 34), "{name}");
        }
    }

    #[test]
    fn column_heads_are_the_modules_titles_and_the_text_columns_fit_them() {
        let cells = vec![
            matrix_cell("alloc_pages_nolock", "alloc_pages_nolock()", "0", 0),
            matrix_cell("get_free_page", "__get_free_page()", "GFP_KERNEL", 0),
            matrix_cell("get_free_page", "__get_free_page()", "GFP_ATOMIC", 0),
            // An older line, without a title: the allocator's name.
            matrix_cell("kfree", "", "0", 0),
            // The module renames a call: the table follows.
            matrix_cell("get_free_pages", "__get_many_pages()", "GFP_KERNEL", 3),
        ];
        let mut r = report(cells);
        // A cell of every kind, failed and unchecked: a symbol wider than
        // a column whose head and mask are narrow (kfree, 0).
        let mut wide = matrix_cell("kfree", "", "0", 0);
        wide.context = "hardirq".into();
        for n in wide.reports.values_mut() {
            *n = 1;
        }
        (wide.allocated, wide.failed, wide.lockdep_armed) = (0, 1, false);
        assert_eq!(wide.symbol(), "FWSAL!?");
        r.cells.push(wide);
        let table = r.table();
        for head in [
            "|alloc_pages_nolock()|__get_free_page()",
            "|kfree  |__get_many_pages(order 3)",
        ] {
            assert!(table.contains(head), "{head}\n{table}");
        }
        // Every line's column bars stand where the head's do: a column
        // widens to fit its allocator's title.
        let bars = |line: &str| -> Vec<usize> {
            line.match_indices('|').map(|(i, _)| i).collect::<Vec<_>>()
        };
        let lines: Vec<&str> = table.lines().skip(1).take(4).collect();
        let (head, masks) = (bars(lines[0]), bars(lines[1]));
        for cells in &lines[2..] {
            assert_eq!(masks, bars(cells), "{table}");
        }
        assert!(head.iter().all(|b| masks.contains(b)), "{table}");
        assert_eq!(masks.len(), 5, "{table}");
        assert!(table.contains("|FWSAL!?|-"), "{table}");
        // An older boot's cell first: the head is still the module's title.
        let mut mixed = report(vec![
            matrix_cell("get_free_page", "", "GFP_KERNEL", 0),
            matrix_cell("get_free_page", "__get_free_page()", "GFP_ATOMIC", 0),
        ]);
        assert!(mixed.table().contains("|__get_free_page()"));
        mixed.cells.pop();
        assert!(mixed.table().contains("|get_free_page"));
    }

    #[test]
    fn the_legend_names_the_kinds_and_short_names_of_the_results() {
        let mut masks = vec![matrix_cell(
            "get_free_page",
            "__get_free_page()",
            "GFP_ATOMIC",
            0,
        )];
        masks[0].gfp_short = "ATOMIC".into();
        let mut both = matrix_cell(
            "get_free_page",
            "__get_free_page()",
            "GFP_ATOMIC|__GFP_NOWARN",
            0,
        );
        both.gfp_short = "AT|NW".into();
        masks.push(both);
        // __GFP_NOWARN's short name is the mask without its prefix: not
        // explained; a spec file's cell (not the table's) is not either.
        let mut nowarn = matrix_cell("get_free_page", "__get_free_page()", "__GFP_NOWARN", 0);
        nowarn.gfp_short = "NOWARN".into();
        masks.push(nowarn);
        let mut other = matrix_cell("get_free_page", "__get_free_page()", "__GFP_HIGH", 0);
        (other.gfp_short, other.matrix) = ("HI".into(), false);
        masks.push(other);
        let text = legend(&[report(masks.clone()), report(masks)]);
        assert!(text.starts_with("legend: . clean  W invalid wait context  S sleeping in atomic"));
        assert_eq!(text.matches("W invalid wait context").count(), 1, "{text}");
        assert!(!text.contains("NOWARN = "), "{text}");
        assert!(!text.contains("HI = "), "{text}");
        assert!(
            text.contains("; AT|NW = GFP_ATOMIC|__GFP_NOWARN;"),
            "{text}"
        );
        assert!(!text.contains("ATOMIC = "), "{text}");
        // The module renames a symbol: the legend follows.
        let renamed = LINE.replace("invalid_wait_context:W", "invalid_wait_context:X");
        let text = legend(&[report(vec![Cell::parse(&renamed).unwrap()])]);
        assert!(text.contains("  X invalid wait context  "), "{text}");
        assert!(!text.contains("  W invalid"), "{text}");
        assert!(text.contains("\nx s: invalid wait context"), "{text}");
        assert!(text.contains("\nX on a !PREEMPT_RT kernel"), "{text}");
    }

    const LINE: &str = "# RESULT kind=alloc ctx=raw_spin_lock alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock n=4096 context=raw_spin_lock outcome=ran observed_path=zone_lock iterations=69 allocated=69 failed=0 attempts=1 migrated=0 zone_locked_pages=63 extfrag_events=0 kswapd_wakeups=0 lockdep_before=1 lockdep_after=0 kinds=invalid_wait_context:W,sleeping_in_atomic:S,scheduling_while_atomic:A,lockdep_other:L,warning:! invalid_wait_context=1 sleeping_in_atomic=0 scheduling_while_atomic=0 lockdep_other=0 warning=0 unattributed=0 alloc_ns_min=3370 alloc_ns_median=3461 alloc_ns_max=12268772 zone_locked_alloc_ns=12268772 section_ns=14571806";

    #[test]
    fn parses_a_results_line() {
        let c = Cell::parse(LINE).unwrap();
        assert_eq!(
            c.spec,
            "ctx=raw_spin_lock alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock n=4096"
        );
        assert_eq!(c.path, "zone_lock");
        assert_eq!(c.report("invalid_wait_context"), 1);
        assert_eq!(
            c.alloc_ns,
            Stats {
                min: 3370,
                median: 3461,
                max: 12268772
            }
        );
        assert_eq!(c.zone_locked_alloc_ns, 12268772);
        assert_eq!(c.outcome, "ran");
        assert!(c.lockdep_armed && !c.migrated);
        assert_eq!(c.symbol(), "W");
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(Cell::parse("kind=alloc ctx=x")
            .unwrap_err()
            .contains("missing"));
        assert!(Cell::parse(&LINE.replace("iterations=69", "iterations=x"))
            .unwrap_err()
            .contains("iterations"));
        assert!(Cell::parse(&LINE.replace("kind=alloc", "kind=bogus"))
            .unwrap_err()
            .contains("bogus"));
        assert!(Cell::parse(&format!("{LINE} junk"))
            .unwrap_err()
            .contains("junk"));
    }

    #[test]
    fn symbols_mark_unchecked_and_failed_cells() {
        let mut c = Cell::parse(LINE).unwrap();
        c.lockdep_armed = false;
        assert_eq!(c.symbol(), "W?");
        c.reports.insert("invalid_wait_context".into(), 0);
        assert_eq!(c.symbol(), "?");
        c.lockdep_armed = true;
        assert_eq!(c.symbol(), ".");
        c.allocated = 0;
        c.failed = 1;
        assert_eq!(c.symbol(), "F");
    }

    #[test]
    fn a_refused_cell_is_r_whatever_else_it_holds() {
        let line = LINE.replace(" outcome=ran ", " outcome=refused_low_memory ");
        let c = Cell::parse(&line).unwrap();
        assert_eq!(c.outcome, "refused_low_memory");
        assert_eq!(c.symbol(), "R");
        // A line without an outcome is not taken as one that ran.
        assert!(Cell::parse(&LINE.replace(" outcome=ran", "")).is_err());
    }

    #[test]
    fn explain_groups_settled_cells_by_the_lock_behind_their_report() {
        let mut report = Report {
            kernel: "7.3.4".into(),
            flavor: "rt".into(),
            config: BTreeMap::new(),
            boots: 1,
            restores: 0,
            cells: Vec::new(),
            contexts: Vec::new(),
        };
        // Older lines name no lock: nothing to explain.
        assert_eq!(Cell::parse(LINE).unwrap().lock, "-");
        let with_lock = |lock: &str, at: &str| {
            Cell::parse(&format!("{LINE} lock={lock} lock_at={at}")).unwrap()
        };
        // A Rust function of the module reads as the module.
        assert_eq!(
            with_lock(
                "rust_gfp_nolocks_spin",
                "_RNvYNCNvNtCsibrPuyBdpqi_16rust_gfp_nolocks6tables8CONTROLSs_0I"
            )
            .lock_at,
            "rust_gfp_nolocks"
        );
        report
            .cells
            .push(with_lock("&zone->lock", "__rmqueue_pcplist"));
        report
            .cells
            .push(with_lock("rtlock", "__wake_up_common_lock"));
        let mut unchecked = with_lock("&pgdat->kswapd_wait", "__wake_up_common_lock");
        unchecked.lockdep_armed = false;
        report.cells.push(unchecked);
        let text = explain(&report, true);
        assert!(
            text.contains("&zone->lock: 1 cells; the zone's buddy-list lock"),
            "{text}"
        );
        assert!(
            text.contains("at __wake_up_common_lock: a wait queue's lock"),
            "{text}"
        );
        // A cell not checked by lockdep explains nothing.
        assert!(!text.contains("kswapd_wait"), "{text}");
    }

    #[test]
    fn an_unsettled_cell_is_not_settled_and_old_lines_still_parse() {
        // Lines of outputs before the field existed are settled as before.
        assert!(!LINE.contains("unsettled="));
        assert_eq!(Cell::parse(LINE).unwrap().unsettled, "-");
        let slow = LINE
            .replace(" path=zone_lock n=", " path=slowpath n=")
            .replace(
                " kswapd_wakeups=0 ",
                " kswapd_wakeups=0 alloc_warnings=0 unsettled=warn_spent ",
            );
        let c = Cell::parse(&slow).unwrap();
        assert!(!c.settled());
        assert_eq!(c.symbol(), "W?");
        let c = Cell::parse(&slow.replace("unsettled=warn_spent", "unsettled=-")).unwrap();
        assert!(c.settled());
        assert!(Cell::parse(&slow.replace("alloc_warnings=0", "alloc_warnings=x")).is_err());
    }

    #[test]
    fn the_grid_holds_the_cells_the_module_marks_as_the_matrix() {
        // Older lines: the zone_lock path was the only matrix path.
        assert!(Cell::parse(LINE).unwrap().matrix);
        let slab = LINE
            .replace(
                "alloc=get_free_page gfp=GFP_ATOMIC",
                "alloc=kmalloc gfp=GFP_ATOMIC",
            )
            .replace(" path=zone_lock n=4096", " path=new_slab n=16384")
            .replace(
                " observed_path=zone_lock ",
                " observed_path=new_slab matrix=1 ",
            );
        let pcp = LINE
            .replace(" path=zone_lock n=4096", " path=pcp n=64")
            .replace(" observed_path=zone_lock ", " observed_path=pcp matrix=0 ");
        let report = Report {
            kernel: "7.3.4".into(),
            flavor: "lockdep".into(),
            config: BTreeMap::new(),
            boots: 1,
            restores: 0,
            cells: vec![Cell::parse(&slab).unwrap(), Cell::parse(&pcp).unwrap()],
            contexts: Vec::new(),
        };
        let (rows, cols) = report.grid();
        assert_eq!(rows, vec!["raw_spin_lock"]);
        assert_eq!(cols, vec![("kmalloc", "GFP_ATOMIC")]);
        assert!(report
            .cell("raw_spin_lock", "kmalloc", "GFP_ATOMIC")
            .is_some());
        assert!(report
            .cell("raw_spin_lock", "get_free_page", "GFP_ATOMIC")
            .is_none());
    }

    #[test]
    fn cells_take_the_order_of_the_cases_they_answer() {
        let hardirq = LINE.replace("ctx=raw_spin_lock", "ctx=hardirq");
        let mut cells = vec![
            Cell::parse(&hardirq).unwrap(),
            Cell::parse(LINE).unwrap(),
            Cell::parse(&LINE.replace(" n=4096 ", " n=8 ")).unwrap(),
        ];
        let cases = vec![
            "ctx=raw_spin_lock alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock n=4096"
                .to_string(),
            "ctx=hardirq alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock n=4096"
                .to_string(),
        ];
        sort_by_cases(&mut cells, &cases);
        let specs: Vec<&str> = cells.iter().map(|c| c.spec.as_str()).collect();
        assert!(specs[0].starts_with("ctx=raw_spin_lock") && specs[0].ends_with("n=4096"));
        assert!(specs[1].starts_with("ctx=hardirq"));
        // A cell no case names goes last.
        assert!(specs[2].ends_with("n=8"));
    }

    #[test]
    fn a_migrated_or_kswapd_waking_pcp_cell_is_not_settled() {
        let pcp = LINE.replace(" path=zone_lock n=", " path=pcp n=");
        let c = Cell::parse(&pcp).unwrap();
        assert!(c.settled());
        let c = Cell::parse(&pcp.replace(" migrated=0 ", " migrated=1 ")).unwrap();
        assert!(!c.settled());
        assert_eq!(c.symbol(), "W?");
        let c = Cell::parse(&pcp.replace(" kswapd_wakeups=0 ", " kswapd_wakeups=1 ")).unwrap();
        assert!(!c.settled());
        // On the zone_lock path a kswapd wakeup is part of the answer.
        let c = Cell::parse(&LINE.replace(" kswapd_wakeups=0 ", " kswapd_wakeups=1 ")).unwrap();
        assert!(c.settled());
    }

    fn report(cells: Vec<Cell>) -> Report {
        Report {
            kernel: "7.3.4".into(),
            flavor: "lockdep".into(),
            config: BTreeMap::new(),
            boots: 1,
            restores: 0,
            cells,
            contexts: Vec::new(),
        }
    }

    /// One output whose judge said the kernel's state decides the cell.
    fn judged(line: &str, alternatives: &str) -> String {
        let spec = Cell::parse(line).unwrap().spec;
        format!("{line}\n# STATE {spec}\t{alternatives}\n")
    }

    #[test]
    fn a_cell_the_kernels_state_decides_shows_every_answer_seen() {
        let alternatives =
            "invalid_wait_context,lock=&barn->lock|invalid_wait_context,lock=&n->list_lock";
        let barn = LINE.replace(" warning=0 ", " warning=0 lock=&barn->lock ");
        let list = LINE.replace(" warning=0 ", " warning=0 lock=&n->list_lock ");
        // The raw output has no STATE line; its judged copy has.
        let boots = [
            parse_boot(&barn).unwrap(),
            parse_boot(&judged(&barn, alternatives)).unwrap(),
            parse_boot(&judged(&list, alternatives)).unwrap(),
        ];
        let merged = merge(&boots);
        assert_eq!(merged.len(), 1);
        let c = &merged[0];
        assert_eq!(c.symbol(), "W~");
        assert_eq!(c.state_decides.len(), 2);
        assert_eq!(c.seen, vec!["W &barn->lock", "W &n->list_lock"]);
        assert!(explain(&report(merged.clone()), false)
            .contains("seen W &barn->lock | W &n->list_lock"));
        // Without the judge's word, one answer is one answer.
        let plain = merge(&[parse_boot(&barn).unwrap()]);
        assert_eq!(plain[0].symbol(), "W");
        assert!(plain[0].seen.is_empty());
    }

    #[test]
    fn runs_differing_where_the_state_decides_agree_and_elsewhere_differ() {
        let alternatives = "clean|invalid_wait_context";
        let clean = LINE.replace(" invalid_wait_context=1 ", " invalid_wait_context=0 ");
        let (a, b) = (
            merge(&[parse_boot(&judged(LINE, alternatives)).unwrap()]),
            merge(&[parse_boot(&judged(&clean, alternatives)).unwrap()]),
        );
        let (lines, same) = same_answers(&a, &b);
        assert!(same, "{lines:?}");
        let (a, b) = (
            merge(&[parse_boot(LINE).unwrap()]),
            merge(&[parse_boot(&clean).unwrap()]),
        );
        let (lines, same) = same_answers(&a, &b);
        assert!(!same, "{lines:?}");
    }

    #[test]
    fn columns_follow_the_module_table_whatever_came_first() {
        // A spec file's cell (not the matrix's) announced before the matrix.
        let pcp = LINE
            .replace(" path=zone_lock n=4096", " path=pcp n=64")
            .replace(
                " observed_path=zone_lock ",
                " observed_path=pcp matrix=0 gfp_short=ATOMIC ",
            );
        let kernel = LINE.replace("gfp=GFP_ATOMIC", "gfp=GFP_KERNEL").replace(
            " observed_path=zone_lock ",
            " observed_path=zone_lock matrix=1 gfp_short=KERNEL ",
        );
        let atomic = LINE.replace(
            " observed_path=zone_lock ",
            " observed_path=zone_lock matrix=1 gfp_short=ATOMIC ",
        );
        let cells = [pcp, kernel, atomic]
            .map(|l| Cell::parse(&l).unwrap())
            .to_vec();
        let r = report(cells);
        let (_, cols) = r.grid();
        assert_eq!(
            cols,
            vec![
                ("get_free_page", "GFP_KERNEL"),
                ("get_free_page", "GFP_ATOMIC")
            ]
        );
        assert!(r.table().contains("|KERNEL|ATOMIC"), "{}", r.table());
    }

    #[test]
    fn report_kinds_and_their_symbols_come_from_the_line() {
        let c = Cell::parse(LINE).unwrap();
        assert_eq!(c.kinds.len(), 5);
        assert_eq!(c.symbol(), "W");
        // The module renames a symbol: the table follows.
        let renamed =
            Cell::parse(&LINE.replace("invalid_wait_context:W", "invalid_wait_context:X")).unwrap();
        assert_eq!(renamed.symbol(), "X");
        // No kinds=: refused, naming why.
        let old = LINE.replace(" kinds=", " old_kinds=");
        assert!(Cell::parse(&old)
            .unwrap_err()
            .contains("names no report kinds"));
    }
}
