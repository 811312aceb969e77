//! RBAC decisions over the in-memory store: the default policy, bindings
//! that grant and stop granting, impersonation, tokens on a lagging replica.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::api::Reason;
use flotilla_objects::rbac::Attributes;
use flotilla_objects::registry;
use flotilla_security::authn::{Authenticator, Identity, TokenFile};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::*;
use crate::memstore::MemStore;
use crate::{ApiConfig, ApiServer};

async fn setup() -> (ApiServer, Arc<Auth>, CancellationToken) {
    setup_on(Arc::new(MemStore::new()), None).await
}

/// [`setup`] over `store`, signing and checking ServiceAccount tokens with
/// `sa_keys`.
async fn setup_on(
    store: Arc<MemStore>,
    sa_keys: Option<Arc<flotilla_security::satoken::TokenKeys>>,
) -> (ApiServer, Arc<Auth>, CancellationToken) {
    let api = ApiServer::new(store, ApiConfig::default());
    api.ensure_namespaces().await.expect("namespaces");
    api.ensure_rbac_defaults().await.expect("policy");
    let tokens = TokenFile::parse(
        "t-alice,alice,1001,dev\nt-admin,root,0,system:masters\n",
        Path::new("tokens.csv"),
    )
    .expect("tokens");
    let stop = CancellationToken::new();
    let auth = Auth::rbac(Authenticator { tokens }, api.clone(), stop.clone(), sa_keys);
    (api, auth, stop)
}

fn bearer(t: &str) -> MetadataMap {
    let mut md = MetadataMap::new();
    md.insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {t}")).expect("value"),
    );
    md
}

fn list_pods(ns: &str) -> Attributes {
    Attributes::new("list", &registry::POD, ns, "")
}

/// Wait until `who` may (or may not) do `a`: the index follows a watch.
async fn wait_allowed(auth: &Auth, who: &Identity, a: &Attributes, want: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if auth.allowed(who, a).await.expect("decision") == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {} after 5 s",
            !want
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_user_is_forbidden_until_a_role_binding_grants_then_again_after_it_goes() {
    let (api, auth, stop) = setup().await;
    let alice = auth
        .caller_of(&bearer("t-alice"), None)
        .await
        .expect("alice");
    assert_eq!(alice.user, "alice");
    let e = auth
        .authorize(&alice, &list_pods("default"))
        .await
        .expect_err("no binding");
    assert_eq!(e.reason, Reason::Forbidden);
    assert_eq!(
        e.message,
        "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    api.create(
        &registry::ROLE_BINDING,
        "default",
        json!({"metadata": {"name": "alice-view"},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}}),
        false,
    )
    .await
    .expect("binding");
    wait_allowed(&auth, &alice, &list_pods("default"), true).await;
    assert!(
        !auth
            .allowed(&alice, &list_pods("kube-system"))
            .await
            .expect("d"),
        "only in its namespace"
    );
    let secrets = Attributes::new("get", &registry::SECRET, "default", "s");
    assert!(
        !auth.allowed(&alice, &secrets).await.expect("d"),
        "view does not read secrets"
    );
    let delete = Attributes::new("delete", &registry::POD, "default", "p");
    assert!(
        !auth.allowed(&alice, &delete).await.expect("d"),
        "view does not delete"
    );
    api.delete(
        &registry::ROLE_BINDING,
        "default",
        "alice-view",
        &Default::default(),
    )
    .await
    .expect("unbind");
    wait_allowed(&auth, &alice, &list_pods("default"), false).await;
    stop.cancel();
}

