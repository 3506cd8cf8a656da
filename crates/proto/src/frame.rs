//! The router <-> worker protocol over a Unix domain socket.
//!
//! Every frame is `[u32 LE header length][u64 LE payload length][header: JSON Msg][payload]`; the
//! payload holds the tensors' bytes back to back, in the order the header lists them. The router
//! listens on one socket per worker process; the worker connects, sends `Hello`, loads and warms
//! up its model, sends `Ready` (or `Fatal`), then answers each `Batch` with `Done` or `Failed`,
//! one batch at a time, until `Shutdown` or end of stream. The profiler (`parva profile`) sends
//! `Bench` instead of `Batch`: the worker runs synthetic batches back to back on its own and
//! answers with their latencies (`BenchDone`). These types pull no libtorch.
//!
//! Shared buffers ([`crate::shm`]): after `Ready` the router may send `Slab` (a file to map); the
//! worker answers `SlabMapped`. From then on a tensor whose header has `at` is not in the payload
//! but in the slab at that offset: the router writes a batch's inputs there once, the worker reads
//! them in place and writes its outputs to the area the `Batch` names (`out`), and the socket
//! carries only the headers. Every offset is checked against the slab; a tensor without `at`
//! travels in the payload as before (a batch too big for a slot, a worker without a slab).

use std::io::{Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::shm::Mapping;
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
    /// Offset of the bytes in the worker's slab; `None`: in the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// An area of the worker's slab: `bytes` bytes from offset `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Area {
    pub at: u64,
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
    /// Router: run these inputs (in the payload or the slab); `out`: where in the slab the
    /// outputs may go (when they fit).
    Batch {
        id: u64,
        tensors: Vec<TensorHeader>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out: Option<Area>,
    },
    /// Worker: the outputs of batch `id` (tensors in the payload) and its execution time.
    Done { id: u64, exec_us: u64, tensors: Vec<TensorHeader> },
    /// Worker: batch `id` failed; the worker keeps serving.
    Failed { id: u64, message: String },
    /// Router: finish and exit.
    Shutdown,
    /// Router, after `Ready`: map the `bytes` bytes of the file at `path` as this worker's slab.
    Slab { path: String, bytes: u64 },
    /// Worker: the answer to `Slab` (`error`: why it could not map it; batches then come inline).
    SlabMapped {
        #[serde(default)]
        error: Option<String>,
    },
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
        .map(|t| TensorHeader { name: t.name.clone(), datatype: t.datatype, shape: t.shape.clone(), bytes: t.data.len() as u64, at: None })
        .collect()
}

/// Bytes of the tensors that travel in the payload (those without `at`).
fn payload_bytes(msg: &Msg) -> u64 {
    tensor_headers(msg).iter().filter(|h| h.at.is_none()).map(|h| h.bytes).sum()
}

