//! Binding a gRPC router to an address: the shared helper of `cairn-rpc`.

pub use cairn_rpc::{ServerTask, serve};
