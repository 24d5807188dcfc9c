//! The gRPC API of Financing, package `financing.v1`: the generated messages and services,
//! reading request fields into domain types (INVALID_ARGUMENT naming the field), the one
//! mapping from [`ApiError`] to a gRPC status, and what guards the servers (TLS,
//! authentication).

mod convert;
mod error;
mod guard;

pub use convert::{required_amount, required_id, to_proto_id};
pub use error::ApiError;
pub use guard::{Guard, GuardError, TlsError, TlsFiles};
use tonic::transport::server::Router;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::pb::health_server::{Health, HealthServer};

/// The start of every Financing gRPC server: TLS if given, the standard health service (driven
/// by the reporter `health` came with) and reflection (v1 and v1alpha, for every grpcurl) over
/// the API and health, all three open to anyone. Add the API's service (behind its
/// authentication) and serve.
pub fn server(
    health: HealthServer<impl Health>,
    tls: Option<ServerTlsConfig>,
) -> Result<Router, tonic::transport::Error> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let embedded = "the embedded descriptors are valid";
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    Ok(builder
        .add_service(health)
        .add_service(reflection().build_v1().expect(embedded))
        .add_service(reflection().build_v1alpha().expect(embedded)))
}

/// The generated code for `api/*.proto`.
pub mod v1 {
    tonic::include_proto!("financing.v1");

    /// The API's encoded descriptors, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("financing_descriptor");
}
