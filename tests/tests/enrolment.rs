//! Enrolment and identity through real processes: three coordinators holding the
//! cluster's CA key, agents that join with tokens made by `flotilla agents token
//! create`, and plain gRPC clients that try what the cluster must refuse.
//!
//! Every refusal is checked for its status code, its reason and for leaving the state
//! as it was. (A join against a server of another CA is refused before the token is
//! sent: `agent/tests/join.rs`.)

use std::time::Duration;

use flotilla_net::pki::{self, ClusterCa, OperatorRole, Role};
use flotilla_net::{CaPin, ClientSecurity, TlsMaterial, channel};
use flotilla_proto::status::Reason;
use flotilla_proto::v1::agent_link_client::AgentLinkClient;
use flotilla_proto::v1::enrolment_client::EnrolmentClient;
use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::raft_peer_client::RaftPeerClient;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::{self, ReleaseState};
use flotilla_tests::fleet::{AppSpec, HostSpec, TestFleet, app_inventory, describe, shop_hosts};
use flotilla_tests::{eventually, refused};
use tonic::Code;

/// Longest a release of the app may take.
const RELEASE: Duration = Duration::from_secs(180);

fn ca(fleet: &TestFleet) -> ClusterCa {
    ClusterCa::load(fleet.pki_dir().expect("an enrolled fleet")).unwrap()
}

/// Material for `role` `name` from `ca`, valid for `lifetime` (an operator is an admin).
fn holder(ca: &ClusterCa, role: Role, name: &str, lifetime: Duration) -> ClientSecurity {
    let issued = match role {
        Role::Operator => ca.issue_operator(name, OperatorRole::Admin, lifetime),
        _ => ca.issue(role, name, &[], lifetime),
    }
    .unwrap();
    ClientSecurity::Tls(TlsMaterial::from_pem(ca.cert_pem(), issued.cert_pem, issued.key_pem).unwrap())
}

async fn token(fleet: &TestFleet, args: &[&str]) -> String {
    let mut all = vec!["agents", "token", "create"];
    all.extend_from_slice(args);
    fleet.ok(fleet.cli(&all).await).trim().to_owned()
}

/// `Enrolment.Join` as a host with a new key would send it, over TLS pinned to the
/// token's CA, to the first coordinator (a follower forwards it).
async fn join(fleet: &TestFleet, token: &str, host: &str) -> Result<v1::JoinResponse, tonic::Status> {
    let (_, csr) = pki::new_request(host).unwrap();
    let pin: CaPin = ca(fleet).pin().parse().unwrap();
    let ch = channel(&fleet.addrs()[0], &ClientSecurity::Pinned(pin)).unwrap();
    let req = v1::JoinRequest { token: token.to_owned(), host_id: host.to_owned(), csr_der: csr, version: None };
    EnrolmentClient::new(ch).join(req).await.map(tonic::Response::into_inner)
}

async fn enrolment(fleet: &TestFleet, host: &str) -> Option<v1::HostEnrolment> {
    let mut fleet_client = FleetClient::new(channel(&fleet.addrs()[0], &fleet.client_security().unwrap()).unwrap());
    let req = v1::GetHostRequest { host_id: host.to_owned(), recent_steps: 0 };
    fleet_client.get_host(req).await.ok()?.into_inner().host?.enrolment
}

async fn tokens(fleet: &TestFleet) -> Vec<v1::JoinToken> {
    let mut c = FleetClient::new(channel(&fleet.addrs()[0], &fleet.client_security().unwrap()).unwrap());
    c.list_join_tokens(v1::ListJoinTokensRequest { include_spent: true }).await.unwrap().into_inner().tokens
}

