//! Pixels of a DICOM image that are not part of the radiograph: Pixel Padding Value (with
//! its Range Limit), which a detector writes outside its exposed area, and the Display
//! Shutter module, the collimator outline a modality asks viewers to blank. Neither the
//! grey-level stretch nor the model should see them. Left in, an unexposed frame shows
//! bright, and the quality gate reads a bright frame as an inverted image.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// Stored pixel values that mark padding, inclusive (PS3.3 C.7.5.1.1.2). They are in
/// stored units, before Rescale Slope/Intercept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Padding {
    low: i64,
    high: i64,
}

impl Padding {
    /// Reads Pixel Padding Value and Range Limit. `signed` is Pixel Representation 1: the
    /// tags are US or SS by it, and a parser without the VR (implicit syntax) reads SS as
    /// US, so values above 32767 are taken back to their 16-bit two's complement.
    pub(super) fn read(obj: &InMemDicomObject, signed: bool) -> Result<Option<Padding>, String> {
        let value = |tag, name: &str| -> Result<Option<i64>, String> {
            let Some(element) = obj.element_opt(tag).ok().flatten() else { return Ok(None) };
            if element.to_str().is_ok_and(|s| s.trim().is_empty()) {
                return Ok(None);
            }
            let v = element.to_int::<i64>().map_err(|_| {
                format!(
                    "its {name} is not a whole number ({:?}); correct or remove the tag",
                    element.to_str().unwrap_or_default()
                )
            })?;
            Ok(Some(if signed && v > i64::from(i16::MAX) { v - 65_536 } else { v }))
        };
        let Some(padding) = value(tags::PIXEL_PADDING_VALUE, "Pixel Padding Value")? else {
            return Ok(None);
        };
        let limit =
            value(tags::PIXEL_PADDING_RANGE_LIMIT, "Pixel Padding Range Limit")?.unwrap_or(padding);
        Ok(Some(Padding { low: padding.min(limit), high: padding.max(limit) }))
    }

    pub(super) fn contains(&self, stored: i64) -> bool {
        (self.low..=self.high).contains(&stored)
    }
}

/// One outline of the Display Shutter module (PS3.3 C.7.6.11), in DICOM image
/// coordinates: rows and columns counted from 1 at the top left.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Rectangle {
        left: f64,
        right: f64,
        upper: f64,
        lower: f64,
    },
    Circle {
        row: f64,
        column: f64,
        radius: f64,
    },
    /// Vertices as (row, column).
    Polygon(Vec<(f64, f64)>),
}

impl Shape {
    fn shows(&self, row: f64, column: f64) -> bool {
        match self {
            Shape::Rectangle { left, right, upper, lower } => {
                (*left..=*right).contains(&column) && (*upper..=*lower).contains(&row)
            }
            Shape::Circle { row: r, column: c, radius } => {
                (row - r).powi(2) + (column - c).powi(2) <= radius.powi(2)
            }
            Shape::Polygon(vertices) => inside_polygon(vertices, row, column),
        }
    }
}

/// Even-odd rule: a ray from the point crosses the outline an odd number of times.
fn inside_polygon(vertices: &[(f64, f64)], row: f64, column: f64) -> bool {
    let Some(&last) = vertices.last() else { return false };
    let mut inside = false;
    let mut previous = last;
    for &current in vertices {
        let ((r1, c1), (r2, c2)) = (previous, current);
        if (r1 > row) != (r2 > row) && column < c1 + (row - r1) * (c2 - c1) / (r2 - r1) {
            inside = !inside;
        }
        previous = current;
    }
    inside
}

/// The display shutter of an image: what is shown is inside every one of its shapes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Shutter {
    shapes: Vec<Shape>,
}

