use super::*;

fn job(rows: usize) -> Job {
    let (tx, _rx) = oneshot::channel();
    Job { inputs: vec![], rows, bytes: 0, arrival: Instant::now(), reply: tx }
}

#[test]
fn batches_take_whole_requests_up_to_max_rows() {
    let mut q: VecDeque<Job> = [2, 1, 2, 5].into_iter().map(job).collect();
    assert_eq!(next_batch_rows(&q, 4), 3);
    let (jobs, rows) = take_batch(&mut q, 4);
    assert_eq!((jobs.len(), rows), (2, 3));
    let (jobs, rows) = take_batch(&mut q, 4);
    assert_eq!((jobs.len(), rows), (1, 2));
    // A request larger than the batch runs alone.
    let (jobs, rows) = take_batch(&mut q, 4);
    assert_eq!((jobs.len(), rows), (1, 5));
}


#[test]
fn the_busy_time_published_is_what_is_left_of_the_batches_in_flight() {
    let shared = ProcShared::default();
    let now = Instant::now();
    assert_eq!(shared.busy_remaining(now), 0.0);
    shared.set_busy_until(Some(now + std::time::Duration::from_millis(30)));
    assert!((shared.busy_remaining(now) - 0.030).abs() < 1e-6);
    assert!((shared.busy_remaining(now + std::time::Duration::from_millis(20)) - 0.010).abs() < 1e-6);
    // Overdue: nothing more is counted.
    assert_eq!(shared.busy_remaining(now + std::time::Duration::from_millis(50)), 0.0);
    shared.set_busy_until(None);
    assert_eq!(shared.busy_remaining(now), 0.0);
    // The batcher's view: a running batch of 4 (profile 10 ms) and one of 8 sent ahead (20 ms).
    let est = ExecEstimate::new(vec![0.004, 0.006, 0.008, 0.010, 0.012, 0.014, 0.016, 0.020], 8);
    let batch = |rows| InFlight { id: 0, jobs: Vec::new(), rows, sent: now, started: now, slot: None };
    publish_inflight(&shared, &VecDeque::from([batch(4), batch(8)]), &est);
    assert!((shared.busy_remaining(now) - 0.030).abs() < 1e-6, "{}", shared.busy_remaining(now));
    assert_eq!(shared.inflight_rows.load(Ordering::SeqCst), 12);
    publish_inflight(&shared, &VecDeque::new(), &est);
    assert_eq!(shared.busy_remaining(now), 0.0);
}
