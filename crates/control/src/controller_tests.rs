use super::*;

use crate::forecast::DAY_S;

fn obs(rates: &[f64], window: f64) -> Vec<Observation> {
    rates.iter().map(|r| Observation { rate: *r, requests: r * window }).collect()
}

/// Past the churn budget (one change spent a minute ago), a measured load past the capacity is
/// still planned for at once.
fn a_scale_up_at_need_does_not_wait(s: Settings) {
    let mut c = ctl(s, &[100.0]);
    let d = c.observe(60.0, &obs(&[300.0], 60.0)).unwrap();
    c.applied(60.0, d.target.clone(), true, &d.target);
    assert!(c.observe(120.0, &obs(&[900.0], 60.0)).is_some());
}

fn ctl(settings: Settings, planned: &[f64]) -> Controller {
    let mut c = Controller::new(settings, planned.iter().enumerate().map(|(i, _)| format!("s{i}")).collect(), planned.to_vec(), 0.0);
    // Each service fills 4 GPUs of 7 GPCs: halving one frees 2 GPUs.
    c.set_gpcs(&vec![28.0; planned.len()], 7.0, 4.0 * planned.len() as f64);
    c
}

/// Regression (issue 32, live): load started 23 s after the node was ready; the first window
/// saw about 1 s of traffic and the controller scaled every service down at once.
#[test]
fn a_nearly_empty_first_window_keeps_the_capacity() {
    let s = Settings { window_s: 120.0, ..Settings::default() };
    let mut c = ctl(s, &[100.0, 200.0]);
    // 1 s of traffic in a 120 s window.
    let first = vec![Observation::of(100.0, 120.0), Observation::of(200.0, 120.0)];
    assert_eq!(c.observe(120.0, &first), None, "no scale-down on a nearly empty window");
    // Then the planned rates: nothing to do.
    for k in 2..40 {
        assert_eq!(c.observe(120.0 * k as f64, &obs(&[90.0, 180.0], 120.0)), None, "window {k}");
    }
    // Even a truly quiet start waits out the warm-up and the sustained-low period.
    let mut c = ctl(s, &[100.0]);
    let mut first_down = None;
    for k in 1..30 {
        if let Some(d) = c.observe(60.0 * k as f64, &obs(&[10.0], 60.0)) {
            first_down = Some((60.0 * k as f64, d));
            break;
        }
    }
    let (at, d) = first_down.expect("a sustained quiet period scales down");
    assert!(at >= s.warmup_s.max(s.down_after_s), "scaled down at {at} s");
    assert_eq!(d.direction, Direction::Down);
    // At most half at once, unless the load is further below: then twice its highest window
    // (10 req/s for 15 minutes: 20), with the 5 % margin.
    assert!((d.target[0] - 20.0 * 1.05).abs() < 1e-9, "twice the load's highest window, and the 5 % margin: {:?}", d.target);
}

#[test]
fn a_rise_is_planned_for_at_once_and_a_fall_only_when_sustained() {
    let s = Settings { headroom: 0.1, burst_factor: 0.0, ..Settings::default() };
    let mut c = ctl(s, &[110.0]);
    for k in 1..=10 {
        assert_eq!(c.observe(60.0 * k as f64, &obs(&[100.0], 60.0)), None);
    }
    let d = c.observe(660.0, &obs(&[200.0], 60.0)).expect("up at once");
    assert_eq!(d.direction, Direction::Up);
    assert!(d.target[0] >= 220.0 - 1e-9, "{d:?}");
    c.applied(660.0, d.target.clone(), true, &d.target);
    // A one-window dip does nothing.
    assert_eq!(c.observe(720.0, &obs(&[50.0], 60.0)), None);
    assert_eq!(c.observe(780.0, &obs(&[200.0], 60.0)), None);
}

#[test]
fn the_churn_budget_holds_scale_downs_and_never_scale_ups() {
    let s = Settings { max_changes_per_hour: 1.0, down_after_s: 0.0, warmup_s: 0.0, burst_factor: 0.0, ..Settings::default() };
    let mut c = ctl(s, &[100.0]);
    c.observe(60.0, &obs(&[100.0], 60.0));
    let d = c.observe(120.0, &obs(&[300.0], 60.0)).unwrap();
    c.applied(120.0, d.target.clone(), true, &d.target);
    // The budget is spent: a scale-down waits...
    let mut t = 180.0;
    while t < 3700.0 {
        if let Some(d) = c.observe(t, &obs(&[20.0], 60.0)) {
            assert!(t - 120.0 >= 3600.0, "a scale-down {t} s into the hour: {d:?}");
            break;
        }
        t += 60.0;
    }
    // ...a scale-up does not.
    a_scale_up_at_need_does_not_wait(s);
}

