//! DICOM files through the dicom-rs crates.
//!
//! Pixel data: uncompressed and the encapsulated syntaxes dicom-rs decodes natively (JPEG
//! baseline/extended/lossless, RLE, deflate). The modality LUT (rescale slope/intercept) and
//! the first VOI LUT or window in the file are applied, MONOCHROME1 is inverted so bone is
//! bright, then the result is scaled to `[0, 1]` with 16-bit precision.
//! Patient facts: PatientSex, PatientAge (or PatientBirthDate vs StudyDate/AcquisitionDate),
//! PatientID and AccessionNumber, when present.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutOption};

use super::{raster, PatientInfo, Radiograph, SourceError, SourceErrorKind};
use crate::report::{Age, Sex};

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
    let age = text(obj, tags::PATIENT_AGE).and_then(|s| parse_age_string(&s)).or_else(|| {
        let birth = text(obj, tags::PATIENT_BIRTH_DATE)?;
        let exam = text(obj, tags::STUDY_DATE)
            .or_else(|| text(obj, tags::ACQUISITION_DATE))
            .or_else(|| text(obj, tags::CONTENT_DATE))?;
        Age::between_dates(&birth, &exam)
    });
    PatientInfo {
        sex,
        age,
        patient_id: text(obj, tags::PATIENT_ID),
        accession: text(obj, tags::ACCESSION_NUMBER),
    }
}

/// DICOM AS value: `nnnD`, `nnnW`, `nnnM` or `nnnY`.
fn parse_age_string(s: &str) -> Option<Age> {
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
    Age::from_months(months).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_strings() {
        assert_eq!(parse_age_string("010Y").map(|a| a.months()), Some(120.0));
        assert_eq!(parse_age_string("018M").map(|a| a.months()), Some(18.0));
        assert!((parse_age_string("030D").unwrap().months() - 0.9856).abs() < 1e-3);
        assert_eq!(parse_age_string("10Y"), None);
        assert_eq!(parse_age_string("010X"), None);
    }

    #[test]
    fn dicom_magic() {
        let mut b = vec![0u8; 132];
        assert!(!is_dicom(&b));
        b[128..132].copy_from_slice(b"DICM");
        assert!(is_dicom(&b));
    }
}
