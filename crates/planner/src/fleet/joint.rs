//! The joint integer program over every type of a fleet (see the parent module's doc): its
//! start, its solve and the placement of its solution.

use super::*;

/// The fleet problem, shared by the start, the solve and the placement.
pub(super) struct Problem<'p, 'a> {
    pub(super) input: &'p FleetInput<'a>,
    /// Services at the SLO they are planned to.
    pub(super) targets: &'p [Service],
    /// Per type, per service: its best segment per size, or why it has none.
    pub(super) per_type: &'p [Vec<Result<Options, Infeasible>>],
    pub(super) costs: &'p [f64],
    pub(super) limits: &'p [u32],
    pub(super) pats: &'p [Vec<Pattern>],
    /// Services with a positive rate that some type can serve.
    pub(super) feasible: &'p [usize],
    /// The costs times `scale`, whole numbers: the solver then knows every objective value is a
    /// whole number and proves a cost to the cent instead of to within 1.
    pub(super) scaled: Vec<f64>,
    pub(super) scale: f64,
    /// The greatest common divisor of the scaled costs: the objective's step.
    pub(super) step: f64,
}

pub(super) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The smallest power of ten (at most 10^4) that makes every cost a whole number, and the costs
/// times it (rounded: a price finer than 1/10,000 is optimised to the nearest 1/10,000).
pub(super) fn whole_costs(costs: &[f64]) -> (Vec<f64>, f64) {
    let mut scale = 1.0;
    for _ in 0..4 {
        if costs.iter().all(|c| ((c * scale).round() - c * scale).abs() < 1e-6) {
            break;
        }
        scale *= 10.0;
    }
    (costs.iter().map(|c| (c * scale).round()).collect(), scale)
}

/// A fleet solution: per type, a single-type [`Solution`] whose counts run over `feasible`.
pub(super) type FleetSolution = Solution;

/// The starting assignment, and the type it leaves over its limit when no service could move.
pub(super) struct Start {
    pub(super) solution: Vec<FleetSolution>,
    pub(super) over: Option<usize>,
}

type Choices = Vec<Vec<(f64, usize, cover::Cover)>>;

/// Per type, the covers `pick` assigns to it, packed as `packed` says.
fn assignment(choices: &Choices, pick: &[usize], packed: &[Vec<u32>], n: usize) -> Vec<FleetSolution> {
    (0..n)
        .map(|t| Solution {
            counts: choices.iter().zip(pick).map(|(c, p)| if c[*p].1 == t { c[*p].2.counts.clone() } else { BTreeMap::new() }).collect(),
            gpus: packed[t].clone(),
            proven: false,
            bound: 0.0,
        })
        .collect()
}

impl Problem<'_, '_> {
    pub(super) fn gpcs(&self, t: usize) -> f64 {
        self.input.types[t].gpu.gpcs as f64
    }

    pub(super) fn opts(&self, t: usize, si: usize) -> Option<&Options> {
        self.per_type[t][si].as_ref().ok()
    }

    /// Each service's rate at the lowest price per sample/s of any segment of any type, summed.
    pub(super) fn rate_bound(&self) -> (f64, String) {
        let mut total = 0.0;
        for &si in self.feasible {
            let rate = self.targets[si].rate;
            let best = (0..self.input.types.len())
                .filter_map(|t| self.opts(t, si).map(|o| (t, o)))
                .flat_map(|(t, o)| o.by_size.values().map(move |c| self.costs[t] * c.size as f64 / self.gpcs(t) / c.capacity))
                .fold(f64::INFINITY, f64::min);
            total += rate * best;
        }
        (total, "each service's rate at the lowest price per sample/s of any segment on any type".into())
    }

    /// Every service on its cheapest type's fewest-GPC cover (moved to its next cheapest where a
    /// type would pass its limit), each type packed optimally. Counts, per type, per feasible
    /// service; `gpus`: per type, per pattern, concatenated.
    pub(super) fn start(&self) -> Result<Start, PlanError> {
        let n = self.input.types.len();
        // Per feasible service: the cost and cover of each type that can serve it, cheapest first.
        let choices: Choices = self
            .feasible
            .iter()
            .map(|&si| {
                let mut c: Vec<(f64, usize, cover::Cover)> = (0..n)
                    .filter_map(|t| self.opts(t, si).map(|o| (t, min_cover(o, self.targets[si].rate))))
                    .map(|(t, cv)| (self.costs[t] * cv.gpcs as f64 / self.gpcs(t), t, cv))
                    .collect();
                c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                c
            })
            .collect();
        let mut pick: Vec<usize> = vec![0; choices.len()];
        loop {
            let mut packed = Vec::with_capacity(n);
            for t in 0..n {
                let counts = choices.iter().zip(&pick).filter(|(c, p)| c[**p].1 == t).map(|(c, p)| &c[*p].2.counts);
                packed.push(pack_counts(&self.pats[t], &optimal::aggregate(counts))?);
            }
            let over = (0..n).find(|&t| packed[t].iter().sum::<u32>() > self.limits[t]);
            let Some(t) = over else {
                return Ok(Start { solution: assignment(&choices, &pick, &packed, n), over: None });
            };
            // Move the service that loses least by leaving type t for its next choice.
            let mv = choices
                .iter()
                .zip(&pick)
                .enumerate()
                .filter(|(_, (c, p))| c[**p].1 == t && **p + 1 < c.len())
                .min_by(|a, b| {
                    let loss = |(c, p): &(&Vec<(f64, usize, cover::Cover)>, &usize)| c[**p + 1].0 - c[**p].0;
                    loss(&a.1).total_cmp(&loss(&b.1)).then(a.0.cmp(&b.0))
                })
                .map(|(i, _)| i);
            match mv {
                Some(i) => pick[i] += 1,
                // No service can move whole: the joint program may still split one (it starts
                // cold); the assignment as it stands is kept to say so.
                None => {
                    let mut sol = assignment(&choices, &pick, &packed, n);
                    sol[t].proven = false;
                    return Ok(Start { solution: sol, over: Some(t) });
                }
            }
        }
    }

