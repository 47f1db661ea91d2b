// SPDX-License-Identifier: GPL-2.0

//! The module's derived verdicts across a run: the (cause, context) pairs
//! they rest on, which of them a kernel report confirmed in some cell, and
//! the cells to run with lockdep armed (and the sleep check's rate limit
//! expired) so that every pair is confirmed by the kernel itself.

use crate::Cell;
use std::fmt::Write as _;

/// What a derived verdict rests on: its kind, the lock (or `might_sleep`)
/// and the context it was taken in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pair {
    /// `invalid_wait_context` or `sleeping_in_atomic`.
    pub kind: &'static str,
    pub cause: String,
    pub context: String,
}

/// The lock of the cell's first acquisition flagged by `check_wait_context()`.
fn first_invalid_wait(c: &Cell) -> Option<&str> {
    c.locks
        .iter()
        .find(|l| l.invalid_wait)
        .map(|l| l.name.as_str())
}

/// What the cell's first sleep verdict rests on: `might_sleep` (the
/// allocation's own check), or the first sleeping lock.
fn first_sleep(c: &Cell) -> Option<&str> {
    if c.derived("sleeping_in_atomic") == 0 {
        return None;
    }
    if c.derived_lock == "might_sleep" {
        return Some("might_sleep");
    }
    c.locks.iter().find(|l| l.sleeps).map(|l| l.name.as_str())
}

/// A lock class (not `-`, `might_sleep` or `rtlock`, which a report names
/// when it has no lockdep class).
fn is_class(lock: &str) -> bool {
    !matches!(lock, "-" | "might_sleep" | "rtlock")
}

/// Whether the kernel's own report in cell `c` confirms the pair (`kind`,
/// `cause`) there: it printed that kind where it could (lockdep armed when
/// the cell began; the sleep check's limit expired), for that lock (the
/// first acquisition rejected while lockdep was armed, and the lock the
/// report named when it was the cell's first report; with a first report
/// that names no class, the trace names the lock: the kernel's report
/// confirms the kind and the context, the trace which lock), or, for a
/// sleep, of the check (`might_sleep()` or an rtlock's) its first sleep
/// report names.
fn confirms(c: &Cell, kind: &str, cause: &str) -> bool {
    if c.reports.get(kind).copied().unwrap_or(0) == 0 {
        return false;
    }
    if kind == "invalid_wait_context" {
        let first_armed = c
            .locks
            .iter()
            .find(|l| l.invalid_wait && l.armed)
            .map(|l| l.name.as_str());
        return c.lockdep_armed
            && first_armed == Some(cause)
            && (c.lock == cause || !is_class(&c.lock));
    }
    // The sleep report's own kind (the file of the check it names):
    // might_sleep() for `might_sleep`, an rtlock for a lock's cause.
    c.sleep_check_open
        && match c.sleep_report.as_str() {
            "might_sleep" => cause == "might_sleep",
            "rtlock" => cause != "might_sleep",
            _ => false,
        }
}

/// The pairs a cell's derived verdicts rest on, each with whether the
/// kernel's own report in this cell confirmed it.
pub fn pairs(c: &Cell) -> Vec<(Pair, bool)> {
    let mut out = Vec::new();
    if !c.answered_by_trace() || c.outcome != "ran" || c.unsettled != "-" {
        return out;
    }
    let pair = |kind, cause: &str| Pair {
        kind,
        cause: cause.to_string(),
        context: c.context.clone(),
    };
    if let Some(lock) = first_invalid_wait(c) {
        let kind = "invalid_wait_context";
        out.push((pair(kind, lock), confirms(c, kind, lock)));
    }
    if let Some(cause) = first_sleep(c) {
        let kind = "sleeping_in_atomic";
        out.push((pair(kind, cause), confirms(c, kind, cause)));
    }
    out
}

/// Every pair of `cells`, in order of first appearance, with the cells
/// that rest on it and the first cell whose kernel report confirmed it.
pub fn ledger(cells: &[Cell]) -> Vec<(Pair, Vec<&Cell>, Option<&Cell>)> {
    let mut out: Vec<(Pair, Vec<&Cell>, Option<&Cell>)> = Vec::new();
    for c in cells {
        for (p, confirmed) in pairs(c) {
            let i = match out.iter().position(|(q, _, _)| *q == p) {
                Some(i) => i,
                None => {
                    out.push((p, Vec::new(), None));
                    out.len() - 1
                }
            };
            out[i].1.push(c);
            if confirmed && out[i].2.is_none() {
                out[i].2 = Some(c);
            }
        }
    }
    out
}

