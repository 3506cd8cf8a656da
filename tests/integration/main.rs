//! The one integration-test binary: runs the real `parva` binary on fixtures and reference data.

mod plan_cli;
mod reference;
mod util;