    /// The joint program: phase 1 the objective, phase 2 the fewest GPU shares at that objective.
    pub(super) fn solve(&self, start: &[FleetSolution]) -> Option<Vec<FleetSolution>> {
        let t0 = Instant::now();
        let (mut sol, proven, bound) = self.model(start)?;
        tracing::debug!(seconds = t0.elapsed().as_secs_f64(), value = self.value(&sol) , proven, "fleet program solved");
        self.trim(&mut sol);
        for s in &mut sol {
            s.proven = proven;
            s.bound = bound;
        }
        Some(sol)
    }

    /// Drop every segment a service can do without (largest share of a GPU first), so that the
    /// cost-optimal plan holds no capacity beyond what the rates need; GPU counts stay.
    pub(super) fn trim(&self, sol: &mut [FleetSolution]) {
        let n = self.input.types.len();
        for (k, &si) in self.feasible.iter().enumerate() {
            let rate = self.targets[si].rate;
            let mut segs: Vec<(f64, usize, u8, f64)> = Vec::new(); // (share of a GPU, type, size, capacity)
            for t in 0..n {
                let Some(o) = self.opts(t, si) else { continue };
                for (size, count) in &sol[t].counts[k] {
                    let cap = o.by_size.get(size).map_or(0.0, |c| c.capacity);
                    segs.extend(std::iter::repeat_n((*size as f64 / self.gpcs(t), t, *size, cap), *count as usize));
                }
            }
            segs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
            let mut have: f64 = segs.iter().map(|s| s.3).sum();
            for (_, t, size, cap) in segs {
                if (have - cap) * (1.0 + 1e-9) >= rate && sol[t].counts[k].get(&size).is_some_and(|c| *c > 0) {
                    let remaining: u32 = sol.iter().map(|s| s.counts[k].values().sum::<u32>()).sum();
                    if remaining <= 1 {
                        break;
                    }
                    have -= cap;
                    let c = sol[t].counts[k].entry(size).or_insert(0);
                    *c -= 1;
                    if *c == 0 {
                        sol[t].counts[k].remove(&size);
                    }
                }
            }
        }
    }

    pub(super) fn value(&self, sol: &[FleetSolution]) -> f64 {
        sol.iter().zip(self.costs).map(|(s, c)| s.gpus.iter().sum::<u32>() as f64 * c).sum()
    }

