//! A venue's seat layout: sections, rows and seats with labels and positions.
//! Seats are numbered densely (`SeatIdx`) section by section, row by row, so that
//! one row is a contiguous index range ordered by seat number.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::ids::{InvalidInput, SeatIdx};
use crate::limits;

/// What an organizer describes; `Layout::build` checks it and numbers the seats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VenueSpec {
    pub name: String,
    /// The venue's IANA time zone (`Europe/Berlin`, `Asia/Tokyo`; tzdb
    /// names, <https://www.iana.org/time-zones>); its events are shown in it.
    /// The engine checks the shape only (`check_time_zone`); the edge checks
    /// the name against the time zone database. Venues stored before zones
    /// existed read as `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    pub categories: Vec<CategorySpec>,
    pub sections: Vec<SectionSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategorySpec {
    pub code: String,
    pub name: String,
}

/// Sections are listed best first: "best available" prefers earlier sections,
/// then earlier rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SectionSpec {
    pub code: String,
    pub name: String,
    pub category: String,
    /// Where the section's first seat is drawn; seats are 1 unit apart.
    pub x: f32,
    pub y: f32,
    pub rows: Vec<RowSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowSpec {
    pub label: String,
    pub seats: u32,
    /// Number of the first seat (1 when absent in the wire format).
    pub first_number: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub code: String,
    pub name: String,
    pub category: u16,
}

/// One row: its label and the seat index range it covers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub section: u16,
    pub label: String,
    pub first_seat: u32,
    pub len: u32,
}

/// One seat as people and clients see it (`Layout::describe`).
#[derive(Debug, Clone, PartialEq)]
pub struct SeatDescription<'a> {
    /// `SECTION-ROW-NUMBER`, e.g. `A-3-12`.
    pub label: String,
    pub section: &'a str,
    pub row: &'a str,
    pub number: u32,
    /// Index into the event's prices.
    pub category_index: u16,
    /// The price category's code (for clients) and name (for people).
    pub category_code: &'a str,
    pub category_name: &'a str,
    pub x: f32,
    pub y: f32,
}

/// 16 bytes per seat; labels are derived, not stored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeatDef {
    pub row: u32,
    pub number: u32,
    pub x: f32,
    pub y: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub name: String,
    pub categories: Vec<CategorySpec>,
    pub sections: Vec<Section>,
    pub rows: Vec<Row>,
    pub seats: Vec<SeatDef>,
}

fn check_label(field: &'static str, s: &str) -> Result<(), InvalidInput> {
    if s.is_empty() || s.len() > limits::LABEL_BYTES_MAX {
        return Err(InvalidInput::new(
            field,
            format!("{field} must be 1 to {} bytes, got {}", limits::LABEL_BYTES_MAX, crate::ids::quoted(s)),
        ));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(InvalidInput::new(field, format!("{field} must be letters and digits only, got {}", crate::ids::quoted(s))));
    }
    Ok(())
}

pub fn check_name(field: &'static str, s: &str) -> Result<(), InvalidInput> {
    if s.trim().is_empty() || s.len() > limits::NAME_BYTES_MAX {
        return Err(InvalidInput::new(field, format!("{field} must be 1 to {} bytes and not blank", limits::NAME_BYTES_MAX)));
    }
    check_text(field, s)
}

fn utc() -> String {
    "UTC".to_owned()
}

/// The shape of an IANA time zone name: 1 to `limits::TIME_ZONE_BYTES_MAX`
/// bytes of ASCII letters, digits and `/_+-` (tzdb's own rule for names,
/// from its theory.html). Whether the zone exists is the edge's question.
pub fn check_time_zone(field: &'static str, s: &str) -> Result<(), InvalidInput> {
    let ok = !s.is_empty()
        && s.len() <= limits::TIME_ZONE_BYTES_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::new(field, format!("{} is not the name of an IANA time zone, such as Europe/Berlin", crate::ids::quoted(s))))
    }
}

/// Text people typed, as a database can store and a page or PDF can show
/// it: no control characters (a NUL, which PostgreSQL refuses in text, a
/// bell, an escape sequence). Line breaks and tabs are allowed.
pub fn check_text(field: &'static str, s: &str) -> Result<(), InvalidInput> {
    match s.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        Some(c) => Err(InvalidInput::new(field, format!("{field} has a control character (U+{:04X}); remove it", c as u32))),
        None => Ok(()),
    }
}

