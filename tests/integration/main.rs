//! The one integration-test binary: runs the real `parva` binary on fixtures and reference data.

mod catalogue_cli;
mod cli_hygiene;
mod data_path_cli;
mod day_cli;
mod deploy_cli;
mod deploy_reference;
mod doctor_cli;
mod fake_node_cli;
mod export_cli;
mod follow_cli;
mod jobs_cli;
mod margin_cli;
mod mps_cli;
mod optimal;
mod plan_cli;
mod profile_cli;
mod reference;
mod replan_cli;
mod route_cli;
mod serve_admission;
mod serve_emulated;
mod serve_limits;
mod serve_support;
mod serve_torch;
mod util;
mod verify_cli;
