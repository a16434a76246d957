//! PNG, JPEG, TIFF and BMP through the `image` crate; 8- and 16-bit, gray or colour.

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat};

use super::{
    lossy, GrayImage, PatientInfo, Radiograph, SourceError, SourceErrorKind, COLOUR_CHROMA,
    MAX_DECODE_BYTES, MAX_PIXELS,
};

pub(super) fn decode(path: &Path, bytes: &[u8]) -> Result<Radiograph, SourceError> {
    let format = image::guess_format(bytes).map_err(|_| {
        let hint = match path.extension().and_then(|e| e.to_str()) {
            Some(ext) => format!(" (the content does not match its .{ext} name)"),
            None => String::new(),
        };
        SourceError::new(path, SourceErrorKind::UnknownFormat(hint))
    })?;
    let name = match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Bmp => "BMP",
        other => {
            let hint = format!(" (found {other:?})");
            return Err(SourceError::new(path, SourceErrorKind::UnknownFormat(hint)));
        }
    };
    let decode_err = |e: image::ImageError| {
        let reason = e.to_string();
        let kind = match e {
            image::ImageError::Unsupported(_) => {
                SourceErrorKind::Unsupported { format: name, reason }
            }
            _ => SourceErrorKind::Decode { format: name, reason },
        };
        SourceError::new(path, kind)
    };
    if format == ImageFormat::Jpeg && !has_jpeg_end(bytes) {
        // The JPEG decoder fills a cut-off scan with grey and succeeds: a copy interrupted
        // at 60% read as a plausible but wrong bone age. A whole JPEG ends with EOI.
        return Err(SourceError::new(
            path,
            SourceErrorKind::Decode {
                format: name,
                reason: "no end-of-image marker: the file is cut off (an interrupted copy?); \
                         copy it again"
                    .into(),
            },
        ));
    }
    if format == ImageFormat::Tiff {
        let pages = tiff_pages(bytes);
        if pages > 1 {
            // The decoder reads the first page and says nothing of the rest: two
            // radiographs in one file would read as whichever came first.
            return Err(SourceError::new(
                path,
                SourceErrorKind::Unsupported {
                    format: name,
                    reason: format!(
                        "the file holds {pages} or more pages (images), and a reading is of \
                         one radiograph; save the hand radiograph as a file of its own"
                    ),
                },
            ));
        }
        if tiff_has_float_samples(bytes) {
            return Err(float_refusal(path, name));
        }
    }
    // Size from the header first: a small file can declare a huge image (a PNG bomb), which
    // must be refused before any pixel memory is taken.
    let reader = || image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let (width, height) = reader().into_dimensions().map_err(decode_err)?;
    check_pixels(path, width, height)?;
    let mut reader = reader();
    reader.limits(limits_for_output());
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    // `ImageReader::decode` counts the output buffer against the limit; through a decoder
    // that is this code's job, so a huge float TIFF is still refused before allocation.
    let mut output = limits_for_output();
    output.reserve(decoder.total_bytes()).map_err(decode_err)?;
    decoder.set_limits(output).map_err(decode_err)?;
    // A camera's JPEG (or a TIFF) may be stored sideways with a tag saying how to turn it;
    // every viewer shows it upright, so must this, or the gate refuses it as turned.
    if matches!(decoder.color_type(), image::ColorType::Rgb32F | image::ColorType::Rgba32F) {
        return Err(float_refusal(path, name));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    let bit_depth = (img.color().bits_per_pixel() / u16::from(img.color().channel_count())) as u8;
    Ok(Radiograph {
        origin: path.display().to_string(),
        pixels: match &img {
            DynamicImage::ImageLuma16(g) => match significant_bits(format, bytes) {
                // The file says how many bits its values use: no guess needed. The PNG
                // standard has them scaled up to 16 bits (then / 65535 is right), but some
                // exporters store them as they are, which the largest value shows.
                Some(bits) => {
                    let max = g.pixels().map(|p| p[0]).max().unwrap_or(0);
                    gray16_scaled(g, if u32::from(max) < 1 << bits { bits } else { 16 })
                }
                None => gray16_by_bits_used(g),
            },
            other => to_gray(other),
        },
        bit_depth,
        format: name,
        colour_fraction: colour_fraction(&img),
        patient: PatientInfo {
            notes: lossy_note(format, bytes).into_iter().collect(),
            ..Default::default()
        },
    })
}

