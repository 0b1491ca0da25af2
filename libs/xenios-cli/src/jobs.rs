//! `xenios jobs …`: the operator's view of the jobs, straight from the store (and the broker,
//! to cancel or resubmit), with no API in between, so it also works while the API is down.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;
use uuid::Uuid;
use xenios_api::operations::{self, JobView, Resubmitted};
use xenios_config::Settings;
use xenios_contract::subjects::WEBHOOKS_WATCH_SUBJECT;
use xenios_contract::{JobKind, JobStatus};
use xenios_runtime::retention::{self, RetentionPolicy};
use xenios_store::{
    CancelOutcome, JobQuery, JobRecord, Store, UsageCounts, UsageQuery, UsageReport,
};

use crate::start::{close_nats, connect_nats, connect_store_as_is};

#[derive(Subcommand)]
pub(crate) enum JobsAction {
    /// Jobs of every user, newest first.
    List {
        #[arg(long)]
        kind: Option<JobKind>,
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only this user's jobs (the token's `sub`).
        #[arg(long)]
        user: Option<String>,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Only jobs older than this one: the `next page` the previous list printed.
        #[arg(long)]
        before: Option<Uuid>,
        /// One job object per line (JSON), as the API shows them.
        #[arg(long)]
        json: bool,
    },
    /// One job as the API shows it, with the provider calls made for it and where its webhook
    /// delivery stands.
    Show { id: Uuid },
    /// Cancel a queued job (it never starts) or a running one (its consumer is told).
    Cancel { id: Uuid },
    /// Submit a failed or cancelled job's kind, input and webhook again, as a new job of the
    /// same user (a dead letter's second chance once its cause is fixed).
    Resubmit { id: Uuid },
    /// Announce a finished job at its webhook again, its tries counted afresh (a delivery
    /// given up, once its receiver is fixed).
    Redeliver { id: Uuid },
    /// How many jobs there are, per kind and status.
    Counts,
    /// Delete the records past their retention (`retention.*`) now, as the pass beside the
    /// API does every `retention.interval_secs`.
    Purge,
    /// What the LLM jobs' provider calls consumed and cost over the last days, per task and
    /// model (from `inference_logs`).
    Usage {
        /// Only this user's calls (default: every call, service calls included).
        #[arg(long)]
        user: Option<String>,
        /// The window: the last this many days (1 to 366).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn jobs(settings: Settings, action: JobsAction) -> anyhow::Result<ExitCode> {
    let store = connect_store_as_is(&settings).await?;
    let code = run(&settings, &store, action).await;
    store.close().await;
    code
}

