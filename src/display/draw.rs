//! Drawing the screens: layout, fonts, colours.
//!
//! Everything here is generic over an `embedded-graphics` target with `Rgb888` colours and
//! takes its geometry from `target.bounding_box()`, so one code path serves a 320x240 panel
//! and an 800x480 one. Fonts are the crate's monospace Latin-1 fonts, chosen by size class
//! and, for the headline numbers, scaled up by whole pixels. Every string is truncated or
//! wrapped to the cells it has (see [`super::text`]): a long file name or error message can
//! shorten, never overflow or overlap.
//!
//! Each call draws the whole screen from scratch; there is no partial update.

use embedded_graphics::mono_font::iso_8859_1::{
    FONT_10X20, FONT_6X10, FONT_7X13_BOLD, FONT_9X18_BOLD,
};
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};

use super::text::{truncate, wrap};
use super::{ResultView, Screen};
use crate::report::Age;
use crate::source::GrayImage;

const BACKGROUND: Rgb888 = Rgb888::new(12, 14, 20);
const FOREGROUND: Rgb888 = Rgb888::new(235, 235, 235);
/// Labels and secondary facts: readable, but quieter than the values.
const DIM: Rgb888 = Rgb888::new(150, 156, 170);
/// The bone age itself, the one number the user came for.
const HEADLINE: Rgb888 = Rgb888::new(120, 200, 255);
const WARNING: Rgb888 = Rgb888::new(255, 190, 40);
const FRAME: Rgb888 = Rgb888::new(90, 96, 110);
const BAND_READY: Rgb888 = Rgb888::new(24, 70, 140);
const BAND_BUSY: Rgb888 = Rgb888::new(0, 96, 110);
const BAND_RESULT: Rgb888 = Rgb888::new(20, 110, 60);
const BAND_ERROR: Rgb888 = Rgb888::new(170, 20, 20);

/// Screens at least this large (both sides) get the large fonts.
const LARGE_MIN: Size = Size::new(640, 400);

/// One font at one whole-pixel scale.
#[derive(Clone, Copy)]
struct Face {
    font: &'static MonoFont<'static>,
    scale: u32,
}

impl Face {
    const fn new(font: &'static MonoFont<'static>, scale: u32) -> Face {
        Face { font, scale }
    }

    /// Horizontal advance of one character (px).
    fn cell_width(self) -> u32 {
        (self.font.character_size.width + self.font.character_spacing) * self.scale
    }

    fn glyph_height(self) -> u32 {
        self.font.character_size.height * self.scale
    }

    /// Distance from one line's top to the next (px): glyphs plus a sixth for leading.
    fn line_height(self) -> u32 {
        self.glyph_height() + self.glyph_height().div_ceil(6)
    }

    /// How many characters fit in `width` pixels.
    fn chars_in(self, width: u32) -> usize {
        // The last character needs no spacing after it.
        ((width + self.font.character_spacing * self.scale) / self.cell_width()) as usize
    }

    /// The largest scale up to `max_scale` at which `text` fits in `width` pixels.
    fn fitting(font: &'static MonoFont<'static>, text: &str, width: u32, max_scale: u32) -> Face {
        let n = text.chars().count();
        (1..=max_scale.max(1))
            .rev()
            .map(|scale| Face::new(font, scale))
            .find(|f| f.chars_in(width) >= n)
            .unwrap_or(Face::new(font, 1))
    }
}

/// Sizes for one screen resolution.
struct Layout {
    area: Rectangle,
    margin: u32,
    /// Title in the coloured band at the top.
    title: Face,
    /// Ordinary lines.
    body: Face,
    /// Emphasised lines: device name, what went wrong.
    heading: Face,
    /// Largest scale allowed for the bone age headline.
    headline_max_scale: u32,
}

impl Layout {
    fn new(area: Rectangle) -> Layout {
        let large = area.size.width >= LARGE_MIN.width && area.size.height >= LARGE_MIN.height;
        if large {
            Layout {
                area,
                margin: 16,
                title: Face::new(&FONT_9X18_BOLD, 1),
                body: Face::new(&FONT_10X20, 1),
                heading: Face::new(&FONT_10X20, 2),
                headline_max_scale: 3,
            }
        } else {
            Layout {
                area,
                margin: 6,
                title: Face::new(&FONT_7X13_BOLD, 1),
                body: Face::new(&FONT_6X10, 1),
                heading: Face::new(&FONT_10X20, 1),
                headline_max_scale: 2,
            }
        }
    }

