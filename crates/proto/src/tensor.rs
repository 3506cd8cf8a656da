//! Typed tensors as the router and the workers carry them: a KServe v2 datatype, a shape and the
//! elements as little-endian bytes in row-major order. Batching concatenates tensors along their
//! first (batch) dimension and splits outputs back by rows.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The fixed-size datatypes of the KServe v2 protocol (`BYTES` is not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Bf16,
        DataType::Fp32,
        DataType::Fp64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
        }
    }

    /// The protocol's name (`FP32`, `INT64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
        }
    }

    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A named tensor with its elements as little-endian bytes. The bytes are a [`Bytes`]: a slice
/// of a request body, of a registered shared-memory region or of a worker's shared buffers is
/// carried without a copy, and cloning a tensor copies no data.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

/// Number of elements of a (fully known) shape; `None` when a dimension is negative or the
/// product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
}

impl Tensor {
    /// A tensor of zeros (all-zero bytes are 0, 0.0 and false in every datatype).
    pub fn zeros(name: &str, datatype: DataType, shape: Vec<i64>) -> Tensor {
        let n = element_count(&shape).unwrap_or(0);
        Tensor { name: name.to_string(), datatype, data: Bytes::from(vec![0; n * datatype.size()]), shape }
    }

    /// Rows along the first dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().map(|&d| d.max(0) as usize).unwrap_or(1)
    }

    /// Whether `data` holds exactly the bytes that `shape` and `datatype` call for.
    pub fn is_consistent(&self) -> bool {
        element_count(&self.shape).and_then(|n| n.checked_mul(self.datatype.size())) == Some(self.data.len())
    }

    /// Concatenate tensors of one name, datatype and row shape along the first dimension (a
    /// single part is returned as it is, without copying). The caller has checked that the parts
    /// agree (the router validates every request).
    pub fn concat_rows(mut parts: Vec<Tensor>) -> Option<Tensor> {
        if parts.len() <= 1 {
            return parts.pop();
        }
        let rows: i64 = parts.iter().map(|t| t.shape.first().copied().unwrap_or(1)).sum();
        let mut data = Vec::with_capacity(parts.iter().map(|t| t.data.len()).sum());
        for p in &parts {
            data.extend_from_slice(&p.data);
        }
        let first = parts.swap_remove(0);
        let mut shape = first.shape;
        if let Some(d) = shape.first_mut() {
            *d = rows;
        }
        Some(Tensor { name: first.name, datatype: first.datatype, shape, data: data.into() })
    }

    /// Split along the first dimension into pieces of `counts` rows (which must sum to the rows),
    /// each a view of this tensor's bytes.
    pub fn split_rows(&self, counts: &[usize]) -> Option<Vec<Tensor>> {
        let rows = self.rows();
        if counts.iter().sum::<usize>() != rows || rows == 0 {
            return None;
        }
        let row_bytes = self.data.len() / rows;
        let mut out = Vec::with_capacity(counts.len());
        let mut at = 0;
        for &c in counts {
            let mut shape = self.shape.clone();
            shape[0] = c as i64;
            // A slice of the same buffer, not a copy.
            let data = self.data.slice(at..at + c * row_bytes);
            at += c * row_bytes;
            out.push(Tensor { name: self.name.clone(), datatype: self.datatype, shape, data });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_then_split_gives_back_the_parts() {
        let a = Tensor { name: "x".into(), datatype: DataType::Fp32, shape: vec![1, 2], data: vec![1; 8].into() };
        let b = Tensor { name: "x".into(), datatype: DataType::Fp32, shape: vec![2, 2], data: vec![2; 16].into() };
        let c = Tensor::concat_rows(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(c.shape, vec![3, 2]);
        assert!(c.is_consistent());
        let parts = c.split_rows(&[1, 2]).unwrap();
        assert_eq!(parts, vec![a, b]);
        assert!(c.split_rows(&[1, 1]).is_none());
    }

    #[test]
    fn datatype_names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.name()), Some(d));
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{}\"", d.name()));
        }
        assert_eq!(DataType::parse("BYTES"), None);
    }
}