async fn run(settings: &Settings, store: &Store, action: JobsAction) -> anyhow::Result<ExitCode> {
    match action {
        JobsAction::List {
            kind,
            status,
            user,
            limit,
            before,
            json,
        } => {
            let page = store
                .list_jobs(&JobQuery {
                    user_id: user,
                    kind,
                    status,
                    limit,
                    before,
                    ..JobQuery::default()
                })
                .await?;
            if json {
                for job in page.jobs {
                    println!("{}", serde_json::to_string(&JobView::from(job))?);
                }
            } else {
                print_table(&page.jobs);
                if let Some(next) = page.next_cursor {
                    println!("next page: --before {next}");
                }
            }
        }
        JobsAction::Show { id } => {
            let job = find(store, id).await?;
            let calls = store.inference_logs_for_job(id).await?;
            let mut shown = serde_json::to_value(JobView::from(job))?;
            shown["inference_logs"] = json!(calls);
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        JobsAction::Cancel { id } => {
            let client = connect_nats(settings, "xenios-cli").await?;
            let js = async_nats::jetstream::new(client.clone());
            let outcome = operations::cancel(store, &client, &js, id).await;
            close_nats(client).await;
            match outcome? {
                CancelOutcome::Cancelled(_) => println!("{id} cancelled (it was queued)"),
                CancelOutcome::Requested(_) => {
                    println!("{id} is running: its consumer was told to stop")
                }
                CancelOutcome::AlreadyFinished(job) => {
                    bail!("{id} is already {}", job.status)
                }
                CancelOutcome::NotFound => bail!("no job {id}"),
            }
        }
        JobsAction::Resubmit { id } => {
            let finished = find(store, id).await?;
            if let Some(why) = operations::not_resubmittable(&finished) {
                bail!("{id} {why}");
            }
            let client = connect_nats(settings, "xenios-cli").await?;
            let js = async_nats::jetstream::new(client.clone());
            let resubmitted = operations::resubmit(store, &client, &js, &finished).await;
            if let Ok(Resubmitted { job, .. }) = &resubmitted {
                if job.webhook.is_some() {
                    tell_the_apis(&client, job.id).await;
                }
            }
            close_nats(client).await;
            let resubmitted = resubmitted?;
            println!("{}", resubmitted.job.id);
            if let Some(why) = resubmitted.not_published {
                eprintln!("recorded but not published now ({why}); the sweeper publishes it");
            }
        }
        JobsAction::Redeliver { id } => {
            let job = find(store, id).await?;
            if store.redeliver_webhook(id).await?.is_none() {
                bail!("{id} has no webhook");
            }
            // Best effort: an API that is not told finds the delivery at its next poll.
            match connect_nats(settings, "xenios-cli").await {
                Ok(client) => {
                    tell_the_apis(&client, id).await;
                    close_nats(client).await;
                }
                Err(e) => eprintln!("{e}; the APIs find the delivery at their next poll"),
            }
            if job.status.is_terminal() {
                println!("{id}: its webhook is due again");
            } else {
                println!(
                    "{id} is {}: its webhook is sent once it finishes",
                    job.status
                );
            }
        }
        JobsAction::Counts => {
            let counts = store.count_jobs_by_status().await?;
            println!("{:<14} {:<10} {:>10}", "KIND", "STATUS", "JOBS");
            for (kind, status, n) in counts {
                println!("{:<14} {:<10} {n:>10}", kind.as_str(), status.as_str());
            }
        }
        JobsAction::Purge => {
            let policy = RetentionPolicy::from(&settings.retention);
            let purged = retention::purge_expired(store, &policy).await?;
            println!("{:<18} {:>10}", "TABLE", "DELETED");
            for (table, n) in [
                ("jobs", purged.jobs),
                ("inference_logs", purged.inference_logs),
                ("extraction_cache", purged.extraction_cache),
            ] {
                println!("{table:<18} {n:>10}");
            }
        }
        JobsAction::Usage { user, days, json } => {
            let until = chrono::Utc::now();
            let report = store
                .llm_usage(&UsageQuery {
                    user_id: user,
                    since: until - chrono::Duration::days(days.into()),
                    until,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_usage(&report);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Per task and model, then (for every user's report) per user, costliest first.
fn print_usage(report: &UsageReport) {
    let rows = report
        .by_model
        .iter()
        .map(|m| (m.task.as_str(), m.model.as_str(), &m.counts))
        .chain([("total", "", &report.total)]);
    print_counts(("TASK", "MODEL"), rows);
    if !report.by_user.is_empty() {
        println!();
        let rows = report.by_user.iter().map(|u| {
            let user = u.user_id.as_deref().unwrap_or("(no user: service calls)");
            (user, "", &u.counts)
        });
        print_counts(("USER", ""), rows);
    }
}

fn print_counts<'a>(
    (first, second): (&str, &str),
    rows: impl Iterator<Item = (&'a str, &'a str, &'a UsageCounts)>,
) {
    println!(
        "{:<22} {:<36} {:>8} {:>8} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12}",
        first,
        second,
        "REQUESTS",
        "CALLS",
        "FAILED",
        "INPUT",
        "CACHE_READ",
        "CACHE_WRITE",
        "OUTPUT",
        "COST_USD"
    );
    for (first, second, c) in rows {
        println!(
            "{first:<22} {second:<36} {:>8} {:>8} {:>7} {:>12} {:>12} {:>12} {:>12} {:>12.4}",
            c.requests,
            c.calls,
            c.failed_calls,
            c.input_tokens,
            c.cache_read_tokens,
            c.cache_write_tokens,
            c.output_tokens,
            c.cost_usd
        );
    }
}

/// Tells the APIs that the job's webhook is due now or once the job finishes, so that they do
/// not leave it to their poll (`webhooks.poll_interval_ms`).
async fn tell_the_apis(client: &async_nats::Client, job_id: Uuid) {
    let _ = client
        .publish(WEBHOOKS_WATCH_SUBJECT, job_id.to_string().into())
        .await;
}

async fn find(store: &Store, id: Uuid) -> anyhow::Result<JobRecord> {
    store
        .get_job(id)
        .await?
        .with_context(|| format!("no job {id}"))
}

fn print_table(jobs: &[JobRecord]) {
    println!(
        "{:<36}  {:<13} {:<9} {:>5}  {:<20}  USER",
        "ID", "KIND", "STATUS", "TRIES", "CREATED"
    );
    for job in jobs {
        println!(
            "{:<36}  {:<13} {:<9} {:>5}  {:<20}  {}",
            job.id,
            job.kind.as_str(),
            job.status.as_str(),
            job.attempts,
            job.created_at.format("%Y-%m-%d %H:%M:%S"),
            job.user_id.as_deref().unwrap_or("-"),
        );
    }
}
