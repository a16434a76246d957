//! The warning for a reading of an image that has been through lossy compression, and the
//! JPEG codestream facts behind it, shared by image files and DICOM.
//!
//! In the robustness measurements (models/README.md) a JPEG copy at quality 85 moved the
//! 5-view reading by 4.2 months on average and some by five years, and a full-size JPEG at
//! quality 80 scaled down to the model's size by 3.3 months. How much detail a JPEG kept is
//! set by its quantization tables, so the warning names the quality they correspond to.

/// The warning shown with the reading; `how` says what shows the compression was lossy.
pub(super) fn note(how: &str) -> String {
    format!(
        "the image has been through lossy compression ({how}); compression artefacts can \
         move the reading (by 4 months on average at JPEG quality 85 in tests, and by years \
         for some images): ask for the original, or a lossless export (uncompressed, PNG, \
         TIFF, JPEG-LS Lossless, JPEG 2000 Lossless or JPEG XL Lossless)"
    )
}

/// What a JPEG stream (ISO/IEC 10918-1) says of its coding: `None` for a lossless JPEG
/// (process 14), which loses nothing; otherwise the evidence in words, with the quality its
/// luminance table corresponds to where it has one.
pub(super) fn jpeg_evidence(stream: &[u8]) -> Option<String> {
    let header = jpeg_header(stream);
    if header.as_ref().is_some_and(|h| h.lossless) {
        return None;
    }
    Some(match header.and_then(|h| h.quality) {
        Some(q) => format!("JPEG, quality about {q}"),
        None => "JPEG".to_string(),
    })
}

/// What a JPEG header says of how much was lost, and of the frame's size.
pub(super) struct JpegHeader {
    /// The frame is coded by a lossless process (SOF3, SOF7, SOF11 or SOF15).
    pub lossless: bool,
    /// The IJG quality of its luminance table ([`ijg_quality`]), when it has one.
    pub quality: Option<u8>,
    /// Lines, samples per line and components, as its frame header (SOF) says: what a
    /// decoder sizes its buffers by. Lines may be 0 (set by a later DNL segment).
    pub height: u16,
    pub width: u16,
    pub components: u8,
}

