//! Persistence back ends implementing `kassa_actors::store::Store`.

pub mod embedded;
pub mod scylla;
