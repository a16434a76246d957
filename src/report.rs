//! From a number of months to a reading a clinician can use.
//!
//! Ages are kept in months (`f64`) internally and shown as years + months, the way bone-age
//! atlases state them. Parsing accepts what people type at a kiosk: `124`, `10y4m`, `10y`,
//! `18m`, `10.5y`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::clinical::{self, AdultHeight, Assessment, Category, Thresholds};
use crate::model::{Contract, Estimate, LikenessRule, Model, ModelError, ViewSpreadRule};
use crate::source::Radiograph;

/// Oldest age this program accepts anywhere (months): 21 years, beyond skeletal maturity.
pub const MAX_AGE_MONTHS: f64 = 252.0;

/// Longest patient or exam id accepted (DICOM LO is 64 characters): a longer one is a
/// paste error, and would push the reading off a one-page report.
pub const MAX_EXAM_ID_CHARS: usize = 64;

/// Checks a patient or exam id as typed (`--id`, `id=`, a sidecar's `"id"`).
///
/// # Errors
/// [`ParseError::ExamId`] when longer than [`MAX_EXAM_ID_CHARS`] or holding control
/// characters.
pub fn parse_exam_id(s: &str) -> Result<String, ParseError> {
    if s.chars().count() > MAX_EXAM_ID_CHARS || s.chars().any(char::is_control) {
        return Err(ParseError::ExamId(s.chars().take(20).collect()));
    }
    Ok(s.to_string())
}

/// Patient sex, the second model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    /// The model's `male` input: 1.0 male, 0.0 female (see docs/model-contract.md).
    pub fn as_model_input(self) -> f32 {
        match self {
            Sex::Male => 1.0,
            Sex::Female => 0.0,
        }
    }
}

impl fmt::Display for Sex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sex::Male => "male",
            Sex::Female => "female",
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid sex {0:?}: use male or female (m/f)")]
    Sex(String),
    #[error("invalid age {0:?}: give months (124) or years and months (10y4m, 10y, 18m)")]
    AgeSyntax(String),
    #[error("age {0:.1} months is out of range: expected 0 to {MAX_AGE_MONTHS} months")]
    AgeRange(f64),
    #[error("invalid id starting {0:?}: at most {MAX_EXAM_ID_CHARS} printable characters")]
    ExamId(String),
}

impl FromStr for Sex {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "male" | "m" => Ok(Sex::Male),
            "female" | "f" => Ok(Sex::Female),
            _ => Err(ParseError::Sex(s.to_string())),
        }
    }
}

/// An age (chronological or skeletal), in months.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Age(f64);

impl Age {
    /// # Errors
    /// [`ParseError::AgeRange`] outside `0..=MAX_AGE_MONTHS` or not finite.
    pub fn from_months(months: f64) -> Result<Age, ParseError> {
        if months.is_finite() && (0.0..=MAX_AGE_MONTHS).contains(&months) {
            Ok(Age(months))
        } else {
            Err(ParseError::AgeRange(months))
        }
    }

    pub fn months(self) -> f64 {
        self.0
    }

    /// Age at `exam` for someone born on `birth`, both DICOM dates (`YYYYMMDD`), counted in
    /// whole days so leap years do not shift it. `None` for a malformed or reversed pair.
    pub fn between_dates(birth: &str, exam: &str) -> Option<Age> {
        Age::from_months(months_between_dates(birth, exam)?).ok()
    }

    /// Whole years and remaining whole months (rounded to the nearest month).
    pub fn years_months(self) -> (u32, u32) {
        let total = self.0.round() as u32;
        (total / 12, total % 12)
    }
}

impl fmt::Display for Age {
    /// `10 y 4 m`: the atlas convention, rounded to whole months.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m) = self.years_months();
        write!(f, "{y} y {m} m")
    }
}

impl FromStr for Age {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase().replace(' ', "");
        let bad = || ParseError::AgeSyntax(s.to_string());
        if t.is_empty() {
            return Err(bad());
        }
        if let Ok(m) = t.parse::<f64>() {
            return Age::from_months(m);
        }
        let (years, rest) = match t.split_once('y') {
            Some((y, rest)) => (y.parse::<f64>().map_err(|_| bad())?, rest),
            None => (0.0, t.as_str()),
        };
        let months = match rest {
            "" => 0.0,
            r => r.strip_suffix('m').ok_or_else(bad)?.parse::<f64>().map_err(|_| bad())?,
        };
        // "10y13m" is a typo, not 11 years 1 month: with years given, months are 0-11.
        if years < 0.0 || months < 0.0 || (t.contains('y') && months >= 12.0) {
            return Err(bad());
        }
        Age::from_months(years * 12.0 + months)
    }
}

