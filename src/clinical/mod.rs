//! From a bone age to a clinical reading: how far it is from the chronological age in
//! standard deviations of the reference population, and (when the height is known) the
//! predicted adult height.
//!
//! Everything here is arithmetic on published tables ([`greulich_pyle`],
//! [`bayley_pinneau`]); nothing is fitted. Where a table has no value (age outside its
//! range, no chronological age) the result is a warning, never an extrapolation.

pub mod bayley_pinneau;
pub mod greulich_pyle;

use serde::Serialize;

pub use bayley_pinneau::Tempo;

use crate::report::Sex;

/// Heights accepted for adult-height prediction (cm); anything else is a typo.
pub const HEIGHT_RANGE_CM: (f64, f64) = (40.0, 230.0);

/// An SDS beyond this is almost always a wrong input (an age typed in the wrong unit, the
/// wrong patient) rather than a child: even marked delays and advances are within ±5.
pub const IMPLAUSIBLE_SDS: f64 = 5.0;

/// Predicted adult heights outside this range (cm) mean a wrong height or age, not a
/// prediction to report without a check.
pub const PLAUSIBLE_ADULT_HEIGHT_CM: (f64, f64) = (120.0, 220.0);

/// Where the SDS splits delayed / normal / advanced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// SDS below this is "delayed" (default -2).
    pub delayed_below_sds: f64,
    /// SDS above this is "advanced" (default +2).
    pub advanced_above_sds: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { delayed_below_sds: -2.0, advanced_above_sds: 2.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Delayed,
    Normal,
    Advanced,
}

impl Category {
    /// Decided on the SDS as the report shows it (two decimals): otherwise an SDS shown as
    /// -2.00 could read "normal" on one report and "delayed" on another.
    pub fn from_sds(sds: f64, t: Thresholds) -> Category {
        let sds = (sds * 100.0).round() / 100.0;
        if sds < t.delayed_below_sds {
            Category::Delayed
        } else if sds > t.advanced_above_sds {
            Category::Advanced
        } else {
            Category::Normal
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Delayed => "delayed",
            Category::Normal => "normal",
            Category::Advanced => "advanced",
        }
    }
}

/// A Bayley-Pinneau prediction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AdultHeight {
    pub predicted_cm: f64,
    pub current_cm: f64,
    /// Percent of mature height reached at this bone age, from the table.
    pub percent_of_mature_height: f64,
    /// Which table (average, accelerated, retarded) was used.
    pub table: Tempo,
}

/// The clinical part of a reading; every field is optional because each needs inputs
/// (chronological age, height) or table coverage that may be missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assessment {
    /// Greulich-Pyle SD of skeletal age at this chronological age (months).
    pub sd_months: Option<f64>,
    /// (bone age - chronological age) / SD.
    pub sds: Option<f64>,
    pub category: Option<Category>,
    pub adult_height: Option<AdultHeight>,
    /// Why something above is missing, in words for the report.
    pub warnings: Vec<String>,
}

