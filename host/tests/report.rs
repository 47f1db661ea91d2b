// SPDX-License-Identifier: GPL-2.0

//! Parsing, merging and rendering on fixtures: guest outputs captured from
//! real boots of the test kernels (`tests/fixtures/`).
//! (Their results lines carry `kinds=`, the report kinds each line of the
//! module now names, added to the captured lines.)

use rgn_report::{
    config_flags, diff, merge, parse_boot, parse_cases, same_answers, svg, unanswered, Cell, Report,
};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn boots(prefix: &str, n: usize) -> Vec<Vec<Cell>> {
    (1..=n)
        .map(|i| parse_boot(&fixture(&format!("{prefix}-boot-{i}.out"))).unwrap())
        .collect()
}

fn report(flavor: &str, boots: &[Vec<Cell>]) -> Report {
    Report {
        kernel: "7.3.4".into(),
        flavor: flavor.into(),
        config: config_flags("CONFIG_PREEMPT=y\nCONFIG_PROVE_RAW_LOCK_NESTING=y\n"),
        boots: boots.len() as u32,
        restores: 0,
        cells: merge(boots),
        contexts: Vec::new(),
    }
}

fn find<'a>(r: &'a Report, spec_start: &str) -> &'a Cell {
    r.cells
        .iter()
        .find(|c| c.spec.starts_with(spec_start))
        .unwrap()
}

#[test]
fn every_result_line_of_a_boot_is_parsed() {
    // Counted in the fixture with grep: 59 '# RESULT' lines (the 5 cells
    // of pcp.specs and every other cell of cases: cells:all:0/2), 2 of
    // them controls.
    let cells = parse_boot(&fixture("lockdep-boot-1.out")).unwrap();
    assert_eq!(cells.len(), 59);
    assert_eq!(cells.iter().filter(|c| c.kind == "control").count(), 2);
    assert_eq!(
        cells.iter().filter(|c| c.requested_path == "pcp").count(),
        5
    );
}

#[test]
fn merge_prefers_the_first_observation_with_lockdep_armed() {
    let b = boots("lockdep", 3);
    let spec = "ctx=raw_spin_lock alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock ";
    let first = b[0].iter().find(|c| c.spec.starts_with(spec)).unwrap();
    assert!(
        !first.lockdep_armed,
        "fixture: boot 1 saw this cell disarmed"
    );
    let merged = report("lockdep", &b);
    let cell = find(&merged, spec);
    assert!(cell.lockdep_armed);
    assert_eq!(cell.reports["invalid_wait_context"], 1);
    assert_eq!(cell.symbol(), "W");
    // Order of first appearance is kept, and no cell is duplicated.
    assert_eq!(merged.cells.len(), 113);
    assert!(merged.cells[0].spec.starts_with("ctx=process "));
}

#[test]
fn a_later_disarmed_observation_does_not_replace_an_armed_one() {
    let mut b = boots("lockdep", 2);
    let armed = b[0].iter().find(|c| c.lockdep_armed).unwrap().clone();
    let mut later = armed.clone();
    later.lockdep_armed = false;
    later.reports.insert("warning".into(), 7);
    b[1].push(later);
    let merged = merge(&b);
    assert_eq!(
        merged.iter().find(|c| c.spec == armed.spec).unwrap(),
        &armed
    );
}

#[test]
fn cells_never_seen_armed_are_listed_as_unchecked() {
    // The fixtures, counted with grep: boot 1 ran 59 cells, 39 of them
    // with lockdep armed ('lockdep_before=1'), boot 2 the other 54 cells of
    // the matrix, 34 armed, none migrated or waking kswapd; the restore in
    // file 3 ran one cell that boot 1 saw disarmed, armed. So
    // 113 - 39 - 34 - 1 = 39 cells were never seen armed.
    let merged = report("lockdep", &boots("lockdep", 3));
    let unchecked: Vec<&str> = merged.unchecked().iter().map(|c| c.spec.as_str()).collect();
    assert_eq!(unchecked.len(), 39);
    assert!(unchecked
        .iter()
        .any(|s| s.starts_with("ctx=raw_spin_lock alloc=get_free_page gfp=0 ")));
    // Armed in the restore, after a disarmed observation in boot 1.
    assert!(!unchecked.iter().any(|s| s.starts_with(
        "ctx=raw_spin_lock alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock "
    )));
    let cell = find(&merged, "ctx=raw_spin_lock alloc=get_free_page gfp=0 ");
    assert_eq!(cell.symbol(), "?");
}

