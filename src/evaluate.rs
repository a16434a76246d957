//! Accuracy on a labelled folder: the format of RSNA-100px (`id,male,boneage` and
//! `<id>.png` images), the same figures the model card reports.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::model::{Estimate, ViewSpreadRule};
use crate::report::{Sex, MAX_AGE_MONTHS};

/// Age bands (years) for the per-band MAE, as in the model card: each from its lower end,
/// up to but not including its upper one, except the last, which takes every older case
/// too (labels reach 19 years, and [`MAX_AGE_MONTHS`] is allowed).
pub const AGE_BANDS_YEARS: [(u32, u32); 4] = [(0, 5), (5, 10), (10, 15), (15, 19)];

/// One labelled case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub id: String,
    pub sex: Sex,
    pub bone_age_months: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("cannot read labels {}: {source}", path.display())]
    Read { path: PathBuf, source: csv::Error },
    #[error("labels {} line {line}: {message} (expected columns id,male,boneage; male is true/false)", path.display())]
    Row { path: PathBuf, line: u64, message: String },
    #[error("labels {} has no rows", path.display())]
    Empty { path: PathBuf },
}

/// Reads `id,male,boneage` (header required, column order free).
///
/// # Errors
/// [`LabelsError`] with the file and line of the first bad row.
pub fn read_labels(path: &Path) -> Result<Vec<Case>, LabelsError> {
    let read_err = |source| LabelsError::Read { path: path.to_path_buf(), source };
    let mut reader = csv::Reader::from_path(path).map_err(read_err)?;
    let headers = reader.headers().map_err(read_err)?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let (Some(ci), Some(cm), Some(ca)) = (col("id"), col("male"), col("boneage")) else {
        return Err(LabelsError::Row {
            path: path.to_path_buf(),
            line: 1,
            message: format!("header is {:?}", headers.iter().collect::<Vec<_>>()),
        });
    };
    let mut cases = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for record in reader.records() {
        let record = record.map_err(read_err)?;
        let line = record.position().map_or(0, |p| p.line());
        let row_err =
            |message: String| LabelsError::Row { path: path.to_path_buf(), line, message };
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let sex = match field(cm).to_ascii_lowercase().as_str() {
            "true" | "1" => Sex::Male,
            "false" | "0" => Sex::Female,
            other => return Err(row_err(format!("male is {other:?}"))),
        };
        let age: f64 = field(ca)
            .parse()
            .ok()
            .filter(|a: &f64| a.is_finite() && (0.0..=MAX_AGE_MONTHS).contains(a))
            .ok_or_else(|| {
                row_err(format!(
                    "boneage is {:?}; expected months, 0 to {MAX_AGE_MONTHS}",
                    field(ca)
                ))
            })?;
        let id = field(ci).to_string();
        // A repeated id would count one image twice and skew the MAE without a trace.
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(row_err(format!("id {id:?} repeats line {first}")));
        }
        cases.push(Case { id, sex, bone_age_months: age });
    }
    if cases.is_empty() {
        return Err(LabelsError::Empty { path: path.to_path_buf() });
    }
    Ok(cases)
}

/// A labelled case and the model's reading of it.
pub type Scored = (Case, Estimate);

/// Mean absolute error, count and interval coverage for a subgroup.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub name: String,
    pub n: usize,
    pub mae: f64,
    /// Share of readings whose 95% interval holds the label: the check that the
    /// calibration in the model still holds; `None` when the model ships no intervals.
    pub interval95_coverage: Option<f64>,
}

