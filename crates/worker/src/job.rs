//! Best-effort jobs (`parva-worker --job train|batch`): what runs on the GPCs inference leaves idle.
//!
//! - `train`: loads a TorchScript model, and repeats forward, a mean-squared-error loss against
//!   labels of its first output's shape, backward and an SGD step, on a fixed synthetic data set
//!   (`DATASET_BATCHES` batches of `--max-batch` rows of the model's input shapes, from
//!   `--seed`). SGD without momentum, so the checkpoint (the module, saved with its trained
//!   parameters, and `state.json`) is the whole training state: a resumed job continues exactly.
//! - `batch`: offline inference at `--max-batch`, forward only; the checkpoint is the count of
//!   samples done.
//!
//! Both print one JSON object per line on stdout: `start` (with the step it resumed from),
//! `progress` every `--report-every` (step, samples/s, loss), `checkpoint` every
//! `--checkpoint-every` and when stopping, and `stopped` (why). SIGTERM or SIGINT stops the job
//! after the step under way and a checkpoint: the grace period a deployer gives before SIGKILL
//! must cover one step and one save.

use std::path::Path;
use std::time::{Duration, Instant};

use parva_core::jobs::JobKind;
use parva_proto::jobs::{JobArgs, JobState, emit, install_stop_handler, stop_requested};
use parva_proto::meta::ModelMeta;
use parva_proto::tensor::DataType;
use tch::{CModule, COptimizer, IValue, Kind};

/// Batches in the synthetic data set a train job cycles over.
pub const DATASET_BATCHES: usize = 4;
/// Integer inputs (token ids, indices) are drawn from `0..INT_INPUT_RANGE`.
pub const INT_INPUT_RANGE: i64 = 100;

const MODULE_FILE: &str = "model.pt";

