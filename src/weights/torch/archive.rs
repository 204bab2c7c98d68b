//! The `torch.save` zip archive: finding `data.pkl` and the tensor records, and placing each
//! tensor's bytes (in place for contiguous little-endian views, copied otherwise).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::rc::Rc;

use safetensors::Dtype;

use super::pickle::*;
use crate::error::{Error, Result};
use crate::weights::zip::ZipArchive;

/// Where a tensor's contiguous bytes live.
pub(crate) enum Placement {
    /// A range of the input file (contiguous little-endian view).
    Input(Range<usize>),
    /// A copy made for a strided view or a big-endian file.
    Owned(Vec<u8>),
}

/// key → (index into the placements, dtype, shape).
type KeyTable = BTreeMap<String, (usize, Dtype, Vec<usize>)>;

pub(crate) struct TorchArchive<'a> {
    pub(crate) file: &'a str,
    pub(crate) bytes: &'a [u8],
    pub(crate) zip: ZipArchive<'a>,
    /// `<archive>/` — the prefix of every record.
    pub(crate) prefix: Vec<u8>,
    pub(crate) pickle: &'a [u8],
    pub(crate) big_endian: bool,
}

impl<'a> TorchArchive<'a> {
    pub(crate) fn open(file: &'a str, bytes: &'a [u8]) -> Result<Self> {
        let bad = |message: String| Error::TorchArchive {
            file: file.to_string(),
            message,
        };
        if bytes.first() == Some(&0x80) {
            return Err(bad(
                "this is the legacy (pre-1.6, non-zip) torch.save format, which is not \
                 supported; re-save it with a current PyTorch"
                    .into(),
            ));
        }
        let zip = ZipArchive::parse(bytes).map_err(bad)?;
        // Like torch: the archive name is the first record's top-level folder.
        let first = zip
            .entries()
            .first()
            .ok_or_else(|| bad("the zip archive is empty".into()))?;
        let slash = first
            .name
            .iter()
            .position(|&b| b == b'/')
            .ok_or_else(|| bad("records are not inside an archive folder".into()))?;
        let prefix = first.name[..=slash].to_vec();
        let record = |suffix: &str| [prefix.as_slice(), suffix.as_bytes()].concat();

        let pkl = zip.find(&record("data.pkl")).ok_or_else(|| {
            bad(format!(
                "no `{}data.pkl` record (not a torch.save file?)",
                String::from_utf8_lossy(&prefix)
            ))
        })?;
        let pickle = &bytes[zip.data_range(pkl).map_err(bad)?];
        let big_endian = match zip.find(&record("byteorder")) {
            None => false,
            Some(entry) => match &bytes[zip.data_range(entry).map_err(bad)?] {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(bad(format!(
                        "unknown byteorder `{}`",
                        String::from_utf8_lossy(&other[..other.len().min(32)])
                    )));
                }
            },
        };
        Ok(TorchArchive {
            file,
            bytes,
            zip,
            prefix,
            pickle,
            big_endian,
        })
    }

    pub(crate) fn bad(&self, message: String) -> Error {
        Error::TorchArchive {
            file: self.file.to_string(),
            message,
        }
    }

    /// Places every flattened tensor (shared tensor objects are placed once).
    pub(crate) fn place_all(
        &self,
        vm: &Vm<'_>,
        tensors: Vec<(String, usize)>,
    ) -> Result<(Vec<Placement>, KeyTable)> {
        let budget = self.bytes.len().saturating_mul(2).saturating_add(64 << 20);
        let mut copied = 0usize;
        let mut records: HashMap<Rc<str>, Range<usize>> = HashMap::new();
        let mut placed: HashMap<usize, usize> = HashMap::new();
        let mut placements = Vec::new();
        let mut keys = KeyTable::new();
        for (key, id) in tensors {
            let Obj::Tensor(view) = &vm.objs[id] else {
                unreachable!("the flattener only yields tensors")
            };
            let Obj::Storage(storage) = &vm.objs[view.storage] else {
                unreachable!("tensors are only built on storages")
            };
            let index = match placed.get(&id) {
                Some(&i) => i,
                None => {
                    let record = match records.get(&storage.key) {
                        Some(r) => r.clone(),
                        None => {
                            let r = self.record(&storage.key)?;
                            records.insert(storage.key.clone(), r.clone());
                            r
                        }
                    };
                    let p = self.place(&key, view, storage, record, &mut copied, budget)?;
                    placements.push(p);
                    placed.insert(id, placements.len() - 1);
                    placements.len() - 1
                }
            };
            if keys.contains_key(&key) {
                return Err(Error::Pickle {
                    file: self.file.to_string(),
                    message: format!("two tensors flatten to the same key `{}`", clip(&key)),
                });
            }
            keys.insert(key, (index, storage.dtype, view.size.clone()));
        }
        Ok((placements, keys))
    }

    /// The checked byte range of storage record `data/<key>`.
    pub(crate) fn record(&self, key: &str) -> Result<Range<usize>> {
        let name = [self.prefix.as_slice(), b"data/", key.as_bytes()].concat();
        let entry = self.zip.find(&name).ok_or_else(|| {
            self.bad(format!(
                "storage record `{}` is missing",
                String::from_utf8_lossy(&name)
            ))
        })?;
        self.zip.data_range(entry).map_err(|m| self.bad(m))
    }

    /// Places one tensor view of `storage` (whose record is `record`).
    pub(crate) fn place(
        &self,
        key: &str,
        view: &TensorView,
        storage: &Storage,
        record: Range<usize>,
        copied: &mut usize,
        budget: usize,
    ) -> Result<Placement> {
        let bad = |message: String| Error::Pickle {
            file: self.file.to_string(),
            message: format!("tensor `{}`: {message}", clip(key)),
        };
        let es = element_size(storage.dtype);
        let storage_bytes = storage
            .numel
            .checked_mul(es)
            .filter(|&n| n <= record.len())
            .ok_or_else(|| {
                bad(format!(
                    "storage `{}` claims {} elements of {:?} but its record holds {} bytes",
                    storage.key,
                    storage.numel,
                    storage.dtype,
                    record.len()
                ))
            })?;
        let numel = view
            .size
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(format!("size {:?} overflows", view.size)))?;
        let out_len = numel
            .checked_mul(es)
            .ok_or_else(|| bad(format!("size {:?} overflows", view.size)))?;
        if numel == 0 {
            if view.offset > storage.numel {
                return Err(bad(format!(
                    "storage offset {} beyond storage of {} elements",
                    view.offset, storage.numel
                )));
            }
            return Ok(Placement::Owned(Vec::new()));
        }
        // Highest element index the view touches.
        let mut last = view.offset;
        for (&d, &s) in view.size.iter().zip(&view.stride) {
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| bad("size × stride overflows".into()))?;
        }
        if last >= storage.numel {
            return Err(bad(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage \
                 of {} elements",
                view.offset, view.size, view.stride, storage.numel
            )));
        }
        let data = &self.bytes[record.start..record.start + storage_bytes];

        let mut expected = 1usize;
        let mut contiguous = true;
        for (&d, &s) in view.size.iter().zip(&view.stride).rev() {
            if d != 1 && s != expected {
                contiguous = false;
            }
            expected = expected.saturating_mul(d);
        }
        if contiguous && !self.big_endian {
            // In bounds: offset + numel - 1 == last < storage.numel.
            let start = record.start + view.offset * es;
            return Ok(Placement::Input(start..start + out_len));
        }

        *copied = copied.saturating_add(out_len);
        if *copied > budget {
            return Err(bad(format!(
                "materialising strided tensors needs more than {budget} bytes"
            )));
        }
        let mut out = Vec::with_capacity(out_len);
        let dims = view.size.len();
        if dims == 0 {
            out.extend_from_slice(&data[view.offset * es..(view.offset + 1) * es]);
        } else {
            let (inner_size, inner_stride) = (view.size[dims - 1], view.stride[dims - 1]);
            let mut index = vec![0usize; dims - 1];
            loop {
                // All offsets are ≤ `last`, so none of this overflows.
                let base = view.offset
                    + index
                        .iter()
                        .zip(&view.stride)
                        .map(|(&i, &s)| i * s)
                        .sum::<usize>();
                if inner_stride == 1 {
                    out.extend_from_slice(&data[base * es..(base + inner_size) * es]);
                } else {
                    for j in 0..inner_size {
                        let at = (base + j * inner_stride) * es;
                        out.extend_from_slice(&data[at..at + es]);
                    }
                }
                // Odometer over the outer dimensions.
                let mut d = dims - 1;
                loop {
                    if d == 0 {
                        debug_assert_eq!(out.len(), out_len);
                        if self.big_endian && es > 1 {
                            out.chunks_exact_mut(es).for_each(<[u8]>::reverse);
                        }
                        return Ok(Placement::Owned(out));
                    }
                    d -= 1;
                    index[d] += 1;
                    if index[d] < view.size[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
        }
        if self.big_endian && es > 1 {
            out.chunks_exact_mut(es).for_each(<[u8]>::reverse);
        }
        Ok(Placement::Owned(out))
    }
}

/// At most [`MAX_NAME_ECHO`] bytes of `s`, for error messages about hostile names.
pub(crate) fn clip(s: &str) -> &str {
    &s[..s.floor_char_boundary(MAX_NAME_ECHO)]
}

pub(crate) fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}