impl Group {
    /// `None` for an empty group.
    fn of<'a>(name: String, scored: impl Iterator<Item = &'a Scored>) -> Option<Group> {
        let (mut n, mut sum, mut with_interval, mut covered) = (0, 0.0, 0, 0);
        for (case, est) in scored {
            let error = (est.bone_age_months - case.bone_age_months).abs();
            n += 1;
            sum += error;
            if let Some(hw) = est.interval95_months {
                with_interval += 1;
                covered += usize::from(error <= hw);
            }
        }
        (n > 0).then(|| Group {
            name,
            n,
            mae: sum / n as f64,
            interval95_coverage: (with_interval == n).then(|| covered as f64 / n as f64),
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    pub n: usize,
    pub mae: f64,
    pub rmse: f64,
    /// Median absolute error: what a typical reading is off by, unmoved by the few far off.
    pub median_abs_error: f64,
    /// Mean of prediction minus truth: positive means the model reads ages too old.
    pub bias: f64,
    /// As [`Group::interval95_coverage`], over all readings.
    pub interval95_coverage: Option<f64>,
    pub by_sex: Vec<Group>,
    pub by_age_band_years: Vec<Group>,
}

/// MAE and interval coverage of the readings the model flags as unstable (test-time views
/// disagreeing, see [`ViewSpreadRule`]) and of the rest: the check that the warning marks
/// the weaker readings on labelled data and that their widened interval holds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpreadCheck {
    pub warn_from_months: f64,
    /// `None` when no reading was flagged.
    pub flagged: Option<Group>,
    /// `None` when every reading was.
    pub rest: Option<Group>,
}

impl SpreadCheck {
    /// `None` when the model has no rule or the readings have one view.
    pub fn compute(results: &[Scored], rule: Option<ViewSpreadRule>) -> Option<Self> {
        let rule = rule?;
        let group = |name: &str, flagged: bool| {
            Group::of(
                name.into(),
                results.iter().filter(|(_, est)| {
                    est.view_spread_months.is_some_and(|sd| rule.flags(sd) == flagged)
                }),
            )
        };
        let (flagged, rest) = (group("views disagree", true), group("views agree", false));
        (flagged.is_some() || rest.is_some()).then_some(SpreadCheck {
            warn_from_months: rule.warn_from_months,
            flagged,
            rest,
        })
    }
}

impl Metrics {
    /// `None` when there are no results.
    pub fn compute(results: &[Scored]) -> Option<Metrics> {
        let all = Group::of("all".into(), results.iter())?;
        let n = results.len() as f64;
        let err = |(c, e): &Scored| e.bone_age_months - c.bone_age_months;
        let group = |name: String, pick: &dyn Fn(&Case) -> bool| {
            Group::of(name, results.iter().filter(|r| pick(&r.0)))
        };
        let by_sex = [Sex::Male, Sex::Female]
            .into_iter()
            .filter_map(|s| group(s.to_string(), &move |c: &Case| c.sex == s))
            .collect();
        let last = AGE_BANDS_YEARS.len() - 1;
        let by_age_band_years = AGE_BANDS_YEARS
            .iter()
            .enumerate()
            .filter_map(|(i, &(lo, hi))| {
                let lo_m = f64::from(lo * 12);
                let hi_m = if i == last { f64::INFINITY } else { f64::from(hi * 12) };
                group(format!("{lo}-{hi}"), &move |c: &Case| {
                    c.bone_age_months >= lo_m && c.bone_age_months < hi_m
                })
            })
            .collect();
        Some(Metrics {
            n: all.n,
            mae: all.mae,
            rmse: (results.iter().map(|r| err(r).powi(2)).sum::<f64>() / n).sqrt(),
            median_abs_error: median(results.iter().map(|r| err(r).abs()).collect()),
            bias: results.iter().map(err).sum::<f64>() / n,
            interval95_coverage: all.interval95_coverage,
            by_sex,
            by_age_band_years,
        })
    }
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(sex: Sex, age: f64, predicted: f64, hw: Option<f64>, sd: Option<f64>) -> Scored {
        let est = Estimate {
            bone_age_months: predicted,
            interval95_months: hw,
            view_spread_months: sd,
            ood_score: None,
            centre_ood_score: None,
        };
        (Case { id: "x".into(), sex, bone_age_months: age }, est)
    }

    #[test]
    fn metrics_by_hand() {
        let r = vec![
            scored(Sex::Male, 24.0, 30.0, Some(5.0), None), // +6, band 0-5, not covered
            scored(Sex::Female, 130.0, 126.0, Some(4.0), None), // -4, band 10-15, covered
        ];
        let m = Metrics::compute(&r).unwrap();
        assert_eq!(m.n, 2);
        assert!((m.mae - 5.0).abs() < 1e-12);
        assert!((m.bias - 1.0).abs() < 1e-12);
        assert!((m.rmse - (26.0f64).sqrt()).abs() < 1e-12);
        assert!((m.median_abs_error - 5.0).abs() < 1e-12);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(m.interval95_coverage, Some(0.5));
        let male = Group { name: "male".into(), n: 1, mae: 6.0, interval95_coverage: Some(0.0) };
        assert_eq!(m.by_sex[0], male);
        assert_eq!(m.by_age_band_years.len(), 2);
        assert_eq!(m.by_age_band_years[1].name, "10-15");
        // Every case is in one band: 19 years (the oldest labels) and older in the last.
        let old = [
            scored(Sex::Male, 228.0, 220.0, None, None),
            scored(Sex::Male, 240.0, 230.0, None, None),
        ];
        let bands = Metrics::compute(&old).unwrap().by_age_band_years;
        assert_eq!((bands.len(), bands[0].name.as_str(), bands[0].n), (1, "15-19", 2));
        assert!(Metrics::compute(&[]).is_none());
        // A model without an interval table: no coverage to report, not 0%.
        let no_intervals = vec![scored(Sex::Male, 24.0, 30.0, None, None)];
        assert_eq!(Metrics::compute(&no_intervals).unwrap().interval95_coverage, None);
    }

    #[test]
    fn spread_check_splits_on_the_threshold() {
        let r = vec![
            scored(Sex::Male, 100.0, 110.0, Some(36.0), Some(5.0)), // flagged, error 10
            scored(Sex::Male, 100.0, 98.0, Some(1.0), Some(1.0)),   // error 2, not covered
            scored(Sex::Female, 100.0, 104.0, Some(36.0), Some(4.4)), // at the threshold: flagged
        ];
        let rule = ViewSpreadRule { warn_from_months: 4.4, interval95_months: Some(36.0) };
        let c = SpreadCheck::compute(&r, Some(rule)).unwrap();
        let group = |name: &str, n, mae, cov| Group {
            name: name.into(),
            n,
            mae,
            interval95_coverage: Some(cov),
        };
        assert_eq!(c.flagged, Some(group("views disagree", 2, 7.0, 1.0)));
        assert_eq!(c.rest, Some(group("views agree", 1, 2.0, 0.0)));
        assert_eq!(SpreadCheck::compute(&r, None), None);
        let one_view: Vec<_> =
            r.into_iter().map(|(c, e)| (c, Estimate { view_spread_months: None, ..e })).collect();
        assert_eq!(SpreadCheck::compute(&one_view, Some(rule)), None);
    }

    #[test]
    fn labels_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.csv");
        std::fs::write(&p, "id,male,boneage\n1,true,120\n2,maybe,100\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("maybe"), "{e}");
        std::fs::write(&p, "id,male,boneage\n1,true,120\n2,False,100\n").unwrap();
        let cases = read_labels(&p).unwrap();
        assert_eq!(cases[1].sex, Sex::Female);
        std::fs::write(&p, "id,male,boneage\n1,true,120\n1,true,120\n").unwrap();
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("repeats line 2"), "{e}");
        std::fs::write(&p, "id,male,boneage\n1,true,9999\n").unwrap();
        assert!(read_labels(&p).unwrap_err().to_string().contains("9999"));
    }
}
