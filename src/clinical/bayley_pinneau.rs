//! Predicted adult height from bone age: the Bayley-Pinneau tables.
//!
//! Source: N. Bayley, S. R. Pinneau, "Tables for predicting adult height from skeletal
//! age: revised for use with the Greulich-Pyle hand standards", *J. Pediatr.* 1952;
//! 40(4):423-441, Tables IIA-IIE (boys) and IIIA-IIIF (girls): the row "% of Mature
//! Height" under each skeletal age. Read from the scan of the article stored in the public
//! repository eatyourpeas/endocrinologist, `references/final_height/Bayley and Pinneau
//! Tables.pdf`; the article's own worked examples are unit tests below.
//!
//! The paper's rule: use the average table when bone age is within one year of
//! chronological age, the accelerated table when it is a year or more ahead, the retarded
//! table when a year or more behind. Predicted adult height = height / (PMH / 100).
//! Between tabulated skeletal ages the percentage is interpolated linearly, as the paper
//! allows; outside a table's range there is no prediction (the paper warns that younger
//! ages carry large errors).

use serde::Serialize;

use crate::report::Sex;

/// Which Bayley-Pinneau table applies, chosen by bone age minus chronological age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tempo {
    /// Bone age more than a year behind chronological age.
    Retarded,
    Average,
    /// Bone age more than a year ahead of chronological age.
    Accelerated,
}

impl Tempo {
    /// More than 12 months apart selects a supplementary table; decided on the difference
    /// as the report shows it (one decimal), so "+12.0" never reads "accelerated".
    pub fn from_difference_months(bone_minus_chronological: f64) -> Tempo {
        let bone_minus_chronological = (bone_minus_chronological * 10.0).round() / 10.0;
        if bone_minus_chronological > 12.0 {
            Tempo::Accelerated
        } else if bone_minus_chronological < -12.0 {
            Tempo::Retarded
        } else {
            Tempo::Average
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tempo::Retarded => "retarded",
            Tempo::Average => "average",
            Tempo::Accelerated => "accelerated",
        }
    }
}

/// (skeletal age years, months, % of mature height), as printed in the column heads.
type Table = &'static [(u32, u32, f64)];

/// Tables IIA + IIB: boys, skeletal age within one year of chronological age.
const BOYS_AVERAGE: Table = &[
    (7, 0, 69.5),
    (7, 3, 70.2),
    (7, 6, 70.9),
    (7, 9, 71.6),
    (8, 0, 72.3),
    (8, 3, 73.1),
    (8, 6, 73.9),
    (8, 9, 74.6),
    (9, 0, 75.2),
    (9, 3, 76.1),
    (9, 6, 76.9),
    (9, 9, 77.7),
    (10, 0, 78.4),
    (10, 3, 79.1),
    (10, 6, 79.5),
    (10, 9, 80.0),
    (11, 0, 80.4),
    (11, 3, 81.2),
    (11, 6, 81.8),
    (11, 9, 82.7),
    (12, 0, 83.4),
    (12, 3, 84.3),
    (12, 6, 85.3),
    (12, 9, 86.3),
    (13, 0, 87.6),
    (13, 3, 89.0),
    (13, 6, 90.2),
    (13, 9, 91.4),
    (14, 0, 92.7),
    (14, 3, 93.8),
    (14, 6, 94.8),
    (14, 9, 95.8),
    (15, 0, 96.8),
    (15, 3, 97.3),
    (15, 6, 97.6),
    (15, 9, 98.0),
    (16, 0, 98.2),
    (16, 3, 98.5),
    (16, 6, 98.7),
    (16, 9, 98.9),
    (17, 0, 99.1),
    (17, 3, 99.3),
    (17, 6, 99.4),
    (17, 9, 99.5),
    (18, 0, 99.6),
    (18, 3, 99.8),
    (18, 6, 100.0),
];

