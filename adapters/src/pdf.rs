//! Ticket PDFs: one page per ticket, one PDF per order, typeset by Typst.
//!
//! The template below is fixed. The order's data never becomes markup: the
//! in-memory [`World`] serves it as two virtual JSON files (`/order.json`, the
//! `OrderDoc` as it is, and `/qr.json`, the QR module runs of each ticket),
//! and the template reads them with `json(..)`. A holder named `#panic()` is
//! printed as those eight characters.
//!
//! The QR code is vector: the `qrcode` crate computes the modules (level M),
//! horizontal runs of dark modules become the rectangles of one filled path.
//!
//! Fonts are all in the binary, so every machine draws the same glyphs with
//! nothing installed: Typst's own (`typst-assets`: Libertinus Serif, New
//! Computer Modern, DejaVu Sans Mono) and the Noto subsets in
//! `adapters/fonts/` (written by `scripts/fonts.py` from Debian's Noto
//! packages; `SOURCES.md` there lists them): Noto Sans for Latin, Greek and
//! Cyrillic beyond Libertinus, one Noto face per script for about forty
//! scripts, and Noto Sans CJK SC for Chinese, Japanese kana and Korean
//! Hangul. [`Glyphs`] is what they can draw together; names printed on a
//! ticket are checked against it when they are given, so a name the fonts
//! cannot draw is refused then instead of printing as boxes.

use std::sync::{Arc, LazyLock};

use qrcode::{Color, EcLevel, QrCode};
use serde::Serialize;
use typst::diag::{FileError, FileResult, Severity, SourceDiagnostic};
use typst::foundations::{Bytes, Datetime, Duration, Smart};
use typst::syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot};
use typst::text::{Font, FontBook, is_default_ignorable};
use typst::utils::LazyHash;
use typst::{Library, LibraryExt, World, WorldExt};
use typst_layout::PagedDocument;
use typst_pdf::PdfOptions;
use usher_actors::{OrderDoc, RenderError, TicketRenderer};

/// Modules of light margin around the symbol; the QR standard asks for 4.
const QUIET_ZONE: usize = 4;

/// How many compilations an unused entry of Typst's global memoization cache
/// survives. Without eviction that cache grows with every order rendered.
const CACHE_MAX_AGE: usize = 8;

/// Pages past which a render empties Typst's memoization cache when it is
/// done: a large order's entries are hundreds of MiB and never reused (the
/// next order has other names and codes), and with `CACHE_MAX_AGE` twelve
/// 800-page orders in a row kept 7.6 GiB resident (bench/README.md,
/// big-orders). Small renders keep the cache: it holds the template's and
/// fonts' work that every order shares.
const CACHE_CLEAR_PAGES_MIN: usize = 50;

const MAIN_PATH: &str = "/main.typ";
const ORDER_PATH: &str = "/order.json";
const QR_PATH: &str = "/qr.json";

/// The page template. It reads only the two JSON files; strings from them are
/// shown as text values, never evaluated.
const TEMPLATE: &str = r##"
#let order = json("/order.json")
#let codes = json("/qr.json")

#set document(title: order.event_name, date: none)
#set page(paper: "a4", margin: (x: 20mm, y: 18mm))
// Every embedded family, in fallback order (adapters/fonts/SOURCES.md): each
// character is drawn by the first family that has it.
#let fonts = (
  "Libertinus Serif", "Noto Sans", "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari",
  "Noto Sans Bengali", "Noto Sans Gurmukhi", "Noto Sans Gujarati", "Noto Sans Oriya",
  "Noto Sans Tamil", "Noto Sans Telugu", "Noto Sans Kannada", "Noto Sans Malayalam",
  "Noto Sans Sinhala", "Noto Sans Thai", "Noto Sans Lao", "Noto Sans Khmer", "Noto Sans Myanmar",
  "Noto Sans Georgian", "Noto Sans Armenian", "Noto Sans Ethiopic", "Noto Sans Thaana",
  "Noto Serif Tibetan", "Noto Sans Syriac", "Noto Sans Mongolian", "Noto Sans Cherokee",
  "Noto Sans CanAborig", "Noto Sans Tifinagh", "Noto Sans Adlam", "Noto Sans NKo",
  "Noto Sans Ol Chiki", "Noto Sans Javanese", "Noto Sans Balinese", "Noto Sans Sundanese",
  "Noto Sans Yi", "Noto Sans Vai", "Noto Sans Tai Tham", "Noto Sans Tai Viet", "Noto Sans Lisu",
  "Noto Sans MeeteiMayek", "Noto Sans Cham", "Noto Sans CJK SC", "Noto Sans Symbols",
  "Noto Sans Symbols2",
)
// Names were checked against these fonts when they were given
// (`Glyphs::covers`), so none is drawn as a missing-glyph box.
#set text(font: fonts, size: 11pt, lang: "en")

#let muted = luma(95)

#let label(body) = text(size: 8pt, fill: muted, tracking: 0.06em, upper(body))

