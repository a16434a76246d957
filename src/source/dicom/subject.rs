//! What the DICOM header says the image shows: the modality, the body part and the side.
//!
//! The quality gate and the likeness score judge the pixels, and neither recognises
//! anatomy: a CT slice or a chest film can pass them, or be refused for a reason that
//! misleads ("looks inverted"). The header names these plainly, so a file whose header
//! says it is not a radiograph of a hand is refused with what it is. Only values the
//! standard defines for something else are refused; an absent, local or free-text value
//! is left to the checks on the pixels. A right hand is read, with a note, as the
//! mirror check would warn about it.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::code;

/// Refuses a file whose Modality or Body Part Examined names something other than a
/// radiograph of the hand, saying what it is and what to send; else returns the notes
/// for the reading (a right or both-sides marker).
pub(super) fn check(obj: &InMemDicomObject) -> Result<Vec<String>, String> {
    let value = |tag| code(obj, tag);
    if let Some(modality) = value(tags::MODALITY) {
        if let Some(what) = other_modality(&modality) {
            return Err(format!(
                "its Modality is {modality} ({what}), not a radiograph; this program reads a \
                 projection radiograph of the left hand (Modality CR, DX or RG): send that \
                 image of the exam"
            ));
        }
    }
    if let Some(part) = value(tags::BODY_PART_EXAMINED) {
        if OTHER_BODY_PARTS.contains(&part.as_str()) {
            return Err(format!(
                "its Body Part Examined is {part}, not a hand; this program reads a \
                 radiograph of the left hand: send that image (if the header is wrong, \
                 correct Body Part Examined to HAND)"
            ));
        }
    }
    let side = value(tags::IMAGE_LATERALITY).or_else(|| value(tags::LATERALITY));
    Ok(match side.as_deref() {
        Some("R") => vec![RIGHT_NOTE.to_string()],
        Some("B") => vec![BOTH_NOTE.to_string()],
        _ => Vec::new(),
    })
}

/// The note for an image the header marks as the right side.
pub(super) const RIGHT_NOTE: &str = "the DICOM header marks this image as the right side \
     (Laterality R): the model was trained on left hands and reads right hands less \
     accurately; send the left hand";

/// The note for an image the header marks as both sides.
const BOTH_NOTE: &str = "the DICOM header marks this image as both sides (Image Laterality B): \
     the model reads one left hand; send an image of the left hand alone";

/// What a Modality (DICOM PS3.3 C.7.3.1.1.1 defined terms) is, for the modalities that
/// cannot hold a projection radiograph of a hand; `None` for radiographs (CR, DX, RG),
/// other X-ray (XA, RF), OT and anything not listed.
fn other_modality(modality: &str) -> Option<&'static str> {
    Some(match modality {
        "CT" => "computed tomography",
        "MR" => "magnetic resonance",
        "US" => "ultrasound",
        "NM" => "nuclear medicine",
        "PT" => "positron emission tomography",
        "MG" => "mammography",
        "BMD" => "bone densitometry",
        "IO" | "PX" => "dental radiography",
        "OP" | "OPT" | "OPM" | "OPV" | "OAM" | "OSS" | "IOL" | "KER" | "LEN" | "SRF" | "VA" => {
            "ophthalmology"
        }
        "ES" | "XC" | "GM" | "SM" => "a photograph or microscopy",
        "IVUS" | "IVOCT" | "OCT" | "BDUS" => "intravascular or optical imaging",
        "TG" => "thermography",
        "RTIMAGE" | "RTDOSE" | "RTSTRUCT" | "RTPLAN" | "RTRECORD" => "radiotherapy",
        "SEG" | "REG" | "FID" | "M3D" | "RWV" | "PLAN" => "a derived object, not an image",
        "SR" | "KO" | "PR" | "DOC" | "AU" => "a document or report",
        "ECG" | "EPS" | "HD" | "RESP" | "EEG" | "EMG" => "a waveform",
        _ => return None,
    })
}

