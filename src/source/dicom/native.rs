//! Pixel data the dicom-rs adapters cannot decode in pure Rust: JPEG-LS (they need the
//! CharLS C++ library), 12-bit JPEG Extended (their JPEG decoder reads 8-bit DCT data
//! only) and JPEG XL (no adapter). Decoded here with `pure_jpegls`, `libjpeg-turbo-rs`
//! and `jxl-oxide`, all pure Rust, so the ARM builds still need no C or C++ cross
//! compiler, and put back as native pixel data, so that rescale, windows, LUTs, padding
//! and shutters go through the same path as any other file.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::DefaultDicomObject;

use super::{first_frame, unsigned};

/// JPEG XL Lossless, JPEG XL JPEG Recompression and JPEG XL transfer syntaxes.
pub(super) const JPEG_XL_LOSSLESS: &str = "1.2.840.10008.1.2.4.110";
pub(super) const JPEG_XL_RECOMPRESSION: &str = "1.2.840.10008.1.2.4.111";
pub(super) const JPEG_XL: &str = "1.2.840.10008.1.2.4.112";

/// The encodings decoded here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Codec {
    JpegLs {
        near_lossless: bool,
    },
    /// JPEG Extended (Process 2 & 4) at 12 bits: a common lossy export of CR/DX units.
    Jpeg12,
    /// JPEG XL Lossless, JPEG XL JPEG Recompression and JPEG XL (lossy allowed).
    JpegXl {
        lossless: bool,
    },
}

impl Codec {
    /// The codec for a transfer syntax, when it is decoded here: JPEG-LS Lossless and
    /// Near-Lossless, and JPEG Extended with more than 8 bits stored (8-bit JPEG Extended
    /// is the library's).
    pub(super) fn for_syntax(uid: &str, bits_stored: Option<u32>) -> Option<Codec> {
        match uid {
            uids::JPEGLS_LOSSLESS => Some(Codec::JpegLs { near_lossless: false }),
            uids::JPEGLS_NEAR_LOSSLESS => Some(Codec::JpegLs { near_lossless: true }),
            uids::JPEG_EXTENDED12_BIT if bits_stored.is_some_and(|b| b > 8) => Some(Codec::Jpeg12),
            JPEG_XL_LOSSLESS if cfg!(feature = "jpegxl") => Some(Codec::JpegXl { lossless: true }),
            JPEG_XL_RECOMPRESSION | JPEG_XL if cfg!(feature = "jpegxl") => {
                Some(Codec::JpegXl { lossless: false })
            }
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Codec::JpegLs { .. } => "JPEG-LS",
            Codec::Jpeg12 => "12-bit JPEG",
            Codec::JpegXl { .. } => "JPEG XL",
        }
    }

    /// How far above the top of Bits Stored a decoded value may lie and still be coding
    /// error, to be clamped: up to NEAR (at most 255) for a near-lossless stream coded at a
    /// higher precision than Bits Stored (some encoders always code 16 bits), and as much
    /// for lossy JPEG XL; anything 12 bits hold for lossy DCT data, whose ringing may
    /// overshoot a 10-bit top; nothing for lossless data, where such a value is data that
    /// does not fit the file.
    fn tolerance(self) -> u32 {
        match self {
            Codec::JpegLs { near_lossless: true } | Codec::JpegXl { lossless: false } => 255,
            Codec::JpegLs { near_lossless: false } | Codec::JpegXl { lossless: true } => 0,
            Codec::Jpeg12 => 4095,
        }
    }

    /// The frame's samples, row by row, or what is wrong with the stream.
    fn decode(self, stream: &[u8], columns: u32, rows: u32) -> Result<Vec<u16>, String> {
        match self {
            Codec::JpegLs { .. } => jpegls::decode(stream, columns, rows)
                .map(|(values, _, _)| values)
                .map_err(|e| e.to_string()),
            Codec::Jpeg12 => {
                // Sized by the header, already checked against the pixel limit: a stream
                // that declares more is refused before anything is allocated for it.
                let limits = libjpeg_turbo_rs::DecodeLimits {
                    max_width: columns as usize,
                    max_height: rows as usize,
                    max_pixels: u64::from(columns) * u64::from(rows),
                    ..libjpeg_turbo_rs::DecodeLimits::default()
                };
                let image = libjpeg_turbo_rs::decompress_12bit_with_limits(stream, &limits)
                    .map_err(|e| e.to_string())?;
                if image.num_components != 1 {
                    return Err(format!(
                        "{} colour components; send the radiograph as greyscale",
                        image.num_components
                    ));
                }
                // Samples are 0..=4095; a negative one would be a decoder fault, and
                // becomes a value the check below refuses rather than a wrapped grey.
                Ok(image.data.into_iter().map(|v| u16::try_from(v).unwrap_or(u16::MAX)).collect())
            }
            #[cfg(feature = "jpegxl")]
            Codec::JpegXl { .. } => decode_jpeg_xl(stream, columns, rows),
            #[cfg(not(feature = "jpegxl"))]
            Codec::JpegXl { .. } => Err("this build leaves JPEG XL out".into()),
        }
    }
}

