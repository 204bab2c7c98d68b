//! Text inside PNG files: `tEXt` and `iTXt` chunks (PNG specification, 3rd edition, §11.3.3)
//! inserted after `IHDR` and read back, so that an image carries the settings that made it.

use crate::error::{Error, Result};

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
/// The largest chunk read (the PNG limit is 2³¹ − 1; a text chunk is far smaller).
const MAX_CHUNK: usize = 1 << 26;

fn bad(name: &str, message: impl Into<String>) -> Error {
    Error::Image {
        file: name.to_string(),
        message: message.into(),
    }
}

/// One chunk of a PNG stream: its type and data.
struct Chunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    /// Byte range of the whole chunk (length, type, data, CRC) in the file.
    span: std::ops::Range<usize>,
}

/// The chunks of `png`, checked for the signature, lengths and CRCs; `name` names the file.
fn chunks<'a>(png: &'a [u8], name: &str) -> Result<Vec<Chunk<'a>>> {
    if png.len() < SIGNATURE.len() || png[..SIGNATURE.len()] != SIGNATURE {
        return Err(bad(name, "not a PNG file (no PNG signature)"));
    }
    let mut out = Vec::new();
    let mut at = SIGNATURE.len();
    while at < png.len() {
        let header = png
            .get(at..at + 8)
            .ok_or_else(|| bad(name, format!("truncated chunk header at byte {at}")))?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = [header[4], header[5], header[6], header[7]];
        if len > MAX_CHUNK {
            return Err(bad(
                name,
                format!("chunk {} at byte {at} claims {len} bytes", show(&kind)),
            ));
        }
        let end = at + 12 + len;
        let body = png.get(at + 4..end).ok_or_else(|| {
            bad(
                name,
                format!("chunk {} at byte {at} is truncated", show(&kind)),
            )
        })?;
        let (typed, crc) = body.split_at(4 + len);
        if crc32fast::hash(typed).to_be_bytes() != crc {
            return Err(bad(
                name,
                format!("chunk {} at byte {at} fails its CRC", show(&kind)),
            ));
        }
        out.push(Chunk {
            kind,
            data: &typed[4..],
            span: at..end,
        });
        at = end;
        if &kind == b"IEND" {
            break;
        }
    }
    if out.first().map(|c| &c.kind) != Some(b"IHDR") {
        return Err(bad(name, "the first chunk is not IHDR"));
    }
    Ok(out)
}

fn show(kind: &[u8; 4]) -> String {
    String::from_utf8_lossy(kind).into_owned()
}

