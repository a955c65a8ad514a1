//! `InventoryService`: holds of seats.

use tonic::{Request, Response, Status};
use usher_actors::{EventHandle, Outcome};
use usher_engine::{Cap, Command, CustomerId, EventConfig, EventId, EventStatus, Hold, HoldId, Layout, Reject, Reply};
use usher_proto::v1::{self as pb, inventory_service_server::InventoryService};

use crate::auth::Caller;
use crate::convert;
use crate::convert::check_seat_list;
use crate::ctx::Ctx;
use crate::doors::{self, caller};
use crate::error::{ApiError, ErrorCode, Reason};
use crate::node_service::{Handlers, serve_here};

pub(crate) mod json;

#[derive(Clone)]
pub struct Inventory {
    pub ctx: Ctx,
}

/// A hold as this caller sees it: the customer as the caller refers to them.
fn hold_pb(c: &Caller, h: &Hold, config: &EventConfig, layout: &Layout) -> pb::Hold {
    let mut pb = convert::hold(h, config, layout);
    pb.customer_id = c.principal.customer_ref_of(&h.customer).to_owned();
    pb
}

/// An optional code of the venue (`""` for none) as its index, looked up
/// with `index`; an unknown one is INVALID_ARGUMENT on `field`.
fn venue_code<T>(field: &'static str, code: &str, index: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
    match code {
        "" => Ok(None),
        code => index(code)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(field, format!("no {field} {} in this venue", usher_engine::quoted(code)))),
    }
}

fn hold_reply(c: &Caller, out: Outcome) -> Result<pb::Hold, ApiError> {
    match out.result {
        Ok(Reply::Hold(h)) => Ok(hold_pb(c, &h, &out.config, &out.layout)),
        Ok(other) => {
            tracing::error!(answer = ?other, "the event actor answered a command with another command's reply");
            Err(ApiError::new(ErrorCode::Internal, Reason::Internal, "the server could not complete the request"))
        }
        // A draft or cancelled event is its organization's: to anyone else it does not exist.
        Err(Reject::EventNotOnSale { status: EventStatus::Draft | EventStatus::Cancelled } | Reject::EventCancelled)
            if !c.sees(&out.config) =>
        {
            Err(ApiError::new(ErrorCode::NotFound, Reason::EventNotFound, format!("event {} not found", out.config.id)))
        }
        Err(r) => Err(ApiError::from_reject(&r, &out.layout)),
    }
}

/// The customer a hold command acts for, from the caller (never from the request as is).
fn customer(c: &Caller, handle: &EventHandle, requested: &str) -> Result<CustomerId, ApiError> {
    c.principal
        .customer(handle.org, handle.event_id, requested)
        .map_err(|d| ApiError::denied(d, Reason::EventNotFound, format_args!("event {}", handle.event_id)))
}

impl Inventory {
    /// The calls this service serves for other nodes (`node_service`).
    pub fn serve_forwarded(&self, h: &mut Handlers) {
        serve_here!(h, self, &doors::INVENTORY_HOLD_SEATS, |s, c, r: pb::HoldSeatsRequest| s.hold_seats_here(&c, r));
        serve_here!(h, self, &doors::INVENTORY_HOLD_BEST_AVAILABLE, |s, c, r: pb::HoldBestAvailableRequest| s.hold_best_here(&c, r));
        serve_here!(h, self, &doors::INVENTORY_GET_HOLD, |s, c, r: pb::GetHoldRequest| s.get_here(&c, r));
        serve_here!(h, self, &doors::INVENTORY_RELEASE_HOLD, |s, c, r: pb::ReleaseHoldRequest| s.release_here(&c, r));
    }

    /// The event's actor, if the caller may see the event (a draft or a
    /// cancelled event is its organization's only).
    async fn visible(&self, c: &Caller, id: EventId) -> Result<EventHandle, ApiError> {
        let handle = self.ctx.registry.event(id).await?;
        if !c.sees_handle(&handle) {
            return Err(ApiError::new(ErrorCode::NotFound, Reason::EventNotFound, format!("event {id} not found")));
        }
        Ok(handle)
    }

