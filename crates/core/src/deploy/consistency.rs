//! The reader's checks across rows of a map: one model, rate, SLO and margin per service, one GPU
//! type per node, and every row naming its GPU type or none (moved out of `deploy.rs` unchanged).

use std::collections::BTreeMap;
use std::path::Path;

use super::{MAP_MARGIN_COLUMN, Segment};
use crate::error::{FormatError, Location};
use crate::profile::fmt_num;

/// What the rows read so far said about each service and about GPU types: a map holds one
/// model, rate and SLO per service and one GPU type per node, whatever row a reader happens to
/// use (a mixed fleet's map has nodes of several types).
#[derive(Default)]
pub(super) struct Consistency {
    /// Service -> (first line, model, rate, slo_ms, margin_ms).
    pub(super) services: BTreeMap<String, (u64, String, Option<f64>, Option<f64>, Option<f64>)>,
    /// Node -> (first line, GPU type) of the node's first row: a node is one GPU type.
    gpu_types: BTreeMap<u32, (u64, Option<String>)>,
    /// (first line, whether it named a GPU type): every row names one, or none does.
    named: Option<(u64, bool)>,
}

impl Consistency {
    pub(super) fn check(&mut self, seg: &Segment, line: u64, path: &Path) -> Result<(), FormatError> {
        let show = |v: &Option<f64>| v.map_or_else(|| "empty".to_string(), fmt_num);
        match self.services.get(&seg.service) {
            None => {
                if let (Some(m), Some(slo)) = (seg.margin_ms, seg.slo_ms) {
                    if m >= slo {
                        return Err(FormatError::invalid(
                            Location::field(path, line, MAP_MARGIN_COLUMN),
                            format!("{} is not below the service's slo_ms {}: nothing would be left to plan to", fmt_num(m), fmt_num(slo)),
                        ));
                    }
                }
                self.services.insert(seg.service.clone(), (line, seg.model.clone(), seg.rate, seg.slo_ms, seg.margin_ms));
            }
            Some((first, model, rate, slo, margin)) => {
                let differs = if *model != seg.model {
                    Some(("model", model.clone(), seg.model.clone()))
                } else if *rate != seg.rate {
                    Some(("rate", show(rate), show(&seg.rate)))
                } else if *slo != seg.slo_ms {
                    Some(("slo_ms", show(slo), show(&seg.slo_ms)))
                } else if *margin != seg.margin_ms {
                    Some((MAP_MARGIN_COLUMN, show(margin), show(&seg.margin_ms)))
                } else {
                    None
                };
                if let Some((field, was, now)) = differs {
                    return Err(FormatError::invalid(
                        Location::field(path, line, field),
                        format!(
                            "service {:?} has {field} {now} here but {was} on line {first}; a service has one \
                             model, rate, SLO and margin on every row of a map",
                            seg.service
                        ),
                    ));
                }
            }
        }
        self.check_gpu_type(seg.node, seg.gpu_type.clone(), line, path)
    }

    pub(super) fn check_gpu_type(&mut self, node: u32, gpu_type: Option<String>, line: u64, path: &Path) -> Result<(), FormatError> {
        let name = |t: &Option<String>| t.clone().unwrap_or_else(|| "empty".into());
        let at = || Location::field(path, line, "gpu_type");
        match self.named {
            None => self.named = Some((line, gpu_type.is_some())),
            Some((first, named)) if named != gpu_type.is_some() => {
                return Err(FormatError::invalid(
                    at(),
                    format!(
                        "is {} here but {} on line {first}; every row of a map names its GPU type, or none does",
                        name(&gpu_type),
                        if named { "named" } else { "empty" }
                    ),
                ));
            }
            Some(_) => {}
        }
        match self.gpu_types.get(&node) {
            None => {
                self.gpu_types.insert(node, (line, gpu_type));
            }
            Some((first, ty)) if *ty != gpu_type => {
                return Err(FormatError::invalid(
                    at(),
                    format!(
                        "is {} here but {} on line {first}, on the same node {node}; a node is one GPU type (a mixed \
                         fleet puts each type on nodes of its own)",
                        name(&gpu_type),
                        name(ty)
                    ),
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }
}
