//! The public gRPC services of a node.

mod audit;
mod delegation;
mod mesh;
mod policy;
mod registry;
mod site;
mod tokens;

pub use audit::{AuditApi, record_to_proto};
pub use delegation::{DelegationsApi, ISSUER_JWKS_MAX_BYTES, parse_issuer_jwks};
pub use mesh::MeshApi;
pub use policy::{AuthzApi, PoliciesApi};
pub use registry::RegistryApi;
pub use site::SiteApi;
pub use tokens::{KeysApi, TokensApi};