/// Months from `birth` to `exam` (DICOM `YYYYMMDD` dates), whatever the sign or size, so a
/// caller can say why an age is unusable; `None` only for a malformed date.
pub fn months_between_dates(birth: &str, exam: &str) -> Option<f64> {
    let days = days_from_civil(exam)? - days_from_civil(birth)?;
    Some(days as f64 / (365.25 / 12.0))
}

/// Days since 1970-01-01 of a `YYYYMMDD` date (H. Hinnant's civil-date algorithm).
fn days_from_civil(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: i64 = s[4..6].parse().ok()?;
    let d: i64 = s[6..8].parse().ok()?;
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&m) || !(1..=month_days).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Where a reading's chronological age came from. The SDS and category are only as good
/// as that age, so the reader is told: a DICOM PatientAge is whole years rounded down and
/// can be 11 months short, while birth and exam dates are exact to the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgeSource {
    /// Typed by the operator: `--age`, `age=` in ANALYZE, a sidecar's `"age"`.
    Given,
    /// The file's PatientBirthDate and exam date (StudyDate, else AcquisitionDate or
    /// ContentDate).
    FileDates,
    /// The file's PatientAge, counted in whole units.
    FilePatientAge,
}

impl AgeSource {
    /// The stored and JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            AgeSource::Given => "given",
            AgeSource::FileDates => "file_dates",
            AgeSource::FilePatientAge => "file_patient_age",
        }
    }

    /// How the report says it.
    pub fn describe(self) -> &'static str {
        match self {
            AgeSource::Given => "as given",
            AgeSource::FileDates => "from the birth and exam dates in the file",
            AgeSource::FilePatientAge => {
                "from PatientAge in the file (counted in whole units, rounded down: the middle \
                 of that unit, within half a unit of the exact age)"
            }
        }
    }
}

/// A `YYYYMMDD` date as `YYYY-MM-DD`, or `None` when it is not a real calendar date.
pub fn iso_date(yyyymmdd: &str) -> Option<String> {
    let s = yyyymmdd.trim();
    days_from_civil(s)?;
    Some(format!("{}-{}-{}", &s[0..4], &s[4..6], &s[6..8]))
}

/// Why a radiograph could not be read into a [`Reading`].
#[derive(Debug, thiserror::Error)]
pub enum ReadingError {
    /// Neither the request nor the file says the patient's sex; the model needs it and
    /// the program never guesses it. Callers add how to give it.
    #[error("patient sex unknown ({})", if *.file_is_dicom { "the file has no usable PatientSex" } else { "image files carry no patient data" })]
    SexUnknown { file_is_dicom: bool },
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The quality gate's orientation check: the image looks upright only once turned.
    #[error("the image looks turned: it resembles the training radiographs only after {turn}; send it upright, fingers pointing up")]
    Turned { turn: &'static str },
    /// The quality gate's last check, after inference: the model's likeness score.
    #[error("the image is unlike the hand radiographs the model was trained on (likeness score {score:.3}, limit {limit:.3}): check that the right image was sent, a left hand radiograph, not rotated, inverted, blurred or a photograph")]
    UnlikeTraining { score: f64, limit: f64 },
}

/// The quality gate's checks that need the model's own view of the image, after inference:
/// turned first (its advice is the more specific), then unlike the training radiographs.
/// The refusal ([`ReadingError::Turned`] or [`ReadingError::UnlikeTraining`]), if any; one
/// place for readings and `eval`.
///
/// # Errors
/// [`ModelError`] when the orientation passes fail.
pub fn refusal_after_inference(
    model: &mut Model,
    radiograph: &Radiograph,
    sex: Sex,
    estimate: &Estimate,
) -> Result<Option<ReadingError>, ModelError> {
    let (Some(rule), Some(score)) = (model.contract.likeness, estimate.ood_score) else {
        return Ok(None);
    };
    if let Some(centre) = estimate.centre_ood_score {
        if let Some(degrees) = model.turn_to_upright(radiograph, sex, centre)? {
            return Ok(Some(ReadingError::Turned { turn: turn_words(degrees) }));
        }
    }
    Ok(rule.refuses(score).then_some(ReadingError::UnlikeTraining { score, limit: rule.threshold }))
}

/// The warning for an image that looks like a right hand (the quality gate's mirror check).
pub const MIRRORED_WARNING: &str = "the image looks mirrored, as a right hand would: the model \
     was trained on left hands and reads right hands less accurately; check the side marker: \
     send the left hand, or an image marked L un-mirrored";

/// A counter-clockwise turn in words a radiographer would use.
fn turn_words(degrees_ccw: u32) -> &'static str {
    match degrees_ccw {
        90 => "a quarter turn counter-clockwise",
        180 => "half a turn",
        _ => "a quarter turn clockwise",
    }
}

