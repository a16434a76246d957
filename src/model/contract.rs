//! The model contract, parsed from the ONNX file's `metadata_props`.
//!
//! The keys and their meaning are specified in docs/model-contract.md and written by
//! models/train/export.py; this is the only Rust code that knows them.

use std::collections::HashMap;

/// Contract revision this program understands (`boneage.contract`).
pub const CONTRACT_VERSION: &str = "1";

/// How the image is fitted to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Resize to exactly width x height, aspect ratio not kept (how RSNA-100px was made).
    Squash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeFilter {
    Triangle,
    CatmullRom,
    Lanczos3,
}

/// Preprocessing parameters: everything between decoded pixels and the input tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub fit: Fit,
    pub resize_filter: ResizeFilter,
    /// Applied to pixels scaled to `[0, 1]` (`full_range`): `(x - mean) / std`.
    pub mean: f32,
    pub std: f32,
    /// Test-time augmentation: the reading is the mean over the input shifted by each
    /// (dx, dy) in pixels, edges replicated. Empty: one view.
    pub tta_shifts_px: Vec<(i32, i32)>,
}

/// Everything the program needs to know about a model file.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub name: String,
    pub version: String,
    pub preprocess: Preprocess,
    /// Bone ages the training labels covered (months), for out-of-range warnings.
    pub training_range_months: (f64, f64),
    /// Calibrated 95% interval half-widths by band of predicted age: (from, to, half-width).
    pub interval95: Vec<(f64, f64, f64)>,
    /// When a reading counts as unstable, and its interval then; `None` for a model
    /// without the `uncertainty.view_spread_*` keys.
    pub view_spread: Option<ViewSpreadRule>,
    /// How unlike the training radiographs an image may be before it is refused; `None`
    /// for a model without the `ood_score` output.
    pub likeness: Option<LikenessRule>,
    pub validation_mae: Option<f64>,
    pub training_data: String,
    pub license: String,
    /// All metadata, for `model-info`.
    pub metadata: Vec<(String, String)>,
}

/// The views of a clean radiograph agree, those of a degraded or unusual one do not, and
/// such readings err more (models/README.md, "Robustness"): the model says from which
/// spread to warn and how wide their 95% interval must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewSpreadRule {
    /// SD of the test-time view readings (months) from which a reading is flagged.
    pub warn_from_months: f64,
    /// 95% interval half-width for flagged readings, calibrated on them alone: the age-band
    /// table, calibrated on all readings, covers only ~85% of them.
    pub interval95_months: Option<f64>,
}

impl ViewSpreadRule {
    pub fn flags(&self, view_spread_months: f64) -> bool {
        view_spread_months >= self.warn_from_months
    }
}

/// The model's second output, `ood_score`, measures how far an image's internal features
/// lie from those of the training radiographs (about 1 for them). The global intensity
/// checks of the quality gate cannot recognise a grey photograph or a diagram; this can
/// (models/README.md, "Image likeness").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LikenessRule {
    /// `ood.threshold`: scores above it are refused (the training images' 99.9th percentile).
    pub threshold: f64,
    /// `ood.orientation_margin`: a radiograph whose score drops by more than this when it
    /// is turned by a quarter, half or three-quarter turn is taken to be turned (the
    /// model's own reading of a turned hand errs by 17-28 months); `None`: no such check.
    pub orientation_margin: Option<f64>,
    /// `ood.mirror_margin`: a radiograph whose score drops by more than this when it is
    /// mirrored left-right, to under the threshold, most likely shows a right hand (or a
    /// left hand stored mirrored); the model reads those less accurately, so the reading
    /// carries a warning. `None`: no such check.
    pub mirror_margin: Option<f64>,
}

impl LikenessRule {
    pub fn refuses(&self, ood_score: f64) -> bool {
        ood_score > self.threshold
    }
}

/// The metadata key of the test-time views.
const TTA_SHIFTS: &str = "preprocess.tta_shifts_px";

