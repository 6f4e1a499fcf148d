//! The HTTP edge: the state handlers share, the routes, and what every listener shares (one
//! accept loop with its limits, certificates reloaded from files, bearer authentication, and
//! who may read demand).

pub mod accept;
pub mod access;
pub mod bearer;
pub mod grpc;
pub mod limits;
pub mod router;
pub mod state;
pub mod tls;

pub use access::ReadAccess;
pub use router::{router, router_for, router_with};
pub use state::AppState;
