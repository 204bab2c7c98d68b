//! A minimal, read-only zip reader for PyTorch archives (`torch.save` since 1.6).
//!
//! Only what torch writes is supported: STORED entries (method 0), located through the central
//! directory, with ZIP64 end-of-central-directory records and ZIP64 extra fields. Compressed,
//! encrypted or multi-disk archives are rejected with a message. Every offset and length is
//! bounds-checked against the input; entry data is returned as a range of the input (no copy)
//! after its CRC-32 has been verified.

use std::collections::HashMap;
use std::ops::Range;

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const EOCD64_LOCATOR_SIG: u32 = 0x0706_4b50;
const EOCD_LEN: usize = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;

/// One entry of the central directory.
#[derive(Debug, Clone)]
pub(crate) struct ZipEntry {
    /// The entry's name as stored (torch writes ASCII).
    pub name: Vec<u8>,
    method: u16,
    flags: u16,
    crc: u32,
    compressed_size: u64,
    size: u64,
    local_offset: u64,
}

/// The central directory of an archive held in memory.
#[derive(Debug)]
pub(crate) struct ZipArchive<'a> {
    bytes: &'a [u8],
    entries: Vec<ZipEntry>,
    by_name: HashMap<Vec<u8>, usize>,
}

/// A bounds-checked little-endian reader over a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn at(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("truncated {what} at offset {}", self.pos))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

fn to_usize(v: u64, what: &str) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| format!("{what} {v} does not fit in memory"))
}