/// What the operator said about the patient, each overriding the file's tags.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub sex: Option<Sex>,
    pub age: Option<Age>,
    pub height_cm: Option<f64>,
    pub id: Option<String>,
}

/// One analysed radiograph as reported to the user.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub image: String,
    /// Patient or exam identifier (`--id`, else DICOM PatientID / AccessionNumber).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub sex: Sex,
    pub bone_age_months: f64,
    /// Half-width of the 95% interval (months), calibrated on the validation split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval95_months: Option<f64>,
    /// SD of the test-time view readings (months); absent with one view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_spread_months: Option<f64>,
    /// How unlike the training radiographs the image is (about 1 for them); absent for a
    /// model without the score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chronological_age_months: Option<f64>,
    /// Where the chronological age came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_source: Option<AgeSource>,
    /// The exam date in the file (`YYYY-MM-DD`), when it has a valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exam_date: Option<String>,
    /// Bone age minus chronological age (months); positive = advanced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference_months: Option<f64>,
    /// Greulich-Pyle SD of skeletal age at the chronological age (months).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sd_months: Option<f64>,
    /// Difference over SD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adult_height: Option<AdultHeight>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub model: String,
}

impl Reading {
    /// Reads one radiograph with what the operator gave: sex and age from `given`, else
    /// from the file (a disagreement between the two is a warning, listed first, as are the
    /// file's unusable patient tags), the id from `given`, else PatientID or
    /// AccessionNumber. The one path from a decoded radiograph to a reading for the CLI and
    /// the service.
    ///
    /// With `quality_gate` (`[quality] enabled`), an image the model finds unlike its
    /// training radiographs is refused; without it, the reading carries a warning instead.
    /// With the gate on, an image that looks like a right hand carries a warning.
    ///
    /// # Errors
    /// [`ReadingError::SexUnknown`] when neither says the sex; [`ReadingError::Model`] when
    /// inference fails; [`ReadingError::UnlikeTraining`] as above.
    pub fn of_radiograph(
        model: &mut Model,
        image: String,
        radiograph: &Radiograph,
        given: &Given,
        thresholds: Thresholds,
        quality_gate: bool,
    ) -> Result<Reading, ReadingError> {
        let patient = radiograph.patient.resolve(given.sex, given.age);
        let sex = patient
            .sex
            .ok_or(ReadingError::SexUnknown { file_is_dicom: radiograph.format == "DICOM" })?;
        let estimate = model.estimate(radiograph, sex)?;
        let mut mirrored = false;
        if quality_gate {
            if let Some(refusal) = refusal_after_inference(model, radiograph, sex, &estimate)? {
                return Err(refusal);
            }
            if let Some(centre) = estimate.centre_ood_score {
                mirrored = model.looks_mirrored(radiograph, sex, centre)?;
            }
        }
        let mut reading = Reading::from_estimate(
            &model.contract,
            &estimate,
            image,
            sex,
            patient.age,
            given.height_cm,
            thresholds,
        );
        // Doubts about the patient facts come first, then about the image: either can make
        // the whole reading wrong.
        if mirrored {
            reading.warnings.insert(0, MIRRORED_WARNING.to_string());
        }
        reading.warnings.splice(0..0, patient.warnings);
        if let Some(ca) = patient.age.filter(|_| patient.age_span_months > 0.0) {
            let counted = Age(ca.months() - patient.age_span_months);
            let unit = match patient.age_span_months {
                s if s >= 6.0 => "years",
                s if s >= 0.5 => "months",
                _ => "weeks or days",
            };
            reading.warnings.extend(clinical::age_span_warnings(
                sex,
                reading.bone_age_months,
                ca.months(),
                patient.age_span_months,
                given.height_cm.is_some(),
                thresholds,
                &format!("the file's PatientAge ({counted}, counted in whole {unit})"),
            ));
        }
        reading.age_source = patient.age_source;
        reading.exam_date = radiograph.patient.exam_date.clone();
        let file = &radiograph.patient;
        reading.id =
            given.id.clone().or_else(|| file.patient_id.clone()).or_else(|| file.accession.clone());
        Ok(reading)
    }

