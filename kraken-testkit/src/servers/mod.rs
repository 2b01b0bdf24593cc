//! External servers started for a test, each on a free loopback port and stopped on drop.

mod distribution;
mod moto;
mod nginx;
mod redis;

pub use distribution::{Distribution, Request, summary};
pub use moto::MotoServer;
pub use nginx::Nginx;
pub use redis::RedisServer;
