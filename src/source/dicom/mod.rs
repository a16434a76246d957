//! DICOM files through the dicom-rs crates.
//!
//! Pixel data: uncompressed and the encapsulated syntaxes dicom-rs decodes in pure Rust
//! (JPEG baseline and lossless, 8-bit extended, RLE, deflate, and JPEG 2000 including
//! HTJ2K through the `openjp2` port of OpenJPEG, so ARM builds need no C library), and
//! JPEG-LS lossless and near-lossless, 12-bit JPEG Extended and JPEG XL through [`native`];
//! video syntaxes are refused by name.
//! Rescale slope/intercept and the first VOI LUT or window in the file are applied,
//! MONOCHROME1 (and MONOCHROME2 with Presentation LUT Shape INVERSE) is inverted so bone is
//! bright, then the result is scaled to `[0, 1]` with 16-bit precision. Files the library
//! would decode but show wrongly are refused first ([`presentation`]).
//! A header that names another modality or body part is refused, and a right-side marker
//! becomes a note ([`subject`]), and so does lossy compression ([`lossy`]).
//! Patient facts: PatientSex, the age (PatientBirthDate vs StudyDate/AcquisitionDate/
//! ContentDate, else PatientAge), PatientID and AccessionNumber (held to the rules typed
//! ids meet), when present; tags present but unusable, or changed, become notes on the
//! reading.

use std::borrow::Cow;
use std::path::Path;

use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    ConvertOptions, DecodedPixelData, ModalityLutOption, PixelDecoder, Rescale, VoiLutOption,
    WindowLevel,
};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

mod lengths;
mod lossy;
mod mask;
mod native;
mod subject;

use mask::{Padding, Shutter};

use super::{raster, GrayImage, PatientInfo, Radiograph, SourceError, SourceErrorKind};
use crate::report::{
    iso_date, months_between_dates, Age, AgeSource, Sex, MAX_AGE_MONTHS, MAX_EXAM_ID_CHARS,
};

/// How a DICOM file begins: as Part 10 says, "DICM" and the file meta after a 128-byte
/// preamble (or, from some writers, with no preamble), or as a bare data set with no file
/// meta at all, as older systems and ACR-NEMA-era exports write. A bare data set is
/// recognised by its first element, in group 0008, in little endian; its transfer syntax
/// is then Explicit VR when a VR follows the tag, else Implicit VR (the DICOM default).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Part10 {
        meta_at: usize,
    },
    Bare {
        explicit_vr: bool,
    },
    /// Explicit VR Big Endian, retired in 2006: recognised only to say so.
    BareBigEndian,
}

fn layout(bytes: &[u8]) -> Option<Layout> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Some(Layout::Part10 { meta_at: 128 })
    } else if bytes.starts_with(b"DICM") {
        Some(Layout::Part10 { meta_at: 0 })
    } else if bytes.len() >= 8 && bytes[..2] == [0x08, 0x00] && bytes[3] == 0 {
        let explicit_vr = bytes[4..6].iter().all(u8::is_ascii_uppercase);
        Some(Layout::Bare { explicit_vr })
    } else if bytes.len() >= 8 && bytes[..3] == [0x00, 0x08, 0x00] {
        Some(Layout::BareBigEndian)
    } else {
        None
    }
}

pub(super) fn is_dicom(bytes: &[u8]) -> bool {
    layout(bytes).is_some()
}

/// The DICOM object in `bytes`, with file meta (made up for a bare data set: its transfer
/// syntax as guessed, its SOP class and instance as the data set says; and so for a Part 10
/// file whose file meta the library refuses while its data set is sound).
fn open(bytes: &[u8]) -> Result<DefaultDicomObject, String> {
    let damaged = |lengths::Damaged(why)| why;
    match layout(bytes) {
        Some(Layout::Part10 { meta_at }) => {
            let data_set = lengths::check_part10(bytes, meta_at).map_err(damaged)?;
            match OpenFileOptions::new().from_reader(&bytes[meta_at..]) {
                Ok(obj) => Ok(obj),
                Err(e @ dicom_object::ReadError::ParseMetaDataSet { .. }) => {
                    read_past_meta(bytes, data_set, &e)
                }
                Err(e) => {
                    // Padding after the pixel data (zeros some writers append) is not an
                    // element the parser can read; the image before it is whole.
                    let end = data_set.and_then(|d| d.pixel_end).filter(|&end| end < bytes.len());
                    if let Some(obj) = end.and_then(|end| {
                        OpenFileOptions::new().from_reader(&bytes[meta_at..end]).ok()
                    }) {
                        let left = bytes.len() - end.unwrap_or_default();
                        log::warn!(
                            "{left} bytes after the pixel data could not be read and were left out"
                        );
                        return Ok(obj);
                    }
                    Err(format!(
                        "cannot parse: {}; the file is damaged or not standard DICOM: copy or \
                         export it again",
                        causes(&e)
                    ))
                }
            }
        }
        Some(Layout::Bare { explicit_vr }) => {
            lengths::check_bare(bytes, explicit_vr).map_err(damaged)?;
            let uid = if explicit_vr {
                uids::EXPLICIT_VR_LITTLE_ENDIAN
            } else {
                uids::IMPLICIT_VR_LITTLE_ENDIAN
            };
            let ts = TransferSyntaxRegistry.get(uid).ok_or("no transfer syntax")?;
            let obj = InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| {
                format!(
                    "cannot parse this DICOM data set without file meta (read as {}): {}; \
                     export it as a DICOM Part 10 file",
                    ts.name(),
                    causes(&e)
                )
            })?;
            with_made_up_meta(obj, uid)
                .map_err(|e| format!("cannot use this DICOM data set without file meta: {e}"))
        }
        Some(Layout::BareBigEndian) => Err("it is a big-endian DICOM data set without file \
                                             meta (a retired encoding); export it as a DICOM \
                                             Part 10 file in Explicit VR Little Endian"
            .into()),
        None => Err("not a DICOM file".into()),
    }
}

/// A Part 10 file whose file meta the library refuses (a value longer than its VR allows,
/// Group Length missing, an empty version, as some writers make them): its data set read
/// from where the length check found it, in the transfer syntax the meta names. When that
/// fails too, the error names the meta's fault and how to mend it.
fn read_past_meta(
    bytes: &[u8],
    data_set: Option<lengths::DataSet>,
    meta_error: &dicom_object::ReadError,
) -> Result<DefaultDicomObject, String> {
    let refused = || {
        format!(
            "its file meta (group 0002) is malformed ({}); export the file again, or rewrite \
             its file meta, e.g. `dcmconv IN.dcm OUT.dcm` (DCMTK)",
            causes(meta_error)
        )
    };
    let Some(lengths::DataSet { at, syntax, .. }) = data_set else { return Err(refused()) };
    let Some(ts) = TransferSyntaxRegistry.get(&syntax) else { return Err(refused()) };
    let obj = bytes
        .get(at..)
        .and_then(|rest| InMemDicomObject::read_dataset_with_ts(rest, ts).ok())
        .ok_or_else(refused)?;
    log::warn!(
        "file meta malformed ({}); its data set was read as {}",
        causes(meta_error),
        ts.name()
    );
    with_made_up_meta(obj, ts.uid()).map_err(|_| refused())
}