impl<'a> ZipArchive<'a> {
    /// Reads the central directory of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        if bytes.len() < EOCD_LEN {
            return Err(format!(
                "{} bytes is too short for a zip archive",
                bytes.len()
            ));
        }
        let eocd = find_eocd(bytes)?;
        let mut c = Cursor::at(bytes, eocd + 4);
        let disk = c.u16("end of central directory")?;
        let cd_disk = c.u16("end of central directory")?;
        let _entries_on_disk = c.u16("end of central directory")?;
        let mut count = u64::from(c.u16("end of central directory")?);
        let mut cd_size = u64::from(c.u32("end of central directory")?);
        let mut cd_offset = u64::from(c.u32("end of central directory")?);
        if disk != 0 || cd_disk != 0 {
            return Err("multi-disk zip archives are not supported".into());
        }

        // ZIP64: torch always writes the locator (20 bytes before the EOCD) and record.
        if eocd >= 20 && read_u32(bytes, eocd - 20) == Some(EOCD64_LOCATOR_SIG) {
            let mut l = Cursor::at(bytes, eocd - 16);
            let _disk = l.u32("zip64 locator")?;
            let rec = to_usize(l.u64("zip64 locator")?, "zip64 record offset")?;
            let mut r = Cursor::at(bytes, rec);
            if r.u32("zip64 end of central directory")? != EOCD64_SIG {
                return Err(format!(
                    "bad zip64 end-of-central-directory signature at {rec}"
                ));
            }
            let _size = r.u64("zip64 end of central directory")?;
            let _made = r.u16("zip64 end of central directory")?;
            let _needed = r.u16("zip64 end of central directory")?;
            let disk64 = r.u32("zip64 end of central directory")?;
            let cd_disk64 = r.u32("zip64 end of central directory")?;
            let _on_disk = r.u64("zip64 end of central directory")?;
            count = r.u64("zip64 end of central directory")?;
            cd_size = r.u64("zip64 end of central directory")?;
            cd_offset = r.u64("zip64 end of central directory")?;
            if disk64 != 0 || cd_disk64 != 0 {
                return Err("multi-disk zip archives are not supported".into());
            }
        }

        let cd_offset = to_usize(cd_offset, "central directory offset")?;
        let cd_size = to_usize(cd_size, "central directory size")?;
        let cd_end = cd_offset
            .checked_add(cd_size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                format!("central directory ({cd_size} bytes at {cd_offset}) lies outside the file")
            })?;
        // Each record takes at least 46 bytes: a larger count is a lie, not an allocation.
        if count > (cd_size / CENTRAL_LEN) as u64 {
            return Err(format!(
                "central directory claims {count} entries in {cd_size} bytes"
            ));
        }
        let central = &bytes[..cd_end];
        let mut c = Cursor::at(central, cd_offset);
        let mut entries = Vec::with_capacity(count as usize);
        let mut by_name = HashMap::with_capacity(count as usize);
        for _ in 0..count {
            let entry = read_central(&mut c)?;
            if by_name.insert(entry.name.clone(), entries.len()).is_some() {
                return Err(format!(
                    "duplicate entry `{}`",
                    String::from_utf8_lossy(&entry.name)
                ));
            }
            entries.push(entry);
        }
        Ok(ZipArchive {
            bytes,
            entries,
            by_name,
        })
    }

    /// All entries, in central-directory order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The entry called `name`, if any.
    pub fn find(&self, name: &[u8]) -> Option<&ZipEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The byte range of `entry`'s data within the input, after checking its local header,
    /// that it is stored uncompressed and that its CRC-32 matches.
    pub fn data_range(&self, entry: &ZipEntry) -> Result<Range<usize>, String> {
        let name = String::from_utf8_lossy(&entry.name);
        if entry.flags & 1 != 0 {
            return Err(format!("entry `{name}` is encrypted"));
        }
        if entry.method != 0 {
            return Err(format!(
                "entry `{name}` is compressed (method {}); only stored entries are supported",
                entry.method
            ));
        }
        if entry.compressed_size != entry.size {
            return Err(format!(
                "stored entry `{name}` has compressed size {} but size {}",
                entry.compressed_size, entry.size
            ));
        }
        let offset = to_usize(entry.local_offset, "local header offset")?;
        let mut c = Cursor::at(self.bytes, offset);
        if c.u32("local header")? != LOCAL_SIG {
            return Err(format!(
                "bad local header signature for `{name}` at {offset}"
            ));
        }
        c.take(LOCAL_LEN - 8, "local header")?;
        let name_len = usize::from(c.u16("local header")?);
        let extra_len = usize::from(c.u16("local header")?);
        if c.take(name_len, "local header name")? != entry.name.as_slice() {
            return Err(format!("local header name differs from `{name}`"));
        }
        c.take(extra_len, "local header extra field")?;
        let start = c.pos;
        let size = to_usize(entry.size, "entry size")?;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("entry `{name}` ({size} bytes at {start}) is truncated"))?;
        let crc = crc32(&self.bytes[start..end]);
        if crc != entry.crc {
            return Err(format!(
                "entry `{name}` fails its CRC-32 check (stored {:08x}, computed {crc:08x})",
                entry.crc
            ));
        }
        Ok(start..end)
    }
}

