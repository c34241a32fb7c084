//! Protobuf messages and gRPC stubs of every Shlyuz API, generated from `proto/shlyuz/**/v1`.

/// The encoded file descriptor set of every Shlyuz proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shlyuz_descriptor.bin"));

/// The integration gateway's own APIs.
pub mod gateway {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("shlyuz.gateway.v1");
    }
}
