//! The steps of the suite, in the order they run.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Ctx, Process, Res, wait_for};
use crate::fail;

type Step = for<'a> fn(&'a mut Ctx) -> Pin<Box<dyn Future<Output = Res> + 'a>>;

macro_rules! steps {
    ($($name:ident),+ $(,)?) => {
        pub const ALL: &[(&str, Step)] = &[$((stringify!($name), |ctx| Box::pin($name(ctx)))),+];
    };
}

steps!(
    helm_lint_passes_and_helm_template_is_install_yaml,
    helm_install_and_uninstall_succeed_on_the_real_server,
    install_yaml_applies_server_side_and_the_crds_become_established,
    the_operator_runs_as_its_own_service_account,
    the_original_example_core_becomes_ready_and_owns_its_children,
    the_original_example_runners_become_ready_and_own_their_children,
    a_spec_change_is_applied_in_place,
    serve_follows_runners_and_their_secrets_as_its_own_service_account,
    keda_scales_a_runner_from_zero_and_back_on_serves_push,
    the_aggregator_serves_a_runners_demand_through_the_apiservice_the_core_registered,
    what_onboard_prints_applies_as_it_is_and_serve_picks_the_runner_up,
    an_organisation_runner_onboarded_with_org_registers_at_its_organisation_and_counts_its_repositories,
    an_ephemeral_runners_pod_gets_a_jit_configuration_through_a_real_token_review_and_no_one_else_does,
    prometheus_scrapes_serve_and_the_operator_and_finds_every_documented_series,
    the_operator_was_never_forbidden,
    an_idle_operator_makes_no_writes,
    deleting_a_runner_removes_its_children,
    deleting_the_core_removes_everything_it_made,
);

const OPERATOR_NAMESPACE: &str = "github-action-autoscaler";
const OPERATOR_ACCOUNT: &str = "github-action-autoscaler-operator";
const SETTLE: Duration = Duration::from_secs(60);

fn documents(yaml: &str) -> Res<Vec<Value>> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml)?;
    let mut documents: Vec<Value> = documents.into_iter().filter(|d| !d.is_null()).collect();
    documents.sort_by_key(|d| {
        (d["kind"].to_string(), d["metadata"]["namespace"].to_string(), d["metadata"]["name"].to_string())
    });
    Ok(documents)
}

async fn helm_lint_passes_and_helm_template_is_install_yaml(ctx: &mut Ctx) -> Res {
    let chart = ctx.path("deploy/chart");
    let chart = chart.to_str().ok_or("chart path")?;
    let lint = crate::cluster::run("helm", &["lint", "--strict", chart], None)?;
    if !lint.contains("0 chart(s) failed") {
        fail!("helm lint: {lint}");
    }
    let rendered = crate::cluster::run("helm", &["template", "gaa", chart, "--include-crds"], None)?;
    let install = std::fs::read_to_string(ctx.path("deploy/install.yaml"))?;
    let (rendered, install) = (documents(&rendered)?, documents(&install)?);
    if rendered.len() != install.len() {
        fail!("helm template renders {} objects, install.yaml holds {}", rendered.len(), install.len());
    }
    for (from_helm, from_install) in rendered.iter().zip(&install) {
        if from_helm != from_install {
            fail!("helm template and install.yaml differ:\n{from_helm}\n{from_install}");
        }
    }
    Ok(())
}

async fn helm_install_and_uninstall_succeed_on_the_real_server(ctx: &mut Ctx) -> Res {
    let chart = ctx.path("deploy/chart");
    let chart = chart.to_str().ok_or("chart path")?;
    crate::cluster::run("helm", &["install", "gaa", chart, "-n", "default"], None)?;
    let status = crate::cluster::run("helm", &["status", "gaa", "-n", "default", "-o", "json"], None)?;
    let status: Value = serde_json::from_str(&status)?;
    if status["info"]["status"] != "deployed" {
        fail!("helm status: {}", status["info"]);
    }
    ctx.kubectl(&["-n", OPERATOR_NAMESPACE, "get", "deployment/github-action-autoscaler-operator"])?;
    crate::cluster::run("helm", &["uninstall", "gaa", "-n", "default", "--wait", "--timeout", "2m"], None)?;
    let namespace = OPERATOR_NAMESPACE.to_string();
    wait_for("the chart's namespace to be gone", Duration::from_secs(120), || {
        let found =
            crate::cluster::run("kubectl", &["get", "ns", &namespace, "--ignore-not-found", "-o", "name"], None);
        async move { Ok(found?.trim().is_empty()) }
    })
    .await?;
    Ok(())
}

async fn install_yaml_applies_server_side_and_the_crds_become_established(ctx: &mut Ctx) -> Res {
    let install = ctx.path("deploy/install.yaml");
    ctx.kubectl(&["apply", "--server-side", "-f", install.to_str().ok_or("path")?])?;
    ctx.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/scaledactionrunners.runner.devjoes.com",
        "crd/scaledactionrunnercore.runner.devjoes.com",
    ])?;
    Ok(())
}

