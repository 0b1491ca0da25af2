use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Options of every key made here: P-256, unencrypted.
const NEW_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A throwaway certificate authority and two certificates it signed, made with the `openssl`
/// command: one for a server on this machine (`127.0.0.1`, `localhost`) and one for a client.
/// For tests of TLS towards the broker; valid for two days.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Writes the CA's, the server's and the client's files into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<TestPki> {
        let ca_key = dir.join("ca.key");
        let ca_cert = dir.join("ca.pem");
        let mut ca = openssl("req");
        ca.args(["-x509", "-days", "2", "-subj", "/CN=xenios test CA"])
            .args(NEW_KEY)
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_cert);
        run(ca)?;

        let issue = |name: &str, extensions: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
            let key = dir.join(format!("{name}.key"));
            let request = dir.join(format!("{name}.csr"));
            let cert = dir.join(format!("{name}.pem"));
            let ext = dir.join(format!("{name}.ext"));
            std::fs::write(&ext, extensions)
                .with_context(|| format!("writing {}", ext.display()))?;
            let mut req = openssl("req");
            req.args(["-new", "-subj", &format!("/CN=xenios test {name}")])
                .args(NEW_KEY)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&request);
            run(req)?;
            let mut sign = openssl("x509");
            sign.args(["-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(&request)
                .arg("-CA")
                .arg(&ca_cert)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert);
            run(sign)?;
            Ok((cert, key))
        };
        let (server_cert, server_key) = issue(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )?;
        let (client_cert, client_key) = issue(
            "client",
            "subjectAltName=DNS:xenios-test-client\nextendedKeyUsage=clientAuth\n",
        )?;
        Ok(TestPki {
            ca_cert,
            server_cert,
            server_key,
            client_cert,
            client_key,
        })
    }
}

fn openssl(subcommand: &str) -> Command {
    let mut command = Command::new("openssl");
    command.arg(subcommand);
    command
}

fn run(mut command: Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .context("running openssl (apt-get install openssl; `make test` does)")?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
