//! `parva deploy`: bring one node to a deployment map's MIG layout (exact placements through
//! NVML, diffed against what is there, checkpointed and rolled back on failure), start one MPS
//! daemon per instance, then serve (see `parva-gpu` and `parva-runner`).
//!
//! Fake GPUs for tests and demos without a GPU: `--fake-gpus a100-80gb:8` (or
//! `PARVA_FAKE_GPUS`) keeps the fake node's state in `<run-dir>/fake-gpus.json` and fakes the MPS
//! daemons with marker files; `PARVA_FAKE_FAIL=PATTERN#N` fails the N-th fake call matching
//! PATTERN (e.g. `create_instance#2`, `mps_start#1`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use parva_core::DeploymentMap;
use parva_gpu::exec::{DeployOutcome, Node, SegmentEnv};
use parva_gpu::mig::MigControl;
use parva_gpu::mps::{MpsControl, RealMps};
use parva_gpu::nvml::NvmlMig;
use parva_gpu::plan::{DeployOptions, parse_index_map};
use parva_runner::serve::ServePreview;
use parva_runner::{BackendKind, ServeOptions};

use parva_control::live::{Follow, FollowJobs, OpenNode};

use super::{BackendArg, DeviceArg};

#[derive(Args)]
pub struct DeployArgs {
    /// Deployment map (parva's or ParvaGPU's format; the latter needs --gpu-type).
    #[arg(long = "map", alias = "plan", value_name = "FILE", required_unless_present_any = ["teardown", "restore"])]
    plan: Option<PathBuf>,
    /// Which node of the map this machine is.
    #[arg(long, default_value_t = 0)]
    node: u32,
    /// GPU type of the map when it has no `gpu_type` column.
    #[arg(long = "gpu-type", alias = "gpu", value_name = "TYPE")]
    gpu: Option<String>,
    /// Plan GPU -> NVML index on this node, e.g. `0=2,1=3` (default: the same index).
    #[arg(long)]
    gpu_index_map: Option<String>,
    /// Checkpoint, deploy record, MPS pipe/log directories and worker files (default: run/node<N>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Print the exact ordered list of actions and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep instances outside the plan when they overlap no planned instance (default: destroy
    /// every instance of the plan's GPUs that the plan does not have).
    #[arg(long)]
    keep_unchanged: bool,
    /// Stop the serving deploy and every MPS daemon of the run directory, and destroy the
    /// instances parva created.
    #[arg(long, conflicts_with_all = ["restore", "dry_run"])]
    teardown: bool,
    /// Bring the node back to the checkpoint saved before the latest deploy.
    #[arg(long, conflicts_with = "dry_run")]
    restore: bool,
    /// No MIG: every segment on the whole GPU under one MPS daemon per GPU, its SMs capped at its
    /// GPC share with CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (no memory or fault isolation).
    #[arg(long)]
    no_mig: bool,
    /// Stop after bringing up MIG instances and MPS daemons (print each segment's environment).
    #[arg(long)]
    no_serve: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Directory of `<model>.json` metadata (and `<model>.pt` for --backend torch).
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// torch: TorchScript workers; emulated: workers sleep for the profiled latency and return
    /// zeros (needs --prof-data; reports say "EMULATED").
    #[arg(long, value_enum, default_value_t = BackendArg::Torch)]
    backend: BackendArg,
    /// Profile tables of the GPU type (needed by --backend emulated).
    #[arg(long)]
    prof_data: Option<PathBuf>,
    /// Where torch workers run their model (each sees only its segment's MIG device).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cuda)]
    device: DeviceArg,
    /// HTTP address of the KServe v2 router (port 0: any free port; printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Hard bound on the rows one worker process holds, in batches (a memory bound; requests are
    /// refused by their deadline long before: see `parva serve --help`).
    #[arg(long, alias = "queue-batches", default_value_t = parva_runner::serve::DEFAULT_QUEUE_BATCHES)]
    max_queue_batches: usize,
    /// For machines without a GPU (trying deploy out, tests): a fake node of COUNT GPUs of TYPE
    /// instead of NVML, with fake MPS daemons; its state is kept in <run-dir>/fake-gpus.json.
    /// Also PARVA_FAKE_GPUS=TYPE:COUNT.
    #[arg(long, value_name = "TYPE:COUNT")]
    fake_gpus: Option<String>,
    /// Every worker must be ready within this time of the router listening, else the deploy
    /// stops and rolls the node back to its checkpoint; so does a worker that fails to start 5
    /// times in a row (its restarts back off: 0.2 s, 0.4 s, ... up to 10 s).
    #[arg(long, default_value = "10m", value_parser = super::flags::parse_timeout)]
    ready_timeout: f64,
    #[command(flatten)]
    watchdog: super::serve::WatchdogFlag,
    #[command(flatten)]
    catalogue: super::CatalogueFiles,
    #[command(flatten)]
    follow: FollowArgs,
}