/// The graph's outputs: the reading, then optionally the likeness score.
pub const OUTPUT_READING: &str = "bone_age_months";
pub const OUTPUT_LIKENESS: &str = "ood_score";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractError {
    /// A required key, or one that another key present needs (docs/model-contract.md).
    #[error("metadata key `{0}` is missing (required, or needed by another key the file has); re-export the model with models/train/export.py, which writes every key")]
    Missing(&'static str),
    #[error("metadata key `{key}` has value {value:?}, expected {expected}")]
    Invalid { key: &'static str, value: String, expected: &'static str },
    /// A graph input declared other than the metadata (or the contract) says: the program
    /// would feed it tensors of the wrong size, which a runtime may accept and misread.
    #[error("graph input `{name}` is declared as {found}, but {source_of_expected} needs {expected}; re-export the model so that its metadata describes its graph (models/train/export.py writes both from one setting)")]
    Shape { name: String, found: String, expected: String, source_of_expected: String },
    #[error("graph has inputs {found:?}, expected [\"image\", \"male\"]")]
    Inputs { found: Vec<String> },
    #[error("graph has outputs {found:?}, expected [\"bone_age_months\"] or [\"bone_age_months\", \"ood_score\"] with metadata key `ood.threshold`")]
    Outputs { found: Vec<String> },
}

/// One dimension of a graph input as the ONNX file declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    /// A named (`dim_param`) or unknown size; the name where the file gives one.
    Symbolic(String),
}

/// A graph input's element type and shape as the ONNX file declares them, whichever
/// runtime read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredInput {
    /// Whether the elements are 32-bit floats.
    pub float32: bool,
    /// The element type as the runtime names it, for messages.
    pub type_name: String,
    /// `None`: no shape declared.
    pub shape: Option<Vec<Dim>>,
}

impl std::fmt::Display for DeclaredInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let type_name = if self.float32 { "float32" } else { &self.type_name };
        match &self.shape {
            None => write!(f, "{type_name} with no shape"),
            Some(dims) => {
                let dims: Vec<String> = dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => n.to_string(),
                        Dim::Symbolic(name) if name.is_empty() => "?".into(),
                        Dim::Symbolic(name) => name.clone(),
                    })
                    .collect();
                write!(f, "{type_name} [{}]", dims.join(", "))
            }
        }
    }
}

/// The graph's inputs, in this order.
pub const INPUT_IMAGE: &str = "image";
pub const INPUT_MALE: &str = "male";

impl Contract {
    /// Checks the declared type and shape of the graph's inputs against the contract:
    /// `image` float32 `[1, C, H, W]` as the metadata says, `male` float32 `[1, 1]`. The
    /// batch dimension may be symbolic (an export with a dynamic batch axis); every other
    /// dimension must be the number the program feeds.
    ///
    /// # Errors
    /// [`ContractError::Shape`] naming the input, its declared shape, and what the
    /// metadata says instead.
    pub fn check_inputs(
        &self,
        image: &DeclaredInput,
        male: &DeclaredInput,
    ) -> Result<(), ContractError> {
        let p = &self.preprocess;
        let check = |name: &str, declared: &DeclaredInput, expected: &[usize], source: String| {
            let fits = declared.float32
                && declared.shape.as_ref().is_some_and(|dims| {
                    dims.len() == expected.len()
                        && dims.iter().zip(expected).enumerate().all(|(axis, (d, &want))| match d {
                            Dim::Fixed(n) => usize::try_from(*n).is_ok_and(|n| n == want),
                            Dim::Symbolic(_) => axis == 0,
                        })
                });
            if fits {
                return Ok(());
            }
            let dims: Vec<String> = expected.iter().map(usize::to_string).collect();
            Err(ContractError::Shape {
                name: name.to_string(),
                found: declared.to_string(),
                expected: format!("float32 [{}]", dims.join(", ")),
                source_of_expected: source,
            })
        };
        check(
            INPUT_IMAGE,
            image,
            &[1, p.channels, p.height, p.width],
            format!(
                "the metadata (preprocess.channels {}, preprocess.height {}, preprocess.width {})",
                p.channels, p.height, p.width
            ),
        )?;
        check(INPUT_MALE, male, &[1, 1], "the contract".to_string())
    }

