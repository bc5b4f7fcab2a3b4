//! The OmniNode Bridge contracts (`proto/`), compiled for Rust.
//!
//! One module per protobuf package, plus [`FILE_DESCRIPTOR_SET`], the encoded
//! descriptors of every file (imports included) for server reflection and the
//! REST gateway.

/// Encoded `google.protobuf.FileDescriptorSet` of every contract and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/omninode_descriptor.bin"));

/// `omninode.stamping.v1`.
pub mod stamping {
    pub mod v1 {
        tonic::include_proto!("omninode.stamping.v1");
    }
}

/// `omninode.orchestrator.v1`.
pub mod orchestrator {
    pub mod v1 {
        tonic::include_proto!("omninode.orchestrator.v1");
    }
}

/// `omninode.reducer.v1`.
pub mod reducer {
    pub mod v1 {
        tonic::include_proto!("omninode.reducer.v1");
    }
}

/// `omninode.events.v1`.
pub mod events {
    pub mod v1 {
        tonic::include_proto!("omninode.events.v1");
    }
}

/// `omninode.ingress.v1`: requests and answers on Kafka.
pub mod ingress {
    pub mod v1 {
        tonic::include_proto!("omninode.ingress.v1");
    }
}

/// `google.api` (HTTP annotations read by the gateway) and `google.rpc` (Status).
pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_holds_every_package_and_its_imports() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        for expected in [
            "omninode/stamping/v1/stamping.proto",
            "omninode/orchestrator/v1/orchestrator.proto",
            "omninode/reducer/v1/reducer.proto",
            "omninode/events/v1/events.proto",
            "google/api/http.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/descriptor.proto",
        ] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
    }
}
