//! The KServe v2 (Open Inference Protocol) request and response bodies, with the binary tensor
//! data extension: a body may start with `Inference-Header-Content-Length` bytes of JSON followed
//! by raw little-endian tensor bytes, one block per input whose `parameters.binary_data_size` is
//! set, in the order of the inputs; outputs come back as binary when the request asks for it
//! (`parameters.binary_data` on a requested output, or `parameters.binary_data_output`).
//!
//! The system shared-memory extension, as Triton implements it: an input whose parameters name
//! `shared_memory_region` (with `shared_memory_byte_size` and optionally `shared_memory_offset`)
//! is copied out of that registered region ([`Regions`]; never mapped, so a client that shrinks
//! its object gets a 400 instead of killing the server), and a requested output with the same
//! parameters is written there, its response entry carrying the parameters instead of data.
//! Every reference is checked against its region's bounds and against the tensor's size: a 400,
//! never a read or a write past the region.

use std::cell::Cell;

use bytes::Bytes;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::error::InferError;
use parva_proto::meta::ModelMeta;
use crate::regions::{Regions, ShmPlace};
use parva_proto::tensor::{DataType, Tensor, element_count};

/// The HTTP header of the binary extension.
pub const HEADER_LEN: &str = "inference-header-content-length";

// Only the parameters parva reads are decoded; any others are skipped without being stored (a
// large `parameters` value costs no memory).
#[derive(Debug, Default, Deserialize)]
struct RequestParams {
    binary_data_output: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct InputParams {
    binary_data_size: Option<u64>,
    #[serde(flatten)]
    shm: ShmParams,
}

#[derive(Debug, Default, Deserialize)]
struct OutputParams {
    binary_data: Option<bool>,
    #[serde(flatten)]
    shm: ShmParams,
}

/// How a request reaches client shared memory: the registered regions, and the reservation of
/// the bytes an input copies out of one (the caller's memory bound; an `Err` refuses the request).
pub struct ShmAccess<'a> {
    pub regions: &'a Regions,
    pub reserve: &'a mut dyn FnMut(u64) -> Result<(), InferError>,
}

/// A tensor's place in a registered system shared-memory region.
#[derive(Debug, Default, Deserialize)]
struct ShmParams {
    shared_memory_region: Option<String>,
    shared_memory_byte_size: Option<u64>,
    shared_memory_offset: Option<u64>,
}

/// A requested output: its name, whether binary, and its place in shared memory if any.
#[derive(Debug, Clone)]
pub struct WantedOutput {
    pub name: String,
    pub binary: bool,
    pub shm: Option<ShmPlace>,
}

#[derive(Debug, Deserialize)]
struct RequestJson {
    id: Option<String>,
    #[serde(default)]
    parameters: RequestParams,
    inputs: Vec<InputJson>,
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Debug, Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: InputParams,
    data: Option<FlatData>,
}

#[derive(Debug, Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: OutputParams,
}

/// A decoded inference request.
#[derive(Debug)]
pub struct Request {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Requested outputs; `None` = all, as JSON unless `binary_default`.
    pub outputs: Option<Vec<WantedOutput>>,
    pub binary_default: bool,
}

/// What a request is checked against while it is decoded, before any allocation its declared
/// shapes call for: the served model's metadata (input names, datatypes, row shapes) and the
/// most rows one request may carry.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits<'a> {
    pub meta: &'a ModelMeta,
    pub max_rows: usize,
}

impl RequestLimits<'_> {
    /// Elements of one row over every input of the model (saturating).
    pub fn row_elements(&self) -> usize {
        self.meta.inputs.iter().map(|t| row_elements(&t.shape)).fold(0usize, usize::saturating_add)
    }

    /// Bytes of one row over every input of the model (saturating).
    pub fn row_bytes(&self) -> usize {
        self.meta
            .inputs
            .iter()
            .map(|t| row_elements(&t.shape).saturating_mul(t.datatype.size()))
            .fold(0usize, usize::saturating_add)
    }

    /// Most elements a request may carry over all its inputs.
    pub fn max_elements(&self) -> usize {
        self.row_elements().saturating_mul(self.max_rows)
    }
}