/// Computes SDS, category and adult height where the inputs and tables allow.
pub fn assess(
    sex: Sex,
    bone_age_months: f64,
    chronological_months: Option<f64>,
    height_cm: Option<f64>,
    thresholds: Thresholds,
) -> Assessment {
    let mut a = Assessment::default();
    let Some(ca) = chronological_months else {
        if height_cm.is_some() {
            a.warnings.push(
                "no adult height prediction: the chronological age is needed to choose the \
                 Bayley-Pinneau table; give the age (--age, or age= over the protocol)"
                    .into(),
            );
        }
        return a;
    };
    match greulich_pyle::sd_months(sex, ca) {
        Some(sd) => {
            let sds = (bone_age_months - ca) / sd;
            a.sd_months = Some(sd);
            a.sds = Some(sds);
            if sds.abs() > IMPLAUSIBLE_SDS {
                // Most likely a wrong age: no category or adult height is read into it.
                a.warnings.push(format!(
                    "SDS {sds:+.1} is implausible (beyond ±{IMPLAUSIBLE_SDS:.0}), so no category \
                     or adult height is given: check the chronological age used, {ca:.1} months \
                     ({}): the right patient, and the unit (a bare number given as the age is \
                     months; 10y is ten years)",
                    crate::report::Age::from_months(ca).map_or(String::new(), |a| a.to_string())
                ));
                return a;
            }
            a.category = Some(Category::from_sds(sds, thresholds));
        }
        None => {
            let (lo, hi) = greulich_pyle::range_months(sex);
            a.warnings.push(format!(
                "no SDS: chronological age {ca:.1} months is outside the Greulich-Pyle reference \
                 for {sex} ({lo:.0}-{hi:.0} months)"
            ));
        }
    }
    if let Some(h) = height_cm {
        let tempo = Tempo::from_difference_months(bone_age_months - ca);
        match bayley_pinneau::percent_of_mature_height(sex, tempo, bone_age_months) {
            Some(pct) => {
                let predicted = h / (pct / 100.0);
                let (lo, hi) = PLAUSIBLE_ADULT_HEIGHT_CM;
                if !(lo..=hi).contains(&predicted) {
                    a.warnings.push(format!(
                        "predicted adult height {predicted:.1} cm is implausible (outside \
                         {lo:.0}-{hi:.0} cm): check the height ({h:.1} cm; centimetres, not \
                         inches) and the chronological age"
                    ));
                }
                a.adult_height = Some(AdultHeight {
                    predicted_cm: predicted,
                    current_cm: h,
                    percent_of_mature_height: pct,
                    table: tempo,
                });
            }
            None => {
                let (lo, hi) = bayley_pinneau::range_months(sex, tempo);
                a.warnings.push(format!(
                    "no adult height prediction: bone age {bone_age_months:.1} months is outside \
                     the Bayley-Pinneau {} table for {sex} ({lo:.0}-{hi:.0} months)",
                    tempo.as_str()
                ));
            }
        }
    }
    a
}