impl Layout {
    pub fn build(spec: &VenueSpec) -> Result<Layout, InvalidInput> {
        check_name("venue.name", &spec.name)?;
        check_time_zone("venue.time_zone", &spec.time_zone)?;
        if spec.categories.is_empty() || spec.categories.len() > limits::CATEGORIES_PER_VENUE_MAX {
            return Err(InvalidInput::new(
                "venue.categories",
                format!("a venue needs 1 to {} price categories", limits::CATEGORIES_PER_VENUE_MAX),
            ));
        }
        let mut cat_index = HashMap::new();
        for (i, c) in spec.categories.iter().enumerate() {
            check_label("venue.categories.code", &c.code)?;
            check_name("venue.categories.name", &c.name)?;
            if cat_index.insert(c.code.as_str(), i as u16).is_some() {
                return Err(InvalidInput::new("venue.categories.code", format!("category {:?} appears twice", c.code)));
            }
        }
        if spec.sections.is_empty() || spec.sections.len() > limits::SECTIONS_PER_VENUE_MAX {
            return Err(InvalidInput::new("venue.sections", format!("a venue needs 1 to {} sections", limits::SECTIONS_PER_VENUE_MAX)));
        }
        let mut layout = Layout {
            name: spec.name.clone(),
            categories: spec.categories.clone(),
            sections: Vec::new(),
            rows: Vec::new(),
            seats: Vec::new(),
        };
        let mut section_codes = HashMap::new();
        for (si, s) in spec.sections.iter().enumerate() {
            check_label("venue.sections.code", &s.code)?;
            check_name("venue.sections.name", &s.name)?;
            if section_codes.insert(s.code.as_str(), si).is_some() {
                return Err(InvalidInput::new("venue.sections.code", format!("section {:?} appears twice", s.code)));
            }
            if !s.x.is_finite() || !s.y.is_finite() {
                return Err(InvalidInput::new(
                    "venue.sections.x",
                    format!("section {:?} needs a finite position, got ({}, {})", s.code, s.x, s.y),
                ));
            }
            let Some(&category) = cat_index.get(s.category.as_str()) else {
                return Err(InvalidInput::new(
                    "venue.sections.category",
                    format!("section {:?} names unknown category {:?}", s.code, s.category),
                ));
            };
            if s.rows.is_empty() || s.rows.len() > limits::ROWS_PER_SECTION_MAX {
                return Err(InvalidInput::new(
                    "venue.sections.rows",
                    format!("section {:?} needs 1 to {} rows", s.code, limits::ROWS_PER_SECTION_MAX),
                ));
            }
            layout.sections.push(Section { code: s.code.clone(), name: s.name.clone(), category });
            let mut row_labels = HashMap::new();
            for (ri, r) in s.rows.iter().enumerate() {
                check_label("venue.sections.rows.label", &r.label)?;
                if row_labels.insert(r.label.as_str(), ()).is_some() {
                    return Err(InvalidInput::new(
                        "venue.sections.rows.label",
                        format!("row {:?} appears twice in section {:?}", r.label, s.code),
                    ));
                }
                // Seat numbers stay within 9 digits, the most a label may carry.
                if u64::from(r.first_number.max(1)) + u64::from(r.seats) > limits::SEAT_NUMBER_MAX {
                    return Err(InvalidInput::new(
                        "venue.sections.rows.first_number",
                        format!("row {:?} of section {:?} numbers seats past {}", r.label, s.code, limits::SEAT_NUMBER_MAX),
                    ));
                }
                if r.seats == 0 || r.seats as usize > limits::SEATS_PER_ROW_MAX {
                    return Err(InvalidInput::new(
                        "venue.sections.rows.seats",
                        format!("row {:?} of section {:?} needs 1 to {} seats", r.label, s.code, limits::SEATS_PER_ROW_MAX),
                    ));
                }
                let first_seat = layout.seats.len() as u32;
                let row_idx = layout.rows.len() as u32;
                for n in 0..r.seats {
                    layout.seats.push(SeatDef { row: row_idx, number: r.first_number.max(1) + n, x: s.x + n as f32, y: s.y + ri as f32 });
                }
                layout.rows.push(Row { section: si as u16, label: r.label.clone(), first_seat, len: r.seats });
                if layout.seats.len() > limits::SEATS_PER_EVENT_MAX {
                    return Err(InvalidInput::new(
                        "venue.sections",
                        format!("a venue may have at most {} seats", limits::SEATS_PER_EVENT_MAX),
                    ));
                }
            }
        }
        Ok(layout)
    }