#[test]
fn table_has_a_row_per_context_and_the_controls() {
    let r = report("lockdep", &boots("lockdep", 3));
    let table = r.table();
    assert!(table.starts_with("lockdep 7.3.4 (PREEMPT, PROVE_RAW_LOCK_NESTING), 3 boots"));
    for ctx in [
        "process",
        "rcu_read_lock",
        "spin_lock",
        "preempt_disable",
        "local_irq_disable",
        "raw_spin_lock",
        "hardirq",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(ctx)),
            "no row for {ctx}"
        );
    }
    let process = table.lines().find(|l| l.starts_with("process ")).unwrap();
    assert_eq!(process.matches("|.").count(), 13, "process row: {process}");
    assert!(table.contains("controls: empty"));
}

#[test]
fn json_has_the_documented_shape() {
    let r = report("lockdep", &boots("lockdep", 2));
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    for key in ["kernel", "flavor", "config", "boots", "restores", "cells"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["config"]["PROVE_RAW_LOCK_NESTING"], true);
    assert_eq!(v["config"]["PREEMPT_RT"], false);
    let cell = &v["cells"][0];
    for key in [
        "kind",
        "context",
        "allocator",
        "gfp",
        "order",
        "path",
        "iterations",
        "allocated",
        "failed",
        "lockdep_armed",
        "migrated",
        "kswapd_wakeups",
        "outcome",
        "reports",
        "alloc_ns",
        "zone_locked_alloc_ns",
        "section_ns",
    ] {
        assert!(cell.get(key).is_some(), "cell lacks {key}");
    }
    for key in [
        "invalid_wait_context",
        "sleeping_in_atomic",
        "scheduling_while_atomic",
        "lockdep_other",
        "warning",
    ] {
        assert!(cell["reports"].get(key).is_some(), "reports lack {key}");
    }
    for key in ["min", "median", "max"] {
        assert!(cell["alloc_ns"].get(key).is_some());
    }
    // The first cell of the fixture: process/get_free_page/GFP_ATOMIC/pcp.
    assert_eq!(cell["path"], "pcp");
    assert_eq!(cell["outcome"], "ran");
}

#[test]
fn diff_names_each_cell_whose_outcome_differs() {
    let a = report("lockdep", &boots("lockdep", 3));
    let mut b = a.clone();
    b.flavor = "rt".into();
    let spec = "ctx=preempt_disable alloc=get_free_page gfp=GFP_ATOMIC ";
    let cell = b
        .cells
        .iter_mut()
        .find(|c| c.spec.starts_with(spec))
        .unwrap();
    cell.reports.insert("sleeping_in_atomic".into(), 1);
    let d = diff(&a, &b);
    assert_eq!(
        d,
        vec!["preempt_disable get_free_page GFP_ATOMIC: lockdep ., rt S".to_string()]
    );
    b.cells.pop();
    assert_eq!(diff(&a, &b).len(), 2);
}