#[cfg(feature = "jpegxl")]
/// A grey JPEG XL frame as integer samples at the stream's own bit depth. jxl-oxide renders
/// to floats in 0..=1, from which integer samples of up to 16 bits come back exactly; lossy
/// (XYB) data is clamped to that range first.
fn decode_jpeg_xl(stream: &[u8], columns: u32, rows: u32) -> Result<Vec<u16>, String> {
    let image = jxl_oxide::JxlImage::builder()
        .read(std::io::Cursor::new(stream))
        .map_err(|e| e.to_string())?;
    // Before any frame is rendered: the header's size is the one checked against the
    // pixel limit.
    if (image.width(), image.height()) != (columns, rows) {
        return Err(format!(
            "the frame is {}x{}, not {columns}x{rows} as Columns and Rows say",
            image.width(),
            image.height()
        ));
    }
    if image.pixel_format() != jxl_oxide::PixelFormat::Gray {
        return Err(format!(
            "{:?} samples; send the radiograph as greyscale without alpha",
            image.pixel_format()
        ));
    }
    let bits = match image.image_header().metadata.bit_depth {
        jxl_oxide::image::BitDepth::IntegerSample { bits_per_sample } if bits_per_sample <= 16 => {
            bits_per_sample
        }
        other => {
            return Err(format!("sample format {other:?}; expected integers of 16 bits or fewer"))
        }
    };
    let top = ((1u32 << bits) - 1) as f32;
    let frame = image.render_frame(0).map_err(|e| e.to_string())?.image_all_channels();
    Ok(frame.buf().iter().map(|&v| (v.clamp(0.0, 1.0) * top).round() as u16).collect())
}

