//! Declared element lengths, checked against the file before it is parsed.
//!
//! The DICOM parser reserves an element's declared length before it reads the value, so a
//! damaged length of a few gigabytes in a 5 kB file makes it take gigabytes of memory (a
//! 4.6 kB file with one such length took 3.9 GB): on a small board that ends the whole
//! service, not just this file, and a client that sends the file again ends it again.
//! Every length the parser would act on (elements, sequences, items, fragments) is
//! therefore checked here first to fit in what is left of the file, walking the data set
//! as the parser will: the file meta, then the data set in its transfer syntax (Implicit
//! or Explicit VR, either byte order), into sequences and items. A file cut off inside a
//! header is left to the parser, whose errors already say so; a token the walk cannot
//! follow anywhere else (an element where a sequence item must stand, a delimiter inside
//! an item of defined length) is refused here, since the bytes after it would go
//! unchecked. A stray item delimiter at the top level is stepped over and a stray sequence
//! delimiter checked as an element, and the items of a VR UN sequence are read in the
//! file's syntax, all as the parser reads them. A deflated data set is inflated first (up
//! to the memory one file may take) and the inflated data walked.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, uids, StandardDataDictionary};

/// Sequences nested deeper than this are refused: no image header needs more than a
/// few levels, and the parser recurses once per level.
const MAX_DEPTH: usize = 32;

/// An element length the parser would reserve, too large for the file, or nesting too
/// deep: the message says where and what to do.
#[derive(Debug, PartialEq)]
pub(super) struct Damaged(pub(super) String);

/// Where a Part 10 file's data set starts and the transfer syntax its file meta names, as
/// the walk read them: what a reader needs when the parser refuses the file meta itself.
#[derive(Debug, PartialEq)]
pub(super) struct DataSet {
    pub(super) at: usize,
    pub(super) syntax: String,
    /// Where the top-level Pixel Data element ends, when the walk met one (not for a
    /// deflated data set): bytes after it that the parser cannot read (padding some
    /// writers leave) can be left out.
    pub(super) pixel_end: Option<usize>,
}

/// Checks a Part 10 file's lengths, from its "DICM" marker at `meta_at`; where its data set
/// starts and in what syntax, or `None` when the file meta cannot be followed (no transfer
/// syntax, or cut off), which the parser then reports.
pub(super) fn check_part10(bytes: &[u8], meta_at: usize) -> Result<Option<DataSet>, Damaged> {
    let start = meta_at + 4;
    let mut meta = Walker::new(bytes, start, true, false);
    let Some(syntax) = meta.meta_group()? else {
        return Ok(None);
    };
    let (explicit, big_endian) = match syntax.as_str() {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => (false, false),
        // Explicit VR Big Endian (retired, still met in archives).
        "1.2.840.10008.1.2.2" => (true, true),
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
            if let Some(inflated) = inflate(bytes.get(meta.at..).unwrap_or_default())? {
                let mut walker = Walker::new(&inflated, 0, true, false);
                walker.place = " of the inflated data set";
                walker.data_set(inflated.len(), 0)?;
            } // else a damaged stream: the parser says so.
            return Ok(Some(DataSet { at: meta.at, syntax, pixel_end: None }));
        }
        _ => (true, false),
    };
    let mut walker = Walker::new(bytes, meta.at, explicit, big_endian);
    walker.data_set(bytes.len(), 0)?;
    Ok(Some(DataSet { at: meta.at, syntax, pixel_end: walker.pixel_end }))
}

/// Most a deflated data set may inflate to: the memory one file's decoding may take.
const MAX_INFLATED_BYTES: u64 = crate::source::MAX_DECODE_BYTES;

/// A deflated data set, inflated to check its lengths; `None` when the stream is damaged.
fn inflate(deflated: &[u8]) -> Result<Option<Vec<u8>>, Damaged> {
    use std::io::Read;
    let mut inflated = Vec::new();
    let mut reader = flate2::read::DeflateDecoder::new(deflated).take(MAX_INFLATED_BYTES + 1);
    if reader.read_to_end(&mut inflated).is_err() {
        return Ok(None);
    }
    if inflated.len() as u64 > MAX_INFLATED_BYTES {
        return Err(Damaged(format!(
            "its deflated data set inflates to more than {} MB, more than any radiograph \
             holds; the file is damaged or not an image: export it again uncompressed",
            MAX_INFLATED_BYTES / 1_000_000
        )));
    }
    Ok(Some(inflated))
}

