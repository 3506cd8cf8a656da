//! Measured interference between MPS shares of one GPU: `interference.csv` in a share-keyed
//! profile set's directory, written by `parva profile --pairs`.
//!
//! Shares of one GPU split its SMs, not its memory bandwidth or L2, so a model runs slower beside
//! a busy neighbour than it was profiled alone. One row per (model, share, neighbour):
//!
//! ```text
//! model,share,neighbour,batches,slowdown
//! bert,50,resnet50,4,1.08
//! ```
//!
//! - `share`: the model's share in percent (10-90: a 100 % share has no neighbour);
//! - `neighbour`: the model that ran flat out on the rest of the GPU;
//! - `batches`: how many batch sizes were measured both alone and beside it;
//! - `slowdown`: the median over those batch sizes of (latency beside) / (latency alone),
//!   in [`MIN_SLOWDOWN`, 1 + [`crate::limits::MAX_INTERFERENCE`]].
//!
//! The planner does not choose a share's neighbours, so it plans each (model, share) at the
//! largest slowdown measured beside any neighbour ([`Interference::factor`]), and at the
//! `--interference` margin where nothing was measured.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{CsvInput, FormatError, Location};

/// The file's name in a profile set's directory (not a profile table: `ProfileSet::read_dir`
/// skips it).
pub const FILE: &str = "interference.csv";
/// Its header.
pub const HEADER: [&str; 5] = ["model", "share", "neighbour", "batches", "slowdown"];
/// Longest model name accepted, bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The smallest slowdown accepted: a neighbour may make a model slightly faster within
/// measurement noise, not twice as fast.
pub const MIN_SLOWDOWN: f64 = 0.5;

/// One measured (model, share, neighbour).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Pair {
    pub model: String,
    /// Percent of the GPU's SMs.
    pub share: u32,
    pub neighbour: String,
    /// Batch sizes compared.
    pub batches: u32,
    pub slowdown: f64,
}

/// The rows of an `interference.csv`, keyed by (model, share, neighbour).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interference {
    pairs: BTreeMap<(String, u32, String), Pair>,
}

fn check_share(share: u32) -> Result<(), String> {
    if !(10..=90).contains(&share) || share % u32::from(crate::mig::MPS_SHARE_STEP) != 0 {
        return Err(format!("{share} is not a share with a neighbour (10-90 % in steps of {} %)", crate::mig::MPS_SHARE_STEP));
    }
    Ok(())
}

fn check_slowdown(slowdown: f64) -> Result<(), String> {
    let max = 1.0 + crate::limits::MAX_INTERFERENCE;
    if !(slowdown.is_finite() && (MIN_SLOWDOWN..=max).contains(&slowdown)) {
        return Err(format!("slowdown {slowdown} is outside [{MIN_SLOWDOWN}, {max}]"));
    }
    Ok(())
}

