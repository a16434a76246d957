//! JPEG-LS pixel data (lossless and near-lossless), which the dicom-rs adapters decode
//! only through the CharLS C++ library: decoded here with `pure_jpegls` (pure Rust, so the
//! ARM builds still need no C++ cross compiler) and put back as native pixel data, so that
//! rescale, windows, LUTs, padding and shutters go through the same path as any other file.

use std::borrow::Cow;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::DefaultDicomObject;

use super::unsigned;

/// JPEG-LS Lossless and JPEG-LS Lossy (Near-Lossless).
pub(super) fn is_jpeg_ls(uid: &str) -> bool {
    matches!(uid, uids::JPEGLS_LOSSLESS | uids::JPEGLS_NEAR_LOSSLESS)
}

/// The object with its JPEG-LS frame decoded into native (Explicit VR Little Endian) pixel
/// data, in place so that a detector-size file is not held twice. The error says what is
/// wrong with the data; the caller names the file.
pub(super) fn to_native(mut obj: DefaultDicomObject) -> Result<DefaultDicomObject, String> {
    let int = |tag| unsigned(&obj, tag);
    let (Some(rows), Some(columns)) = (int(tags::ROWS), int(tags::COLUMNS)) else {
        return Err("Rows or Columns is missing; re-export the image".into());
    };
    let allocated = int(tags::BITS_ALLOCATED).unwrap_or(16);
    let stored = int(tags::BITS_STORED).unwrap_or(allocated);
    if int(tags::SAMPLES_PER_PIXEL).unwrap_or(1) != 1 {
        return Err("colour JPEG-LS is not supported; send the radiograph as greyscale".into());
    }
    if !matches!(allocated, 8 | 16) || stored == 0 || stored > allocated {
        return Err(format!(
            "Bits Allocated {allocated} / Bits Stored {stored} is not a JPEG-LS layout \
             (8 or 16 allocated, at most that many stored); re-export the image"
        ));
    }
    let fragments = obj
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.value().fragments())
        .filter(|f| !f.is_empty())
        .ok_or("its pixel data is not encapsulated as its transfer syntax says; re-export it")?;
    // One frame (multi-frame files are refused before this): its codestream may span
    // several fragments.
    let stream = match fragments {
        [one] => Cow::Borrowed(one.as_slice()),
        several => Cow::Owned(several.concat()),
    };
    let (values, _, _) = std::panic::catch_unwind(|| jpegls::decode(&stream, columns, rows))
        .map_err(|_| "the JPEG-LS codestream is damaged; re-export the image".to_string())?
        .map_err(|e| format!("JPEG-LS: {e}; re-export the image"))?;
    let expected = rows as usize * columns as usize;
    let largest = (1u32 << stored) - 1;
    // A near-lossless stream coded at a higher precision than Bits Stored (some encoders
    // always code 16 bits) may overshoot the top by up to NEAR (at most 255). Read as
    // native data those values would wrap round to black, so they are clamped; a
    // lossless stream, or a larger overshoot, is data that does not fit the file.
    let tolerated =
        if obj.meta().transfer_syntax().trim_end_matches('\0') == uids::JPEGLS_NEAR_LOSSLESS {
            largest + 255
        } else {
            largest
        };
    // Signed data coded at 16 bits may carry negative values sign-extended above Bits
    // Stored (all high bits set); native data keeps the stored bits only, so they are masked.
    let signed = int(tags::PIXEL_REPRESENTATION) == Some(1);
    let extended = |v: u16| signed && stored < 16 && u32::from(v) >= 0x1_0000 - (1 << (stored - 1));
    let fits = |v: u16| u32::from(v) <= tolerated || extended(v);
    if values.len() != expected || !values.iter().all(|&v| fits(v)) {
        return Err(format!(
            "the JPEG-LS codestream does not match the file's description ({columns}x{rows}, \
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
        let obj = to_native(object(uids::JPEGLS_LOSSLESS, encode(&small, 0, 8), 8, 8)).unwrap();
        assert_eq!(obj.element(tags::PIXEL_DATA).unwrap().vr(), VR::OB);
        assert_eq!(
            obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().as_ref(),
            [0, 1, 77, 128, 254, 255]
        );
        let wide = [0, 1, 4095, 2048, 3000, 17];
        let obj = to_native(object(uids::JPEGLS_LOSSLESS, encode(&wide, 0, 12), 16, 12)).unwrap();
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
        let obj = to_native(object(uids::JPEGLS_NEAR_LOSSLESS, stream, 16, 12)).unwrap();
        let clamped = native(&obj);
        assert!(
            clamped.iter().zip(top).all(|(&v, t)| v <= 4095 && v.abs_diff(t) <= 3),
            "{clamped:?}"
        );
        let over = [0, 5000, 1, 2, 3, 4];
        let e = to_native(object(uids::JPEGLS_LOSSLESS, encode(&over, 0, 16), 16, 12));
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
        assert_eq!(native(&to_native(signed).unwrap()), [0xFFF, 0x800, 0, 1, 2047, 5]);
        let unsigned = object(uids::JPEGLS_LOSSLESS, encode(&extended, 0, 16), 16, 12);
        assert!(to_native(unsigned).is_err());
    }

    #[test]
    fn unusable_layouts_and_streams_say_why() {
        let stream = encode(&[1, 2, 3, 4, 5, 6], 0, 8);
        let e = to_native(object(uids::JPEGLS_LOSSLESS, stream.clone(), 12, 12)).unwrap_err();
        assert!(e.contains("Bits Allocated 12"), "{e}");
        let mut colour = object(uids::JPEGLS_LOSSLESS, stream.clone(), 8, 8);
        colour.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16)));
        assert!(to_native(colour).unwrap_err().contains("colour JPEG-LS"));
        let e = to_native(object(uids::JPEGLS_LOSSLESS, stream[..10].to_vec(), 8, 8));
        assert!(e.unwrap_err().starts_with("JPEG-LS: "));
    }
}
