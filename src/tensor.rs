//! Host-side tensors: plain f32 values with a shape, for everything that crosses between the
//! CPU and a device (initial latents, checkpoints, training state), and the `.npy` /
//! `.safetensors` readers behind `--latents` (diffusers' `latents=` argument).

use crate::error::{Error, Result};

/// A host-side f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

fn file_err(file: &str, message: impl Into<String>) -> Error {
    Error::TensorFile {
        file: file.to_string(),
        message: message.into(),
    }
}

/// Parses a little-endian `.npy` array of f32/f64/f16 in C order.
pub fn parse_npy(bytes: &[u8], file: &str) -> Result<HostTensor> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(file_err(file, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(file_err(file, "truncated .npy header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(file_err(file, format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| file_err(file, "truncated .npy header"))?;
    let header =
        std::str::from_utf8(header).map_err(|_| file_err(file, "non-UTF-8 .npy header"))?;
    let field = |name: &str| -> Option<&str> {
        let at = header.find(&format!("'{name}'"))?;
        let rest = &header[at + name.len() + 2..];
        let colon = rest.find(':')?;
        Some(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")
        .and_then(|d| d.strip_prefix('\'').and_then(|d| d.split('\'').next()))
        .ok_or_else(|| file_err(file, "missing 'descr' in .npy header"))?;
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(file_err(file, "Fortran-ordered arrays are not supported"));
    }
    let shape_text = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| file_err(file, "missing 'shape' in .npy header"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| file_err(file, format!("bad shape entry {s:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + header_len..];
    let (width, data): (usize, Vec<f32>) = match descr {
        "<f4" => (
            4,
            body.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        "<f8" => (
            8,
            body.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        "<f2" => (
            2,
            body.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        other => {
            return Err(file_err(
                file,
                format!("dtype {other:?} not supported (use float32)"),
            ));
        }
    };
    if body.len() != n * width {
        return Err(file_err(
            file,
            format!(
                "shape {shape:?} needs {} bytes of data, file has {}",
                n * width,
                body.len()
            ),
        ));
    }
    Ok(HostTensor { shape, data })
}

/// Reads tensor `name` from a safetensors file held in memory.
pub fn parse_safetensors(bytes: Vec<u8>, file: &str, name: &str) -> Result<HostTensor> {
    let store = crate::weights::TensorStore::from_bytes(file, bytes)?;
    let shape = store
        .shape(name)
        .ok_or_else(|| Error::MissingKey {
            file: file.to_string(),
            key: name.to_string(),
        })?
        .to_vec();
    let data = store.read_f32(name, &shape)?;
    Ok(HostTensor { shape, data })
}

/// Loads a tensor from a `.npy` file or a `.safetensors` file holding a tensor `latents`;
/// NaN or ±Inf anywhere is an error naming the file and the value's index.
#[cfg(not(target_family = "wasm"))]
pub fn read_latents_file(path: &std::path::Path) -> Result<HostTensor> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = path.display().to_string();
    let t = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => parse_npy(&bytes, &file),
        Some("safetensors") => parse_safetensors(bytes, &file, "latents"),
        _ => Err(file_err(&file, "expected a .npy or .safetensors file")),
    }?;
    check_finite(&t.data, t.data.len(), &file)?;
    Ok(t)
}

/// An [`Error::NonFinite`] for the first NaN or ±Inf in `values`, a batch of items of
/// `per_item` values each, found in `stage`.
pub fn check_finite(values: &[f32], per_item: usize, stage: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => {
            let per = per_item.max(1);
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            Err(Error::NonFinite {
                stage: stage.to_string(),
                detail: format!(
                    "item {} (value {} is {}; {bad} of {} values are not finite)",
                    i / per,
                    i % per,
                    values[i],
                    values.len()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn parses_f32_npy() {
        let vals = [1.5f32, -2.0, 3.25, 0.0];
        let body: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = parse_npy(&npy("<f4", "(1, 2, 2)", &body), "x.npy").unwrap();
        assert_eq!(t.shape, vec![1, 2, 2]);
        assert_eq!(t.data, vals.to_vec());
    }

    #[test]
    fn rejects_short_npy_body() {
        let err = parse_npy(&npy("<f4", "(3,)", &[0u8; 8]), "x.npy").unwrap_err();
        assert!(err.to_string().contains("needs 12 bytes"), "{err}");
    }

    #[test]
    fn rejects_int_npy() {
        let err = parse_npy(&npy("<i8", "(1,)", &[0u8; 8]), "x.npy").unwrap_err();
        assert!(err.to_string().contains("<i8"), "{err}");
    }
}
