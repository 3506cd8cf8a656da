//! The KServe v2 (Open Inference Protocol) request and response bodies, with the binary tensor
//! data extension: a body may start with `Inference-Header-Content-Length` bytes of JSON followed
//! by raw little-endian tensor bytes, one block per input whose `parameters.binary_data_size` is
//! set, in the order of the inputs; outputs come back as binary when the request asks for it
//! (`parameters.binary_data` on a requested output, or `parameters.binary_data_output`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::InferError;
use crate::tensor::{DataType, Tensor, element_count};

/// The HTTP header of the binary extension.
pub const HEADER_LEN: &str = "inference-header-content-length";

#[derive(Debug, Deserialize)]
struct RequestJson {
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputJson>,
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Debug, Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A decoded inference request.
#[derive(Debug)]
pub struct Request {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Requested outputs (name, as binary); `None` = all, as JSON unless `binary_default`.
    pub outputs: Option<Vec<(String, bool)>>,
    pub binary_default: bool,
}

fn bad(msg: impl Into<String>) -> InferError {
    InferError::BadRequest(msg.into())
}

fn flag(params: &Map<String, Value>, key: &str) -> bool {
    params.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Decode a request body; `header_len` is the binary extension's header value, if present.
pub fn decode_request(body: &[u8], header_len: Option<usize>) -> Result<Request, InferError> {
    let json_len = header_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(bad(format!("Inference-Header-Content-Length is {json_len} but the body has only {} bytes", body.len())));
    }
    let req: RequestJson =
        serde_json::from_slice(&body[..json_len]).map_err(|e| bad(format!("request JSON: {e}")))?;
    let mut binary = &body[json_len..];
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for inp in req.inputs {
        let datatype = DataType::parse(&inp.datatype).ok_or_else(|| {
            bad(format!("input {:?}: unsupported datatype {:?} (supported: {})", inp.name, inp.datatype,
                DataType::ALL.map(DataType::name).join(", ")))
        })?;
        let n = element_count(&inp.shape)
            .ok_or_else(|| bad(format!("input {:?}: invalid shape {:?}", inp.name, inp.shape)))?;
        let data = match (inp.parameters.get("binary_data_size"), inp.data) {
            (Some(size), _) => {
                let size = size.as_u64().ok_or_else(|| bad(format!("input {:?}: binary_data_size must be a whole number", inp.name)))? as usize;
                if size > binary.len() {
                    return Err(bad(format!("input {:?}: binary_data_size {size} but only {} binary bytes remain", inp.name, binary.len())));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                mine.to_vec()
            }
            (None, Some(v)) => json_to_bytes(&inp.name, datatype, &v, n)?,
            (None, None) => return Err(bad(format!("input {:?} has neither data nor binary_data_size", inp.name))),
        };
        if data.len() != n * datatype.size() {
            return Err(bad(format!("input {:?}: {} bytes of data where shape {:?} of {datatype} needs {}",
                inp.name, data.len(), inp.shape, n * datatype.size())));
        }
        inputs.push(Tensor { name: inp.name, datatype, shape: inp.shape, data });
    }
    if !binary.is_empty() {
        return Err(bad(format!("{} bytes of binary data are left over after the inputs", binary.len())));
    }
    let outputs = req.outputs.map(|outs| outs.into_iter().map(|o| (o.name, flag(&o.parameters, "binary_data"))).collect());
    Ok(Request { id: req.id, inputs, outputs, binary_default: flag(&req.parameters, "binary_data_output") })
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

fn json_to_bytes(name: &str, dt: DataType, v: &Value, n: usize) -> Result<Vec<u8>, InferError> {
    let mut flat = Vec::with_capacity(n);
    flatten(v, &mut flat);
    if flat.len() != n {
        return Err(bad(format!("input {name:?}: {} elements of data where its shape holds {n}", flat.len())));
    }
    let mut out = Vec::with_capacity(n * dt.size());
    for (i, x) in flat.into_iter().enumerate() {
        let wrong = || bad(format!("input {name:?}: element {i} ({x}) is not a valid {dt}"));
        let int = || x.as_i64().ok_or_else(wrong);
        let uint = || x.as_u64().ok_or_else(wrong);
        let float = || x.as_f64().ok_or_else(wrong);
        macro_rules! put_int {
            ($t:ty, $v:expr) => {{
                let v = <$t>::try_from($v).map_err(|_| wrong())?;
                out.extend_from_slice(&v.to_le_bytes());
            }};
        }
        match dt {
            DataType::Bool => match x {
                Value::Bool(b) => out.push(*b as u8),
                _ => out.push((int()? != 0) as u8),
            },
            DataType::Uint8 => put_int!(u8, uint()?),
            DataType::Uint16 => put_int!(u16, uint()?),
            DataType::Uint32 => put_int!(u32, uint()?),
            DataType::Uint64 => put_int!(u64, uint()?),
            DataType::Int8 => put_int!(i8, int()?),
            DataType::Int16 => put_int!(i16, int()?),
            DataType::Int32 => put_int!(i32, int()?),
            DataType::Int64 => put_int!(i64, int()?),
            DataType::Fp16 => out.extend_from_slice(&half::f16::from_f64(float()?).to_le_bytes()),
            DataType::Bf16 => out.extend_from_slice(&half::bf16::from_f64(float()?).to_le_bytes()),
            DataType::Fp32 => out.extend_from_slice(&(float()? as f32).to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&float()?.to_le_bytes()),
        }
    }
    Ok(out)
}

/// The elements of a tensor as JSON values.
pub fn tensor_to_json(t: &Tensor) -> Vec<Value> {
    let w = t.datatype.size();
    t.data
        .chunks_exact(w)
        .map(|c| {
            let b = |n: usize| -> [u8; 8] {
                let mut a = [0u8; 8];
                a[..n].copy_from_slice(&c[..n]);
                a
            };
            match t.datatype {
                DataType::Bool => json!(c[0] != 0),
                DataType::Uint8 => json!(c[0]),
                DataType::Uint16 => json!(u16::from_le_bytes([c[0], c[1]])),
                DataType::Uint32 => json!(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                DataType::Uint64 => json!(u64::from_le_bytes(b(8))),
                DataType::Int8 => json!(c[0] as i8),
                DataType::Int16 => json!(i16::from_le_bytes([c[0], c[1]])),
                DataType::Int32 => json!(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                DataType::Int64 => json!(i64::from_le_bytes(b(8))),
                DataType::Fp16 => json!(half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
                DataType::Bf16 => json!(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
                DataType::Fp32 => json!(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                DataType::Fp64 => json!(f64::from_le_bytes(b(8))),
            }
        })
        .collect()
}

/// Encode a response: the body, and the JSON part's length when binary outputs follow it.
pub fn encode_response(model: &str, req: &Request, outputs: Vec<Tensor>) -> Result<(Vec<u8>, Option<usize>), InferError> {
    let chosen: Vec<(Tensor, bool)> = match &req.outputs {
        None => outputs.into_iter().map(|t| (t, req.binary_default)).collect(),
        Some(wanted) => {
            let mut outputs = outputs;
            let mut chosen = Vec::with_capacity(wanted.len());
            for (name, binary) in wanted {
                let pos = outputs.iter().position(|t| &t.name == name).ok_or_else(|| {
                    bad(format!("model {model:?} has no output {name:?} (outputs: {})",
                        outputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")))
                })?;
                chosen.push((outputs.swap_remove(pos), *binary || req.binary_default));
            }
            chosen
        }
    };
    let mut json_outputs = Vec::with_capacity(chosen.len());
    let mut tail = Vec::new();
    for (t, binary) in &chosen {
        let mut o = json!({"name": t.name, "datatype": t.datatype.name(), "shape": t.shape});
        if *binary {
            o["parameters"] = json!({"binary_data_size": t.data.len()});
            tail.extend_from_slice(&t.data);
        } else {
            o["data"] = Value::Array(tensor_to_json(t));
        }
        json_outputs.push(o);
    }
    let mut body = json!({"model_name": model, "outputs": json_outputs});
    if let Some(id) = &req.id {
        body["id"] = json!(id);
    }
    let mut bytes = serde_json::to_vec(&body).map_err(|e| bad(format!("encode response: {e}")))?;
    let any_binary = chosen.iter().any(|(_, b)| *b);
    let json_len = bytes.len();
    bytes.extend_from_slice(&tail);
    Ok((bytes, any_binary.then_some(json_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_binary_inputs_decode_to_the_same_tensor() {
        let j = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#;
        let r = decode_request(j, None).unwrap();
        let want: Vec<u8> = [1f32, 2., 3., 4.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(r.inputs[0].data, want);
        let head = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}],"outputs":[{"name":"x","parameters":{"binary_data":true}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&want);
        let r2 = decode_request(&body, Some(head.len())).unwrap();
        assert_eq!(r2.inputs, r.inputs);
        let (out, json_len) = encode_response("m", &r2, r2.inputs.clone()).unwrap();
        let json_len = json_len.unwrap();
        assert_eq!(&out[json_len..], want.as_slice());
        let v: Value = serde_json::from_slice(&out[..json_len]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 16);
    }

    #[test]
    fn bad_inputs_are_named_in_the_message() {
        let e = decode_request(br#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[1,2]}]}"#, None).unwrap_err();
        assert!(e.to_string().contains("\"x\"") && e.to_string().contains("holds 3"), "{e}");
        let e = decode_request(br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#, None).unwrap_err();
        assert!(e.to_string().contains("INT8"), "{e}");
        let e = decode_request(br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]}"#, None).unwrap_err();
        assert!(e.to_string().contains("BYTES"), "{e}");
        assert_eq!(e.status(), 400);
        let r = decode_request(br#"{"inputs":[{"name":"b","shape":[2],"datatype":"BOOL","data":[true,0]}]}"#, None).unwrap();
        assert_eq!(tensor_to_json(&r.inputs[0]), vec![json!(true), json!(false)]);
    }
}