async fn the_operator_runs_as_its_own_service_account(ctx: &mut Ctx) -> Res {
    let kubeconfig = ctx.service_account_kubeconfig(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let log = ctx.work.path().join("operator.log");
    let kubeconfig = kubeconfig.to_str().ok_or("path")?.to_owned();
    let mut operator = Process::start(
        &ctx.bin,
        &["operator", "--listen", &listen],
        &[("KUBECONFIG", &kubeconfig), ("GAA_LOG", "gaa=debug,info")],
        log,
    )?;
    wait_answering(&operator, &format!("http://{listen}/healthz"), "the operator's /healthz").await?;
    if !operator.is_running() {
        fail!("the operator exited:\n{}", operator.log());
    }
    ctx.operator = Some(operator);
    ctx.operator_listen = listen;
    Ok(())
}

/// Waits for `url` to answer 2xx; the error carries `process`'s log.
async fn wait_answering(process: &Process, url: &str, what: &str) -> Res {
    let answered = wait_for(what, Duration::from_secs(30), || {
        let url = url.to_owned();
        async move { Ok(reqwest::get(url).await.is_ok_and(|r| r.status().is_success())) }
    })
    .await;
    if let Err(e) = answered {
        fail!("{e}\n{}", process.log());
    }
    Ok(())
}

/// Posts a `workflow_job` delivery for `repo` signed with `secret` to `serve` on `listen`.
async fn deliver_signed(listen: &str, secret: &str, repo: &str, job: u64, action: &str) -> Res {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let body = serde_json::json!({
        "action": action,
        "workflow_job": {"id": job, "run_id": job, "run_attempt": 1, "status": action, "labels": ["self-hosted", "linux"],
                         "created_at": now, "started_at": now},
        "repository": {"id": 4242, "full_name": repo},
    })
    .to_string();
    let signature = gaa::webhook::signature::sign(secret.as_bytes(), body.as_bytes());
    let response = reqwest::Client::new()
        .post(format!("http://{listen}/webhook"))
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_job")
        .header("x-github-delivery", format!("e2e-{repo}-{job}-{action}"))
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await?;
    if !response.status().is_success() {
        fail!("delivery {job} {action} for {repo}: {}", response.status());
    }
    Ok(())
}

/// `serve` out of cluster as the core runs it in one: with a token of the ServiceAccount the
/// core made for it (`metrics` in `github`), its data in `dir`, reads open on its plain listener,
/// GitHub at `github`. Returns once it is ready (runners and their Secrets loaded).
async fn serve_as_the_core_runs_it(ctx: &Ctx, dir: &std::path::Path, github: &str) -> Res<(Process, String)> {
    let kubeconfig = ctx.service_account_kubeconfig("github", "metrics")?;
    let kubeconfig = kubeconfig.to_str().ok_or("path")?.to_owned();
    std::fs::create_dir_all(dir)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let data = dir.join("serve-data").display().to_string();
    let args =
        ["serve", "--listen", &listen, "--data-dir", &data, "--unauthenticated-reads", "--github-api-url", github];
    let serve = Process::start(&ctx.bin, &args, &[("KUBECONFIG", &kubeconfig)], dir.join("serve.log"))?;
    wait_answering(&serve, &format!("http://{listen}/readyz"), "serve's /readyz (runners and their Secrets loaded)")
        .await?;
    Ok((serve, listen))
}

/// `serve` as the core runs it, as the ServiceAccount the core made for it: mutual TLS on
/// `tls_listen` with the certificate the suite made for `metrics.github.svc`, trusting client
/// certificates of `client_cas` (files beside it), plus `extra` arguments; its data and log are
/// named `name`. Returns once it is ready, with its plain listener's address.
async fn serve_with_tls(
    ctx: &Ctx,
    name: &str,
    tls_listen: &str,
    client_cas: &[&str],
    extra: &[&str],
) -> Res<(Process, String)> {
    let kubeconfig = ctx.service_account_kubeconfig("github", "metrics")?;
    let kubeconfig = kubeconfig.to_str().ok_or("path")?.to_owned();
    let tls = ctx.work.path().join("tls");
    let file = |name: &str| tls.join(name).display().to_string();
    let listen = format!("127.0.0.1:{}", free_port()?);
    let data = ctx.work.path().join(format!("{name}-data")).display().to_string();
    let (cert, key) = (file("tls.crt"), file("tls.key"));
    let mut args = vec!["serve", "--listen", &listen, "--data-dir", &data, "--tls-listen", tls_listen];
    args.extend(["--tls-cert", &cert, "--tls-key", &key, "--github-api-url", "http://127.0.0.1:9"]);
    let cas: Vec<String> = client_cas.iter().map(|ca| file(ca)).collect();
    for ca in &cas {
        args.extend(["--client-ca", ca.as_str()]);
    }
    args.extend_from_slice(extra);
    let log = ctx.work.path().join(format!("{name}.log"));
    let serve = Process::start(&ctx.bin, &args, &[("KUBECONFIG", &kubeconfig)], log)?;
    wait_answering(&serve, &format!("http://{listen}/readyz"), "serve's /readyz").await?;
    Ok((serve, listen))
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A certificate Secret as cert-manager writes it: `tls.crt`, `tls.key` and `ca.crt`; the same
/// files are left in `dir` for `serve`.
fn certificate_secret(namespace: &str, name: &str, dns: &[&str], dir: &std::path::Path) -> Res<String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let mut params = CertificateParams::new(Vec::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "e2e ca");
    let ca_key = KeyPair::generate()?;
    let ca = params.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(params, ca_key);
    let mut leaf = CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?.pem();
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.crt"), &ca)?;
    std::fs::write(dir.join("tls.crt"), &cert)?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": {"tls.crt": cert, "tls.key": key.serialize_pem(), "ca.crt": ca},
    });
    Ok(secret.to_string())
}

fn get_json(ctx: &Ctx, args: &[&str]) -> Res<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    Ok(serde_json::from_str(&ctx.kubectl(&all)?)?)
}

fn ready(object: &Value) -> bool {
    object["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn condition_text(object: &Value) -> String {
    object["status"]["conditions"].to_string()
}

async fn wait_ready(ctx: &Ctx, what: &[&str]) -> Res {
    let last = std::cell::RefCell::new(Value::Null);
    let waited = wait_for(&format!("{} Ready=True", what.join(" ")), Duration::from_secs(90), || {
        let object = get_json(ctx, what);
        let ready = object.as_ref().map(ready).unwrap_or(false);
        if let Ok(object) = object {
            *last.borrow_mut() = object;
        }
        async move { Ok(ready) }
    })
    .await;
    if let Err(e) = waited {
        fail!("{e}; conditions: {}", condition_text(&last.borrow()));
    }
    Ok(())
}

/// Objects of `kinds` in `namespace` whose controller owner is `owner_uid`, as `kind/name`.
fn owned(ctx: &Ctx, kinds: &str, namespace: Option<&str>, owner_uid: &str) -> Res<Vec<String>> {
    let mut args = vec![kinds];
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let list = get_json(ctx, &args)?;
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| {
            item["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == owner_uid))
        })
        .map(|item| {
            format!("{}/{}", item["kind"].as_str().unwrap_or("?"), item["metadata"]["name"].as_str().unwrap_or("?"))
        })
        .collect();
    names.sort();
    Ok(names)
}

/// What a kubelet (and the scheduler) would do for the pods of Deployment `name`: bind them to
/// a node of the suite's and report them running and ready. There is no kubelet here, so pods
/// stay Pending otherwise; the controllers above them (ReplicaSet, Deployment) and the operator
/// are the real ones.
/// Reports the suite's node ready, as its kubelet would every few seconds (the node lifecycle
/// controller marks a silent node's pods not ready).
fn node_heartbeat(since: &str) -> Res {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ready = serde_json::json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": since}
    ]}});
    crate::cluster::run(
        "kubectl",
        &["patch", "node", "e2e-node", "--subresource=status", "--type=merge", "-p", &ready.to_string()],
        None,
    )?;
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "e2e-node", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "e2e-node", "leaseDurationSeconds": 40,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
    });
    crate::cluster::run(
        "kubectl",
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&lease.to_string()),
    )?;
    Ok(())
}