/// Reads the header segments of a JPEG stream up to its first scan; `None` when it is not
/// one (no SOI) or no frame header comes before the first scan. Markers are found as
/// decoders find them (libjpeg, and the `jpeg-decoder` the DICOM library uses): past
/// bytes that are not a marker and past fill bytes (0xFF), so that the frame header read
/// here is the one a decoder sizes its image by. The first frame header counts (a decoder
/// refuses a second).
pub(super) fn jpeg_header(stream: &[u8]) -> Option<JpegHeader> {
    const DQT: u8 = 0xDB;
    const SOS: u8 = 0xDA;
    const EOI: u8 = 0xD9;
    let be16 = |at: usize| Some(u16::from_be_bytes(stream.get(at..at + 2)?.try_into().ok()?));
    if stream.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let (mut at, mut luminance, mut frame) = (2, None, None);
    while let Some(marker) = next_marker(stream, &mut at) {
        match marker {
            SOS | EOI => break,
            // Markers without a length: TEM, RSTn, SOI.
            0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let length = usize::from(be16(at)?);
        if length < 2 {
            break;
        }
        let body = stream.get(at + 2..at + length)?;
        match marker {
            DQT if luminance.is_none() => luminance = table_zero(body),
            // Start-of-frame markers: C0-CF less DHT (C4), JPG (C8) and DAC (CC). The body:
            // precision, lines, samples per line, components.
            0xC0..=0xCF if ![0xC4, 0xC8, 0xCC].contains(&marker) && frame.is_none() => {
                let b16 = |i: usize| Some(u16::from_be_bytes(body.get(i..i + 2)?.try_into().ok()?));
                let size = (b16(1), b16(3), body.get(5).copied());
                let (Some(height), Some(width), Some(components)) = size else { return None };
                frame = Some((matches!(marker & 0x0F, 3 | 7 | 11 | 15), height, width, components));
            }
            _ => {}
        }
        at += length;
    }
    let (lossless, height, width, components) = frame?;
    let quality = luminance.map(|t| ijg_quality(&t));
    Some(JpegHeader { lossless, quality, height, width, components })
}

/// The next marker's code from `at` (moved past it), as a decoder reads markers: bytes up
/// to an 0xFF skipped, then fill bytes (0xFF), and a stuffed zero is no marker.
fn next_marker(stream: &[u8], at: &mut usize) -> Option<u8> {
    loop {
        *at += stream.get(*at..)?.iter().position(|&b| b == 0xFF)?;
        *at += stream.get(*at..)?.iter().position(|&b| b != 0xFF)?;
        let code = *stream.get(*at)?;
        *at += 1;
        if code != 0 {
            return Some(code);
        }
    }
}

/// Table 0 of a DQT segment's body (the luminance table, by every encoder's convention),
/// 8- or 16-bit entries alike.
fn table_zero(mut body: &[u8]) -> Option<[u16; 64]> {
    while let Some((&pq_tq, rest)) = body.split_first() {
        let wide = pq_tq >> 4 == 1;
        let size = if wide { 128 } else { 64 };
        let values = rest.get(..size)?;
        if pq_tq & 0x0F == 0 {
            let mut table = [0u16; 64];
            for (i, v) in table.iter_mut().enumerate() {
                *v = if wide {
                    u16::from_be_bytes([values[2 * i], values[2 * i + 1]])
                } else {
                    u16::from(values[i])
                };
            }
            return Some(table);
        }
        body = &rest[size..];
    }
    None
}

/// The luminance quantization table of JPEG Annex K.1, which the IJG quality scale (used
/// by libjpeg, PIL, ImageMagick and most scanners' software) scales; sorted, because
/// scaling keeps the order of the entries and the zigzag order of a DQT segment then does
/// not matter.
const ANNEX_K_LUMINANCE_SORTED: [u16; 64] = [
    10, 11, 12, 12, 13, 14, 14, 14, 16, 16, 16, 17, 18, 19, 22, 22, 24, 24, 24, 26, 29, 35, 37, 40,
    40, 49, 51, 51, 55, 55, 56, 56, 57, 58, 60, 61, 62, 64, 64, 68, 69, 72, 77, 78, 80, 81, 87, 87,
    92, 92, 95, 98, 99, 100, 101, 103, 103, 103, 104, 109, 112, 113, 120, 121,
];

/// The IJG quality (1-100) whose scaling of the Annex K table comes nearest to `table`
/// (least total difference): quality `q` scales it by `5000 / q` percent below 50 and by
/// `200 - 2q` percent from 50, rounded, each entry kept from 1 to 255 (to 32767 in 16-bit
/// tables). Other encoders' tables get the quality that quantizes about as coarsely.
fn ijg_quality(table: &[u16; 64]) -> u8 {
    let mut sorted = *table;
    sorted.sort_unstable();
    let top = if sorted[63] > 255 { 32767 } else { 255 };
    let distance = |q: u32| -> u32 {
        let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
        ANNEX_K_LUMINANCE_SORTED
            .iter()
            .zip(&sorted)
            .map(|(&k, &t)| {
                ((u32::from(k) * scale + 50) / 100).clamp(1, top).abs_diff(u32::from(t))
            })
            .sum()
    };
    // Ties (the top of the scale, where entries reach 1) go to the higher quality.
    (1..=100u8).rev().min_by_key(|&q| distance(u32::from(q))).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(quality: u8) -> Vec<u8> {
        let img = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * 3 + y) as u8]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(&img)
            .unwrap();
        out
    }

    /// The quality read back is the one the encoder was given.
    #[test]
    fn quality_is_read_back_from_the_tables() {
        for q in [5, 10, 30, 50, 75, 85, 90, 95, 100] {
            let how = jpeg_evidence(&encoded(q)).unwrap();
            assert_eq!(how, format!("JPEG, quality about {q}"));
        }
    }

    /// A frame header of one 16x16 component: precision 8, 16 lines, 16 samples, then the
    /// component's id, sampling factors and table.
    fn sof(marker: u8) -> Vec<u8> {
        let body = [0x00, 0x0B, 0x08, 0x00, 0x10, 0x00, 0x10, 0x01, 0x01, 0x11, 0x00];
        [&[0xFF, 0xD8, 0xFF, marker][..], &body, &[0xFF, 0xDA, 0x00, 0x02]].concat()
    }

    /// A lossless frame (SOF3) gives no evidence; a stream without tables still names JPEG.
    #[test]
    fn lossless_frames_and_missing_tables() {
        assert_eq!(jpeg_evidence(&sof(0xC3)), None);
        assert_eq!(jpeg_evidence(&sof(0xC0)).as_deref(), Some("JPEG"));
        assert_eq!(jpeg_evidence(&sof(0xC1)).as_deref(), Some("JPEG"));
    }

    /// The frame's size is read as a decoder reads it: past fill bytes and bytes between
    /// segments that are no marker, the first frame header only; none before the first
    /// scan, or a frame header cut short, is no header.
    #[test]
    fn frame_size_is_read_as_decoders_find_it() {
        let size = |s: &[u8]| jpeg_header(s).map(|h| (h.width, h.height, h.components));
        let whole = encoded(80);
        assert_eq!(size(&whole), Some((64, 64, 1)));
        assert_eq!(size(&sof(0xC0)), Some((16, 16, 1)));
        // Fill bytes before the marker, and junk before that (libjpeg skips both).
        let padded = [&[0xFF, 0xD8, 0x00, 0x12, 0xFF, 0xFF, 0xFF][..], &sof(0xC1)[3..]].concat();
        assert_eq!(size(&padded), Some((16, 16, 1)));
        // A second frame header is not read (a decoder refuses it).
        let second = [0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x7F, 0x00, 0x00, 0x10, 0x01, 0x01, 0x11, 0x00];
        let twice = [&sof(0xC0)[..15], &second, &[0xFF, 0xDA, 0x00, 0x02]].concat();
        assert_eq!(size(&twice), Some((16, 16, 1)));
        let no_frame = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xC0, 0x00, 0x0B];
        assert_eq!(size(&no_frame), None);
        let cut = sof(0xC0);
        assert_eq!(size(&cut[..10]), None);
    }

    /// Damaged headers give the plain evidence (lossy unless shown lossless), never a panic.
    #[test]
    fn damaged_headers_stop_the_walk() {
        let whole = encoded(80);
        for cut in [0, 1, 2, 3, 4, 5, 10, 20, 40, 70, 100, 150] {
            let how = jpeg_evidence(&whole[..cut.min(whole.len())]);
            assert!(how.is_none() || how.as_deref() == Some("JPEG"), "{cut}: {how:?}");
        }
        // A 16-bit table (12-bit JPEG) is read too: Annex K at quality 20 (scaled by 250%,
        // entries up to 303, over the 8-bit limit) reads as 20.
        let mut body = vec![0x10];
        body.extend(
            ANNEX_K_LUMINANCE_SORTED.iter().flat_map(|&k| ((k * 250 + 50) / 100).to_be_bytes()),
        );
        assert_eq!(ijg_quality(&table_zero(&body).unwrap()), 20);
    }
}