    fn band_height(&self) -> u32 {
        self.title.glyph_height() + self.margin
    }

    /// Everything below the band, inside the margins.
    fn body_area(&self) -> Rectangle {
        let m = self.margin;
        let top = self.band_height() + m;
        Rectangle::new(
            self.area.top_left + Point::new(m as i32, top as i32),
            Size::new(
                self.area.size.width.saturating_sub(2 * m),
                self.area.size.height.saturating_sub(top + m),
            ),
        )
    }
}

/// Draws `screen` over the whole of `target`.
///
/// # Errors
/// Only the target's own drawing errors (none for the in-memory canvas).
pub fn draw_screen<D>(target: &mut D, screen: &Screen) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let layout = Layout::new(target.bounding_box());
    target.clear(BACKGROUND)?;
    let (title, band) = match screen {
        Screen::Ready { .. } => ("Ready", BAND_READY),
        Screen::Capturing { .. } => ("Capturing", BAND_BUSY),
        Screen::Analysing { .. } => ("Analysing", BAND_BUSY),
        Screen::Result(_) => ("Bone age result", BAND_RESULT),
        Screen::Error { .. } => ("Error", BAND_ERROR),
    };
    draw_band(target, &layout, title, band)?;
    let body = layout.body_area();
    match screen {
        Screen::Ready { device_name, model_version, status_lines } => {
            draw_ready(target, &layout, body, device_name, model_version, status_lines)
        }
        Screen::Capturing { source } => {
            draw_busy(target, &layout, body, "Capturing radiograph", source)
        }
        Screen::Analysing { source } => {
            draw_busy(target, &layout, body, "Analysing radiograph", source)
        }
        Screen::Result(view) => draw_result(target, &layout, body, view),
        Screen::Error { what, action } => draw_error(target, &layout, body, what, action),
    }
}

fn draw_band<D>(target: &mut D, layout: &Layout, title: &str, color: Rgb888) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let band = Rectangle::new(
        layout.area.top_left,
        Size::new(layout.area.size.width, layout.band_height()),
    );
    target.fill_solid(&band, color)?;
    let m = layout.margin;
    let width = layout.area.size.width.saturating_sub(2 * m);
    let text = truncate(title, layout.title.chars_in(width));
    let top = band.top_left + Point::new(m as i32, (m / 2) as i32);
    draw_text(target, layout.title, FOREGROUND, &text, top)
}

fn draw_ready<D>(
    target: &mut D,
    layout: &Layout,
    body: Rectangle,
    device_name: &str,
    model_version: &str,
    status_lines: &[String],
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let mut col = Column::new(body);
    col.line(target, layout.heading, FOREGROUND, device_name)?;
    col.line(target, layout.body, DIM, &format!("Model: {model_version}"))?;
    col.gap(layout.body.line_height());
    // The invitation goes at the bottom; keep its row free.
    col.reserve_bottom(layout.heading.line_height());
    for line in status_lines {
        col.line(target, layout.body, FOREGROUND, line)?;
    }
    col.release_bottom();
    col.bottom_line(target, layout.heading, HEADLINE, "Waiting for a radiograph")
}

fn draw_busy<D>(
    target: &mut D,
    layout: &Layout,
    body: Rectangle,
    what: &str,
    source: &str,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let mut col = Column::new(body);
    col.wrapped(target, layout.heading, FOREGROUND, what, 2)?;
    col.gap(layout.body.line_height() / 2);
    col.line(target, layout.body, DIM, "Source:")?;
    col.reserve_bottom(layout.body.line_height());
    col.wrapped(target, layout.body, FOREGROUND, source, 3)?;
    col.release_bottom();
    col.bottom_line(target, layout.body, HEADLINE, "Please wait")
}

fn draw_error<D>(
    target: &mut D,
    layout: &Layout,
    body: Rectangle,
    what: &str,
    action: &str,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let mut col = Column::new(body);
    col.wrapped(target, layout.heading, FOREGROUND, what, 3)?;
    col.gap(layout.body.line_height());
    col.line(target, layout.body, DIM, "What to do:")?;
    col.wrapped(target, layout.body, FOREGROUND, action, usize::MAX)
}