/// Tables IIC + IID: boys, skeletal age a year or more advanced.
const BOYS_ACCELERATED: Table = &[
    (7, 0, 67.0),
    (7, 3, 67.6),
    (7, 6, 68.3),
    (7, 9, 68.9),
    (8, 0, 69.6),
    (8, 3, 70.3),
    (8, 6, 70.9),
    (8, 9, 71.5),
    (9, 0, 72.0),
    (9, 3, 72.8),
    (9, 6, 73.4),
    (9, 9, 74.1),
    (10, 0, 74.7),
    (10, 3, 75.3),
    (10, 6, 75.8),
    (10, 9, 76.3),
    (11, 0, 76.7),
    (11, 3, 77.6),
    (11, 6, 78.6),
    (11, 9, 80.0),
    (12, 0, 80.9),
    (12, 3, 81.8),
    (12, 6, 82.8),
    (12, 9, 83.9),
    (13, 0, 85.0),
    (13, 3, 86.3),
    (13, 6, 87.5),
    (13, 9, 89.0),
    (14, 0, 90.5),
    (14, 3, 91.8),
    (14, 6, 93.0),
    (14, 9, 94.3),
    (15, 0, 95.8),
    (15, 3, 96.7),
    (15, 6, 97.1),
    (15, 9, 97.6),
    (16, 0, 98.0),
    (16, 3, 98.3),
    (16, 6, 98.5),
    (16, 9, 98.8),
    (17, 0, 99.0),
];

/// Table IIE: boys, skeletal age a year or more retarded.
const BOYS_RETARDED: Table = &[
    (6, 0, 68.0),
    (6, 3, 69.0),
    (6, 6, 70.0),
    (6, 9, 70.9),
    (7, 0, 71.8),
    (7, 3, 72.8),
    (7, 6, 73.8),
    (7, 9, 74.7),
    (8, 0, 75.6),
    (8, 3, 76.5),
    (8, 6, 77.3),
    (8, 9, 77.9),
    (9, 0, 78.6),
    (9, 3, 79.4),
    (9, 6, 80.0),
    (9, 9, 80.7),
    (10, 0, 81.2),
    (10, 3, 81.6),
    (10, 6, 81.9),
    (10, 9, 82.1),
    (11, 0, 82.3),
    (11, 3, 82.7),
    (11, 6, 83.2),
    (11, 9, 83.9),
    (12, 0, 84.5),
    (12, 3, 85.2),
    (12, 6, 86.0),
    (12, 9, 86.9),
    (13, 0, 88.0),
];

/// Tables IIIA + IIIB: girls, skeletal age within one year of chronological age. The
/// atlas standards for girls fall at 6-10, 7-10 and 8-10, hence those columns.
const GIRLS_AVERAGE: Table = &[
    (6, 0, 72.0),
    (6, 3, 72.9),
    (6, 6, 73.8),
    (6, 10, 75.1),
    (7, 0, 75.7),
    (7, 3, 76.5),
    (7, 6, 77.2),
    (7, 10, 78.2),
    (8, 0, 79.0),
    (8, 3, 80.1),
    (8, 6, 81.0),
    (8, 10, 82.1),
    (9, 0, 82.7),
    (9, 3, 83.6),
    (9, 6, 84.4),
    (9, 9, 85.3),
    (10, 0, 86.2),
    (10, 3, 87.4),
    (10, 6, 88.4),
    (10, 9, 89.6),
    (11, 0, 90.6),
    (11, 3, 91.0),
    (11, 6, 91.4),
    (11, 9, 91.8),
    (12, 0, 92.2),
    (12, 3, 93.2),
    (12, 6, 94.1),
    (12, 9, 95.0),
    (13, 0, 95.8),
    (13, 3, 96.7),
    (13, 6, 97.4),
    (13, 9, 97.8),
    (14, 0, 98.0),
    (14, 3, 98.3),
    (14, 6, 98.6),
    (14, 9, 98.8),
    (15, 0, 99.0),
    (15, 3, 99.1),
    (15, 6, 99.3),
    (15, 9, 99.4),
    (16, 0, 99.6),
    (16, 3, 99.6),
    (16, 6, 99.7),
    (16, 9, 99.8),
    (17, 0, 99.9),
    (17, 6, 99.95),
    (18, 0, 100.0),
];

