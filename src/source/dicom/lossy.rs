//! Whether the pixels have been through lossy compression, from what the file says.
//!
//! Lossy compression moves readings: in the robustness measurements (models/README.md) a
//! JPEG copy at quality 85 moved the 5-view reading by 4.2 months on average and some by
//! five years, and lossy JPEG 2000, JPEG XL and 12-bit JPEG copies of one radiograph moved
//! it by 1 to 10 months. The standard asks viewers to show that an image was compressed
//! lossily (Lossy Image Compression, PS3.3 C.7.6.1.1.5), so the reading says so too, and
//! says what to ask for instead. Evidence, first found wins:
//! 1. Lossy Image Compression (0028,2110) is 01: this survives decompression, so it also
//!    marks a native file made from a lossy one;
//! 2. a transfer syntax that is always lossy (JPEG Baseline and Extended);
//! 3. for syntaxes that may be either, the codestream itself: the irreversible 9-7
//!    wavelet in JPEG 2000, NEAR above 0 in JPEG-LS, the XYB or VarDCT mode of JPEG XL,
//!    and a JPEG XL that re-packs a JPEG.
//!
//! A writer that compressed lossily with the reversible wavelet and left the tag out is
//! not caught: nothing in the file tells that apart from a lossless one.

use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;

use crate::source::lossy as shared;

use super::{code, first_frame, is_jpeg2000, native, text};

/// The warning for a reading of an image that has been through lossy compression, or
/// `None` when the file gives no sign of it.
pub(super) fn note(obj: &InMemDicomObject, transfer_syntax: &str) -> Option<String> {
    evidence(obj, transfer_syntax).map(|how| shared::note(&how))
}

/// What shows the compression was lossy, in words for the reader.
fn evidence(obj: &InMemDicomObject, ts: &str) -> Option<String> {
    if code(obj, tags::LOSSY_IMAGE_COMPRESSION).as_deref() == Some("01") {
        return Some(header_evidence(obj));
    }
    match ts {
        uids::JPEG_BASELINE8_BIT | uids::JPEG_EXTENDED12_BIT => {
            let name = if ts == uids::JPEG_BASELINE8_BIT { "Baseline" } else { "Extended" };
            let quality = first_frame(obj)
                .and_then(|frame| shared::jpeg_header(&frame)?.quality)
                .map(|q| format!(", quality about {q}"))
                .unwrap_or_default();
            return Some(format!("transfer syntax JPEG {name}, {ts}{quality}"));
        }
        native::JPEG_XL_RECOMPRESSION => {
            return Some(format!("a JPEG re-packed as JPEG XL, transfer syntax {ts}"))
        }
        _ => {}
    }
    let stream = first_frame(obj)?;
    if is_jpeg2000(ts) {
        (jpeg2000_transform(&stream)? == IRREVERSIBLE_9_7)
            .then(|| "JPEG 2000 with the irreversible 9-7 wavelet".to_string())
    } else if ts == uids::JPEGLS_NEAR_LOSSLESS {
        jpegls_near(&stream)
            .filter(|&near| near > 0)
            .map(|near| format!("near-lossless JPEG-LS, NEAR {near}"))
    } else if ts == native::JPEG_XL {
        jpeg_xl_lossy_mode(&stream).map(|mode| format!("JPEG XL in its {mode} mode"))
    } else {
        None
    }
}

/// Lossy Image Compression is 01: the method and ratio, where the file gives them.
fn header_evidence(obj: &InMemDicomObject) -> String {
    let mut how = "Lossy Image Compression 01".to_string();
    if let Some(method) = code(obj, tags::LOSSY_IMAGE_COMPRESSION_METHOD) {
        // One value per lossy step, when it was compressed more than once.
        let methods: Vec<String> = method
            .split('\\')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| match method_name(m) {
                Some(name) => format!("{m} ({name})"),
                None => m.to_string(),
            })
            .collect();
        if !methods.is_empty() {
            how.push_str(&format!(", method {}", methods.join(" then ")));
        }
    }
    if let Some(ratio) = text(obj, tags::LOSSY_IMAGE_COMPRESSION_RATIO) {
        // One value per lossy step, each against the image it compressed; a value under 1
        // is a writer's error (the inverse), not a ratio, and is left out.
        let ratios: Vec<String> = ratio
            .split('\\')
            .filter_map(|r| r.trim().parse::<f64>().ok())
            .filter(|r| *r >= 1.0)
            .map(|r| if r < 10.0 { format!("{r:.1}:1") } else { format!("{r:.0}:1") })
            .collect();
        if !ratios.is_empty() {
            how.push_str(&format!(", ratio {}", ratios.join(" then ")));
        }
    }
    how
}