/// Body Part Examined values (DICOM PS3.16 Annex L, and common spellings) that are not
/// the hand, wrist or a generic limb. Upper-limb parts away from the hand (elbow,
/// shoulder) are here too: the model reads the hand and wrist.
const OTHER_BODY_PARTS: &[&str] = &[
    "ABDOMEN",
    "ABDOMENPELVIS",
    "ANKLE",
    "BRAIN",
    "BREAST",
    "CALCANEUS",
    "CHEST",
    "CHESTABDOMEN",
    "CHESTABDPELVIS",
    "CLAVICLE",
    "COCCYX",
    "CSPINE",
    "CTSPINE",
    "ELBOW",
    "FACE",
    "FEMUR",
    "FOOT",
    "HEAD",
    "HEADNECK",
    "HEART",
    "HIP",
    "HUMERUS",
    "IAC",
    "JAW",
    "KNEE",
    "LEG",
    "LOWER LIMB",
    "LSPINE",
    "LSSPINE",
    "LWR EXTREMITY",
    "MANDIBLE",
    "NECK",
    "NECKCHEST",
    "ORBIT",
    "PATELLA",
    "PELVIS",
    "RIB",
    "SACRUM",
    "SCAPULA",
    "SHOULDER",
    "SINUS",
    "SKULL",
    "SPINE",
    "SSPINE",
    "STERNUM",
    "TEETH",
    "THIGH",
    "THORAX",
    "TLSPINE",
    "TMJ",
    "TOE",
    "TSPINE",
    "WHOLE BODY",
    "WHOLEBODY",
    "WHOLESPINE",
    "ZYGOMA",
];

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, PrimitiveValue, VR};

    use super::*;

    fn header(values: &[(dicom_object::Tag, &str)]) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        for (tag, v) in values {
            o.put(DataElement::new(*tag, VR::CS, PrimitiveValue::from(*v)));
        }
        o
    }

    #[test]
    fn radiographs_of_the_hand_and_unknown_values_pass() {
        for values in [
            vec![],
            vec![(tags::MODALITY, "DX"), (tags::BODY_PART_EXAMINED, "HAND")],
            vec![(tags::MODALITY, "cr"), (tags::BODY_PART_EXAMINED, "WRIST")],
            vec![(tags::MODALITY, "RG"), (tags::BODY_PART_EXAMINED, "UPR EXTREMITY")],
            // Free text, another language, or a secondary capture: left to the pixels.
            vec![(tags::MODALITY, "OT"), (tags::BODY_PART_EXAMINED, "BONE AGE")],
            vec![(tags::MODALITY, "DX"), (tags::BODY_PART_EXAMINED, "MANO")],
            vec![(tags::IMAGE_LATERALITY, "L")],
            vec![(tags::IMAGE_LATERALITY, "U")],
        ] {
            assert_eq!(check(&header(&values)), Ok(vec![]), "{values:?}");
        }
    }

    #[test]
    fn other_modalities_and_body_parts_are_refused_by_name() {
        for (values, says) in [
            (vec![(tags::MODALITY, "CT")], "Modality is CT (computed tomography)"),
            (vec![(tags::MODALITY, "mr")], "Modality is MR (magnetic resonance)"),
            (vec![(tags::MODALITY, "SEG")], "derived object"),
            (vec![(tags::MODALITY, "DX"), (tags::BODY_PART_EXAMINED, "CHEST")], "is CHEST"),
            (vec![(tags::MODALITY, "CR"), (tags::BODY_PART_EXAMINED, " knee ")], "is KNEE"),
            (vec![(tags::BODY_PART_EXAMINED, "WHOLE BODY")], "is WHOLE BODY"),
        ] {
            let e = check(&header(&values)).unwrap_err();
            assert!(e.contains(says) && e.contains("left hand"), "{values:?}: {e}");
        }
    }

    #[test]
    fn a_right_or_both_sides_marker_becomes_a_note() {
        let right = check(&header(&[(tags::IMAGE_LATERALITY, "R")])).unwrap();
        assert_eq!(right, vec![RIGHT_NOTE.to_string()]);
        // Series-level Laterality stands in when Image Laterality is absent, not over it.
        assert_eq!(check(&header(&[(tags::LATERALITY, "R")])).unwrap(), right);
        let left_image = [(tags::IMAGE_LATERALITY, "L"), (tags::LATERALITY, "R")];
        assert_eq!(check(&header(&left_image)), Ok(vec![]));
        let both = check(&header(&[(tags::IMAGE_LATERALITY, "B")])).unwrap();
        assert!(both[0].contains("both sides"), "{both:?}");
    }
}