/// A data set with file meta made up from it: `syntax`, and the SOP class and instance
/// the data set names.
fn with_made_up_meta(
    obj: InMemDicomObject,
    syntax: &str,
) -> Result<DefaultDicomObject, dicom_object::WithMetaError> {
    let sop_class = text(&obj, tags::SOP_CLASS_UID).unwrap_or_default();
    let sop_instance = text(&obj, tags::SOP_INSTANCE_UID).unwrap_or_default();
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(syntax)
            .media_storage_sop_class_uid(sop_class)
            .media_storage_sop_instance_uid(sop_instance),
    )
}

pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<Radiograph, SourceError> {
    let dicom_err = error_for(path);
    let obj = open(bytes).map_err(dicom_err)?;
    let subject_notes = subject::check(&obj).map_err(dicom_err)?;
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(dicom_err("no pixel data (is this a report or structured document?)".into()));
    }
    if let (Some(rows), Some(cols)) = (unsigned(&obj, tags::ROWS), unsigned(&obj, tags::COLUMNS)) {
        raster::check_pixels(path, cols, rows)?;
    }
    let presentation = presentation(&obj).map_err(dicom_err)?;
    let shutter = Shutter::read(&obj).map_err(dicom_err)?;
    let signed = unsigned(&obj, tags::PIXEL_REPRESENTATION) == Some(1);
    let padding = Padding::read(&obj, signed).map_err(dicom_err)?;
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
    if let Some(name) = undecodable_syntax(&ts) {
        return Err(dicom_err(format!(
            "its pixel data is encoded as {name} (transfer syntax {ts}), which this program \
             cannot decode; ask the sender for Explicit VR Little Endian, JPEG Lossless, \
             JPEG-LS Lossless or JPEG 2000 Lossless (1.2.840.10008.1.2.4.90), or convert the \
             file (e.g. `gdcmconv --raw IN.dcm OUT.dcm`)"
        )));
    }
    check_frame_size(&obj, &ts).map_err(dicom_err)?;
    // Subsampled colour stored uncompressed: the pixel library sizes its frames as if it
    // were not subsampled and fails with "Frame #0 is out of range", which names nothing.
    let photometric = text(&obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if photometric.starts_with("YBR_") && photometric.ends_with("_422") && !is_compressed(&ts) {
        return Err(dicom_err(format!(
            "it is a colour image ({photometric}, uncompressed), which this program does not \
             convert; a radiograph is grey: export it as greyscale (MONOCHROME2)"
        )));
    }
    // Read before the frame is decoded in place: the codestream is part of the evidence.
    let lossy_note = lossy::note(&obj, &ts);
    let obj = match native::Codec::for_syntax(&ts, unsigned(&obj, tags::BITS_STORED)) {
        Some(codec) => native::to_native(obj, codec).map_err(|e| {
            dicom_err(format!("cannot decode pixel data (transfer syntax {ts}): {e}"))
        })?,
        None => obj,
    };
    // The library's adapters index by the header's sizes; a file whose data disagrees
    // must cost this one file, not the batch.
    let decode = || obj.decode_pixel_data();
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .map_err(|_| {
            dicom_err(format!(
                "its pixel data (transfer syntax {ts}) does not match its description (Rows, \
                 Columns, Bits Stored, Samples per Pixel) or is damaged; re-export the image"
            ))
        })?
        .map_err(|e| {
            dicom_err(format!("cannot decode pixel data (transfer syntax {ts}): {}", causes(&e)))
        })?;
    let monochrome = decoded.photometric_interpretation().is_monochrome();
    let voi_lut_read = guarded(path, || Ok(decoded.voi_lut_sequence()?.is_some()))?;
    let has_voi = voi_lut_read || guarded(path, || Ok(decoded.window()?.is_some()))?;
    // The library drops a VOI LUT it cannot read (one of 65536 entries, given as 0, or an
    // output depth it does not take) without a word; the grey levels then come from the
    // window or the image's range, which can move the reading, so the reader is told.
    let voi_lut_note = (!voi_lut_read && has_items(&obj, tags::VOILUT_SEQUENCE)).then(|| {
        "the file's VOI LUT (its grey-level curve for display) could not be read and was not \
         applied; the grey levels come from its window, or from the image's range, and may \
         differ from how the modality shows it: compare the reading with the image, or \
         export it again with the LUT applied"
            .to_string()
    });
    let stored = if monochrome && (padding.is_some() || shutter.is_some() || !has_voi) {
        Some(guarded(path, || stored_values(&decoded))?)
    } else {
        None
    };
    let padded = stored.as_deref().zip(padding.filter(|_| monochrome));
    let hidden = mask::hidden(decoded.columns(), decoded.rows(), padded, shutter.as_ref());
    if hidden.as_ref().is_some_and(|h| h.iter().all(|&h| h)) {
        return Err(dicom_err(
            "its pixel padding and display shutter leave no pixel of the image to read; \
             export it again without them"
                .into(),
        ));
    }
    let voi = match &stored {
        Some(stored) if !has_voi => {
            Some(guarded(path, || visible_window(&decoded, stored, hidden.as_deref()))?)
        }
        _ => None,
    };
    // Not needed past here: the image below is as large again.
    drop(stored);
    let options = ConvertOptions::new()
        .with_voi_lut(voi.map_or(VoiLutOption::First, VoiLutOption::Custom))
        .force_16bit();
    let img = guarded(path, || decoded.to_dynamic_image_with_options(0, &options))?;
    let mut pixels =
        narrow_output(&img, decoded.bits_stored()).unwrap_or_else(|| raster::to_gray(&img));
    if presentation == Presentation::Inverse {
        pixels.pixels_mut().for_each(|p| p[0] = 1.0 - p[0]);
    }
    // Background, as the hands the model learnt from lie on: never what a padded or
    // shuttered area would show after the window or an inversion.
    if let Some(hidden) = &hidden {
        pixels.pixels_mut().zip(hidden).filter(|(_, &h)| h).for_each(|(p, _)| p[0] = 0.0);
    }
    let info = patient_info(&obj);
    Ok(Radiograph {
        origin: path.display().to_string(),
        pixels,
        bit_depth: decoded.bits_stored() as u8,
        format: "DICOM",
        colour_fraction: raster::colour_fraction(&img),
        patient: PatientInfo {
            notes: [
                subject_notes,
                lossy_note.into_iter().collect(),
                voi_lut_note.into_iter().collect(),
                info.notes,
            ]
            .concat(),
            ..info
        },
    })
}

/// The error for a DICOM file that cannot be used, from a message that says why.
fn error_for(path: &Path) -> impl Fn(String) -> SourceError + Copy + '_ {
    move |msg| SourceError::new(path, SourceErrorKind::Dicom(msg))
}

