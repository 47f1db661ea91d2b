// SPDX-License-Identifier: GPL-2.0

//! Cell selections by name (`make matrix CELLS='ctx=raw_spin_lock
//! alloc=kmalloc'`): terms `KEY=VALUE[,VALUE...]` held against the keys of
//! a spec (`ctx=... alloc=... gfp=... order=... path=... n=...`, or
//! `control=...`). A spec matches when every term's key has one of the
//! term's values. Names are checked against the specs offered, so that a
//! typo is an error that lists the valid names, never an empty run.

use std::collections::BTreeSet;

/// The keys a spec has, as the module's `cases` prints them (the module's
/// own selections take the same keys).
const KEYS: [&str; 7] = ["ctx", "alloc", "gfp", "order", "path", "n", "control"];

/// One `KEY=VALUE[,VALUE...]` term.
#[derive(Debug, PartialEq, Eq)]
struct Term {
    key: String,
    values: Vec<String>,
}

/// A parsed selection: every term must hold.
#[derive(Debug, PartialEq, Eq)]
pub struct Selection {
    terms: Vec<Term>,
}

/// The value a spec gives `key`, if any.
fn value_of<'a>(spec: &'a str, key: &str) -> Option<&'a str> {
    spec.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn list(items: &BTreeSet<&str>) -> String {
    items.iter().copied().collect::<Vec<_>>().join(", ")
}

