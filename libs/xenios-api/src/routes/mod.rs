pub mod docs;
pub mod files;
pub mod health;
pub mod jobs;
pub mod llm;
pub mod me;
pub mod openai;
pub mod status;