/// Issue 32: on the noisy traces the hour's budget of 2 let 51-54 re-plans a day through (the
/// scale-ups at need never wait), against the 48 it names. Those count against the day's
/// budget too: a scale-down then waits until the day's count is back under it, not only the
/// hour's; one that frees half the GPUs in use still goes.
#[test]
fn regression_scale_ups_at_need_past_the_budget_are_paid_back_by_scale_downs_that_wait() {
    let s = Settings { down_after_s: 600.0, warmup_s: 0.0, burst_factor: 0.0, ..Settings::default() };
    // Two services on 10 GPUs; at 600 req/s each is lowered from 1,000 to ~660 (1.7 GPUs
    // freed, 3.4 for both); at 70 the second goes to ~150 (twice its last 10 minutes' peak,
    // with the margin): 6 GPUs freed with the first, more than half.
    let first_down = |burst: usize, low: [f64; 2]| {
        let mut c = Controller::new(s, vec!["a".into(), "b".into()], vec![1000.0, 1000.0], 0.0);
        c.set_gpcs(&[35.0, 35.0], 7.0, 10.0);
        // `burst` scale-ups at need in the first 100 minutes, 10 minutes apart.
        for k in 1..=burst {
            c.applied(600.0 * k as f64, vec![1000.0, 1000.0], true, &[1000.0, 1000.0]);
        }
        let mut t = 6060.0;
        while t < 12.0 * 3600.0 {
            if let Some(d) = c.observe(t, &obs(&low, 60.0)) {
                assert_eq!(d.direction, Direction::Down, "{d:?}");
                return t;
            }
            t += 60.0;
        }
        panic!("no scale-down in 12 hours");
    };
    // Two: the scale-down comes after the sustained-low wait (from 6,060 s).
    let t = first_down(2, [600.0, 600.0]);
    assert!(t <= 6060.0 + 900.0, "{t}");
    // Ten: the hour's budget is back at 9,000 s (two in any hour), but the day's (2 an hour
    // since the start) is spent until 5 hours in.
    let t = first_down(10, [600.0, 600.0]);
    assert!(t > 5.0 * 3600.0 && t <= 5.0 * 3600.0 + 60.0, "{t}");
    // One that frees more than half the GPUs in use goes as soon as the hour's budget allows.
    let t = first_down(10, [600.0, 70.0]);
    assert!((9000.0..=9060.0).contains(&t), "{t}");
}

/// A service that turns on at 07:10 every day (40 -> 2,400 req/s) is planned up before it
/// does on the second day, even with the hour's budget spent: waiting, the jump would be met
/// by an alarm after it, on a plan for 40 req/s.
#[test]
fn a_forecast_jump_does_not_wait_for_the_churn_budget() {
    let s = Settings { max_changes_per_hour: 1.0, burst_factor: 0.0, ..Settings::default() };
    let on = 7.0 * 3600.0 + 600.0;
    let rate = |t: f64| if (t % DAY_S) < on { 40.0 } else { 2400.0 };
    let mut c = ctl(s, &[50.0]);
    let mut t = 60.0;
    while t < DAY_S + on - 600.0 {
        if let Some(d) = c.observe(t, &obs(&[rate(t)], 60.0)) {
            c.applied(t, d.target.clone(), true, &d.target);
            c.set_capacity(&d.target);
        }
        t += 60.0;
    }
    assert!(c.planned()[0] < 200.0, "down for the night: {:?}", c.planned());
    // The hour's one change is spent just before.
    let p = c.planned().to_vec();
    c.applied(t - 60.0, p.clone(), true, &p);
    let mut up = None;
    while t < DAY_S + on {
        if let Some(d) = c.observe(t, &obs(&[rate(t)], 60.0)) {
            up = Some((t, d));
            break;
        }
        t += 60.0;
    }
    let (at, d) = up.unwrap_or_else(|| panic!("planned up before the jump: {:?} {:?} {:?}", c.forecasts(), c.planned(), c.capacity()));
    assert!(at < DAY_S + on && d.target[0] >= 2400.0, "{at}: {d:?}");
}