    /// # Errors
    /// [`ContractError`] for the first missing or malformed key.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<Contract, ContractError> {
        let get = |key: &'static str| {
            meta.get(key).map(String::as_str).ok_or(ContractError::Missing(key))
        };
        let invalid = |key: &'static str, value: &str, expected: &'static str| {
            ContractError::Invalid { key, value: value.to_string(), expected }
        };
        let contract = get("boneage.contract")?;
        if contract != CONTRACT_VERSION {
            return Err(invalid("boneage.contract", contract, "\"1\" (update boneage)"));
        }
        let size = |key: &'static str| -> Result<usize, ContractError> {
            let v = get(key)?;
            v.parse::<usize>()
                .ok()
                .filter(|n| (8..=4096).contains(n))
                .ok_or_else(|| invalid(key, v, "an integer from 8 to 4096"))
        };
        let positive = |key: &'static str, allow_zero: bool| -> Result<f32, ContractError> {
            let v = get(key)?;
            let expected = if allow_zero { "a number of 0 or more" } else { "a positive number" };
            v.parse::<f32>()
                .ok()
                .filter(|x| x.is_finite() && (*x > 0.0 || (allow_zero && *x == 0.0)))
                .ok_or_else(|| invalid(key, v, expected))
        };
        let channels = match get("preprocess.channels")? {
            "1" => 1,
            "3" => 3,
            v => return Err(invalid("preprocess.channels", v, "1 or 3")),
        };
        let fit = match get("preprocess.fit")? {
            "squash" => Fit::Squash,
            v => return Err(invalid("preprocess.fit", v, "\"squash\"")),
        };
        let resize_filter = match get("preprocess.resize_filter")? {
            "triangle" => ResizeFilter::Triangle,
            "catmullrom" => ResizeFilter::CatmullRom,
            "lanczos3" => ResizeFilter::Lanczos3,
            v => {
                return Err(invalid(
                    "preprocess.resize_filter",
                    v,
                    "triangle, catmullrom or lanczos3",
                ))
            }
        };
        match get("preprocess.pixel_scale")? {
            "full_range" => {}
            v => return Err(invalid("preprocess.pixel_scale", v, "\"full_range\"")),
        }
        let preprocess = Preprocess {
            width: size("preprocess.width")?,
            height: size("preprocess.height")?,
            channels,
            fit,
            resize_filter,
            mean: positive("preprocess.mean", true)?,
            std: positive("preprocess.std", false)?,
            tta_shifts_px: match meta.get(TTA_SHIFTS) {
                None => Vec::new(),
                Some(v) => parse_shifts(v)
                    .ok_or_else(|| invalid(TTA_SHIFTS, v, "\"DX,DY;DX,DY;...\" in pixels"))?,
            },
        };
        // Optional, but a model reading in another unit must not be taken as months.
        if let Some(v) = meta.get("output.units").filter(|v| v.as_str() != "months") {
            return Err(invalid("output.units", v, "\"months\" (or absent)"));
        }
        let range = get("output.training_range_months")?;
        let training_range_months = parse_range(range).ok_or_else(|| {
            invalid("output.training_range_months", range, "\"FROM-TO\" in months")
        })?;
        let interval95 = match meta.get("uncertainty.interval95_bands_months") {
            None => Vec::new(),
            Some(v) => parse_bands(v).ok_or_else(|| {
                invalid("uncertainty.interval95_bands_months", v, "\"FROM-TO:HALFWIDTH;...\"")
            })?,
        };
        let optional_positive =
            |key: &'static str, expected: &'static str| -> Result<Option<f64>, ContractError> {
                meta.get(key)
                    .map(|v| {
                        v.parse::<f64>()
                            .ok()
                            .filter(|x| x.is_finite() && *x > 0.0)
                            .ok_or_else(|| invalid(key, v, expected))
                    })
                    .transpose()
            };
        let optional_months = |key| optional_positive(key, "a positive number of months");
        const WARN: &str = "uncertainty.view_spread_warn_months";
        const FLAGGED_HW: &str = "uncertainty.interval95_flagged_months";
        let view_spread = match (optional_months(WARN)?, optional_months(FLAGGED_HW)?) {
            (Some(warn_from_months), interval95_months) => {
                Some(ViewSpreadRule { warn_from_months, interval95_months })
            }
            (None, None) => None,
            // An interval for flagged readings with no rule to flag them: a broken export.
            (None, Some(_)) => return Err(ContractError::Missing(WARN)),
        };
        // A rule on the spread of the test-time views with no views to spread: a broken
        // export, which would otherwise read one view and never flag anything.
        if view_spread.is_some() && preprocess.tta_shifts_px.is_empty() {
            return Err(ContractError::Missing(TTA_SHIFTS));
        }
        let positive_f64 = |key| optional_positive(key, "a positive number");
        let orientation_margin = positive_f64("ood.orientation_margin")?;
        let mirror_margin = positive_f64("ood.mirror_margin")?;
        let likeness = match positive_f64("ood.threshold")? {
            Some(threshold) => Some(LikenessRule { threshold, orientation_margin, mirror_margin }),
            None if orientation_margin.is_none() && mirror_margin.is_none() => None,
            // A margin with no score limit to go with it: a broken export.
            None => return Err(ContractError::Missing("ood.threshold")),
        };
        let mut metadata: Vec<(String, String)> =
            meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        metadata.sort();
        Ok(Contract {
            name: meta.get("name").cloned().unwrap_or_else(|| "unnamed".into()),
            version: get("version")?.to_string(),
            preprocess,
            training_range_months,
            interval95,
            view_spread,
            likeness,
            validation_mae: meta.get("validation_mae").and_then(|v| v.parse().ok()),
            training_data: meta.get("training_data").cloned().unwrap_or_default(),
            license: meta.get("license").cloned().unwrap_or_default(),
            metadata,
        })
    }

    /// Checks the graph's output names against the contract: the reading first, then the
    /// likeness score exactly when the metadata has its threshold.
    ///
    /// # Errors
    /// [`ContractError::Outputs`] naming what the graph has.
    pub fn check_outputs(&self, outputs: &[String]) -> Result<(), ContractError> {
        let expected: &[&str] = if self.likeness.is_some() {
            &[OUTPUT_READING, OUTPUT_LIKENESS]
        } else {
            &[OUTPUT_READING]
        };
        if outputs.iter().map(String::as_str).eq(expected.iter().copied()) {
            Ok(())
        } else {
            Err(ContractError::Outputs { found: outputs.to_vec() })
        }
    }

    /// `name vversion`, as shown in outputs and stored with results.
    pub fn model_id(&self) -> String {
        format!("{} v{}", self.name, self.version)
    }

    /// The 95% interval half-width for a predicted age, from the calibration table,
    /// widened for a reading whose test-time views disagree (`view_spread_months` is
    /// `None` for a single view, which has no spread).
    pub fn interval95_months(
        &self,
        predicted: f64,
        view_spread_months: Option<f64>,
    ) -> Option<f64> {
        let first = self.interval95.first()?;
        let last = self.interval95.last()?;
        let band = self
            .interval95
            .iter()
            .find(|(lo, hi, _)| predicted >= *lo && predicted < *hi)
            .unwrap_or(if predicted < first.0 { first } else { last });
        let flagged = match (self.view_spread, view_spread_months) {
            (Some(rule), Some(sd)) if rule.flags(sd) => rule.interval95_months,
            _ => None,
        };
        Some(flagged.map_or(band.2, |hw| hw.max(band.2)))
    }
}

