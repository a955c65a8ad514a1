//! `InventoryService`: holds of seats.

use tonic::{Request, Response, Status};
use usher_actors::{EventHandle, Outcome};
use usher_engine::{Command, CustomerId, EventId, HoldId, Reply};
use usher_proto::v1::{self as pb, inventory_service_server::InventoryService};

use crate::app::Ctx;
use crate::catalog::check_seat_list;
use crate::convert;
use crate::error::{ApiError, ErrorCode};

pub struct Inventory {
    pub ctx: Ctx,
}

fn hold_reply(out: Outcome) -> Result<pb::Hold, ApiError> {
    match out.result {
        Ok(Reply::Hold(h)) => Ok(convert::hold(&h, &out.config, &out.layout)),
        Ok(other) => Err(ApiError::new(ErrorCode::Internal, "INTERNAL", format!("unexpected answer {other:?}"))),
        Err(r) => Err(ApiError::from_reject(&r, &out.layout)),
    }
}

impl Inventory {
    /// The event of a hold: as given, or looked up from the hold.
    async fn event_of(&self, hold: HoldId, event_id: &str) -> Result<EventHandle, ApiError> {
        let id = if event_id.is_empty() {
            self.ctx
                .store()
                .find_hold_event(hold)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "HOLD_NOT_FOUND", format!("hold {hold} not found")))?
        } else {
            convert::event_id(event_id)?
        };
        Ok(self.ctx.registry.event(id).await?)
    }

    pub(crate) async fn hold_seats(&self, r: pb::HoldSeatsRequest) -> Result<pb::Hold, ApiError> {
        let key = convert::key(&r.idempotency_key)?;
        let id: EventId = convert::event_id(&r.event_id)?;
        let customer = CustomerId::parse(&r.customer_id)?;
        check_seat_list(&r.seat_ids)?;
        let handle = self.ctx.registry.event(id).await?;
        let seats = convert::seats(&handle, &r.seat_ids)?;
        let cmd = Command::HoldSeats { hold_id: HoldId(uuid::Uuid::new_v4()), customer, seats };
        hold_reply(handle.command(key, cmd).await?)
    }

    pub(crate) async fn hold_best(&self, r: pb::HoldBestAvailableRequest) -> Result<pb::Hold, ApiError> {
        let key = convert::key(&r.idempotency_key)?;
        let id = convert::event_id(&r.event_id)?;
        let customer = CustomerId::parse(&r.customer_id)?;
        if r.quantity == 0 {
            return Err(ApiError::invalid("quantity", "must be at least 1"));
        }
        let handle = self.ctx.registry.event(id).await?;
        let section = match r.section.as_str() {
            "" => None,
            code => Some(
                handle
                    .layout
                    .section_index(code)
                    .ok_or_else(|| ApiError::invalid("section", format!("no section {code:?} in this venue")))?,
            ),
        };
        let category = match r.category.as_str() {
            "" => None,
            code => Some(
                handle
                    .layout
                    .category_index(code)
                    .ok_or_else(|| ApiError::invalid("category", format!("no category {code:?} in this venue")))?,
            ),
        };
        let cmd = Command::HoldBestAvailable { hold_id: HoldId(uuid::Uuid::new_v4()), customer, quantity: r.quantity, section, category };
        hold_reply(handle.command(key, cmd).await?)
    }

    pub(crate) async fn get(&self, r: pb::GetHoldRequest) -> Result<pb::Hold, ApiError> {
        let hold = convert::hold_id(&r.hold_id)?;
        let handle = self.event_of(hold, &r.event_id).await?;
        let (h, config) = handle
            .hold(hold)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "HOLD_NOT_FOUND", format!("hold {hold} not found")))?;
        Ok(convert::hold(&h, &config, &handle.layout))
    }

    pub(crate) async fn release(&self, r: pb::ReleaseHoldRequest) -> Result<pb::Hold, ApiError> {
        let key = convert::key(&r.idempotency_key)?;
        let hold = convert::hold_id(&r.hold_id)?;
        let customer = if r.customer_id.is_empty() { None } else { Some(CustomerId::parse(&r.customer_id)?) };
        let handle = self.event_of(hold, &r.event_id).await?;
        hold_reply(handle.command(key, Command::Release { hold_id: hold, customer }).await?)
    }
}

#[tonic::async_trait]
impl InventoryService for Inventory {
    async fn hold_seats(&self, req: Request<pb::HoldSeatsRequest>) -> Result<Response<pb::Hold>, Status> {
        Ok(Response::new(Inventory::hold_seats(self, req.into_inner()).await?))
    }

    async fn hold_best_available(&self, req: Request<pb::HoldBestAvailableRequest>) -> Result<Response<pb::Hold>, Status> {
        Ok(Response::new(self.hold_best(req.into_inner()).await?))
    }

    async fn get_hold(&self, req: Request<pb::GetHoldRequest>) -> Result<Response<pb::Hold>, Status> {
        Ok(Response::new(self.get(req.into_inner()).await?))
    }

    async fn release_hold(&self, req: Request<pb::ReleaseHoldRequest>) -> Result<Response<pb::Hold>, Status> {
        Ok(Response::new(self.release(req.into_inner()).await?))
    }
}