fn chunk_bytes(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[4..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Latin-1 bytes of `text`, if every character is in Latin-1.
fn latin1(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// The data of a text chunk for `keyword` and `text`: `tEXt` when the text is Latin-1 (as
/// Pillow's `PngInfo.add_text` chooses), else uncompressed `iTXt` (UTF-8); `itxt` forces
/// `iTXt`.
fn text_chunk(keyword: &str, text: &str, itxt: bool, name: &str) -> Result<Vec<u8>> {
    let key = latin1(keyword)
        .filter(|k| (1..=79).contains(&k.len()) && !k.contains(&0))
        .ok_or_else(|| {
            bad(
                name,
                format!("text keyword {keyword:?} must be 1–79 Latin-1 characters"),
            )
        })?;
    let latin = if itxt { None } else { latin1(text) };
    Ok(match latin {
        Some(t) => {
            let mut data = key;
            data.push(0);
            data.extend_from_slice(&t);
            chunk_bytes(b"tEXt", &data)
        }
        None => {
            let mut data = key;
            // NUL, compression flag 0 (uncompressed), method 0, empty language tag (NUL),
            // empty translated keyword (NUL).
            data.extend_from_slice(&[0, 0, 0, 0, 0]);
            data.extend_from_slice(text.as_bytes());
            chunk_bytes(b"iTXt", &data)
        }
    })
}

/// How a text entry is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// `tEXt` when the text is Latin-1, else `iTXt` (what A1111 and Pillow write).
    Plain,
    /// Always `iTXt` (UTF-8).
    International,
}

/// `png` with one text chunk per `(keyword, text, kind)` inserted right after `IHDR` (before
/// the image data, so readers that stop early still see them). Existing text chunks with the
/// same keywords are removed. `name` names the file in errors.
pub fn insert(png: &[u8], entries: &[(&str, &str, TextKind)], name: &str) -> Result<Vec<u8>> {
    let parsed = chunks(png, name)?;
    let mut out =
        Vec::with_capacity(png.len() + entries.iter().map(|e| e.1.len() + 32).sum::<usize>());
    out.extend_from_slice(&SIGNATURE);
    for (i, chunk) in parsed.iter().enumerate() {
        let replaced = matches!(&chunk.kind, b"tEXt" | b"iTXt" | b"zTXt")
            && entries
                .iter()
                .any(|(k, _, _)| keyword_of(chunk.data) == Some(k.as_bytes()));
        if !replaced {
            out.extend_from_slice(&png[chunk.span.clone()]);
        }
        if i == 0 {
            for (keyword, text, kind) in entries {
                out.extend(text_chunk(
                    keyword,
                    text,
                    *kind == TextKind::International,
                    name,
                )?);
            }
        }
    }
    Ok(out)
}

fn keyword_of(data: &[u8]) -> Option<&[u8]> {
    data.iter().position(|&b| b == 0).map(|end| &data[..end])
}

/// Every readable text entry of `png` as `(keyword, text)`, in file order: `tEXt` (Latin-1)
/// and uncompressed `iTXt` (UTF-8); compressed chunks (`zTXt`, compressed `iTXt`) are skipped.
pub fn read(png: &[u8], name: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for chunk in chunks(png, name)? {
        let Some(key) = keyword_of(chunk.data) else {
            continue;
        };
        let keyword: String = key.iter().map(|&b| char::from(b)).collect();
        let rest = &chunk.data[key.len() + 1..];
        match &chunk.kind {
            b"tEXt" => out.push((keyword, rest.iter().map(|&b| char::from(b)).collect())),
            b"iTXt" => {
                let [compressed, _method, tail @ ..] = rest else {
                    return Err(bad(name, format!("iTXt {keyword:?} is truncated")));
                };
                if *compressed != 0 {
                    continue;
                }
                // Language tag and translated keyword, each NUL-terminated, then the text.
                let mut fields = tail.splitn(3, |&b| b == 0);
                let (Some(_), Some(_), Some(text)) = (fields.next(), fields.next(), fields.next())
                else {
                    return Err(bad(name, format!("iTXt {keyword:?} is truncated")));
                };
                let text = std::str::from_utf8(text)
                    .map_err(|e| bad(name, format!("iTXt {keyword:?} is not UTF-8: {e}")))?;
                out.push((keyword, text.to_string()));
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_png() -> Vec<u8> {
        crate::image::encode_png(&[10, 20, 30, 40, 50, 60], 2, 1, "t.png").unwrap()
    }

    #[test]
    fn text_round_trips_and_the_image_still_decodes() {
        let png = tiny_png();
        let with = insert(
            &png,
            &[
                ("parameters", "a face\nSteps: 25, Seed: 3", TextKind::Plain),
                ("synfer", "{\"é\": \"微笑\"}", TextKind::International),
                ("latin", "café", TextKind::Plain),
                ("utf8", "smile 😀", TextKind::Plain),
            ],
            "t.png",
        )
        .unwrap();
        let texts = read(&with, "t.png").unwrap();
        assert_eq!(
            texts,
            vec![
                ("parameters".into(), "a face\nSteps: 25, Seed: 3".into()),
                ("synfer".into(), "{\"é\": \"微笑\"}".into()),
                ("latin".into(), "café".into()),
                ("utf8".into(), "smile 😀".into()),
            ]
        );
        // Latin-1 text is tEXt (one byte per character), the rest iTXt.
        let kinds: Vec<[u8; 4]> = chunks(&with, "t.png")
            .unwrap()
            .iter()
            .map(|c| c.kind)
            .collect();
        assert_eq!(&kinds[1..5], &[*b"tEXt", *b"iTXt", *b"tEXt", *b"iTXt"]);
        let img = crate::image::decode(&with, "t.png").unwrap();
        assert_eq!(img.as_raw(), &[10, 20, 30, 40, 50, 60]);
        // Inserting again replaces the entry instead of adding a second one.
        let again = insert(&with, &[("parameters", "x", TextKind::Plain)], "t.png").unwrap();
        let texts = read(&again, "t.png").unwrap();
        assert_eq!(texts.iter().filter(|(k, _)| k == "parameters").count(), 1);
        assert_eq!(texts[0], ("parameters".into(), "x".into()));
    }

    #[test]
    fn damaged_files_are_typed_errors() {
        let png = insert(&tiny_png(), &[("k", "v", TextKind::Plain)], "t.png").unwrap();
        let err = |bytes: &[u8]| read(bytes, "t.png").unwrap_err().to_string();
        assert!(err(b"GIF89a").contains("not a PNG"));
        assert!(err(&png[..png.len() - 3]).contains("truncated"));
        let mut flipped = png.clone();
        flipped[40] ^= 1;
        assert!(err(&flipped).contains("CRC"), "{}", err(&flipped));
        assert!(insert(&png, &[("", "v", TextKind::Plain)], "t.png").is_err());
        // Every prefix and single-byte change is an error or a result, never a panic.
        for cut in 0..png.len() {
            let _ = read(&png[..cut], "t.png");
        }
        for i in 0..png.len() {
            let mut m = png.clone();
            m[i] = m[i].wrapping_add(0x5a);
            let _ = read(&m, "t.png");
        }
    }
}
