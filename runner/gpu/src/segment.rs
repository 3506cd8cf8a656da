//! Which device a segment process (`parva segment`) runs on, found through NVML rather than
//! taken from an environment variable: in a Kubernetes pod the device plugin exposes exactly the
//! MIG device the pod requested, and the container runtime may rewrite or blank
//! `CUDA_VISIBLE_DEVICES`/`NVIDIA_VISIBLE_DEVICES`, so the segment asks the driver what it sees.
//!
//! Rules ([`find_segment_device`]):
//! - MIG segment: among the visible MIG devices (with a compute instance) whose GI profile has
//!   the segment's size in GPCs, one alone is the segment's (a pod sees one); several (a whole
//!   node seen from outside a container) are narrowed to the one at the segment's GPU index and
//!   placement start; none, or several left, is an error naming what is visible.
//! - GPU without MIG (an MPS share of a whole GPU): the GPU at the segment's index, or the only
//!   GPU visible.

use parva_core::deploy::Segment;

use crate::mig::{MigControl, mig_device_name};

/// The device found for a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentDevice {
    /// What `CUDA_VISIBLE_DEVICES` takes: `MIG-<uuid>` or `GPU-<uuid>`.
    pub device: String,
    /// NVML index of its GPU as this process sees it.
    pub gpu: u32,
    /// Placement start of the MIG instance (`None` for a whole GPU).
    pub start: Option<u8>,
    /// `3g.40gb`, or the GPU's product name.
    pub profile: String,
}

/// Why no device could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum FindDeviceError {
    #[error(transparent)]
    Mig(#[from] crate::mig::MigError),
    #[error(
        "no visible device fits segment {segment} ({want}); this process sees: {seen}. In Kubernetes, check that the pod \
         requests the segment's MIG profile (nvidia.com/mig-<profile>: 1) and that the node's MIG layout is applied; \
         elsewhere pass --device-uuid"
    )]
    NoneFits { segment: String, want: String, seen: String },
    #[error("{count} visible devices fit segment {segment} ({want}): {seen}; pass --device-uuid to choose one")]
    Ambiguous { segment: String, want: String, count: usize, seen: String },
}

/// The device segment `seg` (named `id` in messages) should run on, from what `ctl` sees.
pub fn find_segment_device(ctl: &mut dyn MigControl, seg: &Segment, id: &str) -> Result<SegmentDevice, FindDeviceError> {
    let gpus = ctl.gpus()?;
    let mut seen = Vec::new();
    let mut fits = Vec::new();
    let mut whole = Vec::new();
    for g in &gpus {
        if !g.mig.current {
            seen.push(format!("GPU {} {} (no MIG)", g.index, g.name));
            whole.push(SegmentDevice { device: g.uuid.clone(), gpu: g.index, start: None, profile: g.name.clone() });
            continue;
        }
        let ty = g.gpu_type();
        for inst in ctl.instances(g.index)? {
            let Some(uuid) = &inst.uuid else { continue };
            let prof = ty.and_then(|t| t.profile_by_id(inst.profile_id));
            let name = prof.map(|p| p.name.to_string()).unwrap_or_else(|| format!("GI profile {}", inst.profile_id));
            seen.push(format!("GPU {} {name} at {}", g.index, inst.start));
            if prof.is_some_and(|p| p.gpcs == seg.instance_size) {
                fits.push(SegmentDevice { device: mig_device_name(uuid), gpu: g.index, start: Some(inst.start), profile: name });
            }
        }
    }
    let any_mig = gpus.iter().any(|g| g.mig.current);
    let want = if any_mig { format!("a {}-GPC MIG device", seg.instance_size) } else { "a whole GPU".to_string() };
    let mut candidates = if any_mig { fits } else { whole };
    if candidates.len() > 1 {
        let at: Vec<SegmentDevice> =
            candidates.iter().filter(|d| d.gpu == seg.gpu && (d.start.is_none() || d.start == Some(seg.placement))).cloned().collect();
        if at.len() == 1 {
            candidates = at;
        }
    }
    let seen = if seen.is_empty() { "no GPU".to_string() } else { seen.join(", ") };
    match candidates.len() {
        0 => Err(FindDeviceError::NoneFits { segment: id.to_string(), want, seen }),
        1 => Ok(candidates.remove(0)),
        n => Err(FindDeviceError::Ambiguous { segment: id.to_string(), want, count: n, seen }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeGpus;

    fn seg(gpu: u32, placement: u8, size: u8) -> Segment {
        Segment {
            node: 0,
            gpu,
            service: "s".into(),
            model: "m".into(),
            placement,
            instance_size: size,
            batch_size: 1,
            num_proc: 1,
            profile: None,
            gpu_type: None,
            throughput: None,
            rate: None,
            slo_ms: None,
            margin_ms: None,
        }
    }

    #[test]
    fn the_one_fitting_mig_device_is_found_and_a_whole_node_narrows_by_placement() {
        let mut fake = FakeGpus::from_spec("a100-80gb:2").unwrap();
        // 3g.40gb is profile 9, 4g.40gb profile 5, 1g.10gb profile 19 on an A100 80GB.
        let three = fake.create_instance(0, 9, 4).unwrap();
        fake.create_instance(0, 5, 0).unwrap();
        let one = fake.create_instance(1, 19, 6).unwrap();
        let d = find_segment_device(&mut fake, &seg(7, 0, 3), "n0-g7-p0").unwrap();
        assert_eq!(d.device, mig_device_name(three.uuid.as_deref().unwrap()));
        assert_eq!((d.gpu, d.start, d.profile.as_str()), (0, Some(4), "3g.40gb"));
        // Two 1g devices visible: the one at the segment's GPU and start.
        let other = fake.create_instance(1, 19, 5).unwrap();
        let d = find_segment_device(&mut fake, &seg(1, 6, 1), "n0-g1-p6").unwrap();
        assert_eq!(d.device, mig_device_name(one.uuid.as_deref().unwrap()));
        assert_ne!(d.device, mig_device_name(other.uuid.as_deref().unwrap()));
        let e = find_segment_device(&mut fake, &seg(2, 6, 1), "n0-g2-p6").unwrap_err().to_string();
        assert!(e.starts_with("2 visible devices fit segment n0-g2-p6 (a 1-GPC MIG device)"), "{e}");
        let e = find_segment_device(&mut fake, &seg(0, 0, 7), "n0-g0-p0").unwrap_err().to_string();
        assert!(e.contains("no visible device fits segment n0-g0-p0 (a 7-GPC MIG device)"), "{e}");
        assert!(e.contains("GPU 0 3g.40gb at 4") && e.contains("nvidia.com/mig-<profile>: 1"), "{e}");
    }

    #[test]
    fn without_mig_the_segment_gets_its_gpu_or_the_only_one() {
        let mut state = crate::fake::FakeState::from_spec("a100-80gb:1").unwrap();
        state.gpus[0].mig = crate::mig::MigMode::DISABLED;
        let mut fake = FakeGpus::new(state);
        let uuid = fake.gpus().unwrap()[0].uuid.clone();
        let d = find_segment_device(&mut fake, &seg(3, 0, 7), "n0-g3-p0").unwrap();
        assert_eq!((d.device.as_str(), d.start), (uuid.as_str(), None));
    }
}