fn draw_result<D>(
    target: &mut D,
    layout: &Layout,
    body: Rectangle,
    view: &ResultView,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    // Thumbnail on the right, at most 40% of the width, full body height.
    let mut text_area = body;
    if let Some(image) = &view.thumbnail {
        let box_size = Size::new(body.size.width * 2 / 5, body.size.height);
        let (w, h) = fit_size(image.width(), image.height(), box_size.width, box_size.height);
        if w > 2 && h > 2 {
            let top_left = body.top_left + Point::new((body.size.width - w) as i32, 0);
            draw_thumbnail(target, image, Rectangle::new(top_left, Size::new(w, h)))?;
            text_area.size.width = body.size.width.saturating_sub(w + layout.margin);
        }
    }

    let mut col = Column::new(text_area);
    // The last row of the text column always says what the number is (and is not).
    col.reserve_bottom(layout.body.line_height());
    let width = text_area.size.width;
    col.line(target, layout.body, DIM, "Bone age")?;
    let months = view.bone_age_months;
    let headline = years_months(months).unwrap_or_else(|| format!("{months:.0} m"));
    let face = Face::fitting(&FONT_10X20, &headline, width, layout.headline_max_scale);
    col.line(target, face, HEADLINE, &headline)?;
    col.line(target, layout.body, FOREGROUND, &format!("{months:.1} months"))?;
    if let Some(hw) = view.interval95_months {
        let (lo, hi) = ((months - hw).max(0.0), months + hw);
        col.line(target, layout.body, FOREGROUND, &format!("95%: {lo:.1} to {hi:.1} months"))?;
    }
    col.gap(layout.body.line_height() / 2);
    col.line(target, layout.body, FOREGROUND, &format!("Sex: {}", view.sex))?;
    if let Some(ca) = view.chronological_age_months {
        let text = match years_months(ca) {
            Some(ym) => format!("Chronological: {ym}"),
            None => format!("Chronological: {ca:.0} m"),
        };
        col.line(target, layout.body, FOREGROUND, &text)?;
    }
    if let Some(d) = view.difference_months {
        col.line(target, layout.body, FOREGROUND, &format!("Difference: {d:+.1} months"))?;
    }
    if let Some(category) = &view.category {
        col.wrapped(target, layout.body, HEADLINE, category, 2)?;
    }
    if let Some(cm) = view.adult_height_cm {
        col.line(target, layout.body, FOREGROUND, &format!("Adult height: {cm:.1} cm"))?;
    }
    if let Some(id) = &view.patient_id {
        col.line(target, layout.body, DIM, &format!("Patient: {}", latin1(id)))?;
    }
    if let Some(id) = &view.exam_id {
        col.line(target, layout.body, DIM, &format!("Exam: {}", latin1(id)))?;
    }
    if view.patient_id.is_none() && view.exam_id.is_none() {
        // Said, not left out: a screen without an id must not pass for the next patient's.
        col.line(target, layout.body, DIM, "Patient / exam: not given")?;
    }
    draw_warnings(target, layout, &mut col, &view.warnings)?;
    col.release_bottom();
    let full = "Not a certified medical device";
    let fits = layout.body.chars_in(width) >= full.chars().count();
    col.bottom_line(
        target,
        layout.body,
        DIM,
        if fits { full } else { "Decision aid, not certified" },
    )
}

/// The warnings, most important first (the caller's order), each shortened to its share of
/// the rows left; those that find no row are counted in a last line rather than dropped
/// in silence.
fn draw_warnings<D>(
    target: &mut D,
    layout: &Layout,
    col: &mut Column,
    warnings: &[String],
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    if warnings.is_empty() {
        return Ok(());
    }
    col.gap(layout.body.line_height() / 2);
    for (i, warning) in warnings.iter().enumerate() {
        let left = warnings.len() - i;
        let rows = col.lines_left(layout.body);
        // Keep a row for the "+N more" line unless this is the last warning, and leave
        // each later warning at least two rows.
        let room = if left > 1 { rows.saturating_sub(1) } else { rows };
        if room == 0 {
            let more = format!("! +{left} more warnings (report, HISTORY)");
            return col.line(target, layout.body, WARNING, &more);
        }
        let share = if left > 1 { (room / left).max(2) } else { room };
        col.wrapped(target, layout.body, WARNING, &format!("! {warning}"), share.min(room))?;
    }
    Ok(())
}

/// `10 y 4 m`, the atlas convention; `None` outside the ages [`Age`] accepts.
fn years_months(months: f64) -> Option<String> {
    Age::from_months(months).ok().map(|a| a.to_string())
}

/// A column of lines filling `area` from the top; lines that do not fit are dropped.
struct Column {
    area: Rectangle,
    /// Top of the next line.
    y: i32,
    /// Pixels at the bottom that ordinary lines must leave free.
    reserved: u32,
}