/// The defined terms of Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1).
fn method_name(method: &str) -> Option<&'static str> {
    Some(match method {
        "ISO_10918_1" => "JPEG",
        "ISO_14495_1" => "JPEG-LS near-lossless",
        "ISO_15444_1" => "JPEG 2000",
        "ISO_15444_15" => "HTJ2K",
        "ISO_18181_1" => "JPEG XL",
        "ISO_13818_2" => "MPEG-2",
        "ISO_14496_10" => "H.264",
        "ISO_23008_2" => "HEVC",
        _ => return None,
    })
}

/// The wavelet transformation code of JPEG 2000's 9-7 irreversible filter (ISO/IEC
/// 15444-1, Table A.20); 1 is the reversible 5-3.
const IRREVERSIBLE_9_7: u8 = 0;

/// The wavelet transformation of a JPEG 2000 codestream, from the COD segment of its
/// main header (ISO/IEC 15444-1, A.6.1): the segments from SOC up to the first tile.
fn jpeg2000_transform(codestream: &[u8]) -> Option<u8> {
    const SOC: u16 = 0xFF4F;
    const COD: u16 = 0xFF52;
    const SOT: u16 = 0xFF90;
    let at = segment(codestream, SOC, COD, Some(SOT))?;
    // After the marker: Lcod, Scod, progression, layers (2), MCT, levels, code-block width
    // and height, code-block style, then the transformation.
    codestream.get(at + 2 + 11).copied()
}

/// NEAR of a JPEG-LS scan (ISO/IEC 14495-1, C.2.3): the largest error allowed per sample,
/// 0 for lossless coding. The first scan is read; all scans of a DICOM frame share it.
fn jpegls_near(stream: &[u8]) -> Option<u8> {
    const SOI: u16 = 0xFFD8;
    const SOS: u16 = 0xFFDA;
    let at = segment(stream, SOI, SOS, None)?;
    // After the marker: Ls, Ns, a component selector and mapping table per component,
    // then NEAR.
    let components = usize::from(*stream.get(at + 4)?);
    stream.get(at + 5 + 2 * components).copied()
}

/// Where the marker segment `wanted` starts in a stream of the JPEG family that opens with
/// the marker `first`, walking the header's segments by their lengths; `None` when it does
/// not come before `last` (the first tile) or the walk meets something that is not a
/// segment.
fn segment(stream: &[u8], first: u16, wanted: u16, last: Option<u16>) -> Option<usize> {
    let be16 = |at: usize| Some(u16::from_be_bytes(stream.get(at..at + 2)?.try_into().ok()?));
    if be16(0)? != first {
        return None;
    }
    let mut at = 2;
    loop {
        let marker = be16(at)?;
        if marker == wanted {
            return Some(at);
        }
        let length = usize::from(be16(at + 2)?);
        if Some(marker) == last || marker & 0xFF00 != 0xFF00 || length < 2 {
            return None;
        }
        at += 2 + length;
    }
}

/// "XYB" or "VarDCT" when a JPEG XL codestream is coded in a mode that is always lossy.
#[cfg(feature = "jpegxl")]
fn jpeg_xl_lossy_mode(stream: &[u8]) -> Option<&'static str> {
    let image = jxl_oxide::JxlImage::builder().read(std::io::Cursor::new(stream)).ok()?;
    if image.image_header().metadata.xyb_encoded {
        return Some("XYB");
    }
    let vardct = (0..image.num_loaded_keyframes()).any(|i| {
        image.frame_header(i).is_some_and(|h| h.encoding == jxl_oxide::frame::Encoding::VarDct)
    });
    vardct.then_some("VarDCT")
}

