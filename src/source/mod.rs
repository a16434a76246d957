//! Where radiographs come from: image files (PNG, JPEG, TIFF, BMP), DICOM, and a V4L2
//! camera ([`camera`]).
//!
//! Every source yields a [`Radiograph`]: a grayscale image scaled to `[0, 1]` (0 = black,
//! bone is bright, as the model was trained) plus whatever the file says about the patient.
//! Reading never guesses patient facts: a missing sex stays `None` and the caller decides.

pub mod border;
pub mod camera;
mod dicom;
pub mod hotfolder;
mod lossy;
mod raster;

use std::fmt;
use std::path::{Path, PathBuf};

use image::{ImageBuffer, Luma};

use crate::report::{Age, AgeSource, Sex};

/// Grayscale pixels in `[0, 1]`, row-major; the one image type past this module.
pub type GrayImage = ImageBuffer<Luma<f32>, Vec<f32>>;

/// Files larger than this are refused before decoding: no radiograph is this big, and a
/// field device with little RAM must not be taken down by a wrong file in the hot folder.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Smallest accepted side; smaller images cannot hold a readable hand.
pub const MIN_SIDE_PX: u32 = 32;

/// Largest accepted image, in pixels: hand radiographs are under 20 megapixels (a
/// 35x43 cm plate at 100 µm is 15). The cap keeps a declared-huge image (a few hundred
/// kilobytes of PNG can claim 12000x12000) from exhausting a small board's memory.
pub const MAX_PIXELS: u64 = 40_000_000;

/// Memory the image decoder may take for one file (40 megapixels of 16-bit RGBA is 320 MB).
pub const MAX_DECODE_BYTES: u64 = 384 * 1024 * 1024;

/// What the file says about the patient and exam (DICOM tags); all optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatientInfo {
    pub sex: Option<Sex>,
    pub age: Option<Age>,
    /// Which tags gave `age`: the dates, or PatientAge.
    pub age_source: Option<AgeSource>,
    /// How far above `age` the exact age may lie, in months: a PatientAge counts whole
    /// units, rounded down (12 for `010Y`); 0 when the age is exact (from dates).
    pub age_unit_months: f64,
    /// The exam date (`YYYY-MM-DD`), when the file has a valid one.
    pub exam_date: Option<String>,
    pub patient_id: Option<String>,
    pub accession: Option<String>,
    /// Tags that were present but not used, and why, or that bear on the reading (a
    /// right-side marker): shown with the reading.
    pub notes: Vec<String>,
}

/// Sex and age for one reading, from what was given and what the file says.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub sex: Option<Sex>,
    pub age: Option<Age>,
    pub age_source: Option<AgeSource>,
    /// How far either side of `age` the exact age may lie, in months: half a unit for an
    /// age counted in whole units (PatientAge), whose middle `age` then is; 0 when exact.
    pub age_span_months: f64,
    /// Disagreements and unusable tags, for the reading's warnings.
    pub warnings: Vec<String>,
}

impl PatientInfo {
    /// Sex and age for a reading: what the operator gave wins over the file, but a
    /// disagreement becomes a warning (a wrong patient or a wrong file is the usual cause),
    /// as do the file's own [`notes`](Self::notes).
    pub fn resolve(&self, sex: Option<Sex>, age: Option<Age>) -> Resolved {
        let mut warnings = self.notes.clone();
        if let (Some(given), Some(tagged)) = (sex, self.sex) {
            if given != tagged {
                warnings.push(format!(
                    "sex {given} was given but the file says {tagged} (PatientSex): the reading \
                     uses {given}; check that this is the right patient"
                ));
            }
        }
        if let (Some(given), Some(tagged)) = (age, self.age) {
            if !fits_counted_age(given, tagged, self.age_unit_months) {
                warnings.push(format!(
                    "chronological age {given} was given but the file says {tagged}: the reading \
                     uses {given}; check that this is the right patient"
                ));
            }
        }
        if age.is_some() {
            let age_source = Some(AgeSource::Given);
            return Resolved {
                sex: sex.or(self.sex),
                age,
                age_source,
                age_span_months: 0.0,
                warnings,
            };
        }
        // A PatientAge of `006Y` is anything from 6 y 0 m to 6 y 11 m: taken as it stands it
        // is half a year short on average, which tilts every SDS towards "advanced"; the
        // middle of the unit is the best single age, within half a unit either way.
        let span = if self.age_source == Some(AgeSource::FilePatientAge) {
            self.age_unit_months / 2.0
        } else {
            0.0
        };
        let age =
            self.age.map(|counted| Age::from_months(counted.months() + span).unwrap_or(counted));
        Resolved {
            sex: sex.or(self.sex),
            age,
            age_source: self.age_source,
            age_span_months: span,
            warnings,
        }
    }
}

