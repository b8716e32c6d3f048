//! Who may do what, through real coordinator processes: operators of each role (by
//! certificate), operator tokens (made, revoked, expired, of another cluster), the
//! `x-flotilla-actor` header nobody believes, approvals the spec reserves for someone
//! other than the release's author, and the audit trail that records every attempt and
//! survives a leader kill and a restart of the whole cluster.
//!
//! Every refusal is checked for its code and reason, for its audit record, and for
//! leaving the state as it was.

use std::time::Duration;

use flotilla_net::pki::{ClusterCa, OperatorRole};
use flotilla_net::{CaPin, ClientSecurity, TlsMaterial, channel};
use flotilla_proto::status::Reason;
use flotilla_proto::v1::access_client::AccessClient;
use flotilla_proto::v1::cluster_client::ClusterClient;
use flotilla_proto::v1::fleet_client::FleetClient;
use flotilla_proto::v1::releases_client::ReleasesClient;
use flotilla_proto::v1::{self, ReleaseState};
use flotilla_tests::fleet::{AppSpec, TestFleet, describe, shop_hosts};
use flotilla_tests::{ClusterOptions, TestCluster, eventually, refused, tiny_spec};
use tonic::Code;

/// A request carrying `token` as its bearer credential.
fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn create(key: &str) -> v1::CreateRequest {
    v1::CreateRequest { spec_toml: tiny_spec(key), file_name: format!("{key}.toml"), ..Default::default() }
}

/// The audit trail as operator `security` reads it from `addr`, newest first.
async fn trail(addr: &str, security: &ClientSecurity) -> Vec<v1::AuditRecord> {
    let mut access = AccessClient::new(channel(addr, security).unwrap());
    let req = v1::ListAuditRequest { limit: 1_000, ..Default::default() };
    access.list_audit(req).await.map(|r| r.into_inner().records).unwrap_or_default()
}

