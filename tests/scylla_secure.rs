//! The scylla store on a Cassandra 5 node that requires a login and TLS
//! (`CASSANDRA_SECURE=1 scripts/cassandra.sh`: PasswordAuthenticator, a PEM certificate signed
//! by a CA it makes), in a run dir and on ports of its own, stopped when the test ends: Kassa
//! gets in with the user, its password and the CA, and with nothing less.

use kassa::config::{ScyllaCredentials, ScyllaOptions, ScyllaTls};
use kassa::store::scylla::{ScyllaStore, ScyllaTarget};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cassandra.sh");

/// Another CA than the node's (`openssl req -x509 -newkey ec ...`).
const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBhzCCAS2gAwIBAgIUXmYRSOpIsGXy+Uk6cj55Coe/I9cwCgYIKoZIzj0EAwIw
GDEWMBQGA1UEAwwNS2Fzc2EgdGVzdCBDQTAgFw0yNjEyMDYxODI1NDVaGA8yMTI2
MTExMjE4MjU0NVowGDEWMBQGA1UEAwwNS2Fzc2EgdGVzdCBDQTBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABOnY13IOctBiaIKkrLOk95fdSmL+nXz72op/vtuKPAr3
CCMm+8198AfVzc1QsWfrs022DwXVgizXAtO4Ld7Ql4WjUzBRMB0GA1UdDgQWBBQq
cQemqXfjoV2bWxAAUPrT6XE87DAfBgNVHSMEGDAWgBQqcQemqXfjoV2bWxAAUPrT
6XE87DAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIGDw9w3n8ZZi
G4aYCMG5DwzN6K2Qv3XMHFVAv65SoZVZAiEAh6E5nP5WSgpW+7vBRISAnTFhhl0W
MUIsRsLIJrFbTds=
-----END CERTIFICATE-----
";

/// The secure node, started by `start` and stopped on drop.
struct SecureNode {
    dir: PathBuf,
    port: String,
    storage_port: String,
}

impl SecureNode {
    fn start() -> Self {
        let port = std::env::var("KASSA_TEST_SECURE_CQL_PORT").unwrap_or_else(|_| "19142".into());
        let storage_port =
            std::env::var("KASSA_TEST_SECURE_STORAGE_PORT").unwrap_or_else(|_| "17142".into());
        let node = Self {
            dir: std::env::temp_dir().join("kassa-cassandra-secure"),
            port,
            storage_port,
        };
        // From an empty run dir: a fresh CA and no keyspaces of earlier runs.
        node.script("clean");
        node.script("start");
        node
    }

    fn script(&self, command: &str) {
        let output = Command::new("bash")
            .arg(SCRIPT)
            .arg(command)
            .env("CASSANDRA_SECURE", "1")
            .env("KASSA_CASSANDRA_DIR", &self.dir)
            .env("CASSANDRA_PORT", &self.port)
            .env("CASSANDRA_STORAGE_PORT", &self.storage_port)
            .env("CASSANDRA_HEAP", "1G")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        assert!(
            output.status.success(),
            "{SCRIPT} {command} (CASSANDRA_SECURE=1) exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn hosts(&self) -> Vec<String> {
        vec![format!("127.0.0.1:{}", self.port)]
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }
}

impl Drop for SecureNode {
    fn drop(&mut self) {
        self.script("clean");
    }
}

/// The test node's options (`kassa_testkit::cassandra::options`) with a login and TLS.
fn options(credentials: Option<(&str, &str)>, tls: Option<ScyllaTls>) -> ScyllaOptions {
    ScyllaOptions {
        credentials: credentials.map(|(username, password)| ScyllaCredentials {
            username: username.into(),
            password: password.into(),
        }),
        tls,
        ..kassa_testkit::cassandra::options()
    }
}

fn tls(ca_file: PathBuf, server_name: Option<&str>) -> Option<ScyllaTls> {
    Some(ScyllaTls {
        ca_file,
        server_name: server_name.map(str::to_string),
    })
}

/// `kassa migrate`'s work with `options`; the error as the operator reads it.
async fn migrate(node: &SecureNode, options: &ScyllaOptions) -> Result<(), String> {
    kassa::store::scylla::migrate(ScyllaTarget {
        hosts: &node.hosts(),
        keyspace: "kassa_secure",
        options,
    })
    .await
    .map(drop)
    .map_err(|e| format!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_requiring_login_and_tls_takes_kassa_with_both_and_its_ca_only() {
    let node = SecureNode::start();
    let login = Some(("cassandra", "cassandra"));
    let good = options(login, tls(node.ca(), None));

    // The node creates its default superuser shortly after it serves CQL.
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Err(e) = migrate(&node, &good).await {
        assert!(
            Instant::now() < deadline,
            "never got in with login and TLS: {e}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ScyllaStore::open(ScyllaTarget {
        hosts: &node.hosts(),
        keyspace: "kassa_secure",
        options: &good,
    })
    .await
    .expect("the store opens with login and TLS");

    // Certificates are checked against one name instead of the address, when given.
    let named = options(login, tls(node.ca(), Some("localhost")));
    migrate(&node, &named)
        .await
        .expect("the name on the certificate");
    let err = migrate(
        &node,
        &options(login, tls(node.ca(), Some("scylla.example"))),
    )
    .await
    .expect_err("a name the certificate does not carry");
    assert!(err.contains("not valid for name"), "{err}");

    let other = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(other.path(), OTHER_CA).expect("write CA");
    let err = migrate(&node, &options(login, tls(other.path().into(), None)))
        .await
        .expect_err("a certificate another CA signed");
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );

    let err = migrate(&node, &options(None, tls(node.ca(), None)))
        .await
        .expect_err("no login");
    assert!(err.contains("Authentication is required"), "{err}");

    let err = migrate(
        &node,
        &options(
            Some(("cassandra", "not-the-password")),
            tls(node.ca(), None),
        ),
    )
    .await
    .expect_err("a wrong password");
    assert!(err.contains("bad credentials"), "{err}");
    assert!(
        !err.contains("not-the-password"),
        "the password is never shown: {err}"
    );

    migrate(&node, &options(login, None))
        .await
        .expect_err("no TLS to a node that requires it");
}
