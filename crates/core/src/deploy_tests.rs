use super::*;

#[test]
fn round_trip_parva_format() {
    let text = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                0,0,svc-a,resnet50,0,4,16,2,4g.40gb,a100-80gb,900.5,1000,100\n\
                0,0,svc-b,bert,4,3,8,1,,a100-80gb,,,\n";
    let (map, fmt) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
    assert_eq!(fmt, MapFormat::Parva);
    assert_eq!(map.segments.len(), 2);
    assert_eq!(map.segments[0].throughput, Some(900.5));
    assert_eq!(map.segments[1].profile, None);
    let mut out = Vec::new();
    map.write_to(&mut out).unwrap();
    let (again, _) = DeploymentMap::read_from(out.as_slice(), Path::new("d.csv")).unwrap();
    assert_eq!(again, map);
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    assert!(map.check_layouts(gpu).is_empty());
}

const JOBS_MAP: &str = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms,role,job_kind,priority\n\
                0,0,svc-a,resnet50,0,4,16,2,4g.40gb,a100-80gb,900.5,1000,100,serve,,\n\
                0,0,ft,bert,4,2,32,1,2g.20gb,a100-80gb,120,,,best-effort,train,5\n\
                0,0,score,resnet50,6,1,64,1,1g.10gb,a100-80gb,300,,,best-effort,batch,1\n";

#[test]
fn best_effort_rows_round_trip_apart_from_the_serving_segments() {
    let (map, _) = DeploymentMap::read_from(JOBS_MAP.as_bytes(), Path::new("d.csv")).unwrap();
    assert_eq!(map.segments.len(), 1, "a job is never a serving segment");
    assert_eq!(map.jobs.len(), 2);
    assert_eq!((map.jobs[0].job.as_str(), map.jobs[0].kind, map.jobs[0].priority), ("ft", crate::jobs::JobKind::Train, 5));
    let mut out = Vec::new();
    map.write_to(&mut out).unwrap();
    assert_eq!(String::from_utf8(out.clone()).unwrap(), JOBS_MAP);
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    assert!(map.check_layouts(gpu).is_empty());
    // Maps without jobs keep their columns (and bytes) as before.
    let plain = DeploymentMap { segments: map.segments.clone(), jobs: Vec::new() };
    let mut out = Vec::new();
    plain.write_to(&mut out).unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("role"));
}

/// Issue 38: `validate` said "on 8 GPUs" for a cluster plan whose jobs filled a second node.
#[test]
fn gpus_with_jobs_count_the_gpus_only_jobs_use() {
    let text = format!("{JOBS_MAP}1,3,more,bert,0,7,32,1,7g.80gb,a100-80gb,300,,,best-effort,train,2\n");
    let (map, _) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
    assert_eq!((map.gpu_count(), map.gpu_count_with_jobs()), (1, 2));
    let (plain, _) = DeploymentMap::read_from(JOBS_MAP.as_bytes(), Path::new("d.csv")).unwrap();
    assert_eq!((plain.gpu_count(), plain.gpu_count_with_jobs()), (1, 1), "jobs beside segments add no GPU");
}

#[test]
fn the_parvagpu_writer_leaves_best_effort_rows_out() {
    let (map, _) = DeploymentMap::read_from(JOBS_MAP.as_bytes(), Path::new("d.csv")).unwrap();
    let mut out = Vec::new();
    map.write_parvagpu_to(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text, "Num instance,Num GPU,Model,Placement,Instance size,Batch size,Num proc\n0,0,resnet50,0,4,16,2\n");
    let (back, fmt) = DeploymentMap::read_from(text.as_bytes(), Path::new("p.csv")).unwrap();
    assert_eq!((fmt, back.segments.len(), back.jobs.len()), (MapFormat::ParvaGpu, 1, 0));
}