impl Column {
    fn new(area: Rectangle) -> Column {
        Column { area, y: area.top_left.y, reserved: 0 }
    }

    fn bottom(&self) -> i32 {
        self.area.top_left.y + self.area.size.height as i32 - self.reserved as i32
    }

    fn lines_left(&self, face: Face) -> usize {
        // The last line needs only its glyphs, not the leading below them.
        let room = self.bottom() - self.y + (face.line_height() - face.glyph_height()) as i32;
        (room.max(0) as u32 / face.line_height()) as usize
    }

    fn gap(&mut self, px: u32) {
        self.y += px as i32;
    }

    fn reserve_bottom(&mut self, px: u32) {
        self.reserved = px;
    }

    fn release_bottom(&mut self) {
        self.reserved = 0;
    }

    /// One line, truncated to the width; skipped when no row is left.
    fn line<D>(
        &mut self,
        target: &mut D,
        face: Face,
        color: Rgb888,
        text: &str,
    ) -> Result<(), D::Error>
    where
        D: DrawTarget<Color = Rgb888>,
    {
        if self.lines_left(face) == 0 {
            return Ok(());
        }
        let text = truncate(text, face.chars_in(self.area.size.width));
        draw_text(target, face, color, &text, Point::new(self.area.top_left.x, self.y))?;
        self.y += face.line_height() as i32;
        Ok(())
    }

    /// `text` word-wrapped into at most `max_lines` lines and the rows left.
    fn wrapped<D>(
        &mut self,
        target: &mut D,
        face: Face,
        color: Rgb888,
        text: &str,
        max_lines: usize,
    ) -> Result<(), D::Error>
    where
        D: DrawTarget<Color = Rgb888>,
    {
        let rows = self.lines_left(face).min(max_lines);
        for line in wrap(text, face.chars_in(self.area.size.width), rows) {
            self.line(target, face, color, &line)?;
        }
        Ok(())
    }

    /// One line on the last row of the area, if the lines above left it free.
    fn bottom_line<D>(
        &mut self,
        target: &mut D,
        face: Face,
        color: Rgb888,
        text: &str,
    ) -> Result<(), D::Error>
    where
        D: DrawTarget<Color = Rgb888>,
    {
        let top = self.bottom() - face.glyph_height() as i32;
        if top < self.y {
            return Ok(());
        }
        self.y = top;
        self.line(target, face, color, text)
    }
}

/// `id` in the fonts' Latin-1, any other character as its code point (`<U+5F20>`): the
/// fonts draw one shared `?` for those, and two patients must not show the same ID.
fn latin1(id: &str) -> String {
    id.chars()
        .map(|c| match u32::from(c) {
            0x20..=0x7E | 0xA0..=0xFF => c.to_string(),
            code => format!("<U+{code:04X}>"),
        })
        .collect()
}

/// Draws `text` with its top-left corner at `top_left`.
fn draw_text<D>(
    target: &mut D,
    face: Face,
    color: Rgb888,
    text: &str,
    top_left: Point,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let style = MonoTextStyle::new(face.font, color);
    if face.scale == 1 {
        Text::with_baseline(text, top_left, style, Baseline::Top).draw(target)?;
    } else {
        let mut scaled = Scaled { target, origin: top_left, scale: face.scale };
        Text::with_baseline(text, Point::zero(), style, Baseline::Top).draw(&mut scaled)?;
    }
    Ok(())
}

/// Draws each pixel as a `scale` x `scale` block from `origin`: bigger text from the
/// bitmap fonts, which stop at 10x20.
struct Scaled<'a, D> {
    target: &'a mut D,
    origin: Point,
    scale: u32,
}

impl<D: DrawTarget> Dimensions for Scaled<'_, D> {
    fn bounding_box(&self) -> Rectangle {
        let outer = self.target.bounding_box();
        let s = self.scale as i32;
        let top_left = outer.top_left - self.origin;
        Rectangle::new(
            Point::new(top_left.x.div_euclid(s), top_left.y.div_euclid(s)),
            outer.size / self.scale,
        )
    }
}

impl<D: DrawTarget> DrawTarget for Scaled<'_, D> {
    type Color = D::Color;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let size = Size::new(self.scale, self.scale);
        for Pixel(p, color) in pixels {
            let at = self.origin + p * self.scale as i32;
            self.target.fill_solid(&Rectangle::new(at, size), color)?;
        }
        Ok(())
    }
}