/// The lossy-compression warning for a JPEG file: a DICOM JPEG gets it from its transfer
/// syntax, and the same pixels in a `.jpg` must not read as if they were the original.
fn lossy_note(format: ImageFormat, bytes: &[u8]) -> Option<String> {
    (format == ImageFormat::Jpeg)
        .then(|| lossy::jpeg_evidence(bytes))
        .flatten()
        .map(|how| lossy::note(&how))
}

/// Floating-point samples have no defined grey scale (0-1? 0-1000?) and can hold NaN,
/// which would pass into the model as a plausible but wrong reading: refused, grey and
/// colour alike.
fn float_refusal(path: &Path, format: &'static str) -> SourceError {
    SourceError::new(
        path,
        SourceErrorKind::Unsupported {
            format,
            reason: "its samples are floating-point numbers, which have no defined grey scale \
                     and can hold values that are not numbers (NaN)"
                .into(),
        },
    )
}

/// Whether a TIFF's first image declares floating-point samples (SampleFormat 3).
fn tiff_has_float_samples(bytes: &[u8]) -> bool {
    const IEEE_FLOAT: u16 = 3;
    let Ok(mut decoder) = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)) else {
        return false;
    };
    decoder
        .find_tag_unsigned_vec::<u16>(tiff::tags::Tag::SampleFormat)
        .ok()
        .flatten()
        .is_some_and(|formats| formats.contains(&IEEE_FLOAT))
}

/// How many full-size pages a TIFF holds, counting up to 2: reduced-resolution copies
/// (thumbnails and previews, NewSubfileType bit 0) are not pages. A file the TIFF decoder
/// cannot walk counts as 1 and is left to the image decoder to refuse.
fn tiff_pages(bytes: &[u8]) -> usize {
    const REDUCED_RESOLUTION: u32 = 1;
    let Ok(mut decoder) = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)) else {
        return 1;
    };
    let mut pages = 0;
    // A long chain of thumbnails is walked no further than this (cycles the decoder stops).
    for _ in 0..64 {
        let subfile = decoder.find_tag(tiff::tags::Tag::NewSubfileType).ok().flatten();
        let reduced =
            subfile.and_then(|v| v.into_u32().ok()).is_some_and(|t| t & REDUCED_RESOLUTION != 0);
        if !reduced {
            pages += 1;
        }
        if pages >= 2 || !decoder.more_images() || decoder.next_image().is_err() {
            break;
        }
    }
    pages.max(1)
}