#[test]
fn a_job_overlapping_a_segment_or_a_bad_best_effort_row_is_refused() {
    // The job's 3g at 4 overlaps nothing, but a 4g at 0 plus a 4g job at 0 do.
    let overlap = JOBS_MAP.replace("0,0,ft,bert,4,2,32,1,2g.20gb", "0,0,ft,bert,0,4,32,1,4g.40gb");
    let (map, _) = DeploymentMap::read_from(overlap.as_bytes(), Path::new("d.csv")).unwrap();
    assert!(!map.check_layouts(GpuType::by_id("a100-80gb").unwrap()).is_empty());
    for (from, to, want) in [
        ("best-effort,train,5", "spare,train,5", "d.csv:3: field `role`: must be `serve` or `best-effort`; found \"spare\""),
        ("best-effort,train,5", "best-effort,tune,5", "d.csv:3: field `job_kind`: a best-effort row's job_kind must be `train` or `batch`; found \"tune\""),
        ("best-effort,train,5", "best-effort,train,1001", "d.csv:3: field `priority`"),
        ("2g.20gb,a100-80gb,120,,,", "2g.20gb,a100-80gb,120,5,,", "d.csv:3: a best-effort row has num_proc 1 and no rate or slo_ms"),
        ("0,0,ft,bert", "0,0,svc-a,bert", "d.csv:3: field `service`: \"svc-a\" names both a best-effort job and a service (line 2)"),
        ("2g.20gb,a100-80gb,120", "2g.20gb,h100-80gb,120", "d.csv:3: field `gpu_type`: is h100-80gb here but a100-80gb on line 2"),
    ] {
        let text = JOBS_MAP.replacen(from, to, 1);
        let e = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap_err().to_string();
        assert!(e.starts_with(want), "{to}: {e}");
    }
}

#[test]
fn a_node_of_a_multi_node_map_gets_its_share_of_each_service_by_capacity() {
    let text = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n\
                0,0,a,m,0,4,8,1,,a100-80gb,300,400,100\n\
                1,0,a,m,0,4,8,1,,a100-80gb,100,400,100\n\
                1,0,b,m,4,3,8,1,,a100-80gb,50,20,100\n";
    let (map, _) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
    let shares = map.node_shares(1);
    assert_eq!(shares.len(), 2);
    assert!((shares["a"] - 0.25).abs() < 1e-12 && (shares["b"] - 1.0).abs() < 1e-12, "{shares:?}");
    assert_eq!(map.node_shares(0).keys().collect::<Vec<_>>(), ["a"]);
    let one = map.for_node(1);
    assert_eq!(one.segments.len(), 2);
    assert_eq!(one.segments[0].rate, Some(100.0), "a: 400/s x 1/4");
    assert_eq!(one.segments[1].rate, Some(20.0));
    assert!(map.for_node(7).segments.is_empty());
    // Without capacities, GPCs x processes weigh the split.
    let bare = text.replace(",300,", ",,").replace(",100,400", ",,400").replace(",50,", ",,");
    let (bare, _) = DeploymentMap::read_from(bare.as_bytes(), Path::new("d.csv")).unwrap();
    assert!((bare.node_shares(0)["a"] - 0.5).abs() < 1e-12);
}

#[test]
fn reads_parvagpu_format_and_finds_its_overlaps() {
    let text = "Num instance,Num GPU,Model,Placement,Instance size,Batch size,Num proc\n\
                0,4,densenet121,4,3,16,3\n0,4,bert,6,1,128,3\n1,0,vgg19,0,7,32,1\n";
    let (map, fmt) = DeploymentMap::read_from(text.as_bytes(), Path::new("p.csv")).unwrap();
    assert_eq!(fmt, MapFormat::ParvaGpu);
    assert_eq!(map.segments[1].service, "bert");
    assert_eq!(map.gpu_count(), 2);
    let problems = map.check_layouts(GpuType::by_id("a100-80gb").unwrap());
    assert_eq!(problems.len(), 1);
    assert!(problems[0].to_string().contains("node 0 GPU 4") && problems[0].to_string().contains("overlaps"));
}

#[test]
fn check_layouts_honours_the_profile_column() {
    let gpu = GpuType::by_id("a100-80gb").unwrap();
    let head = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile\n";
    // 1g.20gb takes two memory slices: at 0 it overlaps a 1g.10gb at 1.
    let text = format!("{head}0,0,a,m,0,1,1,1,1g.20gb\n0,0,b,m,1,1,1,1,1g.10gb\n");
    let (map, _) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
    let problems = map.check_layouts(gpu);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].problem.contains("overlaps"), "{problems:?}");
    // A profile that contradicts instance_size, and one the GPU does not have.
    let text = format!("{head}0,0,a,m,0,2,1,1,1g.20gb\n0,1,b,m,0,1,1,1,1g.6gb\n");
    let (map, _) = DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap();
    let problems: Vec<String> = map.check_layouts(gpu).iter().map(|p| p.to_string()).collect();
    assert!(problems.iter().any(|p| p.contains("1g.20gb") && p.contains("instance_size is 2")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("1g.6gb") && p.contains("not a MIG profile")), "{problems:?}");
}

