//! PDF renderer: A4 pages (one, unless a reading has many warnings), Helvetica (a standard font, nothing embedded), the
//! thumbnail as an uncompressed 8-bit gray image. Text is left uncompressed so that the
//! numbers can be searched in the file, which the tests rely on.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

use super::Sheet;

const A4_PT: (f32, f32) = (595.0, 842.0);
const MARGIN_PT: f32 = 50.0;
const BODY_PT: f32 = 9.0;
const LEADING_PT: f32 = 13.0;
/// Thumbnail box on the page (points).
const THUMB_PT: f32 = 130.0;

/// Lowest baseline for body text: above the footer line.
const BOTTOM_PT: f32 = MARGIN_PT + 2.0 * LEADING_PT;

/// One line of text placed on a page.
#[derive(Debug, Clone, PartialEq)]
struct Placed {
    y: f32,
    text: String,
    bold: bool,
}

/// The lines of the sheet, page by page: the rows and warnings, then the disclaimer below
/// the thumbnail, continued on further pages when a reading carries more warnings than
/// one page holds, so that nothing, the disclaimer least of all, falls off the page.
fn layout(sheet: &Sheet) -> Vec<Vec<Placed>> {
    let top = A4_PT.1 - MARGIN_PT;
    // Where text starts on a continuation page, below its heading.
    let continued = top - 18.0 - 2.0 * LEADING_PT;
    let mut pages = vec![Vec::new()];
    let mut y = top - 50.0;
    let place = |pages: &mut Vec<Vec<Placed>>, y: &mut f32, text: String, bold: bool| {
        if *y < BOTTOM_PT {
            pages.push(Vec::new());
            *y = continued;
        }
        if let Some(page) = pages.last_mut() {
            page.push(Placed { y: *y, text, bold });
        }
        *y -= LEADING_PT;
    };
    for line in sheet.lines() {
        place(&mut pages, &mut y, line, false);
    }
    if pages.len() == 1 {
        y = y.min(top - 40.0 - THUMB_PT);
    }
    y -= LEADING_PT;
    let disclaimer = super::wrap(&sheet.disclaimer, 95);
    // Kept together on one page.
    if y - LEADING_PT * (disclaimer.len() as f32 - 1.0) < BOTTOM_PT {
        pages.push(Vec::new());
        y = continued;
    }
    for line in disclaimer {
        place(&mut pages, &mut y, line, true);
    }
    pages
}

pub(super) fn render(sheet: &Sheet) -> Vec<u8> {
    let pages = layout(sheet);
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let bold = Ref::new(4);
    let image = Ref::new(5);
    // Each page and its content stream.
    let ids: Vec<(Ref, Ref)> =
        (0..pages.len() as i32).map(|i| (Ref::new(6 + 2 * i), Ref::new(7 + 2 * i))).collect();
    let (f_body, f_bold, im) = (Name(b"F1"), Name(b"F2"), Name(b"Im1"));

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(ids.iter().map(|(page, _)| *page)).count(ids.len() as i32);
    for (page_id, content_id) in &ids {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, A4_PT.0, A4_PT.1));
        page.parent(tree);
        page.contents(*content_id);
        {
            let mut res = page.resources();
            res.fonts().pair(f_body, font).pair(f_bold, bold);
            res.x_objects().pair(im, image);
        }
        page.finish();
    }
    pdf.type1_font(font).base_font(Name(b"Helvetica"));
    pdf.type1_font(bold).base_font(Name(b"Helvetica-Bold"));

    let t = &sheet.thumbnail;
    let mut xobj = pdf.image_xobject(image, t.as_raw());
    xobj.width(t.width() as i32);
    xobj.height(t.height() as i32);
    xobj.color_space().device_gray();
    xobj.bits_per_component(8);
    xobj.finish();

    let top = A4_PT.1 - MARGIN_PT;
    let count = pages.len();
    for (i, (lines, (_, content_id))) in pages.iter().zip(&ids).enumerate() {
        let mut c = Content::new();
        if i == 0 {
            text(&mut c, f_bold, 18.0, MARGIN_PT, top - 18.0, &sheet.title);
            // Thumbnail at the top right, aspect kept inside a THUMB_PT square.
            let scale = THUMB_PT / t.width().max(t.height()) as f32;
            let (w, h) = (t.width() as f32 * scale, t.height() as f32 * scale);
            let (x, y) = (A4_PT.0 - MARGIN_PT - w, top - 30.0 - h);
            c.save_state();
            c.transform([w, 0.0, 0.0, h, x, y]);
            c.x_object(im);
            c.restore_state();
        } else {
            let heading = format!("{} (continued)", sheet.title);
            text(&mut c, f_bold, 12.0, MARGIN_PT, top - 12.0, &heading);
        }
        for line in lines {
            let f = if line.bold { f_bold } else { f_body };
            text(&mut c, f, BODY_PT, MARGIN_PT, line.y, &line.text);
        }
        let footer = if count > 1 {
            format!("{} - page {} of {count}", sheet.footer, i + 1)
        } else {
            sheet.footer.clone()
        };
        text(&mut c, f_body, 8.0, MARGIN_PT, MARGIN_PT, &footer);
        pdf.stream(*content_id, &c.finish());
    }
    pdf.finish()
}

fn text(c: &mut Content, font: Name, size: f32, x: f32, y: f32, s: &str) {
    c.begin_text();
    c.set_font(font, size);
    c.next_line(x, y);
    c.show(Str(s.as_bytes()));
    c.end_text();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading with many long warnings runs onto a second page; every line, the
    /// disclaimer's included, stays above the footer, and the disclaimer stays together.
    #[test]
    fn many_warnings_continue_on_another_page() {
        let mut sheet = super::super::tests::sheet();
        assert_eq!(layout(&sheet).len(), 1);
        let long = "the image has been through lossy compression (transfer syntax JPEG \
                    Baseline); compression artefacts can move the reading by months: ask \
                    for the original or a lossless export of the radiograph";
        sheet.warnings = (0..14).map(|i| format!("{i}: {long}")).collect();
        let pages = layout(&sheet);
        assert!(pages.len() >= 2, "{} pages", pages.len());
        for line in pages.iter().flatten() {
            assert!(line.y >= BOTTOM_PT && line.y <= A4_PT.1 - MARGIN_PT, "{line:?}");
        }
        let disclaimer: Vec<usize> = pages
            .iter()
            .enumerate()
            .filter(|(_, p)| p.iter().any(|l| l.bold))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(disclaimer, [pages.len() - 1], "the disclaimer on the last page, whole");
        let all: Vec<&str> = pages.iter().flatten().map(|l| l.text.as_str()).collect();
        assert!(all.iter().any(|l| l.starts_with("Warning: 13:")), "no warning is lost");
        let bytes = render(&sheet);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(&format!("page 2 of {}", pages.len())));
        assert!(text.contains("(continued)") && text.contains("Not a certified medical device."));
    }
}