async fn run_pods_as_a_kubelet_would(ctx: &mut Ctx, namespace: &str, name: &str) -> Res {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    ctx.apply("apiVersion: v1\nkind: Node\nmetadata: {name: e2e-node}\n")?;
    node_heartbeat(&now)?;
    if ctx.heartbeat.is_none() {
        let since = now.clone();
        ctx.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let since = since.clone();
                let _ = tokio::task::spawn_blocking(move || node_heartbeat(&since)).await;
            }
        }));
    }
    let deployment = get_json(ctx, &["-n", namespace, "deployment", name])?;
    let selector: Vec<String> = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .ok_or("the Deployment has no matchLabels")?
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    let selector = selector.join(",");
    let wanted = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
    wait_for("the Deployment's pods to be created", Duration::from_secs(60), || {
        let pods = get_json(ctx, &["-n", namespace, "pods", "-l", &selector]);
        async move { Ok(pods?["items"].as_array().map_or(0, Vec::len) >= wanted) }
    })
    .await?;
    let pods = get_json(ctx, &["-n", namespace, "pods", "-l", &selector])?;
    for pod in pods["items"].as_array().into_iter().flatten() {
        let pod_name = pod["metadata"]["name"].as_str().ok_or("pod name")?;
        if pod["spec"]["nodeName"].is_null() {
            let binding = serde_json::json!({
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod_name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": "e2e-node"},
            });
            // A pod bound since it was listed is bound; anything else is an error.
            if let Err(e) = crate::cluster::run("kubectl", &["create", "-f", "-"], Some(&binding.to_string()))
                && !e.to_string().contains("already assigned")
            {
                return Err(e);
            }
        }
        let containers: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                serde_json::json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true,
                "restartCount": 0, "started": true, "state": {"running": {"startedAt": now}}})
            })
            .collect();
        let status = serde_json::json!({"status": {
            "phase": "Running", "startTime": now, "podIP": "10.244.0.10", "hostIP": "127.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": containers,
        }});
        ctx.kubectl(&[
            "-n",
            namespace,
            "patch",
            "pod",
            pod_name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])?;
    }
    Ok(())
}

async fn the_original_example_core_becomes_ready_and_owns_its_children(ctx: &mut Ctx) -> Res {
    // The example names a Prometheus namespace: the cluster has the Prometheus operator's
    // ServiceMonitor CRD, as a cluster that uses it would.
    let crd = std::env::var("GAA_E2E_SERVICEMONITOR_CRD")
        .map_err(|_| "GAA_E2E_SERVICEMONITOR_CRD names no ServiceMonitor CRD (scripts/e2e.sh sets it)")?;
    ctx.kubectl(&["apply", "--server-side", "-f", &crd])?;
    ctx.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
    ])?;
    ctx.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: github}\n")?;
    let tls = ctx.work.path().join("tls");
    let secret = certificate_secret("github", "tls-cert", &["metrics.github.svc", "localhost"], &tls)?;
    ctx.apply(&secret)?;
    // KEDA presents the same certificate, from a Secret of the same name in its own namespace.
    ctx.apply(&secret.replace("\"namespace\":\"github\"", "\"namespace\":\"keda\""))?;
    let core = ctx.path("fixtures/original/core-example.yaml");
    ctx.kubectl(&["apply", "--server-side", "-f", core.to_str().ok_or("path")?])?;
    wait_for("the core's API server Deployment", Duration::from_secs(60), || async {
        Ok(!gone(ctx, &["-n", "github", "deployment", "metrics"]).await?)
    })
    .await?;
    run_pods_as_a_kubelet_would(ctx, "github", "metrics").await?;
    wait_ready(ctx, &["scaledactionrunnercore", "core"]).await?;
    let core = get_json(ctx, &["scaledactionrunnercore", "core"])?;
    let uid = core["metadata"]["uid"].as_str().ok_or("core uid")?.to_owned();
    let in_namespace =
        owned(ctx, "deployments,services,serviceaccounts,statefulsets,roles,rolebindings", Some("github"), &uid)?;
    for wanted in ["Deployment/metrics", "Service/metrics", "ServiceAccount/metrics"] {
        if !in_namespace.contains(&wanted.to_string()) {
            fail!("the core owns no {wanted} in github: it owns {in_namespace:?}");
        }
    }
    let cluster_wide = owned(ctx, "apiservices,clusterroles,clusterrolebindings", None, &uid)?;
    if !cluster_wide.iter().any(|o| o.starts_with("APIService/")) {
        fail!("the core owns no APIService: it owns {cluster_wide:?}");
    }
    println!("  the core owns {in_namespace:?} and {cluster_wide:?}");
    Ok(())
}

/// The original example runners, each in its namespace, with the Secrets they name.
const RUNNER_FIXTURES: [&str; 2] =
    ["fixtures/original/runner-add-runner.yaml", "fixtures/original/runner-readme-spellings.yaml"];

async fn the_original_example_runners_become_ready_and_own_their_children(ctx: &mut Ctx) -> Res {
    ctx.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: example-repo}\n")?;
    let mut secrets = String::new();
    for name in ["example-repo", "example-repo-0", "example-repo-1", "example-repo-2", "example-repo-3"] {
        secrets.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: example-repo}}\nstringData: {{token: not-a-real-token, RUNNER_NAME: {name}}}\n"
        ));
    }
    ctx.apply(&secrets)?;
    for fixture in RUNNER_FIXTURES {
        let path = ctx.path(fixture);
        ctx.kubectl(&["apply", "--server-side", "-f", path.to_str().ok_or("path")?])?;
    }
    wait_ready(ctx, &["-n", "example-repo", "scaledactionrunner", "example-repo"]).await?;
    let runner = get_json(ctx, &["-n", "example-repo", "scaledactionrunner", "example-repo"])?;
    let uid = runner["metadata"]["uid"].as_str().ok_or("runner uid")?.to_owned();
    let children = owned(ctx, "statefulsets,scaledobjects.keda.sh,roles,rolebindings", Some("example-repo"), &uid)?;
    for wanted in ["StatefulSet/example-repo", "ScaledObject/example-repo"] {
        if !children.contains(&wanted.to_string()) {
            fail!("the runner owns no {wanted}: it owns {children:?}");
        }
    }
    println!("  example-repo owns {children:?}");
    Ok(())
}

async fn a_spec_change_is_applied_in_place(ctx: &mut Ctx) -> Res {
    let what = ["-n", "example-repo", "scaledactionrunner", "example-repo"];
    let before = get_json(ctx, &what)?;
    let statefulset = get_json(ctx, &["-n", "example-repo", "statefulset", "example-repo"])?;
    ctx.kubectl(&[
        "-n",
        "example-repo",
        "patch",
        "scaledactionrunner",
        "example-repo",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxRunners":3}}"#,
    ])?;
    let generation = before["metadata"]["generation"].as_i64().ok_or("generation")? + 1;
    wait_for("observedGeneration to follow the change", Duration::from_secs(60), || {
        let runner = get_json(ctx, &what);
        async move { Ok(runner?["status"]["observedGeneration"].as_i64() == Some(generation)) }
    })
    .await?;
    let scaled = get_json(ctx, &["-n", "example-repo", "scaledobject.keda.sh", "example-repo"])?;
    if scaled["spec"]["maxReplicaCount"] != 3 {
        fail!("the ScaledObject did not take maxRunners 3: {}", scaled["spec"]);
    }
    let after = get_json(ctx, &["-n", "example-repo", "statefulset", "example-repo"])?;
    if after["metadata"]["uid"] != statefulset["metadata"]["uid"] {
        fail!("the StatefulSet was recreated instead of changed in place");
    }
    Ok(())
}

/// A runner of our own in `example-repo`, with `max` runners.
fn probe_runner(max: u32) -> String {
    format!(
        "apiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {{name: e2e-probe, namespace: example-repo}}\n\
         spec: {{owner: devjoes, repo: e2e-probe, maxRunners: {max}, githubTokenSecret: example-repo, runner: {{runnerLabels: linux}}}}\n"
    )
}