impl Shutter {
    /// Reads Shutter Shape and the attributes each shape requires. A shape named but not
    /// described, or one this program does not apply (BITMAP), is refused: ignoring it
    /// would let the collimator area reach the model.
    pub(super) fn read(obj: &InMemDicomObject) -> Result<Option<Shutter>, String> {
        let Some(shape) = obj.element_opt(tags::SHUTTER_SHAPE).ok().flatten() else {
            return Ok(None);
        };
        let names: Vec<String> = shape
            .to_multi_str()
            .map(|v| v.iter().map(|s| s.trim().to_ascii_uppercase()).collect())
            .unwrap_or_default();
        let numbers = |tag, name: &str, count: &dyn Fn(usize) -> bool| {
            let values = obj
                .element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_multi_float64().ok())
                .filter(|v| count(v.len()) && v.iter().all(|x| x.is_finite()));
            values.ok_or_else(|| {
                format!(
                    "its display shutter is {} but {name} is missing or malformed; export the \
                     image again with the shutter burnt in, or without one",
                    names.join("\\")
                )
            })
        };
        let mut shapes = Vec::new();
        for name in names.iter().filter(|n| !n.is_empty()) {
            shapes.push(match name.as_str() {
                "RECTANGULAR" => {
                    let edge = |tag, name| numbers(tag, name, &|n| n == 1).map(|v| v[0]);
                    Shape::Rectangle {
                        left: edge(tags::SHUTTER_LEFT_VERTICAL_EDGE, "Shutter Left Vertical Edge")?,
                        right: edge(
                            tags::SHUTTER_RIGHT_VERTICAL_EDGE,
                            "Shutter Right Vertical Edge",
                        )?,
                        upper: edge(
                            tags::SHUTTER_UPPER_HORIZONTAL_EDGE,
                            "Shutter Upper Horizontal Edge",
                        )?,
                        lower: edge(
                            tags::SHUTTER_LOWER_HORIZONTAL_EDGE,
                            "Shutter Lower Horizontal Edge",
                        )?,
                    }
                }
                "CIRCULAR" => {
                    let centre = numbers(
                        tags::CENTER_OF_CIRCULAR_SHUTTER,
                        "Center of Circular Shutter",
                        &|n| n == 2,
                    )?;
                    let radius = numbers(
                        tags::RADIUS_OF_CIRCULAR_SHUTTER,
                        "Radius of Circular Shutter",
                        &|n| n == 1,
                    )?;
                    Shape::Circle { row: centre[0], column: centre[1], radius: radius[0] }
                }
                "POLYGONAL" => {
                    let v = numbers(
                        tags::VERTICES_OF_THE_POLYGONAL_SHUTTER,
                        "Vertices of the Polygonal Shutter",
                        &|n| n >= 6 && n % 2 == 0,
                    )?;
                    Shape::Polygon(v.chunks(2).map(|p| (p[0], p[1])).collect())
                }
                other => {
                    return Err(format!(
                        "its display shutter is {other}, which this program does not apply; \
                         export the image with the shutter burnt in, or as a rectangular, \
                         circular or polygonal shutter"
                    ))
                }
            });
        }
        Ok((!shapes.is_empty()).then_some(Shutter { shapes }))
    }

    /// Whether the pixel at 0-based `(x, y)` is shown, judged at its centre.
    pub(super) fn shows(&self, x: u32, y: u32) -> bool {
        let (row, column) = (f64::from(y) + 1.0, f64::from(x) + 1.0);
        self.shapes.iter().all(|s| s.shows(row, column))
    }
}