/// Regression (trace 5 with its business-hours services at no load at night): a service
/// with no traffic kept the capacity of its day all night (a quiet window is no evidence),
/// 2,113 GPU-hours where it was 1,558 with 2 % at night. Quiet for `down_after_s` once
/// warm, it goes down to the floor; one quiet window alone still keeps the capacity.
#[test]
fn a_service_quiet_for_down_after_goes_down_to_the_floor() {
    let s = Settings { down_after_s: 600.0, warmup_s: 0.0, burst_factor: 0.0, ..Settings::default() };
    let mut c = ctl(s, &[1000.0, 1000.0]);
    let mut t = 60.0;
    // The first service at 90 % of its plan: no candidate on either band.
    while t <= 600.0 {
        assert_eq!(c.observe(t, &obs(&[900.0, 900.0], 60.0)), None, "{t}");
        t += 60.0;
    }
    let mut down = None;
    while t <= 3600.0 {
        if let Some(d) = c.observe(t, &obs(&[900.0, 0.0], 60.0)) {
            down = Some((t, d));
            break;
        }
        t += 60.0;
    }
    let (at, d) = down.expect("down once quiet");
    // Quiet for down_after_s (the evidence), then a candidate for down_after_s.
    assert!(at >= 660.0 + 2.0 * 600.0 - 60.0, "{at}: {d:?}");
    assert!((d.target[1] - s.min_rate * (1.0 + DOWN_MARGIN)).abs() < 1e-9 && d.target[0] == 1000.0, "{d:?}");
}

/// A fractional budget means what it says: 1.5 an hour is one change in any 40 minutes (it
/// was two an hour, the same as 2: the count of the last hour was compared with 1.5).
#[test]
fn a_fractional_churn_budget_spaces_changes_evenly() {
    assert_eq!(budget_window(3.0), (3, 3600.0));
    assert_eq!(budget_window(1.5), (1, 2400.0));
    assert_eq!(budget_window(0.5), (1, 7200.0));
    assert_eq!(budget_window(2.5), (2, 2880.0));
    let s = Settings { max_changes_per_hour: 1.5, ..Settings::default() };
    let mut c = ctl(s, &[100.0]);
    c.changes.push_back(0.0);
    assert!(!c.budget_left(2399.0), "one change in the last 40 minutes");
    assert!(c.budget_left(2400.0));
    // And a scale-up at need still never waits for it.
    a_scale_up_at_need_does_not_wait(s);
}

/// Regression (a 3-day trace of 10-minute rows, +-20 % noise): every row moved all services
/// at once, and each that crossed its plan was an alarm of its own seconds after the last
/// (88 alarms in 3 days). An alarm now takes the services close to their plan along.
#[test]
fn an_alarm_takes_the_services_close_to_their_plan_along() {
    let s = Settings { headroom: 0.0, burst_factor: 0.0, ..Settings::default() };
    let mut c = ctl(s, &[100.0, 100.0, 100.0]);
    // s0 over its plan, s1 at 90 % of it, s2 at half.
    let d = c.alarm(30.0, &obs(&[120.0, 90.0, 50.0], 10.0), &[]).expect("s0 is over its plan");
    assert_eq!(d.direction, Direction::Up);
    assert!((d.target[0] - 120.0 * (1.0 + s.step_up)).abs() < 1e-9, "{d:?}");
    assert!((d.target[1] - 100.0 * (1.0 + s.step_up)).abs() < 1e-9, "s1 goes along: {d:?}");
    assert_eq!(d.target[2], 100.0, "s2 keeps its plan: {d:?}");
    assert!(d.reason.contains("s0 100.0 -> 138.0/s (alarm") && d.reason.contains("s1 100.0 -> 115.0/s (close to its plan"), "{}", d.reason);
    // Nobody over the plan: no alarm, however close.
    assert_eq!(c.alarm(40.0, &obs(&[99.0, 99.0, 99.0], 10.0), &[]), None);
}

