//! `parva segment`: serve one segment of a map (one MIG instance or MPS share) over KServe v2,
//! behind `parva route` (see `parva_runner::route`). The same serving code as `parva serve`,
//! given a map of that one segment.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use parva_core::DeploymentMap;
use parva_core::segments::SegmentId;
use parva_gpu::mps::{MpsControl, MpsDirs, RealMps};
use parva_runner::{BackendKind, Device};

use super::serve::ServingFlags;

#[derive(Args)]
pub struct SegmentArgs {
    /// Deployment map (parva's or ParvaGPU's format).
    #[arg(long = "map", value_name = "FILE")]
    map: PathBuf,
    /// The segment to serve: `n<node>-g<gpu>-p<placement>` (`parva export k8s` names its objects
    /// after it; `parva route` lists them at `/v2/route/segments`).
    #[arg(long, value_name = "ID")]
    segment: SegmentId,
    /// With `--device cuda`: the CUDA device to run on (`MIG-...` or `GPU-...`) instead of the one
    /// found through NVML (the visible MIG device of the segment's size).
    #[arg(long, value_name = "UUID")]
    device_uuid: Option<String>,
    /// With `--device cuda`: start no MPS daemon (one runs for the device already; workers use
    /// the default pipe directory or CUDA_MPS_PIPE_DIRECTORY).
    #[arg(long)]
    no_mps: bool,
    #[command(flatten)]
    serving: ServingFlags,
}

/// The segment's device through NVML; where NVML cannot list MIG instances (a pod without the
/// privilege), through CUDA (a `parva doctor --cuda-probe` child of all visible devices).
fn find_device(seg: &parva_core::deploy::Segment, id: SegmentId) -> anyhow::Result<(String, String)> {
    let nvml_err = match parva_gpu::nvml::NvmlMig::load() {
        Ok(mut nvml) => match parva_gpu::segment::find_segment_device(&mut nvml, seg, &id.to_string()) {
            Ok(d) => return Ok((d.device, format!("{} on GPU {}, found through NVML", d.profile, d.gpu))),
            Err(parva_gpu::segment::FindDeviceError::Mig(e)) => e.to_string(),
            Err(e) => return Err(e.into()),
        },
        Err(e) => e.to_string(),
    };
    let program = std::env::current_exe().context("locate this executable for the CUDA probe")?;
    let mut probe = parva_gpu::cuda::ChildCudaProbe { program, timeout: std::time::Duration::from_secs(60) };
    let seen = parva_gpu::cuda::CudaProbe::probe(&mut probe, None)
        .map_err(|e| anyhow::anyhow!("cannot find the segment's device: NVML: {nvml_err}; CUDA: {e}"))?;
    let d = parva_gpu::segment::find_segment_device_cuda(&seen, seg, &id.to_string())?;
    Ok((d.device, format!("{}, found through CUDA (NVML: {nvml_err})", d.profile)))
}

pub fn run(args: SegmentArgs) -> anyhow::Result<ExitCode> {
    let (map, _) = DeploymentMap::read(&args.map)?;
    let id = args.segment;
    let one = map.only_segment(id)?;
    let seg = one.segments[0].clone();
    let (mut opts, default_run_dir) = args.serving.options(one, seg.node)?;
    // Absolute: the MPS pipe directory is handed to the daemon and the workers.
    opts.run_dir = std::path::absolute(&opts.run_dir).with_context(|| format!("resolve {}", opts.run_dir.display()))?;
    let mut mps: Option<(RealMps, String, MpsDirs)> = None;
    let mut on = "no device (emulated)".to_string();
    if opts.backend == BackendKind::Torch && opts.device == Device::Cuda {
        let (device, what) = match &args.device_uuid {
            Some(d) => (d.clone(), "given with --device-uuid".to_string()),
            None => find_device(&seg, id)?,
        };
        let dirs = MpsDirs::under(&opts.run_dir, &device);
        let mut env = vec![("CUDA_VISIBLE_DEVICES".to_string(), device.clone())];
        if !args.no_mps {
            std::fs::create_dir_all(&opts.run_dir).with_context(|| format!("create run directory {}", opts.run_dir.display()))?;
            let mut ctl = RealMps::default();
            ctl.start(&device, &dirs)?;
            env.push(("CUDA_MPS_PIPE_DIRECTORY".to_string(), dirs.pipe.display().to_string()));
            mps = Some((ctl, device.clone(), dirs));
        }
        opts.segment_env.insert((seg.gpu, seg.placement), env);
        on = format!("{device} ({what}){}", if args.no_mps { "" } else { ", with its own MPS daemon" });
    }
    eprintln!(
        "segment {id}: service {:?} (model {}), {} GPC(s), batch {}, {} process(es), {:.1} req/s of the service's rate; {on}",
        seg.service,
        seg.model,
        seg.instance_size,
        seg.batch_size,
        seg.num_proc,
        seg.rate.unwrap_or(0.0)
    );
    let served = super::serve::serve_until_signal(opts);
    if let Some((mut ctl, device, dirs)) = mps {
        if let Err(e) = ctl.stop(&device, &dirs) {
            eprintln!("warning: {e}");
        }
    }
    served?;
    super::serve::remove_default_run_dir(default_run_dir);
    Ok(ExitCode::SUCCESS)
}