/// Polls `serve`'s read API for the probe runner until `seen` holds of (status, body).
async fn until_serve_shows(url: &str, what: &str, seen: impl Fn(u16, &Value) -> bool) -> Res<Duration> {
    let client = reqwest::Client::new();
    wait_for(what, Duration::from_secs(10), || {
        let request = client.get(url).send();
        let seen = &seen;
        async move {
            let response = request.await?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            Ok(seen(status, &body))
        }
    })
    .await
}

async fn serve_follows_runners_and_their_secrets_as_its_own_service_account(ctx: &mut Ctx) -> Res {
    // A GitHub API nobody listens on: this suite never talks to GitHub.
    let dir = ctx.work.path().join("serve");
    let (serve, listen) = serve_as_the_core_runs_it(ctx, &dir, "http://127.0.0.1:9").await?;
    let url = format!("http://{listen}/api/v1/namespaces/example-repo/scaledactionrunners/e2e-probe");
    ctx.apply(&probe_runner(2))?;
    let created = until_serve_shows(&url, "a created runner served", |status, _| status == 200).await?;
    ctx.apply(&probe_runner(5))?;
    let changed = until_serve_shows(&url, "a changed runner served", |_, body| body["maxRunners"] == 5).await?;
    ctx.kubectl(&["-n", "example-repo", "delete", "scaledactionrunner", "e2e-probe"])?;
    let deleted = until_serve_shows(&url, "a deleted runner gone", |status, _| status == 404).await?;
    println!("  runner changes reached serve in: created {created:?}, changed {changed:?}, deleted {deleted:?}");
    let slowest = created.max(changed).max(deleted);
    if slowest > Duration::from_secs(2) {
        fail!("a runner change took {slowest:?} to reach serve");
    }
    let account = "system:serviceaccount:github:metrics";
    let can = |what: &str| ctx.kubectl(&["auth", "can-i", "get", what, "-n", "example-repo", "--as", account]);
    if can("secret/example-repo").map(|a| a.trim().to_owned()).ok().as_deref() != Some("yes") {
        fail!("serve's ServiceAccount cannot read the token Secret a runner names");
    }
    // kubectl answers "no" with exit status 1.
    if can("secret/example-repo-0").is_ok() || can("secrets").is_ok() {
        fail!("serve's ServiceAccount can read Secrets no runner names for it");
    }
    let log = serve.log();
    if let Some(line) = log.lines().find(|l| l.to_ascii_lowercase().contains("forbidden")) {
        fail!("serve was refused by RBAC: {line}");
    }
    Ok(())
}

const HOSTS_MARK: &str = "# github-action-autoscaler e2e";

/// Points the API server's Service name at loopback, where `serve` runs, for KEDA out of cluster.
fn resolve_service_name_to_loopback(name: &str) -> Res {
    let hosts = std::fs::read_to_string("/etc/hosts")?;
    if !hosts.lines().any(|l| l.contains(HOSTS_MARK) && l.split_whitespace().nth(1) == Some(name)) {
        let mut hosts = hosts;
        if !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        hosts.push_str(&format!("127.0.0.1 {name} {HOSTS_MARK}\n"));
        std::fs::write("/etc/hosts", hosts).map_err(|e| format!("writing /etc/hosts (the suite runs as root): {e}"))?;
    }
    Ok(())
}

pub fn forget_service_names() {
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        let kept: String = hosts.lines().filter(|l| !l.contains(HOSTS_MARK)).map(|l| format!("{l}\n")).collect();
        let _ = std::fs::write("/etc/hosts", kept);
    }
}

fn flip_runner() -> &'static str {
    r#"apiVersion: v1
kind: Secret
metadata: {name: keda-flip-hook, namespace: example-repo}
stringData: {webhook-secret: keda-flip-secret}
---
apiVersion: runner.devjoes.com/v1alpha1
kind: ScaledActionRunner
metadata: {name: keda-flip, namespace: example-repo}
spec:
  owner: devjoes
  repo: keda-flip
  maxRunners: 2
  webhookSecret: keda-flip-hook
  runnerSecrets: [example-repo-0, example-repo-1]
  runner: {runnerLabels: linux}
  scaling: {cooldownPeriod: 1, pollingInterval: 1, trigger: externalPush}
"#
}

fn replicas(ctx: &Ctx) -> Res<i64> {
    let statefulset = get_json(ctx, &["-n", "example-repo", "statefulset", "keda-flip"])?;
    statefulset["spec"]["replicas"].as_i64().ok_or_else(|| "the StatefulSet has no spec.replicas".into())
}

async fn keda_scales_a_runner_from_zero_and_back_on_serves_push(ctx: &mut Ctx) -> Res {
    resolve_service_name_to_loopback("metrics.github.svc")?;
    ctx.apply(flip_runner())?;
    wait_ready(ctx, &["-n", "example-repo", "scaledactionrunner", "keda-flip"]).await?;
    // serve as the core runs it: mutual TLS on 8443, gRPC on 9090, as its own ServiceAccount.
    let (serve, listen) =
        serve_with_tls(ctx, "keda-serve", "127.0.0.1:8443", &["ca.crt"], &["--grpc-listen", "127.0.0.1:9090"]).await?;
    let what = ["-n", "example-repo", "scaledobject.keda.sh", "keda-flip"];
    let keda_ready = wait_for("KEDA to make the ScaledObject Ready", Duration::from_secs(90), || {
        let object = get_json(ctx, &what);
        async move { Ok(ready(&object?)) }
    })
    .await;
    if let Err(e) = keda_ready {
        let object = get_json(ctx, &what).unwrap_or_default();
        fail!("{e}: {}\n{}", object["status"], serve.log());
    }
    let mut flips = Vec::new();
    for round in 0..10u64 {
        let job = 1_000 + round;
        let sent = std::time::Instant::now();
        deliver_signed(&listen, "keda-flip-secret", "devjoes/keda-flip", job, "queued").await?;
        wait_for("KEDA to scale the runners from 0 to 1", Duration::from_secs(30), || {
            let replicas = replicas(ctx);
            async move { Ok(replicas? == 1) }
        })
        .await
        .map_err(|e| format!("round {round}: {e}\n{}", serve.log()))?;
        flips.push(sent.elapsed());
        if round == 0 {
            // Our operator reconciling the runner must leave the replicas KEDA set alone.
            ctx.kubectl(&[
                "-n",
                "example-repo",
                "annotate",
                "--overwrite",
                "scaledactionrunner",
                "keda-flip",
                "e2e/touched=1",
            ])?;
            ctx.kubectl(&[
                "-n",
                "example-repo",
                "patch",
                "scaledactionrunner",
                "keda-flip",
                "--type=merge",
                "-p",
                r#"{"spec":{"maxRunners":3}}"#,
            ])?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            if replicas(ctx)? != 1 {
                fail!("the operator's reconcile reset the replicas KEDA set");
            }
        }
        deliver_signed(&listen, "keda-flip-secret", "devjoes/keda-flip", job, "completed").await?;
        wait_for("KEDA to scale the runners back to 0 after the cooldown", Duration::from_secs(60), || {
            let replicas = replicas(ctx);
            async move { Ok(replicas? == 0) }
        })
        .await?;
    }
    flips.sort();
    let p50 = flips[flips.len() / 2];
    let p99 = flips[flips.len() - 1];
    println!("  webhook to replicas=1 through KEDA over {} flips: p50 {p50:?}, p99 {p99:?} (max)", flips.len());
    Ok(())
}

