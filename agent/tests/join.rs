//! `flotilla-agent --join TOKEN` against servers that are not the cluster the token
//! was made for: the real agent binary dials an in-test `Enrolment` server that records
//! every call, and the token must never reach a server whose CA is not the pinned one.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use flotilla_net::pki::{AGENT_LIFETIME, CA_LIFETIME, ClusterCa, Role};
use flotilla_net::{CaPin, JoinToken, TlsMaterial};
use flotilla_proto::v1 as pb;
use flotilla_proto::v1::enrolment_server::{Enrolment, EnrolmentServer};
use tonic::{Request, Response, Status};

/// An `Enrolment` server that writes down every token it is sent and refuses.
#[derive(Clone, Default)]
struct Recorder {
    tokens: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Enrolment for Recorder {
    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        self.tokens.lock().unwrap().push(request.into_inner().token);
        Err(Status::permission_denied("the recorder enrols nobody"))
    }

    async fn renew(&self, _: Request<pb::RenewRequest>) -> Result<Response<pb::RenewResponse>, Status> {
        Err(Status::unimplemented("not here"))
    }
}

/// Serves the recorder over TLS with a coordinator certificate of `ca` for 127.0.0.1.
fn serve(rt: &tokio::runtime::Runtime, ca: &ClusterCa) -> (SocketAddr, Recorder) {
    let issued = ca.issue(Role::Coordinator, "1", &["127.0.0.1".parse().unwrap()], AGENT_LIFETIME).unwrap();
    serve_with(rt, TlsMaterial::from_pem(ca.cert_pem(), issued.cert_pem, issued.key_pem).unwrap())
}

/// Serves the recorder over TLS with `material`.
fn serve_with(rt: &tokio::runtime::Runtime, material: TlsMaterial) -> (SocketAddr, Recorder) {
    let recorder = Recorder::default();
    let service = recorder.clone();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(EnrolmentServer::new(service))
            .serve_with_incoming(flotilla_net::incoming(listener, Some(material)))
            .await
    });
    (addr, recorder)
}

fn token_for(ca: &ClusterCa) -> String {
    let pin: CaPin = ca.pin().parse().unwrap();
    JoinToken { pin, id: "0a1b2c3d".into(), secret: "5".repeat(32) }.to_string()
}

fn join(addr: SocketAddr, token: &str) -> Output {
    let data = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_flotilla-agent"))
        .args(["--host-id", "web-1", "--coordinators", &addr.to_string(), "--join", token])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_server_of_another_ca_never_sees_the_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ours = ClusterCa::create("prod", CA_LIFETIME).unwrap();
    let theirs = ClusterCa::create("prod", CA_LIFETIME).unwrap();
    let (addr, impostor) = serve(&rt, &theirs);

    let out = join(addr, &token_for(&ours));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the join must fail: {stderr}");
    assert!(stderr.contains("the token was not sent"), "{stderr}");
    assert!(impostor.tokens.lock().unwrap().is_empty(), "the impostor saw a token");

    // The control: the same server, with a token pinning its own CA, is sent the token
    // (and refuses it), so the test above can see a token arrive.
    let token = token_for(&theirs);
    let out = join(addr, &token);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("the recorder enrols nobody"), "{stderr}");
    assert_eq!(*impostor.tokens.lock().unwrap(), vec![token]);
}

#[test]
fn a_server_showing_the_pinned_ca_with_a_certificate_it_did_not_issue_never_sees_the_token() {
    // The impostor copies the real CA's certificate into its chain: the pin matches
    // a certificate it shows, but its own certificate does not chain to it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ours = ClusterCa::create("prod", CA_LIFETIME).unwrap();
    let theirs = ClusterCa::create("prod", CA_LIFETIME).unwrap();
    let issued = theirs.issue(Role::Coordinator, "1", &["127.0.0.1".parse().unwrap()], AGENT_LIFETIME).unwrap();
    let bundle = format!("{}{}", theirs.cert_pem(), ours.cert_pem());
    let (addr, recorder) = serve_with(&rt, TlsMaterial::from_pem(bundle, issued.cert_pem, issued.key_pem).unwrap());

    let out = join(addr, &token_for(&ours));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not issued by the pinned CA"), "{stderr}");
    assert!(recorder.tokens.lock().unwrap().is_empty(), "the impostor saw a token");
}