/// Whether an exact age agrees with one counted in whole units of `unit_months`, rounded
/// down (a PatientAge of `010Y` is anything from 10 y 0 m to 10 y 11 m): within
/// `[counted, counted + unit]`, with a month's slack either side for how the unit was
/// counted. With a unit of 0, the two ages agree within a month.
pub(crate) fn fits_counted_age(exact: Age, counted: Age, unit_months: f64) -> bool {
    let (exact, counted) = (exact.months(), counted.months());
    exact >= counted - 1.0 && exact <= counted + unit_months + 1.0
}

/// A decoded radiograph ready for preprocessing.
#[derive(Debug, Clone)]
pub struct Radiograph {
    /// Where it came from (a path, or a source description).
    pub origin: String,
    pub pixels: GrayImage,
    /// Bits per sample of the stored image (8, 16, ...), for the record.
    pub bit_depth: u8,
    pub format: &'static str,
    /// Fraction of pixels whose colour channels differ by more than
    /// [`COLOUR_CHROMA`]: 0 for grey images. Radiographs are grey, so the quality gate
    /// refuses a colourful image (a photo, a screenshot) before the model sees it.
    pub colour_fraction: f64,
    pub patient: PatientInfo,
}

/// Channel spread (max - min, in `[0, 1]`) above which a pixel counts as coloured: far
/// above what JPEG chroma noise leaves on a grey image saved in colour.
pub const COLOUR_CHROMA: f32 = 0.1;

