//! The folder layouts: RAF-DB basic (`list_patition_label.txt` + `Image/aligned/`) and
//! torchvision's ImageFolder (`<class>/<image>` or `<split>/<class>/<image>`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Item, ItemSource, Layout, Listing, class_of, normalise_split, read_text};
use crate::error::{Error, Result};
use crate::expression::RAF_DB;
use crate::files::IMAGE_EXTENSIONS;

/// Lists a RAF-DB basic folder from its label list.
pub(crate) fn list_raf(root: &Path, list: &Path) -> Result<Listing> {
    let text = read_text(list)?;
    let candidates: [(&str, bool); 4] = [
        ("Image/aligned", true),
        ("aligned", true),
        ("Image/original", false),
        ("", false),
    ];
    let (dir, aligned) = candidates
        .iter()
        .map(|(d, a)| (root.join(d), *a))
        .find(|(d, _)| d.is_dir())
        .expect("the root itself is a folder");
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(code)) = (parts.next(), parts.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(Error::dataset(
                list.display(),
                format!("line {}", i + 1),
                format!("{line:?}: expected `<image> <label 1–7>`"),
            ));
        };
        let label = code
            .parse::<usize>()
            .ok()
            .filter(|c| (1..=7).contains(c))
            .ok_or_else(|| {
                Error::dataset(
                    list.display(),
                    format!("line {}", i + 1),
                    format!("label {code:?} is not 1–7"),
                )
            })?;
        let file = if aligned {
            let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
            format!("{stem}_aligned.jpg")
        } else {
            name.to_string()
        };
        let split = name.split('_').next().and_then(normalise_split);
        items.push(Item {
            source: ItemSource::File {
                path: dir.join(&file),
                crop: None,
            },
            label: RAF_DB[label - 1],
            split,
            id: name.to_string(),
            pseudo: None,
            label_confidence: None,
        });
    }
    Ok(Listing {
        root: root.to_path_buf(),
        layout: Layout::RafDb,
        synthetic: false,
        items,
        skipped: BTreeMap::new(),
    })
}

/// Splits one CSV line into fields (double quotes group commas; `""` is a quote).
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string()
}

/// Lists an ImageFolder tree.
pub(crate) fn list_image_folder(root: &Path) -> Result<Listing> {
    let dirs: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if dirs.is_empty() {
        return Err(Error::dataset(
            root.display(),
            "layout",
            "not a dataset: no metadata.jsonl, list_patition_label.txt, fer2013.csv, \
             training.csv/validation.csv or class sub-folders",
        ));
    }
    let by_split = dirs.iter().all(|d| normalise_split(&name_of(d)).is_some());
    let groups: Vec<(Option<String>, PathBuf)> = if by_split {
        dirs.iter()
            .map(|d| (normalise_split(&name_of(d)), d.clone()))
            .collect()
    } else {
        vec![(None, root.to_path_buf())]
    };
    let mut items = Vec::new();
    for (split, dir) in groups {
        for class_dir in sorted_entries(&dir)?.into_iter().filter(|p| p.is_dir()) {
            let name = name_of(&class_dir);
            let label = class_of(&name, &dir, || format!("sub-folder {name:?}"))?;
            for file in sorted_entries(&class_dir)? {
                let ext = file
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(|e| e.to_ascii_lowercase());
                if !ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
                    continue;
                }
                let id = file
                    .strip_prefix(root)
                    .unwrap_or(&file)
                    .display()
                    .to_string();
                items.push(Item {
                    source: ItemSource::File {
                        path: file,
                        crop: None,
                    },
                    label,
                    split: split.clone(),
                    id,
                    pseudo: None,
                    label_confidence: None,
                });
            }
        }
    }
    Ok(Listing {
        root: root.to_path_buf(),
        layout: Layout::ImageFolder,
        synthetic: false,
        items,
        skipped: BTreeMap::new(),
    })
}
