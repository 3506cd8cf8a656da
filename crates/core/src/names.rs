//! The one rule for the names parva takes from its inputs and turns into file names, Kubernetes
//! label values and metric labels: service names, job names and model names.
//!
//! A name is 1 to 63 characters of ASCII letters, digits, `-`, `_` and `.`, starting and ending
//! with a letter or a digit. That is a Kubernetes label value (so `parva export k8s` can label
//! objects with it as it is), a file name in any directory (no `/`, never `.` or `..`, no control
//! characters), and safe to print. Regressions (issue 34): a job named `../../../escaped_job`
//! made `deploy --follow --jobs` write checkpoints outside `<run-dir>/jobs`; (issue 33) names of
//! 100 characters, or with `/`, `,` or NUL, were planned and then exported as label values
//! Kubernetes rejects.

use crate::error::{FormatError, Location};

/// Most characters of a name (a Kubernetes label value's limit).
pub const MAX_NAME_CHARS: usize = 63;

/// The rule, as messages state it.
pub const NAME_RULE: &str =
    "1 to 63 characters: letters, digits, '-', '_' and '.', starting and ending with a letter or a digit \
     (a Kubernetes label value and a safe file name)";

/// Whether `name` follows the rule.
pub fn is_valid(name: &str) -> bool {
    let b = name.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= MAX_NAME_CHARS
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `Ok` when `name` follows the rule; else what is wrong with it (`what`: "service name", ...).
pub fn check(what: &str, name: &str) -> Result<(), String> {
    if is_valid(name) {
        return Ok(());
    }
    let shown: String = name.chars().take(80).collect::<String>().escape_debug().to_string();
    let more = if name.chars().count() > 80 { "..." } else { "" };
    let why = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > MAX_NAME_CHARS {
        format!("is {} bytes long", name.len())
    } else if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        format!("has {:?}", c)
    } else {
        "does not start and end with a letter or a digit".to_string()
    };
    Err(format!("{what} \"{shown}{more}\" {why}; a name is {NAME_RULE}"))
}

/// [`check`] as an input error at `at`.
pub fn check_at(what: &str, name: &str, at: Location) -> Result<(), FormatError> {
    check(what, name).map_err(|m| FormatError::invalid(at, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_follow_one_rule_for_files_and_kubernetes_labels() {
        for ok in ["a", "resnet50", "chat-intent", "Search_Ranking.v2", &"x".repeat(63)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", ".", "..", "../../../escaped_job", "a/b", "a,b", "a\0b", "a b", "ü", &"x".repeat(64), "a\n"] {
            assert!(!is_valid(bad), "{bad:?}");
            assert!(check("job name", bad).unwrap_err().contains("a name is 1 to 63 characters"), "{bad:?}");
        }
        let e = check("service name", "a/b").unwrap_err();
        assert!(e.contains("service name \"a/b\" has '/'"), "{e}");
        assert!(check("service name", &"y".repeat(100)).unwrap_err().contains("is 100 bytes long"));
    }

    proptest! {
        /// Every valid name is a Kubernetes label value and a single path component that stays
        /// inside its directory.
        #[test]
        fn a_valid_name_is_a_label_value_and_a_plain_file_name(name in "\\PC{0,70}") {
            if is_valid(&name) {
                prop_assert!(name.len() <= 63);
                let p = std::path::Path::new("/base").join(&name);
                prop_assert_eq!(p.parent(), Some(std::path::Path::new("/base")));
                prop_assert!(name != "." && name != "..");
                prop_assert!(name.chars().all(|c| c.is_ascii_graphic()));
            }
        }
    }
}