/// The decoding limits: [`MAX_DECODE_BYTES`] in all.
fn limits_for_output() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// Whether a JPEG's last bytes hold its end-of-image marker (FF D9). Some writers pad the
/// file after it, so the tail is searched rather than the last two bytes only; inside the
/// compressed data an FF byte is always followed by 00 or a restart marker, so FF D9 there
/// means the end.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    const TAIL: usize = 4096;
    bytes[bytes.len().saturating_sub(TAIL)..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// A 16-bit grey image in `[0, 1]`, scaled by the smallest `2^n - 1` (n from 8 to 16) that
/// holds all but its brightest [`BITS_IGNORE_FRACTION`] of pixels, which are clipped to
/// white. Detectors deliver 10 to 14 bits, and many exports store them unscaled in a 16-bit
/// PNG or TIFF; divided by 65535 such an image is nearly black and would be refused as
/// uniform (or read wrongly). Looking past the brightest pixels keeps a burnt-in white
/// label or a single hot pixel from deciding the scale. A full-range 16-bit image is
/// divided by 65535 as before, and 8-bit data stored in 16 bits gets its 8-bit reading.
fn gray16_by_bits_used(g: &image::ImageBuffer<image::Luma<u16>, Vec<u16>>) -> GrayImage {
    let mut histogram = vec![0u32; 1 << 16];
    for p in g.pixels() {
        histogram[usize::from(p[0])] += 1;
    }
    let total = u64::from(g.width()) * u64::from(g.height());
    let allowed = (total as f64 * BITS_IGNORE_FRACTION) as u64;
    let mut above = 0u64;
    let mut top = 0u16;
    for value in (0..=u16::MAX).rev() {
        above += u64::from(histogram[usize::from(value)]);
        if above > allowed {
            top = value;
            break;
        }
    }
    let bits = (16 - top.leading_zeros()).max(8);
    gray16_scaled(g, bits as u8)
}

/// A 16-bit grey image whose values use `bits` bits, in `[0, 1]` (larger values clipped).
fn gray16_scaled(g: &image::ImageBuffer<image::Luma<u16>, Vec<u16>>, bits: u8) -> GrayImage {
    let scale = f32::from(u16::MAX >> (16 - u32::from(bits.clamp(1, 16))));
    GrayImage::from_fn(g.width(), g.height(), |x, y| {
        image::Luma([(f32::from(g.get_pixel(x, y)[0]) / scale).min(1.0)])
    })
}

/// The significant bits a PNG declares for its grey channel (its `sBIT` chunk, written by
/// exporters that store 10-14-bit detector data in 16 bits), if it declares them.
fn significant_bits(format: ImageFormat, bytes: &[u8]) -> Option<u8> {
    if format != ImageFormat::Png {
        return None;
    }
    let mut at: usize = 8; // after the signature
    while let Some(header) = bytes.get(at..at.checked_add(8)?) {
        let len = usize::try_from(u32::from_be_bytes(header[..4].try_into().ok()?)).ok()?;
        match &header[4..] {
            b"IDAT" => return None, // sBIT comes before the image data
            b"sBIT" => {
                return bytes.get(at.checked_add(8)?).copied().filter(|b| (8..=16).contains(b))
            }
            _ => at = at.checked_add(12)?.checked_add(len)?,
        }
    }
    None
}

/// Share of the brightest pixels [`gray16_by_bits_used`] ignores when it finds the bit
/// depth: room for a white label (a few thousand pixels of a radiograph).
const BITS_IGNORE_FRACTION: f64 = 0.005;

/// Refuses images over [`MAX_PIXELS`], naming the size.
pub(crate) fn check_pixels(path: &Path, width: u32, height: u32) -> Result<(), SourceError> {
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(SourceError::new(path, SourceErrorKind::TooManyPixels { width, height }));
    }
    Ok(())
}

/// Share of pixels with a visible colour (see [`Radiograph::colour_fraction`]); grey
/// formats are 0 without looking.
pub(crate) fn colour_fraction(img: &DynamicImage) -> f64 {
    if !img.color().has_color() {
        return 0.0;
    }
    let mut coloured = 0usize;
    for_each_rgb(img, |[r, g, b]| {
        if r.max(g).max(b) - r.min(g).min(b) > COLOUR_CHROMA {
            coloured += 1;
        }
    });
    coloured as f64 / (f64::from(img.width()) * f64::from(img.height())).max(1.0)
}

/// Calls `f` with each pixel as RGB in `[0, 1]`, row by row. 8-bit images (nearly all
/// colour files) are read in place: a float copy of a large photo would take 12 bytes per
/// pixel on a board with little memory.
fn for_each_rgb(img: &DynamicImage, mut f: impl FnMut([f32; 3])) {
    let unit = |v: u8| f32::from(v) / 255.0;
    match img {
        DynamicImage::ImageRgb8(rgb) => {
            rgb.pixels().for_each(|p| f([unit(p[0]), unit(p[1]), unit(p[2])]));
        }
        DynamicImage::ImageRgba8(rgba) => {
            rgba.pixels().for_each(|p| f([unit(p[0]), unit(p[1]), unit(p[2])]));
        }
        other => other.to_rgb32f().pixels().for_each(|p| f(p.0)),
    }
}

