//! `CatalogService`: venues, events, sales status, blocking, seat maps.

use std::collections::HashMap;
use std::pin::Pin;

use futures::Stream;
use prost::Message;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};
use usher_actors::{Created, EventFilter, EventHandle, Visibility};
use usher_engine::{
    Cap, CategorySpec, Command, Currency, EventConfig, EventId, EventStatus, FingerprintTag, Layout, Millis, Money, OrgId, Principal,
    Reply, RowSpec, SectionSpec, VenueId, VenueSpec, fingerprint_bytes, limits,
};
use usher_proto::v1::{self as pb, catalog_service_server::CatalogService};

use crate::auth::Caller;
use crate::convert::{self, check_printable, check_seat_list};
use crate::ctx::Ctx;
use crate::doors::{self, caller};
use crate::error::{ApiError, ErrorCode, Reason};
use crate::node_service::{Handlers, serve_here};
use crate::streams::{FeedItem, Source};

pub(crate) mod json;

#[derive(Clone)]
pub struct Catalog {
    pub ctx: Ctx,
}

/// Fingerprint of a keyed create: the request without its key, tagged by kind.
fn fingerprint<M: Message + Clone>(tag: FingerprintTag, req: &M, clear_key: impl FnOnce(&mut M)) -> u64 {
    let mut r = req.clone();
    clear_key(&mut r);
    fingerprint_bytes(tag, &r.encode_to_vec())
}

fn venue_pb(id: VenueId, org: OrgId, spec: &VenueSpec, seat_count: u32) -> pb::Venue {
    pb::Venue {
        venue_id: id.to_string(),
        org_id: org.to_string(),
        name: spec.name.clone(),
        time_zone: spec.time_zone.clone(),
        seat_count,
        categories: spec.categories.iter().map(|c| pb::PriceCategory { code: c.code.clone(), name: c.name.clone() }).collect(),
        sections: spec
            .sections
            .iter()
            .map(|s| pb::SectionSpec {
                code: s.code.clone(),
                name: s.name.clone(),
                category: s.category.clone(),
                x: s.x,
                y: s.y,
                rows: s.rows.iter().map(|r| pb::RowSpec { label: r.label.clone(), seats: r.seats, first_number: r.first_number }).collect(),
            })
            .collect(),
    }
}

impl Catalog {
    /// The calls this service serves for other nodes (`node_service`).
    pub fn serve_forwarded(&self, h: &mut Handlers) {
        use usher_engine::EventStatus::{Cancelled, OnSale, SalesClosed};
        serve_here!(h, self, &doors::CATALOG_GET_EVENT, |s, c, r: pb::GetEventRequest| s.event_here(&c, &r.event_id));
        serve_here!(h, self, &doors::CATALOG_GET_SEAT_MAP, |s, c, r: pb::GetSeatMapRequest| s.seat_map_here(&c, &r.event_id));
        serve_here!(h, self, &doors::CATALOG_GET_SEAT_LAYOUT, |s, c, r: pb::GetSeatLayoutRequest| s.seat_layout_here(&c, &r.event_id));
        serve_here!(h, self, &doors::CATALOG_GET_SEAT_STATUS, |s, c, r: pb::GetSeatStatusRequest| s.seat_status_here(&c, &r.event_id));
        serve_here!(h, self, &doors::CATALOG_OPEN_SALES, |s, c, r: pb::EventCommandRequest| s.status_command_here(&c, r, OnSale));
        serve_here!(h, self, &doors::CATALOG_CLOSE_SALES, |s, c, r: pb::EventCommandRequest| s.status_command_here(&c, r, SalesClosed));
        serve_here!(h, self, &doors::CATALOG_CANCEL_EVENT, |s, c, r: pb::EventCommandRequest| s.status_command_here(&c, r, Cancelled));
        serve_here!(h, self, &doors::CATALOG_BLOCK_SEATS, |s, c, r: pb::SeatsCommandRequest| s.seats_command_here(&c, r, true));
        serve_here!(h, self, &doors::CATALOG_UNBLOCK_SEATS, |s, c, r: pb::SeatsCommandRequest| s.seats_command_here(&c, r, false));
    }