    /// The whole reading of one radiograph from the model's estimate (over its test-time
    /// views): the comparison with the chronological age, SDS, category and adult height.
    pub fn from_estimate(
        c: &Contract,
        estimate: &Estimate,
        image: String,
        sex: Sex,
        age: Option<Age>,
        height_cm: Option<f64>,
        thresholds: Thresholds,
    ) -> Reading {
        let assessment = clinical::assess(
            sex,
            estimate.bone_age_months,
            age.map(Age::months),
            height_cm,
            thresholds,
        );
        Reading::new(
            image,
            sex,
            estimate.bone_age_months,
            estimate.interval95_months,
            age,
            c.training_range_months,
            c.model_id(),
        )
        .with_view_spread(estimate.view_spread_months, c.view_spread)
        .with_likeness(estimate.ood_score, c.likeness)
        .with_assessment(assessment)
        .with_category_check(thresholds)
    }

    pub fn new(
        image: String,
        sex: Sex,
        bone_age_months: f64,
        interval95_months: Option<f64>,
        age: Option<Age>,
        training_range_months: (f64, f64),
        model: String,
    ) -> Reading {
        let mut warnings = Vec::new();
        let (lo, hi) = training_range_months;
        if bone_age_months < lo || bone_age_months > hi {
            warnings.push(format!(
                "bone age {bone_age_months:.1} months is outside the range the model was trained on \
                 ({lo:.0}-{hi:.0} months): treat it as unreliable"
            ));
        }
        Reading {
            image,
            id: None,
            sex,
            bone_age_months,
            interval95_months,
            view_spread_months: None,
            ood_score: None,
            chronological_age_months: age.map(Age::months),
            age_source: None,
            exam_date: None,
            difference_months: age.map(|a| bone_age_months - a.months()),
            sd_months: None,
            sds: None,
            category: None,
            adult_height: None,
            warnings,
            model,
        }
    }

    /// Records how far the test-time views disagree, and warns when they disagree more
    /// than the model's calibrated threshold: on the validation split such readings err
    /// more and move more under JPEG or noise (models/README.md, "Robustness"), so the user
    /// should look at the image before trusting the number. The interval was already
    /// widened by the model ([`crate::model::Contract::interval95_months`]); the warning
    /// says so, or says the interval may be too narrow when the model has no width for
    /// flagged readings.
    pub fn with_view_spread(
        mut self,
        spread: Option<f64>,
        rule: Option<ViewSpreadRule>,
    ) -> Reading {
        self.view_spread_months = spread;
        let (Some(sd), Some(rule)) = (spread, rule) else { return self };
        if !rule.flags(sd) {
            return self;
        }
        let interval = match (rule.interval95_months, self.interval95_months) {
            (Some(_), Some(hw)) => format!("its 95% interval is widened to ±{hw:.1} months"),
            _ => "its 95% interval may be too narrow".to_string(),
        };
        self.warnings.push(format!(
            "the test-time views of this image disagree (SD {sd:.1} months; flagged from \
             {:.2} months): the reading is less reliable than most and {interval}; check that the \
             image is the original radiograph (not a JPEG copy, screenshot or photo of a \
             screen), well exposed and showing the whole hand, and review the reading",
            rule.warn_from_months
        ));
        self
    }

    /// Records the likeness score, and warns when it is over the model's limit: with the
    /// quality gate on, [`Reading::of_radiograph`] refuses such an image; with it off the
    /// reading stands, but the reader must know the model had not seen anything like it.
    pub fn with_likeness(mut self, score: Option<f64>, rule: Option<LikenessRule>) -> Reading {
        self.ood_score = score;
        if let (Some(score), Some(rule)) = (score, rule) {
            if rule.refuses(score) {
                self.warnings.push(format!(
                    "the image is unlike the hand radiographs the model was trained on \
                     (likeness score {score:.3}, limit {:.3}): the reading may be meaningless; \
                     check that the right image was sent",
                    rule.threshold
                ));
            }
        }
        self
    }