/// Warnings for a chronological age known only to within `span_months` either side of
/// `chronological_months` (a PatientAge counts whole years, rounded down; the reading uses
/// the middle of that year): where the category or the Bayley-Pinneau table would differ
/// between the two ends, the reading must not present either as settled. `stated` names
/// the age as the file gave it, for the message.
pub fn age_span_warnings(
    sex: Sex,
    bone_age_months: f64,
    chronological_months: f64,
    span_months: f64,
    height_given: bool,
    thresholds: Thresholds,
    stated: &str,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if span_months <= 0.0 {
        return warnings;
    }
    let ends = [chronological_months - span_months, chronological_months + span_months];
    let range = format!(
        "{stated} gives the age only to within {:.0}-{:.0} months",
        ends[0].max(0.0),
        ends[1]
    );
    let sds: Vec<Option<f64>> = ends
        .iter()
        .map(|&ca| greulich_pyle::sd_months(sex, ca).map(|sd| (bone_age_months - ca) / sd))
        .collect();
    if let [Some(young), Some(old)] = sds[..] {
        // Older end: lower SDS.
        let (lo, hi) = (old, young);
        let categories = (Category::from_sds(lo, thresholds), Category::from_sds(hi, thresholds));
        if categories.0 != categories.1 && lo.abs().max(hi.abs()) <= IMPLAUSIBLE_SDS {
            warnings.push(format!(
                "the category depends on the exact age: {range}, over which the SDS runs from \
                 {lo:+.2} ({}) to {hi:+.2} ({}); give the exact age (--age, or the birth date) \
                 before acting on it",
                categories.0.as_str(),
                categories.1.as_str()
            ));
        }
    }
    if height_given {
        let tables = ends.map(|ca| Tempo::from_difference_months(bone_age_months - ca));
        if tables[0] != tables[1] {
            warnings.push(format!(
                "the adult height prediction depends on the exact age: {range}, over which \
                 bone age minus age crosses ±12 months and the Bayley-Pinneau table changes \
                 ({} at the younger end, {} at the older); give the exact age (--age, or the \
                 birth date) before using it",
                tables[0].as_str(),
                tables[1].as_str()
            ));
        }
    }
    warnings
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid height {0:?}: give centimetres from {lo} to {hi} (e.g. 142.5)", lo = HEIGHT_RANGE_CM.0, hi = HEIGHT_RANGE_CM.1)]
pub struct HeightError(pub String);

/// Parses a standing height in centimetres, as typed after `--height`.
///
/// # Errors
/// [`HeightError`] if not a number within [`HEIGHT_RANGE_CM`].
pub fn parse_height_cm(s: &str) -> Result<f64, HeightError> {
    let t = s.trim().trim_end_matches("cm").trim();
    t.parse::<f64>()
        .ok()
        .filter(|h| h.is_finite() && (HEIGHT_RANGE_CM.0..=HEIGHT_RANGE_CM.1).contains(h))
        .ok_or_else(|| HeightError(s.to_string()))
}

/// Linear interpolation in a table sorted by x; `None` outside its x range.
pub(crate) fn interpolate(table: &[(f64, f64)], x: f64) -> Option<f64> {
    let first = table.first()?;
    let last = table.last()?;
    if !x.is_finite() || x < first.0 || x > last.0 {
        return None;
    }
    let i = table.partition_point(|(tx, _)| *tx <= x);
    if i == 0 {
        return Some(first.1);
    }
    let (x0, y0) = table[i - 1];
    match table.get(i) {
        Some(&(x1, y1)) if x > x0 => Some(y0 + (y1 - y0) * (x - x0) / (x1 - x0)),
        _ => Some(y0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sds_and_category_hand_checked() {
        let t = Thresholds::default();
        // Boy, CA 10 y (SD 9.79), BA 130: SDS = 10 / 9.79 = 1.0215.
        let a = assess(Sex::Male, 130.0, Some(120.0), None, t);
        assert!((a.sds.unwrap() - 1.0215).abs() < 1e-3, "{a:?}");
        assert_eq!(a.category, Some(Category::Normal));
        assert!(a.warnings.is_empty());
        // Girl, CA 12 y (SD 10.24), BA 168: SDS = 24 / 10.24 = 2.34 -> advanced.
        let a = assess(Sex::Female, 168.0, Some(144.0), None, t);
        assert!((a.sds.unwrap() - 2.3438).abs() < 1e-3, "{a:?}");
        assert_eq!(a.category, Some(Category::Advanced));
        // Boy, CA 7 y (SD 8.91), BA 60: SDS = -24 / 8.91 = -2.69 -> delayed.
        let a = assess(Sex::Male, 60.0, Some(84.0), None, t);
        assert!((a.sds.unwrap() + 2.6936).abs() < 1e-3, "{a:?}");
        assert_eq!(a.category, Some(Category::Delayed));
        // Girl, CA 5 y 6 m (SD 10.94 interpolated), BA 50: SDS = -16 / 10.94 = -1.4625.
        let a = assess(Sex::Female, 50.0, Some(66.0), None, t);
        assert!((a.sds.unwrap() + 1.4625).abs() < 1e-3, "{a:?}");
    }

    /// The category and the table follow the values as shown: SDS of -1.9998 and -2.0032
    /// both show as -2.00 and neither is delayed (before, the second was), -2.006 shows as
    /// -2.01 and is; a difference of 12.04 months shows as +12.0 and keeps the average
    /// table.
    #[test]
    fn category_and_table_follow_the_shown_values() {
        let t = Thresholds::default();
        assert_eq!(Category::from_sds(-1.99983, t), Category::Normal);
        assert_eq!(Category::from_sds(-2.0032, t), Category::Normal);
        assert_eq!(Category::from_sds(-2.006, t), Category::Delayed);
        assert_eq!(Category::from_sds(2.004, t), Category::Normal);
        assert_eq!(Category::from_sds(2.006, t), Category::Advanced);
        assert_eq!(Tempo::from_difference_months(12.04), Tempo::Average);
        assert_eq!(Tempo::from_difference_months(12.06), Tempo::Accelerated);
        assert_eq!(Tempo::from_difference_months(-12.04), Tempo::Average);
    }

    /// A boy of PatientAge 005Y (60-72 months, read as 66) with a bone age of 85.4 months:
    /// advanced at 60 months (SDS above +2) but not at 72, so the reading must say the
    /// category depends on the exact age; with a height, the table changes too (13.4
    /// months ahead at 72 months of a 006Y: accelerated; 1.4 at 84: average). An exact age
    /// (span 0) or a category that holds over the whole year gives no warning.
    #[test]
    fn whole_year_ages_warn_where_the_year_decides() {
        let t = Thresholds::default();
        let stated = "PatientAge 005Y";
        let w = age_span_warnings(Sex::Male, 85.4, 66.0, 6.0, false, t, stated);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("category depends on the exact age"), "{w:?}");
        assert!(w[0].contains("within 60-72 months") && w[0].contains("(advanced)"), "{w:?}");
        let w = age_span_warnings(Sex::Male, 85.4, 78.0, 6.0, true, t, "PatientAge 006Y");
        assert!(w.iter().any(|w| w.contains("accelerated at the younger end, average")), "{w:?}");
        assert!(age_span_warnings(Sex::Male, 85.4, 66.0, 0.0, true, t, stated).is_empty());
        assert!(age_span_warnings(Sex::Male, 125.0, 126.0, 6.0, true, t, stated).is_empty());
    }

    #[test]
    fn thresholds_are_configurable() {
        let strict = Thresholds { delayed_below_sds: -1.0, advanced_above_sds: 1.0 };
        let a = assess(Sex::Male, 130.0, Some(120.0), None, strict);
        assert_eq!(a.category, Some(Category::Advanced));
    }

    #[test]
    fn outside_the_reference_warns_without_sds() {
        let a = assess(Sex::Female, 200.0, Some(200.0), None, Thresholds::default());
        assert_eq!(a.sds, None);
        assert_eq!(a.category, None);
        assert!(a.warnings[0].contains("outside the Greulich-Pyle reference"), "{:?}", a.warnings);
        let a = assess(Sex::Male, 10.0, None, None, Thresholds::default());
        assert_eq!(a, Assessment::default());
    }

    #[test]
    fn adult_height_picks_the_table_and_warns_outside() {
        let t = Thresholds::default();
        // Boy CA 13 y, BA 13-3, 152.4 cm (60 in): average table, 89.0 %, 171.2 cm.
        let a = assess(Sex::Male, 159.0, Some(156.0), Some(152.4), t);
        let h = a.adult_height.unwrap();
        assert_eq!(h.table, Tempo::Average);
        assert!((h.predicted_cm - 171.236).abs() < 0.01, "{h:?}");
        // Girl CA 12 y, BA 10-3 (21 months behind): retarded table, 88.4 %.
        let a = assess(Sex::Female, 123.0, Some(144.0), Some(139.7), t);
        let h = a.adult_height.unwrap();
        assert_eq!((h.table, h.percent_of_mature_height), (Tempo::Retarded, 88.4));
        // Boy BA 5 y: below every table, a warning and no number.
        let a = assess(Sex::Male, 60.0, Some(60.0), Some(110.0), t);
        assert_eq!(a.adult_height, None);
        assert!(
            a.warnings.iter().any(|w| w.contains("Bayley-Pinneau average table")),
            "{:?}",
            a.warnings
        );
        // Height without age: cannot choose the table.
        let a = assess(Sex::Male, 150.0, None, Some(150.0), t);
        assert!(a.adult_height.is_none() && a.warnings[0].contains("--age"));
    }

    #[test]
    fn implausible_inputs_are_flagged_not_hidden() {
        let t = Thresholds::default();
        // "--age 10" read as 10 months for a bone age of 7 years: SDS far beyond 5; no
        // category and no adult height are read into it.
        let a = assess(Sex::Female, 92.0, Some(10.0), Some(140.0), t);
        assert!(a.sds.unwrap() > IMPLAUSIBLE_SDS, "{a:?}");
        assert_eq!((a.category, a.adult_height), (None, None));
        assert!(a.warnings.iter().any(|w| w.contains("implausible") && w.contains("10y")), "{a:?}");
        // A height in inches (55) for a 10-year-old: the prediction is kept but questioned.
        let a = assess(Sex::Male, 120.0, Some(120.0), Some(55.0), t);
        assert!(a.adult_height.is_some());
        assert!(a.warnings.iter().any(|w| w.contains("inches")), "{a:?}");
        // Ordinary inputs: no warning.
        assert!(assess(Sex::Male, 130.0, Some(120.0), Some(140.0), t).warnings.is_empty());
    }

    #[test]
    fn height_parsing() {
        assert_eq!(parse_height_cm("142.5"), Ok(142.5));
        assert_eq!(parse_height_cm("142cm"), Ok(142.0));
        assert!(parse_height_cm("4ft").is_err());
        assert!(parse_height_cm("1.42").is_err(), "metres are a typo for cm");
        assert!(parse_height_cm("NaN").is_err());
    }

    #[test]
    fn interpolation_edges() {
        let t = [(0.0, 1.0), (10.0, 2.0), (20.0, 4.0)];
        assert_eq!(interpolate(&t, 0.0), Some(1.0));
        assert_eq!(interpolate(&t, 5.0), Some(1.5));
        assert_eq!(interpolate(&t, 10.0), Some(2.0));
        assert_eq!(interpolate(&t, 20.0), Some(4.0));
        assert_eq!(interpolate(&t, 20.1), None);
        assert_eq!(interpolate(&t, -0.1), None);
        assert_eq!(interpolate(&[], 1.0), None);
    }
}
