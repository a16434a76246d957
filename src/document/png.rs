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

pub(super) fn render(sheet: &Sheet) -> Result<Vec<u8>, String> {
    let mut canvas = Canvas(image::GrayImage::from_pixel(PAGE_PX.0, PAGE_PX.1, image::Luma([255])));
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
    y += 40;

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
    for line in super::wrap(&sheet.disclaimer, 90) {
        let _ =
            Text::with_baseline(&line, Point::new(MARGIN_PX, y), body, Baseline::Top).draw(target);
        y += LINE_PX;
    }
    let foot = Point::new(MARGIN_PX, size.height as i32 - MARGIN_PX);
    let _ = Text::with_baseline(&sheet.footer, foot, body, Baseline::Bottom).draw(target);
}
