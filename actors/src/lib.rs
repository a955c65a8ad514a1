//! The actor system: a registry that spawns and supervises one `EventActor`
//! per event, each owning that event's in-memory seat map and committing its
//! decisions in groups. Also owns the ports the actors drive.

pub mod clock;
pub mod consumers;
pub mod event;
pub mod identity;
pub mod local_time;
pub mod metrics;
pub mod ownership;
pub mod ports;
pub mod postman;
pub mod registry;
pub mod relay;
pub mod saga;
pub mod trace;

pub use clock::Clock;
pub use event::{BatchStats, CommandError, EventHandle, EventMsg, Outcome, SeatChange, SeatMapView};
pub use identity::*;
pub use ownership::{LocalOwnership, SoleServer};
pub use ports::*;
pub use registry::{EventFacts, Grant, LiveEvent, Registry, RegistryConfig};
pub use relay::{Relay, RelayConfig, RelayStatus};
pub use saga::{CardVault, MailTraces, OrderWriter, RenderQueue, SagaConfig, SagaDeps, SagaError, Sagas};