#[tokio::test]
async fn roles_grant_only_their_rules_and_names() {
    let (api, auth, stop) = setup().await;
    let alice = auth
        .caller_of(&bearer("t-alice"), None)
        .await
        .expect("alice");
    api.create(
        &registry::ROLE,
        "default",
        json!({"metadata": {"name": "cm-one"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["app"]}]}),
        false,
    )
    .await
    .expect("role");
    api.create(
        &registry::ROLE_BINDING,
        "default",
        json!({"metadata": {"name": "devs"},
               "subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "dev"}],
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-one"}}),
        false,
    )
    .await
    .expect("binding");
    let get = |name: &str| Attributes::new("get", &registry::CONFIG_MAP, "default", name);
    wait_allowed(&auth, &alice, &get("app"), true).await;
    assert!(!auth.allowed(&alice, &get("other")).await.expect("d"));
    stop.cancel();
}

#[tokio::test]
async fn unknown_tokens_are_unauthorized_and_masters_may_do_anything() {
    let (_api, auth, stop) = setup().await;
    let e = auth
        .caller_of(&bearer("nope"), None)
        .await
        .expect_err("bad token");
    assert_eq!(e.reason, Reason::Unauthorized);
    let root = auth
        .caller_of(&bearer("t-admin"), None)
        .await
        .expect("root");
    assert!(auth.is_cluster_admin(&root).await);
    let anon = auth
        .caller_of(&MetadataMap::new(), None)
        .await
        .expect("anonymous");
    assert_eq!(anon.user, "system:anonymous");
    assert!(!auth.is_cluster_admin(&anon).await);
    assert!(!auth.allowed(&anon, &list_pods("default")).await.expect("d"));
    stop.cancel();
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb() {
    let (api, auth, stop) = setup().await;
    let mut md = bearer("t-alice");
    md.insert(IMPERSONATE_USER, MetadataValue::from_static("bob"));
    let e = auth
        .caller_of(&md, None)
        .await
        .expect_err("alice may not impersonate");
    assert_eq!(e.reason, Reason::Forbidden);
    assert!(
        e.message.contains("cannot impersonate resource \"users\""),
        "{}",
        e.message
    );
    api.create(
        &registry::CLUSTER_ROLE,
        "",
        json!({"metadata": {"name": "impersonator"},
               "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}]}),
        false,
    )
    .await
    .expect("role");
    api.create(
        &registry::CLUSTER_ROLE_BINDING,
        "",
        json!({"metadata": {"name": "alice-impersonates"},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}],
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"}}),
        false,
    )
    .await
    .expect("binding");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let bob = loop {
        match auth.caller_of(&md, None).await {
            Ok(b) => break b,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("still refused: {e}"),
        }
    };
    assert_eq!(bob.user, "bob");
    assert_eq!(bob.groups, ["system:authenticated"]);
    stop.cancel();
}

/// A replica whose serializable reads lag: a bootstrap token and a
/// ServiceAccount token whose objects were written after its view are
/// still accepted (the refusal is checked linearizably), and a token of a
/// deleted account is refused.
#[tokio::test]
async fn tokens_written_through_another_master_pass_on_a_lagging_one() {
    let store = Arc::new(MemStore::new());
    let pem = flotilla_security::satoken::generate_key_pem().expect("key");
    let keys = flotilla_security::satoken::TokenKeys::from_pem(
        &pem,
        "https://flotilla.test",
        &[],
        Duration::from_secs(3600),
    )
    .expect("keys");
    let (api, auth, stop) = setup_on(store.clone(), Some(Arc::new(keys))).await;
    let lag_from = crate::store::Store::revision(store.as_ref());
    store.lag_reads_at(Some(lag_from));

    api.create(
        &registry::SECRET,
        "kube-system",
        json!({"metadata": {"name": "bootstrap-token-abcdef"},
               "type": "bootstrap.kubernetes.io/token",
               "stringData": {"token-id": "abcdef", "token-secret": "0123456789abcdef",
                              "usage-bootstrap-authentication": "true"}}),
        false,
    )
    .await
    .expect("token secret");
    let who = auth
        .caller_of(&bearer("abcdef.0123456789abcdef"), None)
        .await
        .expect("a token written after this replica's view");
    assert_eq!(who.user, "system:bootstrap:abcdef");
    let e = auth
        .caller_of(&bearer("abcdef.0123456789abcdee"), None)
        .await
        .expect_err("a wrong secret");
    assert_eq!(e.reason, Reason::Unauthorized);

    api.create(
        &registry::SERVICE_ACCOUNT,
        "default",
        json!({"metadata": {"name": "builder"}}),
        false,
    )
    .await
    .expect("account");
    let tokens = auth.tokens().expect("issuer");
    let (jwt, _) = tokens
        .issue(&tokens::TokenRequest {
            namespace: "default".into(),
            service_account: "builder".into(),
            ..Default::default()
        })
        .await
        .expect("a token of an account this replica has not seen yet");
    let who = auth
        .caller_of(&bearer(&jwt), None)
        .await
        .expect("its token");
    assert_eq!(who.user, "system:serviceaccount:default:builder");

    store.lag_reads_at(None);
    api.delete(
        &registry::SERVICE_ACCOUNT,
        "default",
        "builder",
        &Default::default(),
    )
    .await
    .expect("delete");
    let e = auth
        .caller_of(&bearer(&jwt), None)
        .await
        .expect_err("the account is gone");
    assert!(e.message.contains("has been deleted"), "{}", e.message);
    stop.cancel();
}
