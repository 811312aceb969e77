use super::*;
use serde_json::json;

fn list() -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"metadata": {"name": "a", "labels": {"app": "web", "k8s.io/x": "1"}},
         "spec": {"replicas": 3, "containers": [{"name": "c1", "image": "nginx"}, {"name": "c2", "image": "redis"}]},
         "status": {"phase": "Running"}},
        {"metadata": {"name": "b"}, "spec": {"replicas": 1, "containers": [{"name": "c3", "image": "busybox"}]},
         "status": {"phase": "Pending"}}]})
}

fn render(t: &str) -> String {
    Template::parse(t).unwrap().render(&list())
}

#[test]
fn fields_wildcards_and_indexes() {
    assert_eq!(render("{.items[*].metadata.name}"), "a b");
    assert_eq!(render("{.items[0].spec.replicas}"), "3");
    assert_eq!(render("{.items[-1].metadata.name}"), "b");
    assert_eq!(render("{.items[0:1].metadata.name}"), "a");
    assert_eq!(render("{.items[1:].metadata.name}"), "b");
    assert_eq!(render("{$.kind}"), "List");
    assert_eq!(render("{..image}"), "nginx redis busybox");
    assert_eq!(render("{.items[0].metadata.labels['k8s.io/x']}"), "1");
    assert_eq!(render(r"{.items[0].metadata.labels.k8s\.io/x}"), "1");
    assert_eq!(
        render("{.items[0].metadata.labels}"),
        r#"{"app":"web","k8s.io/x":"1"}"#
    );
    assert_eq!(render("{.items[0].metadata.labels.*}"), "web 1");
    assert_eq!(render("{.items[1,0].metadata.name}"), "b a");
    assert_eq!(
        render("{.items[0].metadata['name','labels']}"),
        r#"a {"app":"web","k8s.io/x":"1"}"#
    );
    assert_eq!(
        render(r#"{.items[?(@.status.phase=="a,b")].metadata.name}"#),
        ""
    );
    // Missing fields print nothing.
    assert_eq!(render("{.items[*].metadata.nope}"), "");
    assert_eq!(render("{.items[7]}"), "");
    assert_eq!(
        render("kind={.kind} n={.items[1].metadata.name}"),
        "kind=List n=b"
    );
}

#[test]
fn filters_and_ranges_and_literals() {
    assert_eq!(
        render(r#"{.items[?(@.status.phase=="Running")].metadata.name}"#),
        "a"
    );
    assert_eq!(render("{.items[?(@.spec.replicas>1)].metadata.name}"), "a");
    assert_eq!(render("{.items[?(@.spec.replicas<=1)].metadata.name}"), "b");
    assert_eq!(render("{.items[?(@.metadata.labels)].metadata.name}"), "a");
    assert_eq!(
        render("{.items[?(@.status.phase!='Running')].metadata.name}"),
        "b"
    );
    assert_eq!(
        render(r#"{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}"#),
        "a\tRunning\nb\tPending\n"
    );
    assert_eq!(
        render(r#"{range .items[*]}[{range .spec.containers[*]}{.name},{end}]{end}"#),
        "[c1,c2,][c3,]"
    );
    assert_eq!(render(r#"{"}"}{.kind}"#), "}List");
}

#[test]
fn relaxed_paths_and_values() {
    let t = Template::parse_relaxed("metadata.name").unwrap();
    assert_eq!(t.render(&list()["items"][0]), "a");
    let t = Template::parse_relaxed(".spec.containers[*].image").unwrap();
    let v: Vec<String> = t
        .values(&list()["items"][0])
        .into_iter()
        .map(scalar)
        .collect();
    assert_eq!(v, ["nginx", "redis"]);
    let t = Template::parse_relaxed("{.spec.replicas}").unwrap();
    assert_eq!(t.values(&list()["items"][1]), [&json!(1)]);
}

#[test]
fn bad_templates_are_named_errors() {
    let e = |t: &str| Template::parse(t).unwrap_err().to_string();
    assert_eq!(
        e("{.metadata.name"),
        "error parsing jsonpath {.metadata.name: unclosed action"
    );
    assert_eq!(
        e("{range .items[*]}{.a}"),
        "error parsing jsonpath {range .items[*]}{.a}: unclosed range (no {end})"
    );
    assert_eq!(
        e("{end}"),
        "error parsing jsonpath {end}: not in range, nothing to end"
    );
    assert!(e("{.items[abc]}").contains("invalid array index \"abc\""));
    assert!(
        e("{.items[0}").contains("unclosed action")
            || e("{.items[0}").contains("unterminated array")
    );
    assert!(e("{.a b}").contains("unrecognized character"));
    assert!(e("{}").contains("empty action"));
    assert!(e(r#"{.items[?(@.a==x)]}"#).contains("invalid value"));
}

#[test]
fn sorting_numbers_strings_and_missing() {
    use std::cmp::Ordering;
    assert_eq!(
        sort_order(Some(&json!(2)), Some(&json!(10))),
        Ordering::Less
    );
    assert_eq!(
        sort_order(Some(&json!("b")), Some(&json!("a"))),
        Ordering::Greater
    );
    assert_eq!(sort_order(None, Some(&json!("a"))), Ordering::Less);
    let q = |a: &str, b: &str| sort_order(Some(&json!(a)), Some(&json!(b)));
    assert_eq!(q("10", "2"), Ordering::Greater);
    assert_eq!(q("100m", "1"), Ordering::Less);
    assert_eq!(q("1Gi", "512Mi"), Ordering::Greater);
    assert_eq!(q("web-10", "web-9"), Ordering::Greater);
    assert_eq!(q("web-a", "web-b"), Ordering::Less);
    assert_eq!(
        q("2026-01-02T00:00:00Z", "2026-01-10T00:00:00Z"),
        Ordering::Less
    );
}
