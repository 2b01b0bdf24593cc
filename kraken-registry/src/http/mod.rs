//! HTTP pieces every service of this crate shares: response bodies and the `Range` header.

pub(crate) mod body;
pub(crate) mod range;
