//! `parva profile --pairs`: interference between MPS shares, measured as two sweeps of one model
//! (alone, then beside each neighbour running flat out on the rest of the GPU) turned into one
//! slowdown per share in `interference.csv` (see [`parva_core::interference`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::{PartitionArg, ProfileArgs, parse_background, sweep};

/// `--pairs`: the sweep alone, then one beside each neighbour, then the slowdowns.
pub(super) fn run(args: &ProfileArgs) -> anyhow::Result<ExitCode> {
    use parva_core::interference::{Interference, Pair, median_slowdown};
    if args.partition != PartitionArg::Mps {
        anyhow::bail!("--pairs needs --partition mps: shares of one GPU interfere; MIG instances are isolated");
    }
    let shares: Vec<u8> = if args.shares.is_empty() { vec![20, 40, 50, 60, 80, 100] } else { args.shares.clone() };
    let beside_shares: Vec<u8> = shares.iter().copied().filter(|&s| s < 100).collect();
    if beside_shares.is_empty() {
        anyhow::bail!("--pairs: no share below 100 % in --shares (a 100 % share has no neighbour)");
    }
    // Everything a later step needs is checked before the first sweep: each neighbour's files
    // beside --model's, and the interference table already in --out (rows are merged into it).
    let models_dir = args.model.parent().map(Path::to_path_buf).unwrap_or_default();
    for neighbour in &args.pairs {
        parse_background(&format!("batch:{neighbour}")).map_err(|e| anyhow::anyhow!("--pairs: {e}"))?;
        let meta = models_dir.join(format!("{neighbour}.json"));
        if !meta.is_file() {
            anyhow::bail!("--pairs {neighbour}: no metadata {} beside --model", meta.display());
        }
    }
    let mut table = match &args.out {
        Some(out) => Interference::read_dir(out)?.unwrap_or_default(),
        None => Interference::default(),
    };
    // With --json, one document: the pairs' (the table is where it always is).
    let alone_args = ProfileArgs { pairs: Vec::new(), shares: shares.clone(), quiet: args.json, ..args.clone() };
    let (code, table_path) = sweep(&alone_args)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let out = table_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let latencies = |path: &Path| -> anyhow::Result<std::collections::BTreeMap<(u8, u32), f64>> {
        let t = parva_core::profile::ModelProfile::read(path, None)?;
        Ok(t.points.iter().filter(|p| p.is_measured() && p.procs == 1).map(|p| ((p.size, p.batch), p.latency_s)).collect())
    };
    let alone = latencies(&table_path)?;
    if args.out.is_none() {
        // The default --out depends on the GPU type, known once the sweep has found the GPU.
        table = Interference::read_dir(&out)?.unwrap_or_default();
    }
    let model = table_path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let scratch = ScratchDir(std::env::temp_dir().join(format!("parva-pairs-{}", std::process::id())));
    let mut found = Vec::new();
    for neighbour in &args.pairs {
        let beside_dir = scratch.0.join(neighbour);
        let beside_args = ProfileArgs {
            pairs: Vec::new(),
            shares: beside_shares.clone(),
            procs: vec![1],
            out: Some(beside_dir.clone()),
            background: Some(format!("batch:{neighbour}")),
            quiet: true,
            ..args.clone()
        };
        if !args.json {
            eprintln!("measuring {model} beside {neighbour} at {} %", beside_shares.iter().map(u8::to_string).collect::<Vec<_>>().join(", "));
        }
        let (code, beside_path) = sweep(&beside_args)?;
        if code != ExitCode::SUCCESS {
            anyhow::bail!("--pairs: the sweep beside {neighbour} did not complete (exit {code:?}); {} is unchanged", out.join(parva_core::interference::FILE).display());
        }
        let beside = latencies(&beside_path)?;
        for &share in &beside_shares {
            let size = share / parva_core::mig::MPS_SHARE_STEP;
            let pick = |m: &std::collections::BTreeMap<(u8, u32), f64>| m.iter().filter(|((s, _), _)| *s == size).map(|((_, b), l)| (*b, *l)).collect();
            let Some((slowdown, batches)) = median_slowdown(&pick(&alone), &pick(&beside)) else { continue };
            let pair = Pair { model: model.clone(), share: u32::from(share), neighbour: neighbour.clone(), batches, slowdown };
            table.insert(pair.clone()).map_err(|e| anyhow::anyhow!("--pairs: {model} at {share} % beside {neighbour}: {e}"))?;
            found.push(pair);
        }
    }
    let path = out.join(parva_core::interference::FILE);
    table.write(&path).with_context(|| format!("write {}", path.display()))?;
    if args.json {
        super::super::print_json(&serde_json::json!({ "table": table_path, "interference": path, "pairs": found }))?;
    } else {
        for p in &found {
            outln!("{} at {} % beside {}: x{:.3} ({} batch sizes)", p.model, p.share, p.neighbour, p.slowdown, p.batches)?;
        }
        outln!("wrote {} ({} pairs measured)", path.display(), found.len())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The sweeps beside neighbours write their tables here; removed when done.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

