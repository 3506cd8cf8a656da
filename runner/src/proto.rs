//! The router <-> worker protocol over a Unix domain socket.
//!
//! Every frame is `[u32 LE header length][u64 LE payload length][header: JSON Msg][payload]`; the
//! payload holds the tensors' bytes back to back, in the order the header lists them. The router
//! listens on one socket per worker process; the worker connects, sends `Hello`, loads and warms
//! up its model, sends `Ready` (or `Fatal`), then answers each `Batch` with `Done` or `Failed`,
//! one batch at a time, until `Shutdown` or end of stream. The profiler (`parva profile`) sends
//! `Bench` instead of `Batch`: the worker runs synthetic batches back to back on its own and
//! answers with their latencies (`BenchDone`). These types pull no libtorch.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tensor::{DataType, Tensor};

/// Largest header accepted, bytes.
pub const MAX_HEADER: usize = 1 << 20;
/// Largest payload accepted, bytes.
pub const MAX_PAYLOAD: u64 = 1 << 32;

/// A tensor's description in a frame header; its bytes are in the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorHeader {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub bytes: u64,
}

/// A message; `Batch` and `Done` carry tensors in the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Worker, on connecting: who it is; `runtime` names the inference library and its version.
    Hello {
        pid: u32,
        backend: String,
        device: String,
        #[serde(default)]
        runtime: String,
    },
    /// Worker: the model is loaded and warmed up.
    Ready { load_ms: f64 },
    /// Worker: the model could not be loaded; the worker exits.
    Fatal { message: String },
    /// Router: run these inputs (tensors in the payload).
    Batch { id: u64, tensors: Vec<TensorHeader> },
    /// Worker: the outputs of batch `id` (tensors in the payload) and its execution time.
    Done { id: u64, exec_us: u64, tensors: Vec<TensorHeader> },
    /// Worker: batch `id` failed; the worker keeps serving.
    Failed { id: u64, message: String },
    /// Router: finish and exit.
    Shutdown,
    /// Profiler: run batches of `rows` synthetic rows back to back, in a closed loop, until
    /// `seconds` have passed (at least one batch), then answer `BenchDone` (or `Failed` with id 0).
    Bench { rows: usize, seconds: f64 },
    /// Worker: the latency of each batch of the `Bench` round, in microseconds, and the round's
    /// wall time.
    BenchDone { rows: usize, seconds: f64, lat_us: Vec<u64> },
}

/// A frame: a message and the tensors it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub msg: Msg,
    pub tensors: Vec<Tensor>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("frame header of {len} bytes exceeds the limit of {limit}")]
    HeaderTooLarge { len: usize, limit: usize },
    #[error("frame payload of {len} bytes exceeds the limit of {limit}")]
    PayloadTooLarge { len: u64, limit: u64 },
    #[error("bad frame header: {0}")]
    BadHeader(String),
}

/// The tensor headers of a message, if it carries tensors.
fn tensor_headers(msg: &Msg) -> &[TensorHeader] {
    match msg {
        Msg::Batch { tensors, .. } | Msg::Done { tensors, .. } => tensors,
        _ => &[],
    }
}

/// Describe `tensors` for a header.
pub fn headers_of(tensors: &[Tensor]) -> Vec<TensorHeader> {
    tensors
        .iter()
        .map(|t| TensorHeader { name: t.name.clone(), datatype: t.datatype, shape: t.shape.clone(), bytes: t.data.len() as u64 })
        .collect()
}

fn prefix(msg: &Msg, tensors: &[Tensor]) -> Result<Vec<u8>, ProtoError> {
    let header = serde_json::to_vec(msg).map_err(|e| ProtoError::BadHeader(e.to_string()))?;
    let payload: u64 = tensors.iter().map(|t| t.data.len() as u64).sum();
    let mut out = Vec::with_capacity(12 + header.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload.to_le_bytes());
    out.extend_from_slice(&header);
    Ok(out)
}

fn parse_prefix(pre: &[u8; 12]) -> Result<(usize, u64), ProtoError> {
    let hlen = u32::from_le_bytes([pre[0], pre[1], pre[2], pre[3]]) as usize;
    let mut p = [0u8; 8];
    p.copy_from_slice(&pre[4..12]);
    let plen = u64::from_le_bytes(p);
    if hlen > MAX_HEADER {
        return Err(ProtoError::HeaderTooLarge { len: hlen, limit: MAX_HEADER });
    }
    if plen > MAX_PAYLOAD {
        return Err(ProtoError::PayloadTooLarge { len: plen, limit: MAX_PAYLOAD });
    }
    Ok((hlen, plen))
}

