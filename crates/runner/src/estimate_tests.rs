use super::*;

fn work(busy: f64, waiting: usize, arrival_rate: f64) -> Work {
    Work { busy, waiting, max_batch: 8, exec_one: 0.002, exec_full: 0.016, overhead: 0.001, arrival_rate }
}

#[test]
fn the_finish_estimate_counts_what_is_left_full_batches_ahead_and_the_own_batch_by_its_size() {
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    // Idle, alone: a one-row batch and the overhead.
    assert!(close(finish_estimate(&work(0.0, 1, 0.0)), 0.003));
    // 5 ms left of the running batch, 4 rows waiting with the request: the chord gives 8 ms.
    assert!(close(finish_estimate(&work(0.005, 4, 0.0)), 0.005 + 0.008 + 0.001));
    // 17 rows: two full batches ahead, then a batch of one.
    assert!(close(finish_estimate(&work(0.0, 17, 0.0)), 0.032 + 0.002 + 0.001));
    // Rows expected to join while it waits: 100 rows/s x 40 ms = 4 more rows.
    assert!(close(finish_estimate(&work(0.040, 1, 100.0)), 0.040 + 0.010 + 0.001));
    // ...never past a full batch.
    assert!(close(finish_estimate(&work(0.040, 1, 1e6)), 0.040 + 0.016 + 0.001));
    // Unknown one-row time: every batch is timed as full; batch size 1 likewise.
    let w = Work { exec_one: 0.0, ..work(0.0, 1, 0.0) };
    assert!(close(finish_estimate(&w), 0.017));
    let w = Work { max_batch: 1, ..work(0.0, 3, 0.0) };
    assert!(close(finish_estimate(&w), 0.032 + 0.016 + 0.001));
}

/// An estimate whose process has run every size once already (first batches are not counted).
fn warmed(profile: Vec<f64>, max_batch: usize) -> ExecEstimate {
    let mut e = ExecEstimate::new(profile, max_batch);
    e.warmed.fill(true);
    e
}

/// Regression (found by `scripts/gpu-check` on an H100, mobilenetv2 at batch 32 x 2
/// processes, 200 req/s, 100 ms SLO): the first batch of each new size took 0.5-1 s on the GPU
/// (one-time work for the shape), 100x the next ones. Counted, it made the full-batch
/// estimate about 1 s, admission refused every request but those reaching an idle process,
/// only one-row batches ran, and nothing ever corrected the estimate: 19 of 200 req/s served,
/// p50 102 ms. The first batch of a size is now left out, per worker process.
#[test]
fn the_first_batch_of_a_size_on_a_gpu_does_not_poison_the_estimate() {
    for profile in [vec![], vec![0.005, 0.006, 0.007, 0.008]] {
        let mut e = ExecEstimate::new(profile.clone(), 4);
        let before = e.full_exec(4);
        for rows in 1..=4 {
            assert!(!e.record(rows, 0.9, 0.9), "first batch of {rows} counted");
        }
        assert_eq!(e.full_exec(4), before, "profile {profile:?}");
        for rows in 1..=4 {
            let t = profile.get(rows - 1).copied().unwrap_or(0.008);
            assert!(e.record(rows, t, t));
        }
        assert!(e.full_exec(4) <= 0.0081, "full batch {} s after normal batches", e.full_exec(4));
        // A restarted process warms up again; what was learned stays.
        let learned = e.full_exec(4);
        e.new_process();
        assert!(!e.record(4, 2.0, 2.0));
        assert_eq!(e.full_exec(4), learned);
    }
    // A request larger than the batch size runs alone and always counts.
    let mut e = ExecEstimate::new(vec![0.01], 1);
    assert!(!e.record(1, 0.01, 0.01));
    assert!(e.record(3, 0.03, 0.03));
}

