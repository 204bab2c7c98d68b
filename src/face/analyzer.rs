//! [`FaceAnalyzer`]: the face models of this module chained into one call per image.
//!
//! [`FaceAnalyzer::analyze`] runs, per image:
//!
//! 1. BlazeFace ([`super::detector`]) on the image resized to 256×256 as human does
//!    (TensorFlow `resizeBilinear`, `alignCorners = false`, `halfPixelCenters = false`, no
//!    square padding), decoded with [`FaceAnalyzer::detector_config`] (human's defaults: at most
//!    one face);
//! 2. per face, human's padded square crop ([`super::detector::square_crop`], box enlarged 1.4×
//!    then squared and rounded);
//! 3. that crop resampled to each model's input side (112 for FER A, 64 for FER B, 192 for
//!    FaceMesh) as TensorFlow's `cropAndResize` does: bilinear, box corners normalised by the
//!    image size, sample `i` of `n` at `y1·(H − 1) + i·(y2 − y1)·(H − 1)/(n − 1)` (corners
//!    sampled exactly), pixels outside the image 0 — the crop is never rounded to u8, so an
//!    image already at a model's side enters it unchanged;
//! 4. FER A and FER B probabilities (canonical order [`crate::expression::CLASSES`]), their mean as the
//!    ensemble, labels by argmax (ties to the earlier class);
//! 5. FaceMesh on the 192×192 crop; landmarks mapped back to image pixels
//!    (`x1 + x · side / 192`, z scaled by the same factor);
//! 6. FineFace AU intensities from those landmarks ([`super::au_estimator::AuEstimator`]).
//!
//! [`FaceAnalyzer::analyze_cropped`] skips 1–2: the whole image is the face crop (resampled to
//! each side without padding, so a non-square image is stretched).

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::align::{Alignment, crop_to_image, eye_centres, resample};
use super::au_estimator::{AuEstimator, Landmarks};
use super::detector::{self, BlazeFace, DetectorConfig};
use super::face_api::{self, FaceApiExpression};
use super::mesh::{self, FaceMesh};
use super::mini_xception::{self, MiniXception};
use super::nhwc_to_nchw;
use crate::au::vector::AuVector;
use crate::error::{Error, Result};
use crate::expression::{CLASSES, argmax, average};
use crate::image::{RgbView, crop_and_resize, resize_bilinear};

/// FER A weights (`assets/face/fer_a_face_api.safetensors`).
pub const FER_A_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/face/fer_a_face_api.safetensors"
));
/// FER B weights (`assets/face/fer_b_mini_xception.safetensors`).
pub const FER_B_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/face/fer_b_mini_xception.safetensors"
));
/// FaceMesh weights (`assets/face/facemesh.safetensors`).
pub const MESH_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/face/facemesh.safetensors"
));
/// BlazeFace weights (`assets/face/blazeface.safetensors`).
pub const DETECTOR_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/face/blazeface.safetensors"
));

/// One classifier's verdict: probabilities in the canonical order [`CLASSES`] and their
/// argmax. Serialises as `{"label": "happy", "probs": {"neutral": p, ..., "surprised": p}}`
/// (classes in canonical order).
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// The most probable class (ties to the earlier class).
    pub label: &'static str,
    /// Probabilities, canonical order.
    pub probs: [f32; 7],
}

impl Classification {
    /// Labels `probs` by argmax.
    pub fn new(probs: [f32; 7]) -> Self {
        let best = argmax(&probs);
        Classification {
            label: CLASSES[best],
            probs,
        }
    }

    /// The probability of the label.
    pub fn confidence(&self) -> f32 {
        self.probs[CLASSES
            .iter()
            .position(|c| *c == self.label)
            .expect("label is a class")]
    }

    /// `class → probability`.
    pub fn probs_map(&self) -> BTreeMap<&'static str, f32> {
        CLASSES.iter().copied().zip(self.probs).collect()
    }
}

struct ProbMap<'a>(&'a [f32; 7]);

impl Serialize for ProbMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(7))?;
        for (class, p) in CLASSES.iter().zip(self.0) {
            map.serialize_entry(class, p)?;
        }
        map.end()
    }
}

impl Serialize for Classification {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("label", self.label)?;
        map.serialize_entry("probs", &ProbMap(&self.probs))?;
        map.end()
    }
}

/// The expression verdicts of one face.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExpressionReport {
    /// FER A (face-api.js `FaceExpressionNet`).
    #[serde(rename = "face-api")]
    pub face_api: Classification,
    /// FER B (mini-Xception).
    #[serde(rename = "mini-xception")]
    pub mini_xception: Classification,
    /// Mean of the two probability vectors.
    pub ensemble: Classification,
}

