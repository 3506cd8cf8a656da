//! Model metadata, `models/<name>.json`: the KServe v2 model metadata (input and output names,
//! datatypes, shapes with `-1` for the dynamic batch dimension) plus the platform. The router
//! checks every request against it and the emulated backend builds its outputs from it.
//!
//! ```json
//! {"name": "resnet50", "platform": "pytorch_torchscript",
//!  "inputs":  [{"name": "input__0",  "datatype": "FP32", "shape": [-1, 3, 224, 224]}],
//!  "outputs": [{"name": "output__0", "datatype": "FP32", "shape": [-1, 1000]}]}
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tensor::{DataType, Tensor, element_count};

/// Why a model's metadata file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The cause is the error's `source()`, printed once after it by `{:#}`.
    #[error("{path}: read model metadata")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: model metadata: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: DataType,
    /// Dimensions; the first is the batch dimension and is `-1`.
    pub shape: Vec<i64>,
}

impl TensorMeta {
    /// Bytes of one row (`None` when a dimension after the batch one is dynamic).
    pub fn row_bytes(&self) -> Option<u64> {
        self.shape.iter().skip(1).try_fold(self.datatype.size() as u64, |n, &d| u64::try_from(d).ok().and_then(|d| n.checked_mul(d)))
    }
}

/// The metadata of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub name: String,
    #[serde(default = "default_platform")]
    pub platform: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
    /// Free text: where the model comes from, what the inputs mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_platform() -> String {
    "pytorch_torchscript".to_string()
}

/// Where a model's files are: `<dir>/<model>.json` and `<dir>/<model>.pt`.
pub fn meta_path(models_dir: &Path, model: &str) -> PathBuf {
    models_dir.join(format!("{model}.json"))
}

pub fn torchscript_path(models_dir: &Path, model: &str) -> PathBuf {
    models_dir.join(format!("{model}.pt"))
}

/// Largest metadata file read, bytes.
pub const MAX_META_BYTES: u64 = 1 << 20;
/// Most inputs, and most outputs, of a model.
pub const MAX_TENSORS: usize = 256;
/// Largest row (one sample) of one tensor, bytes: 1 GiB.
pub const MAX_ROW_BYTES: u64 = 1 << 30;

impl ModelMeta {
    /// Read and check `path` (at most [`MAX_META_BYTES`]).
    pub fn read(path: &Path) -> Result<ModelMeta, MetaError> {
        let len = std::fs::metadata(path).map_err(|e| MetaError::Io { path: path.to_path_buf(), source: e })?.len();
        if len > MAX_META_BYTES {
            return Err(MetaError::Invalid { path: path.to_path_buf(), problem: format!("{len} bytes; metadata files are at most {MAX_META_BYTES}") });
        }
        let text = std::fs::read_to_string(path).map_err(|e| MetaError::Io { path: path.to_path_buf(), source: e })?;
        ModelMeta::parse(&text).map_err(|problem| MetaError::Invalid { path: path.to_path_buf(), problem })
    }

    /// Parse and check metadata JSON.
    pub fn parse(text: &str) -> Result<ModelMeta, String> {
        let meta: ModelMeta = serde_json::from_str(text).map_err(|e| e.to_string())?;
        meta.check()?;
        Ok(meta)
    }

