//! `parva`: plan, serve and verify many DNN inference services on spatially shared GPUs.
//!
//! One binary with subcommands; `--json` prints machine-readable output on stdout, and logs go to
//! stderr (`-v`, or `RUST_LOG=parva=debug`). Exit codes: 0 success, 1 error, 2 usage error,
//! 3 the job ran but its result is incomplete (e.g. a plan with infeasible services).

mod commands;
mod k8s;

/// mimalloc for the router, the load generator and the emulated workers (all this binary): glibc
/// malloc's consolidation showed as ~22 % of their CPU under load; see Cargo.toml.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "parva", version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PARVA_COMMIT"), ")"), about, long_about = None)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Turn profile tables and SLOs into a deployment map.
    Plan(commands::plan::PlanArgs),
    /// Re-plan a running map for new rates or SLOs: the fewest GPUs, then the fewest changes to
    /// what runs, and the transition (make before break) with its capacity dips.
    Replan(commands::replan::ReplanArgs),
    /// Simulate a deployment map under Poisson or constant arrivals and report latency vs SLO.
    Simulate(commands::simulate::SimulateArgs),
    /// Check a deployment map (parva's or ParvaGPU's) against a GPU type's MIG rules.
    Validate(commands::validate::ValidateArgs),
    /// List the GPU types parva knows, with their MIG profiles and placements.
    Catalogue(commands::catalogue::CatalogueArgs),
    /// Serve one node of a deployment map over KServe v2 (router + worker processes).
    Serve(commands::serve::ServeArgs),
    /// Serve one segment of a map (one MIG instance or MPS share, with its own MPS daemon) over
    /// KServe v2, behind `parva route`.
    Segment(commands::segment::SegmentArgs),
    /// A stateless KServe v2 front for every service of a map, spreading each service over its
    /// segments on every node by planned capacity, with health checks and ejection.
    Route(commands::route::RouteArgs),
    /// Bring a node to a map's MIG layout (exact placements, diff, checkpoint, rollback), one MPS
    /// daemon per instance, then serve it.
    Deploy(commands::deploy::DeployArgs),
    /// Measure a model's profile table on a GPU (instance size x batch x MPS processes).
    Profile(commands::profile::ProfileArgs),
    /// Check that this machine is ready to profile and serve (a map): driver, GPUs and MIG, CUDA,
    /// MPS, the torch worker and the models; read-only, each problem with its fix.
    Doctor(commands::doctor::DoctorArgs),
    /// Export a map for other tools: `k8s`, the GPU Operator MIG config, node labels and workloads.
    Export(commands::export::ExportArgs),
    /// Load a KServe v2 endpoint open-loop at each service's SLO rate and check its latency SLO.
    Verify(commands::verify::VerifyArgs),
    /// The emulated worker process `parva serve --backend emulated` starts.
    #[command(hide = true)]
    Worker(commands::worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Plan(args) => commands::plan::run(args),
        Command::Replan(args) => commands::replan::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Catalogue(args) => commands::catalogue::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Segment(args) => commands::segment::run(args),
        Command::Route(args) => commands::route::run(args),
        Command::Deploy(args) => commands::deploy::run(args),
        Command::Profile(args) => commands::profile::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Worker(args) => commands::worker::run(args),
    };
    match result {
        Ok(code) => code,
        // Stdout closed by its reader (`parva catalogue | head -1`): nothing left to say, and not
        // a failure (see `commands::outln!` for why this and not the default SIGPIPE action).
        Err(err) if err.downcast_ref::<commands::StdoutError>().is_some_and(commands::StdoutError::is_closed_pipe) => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            // Not eprintln!, which panics when stderr is a closed pipe too (`2>&1 | head -1`).
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "parva=warn,parva_runner=warn,parva_gpu=warn,parva_control=info",
        1 => "parva=info,parva_core=info,parva_planner=info,parva_control=info,parva_runner=info,parva_gpu=info",
        _ => "parva=debug,parva_core=debug,parva_planner=debug,parva_control=debug,parva_runner=debug,parva_gpu=debug",
    };
    parva_proto::log::init(default);
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every subcommand (they run only when a subcommand is
    /// parsed, so a broken hidden one, like `parva worker` with two argument groups of one name,
    /// passed the build and failed at run time).
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
