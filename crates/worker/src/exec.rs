//! Running TorchScript batches with tch: router tensors in, router tensors out.

use std::path::Path;

use parva_proto::meta::ModelMeta;
use parva_proto::tensor::{DataType, Tensor};
use parva_proto::worker::Executor;
use tch::{CModule, IValue, Kind};

pub struct TorchExecutor {
    module: CModule,
    device: tch::Device,
    meta: ModelMeta,
}

pub fn kind_of(dt: DataType) -> Option<Kind> {
    Some(match dt {
        DataType::Bool => Kind::Bool,
        DataType::Uint8 => Kind::Uint8,
        DataType::Int8 => Kind::Int8,
        DataType::Int16 => Kind::Int16,
        DataType::Int32 => Kind::Int,
        DataType::Int64 => Kind::Int64,
        DataType::Fp16 => Kind::Half,
        DataType::Bf16 => Kind::BFloat16,
        DataType::Fp32 => Kind::Float,
        DataType::Fp64 => Kind::Double,
        DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => return None,
    })
}

impl TorchExecutor {
    pub fn load(path: &Path, device: tch::Device, meta: ModelMeta) -> Result<Self, String> {
        for t in meta.inputs.iter().chain(&meta.outputs) {
            if kind_of(t.datatype).is_none() {
                return Err(format!("tensor {:?}: datatype {} has no libtorch equivalent here", t.name, t.datatype));
            }
        }
        let mut module = CModule::load_on_device(path, device).map_err(|e| format!("load {}: {e}", path.display()))?;
        module.set_eval();
        Ok(TorchExecutor { module, device, meta })
    }

    /// The input on the model's device. On a GPU the bytes (a view of the worker's shared slab,
    /// or of the frame's payload) are copied once, straight to the device; on the CPU the model
    /// gets its own copy (a TorchScript model may write to its inputs).
    fn to_torch(&self, t: &Tensor) -> Result<tch::Tensor, String> {
        let kind = kind_of(t.datatype).ok_or_else(|| format!("input {:?}: unsupported datatype {}", t.name, t.datatype))?;
        let consistent = t.is_consistent();
        let aligned = (t.data.as_ptr() as usize) % t.datatype.size() == 0;
        if self.device != tch::Device::Cpu && consistent && aligned && !t.data.is_empty() {
            let strides = contiguous_strides(&t.shape);
            // SAFETY: `t.data` holds exactly the shape's elements (checked above), aligned for
            // the datatype, and outlives this call; the host tensor over it is only read, by the
            // copy to the device, which is synchronous for pageable memory and done before it
            // returns. Nothing keeps the host tensor afterwards.
            let host = unsafe { tch::Tensor::f_from_blob(t.data.as_ptr(), &t.shape, &strides, kind, tch::Device::Cpu) }
                .map_err(|e| format!("input {:?}: {e}", t.name))?;
            return Ok(host.to_device(self.device));
        }
        let x = tch::Tensor::f_from_data_size(&t.data, &t.shape, kind).map_err(|e| format!("input {:?}: {e}", t.name))?;
        Ok(if self.device == tch::Device::Cpu { x } else { x.to_device(self.device) })
    }
}

/// Row-major strides, in elements, of `shape`.
fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1].max(1));
    }
    strides
}

fn flatten(v: IValue, out: &mut Vec<tch::Tensor>) -> Result<(), String> {
    match v {
        IValue::Tensor(t) => out.push(t),
        IValue::Tuple(items) | IValue::GenericList(items) => {
            for i in items {
                flatten(i, out)?;
            }
        }
        IValue::TensorList(ts) => out.extend(ts),
        other => return Err(format!("the model returned {other:?}, not tensors")),
    }
    Ok(())
}