    /// Every tensor has a name unique among the inputs (outputs), a batch dimension `-1`
    /// followed by known dimensions, and rows of at most [`MAX_ROW_BYTES`]; at most
    /// [`MAX_TENSORS`] inputs and outputs.
    pub fn check(&self) -> Result<(), String> {
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err("needs at least one input and one output".into());
        }
        if self.inputs.len().max(self.outputs.len()) > MAX_TENSORS {
            return Err(format!("{} inputs and {} outputs; at most {MAX_TENSORS} of each", self.inputs.len(), self.outputs.len()));
        }
        for (kind, list) in [("input", &self.inputs), ("output", &self.outputs)] {
            for (i, t) in list.iter().enumerate() {
                if t.name.is_empty() {
                    return Err(format!("an {kind} has an empty name"));
                }
                if list[..i].iter().any(|o| o.name == t.name) {
                    return Err(format!("{kind} {:?} is listed twice", t.name));
                }
                if t.shape.first() != Some(&-1) {
                    return Err(format!("{kind} {:?}: shape {:?} must start with the batch dimension -1", t.name, t.shape));
                }
                if let Some(d) = t.shape[1..].iter().find(|&&d| d < 1) {
                    return Err(format!("{kind} {:?}: shape {:?} has dimension {d}; only the first may be dynamic", t.name, t.shape));
                }
                let row = t.shape[1..].iter().try_fold(t.datatype.size() as u64, |a, &d| a.checked_mul(d as u64));
                if row.is_none_or(|b| b > MAX_ROW_BYTES) {
                    return Err(format!(
                        "{kind} {:?}: shape {:?} of {} makes rows of more than {MAX_ROW_BYTES} bytes (the limit per row of one tensor)",
                        t.name, t.shape, t.datatype
                    ));
                }
            }
        }
        Ok(())
    }

    /// Check a request's inputs against the metadata, reorder them as the metadata lists them,
    /// and return them with their common batch size.
    pub fn check_inputs(&self, mut inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, usize), String> {
        if let Some(extra) = inputs.iter().find(|t| !self.inputs.iter().any(|m| m.name == t.name)) {
            return Err(format!(
                "model {:?} has no input {:?} (inputs: {})",
                self.name,
                extra.name,
                self.inputs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let mut ordered = Vec::with_capacity(self.inputs.len());
        let mut batch: Option<(usize, &str)> = None;
        for m in &self.inputs {
            let pos = inputs
                .iter()
                .position(|t| t.name == m.name)
                .ok_or_else(|| format!("input {:?} of model {:?} is missing", m.name, self.name))?;
            let t = inputs.swap_remove(pos);
            if inputs.iter().any(|o| o.name == m.name) {
                return Err(format!("input {:?} is given twice", m.name));
            }
            if t.datatype != m.datatype {
                return Err(format!("input {:?}: datatype {} where the model takes {}", m.name, t.datatype, m.datatype));
            }
            let shape_ok = t.shape.len() == m.shape.len()
                && t.shape[0] >= 1
                && t.shape[1..].iter().zip(&m.shape[1..]).all(|(a, b)| a == b);
            if !shape_ok {
                return Err(format!(
                    "input {:?}: shape {:?} does not match the model's {:?} (first dimension: batch >= 1)",
                    m.name, t.shape, m.shape
                ));
            }
            if !t.is_consistent() {
                return Err(format!(
                    "input {:?}: {} bytes of data where shape {:?} of {} needs {}",
                    m.name,
                    t.data.len(),
                    t.shape,
                    t.datatype,
                    element_count(&t.shape).unwrap_or(0) * t.datatype.size()
                ));
            }
            let rows = t.shape[0] as usize;
            match batch {
                Some((b, other)) if b != rows => {
                    return Err(format!(
                        "inputs {other:?} and {:?} have different batch sizes ({b} and {rows})",
                        m.name
                    ));
                }
                _ => batch = Some((rows, &m.name)),
            }
            ordered.push(t);
        }
        Ok((ordered, batch.map(|b| b.0).unwrap_or(1)))
    }

    /// Bytes of one row of every input (`None` when a dimension after the batch one is dynamic).
    pub fn input_row_bytes(&self) -> Option<u64> {
        row_bytes(&self.inputs)
    }

    /// Bytes of one row of every output (`None` when a dimension after the batch one is dynamic).
    pub fn output_row_bytes(&self) -> Option<u64> {
        row_bytes(&self.outputs)
    }

    /// Zero outputs for a batch of `rows` (what the emulated backend returns).
    pub fn zero_outputs(&self, rows: usize) -> Vec<Tensor> {
        zeros(&self.outputs, rows)
    }

    /// Zero inputs for a batch of `rows` (warm-up).
    pub fn zero_inputs(&self, rows: usize) -> Vec<Tensor> {
        zeros(&self.inputs, rows)
    }
}

impl ModelMeta {
    /// Synthetic inputs for a batch of `rows` (profiling): floating-point inputs uniform in
    /// [0, 1) from a fixed seed, integer and boolean inputs zero (valid token ids, masks, ...).
    pub fn synthetic_inputs(&self, rows: usize) -> Vec<Tensor> {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut out = zeros(&self.inputs, rows);
        for t in &mut out {
            let mut data = t.data.to_vec();
            match t.datatype {
                DataType::Fp32 => data.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&(next() as f32).to_le_bytes())),
                DataType::Fp64 => data.chunks_exact_mut(8).for_each(|c| c.copy_from_slice(&next().to_le_bytes())),
                DataType::Fp16 => data.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&half::f16::from_f64(next()).to_le_bytes())),
                DataType::Bf16 => data.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&half::bf16::from_f64(next()).to_le_bytes())),
                _ => {}
            }
            t.data = data.into();
        }
        out
    }
}