/// Elements of one row of a metadata shape `[-1, d1, d2, ...]` (saturating).
fn row_elements(shape: &[i64]) -> usize {
    shape.iter().skip(1).fold(1usize, |acc, &d| acc.saturating_mul(usize::try_from(d).unwrap_or(0)))
}

fn bad(msg: impl Into<String>) -> InferError {
    InferError::BadRequest(msg.into())
}

/// One element of JSON `data`, as it was written (16 bytes; the datatype may come later in the
/// object, so conversion waits until the whole input is read).
#[derive(Debug, Clone, Copy)]
enum Num {
    Bool(bool),
    I(i64),
    U(u64),
    F(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Bool(b) => write!(f, "{b}"),
            Num::I(v) => write!(f, "{v}"),
            Num::U(v) => write!(f, "{v}"),
            Num::F(v) => write!(f, "{v}"),
        }
    }
}

thread_local! {
    /// Elements the JSON `data` of the request being decoded on this thread may still add, and
    /// the request's total allowance (for the message). Set by [`decode_request`] around its one
    /// synchronous `serde_json` call, so a request can never make the decoder hold more elements
    /// than its model and `max_rows` allow, whatever its declared shapes say.
    static DATA_BUDGET: Cell<(usize, usize)> = const { Cell::new((usize::MAX, usize::MAX)) };
}

/// Nested JSON `data`, flattened in row-major order while it is parsed.
#[derive(Debug)]
struct FlatData(Vec<Num>);

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(Flatten(&mut out))?;
        Ok(FlatData(out))
    }
}

struct Flatten<'a>(&'a mut Vec<Num>);