// A name as printed. Text breaks at spaces, and between the characters of
// scripts written without them (Chinese, Japanese, Thai, ...); a run of 16
// or more other characters with no space (an email address, a name written
// as one word) may also break between any two of its characters, at an
// empty box that draws nothing and adds nothing to the PDF's text, so a
// long name wraps at the edge of its box instead of running past it.
#let name(s) = {
  show regex("[^\\s\\p{Han}\\p{Hiragana}\\p{Katakana}\\p{Hangul}\\p{Thai}\\p{Lao}\\p{Khmer}\\p{Myanmar}]{16,}"): it => it.text.clusters().join(box())
  s
}

#let field(title, value, mono: false) = block(spacing: 1.1em, {
  label(title)
  linebreak()
  if mono {
    text(font: "DejaVu Sans Mono", size: 9.5pt, value)
  } else {
    text(size: 13pt, weight: "bold", name(value))
  }
})

// The QR symbol, `q.size` modules a side including the quiet zone, drawn as
// one filled path: each run [x, y, length] of dark modules is a rectangle.
#let qr(q, width: 45mm) = {
  let m = width / q.size
  let parts = q.runs.map(((x, y, n)) => (
    curve.move((x * m, y * m)),
    curve.line(((x + n) * m, y * m)),
    curve.line(((x + n) * m, (y + 1) * m)),
    curve.line((x * m, (y + 1) * m)),
    curve.close(mode: "straight"),
  ))
  box(width: width, height: width, fill: white, place(top + left, curve(fill: black, stroke: none, ..parts.flatten())))
}

#for (i, t) in order.tickets.enumerate() {
  if i > 0 { pagebreak() }

  label("Ticket")
  block(above: 0.5em, below: 0.8em, text(size: 22pt, weight: "bold", name(order.event_name)))
  block(spacing: 0.5em, text(size: 13pt, name(order.venue_name)))
  block(spacing: 0.5em, text(size: 13pt, order.starts_at))

  line(length: 100%, stroke: 0.5pt + muted)

  grid(
    columns: (1fr, 45mm),
    column-gutter: 10mm,
    {
      field("Section", t.section)
      grid(
        columns: (1fr, 1fr),
        field("Row", t.row),
        field("Seat", str(t.number)),
      )
      field("Category", t.category)
      field("Price", t.price)
      field("Holder", order.holder)
      field("Order", order.order_number, mono: true)
      field("Ticket", t.ticket_id, mono: true)
    },
    align(center, {
      qr(codes.at(i))
      v(0.4em, weak: true)
      text(size: 8pt, fill: muted)[Scan at the entrance]
    }),
  )

  v(1fr)
  text(size: 8pt, fill: muted)[Ticket #(i + 1) of #order.tickets.len() · each code admits one person once.]
}
"##;

/// The Noto faces embedded next to Typst's own, in `adapters/fonts/`.
macro_rules! noto {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_bytes!(concat!("../fonts/", $file)) as &[u8])),*]
    };
}
const NOTO: &[(&str, &[u8])] = noto![
    "NotoSans-Regular.ttf",
    "NotoSans-Bold.ttf",
    "NotoSansArabic-Regular.ttf",
    "NotoSansArabic-Bold.ttf",
    "NotoSansHebrew-Regular.ttf",
    "NotoSansHebrew-Bold.ttf",
    "NotoSansDevanagari-Regular.ttf",
    "NotoSansDevanagari-Bold.ttf",
    "NotoSansBengali-Regular.ttf",
    "NotoSansBengali-Bold.ttf",
    "NotoSansGurmukhi-Regular.ttf",
    "NotoSansGurmukhi-Bold.ttf",
    "NotoSansGujarati-Regular.ttf",
    "NotoSansGujarati-Bold.ttf",
    "NotoSansOriya-Regular.ttf",
    "NotoSansOriya-Bold.ttf",
    "NotoSansTamil-Regular.ttf",
    "NotoSansTamil-Bold.ttf",
    "NotoSansTelugu-Regular.ttf",
    "NotoSansTelugu-Bold.ttf",
    "NotoSansKannada-Regular.ttf",
    "NotoSansKannada-Bold.ttf",
    "NotoSansMalayalam-Regular.ttf",
    "NotoSansMalayalam-Bold.ttf",
    "NotoSansSinhala-Regular.ttf",
    "NotoSansSinhala-Bold.ttf",
    "NotoSansThai-Regular.ttf",
    "NotoSansThai-Bold.ttf",
    "NotoSansLao-Regular.ttf",
    "NotoSansLao-Bold.ttf",
    "NotoSansKhmer-Regular.ttf",
    "NotoSansKhmer-Bold.ttf",
    "NotoSansMyanmar-Regular.ttf",
    "NotoSansMyanmar-Bold.ttf",
    "NotoSansGeorgian-Regular.ttf",
    "NotoSansGeorgian-Bold.ttf",
    "NotoSansArmenian-Regular.ttf",
    "NotoSansArmenian-Bold.ttf",
    "NotoSansEthiopic-Regular.ttf",
    "NotoSansEthiopic-Bold.ttf",
    "NotoSansThaana-Regular.ttf",
    "NotoSansThaana-Bold.ttf",
    "NotoSerifTibetan-Regular.ttf",
    "NotoSansSyriac-Regular.ttf",
    "NotoSansMongolian-Regular.ttf",
    "NotoSansCherokee-Regular.ttf",
    "NotoSansCanadianAboriginal-Regular.ttf",
    "NotoSansTifinagh-Regular.ttf",
    "NotoSansAdlam-Regular.ttf",
    "NotoSansNKo-Regular.ttf",
    "NotoSansOlChiki-Regular.ttf",
    "NotoSansJavanese-Regular.ttf",
    "NotoSansBalinese-Regular.ttf",
    "NotoSansSundanese-Regular.ttf",
    "NotoSansYi-Regular.ttf",
    "NotoSansVai-Regular.ttf",
    "NotoSansTaiTham-Regular.ttf",
    "NotoSansTaiViet-Regular.ttf",
    "NotoSansLisu-Regular.ttf",
    "NotoSansMeeteiMayek-Regular.ttf",
    "NotoSansCham-Regular.ttf",
    "NotoSansCJKsc-Regular.otf",
    "NotoSansSymbols-Regular.ttf",
    "NotoSansSymbols2-Regular.ttf",
];

