//! Configuration: built-in defaults → `xenios.toml` (or `--config` / `XENIOS_CONFIG`) →
//! environment, later wins. Every key can be set as `XENIOS__SECTION__KEY`; the environment
//! names of the original deployment (SPEC §2) work as they are.

mod llm;
mod load;
mod secret;
mod settings;

pub use llm::*;
pub use load::{ConfigError, Overrides};
pub use secret::{redact_url, Secret, REDACTED};
pub use settings::*;