/// Runs a pixel conversion of the library under a panic guard: it panics on some
/// malformed LUTs, and one bad file must not end a batch.
fn guarded<T>(
    path: &Path,
    convert: impl FnOnce() -> Result<T, dicom_pixeldata::Error>,
) -> Result<T, SourceError> {
    let dicom_err = error_for(path);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(convert))
        .map_err(|_| dicom_err("malformed VOI LUT or pixel description; re-export it".into()))?
        .map_err(|e| dicom_err(format!("cannot convert pixel data: {}", causes(&e))))
}

/// The stored values of the first frame, before Rescale Slope/Intercept, sign-extended
/// by Pixel Representation: what Pixel Padding Value is compared with. As `i32`, which
/// holds every value of the 8 and 16 bits the library converts, at half the memory of
/// `i64` (a 40-megapixel frame: 160 MB rather than 320).
fn stored_values(decoded: &DecodedPixelData) -> Result<Vec<i32>, dicom_pixeldata::Error> {
    let options = ConvertOptions::new()
        .with_modality_lut(ModalityLutOption::Override(Rescale::new(1.0, 0.0)))
        .with_voi_lut(VoiLutOption::Identity);
    decoded.to_vec_frame_with_options::<i32>(0, &options)
}

/// For a file with no window and no VOI LUT: a linear window from the darkest to the
/// brightest pixel that is shown. The library makes this stretch itself, but over the
/// raw 16-bit words (a negative signed value counts as a large one) and over padding and
/// the collimator area, either of which would set one end of it and squeeze the hand into
/// a few grey levels.
fn visible_window(
    decoded: &DecodedPixelData,
    stored: &[i32],
    hidden: Option<&[bool]>,
) -> Result<WindowLevel, dicom_pixeldata::Error> {
    let rescale = decoded.rescale()?.first().copied().unwrap_or(Rescale::new(1.0, 0.0));
    let hidden = hidden.into_iter().flatten().copied().chain(std::iter::repeat(false));
    let (lo, hi) = stored
        .iter()
        .zip(hidden)
        .filter(|&(_, h)| !h)
        .map(|(&v, _)| rescale.apply(f64::from(v)))
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    Ok(WindowLevel { width: (hi - lo).max(1.0), center: (lo + hi) / 2.0 })
}

/// How the decoded grey values are to be shown, beyond what the pixel library applies.
#[derive(Debug, PartialEq, Eq)]
enum Presentation {
    AsDecoded,
    /// MONOCHROME2 with Presentation LUT Shape INVERSE: bone would come out dark.
    Inverse,
}

/// Refuses what the pixel library would decode silently but wrongly: raw detector data,
/// several frames, palette colour, LUTs it does not apply, data not in the low bits; and
/// says whether the image must be inverted for display. The message says what to send
/// instead.
fn presentation(obj: &InMemDicomObject) -> Result<Presentation, String> {
    let value = |tag| code(obj, tag);
    let int = |tag| obj.element_opt(tag).ok().flatten().and_then(|e| e.to_int::<i64>().ok());
    // An empty sequence (some converters and anonymisers write them) applies nothing.
    let has_items = |tag| {
        obj.element_opt(tag).ok().flatten().and_then(|e| e.items()).is_some_and(|i| !i.is_empty())
    };
    let sop_class = value(tags::SOP_CLASS_UID).unwrap_or_default();
    if FOR_PROCESSING_CLASSES.contains(&sop_class.as_str())
        || value(tags::PRESENTATION_INTENT_TYPE).as_deref() == Some("FOR PROCESSING")
    {
        return Err("this is raw detector data (\"FOR PROCESSING\"), not an image for viewing; \
                    send the FOR PRESENTATION image of this exam (the one the PACS shows)"
            .into());
    }
    if let Some(frames) = int(tags::NUMBER_OF_FRAMES).filter(|&n| n > 1) {
        return Err(format!(
            "it holds {frames} frames; send a single image of the hand (one frame per file)"
        ));
    }
    let photometric = value(tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if photometric == "PALETTE COLOR" {
        return Err("it is a palette-colour image; export the radiograph as greyscale \
                    (MONOCHROME2)"
            .into());
    }
    for (tag, what) in [
        (tags::MODALITY_LUT_SEQUENCE, "a Modality LUT Sequence"),
        (tags::PRESENTATION_LUT_SEQUENCE, "a Presentation LUT Sequence"),
    ] {
        if has_items(tag) {
            return Err(format!(
                "it has {what}, which this program does not apply (its grey levels would be \
                 wrong); export it with rescale slope/intercept and a window instead"
            ));
        }
    }
    if let (Some(stored), Some(high)) = (int(tags::BITS_STORED), int(tags::HIGH_BIT)) {
        let usual = stored.saturating_sub(1);
        if high != usual {
            return Err(format!(
                "its {stored} stored bits end at bit {high}, not at bit {usual}, a layout this \
                 program does not decode; export it again (any current PACS writes the usual \
                 layout)"
            ));
        }
    }
    // MONOCHROME1 is inverted by the pixel library, and INVERSE is what the DX standard
    // requires with it, not a second inversion.
    let inverse = value(tags::PRESENTATION_LUT_SHAPE).as_deref() == Some("INVERSE");
    Ok(if inverse && photometric == "MONOCHROME2" {
        Presentation::Inverse
    } else {
        Presentation::AsDecoded
    })
}

/// SOP classes of raw detector data (DX, mammography, intra-oral: "For Processing").
const FOR_PROCESSING_CLASSES: [&str; 3] = [
    "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.1.3.1",
];

/// The name of a compressed transfer syntax this build cannot decode (video, and JPEG XL
/// where the `jpegxl` feature is left out), so that the error says what the file is and
/// what to ask for.
fn undecodable_syntax(uid: &str) -> Option<&'static str> {
    let video = |first: u32, last: u32| {
        uid.strip_prefix("1.2.840.10008.1.2.4.")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (first..=last).contains(&n))
    };
    if matches!(uid, native::JPEG_XL_LOSSLESS | native::JPEG_XL_RECOMPRESSION | native::JPEG_XL)
        && !cfg!(feature = "jpegxl")
    {
        Some("JPEG XL (left out of this size-first build)")
    } else if video(100, 101) {
        Some("MPEG-2 video")
    } else if video(102, 106) {
        Some("MPEG-4 AVC/H.264 video")
    } else if video(107, 108) {
        Some("HEVC/H.265 video")
    } else {
        None
    }
}

/// Whether pixel data in this transfer syntax is encapsulated (compressed), as the
/// registry says (Deflated is not: its pixels are native once inflated); a syntax the
/// registry does not know is taken as compressed.
fn is_compressed(uid: &str) -> bool {
    TransferSyntaxRegistry.get(uid).is_none_or(|ts| ts.is_encapsulated_pixel_data())
}

/// JPEG 2000 transfer syntaxes (Part 1, Part 2, HTJ2K).
fn is_jpeg2000(uid: &str) -> bool {
    matches!(
        uid,
        "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.92"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203"
    )
}