impl Interference {
    /// Read `path` (bounded as every CSV parva reads; the header exactly [`HEADER`]).
    pub fn read(path: &Path) -> Result<Interference, FormatError> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, "open interference table", e))?;
        Self::read_from(file, path)
    }

    /// As [`Interference::read`], from any reader (`path` names it in messages).
    pub fn read_from(reader: impl std::io::Read, path: &Path) -> Result<Interference, FormatError> {
        let mut out = Interference::default();
        CsvInput::for_each_row(reader, path, &HEADER, |line, rec| {
            let field = |i: usize| rec.get(i).unwrap_or("");
            let bad = |i: usize, problem: String| FormatError::invalid(Location::field(path, line, HEADER[i]), problem);
            let name = |i: usize| -> Result<String, FormatError> {
                let v = field(i);
                if v.is_empty() || v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
                    return Err(bad(i, format!("{v:?} is not a model name")));
                }
                Ok(v.to_string())
            };
            let model = name(0)?;
            let share: u32 = field(1).parse().map_err(|_| bad(1, format!("{:?} is not a whole percent", field(1))))?;
            check_share(share).map_err(|p| bad(1, p))?;
            let neighbour = name(2)?;
            let batches: u32 = field(3).parse().map_err(|_| bad(3, format!("{:?} is not a count", field(3))))?;
            if batches == 0 {
                return Err(bad(3, "0 batch sizes: a slowdown needs at least one".into()));
            }
            let slowdown: f64 = field(4).parse().map_err(|_| bad(4, format!("{:?} is not a number", field(4))))?;
            check_slowdown(slowdown).map_err(|p| bad(4, p))?;
            let key = (model.clone(), share, neighbour.clone());
            if out.pairs.contains_key(&key) {
                return Err(FormatError::invalid(Location::line(path, line), format!("{model} at {share} % beside {neighbour} appears twice")));
            }
            out.pairs.insert(key, Pair { model, share, neighbour, batches, slowdown });
            Ok(())
        })?;
        Ok(out)
    }

    /// The table of profile set `dir`, if it has one.
    pub fn read_dir(dir: &Path) -> Result<Option<Interference>, FormatError> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        Self::read(&path).map(Some)
    }

    /// Add or replace a measurement (the same model, share and neighbour measured again).
    pub fn insert(&mut self, pair: Pair) -> Result<(), String> {
        check_share(pair.share)?;
        check_slowdown(pair.slowdown)?;
        self.pairs.insert((pair.model.clone(), pair.share, pair.neighbour.clone()), pair);
        Ok(())
    }

    pub fn pairs(&self) -> impl Iterator<Item = &Pair> {
        self.pairs.values()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The slowdown to plan `model` at `share` percent with: the largest measured beside any
    /// neighbour (never below 1: a neighbour is not counted on to speed a model up); `None`
    /// when nothing was measured for it.
    pub fn factor(&self, model: &str, share: u32) -> Option<f64> {
        self.pairs.values().filter(|p| p.model == model && p.share == share).map(|p| p.slowdown.max(1.0)).reduce(f64::max)
    }

    /// [`Interference::factor`] for every measured (model, share), keyed by (model, share size in
    /// [`crate::mig::MPS_SHARE_STEP`] units) as maps and profile tables are.
    pub fn by_size(&self) -> BTreeMap<(String, u8), f64> {
        let step = u32::from(crate::mig::MPS_SHARE_STEP);
        let mut out = BTreeMap::new();
        for p in self.pairs.values() {
            let size = u8::try_from(p.share / step).unwrap_or(u8::MAX);
            let f = self.factor(&p.model, p.share).unwrap_or(1.0);
            out.insert((p.model.clone(), size), f);
        }
        out
    }

    /// Write the table to `w`, rows in (model, share, neighbour) order.
    pub fn write_to(&self, w: impl std::io::Write) -> std::io::Result<()> {
        let mut wtr = csv::Writer::from_writer(w);
        wtr.write_record(HEADER)?;
        for p in self.pairs.values() {
            wtr.write_record([p.model.as_str(), &p.share.to_string(), &p.neighbour, &p.batches.to_string(), &format!("{:.4}", p.slowdown)])?;
        }
        wtr.flush()
    }

    /// Write the table to `path` atomically (a temporary file beside it, then renamed).
    pub fn write(&self, path: &Path) -> Result<(), crate::FormatError> {
        let mut buf = Vec::new();
        self.write_to(&mut buf).map_err(|e| crate::FormatError::io(path, "encode", e))?;
        crate::files::write_atomic(path, &buf)
    }
}

/// The slowdown the planner plans `model`'s points of `size` share units with, on an MPS GPU of
/// `whole` units: none for the whole GPU (a 100 % share has no neighbour), the measured factor
/// where `measured` has one for that share, else `1 + margin`.
pub fn plan_factor(measured: Option<&Interference>, margin: f64, model: &str, size: u8, whole: u8) -> f64 {
    if size >= whole {
        return 1.0;
    }
    let share = u32::from(size) * u32::from(crate::mig::MPS_SHARE_STEP);
    measured.and_then(|m| m.factor(model, share)).unwrap_or(1.0 + margin)
}

/// The measured slowdowns to simulate `map` with, from the profile set in `dir`: its
/// `interference.csv` by (model, share size) for a map of MPS shares; none for a MIG map (its
/// instances are isolated) or when the set has no such file.
pub fn for_map(map: &crate::deploy::DeploymentMap, dir: &Path) -> Result<BTreeMap<(String, u8), f64>, FormatError> {
    if crate::deploy::default_interference(map) == 0.0 {
        return Ok(BTreeMap::new());
    }
    Ok(Interference::read_dir(dir)?.map(|t| t.by_size()).unwrap_or_default())
}

