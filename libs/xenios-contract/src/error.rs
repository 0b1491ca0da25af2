use crate::streams::Resource;

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// One of the embedded `streams/` files does not parse as a JetStream configuration.
    #[error("stream definition {file} is invalid: {source}")]
    Definition {
        file: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The JetStream API refused or did not answer a request about a stream, consumer or bucket.
    #[error("could not {action} {resource}: {source}")]
    JetStream {
        action: &'static str,
        resource: Resource,
        #[source]
        source: async_nats::Error,
    },
    /// A message body is not the envelope its subject promises.
    #[error("malformed {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}