#[test]
fn a_refusal_backs_off_exponentially_and_an_alarm_still_scales_up() {
    let s = Settings { backoff_s: 30.0, backoff_max_s: 100.0, burst_factor: 0.0, headroom: 0.1, ..Settings::default() };
    let mut c = ctl(s, &[100.0]);
    let d = c.observe(60.0, &obs(&[95.0], 60.0)).expect("forecast above plan");
    assert_eq!(c.refused(60.0, &d.target), 30.0);
    assert_eq!(c.refused(61.0, &d.target), 60.0);
    assert_eq!(c.refused(62.0, &[200.0]), 100.0);
    // While backing off, a rise up to what failed waits; past it, it does not.
    assert_eq!(c.observe(70.0, &obs(&[96.0], 60.0)), None);
    assert_eq!(c.observe(80.0, &obs(&[150.0], 60.0)), None);
    assert!(c.observe(90.0, &obs(&[250.0], 60.0)).is_some());
    assert_eq!(c.alarm(85.0, &obs(&[180.0], 10.0), &[]), None, "backing off, below what failed");
    let a = c.alarm(85.0, &obs(&[300.0], 10.0), &[]).unwrap();
    assert!(a.target[0] >= 330.0 - 1e-9 && a.reason.contains("alarm"), "{a:?}");
    // After the back-off, any overload counts again; but not on thin evidence.
    assert!(c.alarm(200.0, &obs(&[120.0], 10.0), &[]).is_some());
    assert_eq!(c.alarm(200.0, &[Observation { rate: 120.0, requests: 3.0 }], &[]), None, "3 requests are no evidence");
    assert_eq!(c.alarm(200.0, &obs(&[50.0], 10.0), &[]), None);
    // A burst that began 3 s into the short period: planned for at its height.
    let short = [Observation { rate: 0.7 * 100.0 + 0.3 * 400.0, requests: 1900.0 }];
    let a = c.alarm(300.0, &short, &obs(&[400.0], RECENT_S)).unwrap();
    assert!(a.target[0] >= 400.0 * 1.1, "{a:?}");
}

/// Regression (an on/off service, 38 -> 2,384 req/s between two looks): the alarm sized on
/// the last 2 s, half of them before the jump, planned for 1,463 req/s, and a second
/// transition had to follow the first. The last second meets the jump at its height; a
/// small service's noisy second is taken two deviations below its count.
#[test]
fn regression_a_jump_between_two_looks_is_met_at_its_height() {
    let s = Settings { burst_factor: 0.0, headroom: 0.05, ..Settings::default() };
    let mut c = ctl(s, &[40.0, 100.0]);
    let short = [Observation::of(9.0 * 38.0 + 2384.0, 10.0), Observation::of(1000.0, 10.0)];
    let d = c.alarm(90_601.0, &short, &obs(&[2384.0, 100.0], RECENT_S)).expect("over the plan");
    let at_least = 2384.0 * (1.0 - 2.0 / 2384f64.sqrt());
    assert!(d.target[0] >= at_least * 1.05 * 1.15 - 1e-6 && d.target[0] > 2384.0, "{d:?}");
    // A noisy second of a service at 120/s (150 counted) is not taken at its count.
    let mut c = ctl(s, &[100.0]);
    let d = c.alarm(60.0, &[Observation::of(1200.0, 10.0)], &[Observation::of(150.0, 1.0)]).expect("over the plan");
    let lcb = 150.0 * (1.0 - 2.0 / 150f64.sqrt());
    assert!((d.target[0] - lcb * 1.05 * 1.15).abs() < 1e-6 && d.target[0] < 150.0 * 1.05 * 1.15, "{d:?}");
    assert_eq!(alarm_rate(&Observation::of(0.0, 1.0), None), 0.0);
    assert_eq!(alarm_rate(&Observation::of(50.0, 10.0), Some(&Observation::of(0.0, 1.0))), 5.0);
}