/// The custom metrics API through the real aggregator: kube-apiserver proxies
/// `/apis/custom.metrics.k8s.io/…` to the Service the APIService names, on its ClusterIP, and
/// authenticates with its front-proxy client certificate. `scripts/dev-cluster` draws ClusterIPs
/// from 127.96.0.0/16, so loopback plays kube-proxy's part: `serve` listens on the ClusterIP.
async fn the_aggregator_serves_a_runners_demand_through_the_apiservice_the_core_registered(ctx: &mut Ctx) -> Res {
    let service = get_json(ctx, &["-n", "github", "service", "metrics"])?;
    let cluster_ip = service["spec"]["clusterIP"].as_str().ok_or("the metrics Service has no clusterIP")?.to_owned();
    if !cluster_ip.starts_with("127.") {
        fail!("the metrics Service's ClusterIP {cluster_ip} is not on loopback: the cluster's service range must be");
    }
    let api_service = get_json(ctx, &["apiservice", "v1beta1.custom.metrics.k8s.io"])?;
    let port = api_service["spec"]["service"]["port"].as_u64().ok_or("the APIService names no service port")?;
    if api_service["spec"]["caBundle"].as_str().is_none_or(str::is_empty) {
        fail!("the APIService carries no caBundle: {}", api_service["spec"]);
    }
    // The aggregator's client CA, as the core publishes it for serve's pod to mount.
    let published = get_json(ctx, &["-n", "github", "configmap", "metrics-front-proxy-ca"])?;
    let front_proxy_ca = published["data"]["ca.crt"].as_str().ok_or("the core published no front-proxy CA")?;
    let tls = ctx.work.path().join("tls");
    std::fs::write(tls.join("front-proxy-ca.crt"), front_proxy_ca)?;
    let tls_listen = format!("{cluster_ip}:{port}");
    let (serve, listen) =
        serve_with_tls(ctx, "aggregated-serve", &tls_listen, &["ca.crt", "front-proxy-ca.crt"], &[]).await?;
    let available = wait_for("the aggregator to find the APIService Available", Duration::from_secs(90), || {
        let object = get_json(ctx, &["apiservice", "v1beta1.custom.metrics.k8s.io"]);
        async move {
            let object = object?;
            Ok(object["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Available" && c["status"] == "True"))
        }
    })
    .await;
    if let Err(e) = available {
        let object = get_json(ctx, &["apiservice", "v1beta1.custom.metrics.k8s.io"]).unwrap_or_default();
        fail!("{e}: {}\n{}", object["status"], serve.log());
    }
    let path = "/apis/custom.metrics.k8s.io/v1beta1/namespaces/example-repo/scaledactionrunners.runner.devjoes.com/keda-flip/demand";
    let demand = |ctx: &Ctx| -> Res<String> {
        let list: Value = serde_json::from_str(&ctx.kubectl(&["get", "--raw", path])?)?;
        let value = &list["items"][0]["value"];
        value.as_str().map(str::to_owned).ok_or_else(|| format!("no demand in {list}").into())
    };
    let before = demand(ctx)?;
    if before != "0" {
        fail!("an idle runner's demand through the aggregator is {before}, not 0");
    }
    deliver_signed(&listen, "keda-flip-secret", "devjoes/keda-flip", 2_000, "queued").await?;
    let seen = wait_for("the queued job's demand through the aggregator", Duration::from_secs(10), || {
        let value = demand(ctx);
        async move { Ok(value? == "1") }
    })
    .await?;
    println!("  demand 1 read through the aggregator {seen:?} after the signed delivery");
    // Anyone the aggregator did not vouch for is refused at the TLS handshake.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stranger = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(tls.join("ca.crt"))?)?)
        .resolve("metrics.github.svc", tls_listen.parse()?)
        .build()?
        .get(format!("https://metrics.github.svc:{port}{path}"))
        .send()
        .await;
    if let Ok(response) = stranger {
        fail!("a client without a certificate read the custom metrics API: {}", response.status());
    }
    deliver_signed(&listen, "keda-flip-secret", "devjoes/keda-flip", 2_000, "completed").await?;
    wait_for("the completed job's demand through the aggregator", Duration::from_secs(10), || {
        let value = demand(ctx);
        async move { Ok(value? == "0") }
    })
    .await?;
    Ok(())
}

/// The webhook secret in what `onboard` printed (in `stringData` or base64 in `data`).
fn webhook_secret_in(yaml: &str) -> Res<String> {
    let secret = documents(yaml)?.into_iter().filter(|d| d["kind"] == "Secret").find_map(|d| {
        let plain = d["stringData"]["webhook-secret"].as_str().map(str::to_owned);
        plain.or_else(|| {
            use base64::Engine as _;
            let encoded = d["data"]["webhook-secret"].as_str()?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
            String::from_utf8(bytes).ok()
        })
    });
    Ok(secret.ok_or_else(|| format!("onboard printed no webhook secret:\n{yaml}"))?)
}

/// What `onboard --dry-run` prints for `target` (the runner's name and what it serves): two
/// runners in `example-repo` labelled `linux`, with read and admin tokens the fake `github`
/// knows (written in `dir`), and a webhook URL.
fn onboard_dry_run(
    ctx: &Ctx,
    github: &crate::common::fake_github::FakeGitHub,
    dir: &std::path::Path,
    target: &[&str],
) -> Res<String> {
    let (admin, read) = ("ghp_E2eAdminToken0123456789", "ghp_E2eReadToken0123456789");
    github.add_token(admin, 5000);
    github.add_token(read, 5000);
    std::fs::create_dir_all(dir)?;
    let (admin_file, read_file) = (dir.join("admin"), dir.join("read"));
    std::fs::write(&admin_file, admin)?;
    std::fs::write(&read_file, read)?;
    let url = github.url();
    let mut args = vec!["onboard", "--dry-run"];
    args.extend_from_slice(target);
    args.extend(["-m", "2", "-l", "linux", "-s", "example-repo"]);
    args.extend(["-p", read_file.to_str().ok_or("path")?, "-a", admin_file.to_str().ok_or("path")?]);
    args.extend(["--github-api-url", &url, "--webhook-url", "https://ci.example.com/webhook"]);
    crate::cluster::run(ctx.bin.to_str().ok_or("path")?, &args, None)
}

