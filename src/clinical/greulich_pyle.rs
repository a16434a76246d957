//! Reference spread of skeletal age around chronological age: the Greulich-Pyle
//! standard deviations from the Brush Foundation study.
//!
//! Source: W. W. Greulich, S. I. Pyle, *Radiographic Atlas of Skeletal Development of
//! the Hand and Wrist*, 2nd ed., Stanford University Press, 1959 (table of standard
//! deviations of skeletal age by chronological age, Brush Foundation sample). Values as
//! transcribed in the public repository lolzballs/mie429, `app/growth_chart.py`
//! (commit 11ac2193f05e7893530b57c49f539c6173af266d), `STD_DEV`; checked against our own
//! reading of that table, not against a scan of the atlas itself (see
//! docs/clinical-reading.md).
//!
//! The atlas gives the SD only at these ages; between them it is interpolated linearly,
//! outside them there is no reference and the caller must say so instead of guessing.

use crate::report::Sex;

/// (chronological age in months, SD of skeletal age in months), boys, 3 months to 17 years.
const BOYS_SD_MONTHS: [(f64, f64); 24] = [
    (3.0, 0.69),
    (6.0, 1.13),
    (9.0, 1.43),
    (12.0, 1.97),
    (18.0, 3.52),
    (24.0, 3.92),
    (30.0, 4.52),
    (36.0, 5.08),
    (42.0, 5.40),
    (48.0, 6.66),
    (54.0, 8.36),
    (60.0, 8.79),
    (72.0, 9.17),
    (84.0, 8.91),
    (96.0, 9.10),
    (108.0, 9.00),
    (120.0, 9.79),
    (132.0, 10.09),
    (144.0, 10.38),
    (156.0, 10.44),
    (168.0, 10.72),
    (180.0, 11.32),
    (192.0, 12.86),
    (204.0, 13.05),
];

/// As [`BOYS_SD_MONTHS`], girls, 3 months to 16 years (the atlas stops there for girls).
const GIRLS_SD_MONTHS: [(f64, f64); 23] = [
    (3.0, 0.72),
    (6.0, 1.16),
    (9.0, 1.36),
    (12.0, 1.77),
    (18.0, 3.49),
    (24.0, 4.64),
    (30.0, 5.37),
    (36.0, 5.97),
    (42.0, 7.48),
    (48.0, 8.98),
    (54.0, 10.73),
    (60.0, 11.65),
    (72.0, 10.23),
    (84.0, 9.64),
    (96.0, 10.23),
    (108.0, 10.74),
    (120.0, 11.73),
    (132.0, 11.94),
    (144.0, 10.24),
    (156.0, 10.67),
    (168.0, 11.30),
    (180.0, 9.23),
    (192.0, 7.31),
];

pub(crate) fn table(sex: Sex) -> &'static [(f64, f64)] {
    match sex {
        Sex::Male => &BOYS_SD_MONTHS,
        Sex::Female => &GIRLS_SD_MONTHS,
    }
}

/// SD of skeletal age (months) at a chronological age, `None` outside the table.
pub fn sd_months(sex: Sex, chronological_months: f64) -> Option<f64> {
    super::interpolate(table(sex), chronological_months)
}

/// The chronological ages the table covers (months), for messages.
pub fn range_months(sex: Sex) -> (f64, f64) {
    let t = table(sex);
    (t[0].0, t[t.len() - 1].0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabulated_points_are_exact() {
        assert_eq!(sd_months(Sex::Male, 120.0), Some(9.79));
        assert_eq!(sd_months(Sex::Female, 120.0), Some(11.73));
        assert_eq!(sd_months(Sex::Male, 3.0), Some(0.69));
        assert_eq!(sd_months(Sex::Male, 204.0), Some(13.05));
        assert_eq!(sd_months(Sex::Female, 192.0), Some(7.31));
    }

    #[test]
    fn interpolates_between_ages() {
        // Boys 10 y 4 m: a third of the way from 9.79 (10 y) to 10.09 (11 y) = 9.89.
        let sd = sd_months(Sex::Male, 124.0).unwrap();
        assert!((sd - 9.89).abs() < 1e-9, "{sd}");
        // Girls 5 y 6 m: halfway between 11.65 (5 y) and 10.23 (6 y) = 10.94.
        let sd = sd_months(Sex::Female, 66.0).unwrap();
        assert!((sd - 10.94).abs() < 1e-9, "{sd}");
    }

    #[test]
    fn outside_the_table_is_none() {
        assert_eq!(sd_months(Sex::Male, 2.0), None);
        assert_eq!(sd_months(Sex::Male, 205.0), None);
        assert_eq!(sd_months(Sex::Female, 193.0), None);
        assert_eq!(range_months(Sex::Female), (3.0, 192.0));
    }

    #[test]
    fn tables_are_sorted_and_positive() {
        for sex in [Sex::Male, Sex::Female] {
            let t = table(sex);
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(t.iter().all(|(_, sd)| *sd > 0.0));
        }
    }
}
