//! PNG renderer: the same page drawn with embedded-graphics' mono fonts into an 8-bit
//! gray framebuffer, then encoded once.

use std::convert::Infallible;

use embedded_graphics::mono_font::ascii::{FONT_10X20, FONT_7X13};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::{Gray8, GrayColor};
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text};

use super::Sheet;

/// Page size (pixels): A4 proportions at about 97 dpi.
const PAGE_PX: (u32, u32) = (800, 1131);
const MARGIN_PX: i32 = 40;
const LINE_PX: i32 = 17;

/// A gray image as an embedded-graphics target.
struct Canvas(image::GrayImage);

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas {
    type Color = Gray8;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Gray8>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        let (w, h) = self.0.dimensions();
        for Pixel(p, color) in pixels {
            if let (Ok(x), Ok(y)) = (u32::try_from(p.x), u32::try_from(p.y)) {
                if x < w && y < h {
                    self.0.put_pixel(x, y, image::Luma([color.luma()]));
                }
            }
        }
        Ok(())
    }
}

/// Width of the disclaimer's lines, in characters.
const DISCLAIMER_CHARS: usize = 90;

/// The page height the sheet needs: A4 proportions, or taller when a reading carries more
/// warnings than that holds (an image has no second page, and the disclaimer and footer
/// must not be cut off).
fn page_height(sheet: &Sheet) -> u32 {
    let lines = sheet.lines().len() as i32;
    let text_bottom =
        (TEXT_TOP_PX + lines * LINE_PX).max(TEXT_TOP_PX + sheet.thumbnail.height() as i32);
    let disclaimer = super::wrap(&sheet.disclaimer, DISCLAIMER_CHARS).len() as i32;
    let needed = text_bottom + 2 * LINE_PX + disclaimer * LINE_PX + 2 * LINE_PX + MARGIN_PX;
    PAGE_PX.1.max(u32::try_from(needed).unwrap_or(PAGE_PX.1))
}

/// Where the body text (and the thumbnail) starts, below the title.
const TEXT_TOP_PX: i32 = MARGIN_PX + 40;

pub(super) fn render(sheet: &Sheet) -> Result<Vec<u8>, String> {
    let height = page_height(sheet);
    let mut canvas = Canvas(image::GrayImage::from_pixel(PAGE_PX.0, height, image::Luma([255])));
    draw(&mut canvas, sheet);
    let mut out = std::io::Cursor::new(Vec::new());
    canvas.0.write_to(&mut out, image::ImageFormat::Png).map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

fn draw<D: DrawTarget<Color = Gray8>>(target: &mut D, sheet: &Sheet) {
    let size = target.bounding_box().size;
    let title = MonoTextStyle::new(&FONT_10X20, Gray8::BLACK);
    let body = MonoTextStyle::new(&FONT_7X13, Gray8::BLACK);
    let mut y = MARGIN_PX;
    let _ = Text::with_baseline(&sheet.title, Point::new(MARGIN_PX, y), title, Baseline::Top)
        .draw(target);
    y = TEXT_TOP_PX;

    // Thumbnail at the top right; the text column below it is narrower than the page.
    let t = &sheet.thumbnail;
    let tx = size.width as i32 - MARGIN_PX - t.width() as i32;
    let pixels = t
        .enumerate_pixels()
        .map(|(x, py, p)| Pixel(Point::new(tx + x as i32, y + py as i32), Gray8::new(p.0[0])));
    let _ = target.draw_iter(pixels);
    let thumb_bottom = y + t.height() as i32;

    for line in sheet.lines() {
        let _ =
            Text::with_baseline(&line, Point::new(MARGIN_PX, y), body, Baseline::Top).draw(target);
        y += LINE_PX;
    }
    y = y.max(thumb_bottom) + 2 * LINE_PX;
    for line in super::wrap(&sheet.disclaimer, DISCLAIMER_CHARS) {
        let _ =
            Text::with_baseline(&line, Point::new(MARGIN_PX, y), body, Baseline::Top).draw(target);
        y += LINE_PX;
    }
    let foot = Point::new(MARGIN_PX, size.height as i32 - MARGIN_PX);
    let _ = Text::with_baseline(&sheet.footer, foot, body, Baseline::Bottom).draw(target);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading with many long warnings gets a taller page, with the disclaimer above
    /// the footer; an ordinary one keeps the A4 size.
    #[test]
    fn many_warnings_make_the_page_taller() {
        let mut sheet = super::super::tests::sheet();
        assert_eq!(page_height(&sheet), PAGE_PX.1);
        let long = "the test-time views of this image disagree: the reading is less reliable \
                    than most and its 95% interval is widened; check that the image is the \
                    original radiograph and review the reading";
        sheet.warnings = (0..14).map(|i| format!("{i}: {long}")).collect();
        let height = page_height(&sheet);
        assert!(height > PAGE_PX.1, "{height}");
        let page = image::load_from_memory(&render(&sheet).unwrap()).unwrap().to_luma8();
        assert_eq!(page.height(), height);
        // Ink in the last text rows (the footer) and a blank band above it: nothing drawn
        // over it.
        let ink = |rows: std::ops::Range<u32>| {
            rows.flat_map(|y| (0..page.width()).map(move |x| (x, y)))
                .filter(|&(x, y)| page.get_pixel(x, y).0[0] < 128)
                .count()
        };
        let footer_top = height - MARGIN_PX as u32 - LINE_PX as u32;
        assert!(ink(footer_top..height - MARGIN_PX as u32) > 0, "the footer is drawn");
        assert_eq!(ink(footer_top - LINE_PX as u32..footer_top), 0, "a gap above the footer");
    }
}
