//! The client's side: a token sent with requests, as a tonic interceptor for a client that acts
//! as one party, or request by request for one that acts for many.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Bearer {
    value: MetadataValue<Ascii>,
}

/// Never shows the token.
impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(..)")
    }
}

impl Bearer {
    pub fn new(token: &str) -> Bearer {
        Bearer {
            value: format!("Bearer {token}").parse().expect("a JWT is ASCII"),
        }
    }

    /// `message` as a request that carries the token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        request
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        Ok(request)
    }
}