    pub(crate) async fn list(&self, c: &Caller, req: pb::ListEventsRequest) -> Result<pb::ListEventsResponse, ApiError> {
        if req.page_size > crate::limits::EVENTS_PAGE_MAX {
            return Err(ApiError::invalid("page_size", format!("at most {}", crate::limits::EVENTS_PAGE_MAX)));
        }
        let size = if req.page_size == 0 { 50 } else { req.page_size };
        let filter = EventFilter {
            status: convert::status_from_pb(req.status)?,
            starts_after: req.starts_after.as_ref().map(|t| convert::millis("starts_after", t)).transpose()?,
            starts_before: req.starts_before.as_ref().map(|t| convert::millis("starts_before", t)).transpose()?,
            after: page_token(&req.page_token)?,
            limit: size + 1,
            visible: match &c.principal {
                p if p.is_admin() => Visibility::All,
                Principal::User(u) if !u.memberships.is_empty() => Visibility::PublicAnd(u.memberships.iter().map(|m| m.org).collect()),
                Principal::Partner(p) => Visibility::PublicAnd(vec![p.org]),
                Principal::Gate(g) => Visibility::PublicAnd(vec![g.org]),
                _ => Visibility::Public,
            },
        };
        let mut events = self.ctx.store().list_events(filter).await?;
        let more = events.len() > size as usize;
        events.truncate(size as usize);
        // A listing reads each venue's record once a page; it never builds
        // a layout (per-seat work that made one listing of large venues cost
        // seconds of CPU).
        let mut venues: HashMap<VenueId, usher_actors::VenueRecord> = HashMap::new();
        let mut out = Vec::with_capacity(events.len());
        // The page token follows every row read, even the hidden ones.
        let next_page_token = match (more, events.last()) {
            (true, Some(last)) => format!("{}_{}", last.starts_at.0, last.id),
            _ => String::new(),
        };
        // A partner or gate scoped to some events sees only those of its organization's unlisted ones.
        events.retain(|e| c.sees(e));
        for e in &events {
            let venue = match venues.entry(e.venue_id) {
                std::collections::hash_map::Entry::Occupied(v) => v.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(self.ctx.store().get_venue(e.venue_id).await?.ok_or_else(|| venue_not_found(e.venue_id))?)
                }
            };
            out.push(convert::event(e, (&*venue).into(), None));
        }
        Ok(pb::ListEventsResponse { events: out, next_page_token })
    }

    pub(crate) async fn event(&self, c: &Caller, event_id: &str) -> Result<pb::Event, ApiError> {
        let r = pb::GetEventRequest { event_id: event_id.to_owned() };
        self.ctx.routed(c, &doors::CATALOG_GET_EVENT, r, |r| async move { self.event_here(c, &r.event_id).await }).await
    }

    pub(crate) async fn event_here(&self, c: &Caller, event_id: &str) -> Result<pb::Event, ApiError> {
        let id = convert::event_id(event_id)?;
        let handle = self.ctx.registry.event(id).await?;
        let (config, counts) = handle.summary().await?;
        if !c.sees(&config) {
            return Err(event_not_found(id));
        }
        Ok(convert::event(&config, handle.layout.as_ref().into(), Some(counts)))
    }

    pub(crate) async fn seat_map(&self, c: &Caller, event_id: &str) -> Result<pb::SeatMap, ApiError> {
        let r = pb::GetSeatMapRequest { event_id: event_id.to_owned() };
        self.ctx.routed(c, &doors::CATALOG_GET_SEAT_MAP, r, |r| async move { self.seat_map_here(c, &r.event_id).await }).await
    }

    pub(crate) async fn seat_map_here(&self, c: &Caller, event_id: &str) -> Result<pb::SeatMap, ApiError> {
        let id = convert::event_id(event_id)?;
        let handle = self.ctx.registry.event(id).await?;
        let m = handle.seat_map().await?;
        if !c.sees(&m.config) {
            return Err(event_not_found(id));
        }
        let seats =
            m.seats.iter().enumerate().map(|(i, &s)| convert::seat(&m.layout, &m.config, usher_engine::SeatIdx(i as u32), s)).collect();
        Ok(pb::SeatMap { event_id: id.to_string(), seats, counts: Some(convert::counts(m.counts)) })
    }

    /// A live feed of the event's seats for `c` (see `crate::streams`):
    /// refused past the stream caps, and for an event `c` may not see.
    pub(crate) async fn seat_feed(
        &self,
        c: &Caller,
        event_id: &str,
        cut: Option<crate::conns::ConnCut>,
    ) -> Result<(Source, crate::streams::FeedStream), ApiError> {
        let id = convert::event_id(event_id)?;
        let source = self.feed_source(id).await?;
        if !c.sees(&source.config().await?) {
            return Err(event_not_found(id));
        }
        let slot = self.ctx.streams.take(c)?;
        // Subscribe before the snapshot so no change falls between the two.
        let frames = self.ctx.hubs.subscribe(&self.ctx.registry, &source).await?;
        let feed = crate::streams::seat_feed(source.clone(), frames, self.ctx.stopping.clone(), slot, cut).await?;
        Ok((source, feed))
    }

    /// Where this node reads an event's live seats: its actor here, or in a
    /// cluster the mirror of the owner's (`crate::cluster::Mirror`), so a
    /// feed works from any node.
    async fn feed_source(&self, id: EventId) -> Result<Source, ApiError> {
        match (self.ctx.registry.event(id).await, &self.ctx.cluster) {
            (Ok(h), _) => Ok(Source::Local(h)),
            (Err(usher_actors::CommandError::OwnedElsewhere { owner, .. }), Some(cluster)) => {
                Ok(Source::Remote(cluster.mirror(&self.ctx.registry, id, &owner).await?))
            }
            (Err(e), _) => Err(e.into()),
        }
    }

    /// A page's live feed of the event's seats for `c` (see
    /// `crate::streams::PageWatcher`): checked and given its slot now; once
    /// the answer's head is out, `taken` brings its socket, which joins the
    /// event's hub. Refused past the stream caps, and for an event `c` may
    /// not see.
    pub(crate) async fn page_feed(
        &self,
        c: &Caller,
        event_id: &str,
        taken: tokio::sync::oneshot::Receiver<crate::conns::TakenSocket>,
        cut: crate::conns::ConnCut,
    ) -> Result<(), ApiError> {
        let id = convert::event_id(event_id)?;
        let handle = self.feed_source(id).await?;
        if !c.sees(&handle.config().await?) {
            return Err(event_not_found(id));
        }
        let slot = self.ctx.streams.take(c)?;
        let (hubs, registry) = (self.ctx.hubs.clone(), self.ctx.registry.clone());
        let wait = self.ctx.streams.stall();
        tokio::spawn(async move {
            // The head goes out at once unless the client reads nothing.
            let taken = tokio::time::timeout(wait, taken).await;
            // Hyper's side of the connection is no longer needed (or the
            // head never went out): drop it.
            cut.cut();
            if let Ok(Ok(taken)) = taken {
                let page = crate::streams::PageWatcher::new(taken, slot);
                if let Err(e) = hubs.attach(&registry, &handle, page).await {
                    tracing::info!(event_id = %id, error = %e.message, "a page's live feed could not join its event's hub");
                }
            }
        });
        Ok(())
    }

    /// Refuses a create that would take `org` past a quota; a retry of a
    /// create already made (its key is known) is never refused, so it gets
    /// its first answer. Two creates of one organization at once may both
    /// pass: a quota may be passed by the creates in flight, which the
    /// per-caller rate limit keeps few.
    async fn within_quota(
        &self,
        key: &usher_engine::IdempotencyKey,
        org: OrgId,
        now: Millis,
        check: impl FnOnce(&usher_engine::Quotas, &usher_engine::OrgUsage) -> Result<(), usher_engine::QuotaExceeded>,
    ) -> Result<(), ApiError> {
        if self.ctx.orders.lookup_command(key.as_str()).await?.is_some() {
            return Ok(());
        }
        let usage = self.ctx.store().org_usage(org, now).await?;
        Ok(check(&self.ctx.quotas, &usage)?)
    }

    /// The event's seats as rows (see `GetSeatLayout`), for `c`.
    pub(crate) async fn seat_layout(&self, c: &Caller, event_id: &str) -> Result<pb::SeatLayout, ApiError> {
        let r = pb::GetSeatLayoutRequest { event_id: event_id.to_owned() };
        self.ctx.routed(c, &doors::CATALOG_GET_SEAT_LAYOUT, r, |r| async move { self.seat_layout_here(c, &r.event_id).await }).await
    }

    pub(crate) async fn seat_layout_here(&self, c: &Caller, event_id: &str) -> Result<pb::SeatLayout, ApiError> {
        let id = convert::event_id(event_id)?;
        let handle = self.ctx.registry.event(id).await?;
        let (config, _) = handle.summary().await?;
        if !c.sees(&config) {
            return Err(event_not_found(id));
        }
        Ok(convert::seat_layout(&config, &handle.layout))
    }

    /// Every seat's status, a byte a seat (see `GetSeatStatus`), for `c`.
    pub(crate) async fn seat_status(&self, c: &Caller, event_id: &str) -> Result<pb::SeatStatusVector, ApiError> {
        let r = pb::GetSeatStatusRequest { event_id: event_id.to_owned() };
        self.ctx.routed(c, &doors::CATALOG_GET_SEAT_STATUS, r, |r| async move { self.seat_status_here(c, &r.event_id).await }).await
    }

    pub(crate) async fn seat_status_here(&self, c: &Caller, event_id: &str) -> Result<pb::SeatStatusVector, ApiError> {
        let id = convert::event_id(event_id)?;
        let m = self.ctx.registry.event(id).await?.seat_map().await?;
        if !c.sees(&m.config) {
            return Err(event_not_found(id));
        }
        Ok(pb::SeatStatusVector {
            event_id: id.to_string(),
            status: convert::status_bytes(&m.seats),
            counts: Some(convert::counts(m.counts)),
        })
    }

    /// A venue's layout, and the organization that owns it.
    /// The venue's layout, organization and IANA time zone.
    async fn layout_of(&self, venue: VenueId) -> Result<(Layout, OrgId, String), ApiError> {
        let v = self.ctx.store().get_venue(venue).await?.ok_or_else(|| venue_not_found(venue))?;
        Ok((Layout::build(&v.spec)?, v.org_id, v.spec.time_zone))
    }

    /// The event's actor, once the caller may manage it (another
    /// organization's event is not found).
    async fn managed(&self, c: &Caller, id: EventId) -> Result<EventHandle, ApiError> {
        let handle = self.ctx.registry.event(id).await?;
        c.may(handle.org, Cap::ManageEvents, Reason::EventNotFound, format_args!("event {id}"))?;
        Ok(handle)
    }

    async fn event_command(&self, c: &Caller, key: &str, event_id: &str, cmd: Command, action: &str) -> Result<pb::Event, ApiError> {
        let key = c.key(key)?;
        let id = convert::event_id(event_id)?;
        let handle = self.managed(c, id).await?;
        let audit = c.audit(handle.org, self.ctx.now(), action, id, "");
        let out = handle.command_audited(key, cmd, audit).await?;
        match out.result {
            Ok(_) => Ok(convert::event(&out.config, out.layout.as_ref().into(), Some(out.counts))),
            Err(r) => Err(ApiError::from_reject(&r, &out.layout)),
        }
    }

    /// Opens, closes or cancels an event's sales (on its owner).
    async fn status_command(&self, c: &Caller, r: pb::EventCommandRequest, to: EventStatus) -> Result<pb::Event, ApiError> {
        let path = match to {
            EventStatus::OnSale => &doors::CATALOG_OPEN_SALES,
            EventStatus::SalesClosed => &doors::CATALOG_CLOSE_SALES,
            _ => &doors::CATALOG_CANCEL_EVENT,
        };
        self.ctx.routed(c, path, r, |r| self.status_command_here(c, r, to)).await
    }

    pub(crate) async fn status_command_here(&self, c: &Caller, r: pb::EventCommandRequest, to: EventStatus) -> Result<pb::Event, ApiError> {
        let action = match to {
            EventStatus::OnSale => "event.open_sales",
            EventStatus::SalesClosed => "event.close_sales",
            _ => "event.cancel",
        };
        let event = self.event_command(c, &r.idempotency_key, &r.event_id, Command::SetStatus { to }, action).await?;
        if to == EventStatus::Cancelled {
            // Every open order of the event is cancelled, and every paid one
            // refunded, by its saga (here: the event's owner runs them). A
            // retried cancel asks again: harmless.
            if let Ok(id) = convert::event_id(&r.event_id) {
                self.ctx.sagas.event_cancelled(id);
            }
        }
        Ok(event)
    }

    async fn seats_command(&self, c: &Caller, req: pb::SeatsCommandRequest, block: bool) -> Result<pb::SeatsChanged, ApiError> {
        let path = if block { &doors::CATALOG_BLOCK_SEATS } else { &doors::CATALOG_UNBLOCK_SEATS };
        self.ctx.routed(c, path, req, |r| self.seats_command_here(c, r, block)).await
    }

    pub(crate) async fn seats_command_here(
        &self,
        c: &Caller,
        req: pb::SeatsCommandRequest,
        block: bool,
    ) -> Result<pb::SeatsChanged, ApiError> {
        let key = c.key(&req.idempotency_key)?;
        let id = convert::event_id(&req.event_id)?;
        check_seat_list(&req.seat_ids)?;
        let handle = self.managed(c, id).await?;
        let seats = convert::seats(&handle, &req.seat_ids)?;
        let n = seats.len();
        let (cmd, action) = if block { (Command::Block { seats }, "seats.block") } else { (Command::Unblock { seats }, "seats.unblock") };
        let audit = c.audit(handle.org, self.ctx.now(), action, id, format!("{n} seats"));
        let out = handle.command_audited(key, cmd, audit).await?;
        match out.result {
            Ok(Reply::Seats { changed }) => Ok(pb::SeatsChanged { event_id: id.to_string(), changed }),
            Ok(other) => {
                tracing::error!(answer = ?other, "the event actor answered a command with another command's reply");
                Err(ApiError::new(ErrorCode::Internal, Reason::Internal, "the server could not complete the request"))
            }
            Err(r) => Err(ApiError::from_reject(&r, &out.layout)),
        }
    }
}

