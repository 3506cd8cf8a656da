//! The log filter of both binaries (`parva` and `parva-worker`): `RUST_LOG` when it is set and
//! valid, the binary's default otherwise.
//!
//! `RUST_LOG` takes comma-separated `target=level` directives and a bare `level` for everything
//! else (`RUST_LOG=parva=debug,parva_runner=trace,warn`), as `env_logger` and tracing's
//! `EnvFilter` read them; the longest matching target wins. Span and field filters
//! (`[span{field=value}]`) are not read: parva's own logs are selected by target.

use std::io::Write as _;

use tracing_subscriber::filter::{LevelFilter, Targets};

/// The filter from `RUST_LOG` (see the module doc), or `default` when it is unset or blank; an
/// invalid `RUST_LOG` is said once on stderr and `default` used.
pub fn log_filter(default: &str) -> Targets {
    let value = std::env::var("RUST_LOG").ok();
    let (filter, warning) = filter_from(value.as_deref(), default);
    if let Some(w) = warning {
        let _ = writeln!(std::io::stderr(), "warning: {w}");
    }
    filter
}

/// Log to stderr (colour codes only for a person at a terminal, never in a log file or a pipe)
/// through [`log_filter`] with the binary's `default`: the one set-up of both binaries.
pub fn init(default: &str) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish()
        .with(log_filter(default))
        .init();
}

/// The filter from `value` (a `RUST_LOG`), or `default`, and what was wrong with `value`.
fn filter_from(value: Option<&str>, default: &str) -> (Targets, Option<String>) {
    // `default` is the binary's own constant; should it not parse, warnings and errors still show.
    let fallback = || default.parse::<Targets>().unwrap_or_else(|_| Targets::new().with_default(LevelFilter::WARN));
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (fallback(), None),
        Some(v) => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (fallback(), Some(format!("RUST_LOG={v:?} is not a log filter ({e}); logging {default:?} instead"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tracing::Level;

    #[test]
    fn unset_or_blank_is_the_default() {
        for value in [None, Some(""), Some("  ")] {
            let (f, w) = filter_from(value, "parva=info,parva_runner=warn");
            assert!(w.is_none());
            assert!(f.would_enable("parva", &Level::INFO));
            assert!(f.would_enable("parva_core::sim", &Level::INFO), "a target prefix covers its modules");
            assert!(!f.would_enable("parva_runner::router", &Level::INFO), "the longest target wins");
            assert!(!f.would_enable("hyper", &Level::ERROR), "nothing else without a bare level");
        }
    }

    #[test]
    fn rust_log_replaces_the_default() {
        let (f, w) = filter_from(Some("parva_runner=debug,error"), "parva=info");
        assert!(w.is_none());
        assert!(f.would_enable("parva_runner::batcher", &Level::DEBUG));
        assert!(!f.would_enable("parva", &Level::INFO));
        assert!(f.would_enable("hyper", &Level::ERROR));
    }

    #[test]
    fn an_invalid_rust_log_is_said_and_the_default_kept() {
        let (f, w) = filter_from(Some("parva=loud"), "parva=info");
        assert!(w.unwrap().contains("RUST_LOG=\"parva=loud\""));
        assert!(f.would_enable("parva", &Level::INFO));
        assert!(!f.would_enable("parva", &Level::DEBUG));
    }

    proptest! {
        /// Any RUST_LOG gives a filter (never a panic), and a warning exactly when it is refused.
        #[test]
        fn any_value_gives_a_filter(v in ".{0,64}") {
            let (_, w) = filter_from(Some(&v), "parva=info");
            let valid = v.trim().is_empty() || v.trim().parse::<Targets>().is_ok();
            prop_assert_eq!(w.is_none(), valid);
        }
    }
}