/// Tables IIIC + IIID: girls, skeletal age a year or more advanced.
const GIRLS_ACCELERATED: Table = &[
    (7, 0, 71.2),
    (7, 3, 72.2),
    (7, 6, 73.2),
    (7, 10, 74.2),
    (8, 0, 75.0),
    (8, 3, 76.0),
    (8, 6, 77.1),
    (8, 10, 78.4),
    (9, 0, 79.0),
    (9, 3, 80.0),
    (9, 6, 80.9),
    (9, 9, 81.9),
    (10, 0, 82.8),
    (10, 3, 84.1),
    (10, 6, 85.6),
    (10, 9, 87.0),
    (11, 0, 88.3),
    (11, 3, 88.7),
    (11, 6, 89.1),
    (11, 9, 89.7),
    (12, 0, 90.1),
    (12, 3, 91.3),
    (12, 6, 92.4),
    (12, 9, 93.5),
    (13, 0, 94.5),
    (13, 3, 95.5),
    (13, 6, 96.3),
    (13, 9, 96.8),
    (14, 0, 97.2),
    (14, 3, 97.7),
    (14, 6, 98.0),
    (14, 9, 98.3),
    (15, 0, 98.6),
    (15, 3, 98.8),
    (15, 6, 99.0),
    (15, 9, 99.2),
    (16, 0, 99.3),
    (16, 3, 99.4),
    (16, 6, 99.5),
    (16, 9, 99.7),
    (17, 0, 99.8),
    (17, 6, 99.95),
];

/// Tables IIIE + IIIF: girls, skeletal age a year or more retarded.
const GIRLS_RETARDED: Table = &[
    (6, 0, 73.3),
    (6, 3, 74.2),
    (6, 6, 75.1),
    (6, 10, 76.3),
    (7, 0, 77.0),
    (7, 3, 77.9),
    (7, 6, 78.8),
    (7, 10, 79.7),
    (8, 0, 80.4),
    (8, 3, 81.3),
    (8, 6, 82.3),
    (8, 10, 83.6),
    (9, 0, 84.1),
    (9, 3, 85.1),
    (9, 6, 85.8),
    (9, 9, 86.6),
    (10, 0, 87.4),
    (10, 3, 88.4),
    (10, 6, 89.6),
    (10, 9, 90.7),
    (11, 0, 91.8),
    (11, 3, 92.2),
    (11, 6, 92.6),
    (11, 9, 92.9),
    (12, 0, 93.2),
    (12, 3, 94.2),
    (12, 6, 94.9),
    (12, 9, 95.7),
    (13, 0, 96.4),
    (13, 3, 97.1),
    (13, 6, 97.7),
    (13, 9, 98.1),
    (14, 0, 98.3),
    (14, 3, 98.6),
    (14, 6, 98.9),
    (14, 9, 99.2),
    (15, 0, 99.4),
    (15, 3, 99.5),
    (15, 6, 99.6),
    (15, 9, 99.7),
    (16, 0, 99.8),
    (16, 3, 99.9),
    (16, 6, 99.9),
    (16, 9, 99.95),
    (17, 0, 100.0),
];

fn table(sex: Sex, tempo: Tempo) -> Table {
    match (sex, tempo) {
        (Sex::Male, Tempo::Average) => BOYS_AVERAGE,
        (Sex::Male, Tempo::Accelerated) => BOYS_ACCELERATED,
        (Sex::Male, Tempo::Retarded) => BOYS_RETARDED,
        (Sex::Female, Tempo::Average) => GIRLS_AVERAGE,
        (Sex::Female, Tempo::Accelerated) => GIRLS_ACCELERATED,
        (Sex::Female, Tempo::Retarded) => GIRLS_RETARDED,
    }
}

fn points(t: Table) -> Vec<(f64, f64)> {
    t.iter().map(|&(y, m, p)| (f64::from(y * 12 + m), p)).collect()
}

/// Skeletal ages (months) a table covers, for messages.
pub fn range_months(sex: Sex, tempo: Tempo) -> (f64, f64) {
    let t = table(sex, tempo);
    let first = t[0];
    let last = t[t.len() - 1];
    (f64::from(first.0 * 12 + first.1), f64::from(last.0 * 12 + last.1))
}

