//! Wire front ends. Each maps the layers' errors to its wire format in one place.

pub mod admin;
pub mod auth;
pub mod grpc;
pub mod observe;
pub mod soap;