/// JPEG transfer syntaxes (ISO/IEC 10918-1: Baseline, Extended, the retired processes,
/// Lossless).
fn is_jpeg(uid: &str) -> bool {
    uid.strip_prefix("1.2.840.10008.1.2.4.")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (50..=66).contains(&n) || n == 70)
}

/// Refuses a compressed frame whose size or component count differs from Rows, Columns
/// and Samples per Pixel, where the pixel library decodes it: its JPEG 2000 adapter sizes
/// its buffer by the header and writes the frame past it; its JPEG one decodes whatever
/// size the frame header says (65000x65000 patched into a 3 kB file took 4 GB and 28 s
/// before failing) and a smaller frame comes out with black lines. The codecs of
/// [`native`] (JPEG-LS, 12-bit JPEG, JPEG XL) check their frames as they decode them.
fn check_frame_size(obj: &InMemDicomObject, ts: &str) -> Result<(), String> {
    let (name, (width, height, components)) = if is_jpeg2000(ts) {
        let Some(first) = obj
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .and_then(|e| e.value().fragments())
            .and_then(|f| f.first())
        else {
            return Ok(());
        };
        let Some(size) = jpeg2000_size(first) else {
            return Ok(()); // Not a bare codestream (a JP2 wrapper): left to the decoder.
        };
        ("JPEG 2000", size)
    } else if is_jpeg(ts)
        && native::Codec::for_syntax(ts, unsigned(obj, tags::BITS_STORED)).is_none()
    {
        let Some(frame) = first_frame(obj) else {
            return Ok(()); // Not encapsulated: the library says so.
        };
        let Some(header) = crate::source::lossy::jpeg_header(&frame) else {
            return Err("its JPEG data has no frame header before its first scan (it is \
                        damaged, or not JPEG); re-export the image"
                .into());
        };
        let size = (header.width.into(), header.height.into(), header.components.into());
        ("JPEG", size)
    } else {
        return Ok(());
    };
    let get = |tag| unsigned(obj, tag);
    let header = (get(tags::COLUMNS), get(tags::ROWS), get(tags::SAMPLES_PER_PIXEL));
    if header == (Some(width), Some(height), Some(u32::from(components))) {
        return Ok(());
    }
    let shown = |v: Option<u32>| v.map_or("missing".to_string(), |v| v.to_string());
    Err(format!(
        "its {name} data is {width}x{height} with {components} component(s), but Columns, \
         Rows and Samples per Pixel say {}x{} with {}; the file is inconsistent, re-export it",
        shown(header.0),
        shown(header.1),
        shown(header.2)
    ))
}

/// Width, height and component count from a JPEG 2000 codestream's SIZ segment, which
/// must follow its SOC marker (ISO/IEC 15444-1, A.5.1).
fn jpeg2000_size(codestream: &[u8]) -> Option<(u32, u32, u16)> {
    if codestream.get(..4)? != [0xFF, 0x4F, 0xFF, 0x51] {
        return None;
    }
    let be32 = |at: usize| Some(u32::from_be_bytes(codestream.get(at..at + 4)?.try_into().ok()?));
    let (x, y, x0, y0) = (be32(8)?, be32(12)?, be32(16)?, be32(20)?);
    let components = u16::from_be_bytes(codestream.get(40..42)?.try_into().ok()?);
    Some((x.checked_sub(x0)?, y.checked_sub(y0)?, components))
}

/// The decoded image read on its 256 values, when 8 bits or fewer are stored in 16
/// allocated: the library's window or LUT output then spans only 0-255 (MONOCHROME1:
/// 65280-65535, inverted on 16 bits) though the image is 16-bit, and read on 0-65535 it
/// was near black (or white) and refused as uniform. `None` for every other image.
fn narrow_output(img: &image::DynamicImage, bits_stored: u16) -> Option<GrayImage> {
    let image::DynamicImage::ImageLuma16(g) = img else { return None };
    if bits_stored > 8 {
        return None;
    }
    let (lo, hi) = g.pixels().fold((u16::MAX, 0), |(lo, hi), p| (lo.min(p[0]), hi.max(p[0])));
    let base = match (lo, hi) {
        (_, 0..=255) => 0.0,
        (65280.., _) => 65280.0,
        _ => return None,
    };
    Some(GrayImage::from_fn(g.width(), g.height(), |x, y| {
        image::Luma([(f32::from(g.get_pixel(x, y)[0]) - base) / 255.0])
    }))
}

/// Whether `tag` is a sequence with at least one item.
fn has_items(obj: &InMemDicomObject, tag: dicom_object::Tag) -> bool {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items().map(|items| !items.is_empty()))
        .unwrap_or(false)
}

/// An error with the causes behind it, which the library's top-level message leaves out.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// An unsigned integer element (Rows, Bits Stored, ...), if present and readable.
fn unsigned(obj: &InMemDicomObject, tag: dicom_object::Tag) -> Option<u32> {
    obj.element_opt(tag).ok().flatten()?.to_int::<u32>().ok()
}

fn text(obj: &InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let value = obj.element_opt(tag).ok().flatten()?.to_str().ok()?;
    let value = value.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string();
    (!value.is_empty()).then_some(value)
}

/// The first frame's codestream: its fragments joined when it spans several (one frame
/// per file: multi-frame files are refused before this is asked); `None` when the pixel
/// data is not encapsulated.
fn first_frame(obj: &InMemDicomObject) -> Option<Cow<'_, [u8]>> {
    let element = obj.element_opt(tags::PIXEL_DATA).ok().flatten()?;
    match element.value().fragments()? {
        [] => None,
        [one] => Some(Cow::Borrowed(one.as_slice())),
        several => Some(Cow::Owned(several.concat())),
    }
}

/// A coded value (CS: modality, photometric interpretation, ...) in upper case, as the
/// standard writes its defined terms, so that a writer's lower case still matches.
fn code(obj: &InMemDicomObject, tag: dicom_object::Tag) -> Option<String> {
    text(obj, tag).map(|v| v.to_ascii_uppercase())
}

fn patient_info(obj: &DefaultDicomObject) -> PatientInfo {
    let sex = code(obj, tags::PATIENT_SEX).and_then(|s| match s.as_str() {
        "M" => Some(Sex::Male),
        "F" => Some(Sex::Female),
        _ => None, // "O" or anything else: unknown, the user must say
    });
    let exam = text(obj, tags::STUDY_DATE)
        .or_else(|| text(obj, tags::ACQUISITION_DATE))
        .or_else(|| text(obj, tags::CONTENT_DATE));
    let stated = text(obj, tags::PATIENT_AGE);
    let (age, mut notes) = chronological_age(
        stated.as_deref(),
        text(obj, tags::PATIENT_BIRTH_DATE).as_deref(),
        exam.as_deref(),
    );
    let age_unit_months = match (age, stated.as_deref()) {
        (Some((_, AgeSource::FilePatientAge)), Some(stated)) => age_unit_months(stated),
        _ => 0.0,
    };
    PatientInfo {
        sex,
        age: age.map(|(age, _)| age),
        age_source: age.map(|(_, source)| source),
        age_unit_months,
        exam_date: exam.as_deref().and_then(iso_date),
        patient_id: header_id(obj, tags::PATIENT_ID, "PatientID", &mut notes),
        accession: header_id(obj, tags::ACCESSION_NUMBER, "AccessionNumber", &mut notes),
        notes,
    }
}