/// Checks a bare data set (no file meta) read as Implicit or Explicit VR Little Endian.
pub(super) fn check_bare(bytes: &[u8], explicit: bool) -> Result<(), Damaged> {
    Walker::new(bytes, 0, explicit, false).data_set(bytes.len(), 0).map(|_| ())
}

/// A position in the file and how its elements are encoded.
struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
    explicit: bool,
    big_endian: bool,
    /// Where the byte offsets in messages count from, when not the file's start.
    place: &'static str,
    /// Where the top-level Pixel Data element ended, once walked.
    pixel_end: Option<usize>,
}

/// What the walk met where an element was expected.
#[derive(Debug, PartialEq)]
enum Step {
    /// An element or item was checked and passed.
    Next,
    /// An item delimiter ended the item (of undefined length) being walked.
    ItemEnd,
    /// The file ends inside a header: a cut-off file, which the parser reports.
    Eof,
}

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const UNDEFINED: u32 = u32::MAX;

impl<'a> Walker<'a> {
    /// A walk from byte `at`, whose messages count bytes from the file's start.
    fn new(bytes: &'a [u8], at: usize, explicit: bool, big_endian: bool) -> Self {
        Walker { bytes, at, explicit, big_endian, place: "", pixel_end: None }
    }

    fn u16_at(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }

    /// The file meta group (always Explicit VR Little Endian): its lengths checked, and
    /// the transfer syntax it names; `None` when it cannot be followed. Read as the parser
    /// reads it: Group Length (0002,0000) first, then every element in that many bytes,
    /// whatever its tag says; without Group Length (which the parser refuses, and the
    /// caller then reads past), the elements of group 0002.
    fn meta_group(&mut self) -> Result<Option<String>, Damaged> {
        let Some((first, _, length, value_at)) = self.header() else { return Ok(None) };
        let end = if first == tags::FILE_META_INFORMATION_GROUP_LENGTH && length == 4 {
            let Some(group_length) = self.u32_at(value_at) else { return Ok(None) };
            self.at = value_at + 4;
            Some(self.at.saturating_add(group_length as usize))
        } else {
            None
        };
        let mut syntax = None;
        while end.is_none_or(|end| self.at < end) {
            let Some((tag, _, length, value_at)) = self.header() else { return Ok(None) };
            if end.is_none() && tag.group() != 0x0002 {
                break;
            }
            self.fits(tag, length, value_at, self.bytes.len())?;
            let value = self.bytes.get(value_at..value_at + length as usize).unwrap_or_default();
            if tag == tags::TRANSFER_SYNTAX_UID {
                let text = String::from_utf8_lossy(value);
                syntax = Some(text.trim_end_matches(['\0', ' ']).to_string());
            }
            self.at = value_at + value.len();
        }
        Ok(syntax)
    }

    /// The elements from here to `end` (a defined length's end, or the file's), or to the
    /// end of an item of undefined length (`depth` above 0).
    fn data_set(&mut self, end: usize, depth: usize) -> Result<Step, Damaged> {
        while self.at < end {
            match self.element(end, depth)? {
                Step::Next => {}
                stop => return Ok(stop),
            }
        }
        Ok(Step::Next)
    }

    /// One element: its length checked, and a sequence's or encapsulated pixel data's
    /// items walked.
    fn element(&mut self, end: usize, depth: usize) -> Result<Step, Damaged> {
        let Some((tag, vr, length, value_at)) = self.header() else { return Ok(Step::Eof) };
        if tag == ITEM_END {
            self.at = value_at;
            // Outside any sequence the parser skips it (its length unread) and reads on.
            return Ok(if depth == 0 { Step::Next } else { Step::ItemEnd });
        }
        // A sequence delimiter where an element is expected is, for the parser, an element
        // like any other, of the length it declares: it is checked as one.
        if length == UNDEFINED {
            self.at = value_at;
            return if tag == tags::PIXEL_DATA {
                let step = self.fragments()?;
                if depth == 0 && step == Step::Next {
                    self.pixel_end = Some(self.at);
                }
                Ok(step)
            } else {
                // A sequence, whatever its VR. The standard codes the items of one of VR UN
                // in Implicit VR, but the parser reads them in the file's syntax (an
                // Implicit VR item read as Explicit VR takes its next tag for a length of
                // 3.7 GB), and so does the walk.
                self.items(end, depth + 1)
            };
        }
        self.fits(tag, length, value_at, end)?;
        let value_end = value_at + length as usize;
        self.at = value_at;
        if self.is_sequence(tag, vr) {
            // Whatever the items leave unread, the sequence's length says where it ends.
            self.items(value_end, depth + 1)?;
        }
        self.at = value_end;
        if depth == 0 && tag == tags::PIXEL_DATA {
            self.pixel_end = Some(value_end);
        }
        Ok(Step::Next)
    }