    /// Warns when the bone age's 95% interval reaches back across the threshold behind a
    /// delayed or advanced category: the model's own error (MAE about 8 months) is close to
    /// one SD of the reference, so such a label is not established by the reading alone and
    /// could start a work-up.
    pub fn with_category_check(mut self, t: Thresholds) -> Reading {
        let (Some(category), Some(sd), Some(ca), Some(hw)) =
            (self.category, self.sd_months, self.chronological_age_months, self.interval95_months)
        else {
            return self;
        };
        let ba = self.bone_age_months;
        // A bone age is never below 0: the interval shown and the SDS range agree.
        let (ba_lo, ba_hi) = ((ba - hw).max(0.0), ba + hw);
        let (lo, hi) = ((ba_lo - ca) / sd, (ba_hi - ca) / sd);
        let threshold = match category {
            Category::Delayed if hi >= t.delayed_below_sds => t.delayed_below_sds,
            Category::Advanced if lo <= t.advanced_above_sds => t.advanced_above_sds,
            _ => return self,
        };
        self.warnings.push(format!(
            "the category \"{}\" is uncertain: over the bone age's 95% interval ({:.0}-{:.0} \
             months) the SDS runs from {lo:+.1} to {hi:+.1}, across the {threshold:+.1} \
             threshold; read it together with the interval, not as a finding on its own",
            category.as_str(),
            ba_lo,
            ba_hi
        ));
        self
    }