/// Save module and state: each written to a temporary file and renamed, the state last, so a
/// job killed mid-save resumes from the previous checkpoint whole.
fn save(dir: &Path, module: Option<&CModule>, state: &JobState) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(m) = module {
        let tmp = dir.join(format!("{MODULE_FILE}.tmp"));
        m.save(&tmp).map_err(|e| format!("save {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(MODULE_FILE)).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    state.save(dir)
}

/// Synthetic inputs of `rows` rows of every input of `meta`, on `device`.
fn synthetic(meta: &ModelMeta, rows: i64, device: tch::Device) -> Result<Vec<tch::Tensor>, String> {
    meta.inputs
        .iter()
        .map(|t| {
            let shape: Vec<i64> = t.shape.iter().map(|d| if *d < 0 { rows } else { *d }).collect();
            let kind = crate::exec::kind_of(t.datatype).ok_or_else(|| format!("input {:?}: unsupported datatype {}", t.name, t.datatype))?;
            Ok(match t.datatype {
                DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => tch::Tensor::randn(shape.as_slice(), (kind, device)),
                DataType::Bool => tch::Tensor::randint(2, shape.as_slice(), (Kind::Int64, device)).to_kind(Kind::Bool),
                _ => tch::Tensor::randint(INT_INPUT_RANGE, shape.as_slice(), (kind, device)),
            })
        })
        .collect()
}

fn first_output(v: IValue) -> Result<tch::Tensor, String> {
    match v {
        IValue::Tensor(t) => Ok(t),
        IValue::Tuple(items) | IValue::GenericList(items) => items.into_iter().next().ok_or("the model returned nothing".to_string()).and_then(first_output),
        IValue::TensorList(mut ts) if !ts.is_empty() => Ok(ts.remove(0)),
        other => Err(format!("the model returned {other:?}, not tensors")),
    }
}

/// Run the job until `--steps`, SIGTERM or SIGINT. Progress goes to stdout as JSON lines.
pub fn run(args: &JobArgs, mode: JobKind, model: &Path, meta: &ModelMeta, rows: usize, device: tch::Device) -> Result<(), String> {
    let dir = args.checkpoint.as_deref().ok_or("--checkpoint DIR is required with --job")?;
    install_stop_handler();
    let mode_name = mode.as_str();
    let mut state = JobState::resume(dir, &meta.name, mode)?;
    let resumed_module = mode == JobKind::Train && state.step > 0 && dir.join(MODULE_FILE).is_file();
    let from = if resumed_module { dir.join(MODULE_FILE) } else { model.to_path_buf() };
    let mut module = CModule::load_on_device(&from, device).map_err(|e| format!("load {}: {e}", from.display()))?;
    tch::manual_seed(args.seed);
    let rows = rows.max(1) as i64;
    let data: Vec<Vec<tch::Tensor>> = (0..DATASET_BATCHES).map(|_| synthetic(meta, rows, device)).collect::<Result<_, _>>()?;
    let mut opt = None;
    let mut labels = Vec::new();
    if mode == JobKind::Train {
        module.set_train();
        let mut o = COptimizer::sgd(args.lr, 0.0, 0.0, 0.0, false).map_err(|e| e.to_string())?;
        let mut trainable = 0;
        for (_, p) in module.named_parameters().map_err(|e| e.to_string())? {
            if p.requires_grad() {
                o.add_parameters(&p, 0).map_err(|e| e.to_string())?;
                trainable += 1;
            }
        }
        if trainable == 0 {
            return Err(format!("{} has no trainable parameters", from.display()));
        }
        opt = Some(o);
        // Labels: one per batch, of the first output's shape.
        for batch in &data {
            let ivals: Vec<IValue> = batch.iter().map(|t| IValue::Tensor(t.shallow_clone())).collect();
            let out = tch::no_grad(|| module.forward_is(&ivals)).map_err(|e| format!("forward: {e}"))?;
            let out = first_output(out)?;
            labels.push(tch::Tensor::randn(out.size().as_slice(), (Kind::Float, device)));
        }
    } else {
        module.set_eval();
    }
    emit(serde_json::json!({"event": "start", "job": mode_name, "model": meta.name, "resumed_step": state.step, "samples": state.samples, "resumed": resumed_module || state.step > 0, "batch": rows}));
    let started = Instant::now();
    let (mut last_report, mut last_ckpt) = (started, started);
    let (mut window_samples, mut window_loss, mut window_steps) = (0u64, 0.0f64, 0u64);
    let reason = loop {
        if let Some(why) = stop_requested() {
            break why;
        }
        if args.steps.is_some_and(|n| state.step >= n) {
            break "steps";
        }
        let i = (state.step % DATASET_BATCHES as u64) as usize;
        let ivals: Vec<IValue> = data[i].iter().map(|t| IValue::Tensor(t.shallow_clone())).collect();
        if let Some(o) = opt.as_mut() {
            o.zero_grad().map_err(|e| e.to_string())?;
            let out = first_output(module.forward_is(&ivals).map_err(|e| format!("forward: {e}"))?)?;
            let loss = (out.to_kind(Kind::Float) - &labels[i]).square().mean(Kind::Float);
            loss.backward();
            o.step().map_err(|e| e.to_string())?;
            let l = loss.double_value(&[]);
            if !l.is_finite() {
                return Err(format!("the loss became {l} at step {}; lower --lr", state.step));
            }
            window_loss += l;
            state.loss = Some(l);
        } else {
            let out = tch::no_grad(|| module.forward_is(&ivals)).map_err(|e| format!("forward: {e}"))?;
            // Wait for the device: the count is of batches done, not queued.
            let _ = first_output(out)?.sum(Kind::Float).double_value(&[]);
        }
        state.step += 1;
        state.samples += rows as u64;
        window_samples += rows as u64;
        window_steps += 1;
        let now = Instant::now();
        if now.duration_since(last_report) >= Duration::from_secs_f64(args.report_every) {
            let secs = now.duration_since(last_report).as_secs_f64();
            let loss = (window_steps > 0 && opt.is_some()).then(|| window_loss / window_steps as f64);
            emit(serde_json::json!({"event": "progress", "step": state.step, "samples": state.samples, "samples_per_s": window_samples as f64 / secs, "loss": loss}));
            (last_report, window_samples, window_loss, window_steps) = (now, 0, 0.0, 0);
        }
        if now.duration_since(last_ckpt) >= Duration::from_secs_f64(args.checkpoint_every) {
            save(dir, (mode == JobKind::Train).then_some(&module), &state)?;
            emit(serde_json::json!({"event": "checkpoint", "step": state.step, "dir": dir}));
            last_ckpt = now;
        }
    };
    save(dir, (mode == JobKind::Train).then_some(&module), &state)?;
    emit(serde_json::json!({"event": "checkpoint", "step": state.step, "dir": dir}));
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    emit(serde_json::json!({"event": "stopped", "reason": reason, "step": state.step, "samples": state.samples, "loss": state.loss, "seconds": secs}));
    Ok(())
}
