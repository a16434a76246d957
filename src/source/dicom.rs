//! DICOM files through the dicom-rs crates.
//!
//! Pixel data: uncompressed and the encapsulated syntaxes dicom-rs decodes natively (JPEG
//! baseline/extended/lossless, RLE, deflate). The modality LUT (rescale slope/intercept) and
//! the first VOI LUT or window in the file are applied, MONOCHROME1 is inverted so bone is
//! bright, then the result is scaled to `[0, 1]` with 16-bit precision.
//! Patient facts: PatientSex, the age (PatientBirthDate vs StudyDate/AcquisitionDate/
//! ContentDate, else PatientAge), PatientID and AccessionNumber, when present; tags present
//! but unusable become notes on the reading.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutOption};

use super::{raster, PatientInfo, Radiograph, SourceError, SourceErrorKind};
use crate::report::{iso_date, months_between_dates, Age, AgeSource, Sex, MAX_AGE_MONTHS};

/// A DICOM Part 10 file has "DICM" after a 128-byte preamble.
pub(super) fn is_dicom(bytes: &[u8]) -> bool {
    bytes.len() >= 132 && &bytes[128..132] == b"DICM"
}

pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<Radiograph, SourceError> {
    let dicom_err = |msg: String| SourceError::new(path, SourceErrorKind::Dicom(msg));
    let obj = OpenFileOptions::new()
        .from_reader(&bytes[128..])
        .map_err(|e| dicom_err(format!("cannot parse: {e}")))?;
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(dicom_err("no pixel data (is this a report or structured document?)".into()));
    }
    let dim = |tag| obj.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<u32>().ok());
    if let (Some(rows), Some(cols)) = (dim(tags::ROWS), dim(tags::COLUMNS)) {
        raster::check_pixels(path, cols, rows)?;
    }
    let decoded = obj.decode_pixel_data().map_err(|e| {
        let ts = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
        dicom_err(format!("cannot decode pixel data (transfer syntax {ts}): {e}"))
    })?;
    let options = ConvertOptions::new().with_voi_lut(VoiLutOption::First).force_16bit();
    let img = decoded
        .to_dynamic_image_with_options(0, &options)
        .map_err(|e| dicom_err(format!("cannot convert pixel data: {e}")))?;
    Ok(Radiograph {
        origin: path.display().to_string(),
        pixels: raster::to_gray(&img),
        bit_depth: decoded.bits_stored() as u8,
        format: "DICOM",
        colour_fraction: raster::colour_fraction(&img),
        patient: patient_info(&obj),
    })
}

fn text(obj: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let value = obj.element_opt(tag).ok().flatten()?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string();
    (!value.is_empty()).then_some(value)
}

fn patient_info(obj: &DefaultDicomObject) -> PatientInfo {
    let sex = text(obj, tags::PATIENT_SEX).and_then(|s| match s.to_ascii_uppercase().as_str() {
        "M" => Some(Sex::Male),
        "F" => Some(Sex::Female),
        _ => None, // "O" or anything else: unknown, the user must say
    });
    let exam = text(obj, tags::STUDY_DATE)
        .or_else(|| text(obj, tags::ACQUISITION_DATE))
        .or_else(|| text(obj, tags::CONTENT_DATE));
    let (age, notes) = chronological_age(
        text(obj, tags::PATIENT_AGE).as_deref(),
        text(obj, tags::PATIENT_BIRTH_DATE).as_deref(),
        exam.as_deref(),
    );
    PatientInfo {
        sex,
        age: age.map(|(age, _)| age),
        age_source: age.map(|(_, source)| source),
        exam_date: exam.as_deref().and_then(iso_date),
        patient_id: text(obj, tags::PATIENT_ID),
        accession: text(obj, tags::ACCESSION_NUMBER),
        notes,
    }
}