#[test]
fn map_error_paths() {
    let bad = |t: &str| DeploymentMap::read_from(t.as_bytes(), Path::new("d.csv")).unwrap_err().to_string();
    let e = bad("a,b,c\n1,2,3\n");
    assert!(e.contains("d.csv:1") && e.contains("header"), "{e}");
    let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc\n0,0,s,m,16,1,1,1\n");
    assert!(e.contains("d.csv:2: field `placement`") && e.contains("16"), "{e}");
    let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc\n0,0,s,m,0,17,1,1\n");
    assert!(e.contains("d.csv:2: field `instance_size`") && e.contains("17"), "{e}");
    let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc\n0,0,,m,0,1,1,1\n");
    assert!(e.contains("field `service`"), "{e}");
    let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc\n");
    assert!(e.contains("no segments"), "{e}");
    let e = bad("node,gpu,service,model,placement,instance_size,batch_size,num_proc,throughput\n0,0,s,m,0,1,1,1,-2\n");
    assert!(e.contains("field `throughput`"), "{e}");
}

const HEAD: &str = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms\n";

fn err(text: &str) -> FormatError {
    DeploymentMap::read_from(text.as_bytes(), Path::new("d.csv")).unwrap_err()
}

fn at(e: &FormatError) -> (u64, String) {
    let l = e.location().expect("an error with a location");
    (l.line.unwrap_or(0), l.field.clone().unwrap_or_default())
}

/// Issue 11: one service with different rates on different rows was accepted (the first or
/// last row silently won, depending on the reader).
#[test]
fn map_service_with_two_rates_is_refused_naming_both_lines() {
    let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,0,b,m,1,1,1,1,,a100-80gb,10,7,50\n0,1,a,m,0,1,1,1,,a100-80gb,10,200,50\n"));
    assert_eq!(at(&e), (4, "rate".to_string()));
    let m = e.to_string();
    assert!(m.contains("service \"a\" has rate 200 here but 100 on line 2"), "{m}");
}

#[test]
fn map_service_with_two_slos_or_models_is_refused() {
    let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,1,a,m,0,1,1,1,,a100-80gb,10,100,60\n"));
    assert_eq!(at(&e), (3, "slo_ms".to_string()));
    assert!(e.to_string().contains("slo_ms 60 here but 50 on line 2"), "{e}");
    let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,1,a,other,0,1,1,1,,a100-80gb,10,100,50\n"));
    assert_eq!(at(&e), (3, "model".to_string()));
    assert!(e.to_string().contains("model other here but m on line 2"), "{e}");
    // A row that leaves the rate empty contradicts one that gives it.
    let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,1,a,m,0,1,1,1,,a100-80gb,10,,50\n"));
    assert!(e.to_string().contains("rate empty here but 100 on line 2"), "{e}");
}

/// Issue 11: a map naming several GPU types was accepted (`validate` took the first row's,
/// `deploy` the first row of the node being deployed). Issue 35: a mixed fleet's map has nodes of
/// several types, one type per node; a node of two types, or rows with and without a type, are
/// still refused.
#[test]
fn a_node_with_two_gpu_types_is_refused_and_nodes_of_different_types_are_read() {
    let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,,,\n0,1,b,m,0,1,1,1,,h100-80gb,,,\n"));
    assert_eq!(at(&e), (3, "gpu_type".to_string()));
    assert!(e.to_string().contains("is h100-80gb here but a100-80gb on line 2, on the same node 0; a node is one GPU type"), "{e}");
    let e = err(&format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,,,\n1,0,b,m,0,1,1,1,,,,,\n"));
    assert!(e.to_string().contains("is empty here but named on line 2"), "{e}");
    let (map, _) = DeploymentMap::read_from(format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,,,\n1,0,b,m,0,1,1,1,,l4-24gb,,,\n").as_bytes(), Path::new("m.csv")).unwrap();
    assert_eq!(map.gpu_type_ids(), ["a100-80gb", "l4-24gb"]);
    assert_eq!(map.node_gpu_types().into_iter().collect::<Vec<_>>(), [(0, Some("a100-80gb".into())), (1, Some("l4-24gb".into()))]);
    let e = map.single_gpu_type(None).unwrap_err();
    assert!(e.contains("mixes GPU types (a100-80gb, l4-24gb)"), "{e}");
    assert_eq!(map.for_node(1).single_gpu_type(None).unwrap(), "l4-24gb");
    assert!(map.check_layouts_by_node(None).is_empty(), "{:?}", map.check_layouts_by_node(None));
}

/// Each node's layout is checked against its own type: a 7-GPC A100 instance is no L4 share.
#[test]
fn layouts_are_checked_against_each_nodes_type() {
    let (map, _) = DeploymentMap::read_from(format!("{HEAD}0,0,a,m,0,7,1,1,,a100-80gb,,,\n1,0,b,m,0,7,1,1,,l4-24gb,,,\n1,0,c,m,7,7,1,1,,l4-24gb,,,\n").as_bytes(), Path::new("m.csv")).unwrap();
    let problems = map.check_layouts_by_node(None);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].node, problems[0].gpu), (1, 0));
}