/// The median of the ratios `beside / alone` over batch sizes measured in both (`None` when
/// none is): how `profile --pairs` turns two sweeps into one slowdown.
pub fn median_slowdown(alone: &BTreeMap<u32, f64>, beside: &BTreeMap<u32, f64>) -> Option<(f64, u32)> {
    let mut ratios: Vec<f64> =
        alone.iter().filter_map(|(b, a)| beside.get(b).filter(|_| *a > 0.0).map(|x| x / a)).filter(|r| r.is_finite()).collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let median = if n % 2 == 1 { ratios[n / 2] } else { 0.5 * (ratios[n / 2 - 1] + ratios[n / 2]) };
    Some((median, n as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(text: &str) -> Result<Interference, FormatError> {
        Interference::read_from(text.as_bytes(), Path::new("i.csv"))
    }

    #[test]
    fn reads_writes_and_plans_at_the_worst_neighbour() {
        let text = "model,share,neighbour,batches,slowdown\nbert,50,resnet50,4,1.0800\nbert,50,vgg16,3,1.2100\nbert,20,vgg16,3,0.9700\n";
        let t = read(text).unwrap();
        assert_eq!(t.factor("bert", 50), Some(1.21));
        assert_eq!(t.factor("bert", 20), Some(1.0), "a neighbour is not counted on to speed a model up");
        assert_eq!(t.factor("bert", 40), None);
        assert_eq!(t.factor("resnet50", 50), None);
        let mut out = Vec::new();
        t.write_to(&mut out).unwrap();
        // Rows come back sorted by (model, share, neighbour).
        assert_eq!(String::from_utf8(out).unwrap(), "model,share,neighbour,batches,slowdown\nbert,20,vgg16,3,0.9700\nbert,50,resnet50,4,1.0800\nbert,50,vgg16,3,1.2100\n");
    }

    #[test]
    fn every_bad_field_is_refused_with_its_line_and_rule() {
        let h = "model,share,neighbour,batches,slowdown\n";
        for (row, want) in [
            ("bert,100,vgg16,3,1.1", "i.csv:2: field `share`: 100 is not a share with a neighbour"),
            ("bert,25,vgg16,3,1.1", "i.csv:2: field `share`: 25 is not a share"),
            ("bert,x,vgg16,3,1.1", "i.csv:2: field `share`: \"x\" is not a whole percent"),
            (",50,vgg16,3,1.1", "i.csv:2: field `model`"),
            ("bert,50,,3,1.1", "i.csv:2: field `neighbour`"),
            ("bert,50,vgg16,0,1.1", "i.csv:2: field `batches`: 0 batch sizes"),
            ("bert,50,vgg16,3,NaN", "i.csv:2: field `slowdown`: slowdown NaN is outside"),
            ("bert,50,vgg16,3,0.2", "i.csv:2: field `slowdown`: slowdown 0.2 is outside"),
            ("bert,50,vgg16,3,12", "i.csv:2: field `slowdown`: slowdown 12 is outside"),
            ("bert,50,vgg16,3", "i.csv:2: has 4 fields, expected 5"),
        ] {
            let e = read(&format!("{h}{row}\n")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{row}: {e}");
        }
        let e = read(&format!("{h}bert,50,vgg16,3,1.1\n\nbert,50,vgg16,2,1.2\n")).unwrap_err().to_string();
        assert!(e.starts_with("i.csv:4:") && e.contains("appears twice"), "{e}");
        let e = read("model,share,slowdown\nbert,50,1.1\n").unwrap_err().to_string();
        assert!(e.starts_with("i.csv:1:") && e.contains("header must be"), "{e}");
    }

    #[test]
    fn a_missing_table_is_none_and_insert_checks_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Interference::read_dir(dir.path()).unwrap(), None);
        let mut t = Interference::default();
        let pair = |share, slowdown| Pair { model: "m".into(), share, neighbour: "n".into(), batches: 2, slowdown };
        assert!(t.insert(pair(100, 1.1)).is_err() && t.insert(pair(50, f64::INFINITY)).is_err() && t.is_empty());
        t.insert(pair(50, 1.1)).unwrap();
        t.insert(pair(50, 1.3)).unwrap(); // measured again: replaced
        assert_eq!(t.pairs().count(), 1);
        t.write(&dir.path().join(FILE)).unwrap();
        assert_eq!(Interference::read_dir(dir.path()).unwrap().unwrap().factor("m", 50), Some(1.3));
    }

    #[test]
    fn the_planner_uses_the_measurement_then_the_margin_and_never_slows_a_whole_gpu() {
        let t = read("model,share,neighbour,batches,slowdown\nbert,50,vgg16,3,1.05\n").unwrap();
        assert_eq!(plan_factor(Some(&t), 0.2, "bert", 5, 10), 1.05);
        assert_eq!(plan_factor(Some(&t), 0.2, "bert", 4, 10), 1.2);
        assert_eq!(plan_factor(Some(&t), 0.2, "vgg16", 5, 10), 1.2);
        assert_eq!(plan_factor(None, 0.2, "bert", 5, 10), 1.2);
        assert_eq!(plan_factor(Some(&t), 0.2, "bert", 10, 10), 1.0);
        assert_eq!(t.by_size(), [(("bert".to_string(), 5u8), 1.05)].into_iter().collect());
    }

    #[test]
    fn the_slowdown_is_the_median_ratio_over_common_batches() {
        let alone: BTreeMap<u32, f64> = [(1, 10.0), (2, 20.0), (4, 40.0), (8, 80.0)].into();
        let beside: BTreeMap<u32, f64> = [(1, 11.0), (2, 30.0), (4, 44.0), (16, 1.0)].into();
        assert_eq!(median_slowdown(&alone, &beside), Some((1.1, 3)));
        assert_eq!(median_slowdown(&alone, &BTreeMap::new()), None);
    }

    proptest! {
        #[test]
        fn the_reader_never_panics_and_what_it_reads_round_trips(text in "\\PC{0,300}") {
            if let Ok(t) = read(&text) {
                let mut out = Vec::new();
                t.write_to(&mut out).unwrap();
                let again = read(std::str::from_utf8(&out).unwrap()).unwrap();
                prop_assert_eq!(again.pairs().count(), t.pairs().count());
            }
        }
    }
}
