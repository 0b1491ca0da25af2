//! `xenios users …`: a user's data as a whole, straight from the store and the broker.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use xenios_api::operations;
use xenios_config::Settings;

use crate::start::{close_nats, connect_nats, connect_store_as_is};

#[derive(Subcommand)]
pub(crate) enum UsersAction {
    /// Erase everything held of a user (as `DELETE /api/v1/users/{id}/data`): jobs, their
    /// events, queued commands and dead letters, files, cached extractions, LLM audit rows. Running jobs are
    /// told to stop; the exit code is 2 until a later run finds nothing left.
    Erase {
        /// The user's id (the token's `sub`).
        user: String,
    },
}

pub(crate) async fn users(settings: Settings, action: UsersAction) -> anyhow::Result<ExitCode> {
    let UsersAction::Erase { user } = action;
    let store = connect_store_as_is(&settings).await?;
    let nats = connect_nats(&settings, "xenios-cli").await;
    let erased = match nats {
        Ok(client) => {
            let jetstream = async_nats::jetstream::new(client.clone());
            let max_age = Duration::from_secs(settings.nats.events_max_age_secs);
            let erased =
                operations::erase_user(&store, &client, &jetstream, None, &user, max_age).await;
            close_nats(client).await;
            erased.map_err(anyhow::Error::from)
        }
        Err(e) => Err(e),
    };
    store.close().await;
    let erased = erased?;
    println!("{}", serde_json::to_string_pretty(&erased)?);
    Ok(match erased.complete {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(2),
    })
}