/// The embedded fonts, parsed once per process (the first renderer or
/// [`Glyphs::embedded`] call pays for it) and shared by every render.
static FONTS: LazyLock<Fonts> = LazyLock::new(Fonts::embedded);

struct Fonts {
    fonts: Vec<Font>,
    book: LazyHash<FontBook>,
    glyphs: Glyphs,
}

impl Fonts {
    fn embedded() -> Fonts {
        let data = typst_assets::fonts().chain(NOTO.iter().map(|(_, data)| *data));
        let fonts: Vec<Font> = data.flat_map(|data| Font::iter(Bytes::new(data))).collect();
        let book = FontBook::from_fonts(&fonts);
        let glyphs = Glyphs::of(&book, fonts.len());
        Fonts { fonts, book: LazyHash::new(book), glyphs }
    }
}

/// The characters the ticket fonts can draw: those some embedded font maps
/// to a glyph (private-use characters excepted), plus line breaks, tabs and
/// the default-ignorable characters (joiners, variation selectors), which
/// are never drawn.
///
/// A name printed on a ticket (event, venue, section, category, holder) is
/// checked with [`Glyphs::covers`] where it enters (the gateway), so the
/// renderer never meets a character it would draw as a missing-glyph box.
#[derive(Debug)]
pub struct Glyphs {
    /// Sorted, disjoint, inclusive ranges of codepoints.
    ranges: Vec<(u32, u32)>,
}

impl Glyphs {
    /// What the embedded fonts (the renderer's) can draw.
    pub fn embedded() -> &'static Glyphs {
        &FONTS.glyphs
    }

    fn of(book: &FontBook, fonts: usize) -> Glyphs {
        let mut codepoints: Vec<u32> = (0..fonts).filter_map(|i| book.info(i)).flat_map(|info| info.coverage.iter()).collect();
        codepoints.sort_unstable();
        codepoints.dedup();
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for c in codepoints {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == c => *end = c,
                _ => ranges.push((c, c)),
            }
        }
        Glyphs { ranges }
    }

    /// Whether `c` prints: a glyph of some embedded font, or never drawn.
    /// A private-use character never prints: it has no agreed meaning, and
    /// the glyph a font happens to give it (New Computer Modern has some) is
    /// not what its writer saw.
    pub fn draws(&self, c: char) -> bool {
        if matches!(c, '\n' | '\r' | '\t') || is_default_ignorable(c) {
            return true;
        }
        if matches!(c, '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}') {
            return false;
        }
        let c = c as u32;
        let i = self.ranges.partition_point(|&(start, _)| start <= c);
        i > 0 && c <= self.ranges[i - 1].1
    }

    /// `Ok` when every character of `s` prints, else the first that does not.
    pub fn covers(&self, s: &str) -> Result<(), char> {
        match s.chars().find(|&c| !self.draws(c)) {
            Some(c) => Err(c),
            None => Ok(()),
        }
    }

    /// How many codepoints are drawn with a glyph.
    pub fn count(&self) -> usize {
        self.ranges.iter().map(|&(start, end)| (end - start + 1) as usize).sum()
    }
}

/// Renders an order's tickets to a PDF with Typst.
///
/// The fonts (see the module's notes) and the standard library are loaded
/// once; a renderer is then reused for any number of renders, from any
/// thread (clones share everything).
#[derive(Clone)]
pub struct TypstRenderer {
    shared: Arc<Shared>,
}

struct Shared {
    library: LazyHash<Library>,
    fonts: &'static Fonts,
    main: Source,
    order_id: FileId,
    qr_id: FileId,
}

impl Default for TypstRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for TypstRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypstRenderer").field("fonts", &self.shared.fonts.fonts.len()).finish()
    }
}

impl TypstRenderer {
    pub fn new() -> TypstRenderer {
        Self::with_template(TEMPLATE)
    }