/// `"0,0;2,0;-2,0"` -> shifts; at most 32 views of at most 16 px, so a bad file cannot
/// make one reading cost hundreds of inferences.
fn parse_shifts(s: &str) -> Option<Vec<(i32, i32)>> {
    let shifts = s
        .split(';')
        .map(|pair| {
            let (dx, dy) = pair.trim().split_once(',')?;
            let (dx, dy) = (dx.trim().parse::<i32>().ok()?, dy.trim().parse::<i32>().ok()?);
            (dx.abs() <= 16 && dy.abs() <= 16).then_some((dx, dy))
        })
        .collect::<Option<Vec<_>>>()?;
    (1..=32).contains(&shifts.len()).then_some(shifts)
}

fn parse_range(s: &str) -> Option<(f64, f64)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?);
    (a.is_finite() && b.is_finite() && a < b).then_some((a, b))
}

fn parse_bands(s: &str) -> Option<Vec<(f64, f64, f64)>> {
    s.split(';')
        .filter(|p| !p.trim().is_empty())
        .map(|part| {
            let (range, hw) = part.split_once(':')?;
            let (lo, hi) = parse_range(range)?;
            let hw = hw.trim().parse::<f64>().ok().filter(|h| h.is_finite() && *h > 0.0)?;
            Some((lo, hi, hw))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> HashMap<String, String> {
        [
            ("boneage.contract", "1"),
            ("name", "test"),
            ("version", "0.1.0"),
            ("preprocess.width", "100"),
            ("preprocess.height", "100"),
            ("preprocess.channels", "1"),
            ("preprocess.fit", "squash"),
            ("preprocess.resize_filter", "triangle"),
            ("preprocess.pixel_scale", "full_range"),
            ("preprocess.mean", "0.18"),
            ("preprocess.std", "0.19"),
            ("output.training_range_months", "1-228"),
            ("uncertainty.interval95_bands_months", "0-60:10.5;60-240:15"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn parses_a_complete_contract() {
        let c = Contract::from_metadata(&sample()).unwrap();
        assert_eq!(c.preprocess.width, 100);
        assert_eq!(c.preprocess.mean, 0.18);
        assert_eq!(c.training_range_months, (1.0, 228.0));
        assert_eq!(c.interval95_months(30.0, None), Some(10.5));
        assert_eq!(c.interval95_months(100.0, None), Some(15.0));
        assert_eq!(c.interval95_months(300.0, None), Some(15.0));
        // No view-spread rule in this model: a wide spread changes nothing.
        assert_eq!(c.interval95_months(100.0, Some(50.0)), Some(15.0));
        assert_eq!(c.model_id(), "test v0.1.0");
    }

    #[test]
    fn names_the_missing_or_bad_key() {
        let mut m = sample();
        m.remove("preprocess.std");
        assert_eq!(Contract::from_metadata(&m), Err(ContractError::Missing("preprocess.std")));
        let mut m = sample();
        m.insert("preprocess.width".into(), "wide".into());
        let e = Contract::from_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("preprocess.width") && e.contains("wide"), "{e}");
        let mut m = sample();
        m.insert("preprocess.fit".into(), "pad".into());
        assert!(Contract::from_metadata(&m).is_err());
        let mut m = sample();
        m.insert("boneage.contract".into(), "2".into());
        assert!(Contract::from_metadata(&m).is_err());
        let mut m = sample();
        m.insert("output.units".into(), "months".into());
        assert!(Contract::from_metadata(&m).is_ok());
        m.insert("output.units".into(), "years".into());
        let e = Contract::from_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("output.units") && e.contains("years"), "{e}");
    }

    #[test]
    fn the_likeness_output_comes_with_its_threshold() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let plain = Contract::from_metadata(&sample()).unwrap();
        assert_eq!(plain.likeness, None);
        assert!(plain.check_outputs(&names(&["bone_age_months"])).is_ok());
        // A score without a threshold, or the reverse, is a broken export.
        assert!(plain.check_outputs(&names(&["bone_age_months", "ood_score"])).is_err());
        let mut m = sample();
        m.insert("ood.threshold".into(), "2.018".into());
        let with = Contract::from_metadata(&m).unwrap();
        let rule = with.likeness.unwrap();
        assert!(rule.refuses(2.1) && !rule.refuses(2.018));
        assert!(with.check_outputs(&names(&["bone_age_months", "ood_score"])).is_ok());
        let e = with.check_outputs(&names(&["bone_age_months"])).unwrap_err().to_string();
        assert!(e.contains("ood.threshold"), "{e}");
        assert!(with.check_outputs(&names(&["ood_score", "bone_age_months"])).is_err());
        for bad in ["0", "-1", "nan", "x"] {
            m.insert("ood.threshold".into(), bad.into());
            let e = Contract::from_metadata(&m).unwrap_err().to_string();
            assert!(e.contains("ood.threshold"), "{e}");
        }
    }

    #[test]
    fn margins_are_optional_and_need_the_threshold() {
        let mut m = sample();
        m.insert("ood.threshold".into(), "2.018".into());
        let rule = Contract::from_metadata(&m).unwrap().likeness.unwrap();
        assert_eq!((rule.orientation_margin, rule.mirror_margin), (None, None));
        m.insert("ood.orientation_margin".into(), "0.2".into());
        m.insert("ood.mirror_margin".into(), "0.1".into());
        let rule = Contract::from_metadata(&m).unwrap().likeness.unwrap();
        assert_eq!((rule.orientation_margin, rule.mirror_margin), (Some(0.2), Some(0.1)));
        m.insert("ood.mirror_margin".into(), "-0.1".into());
        let e = Contract::from_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("ood.mirror_margin"), "{e}");
        for key in ["ood.orientation_margin", "ood.mirror_margin"] {
            let mut m = sample();
            m.insert(key.into(), "0.1".into());
            let e = Contract::from_metadata(&m).unwrap_err().to_string();
            assert!(e.contains("ood.threshold"), "{key}: {e}");
        }
    }

    /// [`sample`] with five test-time views, which a view-spread rule needs.
    fn with_views() -> HashMap<String, String> {
        let mut m = sample();
        m.insert(TTA_SHIFTS.into(), "0,0;2,0;-2,0;0,2;0,-2".into());
        m
    }

    #[test]
    fn view_spread_rule_is_optional_and_checked() {
        assert_eq!(Contract::from_metadata(&sample()).unwrap().view_spread, None);
        let mut m = with_views();
        m.insert("uncertainty.view_spread_warn_months".into(), "4.42".into());
        let rule = Contract::from_metadata(&m).unwrap().view_spread.unwrap();
        assert_eq!(rule, ViewSpreadRule { warn_from_months: 4.42, interval95_months: None });
        assert!(rule.flags(4.42) && !rule.flags(4.41));
        m.insert("uncertainty.interval95_flagged_months".into(), "36.29".into());
        let rule = Contract::from_metadata(&m).unwrap().view_spread.unwrap();
        assert_eq!(rule.interval95_months, Some(36.29));
        for key in ["uncertainty.view_spread_warn_months", "uncertainty.interval95_flagged_months"]
        {
            let mut m = m.clone();
            for bad in ["-1", "0", "wide", "NaN"] {
                m.insert(key.into(), bad.into());
                let e = Contract::from_metadata(&m).unwrap_err().to_string();
                assert!(e.contains(key) && e.contains(bad), "{e}");
            }
        }
        m.remove("uncertainty.view_spread_warn_months");
        let e = Contract::from_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("uncertainty.view_spread_warn_months"), "{e}");
    }

    /// A rule on how far the test-time views may disagree, in a file that lists no views,
    /// would read one view and never flag anything: a broken export, refused like a
    /// flagged-reading interval without its rule.
    #[test]
    fn a_view_spread_rule_needs_the_views() {
        for key in ["uncertainty.view_spread_warn_months", "uncertainty.interval95_flagged_months"]
        {
            let mut m = sample();
            m.insert("uncertainty.view_spread_warn_months".into(), "4.42".into());
            m.insert(key.into(), "4.42".into());
            assert_eq!(Contract::from_metadata(&m), Err(ContractError::Missing(TTA_SHIFTS)));
            let e = Contract::from_metadata(&m).unwrap_err().to_string();
            assert!(e.contains("preprocess.tta_shifts_px"), "{e}");
            m.insert(TTA_SHIFTS.into(), "0,0;2,0".into());
            assert!(Contract::from_metadata(&m).unwrap().view_spread.is_some());
        }
    }

    #[test]
    fn mean_may_be_zero_std_may_not() {
        let mut m = sample();
        m.insert("preprocess.mean".into(), "0".into());
        assert_eq!(Contract::from_metadata(&m).unwrap().preprocess.mean, 0.0);
        for bad in ["-0.1", "NaN", "x"] {
            m.insert("preprocess.mean".into(), bad.into());
            let e = Contract::from_metadata(&m).unwrap_err().to_string();
            assert!(e.contains("preprocess.mean") && e.contains("a number of 0 or more"), "{e}");
        }
        let mut m = sample();
        m.insert("preprocess.std".into(), "0".into());
        let e = Contract::from_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("preprocess.std") && e.contains("a positive number"), "{e}");
    }

    fn declared(dims: &[Dim]) -> DeclaredInput {
        DeclaredInput { float32: true, type_name: "Float32".into(), shape: Some(dims.to_vec()) }
    }

    fn fixed(dims: &[i64]) -> DeclaredInput {
        declared(&dims.iter().map(|&n| Dim::Fixed(n)).collect::<Vec<_>>())
    }

    #[test]
    fn graph_inputs_must_have_the_shape_the_metadata_says() {
        let c = Contract::from_metadata(&sample()).unwrap();
        let male = fixed(&[1, 1]);
        c.check_inputs(&fixed(&[1, 1, 100, 100]), &male).unwrap();
        // A dynamic batch axis is fine; any other symbolic axis is not.
        let batch = Dim::Symbolic("batch".into());
        let f = |n| Dim::Fixed(n);
        c.check_inputs(&declared(&[batch.clone(), f(1), f(100), f(100)]), &male).unwrap();
        c.check_inputs(&fixed(&[1, 1, 100, 100]), &declared(&[Dim::Symbolic(String::new()), f(1)]))
            .unwrap();
        let e = c
            .check_inputs(&declared(&[f(1), f(1), batch.clone(), f(100)]), &male)
            .unwrap_err()
            .to_string();
        assert!(e.contains("float32 [1, 1, batch, 100]"), "{e}");
        // The metadata says 128 px, the graph 100: the reading would be wrong, not refused.
        let mut m = sample();
        m.insert("preprocess.width".into(), "128".into());
        m.insert("preprocess.height".into(), "128".into());
        let c128 = Contract::from_metadata(&m).unwrap();
        let e = c128.check_inputs(&fixed(&[1, 1, 100, 100]), &male).unwrap_err();
        assert!(matches!(&e, ContractError::Shape { name, .. } if name == "image"), "{e:?}");
        let e = e.to_string();
        for part in [
            "graph input `image` is declared as float32 [1, 1, 100, 100]",
            "preprocess.height 128, preprocess.width 128",
            "needs float32 [1, 1, 128, 128]",
            "re-export the model",
        ] {
            assert!(e.contains(part), "{part:?} not in {e}");
        }
        // Three channels in the metadata, one in the graph.
        let mut m = sample();
        m.insert("preprocess.channels".into(), "3".into());
        let e = Contract::from_metadata(&m)
            .unwrap()
            .check_inputs(&fixed(&[1, 1, 100, 100]), &male)
            .unwrap_err()
            .to_string();
        assert!(e.contains("preprocess.channels 3") && e.contains("[1, 3, 100, 100]"), "{e}");
        // Wrong rank, type or no shape at all; `male` checked against the contract.
        let e = c.check_inputs(&fixed(&[1, 100, 100]), &male).unwrap_err().to_string();
        assert!(e.contains("float32 [1, 100, 100]"), "{e}");
        let int = DeclaredInput { float32: false, type_name: "int64".into(), ..fixed(&[1, 1]) };
        let e = c.check_inputs(&fixed(&[1, 1, 100, 100]), &int).unwrap_err().to_string();
        assert!(e.contains("`male` is declared as int64 [1, 1]"), "{e}");
        assert!(e.contains("the contract needs float32 [1, 1]"), "{e}");
        let shapeless = DeclaredInput { shape: None, ..fixed(&[]) };
        let e = c.check_inputs(&shapeless, &male).unwrap_err().to_string();
        assert!(e.contains("float32 with no shape"), "{e}");
        assert!(c.check_inputs(&fixed(&[1, 1, 100, 100]), &fixed(&[1, 2])).is_err());
        assert!(c.check_inputs(&fixed(&[2, 1, 100, 100]), &male).is_err());
    }

    #[test]
    fn flagged_readings_get_the_wider_interval() {
        let mut m = with_views();
        m.insert("uncertainty.view_spread_warn_months".into(), "4.42".into());
        m.insert("uncertainty.interval95_flagged_months".into(), "12".into());
        let c = Contract::from_metadata(&m).unwrap();
        assert_eq!(c.interval95_months(100.0, Some(4.42)), Some(15.0), "band is wider: kept");
        assert_eq!(c.interval95_months(30.0, Some(4.42)), Some(12.0));
        assert_eq!(c.interval95_months(30.0, Some(4.41)), Some(10.5));
        assert_eq!(c.interval95_months(30.0, None), Some(10.5), "one view: the table");
        m.remove("uncertainty.interval95_flagged_months");
        let c = Contract::from_metadata(&m).unwrap();
        assert_eq!(c.interval95_months(30.0, Some(9.0)), Some(10.5), "flag without a width");
    }

    #[test]
    fn tta_shifts() {
        assert!(Contract::from_metadata(&sample()).unwrap().preprocess.tta_shifts_px.is_empty());
        let mut m = sample();
        m.insert("preprocess.tta_shifts_px".into(), "0,0; 2,0;-2,0;0,-2".into());
        let c = Contract::from_metadata(&m).unwrap();
        assert_eq!(c.preprocess.tta_shifts_px, vec![(0, 0), (2, 0), (-2, 0), (0, -2)]);
        for bad in ["", "0,0;2", "a,b", "0,0;99,0", &"0,0;".repeat(33)] {
            m.insert("preprocess.tta_shifts_px".into(), bad.to_string());
            let e = Contract::from_metadata(&m).unwrap_err().to_string();
            assert!(e.contains("preprocess.tta_shifts_px"), "{bad:?}: {e}");
        }
    }
}
