//! The public gRPC services of a node.

mod registry;
mod site;

pub use registry::RegistryApi;
pub use site::SiteApi;