    fn with_template(template: &str) -> TypstRenderer {
        let shared = Shared {
            library: LazyHash::new(Library::default()),
            fonts: &FONTS,
            main: Source::new(file_id(MAIN_PATH), template.to_owned()),
            order_id: file_id(ORDER_PATH),
            qr_id: file_id(QR_PATH),
        };
        TypstRenderer { shared: Arc::new(shared) }
    }

    fn render_order(&self, doc: &OrderDoc) -> Result<Vec<u8>, RenderError> {
        self.render_inspected(doc, |_, _| ())
    }

    /// Renders, showing `inspect` the laid-out pages and the template's
    /// warnings first (tests read the glyphs each font drew).
    fn render_inspected(&self, doc: &OrderDoc, inspect: impl FnOnce(&PagedDocument, &[String])) -> Result<Vec<u8>, RenderError> {
        if doc.tickets.is_empty() {
            return Err(RenderError(format!("order {} has no tickets", doc.order_number)));
        }
        let qr = doc.tickets.iter().map(|t| QrRuns::encode(&t.code)).collect::<Result<Vec<_>, _>>()?;
        let to_json = |what: &str, r: serde_json::Result<Vec<u8>>| r.map_err(|e| RenderError(format!("cannot encode {what}: {e}")));
        let world = OrderWorld {
            shared: &self.shared,
            order: Bytes::new(to_json("order", serde_json::to_vec(doc))?),
            qr: Bytes::new(to_json("QR codes", serde_json::to_vec(&qr))?),
        };

        let compiled = typst::compile::<PagedDocument>(&world);
        let warnings: Vec<String> = compiled.warnings.iter().map(|w| describe(&world, w)).collect();
        for warning in &warnings {
            tracing::warn!(order = %doc.order_number, "ticket template: {warning}");
        }
        let result = compiled.output.and_then(|document| {
            inspect(&document, &warnings);
            let options = PdfOptions { ident: Smart::Custom(format!("usher-order-{}", doc.order_number)), ..PdfOptions::default() };
            typst_pdf::pdf(&document, &options)
        });
        typst::comemo::evict(if doc.tickets.len() > CACHE_CLEAR_PAGES_MIN { 0 } else { CACHE_MAX_AGE });
        result.map_err(|errors| {
            let messages: Vec<String> = errors.iter().map(|d| describe(&world, d)).collect();
            RenderError(format!("order {}: {}", doc.order_number, messages.join("; ")))
        })
    }
}

impl TicketRenderer for TypstRenderer {
    fn render(&self, doc: &OrderDoc) -> Result<Vec<u8>, RenderError> {
        self.render_order(doc)
    }
}

fn file_id(path: &str) -> FileId {
    let vpath = VirtualPath::new(path).expect("constant virtual path is valid");
    RootedPath::new(VirtualRoot::Project, vpath).intern()
}

/// One diagnostic as one line: "error: message (at /main.typ:12:5; hint: ...)".
fn describe(world: &dyn World, diag: &SourceDiagnostic) -> String {
    let severity = match diag.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut out = format!("{severity}: {}", diag.message);
    let mut notes = Vec::new();
    if let Some(id) = diag.span.id() {
        let path = id.vpath().get_with_slash().to_owned();
        let position = world.range(diag.span).and_then(|range| {
            let source = world.source(id).ok()?;
            let (line, column) = source.lines().byte_to_line_column(range.start)?;
            Some(format!("{path}:{}:{}", line + 1, column + 1))
        });
        notes.push(format!("at {}", position.unwrap_or(path)));
    }
    notes.extend(diag.hints.iter().map(|hint| format!("hint: {}", hint.v)));
    if !notes.is_empty() {
        out.push_str(&format!(" ({})", notes.join("; ")));
    }
    out
}

/// The dark modules of one QR symbol as horizontal runs `[x, y, length]`, in
/// modules, with the quiet zone included in the coordinates and in `size`.
#[derive(Debug, Serialize)]
struct QrRuns {
    size: usize,
    runs: Vec<[usize; 3]>,
}

impl QrRuns {
    fn encode(code: &str) -> Result<QrRuns, RenderError> {
        let symbol = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)
            .map_err(|e| RenderError(format!("cannot encode a ticket code of {} bytes as a QR code: {e}", code.len())))?;
        let width = symbol.width();
        let modules = symbol.to_colors();
        let mut runs = Vec::new();
        for (y, row) in modules.chunks(width).enumerate() {
            let mut x = 0;
            while x < width {
                if row[x] == Color::Dark {
                    let start = x;
                    while x < width && row[x] == Color::Dark {
                        x += 1;
                    }
                    runs.push([start + QUIET_ZONE, y + QUIET_ZONE, x - start]);
                } else {
                    x += 1;
                }
            }
        }
        Ok(QrRuns { size: width + 2 * QUIET_ZONE, runs })
    }
}

/// The world of one render: the shared template and fonts, plus this order's
/// data files. Nothing is read from disk or the network.
struct OrderWorld<'a> {
    shared: &'a Shared,
    order: Bytes,
    qr: Bytes,
}

