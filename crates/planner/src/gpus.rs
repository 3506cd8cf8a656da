//! The GPUs of a plan under construction: each holds MIG instances at legal placements, and a
//! segment can only be added where the catalogue says it fits.

use parva_core::mig::{GiProfile, GpuType, Placement};

use super::SegmentChoice;

/// A segment placed on a GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub start: u8,
    pub segment: SegmentChoice,
}

/// One GPU of a plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuState {
    pub placed: Vec<Placed>,
}

impl GpuState {
    pub fn used_gpcs(&self) -> u8 {
        self.placed.iter().map(|p| p.segment.size).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.placed.is_empty()
    }

    pub fn layout(&self, gpu: &GpuType) -> Vec<Placement> {
        self.placed
            .iter()
            .map(|p| Placement { profile: profile(gpu, p.segment.size), start: p.start })
            .collect()
    }

    /// The first start of `preferred` (or, when `preferred` is empty, of the profile's legal
    /// starts) where an instance of `size` fits now.
    pub fn free_start(&self, gpu: &GpuType, size: u8, preferred: &[u8]) -> Option<u8> {
        let free = gpu.free_starts(&self.layout(gpu), profile(gpu, size));
        if preferred.is_empty() {
            free.first().copied()
        } else {
            preferred.iter().copied().find(|s| free.contains(s))
        }
    }

    pub fn insert(&mut self, start: u8, segment: SegmentChoice) {
        let at = self.placed.partition_point(|p| p.start < start);
        self.placed.insert(at, Placed { start, segment });
    }
}

pub(crate) fn profile(gpu: &GpuType, size: u8) -> &'static GiProfile {
    gpu.profile_for_size(size).expect("segment sizes are checked against the GPU type when profiles are read")
}
