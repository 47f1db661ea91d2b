// SPDX-License-Identifier: GPL-2.0

//! `rgn-report`: merge the boots of a flavor into JSON, and show or draw
//! the results of one or more flavors.

use lexopt::prelude::*;
use rgn_report::select::Selection;
use rgn_report::{
    config_flags, diff, explain, legend, merge, parse_boot, parse_cases, same_answers, svg,
    unanswered, Report,
};
use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: rgn-report COMMAND [ARGS]

  merge --kernel VERSION --flavor FLAVOR --config DOT_CONFIG --out JSON BOOT_OUTPUT...
        the guest outputs of one flavor's run, merged into one results file
  show [--diff-only] JSON...
        the tables of each results file, then what differs between consecutive
        files (--diff-only: only that)
  svg --out SVG JSON...
        the heatmap of the results files
  same OUTPUT... -- OUTPUT...
        the two runs give the same answers (exit 1 if not)
  complete [--select SELECTION] OUTPUT...
        every '# CASE' (of the selection) has a settled result (exit 1 if not)
  diff JSON JSON
        the cells whose answer differs; exit 1 if any does, so CI can gate on it
  explain [--cells] JSON...
        the lock behind each report, and what it is; the derived verdicts by
        the lock and context they rest on (--cells: cell by cell, with every
        lock each cell took)
  confirm OUTPUT...
        the specs to run with lockdep armed: one cell for every (lock, context)
        a derived verdict rests on that no kernel report confirmed
  confirm --check JSON...
        every such pair is confirmed by a kernel report (exit 1 if not)
  select [--check] SELECTION [SPECS_FILE...]
        the specs (one a line; standard input without a file) that SELECTION
        picks; an unknown name is an error that lists the valid ones
        (--check: only its keys and syntax, reading no specs)

SELECTION: KEY=VALUE[,VALUE...] terms, all of which must hold, matched against
the keys of a cell's spec: ctx, alloc, gfp, order, path, n, control.
Example: 'ctx=raw_spin_lock alloc=kmalloc,get_free_page'.

Exit status: 0 done (or no difference), 1 a check or diff found something,
2 bad usage or unreadable input. --help prints this.";

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn write(path: &str, text: &str) -> Result<(), String> {
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))
}

fn load(path: &str) -> Result<Report, String> {
    let mut report: Report = serde_json::from_str(&read(path)?)
        .map_err(|e| format!("{path} is not a results file: {e}"))?;
    // Files written before cells said whether they are the matrix's: the
    // zone_lock path was its only path then.
    if !report.cells.iter().any(|c| c.matrix) {
        for c in &mut report.cells {
            c.matrix = c.requested_path == "zone_lock";
        }
    }
    // Cells name the module's report kinds since results lines carry them:
    // without them no answer can be drawn.
    if report.cells.iter().any(|c| c.kinds.is_empty()) {
        return Err(format!(
            "{path} was written before results named their report kinds: make matrix writes it again"
        ));
    }
    Ok(report)
}