/// The specs to run again where the kernel reports for itself: for every
/// pair no kernel report confirmed, its first cell not yet observed that
/// way (the cache's state may send a cell run again down another path, to
/// another lock: the next round tries the pair's next cell).
pub fn to_confirm(cells: &[Cell]) -> Vec<String> {
    let mut specs: Vec<String> = Vec::new();
    for (pair, with, confirmed) in ledger(cells) {
        if confirmed.is_some() {
            continue;
        }
        // For an invalid wait context, a cell whose allocation may sleep
        // last: its might_alloc() runs first, and in an interrupt its
        // fs_reclaim map makes lockdep's first report another (and lockdep
        // off before the lock).
        let rank =
            |c: &&&Cell| pair.kind == "invalid_wait_context" && c.derived_lock == "might_sleep";
        let mut candidates: Vec<&&Cell> = with.iter().filter(|c| !c.kernel_answer()).collect();
        candidates.sort_by_key(rank);
        if let Some(c) = candidates.first() {
            if !specs.contains(&c.spec) {
                specs.push(c.spec.clone());
            }
        }
    }
    specs
}

/// The ledger as text, for `explain`: each pair, its cells, and the cell
/// whose own kernel report confirmed it.
pub fn describe(cells: &[Cell], with_cells: bool) -> String {
    let mut out = String::new();
    let ledger = ledger(cells);
    if ledger.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "derived verdicts (from the locks each cell took, by the kernel's rules), by what they rest on:"
    );
    for (p, with, confirmed) in &ledger {
        let by_kernel = with
            .iter()
            .filter(|c| pairs(c).iter().any(|(q, k)| q == p && *k))
            .count();
        let _ = writeln!(
            out,
            "  {} in {}: {}, {} cells ({} also reported by the kernel); {}",
            p.cause,
            p.context,
            p.kind,
            with.len(),
            by_kernel,
            match confirmed {
                Some(c) => format!("confirmed by the kernel in {}", c.spec),
                None => "NOT CONFIRMED by a kernel report".to_string(),
            }
        );
        if with_cells {
            for c in with {
                let _ = writeln!(out, "    {} {}", c.spec, c.symbol());
                for l in &c.locks {
                    let _ = writeln!(out, "      {}", l.describe());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "kind=alloc ctx=raw_spin_lock alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock n=4096 context=raw_spin_lock outcome=ran observed_path=zone_lock iterations=1 allocated=1 failed=0 migrated=0 kswapd_wakeups=0 unsettled=- lockdep_before=0 lockdep_after=0 kinds=invalid_wait_context:W,sleeping_in_atomic:S,scheduling_while_atomic:A,lockdep_other:L,warning:! sleeping_in_atomic=0 scheduling_while_atomic=0 lockdep_other=0 warning=0 alloc_ns_min=1 alloc_ns_median=1 alloc_ns_max=1 zone_locked_alloc_ns=0 section_ns=1 derived_sleeping_in_atomic=0 derived_lock=&zone->lock derived_at=f";

    /// A cell that took `&zone->lock` under a raw lock, rejected by the
    /// trace; lockdep armed or not when it began, and the kernel's count
    /// of invalid wait contexts and the lock its first report named.
    fn cell(armed: bool, iwc: u32, lock: &str, gfp: &str) -> Cell {
        let (before, flags) = if armed { (1, "W") } else { (0, "WD") };
        let line = LINE
            .replace("gfp=GFP_ATOMIC", &format!("gfp={gfp}"))
            .replace("lockdep_before=0", &format!("lockdep_before={before}"));
        Cell::parse(&format!(
            "{line} invalid_wait_context={iwc} lock={lock} derived_invalid_wait_context=1 locks=raw@f:2:0:0:0:0:5:0:0x1:0:0:-:1,&zone->lock@__rmqueue_pcplist:3:0:0:0:0:2:0:0x1:0:1:{flags}:1"
        ))
        .unwrap()
    }

    #[test]
    fn a_pair_no_kernel_report_confirmed_is_run_again_once() {
        let cells = [
            cell(false, 0, "-", "GFP_ATOMIC"),
            cell(false, 0, "-", "GFP_NOWAIT"),
        ];
        let specs = to_confirm(&cells);
        assert_eq!(specs, vec![cells[0].spec.clone()]);
        assert!(describe(&cells, false).contains("NOT CONFIRMED"));
    }

    #[test]
    fn a_pair_whose_cells_all_ran_where_the_kernel_reports_is_not_run_again() {
        let armed = |gfp| {
            let c = cell(true, 0, "-", gfp);
            Cell {
                sleep_check_open: true,
                ..c
            }
        };
        let cells = [armed("GFP_ATOMIC"), cell(false, 0, "-", "GFP_NOWAIT")];
        assert_eq!(to_confirm(&cells), vec![cells[1].spec.clone()]);
        assert!(to_confirm(&cells[..1]).is_empty());
    }

    #[test]
    fn a_pair_the_kernel_reported_in_one_cell_needs_no_run() {
        let cells = [
            cell(false, 0, "-", "GFP_ATOMIC"),
            cell(true, 1, "&zone->lock", "GFP_NOWAIT"),
        ];
        assert!(to_confirm(&cells).is_empty());
        let text = describe(&cells, true);
        assert!(text.contains("&zone->lock in raw_spin_lock: invalid_wait_context, 2 cells (1 also reported by the kernel); confirmed by the kernel in"));
        assert!(text.contains("INVALID WAIT CONTEXT"));
    }

    #[test]
    fn a_report_that_names_another_lock_or_came_disarmed_confirms_nothing() {
        // Lockdep's report named another class: not this pair's.
        let other = cell(true, 1, "&n->list_lock", "GFP_NOWAIT");
        assert!(!pairs(&other)[0].1);
        // A count without lockdep armed (no trace acquisition armed).
        let disarmed = cell(false, 1, "&zone->lock", "GFP_NOWAIT");
        assert!(!pairs(&disarmed)[0].1);
        // The first report was a sleep (no class): the armed rejection
        // in the trace names the lock.
        let after_sleep = cell(true, 1, "might_sleep", "GFP_NOWAIT");
        assert!(pairs(&after_sleep)[0].1);
        assert_eq!(to_confirm(&[other, disarmed]).len(), 1);
    }

    #[test]
    fn a_sleep_report_confirms_only_its_own_kind_of_cause() {
        // A might_sleep() derived in preempt_disable, the kernel's first
        // report a sleep of its own kind, of another, or lockdep's.
        let sleep = |report: &str, open: bool| {
            let line = LINE
                .replace("ctx=raw_spin_lock", "ctx=preempt_disable")
                .replace("context=raw_spin_lock", "context=preempt_disable")
                .replace("sleeping_in_atomic=0", "sleeping_in_atomic=1")
                .replace(
                    "derived_sleeping_in_atomic=0",
                    "derived_sleeping_in_atomic=1",
                )
                .replace("derived_lock=&zone->lock", "derived_lock=might_sleep");
            Cell::parse(&format!(
                "{line} invalid_wait_context=0 lock=fs_reclaim sleep_report={report} sleep_check_open={} locks=-",
                u8::from(open)
            ))
            .unwrap()
        };
        let confirmed = |c: &Cell| pairs(c)[0].1;
        assert_eq!(pairs(&sleep("might_sleep", true))[0].0.cause, "might_sleep");
        assert!(confirmed(&sleep("might_sleep", true)));
        assert!(!confirmed(&sleep("might_sleep", false)));
        assert!(!confirmed(&sleep("rtlock", true)));
        assert!(!confirmed(&sleep("-", true)));
    }

    #[test]
    fn a_wait_context_is_confirmed_first_where_no_sleep_check_comes_before() {
        let kernel = cell(false, 0, "-", "GFP_KERNEL");
        let kernel = Cell {
            derived_lock: "might_sleep".into(),
            ..kernel
        };
        let cells = [kernel, cell(false, 0, "-", "GFP_NOWAIT")];
        assert_eq!(to_confirm(&cells), vec![cells[1].spec.clone()]);
    }

    #[test]
    fn cells_whose_trace_is_not_whole_rest_on_nothing() {
        let c = cell(false, 0, "-", "GFP_ATOMIC");
        assert_eq!(pairs(&c).len(), 1);
        for broken in ["locks_held_after=1", "locks_dropped=3"] {
            let line = format!("{LINE} invalid_wait_context=0 derived_invalid_wait_context=1 {broken} locks=raw@f:2:0:0:0:0:5:0:0x1:0:0:-:1,&zone->lock@__rmqueue_pcplist:3:0:0:0:0:2:0:0x1:0:1:WD:1");
            let c = Cell::parse(&line).unwrap();
            assert!(c.lock_trace && !c.trace_whole, "{broken}");
            assert!(pairs(&c).is_empty(), "{broken}");
        }
    }
}