    pub fn seat_count(&self) -> usize {
        self.seats.len()
    }

    pub fn seat(&self, idx: SeatIdx) -> Option<&SeatDef> {
        self.seats.get(idx.0 as usize)
    }

    pub fn row_of(&self, idx: SeatIdx) -> &Row {
        &self.rows[self.seats[idx.0 as usize].row as usize]
    }

    pub fn section_of(&self, idx: SeatIdx) -> &Section {
        &self.sections[self.row_of(idx).section as usize]
    }

    /// The human label of a seat: `SECTION-ROW-NUMBER`, e.g. `A-3-12`.
    pub fn label(&self, idx: SeatIdx) -> String {
        let seat = &self.seats[idx.0 as usize];
        let row = &self.rows[seat.row as usize];
        format!("{}-{}-{}", self.sections[row.section as usize].code, row.label, seat.number)
    }

    /// Everything people and clients are told about one seat, in one place.
    /// Panics if `idx` is out of range (an index comes from this layout).
    pub fn describe(&self, idx: SeatIdx) -> SeatDescription<'_> {
        let def = &self.seats[idx.0 as usize];
        let row = &self.rows[def.row as usize];
        let section = &self.sections[row.section as usize];
        let category = &self.categories[section.category as usize];
        SeatDescription {
            label: self.label(idx),
            section: &section.code,
            row: &row.label,
            number: def.number,
            category_index: section.category,
            category_code: &category.code,
            category_name: &category.name,
            x: def.x,
            y: def.y,
        }
    }

    pub fn category_of(&self, idx: SeatIdx) -> u16 {
        self.section_of(idx).category
    }

    pub fn section_index(&self, code: &str) -> Option<u16> {
        self.sections.iter().position(|s| s.code == code).map(|i| i as u16)
    }

    pub fn category_index(&self, code: &str) -> Option<u16> {
        self.categories.iter().position(|c| c.code == code).map(|i| i as u16)
    }

    /// Builds the label → index map used at the edge to resolve seat labels.
    pub fn label_index(&self) -> HashMap<String, SeatIdx> {
        (0..self.seats.len() as u32).map(|i| (self.label(SeatIdx(i)), SeatIdx(i))).collect()
    }
}

/// Resolves `SECTION-ROW-NUMBER` labels to seat indexes without a string per
/// seat: a map per section of its rows, and seat numbers are consecutive.
#[derive(Clone, Debug)]
pub struct SeatIndex {
    sections: HashMap<String, HashMap<String, u32>>,
}

/// Why a seat label did not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelError {
    /// Not of the form SECTION-ROW-NUMBER.
    Malformed,
    /// Well formed, but no such seat in this venue.
    Unknown,
}

impl SeatIndex {
    pub fn new(layout: &Layout) -> SeatIndex {
        let mut sections: HashMap<String, HashMap<String, u32>> =
            layout.sections.iter().map(|s| (s.code.clone(), HashMap::new())).collect();
        for (ri, r) in layout.rows.iter().enumerate() {
            let code = &layout.sections[r.section as usize].code;
            sections.get_mut(code).expect("section exists").insert(r.label.clone(), ri as u32);
        }
        SeatIndex { sections }
    }

    pub fn resolve(&self, layout: &Layout, label: &str) -> Result<SeatIdx, LabelError> {
        let mut parts = label.trim().splitn(3, '-');
        let (Some(sec), Some(row), Some(num)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(LabelError::Malformed);
        };
        let ok = |p: &str| !p.is_empty() && p.len() <= limits::LABEL_BYTES_MAX && p.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok(sec) || !ok(row) || !num.chars().all(|c| c.is_ascii_digit()) || num.is_empty() || num.len() > 9 {
            return Err(LabelError::Malformed);
        }
        let number: u32 = num.parse().map_err(|_| LabelError::Malformed)?;
        let ri = *self.sections.get(sec).and_then(|rows| rows.get(row)).ok_or(LabelError::Unknown)?;
        let r = &layout.rows[ri as usize];
        let first = layout.seats[r.first_seat as usize].number;
        if number < first || number - first >= r.len {
            return Err(LabelError::Unknown);
        }
        Ok(SeatIdx(r.first_seat + (number - first)))
    }
}