#[test]
fn a_service_low_for_its_down_wait_goes_down_with_a_scale_up_that_happens_anyway() {
    // The scale-down of its own waits for the hysteresis too (s0's segments alone free no GPU).
    let s = Settings { warmup_s: 0.0, burst_factor: 0.0, headroom: 0.1, down_after_s: 600.0, ..Settings::default() };
    let run = |rise_at: f64| {
        let mut c = ctl(s, &[110.0, 110.0]);
        let mut t = 0.0;
        // s0 falls to 40/s, s1 stays.
        while t + 60.0 < rise_at {
            t += 60.0;
            assert_eq!(c.observe(t, &obs(&[40.0, 100.0], 60.0)), None, "at {t} s");
        }
        c.observe(rise_at, &obs(&[40.0, 200.0], 60.0)).expect("s1 goes up at once")
    };
    // Low for 11 minutes when s1 rises: one transition for both.
    let d = run(720.0);
    assert_eq!(d.direction, Direction::Both, "{d:?}");
    assert!(d.target[1] >= 200.0 * 1.1 * 1.15 - 1e-9, "{d:?}");
    // At most half at once, and 5 % past it.
    assert!((d.target[0] - 55.0 * 1.05).abs() < 1e-9, "{d:?}");
    // Low for 6 minutes only: s0 keeps its plan (a fifth of the services lowered that soon
    // on the noisy trace 4 were raised again within the hour).
    let d = run(420.0);
    assert_eq!(d.direction, Direction::Up, "{d:?}");
    assert_eq!(d.target[0], 110.0);
}

/// Regression (trace 4 of `scripts/bench/day-results.md`, rows +-20 % every 10 minutes): a
/// scale-down went to the forecast, which carries half the rows' median distance; lowered with
/// another service's scale-up in a low row, the next high row passed the capacity and an alarm
/// raised it again (146 of 358 scale-ups within an hour of the same service's scale-down). A
/// scale-down now goes no lower than the top of the last hour's rows, and the rows then need no
/// scale-up.
#[test]
fn regression_a_noisy_service_is_not_lowered_below_its_rows_top() {
    let s = Settings::default();
    let mut c = ctl(s, &[400.0, 100.0]);
    // s0: rows of 80 and 120; s1: a ramp of 1 % a minute, re-planned every few windows.
    let rate = |k: u32| [if (k / 10) % 2 == 0 { 80.0 } else { 120.0 }, 100.0 * 1.01f64.powi(k as i32)];
    let (mut downs, mut ups_after_down) = (0, 0);
    for k in 1..=480 {
        let t = 60.0 * k as f64;
        if let Some(d) = c.observe(t, &obs(&rate(k), 60.0)) {
            let was = c.planned()[0];
            if d.target[0] < was {
                downs += 1;
                assert!(d.target[0] >= 120.0 * (1.0 + s.headroom), "lowered below the rows' top at {t} s: {d:?}");
            } else if d.target[0] > was && downs > 0 {
                ups_after_down += 1;
            }
            c.applied(t, d.target.clone(), true, &d.target);
            // s0's segments shrink with its rate (28 GPCs for 400/s), on as many GPUs as they need.
            let gpcs = 28.0 * d.target[0] / 400.0;
            c.set_gpcs(&[gpcs, 7.0], 7.0, (gpcs / 7.0).ceil() + 1.0);
        }
    }
    assert!(downs >= 1, "the over-provisioned service comes down");
    assert_eq!(ups_after_down, 0, "no scale-up undoes a scale-down");
    assert!(c.planned()[0] < 200.0, "{:?}", c.planned());
}

/// Regression (trace 5 of `scripts/bench/day-results.md`, a business-hours service going from
/// 23,000 to 450 req/s at the end of its day): each scale-down gave up at most half of the
/// planned rate, one every 20-60 minutes, so the service kept 2-60 times its load for four
/// hours. Now, where the last `down_after_s` of load is far below, a scale-down goes down to
/// twice that load's highest window (at the default `max_step_down`), in one step.
#[test]
fn regression_a_service_that_turns_off_goes_down_in_one_step_not_in_halvings() {
    let s = Settings::default();
    let mut c = ctl(s, &[1000.0, 100.0]);
    let rate = |k: u32| [if k <= 120 { 900.0 } else { 20.0 }, 90.0];
    let mut downs = Vec::new();
    for k in 1..=300 {
        let t = 60.0 * k as f64;
        if let Some(d) = c.observe(t, &obs(&rate(k), 60.0)) {
            if d.target[0] < c.planned()[0] {
                assert!(k > 120, "lowered at {t} s while the load stayed: {d:?}");
                // Never below half the plan and twice the highest minute of the last
                // down_after_s (20 req/s) both.
                assert!(d.target[0] >= (c.planned()[0] * 0.5).min(40.0) - 1e-9, "{d:?}");
                downs.push((k, d.target[0]));
            }
            c.applied(t, d.target.clone(), true, &d.target);
            c.set_capacity(&d.target);
            c.set_gpcs(&[28.0 * d.target[0] / 1000.0, 7.0], 7.0, (4.0 * d.target[0] / 1000.0).ceil() + 1.0);
        }
    }
    // Off at minute 120: down below 100 req/s within the next 90 minutes, in at most two
    // scale-downs (the first may be held up by the last hour's line, the envelope); halving
    // from 1,000 takes four.
    let below = downs.iter().position(|&(_, r)| r < 100.0).unwrap_or_else(|| panic!("never below 100 req/s: {downs:?}"));
    assert!(below < 2 && downs[below].0 <= 210, "{downs:?}");
}

