//! ParvaGPU's published A100 scenarios (read from ../shared when present).

use parva_core::mig::GpuType;
use parva_core::DeploymentMap;

use crate::util::{parva, reference_dir, stdout};

/// GPUs the published planner used on scenarios 1-6 (A100 80GB, 45 % rule, 1-3 processes).
const PUBLISHED_GPUS: [usize; 6] = [2, 3, 5, 7, 13, 17];

#[test]
fn parvagpu_algorithm_matches_published_gpu_counts_with_legal_layouts() {
    let Some(dir) = reference_dir() else { return };
    let out_dir = tempfile::tempdir().unwrap();
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    for (i, want) in PUBLISHED_GPUS.iter().enumerate() {
        let n = i + 1;
        let out = out_dir.path().join(format!("SLO{n}.csv"));
        let o = parva(&[
            "plan", "--prof-data", dir.join("prof_data").to_str().unwrap(),
            "--slo-dir", dir.join("SLO").to_str().unwrap(), "--slo", &n.to_string(),
            "--gpu", "a100-80gb", "--algorithm", "parvagpu", "--latency-budget", "0.45", "--max-procs", "3",
            "--out", out.to_str().unwrap(), "--json",
        ]);
        assert!(o.status.success(), "scenario {n}: {}", crate::util::stderr(&o));
        let summary: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(summary["gpus"].as_u64().unwrap() as usize, *want, "scenario {n}");
        for svc in summary["services"].as_array().unwrap() {
            let (rate, cap) = (svc["rate"].as_f64().unwrap(), svc["capacity"].as_f64().unwrap());
            assert!(cap >= rate, "scenario {n}: {} capacity {cap} < rate {rate}", svc["service"]);
        }
        let (map, _) = DeploymentMap::read(&out).unwrap();
        assert_eq!(map.gpu_count(), *want);
        assert!(map.check_layouts(gpu).is_empty(), "scenario {n}: {:?}", map.check_layouts(gpu));
    }
}

#[test]
fn validate_flags_published_overlapping_maps() {
    // A map in ParvaGPU's own format with the overlap its allocator produces (1g at 6 inside a 3g
    // at 4); `parva validate` must name the GPU and exit non-zero.
    let d = tempfile::tempdir().unwrap();
    let map = d.path().join("SLO6_ParvaGPU_deploy.csv");
    std::fs::write(
        &map,
        "Num instance,Num GPU,Model,Placement,Instance size,Batch size,Num proc\n\
         0,4,densenet121,4,3,16,3\n0,4,bert,1,1,128,3\n0,4,bert,6,1,128,3\n0,5,vgg19,0,7,32,1\n",
    )
    .unwrap();
    let o = parva(&["validate", "--plan", map.to_str().unwrap(), "--gpu", "a100-80gb"]);
    assert_eq!(o.status.code(), Some(3));
    let text = stdout(&o);
    assert!(text.contains("node 0 GPU 4") && text.contains("overlaps"), "{text}");
    assert!(!text.contains("GPU 5"), "{text}");
}