/// Percent of mature height reached at a bone age, `None` outside the table.
pub fn percent_of_mature_height(sex: Sex, tempo: Tempo, bone_age_months: f64) -> Option<f64> {
    super::interpolate(&points(table(sex, tempo)), bone_age_months)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predict_inches(sex: Sex, tempo: Tempo, ba_months: f64, height_in: f64) -> f64 {
        height_in / (percent_of_mature_height(sex, tempo, ba_months).unwrap() / 100.0)
    }

    #[test]
    fn worked_examples_from_the_paper() {
        // Boy, 13 y, SA 13-3, 60 in, Table IIB: 67.4 in.
        assert!((predict_inches(Sex::Male, Tempo::Average, 159.0, 60.0) - 67.4).abs() < 0.05);
        // Same boy at 51.5 in: 51.5 / 0.890 = 57.9 in.
        assert!((predict_inches(Sex::Male, Tempo::Average, 159.0, 51.5) - 57.9).abs() < 0.05);
        // Boy, 14 y, SA 15-6, 67.5 in, Table IID: "half way between 69 and 70".
        assert!((predict_inches(Sex::Male, Tempo::Accelerated, 186.0, 67.5) - 69.5).abs() < 0.05);
        // Girl, 12 y, SA 10-3, 55 in, Table IIIE: 62.2 in.
        assert!((predict_inches(Sex::Female, Tempo::Retarded, 123.0, 55.0) - 62.2).abs() < 0.05);
    }

    #[test]
    fn text_values_at_ten_years_for_girls() {
        // "at 10 years the average girl has completed 86.2 per cent ... the accelerated
        // ... 82.8 per cent, and the retarded ... 87.4 per cent".
        assert_eq!(percent_of_mature_height(Sex::Female, Tempo::Average, 120.0), Some(86.2));
        assert_eq!(percent_of_mature_height(Sex::Female, Tempo::Accelerated, 120.0), Some(82.8));
        assert_eq!(percent_of_mature_height(Sex::Female, Tempo::Retarded, 120.0), Some(87.4));
    }

    #[test]
    fn interpolates_and_refuses_to_extrapolate() {
        // Boys average, 13-1 and a half: between 87.6 (13-0) and 89.0 (13-3).
        let p = percent_of_mature_height(Sex::Male, Tempo::Average, 157.5).unwrap();
        assert!((p - 88.3).abs() < 1e-9, "{p}");
        assert_eq!(percent_of_mature_height(Sex::Male, Tempo::Average, 83.0), None);
        assert_eq!(percent_of_mature_height(Sex::Male, Tempo::Retarded, 157.0), None);
        assert_eq!(range_months(Sex::Female, Tempo::Average), (72.0, 216.0));
        assert_eq!(range_months(Sex::Male, Tempo::Accelerated), (84.0, 204.0));
        // 150 cm boy, BA 13-3 average: 150 / 0.89 = 168.5 cm.
        let cm =
            150.0 / (percent_of_mature_height(Sex::Male, Tempo::Average, 159.0).unwrap() / 100.0);
        assert!((cm - 168.54).abs() < 0.01, "{cm}");
    }

    #[test]
    fn tables_rise_to_maturity() {
        for sex in [Sex::Male, Sex::Female] {
            for tempo in [Tempo::Retarded, Tempo::Average, Tempo::Accelerated] {
                let p = points(table(sex, tempo));
                assert!(p.windows(2).all(|w| w[0].0 < w[1].0), "{sex} {tempo:?} ages");
                assert!(p.windows(2).all(|w| w[0].1 <= w[1].1), "{sex} {tempo:?} %");
                assert!(p.iter().all(|(_, pct)| (60.0..=100.0).contains(pct)));
            }
        }
    }

    #[test]
    fn tempo_by_difference() {
        assert_eq!(Tempo::from_difference_months(13.0), Tempo::Accelerated);
        assert_eq!(Tempo::from_difference_months(12.0), Tempo::Average);
        assert_eq!(Tempo::from_difference_months(-12.5), Tempo::Retarded);
    }
}