fn prefix(msg: &Msg, tensors: &[Tensor]) -> Result<Vec<u8>, ProtoError> {
    let header = serde_json::to_vec(msg).map_err(|e| ProtoError::BadHeader(e.to_string()))?;
    let payload = payload_bytes(msg);
    if payload != tensors.iter().map(|t| t.data.len() as u64).sum::<u64>() {
        return Err(ProtoError::BadHeader(format!("the header lists {payload} payload bytes; {} were given", tensors.iter().map(|t| t.data.len()).sum::<usize>())));
    }
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

/// The tensors the header describes: from the payload in order, or (with `at`) views of `slab`.
fn split_payload(msg: &Msg, payload: Vec<u8>, slab: Option<&Arc<Mapping>>) -> Result<Vec<Tensor>, ProtoError> {
    let heads = tensor_headers(msg);
    let total = payload_bytes(msg);
    if total != payload.len() as u64 {
        return Err(ProtoError::BadHeader(format!("tensors need {total} bytes; the payload has {}", payload.len())));
    }
    let payload = bytes::Bytes::from(payload);
    let mut next = 0usize;
    let mut out = Vec::with_capacity(heads.len());
    for h in heads {
        let data = match h.at {
            None => {
                let d = payload.slice(next..next + h.bytes as usize);
                next += h.bytes as usize;
                d
            }
            Some(at) => {
                let slab = slab.ok_or_else(|| ProtoError::BadHeader(format!("tensor {:?} is in a slab, but none is mapped", h.name)))?;
                slab.view(at, h.bytes).map_err(|e| ProtoError::BadHeader(format!("tensor {:?}: {e}", h.name)))?
            }
        };
        let t = Tensor { name: h.name.clone(), datatype: h.datatype, shape: h.shape.clone(), data };
        if !t.is_consistent() {
            return Err(ProtoError::BadHeader(format!("tensor {:?}: {} bytes do not fit shape {:?} of {}", h.name, h.bytes, h.shape, h.datatype)));
        }
        out.push(t);
    }
    Ok(out)
}

fn decode_header(bytes: &[u8]) -> Result<Msg, ProtoError> {
    serde_json::from_slice(bytes).map_err(|e| ProtoError::BadHeader(e.to_string()))
}

/// Write a frame (blocking; the workers' side). `tensors`: those that travel in the payload (the
/// headers without `at`), in order.
pub fn write_frame(w: &mut impl Write, msg: &Msg, tensors: &[Tensor]) -> Result<(), ProtoError> {
    w.write_all(&prefix(msg, tensors)?)?;
    for t in tensors {
        w.write_all(&t.data)?;
    }
    w.flush()?;
    Ok(())
}

/// Read a frame (blocking); `Closed` at a clean end of stream. Tensors with `at` are views of
/// `slab` (an error without one, or out of its bounds).
pub fn read_frame(r: &mut impl Read, slab: Option<&Arc<Mapping>>) -> Result<Frame, ProtoError> {
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
    let tensors = split_payload(&msg, payload, slab)?;
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

/// Read a frame (async); `Closed` at a clean end of stream; `slab` as in [`read_frame`].
pub async fn read_frame_async<R: tokio::io::AsyncRead + Unpin>(r: &mut R, slab: Option<&Arc<Mapping>>) -> Result<Frame, ProtoError> {
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
    let tensors = split_payload(&msg, payload, slab)?;
    Ok(Frame { msg, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_sync_and_async() {
        let t = Tensor { name: "x".into(), datatype: DataType::Int64, shape: vec![2, 1], data: (0u8..16).collect::<Vec<u8>>().into() };
        let msg = Msg::Batch { id: 7, tensors: headers_of(std::slice::from_ref(&t)), out: None };
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg, std::slice::from_ref(&t)).unwrap();
        let back = read_frame(&mut buf.as_slice(), None).unwrap();
        assert_eq!(back, Frame { msg: msg.clone(), tensors: vec![t.clone()] });
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let back = rt.block_on(async { read_frame_async(&mut buf.as_slice(), None).await.unwrap() });
        assert_eq!(back.tensors, vec![t]);
        assert!(matches!(read_frame(&mut [].as_slice(), None), Err(ProtoError::Closed)));
        let mut bad = Vec::new();
        bad.extend_from_slice(&(u32::MAX).to_le_bytes());
        bad.extend_from_slice(&0u64.to_le_bytes());
        assert!(matches!(read_frame(&mut bad.as_slice(), None), Err(ProtoError::HeaderTooLarge { .. })));
    }

    #[test]
    fn tensors_in_the_slab_are_read_in_place_and_checked_against_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let slab = crate::shm::Slab::create(dir.path(), "w", crate::shm::SlabLayout { in_bytes: 32, out_bytes: 32 }).unwrap();
        slab.map.write(8, &7i64.to_le_bytes()).unwrap();
        let inline = Tensor { name: "a".into(), datatype: DataType::Int64, shape: vec![1], data: 5i64.to_le_bytes().to_vec().into() };
        let mut heads = headers_of(std::slice::from_ref(&inline));
        heads.push(TensorHeader { name: "b".into(), datatype: DataType::Int64, shape: vec![1], bytes: 8, at: Some(8) });
        let msg = Msg::Batch { id: 1, tensors: heads.clone(), out: Some(Area { at: 32, bytes: 32 }) };
        let mut buf = Vec::new();
        write_frame(&mut buf, &msg, std::slice::from_ref(&inline)).unwrap();
        let back = read_frame(&mut buf.as_slice(), Some(&slab.map)).unwrap();
        assert_eq!(back.msg, msg);
        assert_eq!(&back.tensors[0].data[..], &5i64.to_le_bytes());
        assert_eq!(&back.tensors[1].data[..], &7i64.to_le_bytes());
        // Without a slab, or past its end: a protocol error, never a read out of bounds.
        assert!(matches!(read_frame(&mut buf.as_slice(), None), Err(ProtoError::BadHeader(_))));
        heads[1].at = Some(124);
        let mut buf = Vec::new();
        write_frame(&mut buf, &Msg::Batch { id: 2, tensors: heads, out: None }, std::slice::from_ref(&inline)).unwrap();
        let e = read_frame(&mut buf.as_slice(), Some(&slab.map)).unwrap_err().to_string();
        assert!(e.contains("past the end"), "{e}");
        // The payload given must be what the headers list.
        assert!(write_frame(&mut Vec::new(), &msg, &[]).is_err());
    }

    proptest::proptest! {
        /// Whatever a peer sends as a frame, reading it returns a frame or an error, and every
        /// tensor it returns holds exactly its declared bytes, from the payload or from inside
        /// the slab.
        #[test]
        fn any_frame_decodes_or_errs_and_never_reads_outside_the_slab(
            at in proptest::option::of(0u64..200),
            bytes in 0u64..200,
            shape in proptest::collection::vec(-2i64..40, 0..3),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let slab = crate::shm::Slab::create(dir.path(), "p", crate::shm::SlabLayout { in_bytes: 32, out_bytes: 32 }).unwrap();
            let head = TensorHeader { name: "t".into(), datatype: DataType::Uint8, shape, bytes, at };
            let msg = Msg::Done { id: 1, exec_us: 0, tensors: vec![head] };
            let json = serde_json::to_vec(&msg).unwrap();
            for body in [json, garbage] {
                let mut frame = Vec::new();
                frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
                frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
                frame.extend_from_slice(&body);
                frame.extend_from_slice(&payload);
                if let Ok(f) = read_frame(&mut frame.as_slice(), Some(&slab.map)) {
                    for t in &f.tensors {
                        proptest::prop_assert!(t.is_consistent());
                        if let Some(h) = tensor_headers(&f.msg).iter().find(|h| h.name == t.name) {
                            proptest::prop_assert_eq!(t.data.len() as u64, h.bytes);
                            if let Some(a) = h.at {
                                proptest::prop_assert!(a + h.bytes <= slab.map.len());
                            }
                        }
                    }
                }
            }
        }
    }
}