#[test]
fn estimates_scale_the_profile_by_what_was_measured() {
    let mut e = warmed(vec![0.01, 0.02], 4);
    assert_eq!(e.get(2), 0.02);
    assert_eq!(e.get(4), 0.04);
    e.record(2, 0.03, 0.03);
    assert!((e.get(2) - 0.03).abs() < 1e-12);
    // Every size moves with it.
    assert!((e.get(1) - 0.015).abs() < 1e-12);
    e.record(2, 0.05, 0.05);
    assert!((e.get(2) - 0.036).abs() < 1e-12);
    // Without a profile, each size learns on its own.
    let mut e = warmed(vec![], 4);
    assert_eq!(e.get(3), 0.0);
    e.record(3, 0.02, 0.02);
    assert_eq!((e.get(3), e.get(2)), (0.02, 0.0));
}

/// Regression (issue 11, found by scripts/bench/admission.sh): one-row batches answered 40 ms
/// after dispatch on a busy host, 10x their profiled 4 ms, made the full-batch estimate 10x its
/// profiled 47 ms, and admission by deadline then refused nearly every request (921 of 9,700
/// req/s served). The worker's own execution time corrects the profile; the rest of the round
/// trip is an overhead counted once, and an excess of execution carries over as a constant.
#[test]
fn a_fixed_overhead_of_small_batches_is_not_multiplied_into_the_full_batch_estimate() {
    let profile: Vec<f64> = (1..=16).map(|b| 0.004 + 0.0029 * (b - 1) as f64).collect();
    let full = profile[15];
    let mut e = warmed(profile.clone(), 16);
    for _ in 0..20 {
        e.record(1, 0.040, 0.004);
    }
    assert!((e.get(1) - 0.040).abs() < 1e-9, "{}", e.get(1));
    assert!((e.overhead() - 0.036).abs() < 1e-9, "{}", e.overhead());
    assert!((e.full_exec(16) - full).abs() < 1e-9, "full batch executes {} s, profiled {full} s", e.full_exec(16));
    // The worker itself 36 ms slower on one row: a constant excess, not 10x.
    let mut e = warmed(profile, 16);
    for _ in 0..20 {
        e.record(1, 0.040, 0.040);
    }
    assert!((e.full_exec(16) - (full + 0.036)).abs() < 1e-9, "{}", e.full_exec(16));
    assert_eq!(e.overhead(), 0.0);
    // Measured at full size, the estimate follows the measurement exactly.
    for _ in 0..40 {
        e.record(16, 2.0 * full, 2.0 * full);
    }
    assert!((e.get(16) - 2.0 * full).abs() < 1e-6, "{}", e.get(16));
    // Faster than profiled: every size scales down in proportion.
    let mut e = warmed(vec![0.01, 0.02], 2);
    e.record(2, 0.01, 0.01);
    assert_eq!((e.get(1), e.get(2)), (0.005, 0.01));
    // A worker that reports no execution time: the whole round trip is execution.
    let mut e = warmed(vec![0.01, 0.02], 2);
    e.record(2, 0.03, 0.0);
    assert!((e.get(2) - 0.03).abs() < 1e-12 && e.overhead() == 0.0, "{} {}", e.get(2), e.overhead());
}

/// Regression: after an overload, the full-batch estimate stayed inflated (only full batches
/// refreshed it, and light load forms none), so the batcher kept dispatching small batches
/// early (found by `parva verify`: p50 3x higher than on a fresh server at the same load).
#[test]
fn an_overload_does_not_leave_the_full_batch_estimate_inflated() {
    let mut e = warmed(vec![0.01, 0.02, 0.03, 0.04], 4);
    for _ in 0..20 {
        e.record(4, 0.4, 0.4);
    }
    assert!(e.get(4) > 0.3);
    for _ in 0..20 {
        e.record(1, 0.01, 0.01);
    }
    assert!((e.get(4) - 0.04).abs() < 0.004, "full-batch estimate {} s, profiled 0.04 s", e.get(4));
}