    /// The items of a sequence, to its end (a sequence delimiter, or `end`).
    fn items(&mut self, end: usize, depth: usize) -> Result<Step, Damaged> {
        if depth > MAX_DEPTH {
            return Err(Damaged(format!(
                "its header nests sequences more than {MAX_DEPTH} deep at byte {}{}; the file \
                 is damaged or not an image: re-export it",
                self.at, self.place
            )));
        }
        while self.at < end {
            let Some((tag, _, length, value_at)) = self.header() else { return Ok(Step::Eof) };
            match tag {
                SEQUENCE_END => {
                    self.at = value_at;
                    return Ok(Step::Next);
                }
                ITEM if length == UNDEFINED => {
                    self.at = value_at;
                    if self.data_set(end, depth)? == Step::Eof {
                        return Ok(Step::Eof);
                    }
                }
                ITEM => {
                    self.fits(tag, length, value_at, end)?;
                    self.at = value_at;
                    let item_end = value_at + length as usize;
                    match self.data_set(item_end, depth)? {
                        Step::Eof => return Ok(Step::Eof),
                        // An item of defined length has no delimiter; one that also ends
                        // with one is read alike by both, anywhere else they part ways.
                        Step::ItemEnd if self.at != item_end => {
                            let at = self.at.saturating_sub(8);
                            let place = "in an item of defined length";
                            return Err(self.out_of_place(at, ITEM_END, place));
                        }
                        _ => {}
                    }
                    self.at = item_end;
                }
                _ => {
                    return Err(self.out_of_place(self.at, tag, "where a sequence item must stand"))
                }
            }
        }
        Ok(Step::Next)
    }

    /// The fragments of encapsulated pixel data, to its sequence delimiter.
    fn fragments(&mut self) -> Result<Step, Damaged> {
        loop {
            // Items and delimiters are read alike in every syntax (see `header`).
            let Some((tag, _, length, value_at)) = self.header() else { return Ok(Step::Eof) };
            match tag {
                SEQUENCE_END => {
                    self.at = value_at;
                    return Ok(Step::Next);
                }
                ITEM => {
                    self.fits(tag, length, value_at, self.bytes.len())?;
                    self.at = value_at + length as usize;
                }
                _ => {
                    return Err(self.out_of_place(
                        self.at,
                        tag,
                        "where a fragment of the pixel data must stand",
                    ))
                }
            }
        }
    }

    /// A token the walk cannot follow, as the parser would not either: what stands after
    /// it would go unchecked.
    fn out_of_place(&self, at: usize, tag: Tag, place: &str) -> Damaged {
        Damaged(format!(
            "its header holds {tag} at byte {at}{} {place}; the file is damaged (a length or \
             tag corrupted): copy or export it again",
            self.place
        ))
    }

    /// An element header at the current position: tag, VR (explicit only), length, and
    /// where the value starts; `None` when the file ends inside it.
    fn header(&self) -> Option<(Tag, Option<VR>, u32, usize)> {
        let at = self.at;
        let tag = Tag(self.u16_at(at)?, self.u16_at(at + 2)?);
        // Items and delimiters have no VR in any syntax.
        if !self.explicit || tag.group() == 0xFFFE {
            return Some((tag, None, self.u32_at(at + 4)?, at + 8));
        }
        let code: [u8; 2] = self.bytes.get(at + 4..at + 6)?.try_into().ok()?;
        // A VR the standard does not define is read as UN, as the parser reads it.
        let vr = VR::from_binary(code).unwrap_or(VR::UN);
        match vr {
            VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV => Some((tag, Some(vr), self.u32_at(at + 8)?, at + 12)),
            _ => Some((tag, Some(vr), u32::from(self.u16_at(at + 6)?), at + 8)),
        }
    }

    /// Whether a defined-length element holds items: VR SQ, or in Implicit VR a tag the
    /// dictionary knows as a sequence (as the parser decides).
    fn is_sequence(&self, tag: Tag, vr: Option<VR>) -> bool {
        match vr {
            Some(vr) => vr == VR::SQ,
            None => StandardDataDictionary.by_tag(tag).is_some_and(|e| e.vr().relaxed() == VR::SQ),
        }
    }