/// Split a payload into the tensors the header describes.
fn split_payload(msg: &Msg, mut payload: Vec<u8>) -> Result<Vec<Tensor>, ProtoError> {
    let heads = tensor_headers(msg);
    let total: u64 = heads.iter().map(|h| h.bytes).sum();
    if total != payload.len() as u64 {
        return Err(ProtoError::BadHeader(format!("tensors need {total} bytes; the payload has {}", payload.len())));
    }
    let mut out = Vec::with_capacity(heads.len());
    // Split from the back so each tensor takes its bytes without copying the rest.
    for h in heads.iter().rev() {
        let at = payload.len() - h.bytes as usize;
        // The first tensor takes what is left of the buffer without a copy.
        let data = if at == 0 { std::mem::take(&mut payload) } else { payload.split_off(at) };
        let t = Tensor { name: h.name.clone(), datatype: h.datatype, shape: h.shape.clone(), data };
        if !t.is_consistent() {
            return Err(ProtoError::BadHeader(format!("tensor {:?}: {} bytes do not fit shape {:?} of {}", h.name, h.bytes, h.shape, h.datatype)));
        }
        out.push(t);
    }
    out.reverse();
    Ok(out)
}

fn decode_header(bytes: &[u8]) -> Result<Msg, ProtoError> {
    serde_json::from_slice(bytes).map_err(|e| ProtoError::BadHeader(e.to_string()))
}

/// Write a frame (blocking; the workers' side).
pub fn write_frame(w: &mut impl Write, msg: &Msg, tensors: &[Tensor]) -> Result<(), ProtoError> {
    w.write_all(&prefix(msg, tensors)?)?;
    for t in tensors {
        w.write_all(&t.data)?;
    }
    w.flush()?;
    Ok(())
}

/// Read a frame (blocking); `Closed` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> Result<Frame, ProtoError> {
    let mut pre = [0u8; 12];
    if let Err(e) = r.read_exact(&mut pre) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof { ProtoError::Closed } else { e.into() });
    }
    let (hlen, plen) = parse_prefix(&pre)?;
    let mut header = vec![0u8; hlen];
    r.read_exact(&mut header)?;
    let msg = decode_header(&header)?;
    let mut payload = vec![0u8; plen as usize];
    r.read_exact(&mut payload)?;
    let tensors = split_payload(&msg, payload)?;
    Ok(Frame { msg, tensors })
}

/// Write a frame (async; the router's side).
pub async fn write_frame_async<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, msg: &Msg, tensors: &[Tensor]) -> Result<(), ProtoError> {
    w.write_all(&prefix(msg, tensors)?).await?;
    for t in tensors {
        w.write_all(&t.data).await?;
    }
    w.flush().await?;
    Ok(())
}

/// Read a frame (async); `Closed` at a clean end of stream.
pub async fn read_frame_async<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<Frame, ProtoError> {
    let mut pre = [0u8; 12];
    if let Err(e) = r.read_exact(&mut pre).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof { ProtoError::Closed } else { e.into() });
    }
    let (hlen, plen) = parse_prefix(&pre)?;
    let mut header = vec![0u8; hlen];
    r.read_exact(&mut header).await?;
    let msg = decode_header(&header)?;
    let mut payload = vec![0u8; plen as usize];
    r.read_exact(&mut payload).await?;
    let tensors = split_payload(&msg, payload)?;
    Ok(Frame { msg, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_sync_and_async() {
        let t = Tensor { name: "x".into(), datatype: DataType::Int64, shape: vec![2, 1], data: (0u8..16).collect() };
        let msg = Msg::Batch { id: 7, tensors: headers_of(std::slice::from_ref(&t)) };
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg, std::slice::from_ref(&t)).unwrap();
        let back = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(back, Frame { msg: msg.clone(), tensors: vec![t.clone()] });
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let back = rt.block_on(async { read_frame_async(&mut buf.as_slice()).await.unwrap() });
        assert_eq!(back.tensors, vec![t]);
        assert!(matches!(read_frame(&mut [].as_slice()), Err(ProtoError::Closed)));
        let mut bad = Vec::new();
        bad.extend_from_slice(&(u32::MAX).to_le_bytes());
        bad.extend_from_slice(&0u64.to_le_bytes());
        assert!(matches!(read_frame(&mut bad.as_slice()), Err(ProtoError::HeaderTooLarge { .. })));
    }
}