/// `--follow`: re-plan the node live as its load changes (see README, "A node that follows its load").
#[derive(Args)]
pub struct FollowArgs {
    /// Follow the load: measure each service's rate at the router and, when the forecast leaves
    /// the band the running plan was made for, re-plan with the fewest changes inside this node's
    /// GPUs and apply the transition live (make before break; a failed one is rolled back).
    /// Needs --services and --prof-data.
    #[arg(long, requires_all = ["services", "prof_data"], conflicts_with_all = ["dry_run", "no_serve"])]
    follow: bool,
    /// With --follow: the service list (`service,model,rate,slo_ms`) the map was planned for; its
    /// SLOs and models are kept, its rates are where the controller starts.
    #[arg(long, value_name = "FILE", requires = "follow")]
    services: Option<PathBuf>,
    /// With --follow: the --services list's models and SLOs win over the map's where they
    /// differ (without it such a list is refused, the differences named).
    #[arg(long, requires = "services")]
    replace_services: bool,
    /// With --follow: the controller: forecast (trend, time of day and burstiness over the next
    /// --horizon; the default) or reactive (only the last windows).
    #[arg(long, value_enum, default_value_t = ControllerMode::Forecast, requires = "follow")]
    controller: ControllerMode,
    #[command(flatten)]
    settings: super::flags::ControllerFlags,
    /// With --follow: most MPS processes per segment in new plans.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16), requires = "follow")]
    max_procs: u32,
    /// With --follow: best-effort jobs (`job,model,kind,min_gpcs,max_gpcs,priority`) on the GPCs
    /// the serving map leaves free; reclaimed first when inference needs them, restarted from
    /// their checkpoints (under <run-dir>/jobs/) when it gives them back.
    #[arg(long, value_name = "FILE", requires = "follow")]
    jobs: Option<PathBuf>,
    /// With --jobs: how long a reclaimed job has to checkpoint and exit before it is killed
    /// (the longest a job may delay a transition).
    #[arg(long, default_value = "30s", value_parser = super::flags::parse_seconds, requires = "jobs")]
    job_grace: f64,
}

/// `--controller`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ControllerMode {
    Forecast,
    Reactive,
}

/// The fake node's state in a run directory.
const FAKE_STATE: &str = "fake-gpus.json";

/// The controllers: NVML + real MPS, or the fakes.
struct Controllers {
    mig: Box<dyn MigControl>,
    mps: Box<dyn MpsControl>,
    /// The fake spec, when faking.
    fake: Option<String>,
}

/// The exact command that tears this deploy down.
fn teardown_command(args: &DeployArgs, run_dir: &Path) -> String {
    let mut cmd = format!("parva deploy --teardown --run-dir {}", run_dir.display());
    if let Some(spec) = &args.fake_gpus {
        cmd.push_str(&format!(" --fake-gpus {spec}"));
    }
    cmd
}

fn controllers(args: &DeployArgs, run_dir: &Path) -> anyhow::Result<Controllers> {
    let state = run_dir.join(FAKE_STATE);
    // A run directory that holds a fake node's state was deployed on fake GPUs: its teardown and
    // restore act on them, flag or not (regression, issue 34: "cannot load NVML").
    let recorded = args.fake_gpus.is_none() && std::env::var_os("PARVA_FAKE_GPUS").is_none() && state.is_file();
    if recorded && !(args.teardown || args.restore) {
        anyhow::bail!(
            "{} holds the state of fake GPUs from an earlier `parva deploy --fake-gpus`: pass --fake-gpus again to deploy on them, \
             or tear that deploy down first (`parva deploy --teardown --run-dir {}`), or use another --run-dir",
            state.display(),
            run_dir.display()
        );
    }
    let flag = if recorded {
        eprintln!("note: {} was deployed on fake GPUs: using their recorded state ({})", run_dir.display(), state.display());
        Some("recorded")
    } else {
        args.fake_gpus.as_deref()
    };
    let Some(fake) = super::fake_node(flag, Some(&state))? else {
        let mig = NvmlMig::load()?;
        return Ok(Controllers { mig: Box::new(mig), mps: Box::new(RealMps::default()), fake: None });
    };
    Ok(Controllers { mig: Box::new(fake.gpus), mps: Box::new(fake.mps), fake: Some(fake.spec) })
}

