//! ferry's replication: the wire protocol, TLS + token authentication, used-block analysis,
//! the sender (`ferry send`) and the receiver (the appliance and `ferry-init receive`).

pub mod auth;
pub mod check;
pub mod console;
pub mod digest;
pub mod layout;
pub mod progress;
pub mod proto;
pub mod receiver;
pub mod sender;