impl Selection {
    /// Parses `KEY=VALUE[,VALUE...]` terms separated by white space.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut terms: Vec<Term> = Vec::new();
        for word in text.split_whitespace() {
            let (key, values) = word
                .split_once('=')
                .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                .ok_or_else(|| {
                    format!("'{word}' is not KEY=VALUE (for example ctx=raw_spin_lock or gfp=GFP_ATOMIC,GFP_NOWAIT)")
                })?;
            if !KEYS.contains(&key) {
                return Err(format!(
                    "'{word}' does not start with a spec's key: the keys are {}",
                    KEYS.join(", ")
                ));
            }
            if terms.iter().any(|t| t.key == key) {
                return Err(format!("key '{key}' given twice (one term a key: KEY=A,B)"));
            }
            let values: Vec<String> = values.split(',').map(str::to_string).collect();
            if values.iter().any(String::is_empty) {
                return Err(format!("'{word}' has an empty value"));
            }
            terms.push(Term {
                key: key.to_string(),
                values,
            });
        }
        if terms.is_empty() {
            return Err("the selection is empty: give KEY=VALUE terms".into());
        }
        Ok(Selection { terms })
    }

    /// Whether `spec` satisfies every term.
    pub fn matches(&self, spec: &str) -> bool {
        self.terms
            .iter()
            .all(|t| value_of(spec, &t.key).is_some_and(|v| t.values.iter().any(|w| w == v)))
    }

    /// Every key of the selection, and at least one value of each, exists
    /// among `specs`: an unknown key lists the keys, a term none of whose
    /// values exists the key's values. A value missing beside one that
    /// exists is only warned about (on stderr): a row one kernel lacks
    /// (`kfree_rcu_nolock` on 7.2) in a selection for several kernels.
    pub fn check_names<S: AsRef<str>>(&self, specs: &[S]) -> Result<(), String> {
        let keys: BTreeSet<&str> = specs
            .iter()
            .flat_map(|s| s.as_ref().split_whitespace())
            .filter_map(|w| w.split_once('=').map(|(k, _)| k))
            .collect();
        for t in &self.terms {
            if !keys.contains(t.key.as_str()) {
                return Err(format!(
                    "no cell has a key '{}': the keys are {}",
                    t.key,
                    list(&keys)
                ));
            }
            let values: BTreeSet<&str> = specs
                .iter()
                .filter_map(|s| value_of(s.as_ref(), &t.key))
                .collect();
            let missing: Vec<&String> = t
                .values
                .iter()
                .filter(|v| !values.contains(v.as_str()))
                .collect();
            let message = |bad: &str| {
                format!(
                    "no cell has {}={bad}: the values of {} are {}",
                    t.key,
                    t.key,
                    list(&values)
                )
            };
            match missing.first() {
                None => {}
                Some(bad) if missing.len() == t.values.len() => return Err(message(bad)),
                Some(_) => {
                    for bad in missing {
                        eprintln!(
                            "rgn-report: warning: {}; selecting the others",
                            message(bad)
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The specs that match, after checking the names; an error if none
    /// does (each name exists, but not together).
    pub fn pick<'a, S: AsRef<str>>(&self, specs: &'a [S]) -> Result<Vec<&'a str>, String> {
        self.check_names(specs)?;
        let picked: Vec<&str> = specs
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| self.matches(s))
            .collect();
        if picked.is_empty() {
            return Err("every name exists, but no cell has them all together".into());
        }
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: [&str; 4] = [
        "ctx=process alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock n=4096",
        "ctx=raw_spin_lock alloc=get_free_page gfp=GFP_ATOMIC order=0 path=zone_lock n=4096",
        "ctx=raw_spin_lock alloc=kmalloc gfp=GFP_NOWAIT order=0 path=new_slab n=4096",
        "control=spin_lock_under_raw_spin_lock",
    ];

    #[test]
    fn every_term_must_hold() {
        let s = Selection::parse("ctx=raw_spin_lock alloc=kmalloc").unwrap();
        assert_eq!(s.pick(&SPECS).unwrap(), vec![SPECS[2]]);
        let s = Selection::parse("gfp=GFP_ATOMIC,GFP_NOWAIT ctx=raw_spin_lock").unwrap();
        assert_eq!(s.pick(&SPECS).unwrap(), vec![SPECS[1], SPECS[2]]);
        let s = Selection::parse("control=spin_lock_under_raw_spin_lock").unwrap();
        assert_eq!(s.pick(&SPECS).unwrap(), vec![SPECS[3]]);
    }

    #[test]
    fn a_value_is_matched_whole_not_as_a_prefix() {
        let s = Selection::parse("ctx=raw").unwrap();
        let e = s.pick(&SPECS).unwrap_err();
        assert!(e.contains("no cell has ctx=raw"), "{e}");
        assert!(e.contains("process, raw_spin_lock"), "{e}");
    }

    #[test]
    fn a_value_missing_beside_one_that_exists_is_left_out() {
        let s = Selection::parse("ctx=raw_spin_lock,nmi_or_typo").unwrap();
        let all = Selection::parse("ctx=raw_spin_lock").unwrap();
        assert_eq!(s.pick(&SPECS).unwrap(), all.pick(&SPECS).unwrap());
        // Every value of a term missing is an error.
        let s = Selection::parse("ctx=typo,nmi_or_typo").unwrap();
        assert!(s.pick(&SPECS).unwrap_err().contains("no cell has ctx=typo"));
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = Selection::parse("context=process").unwrap_err();
        assert!(
            e.contains("ctx, alloc, gfp, order, path, n, control"),
            "{e}"
        );
        // A key the offered specs lack (here: only a control's spec).
        let e = Selection::parse("path=slowpath")
            .unwrap()
            .pick(&SPECS[3..])
            .unwrap_err();
        assert!(e.contains("no cell has a key 'path'"), "{e}");
        assert!(e.contains("the keys are control"), "{e}");
        let e = Selection::parse("alloc=kmalloc ctx=process")
            .unwrap()
            .pick(&SPECS)
            .unwrap_err();
        assert!(e.contains("no cell has them all together"), "{e}");
    }

    #[test]
    fn malformed_terms_are_refused() {
        for bad in [
            "",
            "ctx",
            "ctx=",
            "=x",
            "gfp=GFP_ATOMIC,",
            "context=process",
            "ctx=a ctx=b",
        ] {
            assert!(Selection::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
