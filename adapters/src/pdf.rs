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

use std::sync::Arc;

use qrcode::{Color, EcLevel, QrCode};
use serde::Serialize;
use typst::diag::{FileError, FileResult, Severity, SourceDiagnostic};
use typst::foundations::{Bytes, Datetime, Duration, Smart};
use typst::syntax::{FileId, RootedPath, Source, VirtualPath, VirtualRoot};
use typst::text::{Font, FontBook};
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
#set text(font: "Libertinus Serif", size: 11pt, lang: "en")

#let muted = luma(95)

#let label(body) = text(size: 8pt, fill: muted, tracking: 0.06em, upper(body))

#let field(name, value, mono: false) = block(spacing: 1.1em, {
  label(name)
  linebreak()
  if mono {
    text(font: "DejaVu Sans Mono", size: 9.5pt, value)
  } else {
    text(size: 13pt, weight: "bold", value)
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
  block(above: 0.5em, below: 0.8em, text(size: 22pt, weight: "bold", order.event_name))
  block(spacing: 0.5em, text(size: 13pt, order.venue_name))
  block(spacing: 0.5em, text(size: 13pt, order.starts_at))

  line(length: 100%, stroke: 0.5pt + muted)

  grid(
    columns: (1fr, 45mm),
    column-gutter: 10mm,
    {
      grid(
        columns: (1fr, 1fr, 1fr),
        field("Section", t.section),
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

/// Renders an order's tickets to a PDF with Typst.
///
/// Fonts (the ones bundled by `typst-assets`) and the standard library are
/// loaded once by [`TypstRenderer::new`]; a renderer is then reused for any
/// number of renders, from any thread (clones share everything).
#[derive(Clone)]
pub struct TypstRenderer {
    shared: Arc<Shared>,
}

struct Shared {
    library: LazyHash<Library>,
    book: LazyHash<FontBook>,
    fonts: Vec<Font>,
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
        f.debug_struct("TypstRenderer").field("fonts", &self.shared.fonts.len()).finish()
    }
}

impl TypstRenderer {
    pub fn new() -> TypstRenderer {
        Self::with_template(TEMPLATE)
    }

    fn with_template(template: &str) -> TypstRenderer {
        let fonts: Vec<Font> = typst_assets::fonts().flat_map(|data| Font::iter(Bytes::new(data))).collect();
        let shared = Shared {
            library: LazyHash::new(Library::default()),
            book: LazyHash::new(FontBook::from_fonts(&fonts)),
            fonts,
            main: Source::new(file_id(MAIN_PATH), template.to_owned()),
            order_id: file_id(ORDER_PATH),
            qr_id: file_id(QR_PATH),
        };
        TypstRenderer { shared: Arc::new(shared) }
    }

    fn render_order(&self, doc: &OrderDoc) -> Result<Vec<u8>, RenderError> {
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
        for warning in &compiled.warnings {
            tracing::warn!(order = %doc.order_number, "ticket template: {}", describe(&world, warning));
        }
        let result = compiled.output.and_then(|document| {
            let options = PdfOptions { ident: Smart::Custom(format!("usher-order-{}", doc.order_number)), ..PdfOptions::default() };
            typst_pdf::pdf(&document, &options)
        });
        typst::comemo::evict(CACHE_MAX_AGE);
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
        &self.shared.book
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
        self.shared.fonts.get(index).cloned()
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
        let renderer = TypstRenderer::new();
        let orders: Vec<OrderDoc> = (0..50).map(|i| order(vec![ticket(i, u64::from(i) + 100)])).collect();
        renderer.render(&orders[0]).unwrap();
        let started = Instant::now();
        let bytes: usize = orders.iter().map(|o| renderer.render(o).unwrap().len()).sum();
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "pdf render rate: {} single-ticket orders in {elapsed:.2} s = {:.1} PDFs/s, {} bytes per PDF on average",
            orders.len(),
            orders.len() as f64 / elapsed,
            bytes / orders.len()
        );
    }
}