fn from_torch(t: &tch::Tensor, name: &str, dt: DataType) -> Result<Tensor, String> {
    let kind = kind_of(dt).ok_or_else(|| format!("output {name:?}: unsupported datatype {dt}"))?;
    let t = t.to_device(tch::Device::Cpu).to_kind(kind).contiguous();
    let numel = t.numel();
    let mut data = vec![0u8; numel * dt.size()];
    t.f_copy_data_u8(&mut data, numel).map_err(|e| format!("output {name:?}: {e}"))?;
    Ok(Tensor { name: name.to_string(), datatype: dt, shape: t.size(), data: data.into() })
}

impl TorchExecutor {
    /// Run the model: inputs copied to the device, outputs still on it.
    fn forward(&mut self, inputs: &[Tensor]) -> Result<Vec<tch::Tensor>, String> {
        let _guard = tch::no_grad_guard();
        let ivals: Vec<IValue> = inputs.iter().map(|t| self.to_torch(t).map(IValue::Tensor)).collect::<Result<_, _>>()?;
        let out = self.module.forward_is(&ivals).map_err(|e| format!("forward: {e}"))?;
        let mut tensors = Vec::new();
        flatten(out, &mut tensors)?;
        if tensors.len() != self.meta.outputs.len() {
            return Err(format!("the model returned {} tensors; its metadata lists {} outputs", tensors.len(), self.meta.outputs.len()));
        }
        Ok(tensors)
    }
}

impl Executor for TorchExecutor {
    fn execute(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let tensors = self.forward(&inputs)?;
        drop(inputs);
        tensors.iter().zip(&self.meta.outputs).map(|(t, m)| from_torch(t, &m.name, m.datatype)).collect()
    }

    /// As serving does minus the socket: inputs to the device, forward, outputs back to the host.
    fn execute_ref(&mut self, inputs: &[Tensor]) -> Result<(), String> {
        let tensors = self.forward(inputs)?;
        for (t, m) in tensors.iter().zip(&self.meta.outputs) {
            from_torch(t, &m.name, m.datatype)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (std::path::PathBuf, ModelMeta) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fixtures");
        let meta = ModelMeta::read(&dir.join(format!("{name}.json"))).unwrap();
        (dir.join(format!("{name}.pt")), meta)
    }

    #[test]
    fn strides_are_row_major_in_elements() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[5]), vec![1]);
        assert!(contiguous_strides(&[]).is_empty());
    }

    #[test]
    fn linear_fixture_matches_its_documented_weights() {
        let (pt, meta) = fixture("linear");
        let mut ex = TorchExecutor::load(&pt, tch::Device::Cpu, meta).unwrap();
        let x: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 1.0];
        let input = Tensor { name: "input__0".into(), datatype: DataType::Fp32, shape: vec![2, 4], data: x.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let out = ex.execute(vec![input]).unwrap();
        assert_eq!(out[0].shape, vec![2, 3]);
        let y: Vec<f32> = out[0].data.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        // y[i] = sum_j x[j] (i - j) / 4 + (i - 1)
        assert_eq!(y, vec![-6.0, -2.5, 1.0, -1.75, -0.5, 0.75]);
    }

    #[test]
    fn tuple_outputs_map_to_the_metadata_outputs_in_order() {
        let (pt, meta) = fixture("two_io");
        let mut ex = TorchExecutor::load(&pt, tch::Device::Cpu, meta).unwrap();
        let ids = Tensor { name: "ids".into(), datatype: DataType::Int64, shape: vec![1, 3], data: [1i64, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect() };
        let scale = Tensor { name: "scale".into(), datatype: DataType::Fp32, shape: vec![1, 1], data: 2f32.to_le_bytes().to_vec().into() };
        let out = ex.execute(vec![ids, scale]).unwrap();
        assert_eq!((out[0].name.as_str(), out[0].datatype), ("scaled", DataType::Fp32));
        assert_eq!(out[0].data, 12f32.to_le_bytes().to_vec());
        assert_eq!((out[1].name.as_str(), out[1].data.to_vec()), ("total", 6i64.to_le_bytes().to_vec()));
    }
}