    /// Adds the clinical part (SDS, category, adult height) and its warnings.
    pub fn with_assessment(mut self, a: Assessment) -> Reading {
        self.sd_months = a.sd_months;
        self.sds = a.sds;
        self.category = a.category;
        self.adult_height = a.adult_height;
        self.warnings.extend(a.warnings);
        self
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ba = Age(self.bone_age_months.max(0.0));
        if let Some(id) = &self.id {
            write!(f, "[{id}] ")?;
        }
        write!(f, "{}: bone age {:.1} months ({ba})", self.image, self.bone_age_months)?;
        if let Some(hw) = self.interval95_months {
            write!(f, " ±{hw:.1} months (95%)")?;
        }
        write!(f, ", {}", self.sex)?;
        if let (Some(ca), Some(d)) = (self.chronological_age_months, self.difference_months) {
            write!(f, "; chronological {:.1} months ({})", ca, Age(ca))?;
            if let Some(source) = self.age_source.filter(|s| *s != AgeSource::Given) {
                write!(f, " {}", source.describe())?;
            }
            write!(f, ", difference {d:+.1} months")?;
        }
        if let Some(date) = &self.exam_date {
            write!(f, "; exam {date}")?;
        }
        if let (Some(sd), Some(sds), Some(cat)) = (self.sd_months, self.sds, self.category) {
            write!(f, "; SD {sd:.2} months, SDS {sds:+.2} ({})", cat.as_str())?;
        }
        if let Some(h) = &self.adult_height {
            write!(
                f,
                "; predicted adult height {:.1} cm (Bayley-Pinneau, {} table)",
                h.predicted_cm,
                h.table.as_str()
            )?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ages_people_type() {
        let m = |s: &str| s.parse::<Age>().map(Age::months);
        assert_eq!(m("124"), Ok(124.0));
        assert_eq!(m("10y4m"), Ok(124.0));
        assert_eq!(m("10Y 4M"), Ok(124.0));
        assert_eq!(m("10y"), Ok(120.0));
        assert_eq!(m("18m"), Ok(18.0));
        assert_eq!(m("10.5y"), Ok(126.0));
        assert!(matches!(m("ten"), Err(ParseError::AgeSyntax(_))));
        assert!(matches!(m("10y4"), Err(ParseError::AgeSyntax(_))));
        assert!(matches!(m("10y13m"), Err(ParseError::AgeSyntax(_))));
        assert_eq!(m("10y11.5m"), Ok(131.5));
        assert!(matches!(m("-3"), Err(ParseError::AgeRange(_))));
        assert!(matches!(m("300"), Err(ParseError::AgeRange(_))));
        assert!(matches!(m(""), Err(ParseError::AgeSyntax(_))));
    }

    #[test]
    fn parses_sex() {
        assert_eq!("M".parse::<Sex>(), Ok(Sex::Male));
        assert_eq!("female".parse::<Sex>(), Ok(Sex::Female));
        assert!("x".parse::<Sex>().is_err());
    }

    #[test]
    fn formats_years_and_months() {
        assert_eq!(Age(124.0).to_string(), "10 y 4 m");
        assert_eq!(Age(11.6).to_string(), "1 y 0 m");
    }

    #[test]
    fn dates() {
        // Born 2014-03-01, exam 2024-07-01: 10 years 4 months.
        let a = Age::between_dates("20140301", "20240701").unwrap();
        assert!((a.months() - 124.0).abs() < 0.1, "{}", a.months());
        assert_eq!(Age::between_dates("20240701", "20140301"), None);
        assert_eq!(Age::between_dates("2014-03-01", "20240701"), None);
        // Days past the month's end are not dates (and are not shown as exam dates).
        assert_eq!(iso_date("20240231"), None);
        assert_eq!(iso_date("20230229"), None);
        assert_eq!(iso_date("20240229").as_deref(), Some("2024-02-29"));
        assert_eq!(iso_date("20000229").as_deref(), Some("2000-02-29"));
        assert_eq!(iso_date("19000229"), None);
        assert_eq!(iso_date("20240431"), None);
        assert_eq!(iso_date("20241231").as_deref(), Some("2024-12-31"));
    }

    #[test]
    fn reading_warns_outside_training_range() {
        let r = Reading::new("x".into(), Sex::Male, 240.0, None, None, (1.0, 228.0), "m".into());
        assert_eq!(r.warnings.len(), 1);
        let r = Reading::new("x".into(), Sex::Male, 120.0, None, None, (1.0, 228.0), "m".into());
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn a_category_inside_the_interval_is_called_uncertain() {
        let t = Thresholds::default();
        let reading = |ba: f64, hw: f64| {
            let r = Reading::new(
                "x".into(),
                Sex::Male,
                ba,
                Some(hw),
                Age::from_months(120.0).ok(),
                (1.0, 228.0),
                "m".into(),
            );
            r.with_assessment(clinical::assess(Sex::Male, ba, Some(120.0), None, t))
                .with_category_check(t)
        };
        // Boy, CA 10 y (SD 9.79): BA 95 is SDS -2.55, delayed; ±20 months reaches SDS -0.5.
        let r = reading(95.0, 20.0);
        assert_eq!(r.category, Some(Category::Delayed));
        assert!(r.warnings[0].contains("\"delayed\" is uncertain"), "{:?}", r.warnings);
        // BA 75 is SDS -4.6; ±20 months reaches only -2.55: delayed either way, no warning.
        assert!(reading(75.0, 20.0).warnings.is_empty(), "{:?}", reading(75.0, 20.0).warnings);
        // Normal readings are never flagged.
        assert!(reading(125.0, 20.0).warnings.is_empty());
        // An interval cut at 0 months gives the SDS range of the interval shown.
        let ca = 18.0;
        let r = Reading::new(
            "x".into(),
            Sex::Male,
            2.0,
            Some(19.5),
            Age::from_months(ca).ok(),
            (1.0, 228.0),
            "m".into(),
        )
        .with_assessment(clinical::assess(Sex::Male, 2.0, Some(ca), None, t))
        .with_category_check(t);
        assert_eq!(r.category, Some(Category::Delayed), "{r:?}");
        let sd = r.sd_months.unwrap();
        let w = r.warnings.iter().find(|w| w.contains("uncertain")).unwrap();
        assert!(w.contains("(0-22 months)"), "{w}");
        assert!(w.contains(&format!("runs from {:+.1}", -ca / sd)), "{w}");
    }

    #[test]
    fn reading_warns_when_the_views_disagree() {
        let r = |hw| Reading::new("x".into(), Sex::Male, 120.0, hw, None, (1.0, 228.0), "m".into());
        let rule = |hw| Some(ViewSpreadRule { warn_from_months: 4.4, interval95_months: hw });
        let wide = r(Some(36.3)).with_view_spread(Some(5.0), rule(Some(36.3)));
        assert_eq!(wide.view_spread_months, Some(5.0));
        assert_eq!(wide.warnings.len(), 1);
        let w = &wide.warnings[0];
        assert!(w.contains("SD 5.0 months") && w.contains("widened to ±36.3 months"), "{w}");
        // A model that flags but has no width for flagged readings: say the interval is short.
        let w = &r(Some(20.0)).with_view_spread(Some(5.0), rule(None)).warnings[0];
        assert!(w.contains("may be too narrow"), "{w}");
        assert!(r(None).with_view_spread(Some(4.0), rule(None)).warnings.is_empty());
        // One view, or a model without a calibrated threshold: nothing to warn about.
        assert!(r(None).with_view_spread(None, rule(None)).warnings.is_empty());
        let unflagged = r(None).with_view_spread(Some(9.0), None);
        assert!(unflagged.warnings.is_empty() && unflagged.view_spread_months == Some(9.0));
    }
}