impl World for OrderWorld<'_> {
    fn library(&self) -> &LazyHash<Library> {
        &self.shared.library
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &self.shared.fonts.book
    }

    fn main(&self) -> FileId {
        self.shared.main.id()
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        if id == self.shared.main.id() {
            Ok(self.shared.main.clone())
        } else if id == self.shared.order_id || id == self.shared.qr_id {
            Err(FileError::NotSource)
        } else {
            Err(not_found(id))
        }
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        if id == self.shared.order_id {
            Ok(self.order.clone())
        } else if id == self.shared.qr_id {
            Ok(self.qr.clone())
        } else if id == self.shared.main.id() {
            Ok(Bytes::from_string(self.shared.main.clone()))
        } else {
            Err(not_found(id))
        }
    }

    fn font(&self, index: usize) -> Option<Font> {
        self.shared.fonts.fonts.get(index).cloned()
    }

    /// No clock: the template does not need one, and the same order always
    /// renders the same bytes.
    fn today(&self, _offset: Option<Duration>) -> Option<Datetime> {
        None
    }
}

fn not_found(id: FileId) -> FileError {
    FileError::NotFound(id.vpath().get_without_slash().into())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;
    use std::time::Instant;

    use usher_actors::TicketDoc;

    use super::*;

    /// A code shaped like the real ones: "USH1." and ~135 base64url characters.
    fn code(seed: u64) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut out = String::from("USH1.");
        for _ in 0..135 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            out.push(ALPHABET[(state >> 58) as usize] as char);
        }
        out
    }

    fn ticket(n: u32, seed: u64) -> TicketDoc {
        TicketDoc {
            ticket_id: format!("tkt_01J9Z{n:04}QK7M"),
            section: "Parterre Gauche".into(),
            row: "C".into(),
            number: n,
            category: "Catégorie 1".into(),
            price: "EUR 50.00".into(),
            code: code(seed),
        }
    }

    fn order(tickets: Vec<TicketDoc>) -> OrderDoc {
        OrderDoc {
            order_number: "ORD-2026-000042".into(),
            event_name: "Café Üñïçødé — Grand Hall".into(),
            venue_name: "Salle Pleyel, Paris".into(),
            starts_at: "2026-12-01 20:00 UTC".into(),
            holder: "#panic() *x* $y$ [z]".into(),
            tickets,
        }
    }

    /// Runs a tool that must be installed (`apt-get install -y poppler-utils zbar-tools`).
    fn run(tool: &str, args: &[&str]) -> String {
        let out = Command::new(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{tool}` ({e}); install it: apt-get install -y poppler-utils zbar-tools"));
        assert!(out.status.success(), "`{tool} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("tool output is UTF-8")
    }

    fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn renders_one_page_per_ticket_with_literal_text_and_scannable_codes() {
        let doc = order(vec![ticket(11, 1), ticket(12, 2)]);
        let pdf = TypstRenderer::new().render(&doc).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("order.pdf");
        std::fs::write(&file, &pdf).unwrap();

        let text = run("pdftotext", &["-enc", "UTF-8", "-layout", path(&file), "-"]);
        let pages: Vec<&str> = text.split('\u{c}').filter(|p| !p.trim().is_empty()).collect();
        assert_eq!(pages.len(), 2, "one page per ticket:\n{text}");
        for (page, t) in pages.iter().zip(&doc.tickets) {
            for expected in [
                "Café Üñïçødé — Grand Hall",
                "Salle Pleyel, Paris",
                "2026-12-01 20:00 UTC",
                "#panic() *x* $y$ [z]",
                "Parterre Gauche",
                "Catégorie 1",
                "EUR 50.00",
                "ORD-2026-000042",
                &t.ticket_id,
                &t.number.to_string(),
            ] {
                assert!(page.contains(expected), "page lacks {expected:?}:\n{page}");
            }
        }

        let prefix = dir.path().join("page");
        run("pdftoppm", &["-r", "150", "-png", path(&file), path(&prefix)]);
        let mut images: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .collect();
        images.sort();
        assert_eq!(images.len(), 2);
        let mut decoded = Vec::new();
        for image in &images {
            let found = run("zbarimg", &["--raw", "-q", path(image)]);
            let found: Vec<String> = found.lines().map(str::to_owned).collect();
            assert_eq!(found.len(), 1, "exactly one code per page, got {found:?}");
            decoded.extend(found);
        }
        let expected: Vec<String> = doc.tickets.iter().map(|t| t.code.clone()).collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn qr_runs_cover_exactly_the_dark_modules() {
        let c = code(7);
        let runs = QrRuns::encode(&c).unwrap();
        let symbol = QrCode::with_error_correction_level(c.as_bytes(), EcLevel::M).unwrap();
        assert_eq!(runs.size, symbol.width() + 8);
        let mut painted = vec![false; symbol.width() * symbol.width()];
        for [x, y, n] in runs.runs {
            for dx in 0..n {
                let i = (y - QUIET_ZONE) * symbol.width() + x - QUIET_ZONE + dx;
                assert!(!painted[i]);
                painted[i] = true;
            }
        }
        let dark: Vec<bool> = symbol.to_colors().into_iter().map(|c| c == Color::Dark).collect();
        assert_eq!(painted, dark);
    }

    #[test]
    fn an_order_without_tickets_is_refused() {
        let err = TypstRenderer::new().render(&order(vec![])).unwrap_err();
        assert!(err.to_string().contains("no tickets"), "{err}");
    }

    #[test]
    fn template_errors_become_readable_render_errors() {
        let renderer = TypstRenderer::with_template("#let o = json(\"/order.json\")\n#panic(\"boom \" + o.order_number)\n");
        let err = renderer.render(&order(vec![ticket(1, 1)])).unwrap_err().to_string();
        assert!(err.contains("panicked with: boom ORD-2026-000042"), "{err}");
        assert!(err.contains("/main.typ:2:2"), "{err}");
    }

    #[test]
    fn renderer_is_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<TypstRenderer>();
        let renderer = Arc::new(TypstRenderer::new());
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let renderer = Arc::clone(&renderer);
                std::thread::spawn(move || renderer.render(&order(vec![ticket(i, u64::from(i))])).map(|pdf| pdf.len()))
            })
            .collect();
        for handle in handles {
            assert!(handle.join().unwrap().unwrap() > 1000);
        }
    }

    /// Not a benchmark with assertions: prints the rate (run with --nocapture).
    #[test]
    fn render_rate() {
        let started = Instant::now();
        let fonts = Fonts::embedded();
        let parsed = started.elapsed().as_secs_f64() * 1000.0;
        eprintln!("pdf fonts: {} faces parsed in {parsed:.0} ms, drawing {} codepoints", fonts.fonts.len(), fonts.glyphs.count());
        let renderer = TypstRenderer::new();
        for (script, event) in [("Latin", "Café Üñïçødé — Grand Hall"), ("CJK", "夜の音楽会 — 서울 공연 — 东京")] {
            let orders: Vec<OrderDoc> =
                (0..50).map(|i| OrderDoc { event_name: event.into(), ..order(vec![ticket(i, u64::from(i) + 100)]) }).collect();
            renderer.render(&orders[0]).unwrap();
            let started = Instant::now();
            let bytes: usize = orders.iter().map(|o| renderer.render(o).unwrap().len()).sum();
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!(
                "pdf render rate ({script} event name): {} single-ticket orders in {elapsed:.2} s = {:.1} PDFs/s, {} bytes per PDF on average",
                orders.len(),
                orders.len() as f64 / elapsed,
                bytes / orders.len()
            );
        }
    }

    /// One text run as laid out: where it starts on its page, how wide it
    /// is, the font family that drew it and its glyph ids.
    #[derive(Debug)]
    struct Run {
        page: usize,
        x: f64,
        width: f64,
        family: String,
        text: String,
        glyphs: Vec<u16>,
    }

    fn runs(document: &PagedDocument) -> Vec<Run> {
        fn walk(page: usize, frame: &typst::layout::Frame, origin: typst::layout::Point, out: &mut Vec<Run>) {
            for (pos, item) in frame.items() {
                let at = origin + *pos;
                match item {
                    typst::layout::FrameItem::Group(group) => {
                        assert!(group.transform.is_identity(), "the template transforms nothing");
                        walk(page, &group.frame, at, out)
                    }
                    typst::layout::FrameItem::Text(t) => out.push(Run {
                        page,
                        x: at.x.to_mm(),
                        width: t.width().to_mm(),
                        family: t.font.font().info().family.clone(),
                        text: t.text.to_string(),
                        glyphs: t.glyphs.iter().map(|g| g.id).collect(),
                    }),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        for (i, page) in document.pages().iter().enumerate() {
            walk(i, &page.frame, typst::layout::Point::zero(), &mut out);
        }
        out
    }

    /// Renders `doc`, returning the PDF, the laid-out runs and the pages'
    /// text as pdftotext reads it (one string per page).
    fn render_and_read(doc: &OrderDoc) -> (Vec<Run>, Vec<String>, String) {
        let mut laid_out = Vec::new();
        let pdf = TypstRenderer::new()
            .render_inspected(doc, |document, warnings| {
                assert!(warnings.is_empty(), "the template warns: {warnings:?}");
                laid_out = runs(document);
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("order.pdf");
        std::fs::write(&file, &pdf).unwrap();
        let text = run("pdftotext", &["-enc", "UTF-8", path(&file), "-"]);
        let pages = text.split('\u{c}').filter(|p| !p.trim().is_empty()).map(str::to_owned).collect();
        let fonts = run("pdffonts", &[path(&file)]);
        (laid_out, pages, fonts)
    }

    /// No run drew glyph 0 (`.notdef`, the missing-glyph box).
    fn assert_no_missing_glyphs(runs: &[Run]) {
        let boxes: Vec<&Run> = runs.iter().filter(|r| r.glyphs.contains(&0)).collect();
        assert!(boxes.is_empty(), "missing-glyph boxes drawn: {boxes:#?}");
    }

    /// The families that drew the pieces of `text` on `page` (runs split at
    /// script and font changes, so a piece is any run inside `text`).
    fn families<'a>(runs: &'a [Run], page: usize, text: &str) -> std::collections::BTreeSet<&'a str> {
        runs.iter()
            .filter(|r| r.page == page && !r.text.trim().is_empty() && text.contains(r.text.trim()))
            .map(|r| r.family.as_str())
            .collect()
    }

    #[test]
    fn cjk_names_are_drawn_with_cjk_glyphs() {
        let mut t = ticket(1, 1);
        t.section = "서울 구역".into();
        t.category = "一等席".into();
        let doc = OrderDoc {
            event_name: "夜".into(),
            venue_name: "東京ドーム".into(),
            holder: "山田 太郎 <taro@example.jp>".into(),
            ..order(vec![t])
        };
        let (runs, pages, fonts) = render_and_read(&doc);
        assert_no_missing_glyphs(&runs);
        for text in ["夜", "東京ドーム", "서울 구역", "一等席", "山田 太郎"] {
            assert_eq!(families(&runs, 0, text), ["Noto Sans CJK SC"].into(), "{text} is drawn by the CJK face: {runs:#?}");
        }
        assert!(fonts.contains("NotoSansCJKsc-Regular") || fonts.contains("NotoSansCJK"), "the PDF embeds the CJK face:\n{fonts}");
        assert_eq!(pages.len(), 1);
        for text in ["夜", "東京ドーム", "서울 구역", "一等席", "山田 太郎"] {
            assert!(pages[0].contains(text), "pdftotext gives back {text:?}:\n{}", pages[0]);
        }
    }

    /// One sample per script, each in an event name: drawn by the expected
    /// face, without a missing-glyph box, and accepted by `Glyphs`.
    #[test]
    fn every_script_prints() {
        let samples = [
            ("Greek", "Συναυλία", "Libertinus Serif"),
            ("Cyrillic", "Концерт", "Libertinus Serif"),
            ("Hebrew", "קונצרט", "Libertinus Serif"),
            ("Vietnamese", "Buổi hòa nhạc", "Libertinus Serif"),
            ("Arabic", "حفلة موسيقية", "Noto Sans Arabic"),
            ("Persian", "کنسرت", "Noto Sans Arabic"),
            ("Devanagari", "संगीत समारोह", "Noto Sans Devanagari"),
            ("Bengali", "সঙ্গীতানুষ্ঠান", "Noto Sans Bengali"),
            ("Gurmukhi", "ਸੰਗੀਤ", "Noto Sans Gurmukhi"),
            ("Gujarati", "સંગીત", "Noto Sans Gujarati"),
            ("Oriya", "ସଙ୍ଗୀତ", "Noto Sans Oriya"),
            ("Tamil", "இசை நிகழ்ச்சி", "Noto Sans Tamil"),
            ("Telugu", "సంగీత కచేరీ", "Noto Sans Telugu"),
            ("Kannada", "ಸಂಗೀತ ಕಛೇರಿ", "Noto Sans Kannada"),
            ("Malayalam", "സംഗീതക്കച്ചേരി", "Noto Sans Malayalam"),
            ("Sinhala", "සංගීත ප්‍රසංගය", "Noto Sans Sinhala"),
            ("Thai", "คอนเสิร์ต", "Noto Sans Thai"),
            ("Lao", "ຄອນເສີດ", "Noto Sans Lao"),
            ("Khmer", "ការប្រគុំតន្ត្រី", "Noto Sans Khmer"),
            ("Myanmar", "ဂီတဖျော်ဖြေပွဲ", "Noto Sans Myanmar"),
            ("Tibetan", "རོལ་མོ", "Noto Serif Tibetan"),
            ("Georgian", "კონცერტი", "Noto Sans Georgian"),
            ("Armenian", "Համերգ", "Noto Sans Armenian"),
            ("Ethiopic", "ኮንሰርት", "Noto Sans Ethiopic"),
            ("Thaana", "ކޮންސަރޓް", "Noto Sans Thaana"),
            ("Syriac", "ܙܡܪܐ", "Noto Sans Syriac"),
            ("Cherokee", "ᏗᎧᏃᏗ", "Noto Sans Cherokee"),
            ("Canadian syllabics", "ᓄᓇᕗᑦ", "Noto Sans CanAborig"),
            ("Tifinagh", "ⵜⴰⵎⵓⵙⵉⵇⵉ", "Noto Sans Tifinagh"),
            ("Chinese", "音乐会", "Noto Sans CJK SC"),
            ("Japanese", "コンサート", "Noto Sans CJK SC"),
            ("Korean", "음악회", "Noto Sans CJK SC"),
        ];
        let tickets: Vec<TicketDoc> = (0..samples.len() as u32).map(|i| ticket(i + 1, u64::from(i))).collect();
        for (script, text, _) in samples {
            assert_eq!(Glyphs::embedded().covers(text), Ok(()), "{script}");
        }
        // All samples on one ticket, as the event's name, then each as a section.
        let all: Vec<&str> = samples.iter().map(|(_, text, _)| *text).collect();
        let mut doc = OrderDoc { event_name: all.join(" · "), ..order(tickets) };
        for (t, (_, text, _)) in doc.tickets.iter_mut().zip(samples) {
            t.section = text.into();
        }
        let (runs, pages, _) = render_and_read(&doc);
        assert_no_missing_glyphs(&runs);
        assert_eq!(pages.len(), samples.len(), "one page per ticket");
        for (i, (script, text, family)) in samples.iter().enumerate() {
            let drawn_by = families(&runs, i, text);
            assert_eq!(drawn_by, [*family].into(), "{script} {text:?} on page {}: {runs:#?}", i + 1);
        }
        // Scripts whose letters pdftotext gives back in order.
        for (script, text, _) in &samples[..3] {
            assert!(pages[0].contains(text), "{script}: pdftotext gives back {text:?}:\n{}", pages[0]);
        }
    }

    #[test]
    fn glyphs_refuse_what_no_font_draws() {
        let glyphs = Glyphs::embedded();
        assert!(glyphs.count() > 60_000, "{} codepoints", glyphs.count());
        assert_eq!(glyphs.covers("夜 — Nuit, 밤, よる"), Ok(()));
        assert_eq!(glyphs.covers("two\nlines\tand a tab"), Ok(()));
        // Joiners and variation selectors are never drawn, so they are fine.
        assert_eq!(glyphs.covers("ශ්\u{200D}රී \u{2764}\u{FE0F}"), Ok(()));
        assert_eq!(glyphs.covers("Opening \u{E000} Night"), Err('\u{E000}'), "private use");
        assert_eq!(glyphs.covers("a\u{0378}"), Err('\u{0378}'), "unassigned");
        assert_eq!(glyphs.covers("Party \u{1F389}"), Err('\u{1F389}'), "no colour emoji font is embedded");
    }

    /// A 200-byte event name (spaced), a 200-byte venue without a space, a
    /// 200-byte CJK section and a 380-byte holder (a customer id and an email
    /// address, no spaces) wrap inside the page: every run ends inside the
    /// right margin, the ticket stays one page and pdftotext gives every
    /// name back whole.
    #[test]
    fn long_names_wrap_inside_the_page() {
        let event = "The Extraordinarily Long Annual Midsummer Night Festival of Chamber Music, Poetry and Dance, with Friends, Guests and Surprises from Near and Far Away";
        let event = format!("{event} {}", "Encore ".repeat(7));
        let event = format!("{}!", &event[..199]);
        let venue = "Konzerthaus".repeat(19)[..200].to_owned();
        let section = "夜の特別席".repeat(14)[..198].to_owned();
        let category = "Catégorie".repeat(22)[..198].to_owned();
        // The longest holder there is: a partner's customer id and a 254-byte address.
        let customer = format!("p:{}:{}", "partner".repeat(8), "r".repeat(64));
        let email = format!("{}@{}.{}.{}.com", "a".repeat(64), "b".repeat(63), "c".repeat(63), "d".repeat(57));
        let holder = format!("{customer} <{email}>");
        assert_eq!((event.len(), email.len(), holder.len()), (200, 254, 380));
        let mut t = ticket(1, 1);
        t.section = section.clone();
        t.category = category.clone();
        let doc = OrderDoc { event_name: event.clone(), venue_name: venue.clone(), holder: holder.clone(), ..order(vec![t]) };
        let (runs, pages, _) = render_and_read(&doc);
        assert_no_missing_glyphs(&runs);
        assert_eq!(pages.len(), 1, "still one page: {pages:#?}");
        // A4 is 210 mm wide, the margins 20 mm.
        let overflowing: Vec<&Run> = runs.iter().filter(|r| r.x < 19.9 || r.x + r.width > 190.1).collect();
        assert!(overflowing.is_empty(), "runs past the margins: {overflowing:#?}");
        let flat: String = pages[0].chars().filter(|c| !c.is_whitespace()).collect();
        for name in [&event, &venue, &section, &category, &holder] {
            let whole: String = name.chars().filter(|c| !c.is_whitespace()).collect();
            assert!(flat.contains(&whole), "pdftotext gives back {name:?} whole:\n{}", pages[0]);
        }
        let lines = |name: &str| pages[0].lines().filter(|l| !l.trim().is_empty() && name.contains(l.trim())).count();
        assert!(lines(&event) >= 3 && lines(&holder) >= 3, "the names wrap:\n{}", pages[0]);
    }

    /// Every embedded file is listed, parses, and its family is in the
    /// template's fallback list.
    #[test]
    fn every_font_in_adapters_fonts_is_embedded_and_in_the_fallback_list() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fonts");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.ends_with(".ttf") || f.ends_with(".otf"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = NOTO.iter().map(|(f, _)| (*f).to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "NOTO lists exactly the files in {}", dir.display());
        for (file, data) in NOTO {
            let faces: Vec<Font> = Font::iter(Bytes::new(*data)).collect();
            assert_eq!(faces.len(), 1, "{file} is one face");
            let family = &faces[0].info().family;
            assert!(TEMPLATE.contains(&format!("\"{family}\"")), "{file}: family {family:?} is in the template's list");
        }
        let bytes: usize = NOTO.iter().map(|(_, d)| d.len()).sum();
        eprintln!("embedded Noto fonts: {} files, {bytes} bytes", NOTO.len());
    }
}