/// Issue 11: a map whose last row was cut short inside its last field (`...,100` cut to
/// `...,1`) read as a valid, wrong SLO.
#[test]
fn map_whose_last_row_was_cut_short_is_refused() {
    let whole = format!("{HEAD}0,0,a,m,0,1,1,1,,a100-80gb,10,100,50\n0,1,b,m,0,1,1,1,,a100-80gb,10,100,50\n");
    assert!(DeploymentMap::read_from(whole.as_bytes(), Path::new("d.csv")).is_ok());
    let cut = &whole[..whole.len() - 2]; // "...,5"
    let e = err(cut);
    assert_eq!(at(&e), (3, String::new()));
    assert!(e.to_string().contains("d.csv:3: the last row has no line end"), "{e}");
    // Cut before the last fields: fewer fields than the header.
    let e = err(&whole[..whole.len() - 7]);
    assert!(e.to_string().contains("d.csv:3: has 12 fields, expected 13"), "{e}");
    // Trailing blank lines after a complete row are fine.
    assert!(DeploymentMap::read_from(format!("{whole}\n\n").as_bytes(), Path::new("d.csv")).is_ok());
}

#[test]
fn map_values_outside_their_ranges_are_refused() {
    let cases = [
        ("0,0,a,m,0,1,4097,1,,,,,", "batch_size", "4097 is out of range (allowed 1..=4096)"),
        ("0,0,a,m,0,1,1,49,,,,,", "num_proc", "49 is out of range"),
        ("0,0,a,m,0,1,1,1,,,NaN,,", "throughput", "segment throughput must be a finite number in [0, 4.8e8] samples/s, found NaN"),
        ("0,0,a,m,0,1,1,1,,,,inf,", "rate", "request rate must be a finite number in (0, 1e7] requests/s, found inf"),
        ("0,0,a,m,0,1,1,1,,,,1e300,", "rate", "found 1e300"),
        ("0,0,a,m,0,1,1,1,,,,0,", "rate", "found 0"),
        ("0,0,a,m,0,1,1,1,,,,1,0", "slo_ms", "latency SLO must be a finite number in [0.01, 3.6e6] ms, found 0"),
    ];
    for (row, field, want) in cases {
        let e = err(&format!("{HEAD}{row}\n"));
        assert_eq!(at(&e), (2, field.to_string()), "{row}: {e}");
        assert!(e.to_string().contains(want), "{row}: {e}");
    }
}

