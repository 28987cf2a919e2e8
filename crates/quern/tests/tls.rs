//! HTTPS: the server serves a certificate made by the test, clients that
//! trust its CA (the Rust client, the CLI) get through and others do not,
//! and SIGHUP swaps the certificate without a restart.

mod support;

use quern_client::Client;
use std::path::Path;
use std::time::Duration;
use support::{Server, bounded, eventually};

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, written
/// as `cert.pem` and `key.pem` in `dir`; answers the CA's PEM.
fn issue(dir: &Path) -> String {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA");
    let key = rcgen::KeyPair::generate().expect("a key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("a certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write the certificate");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write the key");
    ca.pem()
}

async fn healthy(url: &str, ca: &str) -> bool {
    match Client::new(url, None).with_ca_pem(ca.as_bytes()) {
        Ok(client) => client.health().await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn https_with_a_private_ca_and_a_certificate_swapped_on_sighup() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let first_ca = issue(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let server = Server::start_with(&[
        "--tls-cert",
        cert.to_str().expect("a UTF-8 path"),
        "--tls-key",
        key.to_str().expect("a UTF-8 path"),
    ]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    bounded(Duration::from_secs(60), async {
        assert!(healthy(&server.url, &first_ca).await, "a client trusting the CA gets through");
        let untrusting = Client::new(&server.url, None).health().await;
        assert_eq!(untrusting.err().map(|e| e.code().to_owned()).as_deref(), Some("transport"), "others do not");
        let plain = server.url.replace("https://", "http://");
        assert!(Client::new(&plain, None).health().await.is_err(), "plain HTTP is not served");

        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &first_ca).expect("write the CA");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
            .args(["--server", &server.url, "--ca-file", ca_file.to_str().expect("UTF-8"), "queues"])
            .output()
            .expect("run the CLI");
        assert!(out.status.success(), "the CLI with --ca-file: {}", String::from_utf8_lossy(&out.stderr));

        let second_ca = issue(dir.path());
        let hup = std::process::Command::new("kill").args(["-HUP", &server.pid().to_string()]).status();
        assert!(hup.is_ok_and(|s| s.success()), "SIGHUP sent");
        eventually("the new certificate is served", Duration::from_secs(10), async || {
            healthy(&server.url, &second_ca).await.then_some(())
        })
        .await;
        assert!(!healthy(&server.url, &first_ca).await, "the old certificate is gone");

        std::fs::write(&key, "not a key").expect("break the key");
        let hup = std::process::Command::new("kill").args(["-HUP", &server.pid().to_string()]).status();
        assert!(hup.is_ok_and(|s| s.success()), "SIGHUP sent");
        eventually("the failed reload is logged", Duration::from_secs(10), async || {
            server.log_tail().contains("TLS certificate not reloaded").then_some(())
        })
        .await;
        assert!(healthy(&server.url, &second_ca).await, "a broken reload keeps the certificate in use");
    })
    .await;
}
