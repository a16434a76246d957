//! The in-memory framebuffer every screen is drawn into.
//!
//! Screens are drawn here first and handed to a backend whole: drawing cannot fail
//! (`Error = Infallible`), a half-drawn screen is never visible, and each backend converts
//! once to its own pixel format (PNG RGB, framebuffer RGB565/888/8888).

use std::convert::Infallible;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

/// An RGB888 image, row-major, that `embedded-graphics` can draw on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<Rgb888>,
}

impl Canvas {
    /// A black canvas of `width` x `height` pixels.
    pub fn new(width: u32, height: u32) -> Canvas {
        Canvas { width, height, pixels: vec![Rgb888::BLACK; width as usize * height as usize] }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels, row-major, `width * height` of them.
    pub fn pixels(&self) -> &[Rgb888] {
        &self.pixels
    }

    /// Pixels packed as `R, G, B` bytes, the layout PNG encoders take.
    pub fn to_rgb_bytes(&self) -> Vec<u8> {
        self.pixels.iter().flat_map(|c| [c.r(), c.g(), c.b()]).collect()
    }

    /// This canvas turned `quarter_turns` quarter turns clockwise (0 to 3): what a panel
    /// mounted turned the other way must be sent to show it upright.
    pub fn rotated(&self, quarter_turns: u8) -> Canvas {
        let (w, h) = (self.width as usize, self.height as usize);
        let at = |x: usize, y: usize| self.pixels[y * w + x];
        let turns = quarter_turns % 4;
        let (out_w, out_h) = if turns % 2 == 1 { (h, w) } else { (w, h) };
        let mut pixels = Vec::with_capacity(w * h);
        for y in 0..out_h {
            for x in 0..out_w {
                pixels.push(match turns {
                    1 => at(y, h - 1 - x),
                    2 => at(w - 1 - x, h - 1 - y),
                    3 => at(w - 1 - y, x),
                    _ => at(x, y),
                });
            }
        }
        Canvas { width: out_w as u32, height: out_h as u32, pixels }
    }

    fn index(&self, p: Point) -> Option<usize> {
        let (x, y) = (u32::try_from(p.x).ok()?, u32::try_from(p.y).ok()?);
        (x < self.width && y < self.height).then(|| y as usize * self.width as usize + x as usize)
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, color) in pixels {
            if let Some(i) = self.index(p) {
                self.pixels[i] = color;
            }
        }
        Ok(())
    }

    /// Row slices instead of one bounds check per pixel: clearing an 800x480 screen and
    /// the header bands are most of the pixels drawn per screen.
    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let area = area.intersection(&self.bounding_box());
        let Some(bottom_right) = area.bottom_right() else { return Ok(()) };
        let w = self.width as usize;
        for y in area.top_left.y..=bottom_right.y {
            let row = y as usize * w;
            let (x0, x1) = (area.top_left.x as usize, bottom_right.x as usize);
            self.pixels[row + x0..=row + x1].fill(color);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quarter turn clockwise puts the bottom-left corner at the top left; turns undo
    /// each other and four make the original.
    #[test]
    fn rotation_turns_clockwise() {
        let mut c = Canvas::new(3, 2);
        for (i, p) in c.pixels.iter_mut().enumerate() {
            *p = Rgb888::new(i as u8, 0, 0); // row-major: (x, y) is red 3y + x
        }
        let red = |c: &Canvas| c.pixels().iter().map(|p| p.r()).collect::<Vec<_>>();
        let quarter = c.rotated(1);
        assert_eq!((quarter.width(), quarter.height()), (2, 3));
        // Clockwise: the left column, read upwards, becomes the top row.
        assert_eq!(red(&quarter), [3, 0, 4, 1, 5, 2]);
        assert_eq!(red(&c.rotated(2)), [5, 4, 3, 2, 1, 0]);
        assert_eq!(red(&c.rotated(3)), [2, 5, 1, 4, 0, 3]);
        assert_eq!(quarter.rotated(3), c);
        assert_eq!(c.rotated(4), c);
    }

    #[test]
    fn fill_is_clipped_to_the_canvas() {
        let mut c = Canvas::new(4, 3);
        let red = Rgb888::RED;
        c.fill_solid(&Rectangle::new(Point::new(2, 1), Size::new(10, 10)), red).unwrap();
        let got: Vec<bool> = c.pixels().iter().map(|&p| p == red).collect();
        #[rustfmt::skip]
        let want = [
            false, false, false, false,
            false, false, true, true,
            false, false, true, true,
        ];
        assert_eq!(got, want);
        c.fill_solid(&Rectangle::new(Point::new(-5, -5), Size::new(2, 2)), red).unwrap();
        c.draw_iter([Pixel(Point::new(-1, 0), red), Pixel(Point::new(4, 0), red)]).unwrap();
        assert_eq!(c.pixels().iter().filter(|&&p| p == red).count(), 4);
    }

    #[test]
    fn rgb_bytes_are_row_major() {
        let mut c = Canvas::new(2, 1);
        c.draw_iter([Pixel(Point::new(1, 0), Rgb888::new(1, 2, 3))]).unwrap();
        assert_eq!(c.to_rgb_bytes(), [0, 0, 0, 1, 2, 3]);
    }
}
