//! Node-name lists, `node,name`: which cluster node (a Kubernetes node name) runs each node of a
//! map (`parva export k8s --nodes`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{CsvInput, FormatError, Location};

/// Read a node-name list, `node,name` (the map's node number, the cluster's node name): header
/// checked, input bounded as every CSV parva reads, each bad row named by line and field.
pub fn read_node_names(path: &Path) -> Result<BTreeMap<u32, String>, FormatError> {
    let mut out = BTreeMap::new();
    CsvInput::for_each_pair(path, "open node list", ["node", "name"], |line, node, name| {
        let node = crate::profile::parse_int(node, Location::field(path, line, "node"), 0, u32::MAX as i64)? as u32;
        if name.is_empty() || name.len() > 253 || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.') {
            return Err(FormatError::invalid(Location::field(path, line, "name"), format!("{name:?} is not a Kubernetes node name (a lower-case DNS name)")));
        }
        if out.insert(node, name.to_string()).is_some() {
            return Err(FormatError::invalid(Location::field(path, line, "node"), format!("node {node} is named twice")));
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_lists_are_checked_row_by_row() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nodes.csv");
        std::fs::write(&p, "node,name\n0,gpu-a.example\n1, gpu-b \n").unwrap();
        let names = read_node_names(&p).unwrap();
        assert_eq!(names[&1], "gpu-b");
        for (text, want) in [
            ("n,name\n", "nodes.csv:1: header must be `node,name`"),
            ("node,name\nx,a\n", "nodes.csv:2: field `node`"),
            ("node,name\n0,Bad_Name\n", "nodes.csv:2: field `name`: \"Bad_Name\" is not a Kubernetes node name"),
            ("node,name\n0,a\n0,b\n", "nodes.csv:3: field `node`: node 0 is named twice"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read_node_names(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Any bytes, with or without the header: an answer, never a panic.
            #[test]
            fn arbitrary_bytes_never_panic(a in proptest::collection::vec(any::<u8>(), 0..400)) {
                let d = tempfile::tempdir().unwrap();
                let p = d.path().join("n.csv");
                std::fs::write(&p, &a).unwrap();
                let _ = read_node_names(&p);
                let mut with_header = b"node,name\n".to_vec();
                with_header.extend(&a);
                std::fs::write(&p, &with_header).unwrap();
                let _ = read_node_names(&p);
            }
        }
    }
}
