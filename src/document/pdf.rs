//! PDF renderer: one A4 page, Helvetica (a standard font, nothing embedded), the
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

pub(super) fn render(sheet: &Sheet) -> Vec<u8> {
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let page_id = Ref::new(3);
    let font = Ref::new(4);
    let bold = Ref::new(5);
    let image = Ref::new(6);
    let content_id = Ref::new(7);
    let (f_body, f_bold, im) = (Name(b"F1"), Name(b"F2"), Name(b"Im1"));

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page_id]).count(1);
    let mut page = pdf.page(page_id);
    page.media_box(Rect::new(0.0, 0.0, A4_PT.0, A4_PT.1));
    page.parent(tree);
    page.contents(content_id);
    {
        let mut res = page.resources();
        res.fonts().pair(f_body, font).pair(f_bold, bold);
        res.x_objects().pair(im, image);
    }
    page.finish();
    pdf.type1_font(font).base_font(Name(b"Helvetica"));
    pdf.type1_font(bold).base_font(Name(b"Helvetica-Bold"));

    let t = &sheet.thumbnail;
    let mut xobj = pdf.image_xobject(image, t.as_raw());
    xobj.width(t.width() as i32);
    xobj.height(t.height() as i32);
    xobj.color_space().device_gray();
    xobj.bits_per_component(8);
    xobj.finish();

    let mut c = Content::new();
    let top = A4_PT.1 - MARGIN_PT;
    text(&mut c, f_bold, 18.0, MARGIN_PT, top - 18.0, &sheet.title);

    // Thumbnail at the top right, aspect kept inside a THUMB_PT square.
    let scale = THUMB_PT / t.width().max(t.height()) as f32;
    let (w, h) = (t.width() as f32 * scale, t.height() as f32 * scale);
    let (x, y) = (A4_PT.0 - MARGIN_PT - w, top - 30.0 - h);
    c.save_state();
    c.transform([w, 0.0, 0.0, h, x, y]);
    c.x_object(im);
    c.restore_state();

    let mut y = top - 50.0;
    for line in sheet.lines() {
        text(&mut c, f_body, BODY_PT, MARGIN_PT, y, &line);
        y -= LEADING_PT;
    }
    y = y.min(top - 40.0 - THUMB_PT) - LEADING_PT;
    for line in super::wrap(&sheet.disclaimer, 95) {
        text(&mut c, f_bold, BODY_PT, MARGIN_PT, y, &line);
        y -= LEADING_PT;
    }
    text(&mut c, f_body, 8.0, MARGIN_PT, MARGIN_PT, &sheet.footer);
    pdf.stream(content_id, &c.finish());
    pdf.finish()
}

fn text(c: &mut Content, font: Name, size: f32, x: f32, y: f32, s: &str) {
    c.begin_text();
    c.set_font(font, size);
    c.next_line(x, y);
    c.show(Str(s.as_bytes()));
    c.end_text();
}
