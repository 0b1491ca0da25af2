use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Value};
use sha2::{Digest, Sha512_256};

/// A throwaway NATS operator, as `nsc` would make one: an operator, a system account, an
/// application account with JetStream, and users' credentials files. For tests of
/// `NATS_CREDS` against a server in operator mode (decentralised JWT authentication, as NGS
/// and Synadia Cloud run), without `nsc` on the machine.
#[derive(Clone)]
pub struct TestOperator {
    /// The server configuration that trusts the operator and knows both accounts
    /// (`operator`, `system_account`, a `MEMORY` resolver preloaded with their JWTs), for
    /// [`crate::ServerOptions::config`].
    pub server_config: PathBuf,
    /// A `.creds` file of a user of the application account.
    pub user_creds: PathBuf,
    /// A `.creds` file of a user signed by an account the operator never issued: a server
    /// that checks the chain refuses it.
    pub stranger_creds: PathBuf,
    application: KeyPair,
}

impl TestOperator {
    /// Writes the server configuration, the operator's JWT and the users' credentials files
    /// into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<TestOperator> {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let application = KeyPair::new_account();

        let operator_jwt = encode_jwt(
            &operator,
            &operator.public_key(),
            "xenios test operator",
            None,
            json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
        )?;
        let system_jwt = encode_jwt(
            &operator,
            &system.public_key(),
            "SYS",
            None,
            account_claims(false),
        )?;
        let application_jwt = encode_jwt(
            &operator,
            &application.public_key(),
            "XENIOS",
            None,
            account_claims(true),
        )?;

        let operator_file = dir.join("operator.jwt");
        write(&operator_file, &operator_jwt)?;
        let server_config = dir.join("operator.conf");
        write(
            &server_config,
            &format!(
                "operator: {operator_file:?}\n\
                 system_account: {system}\n\
                 resolver: MEMORY\n\
                 resolver_preload: {{\n  {system}: {system_jwt}\n  {application}: {application_jwt}\n}}\n",
                system = system.public_key(),
                application = application.public_key(),
            ),
        )?;

        let user_creds = dir.join("xenios.creds");
        write(
            &user_creds,
            &user_credentials(&application, "xenios", None)?,
        )?;
        let stranger_creds = dir.join("stranger.creds");
        write(
            &stranger_creds,
            &user_credentials(&KeyPair::new_account(), "stranger", None)?,
        )?;
        Ok(TestOperator {
            server_config,
            user_creds,
            stranger_creds,
            application,
        })
    }

    /// Writes the `.creds` file of a new user of the application account to `path`; with a
    /// `lifetime`, its JWT expires that long from now (the server then disconnects it).
    pub fn write_user_creds(
        &self,
        path: &Path,
        name: &str,
        lifetime: Option<Duration>,
    ) -> anyhow::Result<()> {
        write(path, &user_credentials(&self.application, name, lifetime)?)
    }
}

/// An account's claims; `-1` is "no limit", and JetStream is on only where its limits are
/// not zero.
fn account_claims(jetstream: bool) -> Value {
    let jetstream_limit = if jetstream { -1 } else { 0 };
    json!({
        "type": "account",
        "version": 2,
        "limits": {
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": jetstream_limit, "disk_storage": jetstream_limit,
            "streams": jetstream_limit, "consumer": jetstream_limit,
        },
    })
}

/// A new user of `account` and its `.creds` file's text, in `nsc`'s layout (the JWT block,
/// then the seed block).
fn user_credentials(
    account: &KeyPair,
    name: &str,
    lifetime: Option<Duration>,
) -> anyhow::Result<String> {
    let user = KeyPair::new_user();
    let claims = json!({
        "type": "user", "version": 2,
        "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
    });
    let jwt = encode_jwt(account, &user.public_key(), name, lifetime, claims)?;
    let seed = user.seed().map_err(|e| anyhow!("the user's seed: {e}"))?;
    Ok(format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    ))
}

/// A NATS JWT (nats-io/jwt v2) for `subject`, `nats` the claims of its type, expiring after
/// `lifetime` if given: an `ed25519-nkey` signature by `issuer` over the base64url header and
/// claims. The claims' `jti` is the base32 SHA-512/256 of the standard claims without it, as
/// the Go library computes it.
fn encode_jwt(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    lifetime: Option<Duration>,
    nats: Value,
) -> anyhow::Result<String> {
    let issued_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = json!({
        "iat": issued_at,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
    });
    if let Some(lifetime) = lifetime {
        claims["exp"] = json!(issued_at + lifetime.as_secs().max(1));
    }
    let id = data_encoding::BASE32_NOPAD.encode(&Sha512_256::digest(serde_json::to_vec(&claims)?));
    claims["jti"] = json!(id);
    claims["nats"] = nats;
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    let signed = format!("{header}.{payload}");
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|e| anyhow!("signing a JWT: {e}"))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// Writes a file whole, by renaming a written copy into place: a client reading it meanwhile
/// (a reconnect, rotated credentials) finds the old file or the new one, never half of one.
fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents)
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("writing {}", path.display()))
}
