//! Task routing: candidates in order, retries with backoff on each, fallback to the next,
//! JSON-schema re-asks, and a record of every call.
use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Client;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use xenios_config::{Candidate, LlmSettings, ModelPrice, ProvidersSettings, TaskSettings};
use xenios_contract::inputs::check_stop;
use xenios_contract::tools::check_tools;

use crate::format::Format;
use crate::provider::{CallError, CallSpec, Failure, Limits, Outcome, Provider, Reply};
use crate::retry::backoff;
use crate::stream::{LlmStream, Piece};
use crate::{
    CallObserver, CallRecord, FinishReason, LlmError, LlmRequest, LlmResult, Message, Role,
    Sampling, Tool, ToolCall, ToolChoice, Usage,
};

/// Tokens a stream's reader may fall behind by before the provider is no longer read.
const TOKEN_BUFFER: usize = 64;

/// The LLM client: one per process, shared by every request (it holds the connection pool).
#[derive(Debug)]
pub struct LlmGateway {
    http: Client,
    settings: LlmSettings,
    providers: BTreeMap<String, Provider>,
}

/// A request checked against its task.
struct Plan<'a> {
    task: &'a TaskSettings,
    temperature: f64,
    max_tokens: u32,
    stop: &'a [String],
    sampling: Sampling,
    format: Format,
    response_format: Option<&'a Value>,
    instruction: Option<String>,
    tools: &'a [Tool],
    tool_choice: Option<&'a ToolChoice>,
    parallel_tool_calls: Option<bool>,
}

/// What stays the same across the calls of one request.
struct Ctx<'a> {
    task: &'a str,
    observer: &'a dyn CallObserver,
    cancel: &'a CancellationToken,
    tokens: Option<&'a mpsc::Sender<Piece>>,
    attempt: u32,
}

struct Answer {
    content: String,
    tool_calls: Vec<ToolCall>,
    model: String,
    provider: String,
    fallback_used: bool,
    usage: Usage,
    cost_usd: Option<f64>,
    finish_reason: FinishReason,
}