#[test]
fn svg_draws_one_square_per_matrix_cell_and_escapes_names() {
    let r = report("lockdep", &boots("lockdep", 3));
    // The tables: 8 contexts x (1 alloc_pages_nolock mask + 6 + 6 masks).
    let matrix_cells = 8 * 13;
    let picture = svg(&[r.clone(), r.clone()]);
    assert!(picture.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(picture.trim_end().ends_with("</svg>"));
    // One background plus one square per cell in each of the two panels.
    assert_eq!(picture.matches("<rect").count(), 1 + 2 * matrix_cells);
    // A cell the runs lost is drawn grey (as an unchecked one), not as a
    // result: one more grey square than with the cell.
    let grey = |r: &Report| svg(std::slice::from_ref(r)).matches("#d9d9d9").count();
    let mut lost = r.clone();
    lost.cells.retain(|c| {
        !c.spec
            .starts_with("ctx=process alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock ")
    });
    assert_eq!(grey(&lost), grey(&r) + 1);
    let mut odd = report("lockdep", &boots("lockdep", 1));
    for c in &mut odd.cells {
        c.context = c.context.replace("process", "a<b&\"c");
    }
    let picture = svg(&[odd]);
    assert!(picture.contains("a&lt;b&amp;&quot;c"));
    assert!(!picture.contains("a<b&"));
}

#[test]
fn timing_summarises_each_path_taken() {
    let mut r = report("lockdep", &boots("lockdep", 3));
    // Only the cells set below count: no pcp cell, no refill timed.
    for c in &mut r.cells {
        c.zone_locked_alloc_ns = 0;
        c.path = "zone_lock".into();
    }
    assert_eq!(r.timing(), "");
    // Three clean refills of 1000, 2000 and 7000 ns, and one of 9999 ns
    // in a cell with a report, whose printing would be in its time.
    let spec = |ctx: &str, gfp: &str| format!("ctx={ctx} alloc=get_free_page gfp={gfp} ");
    for (ctx, gfp, ns, section) in [
        ("process", "GFP_ATOMIC", 1000, 1),
        ("spin_lock", "GFP_ATOMIC", 2000, 500),
        ("rcu_read_lock", "GFP_ATOMIC", 7000, 700),
        ("raw_spin_lock", "0", 9999, 900),
    ] {
        let c = r
            .cells
            .iter_mut()
            .find(|c| c.spec.starts_with(&spec(ctx, gfp)))
            .unwrap();
        c.zone_locked_alloc_ns = ns;
        c.section_ns = section;
        c.lockdep_armed = true;
        let reports = if ctx == "raw_spin_lock" { 1 } else { 0 };
        c.reports.insert("invalid_wait_context".into(), reports);
    }
    let t = r.timing();
    assert_eq!(
        t,
        "lockdep: order-0 allocation that refilled the list under zone->lock: 2000 ns (median of 3 clean cells); their atomic sections (process row excluded): 700 ns\n"
    );
}

#[test]
fn real_flavors_differ_and_each_difference_names_two_outcomes() {
    let lockdep = report("lockdep", &boots("lockdep", 3));
    let mut rt = report("rt", &boots("rt", 3));
    rt.config = config_flags("CONFIG_PREEMPT_RT=y\nCONFIG_PROVE_RAW_LOCK_NESTING=y\n");
    assert!(rt
        .table()
        .starts_with("rt 7.3.4 (PREEMPT_RT, PROVE_RAW_LOCK_NESTING), 3 boots"));
    // The RT fixture has zone_locked_alloc_ns and pcp cells: both timings.
    let t = rt.timing();
    assert!(
        t.contains("from the per-cpu list") && t.contains("under zone->lock"),
        "{t}"
    );
    let d = diff(&lockdep, &rt);
    // Observed armed on both flavors in boot 1 (before the first lockdep
    // report): under preempt_disable() and local_irq_disable() every mask
    // but GFP_KERNEL is clean on lockdep and sleeping-in-atomic on RT
    // (zone->lock is an rtlock there): 2 rows x 2 allocators x 5 masks.
    for ctx in ["preempt_disable", "local_irq_disable"] {
        for alloc in ["get_free_page", "get_free_pages"] {
            for gfp in [
                "GFP_NOWAIT",
                "GFP_ATOMIC",
                "0",
                "__GFP_HIGH",
                "GFP_ATOMIC|__GFP_NOWARN",
            ] {
                let line = format!("{ctx} {alloc} {gfp}: lockdep ., rt S");
                assert!(d.contains(&line), "missing {line} in {d:#?}");
            }
        }
    }
    // GFP_KERNEL is S on both there: no difference.
    assert!(!d
        .iter()
        .any(|l| l.starts_with("preempt_disable get_free_page GFP_KERNEL:")));
}

#[test]
fn same_answers_requires_each_cell_armed_with_equal_kinds_and_path() {
    let b = merge(&boots("lockdep", 3));
    let (lines, all) = same_answers(&b, &b.clone());
    // The 39 cells never seen armed in these fixtures cannot agree.
    assert!(!all);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("same ")).count(),
        113 - 39
    );
    let armed: Vec<Cell> = b.iter().filter(|c| c.lockdep_armed).cloned().collect();
    assert!(same_answers(&armed, &armed.clone()).1);
    // One report kind more on one side: that cell differs.
    let mut other = armed.clone();
    let spec = "ctx=raw_spin_lock alloc=get_free_page gfp=GFP_NOWAIT ";
    let c = other.iter_mut().find(|c| c.spec.starts_with(spec)).unwrap();
    c.reports.insert("sleeping_in_atomic".into(), 1);
    let (lines, all) = same_answers(&armed, &other);
    assert!(!all);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("differs ")).count(),
        1,
        "{lines:?}"
    );
    // A cell missing on either side fails.
    other.retain(|c| !c.spec.starts_with(spec));
    let (lines, all) = same_answers(&armed, &other);
    assert!(!all && lines.iter().any(|l| l.starts_with("missing ")));
    let (lines, all) = same_answers(&other, &armed);
    assert!(!all && lines.iter().any(|l| l.starts_with("missing ")));
    let mut restored = report("lockdep", &boots("lockdep", 1));
    restored.boots = 1;
    restored.restores = 37;
    assert!(restored
        .table()
        .starts_with("lockdep 7.3.4 (PREEMPT, PROVE_RAW_LOCK_NESTING), 1 boot, 37 restores"));
}

