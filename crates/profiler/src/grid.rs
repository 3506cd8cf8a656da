//! The sweep's grid: instance sizes x MPS process counts x batch sizes, and the order in which
//! it is measured (size, then processes, then batch, all ascending: pruning follows batches up).

use serde::{Deserialize, Serialize};

use crate::error::ProfileError;

/// One grid point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Point {
    /// Instance size in GPCs.
    pub size: u8,
    /// MPS processes running the model in the instance.
    pub procs: u32,
    /// Rows per batch.
    pub batch: u32,
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "size {} procs {} batch {}", self.size, self.procs, self.batch)
    }
}

/// The sizes, process counts and batch sizes to measure (each sorted, without duplicates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    pub sizes: Vec<u8>,
    pub procs: Vec<u32>,
    pub batches: Vec<u32>,
}

/// Most MPS clients per device (the driver's limit is 48 on Volta and later).
pub const MAX_PROCS: u32 = 48;

/// The default batch sizes: 1, 2, 4, ..., 128.
pub fn default_batches() -> Vec<u32> {
    (0..8).map(|i| 1u32 << i).collect()
}

impl Grid {
    pub fn new(mut sizes: Vec<u8>, mut procs: Vec<u32>, mut batches: Vec<u32>) -> Result<Grid, ProfileError> {
        for v in [&mut procs, &mut batches] {
            v.sort_unstable();
            v.dedup();
        }
        sizes.sort_unstable();
        sizes.dedup();
        let bad = |field: &str, value: String, limit: &str| {
            Err(ProfileError::Config(format!("--{field} {value}: {limit}")))
        };
        if sizes.is_empty() || sizes[0] == 0 {
            return bad("sizes", format!("{sizes:?}"), "give at least one instance size of 1 or more GPCs");
        }
        if procs.is_empty() || procs[0] == 0 || procs[procs.len() - 1] > MAX_PROCS {
            return bad("procs", format!("{procs:?}"), &format!("process counts must be 1..={MAX_PROCS} (MPS clients per device)"));
        }
        if batches.is_empty() || batches[0] == 0 {
            return bad("batches", format!("{batches:?}"), "batch sizes must be 1 or more");
        }
        Ok(Grid { sizes, procs, batches })
    }

    /// Every point, in measuring order.
    pub fn points(&self) -> Vec<Point> {
        let mut out = Vec::with_capacity(self.len());
        for &size in &self.sizes {
            for &procs in &self.procs {
                for &batch in &self.batches {
                    out.push(Point { size, procs, batch });
                }
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.sizes.len() * self.procs.len() * self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_go_size_then_procs_then_batch_ascending() {
        let g = Grid::new(vec![7, 1], vec![2, 1, 2], vec![4, 1]).unwrap();
        assert_eq!(g.procs, vec![1, 2]);
        let pts = g.points();
        assert_eq!(pts.len(), g.len());
        assert_eq!(pts[0], Point { size: 1, procs: 1, batch: 1 });
        assert_eq!(pts[1], Point { size: 1, procs: 1, batch: 4 });
        assert_eq!(pts[2], Point { size: 1, procs: 2, batch: 1 });
        assert_eq!(pts[7], Point { size: 7, procs: 2, batch: 4 });
    }

    #[test]
    fn bad_grids_name_the_flag_and_the_limit() {
        let e = Grid::new(vec![], vec![1], vec![1]).unwrap_err().to_string();
        assert!(e.contains("--sizes"), "{e}");
        let e = Grid::new(vec![1], vec![49], vec![1]).unwrap_err().to_string();
        assert!(e.contains("--procs [49]") && e.contains("1..=48"), "{e}");
        let e = Grid::new(vec![1], vec![1], vec![0, 2]).unwrap_err().to_string();
        assert!(e.contains("--batches [0, 2]"), "{e}");
        assert_eq!(default_batches(), vec![1, 2, 4, 8, 16, 32, 64, 128]);
    }
}