impl LlmGateway {
    /// Checks the routing table: every task has candidates, every candidate a known provider
    /// (`openrouter`, `anthropic`, `openai`, or one in `providers.extra`, which must have a
    /// `base_url`). A provider without a key is accepted (it may be a local server); on its
    /// public endpoint its candidates then fail as unusable and the next one is tried.
    pub fn new(llm: &LlmSettings, providers: &ProvidersSettings) -> Result<Self, LlmError> {
        llm.validate().map_err(LlmError::Config)?;
        // At zero from the start, so an alert on their increase sees the first fallback.
        for task in llm.tasks.keys() {
            metrics::counter!("xenios_llm_fallbacks_total", "task" => task.clone()).increment(0);
        }
        let mut built = BTreeMap::new();
        for (task, settings) in &llm.tasks {
            for candidate in &settings.candidates {
                let name = provider_name(llm, candidate);
                if built.contains_key(name) {
                    continue;
                }
                let config = match name {
                    "openrouter" => &providers.openrouter,
                    "anthropic" => &providers.anthropic,
                    "openai" => &providers.openai,
                    other => providers.extra.get(other).ok_or_else(|| {
                        LlmError::Config(format!(
                            "llm.tasks.{task}: candidate `{candidate}` names the unknown provider \
                             `{other}` (known: openrouter, anthropic, openai, providers.extra)"
                        ))
                    })?,
                };
                built.insert(name.to_owned(), Provider::new(name, config, llm)?);
            }
        }
        let http = Client::builder()
            .connect_timeout(Duration::from_millis(llm.connect_timeout_ms))
            .tcp_keepalive(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(90))
            // An API endpoint that redirects is misconfigured; following would re-send keys.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("xenios-llm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(LlmGateway {
            http,
            settings: llm.clone(),
            providers: built,
        })
    }

    /// The routing of a task, e.g. to see whether it prefers streaming.
    pub fn task(&self, name: &str) -> Option<&TaskSettings> {
        self.settings.tasks.get(name)
    }

    /// Answers a request whole. With a JSON `response_format`, an answer that does not match
    /// is asked again with the problem as feedback, at most `llm.schema_retries` more times.
    /// Cancelling `cancel` (or dropping the future) closes the provider connection at once.
    pub async fn complete(
        &self,
        req: LlmRequest,
        observer: &dyn CallObserver,
        cancel: CancellationToken,
    ) -> Result<LlmResult, LlmError> {
        self.run(req, observer, &cancel, None).await
    }

    /// Answers a request as a stream of tokens, then the result (or an error). A candidate
    /// that fails before its first token is replaced by the next; once text has been yielded a
    /// failure ends the stream with [`LlmError::Interrupted`]. A JSON `response_format` is
    /// validated at the end but not re-asked (the caller has already seen the text). Tool
    /// calls stream as pieces too (a first one counts as the first token), and come whole
    /// with the result. Dropping the stream or cancelling `cancel` closes the provider
    /// connection.
    pub fn stream<'a>(
        &'a self,
        req: LlmRequest,
        observer: &'a dyn CallObserver,
        cancel: CancellationToken,
    ) -> LlmStream<'a> {
        let (tx, rx) = mpsc::channel(TOKEN_BUFFER);
        LlmStream::new(
            Box::pin(async move { self.run(req, observer, &cancel, Some(tx)).await }),
            rx,
        )
    }

    async fn run(
        &self,
        req: LlmRequest,
        observer: &dyn CallObserver,
        cancel: &CancellationToken,
        tokens: Option<mpsc::Sender<Piece>>,
    ) -> Result<LlmResult, LlmError> {
        let started = Instant::now();
        let plan = self.plan(&req)?;
        let mut messages = req.messages.clone();
        let rounds = match plan.format.is_json() && tokens.is_none() {
            true => 1 + self.settings.schema_retries,
            false => 1,
        };
        let mut ctx = Ctx {
            task: &req.task,
            observer,
            cancel,
            tokens: tokens.as_ref(),
            attempt: 0,
        };
        let mut usage = Usage::default();
        let mut cost_usd: Option<f64> = None;
        let mut round = 1;
        loop {
            let answer = self.route(&plan, &messages, &mut ctx).await?;
            usage += answer.usage;
            if let Some(cost) = answer.cost_usd {
                *cost_usd.get_or_insert(0.0) += cost;
            }
            // Tool calls are a step on the way: the format is the final answer's, a later
            // turn's.
            let checked = match answer.tool_calls.is_empty() {
                true => plan.format.check(&answer.content),
                false => Ok(None),
            };
            match checked {
                Ok(parsed) => {
                    return Ok(LlmResult {
                        content: answer.content,
                        tool_calls: answer.tool_calls,
                        model: answer.model,
                        provider: answer.provider,
                        fallback_used: answer.fallback_used,
                        usage,
                        latency_ms: millis(started.elapsed()),
                        cost_usd,
                        parsed,
                        finish_reason: answer.finish_reason,
                    })
                }
                Err(problem) if round < rounds => {
                    tracing::info!(
                        task = %req.task, round, %problem,
                        "the answer does not match the response format; asking again"
                    );
                    messages.push(Message::assistant(answer.content));
                    messages.push(Message::user(format!(
                        "Your previous answer was not accepted: {problem}. Answer again with \
                         only the corrected JSON."
                    )));
                    round += 1;
                }
                Err(problem) => {
                    return Err(LlmError::SchemaValidation {
                        tries: round,
                        message: problem,
                        content: answer.content,
                    })
                }
            }
        }
    }

    fn plan<'r>(&'r self, req: &'r LlmRequest) -> Result<Plan<'r>, LlmError> {
        let invalid = |m: String| Err(LlmError::InvalidInput(m));
        let Some(task) = self.settings.tasks.get(&req.task) else {
            let known: Vec<&str> = self.settings.tasks.keys().map(String::as_str).collect();
            return invalid(format!(
                "unknown task `{}` (known: {})",
                req.task,
                known.join(", ")
            ));
        };
        if !req.messages.iter().any(|m| m.role != Role::System) {
            return invalid("messages: at least one user or assistant message is required".into());
        }
        let temperature = req.temperature.unwrap_or(task.temperature);
        if !(0.0..=2.0).contains(&temperature) {
            return invalid("temperature: must be between 0 and 2".into());
        }
        let max_tokens = req.max_tokens.unwrap_or(task.max_tokens);
        if max_tokens == 0 || max_tokens > self.settings.max_tokens_limit {
            return invalid(format!(
                "max_tokens: must be between 1 and {}",
                self.settings.max_tokens_limit
            ));
        }
        let checked = check_stop(&req.stop)
            .and_then(|()| req.sampling.check())
            .and_then(|()| check_tools(&req.tools, req.tool_choice.as_ref()));
        if let Err(e) = checked {
            let field = e.field.strip_prefix("input.").unwrap_or(&e.field);
            return invalid(format!("{field}: {}", e.message));
        }
        for candidate in &task.candidates {
            let provider = &self.providers[provider_name(&self.settings, candidate)];
            if let Err(problem) = provider.check(&req.messages) {
                return invalid(format!("{problem} (for {})", provider.name));
            }
        }
        let format = Format::parse(req.response_format.as_ref())?;
        Ok(Plan {
            task,
            temperature,
            max_tokens,
            stop: &req.stop,
            sampling: req.sampling,
            instruction: format.instruction(),
            format,
            response_format: req.response_format.as_ref(),
            tools: &req.tools,
            tool_choice: req.tool_choice.as_ref(),
            parallel_tool_calls: req.parallel_tool_calls,
        })
    }

    /// One answer from the first candidate that gives one.
    async fn route(
        &self,
        plan: &Plan<'_>,
        messages: &[Message],
        ctx: &mut Ctx<'_>,
    ) -> Result<Answer, LlmError> {
        let task = plan.task;
        let limits = Limits {
            timeout: Duration::from_millis(task.timeout_ms),
            idle: Duration::from_millis(self.settings.stream_idle_timeout_ms),
            max_body: self.settings.max_response_bytes,
            max_line: self.settings.max_sse_line_bytes,
        };
        let retry = &self.settings.retry;
        let max_retry_after = Duration::from_millis(retry.max_retry_after_ms);
        let mut failures: Vec<LlmError> = Vec::new();
        for (index, candidate) in task.candidates.iter().enumerate() {
            if index > 0 {
                metrics::counter!("xenios_llm_fallbacks_total", "task" => ctx.task.to_owned())
                    .increment(1);
                tracing::info!(task = ctx.task, %candidate, "falling back");
            }
            let provider = &self.providers[provider_name(&self.settings, candidate)];
            let native = provider.takes_response_format();
            let spec = CallSpec {
                model: provider.wire_model(&candidate.model),
                messages,
                temperature: plan.temperature,
                max_tokens: plan.max_tokens,
                stop: plan.stop,
                sampling: plan.sampling,
                response_format: plan.response_format.filter(|_| native),
                instruction: plan
                    .instruction
                    .as_deref()
                    .filter(|_| provider.states_format_in_words()),
                stream: ctx.tokens.is_some() || task.streaming,
                prompt_cache: task.prompt_cache,
                tools: plan.tools,
                tool_choice: plan.tool_choice,
                parallel_tool_calls: plan.parallel_tool_calls,
            };
            // The candidate's last failure: the one the summary names.
            let mut last = None;
            for try_index in 0..=task.retries {
                ctx.attempt += 1;
                let started = Instant::now();
                let result = provider
                    .call(&self.http, &spec, &limits, ctx.tokens, ctx.cancel)
                    .await;
                let cost_usd = self.report(
                    ctx,
                    candidate,
                    provider,
                    spec.stream,
                    started.elapsed(),
                    &result,
                );
                let error = match result {
                    Ok(reply) => {
                        return Ok(Answer {
                            content: reply.content,
                            tool_calls: reply.tool_calls,
                            model: candidate.model.clone(),
                            provider: provider.name.clone(),
                            fallback_used: index > 0,
                            usage: reply.usage,
                            cost_usd,
                            finish_reason: reply.finish_reason,
                        })
                    }
                    Err(e) => e,
                };
                let (failure, retry_after) = (error.failure, error.retry_after);
                let error = error.into_llm_error(&provider.name, &candidate.model);
                match failure {
                    Failure::Rejected | Failure::Interrupted => return Err(error),
                    Failure::Unusable => {
                        last = Some(error);
                        break;
                    }
                    Failure::Transient => {
                        last = Some(error);
                        if try_index == task.retries {
                            break;
                        }
                        let wait = match retry_after {
                            // Waiting that long would hold the job hostage; the next candidate,
                            // or the job's own retry, does better.
                            Some(after) if after > max_retry_after => break,
                            Some(after) => after.max(backoff(retry, try_index)),
                            None => backoff(retry, try_index),
                        };
                        tokio::select! {
                            biased;
                            _ = ctx.cancel.cancelled() => return Err(LlmError::Cancelled),
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
            failures.extend(last);
        }
        let retryable = failures.iter().any(LlmError::retryable);
        let summary = failures
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let last = failures
            .pop()
            .ok_or_else(|| LlmError::Config(format!("task `{}` has no candidates", ctx.task)))?;
        Err(LlmError::Exhausted {
            task: ctx.task.to_owned(),
            summary,
            retryable,
            last: Box::new(last),
        })
    }

    /// Tells the observer and the metrics about one call; returns its cost.
    fn report(
        &self,
        ctx: &Ctx<'_>,
        candidate: &Candidate,
        provider: &Provider,
        streaming: bool,
        latency: Duration,
        result: &Result<Reply, CallError>,
    ) -> Option<f64> {
        let (outcome, error) = match result {
            Ok(_) => (Outcome::Success, None),
            Err(e) => (e.outcome, Some(e.message.clone())),
        };
        let (status, usage, ttft, reported_cost) = match result {
            Ok(r) => (Some(r.status), r.usage, r.ttft, r.cost_usd),
            Err(e) => (e.status, e.usage, e.ttft, None),
        };
        let prices = &self.settings.prices;
        let cost_usd = reported_cost.or_else(|| {
            let price = prices
                .get(&candidate.model)
                .or_else(|| prices.get(provider.wire_model(&candidate.model)))?;
            Some(cost_of(&usage, price))
        });
        let record = CallRecord {
            task: ctx.task.to_owned(),
            provider: provider.name.clone(),
            model: candidate.model.clone(),
            attempt: ctx.attempt,
            streaming,
            status,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_tokens: usage.cache_read_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            latency_ms: millis(latency),
            ttft_ms: ttft.map(millis),
            cost_usd,
            success: error.is_none(),
            error,
        };
        match &record.error {
            None => tracing::debug!(
                task = ctx.task, provider = %record.provider, model = %record.model,
                attempt = record.attempt, latency_ms = record.latency_ms, "LLM call succeeded"
            ),
            Some(error) => tracing::warn!(
                task = ctx.task, provider = %record.provider, model = %record.model,
                attempt = record.attempt, outcome = outcome.as_str(), status = ?record.status,
                %error, "LLM call failed"
            ),
        }
        ctx.observer.on_call(&record);
        count(&record, outcome);
        cost_usd
    }
}

/// In USD. Cached input is billed at the cache's prices, the input price where the table has
/// none.
fn cost_of(usage: &Usage, price: &ModelPrice) -> f64 {
    let (read, written) = (usage.cache_read_tokens, usage.cache_write_tokens);
    let uncached = usage
        .input_tokens
        .saturating_sub(read)
        .saturating_sub(written);
    let input = price.input_per_mtok;
    (uncached as f64 * input
        + read as f64 * price.cache_read_per_mtok.unwrap_or(input)
        + written as f64 * price.cache_write_per_mtok.unwrap_or(input)
        + usage.output_tokens as f64 * price.output_per_mtok)
        / 1e6
}

/// The SPEC §6 LLM metrics of one call.
fn count(record: &CallRecord, outcome: Outcome) {
    let (task, model) = (record.task.clone(), record.model.clone());
    metrics::counter!("xenios_llm_requests_total",
        "task" => task.clone(), "model" => model.clone(), "outcome" => outcome.as_str())
    .increment(1);
    for (direction, tokens) in [
        ("input", record.input_tokens),
        ("output", record.output_tokens),
    ] {
        if tokens > 0 {
            metrics::counter!("xenios_llm_tokens_total",
                "task" => task.clone(), "model" => model.clone(), "direction" => direction)
            .increment(tokens);
        }
    }
    // Parts of `input`, not more of it: a series of their own, so that a sum over
    // `direction` counts every token once.
    for (cache, tokens) in [
        ("read", record.cache_read_tokens),
        ("write", record.cache_write_tokens),
    ] {
        if tokens > 0 {
            metrics::counter!("xenios_llm_cache_tokens_total",
                "task" => task.clone(), "model" => model.clone(), "cache" => cache)
            .increment(tokens);
        }
    }
    // `metrics` counters are integers; a gauge only ever incremented is the float counter
    // Prometheus sees.
    if let Some(cost) = record.cost_usd.filter(|c| *c > 0.0) {
        metrics::gauge!("xenios_llm_cost_usd_total",
            "task" => task.clone(), "model" => model.clone())
        .increment(cost);
    }
    if let Some(ttft) = record.ttft_ms {
        metrics::histogram!("xenios_llm_time_to_first_token_seconds",
            "task" => task, "model" => model)
        .record(ttft as f64 / 1000.0);
    }
}

fn provider_name<'a>(settings: &'a LlmSettings, candidate: &'a Candidate) -> &'a str {
    candidate
        .provider
        .as_deref()
        .unwrap_or(&settings.default_provider)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