/// A rectangular venue: `sections` sections of `rows` × `seats_per_row`,
/// alternately in two price categories, in UTC. For tests and benchmarks
/// only (the engine's own unit tests, and `usher-test-support`, which turns
/// on the `test-support` feature): not in the API of a normal build.
#[cfg(any(test, feature = "test-support"))]
pub fn grid_venue(name: &str, sections: usize, rows: usize, seats_per_row: u32) -> VenueSpec {
    VenueSpec {
        time_zone: "UTC".into(),
        name: name.to_owned(),
        categories: vec![
            CategorySpec { code: "P1".into(), name: "Premium".into() },
            CategorySpec { code: "P2".into(), name: "Standard".into() },
        ],
        sections: (0..sections)
            .map(|s| SectionSpec {
                code: section_code(s),
                name: format!("Section {}", section_code(s)),
                category: if s % 2 == 0 { "P1".into() } else { "P2".into() },
                x: (s % 4) as f32 * (seats_per_row as f32 + 4.0),
                y: (s / 4) as f32 * (rows as f32 + 4.0),
                rows: (0..rows).map(|r| RowSpec { label: (r + 1).to_string(), seats: seats_per_row, first_number: 1 }).collect(),
            })
            .collect(),
    }
}

#[cfg(any(test, feature = "test-support"))]
fn section_code(i: usize) -> String {
    // A, B, ..., Z, A1, B1, ...
    let letter = (b'A' + (i % 26) as u8) as char;
    if i < 26 { letter.to_string() } else { format!("{letter}{}", i / 26) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_venue_numbers_rows_contiguously() {
        let l = Layout::build(&grid_venue("t", 3, 4, 5)).unwrap();
        assert_eq!(l.seat_count(), 60);
        assert_eq!(l.rows.len(), 12);
        assert_eq!(l.label(SeatIdx(0)), "A-1-1");
        assert_eq!(l.label(SeatIdx(6)), "A-2-2");
        assert_eq!(l.label(SeatIdx(59)), "C-4-5");
        for r in &l.rows {
            for i in 0..r.len {
                assert_eq!(l.seats[(r.first_seat + i) as usize].number, i + 1);
            }
        }
        assert_eq!(l.label_index().len(), 60);
        let idx = SeatIndex::new(&l);
        for (label, seat) in l.label_index() {
            assert_eq!(idx.resolve(&l, &label), Ok(seat));
        }
        assert_eq!(idx.resolve(&l, "A-1-6"), Err(LabelError::Unknown));
        assert_eq!(idx.resolve(&l, "A-1-0"), Err(LabelError::Unknown));
        assert_eq!(idx.resolve(&l, "Z-1-1"), Err(LabelError::Unknown));
        assert_eq!(idx.resolve(&l, "A-1"), Err(LabelError::Malformed));
        assert_eq!(idx.resolve(&l, "A-1-x"), Err(LabelError::Malformed));
        assert_eq!(idx.resolve(&l, "A--1"), Err(LabelError::Malformed));
    }

    #[test]
    fn rejects_unknown_category_and_duplicates() {
        let mut v = grid_venue("t", 2, 1, 1);
        v.sections[0].category = "X".into();
        assert_eq!(Layout::build(&v).unwrap_err().field, "venue.sections.category");
        let mut v = grid_venue("t", 2, 1, 1);
        v.sections[1].code = "A".into();
        assert_eq!(Layout::build(&v).unwrap_err().field, "venue.sections.code");
        let mut v = grid_venue("t", 1, 1, 1);
        v.sections[0].rows[0].seats = 0;
        assert_eq!(Layout::build(&v).unwrap_err().field, "venue.sections.rows.seats");
        let mut v = grid_venue("t", 1, 1, 1);
        v.sections[0].x = f32::NAN;
        assert_eq!(Layout::build(&v).unwrap_err().field, "venue.sections.x");
        let mut v = grid_venue("t", 1, 1, 2);
        v.sections[0].rows[0].first_number = u32::MAX - 1;
        assert_eq!(Layout::build(&v).unwrap_err().field, "venue.sections.rows.first_number");
    }
}