async fn what_onboard_prints_applies_as_it_is_and_serve_picks_the_runner_up(ctx: &mut Ctx) -> Res {
    // GitHub is the fake one on loopback: onboarding checks the tokens and the repository.
    let github = crate::common::fake_github::FakeGitHub::start().await;
    github.add_repo("devjoes/onboarded");
    let dir = ctx.work.path().join("onboard");
    let target = ["-n", "onboarded", "-o", "devjoes", "-r", "onboarded"];
    let yaml = onboard_dry_run(ctx, &github, &dir, &target)?;
    ctx.apply(&yaml).map_err(|e| format!("what onboard printed does not apply: {e}"))?;
    let secret = webhook_secret_in(&yaml)?;

    let (serve, listen) = serve_as_the_core_runs_it(ctx, &dir, &github.url()).await?;
    let url = format!("http://{listen}/api/v1/namespaces/example-repo/scaledactionrunners/onboarded");
    until_serve_shows(&url, "serve to pick the onboarded runner up", |status, _| status == 200)
        .await
        .map_err(|e| format!("{e}\n{}", serve.log()))?;
    // Its webhook secret came through its Secret: a delivery signed with it counts. (The Secret
    // may reach serve a moment after the runner, so the delivery is tried until it is taken.)
    let delivered = wait_for("a delivery signed with the onboarded secret", Duration::from_secs(10), || {
        let (listen, secret) = (listen.clone(), secret.clone());
        async move { Ok(deliver_signed(&listen, &secret, "devjoes/onboarded", 77, "queued").await.is_ok()) }
    })
    .await;
    if let Err(e) = delivered {
        fail!("{e}\n{}", serve.log());
    }
    until_serve_shows(&url, "the onboarded runner's demand", |_, body| body["demand"] == 1).await?;
    ctx.kubectl(&["-n", "example-repo", "delete", "scaledactionrunner", "onboarded"])?;
    Ok(())
}

