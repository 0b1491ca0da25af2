pub mod docs;
pub mod health;
pub mod jobs;
pub mod me;
pub mod status;