    /// The event of a hold: as given, or looked up from the hold.
    async fn event_of(&self, hold: HoldId, event_id: &str) -> Result<EventHandle, ApiError> {
        let id = if event_id.is_empty() {
            self.ctx
                .store()
                .find_hold_event(hold)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, Reason::HoldNotFound, format!("hold {hold} not found")))?
        } else {
            convert::event_id(event_id)?
        };
        Ok(self.ctx.registry.event(id).await?)
    }

    pub(crate) async fn hold_seats(&self, c: &Caller, r: pb::HoldSeatsRequest) -> Result<pb::Hold, ApiError> {
        self.ctx.routed(c, &doors::INVENTORY_HOLD_SEATS, r, |r| self.hold_seats_here(c, r)).await
    }

    pub(crate) async fn hold_seats_here(&self, c: &Caller, r: pb::HoldSeatsRequest) -> Result<pb::Hold, ApiError> {
        let key = c.key(&r.idempotency_key)?;
        let id: EventId = convert::event_id(&r.event_id)?;
        check_seat_list(&r.seat_ids)?;
        let handle = self.visible(c, id).await?;
        let customer = customer(c, &handle, &r.customer_id)?;
        let seats = convert::seats(&handle, &r.seat_ids)?;
        let cmd = Command::HoldSeats { hold_id: HoldId(uuid::Uuid::new_v4()), customer, seats };
        hold_reply(c, handle.command(key, cmd).await?)
    }

    pub(crate) async fn hold_best(&self, c: &Caller, r: pb::HoldBestAvailableRequest) -> Result<pb::Hold, ApiError> {
        self.ctx.routed(c, &doors::INVENTORY_HOLD_BEST_AVAILABLE, r, |r| self.hold_best_here(c, r)).await
    }

    pub(crate) async fn hold_best_here(&self, c: &Caller, r: pb::HoldBestAvailableRequest) -> Result<pb::Hold, ApiError> {
        let key = c.key(&r.idempotency_key)?;
        let id = convert::event_id(&r.event_id)?;
        if r.quantity == 0 {
            return Err(ApiError::invalid("quantity", "must be at least 1"));
        }
        let handle = self.visible(c, id).await?;
        let customer = customer(c, &handle, &r.customer_id)?;
        let section = venue_code("section", &r.section, |code| handle.layout.section_index(code))?;
        let category = venue_code("category", &r.category, |code| handle.layout.category_index(code))?;
        let cmd = Command::HoldBestAvailable { hold_id: HoldId(uuid::Uuid::new_v4()), customer, quantity: r.quantity, section, category };
        hold_reply(c, handle.command(key, cmd).await?)
    }

    pub(crate) async fn get(&self, c: &Caller, r: pb::GetHoldRequest) -> Result<pb::Hold, ApiError> {
        self.ctx.routed(c, &doors::INVENTORY_GET_HOLD, r, |r| self.get_here(c, r)).await
    }

    pub(crate) async fn get_here(&self, c: &Caller, r: pb::GetHoldRequest) -> Result<pb::Hold, ApiError> {
        let hold = convert::hold_id(&r.hold_id)?;
        let not_found = || ApiError::new(ErrorCode::NotFound, Reason::HoldNotFound, format!("hold {hold} not found"));
        let handle = self.event_of(hold, &r.event_id).await?;
        let (h, config) = handle.hold(hold).await?.ok_or_else(not_found)?;
        // The customer's own hold, or any hold of an organization the caller sees orders of.
        if !c.principal.acts_for(&h.customer, handle.event_id) && c.principal.may(handle.org, Cap::ViewOrders).is_err() {
            return Err(not_found());
        }
        Ok(hold_pb(c, &h, &config, &handle.layout))
    }

    pub(crate) async fn release(&self, c: &Caller, r: pb::ReleaseHoldRequest) -> Result<pb::Hold, ApiError> {
        self.ctx.routed(c, &doors::INVENTORY_RELEASE_HOLD, r, |r| self.release_here(c, r)).await
    }

    pub(crate) async fn release_here(&self, c: &Caller, r: pb::ReleaseHoldRequest) -> Result<pb::Hold, ApiError> {
        let key = c.key(&r.idempotency_key)?;
        let hold = convert::hold_id(&r.hold_id)?;
        let handle = self.event_of(hold, &r.event_id).await?;
        // A member who may sell at the counter releases any hold of the
        // event; everyone else only the holds of the customer they act for
        // (the engine refuses another's with NOT_HOLD_OWNER).
        let owner = if r.customer_id.is_empty() && c.principal.may(handle.org, Cap::Sell).is_ok() {
            None
        } else {
            Some(customer(c, &handle, &r.customer_id)?)
        };
        hold_reply(c, handle.command(key, Command::Release { hold_id: hold, customer: owner }).await?)
    }
}

#[tonic::async_trait]
impl InventoryService for Inventory {
    async fn hold_seats(&self, req: Request<pb::HoldSeatsRequest>) -> Result<Response<pb::Hold>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(Inventory::hold_seats(self, &c, req.into_inner()).await?))
    }

    async fn hold_best_available(&self, req: Request<pb::HoldBestAvailableRequest>) -> Result<Response<pb::Hold>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.hold_best(&c, req.into_inner()).await?))
    }

    async fn get_hold(&self, req: Request<pb::GetHoldRequest>) -> Result<Response<pb::Hold>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.get(&c, req.into_inner()).await?))
    }

    async fn release_hold(&self, req: Request<pb::ReleaseHoldRequest>) -> Result<Response<pb::Hold>, Status> {
        let c = caller(&req)?;
        Ok(Response::new(self.release(&c, req.into_inner()).await?))
    }
}
