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
//!
//! Listing MIG instances through NVML may need privileges a pod lacks; then
//! [`find_segment_device_cuda`] asks CUDA instead (what a `parva doctor --cuda-probe` child sees:
//! each visible device's name, `... MIG 3g.40gb`, and UUID), by the same rules.

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

/// [`find_segment_device`] from what CUDA sees (a [`crate::cuda::CudaProbe`] of all visible
/// devices): a MIG device's name ends in `MIG <profile>`, whose `<g>g` is its size in GPCs.
pub fn find_segment_device_cuda(seen: &crate::cuda::CudaProbeResult, seg: &Segment, id: &str) -> Result<SegmentDevice, FindDeviceError> {
    let mut fits = Vec::new();
    let mut whole = Vec::new();
    for d in &seen.devices {
        match d.name.rsplit_once(" MIG ") {
            Some((_, profile)) => {
                let gpcs = profile.split_once('g').and_then(|(g, _)| g.parse::<u8>().ok());
                if gpcs == Some(seg.instance_size) {
                    fits.push(SegmentDevice { device: format!("MIG-{}", d.uuid), gpu: d.ordinal as u32, start: None, profile: profile.to_string() });
                }
            }
            None => whole.push(SegmentDevice { device: format!("GPU-{}", d.uuid), gpu: d.ordinal as u32, start: None, profile: d.name.clone() }),
        }
    }
    let any_mig = seen.devices.iter().any(|d| d.name.contains(" MIG "));
    let want = if any_mig { format!("a {}-GPC MIG device", seg.instance_size) } else { "a whole GPU".to_string() };
    let mut candidates = if any_mig { fits } else { whole };
    let seen_text = if seen.devices.is_empty() { "no CUDA device".to_string() } else { seen.devices.iter().map(|d| format!("{} ({})", d.name, d.uuid)).collect::<Vec<_>>().join(", ") };
    match candidates.len() {
        0 => Err(FindDeviceError::NoneFits { segment: id.to_string(), want, seen: seen_text }),
        1 => Ok(candidates.remove(0)),
        n => Err(FindDeviceError::Ambiguous { segment: id.to_string(), want, count: n, seen: seen_text }),
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
    fn cuda_finds_the_one_visible_mig_device_of_the_segment_size() {
        use crate::cuda::{CudaDevice, CudaProbeResult};
        let dev = |ordinal: usize, name: &str, uuid: &str| CudaDevice {
            ordinal,
            name: name.into(),
            uuid: uuid.into(),
            compute_capability: "8.0".into(),
            sms: 42,
            total_mib: 40000.0,
            free_mib: 39000.0,
            copy_gbps: None,
            context_ms: 1.0,
        };
        let seen = CudaProbeResult { driver_api: "13.0".into(), devices: vec![dev(0, "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "ab-cd")] };
        let d = find_segment_device_cuda(&seen, &seg(4, 4, 3), "n0-g4-p4").unwrap();
        assert_eq!((d.device.as_str(), d.profile.as_str()), ("MIG-ab-cd", "3g.40gb"));
        let e = find_segment_device_cuda(&seen, &seg(0, 0, 2), "n0-g0-p0").unwrap_err().to_string();
        assert!(e.contains("no visible device fits segment n0-g0-p0 (a 2-GPC MIG device)") && e.contains("MIG 3g.40gb (ab-cd)"), "{e}");
        let whole = CudaProbeResult { driver_api: "13.0".into(), devices: vec![dev(0, "NVIDIA L4", "11-22")] };
        assert_eq!(find_segment_device_cuda(&whole, &seg(0, 0, 7), "n0-g0-p0").unwrap().device, "GPU-11-22");
        let none = CudaProbeResult { driver_api: "13.0".into(), devices: vec![] };
        assert!(find_segment_device_cuda(&none, &seg(0, 0, 7), "x").unwrap_err().to_string().contains("this process sees: no CUDA device"));
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
