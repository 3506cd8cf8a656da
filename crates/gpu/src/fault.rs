//! Failure injection for the fakes: fail the N-th call whose record contains a pattern.
//!
//! Spec syntax (also `PARVA_FAKE_FAIL`): `PATTERN#N`, `PATTERN` (= `PATTERN#1`) or `#N` (the N-th
//! call of any kind). Records look like `create_instance gpu=0 profile=9 start=4`,
//! `destroy_instance gpu=1 gi=2`, `mps_start MIG-...`; see [`crate::fake::FakeGpus`] and
//! [`crate::mps::FakeMps`]. A fault fires once.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Substring of the call record; empty matches every call.
    pub pattern: String,
    /// 1-based: fail the `nth` matching call.
    pub nth: usize,
}

impl Fault {
    pub fn new(pattern: impl Into<String>, nth: usize) -> Self {
        Fault { pattern: pattern.into(), nth }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.pattern, self.nth)
    }
}

/// A fault spec that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad fault spec `{spec}`: expected PATTERN#N, PATTERN or #N with N >= 1")]
pub struct BadFault {
    pub spec: String,
}

impl FromStr for Fault {
    type Err = BadFault;
    fn from_str(s: &str) -> Result<Self, BadFault> {
        let bad = || BadFault { spec: s.to_string() };
        let (pattern, nth) = match s.rsplit_once('#') {
            Some((p, n)) => (p, n.trim().parse::<usize>().map_err(|_| bad())?),
            None => (s, 1),
        };
        if nth == 0 || (pattern.is_empty() && !s.contains('#')) {
            return Err(bad());
        }
        Ok(Fault { pattern: pattern.to_string(), nth })
    }
}

/// Records calls and decides when the fault fires.
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    pub calls: Vec<String>,
    fault: Option<Fault>,
    matched: usize,
}

impl CallLog {
    pub fn set_fault(&mut self, fault: Option<Fault>) {
        self.fault = fault;
        self.matched = 0;
    }

    /// Record `call`; `Some(n)` (the call's 1-based number) when the fault fires on it.
    pub fn record(&mut self, call: String) -> Option<usize> {
        self.calls.push(call);
        let call = self.calls.last()?;
        let fault = self.fault.as_ref()?;
        if !call.contains(&fault.pattern) {
            return None;
        }
        self.matched += 1;
        if self.matched == fault.nth {
            self.fault = None;
            return Some(self.calls.len());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fires_once() {
        assert_eq!("create#2".parse::<Fault>().unwrap(), Fault::new("create", 2));
        assert_eq!("#3".parse::<Fault>().unwrap(), Fault::new("", 3));
        assert_eq!("destroy_instance gpu=1".parse::<Fault>().unwrap(), Fault::new("destroy_instance gpu=1", 1));
        // The last `#` splits: a pattern may itself contain one.
        assert_eq!("a#b#2".parse::<Fault>().unwrap(), Fault::new("a#b", 2));
        // Refused specs name themselves whole, and the rule.
        for spec in ["x#0", "x#y", "", "#", "#0", "x#-1"] {
            assert_eq!(spec.parse::<Fault>(), Err(BadFault { spec: spec.to_string() }), "{spec:?}");
        }
        assert_eq!(
            "x#y".parse::<Fault>().unwrap_err().to_string(),
            "bad fault spec `x#y`: expected PATTERN#N, PATTERN or #N with N >= 1"
        );
        // Display is the spec syntax, and parses back.
        assert_eq!(Fault::new("create", 2).to_string().parse::<Fault>().unwrap(), Fault::new("create", 2));
        let mut log = CallLog::default();
        log.set_fault(Some(Fault::new("create", 2)));
        assert_eq!(log.record("create a".into()), None);
        assert_eq!(log.record("list".into()), None);
        assert_eq!(log.record("create b".into()), Some(3));
        assert_eq!(log.record("create c".into()), None, "fires once");
    }
}