fn venue_not_found(venue: VenueId) -> ApiError {
    ApiError::new(ErrorCode::NotFound, Reason::VenueNotFound, format!("venue {venue} not found"))
}

fn event_not_found(id: EventId) -> ApiError {
    ApiError::new(ErrorCode::NotFound, Reason::EventNotFound, format!("event {id} not found"))
}

/// The organization a new venue belongs to: as named, or the caller's only
/// organization where it manages venues.
fn venue_org(c: &Caller, named: &str) -> Result<OrgId, ApiError> {
    if !named.is_empty() {
        return Ok(OrgId::parse(named)?);
    }
    let mine: Vec<OrgId> = match &c.principal {
        Principal::User(u) => u.memberships.iter().filter(|m| m.role.allows(Cap::ManageVenues)).map(|m| m.org).collect(),
        _ => Vec::new(),
    };
    match mine.as_slice() {
        [one] => Ok(*one),
        _ => Err(ApiError::invalid("org_id", "name the organization that owns the venue")),
    }
}

/// The venue a `CreateVenueRequest` describes (rows numbered from 1 by default).
pub fn spec_from(req: &pb::CreateVenueRequest) -> VenueSpec {
    VenueSpec {
        name: req.name.clone(),
        time_zone: if req.time_zone.is_empty() { "UTC".to_owned() } else { req.time_zone.clone() },
        categories: req.categories.iter().map(|c| CategorySpec { code: c.code.clone(), name: c.name.clone() }).collect(),
        sections: req
            .sections
            .iter()
            .map(|s| SectionSpec {
                code: s.code.clone(),
                name: s.name.clone(),
                category: s.category.clone(),
                x: s.x,
                y: s.y,
                rows: s
                    .rows
                    .iter()
                    .map(|r| RowSpec { label: r.label.clone(), seats: r.seats, first_number: r.first_number.max(1) })
                    .collect(),
            })
            .collect(),
    }
}

