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

use crate::error::ServeError;
use crate::tensor::{DataType, Tensor, element_count};

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: DataType,
    /// Dimensions; the first is the batch dimension and is `-1`.
    pub shape: Vec<i64>,
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

impl ModelMeta {
    /// Read and check `path`.
    pub fn read(path: &Path) -> Result<ModelMeta, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::io(path, "read model metadata", e))?;
        let meta: ModelMeta = serde_json::from_str(&text)
            .map_err(|e| ServeError::Meta { path: path.to_path_buf(), problem: e.to_string() })?;
        meta.check().map_err(|problem| ServeError::Meta { path: path.to_path_buf(), problem })?;
        Ok(meta)
    }

    /// Every tensor has a name and a batch dimension `-1` followed by known dimensions.
    pub fn check(&self) -> Result<(), String> {
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err("needs at least one input and one output".into());
        }
        for (kind, t) in self.inputs.iter().map(|t| ("input", t)).chain(self.outputs.iter().map(|t| ("output", t))) {
            if t.name.is_empty() {
                return Err(format!("an {kind} has an empty name"));
            }
            if t.shape.first() != Some(&-1) {
                return Err(format!("{kind} {:?}: shape {:?} must start with the batch dimension -1", t.name, t.shape));
            }
            if let Some(d) = t.shape[1..].iter().find(|&&d| d < 1) {
                return Err(format!("{kind} {:?}: shape {:?} has dimension {d}; only the first may be dynamic", t.name, t.shape));
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
            match t.datatype {
                DataType::Fp32 => t.data.chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&(next() as f32).to_le_bytes())),
                DataType::Fp64 => t.data.chunks_exact_mut(8).for_each(|c| c.copy_from_slice(&next().to_le_bytes())),
                DataType::Fp16 => t.data.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&half::f16::from_f64(next()).to_le_bytes())),
                DataType::Bf16 => t.data.chunks_exact_mut(2).for_each(|c| c.copy_from_slice(&half::bf16::from_f64(next()).to_le_bytes())),
                _ => {}
            }
        }
        out
    }
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
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
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
