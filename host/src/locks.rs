// SPDX-License-Identifier: GPL-2.0

//! A cell's lock trace, as the module's `locks=` value writes it: every
//! lock its own context took inside the section, in order of first
//! acquisition, with lockdep's wait types, the context's state and what the
//! kernel's rules (`check_wait_context()`, the sleep checks) said of it.

use serde::{Deserialize, Serialize};

/// One distinct acquisition: a lock (lockdep map) and how it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSeen {
    /// Lockdep's name for the lock (its class name).
    pub name: String,
    /// The function that took it (lockdep's "at:" site).
    pub site: String,
    /// `wait_type_inner` / `wait_type_outer` of its map: 1 free, 2 spin
    /// (`raw_spinlock_t`), 3 config (`spinlock_t`), 4 sleep; 0 unset.
    pub wait_inner: u8,
    pub wait_outer: u8,
    /// 0 normal, 1 per-cpu (local lock), 2 wait-type override map.
    pub lock_type: u8,
    pub trylock: bool,
    /// 0 exclusive, 1 shared, 2 shared recursive.
    pub read: u8,
    /// The wait type the context allowed when the lock came (lockdep's
    /// `curr_inner`): the context's own, lowered by the locks held.
    pub allowed: u8,
    /// Lockdep's irq context: 0 task, 1 softirq, 2 hard irq.
    pub irq_context: u8,
    pub preempt_count: String,
    pub rcu_depth: u32,
    pub irqs_disabled: bool,
    /// `check_wait_context()` rejects it: an invalid wait context.
    pub invalid_wait: bool,
    /// A sleeping lock where the sleep check fails: sleeping in atomic.
    pub sleeps: bool,
    /// Lockdep checks acquisitions there (not in NMI: `lockdep_off()`).
    pub lockdep_checks: bool,
    /// Lockdep was still armed: it would have reported a rejection itself.
    pub armed: bool,
    /// How many times the section took it this way.
    pub count: u64,
}

/// Parses a `locks=` value: `-`, or entries separated by `,`, each
/// `NAME@SITE:INNER:OUTER:TYPE:TRY:READ:ALLOWED:IRQCTX:PREEMPT:RCU:IRQSOFF:FLAGS:COUNT`
/// with FLAGS letters `W` (invalid wait), `S` (sleeps), `U` (lockdep does
/// not check there), `D` (lockdep disarmed), or `-`.
pub fn parse(value: &str) -> Result<Vec<LockSeen>, String> {
    if value == "-" {
        return Ok(Vec::new());
    }
    value.split(',').map(parse_entry).collect()
}

fn parse_entry(entry: &str) -> Result<LockSeen, String> {
    let fields: Vec<&str> = entry.split(':').collect();
    let [who, inner, outer, lock_type, trylock, read, allowed, irq, preempt, rcu, irqs_off, flags, count] =
        fields[..]
    else {
        return Err(format!(
            "lock entry '{entry}' has {} fields, not 13",
            fields.len()
        ));
    };
    let (name, site) = who
        .rsplit_once('@')
        .ok_or_else(|| format!("lock entry '{entry}' has no NAME@SITE"))?;
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("'{s}' is not a number in lock entry '{entry}'"))
    };
    let small = |s: &str| num(s).map(|n| n.min(u8::MAX.into()) as u8);
    if !flags.chars().all(|c| "WSUD-".contains(c)) {
        return Err(format!("unknown flags '{flags}' in lock entry '{entry}'"));
    }
    Ok(LockSeen {
        name: name.to_string(),
        site: site.to_string(),
        wait_inner: small(inner)?,
        wait_outer: small(outer)?,
        lock_type: small(lock_type)?,
        trylock: num(trylock)? != 0,
        read: small(read)?,
        allowed: small(allowed)?,
        irq_context: small(irq)?,
        preempt_count: preempt.to_string(),
        rcu_depth: num(rcu)? as u32,
        irqs_disabled: num(irqs_off)? != 0,
        invalid_wait: flags.contains('W'),
        sleeps: flags.contains('S'),
        lockdep_checks: !flags.contains('U'),
        armed: !flags.contains('D'),
        count: num(count)?,
    })
}

/// A wait type as lockdep's `lockdep_wait_type` names it.
pub fn wait_type_name(t: u8) -> &'static str {
    match t {
        0 => "-",
        1 => "free",
        2 => "spin",
        3 => "config",
        4 => "sleep",
        _ => "max",
    }
}

impl LockSeen {
    /// One line for `explain --cells`: the lock, its site, its wait types
    /// against what the context allowed, and the verdicts.
    pub fn describe(&self) -> String {
        let outer = if self.wait_outer == 0 {
            self.wait_inner
        } else {
            self.wait_outer
        };
        let mut s = format!(
            "{} at {}: {} in {}",
            self.name,
            self.site,
            wait_type_name(outer),
            wait_type_name(self.allowed)
        );
        for (on, what) in [
            (self.trylock, "trylock"),
            (self.read > 0, "read"),
            (self.invalid_wait, "INVALID WAIT CONTEXT"),
            (self.sleeps, "SLEEPS IN ATOMIC"),
            (!self.lockdep_checks, "not checked by lockdep"),
            (self.invalid_wait && !self.armed, "lockdep was off"),
        ] {
            if on {
                s.push_str(", ");
                s.push_str(what);
            }
        }
        if self.count > 1 {
            s.push_str(&format!(" (x{})", self.count));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_flags() {
        let v = "rust_gfp_nolocks_raw@f:2:0:0:0:0:5:0:0x1:0:0:-:1,&zone->lock@__rmqueue_pcplist:3:0:0:0:0:2:0:0x1:0:1:WD:4";
        let locks = parse(v).unwrap();
        assert_eq!(locks.len(), 2);
        assert_eq!(locks[1].name, "&zone->lock");
        assert_eq!(locks[1].site, "__rmqueue_pcplist");
        assert!(locks[1].invalid_wait && !locks[1].armed && !locks[1].sleeps);
        assert_eq!(
            (locks[1].wait_inner, locks[1].allowed, locks[1].count),
            (3, 2, 4)
        );
        assert!(!locks[0].invalid_wait && locks[0].armed);
        assert!(parse("-").unwrap().is_empty());
    }

    #[test]
    fn refuses_malformed_entries() {
        assert!(parse("x@y:1:2").is_err());
        assert!(parse("noat:2:0:0:0:0:5:0:0x1:0:0:-:1").is_err());
        assert!(parse("a@b:2:0:0:0:0:5:0:0x1:0:0:Q:1").is_err());
        assert!(parse("a@b:x:0:0:0:0:5:0:0x1:0:0:-:1").is_err());
    }
}
