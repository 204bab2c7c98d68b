//! Where the faces of layout initialisation come from ([`LayoutSource`]): the embedded DCGAN
//! generator (a face per seed, aligned and framed as the built-in model's training images),
//! a folder of images (sorted), or one file. The face of image `i` with seed `s` is a pure
//! function of the source, `i` and `s`, so resumed and sharded synthesis runs draw the same
//! faces.

use std::path::PathBuf;

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::face::analyzer::FaceAnalyzer;
use crate::gan::Generator;

/// A layout source, as the CLI and synthesis plans name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSource {
    /// `dcgan`: the embedded DCGAN face generator, one face per seed.
    Dcgan,
    /// A folder (`folder:PATH`, or a path that is a folder): its images in name order.
    Folder(PathBuf),
    /// One image file, for every image.
    File(PathBuf),
}

impl std::str::FromStr for LayoutSource {
    type Err = Error;

    /// `dcgan`, `folder:PATH`, or a path (a folder or an image file).
    fn from_str(s: &str) -> Result<Self> {
        if s == "dcgan" {
            return Ok(LayoutSource::Dcgan);
        }
        let (forced, path) = match s.strip_prefix("folder:") {
            Some(p) => (true, PathBuf::from(p)),
            None => (false, PathBuf::from(s)),
        };
        if forced || path.is_dir() {
            Ok(LayoutSource::Folder(path))
        } else {
            Ok(LayoutSource::File(path))
        }
    }
}

impl std::fmt::Display for LayoutSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutSource::Dcgan => f.write_str("dcgan"),
            LayoutSource::Folder(p) => write!(f, "folder:{}", p.display()),
            LayoutSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An opened layout source that hands out faces.
#[derive(Debug)]
pub struct LayoutFaces {
    source: LayoutSource,
    dcgan: Option<(Generator, FaceAnalyzer)>,
    files: Vec<PathBuf>,
    device: Device,
}

impl LayoutFaces {
    /// Opens `source` on `device` (loads the generator and the face analyser for `dcgan`; lists
    /// a folder's images, refusing an empty one).
    pub fn open(source: LayoutSource, device: &Device) -> Result<Self> {
        let (dcgan, files) = match &source {
            LayoutSource::Dcgan => (
                Some((
                    Generator::embedded(device)?,
                    FaceAnalyzer::embedded(device)?,
                )),
                Vec::new(),
            ),
            LayoutSource::Folder(dir) => {
                if !dir.is_dir() {
                    return Err(Error::io(
                        dir,
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
                    ));
                }
                let files = crate::files::image_files(std::slice::from_ref(dir));
                if files.is_empty() {
                    return Err(Error::request(
                        "layout",
                        format!("{} holds no png/jpg image", dir.display()),
                    ));
                }
                (None, files)
            }
            LayoutSource::File(path) => (None, vec![path.clone()]),
        };
        Ok(LayoutFaces {
            source,
            dcgan,
            files,
            device: device.clone(),
        })
    }

    /// The source.
    pub fn source(&self) -> &LayoutSource {
        &self.source
    }

    /// Images in a folder source (1 for a file, 0 for the generator).
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether the source lists no file (the generator).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The face for image `index` drawn with `seed`, and its description for records: the
    /// generator's face of `seed` (aligned as the training images are; the raw sample when no
    /// face is detected in it), the folder's image `index` (an error past the last one), or the
    /// file.
    pub fn face(&self, index: usize, seed: u64) -> Result<(::image::RgbImage, String)> {
        if let Some((generator, analyzer)) = &self.dcgan {
            let rgb = generator.sample(&[seed], &self.device)?.remove(0);
            let aligned = crate::facetext::build::align_gan_face(analyzer, &rgb)?;
            let side = crate::facetext::build::IMAGE_SIZE as u32;
            let pixels = aligned.unwrap_or(rgb);
            let img = ::image::RgbImage::from_raw(side, side, pixels)
                .ok_or_else(|| Error::Device("a DCGAN face of the wrong size".into()))?;
            return Ok((img, format!("dcgan seed {seed}")));
        }
        let path = match &self.source {
            LayoutSource::File(p) => p,
            _ => self.files.get(index).ok_or_else(|| {
                Error::request(
                    "layout",
                    format!(
                        "{} holds {} images; image {index} of the batch has none",
                        self.source,
                        self.files.len()
                    ),
                )
            })?,
        };
        Ok((crate::image::read(path)?, path.display().to_string()))
    }
}