#[test]
fn a_planning_margin_round_trips_and_is_checked_against_the_slo() {
    let csv = "node,gpu,service,model,placement,instance_size,batch_size,num_proc,profile,gpu_type,throughput,rate,slo_ms,margin_ms\n\
               0,0,a,m,0,4,8,1,4g.40gb,a100-80gb,100,10,50,2.5\n\
               0,0,b,m,4,3,8,1,3g.40gb,a100-80gb,100,10,40,\n";
    let (map, _) = DeploymentMap::read_from(csv.as_bytes(), Path::new("d.csv")).unwrap();
    assert_eq!((map.segments[0].margin_ms, map.segments[1].margin_ms), (Some(2.5), None));
    assert_eq!((map.segments[0].target_ms(50.0), map.segments[1].target_ms(40.0)), (47.5, 40.0));
    let mut out = Vec::new();
    map.write_to(&mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), csv);
    // Without a margin the column is not written: maps planned with --margin 0 read as before.
    let mut plain = map.clone();
    plain.segments.iter_mut().for_each(|s| s.margin_ms = None);
    let mut out = Vec::new();
    plain.write_to(&mut out).unwrap();
    assert!(!String::from_utf8(out).unwrap().contains("margin_ms"));
    // A margin that leaves nothing of the SLO, and two margins for one service, are refused.
    let bad = csv.replace(",50,2.5", ",50,50");
    let e = DeploymentMap::read_from(bad.as_bytes(), Path::new("d.csv")).unwrap_err();
    assert_eq!(e.location().and_then(|l| l.field.clone()).as_deref(), Some("margin_ms"), "{e}");
    assert!(e.to_string().contains("not below the service's slo_ms 50"), "{e}");
    let two = format!("{csv}0,1,a,m,0,4,8,1,4g.40gb,a100-80gb,100,10,50,3\n");
    let e = DeploymentMap::read_from(two.as_bytes(), Path::new("d.csv")).unwrap_err();
    assert!(e.to_string().contains("has margin_ms 3 here but 2.5 on line 2"), "{e}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = Segment> {
        (0u32..3, 0u32..8, 0usize..4, 0u8..8, 1u8..8, 1u32..=4096, 1u32..=48, 0.0f64..1e6).prop_map(
            |(node, gpu, svc, placement, instance_size, batch_size, num_proc, throughput)| Segment {
                node,
                gpu,
                service: format!("svc-{svc}"),
                model: format!("model-{svc}"),
                placement,
                instance_size,
                batch_size,
                num_proc,
                profile: None,
                gpu_type: Some("a100-80gb".into()),
                throughput: Some(round3(throughput)),
                rate: Some(100.0 + svc as f64 * 0.25),
                slo_ms: Some(20.0 + svc as f64),
                margin_ms: None,
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any bytes: an answer, never a panic (run longer with PROPTEST_CASES=100000).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = DeploymentMap::read_from(bytes.as_slice(), Path::new("d.csv"));
            let mut text = HEAD.as_bytes().to_vec();
            text.extend(&bytes);
            let _ = DeploymentMap::read_from(text.as_slice(), Path::new("d.csv"));
        }

        /// A generated map, written and read back, is the same map.
        #[test]
        fn written_maps_read_back_the_same(segments in proptest::collection::vec(segment(), 1..20)) {
            let map = DeploymentMap { segments, jobs: Vec::new() };
            let mut out = Vec::new();
            map.write_to(&mut out).unwrap();
            let (again, format) = DeploymentMap::read_from(out.as_slice(), Path::new("d.csv")).unwrap();
            prop_assert_eq!(format, MapFormat::Parva);
            prop_assert_eq!(again, map);
        }

        /// One field of one row made invalid: the error names that line and field.
        #[test]
        fn a_bad_field_is_named_by_line_and_field(
            segments in proptest::collection::vec(segment(), 1..10),
            row in any::<prop::sample::Index>(),
            field in 0usize..13,
            bad in prop::sample::select(vec!["x", "-1", "NaN", "inf", "1e400", "99999"]),
        ) {
            let map = DeploymentMap { segments, jobs: Vec::new() };
            let mut out = Vec::new();
            map.write_to(&mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let r = 1 + row.index(lines.len() - 1);
            let mut fields: Vec<String> = lines[r].split(',').map(str::to_string).collect();
            // Fields that take any text (names, profile) are skipped; gpu_type only by a type clash.
            prop_assume!(![2, 3, 8].contains(&field));
            let value = if field == 9 { "h100-80gb".to_string() } else { bad.to_string() };
            // Values still valid for that field (e.g. 99999 as a node) are no mutation.
            prop_assume!(!(matches!(field, 0 | 1) && value == "99999"));
            prop_assume!(!(matches!(field, 10..=12) && value == "99999"));
            // A type clashes only with another row of the same node (a node is one GPU type), or
            // with a row that names none (every row names its type, or none does).
            let col = |l: &str, i: usize| l.split(',').nth(i).unwrap_or("").to_string();
            let clash = lines.iter().enumerate().skip(1).any(|(i, l)| i != r && (col(l, 0) == fields[0] || col(l, 9).is_empty()));
            prop_assume!(field != 9 || clash);
            fields[field] = value;
            lines[r] = fields.join(",");
            let e = DeploymentMap::read_from(format!("{}\n", lines.join("\n")).as_bytes(), Path::new("d.csv")).unwrap_err();
            let names: Vec<&str> = MAP_HEADER.iter().chain(MAP_EXTRA_HEADER.iter()).copied().collect();
            let loc = e.location().expect("a located error").clone();
            if field == 9 {
                // The clash is named on the later of the two rows.
                prop_assert_eq!(loc.field.as_deref(), Some("gpu_type"));
            } else {
                prop_assert_eq!(loc.line, Some(r as u64 + 1), "{}", e);
                prop_assert_eq!(loc.field.as_deref(), Some(names[field]), "{}", e);
            }
        }
    }
}