async fn an_organisation_runner_onboarded_with_org_registers_at_its_organisation_and_counts_its_repositories(
    ctx: &mut Ctx,
) -> Res {
    let github = crate::common::fake_github::FakeGitHub::start().await;
    github.add_org("e2eorg");
    let dir = ctx.work.path().join("onboard-org");
    let target = ["-n", "e2eorg-builders", "--org", "e2eorg", "--runner-group", "builders"];
    let yaml = onboard_dry_run(ctx, &github, &dir, &target)?;
    if yaml.contains("repo:") || !yaml.contains("runnerGroup: builders") {
        fail!("onboard --org printed no organisation runner:\n{yaml}");
    }
    ctx.apply(&yaml).map_err(|e| format!("what onboard --org printed does not apply: {e}"))?;
    let what = ["-n", "example-repo", "scaledactionrunner", "e2eorg-builders"];
    wait_ready(ctx, &what).await?;
    let runner = get_json(ctx, &what)?;
    if runner["status"]["scope"] != "organization" {
        fail!("the operator did not report the organisation scope: {}", runner["status"]);
    }
    let columns = ctx.kubectl(&["-n", "example-repo", "get", "scaledactionrunner", "e2eorg-builders", "-o", "wide"])?;
    if !columns.contains("organization") || !columns.contains("builders") {
        fail!("kubectl get shows neither the scope nor the group:\n{columns}");
    }
    let set = get_json(ctx, &["-n", "example-repo", "statefulset", "e2eorg-builders"])?;
    let env: Vec<(String, String)> = set["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .ok_or("the runner container has no environment")?
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .collect();
    let has = |name: &str, value: &str| env.iter().any(|(n, v)| n == name && v == value);
    if !has("ORG_URL", "https://github.com/e2eorg") || !has("RUNNER_GROUP", "builders") {
        fail!("the runner pods would not register at the organisation's group: {env:?}");
    }
    if env.iter().any(|(n, _)| n == "REPO_URL") {
        fail!("an organisation runner's pods got a REPO_URL: {env:?}");
    }
    let secret = webhook_secret_in(&yaml)?;
    let (serve, listen) = serve_as_the_core_runs_it(ctx, &dir, &github.url()).await?;
    let url = format!("http://{listen}/api/v1/namespaces/example-repo/scaledactionrunners/e2eorg-builders");
    until_serve_shows(&url, "serve to show the organisation runner", |status, body| {
        status == 200 && body["scope"] == "organization"
    })
    .await
    .map_err(|e| format!("{e}\n{}", serve.log()))?;
    // The organisation's webhook secret signs for every repository of the organisation.
    for (repo, job) in [("e2eorg/api", 91), ("e2eorg/web", 92)] {
        let delivered = wait_for("a delivery signed with the organisation's secret", Duration::from_secs(10), || {
            let (listen, secret) = (listen.clone(), secret.clone());
            async move { Ok(deliver_signed(&listen, &secret, repo, job, "queued").await.is_ok()) }
        })
        .await;
        if let Err(e) = delivered {
            fail!("{e}\n{}", serve.log());
        }
    }
    until_serve_shows(&url, "the organisation runner's demand from two repositories", |_, body| body["demand"] == 2)
        .await?;
    ctx.kubectl(&["-n", "example-repo", "delete", "scaledactionrunner", "e2eorg-builders"])?;
    Ok(())
}

/// An ephemeral runner of our own in `example-repo`, one pod kept by `minRunners`.
fn ephemeral_runner(name: &str) -> String {
    format!(
        "apiVersion: runner.devjoes.com/v1alpha1\nkind: ScaledActionRunner\nmetadata: {{name: {name}, namespace: example-repo}}\n\
         spec: {{owner: devjoes, repo: jit-probe, minRunners: 1, maxRunners: 2, githubTokenSecret: jit-github,\n\
         runner: {{ephemeral: true, runnerLabels: linux}}}}\n"
    )
}

/// `token` as the cluster would have issued it to expire `expires_in` seconds from now (in the
/// past when negative): its claims with `exp` (and `iat`, `nbf`) moved, signed again with the
/// dev cluster's service-account key (its state directory holds the key beside the admin
/// kubeconfig). The API server issues no token of under ten minutes, so this is how an expired
/// one is had at once.
fn resigned_copy(token: &str, expires_in: i64) -> Res<String> {
    use base64::Engine as _;
    let kubeconfig = std::env::var("KUBECONFIG")?;
    let key = std::path::Path::new(&kubeconfig).parent().ok_or("state directory")?.join("pki/sa.key");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&key)?)?;
    let mut parts = token.split('.');
    let (header, claims) = (parts.next().ok_or("header")?, parts.next().ok_or("claims")?);
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: jsonwebtoken::Header = serde_json::from_slice(&b64.decode(header)?)?;
    let mut claims: Value = serde_json::from_slice(&b64.decode(claims)?)?;
    let now = jiff::Timestamp::now().as_second();
    claims["exp"] = serde_json::json!(now + expires_in);
    claims["iat"] = serde_json::json!(now + expires_in - 600);
    claims["nbf"] = serde_json::json!(now + expires_in - 600);
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// POSTs to serve's jitconfig endpoint of runner `name` with `token`: the status and body.
async fn ask_for_jitconfig(listen: &str, name: &str, token: &str) -> Res<(u16, Value)> {
    let url = format!("http://{listen}/api/v1/namespaces/example-repo/scaledactionrunners/{name}/jitconfig");
    let response = reqwest::Client::new().post(url).bearer_auth(token).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn an_ephemeral_runners_pod_gets_a_jit_configuration_through_a_real_token_review_and_no_one_else_does(
    ctx: &mut Ctx,
) -> Res {
    let github = crate::common::fake_github::FakeGitHub::start().await;
    let token = "ghp_E2eJitRegistrationToken0123";
    github.add_token(token, 5000);
    github.add_repo("devjoes/jit-probe");
    ctx.apply(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: jit-github, namespace: example-repo}}\nstringData: {{token: {token}}}\n"
    ))?;
    ctx.apply(&ephemeral_runner("e2e-jit"))?;
    ctx.apply(&ephemeral_runner("e2e-jit-other"))?;
    wait_ready(ctx, &["-n", "example-repo", "scaledactionrunner", "e2e-jit"]).await?;
    // No kubelet runs them, but the StatefulSet controller makes the pods: objects with uids.
    let mut uids = std::collections::HashMap::new();
    for pod in ["e2e-jit-0", "e2e-jit-other-0"] {
        wait_for(&format!("pod {pod} to exist"), Duration::from_secs(60), || {
            let found = get_json(ctx, &["-n", "example-repo", "pod", pod]).is_ok();
            async move { Ok(found) }
        })
        .await?;
        let object = get_json(ctx, &["-n", "example-repo", "pod", pod])?;
        uids.insert(pod, object["metadata"]["uid"].as_str().ok_or("pod uid")?.to_owned());
        let spec = object["spec"].to_string();
        if spec.contains("secretKeyRef") || spec.contains("\"secret\"") || spec.contains(token) {
            fail!("the ephemeral runner's pod holds a Secret or the GitHub token: {spec}");
        }
    }
    let bound = |pod: &str, audience: Option<&str>| -> Res<String> {
        let uid = uids.get(pod).ok_or("uid")?;
        // The pod's own account: the runner's name (the pod's, without its ordinal) and `-runner`.
        let account = format!("{}-runner", pod.rsplit_once('-').ok_or("ordinal")?.0);
        let mut args = vec!["-n", "example-repo", "create", "token", &account, "--bound-object-kind", "Pod"];
        args.extend(["--bound-object-name", pod, "--bound-object-uid", uid, "--duration", "10m"]);
        if let Some(audience) = audience {
            args.extend(["--audience", audience]);
        }
        Ok(ctx.kubectl(&args)?.trim().to_owned())
    };
    let audience = Some(gaa::jit::AUDIENCE);
    let own = bound("e2e-jit-0", audience)?;
    let others = bound("e2e-jit-other-0", audience)?;
    let kube_audience = bound("e2e-jit-0", None)?;
    let unbound =
        ctx.kubectl(&["-n", "example-repo", "create", "token", "e2e-jit-runner", "--audience", gaa::jit::AUDIENCE])?;
    let dir = ctx.work.path().join("jit");
    let (serve, listen) = serve_as_the_core_runs_it(ctx, &dir, &github.url()).await?;
    // The catalog may reach serve a moment after /readyz: the first answer that is not 404.
    let started = std::time::Instant::now();
    let (answer, took) = loop {
        let asked = std::time::Instant::now();
        let answer = ask_for_jitconfig(&listen, "e2e-jit", &own).await?;
        if answer.0 != 404 || started.elapsed() > Duration::from_secs(10) {
            break (answer, asked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if answer.0 != 200 || !answer.1["encodedJitConfig"].is_string() {
        fail!("runner pod 0's own token got {} {}\n{}", answer.0, answer.1, serve.log());
    }
    println!("  a pod's request to its configuration (TokenReview, pod read, GitHub): {took:?}");
    let runner_name = answer.1["runnerName"].as_str().ok_or("runnerName")?.to_owned();
    let uid_start: String = uids["e2e-jit-0"].chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    if runner_name != format!("e2e-jit-0-{uid_start}") {
        fail!("the registration is not named after the pod: {runner_name}");
    }
    let id = answer.1["runnerId"].as_u64().ok_or("runnerId")?;
    // The runner takes a job: job code with the pod's token cannot register another.
    github.set_runner_busy(id, true);
    let busy = ask_for_jitconfig(&listen, "e2e-jit", &own).await?;
    if busy.0 != 409 {
        fail!("a request while the pod's runner is busy got {} {}", busy.0, busy.1);
    }
    // Re-signed to expire in ten minutes it is the pod's token still (busy: 409); expired, 401.
    let renewed = resigned_copy(&own, 600)?;
    let expired = resigned_copy(&own, -60)?;
    for (what, token, want) in [
        ("the pod's own token, re-signed", renewed.as_str(), 409),
        ("the pod's own token, expired", expired.as_str(), 401),
        ("a token bound to another runner's pod", others.as_str(), 403),
        ("a token for the Kubernetes API's audience", kube_audience.as_str(), 401),
        ("a token bound to no pod", unbound.trim(), 401),
        ("no ServiceAccount token at all", "not.a-token.at-all", 401),
    ] {
        let (status, body) = ask_for_jitconfig(&listen, "e2e-jit", token).await?;
        if status != want {
            fail!("{what}: {status} {body}, wanted {want}\n{}", serve.log());
        }
    }
    let minted = github.jit_configs_minted().len();
    if minted != 1 {
        fail!("{minted} configurations minted; only pod 0's first request should have minted one");
    }
    let log = serve.log();
    if log.contains(token) || log.contains(&own) {
        fail!("serve logged a token:\n{log}");
    }
    for name in ["e2e-jit", "e2e-jit-other"] {
        ctx.kubectl(&["-n", "example-repo", "delete", "scaledactionrunner", name])?;
    }
    Ok(())
}

/// The series the README documents for `serve` in every mode (the paragraph after "Metrics
/// (prefix `gaa_`)", up to the memcached-only ones), without their labels.
fn documented_series(readme: &str) -> Res<Vec<String>> {
    let start = readme.find("Metrics (prefix `gaa_`):").ok_or("the README documents no metrics")?;
    let always = &readme[start..];
    let always = &always
        [..always.find("with\nmemcached:").or_else(|| always.find("with memcached:")).ok_or("no memcached part")?];
    // What stands in parentheses explains a series; it names none.
    let mut depth = 0;
    let always: String = always
        .chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => return depth == 0,
            }
            false
        })
        .collect();
    let series: Vec<String> = always
        .split('`')
        .skip(1) // "Metrics : "
        .step_by(2)
        .map(|name| format!("gaa_{}", name.split('{').next().unwrap_or(name)))
        .collect();
    if series.len() < 8 {
        fail!("read only {series:?} from the README");
    }
    Ok(series)
}