/// The object with its frame decoded by `codec` into native (Explicit VR Little Endian)
/// pixel data, in place so that a detector-size file is not held twice. The error says
/// what is wrong with the data; the caller names the file.
pub(super) fn to_native(
    mut obj: DefaultDicomObject,
    codec: Codec,
) -> Result<DefaultDicomObject, String> {
    let name = codec.name();
    let int = |tag| unsigned(&obj, tag);
    let (Some(rows), Some(columns)) = (int(tags::ROWS), int(tags::COLUMNS)) else {
        return Err("Rows or Columns is missing; re-export the image".into());
    };
    let allocated = int(tags::BITS_ALLOCATED).unwrap_or(16);
    let stored = int(tags::BITS_STORED).unwrap_or(allocated);
    if int(tags::SAMPLES_PER_PIXEL).unwrap_or(1) != 1 {
        return Err(format!("colour {name} is not supported; send the radiograph as greyscale"));
    }
    if !matches!(allocated, 8 | 16) || stored == 0 || stored > allocated {
        return Err(format!(
            "Bits Allocated {allocated} / Bits Stored {stored} is not a {name} layout \
             (8 or 16 allocated, at most that many stored); re-export the image"
        ));
    }
    let stream = first_frame(&obj)
        .ok_or("its pixel data is not encapsulated as its transfer syntax says; re-export it")?;
    let values = std::panic::catch_unwind(|| codec.decode(&stream, columns, rows))
        .map_err(|_| format!("the {name} codestream is damaged; re-export the image"))?
        .map_err(|e| format!("{name}: {e}; re-export the image"))?;
    let expected = rows as usize * columns as usize;
    let largest = (1u32 << stored) - 1;
    // Values above the top that are coding error are clamped: read as native data they
    // would wrap round to black.
    let tolerated = largest + codec.tolerance();
    // Signed data coded at 16 bits may carry negative values sign-extended above Bits
    // Stored (all high bits set); native data keeps the stored bits only, so they are masked.
    let signed = int(tags::PIXEL_REPRESENTATION) == Some(1);
    let extended = |v: u16| signed && stored < 16 && u32::from(v) >= 0x1_0000 - (1 << (stored - 1));
    let fits = |v: u16| u32::from(v) <= tolerated || extended(v);
    if values.len() != expected || !values.iter().all(|&v| fits(v)) {
        return Err(format!(
            "the {name} codestream does not match the file's description ({columns}x{rows}, \
             {stored} bits stored); re-export the image"
        ));
    }
    let values: Vec<u16> = values
        .into_iter()
        .map(|v| if extended(v) { v & largest as u16 } else { v.min(largest as u16) })
        .collect();
    let (vr, pixels) = if allocated == 8 {
        // Every value fits: checked against Bits Stored <= 8 above.
        (VR::OB, PrimitiveValue::U8(values.iter().map(|&v| v as u8).collect()))
    } else {
        (VR::OW, PrimitiveValue::U16(values.into()))
    };
    obj.put(DataElement::new(tags::PIXEL_DATA, vr, pixels));
    obj.update_meta(|meta| meta.transfer_syntax = uids::EXPLICIT_VR_LITTLE_ENDIAN.into());
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::PixelFragmentSequence;

    /// The lossless fixture with its frame replaced by `stream` and the given layout.
    fn object(syntax: &str, stream: Vec<u8>, allocated: u16, stored: u16) -> DefaultDicomObject {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom/jls-lossless.dcm");
        let mut obj = dicom_object::open_file(path).unwrap();
        obj.update_meta(|meta| meta.transfer_syntax = syntax.into());
        let fragments = PixelFragmentSequence::new_fragments(vec![stream]);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, fragments));
        obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(2u16)));
        obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(3u16)));
        obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(allocated)));
        obj.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(stored)));
        obj.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(stored - 1)));
        obj
    }

    /// [`to_native`] with the codec the object's transfer syntax and Bits Stored select.
    fn here(obj: DefaultDicomObject) -> Result<DefaultDicomObject, String> {
        let ts = obj.meta().transfer_syntax().trim_end_matches('\0').to_string();
        let codec = Codec::for_syntax(&ts, unsigned(&obj, tags::BITS_STORED)).unwrap();
        to_native(obj, codec)
    }

    fn encode(values: &[u16], near: u8, precision: u8) -> Vec<u8> {
        let mut options = jpegls::EncodeOptions::default();
        options.near = near;
        options.precision = Some(precision);
        let mut out = Vec::new();
        jpegls::encode_with_options(values, 3, 2, &options, &mut out).unwrap();
        out
    }

    fn native(obj: &DefaultDicomObject) -> Vec<u16> {
        let e = obj.element(tags::PIXEL_DATA).unwrap();
        assert_eq!(obj.meta().transfer_syntax(), uids::EXPLICIT_VR_LITTLE_ENDIAN);
        e.to_multi_int::<u16>().unwrap()
    }

    #[test]
    fn eight_and_sixteen_bit_frames_become_native_pixel_data() {
        let small = [0, 1, 77, 128, 254, 255];
        let obj = here(object(uids::JPEGLS_LOSSLESS, encode(&small, 0, 8), 8, 8)).unwrap();
        assert_eq!(obj.element(tags::PIXEL_DATA).unwrap().vr(), VR::OB);
        assert_eq!(
            obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().as_ref(),
            [0, 1, 77, 128, 254, 255]
        );
        let wide = [0, 1, 4095, 2048, 3000, 17];
        let obj = here(object(uids::JPEGLS_LOSSLESS, encode(&wide, 0, 12), 16, 12)).unwrap();
        assert_eq!(obj.element(tags::PIXEL_DATA).unwrap().vr(), VR::OW);
        assert_eq!(native(&obj), wide);
    }

    /// Values beyond Bits Stored: a near-lossless overshoot of the top is clamped, as it is
    /// within the coding error; in a lossless stream they are an error, not wrapped round.
    #[test]
    fn values_beyond_bits_stored() {
        let top = [4091, 4094, 4093, 4089, 4092, 4092];
        let stream = encode(&top, 3, 16);
        let raw = jpegls::decode(&stream, 3, 2).unwrap().0;
        assert!(raw.iter().any(|&v| v > 4095), "no overshoot to clamp: {raw:?}");
        let obj = here(object(uids::JPEGLS_NEAR_LOSSLESS, stream, 16, 12)).unwrap();
        let clamped = native(&obj);
        assert!(
            clamped.iter().zip(top).all(|(&v, t)| v <= 4095 && v.abs_diff(t) <= 3),
            "{clamped:?}"
        );
        let over = [0, 5000, 1, 2, 3, 4];
        let e = here(object(uids::JPEGLS_LOSSLESS, encode(&over, 0, 16), 16, 12));
        assert!(e.unwrap_err().contains("does not match the file's description (3x2, 12 bits"));
        // Signed: -1 and -2048 sign-extended to 16 bits are the stored patterns 0xFFF and
        // 0x800; unsigned, the same values do not fit 12 bits.
        let extended = [0xFFFF, 0xF800, 0, 1, 2047, 5];
        let mut signed = object(uids::JPEGLS_LOSSLESS, encode(&extended, 0, 16), 16, 12);
        signed.put(DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        assert_eq!(native(&here(signed).unwrap()), [0xFFF, 0x800, 0, 1, 2047, 5]);
        let unsigned = object(uids::JPEGLS_LOSSLESS, encode(&extended, 0, 16), 16, 12);
        assert!(here(unsigned).is_err());
    }

    #[test]
    fn unusable_layouts_and_streams_say_why() {
        let stream = encode(&[1, 2, 3, 4, 5, 6], 0, 8);
        let e = here(object(uids::JPEGLS_LOSSLESS, stream.clone(), 12, 12)).unwrap_err();
        assert!(e.contains("Bits Allocated 12"), "{e}");
        let mut colour = object(uids::JPEGLS_LOSSLESS, stream.clone(), 8, 8);
        colour.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16)));
        assert!(here(colour).unwrap_err().contains("colour JPEG-LS"));
        let e = here(object(uids::JPEGLS_LOSSLESS, stream[..10].to_vec(), 8, 8));
        assert!(e.unwrap_err().starts_with("JPEG-LS: "));
    }

    /// 12-bit JPEG Extended (the stream from this crate's encoder; the fixture
    /// `jpeg12.dcm` checks a stream from an independent one): decoded within the coding
    /// error, and a frame larger than the header, or in colour, is refused by size first.
    #[test]
    fn twelve_bit_jpeg_frames_become_native_pixel_data() {
        use libjpeg_turbo_rs::{compress_12bit, Subsampling};
        assert_eq!(Codec::for_syntax(uids::JPEG_EXTENDED12_BIT, Some(12)), Some(Codec::Jpeg12));
        assert_eq!(Codec::for_syntax(uids::JPEG_EXTENDED12_BIT, Some(8)), None);
        assert_eq!(Codec::for_syntax(uids::JPEG_BASELINE8_BIT, Some(12)), None);
        let (w, h) = (24usize, 16usize);
        let ramp: Vec<i16> = (0..w * h).map(|i| ((i % w) * 4095 / (w - 1)) as i16).collect();
        let stream = compress_12bit(&ramp, w, h, 1, 95, Subsampling::S444).unwrap();
        let jpeg12 = |stream: Vec<u8>| {
            let mut obj = object(uids::JPEG_EXTENDED12_BIT, stream, 16, 12);
            obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(h as u16)));
            obj.put(DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(w as u16)));
            obj
        };
        let values = native(&here(jpeg12(stream.clone())).unwrap());
        let worst = values.iter().zip(&ramp).map(|(&v, &r)| v.abs_diff(r as u16)).max();
        assert!(worst.is_some_and(|d| d <= 40), "worst difference {worst:?} of 4095");
        let larger = compress_12bit(&[0; 32 * 16], 32, 16, 1, 95, Subsampling::S444).unwrap();
        let e = here(jpeg12(larger)).unwrap_err();
        assert!(e.starts_with("12-bit JPEG: "), "{e}");
        let colour = compress_12bit(&vec![0; w * h * 3], w, h, 3, 95, Subsampling::S444).unwrap();
        assert!(here(jpeg12(colour)).unwrap_err().contains("3 colour components"));
        let e = here(jpeg12(stream[..stream.len() / 2].to_vec())).unwrap_err();
        assert!(e.starts_with("12-bit JPEG: "), "{e}");
    }

    /// A JPEG XL frame of another size than Rows and Columns say is refused before it is
    /// rendered; a damaged one is an error. (The fixtures `jxl-*.dcm` check the pixels.)
    #[test]
    #[cfg(feature = "jpegxl")]
    fn jpeg_xl_frame_must_match_the_header() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom/jxl-lossless.dcm");
        let open = || {
            let mut obj = dicom_object::open_file(path).unwrap();
            obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(50u16)));
            obj
        };
        let e = here(open()).unwrap_err();
        assert!(e.contains("the frame is 100x100, not 100x50 as Columns and Rows say"), "{e}");
        let stream = open().element(tags::PIXEL_DATA).unwrap().fragments().unwrap()[0].clone();
        let mut cut = dicom_object::open_file(path).unwrap();
        let half = PixelFragmentSequence::new_fragments(vec![stream[..stream.len() / 2].to_vec()]);
        cut.put(DataElement::new(tags::PIXEL_DATA, VR::OB, half));
        let e = here(cut).unwrap_err();
        assert!(e.starts_with("JPEG XL: ") && !e.contains("the frame is"), "{e}");
    }
}