/// Waits until the trail holds a record matching `wanted`; returns it.
async fn recorded(
    addr: &str,
    security: &ClientSecurity,
    what: &str,
    wanted: impl Fn(&v1::AuditRecord) -> bool,
) -> v1::AuditRecord {
    eventually(Duration::from_secs(15), what, || async { trail(addr, security).await.into_iter().find(|r| wanted(r)) })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// How many releases the node at `addr` lists; an election under way (UNAVAILABLE,
/// "retry shortly") is waited out.
async fn release_count(addr: &str, security: &ClientSecurity) -> usize {
    let c = ReleasesClient::new(channel(addr, security).unwrap());
    eventually(Duration::from_secs(15), "the release list", || {
        let mut c = c.clone();
        async move {
            match c.list(v1::ListRequest::default()).await {
                Ok(list) => Some(list.into_inner().releases.len()),
                Err(status) if status.code() == Code::Unavailable => None,
                Err(status) => panic!("listing releases: {status}"),
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_audited_changes_nothing_and_the_trail_survives_a_leader_kill_and_a_restart() {
    let mut cluster = TestCluster::start(3, ClusterOptions { tls: true, ..ClusterOptions::default() }).unwrap();
    let leader = cluster.wait_leader(Duration::from_secs(30)).await.unwrap();
    let follower = *cluster.nodes.keys().find(|&&id| id != leader).unwrap();
    let at_leader = cluster.nodes[&leader].addr.clone();
    let at_follower = cluster.nodes[&follower].addr.clone();
    let ca = cluster.ca().unwrap();
    let admin = cluster.client_security().clone();
    let viewer = ca.issue_operator("vera", OperatorRole::Viewer).unwrap().security();
    let deployer = ca.issue_operator("dan", OperatorRole::Deployer).unwrap().security();
    let pinned = ClientSecurity::Pinned(ca.cluster_ca().pin().parse::<CaPin>().unwrap());
    let before = release_count(&at_leader, &admin).await;

    // A viewer reads but may not create a release, on a follower as on the leader.
    for addr in [&at_follower, &at_leader] {
        let message = refused(
            ReleasesClient::new(channel(addr, &viewer).unwrap()).create(create("by-viewer")).await,
            Code::PermissionDenied,
            Reason::PermissionDenied,
        );
        assert!(message.contains("operator vera (role viewer) may not call flotilla.v1.Releases/Create"), "{message}");
        assert!(message.contains("needs the deployer role"), "{message}");
    }
    assert_eq!(release_count(&at_follower, &viewer).await, before, "a viewer lists releases and created none");

    // A deployer may not change the membership nor make join tokens.
    let mut cluster_client = ClusterClient::new(channel(&at_leader, &deployer).unwrap());
    let add = v1::AddNodeRequest { node_id: 9, addr: "127.0.0.1:1".into(), learner_only: true };
    let message = refused(cluster_client.add_node(add).await, Code::PermissionDenied, Reason::PermissionDenied);
    assert!(message.contains("operator dan (role deployer)") && message.contains("needs the admin role"), "{message}");
    let mut fleet_client = FleetClient::new(channel(&at_follower, &deployer).unwrap());
    let ask = v1::CreateJoinTokenRequest { ttl_ms: 60_000, ..Default::default() };
    refused(fleet_client.create_join_token(ask).await, Code::PermissionDenied, Reason::PermissionDenied);
    let members = cluster.status_of(leader).await.unwrap().members;
    assert_eq!(members.len(), 3, "no member was added: {members:?}");
    let tokens = fleet_client.list_join_tokens(v1::ListJoinTokensRequest { include_spent: true }).await.unwrap();
    assert!(tokens.into_inner().tokens.is_empty(), "no join token was made");

    // An admin makes a deployer token; it creates a release under its own name.
    let mut access = AccessClient::new(channel(&at_follower, &admin).unwrap());
    let ask = v1::CreateTokenRequest { role: v1::OperatorRole::Deployer as i32, ttl_ms: 600_000, name: "ci".into() };
    let made = access.create_token(ask).await.unwrap().into_inner();
    let ci = made.token.clone();
    let ci_id = made.operator_token.as_ref().unwrap().id.clone();
    let mut as_token = ReleasesClient::new(channel(&at_follower, &pinned).unwrap());
    let created = as_token.create(bearer(&ci, create("by-token"))).await.unwrap().into_inner().release.unwrap();
    assert_eq!(created.created_by, "token ci");
    let whoami = AccessClient::new(channel(&at_leader, &pinned).unwrap())
        .who_am_i(bearer(&ci, v1::WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((whoami.actor.as_str(), whoami.role), ("token ci", v1::OperatorRole::Deployer as i32));
    assert_eq!(whoami.authenticated_by, format!("token {ci_id}"));

    // Revoked: refused from then on (once the follower applied the revocation, which
    // a read shows without changing anything).
    access.revoke_token(v1::RevokeTokenRequest { id: ci_id.clone() }).await.unwrap();
    let count = release_count(&at_leader, &admin).await;
    let probe = as_token.clone();
    let dead = |token: String, why: &'static str| {
        let mut client = probe.clone();
        async move {
            match client.list(bearer(&token, v1::ListRequest::default())).await {
                Err(status) if status.code() == Code::Unauthenticated && status.message().contains(why) => Some(()),
                _ => None,
            }
        }
    };
    eventually(Duration::from_secs(10), "the revocation to reach the follower", || dead(ci.clone(), "revoked"))
        .await
        .unwrap();
    let message = refused(
        as_token.create(bearer(&ci, create("after-revoke"))).await,
        Code::Unauthenticated,
        Reason::Unauthenticated,
    );
    assert!(message.contains(&format!("operator token {ci_id} (ci) was revoked by operator client")), "{message}");
    // Expired.
    let ask = v1::CreateTokenRequest { role: v1::OperatorRole::Admin as i32, ttl_ms: 1_500, name: "brief".into() };
    let brief = access.create_token(ask).await.unwrap().into_inner().token;
    eventually(Duration::from_secs(10), "the brief token to expire", || dead(brief.clone(), "expired")).await.unwrap();
    let message = refused(
        as_token.create(bearer(&brief, create("after-expiry"))).await,
        Code::Unauthenticated,
        Reason::Unauthenticated,
    );
    assert!(message.contains("(brief) expired at"), "{message}");
    // Of another cluster: the same shape, another cluster id.
    let mut parts: Vec<String> = ci.split('.').map(str::to_owned).collect();
    parts[1] = "00000000000000aa".into();
    let foreign = parts.join(".");
    let message = refused(
        as_token.create(bearer(&foreign, create("foreign"))).await,
        Code::Unauthenticated,
        Reason::Unauthenticated,
    );
    assert!(message.contains("was made by cluster 00000000000000aa; this is cluster"), "{message}");
    assert_eq!(release_count(&at_leader, &admin).await, count, "no refused token created a release");

    // `x-flotilla-actor` is not believed: the release and its first event name the
    // certificate's operator.
    let mut request = tonic::Request::new(create("claims"));
    request.metadata_mut().insert("x-flotilla-actor", "mallory".parse().unwrap());
    let claimed = ReleasesClient::new(channel(&at_follower, &admin).unwrap())
        .create(request)
        .await
        .unwrap()
        .into_inner()
        .release
        .unwrap();
    assert_eq!(claimed.created_by, "operator client");

    // The trail, read by the viewer.
    let denied = |actor: &'static str, method: &'static str| {
        move |r: &v1::AuditRecord| r.actor == actor && r.method == method && r.code == "PERMISSION_DENIED"
    };
    let r = recorded(&at_leader, &viewer, "the viewer's create", denied("operator vera", "Releases/Create")).await;
    assert_eq!(r.role, "viewer");
    assert_eq!(r.reason, "PERMISSION_DENIED");
    assert!(r.peer.starts_with("127.0.0.1:"), "{r:?}");
    assert!(r.at_unix_ms > 0 && r.seq > 0, "{r:?}");
    let by_vera: Vec<u64> = trail(&at_leader, &viewer)
        .await
        .iter()
        .filter(|r| r.actor == "operator vera" && r.method == "Releases/Create")
        .map(|r| r.node_id)
        .collect();
    assert!(by_vera.contains(&leader) && by_vera.contains(&follower), "recorded by the node that refused: {by_vera:?}");
    recorded(&at_leader, &viewer, "the deployer's add-node", denied("operator dan", "Cluster/AddNode")).await;
    recorded(&at_leader, &viewer, "the deployer's join token", denied("operator dan", "Fleet/CreateJoinToken")).await;
    let revoked = recorded(&at_leader, &viewer, "the revoked token's create", |r| {
        r.actor == "token ci" && r.code == "UNAUTHENTICATED" && r.message.contains("revoked")
    })
    .await;
    assert_eq!(revoked.method, "Releases/Create");
    recorded(&at_leader, &viewer, "the expired token's create", |r| {
        r.actor == "token brief" && r.code == "UNAUTHENTICATED" && r.message.contains("expired")
    })
    .await;
    recorded(&at_leader, &viewer, "the foreign token's create", |r| {
        r.actor == "anonymous" && r.code == "UNAUTHENTICATED" && r.message.contains("made by cluster")
    })
    .await;
    let ok = recorded(&at_leader, &viewer, "the token's create", |r| r.actor == "token ci" && r.code == "OK").await;
    assert_eq!((ok.release_id.as_str(), ok.target.clone()), (created.id.as_str(), format!("release {}", created.id)));
    let claims = recorded(&at_leader, &viewer, "the claimed create", |r| r.release_id == claimed.id).await;
    assert_eq!(claims.actor, "operator client");
    recorded(&at_leader, &viewer, "the revocation", |r| {
        r.method == "Access/RevokeToken" && r.code == "OK" && r.target == format!("token {ci_id}")
    })
    .await;
    // Filters: by release and by actor name.
    let only = AccessClient::new(channel(&at_follower, &viewer).unwrap())
        .list_audit(v1::ListAuditRequest { actor: "dan".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(only.len(), 2, "{only:?}");
    let before_kill = trail(&at_leader, &viewer).await;

    // The trail survives the leader's kill -9 ...
    cluster.kill9(leader);
    let new_leader = cluster.wait_leader(Duration::from_secs(30)).await.unwrap();
    let at_new = cluster.nodes[&new_leader].addr.clone();
    let after_kill = eventually(Duration::from_secs(15), "the trail on the new leader", || async {
        let now = trail(&at_new, &viewer).await;
        before_kill.iter().all(|r| now.contains(r)).then_some(now)
    })
    .await
    .unwrap();
    // ... and a restart of every coordinator.
    cluster.restart(leader).unwrap();
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in &ids {
        cluster.terminate(*id);
    }
    for id in &ids {
        cluster.restart(*id).unwrap();
    }
    let back = cluster.wait_leader(Duration::from_secs(30)).await.unwrap();
    let at_back = cluster.nodes[&back].addr.clone();
    eventually(Duration::from_secs(15), "the trail after a full restart", || async {
        let now = trail(&at_back, &viewer).await;
        after_kill.iter().all(|r| now.contains(r)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.log_of(back)));
}

/// Material of operator `name` with `role`, issued by the fleet's CA.
fn operator(fleet: &TestFleet, name: &str, role: OperatorRole) -> ClientSecurity {
    let ca = ClusterCa::load(fleet.pki_dir().expect("an enrolled fleet")).unwrap();
    let issued = ca.issue_operator(name, role, Duration::from_secs(3_600)).unwrap();
    ClientSecurity::Tls(TlsMaterial::from_pem(ca.cert_pem(), issued.cert_pem, issued.key_pem).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_reserved_for_another_operator_refuses_the_releases_author() {
    let hosts = shop_hosts(3);
    let fleet = TestFleet::start_enrolled(3, &hosts, Duration::from_secs(3_600))
        .await
        .unwrap_or_else(|e| panic!("starting the fleet: {e:#}"));
    let addr = fleet.addrs()[0].clone();
    let alice = operator(&fleet, "alice", OperatorRole::Deployer);
    let bob = operator(&fleet, "bob", OperatorRole::Deployer);
    let spec = fleet.ok(AppSpec::staged(1).canary_approval().toml());
    assert!(spec.contains("approval = true"), "{spec}");
    let spec = spec.replace("approval = true", "approval = { by = \"other-than-author\" }");

    let mut as_alice = ReleasesClient::new(channel(&addr, &alice).unwrap());
    let req = v1::CreateRequest { spec_toml: spec, file_name: "shop.toml".into(), ..Default::default() };
    let id = as_alice.create(req).await.unwrap().into_inner().release.unwrap().id;
    let waiting = fleet.ok(fleet
        .wait_release(&id, "the canary's approval", Duration::from_secs(120), |r| !r.pending_approvals.is_empty())
        .await);
    assert_eq!(waiting.created_by, "operator alice");
    assert_eq!(waiting.pending_approvals[0].approvers, "someone other than the release's author");

    let approve = || v1::ApproveRequest { release_id: id.clone(), ..Default::default() };
    let message = refused(as_alice.approve(approve()).await, Code::PermissionDenied, Reason::ApproverNotAllowed);
    assert!(message.contains("operator alice may not approve stage canary of release"), "{message}");
    assert!(message.contains("operator alice created the release"), "{message}");
    let still = fleet.ok(fleet.release(&id).await);
    assert_eq!(still.pending_approvals.len(), 1, "the approval is still pending");
    assert!(still.approvals.is_empty());

    ReleasesClient::new(channel(&addr, &bob).unwrap()).approve(approve()).await.unwrap();
    let done = fleet.ok(fleet.wait_finished(&id, Duration::from_secs(180)).await);
    assert_eq!(done.state, ReleaseState::Succeeded as i32, "{}\n{}", describe(&done), fleet.logs());
    assert_eq!(done.approvals.len(), 1);
    assert_eq!((done.approvals[0].approved_by.as_str(), done.approvals[0].name.as_str()), ("operator bob", "canary"));
    let events = fleet.ok(fleet.events(&id).await);
    let approved = events.iter().find(|e| e.kind == v1::EventKind::Approved as i32).expect("an approval event");
    assert_eq!(approved.actor, "operator bob");

    let records = eventually(Duration::from_secs(15), "the three calls in the trail", || async {
        let records = AccessClient::new(channel(&addr, &bob).unwrap())
            .list_audit(v1::ListAuditRequest { release_id: id.clone(), ..Default::default() })
            .await
            .ok()?
            .into_inner()
            .records;
        (records.len() >= 3).then_some(records)
    })
    .await
    .unwrap();
    let calls: Vec<(&str, &str, &str)> =
        records.iter().rev().map(|r| (r.actor.as_str(), r.method.as_str(), r.code.as_str())).collect();
    assert_eq!(
        calls,
        [
            ("operator alice", "Releases/Create", "OK"),
            ("operator alice", "Releases/Approve", "PERMISSION_DENIED"),
            ("operator bob", "Releases/Approve", "OK"),
        ]
    );
    assert_eq!(records[1].reason, "APPROVER_NOT_ALLOWED");
}