    /// Build and solve the joint model: the objective, from the warm start.
    pub(super) fn model(&self, warm: &[FleetSolution]) -> Option<(Vec<FleetSolution>, bool, f64)> {
        let n = self.input.types.len();
        let mut pb = RowProblem::default();
        let mut warm_values = Vec::new();
        // x[t][k]: (size, col, coverage coefficient) per feasible service k.
        let mut x: Vec<Vec<Vec<(u8, highs::Col, f64)>>> = vec![Vec::with_capacity(self.feasible.len()); n];
        let upper = |t: usize, si: usize, size: u8, capacity: f64| {
            (self.targets[si].rate / capacity).ceil().min(self.limits[t] as f64 * self.gpcs(t) / size as f64).floor().max(1.0)
        };
        // Among plans of one cost, fewer segments (one 50 % share, not five of 10 %): each segment
        // costs `tie`, so little that all of them together stay under 0.4 of a cost step.
        let most: f64 = (0..n)
            .flat_map(|t| self.feasible.iter().map(move |&si| (t, si)))
            .filter_map(|(t, si)| self.opts(t, si).map(|o| (t, si, o)))
            .flat_map(|(t, si, o)| o.by_size.iter().map(move |(&size, seg)| upper(t, si, size, seg.capacity)))
            .sum();
        let tie = 0.4 * self.step / (most + 1.0);
        for t in 0..n {
            for (k, &si) in self.feasible.iter().enumerate() {
                let rate = self.targets[si].rate;
                let mut cols = Vec::new();
                if let Some(o) = self.opts(t, si) {
                    for (&size, seg) in &o.by_size {
                        let coef = (seg.capacity / rate).min(1.0);
                        cols.push((size, pb.add_integer_column(tie, 0.0..=upper(t, si, size, seg.capacity)), coef));
                        warm_values.push(warm[t].counts[k].get(&size).copied().unwrap_or(0) as f64);
                    }
                }
                x[t].push(cols);
            }
        }
        // y[t][p]: GPUs of type t laid out as pattern p; total[t]: GPUs of type t, an integer of
        // its own that carries the price (branching on a type's GPU count closes the cost gap far
        // sooner than branching on its patterns).
        let mut y: Vec<Vec<highs::Col>> = Vec::with_capacity(n);
        let mut total: Vec<highs::Col> = Vec::with_capacity(n);
        for t in 0..n {
            let obj = self.scaled[t];
            y.push(self.pats[t].iter().map(|_| pb.add_integer_column(0.0, 0.0..=self.limits[t] as f64)).collect());
            total.push(pb.add_integer_column(obj, 0.0..=self.limits[t] as f64));
            warm_values.extend(warm[t].gpus.iter().map(|&v| v as f64));
            warm_values.push(warm[t].gpus.iter().sum::<u32>() as f64);
        }
        for k in 0..self.feasible.len() {
            let row: Vec<(highs::Col, f64)> = (0..n).flat_map(|t| x[t][k].iter().map(|(_, c, coef)| (*c, *coef))).collect();
            pb.add_row(1.0.., row);
        }
        for t in 0..n {
            for size in self.input.types[t].gpu.sizes() {
                let mut row: Vec<(highs::Col, f64)> =
                    x[t].iter().flatten().filter(|(s, _, _)| *s == size).map(|(_, c, _)| (*c, 1.0)).collect();
                if row.is_empty() {
                    continue;
                }
                row.extend(self.pats[t].iter().zip(&y[t]).filter_map(|(p, c)| p.slots.get(&size).map(|k| (*c, -(*k as f64)))));
                pb.add_row(..=0.0, row);
            }
            let mut row: Vec<(highs::Col, f64)> = y[t].iter().map(|c| (*c, 1.0)).collect();
            row.push((total[t], -1.0));
            pb.add_row(0.0..=0.0, row);
        }
        let mut model = quiet(pb, Sense::Minimise)?;
        model.try_set_option("mip_max_nodes", NODE_LIMIT).ok()?;
        // Every cost is a multiple of the costs' greatest common divisor (the step), and the
        // segments' tie-break adds less than 0.4 of one: a plan within half a step of the bound
        // has the lowest cost.
        model.try_set_option("mip_abs_gap", 0.5 * self.step).ok()?;
        let solved = optimal::solve_warm(model, &warm_values, "the joint fleet model", "per-service assignment")?;
        let (values, status) = (solved.values, solved.status);
        // The bound on cost alone: less the tie-break's at most 0.4 step, up to a whole step.
        let dual = solved.dual_bound;
        let bound = (((dual - 0.4 * self.step) / self.step - 1e-9).ceil() * self.step).max(0.0) / self.scale;
        let mut out = Vec::with_capacity(n);
        for t in 0..n {
            let counts = x[t]
                .iter()
                .map(|cols| cols.iter().filter_map(|(size, col, _)| {
                    let v = values[col.index()].round().max(0.0) as u32;
                    (v > 0).then_some((*size, v))
                }).collect::<BTreeMap<u8, u32>>())
                .collect();
            let gpus = y[t].iter().map(|c| values[c.index()].round().max(0.0) as u32).collect();
            out.push(Solution { counts, gpus, proven: false, bound: 0.0 });
        }
        // Guard against numerical slack: every service covered, every type within its limit.
        for (k, &si) in self.feasible.iter().enumerate() {
            let cap: f64 = (0..n)
                .filter_map(|t| self.opts(t, si).map(|o| (t, o)))
                .flat_map(|(t, o)| out[t].counts[k].iter().map(move |(s, c)| o.by_size.get(s).map_or(0.0, |seg| seg.capacity) * *c as f64))
                .sum();
            if cap * (1.0 + 1e-9) < self.targets[si].rate {
                return None;
            }
        }
        if (0..n).any(|t| out[t].gpus.iter().sum::<u32>() > self.limits[t]) {
            return None;
        }
        Some((out, status == HighsModelStatus::Optimal, bound))
    }

    /// Concrete GPUs per type; `None` when some segment finds no slot.
    pub(super) fn place(&self, sol: &[FleetSolution]) -> Option<Vec<Vec<crate::GpuState>>> {
        (0..self.input.types.len())
            .map(|t| {
                // place() takes the services with options on t, with their counts.
                let mut feasible = Vec::new();
                let mut counts = Vec::new();
                for (k, &si) in self.feasible.iter().enumerate() {
                    match self.opts(t, si) {
                        Some(o) => {
                            feasible.push((si, o.clone()));
                            counts.push(sol[t].counts[k].clone());
                        }
                        None if !sol[t].counts[k].is_empty() => return None,
                        None => {}
                    }
                }
                place(&self.pats[t], &Solution { counts, gpus: sol[t].gpus.clone(), proven: false, bound: 0.0 }, &feasible)
            })
            .collect()
    }
}