/// Which pixels (row-major) are hidden, by padding (judged on the stored values) or by
/// the shutter; `None` when the file marks nothing.
pub(super) fn hidden(
    width: u32,
    height: u32,
    stored: Option<(&[i32], Padding)>,
    shutter: Option<&Shutter>,
) -> Option<Vec<bool>> {
    if stored.is_none() && shutter.is_none() {
        return None;
    }
    let mut hidden = vec![false; (width as usize) * (height as usize)];
    if let Some((values, padding)) = stored {
        for (h, &v) in hidden.iter_mut().zip(values) {
            *h = padding.contains(i64::from(v));
        }
    }
    if let Some(shutter) = shutter {
        for (i, h) in hidden.iter_mut().enumerate() {
            let (x, y) = ((i % width as usize) as u32, (i / width as usize) as u32);
            *h = *h || !shutter.shows(x, y);
        }
    }
    Some(hidden)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn obj(elements: &[(dicom_object::Tag, VR, PrimitiveValue)]) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        for (tag, vr, value) in elements {
            o.put(DataElement::new(*tag, *vr, value.clone()));
        }
        o
    }

    /// A text value as a parsed file holds it: backslash-separated values apart.
    fn is(v: &str) -> PrimitiveValue {
        PrimitiveValue::Strs(v.split('\\').map(String::from).collect())
    }

    /// Draws what a shutter shows on a small grid, `#` shown and `.` hidden.
    fn draw(s: &Shutter, width: u32, height: u32) -> Vec<String> {
        (0..height)
            .map(|y| (0..width).map(|x| if s.shows(x, y) { '#' } else { '.' }).collect())
            .collect()
    }

    #[test]
    fn padding_value_and_range() {
        let none = obj(&[]);
        assert_eq!(Padding::read(&none, false), Ok(None));
        let single = obj(&[(tags::PIXEL_PADDING_VALUE, VR::US, PrimitiveValue::from(0u16))]);
        let p = Padding::read(&single, false).unwrap().unwrap();
        assert!(p.contains(0) && !p.contains(1));
        // A range may be given either way round.
        let range = obj(&[
            (tags::PIXEL_PADDING_VALUE, VR::US, PrimitiveValue::from(4095u16)),
            (tags::PIXEL_PADDING_RANGE_LIMIT, VR::US, PrimitiveValue::from(4000u16)),
        ]);
        let p = Padding::read(&range, false).unwrap().unwrap();
        assert!(p.contains(4000) && p.contains(4095) && !p.contains(3999));
        // -2000 as SS, and as the same 16 bits read as US (implicit VR).
        for value in [PrimitiveValue::from(-2000i16), PrimitiveValue::from(63_536u16)] {
            let signed = obj(&[(tags::PIXEL_PADDING_VALUE, VR::SS, value)]);
            assert_eq!(
                Padding::read(&signed, true).unwrap(),
                Some(Padding { low: -2000, high: -2000 })
            );
        }
        let text = obj(&[(tags::PIXEL_PADDING_VALUE, VR::US, is("none"))]);
        let e = Padding::read(&text, false).unwrap_err();
        assert!(e.contains("Pixel Padding Value is not a whole number"), "{e}");
    }

    #[test]
    fn shutter_shapes_hide_what_is_outside_every_one() {
        let rectangle = [
            (tags::SHUTTER_SHAPE, VR::CS, is("RECTANGULAR")),
            (tags::SHUTTER_LEFT_VERTICAL_EDGE, VR::IS, is("2")),
            (tags::SHUTTER_RIGHT_VERTICAL_EDGE, VR::IS, is("5")),
            (tags::SHUTTER_UPPER_HORIZONTAL_EDGE, VR::IS, is("2")),
            (tags::SHUTTER_LOWER_HORIZONTAL_EDGE, VR::IS, is("3")),
        ];
        let s = Shutter::read(&obj(&rectangle)).unwrap().unwrap();
        assert_eq!(draw(&s, 6, 4), ["......", ".####.", ".####.", "......"]);

        let circle = [
            (tags::SHUTTER_SHAPE, VR::CS, is("CIRCULAR")),
            (tags::CENTER_OF_CIRCULAR_SHUTTER, VR::IS, is("3\\3")),
            (tags::RADIUS_OF_CIRCULAR_SHUTTER, VR::IS, is("2")),
        ];
        let s = Shutter::read(&obj(&circle)).unwrap().unwrap();
        assert_eq!(draw(&s, 5, 5), ["..#..", ".###.", "#####", ".###.", "..#.."]);

        // A triangle whose slanted side passes just right of the pixel centres on the
        // diagonal: one pixel shown in row 1, widening to five in row 5.
        let polygon = [
            (tags::SHUTTER_SHAPE, VR::CS, is("POLYGONAL")),
            (tags::VERTICES_OF_THE_POLYGONAL_SHUTTER, VR::IS, is("0.5\\0.5\\5.5\\0.5\\5.5\\6.5")),
        ];
        let s = Shutter::read(&obj(&polygon)).unwrap().unwrap();
        assert_eq!(draw(&s, 5, 5), ["#....", "##...", "###..", "####.", "#####"]);

        // Shapes combine: only what every one shows is shown.
        let mut both = rectangle.to_vec();
        both[0].2 = is("RECTANGULAR\\CIRCULAR");
        both.extend(circle.iter().skip(1).cloned());
        let s = Shutter::read(&obj(&both)).unwrap().unwrap();
        assert_eq!(draw(&s, 6, 4), ["......", ".###..", ".####.", "......"]);
    }

    #[test]
    fn a_shutter_that_cannot_be_applied_is_refused() {
        assert_eq!(Shutter::read(&obj(&[])), Ok(None));
        let e =
            Shutter::read(&obj(&[(tags::SHUTTER_SHAPE, VR::CS, is("RECTANGULAR"))])).unwrap_err();
        assert!(e.contains("RECTANGULAR but Shutter Left Vertical Edge is missing"), "{e}");
        let two_vertices = [
            (tags::SHUTTER_SHAPE, VR::CS, is("POLYGONAL")),
            (tags::VERTICES_OF_THE_POLYGONAL_SHUTTER, VR::IS, is("1\\1\\5\\5")),
        ];
        let e = Shutter::read(&obj(&two_vertices)).unwrap_err();
        assert!(e.contains("Vertices of the Polygonal Shutter is missing or malformed"), "{e}");
        let e = Shutter::read(&obj(&[(tags::SHUTTER_SHAPE, VR::CS, is("BITMAP"))])).unwrap_err();
        assert!(e.contains("BITMAP, which this program does not apply"), "{e}");
    }

    #[test]
    fn padding_and_shutter_together() {
        let padding = Padding { low: 0, high: 0 };
        let stored = [0, 5, 5, 5, 5, 0];
        let rectangle = Shutter {
            shapes: vec![Shape::Rectangle { left: 1.0, right: 2.0, upper: 1.0, lower: 2.0 }],
        };
        assert_eq!(hidden(3, 2, None, None), None);
        assert_eq!(
            hidden(3, 2, Some((&stored, padding)), None),
            Some(vec![true, false, false, false, false, true])
        );
        assert_eq!(
            hidden(3, 2, Some((&stored, padding)), Some(&rectangle)),
            Some(vec![true, false, true, false, false, true])
        );
    }
}
