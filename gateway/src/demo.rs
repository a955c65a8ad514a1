//! Demo data: a venue of 2,000 seats and two events on sale. Keyed creates,
//! so loading it again changes nothing.

use usher_actors::{Created, Store};
use usher_engine::{
    CategorySpec, Currency, EventConfig, EventId, EventStatus, IdempotencyKey, Layout, Millis, Money, RowSpec, SectionSpec, VenueId,
    VenueSpec, fingerprint_bytes, limits,
};

pub fn venue() -> VenueSpec {
    let cats = [("PREM", "Premium"), ("STD", "Standard"), ("BAL", "Balcony")];
    // 8 sections × 10 rows × 25 seats: stalls in front, then the circle, then the balcony.
    let sections = [
        ("SL", "Stalls left", "PREM"),
        ("SC", "Stalls centre", "PREM"),
        ("SR", "Stalls right", "PREM"),
        ("CL", "Circle left", "STD"),
        ("CC", "Circle centre", "STD"),
        ("CR", "Circle right", "STD"),
        ("BL", "Balcony left", "BAL"),
        ("BR", "Balcony right", "BAL"),
    ];
    VenueSpec {
        name: "Usher Arena".into(),
        categories: cats.iter().map(|(c, n)| CategorySpec { code: (*c).into(), name: (*n).into() }).collect(),
        sections: sections
            .iter()
            .enumerate()
            .map(|(i, (code, name, cat))| SectionSpec {
                code: (*code).into(),
                name: (*name).into(),
                category: (*cat).into(),
                x: (i % 3) as f32 * 28.0,
                y: (i / 3) as f32 * 13.0,
                rows: (0..10).map(|r| RowSpec { label: ((b'A' + r as u8) as char).to_string(), seats: 25, first_number: 1 }).collect(),
            })
            .collect(),
    }
}

/// Loads the demo data if it is not there yet; returns the event ids.
pub async fn load(store: &dyn Store, now: Millis) -> anyhow::Result<Vec<EventId>> {
    let spec = venue();
    let layout = Layout::build(&spec)?;
    let key = IdempotencyKey::parse("demo-venue-v1")?;
    let venue_id =
        match store.create_venue(&key, fingerprint_bytes(0, b"demo-venue-v1"), VenueId(uuid::Uuid::new_v4()), &spec, &layout, now).await? {
            Created::New(id) | Created::Replayed(id) => id,
            Created::KeyReused => anyhow::bail!("demo venue key is taken by another request"),
        };
    let eur = Currency::parse("EUR")?;
    let day = 86_400_000u64;
    let mut ids = Vec::new();
    for (n, (name, desc, days, prices)) in [
        ("Opening Night", "The first night of the season, with the full company.", 30u64, [12_000i64, 8_000, 4_500]),
        ("Symphony No. 9", "Beethoven's ninth, with choir.", 45, [9_500, 6_500, 3_500]),
    ]
    .into_iter()
    .enumerate()
    {
        let starts_at = now.plus_ms(days * day);
        let config = EventConfig {
            id: EventId(uuid::Uuid::new_v4()),
            venue_id,
            name: name.into(),
            description: desc.into(),
            starts_at,
            sales_start: now,
            sales_end: starts_at,
            status: EventStatus::OnSale,
            hold_duration_ms: limits::HOLD_DURATION_MS_DEFAULT,
            hold_seats_max: limits::HOLD_SEATS_DEFAULT,
            prices: prices.iter().map(|&minor| Money { minor, currency: eur }).collect(),
        };
        config.validate(&layout)?;
        let k = format!("demo-event-v1-{n}");
        let key = IdempotencyKey::parse(&k)?;
        match store.create_event(&key, fingerprint_bytes(0, k.as_bytes()), &config, now).await? {
            Created::New(id) | Created::Replayed(id) => ids.push(id),
            Created::KeyReused => anyhow::bail!("demo event key is taken by another request"),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_venue_has_2000_seats() {
        let l = usher_engine::Layout::build(&super::venue()).unwrap();
        assert_eq!(l.seat_count(), 2000);
    }
}