fn page_token(t: &str) -> Result<Option<(Millis, EventId)>, ApiError> {
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || ApiError::invalid("page_token", "not a token this server issued");
    let (ms, id) = t.split_once('_').ok_or_else(bad)?;
    Ok(Some((Millis(ms.parse().map_err(|_| bad())?), EventId::parse(id).map_err(|_| bad())?)))
}

/// What the generated trait expects a server stream to be (`BoxStream`).
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::SeatChanges, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CatalogService for Catalog {
    async fn create_venue(&self, req: Request<pb::CreateVenueRequest>) -> Result<Response<pb::Venue>, Status> {
        let c = caller(&req)?;
        let req = req.into_inner();
        let key = c.key(&req.idempotency_key)?;
        let org = venue_org(&c, &req.org_id)?;
        c.may(org, Cap::ManageVenues, Reason::OrgNotFound, format_args!("organization {org}"))?;
        let mut spec = spec_from(&req);
        spec.time_zone = usher_actors::local_time::zone("time_zone", &spec.time_zone).map_err(ApiError::from)?;
        let layout = Layout::build(&spec).map_err(ApiError::from)?;
        check_printable("venue.name", &spec.name)?;
        spec.categories.iter().try_for_each(|c| check_printable("venue.categories.name", &c.name))?;
        spec.sections.iter().try_for_each(|s| check_printable("venue.sections.name", &s.name))?;
        let fp = fingerprint(FingerprintTag::CreateVenue, &req, |r| r.idempotency_key.clear());
        let id = VenueId(uuid::Uuid::new_v4());
        let now = self.ctx.now();
        let seats = layout.seat_count() as u32;
        self.within_quota(&key, org, now, |q, usage| q.check_new_venue(usage, seats)).await?;
        let audit = c.audit(org, now, "venue.create", id, format!("{} seats", layout.seat_count()));
        let id = match self.ctx.store().create_venue(&key, fp, id, org, &spec, &layout, now, &audit).await.map_err(ApiError::from)? {
            Created::New(id) | Created::Replayed(id) => id,
            Created::KeyReused => {
                return Err(ApiError::from_reject(&usher_engine::Reject::IdempotencyKeyReused, &layout).into());
            }
        };
        let v = self.ctx.store().get_venue(id).await.map_err(ApiError::from)?.ok_or_else(|| Status::internal("venue vanished"))?;
        Ok(Response::new(venue_pb(v.id, v.org_id, &v.spec, v.seat_count)))
    }

    async fn get_venue(&self, req: Request<pb::GetVenueRequest>) -> Result<Response<pb::Venue>, Status> {
        let c = caller(&req)?;
        let id = VenueId::parse(&req.get_ref().venue_id).map_err(ApiError::from)?;
        let not_found = || ApiError::new(ErrorCode::NotFound, Reason::VenueNotFound, format!("venue {id} not found"));
        let v = self.ctx.store().get_venue(id).await.map_err(ApiError::from)?.ok_or_else(not_found)?;
        if !c.principal.relates_to(v.org_id) {
            return Err(not_found().into());
        }
        Ok(Response::new(venue_pb(v.id, v.org_id, &v.spec, v.seat_count)))
    }

    async fn create_event(&self, req: Request<pb::CreateEventRequest>) -> Result<Response<pb::Event>, Status> {
        let c = caller(&req)?;
        let req = req.into_inner();
        let key = c.key(&req.idempotency_key)?;
        let venue_id = VenueId::parse(&req.venue_id).map_err(ApiError::from)?;
        let (layout, org, time_zone) = self.layout_of(venue_id).await?;
        c.may(org, Cap::ManageEvents, Reason::VenueNotFound, format_args!("venue {venue_id}"))?;
        let now = self.ctx.now();
        let starts_at = convert::millis("starts_at", req.starts_at.as_ref().ok_or_else(|| ApiError::invalid("starts_at", "is required"))?)?;
        let sales_start = req.sales_start.as_ref().map(|t| convert::millis("sales_start", t)).transpose()?.unwrap_or(now);
        let sales_end = req.sales_end.as_ref().map(|t| convert::millis("sales_end", t)).transpose()?.unwrap_or(starts_at);
        let currency = Currency::parse(&req.currency).map_err(ApiError::from)?;
        let (lo, hi) = (limits::HOLD_DURATION_MS_MIN / 1000, limits::HOLD_DURATION_MS_MAX / 1000);
        if req.hold_duration_seconds != 0 && !(lo..=hi).contains(&u64::from(req.hold_duration_seconds)) {
            return Err(ApiError::invalid("hold_duration_seconds", format!("must be between {lo} and {hi} (0 means 30 minutes)")).into());
        }
        let mut prices: Vec<Option<Money>> = vec![None; layout.categories.len()];
        for p in &req.prices {
            let i = layout
                .category_index(&p.category)
                .ok_or_else(|| ApiError::invalid("prices", format!("the venue has no category {}", usher_engine::quoted(&p.category))))?;
            if prices[i as usize].replace(Money { minor: p.amount_minor, currency }).is_some() {
                return Err(ApiError::invalid("prices", format!("category {} is priced twice", usher_engine::quoted(&p.category))).into());
            }
        }
        let missing: Vec<&str> = layout.categories.iter().zip(&prices).filter(|(_, p)| p.is_none()).map(|(c, _)| c.code.as_str()).collect();
        if !missing.is_empty() {
            return Err(ApiError::invalid("prices", format!("no price for categories {}", missing.join(", "))).into());
        }
        let config = EventConfig {
            id: EventId(uuid::Uuid::new_v4()),
            org_id: org,
            venue_id,
            name: req.name.clone(),
            description: req.description.clone(),
            starts_at,
            sales_start,
            sales_end,
            status: if req.open_sales { EventStatus::OnSale } else { EventStatus::Draft },
            hold_duration_ms: if req.hold_duration_seconds == 0 {
                limits::HOLD_DURATION_MS_DEFAULT
            } else {
                u64::from(req.hold_duration_seconds) * 1000
            },
            hold_seats_max: if req.hold_seats_max == 0 { limits::HOLD_SEATS_DEFAULT } else { req.hold_seats_max },
            prices: prices.into_iter().flatten().collect(),
            time_zone,
        };
        config.validate(&layout).map_err(ApiError::from)?;
        check_printable("name", &config.name)?;
        self.within_quota(&key, org, now, |q, usage| q.check_new_event(usage)).await?;
        let fp = fingerprint(FingerprintTag::CreateEvent, &req, |r| r.idempotency_key.clear());
        let audit = c.audit(org, now, "event.create", config.id, config.name.clone());
        let id = match self.ctx.store().create_event(&key, fp, &config, now, &audit).await.map_err(ApiError::from)? {
            Created::New(id) | Created::Replayed(id) => id,
            Created::KeyReused => {
                return Err(ApiError::from_reject(&usher_engine::Reject::IdempotencyKeyReused, &layout).into());
            }
        };
        let stored = self.ctx.store().get_event(id).await.map_err(ApiError::from)?.ok_or_else(|| Status::internal("event vanished"))?;
        Ok(Response::new(convert::event(&stored, (&layout).into(), None)))
    }

    async fn open_sales(&self, req: Request<pb::EventCommandRequest>) -> Result<Response<pb::Event>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.status_command(&c, req.into_inner(), EventStatus::OnSale).await?))
    }

    async fn close_sales(&self, req: Request<pb::EventCommandRequest>) -> Result<Response<pb::Event>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.status_command(&c, req.into_inner(), EventStatus::SalesClosed).await?))
    }

    async fn cancel_event(&self, req: Request<pb::EventCommandRequest>) -> Result<Response<pb::Event>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.status_command(&c, req.into_inner(), EventStatus::Cancelled).await?))
    }

    async fn block_seats(&self, req: Request<pb::SeatsCommandRequest>) -> Result<Response<pb::SeatsChanged>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.seats_command(&c, req.into_inner(), true).await?))
    }

    async fn unblock_seats(&self, req: Request<pb::SeatsCommandRequest>) -> Result<Response<pb::SeatsChanged>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.seats_command(&c, req.into_inner(), false).await?))
    }

    async fn list_events(&self, req: Request<pb::ListEventsRequest>) -> Result<Response<pb::ListEventsResponse>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.list(&c, req.into_inner()).await?))
    }

    async fn get_event(&self, req: Request<pb::GetEventRequest>) -> Result<Response<pb::Event>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.event(&c, &req.get_ref().event_id).await?))
    }

    async fn get_seat_map(&self, req: Request<pb::GetSeatMapRequest>) -> Result<Response<pb::SeatMap>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.seat_map(&c, &req.get_ref().event_id).await?))
    }

    async fn get_seat_layout(&self, req: Request<pb::GetSeatLayoutRequest>) -> Result<Response<pb::SeatLayout>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.seat_layout(&c, &req.get_ref().event_id).await?))
    }

    async fn get_seat_status(&self, req: Request<pb::GetSeatStatusRequest>) -> Result<Response<pb::SeatStatusVector>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.seat_status(&c, &req.get_ref().event_id).await?))
    }

    async fn watch_seats(&self, req: Request<pb::WatchSeatsRequest>) -> Result<Response<WatchStream>, Status> {
        let c = caller(&req)?;
        let cut = req.extensions().get::<crate::conns::ConnCut>().cloned();
        let compact = req.get_ref().compact;
        let (handle, feed) = self.seat_feed(&c, &req.get_ref().event_id, cut).await?;
        let id = handle.event_id().to_string();
        let label = move |s: usher_engine::SeatIdx| handle.layout().label(s);
        let out = feed.filter_map(move |item| {
            let item = match item {
                Ok(item) => item,
                Err(e) => return Some(Err(Status::from(e))),
            };
            let snapshot = |changes: Vec<pb::SeatStatusChange>, status: Vec<u8>, counts| pb::SeatChanges {
                event_id: id.clone(),
                changes,
                counts: Some(convert::counts(counts)),
                snapshot: true,
                status,
            };
            Some(Ok(match item {
                // HTTP/2 keeps the connection itself.
                FeedItem::KeepAlive => return None,
                // Encoded once by the event's hub, for every watcher
                // (`seat_feed` passes on only frames encoded for it).
                FeedItem::Frame(f) => f.pb.clone()?,
                FeedItem::Snapshot(m) if compact => snapshot(Vec::new(), convert::status_bytes(&m.seats), m.counts),
                FeedItem::Snapshot(m) => snapshot(
                    m.seats
                        .iter()
                        .enumerate()
                        .map(|(i, &st)| pb::SeatStatusChange {
                            seat_id: label(usher_engine::SeatIdx(i as u32)),
                            status: convert::seat_status(st) as i32,
                        })
                        .collect(),
                    Vec::new(),
                    m.counts,
                ),
            }))
        });
        Ok(Response::new(Box::pin(out)))
    }
}