/// How a generation starts, as command-line flags: from noise (no flag), from a face by layout
/// initialisation (`--layout`), or img2img (`--init-image`).
#[derive(Debug, Clone, Default, serde::Serialize)]
#[cfg_attr(feature = "native", derive(clap::Args))]
pub struct StartFlags {
    /// Start from a face by SynFER's layout initialisation (DDIM inversion): `dcgan` (the
    /// built-in face generator, one face per seed), an image, or a folder (one image per image
    /// of the batch, in name order).
    #[cfg_attr(feature = "native", arg(long, conflicts_with = "init_image"))]
    pub layout: Option<String>,
    /// Layout strength S: `round(S · steps)` steps are inverted and denoised again (0: the VAE
    /// reconstruction of the face).
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0.7))]
    pub layout_strength: f64,
    /// The prompt the inversion is conditioned on (default "a photo of a face").
    #[cfg_attr(feature = "native", arg(long))]
    pub layout_prompt: Option<String>,
    /// img2img: start from this image (or folder) noised to `--strength`.
    #[cfg_attr(feature = "native", arg(long))]
    pub init_image: Option<String>,
    /// img2img strength S: the share of the steps run from the noised image.
    #[cfg_attr(feature = "native", arg(long, default_value_t = 0.8))]
    pub strength: f64,
}

impl StartFlags {
    /// Whether the flags ask for no start (generation from noise).
    pub fn is_none(&self) -> bool {
        self.layout.is_none() && self.init_image.is_none()
    }

    /// Flags for a model's default layout initialisation (a relative source is taken from
    /// the model folder `dir`, when there is one).
    pub fn from_default(
        default: &crate::pipeline::LayoutDefault,
        dir: Option<&std::path::Path>,
    ) -> Self {
        let source = match dir {
            Some(d)
                if default.source != "dcgan"
                    && std::path::Path::new(&default.source).is_relative() =>
            {
                d.join(&default.source).display().to_string()
            }
            _ => default.source.clone(),
        };
        StartFlags {
            layout: Some(source),
            layout_strength: default.strength,
            ..StartFlags::default()
        }
    }

    /// The start settings and the opened source (`None`: start from noise).
    pub fn open(
        &self,
        device: &Device,
    ) -> Result<Option<(crate::pipeline::ImageStart, LayoutFaces)>> {
        use crate::pipeline::{ImageStart, StartMode};
        let (mode, spec, strength, prompt) = match (&self.layout, &self.init_image) {
            (Some(spec), _) => (
                StartMode::Layout,
                spec,
                self.layout_strength,
                self.layout_prompt.clone(),
            ),
            (None, Some(spec)) => (StartMode::Img2img, spec, self.strength, None),
            (None, None) => return Ok(None),
        };
        let faces = LayoutFaces::open(spec.parse()?, device)?;
        let start = ImageStart {
            mode,
            strength,
            prompt,
            source: Some(faces.source().to_string()),
        };
        Ok(Some((start, faces)))
    }

    /// The request's start settings and the `n` start images for seeds `seed, seed + 1, …`
    /// (`None`: start from noise), read or drawn on `device`; the settings' `source` names the
    /// images.
    pub fn resolve(
        &self,
        n: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Option<(crate::pipeline::ImageStart, Vec<::image::RgbImage>)>> {
        let Some((mut start, faces)) = self.open(device)? else {
            return Ok(None);
        };
        let mut images = Vec::with_capacity(n);
        let mut sources = Vec::with_capacity(n);
        for i in 0..n {
            let (img, what) = faces.face(i, seed.wrapping_add(i as u64))?;
            images.push(img);
            sources.push(what);
        }
        sources.dedup();
        start.source = Some(sources.join(", "));
        Ok(Some((start, images)))
    }
}

/// The start image of a recorded generation, drawn or read again: the DCGAN face of the
/// image's seed, or the image file its record names ([`ImageRecord::start_source`]). `None`
/// when the record started from noise.
///
/// [`ImageRecord::start_source`]: crate::pipeline::ImageRecord::start_source
pub fn replay_start(
    record: &crate::pipeline::ImageRecord,
    device: &Device,
) -> Result<Option<::image::RgbImage>> {
    let Some(start) = &record.request.start else {
        return Ok(None);
    };
    let source = record.start_source().unwrap_or_default();
    if source.starts_with("dcgan seed ") {
        let seed = record.seed.unwrap_or(record.request.seed);
        let faces = LayoutFaces::open(LayoutSource::Dcgan, device)?;
        return Ok(Some(faces.face(0, seed)?.0));
    }
    let path = std::path::Path::new(source);
    if source.is_empty() || !path.is_file() {
        return Err(Error::request(
            "from_png",
            format!(
                "the image started ({:?}) from {source:?}, which is not a readable image here",
                start.mode
            ),
        ));
    }
    Ok(Some(crate::image::read(path)?))
}