impl Flatten<'_> {
    fn push<E: de::Error>(self, n: Num) -> Result<(), E> {
        let (left, total) = DATA_BUDGET.get();
        if left == 0 {
            return Err(E::custom(format!(
                "data holds more than {total} elements, the most this model takes in one request \
                 (row elements x --max-request-rows)"
            )));
        }
        DATA_BUDGET.set((left - 1, total));
        self.0.push(n);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers or booleans, in nested arrays (BYTES tensors are not supported)")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Num::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Num::I(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Num::U(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Num::F(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// Decode a request body; `header_len` is the binary extension's header value, if present.
/// With `limits`, every input is checked against the model (name, datatype, row shape, at most
/// `max_rows` rows) before its data is read or copied; without, only against its own data.
/// Either way no allocation is ever sized by a declared shape: JSON data is counted as it is
/// parsed (at most as many elements as the body has bytes, or as the limits allow), and a
/// shape must match the data it came with before a tensor is built.
/// Binary inputs are slices of `body` (not copied); shared-memory inputs are copied out of their
/// region (`access`; without, a reference to a region is a 400), each only after its size was
/// checked against the model and reserved with `access.reserve` (the server's memory bound).
pub fn decode_request(body: &Bytes, header_len: Option<usize>, limits: Option<&RequestLimits>, mut access: Option<ShmAccess<'_>>) -> Result<Request, InferError> {
    let json_len = header_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(bad(format!("Inference-Header-Content-Length is {json_len} but the body has only {} bytes", body.len())));
    }
    // Every JSON element takes at least one byte of the body.
    let budget = limits.map_or(json_len, |l| l.max_elements().min(json_len));
    let saved = DATA_BUDGET.replace((budget, budget));
    let parsed = serde_json::from_slice::<RequestJson>(&body[..json_len]);
    DATA_BUDGET.set(saved);
    let req = parsed.map_err(|e| bad(format!("request JSON: {e}")))?;
    let mut binary = body.slice(json_len..);
    let regions = access.as_ref().map(|a| a.regions);
    let place = |what: &str, p: &ShmParams| match regions {
        Some(r) => r.place(what, p.shared_memory_region.as_deref(), p.shared_memory_byte_size, p.shared_memory_offset),
        None if p.shared_memory_region.is_some() => Err(bad(format!("{what}: this endpoint does not serve shared memory"))),
        None => Ok(None),
    };
    if let Some(l) = limits {
        if req.inputs.len() > l.meta.inputs.len() {
            return Err(bad(format!("{} inputs where model {:?} takes {}", req.inputs.len(), l.meta.name, l.meta.inputs.len())));
        }
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for inp in req.inputs {
        let datatype = DataType::parse(&inp.datatype).ok_or_else(|| {
            bad(format!("input {:?}: unsupported datatype {:?} (supported: {})", inp.name, inp.datatype,
                DataType::ALL.map(DataType::name).join(", ")))
        })?;
        if let Some(l) = limits {
            check_against_model(&inp.name, datatype, &inp.shape, l)?;
        }
        let n = element_count(&inp.shape)
            .ok_or_else(|| bad(format!("input {:?}: invalid shape {:?} (a negative dimension, or more elements than memory can address)", inp.name, inp.shape)))?;
        let need = n.checked_mul(datatype.size()).ok_or_else(|| {
            bad(format!("input {:?}: shape {:?} of {datatype} needs more bytes than memory can address", inp.name, inp.shape))
        })?;
        let what = format!("input {:?}", inp.name);
        let shm = place(&what, &inp.parameters.shm)?;
        let data = match (shm, inp.parameters.binary_data_size, inp.data) {
            (Some(p), _, _) => {
                if p.size != need as u64 {
                    return Err(bad(format!("{what}: shared_memory_byte_size {} where shape {:?} of {datatype} needs {need}", p.size, inp.shape)));
                }
                if let Some(a) = access.as_mut() {
                    (a.reserve)(p.size)?;
                }
                p.region.read(p.offset, p.size).map_err(|e| bad(format!("{what}: {e}")))?
            }
            (None, Some(size), _) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(bad(format!("input {:?}: binary_data_size {size} but only {} binary bytes remain", inp.name, binary.len())));
                }
                if size != need {
                    return Err(bad(format!("input {:?}: {size} bytes of data where shape {:?} of {datatype} needs {need}",
                        inp.name, inp.shape)));
                }
                binary.split_to(size)
            }
            (None, None, Some(FlatData(flat))) => {
                if flat.len() != n {
                    return Err(bad(format!("input {:?}: {} elements of data where its shape {:?} holds {n}", inp.name, flat.len(), inp.shape)));
                }
                json_to_bytes(&inp.name, datatype, &flat)?.into()
            }
            (None, None, None) => return Err(bad(format!("input {:?} has neither data, binary_data_size nor shared_memory_region", inp.name))),
        };
        inputs.push(Tensor { name: inp.name, datatype, shape: inp.shape, data });
    }
    if !binary.is_empty() {
        return Err(bad(format!("{} bytes of binary data are left over after the inputs", binary.len())));
    }
    let binary_default = req.parameters.binary_data_output.unwrap_or(false);
    let outputs = match req.outputs {
        None => None,
        Some(outs) => Some(
            outs.into_iter()
                .map(|o| {
                    let what = format!("output {:?}", o.name);
                    let shm = place(&what, &o.parameters.shm)?;
                    // With the model's metadata, a region too small for the output is refused
                    // before the request runs (the answer's own size is checked again on writing).
                    let rows = inputs.first().map(Tensor::rows).unwrap_or(1) as u64;
                    let need = limits.and_then(|l| l.meta.outputs.iter().find(|m| m.name == o.name)).and_then(|m| m.row_bytes());
                    if let (Some(p), Some(row)) = (&shm, need) {
                        if p.size < row.saturating_mul(rows) {
                            return Err(bad(format!(
                                "{what}: shared_memory_byte_size {} is too small for its {} bytes ({rows} rows of {row})",
                                p.size,
                                row.saturating_mul(rows)
                            )));
                        }
                    }
                    Ok(WantedOutput { binary: o.parameters.binary_data.unwrap_or(false), shm, name: o.name })
                })
                .collect::<Result<Vec<_>, InferError>>()?,
        ),
    };
    Ok(Request { id: req.id, inputs, outputs, binary_default })
}