/// Builds without the JPEG XL decoder refuse these files before this is asked.
#[cfg(not(feature = "jpegxl"))]
fn jpeg_xl_lossy_mode(_stream: &[u8]) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> dicom_object::DefaultDicomObject {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dicom")
            .join(name);
        dicom_object::open_file(&path).unwrap()
    }

    fn syntax(obj: &dicom_object::DefaultDicomObject) -> String {
        obj.meta().transfer_syntax().trim_end_matches('\0').to_string()
    }

    /// Lossless fixtures give no note; lossy ones give one from their header, and from
    /// their codestream or syntax alone once the header's flag is taken away (as some
    /// writers leave it out).
    #[test]
    fn lossy_fixtures_are_recognised_with_and_without_the_header_flag() {
        for name in ["j2k-lossless.dcm", "htj2k-lossless.dcm", "jls-lossless.dcm"]
            .into_iter()
            .chain(cfg!(feature = "jpegxl").then_some("jxl-lossless.dcm"))
        {
            let obj = fixture(name);
            assert_eq!(note(&obj, &syntax(&obj)), None, "{name}");
        }
        // Read, not merely absent: the lossless streams carry the lossless codes.
        let stream = |name| first_frame(&fixture(name)).unwrap().into_owned();
        assert_eq!(jpeg2000_transform(&stream("j2k-lossless.dcm")), Some(1));
        assert_eq!(jpeg2000_transform(&stream("htj2k-lossless.dcm")), Some(1));
        assert_eq!(jpegls_near(&stream("jls-lossless.dcm")), Some(0));
        let lossy = [
            ("j2k-lossy-mono1.dcm", "irreversible 9-7 wavelet"),
            ("jls-near-mono1.dcm", "NEAR 3"),
            ("jpeg12-lossy.dcm", "JPEG Extended, 1.2.840.10008.1.2.4.51, quality about 90"),
        ];
        let xyb = cfg!(feature = "jpegxl").then_some(("jxl-lossy-mono1.dcm", "XYB mode"));
        for (name, without_flag) in lossy.into_iter().chain(xyb) {
            let mut obj = fixture(name);
            let ts = syntax(&obj);
            let flagged = note(&obj, &ts).unwrap_or_default();
            assert!(flagged.contains("Lossy Image Compression 01"), "{name}: {flagged}");
            assert!(flagged.contains("ask for the original"), "{name}: {flagged}");
            obj.remove_element(tags::LOSSY_IMAGE_COMPRESSION);
            let found = note(&obj, &ts).unwrap_or_default();
            assert!(found.contains(without_flag), "{name}: {found}");
        }
    }

    /// Method and ratio are named as the file gives them, each step of a file compressed
    /// twice, and a ratio under 1 (a writer's error) is left out.
    #[test]
    fn header_method_and_ratio_are_shown() {
        let mut obj = fixture("jls-lossless.dcm");
        let put = |obj: &mut dicom_object::DefaultDicomObject, tag, vr, value: &str| {
            obj.put(dicom_core::DataElement::new(tag, vr, dicom_core::PrimitiveValue::from(value)));
        };
        use dicom_core::VR;
        put(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01");
        put(&mut obj, tags::LOSSY_IMAGE_COMPRESSION_METHOD, VR::CS, "ISO_10918_1\\ISO_15444_1");
        put(&mut obj, tags::LOSSY_IMAGE_COMPRESSION_RATIO, VR::DS, "15.51\\2.5\\0.08");
        let ts = syntax(&obj);
        let shown = note(&obj, &ts).unwrap_or_default();
        assert!(
            shown.contains(
                "method ISO_10918_1 (JPEG) then ISO_15444_1 (JPEG 2000), ratio 16:1 then 2.5:1)"
            ),
            "{shown}"
        );
        // 00 says it was never lossy: the lossless stream agrees, so no note.
        put(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        assert_eq!(note(&obj, &ts), None);
    }

    /// Truncated or foreign streams give no evidence rather than a panic or a wrong one.
    #[test]
    fn codestream_parsers_stop_at_damage() {
        for stream in [&[][..], &[0xFF, 0x4F], &[0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x00], &[0u8; 64]] {
            assert_eq!(jpeg2000_transform(stream), None);
            assert_eq!(jpegls_near(stream), None);
        }
        assert_eq!(jpegls_near(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08, 0x01]), None);
        assert_eq!(
            jpegls_near(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x02]),
            Some(2)
        );
    }
}
