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

/// An upstream for gateway tests and benchmarks.
pub mod echo {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("shlyuz.echo.v1");
    }
}

/// State-registry adapters: persons, civil registry, cadastre, property, equity, military,
/// dispensaries, criminal records, mobile citizens, consent, certificate authority.
pub mod registry {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("shlyuz.registry.v1");
    }
}

/// Contract-service recruitment (Jauynger): vacancies, applications and their workflow, reports.
pub mod intake {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("shlyuz.intake.v1");
    }
}

/// Notifications: SMS and personal-cabinet notices, OTP, inbound SMS replies.
pub mod notify {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("shlyuz.notify.v1");
    }
}

/// Service housing: the housing-need register, stock, automatic allocation, proactive review.
pub mod housing {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("shlyuz.housing.v1");
    }
}

/// Test-only controls that `shlyuz up --test-clock` serves (never production).
pub mod testing {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("shlyuz.testing.v1");
    }
}