pub fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let run_dir = args.run_dir.clone().unwrap_or_else(|| PathBuf::from(format!("run/node{}", args.node)));
    // Absolute: MPS pipe directories are handed to daemons and workers started elsewhere.
    let run_dir = std::path::absolute(&run_dir).with_context(|| format!("resolve {}", run_dir.display()))?;
    if !args.dry_run {
        std::fs::create_dir_all(&run_dir).with_context(|| format!("create run directory {}", run_dir.display()))?;
    }
    args.catalogue.load()?;
    let mut ctl = controllers(&args, &run_dir)?;
    if let Some(spec) = &ctl.fake {
        if args.dry_run {
            eprintln!("using FAKE GPUs ({spec}); a dry run keeps no state");
        } else {
            eprintln!("using FAKE GPUs ({spec}), state in {}", run_dir.join(FAKE_STATE).display());
        }
    }
    if args.dry_run {
        // A dry run changes nothing, but the deploy it previews must be able to make its run
        // directory (regression, issue 34: `--dry-run --run-dir /proc/x` passed).
        parva_core::files::check_creatable_dir(&run_dir)?;
    }
    for note in super::learn_unknown_gpus(ctl.mig.as_mut(), None)? {
        eprintln!("note: {note}");
    }
    let node_gpus = u32::try_from(ctl.mig.gpus()?.len()).unwrap_or(u32::MAX);
    let mut node = Node { mig: ctl.mig.as_mut(), mps: ctl.mps.as_mut(), run_dir: run_dir.clone() };
    if args.teardown || args.restore {
        let (what, done) = if args.teardown { ("teardown", node.teardown()?) } else { ("restore", node.restore()?) };
        if args.json {
            super::print_json(&serde_json::json!({ "node": args.node, "done": what, "changes": done }))?;
        } else {
            for line in &done {
                outln!("{line}")?;
            }
            outln!("{what}: {} change(s) on node {}", done.len(), args.node)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let plan_path = args.plan.clone().context("--map is required")?;
    let (mut map, _) = DeploymentMap::read(&plan_path)?;
    super::note_best_effort_rows(&map, args.follow.jobs.is_some());
    // A map's best-effort rows are not deployed as such: with --follow --jobs the controller
    // places the jobs itself; otherwise their GPCs stay free.
    map.jobs.clear();
    let opts = DeployOptions {
        node: args.node,
        gpu_type: args.gpu.clone(),
        gpu_index_map: args.gpu_index_map.as_deref().map(parse_index_map).transpose()?.unwrap_or_default(),
        no_mig: args.no_mig,
        keep_unchanged: args.keep_unchanged,
    };
    // Serving is checked before the first MIG change (worker binary, every model's files, the
    // port, the run directory): a deploy that could not serve changes nothing.
    let preview = if args.no_serve {
        None
    } else {
        let mut sopts = serve_options(&args, map.clone(), &run_dir, &[]);
        let p = parva_runner::serve::preflight(&mut sopts)
            .with_context(|| format!("node {} could not serve {} (nothing changed)", args.node, plan_path.display()))?;
        Some(p)
    };
    // The controller's inputs are checked before the first MIG change too.
    if !args.follow.follow && args.follow.settings.settings(parva_control::Mode::Forecast).ok() != Some(parva_control::Settings::default()) {
        anyhow::bail!("the follow controller's flags (--window, --headroom, --down-after, ...) need --follow");
    }
    let follow = if args.follow.follow { Some(follow_setup(&args, &map, &run_dir, &opts, node_gpus)?) } else { None };
    let outcome = node.deploy(&map, &opts, args.dry_run).with_context(|| format!("deploy {} on node {}", plan_path.display(), args.node))?;
    report(&args, &plan_path, &outcome, preview.as_ref())?;
    if args.dry_run || args.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    // Fake nodes only: PARVA_FAKE_FAIL=serve_start makes serving fail after the MIG changes (tests
    // of the rollback below).
    let inject = ctl.fake.is_some() && std::env::var("PARVA_FAKE_FAIL").is_ok_and(|f| f == "serve_start");
    drop(ctl);
    let served = if inject {
        Err(anyhow::anyhow!("injected failure (PARVA_FAKE_FAIL=serve_start): serving did not start"))
    } else {
        serve(&args, map, &run_dir, &outcome.segments, follow)
    };
    match served {
        Ok(code) => Ok(code),
        Err(e) if outcome.applied && outcome.checkpoint.is_some() => {
            // Serving failed to start after the MIG changes: back to the checkpoint, as promised.
            eprintln!("error: serving failed ({e:#}); rolling node {} back to its checkpoint", args.node);
            let mut ctl = controllers(&args, &run_dir)?;
            let mut node = Node { mig: ctl.mig.as_mut(), mps: ctl.mps.as_mut(), run_dir: run_dir.clone() };
            let undone = node.restore().context("rolling back after serving failed")?;
            // Nothing of this deploy is left to tear down.
            let _ = std::fs::remove_file(run_dir.join(parva_gpu::exec::RECORD_FILE));
            for line in &undone {
                eprintln!("rolled back: {line}");
            }
            Err(e.context(format!("serving failed; node {} restored to its checkpoint ({} change(s) undone)", args.node, undone.len())))
        }
        Err(e) => Err(e),
    }
}

/// The serving options of a deploy (also what its pre-flight checks).
fn serve_options(args: &DeployArgs, map: DeploymentMap, run_dir: &Path, segments: &[SegmentEnv]) -> ServeOptions {
    let backend: BackendKind = args.backend.into();
    let mut opts = ServeOptions::new(map, args.node, args.models.clone(), backend);
    opts.prof_data = args.prof_data.clone();
    opts.device = args.device.into();
    opts.listen = args.listen;
    opts.run_dir = run_dir.join("serve");
    opts.queue_batches = args.max_queue_batches;
    opts.ready_timeout = std::time::Duration::from_secs_f64(args.ready_timeout);
    opts.startup = Some(parva_runner::serve::StartupGuard { ready_within: opts.ready_timeout, ..Default::default() });
    args.watchdog.apply(&mut opts);
    opts.segment_env = segments.iter().map(|s| ((s.plan_gpu, s.start), s.env.clone())).collect::<BTreeMap<_, _>>();
    opts
}

fn report(args: &DeployArgs, plan: &Path, out: &DeployOutcome, serving: Option<&ServePreview>) -> anyhow::Result<()> {
    let mode = if out.plan.no_mig {
        "no-mig: whole GPUs, one MPS daemon each, SMs capped by CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (no MIG isolation)"
    } else {
        "mig: one MIG instance and one MPS daemon per segment"
    };
    if args.json {
        return super::print_json(&serde_json::json!({
            "plan": plan, "node": out.plan.node, "gpu_type": out.plan.gpu_type, "dry_run": args.dry_run,
            "applied": out.applied, "mode": mode, "no_mig": out.plan.no_mig,
            "actions": out.plan.actions, "steps": out.plan.actions.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "untouched": out.plan.untouched, "targets": out.plan.targets, "segments": out.segments,
            "checkpoint": out.checkpoint, "serving": serving,
        }));
    }
    let verb = if args.dry_run { "dry run (nothing changed)" } else { "deployed" };
    outln!("{verb}: node {} of {} on {} GPUs; mode {mode}", out.plan.node, plan.display(), out.plan.gpu_type)?;
    for t in out.plan.targets.iter().filter(|t| t.kept_device.is_some()) {
        outln!("keep: GPU {}: {} at {{{}}} ({}) for {}", t.gpu, t.profile, t.start, t.kept_device.as_deref().unwrap_or(""), t.service)?;
    }
    for u in &out.plan.untouched {
        outln!("untouched (--keep-unchanged): {u}")?;
    }
    outln!("actions ({}):", out.plan.actions.len())?;
    for (i, a) in out.plan.actions.iter().enumerate() {
        outln!("  {}. {a}", i + 1)?;
    }
    if let Some(ck) = &out.checkpoint {
        outln!("checkpoint of the node before the change: {} (parva deploy --restore)", ck.display())?;
    }
    outln!("segments ({}):", out.segments.len())?;
    for s in &out.segments {
        let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!("  GPU {} (plan GPU {}) {{{}}} {} {} ({}): {}", s.gpu, s.plan_gpu, s.start, s.profile, s.service, s.model, env.join(" "))?;
    }
    if let Some(p) = serving {
        let then = if args.dry_run { "would serve" } else { "serving" };
        outln!(
            "{then}: {} worker(s), backend {} on {}, {} on http://{}, run directory {}",
            p.workers.len(), p.backend, p.device, p.worker_program.display(), p.listen, p.run_dir.display()
        )?;
        let mut per_segment: BTreeMap<(u32, u8), (&str, &str, u32, usize)> = BTreeMap::new();
        for w in &p.workers {
            per_segment.entry((w.gpu, w.placement)).or_insert((&w.service, &w.model, w.max_batch, 0)).3 += 1;
        }
        for ((gpu, start), (service, model, batch, procs)) in per_segment {
            outln!("  plan GPU {gpu} {{{start}}} {service} ({model}): {procs} worker(s), batch {batch}")?;
        }
    }
    Ok(())
}

/// The live controller of `--follow`, checked before serving starts.
fn follow_setup(args: &DeployArgs, map: &DeploymentMap, run_dir: &Path, opts: &DeployOptions, node_gpus: u32) -> anyhow::Result<Arc<Follow>> {
    let f = &args.follow;
    let mode = match f.controller {
        ControllerMode::Forecast => parva_control::Mode::Forecast,
        ControllerMode::Reactive => parva_control::Mode::Reactive,
    };
    let settings = f.settings.settings(mode)?;
    // The controller re-plans one GPU type: a mixed fleet's map is refused, not followed as its
    // first row's type.
    let gpu_id = map.single_gpu_type(opts.gpu_type.as_deref()).map_err(|e| anyhow::anyhow!("--follow re-plans one GPU type: {e}"))?;
    let gpu = parva_core::mig::GpuType::by_id(&gpu_id)?;
    let prof = args.prof_data.as_deref().context("--follow needs --prof-data")?;
    let profiles = parva_core::ProfileSet::read_dir(prof, Some(gpu))?;
    let file = args.follow.services.as_deref().context("--follow needs --services")?;
    let services = parva_core::slo::read_services(file, &profiles)?;
    let served: std::collections::BTreeSet<&str> = map.segments.iter().filter(|s| s.node == args.node).map(|s| s.service.as_str()).collect();
    let listed: std::collections::BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    if served != listed {
        anyhow::bail!(
            "--follow: {} lists services {:?} and node {} of the map serves {:?}; they must be the same",
            file.display(), listed, args.node, served
        );
    }
    let refuse = super::Contradictions { missing: false, extra: false, models: true, slos: true };
    super::check_services_against_map(map, Some(args.node), &services, file, refuse, args.follow.replace_services)?;
    let jobs = match &args.follow.jobs {
        Some(path) => {
            let jobs = parva_core::jobs::read_jobs(path, Some(&profiles))?;
            let backend: BackendKind = args.backend.into();
            let worker = parva_runner::serve::default_worker_command(backend)?;
            let command = parva_runner::jobs::JobCommand {
                program: worker.program,
                args: worker.args,
                models_dir: args.models.clone(),
                // The emulated job spends 1 ms per row of a step (a train step three times that).
                emulated_ms_per_row: (backend == BackendKind::Emulated).then_some(1.0),
                device: (backend == BackendKind::Torch).then(|| parva_runner::serve::Device::from(args.device).name().to_string()),
                checkpoint_every_s: 60.0,
            };
            Some(FollowJobs {
                jobs,
                grace: std::time::Duration::from_secs_f64(args.follow.job_grace),
                procs: std::sync::Mutex::new(parva_runner::jobs::JobProcs::new(run_dir.join("jobs"), command)),
            })
        }
        None => None,
    };
    let fake = args.fake_gpus.clone();
    let state = run_dir.join(FAKE_STATE);
    let open: OpenNode = Arc::new(move || {
        if let Some(fake) = super::fake_node(fake.as_deref(), Some(&state))? {
            return Ok((Box::new(fake.gpus) as Box<dyn MigControl>, Box::new(fake.mps) as Box<dyn MpsControl>));
        }
        Ok((Box::new(NvmlMig::load()?) as Box<dyn MigControl>, Box::new(RealMps::default()) as Box<dyn MpsControl>))
    });
    Ok(Arc::new(Follow {
        settings,
        services,
        profiles,
        gpu,
        node_gpus,
        costs: parva_planner::replan::Costs::default(),
        max_procs: f.max_procs,
        deploy: opts.clone(),
        run_dir: run_dir.to_path_buf(),
        open,
        jobs,
    }))
}

fn serve(args: &DeployArgs, map: DeploymentMap, run_dir: &Path, segments: &[SegmentEnv], follow: Option<Arc<Follow>>) -> anyhow::Result<ExitCode> {
    let mut opts = serve_options(args, map, run_dir, segments);
    if let Some(f) = follow {
        eprintln!("following the load: {}", f.settings);
        opts.control = Some(Box::new(move |live| Box::pin(parva_control::live::run(f, live))));
    }
    super::serve::serve_until_signal(opts)?;
    if run_dir.join(parva_gpu::exec::TEARDOWN_MARKER).exists() {
        eprintln!("stopped serving: `parva deploy --teardown` is removing the MIG instances and MPS daemons");
    } else {
        eprintln!("stopped serving; MIG instances and MPS daemons stay (`{}` removes them)", teardown_command(args, run_dir));
    }
    Ok(ExitCode::SUCCESS)
}