/// Grayscale in `[0, 1]`. Gray images keep their full precision (x / 255 or x / 65535,
/// exactly what the training pipeline did for 8-bit PNGs); colour images use the ITU-R
/// BT.601 luma weights, as PIL's `convert("L")` does.
pub(crate) fn to_gray(img: &DynamicImage) -> GrayImage {
    let (w, h) = (img.width(), img.height());
    match img {
        DynamicImage::ImageLuma8(g) => {
            GrayImage::from_fn(w, h, |x, y| image::Luma([f32::from(g.get_pixel(x, y)[0]) / 255.0]))
        }
        DynamicImage::ImageLuma16(g) => GrayImage::from_fn(w, h, |x, y| {
            image::Luma([f32::from(g.get_pixel(x, y)[0]) / 65535.0])
        }),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageLumaA16(_) => img.to_luma32f(),
        _ => {
            let mut luma = Vec::with_capacity(w as usize * h as usize);
            for_each_rgb(img, |[r, g, b]| {
                luma.push((0.299 * r + 0.587 * g + 0.114 * b).clamp(0.0, 1.0));
            });
            GrayImage::from_raw(w, h, luma).unwrap_or_else(|| GrayImage::new(w, h))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG that declares `w`x`h` but holds no pixel data: what the size check sees.
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        let crc = crc32(&ihdr);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc.to_be_bytes());
        // One empty-ish IDAT (a zlib stream of nothing) and IEND: a short, valid file.
        for (kind, data) in
            [(&b"IDAT"[..], &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..]), (b"IEND", &[])]
        {
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        png
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn sixteen_bit_files_use_the_bits_they_hold() {
        let img = |max: u16| {
            image::ImageBuffer::from_fn(64, 64, |x, _| image::Luma([if x < 32 { 0 } else { max }]))
        };
        let top = |max| gray16_by_bits_used(&img(max)).get_pixel(63, 0)[0];
        assert_eq!(top(4095), 1.0, "12-bit data fills the range");
        assert_eq!(top(255), 1.0, "8-bit data in 16 bits reads as 8-bit");
        assert_eq!(top(1000), 1000.0 / 1023.0, "10 bits");
        assert_eq!(top(65535), 1.0);
        assert_eq!(top(40000), 40000.0 / 65535.0, "full-range 16-bit is unchanged");
        assert_eq!(top(0), 0.0);
        // 12-bit data with a small burnt-in white label (0.2% of pixels at 65535): still
        // 12-bit, the label clipped to white.
        let labelled = image::ImageBuffer::from_fn(100, 100, |x, y| {
            image::Luma([if x < 2 && y < 10 { 65535 } else { ((x + y) * 20) as u16 }])
        });
        let g = gray16_by_bits_used(&labelled);
        assert_eq!(g.get_pixel(99, 99)[0], 3960.0 / 4095.0);
        assert_eq!(g.get_pixel(0, 0)[0], 1.0);
    }

    #[test]
    fn declared_huge_images_are_refused_before_decoding() {
        let e = decode(Path::new("bomb.png"), &png_header(12_000, 12_000)).unwrap_err();
        assert!(matches!(e.kind, SourceErrorKind::TooManyPixels { .. }), "{e}");
        assert!(e.to_string().contains("144 megapixels"), "{e}");
        // Within the limit the header passes and the missing pixel data is the error.
        let e = decode(Path::new("short.png"), &png_header(3000, 4000)).unwrap_err();
        assert!(matches!(e.kind, SourceErrorKind::Decode { .. }), "{e}");
    }

    #[test]
    fn a_jpeg_stored_sideways_is_turned_as_its_exif_tag_says() {
        // Stored 64 wide, 128 tall, bright in its top-left corner; EXIF orientation 6 says
        // "turn 90 degrees clockwise to view": 128 wide, 64 tall, bright top-right.
        let stored = image::GrayImage::from_fn(64, 128, |x, y| {
            image::Luma([if x < 24 && y < 24 { 240 } else { 20 }])
        });
        let mut jpeg = Vec::new();
        DynamicImage::ImageLuma8(stored)
            .write_to(&mut std::io::Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let mut exif = vec![0xFF, 0xE1, 0, 34];
        exif.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01");
        exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        jpeg.splice(2..2, exif);
        let r = decode(Path::new("phone.jpg"), &jpeg).unwrap();
        assert_eq!(r.pixels.dimensions(), (128, 64));
        assert!(r.pixels.get_pixel(120, 8)[0] > 0.8, "{}", r.pixels.get_pixel(120, 8)[0]);
        assert!(r.pixels.get_pixel(8, 8)[0] < 0.2);
    }

    /// A 64x64 16-bit grey PNG with values `step * x`, with an sBIT chunk of `sbit` bits.
    fn png16(step: u16, sbit: Option<u8>) -> Vec<u8> {
        let g = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(64, 64, |x, _| {
            image::Luma([x as u16 * step])
        });
        let mut png = Vec::new();
        DynamicImage::ImageLuma16(g)
            .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        if let Some(bits) = sbit {
            // Right after IHDR (8 + 25 bytes in).
            let body = [b's', b'B', b'I', b'T', bits];
            let mut chunk = vec![0, 0, 0, 1];
            chunk.extend_from_slice(&body);
            chunk.extend_from_slice(&crc32(&body).to_be_bytes());
            png.splice(33..33, chunk);
        }
        png
    }

    #[test]
    fn a_png_that_declares_its_significant_bits_is_scaled_by_them() {
        let top =
            |png: &[u8], x| decode(Path::new("a.png"), png).unwrap().pixels.get_pixel(x, 0)[0];
        // 12-bit data that happens to stay under 2048: guessed as 11-bit, but the file says 12.
        assert!((top(&png16(32, None), 63) - 2016.0 / 2047.0).abs() < 1e-4);
        assert!((top(&png16(32, Some(12)), 63) - 2016.0 / 4095.0).abs() < 1e-4);
        // As the PNG standard has it: 12-bit values scaled up to 16 bits, sBIT 12.
        let standard = png16(1024, Some(12));
        assert!((top(&standard, 63) - 64512.0 / 65535.0).abs() < 1e-4);
        assert!(top(&standard, 20) < 0.5);
    }

    /// Floating-point TIFFs, grey or colour, are refused by name (a NaN pixel in an RGB
    /// float TIFF once read as a plausible age).
    #[test]
    fn floating_point_tiffs_are_refused() {
        use tiff::encoder::{colortype, TiffEncoder};
        let mut rgb: Vec<f32> = (0..64u32 * 64 * 3).map(|i| (i % 97) as f32 / 97.0).collect();
        rgb[300] = f32::NAN;
        let grey: Vec<f32> = (0..64u32 * 64).map(|i| (i % 97) as f32 / 97.0).collect();
        let mut out = std::io::Cursor::new(Vec::new());
        TiffEncoder::new(&mut out)
            .unwrap()
            .write_image::<colortype::RGB32Float>(64, 64, &rgb)
            .unwrap();
        let rgb_tiff = out.into_inner();
        let mut out = std::io::Cursor::new(Vec::new());
        TiffEncoder::new(&mut out)
            .unwrap()
            .write_image::<colortype::Gray32Float>(64, 64, &grey)
            .unwrap();
        let grey_tiff = out.into_inner();
        for (what, tiff) in [("rgb", &rgb_tiff), ("grey", &grey_tiff)] {
            assert!(tiff_has_float_samples(tiff), "{what}");
            let e = decode(Path::new("f.tif"), tiff).unwrap_err();
            assert!(matches!(e.kind, SourceErrorKind::Unsupported { .. }), "{what}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("floating-point") && msg.contains("8- or 16-bit"), "{msg}");
        }
        let mut out = std::io::Cursor::new(Vec::new());
        TiffEncoder::new(&mut out)
            .unwrap()
            .write_image::<colortype::Gray16>(64, 64, &[1000u16; 64 * 64])
            .unwrap();
        assert!(!tiff_has_float_samples(&out.into_inner()));
    }

    /// A TIFF of two radiographs is refused (the decoder would read the first alone); one
    /// with a reduced-resolution preview after the image is read as one page.
    #[test]
    fn tiffs_with_more_than_one_page_are_refused() {
        use tiff::encoder::{colortype::Gray8, TiffEncoder};
        let pixels: Vec<u8> = (0..64u32 * 64).map(|i| (i % 251) as u8).collect();
        let tiff = |second_is_preview: bool| {
            let mut out = std::io::Cursor::new(Vec::new());
            let mut encoder = TiffEncoder::new(&mut out).unwrap();
            encoder.write_image::<Gray8>(64, 64, &pixels).unwrap();
            let mut second = encoder.new_image::<Gray8>(64, 64).unwrap();
            if second_is_preview {
                second.encoder().write_tag(tiff::tags::Tag::NewSubfileType, 1u32).unwrap();
            }
            second.write_data(&pixels).unwrap();
            out.into_inner()
        };
        let err = decode(Path::new("two.tif"), &tiff(false)).unwrap_err().to_string();
        assert!(err.contains("2 or more pages") && err.contains("file of its own"), "{err}");
        assert_eq!(decode(Path::new("preview.tif"), &tiff(true)).unwrap().pixels.width(), 64);
    }
}