/// An id from the header (PatientID, AccessionNumber) under the rules a typed one meets
/// ([`crate::report::parse_exam_id`]): no control characters, at most
/// [`MAX_EXAM_ID_CHARS`] characters. Control characters are dropped, an ISO 2022 escape
/// sequence whole (a character-set switch this program does not decode, which would
/// otherwise leave its ESC byte in reports, the store and on the screen), and an id too
/// long is cut; a note says so, since the id then differs from what the sending system
/// shows. One with nothing printable left is not used.
fn header_id(
    obj: &InMemDicomObject,
    tag: dicom_object::Tag,
    name: &str,
    notes: &mut Vec<String>,
) -> Option<String> {
    let value = text(obj, tag)?;
    let (mut escapes, mut controls) = (false, false);
    let mut kept = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            escapes = true;
            // ESC, intermediate bytes (0x20-0x2F), a final byte (0x30-0x7E): ISO 2022.
            while chars.next_if(|c| ('\u{20}'..='\u{2f}').contains(c)).is_some() {}
            chars.next_if(|c| ('\u{30}'..='\u{7e}').contains(c));
        } else if c.is_control() {
            controls = true;
        } else {
            kept.push(c);
        }
    }
    let long = kept.chars().count() > MAX_EXAM_ID_CHARS;
    let kept: String = kept.chars().take(MAX_EXAM_ID_CHARS).collect();
    let kept = kept.trim().to_string();
    if kept == value {
        return Some(kept);
    }
    let changes: Vec<String> = [
        escapes.then(|| {
            "ISO 2022 escape codes removed (character-set switches this program does not \
             decode)"
                .to_string()
        }),
        controls.then(|| "control characters removed".to_string()),
        long.then(|| format!("cut to its first {MAX_EXAM_ID_CHARS} characters")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let changes = changes.join(", ");
    if kept.is_empty() {
        notes.push(format!(
            "the file's {name} has no printable characters ({changes}) and was not used: give \
             the id with the request (--id) if it matters"
        ));
        return None;
    }
    notes.push(format!(
        "the file's {name} was changed to meet the rules for ids: {changes}; it reads {kept:?}, \
         which may differ from what the sending system shows: check it against the patient \
         record, or give the id with the request (--id)"
    ));
    Some(kept)
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
        if !super::fits_counted_age(d, s, age_unit_months(text)) {
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

/// The unit a PatientAge counts in, in months: 12 for `nnnY`, 1 for `nnnM`, and a
/// week's worth, rounded up, for `nnnW` and `nnnD`.
fn age_unit_months(stated: &str) -> f64 {
    match stated.as_bytes().last() {
        Some(b'Y') => 12.0,
        Some(b'M') => 1.0,
        _ => 0.25,
    }
}

/// DICOM AS value: `nnnD`, `nnnW`, `nnnM` or `nnnY`; `Some(Err(months))` when well formed
/// but outside the ages a reading covers.
fn parse_age_string(s: &str) -> Option<Result<Age, f64>> {
    // Three digits and a unit, as the Age String VR defines it; checked as bytes, since a
    // damaged value may hold a character that is not ASCII (read as Latin-1, `01µ` is four
    // bytes too, and slicing it at 3 would split that character).
    let (digits, unit) = (s.as_bytes().get(..3)?, s.get(3..)?);
    if s.len() != 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: f64 = s.get(..3)?.parse().ok()?;
    let months = match unit {
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
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn fixture(relative: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
    }

    #[test]
    fn age_strings() {
        let months = |s| parse_age_string(s).map(|r| r.map(Age::months));
        assert_eq!(months("010Y"), Some(Ok(120.0)));
        assert_eq!(months("018M"), Some(Ok(18.0)));
        assert_eq!(months("044Y"), Some(Err(528.0)));
        assert!((parse_age_string("030D").unwrap().unwrap().months() - 0.9856).abs() < 1e-3);
        assert_eq!(parse_age_string("10Y"), None);
        assert_eq!(parse_age_string("010X"), None);
        // Damaged values: not a panic, not a number.
        for damaged in ["01\u{b5}", "\u{b5}10Y", "0\u{b5}Y", "+10Y", "-10Y", " 10Y", "1.5Y", ""] {
            assert_eq!(parse_age_string(damaged), None, "{damaged:?}");
        }
    }

    /// Ids from the header meet the rules typed ids meet: an ISO 2022 escape sequence and
    /// other control characters dropped, at most 64 characters, and a note saying so; a
    /// plain id passes as it is, one with nothing printable is left out.
    #[test]
    fn header_ids_meet_the_rules_for_ids() {
        let id = |value: &str| {
            let mut o = InMemDicomObject::new_empty();
            o.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(value)));
            let mut notes = Vec::new();
            (header_id(&o, tags::PATIENT_ID, "PatientID", &mut notes), notes)
        };
        assert_eq!(id("RSNA-1381 "), (Some("RSNA-1381".into()), vec![]));
        assert_eq!(id("M\u{fc}LLER"), (Some("M\u{fc}LLER".into()), vec![]));
        // ISO 2022 IR 87 left undecoded: ESC $ B (to JIS X 0208) and ESC ( B (back).
        let (kept, notes) = id("\u{1b}$B%d%^%@\u{1b}(B01");
        assert_eq!(kept.as_deref(), Some("%d%^%@01"));
        assert!(notes.len() == 1 && notes[0].contains("PatientID was changed"), "{notes:?}");
        assert!(notes[0].contains("ISO 2022 escape codes") && notes[0].contains("--id"));
        let (kept, notes) = id("A\tB\u{7}C");
        assert_eq!(kept.as_deref(), Some("ABC"));
        assert!(notes[0].contains("ids: control characters removed; it reads"), "{notes:?}");
        let (kept, notes) = id(&"7".repeat(70));
        assert_eq!(kept, Some("7".repeat(64)));
        assert!(notes[0].contains("cut to its first 64 characters"), "{notes:?}");
        assert!(kept.is_some_and(|k| crate::report::parse_exam_id(&k).is_ok()));
        let (kept, notes) = id("\u{1b}$B\u{1b}(B");
        assert_eq!(kept, None);
        assert!(notes[0].contains("no printable characters"), "{notes:?}");
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
    fn what_would_be_shown_wrongly_is_refused_with_what_to_send() {
        let obj = |extra: &[(dicom_object::Tag, VR, &str)]| {
            let mut o = InMemDicomObject::new_empty();
            let mut put = |tag, vr, v: &str| {
                let value =
                    if v.is_empty() { PrimitiveValue::Empty } else { PrimitiveValue::from(v) };
                o.put(DataElement::new(tag, vr, value));
            };
            put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
            put(tags::BITS_STORED, VR::US, "");
            for (tag, vr, v) in extra {
                put(*tag, *vr, v);
            }
            o
        };
        assert_eq!(presentation(&obj(&[])), Ok(Presentation::AsDecoded));
        let inverse = [(tags::PRESENTATION_LUT_SHAPE, VR::CS, "INVERSE")];
        assert_eq!(presentation(&obj(&inverse)), Ok(Presentation::Inverse));
        let mono1 = [
            (tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME1"),
            (tags::PRESENTATION_LUT_SHAPE, VR::CS, "INVERSE"),
        ];
        assert_eq!(presentation(&obj(&mono1)), Ok(Presentation::AsDecoded));
        for (extra, says) in [
            ((tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.1.1.1"), "FOR PRESENTATION"),
            ((tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "PALETTE COLOR"), "greyscale"),
            ((tags::NUMBER_OF_FRAMES, VR::IS, "3"), "3 frames"),
        ] {
            let e = presentation(&obj(&[extra])).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        for (tag, says) in [
            (tags::MODALITY_LUT_SEQUENCE, "Modality LUT Sequence"),
            (tags::PRESENTATION_LUT_SEQUENCE, "Presentation LUT Sequence"),
        ] {
            // Empty, as some anonymisers leave it: nothing to apply, accepted.
            let mut o = obj(&[(tag, VR::SQ, "")]);
            assert_eq!(presentation(&o), Ok(Presentation::AsDecoded));
            let item =
                dicom_core::value::DataSetSequence::from(vec![InMemDicomObject::new_empty()]);
            o.put(DataElement::new(tag, VR::SQ, item));
            let e = presentation(&o).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let mut shifted = obj(&[]);
        shifted.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)));
        shifted.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16)));
        assert!(presentation(&shifted).unwrap_err().contains("end at bit 15"));
        assert_eq!(undecodable_syntax("1.2.840.10008.1.2.4.80"), None);
        assert_eq!(undecodable_syntax("1.2.840.10008.1.2.4.70"), None);
        assert_eq!(undecodable_syntax("1.2.840.10008.1.2.4.90"), None);
        let jpeg_xl = undecodable_syntax("1.2.840.10008.1.2.4.110");
        assert_eq!(jpeg_xl.is_none(), cfg!(feature = "jpegxl"), "{jpeg_xl:?}");
        assert_eq!(undecodable_syntax("1.2.840.10008.1.2.4.102"), Some("MPEG-4 AVC/H.264 video"));
    }

    /// A syntax this build cannot decode is refused by name, with the syntaxes to ask for.
    #[test]
    fn video_is_refused_by_name() {
        let path = fixture("dicom/jls-lossless.dcm");
        let mut obj = dicom_object::open_file(&path).unwrap();
        obj.update_meta(|meta| meta.transfer_syntax = "1.2.840.10008.1.2.4.107".into());
        let mut bytes = Vec::new();
        obj.write_all(&mut bytes).unwrap();
        let e = decode(&path, &bytes).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("as HEVC/H.265 video (transfer syntax 1.2.840.10008.1.2.4.107)"), "{e}");
        assert!(e.contains("JPEG-LS Lossless or JPEG 2000 Lossless"), "{e}");
    }

    /// The JPEG 2000 and JPEG-LS fixtures (tests/fixtures/dicom/make.py) against the PNG
    /// they were made from: the lossless ones exactly, the lossy MONOCHROME1 ones inverted
    /// back and within their compression error (JPEG 2000: 0.68 of 255 grey levels on
    /// average, measured by the script's encoder; near-lossless JPEG-LS: at most 3 of 4095
    /// per pixel, plus half a level from storing 8-bit values in 12 bits).
    #[test]
    fn compressed_pixels_match_their_source() {
        let png = image::open(fixture("val/images/1381.png")).unwrap().to_luma8();
        // The window's 16-bit output adds up to one level of 65,535 to any pixel.
        let lut = 1.0 / 65535.0;
        for (name, max_mean_error, max_error, syntax_bits) in [
            ("j2k-lossless.dcm", 1e-6, lut, 16),
            ("htj2k-lossless.dcm", 1e-6, lut, 16),
            ("j2k-lossy-mono1.dcm", 1.5 / 255.0, 1.0, 16),
            ("jls-lossless.dcm", 1e-6, lut, 16),
            ("jls-near-mono1.dcm", 3.5 / 4095.0, 3.5 / 4095.0 + lut, 12),
            // Quality 90: libjpeg-turbo (C) decodes the same stream to the same values, at
            // most 16 of 4,095 levels from the source (and the window spans 4,096).
            ("jpeg12-lossy.dcm", 3.1 / 4095.0, 16.5 / 4095.0 + lut, 12),
            ("jxl-lossless.dcm", 1e-6, lut, 16),
            // Quality 98: libjxl decodes it to within 43 of 4,095 levels of the source, 8.1 on
            // average; jxl-oxide to within one level of libjxl.
            ("jxl-lossy-mono1.dcm", 8.5 / 4095.0, 45.0 / 4095.0 + lut, 12),
        ]
        .into_iter()
        .filter(|(name, ..)| built_in(name))
        {
            let path = fixture(&format!("dicom/{name}"));
            let bytes = std::fs::read(&path).unwrap();
            let r = decode(&path, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.pixels.dimensions(), png.dimensions(), "{name}");
            assert_eq!(r.bit_depth, syntax_bits, "{name}");
            let error: f64 = r
                .pixels
                .pixels()
                .zip(png.pixels())
                .map(|(a, b)| (f64::from(a[0]) - f64::from(b[0]) / 255.0).abs())
                .sum::<f64>()
                / f64::from(png.width() * png.height());
            assert!(error <= max_mean_error, "{name}: mean error {error}");
            let worst = r
                .pixels
                .pixels()
                .zip(png.pixels())
                .map(|(a, b)| (f64::from(a[0]) - f64::from(b[0]) / 255.0).abs())
                .fold(0.0, f64::max);
            assert!(worst <= max_error + 1e-9, "{name}: worst pixel {worst}");
            assert_eq!(r.patient.patient_id.as_deref(), Some("RSNA-1381"), "{name}");
            assert_eq!(r.patient.sex, Some(Sex::Female), "{name}");
        }
    }

    /// Whether this build decodes the fixture: the JPEG XL ones need the `jpegxl` feature.
    fn built_in(name: &str) -> bool {
        cfg!(feature = "jpegxl") || !name.starts_with("jxl-")
    }

    /// A damaged codestream is at worst an error for that file, never a crash of the batch
    /// or the service: truncated, and with bytes overwritten at spread positions.
    #[test]
    fn damaged_codestream_is_an_error_not_a_panic() {
        for name in [
            "j2k-lossless.dcm",
            "htj2k-lossless.dcm",
            "jls-lossless.dcm",
            "jpeg12-lossy.dcm",
            "jxl-lossless.dcm",
        ]
        .into_iter()
        .filter(|name| built_in(name))
        {
            let path = fixture(&format!("dicom/{name}"));
            let good = std::fs::read(&path).unwrap();
            // The damage stays clear of the DICOM header (under 1,000 bytes here).
            let tail = (good.len() - 1_000).min(12_000);
            let header = good.len() - tail;
            let mut damaged = vec![good[..good.len() - tail / 2].to_vec()];
            for step in [97, 389, 1_201] {
                let mut b = good.clone();
                for i in (header..b.len()).step_by(step) {
                    b[i] = b[i].wrapping_mul(31).wrapping_add(7);
                }
                damaged.push(b);
            }
            for (i, bytes) in damaged.iter().enumerate() {
                let result = std::panic::catch_unwind(|| decode(&path, bytes).map(|_| ()));
                let result = result.unwrap_or_else(|_| panic!("{name}, damage {i}: panicked"));
                // Overwritten bytes may still decode (JPEG 2000 tolerates some damage; the
                // quality gate then judges the picture); a cut-off file is refused by its
                // fragment's length before the codestream is read.
                if i == 0 {
                    let e = result.unwrap_err().to_string();
                    assert!(e.contains("only") && e.contains("cut short"), "{e}");
                }
            }
        }
    }

    /// A codestream larger than the file's Rows/Columns say (the library's JPEG 2000
    /// adapter indexes past its buffer then) is an error that says what to do.
    #[test]
    fn jpeg2000_larger_than_its_header_is_an_error() {
        let path = fixture("dicom/j2k-lossless.dcm");
        let mut obj = dicom_object::open_file(&path).unwrap();
        obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(60u16)));
        obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(50u16)));
        let mut bytes = Vec::new();
        obj.write_all(&mut bytes).unwrap();
        let result = std::panic::catch_unwind(|| decode(&path, &bytes).map(|_| ()));
        let e = result.expect("no panic").unwrap_err().to_string();
        assert!(e.contains("100x100 with 1 component(s)") && e.contains("say 50x60 with 1"), "{e}");
        assert_eq!(jpeg2000_size(&[0xFF, 0x4F, 0xFF, 0x51, 0, 41]), None, "cut short");
    }

    /// Zeros a writer appended after the pixel data are left out, and the image read as
    /// without them (the parser failed on them: "Could not read data set token").
    #[test]
    fn padding_after_the_pixel_data_is_left_out() {
        let path = fixture("dicom/jls-lossless.dcm");
        let bytes = std::fs::read(&path).unwrap();
        let clean = decode(&path, &bytes).unwrap().pixels;
        let mut padded = bytes.clone();
        padded.extend([0u8; 1024]);
        assert_eq!(decode(&path, &padded).unwrap().pixels, clean);
    }

    /// A VOI LUT the library cannot read (65536 entries, given as 0 in its descriptor) is
    /// not applied, and the reading says so; a file without one gets no such note.
    #[test]
    fn a_voi_lut_that_cannot_be_read_is_named() {
        let path = fixture("dicom/jls-lossless.dcm");
        let note = |obj: &dicom_object::DefaultDicomObject| {
            let mut bytes = Vec::new();
            obj.write_all(&mut bytes).unwrap();
            let notes = decode(&path, &bytes).unwrap().patient.notes;
            notes.iter().any(|n| n.contains("VOI LUT (its grey-level curve"))
        };
        let mut obj = dicom_object::open_file(&path).unwrap();
        assert!(!note(&obj));
        let with_lut = |entries: u32| {
            let mut obj = obj.clone();
            let mut item = InMemDicomObject::new_empty();
            let first = u16::try_from(entries).unwrap_or(0); // 65536 is written as 0
            let descriptor = PrimitiveValue::U16([first, 0, 16].into_iter().collect());
            item.put(DataElement::new(tags::LUT_DESCRIPTOR, VR::US, descriptor));
            let data: Vec<u16> = (0..entries).rev().map(|v| (v * 65536 / entries) as u16).collect();
            item.put(DataElement::new(tags::LUT_DATA, VR::OW, PrimitiveValue::U16(data.into())));
            let sequence = dicom_core::value::DataSetSequence::from(vec![item]);
            obj.put(DataElement::new(tags::VOILUT_SEQUENCE, VR::SQ, sequence));
            obj
        };
        // One the library reads is applied, without the note.
        assert!(!note(&with_lut(4096)));
        assert!(note(&with_lut(65536)));
        obj.put(DataElement::new(tags::VOILUT_SEQUENCE, VR::SQ, PrimitiveValue::Empty));
        assert!(!note(&obj), "an empty sequence holds no LUT");
    }

    /// A JPEG frame of another size than Rows and Columns say is refused before the
    /// library decodes it (it sizes its buffers by the frame header: one patched to
    /// 65000x65000 took 4 GB), in Baseline and in Lossless alike; one that matches is read.
    #[test]
    fn jpeg_frame_must_match_its_header() {
        let path = fixture("dicom/jls-lossless.dcm");
        let jpeg = |w: u32, h: u32| {
            let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x + 2 * y) as u8]));
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
                .encode_image(&img)
                .unwrap();
            out
        };
        let file = |syntax: &str, stream: Vec<u8>| {
            let mut obj = dicom_object::open_file(&path).unwrap();
            obj.update_meta(|meta| meta.transfer_syntax = syntax.into());
            let put = |o: &mut DefaultDicomObject, tag, v: u16| {
                o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
            };
            put(&mut obj, tags::BITS_ALLOCATED, 8);
            put(&mut obj, tags::BITS_STORED, 8);
            put(&mut obj, tags::HIGH_BIT, 7);
            let fragments = dicom_core::value::PixelFragmentSequence::new_fragments(vec![stream]);
            obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, fragments));
            let mut bytes = Vec::new();
            obj.write_all(&mut bytes).unwrap();
            let result = std::panic::catch_unwind(|| decode(&path, &bytes).map(|r| r.pixels));
            result.expect("no panic").map_err(|e| e.to_string())
        };
        let pixels = file(uids::JPEG_BASELINE8_BIT, jpeg(100, 100)).unwrap();
        assert_eq!(pixels.dimensions(), (100, 100));
        let e = file(uids::JPEG_BASELINE8_BIT, jpeg(100, 88)).unwrap_err();
        assert!(
            e.contains(
                "its JPEG data is 100x88 with 1 component(s), but Columns, Rows and Samples \
                 per Pixel say 100x100 with 1"
            ),
            "{e}"
        );
        // The frame header (after SOI and the JFIF and table segments) patched to claim
        // 65000x65000.
        let mut huge = jpeg(100, 100);
        let sof = huge.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        huge[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
        let e = file(uids::JPEG_BASELINE8_BIT, huge.clone()).unwrap_err();
        assert!(e.contains("is 65000x65000 with 1 component(s)"), "{e}");
        huge[sof + 1] = 0xC3; // Lossless (process 14)
        let e = file(uids::JPEG_LOSSLESS_SV1, huge.clone()).unwrap_err();
        assert!(e.contains("is 65000x65000 with 1 component(s)"), "{e}");
        let e = file(uids::JPEG_BASELINE8_BIT, huge[..sof].to_vec()).unwrap_err();
        assert!(e.contains("no frame header before its first scan"), "{e}");
        assert!(is_jpeg(uids::JPEG_LOSSLESS) && is_jpeg(uids::JPEG_EXTENDED12_BIT));
        assert!(!is_jpeg(uids::JPEGLS_LOSSLESS) && !is_jpeg("1.2.840.10008.1.2.4.5"));
    }

    /// File meta the library refuses while the data set is sound (a value longer than its
    /// VR allows, Group Length left out, as some writers make them) is read past: the data
    /// set in the syntax the meta names. Meta that names no syntax is refused with its
    /// fault and the fix.
    #[test]
    fn malformed_file_meta_is_read_past_or_explained() {
        let path = fixture("dicom/jls-lossless.dcm");
        let mut obj = dicom_object::open_file(&path).unwrap();
        obj.update_meta(|m| m.implementation_version_name = Some("VENDOR_WRITER_V1.2.3".into()));
        let mut long = Vec::new();
        obj.write_all(&mut long).unwrap();
        assert!(
            OpenFileOptions::new().from_reader(&long[128..]).is_err(),
            "the library refuses it"
        );
        let good = std::fs::read(&path).unwrap();
        // Group Length (0002,0000) UL 4 taken out.
        let at = good.windows(6).position(|w| w == [2, 0, 0, 0, b'U', b'L']).unwrap();
        let no_group_length = [&good[..at], &good[at + 12..]].concat();
        for bytes in [long, no_group_length] {
            let r = decode(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.pixels.dimensions(), (100, 100));
            assert_eq!(r.patient.patient_id.as_deref(), Some("RSNA-1381"));
        }
        // (0002,0010) Transfer Syntax UID made (0002,0017).
        let mut no_syntax = good.clone();
        let at = good.windows(6).position(|w| w == [2, 0, 0x10, 0, b'U', b'I']).unwrap();
        no_syntax[at + 2] = 0x17;
        let e = decode(&path, &no_syntax).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("its file meta (group 0002) is malformed (Could not parse"), "{e}");
        assert!(e.contains("`dcmconv IN.dcm OUT.dcm`"), "{e}");
    }

    /// Subsampled colour stored uncompressed is refused by what it is, not by the pixel
    /// library's "Frame #0 is out of range".
    #[test]
    fn uncompressed_subsampled_colour_is_refused_by_name() {
        let path = fixture("dicom/jls-lossless.dcm");
        let mut obj = dicom_object::open_file(&path).unwrap();
        obj.update_meta(|meta| meta.transfer_syntax = uids::EXPLICIT_VR_LITTLE_ENDIAN.into());
        let put = |o: &mut DefaultDicomObject, tag, vr, v: PrimitiveValue| {
            o.put(DataElement::new(tag, vr, v));
        };
        put(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "YBR_FULL_422".into());
        put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, 3u16.into());
        put(&mut obj, tags::BITS_ALLOCATED, VR::US, 8u16.into());
        put(&mut obj, tags::BITS_STORED, VR::US, 8u16.into());
        put(&mut obj, tags::HIGH_BIT, VR::US, 7u16.into());
        put(&mut obj, tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(vec![0; 100 * 100 * 2].into()));
        let mut bytes = Vec::new();
        obj.write_all(&mut bytes).unwrap();
        let e = decode(&path, &bytes).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("colour image (YBR_FULL_422, uncompressed)"), "{e}");
        for (uid, compressed) in [
            (uids::IMPLICIT_VR_LITTLE_ENDIAN, false),
            (uids::EXPLICIT_VR_LITTLE_ENDIAN, false),
            ("1.2.840.10008.1.2.2", false), // Explicit VR Big Endian (retired)
            (uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, false),
            (uids::JPEG_BASELINE8_BIT, true),
            (uids::JPEG2000_LOSSLESS, true),
            ("1.2.840.10008.1.2.4.9999", true), // unknown: taken as compressed
        ] {
            assert_eq!(is_compressed(uid), compressed, "{uid}");
        }
    }

    #[test]
    fn dicom_magic() {
        let mut b = vec![0u8; 132];
        assert!(!is_dicom(&b));
        b[128..132].copy_from_slice(b"DICM");
        assert_eq!(layout(&b), Some(Layout::Part10 { meta_at: 128 }));
        assert_eq!(layout(&b[128..]), Some(Layout::Part10 { meta_at: 0 }));
        // (0008,0005) Specific Character Set, then its VR or its 4-byte length.
        let explicit = [0x08, 0x00, 0x05, 0x00, b'C', b'S', 10, 0];
        assert_eq!(layout(&explicit), Some(Layout::Bare { explicit_vr: true }));
        let implicit = [0x08, 0x00, 0x05, 0x00, 10, 0, 0, 0];
        assert_eq!(layout(&implicit), Some(Layout::Bare { explicit_vr: false }));
        let big_endian = [0x00, 0x08, 0x00, 0x05, b'C', b'S', 0, 10];
        assert_eq!(layout(&big_endian), Some(Layout::BareBigEndian));
        assert_eq!(layout(b"\x89PNG\r\n\x1a\n\0\0"), None);
        assert_eq!(layout(&[0x08, 0x00, 0x05, 0x00]), None, "too short to tell");
    }

    /// Damaged headers (random bytes, and lengths and tags overwritten with extreme
    /// values, in the first 1,500 bytes of every DICOM fixture) give an error or a reading,
    /// never a panic. Rounds per file: `BONEAGE_FUZZ_ROUNDS` (default 150). Run with many
    /// rounds under `/usr/bin/time -v` to see the peak memory stay small, which is what
    /// the length check (`lengths`) is for (docs/clinical-reading.md).
    #[test]
    fn damaged_headers_are_errors_not_panics() {
        let rounds: usize =
            std::env::var("BONEAGE_FUZZ_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(150);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(root.join("tests/fixtures/dicom"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .collect();
        files.push(root.join("samples/1724.dcm"));
        files.sort();
        // A fixed sequence (64-bit LCG), so that a failure can be replayed.
        let mut state: u64 = 0x1234_5678;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        let mut read = 0;
        for path in &files {
            let good = std::fs::read(path).unwrap();
            let head = good.len().min(1500);
            for round in 0..rounds {
                let mut b = good.clone();
                match round % 3 {
                    0 => {
                        for _ in 0..=next() % 4 {
                            b[next() % head] = (next() & 0xFF) as u8;
                        }
                    }
                    1 => {
                        let at = next() % (head - 4);
                        let v = [0xFFFF_FFF0u32, 0x7FFF_FFFF, 0x0100_0000, 0xFFFF][next() % 4];
                        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    }
                    _ => {
                        let at = next() % (head - 2);
                        let v = [0xFFFFu16, 0x8000, 0x0000, 0x7FFF][next() % 4];
                        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
                    }
                }
                let outcome = std::panic::catch_unwind(|| decode(path, &b).is_ok());
                let ok = outcome
                    .unwrap_or_else(|_| panic!("{}, round {round}: panicked", path.display()));
                read += usize::from(ok);
            }
        }
        // Some damage leaves the image readable (an unused tag); most does not.
        assert!(read > 0 && read < files.len() * rounds, "{read}");
    }
}
