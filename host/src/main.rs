// SPDX-License-Identifier: GPL-2.0

//! `rgn-report`: merge the boots of a flavor into JSON, and show or draw
//! the results of one or more flavors.

use rgn_report::{
    config_flags, diff, explain, merge, parse_boot, parse_cases, same_answers, svg, unanswered,
    Report, LEGEND,
};
use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage:
  rgn-report merge --kernel VERSION --flavor FLAVOR --config DOT_CONFIG --out JSON BOOT_OUTPUT...
  rgn-report show JSON...
  rgn-report svg --out SVG JSON...
  rgn-report same OUTPUT... -- OUTPUT...   (same answers in both runs; exit 1 if not)
  rgn-report complete OUTPUT...            (every '# CASE' has a settled result; exit 1 if not)
  rgn-report diff JSON JSON                (the cells whose answer differs)
  rgn-report explain [--cells] JSON...     (the lock behind each report, and what it is)";

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
    Ok(report)
}

/// `--key value` options, and the positional arguments.
type Options<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);

/// Splits `--key value` options from positional arguments.
fn options<'a>(args: &'a [String], keys: &[&str]) -> Result<Options<'a>, String> {
    let (mut opts, mut rest) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(key) = a.strip_prefix("--") {
            if !keys.contains(&key) {
                return Err(format!("unknown option --{key}"));
            }
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            opts.push((key, v.as_str()));
        } else {
            rest.push(a.as_str());
        }
    }
    Ok((opts, rest))
}

fn required<'a>(opts: &[(&str, &'a str)], key: &str) -> Result<&'a str, String> {
    opts.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("--{key} is required"))
}

/// Outputs of runs from a saved VM state are named `restore-*` by
/// `scripts/run-flavor`; the others are boots.
fn is_restore(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("restore-"))
}

fn cmd_merge(args: &[String]) -> Result<(), String> {
    let (opts, files) = options(args, &["kernel", "flavor", "config", "out"])?;
    if files.is_empty() {
        return Err("merge needs at least one boot output".into());
    }
    let cells = merged(&files)?;
    let report = Report {
        kernel: required(&opts, "kernel")?.to_string(),
        flavor: required(&opts, "flavor")?.to_string(),
        config: config_flags(&read(required(&opts, "config")?)?),
        boots: files.iter().filter(|f| !is_restore(f)).count() as u32,
        restores: files.iter().filter(|f| is_restore(f)).count() as u32,
        cells,
    };
    if report.cells.is_empty() {
        return Err("the boot outputs hold no results".into());
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    write(required(&opts, "out")?, &(json + "\n"))
}

fn cmd_show(args: &[String]) -> Result<(), String> {
    let reports = args
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>, _>>()?;
    for r in &reports {
        println!("{}", r.table());
    }
    println!("{LEGEND}\n");
    for pair in reports.windows(2) {
        let d = diff(&pair[0], &pair[1]);
        println!(
            "differences between {} and {}: {}",
            pair[0].flavor,
            pair[1].flavor,
            d.len()
        );
        for line in d {
            println!("  {line}");
        }
        println!();
    }
    for r in &reports {
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
    Ok(())
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

fn cmd_same(args: &[String]) -> Result<bool, String> {
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

fn cmd_complete(files: &[String]) -> Result<bool, String> {
    let mut cases = Vec::new();
    for f in files {
        cases.extend(parse_cases(&read(f)?));
    }
    if cases.is_empty() {
        println!("no '# CASE' line in the outputs: nothing says which cells must be answered");
        return Ok(false);
    }
    let missing = unanswered(&cases, &merged(files)?);
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

fn cmd_diff(args: &[String]) -> Result<(), String> {
    let [a, b] = args else {
        return Err("diff needs two results files".into());
    };
    let (a, b) = (load(a)?, load(b)?);
    let d = diff(&a, &b);
    let name = |r: &Report| format!("{} {}", r.kernel, r.flavor);
    println!(
        "differences between {} and {}: {}",
        name(&a),
        name(&b),
        d.len()
    );
    for line in d {
        println!("  {line}");
    }
    Ok(())
}

fn cmd_explain(args: &[String]) -> Result<(), String> {
    let cells = args.first().is_some_and(|a| a == "--cells");
    let files = &args[usize::from(cells)..];
    if files.is_empty() {
        return Err("explain needs at least one results file".into());
    }
    for f in files {
        print!("{}", explain(&load(f)?, cells));
    }
    Ok(())
}

fn cmd_svg(args: &[String]) -> Result<(), String> {
    let (opts, files) = options(args, &["out"])?;
    let reports = files
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>, _>>()?;
    if reports.is_empty() {
        return Err("svg needs at least one results file".into());
    }
    write(required(&opts, "out")?, &svg(&reports))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("merge") => cmd_merge(&args[1..]).map(|()| true),
        Some("show") => cmd_show(&args[1..]).map(|()| true),
        Some("svg") => cmd_svg(&args[1..]).map(|()| true),
        Some("same") => cmd_same(&args[1..]),
        Some("complete") => cmd_complete(&args[1..]),
        Some("diff") => cmd_diff(&args[1..]).map(|()| true),
        Some("explain") => cmd_explain(&args[1..]).map(|()| true),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("rgn-report: {e}");
            ExitCode::from(2)
        }
    }
}
