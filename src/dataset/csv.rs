//! The CSV layouts: FER2013 (`emotion`, `pixels`, `Usage`) and AffectNet (`expression` and an
//! image path column, optional face box).

use std::collections::BTreeMap;
use std::path::Path;

use super::{Item, ItemSource, Layout, Listing, class_of, normalise_split, read_text};
use crate::error::{Error, Result};
use crate::expression::{AFFECTNET, FER2013};

fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    out.push(field);
    out
}

/// One data line of a CSV file: its fields and where it is (for errors).
struct CsvRow<'a> {
    file: &'a Path,
    line: usize,
    fields: Vec<String>,
}

impl CsvRow<'_> {
    /// `line N` (1-based, the header is line 1).
    fn at(&self) -> String {
        format!("line {}", self.line + 1)
    }

    /// Field `c`, trimmed.
    fn get(&self, c: usize) -> Result<&str> {
        self.fields
            .get(c)
            .map(|s| s.trim())
            .ok_or_else(|| self.error("too few fields".into()))
    }

    fn error(&self, message: String) -> Error {
        Error::dataset(self.file.display(), self.at(), message)
    }
}

/// Lists a FER2013 or AffectNet CSV file.
pub(crate) fn list_csv(file: &Path) -> Result<Listing> {
    let text = read_text(file)?;
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, h)| csv_fields(h.trim_start_matches('\u{feff}')))
        .unwrap_or_default();
    let column = |names: &[&str]| {
        header
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let missing = |what: &str| {
        Error::dataset(
            file.display(),
            "header",
            format!("no {what} column (header: {})", header.join(",")),
        )
    };
    let rows = lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(line, l)| CsvRow {
            file,
            line,
            fields: csv_fields(l),
        });
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut items = Vec::new();
    let mut skipped = BTreeMap::new();
    if let (Some(emotion), Some(pixels)) = (column(&["emotion"]), column(&["pixels"])) {
        let usage = column(&["usage"]);
        for row in rows {
            let code = row.get(emotion)?;
            let label = code
                .parse::<usize>()
                .ok()
                .filter(|c| *c < 7)
                .ok_or_else(|| row.error(format!("emotion {code:?} is not 0–6")))?;
            let values = row
                .get(pixels)?
                .split_whitespace()
                .map(|v| v.parse::<u8>())
                .collect::<std::result::Result<Vec<u8>, _>>()
                .map_err(|e| row.error(format!("pixels: {e}")))?;
            let side = (values.len() as f64).sqrt() as usize;
            if side == 0 || side * side != values.len() {
                return Err(row.error(format!("{} pixels are not a square image", values.len())));
            }
            let split = usage
                .and_then(|c| row.get(c).ok())
                .and_then(normalise_split);
            items.push(Item {
                source: ItemSource::Grey {
                    side,
                    pixels: values,
                },
                label: FER2013[label],
                split,
                id: format!("row{}", row.line),
                pseudo: None,
                label_confidence: None,
            });
        }
        return Ok(Listing {
            root: file.to_path_buf(),
            layout: Layout::Fer2013,
            synthetic: false,
            items,
            skipped,
        });
    }
    let expression = column(&["expression"]).ok_or_else(|| missing("`expression` or `emotion`"))?;
    let path_col = column(&["subDirectory_filePath", "pth", "path", "file_name", "image"])
        .ok_or_else(|| {
            missing("image path (subDirectory_filePath, pth, path, file_name, image)")
        })?;
    let boxes = [
        column(&["face_x"]),
        column(&["face_y"]),
        column(&["face_width"]),
        column(&["face_height"]),
    ];
    let image_root = [
        "Manually_Annotated_Images",
        "../Manually_Annotated_Images",
        "",
    ]
    .iter()
    .map(|d| dir.join(d))
    .find(|d| d.is_dir())
    .unwrap_or_else(|| dir.to_path_buf());
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let split = normalise_split(stem);
    for row in rows {
        let value = row.get(expression)?;
        let label = match value.parse::<usize>() {
            Ok(code) if code < AFFECTNET.len() => AFFECTNET[code],
            Ok(code @ 8..=10) => {
                let reason = ["none", "uncertain", "non-face"][code - 8];
                *skipped.entry(reason.to_string()).or_default() += 1;
                continue;
            }
            Ok(code) => return Err(row.error(format!("expression {code} is not 0–10"))),
            Err(_) => class_of(value, file, || row.at())?,
        };
        let crop = match boxes {
            [Some(x), Some(y), Some(w), Some(h)] => {
                let n = |c: usize| -> Result<u32> {
                    let s = row.get(c)?;
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= 0.0)
                        .map(|v| v as u32)
                        .ok_or_else(|| row.error(format!("face box value {s:?}")))
                };
                Some([n(x)?, n(y)?, n(w)?, n(h)?]).filter(|b| b[2] > 0 && b[3] > 0)
            }
            _ => None,
        };
        let rel = row.get(path_col)?;
        items.push(Item {
            source: ItemSource::File {
                path: image_root.join(rel),
                crop,
            },
            label,
            split: split.clone(),
            id: rel.to_string(),
            pseudo: None,
            label_confidence: None,
        });
    }
    Ok(Listing {
        root: file.to_path_buf(),
        layout: Layout::AffectNet,
        synthetic: false,
        items,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_respect_quotes() {
        assert_eq!(
            csv_fields(r#"a,"b,c",d"e""#),
            vec!["a".to_string(), "b,c".into(), "de".into()]
        );
        assert_eq!(
            csv_fields(r#""x""y",z"#),
            vec![r#"x"y"#.to_string(), "z".into()]
        );
    }
}