/// Everything measured on one face.
///
/// JSON (the `synfer analyze --json` contract, nothing more): `{"bbox": [x, y, w, h],
/// "expression": {"face-api": .., "mini-xception": .., "ensemble": ..}, "aus": {"AU1": .., ...},
/// "landmarks": [[x, y, z], ...]}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FaceReport {
    /// The face box `[x, y, w, h]` in image pixels: the detector's box (not the enlarged
    /// crop), or the whole image for [`FaceAnalyzer::analyze_cropped`].
    pub bbox: [f32; 4],
    /// FER A, FER B and ensemble verdicts.
    pub expression: ExpressionReport,
    /// FineFace AU intensities (0–5) estimated from the landmarks.
    pub aus: AuVector,
    /// 468 FaceMesh landmarks in image pixels (z on the same scale).
    pub landmarks: Vec<[f32; 3]>,
    /// BlazeFace confidence of the detection (`None` for [`FaceAnalyzer::analyze_cropped`]);
    /// not serialised.
    #[serde(skip)]
    pub detector_score: Option<f32>,
}

impl FaceReport {
    /// The face with the highest detector score in `faces` (`None` for none).
    pub fn most_confident(faces: Vec<FaceReport>) -> Option<FaceReport> {
        faces.into_iter().max_by(|a, b| {
            a.detector_score
                .unwrap_or(0.0)
                .total_cmp(&b.detector_score.unwrap_or(0.0))
        })
    }

    /// The header of [`FaceReport::table_row`]'s table.
    pub const TABLE_HEADER: &'static str =
        "file\tface\tbbox(x,y,w,h)\tscore\tensemble\tface-api\tmini-xception\ttop AUs";

    /// One tab-separated row of `synfer analyze`'s table: file, face index, box, detector
    /// score, the three verdicts and the three strongest AUs.
    pub fn table_row(&self, file: &str, index: usize) -> String {
        let [x, y, w, h] = self.bbox;
        let e = &self.expression;
        let mut aus: Vec<(&str, f32)> = self.aus.active().into_iter().collect();
        aus.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top = aus
            .iter()
            .take(3)
            .map(|(c, v)| format!("{c}={v:.1}"))
            .collect::<Vec<_>>()
            .join(",");
        let score = self
            .detector_score
            .map_or_else(|| "-".into(), |s| format!("{s:.2}"));
        format!(
            "{file}\t{index}\t{x:.0},{y:.0},{w:.0},{h:.0}\t{score}\t{} {:.2}\t{}\t{}\t{}",
            e.ensemble.label,
            e.ensemble.confidence(),
            e.face_api.label,
            e.mini_xception.label,
            if top.is_empty() { "-".into() } else { top }
        )
    }
}

/// A face to analyse: reported box, crop box (pixels), detector score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceCrop {
    /// The detector's box `[x, y, w, h]` (the whole image for a crop taken as is).
    pub bbox: [f32; 4],
    /// The enlarged box the face models see, `[x1, y1, x2, y2]`.
    pub crop: [f64; 4],
    /// BlazeFace confidence (`None` for a crop taken as is).
    pub score: Option<f32>,
}

impl FaceCrop {
    /// The whole image as one face crop.
    pub fn whole(image: RgbView) -> Self {
        let (w, h) = (image.width as f64, image.height as f64);
        FaceCrop {
            bbox: [0.0, 0.0, w as f32, h as f32],
            crop: [0.0, 0.0, w, h],
            score: None,
        }
    }
}

/// The FER classifiers, FaceMesh, BlazeFace and the AU estimator, on one device.
#[derive(Debug)]
pub struct FaceAnalyzer {
    /// FER A.
    pub fer_a: FaceApiExpression,
    /// FER B.
    pub fer_b: MiniXception,
    /// FaceMesh.
    pub mesh: FaceMesh,
    /// BlazeFace.
    pub detector: BlazeFace,
    /// AU estimator (population neutral baseline unless calibrated).
    pub au: AuEstimator,
    /// Detector decoding settings (human's defaults: at most one face).
    pub detector_config: DetectorConfig,
    device: Device,
}

impl FaceAnalyzer {
    /// Loads the weights compiled into the crate (`assets/face/`).
    pub fn embedded(device: &Device) -> Result<Self> {
        Self::from_bytes(FER_A_BYTES, FER_B_BYTES, MESH_BYTES, DETECTOR_BYTES, device)
    }