/// An input's name, datatype and shape against the model's metadata and the row limit.
fn check_against_model(name: &str, datatype: DataType, shape: &[i64], l: &RequestLimits) -> Result<(), InferError> {
    let m = l.meta.inputs.iter().find(|m| m.name == name).ok_or_else(|| {
        bad(format!("model {:?} has no input {name:?} (inputs: {})", l.meta.name,
            l.meta.inputs.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")))
    })?;
    if datatype != m.datatype {
        return Err(bad(format!("input {name:?}: datatype {datatype} where the model takes {}", m.datatype)));
    }
    let rows = shape.first().copied().unwrap_or(0);
    if shape.len() != m.shape.len() || rows < 1 || shape[1..] != m.shape[1..] {
        return Err(bad(format!("input {name:?}: shape {shape:?} does not match the model's {:?} (first dimension: batch >= 1)", m.shape)));
    }
    if rows as u64 > l.max_rows as u64 {
        return Err(bad(format!(
            "input {name:?}: shape {shape:?} has {rows} rows; this server takes at most {} rows per request (--max-request-rows)",
            l.max_rows
        )));
    }
    Ok(())
}

fn json_to_bytes(name: &str, dt: DataType, flat: &[Num]) -> Result<Vec<u8>, InferError> {
    // `flat` is what the body carried, so this allocation is bounded by the body.
    let mut out = Vec::with_capacity(flat.len() * dt.size());
    for (i, &x) in flat.iter().enumerate() {
        let wrong = || bad(format!("input {name:?}: element {i} ({x}) is not a valid {dt}"));
        let int = || match x {
            Num::I(v) => Ok(v),
            Num::U(v) => i64::try_from(v).map_err(|_| wrong()),
            _ => Err(wrong()),
        };
        let uint = || match x {
            Num::U(v) => Ok(v),
            Num::I(v) => u64::try_from(v).map_err(|_| wrong()),
            _ => Err(wrong()),
        };
        let float = || match x {
            Num::F(v) => Ok(v),
            Num::I(v) => Ok(v as f64),
            Num::U(v) => Ok(v as f64),
            Num::Bool(_) => Err(wrong()),
        };
        macro_rules! put_int {
            ($t:ty, $v:expr) => {{
                let v = <$t>::try_from($v).map_err(|_| wrong())?;
                out.extend_from_slice(&v.to_le_bytes());
            }};
        }
        match dt {
            DataType::Bool => match x {
                Num::Bool(b) => out.push(b as u8),
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
    let chosen: Vec<(Tensor, bool, Option<&ShmPlace>)> = match &req.outputs {
        None => outputs.into_iter().map(|t| (t, req.binary_default, None)).collect(),
        Some(wanted) => {
            let mut outputs = outputs;
            let mut chosen = Vec::with_capacity(wanted.len());
            for w in wanted {
                let name = &w.name;
                let pos = outputs.iter().position(|t| &t.name == name).ok_or_else(|| {
                    bad(format!("model {model:?} has no output {name:?} (outputs: {})",
                        outputs.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")))
                })?;
                chosen.push((outputs.swap_remove(pos), w.binary || req.binary_default, w.shm.as_ref()));
            }
            chosen
        }
    };
    // Every shared-memory output is checked before any is written.
    for (t, _, shm) in &chosen {
        if let Some(p) = shm {
            if (t.data.len() as u64) > p.size {
                return Err(bad(format!(
                    "output {:?}: shared_memory_byte_size {} is too small for its {} bytes (shape {:?} of {})",
                    t.name, p.size, t.data.len(), t.shape, t.datatype
                )));
            }
        }
    }
    let mut json_outputs = Vec::with_capacity(chosen.len());
    let mut tail = Vec::new();
    for (t, binary, shm) in &chosen {
        let mut o = json!({"name": t.name, "datatype": t.datatype.name(), "shape": t.shape});
        if let Some(p) = shm {
            p.region.write(p.offset, &t.data).map_err(|e| bad(format!("output {:?}: {e}", t.name)))?;
            o["parameters"] = json!({"shared_memory_region": p.region.name, "shared_memory_byte_size": t.data.len()});
        } else if *binary {
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
    let any_binary = chosen.iter().any(|(_, b, shm)| *b && shm.is_none());
    let json_len = bytes.len();
    bytes.extend_from_slice(&tail);
    Ok((bytes, any_binary.then_some(json_len)))
}

#[cfg(test)]
#[path = "kserve_tests.rs"]
mod tests;