/// A command's arguments: the `--key value` options it takes, the flags,
/// and its positional arguments, parsed with lexopt (an unknown option is
/// an error that names it).
struct Args {
    opts: Vec<(&'static str, String)>,
    flags: Vec<&'static str>,
    files: Vec<String>,
}

impl Args {
    fn parse(
        parser: &mut lexopt::Parser,
        keys: &[&'static str],
        flags: &[&'static str],
    ) -> Result<Self, String> {
        let mut args = Args {
            opts: Vec::new(),
            flags: Vec::new(),
            files: Vec::new(),
        };
        while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
            match arg {
                Long(name) => {
                    if let Some(k) = keys.iter().find(|k| **k == name) {
                        let v = parser.value().map_err(|e| e.to_string())?;
                        args.opts.push((k, v.string().map_err(|e| e.to_string())?));
                    } else if let Some(f) = flags.iter().find(|f| **f == name) {
                        args.flags.push(f);
                    } else {
                        return Err(arg.unexpected().to_string());
                    }
                }
                Value(v) => args.files.push(v.string().map_err(|e| e.to_string())?),
                _ => return Err(arg.unexpected().to_string()),
            }
        }
        Ok(args)
    }

    fn required(&self, key: &str) -> Result<&str, String> {
        self.opts
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn optional(&self, key: &str) -> Option<&str> {
        self.opts
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }
}

/// Outputs of runs from a saved VM state are named `restore-*` by
/// `scripts/run-flavor`; the others are boots.
fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
}

fn is_restore(path: &str) -> bool {
    file_name(path).starts_with("restore-")
}

/// The host's judgement of a guest's output (`judged-NAME.out`, phase
/// onepass's block): neither a boot nor a restore of its own.
fn is_judged(path: &str) -> bool {
    file_name(path).starts_with("judged-")
}

fn cmd_merge(p: &mut lexopt::Parser) -> Result<bool, String> {
    let a = Args::parse(p, &["kernel", "flavor", "config", "out"], &[])?;
    if a.files.is_empty() {
        return Err("merge needs at least one boot output".into());
    }
    let cells = merged(&a.files)?;
    let mut contexts = Vec::new();
    for f in &a.files {
        let seen = rgn_report::contexts::parse(&read(f)?).map_err(|e| format!("{f}: {e}"))?;
        if contexts.is_empty() {
            contexts = seen;
        }
    }
    let report = Report {
        kernel: a.required("kernel")?.to_string(),
        flavor: a.required("flavor")?.to_string(),
        config: config_flags(&read(a.required("config")?)?),
        boots: a
            .files
            .iter()
            .filter(|f| !is_restore(f) && !is_judged(f))
            .count() as u32,
        restores: a.files.iter().filter(|f| is_restore(f)).count() as u32,
        cells,
        contexts,
    };
    if report.cells.is_empty() {
        return Err("the boot outputs hold no results".into());
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    write(a.required("out")?, &(json + "\n"))?;
    Ok(true)
}

fn load_all(files: &[String]) -> Result<Vec<Report>, String> {
    files.iter().map(|f| load(f)).collect()
}

fn print_differences(a: &Report, b: &Report, names: (String, String)) -> usize {
    let d = diff(a, b);
    println!(
        "differences between {} and {}: {}",
        names.0,
        names.1,
        d.len()
    );
    for line in &d {
        println!("  {line}");
    }
    d.len()
}

fn cmd_show(p: &mut lexopt::Parser) -> Result<bool, String> {
    let a = Args::parse(p, &[], &["diff-only"])?;
    let reports = load_all(&a.files)?;
    if reports.is_empty() {
        return Err("show needs at least one results file".into());
    }
    let diff_only = a.flag("diff-only");
    if !diff_only {
        for r in &reports {
            println!("{}", r.table());
        }
        println!("{}\n", legend(&reports));
    }
    for pair in reports.windows(2) {
        let names = (pair[0].flavor.clone(), pair[1].flavor.clone());
        print_differences(&pair[0], &pair[1], names);
        println!();
    }
    if diff_only {
        return Ok(true);
    }
    for r in &reports {
        print!("{}", rgn_report::contexts::describe(&r.flavor, &r.contexts));
        print!("{}", r.timing());
        let unchecked = r.unchecked();
        if !unchecked.is_empty() {
            println!(
                "{}: {} cells could not be observed with lockdep armed:",
                r.flavor,
                unchecked.len()
            );
            for c in unchecked {
                println!("  {}", c.spec);
            }
        }
    }
    Ok(true)
}

/// Merges the guest outputs of one run.
fn merged<S: AsRef<str>>(files: &[S]) -> Result<Vec<rgn_report::Cell>, String> {
    let mut boots = Vec::new();
    let mut cases = Vec::new();
    for f in files {
        let f = f.as_ref();
        let text = read(f)?;
        boots.push(parse_boot(&text).map_err(|e| format!("{f}: {e}"))?);
        cases.extend(rgn_report::parse_cases(&text));
    }
    let mut cells = merge(&boots);
    rgn_report::sort_by_cases(&mut cells, &cases);
    Ok(cells)
}

fn cmd_same(p: &mut lexopt::Parser) -> Result<bool, String> {
    // The two lists are split by a literal "--", which lexopt would take
    // as the end of options: read the words raw.
    let args: Vec<String> = p
        .raw_args()
        .map_err(|e| e.to_string())?
        .map(|a| a.into_string().map_err(|a| format!("not UTF-8: {a:?}")))
        .collect::<Result<_, _>>()?;
    if let Some(bad) = args.iter().find(|a| a.starts_with('-') && *a != "--") {
        return Err(format!("invalid option '{bad}'"));
    }
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or("same needs two lists of outputs separated by --")?;
    let (a, b) = (merged(&args[..split])?, merged(&args[split + 1..])?);
    let (lines, all) = same_answers(&a, &b);
    for l in lines {
        println!("{l}");
    }
    Ok(all)
}

fn cmd_complete(p: &mut lexopt::Parser) -> Result<bool, String> {
    let a = Args::parse(p, &["select"], &[])?;
    let mut cases = Vec::new();
    for f in &a.files {
        cases.extend(parse_cases(&read(f)?));
    }
    if cases.is_empty() {
        println!("no '# CASE' line in the outputs: nothing says which cells must be answered");
        return Ok(false);
    }
    if let Some(text) = a.optional("select") {
        let picked: Vec<String> = Selection::parse(text)?
            .pick(&cases)?
            .into_iter()
            .map(str::to_string)
            .collect();
        cases = picked;
    }
    let missing = unanswered(&cases, &merged(&a.files)?);
    let distinct = {
        let mut c = cases.clone();
        c.sort();
        c.dedup();
        c.len()
    };
    println!(
        "{} of {} cases answered",
        distinct - missing.len(),
        distinct
    );
    for m in &missing {
        println!("{m}");
    }
    Ok(missing.is_empty())
}

/// Exits 1 (returns false) when any cell's answer differs.
fn cmd_diff(p: &mut lexopt::Parser) -> Result<bool, String> {
    let a = Args::parse(p, &[], &[])?;
    let [x, y] = a.files.as_slice() else {
        return Err("diff needs two results files".into());
    };
    let (x, y) = (load(x)?, load(y)?);
    let name = |r: &Report| format!("{} {}", r.kernel, r.flavor);
    Ok(print_differences(&x, &y, (name(&x), name(&y))) == 0)
}

fn cmd_explain(p: &mut lexopt::Parser) -> Result<bool, String> {
    let a = Args::parse(p, &[], &["cells"])?;
    if a.files.is_empty() {
        return Err("explain needs at least one results file".into());
    }
    for f in &a.files {
        print!("{}", explain(&load(f)?, a.flag("cells")));
    }
    Ok(true)
}

fn cmd_confirm(p: &mut lexopt::Parser) -> Result<bool, String> {
    let a = Args::parse(p, &[], &["check"])?;
    if a.files.is_empty() {
        return Err(
            "confirm needs at least one guest output (or with --check, results file)".into(),
        );
    }
    if a.flag("check") {
        let mut all = true;
        for f in &a.files {
            let report = load(f)?;
            for (pair, with, confirmed) in rgn_report::derived::ledger(&report.cells) {
                if confirmed.is_none() {
                    all = false;
                    println!(
                        "{}: {} in {} ({}) rests on the locks alone, in {} cells, first {}",
                        f,
                        pair.cause,
                        pair.context,
                        pair.kind,
                        with.len(),
                        with[0].spec
                    );
                }
            }
        }
        return Ok(all);
    }
    let mut boots = Vec::new();
    for f in &a.files {
        boots.push(parse_boot(&read(f)?).map_err(|e| format!("{f}: {e}"))?);
    }
    for spec in rgn_report::derived::to_confirm(&merge(&boots)) {
        println!("{spec}");
    }
    Ok(true)
}

fn cmd_svg(p: &mut lexopt::Parser) -> Result<bool, String> {
    let a = Args::parse(p, &["out"], &[])?;
    let reports = load_all(&a.files)?;
    if reports.is_empty() {
        return Err("svg needs at least one results file".into());
    }
    write(a.required("out")?, &svg(&reports))?;
    Ok(true)
}

fn cmd_select(p: &mut lexopt::Parser) -> Result<bool, String> {
    let a = Args::parse(p, &[], &["check"])?;
    let (text, files) = a
        .files
        .split_first()
        .ok_or("select needs a SELECTION, for example 'ctx=raw_spin_lock alloc=kmalloc'")?;
    let selection = Selection::parse(text)?;
    if a.flag("check") {
        // Its keys and syntax only: the values need a kernel's cases.
        return Ok(true);
    }
    let input = if files.is_empty() {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
    } else {
        files
            .iter()
            .map(|f| read(f))
            .collect::<Result<String, _>>()?
    };
    let specs: Vec<&str> = input
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for spec in selection.pick(&specs)? {
        println!("{spec}");
    }
    Ok(true)
}

fn run() -> Result<bool, String> {
    let mut p = lexopt::Parser::from_env();
    let command = match p.next().map_err(|e| e.to_string())? {
        Some(Value(c)) => c.string().map_err(|e| e.to_string())?,
        Some(Long("help") | Short('h')) => {
            println!("{USAGE}");
            return Ok(true);
        }
        Some(arg) => return Err(arg.unexpected().to_string()),
        None => return Err("a COMMAND is needed (--help lists them)".into()),
    };
    // --help anywhere after a command is its usage too.
    if std::env::args_os()
        .skip(2)
        .any(|a| a == "--help" || a == "-h")
    {
        println!("{USAGE}");
        return Ok(true);
    }
    match command.as_str() {
        "merge" => cmd_merge(&mut p),
        "show" => cmd_show(&mut p),
        "svg" => cmd_svg(&mut p),
        "same" => cmd_same(&mut p),
        "complete" => cmd_complete(&mut p),
        "diff" => cmd_diff(&mut p),
        "explain" => cmd_explain(&mut p),
        "confirm" => cmd_confirm(&mut p),
        "select" => cmd_select(&mut p),
        other => Err(format!("unknown command '{other}' (--help lists them)")),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!(
                "rgn-report: error: {e}\nusage: rgn-report COMMAND [ARGS] (rgn-report --help)"
            );
            ExitCode::from(2)
        }
    }
}