/// Largest `(width, height)` with the image's aspect ratio inside `max_w` x `max_h`.
pub(crate) fn fit_size(src_w: u32, src_h: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    if src_w == 0 || src_h == 0 || max_w == 0 || max_h == 0 {
        return (0, 0);
    }
    // Compare src_w / src_h with max_w / max_h without rounding: cross-multiply.
    let (sw, sh, mw, mh) = (u64::from(src_w), u64::from(src_h), u64::from(max_w), u64::from(max_h));
    if sw * mh >= mw * sh {
        (max_w, ((sh * mw) / sw).max(1) as u32)
    } else {
        (((sw * mh) / sh).max(1) as u32, max_h)
    }
}

/// Gray levels (0-255) of `image` resized to `w` x `h` by averaging the source pixels
/// under each output pixel (nearest pixel when enlarging). Averaging keeps a 2000-pixel
/// radiograph readable at thumbnail size where point sampling would alias.
pub(crate) fn resample(image: &GrayImage, w: u32, h: u32) -> Vec<u8> {
    let (sw, sh) = (u64::from(image.width()), u64::from(image.height()));
    let span = |i: u32, n: u32, src: u64| {
        let (i, n) = (u64::from(i), u64::from(n));
        let start = i * src / n;
        let end = ((i + 1) * src / n).max(start + 1).min(src);
        (start as u32, end as u32)
    };
    let mut out = Vec::with_capacity(w as usize * h as usize);
    for y in 0..h {
        let (y0, y1) = span(y, h, sh);
        for x in 0..w {
            let (x0, x1) = span(x, w, sw);
            let mut sum = 0.0f64;
            for sy in y0..y1 {
                for sx in x0..x1 {
                    let v = f64::from(image.get_pixel(sx, sy)[0]);
                    // NaN and out-of-range values from a broken source show as black/white.
                    sum += if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
                }
            }
            let count = f64::from((y1 - y0) * (x1 - x0));
            out.push((sum / count * 255.0).round() as u8);
        }
    }
    out
}

/// The radiograph scaled into `frame` (already fitted to its aspect ratio), framed.
fn draw_thumbnail<D>(target: &mut D, image: &GrayImage, frame: Rectangle) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    frame.into_styled(PrimitiveStyle::with_stroke(FRAME, 1)).draw(target)?;
    let inner = frame.offset(-1);
    let gray = resample(image, inner.size.width, inner.size.height);
    target.fill_contiguous(&inner, gray.into_iter().map(|v| Rgb888::new(v, v, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Latin-1 IDs show as they are; others keep their code points, so they stay distinct.
    #[test]
    fn ids_beyond_the_font_stay_distinct() {
        assert_eq!(latin1("Müller-7"), "Müller-7");
        assert_eq!(latin1("张伟-1"), "<U+5F20><U+4F1F>-1");
        assert_ne!(latin1("张伟-1"), latin1("李娜-1"));
    }

    #[test]
    fn fit_keeps_aspect_ratio() {
        assert_eq!(fit_size(1000, 2000, 100, 100), (50, 100));
        assert_eq!(fit_size(2000, 1000, 100, 100), (100, 50));
        assert_eq!(fit_size(10, 10, 100, 50), (50, 50));
        assert_eq!(fit_size(1, 10_000, 100, 100), (1, 100));
        assert_eq!(fit_size(0, 10, 100, 100), (0, 0));
    }

    #[test]
    fn resample_averages_and_enlarges() {
        let img = GrayImage::from_fn(4, 2, |x, _| image::Luma([if x < 2 { 0.0 } else { 1.0 }]));
        assert_eq!(resample(&img, 2, 1), [0, 255]);
        assert_eq!(resample(&img, 1, 1), [128]);
        assert_eq!(resample(&img, 8, 1), [0, 0, 0, 0, 255, 255, 255, 255]);
        let odd = GrayImage::from_fn(1, 1, |_, _| image::Luma([f32::NAN]));
        assert_eq!(resample(&odd, 2, 2), [0; 4]);
    }

    #[test]
    fn faces_fit_their_width() {
        let f = Face::new(&FONT_6X10, 1);
        assert_eq!(f.chars_in(60), 10);
        let big = Face::fitting(&FONT_10X20, "10 y 11 m", 200, 3);
        assert_eq!(big.scale, 2);
        assert!(big.chars_in(200) >= 9);
        assert_eq!(Face::fitting(&FONT_10X20, "very long text", 20, 3).scale, 1);
    }
}