    /// Refuses a value that would run past `end` (its item's or sequence's end, or the
    /// file's).
    fn fits(&self, tag: Tag, length: u32, value_at: usize, end: usize) -> Result<(), Damaged> {
        let left = end.saturating_sub(value_at);
        if length as usize <= left {
            return Ok(());
        }
        Err(Damaged(format!(
            "element {tag} at byte {}{} declares {length} bytes but only {left} follow; the \
             file is damaged (cut short, or a length corrupted): copy or export it again",
            self.at, self.place
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Implicit VR Little Endian element.
    fn implicit(group: u16, element: u16, value: &[u8]) -> Vec<u8> {
        let length = u32::try_from(value.len()).unwrap();
        [&group.to_le_bytes()[..], &element.to_le_bytes(), &length.to_le_bytes(), value].concat()
    }

    fn header(group: u16, element: u16, length: u32) -> Vec<u8> {
        [group.to_le_bytes(), element.to_le_bytes()]
            .concat()
            .into_iter()
            .chain(length.to_le_bytes())
            .collect()
    }

    /// Every committed DICOM fixture passes: the walk refuses nothing a valid file holds.
    #[test]
    fn valid_files_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom");
        let mut checked = 0;
        for entry in std::fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "dcm") {
                let bytes = std::fs::read(&path).unwrap();
                let found = check_part10(&bytes, 128);
                assert!(matches!(found, Ok(Some(_))), "{}: {found:?}", path.display());
                checked += 1;
            }
        }
        assert!(checked >= 8);
    }

    /// A corrupted length is refused wherever it sits: a plain element, an element
    /// inside a sequence item, an item, a pixel data fragment.
    #[test]
    fn lengths_past_the_end_are_refused() {
        let name = implicit(0x0010, 0x0010, b"DOE^JANE");
        let ok = [implicit(0x0008, 0x0060, b"CR"), name.clone()].concat();
        assert_eq!(check_bare(&ok, false), Ok(()));

        let huge =
            [implicit(0x0008, 0x0060, b"CR"), header(0x0008, 0x1030, 0xF000_0000), b"AB".to_vec()]
                .concat();
        let err = check_bare(&huge, false).unwrap_err();
        assert!(err.0.contains("(0008,1030)") && err.0.contains("4026531840"), "{}", err.0);

        // A sequence of undefined length, whose one item holds a damaged element.
        let nested = [
            implicit(0x0008, 0x0060, b"CR"),
            header(0x0008, 0x1110, UNDEFINED),
            header(0xFFFE, 0xE000, UNDEFINED),
            header(0x0008, 0x1150, 0x7FFF_0000),
        ]
        .concat();
        assert!(check_bare(&nested, false).unwrap_err().0.contains("(0008,1150)"));

        // A defined-length item longer than its sequence.
        let item = [
            implicit(0x0008, 0x0060, b"CR"),
            header(0x0008, 0x1110, 8),
            header(0xFFFE, 0xE000, 100),
        ]
        .concat();
        assert!(check_bare(&item, false).unwrap_err().0.contains("(FFFE,E000)"));

        // A pixel data fragment longer than the file.
        let pixels = [
            implicit(0x0008, 0x0060, b"CR"),
            header(0x7FE0, 0x0010, UNDEFINED),
            header(0xFFFE, 0xE000, 0),
            header(0xFFFE, 0xE000, 1 << 30),
        ]
        .concat();
        assert!(check_bare(&pixels, false).unwrap_err().0.contains("1073741824"));
    }

    /// Explicit VR: a 4-byte length (UT) and a 2-byte one (LO) are both read as such, and
    /// an undefined VR as UN, with a 4-byte length, as the parser reads it.
    #[test]
    fn explicit_vr_lengths() {
        let lo = [&[0x08, 0x00, 0x30, 0x10][..], b"LO", &4u16.to_le_bytes(), b"HAND"].concat();
        assert_eq!(check_bare(&lo, true), Ok(()));
        let ut =
            [&[0x08, 0x00, 0x30, 0x10][..], b"UT", &[0, 0], &0xF000_0000u32.to_le_bytes()].concat();
        assert!(check_bare(&ut, true).is_err());
        // "UI" damaged to ":I": the parser reads a UN header, whose length takes in the
        // first bytes of the value (here 775 MB).
        let damaged = [
            &[0x08, 0x00, 0x16, 0x00][..],
            b":I",
            &28u16.to_le_bytes(),
            b"1.2.840.10008.5.1.4.1.1.1.1\0",
        ]
        .concat();
        assert!(check_bare(&damaged, true).unwrap_err().0.contains("(0008,0016)"));
    }

    /// A deflated data set is inflated and walked: a damaged length inside it is found.
    #[test]
    fn deflated_data_sets_are_walked_inflated() {
        use std::io::Write;
        let syntax = b"1.2.840.10008.1.2.1.99";
        let element = [
            &[0x02, 0x00, 0x10, 0x00][..],
            b"UI",
            &u16::try_from(syntax.len()).unwrap().to_le_bytes(),
            syntax,
        ]
        .concat();
        let group_length = u32::try_from(element.len()).unwrap().to_le_bytes();
        let meta =
            [&[0x02, 0x00, 0x00, 0x00][..], b"UL", &[4, 0], &group_length, &element].concat();
        let part10 = |data_set: &[u8]| {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(data_set).unwrap();
            [vec![0; 128], b"DICM".to_vec(), meta.clone(), z.finish().unwrap()].concat()
        };
        let lo = [&[0x08, 0x00, 0x30, 0x10][..], b"LO", &4u16.to_le_bytes(), b"HAND"].concat();
        assert!(check_part10(&part10(&lo), 128).is_ok());
        let ut =
            [&[0x08, 0x00, 0x30, 0x10][..], b"UT", &[0, 0], &0xF000_0000u32.to_le_bytes()].concat();
        let err = check_part10(&part10(&ut), 128).unwrap_err();
        assert!(err.0.contains("of the inflated data set"), "{}", err.0);
        // Not a deflate stream: left to the parser.
        let garbage = [vec![0; 128], b"DICM".to_vec(), meta.clone(), vec![0xFF; 64]].concat();
        assert!(check_part10(&garbage, 128).is_ok());
    }

    /// The file meta is read as the parser reads it: every element within its group
    /// length, whatever its tag, so a damaged tag there does not hide the transfer syntax
    /// (and the data set after it goes unchecked).
    #[test]
    fn meta_elements_are_followed_by_the_group_length() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dicom/jls-lossless.dcm");
        let mut bytes = std::fs::read(path).unwrap();
        // (0002,0003) Media Storage SOP Instance UID, its group damaged to 2102.
        let at = bytes.windows(4).position(|w| w == [0x02, 0x00, 0x03, 0x00]).unwrap();
        bytes[at + 1] = 0x21;
        assert!(matches!(check_part10(&bytes, 128), Ok(Some(_))));
        // Then a data-set VR damaged into one the standard lacks, read as UN.
        let lo = bytes.windows(2).position(|w| w == b"LO").unwrap();
        bytes[lo] = 0x8D;
        assert!(check_part10(&bytes, 128).is_err());
    }