fn row_bytes(specs: &[TensorMeta]) -> Option<u64> {
    specs.iter().try_fold(0u64, |acc, t| acc.checked_add(t.row_bytes()?))
}

/// Zero tensors of `specs`' shapes with the batch dimension set to `rows`.
fn zeros(specs: &[TensorMeta], rows: usize) -> Vec<Tensor> {
    specs
        .iter()
        .map(|t| {
            let mut shape = t.shape.clone();
            shape[0] = rows as i64;
            Tensor::zeros(&t.name, t.datatype, shape)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ModelMeta {
        serde_json::from_str(
            r#"{"name":"m","inputs":[{"name":"a","datatype":"FP32","shape":[-1,2]},{"name":"b","datatype":"INT64","shape":[-1,3]}],
               "outputs":[{"name":"y","datatype":"FP32","shape":[-1,4]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn inputs_are_checked_and_reordered() {
        let m = meta();
        m.check().unwrap();
        let a = Tensor::zeros("a", DataType::Fp32, vec![2, 2]);
        let b = Tensor::zeros("b", DataType::Int64, vec![2, 3]);
        let (ordered, batch) = m.check_inputs(vec![b.clone(), a.clone()]).unwrap();
        assert_eq!(batch, 2);
        assert_eq!(ordered[0].name, "a");
        let e = m.check_inputs(vec![a.clone()]).unwrap_err();
        assert!(e.contains("\"b\"") && e.contains("missing"), "{e}");
        let bad = Tensor::zeros("b", DataType::Int64, vec![2, 4]);
        let e = m.check_inputs(vec![a.clone(), bad]).unwrap_err();
        assert!(e.contains("[2, 4]") && e.contains("[-1, 3]"), "{e}");
        let wrong_type = Tensor::zeros("b", DataType::Fp32, vec![2, 3]);
        assert!(m.check_inputs(vec![a.clone(), wrong_type]).unwrap_err().contains("FP32"));
        let other_batch = Tensor::zeros("b", DataType::Int64, vec![1, 3]);
        assert!(m.check_inputs(vec![a, other_batch]).unwrap_err().contains("batch"));
        assert_eq!(m.zero_outputs(3)[0].shape, vec![3, 4]);
    }

    #[test]
    fn metadata_that_would_make_huge_or_ambiguous_tensors_is_refused() {
        let one = |inputs: &str| format!(r#"{{"name":"m","inputs":{inputs},"outputs":[{{"name":"y","datatype":"FP32","shape":[-1,1]}}]}}"#);
        let e = ModelMeta::parse(&one(r#"[{"name":"a","datatype":"FP32","shape":[-1,1000000,1000000]}]"#)).unwrap_err();
        assert!(e.contains("input \"a\"") && e.contains("more than 1073741824 bytes"), "{e}");
        let e = ModelMeta::parse(&one(r#"[{"name":"a","datatype":"FP64","shape":[-1,9223372036854775807,4]}]"#)).unwrap_err();
        assert!(e.contains("more than 1073741824 bytes"), "{e}");
        let e = ModelMeta::parse(&one(r#"[{"name":"a","datatype":"FP32","shape":[-1,2]},{"name":"a","datatype":"FP32","shape":[-1,2]}]"#)).unwrap_err();
        assert!(e.contains("input \"a\" is listed twice"), "{e}");
        let many: Vec<String> = (0..257).map(|i| format!(r#"{{"name":"i{i}","datatype":"FP32","shape":[-1,1]}}"#)).collect();
        let e = ModelMeta::parse(&one(&format!("[{}]", many.join(",")))).unwrap_err();
        assert!(e.contains("257 inputs") && e.contains("at most 256"), "{e}");
        assert!(ModelMeta::parse(&one(r#"[{"name":"a","datatype":"FP32","shape":[-1,3,224,224]}]"#)).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; (MAX_META_BYTES + 1) as usize]).unwrap();
        let e = ModelMeta::read(&big).unwrap_err().to_string();
        assert!(e.contains("big.json") && e.contains("1048577 bytes; metadata files are at most 1048576"), "{e}");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        // PROPTEST_CASES=100000 cargo test --locked -p parva-runner meta::tests::props
        fn config() -> ProptestConfig {
            ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64), ..ProptestConfig::default() }
        }

        proptest! {
            #![proptest_config(config())]

            /// Arbitrary text never panics the reader; what it accepts has tensors whose zero
            /// batches of a few rows are consistent and no larger than the row limit says.
            #[test]
            fn metadata_reader_never_panics_and_accepts_only_usable_metadata(
                text in prop_oneof![
                    ".{0,200}",
                    (prop::collection::vec(prop_oneof![Just(-1i64), 0i64..5, Just(i64::MAX), Just(1i64 << 20)], 0..4),
                     prop::sample::select(vec!["FP32", "INT8", "BYTES", "fp32"]), "[a-z]{0,2}")
                        .prop_map(|(shape, dt, name)| format!(
                            r#"{{"name":"m","inputs":[{{"name":"{name}","datatype":"{dt}","shape":{shape:?}}}],"outputs":[{{"name":"y","datatype":"FP32","shape":[-1,1]}}]}}"#)),
                ],
            ) {
                if let Ok(m) = ModelMeta::parse(&text) {
                    for t in &m.inputs {
                        let row: u64 = t.shape[1..].iter().map(|&d| d as u64).product::<u64>() * t.datatype.size() as u64;
                        prop_assert!(row <= MAX_ROW_BYTES);
                    }
                    if m.inputs.iter().all(|t| t.shape[1..].iter().map(|&d| d as u64).product::<u64>() < 1 << 16) {
                        prop_assert!(m.zero_inputs(2).iter().all(Tensor::is_consistent));
                    }
                }
            }
        }
    }

    #[test]
    fn synthetic_inputs_fill_floats_in_unit_range_and_keep_integers_zero() {
        let m = meta();
        let inputs = m.synthetic_inputs(5);
        assert_eq!(m.check_inputs(inputs.clone()).unwrap().1, 5);
        let floats: Vec<f32> = inputs[0].data.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert!(floats.iter().all(|v| (0.0..1.0).contains(v)), "{floats:?}");
        assert!(floats.windows(2).any(|w| w[0] != w[1]), "not constant: {floats:?}");
        assert!(inputs[1].data.iter().all(|b| *b == 0));
        assert_eq!(m.synthetic_inputs(5), inputs, "deterministic");
    }

    #[test]
    fn committed_metadata_of_the_model_set_and_fixtures_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let set = ["bert", "densenet121", "densenet169", "densenet201", "inceptionv3", "mobilenetv2", "resnet101", "resnet152", "resnet50", "vgg16", "vgg19"];
        for name in set {
            let m = ModelMeta::read(&meta_path(&root.join("models"), name)).unwrap();
            assert_eq!(m.name, name);
            // Every model serves a batch of zeros of its input shapes.
            assert_eq!(m.check_inputs(m.zero_inputs(2)).unwrap().1, 2);
        }
        for name in ["linear", "two_io"] {
            ModelMeta::read(&meta_path(&root.join("models/fixtures"), name)).unwrap();
        }
    }
}