async fn prometheus_scrapes_serve_and_the_operator_and_finds_every_documented_series(ctx: &mut Ctx) -> Res {
    let work = ctx.work.path().join("prometheus");
    std::fs::create_dir_all(&work)?;
    // serve as it runs standalone, its metrics behind a bearer token as KEDA and Prometheus read them.
    let token = work.join("token");
    std::fs::write(&token, "e2e-metrics-token\n")?;
    let serve_listen = format!("127.0.0.1:{}", free_port()?);
    let (manifests, data) = (ctx.path("fixtures/manifests/demo"), work.join("serve-data"));
    let args = [
        "serve",
        "--listen",
        &serve_listen,
        "--manifests",
        manifests.to_str().ok_or("path")?,
        "--data-dir",
        data.to_str().ok_or("path")?,
        "--metrics-token-file",
        token.to_str().ok_or("path")?,
    ];
    let serve = Process::start(&ctx.bin, &args, &[], work.join("serve.log"))?;
    wait_answering(&serve, &format!("http://{serve_listen}/readyz"), "the standalone serve").await?;
    // One delivery, so the labelled delivery counter has a series to scrape.
    deliver_signed(&serve_listen, "demo-webhook-secret", "acme/payments-api", 5, "queued").await?;
    let prometheus_listen = format!("127.0.0.1:{}", free_port()?);
    let config = format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n\
         - job_name: serve\n  authorization: {{credentials_file: {}}}\n  static_configs: [{{targets: ['{serve_listen}']}}]\n\
         - job_name: operator\n  static_configs: [{{targets: ['{}']}}]\n",
        token.display(),
        ctx.operator_listen
    );
    std::fs::write(work.join("prometheus.yml"), config)?;
    let prometheus = Process::start(
        std::path::Path::new("prometheus"),
        &[
            &format!("--config.file={}", work.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", work.join("tsdb").display()),
            &format!("--web.listen-address={prometheus_listen}"),
        ],
        &[],
        work.join("prometheus.log"),
    )?;
    let api = format!("http://{prometheus_listen}/api/v1");
    let targets_up = wait_for("both targets up with no scrape error", Duration::from_secs(60), || {
        let url = format!("{api}/targets");
        async move {
            let targets: Value = reqwest::get(url).await?.json().await?;
            let active = targets["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            Ok(active.len() == 2 && active.iter().all(|t| t["health"] == "up" && t["lastError"] == ""))
        }
    })
    .await;
    if let Err(e) = targets_up {
        let targets = reqwest::get(format!("{api}/targets")).await?.text().await?;
        fail!("{e}: {targets}\n{}", prometheus.log());
    }
    let metadata: Value = reqwest::get(format!("{api}/metadata")).await?.json().await?;
    let mut wanted = documented_series(&std::fs::read_to_string(ctx.path("README.md"))?)?;
    wanted.push("gaa_operator_reconciles_total".into());
    let mut missing = Vec::new();
    for series in &wanted {
        // Prometheus keeps an OpenMetrics counter's metadata under its family name.
        let family = series.strip_suffix("_total").unwrap_or(series);
        let entry = metadata["data"].get(series.as_str()).or_else(|| metadata["data"].get(family));
        let kind = entry.and_then(|e| e[0]["type"].as_str());
        let expected_counter = series.ends_with("_total");
        match kind {
            None | Some("unknown") => missing.push(format!("{series} (no type)")),
            Some(kind) if expected_counter && kind != "counter" => missing.push(format!("{series} is a {kind}")),
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        fail!("documented series Prometheus did not find as documented: {missing:?}");
    }
    println!("  Prometheus found all {} documented series with their types", wanted.len());
    Ok(())
}

async fn the_operator_was_never_forbidden(ctx: &mut Ctx) -> Res {
    let operator = ctx.operator.as_mut().ok_or("the operator is not running")?;
    if !operator.is_running() {
        fail!("the operator exited:\n{}", operator.log());
    }
    let log = operator.log();
    let forbidden: Vec<&str> = log.lines().filter(|l| l.to_ascii_lowercase().contains("forbidden")).collect();
    if !forbidden.is_empty() {
        fail!("the operator was refused by RBAC:\n{}", forbidden.join("\n"));
    }
    Ok(())
}

/// Requests the operator's ServiceAccount made after `since`, read from the audit log: (verb, uri).
fn operator_requests(ctx: &Ctx, since: &str) -> Res<Vec<(String, String)>> {
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}");
    let text = std::fs::read_to_string(ctx.audit_log()).map_err(|e| format!("{}: {e}", ctx.audit_log().display()))?;
    let mut requests = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
        if event["stage"] != "ResponseComplete" || event["user"]["username"] != user.as_str() {
            continue;
        }
        if event["requestReceivedTimestamp"].as_str().is_some_and(|t| t > since) {
            requests.push((
                event["verb"].as_str().unwrap_or("?").to_owned(),
                event["requestURI"].as_str().unwrap_or("?").to_owned(),
            ));
        }
    }
    Ok(requests)
}

async fn an_idle_operator_makes_no_writes(ctx: &mut Ctx) -> Res {
    // Let what the earlier steps changed settle, then count a minute of requests.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let since = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    tokio::time::sleep(SETTLE).await;
    let requests = operator_requests(ctx, &since)?;
    let writes: Vec<&(String, String)> =
        requests.iter().filter(|(verb, _)| !matches!(verb.as_str(), "get" | "list" | "watch")).collect();
    println!("  an idle minute: {} requests by the operator, {} writes", requests.len(), writes.len());
    if !writes.is_empty() {
        fail!("an idle operator wrote: {writes:?}");
    }
    Ok(())
}

async fn gone(ctx: &Ctx, what: &[&str]) -> Res<bool> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["--ignore-not-found", "-o", "name"]);
    Ok(ctx.kubectl(&args)?.trim().is_empty())
}

async fn deleting_a_runner_removes_its_children(ctx: &mut Ctx) -> Res {
    ctx.kubectl(&["-n", "example-repo", "delete", "scaledactionrunner", "example-repo", "--wait=true"])?;
    for child in [["statefulset", "example-repo"], ["scaledobject.keda.sh", "example-repo"]] {
        let what = ["-n", "example-repo", child[0], child[1]];
        wait_for(&format!("{} to be garbage-collected", child.join("/")), Duration::from_secs(60), || async {
            gone(ctx, &what).await
        })
        .await?;
    }
    Ok(())
}

async fn deleting_the_core_removes_everything_it_made(ctx: &mut Ctx) -> Res {
    let core = get_json(ctx, &["scaledactionrunnercore", "core"])?;
    let uid = core["metadata"]["uid"].as_str().ok_or("core uid")?.to_owned();
    ctx.kubectl(&["delete", "scaledactionrunnercore", "core", "--wait=true"])?;
    wait_for("everything the core made to be garbage-collected", Duration::from_secs(90), || {
        let left =
            owned(ctx, "deployments,services,serviceaccounts,statefulsets,roles,rolebindings", Some("github"), &uid)
                .and_then(|mut left| {
                    left.extend(owned(ctx, "apiservices,clusterroles,clusterrolebindings", None, &uid)?);
                    Ok(left)
                });
        async move { Ok(left?.is_empty()) }
    })
    .await?;
    Ok(())
}