/// Failure to read one radiograph; always names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct SourceError {
    pub path: PathBuf,
    pub kind: SourceErrorKind,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceErrorKind {
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
    #[error("file is empty (0 bytes); was the copy interrupted?")]
    Empty,
    #[error("file is {0} bytes, over the {MAX_FILE_BYTES}-byte limit; is it really a radiograph?")]
    TooLarge(u64),
    #[error("not a supported image (expected PNG, JPEG, TIFF, BMP or DICOM){0}")]
    UnknownFormat(String),
    #[error("corrupt or truncated {format} image: {reason}")]
    Decode { format: &'static str, reason: String },
    /// A valid file in a variant the decoder lacks (signed or 12-bit packed TIFF, ...):
    /// not to be called corrupt, since re-copying it will not help.
    #[error("unsupported {format} variant: {reason}; export it as an 8- or 16-bit unsigned greyscale PNG or TIFF")]
    Unsupported { format: &'static str, reason: String },
    #[error("DICOM file unusable: {0}")]
    Dicom(String),
    #[error("image is {width}x{height} px; at least {MIN_SIDE_PX}x{MIN_SIDE_PX} is needed")]
    TooSmall { width: u32, height: u32 },
    #[error("image is {width}x{height} px ({:.0} megapixels), over the {} megapixel limit; hand radiographs are under 20: send the radiograph at its native resolution", f64::from(*width) * f64::from(*height) / 1e6, MAX_PIXELS / 1_000_000)]
    TooManyPixels { width: u32, height: u32 },
}

impl SourceError {
    pub fn new(path: &Path, kind: impl Into<SourceErrorKind>) -> Self {
        SourceError { path: path.to_path_buf(), kind: kind.into() }
    }
}

/// Reads one radiograph file, choosing the decoder from the file's content (magic bytes),
/// not its name, so a mislabelled `.png` that is really DICOM still works.
///
/// # Errors
/// [`SourceError`] naming the file and why it cannot be used.
pub fn read_file(path: &Path) -> Result<Radiograph, SourceError> {
    let bytes = read_limited(path)?;
    read_bytes(path, &bytes)
}

/// A file's bytes, refusing files over [`MAX_FILE_BYTES`] before reading them.
///
/// # Errors
/// [`SourceError`] naming the file: unreadable or too large.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, SourceError> {
    let meta = std::fs::metadata(path).map_err(|e| SourceError::new(path, e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(SourceError::new(path, SourceErrorKind::TooLarge(meta.len())));
    }
    std::fs::read(path).map_err(|e| SourceError::new(path, e))
}

/// Like [`read_file`] for bytes already in memory; `path` is used for messages only.
pub fn read_bytes(path: &Path, bytes: &[u8]) -> Result<Radiograph, SourceError> {
    if bytes.is_empty() {
        return Err(SourceError::new(path, SourceErrorKind::Empty));
    }
    let mut radiograph = if dicom::is_dicom(bytes) {
        dicom::decode(path, bytes)?
    } else {
        raster::decode(path, bytes)?
    };
    // Before the border search, which needs at least a line of pixels each way.
    let (width, height) = radiograph.pixels.dimensions();
    if width < MIN_SIDE_PX || height < MIN_SIDE_PX {
        return Err(SourceError::new(path, SourceErrorKind::TooSmall { width, height }));
    }
    if let Some(b) = border::set_aside(&mut radiograph.pixels) {
        log::info!(
            "{}: bright unexposed border set to background (top {}, bottom {}, left {}, \
             right {} px)",
            path.display(),
            b.top,
            b.bottom,
            b.left,
            b.right
        );
    }
    Ok(radiograph)
}

impl fmt::Display for Radiograph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, h) = self.pixels.dimensions();
        write!(f, "{} ({}, {}x{}, {}-bit)", self.origin, self.format, w, h, self.bit_depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(months: f64) -> Age {
        Age::from_months(months).unwrap()
    }

    /// A given age is compared with a whole-year PatientAge as that tag counts: 10 y 6 m
    /// agrees with `010Y`, 11 y 2 m does not; an age from dates must agree within a month.
    #[test]
    fn given_age_against_the_file_counts_whole_units() {
        let from_patient_age = PatientInfo {
            age: Some(age(120.0)),
            age_source: Some(AgeSource::FilePatientAge),
            age_unit_months: 12.0,
            ..PatientInfo::default()
        };
        let warned = |info: &PatientInfo, given: f64| {
            info.resolve(Some(Sex::Female), Some(age(given)))
                .warnings
                .iter()
                .any(|w| w.contains("was given but the file says"))
        };
        for (given, warn) in
            [(126.0, false), (131.5, false), (119.5, false), (134.0, true), (118.0, true)]
        {
            assert_eq!(warned(&from_patient_age, given), warn, "{given} months against 010Y");
        }
        let from_dates = PatientInfo {
            age_source: Some(AgeSource::FileDates),
            age_unit_months: 0.0,
            ..from_patient_age
        };
        for (given, warn) in [(120.5, false), (119.2, false), (126.0, true)] {
            assert_eq!(warned(&from_dates, given), warn, "{given} months against the dates");
        }
    }

    /// A whole-year PatientAge is read as the middle of its year, within 6 months either
    /// way; an age from dates, or a given one, is taken as it is.
    #[test]
    fn patient_age_is_the_middle_of_its_unit() {
        let info = PatientInfo {
            age: Some(age(72.0)),
            age_source: Some(AgeSource::FilePatientAge),
            age_unit_months: 12.0,
            ..PatientInfo::default()
        };
        let r = info.resolve(Some(Sex::Male), None);
        assert_eq!((r.age.map(Age::months), r.age_span_months), (Some(78.0), 6.0));
        let r = info.resolve(Some(Sex::Male), Some(age(75.0)));
        assert_eq!((r.age.map(Age::months), r.age_span_months), (Some(75.0), 0.0));
        let dated = PatientInfo { age_source: Some(AgeSource::FileDates), ..info };
        let r = dated.resolve(Some(Sex::Male), None);
        assert_eq!((r.age.map(Age::months), r.age_span_months), (Some(72.0), 0.0));
    }
}