#[test]
fn every_case_needs_a_settled_answer() {
    // Boot 1 of the fixture announces its cases; boots 2 and 3 settle two
    // of the 39 cells boot 1 saw with lockdep disarmed.
    let cases: Vec<String> = (1..=3)
        .flat_map(|i| parse_cases(&fixture(&format!("lockdep-boot-{i}.out"))))
        .collect();
    assert!(cases.contains(&"control=empty".to_string()));
    let b = boots("lockdep", 3);
    let missing = unanswered(&cases, &merge(&b));
    assert_eq!(missing.len(), 39, "{missing:#?}");
    assert!(missing
        .iter()
        .all(|m| m.ends_with("never observed settled (lockdep armed, pure path)")));
    // A case nobody ran is missing.
    let extra = vec!["ctx=process alloc=get_free_page gfp=GFP_NOWAIT path=pcp n=7".to_string()];
    assert_eq!(
        unanswered(&extra, &merge(&b)),
        vec![format!("{}: no result", extra[0])]
    );
    // Short specs match the full spec of their cell.
    let short = vec!["ctx=process alloc=get_free_page gfp=GFP_ATOMIC path=pcp n=64".to_string()];
    assert!(unanswered(&short, &merge(&b)).is_empty());
}

#[test]
fn a_diff_between_kernels_names_the_kernels() {
    let a = report("lockdep", &boots("lockdep", 3));
    let mut b = a.clone();
    b.kernel = "7.2.13".into();
    // 7.2 has no local_irq_disable row.
    b.cells.retain(|c| c.context != "local_irq_disable");
    let spec = "ctx=process alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock ";
    let c = b
        .cells
        .iter_mut()
        .find(|c| c.spec.starts_with(spec))
        .unwrap();
    c.reports.insert("warning".into(), 1);
    let d = diff(&a, &b);
    assert!(
        d.contains(&"process get_free_page GFP_ATOMIC: 7.3.4 ., 7.2.13 !".to_string()),
        "{d:#?}"
    );
    // 13 cells of the local_irq_disable row, plus the changed one.
    assert_eq!(
        d.iter().filter(|l| l.ends_with(": only on 7.3.4")).count(),
        13
    );
    assert_eq!(d.len(), 14);
}
