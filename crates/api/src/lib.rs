//! The gRPC API of Financing, package `financing.v1`: the generated messages and services,
//! reading request fields into domain types (INVALID_ARGUMENT naming the field), and the one
//! mapping from [`ApiError`] to a gRPC status.

mod convert;
mod error;

pub use convert::{required_amount, required_id, to_proto_id};
pub use error::ApiError;

/// gRPC reflection (v1 and v1alpha, for every grpcurl) over the API and the health service.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// The generated code for `api/*.proto`.
pub mod v1 {
    tonic::include_proto!("financing.v1");

    /// The API's encoded descriptors, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("financing_descriptor");
}