async fn release_count(fleet: &TestFleet) -> usize {
    let mut c = ReleasesClient::new(channel(&fleet.addrs()[0], &fleet.client_security().unwrap()).unwrap());
    c.list(v1::ListRequest::default()).await.unwrap().into_inner().releases.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_enrolled_with_tokens_run_a_release_and_carry_their_tokens_labels() {
    let hosts = shop_hosts(3);
    let fleet = TestFleet::start_enrolled(3, &hosts, Duration::from_secs(3_600))
        .await
        .unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    for host in &hosts {
        let e = enrolment(&fleet, &host.id).await.unwrap_or_else(|| panic!("{} is not enrolled", host.id));
        let want: std::collections::HashMap<String, String> =
            host.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(e.labels, want, "{} carries its token's labels", host.id);
        assert!(e.key_sha256.starts_with("sha256:"));
        let identity = std::fs::read_to_string(fleet.agent_data_dir(&host.id).join("identity/agent.pem")).unwrap();
        let info = pki::CertInfo::parse_pem(&identity).unwrap();
        assert_eq!(info.identities[0].name, host.id, "the certificate names its host");
        assert_eq!(info.key_sha256, e.key_sha256, "the cluster holds the key the host made");
    }
    let spent = tokens(&fleet).await;
    assert_eq!(spent.len(), hosts.len());
    assert!(spent.iter().all(|t| t.uses == 1 && t.enrolled_hosts.len() == 1), "{spent:?}");
    let listed = fleet.ok(fleet.cli(&["agents", "token", "list"]).await);
    assert_eq!(listed, "no usable join tokens (--all also lists spent ones)\n");
    let all = fleet.ok(fleet.cli(&["agents", "token", "list", "--all"]).await);
    for host in &hosts {
        assert!(all.lines().any(|l| l.contains("used up") && l.ends_with(&host.id)), "{}:\n{all}", host.id);
    }

    let spec = fleet.ok(AppSpec::install(1).toml());
    let id = fleet.ok(fleet.submit("shop-v1.toml", &spec).await);
    let r = fleet.ok(fleet.wait_finished(&id, RELEASE).await);
    assert_eq!(r.state, ReleaseState::Succeeded as i32, "{}\n{}", describe(&r), fleet.logs());
    fleet.ok(fleet.wait_inventory(&app_inventory(&hosts, |_, _| "1.0.0".to_owned()), Duration::from_secs(30)).await);

    // SIGHUP: the agent reloads its files. A certificate for the same key and host
    // with another lifetime stands in for one an operator replaced.
    let first = &hosts[0].id;
    let identity = fleet.agent_data_dir(first).join("identity");
    let key = std::fs::read_to_string(identity.join("agent.key")).unwrap();
    let csr = pki::request_for(&key, first).unwrap();
    let replaced = ca(&fleet).sign_request(&csr, Role::Agent, first, Duration::from_secs(7_200)).unwrap();
    replace(&identity.join("agent.pem"), &replaced.cert_pem);
    fleet.ok(fleet.sighup_agent(first));
    let expires = pki::format_unix(replaced.not_after);
    eventually(Duration::from_secs(10), "the agent to reload its certificate", || async {
        fleet.agent_log(first).contains(&format!("SIGHUP: TLS files reloaded expires={expires}")).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", fleet.agent_log(first)));

    // A restarted agent needs no token: it uses the identity it stored.
    fleet.kill9_agent(first);
    fleet.ok(fleet.restart_agent(first));
    fleet.ok(fleet.wait_hosts_state(std::slice::from_ref(first), v1::HostState::Online, Duration::from_secs(30)).await);
    assert_eq!(tokens(&fleet).await.iter().map(|t| t.uses).sum::<u32>(), 3, "no token was used again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_renews_its_certificate_several_times_without_leaving_its_session() {
    let hosts = vec![HostSpec { id: "web-1".into(), labels: [("role".to_owned(), "web".to_owned())].into() }];
    let fleet = TestFleet::start_enrolled(3, &hosts, Duration::from_secs(3))
        .await
        .unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    let before = fleet.ok(fleet.hosts(false).await);
    let first_key = enrolment(&fleet, "web-1").await.unwrap().key_sha256;
    let renewed = eventually(Duration::from_secs(40), "three renewals of web-1's certificate", || async {
        enrolment(&fleet, "web-1").await.filter(|e| e.renewals >= 3)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", fleet.logs()));
    assert_ne!(renewed.key_sha256, first_key, "each renewal is for a new key");

    let after = fleet.ok(fleet.hosts(false).await);
    assert_eq!(after.len(), 1, "web-1 stays online");
    let (b, a) = (&before[0], &after[0]);
    assert_eq!(a.state, v1::HostState::Online as i32);
    assert_eq!(a.state_changed_unix_ms, b.state_changed_unix_ms, "no lost/back transition across the renewals");
    assert_eq!(a.registered_unix_ms, b.registered_unix_ms);
    let accepted: usize = (1..=3).map(|id| fleet.coordinator_log(id).matches("agent session accepted").count()).sum();
    assert_eq!(accepted, 1, "one session from first to last:\n{}", fleet.logs());
    // The certificate in use now is one the leader issued after the first.
    let on_disk = std::fs::read_to_string(fleet.agent_data_dir("web-1").join("identity/agent.pem")).unwrap();
    let current = pki::CertInfo::parse_pem(&on_disk).unwrap();
    assert!(current.not_after > 0 && current.key_sha256 != first_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_the_right_identity_are_refused_and_change_nothing() {
    let hosts = vec![HostSpec { id: "web-1".into(), labels: [("role".to_owned(), "web".to_owned())].into() }];
    let fleet = TestFleet::start_enrolled(3, &hosts, Duration::from_secs(3_600))
        .await
        .unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    let ca = ca(&fleet);
    let addr = fleet.addrs()[0].clone();
    let create = v1::CreateRequest {
        spec_toml: fleet.ok(AppSpec::install(1).toml()),
        file_name: "shop.toml".into(),
        idempotency_key: String::new(),
    };
    let releases = |security: &ClientSecurity| ReleasesClient::new(channel(&addr, security).unwrap());

    // No client certificate at all.
    let pin: CaPin = ca.pin().parse().unwrap();
    let message = refused(
        releases(&ClientSecurity::Pinned(pin)).create(create.clone()).await,
        Code::Unauthenticated,
        Reason::Unauthenticated,
    );
    assert!(message.contains("neither was presented"), "{message}");

    // An operator of another CA, with the same trust domain and name.
    let rogue = ClusterCa::create(flotilla_tests::TRUST_DOMAIN, pki::CA_LIFETIME).unwrap();
    // (It trusts the cluster's CA, so the refusal is the server's, not its own.)
    let rogue_issued = rogue.issue_operator("admin", OperatorRole::Admin, pki::OPERATOR_LIFETIME).unwrap();
    let rogue_admin =
        ClientSecurity::Tls(TlsMaterial::from_pem(ca.cert_pem(), rogue_issued.cert_pem, rogue_issued.key_pem).unwrap());
    let message =
        refused(releases(&rogue_admin).create(create.clone()).await, Code::Unauthenticated, Reason::Unauthenticated);
    assert!(message.contains("operator admin (role admin) is not issued by this cluster's CA"), "{message}");

    // An expired operator certificate of the right CA.
    let short = holder(&ca, Role::Operator, "brief", Duration::from_secs(1));
    let ClientSecurity::Tls(material) = &short else { unreachable!() };
    let not_after = material.own_certificate().not_after;
    // Certificate times are whole seconds, and a certificate is still valid during the
    // second of its expiry: wait until that second is over.
    past((not_after + 1) * 1_000).await;
    let message =
        refused(releases(&short).create(create.clone()).await, Code::Unauthenticated, Reason::Unauthenticated);
    assert!(message.contains("the certificate of operator brief (role admin) expired at"), "{message}");

    // An agent calling what agents may not.
    let agent = holder(&ca, Role::Agent, "web-1", pki::AGENT_LIFETIME);
    let message =
        refused(releases(&agent).create(create.clone()).await, Code::PermissionDenied, Reason::PermissionDenied);
    assert_eq!(message, "agent web-1 may not call flotilla.v1.Releases/Create: it is for operators");
    let append =
        RaftPeerClient::new(channel(&addr, &agent).unwrap()).append_entries(v1::AppendEntriesRequest::default()).await;
    let message = refused(append, Code::PermissionDenied, Reason::PermissionDenied);
    assert!(message.starts_with("agent web-1 may not call flotilla.v1.RaftPeer/AppendEntries"), "{message}");
    // An operator may not speak Raft either.
    let admin = fleet.client_security().unwrap();
    let append =
        RaftPeerClient::new(channel(&addr, &admin).unwrap()).append_entries(v1::AppendEntriesRequest::default()).await;
    refused(append, Code::PermissionDenied, Reason::PermissionDenied);
    assert_eq!(release_count(&fleet).await, 0, "nothing was created");

    // An agent certificate for web-2 registering as web-1.
    let web2 = holder(&ca, Role::Agent, "web-2", pki::AGENT_LIFETIME);
    for addr in fleet.addrs() {
        let message =
            refused(register_as(addr, &web2, "web-1").await, Code::PermissionDenied, Reason::PermissionDenied);
        assert!(message.starts_with("agent web-2 may not register as host web-1"), "{message}");
    }
    let hosts_now: Vec<String> = fleet.ok(fleet.hosts(true).await).into_iter().map(|h| h.host_id).collect();
    assert_eq!(hosts_now, ["web-1"], "no host was registered");
    assert_eq!(enrolment(&fleet, "web-2").await, None);

    // Tokens: used up, revoked, expired, and one that does not allow the host.
    let once = token(&fleet, &["--ttl", "10m", "--uses", "1", "--label", "role=db"]).await;
    let issued = join(&fleet, &once, "db-1").await.expect("a fresh token enrols");
    assert!(pki::CertInfo::parse_pem(&issued.certificate_pem).is_some_and(|c| c.identities[0].name == "db-1"));
    let message = refused(join(&fleet, &once, "db-2").await, Code::Unauthenticated, Reason::JoinTokenRefused);
    assert!(message.contains("is used up (1 of 1 hosts enrolled)"), "{message}");

    let revoked = token(&fleet, &["--ttl", "10m"]).await;
    let id = revoked.split('.').nth(2).unwrap().to_owned();
    let out = fleet.ok(fleet.cli(&["agents", "token", "revoke", &id]).await);
    assert_eq!(out, format!("join token {id} revoked\n"));
    let message = refused(join(&fleet, &revoked, "db-2").await, Code::Unauthenticated, Reason::JoinTokenRefused);
    assert_eq!(message, format!("join token {id} was revoked"));

    let brief = token(&fleet, &["--ttl", "1s"]).await;
    let brief_id = brief.split('.').nth(2).unwrap().to_owned();
    past(tokens(&fleet).await.into_iter().find(|t| t.id == brief_id).unwrap().expires_unix_ms).await;
    let message = refused(join(&fleet, &brief, "db-2").await, Code::Unauthenticated, Reason::JoinTokenRefused);
    assert!(message.ends_with("has expired"), "{message}");

    let web_only = token(&fleet, &["--ttl", "10m", "--host-id", "web-*"]).await;
    let message = refused(join(&fleet, &web_only, "db-2").await, Code::PermissionDenied, Reason::JoinTokenRefused);
    assert!(message.contains("may enrol only hosts matching `web-*`, not db-2"), "{message}");
    assert_eq!(enrolment(&fleet, "db-2").await, None, "no refused join enrolled db-2");

    // A second enrolment of an enrolled host id, with a new key.
    let before = enrolment(&fleet, "web-1").await.unwrap();
    let message = refused(join(&fleet, &web_only, "web-1").await, Code::AlreadyExists, Reason::HostAlreadyEnrolled);
    assert!(message.contains("flotilla agents forget web-1"), "{message}");
    assert_eq!(enrolment(&fleet, "web-1").await, Some(before), "the enrolment is as it was");
    let unspent = tokens(&fleet).await.into_iter().find(|t| t.host_id_pattern == "web-*").unwrap();
    assert_eq!(unspent.uses, 0, "a refused join spends nothing");

    // Once forgotten, the old agent is sent away and refused, and the host id may
    // enrol again with a new key.
    let out = fleet.ok(fleet.cli(&["agents", "forget", "web-1"]).await);
    assert!(out.starts_with("host web-1 forgotten"), "{out}");
    fleet.ok(fleet.wait_hosts_state(&["web-1".to_owned()], v1::HostState::Lost, Duration::from_secs(30)).await);
    assert!(
        fleet.agent_log("web-1").contains("was revoked when its enrolment was forgotten"),
        "{}",
        fleet.agent_log("web-1")
    );
    let again = join(&fleet, &web_only, "web-1").await.expect("a forgotten host enrols again");
    assert!(!again.certificate_pem.is_empty());
    assert_eq!(release_count(&fleet).await, 0);
}

/// Waits until the wall clock is past `unix_ms` (and a little more, for rounding).
async fn past(unix_ms: i64) {
    eventually(Duration::from_secs(10), "an expiry to pass", || async {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        (i64::try_from(now).unwrap() > unix_ms + 100).then_some(())
    })
    .await
    .unwrap();
}

/// Opens an `AgentLink` session to `addr` as `security` and registers as `host`;
/// returns the coordinator's first answer, or the status the session ended with.
async fn register_as(
    addr: &str,
    security: &ClientSecurity,
    host: &str,
) -> Result<v1::CoordinatorMessage, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let register = v1::Register {
        host_id: host.to_owned(),
        instance_id: "impostor".into(),
        version: Some(flotilla_proto::version_info("0.1.0", Vec::new())),
        ..Default::default()
    };
    tx.send(v1::AgentMessage { msg: Some(v1::agent_message::Msg::Register(register)) }).await.unwrap();
    let mut client = AgentLinkClient::new(channel(addr, security).unwrap());
    let mut answers = client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let first = answers.message().await;
    drop(tx);
    match first {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(tonic::Status::unknown("the session ended without an answer")),
        Err(status) => Err(status),
    }
}

/// Writes `bytes` to `path` as an operator would: aside, then renamed over it.
fn replace(path: &std::path::Path, bytes: impl AsRef<[u8]>) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The CA rotation of docs/operations.md: trust the old and the new CA, switch the
/// coordinators (certificates and signing key) to the new one, let the agents renew
/// into it, then drop the old one; the cluster keeps its leader and the agent its
/// session throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_rotates_without_dropping_the_cluster_or_the_agents_session() {
    let hosts = vec![HostSpec { id: "web-1".into(), labels: [("role".to_owned(), "web".to_owned())].into() }];
    let fleet = TestFleet::start_enrolled(3, &hosts, Duration::from_secs(4))
        .await
        .unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    let pki_dir = fleet.pki_dir().unwrap().to_owned();
    let old = ca(&fleet);
    let new = ClusterCa::create(flotilla_tests::TRUST_DOMAIN, pki::CA_LIFETIME).unwrap();
    let leader = fleet.ok(fleet.leader(Duration::from_secs(10)).await);
    let renewals = || async { enrolment(&fleet, "web-1").await.map_or(0, |e| e.renewals) };
    let agent_cert = || std::fs::read_to_string(fleet.agent_data_dir("web-1").join("identity/agent.pem")).unwrap();
    let agent_trust = || std::fs::read_to_string(fleet.agent_data_dir("web-1").join("identity/ca.pem")).unwrap();
    let renewed_after = |n: u64, what: &'static str| {
        let fleet = &fleet;
        async move {
            eventually(Duration::from_secs(30), what, || async {
                (enrolment(fleet, "web-1").await.map_or(0, |e| e.renewals) > n).then_some(())
            })
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", fleet.logs()));
        }
    };

    // 1. Trust both: the bundle on every coordinator; the agent gets it at its next renewal.
    replace(&pki_dir.join(pki::CA_CERT_FILE), format!("{}{}", old.cert_pem(), new.cert_pem()));
    fleet.ok(fleet.sighup_coordinators());
    let n = renewals().await;
    renewed_after(n, "a renewal after the bundle").await;
    renewed_after(n + 1, "a second renewal after the bundle").await;
    assert!(agent_trust().contains(new.cert_pem().trim()), "the agent trusts the new CA too");

    // 2. Switch: coordinators get certificates of the new CA and sign with its key; the
    // operator gets a new certificate too.
    let loopback = "127.0.0.1".parse().unwrap();
    for id in 1..=3u64 {
        let issued = new
            .issue(Role::Coordinator, &id.to_string(), std::slice::from_ref(&loopback), pki::COORDINATOR_LIFETIME)
            .unwrap();
        replace(&pki_dir.join(format!("coordinator-{id}.key")), &issued.key_pem);
        replace(&pki_dir.join(format!("coordinator-{id}.pem")), &issued.cert_pem);
    }
    let admin = new.issue_operator("admin", OperatorRole::Admin, pki::OPERATOR_LIFETIME).unwrap();
    let old_admin_cert = std::fs::read(pki_dir.join("operator-admin.pem")).unwrap();
    let old_admin_key = std::fs::read(pki_dir.join("operator-admin.key")).unwrap();
    replace(&pki_dir.join("operator-admin.key"), &admin.key_pem);
    replace(&pki_dir.join("operator-admin.pem"), &admin.cert_pem);
    let new_key = tempfile::tempdir().unwrap();
    new.write(new_key.path()).unwrap();
    replace(&pki_dir.join(pki::CA_KEY_FILE), std::fs::read(new_key.path().join(pki::CA_KEY_FILE)).unwrap());
    fleet.ok(fleet.sighup_coordinators());
    let n = renewals().await;
    renewed_after(n, "a renewal under the new CA").await;
    eventually(Duration::from_secs(30), "the agent's certificate from the new CA", || async {
        new.signed(&agent_cert()).then_some(())
    })
    .await
    .unwrap();

    // 3. Drop the old CA.
    replace(&pki_dir.join(pki::CA_CERT_FILE), new.cert_pem());
    fleet.ok(fleet.sighup_coordinators());
    let n = renewals().await;
    renewed_after(n, "a renewal after the old CA was dropped").await;
    // The coordinator counts a renewal when it commits it; the agent writes the trust
    // it got in the answer a moment later.
    eventually(Duration::from_secs(30), "the agent no longer trusts the old CA", || async {
        (!agent_trust().contains(old.cert_pem().trim())).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", fleet.logs()));
    // A certificate of the old CA is refused now (the client trusts the new CA, so the
    // refusal is the server's).
    let old_admin = ClientSecurity::Tls(TlsMaterial::from_pem(new.cert_pem(), old_admin_cert, old_admin_key).unwrap());
    let mut c = ReleasesClient::new(channel(&fleet.addrs()[0], &old_admin).unwrap());
    let message = refused(c.list(v1::ListRequest::default()).await, Code::Unauthenticated, Reason::Unauthenticated);
    assert!(message.contains("operator admin (role admin) is not issued by this cluster's CA"), "{message}");

    // The cluster never changed leader, the agent never left its session, and the new
    // operator still drives it.
    assert_eq!(fleet.ok(fleet.leader(Duration::from_secs(10)).await), leader, "the leader stayed:\n{}", fleet.logs());
    let accepted: usize = (1..=3).map(|id| fleet.coordinator_log(id).matches("agent session accepted").count()).sum();
    assert_eq!(accepted, 1, "one agent session throughout:\n{}", fleet.logs());
    assert_eq!(fleet.ok(fleet.hosts(false).await).len(), 1, "web-1 is online");
    let listed = fleet.ok(fleet.cli(&["agents"]).await);
    assert!(listed.contains("web-1"), "{listed}");
}