    /// Loads from safetensors files held in memory (the layouts of `assets/face/`).
    pub fn from_bytes(
        fer_a: &[u8],
        fer_b: &[u8],
        mesh: &[u8],
        detector: &[u8],
        device: &Device,
    ) -> Result<Self> {
        Ok(FaceAnalyzer {
            fer_a: FaceApiExpression::from_bytes("fer_a_face_api.safetensors", fer_a, device)?,
            fer_b: MiniXception::from_bytes("fer_b_mini_xception.safetensors", fer_b, device)?,
            mesh: FaceMesh::from_bytes("facemesh.safetensors", mesh, device)?,
            detector: BlazeFace::from_bytes("blazeface.safetensors", detector, device)?,
            au: AuEstimator::default(),
            detector_config: DetectorConfig::default(),
            device: device.clone(),
        })
    }

    /// The device the models run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Replaces the AU estimator's population baseline with the median of these faces'
    /// landmarks (neutral pictures of one person; see [`AuEstimator::calibrate`]) and
    /// recomputes nothing else.
    pub fn calibrate_aus(&mut self, neutral: &[FaceReport]) -> Result<()> {
        let meshes = neutral
            .iter()
            .map(|f| {
                Landmarks::try_from(f.landmarks.as_slice()).map_err(|_| {
                    Error::request(
                        "neutral",
                        format!(
                            "{} landmarks, expected {}",
                            f.landmarks.len(),
                            mesh::LANDMARKS
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.au.calibrate(&meshes)
    }

    /// The aligned crop ([`super::align`]) of a face found in `image`, refined `refine` times:
    /// FaceMesh under-reports the roll of tilted faces (human rotates crops before the mesh;
    /// this chain does not), so each pass re-runs the mesh on the current crop, maps its eye
    /// centres back to `image` and aligns again. Returns the crop's RGB bytes and the last
    /// analysis of it.
    pub fn aligned_face(
        &self,
        image: RgbView,
        face: &FaceReport,
        alignment: Alignment,
        refine: usize,
    ) -> Result<(Vec<u8>, FaceReport)> {
        let mut eyes = eye_centres(&face.landmarks)?;
        let n = alignment.size;
        for pass in 0..=refine {
            let to_image = crop_to_image(eyes, alignment)?;
            let crop = resample(image, to_image, n)?;
            let view = RgbView::new(n, n, &crop)?;
            if pass == refine {
                let report = self.analyze_cropped(view)?;
                return Ok((crop, report));
            }
            // Refinement passes need the mesh only.
            let mesh = self.landmarks(view, &[FaceCrop::whole(view)])?;
            let (r, l) = eye_centres(&mesh[0])?;
            eyes = (to_image.apply(r), to_image.apply(l));
        }
        unreachable!("the last pass returns")
    }

    /// Reads an image file and analyses it: every detected face, or the whole image as one
    /// face crop with `assume_cropped`.
    #[cfg(not(target_family = "wasm"))]
    pub fn analyze_file(
        &self,
        path: &std::path::Path,
        assume_cropped: bool,
    ) -> Result<Vec<FaceReport>> {
        let img = crate::image::read(path)?;
        let view = RgbView::new(img.width() as usize, img.height() as usize, img.as_raw())?;
        if assume_cropped {
            Ok(vec![self.analyze_cropped(view)?])
        } else {
            self.analyze(view)
        }
    }

    /// Detects faces and analyses each (see the module docs); no face: an empty list.
    pub fn analyze(&self, image: RgbView) -> Result<Vec<FaceReport>> {
        let faces = self.detect(image)?;
        self.reports(image, &faces)
    }

    /// BlazeFace detections with the crops the face models see (human's defaults: at most
    /// one face); no face: an empty list.
    pub fn detect(&self, image: RgbView) -> Result<Vec<FaceCrop>> {
        image.validate()?;
        let s = detector::INPUT_SIZE;
        let values: Vec<f32> = resize_bilinear(image, s)
            .into_iter()
            .map(BlazeFace::normalize)
            .collect();
        let input = Tensor::<4>::from_data(TensorData::new(values, [1, s, s, 3]), &self.device);
        let raw = readback(self.detector.forward(input)?)?;
        let faces: Vec<FaceCrop> =
            detector::detect(&raw, image.width, image.height, &self.detector_config)
                .into_iter()
                .map(|d| FaceCrop {
                    bbox: [
                        d.bbox[0] as f32,
                        d.bbox[1] as f32,
                        (d.bbox[2] - d.bbox[0]) as f32,
                        (d.bbox[3] - d.bbox[1]) as f32,
                    ],
                    crop: d.crop,
                    score: Some(d.confidence),
                })
                .collect();
        Ok(faces)
    }

    /// Analyses the whole image as one face crop (no detection; `bbox` is the whole image).
    pub fn analyze_cropped(&self, image: RgbView) -> Result<FaceReport> {
        image.validate()?;
        let face = FaceCrop::whole(image);
        Ok(self
            .reports(image, std::slice::from_ref(&face))?
            .pop()
            .expect("one report per face"))
    }

    /// FaceMesh on each face's crop, landmarks mapped back to image pixels.
    fn landmarks(&self, image: RgbView, faces: &[FaceCrop]) -> Result<Vec<Landmarks>> {
        let m = mesh::INPUT_SIZE;
        let values = faces
            .iter()
            .flat_map(|f| crop_and_resize(image, f.crop, m))
            .map(|v| v / 255.0)
            .collect();
        let (landmarks, _) = self.mesh.forward(Tensor::<4>::from_data(
            TensorData::new(values, [faces.len(), m, m, 3]),
            &self.device,
        ))?;
        let landmarks = readback(landmarks)?;
        let per = mesh::LANDMARKS * 3;
        Ok(faces
            .iter()
            .zip(landmarks.chunks_exact(per))
            .map(|(face, mesh)| {
                let [x1, y1, x2, y2] = face.crop;
                let sx = ((x2 - x1) / m as f64) as f32;
                let sy = ((y2 - y1) / m as f64) as f32;
                std::array::from_fn(|k| {
                    let p = &mesh[k * 3..k * 3 + 3];
                    [x1 as f32 + p[0] * sx, y1 as f32 + p[1] * sy, p[2] * sx]
                })
            })
            .collect())
    }

    fn reports(&self, image: RgbView, faces: &[FaceCrop]) -> Result<Vec<FaceReport>> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let n = faces.len();
        let crops = |side: usize| -> Vec<f32> {
            faces
                .iter()
                .flat_map(|f| crop_and_resize(image, f.crop, side))
                .collect()
        };

        let a = face_api::INPUT_SIZE;
        let values = crops(a)
            .into_iter()
            .enumerate()
            .map(|(i, v)| (v - face_api::MEAN_RGB[i % 3]) / 255.0)
            .collect();
        let probs_a = readback(self.fer_a.forward(nhwc_to_nchw(
            values,
            [n, a, a, 3],
            &self.device,
        )))?;

        let b = mini_xception::INPUT_SIZE;
        let values = crops(b)
            .chunks_exact(3)
            .map(|p| {
                let grey = p
                    .iter()
                    .zip(mini_xception::GREY_WEIGHTS)
                    .map(|(&v, g)| (v / 255.0) * g)
                    .fold(0.0f32, |acc, x| acc + x);
                (grey - 0.5) * 2.0
            })
            .collect();
        let probs_b = readback(self.fer_b.forward(nhwc_to_nchw(
            values,
            [n, b, b, 1],
            &self.device,
        )))?;

        let meshes = self.landmarks(image, faces)?;

        Ok(faces
            .iter()
            .zip(meshes)
            .enumerate()
            .map(|(i, (face, points))| {
                let row = |p: &[f32]| -> [f32; 7] { p[i * 7..(i + 1) * 7].try_into().unwrap() };
                let (pa, pb) = (row(&probs_a), row(&probs_b));
                let mean = average(&[pa, pb]);
                FaceReport {
                    bbox: face.bbox,
                    expression: ExpressionReport {
                        face_api: Classification::new(pa),
                        mini_xception: Classification::new(pb),
                        ensemble: Classification::new(mean),
                    },
                    aus: self.au.estimate(&points),
                    landmarks: points.to_vec(),
                    detector_score: face.score,
                }
            })
            .collect())
    }
}

fn readback<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Device(format!("reading face-model outputs back: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resamplers_are_identity_at_native_size() {
        let pixels: Vec<u8> = (0..4 * 4 * 3).map(|i| (i * 5) as u8).collect();
        let image = RgbView::new(4, 4, &pixels).unwrap();
        let same: Vec<f32> = pixels.iter().map(|&v| f32::from(v)).collect();
        assert_eq!(resize_bilinear(image, 4), same);
        assert_eq!(crop_and_resize(image, [0.0, 0.0, 4.0, 4.0], 4), same);
        // A box entirely off the image samples zeros.
        assert!(
            crop_and_resize(image, [10.0, 10.0, 20.0, 20.0], 3)
                .iter()
                .all(|&v| v == 0.0)
        );
    }

    #[test]
    fn zero_size_and_short_buffers_are_rejected() {
        assert!(matches!(
            RgbView::new(0, 5, &[]),
            Err(Error::InvalidRequest { .. })
        ));
        assert!(matches!(
            RgbView::new(2, 2, &[0; 11]),
            Err(Error::InvalidRequest { .. })
        ));
    }

    #[test]
    fn labels_are_argmax_with_ties_to_the_first() {
        let c = Classification::new([0.1, 0.3, 0.3, 0.1, 0.1, 0.05, 0.05]);
        assert_eq!(c.label, "happy");
        assert_eq!(c.confidence(), 0.3);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.starts_with(r#"{"label":"happy","probs":{"neutral":0.1,"happy":0.3"#));
    }
}