    /// Sequences nested past the limit are refused rather than recursed into.
    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = implicit(0x0008, 0x0060, b"CR");
        for _ in 0..=MAX_DEPTH + 1 {
            bytes.extend(header(0x0008, 0x1110, UNDEFINED));
            bytes.extend(header(0xFFFE, 0xE000, UNDEFINED));
        }
        assert!(check_bare(&bytes, false).unwrap_err().0.contains("nests sequences"));
    }

    /// A file cut short inside a header is left to the parser, not called damaged here.
    #[test]
    fn truncation_is_left_to_the_parser() {
        let cut = [implicit(0x0008, 0x0060, b"CR"), vec![0x10, 0x00, 0x10]].concat();
        assert_eq!(check_bare(&cut, false), Ok(()));
    }

    /// A fixture with `extra` put before the element whose tag (little endian) is
    /// `before`.
    fn fixture_with(before: [u8; 4], extra: &[u8]) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dicom/jls-lossless.dcm");
        let bytes = std::fs::read(path).unwrap();
        let at = bytes.windows(4).rposition(|w| w == before).unwrap();
        [&bytes[..at], extra, &bytes[at..]].concat()
    }

    /// A private OB element declaring 0xF0000000 bytes, Explicit VR.
    fn huge_ob() -> Vec<u8> {
        [&[0x09, 0x00, 0x01, 0x10][..], b"OB", &[0, 0], &0xF000_0000u32.to_le_bytes()].concat()
    }

    /// A stray item or sequence delimiter at the top level does not end the walk: the
    /// parser reads past it, so a damaged length after it is still found (one such file of
    /// 10 kB took 4 GB to parse).
    #[test]
    fn stray_delimiters_at_the_top_level_are_walked_past() {
        const PATIENT_ID: [u8; 4] = [0x10, 0x00, 0x20, 0x00];
        const PIXEL_DATA: [u8; 4] = [0xE0, 0x7F, 0x10, 0x00];
        for (delimiter, length) in [(0xE00D, 0), (0xE00D, 4), (0xE0DD, 0)] {
            let stray = header(0xFFFE, delimiter, length);
            let bytes = fixture_with(PATIENT_ID, &stray);
            assert!(matches!(check_part10(&bytes, 128), Ok(Some(_))), "{delimiter:X}");
            let pixel_data = bytes.windows(4).rposition(|w| w == PIXEL_DATA).unwrap();
            let damaged = [&bytes[..pixel_data], &huge_ob(), &bytes[pixel_data..]].concat();
            let err = check_part10(&damaged, 128).unwrap_err();
            assert!(err.0.contains("(0009,1001)") && err.0.contains("4026531840"), "{}", err.0);
        }
    }

    /// A token the parser would not follow either is refused, not the end of the walk:
    /// an element where a sequence item must stand, a fragment that is not an item, and an
    /// item delimiter inside an item of defined length (short of its end).
    #[test]
    fn tokens_out_of_place_are_refused() {
        let sequence = [
            implicit(0x0008, 0x0060, b"CR"),
            header(0x0008, 0x1110, UNDEFINED),
            implicit(0x0008, 0x1150, b"1.2\0"),
            header(0xFFFE, 0xE0DD, 0),
        ]
        .concat();
        let err = check_bare(&sequence, false).unwrap_err();
        assert!(err.0.contains("(0008,1150) at byte 18 where a sequence item must"), "{}", err.0);

        let fragments = [
            implicit(0x0008, 0x0060, b"CR"),
            header(0x7FE0, 0x0010, UNDEFINED),
            header(0xFFFE, 0xE000, 0),
            implicit(0x0009, 0x0010, b"AB"),
        ]
        .concat();
        assert!(check_bare(&fragments, false).unwrap_err().0.contains("fragment of the pixel"));

        let item = |delimiter_at_end: bool| {
            let inside = if delimiter_at_end {
                [implicit(0x0008, 0x1150, b"1.2\0"), header(0xFFFE, 0xE00D, 0)].concat()
            } else {
                [header(0xFFFE, 0xE00D, 0), implicit(0x0008, 0x1150, b"1.2\0")].concat()
            };
            let length = u32::try_from(inside.len()).unwrap();
            [
                implicit(0x0008, 0x0060, b"CR"),
                header(0x0008, 0x1110, UNDEFINED),
                header(0xFFFE, 0xE000, length),
                inside,
                header(0xFFFE, 0xE0DD, 0),
            ]
            .concat()
        };
        assert_eq!(check_bare(&item(true), false), Ok(()));
        let err = check_bare(&item(false), false).unwrap_err();
        assert!(err.0.contains("(FFFE,E00D) at byte 26 in an item of defined"), "{}", err.0);
    }

    /// A sequence of VR UN and undefined length is walked as the parser reads it, in the
    /// file's own syntax: Implicit VR items inside it (as the standard codes them) read as
    /// Explicit VR make a length of the next tag, which the parser would reserve (pydicom's
    /// UN_sequence.dcm, 674 bytes, took 3.7 GB).
    #[test]
    fn un_sequences_are_read_in_the_files_syntax() {
        let un = |inner: &[u8]| {
            [
                &[0x08, 0x00, 0x60, 0x00][..],
                b"CS",
                &2u16.to_le_bytes(),
                b"CR",
                &[0x09, 0x00, 0x10, 0x10],
                b"UN",
                &[0, 0],
                &UNDEFINED.to_le_bytes(),
                &header(0xFFFE, 0xE000, UNDEFINED),
                inner,
                &header(0xFFFE, 0xE00D, 0),
                &header(0xFFFE, 0xE0DD, 0),
            ]
            .concat()
        };
        let explicit =
            [&[0x08, 0x00, 0x50, 0x11][..], b"UI", &4u16.to_le_bytes(), b"1.2\0"].concat();
        assert_eq!(check_bare(&un(&explicit), true), Ok(()));
        let implicit = [header(0x0008, 0x1115, UNDEFINED), header(0xFFFE, 0xE000, UNDEFINED)];
        let err = check_bare(&un(&implicit.concat()), true).unwrap_err();
        assert!(err.0.contains("(0008,1115)") && err.0.contains("3758161918"), "{}", err.0);
    }
}