/// Issue 32: the low-rate fleet re-planned 14 times a day of the 48 its churn budget allows and
/// kept 0.66x static's GPU-hours (0.65x asked). A controller that has used at most 80 % of its
/// budget over the last day lowers a service at 75 % of its plan; one that re-plans more often
/// keeps the wider band that spares it transitions, except for a smooth service (eleventh pass:
/// the smooth traces re-planned 40 times a day, past 80 %, and kept the wide band).
#[test]
fn a_calm_controller_lowers_on_a_narrower_band_a_busy_one_only_its_smooth_services() {
    let s = Settings { down_after_s: 600.0, warmup_s: 0.0, burst_factor: 0.0, ..Settings::default() };
    // A steady 750 req/s, or rows 10 % either side of it (burstiness ~10 %: not smooth).
    let steady = |_: usize| 750.0;
    let noisy = |k: usize| if k % 2 == 0 { 675.0 } else { 825.0 };
    let first_decision = |c: &mut Controller, from: f64, rate: &dyn Fn(usize) -> f64| {
        let mut t = from;
        let mut k = 0;
        while t <= from + 3600.0 {
            if let Some(d) = c.observe(t, &obs(&[rate(k)], 60.0)) {
                return Some((t, d));
            }
            t += 60.0;
            k += 1;
        }
        None
    };
    let fresh = || {
        let mut c = Controller::new(s, vec!["s0".into()], vec![1000.0], 0.0);
        // 20 GPUs' GPCs: lowering to 909 (the noisy rows' top) frees 12.7 GPCs, past the 1.25
        // GPUs a scale-down wants.
        c.set_gpcs(&[140.0], 7.0, 20.0);
        c
    };
    let mut calm = fresh();
    let (at, d) = first_decision(&mut calm, 60.0, &steady).expect("a calm controller lowers a service at 75 % of its plan");
    assert_eq!(d.direction, Direction::Down);
    assert!(at >= s.down_after_s, "after the sustained-low wait: {at}");
    // To the forecast (750, the level's EWMA still a little above it from the plan's seed, and
    // 5 % headroom) plus the 5 % margin.
    assert!((d.target[0] - 750.0 * 1.05 * 1.05).abs() < 0.1, "{d:?}");
    // Twenty re-plans in its first 10 hours, one every half hour: more than 80 % of the
    // budget's 2 an hour (still an hour later), less than all of it (the hour's budget and
    // the day's both allow a change half an hour after the last).
    let busy = || {
        let mut c = fresh();
        let mut t = 0.0;
        for _ in 0..20 {
            t += 1800.0;
            c.applied(t, vec![1000.0], true, &[1000.0]);
        }
        (c, t + 1800.0)
    };
    let (mut b, t) = busy();
    assert!(b.budget_left(t) && b.budget_used(t) < 1.0 && !b.calm(t + 3600.0));
    assert_eq!(first_decision(&mut b, t, &noisy), None, "the wide band: its 825-row plus a 15 % step is past 85 % of 1000");
    assert!(b.forecasts()[0].burstiness > SMOOTH, "{:?}", b.forecasts()[0]);
    // A day later those twenty are forgotten: calm again.
    let (_, d) = first_decision(&mut b, t + DAY_S, &noisy).expect("calm after a quiet day");
    assert_eq!(d.direction, Direction::Down);
    // Busy as much, a smooth service is lowered on the narrower band all the same.
    let (mut b, t) = busy();
    let (_, d) = first_decision(&mut b, t, &steady).expect("a smooth service goes down on the narrower band");
    assert_eq!(d.direction, Direction::Down);
    assert!(b.forecasts()[0].burstiness < SMOOTH && !b.calm(t + 3600.0));
}