/// The chronological age from PatientAge and the birth and exam dates, and a note for
/// each tag that was present but not used. The dates win: PatientAge is usually whole
/// years, rounded down, which can be 11 months short, and an SDS from it would be wrong
/// by up to one SD. A file whose age cannot be used must say so, or the reader assumes
/// there was none.
fn chronological_age(
    stated: Option<&str>,
    birth: Option<&str>,
    exam: Option<&str>,
) -> (Option<(Age, AgeSource)>, Vec<String>) {
    let mut notes = Vec::new();
    let stated_age = stated.and_then(|s| match parse_age_string(s) {
        Some(Ok(age)) => Some(age),
        Some(Err(months)) => {
            notes.push(format!(
                "the file's PatientAge {s} ({:.1} years) is outside the 0-{:.0} years this \
                 reading covers; no chronological age was taken from it: check that this is a \
                 child's radiograph and the right patient",
                months / 12.0,
                MAX_AGE_MONTHS / 12.0
            ));
            None
        }
        None => {
            notes.push(format!(
                "the file's PatientAge {s:?} is not a DICOM age string (nnnD, nnnW, nnnM or \
                 nnnY) and was ignored; give the age with --age if it matters"
            ));
            None
        }
    });
    let dated = match (birth, exam) {
        (Some(b), Some(e)) => match months_between_dates(b, e) {
            None => {
                notes.push(format!(
                    "the file's PatientBirthDate {b:?} or exam date {e:?} is not a YYYYMMDD date; \
                     no age was taken from the dates"
                ));
                None
            }
            Some(m) if m < 0.0 => {
                notes.push(format!(
                    "the file's PatientBirthDate {b} is after its exam date {e}; no age was taken \
                     from the dates: check the patient record"
                ));
                None
            }
            Some(m) => match Age::from_months(m) {
                Ok(a) => Some(a),
                Err(_) => {
                    notes.push(format!(
                        "the file's dates give an age of {:.1} years (born {b}, exam {e}), \
                         outside the 0-{:.0} years this reading covers; no chronological age \
                         was used: check that this is a child's radiograph and the right patient",
                        m / 12.0,
                        MAX_AGE_MONTHS / 12.0
                    ));
                    None
                }
            },
        },
        _ => None,
    };
    if let (Some(d), Some(s), Some(text)) = (dated, stated_age, stated) {
        // PatientAge counts whole units (rounded down): consistent if the exact age lies in
        // [stated, stated + one unit], with a month's slack for how the unit was counted.
        let unit = match text.as_bytes().last() {
            Some(b'Y') => 12.0,
            Some(b'M') => 1.0,
            _ => 0.25,
        };
        if d.months() < s.months() - 1.0 || d.months() > s.months() + unit + 1.0 {
            notes.push(format!(
                "the file's PatientAge {text} disagrees with its dates ({d} from PatientBirthDate \
                 and the exam date); the dates were used: check the patient record"
            ));
        }
    }
    let age = dated
        .map(|a| (a, AgeSource::FileDates))
        .or(stated_age.map(|a| (a, AgeSource::FilePatientAge)));
    (age, notes)
}

/// DICOM AS value: `nnnD`, `nnnW`, `nnnM` or `nnnY`; `Some(Err(months))` when well formed
/// but outside the ages a reading covers.
fn parse_age_string(s: &str) -> Option<Result<Age, f64>> {
    if s.len() != 4 {
        return None;
    }
    let n: f64 = s[..3].parse().ok()?;
    let months = match &s[3..] {
        "D" => n / (365.25 / 12.0),
        "W" => n * 7.0 / (365.25 / 12.0),
        "M" => n,
        "Y" => n * 12.0,
        _ => return None,
    };
    Some(Age::from_months(months).map_err(|_| months))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_strings() {
        let months = |s| parse_age_string(s).map(|r| r.map(Age::months));
        assert_eq!(months("010Y"), Some(Ok(120.0)));
        assert_eq!(months("018M"), Some(Ok(18.0)));
        assert_eq!(months("044Y"), Some(Err(528.0)));
        assert!((parse_age_string("030D").unwrap().unwrap().months() - 0.9856).abs() < 1e-3);
        assert_eq!(parse_age_string("10Y"), None);
        assert_eq!(parse_age_string("010X"), None);
    }

    #[test]
    fn dates_win_over_patient_age_and_unusable_ages_are_explained() {
        let months = |r: (Option<(Age, AgeSource)>, Vec<String>)| {
            (r.0.map(|(a, _)| a.months().round()), r.1)
        };
        let source = |r: (Option<(Age, AgeSource)>, Vec<String>)| r.0.map(|(_, s)| s);
        assert_eq!(
            source(chronological_age(Some("011Y"), Some("20130101"), Some("20240701"))),
            Some(AgeSource::FileDates)
        );
        assert_eq!(
            source(chronological_age(Some("011Y"), None, None)),
            Some(AgeSource::FilePatientAge)
        );
        assert_eq!(iso_date("20240701").as_deref(), Some("2024-07-01"));
        assert_eq!(iso_date("20241301"), None);
        // 11 y 6 m by the dates; PatientAge 011Y agrees (whole years) but is coarser.
        let (m, notes) =
            months(chronological_age(Some("011Y"), Some("20130101"), Some("20240701")));
        assert_eq!(m, Some(138.0));
        assert!(notes.is_empty(), "{notes:?}");
        // PatientAge 009Y does not fit the dates: the dates win, with a note.
        let (m, notes) =
            months(chronological_age(Some("009Y"), Some("20130101"), Some("20240701")));
        assert_eq!(m, Some(138.0));
        assert!(notes[0].contains("009Y disagrees"), "{notes:?}");
        // PatientAge alone is used as it is.
        assert_eq!(months(chronological_age(Some("011Y"), None, None)), (Some(132.0), vec![]));
        // Each unusable source says why; nothing usable, no age.
        for (stated, birth, exam, says) in [
            (None, Some("19800101"), Some("20240701"), "44.5 years"),
            (None, Some("20240801"), Some("20240701"), "after its exam date"),
            (None, Some("2013-01-01"), Some("20240701"), "not a YYYYMMDD date"),
            (Some("040Y"), None, None, "040Y (40.0 years) is outside"),
            (Some("10Y"), None, None, "not a DICOM age string"),
        ] {
            let (m, notes) = months(chronological_age(stated, birth, exam));
            assert_eq!(m, None);
            assert!(notes.len() == 1 && notes[0].contains(says), "{notes:?}");
        }
    }

    #[test]
    fn dicom_magic() {
        let mut b = vec![0u8; 132];
        assert!(!is_dicom(&b));
        b[128..132].copy_from_slice(b"DICM");
        assert!(is_dicom(&b));
    }
}