fn read_u32(bytes: &[u8], pos: usize) -> Option<u32> {
    let b = bytes.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The offset of the end-of-central-directory record: the last signature whose comment
/// ends within the file (searching at most 64 KiB of comment).
fn find_eocd(bytes: &[u8]) -> Result<usize, String> {
    let last = bytes.len() - EOCD_LEN;
    let first = last.saturating_sub(u16::MAX as usize);
    let mut pos = last;
    loop {
        if read_u32(bytes, pos) == Some(EOCD_SIG) {
            let comment = u16::from_le_bytes([bytes[pos + 20], bytes[pos + 21]]) as usize;
            if pos + EOCD_LEN + comment <= bytes.len() {
                return Ok(pos);
            }
        }
        if pos == first {
            return Err("no end-of-central-directory record (not a zip archive)".into());
        }
        pos -= 1;
    }
}

fn read_central(c: &mut Cursor<'_>) -> Result<ZipEntry, String> {
    let at = c.pos;
    if c.u32("central directory")? != CENTRAL_SIG {
        return Err(format!("bad central directory signature at {at}"));
    }
    let _made = c.u16("central directory")?;
    let _needed = c.u16("central directory")?;
    let flags = c.u16("central directory")?;
    let method = c.u16("central directory")?;
    let _time = c.u16("central directory")?;
    let _date = c.u16("central directory")?;
    let crc = c.u32("central directory")?;
    let mut compressed_size = u64::from(c.u32("central directory")?);
    let mut size = u64::from(c.u32("central directory")?);
    let name_len = usize::from(c.u16("central directory")?);
    let extra_len = usize::from(c.u16("central directory")?);
    let comment_len = usize::from(c.u16("central directory")?);
    let disk = c.u16("central directory")?;
    let _internal = c.u16("central directory")?;
    let _external = c.u32("central directory")?;
    let mut local_offset = u64::from(c.u32("central directory")?);
    let name = c.take(name_len, "entry name")?.to_vec();
    let extra = c.take(extra_len, "extra field")?;
    c.take(comment_len, "entry comment")?;

    // ZIP64 extra field: the saturated fields, in this order.
    let need_size = size == u64::from(u32::MAX);
    let need_csize = compressed_size == u64::from(u32::MAX);
    let need_offset = local_offset == u64::from(u32::MAX);
    let need_disk = disk == u16::MAX;
    if need_size || need_csize || need_offset || need_disk {
        let mut e = Cursor::at(extra, 0);
        let mut found = false;
        while e.pos + 4 <= extra.len() {
            let id = e.u16("extra field")?;
            let len = usize::from(e.u16("extra field")?);
            let body = e.take(len, "extra field")?;
            if id != ZIP64_EXTRA_ID {
                continue;
            }
            found = true;
            let mut z = Cursor::at(body, 0);
            if need_size {
                size = z.u64("zip64 extra field")?;
            }
            if need_csize {
                compressed_size = z.u64("zip64 extra field")?;
            }
            if need_offset {
                local_offset = z.u64("zip64 extra field")?;
            }
            if need_disk && z.u32("zip64 extra field")? != 0 {
                return Err("multi-disk zip archives are not supported".into());
            }
            break;
        }
        if !found {
            return Err(format!(
                "entry `{}` has saturated sizes but no zip64 extra field",
                String::from_utf8_lossy(&name)
            ));
        }
    } else if disk != 0 {
        return Err("multi-disk zip archives are not supported".into());
    }
    Ok(ZipEntry {
        name,
        method,
        flags,
        crc,
        compressed_size,
        size,
        local_offset,
    })
}

/// CRC-32 (IEEE 802.3, reflected), slice-by-8.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    static TABLES: [[u32; 256]; 8] = crc_tables();
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
        crc = TABLES[7][(lo & 0xff) as usize]
            ^ TABLES[6][((lo >> 8) & 0xff) as usize]
            ^ TABLES[5][((lo >> 16) & 0xff) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][(hi & 0xff) as usize]
            ^ TABLES[2][((hi >> 8) & 0xff) as usize]
            ^ TABLES[1][((hi >> 16) & 0xff) as usize]
            ^ TABLES[0][(hi >> 24) as usize];
    }
    for &b in chunks.remainder() {
        crc = TABLES[0][((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut s = 1;
    while s < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            i += 1;
        }
        s += 1;
    }
    t
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a stored zip in memory; `zip64` writes saturated central-directory fields with a
    /// zip64 extra field plus the zip64 end records, as a >4 GiB torch archive would.
    pub(crate) fn build_zip(files: &[(&str, &[u8])], zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let offset = out.len() as u64;
            let crc = crc32(data);
            out.extend_from_slice(&LOCAL_SIG.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            // Pad the data to 64 bytes like torch, with an unknown extra field.
            let unpadded = out.len() + 2 + name.len() + 4;
            let pad = (64 - unpadded % 64) % 64;
            out.extend_from_slice(&((pad + 4) as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&0x4246u16.to_le_bytes());
            out.extend_from_slice(&(pad as u16).to_le_bytes());
            out.extend(std::iter::repeat_n(b'Z', pad));
            out.extend_from_slice(data);

            central.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            central.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&crc.to_le_bytes());
            let mut extra = Vec::new();
            if zip64 {
                central.extend_from_slice(&u32::MAX.to_le_bytes());
                central.extend_from_slice(&u32::MAX.to_le_bytes());
                extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
                extra.extend_from_slice(&24u16.to_le_bytes());
                extra.extend_from_slice(&(data.len() as u64).to_le_bytes());
                extra.extend_from_slice(&(data.len() as u64).to_le_bytes());
                extra.extend_from_slice(&offset.to_le_bytes());
            } else {
                central.extend_from_slice(&(data.len() as u32).to_le_bytes());
                central.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0; 10]);
            let off32 = if zip64 { u32::MAX } else { offset as u32 };
            central.extend_from_slice(&off32.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
            central.extend_from_slice(&extra);
        }
        let cd_offset = out.len() as u64;
        out.extend_from_slice(&central);
        let n = files.len() as u64;
        if zip64 {
            let rec = out.len() as u64;
            out.extend_from_slice(&EOCD64_SIG.to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&(central.len() as u64).to_le_bytes());
            out.extend_from_slice(&cd_offset.to_le_bytes());
            out.extend_from_slice(&EOCD64_LOCATOR_SIG.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&rec.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let n16 = if zip64 { u16::MAX } else { n as u16 };
        out.extend_from_slice(&n16.to_le_bytes());
        out.extend_from_slice(&n16.to_le_bytes());
        let (size32, off32) = if zip64 {
            (u32::MAX, u32::MAX)
        } else {
            (central.len() as u32, cd_offset as u32)
        };
        out.extend_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&off32.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        // Slice-by-8 agrees with the bytewise definition.
        let mut c = !0u32;
        for &b in &long {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        assert_eq!(crc32(&long), !c);
    }

    #[test]
    fn reads_plain_and_zip64_archives() {
        for zip64 in [false, true] {
            let bytes = build_zip(&[("a/x", b"hello"), ("a/data/0", &[1, 2, 3, 4])], zip64);
            let zip = ZipArchive::parse(&bytes).unwrap();
            assert_eq!(zip.entries().len(), 2);
            let r = zip.data_range(zip.find(b"a/x").unwrap()).unwrap();
            assert_eq!(&bytes[r.clone()], b"hello");
            assert_eq!(r.start % 64, 0, "data is 64-byte aligned");
            let r = zip.data_range(zip.find(b"a/data/0").unwrap()).unwrap();
            assert_eq!(&bytes[r], &[1, 2, 3, 4]);
            assert!(zip.find(b"a/y").is_none());
        }
    }

    #[test]
    fn rejects_compressed_and_corrupt_entries() {
        let mut bytes = build_zip(&[("a/x", b"hello")], false);
        let zip_len = bytes.len();
        // Method field of the central record: after 4+2+2+2 bytes of the record.
        let cd = zip_len - EOCD_LEN - (CENTRAL_LEN + 3);
        bytes[cd + 10] = 8;
        let zip = ZipArchive::parse(&bytes).unwrap();
        let err = zip.data_range(&zip.entries()[0]).unwrap_err();
        assert!(err.contains("compressed (method 8)"), "{err}");

        let mut bytes = build_zip(&[("a/x", b"hello")], false);
        let pos = bytes.windows(5).position(|w| w == b"hello").unwrap();
        bytes[pos] = b'j';
        let zip = ZipArchive::parse(&bytes).unwrap();
        let err = zip.data_range(&zip.entries()[0]).unwrap_err();
        assert!(err.contains("CRC-32"), "{err}");

        assert!(ZipArchive::parse(b"not a zip at all, just text").is_err());
        assert!(ZipArchive::parse(&[]).is_err());
        let bytes = build_zip(&[("a/x", b"hello")], true);
        for cut in [1, 10, 30, 60] {
            assert!(ZipArchive::parse(&bytes[..bytes.len() - cut]).is_err());
        }
    }
}
