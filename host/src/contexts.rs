// SPDX-License-Identifier: GPL-2.0

//! What each context looks like from inside, as the module's `contexts`
//! file records it once at load (`# CONTEXT` lines of phase onepass), and
//! whether any runtime check code could call there tells the contexts where
//! a `spinlock_t` is legal from those where it is not: on `!PREEMPT_RT`,
//! `spin_lock()` and `raw_spin_lock()` look the same from inside, which is
//! why the 2020 `__GFP_NO_LOCKS` thread could not settle it at run time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The runtime checks the module records, each 0 or 1, in column order.
pub const CHECKS: [&str; 7] = [
    "preemptible",
    "in_atomic",
    "irqs_disabled",
    "in_task",
    "in_hardirq",
    "in_serving_softirq",
    "in_nmi",
];

/// One context, seen from inside its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSeen {
    pub context: String,
    /// Every `key=value` of its line: the checks, `preempt_count`,
    /// `rcu_depth`, `lockdep_allowed`, and the verdict for each lock kind
    /// (`raw_spinlock_t`, `spinlock_t`, `mutex`).
    pub fields: BTreeMap<String, String>,
}

impl ContextSeen {
    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map_or("?", |v| v.as_str())
    }

    /// A `spinlock_t` may be taken here: the kernel's rules report nothing.
    /// In NMI lockdep checks nothing (`not_checked`), and no lock may be
    /// taken there without trying: not legal.
    pub fn spinlock_legal(&self) -> bool {
        self.get("spinlock_t") == "legal"
    }
}

/// Parses the `# CONTEXT key=value...` lines of a guest output.
pub fn parse(output: &str) -> Result<Vec<ContextSeen>, String> {
    let mut seen = Vec::new();
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("# CONTEXT ") else {
            continue;
        };
        let mut fields = BTreeMap::new();
        for word in rest.split_whitespace() {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| format!("a '# CONTEXT' word without '=': '{word}'"))?;
            fields.insert(k.to_string(), v.to_string());
        }
        let context = fields
            .remove("context")
            .ok_or_else(|| format!("a '# CONTEXT' line without context=: '{rest}'"))?;
        seen.push(ContextSeen { context, fields });
    }
    Ok(seen)
}

/// For one check: the value it has wherever a `spinlock_t` is legal, if it
/// has one value there and another wherever it is not; else a legal and a
/// not legal context where it reads the same.
fn separates<'a>(
    check: &str,
    rows: &'a [ContextSeen],
) -> Result<&'a str, (&'a ContextSeen, &'a ContextSeen)> {
    for legal in rows.iter().filter(|r| r.spinlock_legal()) {
        for not in rows.iter().filter(|r| !r.spinlock_legal()) {
            if legal.get(check) == not.get(check) {
                return Err((legal, not));
            }
        }
    }
    for legal in rows.iter().filter(|r| r.spinlock_legal()) {
        if rows
            .iter()
            .filter(|r| r.spinlock_legal())
            .any(|r| r.get(check) != legal.get(check))
        {
            return Err((legal, legal));
        }
    }
    Ok(rows
        .iter()
        .find(|r| r.spinlock_legal())
        .map_or("?", |r| r.get(check)))
}

/// The view `rgn-report show` prints next to a flavor's tables.
pub fn describe(flavor: &str, rows: &[ContextSeen]) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "{flavor}: each context seen from inside (the module's contexts file), and the kernel's rules for a spinlock_t there"
    );
    let _ = write!(s, "  {:<22} {:<10}", "context", "preempt");
    for c in CHECKS {
        let _ = write!(s, " {}", c);
    }
    let _ = writeln!(s, "  spinlock_t");
    for r in rows {
        let _ = write!(s, "  {:<22} {:<10}", r.context, r.get("preempt_count"));
        for c in CHECKS {
            let _ = write!(s, " {:<w$}", r.get(c), w = c.len());
        }
        let _ = writeln!(s, "  {}", r.get("spinlock_t"));
    }
    let legal = rows.iter().filter(|r| r.spinlock_legal()).count();
    if legal == 0 || legal == rows.len() {
        let _ = writeln!(
            s,
            "  a spinlock_t is {} in every context here: nothing to separate",
            if legal == 0 { "not legal" } else { "legal" }
        );
        return s;
    }
    let mut found = Vec::new();
    let mut witnesses = Vec::new();
    for c in std::iter::once("preempt_count").chain(CHECKS) {
        match separates(c, rows) {
            Ok(v) => found.push(format!("{c}() (={v} wherever it is legal)")),
            Err((a, b)) if a.context != b.context => witnesses.push(format!(
                "{c}()={} in {} (legal) and in {} (not)",
                a.get(c),
                a.context,
                b.context
            )),
            Err((a, _)) => witnesses.push(format!(
                "{c}() differs among the legal contexts ({} has {})",
                a.context,
                a.get(c)
            )),
        }
    }
    if found.is_empty() {
        let _ = writeln!(
            s,
            "  no single check tells where a spinlock_t is legal: {}",
            witnesses.join("; ")
        );
    } else {
        let _ = writeln!(
            s,
            "  a check that tells where a spinlock_t is legal here: {}",
            found.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ctx: &str, preemptible: u8, in_atomic: u8, verdict: &str) -> String {
        format!(
            "# CONTEXT context={ctx} preempt_count=0x0 preemptible={preemptible} in_atomic={in_atomic} irqs_disabled=0 in_task=1 in_hardirq=0 in_serving_softirq=0 in_nmi=0 rcu_depth=0 lockdep_checks=1 lockdep_allowed=3 raw_spinlock_t=legal spinlock_t={verdict} mutex=legal\n"
        )
    }

    #[test]
    fn no_check_separates_spin_lock_from_raw_spin_lock() {
        // !PREEMPT_RT: preempt_disable and raw_spin_lock read the same.
        let text = line("process", 1, 0, "legal")
            + &line("preempt_disable", 0, 1, "legal")
            + &line("raw_spin_lock", 0, 1, "invalid_wait_context");
        let rows = parse(&text).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(separates("in_atomic", &rows).is_err());
        let view = describe("lockdep", &rows);
        assert!(view.contains("no single check"), "{view}");
        assert!(
            view.contains("in_atomic()=1 in preempt_disable (legal) and in raw_spin_lock (not)"),
            "{view}"
        );
    }

    #[test]
    fn a_check_that_separates_is_named() {
        // PREEMPT_RT: a spinlock_t is legal only where preemptible.
        let text = line("process", 1, 0, "legal")
            + &line("preempt_disable", 0, 1, "sleeping_in_atomic")
            + &line(
                "raw_spin_lock",
                0,
                1,
                "invalid_wait_context+sleeping_in_atomic",
            );
        let rows = parse(&text).unwrap();
        assert_eq!(separates("preemptible", &rows), Ok("1"));
        assert!(describe("rt", &rows).contains("preemptible() (=1 wherever it is legal)"));
    }

    #[test]
    fn nothing_separates_where_every_context_agrees() {
        let rows =
            parse(&(line("process", 1, 0, "legal") + &line("spin_lock", 0, 1, "legal"))).unwrap();
        let view = describe("lockdep", &rows);
        assert!(view.contains("legal in every context"), "{view}");
        assert!(!view.contains("a check that tells"), "{view}");
    }

    #[test]
    fn a_line_without_context_is_an_error() {
        assert!(parse("# CONTEXT preempt_count=0x0\n").is_err());
        assert!(parse("# CONTEXT context=process junk\n").is_err());
    }
}
